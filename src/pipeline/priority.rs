//! priority: a per-transport gate of limited capacity (the transport's concurrency limit)
//! where waiting work is served highest priority first, then first come: an urgent single
//! command overtakes a queue of bulk work.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tower::{Layer, Service, ServiceExt};

use super::{JobError, RoutedJob};

struct Waiter {
    rank: i64,
    seq: u64,
    tx: oneshot::Sender<GatePermit>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank && self.seq == other.seq
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiter {
    // Max-heap: higher rank first, then lower sequence number (older) first.
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .cmp(&other.rank)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

struct GateState {
    available: usize,
    waiting: BinaryHeap<Waiter>,
    seq: u64,
}

/// The gate.
pub struct PriorityGate {
    capacity: usize,
    state: Mutex<GateState>,
}

/// A slot in the gate; given back when dropped (to the best waiter, if any).
pub struct GatePermit {
    gate: Option<Arc<PriorityGate>>,
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.release();
        }
    }
}

impl PriorityGate {
    /// A gate letting `capacity` jobs through at once.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity: capacity.max(1),
            state: Mutex::new(GateState {
                available: capacity.max(1),
                waiting: BinaryHeap::new(),
                seq: 0,
            }),
        })
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Jobs waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.state.lock().map(|s| s.waiting.len()).unwrap_or(0)
    }

    /// Jobs holding a slot.
    pub fn in_use(&self) -> usize {
        self.state
            .lock()
            .map(|s| self.capacity - s.available)
            .unwrap_or(0)
    }

    /// Waits for a slot at priority `rank` (higher first).
    pub async fn acquire(self: &Arc<Self>, rank: i64) -> GatePermit {
        let rx = {
            let Ok(mut s) = self.state.lock() else {
                return GatePermit { gate: None };
            };
            if s.available > 0 && s.waiting.is_empty() {
                s.available -= 1;
                return GatePermit {
                    gate: Some(self.clone()),
                };
            }
            let (tx, rx) = oneshot::channel();
            s.seq += 1;
            let seq = s.seq;
            s.waiting.push(Waiter { rank, seq, tx });
            rx
        };
        // A permit sent to a waiter that went away is dropped with the channel and released.
        rx.await.unwrap_or(GatePermit { gate: None })
    }

    fn release(self: Arc<Self>) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        while let Some(w) = s.waiting.pop() {
            let permit = GatePermit {
                gate: Some(self.clone()),
            };
            match w.tx.send(permit) {
                Ok(()) => return,
                // The waiter left; its permit must not release into this locked state.
                Err(mut p) => p.gate = None,
            }
        }
        s.available += 1;
    }
}

/// The layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct PriorityLayer;

impl<S> Layer<S> for PriorityLayer {
    type Service = Priority<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Priority { inner }
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct Priority<S> {
    inner: S,
}

impl<S> Service<RoutedJob> for Priority<S>
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
            let gate = job.route.gate.clone();
            let _permit = gate.acquire(job.record.priority.rank()).await;
            inner.oneshot(job).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn urgent_overtakes_bulk_waiting_at_the_gate() {
        let gate = PriorityGate::new(1);
        let held = gate.acquire(0).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (i, rank) in [(0, 0), (1, 0), (2, 2), (3, 0)] {
            let (gate, order) = (gate.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _p = gate.acquire(rank).await;
                order.lock().map(|mut o| o.push(i)).ok();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(gate.waiting(), 4);
        drop(held);
        for t in tasks {
            t.await.ok();
        }
        let order = order.lock().map(|o| o.clone()).unwrap_or_default();
        assert_eq!(order, vec![2, 0, 1, 3]);
        assert_eq!(gate.in_use(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_does_not_leak_its_slot() {
        let gate = PriorityGate::new(1);
        let held = gate.acquire(0).await;
        let g2 = gate.clone();
        let waiter = tokio::spawn(async move {
            let _p = g2.acquire(1).await;
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        waiter.abort();
        let _ = waiter.await;
        drop(held);
        let p = tokio::time::timeout(Duration::from_secs(1), gate.acquire(0)).await;
        assert!(p.is_ok(), "the slot came back");
    }
}
