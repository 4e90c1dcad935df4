//! PSK-TLS admin server on OpenSSL (`openssl` + `tokio-openssl`) and a small tokio runner that
//! drives the sans-IO Amendment B exchange of [`crate::admin`] for each card connection.
//!
//! The card opens TCP (over BIP), runs TLS with the pre-shared key named by the identity of the
//! trigger's tag 85, POSTs, and gets scripts until a `204 No Content` ends the session.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::ssl::{
    Ssl, SslAcceptor, SslContext, SslMethod, SslMode, SslOptions, SslSessionCacheMode, SslVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

use crate::admin::{self, AdminRequest, Limits, RequestParser, ScriptKind};

/// Looks a card's SCP81 PSK (key versions 0x40-0x4F) up by its PSK-TLS identity.
///
/// Synchronous: OpenSSL calls it from inside the handshake (on the runtime's worker thread),
/// so it should answer from memory (a cache of the store's keys), not block on I/O.
pub trait PskDirectory: Send + Sync + 'static {
    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>>;
}

/// The next script chunk for a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptChunk {
    /// Expanded remote command script (`AE 80 ... 00 00`), built by the caller.
    pub script: Vec<u8>,
    /// `//aid/<RID>/<PIX>` when the script is for another security domain than the one holding
    /// the PSK (Amendment B: `X-Admin-Targeted-Application`), or the RFM application's AID
    /// (TS 102 226 Annex B).
    pub targeted_application: Option<String>,
    /// GP card content management or ETSI RFM: the media types of the script and its answer.
    pub kind: ScriptKind,
    /// Query parameters naming this chunk (`a=1&b=2`, already encoded), put in its
    /// `X-Admin-Next-URI`: the card posts this chunk's responses there, and re-posts there when
    /// it resumes (Amendment B), so the POST's target says which chunk an answer is for.
    pub reference: String,
}

/// What the gateway provides to the runner, per PSK identity. Async, because the gateway
/// answers from its store; implementations may simply write `async fn`.
pub trait AdminSessions: Send + Sync + 'static {
    /// The next chunk to send, or `None` when nothing is left (the session ends with 204).
    fn next_chunk(&self, identity: &[u8]) -> impl Future<Output = Option<ScriptChunk>> + Send;
    /// A card POST that carries responses (`AF 80 ... 00 00`) or a script status other than
    /// ok. Called before `next_chunk` for the same POST.
    fn record_responses(
        &self,
        identity: &[u8],
        request: &AdminRequest,
    ) -> impl Future<Output = ()> + Send;
    /// A card finished its handshake. `false` refuses the session (Amendment B: one
    /// administration session per security domain at a time); it is closed before any HTTP.
    fn open_session(&self, identity: &[u8]) -> impl Future<Output = bool> + Send {
        let _ = identity;
        async { true }
    }
    /// A session [`AdminSessions::open_session`] accepted has ended (`completed`: with our 204;
    /// otherwise dropped, timed out or broken, and a chunk sent may be unanswered).
    fn close_session(&self, identity: &[u8], completed: bool) -> impl Future<Output = ()> + Send {
        let _ = (identity, completed);
        async {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls10,
    Tls11,
    Tls12,
}

impl TlsVersion {
    fn ssl(self) -> SslVersion {
        match self {
            TlsVersion::Tls10 => SslVersion::TLS1,
            TlsVersion::Tls11 => SslVersion::TLS1_1,
            TlsVersion::Tls12 => SslVersion::TLS1_2,
        }
    }
}

/// `SSL_OP_NO_ENCRYPT_THEN_MAC` (OpenSSL 1.1.1 and 3.x, bit 19); not exported by the crate.
const SSL_OP_NO_ENCRYPT_THEN_MAC: u64 = 1 << 19;

/// TLS settings. TLS 1.3 is never offered: cards run TLS 1.0-1.2 PSK suites.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// OpenSSL cipher names, in server preference order.
    pub ciphers: Vec<String>,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// OpenSSL security level; `None` keeps the library's default. On Debian 12's OpenSSL 3.0
    /// (no system CipherString/MinProtocol in openssl.cnf, default level 1) PSK-AES128-CBC-SHA
    /// over TLS 1.0 and 1.1 handshakes at levels 0, 1 and 2 (PSK has no certificate signature
    /// for the level to refuse); level 3 refuses TLS 1.0 and that suite.
    pub security_level: Option<u32>,
    /// Do not negotiate encrypt-then-MAC (RFC 7366) on CBC suites: a live-card SCP81 test
    /// server found publicly notes a card that offers the extension and then aborts when the
    /// server echoes it.
    pub no_encrypt_then_mac: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ciphers: vec![
                "PSK-AES128-GCM-SHA256".into(),
                "PSK-AES128-CBC-SHA256".into(),
                "PSK-AES128-CBC-SHA".into(),
            ],
            min_version: TlsVersion::Tls10,
            max_version: TlsVersion::Tls12,
            security_level: None,
            no_encrypt_then_mac: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub tls: TlsConfig,
    pub limits: Limits,
    /// Time for the TCP accept to a finished handshake.
    pub handshake_timeout: Duration,
    /// Longest wait for the card's next bytes (slow clients are dropped).
    pub idle_timeout: Duration,
    /// Path the `X-Admin-Next-URI` values are built on; each chunk's
    /// [`ScriptChunk::reference`] is added as its query.
    pub next_uri_path: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            tls: TlsConfig::default(),
            limits: Limits::default(),
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            next_uri_path: "/gp/admin".into(),
        }
    }
}

