//! The outbox worker: takes events out of the store's outbox and hands them to webhooks.
//!
//! It leases up to [`OutboxConfig::window`] rows at a time (only the oldest row of each command
//! or campaign, so their events go out in order), delivers each to its account's webhooks, and
//! deletes the rows once delivered or given up. The lease is renewed while it works; rows of a
//! gateway that died are taken over when their lease ends and delivered again, with the same
//! `X-Otagw-Delivery` id. An account whose webhook is slow holds at most
//! [`OutboxConfig::per_account`] rows, so it cannot take the window from the others.
//!
//! Layering: [`crate::events::Event`] sits below the store (the store writes it); this worker
//! and [`super::webhook`] sit above it (see [`crate::delivery`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::webhook::{WebhookEvent, Webhooks};
use crate::store::{Millis, OutboxRow, Store};

/// How the worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Who holds the leases: the gateway's id (unique among running gateways; a restarted
    /// gateway takes its own leases back at start).
    pub owner: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// How often an idle worker looks for new rows.
    pub poll: Duration,
    /// Rows in delivery at once.
    pub window: usize,
    /// Rows of one account in delivery at once.
    pub per_account: usize,
    /// Wait before a row whose webhooks could not be looked up is tried again.
    pub retry_after: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            // The server names it after its gateway (`[gateway] id`).
            owner: "otagw".into(),
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(200),
            window: 512,
            per_account: 64,
            retry_after: Duration::from_secs(5),
        }
    }
}

/// The running worker; stops when [`OutboxWorker::shutdown`] is called or it is dropped.
pub struct OutboxWorker {
    stop: Arc<Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl OutboxWorker {
    /// Starts delivering.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn start(store: Arc<dyn Store>, webhooks: Webhooks, config: OutboxConfig) -> Self {
        Self::start_with_gauge(store, webhooks, config, None)
    }

    /// Starts, keeping `depth` set to the events waiting (sampled every [`DEPTH_EVERY`]).
    pub fn start_with_gauge(
        store: Arc<dyn Store>,
        webhooks: Webhooks,
        config: OutboxConfig,
        depth: Option<Gauge>,
    ) -> Self {
        let stop = Arc::new(Notify::new());
        let task = tokio::spawn(run(store, webhooks, config, stop.clone(), depth));
        Self {
            stop,
            task: Some(task),
        }
    }

    /// Stops: deliveries in progress are abandoned; their rows stay in the outbox, leased
    /// until the lease ends (or this gateway starts again).
    pub async fn shutdown(mut self) {
        self.stop.notify_one();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for OutboxWorker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What became of one row.
struct Handled {
    seq: i64,
    account_id: String,
    /// Delivered or given up (false: the webhooks could not be looked up; try again later).
    done: bool,
}

/// How often the outbox depth gauge is sampled.
pub const DEPTH_EVERY: Duration = Duration::from_secs(5);

async fn run(
    store: Arc<dyn Store>,
    webhooks: Webhooks,
    config: OutboxConfig,
    stop: Arc<Notify>,
    depth: Option<Gauge>,
) {
    let owner = config.owner.as_str();
    // A restarted gateway takes its own leases back: nothing of its old self delivers them.
    if let Err(e) = store.renew_outbox(owner, 0).await {
        tracing::warn!(error = %e, "outbox: releasing this gateway's old leases");
    }
    let mut tasks: JoinSet<Handled> = JoinSet::new();
    let mut per_account: HashMap<String, usize> = HashMap::new();
    let mut done: Vec<i64> = Vec::new();
    let mut retry: Vec<i64> = Vec::new();
    let renew_every = (config.lease / 3).max(Duration::from_millis(50));
    let mut last_renew = tokio::time::Instant::now();
    let mut last_depth: Option<tokio::time::Instant> = None;
    loop {
        if let Some(gauge) = &depth {
            if last_depth.is_none_or(|at| at.elapsed() >= DEPTH_EVERY) {
                last_depth = Some(tokio::time::Instant::now());
                if let Ok(n) = store.outbox_len().await {
                    gauge.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
        }
        // What ended since the last round.
        while let Some(joined) = tasks.try_join_next() {
            settle(joined, &mut per_account, &mut done, &mut retry);
        }
        if !done.is_empty() {
            match store.finish_outbox(owner, &done).await {
                Ok(_) => done.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, rows = done.len(), "outbox: deleting delivered events")
                }
            }
        }
        if !retry.is_empty() {
            let not_before = now_ms() + ms(config.retry_after);
            match store.release_outbox(owner, &retry, not_before).await {
                Ok(_) => retry.clear(),
                Err(e) => tracing::warn!(error = %e, "outbox: releasing events for a later try"),
            }
        }
        if last_renew.elapsed() >= renew_every && !tasks.is_empty() {
            last_renew = tokio::time::Instant::now();
            if let Err(e) = store.renew_outbox(owner, now_ms() + ms(config.lease)).await {
                tracing::warn!(error = %e, "outbox: renewing leases");
            }
        }
        if tasks.is_empty() {
            per_account.clear();
        }
        let room = config.window.max(1).saturating_sub(tasks.len());
        let mut claimed = 0;
        if room > 0 {
            let busy: Vec<String> = per_account
                .iter()
                .filter(|(_, n)| **n >= config.per_account.max(1))
                .map(|(a, _)| a.clone())
                .collect();
            let now = now_ms();
            match store
                .claim_outbox(owner, now, now + ms(config.lease), room as u32, &busy)
                .await
            {
                Ok(rows) => {
                    claimed = rows.len();
                    for row in rows {
                        *per_account.entry(row.account_id.clone()).or_default() += 1;
                        tasks.spawn(deliver(webhooks.clone(), row));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "outbox: claiming events"),
            }
        }
        if claimed > 0 && tasks.len() < config.window {
            continue; // more may be waiting
        }
        tokio::select! {
            joined = tasks.join_next(), if !tasks.is_empty() => {
                if let Some(joined) = joined {
                    settle(joined, &mut per_account, &mut done, &mut retry);
                }
            }
            _ = tokio::time::sleep(config.poll) => {}
            _ = stop.notified() => {
                tasks.abort_all();
                return;
            }
        }
    }
}

fn settle(
    joined: Result<Handled, tokio::task::JoinError>,
    per_account: &mut HashMap<String, usize>,
    done: &mut Vec<i64>,
    retry: &mut Vec<i64>,
) {
    let Ok(handled) = joined else {
        // A delivery task panicked (a bug): its row stays leased and is tried again when the
        // lease ends. Its account count cannot be found again; it is reset when idle below.
        tracing::error!("outbox: a delivery task failed");
        return;
    };
    if let Some(n) = per_account.get_mut(&handled.account_id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_account.remove(&handled.account_id);
        }
    }
    if handled.done {
        done.push(handled.seq);
    } else {
        retry.push(handled.seq);
    }
}

async fn deliver(webhooks: Webhooks, row: OutboxRow) -> Handled {
    let event = WebhookEvent {
        id: row.id,
        account_id: row.account_id,
        event: row.event,
        data: row.data,
        at: row.at,
    };
    let done = match webhooks.deliver(&event).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, event = %event.event, "outbox: event kept for a later try");
            false
        }
    };
    Handled {
        seq: row.seq,
        account_id: event.account_id,
        done,
    }
}
