//! An operation's command ended: what the card's PoR says about its registry.

use serde_json::json;

use super::{card_event, settled, snapshot, RouterError, SecureRouter};
use crate::command::{CommandStatus, CommandType};
use crate::events::names;
use crate::script::status_word;
use crate::script::subscription::{Audit, SubscriptionCommand};
use crate::store::subscriptions::{
    Applied, OperationRecord, OperationUpdate, RouterChange, StoredSubscription, SyncRecord,
    SyncState, TrailEntry,
};
use crate::store::CommandRecord;

/// The card's answer to a command, for people: status, status word and its meaning.
pub(super) fn answer_of(command: &CommandRecord) -> String {
    let mut out = command.status.to_string();
    if let Some(r) = &command.response {
        if let Some(sw) = r.status_code {
            match status_word::meaning(sw) {
                Some(m) => out.push_str(&format!(" {sw:04X} ({m})")),
                None => out.push_str(&format!(" {sw:04X}")),
            }
        } else {
            out.push_str(&format!(" PoR {} ({})", r.por_status, r.por_status_name));
        }
    }
    if let Some(e) = &command.error {
        out.push_str(&format!(": {} {}", e.code, e.message));
    }
    out
}

impl SecureRouter {
    /// Settles the operations whose command ended: their changes are read side by side and
    /// written in one transaction.
    pub(super) async fn settle_ended(&self) -> Result<usize, RouterError> {
        let ended = self.subs()?.sent_and_ended(500).await?;
        let n = ended.len();
        let mut settled = Vec::with_capacity(n);
        for chunk in ended.chunks(32) {
            let results = futures::future::join_all(
                chunk
                    .iter()
                    .map(|(op, command)| self.ended(op.clone(), command)),
            )
            .await;
            for r in results {
                settled.push(r?);
            }
        }
        let changes: Vec<RouterChange> = settled.iter().map(|(c, _)| c.clone()).collect();
        let applied = self.subs()?.apply_all(&changes).await?;
        for ((change, confirm), applied) in settled.into_iter().zip(applied) {
            if applied != Applied::Done {
                continue;
            }
            if let Some(op) = &change.operation {
                tracing::debug!(
                    iccid = %change.iccid,
                    operation = %op.id,
                    state = op.state,
                    "subscription operation's command ended"
                );
            }
            if let Some(seq) = confirm {
                self.confirm(&change.account_id, &change.iccid, seq).await;
            }
        }
        Ok(n)
    }

