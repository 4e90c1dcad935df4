//! PDU conventions of the simulator: framing, header-only responses, receipts and MO messages.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rusmpp::encode::Length;
use rusmpp::pdus::DeliverSm;
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{AnyOctetString, COctetString, EmptyOrFullCOctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, MessagePayload, MessageState, Npi, PriorityFlag, RegisteredDelivery,
    ReplaceIfPresentFlag, ServiceType, Ton,
};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio_util::codec::Encoder as _;

/// esm_class of an MO message carrying a UDH (PoR via SMS-SUBMIT).
pub const ESM_CLASS_MO_UDHI: u8 = 0x40;
/// esm_class of a delivery receipt.
pub const ESM_CLASS_RECEIPT: u8 = 0x04;
/// esm_class of a delivery receipt whose message_payload carries a PoR (receipt + UDHI).
pub const ESM_CLASS_RECEIPT_UDHI: u8 = 0x44;
/// protocol_id of SIM data download (TS 23.040), used on OTA deliver_sm.
pub const PID_SIM_DATA_DOWNLOAD: u8 = 0x7F;
/// data_coding of OTA deliver_sm: class 2 (SIM), 8-bit data.
pub const DCS_CLASS2_8BIT: u8 = 0xF6;
/// TLV tag receipted_message_id.
pub const TAG_RECEIPTED_MESSAGE_ID: u16 = 0x001E;
/// TLV tag message_state.
pub const TAG_MESSAGE_STATE: u16 = 0x0427;
/// TLV tag message_payload.
pub const TAG_MESSAGE_PAYLOAD: u16 = 0x0424;

/// Final state of a message, as reported in a receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptState {
    /// Reached the handset: `stat:DELIVRD err:000`, message_state 2.
    Delivered,
    /// No such subscriber: `stat:UNDELIV err:001` (MAP unknownSubscriber), message_state 5.
    UnknownSubscriber,
    /// The handset refused it (bad OTA framing, reassembly conflict): `stat:UNDELIV err:255`,
    /// message_state 5.
    Rejected,
}

impl ReceiptState {
    fn stat(self) -> &'static str {
        match self {
            ReceiptState::Delivered => "DELIVRD",
            _ => "UNDELIV",
        }
    }

    fn err(self) -> &'static str {
        match self {
            ReceiptState::Delivered => "000",
            ReceiptState::UnknownSubscriber => "001",
            ReceiptState::Rejected => "255",
        }
    }

    fn message_state(self) -> MessageState {
        match self {
            ReceiptState::Delivered => MessageState::Delivered,
            _ => MessageState::Undeliverable,
        }
    }

    /// True for a failed delivery.
    pub fn is_failure(self) -> bool {
        self != ReceiptState::Delivered
    }
}

/// An SMPP address: TON, NPI and the digits (as a C-octet string).
#[derive(Debug, Clone)]
pub(crate) struct Addr {
    pub ton: u8,
    pub npi: u8,
    pub addr: COctetString<1, 21>,
}

/// Encodes a command into its own buffer (one allocation, the PDU).
pub(crate) fn encode(command: &Command) -> Bytes {
    let mut buf = BytesMut::with_capacity(4 + command.length());
    // The codec's encoder cannot fail (it only writes into the buffer).
    let _ = CommandCodec::new().encode(command, &mut buf);
    buf.freeze()
}

/// Encodes a command at the end of `buf`.
pub(crate) fn encode_into(command: &Command, buf: &mut BytesMut) {
    let _ = CommandCodec::new().encode(command, buf);
}

/// A header-only PDU (SMPP 3.4: responses with a non-zero status carry no body).
pub(crate) fn header_only(command_id: u32, status: u32, sequence: u32) -> Bytes {
    let mut buf = BytesMut::with_capacity(16);
    put_header(&mut buf, 16, command_id, status, sequence);
    buf.freeze()
}

