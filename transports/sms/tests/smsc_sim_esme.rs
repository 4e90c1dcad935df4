//! The SMSC simulator driven by a raw SMPP client: requests encoded with the rusmpp codec,
//! everything the simulator sends parsed by hand here, octet by octet, so the tests pin the
//! exact PDU conventions (esm_class, PID, DCS, TLV tags, receipt text).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use otagw_sms::smsc_sim::{
    Credentials, FaultConfig, HandsetNetwork, HandsetReply, PorReply, SmscConfig, SmscHandle,
    SmscSimulator,
};
use otagw_sms::{split_packet, Accepted, ConcatReference, PacketKind, Reassembler};
use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter, SubmitSm};
use rusmpp::tlvs::MessageSubmissionRequestTlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{AnyOctetString, COctetString, OctetString};
use rusmpp::values::{DataCoding, EsmClass, MessagePayload, Npi, RegisteredDelivery, Ton};
use rusmpp::{Command, CommandStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Encoder;

const STEP: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// A scripted handset network.

#[derive(Default)]
struct Net {
    /// MSISDN -> what its card answers to any command.
    cards: HashMap<String, Option<PorReply>>,
    seen: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Net {
    fn with_card(mut self, msisdn: &str, por: Option<PorReply>) -> Self {
        self.cards.insert(msisdn.to_string(), por);
        self
    }

    fn seen(&self) -> Vec<(String, Vec<u8>)> {
        self.seen.lock().unwrap().clone()
    }
}

impl HandsetNetwork for Net {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply {
        self.seen
            .lock()
            .unwrap()
            .push((msisdn.to_string(), packet.to_vec()));
        match self.cards.get(msisdn) {
            None => HandsetReply::UnknownSubscriber,
            Some(por) => HandsetReply::Delivered { por: por.clone() },
        }
    }

    fn knows(&self, msisdn: &str) -> bool {
        self.cards.contains_key(msisdn)
    }
}

fn por(via_submit: bool, packet: &[u8]) -> PorReply {
    let mut user_data = vec![0x02, 0x71, 0x00];
    user_data.extend_from_slice(packet);
    PorReply {
        user_data,
        via_submit,
    }
}

/// A command packet from CPL on (contents do not matter to the simulator).
fn command_packet(len: usize) -> Vec<u8> {
    let mut p: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    let cpl = (len - 2) as u16;
    p[..2].copy_from_slice(&cpl.to_be_bytes());
    p
}

const POR_PACKET: &[u8] = &[
    0x00, 0x0E, 0x0A, 0xB0, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x90, 0x00,
];

async fn start(net: Arc<Net>, tweak: impl FnOnce(&mut SmscConfig)) -> SmscHandle {
    let mut config = SmscConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.message_id_base = Some(0x1000);
    config.enquire_link_interval = None;
    tweak(&mut config);
    SmscSimulator::start(config, net).await.expect("listen")
}

// ---------------------------------------------------------------------------------------------
// A raw ESME.

#[derive(Debug, Clone)]
struct RawPdu {
    id: u32,
    status: u32,
    seq: u32,
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Deliver {
    service_type: String,
    src_ton: u8,
    src_npi: u8,
    src: String,
    dst_ton: u8,
    dst_npi: u8,
    dst: String,
    esm_class: u8,
    pid: u8,
    dcs: u8,
    registered_delivery: u8,
    short_message: Vec<u8>,
    tlvs: Vec<(u16, Vec<u8>)>,
}

impl Deliver {
    fn tlv(&self, tag: u16) -> Option<&[u8]> {
        self.tlvs
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v.as_slice())
    }

    fn text(&self) -> String {
        String::from_utf8(self.short_message.clone()).unwrap()
    }

    fn receipted_id(&self) -> String {
        let v = self.tlv(0x001E).expect("receipted_message_id");
        assert_eq!(
            v.last(),
            Some(&0),
            "receipted_message_id is a C-octet string"
        );
        String::from_utf8(v[..v.len() - 1].to_vec()).unwrap()
    }

    fn message_state(&self) -> u8 {
        let v = self.tlv(0x0427).expect("message_state");
        assert_eq!(v.len(), 1);
        v[0]
    }
}

fn cstr(b: &[u8], at: &mut usize) -> String {
    let end = b[*at..].iter().position(|&c| c == 0).expect("NUL") + *at;
    let s = String::from_utf8(b[*at..end].to_vec()).unwrap();
    *at = end + 1;
    s
}

fn octet(b: &[u8], at: &mut usize) -> u8 {
    let v = b[*at];
    *at += 1;
    v
}

/// SMPP 3.4 section 4.6.1, by hand.
fn parse_deliver(p: &RawPdu) -> Deliver {
    assert_eq!(p.id, 0x0000_0005, "deliver_sm");
    let b = &p.body;
    let mut at = 0;
    let service_type = cstr(b, &mut at);
    let src_ton = octet(b, &mut at);
    let src_npi = octet(b, &mut at);
    let src = cstr(b, &mut at);
    let dst_ton = octet(b, &mut at);
    let dst_npi = octet(b, &mut at);
    let dst = cstr(b, &mut at);
    let esm_class = octet(b, &mut at);
    let pid = octet(b, &mut at);
    let _priority = octet(b, &mut at);
    assert_eq!(cstr(b, &mut at), "", "schedule_delivery_time");
    assert_eq!(cstr(b, &mut at), "", "validity_period");
    let registered_delivery = octet(b, &mut at);
    let _replace = octet(b, &mut at);
    let dcs = octet(b, &mut at);
    let _default_msg = octet(b, &mut at);
    let sm_length = usize::from(octet(b, &mut at));
    let short_message = b[at..at + sm_length].to_vec();
    at += sm_length;
    let mut tlvs = Vec::new();
    while at < b.len() {
        let tag = u16::from_be_bytes([b[at], b[at + 1]]);
        let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        tlvs.push((tag, b[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    Deliver {
        service_type,
        src_ton,
        src_npi,
        src,
        dst_ton,
        dst_npi,
        dst,
        esm_class,
        pid,
        dcs,
        registered_delivery,
        short_message,
        tlvs,
    }
}

struct Esme {
    stream: TcpStream,
    buf: BytesMut,
    seq: u32,
    /// deliver_sm received while waiting for something else.
    delivers: VecDeque<RawPdu>,
    /// Other PDUs received while waiting for deliver_sm.
    others: VecDeque<RawPdu>,
    /// Answer deliver_sm with deliver_sm_resp.
    ack: bool,
}

impl Esme {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.expect("connect"),
            buf: BytesMut::new(),
            seq: 0,
            delivers: VecDeque::new(),
            others: VecDeque::new(),
            ack: true,
        }
    }

    /// deliver_sm_resp status 0 to `seq` (message_id is an empty C-octet string).
    async fn answer_deliver(&mut self, seq: u32) {
        let mut resp = Vec::with_capacity(17);
        resp.extend_from_slice(&17u32.to_be_bytes());
        resp.extend_from_slice(&0x8000_0005u32.to_be_bytes());
        resp.extend_from_slice(&0u32.to_be_bytes());
        resp.extend_from_slice(&seq.to_be_bytes());
        resp.push(0);
        self.send_raw(&resp).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn send(&mut self, pdu: impl Into<rusmpp::Pdu>) -> u32 {
        self.seq += 1;
        let command = Command::new(CommandStatus::EsmeRok, self.seq, pdu);
        let mut out = BytesMut::new();
        CommandCodec::new().encode(command, &mut out).unwrap();
        self.send_raw(&out).await;
        self.seq
    }

    /// The next PDU off the socket; `None` on EOF or after `wait`.
    async fn read_pdu(&mut self, wait: Duration) -> Option<RawPdu> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.buf.len() >= 16 {
                let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
                assert!(len >= 16, "simulator sent command_length {len}");
                if self.buf.len() >= len {
                    let f = self.buf.split_to(len);
                    let word = |i: usize| u32::from_be_bytes(f[i..i + 4].try_into().unwrap());
                    let pdu = RawPdu {
                        id: word(4),
                        status: word(8),
                        seq: word(12),
                        body: f[16..].to_vec(),
                    };
                    if pdu.id == 0x0000_0005 && self.ack {
                        self.answer_deliver(pdu.seq).await;
                    }
                    return Some(pdu);
                }
            }
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next non-deliver_sm PDU.
    async fn next_other(&mut self, wait: Duration) -> Option<RawPdu> {
        if let Some(p) = self.others.pop_front() {
            return Some(p);
        }
        loop {
            let p = self.read_pdu(wait).await?;
            if p.id == 0x0000_0005 {
                self.delivers.push_back(p);
            } else {
                return Some(p);
            }
        }
    }

    async fn expect_other(&mut self) -> RawPdu {
        self.next_other(STEP)
            .await
            .expect("a PDU from the simulator")
    }

    /// The next deliver_sm, or `None` after `wait`.
    async fn next_deliver(&mut self, wait: Duration) -> Option<Deliver> {
        self.next_deliver_pdu(wait).await.map(|p| parse_deliver(&p))
    }

    async fn next_deliver_pdu(&mut self, wait: Duration) -> Option<RawPdu> {
        if let Some(p) = self.delivers.pop_front() {
            return Some(p);
        }
        loop {
            let p = self.read_pdu(wait).await?;
            if p.id == 0x0000_0005 {
                return Some(p);
            }
            self.others.push_back(p);
        }
    }

    async fn expect_deliver(&mut self) -> Deliver {
        self.next_deliver(STEP).await.expect("a deliver_sm")
    }

    async fn bind(&mut self, kind: &str, system_id: &str, password: &str) -> RawPdu {
        let sid = COctetString::from_string(system_id.to_string()).unwrap();
        let pw = COctetString::from_string(password.to_string()).unwrap();
        let seq = match kind {
            "trx" => {
                self.send(
                    BindTransceiver::builder()
                        .system_id(sid)
                        .password(pw)
                        .build(),
                )
                .await
            }
            "tx" => {
                self.send(
                    BindTransmitter::builder()
                        .system_id(sid)
                        .password(pw)
                        .build(),
                )
                .await
            }
            _ => {
                self.send(BindReceiver::builder().system_id(sid).password(pw).build())
                    .await
            }
        };
        let resp = self.expect_other().await;
        assert_eq!(resp.seq, seq);
        resp
    }

    async fn bind_ok(addr: SocketAddr, kind: &str) -> Self {
        Self::bind_as(addr, kind, "esme1").await
    }

    async fn bind_as(addr: SocketAddr, kind: &str, system_id: &str) -> Self {
        let mut esme = Self::connect(addr).await;
        let resp = esme.bind(kind, system_id, "secret").await;
        assert_eq!(resp.status, 0, "bind status");
        esme
    }

    async fn submit(&mut self, m: Submit<'_>) -> u32 {
        let mut b = SubmitSm::builder()
            .source_addr_ton(Ton::from(5))
            .source_addr_npi(Npi::from(0))
            .source_addr(COctetString::from_string("OTAGW".to_string()).unwrap())
            .dest_addr_ton(Ton::from(1))
            .dest_addr_npi(Npi::from(1))
            .destination_addr(COctetString::from_string(m.dest.to_string()).unwrap())
            .esm_class(EsmClass::from(m.esm_class))
            .protocol_id(m.pid)
            .registered_delivery(RegisteredDelivery::from(m.registered_delivery))
            .data_coding(DataCoding::from(m.dcs));
        if m.payload_tlv {
            b = b.push_tlv(MessageSubmissionRequestTlvValue::MessagePayload(
                MessagePayload::new(AnyOctetString::from_slice(m.user_data)),
            ));
        } else {
            b = b.short_message(OctetString::from_slice(m.user_data).unwrap());
        }
        self.send(b.build()).await
    }

    /// submit_sm then its submit_sm_resp: the message_id.
    async fn submit_ok(&mut self, m: Submit<'_>) -> String {
        let seq = self.submit(m).await;
        let resp = self.expect_other().await;
        assert_eq!((resp.id, resp.seq, resp.status), (0x8000_0004, seq, 0));
        let id = resp
            .body
            .strip_suffix(&[0])
            .expect("C-octet string message_id");
        assert!(!id.is_empty());
        String::from_utf8(id.to_vec()).unwrap()
    }
}

#[derive(Clone, Copy)]
struct Submit<'a> {
    dest: &'a str,
    esm_class: u8,
    pid: u8,
    dcs: u8,
    registered_delivery: u8,
    user_data: &'a [u8],
    payload_tlv: bool,
}

fn ota<'a>(dest: &'a str, user_data: &'a [u8], registered_delivery: u8) -> Submit<'a> {
    Submit {
        dest,
        esm_class: 0x40,
        pid: 0x7F,
        dcs: 0xF6,
        registered_delivery,
        user_data,
        payload_tlv: false,
    }
}

fn single_sms(packet: &[u8]) -> Vec<u8> {
    let mut ud = vec![0x02, 0x70, 0x00];
    ud.extend_from_slice(packet);
    ud
}

/// `id:<id> sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:X err:Y text:`
fn check_receipt_text(text: &str, id: &str, stat: &str, err: &str) {
    let fields: Vec<&str> = text.split(' ').collect();
    assert_eq!(fields.len(), 10, "{text}");
    assert_eq!(fields[0], format!("id:{id}"));
    assert_eq!(fields[1], "sub:001");
    let dlvrd = if stat == "DELIVRD" { "001" } else { "000" };
    assert_eq!(fields[2], format!("dlvrd:{dlvrd}"));
    assert_eq!(fields[3], "submit");
    assert!(
        fields[4].starts_with("date:") && fields[4].len() == 15,
        "{text}"
    );
    assert!(fields[4][5..].bytes().all(|c| c.is_ascii_digit()));
    assert_eq!(fields[5], "done");
    assert!(
        fields[6].starts_with("date:") && fields[6].len() == 15,
        "{text}"
    );
    assert_eq!(fields[7], format!("stat:{stat}"));
    assert_eq!(fields[8], format!("err:{err}"));
    assert_eq!(fields[9], "text:");
}

// ---------------------------------------------------------------------------------------------
// Binds.

#[tokio::test]
async fn bind_accepts_good_credentials_and_refuses_bad_ones() {
    let net = Arc::new(Net::default());
    let sim = start(net, |c| {
        c.credentials = Some(vec![Credentials::new("esme1", "secret")]);
    })
    .await;
    let addr = sim.local_addr();

    for kind in ["trx", "tx", "rx"] {
        let mut ok = Esme::connect(addr).await;
        let resp = ok.bind(kind, "esme1", "secret").await;
        let expected_id = match kind {
            "trx" => 0x8000_0009,
            "tx" => 0x8000_0002,
            _ => 0x8000_0001,
        };
        assert_eq!((resp.id, resp.status), (expected_id, 0));
        // system_id "otagw-smsc", then sc_interface_version TLV 0x0210 = 0x34.
        assert_eq!(&resp.body[..11], b"otagw-smsc\0");
        assert_eq!(&resp.body[11..], &[0x02, 0x10, 0x00, 0x01, 0x34]);
        // A second bind on the same session: ESME_RALYBND.
        let again = ok.bind(kind, "esme1", "secret").await;
        assert_eq!((again.status, again.body.len()), (0x05, 0));
    }

    let mut bad = Esme::connect(addr).await;
    let resp = bad.bind("trx", "esme1", "wrong").await;
    assert_eq!(
        (resp.id, resp.status),
        (0x8000_0009, 0x0E),
        "ESME_RINVPASWD"
    );
    assert!(resp.body.is_empty(), "no body with an error status");

    let mut unknown = Esme::connect(addr).await;
    let resp = unknown.bind("tx", "nobody", "secret").await;
    assert_eq!(
        (resp.id, resp.status),
        (0x8000_0002, 0x0D),
        "ESME_RBINDFAIL"
    );

    // Refused sessions stay open and can bind properly afterwards.
    let resp = bad.bind("trx", "esme1", "secret").await;
    assert_eq!(resp.status, 0);

    let stats = sim.stats();
    assert_eq!(stats.binds, 4);
    assert_eq!(stats.bind_failures, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn submit_before_bind_and_on_a_receiver_is_refused() {
    let net = Arc::new(Net::default().with_card("491700000001", None));
    let sim = start(net, |_| {}).await;
    let mut open = Esme::connect(sim.local_addr()).await;
    let seq = open
        .submit(ota("491700000001", &single_sms(&command_packet(20)), 1))
        .await;
    let resp = open.expect_other().await;
    assert_eq!((resp.id, resp.seq, resp.status), (0x8000_0004, seq, 0x04));

    let mut rx = Esme::bind_ok(sim.local_addr(), "rx").await;
    let seq = rx
        .submit(ota("491700000001", &single_sms(&command_packet(20)), 1))
        .await;
    let resp = rx.expect_other().await;
    assert_eq!((resp.seq, resp.status), (seq, 0x04), "ESME_RINVBNDSTS");
    assert_eq!(sim.stats().submits_rejected, 2);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// OTA, one SMS.

#[tokio::test]
async fn one_sms_command_por_via_mo() {
    let msisdn = "491700000001";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net.clone(), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;

    let packet = command_packet(40);
    let ud = single_sms(&packet);
    // '+' is stripped from the MSISDN.
    let id = esme.submit_ok(ota(&format!("+{msisdn}"), &ud, 0x01)).await;
    assert_eq!(id, "1000", "message ids are hex from the configured base");

    let receipt = esme.expect_deliver().await;
    assert_eq!(receipt.esm_class, 0x04);
    assert_eq!(receipt.receipted_id(), id);
    assert_eq!(receipt.message_state(), 2, "DELIVERED");
    check_receipt_text(&receipt.text(), &id, "DELIVRD", "000");
    assert_eq!(
        (receipt.src.as_str(), receipt.dst.as_str()),
        (format!("+{msisdn}").as_str(), "OTAGW")
    );
    assert_eq!((receipt.dst_ton, receipt.dst_npi), (5, 0));

    let mo = esme.expect_deliver().await;
    assert_eq!(mo.esm_class, 0x40, "UDHI");
    assert_eq!((mo.pid, mo.dcs), (0x7F, 0xF6));
    assert_eq!((mo.src_ton, mo.src_npi, mo.src.as_str()), (1, 1, msisdn));
    assert_eq!((mo.dst_ton, mo.dst_npi, mo.dst.as_str()), (5, 0, "OTAGW"));
    assert_eq!(mo.registered_delivery, 0);
    assert_eq!(mo.service_type, "");
    assert_eq!(mo.short_message, por(true, POR_PACKET).user_data);
    assert!(mo.tlvs.is_empty());

    assert_eq!(net.seen(), vec![(msisdn.to_string(), packet)]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = sim.stats();
    assert_eq!(
        (
            stats.submits_received,
            stats.submits_accepted,
            stats.dlrs_sent,
            stats.mo_sent,
            stats.command_packets
        ),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(stats.deliver_acked, 2, "both deliver_sm were acknowledged");
    sim.shutdown().await;
}

#[tokio::test]
async fn one_sms_command_por_via_receipt_even_without_registered_delivery() {
    let msisdn = "491700000002";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(false, POR_PACKET))));
    let sim = start(net.clone(), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;

    let packet = command_packet(137);
    let ud = single_sms(&packet);
    assert_eq!(ud.len(), 140);
    let id = esme.submit_ok(ota(msisdn, &ud, 0x00)).await;

    let receipt = esme.expect_deliver().await;
    assert_eq!(receipt.esm_class, 0x44, "receipt + UDHI");
    assert_eq!((receipt.pid, receipt.dcs), (0x7F, 0xF6));
    assert_eq!(receipt.receipted_id(), id);
    assert_eq!(receipt.message_state(), 2);
    assert_eq!(
        receipt.tlv(0x0424),
        Some(por(false, POR_PACKET).user_data.as_slice()),
        "message_payload = 02 71 00 + PoR"
    );
    assert!(
        receipt.short_message.is_empty(),
        "sm_length 0 with message_payload"
    );
    assert_eq!(net.seen(), vec![(msisdn.to_string(), packet)]);
    assert!(
        esme.next_deliver(Duration::from_millis(200))
            .await
            .is_none(),
        "no MO when the PoR rides the receipt"
    );
    assert_eq!(sim.stats().por_receipts_sent, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn receipt_text_can_accompany_the_por_payload() {
    let msisdn = "491700000002";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(false, POR_PACKET))));
    let sim = start(net, |c| c.receipt_text_with_payload = true).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let id = esme
        .submit_ok(ota(msisdn, &single_sms(&command_packet(30)), 1))
        .await;
    let receipt = esme.expect_deliver().await;
    assert_eq!(receipt.esm_class, 0x44);
    check_receipt_text(&receipt.text(), &id, "DELIVRD", "000");
    assert!(receipt.tlv(0x0424).is_some());
    sim.shutdown().await;
}

#[tokio::test]
async fn command_in_message_payload_tlv() {
    let msisdn = "491700000003";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net.clone(), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let packet = command_packet(60);
    let ud = single_sms(&packet);
    let mut m = ota(msisdn, &ud, 0);
    m.payload_tlv = true;
    esme.submit_ok(m).await;
    let mo = esme.expect_deliver().await;
    assert_eq!(mo.esm_class, 0x40);
    assert_eq!(net.seen(), vec![(msisdn.to_string(), packet)]);
    sim.shutdown().await;
}

#[tokio::test]
async fn long_por_comes_back_as_concatenated_mo() {
    let msisdn = "491700000004";
    let long_por: Vec<u8> = (0..300u32).map(|i| (i % 251) as u8).collect();
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, &long_por))));
    let sim = start(net, |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    esme.submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 0))
        .await;

    let mut reassembler = Reassembler::new();
    let mut done = None;
    let mut count = 0;
    while done.is_none() {
        let mo = esme.expect_deliver().await;
        assert_eq!((mo.esm_class, mo.pid, mo.dcs), (0x40, 0x7F, 0xF6));
        assert!(mo.short_message.len() <= 140);
        count += 1;
        if let Accepted::Complete(p) = reassembler
            .accept(mo.src.clone(), &mo.short_message)
            .unwrap()
        {
            done = Some(p);
        }
    }
    let packet = done.unwrap();
    assert_eq!(count, 3);
    assert_eq!(packet.kind, Some(PacketKind::Response));
    assert_eq!(packet.data, long_por);
    assert_eq!(sim.stats().mo_sent, 3);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// OTA, concatenated.

async fn concatenated(order: &[usize], via_submit: bool) {
    let msisdn = "491700000010";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(via_submit, POR_PACKET))));
    let sim = start(net.clone(), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;

    let packet = command_packet(300);
    let segments = split_packet(
        PacketKind::Command,
        &packet,
        ConcatReference::EightBit(0x5A),
    )
    .unwrap();
    assert_eq!(segments.len(), 3);

    let mut ids = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        ids.push(esme.submit_ok(ota(msisdn, &segments[i], 0x01)).await);
        if n + 1 < order.len() {
            assert!(
                net.seen().is_empty(),
                "nothing reaches the card before the last segment"
            );
        }
    }
    // One receipt per segment (message id), in arrival order, the PoR after them.
    let mut receipted = Vec::new();
    for _ in 0..3 {
        let r = esme.expect_deliver().await;
        receipted.push(r.receipted_id());
        assert_eq!(r.message_state(), 2);
        if via_submit {
            assert_eq!(r.esm_class, 0x04);
        } else if receipted.len() == 3 {
            assert_eq!(
                r.esm_class, 0x44,
                "the completing segment's receipt carries the PoR"
            );
            assert_eq!(
                r.tlv(0x0424),
                Some(por(false, POR_PACKET).user_data.as_slice())
            );
        } else {
            assert_eq!(r.esm_class, 0x04);
            assert_eq!(r.tlv(0x0424), None);
        }
    }
    assert_eq!(receipted, ids);
    if via_submit {
        let mo = esme.expect_deliver().await;
        assert_eq!(mo.short_message, por(true, POR_PACKET).user_data);
    }
    assert_eq!(net.seen(), vec![(msisdn.to_string(), packet)]);
    assert_eq!(sim.pending_reassemblies(), 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn three_segments_in_order() {
    concatenated(&[0, 1, 2], true).await;
}

#[tokio::test]
async fn three_segments_out_of_order() {
    concatenated(&[2, 0, 1], true).await;
    concatenated(&[1, 2, 0], false).await;
}

#[tokio::test]
async fn segments_of_two_messages_interleaved() {
    let (a, b) = ("491700000011", "491700000012");
    let net = Arc::new(
        Net::default()
            .with_card(a, Some(por(true, POR_PACKET)))
            .with_card(b, Some(por(true, POR_PACKET))),
    );
    let sim = start(net.clone(), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let pa = command_packet(280);
    let pb = command_packet(290);
    // Same reference for both: they are told apart by MSISDN.
    let sa = split_packet(PacketKind::Command, &pa, ConcatReference::EightBit(1)).unwrap();
    let sb = split_packet(PacketKind::Command, &pb, ConcatReference::EightBit(1)).unwrap();
    for i in 0..3 {
        esme.submit_ok(ota(a, &sa[i], 0)).await;
        esme.submit_ok(ota(b, &sb[2 - i], 0)).await;
    }
    esme.expect_deliver().await;
    esme.expect_deliver().await;
    let mut seen = net.seen();
    seen.sort();
    assert_eq!(seen, vec![(a.to_string(), pa), (b.to_string(), pb)]);
    sim.shutdown().await;
}

#[tokio::test]
async fn incomplete_message_expires() {
    let msisdn = "491700000013";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net.clone(), |c| {
        c.reassembly_timeout = Duration::from_millis(100);
    })
    .await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let segments = split_packet(
        PacketKind::Command,
        &command_packet(300),
        ConcatReference::EightBit(9),
    )
    .unwrap();
    let id = esme.submit_ok(ota(msisdn, &segments[0], 1)).await;
    assert_eq!(sim.pending_reassemblies(), 1);
    let r = esme.expect_deliver().await;
    assert_eq!(r.receipted_id(), id, "the segment reached the handset");
    assert!(net.seen().is_empty(), "the card never saw a command");
    assert_eq!(sim.pending_reassemblies(), 0);
    assert_eq!(sim.stats().reassembly_expired, 1);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Undeliverable, plain text.

#[tokio::test]
async fn unknown_msisdn_gets_undeliv_receipt() {
    let net = Arc::new(Net::default());
    let sim = start(net.clone(), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;

    let packet = command_packet(50);
    let id = esme
        .submit_ok(ota("491799999999", &single_sms(&packet), 1))
        .await;
    let r = esme.expect_deliver().await;
    assert_eq!(r.esm_class, 0x04);
    assert_eq!(r.receipted_id(), id);
    assert_eq!(r.message_state(), 5, "UNDELIVERABLE");
    check_receipt_text(&r.text(), &id, "UNDELIV", "001");

    // Plain text to an unknown subscriber, receipt on failure only (registered_delivery 2).
    let text = Submit {
        dest: "491799999998",
        esm_class: 0x00,
        pid: 0x00,
        dcs: 0x00,
        registered_delivery: 0x02,
        user_data: b"hello",
        payload_tlv: false,
    };
    let id = esme.submit_ok(text).await;
    let r = esme.expect_deliver().await;
    assert_eq!((r.receipted_id(), r.message_state()), (id, 5));
    assert!(esme
        .next_deliver(Duration::from_millis(100))
        .await
        .is_none());
    assert_eq!(sim.stats().undeliverable, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn plain_text_to_known_subscriber_is_delivered() {
    let msisdn = "491700000020";
    let net = Arc::new(Net::default().with_card(msisdn, None));
    let sim = start(net.clone(), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let text = Submit {
        dest: msisdn,
        esm_class: 0x00,
        pid: 0x00,
        dcs: 0x10,
        registered_delivery: 0x01,
        user_data: b"class 0 hello",
        payload_tlv: false,
    };
    let id = esme.submit_ok(text).await;
    let r = esme.expect_deliver().await;
    check_receipt_text(&r.text(), &id, "DELIVRD", "000");
    // Failure-only receipts: nothing for a delivered message.
    esme.submit_ok(Submit {
        registered_delivery: 0x02,
        ..text
    })
    .await;
    assert!(esme
        .next_deliver(Duration::from_millis(150))
        .await
        .is_none());
    assert!(
        net.seen().is_empty(),
        "plain text never reaches the card's OTA stack"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn receipts_off_still_returns_por_in_receipt() {
    let (a, b) = ("491700000021", "491700000022");
    let net = Arc::new(
        Net::default()
            .with_card(a, None)
            .with_card(b, Some(por(false, POR_PACKET))),
    );
    let sim = start(net, |c| c.receipts = false).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    esme.submit_ok(ota(a, &single_sms(&command_packet(20)), 1))
        .await;
    let id = esme
        .submit_ok(ota(b, &single_sms(&command_packet(20)), 1))
        .await;
    let r = esme.expect_deliver().await;
    assert_eq!((r.esm_class, r.receipted_id()), (0x44, id));
    assert!(esme
        .next_deliver(Duration::from_millis(100))
        .await
        .is_none());
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Fault injection.

#[tokio::test]
async fn throttle_share_one_throttles_everything() {
    let msisdn = "491700000030";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net.clone(), |c| {
        c.faults = FaultConfig {
            throttle_share: 1.0,
            ..FaultConfig::default()
        };
    })
    .await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    for _ in 0..20 {
        let seq = esme
            .submit(ota(msisdn, &single_sms(&command_packet(20)), 1))
            .await;
        let resp = esme.expect_other().await;
        assert_eq!((resp.id, resp.seq, resp.status), (0x8000_0004, seq, 0x58));
        assert!(resp.body.is_empty());
    }
    assert!(esme
        .next_deliver(Duration::from_millis(100))
        .await
        .is_none());
    assert!(net.seen().is_empty());
    let s = sim.stats();
    assert_eq!((s.submits_throttled, s.submits_accepted), (20, 0));
    sim.shutdown().await;
}

#[tokio::test]
async fn drop_share_loses_messages_silently() {
    let msisdn = "491700000031";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net.clone(), |c| {
        c.faults = FaultConfig {
            drop_share: 1.0,
            ..FaultConfig::default()
        };
    })
    .await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    for _ in 0..10 {
        esme.submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 1))
            .await;
    }
    assert!(
        esme.next_deliver(Duration::from_millis(200))
            .await
            .is_none(),
        "no receipt, no PoR"
    );
    assert!(net.seen().is_empty());
    assert_eq!(sim.stats().submits_dropped, 10);
    sim.shutdown().await;
}

#[tokio::test]
async fn mixed_faults_are_deterministic_for_a_seed() {
    let msisdn = "491700000032";
    async fn run(msisdn: &str, seed: u64) -> Vec<u32> {
        let net = Arc::new(Net::default().with_card(msisdn, None));
        let sim = start(net, |c| {
            c.faults = FaultConfig {
                seed,
                throttle_share: 0.3,
                drop_share: 0.3,
                ..FaultConfig::default()
            };
        })
        .await;
        let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            esme.submit(ota(msisdn, &single_sms(&command_packet(20)), 0))
                .await;
            statuses.push(esme.expect_other().await.status);
        }
        let s = sim.stats();
        assert_eq!(s.submits_throttled + s.submits_accepted, 40);
        assert!(s.submits_throttled > 0 && s.submits_dropped > 0);
        sim.shutdown().await;
        statuses
    }
    let a = run(msisdn, 11).await;
    assert_eq!(a, run(msisdn, 11).await);
    assert_ne!(a, run(msisdn, 12).await);
}

#[tokio::test]
async fn delay_share_delivers_late() {
    let msisdn = "491700000033";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net.clone(), |c| {
        c.faults = FaultConfig {
            delay_share: 1.0,
            delay_min: Duration::from_millis(150),
            delay_max: Duration::from_millis(200),
            ..FaultConfig::default()
        };
    })
    .await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let t0 = Instant::now();
    let id = esme
        .submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 1))
        .await;
    assert!(net.seen().is_empty(), "not delivered yet");
    let r = esme.expect_deliver().await;
    assert!(t0.elapsed() >= Duration::from_millis(150));
    assert_eq!(r.receipted_id(), id);
    esme.expect_deliver().await; // the MO PoR
    assert_eq!(sim.stats().submits_delayed, 1);
    sim.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Robustness, keep-alive.

#[tokio::test]
async fn malformed_pdus_get_generic_nack_and_the_session_survives() {
    let msisdn = "491700000040";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net, |_| {}).await;
    // Another account: its deliver_sm never go to `esme`, and the other way round.
    let mut other = Esme::bind_as(sim.local_addr(), "trx", "esme2").await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;

    // Unknown command_id.
    esme.send_raw(&[0, 0, 0, 16, 0, 0, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0x21])
        .await;
    let nack = esme.expect_other().await;
    assert_eq!((nack.id, nack.status, nack.seq), (0x8000_0000, 0x03, 0x21));

    // A submit_sm whose body is cut short (C-octet strings without NUL).
    esme.send_raw(&[
        0, 0, 0, 20, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0x22, b'a', b'b', b'c', b'd',
    ])
    .await;
    let nack = esme.expect_other().await;
    assert_eq!((nack.id, nack.status, nack.seq), (0x8000_0000, 0x02, 0x22));

    // A request PDU this SMSC does not offer (query_sm).
    let mut q = vec![0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0x23];
    q.extend_from_slice(b"1000\0\x00\x00\0");
    let len = q.len() as u32;
    q[..4].copy_from_slice(&len.to_be_bytes());
    esme.send_raw(&q).await;
    let nack = esme.expect_other().await;
    assert_eq!((nack.id, nack.status, nack.seq), (0x8000_0000, 0x03, 0x23));

    // Still serving: enquire_link, then a command with its PoR.
    esme.send_raw(&[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 0x24])
        .await;
    let el = esme.expect_other().await;
    assert_eq!((el.id, el.status, el.seq), (0x8000_0015, 0, 0x24));
    esme.submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 0))
        .await;
    esme.expect_deliver().await;

    // Unframeable: command_length 8. generic_nack then the connection is closed.
    esme.send_raw(&[0, 0, 0, 8, 0xDE, 0xAD, 0xBE, 0xEF]).await;
    let nack = esme.expect_other().await;
    assert_eq!((nack.id, nack.status), (0x8000_0000, 0x02));
    assert!(
        esme.next_other(STEP).await.is_none(),
        "closed after unframeable input"
    );

    // A huge command_length too.
    let mut huge = Esme::connect(sim.local_addr()).await;
    huge.send_raw(&[0x7F, 0xFF, 0xFF, 0xFF, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 1])
        .await;
    let nack = huge.expect_other().await;
    assert_eq!((nack.id, nack.status, nack.seq), (0x8000_0000, 0x02, 1));
    assert!(huge.next_other(STEP).await.is_none());

    // Random garbage on a fresh connection never takes the simulator down.
    let mut junk = Esme::connect(sim.local_addr()).await;
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    junk.send_raw(&garbage).await;
    drop(junk);

    // The other session is unaffected.
    other
        .submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 0))
        .await;
    other.expect_deliver().await;
    assert!(sim.stats().generic_nacks >= 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn enquire_link_answered_and_idle_sessions_probed() {
    let net = Arc::new(Net::default());
    // 300 ms: a session is closed after about twice the interval without an answer, and a
    // loaded 2-core machine (tests in parallel) can take a few hundred ms to answer.
    let sim = start(net, |c| {
        c.enquire_link_interval = Some(Duration::from_millis(300));
    })
    .await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let seq = esme.send(rusmpp::Pdu::EnquireLink).await;
    let resp = esme.expect_other().await;
    assert_eq!((resp.id, resp.status, resp.seq), (0x8000_0015, 0, seq));

    // Idle: the simulator asks.
    let probe = esme.expect_other().await;
    assert_eq!(probe.id, 0x0000_0015, "enquire_link from the SMSC");
    let mut answer = Vec::new();
    answer.extend_from_slice(&16u32.to_be_bytes());
    answer.extend_from_slice(&0x8000_0015u32.to_be_bytes());
    answer.extend_from_slice(&0u32.to_be_bytes());
    answer.extend_from_slice(&probe.seq.to_be_bytes());
    esme.send_raw(&answer).await;

    // A session that never answers is closed (after about twice the interval).
    let mut silent = Esme::bind_ok(sim.local_addr(), "trx").await;
    let t0 = Instant::now();
    let mut probes = 0;
    while let Some(p) = silent.next_other(Duration::from_secs(2)).await {
        assert_eq!(p.id, 0x0000_0015);
        probes += 1;
    }
    assert!(probes >= 1);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "closed, not timed out"
    );
    assert!(sim.stats().enquire_links >= 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn unbind_is_answered_and_closes() {
    let sim = start(Arc::new(Net::default()), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let seq = esme.send(rusmpp::Pdu::Unbind).await;
    let resp = esme.expect_other().await;
    assert_eq!((resp.id, resp.status, resp.seq), (0x8000_0006, 0, seq));
    assert!(esme.next_other(STEP).await.is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn shutdown_unbinds_sessions() {
    let sim = start(Arc::new(Net::default()), |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    let addr = sim.local_addr();
    sim.shutdown().await;
    let unbind = esme.expect_other().await;
    assert_eq!(unbind.id, 0x0000_0006);
    assert!(esme.next_other(STEP).await.is_none());
    assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
}

// ---------------------------------------------------------------------------------------------
// Routing to receiving binds.

#[tokio::test]
async fn receipts_and_mo_go_to_receivers_round_robin_with_backlog() {
    let msisdn = "491700000050";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net, |_| {}).await;
    let mut tx = Esme::bind_ok(sim.local_addr(), "tx").await;

    // No receiver yet: kept.
    let id = tx
        .submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 1))
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sim.backlog("esme1"), 2);

    let mut rx1 = Esme::bind_ok(sim.local_addr(), "rx").await;
    let r = rx1.expect_deliver().await;
    assert_eq!(r.receipted_id(), id);
    let mo = rx1.expect_deliver().await;
    assert_eq!(mo.esm_class, 0x40);
    assert_eq!(sim.backlog("esme1"), 0);

    // Two receivers: the deliver_sm alternate.
    let mut rx2 = Esme::bind_ok(sim.local_addr(), "rx").await;
    for _ in 0..2 {
        tx.submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 1))
            .await;
    }
    let mut got = 0;
    for esme in [&mut rx1, &mut rx2] {
        while esme
            .next_deliver(Duration::from_millis(200))
            .await
            .is_some()
        {
            got += 1;
        }
    }
    assert_eq!(got, 4);
    assert!(
        tx.next_deliver(Duration::from_millis(50)).await.is_none(),
        "a transmitter gets nothing"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_deliver_sm_are_redelivered_to_another_bind() {
    let msisdn = "491700000051";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net, |_| {}).await;
    let mut lazy = Esme::bind_ok(sim.local_addr(), "trx").await;
    lazy.ack = false;
    let id = lazy
        .submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 1))
        .await;
    let first = lazy.expect_deliver().await;
    assert_eq!(first.receipted_id(), id);
    lazy.expect_deliver().await;
    drop(lazy);

    let mut next = Esme::bind_ok(sim.local_addr(), "rx").await;
    let again = next.expect_deliver().await;
    assert_eq!(again.receipted_id(), id);
    let mo = next.expect_deliver().await;
    assert_eq!(mo.short_message, por(true, POR_PACKET).user_data);
    assert_eq!(sim.stats().deliver_redelivered, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn deliver_window_holds_the_next_deliver_sm_until_one_is_answered() {
    let msisdn = "491700000052";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net, |c| c.deliver_window = Some(1)).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    esme.ack = false;
    let id = esme
        .submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 1))
        .await;
    let receipt = esme.next_deliver_pdu(STEP).await.expect("the receipt");
    assert_eq!(parse_deliver(&receipt).receipted_id(), id);
    assert!(
        esme.next_deliver_pdu(Duration::from_millis(300))
            .await
            .is_none(),
        "the PoR waits while the receipt is unanswered (window 1)"
    );
    esme.answer_deliver(receipt.seq).await;
    let mo = esme.next_deliver_pdu(STEP).await.expect("the PoR");
    assert_eq!(
        parse_deliver(&mo).short_message,
        por(true, POR_PACKET).user_data
    );
    // Unanswered when the session ends: delivered again on the next bind.
    drop(esme);
    let mut next = Esme::bind_ok(sim.local_addr(), "rx").await;
    let again = next.expect_deliver().await;
    assert_eq!(again.short_message, por(true, POR_PACKET).user_data);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_binds() {
    const SESSIONS: usize = 24;
    const PER_SESSION: usize = 40;
    let mut net = Net::default();
    for s in 0..SESSIONS {
        net = net.with_card(&format!("4917100{s:05}"), Some(por(s % 2 == 0, POR_PACKET)));
    }
    let net = Arc::new(net);
    let sim = start(net.clone(), |_| {}).await;
    let addr = sim.local_addr();
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        tasks.push(tokio::spawn(async move {
            let mut esme = Esme::connect(addr).await;
            // Each session its own system_id, so its deliver_sm come back to it.
            assert_eq!(esme.bind("trx", &format!("esme{s}"), "x").await.status, 0);
            let msisdn = format!("4917100{s:05}");
            let ud = single_sms(&command_packet(100));
            let mut seqs = Vec::new();
            for _ in 0..PER_SESSION {
                seqs.push(esme.submit(ota(&msisdn, &ud, 1)).await);
            }
            for seq in seqs {
                let r = esme.expect_other().await;
                assert_eq!((r.id, r.seq, r.status), (0x8000_0004, seq, 0));
            }
            let expected = if s % 2 == 0 {
                2 * PER_SESSION
            } else {
                PER_SESSION
            };
            for _ in 0..expected {
                esme.expect_deliver().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(net.seen().len(), SESSIONS * PER_SESSION);
    let s = sim.stats();
    assert_eq!(s.binds as usize, SESSIONS);
    assert_eq!(s.submits_accepted as usize, SESSIONS * PER_SESSION);
    sim.shutdown().await;
}

#[tokio::test]
async fn random_bodies_in_valid_frames_never_kill_the_session() {
    let msisdn = "491700000060";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net, |_| {}).await;
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    // Every command id but unbind (which ends the session by design).
    let ids: [u32; 13] = [
        0x01,
        0x02,
        0x03,
        0x04,
        0x05,
        0x09,
        0x0B,
        0x15,
        0x21,
        0x103,
        0x112,
        0x8000_0005,
        0x8000_0015,
    ];
    let mut rng = otagw_sms::smsc_sim::XorShift64::new(99);
    for round in 0..5000u32 {
        let id = ids[(rng.next_u64() % ids.len() as u64) as usize];
        let len = (rng.next_u64() % 200) as usize;
        let mut body: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        // Often make the strings plausible so decoding gets deeper.
        if round % 3 == 0 {
            for b in body.iter_mut() {
                if *b > 0x7F {
                    *b &= 0x3F;
                }
            }
        }
        let mut pdu = Vec::new();
        pdu.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
        pdu.extend_from_slice(&id.to_be_bytes());
        pdu.extend_from_slice(&0u32.to_be_bytes());
        pdu.extend_from_slice(&(0x1000 + round).to_be_bytes());
        pdu.extend_from_slice(&body);
        esme.send_raw(&pdu).await;
    }
    // Whatever the simulator made of all that, the session still answers.
    let seq = esme.send(rusmpp::Pdu::EnquireLink).await;
    loop {
        let p = esme.expect_other().await;
        if p.id == 0x8000_0015 && p.seq == seq {
            break;
        }
    }
    assert_eq!(sim.stats().sessions_open, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn disconnect_all_drops_sessions_and_keeps_listening() {
    let msisdn = "491700000070";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net, |_| {}).await;
    let mut lazy = Esme::bind_ok(sim.local_addr(), "trx").await;
    lazy.ack = false;
    let id = lazy
        .submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 1))
        .await;
    lazy.expect_deliver().await;
    lazy.expect_deliver().await;

    sim.disconnect_all();
    assert!(
        lazy.next_other(STEP).await.is_none(),
        "closed without unbind"
    );

    // Reconnect: the unacknowledged receipt and MO come again.
    let mut again = Esme::bind_ok(sim.local_addr(), "trx").await;
    let r = again.expect_deliver().await;
    assert_eq!(r.receipted_id(), id);
    again.expect_deliver().await;
    again
        .submit_ok(ota(msisdn, &single_sms(&command_packet(20)), 0))
        .await;
    sim.shutdown().await;
}

#[tokio::test]
async fn inject_writes_raw_bytes_to_a_receiver() {
    let sim = start(Arc::new(Net::default()), |_| {}).await;
    assert!(!sim.inject("esme1", &[0, 0, 0, 16]), "nobody bound");
    let mut esme = Esme::bind_ok(sim.local_addr(), "trx").await;
    // A deliver_sm_resp nobody asked for, then an enquire_link.
    let mut bytes = vec![0, 0, 0, 16, 0x80, 0, 0, 0x05, 0, 0, 0, 0, 0, 0, 0, 9];
    bytes.extend_from_slice(&[0, 0, 0, 16, 0, 0, 0, 0x15, 0, 0, 0, 0, 0, 0, 0, 10]);
    assert!(sim.inject("esme1", &bytes));
    let a = esme.expect_other().await;
    let b = esme.expect_other().await;
    assert_eq!((a.id, a.seq, b.id, b.seq), (0x8000_0005, 9, 0x15, 10));
    sim.shutdown().await;
}

#[tokio::test]
async fn segments_over_two_binds_of_one_account_are_reassembled() {
    let msisdn = "491700000080";
    let net = Arc::new(Net::default().with_card(msisdn, Some(por(true, POR_PACKET))));
    let sim = start(net.clone(), |_| {}).await;
    let mut a = Esme::bind_ok(sim.local_addr(), "tx").await;
    let mut b = Esme::bind_ok(sim.local_addr(), "tx").await;
    let mut other = Esme::bind_as(sim.local_addr(), "tx", "esme2").await;
    let mut rx = Esme::bind_ok(sim.local_addr(), "rx").await;
    let packet = command_packet(300);
    let segments =
        split_packet(PacketKind::Command, &packet, ConcatReference::EightBit(3)).unwrap();
    a.submit_ok(ota(msisdn, &segments[0], 0)).await;
    // Another account's segment with the same reference and MSISDN is another message.
    other.submit_ok(ota(msisdn, &segments[1], 0)).await;
    b.submit_ok(ota(msisdn, &segments[2], 0)).await;
    assert!(net.seen().is_empty());
    a.submit_ok(ota(msisdn, &segments[1], 0)).await;
    let mo = rx.expect_deliver().await;
    assert_eq!(mo.short_message, por(true, POR_PACKET).user_data);
    assert_eq!(net.seen(), vec![(msisdn.to_string(), packet)]);
    assert_eq!(sim.pending_reassemblies(), 1, "esme2's lone segment");
    sim.shutdown().await;
}
