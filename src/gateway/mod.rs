//! The gateway at run time: claims commands from the store, runs them through the pipeline,
//! records their outcomes, follows delivery reports, matches PoRs that reach it after a
//! restart or for another gateway's commands, renews its leases and expires stale commands.
//! Runtime glue only: what a PoR means is in [`outcome`], the steps are in [`crate::pipeline`].

pub mod catp;
pub mod https;
pub mod metrics;
pub mod outcome;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_transport::{InboundAck, Transport};
use tokio::sync::{mpsc, Notify};
use tower::ServiceExt;

use crate::command::{CommandStatus, CommandType, ErrorCode, OtaCommandRequest};
use crate::dispatch::{DispatchNote, OtaDispatcher};
use crate::events::webhook::Webhooks;
use crate::events::Event;
use crate::pipeline::limit::RateLimiter;
use crate::pipeline::{
    self, Done, Job, JobError, MessageLog, Pipeline, PipelineConfig, PriorityGate, RetryPolicy,
    Route, Transports,
};
use crate::security::{CcScope, ResponsePacketView, Scp80Keys, Spi};
use crate::store::{CommandRecord, Millis, NewKeys, Store, StoreError, Transition};

pub use metrics::GatewayMetrics;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A transport and its limits.
pub struct TransportSetup {
    /// Name (`sms`, ...).
    pub name: String,
    /// The transport.
    pub transport: Arc<dyn Transport>,
    /// Commands in flight (sent, waiting for their PoR) at most.
    pub concurrency: usize,
    /// Sends per second at most.
    pub rate: Option<f64>,
}

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// This gateway's id in the store (stable across restarts, so a restart takes its
    /// commands back at once; distinct per gateway sharing a database).
    pub id: String,
    /// Commands claimed per query.
    pub claim_batch: u32,
    /// Commands held in memory at most (running or waiting for their card).
    pub max_in_flight: usize,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// How often to look for work when not woken.
    pub poll_interval: Duration,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// HTTPS (SCP81) commands; `None`: none are sent (they fall back to SMS).
    pub https: Option<https::HttpsOptions>,
    /// A CAT_TP command whose card opened no link after every push and send goes over SMS
    /// (secured anew: a new counter, SMS framing) instead of failing with TIMEOUT.
    pub catp_fallback_to_sms: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            id: "otagw".into(),
            claim_batch: 200,
            max_in_flight: 20_000,
            lease: Duration::from_secs(30),
            poll_interval: Duration::from_millis(250),
            pipeline: PipelineConfig::default(),
            https: None,
            catp_fallback_to_sms: false,
        }
    }
}

#[derive(Default)]
struct Parking {
    // Cards with a command running here: one at a time per card, so counters reach the card in
    // the order they were reserved.
    busy_cards: HashSet<String>,
    // Commands running or parked here, so a claim that comes back (lease renewed late) is not
    // run twice.
    held: HashSet<(String, String)>,
    waiting: HashMap<String, VecDeque<CommandRecord>>,
    parked: usize,
}

struct Shared {
    store: Arc<dyn Store>,
    transports: Arc<Transports>,
    pipeline: Pipeline,
    log: Arc<MessageLog>,
    config: GatewayConfig,
    webhooks: Option<Webhooks>,
    metrics: Arc<GatewayMetrics>,
    parking: Mutex<Parking>,
    in_flight: AtomicUsize,
    wake: Notify,
    stopping: AtomicBool,
    batch_options: Mutex<HashMap<String, BatchOptions>>,
    // Where notes about messages that are not commands' (campaign messages) go.
    note_tap: Mutex<NoteTap>,
    https: Option<Arc<https::HttpsDriver>>,
}

/// Where notes about campaign messages go; kept until the campaign runner takes them (PoRs of
/// packets sent before a restart come in as soon as the SMPP session binds).
#[derive(Default)]
struct NoteTap {
    tap: Option<mpsc::UnboundedSender<DispatchNote>>,
    early: Vec<DispatchNote>,
}

