//! The API's accept loop, for HTTP and HTTPS: hyper connections with a header-read timeout, a
//! keep-alive idle timeout and a cap on open connections, so clients that connect and send
//! nothing (or half a request) cannot use up file descriptors and lock everyone else out.
//!
//! The timeouts are watched here rather than with hyper's `header_read_timeout`: hyper starts
//! that timer as soon as a connection waits for a request, so it cannot give keep-alive
//! connections a longer idle time than the header time, and it does not cover HTTP/2 or the
//! TLS handshake.
//!
//! At the cap, a new connection takes the place of the oldest connection with no request in
//! flight (which is closed); only when every connection is serving a request is the new one
//! closed at once. Waiting in `accept` instead would leave new clients (health probes
//! included) queued behind held connections until their timeouts.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// How long in-flight requests may run on after shutdown is asked before their connections
/// are closed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Connection limits (`[api]` `header_read_timeout_secs`, `idle_timeout_secs`,
/// `max_connections`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time to send a request's header: from the connection's start (TLS handshake included)
    /// for the first request, from its first byte for later ones.
    pub header_read_timeout: Duration,
    /// Time a connection may wait for its next request after a response.
    pub idle_timeout: Duration,
    /// Connections open at once at most.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// The open connections, shared by the accept loop and the connection tasks; the server's
/// handle reads its counters.
#[derive(Debug, Default)]
pub struct Connections {
    // By accept order, so the first match is the oldest.
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    closing: AtomicUsize,
    evicted: AtomicU64,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl Connections {
    /// A new, empty set.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().len()
    }

    /// Connections closed so far to make room for new ones.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// New connections closed at once so far (at the cap with every connection busy).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed so far for a header or idle timeout.
    pub fn timed_out(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            id,
            clock: Mutex::new(Clock {
                in_flight: 0,
                header_since: Some(Instant::now()),
                idle_since: None,
            }),
            changed: Notify::new(),
            evicted: AtomicBool::new(false),
        });
        self.lock().insert(id, conn.clone());
        conn
    }

    fn remove(&self, conn: &Conn) {
        self.lock().remove(&conn.id);
        if conn.evicted.load(Ordering::Relaxed) {
            self.closing.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Makes room for one more connection; false if every open one has a request in flight.
    fn make_room(&self, max: usize) -> bool {
        let open = self.lock();
        if open
            .len()
            .saturating_sub(self.closing.load(Ordering::Relaxed))
            < max
        {
            return true;
        }
        let victim = open
            .values()
            .find(|c| !c.evicted.load(Ordering::Relaxed) && c.clock().in_flight == 0);
        match victim {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                self.closing.fetch_add(1, Ordering::Relaxed);
                self.evicted.fetch_add(1, Ordering::Relaxed);
                c.changed.notify_one();
                true
            }
            None => false,
        }
    }
}

#[derive(Debug)]
struct Conn {
    id: u64,
    clock: Mutex<Clock>,
    // Wakes the connection's watchdog when its clock changes or it is evicted.
    changed: Notify,
    evicted: AtomicBool,
}

