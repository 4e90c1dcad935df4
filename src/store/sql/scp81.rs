//! [`Scp81Store`] on the SQL store (SQLite and PostgreSQL, same SQL).

use async_trait::async_trait;
use sqlx::any::AnyRow;

use super::{col, dbe, map_insert, SqlStore};
use crate::store::scp81::{
    ChunkRecord, ChunkState, NewChunk, PskRecord, Scp81Store, ScriptKind, PSK_KEY_VERSIONS,
};
use crate::store::{Millis, StoreError};

const CHUNK_COLUMNS: &str = "account_id, command_id, seq, iccid, script, targeted_application, \
     kind, state, response, script_status, sends";

fn psk_aad(iccid: &str, version: u8) -> String {
    format!("scp81:{iccid}:{version}:psk")
}

fn chunk_from_row(row: &AnyRow) -> Result<ChunkRecord, StoreError> {
    let state: String = col(row, "state")?;
    Ok(ChunkRecord {
        account_id: col(row, "account_id")?,
        command_id: col(row, "command_id")?,
        seq: u32::try_from(col::<i64>(row, "seq")?).unwrap_or(u32::MAX),
        iccid: col(row, "iccid")?,
        script: col(row, "script")?,
        targeted_application: col(row, "targeted_application")?,
        // NULL in rows queued before the column existed: they were all GP scripts.
        kind: match col::<Option<String>>(row, "kind")? {
            None => ScriptKind::CardContent,
            Some(k) => ScriptKind::parse(&k)
                .ok_or_else(|| StoreError::Database(format!("chunk kind {k:?}")))?,
        },
        state: ChunkState::parse(&state)
            .ok_or_else(|| StoreError::Database(format!("chunk state {state:?}")))?,
        response: col(row, "response")?,
        script_status: col(row, "script_status")?,
        sends: u32::try_from(col::<i64>(row, "sends")?).unwrap_or(u32::MAX),
    })
}

impl SqlStore {
    fn psk_from_row(&self, row: &AnyRow) -> Result<PskRecord, StoreError> {
        let iccid: String = col(row, "iccid")?;
        let version = u8::try_from(col::<i64>(row, "version")?)
            .map_err(|_| StoreError::Database("scp81 key version out of range".into()))?;
        let sealed: Vec<u8> = col(row, "psk")?;
        Ok(PskRecord {
            key: self.open(&sealed, &psk_aad(&iccid, version))?,
            identity: col(row, "identity")?,
            iccid,
            version,
        })
    }
}