/// Options of a batch, as the engine applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchOptions {
    parallel: bool,
    stop_on_error: bool,
    max_retries: Option<u32>,
}

/// A running gateway.
pub struct Gateway {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Gateway {
    /// Starts the engine over a store and transports.
    pub async fn start(
        store: Arc<dyn Store>,
        transports: Vec<TransportSetup>,
        webhooks: Option<Webhooks>,
        config: GatewayConfig,
    ) -> Result<Arc<Gateway>, StoreError> {
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let mut routes = Transports::new();
        for t in transports {
            let dispatcher = Arc::new(OtaDispatcher::new(t.transport));
            dispatcher.set_observer(notes_tx.clone());
            routes.add(Route {
                name: t.name,
                dispatcher,
                gate: PriorityGate::new(t.concurrency),
                rate: Arc::new(RateLimiter::new(t.rate)),
            });
        }
        if routes.knows("sms") {
            routes.fallback = Some("sms".into());
        }
        let https = match (&config.https, store.scp81()) {
            (Some(options), Some(_)) if routes.knows("sms") => {
                routes
                    .script_limits
                    .insert("https".into(), options.max_script_bytes);
                Some(Arc::new(https::HttpsDriver::new(
                    options.clone(),
                    store.clone(),
                )))
            }
            (Some(_), _) => {
                tracing::warn!("HTTPS configured but no SMS route for triggers or no SCP81 store: HTTPS commands are refused");
                None
            }
            _ => None,
        };
        let transports = Arc::new(routes);
        // Message ids differ across restarts: the clock in the high bits.
        let log = Arc::new(MessageLog::new((now_ms() as u64) << 16));
        let pipeline = pipeline::build(
            store.clone(),
            transports.clone(),
            log.clone(),
            &config.pipeline,
        );
        // Take back at once what this gateway held before a restart.
        store.renew_leases(&config.id, now_ms() - 1).await?;
        let shared = Arc::new(Shared {
            store,
            transports,
            pipeline,
            log,
            config,
            webhooks,
            metrics: Arc::new(GatewayMetrics::new()),
            parking: Mutex::new(Parking::default()),
            in_flight: AtomicUsize::new(0),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            batch_options: Mutex::new(HashMap::new()),
            note_tap: Mutex::new(NoteTap::default()),
            https,
        });
        let gateway = Arc::new(Gateway {
            shared: shared.clone(),
            tasks: Mutex::new(Vec::new()),
        });
        let mut tasks = vec![
            tokio::spawn(engine(shared.clone())),
            tokio::spawn(notes(shared.clone(), notes_rx)),
            tokio::spawn(housekeeping(shared.clone())),
        ];
        if let Ok(mut t) = gateway.tasks.lock() {
            t.append(&mut tasks);
        }
        Ok(gateway)
    }

    /// Passes the network's notes about messages that are not commands' (campaign messages,
    /// sent through the same dispatchers) to `tap`.
    pub fn set_note_tap(&self, tap: mpsc::UnboundedSender<DispatchNote>) {
        if let Ok(mut t) = self.shared.note_tap.lock() {
            for note in t.early.drain(..) {
                let _ = tap.send(note);
            }
            t.tap = Some(tap);
        }
    }

    /// The SCP81 sessions the admin server serves (when HTTPS is on).
    pub fn https_sessions(&self) -> Option<Arc<https::Scp81Sessions>> {
        self.shared.https.as_ref().map(|h| h.sessions.clone())
    }

    /// Wakes the engine (new commands stored).
    pub fn notify(&self) {
        self.shared.wake.notify_one();
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The transports.
    pub fn transports(&self) -> &Arc<Transports> {
        &self.shared.transports
    }

    /// Whether a command asking for `transport` would go over it here (and not be sent by
    /// SMS in its place): SMS and CAT_TP when configured, HTTPS when its driver runs.
    pub fn offers(&self, transport: &str) -> bool {
        match transport {
            "https" => self.shared.https.is_some(),
            other => self.shared.transports.knows(other),
        }
    }

    /// The transports this gateway offers, of [`crate::api::commands::TRANSPORTS`].
    pub fn offered(&self) -> Vec<&'static str> {
        crate::api::commands::TRANSPORTS
            .into_iter()
            .filter(|t| self.offers(t))
            .collect()
    }

