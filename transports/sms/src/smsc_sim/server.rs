//! The listener, the state shared by the sessions, and the handle.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::config::SmscConfig;
use super::delivery::Concat;
use super::rng::FaultPlan;
use super::router::{lock, Router};
use super::session;
use super::stats::{Counters, SmscStats};
use super::HandsetNetwork;

/// State shared by every session of one simulator.
pub(crate) struct Shared {
    pub config: SmscConfig,
    pub network: Arc<dyn HandsetNetwork>,
    pub counters: Counters,
    pub faults: FaultPlan,
    pub router: Router,
    pub concat: Mutex<Concat>,
    pub root: CancellationToken,
    /// Parent of every session's token (a child of `root`); replaced by `disconnect_all`.
    pub sessions: Mutex<CancellationToken>,
    /// The TLS acceptor when [`SmscConfig::tls`] is set.
    tls: Option<TlsAcceptor>,
    message_ids: AtomicU64,
    concat_refs: AtomicU32,
    session_ids: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn next_message_id(&self) -> u64 {
        self.message_ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn next_concat_reference(&self) -> u8 {
        self.concat_refs.fetch_add(1, Ordering::Relaxed) as u8
    }

    pub(crate) fn next_session_id(&self) -> u64 {
        self.session_ids.fetch_add(1, Ordering::Relaxed)
    }
}

/// The SMSC simulator: an SMPP 3.4 server in front of a [`HandsetNetwork`].
#[derive(Debug)]
pub struct SmscSimulator;

impl SmscSimulator {
    /// Binds the listener and starts serving on the current tokio runtime.
    ///
    /// Fails if the TLS settings cannot be loaded (`InvalidInput`, saying what is wrong) or if
    /// the listen address cannot be bound.
    pub async fn start(
        config: SmscConfig,
        network: Arc<dyn HandsetNetwork>,
    ) -> io::Result<SmscHandle> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => Some(
                crate::smpp::tls::acceptor(tls)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
            ),
        };
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let base = config.message_id_base.unwrap_or_else(|| {
            // Seconds since the epoch in the high bits: ids stay unique across restarts.
            super::pdu::unix_now() << 20
        });
        let root = CancellationToken::new();
        let shared = Arc::new(Shared {
            faults: FaultPlan::new(&config.faults),
            router: Router::new(config.backlog_limit),
            counters: Counters::default(),
            concat: Mutex::new(Concat::default()),
            sessions: Mutex::new(root.child_token()),
            root: root.clone(),
            message_ids: AtomicU64::new(base.max(1)),
            concat_refs: AtomicU32::new(1),
            session_ids: AtomicU64::new(1),
            tls,
            network,
            config,
        });
        let (done_tx, done_rx) = mpsc::channel::<()>(1);

        tokio::spawn(accept_loop(shared.clone(), listener, done_tx.clone()));
        tokio::spawn(sweep_loop(shared.clone(), done_tx));

