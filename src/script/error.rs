//! Errors of the remote APDU script layer.

use thiserror::Error;

/// Everything that can go wrong while building or parsing scripts, APDUs and load files.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScriptError {
    /// Input ended before a field was complete.
    #[error("{field} needs {needed} octets but only {available} remain")]
    Truncated {
        /// Field being read.
        field: &'static str,
        /// Octets the field needs.
        needed: usize,
        /// Octets left in the input.
        available: usize,
    },

    /// A C-APDU's Lc does not match the octets that follow it.
    #[error("C-APDU Lc {lc} but {available} data octets follow")]
    LcMismatch {
        /// Declared Lc.
        lc: usize,
        /// Data octets actually present.
        available: usize,
    },

    /// A C-APDU shorter than its 4-octet header.
    #[error("C-APDU of {0} octets is shorter than the 4-octet header CLA INS P1 P2")]
    ApduTooShort(usize),

    /// A C-APDU using extended length fields (only short APDUs are supported).
    #[error(
        "C-APDU uses extended length (Lc 00 followed by data), only short APDUs are supported"
    )]
    ExtendedLength,

    /// An R-APDU shorter than SW1 SW2.
    #[error("R-APDU of {0} octets lacks SW1 SW2")]
    RApduTooShort(usize),

    /// A field is longer than its encoding allows.
    #[error("{field} of {len} octets exceeds the maximum of {max}")]
    TooLong {
        /// Field concerned.
        field: &'static str,
        /// Its length.
        len: usize,
        /// Largest length allowed.
        max: usize,
    },

    /// A numeric parameter outside its allowed range.
    #[error("{field} {value:#X} out of {range}")]
    OutOfRange {
        /// Parameter concerned.
        field: &'static str,
        /// Value given.
        value: u32,
        /// Allowed range, for the message.
        range: &'static str,
    },

    /// A BER length form this implementation does not read (TS 102 226 uses at most 82 xx xx).
    #[error("BER length 0x{0:02X} not supported")]
    BerLengthUnsupported(u8),

    /// Indefinite length (80) where only definite length is allowed.
    #[error("indefinite BER length not allowed in {0}")]
    IndefiniteLength(&'static str),

    /// A tag other than the one expected.
    #[error("{context}: expected tag {expected}, found 0x{found:02X}")]
    UnexpectedTag {
        /// Where the tag was read.
        context: &'static str,
        /// Tag(s) expected, for the message.
        expected: &'static str,
        /// Tag found.
        found: u8,
    },

    /// A multi-octet BER tag (low five bits all set) where single-octet tags are expected.
    #[error("{context}: multi-octet tag 0x{tag:02X}.. not supported")]
    MultiOctetTag {
        /// Where the tag was read.
        context: &'static str,
        /// First tag octet.
        tag: u8,
    },

    /// An indefinite-length template without its end-of-contents octets 00 00.
    #[error("{0}: end-of-contents 00 00 missing")]
    MissingEndOfContents(&'static str),

    /// Octets left over after a complete structure.
    #[error("{count} trailing octets after {context}")]
    TrailingOctets {
        /// What was complete.
        context: &'static str,
        /// How many octets follow it.
        count: usize,
    },

    /// Input that should not be empty was.
    #[error("{0} is empty")]
    Empty(&'static str),

    /// A script item that the chosen format cannot carry.
    #[error("compact format cannot carry {0}; use an expanded format")]
    NotInCompactFormat(&'static str),

    /// An operation the chosen card class does not offer.
    #[error("{0}")]
    Unsupported(&'static str),

    /// An AID of the wrong length (ISO/IEC 7816-5: 5 to 16 octets).
    #[error("AID length {0} out of 5..=16")]
    AidLength(usize),

    /// A CAP file without a mandatory component.
    #[error("CAP file lacks {0}.cap")]
    MissingComponent(&'static str),

    /// A CAP file carrying the same component twice.
    #[error("CAP file holds {0}.cap twice")]
    DuplicateComponent(&'static str),

    /// A component whose own header disagrees with its name or contents.
    #[error("{component}.cap: {problem}")]
    BadComponent {
        /// Component concerned.
        component: &'static str,
        /// What is wrong.
        problem: String,
    },

    /// A Header component without the DECAFFED magic.
    #[error("Header.cap magic {0:#010X} is not 0xDECAFFED")]
    BadMagic(u32),

    /// A component tag that the Java Card VM specification does not define.
    #[error("unknown CAP component tag {0}")]
    UnknownComponentTag(u8),

    /// The zip container could not be read.
    #[error("CAP zip archive unreadable: {0}")]
    Zip(String),

    /// A LOAD block size that does not fit the byte budget.
    #[error("block size {block_size} cannot fit in {budget}-octet budget")]
    BlockSize {
        /// Block size asked for or computed.
        block_size: usize,
        /// Budget given by the caller.
        budget: usize,
    },

    /// More LOAD blocks than P2 can number.
    #[error("load file needs {0} LOAD blocks, more than the 256 that P2 can number")]
    TooManyBlocks(usize),

    /// A single command that does not fit the packing budget even alone.
    #[error(
        "command {index} needs {needed} octets in a script, more than the {budget}-octet budget"
    )]
    CommandTooLarge {
        /// Position of the command in the input list.
        index: usize,
        /// Octets it needs in a script of its own.
        needed: usize,
        /// Budget given by the caller.
        budget: usize,
    },
}
