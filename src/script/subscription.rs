//! The subscription management application's coding, both sides: the commands the server
//! sends, the audit the card answers and the notification it sends after a switch. The card
//! side (`sim::subscriptions`) and the Secure Router (`subscription`) both use these, so the
//! coding is written once.
//!
//! There is no standard for this application (the brief's platforms each have their own);
//! the coding is otagw's, documented in `sim::subscriptions` and here.
//!
//! | INS | command | data |
//! |---|---|---|
//! | `E2` | DOWNLOAD | `80` id, `81` IMSI (ASCII digits), `82` SPN, `83` PLMNs, `84` Ki, `85` OPc, `86` flags (b1 enable now, b2 fallback, b3 bootstrap) |
//! | `E4` | ENABLE | `80` id |
//! | `E6` | DELETE | `80` id |
//! | `E8` | SET FALLBACK | `80` id |
//! | `EA` | AUDIT | none |
//! | `EC` | TIMERS | `8D` attach timeout, `8E` return-to-primary time (seconds, 2 octets) |
//! | `EE` | CONFIRM | `8C` sequence number (2 octets) |
//!
//! CLA `80`, P1 = P2 = `00`; data: single-octet-tag BER-TLVs.

use super::ber::Reader;
use super::{CApdu, ScriptError};
use crate::security::Tar;

/// The application's TAR, `53 4D 41` ("SMA"): otagw's choice, outside RFM (`B0 00 1x`) and
/// the ISD (`00 00 00`).
pub const TAR_SUBSCRIPTIONS: Tar = [0x53, 0x4D, 0x41];
/// Subscriptions a card holds at most.
pub const SLOTS: usize = 8;
/// The class byte of every command.
pub const CLA: u8 = 0x80;
/// DOWNLOAD.
pub const INS_DOWNLOAD: u8 = 0xE2;
/// ENABLE.
pub const INS_ENABLE: u8 = 0xE4;
/// DELETE.
pub const INS_DELETE: u8 = 0xE6;
/// SET FALLBACK.
pub const INS_SET_FALLBACK: u8 = 0xE8;
/// AUDIT.
pub const INS_AUDIT: u8 = 0xEA;
/// TIMERS.
pub const INS_TIMERS: u8 = 0xEC;
/// CONFIRM (notifications up to a sequence number).
pub const INS_CONFIRM: u8 = 0xEE;

/// DOWNLOAD's flag: enable at once.
pub const FLAG_ENABLE: u8 = 0x01;
/// DOWNLOAD's and the audit's flag: holds the fallback attribute.
pub const FLAG_FALLBACK: u8 = 0x02;
/// DOWNLOAD's and the audit's flag: a bootstrap subscription.
pub const FLAG_BOOTSTRAP: u8 = 0x04;

/// Why the enabled subscription is the one it is (the audit's `8B`, a notification's `8F`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// No switch yet.
    None = 0,
    /// The asked subscription attached.
    Switched = 1,
    /// It did not: the card went back to the one enabled before.
    RolledBack = 2,
    /// Neither attached: the card is on its fallback subscription.
    OnFallback = 3,
}

impl SwitchOutcome {
    /// From its octet.
    pub fn from_octet(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::Switched,
            2 => Self::RolledBack,
            3 => Self::OnFallback,
            _ => return None,
        })
    }

    /// The name the API and the audit trail use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Switched => "switched",
            Self::RolledBack => "rolled_back",
            Self::OnFallback => "on_fallback",
        }
    }
}

/// A subscription's personalisation, as DOWNLOAD carries it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Download {
    /// The id the server gives it (1..=255).
    pub id: u8,
    /// IMSI digits (6 to 15).
    pub imsi: String,
    /// Service provider name (at most 16 octets).
    pub spn: Vec<u8>,
    /// PLMNs, 3 octets each (TS 24.008 BCD).
    pub plmns: Vec<u8>,
    /// Ki, enciphered under the card's KIK (16 octets), if delivered.
    pub ki: Option<[u8; 16]>,
    /// OPc, enciphered under the card's KIK (16 octets), if delivered.
    pub opc: Option<[u8; 16]>,
    /// Enable at once.
    pub enable: bool,
    /// Take the fallback attribute.
    pub fallback: bool,
    /// A bootstrap subscription.
    pub bootstrap: bool,
}