/// A copy of `pdu` with another sequence number (re-routing a deliver_sm to another session).
pub(crate) fn with_sequence(pdu: &Bytes, sequence: u32) -> Bytes {
    if pdu.len() < 16 {
        return pdu.clone();
    }
    let mut copy = BytesMut::from(&pdu[..]);
    copy[12..16].copy_from_slice(&sequence.to_be_bytes());
    copy.freeze()
}

/// The parts of a PDU header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub length: u32,
    pub id: u32,
    pub status: u32,
    pub sequence: u32,
}

pub(crate) fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// What [`next_frame`] found at the start of the read buffer.
#[derive(Debug)]
pub(crate) enum Framing {
    /// Not a whole PDU yet.
    Incomplete,
    /// command_length outside `16..=max`: the stream cannot be framed any further.
    Invalid { sequence: u32 },
    /// One whole PDU, header included.
    Frame(Header, BytesMut),
}

/// Splits the next PDU off `buf`.
pub(crate) fn next_frame(buf: &mut BytesMut, max: usize) -> Framing {
    if buf.len() < 4 {
        return Framing::Incomplete;
    }
    let length = be_u32(buf, 0);
    let sequence = if buf.len() >= 16 { be_u32(buf, 12) } else { 0 };
    let len = length as usize;
    if len < 16 || len > max {
        return Framing::Invalid { sequence };
    }
    if buf.len() < len {
        return Framing::Incomplete;
    }
    let frame = buf.split_to(len);
    let header = Header {
        length,
        id: be_u32(&frame, 4),
        status: be_u32(&frame, 8),
        sequence: be_u32(&frame, 12),
    };
    Framing::Frame(header, frame)
}

/// Command ids the session handles by number.
pub(crate) mod ids {
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
    pub const RESPONSE_BIT: u32 = 0x8000_0000;
}

/// Seconds since the UNIX epoch, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYMMDDhhmm` in UTC for a UNIX time (the receipt's date format).
pub fn receipt_date(unix_secs: u64) -> [u8; 10] {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let fields = [
        year.rem_euclid(100) as u64,
        month as u64,
        day as u64,
        secs / 3600,
        secs % 3600 / 60,
    ];
    let mut out = [b'0'; 10];
    for (i, v) in fields.into_iter().enumerate() {
        out[2 * i] = b'0' + (v / 10) as u8;
        out[2 * i + 1] = b'0' + (v % 10) as u8;
    }
    out
}

/// A message_id as sent in submit_sm_resp and receipts: lowercase hex.
pub(crate) fn message_id_text(id: u64, out: &mut Vec<u8>) {
    let _ = write!(out, "{id:x}");
}

fn message_id_cstring(id: u64) -> COctetString<1, 65> {
    let mut v = Vec::with_capacity(17);
    message_id_text(id, &mut v);
    v.push(0);
    COctetString::from_vec(v).unwrap_or_else(|_| COctetString::empty())
}

/// Writes a PDU header at the end of `buf`.
pub(crate) fn put_header(buf: &mut BytesMut, length: u32, id: u32, status: u32, sequence: u32) {
    buf.extend_from_slice(&length.to_be_bytes());
    buf.extend_from_slice(&id.to_be_bytes());
    buf.extend_from_slice(&status.to_be_bytes());
    buf.extend_from_slice(&sequence.to_be_bytes());
}

/// Writes a submit_sm_resp with status 0 and `message_id` (lowercase hex) at the end of `buf`.
pub(crate) fn put_submit_sm_resp(buf: &mut BytesMut, sequence: u32, message_id: u64) {
    let digits = if message_id == 0 {
        1
    } else {
        (64 - message_id.leading_zeros()).div_ceil(4)
    };
    put_header(buf, 16 + digits + 1, 0x8000_0004, 0, sequence);
    for i in (0..digits).rev() {
        let nibble = ((message_id >> (4 * i)) & 0xF) as u8;
        buf.extend_from_slice(&[b"0123456789abcdef"[usize::from(nibble)]]);
    }
    buf.extend_from_slice(&[0]);
}

