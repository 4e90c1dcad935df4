//! Inbound `deliver_sm`: the fields we use, read with rusmpp or, when rusmpp refuses the PDU
//! (strict C-Octet String rules: non-ASCII octets, a receipted_message_id without its NUL, an
//! over-long address, all seen from real SMSCs), with a lenient reader; and delivery receipts.

use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::TlvValue;

/// esm_class bits 5..2, message type (SMPP 3.4 section 5.2.12).
pub(crate) const ESM_TYPE_MASK: u8 = 0x3C;
/// Message type "SMSC delivery receipt".
pub(crate) const ESM_TYPE_DELIVERY_RECEIPT: u8 = 0x04;
/// GSM feature "UDHI indicator".
pub(crate) const ESM_UDHI: u8 = 0x40;

const TAG_MESSAGE_PAYLOAD: u16 = 0x0424;
const TAG_MESSAGE_STATE: u16 = 0x0427;
const TAG_RECEIPTED_MESSAGE_ID: u16 = 0x001E;

/// The parts of a `deliver_sm` this transport looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InboundSm {
    pub source_addr: String,
    pub esm_class: u8,
    pub data_coding: u8,
    pub short_message: Vec<u8>,
    pub message_payload: Option<Vec<u8>>,
    pub receipted_message_id: Option<String>,
    pub message_state: Option<u8>,
}

impl InboundSm {
    pub fn from_rusmpp(pdu: &DeliverSm) -> Self {
        let mut sm = InboundSm {
            source_addr: pdu.source_addr.as_str().to_string(),
            esm_class: u8::from(pdu.esm_class),
            data_coding: u8::from(pdu.data_coding),
            short_message: pdu.short_message().as_ref().to_vec(),
            ..Default::default()
        };
        for tlv in pdu.tlvs() {
            match tlv.value() {
                Some(TlvValue::MessagePayload(p)) => {
                    sm.message_payload = Some(p.value.as_ref().to_vec())
                }
                Some(TlvValue::MessageState(s)) => sm.message_state = Some(u8::from(*s)),
                Some(TlvValue::ReceiptedMessageId(id)) => {
                    sm.receipted_message_id = Some(id.as_str().to_string())
                }
                _ => {}
            }
        }
        sm
    }

    /// Reads a `deliver_sm` body (SMPP 3.4 section 4.6.1) without insisting on well-formed
    /// C-Octet Strings. TLVs are read until the first one that does not fit; what was read
    /// before is kept. `None` when the mandatory part is truncated.
    pub fn lenient(body: &[u8]) -> Option<Self> {
        let mut r = Lenient { data: body, at: 0 };
        r.c_string()?; // service_type
        r.u8()?; // source_addr_ton
        r.u8()?; // source_addr_npi
        let source_addr = r.c_string()?;
        r.u8()?; // dest_addr_ton
        r.u8()?; // dest_addr_npi
        r.c_string()?; // destination_addr
        let esm_class = r.u8()?;
        r.u8()?; // protocol_id
        r.u8()?; // priority_flag
        r.c_string()?; // schedule_delivery_time
        r.c_string()?; // validity_period
        r.u8()?; // registered_delivery
        r.u8()?; // replace_if_present_flag
        let data_coding = r.u8()?;
        r.u8()?; // sm_default_msg_id
        let sm_length = r.u8()?;
        let short_message = r.take(usize::from(sm_length))?.to_vec();
        let mut sm = InboundSm {
            source_addr,
            esm_class,
            data_coding,
            short_message,
            ..Default::default()
        };
        while let Some((tag, value)) = r.tlv() {
            match tag {
                TAG_MESSAGE_PAYLOAD => sm.message_payload = Some(value.to_vec()),
                TAG_MESSAGE_STATE => sm.message_state = value.first().copied(),
                TAG_RECEIPTED_MESSAGE_ID => {
                    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
                    sm.receipted_message_id =
                        Some(String::from_utf8_lossy(&value[..end]).into_owned());
                }
                _ => {}
            }
        }
        Some(sm)
    }

    pub fn is_receipt(&self) -> bool {
        self.esm_class & ESM_TYPE_MASK == ESM_TYPE_DELIVERY_RECEIPT
    }

    pub fn has_udh(&self) -> bool {
        self.esm_class & ESM_UDHI != 0
    }

