//! The SQL store: one implementation on sqlx's `Any` driver for SQLite (embedded, the default)
//! and PostgreSQL (shared by several gateways).
//!
//! The SQL is the same on both backends (`$N` placeholders work on both), except for a few
//! dialect switches: the DDL types (see `schema.sql`), `BEGIN IMMEDIATE` on SQLite (every write
//! transaction takes the write lock up front, so it never fails upgrading a read lock) and
//! `FOR UPDATE SKIP LOCKED` when PostgreSQL gateways claim commands.
//!
//! The `Any` driver carries only i64, f64, text, bytes (and bool, unused): counters are stored
//! as 64-bit integers, timestamps as milliseconds, JSON as text, TAR and SPI as hex text, and
//! key values as AES-256-GCM sealed bytes (see [`super::sealing`]).

mod campaign;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::error::ErrorKind;
use sqlx::{Any, AnyPool, Executor, Row};

use super::subscriptions::StoredSubscription;
use deferred::Deferred;
use exec::{Arg, Constraint, Exec};

use super::{
    Account, AppletRecord, BatchRecord, CancelOutcome, CardChanges, CardDeleted, CardGroupRecord,
    CardKey, CardRecord, CardSearch, CommandRecord, CommandStats, GroupMembers, KeyMaterial,
    KeySetRecord, KeyVersionStatus, MasterKey, Millis, NewCard, NewCommand, NewProfile,
    ProfileRecord, SecuredPacket, Store, StoreError, TokenInfo, Transition, Webhook,
};
use crate::command::{
    CardResponse, CommandError, CommandEvent, CommandStatus, CommandType, Priority,
};

mod deferred;
mod exec;
mod group;
mod lane;
mod outbox;
mod scp81;
mod subscriptions;
mod users;
mod views;

/// The schema, with `{int}`, `{blob}` and `{serial}` for the dialect to fill in.
const SCHEMA: &str = include_str!("schema.sql");

/// Columns added to tables after their first release: (table, column, type). Nullable, so
/// rows written before read as NULL.
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    ("admin_chunks", "kind", "TEXT"),
    ("tokens", "id", "TEXT"),
    ("webhooks", "events", "TEXT"),
];

/// `store_meta` row holding the master key's check value (also its sealing AAD).
const MASTER_KEY_CHECK: &str = "master_key_check";
/// What the check value seals.
const MASTER_KEY_CHECK_TEXT: &[u8] = b"otagw master key check v1";

/// Advisory lock key serializing schema creation between PostgreSQL gateways starting at once.
const SCHEMA_LOCK_KEY: i64 = 0x6f74_6167_7701;

/// How long a SQLite connection waits for another writer, ms.
const SQLITE_BUSY_TIMEOUT_MS: u64 = 30_000;
/// Pool connections on a SQLite file (see `connect_with`).
const SQLITE_READERS: u32 = 4;

/// Rows per multi-row INSERT (the parameter count stays far below SQLite's 32766).
const CARD_CHUNK: usize = 500;
const KEY_SET_CHUNK: usize = 400;
const EVENT_CHUNK: usize = 500;

/// Status names of the commands a gateway may still work on.
const LIVE: &str = "('PENDING', 'SENT', 'DELIVERED')";

/// The columns of a command row, in the order [`SqlStore::command_from_row`] reads them.
const COMMAND_COLUMNS: &str = "account_id, id, batch_id, command_type, iccid, transport, \
     priority, request, status, created_at, updated_at, expires_at, sent_at, delivered_at, \
     completed_at, attempts, packet, counter, key_version, msisdn, tar, spi, kic, kid, \
     pending_kic, pending_kid, pending_kik, response, error, owner, lease_until";

/// Which SQL dialect a store speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

type Tx = sqlx::Transaction<'static, Any>;

/// The SQL store (SQLite or PostgreSQL).
pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    key: MasterKey,
    /// The command path's writes go through here (see [`group`]).
    group: Option<group::GroupCommit>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend_name())
            .finish_non_exhaustive()
    }
}

/// Backend settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SqlOptions {
    /// SQLite `synchronous = NORMAL` instead of `FULL`. In WAL mode NORMAL does not sync the
    /// log on each commit: commits survive a crash of the process (SIGKILL) but the last ones
    /// may be lost if the machine itself loses power, and with them counter reservations.
    /// About 2x the commits per second on this machine.
    pub sqlite_synchronous_normal: bool,
}

impl SqlStore {
    /// Connects to `url` and creates the schema if needed.
    ///
    /// `url` is `sqlite://path/to/file.db` (created if missing; its directory must exist),
    /// `sqlite::memory:` (one connection, gone when the store is dropped) or
    /// `postgres://user@host:port/database` (`postgresql://` too). Key values are sealed with
    /// `master_key` before they are written and opened with it when read.
    pub async fn connect(url: &str, master_key: MasterKey) -> Result<SqlStore, StoreError> {
        Self::connect_with(url, master_key, SqlOptions::default()).await
    }

    /// Connects with options (see [`SqlOptions`]).
    pub async fn connect_with(
        url: &str,
        master_key: MasterKey,
        sql_options: SqlOptions,
    ) -> Result<SqlStore, StoreError> {
        sqlx::any::install_default_drivers();
        let synchronous = if sql_options.sqlite_synchronous_normal {
            "PRAGMA synchronous = NORMAL"
        } else {
            "PRAGMA synchronous = FULL"
        };
        let target = parse_url(url)?;
        let options = match &target {
            // The group-commit writers hold one connection each; reads get the rest.
            Target::Postgres(_) => {
                AnyPoolOptions::new().max_connections(group::POSTGRES_LANES as u32 + 8)
            }
            Target::SqliteMemory => AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            Target::SqliteFile(..) => {
                // The command path writes on its own connection (the writer lane, see
                // `lane`); the pool's connections read, side by side in WAL mode, and make
                // the rarer writes (provisioning, campaigns, the outbox), which wait for the
                // lane in SQLite's busy handler.
                AnyPoolOptions::new()
                    .max_connections(SQLITE_READERS)
                    .after_connect(move |conn, _meta| {
                        Box::pin(async move {
                            conn.execute(
                                format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str(),
                            )
                            .await?;
                            conn.execute(synchronous).await?;
                            Ok(())
                        })
                    })
            }
        };
        let (dialect, connect_url) = match &target {
            Target::Postgres(u) => (Dialect::Postgres, u.clone()),
            Target::SqliteMemory => (Dialect::Sqlite, "sqlite::memory:".to_string()),
            Target::SqliteFile(u, _) => (Dialect::Sqlite, u.clone()),
        };
        let pool = options
            .acquire_timeout(Duration::from_secs(30))
            .connect(&connect_url)
            .await
            .map_err(|e| sql_error(format!("cannot connect to {}", redact(url)), e))?;
        if matches!(target, Target::SqliteFile(..)) {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(dbe)?;
        }
        let mut store = SqlStore {
            pool,
            dialect,
            key: master_key,
            group: None,
        };
        store.create_schema().await?;
        store.check_master_key().await?;
        let lane = match &target {
            Target::SqliteFile(_, path) => Some(lane::LaneSettings {
                path: path.clone(),
                synchronous_normal: sql_options.sqlite_synchronous_normal,
                busy_timeout_ms: SQLITE_BUSY_TIMEOUT_MS,
            }),
            _ => None,
        };
        store.group = Some(group::GroupCommit::start(
            SqlStore {
                pool: store.pool.clone(),
                dialect,
                key: store.key.clone(),
                group: None,
            },
            lane,
        ));
        Ok(store)
    }

    /// Checks the master key against the database: its check value if the database has one,
    /// else (a database from before check values) one sealed key set; then records the check
    /// value. A wrong key is refused here, before anything is read or written with it.
    async fn check_master_key(&self) -> Result<(), StoreError> {
        let row = sqlx::query("SELECT value FROM store_meta WHERE name = $1")
            .bind(MASTER_KEY_CHECK)
            .fetch_optional(&self.pool)
            .await
            .map_err(dbe)?;
        if let Some(row) = row {
            let sealed: Vec<u8> = col(&row, "value")?;
            return match self.open(&sealed, MASTER_KEY_CHECK) {
                Ok(v) if v == MASTER_KEY_CHECK_TEXT => Ok(()),
                _ => Err(StoreError::WrongMasterKey(
                    "its check value does not open".into(),
                )),
            };
        }
        let sample = sqlx::query(
            "SELECT iccid, version, kic_algorithm, kid_algorithm, kic, kid, kik, counter, \
             rotated_at FROM key_sets LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        if let Some(row) = sample {
            if let Err(StoreError::Sealing(_)) = self.key_set_from_row(&row) {
                let iccid: String = col(&row, "iccid")?;
                let version: i64 = col(&row, "version")?;
                return Err(StoreError::WrongMasterKey(format!(
                    "card {iccid}'s key set {version} does not open"
                )));
            }
        }
        let sealed = self.seal(MASTER_KEY_CHECK_TEXT, MASTER_KEY_CHECK)?;
        // Another gateway may record it at the same moment: the first one stays.
        let inserted = sqlx::query(
            "INSERT INTO store_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(MASTER_KEY_CHECK)
        .bind(sealed)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        if inserted.rows_affected() == 0 {
            return Box::pin(self.check_master_key()).await;
        }
        Ok(())
    }

    /// Closes the connections (waits for those in use to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn backend_name(&self) -> &'static str {
        match self.dialect {
            Dialect::Sqlite => "sqlite",
            Dialect::Postgres => "postgres",
        }
    }

