//! CAT_TP end to end over loopback: API -> pipeline (secured for CAT_TP) -> CAT_TP transport
//! -> push (SCP80-secured SMS over SMPP through the SMSC simulator) -> the virtual card's
//! terminal opens the link (its ICCID in the SYN) -> the command packet as one SDU -> the card
//! runs it -> its PoR back on the link -> matched (MSISDN + TAR + counter) and stored.
//! With faults on the card's side of the socket (loss, reordering, duplication), and a silent
//! card.

use std::collections::HashSet;
use std::time::Duration;

use otagw::config::CatpConfig;
use otagw::devkit::{self, DevEnv, DevOptions};
use otagw::security::command::{cattp_command_to_two_octet_form, encode_command_packet_framed};
use otagw::security::response::encode_response_packet;
use otagw::security::*;
use otagw::sim::catp_client::TerminalSettings;
use otagw_catp::Impairment;
use serde_json::{json, Value};

fn catp_config() -> CatpConfig {
    CatpConfig {
        link_timeout_secs: 2,
        push_attempts: 2,
        rto_ms: 150,
        max_retries: 8,
        ..CatpConfig::default()
    }
}

async fn env_with(terminals: TerminalSettings, attempts: u32) -> DevEnv {
    env_with_config(terminals, attempts, catp_config()).await
}

async fn env_with_config(terminals: TerminalSettings, attempts: u32, catp: CatpConfig) -> DevEnv {
    devkit::start(DevOptions {
        cards: 3,
        por_timeout: Duration::from_secs(15),
        attempts,
        backoff: Duration::from_millis(200),
        catp: Some(catp),
        terminals,
        ..DevOptions::default()
    })
    .await
    .expect("dev environment")
}

fn cmd(kind: &str, iccid: &str, tar: &str, data: Value) -> Value {
    json!({
        "type": kind,
        "transport": "catp",
        "target": {"iccid": iccid},
        "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": tar},
        "data": data,
    })
}

async fn run(env: &DevEnv, body: &Value) -> Value {
    let (code, answer) = env.post("/api/v1/ota/commands", body).await.expect("post");
    assert_eq!(code, 202, "{answer}");
    let id = answer["commandId"].as_str().expect("commandId").to_string();
    env.wait_done(&id, Duration::from_secs(60))
        .await
        .expect("done")
}

/// 40 READ BINARY after selecting EF ICCID: a compact script of about 215 octets, more than
/// one SMS carries.
fn long_rfm() -> Value {
    let mut apdus = vec!["00A40004023F00".to_string(), "00A40004022FE2".to_string()];
    apdus.extend((0..40).map(|_| "00B000000A".to_string()));
    json!({ "apdus": apdus })
}