    /// The user data: short_message, or message_payload when short_message is empty
    /// (SMPP 3.4 section 5.3.2.32: only one of them carries the message).
    pub fn user_data(&self) -> &[u8] {
        match &self.message_payload {
            Some(p) if self.short_message.is_empty() => p,
            _ => &self.short_message,
        }
    }
}

struct Lenient<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Lenient<'a> {
    fn u8(&mut self) -> Option<u8> {
        let b = *self.data.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.data.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }

    fn c_string(&mut self) -> Option<String> {
        let rest = self.data.get(self.at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        self.at += end + 1;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }

    fn tlv(&mut self) -> Option<(u16, &'a [u8])> {
        let head = self.take(4)?;
        let tag = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]);
        Some((tag, self.take(usize::from(len))?))
    }
}

/// What a delivery receipt says about the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReceiptOutcome {
    /// DELIVRD / message_state 2.
    Delivered,
    /// A final failure: the stat name (UNDELIV, EXPIRED, REJECTD, DELETED) and the err field.
    Failed {
        stat: &'static str,
        err: Option<String>,
    },
    /// Not final (ENROUTE, ACCEPTD, UNKNOWN, SCHEDULED...): nothing to report.
    Pending,
}

/// A delivery receipt: which message and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Receipt {
    pub message_id: String,
    pub outcome: ReceiptOutcome,
}

/// Reads a receipt from the TLVs (SMPP 3.4 section 4.6.1: receipted_message_id and
/// message_state take precedence) or the classic text of appendix B:
/// `id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:E text:...`
pub(crate) fn parse_receipt(sm: &InboundSm) -> Option<Receipt> {
    let text = String::from_utf8_lossy(&sm.short_message);
    let text_id = receipt_field(&text, "id:");
    let message_id = sm
        .receipted_message_id
        .clone()
        .filter(|id| !id.is_empty())
        .or(text_id)?;
    let err = receipt_field(&text, "err:");
    let outcome = match sm.message_state {
        Some(state) => outcome_from_state(state, err),
        None => match receipt_field(&text, "stat:") {
            Some(stat) => outcome_from_stat(&stat, err),
            None => return None,
        },
    };
    Some(Receipt {
        message_id,
        outcome,
    })
}

/// message_state values (SMPP 3.4 section 5.2.28).
fn outcome_from_state(state: u8, err: Option<String>) -> ReceiptOutcome {
    match state {
        2 => ReceiptOutcome::Delivered,
        3 => ReceiptOutcome::Failed {
            stat: "EXPIRED",
            err,
        },
        4 => ReceiptOutcome::Failed {
            stat: "DELETED",
            err,
        },
        5 => ReceiptOutcome::Failed {
            stat: "UNDELIV",
            err,
        },
        8 => ReceiptOutcome::Failed {
            stat: "REJECTD",
            err,
        },
        _ => ReceiptOutcome::Pending,
    }
}

fn outcome_from_stat(stat: &str, err: Option<String>) -> ReceiptOutcome {
    match stat.to_ascii_uppercase().as_str() {
        "DELIVRD" | "DELIVERED" => ReceiptOutcome::Delivered,
        "EXPIRED" => ReceiptOutcome::Failed {
            stat: "EXPIRED",
            err,
        },
        "DELETED" => ReceiptOutcome::Failed {
            stat: "DELETED",
            err,
        },
        "UNDELIV" | "UNDELIVERABLE" => ReceiptOutcome::Failed {
            stat: "UNDELIV",
            err,
        },
        "REJECTD" | "REJECTED" => ReceiptOutcome::Failed {
            stat: "REJECTD",
            err,
        },
        _ => ReceiptOutcome::Pending,
    }
}

