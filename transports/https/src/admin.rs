//! Sans-IO GlobalPlatform Amendment B (SCP81) HTTP exchange.
//!
//! The card (admin agent) POSTs; the server answers `200 OK` with the next script chunk and an
//! `X-Admin-Next-URI`, or `204 No Content` when nothing is left (GP Amendment B, "Remote
//! Application Management over HTTP", section 3.4 and its HTTP header tables).
//!
//! Header names and media types below were checked against:
//! - the Amendment B constants as written in osmocom pySim-derived tooling and in several
//!   SCP81 test servers found by the search tool (`globalplatform-remote-admin/1.0`,
//!   `application/vnd.globalplatform.card-content-mgt;version=1.0` for server-to-card,
//!   `application/vnd.globalplatform.card-content-mgt-response;version=1.0` for card-to-server);
//! - the Amendment B text quoted in a public SCP81 helper (200 when a script is present, 204 and
//!   an empty body when not; no Next-URI ends the session; `X-Admin-Resume: true` on resume;
//!   `X-Admin-Targeted-Application: //aid/<RID>/<PIX>`);
//! - the script status values `ok`, `unknown-application`, `not-a-security-domain`,
//!   `security-error` (later SE-access amendments add more, kept as [`ScriptStatus::Other`]).
//!
//! Requests are parsed with `httparse`; bodies may come with `Content-Length` or
//! `Transfer-Encoding: chunked` (cards usually send chunked). Responses are written by
//! [`write_script_response`] / [`write_no_content`] so header case and framing are exactly ours.

use std::fmt;

/// `X-Admin-Protocol` value of Amendment B v1.0.
pub const ADMIN_PROTOCOL: &str = "globalplatform-remote-admin/1.0";
/// Server-to-card body: an expanded remote command script (`AE 80 ... 00 00`).
pub const CONTENT_TYPE_SCRIPT: &str = "application/vnd.globalplatform.card-content-mgt;version=1.0";
/// Card-to-server body: an expanded remote response script (`AF 80 ... 00 00`).
pub const CONTENT_TYPE_RESPONSE: &str =
    "application/vnd.globalplatform.card-content-mgt-response;version=1.0";
/// Server-to-card body for an RFM application (TS 102 226 Annex B): the same expanded script,
/// labelled for the ETSI remote file management application named by
/// `X-Admin-Targeted-Application`.
pub const CONTENT_TYPE_RFM_COMMAND: &str = "application/vnd.etsi.scp.command-data;version=1.0";
/// Card-to-server body of an RFM application (TS 102 226 Annex B).
pub const CONTENT_TYPE_RFM_RESPONSE: &str = "application/vnd.etsi.scp.response-data;version=1.0";

/// Which application family a script is for, which decides its media types: GlobalPlatform
/// card content management (a security domain: RAM) or ETSI remote file management (an RFM
/// application, TS 102 226 Annex B). An agent given an RFM application's AID under the GP
/// media type answers `not-a-security-domain` and runs nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ScriptKind {
    #[default]
    CardContent,
    RemoteFile,
}

impl ScriptKind {
    /// `Content-Type` of a script of this kind (server to card).
    pub fn command_content_type(self) -> &'static str {
        match self {
            ScriptKind::CardContent => CONTENT_TYPE_SCRIPT,
            ScriptKind::RemoteFile => CONTENT_TYPE_RFM_COMMAND,
        }
    }

    /// `Content-Type` of the responses to a script of this kind (card to server).
    pub fn response_content_type(self) -> &'static str {
        match self {
            ScriptKind::CardContent => CONTENT_TYPE_RESPONSE,
            ScriptKind::RemoteFile => CONTENT_TYPE_RFM_RESPONSE,
        }
    }

    /// The kind a server-to-card `Content-Type` names, if either.
    pub fn of_command(content_type: &str) -> Option<ScriptKind> {
        [ScriptKind::CardContent, ScriptKind::RemoteFile]
            .into_iter()
            .find(|k| media_type_eq(content_type, k.command_content_type()))
    }

    /// The kind a card-to-server `Content-Type` names, if either.
    pub fn of_response(content_type: &str) -> Option<ScriptKind> {
        [ScriptKind::CardContent, ScriptKind::RemoteFile]
            .into_iter()
            .find(|k| media_type_eq(content_type, k.response_content_type()))
    }

    /// Short name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ScriptKind::CardContent => "gp",
            ScriptKind::RemoteFile => "etsi-rfm",
        }
    }

    pub fn parse(s: &str) -> Option<ScriptKind> {
        match s {
            "gp" => Some(ScriptKind::CardContent),
            "etsi-rfm" => Some(ScriptKind::RemoteFile),
            _ => None,
        }
    }
}

