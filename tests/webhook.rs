//! Webhook delivery against real local HTTP receivers (axum on 127.0.0.1:0): signed requests
//! with the documented headers, retries with backoff, giving up, isolation of a dead or hung
//! URL, delivery ids stable across redeliveries, a failed look-up sending nothing. (The outbox
//! that feeds it: `tests/outbox.rs`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use otagw::api::webhook::{
    delivery_id, events, sign, verify, RetryPolicy, WebhookEvent, WebhookLimits, WebhookLookup,
    WebhookSource, Webhooks,
};
use otagw::store::{StoreError, Webhook};
use serde_json::json;

/// One request a receiver got.
#[derive(Clone)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name} missing: {:?}", self.headers))
            .to_str()
            .expect("header is text")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("body is JSON")
    }
}

type Responder = Arc<dyn Fn(usize) -> StatusCode + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    log: Arc<Mutex<Vec<Received>>>,
    respond: Responder,
}

/// A local HTTP server recording every POST and answering the n-th (0-based) with
/// `respond(n)`.
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(respond: impl Fn(usize) -> StatusCode + Send + Sync + 'static) -> Receiver {
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            log: log.clone(),
            respond: Arc::new(respond),
        };
        let router = Router::new()
            .route(
                "/hook",
                post(
                    |State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes| async move {
                        let n = {
                            let mut log = state.log.lock().expect("log");
                            log.push(Received {
                                headers,
                                body,
                                at: Instant::now(),
                            });
                            log.len() - 1
                        };
                        (state.respond)(n)
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            log,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().expect("log").clone()
    }

    fn count(&self) -> usize {
        self.log.lock().expect("log").len()
    }
}

fn hook(id: &str, account: &str, url: &str, secret: &[u8]) -> Webhook {
    Webhook {
        id: id.to_string(),
        account_id: account.to_string(),
        url: url.to_string(),
        secret: secret.to_vec(),
        events: Vec::new(),
    }
}

/// The directory: every account's webhooks from a fixed list.
fn lookup(hooks: Vec<Webhook>) -> WebhookLookup {
    Arc::new(move |account: &str| {
        let mine: Vec<Webhook> = hooks
            .iter()
            .filter(|h| h.account_id == account)
            .cloned()
            .collect();
        Box::pin(async move { Ok(mine) })
    })
}

fn event(account: &str, name: &str, data: serde_json::Value, at: i64) -> WebhookEvent {
    WebhookEvent {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.to_string(),
        event: name.to_string(),
        data,
        at,
    }
}

/// Hands the event over without waiting, as the outbox worker's tasks do.
fn publish(webhooks: &Webhooks, event: WebhookEvent) {
    let webhooks = webhooks.clone();
    tokio::spawn(async move {
        let _ = webhooks.deliver(&event).await;
    });
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn quick_policy(attempts: u32, initial_ms: u64) -> RetryPolicy {
    RetryPolicy {
        attempts,
        initial_backoff: Duration::from_millis(initial_ms),
        max_backoff: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn signed_request_with_the_documented_headers_and_body() {
    let a = Receiver::start(|_| StatusCode::OK).await;
    let b = Receiver::start(|_| StatusCode::NO_CONTENT).await;
    let other_account = Receiver::start(|_| StatusCode::OK).await;
    let webhooks = Webhooks::with_lookup(
        lookup(vec![
            hook("wh-a", "acct-1", &a.url, b"secret-a"),
            hook("wh-b", "acct-1", &b.url, b"secret-b"),
            hook("wh-c", "acct-2", &other_account.url, b"secret-c"),
        ]),
        RetryPolicy::default(),
    );

    let data =
        json!({"command_id": "cmd-1", "iccid": "8949000000000000001", "status": "DELIVERED"});
    let before = now_ms();
    let sent = event(
        "acct-1",
        events::COMMAND_DELIVERED,
        data.clone(),
        1_718_000_000_000,
    );
    publish(&webhooks, sent.clone());
    wait_until("both deliveries", Duration::from_secs(5), || {
        webhooks.stats().delivered == 2
    })
    .await;

    let ra = a.received();
    let rb = b.received();
    assert_eq!((ra.len(), rb.len()), (1, 1));
    assert_eq!(
        other_account.count(),
        0,
        "another account's webhook got the event"
    );

    for (r, secret) in [(&ra[0], &b"secret-a"[..]), (&rb[0], &b"secret-b"[..])] {
        // Header names as documented (HTTP header names are case-insensitive).
        assert_eq!(r.header("Content-Type"), "application/json");
        assert_eq!(r.header("X-Otagw-Event"), "command.delivered");
        assert_eq!(r.header("X-Otagw-Delivery").len(), 36, "a UUID");
        let ts: i64 = r
            .header("X-Otagw-Timestamp")
            .parse()
            .expect("timestamp is ms");
        assert!(
            ts >= before && ts <= now_ms(),
            "timestamp {ts} is the signing time"
        );
        let signature = r.header("X-Otagw-Signature");
        assert!(signature.starts_with("sha256="), "{signature}");

        // The signature covers "<timestamp>.<raw body>" with the webhook's secret.
        assert!(verify(secret, ts, &r.body, signature));
        assert_eq!(sign(secret, ts, &r.body), signature);
        assert!(!verify(b"another secret", ts, &r.body, signature));
        assert!(!verify(secret, ts + 1, &r.body, signature));
        let mut tampered = r.body.to_vec();
        tampered.push(b' ');
        assert!(!verify(secret, ts, &tampered, signature));

        assert_eq!(
            r.json(),
            json!({"id": sent.id, "event": "command.delivered", "timestamp": "2024-06-10T06:13:20.000Z", "data": data})
        );
    }
    // Derived from the event and the webhook: a redelivery carries the same id.
    assert_eq!(
        ra[0].header("X-Otagw-Delivery"),
        delivery_id(&sent.id, "wh-a")
    );
    assert_eq!(
        rb[0].header("X-Otagw-Delivery"),
        delivery_id(&sent.id, "wh-b")
    );
    assert_ne!(
        ra[0].header("X-Otagw-Delivery"),
        rb[0].header("X-Otagw-Delivery"),
        "each delivery has its own id"
    );
    let stats = webhooks.stats();
    assert_eq!((stats.failed_attempts, stats.given_up), (0, 0));
}

#[tokio::test]
async fn failing_twice_then_ok_is_delivered_on_the_third_attempt_after_backoff() {
    let r = Receiver::start(|n| {
        if n < 2 {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        }
    })
    .await;
    let webhooks = Webhooks::with_lookup(
        lookup(vec![hook("wh", "acct", &r.url, b"k")]),
        quick_policy(6, 100),
    );
    publish(
        &webhooks,
        event("acct", events::COMMAND_POR, json!({"n": 1}), 1),
    );
    wait_until("delivery", Duration::from_secs(5), || {
        webhooks.stats().delivered == 1
    })
    .await;
    // Nothing more comes after a success.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let got = r.received();
    assert_eq!(got.len(), 3);
    let stats = webhooks.stats();
    assert_eq!(
        (stats.delivered, stats.failed_attempts, stats.given_up),
        (1, 2, 0)
    );

    // One delivery: the same id and body on every attempt, each attempt signed anew.
    for attempt in &got {
        assert_eq!(
            attempt.header("X-Otagw-Delivery"),
            got[0].header("X-Otagw-Delivery")
        );
        assert_eq!(attempt.body, got[0].body);
        let ts: i64 = attempt.header("X-Otagw-Timestamp").parse().expect("ms");
        assert!(verify(
            b"k",
            ts,
            &attempt.body,
            attempt.header("X-Otagw-Signature")
        ));
    }

    // Backoff: 100 ms then 200 ms, each ±20 % jitter (plus scheduling slack above).
    let first_wait = got[1].at - got[0].at;
    let second_wait = got[2].at - got[1].at;
    assert!(
        first_wait >= Duration::from_millis(75) && first_wait < Duration::from_millis(500),
        "first wait {first_wait:?}, expected about 100 ms"
    );
    assert!(
        second_wait >= Duration::from_millis(155) && second_wait < Duration::from_millis(700),
        "second wait {second_wait:?}, expected about 200 ms"
    );
    assert!(
        second_wait > first_wait,
        "{first_wait:?} then {second_wait:?}: not doubling"
    );
}

#[tokio::test]
async fn always_failing_receiver_is_given_up_after_the_policy_attempts() {
    let r = Receiver::start(|_| StatusCode::SERVICE_UNAVAILABLE).await;
    let webhooks = Webhooks::with_lookup(
        lookup(vec![hook("wh", "acct", &r.url, b"k")]),
        quick_policy(4, 20),
    );
    publish(
        &webhooks,
        event("acct", events::COMMAND_COMPLETED, json!({}), 1),
    );
    wait_until("giving up", Duration::from_secs(5), || {
        webhooks.stats().given_up == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(r.count(), 4, "exactly the policy's attempts");
    let stats = webhooks.stats();
    assert_eq!(
        (stats.delivered, stats.failed_attempts, stats.given_up),
        (0, 4, 1)
    );
}

#[tokio::test]
async fn dead_and_hung_urls_do_not_hold_up_a_healthy_webhook() {
    // A closed port (connection refused) ...
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        format!("http://{addr}/hook")
    };
    // ... and a server that accepts connections and never answers.
    let hung_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hung = format!("http://{}/hook", hung_listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hung_listener.accept().await {
            held.push(socket);
        }
    });
    let healthy = Receiver::start(|_| StatusCode::OK).await;

    let webhooks = Webhooks::with_lookup(
        lookup(vec![
            hook("dead", "acct", &dead, b"k1"),
            hook("hung", "acct", &hung, b"k2"),
            hook("healthy", "acct", &healthy.url, b"k3"),
        ]),
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
        },
    );
    let started = Instant::now();
    for i in 0..20 {
        publish(
            &webhooks,
            event("acct", events::COMMAND_ACCEPTED, json!({"i": i}), i),
        );
    }
    // All 20 reach the healthy webhook well before the hung one's first timeout (3 s).
    wait_until("healthy deliveries", Duration::from_secs(10), || {
        healthy.count() == 20
    })
    .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "healthy webhook held up: {took:?}"
    );
    let mut seen: Vec<i64> = healthy
        .received()
        .iter()
        .map(|r| r.json()["data"]["i"].as_i64().expect("i"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    // The dead URL is being retried meanwhile.
    wait_until(
        "failed attempts to the dead URL",
        Duration::from_secs(5),
        || webhooks.stats().failed_attempts >= 20,
    )
    .await;
    assert_eq!(webhooks.stats().delivered, 20);
}

#[tokio::test]
async fn a_failed_look_up_sends_nothing_and_says_so() {
    let r = Receiver::start(|_| StatusCode::OK).await;
    let hooks = vec![hook("wh", "acct", &r.url, b"k")];
    // The directory fails its first two look-ups (as a store that is down would).
    let lookups = Arc::new(AtomicUsize::new(0));
    let source = {
        let lookups = lookups.clone();
        let directory: WebhookLookup = Arc::new(move |_account: &str| {
            let n = lookups.fetch_add(1, Ordering::SeqCst);
            let hooks = hooks.clone();
            Box::pin(async move {
                if n < 2 {
                    Err(StoreError::Database("connection refused".into()))
                } else {
                    Ok(hooks)
                }
            })
        });
        WebhookSource::Lookup(directory)
    };
    let webhooks = Webhooks::configured(
        source,
        quick_policy(3, 20),
        WebhookLimits {
            cache_ttl: Duration::ZERO,
            ..WebhookLimits::default()
        },
    );
    let e = event("acct", events::CAMPAIGN_PROGRESS, json!({"n": 1}), 1);
    for _ in 0..2 {
        let failed = webhooks.deliver(&e).await.expect_err("the look-up failed");
        assert_eq!(failed.account, "acct");
    }
    assert_eq!(r.count(), 0);
    webhooks.deliver(&e).await.expect("delivered");
    assert_eq!(r.count(), 1);
    assert_eq!(webhooks.stats().delivered, 1);
}

#[tokio::test]
async fn unusable_url_is_given_up_at_once() {
    let webhooks = Webhooks::with_lookup(
        lookup(vec![hook("wh", "acct", "ftp://example.invalid/x", b"k")]),
        quick_policy(5, 20),
    );
    publish(
        &webhooks,
        event("acct", events::COMMAND_ACCEPTED, json!({}), 1),
    );
    wait_until("giving up", Duration::from_secs(5), || {
        webhooks.stats().given_up == 1
    })
    .await;
    assert_eq!(webhooks.stats().failed_attempts, 0);
}
