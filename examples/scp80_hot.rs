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
use otagw::security::*;

#[path = "../benches/fixtures/scp80_case.rs"]
mod case;
use case::{cases, header, por, resolve, rfm_apdus, Case};

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
    // The AES-128 case of the benchmark.
    let [case, _] = cases();
    let keys = resolve(&case);
    let header = header(&case);
    let por = por(&case, &header, &keys);
    let data = rfm_apdus();
    let packet = encode_command_packet(&header, &keys, &data).expect("packet");
    println!("{}: {}", case.name, hex::encode(&packet));
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