/// Header names exactly as Amendment B writes them (some cards compare case-sensitively).
pub mod header {
    pub const PROTOCOL: &str = "X-Admin-Protocol";
    pub const FROM: &str = "X-Admin-From";
    pub const NEXT_URI: &str = "X-Admin-Next-URI";
    pub const TARGETED_APPLICATION: &str = "X-Admin-Targeted-Application";
    pub const SCRIPT_STATUS: &str = "X-Admin-Script-Status";
    pub const RESUME: &str = "X-Admin-Resume";
    pub const CONTENT_TYPE: &str = "Content-Type";
    pub const CONTENT_LENGTH: &str = "Content-Length";
    pub const TRANSFER_ENCODING: &str = "Transfer-Encoding";
}

/// The AID a TAR's application has when the card's profile names none: ETSI RID A000000009,
/// application code 0001, FF FF FF FF 89 and the TAR in octets 13 to 15 (TS 101 220 clause
/// 6.2's TAR-in-AID rule). A documented default only: real cards' RFM applications and
/// security domains have the AIDs their issuer gave them, which profiles carry
/// (otagw: `defaults.http.applications`).
pub fn default_application_aid(tar: [u8; 3]) -> Vec<u8> {
    let mut aid = vec![
        0xA0, 0x00, 0x00, 0x00, 0x09, 0x00, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0x89,
    ];
    aid.extend_from_slice(&tar);
    aid
}

/// `//aid/<RID>/<PIX>` (Amendment B, `X-Admin-Targeted-Application`): the RID is the AID's
/// first five octets.
pub fn aid_uri(aid: &[u8]) -> String {
    let (rid, pix) = aid.split_at(aid.len().min(5));
    format!(
        "//aid/{}/{}",
        hex::encode_upper(rid),
        hex::encode_upper(pix)
    )
}

/// The AID an `X-Admin-Targeted-Application` value names.
pub fn aid_of_uri(value: &str) -> Option<Vec<u8>> {
    let rest = value.strip_prefix("//aid/")?;
    let (rid, pix) = rest.split_once('/')?;
    let rid = hex::decode(rid).ok().filter(|r| r.len() == 5)?;
    let pix = hex::decode(pix).ok().filter(|p| p.len() <= 11)?;
    Some([rid, pix].concat())
}

/// Size limits for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request line plus headers, including the blank line.
    pub max_head_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// Decoded body size.
    pub max_body_bytes: usize,
    /// One chunk-size line (with extensions) or one trailer line.
    pub max_chunk_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 256 * 1024,
            max_chunk_line: 256,
        }
    }
}

/// `X-Admin-Script-Status` of the card's POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptStatus {
    Ok,
    UnknownApplication,
    NotASecurityDomain,
    SecurityError,
    /// A value outside Amendment B v1.0 (for example the SE-access amendment's
    /// `script-format-error`), kept verbatim.
    Other(String),
}

impl ScriptStatus {
    pub fn parse(value: &str) -> ScriptStatus {
        match value.trim() {
            "ok" => ScriptStatus::Ok,
            "unknown-application" => ScriptStatus::UnknownApplication,
            "not-a-security-domain" => ScriptStatus::NotASecurityDomain,
            "security-error" => ScriptStatus::SecurityError,
            other => ScriptStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ScriptStatus::Ok => "ok",
            ScriptStatus::UnknownApplication => "unknown-application",
            ScriptStatus::NotASecurityDomain => "not-a-security-domain",
            ScriptStatus::SecurityError => "security-error",
            ScriptStatus::Other(s) => s,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self, ScriptStatus::Ok)
    }
}

impl fmt::Display for ScriptStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the request body was framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    ContentLength,
    Chunked,
}

