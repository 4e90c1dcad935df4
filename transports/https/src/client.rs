//! The card side of SCP81 (the admin agent of GP Amendment B): a PSK-TLS client on OpenSSL and
//! the POST loop. The virtual UICC, the end-to-end tests and the benchmark play the card with it.
//!
//! The loop (Amendment B section 3.4): the first POST goes to the trigger's URI with an empty
//! body; each `200 OK` carries a script (`AE 80 ... 00 00`) that the agent runs, and the next
//! POST, to the `X-Admin-Next-URI`, carries its responses (`AF 80 ... 00 00`); `204 No Content`
//! without a Next-URI ends the session.
//!
//! The request writer and the response parser are sans-IO ([`write_post`], [`ResponseParser`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use openssl::error::ErrorStack;
use openssl::ssl::{Ssl, SslConnector, SslMethod, SslMode, SslVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::admin::{header, ChunkedDecoder, ScriptStatus, ADMIN_PROTOCOL, CONTENT_TYPE_RESPONSE};
use crate::server::TlsVersion;

/// How the card connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// PSK identity (trigger tag 85).
    pub identity: Vec<u8>,
    /// The PSK itself (the card's SCP81 key).
    pub key: Vec<u8>,
    /// OpenSSL cipher names the card offers.
    pub ciphers: String,
    pub min_version: TlsVersion,
    pub max_version: TlsVersion,
    /// HTTP `Host` (trigger tag 8A).
    pub host: String,
    /// `X-Admin-From` (trigger tag 8B).
    pub agent_id: String,
    /// First POST's target (trigger tag 8C).
    pub uri: String,
    /// Send bodies with `Transfer-Encoding: chunked` (as most cards do) or `Content-Length`.
    pub chunked: bool,
    /// Longest wait for the server's bytes.
    pub io_timeout: Duration,
}

/// What the agent does with a script.
pub enum AgentReply {
    /// The response script (`AF 80 ... 00 00`) for the next POST, and its script status.
    Respond(Vec<u8>, ScriptStatus),
    /// The card loses the bearer: the connection is dropped without a word.
    Drop,
    /// The card ran the script but loses the bearer before posting the responses; it keeps
    /// them for the next session's first POST (`X-Admin-Resume: true`).
    DropAfter(Vec<u8>, ScriptStatus),
}

/// Runs the scripts the server sends (on the card's applets).
pub trait CardAgent: Send {
    /// `targeted_application` is the `X-Admin-Targeted-Application` value, if any.
    fn execute(&mut self, script: &[u8], targeted_application: Option<&str>) -> AgentReply;
}

/// How a session ended on the card's side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOutcome {
    /// POSTs sent.
    pub posts: u32,
    /// Scripts received and run.
    pub scripts: u32,
    /// The server ended it with 204.
    pub completed: bool,
    /// The agent dropped the connection.
    pub dropped: bool,
    /// Responses the card still holds (it dropped after running a script): post them with
    /// `X-Admin-Resume: true` in the next session ([`run_session`]'s `resume`).
    pub unsent: Option<(Vec<u8>, ScriptStatus)>,
    /// Negotiated version and cipher.
    pub tls_version: String,
    pub cipher: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TLS setup: {0}")]
    Setup(#[from] ErrorStack),
    #[error("TLS handshake: {0}")]
    Handshake(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("bad response: {0}")]
    Http(String),
    #[error("server answered {0}")]
    Status(u16),
    #[error("connection closed before the response was complete")]
    Truncated,
}

/// A parsed server answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminResponse {
    pub status: u16,
    pub next_uri: Option<String>,
    pub targeted_application: Option<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Writes one card POST: the protocol headers exactly as Amendment B names them, the body
