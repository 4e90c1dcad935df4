//! Group commit for the command path's writes.
//!
//! Every command makes several small writes (its insert, the counter, the secured packet, each
//! send, the delivery report, the end). Each in its own transaction costs a commit (an fsync on
//! SQLite with `synchronous = FULL`, a round trip on PostgreSQL) per write. Here they queue for
//! a writer task that runs whatever is queued (up to [`MAX_GROUP`]) in one transaction, in
//! queue order, and answers each caller only after the commit: what a caller is told is stored
//! is durable, as before.
//!
//! A write that fails inside a group (a duplicate id, a deadlock on PostgreSQL) would take the
//! others down with it: then the group is rolled back and each write runs again in its own
//! transaction, so each caller gets its own answer. A counter reserved in a rolled-back group
//! was never given out, so none is reused.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

use std::future::Future;

use super::deferred::Deferred;
use super::exec::Exec;
use super::lane::{LaneConnection, LaneSettings, LaneTx};
use sqlx::AnyPool;

use super::{dbe, Dialect, SqlStore, Tx};
use crate::store::subscriptions::{Applied, RouterChange};
use crate::store::{Millis, NewCommand, SecuredPacket, StoreError, Transition};

/// Writes per transaction at most.
const MAX_GROUP: usize = 256;
/// Writer tasks (each a connection) on PostgreSQL.
pub(super) const POSTGRES_LANES: usize = 8;
/// Writes waiting before callers wait to queue.
const QUEUE: usize = 4096;

/// One write of the command path.
pub(super) enum Write {
    InsertCommand(NewCommand),
    ReserveCounter {
        iccid: String,
        version: u8,
    },
    RecordSecured {
        account_id: String,
        id: String,
        owner: String,
        secured: SecuredPacket,
        now: Millis,
    },
    RecordSend {
        account_id: String,
        id: String,
        owner: String,
        now: Millis,
    },
    RecordDelivery {
        account_id: String,
        id: String,
        at: Millis,
    },
    Transition {
        account_id: String,
        id: String,
        t: Box<Transition>,
    },
    AddEvent {
        account_id: String,
        id: String,
        kind: String,
        detail: String,
        at: Millis,
    },
    /// Claims commands (SQLite: on the writer lane, so that the pool's connection never waits
    /// for the write lock); answers the claimed (account id, id) pairs.
    Claim {
        owner: String,
        limit: u32,
        now: Millis,
        lease_until: Millis,
    },
    /// The subscription router's changes (on SQLite with the command path's writes: one
    /// writer, no wait for the write lock between two).
    Router(Vec<RouterChange>),
}

/// What a write answered.
#[derive(Debug)]
pub(super) enum Written {
    Done,
    Flag(bool),
    Counter(u64),
    Claimed(Vec<(String, String)>),
    Applied(Vec<Applied>),
}

impl Written {
    pub(super) fn flag(self) -> Result<bool, StoreError> {
        match self {
            Written::Flag(b) => Ok(b),
            other => Err(other.unexpected()),
        }
    }

    pub(super) fn unexpected(&self) -> StoreError {
        StoreError::Database(format!("group commit: unexpected answer {self:?}"))
    }
}

type Reply = oneshot::Sender<Result<Written, StoreError>>;

/// The queue to the writer tasks.
#[derive(Clone)]
pub(super) struct GroupCommit {
    tx: mpsc::Sender<(Write, Reply)>,
}

impl GroupCommit {
    /// Starts the writers over `store` (a handle without group commit of its own). SQLite
    /// has one writer anyway: one lane, on its own thread and connection through rusqlite
    /// when the database is a file ([`super::lane`]), else a task on the pool. PostgreSQL
    /// takes [`POSTGRES_LANES`] tasks, each on its own connection.
    pub(super) fn start(store: SqlStore, lane: Option<LaneSettings>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let store = Arc::new(store);
        if let Some(settings) = lane {
            match LaneConnection::open(&settings) {
                Ok(conn) => {
                    let spawned = std::thread::Builder::new()
                        .name("otagw-sqlite-writer".into())
                        .spawn({
                            let store = store.clone();
                            move || lane_writer(store, conn, rx)
                        });
                    match spawned {
                        Ok(_) => return Self { tx },
                        Err(e) => tracing::warn!("SQLite writer thread: {e}; writing on the pool"),
                    }
                    // The receiver went with the closure that failed to start: a new queue.
                    let (tx, rx) = mpsc::channel(QUEUE);
                    tokio::spawn(writer(store, Arc::new(Mutex::new(rx))));
                    return Self { tx };
                }
                Err(e) => tracing::warn!("SQLite writer lane: {e}; writing on the pool"),
            }
        }
        let lanes = match store.dialect {
            Dialect::Sqlite => 1,
            // Measured with api-load (1,000 cards, 64 clients): 1 lane 442/s, 2 556/s, 8 644/s.
            Dialect::Postgres => POSTGRES_LANES,
        };
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..lanes {
            tokio::spawn(writer(store.clone(), rx.clone()));
        }
        Self { tx }
    }
}

