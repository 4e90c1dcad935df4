//! The SQLite writer lane: the group commits of a SQLite file, on a thread of their own with
//! their own connection, through rusqlite.
//!
//! Why not sqlx here: sqlx runs each SQLite statement on a worker thread and hands the
//! answer back through a channel, about 50 us a statement on this machine against 2.4 us for
//! the same `UPDATE ... RETURNING` with rusqlite's cached statements (measured one after the
//! other, 10,000 statements in one transaction). The command path's writes are a handful of
//! statements a command, all on SQLite's one writer, so that hand-over was what limited
//! `api-load`. The writes themselves are the same code on both drivers ([`super::exec`]).

use std::future::Future;
use std::path::PathBuf;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ErrorCode};

use super::exec::{Arg, Constraint, Exec, ExecError};
use crate::store::StoreError;

/// The lane's connection, out on loan to the open transaction.
pub(super) struct LaneConnection {
    conn: Option<Connection>,
    settings: LaneSettings,
}

/// How the lane's connection is set up (as the pool's: see `SqlStore::connect_with`).
#[derive(Debug, Clone)]
pub(super) struct LaneSettings {
    pub(super) path: PathBuf,
    pub(super) synchronous_normal: bool,
    pub(super) busy_timeout_ms: u64,
}

fn lane_error(context: &str, e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        context: context.to_string(),
        source: e,
    }
}

fn open(settings: &LaneSettings) -> Result<Connection, StoreError> {
    let conn = Connection::open(&settings.path).map_err(|e| {
        lane_error(
            &format!(
                "cannot open {} for the writer lane",
                settings.path.display()
            ),
            e,
        )
    })?;
    conn.busy_timeout(std::time::Duration::from_millis(settings.busy_timeout_ms))
        .map_err(|e| lane_error("busy_timeout", e))?;
    let synchronous = if settings.synchronous_normal {
        "NORMAL"
    } else {
        "FULL"
    };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(|e| lane_error("synchronous", e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| lane_error("foreign_keys", e))?;
    // Enough for every statement text the command path uses.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl LaneConnection {
    /// Opens the database file the pool opened (WAL mode is set by the pool, once for the
    /// file).
    pub(super) fn open(settings: &LaneSettings) -> Result<Self, StoreError> {
        Ok(Self {
            conn: Some(open(settings)?),
            settings: settings.clone(),
        })
    }

    /// Starts a write transaction (taking the write lock up front, as the pool does). A
    /// connection lost with a transaction that never ended is opened again.
    pub(super) fn begin(&mut self) -> Result<LaneTx, StoreError> {
        let conn = match self.conn.take() {
            Some(c) => c,
            None => open(&self.settings)?,
        };
        match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => Ok(LaneTx { conn }),
            Err(e) => {
                self.conn = Some(conn);
                Err(lane_error("begin", e))
            }
        }
    }

    /// Commits and takes the connection back.
    pub(super) fn commit(&mut self, tx: LaneTx) -> Result<(), StoreError> {
        let done = tx.conn.execute_batch("COMMIT");
        if done.is_err() {
            let _ = tx.conn.execute_batch("ROLLBACK");
        }
        self.conn = Some(tx.conn);
        done.map_err(|e| lane_error("commit", e))
    }

    /// Rolls back and takes the connection back.
    pub(super) fn rollback(&mut self, tx: LaneTx) {
        let _ = tx.conn.execute_batch("ROLLBACK");
        self.conn = Some(tx.conn);
    }
}

/// A transaction on the lane's connection (ended by [`LaneConnection::commit`] or
/// [`LaneConnection::rollback`]).
pub(super) struct LaneTx {
    conn: Connection,
}

impl LaneTx {
    /// A cached statement with `args` bound: `$N` parameters by their number (SQLite numbers
    /// named parameters in order of appearance, not by name), `?` in order.
    fn bound<'s>(
        conn: &'s Connection,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<rusqlite::CachedStatement<'s>, ExecError> {
        let mut stmt = conn.prepare_cached(sql).map_err(exec_error)?;
        for i in 1..=stmt.parameter_count() {
            let n = match stmt.parameter_name(i) {
                Some(name) => name
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .ok_or_else(|| bad_parameter(sql, name))?,
                None => i,
            };
            let arg = args
                .get(n.wrapping_sub(1))
                .ok_or_else(|| bad_parameter(sql, &format!("#{n}")))?;
            stmt.raw_bind_parameter(i, Bound(*arg))
                .map_err(exec_error)?;
        }
        Ok(stmt)
    }
}

fn bad_parameter(sql: &str, name: &str) -> ExecError {
    ExecError {
        constraint: None,
        error: StoreError::Database(format!("writer lane: parameter {name} unbound in {sql}")),
    }
}

fn exec_error(e: rusqlite::Error) -> ExecError {
    let constraint = match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            match f.extended_code {
                rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => Some(Constraint::Unique),
                rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY => Some(Constraint::ForeignKey),
                _ => None,
            }
        }
        _ => None,
    };
    ExecError {
        constraint,
        error: lane_error("query", e),
    }
}

struct Bound<'a>(Arg<'a>);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Arg::Int(Some(v)) => ToSqlOutput::Owned(Value::Integer(v)),
            Arg::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Arg::Blob(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Arg::Int(None) | Arg::Text(None) | Arg::Blob(None) => ToSqlOutput::Owned(Value::Null),
        })
    }
}

impl Exec for LaneTx {
    fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, ExecError>> + Send {
        let done = Self::bound(&self.conn, sql, args)
            .and_then(|mut stmt| stmt.raw_execute().map_err(exec_error))
            .map(|n| n as u64);
        std::future::ready(done)
    }

    fn fetch_int(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<i64>, ExecError>> + Send {
        let done = Self::bound(&self.conn, sql, args).and_then(|mut stmt| {
            let mut rows = stmt.raw_query();
            let value = match rows.next().map_err(exec_error)? {
                Some(row) => Some(row.get::<_, i64>(0).map_err(exec_error)?),
                None => None,
            };
            // Step to the end so that a RETURNING statement finishes its changes.
            while rows.next().map_err(exec_error)?.is_some() {}
            Ok(value)
        });
        std::future::ready(done)
    }

    fn fetch_pairs(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<(String, String)>, ExecError>> + Send {
        let done = Self::bound(&self.conn, sql, args).and_then(|mut stmt| {
            let mut rows = stmt.raw_query();
            let mut pairs = Vec::new();
            while let Some(row) = rows.next().map_err(exec_error)? {
                pairs.push((
                    row.get::<_, String>(0).map_err(exec_error)?,
                    row.get::<_, String>(1).map_err(exec_error)?,
                ));
            }
            Ok(pairs)
        });
        std::future::ready(done)
    }

    fn fetch_texts(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<Vec<Option<String>>>, ExecError>> + Send {
        let done = Self::bound(&self.conn, sql, args).and_then(|mut stmt| {
            let columns = stmt.column_count();
            let mut rows = stmt.raw_query();
            let texts = match rows.next().map_err(exec_error)? {
                Some(row) => {
                    let mut texts = Vec::with_capacity(columns);
                    for i in 0..columns {
                        texts.push(row.get::<_, Option<String>>(i).map_err(exec_error)?);
                    }
                    Some(texts)
                }
                None => None,
            };
            while rows.next().map_err(exec_error)?.is_some() {}
            Ok(texts)
        });
        std::future::ready(done)
    }
}