#[async_trait]
impl Scp81Store for SqlStore {
    async fn put_psk(
        &self,
        iccid: &str,
        version: u8,
        identity: &[u8],
        key: &[u8],
    ) -> Result<(), StoreError> {
        if !PSK_KEY_VERSIONS.contains(&version) {
            return Err(StoreError::Invalid {
                field: "version".into(),
                problem: format!("SCP81 key versions are 0x40 to 0x4F, not {version:#04x}"),
            });
        }
        if identity.is_empty() || identity.len() > 128 {
            return Err(StoreError::Invalid {
                field: "identity".into(),
                problem: "a PSK identity is 1 to 128 octets".into(),
            });
        }
        if key.is_empty() || key.len() > 64 {
            return Err(StoreError::Invalid {
                field: "key".into(),
                problem: "a PSK is 1 to 64 octets".into(),
            });
        }
        let sealed = self.seal(key, &psk_aad(iccid, version))?;
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM scp81_keys WHERE iccid = $1 AND version = $2")
            .bind(iccid)
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await
            .map_err(dbe)?;
        sqlx::query(
            "INSERT INTO scp81_keys (iccid, version, identity, psk) VALUES ($1, $2, $3, $4)",
        )
        .bind(iccid)
        .bind(i64::from(version))
        .bind(identity.to_vec())
        .bind(sealed)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_insert(e, "PSK identity", &hex::encode_upper(identity), iccid))?;
        tx.commit().await.map_err(dbe)
    }

    async fn psk(&self, iccid: &str, version: u8) -> Result<Option<PskRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT iccid, version, identity, psk FROM scp81_keys WHERE iccid = $1 AND version = $2",
        )
        .bind(iccid)
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.map(|r| self.psk_from_row(&r)).transpose()
    }

    async fn psk_by_identity(&self, identity: &[u8]) -> Result<Option<PskRecord>, StoreError> {
        let row =
            sqlx::query("SELECT iccid, version, identity, psk FROM scp81_keys WHERE identity = $1")
                .bind(identity.to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(dbe)?;
        row.map(|r| self.psk_from_row(&r)).transpose()
    }

    async fn queue_chunks(
        &self,
        account_id: &str,
        command_id: &str,
        iccid: &str,
        chunks: &[NewChunk],
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let existing = sqlx::query(
            "SELECT COUNT(*) AS n FROM admin_chunks WHERE account_id = $1 AND command_id = $2",
        )
        .bind(account_id)
        .bind(command_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(dbe)?;
        if col::<i64>(&existing, "n")? > 0 {
            tx.rollback().await.map_err(dbe)?;
            return Ok(false);
        }
        for (seq, chunk) in chunks.iter().enumerate() {
            sqlx::query(
                "INSERT INTO admin_chunks (account_id, command_id, seq, iccid, script, \
                 targeted_application, kind, state, response, script_status, sends, queued_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $8, 'QUEUED', NULL, NULL, 0, $7, $7)",
            )
            .bind(account_id)
            .bind(command_id)
            .bind(seq as i64)
            .bind(iccid)
            .bind(chunk.script.clone())
            .bind(chunk.targeted_application.clone())
            .bind(now)
            .bind(chunk.kind.as_str())
            .execute(&mut *tx)
            .await
            .map_err(dbe)?;
        }
        tx.commit().await.map_err(dbe)?;
        Ok(true)
    }

    async fn command_chunks(
        &self,
        account_id: &str,
        command_id: &str,
    ) -> Result<Vec<ChunkRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS} FROM admin_chunks WHERE account_id = $1 AND command_id = $2 \
             ORDER BY seq"
        ))
        .bind(account_id)
        .bind(command_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(chunk_from_row).collect()
    }

    async fn requeue_sent(&self, iccid: &str, now: Millis) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE admin_chunks SET state = 'QUEUED', updated_at = $2 \
             WHERE iccid = $1 AND state = 'SENT'",
        )
        .bind(iccid)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        Ok(r.rows_affected())
    }

    async fn sent_chunk(&self, iccid: &str) -> Result<Option<ChunkRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS} FROM admin_chunks WHERE iccid = $1 AND state = 'SENT' \
             ORDER BY queued_at, command_id, seq LIMIT 1"
        ))
        .bind(iccid)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.as_ref().map(chunk_from_row).transpose()
    }

    async fn card_chunk(
        &self,
        iccid: &str,
        command_id: &str,
        seq: u32,
    ) -> Result<Option<ChunkRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS} FROM admin_chunks WHERE iccid = $1 AND command_id = $2 \
             AND seq = $3"
        ))
        .bind(iccid)
        .bind(command_id)
        .bind(i64::from(seq))
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.as_ref().map(chunk_from_row).transpose()
    }

    async fn drop_queued(&self, account_id: &str, command_id: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM admin_chunks WHERE account_id = $1 AND command_id = $2 \
             AND state = 'QUEUED'",
        )
        .bind(account_id)
        .bind(command_id)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        Ok(r.rows_affected())
    }

    async fn next_chunk(
        &self,
        iccid: &str,
        now: Millis,
    ) -> Result<Option<ChunkRecord>, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(&format!(
            "SELECT {CHUNK_COLUMNS} FROM admin_chunks WHERE iccid = $1 AND state = 'QUEUED' \
             ORDER BY queued_at, command_id, seq LIMIT 1"
        ))
        .bind(iccid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(dbe)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(dbe)?;
            return Ok(None);
        };
        let mut chunk = chunk_from_row(&row)?;
        let updated = sqlx::query(
            "UPDATE admin_chunks SET state = 'SENT', sends = sends + 1, updated_at = $4 \
             WHERE account_id = $1 AND command_id = $2 AND seq = $3 AND state = 'QUEUED'",
        )
        .bind(&chunk.account_id)
        .bind(&chunk.command_id)
        .bind(i64::from(chunk.seq))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        tx.commit().await.map_err(dbe)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        chunk.state = ChunkState::Sent;
        chunk.sends += 1;
        Ok(Some(chunk))
    }

    async fn answer_chunk(
        &self,
        account_id: &str,
        command_id: &str,
        seq: u32,
        response: &[u8],
        script_status: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE admin_chunks SET state = 'ANSWERED', response = $4, script_status = $5, \
             updated_at = $6 WHERE account_id = $1 AND command_id = $2 AND seq = $3 \
             AND state = 'SENT'",
        )
        .bind(account_id)
        .bind(command_id)
        .bind(i64::from(seq))
        .bind(response.to_vec())
        .bind(script_status)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        Ok(r.rows_affected() == 1)
    }

    async fn drop_chunks(&self, account_id: &str, command_id: &str) -> Result<u64, StoreError> {
        let r = sqlx::query("DELETE FROM admin_chunks WHERE account_id = $1 AND command_id = $2")
            .bind(account_id)
            .bind(command_id)
            .execute(&self.pool)
            .await
            .map_err(dbe)?;
        Ok(r.rows_affected())
    }
}
