//! Commands that end while this gateway waits for their PoR, ended by someone else: the PoR
//! reached another gateway sharing the store (the SMSC picks the bind), or an operator
//! cancelled it. The waiting command itself does not poll: it registers here, and one sweep
//! asks the store about every registered command at once, 500 per query, every
//! [`SWEEP_EVERY`] while anything waits (before: every waiting command read its row every 2 s).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::command::CommandStatus;
use crate::store::Store;

/// How often the store is asked while commands wait.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

type Key = (String, String);

/// The registry of waiting commands.
#[derive(Default)]
pub struct EndedWatch {
    waiting: Mutex<HashMap<Key, Vec<oneshot::Sender<CommandStatus>>>>,
}

impl EndedWatch {
    /// A registry whose sweep runs on the current runtime until the registry is dropped.
    pub fn start(store: Arc<dyn Store>, every: Duration) -> Arc<Self> {
        let watch = Arc::new(Self::default());
        let weak = Arc::downgrade(&watch);
        tokio::spawn(sweep_loop(weak, store, every));
        watch
    }

    /// Resolves with the final status once the store shows command (`account_id`, `id`)
    /// ended. Dropping the receiver unregisters it at the next sweep.
    pub fn wait(&self, account_id: &str, id: &str) -> oneshot::Receiver<CommandStatus> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.entry((account_id.to_string(), id.to_string()))
                .or_default()
                .push(tx);
        }
        rx
    }

    /// Commands registered (whose waiters are still there).
    pub fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .map(|w| {
                w.values()
                    .filter(|s| s.iter().any(|tx| !tx.is_closed()))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Drops the waiters that went away; returns the commands still waited on.
    fn live_keys(&self) -> Vec<Key> {
        let Ok(mut w) = self.waiting.lock() else {
            return Vec::new();
        };
        w.retain(|_, senders| {
            senders.retain(|tx| !tx.is_closed());
            !senders.is_empty()
        });
        w.keys().cloned().collect()
    }

    fn ended(&self, key: Key, status: CommandStatus) {
        let senders = self
            .waiting
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&key))
            .unwrap_or_default();
        for tx in senders {
            let _ = tx.send(status);
        }
    }
}

async fn sweep_loop(watch: Weak<EndedWatch>, store: Arc<dyn Store>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(watch) = watch.upgrade() else {
            return;
        };
        let keys = watch.live_keys();
        if keys.is_empty() {
            continue;
        }
        match store.ended_among(&keys).await {
            Ok(ended) => {
                for (account_id, id, status) in ended {
                    watch.ended((account_id, id), status);
                }
            }
            // The next sweep asks again; the PoR wait's own timeout still bounds the wait.
            Err(e) => tracing::warn!(error = %e, "checking waiting commands in the store failed"),
        }
    }
}