    /// The schema statements for this dialect.
    fn schema_statements(&self) -> Vec<String> {
        let (int, blob, serial) = match self.dialect {
            Dialect::Sqlite => ("INTEGER", "BLOB", "INTEGER PRIMARY KEY"),
            Dialect::Postgres => ("BIGINT", "BYTEA", "BIGSERIAL PRIMARY KEY"),
        };
        let text: String = SCHEMA
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        text.split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.replace("{int}", int)
                    .replace("{blob}", blob)
                    .replace("{serial}", serial)
            })
            .collect()
    }

    async fn create_schema(&self) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        if self.dialect == Dialect::Postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(SCHEMA_LOCK_KEY)
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_error("schema lock", e))?;
        }
        for statement in self.schema_statements() {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_error("schema", e))?;
        }
        for (table, column, ty) in ADDED_COLUMNS {
            self.add_column(&mut tx, table, column, ty).await?;
        }
        // Tokens made before tokens had ids get one, so they can be listed and revoked.
        let unnamed = sqlx::query("SELECT token_hash FROM tokens WHERE id IS NULL")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| sql_error("schema: tokens.id", e))?;
        for row in &unnamed {
            let hash: String = col(row, "token_hash")?;
            sqlx::query("UPDATE tokens SET id = $1 WHERE token_hash = $2")
                .bind(uuid::Uuid::new_v4().to_string())
                .bind(hash)
                .execute(&mut *tx)
                .await
                .map_err(|e| sql_error("schema: tokens.id", e))?;
        }
        tx.commit().await.map_err(dbe)
    }

    /// Deletes row `id` of `table` if it belongs to the account; another account's row is
    /// NotFound like a missing one. `table` is one of ours, never input.
    async fn delete_owned(
        &self,
        table: &'static str,
        what: &'static str,
        account_id: &str,
        id: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&format!(
            "DELETE FROM {table} WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what,
                key: id.to_string(),
            });
        }
        Ok(())
    }

    /// Adds a column a later version put in `schema.sql` to a table an earlier version
    /// created (`CREATE TABLE IF NOT EXISTS` leaves such a table as it was).
    async fn add_column(
        &self,
        tx: &mut Tx,
        table: &str,
        column: &str,
        ty: &str,
    ) -> Result<(), StoreError> {
        let present = match self.dialect {
            Dialect::Sqlite => {
                sqlx::query("SELECT COUNT(*) AS n FROM pragma_table_info($2) WHERE name = $1")
            }
            Dialect::Postgres => sqlx::query(
                "SELECT COUNT(*) AS n FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $2 AND column_name = $1",
            ),
        }
        .bind(column)
        .bind(table)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| sql_error(format!("schema: {table}.{column}"), e))?;
        if col::<i64>(&present, "n")? == 0 {
            sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}"))
                .execute(&mut **tx)
                .await
                .map_err(|e| sql_error(format!("schema: {table}.{column}"), e))?;
        }
        Ok(())
    }

    /// Begins a write transaction (on SQLite it takes the write lock at once).
    async fn begin(&self) -> Result<Tx, StoreError> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
        .map_err(dbe)
    }

    /// Inserts cards and their sealed key sets in `tx`; on a duplicate ICCID returns the
    /// chunk that failed (the transaction is then unusable: roll it back and call
    /// [`Self::name_duplicate`]).
    async fn insert_card_rows<'c>(
        &self,
        tx: &mut Tx,
        account_id: &str,
        cards: &'c [NewCard],
        attributes: &[String],
        now: Millis,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Option<&'c [NewCard]>, StoreError> {
        let full_chunk_sql = format!(
            "INSERT INTO cards (iccid, account_id, imsi, msisdn, attributes, created_at) VALUES {}",
            values_clause(self.dialect, CARD_CHUNK, 6)
        );
        for (chunk_no, chunk) in cards.chunks(CARD_CHUNK).enumerate() {
            let partial_sql;
            let sql = if chunk.len() == CARD_CHUNK {
                full_chunk_sql.as_str()
            } else {
                partial_sql = format!(
                    "INSERT INTO cards (iccid, account_id, imsi, msisdn, attributes, created_at) \
                     VALUES {}",
                    values_clause(self.dialect, chunk.len(), 6)
                );
                partial_sql.as_str()
            };
            let mut q = sqlx::query(sql);
            for (i, card) in chunk.iter().enumerate() {
                let attrs = attributes
                    .get(chunk_no * CARD_CHUNK + i)
                    .map_or("{}", String::as_str);
                q = q
                    .bind(card.iccid.as_str())
                    .bind(account_id)
                    .bind(card.imsi.as_deref())
                    .bind(card.msisdn.as_deref())
                    .bind(attrs)
                    .bind(now);
            }
            if let Err(e) = q.execute(&mut **tx).await {
                if kind(&e) == Some(ErrorKind::UniqueViolation) {
                    return Ok(Some(chunk));
                }
                return Err(dbe(e));
            }
            progress(chunk.len() as u64);
        }

        // Key sets, sealed.
        let key_sets: Vec<(&NewCard, &KeySetRecord)> = cards
            .iter()
            .flat_map(|c| c.key_sets.iter().map(move |ks| (c, ks)))
            .collect();
        let full_chunk_sql = format!(
            "INSERT INTO key_sets (iccid, version, kic_algorithm, kid_algorithm, kic, kid, kik, \
             counter, rotated_at) VALUES {}",
            values_clause(self.dialect, KEY_SET_CHUNK, 9)
        );
        for chunk in key_sets.chunks(KEY_SET_CHUNK) {
            let partial_sql;
            let sql = if chunk.len() == KEY_SET_CHUNK {
                full_chunk_sql.as_str()
            } else {
                partial_sql = format!(
                    "INSERT INTO key_sets (iccid, version, kic_algorithm, kid_algorithm, kic, \
                     kid, kik, counter, rotated_at) VALUES {}",
                    values_clause(self.dialect, chunk.len(), 9)
                );
                partial_sql.as_str()
            };
            let mut q = sqlx::query(sql);
            for (card, ks) in chunk {
                let (kic, kid, kik) =
                    self.seal_keys(&key_set_prefix(&card.iccid, ks.version), &ks.keys)?;
                q = q
                    .bind(card.iccid.as_str())
                    .bind(i64::from(ks.version))
                    .bind(ks.kic_algorithm.map(|a| a.name()))
                    .bind(ks.kid_algorithm.map(|a| a.name()))
                    .bind(kic)
                    .bind(kid)
                    .bind(kik)
                    .bind(to_i64(ks.counter, "key set counter")?)
                    .bind(ks.rotated_at);
            }
            q.execute(&mut **tx).await.map_err(dbe)?;
            progress(chunk.len() as u64);
        }

        // Factory registries, for the cards whose vendor line names more than their IMSI
        // (the others' registry is implied by their IMSI: see `subscription::Known`).
        let factory: Vec<(&str, StoredSubscription)> = cards
            .iter()
            .filter(|c| !c.factory_subscriptions.is_empty())
            .flat_map(|c| {
                let first = c
                    .imsi
                    .as_deref()
                    .map(|imsi| StoredSubscription::factory(1, imsi));
                first
                    .into_iter()
                    .chain(
                        c.factory_subscriptions
                            .iter()
                            .map(|f| StoredSubscription::factory(f.id, &f.imsi)),
                    )
                    .map(move |s| (c.iccid.as_str(), s))
            })
            .collect();
        let rows: Vec<(&str, &StoredSubscription)> =
            factory.iter().map(|(iccid, s)| (*iccid, s)).collect();
        subscriptions::insert_registry(self.dialect, tx, &rows).await?;
        Ok(None)
    }

    /// The Duplicate error for a chunk of cards that failed on a unique ICCID.
    async fn name_duplicate(&self, chunk: &[NewCard]) -> StoreError {
        let sql = format!(
            "SELECT iccid FROM cards WHERE iccid IN ({}) ORDER BY iccid",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for card in chunk {
            q = q.bind(card.iccid.as_str());
        }
        let key = match q.fetch_optional(&self.pool).await {
            Ok(Some(row)) => col::<String>(&row, "iccid").unwrap_or_default(),
            Ok(None) => chunk.first().map(|c| c.iccid.clone()).unwrap_or_default(),
            Err(e) => return dbe(e),
        };
        StoreError::Duplicate { what: "card", key }
    }

    /// Whether a profile of this account exists (in `tx`).
    async fn profile_exists(
        &self,
        tx: &mut Tx,
        account_id: &str,
        profile_id: i64,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT id FROM profiles WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(profile_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(dbe)?;
        Ok(row.is_some())
    }

    /// Creates a group row in `tx`, naming a duplicate name.
    async fn insert_group(
        &self,
        tx: &mut Tx,
        account_id: &str,
        profile_id: i64,
        name: &str,
        now: Millis,
    ) -> Result<i64, StoreError> {
        let exists = sqlx::query("SELECT id FROM card_groups WHERE profile_id = $1 AND name = $2")
            .bind(profile_id)
            .bind(name)
            .fetch_optional(&mut **tx)
            .await
            .map_err(dbe)?;
        if exists.is_some() {
            return Err(StoreError::Duplicate {
                what: "card group",
                key: name.to_string(),
            });
        }
        let row = sqlx::query(
            "INSERT INTO card_groups (account_id, profile_id, name, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(account_id)
        .bind(profile_id)
        .bind(name)
        .bind(now)
        .fetch_one(&mut **tx)
        .await
        .map_err(|e| map_insert(e, "card group", name, account_id))?;
        col(&row, "id")
    }

    // Sealing: the associated data names the row and the field.

    fn seal(&self, value: &[u8], aad: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.key.try_seal(value, aad)?)
    }

    fn open(&self, sealed: &[u8], aad: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.key.open(sealed, aad)?)
    }

    fn open_keys(
        &self,
        prefix: &str,
        kic: &[u8],
        kid: &[u8],
        kik: Option<&[u8]>,
    ) -> Result<KeyMaterial, StoreError> {
        Ok(KeyMaterial {
            kic: self.open(kic, &format!("{prefix}:kic"))?,
            kid: self.open(kid, &format!("{prefix}:kid"))?,
            kik: kik
                .map(|k| self.open(k, &format!("{prefix}:kik")))
                .transpose()?,
        })
    }

    /// Sealed (kic, kid, kik) of key material.
    #[allow(clippy::type_complexity)]
    fn seal_keys(
        &self,
        prefix: &str,
        keys: &KeyMaterial,
    ) -> Result<(Vec<u8>, Vec<u8>, Option<Vec<u8>>), StoreError> {
        Ok((
            self.seal(&keys.kic, &format!("{prefix}:kic"))?,
            self.seal(&keys.kid, &format!("{prefix}:kid"))?,
            keys.kik
                .as_ref()
                .map(|k| self.seal(k, &format!("{prefix}:kik")))
                .transpose()?,
        ))
    }

    fn command_from_row(&self, row: &AnyRow) -> Result<CommandRecord, StoreError> {
        let account_id: String = col(row, "account_id")?;
        let id: String = col(row, "id")?;
        let command_type: String = col(row, "command_type")?;
        let command_type: CommandType = command_type
            .parse()
            .map_err(|e| bad_column("commands.command_type", e))?;
        let status: String = col(row, "status")?;
        let status: CommandStatus = status
            .parse()
            .map_err(|e| bad_column("commands.status", e))?;
        let request: String = col(row, "request")?;
        let request: serde_json::Value =
            serde_json::from_str(&request).map_err(|e| bad_column("commands.request", e))?;
        let response: Option<String> = col(row, "response")?;
        let response: Option<CardResponse> = response
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| bad_column("commands.response", e))?;
        let error: Option<String> = col(row, "error")?;
        let error: Option<CommandError> = error
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| bad_column("commands.error", e))?;
        let attempts: i64 = col(row, "attempts")?;
        let attempts = u32::try_from(attempts).map_err(|e| bad_column("commands.attempts", e))?;

        let packet: Option<Vec<u8>> = col(row, "packet")?;
        let secured = match packet {
            None => None,
            Some(packet) => {
                let counter: Option<i64> = col(row, "counter")?;
                let key_version: Option<i64> = col(row, "key_version")?;
                let msisdn: Option<String> = col(row, "msisdn")?;
                let tar: Option<String> = col(row, "tar")?;
                let spi: Option<String> = col(row, "spi")?;
                let kic: Option<i64> = col(row, "kic")?;
                let kid: Option<i64> = col(row, "kid")?;
                let pending_kic: Option<Vec<u8>> = col(row, "pending_kic")?;
                let pending_kid: Option<Vec<u8>> = col(row, "pending_kid")?;
                let pending_kik: Option<Vec<u8>> = col(row, "pending_kik")?;
                let pending_keys = match (pending_kic, pending_kid) {
                    (Some(kic), Some(kid)) => Some(self.open_keys(
                        &pending_prefix(&account_id, &id),
                        &kic,
                        &kid,
                        pending_kik.as_deref(),
                    )?),
                    (None, None) => None,
                    _ => {
                        return Err(StoreError::Database(
                            "column commands.pending_kic/pending_kid: only one of them is set"
                                .into(),
                        ))
                    }
                };
                Some(SecuredPacket {
                    packet,
                    counter: to_u64(required(counter, "commands.counter")?, "commands.counter")?,
                    key_version: to_u8(
                        required(key_version, "commands.key_version")?,
                        "commands.key_version",
                    )?,
                    msisdn: required(msisdn, "commands.msisdn")?,
                    tar: hex_array(&required(tar, "commands.tar")?, "commands.tar")?,
                    spi: hex_array(&required(spi, "commands.spi")?, "commands.spi")?,
                    kic: to_u8(required(kic, "commands.kic")?, "commands.kic")?,
                    kid: to_u8(required(kid, "commands.kid")?, "commands.kid")?,
                    pending_keys,
                })
            }
        };

        Ok(CommandRecord {
            batch_id: col(row, "batch_id")?,
            command_type,
            iccid: col(row, "iccid")?,
            transport: col(row, "transport")?,
            priority: Priority::from_rank(col(row, "priority")?),
            request,
            status,
            created_at: col(row, "created_at")?,
            updated_at: col(row, "updated_at")?,
            expires_at: col(row, "expires_at")?,
            sent_at: col(row, "sent_at")?,
            delivered_at: col(row, "delivered_at")?,
            completed_at: col(row, "completed_at")?,
            attempts,
            secured,
            response,
            error,
            owner: col(row, "owner")?,
            lease_until: col(row, "lease_until")?,
            account_id,
            id,
        })
    }

    fn commands_from_rows(&self, rows: &[AnyRow]) -> Result<Vec<CommandRecord>, StoreError> {
        rows.iter().map(|r| self.command_from_row(r)).collect()
    }

    /// Inserts commands (PENDING) with their CREATED events, in multi-row statements.
    /// On a unique violation the caller's transaction is unusable: the error says so
    /// with [`InsertFailure::Duplicate`] so the caller can find which id after rolling back.
    async fn insert_commands_tx<E: Exec>(
        &self,
        tx: &mut E,
        commands: &[&NewCommand],
        batch_id: Option<&str>,
    ) -> Result<(), InsertFailure> {
        let mut requests = Vec::with_capacity(commands.len());
        for c in commands {
            let request = serde_json::to_string(&c.request).map_err(|e| {
                InsertFailure::Other(StoreError::Invalid {
                    field: "request".into(),
                    problem: e.to_string(),
                })
            })?;
            requests.push(request);
        }
        const COLS: usize = 12;
        let mut first = 0;
        for chunk in deferred::statement_chunks(commands) {
            let sql = format!(
                "INSERT INTO commands (account_id, id, batch_id, command_type, iccid, transport, \
                 priority, request, status, created_at, updated_at, expires_at) VALUES {}",
                values_clause(self.dialect, chunk.len(), COLS)
            );
            let mut args: Vec<Arg<'_>> = Vec::with_capacity(chunk.len() * COLS);
            for (i, c) in chunk.iter().enumerate() {
                args.extend([
                    Arg::from(&c.account_id),
                    Arg::from(&c.id),
                    Arg::from(batch_id.or(c.batch_id.as_deref())),
                    Arg::from(c.command_type.as_str()),
                    Arg::from(&c.iccid),
                    Arg::from(&c.transport),
                    Arg::from(c.priority.rank()),
                    Arg::from(&requests[first + i]),
                    Arg::from(CommandStatus::Pending.as_str()),
                    Arg::from(c.created_at),
                    Arg::from(c.created_at),
                    Arg::from(c.expires_at),
                ]);
            }
            first += chunk.len();
            tx.execute(&sql, &args)
                .await
                .map_err(|e| match e.constraint {
                    Some(Constraint::Unique) => InsertFailure::Duplicate,
                    Some(Constraint::ForeignKey) => InsertFailure::ForeignKey,
                    None => InsertFailure::Other(e.error),
                })?;
        }
        let events: Vec<EventRow<'_>> = commands
            .iter()
            .map(|c| EventRow {
                account_id: &c.account_id,
                command_id: &c.id,
                at: c.created_at,
                kind: "CREATED",
                detail: "",
            })
            .collect();
        insert_events(self.dialect, tx, &events)
            .await
            .map_err(InsertFailure::Other)?;
        Ok(())
    }

    /// Which of `ids` already exist for `account_id` (after a unique violation).
    async fn existing_command(
        &self,
        account_id: &str,
        ids: &[&str],
    ) -> Result<Option<String>, StoreError> {
        for chunk in ids.chunks(EVENT_CHUNK) {
            let sql = format!(
                "SELECT id FROM commands WHERE account_id = $1 AND id IN ({}) ORDER BY id",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(account_id);
            for id in chunk {
                q = q.bind(*id);
            }
            if let Some(row) = q.fetch_optional(&self.pool).await.map_err(dbe)? {
                return Ok(Some(col(&row, "id")?));
            }
        }
        Ok(None)
    }

    async fn account_exists(&self, tx: &mut Tx, account_id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT id FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(dbe)?
            .is_some())
    }

    async fn key_versions(
        &self,
        sql: &str,
        binds: (&str, Option<i64>),
    ) -> Result<HashMap<String, Vec<KeyVersionStatus>>, StoreError> {
        let mut q = sqlx::query(sql).bind(binds.0);
        if let Some(limit) = binds.1 {
            q = q.bind(limit);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(dbe)?;
        let mut out: HashMap<String, Vec<KeyVersionStatus>> = HashMap::new();
        for row in &rows {
            let iccid: String = col(row, "iccid")?;
            if let Some(k) = key_version_from_row(row)? {
                out.entry(iccid).or_default().push(k);
            }
        }
        Ok(out)
    }
}