/// The value after `key` (case-insensitive, at the start or after white space), up to the
/// next white space. The free `text:` field at the end is never searched.
fn receipt_field(text: &str, key: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let searchable = match find_key(&lower, "text:") {
        Some(at) => &lower[..at],
        None => &lower[..],
    };
    let at = find_key(searchable, key)?;
    let start = at + key.len();
    let value: String = text[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    (!value.is_empty()).then_some(value)
}

fn find_key(haystack: &str, key: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(pos) = haystack[from..].find(key) {
        let at = from + pos;
        let boundary = at == 0
            || haystack[..at]
                .chars()
                .next_back()
                .is_some_and(char::is_whitespace);
        if boundary {
            return Some(at);
        }
        from = at + key.len();
    }
    None
}

/// Normalised form of an SMSC message id for matching a receipt to a `submit_sm_resp`:
/// lowercase, without leading zeros.
pub(crate) fn normalise_id(id: &str) -> String {
    let lower = id.trim().to_ascii_lowercase();
    let trimmed = lower.trim_start_matches('0');
    if trimmed.is_empty() && !lower.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Some SMSCs answer `submit_sm` with a hexadecimal id and put it in decimal in the receipt
/// text: the hexadecimal form of a decimal id, normalised.
pub(crate) fn decimal_id_as_hex(id: &str) -> Option<String> {
    let id = id.trim();
    if id.is_empty() || id.len() > 38 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse::<u128>().ok().map(|n| format!("{n:x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt_text(text: &str) -> InboundSm {
        InboundSm {
            esm_class: 0x04,
            short_message: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn classic_text() {
        let sm = receipt_text(
            "id:0A1B2C sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:id:zz stat:UNDELIV",
        );
        assert!(sm.is_receipt());
        let r = parse_receipt(&sm).unwrap();
        assert_eq!(r.message_id, "0A1B2C");
        assert_eq!(r.outcome, ReceiptOutcome::Delivered);
        let r = parse_receipt(&receipt_text("ID:77 STAT:UNDELIV ERR:001")).unwrap();
        assert_eq!(
            r.outcome,
            ReceiptOutcome::Failed {
                stat: "UNDELIV",
                err: Some("001".into())
            }
        );
        assert_eq!(
            parse_receipt(&receipt_text("id:5 stat:ENROUTE"))
                .unwrap()
                .outcome,
            ReceiptOutcome::Pending
        );
        assert!(parse_receipt(&receipt_text("hello")).is_none());
        assert!(parse_receipt(&receipt_text("stat:DELIVRD")).is_none());
    }

    #[test]
    fn tlvs_win() {
        let sm = InboundSm {
            receipted_message_id: Some("abc".into()),
            message_state: Some(3),
            ..receipt_text("id:other stat:DELIVRD")
        };
        let r = parse_receipt(&sm).unwrap();
        assert_eq!(r.message_id, "abc");
        assert!(matches!(
            r.outcome,
            ReceiptOutcome::Failed {
                stat: "EXPIRED",
                ..
            }
        ));
    }

    #[test]
    fn lenient_reader() {
        let mut body = Vec::new();
        body.extend_from_slice(b"\0\x01\x01491234\xff\0\x00\x00\0"); // service, ton, npi, src (non-ASCII), ton, npi, dst
        body.extend_from_slice(&[0x44, 0x7F, 0]); // esm, pid, priority
        body.extend_from_slice(b"\0\0"); // schedule, validity
        body.extend_from_slice(&[0, 0, 0xF6, 0, 3, 1, 2, 3]); // reg, replace, dcs, default id, sm_length, sm
        body.extend_from_slice(&[0x00, 0x1E, 0x00, 0x02, b'4', b'2']); // receipted id without NUL
        body.extend_from_slice(&[0x04, 0x27, 0x00, 0x01, 0x02]);
        body.extend_from_slice(&[0x04, 0x24, 0x00, 0x02, 0xAA, 0xBB]);
        body.extend_from_slice(&[0x12, 0x34, 0x00, 0x09, 0x00]); // truncated TLV: ignored
        let sm = InboundSm::lenient(&body).unwrap();
        assert_eq!(sm.source_addr, "491234\u{fffd}");
        assert_eq!(sm.esm_class, 0x44);
        assert_eq!(sm.data_coding, 0xF6);
        assert_eq!(sm.short_message, vec![1, 2, 3]);
        assert_eq!(sm.receipted_message_id.as_deref(), Some("42"));
        assert_eq!(sm.message_state, Some(2));
        assert_eq!(sm.message_payload, Some(vec![0xAA, 0xBB]));
        for cut in 0..27 {
            assert!(InboundSm::lenient(&body[..cut]).is_none(), "cut {cut}");
        }
        assert!(InboundSm::lenient(&[]).is_none());
    }

    #[test]
    fn ids() {
        assert_eq!(normalise_id("000ABc"), "abc");
        assert_eq!(normalise_id("000"), "0");
        assert_eq!(decimal_id_as_hex("255").as_deref(), Some("ff"));
        assert_eq!(decimal_id_as_hex("ff"), None);
    }
}
