//! From a `Payload` to the short_message octets and header fields of each `submit_sm`.

use otagw_transport::{Payload, TransportError};

use crate::gsm7;
use crate::udh::{ConcatReference, Concatenation, PacketKind, UserDataHeader};
use crate::{split_packet, MAX_SEGMENTS, MAX_USER_DATA_OCTETS};

/// esm_class with the UDH indicator set (SMPP 3.4 section 5.2.12, GSM specific bit 6).
pub(crate) const ESM_CLASS_UDHI: u8 = 0x40;
/// TP-PID SIM data download (TS 23.040 9.2.3.9).
pub(crate) const PID_SIM_DATA_DOWNLOAD: u8 = 0x7F;

const DCS_GSM7: u8 = 0x00;
const DCS_UCS2: u8 = 0x08;
const DCS_GSM7_CLASS0: u8 = 0x10;
const DCS_UCS2_CLASS0: u8 = 0x18;
/// Septets in one SMS with the default alphabet.
const MAX_SEPTETS: usize = 160;
const ESCAPE: u8 = 0x1B;

/// What one `submit_sm` carries, fixed once and for all when the message is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentSpec {
    pub esm_class: u8,
    pub protocol_id: u8,
    pub data_coding: u8,
    pub short_message: Vec<u8>,
}

/// One `submit_sm` per SMS of the payload.
pub(crate) fn segments(
    payload: &Payload,
    reference: ConcatReference,
    ota_data_coding: u8,
) -> Result<Vec<SegmentSpec>, TransportError> {
    match payload {
        Payload::SecuredPacket { packet, .. } => {
            let parts = split_packet(PacketKind::Command, packet, reference)
                .map_err(|e| TransportError::PayloadTooLarge(e.to_string()))?;
            Ok(parts
                .into_iter()
                .map(|short_message| SegmentSpec {
                    esm_class: ESM_CLASS_UDHI,
                    protocol_id: PID_SIM_DATA_DOWNLOAD,
                    data_coding: ota_data_coding,
                    short_message,
                })
                .collect())
        }
        Payload::Text { text, flash } => text_segments(text, *flash, reference),
    }
}

/// Plain text: the GSM 7-bit default alphabet if every character has a code there (sent
/// unpacked, one septet per octet, as SMSCs read data_coding 0), UCS2 (UTF-16BE) otherwise;
/// class 0 when `flash`. Long texts are concatenated with the concatenation IE
/// (TS 23.040 9.2.3.24.1): 153 septets or 67 UCS2 characters per SMS with an 8-bit reference.
fn text_segments(
    text: &str,
    flash: bool,
    reference: ConcatReference,
) -> Result<Vec<SegmentSpec>, TransportError> {
    let udh_octets = 1 + reference.element_len();
    let (data_coding, chunks): (u8, Vec<Vec<u8>>) = match gsm7::encode_text(text) {
        Ok(septets) => {
            let dcs = if flash { DCS_GSM7_CLASS0 } else { DCS_GSM7 };
            if septets.len() <= MAX_SEPTETS {
                (dcs, vec![septets])
            } else {
                // The UDH takes whole septets, fill bits included.
                let per_sms = MAX_SEPTETS - (udh_octets * 8).div_ceil(7);
                (dcs, chunk_septets(&septets, per_sms))
            }
        }
        Err(_) => {
            let dcs = if flash { DCS_UCS2_CLASS0 } else { DCS_UCS2 };
            let units: Vec<u16> = text.encode_utf16().collect();
            if units.len() * 2 <= MAX_USER_DATA_OCTETS {
                (dcs, vec![utf16_be(&units)])
            } else {
                let per_sms = (MAX_USER_DATA_OCTETS - udh_octets) / 2;
                (dcs, chunk_utf16(&units, per_sms))
            }
        }
    };
    if chunks.len() == 1 {
        let short_message = chunks.into_iter().next().unwrap_or_default();
        return Ok(vec![SegmentSpec {
            esm_class: 0,
            protocol_id: 0,
            data_coding,
            short_message,
        }]);
    }
    if chunks.len() > MAX_SEGMENTS {
        return Err(TransportError::PayloadTooLarge(format!(
            "text needs {} SMS, at most {MAX_SEGMENTS}",
            chunks.len()
        )));
    }
    let total = chunks.len() as u8;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| {
            let header = UserDataHeader::new(vec![Concatenation {
                reference,
                total,
                sequence: i as u8 + 1,
            }
            .to_element()]);
            let short_message = header
                .encode_user_data(&chunk)
                .map_err(|e| TransportError::PayloadTooLarge(e.to_string()))?;
            Ok(SegmentSpec {
                esm_class: ESM_CLASS_UDHI,
                protocol_id: 0,
                data_coding,
                short_message,
            })
        })
        .collect()
}

/// Splits septets into chunks of at most `per_sms`, never between ESC and its character.
fn chunk_septets(septets: &[u8], per_sms: usize) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < septets.len() {
        let mut end = (start + per_sms).min(septets.len());
        if end < septets.len() && end > start + 1 && ends_with_open_escape(&septets[start..end]) {
            end -= 1;
        }
        chunks.push(septets[start..end].to_vec());
        start = end;
    }
    chunks
}