/// Where a group's transactions come from: the pool (sqlx) or the SQLite writer lane
/// (rusqlite).
pub(super) trait Begin: Send {
    type Tx: Exec;
    fn begin(&mut self) -> impl Future<Output = Result<Self::Tx, StoreError>> + Send;
    fn commit(&mut self, tx: Self::Tx) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn rollback(&mut self, tx: Self::Tx) -> impl Future<Output = ()> + Send;
}

/// Transactions on the pool.
pub(super) struct Pooled {
    pool: AnyPool,
    dialect: Dialect,
}

impl Begin for Pooled {
    type Tx = Tx;
    async fn begin(&mut self) -> Result<Tx, StoreError> {
        match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Dialect::Postgres => self.pool.begin().await,
        }
        .map_err(dbe)
    }
    async fn commit(&mut self, tx: Tx) -> Result<(), StoreError> {
        tx.commit().await.map_err(dbe)
    }
    async fn rollback(&mut self, tx: Tx) {
        let _ = tx.rollback().await;
    }
}

impl Begin for LaneConnection {
    type Tx = LaneTx;
    fn begin(&mut self) -> impl Future<Output = Result<LaneTx, StoreError>> + Send {
        std::future::ready(LaneConnection::begin(self))
    }
    fn commit(&mut self, tx: LaneTx) -> impl Future<Output = Result<(), StoreError>> + Send {
        std::future::ready(LaneConnection::commit(self, tx))
    }
    fn rollback(&mut self, tx: LaneTx) -> impl Future<Output = ()> + Send {
        LaneConnection::rollback(self, tx);
        std::future::ready(())
    }
}

impl SqlStore {
    fn pooled(&self) -> Pooled {
        Pooled {
            pool: self.pool.clone(),
            dialect: self.dialect,
        }
    }

    /// Runs `write` in a group when a writer runs, else alone.
    pub(super) async fn grouped(&self, write: Write) -> Result<Written, StoreError> {
        let Some(group) = &self.group else {
            return self.alone(&mut self.pooled(), &write).await;
        };
        let (reply, answer) = oneshot::channel();
        match group.tx.send((write, reply)).await {
            Ok(()) => match answer.await {
                Ok(result) => result,
                // The writer went away (its runtime ended) before it answered: nothing of
                // this write was committed by it.
                Err(_) => Err(StoreError::Database(
                    "group commit: the writer stopped".into(),
                )),
            },
            // No writer (its runtime ended): write here.
            Err(mpsc::error::SendError((write, _))) => self.alone(&mut self.pooled(), &write).await,
        }
    }

    /// One write in its own transaction.
    async fn alone<B: Begin>(&self, b: &mut B, write: &Write) -> Result<Written, StoreError> {
        let mut tx = b.begin().await?;
        let mut later = Deferred::default();
        let written = match self.apply(&mut tx, &mut later, write).await {
            Ok(w) => later.write(self.dialect, &mut tx).await.map(|()| w),
            Err(e) => Err(e),
        };
        match written {
            Ok(w) => {
                b.commit(tx).await?;
                Ok(w)
            }
            Err(e) => {
                b.rollback(tx).await;
                Err(e)
            }
        }
    }