    /// This gateway's id.
    pub fn id(&self) -> &str {
        &self.shared.config.id
    }

    /// Metrics.
    pub fn metrics(&self) -> &Arc<GatewayMetrics> {
        &self.shared.metrics
    }

    /// Webhooks.
    pub fn webhooks(&self) -> Option<&Webhooks> {
        self.shared.webhooks.as_ref()
    }

    /// Send attempts this gateway made (or waits for a PoR of, after a restart).
    pub fn sends(&self) -> u64 {
        self.shared.log.allocated()
    }

    /// Commands held in memory (running or parked).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Stops claiming and aborts running work (its commands stay in the store, held under
    /// leases that run out, and resume on the next start).
    pub async fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        let tasks = self
            .tasks
            .lock()
            .map(|mut t| std::mem::take(&mut *t))
            .unwrap_or_default();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        for route in self.shared.transports.routes() {
            let _ = route;
        }
    }
}

async fn engine(shared: Arc<Shared>) {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let room = shared
            .config
            .max_in_flight
            .saturating_sub(shared.in_flight.load(Ordering::Relaxed));
        let mut full_batch = false;
        if room > 0 {
            let limit = (room as u32).min(shared.config.claim_batch);
            let now = now_ms();
            let lease_until = now + shared.config.lease.as_millis() as Millis;
            match shared
                .store
                .claim_commands(&shared.config.id, limit, now, lease_until)
                .await
            {
                Ok(records) => {
                    full_batch = records.len() as u32 == limit;
                    for r in records {
                        shared.in_flight.fetch_add(1, Ordering::Relaxed);
                        admit(&shared, r);
                    }
                }
                Err(e) => tracing::warn!("claiming commands: {e}"),
            }
        }
        if full_batch {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
}

/// Starts a claimed command, or parks it behind the command running for its card.
fn admit(shared: &Arc<Shared>, record: CommandRecord) {
    {
        let Ok(mut p) = shared.parking.lock() else {
            return;
        };
        if !p
            .held
            .insert((record.account_id.clone(), record.id.clone()))
        {
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if p.busy_cards.contains(&record.iccid) {
            p.waiting
                .entry(record.iccid.clone())
                .or_default()
                .push_back(record);
            p.parked += 1;
            return;
        }
        p.busy_cards.insert(record.iccid.clone());
    }
    tokio::spawn(run(shared.clone(), record));
}

/// The card is free again: its next parked command starts.
fn release_card(shared: &Arc<Shared>, iccid: &str) {
    let next = {
        let Ok(mut p) = shared.parking.lock() else {
            return;
        };
        let next = p.waiting.get_mut(iccid).and_then(|q| q.pop_front());
        if p.waiting.get(iccid).is_some_and(|q| q.is_empty()) {
            p.waiting.remove(iccid);
        }
        if next.is_some() {
            p.parked -= 1;
        } else {
            p.busy_cards.remove(iccid);
        }
        next
    };
    if let Some(r) = next {
        tokio::spawn(run(shared.clone(), r));
    }
}

async fn batch_options(shared: &Shared, record: &CommandRecord) -> Option<BatchOptions> {
    let batch_id = record.batch_id.as_ref()?;
    if let Some(o) = shared
        .batch_options
        .lock()
        .ok()
        .and_then(|m| m.get(batch_id).copied())
    {
        return Some(o);
    }
    let batch = shared
        .store
        .batch(&record.account_id, batch_id)
        .await
        .ok()
        .flatten()?;
    let o = &batch.options;
    let options = BatchOptions {
        parallel: o.get("parallel").and_then(|v| v.as_bool()).unwrap_or(true),
        stop_on_error: o
            .get("stopOnError")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        max_retries: o
            .get("maxRetries")
            .and_then(|v| v.as_u64())
            .map(|n| n.min(20) as u32),
    };
    if let Ok(mut m) = shared.batch_options.lock() {
        m.insert(batch_id.clone(), options);
    }
    Some(options)
}

/// Whether every command before this one in its (sequential) batch has ended.
async fn earlier_done(shared: &Shared, record: &CommandRecord) -> bool {
    let Some(batch_id) = &record.batch_id else {
        return true;
    };
    match shared
        .store
        .batch_commands(&record.account_id, batch_id)
        .await
    {
        Ok(commands) => commands
            .iter()
            .take_while(|c| c.id != record.id)
            .all(|c| c.status.is_terminal()),
        Err(_) => false,
    }
}

async fn run(shared: Arc<Shared>, record: CommandRecord) {
    let iccid = record.iccid.clone();
    let mut retry = shared.config.pipeline.retry;
    let options = batch_options(&shared, &record).await;
    // The command's own retries (its transport object) over its batch's, over the gateway's.
    let retries = crate::command::transport::stored_overrides(&record.request)
        .retries
        .or(options.and_then(|o| o.max_retries));
    if let Some(n) = retries {
        retry = RetryPolicy {
            attempts: n + 1,
            ..retry
        };
    }
    if let Some(o) = options {
        if !o.parallel
            && !record.status.is_terminal()
            && record.secured.is_none()
            && !earlier_done(&shared, &record).await
        {
            // Sequential batch, an earlier command not ended: go to the back of the card's
            // queue and let the card's other commands (maybe that earlier one) go first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            if let Ok(mut p) = shared.parking.lock() {
                p.waiting
                    .entry(iccid.clone())
                    .or_default()
                    .push_back(record);
                p.parked += 1;
            }
            release_card(&shared, &iccid);
            return;
        }
    }
    let ended = match &shared.https {
        Some(h) if record.transport == "https" => h.run(&shared, &record, retry).await,
        _ => run_pipeline(&shared, &record, retry).await,
    };
    if ended == Some(CommandStatus::Failed) {
        if let Some(o) = options.filter(|o| o.stop_on_error) {
            stop_batch(&shared, &record, o).await;
        }
    }
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    if let Ok(mut p) = shared.parking.lock() {
        p.held
            .remove(&(record.account_id.clone(), record.id.clone()));
    }
    release_card(&shared, &iccid);
    shared.wake.notify_one();
}

/// Runs a command through the SCP80 pipeline and records how it ended.
async fn run_pipeline(
    shared: &Arc<Shared>,
    record: &CommandRecord,
    retry: RetryPolicy,
) -> Option<CommandStatus> {
    let job = Job::new(record.clone(), &shared.config.id, retry);
    let result = shared.pipeline.clone().oneshot(job).await;
    match result {
        Ok(done) => finish_with_por(shared, &done).await,
        Err(JobError::Fail { code, message }) => {
            fail(shared, record, code, message).await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Timeout(d)) => {
            tracing::warn!(command = %record.id, iccid = %record.iccid, "no PoR within {d:?}");
            fail(
                shared,
                record,
                ErrorCode::Timeout,
                format!("no PoR within {d:?}"),
            )
            .await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Unreached(message)) => {
            if let Some((sms, retry)) = catp_fallback(shared, record, retry, &message).await {
                // Boxed: the fallback runs the pipeline again, for the SMS transport.
                return Box::pin(run_pipeline(shared, &sms, retry)).await;
            }
            fail(shared, record, ErrorCode::Timeout, message).await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Transport(t)) => {
            fail(shared, record, ErrorCode::TransportError, t.to_string()).await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Skipped(why)) => {
            tracing::debug!(command = %record.id, "skipped: {why}");
            None
        }
        Err(JobError::Store(e)) => {
            tracing::warn!(command = %record.id, "store failed, left for a later claim: {e}");
            let _ = shared.store.release(&record.id, &shared.config.id).await;
            None
        }
    }
}

/// A CAT_TP command that never reached its card (no link after every push and send), where
/// the fallback is on and SMS is configured: over SMS (see [`reroute_to_sms`]).
async fn catp_fallback(
    shared: &Arc<Shared>,
    record: &CommandRecord,
    retry: RetryPolicy,
    why: &str,
) -> Option<(CommandRecord, RetryPolicy)> {
    if record.transport != "catp" || !shared.config.catp_fallback_to_sms {
        return None;
    }
    reroute_to_sms(
        shared,
        record,
        retry,
        &format!("{why}: the command goes over SMS"),
    )
    .await
}

/// A command that never reached its card over its own transport goes back to PENDING on SMS
/// (durably: a restart sends it over SMS too), to be secured anew (a new counter: whatever was
/// sent before never reached the card, but its counter is not used twice). The command and
/// the retry policy for its SMS sends, or None (no SMS route, or no longer ours to move).
async fn reroute_to_sms(
    shared: &Arc<Shared>,
    record: &CommandRecord,
    retry: RetryPolicy,
    detail: &str,
) -> Option<(CommandRecord, RetryPolicy)> {
    if !shared.transports.knows("sms") {
        return None;
    }
    match shared
        .store
        .reroute_for_fallback(
            &record.account_id,
            &record.id,
            &shared.config.id,
            &record.transport,
            "sms",
            detail,
            now_ms(),
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(command = %record.id, "SMS fallback: {e}");
            return None;
        }
    }
    match shared
        .store
        .command_by_id(&record.account_id, &record.id)
        .await
    {
        Ok(Some(sms)) => {
            // The sends (or triggers) so far counted; SMS gets sends of its own.
            let retry = RetryPolicy {
                attempts: sms.attempts + retry.attempts.max(1),
                ..retry
            };
            Some((sms, retry))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(command = %record.id, "SMS fallback: {e}");
            None
        }
    }
}