#[derive(Debug)]
struct Clock {
    in_flight: usize,
    // Waiting for a header since (a fresh connection, or bytes after a keep-alive pause).
    header_since: Option<Instant>,
    // Waiting, silent, since the last response.
    idle_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum Expired {
    Header,
    Idle,
    Evicted,
}

impl Conn {
    fn clock(&self) -> MutexGuard<'_, Clock> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bytes_read(&self) {
        let mut c = self.clock();
        if c.in_flight == 0 && c.header_since.is_none() {
            c.header_since = Some(Instant::now());
            c.idle_since = None;
            drop(c);
            self.changed.notify_one();
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        let mut c = self.clock();
        c.in_flight += 1;
        c.header_since = None;
        c.idle_since = None;
        drop(c);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    /// Resolves when the connection, with no request in flight, has waited too long, or was
    /// evicted.
    async fn expired(&self, limits: ConnLimits) -> Expired {
        loop {
            if self.evicted.load(Ordering::Relaxed) {
                return Expired::Evicted;
            }
            let deadline = {
                let c = self.clock();
                if c.in_flight > 0 {
                    None
                } else if let Some(t) = c.header_since {
                    Some((t + limits.header_read_timeout, Expired::Header))
                } else {
                    c.idle_since
                        .map(|t| (t + limits.idle_timeout, Expired::Idle))
                }
            };
            match deadline {
                Some((at, why)) if at <= Instant::now() => return why,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A request being served; dropped with the response body (sent or abandoned).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut c = self.0.clock();
        c.in_flight = c.in_flight.saturating_sub(1);
        if c.in_flight == 0 {
            c.idle_since = Some(Instant::now());
        }
        drop(c);
        self.0.changed.notify_one();
    }
}

/// The connection's stream, noting when bytes arrive.
struct Watched<T> {
    inner: T,
    conn: Arc<Conn>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.bytes_read();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` (over TLS with `tls`) until `shutdown` completes; then stops
/// accepting, lets in-flight requests finish for up to [`SHUTDOWN_GRACE`], and returns.
/// Handlers can extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: std::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ConnLimits,
    connections: Arc<Connections>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    let (stop, stopping) = watch::channel(false);
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    if out_of_descriptors(&e) {
                        // Free one and retry, rather than stop answering.
                        tracing::warn!("API: accept: {e}; closing the oldest idle connection");
                        connections.make_room(0);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        };
        if !connections.make_room(limits.max_connections) {
            connections.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "API: {} connections, all serving a request: closing the one from {peer}",
                limits.max_connections
            );
            continue;
        }
        let _ = tcp.set_nodelay(true);
        let conn = connections.register();
        let job = Job {
            conn,
            connections: connections.clone(),
            peer,
            limits,
            router: router.clone(),
            builder: builder.clone(),
            stopping: stopping.clone(),
        };
        let tls = tls.clone();
        tasks.spawn(async move {
            match tls {
                Some(acceptor) => {
                    let handshake = acceptor.accept(tcp);
                    let expired = job.conn.expired(limits);
                    let mut stopping = job.stopping.clone();
                    let stream = tokio::select! {
                        s = handshake => s,
                        why = expired => {
                            job.note_expired(why);
                            return;
                        }
                        _ = stopping.wait_for(|s| *s) => return,
                    };
                    match stream {
                        Ok(stream) => job.run(stream).await,
                        Err(e) => tracing::debug!("API: TLS handshake with {peer}: {e}"),
                    }
                }
                None => job.run(tcp).await,
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("API: connections still open after the shutdown grace: closing them");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// Binds the API's listener with a 1,024-connection accept backlog (the kernel caps it at
/// `net.core.somaxconn`): std's 128 overflows under bursts of connections, and each dropped
/// SYN costs its client a one-second retransmission.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE / ENFILE.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// One accepted connection's task.
struct Job {
    conn: Arc<Conn>,
    connections: Arc<Connections>,
    peer: SocketAddr,
    limits: ConnLimits,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stopping: watch::Receiver<bool>,
}

impl Job {
    async fn run<T>(self, stream: T)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(Watched {
            inner: stream,
            conn: self.conn.clone(),
        });
        let router = self.router.clone();
        let conn = self.conn.clone();
        let peer = self.peer;
        let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            let in_flight = conn.request_started();
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let response = router.oneshot(req.map(Body::new)).await;
                // The request counts as in flight until its body has been sent.
                response.map(|r| {
                    r.map(move |body| {
                        Body::new(body.map_frame(move |frame| {
                            let _ = &in_flight;
                            frame
                        }))
                    })
                })
            }
        });
        let builder = self.builder.clone();
        let served = builder.serve_connection(io, service);
        tokio::pin!(served);
        let expired = self.conn.clone();
        let expired = expired.expired(self.limits);
        tokio::pin!(expired);
        let mut stopping = self.stopping.clone();
        let mut closing = false;
        loop {
            tokio::select! {
                result = served.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("API: connection from {peer}: {e}");
                    }
                    break;
                }
                // Nothing is in flight: dropping the connection loses no response.
                why = &mut expired, if !closing => {
                    self.note_expired(why);
                    break;
                }
                _ = stopping.wait_for(|s| *s), if !closing => {
                    served.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }

    fn note_expired(&self, why: Expired) {
        match why {
            Expired::Header | Expired::Idle => {
                self.connections.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("API: connection from {}: {why:?} timeout", self.peer);
            }
            Expired::Evicted => {
                tracing::debug!("API: connection from {}: closed for a new one", self.peer)
            }
        }
    }
}

// Also when the task is aborted at the end of the shutdown grace.
impl Drop for Job {
    fn drop(&mut self) {
        self.connections.remove(&self.conn);
    }
}