/// The classic receipt text:
/// `id:<id> sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD err:000 text:`.
pub fn receipt_text(message_id: u64, submit: u64, done: u64, state: ReceiptState) -> Vec<u8> {
    let mut t = Vec::with_capacity(112);
    t.extend_from_slice(b"id:");
    message_id_text(message_id, &mut t);
    t.extend_from_slice(b" sub:001 dlvrd:");
    t.extend_from_slice(if state.is_failure() { b"000" } else { b"001" });
    t.extend_from_slice(b" submit date:");
    t.extend_from_slice(&receipt_date(submit));
    t.extend_from_slice(b" done date:");
    t.extend_from_slice(&receipt_date(done));
    t.extend_from_slice(b" stat:");
    t.extend_from_slice(state.stat().as_bytes());
    t.extend_from_slice(b" err:");
    t.extend_from_slice(state.err().as_bytes());
    t.extend_from_slice(b" text:");
    t
}

#[allow(clippy::too_many_arguments)]
fn deliver_sm(
    sequence: u32,
    source: &Addr,
    dest: &Addr,
    esm_class: u8,
    protocol_id: u8,
    data_coding: u8,
    short_message: OctetString<0, 255>,
    tlvs: Vec<MessageDeliveryRequestTlvValue>,
) -> Bytes {
    let body = DeliverSm::new(
        ServiceType::default(),
        Ton::from(source.ton),
        Npi::from(source.npi),
        source.addr.clone(),
        Ton::from(dest.ton),
        Npi::from(dest.npi),
        dest.addr.clone(),
        // Always from the octet: EsmClass::default() is not 0x00 in rusmpp 0.4.
        EsmClass::from(esm_class),
        protocol_id,
        PriorityFlag::from(0),
        EmptyOrFullCOctetString::empty(),
        EmptyOrFullCOctetString::empty(),
        RegisteredDelivery::from(0),
        ReplaceIfPresentFlag::default(),
        DataCoding::from(data_coding),
        0,
        short_message,
        tlvs,
    );
    encode(&Command::new(CommandStatus::EsmeRok, sequence, body))
}

/// What a receipt says and carries.
#[derive(Debug, Clone)]
pub(crate) struct Receipt<'a> {
    pub message_id: u64,
    pub submit_time: u64,
    pub done_time: u64,
    pub state: ReceiptState,
    /// The handset (source of the receipt): the submit's destination.
    pub handset: &'a Addr,
    /// The ESME address (destination of the receipt): the submit's source.
    pub esme: &'a Addr,
    /// PoR user data (`02 71 00` + response packet) riding the RP-ACK.
    pub por: Option<&'a [u8]>,
    /// Put the receipt text in short_message even with a PoR in message_payload.
    pub text_with_payload: bool,
}

/// A delivery receipt deliver_sm.
///
/// - without PoR: esm_class 0x04, PID 0, DCS 0, short_message = receipt text, TLVs
///   receipted_message_id and message_state;
/// - with PoR: esm_class 0x44, PID 0x7F, DCS 0xF6, short_message empty (or the receipt text if
///   configured), TLVs receipted_message_id, message_state and message_payload = PoR user data.
pub(crate) fn receipt(sequence: u32, r: &Receipt<'_>) -> Bytes {
    let mut tlvs = Vec::with_capacity(3);
    tlvs.push(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
        message_id_cstring(r.message_id),
    ));
    tlvs.push(MessageDeliveryRequestTlvValue::MessageState(
        r.state.message_state(),
    ));
    let text = || {
        OctetString::from_vec(receipt_text(
            r.message_id,
            r.submit_time,
            r.done_time,
            r.state,
        ))
        .unwrap_or_default()
    };
    match r.por {
        None => deliver_sm(
            sequence,
            r.handset,
            r.esme,
            ESM_CLASS_RECEIPT,
            0,
            0,
            text(),
            tlvs,
        ),
        Some(por) => {
            tlvs.push(MessageDeliveryRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_slice(por)),
            ));
            let short = if r.text_with_payload {
                text()
            } else {
                OctetString::empty()
            };
            deliver_sm(
                sequence,
                r.handset,
                r.esme,
                ESM_CLASS_RECEIPT_UDHI,
                PID_SIM_DATA_DOWNLOAD,
                DCS_CLASS2_8BIT,
                short,
                tlvs,
            )
        }
    }
}

