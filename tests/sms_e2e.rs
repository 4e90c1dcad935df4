//! End to end over loopback: gateway ESME (`SmppTransport`) -> `SmscSimulator` -> virtual UICCs
//! -> PoR -> matched to its command with the card's status words. One-SMS and concatenated
//! commands, 3DES and AES, PoR via MO and via the receipt; and the faults of issue 3.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use otagw::correlation::PendingCommand;
use otagw::dispatch::{secure_command, OtaDispatcher, OtaOutcome};
use otagw::script::{self, rfm, CardClass, ScriptFormat};
use otagw::security::*;
use otagw::sim::{Fleet, FleetDefaults};
use otagw_sms::smpp::{SmppConfig, SmppTransport};
use otagw_sms::smsc_sim::{
    FaultConfig, HandsetNetwork, HandsetReply, SmscConfig, SmscHandle, SmscSimulator,
};
use otagw_transport::{MessageId, OutboundMessage, Payload, SendOptions, Transport};

/// One card as the gateway knows it: from the vendor file the simulator's fleet wrote.
#[derive(Clone, Debug)]
struct Card {
    msisdn: String,
    kic: Vec<u8>,
    kid: Vec<u8>,
}

fn cards_of(fleet: &Fleet) -> Vec<Card> {
    let text = fleet.to_vendor_file();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("VAR_OUT:"))
        .expect("VAR_OUT header")
        .split(',')
        .collect();
    let col = |name: &str| header.iter().position(|c| *c == name).expect(name);
    let (m, c, d) = (col("MSISDN"), col("KIC"), col("KID"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Card {
                msisdn: f[m].to_string(),
                kic: hex::decode(f[c]).expect("KIC hex"),
                kid: hex::decode(f[d]).expect("KID hex"),
            }
        })
        .collect()
}

/// A network that corrupts the PoR CC of one card (to see a bad CC reported, never taken).
struct CorruptPor {
    fleet: Fleet,
    victim: String,
}

impl HandsetNetwork for CorruptPor {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply {
        let mut reply = self.fleet.command_packet(msisdn, packet);
        if msisdn == self.victim {
            if let HandsetReply::Delivered { por: Some(p) } = &mut reply {
                // The CC sits right after STATUS in a clear PoR (SPI 12 21 below).
                let at = 3 + 2 + 1 + 3 + 5 + 1 + 1;
                p.user_data[at] ^= 0x01;
            }
        }
        reply
    }
    fn knows(&self, msisdn: &str) -> bool {
        self.fleet.knows(msisdn)
    }
}

/// Builds the network behind the SMSC from the generated fleet.
type NetworkOf = Box<dyn FnOnce(Fleet) -> Arc<dyn HandsetNetwork>>;

struct Harness {
    smsc: SmscHandle,
    transport: Arc<SmppTransport>,
    dispatcher: OtaDispatcher,
    cards: Vec<Card>,
}

async fn harness(n: usize, faults: FaultConfig, network: Option<NetworkOf>) -> Harness {
    let fleet = Fleet::generate(n, 7, FleetDefaults::default()).expect("fleet");
    let cards = cards_of(&fleet);
    let network: Arc<dyn HandsetNetwork> = match network {
        Some(f) => f(fleet),
        None => Arc::new(fleet),
    };
    let config = SmscConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        faults,
        message_id_base: Some(0x1000),
        ..SmscConfig::default()
    };
    let smsc = SmscSimulator::start(config, network)
        .await
        .expect("simulator");
    let mut c = SmppConfig::new(smsc.local_addr().to_string(), "otagw", "secret");
    c.window = 10;
    c.throttle_pause = Duration::from_millis(50);
    c.response_timeout = Duration::from_secs(2);
    let transport = Arc::new(SmppTransport::start(c).expect("transport"));
    assert!(transport.wait_bound(Duration::from_secs(5)).await, "bound");
    let dyn_transport: Arc<dyn Transport> = transport.clone();
    let dispatcher = OtaDispatcher::new(dyn_transport);
    Harness {
        smsc,
        transport,
        dispatcher,
        cards,
    }
}

/// The commands a test sends: SPN update (one SMS) or many record updates (several SMS).
fn rfm_script(segments: usize) -> (Vec<u8>, usize) {
    let mut apdus = vec![
        rfm::select_fid(CardClass::Gsm, 0x3F00),
        rfm::select_fid(CardClass::Gsm, 0x7F20),
        rfm::select_fid(CardClass::Gsm, 0x6F46),
    ];
    let mut spn = b"\x01otagw e2e".to_vec();
    spn.resize(17, 0xFF);
    // Each UPDATE BINARY is 22 octets; enough of them to need `segments` SMS.
    let updates = if segments <= 1 { 1 } else { segments * 6 };
    for _ in 0..updates {
        apdus.push(rfm::update_binary(CardClass::Gsm, 0, &spn).expect("apdu"));
    }
    let n = apdus.len();
    let script = script::CommandScript::from_commands(apdus)
        .encode(ScriptFormat::Compact)
        .expect("script");
    (script, n)
}

