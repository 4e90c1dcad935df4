//! Webhook delivery: the gateway POSTs command (and campaign) events to the URLs an account
//! registered, signed with the webhook's secret.
//!
//! # What an integrator receives
//!
//! ```text
//! POST <url>
//! Content-Type: application/json
//! X-Otagw-Event: command.delivered
//! X-Otagw-Delivery: 2f0c6c1e-…          (same on every attempt of one delivery)
//! X-Otagw-Timestamp: 1718000000123       (ms since the epoch, when this attempt was signed)
//! X-Otagw-Signature: sha256=<hex HMAC-SHA256(secret, "<X-Otagw-Timestamp>.<body>")>
//!
//! {"id":"9b1d…","event":"command.delivered","timestamp":"2024-06-10T06:13:20.000Z","data":{…}}
//! ```
//!
//! The body's `timestamp` is when the event happened (RFC 3339, UTC, milliseconds, as every
//! time on the API); the header's is when the attempt was signed, so a receiver can refuse
//! stale (replayed) requests. Check the signature with [`verify`] (or its equivalent) over the
//! raw body bytes, before parsing them.
//!
//! # Delivery
//!
//! Events come from the store's outbox (see [`crate::events`]): written with the state change
//! they report, they survive a restart and are delivered at least once, in order per command
//! (and per campaign). [`Webhooks::deliver`] hands one event to every webhook of its account
//! that wants it, and returns once each delivery succeeded or was given up.
//!
//! Any 2xx answer is a delivery. Anything else (including a redirect: redirects are not
//! followed), a connection error or a timeout is retried with exponential backoff and jitter
//! (±20 %) up to [`RetryPolicy::attempts`]; then the delivery is given up (logged, counted).
//! A `Retry-After` (seconds) on 429/503 lengthens the wait, up to the policy's maximum.
//! `X-Otagw-Delivery` is derived from the event's id and the webhook's id, so a redelivery
//! (after a restart, or by another gateway when a lease ran out) carries the same id: receivers
//! drop duplicates by it. The body's `id` is the event's id (the same for every webhook).
//!
//! Each webhook has at most [`WebhookLimits::per_webhook_concurrency`] deliveries in progress
//! and all together at most [`WebhookLimits::max_in_flight`] requests, so a slow or dead URL
//! only delays its own deliveries. A webhook registered with `events` gets only those events
//! (see [`events::PUBLISHED`]).
//!
//! Secrets are never logged; URLs are logged without their query and credentials.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::store::{Store, StoreError, Webhook};

/// Event names.
pub mod events {
    pub use crate::events::names::*;
}

/// A delivery outcome, the `result` label of `otagw_webhook_deliveries_total`: `delivered`,
/// `failed_attempt` or `given_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct WebhookOutcome {
    pub result: String,
}

/// Header naming the event.
pub const HEADER_EVENT: &str = "X-Otagw-Event";
/// Header with the delivery's unique id (the same on every attempt of one delivery).
pub const HEADER_DELIVERY: &str = "X-Otagw-Delivery";
/// Header with the time the attempt was signed, ms since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "X-Otagw-Timestamp";
/// Header with the signature, `sha256=<hex>`.
pub const HEADER_SIGNATURE: &str = "X-Otagw-Signature";

/// One event for an account's webhooks.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEvent {
    /// The event's id (the outbox row's): the same on every redelivery.
    pub id: String,
    /// Whose webhooks get it.
    pub account_id: String,
    /// Event name (see [`events`]).
    pub event: String,
    /// Event payload (the body's `data`).
    pub data: serde_json::Value,
    /// When it happened, ms since the Unix epoch (the body's `timestamp`, in RFC 3339).
    pub at: i64,
}

impl WebhookEvent {
    /// An event.
    pub fn new(
        id: impl Into<String>,
        account_id: impl Into<String>,
        event: impl Into<String>,
        data: serde_json::Value,
        at: i64,
    ) -> Self {
        Self {
            id: id.into(),
            account_id: account_id.into(),
            event: event.into(),
            data,
            at,
        }
    }
}

