//! A generated fleet behind the simulator's `HandsetNetwork` contract, hit by many tokio tasks
//! at once.

use std::sync::Arc;
use std::time::Instant;

use otagw::script::rfm::{self, CardClass};
use otagw::script::{parse_compact_response, CommandScript, ScriptFormat};
use otagw::security::command::encode_command_packet;
use otagw::security::{
    CcScope, CommandHeader, Counter, KeyConfig, KeyIdentifier, PorStatus, ResponsePacketView,
    Scp80Keys, Spi,
};
use otagw::sim::{Fleet, FleetDefaults, TAR_RFM_GSM};
use otagw_sms::smsc_sim::{HandsetNetwork, HandsetReply};

const CARDS: usize = 2_000;
const TASKS: usize = 16;
const PER_TASK: usize = 100;

/// The gateway's keys for a card, read from the fleet's own vendor file.
fn vendor_keys(fleet: &Fleet) -> std::collections::HashMap<String, (Vec<u8>, Vec<u8>)> {
    fleet
        .to_vendor_file()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[2].to_string(),
                (hex::decode(f[3]).unwrap(), hex::decode(f[4]).unwrap()),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_many_cards() {
    let fleet = Arc::new(Fleet::generate(CARDS, 1, FleetDefaults::default()).unwrap());
    let keys = Arc::new(vendor_keys(&fleet));
    let spi = Spi::from_bytes([0x16, 0x39]);
    let script = CommandScript::from_commands(rfm::select_path(CardClass::Gsm, &[0x7F20, 0x6F07]))
        .encode(ScriptFormat::Compact)
        .unwrap();
    let start = Instant::now();
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let fleet = Arc::clone(&fleet);
        let keys = Arc::clone(&keys);
        let script = script.clone();
        handles.push(tokio::spawn(async move {
            let mut ok = 0;
            for n in 0..PER_TASK {
                // Each task owns the cards t, t + TASKS, ...; each card sees rising counters.
                let index = (t + n * TASKS) % CARDS;
                let msisdn = fleet.msisdn_at(index).unwrap();
                let (kic, kid) = &keys[&msisdn];
                let cfg = KeyConfig {
                    kic_key: Some(kic),
                    kid_key: Some(kid),
                    ..KeyConfig::default()
                };
                let k = Scp80Keys::resolve(&spi, 0x12, 0x12, &cfg).unwrap();
                let header = CommandHeader {
                    spi,
                    kic: KeyIdentifier(0x12),
                    kid: KeyIdentifier(0x12),
                    tar: TAR_RFM_GSM,
                    counter: Counter::new(1 + (n * TASKS / CARDS) as u64).unwrap(),
                };
                let packet = encode_command_packet(&header, &k, &script).unwrap();
                let HandsetReply::Delivered { por: Some(por) } =
                    fleet.command_packet(&msisdn, &packet)
                else {
                    panic!("no PoR from {msisdn}");
                };
                let d = ResponsePacketView::parse_sms(&por.user_data)
                    .unwrap()
                    .open(&spi, &k, CcScope::SmsUdh)
                    .unwrap();
                assert_eq!(d.status, PorStatus::Ok);
                let r = parse_compact_response(&d.data).unwrap();
                assert_eq!(r.last().unwrap().sw, 0x9F0F);
                ok += 1;
                if n % 16 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ok
        }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    let elapsed = start.elapsed();
    println!(
        "{total} command packets through {CARDS} cards from {TASKS} tasks in {elapsed:?} \
         ({:.0}/s, gateway encode and PoR verify included)",
        total as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(total, TASKS * PER_TASK);
    assert!(fleet.knows("491500000000"));
    assert!(fleet.knows("+491500001999"));
    assert!(!fleet.knows("491500002000"));
    assert_eq!(
        fleet.command_packet("491500002000", &[]),
        HandsetReply::UnknownSubscriber
    );
}
