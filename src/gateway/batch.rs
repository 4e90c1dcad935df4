//! Batches: their options (parallel, stop on error, retries) and sequential order.

use crate::command::CommandStatus;
use crate::store::CommandRecord;

use super::{BatchOptions, Shared};

pub(super) async fn batch_options(shared: &Shared, record: &CommandRecord) -> Option<BatchOptions> {
    let batch_id = record.batch_id.as_ref()?;
    if let Some(o) = shared
        .batch_options
        .lock()
        .ok()
        .and_then(|m| m.get(batch_id).copied())
    {
        return Some(o);
    }
    let batch = shared
        .store
        .batch(&record.account_id, batch_id)
        .await
        .ok()
        .flatten()?;
    let o = &batch.options;
    let options = BatchOptions {
        parallel: o.get("parallel").and_then(|v| v.as_bool()).unwrap_or(true),
        stop_on_error: o
            .get("stopOnError")
            .and_then(|v| v.as_bool())
            .unwrap_or(false),
        max_retries: o
            .get("maxRetries")
            .and_then(|v| v.as_u64())
            .map(|n| n.min(20) as u32),
    };
    if let Ok(mut m) = shared.batch_options.lock() {
        m.insert(batch_id.clone(), options);
    }
    Some(options)
}

/// Whether every command before this one in its (sequential) batch has ended.
pub(super) async fn earlier_done(shared: &Shared, record: &CommandRecord) -> bool {
    let Some(batch_id) = &record.batch_id else {
        return true;
    };
    match shared
        .store
        .batch_commands(&record.account_id, batch_id)
        .await
    {
        Ok(commands) => commands
            .iter()
            .take_while(|c| c.id != record.id)
            .all(|c| c.status.is_terminal()),
        Err(_) => false,
    }
}

pub(super) async fn stop_batch(shared: &Shared, record: &CommandRecord, _o: BatchOptions) {
    let Some(batch_id) = &record.batch_id else {
        return;
    };
    if let Ok(commands) = shared
        .store
        .batch_commands(&record.account_id, batch_id)
        .await
    {
        for c in commands
            .iter()
            .filter(|c| c.status == CommandStatus::Pending)
        {
            let _ = shared
                .store
                .cancel_command(&record.account_id, &c.id, shared.now())
                .await;
        }
    }
}