async fn stop_batch(shared: &Shared, record: &CommandRecord, _o: BatchOptions) {
    let Some(batch_id) = &record.batch_id else {
        return;
    };
    if let Ok(commands) = shared
        .store
        .batch_commands(&record.account_id, batch_id)
        .await
    {
        for c in commands
            .iter()
            .filter(|c| c.status == CommandStatus::Pending)
        {
            let _ = shared
                .store
                .cancel_command(&record.account_id, &c.id, now_ms())
                .await;
        }
    }
}

async fn fail(shared: &Shared, record: &CommandRecord, code: ErrorCode, message: String) {
    let t = outcome::failure(code, message, now_ms());
    apply(shared, record, &t).await;
}

/// What became of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// Stored.
    Yes,
    /// Refused by the store (the command had moved on: ended, cancelled, taken over).
    Refused,
    /// The store failed: nothing was written.
    StoreFailed,
}

/// Applies a transition and tells the world: metrics, and webhooks through the outbox (the
/// transition's events, with `command.completed` for a terminal status, are written with it).
async fn apply(shared: &Shared, record: &CommandRecord, t: &Transition) -> Recorded {
    let mut with_events;
    let t = if t.to.is_terminal() {
        with_events = t.clone();
        with_events.events.push(Event::CommandCompleted {
            command_id: record.id.clone(),
            status: t.to,
            response: t.response.clone(),
            error: t.error.clone(),
        });
        &with_events
    } else {
        t
    };
    match shared
        .store
        .transition(&record.account_id, &record.id, t)
        .await
    {
        Ok(true) => {
            tracing::debug!(command = %record.id, iccid = %record.iccid, transport = %record.transport,
                status = %t.to, detail = %t.detail, "command ended");
            shared
                .metrics
                .finished(&record.transport, t.to, t.error.as_ref().map(|e| e.code));
            // Only commands a PoR ended: a no-PoR success ends on its delivery report.
            let by_por = t
                .response
                .as_ref()
                .is_some_and(|r| r.por_status != outcome::NO_POR_STATUS);
            if let Some(sent) = record.sent_at {
                if t.to == CommandStatus::Success && by_por {
                    shared
                        .metrics
                        .por_latency((t.at - sent).max(0) as f64 / 1000.0);
                }
            }
            Recorded::Yes
        }
        Ok(false) => Recorded::Refused,
        Err(e) => {
            tracing::warn!(command = %record.id, "recording {}: {e}", t.to);
            Recorded::StoreFailed
        }
    }
}

