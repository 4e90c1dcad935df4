//! route: picks the transport the command asks for (falling back to SMS where allowed) and
//! checks the packet fits it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::limit::RateLimiter;
use super::{JobError, PriorityGate, RoutedJob, SecuredJob, SharedDispatcher};
use crate::command::ErrorCode;

/// One transport as the pipeline uses it.
#[derive(Clone)]
pub struct Route {
    /// Its name (`sms`, ...).
    pub name: String,
    /// Sends and correlates PoRs.
    pub dispatcher: SharedDispatcher,
    /// Concurrency, in priority order.
    pub gate: Arc<PriorityGate>,
    /// Rate.
    pub rate: Arc<RateLimiter>,
}

/// The gateway's transports by name.
#[derive(Clone, Default)]
pub struct Transports {
    routes: BTreeMap<String, Route>,
    /// Transport used when the one asked for is not configured.
    pub fallback: Option<String>,
    /// Largest script of transports that carry scripts outside an SCP80 packet (`https`).
    pub script_limits: BTreeMap<String, usize>,
}

impl Transports {
    /// No transports.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a transport under its name.
    pub fn add(&mut self, route: Route) {
        self.routes.insert(route.name.clone(), route);
    }

    /// The route for a name, or the fallback.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes
            .get(name)
            .or_else(|| self.fallback.as_deref().and_then(|f| self.routes.get(f)))
    }

    /// Every route.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.values()
    }

    /// Whether a transport of that name is configured.
    pub fn knows(&self, name: &str) -> bool {
        self.routes.contains_key(name)
    }

    /// Largest script a command packet for the named transport carries (its packet size less
    /// the command packet's own overhead).
    pub fn max_script_len(&self, name: &str) -> usize {
        if let Some(&n) = self.script_limits.get(name) {
            return n;
        }
        self.max_packet_len(name)
            .saturating_sub(super::secure::PACKET_OVERHEAD)
    }

    /// How the named transport (or its fallback) frames packets.
    pub fn packet_format(&self, name: &str) -> otagw_transport::PacketFormat {
        self.route(name)
            .map(|r| r.dispatcher.transport().packet_format())
            .unwrap_or_default()
    }

    /// Largest command packet the named transport (or its fallback) carries.
    pub fn max_packet_len(&self, name: &str) -> usize {
        self.route(name)
            .map(|r| r.dispatcher.transport().max_packet_len())
            .unwrap_or(0)
    }
}

/// The layer.
#[derive(Clone)]
pub struct RouteLayer {
    transports: Arc<Transports>,
}

impl RouteLayer {
    /// Over the gateway's transports.
    pub fn new(transports: Arc<Transports>) -> Self {
        Self { transports }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = RouteService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RouteService {
            inner,
            transports: self.transports.clone(),
        }
    }
}

/// The service.
#[derive(Clone)]
pub struct RouteService<S> {
    inner: S,
    transports: Arc<Transports>,
}

impl<S> Service<SecuredJob> for RouteService<S>
where
    S: Service<RoutedJob, Error = JobError> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, JobError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, job: SecuredJob) -> Self::Future {
        let wanted = job.record.transport.clone();
        let Some(route) = self.transports.route(&wanted).cloned() else {
            return Box::pin(async move {
                Err(JobError::Fail {
                    code: ErrorCode::TransportError,
                    message: format!("no transport {wanted:?} is configured and no fallback"),
                })
            });
        };
        let len = job.packet.packet.len();
        let max = route.dispatcher.transport().max_packet_len();
        if len > max {
            return Box::pin(async move {
                Err(JobError::Fail {
                    code: ErrorCode::TransportError,
                    message: format!(
                        "packet of {len} octets does not fit transport {} (at most {max})",
                        route.name
                    ),
                })
            });
        }
        Box::pin(self.inner.call(RoutedJob {
            secured: job,
            route,
        }))
    }
}