#[allow(clippy::too_many_arguments)]
fn command(
    card: &Card,
    id: u64,
    spi: [u8; 2],
    kic_kid: u8,
    counter: u64,
    data: &[u8],
) -> (OutboundMessage, PendingCommand<MessageId>) {
    let spi = Spi::from_bytes(spi);
    let cfg = KeyConfig {
        kic_key: Some(&card.kic),
        kid_key: Some(&card.kid),
        ..Default::default()
    };
    let keys = Scp80Keys::resolve(&spi, kic_kid, kic_kid, &cfg).expect("keys");
    let header = CommandHeader {
        spi,
        kic: KeyIdentifier(kic_kid),
        kid: KeyIdentifier(kic_kid),
        tar: [0xB0, 0x00, 0x10],
        counter: Counter::new(counter).expect("counter"),
    };
    let options = SendOptions {
        delivery_report: true,
        ..SendOptions::default()
    };
    let destination = otagw_transport::Destination {
        msisdn: card.msisdn.clone(),
        iccid: None,
    };
    let c = secure_command(
        MessageId(id),
        destination,
        &header,
        &keys,
        data,
        otagw::security::PacketFraming::Sms,
        options,
    )
    .expect("packet");
    (c.message, c.pending)
}

async fn outcome(rx: tokio::sync::oneshot::Receiver<OtaOutcome>) -> OtaOutcome {
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("outcome within 10 s")
        .expect("outcome sent")
}

fn assert_por_ok(o: &OtaOutcome, executed: usize) {
    let OtaOutcome::Por(d, _) = o else {
        panic!("expected a PoR, got {o:?}")
    };
    assert_eq!(d.status, PorStatus::Ok, "{d:?}");
    assert_eq!(d.protection, PorProtection::AsRequested);
    let r = script::parse_compact_response(&d.data).expect("compact response");
    assert_eq!(r.executed, executed, "{r:?}");
    assert_eq!(r.last().map(|x| x.sw), Some(0x9000));
}