    async fn apply<E: Exec>(
        &self,
        tx: &mut E,
        later: &mut Deferred,
        write: &Write,
    ) -> Result<Written, StoreError> {
        Ok(match write {
            Write::InsertCommand(c) => {
                self.insert_commands_in(tx, &[c]).await?;
                Written::Done
            }
            Write::ReserveCounter { iccid, version } => {
                Written::Counter(self.reserve_counter_in(tx, iccid, *version).await?)
            }
            Write::RecordSecured {
                account_id,
                id,
                owner,
                secured,
                now,
            } => Written::Flag(
                self.record_secured_in(tx, later, account_id, id, owner, secured, *now)
                    .await?,
            ),
            Write::RecordSend {
                account_id,
                id,
                owner,
                now,
            } => Written::Flag(
                self.record_send_in(tx, later, account_id, id, owner, *now)
                    .await?,
            ),
            Write::RecordDelivery { account_id, id, at } => Written::Flag(
                self.record_delivery_in(tx, later, account_id, id, *at)
                    .await?,
            ),
            Write::Transition { account_id, id, t } => {
                Written::Flag(self.transition_in(tx, later, account_id, id, t).await?)
            }
            Write::AddEvent {
                account_id,
                id,
                kind,
                detail,
                at,
            } => {
                self.add_event_in(later, account_id, id, kind, detail, *at);
                Written::Done
            }
            Write::Claim {
                owner,
                limit,
                now,
                lease_until,
            } => Written::Claimed(self.claim_in(tx, owner, *limit, *now, *lease_until).await?),
            Write::Router(changes) => {
                Written::Applied(self.apply_changes_in(tx, later, changes).await?)
            }
        })
    }

    /// A group's writes in `tx`: its new commands first, in multi-row statements (a
    /// command's later writes can only come after its insert was answered, so never in the
    /// same group), then the others in queue order, then the events and outbox rows of them
    /// all (see [`super::deferred`]).
    async fn apply_group<E: Exec>(
        &self,
        tx: &mut E,
        group: &[(Write, Reply)],
    ) -> Result<Vec<Written>, StoreError> {
        let inserts: Vec<&NewCommand> = group
            .iter()
            .filter_map(|(w, _)| match w {
                Write::InsertCommand(c) => Some(c),
                _ => None,
            })
            .collect();
        if !inserts.is_empty() {
            self.insert_commands_in(tx, &inserts).await?;
        }
        let mut later = Deferred::default();
        let mut answers = Vec::with_capacity(group.len());
        for (write, _) in group {
            answers.push(match write {
                Write::InsertCommand(_) => Written::Done,
                other => self.apply(tx, &mut later, other).await?,
            });
        }
        later.write(self.dialect, tx).await?;
        Ok(answers)
    }

    /// Runs a group in one transaction; on any failure, each write alone.
    async fn run_group<B: Begin>(&self, b: &mut B, group: Vec<(Write, Reply)>) {
        if group.len() == 1 {
            for (write, reply) in group {
                let _ = reply.send(self.alone(b, &write).await);
            }
            return;
        }
        let together = async {
            let mut tx = b.begin().await?;
            match self.apply_group(&mut tx, &group).await {
                Ok(answers) => {
                    b.commit(tx).await?;
                    Ok(answers)
                }
                Err(e) => {
                    b.rollback(tx).await;
                    Err(e)
                }
            }
        };
        match together.await {
            Ok(answers) => {
                for ((_, reply), answer) in group.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::debug!(writes = group.len(), error = %e, "group commit: one write failed; each runs alone");
                for (write, reply) in group {
                    let _ = reply.send(self.alone(b, &write).await);
                }
            }
        }
    }
}

/// Takes what is queued, up to [`MAX_GROUP`] writes, waiting for the first.
fn take_group(
    first: (Write, Reply),
    rx: &mut mpsc::Receiver<(Write, Reply)>,
) -> Vec<(Write, Reply)> {
    let mut group = vec![first];
    while group.len() < MAX_GROUP {
        match rx.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
    group
}

async fn writer(store: Arc<SqlStore>, rx: Arc<Mutex<mpsc::Receiver<(Write, Reply)>>>) {
    loop {
        let group = {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            take_group(first, &mut rx)
        };
        store.run_group(&mut store.pooled(), group).await;
    }
}

/// The SQLite writer lane's thread: every statement runs here, synchronously (the futures of
/// the writes over a [`LaneTx`] are ready at once). Ends when the store is dropped.
fn lane_writer(
    store: Arc<SqlStore>,
    mut conn: LaneConnection,
    mut rx: mpsc::Receiver<(Write, Reply)>,
) {
    while let Some(first) = rx.blocking_recv() {
        let group = take_group(first, &mut rx);
        futures::executor::block_on(store.run_group(&mut conn, group));
    }
}
