//! timeout: how long a sent command waits for its PoR. On expiry the wait is dropped (the
//! command stops waiting in memory; a late PoR is still matched through the store).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::{JobError, RoutedJob};

/// The layer.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    por_timeout: Duration,
}

impl TimeoutLayer {
    /// Waits at most `por_timeout` per send, unless the job carries its own.
    pub fn new(por_timeout: Duration) -> Self {
        Self { por_timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Timeout {
            inner,
            por_timeout: self.por_timeout,
        }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    por_timeout: Duration,
}

impl<S> Service<RoutedJob> for Timeout<S>
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

    fn call(&mut self, job: RoutedJob) -> Self::Future {
        // A command that ends on its delivery report keeps its own deadlines in `send` (the
        // report, then for PoR-on-error the quiet period): this one only backs them up.
        let ends_on_delivery = crate::security::Spi::from_bytes(job.packet.spi)
            .por
            .ending()
            != Some(crate::security::PorEnding::Por);
        let por_timeout = job.por_timeout.unwrap_or(self.por_timeout);
        let limit = if ends_on_delivery {
            por_timeout * 2 + Duration::from_secs(5)
        } else {
            por_timeout
        };
        let fut = self.inner.call(job);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(result) => result,
                Err(_) => Err(JobError::Timeout(limit)),
            }
        })
    }
}
