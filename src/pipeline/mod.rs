//! The command pipeline: tower layers, one per file, each small and named for what it does.
//!
//! A claimed command flows `validate -> resolve -> secure -> route -> retry -> priority ->
//! limit -> timeout -> send`. The sketch puts the timeout before the priority queue;
//! here it sits inside it so that the timeout measures only the wait for the PoR, not time
//! spent queued behind other work (a busy gateway would otherwise time out commands it never
//! sent). The concurrency limit lives in the priority gate, so that work waiting for a slot
//! waits in priority order; `limit` adds the per-transport rate.
//!
//! Each layer takes the stage the one outside it produced and gives the next to the one inside
//! it: the engine's claimed [`Job`] to validate, [`ValidJob`] (the request parsed once) to
//! resolve, [`ResolvedJob`] (card, keys, counter) to secure, [`SecuredJob`] (the recorded
//! packet) to route, and [`RoutedJob`] from retry down to send. Every layer returns the same
//! [`Done`] or [`JobError`]; the gateway records the outcome.

pub mod ended;
pub mod limit;
pub mod priority;
pub mod resolve;
pub mod retry;
pub mod route;
pub mod secure;
pub mod send;
pub mod timeout;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use otagw_transport::TransportError;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

use crate::command::{ErrorCode, OtaCommandRequest};
use crate::dispatch::OtaDispatcher;
use crate::security::{DecodedResponse, Scp80Keys};
use crate::store::{CardRecord, CommandRecord, KeySetRecord, SecuredPacket, Store, StoreError};

pub use priority::PriorityGate;
pub use retry::RetryPolicy;
pub use route::{Route, Transports};
pub use send::MessageLog;
pub use validate::{validate_request, FieldError, ValidSecurity};

/// A claimed command, as the engine hands it to the pipeline: the first stage. Each layer
/// takes one stage and hands the next to the layer inside it (claimed [`Job`] -> [`ValidJob`]
/// -> [`ResolvedJob`] -> [`SecuredJob`] -> [`RoutedJob`]), so a layer never finds something
/// it needs missing. A stage reads the fields of the ones before it through `Deref`.
#[derive(Clone)]
pub struct Job {
    /// The command as claimed from the store.
    pub record: CommandRecord,
    /// The gateway holding it.
    pub owner: String,
    /// Where the layers read the time (the gateway's clock).
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Retry policy for this command (a batch may lower the attempts).
    pub retry: RetryPolicy,
    /// The first pass only waits for a PoR of a packet sent before (a resumed command).
    pub resume_wait: bool,
}

impl Job {
    /// A job for a claimed command, timed by `clock`.
    pub fn new(
        record: CommandRecord,
        owner: &str,
        retry: RetryPolicy,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        let resume_wait = record.secured.is_some() && record.attempts > 0;
        Self {
            record,
            owner: owner.to_string(),
            clock,
            retry,
            resume_wait,
        }
    }
}

/// validate: the stored request, parsed once, and its security settings.
#[derive(Clone)]
pub struct ValidJob {
    /// The claimed command.
    pub job: Job,
    /// The request.
    pub request: OtaCommandRequest,
    /// SPI, KIc, KID, TAR.
    pub security: ValidSecurity,
    /// The command's own PoR wait (its transport object's `parameters.timeout`), over the
    /// gateway's.
    pub por_timeout: Option<Duration>,
}

/// resolve: the card, its keys and the counter reserved for the command.
#[derive(Clone)]
pub struct ResolvedJob {
    /// The validated command.
    pub valid: ValidJob,
    /// The card.
    pub card: CardRecord,
    /// The key set the counter belongs to (and whose KIK encrypts new keys).
    pub key_set: KeySetRecord,
    /// The SCP80 keys.
    pub keys: Scp80Keys,
    /// The counter reserved for this command (a resumed command's own).
    pub counter: u64,
}

/// secure: the packet, recorded before its first send and reused on every send.
#[derive(Clone)]
pub struct SecuredJob {
    /// The resolved command.
    pub resolved: ResolvedJob,
    /// The packet.
    pub packet: SecuredPacket,
}

/// route: the transport the packet goes over.
#[derive(Clone)]
pub struct RoutedJob {
    /// The secured command.
    pub secured: SecuredJob,
    /// The route.
    pub route: Route,
}

