//! PoR response status codes (TS 102 225 clause 5.2.2, table 5; TS 31.115 clause 7).

use std::fmt;

/// The status octet of a response packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PorStatus {
    /// 00: PoR OK.
    Ok,
    /// 01: RC/CC/DS failed.
    RcCcDsFailed,
    /// 02: counter low.
    CounterLow,
    /// 03: counter high.
    CounterHigh,
    /// 04: counter blocked.
    CounterBlocked,
    /// 05: ciphering error.
    CipheringError,
    /// 06: unidentified security error.
    UndefinedSecurityError,
    /// 07: insufficient memory to process the incoming message.
    InsufficientMemory,
    /// 08: more time needed to process the command packet.
    MoreTimeNeeded,
    /// 09: TAR unknown.
    TarUnknown,
    /// 0A: insufficient security level.
    InsufficientSecurityLevel,
    /// 0B: actual response data to be sent using SMS-SUBMIT.
    ResponseViaSmsSubmit,
    /// 0C: actual response data to be sent using a USSD string.
    ResponseViaUssd,
    /// Any other value (reserved).
    Reserved(u8),
}

impl PorStatus {
    /// Decodes the status octet.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => Self::Ok,
            0x01 => Self::RcCcDsFailed,
            0x02 => Self::CounterLow,
            0x03 => Self::CounterHigh,
            0x04 => Self::CounterBlocked,
            0x05 => Self::CipheringError,
            0x06 => Self::UndefinedSecurityError,
            0x07 => Self::InsufficientMemory,
            0x08 => Self::MoreTimeNeeded,
            0x09 => Self::TarUnknown,
            0x0A => Self::InsufficientSecurityLevel,
            0x0B => Self::ResponseViaSmsSubmit,
            0x0C => Self::ResponseViaUssd,
            other => Self::Reserved(other),
        }
    }

    /// The status octet.
    pub fn to_byte(self) -> u8 {
        match self {
            Self::Ok => 0x00,
            Self::RcCcDsFailed => 0x01,
            Self::CounterLow => 0x02,
            Self::CounterHigh => 0x03,
            Self::CounterBlocked => 0x04,
            Self::CipheringError => 0x05,
            Self::UndefinedSecurityError => 0x06,
            Self::InsufficientMemory => 0x07,
            Self::MoreTimeNeeded => 0x08,
            Self::TarUnknown => 0x09,
            Self::InsufficientSecurityLevel => 0x0A,
            Self::ResponseViaSmsSubmit => 0x0B,
            Self::ResponseViaUssd => 0x0C,
            Self::Reserved(b) => b,
        }
    }

    /// Machine name, as pySim spells it (`por_ok`, `cntr_low`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "por_ok",
            Self::RcCcDsFailed => "rc_cc_ds_failed",
            Self::CounterLow => "cntr_low",
            Self::CounterHigh => "cntr_high",
            Self::CounterBlocked => "cntr_blocked",
            Self::CipheringError => "ciphering_error",
            Self::UndefinedSecurityError => "undefined_security_error",
            Self::InsufficientMemory => "insufficient_memory",
            Self::MoreTimeNeeded => "more_time_needed",
            Self::TarUnknown => "tar_unknown",
            Self::InsufficientSecurityLevel => "insufficient_security_level",
            Self::ResponseViaSmsSubmit => "actual_response_sms_submit",
            Self::ResponseViaUssd => "actual_response_ussd",
            Self::Reserved(_) => "reserved",
        }
    }

    /// Whether the card reports a security failure (01 to 06, 0A).
    pub fn is_security_error(self) -> bool {
        matches!(self.to_byte(), 0x01..=0x06 | 0x0A)
    }
}

impl fmt::Display for PorStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x} ({})", self.to_byte(), self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_and_is_named() {
        for b in 0..=255u8 {
            let s = PorStatus::from_byte(b);
            assert_eq!(s.to_byte(), b);
            assert_eq!(s.name() == "reserved", b > 0x0C);
        }
        assert_eq!(PorStatus::from_byte(6).name(), "undefined_security_error");
    }
}
