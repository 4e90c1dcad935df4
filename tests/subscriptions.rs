//! Subscription management end to end (issue 15): the REST API, the Secure Router, SCP80
//! commands over SMPP to the SMSC simulator, the virtual cards' subscription application, and
//! the cards' notifications coming back as MO SMS (card-originated command packets). On
//! SQLite and on PostgreSQL.

mod subscription_support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw::config::SubscriptionsSettings;
use otagw::devkit::{self, DevEnv, DevOptions};
use otagw::script::subscription::{SubscriptionCommand, TAR_SUBSCRIPTIONS};
use otagw::script::{CommandScript, ScriptFormat};
use otagw::sim::subscriptions::{EveryNetwork, SeededNetwork};
use serde_json::{json, Value};
use subscription_support::{card_registry, server_registry};

async fn env(store_url: Option<String>, notification_wait_secs: u64) -> DevEnv {
    devkit::start(DevOptions {
        cards: 3,
        store_url,
        subscriptions: Some(SubscriptionsSettings {
            notification_wait_secs,
            audit_backoff_secs: 1,
            audit_backoff_max_secs: 2,
        }),
        ..DevOptions::default()
    })
    .await
    .expect("devkit")
}

async fn on_postgres<F: std::future::Future<Output = ()>>(case: impl FnOnce(Option<String>) -> F) {
    let url = devkit::postgres_scratch_url(&devkit::test_database_url())
        .await
        .expect("PostgreSQL (see README: the tests need it on 127.0.0.1:5432)");
    case(Some(url.clone())).await;
    devkit::drop_postgres_scratch(&url).await;
}

