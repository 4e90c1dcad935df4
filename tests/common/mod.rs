//! Test databases shared by the store suites: a SQLite file in a fresh temporary directory, or
//! a fresh schema in the PostgreSQL at `OTAGW_TEST_DATABASE_URL` (by default
//! `postgres://postgres@127.0.0.1:5432/test`), removed when dropped.
#![allow(dead_code)] // each test binary uses its own part

use std::path::PathBuf;

use otagw::store::{MasterKey, SqlStore};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const MASTER_HEX: &str = "4f5441475720746573742d6d61737465722d6b6579203332206f63746574732e";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test, removed when dropped.
pub struct TestDb {
    /// The URL the store connects to.
    pub url: String,
    /// SQLite: the temporary directory. PostgreSQL: (server URL, schema).
    sqlite_dir: Option<PathBuf>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let unique = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir().join(format!("otagw-store-{unique}"));
                std::fs::create_dir_all(&dir).expect("create temp dir");
                let url = format!("sqlite://{}", dir.join("otagw.db").display());
                TestDb {
                    url,
                    sqlite_dir: Some(dir),
                    pg: None,
                }
            }
            Backend::Postgres => {
                let server = std::env::var("OTAGW_TEST_DATABASE_URL")
                    .unwrap_or_else(|_| DEFAULT_PG_URL.to_string());
                let schema = format!("t_{unique}");
                let admin = sqlx::postgres::PgPoolOptions::new()
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(&server)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL at {server} is needed for these tests: {e}")
                    });
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(&admin)
                    .await
                    .expect("create schema");
                admin.close().await;
                let sep = if server.contains('?') { '&' } else { '?' };
                let url = format!("{server}{sep}options=-c%20search_path%3D{schema}");
                TestDb {
                    url,
                    sqlite_dir: None,
                    pg: Some((server, schema)),
                }
            }
        }
    }

    pub async fn open(&self) -> SqlStore {
        self.open_with(master()).await
    }

    pub async fn open_with(&self, key: MasterKey) -> SqlStore {
        SqlStore::connect(&self.url, key)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.url))
    }

    /// A plain pool on the same database, to look at what the store wrote.
    pub async fn raw(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::AnyPool::connect(&self.url).await.expect("raw pool")
    }

    /// Every byte of the SQLite files (database, WAL, shared memory).
    pub fn sqlite_bytes(&self) -> Vec<u8> {
        let dir = self.sqlite_dir.as_ref().expect("sqlite only");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let path = entry.expect("entry").path();
            out.extend(std::fs::read(&path).expect("read db file"));
        }
        out
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(dir) = &self.sqlite_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some((server, schema)) = self.pg.take() {
            // Drop may run inside the test's runtime: use a thread with its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    if let Ok(pool) = sqlx::PgPool::connect(&server).await {
                        let _ = sqlx::query("SET lock_timeout = '10s'").execute(&pool).await;
                        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                            .execute(&pool)
                            .await;
                        pool.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub fn master() -> MasterKey {
    MasterKey::from_hex(MASTER_HEX).expect("master key")
}
