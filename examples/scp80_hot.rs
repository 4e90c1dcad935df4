//! The AES-128 packet path of `benches/scp80.rs` (fresh key schedules, build the command
//! packet, verify the PoR) in a plain loop, for instruction counts that repeat from run to run:
//!
//! ```text
//! cargo build --profile bench --example scp80_hot
//! valgrind --tool=callgrind target/release/examples/scp80_hot 20000
//! ```
//! then `one_packet`'s inclusive count (`callgrind_annotate --inclusive=yes`) divided by the
//! packet count. Run plainly, it prints the fastest of 50 batches for the serial AES floor
//! (one dependent block, one key schedule), the parts and the whole packet.

use std::hint::black_box;

use otagw::security::command::encode_command_packet;
use otagw::security::response::encode_response_packet;
use otagw::security::*;

fn rfm_apdus() -> Vec<u8> {
    let mut d = hex::decode(concat!(
        "a0a40000023f00",
        "a0a40000027f20",
        "a0a40000026f46",
        "a0d6000011016f746167772064656d6f20202020ffff",
    ))
    .expect("hex");
    d.extend_from_slice(&[0xA0, 0xDC, 0x01, 0x04]);
    let filler = 96 - d.len() - 1;
    d.push(filler as u8);
    d.resize(96, 0x55);
    d
}

struct Case {
    spi: Spi,
    kic: u8,
    kid: u8,
    kic_key: Vec<u8>,
    kid_key: Vec<u8>,
}

fn resolve(c: &Case) -> Scp80Keys {
    let cfg = KeyConfig {
        kic_key: Some(&c.kic_key),
        kid_key: Some(&c.kid_key),
        ..Default::default()
    };
    Scp80Keys::resolve(&c.spi, c.kic, c.kid, &cfg).expect("keys")
}

#[inline(never)]
fn one_packet(case: &Case, header: &CommandHeader, data: &[u8], por: &[u8]) {
    let keys = resolve(black_box(case));
    let p = encode_command_packet(black_box(header), &keys, black_box(data)).expect("packet");
    let r = ResponsePacketView::parse(black_box(por))
        .and_then(|v| v.open(&case.spi, &keys, CcScope::SmsUdh))
        .expect("por");
    black_box((p, r));
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let case = Case {
        spi: Spi::from_bytes([0x16, 0x39]),
        kic: 0x12,
        kid: 0x12,
        kic_key: (0u8..16).collect(),
        kid_key: (16u8..32).collect(),
    };
    let keys = resolve(&case);
    let header = CommandHeader {
        spi: case.spi,
        kic: KeyIdentifier(case.kic),
        kid: KeyIdentifier(case.kid),
        tar: [0xB0, 0x00, 0x10],
        counter: Counter::new(0x42).expect("counter"),
    };
    let por = encode_response_packet(
        &ResponseHeader {
            tar: header.tar,
            counter: header.counter,
            status: PorStatus::Ok,
        },
        &case.spi,
        &keys,
        &[0x01, 0x90, 0x00],
        CcScope::SmsUdh,
    )
    .expect("por");
    let data = rfm_apdus();
    let packet = encode_command_packet(&header, &keys, &data).expect("packet");
    println!("{}", hex::encode(&packet));
    // The parts, each the fastest of 50 batches.
    let part = |name: &str, f: &dyn Fn()| {
        let mut best = f64::MAX;
        for _ in 0..50 {
            let t = std::time::Instant::now();
            for _ in 0..n / 50 {
                f();
            }
            best = best.min(t.elapsed().as_nanos() as f64 / (n / 50) as f64);
        }
        println!("  {name}: {best:.0} ns");
    };
    {
        use aes::cipher::{BlockEncrypt, KeyInit};
        let k = aes::Aes128::new(&[7u8; 16].into());
        part("one dependent AES block (x1000)", &|| {
            let mut b = aes::Block::from([1u8; 16]);
            for _ in 0..1000 {
                k.encrypt_block(&mut b);
            }
            black_box(b);
        });
        part("AES-128 key schedule (x100, independent)", &|| {
            for i in 0..100u8 {
                black_box(aes::Aes128Enc::new(&[i; 16].into()));
            }
        });
    }
    part("resolve", &|| {
        black_box(resolve(black_box(&case)));
    });
    part("build", &|| {
        black_box(encode_command_packet(black_box(&header), &keys, black_box(&data)).ok());
    });
    part("verify", &|| {
        black_box(
            ResponsePacketView::parse(black_box(&por))
                .and_then(|v| v.open(&case.spi, &keys, CcScope::SmsUdh))
                .ok(),
        );
    });
    // The fastest of 50 batches: the machine is shared, and the minimum is what the code costs.
    let mut best = f64::MAX;
    for _ in 0..50 {
        let t = std::time::Instant::now();
        for _ in 0..n / 50 {
            one_packet(&case, &header, &data, &por);
        }
        best = best.min(t.elapsed().as_nanos() as f64 / (n / 50) as f64);
    }
    println!("{n} packets, fastest batch {best:.0} ns each");
}