/// Why a multi-row insert failed.
enum InsertFailure {
    /// A unique key exists already (which one is found afterwards).
    Duplicate,
    /// A referenced row (the account) is missing.
    ForeignKey,
    /// Anything else.
    Other(StoreError),
}

/// One event to append.
struct EventRow<'a> {
    account_id: &'a str,
    command_id: &'a str,
    at: Millis,
    kind: &'a str,
    detail: &'a str,
}

async fn insert_events<E: Exec>(
    dialect: Dialect,
    tx: &mut E,
    events: &[EventRow<'_>],
) -> Result<(), StoreError> {
    for chunk in deferred::statement_chunks(events) {
        let sql = format!(
            "INSERT INTO command_events (account_id, command_id, at, kind, detail) VALUES {}",
            values_clause(dialect, chunk.len(), 5)
        );
        let mut args: Vec<Arg<'_>> = Vec::with_capacity(chunk.len() * 5);
        for e in chunk {
            args.extend([
                Arg::from(e.account_id),
                Arg::from(e.command_id),
                Arg::from(e.at),
                Arg::from(e.kind),
                Arg::from(e.detail),
            ]);
        }
        tx.execute(&sql, &args)
            .await
            .map_err(|e| match e.constraint {
                Some(Constraint::ForeignKey) => StoreError::NotFound {
                    what: "command",
                    key: chunk
                        .first()
                        .map(|e| e.command_id.to_string())
                        .unwrap_or_default(),
                },
                _ => e.error,
            })?;
    }
    Ok(())
}

async fn insert_event(
    dialect: Dialect,
    tx: &mut Tx,
    account_id: &str,
    command_id: &str,
    at: Millis,
    kind: &str,
    detail: &str,
) -> Result<(), StoreError> {
    insert_events(
        dialect,
        tx,
        &[EventRow {
            account_id,
            command_id,
            at,
            kind,
            detail,
        }],
    )
    .await
}

/// Where a URL leads.
enum Target {
    /// `postgres://...` as given.
    Postgres(String),
    /// `sqlite::memory:`.
    SqliteMemory,
    /// The sqlx URL of a SQLite file (created if missing).
    SqliteFile(String, std::path::PathBuf),
}

fn parse_url(url: &str) -> Result<Target, StoreError> {
    let invalid = |problem: String| StoreError::Invalid {
        field: "database url".into(),
        problem,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Target::Postgres(url.to_string()));
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        return Err(invalid(format!(
            "{:?}: expected sqlite://PATH, sqlite::memory: or postgres://USER@HOST/DATABASE",
            redact(url)
        )));
    };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    if rest == ":memory:" || rest.is_empty() {
        return Ok(Target::SqliteMemory);
    }
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(invalid(format!("{url:?}: no file path")));
    }
    let file = Path::new(path);
    if let Some(parent) = file.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            return Err(invalid(format!(
                "{url:?}: directory {} does not exist",
                parent.display()
            )));
        }
    }
    if file.is_dir() {
        return Err(invalid(format!("{url:?}: {path} is a directory")));
    }
    let query = match query {
        Some(q) if q.split('&').any(|kv| kv.starts_with("mode=")) => q.to_string(),
        Some(q) if !q.is_empty() => format!("{q}&mode=rwc"),
        _ => "mode=rwc".to_string(),
    };
    Ok(Target::SqliteFile(
        format!("sqlite://{path}?{query}"),
        file.to_path_buf(),
    ))
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

fn dbe(e: sqlx::Error) -> StoreError {
    sql_error("query", e)
}

/// A driver error, what the store was doing, and the driver's error kept as the source.
fn sql_error(context: impl Into<String>, source: sqlx::Error) -> StoreError {
    StoreError::Sql {
        context: context.into(),
        source,
    }
}

fn kind(e: &sqlx::Error) -> Option<ErrorKind> {
    match e {
        sqlx::Error::Database(d) => Some(d.kind()),
        _ => None,
    }
}

/// Maps a unique violation to `Duplicate { what, key }`, a foreign-key violation to
/// `NotFound { what: "account", key: account_id }`, anything else to `Database`.
fn map_insert(e: sqlx::Error, what: &'static str, key: &str, account_id: &str) -> StoreError {
    match kind(&e) {
        Some(ErrorKind::UniqueViolation) => StoreError::Duplicate {
            what,
            key: key.to_string(),
        },
        Some(ErrorKind::ForeignKeyViolation) => StoreError::NotFound {
            what: "account",
            key: account_id.to_string(),
        },
        _ => dbe(e),
    }
}

fn col<'r, T>(row: &'r AnyRow, name: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get::<T, _>(name)
        .map_err(|e| sql_error(format!("column {name}"), e))
}

fn bad_column(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("column {column}: {e}"))
}

fn required<T>(v: Option<T>, column: &str) -> Result<T, StoreError> {
    v.ok_or_else(|| bad_column(column, "NULL in a secured command"))
}

fn to_u64(v: i64, column: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| bad_column(column, format!("negative value {v}")))
}

fn to_u8(v: i64, column: &str) -> Result<u8, StoreError> {
    u8::try_from(v).map_err(|_| bad_column(column, format!("value {v} out of range 0..=255")))
}

fn to_i64(v: u64, field: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid {
        field: field.to_string(),
        problem: format!("{v} is too large"),
    })
}

fn hex_array<const N: usize>(s: &str, column: &str) -> Result<[u8; N], StoreError> {
    let bytes = hex::decode(s).map_err(|e| bad_column(column, e))?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| bad_column(column, format!("{} octets, expected {N}", bytes.len())))
}

fn json_text<T: serde::Serialize>(v: &T, field: &str) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid {
        field: field.to_string(),
        problem: e.to_string(),
    })
}