macro_rules! stage_deref {
    ($stage:ty, $field:ident, $inner:ty) => {
        impl std::ops::Deref for $stage {
            type Target = $inner;
            fn deref(&self) -> &$inner {
                &self.$field
            }
        }
        impl std::ops::DerefMut for $stage {
            fn deref_mut(&mut self) -> &mut $inner {
                &mut self.$field
            }
        }
    };
}

stage_deref!(ValidJob, job, Job);
stage_deref!(ResolvedJob, valid, ValidJob);
stage_deref!(SecuredJob, resolved, ResolvedJob);
stage_deref!(RoutedJob, secured, SecuredJob);

/// The claimed command inside any stage (the retry layer counts sends on it).
pub trait Claimed: Clone + Send + 'static {
    /// The claimed command.
    fn claimed(&self) -> &Job;
    /// The claimed command, to change.
    fn claimed_mut(&mut self) -> &mut Job;
}

impl Claimed for Job {
    fn claimed(&self) -> &Job {
        self
    }
    fn claimed_mut(&mut self) -> &mut Job {
        self
    }
}

impl Claimed for RoutedJob {
    fn claimed(&self) -> &Job {
        &self.secured.resolved.valid.job
    }
    fn claimed_mut(&mut self) -> &mut Job {
        &mut self.secured.resolved.valid.job
    }
}

/// A command that got its PoR, or ended without one as its SPI says (see
/// [`crate::security::PorEnding`]).
#[derive(Debug, Clone)]
pub struct Done {
    /// The command as it was sent.
    pub record: CommandRecord,
    /// The packet it was sent as.
    pub secured: SecuredPacket,
    /// The PoR, verified; `None`: delivered, and the SPI asked for no PoR (or for one on error
    /// only, and none came within the wait).
    pub por: Option<DecodedResponse>,
    /// The network's acknowledgement of the PoR: dropped once the PoR is recorded.
    pub ack: otagw_transport::InboundAck,
}

/// Why a command left the pipeline without a PoR.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// The command fails for good.
    #[error("{code}: {message}")]
    Fail {
        /// Error code recorded.
        code: ErrorCode,
        /// Why.
        message: String,
    },
    /// The transport failed (transient ones are retried).
    #[error("transport: {0}")]
    Transport(TransportError),
    /// No PoR within the timeout.
    #[error("no PoR within {0:?}")]
    Timeout(Duration),
    /// Every send timed out inside the transport before reaching the card (a CAT_TP card that
    /// opened no link after its pushes): another transport may carry the command.
    #[error("unreached: {0}")]
    Unreached(String),
    /// Nothing to do: the command was cancelled, expired, answered or taken over meanwhile.
    #[error("skipped: {0}")]
    Skipped(String),
    /// The store failed; the command is left for a later claim.
    #[error("store: {0}")]
    Store(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        JobError::Store(e.to_string())
    }
}

/// Settings of the stack.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// How long to wait for a PoR after each send (a command's transport object may say
    /// otherwise for itself).
    pub por_timeout: Duration,
    /// Default retry policy.
    pub retry: RetryPolicy,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            por_timeout: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// The assembled stack.
pub type Pipeline = BoxCloneSyncService<Job, Done, JobError>;

/// Builds the stack over a store and the gateway's transports.
pub fn build(
    store: Arc<dyn Store>,
    transports: Arc<Transports>,
    log: Arc<send::MessageLog>,
    config: &PipelineConfig,
) -> Pipeline {
    let service = ServiceBuilder::new()
        .layer(validate::ValidateLayer)
        .layer(resolve::ResolveLayer::new(store.clone()))
        .layer(secure::SecureLayer::new(store.clone(), transports.clone()))
        .layer(route::RouteLayer::new(transports))
        .layer(retry::RetryLayer)
        .layer(priority::PriorityLayer)
        .layer(limit::LimitLayer)
        .layer(timeout::TimeoutLayer::new(config.por_timeout))
        .service(send::SendService::new(
            store.clone(),
            log,
            config.por_timeout,
            ended::EndedWatch::start(store, ended::SWEEP_EVERY),
        ));
    BoxCloneSyncService::new(service)
}

/// The dispatcher a route sends through (shared with the gateway's event handling).
pub type SharedDispatcher = Arc<OtaDispatcher>;
