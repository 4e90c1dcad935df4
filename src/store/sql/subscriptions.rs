//! [`SubscriptionStore`] on the SQL store (SQLite and PostgreSQL, same SQL).

use async_trait::async_trait;
use sqlx::any::AnyRow;

use super::deferred::{statement_chunks, Deferred};
use super::exec::{Arg, Constraint, Exec};
use super::group::{Write, Written};
use super::{col, dbe, json_text, map_insert, values_clause, Dialect, InsertFailure, SqlStore, Tx};
use crate::store::subscriptions::{
    nth_imsi, Applied, BootstrapRule, CardAccess, CardRegistry, GrantRecord, OperationRecord,
    PlanRecord, Right, RouterChange, StoredSubscription, SubscriptionStore, SubscriptionTemplate,
    SyncRecord, SyncState, TrailEntry,
};
use crate::store::{CommandRecord, Millis, Store, StoreError};

const OPERATION_COLUMNS: &str = "id, account_id, iccid, kind, sub_id, params, state, \
     command_id, requested_by, result, deadline, created_at, updated_at";

const SYNC_COLUMNS: &str =
    "state, operation_id, reason, last_seq, audit_attempts, next_audit_at, updated_at";

/// `columns` ("a, b") read through table alias `alias`, under their own names
/// ("x.a AS a, x.b AS b").
fn qualified(alias: &str, columns: &str) -> String {
    columns
        .split(", ")
        .map(|c| format!("{alias}.{c} AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn json_col(row: &AnyRow, name: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = col(row, name)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Database(format!("column {name}: {e}")))
}

fn operation_from_row(row: &AnyRow) -> Result<OperationRecord, StoreError> {
    let sub_id: Option<i64> = col(row, "sub_id")?;
    Ok(OperationRecord {
        id: col(row, "id")?,
        account_id: col(row, "account_id")?,
        iccid: col(row, "iccid")?,
        kind: col(row, "kind")?,
        sub_id: sub_id.and_then(|v| u8::try_from(v).ok()),
        params: json_col(row, "params")?,
        state: col(row, "state")?,
        command_id: col(row, "command_id")?,
        requested_by: col(row, "requested_by")?,
        result: json_col(row, "result")?,
        deadline: col(row, "deadline")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn sync_from_row(row: &AnyRow) -> Result<SyncRecord, StoreError> {
    let state: String = col(row, "state")?;
    let last_seq: i64 = col(row, "last_seq")?;
    let attempts: i64 = col(row, "audit_attempts")?;
    Ok(SyncRecord {
        state: SyncState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("column card_sync.state: {state:?}")))?,
        operation_id: col(row, "operation_id")?,
        reason: col(row, "reason")?,
        last_seq: u16::try_from(last_seq).unwrap_or(0),
        audit_attempts: u32::try_from(attempts).unwrap_or(0),
        next_audit_at: col(row, "next_audit_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn trail_from_row(row: &AnyRow) -> Result<TrailEntry, StoreError> {
    Ok(TrailEntry {
        seq: col(row, "seq")?,
        at: col(row, "at")?,
        what: col(row, "what")?,
        who: col(row, "who")?,
        operation_id: col(row, "operation_id")?,
        answer: col(row, "answer")?,
        before: json_col(row, "state_before")?,
        after: json_col(row, "state_after")?,
    })
}

fn rights_of(text: &str) -> Vec<Right> {
    let mut rights: Vec<Right> = text.split(',').filter_map(Right::parse).collect();
    rights.sort();
    rights.dedup();
    rights
}

fn grant_from_row(row: &AnyRow) -> Result<GrantRecord, StoreError> {
    let rights: String = col(row, "rights")?;
    Ok(GrantRecord {
        group_id: col(row, "group_id")?,
        grantee_id: col(row, "grantee_id")?,
        grantee_name: col(row, "grantee_name")?,
        rights: rights_of(&rights),
        created_at: col(row, "created_at")?,
    })
}

const PLAN_COLUMNS: &str =
    "iccid, account_id, group_id, imsis, actions, state, detail, created_at, updated_at";

fn plan_from_row(row: &AnyRow) -> Result<PlanRecord, StoreError> {
    let imsis: String = col(row, "imsis")?;
    let actions: i64 = col(row, "actions")?;
    Ok(PlanRecord {
        iccid: col(row, "iccid")?,
        account_id: col(row, "account_id")?,
        group_id: col(row, "group_id")?,
        imsis: serde_json::from_str(&imsis)
            .map_err(|e| StoreError::Database(format!("column imsis: {e}")))?,
        actions: u32::try_from(actions).unwrap_or(u32::MAX),
        state: col(row, "state")?,
        detail: col(row, "detail")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn template_from_row(row: &AnyRow) -> Result<SubscriptionTemplate, StoreError> {
    let plmns: String = col(row, "plmns")?;
    Ok(SubscriptionTemplate {
        name: col(row, "name")?,
        spn: col(row, "spn")?,
        plmns: serde_json::from_str(&plmns)
            .map_err(|e| StoreError::Database(format!("column plmns: {e}")))?,
    })
}

/// The plans of `iccids` under `rule`, the n-th card getting each range's `allocated + n`-th
/// IMSI (a FAILED plan past a range).
fn plans_for(
    group_id: i64,
    account_id: &str,
    rule: &BootstrapRule,
    allocated: i64,
    iccids: &[String],
    now: Millis,
) -> Vec<PlanRecord> {
    let mut plans = Vec::with_capacity(iccids.len());
    for (k, iccid) in iccids.iter().enumerate() {
        let index = u64::try_from(allocated).unwrap_or(0) + k as u64;
        let mut imsis = Vec::with_capacity(rule.subscriptions.len());
        let mut problem = None;
        for sub in &rule.subscriptions {
            match nth_imsi(&sub.imsi_first, index).filter(|_| index < sub.imsi_count) {
                Some(imsi) => imsis.push(imsi),
                None => {
                    problem = Some(format!(
                        "IMSI range of template {} exhausted ({} IMSIs from {})",
                        sub.template, sub.imsi_count, sub.imsi_first
                    ))
                }
            }
        }
        plans.push(PlanRecord {
            iccid: iccid.clone(),
            account_id: account_id.to_string(),
            group_id,
            imsis,
            actions: 0,
            state: if problem.is_some() {
                "FAILED"
            } else {
                "RUNNING"
            }
            .into(),
            detail: problem.unwrap_or_default(),
            created_at: now,
            updated_at: now,
        });
    }
    plans
}

impl SqlStore {
    /// Refuses a card group that is not `owner_id`'s (as not found).
    async fn owned_group(&self, owner_id: &str, group_id: i64) -> Result<(), StoreError> {
        match self.card_group(owner_id, group_id).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound {
                what: "card group",
                key: group_id.to_string(),
            }),
        }
    }

    /// Writes the plans of `iccids` in `tx` and moves the rule's allocation on.
    #[allow(clippy::too_many_arguments)]
    async fn allocate_plans(
        &self,
        tx: &mut Tx,
        group_id: i64,
        account_id: &str,
        rule: &BootstrapRule,
        allocated: i64,
        iccids: &[String],
        now: Millis,
    ) -> Result<Vec<PlanRecord>, StoreError> {
        let plans = plans_for(group_id, account_id, rule, allocated, iccids, now);
        for p in &plans {
            sqlx::query(&format!(
                "INSERT INTO bootstrap_plans ({PLAN_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(p.iccid.as_str())
            .bind(p.account_id.as_str())
            .bind(p.group_id)
            .bind(json_text(&p.imsis, "imsis")?)
            .bind(0i64)
            .bind(p.state.as_str())
            .bind(p.detail.as_str())
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(dbe)?;
        }
        sqlx::query("UPDATE bootstrap_rules SET allocated = allocated + $2 WHERE group_id = $1")
            .bind(group_id)
            .bind(plans.len() as i64)
            .execute(&mut **tx)
            .await
            .map_err(dbe)?;
        Ok(plans)
    }

    /// The card's sync row in `tx`, as far as a refused start names it (state, operation in
    /// flight, why DIRTY).
    async fn sync_in<E: Exec>(tx: &mut E, iccid: &str) -> Result<Option<SyncRecord>, StoreError> {
        let Some(row) = tx
            .fetch_texts(
                "SELECT state, operation_id, reason FROM card_sync WHERE iccid = $1",
                &[Arg::from(iccid)],
            )
            .await?
        else {
            return Ok(None);
        };
        let text = |i: usize| row.get(i).cloned().flatten();
        let state = text(0).unwrap_or_default();
        Ok(Some(SyncRecord {
            state: SyncState::parse(&state).ok_or_else(|| {
                StoreError::Database(format!("column card_sync.state: {state:?}"))
            })?,
            operation_id: text(1),
            reason: text(2).unwrap_or_default(),
            ..SyncRecord::never_touched()
        }))
    }

    async fn write_sync<E: Exec>(
        tx: &mut E,
        iccid: &str,
        s: &SyncRecord,
    ) -> Result<(), StoreError> {
        let args = [
            Arg::from(iccid),
            Arg::from(s.state.as_str()),
            Arg::from(s.operation_id.as_deref()),
            Arg::from(s.reason.as_str()),
            Arg::from(i64::from(s.last_seq)),
            Arg::from(i64::from(s.audit_attempts)),
            Arg::from(s.next_audit_at),
            Arg::from(s.updated_at),
        ];
        let updated = tx
            .execute(
                "UPDATE card_sync SET state = $2, operation_id = $3, reason = $4, last_seq = $5, \
                 audit_attempts = $6, next_audit_at = $7, updated_at = $8 WHERE iccid = $1",
                &args,
            )
            .await?;
        if updated == 0 {
            tx.execute(
                &format!(
                    "INSERT INTO card_sync (iccid, {SYNC_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &args,
            )
            .await?;
        }
        Ok(())
    }

    /// The router's changes in `tx`, in order, each written whole or not at all: a change
    /// answers [`Applied::Stale`] or [`Applied::Busy`] from its first conditional statement,
    /// before it wrote anything (a change never both moves an operation on and starts one).
    /// Its webhook events go to `later`, appended at the end of the transaction.
    pub(super) async fn apply_changes_in<E: Exec>(
        &self,
        tx: &mut E,
        later: &mut Deferred,
        changes: &[RouterChange],
    ) -> Result<Vec<Applied>, StoreError> {
        let mut out = Vec::with_capacity(changes.len());
        for change in changes {
            let applied = self.apply_in(tx, change).await?;
            if applied == Applied::Done {
                later.outbox(&change.account_id, &change.events, change.at);
            }
            out.push(applied);
        }
        Ok(out)
    }

    async fn apply_in<E: Exec>(
        &self,
        tx: &mut E,
        change: &RouterChange,
    ) -> Result<Applied, StoreError> {
        let iccid = change.iccid.as_str();
        if let Some(op) = &change.operation {
            let states: Vec<String> = op.from.iter().map(|s| format!("'{s}'")).collect();
            // The states are the router's constants, never input.
            let result = json_text(&op.result, "result")?;
            let updated = tx
                .execute(
                    &format!(
                        "UPDATE subscription_operations SET state = $2, result = $3, \
                         deadline = $4, updated_at = $5 WHERE id = $1 AND state IN ({})",
                        states.join(", ")
                    ),
                    &[
                        Arg::from(op.id.as_str()),
                        Arg::from(op.state),
                        Arg::from(result.as_str()),
                        Arg::from(op.deadline),
                        Arg::from(op.at),
                    ],
                )
                .await?;
            if updated == 0 {
                return Ok(Applied::Stale);
            }
        }
        if let Some((op, _)) = &change.start {
            // Taken with a conditional update (the row's lock holds it to the end of the
            // transaction), so two gateways never start two operations on one card.
            let taken = tx
                .execute(
                    "UPDATE card_sync SET operation_id = $2 WHERE iccid = $1 \
                     AND operation_id IS NULL \
                     AND (state = 'SYNCED' OR (state = 'DIRTY' AND $3 = 'AUDIT'))",
                    &[
                        Arg::from(iccid),
                        Arg::from(op.id.as_str()),
                        Arg::from(op.kind.as_str()),
                    ],
                )
                .await?;
            if taken == 0 {
                match Self::sync_in(tx, iccid).await? {
                    Some(current) => return Ok(Applied::Busy(Some(current))),
                    // Never touched: the first row; a concurrent first start fails its
                    // insert on the key and answers Busy.
                    None => {
                        let inserted = tx
                            .execute(
                                "INSERT INTO card_sync (iccid, state, operation_id, reason, \
                                 last_seq, audit_attempts, next_audit_at, updated_at) \
                                 VALUES ($1, 'PENDING', $2, '', 0, 0, NULL, $3) \
                                 ON CONFLICT (iccid) DO NOTHING",
                                &[
                                    Arg::from(iccid),
                                    Arg::from(op.id.as_str()),
                                    Arg::from(op.created_at),
                                ],
                            )
                            .await?;
                        if inserted == 0 {
                            return Ok(Applied::Busy(None));
                        }
                    }
                }
            }
            let params = json_text(&op.params, "params")?;
            let result = json_text(&op.result, "result")?;
            tx.execute(
                &format!(
                    "INSERT INTO subscription_operations ({OPERATION_COLUMNS}) VALUES \
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
                ),
                &[
                    Arg::from(op.id.as_str()),
                    Arg::from(op.account_id.as_str()),
                    Arg::from(op.iccid.as_str()),
                    Arg::from(op.kind.as_str()),
                    Arg::from(op.sub_id.map(i64::from)),
                    Arg::from(params.as_str()),
                    Arg::from(op.state.as_str()),
                    Arg::from(op.command_id.as_str()),
                    Arg::from(op.requested_by.as_str()),
                    Arg::from(result.as_str()),
                    Arg::from(op.deadline),
                    Arg::from(op.created_at),
                    Arg::from(op.updated_at),
                ],
            )
            .await
            .map_err(|e| match e.constraint {
                Some(Constraint::Unique) => StoreError::Duplicate {
                    what: "operation",
                    key: op.id.clone(),
                },
                Some(Constraint::ForeignKey) => StoreError::NotFound {
                    what: "account",
                    key: op.account_id.clone(),
                },
                None => e.error,
            })?;
        }
        if let Some(registry) = &change.registry {
            tx.execute(
                "DELETE FROM card_subscriptions WHERE iccid = $1",
                &[Arg::from(iccid)],
            )
            .await?;
            let rows: Vec<(&str, &StoredSubscription)> =
                registry.iter().map(|s| (iccid, s)).collect();
            insert_registry(self.dialect, tx, &rows).await?;
        }
        if let Some(sync) = &change.sync {
            Self::write_sync(tx, iccid, sync).await?;
        }
        if let Some(t) = &change.trail {
            let before = json_text(&t.before, "before")?;
            let after = json_text(&t.after, "after")?;
            tx.execute(
                "INSERT INTO card_audit_trail (account_id, iccid, at, what, who, operation_id, \
                 answer, state_before, state_after) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    Arg::from(change.account_id.as_str()),
                    Arg::from(iccid),
                    Arg::from(t.at),
                    Arg::from(t.what.as_str()),
                    Arg::from(t.who.as_str()),
                    Arg::from(t.operation_id.as_deref()),
                    Arg::from(t.answer.as_str()),
                    Arg::from(before.as_str()),
                    Arg::from(after.as_str()),
                ],
            )
            .await?;
        }
        if let Some(p) = &change.plan {
            tx.execute(
                "UPDATE bootstrap_plans SET actions = $2, state = $3, detail = $4, \
                 updated_at = $5 WHERE iccid = $1",
                &[
                    Arg::from(iccid),
                    Arg::from(i64::from(p.actions)),
                    Arg::from(p.state),
                    Arg::from(p.detail.as_str()),
                    Arg::from(change.at),
                ],
            )
            .await?;
        }
        if let Some((_, command)) = &change.start {
            match self.insert_commands_tx(tx, &[command], None).await {
                Ok(()) => {}
                Err(InsertFailure::Duplicate) => {
                    return Err(StoreError::Duplicate {
                        what: "command",
                        key: command.id.clone(),
                    })
                }
                Err(InsertFailure::ForeignKey) => {
                    return Err(StoreError::NotFound {
                        what: "account",
                        key: command.account_id.clone(),
                    })
                }
                Err(InsertFailure::Other(e)) => return Err(e),
            }
        }
        Ok(Applied::Done)
    }
}

/// Registry rows ((ICCID, subscription) pairs) in multi-row statements: a router change's
/// registry, or the factory registries of cards being provisioned.
pub(super) async fn insert_registry<E: Exec>(
    dialect: Dialect,
    tx: &mut E,
    rows: &[(&str, &StoredSubscription)],
) -> Result<(), StoreError> {
    for chunk in statement_chunks(rows) {
        let sql = format!(
            "INSERT INTO card_subscriptions (iccid, sub_id, imsi, enabled, fallback, \
             bootstrap, template) VALUES {}",
            values_clause(dialect, chunk.len(), 7)
        );
        let mut args = Vec::with_capacity(chunk.len() * 7);
        for &(iccid, s) in chunk {
            args.extend([
                Arg::from(iccid),
                Arg::from(i64::from(s.id)),
                Arg::from(s.imsi.as_str()),
                Arg::from(i64::from(s.enabled)),
                Arg::from(i64::from(s.fallback)),
                Arg::from(i64::from(s.bootstrap)),
                Arg::from(s.template.as_deref()),
            ]);
        }
        tx.execute(&sql, &args).await?;
    }
    Ok(())
}

#[async_trait]
impl SubscriptionStore for SqlStore {
    async fn registry(
        &self,
        account_id: &str,
        iccid: &str,
    ) -> Result<Option<CardRegistry>, StoreError> {
        let Some(card) = sqlx::query(&format!(
            "SELECT c.imsi AS imsi, s.iccid AS synced, {} FROM cards c \
             LEFT JOIN card_sync s ON s.iccid = c.iccid WHERE c.account_id = $1 AND c.iccid = $2",
            qualified("s", SYNC_COLUMNS)
        ))
        .bind(account_id)
        .bind(iccid)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?
        else {
            return Ok(None);
        };
        let synced: Option<String> = col(&card, "synced")?;
        // Never touched: the rows are the factory registry from the vendor file, if it
        // named more than the IMSI.
        let sync = synced.map(|_| sync_from_row(&card)).transpose()?;
        let rows = sqlx::query(
            "SELECT sub_id, imsi, enabled, fallback, bootstrap, template FROM card_subscriptions \
             WHERE iccid = $1 ORDER BY sub_id",
        )
        .bind(iccid)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        let mut subscriptions = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = col(row, "sub_id")?;
            let flag = |name: &str| col::<i64>(row, name).map(|v| v != 0);
            subscriptions.push(StoredSubscription {
                id: u8::try_from(id)
                    .map_err(|_| StoreError::Database(format!("column sub_id: {id}")))?,
                imsi: col(row, "imsi")?,
                enabled: flag("enabled")?,
                fallback: flag("fallback")?,
                bootstrap: flag("bootstrap")?,
                template: col(row, "template")?,
            });
        }
        Ok(Some(CardRegistry {
            account_id: account_id.to_string(),
            iccid: iccid.to_string(),
            imsi: col(&card, "imsi")?,
            subscriptions,
            sync,
        }))
    }

    async fn cards_by_msisdn(&self, msisdn: &str) -> Result<Vec<(String, String)>, StoreError> {
        let digits = msisdn.trim_start_matches('+');
        let rows = sqlx::query(
            "SELECT account_id, iccid FROM cards WHERE msisdn = $1 OR msisdn = $2 \
             ORDER BY created_at DESC, iccid LIMIT 8",
        )
        .bind(digits)
        .bind(format!("+{digits}"))
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|r| Ok((col(r, "account_id")?, col(r, "iccid")?)))
            .collect()
    }

    async fn apply(&self, change: &RouterChange) -> Result<Applied, StoreError> {
        let mut applied = self.apply_all(std::slice::from_ref(change)).await?;
        applied
            .pop()
            .ok_or_else(|| StoreError::Database("router change: no answer".into()))
    }

    async fn apply_all(&self, changes: &[RouterChange]) -> Result<Vec<Applied>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // With the command path's writes (one writer, one commit for both on SQLite).
        match self.grouped(Write::Router(changes.to_vec())).await? {
            Written::Applied(applied) => Ok(applied),
            other => Err(other.unexpected()),
        }
    }

    async fn operation(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<OperationRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM subscription_operations \
             WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?
        .as_ref()
        .map(operation_from_row)
        .transpose()
    }

    async fn sent_and_ended(
        &self,
        limit: u32,
    ) -> Result<Vec<(OperationRecord, CommandRecord)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM subscription_operations o JOIN commands c \
             ON c.account_id = o.account_id AND c.id = o.command_id \
             WHERE o.state = 'SENT' AND c.status IN ('SUCCESS', 'FAILED', 'CANCELLED', 'EXPIRED') \
             ORDER BY o.created_at LIMIT $1",
            qualified("o", OPERATION_COLUMNS)
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        let ops: Vec<OperationRecord> = rows
            .iter()
            .map(operation_from_row)
            .collect::<Result<_, _>>()?;
        // Their commands in a few statements, not one each.
        let ids: Vec<(String, String)> = ops
            .iter()
            .map(|o| (o.account_id.clone(), o.command_id.clone()))
            .collect();
        let mut commands: std::collections::HashMap<(String, String), CommandRecord> = self
            .commands_by_ids(&ids)
            .await?
            .into_iter()
            .map(|c| ((c.account_id.clone(), c.id.clone()), c))
            .collect();
        Ok(ops
            .into_iter()
            .filter_map(|o| {
                let c = commands.remove(&(o.account_id.clone(), o.command_id.clone()))?;
                Some((o, c))
            })
            .collect())
    }

    async fn overdue(&self, now: Millis, limit: u32) -> Result<Vec<OperationRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM subscription_operations \
             WHERE state = 'AWAITING_NOTIFICATION' AND deadline <= $1 ORDER BY deadline LIMIT $2"
        ))
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(operation_from_row).collect()
    }

    async fn awaiting_notification(
        &self,
        iccid: &str,
    ) -> Result<Option<OperationRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM subscription_operations \
             WHERE iccid = $1 AND state = 'AWAITING_NOTIFICATION' ORDER BY created_at LIMIT 1"
        ))
        .bind(iccid)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?
        .as_ref()
        .map(operation_from_row)
        .transpose()
    }

    async fn dirty_due(
        &self,
        now: Millis,
        limit: u32,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.account_id AS account_id, s.iccid AS iccid FROM card_sync s \
             JOIN cards c ON c.iccid = s.iccid \
             WHERE s.state = 'DIRTY' AND s.operation_id IS NULL \
             AND (s.next_audit_at IS NULL OR s.next_audit_at <= $1) \
             ORDER BY s.next_audit_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|r| Ok((col(r, "account_id")?, col(r, "iccid")?)))
            .collect()
    }

    async fn audit_trail(
        &self,
        account_id: &str,
        iccid: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TrailEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, at, what, who, operation_id, answer, state_before, state_after \
             FROM card_audit_trail WHERE account_id = $1 AND iccid = $2 AND seq < $3 \
             ORDER BY seq DESC LIMIT $4",
        )
        .bind(account_id)
        .bind(iccid)
        .bind(before_seq.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(trail_from_row).collect()
    }

    async fn create_template(
        &self,
        account_id: &str,
        template: &SubscriptionTemplate,
        now: Millis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO subscription_templates (account_id, name, spn, plmns, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(account_id)
        .bind(template.name.as_str())
        .bind(template.spn.as_str())
        .bind(json_text(&template.plmns, "plmns")?)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| map_insert(e, "template", &template.name, account_id))?;
        Ok(())
    }

    async fn template(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<SubscriptionTemplate>, StoreError> {
        sqlx::query(
            "SELECT name, spn, plmns FROM subscription_templates \
             WHERE account_id = $1 AND name = $2",
        )
        .bind(account_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?
        .as_ref()
        .map(template_from_row)
        .transpose()
    }

    async fn templates(&self, account_id: &str) -> Result<Vec<SubscriptionTemplate>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, spn, plmns FROM subscription_templates WHERE account_id = $1 \
             ORDER BY name",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(template_from_row).collect()
    }

    async fn card_access(
        &self,
        account_id: &str,
        iccid: &str,
    ) -> Result<Option<CardAccess>, StoreError> {
        let Some(row) = sqlx::query("SELECT account_id FROM cards WHERE iccid = $1")
            .bind(iccid)
            .fetch_optional(&self.pool)
            .await
            .map_err(dbe)?
        else {
            return Ok(None);
        };
        let owner_id: String = col(&row, "account_id")?;
        if owner_id == account_id {
            return Ok(Some(CardAccess {
                owner_id,
                owner: true,
                rights: Right::ALL.to_vec(),
            }));
        }
        // Grants on the owner's groups that hold the card.
        let rows = sqlx::query(
            "SELECT g.rights AS rights FROM card_group_grants g \
             JOIN card_groups cg ON cg.id = g.group_id \
             JOIN card_group_members m ON m.group_id = g.group_id \
             WHERE g.grantee_id = $1 AND m.iccid = $2 AND cg.account_id = $3",
        )
        .bind(account_id)
        .bind(iccid)
        .bind(owner_id.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        let mut rights = Vec::new();
        for r in &rows {
            let text: String = col(r, "rights")?;
            rights.extend(rights_of(&text));
        }
        rights.sort();
        rights.dedup();
        if rights.is_empty() {
            return Ok(None);
        }
        Ok(Some(CardAccess {
            owner_id,
            owner: false,
            rights,
        }))
    }

    async fn operation_by_id(&self, id: &str) -> Result<Option<OperationRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {OPERATION_COLUMNS} FROM subscription_operations WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?
        .as_ref()
        .map(operation_from_row)
        .transpose()
    }

    async fn grant(
        &self,
        owner_id: &str,
        group_id: i64,
        grantee_name: &str,
        rights: &[Right],
        now: Millis,
    ) -> Result<GrantRecord, StoreError> {
        self.owned_group(owner_id, group_id).await?;
        let grantee =
            self.account_by_name(grantee_name)
                .await?
                .ok_or_else(|| StoreError::Invalid {
                    field: "account".into(),
                    problem: format!("no account {grantee_name:?}"),
                })?;
        if grantee.id == owner_id {
            return Err(StoreError::Invalid {
                field: "account".into(),
                problem: "an account holds every right on its own cards".into(),
            });
        }
        let text = rights
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM card_group_grants WHERE group_id = $1 AND grantee_id = $2")
            .bind(group_id)
            .bind(grantee.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(dbe)?;
        sqlx::query(
            "INSERT INTO card_group_grants (group_id, grantee_id, rights, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(group_id)
        .bind(grantee.id.as_str())
        .bind(text.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        tx.commit().await.map_err(dbe)?;
        Ok(GrantRecord {
            group_id,
            grantee_id: grantee.id,
            grantee_name: grantee.name,
            rights: rights_of(&text),
            created_at: now,
        })
    }

    async fn revoke_grant(
        &self,
        owner_id: &str,
        group_id: i64,
        grantee_name: &str,
    ) -> Result<bool, StoreError> {
        self.owned_group(owner_id, group_id).await?;
        let removed = sqlx::query(
            "DELETE FROM card_group_grants WHERE group_id = $1 AND grantee_id IN \
             (SELECT id FROM accounts WHERE name = $2)",
        )
        .bind(group_id)
        .bind(grantee_name)
        .execute(&self.pool)
        .await
        .map_err(dbe)?
        .rows_affected();
        Ok(removed > 0)
    }

    async fn grants(&self, owner_id: &str, group_id: i64) -> Result<Vec<GrantRecord>, StoreError> {
        self.owned_group(owner_id, group_id).await?;
        let rows = sqlx::query(
            "SELECT g.group_id AS group_id, g.grantee_id AS grantee_id, a.name AS grantee_name, \
             g.rights AS rights, g.created_at AS created_at FROM card_group_grants g \
             JOIN accounts a ON a.id = g.grantee_id WHERE g.group_id = $1 ORDER BY a.name",
        )
        .bind(group_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(grant_from_row).collect()
    }

    async fn set_rule(
        &self,
        owner_id: &str,
        group_id: i64,
        rule: &BootstrapRule,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.owned_group(owner_id, group_id).await?;
        let text = json_text(rule, "rule")?;
        let mut tx = self.begin().await?;
        // A new rule keeps the IMSIs already handed out: a range is never reused.
        let updated = sqlx::query(
            "UPDATE bootstrap_rules SET rule = $2, trigger_on = $3, updated_at = $4 \
             WHERE group_id = $1",
        )
        .bind(group_id)
        .bind(text.as_str())
        .bind(rule.trigger.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?
        .rows_affected();
        if updated == 0 {
            sqlx::query(
                "INSERT INTO bootstrap_rules (group_id, account_id, rule, trigger_on, allocated, \
                 updated_at) VALUES ($1, $2, $3, $4, 0, $5)",
            )
            .bind(group_id)
            .bind(owner_id)
            .bind(text.as_str())
            .bind(rule.trigger.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(dbe)?;
        }
        tx.commit().await.map_err(dbe)
    }

    async fn rule(
        &self,
        owner_id: &str,
        group_id: i64,
    ) -> Result<Option<BootstrapRule>, StoreError> {
        let row =
            sqlx::query("SELECT rule FROM bootstrap_rules WHERE group_id = $1 AND account_id = $2")
                .bind(group_id)
                .bind(owner_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(dbe)?;
        row.map(|r| {
            let text: String = col(&r, "rule")?;
            serde_json::from_str(&text)
                .map_err(|e| StoreError::Database(format!("column rule: {e}")))
        })
        .transpose()
    }

    async fn new_plans(&self, limit: u32, now: Millis) -> Result<Vec<PlanRecord>, StoreError> {
        let rules = sqlx::query(
            "SELECT group_id, account_id, rule, allocated FROM bootstrap_rules \
             WHERE trigger_on = 'provisioning' ORDER BY group_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        let mut made = Vec::new();
        for r in &rules {
            let group_id: i64 = col(r, "group_id")?;
            let account_id: String = col(r, "account_id")?;
            let text: String = col(r, "rule")?;
            let rule: BootstrapRule = serde_json::from_str(&text)
                .map_err(|e| StoreError::Database(format!("column rule: {e}")))?;
            let room = limit.saturating_sub(made.len() as u32);
            if room == 0 {
                break;
            }
            let mut tx = self.begin().await?;
            // Read again under the transaction: the count a concurrent allocation left.
            let allocated: i64 =
                sqlx::query("SELECT allocated FROM bootstrap_rules WHERE group_id = $1")
                    .bind(group_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(dbe)
                    .and_then(|row| col(&row, "allocated"))?;
            let cards = sqlx::query(
                "SELECT m.iccid AS iccid FROM card_group_members m \
                 LEFT JOIN bootstrap_plans p ON p.iccid = m.iccid \
                 LEFT JOIN card_sync s ON s.iccid = m.iccid \
                 WHERE m.group_id = $1 AND p.iccid IS NULL AND s.iccid IS NULL \
                 ORDER BY m.iccid LIMIT $2",
            )
            .bind(group_id)
            .bind(i64::from(room))
            .fetch_all(&mut *tx)
            .await
            .map_err(dbe)?;
            if cards.is_empty() {
                tx.rollback().await.map_err(dbe)?;
                continue;
            }
            let iccids: Vec<String> = cards
                .iter()
                .map(|c| col(c, "iccid"))
                .collect::<Result<_, _>>()?;
            let plans = self
                .allocate_plans(
                    &mut tx,
                    group_id,
                    &account_id,
                    &rule,
                    allocated,
                    &iccids,
                    now,
                )
                .await?;
            tx.commit().await.map_err(dbe)?;
            made.extend(plans);
        }
        Ok(made)
    }

    async fn plan_on_report(
        &self,
        owner_id: &str,
        iccid: &str,
        now: Millis,
    ) -> Result<Option<PlanRecord>, StoreError> {
        let mut tx = self.begin().await?;
        let rule = sqlx::query(
            "SELECT r.group_id AS group_id, r.rule AS rule, r.allocated AS allocated \
             FROM bootstrap_rules r JOIN card_group_members m ON m.group_id = r.group_id \
             LEFT JOIN bootstrap_plans p ON p.iccid = m.iccid \
             WHERE m.iccid = $1 AND r.account_id = $2 AND r.trigger_on = 'notification' \
             AND p.iccid IS NULL ORDER BY r.group_id LIMIT 1",
        )
        .bind(iccid)
        .bind(owner_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(dbe)?;
        let Some(r) = rule else {
            tx.rollback().await.map_err(dbe)?;
            return Ok(None);
        };
        let group_id: i64 = col(&r, "group_id")?;
        let allocated: i64 = col(&r, "allocated")?;
        let text: String = col(&r, "rule")?;
        let rule: BootstrapRule = serde_json::from_str(&text)
            .map_err(|e| StoreError::Database(format!("column rule: {e}")))?;
        let mut plans = self
            .allocate_plans(
                &mut tx,
                group_id,
                owner_id,
                &rule,
                allocated,
                &[iccid.to_string()],
                now,
            )
            .await?;
        tx.commit().await.map_err(dbe)?;
        Ok(plans.pop())
    }

    async fn ready_plans(&self, limit: u32) -> Result<Vec<PlanRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM bootstrap_plans p LEFT JOIN card_sync s ON s.iccid = p.iccid \
             WHERE p.state = 'RUNNING' \
             AND (s.iccid IS NULL OR (s.operation_id IS NULL AND s.state = 'SYNCED')) \
             ORDER BY p.updated_at LIMIT $1",
            qualified("p", PLAN_COLUMNS)
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(plan_from_row).collect()
    }

    async fn plan_counts(
        &self,
        owner_id: &str,
        group_id: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM bootstrap_plans \
             WHERE account_id = $1 AND group_id = $2 GROUP BY state ORDER BY state",
        )
        .bind(owner_id)
        .bind(group_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|r| {
                let n: i64 = col(r, "n")?;
                Ok((col(r, "state")?, u64::try_from(n).unwrap_or(0)))
            })
            .collect()
    }
}