/// How often and how patiently a delivery is attempted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included); 0 counts as 1.
    pub attempts: u32,
    /// Wait after the first failed attempt; doubles after each further one.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// Limit for one attempt (connect, send, answer).
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 6 attempts, waits of 0.5 s doubling up to 30 s, 5 s per attempt.
    fn default() -> Self {
        Self {
            attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The wait (before jitter) after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// Concurrency limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookLimits {
    /// Deliveries (with their retries) in progress for one webhook.
    pub per_webhook_concurrency: usize,
    /// HTTP requests in flight, all webhooks together.
    pub max_in_flight: usize,
    /// How long an account's webhook list is reused before it is looked up again (zero: never).
    pub cache_ttl: Duration,
}

impl Default for WebhookLimits {
    fn default() -> Self {
        Self {
            per_webhook_concurrency: 4,
            max_in_flight: 64,
            cache_ttl: Duration::from_secs(5),
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStats {
    /// Deliveries (one event to one webhook) answered with 2xx.
    pub delivered: u64,
    /// Attempts that failed (non-2xx, connection error, timeout).
    pub failed_attempts: u64,
    /// Deliveries abandoned: all attempts failed, or the URL is unusable.
    pub given_up: u64,
}

/// Looks up an account's webhooks (the simple form of a webhook directory).
pub type WebhookLookup =
    Arc<dyn Fn(&str) -> BoxFuture<'static, Result<Vec<Webhook>, StoreError>> + Send + Sync>;

/// Where the webhooks of an account come from.
#[derive(Clone)]
pub enum WebhookSource {
    /// The store ([`Store::webhooks`]); a failing look-up is retried with the retry policy.
    Store(Arc<dyn Store>),
    /// A function (tests, or a directory other than the store).
    Lookup(WebhookLookup),
}

impl WebhookSource {
    async fn webhooks(&self, account_id: &str) -> Result<Vec<Webhook>, StoreError> {
        match self {
            WebhookSource::Store(store) => store.webhooks(account_id).await,
            WebhookSource::Lookup(lookup) => lookup(account_id).await,
        }
    }
}

/// Why an event could not be handed out (it stays in the outbox and is tried again).
#[derive(Debug, thiserror::Error)]
#[error("looking up the webhooks of account {account}")]
pub struct LookupFailed {
    pub account: String,
    #[source]
    pub source: StoreError,
}

/// The webhook sender: cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Webhooks {
    /// Delivers to the webhooks the store lists for each account.
    pub fn new(store: Arc<dyn Store>, policy: RetryPolicy) -> Self {
        Self::configured(
            WebhookSource::Store(store),
            policy,
            WebhookLimits::default(),
        )
    }

    /// Delivers to the webhooks `lookup` returns for each account.
    pub fn with_lookup(lookup: WebhookLookup, policy: RetryPolicy) -> Self {
        Self::configured(
            WebhookSource::Lookup(lookup),
            policy,
            WebhookLimits::default(),
        )
    }

    /// With explicit limits.
    pub fn configured(source: WebhookSource, policy: RetryPolicy, limits: WebhookLimits) -> Self {
        let limits = WebhookLimits {
            per_webhook_concurrency: limits.per_webhook_concurrency.max(1),
            max_in_flight: limits.max_in_flight.max(1),
            cache_ttl: limits.cache_ttl,
        };
        let client = http_client(&policy);
        Self {
            shared: Arc::new(Shared {
                source,
                client,
                in_flight: Semaphore::new(limits.max_in_flight),
                slots: Mutex::new(HashMap::new()),
                cache: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                outcomes: std::sync::OnceLock::new(),
                policy,
                limits,
            }),
        }
    }

    /// Delivers `event` to each of its account's webhooks that wants it (concurrently, each
    /// with its retries); returns once every delivery succeeded or was given up. Fails only
    /// when the account's webhooks cannot be looked up: nothing was sent.
    pub async fn deliver(&self, event: &WebhookEvent) -> Result<(), LookupFailed> {
        self.shared.deliver_event(event).await
    }

    /// Forgets the account's cached webhook list, so the next event looks it up again (after
    /// a webhook was added or deleted through this gateway; other gateways see the change
    /// within [`WebhookLimits::cache_ttl`]).
    pub fn forget(&self, account_id: &str) {
        lock(&self.shared.cache).remove(account_id);
    }

    /// Counts outcomes in these Prometheus counters too (label `result`: `delivered`,
    /// `failed_attempt`, `given_up`). The first call wins.
    pub fn attach_metrics(&self, outcomes: Family<WebhookOutcome, Counter>) {
        let _ = self.shared.outcomes.set(outcomes);
    }

    /// Counters since start.
    pub fn stats(&self) -> WebhookStats {
        let c = &self.shared.counters;
        WebhookStats {
            delivered: c.delivered.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            given_up: c.given_up.load(Ordering::Relaxed),
        }
    }
}

/// The `X-Otagw-Delivery` of one event to one webhook: a UUID (version 8) from a hash of both
/// ids, so every attempt and every redelivery of it carries the same one.
pub fn delivery_id(event_id: &str, webhook_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(event_id.as_bytes());
    hash.update([0]);
    hash.update(webhook_id.as_bytes());
    let digest = hash.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the `X-Otagw-Signature` value.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    match mac(secret, timestamp, body) {
        Some(mac) => format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
        None => String::new(),
    }
}

/// Checks an `X-Otagw-Signature` value (`sha256=<hex>`) against the secret, the
/// `X-Otagw-Timestamp` value and the raw body, in constant time. (Whether the timestamp is
/// recent enough is the receiver's policy, checked separately.)
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature_header: &str) -> bool {
    let Some(hex_sig) = signature_header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    match mac(secret, timestamp, body) {
        Some(mac) => mac.verify_slice(&expected).is_ok(),
        None => false,
    }
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Option<Hmac<Sha256>> {
    // HMAC takes keys of any length: this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).ok()?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Some(mac)
}

// ---------------------------------------------------------------------------------------------

/// Account entries kept in the look-up cache before expired ones are swept.
const CACHE_SWEEP_AT: usize = 1_024;
/// Per-webhook slot entries kept before idle ones are swept.
const SLOTS_SWEEP_AT: usize = 4_096;

struct Shared {
    source: WebhookSource,
    client: reqwest::Client,
    policy: RetryPolicy,
    limits: WebhookLimits,
    in_flight: Semaphore,
    /// Each webhook's delivery slots, by (account id, webhook id).
    slots: Mutex<HashMap<(String, String), Arc<Semaphore>>>,
    cache: Mutex<HashMap<String, CachedHooks>>,
    counters: Counters,
    /// Prometheus counters, once attached.
    outcomes: std::sync::OnceLock<Family<WebhookOutcome, Counter>>,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed_attempts: AtomicU64,
    given_up: AtomicU64,
}

/// An account's webhooks and when they were looked up.
type CachedHooks = (Instant, Arc<Vec<Webhook>>);

/// One event for one webhook.
struct Delivery {
    id: String,
    webhook: Webhook,
    event: String,
    body: Bytes,
}

enum Failure {
    /// Worth trying again (after at least this long, if the receiver said so).
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help.
    Permanent(String),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn http_client(policy: &RetryPolicy) -> reqwest::Client {
    let built = reqwest::Client::builder()
        .timeout(policy.request_timeout)
        .connect_timeout(policy.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("otagw-webhooks/", env!("CARGO_PKG_VERSION")))
        .build();
    match built {
        Ok(client) => client,
        Err(e) => {
            // Only a TLS back-end that fails to initialise gets here; the default client
            // (without the timeouts) is the best left.
            tracing::error!(error = %e, "webhook HTTP client: falling back to defaults");
            reqwest::Client::new()
        }
    }
}

/// A URL for the log: scheme, host, port and path (no credentials, query or fragment).
fn redacted(url: &str) -> String {
    match Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port() {
                Some(port) => format!("{}://{}:{}{}", u.scheme(), host, port, u.path()),
                None => format!("{}://{}{}", u.scheme(), host, u.path()),
            }
        }
        Err(_) => "<invalid URL>".to_string(),
    }
}

impl Shared {
    fn count(&self, counter: &AtomicU64, result: &str) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(outcomes) = self.outcomes.get() {
            outcomes
                .get_or_create(&WebhookOutcome {
                    result: result.to_string(),
                })
                .inc();
        }
    }

    /// Hands the event to each wanted webhook and waits for every delivery to end.
    async fn deliver_event(&self, event: &WebhookEvent) -> Result<(), LookupFailed> {
        let hooks = self.webhooks_for(&event.account_id).await?;
        // A webhook with an event filter gets only the events it names.
        let wanted: Vec<&Webhook> = hooks
            .iter()
            .filter(|h| h.events.is_empty() || h.events.contains(&event.event))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        // RFC 3339 as every time the API writes (the signing header keeps milliseconds).
        let timestamp = match crate::rfc3339::format_ms(event.at) {
            Ok(t) => serde_json::Value::from(t),
            Err(e) => {
                // Out of RFC 3339's range: sent as milliseconds rather than not at all.
                tracing::error!(error = %e, event = %event.event, "webhook body: bad time");
                serde_json::Value::from(event.at)
            }
        };
        let body = serde_json::json!({
            "id": event.id,
            "event": event.event,
            "timestamp": timestamp,
            "data": event.data,
        });
        // serde_json::Value always serialises.
        let body = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        let deliveries = wanted.into_iter().map(|hook| {
            let delivery = Delivery {
                id: delivery_id(&event.id, &hook.id),
                webhook: hook.clone(),
                event: event.event.clone(),
                body: body.clone(),
            };
            async move {
                let slots = self.slots_of(&delivery.webhook);
                let Ok(_slot) = slots.acquire().await else {
                    return; // never closed
                };
                self.deliver(delivery).await;
            }
        });
        futures::future::join_all(deliveries).await;
        Ok(())
    }

    /// The webhook's delivery slots.
    fn slots_of(&self, hook: &Webhook) -> Arc<Semaphore> {
        let per_webhook = self.limits.per_webhook_concurrency;
        let mut slots = lock(&self.slots);
        if slots.len() >= SLOTS_SWEEP_AT {
            slots.retain(|_, s| s.available_permits() < per_webhook);
        }
        slots
            .entry((hook.account_id.clone(), hook.id.clone()))
            .or_insert_with(|| Arc::new(Semaphore::new(per_webhook)))
            .clone()
    }

    /// The account's webhooks, from the cache or the source.
    async fn webhooks_for(&self, account: &str) -> Result<Arc<Vec<Webhook>>, LookupFailed> {
        let ttl = self.limits.cache_ttl;
        if !ttl.is_zero() {
            if let Some((at, hooks)) = lock(&self.cache).get(account) {
                if at.elapsed() < ttl {
                    return Ok(hooks.clone());
                }
            }
        }
        let hooks = match self.source.webhooks(account).await {
            Ok(hooks) => Arc::new(hooks),
            Err(source) => {
                return Err(LookupFailed {
                    account: account.to_string(),
                    source,
                })
            }
        };
        if !ttl.is_zero() {
            let mut cache = lock(&self.cache);
            if cache.len() >= CACHE_SWEEP_AT {
                cache.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            cache.insert(account.to_string(), (Instant::now(), hooks.clone()));
        }
        Ok(hooks)
    }

    /// Delivers one event to one webhook, with retries.
    async fn deliver(&self, delivery: Delivery) {
        let hook = &delivery.webhook;
        let url_for_log = redacted(&hook.url);
        let url = match Url::parse(&hook.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => url,
            _ => {
                self.count(&self.counters.given_up, "given_up");
                tracing::error!(
                    webhook = %hook.id,
                    account = %hook.account_id,
                    url = %url_for_log,
                    "webhook URL is not an http(s) URL; delivery given up"
                );
                return;
            }
        };
        let attempts = self.policy.attempts.max(1);
        for attempt in 1..=attempts {
            let outcome = match self.in_flight.acquire().await {
                Ok(_permit) => self.attempt(&url, &delivery).await,
                Err(_) => return, // never closed
            };
            let (reason, retry_after, permanent) = match outcome {
                Ok(status) => {
                    self.count(&self.counters.delivered, "delivered");
                    tracing::debug!(
                        webhook = %hook.id,
                        delivery = %delivery.id,
                        event = %delivery.event,
                        attempt,
                        status = status.as_u16(),
                        "webhook delivered"
                    );
                    return;
                }
                Err(Failure::Retry {
                    reason,
                    retry_after,
                }) => (reason, retry_after, false),
                Err(Failure::Permanent(reason)) => (reason, None, true),
            };
            self.count(&self.counters.failed_attempts, "failed_attempt");
            if permanent || attempt == attempts {
                self.count(&self.counters.given_up, "given_up");
                tracing::error!(
                    webhook = %hook.id,
                    account = %hook.account_id,
                    url = %url_for_log,
                    delivery = %delivery.id,
                    event = %delivery.event,
                    attempts = attempt,
                    error = %reason,
                    "webhook delivery given up"
                );
                return;
            }
            let wait = self.wait(attempt, retry_after);
            tracing::warn!(
                webhook = %hook.id,
                url = %url_for_log,
                delivery = %delivery.id,
                event = %delivery.event,
                attempt,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %reason,
                "webhook attempt failed"
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// One POST.
    async fn attempt(&self, url: &Url, delivery: &Delivery) -> Result<StatusCode, Failure> {
        let event = HeaderValue::from_str(&delivery.event)
            .map_err(|_| Failure::Permanent("event name is not a valid header value".into()))?;
        let timestamp = now_ms();
        let signature = sign(&delivery.webhook.secret, timestamp, &delivery.body);
        let sent = self
            .client
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(HEADER_EVENT, event)
            .header(HEADER_DELIVERY, delivery.id.as_str())
            .header(HEADER_TIMESTAMP, timestamp.to_string())
            .header(HEADER_SIGNATURE, signature)
            .body(delivery.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Ok(status);
                }
                let retry_after = if matches!(
                    status,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
                ) {
                    response
                        .headers()
                        .get(RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs)
                } else {
                    None
                };
                Err(Failure::Retry {
                    reason: format!("HTTP {status}"),
                    retry_after,
                })
            }
            Err(e) => {
                let permanent = e.is_builder();
                // Without the URL: it may carry credentials.
                let reason = error_chain(&e.without_url());
                if permanent {
                    Err(Failure::Permanent(reason))
                } else {
                    Err(Failure::Retry {
                        reason,
                        retry_after: None,
                    })
                }
            }
        }
    }

    /// Backoff after failed attempt `attempt`, with ±20 % jitter, at least what the receiver
    /// asked for, at most the policy's maximum.
    fn wait(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let base = self.policy.backoff(attempt);
        let factor: f64 = rand::thread_rng().gen_range(0.8..=1.2);
        let jittered = base.mul_f64(factor);
        let wanted = match retry_after {
            Some(asked) => jittered.max(asked),
            None => jittered,
        };
        wanted.min(self.policy.max_backoff)
    }
}

/// An error with its causes ("error sending request: ...: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_round_trip() {
        let sig = sign(b"secret", 1_700_000_000_000, b"{\"a\":1}");
        assert!(sig.starts_with("sha256="));
        assert_eq!(sig.len(), "sha256=".len() + 64);
        assert!(verify(b"secret", 1_700_000_000_000, b"{\"a\":1}", &sig));
        assert!(!verify(b"other", 1_700_000_000_000, b"{\"a\":1}", &sig));
        assert!(!verify(b"secret", 1_700_000_000_001, b"{\"a\":1}", &sig));
        assert!(!verify(b"secret", 1_700_000_000_000, b"{\"a\":2}", &sig));
        assert!(!verify(
            b"secret",
            1_700_000_000_000,
            b"{\"a\":1}",
            "sha256=zz"
        ));
        assert!(!verify(
            b"secret",
            1_700_000_000_000,
            b"{\"a\":1}",
            &sig[7..]
        ));
    }

    #[test]
    fn known_vector() {
        // printf '1.body' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", 1, b"body"),
            "sha256=91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(500));
        assert_eq!(p.backoff(2), Duration::from_secs(1));
        assert_eq!(p.backoff(3), Duration::from_secs(2));
        assert_eq!(p.backoff(7), Duration::from_secs(30));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn redacts_credentials_and_query() {
        assert_eq!(
            redacted("https://user:pw@example.com:8443/hook?token=abc#x"),
            "https://example.com:8443/hook"
        );
        assert_eq!(redacted("not a url"), "<invalid URL>");
    }
}