/// A command to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionCommand {
    /// Install (and maybe enable) a subscription.
    Download(Download),
    /// Switch to an installed subscription.
    Enable(u8),
    /// Remove a disabled subscription that does not hold the fallback.
    Delete(u8),
    /// Move the fallback attribute.
    SetFallback(u8),
    /// Read the registry.
    Audit,
    /// Set the timers (seconds; `None` leaves one as it is).
    Timers {
        /// Attach timeout.
        attach: Option<u16>,
        /// Return to primary.
        return_to_primary: Option<u16>,
    },
    /// Notifications up to this sequence number arrived.
    Confirm(u16),
}

impl SubscriptionCommand {
    /// Its C-APDU.
    pub fn to_apdu(&self) -> Result<CApdu, ScriptError> {
        let mut d = Vec::new();
        let ins = match self {
            Self::Download(dl) => {
                tlv(&mut d, 0x80, &[dl.id]);
                tlv(&mut d, 0x81, dl.imsi.as_bytes());
                if !dl.spn.is_empty() {
                    tlv(&mut d, 0x82, &dl.spn);
                }
                if !dl.plmns.is_empty() {
                    tlv(&mut d, 0x83, &dl.plmns);
                }
                if let Some(ki) = &dl.ki {
                    tlv(&mut d, 0x84, ki);
                }
                if let Some(opc) = &dl.opc {
                    tlv(&mut d, 0x85, opc);
                }
                let flags = (u8::from(dl.enable) * FLAG_ENABLE)
                    | (u8::from(dl.fallback) * FLAG_FALLBACK)
                    | (u8::from(dl.bootstrap) * FLAG_BOOTSTRAP);
                tlv(&mut d, 0x86, &[flags]);
                INS_DOWNLOAD
            }
            Self::Enable(id) => {
                tlv(&mut d, 0x80, &[*id]);
                INS_ENABLE
            }
            Self::Delete(id) => {
                tlv(&mut d, 0x80, &[*id]);
                INS_DELETE
            }
            Self::SetFallback(id) => {
                tlv(&mut d, 0x80, &[*id]);
                INS_SET_FALLBACK
            }
            Self::Audit => INS_AUDIT,
            Self::Timers {
                attach,
                return_to_primary,
            } => {
                if let Some(a) = attach {
                    tlv(&mut d, 0x8D, &a.to_be_bytes());
                }
                if let Some(r) = return_to_primary {
                    tlv(&mut d, 0x8E, &r.to_be_bytes());
                }
                INS_TIMERS
            }
            Self::Confirm(seq) => {
                tlv(&mut d, 0x8C, &seq.to_be_bytes());
                INS_CONFIRM
            }
        };
        if d.is_empty() {
            Ok(CApdu::case1(CLA, ins, 0, 0))
        } else {
            CApdu::new(CLA, ins, 0, 0, d, None)
        }
    }
}

/// One installed subscription as the audit reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its id.
    pub id: u8,
    /// Its IMSI.
    pub imsi: String,
    /// Enabled (exactly one is).
    pub enabled: bool,
    /// Holds the fallback attribute.
    pub fallback: bool,
    /// A bootstrap subscription.
    pub bootstrap: bool,
}

/// The answer to AUDIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// The installed subscriptions, in the card's order.
    pub subscriptions: Vec<AuditEntry>,
    /// The enabled one's id (0: none).
    pub enabled: u8,
    /// Free slots.
    pub free_slots: u8,
    /// The application's version.
    pub version: u16,
    /// Why the enabled one is enabled.
    pub last_outcome: SwitchOutcome,
    /// The last notification's sequence number.
    pub seq: u16,
}

/// The audit or a notification does not read as coded here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("subscription {what}: {problem}")]
pub struct CodingError {
    /// What was read (`audit`, `notification`).
    pub what: &'static str,
    /// What is wrong.
    pub problem: String,
}

fn bad(what: &'static str, problem: impl Into<String>) -> CodingError {
    CodingError {
        what,
        problem: problem.into(),
    }
}

