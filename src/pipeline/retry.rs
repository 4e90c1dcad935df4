//! retry: resends the same packet (same counter, same bytes) after a transient transport
//! failure or a PoR timeout, with exponential backoff, up to the policy's attempts. Each send
//! is counted in the store first, so a command that ended meanwhile is not sent again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use otagw_transport::TransportError;
use tower::{Layer, Service, ServiceExt};

use super::{Claimed, JobError};
use crate::command::ErrorCode;

/// How often and how patiently to resend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sends in all (1 = no resend).
    pub attempts: u32,
    /// Wait before the first resend; doubles each time.
    pub backoff: Duration,
    /// Longest wait between sends.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 3,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before resend number `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryLayer;

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Retry { inner }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
}

impl<S, J> Service<J> for Retry<S>
where
    J: Claimed,
    S: Service<J, Error = JobError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = JobError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, JobError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut job: J) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            // Sends already made before this job (a resumed command) count against the policy.
            let mut sent = job.claimed().record.attempts;
            let mut resends = 0u32;
            loop {
                let waited_only = job.claimed().resume_wait;
                // The sends made so far (the send stage records one more on the result).
                job.claimed_mut().record.attempts = sent;
                let result = inner.clone().oneshot(job.clone()).await;
                if !waited_only {
                    sent += 1;
                }
                job.claimed_mut().resume_wait = false;
                let err = match result {
                    Ok(done) => return Ok(done),
                    Err(e) => e,
                };
                let retryable = match &err {
                    JobError::Transport(t) => t.is_transient(),
                    JobError::Timeout(_) => true,
                    _ => false,
                };
                if !retryable {
                    return Err(match err {
                        JobError::Transport(t) => JobError::Fail {
                            code: ErrorCode::TransportError,
                            message: t.to_string(),
                        },
                        other => other,
                    });
                }
                if sent >= job.claimed().retry.attempts {
                    return Err(match err {
                        JobError::Timeout(d) => JobError::Fail {
                            code: ErrorCode::Timeout,
                            message: format!("no PoR within {d:?} after {sent} send(s)"),
                        },
                        // The transport waited in vain (a CAT_TP card that never opened its
                        // link after the pushes): the gateway fails it with TIMEOUT or falls
                        // back to another transport.
                        JobError::Transport(t @ TransportError::Timeout(_)) => {
                            JobError::Unreached(format!("{t} (after {sent} send(s))"))
                        }
                        JobError::Transport(t) => JobError::Fail {
                            code: ErrorCode::TransportError,
                            message: format!("{t} (after {sent} send(s))"),
                        },
                        other => other,
                    });
                }
                resends += 1;
                tokio::time::sleep(job.claimed().retry.delay(resends)).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{CommandStatus, CommandType, Priority};
    use crate::pipeline::Job;
    use crate::store::CommandRecord;
    use std::sync::{Arc, Mutex};

    fn record(attempts: u32) -> CommandRecord {
        CommandRecord {
            id: "c1".into(),
            account_id: "a".into(),
            batch_id: None,
            command_type: CommandType::Rfm,
            iccid: "8949000000000000000".into(),
            transport: "sms".into(),
            priority: Priority::Normal,
            request: serde_json::Value::Null,
            status: CommandStatus::Pending,
            created_at: 0,
            updated_at: 0,
            expires_at: None,
            sent_at: None,
            delivered_at: None,
            completed_at: None,
            attempts,
            secured: None,
            response: None,
            error: None,
            owner: None,
            lease_until: None,
        }
    }

    /// Each pass sees the sends made before it (the send stage counts its own on the result,
    /// so a PoR refusing a resend as counter low knows it was a resend).
    #[tokio::test]
    async fn each_pass_sees_the_sends_before_it() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let inner = tower::service_fn(move |job: Job| {
            let log = log.clone();
            async move {
                let mut log = log
                    .lock()
                    .map_err(|_| JobError::Skipped("poisoned".into()))?;
                log.push(job.record.attempts);
                if log.len() < 3 {
                    Err(JobError::Timeout(Duration::ZERO))
                } else {
                    Ok(job.record.attempts)
                }
            }
        });
        let policy = RetryPolicy {
            attempts: 5,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
        };
        let job = Job::new(record(1), "gw", policy, crate::clock::system());
        let out = RetryLayer.layer(inner).oneshot(job).await;
        assert!(matches!(out, Ok(3)), "{out:?}");
        assert_eq!(*seen.lock().expect("log"), vec![1, 2, 3]);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 10,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(400));
        assert_eq!(p.delay(4), Duration::from_millis(500));
        assert_eq!(p.delay(40), Duration::from_millis(500));
    }
}
