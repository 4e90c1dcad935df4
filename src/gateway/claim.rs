//! Claiming commands from the store and running them one at a time per card, so counters
//! reach each card in the order they were reserved.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::store::{CommandRecord, Millis};

use super::{run, Shared};

pub(super) async fn engine(shared: Arc<Shared>) {
    loop {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let room = shared
            .config
            .max_in_flight
            .saturating_sub(shared.in_flight.load(Ordering::Relaxed));
        let mut full_batch = false;
        if room > 0 {
            let limit = (room as u32).min(shared.config.claim_batch);
            let now = shared.now();
            let lease_until = now + shared.config.lease.as_millis() as Millis;
            match shared
                .store
                .claim_commands(&shared.config.id, limit, now, lease_until)
                .await
            {
                Ok(records) => {
                    full_batch = records.len() as u32 == limit;
                    for r in records {
                        shared.in_flight.fetch_add(1, Ordering::Relaxed);
                        admit(&shared, r);
                    }
                }
                Err(e) => tracing::warn!("claiming commands: {e}"),
            }
        }
        if full_batch {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.config.poll_interval) => {}
        }
    }
}

/// Starts a claimed command, or parks it behind the command running for its card.
pub(super) fn admit(shared: &Arc<Shared>, record: CommandRecord) {
    {
        let Ok(mut p) = shared.parking.lock() else {
            return;
        };
        if !p
            .held
            .insert((record.account_id.clone(), record.id.clone()))
        {
            shared.in_flight.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if p.busy_cards.contains(&record.iccid) {
            p.waiting
                .entry(record.iccid.clone())
                .or_default()
                .push_back(record);
            p.parked += 1;
            return;
        }
        p.busy_cards.insert(record.iccid.clone());
    }
    tokio::spawn(run(shared.clone(), record));
}

/// The card is free again: its next parked command starts.
pub(super) fn release_card(shared: &Arc<Shared>, iccid: &str) {
    let next = {
        let Ok(mut p) = shared.parking.lock() else {
            return;
        };
        let next = p.waiting.get_mut(iccid).and_then(|q| q.pop_front());
        if p.waiting.get(iccid).is_some_and(|q| q.is_empty()) {
            p.waiting.remove(iccid);
        }
        if next.is_some() {
            p.parked -= 1;
        } else {
            p.busy_cards.remove(iccid);
        }
        next
    };
    if let Some(r) = next {
        tokio::spawn(run(shared.clone(), r));
    }
}