/// Records a command's PoR: keys of a confirmed KEY_UPDATE first, then the end state.
async fn finish_with_por(shared: &Shared, done: &Done) -> Option<CommandStatus> {
    let record = &done.record;
    let Some(por) = &done.por else {
        return finish_without_por(shared, done).await;
    };
    let request: Option<OtaCommandRequest> = serde_json::from_value(record.request.clone()).ok();
    let t = outcome::por_transition(
        record.command_type,
        request.as_ref(),
        por,
        record.attempts.max(1),
        now_ms(),
    );
    let mut t = t;
    t.events.push(Event::CommandPor {
        command_id: record.id.clone(),
        por_status: t.response.as_ref().map(|r| r.por_status.clone()),
        counter: done.secured.counter,
    });
    if t.to == CommandStatus::Success && record.command_type == CommandType::KeyUpdate {
        if let Some(pending) = &done.secured.pending_keys {
            let version = request
                .as_ref()
                .and_then(|r| r.data.parameters.as_ref())
                .and_then(|p| p.get("keyVersion"))
                .and_then(|v| v.as_u64())
                .map(|v| v as u8)
                .unwrap_or(done.secured.key_version);
            // PUT KEY replaced KIc and KID; the key set keeps its KIK.
            let mut keys = pending.clone();
            if keys.kik.is_none() {
                if let Ok(Some(current)) = shared.store.key_set(&record.iccid, version).await {
                    keys.kik = current.keys.kik;
                }
            }
            t.new_keys = Some(NewKeys {
                iccid: record.iccid.clone(),
                version,
                keys,
            });
        }
    }
    let recorded = apply(shared, record, &t).await;
    if recorded == Recorded::StoreFailed {
        // The SMSC delivers the PoR again later; the command is still SENT in the store, so
        // that PoR is matched there (`match_in_store`).
        done.ack.retry_later();
    }
    (recorded == Recorded::Yes).then_some(t.to)
}

