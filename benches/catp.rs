//! CAT_TP on loopback, through the real stack minus the SMSC: the CAT_TP transport, a virtual
//! card behind its terminal (UDP client link, optional datagram loss on the card's side), the
//! dispatcher waiting for the PoR.
//!
//! * `ram_load_32k/loss_0` and `loss_5`: one secured RAM script (INSTALL [for load], the LOAD
//!   blocks of a 32 KiB load file, DELETE) as one SCP80 packet (AES-128 CBC + CMAC) over the
//!   card's open link; the card runs it and its PoR comes back. Throughput is the load file's
//!   32 KiB per round trip. 5% loss is on every datagram either way on the card's side.
//! * `links`: 200 cards open links to one endpoint at once; time until the endpoint has seen
//!   every handshake complete (links per second as the throughput).
//!
//! Run: `cargo bench --bench catp` (release build; the figures are in transports/catp/README.md).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use otagw::correlation::PendingCommand;
use otagw::dispatch::{OtaDispatcher, OtaOutcome};
use otagw::script::{ram, Aid, CommandScript, ScriptFormat};
use otagw::security::command::{encode_command_packet, encode_command_packet_framed};
use otagw::security::*;
use otagw::sim::catp_client::{CatpTerminals, TerminalSettings};
use otagw::sim::Fleet;
use otagw_catp::push::PushRequest;
use otagw_catp::{CatpSettings, CatpTransport, Impairment, LinkPusher};
use otagw_sms::smsc_sim::HandsetNetwork;
use otagw_transport::{
    BoxFuture, Destination, MessageId, OutboundMessage, Payload, SendOptions, TransportError,
};

const LOAD_FILE: usize = 32 * 1024;

struct Card {
    msisdn: String,
    iccid: String,
    kic: Vec<u8>,
    kid: Vec<u8>,
}

fn keys(card: &Card, spi: &Spi) -> Scp80Keys {
    let cfg = KeyConfig {
        kic_key: Some(&card.kic),
        kid_key: Some(&card.kid),
        kic_algorithm: Some(CipherAlgorithm::AesCbc),
        kid_algorithm: Some(IntegrityAlgorithm::AesCmac),
        cc_len: None,
    };
    Scp80Keys::resolve(spi, 0x12, 0x12, &cfg).expect("keys")
}

/// The push goes straight to the card's handset (no SMSC in the measurement).
struct DirectPush {
    terminals: Arc<CatpTerminals>,
    card: Arc<Card>,
}

impl LinkPusher for DirectPush {
    fn push<'a>(
        &'a self,
        message: &'a OutboundMessage,
        request: &'a PushRequest,
    ) -> BoxFuture<'a, Result<otagw_catp::PushRefusal, TransportError>> {
        Box::pin(async move {
            let Payload::SecuredPacket { counter, .. } = &message.payload else {
                return Err(TransportError::Rejected("not a packet".into()));
            };
            let spi = Spi::from_bytes([0x0E, 0x00]); // CC, ciphered, counter not checked, no PoR
            let header = CommandHeader {
                spi,
                kic: KeyIdentifier(0x12),
                kid: KeyIdentifier(0x12),
                tar: [0, 0, 0],
                counter: Counter::from_bytes(*counter),
            };
            let data = request
                .encode()
                .map_err(|e| TransportError::Rejected(e.to_string()))?;
            let packet = encode_command_packet(&header, &keys(&self.card, &spi), &data)
                .map_err(|e| TransportError::Rejected(e.to_string()))?;
            self.terminals.command_packet(&self.card.msisdn, &packet);
            Ok(otagw_catp::no_refusal())
        })
    }
}

struct Rig {
    dispatcher: OtaDispatcher,
    card: Arc<Card>,
    counter: AtomicU64,
    _transport: Arc<CatpTransport>,
}

fn link_config() -> otagw_catp::Config {
    otagw_catp::Config {
        max_pdu_size: 1400,
        window: 32,
        rto: Duration::from_millis(30),
        max_rto: Duration::from_millis(240),
        max_retries: 20,
        keepalive: None,
        ..otagw_catp::Config::default()
    }
}

async fn rig(loss: f64) -> Rig {
    let defaults = otagw::devkit::fleet_defaults();
    let fleet = Arc::new(Fleet::generate(1, 7, defaults).expect("fleet"));
    let msisdn = fleet.msisdn_at(0).expect("card");
    let card = fleet
        .with_card(&msisdn, |c| Card {
            msisdn: c.msisdn(),
            iccid: c.iccid(),
            kic: c.key_sets()[0].kic().to_vec(),
            kid: c.key_sets()[0].kid().to_vec(),
        })
        .expect("card");
    let card = Arc::new(card);
    let terminals = Arc::new(CatpTerminals::new(
        fleet,
        TerminalSettings {
            impairment: Impairment {
                loss,
                seed: 99,
                ..Impairment::none()
            },
            link: link_config(),
            ..TerminalSettings::default()
        },
    ));
    let transport = Arc::new(
        CatpTransport::start(
            CatpSettings {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                link: link_config(),
                link_timeout: Duration::from_secs(5),
                ..CatpSettings::default()
            },
            Arc::new(DirectPush {
                terminals,
                card: card.clone(),
            }),
        )
        .await
        .expect("transport"),
    );
    let t: Arc<dyn otagw_transport::Transport> = transport.clone();
    Rig {
        dispatcher: OtaDispatcher::new(t),
        card,
        counter: AtomicU64::new(1),
        _transport: transport,
    }
}