impl Audit {
    /// Its TLVs (one `A0` per subscription, then `88`, `89`, `8A`, `8B`, `8C`).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &self.subscriptions {
            let mut body = Vec::new();
            tlv(&mut body, 0x80, &[s.id]);
            tlv(&mut body, 0x81, s.imsi.as_bytes());
            tlv(&mut body, 0x87, &[u8::from(s.enabled)]);
            let flags =
                (u8::from(s.fallback) * FLAG_FALLBACK) | (u8::from(s.bootstrap) * FLAG_BOOTSTRAP);
            tlv(&mut body, 0x86, &[flags]);
            tlv(&mut out, 0xA0, &body);
        }
        tlv(&mut out, 0x88, &[self.enabled]);
        tlv(&mut out, 0x89, &[self.free_slots]);
        tlv(&mut out, 0x8A, &self.version.to_be_bytes());
        tlv(&mut out, 0x8B, &[self.last_outcome as u8]);
        tlv(&mut out, 0x8C, &self.seq.to_be_bytes());
        out
    }

    /// Reads an audit; every field must be there and consistent (exactly one enabled, the
    /// enabled id one of them, at most one fallback).
    pub fn decode(data: &[u8]) -> Result<Self, CodingError> {
        const W: &str = "audit";
        let mut subscriptions = Vec::new();
        let mut fields = Vec::new();
        let mut r = Reader::new(data);
        while !r.is_empty() {
            let t = r.tlv("audit").map_err(|e| bad(W, e.to_string()))?;
            if t.tag == 0xA0 {
                let f = Fields::parse(t.value).ok_or_else(|| bad(W, "unreadable A0"))?;
                let id = f
                    .octet(0x80)
                    .ok_or_else(|| bad(W, "A0 without its 80 id"))?;
                let imsi = f
                    .digits(0x81)
                    .ok_or_else(|| bad(W, "A0 without a valid 81 IMSI"))?;
                let enabled = match f.octet(0x87) {
                    Some(0) => false,
                    Some(1) => true,
                    _ => return Err(bad(W, format!("subscription {id}: 87 is not 00 or 01"))),
                };
                let flags = f.octet(0x86).unwrap_or(0);
                subscriptions.push(AuditEntry {
                    id,
                    imsi,
                    enabled,
                    fallback: flags & FLAG_FALLBACK != 0,
                    bootstrap: flags & FLAG_BOOTSTRAP != 0,
                });
            } else {
                fields.push((t.tag, t.value));
            }
        }
        let f = Fields(fields);
        let need = |tag: u8| bad(W, format!("no {tag:02X}"));
        let audit = Audit {
            enabled: f.octet(0x88).ok_or_else(|| need(0x88))?,
            free_slots: f.octet(0x89).ok_or_else(|| need(0x89))?,
            version: f.u16(0x8A).ok_or_else(|| need(0x8A))?,
            last_outcome: f
                .octet(0x8B)
                .and_then(SwitchOutcome::from_octet)
                .ok_or_else(|| need(0x8B))?,
            seq: f.u16(0x8C).ok_or_else(|| need(0x8C))?,
            subscriptions,
        };
        let enabled: Vec<u8> = audit
            .subscriptions
            .iter()
            .filter(|s| s.enabled)
            .map(|s| s.id)
            .collect();
        if enabled != [audit.enabled] {
            return Err(bad(
                W,
                format!("enabled {:?} but 88 says {}", enabled, audit.enabled),
            ));
        }
        if audit.subscriptions.iter().filter(|s| s.fallback).count() > 1 {
            return Err(bad(W, "more than one fallback"));
        }
        Ok(audit)
    }
}

/// A notification the card sends after a switch (`E0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Sequence number, one per switch.
    pub seq: u16,
    /// What happened.
    pub outcome: SwitchOutcome,
    /// The subscription enabled now.
    pub enabled: u8,
    /// Its IMSI.
    pub imsi: String,
}

impl Notification {
    /// Its TLV (`E0`: `8C` sequence number, `8F` outcome, `88` enabled id, `81` its IMSI).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::new();
        tlv(&mut body, 0x8C, &self.seq.to_be_bytes());
        tlv(&mut body, 0x8F, &[self.outcome as u8]);
        tlv(&mut body, 0x88, &[self.enabled]);
        tlv(&mut body, 0x81, self.imsi.as_bytes());
        let mut out = Vec::with_capacity(body.len() + 3);
        tlv(&mut out, 0xE0, &body);
        out
    }

    /// Reads one (trailing padding octets after the `E0` are ignored: a ciphered packet's
    /// data is padded to the block length).
    pub fn decode(data: &[u8]) -> Result<Self, CodingError> {
        const W: &str = "notification";
        let mut r = Reader::new(data);
        let t = r.tlv("notification").map_err(|e| bad(W, e.to_string()))?;
        if t.tag != 0xE0 {
            return Err(bad(W, format!("tag {:02X}, not E0", t.tag)));
        }
        let f = Fields::parse(t.value).ok_or_else(|| bad(W, "unreadable E0"))?;
        Ok(Notification {
            seq: f.u16(0x8C).ok_or_else(|| bad(W, "no 8C"))?,
            outcome: f
                .octet(0x8F)
                .and_then(SwitchOutcome::from_octet)
                .ok_or_else(|| bad(W, "no valid 8F"))?,
            enabled: f.octet(0x88).ok_or_else(|| bad(W, "no 88"))?,
            imsi: f.digits(0x81).ok_or_else(|| bad(W, "no valid 81"))?,
        })
    }
}

