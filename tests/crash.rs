//! Crash test: `otagw serve` is killed (SIGKILL) in the middle of a stream of commands and
//! started again. Every command must end exactly once, and no card may see a counter twice
//! (the SMSC simulator, a separate process, journals what each virtual card ran). A webhook
//! receiver, slow to answer, has deliveries pending at the kill: every command's
//! `command.completed` still arrives, once per delivery id, after its `command.por`.

mod process_support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use process_support::{free_port, otagw, output, wait_healthy, Killed};
use serde_json::{json, Value};

const CARDS: usize = 12;
const SEED: u64 = 5;
const COMMANDS: usize = 240;

/// One webhook request: (X-Otagw-Delivery, event, commandId).
type Hit = (String, String, String);

/// A webhook receiver answering 200, every other request after 300 ms (so deliveries are in
/// progress when the gateway dies).
async fn receiver() -> (String, Arc<Mutex<Vec<Hit>>>) {
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let log = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let log = log.clone();
                async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let delivery = headers
                        .get("X-Otagw-Delivery")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let n = {
                        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                        log.push((
                            delivery,
                            v["event"].as_str().unwrap_or("").to_string(),
                            v["data"]["commandId"].as_str().unwrap_or("").to_string(),
                        ));
                        log.len()
                    };
                    if n % 2 == 0 {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), hits)
}