/// A command that ended on its delivery, as its SPI asked (no PoR, or PoR on error only and
/// none came). The delivery is recorded first (the notes task may not have yet), so the
/// history reads DELIVERED then SUCCESS.
async fn finish_without_por(shared: &Shared, done: &Done) -> Option<CommandStatus> {
    let record = &done.record;
    let at = now_ms();
    if let Ok(true) = shared
        .store
        .record_delivery(&record.account_id, &record.id, at)
        .await
    {
        shared.metrics.delivered();
    }
    let t = outcome::no_por_transition(
        Spi::from_bytes(done.secured.spi).por,
        shared.config.pipeline.por_timeout.as_secs(),
        now_ms(),
    );
    (apply(shared, record, &t).await == Recorded::Yes).then_some(t.to)
}

async fn notes(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<DispatchNote>) {
    while let Some(note) = rx.recv().await {
        match note {
            DispatchNote::Accepted { id, network_refs } => {
                let Some((account, command)) = shared.log.command_of(id) else {
                    tap(&shared, DispatchNote::Accepted { id, network_refs });
                    continue;
                };
                {
                    let _ = shared
                        .store
                        .add_event(
                            &account,
                            &command,
                            "ACCEPTED",
                            &network_refs.join(","),
                            now_ms(),
                        )
                        .await;
                }
            }
            DispatchNote::Delivered { id } => {
                let Some((account, command)) = shared.log.command_of(id) else {
                    tap(&shared, DispatchNote::Delivered { id });
                    continue;
                };
                {
                    let at = now_ms();
                    if let Ok(true) = shared.store.record_delivery(&account, &command, at).await {
                        shared.metrics.delivered();
                    }
                }
            }
            DispatchNote::UnmatchedPor {
                from,
                packet,
                scope,
                reason,
                ack,
            } => {
                let shared = shared.clone();
                tokio::spawn(async move {
                    // Matched, the PoR is recorded before its acknowledgement goes.
                    let Some(ack) = match_in_store(&shared, &from, &packet, scope, ack).await
                    else {
                        return;
                    };
                    shared.metrics.unmatched_por();
                    tracing::debug!("PoR from {from} matches no command: {reason}");
                    // Acknowledged now: no command waits for it. Campaign cards resumed after
                    // a restart look for theirs among these (kept in memory a while, see
                    // `campaign::runner::Orphans`); the network must not wait that long.
                    drop(ack);
                    tap(
                        &shared,
                        DispatchNote::UnmatchedPor {
                            from,
                            packet,
                            scope,
                            reason,
                            ack: InboundAck::none(),
                        },
                    );
                });
            }
        }
    }
}

