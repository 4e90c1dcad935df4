//! The gateway at run time (the engine): claims commands from the store, runs them through the
//! pipeline, records their outcomes, follows delivery reports, matches PoRs that reach it after
//! a restart or for another gateway's commands, renews its leases and expires stale commands.
//! Runtime glue only: what a PoR means is in [`outcome`], the steps are in [`crate::pipeline`].
//!
//! One file per job: `claim` (claims, one command at a time per card), `batch` (batch options
//! and order), `run` (one command through the HTTPS driver or the pipeline), `fallback` (CAT_TP
//! to SMS), `record` (how commands ended), `inbound` (delivery reports and PoRs from the
//! network), `housekeeping` (leases, expiry, gauges); [`https`] and [`catp`] are the SCP81
//! driver and the CAT_TP push path.
mod batch;
pub mod catp;
mod claim;
mod fallback;
mod housekeeping;
pub mod https;
mod inbound;
pub mod metrics;
pub mod outcome;
mod record;
mod run;

use batch::{batch_options, earlier_done, stop_batch};
use claim::{engine, release_card};
use fallback::{catp_fallback, reroute_to_sms};
use housekeeping::housekeeping;
use inbound::notes;
use record::{apply, fail, finish_with_por, Recorded};
use run::{run, run_pipeline};

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_transport::Transport;
use tokio::sync::{mpsc, Notify};

use crate::clock::{now_ms, Clock};
use crate::delivery::webhook::Webhooks;
use crate::dispatch::{DispatchNote, OtaDispatcher};
use crate::pipeline::limit::RateLimiter;
use crate::pipeline::{
    self, MessageLog, Pipeline, PipelineConfig, PriorityGate, Route, Transports,
};
use crate::store::{CommandRecord, Store, StoreError};

pub use metrics::GatewayMetrics;

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
    /// Where the engine and the pipeline read the time (claims, leases, sends, results,
    /// expiry); the system's by default, a [`crate::clock::ManualClock`] in tests.
    pub clock: Arc<dyn Clock>,
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
            clock: crate::clock::system(),
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
    card_packets: Mutex<CardPacketTap>,
    https: Option<Arc<https::HttpsDriver>>,
}

/// Where notes about campaign messages go; kept until the campaign runner takes them (PoRs of
/// packets sent before a restart come in as soon as the SMPP session binds).
#[derive(Default)]
struct NoteTap {
    tap: Option<mpsc::UnboundedSender<DispatchNote>>,
    early: Vec<DispatchNote>,
}

/// A command packet a card sent on its own (a subscription notification), for the Secure
/// Router; its acknowledgement goes to the network when the router drops it.
pub struct CardPacket {
    /// The card's MSISDN as the network gives it.
    pub from: String,
    /// The packet from CPL on (SMS framing).
    pub packet: Vec<u8>,
    /// The network's acknowledgement.
    pub ack: otagw_transport::InboundAck,
}

/// Where cards' own packets go; kept until the router attaches.
#[derive(Default)]
struct CardPacketTap {
    tap: Option<mpsc::UnboundedSender<CardPacket>>,
    early: Vec<CardPacket>,
}

/// Options of a batch, as the engine applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchOptions {
    parallel: bool,
    stop_on_error: bool,
    max_retries: Option<u32>,
}

impl Shared {
    /// The time, from the gateway's clock.
    fn now(&self) -> crate::clock::Millis {
        self.config.clock.now_ms()
    }
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
                    config.clock.clone(),
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
        store
            .renew_leases(&config.id, config.clock.now_ms() - 1)
            .await?;
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
            card_packets: Mutex::new(CardPacketTap::default()),
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

    /// Passes the command packets cards send on their own (subscription notifications) to
    /// `tap`, with those that came before.
    pub fn set_card_packet_tap(&self, tap: mpsc::UnboundedSender<CardPacket>) {
        if let Ok(mut t) = self.shared.card_packets.lock() {
            for packet in t.early.drain(..) {
                let _ = tap.send(packet);
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

    /// The transports this gateway offers, of [`crate::command::transport::TRANSPORTS`].
    pub fn offered(&self) -> Vec<&'static str> {
        crate::command::transport::TRANSPORTS
            .into_iter()
            .filter(|t| self.offers(t))
            .collect()
    }

    /// The clock the engine reads (the API stamps new commands with it).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.config.clock
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