/// `$start, $start+1, ...` (`count` of them).
fn placeholders(start: usize, count: usize) -> String {
    (start..start + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2, ...), (...), ...` for `rows` rows of `cols` columns; on SQLite `(?, ?, ...)`:
/// SQLite looks a named or numbered parameter up in a list (sqlx asks for every parameter's
/// name), which makes binding a statement with thousands of `$N` quadratic, while anonymous
/// `?` parameters bind in order at no cost.
fn values_clause(dialect: Dialect, rows: usize, cols: usize) -> String {
    let row = |r: usize| match dialect {
        Dialect::Postgres => format!("({})", placeholders(1 + r * cols, cols)),
        Dialect::Sqlite => format!("({})", vec!["?"; cols].join(", ")),
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// `('A', 'B')` of status names (they come from the enumeration, never from input).
fn status_list(statuses: &[CommandStatus]) -> String {
    let names: Vec<String> = statuses
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", names.join(", "))
}

/// Checks cards before they are written (ICCIDs once, key versions 1..=15 once each, counters
/// in range); returns their attributes as JSON text.
/// Digits only (a search prefix, an IMSI or MSISDN as stored), or Invalid naming `field`.
fn check_digits(field: &str, value: &str) -> Result<(), StoreError> {
    if value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            field: field.to_string(),
            problem: format!("{value:?} is not digits"),
        })
    }
}

fn check_new_cards(cards: &[NewCard]) -> Result<Vec<String>, StoreError> {
    let mut seen = HashSet::with_capacity(cards.len());
    for card in cards {
        if !seen.insert(card.iccid.as_str()) {
            return Err(StoreError::Duplicate {
                what: "card",
                key: card.iccid.clone(),
            });
        }
        let mut versions = HashSet::new();
        for ks in &card.key_sets {
            if !(1..=15).contains(&ks.version) {
                return Err(StoreError::Invalid {
                    field: format!("card {} key set version", card.iccid),
                    problem: format!("{} is not in 1..=15", ks.version),
                });
            }
            if !versions.insert(ks.version) {
                return Err(StoreError::Invalid {
                    field: format!("card {} key set version", card.iccid),
                    problem: format!("version {} given twice", ks.version),
                });
            }
            to_i64(ks.counter, "key set counter")?;
        }
        let mut slots = HashSet::new();
        for f in &card.factory_subscriptions {
            if !(2..=crate::script::subscription::SLOTS as u8).contains(&f.id)
                || !slots.insert(f.id)
            {
                return Err(StoreError::Invalid {
                    field: format!("card {} factory subscription", card.iccid),
                    problem: format!("slot {} is not one of 2..=8 given once", f.id),
                });
            }
        }
    }
    cards
        .iter()
        .map(|c| json_text(&c.attributes, "attributes"))
        .collect()
}

/// Rows per multi-row INSERT of (id, iccid) pairs.
const PAIR_CHUNK: usize = 1000;

/// Inserts `(id, iccid)` rows into `table (id_column, iccid)` in multi-row statements.
async fn insert_id_iccid(
    tx: &mut Tx,
    dialect: Dialect,
    table: &str,
    id: i64,
    iccids: &[&str],
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), StoreError> {
    for chunk in iccids.chunks(PAIR_CHUNK) {
        let sql = format!(
            "INSERT INTO {table} VALUES {}",
            values_clause(dialect, chunk.len(), 2)
        );
        let mut q = sqlx::query(&sql);
        for iccid in chunk {
            q = q.bind(id).bind(*iccid);
        }
        q.execute(&mut **tx).await.map_err(dbe)?;
        progress(chunk.len() as u64);
    }
    Ok(())
}

fn profile_from_row(row: &AnyRow) -> Result<ProfileRecord, StoreError> {
    let tars: String = col(row, "tars")?;
    let defaults: String = col(row, "defaults")?;
    Ok(ProfileRecord {
        id: col(row, "id")?,
        account_id: col(row, "account_id")?,
        name: col(row, "name")?,
        app_type: col(row, "app_type")?,
        applet_id: col(row, "applet_id")?,
        tars: serde_json::from_str(&tars).map_err(|e| bad_column("tars", e))?,
        defaults: serde_json::from_str(&defaults).map_err(|e| bad_column("defaults", e))?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn group_from_row(row: &AnyRow) -> Result<CardGroupRecord, StoreError> {
    Ok(CardGroupRecord {
        id: col(row, "id")?,
        account_id: col(row, "account_id")?,
        profile_id: col(row, "profile_id")?,
        name: col(row, "name")?,
        cards: to_u64(col(row, "cards")?, "cards")?,
        created_at: col(row, "created_at")?,
    })
}

const PROFILE_COLUMNS: &str =
    "id, account_id, name, app_type, applet_id, tars, defaults, created_at, updated_at";

const GROUP_SELECT: &str = "SELECT g.id, g.account_id, g.profile_id, g.name, g.created_at, \
     (SELECT COUNT(*) FROM card_group_members m WHERE m.group_id = g.id) AS cards \
     FROM card_groups g";

/// ICCIDs / MSISDNs per `IN (...)` lookup.
const LOOKUP_CHUNK: usize = 500;

fn key_set_prefix(iccid: &str, version: u8) -> String {
    format!("keyset:{iccid}:{version}")
}

fn pending_prefix(account_id: &str, id: &str) -> String {
    format!("command:{account_id}:{id}:pending")
}

fn webhook_aad(account_id: &str, id: &str) -> String {
    format!("webhook:{account_id}:{id}:secret")
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn account_from_row(row: &AnyRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: col(row, "id")?,
        name: col(row, "name")?,
        created_at: col(row, "created_at")?,
    })
}

fn card_from_row(
    row: &AnyRow,
    key_versions: Vec<KeyVersionStatus>,
) -> Result<CardRecord, StoreError> {
    let attributes: String = col(row, "attributes")?;
    let attributes: BTreeMap<String, String> =
        serde_json::from_str(&attributes).map_err(|e| bad_column("cards.attributes", e))?;
    Ok(CardRecord {
        account_id: col(row, "account_id")?,
        iccid: col(row, "iccid")?,
        imsi: col(row, "imsi")?,
        msisdn: col(row, "msisdn")?,
        attributes,
        key_versions,
        created_at: col(row, "created_at")?,
    })
}

/// Claims up to `$4` commands for `$1` until `$2` at time `$3` (see `Store::claim_commands`),
/// returning `returning`. One statement: atomic on SQLite (it holds the write lock
/// throughout); on PostgreSQL the subquery locks the rows it picks and skips those another
/// gateway is locking. A card whose live command another gateway holds (lease still good) is
/// left to that gateway, so one gateway sends to a card at a time and its counters arrive in
/// order.
fn claim_sql(dialect: Dialect, returning: &str) -> String {
    let lock = match dialect {
        Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
        Dialect::Sqlite => "",
    };
    format!(
        "UPDATE commands SET owner = $1, lease_until = $2 \
         WHERE (account_id, id) IN ( \
           SELECT c.account_id, c.id FROM commands c \
           WHERE c.status IN {LIVE} \
             AND (c.owner IS NULL OR c.lease_until IS NULL OR c.lease_until < $3) \
             AND NOT (c.status = 'PENDING' AND c.packet IS NULL \
                      AND c.expires_at IS NOT NULL AND c.expires_at < $3) \
             AND NOT EXISTS (SELECT 1 FROM commands o WHERE o.iccid = c.iccid \
                      AND o.status IN {LIVE} AND o.owner IS NOT NULL AND o.owner <> $1 \
                      AND o.lease_until >= $3) \
           ORDER BY c.priority DESC, c.created_at, c.id \
           LIMIT $4 {lock}) \
         RETURNING {returning}"
    )
}

/// A key set's version, counter and rotation from a row's `version`, `counter` and
/// `rotated_at`; none when `version` is NULL (a card without key sets, read with a LEFT JOIN).
fn key_version_from_row(row: &AnyRow) -> Result<Option<KeyVersionStatus>, StoreError> {
    let Some(version) = col::<Option<i64>>(row, "version")? else {
        return Ok(None);
    };
    Ok(Some(KeyVersionStatus {
        version: to_u8(version, "key_sets.version")?,
        counter: to_u64(col(row, "counter")?, "key_sets.counter")?,
        rotated_at: col(row, "rotated_at")?,
    }))
}

fn sort_claimed(commands: &mut [CommandRecord]) {
    commands.sort_by(|a, b| {
        b.priority
            .rank()
            .cmp(&a.priority.rank())
            .then(a.created_at.cmp(&b.created_at))
            .then(a.id.cmp(&b.id))
    });
}

/// The writes the command path makes, each inside a transaction it is given (its own, or a
/// group's: see [`group`]), over either driver ([`exec`]). They write nothing when they
/// answer `false`; their events wait in `later` for the end of the transaction.
impl SqlStore {
    async fn reserve_counter_in<E: Exec>(
        &self,
        tx: &mut E,
        iccid: &str,
        version: u8,
    ) -> Result<u64, StoreError> {
        let counter = tx
            .fetch_int(
                "UPDATE key_sets SET counter = counter + 1 WHERE iccid = $1 AND version = $2 \
                 RETURNING counter",
                &[iccid.into(), i64::from(version).into()],
            )
            .await?;
        match counter {
            Some(c) => to_u64(c, "key_sets.counter"),
            None => Err(StoreError::NotFound {
                what: "key set",
                key: format!("{iccid} version {version}"),
            }),
        }
    }

    /// New commands (one, or a group commit's); a duplicate or unknown account is named when
    /// there is one command (a group that fails runs its writes one by one).
    async fn insert_commands_in<E: Exec>(
        &self,
        tx: &mut E,
        commands: &[&NewCommand],
    ) -> Result<(), StoreError> {
        let first = commands.first();
        let name = |key: Option<&str>| match (commands.len(), key) {
            (1, Some(k)) => k.to_string(),
            (n, _) => format!("one of {n} commands"),
        };
        match self.insert_commands_tx(tx, commands, None).await {
            Ok(()) => Ok(()),
            Err(InsertFailure::Duplicate) => Err(StoreError::Duplicate {
                what: "command",
                key: name(first.map(|c| c.id.as_str())),
            }),
            Err(InsertFailure::ForeignKey) => Err(StoreError::NotFound {
                what: "account",
                key: name(first.map(|c| c.account_id.as_str())),
            }),
            Err(InsertFailure::Other(e)) => Err(e),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn record_secured_in<E: Exec>(
        &self,
        tx: &mut E,
        later: &mut Deferred,
        account_id: &str,
        id: &str,
        owner: &str,
        secured: &SecuredPacket,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let counter = to_i64(secured.counter, "counter")?;
        let (pending_kic, pending_kid, pending_kik) = match &secured.pending_keys {
            Some(keys) => {
                let (kic, kid, kik) = self.seal_keys(&pending_prefix(account_id, id), keys)?;
                (Some(kic), Some(kid), kik)
            }
            None => (None, None, None),
        };
        let tar = hex::encode(secured.tar);
        let spi = hex::encode(secured.spi);
        let done = tx
            .execute(
                "UPDATE commands SET packet = $4, counter = $5, key_version = $6, msisdn = $7, \
                 tar = $8, spi = $9, kic = $10, kid = $11, pending_kic = $12, pending_kid = $13, \
                 pending_kik = $14, updated_at = $15 \
                 WHERE account_id = $1 AND id = $2 AND owner = $3 AND status = 'PENDING'",
                &[
                    account_id.into(),
                    id.into(),
                    owner.into(),
                    secured.packet.as_slice().into(),
                    counter.into(),
                    i64::from(secured.key_version).into(),
                    secured.msisdn.as_str().into(),
                    tar.as_str().into(),
                    spi.as_str().into(),
                    i64::from(secured.kic).into(),
                    i64::from(secured.kid).into(),
                    pending_kic.as_deref().into(),
                    pending_kid.as_deref().into(),
                    pending_kik.as_deref().into(),
                    now.into(),
                ],
            )
            .await?;
        if done == 0 {
            return Ok(false);
        }
        later.event(
            account_id,
            id,
            now,
            "SECURED",
            format!(
                "counter {} with key version {}",
                secured.counter, secured.key_version
            ),
        );
        Ok(true)
    }

    async fn record_send_in<E: Exec>(
        &self,
        tx: &mut E,
        later: &mut Deferred,
        account_id: &str,
        id: &str,
        owner: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "UPDATE commands SET attempts = attempts + 1, \
             status = CASE WHEN status = 'PENDING' THEN 'SENT' ELSE status END, \
             sent_at = COALESCE(sent_at, $4), updated_at = $4 \
             WHERE account_id = $1 AND id = $2 AND owner = $3 AND status IN {LIVE} \
             RETURNING attempts"
        );
        let attempts = tx
            .fetch_int(
                &sql,
                &[account_id.into(), id.into(), owner.into(), now.into()],
            )
            .await?;
        let Some(attempts) = attempts else {
            return Ok(false);
        };
        later.event(account_id, id, now, "SENT", format!("attempt {attempts}"));
        Ok(true)
    }

    async fn transition_in<E: Exec>(
        &self,
        tx: &mut E,
        later: &mut Deferred,
        account_id: &str,
        id: &str,
        t: &Transition,
    ) -> Result<bool, StoreError> {
        if t.from.is_empty() {
            return Ok(false);
        }
        let response = t
            .response
            .as_ref()
            .map(|r| json_text(r, "response"))
            .transpose()?;
        let error = t
            .error
            .as_ref()
            .map(|e| json_text(e, "error"))
            .transpose()?;
        let error_code = t.error.as_ref().map(|e| e.code.as_str());
        let mut set = String::from(
            "status = $3, updated_at = $4, response = COALESCE($5, response), \
             error = COALESCE($6, error), error_code = COALESCE($7, error_code)",
        );
        if t.to.is_terminal() {
            set.push_str(", completed_at = $4, owner = NULL, lease_until = NULL");
        }
        if t.to == CommandStatus::Delivered {
            set.push_str(", delivered_at = $4");
        }
        let sql = format!(
            "UPDATE commands SET {set} WHERE account_id = $1 AND id = $2 AND status IN {}",
            status_list(&t.from)
        );
        let done = tx
            .execute(
                &sql,
                &[
                    account_id.into(),
                    id.into(),
                    t.to.as_str().into(),
                    t.at.into(),
                    response.as_deref().into(),
                    error.as_deref().into(),
                    error_code.into(),
                ],
            )
            .await?;
        if done == 0 {
            return Ok(false);
        }
        if let Some(n) = &t.new_keys {
            let (kic, kid, kik) = self.seal_keys(&key_set_prefix(&n.iccid, n.version), &n.keys)?;
            let replaced = tx
                .execute(
                    "UPDATE key_sets SET kic = $3, kid = $4, kik = $5, rotated_at = $6 \
                     WHERE iccid = $1 AND version = $2",
                    &[
                        n.iccid.as_str().into(),
                        i64::from(n.version).into(),
                        kic.as_slice().into(),
                        kid.as_slice().into(),
                        kik.as_deref().into(),
                        t.at.into(),
                    ],
                )
                .await?;
            if replaced == 0 {
                return Err(StoreError::NotFound {
                    what: "key set",
                    key: format!("{} version {}", n.iccid, n.version),
                });
            }
        }
        later.event(account_id, id, t.at, &t.event, t.detail.clone());
        later.outbox(account_id, &t.events, t.at);
        Ok(true)
    }

    async fn record_delivery_in<E: Exec>(
        &self,
        tx: &mut E,
        later: &mut Deferred,
        account_id: &str,
        id: &str,
        at: Millis,
    ) -> Result<bool, StoreError> {
        let args = [account_id.into(), id.into(), at.into()];
        let moved = tx
            .execute(
                "UPDATE commands SET status = 'DELIVERED', updated_at = $3, delivered_at = $3 \
                 WHERE account_id = $1 AND id = $2 AND status = 'SENT'",
                &args,
            )
            .await?
            > 0;
        let known = moved
            || tx
                .execute(
                    "UPDATE commands SET delivered_at = $3 \
                     WHERE account_id = $1 AND id = $2 AND delivered_at IS NULL",
                    &args,
                )
                .await?
                > 0;
        if !known {
            // A second report for the same command, or an unknown command: nothing to add.
            return Ok(false);
        }
        later.event(account_id, id, at, "DELIVERED", String::new());
        let delivered = crate::events::Event::CommandDelivered {
            command_id: id.to_string(),
        };
        later.outbox(account_id, &[delivered], at);
        Ok(true)
    }

    async fn claim_in<E: Exec>(
        &self,
        tx: &mut E,
        owner: &str,
        limit: u32,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(tx
            .fetch_pairs(
                &claim_sql(self.dialect, "account_id, id"),
                &[
                    owner.into(),
                    lease_until.into(),
                    now.into(),
                    i64::from(limit).into(),
                ],
            )
            .await?)
    }

    /// Commands by (account id, id), in no particular order.
    async fn commands_by_ids(
        &self,
        ids: &[(String, String)],
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let mut by_account: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (account, id) in ids {
            by_account.entry(account).or_default().push(id);
        }
        let mut commands = Vec::with_capacity(ids.len());
        for (account, ids) in by_account {
            for chunk in ids.chunks(EVENT_CHUNK) {
                let sql = format!(
                    "SELECT {COMMAND_COLUMNS} FROM commands WHERE account_id = $1 AND id IN ({})",
                    placeholders(2, chunk.len())
                );
                let mut q = sqlx::query(&sql).bind(account);
                for id in chunk {
                    q = q.bind(*id);
                }
                let rows = q.fetch_all(&self.pool).await.map_err(dbe)?;
                commands.extend(self.commands_from_rows(&rows)?);
            }
        }
        Ok(commands)
    }

    fn add_event_in(
        &self,
        later: &mut Deferred,
        account_id: &str,
        id: &str,
        kind: &str,
        detail: &str,
        at: Millis,
    ) {
        later.event(account_id, id, at, kind, detail.to_string());
    }
}

#[async_trait]
impl Store for SqlStore {
    fn scp81(&self) -> Option<&dyn super::scp81::Scp81Store> {
        Some(self)
    }

    fn users(&self) -> Option<&dyn super::users::UserStore> {
        Some(self)
    }

    fn views(&self) -> Option<&dyn super::views::ViewStore> {
        Some(self)
    }

    fn subscriptions(&self) -> Option<&dyn super::subscriptions::SubscriptionStore> {
        Some(self)
    }

    fn backend(&self) -> &'static str {
        self.backend_name()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(dbe)?;
        Ok(())
    }

    async fn create_account(&self, name: &str, now: Millis) -> Result<Account, StoreError> {
        let account = Account {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            created_at: now,
        };
        sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(account.id.as_str())
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(|e| map_insert(e, "account", name, name))?;
        Ok(account)
    }

    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError> {
        sqlx::query("SELECT id, name, created_at FROM accounts WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(dbe)?
            .as_ref()
            .map(account_from_row)
            .transpose()
    }

    async fn create_token(
        &self,
        account_id: &str,
        label: &str,
        now: Millis,
    ) -> Result<String, StoreError> {
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let token = format!("otagw_{}", hex::encode(secret));
        let done = sqlx::query(
            "INSERT INTO tokens (token_hash, account_id, label, created_at, id) \
             SELECT $1, id, $3, $4, $5 FROM accounts WHERE id = $2",
        )
        .bind(token_hash(&token))
        .bind(account_id)
        .bind(label)
        .bind(now)
        .bind(uuid::Uuid::new_v4().to_string())
        .execute(&self.pool)
        .await
        .map_err(|e| map_insert(e, "token", label, account_id))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "account",
                key: account_id.to_string(),
            });
        }
        Ok(token)
    }

    async fn account_for_token(&self, token: &str) -> Result<Option<Account>, StoreError> {
        sqlx::query(
            "SELECT a.id AS id, a.name AS name, a.created_at AS created_at \
             FROM tokens t JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1",
        )
        .bind(token_hash(token))
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?
        .as_ref()
        .map(account_from_row)
        .transpose()
    }

    async fn tokens(&self, account_id: &str) -> Result<Vec<TokenInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, label, created_at FROM tokens WHERE account_id = $1 \
             ORDER BY created_at, id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|row| {
                Ok(TokenInfo {
                    id: col(row, "id")?,
                    label: col(row, "label")?,
                    created_at: col(row, "created_at")?,
                })
            })
            .collect()
    }

    async fn revoke_token(&self, account_id: &str, id: &str) -> Result<(), StoreError> {
        self.delete_owned("tokens", "token", account_id, id).await
    }

    async fn insert_cards(
        &self,
        account_id: &str,
        cards: &[NewCard],
        now: Millis,
    ) -> Result<(), StoreError> {
        if cards.is_empty() {
            return Ok(());
        }
        let attributes = check_new_cards(cards)?;
        let mut tx = self.begin().await?;
        if !self.account_exists(&mut tx, account_id).await? {
            return Err(StoreError::NotFound {
                what: "account",
                key: account_id.to_string(),
            });
        }
        if let Some(chunk) = self
            .insert_card_rows(&mut tx, account_id, cards, &attributes, now, &|_| {})
            .await?
        {
            tx.rollback().await.map_err(dbe)?;
            return Err(self.name_duplicate(chunk).await);
        }
        tx.commit().await.map_err(dbe)
    }

    async fn card(&self, account_id: &str, iccid: &str) -> Result<Option<CardRecord>, StoreError> {
        // One statement (a row per key set): the command path reads a card twice a command.
        let rows = sqlx::query(
            "SELECT c.iccid AS iccid, c.account_id AS account_id, c.imsi AS imsi, \
             c.msisdn AS msisdn, c.attributes AS attributes, c.created_at AS created_at, \
             k.version AS version, k.counter AS counter, k.rotated_at AS rotated_at \
             FROM cards c LEFT JOIN key_sets k ON k.iccid = c.iccid \
             WHERE c.account_id = $1 AND c.iccid = $2 ORDER BY k.version",
        )
        .bind(account_id)
        .bind(iccid)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let mut versions = Vec::with_capacity(rows.len());
        for row in &rows {
            versions.extend(key_version_from_row(row)?);
        }
        card_from_row(first, versions).map(Some)
    }

    async fn key_set(&self, iccid: &str, version: u8) -> Result<Option<KeySetRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT iccid, version, kic_algorithm, kid_algorithm, kic, kid, kik, counter, \
             rotated_at FROM key_sets WHERE iccid = $1 AND version = $2",
        )
        .bind(iccid)
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.map(|r| self.key_set_from_row(&r).map(|(_, set)| set))
            .transpose()
    }

    async fn reserve_counter(&self, iccid: &str, version: u8) -> Result<u64, StoreError> {
        match self
            .grouped(group::Write::ReserveCounter {
                iccid: iccid.to_string(),
                version,
            })
            .await?
        {
            group::Written::Counter(c) => Ok(c),
            other => Err(other.unexpected()),
        }
    }

    async fn replace_keys(
        &self,
        iccid: &str,
        version: u8,
        keys: &KeyMaterial,
        now: Millis,
    ) -> Result<(), StoreError> {
        let (kic, kid, kik) = self.seal_keys(&key_set_prefix(iccid, version), keys)?;
        let done = sqlx::query(
            "UPDATE key_sets SET kic = $3, kid = $4, kik = $5, rotated_at = $6 \
             WHERE iccid = $1 AND version = $2",
        )
        .bind(iccid)
        .bind(i64::from(version))
        .bind(kic)
        .bind(kid)
        .bind(kik)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "key set",
                key: format!("{iccid} version {version}"),
            });
        }
        Ok(())
    }

    async fn cards(&self, account_id: &str, limit: u32) -> Result<Vec<CardRecord>, StoreError> {
        let limit = i64::from(limit);
        let rows = sqlx::query(
            "SELECT iccid, account_id, imsi, msisdn, attributes, created_at FROM cards \
             WHERE account_id = $1 ORDER BY iccid LIMIT $2",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        let mut versions = self
            .key_versions(
                "SELECT iccid, version, counter, rotated_at FROM key_sets WHERE iccid IN \
                 (SELECT iccid FROM cards WHERE account_id = $1 ORDER BY iccid LIMIT $2) \
                 ORDER BY iccid, version",
                (account_id, Some(limit)),
            )
            .await?;
        rows.iter()
            .map(|row| {
                let iccid: String = col(row, "iccid")?;
                card_from_row(row, versions.remove(&iccid).unwrap_or_default())
            })
            .collect()
    }

    async fn search_cards(
        &self,
        account_id: &str,
        search: &CardSearch,
    ) -> Result<Vec<CardRecord>, StoreError> {
        // The account's own cards, and those of card groups granted to it (issue 15's
        // enterprise customers); the grant check is skipped for accounts without grants.
        let granted =
            sqlx::query("SELECT 1 AS one FROM card_group_grants WHERE grantee_id = $1 LIMIT 1")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await
                .map_err(dbe)?
                .is_some();
        let mut sql = String::from(if granted {
            "SELECT iccid, account_id, imsi, msisdn, attributes, created_at FROM cards \
             WHERE (account_id = $1 OR iccid IN (SELECT m.iccid FROM card_group_members m \
             JOIN card_group_grants g ON g.group_id = m.group_id \
             JOIN card_groups cg ON cg.id = m.group_id \
             WHERE g.grantee_id = $1 AND cg.account_id = cards.account_id))"
        } else {
            "SELECT iccid, account_id, imsi, msisdn, attributes, created_at FROM cards \
             WHERE account_id = $1"
        });
        let mut binds = vec![account_id.to_string()];
        for (column, value) in [
            ("iccid", &search.iccid),
            ("imsi", &search.imsi),
            ("msisdn", &search.msisdn),
        ] {
            let Some(prefix) = value.as_deref().filter(|p| !p.is_empty()) else {
                continue;
            };
            check_digits(column, prefix)?;
            binds.push(format!("{prefix}%"));
            sql.push_str(&format!(" AND {column} LIKE ${}", binds.len()));
        }
        if let Some(after) = &search.after {
            check_digits("after", after)?;
            binds.push(after.clone());
            sql.push_str(&format!(" AND iccid > ${}", binds.len()));
        }
        sql.push_str(&format!(" ORDER BY iccid LIMIT ${}", binds.len() + 1));
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q
            .bind(i64::from(search.limit))
            .fetch_all(&self.pool)
            .await
            .map_err(dbe)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let iccid: String = col(row, "iccid")?;
            let mut versions = self
                .key_versions(
                    "SELECT iccid, version, counter, rotated_at FROM key_sets WHERE iccid = $1 \
                     ORDER BY version",
                    (&iccid, None),
                )
                .await?;
            out.push(card_from_row(
                row,
                versions.remove(&iccid).unwrap_or_default(),
            )?);
        }
        Ok(out)
    }

    async fn update_card(
        &self,
        account_id: &str,
        iccid: &str,
        changes: &CardChanges,
    ) -> Result<CardRecord, StoreError> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT imsi, msisdn, attributes FROM cards WHERE account_id = $1 AND iccid = $2",
        )
        .bind(account_id)
        .bind(iccid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(dbe)?;
        let Some(row) = row else {
            return Err(StoreError::NotFound {
                what: "card",
                key: iccid.to_string(),
            });
        };
        let mut imsi: Option<String> = col(&row, "imsi")?;
        let mut msisdn: Option<String> = col(&row, "msisdn")?;
        let attributes: String = col(&row, "attributes")?;
        let mut attributes: BTreeMap<String, String> =
            serde_json::from_str(&attributes).map_err(|e| bad_column("cards.attributes", e))?;
        if let Some(v) = &changes.imsi {
            check_digits("imsi", v)?;
            imsi = Some(v.clone());
        }
        if let Some(v) = &changes.msisdn {
            check_digits("msisdn", v)?;
            msisdn = Some(v.clone());
        }
        for (name, value) in &changes.attributes {
            match value {
                Some(v) => attributes.insert(name.clone(), v.clone()),
                None => attributes.remove(name),
            };
        }
        sqlx::query(
            "UPDATE cards SET imsi = $1, msisdn = $2, attributes = $3 \
             WHERE account_id = $4 AND iccid = $5",
        )
        .bind(imsi)
        .bind(msisdn)
        .bind(json_text(&attributes, "attributes")?)
        .bind(account_id)
        .bind(iccid)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        tx.commit().await.map_err(dbe)?;
        self.card(account_id, iccid)
            .await?
            .ok_or_else(|| StoreError::NotFound {
                what: "card",
                key: iccid.to_string(),
            })
    }

    async fn delete_card(&self, account_id: &str, iccid: &str) -> Result<CardDeleted, StoreError> {
        let mut tx = self.begin().await?;
        let exists = sqlx::query("SELECT iccid FROM cards WHERE account_id = $1 AND iccid = $2")
            .bind(account_id)
            .bind(iccid)
            .fetch_optional(&mut *tx)
            .await
            .map_err(dbe)?;
        if exists.is_none() {
            return Err(StoreError::NotFound {
                what: "card",
                key: iccid.to_string(),
            });
        }
        let busy = |reason: String| StoreError::InUse {
            what: "card",
            key: iccid.to_string(),
            reason,
        };
        let live = sqlx::query(
            "SELECT id, status FROM commands WHERE iccid = $1 \
             AND status IN ('PENDING', 'SENT', 'DELIVERED') ORDER BY created_at, id",
        )
        .bind(iccid)
        .fetch_all(&mut *tx)
        .await
        .map_err(dbe)?;
        if let Some(first) = live.first() {
            let id: String = col(first, "id")?;
            let status: String = col(first, "status")?;
            return Err(busy(format!(
                "{} live command(s) (PENDING, SENT or DELIVERED), e.g. {id} ({status}); \
                 cancel them or let them finish first",
                live.len()
            )));
        }
        let campaign = sqlx::query(
            "SELECT c.name AS name, c.status AS status FROM campaign_cards cc \
             JOIN campaigns c ON c.id = cc.campaign_id \
             WHERE cc.iccid = $1 AND c.status NOT IN ('COMPLETED', 'CANCELLED') \
             ORDER BY c.id LIMIT 1",
        )
        .bind(iccid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(dbe)?;
        if let Some(c) = campaign {
            let name: String = col(&c, "name")?;
            let status: String = col(&c, "status")?;
            return Err(busy(format!(
                "it is in campaign {name:?} ({status}); stop the campaign first"
            )));
        }
        let pending = sqlx::query(
            "SELECT operation_id FROM card_sync WHERE iccid = $1 AND state = 'PENDING'",
        )
        .bind(iccid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(dbe)?;
        if let Some(row) = pending {
            let op: Option<String> = col(&row, "operation_id")?;
            return Err(busy(format!(
                "subscription operation {} is in flight; let it finish first",
                op.unwrap_or_default()
            )));
        }
        let mut deleted = CardDeleted::default();
        // The router's records of the card (its audit trail stays, as past commands do).
        for table in [
            "card_subscriptions",
            "card_sync",
            "bootstrap_plans",
            "subscription_operations",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE iccid = $1"))
                .bind(iccid)
                .execute(&mut *tx)
                .await
                .map_err(dbe)?;
        }
        for table in ["key_sets", "scp81_keys"] {
            deleted.key_sets += sqlx::query(&format!("DELETE FROM {table} WHERE iccid = $1"))
                .bind(iccid)
                .execute(&mut *tx)
                .await
                .map_err(dbe)?
                .rows_affected();
        }
        deleted.group_memberships = sqlx::query("DELETE FROM card_group_members WHERE iccid = $1")
            .bind(iccid)
            .execute(&mut *tx)
            .await
            .map_err(dbe)?
            .rows_affected();
        for sql in [
            "DELETE FROM profile_cards WHERE iccid = $1",
            "DELETE FROM campaign_cards WHERE iccid = $1",
            "DELETE FROM cards WHERE iccid = $1",
        ] {
            sqlx::query(sql)
                .bind(iccid)
                .execute(&mut *tx)
                .await
                .map_err(dbe)?;
        }
        let kept = sqlx::query("SELECT COUNT(*) AS n FROM commands WHERE iccid = $1")
            .bind(iccid)
            .fetch_one(&mut *tx)
            .await
            .map_err(dbe)?;
        deleted.commands_kept = to_u64(col(&kept, "n")?, "commands count")?;
        tx.commit().await.map_err(dbe)?;
        Ok(deleted)
    }

    async fn insert_command(&self, command: &NewCommand) -> Result<(), StoreError> {
        self.grouped(group::Write::InsertCommand(command.clone()))
            .await
            .map(|_| ())
    }

    async fn command(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<(CommandRecord, Vec<CommandEvent>)>, StoreError> {
        let Some(record) = self.command_by_id(account_id, id).await? else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT at, kind, detail FROM command_events WHERE account_id = $1 AND command_id = $2 \
             ORDER BY at, seq",
        )
        .bind(account_id)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(CommandEvent {
                    at: col(row, "at")?,
                    kind: col(row, "kind")?,
                    detail: col(row, "detail")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(Some((record, events)))
    }

    async fn command_by_id(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<CommandRecord>, StoreError> {
        let sql =
            format!("SELECT {COMMAND_COLUMNS} FROM commands WHERE account_id = $1 AND id = $2");
        sqlx::query(&sql)
            .bind(account_id)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(dbe)?
            .as_ref()
            .map(|row| self.command_from_row(row))
            .transpose()
    }

    async fn ended_among(
        &self,
        commands: &[(String, String)],
    ) -> Result<Vec<(String, String, CommandStatus)>, StoreError> {
        let mut ended = Vec::new();
        // Bounded statements (PostgreSQL takes up to 65,535 parameters, SQLite 32,766).
        for chunk in commands.chunks(500) {
            let pairs: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "SELECT account_id, id, status FROM commands \
                 WHERE status IN ('SUCCESS', 'FAILED', 'CANCELLED', 'EXPIRED') \
                 AND (account_id, id) IN (VALUES {})",
                pairs.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (account_id, id) in chunk {
                query = query.bind(account_id).bind(id);
            }
            for row in query.fetch_all(&self.pool).await.map_err(dbe)? {
                let status: String = col(&row, "status")?;
                let status: CommandStatus = status
                    .parse()
                    .map_err(|e| bad_column("commands.status", e))?;
                ended.push((col(&row, "account_id")?, col(&row, "id")?, status));
            }
        }
        Ok(ended)
    }

    async fn cancel_command(
        &self,
        account_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<CancelOutcome, StoreError> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE commands SET status = 'CANCELLED', updated_at = $3, completed_at = $3, \
             owner = NULL, lease_until = NULL \
             WHERE account_id = $1 AND id = $2 AND status = 'PENDING'",
        )
        .bind(account_id)
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        if done.rows_affected() == 1 {
            insert_event(self.dialect, &mut tx, account_id, id, now, "CANCELLED", "").await?;
            tx.commit().await.map_err(dbe)?;
            return Ok(CancelOutcome::Cancelled);
        }
        let row = sqlx::query("SELECT status FROM commands WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(dbe)?;
        tx.rollback().await.map_err(dbe)?;
        match row {
            None => Err(StoreError::NotFound {
                what: "command",
                key: id.to_string(),
            }),
            Some(row) => {
                let status: String = col(&row, "status")?;
                let status: CommandStatus = status
                    .parse()
                    .map_err(|e| bad_column("commands.status", e))?;
                Ok(CancelOutcome::NotCancellable(status))
            }
        }
    }

    async fn claim_commands(
        &self,
        owner: &str,
        limit: u32,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut commands = if self.dialect == Dialect::Sqlite && self.group.is_some() {
            // On SQLite's writer lane; the records are then read on the pool.
            let claimed = match self
                .grouped(group::Write::Claim {
                    owner: owner.to_string(),
                    limit,
                    now,
                    lease_until,
                })
                .await?
            {
                group::Written::Claimed(c) => c,
                other => return Err(other.unexpected()),
            };
            self.commands_by_ids(&claimed).await?
        } else {
            let rows = sqlx::query(&claim_sql(self.dialect, COMMAND_COLUMNS))
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(dbe)?;
            self.commands_from_rows(&rows)?
        };
        sort_claimed(&mut commands);
        Ok(commands)
    }

    async fn renew_leases(&self, owner: &str, lease_until: Millis) -> Result<u64, StoreError> {
        let sql =
            format!("UPDATE commands SET lease_until = $2 WHERE owner = $1 AND status IN {LIVE}");
        let done = sqlx::query(&sql)
            .bind(owner)
            .bind(lease_until)
            .execute(&self.pool)
            .await
            .map_err(dbe)?;
        Ok(done.rows_affected())
    }

    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE commands SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2",
        )
        .bind(id)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(dbe)?;
        Ok(())
    }

    async fn reroute_for_fallback(
        &self,
        account_id: &str,
        id: &str,
        owner: &str,
        from_transport: &str,
        to_transport: &str,
        detail: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        // Pending keys stay: they belong to the command's data, not to the packet.
        let r = sqlx::query(
            "UPDATE commands SET status = 'PENDING', transport = $5, packet = NULL, \
             counter = NULL, updated_at = $6 WHERE account_id = $1 AND id = $2 AND owner = $3 \
             AND transport = $4 AND status IN ('SENT', 'DELIVERED')",
        )
        .bind(account_id)
        .bind(id)
        .bind(owner)
        .bind(from_transport)
        .bind(to_transport)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(dbe)?;
        if r.rows_affected() != 1 {
            tx.rollback().await.map_err(dbe)?;
            return Ok(false);
        }
        insert_event(
            self.dialect,
            &mut tx,
            account_id,
            id,
            now,
            "FALLBACK",
            detail,
        )
        .await?;
        tx.commit().await.map_err(dbe)?;
        Ok(true)
    }

    async fn record_secured(
        &self,
        account_id: &str,
        id: &str,
        owner: &str,
        secured: &SecuredPacket,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.grouped(group::Write::RecordSecured {
            account_id: account_id.to_string(),
            id: id.to_string(),
            owner: owner.to_string(),
            secured: secured.clone(),
            now,
        })
        .await?
        .flag()
    }

    async fn record_send(
        &self,
        account_id: &str,
        id: &str,
        owner: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        self.grouped(group::Write::RecordSend {
            account_id: account_id.to_string(),
            id: id.to_string(),
            owner: owner.to_string(),
            now,
        })
        .await?
        .flag()
    }

    async fn transition(
        &self,
        account_id: &str,
        id: &str,
        t: &Transition,
    ) -> Result<bool, StoreError> {
        self.grouped(group::Write::Transition {
            account_id: account_id.to_string(),
            id: id.to_string(),
            t: Box::new(t.clone()),
        })
        .await?
        .flag()
    }

    async fn record_delivery(
        &self,
        account_id: &str,
        id: &str,
        at: Millis,
    ) -> Result<bool, StoreError> {
        self.grouped(group::Write::RecordDelivery {
            account_id: account_id.to_string(),
            id: id.to_string(),
            at,
        })
        .await?
        .flag()
    }

    async fn add_event(
        &self,
        account_id: &str,
        id: &str,
        kind: &str,
        detail: &str,
        at: Millis,
    ) -> Result<(), StoreError> {
        self.grouped(group::Write::AddEvent {
            account_id: account_id.to_string(),
            id: id.to_string(),
            kind: kind.to_string(),
            detail: detail.to_string(),
            at,
        })
        .await
        .map(|_| ())
    }

    async fn awaiting_por(
        &self,
        msisdn: &str,
        tar: [u8; 3],
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE msisdn = $1 AND tar = $2 \
             AND status IN ('SENT', 'DELIVERED') ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(msisdn)
            .bind(hex::encode(tar))
            .fetch_all(&self.pool)
            .await
            .map_err(dbe)?;
        self.commands_from_rows(&rows)
    }

    async fn expire_commands(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError> {
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE commands SET status = 'EXPIRED', updated_at = $1, completed_at = $1, \
             owner = NULL, lease_until = NULL \
             WHERE status = 'PENDING' AND packet IS NULL AND expires_at IS NOT NULL \
             AND expires_at < $1 RETURNING account_id, id",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(dbe)?;
        let mut expired = Vec::with_capacity(rows.len());
        for row in &rows {
            expired.push((col::<String>(row, "account_id")?, col::<String>(row, "id")?));
        }
        if expired.is_empty() {
            tx.rollback().await.map_err(dbe)?;
            return Ok(expired);
        }
        expired.sort();
        let events: Vec<EventRow<'_>> = expired
            .iter()
            .map(|(account_id, id)| EventRow {
                account_id,
                command_id: id,
                at: now,
                kind: "EXPIRED",
                detail: "validity period ended before it was sent",
            })
            .collect();
        insert_events(self.dialect, &mut tx, &events).await?;
        for (account_id, id) in &expired {
            let completed = crate::events::Event::CommandCompleted {
                command_id: id.clone(),
                status: CommandStatus::Expired,
                response: None,
                error: None,
            };
            outbox::insert_outbox(&mut tx, account_id, &[completed], now).await?;
        }
        tx.commit().await.map_err(dbe)?;
        Ok(expired)
    }

    async fn command_stats(&self, account_id: &str) -> Result<CommandStats, StoreError> {
        let mut stats = CommandStats::default();
        let rows = sqlx::query(
            "SELECT status, COUNT(*) AS n FROM commands WHERE account_id = $1 GROUP BY status",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        for row in &rows {
            let n: i64 = col(row, "n")?;
            stats
                .by_status
                .insert(col(row, "status")?, to_u64(n, "count")?);
        }
        let rows = sqlx::query(
            "SELECT error_code, COUNT(*) AS n FROM commands \
             WHERE account_id = $1 AND status = 'FAILED' AND error_code IS NOT NULL \
             GROUP BY error_code",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        for row in &rows {
            let code: String = col(row, "error_code")?;
            let code = super::error_code_or_default(&code).as_str().to_string();
            let n: i64 = col(row, "n")?;
            *stats.by_error.entry(code).or_default() += to_u64(n, "count")?;
        }
        let rows = sqlx::query(
            "SELECT transport, COUNT(*) AS n, \
             CAST(SUM(CASE WHEN status = 'SUCCESS' THEN 1 ELSE 0 END) AS BIGINT) AS ok \
             FROM commands WHERE account_id = $1 GROUP BY transport",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        for row in &rows {
            let n: i64 = col(row, "n")?;
            let ok: Option<i64> = col(row, "ok")?;
            stats.by_transport.insert(
                col(row, "transport")?,
                (to_u64(n, "count")?, to_u64(ok.unwrap_or(0), "count")?),
            );
        }
        let row = sqlx::query(
            "SELECT \
             (SELECT CAST(AVG(completed_at - sent_at) AS DOUBLE PRECISION) FROM commands \
              WHERE account_id = $1 AND status = 'SUCCESS' AND sent_at IS NOT NULL \
              AND completed_at IS NOT NULL) AS completion, \
             (SELECT CAST(AVG(delivered_at - sent_at) AS DOUBLE PRECISION) FROM commands \
              WHERE account_id = $1 AND delivered_at IS NOT NULL AND sent_at IS NOT NULL) \
              AS delivery",
        )
        .bind(account_id)
        .fetch_one(&self.pool)
        .await
        .map_err(dbe)?;
        stats.mean_completion_ms = col(&row, "completion")?;
        stats.mean_delivery_ms = col(&row, "delivery")?;
        Ok(stats)
    }

    async fn insert_batch(
        &self,
        batch: &BatchRecord,
        commands: &[NewCommand],
    ) -> Result<(), StoreError> {
        let mut seen = HashSet::with_capacity(commands.len());
        for c in commands {
            if c.account_id != batch.account_id {
                return Err(StoreError::Invalid {
                    field: format!("command {} account", c.id),
                    problem: format!(
                        "{} differs from the batch's account {}",
                        c.account_id, batch.account_id
                    ),
                });
            }
            if !seen.insert(c.id.as_str()) {
                return Err(StoreError::Duplicate {
                    what: "command",
                    key: c.id.clone(),
                });
            }
        }
        let options = json_text(&batch.options, "options")?;
        let command_ids = json_text(&batch.command_ids, "command_ids")?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO batches (account_id, id, options, command_ids, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(batch.account_id.as_str())
        .bind(batch.id.as_str())
        .bind(options)
        .bind(command_ids)
        .bind(batch.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| map_insert(e, "batch", &batch.id, &batch.account_id))?;
        let rows: Vec<&NewCommand> = commands.iter().collect();
        match self
            .insert_commands_tx(&mut tx, &rows, Some(&batch.id))
            .await
        {
            Ok(()) => tx.commit().await.map_err(dbe),
            Err(InsertFailure::Duplicate) => {
                tx.rollback().await.map_err(dbe)?;
                let ids: Vec<&str> = commands.iter().map(|c| c.id.as_str()).collect();
                let key = self
                    .existing_command(&batch.account_id, &ids)
                    .await?
                    .unwrap_or_default();
                Err(StoreError::Duplicate {
                    what: "command",
                    key,
                })
            }
            Err(InsertFailure::ForeignKey) => Err(StoreError::NotFound {
                what: "account",
                key: batch.account_id.clone(),
            }),
            Err(InsertFailure::Other(e)) => Err(e),
        }
    }

    async fn batch(&self, account_id: &str, id: &str) -> Result<Option<BatchRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT account_id, id, options, command_ids, created_at FROM batches \
             WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let options: String = col(&row, "options")?;
        let command_ids: String = col(&row, "command_ids")?;
        Ok(Some(BatchRecord {
            id: col(&row, "id")?,
            account_id: col(&row, "account_id")?,
            options: serde_json::from_str(&options)
                .map_err(|e| bad_column("batches.options", e))?,
            created_at: col(&row, "created_at")?,
            command_ids: serde_json::from_str(&command_ids)
                .map_err(|e| bad_column("batches.command_ids", e))?,
        }))
    }

    async fn batch_commands(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Vec<CommandRecord>, StoreError> {
        let order: HashMap<String, usize> = match self.batch(account_id, id).await? {
            Some(batch) => batch
                .command_ids
                .into_iter()
                .enumerate()
                .map(|(i, id)| (id, i))
                .collect(),
            None => return Ok(Vec::new()),
        };
        let sql = format!(
            "SELECT {COMMAND_COLUMNS} FROM commands WHERE account_id = $1 AND batch_id = $2 \
             ORDER BY created_at, id"
        );
        let rows = sqlx::query(&sql)
            .bind(account_id)
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(dbe)?;
        let mut commands = self.commands_from_rows(&rows)?;
        // In the order posted (stable: any not listed keep their creation order, last).
        commands.sort_by_key(|c| order.get(&c.id).copied().unwrap_or(usize::MAX));
        Ok(commands)
    }

    async fn add_webhook(&self, webhook: &Webhook) -> Result<(), StoreError> {
        let secret = self.seal(
            &webhook.secret,
            &webhook_aad(&webhook.account_id, &webhook.id),
        )?;
        let events = if webhook.events.is_empty() {
            None
        } else {
            Some(
                serde_json::to_string(&webhook.events)
                    .map_err(|e| StoreError::Database(format!("webhook events: {e}")))?,
            )
        };
        sqlx::query(
            "INSERT INTO webhooks (account_id, id, url, secret, events) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(webhook.account_id.as_str())
        .bind(webhook.id.as_str())
        .bind(webhook.url.as_str())
        .bind(secret)
        .bind(events)
        .execute(&self.pool)
        .await
        .map_err(|e| map_insert(e, "webhook", &webhook.id, &webhook.account_id))?;
        Ok(())
    }

    async fn delete_webhook(&self, account_id: &str, id: &str) -> Result<(), StoreError> {
        self.delete_owned("webhooks", "webhook", account_id, id)
            .await
    }

    async fn webhooks(&self, account_id: &str) -> Result<Vec<Webhook>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, id, url, secret, events FROM webhooks WHERE account_id = $1 \
             ORDER BY id",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter()
            .map(|row| {
                let id: String = col(row, "id")?;
                let sealed: Vec<u8> = col(row, "secret")?;
                let secret = self.open(&sealed, &webhook_aad(account_id, &id))?;
                let events: Option<String> = col(row, "events")?;
                let events = match events {
                    Some(text) => serde_json::from_str(&text)
                        .map_err(|e| StoreError::Database(format!("webhook {id}: events: {e}")))?,
                    None => Vec::new(),
                };
                Ok(Webhook {
                    account_id: col(row, "account_id")?,
                    url: col(row, "url")?,
                    secret,
                    events,
                    id,
                })
            })
            .collect()
    }

    async fn insert_applet(&self, applet: &AppletRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO applets (account_id, id, name, content, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(applet.account_id.as_str())
        .bind(applet.id.as_str())
        .bind(applet.name.as_str())
        .bind(applet.content.as_slice())
        .bind(applet.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| map_insert(e, "applet", &applet.id, &applet.account_id))?;
        Ok(())
    }

    async fn applet(&self, account_id: &str, id: &str) -> Result<Option<AppletRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT account_id, id, name, content, created_at FROM applets \
             WHERE account_id = $1 AND id = $2",
        )
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.map(|row| {
            Ok(AppletRecord {
                id: col(&row, "id")?,
                account_id: col(&row, "account_id")?,
                name: col(&row, "name")?,
                content: col(&row, "content")?,
                created_at: col(&row, "created_at")?,
            })
        })
        .transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query("SELECT id, name, created_at FROM accounts ORDER BY name")
            .fetch_all(&self.pool)
            .await
            .map_err(dbe)?;
        rows.iter().map(account_from_row).collect()
    }

    async fn create_profile(
        &self,
        account_id: &str,
        profile: &NewProfile,
        now: Millis,
    ) -> Result<ProfileRecord, StoreError> {
        let tars = json_text(&profile.tars, "tars")?;
        let defaults = json_text(&profile.defaults, "defaults")?;
        let mut tx = self.begin().await?;
        if !self.account_exists(&mut tx, account_id).await? {
            return Err(StoreError::NotFound {
                what: "account",
                key: account_id.to_string(),
            });
        }
        let exists = sqlx::query("SELECT id FROM profiles WHERE account_id = $1 AND name = $2")
            .bind(account_id)
            .bind(profile.name.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(dbe)?;
        if exists.is_some() {
            return Err(StoreError::Duplicate {
                what: "profile",
                key: profile.name.clone(),
            });
        }
        let row = sqlx::query(&format!(
            "INSERT INTO profiles (account_id, name, app_type, applet_id, tars, defaults, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7) \
             RETURNING {PROFILE_COLUMNS}"
        ))
        .bind(account_id)
        .bind(profile.name.as_str())
        .bind(profile.app_type.as_deref())
        .bind(profile.applet_id.as_deref())
        .bind(tars)
        .bind(defaults)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_insert(e, "profile", &profile.name, account_id))?;
        let record = profile_from_row(&row)?;
        tx.commit().await.map_err(dbe)?;
        Ok(record)
    }

    async fn profile(
        &self,
        account_id: &str,
        id: i64,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE account_id = $1 AND id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.as_ref().map(profile_from_row).transpose()
    }

    async fn profile_by_name(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<ProfileRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE account_id = $1 AND name = $2"
        ))
        .bind(account_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.as_ref().map(profile_from_row).transpose()
    }

    async fn profiles(&self, account_id: &str) -> Result<Vec<ProfileRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE account_id = $1 ORDER BY id"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(profile_from_row).collect()
    }

    async fn existing_iccids(&self, iccids: &[String]) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        for chunk in iccids.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT iccid FROM cards WHERE iccid IN ({})",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(&sql);
            for iccid in chunk {
                q = q.bind(iccid.as_str());
            }
            for row in q.fetch_all(&self.pool).await.map_err(dbe)? {
                found.push(col::<String>(&row, "iccid")?);
            }
        }
        Ok(found)
    }

    async fn provision_cards(
        &self,
        account_id: &str,
        profile_id: i64,
        cards: &[NewCard],
        group: Option<&str>,
        now: Millis,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Option<CardGroupRecord>, StoreError> {
        let attributes = check_new_cards(cards)?;
        let mut tx = self.begin().await?;
        if !self.profile_exists(&mut tx, account_id, profile_id).await? {
            return Err(StoreError::NotFound {
                what: "profile",
                key: profile_id.to_string(),
            });
        }
        if let Some(chunk) = self
            .insert_card_rows(&mut tx, account_id, cards, &attributes, now, progress)
            .await?
        {
            tx.rollback().await.map_err(dbe)?;
            return Err(self.name_duplicate(chunk).await);
        }
        let iccids: Vec<&str> = cards.iter().map(|c| c.iccid.as_str()).collect();
        insert_id_iccid(
            &mut tx,
            self.dialect,
            "profile_cards (profile_id, iccid)",
            profile_id,
            &iccids,
            progress,
        )
        .await?;
        let group_id = match group {
            Some(name) => {
                let id = self
                    .insert_group(&mut tx, account_id, profile_id, name, now)
                    .await?;
                insert_id_iccid(
                    &mut tx,
                    self.dialect,
                    "card_group_members (group_id, iccid)",
                    id,
                    &iccids,
                    progress,
                )
                .await?;
                Some(id)
            }
            None => None,
        };
        tx.commit().await.map_err(dbe)?;
        match group_id {
            Some(id) => self.card_group(account_id, id).await,
            None => Ok(None),
        }
    }

    async fn profile_cards_matching(
        &self,
        account_id: &str,
        profile_id: i64,
        key: CardKey,
        values: &[String],
    ) -> Result<Vec<(String, String)>, StoreError> {
        let column = match key {
            CardKey::Iccid => "c.iccid",
            CardKey::Msisdn => "c.msisdn",
        };
        let mut found = Vec::new();
        for chunk in values.chunks(LOOKUP_CHUNK) {
            let sql = format!(
                "SELECT {column} AS k, c.iccid AS iccid FROM cards c \
                 JOIN profile_cards p ON p.iccid = c.iccid \
                 WHERE c.account_id = $1 AND p.profile_id = $2 AND {column} IN ({})",
                placeholders(3, chunk.len())
            );
            let mut q = sqlx::query(&sql).bind(account_id).bind(profile_id);
            for v in chunk {
                q = q.bind(v.as_str());
            }
            for row in q.fetch_all(&self.pool).await.map_err(dbe)? {
                found.push((col::<String>(&row, "k")?, col::<String>(&row, "iccid")?));
            }
        }
        Ok(found)
    }

    async fn create_card_group(
        &self,
        account_id: &str,
        profile_id: i64,
        name: &str,
        members: &GroupMembers,
        now: Millis,
    ) -> Result<CardGroupRecord, StoreError> {
        let mut tx = self.begin().await?;
        if !self.profile_exists(&mut tx, account_id, profile_id).await? {
            return Err(StoreError::NotFound {
                what: "profile",
                key: profile_id.to_string(),
            });
        }
        let id = self
            .insert_group(&mut tx, account_id, profile_id, name, now)
            .await?;
        match members {
            GroupMembers::AllOfProfile => {
                sqlx::query(
                    "INSERT INTO card_group_members (group_id, iccid) \
                     SELECT $1, iccid FROM profile_cards WHERE profile_id = $2",
                )
                .bind(id)
                .bind(profile_id)
                .execute(&mut *tx)
                .await
                .map_err(dbe)?;
            }
            GroupMembers::Iccids(iccids) => {
                let mut seen = HashSet::with_capacity(iccids.len());
                for iccid in iccids {
                    if !seen.insert(iccid.as_str()) {
                        return Err(StoreError::Invalid {
                            field: "iccids".into(),
                            problem: format!("{iccid} is listed twice"),
                        });
                    }
                }
                // Every listed card must be a card of the profile; the others are named.
                let mut linked = HashSet::with_capacity(iccids.len());
                for chunk in iccids.chunks(LOOKUP_CHUNK) {
                    let sql = format!(
                        "SELECT p.iccid AS iccid FROM profile_cards p \
                         JOIN cards c ON c.iccid = p.iccid \
                         WHERE c.account_id = $1 AND p.profile_id = $2 AND p.iccid IN ({})",
                        placeholders(3, chunk.len())
                    );
                    let mut q = sqlx::query(&sql).bind(account_id).bind(profile_id);
                    for v in chunk {
                        q = q.bind(v.as_str());
                    }
                    for row in q.fetch_all(&mut *tx).await.map_err(dbe)? {
                        linked.insert(col::<String>(&row, "iccid")?);
                    }
                }
                let outside: Vec<&str> = iccids
                    .iter()
                    .filter(|i| !linked.contains(i.as_str()))
                    .map(String::as_str)
                    .collect();
                if !outside.is_empty() {
                    const NAMED: usize = 10;
                    let mut named = outside[..outside.len().min(NAMED)].join(", ");
                    if outside.len() > NAMED {
                        named.push_str(&format!(" and {} more", outside.len() - NAMED));
                    }
                    return Err(StoreError::Invalid {
                        field: "iccids".into(),
                        problem: format!(
                            "{} of the {} cards listed are not cards of profile {profile_id}: \
                             {named}",
                            outside.len(),
                            iccids.len()
                        ),
                    });
                }
                let refs: Vec<&str> = iccids.iter().map(String::as_str).collect();
                insert_id_iccid(
                    &mut tx,
                    self.dialect,
                    "card_group_members (group_id, iccid)",
                    id,
                    &refs,
                    &|_| {},
                )
                .await?;
            }
        }
        tx.commit().await.map_err(dbe)?;
        self.card_group(account_id, id)
            .await?
            .ok_or_else(|| StoreError::Database(format!("card group {id} vanished")))
    }

    async fn card_group(
        &self,
        account_id: &str,
        id: i64,
    ) -> Result<Option<CardGroupRecord>, StoreError> {
        let row = sqlx::query(&format!(
            "{GROUP_SELECT} WHERE g.account_id = $1 AND g.id = $2"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.as_ref().map(group_from_row).transpose()
    }

    async fn card_groups(&self, account_id: &str) -> Result<Vec<CardGroupRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "{GROUP_SELECT} WHERE g.account_id = $1 ORDER BY g.id"
        ))
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(group_from_row).collect()
    }

    async fn card_group_iccids(
        &self,
        account_id: &str,
        group_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.iccid AS iccid FROM card_group_members m \
             JOIN card_groups g ON g.id = m.group_id \
             WHERE g.account_id = $1 AND m.group_id = $2 AND m.iccid > $3 \
             ORDER BY m.iccid LIMIT $4",
        )
        .bind(account_id)
        .bind(group_id)
        .bind(after.unwrap_or(""))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(dbe)?;
        rows.iter().map(|r| col::<String>(r, "iccid")).collect()
    }

    async fn card_profile(&self, account_id: &str, iccid: &str) -> Result<Option<i64>, StoreError> {
        let row = sqlx::query(
            "SELECT p.profile_id AS profile_id FROM profile_cards p \
             JOIN cards c ON c.iccid = p.iccid WHERE c.account_id = $1 AND p.iccid = $2",
        )
        .bind(account_id)
        .bind(iccid)
        .fetch_optional(&self.pool)
        .await
        .map_err(dbe)?;
        row.map(|r| col::<i64>(&r, "profile_id")).transpose()
    }

    async fn profile_of_card(&self, iccid: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let sql = format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = \
             (SELECT profile_id FROM profile_cards WHERE iccid = $1)"
        );
        let row = sqlx::query(&sql)
            .bind(iccid)
            .fetch_optional(&self.pool)
            .await
            .map_err(dbe)?;
        row.as_ref().map(profile_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        assert!(matches!(
            parse_url("sqlite::memory:"),
            Ok(Target::SqliteMemory)
        ));
        assert!(matches!(
            parse_url("postgres://u@h/db"),
            Ok(Target::Postgres(_))
        ));
        match parse_url("sqlite://otagw.db") {
            Ok(Target::SqliteFile(u, _)) => assert_eq!(u, "sqlite://otagw.db?mode=rwc"),
            _ => panic!("sqlite file"),
        }
        let err = parse_url("sqlite:///nonexistent-dir-otagw/x.db")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/nonexistent-dir-otagw"), "{err}");
        assert!(parse_url("mysql://x").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn sql_helpers() {
        assert_eq!(values_clause(Dialect::Postgres, 2, 2), "($1, $2), ($3, $4)");
        assert_eq!(values_clause(Dialect::Sqlite, 2, 2), "(?, ?), (?, ?)");
        assert_eq!(
            status_list(&[CommandStatus::Sent, CommandStatus::Delivered]),
            "('SENT', 'DELIVERED')"
        );
    }
}