fn catp_stats(env: &DevEnv) -> otagw_catp::transport::CatpStats {
    env.server.catp.as_ref().expect("catp transport").stats()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_and_ram_scripts_over_one_pushed_link() {
    let env = env_with(TerminalSettings::default(), 1).await;
    let iccid = env.iccid(0).expect("card");
    let msisdn = env.msisdn(0).expect("card");

    let r = run(&env, &cmd("RFM", &iccid, "B00010", long_rfm())).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["response"]["porStatus"], "00", "{r}");
    assert_eq!(r["response"]["statusCode"], 0x9000, "{r}");
    assert_eq!(r["attempts"], 1);

    // A RAM load of a 3000-octet method component: one packet over CAT_TP, where SMS would
    // need about 25.
    let (code, up) = env
        .post_bytes("/api/v1/applets?name=catp", devkit::sample_load_file(3000))
        .await
        .expect("upload");
    assert_eq!(code, 201, "{up}");
    let applet = up["appletId"].as_str().unwrap_or_default().to_string();
    let r = run(
        &env,
        &cmd(
            "APP_INSTALL",
            &iccid,
            "000000",
            json!({"parameters": {"appletId": applet, "instanceAid": "F001020304050102"}}),
        ),
    )
    .await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["response"]["porStatus"], "00", "{r}");
    let installed = env
        .fleet
        .with_card(&msisdn, |c| {
            c.registry()
                .applets()
                .iter()
                .any(|a| a.aid.to_string() == "F001020304050102")
        })
        .unwrap_or(false);
    assert!(installed, "the applet is installed on the card");

    // One push opened the link; both commands went over it as one SDU each; both PoRs came
    // back on it.
    let s = catp_stats(&env);
    assert_eq!(s.pushes, 1, "{s:?}");
    assert_eq!(s.links_accepted, 1, "{s:?}");
    assert_eq!(s.packets_sent, 2, "{s:?}");
    assert_eq!(s.pors, 2, "{s:?}");
    let t = env.terminals.as_ref().expect("terminals").stats();
    assert_eq!((t.pushes, t.links, t.sdus, t.pors), (1, 1, 2, 2), "{t:?}");
    let e = env.server.catp.as_ref().expect("catp").endpoint_stats();
    assert_eq!(e.server.bad_checksum + e.server.malformed, 0, "{e:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lossy_reordering_duplicating_link_runs_each_script_exactly_once() {
    let terminals = TerminalSettings {
        impairment: Impairment {
            loss: 0.15,
            duplicate: 0.15,
            reorder: 0.15,
            seed: 11,
        },
        // Small PDUs towards the card: each packet is several PDUs, so the faults hit more.
        link: otagw_catp::Config {
            max_pdu_size: 48,
            ..TerminalSettings::default().link
        },
        ..TerminalSettings::default()
    };
    let env = env_with(terminals, 1).await;
    for card in 0..2 {
        let iccid = env.iccid(card).expect("card");
        let msisdn = env.msisdn(card).expect("card");
        for round in 0..3u8 {
            let spn = format!("01{:02X}{}", b'a' + round, "FF".repeat(15));
            let r = run(
                &env,
                &cmd(
                    "FILE_UPDATE",
                    &iccid,
                    "B00010",
                    json!({"parameters": {"path": "3F00/7FFF/6F46", "data": spn}}),
                ),
            )
            .await;
            assert_eq!(r["status"], "SUCCESS", "card {card} round {round}: {r}");
            assert_eq!(r["attempts"], 1, "{r}");
            let content = env
                .fleet
                .with_card(&msisdn, |c| c.read_file(&[0x3F00, 0x7FFF, 0x6F46]))
                .flatten()
                .map(hex::encode_upper);
            assert_eq!(content.as_deref(), Some(spn.as_str()));
            let r = run(&env, &cmd("RFM", &iccid, "B00010", long_rfm())).await;
            assert_eq!(r["status"], "SUCCESS", "card {card} round {round}: {r}");
            assert_eq!(r["attempts"], 1, "{r}");
        }
        // Each packet reached the card exactly once despite the duplicates.
        assert_eq!(
            env.terminals
                .as_ref()
                .expect("terminals")
                .sdus_received(&msisdn),
            6
        );
    }
    let s = catp_stats(&env);
    assert_eq!(s.pors, 12, "{s:?}");
    // The faults did happen and were repaired by the link, not by resending commands.
    let t = env.terminals.as_ref().expect("terminals").stats();
    assert!(t.duplicates > 0, "{t:?}");
    assert!(t.out_of_order > 0, "{t:?}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_card_fails_with_timeout_after_the_configured_pushes() {
    // The card at index 0 (the devkit generates the fleet with seed 7) takes pushes but never
    // connects.
    let fleet = otagw::sim::Fleet::generate(3, 7, devkit::fleet_defaults()).expect("fleet");
    let silent = fleet.msisdn_at(0).expect("card");
    let terminals = TerminalSettings {
        silent: HashSet::from([silent]),
        ..TerminalSettings::default()
    };
    let env = env_with(terminals, 2).await;
    let iccid = env.iccid(0).expect("card");
    let started = std::time::Instant::now();
    let r = run(&env, &cmd("RFM", &iccid, "B00010", long_rfm())).await;
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["error"]["code"], "TIMEOUT", "{r}");
    // Two sends, each with two pushes and a 2 s wait for the link after each.
    assert_eq!(r["attempts"], 2, "{r}");
    assert_eq!(catp_stats(&env).pushes, 4);
    assert_eq!(env.terminals.as_ref().expect("terminals").stats().pushes, 4);
    assert!(started.elapsed() >= Duration::from_secs(8));
    // Another card on the same gateway is not held up.
    let other = env.iccid(1).expect("card");
    let r = run(&env, &cmd("RFM", &other, "B00010", long_rfm())).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    env.shutdown().await;
}