/// Appends a single-octet-tag TLV.
pub fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) {
    out.push(tag);
    if let Ok(len) = super::ber::encode_ber_length(value.len()) {
        out.extend_from_slice(&len);
    }
    out.extend_from_slice(value);
}

/// A command's TLVs, each tag once.
pub struct Fields<'a>(Vec<(u8, &'a [u8])>);

impl<'a> Fields<'a> {
    /// `None` if they do not parse or a tag comes twice.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let mut r = Reader::new(data);
        let mut out: Vec<(u8, &[u8])> = Vec::new();
        while !r.is_empty() {
            let t = r.tlv("subscription command").ok()?;
            if out.iter().any(|(tag, _)| *tag == t.tag) {
                return None;
            }
            out.push((t.tag, t.value));
        }
        Some(Fields(out))
    }

    /// The value of `tag`.
    pub fn one(&self, tag: u8) -> Option<&'a [u8]> {
        self.0.iter().find(|(t, _)| *t == tag).map(|(_, v)| *v)
    }

    /// A one-octet value.
    pub fn octet(&self, tag: u8) -> Option<u8> {
        match self.one(tag)? {
            &[v] => Some(v),
            _ => None,
        }
    }

    /// A two-octet big-endian value.
    pub fn u16(&self, tag: u8) -> Option<u16> {
        <[u8; 2]>::try_from(self.one(tag)?)
            .ok()
            .map(u16::from_be_bytes)
    }

    /// 6 to 15 ASCII digits (an IMSI).
    pub fn digits(&self, tag: u8) -> Option<String> {
        std::str::from_utf8(self.one(tag)?)
            .ok()
            .filter(|s| (6..=15).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_coded_as_documented() {
        let hexed = |c: SubscriptionCommand| hex::encode_upper(c.to_apdu().unwrap().to_bytes());
        assert_eq!(hexed(SubscriptionCommand::Enable(2)), "80E4000003800102");
        assert_eq!(hexed(SubscriptionCommand::Delete(3)), "80E6000003800103");
        assert_eq!(
            hexed(SubscriptionCommand::SetFallback(4)),
            "80E8000003800104"
        );
        assert_eq!(hexed(SubscriptionCommand::Audit), "80EA0000");
        assert_eq!(
            hexed(SubscriptionCommand::Confirm(258)),
            "80EE0000048C020102"
        );
        assert_eq!(
            hexed(SubscriptionCommand::Download(Download {
                id: 2,
                imsi: "262010000000002".into(),
                enable: true,
                fallback: true,
                ..Download::default()
            })),
            "80E2000017800102810F323632303130303030303030303032860103"
        );
    }

    #[test]
    fn audit_round_trips_and_refuses_inconsistent_registries() {
        let audit = Audit {
            subscriptions: vec![
                AuditEntry {
                    id: 1,
                    imsi: "001010000000001".into(),
                    enabled: false,
                    fallback: true,
                    bootstrap: true,
                },
                AuditEntry {
                    id: 2,
                    imsi: "262010000000002".into(),
                    enabled: true,
                    fallback: false,
                    bootstrap: false,
                },
            ],
            enabled: 2,
            free_slots: 6,
            version: 0x0100,
            last_outcome: SwitchOutcome::Switched,
            seq: 7,
        };
        assert_eq!(Audit::decode(&audit.encode()), Ok(audit.clone()));
        let mut wrong = audit.clone();
        wrong.enabled = 1;
        assert_eq!(
            Audit::decode(&wrong.encode()).unwrap_err().to_string(),
            "subscription audit: enabled [2] but 88 says 1"
        );
        let truncated = &audit.encode()[..audit.encode().len() - 4];
        assert!(Audit::decode(truncated).is_err());
    }

    #[test]
    fn notification_round_trips_with_padding() {
        let n = Notification {
            seq: 3,
            outcome: SwitchOutcome::RolledBack,
            enabled: 1,
            imsi: "001010000000001".into(),
        };
        let mut coded = n.encode();
        assert_eq!(Notification::decode(&coded), Ok(n.clone()));
        coded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(Notification::decode(&coded), Ok(n));
        assert!(Notification::decode(&[0xE1, 0x00]).is_err());
    }
}
