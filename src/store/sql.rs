//! Placeholder: replaced by the store work (SQLite and PostgreSQL on sqlx).
/// The SQL store.
pub struct SqlStore;