fn tap(shared: &Shared, note: DispatchNote) {
    const EARLY_MAX: usize = 100_000;
    if let Ok(mut t) = shared.note_tap.lock() {
        match &t.tap {
            Some(tap) => {
                let _ = tap.send(note);
            }
            None if t.early.len() < EARLY_MAX => t.early.push(note),
            None => {}
        }
    }
}

/// A PoR nobody here waited for: look for the command in the store (sent before a restart, by
/// another gateway, or timed out in memory while still SENT). Gives the acknowledgement back
/// when no command matched.
async fn match_in_store(
    shared: &Arc<Shared>,
    from: &str,
    packet: &[u8],
    scope: CcScope,
    ack: InboundAck,
) -> Option<InboundAck> {
    let Ok(view) = ResponsePacketView::parse(packet) else {
        return Some(ack);
    };
    let msisdn = from.trim_start_matches('+');
    let candidates = match shared.store.awaiting_por(msisdn, view.tar).await {
        Ok(c) => c,
        Err(e) => {
            // Not looked up: the SMSC delivers it again later.
            tracing::warn!("PoR from {from} not matched, the store failed: {e}");
            ack.retry_later();
            return Some(ack);
        }
    };
    for record in candidates {
        let Some(secured) = record.secured.clone() else {
            continue;
        };
        let spi = Spi::from_bytes(secured.spi);
        let Some(keys) = keys_for(shared.store.as_ref(), &record.iccid, &secured).await else {
            continue;
        };
        let Ok(por) = view.open(&spi, &keys, scope) else {
            continue;
        };
        if por.counter.value() != secured.counter {
            continue;
        }
        let done = Done {
            record,
            secured,
            por: Some(por),
            ack,
        };
        finish_with_por(shared, &done).await;
        return None;
    }
    Some(ack)
}

async fn keys_for(
    store: &dyn Store,
    iccid: &str,
    secured: &crate::store::SecuredPacket,
) -> Option<Scp80Keys> {
    let kic_set = store.key_set(iccid, secured.kic >> 4).await.ok()??;
    let kid_set = store.key_set(iccid, secured.kid >> 4).await.ok()??;
    crate::pipeline::resolve::scp80_keys(
        &Spi::from_bytes(secured.spi),
        secured.kic,
        secured.kid,
        &kic_set,
        &kid_set,
    )
    .ok()
}

async fn housekeeping(shared: Arc<Shared>) {
    let every = (shared.config.lease / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
    let mut last_renew = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = now_ms();
        if last_renew.elapsed() >= every {
            last_renew = tokio::time::Instant::now();
            let until = now + shared.config.lease.as_millis() as Millis;
            if let Err(e) = shared.store.renew_leases(&shared.config.id, until).await {
                tracing::warn!("renewing leases: {e}");
            }
        }
        match shared.store.expire_commands(now).await {
            Ok(expired) => {
                for _ in expired {
                    shared.metrics.finished("-", CommandStatus::Expired, None);
                }
            }
            Err(e) => tracing::warn!("expiring commands: {e}"),
        }
        shared.metrics.set_in_flight(
            shared.in_flight.load(Ordering::Relaxed),
            shared.parking.lock().map(|p| p.parked).unwrap_or(0),
        );
    }
}
