//! Crash test for the Secure Router: `otagw serve` (a separate process) is killed with
//! SIGKILL while subscription downloads with a switch are in flight on every card, and started
//! again. The SMSC simulator and the virtual cards run in this process and go on meanwhile
//! (the cards switch and send their notifications; the simulator keeps the MO for the next
//! bind). In the end every operation has ended, every card is SYNCED, and each card's stored
//! registry is the virtual card's own.

mod subscription_support;

mod process_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use otagw::sim::subscriptions::EveryNetwork;
use otagw::sim::Fleet;
use otagw_sms::smsc_sim::{SmscConfig, SmscSimulator};
use process_support::{free_port, otagw, output, wait_healthy, Killed};
use serde_json::{json, Value};
use subscription_support::{card_registry, server_registry};

const CARDS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_enable_every_card_ends_synced_with_the_cards_registry() {
    let dir = otagw::devkit::temp_dir("otagw-crash-subs").expect("dir");
    let fleet =
        Arc::new(Fleet::generate(CARDS, 11, otagw::devkit::fleet_defaults()).expect("fleet"));
    let smsc = SmscSimulator::start(
        SmscConfig::new(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        fleet.clone(),
    )
    .await
    .expect("SMSC simulator");
    let _ticker = otagw::devkit::tick_fleet_subscriptions(
        fleet.clone(),
        smsc.mo_sender(),
        "otagw".into(),
        Arc::new(EveryNetwork),
        // The cards attach and notify at most every 600 ms, so switches are still under
        // way when the gateway is killed (the path got fast enough to end them all first).
        Duration::from_millis(600),
        otagw::devkit::NotificationFaults::default(),
    );
    let config = dir.join("otagw.toml");
    std::fs::write(
        &config,
        "[subscriptions]\nnotification_wait_secs = 3\naudit_backoff_secs = 1\n\
         audit_backoff_max_secs = 2\n",
    )
    .expect("config");
    let api_port = free_port();
    let envs = vec![
        ("OTAGW_CONFIG", config.to_string_lossy().to_string()),
        ("OTAGW_API_LISTEN", format!("127.0.0.1:{api_port}")),
        ("OTAGW_SMPP_ADDRESS", smsc.local_addr().to_string()),
        ("OTAGW_GATEWAY_ID", "crash-subs".to_string()),
        ("OTAGW_POR_TIMEOUT_SECS", "2".to_string()),
        ("OTAGW_RETRY_ATTEMPTS", "3".to_string()),
    ];
    output(otagw(&dir, &["account", "create", "--name", "subs"], &envs));
    let token = output(otagw(
        &dir,
        &["token", "create", "--account", "subs"],
        &envs,
    ));
    let base = format!("http://127.0.0.1:{api_port}");
    let client = reqwest::Client::new();
    let mut serve = Killed(otagw(&dir, &["serve"], &envs).spawn().expect("serve"));
    wait_healthy(&client, &base).await;
    let post = |path: String, body: Value| {
        let rb = client
            .post(format!("{base}{path}"))
            .bearer_auth(&token)
            .json(&body);
        async move {
            let r = rb.send().await.expect("POST");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let get = |path: String| {
        let rb = client.get(format!("{base}{path}")).bearer_auth(&token);
        async move {
            let r = rb.send().await.expect("GET");
            (
                r.status().as_u16(),
                r.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (code, _) = post("/api/v1/cards".into(), otagw::devkit::cards_body(&fleet)).await;
    assert_eq!(code, 201);
    let (code, _) = post(
        "/api/v1/subscription-templates".into(),
        json!({"name": "t", "spn": "crash", "plmns": ["26201"]}),
    )
    .await;
    assert_eq!(code, 201);
    let iccids: Vec<String> = (0..CARDS)
        .map(|i| {
            let m = fleet.msisdn_at(i).expect("card");
            fleet.with_card(&m, |c| c.iccid()).expect("card")
        })
        .collect();
    let mut operations = Vec::new();
    for (i, iccid) in iccids.iter().enumerate() {
        let (code, body) = post(
            format!("/api/v1/cards/{iccid}/subscriptions"),
            json!({"template": "t", "imsi": format!("26201900{i:07}"), "enable": true}),
        )
        .await;
        assert_eq!(code, 202, "{body}");
        operations.push(body["operationId"].as_str().expect("id").to_string());
    }
    // Some commands are sent, some cards switched, some notifications on their way: the
    // states just before the kill (the kill must find operations in flight).
    let mut in_flight = 0;
    for op in &operations {
        let (_, body) = get(format!("/api/v1/subscription-operations/{op}")).await;
        if matches!(
            body["state"].as_str(),
            Some("SENT" | "AWAITING_NOTIFICATION")
        ) {
            in_flight += 1;
        }
    }
    serve.0.kill().expect("SIGKILL");
    let _ = serve.0.wait();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _serve = Killed(otagw(&dir, &["serve"], &envs).spawn().expect("serve again"));
    wait_healthy(&client, &base).await;

    assert!(in_flight > 0, "every operation ended before the kill");
    eprintln!("{in_flight} of {CARDS} operations in flight at the kill");
    let deadline = Instant::now() + Duration::from_secs(60);
    for iccid in &iccids {
        loop {
            let (code, body) = get(format!("/api/v1/cards/{iccid}/subscriptions")).await;
            assert_eq!(code, 200, "{body}");
            let card = card_registry(&fleet, iccid);
            if body["syncState"] == "SYNCED" && server_registry(&body) == card {
                // The card switched to the downloaded subscription.
                assert!(card.iter().any(|s| s.0 == 2 && s.2), "{iccid}: {card:?}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "card {iccid}: server {body}, card {card:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for op in &operations {
        let (code, body) = get(format!("/api/v1/subscription-operations/{op}")).await;
        assert_eq!(code, 200, "{body}");
        assert!(
            matches!(body["state"].as_str(), Some("DONE" | "FAILED")),
            "operation still open: {body}"
        );
    }
    smsc.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