/// SPI 16 39: ciphered + CC + counter higher; PoR ciphered + CC by SMS-SUBMIT (MO).
const VIA_MO: [u8; 2] = [0x16, 0x39];
/// SPI 16 19: the same, PoR in the RP-ACK (the SMSC's receipt).
const VIA_RECEIPT: [u8; 2] = [0x16, 0x19];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sms_and_concatenated_3des_and_aes_por_via_mo_and_receipt() {
    let h = harness(8, FaultConfig::default(), None).await;
    let mut id = 0;
    let mut counter = [0u64; 8];
    for (i, (segments, kic_kid, spi)) in [
        (1, 0x15, VIA_MO),
        (1, 0x12, VIA_MO),
        (1, 0x15, VIA_RECEIPT),
        (1, 0x12, VIA_RECEIPT),
        (3, 0x15, VIA_MO),
        (3, 0x12, VIA_MO),
        (3, 0x15, VIA_RECEIPT),
        (3, 0x12, VIA_RECEIPT),
    ]
    .into_iter()
    .enumerate()
    {
        let (data, executed) = rfm_script(segments);
        id += 1;
        counter[i] += 1;
        let (msg, pending) = command(&h.cards[i], id, spi, kic_kid, counter[i], &data);
        if let Payload::SecuredPacket { packet, .. } = &msg.payload {
            let n = otagw_sms::segment_count(packet.len(), otagw_sms::ConcatReference::EightBit(0))
                .expect("segments");
            assert!(n >= segments, "{n} SMS for {segments}");
        }
        let rx = h.dispatcher.send(msg, pending).await.expect("send");
        assert_por_ok(&outcome(rx).await, executed);
    }
    assert_eq!(h.dispatcher.pending(), 0);
    assert_eq!(h.dispatcher.stats().rejected_pors, 0);
    let s = h.smsc.stats();
    assert_eq!(s.command_packets, 8);
    h.transport.shutdown().await;
    h.smsc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smsc_drops_the_connection_mid_window_nothing_lost_no_new_counter() {
    let h = harness(20, FaultConfig::default(), None).await;
    let (data, executed) = rfm_script(1);
    let mut rxs = Vec::new();
    for (i, card) in h.cards.iter().enumerate() {
        let (msg, pending) = command(card, i as u64 + 1, VIA_MO, 0x15, 1, &data);
        rxs.push(h.dispatcher.send(msg, pending).await.expect("send"));
        if i == 5 {
            h.smsc.disconnect_all();
        }
    }
    for rx in rxs {
        // Every command is answered with counter 1, the only one it was ever sent with: a
        // resend after the drop is the same packet, and a duplicate is refused by the card's
        // counter check (its PoR then matches no pending command).
        assert_por_ok(&outcome(rx).await, executed);
    }
    assert_eq!(h.dispatcher.pending(), 0);
    h.transport.shutdown().await;
    h.smsc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_slows_down_and_every_command_completes() {
    let faults = FaultConfig {
        seed: 3,
        throttle_share: 0.3,
        ..FaultConfig::default()
    };
    let h = harness(10, faults, None).await;
    let (data, executed) = rfm_script(1);
    let mut rxs = Vec::new();
    for (i, card) in h.cards.iter().enumerate() {
        let (msg, pending) = command(card, i as u64 + 1, VIA_MO, 0x12, 1, &data);
        rxs.push(h.dispatcher.send(msg, pending).await.expect("send"));
    }
    for rx in rxs {
        assert_por_ok(&outcome(rx).await, executed);
    }
    assert!(h.smsc.stats().submits_throttled > 0, "throttling happened");
    h.transport.shutdown().await;
    h.smsc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_pdu_from_the_smsc_session_recovers() {
    let h = harness(2, FaultConfig::default(), None).await;
    let (data, executed) = rfm_script(1);
    let (msg, pending) = command(&h.cards[0], 1, VIA_MO, 0x15, 1, &data);
    let rx = h.dispatcher.send(msg, pending).await.expect("send");
    assert_por_ok(&outcome(rx).await, executed);
    // A PDU header claiming 5 octets: the stream cannot be re-framed.
    assert!(h
        .smsc
        .inject("otagw", &[0, 0, 0, 5, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 9]));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(h.transport.wait_bound(Duration::from_secs(5)).await);
    let (msg, pending) = command(&h.cards[1], 2, VIA_MO, 0x15, 1, &data);
    let rx = h.dispatcher.send(msg, pending).await.expect("send");
    assert_por_ok(&outcome(rx).await, executed);
    h.transport.shutdown().await;
    h.smsc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn por_with_a_bad_cc_is_rejected_never_success() {
    let h = harness(
        2,
        FaultConfig::default(),
        Some(Box::new(move |fleet: Fleet| {
            let cards = cards_of(&fleet);
            let m = cards[0].msisdn.clone();
            Arc::new(CorruptPor { fleet, victim: m }) as Arc<dyn HandsetNetwork>
        })),
    )
    .await;
    let (data, executed) = rfm_script(1);
    // SPI 12 21: CC + counter; PoR with CC, in clear, by SMS-SUBMIT.
    let (msg, pending) = command(&h.cards[0], 1, [0x12, 0x29], 0x15, 1, &data);
    let rx = h.dispatcher.send(msg, pending).await.expect("send");
    let waited = tokio::time::timeout(Duration::from_millis(1500), rx).await;
    assert!(
        waited.is_err(),
        "a PoR with a bad CC resolved the command: {waited:?}"
    );
    assert_eq!(h.dispatcher.stats().rejected_pors, 1);
    assert!(h
        .dispatcher
        .last_rejection()
        .is_some_and(|r| r.contains("CC mismatch")));
    // The other card, untouched, answers normally.
    let (msg, pending) = command(&h.cards[1], 2, [0x12, 0x29], 0x15, 1, &data);
    let rx = h.dispatcher.send(msg, pending).await.expect("send");
    assert_por_ok(&outcome(rx).await, executed);
    h.transport.shutdown().await;
    h.smsc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn por_for_an_unknown_command_is_counted_not_matched() {
    let h = harness(1, FaultConfig::default(), None).await;
    let (data, _) = rfm_script(1);
    // Sent straight on the transport: the dispatcher waits for no such command.
    let (msg, _pending) = command(&h.cards[0], 99, VIA_MO, 0x15, 1, &data);
    let t: Arc<dyn Transport> = h.transport.clone();
    t.send(msg).await.expect("send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while h.dispatcher.stats().unmatched_pors == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.dispatcher.stats().unmatched_pors, 1);
    assert_eq!(h.dispatcher.stats().rejected_pors, 0);
    h.transport.shutdown().await;
    h.smsc.shutdown().await;
}
