//! [`ViewStore`] on the SQL store: the console's lists and counts, from columns that hold no
//! key value (the sealed ones are never selected).

use std::collections::BTreeMap;

use async_trait::async_trait;
use sqlx::any::AnyRow;

use super::{bad_column, col, dbe, to_u64, to_u8, SqlStore};
use crate::command::CardResponse;
use crate::store::views::{CommandFilter, CommandSummary, KeySetInfo, ViewStore};
use crate::store::{Millis, StoreError};

fn summary_from_row(row: &AnyRow) -> Result<CommandSummary, StoreError> {
    let command_type: String = col(row, "command_type")?;
    let status: String = col(row, "status")?;
    let response: Option<String> = col(row, "response")?;
    let response: Option<CardResponse> = response
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| bad_column("commands.response", e))?;
    Ok(CommandSummary {
        id: col(row, "id")?,
        command_type: command_type
            .parse()
            .map_err(|e| bad_column("commands.command_type", e))?,
        iccid: col(row, "iccid")?,
        transport: col(row, "transport")?,
        status: status
            .parse()
            .map_err(|e| bad_column("commands.status", e))?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        attempts: u32::try_from(col::<i64>(row, "attempts")?)
            .map_err(|e| bad_column("commands.attempts", e))?,
        last_sw: response.as_ref().and_then(|r| r.status_code),
        por: response.map(|r| (r.por_status, r.por_status_name)),
        error_code: col(row, "error_code")?,
    })
}

#[async_trait]
impl ViewStore for SqlStore {
    async fn command_counts_since(
        &self,
        account_id: &str,
        since: Millis,
    ) -> Result<BTreeMap<String, u64>, StoreError> {
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM commands WHERE account_id = $1 \
             AND created_at >= $2 GROUP BY status",
        )
        .bind(account_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|r| Ok((col(r, "status")?, to_u64(col(r, "n")?, "count")?)))
            .collect()
    }

    async fn command_page(
        &self,
        account_id: &str,
        filter: &CommandFilter,
    ) -> Result<Vec<CommandSummary>, StoreError> {
        /// A bind value, in placeholder order.
        enum Bind {
            Text(String),
            Int(i64),
        }
        let mut sql = String::from(
            "SELECT id, command_type, iccid, transport, status, created_at, updated_at, \
             attempts, response, error_code FROM commands WHERE account_id = $1",
        );
        let mut binds = vec![Bind::Text(account_id.to_string())];
        let mut and = |binds: &mut Vec<Bind>, column: &str, value: Bind| {
            binds.push(value);
            sql.push_str(&format!(" AND {column} = ${}", binds.len()));
        };
        if let Some(s) = filter.status {
            and(&mut binds, "status", Bind::Text(s.as_str().into()));
        }
        if let Some(t) = filter.command_type {
            and(&mut binds, "command_type", Bind::Text(t.as_str().into()));
        }
        if let Some(iccid) = filter.iccid.as_deref().filter(|i| !i.is_empty()) {
            and(&mut binds, "iccid", Bind::Text(iccid.into()));
        }
        if let Some((at, id)) = &filter.before {
            binds.push(Bind::Int(*at));
            binds.push(Bind::Text(id.clone()));
            let (n, i) = (binds.len() - 1, binds.len());
            sql.push_str(&format!(
                " AND (created_at < ${n} OR (created_at = ${n} AND id < ${i}))"
            ));
        }
        binds.push(Bind::Int(i64::from(filter.limit)));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ${}",
            binds.len()
        ));
        let mut q = sqlx::query(&sql);
        for b in binds {
            q = match b {
                Bind::Text(t) => q.bind(t),
                Bind::Int(i) => q.bind(i),
            };
        }
        let rows = q.fetch_all(&self.pool).await.map_err(dbe)?;
        rows.iter().map(summary_from_row).collect()
    }

    async fn key_set_info(
        &self,
        account_id: &str,
        iccid: &str,
    ) -> Result<Vec<KeySetInfo>, StoreError> {
        // COUNT(kik) says whether a KIK is stored without reading it (and reads as a 64-bit
        // integer on both backends).
        let rows = sqlx::query(
            "SELECT k.version AS version, k.kic_algorithm AS kic_algorithm, \
             k.kid_algorithm AS kid_algorithm, k.counter AS counter, k.rotated_at AS rotated_at, \
             COUNT(k.kik) AS kiks FROM key_sets k JOIN cards c ON c.iccid = k.iccid \
             WHERE c.account_id = $1 AND k.iccid = $2 \
             GROUP BY k.version, k.kic_algorithm, k.kid_algorithm, k.counter, k.rotated_at \
             ORDER BY k.version",
        )
        .bind(account_id)
        .bind(iccid)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|r| {
                Ok(KeySetInfo {
                    version: to_u8(col(r, "version")?, "key_sets.version")?,
                    kic_algorithm: col(r, "kic_algorithm")?,
                    kid_algorithm: col(r, "kid_algorithm")?,
                    has_kik: col::<i64>(r, "kiks")? > 0,
                    counter: to_u64(col(r, "counter")?, "key_sets.counter")?,
                    rotated_at: col(r, "rotated_at")?,
                })
            })
            .collect()
    }
}