/// Whether the last septet is an ESC that starts an extension pair (not the second half of
/// one). `gsm7::encode_text` only emits ESC as a prefix, so pairs are read left to right.
fn ends_with_open_escape(septets: &[u8]) -> bool {
    let mut open = false;
    for &s in septets {
        open = !open && s == ESCAPE;
    }
    open
}

/// Splits UTF-16 units into chunks of at most `per_sms`, never inside a surrogate pair.
fn chunk_utf16(units: &[u16], per_sms: usize) -> Vec<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < units.len() {
        let mut end = (start + per_sms).min(units.len());
        if end < units.len() && end > start + 1 && (0xD800..0xDC00).contains(&units[end - 1]) {
            end -= 1;
        }
        chunks.push(utf16_be(&units[start..end]));
        start = end;
    }
    chunks
}

fn utf16_be(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_be_bytes()).collect()
}

/// SMPP relative time format `YYMMDDhhmmss000R` (SMPP 3.4 section 7.1.1.2) for a validity in
/// minutes; `None` for 0 (the SMSC's default then applies).
pub(crate) fn relative_validity(minutes: u32) -> Option<String> {
    if minutes == 0 {
        return None;
    }
    let mut days = minutes / 1440;
    let hours = (minutes % 1440) / 60;
    let mins = minutes % 60;
    let (mut years, mut months) = (0, 0);
    if days > 99 {
        months = days / 30;
        days %= 30;
        years = (months / 12).min(99);
        months %= 12;
    }
    Some(format!(
        "{years:02}{months:02}{days:02}{hours:02}{mins:02}00000R"
    ))
}

/// The destination as SMPP wants it: digits only (a leading `+` is dropped), 1 to 20 of them.
pub(crate) fn destination(msisdn: &str) -> Result<String, TransportError> {
    let digits = msisdn.strip_prefix('+').unwrap_or(msisdn);
    if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TransportError::Rejected(format!(
            "invalid destination MSISDN {msisdn:?}: 1 to 20 digits expected"
        )));
    }
    Ok(digits.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str, flash: bool) -> Vec<SegmentSpec> {
        text_segments(t, flash, ConcatReference::EightBit(7)).unwrap()
    }

    #[test]
    fn gsm_single_and_flash() {
        let s = text("Hello @ world", false);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].esm_class, s[0].data_coding), (0, 0x00));
        assert_eq!(s[0].short_message[6], 0x00); // '@' is septet 0
        assert_eq!(text("x", true)[0].data_coding, 0x10);
        assert_eq!(text(&"a".repeat(160), false).len(), 1);
    }

    #[test]
    fn gsm_concatenated() {
        let s = text(&"a".repeat(161), false);
        assert_eq!(s.len(), 2);
        assert_eq!(&s[0].short_message[..6], &[5, 0, 3, 7, 2, 1]);
        assert_eq!(s[0].short_message.len(), 6 + 153);
        assert_eq!(&s[1].short_message[..6], &[5, 0, 3, 7, 2, 2]);
        assert_eq!(s[1].short_message.len(), 6 + 8);
        assert!(s.iter().all(|x| x.esm_class == 0x40 && x.data_coding == 0));
        // An escape pair is never split.
        let t = format!("{}€{}", "a".repeat(152), "b".repeat(10));
        let s = text(&t, false);
        assert_eq!(s[0].short_message.len(), 6 + 152);
        assert_eq!(&s[1].short_message[6..8], &[0x1B, 0x65]);
        assert_eq!(s[1].short_message.len(), 6 + 12);
    }

    #[test]
    fn ucs2() {
        let s = text("привет", true);
        assert_eq!(s[0].data_coding, 0x18);
        assert_eq!(&s[0].short_message[..2], &[0x04, 0x3F]);
        let s = text(&"ж".repeat(71), false);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].short_message.len(), 6 + 134);
        assert_eq!(s[0].data_coding, 0x08);
        // A surrogate pair is never split.
        let t = format!("{}😀{}", "ж".repeat(66), "ж".repeat(5));
        let s = text(&t, false);
        assert_eq!(s[0].short_message.len(), 6 + 132);
        assert_eq!(s[1].short_message.len(), 6 + 14);
    }

    #[test]
    fn validity_format() {
        assert_eq!(relative_validity(0), None);
        assert_eq!(relative_validity(90).unwrap(), "000000013000000R");
        assert_eq!(relative_validity(2 * 1440 + 5).unwrap(), "000002000500000R");
        assert_eq!(relative_validity(400 * 1440).unwrap(), "010110000000000R");
        assert_eq!(relative_validity(90).unwrap().len(), 16);
    }

    #[test]
    fn msisdn() {
        assert_eq!(destination("+4917012345").unwrap(), "4917012345");
        assert!(destination("49-170").is_err());
        assert!(destination("").is_err());
        assert!(destination(&"1".repeat(21)).is_err());
    }
}