/// One card POST, complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequest {
    /// Request target (the trigger's URI or the last `X-Admin-Next-URI`).
    pub target: String,
    pub host: Option<String>,
    /// `X-Admin-Protocol` value (`globalplatform-remote-admin/1.0`, or a later 1.x).
    pub protocol: String,
    /// `X-Admin-From`: the agent id from the trigger parameters (tag 8B). Some agents leave
    /// it out; other servers accept that, so it is optional here (and logged by the caller).
    pub from: Option<String>,
    pub script_status: Option<ScriptStatus>,
    /// `X-Admin-Resume: true`: the card re-posts after an interrupted session.
    pub resume: bool,
    pub content_type: Option<String>,
    pub framing: BodyFraming,
    /// The decoded body: empty on the session's first POST, else `AF 80 ... 00 00`.
    pub body: Vec<u8>,
}

impl AdminRequest {
    /// The kind of script the body answers, by its `Content-Type` (`None` without a body).
    pub fn response_kind(&self) -> Option<ScriptKind> {
        self.content_type
            .as_deref()
            .and_then(ScriptKind::of_response)
    }
}

/// Typed errors for malformed or unacceptable requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed HTTP: {0}")]
    Http(String),
    #[error("request head larger than {0} bytes")]
    HeadTooLarge(usize),
    #[error("more than {0} header fields")]
    TooManyHeaders(usize),
    #[error("body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("method {0} not allowed (Amendment B uses POST)")]
    MethodNotAllowed(String),
    #[error("HTTP version 1.{0} not supported")]
    Version(u8),
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {0} is not valid text")]
    HeaderNotText(&'static str),
    #[error("header {0} repeated")]
    DuplicateHeader(&'static str),
    #[error("unsupported X-Admin-Protocol {0:?}")]
    Protocol(String),
    #[error("unexpected Content-Type {0:?}")]
    ContentType(String),
    #[error("bad Content-Length {0:?}")]
    ContentLength(String),
    #[error("unsupported Transfer-Encoding {0:?}")]
    TransferEncoding(String),
    #[error("both Content-Length and Transfer-Encoding")]
    LengthAndChunked,
    #[error("bad X-Admin-Resume {0:?}")]
    Resume(String),
    #[error("malformed chunked body: {0}")]
    Chunked(&'static str),
    #[error("parser already failed")]
    Failed,
}

/// Incremental `Transfer-Encoding: chunked` decoder (RFC 9112 section 7.1): feed bytes, it
/// appends chunk data to `out` and says when the last chunk and trailers have been read.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    line_len: usize,
    max_line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    SizeStart,
    Size,
    SizeWs,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    FinalLf,
    Done,
}

impl ChunkedDecoder {
    pub fn new(max_line: usize) -> Self {
        ChunkedDecoder {
            state: ChunkState::SizeStart,
            size: 0,
            line_len: 0,
            max_line,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes from `input`, appending data to `out` (never beyond `max_body` bytes in total).
    /// Returns how many bytes of `input` were consumed; once done, the rest is not touched.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        max_body: usize,
    ) -> Result<usize, ParseError> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() && self.state != Done {
            if self.state == Data {
                let take = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                if out.len().saturating_add(take) > max_body {
                    return Err(ParseError::BodyTooLarge(max_body));
                }
                out.extend_from_slice(&input[i..i + take]);
                i += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match self.state {
                SizeStart | Size => match hex_val(b) {
                    Some(v) => {
                        self.line_len += 1;
                        if self.line_len > 16 {
                            return Err(ParseError::Chunked("chunk size too long"));
                        }
                        self.size = (self.size << 4) | u64::from(v);
                        Size
                    }
                    None if self.state == SizeStart => {
                        return Err(ParseError::Chunked("chunk size expected"))
                    }
                    None => match b {
                        b';' => Ext,
                        b' ' | b'\t' => SizeWs,
                        b'\r' => SizeLf,
                        _ => return Err(ParseError::Chunked("bad chunk size")),
                    },
                },
                SizeWs => match b {
                    b' ' | b'\t' => SizeWs,
                    b';' => Ext,
                    b'\r' => SizeLf,
                    _ => return Err(ParseError::Chunked("bad chunk size")),
                },
                Ext => {
                    self.line_len += 1;
                    if self.line_len > self.max_line {
                        return Err(ParseError::Chunked("chunk extension too long"));
                    }
                    match b {
                        b'\r' => SizeLf,
                        b'\n' => return Err(ParseError::Chunked("bare LF")),
                        _ => Ext,
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err(ParseError::Chunked("CRLF expected after chunk size"));
                    }
                    self.line_len = 0;
                    if self.size == 0 {
                        TrailerStart
                    } else {
                        if usize::try_from(self.size)
                            .ok()
                            .and_then(|s| s.checked_add(out.len()))
                            .is_none_or(|total| total > max_body)
                        {
                            return Err(ParseError::BodyTooLarge(max_body));
                        }
                        Data
                    }
                }
                DataCr => match b {
                    b'\r' => DataLf,
                    _ => return Err(ParseError::Chunked("CRLF expected after chunk data")),
                },
                DataLf => match b {
                    b'\n' => SizeStart,
                    _ => return Err(ParseError::Chunked("CRLF expected after chunk data")),
                },
                TrailerStart => match b {
                    b'\r' => FinalLf,
                    b'\n' => return Err(ParseError::Chunked("bare LF")),
                    _ => {
                        self.line_len = 1;
                        TrailerLine
                    }
                },
                TrailerLine => {
                    self.line_len += 1;
                    if self.line_len > self.max_line {
                        return Err(ParseError::Chunked("trailer line too long"));
                    }
                    match b {
                        b'\r' => TrailerLf,
                        b'\n' => return Err(ParseError::Chunked("bare LF")),
                        _ => TrailerLine,
                    }
                }
                TrailerLf => match b {
                    b'\n' => TrailerStart,
                    _ => return Err(ParseError::Chunked("CRLF expected after trailer")),
                },
                FinalLf => match b {
                    b'\n' => Done,
                    _ => return Err(ParseError::Chunked("CRLF expected at end")),
                },
                Data | Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[derive(Debug)]
enum ParserState {
    Head,
    Body {
        request: AdminRequest,
        remaining: usize,
    },
    Chunked {
        request: AdminRequest,
        decoder: ChunkedDecoder,
    },
    Failed,
}

/// Incremental request parser: [`push`](Self::push) bytes as they arrive, then call
/// [`next_request`](Self::next_request) until it returns `Ok(None)`. Pipelined bytes after a
/// request stay buffered for the next one. After an error the parser stays failed (close the
/// connection after answering 400).
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    buf: Vec<u8>,
    state: ParserState,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl RequestParser {
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            buf: Vec::new(),
            state: ParserState::Head,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet part of a returned request.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when no partial request is buffered (a clean place to close the connection).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, ParserState::Head) && self.buf.is_empty()
    }

    /// Pushes `data` and returns the next complete request, if any.
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<AdminRequest>, ParseError> {
        self.push(data);
        self.next_request()
    }

    pub fn next_request(&mut self) -> Result<Option<AdminRequest>, ParseError> {
        let result = self.advance();
        if result.is_err() {
            self.state = ParserState::Failed;
            self.buf.clear();
        }
        result
    }

    fn advance(&mut self) -> Result<Option<AdminRequest>, ParseError> {
        loop {
            match std::mem::replace(&mut self.state, ParserState::Head) {
                ParserState::Failed => {
                    self.state = ParserState::Failed;
                    return Err(ParseError::Failed);
                }
                ParserState::Head => match self.parse_head()? {
                    None => return Ok(None),
                    Some((consumed, request, framing)) => {
                        self.buf.drain(..consumed);
                        self.state = match framing {
                            Framing::Length(0) => return Ok(Some(request)),
                            Framing::Length(n) => ParserState::Body {
                                request,
                                remaining: n,
                            },
                            Framing::Chunked => ParserState::Chunked {
                                request,
                                decoder: ChunkedDecoder::new(self.limits.max_chunk_line),
                            },
                        };
                    }
                },
                ParserState::Body {
                    mut request,
                    remaining,
                } => {
                    let take = remaining.min(self.buf.len());
                    request.body.extend(self.buf.drain(..take));
                    let remaining = remaining - take;
                    if remaining == 0 {
                        return Ok(Some(request));
                    }
                    self.state = ParserState::Body { request, remaining };
                    return Ok(None);
                }
                ParserState::Chunked {
                    mut request,
                    mut decoder,
                } => {
                    let consumed =
                        decoder.decode(&self.buf, &mut request.body, self.limits.max_body_bytes)?;
                    self.buf.drain(..consumed);
                    if decoder.is_done() {
                        check_content_type(&request)?;
                        return Ok(Some(request));
                    }
                    self.state = ParserState::Chunked { request, decoder };
                    return Ok(None);
                }
            }
        }
    }

    fn parse_head(&self) -> Result<Option<(usize, AdminRequest, Framing)>, ParseError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let mut headers = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut req = httparse::Request::new(&mut headers);
        let status = match req.parse(&self.buf) {
            Ok(s) => s,
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ParseError::TooManyHeaders(self.limits.max_headers))
            }
            Err(e) => return Err(ParseError::Http(e.to_string())),
        };
        let consumed = match status {
            httparse::Status::Partial => {
                if self.buf.len() > self.limits.max_head_bytes {
                    return Err(ParseError::HeadTooLarge(self.limits.max_head_bytes));
                }
                return Ok(None);
            }
            httparse::Status::Complete(n) => n,
        };
        if consumed > self.limits.max_head_bytes {
            return Err(ParseError::HeadTooLarge(self.limits.max_head_bytes));
        }
        let method = req.method.unwrap_or_default();
        if method != "POST" {
            return Err(ParseError::MethodNotAllowed(method.to_string()));
        }
        match req.version {
            Some(1) => {}
            Some(v) => return Err(ParseError::Version(v)),
            None => return Err(ParseError::Http("no version".into())),
        }
        let target = req.path.unwrap_or_default().to_string();

        let mut host = None;
        let mut protocol = None;
        let mut from = None;
        let mut script_status = None;
        let mut resume = None;
        let mut content_type = None;
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        for h in req.headers.iter() {
            let name = h.name;
            let text = |label: &'static str| {
                std::str::from_utf8(h.value)
                    .map(|s| s.trim().to_string())
                    .map_err(|_| ParseError::HeaderNotText(label))
            };
            let set_once = |slot: &mut Option<String>, label: &'static str| {
                if slot.is_some() {
                    return Err(ParseError::DuplicateHeader(label));
                }
                *slot = Some(text(label)?);
                Ok(())
            };
            if name.eq_ignore_ascii_case("host") {
                set_once(&mut host, "Host")?;
            } else if name.eq_ignore_ascii_case(header::PROTOCOL) {
                set_once(&mut protocol, header::PROTOCOL)?;
            } else if name.eq_ignore_ascii_case(header::FROM) {
                set_once(&mut from, header::FROM)?;
            } else if name.eq_ignore_ascii_case(header::SCRIPT_STATUS) {
                let mut s = None;
                set_once(&mut s, header::SCRIPT_STATUS)?;
                if script_status.is_some() {
                    return Err(ParseError::DuplicateHeader(header::SCRIPT_STATUS));
                }
                script_status = s.map(|s| ScriptStatus::parse(&s));
            } else if name.eq_ignore_ascii_case(header::RESUME) {
                set_once(&mut resume, header::RESUME)?;
            } else if name.eq_ignore_ascii_case(header::CONTENT_TYPE) {
                set_once(&mut content_type, header::CONTENT_TYPE)?;
            } else if name.eq_ignore_ascii_case(header::CONTENT_LENGTH) {
                let v = text(header::CONTENT_LENGTH)?;
                let n = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
                    v.parse::<usize>().ok()
                } else {
                    None
                }
                .ok_or_else(|| ParseError::ContentLength(v.clone()))?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(ParseError::ContentLength(v));
                }
                content_length = Some(n);
            } else if name.eq_ignore_ascii_case(header::TRANSFER_ENCODING) {
                let v = text(header::TRANSFER_ENCODING)?;
                if !v.eq_ignore_ascii_case("chunked") || chunked {
                    return Err(ParseError::TransferEncoding(v));
                }
                chunked = true;
            }
        }
        let protocol = protocol.ok_or(ParseError::MissingHeader(header::PROTOCOL))?;
        if !protocol.starts_with("globalplatform-remote-admin/1.") {
            return Err(ParseError::Protocol(protocol));
        }
        let resume = match resume.as_deref() {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") => true,
            Some(v) if v.eq_ignore_ascii_case("false") => false,
            Some(v) => return Err(ParseError::Resume(v.to_string())),
        };
        let (framing, body_framing) = match (chunked, content_length) {
            (true, Some(_)) => return Err(ParseError::LengthAndChunked),
            (true, None) => (Framing::Chunked, BodyFraming::Chunked),
            (false, Some(n)) => {
                if n > self.limits.max_body_bytes {
                    return Err(ParseError::BodyTooLarge(self.limits.max_body_bytes));
                }
                (Framing::Length(n), BodyFraming::ContentLength)
            }
            (false, None) => (Framing::Length(0), BodyFraming::None),
        };
        let request = AdminRequest {
            target,
            host,
            protocol,
            from,
            script_status,
            resume,
            content_type,
            framing: body_framing,
            body: Vec::new(),
        };
        if let Framing::Length(n) = framing {
            if n > 0 {
                check_content_type(&request)?;
            }
        }
        Ok(Some((consumed, request, framing)))
    }
}

