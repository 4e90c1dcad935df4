//! Fallback between transports: a CAT_TP command whose card opened no link goes by SMS.

use std::sync::Arc;

use crate::pipeline::RetryPolicy;
use crate::store::CommandRecord;

use super::Shared;

/// A CAT_TP command that never reached its card (no link after every push and send), where
/// the fallback is on and SMS is configured: over SMS (see [`reroute_to_sms`]).
pub(super) async fn catp_fallback(
    shared: &Arc<Shared>,
    record: &CommandRecord,
    retry: RetryPolicy,
    why: &str,
) -> Option<(CommandRecord, RetryPolicy)> {
    if record.transport != "catp" || !shared.config.catp_fallback_to_sms {
        return None;
    }
    reroute_to_sms(
        shared,
        record,
        retry,
        &format!("{why}: the command goes over SMS"),
    )
    .await
}

/// A command that never reached its card over its own transport goes back to PENDING on SMS
/// (durably: a restart sends it over SMS too), to be secured anew (a new counter: whatever was
/// sent before never reached the card, but its counter is not used twice). The command and
/// the retry policy for its SMS sends, or None (no SMS route, or no longer ours to move).
pub(super) async fn reroute_to_sms(
    shared: &Arc<Shared>,
    record: &CommandRecord,
    retry: RetryPolicy,
    detail: &str,
) -> Option<(CommandRecord, RetryPolicy)> {
    if !shared.transports.knows("sms") {
        return None;
    }
    match shared
        .store
        .reroute_for_fallback(
            &record.account_id,
            &record.id,
            &shared.config.id,
            &record.transport,
            "sms",
            detail,
            shared.now(),
        )
        .await
    {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(command = %record.id, "SMS fallback: {e}");
            return None;
        }
    }
    match shared
        .store
        .command_by_id(&record.account_id, &record.id)
        .await
    {
        Ok(Some(sms)) => {
            // The sends (or triggers) so far counted; SMS gets sends of its own.
            let retry = RetryPolicy {
                attempts: sms.attempts + retry.attempts.max(1),
                ..retry
            };
            Some((sms, retry))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(command = %record.id, "SMS fallback: {e}");
            None
        }
    }
}