/// A CAP-shaped load file of exactly 32 KiB (package AID F00102030405; the method component
/// fills it up).
fn load_file() -> Vec<u8> {
    let head = hex::decode(
        "010010DECAFFED010204000106F00102030405020003AABBCC0400010003000B0107F0010203040501002A\
         0600021111",
    )
    .expect("hex");
    let tail = hex::decode("08000133050002444409000155").expect("hex");
    let method = LOAD_FILE - head.len() - 3 - tail.len();
    let mut out = head;
    out.push(0x07);
    out.extend_from_slice(&(method as u16).to_be_bytes());
    out.extend((0..method).map(|i| (i % 251) as u8));
    out.extend(tail);
    assert_eq!(out.len(), LOAD_FILE);
    out
}

/// INSTALL [for load], the LOAD blocks of the 32 KiB load file, DELETE (so that every round
/// loads the same package again): a compact script of about 33.5 KB.
fn ram_script() -> Vec<u8> {
    let aid = Aid::new(&[0xF0, 0x01, 0x02, 0x03, 0x04, 0x05]).expect("aid");
    let mut apdus = vec![ram::install_for_load(&aid, None, &[], &[]).expect("install")];
    apdus.extend(ram::load_blocks(&load_file(), 255).expect("load"));
    apdus.push(ram::delete(&aid, true).expect("delete"));
    CommandScript::from_commands(apdus)
        .encode(ScriptFormat::Compact)
        .expect("script")
}

impl Rig {
    async fn round_trip(&self) -> Duration {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let spi = Spi::from_bytes([0x16, 0x21]);
        let keys = keys(&self.card, &spi);
        let header = CommandHeader {
            spi,
            kic: KeyIdentifier(0x12),
            kid: KeyIdentifier(0x12),
            tar: [0, 0, 0],
            counter: Counter::new(n).expect("counter"),
        };
        let script = ram_script();
        let started = Instant::now();
        let packet = encode_command_packet_framed(&header, &keys, &script, PacketFraming::CatTp)
            .expect("packet");
        let id = MessageId(n);
        let message = OutboundMessage {
            id,
            destination: Destination {
                msisdn: self.card.msisdn.clone(),
                iccid: Some(self.card.iccid.clone()),
            },
            payload: Payload::SecuredPacket {
                packet,
                tar: header.tar,
                counter: header.counter.to_bytes(),
            },
            options: SendOptions::default(),
        };
        let pending = PendingCommand {
            id,
            msisdn: self.card.msisdn.clone(),
            tar: header.tar,
            counter: header.counter,
            spi,
            keys,
        };
        let rx = self.dispatcher.send(message, pending).await.expect("sent");
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(OtaOutcome::Por(por, _))) => {
                assert_eq!(por.status, PorStatus::Ok);
                // Compact response: executed count, then SW 9000 of the DELETE.
                assert_eq!(por.data.get(1..3), Some(&[0x90, 0x00][..]), "{por:?}");
            }
            other => panic!("no PoR: {other:?}"),
        }
        started.elapsed()
    }
}

fn ram_load(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("ram_load_32k");
    group.throughput(Throughput::Bytes(LOAD_FILE as u64));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(15));
    for (name, loss) in [("loss_0", 0.0), ("loss_5", 0.05)] {
        let rig = rt.block_on(rig(loss));
        // The first round trip includes the push and the handshake.
        rt.block_on(rig.round_trip());
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += rig.round_trip().await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

fn links(c: &mut Criterion) {
    const BATCH: usize = 200;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (endpoint, events) = rt
        .block_on(otagw_catp::Endpoint::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            link_config(),
            1_000_000,
        ))
        .expect("endpoint");
    let events = tokio::sync::Mutex::new(events);
    let server = endpoint.local_addr();
    let mut group = c.benchmark_group("links");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);
    group.bench_function("open_200", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut events = events.lock().await;
                for _ in 0..iters {
                    let started = Instant::now();
                    let mut open = Vec::with_capacity(BATCH);
                    for i in 0..BATCH {
                        let mut cfg = link_config();
                        cfg.identification = otagw_catp::pdu::iccid_to_identification(&format!(
                            "894900000000000{i:04}"
                        ))
                        .expect("iccid");
                        open.push(
                            otagw_catp::ClientLink::connect(
                                server,
                                cfg,
                                (0x4000, 4500),
                                Impairment::none(),
                            )
                            .await
                            .expect("connect"),
                        );
                    }
                    let mut connected = 0;
                    while connected < BATCH {
                        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
                            .await
                            .unwrap_or_else(|_| {
                                panic!("only {connected} of {BATCH} links up after 10 s")
                            });
                        if let Some(otagw_catp::LinkEvent::Connected { .. }) = event {
                            connected += 1;
                        }
                    }
                    total += started.elapsed();
                    for l in &open {
                        l.close(0);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    drop(open);
                    while events.try_recv().is_ok() {}
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, ram_load, links);
criterion_main!(benches);