/// Polls an operation until it is DONE or FAILED.
async fn settled(env: &DevEnv, op: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = env
            .get(&format!("/api/v1/subscription-operations/{op}"))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        if matches!(body["state"].as_str(), Some("DONE" | "FAILED")) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {op} still {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Posts an operation, expects 202, waits for its end and expects DONE; returns it.
async fn operation_done(env: &DevEnv, path: &str, body: &Value) -> Value {
    let (code, r) = env.post(path, body).await.unwrap();
    assert_eq!(code, 202, "{path}: {r}");
    let done = settled(env, r["operationId"].as_str().unwrap()).await;
    assert_eq!(done["state"], "DONE", "{done}");
    done
}

/// Polls a card's subscriptions until its sync state is `state`.
async fn sync_state(env: &DevEnv, iccid: &str, state: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = env
            .get(&format!("/api/v1/cards/{iccid}/subscriptions"))
            .await
            .unwrap();
        assert_eq!(code, 200, "{body}");
        if body["syncState"] == state {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "card {iccid} never {state}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unconfirmed(env: &DevEnv, iccid: &str) -> usize {
    env.fleet
        .with_card_by_iccid(iccid, |c| c.subscriptions().map_or(0, |a| a.unconfirmed()))
        .unwrap()
}

/// A webhook receiver recording (event, data) of every `subscription.*` and `card.*` event.
async fn hook(env: &DevEnv) -> Arc<Mutex<Vec<(String, Value)>>> {
    let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let log = log.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let event = v["event"].as_str().unwrap_or("").to_string();
                if event.starts_with("subscription.") || event.starts_with("card.") {
                    log.lock().unwrap().push((event, v["data"].clone()));
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (code, body) = env
        .post(
            "/api/v1/webhooks",
            &json!({"url": format!("http://{addr}/hook")}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{body}");
    seen
}

/// Waits until the receiver has `n` events, then returns their names.
async fn events(seen: &Arc<Mutex<Vec<(String, Value)>>>, n: usize) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = seen.lock().unwrap().clone();
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn template(env: &DevEnv) {
    let (code, body) = env
        .post(
            "/api/v1/subscription-templates",
            &json!({"name": "op-a", "spn": "OTAGW", "plmns": ["26201", "310410"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{body}");
}

async fn download_enable_delete_fallback_audit(store_url: Option<String>) {
    let env = env(store_url, 30).await;
    let _ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    template(&env).await;
    let iccid = env.iccid(0).unwrap();
    let factory_imsi = env.fleet.with_card_by_iccid(&iccid, |c| c.imsi()).unwrap();

    // Never touched: the registry provisioning implies.
    let (code, body) = env
        .get(&format!("/api/v1/cards/{iccid}/subscriptions"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["syncState"], "SYNCED");
    assert_eq!(body["fromProvisioning"], true);
    assert_eq!(
        server_registry(&body),
        BTreeSet::from([(1, factory_imsi.clone(), true, true)])
    );

    // Bad input changes nothing.
    let path = format!("/api/v1/cards/{iccid}/subscriptions");
    let (code, body) = env
        .post(
            &path,
            &json!({"template": "nope", "imsi": "262019000000001"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("template")),
        "{body}"
    );
    let (code, body) = env
        .post(&path, &json!({"template": "op-a", "imsi": "2620X"}))
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("imsi")),
        "{body}"
    );
    let (code, body) = env
        .post(&path, &json!({"template": "op-a", "imsi": factory_imsi}))
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("imsi")),
        "{body}"
    );
    let (code, body) = env.post(&format!("{path}/1"), &json!({})).await.unwrap();
    assert_eq!(code, 405, "{body}");

    // Download and enable.
    let (code, body) = env
        .post(
            &path,
            &json!({"template": "op-a", "imsi": "262019000000001", "enable": true}),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["subscriptionId"], 2);
    let op = body["operationId"].as_str().unwrap().to_string();
    // One operation per card at a time: the second names the first.
    let (code, busy) = env
        .post(&format!("/api/v1/cards/{iccid}/audit"), &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 409, "{busy}");
    assert_eq!(busy["details"]["operationId"], op.as_str(), "{busy}");
    let done = settled(&env, &op).await;
    assert_eq!(done["state"], "DONE", "{done}");
    assert_eq!(
        done["result"]["notification"]["outcome"], "switched",
        "{done}"
    );
    let body = sync_state(&env, &iccid, "SYNCED").await;
    let expected = BTreeSet::from([
        (1, factory_imsi.clone(), false, true),
        (2, "262019000000001".to_string(), true, false),
    ]);
    assert_eq!(server_registry(&body), expected);
    assert_eq!(card_registry(&env.fleet, &iccid), expected);
    assert_eq!(body["lastNotification"], 1);

    // The fallback cannot be deleted; moved, the old one can.
    let (code, body) = env.delete(&format!("{path}/1")).await.unwrap();
    assert_eq!(code, 409, "{body}");
    let (code, body) = env
        .put(&format!("{path}/2/fallback"), &json!({}))
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let done = settled(&env, body["operationId"].as_str().unwrap()).await;
    assert_eq!(done["state"], "DONE", "{done}");
    let (code, body) = env.delete(&format!("{path}/1")).await.unwrap();
    assert_eq!(code, 202, "{body}");
    let done = settled(&env, body["operationId"].as_str().unwrap()).await;
    assert_eq!(done["state"], "DONE", "{done}");
    let expected = BTreeSet::from([(2, "262019000000001".to_string(), true, true)]);
    let body = sync_state(&env, &iccid, "SYNCED").await;
    assert_eq!(server_registry(&body), expected);
    assert_eq!(card_registry(&env.fleet, &iccid), expected);
    let (code, body) = env.delete(&format!("{path}/9")).await.unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (404, Some("subscriptionId")),
        "{body}"
    );

    // An audit reads the same registry back.
    operation_done(&env, &format!("/api/v1/cards/{iccid}/audit"), &json!({})).await;
    let body = sync_state(&env, &iccid, "SYNCED").await;
    assert_eq!(server_registry(&body), expected);
    assert_eq!(body["fromProvisioning"], false);

    // The card was told its notification arrived: it stops repeating it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while unconfirmed(&env, &iccid) > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "notification never confirmed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The audit trail, newest first, names who asked and what the card said.
    let (code, trail) = env
        .get(&format!("/api/v1/cards/{iccid}/audit-trail"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{trail}");
    // The notification may overtake the download's PoR: then it settles the operation and
    // the PoR adds nothing.
    let entries: Vec<&Value> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["what"] != "DOWNLOAD accepted, awaiting the notification")
        .collect();
    let whats: Vec<&str> = entries
        .iter()
        .map(|t| t["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats,
        [
            "AUDIT done",
            "AUDIT requested",
            "DELETE done",
            "DELETE requested",
            "FALLBACK done",
            "FALLBACK requested",
            "NOTIFICATION switched",
            "DOWNLOAD requested",
        ],
        "{trail}"
    );
    let first = entries[7];
    assert!(
        first["who"].as_str().unwrap().starts_with("token:demo-"),
        "{first}"
    );
    assert_eq!(first["before"]["syncState"], "SYNCED");
    assert_eq!(first["after"]["syncState"], "PENDING");
    assert_eq!(entries[6]["who"], "card");
    assert!(
        entries[6]["answer"]
            .as_str()
            .unwrap()
            .contains("seq 1 switched, enabled 2"),
        "{}",
        entries[6]
    );
    // Paged.
    let seq = trail[1]["seq"].as_i64().unwrap();
    let (_, page) = env
        .get(&format!(
            "/api/v1/cards/{iccid}/audit-trail?before={seq}&limit=2"
        ))
        .await
        .unwrap();
    assert_eq!(page.as_array().unwrap().len(), 2);
    assert_eq!(page[0]["what"], "DELETE done");

    // Integrators cannot send SUBSCRIPTION commands around the router.
    let (code, body) = env
        .post(
            "/api/v1/ota/commands",
            &json!({"type": "SUBSCRIPTION", "target": {"iccid": iccid},
                    "security": {"spi": "1621", "kic": "12", "kid": "12", "tar": "534D41"},
                    "data": {"apdus": ["80EA0000"]}}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("type")),
        "{body}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_enable_delete_fallback_audit_sqlite() {
    download_enable_delete_fallback_audit(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_enable_delete_fallback_audit_postgres() {
    on_postgres(download_enable_delete_fallback_audit).await;
}

/// A switch to a subscription no network accepts: the card rolls back by itself and the
/// server learns it from the notification.
async fn rollback_is_learned_from_the_notification(store_url: Option<String>) {
    let env = env(store_url, 30).await;
    let network = SeededNetwork {
        refused: BTreeSet::from(["262019000000002".to_string()]),
        ..SeededNetwork::default()
    };
    let _ticker = env.tick_subscriptions(Arc::new(network), Duration::from_millis(100));
    template(&env).await;
    let iccid = env.iccid(1).unwrap();
    // The card gives up an attach after 1 s (its TIMERS command, run locally).
    let timers = SubscriptionCommand::Timers {
        attach: Some(1),
        return_to_primary: None,
    }
    .to_apdu()
    .unwrap();
    let script = CommandScript::from_commands([timers])
        .encode(ScriptFormat::Compact)
        .unwrap();
    env.fleet
        .with_card_by_iccid(&iccid, |c| c.run_script(TAR_SUBSCRIPTIONS, &script))
        .unwrap()
        .unwrap();
    let factory_imsi = env.fleet.with_card_by_iccid(&iccid, |c| c.imsi()).unwrap();
    let (code, body) = env
        .post(
            &format!("/api/v1/cards/{iccid}/subscriptions"),
            &json!({"template": "op-a", "imsi": "262019000000002", "enable": true}),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let done = settled(&env, body["operationId"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(
        done["result"]["notification"]["outcome"], "rolled_back",
        "{done}"
    );
    let body = sync_state(&env, &iccid, "SYNCED").await;
    let expected = BTreeSet::from([
        (1, factory_imsi, true, true),
        (2, "262019000000002".to_string(), false, false),
    ]);
    assert_eq!(server_registry(&body), expected);
    assert_eq!(card_registry(&env.fleet, &iccid), expected);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_learned_from_the_notification_sqlite() {
    rollback_is_learned_from_the_notification(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_learned_from_the_notification_postgres() {
    on_postgres(rollback_is_learned_from_the_notification).await;
}

/// The notification is lost: past its deadline the card is DIRTY, operations wait, the
/// automatic audit reads the card and the registry is right again.
async fn lost_notification_dirty_then_audited(store_url: Option<String>) {
    let env = env(store_url, 2).await;
    let ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    ticker.counts.drop_next.store(1, Relaxed);
    template(&env).await;
    let seen = hook(&env).await;
    let iccid = env.iccid(2).unwrap();
    let factory_imsi = env.fleet.with_card_by_iccid(&iccid, |c| c.imsi()).unwrap();
    let (code, body) = env
        .post(
            &format!("/api/v1/cards/{iccid}/subscriptions"),
            &json!({"template": "op-a", "imsi": "262019000000003", "enable": true}),
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{body}");
    let done = settled(&env, body["operationId"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(done["result"]["outcome"], "unknown", "{done}");
    assert_eq!(ticker.counts.dropped.load(Relaxed), 1);
    let body = sync_state(&env, &iccid, "SYNCED").await;
    let expected = BTreeSet::from([
        (1, factory_imsi, false, true),
        (2, "262019000000003".to_string(), true, false),
    ]);
    assert_eq!(server_registry(&body), expected, "{body}");
    assert_eq!(card_registry(&env.fleet, &iccid), expected);
    assert_eq!(body["lastNotification"], 1, "the audit's sequence number");
    let (_, trail) = env
        .get(&format!("/api/v1/cards/{iccid}/audit-trail"))
        .await
        .unwrap();
    let entries: Vec<(&str, &str)> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["what"].as_str().unwrap(), t["who"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries[..3],
        [
            ("AUDIT done", "card"),
            ("AUDIT requested", "router"),
            ("NOTIFICATION missing: card DIRTY", "router"),
        ],
        "{trail}"
    );
    assert_eq!(trail[0]["before"]["syncState"], "DIRTY");
    assert_eq!(trail[0]["after"]["syncState"], "SYNCED");
    let got = events(&seen, 3).await;
    let names: Vec<&str> = got.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(
        names,
        ["subscription.downloaded", "card.dirty", "card.audited"],
        "{got:?}"
    );
    assert!(
        got[1].1["reason"]
            .as_str()
            .unwrap()
            .contains("no notification"),
        "{got:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_notification_dirty_then_audited_sqlite() {
    lost_notification_dirty_then_audited(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_notification_dirty_then_audited_postgres() {
    on_postgres(lost_notification_dirty_then_audited).await;
}

/// A notification whose CC does not verify changes nothing; a genuine one the server did not
/// expect (no switch asked, a sequence number skipped) makes the card DIRTY and the automatic
/// audit repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_unexpected_notifications() {
    use otagw::script::subscription::{Notification, SwitchOutcome};
    let env = env(None, 30).await;
    let iccid = env.iccid(0).unwrap();
    let msisdn = env.msisdn(0).unwrap();
    let imsi = env.fleet.with_card_by_iccid(&iccid, |c| c.imsi()).unwrap();
    let system_id = env.config.smpp.as_ref().unwrap().system_id.clone();
    let mo = env.smsc.mo_sender();
    let unexpected = Notification {
        seq: 7,
        outcome: SwitchOutcome::Switched,
        enabled: 1,
        imsi: imsi.clone(),
    };
    let genuine = env
        .fleet
        .with_card_by_iccid(&iccid, |c| c.notification_user_data(&unexpected))
        .unwrap()
        .unwrap();
    let mut forged = genuine.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x01;
    assert!(mo.send_mo(&system_id, &msisdn, "otagw", &forged));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (_, trail) = env
        .get(&format!("/api/v1/cards/{iccid}/audit-trail"))
        .await
        .unwrap();
    assert_eq!(trail, json!([]), "a forged notification is not taken");
    let (_, body) = env
        .get(&format!("/api/v1/cards/{iccid}/subscriptions"))
        .await
        .unwrap();
    assert_eq!(body["syncState"], "SYNCED");

    assert!(mo.send_mo(&system_id, &msisdn, "otagw", &genuine));
    // DIRTY, then audited (the card never switched: its audit says sequence number 0).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let trail = loop {
        let (_, trail) = env
            .get(&format!("/api/v1/cards/{iccid}/audit-trail"))
            .await
            .unwrap();
        if trail[0]["what"] == "AUDIT done" {
            break trail;
        }
        assert!(tokio::time::Instant::now() < deadline, "{trail}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let whats: Vec<&str> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["what"].as_str().unwrap())
        .collect();
    assert_eq!(
        whats,
        [
            "AUDIT done",
            "AUDIT requested",
            "NOTIFICATION switched: card DIRTY"
        ]
    );
    assert_eq!(trail[2]["after"]["syncState"], "DIRTY");
    let body = sync_state(&env, &iccid, "SYNCED").await;
    assert_eq!(
        server_registry(&body),
        BTreeSet::from([(1, imsi, true, true)])
    );
    assert_eq!(body["lastNotification"], 0);
    env.shutdown().await;
}

/// `otagw subscription ...` in remote mode drives the same operations; local mode says it
/// needs a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_subscription_verbs() {
    let env = env(None, 30).await;
    let _ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    let iccid = env.iccid(1).unwrap();
    let token_file = env.data_dir.join("cli-token");
    std::fs::write(&token_file, &env.token).unwrap();
    let url = format!("http://{}", env.server.api_addr);
    let tf = token_file.to_str().unwrap().to_string();
    let run = move |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_otagw"))
            .args(&args)
            .env_remove("OTAGW_SERVER")
            .env_remove("OTAGW_TOKEN")
            .output()
            .expect("run otagw");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let remote = |verb: &[&str]| {
        let mut args: Vec<String> = ["subscription"].iter().map(|s| s.to_string()).collect();
        args.extend(verb.iter().map(|s| s.to_string()));
        args.extend([
            "--server".into(),
            url.clone(),
            "--token-file".into(),
            tf.clone(),
        ]);
        args.push("--json".into());
        tokio::task::spawn_blocking(move || run(args))
    };
    let (ok, out, err) = remote(&[
        "template-create",
        "--name",
        "cli",
        "--spn",
        "CLI",
        "--plmn",
        "26201",
    ])
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    let (ok, out, err) = remote(&[
        "download",
        "--iccid",
        &iccid,
        "--template",
        "cli",
        "--imsi",
        "262019000000077",
        "--enable",
        "--wait",
    ])
    .await
    .unwrap();
    assert!(ok, "{out}{err}");
    let op: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(op["state"], "DONE", "{op}");
    assert_eq!(op["kind"], "DOWNLOAD");
    let (ok, out, err) = remote(&["list", "--iccid", &iccid]).await.unwrap();
    assert!(ok, "{out}{err}");
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(list["syncState"], "SYNCED", "{list}");
    assert!(
        server_registry(&list).contains(&(2, "262019000000077".into(), true, false)),
        "{list}"
    );
    let (ok, out, err) = remote(&["delete", "--iccid", &iccid, "--id", "2"])
        .await
        .unwrap();
    assert!(!ok && out.is_empty(), "{out}");
    assert!(err.contains("409") && err.contains("enabled"), "{err}");
    let (ok, out, err) = remote(&["trail", "--iccid", &iccid, "--limit", "2"])
        .await
        .unwrap();
    assert!(ok, "{out}{err}");
    let trail: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(trail.as_array().unwrap().len(), 2, "{trail}");
    let (ok, _, err) = tokio::task::spawn_blocking(move || {
        run(vec![
            "subscription".into(),
            "list".into(),
            "--iccid".into(),
            "1".into(),
        ])
    })
    .await
    .unwrap();
    assert!(!ok && err.contains("--server"), "{err}");
    env.shutdown().await;
}

/// An operator grants an enterprise account rights on a card group: the enterprise sees and
/// acts on those cards' subscriptions only, within its rights; everything else is 404 to it.
async fn enterprise_grants(store_url: Option<String>) {
    let env = devkit::start(DevOptions {
        cards: 3,
        store_url,
        provision: true,
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let _ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    template(&env).await;
    let (granted, other) = (env.iccid(0).unwrap(), env.iccid(1).unwrap());
    let group = subscription_support::card_group(&env, "acme-fleet", &[&granted]).await;
    // The enterprise: its own account and token.
    let store = env.server.store.clone();
    let now = otagw::clock::now_ms();
    let acme = store.create_account("acme", now).await.unwrap();
    let acme_token = store.create_token(&acme.id, "acme", now).await.unwrap();
    let as_acme = |method: reqwest::Method, path: String, body: Option<Value>| {
        let rb = env
            .client
            .request(method, format!("{}{path}", env.server.base_url()))
            .bearer_auth(&acme_token);
        let rb = match body {
            Some(b) => rb.json(&b),
            None => rb,
        };
        async move {
            let r = rb.send().await.unwrap();
            let code = r.status().as_u16();
            (code, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    // Nothing granted yet: the card does not exist for acme.
    let (code, _) = as_acme(
        get.clone(),
        format!("/api/v1/cards/{granted}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(code, 404);

    // view + audit.
    let (code, g) = env
        .post(
            &format!("/api/v1/cardgroups/{group}/grants"),
            &json!({"account": "acme", "rights": ["audit"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{g}");
    assert_eq!(
        g["rights"],
        json!(["view", "audit"]),
        "view comes with every grant"
    );
    let (code, body) = as_acme(
        get.clone(),
        format!("/api/v1/cards/{granted}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(
        (code, &body["syncState"]),
        (200, &json!("SYNCED")),
        "{body}"
    );
    let (code, body) = as_acme(
        post.clone(),
        format!("/api/v1/cards/{granted}/subscriptions"),
        Some(json!({"template": "op-a", "imsi": "262019000000055", "enable": true})),
    )
    .await;
    assert_eq!(code, 403, "no manage right: {body}");
    let (code, body) = as_acme(post.clone(), format!("/api/v1/cards/{granted}/audit"), None).await;
    assert_eq!(code, 202, "{body}");
    let op = body["operationId"].as_str().unwrap().to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, view) = as_acme(
            get.clone(),
            format!("/api/v1/subscription-operations/{op}"),
            None,
        )
        .await;
        assert_eq!(code, 200, "{view}");
        if view["state"] == "DONE" {
            assert_eq!(view["requestedBy"], "token:acme");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{view}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, trail) = as_acme(
        get.clone(),
        format!("/api/v1/cards/{granted}/audit-trail"),
        None,
    )
    .await;
    assert_eq!(code, 200, "{trail}");
    assert_eq!(trail[1]["who"], "token:acme", "{trail}");
    // The owner sees the enterprise's operation in its card's trail too.
    let (_, owner_trail) = env
        .get(&format!("/api/v1/cards/{granted}/audit-trail"))
        .await
        .unwrap();
    assert_eq!(owner_trail, trail);

    // The granted card is in acme's card list and readable, without its key versions;
    // the card outside the group is not.
    let (code, list) = as_acme(get.clone(), "/api/v1/cards".into(), None).await;
    assert_eq!(code, 200, "{list}");
    let listed: Vec<(&str, bool)> = list["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["iccid"].as_str().unwrap(), c["granted"] == true))
        .collect();
    assert_eq!(listed, [(granted.as_str(), true)], "{list}");
    assert_eq!(list["cards"][0]["keyVersions"], json!([]), "{list}");
    let (code, card) = as_acme(get.clone(), format!("/api/v1/cards/{granted}"), None).await;
    assert_eq!((code, &card["granted"]), (200, &json!(true)), "{card}");
    assert_eq!(card["keyVersions"], json!([]), "{card}");
    let (_, own) = env.get(&format!("/api/v1/cards/{granted}")).await.unwrap();
    assert!(own.get("granted").is_none(), "{own}");
    assert_eq!(own["keyVersions"].as_array().unwrap().len(), 1, "{own}");
    let (_, owner_list) = env.get("/api/v1/cards").await.unwrap();
    assert_eq!(owner_list["cards"].as_array().unwrap().len(), 3);

    // Everything else answers 404: a card outside the group, changing the card itself, the
    // owner's commands and groups.
    for path in [
        format!("/api/v1/cards/{other}/subscriptions"),
        format!("/api/v1/cards/{other}/audit-trail"),
        format!("/api/v1/cards/{other}"),
        format!("/api/v1/cardgroups/{group}"),
        format!("/api/v1/cardgroups/{group}/grants"),
    ] {
        let (code, body) = as_acme(get.clone(), path.clone(), None).await;
        assert_eq!(code, 404, "{path}: {body}");
    }
    let (code, _) = as_acme(post.clone(), format!("/api/v1/cards/{other}/audit"), None).await;
    assert_eq!(code, 404);
    let (code, _) = as_acme(
        reqwest::Method::DELETE,
        format!("/api/v1/cards/{granted}"),
        None,
    )
    .await;
    assert_eq!(code, 404, "deleting stays the owner's");
    let (code, _) = as_acme(
        reqwest::Method::PATCH,
        format!("/api/v1/cards/{granted}"),
        Some(json!({"msisdn": "4912345"})),
    )
    .await;
    assert_eq!(code, 404, "changing stays the owner's");
    let command = done_command(&env, &granted).await;
    let (code, _) = as_acme(get.clone(), format!("/api/v1/ota/commands/{command}"), None).await;
    assert_eq!(code, 404, "the carrying command is the owner's");

    // manage: the enterprise switches the card.
    let (code, _) = env
        .post(
            &format!("/api/v1/cardgroups/{group}/grants"),
            &json!({"account": "acme", "rights": ["manage"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201);
    let (code, body) = as_acme(
        post.clone(),
        format!("/api/v1/cards/{granted}/subscriptions"),
        Some(json!({"template": "op-a", "imsi": "262019000000055", "enable": true})),
    )
    .await;
    assert_eq!(code, 202, "with its operator's template: {body}");
    let op2 = body["operationId"].as_str().unwrap().to_string();
    let done = settled(&env, &op2).await;
    assert_eq!(done["state"], "DONE", "{done}");
    assert_eq!(done["requestedBy"], "token:acme");
    let (code, body) = as_acme(post.clone(), format!("/api/v1/cards/{granted}/audit"), None).await;
    assert_eq!(code, 403, "the new grant replaced audit: {body}");
    let (code, list) = env
        .get(&format!("/api/v1/cardgroups/{group}/grants"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(list[0]["account"], "acme");
    assert_eq!(list[0]["rights"], json!(["view", "manage"]));

    // Revoked: gone.
    let (code, _) = env
        .delete(&format!("/api/v1/cardgroups/{group}/grants/acme"))
        .await
        .unwrap();
    assert_eq!(code, 204);
    let (code, _) = as_acme(
        get.clone(),
        format!("/api/v1/cards/{granted}/subscriptions"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = as_acme(
        get.clone(),
        format!("/api/v1/subscription-operations/{op}"),
        None,
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = as_acme(get.clone(), format!("/api/v1/cards/{granted}"), None).await;
    assert_eq!(code, 404);
    let (_, list) = as_acme(get, "/api/v1/cards".into(), None).await;
    assert_eq!(list["cards"], json!([]), "{list}");
    let (code, body) = env
        .post(
            &format!("/api/v1/cardgroups/{group}/grants"),
            &json!({"account": "nobody", "rights": ["view"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("account")),
        "{body}"
    );
    env.shutdown().await;
}

/// The id of the command that carried the card's last operation.
async fn done_command(env: &DevEnv, iccid: &str) -> String {
    let (_, trail) = env
        .get(&format!("/api/v1/cards/{iccid}/audit-trail"))
        .await
        .unwrap();
    let op = trail[0]["operationId"].as_str().unwrap().to_string();
    let (_, view) = env
        .get(&format!("/api/v1/subscription-operations/{op}"))
        .await
        .unwrap();
    view["commandId"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprise_grants_sqlite() {
    enterprise_grants(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprise_grants_postgres() {
    on_postgres(enterprise_grants).await;
}

/// A card group's bootstrap rule: every card gets its operational subscriptions (IMSIs in
/// order from the ranges), the first enabled, the fallback moved and the bootstrap
/// subscription deleted; with `keep_as_fallback`, the bootstrap one stays as the fallback.
async fn bootstrap_a_group(store_url: Option<String>) {
    const CARDS: usize = 6;
    let env = devkit::start(DevOptions {
        cards: CARDS,
        store_url,
        provision: true,
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let _ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    template(&env).await;
    let (profile, _) = env.fleet_group.unwrap();
    let iccids: Vec<String> = (0..CARDS).map(|i| env.iccid(i).unwrap()).collect();
    let mut groups = Vec::new();
    for (name, members) in [("boot-del", &iccids[..4]), ("boot-keep", &iccids[4..])] {
        let (code, g) = env
            .post(
                "/api/v1/cardgroups",
                &json!({"profileId": profile, "name": name, "iccids": members}),
            )
            .await
            .unwrap();
        assert_eq!(code, 201, "{g}");
        groups.push(g["id"].as_i64().unwrap());
    }
    // Bad rules name the field.
    let (code, body) = env
        .put(
            &format!("/api/v1/cardgroups/{}/rules", groups[0]),
            &json!({"subscriptions": [{"template": "op-a", "imsiFirst": "99999", "imsiCount": 2}],
                    "bootstrap": "delete", "trigger": "provisioning"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("subscriptions[0].imsiFirst")),
        "{body}"
    );
    let (code, body) = env
        .put(
            &format!("/api/v1/cardgroups/{}/rules", groups[0]),
            &json!({"subscriptions": [{"template": "op-a", "imsiFirst": "999999", "imsiCount": 2}],
                    "bootstrap": "delete", "trigger": "provisioning"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("subscriptions[0].imsiCount")),
        "{body}"
    );
    let (code, body) = env
        .put(
            &format!("/api/v1/cardgroups/{}/rules", groups[0]),
            &json!({"subscriptions": [
                        {"template": "op-a", "imsiFirst": "262019100000000", "imsiCount": 100},
                        {"template": "op-a", "imsiFirst": "262019200000000", "imsiCount": 100}],
                    "bootstrap": "delete", "trigger": "provisioning"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = env
        .put(
            &format!("/api/v1/cardgroups/{}/rules", groups[1]),
            &json!({"subscriptions": [
                        {"template": "op-a", "imsiFirst": "262019300000000", "imsiCount": 1}],
                    "bootstrap": "keep_as_fallback", "trigger": "provisioning"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    // Group 0 bootstraps all 4; group 1's range holds one IMSI: one card done, one FAILED.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, a) = env
            .get(&format!("/api/v1/cardgroups/{}/bootstrap", groups[0]))
            .await
            .unwrap();
        let (_, b) = env
            .get(&format!("/api/v1/cardgroups/{}/bootstrap", groups[1]))
            .await
            .unwrap();
        if a["plans"] == json!({"DONE": 4}) && b["plans"] == json!({"DONE": 1, "FAILED": 1}) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut imsis_a = BTreeSet::new();
    for iccid in &iccids[..4] {
        let body = sync_state(&env, iccid, "SYNCED").await;
        let server = server_registry(&body);
        assert_eq!(server, card_registry(&env.fleet, iccid), "{iccid}");
        // Two operational subscriptions, the first enabled with the fallback; no bootstrap.
        let v: Vec<_> = server.iter().collect();
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].1.starts_with("2620191") && v[0].2 && v[0].3, "{v:?}");
        assert!(v[1].1.starts_with("2620192") && !v[1].2 && !v[1].3, "{v:?}");
        imsis_a.insert(v[0].1.clone());
    }
    assert_eq!(
        imsis_a,
        (0..4).map(|i| format!("26201910000000{i}")).collect(),
        "IMSIs handed out in order, each once"
    );
    let kept: Vec<_> = iccids[4..]
        .iter()
        .map(|iccid| card_registry(&env.fleet, iccid))
        .collect();
    assert!(
        kept.iter().any(|r| r.len() == 2
            && r.iter().any(|s| s.0 == 1 && !s.2 && s.3)
            && r.iter().any(|s| s.1 == "262019300000000" && s.2 && !s.3)),
        "bootstrap kept as the fallback: {kept:?}"
    );
    assert!(
        kept.iter().any(|r| r.is_empty()),
        "the card past the range is untouched (its application never used): {kept:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_a_group_sqlite() {
    bootstrap_a_group(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_a_group_postgres() {
    on_postgres(bootstrap_a_group).await;
}

/// A rule with the `notification` trigger: a card of the group that reports on its
/// bootstrap subscription is bootstrapped; one that does not report is left alone; a report
/// agreeing with the registry does not make a card DIRTY.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_on_the_cards_first_report() {
    let env = devkit::start(DevOptions {
        cards: 3,
        provision: true,
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let _ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    template(&env).await;
    let (_, group) = env.fleet_group.unwrap();
    let (code, body) = env
        .put(
            &format!("/api/v1/cardgroups/{group}/rules"),
            &json!({"subscriptions": [
                        {"template": "op-a", "imsiFirst": "262019400000000", "imsiCount": 10}],
                    "bootstrap": "delete", "trigger": "notification"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (reporting, silent) = (env.iccid(0).unwrap(), env.iccid(1).unwrap());
    env.fleet
        .with_card_by_iccid(&reporting, |c| {
            c.report_subscriptions(otagw::clock::now_ms())
        })
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, p) = env
            .get(&format!("/api/v1/cardgroups/{group}/bootstrap"))
            .await
            .unwrap();
        if p["plans"] == json!({"DONE": 1}) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = sync_state(&env, &reporting, "SYNCED").await;
    let expected = BTreeSet::from([(2, "262019400000000".to_string(), true, true)]);
    assert_eq!(server_registry(&body), expected);
    assert_eq!(card_registry(&env.fleet, &reporting), expected);
    let (_, trail) = env
        .get(&format!("/api/v1/cards/{reporting}/audit-trail"))
        .await
        .unwrap();
    let last = trail.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        last["what"], "NOTIFICATION report: bootstrap planned",
        "{trail}"
    );
    assert_eq!(last["after"]["syncState"], "SYNCED");
    // The silent card: no plan, untouched.
    let (_, body) = env
        .get(&format!("/api/v1/cards/{silent}/subscriptions"))
        .await
        .unwrap();
    assert_eq!(body["fromProvisioning"], true, "{body}");
    assert!(card_registry(&env.fleet, &silent).is_empty());
    env.shutdown().await;
}

/// Polls until every card is SYNCED with the registry its virtual card holds and no card
/// still repeats a notification; returns the bodies.
async fn all_synced_and_equal(env: &DevEnv, iccids: &[String], within: Duration) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut bodies = Vec::new();
        let mut agree = true;
        for iccid in iccids {
            let (code, body) = env
                .get(&format!("/api/v1/cards/{iccid}/subscriptions"))
                .await
                .unwrap();
            assert_eq!(code, 200, "{body}");
            agree &= body["syncState"] == "SYNCED"
                && server_registry(&body) == card_registry(&env.fleet, iccid)
                && unconfirmed(env, iccid) == 0;
            bodies.push(body);
        }
        if agree {
            return bodies;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all SYNCED and equal to the cards: {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cards provisioned from a vendor file with factory subscriptions (IMSI2, IMSI3): the
/// gateway knows their registry before it ever talks to them, enables a factory one, audits
/// an untouched card, and deletes a card the router worked on.
async fn factory_subscriptions_from_the_vendor_file(store_url: Option<String>) {
    let env = devkit::start(DevOptions {
        cards: 3,
        store_url,
        provision: true,
        factory_subscriptions: 2,
        subscriptions: Some(SubscriptionsSettings {
            notification_wait_secs: 5,
            audit_backoff_secs: 1,
            audit_backoff_max_secs: 2,
        }),
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let _ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    let (switched, audited) = (env.iccid(1).unwrap(), env.iccid(2).unwrap());
    let (code, body) = env
        .get(&format!("/api/v1/cards/{switched}/subscriptions"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["fromProvisioning"], true, "{body}");
    let factory = card_registry(&env.fleet, &switched);
    assert_eq!(factory.len(), 3, "{factory:?}");
    assert_eq!(server_registry(&body), factory, "{body}");
    let bootstrap: Vec<bool> = body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["bootstrap"].as_bool().unwrap())
        .collect();
    assert_eq!(bootstrap, [true, false, false], "{body}");

    // Enable factory subscription 3: no download needed.
    operation_done(
        &env,
        &format!("/api/v1/cards/{switched}/subscriptions/3/enable"),
        &json!({}),
    )
    .await;
    let body = sync_state(&env, &switched, "SYNCED").await;
    assert_eq!(server_registry(&body), card_registry(&env.fleet, &switched));
    let enabled: Vec<u64> = body["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["enabled"] == true)
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(enabled, [3], "{body}");
    let imsi3 = body["subscriptions"][2]["imsi"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        env.fleet
            .with_card_by_iccid(&switched, |c| c.imsi())
            .unwrap(),
        imsi3,
        "EF IMSI follows the enabled subscription"
    );

    // An audit of an untouched card reads back what the vendor file said.
    operation_done(&env, &format!("/api/v1/cards/{audited}/audit"), &json!({})).await;
    let body = sync_state(&env, &audited, "SYNCED").await;
    assert_eq!(body["fromProvisioning"], false, "{body}");
    assert_eq!(server_registry(&body).len(), 3, "{body}");
    assert_eq!(server_registry(&body), card_registry(&env.fleet, &audited));

    // A card the router worked on can be deleted; its subscription records go with it.
    let (code, body) = env
        .delete(&format!("/api/v1/cards/{switched}"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, _) = env
        .get(&format!("/api/v1/cards/{switched}/subscriptions"))
        .await
        .unwrap();
    assert_eq!(code, 404);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_subscriptions_from_the_vendor_file_sqlite() {
    factory_subscriptions_from_the_vendor_file(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_subscriptions_from_the_vendor_file_postgres() {
    on_postgres(factory_subscriptions_from_the_vendor_file).await;
}

/// The far side misbehaves, seeded: a share of PoRs lost after the card ran the command, and
/// of notifications lost or held back. Every operation still ends, and every card ends
/// SYNCED with the registry its virtual card holds (through DIRTY and automatic audits where
/// the gateway could not tell).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_pors_and_notifications_end_synced() {
    const CARDS: usize = 8;
    let env = devkit::start(DevOptions {
        cards: CARDS,
        provision: true,
        factory_subscriptions: 2,
        por_timeout: Duration::from_secs(2),
        smsc_faults: Some(otagw_sms::smsc_sim::FaultConfig {
            seed: 7,
            por_drop_share: 0.3,
            ..Default::default()
        }),
        subscriptions: Some(SubscriptionsSettings {
            notification_wait_secs: 2,
            audit_backoff_secs: 1,
            audit_backoff_max_secs: 2,
        }),
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let ticker = env.tick_subscriptions_with(
        Arc::new(EveryNetwork),
        Duration::from_millis(100),
        devkit::NotificationFaults {
            seed: 7,
            drop_share: 0.3,
            delay_share: 0.3,
            max_delay_ms: 1_500,
        },
    );
    let iccids: Vec<String> = (0..CARDS).map(|i| env.iccid(i).unwrap()).collect();
    let mut ops = Vec::new();
    for (i, iccid) in iccids.iter().enumerate() {
        let slot = 2 + i % 2;
        let (code, body) = env
            .post(
                &format!("/api/v1/cards/{iccid}/subscriptions/{slot}/enable"),
                &json!({}),
            )
            .await
            .unwrap();
        assert_eq!(code, 202, "{body}");
        ops.push(body["operationId"].as_str().unwrap().to_string());
    }
    let mut states = BTreeSet::new();
    for op in &ops {
        let done = settled(&env, op).await;
        states.insert(done["state"].as_str().unwrap().to_string());
    }
    all_synced_and_equal(&env, &iccids, Duration::from_secs(60)).await;
    // The faults did happen (the seed makes them the same each run).
    let stats = env.smsc.stats();
    let (dropped, delayed) = (
        ticker.counts.dropped.load(Relaxed),
        ticker.counts.delayed.load(Relaxed),
    );
    assert!(stats.pors_dropped > 0, "{stats:?}");
    assert!(dropped > 0 && delayed > 0, "{dropped} {delayed}");
    // Some operation could not be told from the card's answers alone.
    assert!(states.contains("FAILED"), "{states:?}");
    env.shutdown().await;
}

/// The same MSISDN on a card of another account (added later, so looked at first): the
/// notification still goes to the card whose keys verify it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_msisdn_goes_to_the_card_that_verifies() {
    use otagw::store::{KeyMaterial, KeySetRecord, NewCard};
    let env = env(None, 10).await;
    let _ticker = env.tick_subscriptions(Arc::new(EveryNetwork), Duration::from_millis(100));
    template(&env).await;
    let iccid = env.iccid(0).unwrap();
    let msisdn = env.msisdn(0).unwrap();
    let store = env.server.store.clone();
    let now = otagw::clock::now_ms();
    let other = store.create_account("other", now).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .insert_cards(
            &other.id,
            &[NewCard {
                iccid: "8949000000000099993".into(),
                imsi: Some("262010000099999".into()),
                msisdn: Some(msisdn.clone()),
                attributes: Default::default(),
                key_sets: vec![KeySetRecord {
                    version: 1,
                    kic_algorithm: None,
                    kid_algorithm: None,
                    keys: KeyMaterial {
                        kic: vec![0x11; 16],
                        kid: vec![0x22; 16],
                        kik: None,
                    },
                    counter: 0,
                    rotated_at: None,
                }],
                factory_subscriptions: Vec::new(),
            }],
            otagw::clock::now_ms(),
        )
        .await
        .unwrap();
    operation_done(
        &env,
        &format!("/api/v1/cards/{iccid}/subscriptions"),
        &json!({"template": "op-a", "imsi": "262019000000077", "enable": true}),
    )
    .await;
    let body = sync_state(&env, &iccid, "SYNCED").await;
    assert_eq!(server_registry(&body), card_registry(&env.fleet, &iccid));
    env.shutdown().await;
}