/// The push asks for a PoR on error (SPI octet 2 b2b1 = 10). A card that refuses it (here: the
/// push goes to a TAR the card does not know, PoR status 09) says so by SMS, and the command
/// fails at once naming the card's status, after one push, instead of waiting out every push
/// and send to end TIMEOUT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_push_fails_the_command_naming_the_cards_status() {
    let catp = CatpConfig {
        push_tar: "B20100".into(),
        ..catp_config()
    };
    let env = env_with_config(TerminalSettings::default(), 2, catp).await;
    let iccid = env.iccid(0).expect("card");
    let started = std::time::Instant::now();
    let r = run(&env, &cmd("RFM", &iccid, "B00010", long_rfm())).await;
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["error"]["code"], "TRANSPORT_ERROR", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("refused the CAT_TP push: PoR status 09"),
        "{r}"
    );
    assert_eq!(r["attempts"], 1, "{r}");
    assert_eq!(catp_stats(&env).pushes, 1);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "not the 2 x 2 pushes of 2 s: {:?}",
        started.elapsed()
    );
    env.shutdown().await;
}

fn events(r: &Value) -> Vec<(String, String)> {
    r["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|x| {
                    (
                        x["kind"].as_str().unwrap_or_default().to_string(),
                        x["detail"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_card_gets_the_command_over_sms_when_the_fallback_is_on() {
    let fleet = otagw::sim::Fleet::generate(3, 7, devkit::fleet_defaults()).expect("fleet");
    let silent = fleet.msisdn_at(0).expect("card");
    let terminals = TerminalSettings {
        silent: HashSet::from([silent.clone()]),
        ..TerminalSettings::default()
    };
    let config = CatpConfig {
        fallback_to_sms: true,
        ..catp_config()
    };
    let env = env_with_config(terminals, 2, config).await;
    let iccid = env.iccid(0).expect("card");
    let r = run(&env, &cmd("RFM", &iccid, "B00010", long_rfm())).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["transport"], "sms", "{r}");
    assert_eq!(r["response"]["porStatus"], "00", "{r}");
    // Two CAT_TP sends with two pushes each, then the SMS send.
    assert_eq!(catp_stats(&env).pushes, 4);
    assert_eq!(catp_stats(&env).packets_sent, 0);
    assert_eq!(r["attempts"], 3, "{r}");
    let ev = events(&r);
    assert_eq!(
        ev.iter().filter(|(k, _)| k == "FALLBACK").count(),
        1,
        "{ev:?}"
    );
    // Secured twice: for CAT_TP, then anew for SMS with a higher counter (never reused; the
    // pushes took counters of their own in between).
    let counters: Vec<u64> = ev
        .iter()
        .filter(|(k, _)| k == "SECURED")
        .filter_map(|(_, d)| d.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(counters.len(), 2, "{ev:?}");
    let sms_counter = r["counter"].as_u64().expect("counter");
    assert_eq!(counters[1], sms_counter);
    assert!(
        counters[1] >= counters[0] + 5,
        "4 pushes between: {counters:?}"
    );
    // The card ran the SMS packet: its counter is that packet's (the pushes, counter not
    // checked, did not move it).
    let on_card = env
        .fleet
        .with_card(&silent, |c| c.key_set(1).map(|k| k.counter().value()))
        .flatten();
    assert_eq!(on_card, Some(sms_counter));
    env.shutdown().await;
}

/// The SPI's PoR coding over CAT_TP (TS 102 225 5.1.1), the twin of `por_modes_over_sms` in
/// tests/api.rs: with no PoR asked the card's CAT_TP acknowledgement of the packet is the
/// delivery report that ends the command; with PoR on error, delivery and a PoR wait without
/// a PoR end it SUCCESS, an error PoR FAILED. Each packet goes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn por_modes_over_catp() {
    let env = devkit::start(DevOptions {
        cards: 1,
        por_timeout: Duration::from_secs(2),
        attempts: 2,
        backoff: Duration::from_millis(200),
        catp: Some(catp_config()),
        terminals: TerminalSettings::default(),
        ..DevOptions::default()
    })
    .await
    .expect("dev environment");
    let iccid = env.iccid(0).expect("card");
    let msisdn = env.msisdn(0).expect("card");
    let card_counter = || {
        env.fleet
            .with_card(&msisdn, |c| c.key_set(1).map(|k| k.counter().value()))
            .flatten()
            .unwrap_or(0)
    };
    let sdus = || {
        env.terminals
            .as_ref()
            .expect("terminals")
            .sdus_received(&msisdn)
    };
    for (spi, tar, status, por_name) in [
        ("1600", "B00010", "SUCCESS", "no PoR requested"),
        ("163A", "B00010", "SUCCESS", "no error PoR"),
        ("160A", "B00010", "SUCCESS", "no error PoR"),
        ("163A", "B00099", "FAILED", "tar_unknown"),
    ] {
        let (sent, got) = (catp_stats(&env).packets_sent, sdus());
        let mut body = cmd("RFM", &iccid, tar, json!({"apdus": ["00A40004023F00"]}));
        body["security"]["spi"] = json!(spi);
        let r = run(&env, &body).await;
        assert_eq!(r["status"], status, "SPI {spi}: {r}");
        assert_eq!(r["transport"], "catp", "SPI {spi}: {r}");
        assert_eq!(r["attempts"], 1, "SPI {spi}: sent once: {r}");
        assert_eq!(catp_stats(&env).packets_sent - sent, 1, "SPI {spi}");
        assert_eq!(sdus() - got, 1, "SPI {spi}: the card got it once");
        assert_eq!(r["response"]["porStatusName"], por_name, "SPI {spi}: {r}");
        let kinds: Vec<String> = events(&r).into_iter().map(|(k, _)| k).collect();
        if status == "SUCCESS" {
            // The card's acknowledgement (DELIVERED) comes before the end, never after it.
            let d = kinds.iter().position(|k| k == "DELIVERED");
            let s = kinds.iter().position(|k| k == "SUCCESS");
            assert!(d.is_some() && d < s, "SPI {spi}: {kinds:?}");
            assert_eq!(Some(card_counter()), r["counter"].as_u64(), "{r}");
        } else {
            assert_eq!(r["response"]["porStatus"], "09", "{r}");
        }
    }
    // One push opened the link that carried all four.
    assert_eq!(catp_stats(&env).pushes, 1);
    env.shutdown().await;
}

/// The SCP80 bytes over CAT_TP, without sockets: CPI 01 and a BER CPL, the RC/CC over them
/// (so the same packet in SMS framing does not verify), and the PoR with RPI 02.
#[test]
fn scp80_framed_for_cattp_round_trip() {
    let kic = [0x11u8; 16];
    let kid = [0x22u8; 16];
    let spi = Spi::from_bytes([0x16, 0x39]);
    let cfg = KeyConfig {
        kic_key: Some(&kic),
        kid_key: Some(&kid),
        kic_algorithm: Some(CipherAlgorithm::AesCbc),
        kid_algorithm: Some(IntegrityAlgorithm::AesCmac),
        cc_len: None,
    };
    let keys = Scp80Keys::resolve(&spi, 0x12, 0x12, &cfg).expect("keys");
    let header = CommandHeader {
        spi,
        kic: KeyIdentifier(0x12),
        kid: KeyIdentifier(0x12),
        tar: [0xB0, 0x00, 0x10],
        counter: Counter::new(5).expect("counter"),
    };
    let data = vec![0x00u8; 300];
    let wire =
        encode_command_packet_framed(&header, &keys, &data, PacketFraming::CatTp).expect("encode");
    // CPI, then CPL in three octets (82 hi lo), then CHL 0x15 (13 + 8-octet CC).
    assert_eq!(wire[0], 0x01);
    assert_eq!(wire[1], 0x82);
    let cpl = usize::from(u16::from_be_bytes([wire[2], wire[3]]));
    assert_eq!(cpl, wire.len() - 4);
    assert_eq!(wire[4], 0x15);
    assert_eq!(&wire[5..7], &[0x16, 0x39]);

    let two = cattp_command_to_two_octet_form(&wire).expect("reframe");
    let opened = CommandPacketView::parse_framed(&two, PacketFraming::CatTp)
        .expect("parse")
        .open(&keys)
        .expect("verifies over the CAT_TP framing");
    assert_eq!(opened.data, data);
    let sms_view = CommandPacketView::parse(&two).expect("parse");
    assert!(
        matches!(
            sms_view.open(&keys),
            Err(SecurityError::IntegrityMismatch { .. })
        ),
        "the CC covers the CAT_TP framing"
    );

    let por = encode_response_packet(
        &ResponseHeader {
            tar: header.tar,
            counter: header.counter,
            status: PorStatus::Ok,
        },
        &spi,
        &keys,
        &[0x01, 0x90, 0x00],
        CcScope::CatTp,
    )
    .expect("PoR");
    let sdu = otagw_catp::framing::to_cattp(otagw_catp::framing::RPI, &por).expect("frame");
    assert_eq!(sdu[0], 0x02);
    let back = ResponsePacketView::cattp_to_two_octet_form(&sdu).expect("reframe");
    assert_eq!(back, por);
    let view = ResponsePacketView::parse(&back).expect("parse");
    let decoded = view.open(&spi, &keys, CcScope::CatTp).expect("verifies");
    assert_eq!(decoded.status, PorStatus::Ok);
    assert_eq!(decoded.data, vec![0x01, 0x90, 0x00]);
    assert!(view.open(&spi, &keys, CcScope::FromRpl).is_err());
}

/// Public vectors of the opentelecoms gsm0348 Java library (github.com/opentelecoms-org/gsm0348,
/// `gsm0348-impl/src/test/java/Gsm0348Test.java` at commit
/// 738c6f08cf350f22f9d8ff8e854c1eeb43451c7d): `should_build_command_packet_aes_cat_tp` (CAT_TP
/// framing) and `should_build_command_packet_aes` (the same inputs framed for SMS-PP), both
/// AES-128 CBC + AES-CMAC-64, SPI 06 21, KIc/KID 12, TAR 010203, counter 0, data AA BB; and
/// `should_recover_response_packet_cat_tp`, a PoR with RPI 02 and no RC/CC. Ours encode and
/// decode them byte for byte.
#[test]
fn gsm0348_library_vectors_for_scp80_over_cattp() {
    let key = hex::decode("11223344556677889910111213141516").unwrap();
    let spi = Spi::from_bytes([0x06, 0x21]);
    let cfg = KeyConfig {
        kic_key: Some(&key),
        kid_key: Some(&key),
        kic_algorithm: Some(CipherAlgorithm::AesCbc),
        kid_algorithm: Some(IntegrityAlgorithm::AesCmac),
        cc_len: Some(8),
    };
    let keys = Scp80Keys::resolve(&spi, 0x12, 0x12, &cfg).expect("keys");
    let header = CommandHeader {
        spi,
        kic: KeyIdentifier(0x12),
        kid: KeyIdentifier(0x12),
        tar: [0x01, 0x02, 0x03],
        counter: Counter::new(0).expect("counter"),
    };
    // CPI CPL CHL SPI KIc KID TAR, then the ciphered CNTR PCNTR CC data.
    let cattp = hex::decode(concat!(
        "01181506211212010203",
        "E66898201308DA27D2A8F23145A6F7C3"
    ))
    .unwrap();
    let sms = hex::decode(concat!(
        "00181506211212010203",
        "4814CE84CBDEBC1A0DF20A5EE20E74C6"
    ))
    .unwrap();
    let data = [0xAA, 0xBB];
    assert_eq!(
        encode_command_packet_framed(&header, &keys, &data, PacketFraming::CatTp).expect("encode"),
        cattp
    );
    assert_eq!(
        encode_command_packet_framed(&header, &keys, &data, PacketFraming::Sms).expect("encode"),
        sms
    );
    // The card's side: CPI 01, CPL 18 (BER), the CC over them.
    let two = cattp_command_to_two_octet_form(&cattp).expect("reframe");
    assert_eq!(&two[..2], &[0x00, 0x18]);
    let opened = CommandPacketView::parse_framed(&two, PacketFraming::CatTp)
        .expect("parse")
        .open(&keys)
        .expect("verifies");
    assert_eq!(opened.data, data);
    assert_eq!((opened.header.counter.value(), opened.pcntr), (0, 0));
    // Read as SMS-framed, the CAT_TP packet's CC does not verify (it covers CPI and BER CPL).
    assert!(CommandPacketView::parse(&two)
        .expect("parse")
        .open(&keys)
        .is_err());

    // The PoR: RPI 02, RPL 0E, RHL 0A (no RC/CC), TAR B00001, counter 0, PCNTR 0, status 00
    // (PoR OK), data 02 61 01; the library's profile there: SPI 06 01, DES keys of zeros.
    let por = hex::decode("020e0ab0000100000000000000026101").unwrap();
    let zeros = [0u8; 8];
    let por_spi = Spi::from_bytes([0x06, 0x01]);
    let des = KeyConfig {
        kic_key: Some(&zeros),
        kid_key: Some(&zeros),
        ..KeyConfig::default()
    };
    let des_keys = Scp80Keys::resolve(&por_spi, 0x11, 0x11, &des).expect("keys");
    let back = ResponsePacketView::cattp_to_two_octet_form(&por).expect("reframe");
    assert_eq!(&back[..2], &[0x00, 0x0E]);
    let decoded = ResponsePacketView::parse(&back)
        .expect("parse")
        .open(&por_spi, &des_keys, CcScope::CatTp)
        .expect("opens");
    assert_eq!(decoded.tar, [0xB0, 0x00, 0x01]);
    assert_eq!(decoded.counter.value(), 0);
    assert_eq!(decoded.status, PorStatus::Ok);
    assert_eq!(decoded.data, vec![0x02, 0x61, 0x01]);
    assert_eq!(
        otagw_catp::framing::to_cattp(otagw_catp::framing::RPI, &back).expect("frame"),
        por
    );
}

/// A UDP relay between the cards and the gateway that records every datagram (as if captured
/// on the wire between them).
struct Relay {
    addr: std::net::SocketAddr,
    gateway: std::sync::Arc<std::sync::Mutex<Option<std::net::SocketAddr>>>,
    log: std::sync::Arc<std::sync::Mutex<Vec<otagw_catp::pcap::Captured>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start() -> Relay {
        use std::collections::HashMap;
        use std::sync::{Arc, Mutex};
        use tokio::net::UdpSocket;
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let addr = socket.local_addr().expect("addr");
        let gateway: Arc<Mutex<Option<std::net::SocketAddr>>> = Arc::default();
        let log: Arc<Mutex<Vec<otagw_catp::pcap::Captured>>> = Arc::default();
        let (g, l) = (gateway.clone(), log.clone());
        let task = tokio::spawn(async move {
            let mut upstream: HashMap<std::net::SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, card)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Some(gw) = *g.lock().expect("lock") else {
                    continue;
                };
                let up = match upstream.get(&card) {
                    Some(u) => u.clone(),
                    None => {
                        let u = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
                        u.connect(gw).await.expect("connect");
                        upstream.insert(card, u.clone());
                        let (down, l, u2) = (socket.clone(), l.clone(), u.clone());
                        tokio::spawn(async move {
                            let mut b = vec![0u8; 65536];
                            while let Ok(n) = u2.recv(&mut b).await {
                                l.lock().expect("lock").push(otagw_catp::pcap::Captured {
                                    from: gw,
                                    to: card,
                                    payload: b[..n].to_vec(),
                                });
                                let _ = down.send_to(&b[..n], card).await;
                            }
                        });
                        u
                    }
                };
                l.lock().expect("lock").push(otagw_catp::pcap::Captured {
                    from: card,
                    to: gw,
                    payload: buf[..n].to_vec(),
                });
                let _ = up.send(&buf[..n]).await;
            }
        });
        Relay {
            addr,
            gateway,
            log,
            task,
        }
    }
}

/// tshark's CAT_TP dissector reads a captured exchange of the gateway with a card (push, link,
/// RFM and RAM packets, PoRs; reordered and duplicated datagrams for EAKs) and finds every
/// checksum good and every field as our decoder has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tshark_reads_a_captured_exchange_as_we_meant() {
    use otagw_catp::pdu::{Flags, Pdu};
    let relay = Relay::start().await;
    let env = devkit::start(DevOptions {
        cards: 1,
        por_timeout: Duration::from_secs(15),
        attempts: 1,
        catp: Some(CatpConfig {
            advertised: Some(relay.addr),
            max_pdu_size: 300,
            ..catp_config()
        }),
        terminals: TerminalSettings {
            impairment: Impairment {
                loss: 0.0,
                duplicate: 0.1,
                reorder: 0.3,
                seed: 5,
            },
            // Segmentation towards the card.
            link: otagw_catp::Config {
                max_pdu_size: 60,
                ..TerminalSettings::default().link
            },
            ..TerminalSettings::default()
        },
        ..DevOptions::default()
    })
    .await
    .expect("dev environment");
    *relay.gateway.lock().expect("lock") =
        Some(env.server.catp.as_ref().expect("catp").local_addr());
    let iccid = env.iccid(0).expect("card");
    let r = run(&env, &cmd("RFM", &iccid, "B00010", long_rfm())).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let r = run(
        &env,
        &cmd(
            "RAM",
            &iccid,
            "000000",
            json!({"apdus": ["80F28002024F00", "80F28002024F00", "80F28002024F00"]}),
        ),
    )
    .await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let packets = relay.log.lock().expect("lock").clone();
    relay.task.abort();
    env.shutdown().await;

    let decoded: Vec<Pdu> = packets
        .iter()
        .map(|p| Pdu::decode(&p.payload).expect("every captured PDU decodes"))
        .collect();
    let gateway = env_gateway_port(&packets, relay.addr);
    // The exchange has what we want tshark to check.
    assert!(decoded.iter().any(|p| p.flags.contains(Flags::SYN)));
    assert!(decoded.iter().any(|p| p.flags.contains(Flags::SEG)));
    assert!(decoded.iter().any(|p| p.flags.contains(Flags::EAK)));
    // Command packets (CPI 01) from the gateway, PoRs (RPI 02) from the card, as SDUs: the
    // first data PDU of each SDU starts with the identifier.
    assert!(packets
        .iter()
        .zip(&decoded)
        .any(|(c, p)| c.from.port() == gateway && p.data.first() == Some(&0x01)));
    assert!(packets
        .iter()
        .zip(&decoded)
        .any(|(c, p)| c.to.port() == gateway && p.data.first() == Some(&0x02)));

    let dir = devkit::temp_dir("otagw-catp-capture").expect("dir");
    let file = dir.join("exchange.pcap");
    std::fs::write(&file, otagw_catp::pcap::write(&packets)).expect("write");
    let fields = [
        "cattp.flags.syn",
        "cattp.flags.ack",
        "cattp.flags.eak",
        "cattp.flags.rst",
        "cattp.flags.nul",
        "cattp.flags.seg",
        "cattp.hlen",
        "cattp.srcport",
        "cattp.dstport",
        "cattp.datalen",
        "cattp.seq",
        "cattp.ack",
        "cattp.windowsize",
        "cattp.checksum.status",
        "cattp.iccid",
    ];
    let mut command = std::process::Command::new("tshark");
    command
        .arg("-r")
        .arg(&file)
        .args(["--enable-heuristic", "cattp_udp", "-T", "fields"])
        .args(["-E", "separator=|", "-E", "occurrence=f"]);
    for f in fields {
        command.args(["-e", f]);
    }
    let out = command
        .output()
        .expect("tshark runs (installed by .ci/run)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), packets.len(), "one line per datagram");
    let iccid_shown: String = otagw_catp::pdu::iccid_to_identification(&iccid)
        .expect("iccid")
        .iter()
        .map(|b| format!("{:02X}", b.rotate_left(4)))
        .collect();
    for (i, (line, (c, p))) in lines.iter().zip(packets.iter().zip(&decoded)).enumerate() {
        let flag = |f: Flags| if p.flags.contains(f) { "1" } else { "0" }.to_string();
        let syn_from_card = p.flags.contains(Flags::SYN) && c.to.port() == gateway;
        let want = vec![
            flag(Flags::SYN),
            flag(Flags::ACK),
            flag(Flags::EAK),
            flag(Flags::RST),
            flag(Flags::NUL),
            flag(Flags::SEG),
            c.payload[3].to_string(),
            p.src_port.to_string(),
            p.dst_port.to_string(),
            p.data.len().to_string(),
            p.seq.to_string(),
            p.ack.to_string(),
            p.window.to_string(),
            "1".to_string(),
            if syn_from_card {
                iccid_shown.clone()
            } else {
                String::new()
            },
        ];
        let got: Vec<&str> = line.split('|').collect();
        assert_eq!(got, want, "datagram {} ({:?})", i + 1, p.flags);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway's UDP port in a capture made by the relay (the side that is not the relay's
/// cards: the destination of the first datagram).
fn env_gateway_port(packets: &[otagw_catp::pcap::Captured], relay: std::net::SocketAddr) -> u16 {
    let first = packets.first().expect("something was captured");
    assert_ne!(first.to, relay);
    first.to.port()
}

/// A card whose profile's default transport is `catp` gets commands that name no transport
/// over CAT_TP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_default_sends_over_catp_with_the_profiles_push() {
    let env = devkit::start(DevOptions {
        cards: 2,
        provision: true,
        catp: Some(catp_config()),
        // The profile's own push parameters, over the [catp] settings.
        profile_catp: Some(json!({"bearerType": 2, "bearerParameters": "000003000002",
                                  "bufferSize": 777, "apn": "fleet.example"})),
        ..DevOptions::default()
    })
    .await
    .expect("dev environment");
    let iccid = env.iccid(1).expect("card");
    let mut body = cmd("RFM", &iccid, "B00010", long_rfm());
    body.as_object_mut().map(|o| o.remove("transport"));
    let r = run(&env, &body).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["transport"], "catp", "{r}");
    let s = catp_stats(&env);
    assert_eq!((s.pushes, s.packets_sent, s.pors), (1, 1, 1), "{s:?}");
    // The card read the profile's values in the PUSH it accepted; the link still goes to the
    // gateway's own address and port.
    let msisdn = env.msisdn(1).expect("card");
    let push = env
        .terminals
        .as_ref()
        .expect("terminals")
        .last_push(&msisdn)
        .expect("a push");
    assert_eq!(push.bip.bearer.bearer_type, 2);
    assert_eq!(push.bip.bearer.parameters, vec![0, 0, 3, 0, 0, 2]);
    assert_eq!(push.bip.buffer_size, 777);
    assert_eq!(
        push.bip.network_access_name.as_deref(),
        Some(&b"\x05fleet\x07example"[..])
    );
    let gateway = env
        .server
        .catp
        .as_ref()
        .expect("catp")
        .push_request()
        .clone();
    assert_eq!(push.bip.destination, gateway.bip.destination);
    assert_eq!(push.link.destination_port, gateway.link.destination_port);
    assert_eq!(push.link.max_sdu_size, gateway.link.max_sdu_size);
    // The SYN identification the card is told to send (the `36` object): its ICCID.
    let iccid = env.iccid(1).expect("card");
    assert_eq!(
        Some(push.link.identification),
        otagw_catp::pdu::iccid_to_identification(&iccid)
    );
    assert_eq!(
        gateway.bip.buffer_size, 1400,
        "the [catp] default is untouched"
    );

    // A profile whose push parameters are wrong is refused at creation, naming the field.
    let (code, answer) = env
        .post(
            "/api/v1/profiles",
            &json!({"name": "bad-push", "appType": "rfm",
                    "defaults": {"transport": "catp", "catp": {"bufferSize": 0}}}),
        )
        .await
        .expect("post");
    assert_eq!(code, 422, "{answer}");
    assert_eq!(answer["field"], "defaults.catp.bufferSize", "{answer}");
    env.shutdown().await;
}