/// Counters, readable at any time.
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub handshakes: AtomicU64,
    /// Identities the directory did not know (the handshake ends with unknown_psk_identity).
    pub unknown_identity: AtomicU64,
    /// Handshakes that failed for any reason (wrong key, no shared cipher, timeout, ...).
    pub handshake_failures: AtomicU64,
    pub requests: AtomicU64,
    pub bad_requests: AtomicU64,
    pub timeouts: AtomicU64,
    pub sessions_completed: AtomicU64,
    /// Sessions refused because the card already had one open.
    pub sessions_refused: AtomicU64,
}

impl ServerStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02X}");
    }
    s
}

/// Builds the acceptor: PSK suites only, no certificate, the PSK looked up per identity.
pub fn build_acceptor(
    tls: &TlsConfig,
    psk: Arc<dyn PskDirectory>,
    stats: Arc<ServerStats>,
) -> Result<SslAcceptor, ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate(SslMethod::tls_server())?;
    b.clear_options(SslOptions::NO_TLSV1 | SslOptions::NO_TLSV1_1);
    b.set_options(SslOptions::NO_TLSV1_3 | SslOptions::CIPHER_SERVER_PREFERENCE);
    // Cards over BIP often close the channel without close_notify; a read then gives EOF and
    // the HTTP framing (Content-Length or chunked) tells a clean close from a truncated request.
    b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
    // No session resumption: some cards abort on a NewSessionTicket, and SGP.02 rules
    // resumption out; no tickets, and no server-side session cache either.
    b.set_options(SslOptions::NO_TICKET);
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    // The `openssl` crate clears this bit to counter BEAST, so on TLS 1.0 CBC suites every
    // response would be preceded by an empty-fragment record; cards expect one record.
    b.set_options(SslOptions::DONT_INSERT_EMPTY_FRAGMENTS);
    // Idle sessions (a card thinking between POSTs) give their 16 KiB+ record buffers back.
    b.set_mode(SslMode::RELEASE_BUFFERS);
    if tls.no_encrypt_then_mac {
        b.set_options(SslOptions::from_bits_retain(
            SSL_OP_NO_ENCRYPT_THEN_MAC as _,
        ));
    }
    b.set_min_proto_version(Some(tls.min_version.ssl()))?;
    b.set_max_proto_version(Some(tls.max_version.ssl()))?;
    b.set_cipher_list(&tls.ciphers.join(":"))?;
    if let Some(level) = tls.security_level {
        b.set_security_level(level);
    }
    b.set_psk_server_callback(move |_ssl, identity, out| {
        let identity = identity.unwrap_or_default();
        match psk.key_for(identity) {
            Some(key) if !key.is_empty() && key.len() <= out.len() => {
                out[..key.len()].copy_from_slice(&key);
                Ok(key.len())
            }
            Some(key) => {
                tracing::warn!(identity = %hex(identity), len = key.len(), "PSK of unusable length");
                stats.unknown_identity.fetch_add(1, Ordering::Relaxed);
                Ok(0)
            }
            None => {
                tracing::warn!(identity = %hex(identity), "unknown PSK identity");
                stats.unknown_identity.fetch_add(1, Ordering::Relaxed);
                // 0 makes OpenSSL end the handshake with an unknown_psk_identity alert.
                Ok(0)
            }
        }
    });
    Ok(b.build())
}

