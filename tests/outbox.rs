//! The outbox worker against a real HTTP receiver and both stores: events written while no
//! gateway ran are delivered after a start, in order per command; a gateway that dies
//! mid-delivery has its events redelivered by another with the same delivery id; two gateways
//! on one PostgreSQL deliver each event once.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use common::{Backend, TestDb};
use otagw::command::{CommandStatus, CommandType, Priority};
use otagw::delivery::outbox::{OutboxConfig, OutboxWorker};
use otagw::delivery::webhook::{RetryPolicy, Webhooks};
use otagw::events::Event;
use otagw::store::{
    KeyMaterial, KeySetRecord, NewCard, NewCommand, OutboxStore, SecuredPacket, SqlStore, Store,
    Transition, Webhook,
};
use serde_json::Value;

/// (X-Otagw-Delivery, body id, event, commandId).
type Hit = (String, String, String, String);

/// A receiver answering 200 after `delay(n)` for the n-th request (0-based).
async fn receiver(
    delay: impl Fn(usize) -> Duration + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
    let log = hits.clone();
    let delay = Arc::new(delay);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let log = log.clone();
            let delay = delay.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let n = {
                    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                    log.push((
                        headers
                            .get("X-Otagw-Delivery")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string(),
                        v["id"].as_str().unwrap_or("").to_string(),
                        v["event"].as_str().unwrap_or("").to_string(),
                        v["data"]["commandId"].as_str().unwrap_or("").to_string(),
                    ));
                    log.len() - 1
                };
                tokio::time::sleep(delay(n)).await;
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), hits)
}

fn hits_of(hits: &Arc<Mutex<Vec<Hit>>>) -> Vec<Hit> {
    hits.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn config(owner: &str, lease: Duration) -> OutboxConfig {
    OutboxConfig {
        owner: owner.to_string(),
        lease,
        poll: Duration::from_millis(20),
        ..OutboxConfig::default()
    }
}

fn webhooks(store: Arc<dyn Store>) -> Webhooks {
    Webhooks::new(
        store,
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            request_timeout: Duration::from_secs(5),
        },
    )
}

/// An account with a webhook to `url`, one card, and `n` commands SENT, each then given its
/// delivery report, PoR and completion as the engine records them (no worker running).
async fn account_with_events(store: &SqlStore, url: &str, n: usize) -> (String, Vec<String>) {
    let a = store.create_account("hooks", 1).await.expect("account").id;
    store
        .add_webhook(&Webhook {
            id: "wh".into(),
            account_id: a.clone(),
            url: url.to_string(),
            secret: b"secret".to_vec(),
            events: Vec::new(),
        })
        .await
        .expect("webhook");
    let iccid = "8933012300000000001".to_string();
    let keys = KeyMaterial {
        kic: vec![1; 16],
        kid: vec![2; 16],
        kik: None,
    };
    store
        .insert_cards(
            &a,
            &[NewCard {
                iccid: iccid.clone(),
                msisdn: Some("33600000001".into()),
                imsi: None,
                attributes: Default::default(),
                key_sets: vec![KeySetRecord {
                    version: 1,
                    keys,
                    counter: 0,
                    kic_algorithm: None,
                    kid_algorithm: None,
                    rotated_at: None,
                }],
                factory_subscriptions: Vec::new(),
            }],
            1,
        )
        .await
        .expect("card");
    let ids: Vec<String> = (0..n).map(|i| format!("cmd{i:04}")).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .insert_command(&NewCommand {
                id: id.clone(),
                account_id: a.clone(),
                batch_id: None,
                command_type: CommandType::Rfm,
                iccid: iccid.clone(),
                transport: "sms".into(),
                priority: Priority::Normal,
                request: serde_json::json!({}),
                expires_at: None,
                created_at: 10 + i as i64,
            })
            .await
            .expect("command");
    }
    let claimed = store
        .claim_commands("engine", n as u32, 100, i64::MAX / 2)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), n);
    for (i, id) in ids.iter().enumerate() {
        let secured = SecuredPacket {
            packet: vec![1, 2, 3],
            counter: i as u64 + 1,
            key_version: 1,
            msisdn: "33600000001".into(),
            tar: [0xB0, 0, 0x10],
            spi: [0x16, 0x39],
            kic: 0x12,
            kid: 0x12,
            pending_keys: None,
        };
        assert!(store
            .record_secured(&a, id, "engine", &secured, 100)
            .await
            .expect("secured"));
        assert!(store
            .record_send(&a, id, "engine", 200)
            .await
            .expect("send"));
        assert!(store.record_delivery(&a, id, 300).await.expect("delivery"));
        let t = Transition {
            from: vec![CommandStatus::Sent, CommandStatus::Delivered],
            to: CommandStatus::Success,
            event: "SUCCESS".into(),
            detail: String::new(),
            response: None,
            error: None,
            at: 400,
            new_keys: None,
            events: vec![
                Event::CommandPor {
                    command_id: id.clone(),
                    por_status: Some("00".into()),
                    counter: i as u64 + 1,
                },
                Event::CommandCompleted {
                    command_id: id.clone(),
                    status: CommandStatus::Success,
                    response: None,
                    error: None,
                },
            ],
        };
        assert!(store.transition(&a, id, &t).await.expect("transition"));
    }
    (a, ids)
}

