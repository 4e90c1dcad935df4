//! The crate's error type: every variant names the field and what is wrong with it.

use thiserror::Error;

/// Everything that can go wrong while encoding or decoding SMS-PP framing.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Error {
    /// A field runs past the end of the input.
    #[error("{field} needs {needed} octet(s) but only {available} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Octets the field needs.
        needed: usize,
        /// Octets left in the input.
        available: usize,
    },

    /// Octets remain after a structure that should end the input.
    #[error("{count} trailing octet(s) after {context}")]
    TrailingOctets {
        /// What was decoded before the extra octets.
        context: &'static str,
        /// How many octets are left over.
        count: usize,
    },

    /// User data that should start with a UDH has no UDHL octet.
    #[error("user data is empty: no UDHL octet")]
    EmptyUserData,

    /// The UDHL octet claims more octets than the user data holds.
    #[error("UDHL {udhl} exceeds user data length {user_data_length}")]
    UdhLengthExceedsUserData {
        /// The UDHL value.
        udhl: u8,
        /// Octets of user data, the UDHL octet included.
        user_data_length: usize,
    },

    /// An information element's length runs past the end of the UDH.
    #[error("information element {iei:#04x} length {length} overruns the UDH ({available} octet(s) left)")]
    InformationElementOverrun {
        /// The IEI.
        iei: u8,
        /// The IE's length octet.
        length: u8,
        /// Octets left in the UDH after the length octet.
        available: usize,
    },

    /// An information element value is too long for its one-octet length.
    #[error("information element {iei:#04x} value of {length} octets exceeds 255")]
    InformationElementTooLong {
        /// The IEI.
        iei: u8,
        /// The value's length.
        length: usize,
    },

    /// The UDH is too long for its one-octet UDHL.
    #[error("UDH of {length} octets exceeds the 255 a UDHL can express")]
    UdhTooLong {
        /// Octets of UDH, UDHL octet excluded.
        length: usize,
    },

    /// A concatenation IE has the wrong value length.
    #[error("concatenation IE {iei:#04x} has length {length}, expected {expected}")]
    ConcatenationLength {
        /// The IEI (0x00 or 0x08).
        iei: u8,
        /// The length found.
        length: usize,
        /// The length TS 23.040 9.2.3.24.1 / 9.2.3.24.8 defines.
        expected: usize,
    },

    /// A UDH carries more than one concatenation IE.
    #[error("UDH carries more than one concatenation IE")]
    RepeatedConcatenation,

    /// A concatenation IE announces zero segments.
    #[error("concatenation total of 0 segments")]
    ConcatenationTotalZero,

    /// A concatenation sequence number is 0 or above the total.
    #[error("concatenation sequence {sequence} outside 1..={total}")]
    SequenceOutOfRange {
        /// The sequence number found.
        sequence: u8,
        /// The announced total.
        total: u8,
    },

    /// A secured packet to split is empty.
    #[error("secured packet is empty")]
    EmptyPacket,

    /// A secured packet needs more than 255 segments.
    #[error("secured packet of {length} octets exceeds the {max} octets that 255 concatenated SMS carry with {reference_kind} references")]
    PacketTooLarge {
        /// The packet length.
        length: usize,
        /// The largest packet that fits.
        max: usize,
        /// "8-bit" or "16-bit".
        reference_kind: &'static str,
    },

    /// A segment arrived twice with different contents.
    #[error("segment {sequence} of concatenated message {reference} arrived twice with different contents")]
    ConflictingDuplicate {
        /// The concatenation reference.
        reference: u16,
        /// The sequence number.
        sequence: u8,
    },

    /// Segments of one concatenated message disagree about the total.
    #[error(
        "concatenated message {reference} announced {expected} segments, this segment says {found}"
    )]
    InconsistentTotal {
        /// The concatenation reference.
        reference: u16,
        /// The total from earlier segments.
        expected: u8,
        /// The total in this segment.
        found: u8,
    },

    /// TP-UDL exceeds what one SMS can carry.
    #[error("TP-UDL {udl} above {max} {unit}")]
    UserDataLengthTooLarge {
        /// The TP-UDL value (or the user data length on encode).
        udl: usize,
        /// The maximum for this coding.
        max: usize,
        /// "octets" or "septets".
        unit: &'static str,
    },

    /// Packed 7-bit user data does not match its septet count.
    #[error("{septets} septets pack into {expected} octets, but {actual} were given")]
    SeptetPackingLength {
        /// The septet count (TP-UDL).
        septets: u8,
        /// Octets those septets need.
        expected: usize,
        /// Octets supplied.
        actual: usize,
    },

    /// The user data's unit does not match what the DCS says.
    #[error("TP-DCS {dcs:#04x} makes TP-UDL count {dcs_unit}, but the user data is given in {data_unit}")]
    UserDataCodingMismatch {
        /// The DCS octet.
        dcs: u8,
        /// What the DCS implies.
        dcs_unit: &'static str,
        /// What the user data carries.
        data_unit: &'static str,
    },

    /// TP-MTI is not the message type being decoded.
    #[error("TP-MTI {mti} is not {expected}")]
    WrongMessageType {
        /// The TP-MTI bits found.
        mti: u8,
        /// The message type expected.
        expected: &'static str,
    },

    /// An address length is larger than the TP-OA / TP-DA field allows.
    #[error("address length {semi_octets} semi-octets exceeds the field (max {max})")]
    AddressTooLong {
        /// The address length in semi-octets.
        semi_octets: usize,
        /// The maximum.
        max: usize,
    },

    /// A BCD semi-octet is not a dialling digit.
    #[error("address semi-octet {nibble:#x} at digit {position} is not a valid digit")]
    InvalidAddressSemiOctet {
        /// The semi-octet.
        nibble: u8,
        /// Its position among the digits, from 0.
        position: usize,
    },

    /// A character cannot be encoded as a BCD dialling digit.
    #[error("character {character:?} is not a dialling digit (0-9 * # a b c)")]
    InvalidDigitCharacter {
        /// The offending character.
        character: char,
    },

    /// A character has no GSM 7-bit default alphabet encoding.
    #[error("character {character:?} is not in the GSM 7-bit default alphabet")]
    NotGsm7Character {
        /// The offending character.
        character: char,
    },

    /// An address kind that a field cannot carry.
    #[error("{field} cannot carry an alphanumeric address")]
    AlphanumericNotAllowed {
        /// The field.
        field: &'static str,
    },

    /// The alphanumeric address octets do not match the semi-octet count.
    #[error(
        "alphanumeric address of {semi_octets} semi-octets needs {expected} octets, {actual} given"
    )]
    AlphanumericLength {
        /// The semi-octet count.
        semi_octets: u8,
        /// Octets that count needs.
        expected: usize,
        /// Octets given.
        actual: usize,
    },

    /// A BER-TLV tag is not the expected one.
    #[error("expected tag {expected:#04x} for {context}, found {found:#04x}")]
    UnexpectedTag {
        /// The structure being decoded.
        context: &'static str,
        /// The tag expected.
        expected: u8,
        /// The tag found.
        found: u8,
    },

    /// A BER-TLV length coding this codec does not accept.
    #[error("BER-TLV length of tag {tag:#04x} is coded {coding}, which is not allowed (TS 102 223 annex C)")]
    BadTlvLength {
        /// The tag.
        tag: u8,
        /// The coding, as hex.
        coding: String,
    },

    /// A BER-TLV value runs past the end of its container.
    #[error(
        "TLV {tag:#04x} of length {length} overruns its container ({available} octet(s) left)"
    )]
    TlvOverrun {
        /// The tag.
        tag: u8,
        /// The declared length.
        length: usize,
        /// Octets left.
        available: usize,
    },

    /// A mandatory TLV is missing.
    #[error("{context} lacks the mandatory {tlv} TLV")]
    MissingTlv {
        /// The structure being decoded.
        context: &'static str,
        /// The TLV missing.
        tlv: &'static str,
    },

    /// A TLV has the wrong value length.
    #[error("{tlv} TLV has length {length}, expected {expected}")]
    TlvLength {
        /// The TLV.
        tlv: &'static str,
        /// The length found.
        length: usize,
        /// The length expected.
        expected: usize,
    },

    /// Device identities that do not fit the command.
    #[error("device identities {source_device:#04x} -> {destination_device:#04x} do not fit {context} (expected {expected_source:#04x} -> {expected_destination:#04x})")]
    UnexpectedDeviceIdentities {
        /// The command.
        context: &'static str,
        /// Source device found.
        source_device: u8,
        /// Destination device found.
        destination_device: u8,
        /// Source device expected.
        expected_source: u8,
        /// Destination device expected.
        expected_destination: u8,
    },

    /// A proactive command is not SEND SHORT MESSAGE.
    #[error("proactive command type {type_of_command:#04x} is not SEND SHORT MESSAGE (0x13)")]
    NotSendShortMessage {
        /// The type of command found.
        type_of_command: u8,
    },

    /// A BER-TLV structure is too long for an ENVELOPE.
    #[error(
        "{context} of {length} octets exceeds the 255 octets of an ENVELOPE / TERMINAL RESPONSE"
    )]
    TlvTooLong {
        /// The structure.
        context: &'static str,
        /// Its length.
        length: usize,
    },
}

/// Shorthand for this crate's results.
pub type Result<T> = core::result::Result<T, Error>;