/// How a card session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOutcome {
    pub peer: SocketAddr,
    pub identity: Vec<u8>,
    pub tls_version: String,
    pub cipher: String,
    /// POSTs answered.
    pub requests: u32,
    /// True when the session ended with our 204.
    pub completed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("TLS setup: {0}")]
    Setup(#[from] ErrorStack),
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("timed out")]
    Timeout,
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad request: {0}")]
    BadRequest(#[from] admin::ParseError),
    #[error("connection closed in the middle of a request")]
    Truncated,
    #[error("response: {0}")]
    Write(#[from] admin::WriteError),
    #[error("the card already has an administration session open")]
    Busy,
}

/// The runner: accepts card connections and serves their admin sessions.
pub struct AdminServer<S: AdminSessions> {
    ctx: SslContext,
    sessions: Arc<S>,
    config: ServerConfig,
    stats: Arc<ServerStats>,
}

impl<S: AdminSessions> AdminServer<S> {
    pub fn new(
        config: ServerConfig,
        psk: Arc<dyn PskDirectory>,
        sessions: Arc<S>,
    ) -> Result<Self, ErrorStack> {
        let stats = Arc::new(ServerStats::default());
        let acceptor = build_acceptor(&config.tls, psk, stats.clone())?;
        Ok(AdminServer {
            ctx: acceptor.into_context(),
            sessions,
            config,
            stats,
        })
    }

    pub fn stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Accepts connections forever, one task per card.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> std::io::Result<()> {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: the listener
                    // itself is fine; wait a moment instead of ending the server.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let me = self.clone();
            tokio::spawn(async move {
                match me.handle(tcp, peer).await {
                    Ok(o) => tracing::info!(
                        %peer, identity = %hex(&o.identity), requests = o.requests,
                        completed = o.completed, "admin session ended"
                    ),
                    Err(e) => tracing::warn!(%peer, error = %e, "admin session failed"),
                }
            });
        }
    }

    fn next_uri(&self, reference: &str) -> String {
        if reference.is_empty() {
            return self.config.next_uri_path.clone();
        }
        let sep = if self.config.next_uri_path.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{reference}", self.config.next_uri_path)
    }

    /// Runs one card connection: handshake, then the POST loop until 204, close or error.
    pub async fn handle(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Result<SessionOutcome, SessionError> {
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let _ = tcp.set_nodelay(true);
        let ssl = Ssl::new(&self.ctx)?;
        let mut stream = SslStream::new(ssl, tcp)?;
        let hs = tokio::time::timeout(
            self.config.handshake_timeout,
            Pin::new(&mut stream).accept(),
        )
        .await;
        let identity = stream.ssl().psk_identity().unwrap_or_default().to_vec();
        match hs {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.stats
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, identity = %hex(&identity), error = %e, "PSK-TLS handshake failed");
                return Err(SessionError::Handshake(e.to_string()));
            }
            Err(_) => {
                self.stats
                    .handshake_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%peer, identity = %hex(&identity), "PSK-TLS handshake timed out");
                return Err(SessionError::Timeout);
            }
        }
        self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
        let outcome = SessionOutcome {
            peer,
            identity,
            tls_version: stream.ssl().version_str().to_string(),
            cipher: stream
                .ssl()
                .current_cipher()
                .map(|c| c.name().to_string())
                .unwrap_or_default(),
            requests: 0,
            completed: false,
        };
        tracing::debug!(%peer, identity = %hex(&outcome.identity), version = %outcome.tls_version,
            cipher = %outcome.cipher, "PSK-TLS session up");
        if !self.sessions.open_session(&outcome.identity).await {
            self.stats.sessions_refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, identity = %hex(&outcome.identity), "second session for a card refused");
            let _ = Pin::new(&mut stream).shutdown().await;
            return Err(SessionError::Busy);
        }
        let identity = outcome.identity.clone();
        let mut closed = false;
        let result = self.exchange(&mut stream, peer, outcome, &mut closed).await;
        if !closed {
            self.sessions.close_session(&identity, false).await;
        }
        result
    }

    /// The POST loop of an accepted session.
    async fn exchange(
        &self,
        stream: &mut SslStream<TcpStream>,
        peer: SocketAddr,
        mut outcome: SessionOutcome,
        closed: &mut bool,
    ) -> Result<SessionOutcome, SessionError> {
        let mut parser = RequestParser::new(self.config.limits);
        let mut buf = vec![0u8; 4096];
        loop {
            let request = match parser.next_request() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    let n =
                        match tokio::time::timeout(self.config.idle_timeout, stream.read(&mut buf))
                            .await
                        {
                            Ok(r) => r?,
                            Err(_) => {
                                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                                return Err(SessionError::Timeout);
                            }
                        };
                    if n == 0 {
                        return if parser.is_idle() {
                            Ok(outcome)
                        } else {
                            Err(SessionError::Truncated)
                        };
                    }
                    parser.push(&buf[..n]);
                    continue;
                }
                Err(e) => {
                    self.stats.bad_requests.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, identity = %hex(&outcome.identity), error = %e, "bad admin request");
                    let status = match e {
                        admin::ParseError::HeadTooLarge(_)
                        | admin::ParseError::TooManyHeaders(_) => {
                            (431, "Request Header Fields Too Large")
                        }
                        admin::ParseError::BodyTooLarge(_) => (413, "Content Too Large"),
                        admin::ParseError::MethodNotAllowed(_) => (405, "Method Not Allowed"),
                        admin::ParseError::ContentType(_) => (415, "Unsupported Media Type"),
                        _ => (400, "Bad Request"),
                    };
                    // Ended before the answer goes out (see the 204 below).
                    *closed = true;
                    self.sessions.close_session(&outcome.identity, false).await;
                    let _ = stream
                        .write_all(&admin::write_error(status.0, status.1))
                        .await;
                    let _ = Pin::new(&mut *stream).shutdown().await;
                    return Err(e.into());
                }
            };
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            outcome.requests += 1;
            if request.from.is_none() {
                // Amendment B has the agent send it; other servers accept its absence too.
                tracing::info!(%peer, identity = %hex(&outcome.identity), "POST without X-Admin-From");
            }
            if let Some(status) = &request.script_status {
                if !status.is_ok() {
                    tracing::warn!(%peer, identity = %hex(&outcome.identity), %status, "card reports script status");
                }
            }
            if !request.body.is_empty()
                || request.script_status.as_ref().is_some_and(|s| !s.is_ok())
            {
                self.sessions
                    .record_responses(&outcome.identity, &request)
                    .await;
            }
            match self.sessions.next_chunk(&outcome.identity).await {
                Some(chunk) => {
                    let out = admin::write_script_response(
                        &self.next_uri(&chunk.reference),
                        chunk.targeted_application.as_deref(),
                        chunk.kind,
                        &chunk.script,
                    )?;
                    stream.write_all(&out).await?;
                    stream.flush().await?;
                }
                None => {
                    // Ended before the 204 goes out, so a card that reconnects at once is not
                    // taken for a second session.
                    *closed = true;
                    self.sessions.close_session(&outcome.identity, true).await;
                    stream.write_all(&admin::write_no_content(None)?).await?;
                    stream.flush().await?;
                    let _ = Pin::new(&mut *stream).shutdown().await;
                    outcome.completed = true;
                    self.stats
                        .sessions_completed
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(outcome);
                }
            }
        }
    }
}
