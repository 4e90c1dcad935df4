//! SCP80 secured packets (ETSI TS 102 225, SMS-PP mapping per 3GPP TS 31.115), sans-IO: both the
//! gateway side (build command packets, verify PoRs) and the card side (verify command packets,
//! build PoRs). Bytes in, bytes out; no I/O, no clock.

#[cfg(target_arch = "x86_64")]
mod aesni;
pub mod algorithm;
pub mod command;
pub mod counter;
pub mod crypto;
mod des;
pub mod keys;
pub mod response;
pub mod spi;
pub mod status;

pub use algorithm::{CipherAlgorithm, IntegrityAlgorithm, KeyIdentifier};
pub use command::{CommandHeader, CommandPacketView, DecodedCommand, PacketFraming};
pub use counter::{check_counter, Counter};
pub use crypto::{CipherKey, IntegrityKey, MacValue};
pub use keys::{KeyConfig, Scp80Keys};
pub use response::{CcScope, DecodedResponse, PorProtection, ResponseHeader, ResponsePacketView};
pub use spi::{CounterMode, Integrity, PorEnding, PorRequirement, Spi};
pub use status::PorStatus;

/// Toolkit Application Reference: three octets naming the applet on the card.
pub type Tar = [u8; 3];

/// Everything that can go wrong securing or opening an SCP80 packet. Each variant names the
/// field and the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecurityError {
    #[error("packet truncated: {field} needs {needed} octets, {available} left")]
    Truncated {
        field: &'static str,
        needed: usize,
        available: usize,
    },
    #[error("{field} says {declared} octets follow but {actual} do")]
    LengthMismatch {
        field: &'static str,
        declared: usize,
        actual: usize,
    },
    #[error("{field} {value} is wrong: {reason}")]
    HeaderLength {
        field: &'static str,
        value: usize,
        reason: String,
    },
    #[error("{field} key for {algorithm} must be {expected} octets, got {actual}")]
    KeyLength {
        field: &'static str,
        algorithm: &'static str,
        expected: &'static str,
        actual: usize,
    },
    #[error("{algorithm} gives no {requested}-octet integrity value")]
    IntegrityLength {
        algorithm: &'static str,
        requested: usize,
    },
    #[error("{field} {value:#04x} names an unknown algorithm: {reason}")]
    UnknownAlgorithm {
        field: &'static str,
        value: u8,
        reason: &'static str,
    },
    #[error("{field} {value:#04x} leaves the algorithm implicit (or proprietary) and none was configured")]
    ImplicitAlgorithm { field: &'static str, value: u8 },
    #[error("{field} {value:#04x} codes {coded} but the key is configured for {configured}")]
    AlgorithmConflict {
        field: &'static str,
        value: u8,
        coded: &'static str,
        configured: &'static str,
    },
    #[error("the SPI asks for {what} but no {field} key was given")]
    MissingKey {
        field: &'static str,
        what: &'static str,
    },
    #[error("{kind} mismatch: packet carries {received}, computed {computed}")]
    IntegrityMismatch {
        kind: &'static str,
        received: String,
        computed: String,
    },
    #[error("ciphertext of {length} octets is not a multiple of the {block}-octet block")]
    NotBlockMultiple { length: usize, block: usize },
    #[error("PCNTR {pcntr} exceeds the {available} octets of secured data")]
    InvalidPadding { pcntr: u8, available: usize },
    #[error("secured data of {length} octets makes the packet longer than {max} octets")]
    DataTooLong { length: usize, max: usize },
    #[error("counter {0:#012x} is beyond the 5-octet counter range")]
    CounterOutOfRange(u64),
    #[error("counter exhausted: {0:#012x} is the last value")]
    CounterExhausted(u64),
    #[error(
        "PoR carries no {expected} although the SPI asks for one, and reports {status}: refused"
    )]
    MissingIntegrity {
        expected: &'static str,
        status: String,
    },
    #[error("not supported: {0}")]
    Unsupported(&'static str),
    #[error("crypto library failure: {0}")]
    Crypto(String),
}

impl From<openssl::error::ErrorStack> for SecurityError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        Self::Crypto(e.to_string())
    }
}

/// Reads `N` octets at `at`, or says which field was cut short.
pub(crate) fn take<const N: usize>(
    buf: &[u8],
    at: usize,
    field: &'static str,
) -> Result<[u8; N], SecurityError> {
    buf.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| SecurityError::Truncated {
            field,
            needed: N,
            available: buf.len().saturating_sub(at),
        })
}

/// Checks the framing every SCP80 packet shares: a 2-octet length (CPL/RPL) counting the rest of
/// the packet, then a 1-octet header length (CHL/RHL) of at least `min` octets (`min_what`)
/// that stays inside the packet.
pub(crate) fn check_framing(
    packet: &[u8],
    (length_field, header_field): (&'static str, &'static str),
    min: usize,
    min_what: &str,
) -> Result<(u16, u8), SecurityError> {
    let length = u16::from_be_bytes(take(packet, 0, length_field)?);
    let actual = packet.len() - 2;
    if usize::from(length) != actual {
        return Err(SecurityError::LengthMismatch {
            field: length_field,
            declared: usize::from(length),
            actual,
        });
    }
    let [header] = take(packet, 2, header_field)?;
    let value = usize::from(header);
    if value < min {
        return Err(SecurityError::HeaderLength {
            field: header_field,
            value,
            reason: format!("below the {min} octets of {min_what}"),
        });
    }
    if 3 + value > packet.len() {
        return Err(SecurityError::HeaderLength {
            field: header_field,
            value,
            reason: format!("runs past the {}-octet packet", packet.len()),
        });
    }
    Ok((length, header))
}
