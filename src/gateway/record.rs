//! Recording how commands ended: transitions, PoRs, metrics and webhook events.

use crate::command::{CommandStatus, CommandType, ErrorCode, OtaCommandRequest};
use crate::events::Event;
use crate::pipeline::Done;
use crate::security::Spi;
use crate::store::{CommandRecord, NewKeys, Transition};

use super::{outcome, Shared};

pub(super) async fn fail(
    shared: &Shared,
    record: &CommandRecord,
    code: ErrorCode,
    message: String,
) {
    let t = outcome::failure(code, message, shared.now());
    apply(shared, record, &t).await;
}

/// What became of a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Recorded {
    /// Stored.
    Yes,
    /// Refused by the store (the command had moved on: ended, cancelled, taken over).
    Refused,
    /// The store failed: nothing was written.
    StoreFailed,
}

/// Applies a transition and tells the world: metrics, and webhooks through the outbox (the
/// transition's events, with `command.completed` for a terminal status, are written with it).
pub(super) async fn apply(shared: &Shared, record: &CommandRecord, t: &Transition) -> Recorded {
    let mut with_events;
    let t = if t.to.is_terminal() {
        with_events = t.clone();
        with_events.events.push(Event::CommandCompleted {
            command_id: record.id.clone(),
            status: t.to,
            response: t.response.clone(),
            error: t.error.clone(),
        });
        &with_events
    } else {
        t
    };
    match shared
        .store
        .transition(&record.account_id, &record.id, t)
        .await
    {
        Ok(true) => {
            tracing::debug!(command = %record.id, iccid = %record.iccid, transport = %record.transport,
                status = %t.to, detail = %t.detail, "command ended");
            shared
                .metrics
                .finished(&record.transport, t.to, t.error.as_ref().map(|e| e.code));
            // Only commands a PoR ended: a no-PoR success ends on its delivery report.
            let by_por = t
                .response
                .as_ref()
                .is_some_and(|r| r.por_status != outcome::NO_POR_STATUS);
            if let Some(sent) = record.sent_at {
                if t.to == CommandStatus::Success && by_por {
                    shared
                        .metrics
                        .por_latency((t.at - sent).max(0) as f64 / 1000.0);
                }
            }
            Recorded::Yes
        }
        Ok(false) => Recorded::Refused,
        Err(e) => {
            tracing::warn!(command = %record.id, "recording {}: {e}", t.to);
            Recorded::StoreFailed
        }
    }
}

/// Records a command's PoR: keys of a confirmed KEY_UPDATE first, then the end state.
pub(super) async fn finish_with_por(shared: &Shared, done: &Done) -> Option<CommandStatus> {
    let record = &done.record;
    let Some(por) = &done.por else {
        return finish_without_por(shared, done).await;
    };
    let request: Option<OtaCommandRequest> = serde_json::from_value(record.request.clone()).ok();
    let t = outcome::por_transition(
        record.command_type,
        request.as_ref(),
        por,
        record.attempts.max(1),
        shared.now(),
    );
    let mut t = t;
    t.events.push(Event::CommandPor {
        command_id: record.id.clone(),
        por_status: t.response.as_ref().map(|r| r.por_status.clone()),
        counter: done.secured.counter,
    });
    if t.to == CommandStatus::Success && record.command_type == CommandType::KeyUpdate {
        if let Some(pending) = &done.secured.pending_keys {
            let version = request
                .as_ref()
                .and_then(|r| r.data.parameters.as_ref())
                .and_then(|p| p.get("keyVersion"))
                .and_then(|v| v.as_u64())
                .map(|v| v as u8)
                .unwrap_or(done.secured.key_version);
            // PUT KEY replaced KIc and KID; the key set keeps its KIK.
            let mut keys = pending.clone();
            if keys.kik.is_none() {
                if let Ok(Some(current)) = shared.store.key_set(&record.iccid, version).await {
                    keys.kik = current.keys.kik;
                }
            }
            t.new_keys = Some(NewKeys {
                iccid: record.iccid.clone(),
                version,
                keys,
            });
        }
    }
    let recorded = apply(shared, record, &t).await;
    if recorded == Recorded::StoreFailed {
        // The SMSC delivers the PoR again later; the command is still SENT in the store, so
        // that PoR is matched there (`match_in_store`).
        done.ack.retry_later();
    }
    (recorded == Recorded::Yes).then_some(t.to)
}

/// A command that ended on its delivery, as its SPI asked (no PoR, or PoR on error only and
/// none came). The delivery is recorded first (the notes task may not have yet), so the
/// history reads DELIVERED then SUCCESS.
pub(super) async fn finish_without_por(shared: &Shared, done: &Done) -> Option<CommandStatus> {
    let record = &done.record;
    let at = shared.now();
    if let Ok(true) = shared
        .store
        .record_delivery(&record.account_id, &record.id, at)
        .await
    {
        shared.metrics.delivered();
    }
    let t = outcome::no_por_transition(
        Spi::from_bytes(done.secured.spi).por,
        shared.config.pipeline.por_timeout.as_secs(),
        shared.now(),
    );
    (apply(shared, record, &t).await == Recorded::Yes).then_some(t.to)
}