/// (responses, may be empty) framed chunked or with a length.
pub fn write_post(
    target: &str,
    host: &str,
    agent_id: &str,
    body: &[u8],
    script_status: Option<&ScriptStatus>,
    resume: bool,
    chunked: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(format!("POST {target} HTTP/1.1\r\n").as_bytes());
    let mut h = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    h("Host", host);
    h(header::PROTOCOL, ADMIN_PROTOCOL);
    h(header::FROM, agent_id);
    if let Some(s) = script_status {
        h(header::SCRIPT_STATUS, s.as_str());
    }
    if resume {
        h(header::RESUME, "true");
    }
    if !body.is_empty() {
        h(header::CONTENT_TYPE, CONTENT_TYPE_RESPONSE);
        if chunked {
            h(header::TRANSFER_ENCODING, "chunked");
        } else {
            h(header::CONTENT_LENGTH, &body.len().to_string());
        }
    }
    out.extend_from_slice(b"\r\n");
    if !body.is_empty() {
        if chunked {
            // Two chunks when there is enough, so the server's decoder sees a real sequence.
            let split = body.len() / 2;
            for part in [&body[..split], &body[split..]] {
                if part.is_empty() {
                    continue;
                }
                out.extend_from_slice(format!("{:X}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(body);
        }
    }
    out
}

/// Incremental parser of the server's answers (Content-Length or chunked bodies; 204 and 1xx
/// carry none).
#[derive(Debug, Default)]
pub struct ResponseParser {
    buf: Vec<u8>,
    max_body: usize,
}

impl ResponseParser {
    pub fn new(max_body: usize) -> Self {
        ResponseParser {
            buf: Vec::new(),
            max_body,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete response, if the buffer holds one.
    pub fn next_response(&mut self) -> Result<Option<AdminResponse>, ClientError> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(ClientError::Http(e.to_string())),
        };
        let status = resp.code.unwrap_or(0);
        let mut next_uri = None;
        let mut targeted_application = None;
        let mut content_type = None;
        let mut length = None;
        let mut chunked = false;
        for h in resp.headers.iter() {
            let value = std::str::from_utf8(h.value)
                .map_err(|_| ClientError::Http(format!("header {} is not text", h.name)))?
                .trim()
                .to_string();
            if h.name.eq_ignore_ascii_case(header::NEXT_URI) {
                next_uri = Some(value);
            } else if h.name.eq_ignore_ascii_case(header::TARGETED_APPLICATION) {
                targeted_application = Some(value);
            } else if h.name.eq_ignore_ascii_case(header::CONTENT_TYPE) {
                content_type = Some(value);
            } else if h.name.eq_ignore_ascii_case(header::CONTENT_LENGTH) {
                length = Some(
                    value
                        .parse::<usize>()
                        .map_err(|_| ClientError::Http(format!("Content-Length {value:?}")))?,
                );
            } else if h.name.eq_ignore_ascii_case(header::TRANSFER_ENCODING) {
                chunked = value.eq_ignore_ascii_case("chunked");
            }
        }
        let body_bytes = &self.buf[head_len..];
        let (body, used) = if status == 204 || status == 304 || (100..200).contains(&status) {
            (Vec::new(), 0)
        } else if chunked {
            let mut decoder = ChunkedDecoder::new(256);
            let mut body = Vec::new();
            let used = decoder
                .decode(body_bytes, &mut body, self.max_body)
                .map_err(|e| ClientError::Http(e.to_string()))?;
            if !decoder.is_done() {
                return Ok(None);
            }
            (body, used)
        } else {
            let n = length.unwrap_or(0);
            if n > self.max_body {
                return Err(ClientError::Http(format!("body of {n} octets")));
            }
            if body_bytes.len() < n {
                return Ok(None);
            }
            (body_bytes[..n].to_vec(), n)
        };
        self.buf.drain(..head_len + used);
        Ok(Some(AdminResponse {
            status,
            next_uri,
            targeted_application,
            content_type,
            body,
        }))
    }
}

fn ssl_version(v: TlsVersion) -> SslVersion {
    match v {
        TlsVersion::Tls10 => SslVersion::TLS1,
        TlsVersion::Tls11 => SslVersion::TLS1_1,
        TlsVersion::Tls12 => SslVersion::TLS1_2,
    }
}

/// A connector offering the configured PSK suites and versions with the card's identity and key.
pub fn connector(config: &ClientConfig) -> Result<SslConnector, ErrorStack> {
    let mut b = SslConnector::builder(SslMethod::tls_client())?;
    b.set_min_proto_version(Some(ssl_version(config.min_version)))?;
    b.set_max_proto_version(Some(ssl_version(config.max_version)))?;
    b.set_cipher_list(&config.ciphers)?;
    // TLS 1.0/1.1 PSK suites need security level 0 on OpenSSL 3 clients.
    b.set_security_level(0);
    b.set_mode(SslMode::RELEASE_BUFFERS);
    let identity = config.identity.clone();
    let key = config.key.clone();
    b.set_psk_client_callback(move |_ssl, _hint, id_out, key_out| {
        if identity.len() >= id_out.len() || key.len() > key_out.len() {
            return Ok(0);
        }
        id_out[..identity.len()].copy_from_slice(&identity);
        id_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    Ok(b.build())
}

/// TCP connect and PSK-TLS handshake.
pub async fn connect(
    addr: SocketAddr,
    connector: &SslConnector,
    io_timeout: Duration,
) -> Result<SslStream<TcpStream>, ClientError> {
    let tcp = tokio::time::timeout(io_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| ClientError::Timeout)??;
    let _ = tcp.set_nodelay(true);
    let ssl: Ssl = connector
        .configure()?
        .verify_hostname(false)
        .into_ssl("card")?;
    let mut stream = SslStream::new(ssl, tcp)?;
    tokio::time::timeout(io_timeout, Pin::new(&mut stream).connect())
        .await
        .map_err(|_| ClientError::Timeout)?
        .map_err(|e| ClientError::Handshake(e.to_string()))?;
    Ok(stream)
}

async fn read_response(
    stream: &mut SslStream<TcpStream>,
    parser: &mut ResponseParser,
    io_timeout: Duration,
) -> Result<AdminResponse, ClientError> {
    let mut buf = [0u8; 2048];
    loop {
        if let Some(r) = parser.next_response()? {
            return Ok(r);
        }
        let n = tokio::time::timeout(io_timeout, stream.read(&mut buf))
            .await
            .map_err(|_| ClientError::Timeout)??;
        if n == 0 {
            return Err(ClientError::Truncated);
        }
        parser.push(&buf[..n]);
    }
}

/// Runs the POST loop over an established stream until 204, an error or the agent drops.
/// `resume`: responses an interrupted session left unsent; the first POST carries them with
/// `X-Admin-Resume: true` (Amendment B).
pub async fn run_session(
    mut stream: SslStream<TcpStream>,
    config: &ClientConfig,
    agent: &mut dyn CardAgent,
    resume: Option<(Vec<u8>, ScriptStatus)>,
) -> Result<ClientOutcome, ClientError> {
    let mut outcome = ClientOutcome {
        posts: 0,
        scripts: 0,
        completed: false,
        dropped: false,
        unsent: None,
        tls_version: stream.ssl().version_str().to_string(),
        cipher: stream
            .ssl()
            .current_cipher()
            .map(|c| c.name().to_string())
            .unwrap_or_default(),
    };
    let mut parser = ResponseParser::new(1 << 20);
    let mut target = config.uri.clone();
    let mut resuming = resume.is_some();
    let (mut body, mut status) = match resume {
        Some((b, s)) => (b, Some(s)),
        None => (Vec::new(), None),
    };
    loop {
        let post = write_post(
            &target,
            &config.host,
            &config.agent_id,
            &body,
            status.as_ref(),
            std::mem::take(&mut resuming),
            config.chunked,
        );
        stream.write_all(&post).await?;
        stream.flush().await?;
        outcome.posts += 1;
        let response = read_response(&mut stream, &mut parser, config.io_timeout).await?;
        match response.status {
            200 => {
                let next = response
                    .next_uri
                    .clone()
                    .ok_or_else(|| ClientError::Http("200 without X-Admin-Next-URI".into()))?;
                outcome.scripts += 1;
                match agent.execute(&response.body, response.targeted_application.as_deref()) {
                    AgentReply::Respond(r, s) => {
                        body = r;
                        status = Some(s);
                    }
                    AgentReply::Drop => {
                        outcome.dropped = true;
                        // No close_notify: the bearer is gone.
                        drop(stream);
                        return Ok(outcome);
                    }
                    AgentReply::DropAfter(r, s) => {
                        outcome.dropped = true;
                        outcome.unsent = Some((r, s));
                        drop(stream);
                        return Ok(outcome);
                    }
                }
                target = next;
            }
            204 => match response.next_uri {
                Some(next) => {
                    target = next;
                    body.clear();
                    status = None;
                }
                None => {
                    outcome.completed = true;
                    let _ = Pin::new(&mut stream).shutdown().await;
                    return Ok(outcome);
                }
            },
            other => return Err(ClientError::Status(other)),
        }
    }
}
