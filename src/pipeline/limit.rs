//! limit: the per-transport rate (messages per second), spacing sends evenly. The concurrency
//! limit is the priority gate's capacity (see `priority`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::{JobError, RoutedJob};

/// Spaces calls `1 / rate` seconds apart; `None` does not limit.
pub struct RateLimiter {
    interval: Option<Duration>,
    next: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// At most `per_second` calls per second (`None` or non-positive: unlimited).
    pub fn new(per_second: Option<f64>) -> Self {
        Self {
            interval: per_second
                .filter(|r| *r > 0.0 && r.is_finite())
                .map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Mutex::new(None),
        }
    }

    /// Waits for this call's turn.
    pub async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let Ok(mut next) = self.next.lock() else {
                return;
            };
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitLayer;

impl<S> Layer<S> for LimitLayer {
    type Service = Limit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Limit { inner }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Limit<S> {
    inner: S,
}

impl<S> Service<RoutedJob> for Limit<S>
where
    S: Service<RoutedJob, Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, JobError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, job: RoutedJob) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let rate = job.route.rate.clone();
            if !job.resume_wait {
                rate.wait().await;
            }
            inner.oneshot(job).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_by_the_rate() {
        let limiter = RateLimiter::new(Some(10.0));
        let start = Instant::now();
        for _ in 0..5 {
            limiter.wait().await;
        }
        // The first goes at once, then one every 100 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        assert!(RateLimiter::new(None).interval.is_none());
    }
}
