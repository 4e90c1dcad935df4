//! Throughput of the simulator alone: one transceiver pipelines one-SMS OTA submit_sm (window
//! of outstanding submits), the scripted network answers each with a PoR via MO, and the client
//! counts submit_sm_resp, receipts and MO PoRs.
//!
//! A bounded run checks that every pipelined command is answered; throughput is measured end to
//! end by `otagw sms-load` (README), not by a timed test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use otagw_sms::smsc_sim::{HandsetNetwork, HandsetReply, PorReply, SmscConfig, SmscSimulator};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

struct Net {
    por: Vec<u8>,
    packets: AtomicU64,
}

impl HandsetNetwork for Net {
    fn command_packet(&self, _msisdn: &str, _packet: &[u8]) -> HandsetReply {
        self.packets.fetch_add(1, Ordering::Relaxed);
        HandsetReply::Delivered {
            por: Some(PorReply {
                user_data: self.por.clone(),
                via_submit: true,
            }),
        }
    }

    fn knows(&self, _msisdn: &str) -> bool {
        true
    }
}

fn pdu(id: u32, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + body.len());
    v.extend_from_slice(&((16 + body.len()) as u32).to_be_bytes());
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn submit_body(msisdn: &str, registered_delivery: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.push(0); // service_type
    b.extend_from_slice(&[5, 0]);
    b.extend_from_slice(b"OTAGW\0");
    b.extend_from_slice(&[1, 1]);
    b.extend_from_slice(msisdn.as_bytes());
    b.push(0);
    b.extend_from_slice(&[0x40, 0x7F, 0, 0, 0, registered_delivery, 0, 0xF6, 0]);
    let mut ud = vec![0x02, 0x70, 0x00];
    ud.extend((0..60u8).map(|i| i.wrapping_mul(31)));
    b.push(ud.len() as u8);
    b.extend_from_slice(&ud);
    b
}

/// Runs `count` commands with `window` outstanding submits; returns (elapsed, messages seen).
async fn run(count: u32, window: usize) -> (Duration, u64) {
    let net = Arc::new(Net {
        por: vec![
            0x02, 0x71, 0x00, 0x00, 0x0E, 0x0A, 0xB0, 0x00, 0x10, 0, 0, 0, 0, 1, 0, 0, 1, 0x90, 0,
        ],
        packets: AtomicU64::new(0),
    });
    let mut config = SmscConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    config.enquire_link_interval = None;
    let sim = SmscSimulator::start(config, net.clone()).await.unwrap();

    let stream = TcpStream::connect(sim.local_addr()).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(&pdu(0x0000_0009, 1, b"esme1\0pw\0\0\x34\0\0\0"))
        .await
        .unwrap();

    let slots = Arc::new(Semaphore::new(window));
    let t0 = Instant::now();
    let reader_slots = slots.clone();
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(1 << 16);
        let (mut resps, mut delivers) = (0u32, 0u32);
        while resps < count || delivers < 2 * count {
            if rd.read_buf(&mut buf).await.unwrap() == 0 {
                panic!("closed");
            }
            while buf.len() >= 16 {
                let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                if buf.len() < len {
                    break;
                }
                let f = buf.split_to(len);
                let id = u32::from_be_bytes(f[4..8].try_into().unwrap());
                let status = u32::from_be_bytes(f[8..12].try_into().unwrap());
                let seq = u32::from_be_bytes(f[12..16].try_into().unwrap());
                match id {
                    0x8000_0004 => {
                        assert_eq!(status, 0);
                        resps += 1;
                        reader_slots.add_permits(1);
                    }
                    0x0000_0005 => {
                        delivers += 1;
                        let _ = ack_tx.send(seq);
                    }
                    _ => {}
                }
            }
        }
    });

    let submit = submit_body("491700000001", 1);
    let mut out = Vec::with_capacity(1 << 16);
    let mut seq = 2u32;
    let mut sent = 0u32;
    while sent < count {
        slots.acquire().await.unwrap().forget();
        out.extend_from_slice(&pdu(0x0000_0004, seq, &submit));
        seq += 1;
        sent += 1;
        // Batch what the window allows, and the deliver_sm_resp owed.
        while sent < count && out.len() < 60_000 {
            match slots.try_acquire() {
                Ok(p) => {
                    p.forget();
                    out.extend_from_slice(&pdu(0x0000_0004, seq, &submit));
                    seq += 1;
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        while let Ok(s) = ack_rx.try_recv() {
            out.extend_from_slice(&pdu(0x8000_0005, s, &[0]));
        }
        wr.write_all(&out).await.unwrap();
        out.clear();
    }
    tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("all answers in time")
        .unwrap();
    let elapsed = t0.elapsed();
    let seen = net.packets.load(Ordering::Relaxed);
    sim.shutdown().await;
    (elapsed, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_all_answered() {
    let (_, seen) = run(2_000, 100).await;
    assert_eq!(seen, 2_000);
}
