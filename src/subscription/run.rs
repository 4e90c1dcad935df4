//! The router's loop: cards' packets as they come, and a sweep of the store every
//! [`super::RouterConfig::sweep`] for ended commands, overdue notifications and DIRTY cards
//! due for an automatic audit. Everything it acts on is in the store, so a restarted or
//! second gateway takes over where another stopped.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{RouterError, SecureRouter};
use crate::store::subscriptions::{RouterChange, SyncRecord};

/// Starts the router: it takes the gateway's card packets and sweeps the store until the
/// returned task is aborted.
pub fn spawn(router: Arc<SecureRouter>) -> tokio::task::JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    router.gateway.set_card_packet_tap(tx);
    tokio::spawn(async move {
        let mut batch = Vec::new();
        let mut tick = tokio::time::interval(router.config.sweep);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // A packet with those that came meanwhile.
                n = rx.recv_many(&mut batch, 512) => match n {
                    0 => return,
                    _ => router.on_card_packets(std::mem::take(&mut batch)).await,
                },
                _ = tick.tick() => {
                    match router.sweep().await {
                        // Work found: look again at once.
                        Ok(true) => tick.reset_immediately(),
                        Ok(false) => {}
                        Err(e) => tracing::warn!("subscription router sweep failed: {e}"),
                    }
                }
            }
        }
    })
}

impl SecureRouter {
    /// One pass: ended commands, overdue notifications, DIRTY cards due for an audit.
    /// One pass: ended commands, overdue notifications, DIRTY cards due for an audit,
    /// bootstrap plans. True if it found work.
    pub async fn sweep(&self) -> Result<bool, RouterError> {
        let mut found = self.settle_ended().await? > 0;
        found |= self.settle_overdue().await? > 0;
        self.audit_dirty().await?;
        found |= self.bootstrap().await? > 0;
        Ok(found)
    }

    /// Starts an automatic audit on each DIRTY card that is due; a card the audit cannot
    /// even be sent to waits for its next turn (backoff).
    async fn audit_dirty(&self) -> Result<(), RouterError> {
        let now = self.now();
        for (account_id, iccid) in self.subs()?.dirty_due(now, 100).await? {
            match self
                .audit(&account_id, &iccid, &super::Requester::router())
                .await
            {
                Ok(op) => {
                    tracing::info!(%iccid, operation = %op.id, "automatic audit of a DIRTY card")
                }
                Err(RouterError::Conflict(..)) => {}
                Err(RouterError::Store(e)) => return Err(RouterError::Store(e)),
                Err(e) => {
                    let known = self.registry_of(&account_id, &iccid).await?;
                    let attempts = known.sync.audit_attempts.saturating_add(1);
                    tracing::warn!(%iccid, "automatic audit not sent: {e}");
                    let change = RouterChange {
                        iccid: iccid.clone(),
                        account_id: account_id.clone(),
                        sync: Some(SyncRecord {
                            audit_attempts: attempts,
                            next_audit_at: Some(now + self.backoff(attempts)),
                            updated_at: now,
                            ..known.sync
                        }),
                        ..RouterChange::default()
                    };
                    self.subs()?.apply(&change).await?;
                }
            }
        }
        Ok(())
    }
}
