//! Housekeeping: lease renewal, expiry of stale commands, in-flight gauges.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::command::CommandStatus;
use crate::store::Millis;

use super::Shared;

pub(super) async fn housekeeping(shared: Arc<Shared>) {
    let every = (shared.config.lease / 3).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every.min(Duration::from_secs(1)));
    let mut last_renew = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let now = shared.now();
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