fn journal(path: &PathBuf) -> Vec<(String, String, u64)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.to_string(),
                f.get(4)?.parse().ok()?,
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_every_command_ends_once_and_no_counter_repeats() {
    let dir = otagw::devkit::temp_dir("otagw-crash").expect("dir");
    let smpp_port = free_port();
    let api_port = free_port();
    let journal_path = dir.join("journal.txt");
    let _smsc = Killed(
        otagw(
            &dir,
            &[
                "smsc-sim",
                "--listen",
                &format!("127.0.0.1:{smpp_port}"),
                "--cards",
                &CARDS.to_string(),
                "--seed",
                &SEED.to_string(),
                "--algorithm",
                "aes",
                "--journal",
                journal_path.to_str().unwrap_or_default(),
                // Half the messages reach the card 0.1-1 s late, some are lost or throttled:
                // the kill finds commands in every state, and lost ones are resent.
                "--delay-share",
                "0.5",
                "--drop-share",
                "0.03",
                "--throttle-share",
                "0.03",
            ],
            &[],
        )
        .spawn()
        .expect("smsc-sim"),
    );
    let envs = vec![
        ("OTAGW_API_LISTEN", format!("127.0.0.1:{api_port}")),
        ("OTAGW_SMPP_ADDRESS", format!("127.0.0.1:{smpp_port}")),
        ("OTAGW_GATEWAY_ID", "crash-test".to_string()),
        ("OTAGW_POR_TIMEOUT_SECS", "3".to_string()),
        ("OTAGW_RETRY_ATTEMPTS", "4".to_string()),
    ];
    output(otagw(
        &dir,
        &["account", "create", "--name", "crash"],
        &envs,
    ));
    let token = output(otagw(
        &dir,
        &["token", "create", "--account", "crash"],
        &envs,
    ));
    assert!(token.starts_with("otagw_"), "{token}");
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    let mut serve = Killed(otagw(&dir, &["serve"], &envs).spawn().expect("serve"));
    wait_healthy(&client, &base).await;

    // The same fleet the simulator generated (same seed), added over REST.
    let fleet =
        otagw::sim::Fleet::generate(CARDS, SEED, otagw::devkit::fleet_defaults()).expect("fleet");
    let r = client
        .post(format!("{base}/api/v1/cards"))
        .bearer_auth(&token)
        .json(&otagw::devkit::cards_body(&fleet))
        .send()
        .await
        .expect("cards");
    assert_eq!(r.status().as_u16(), 201);
    let (hook_url, hits) = receiver().await;
    let r = client
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": hook_url, "secret": "crash-test-secret"}))
        .send()
        .await
        .expect("webhook");
    assert_eq!(r.status().as_u16(), 201);
    let iccids: Vec<String> = (0..CARDS)
        .filter_map(|i| {
            fleet
                .msisdn_at(i)
                .and_then(|m| fleet.with_card(&m, |c| c.iccid()))
        })
        .collect();

    let mut ids = Vec::new();
    let mut killed_at = None;
    for i in 0..COMMANDS {
        let iccid = &iccids[i % CARDS];
        let body = json!({
            "commandId": format!("c{i:04}"),
            "type": "RFM",
            "target": {"iccid": iccid},
            "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": "B00010"},
            "data": {"apdus": ["00A40004023F00", "00A40004027FFF", "00A40004026F46",
                format!("00D6000011{:02X}{}", i % 256, "00".repeat(16))]},
        });
        // While the gateway is down, keep trying: the client side of a real integrator.
        loop {
            match client
                .post(format!("{base}/api/v1/ota/commands"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().as_u16() == 202 => break,
                Ok(r) if r.status().as_u16() == 409 => break, // stored before the crash
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        ids.push(format!("c{i:04}"));
        if i == COMMANDS / 3 {
            // Kill the gateway without warning while commands are in flight.
            let m: Value = client
                .get(format!("{base}/api/v1/ota/metrics"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("metrics")
                .json()
                .await
                .unwrap_or_default();
            let open: u64 = ["PENDING", "SENT", "DELIVERED"]
                .iter()
                .map(|s| m["byStatus"][*s].as_u64().unwrap_or(0))
                .sum();
            assert!(open > 0, "nothing in flight to crash on: {m}");
            eprintln!(
                "crash test: killing the gateway with {} open: {}",
                open, m["byStatus"]
            );
            let _ = serve.0.kill();
            let _ = serve.0.wait();
            killed_at = Some(i);
            serve = Killed(otagw(&dir, &["serve"], &envs).spawn().expect("serve again"));
            wait_healthy(&client, &base).await;
        }
    }
    assert!(killed_at.is_some());

    // Every command ends, exactly once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut results: BTreeMap<String, Value> = BTreeMap::new();
    while results.len() < ids.len() {
        for id in &ids {
            if results.contains_key(id) {
                continue;
            }
            let r: Value = client
                .get(format!("{base}/api/v1/ota/commands/{id}"))
                .bearer_auth(&token)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .unwrap_or_default();
            if matches!(
                r["status"].as_str(),
                Some("SUCCESS" | "FAILED" | "EXPIRED" | "CANCELLED")
            ) {
                results.insert(id.clone(), r);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} commands ended",
            results.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut by_status: HashMap<String, usize> = HashMap::new();
    for (id, r) in &results {
        *by_status
            .entry(r["status"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
        let terminal = r["events"]
            .as_array()
            .map(|e| {
                e.iter()
                    .filter(|x| {
                        matches!(
                            x["kind"].as_str(),
                            Some("SUCCESS" | "FAILED" | "EXPIRED" | "CANCELLED")
                        )
                    })
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(terminal, 1, "{id} ended {terminal} times: {r}");
    }
    let resent = results
        .values()
        .filter(|r| r["attempts"].as_u64().unwrap_or(0) > 1)
        .count();
    eprintln!("crash test: {by_status:?}, {resent} resent");
    // The SMSC lost some messages: those were resent, with the same packet, and succeeded.
    assert!(resent > 0, "no command was resent");
    let failed: Vec<&Value> = results
        .values()
        .filter(|r| r["status"] != "SUCCESS")
        .collect();
    assert_eq!(
        by_status.get("SUCCESS"),
        Some(&ids.len()),
        "{by_status:?}: {failed:?}"
    );

    // The cards' side: no card ran a counter twice; every command ran exactly once.
    let ran = journal(&journal_path);
    let mut per_card: HashMap<String, Vec<u64>> = HashMap::new();
    for (msisdn, status, counter) in &ran {
        if status == "00" {
            per_card.entry(msisdn.clone()).or_default().push(*counter);
        }
    }
    let mut executed = 0;
    for (msisdn, counters) in &per_card {
        let distinct: HashSet<_> = counters.iter().collect();
        assert_eq!(
            distinct.len(),
            counters.len(),
            "card {msisdn} ran a counter twice: {counters:?}"
        );
        executed += counters.len();
    }
    assert_eq!(executed, ids.len(), "packets the cards ran vs commands");
    // And the gateway's counters are the cards' counters.
    let mut stored: HashMap<String, HashSet<u64>> = HashMap::new();
    for r in results.values() {
        let iccid = r["target"]["iccid"].as_str().unwrap_or("").to_string();
        let c = r["counter"].as_u64().expect("a counter");
        assert!(
            stored.entry(iccid).or_default().insert(c),
            "counter {c} stored twice"
        );
    }

    // Webhooks: every command's completion arrives (from before the kill or from the outbox
    // after it), each delivery id once per event, PoR before completion.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let completed: HashSet<String> = hits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|h| h.1 == "command.completed")
            .map(|h| h.2.clone())
            .collect();
        if ids.iter().all(|id| completed.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} completions reached the webhook",
            completed.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let hits = hits.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut redelivered = 0;
    for id in &ids {
        let mine: Vec<&Hit> = hits.iter().filter(|h| &h.2 == id).collect();
        let completions: HashSet<&str> = mine
            .iter()
            .filter(|h| h.1 == "command.completed")
            .map(|h| h.0.as_str())
            .collect();
        assert_eq!(completions.len(), 1, "{id}: completions {mine:?}");
        let first = |event: &str| mine.iter().position(|h| h.1 == event);
        assert!(
            first("command.por").is_some(),
            "{id}: no PoR event {mine:?}"
        );
        assert!(
            first("command.por") < first("command.completed"),
            "{id}: out of order {mine:?}"
        );
        let distinct: HashSet<&str> = mine.iter().map(|h| h.0.as_str()).collect();
        redelivered += mine.len() - distinct.len();
    }
    eprintln!(
        "crash test: {} webhook requests, {redelivered} redeliveries (same delivery id)",
        hits.len()
    );
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
}
