//! The outbox on SQL (see [`crate::store::outbox`]).
//!
//! Claims are one `UPDATE ... WHERE seq IN (SELECT ...) RETURNING`: the outer condition on the
//! lease is checked again on the row PostgreSQL locks, so two gateways claiming at once never
//! both get a row (the loser skips it); on PostgreSQL the inner select also skips rows another
//! claim has locked. SQLite has one writer at a time.

use async_trait::async_trait;
use sqlx::any::AnyRow;

use super::{col, dbe, Dialect, SqlStore, Tx};
use crate::events::{Event, OutboxEvent};
use crate::store::outbox::{OutboxRow, OutboxStore};
use crate::store::{Millis, StoreError};

/// Writes `events` for `account_id` if the account has a webhook (else nothing: no one
/// would receive them, and the command path stays one write lighter).
pub(super) async fn insert_outbox(
    tx: &mut Tx,
    account_id: &str,
    events: &[Event],
    at: Millis,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    // One statement per event, the webhook check inside it: no extra read on the command path.
    for event in events {
        sqlx::query(
            "INSERT INTO outbox (id, account_id, event_key, event, data, at) \
             SELECT $1, $2, $3, $4, $5, $6 \
             WHERE EXISTS (SELECT 1 FROM webhooks WHERE account_id = $2)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(account_id)
        .bind(event.key())
        .bind(event.name())
        .bind(event.data().to_string())
        .bind(at)
        .execute(&mut **tx)
        .await
        .map_err(dbe)?;
    }
    Ok(())
}

fn outbox_row(row: &AnyRow) -> Result<OutboxRow, StoreError> {
    let data: String = col(row, "data")?;
    let seq: i64 = col(row, "seq")?;
    Ok(OutboxRow {
        seq,
        id: col(row, "id")?,
        account_id: col(row, "account_id")?,
        event: col(row, "event")?,
        data: serde_json::from_str(&data)
            .map_err(|e| StoreError::Database(format!("outbox row {seq}: data: {e}")))?,
        at: col(row, "at")?,
    })
}

#[async_trait]
impl OutboxStore for SqlStore {
    async fn append_events(&self, events: &[OutboxEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        for e in events {
            insert_outbox(&mut tx, &e.account_id, std::slice::from_ref(&e.event), e.at).await?;
        }
        tx.commit().await.map_err(dbe)
    }

    async fn claim_outbox(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_accounts: &[String],
    ) -> Result<Vec<OutboxRow>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // A read first: an idle poll takes no write lock (on SQLite it would wait for the
        // command path's writer, holding one of the pool's few connections meanwhile).
        let claimable = sqlx::query(
            "SELECT 1 AS one FROM outbox WHERE lease_until IS NULL OR lease_until < $1 LIMIT 1",
        )
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        if claimable.is_none() {
            return Ok(Vec::new());
        }
        // $1 owner, $2 lease_until, $3 now, $4 limit, then the skipped accounts.
        let skip = if skip_accounts.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = (0..skip_accounts.len())
                .map(|i| format!("${}", i + 5))
                .collect();
            format!("AND o.account_id NOT IN ({})", list.join(", "))
        };
        let lock = match self.dialect {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "UPDATE outbox SET owner = $1, lease_until = $2 WHERE seq IN (\
               SELECT o.seq FROM outbox o \
               WHERE (o.lease_until IS NULL OR o.lease_until < $3) {skip} \
               AND NOT EXISTS (SELECT 1 FROM outbox p WHERE p.event_key = o.event_key \
                               AND p.seq < o.seq) \
               ORDER BY o.seq LIMIT $4 {lock}) \
             AND (lease_until IS NULL OR lease_until < $3) \
             RETURNING seq, id, account_id, event, data, at"
        );
        let mut q = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(limit));
        for a in skip_accounts {
            q = q.bind(a.as_str());
        }
        let rows = q.fetch_all(&self.pool).await.map_err(dbe)?;
        let mut claimed = rows.iter().map(outbox_row).collect::<Result<Vec<_>, _>>()?;
        claimed.sort_by_key(|r| r.seq);
        Ok(claimed)
    }

    async fn renew_outbox(&self, owner: &str, lease_until: Millis) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE outbox SET lease_until = $2 WHERE owner = $1")
            .bind(owner)
            .bind(lease_until)
            .execute(&self.pool)
            .await
            .map_err(dbe)?;
        Ok(done.rows_affected())
    }

    async fn finish_outbox(&self, owner: &str, seqs: &[i64]) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for chunk in seqs.chunks(500) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
            let sql = format!(
                "DELETE FROM outbox WHERE owner = $1 AND seq IN ({})",
                list.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(owner);
            for s in chunk {
                q = q.bind(*s);
            }
            deleted += q.execute(&self.pool).await.map_err(dbe)?.rows_affected();
        }
        Ok(deleted)
    }

    async fn release_outbox(
        &self,
        owner: &str,
        seqs: &[i64],
        not_before: Millis,
    ) -> Result<u64, StoreError> {
        let mut released = 0;
        for chunk in seqs.chunks(500) {
            let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "UPDATE outbox SET owner = NULL, lease_until = $2 WHERE owner = $1 AND seq IN ({})",
                list.join(", ")
            );
            let mut q = sqlx::query(&sql).bind(owner).bind(not_before);
            for s in chunk {
                q = q.bind(*s);
            }
            released += q.execute(&self.pool).await.map_err(dbe)?.rows_affected();
        }
        Ok(released)
    }

    async fn outbox_len(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM outbox")
            .fetch_one(&self.pool)
            .await
            .map_err(dbe)?;
        let n: i64 = col(&row, "n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