/// An MO deliver_sm carrying one SMS of a PoR: esm_class 0x40, PID 0x7F, DCS 0xF6,
/// short_message = the SMS user data (UDH included).
pub(crate) fn mo_por(sequence: u32, handset: &Addr, esme: &Addr, user_data: &[u8]) -> Bytes {
    deliver_sm(
        sequence,
        handset,
        esme,
        ESM_CLASS_MO_UDHI,
        PID_SIM_DATA_DOWNLOAD,
        DCS_CLASS2_8BIT,
        OctetString::from_slice(user_data).unwrap_or_default(),
        Vec::new(),
    )
}

/// A bind_*_resp with status 0: the SMSC's system_id and sc_interface_version 0x34.
pub(crate) fn bind_resp(id: CommandId, sequence: u32, system_id: &str) -> Command {
    use rusmpp::pdus::{BindReceiverResp, BindTransceiverResp, BindTransmitterResp};
    use rusmpp::values::InterfaceVersion;
    let sid = COctetString::from_string(
        system_id
            .chars()
            .filter(|c| c.is_ascii() && *c != '\0')
            .take(15)
            .collect(),
    )
    .unwrap_or_else(|_| COctetString::empty());
    let v = Some(InterfaceVersion::Smpp3_4);
    let pdu: Pdu = match id {
        CommandId::BindReceiver => BindReceiverResp::new(sid, v).into(),
        CommandId::BindTransmitter => BindTransmitterResp::new(sid, v).into(),
        _ => BindTransceiverResp::new(sid, v).into(),
    };
    Command::new(CommandStatus::EsmeRok, sequence, pdu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(&receipt_date(0), b"7001010000");
        // 2024-02-29 13:37:00 UTC
        assert_eq!(&receipt_date(1_709_213_820), b"2402291337");
        // 2000-03-01 00:00 UTC
        assert_eq!(&receipt_date(951_868_800), b"0003010000");
    }

    #[test]
    fn text() {
        let t = receipt_text(0xabc, 0, 60, ReceiptState::Delivered);
        assert_eq!(
            String::from_utf8(t).unwrap(),
            "id:abc sub:001 dlvrd:001 submit date:7001010000 done date:7001010001 stat:DELIVRD err:000 text:"
        );
        let t = receipt_text(1, 0, 0, ReceiptState::UnknownSubscriber);
        assert!(String::from_utf8(t).unwrap().contains("dlvrd:000 submit"));
    }

    #[test]
    fn framing() {
        let mut buf = BytesMut::from(&[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 9, 0][..]);
        match next_frame(&mut buf, 100) {
            Framing::Frame(h, f) => {
                assert_eq!((h.id, h.sequence, f.len()), (0x15, 9, 16));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(next_frame(&mut buf, 100), Framing::Incomplete));
        let mut bad = BytesMut::from(&[0, 0, 0, 3][..]);
        assert!(matches!(
            next_frame(&mut bad, 100),
            Framing::Invalid { sequence: 0 }
        ));
    }

    #[test]
    fn submit_sm_resp_layout() {
        for id in [0u64, 1, 0xf, 0x10, 0x1000, 0xdead_beef, u64::MAX] {
            let mut buf = BytesMut::new();
            put_submit_sm_resp(&mut buf, 7, id);
            let text = format!("{id:x}");
            assert_eq!(be_u32(&buf, 0) as usize, buf.len());
            assert_eq!(be_u32(&buf, 4), 0x8000_0004);
            assert_eq!(be_u32(&buf, 12), 7);
            assert_eq!(&buf[16..buf.len() - 1], text.as_bytes());
            assert_eq!(buf[buf.len() - 1], 0);
        }
    }

    #[test]
    fn esm_class_octets_round_trip() {
        for v in [0x00u8, 0x04, 0x40, 0x44] {
            assert_eq!(u8::from(EsmClass::from(v)), v);
        }
        assert_eq!(u8::from(DataCoding::from(0xF6)), 0xF6);
    }
}