        tracing::info!(%local_addr, tls = shared.tls.is_some(), "SMSC simulator listening");
        Ok(SmscHandle {
            local_addr,
            shared,
            done: tokio::sync::Mutex::new(Some(done_rx)),
        })
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, done: mpsc::Sender<()>) {
    loop {
        tokio::select! {
            biased;
            _ = shared.root.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "ESME connected");
                    let _ = stream.set_nodelay(true);
                    match shared.tls.clone() {
                        None => {
                            let (reader, writer) = stream.into_split();
                            tokio::spawn(session::run(shared.clone(), reader, writer, done.clone()));
                        }
                        Some(acceptor) => {
                            tokio::spawn(accept_tls(shared.clone(), acceptor, stream, peer, done.clone()));
                        }
                    }
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// The TLS handshake (bounded by the configured timeout and by shutdown), then the same
/// session as over plain TCP.
async fn accept_tls(
    shared: Arc<Shared>,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    done: mpsc::Sender<()>,
) {
    let limit = shared
        .config
        .tls
        .as_ref()
        .map_or(Duration::from_secs(10), |t| t.handshake_timeout);
    let outcome = tokio::select! {
        biased;
        _ = shared.root.cancelled() => return,
        r = tokio::time::timeout(limit, acceptor.accept(stream)) => r,
    };
    match outcome {
        Ok(Ok(stream)) => {
            tracing::debug!(%peer, "TLS handshake done");
            let (reader, writer) = tokio::io::split(stream);
            session::run(shared, reader, writer, done).await;
        }
        Ok(Err(e)) => {
            Counters::inc(&shared.counters.tls_handshake_failures);
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            Counters::inc(&shared.counters.tls_handshake_failures);
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

async fn sweep_loop(shared: Arc<Shared>, _done: mpsc::Sender<()>) {
    let timeout = shared.config.reassembly_timeout;
    let period = (timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shared.root.cancelled() => break,
            _ = tick.tick() => shared.expire_concat(Instant::now(), timeout),
        }
    }
}

/// A running simulator. Dropping it stops the simulator without waiting;
/// [`shutdown`](Self::shutdown) unbinds the sessions and waits for them.
#[derive(Debug)]
pub struct SmscHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    done: tokio::sync::Mutex<Option<mpsc::Receiver<()>>>,
}

impl SmscHandle {
    /// The address the simulator listens on (with the port picked when configured as 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SmscStats {
        self.shared.counters.snapshot()
    }

    /// Concatenated messages still waiting for segments.
    pub fn pending_reassemblies(&self) -> usize {
        lock(&self.shared.concat).len()
    }

    /// deliver_sm (receipts, MO) waiting for a receiving bind of `system_id`.
    pub fn backlog(&self, system_id: &str) -> usize {
        self.shared.router.backlog_len(system_id)
    }

    /// Drops every connection at once, without unbind (a crashed or restarted SMSC, as seen by
    /// the ESME). Unacknowledged deliver_sm go to the next receiving bind of their system_id.
    /// The listener keeps accepting.
    pub fn disconnect_all(&self) {
        let mut sessions = lock(&self.shared.sessions);
        sessions.cancel();
        *sessions = self.shared.root.child_token();
    }

    /// Writes `bytes` as they are (for example a malformed PDU) to the next receiving bind of
    /// `system_id`; false if none is bound. Nothing is tracked for them.
    pub fn inject(&self, system_id: &str, bytes: &[u8]) -> bool {
        self.shared
            .router
            .send_raw(system_id, bytes::Bytes::copy_from_slice(bytes))
    }

    /// Sends MO short messages for handsets (see [`MoSender::send_mo`]); usable after this
    /// handle moved elsewhere.
    pub fn mo_sender(&self) -> MoSender {
        MoSender {
            shared: self.shared.clone(),
        }
    }

    /// The configuration the simulator runs with.
    pub fn config(&self) -> &SmscConfig {
        &self.shared.config
    }

    /// Stops accepting, sends unbind on every bound session, closes the connections and waits
    /// (at most 2 s) for every task to end. Idempotent.
    pub async fn shutdown(&self) {
        self.shared.root.cancel();
        let Some(mut done) = self.done.lock().await.take() else {
            return;
        };
        // Every task holds a sender; recv() returns None once the last one is gone.
        let _ = tokio::time::timeout(Duration::from_secs(2), done.recv()).await;
    }
}

/// Sends MO short messages into a running simulator (see [`SmscHandle::mo_sender`]).
#[derive(Clone)]
pub struct MoSender {
    shared: Arc<Shared>,
}

impl MoSender {
    /// An MO short message from handset `from` (digits) to `to`, with `user_data` (UDH
    /// included, at most one SMS: 140 octets), as the card of a handset sends it (for example a
    /// card-originated command packet, UDH `02 70 00`). It goes to the next receiving bind of
    /// `system_id`, or waits in its backlog. False if it does not fit one SMS or an address is
    /// not 1 to 20 characters.
    pub fn send_mo(&self, system_id: &str, from: &str, to: &str, user_data: &[u8]) -> bool {
        use rusmpp::types::COctetString;
        if user_data.len() > 140 {
            return false;
        }
        let addr = |a: &str| COctetString::from_string(a.to_owned()).ok();
        let (Some(handset), Some(esme)) = (addr(from), addr(to)) else {
            return false;
        };
        let handset = super::pdu::Addr {
            ton: 1,
            npi: 1,
            addr: handset,
        };
        let esme = super::pdu::Addr {
            ton: 0,
            npi: 1,
            addr: esme,
        };
        super::stats::Counters::inc(&self.shared.counters.mo_sent);
        self.shared
            .router
            .dispatch(system_id, &self.shared.counters, |seq| {
                super::pdu::mo_por(seq, &handset, &esme, user_data)
            });
        true
    }
}

impl Drop for SmscHandle {
    fn drop(&mut self) {
        self.shared.root.cancel();
    }
}
