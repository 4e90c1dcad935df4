//! Prometheus metrics of one gateway (its own registry, no global state: several gateways can
//! live in one process, as in the tests and the demo).

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::command::{CommandStatus, ErrorCode};
use crate::delivery::webhook::WebhookOutcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Finished {
    transport: String,
    status: String,
    error: String,
}

/// The gateway's metrics.
pub struct GatewayMetrics {
    registry: Mutex<Registry>,
    finished: Family<Finished, Counter>,
    delivered: Counter,
    unmatched: Counter,
    latency: Histogram,
    in_flight: Gauge,
    parked: Gauge,
    webhooks: Family<WebhookOutcome, Counter>,
    outbox: Gauge,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("otagw");
        let finished = Family::<Finished, Counter>::default();
        registry.register(
            "commands_finished",
            "Commands that reached a terminal status",
            finished.clone(),
        );
        let delivered = Counter::default();
        registry.register(
            "delivery_reports",
            "Delivery reports recorded (each a DELIVERED event in the command's history)",
            delivered.clone(),
        );
        let unmatched = Counter::default();
        registry.register(
            "pors_unmatched",
            "PoRs that matched no command (or failed verification)",
            unmatched.clone(),
        );
        let latency = Histogram::new(exponential_buckets(0.005, 2.0, 16));
        registry.register(
            "por_seconds",
            "Time from a command's last send to the successful PoR that ended it",
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "commands_in_flight",
            "Commands held by this gateway",
            in_flight.clone(),
        );
        let parked = Gauge::default();
        registry.register(
            "commands_parked",
            "Commands waiting for their card's previous command",
            parked.clone(),
        );
        let webhooks = Family::<WebhookOutcome, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome (delivered, failed_attempt, given_up)",
            webhooks.clone(),
        );
        let outbox = Gauge::default();
        registry.register(
            "outbox_events",
            "Events waiting in the outbox for webhook delivery (all gateways, sampled)",
            outbox.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            finished,
            delivered,
            unmatched,
            latency,
            in_flight,
            parked,
            webhooks,
            outbox,
        }
    }

    /// The webhook outcome counters (the sender increments them).
    pub fn webhook_outcomes(&self) -> Family<WebhookOutcome, Counter> {
        self.webhooks.clone()
    }

    /// The outbox depth gauge (the outbox worker sets it).
    pub fn outbox_gauge(&self) -> Gauge {
        self.outbox.clone()
    }

    /// A command ended.
    pub fn finished(&self, transport: &str, status: CommandStatus, error: Option<ErrorCode>) {
        self.finished
            .get_or_create(&Finished {
                transport: transport.to_string(),
                status: status.as_str().to_string(),
                error: error.map(|e| e.as_str().to_string()).unwrap_or_default(),
            })
            .inc();
    }

    /// A delivery report.
    pub fn delivered(&self) {
        self.delivered.inc();
    }

    /// An unmatched PoR.
    pub fn unmatched_por(&self) {
        self.unmatched.inc();
    }

    /// A PoR's latency in seconds.
    pub fn por_latency(&self, seconds: f64) {
        self.latency.observe(seconds);
    }

    /// Commands held and parked.
    pub fn set_in_flight(&self, held: usize, parked: usize) {
        self.in_flight.set(held as i64);
        self.parked.set(parked as i64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
                out.clear();
            }
        }
        out
    }
}