/// Per command, the events in the order they first arrived.
fn order(hits: &[Hit]) -> HashMap<String, Vec<String>> {
    let mut seen = HashSet::new();
    let mut by_command: HashMap<String, Vec<String>> = HashMap::new();
    for h in hits {
        if seen.insert(h.1.clone()) {
            by_command.entry(h.3.clone()).or_default().push(h.2.clone());
        }
    }
    by_command
}

const IN_ORDER: [&str; 3] = ["command.delivered", "command.por", "command.completed"];

async fn written_before_a_start_delivered_after_in_order(b: Backend) {
    let db = TestDb::new(b).await;
    let (url, hits) = receiver(|_| Duration::ZERO).await;
    let ids = {
        let store = db.open().await;
        let (_, ids) = account_with_events(&store, &url, 20).await;
        assert_eq!(store.outbox_len().await.expect("len"), 60);
        ids
    };
    // A new start of the gateway: another store, the worker.
    let store: Arc<dyn Store> = Arc::new(db.open().await);
    let worker = OutboxWorker::start(
        store.clone(),
        webhooks(store.clone()),
        config("gw", Duration::from_secs(30)),
    );
    wait_until("60 deliveries", Duration::from_secs(20), || {
        hits_of(&hits).len() >= 60
    })
    .await;
    let got = hits_of(&hits);
    assert_eq!(got.len(), 60, "each event once");
    let by_command = order(&got);
    for id in &ids {
        assert_eq!(by_command[id], IN_ORDER, "{id}");
    }
    // Each delivery id once, derived from the event's id.
    let delivery_ids: HashSet<&str> = got.iter().map(|h| h.0.as_str()).collect();
    assert_eq!(delivery_ids.len(), 60);
    for h in &got {
        assert_eq!(h.0, otagw::delivery::webhook::delivery_id(&h.1, "wh"));
    }
    // Delivered events are pruned.
    wait_until("an empty outbox", Duration::from_secs(5), || {
        futures::executor::block_on(store.outbox_len()).unwrap_or(1) == 0
    })
    .await;
    worker.shutdown().await;
}

async fn a_dead_gateways_deliveries_are_redelivered_with_the_same_id(b: Backend) {
    let db = TestDb::new(b).await;
    // The first request hangs (the gateway dies while waiting); the rest answer at once.
    let (url, hits) = receiver(|n| {
        if n == 0 {
            Duration::from_secs(30)
        } else {
            Duration::ZERO
        }
    })
    .await;
    let store: Arc<dyn Store> = Arc::new(db.open().await);
    let sql = db.open().await;
    let (_, ids) = account_with_events(&sql, &url, 1).await;
    let dying = OutboxWorker::start(
        store.clone(),
        webhooks(store.clone()),
        config("gw-a", Duration::from_millis(600)),
    );
    wait_until("the first request", Duration::from_secs(10), || {
        !hits_of(&hits).is_empty()
    })
    .await;
    drop(dying); // killed mid-delivery: its row stays leased to gw-a
    let other: Arc<dyn Store> = Arc::new(db.open().await);
    let worker = OutboxWorker::start(
        other.clone(),
        webhooks(other.clone()),
        config("gw-b", Duration::from_secs(30)),
    );
    wait_until("the three events", Duration::from_secs(10), || {
        order(&hits_of(&hits))
            .get(&ids[0])
            .is_some_and(|e| e.len() == 3)
    })
    .await;
    let got = hits_of(&hits);
    assert_eq!(got.len(), 4, "one redelivery: {got:?}");
    assert_eq!(got[0].2, "command.delivered");
    assert_eq!(got[1].2, "command.delivered");
    assert_eq!(got[0].0, got[1].0, "the same delivery id");
    assert_eq!(order(&got)[&ids[0]], IN_ORDER);
    worker.shutdown().await;
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

both!(
    written_before_a_start_delivered_after_in_order,
    a_dead_gateways_deliveries_are_redelivered_with_the_same_id,
);

/// Two gateways on one PostgreSQL: every event delivered exactly once (no lease ran out),
/// each command's in order, the work shared between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgres_deliver_each_event_once() {
    let db = TestDb::new(Backend::Postgres).await;
    // Some requests are slow, so both gateways have work in flight at once.
    let (url, hits) = receiver(|n| Duration::from_millis(if n % 7 == 0 { 40 } else { 0 })).await;
    let sql = db.open().await;
    let (_, ids) = account_with_events(&sql, &url, 150).await;
    let mut workers = Vec::new();
    for owner in ["gw-1", "gw-2"] {
        let store: Arc<dyn Store> = Arc::new(db.open().await);
        workers.push(OutboxWorker::start(
            store.clone(),
            webhooks(store.clone()),
            OutboxConfig {
                window: 16,
                ..config(owner, Duration::from_secs(30))
            },
        ));
    }
    wait_until("450 deliveries", Duration::from_secs(60), || {
        hits_of(&hits).len() >= 450
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = hits_of(&hits);
    let distinct: HashSet<&str> = got.iter().map(|h| h.0.as_str()).collect();
    assert_eq!((got.len(), distinct.len()), (450, 450), "each event once");
    let by_command = order(&got);
    for id in &ids {
        assert_eq!(by_command[id], IN_ORDER, "{id}");
    }
    assert_eq!(sql.outbox_len().await.expect("len"), 0);
    for w in workers {
        w.shutdown().await;
    }
}
