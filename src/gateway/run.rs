//! Running one claimed command: its batch's rules, then the HTTPS driver or the SCP80
//! pipeline, then the card is released to its next command.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tower::ServiceExt;

use crate::command::{CommandStatus, ErrorCode};
use crate::pipeline::{Job, JobError, RetryPolicy};
use crate::store::CommandRecord;

use super::{
    batch_options, catp_fallback, earlier_done, fail, finish_with_por, release_card, stop_batch,
    Shared,
};

pub(super) async fn run(shared: Arc<Shared>, record: CommandRecord) {
    let iccid = record.iccid.clone();
    let mut retry = shared.config.pipeline.retry;
    let options = batch_options(&shared, &record).await;
    // The command's own retries (its transport object) over its batch's, over the gateway's.
    let retries = crate::command::transport::stored_overrides(&record.request)
        .retries
        .or(options.and_then(|o| o.max_retries));
    if let Some(n) = retries {
        retry = RetryPolicy {
            attempts: n + 1,
            ..retry
        };
    }
    if let Some(o) = options {
        if !o.parallel
            && !record.status.is_terminal()
            && record.secured.is_none()
            && !earlier_done(&shared, &record).await
        {
            // Sequential batch, an earlier command not ended: go to the back of the card's
            // queue and let the card's other commands (maybe that earlier one) go first.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if shared.stopping.load(Ordering::SeqCst) {
                return;
            }
            if let Ok(mut p) = shared.parking.lock() {
                p.waiting
                    .entry(iccid.clone())
                    .or_default()
                    .push_back(record);
                p.parked += 1;
            }
            release_card(&shared, &iccid);
            return;
        }
    }
    let ended = match &shared.https {
        Some(h) if record.transport == "https" => h.run(&shared, &record, retry).await,
        _ => run_pipeline(&shared, &record, retry).await,
    };
    if ended == Some(CommandStatus::Failed) {
        if let Some(o) = options.filter(|o| o.stop_on_error) {
            stop_batch(&shared, &record, o).await;
        }
    }
    shared.in_flight.fetch_sub(1, Ordering::Relaxed);
    if let Ok(mut p) = shared.parking.lock() {
        p.held
            .remove(&(record.account_id.clone(), record.id.clone()));
    }
    release_card(&shared, &iccid);
    shared.wake.notify_one();
}

/// Runs a command through the SCP80 pipeline and records how it ended.
pub(super) async fn run_pipeline(
    shared: &Arc<Shared>,
    record: &CommandRecord,
    retry: RetryPolicy,
) -> Option<CommandStatus> {
    let job = Job::new(
        record.clone(),
        &shared.config.id,
        retry,
        shared.config.clock.clone(),
    );
    let result = shared.pipeline.clone().oneshot(job).await;
    match result {
        Ok(done) => finish_with_por(shared, &done).await,
        Err(JobError::Fail { code, message }) => {
            fail(shared, record, code, message).await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Timeout(d)) => {
            tracing::warn!(command = %record.id, iccid = %record.iccid, "no PoR within {d:?}");
            fail(
                shared,
                record,
                ErrorCode::Timeout,
                format!("no PoR within {d:?}"),
            )
            .await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Unreached(message)) => {
            if let Some((sms, retry)) = catp_fallback(shared, record, retry, &message).await {
                // Boxed: the fallback runs the pipeline again, for the SMS transport.
                return Box::pin(run_pipeline(shared, &sms, retry)).await;
            }
            fail(shared, record, ErrorCode::Timeout, message).await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Transport(t)) => {
            fail(shared, record, ErrorCode::TransportError, t.to_string()).await;
            Some(CommandStatus::Failed)
        }
        Err(JobError::Skipped(why)) => {
            tracing::debug!(command = %record.id, "skipped: {why}");
            None
        }
        Err(JobError::Store(e)) => {
            tracing::warn!(command = %record.id, "store failed, left for a later claim: {e}");
            let _ = shared.store.release(&record.id, &shared.config.id).await;
            None
        }
    }
}
