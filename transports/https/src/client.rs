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

use crate::admin::{header, ChunkedDecoder, ScriptKind, ScriptStatus, ADMIN_PROTOCOL};
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
    /// The card loses the bearer while the script arrives: the connection is dropped without
    /// a word, and the script does not run.
    Drop,
    /// The card ran the script but loses the bearer before posting the responses; it keeps
    /// them for the next session's first POST (`X-Admin-Resume: true`).
    DropAfter(Vec<u8>, ScriptStatus),
}

/// A script the server sent, as the agent sees it.
#[derive(Debug, Clone, Copy)]
pub struct ScriptRequest<'a> {
    pub script: &'a [u8],
    /// The `X-Admin-Targeted-Application` value, if any.
    pub targeted_application: Option<&'a str>,
    /// From the `Content-Type`: GP card content management or ETSI RFM; `None` for any other
    /// media type (an agent refuses such a script).
    pub kind: Option<ScriptKind>,
}

/// Runs the scripts the server sends (on the card's applets).
pub trait CardAgent: Send {
    fn execute(&mut self, request: ScriptRequest<'_>) -> AgentReply;
}

/// Where a card picks an interrupted session up (Amendment B resume): it re-posts to the last
/// URI it navigated, with `X-Admin-Resume: true` and the responses it has for that URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The trigger's URI or the last `X-Admin-Next-URI`.
    pub uri: String,
    /// The responses for that URI (empty when it is the trigger's URI).
    pub body: Vec<u8>,
    pub status: Option<ScriptStatus>,
    /// The kind of script the responses answer (their media type).
    pub kind: ScriptKind,
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
    /// Where the card resumes after it dropped the connection: post there with
    /// `X-Admin-Resume: true` in the next session ([`run_session`]'s `resume`).
    pub unsent: Option<ResumePoint>,
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

/// One card POST.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    pub target: &'a str,
    pub host: &'a str,
    pub agent_id: &'a str,
    /// Responses (may be empty), labelled as answers to a script of `kind`.
    pub body: &'a [u8],
    pub kind: ScriptKind,
    pub script_status: Option<&'a ScriptStatus>,
    pub resume: bool,
    pub chunked: bool,
}

/// Writes one card POST: the protocol headers exactly as Amendment B names them, the body
/// (responses, may be empty) framed chunked or with a length.
pub fn write_post(p: &Post<'_>) -> Vec<u8> {
    let Post {
        target,
        host,
        agent_id,
        body,
        kind,
        script_status,
        resume,
        chunked,
    } = *p;
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
        h(header::CONTENT_TYPE, kind.response_content_type());
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
/// `resume`: where an interrupted session left off; the first POST goes there with
/// `X-Admin-Resume: true` (Amendment B), else to the trigger's URI.
pub async fn run_session(
    mut stream: SslStream<TcpStream>,
    config: &ClientConfig,
    agent: &mut dyn CardAgent,
    resume: Option<ResumePoint>,
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
    let mut resuming = resume.is_some();
    // The URI navigated and what is posted there: kept so a break can resume from it.
    let mut at = resume.unwrap_or(ResumePoint {
        uri: config.uri.clone(),
        body: Vec::new(),
        status: None,
        kind: ScriptKind::CardContent,
    });
    loop {
        let post = write_post(&Post {
            target: &at.uri,
            host: &config.host,
            agent_id: &config.agent_id,
            body: &at.body,
            kind: at.kind,
            script_status: at.status.as_ref(),
            resume: std::mem::take(&mut resuming),
            chunked: config.chunked,
        });
        stream.write_all(&post).await?;
        stream.flush().await?;
        outcome.posts += 1;
        let response = read_response(&mut stream, &mut parser, config.io_timeout).await?;
        match response.status {
            200 => {
                outcome.scripts += 1;
                let kind = response
                    .content_type
                    .as_deref()
                    .and_then(ScriptKind::of_command);
                let reply = agent.execute(ScriptRequest {
                    script: &response.body,
                    targeted_application: response.targeted_application.as_deref(),
                    kind,
                });
                let kind = kind.unwrap_or_default();
                let (body, status) = match reply {
                    AgentReply::Respond(r, s) => (r, s),
                    AgentReply::Drop => {
                        // The script never ran: the card re-posts what it last posted.
                        outcome.dropped = true;
                        outcome.unsent = Some(at);
                        // No close_notify: the bearer is gone.
                        drop(stream);
                        return Ok(outcome);
                    }
                    AgentReply::DropAfter(r, s) => {
                        outcome.dropped = true;
                        outcome.unsent = response.next_uri.map(|uri| ResumePoint {
                            uri,
                            body: r,
                            status: Some(s),
                            kind,
                        });
                        drop(stream);
                        return Ok(outcome);
                    }
                };
                match response.next_uri {
                    Some(uri) => {
                        at = ResumePoint {
                            uri,
                            body,
                            status: Some(status),
                            kind,
                        }
                    }
                    // Amendment B: no Next-URI, the script was the last; the session ends.
                    None => {
                        outcome.completed = true;
                        let _ = Pin::new(&mut stream).shutdown().await;
                        return Ok(outcome);
                    }
                }
            }
            204 => match response.next_uri {
                Some(uri) => {
                    at = ResumePoint {
                        uri,
                        body: Vec::new(),
                        status: None,
                        kind: ScriptKind::CardContent,
                    };
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
