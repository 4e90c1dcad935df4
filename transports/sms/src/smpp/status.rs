//! SMPP 3.4 command_status values (section 5.1.3, table 5-2), named.

use std::fmt;

/// A command_status from the SMSC, displayed as its SMPP 3.4 name and value,
/// e.g. `ESME_RINVDSTADR (0x0B)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmppStatus(pub u32);

impl SmppStatus {
    /// ESME_ROK.
    pub const OK: SmppStatus = SmppStatus(0x00);
    /// ESME_RINVCMDLEN: command_length invalid.
    pub const INVALID_COMMAND_LENGTH: SmppStatus = SmppStatus(0x02);
    /// ESME_RINVCMDID: unknown command_id.
    pub const INVALID_COMMAND_ID: SmppStatus = SmppStatus(0x03);
    /// ESME_RINVBNDSTS: incorrect bind status for the command.
    pub const INVALID_BIND_STATUS: SmppStatus = SmppStatus(0x04);
    /// ESME_RMSGQFUL: message queue full.
    pub const MESSAGE_QUEUE_FULL: SmppStatus = SmppStatus(0x14);
    /// ESME_RTHROTTLED: throttling error.
    pub const THROTTLED: SmppStatus = SmppStatus(0x58);
    /// ESME_RX_P_APPN: ESME receiver permanent application error.
    pub const RECEIVER_PERMANENT_ERROR: SmppStatus = SmppStatus(0x65);
    /// ESME_RX_T_APPN: temporary error in the receiving application (deliver again later).
    pub const RECEIVER_TEMPORARY_ERROR: SmppStatus = SmppStatus(0x64);

    /// The SMPP 3.4 name, if the value is defined there.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            0x00 => "ESME_ROK",
            0x01 => "ESME_RINVMSGLEN",
            0x02 => "ESME_RINVCMDLEN",
            0x03 => "ESME_RINVCMDID",
            0x04 => "ESME_RINVBNDSTS",
            0x05 => "ESME_RALYBND",
            0x06 => "ESME_RINVPRTFLG",
            0x07 => "ESME_RINVREGDLVFLG",
            0x08 => "ESME_RSYSERR",
            0x0A => "ESME_RINVSRCADR",
            0x0B => "ESME_RINVDSTADR",
            0x0C => "ESME_RINVMSGID",
            0x0D => "ESME_RBINDFAIL",
            0x0E => "ESME_RINVPASWD",
            0x0F => "ESME_RINVSYSID",
            0x11 => "ESME_RCANCELFAIL",
            0x13 => "ESME_RREPLACEFAIL",
            0x14 => "ESME_RMSGQFUL",
            0x15 => "ESME_RINVSERTYP",
            0x33 => "ESME_RINVNUMDESTS",
            0x34 => "ESME_RINVDLNAME",
            0x40 => "ESME_RINVDESTFLAG",
            0x42 => "ESME_RINVSUBREP",
            0x43 => "ESME_RINVESMCLASS",
            0x44 => "ESME_RCNTSUBDL",
            0x45 => "ESME_RSUBMITFAIL",
            0x48 => "ESME_RINVSRCTON",
            0x49 => "ESME_RINVSRCNPI",
            0x50 => "ESME_RINVDSTTON",
            0x51 => "ESME_RINVDSTNPI",
            0x53 => "ESME_RINVSYSTYP",
            0x54 => "ESME_RINVREPFLAG",
            0x55 => "ESME_RINVNUMMSGS",
            0x58 => "ESME_RTHROTTLED",
            0x61 => "ESME_RINVSCHED",
            0x62 => "ESME_RINVEXPIRY",
            0x63 => "ESME_RINVDFTMSGID",
            0x64 => "ESME_RX_T_APPN",
            0x65 => "ESME_RX_P_APPN",
            0x66 => "ESME_RX_R_APPN",
            0x67 => "ESME_RQUERYFAIL",
            0xC0 => "ESME_RINVOPTPARSTREAM",
            0xC1 => "ESME_ROPTPARNOTALLWD",
            0xC2 => "ESME_RINVPARLEN",
            0xC3 => "ESME_RMISSINGOPTPARAM",
            0xC4 => "ESME_RINVOPTPARAMVAL",
            0xFE => "ESME_RDELIVERYFAILURE",
            0xFF => "ESME_RUNKNOWNERR",
            _ => return None,
        })
    }

    /// ESME_RTHROTTLED or ESME_RMSGQFUL: slow down and resend unchanged.
    pub fn is_throttling(self) -> bool {
        self == Self::THROTTLED || self == Self::MESSAGE_QUEUE_FULL
    }

    /// ESME_ROK.
    pub fn is_ok(self) -> bool {
        self == Self::OK
    }
}

impl fmt::Display for SmppStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match (self.name(), self.0) {
            (Some(name), _) => name,
            (None, 0x400..=0x4FF) => "SMSC vendor-specific error",
            (None, _) => "reserved status",
        };
        if self.0 <= 0xFF {
            write!(f, "{name} (0x{:02X})", self.0)
        } else {
            write!(f, "{name} (0x{:08X})", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(SmppStatus(0x0B).to_string(), "ESME_RINVDSTADR (0x0B)");
        assert_eq!(SmppStatus(0x58).to_string(), "ESME_RTHROTTLED (0x58)");
        assert_eq!(
            SmppStatus(0x401).to_string(),
            "SMSC vendor-specific error (0x00000401)"
        );
        assert_eq!(SmppStatus(0x09).to_string(), "reserved status (0x09)");
        assert!(SmppStatus(0x14).is_throttling());
        assert!(!SmppStatus(0x08).is_throttling());
    }
}