    /// The change an ended command makes, and the notification sequence number to confirm.
    async fn ended(
        &self,
        op: OperationRecord,
        command: &CommandRecord,
    ) -> Result<(RouterChange, Option<u16>), RouterError> {
        let known = self.registry_of(&op.account_id, &op.iccid).await?;
        let now = self.now();
        let answer = answer_of(command);
        let mut registry = known.subscriptions.clone();
        let sub_id = op.sub_id.unwrap_or(0);
        let success = command.status == CommandStatus::Success;
        let mut confirm = None;
        let (op_state, sync, deadline, what): (&'static str, SyncRecord, Option<i64>, String) =
            if !success {
                let sync = if op.kind == "AUDIT" {
                    let attempts = known.sync.audit_attempts.saturating_add(1);
                    SyncRecord {
                        state: SyncState::Dirty,
                        operation_id: None,
                        reason: format!("audit failed: {answer}"),
                        audit_attempts: attempts,
                        next_audit_at: Some(now + self.backoff(attempts)),
                        updated_at: now,
                        ..known.sync.clone()
                    }
                } else {
                    // The card refused, or nobody knows what it did: read it back.
                    settled(
                        &known.sync,
                        SyncState::Dirty,
                        &format!("{} {answer}", op.kind),
                        now,
                    )
                };
                ("FAILED", sync, None, format!("{} failed", op.kind))
            } else {
                match op.kind.as_str() {
                    "DOWNLOAD" => {
                        super::notification::add_downloaded(&mut registry, &op);
                        if op.params["enable"].as_bool().unwrap_or(false) {
                            self.awaiting(&known.sync, now)
                        } else {
                            self.done(&known.sync, now)
                        }
                    }
                    "ENABLE" => self.awaiting(&known.sync, now),
                    "DELETE" => {
                        registry.retain(|s| s.id != sub_id);
                        self.done(&known.sync, now)
                    }
                    "FALLBACK" => {
                        registry
                            .iter_mut()
                            .for_each(|s| s.fallback = s.id == sub_id);
                        self.done(&known.sync, now)
                    }
                    _ => {
                        let data = command
                            .response
                            .as_ref()
                            .and_then(|r| r.data.as_deref())
                            .unwrap_or_default();
                        match hex::decode(data)
                            .map_err(|e| e.to_string())
                            .and_then(|d| Audit::decode(&d).map_err(|e| e.to_string()))
                        {
                            Ok(audit) => {
                                registry = audit
                                    .subscriptions
                                    .iter()
                                    .map(|a| StoredSubscription {
                                        id: a.id,
                                        imsi: a.imsi.clone(),
                                        enabled: a.enabled,
                                        fallback: a.fallback,
                                        bootstrap: a.bootstrap,
                                        template: known
                                            .subscriptions
                                            .iter()
                                            .find(|s| s.id == a.id && s.imsi == a.imsi)
                                            .and_then(|s| s.template.clone()),
                                    })
                                    .collect();
                                if audit.seq != 0 {
                                    confirm = Some(audit.seq);
                                }
                                let mut sync = settled(&known.sync, SyncState::Synced, "", now);
                                sync.last_seq = audit.seq;
                                ("DONE", sync, None, "AUDIT done".to_string())
                            }
                            Err(problem) => {
                                let attempts = known.sync.audit_attempts.saturating_add(1);
                                let sync = SyncRecord {
                                    state: SyncState::Dirty,
                                    operation_id: None,
                                    reason: format!("audit unreadable: {problem}"),
                                    audit_attempts: attempts,
                                    next_audit_at: Some(now + self.backoff(attempts)),
                                    updated_at: now,
                                    ..known.sync.clone()
                                };
                                ("FAILED", sync, None, "AUDIT unreadable".to_string())
                            }
                        }
                    }
                }
            };
        let registry_changed = registry != known.subscriptions;
        let op_id = Some(op.id.as_str());
        let mut events = Vec::new();
        if sync.state == SyncState::Dirty && known.sync.state != SyncState::Dirty {
            events.push(card_event(
                names::CARD_DIRTY,
                &op.iccid,
                op_id,
                json!({ "reason": sync.reason }),
            ));
        }
        if op_state != "FAILED" {
            let sub = json!({ "subscriptionId": sub_id });
            match op.kind.as_str() {
                "DOWNLOAD" => events.push(card_event(
                    names::SUBSCRIPTION_DOWNLOADED,
                    &op.iccid,
                    op_id,
                    json!({ "subscriptionId": sub_id, "imsi": op.params["imsi"] }),
                )),
                "DELETE" => events.push(card_event(
                    names::SUBSCRIPTION_DELETED,
                    &op.iccid,
                    op_id,
                    sub,
                )),
                "FALLBACK" => events.push(card_event(
                    names::SUBSCRIPTION_FALLBACK,
                    &op.iccid,
                    op_id,
                    sub,
                )),
                "AUDIT" => events.push(card_event(
                    names::CARD_AUDITED,
                    &op.iccid,
                    op_id,
                    json!({ "subscriptions": registry }),
                )),
                _ => {}
            }
        }
        let change = RouterChange {
            iccid: op.iccid.clone(),
            account_id: op.account_id.clone(),
            operation: Some(OperationUpdate {
                id: op.id.clone(),
                from: vec!["SENT"],
                state: op_state,
                result: json!({
                    "command": command.id,
                    "commandStatus": command.status,
                    "answer": answer,
                    "statusWords": command.response.as_ref().map(|r| &r.status_words),
                }),
                deadline,
                at: now,
            }),
            start: None,
            trail: Some(TrailEntry {
                seq: 0,
                at: now,
                what: if op_state == "AWAITING_NOTIFICATION" {
                    format!("{} accepted, awaiting the notification", op.kind)
                } else if what.is_empty() {
                    format!("{} done", op.kind)
                } else {
                    what
                },
                who: "card".into(),
                operation_id: Some(op.id.clone()),
                answer,
                before: known.snapshot(),
                after: snapshot(&registry, &sync),
            }),
            registry: (registry_changed || known.implied).then_some(registry),
            sync: Some(sync.clone()),
            events,
            plan: None,
            at: now,
        };
        Ok((change, confirm))
    }

    /// The operation waits for the card's notification: still PENDING.
    fn awaiting(
        &self,
        sync: &SyncRecord,
        now: i64,
    ) -> (&'static str, SyncRecord, Option<i64>, String) {
        let wait = i64::try_from(self.config.notification_wait.as_millis()).unwrap_or(i64::MAX);
        (
            "AWAITING_NOTIFICATION",
            SyncRecord {
                updated_at: now,
                ..sync.clone()
            },
            Some(now.saturating_add(wait)),
            String::new(),
        )
    }

    fn done(&self, sync: &SyncRecord, now: i64) -> (&'static str, SyncRecord, Option<i64>, String) {
        (
            "DONE",
            settled(sync, SyncState::Synced, "", now),
            None,
            String::new(),
        )
    }

    /// Wait before the `attempts`-th automatic audit retry: doubling, capped.
    pub(super) fn backoff(&self, attempts: u32) -> i64 {
        let base = self.config.audit_backoff.as_millis() as i64;
        let max = self.config.audit_backoff_max.as_millis() as i64;
        let shift = attempts.saturating_sub(1).min(20);
        base.saturating_mul(1i64 << shift).min(max)
    }

    /// Tells the card its notifications up to `seq` arrived (a command of its own, no
    /// operation: it changes no registry).
    pub(super) async fn confirm(&self, account_id: &str, iccid: &str, seq: u16) {
        let Ok(apdu) = SubscriptionCommand::Confirm(seq).to_apdu() else {
            return;
        };
        let now = self.now();
        match self
            .command_for(account_id, iccid, &[apdu.to_bytes()], now)
            .await
        {
            Ok(command) => {
                debug_assert_eq!(command.command_type, CommandType::Subscription);
                match self.store.insert_command(&command).await {
                    Ok(()) => self.gateway.notify(),
                    Err(e) => tracing::warn!(%iccid, seq, "confirmation not stored: {e}"),
                }
            }
            Err(e) => tracing::warn!(%iccid, seq, "confirmation not built: {e}"),
        }
    }
}
