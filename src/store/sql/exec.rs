//! The command path's writes run on two drivers: sqlx (PostgreSQL, and SQLite where no
//! writer lane runs) and rusqlite (the SQLite writer lane, [`super::lane`]). [`Exec`] is the
//! little they need from a transaction (run a statement, read one integer back), so each
//! write is written once, over either.

use std::future::Future;

use sqlx::error::ErrorKind;

use super::{dbe, kind};
use crate::store::StoreError;

/// A value bound to a statement. Nulls carry their type: PostgreSQL refuses an untyped null
/// for a `bytea` column.
#[derive(Debug, Clone, Copy)]
pub(super) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<&'a str>),
    Blob(Option<&'a [u8]>),
}

impl From<i64> for Arg<'_> {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}

impl From<Option<i64>> for Arg<'_> {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(v: &'a str) -> Self {
        Arg::Text(Some(v))
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(v: &'a String) -> Self {
        Arg::Text(Some(v.as_str()))
    }
}

impl<'a> From<Option<&'a str>> for Arg<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Arg::Text(v)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(v: &'a [u8]) -> Self {
        Arg::Blob(Some(v))
    }
}

impl<'a> From<Option<&'a [u8]>> for Arg<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        Arg::Blob(v)
    }
}

/// Which constraint a failed statement broke, when that is what failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Constraint {
    Unique,
    ForeignKey,
}

/// A failed statement: the store's error (the driver's error kept as its source) and the
/// constraint it broke, if any.
#[derive(Debug)]
pub(super) struct ExecError {
    pub(super) constraint: Option<Constraint>,
    pub(super) error: StoreError,
}

impl From<ExecError> for StoreError {
    fn from(e: ExecError) -> Self {
        e.error
    }
}

impl From<sqlx::Error> for ExecError {
    fn from(e: sqlx::Error) -> Self {
        let constraint = match kind(&e) {
            Some(ErrorKind::UniqueViolation) => Some(Constraint::Unique),
            Some(ErrorKind::ForeignKeyViolation) => Some(Constraint::ForeignKey),
            _ => None,
        };
        ExecError {
            constraint,
            error: dbe(e),
        }
    }
}

/// A write transaction.
pub(super) trait Exec: Send {
    /// Runs a statement; the rows it changed.
    fn execute(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<u64, ExecError>> + Send;
    /// Runs a statement returning at most one row of one integer column (`RETURNING n`).
    fn fetch_int(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<i64>, ExecError>> + Send;
    /// Runs a statement returning rows of two text columns (`RETURNING account_id, id`).
    fn fetch_pairs(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Vec<(String, String)>, ExecError>> + Send;
    /// Runs a query returning at most one row of text columns (each possibly NULL).
    fn fetch_texts(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> impl Future<Output = Result<Option<Vec<Option<String>>>, ExecError>> + Send;
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for a in args {
        q = match *a {
            Arg::Int(v) => q.bind(v),
            Arg::Text(v) => q.bind(v),
            Arg::Blob(v) => q.bind(v),
        };
    }
    q
}

impl Exec for sqlx::Transaction<'_, sqlx::Any> {
    async fn execute(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64, ExecError> {
        let q = bind(sqlx::query(sql), args);
        Ok(q.execute(&mut **self).await?.rows_affected())
    }

    async fn fetch_int(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<i64>, ExecError> {
        use sqlx::Row;
        let q = bind(sqlx::query(sql), args);
        match q.fetch_optional(&mut **self).await? {
            Some(row) => Ok(Some(row.try_get::<i64, _>(0)?)),
            None => Ok(None),
        }
    }

    async fn fetch_pairs(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Vec<(String, String)>, ExecError> {
        use sqlx::Row;
        let q = bind(sqlx::query(sql), args);
        let rows = q.fetch_all(&mut **self).await?;
        let mut pairs = Vec::with_capacity(rows.len());
        for row in rows {
            pairs.push((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?));
        }
        Ok(pairs)
    }

    async fn fetch_texts(
        &mut self,
        sql: &str,
        args: &[Arg<'_>],
    ) -> Result<Option<Vec<Option<String>>>, ExecError> {
        use sqlx::Row;
        let q = bind(sqlx::query(sql), args);
        let Some(row) = q.fetch_optional(&mut **self).await? else {
            return Ok(None);
        };
        let mut texts = Vec::with_capacity(row.len());
        for i in 0..row.len() {
            texts.push(row.try_get::<Option<String>, _>(i)?);
        }
        Ok(Some(texts))
    }
}