enum Framing {
    Length(usize),
    Chunked,
}

/// A request carrying a body must label it as the card's response script: GP card content
/// management or ETSI RFM (TS 102 226 Annex B). The media type and parameter are compared
/// without case and without spaces around `;`.
fn check_content_type(request: &AdminRequest) -> Result<(), ParseError> {
    if request.body.is_empty() && request.framing == BodyFraming::Chunked {
        return Ok(());
    }
    match &request.content_type {
        None => Err(ParseError::MissingHeader(header::CONTENT_TYPE)),
        Some(ct) if ScriptKind::of_response(ct).is_some() => Ok(()),
        Some(ct) => Err(ParseError::ContentType(ct.clone())),
    }
}

fn media_type_eq(a: &str, b: &str) -> bool {
    let norm = |s: &str| {
        s.split(';')
            .map(|p| p.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    norm(a) == norm(b)
}

/// A header value must not break the framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {0} value contains CR, LF or NUL")]
pub struct WriteError(pub &'static str);

fn check_value(name: &'static str, v: &str) -> Result<(), WriteError> {
    if v.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        Err(WriteError(name))
    } else {
        Ok(())
    }
}

/// `200 OK` carrying the next script chunk (expanded format `AE 80 ... 00 00`, built by the
/// caller) labelled for its kind of application, and the URI the card posts the responses to.
pub fn write_script_response(
    next_uri: &str,
    targeted_application: Option<&str>,
    kind: ScriptKind,
    script: &[u8],
) -> Result<Vec<u8>, WriteError> {
    check_value(header::NEXT_URI, next_uri)?;
    if let Some(t) = targeted_application {
        check_value(header::TARGETED_APPLICATION, t)?;
    }
    let mut out = Vec::with_capacity(256 + script.len());
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    push_header(&mut out, header::PROTOCOL, ADMIN_PROTOCOL);
    push_header(&mut out, header::NEXT_URI, next_uri);
    if let Some(t) = targeted_application {
        push_header(&mut out, header::TARGETED_APPLICATION, t);
    }
    push_header(&mut out, header::CONTENT_TYPE, kind.command_content_type());
    push_header(&mut out, header::CONTENT_LENGTH, &script.len().to_string());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(script);
    Ok(out)
}

/// `204 No Content`: no script. Without `next_uri` this ends the administration session; with
/// one, the card posts there again (Amendment B allows a 204 that only navigates).
pub fn write_no_content(next_uri: Option<&str>) -> Result<Vec<u8>, WriteError> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
    push_header(&mut out, header::PROTOCOL, ADMIN_PROTOCOL);
    if let Some(u) = next_uri {
        check_value(header::NEXT_URI, u)?;
        push_header(&mut out, header::NEXT_URI, u);
    }
    out.extend_from_slice(b"\r\n");
    Ok(out)
}

/// An error answer for a request we could not accept (the connection is closed after it).
pub fn write_error(status: u16, reason: &str) -> Vec<u8> {
    let reason: String = reason
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect();
    let mut out = Vec::with_capacity(96);
    out.extend_from_slice(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes());
    push_header(&mut out, "Content-Length", "0");
    push_header(&mut out, "Connection", "close");
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}
