//! [`UserStore`] on the SQL store (SQLite and PostgreSQL, same SQL).

use async_trait::async_trait;
use rand::RngCore;
use sqlx::any::AnyRow;

use super::{col, dbe, map_insert, token_hash, SqlStore};
use crate::store::users::{
    AuditEntry, NewSession, NewUser, Role, SessionRecord, UserRecord, UserStore,
};
use crate::store::{Millis, StoreError};

/// A user's columns (`u`) with its account's name (`a`).
const USER_COLUMNS: &str = "u.id AS id, u.account_id AS account_id, a.name AS account_name, \
     u.name AS name, u.role AS role, u.password_hash AS password_hash, u.created_at AS created_at";

fn user_from_row(row: &AnyRow) -> Result<UserRecord, StoreError> {
    let role: String = col(row, "role")?;
    Ok(UserRecord {
        id: col(row, "id")?,
        account_id: col(row, "account_id")?,
        account_name: col(row, "account_name")?,
        name: col(row, "name")?,
        role: Role::parse(&role)
            .ok_or_else(|| StoreError::Database(format!("column users.role: {role:?}")))?,
        password_hash: col(row, "password_hash")?,
        created_at: col(row, "created_at")?,
    })
}

/// 32 random octets, hex.
fn secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

#[async_trait]
impl UserStore for SqlStore {
    async fn create_user(&self, user: &NewUser, now: Millis) -> Result<UserRecord, StoreError> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query(
            "INSERT INTO users (id, account_id, name, role, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id.as_str())
        .bind(user.account_id.as_str())
        .bind(user.name.as_str())
        .bind(user.role.as_str())
        .bind(user.password_hash.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(|e| map_insert(e, "user", &user.name, &user.account_id))?;
        self.user_by_name(&user.name)
            .await?
            .ok_or_else(|| StoreError::Database(format!("user {} not read back", user.name)))
    }

    async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users u JOIN accounts a ON a.id = u.account_id \
             WHERE u.name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?
        .as_ref()
        .map(user_from_row)
        .transpose()
    }

    async fn create_session(
        &self,
        user_id: &str,
        now: Millis,
        expires_at: Millis,
    ) -> Result<NewSession, StoreError> {
        let session = NewSession {
            id: secret(),
            csrf: secret(),
        };
        sqlx::query(
            "INSERT INTO console_sessions (id_hash, user_id, csrf, created_at, last_seen, \
             expires_at) VALUES ($1, $2, $3, $4, $4, $5)",
        )
        .bind(token_hash(&session.id))
        .bind(user_id)
        .bind(session.csrf.as_str())
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| map_insert(e, "session", "", user_id))?;
        Ok(session)
    }

    async fn session(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {USER_COLUMNS}, s.csrf AS csrf, s.created_at AS s_created, \
             s.last_seen AS last_seen, s.expires_at AS expires_at FROM console_sessions s \
             JOIN users u ON u.id = s.user_id JOIN accounts a ON a.id = u.account_id \
             WHERE s.id_hash = $1"
        ))
        .bind(token_hash(id))
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            user: user_from_row(&row)?,
            csrf: col(&row, "csrf")?,
            created_at: col(&row, "s_created")?,
            last_seen: col(&row, "last_seen")?,
            expires_at: col(&row, "expires_at")?,
        }))
    }

    async fn touch_session(&self, id: &str, now: Millis) -> Result<(), StoreError> {
        sqlx::query("UPDATE console_sessions SET last_seen = $2 WHERE id_hash = $1")
            .bind(token_hash(id))
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(dbe)?;
        Ok(())
    }

    async fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE id_hash = $1")
            .bind(token_hash(id))
            .execute(&self.pool)
            .await
            .map_err(dbe)?;
        Ok(())
    }

    async fn record_action(&self, e: &AuditEntry) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO console_audit (account_id, at, user_name, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.account_id.as_str())
        .bind(e.at)
        .bind(e.user_name.as_str())
        .bind(e.action.as_str())
        .bind(e.target.as_str())
        .bind(e.detail.as_str())
        .execute(&self.pool)
        .await
        .map_err(|err| map_insert(err, "audit entry", &e.action, &e.account_id))?;
        Ok(())
    }

    async fn actions(
        &self,
        account_id: &str,
        target: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let q = match target {
            Some(t) => sqlx::query(
                "SELECT account_id, at, user_name, action, target, detail FROM console_audit \
                 WHERE account_id = $1 AND target = $2 ORDER BY seq DESC LIMIT $3",
            )
            .bind(account_id)
            .bind(t),
            None => sqlx::query(
                "SELECT account_id, at, user_name, action, target, detail FROM console_audit \
                 WHERE account_id = $1 ORDER BY seq DESC LIMIT $2",
            )
            .bind(account_id),
        };
        let rows = q
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(dbe)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    account_id: col(r, "account_id")?,
                    at: col(r, "at")?,
                    user_name: col(r, "user_name")?,
                    action: col(r, "action")?,
                    target: col(r, "target")?,
                    detail: col(r, "detail")?,
                })
            })
            .collect()
    }

    async fn delete_stale_sessions(
        &self,
        now: Millis,
        idle_before: Millis,
    ) -> Result<u64, StoreError> {
        let done =
            sqlx::query("DELETE FROM console_sessions WHERE expires_at <= $1 OR last_seen < $2")
                .bind(now)
                .bind(idle_before)
                .execute(&self.pool)
                .await
                .map_err(dbe)?;
        Ok(done.rows_affected())
    }
}
