//! Commands over HTTPS (SCP81, GP Amendment B): the script is queued in the store for the
//! card's next administration session, and an SCP80-secured SMS to the card's security domain
//! carries the session triggering parameters (tag 81) over the SMS route. The card opens
//! PSK-TLS to the admin server (`otagw_https::server`), which [`Scp81Sessions`] feeds from the
//! store; the card's responses complete the command.
//!
//! If no session answers the script within the window, the trigger goes again (a fresh
//! counter each time: the card refuses a replayed one), up to the retry policy's attempts; then
//! the command fails with TIMEOUT, or goes over SMS where [`HttpsOptions::fallback_to_sms`]
//! allows.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use otagw_https::admin::{aid_uri, default_application_aid, AdminRequest};
use otagw_https::server::{AdminSessions, PskDirectory, ScriptChunk};
use otagw_https::trigger::{
    ConnectionParams, HttpParams, RetryPolicy as CardRetry, SecurityParams, TimerValue,
    TriggerParams,
};
use otagw_transport::{Destination, SendOptions};
use tokio::sync::Notify;

use super::{apply, fail, Recorded, Shared};
use crate::command::build::{build_script, BuildContext};
use crate::command::{
    CardResponse, CommandError, CommandStatus, CommandType, ErrorCode, OtaCommandRequest,
    StatusWordData,
};
use crate::dispatch::OtaOutcome;
use crate::dispatch::SecuredCommand;
use crate::gateway::outcome::sw_is_success;
use crate::pipeline::secure::{card_class, requested_applet};
use crate::pipeline::{validate_request, RetryPolicy, ValidSecurity};
use crate::script::response::parse_expanded_response;
use crate::script::{CommandScript, ScriptFormat, ScriptItem};
use crate::security::command::encode_command_packet;
use crate::security::{CommandHeader, Counter, KeyIdentifier, Scp80Keys};
use crate::store::scp81::{ChunkRecord, ChunkState, NewChunk, ScriptKind};
use crate::store::{CommandRecord, Store, StoreError, Transition};

/// TAR of the Issuer Security Domain: the default target of the trigger.
pub const ISD_TAR: [u8; 3] = [0x00, 0x00, 0x00];

/// HTTPS settings of the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsOptions {
    /// Where cards connect (trigger tag 84: TCP, IPv4 address and port).
    pub admin_addr: SocketAddr,
    /// Trigger tag 8A (HTTP `Host`).
    pub host: String,
    /// Trigger tag 8C (first POST's URI).
    pub uri: String,
    /// Trigger tag 8B (the card's `X-Admin-From`); `None`: the card's ICCID.
    pub agent_id: Option<String>,
    /// Network access name in tag 84.
    pub apn: Option<String>,
    /// BIP buffer size in tag 84.
    pub buffer_size: u16,
    /// TAR the trigger goes to (the security domain holding the PSK; ISD 000000 by default).
    pub trigger_tar: [u8; 3],
    /// SCP81 key version (0x40-0x4F) and key id named in tag 85.
    pub psk_key_version: u8,
    pub psk_key_id: u8,
    /// How long to wait for the card's session after each trigger.
    pub window: Duration,
    /// Tag 86: how often and how far apart the card itself retries opening the session.
    pub card_retries: u16,
    pub card_retry_delay: Duration,
    /// Largest script chunk sent in one response.
    pub chunk_bytes: usize,
    /// Largest script a command may have over HTTPS.
    pub max_script_bytes: usize,
    /// After the triggers go unanswered, send the command over SMS instead of failing.
    pub fallback_to_sms: bool,
    /// AIDs of the applications behind TARs (RFM applications, other security domains), for
    /// `X-Admin-Targeted-Application`; a TAR not here gets [`default_application_aid`].
    pub applications: HashMap<[u8; 3], Vec<u8>>,
}

impl Default for HttpsOptions {
    fn default() -> Self {
        HttpsOptions {
            admin_addr: SocketAddr::from(([127, 0, 0, 1], 8443)),
            host: "otagw".into(),
            uri: "/gp/admin".into(),
            agent_id: None,
            apn: None,
            buffer_size: 1400,
            trigger_tar: ISD_TAR,
            psk_key_version: 0x40,
            psk_key_id: 0x01,
            window: Duration::from_secs(60),
            card_retries: 0,
            card_retry_delay: Duration::from_secs(30),
            chunk_bytes: 2048,
            max_script_bytes: 256 * 1024,
            fallback_to_sms: false,
            applications: HashMap::new(),
        }
    }
}

/// The HTTP parameters a profile may set for its cards' triggers (`defaults.http`, JSON):
/// `host`, `uri`, `agentId`, `tar` (6 hex digits), `apn`, `keyVersion` (0x40-0x4F), `keyId`,
/// `cardRetries`, `cardRetryDelaySecs`, `applications` (TAR to AID, both hex: the AIDs of the
/// cards' RFM applications and security domains, named in `X-Admin-Targeted-Application`).
/// They override the gateway's `[https]` settings.
pub const PROFILE_HTTP_FIELDS: [&str; 10] = [
    "host",
    "uri",
    "agentId",
    "tar",
    "apn",
    "keyVersion",
    "keyId",
    "cardRetries",
    "cardRetryDelaySecs",
    "applications",
];

impl HttpsOptions {
    /// These settings with a profile's HTTP parameters over them; the error names the field.
    pub fn with_profile(&self, http: &serde_json::Value) -> Result<HttpsOptions, (String, String)> {
        let obj = http
            .as_object()
            .ok_or_else(|| ("http".to_string(), "must be a JSON object".to_string()))?;
        let mut o = self.clone();
        let err = |k: &str, p: &str| (format!("http.{k}"), p.to_string());
        for (k, v) in obj {
            let text = || {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| err(k, "must be a string"))
            };
            let number = |max: u64| {
                v.as_u64()
                    .filter(|n| *n <= max)
                    .ok_or_else(|| err(k, &format!("must be a whole number up to {max}")))
            };
            match k.as_str() {
                "host" => o.host = text()?,
                "uri" => o.uri = text()?,
                "agentId" => o.agent_id = Some(text()?),
                "apn" => o.apn = Some(text()?),
                "tar" => {
                    let t = text()?;
                    let b = hex::decode(&t).map_err(|_| err(k, "must be 6 hex digits"))?;
                    o.trigger_tar = <[u8; 3]>::try_from(b.as_slice())
                        .map_err(|_| err(k, "must be 6 hex digits"))?;
                }
                "keyVersion" => {
                    let n = number(0xFF)? as u8;
                    if !(0x40..=0x4F).contains(&n) {
                        return Err(err(k, "SCP81 key versions are 0x40 to 0x4F (64 to 79)"));
                    }
                    o.psk_key_version = n;
                }
                "keyId" => o.psk_key_id = number(0xFF)? as u8,
                "cardRetries" => o.card_retries = number(u64::from(u16::MAX))? as u16,
                "cardRetryDelaySecs" => {
                    o.card_retry_delay = Duration::from_secs(number(359_999)?);
                }
                "applications" => {
                    let map = v
                        .as_object()
                        .ok_or_else(|| err(k, "must be an object of TAR: AID"))?;
                    for (tar, aid) in map {
                        let field = format!("applications.{tar}");
                        let tar_bytes = hex::decode(tar)
                            .ok()
                            .and_then(|b| <[u8; 3]>::try_from(b.as_slice()).ok())
                            .ok_or_else(|| err(&field, "the key must be a TAR of 6 hex digits"))?;
                        let aid_bytes = aid
                            .as_str()
                            .and_then(|a| hex::decode(a).ok())
                            .filter(|a| (5..=16).contains(&a.len()))
                            .ok_or_else(|| {
                                err(&field, "must be an AID of 5 to 16 octets in hex")
                            })?;
                        o.applications.insert(tar_bytes, aid_bytes);
                    }
                }
                other => {
                    return Err(err(
                        other,
                        &format!("unknown; the fields are {}", PROFILE_HTTP_FIELDS.join(", ")),
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// Why the trigger or the script could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("the admin server address {0} is not IPv4 (trigger tag 84 carries IPv4 here)")]
    NotIpv4(SocketAddr),
}

impl HttpsOptions {
    /// Checks what the trigger needs.
    pub fn check(&self) -> Result<(), HttpsError> {
        match self.admin_addr {
            SocketAddr::V4(_) => Ok(()),
            a => Err(HttpsError::NotIpv4(a)),
        }
    }

    /// The triggering parameters for a card.
    pub fn trigger(&self, identity: &[u8], iccid: &str) -> TriggerParams {
        let ipv4 = match self.admin_addr {
            SocketAddr::V4(a) => a.ip().octets(),
            SocketAddr::V6(_) => [0, 0, 0, 0],
        };
        TriggerParams {
            connection: Some(
                ConnectionParams {
                    buffer_size: self.buffer_size,
                    apn: self.apn.clone(),
                    port: self.admin_addr.port(),
                    ipv4,
                }
                .encode(),
            ),
            security: Some(SecurityParams {
                psk_identity: identity.to_vec(),
                key_version: self.psk_key_version,
                key_id: self.psk_key_id,
                extra: None,
            }),
            retry: Some(CardRetry {
                retry_counter: self.card_retries,
                retry_waiting_delay: TimerValue::from_secs(
                    u32::try_from(self.card_retry_delay.as_secs()).unwrap_or(u32::MAX),
                )
                .unwrap_or(TimerValue {
                    hours: 99,
                    minutes: 59,
                    seconds: 59,
                }),
                report_failure: None,
            }),
            http: Some(HttpParams {
                host: Some(self.host.clone()),
                agent_id: Some(self.agent_id.clone().unwrap_or_else(|| iccid.to_string())),
                uri: Some(self.uri.clone()),
            }),
            dns: None,
        }
    }
}

/// Whether a command type's script is remote file management (an RFM application, TS 102 226
/// Annex B media types) rather than card content management (a security domain).
pub fn is_rfm(command_type: CommandType) -> bool {
    matches!(
        command_type,
        CommandType::Rfm | CommandType::FileUpdate | CommandType::ProfileUpdate
    )
}

/// The media types and `X-Admin-Targeted-Application` of a command's chunks. RFM goes to the
/// RFM application's AID with the ETSI media types; RAM to the security domain holding the PSK
/// (no header) or, for another TAR, that security domain's AID.
pub fn script_target(
    command_type: CommandType,
    tar: [u8; 3],
    options: &HttpsOptions,
) -> (ScriptKind, Option<String>) {
    let aid = || {
        options
            .applications
            .get(&tar)
            .cloned()
            .unwrap_or_else(|| default_application_aid(tar))
    };
    if is_rfm(command_type) {
        (ScriptKind::RemoteFile, Some(aid_uri(&aid())))
    } else if tar == options.trigger_tar {
        (ScriptKind::CardContent, None)
    } else {
        (ScriptKind::CardContent, Some(aid_uri(&aid())))
    }
}

/// The query a chunk's `X-Admin-Next-URI` carries: its command and position. The card posts
/// that chunk's responses there and re-posts there when it resumes.
pub fn chunk_reference(command_id: &str, seq: u32) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("cmd", command_id)
        .append_pair("chunk", &seq.to_string())
        .finish()
}

/// The chunk a POST's target names (see [`chunk_reference`]); `None` for the trigger's URI.
pub fn chunk_of_target(target: &str) -> Option<(String, u32)> {
    let (_, query) = target.split_once('?')?;
    let mut command = None;
    let mut seq = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "cmd" => command = Some(v.into_owned()),
            "chunk" => seq = v.parse::<u32>().ok(),
            _ => {}
        }
    }
    Some((command?, seq?))
}

/// Splits a script into expanded chunks (`AE 80 ... 00 00`) of at most `max` octets (a single
/// C-APDU larger than that goes alone).
pub fn split_script(script: &CommandScript, max: usize) -> Result<Vec<Vec<u8>>, String> {
    let format = ScriptFormat::ExpandedIndefinite;
    let mut out = Vec::new();
    let mut current = CommandScript::new();
    for item in &script.items {
        let ScriptItem::Command(c) = item else {
            continue;
        };
        let mut next = current.clone();
        next.push(c.clone());
        let len = next.encoded_len(format).map_err(|e| e.to_string())?;
        if len > max && current.command_count() > 0 {
            out.push(current.encode(format).map_err(|e| e.to_string())?);
            current = CommandScript::new();
            current.push(c.clone());
        } else {
            current = next;
        }
    }
    if current.command_count() > 0 {
        out.push(current.encode(format).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// PSK identity to (ICCID, key).
type PskCache = HashMap<Vec<u8>, (String, Vec<u8>)>;

/// A chunk handed to a card: (account, command, seq).
type HandedChunk = (String, String, u32);

/// The store behind the admin server: PSKs from an in-memory cache (filled when a trigger goes
/// out; an identity not in it is looked up in the store, so a card whose own retry opens a
/// session after a restart is known), chunks and answers in the store.
///
/// Which chunk a card's answer is for comes from the POST's URI: each chunk's
/// `X-Admin-Next-URI` names it ([`chunk_reference`]), and a card resuming after a break
/// re-posts to the last URI it navigated (Amendment B). An answer is recorded only for a chunk
/// still outstanding (SENT); a repeated one is a duplicate, and the chunk after it goes again.
pub struct Scp81Sessions {
    store: Arc<dyn Store>,
    clock: Arc<dyn crate::clock::Clock>,
    psk: RwLock<PskCache>,
    /// Cards with a session open here, and the chunk each was last handed.
    open: Mutex<HashMap<String, Option<HandedChunk>>>,
    waiters: Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl std::fmt::Debug for Scp81Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scp81Sessions").finish_non_exhaustive()
    }
}

impl Scp81Sessions {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn crate::clock::Clock>) -> Self {
        Scp81Sessions {
            store,
            clock,
            psk: RwLock::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
        }
    }

    /// Caches a card's PSK for handshakes.
    pub fn load_psk(&self, identity: &[u8], iccid: &str, key: &[u8]) {
        if let Ok(mut m) = self.psk.write() {
            m.insert(identity.to_vec(), (iccid.to_string(), key.to_vec()));
        }
    }

    /// The card and key of an identity: from the cache, else from the store (then cached).
    ///
    /// OpenSSL asks from inside the handshake, synchronously, on a runtime worker thread; on a
    /// cache miss the worker is handed over to the store query (`block_in_place`). A runtime
    /// with one thread cannot do that: there only the cache answers.
    fn lookup(&self, identity: &[u8]) -> Option<(String, Vec<u8>)> {
        if let Some(hit) = self.psk.read().ok().and_then(|m| m.get(identity).cloned()) {
            return Some(hit);
        }
        let handle = tokio::runtime::Handle::try_current().ok()?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return None;
        }
        let s = self.store.scp81()?;
        let found = tokio::task::block_in_place(|| handle.block_on(s.psk_by_identity(identity)));
        match found {
            Ok(Some(p)) => {
                tracing::info!(iccid = %p.iccid, "PSK identity found in the store");
                self.load_psk(&p.identity, &p.iccid, &p.key);
                Some((p.iccid, p.key))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!("PSK identity look-up: {e}");
                None
            }
        }
    }

    fn iccid_of(&self, identity: &[u8]) -> Option<String> {
        self.psk
            .read()
            .ok()
            .and_then(|m| m.get(identity).map(|(i, _)| i.clone()))
    }

    /// Whether the card has a session open here now.
    pub fn is_open(&self, iccid: &str) -> bool {
        self.open.lock().is_ok_and(|m| m.contains_key(iccid))
    }

    /// Sessions open now.
    pub fn open_sessions(&self) -> usize {
        self.open.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn waiter(&self, account_id: &str, command_id: &str) -> Arc<Notify> {
        self.waiters
            .lock()
            .map(|mut m| {
                m.entry((account_id.to_string(), command_id.to_string()))
                    .or_default()
                    .clone()
            })
            .unwrap_or_default()
    }

    fn forget_waiter(&self, account_id: &str, command_id: &str) {
        if let Ok(mut m) = self.waiters.lock() {
            m.remove(&(account_id.to_string(), command_id.to_string()));
        }
    }

    fn wake(&self, account_id: &str, command_id: &str) {
        let w = self.waiters.lock().ok().and_then(|m| {
            m.get(&(account_id.to_string(), command_id.to_string()))
                .cloned()
        });
        if let Some(w) = w {
            w.notify_one();
        }
    }
}

impl PskDirectory for Scp81Sessions {
    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>> {
        self.lookup(identity).map(|(_, k)| k)
    }
}

impl AdminSessions for Scp81Sessions {
    async fn open_session(&self, identity: &[u8]) -> bool {
        let Some(iccid) = self.iccid_of(identity) else {
            return false;
        };
        let Ok(mut open) = self.open.lock() else {
            return false;
        };
        if open.contains_key(&iccid) {
            return false;
        }
        open.insert(iccid, None);
        true
    }

    async fn close_session(&self, identity: &[u8], completed: bool) {
        let Some(iccid) = self.iccid_of(identity) else {
            return;
        };
        let left = self
            .open
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&iccid))
            .flatten();
        if let Some((account, command, seq)) = left {
            tracing::info!(%iccid, completed, %command, seq, "session ended: a chunk handed out may be unanswered");
            self.wake(&account, &command);
        }
    }

    async fn next_chunk(&self, identity: &[u8]) -> Option<ScriptChunk> {
        let iccid = self.iccid_of(identity)?;
        let s = self.store.scp81()?;
        // The card's POST has answered its outstanding chunk (recorded just before) or it has
        // no answer for it (it never ran, or the card resumed before it): a chunk still SENT
        // goes again.
        match s.requeue_sent(&iccid, self.clock.now_ms()).await {
            Ok(n) if n > 0 => tracing::info!(%iccid, "{n} unanswered chunk(s) sent again"),
            Ok(_) => {}
            Err(e) => tracing::warn!(%iccid, "requeueing chunks: {e}"),
        }
        let chunk = match s.next_chunk(&iccid, self.clock.now_ms()).await {
            Ok(c) => c?,
            Err(e) => {
                tracing::warn!(%iccid, "next chunk: {e}");
                return None;
            }
        };
        if let Ok(mut m) = self.open.lock() {
            if let Some(o) = m.get_mut(&iccid) {
                *o = Some((
                    chunk.account_id.clone(),
                    chunk.command_id.clone(),
                    chunk.seq,
                ));
            }
        }
        Some(ScriptChunk {
            reference: chunk_reference(&chunk.command_id, chunk.seq),
            script: chunk.script,
            targeted_application: chunk.targeted_application,
            kind: chunk.kind,
        })
    }

    async fn record_responses(&self, identity: &[u8], request: &AdminRequest) {
        let Some(iccid) = self.iccid_of(identity) else {
            return;
        };
        let Some(s) = self.store.scp81() else {
            return;
        };
        let Some((command, seq)) = chunk_of_target(&request.target) else {
            tracing::warn!(%iccid, target = %request.target, resume = request.resume,
                "responses posted to a URI that names no chunk: not recorded");
            return;
        };
        let chunk = match s.card_chunk(&iccid, &command, seq).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::warn!(%iccid, %command, seq, "responses for a chunk this card does not have");
                return;
            }
            Err(e) => {
                tracing::warn!(%iccid, %command, seq, "looking the chunk up: {e}");
                return;
            }
        };
        if chunk.state != ChunkState::Sent {
            // A resumed session repeating an answer already recorded: the chunk after it is
            // the one outstanding, and goes again.
            tracing::info!(%iccid, %command, seq, state = chunk.state.as_str(), resume = request.resume,
                "repeated answer to a chunk not outstanding: not recorded");
            return;
        }
        if request.response_kind().is_some_and(|k| k != chunk.kind) {
            tracing::warn!(%iccid, %command, seq, content_type = ?request.content_type,
                "the card labels its answer for another kind of script");
        }
        let status = request
            .script_status
            .as_ref()
            .map_or("ok".to_string(), |s| s.as_str().to_string());
        match s
            .answer_chunk(
                &chunk.account_id,
                &command,
                seq,
                &request.body,
                &status,
                self.clock.now_ms(),
            )
            .await
        {
            Ok(true) => {
                let answered = ChunkRecord {
                    response: Some(request.body.clone()),
                    script_status: Some(status),
                    state: ChunkState::Answered,
                    ..chunk
                };
                if let Some(problem) = chunk_outcome(&answered).problem {
                    // The command has failed: its later chunks must not run.
                    match s.drop_queued(&answered.account_id, &command).await {
                        Ok(n) => {
                            tracing::info!(%iccid, %command, seq, "{problem}; {n} later chunk(s) dropped")
                        }
                        Err(e) => {
                            tracing::warn!(%iccid, %command, "dropping the later chunks: {e}")
                        }
                    }
                }
                self.wake(&answered.account_id, &command);
            }
            Ok(false) => tracing::warn!(%iccid, %command, seq, "answer to a chunk no longer SENT"),
            Err(e) => tracing::warn!(%iccid, %command, seq, "recording the answer: {e}"),
        }
    }
}

/// The HTTPS side of the engine.
pub struct HttpsDriver {
    pub options: HttpsOptions,
    pub sessions: Arc<Scp81Sessions>,
}

fn job_fail(code: ErrorCode, message: impl Into<String>) -> Stop {
    Stop::Fail(code, message.into())
}

/// How an HTTPS command stops short of its session's answer.
enum Stop {
    Fail(ErrorCode, String),
    /// Ended or taken over elsewhere: nothing to record.
    Skip(String),
    /// The store failed: leave it for a later claim.
    Store(String),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e.to_string())
    }
}

/// What a command needs to be triggered.
struct Prepared {
    sec: ValidSecurity,
    msisdn: String,
    keys: Scp80Keys,
    identity: Vec<u8>,
}

/// What one answered chunk says.
#[derive(Debug, Default)]
pub struct ChunkOutcome {
    pub executed: u32,
    pub status_words: Vec<StatusWordData>,
    /// The last R-APDU's status word and data.
    pub last: Option<(u16, Vec<u8>)>,
    /// Why the chunk failed, naming the APDU where it stopped; `None` if it succeeded.
    pub problem: Option<String>,
}

/// Reads a chunk's answer: its status words, and whether (and where) it failed.
pub fn chunk_outcome(c: &ChunkRecord) -> ChunkOutcome {
    let mut out = ChunkOutcome::default();
    if let Some(status) = c.script_status.as_deref().filter(|s| *s != "ok") {
        out.problem = Some(format!(
            "card reports X-Admin-Script-Status {status} for chunk {}",
            c.seq
        ));
        return out;
    }
    let body = c.response.as_deref().unwrap_or_default();
    let parsed = match parse_expanded_response(body) {
        Ok(p) => p,
        Err(e) => {
            out.problem = Some(format!(
                "chunk {}: the card's answer is not a response script: {e}",
                c.seq
            ));
            return out;
        }
    };
    out.executed = parsed.executed as u32;
    out.status_words = parsed
        .responses
        .iter()
        .map(|r| StatusWordData {
            sw: format!("{:04X}", r.sw),
            data: hex::encode_upper(&r.data),
        })
        .collect();
    out.last = parsed.last().map(|r| (r.sw, r.data.clone()));
    // The same rule as SMS commands and campaign cards (`ScriptResponse::judge`); a failing
    // status word is named by its C-APDU.
    let Err(reason) = parsed.judge(None) else {
        return out;
    };
    out.problem = Some(
        match out.last.as_ref().filter(|(sw, _)| !sw_is_success(*sw)) {
            Some((sw, _)) => {
                // The card stops at the first failing C-APDU of an expanded script (TS 102 226
                // 5.2.2): the last one it ran is the one that failed.
                let script = CommandScript::parse(&c.script, ScriptFormat::ExpandedIndefinite)
                    .unwrap_or_default();
                let n = parsed.executed.max(1);
                let which = script.commands().nth(n - 1).map_or(String::new(), |a| {
                    format!(
                        " ({:02X} {:02X} {:02X} {:02X})",
                        a.cla(),
                        a.ins(),
                        a.p1(),
                        a.p2()
                    )
                });
                format!(
                    "chunk {}: C-APDU {n} of {}{which} answered {sw:04X}",
                    c.seq,
                    script.command_count()
                )
            }
            None => format!("chunk {}: {reason}", c.seq),
        },
    );
    out
}

/// The end state of a command whose chunks are all answered (a chunk that failed ends it: the
/// chunks after it were dropped unsent).
pub fn session_transition(chunks: &[ChunkRecord], at: i64) -> Transition {
    let mut response = CardResponse {
        por_status: "00".into(),
        por_status_name: "SCP81 session".into(),
        status_code: None,
        data: None,
        executed: Some(0),
        status_words: Vec::new(),
    };
    let mut problem: Option<String> = None;
    for c in chunks {
        let o = chunk_outcome(c);
        response.executed = Some(response.executed.unwrap_or(0) + o.executed);
        response.status_words.extend(o.status_words);
        if let Some((sw, data)) = o.last {
            response.status_code = Some(sw);
            response.data = Some(hex::encode_upper(&data));
        }
        if let Some(p) = o.problem {
            problem.get_or_insert(p);
        }
    }
    let from = vec![CommandStatus::Sent, CommandStatus::Delivered];
    match problem {
        Some(message) => Transition {
            from,
            to: CommandStatus::Failed,
            event: "FAILED".into(),
            detail: message.clone(),
            response: Some(response),
            error: Some(CommandError {
                code: ErrorCode::CommandFailed,
                message,
            }),
            at,
            new_keys: None,
            events: Vec::new(),
        },
        None => Transition {
            from,
            to: CommandStatus::Success,
            event: "SUCCESS".into(),
            detail: format!(
                "SCP81 session: {} chunk(s) answered, last SW {}",
                chunks.len(),
                response
                    .status_code
                    .map_or("-".to_string(), |sw| format!("{sw:04X}"))
            ),
            response: Some(response),
            error: None,
            at,
            new_keys: None,
            events: Vec::new(),
        },
    }
}

impl HttpsDriver {
    pub fn new(
        options: HttpsOptions,
        store: Arc<dyn Store>,
        clock: Arc<dyn crate::clock::Clock>,
    ) -> Self {
        HttpsDriver {
            options,
            sessions: Arc::new(Scp81Sessions::new(store, clock)),
        }
    }

    /// Runs an HTTPS command to its end state; the engine's bookkeeping stays with the caller.
    pub(super) async fn run(
        &self,
        shared: &Arc<Shared>,
        record: &CommandRecord,
        retry: RetryPolicy,
    ) -> Option<CommandStatus> {
        let result = self.drive(shared, record, retry).await;
        self.sessions.forget_waiter(&record.account_id, &record.id);
        match result {
            Ok(Some(t)) => (apply(shared, record, &t).await == Recorded::Yes).then_some(t.to),
            Ok(None) => {
                // Timed out: fall back to SMS, or fail.
                if let Some(s) = shared.store.scp81() {
                    let _ = s.drop_chunks(&record.account_id, &record.id).await;
                }
                if self.options.fallback_to_sms {
                    if let Some((sms, retry)) = super::reroute_to_sms(
                        shared,
                        record,
                        retry,
                        "no HTTPS session came: the command goes over SMS",
                    )
                    .await
                    {
                        return super::run_pipeline(shared, &sms, retry).await;
                    }
                }
                fail(
                    shared,
                    record,
                    ErrorCode::Timeout,
                    format!(
                        "the card opened no HTTPS admin session after {} trigger(s), {:?} each",
                        retry.attempts.max(1),
                        crate::command::transport::stored_overrides(&record.request)
                            .timeout
                            .unwrap_or(self.options.window)
                    ),
                )
                .await;
                Some(CommandStatus::Failed)
            }
            Err(Stop::Fail(code, message)) => {
                if let Some(s) = shared.store.scp81() {
                    let _ = s.drop_chunks(&record.account_id, &record.id).await;
                }
                fail(shared, record, code, message).await;
                Some(CommandStatus::Failed)
            }
            Err(Stop::Skip(why)) => {
                tracing::debug!(command = %record.id, "skipped: {why}");
                None
            }
            Err(Stop::Store(e)) => {
                tracing::warn!(command = %record.id, "store failed, left for a later claim: {e}");
                let _ = shared.store.release(&record.id, &shared.config.id).await;
                None
            }
        }
    }

    /// Queues the script, triggers, waits. `Ok(None)`: no answer after every trigger.
    async fn drive(
        &self,
        shared: &Arc<Shared>,
        record: &CommandRecord,
        retry: RetryPolicy,
    ) -> Result<Option<Transition>, Stop> {
        let store = shared.store.as_ref();
        let mut options = self.card_options(shared, record).await?;
        // The command's own timeout is how long each trigger waits for the card's session.
        if let Some(t) = crate::command::transport::stored_overrides(&record.request).timeout {
            options.window = t;
        }
        let prepared = self.prepare(shared, record, &options).await?;
        let notify = self.sessions.waiter(&record.account_id, &record.id);
        // Answered already (a restart while the session ran)?
        if let Some(t) = self.finished(shared, record).await? {
            return Ok(Some(t));
        }
        let route = shared.transports.route("sms").cloned().ok_or_else(|| {
            job_fail(
                ErrorCode::TransportError,
                "HTTPS needs the SMS route for its trigger",
            )
        })?;
        for attempt in 1..=retry.attempts.max(1) {
            let counter = store
                .reserve_counter(&record.iccid, prepared.sec.counter_version())
                .await?;
            let params = options
                .trigger(&prepared.identity, &record.iccid)
                .encode()
                .map_err(|e| job_fail(ErrorCode::InvalidState, format!("trigger: {e}")))?;
            let header = CommandHeader {
                spi: prepared.sec.spi,
                kic: KeyIdentifier(prepared.sec.kic),
                kid: KeyIdentifier(prepared.sec.kid),
                tar: options.trigger_tar,
                counter: Counter::new(counter)
                    .map_err(|e| job_fail(ErrorCode::SecurityError, e.to_string()))?,
            };
            let packet = encode_command_packet(&header, &prepared.keys, &params)
                .map_err(|e| job_fail(ErrorCode::SecurityError, e.to_string()))?;
            let now = shared.now();
            if !store
                .record_send(&record.account_id, &record.id, &shared.config.id, now)
                .await?
            {
                return Err(Stop::Skip("ended or taken over before the trigger".into()));
            }
            let _ = store
                .add_event(
                    &record.account_id,
                    &record.id,
                    "TRIGGER",
                    &format!(
                        "SCP81 trigger {attempt}/{} to TAR {} counter {counter}",
                        retry.attempts.max(1),
                        hex::encode_upper(options.trigger_tar)
                    ),
                    now,
                )
                .await;
            let id = shared.log.allocate(&record.account_id, &record.id);
            let trigger = SecuredCommand::of_packet(
                id,
                Destination {
                    msisdn: prepared.msisdn.clone(),
                    iccid: Some(record.iccid.clone()),
                },
                packet,
                &header,
                &prepared.keys,
                SendOptions {
                    validity_minutes: None,
                    delivery_report: true,
                    sequential_segments: false,
                    urgency: record.priority.urgency(),
                },
            );
            let mut por = match route
                .dispatcher
                .send(trigger.message, trigger.pending)
                .await
            {
                Ok(rx) => Some(rx),
                Err(e) if e.is_transient() => {
                    tracing::info!(command = %record.id, "trigger not sent: {e}");
                    None
                }
                Err(e) => {
                    route.dispatcher.forget(id);
                    return Err(job_fail(ErrorCode::TransportError, format!("trigger: {e}")));
                }
            };
            let deadline = tokio::time::Instant::now() + options.window;
            let outcome = loop {
                tokio::select! {
                    _ = notify.notified() => {
                        if let Some(t) = self.finished(shared, record).await? {
                            break Some(t);
                        }
                    }
                    got = async { match por.as_mut() { Some(rx) => rx.await.ok(), None => std::future::pending().await } } => {
                        por = None;
                        let detail = match got {
                            Some(OtaOutcome::Por(p, _)) => format!("trigger PoR {:02X} {}", p.status.to_byte(), p.status.name()),
                            Some(OtaOutcome::Failed(e)) => format!("trigger failed: {e}"),
                            None => "trigger PoR wait dropped".into(),
                        };
                        let _ = store.add_event(&record.account_id, &record.id, "TRIGGER_POR", &detail, shared.now()).await;
                    }
                    _ = tokio::time::sleep_until(deadline) => {
                        // A session still running keeps the command waiting.
                        if self.sessions.is_open(&record.iccid) {
                            tokio::select! {
                                _ = notify.notified() => {}
                                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                            }
                            if let Some(t) = self.finished(shared, record).await? {
                                break Some(t);
                            }
                            continue;
                        }
                        break self.finished(shared, record).await?;
                    }
                }
            };
            route.dispatcher.forget(id);
            if outcome.is_some() {
                return Ok(outcome);
            }
        }
        Ok(None)
    }

    /// The end state once every chunk is answered.
    async fn finished(
        &self,
        shared: &Arc<Shared>,
        record: &CommandRecord,
    ) -> Result<Option<Transition>, Stop> {
        let Some(s) = shared.store.scp81() else {
            return Ok(None);
        };
        let chunks = s.command_chunks(&record.account_id, &record.id).await?;
        if chunks.is_empty() || chunks.iter().any(|c| c.state != ChunkState::Answered) {
            return Ok(None);
        }
        Ok(Some(session_transition(&chunks, shared.now())))
    }

    /// The gateway's settings with the card's profile's (`defaults.http`) over them.
    async fn card_options(
        &self,
        shared: &Arc<Shared>,
        record: &CommandRecord,
    ) -> Result<HttpsOptions, Stop> {
        let store = shared.store.as_ref();
        let Some(p) = store
            .card_profile(&record.account_id, &record.iccid)
            .await?
        else {
            return Ok(self.options.clone());
        };
        let Some(profile) = store.profile(&record.account_id, p).await? else {
            return Ok(self.options.clone());
        };
        match &profile.defaults.http {
            Some(http) => self.options.with_profile(http).map_err(|(f, p)| {
                job_fail(
                    ErrorCode::InvalidState,
                    format!("profile {}: {f}: {p}", profile.id),
                )
            }),
            None => Ok(self.options.clone()),
        }
    }

    /// Checks the command, builds and queues its chunks (once), and finds the card's keys.
    async fn prepare(
        &self,
        shared: &Arc<Shared>,
        record: &CommandRecord,
        options: &HttpsOptions,
    ) -> Result<Prepared, Stop> {
        let store = shared.store.as_ref();
        let scp81 = store
            .scp81()
            .ok_or_else(|| job_fail(ErrorCode::TransportError, "this store has no SCP81 tables"))?;
        let req: OtaCommandRequest = serde_json::from_value(record.request.clone())
            .map_err(|e| job_fail(ErrorCode::InvalidState, format!("stored request: {e}")))?;
        let sec = validate_request(&req).map_err(|e| {
            job_fail(
                ErrorCode::InvalidState,
                format!("{}: {}", e.field, e.problem),
            )
        })?;
        let card = store
            .card(&record.account_id, &record.iccid)
            .await?
            .ok_or_else(|| {
                job_fail(
                    ErrorCode::InvalidState,
                    format!("card {} not found", record.iccid),
                )
            })?;
        let msisdn = card.msisdn.clone().ok_or_else(|| {
            job_fail(
                ErrorCode::InvalidState,
                format!("card {} has no MSISDN for the trigger", card.iccid),
            )
        })?;
        let key_set = |version: u8| async move {
            store.key_set(&record.iccid, version).await?.ok_or_else(|| {
                job_fail(
                    ErrorCode::SecurityError,
                    format!("card {} has no key set version {version}", record.iccid),
                )
            })
        };
        let kic_set = key_set(sec.kic >> 4).await?;
        let kid_set = key_set(sec.kid >> 4).await?;
        let keys =
            crate::pipeline::resolve::scp80_keys(&sec.spi, sec.kic, sec.kid, &kic_set, &kid_set)
                .map_err(|e| job_fail(ErrorCode::SecurityError, e.to_string()))?;
        let counter_set = if sec.counter_version() == kid_set.version {
            kid_set.clone()
        } else {
            kic_set.clone()
        };
        let psk = scp81
            .psk(&record.iccid, options.psk_key_version)
            .await?
            .ok_or_else(|| {
                job_fail(
                    ErrorCode::SecurityError,
                    format!(
                        "card {} has no SCP81 PSK of key version {:#04x}",
                        record.iccid, options.psk_key_version
                    ),
                )
            })?;
        self.sessions
            .load_psk(&psk.identity, &record.iccid, &psk.key);
        if scp81
            .command_chunks(&record.account_id, &record.id)
            .await?
            .is_empty()
        {
            let applet = match requested_applet(&req) {
                Some(id) => Some(
                    store
                        .applet(&record.account_id, id)
                        .await?
                        .ok_or_else(|| {
                            job_fail(
                                ErrorCode::InvalidState,
                                format!("data.parameters.appletId: applet {id} not found"),
                            )
                        })?
                        .content,
                ),
                None => None,
            };
            let gp = crate::pipeline::secure::card_gp(store, &record.account_id, &card.iccid)
                .await?
                .map_err(|e| job_fail(ErrorCode::InvalidState, e))?;
            let ctx = BuildContext {
                card_class: card_class(&card.attributes),
                key_set: &counter_set,
                applet: applet.as_deref(),
                max_script_len: self.options.max_script_bytes,
                gp,
            };
            let built = build_script(&req, &ctx, &mut rand::thread_rng()).map_err(|e| {
                job_fail(
                    ErrorCode::InvalidState,
                    format!("cannot build the script: {e}"),
                )
            })?;
            if built.new_keys.is_some() {
                return Err(job_fail(
                    ErrorCode::InvalidState,
                    "KEY_UPDATE over HTTPS is not supported yet: send it over SMS",
                ));
            }
            let script = CommandScript::parse(&built.script, built.format)
                .map_err(|e| job_fail(ErrorCode::InvalidState, format!("script: {e}")))?;
            let (kind, target) = script_target(req.command_type, sec.tar, options);
            let chunks: Vec<NewChunk> = split_script(&script, self.options.chunk_bytes)
                .map_err(|e| job_fail(ErrorCode::InvalidState, format!("script: {e}")))?
                .into_iter()
                .map(|script| NewChunk {
                    script,
                    targeted_application: target.clone(),
                    kind,
                })
                .collect();
            if chunks.is_empty() {
                return Err(job_fail(
                    ErrorCode::InvalidState,
                    "the script has no C-APDU",
                ));
            }
            scp81
                .queue_chunks(
                    &record.account_id,
                    &record.id,
                    &record.iccid,
                    &chunks,
                    shared.now(),
                )
                .await?;
            let _ = store
                .add_event(
                    &record.account_id,
                    &record.id,
                    "QUEUED",
                    &format!(
                        "{} script chunk(s) for the card's SCP81 session",
                        chunks.len()
                    ),
                    shared.now(),
                )
                .await;
        }
        Ok(Prepared {
            sec,
            msisdn,
            keys,
            identity: psk.identity,
        })
    }
}

#[cfg(test)]
mod profile_tests {
    use super::*;

    #[test]
    fn a_profile_overrides_the_trigger_and_bad_fields_are_named() {
        let base = HttpsOptions::default();
        let o = base
            .with_profile(&serde_json::json!({"host": "ota.example", "tar": "B20100",
                "keyVersion": 65, "agentId": "op-1", "cardRetries": 2}))
            .unwrap();
        assert_eq!(o.host, "ota.example");
        assert_eq!(o.trigger_tar, [0xB2, 0x01, 0x00]);
        assert_eq!(o.psk_key_version, 0x41);
        let t = o.trigger(b"id", "8949").encode().unwrap();
        let decoded = TriggerParams::decode(&t).unwrap();
        assert_eq!(
            decoded.http.and_then(|h| h.host).as_deref(),
            Some("ota.example")
        );
        for (bad, field) in [
            (serde_json::json!({"tar": "B201"}), "http.tar"),
            (serde_json::json!({"keyVersion": 1}), "http.keyVersion"),
            (serde_json::json!({"hots": "x"}), "http.hots"),
            (serde_json::json!({"host": 5}), "http.host"),
        ] {
            assert_eq!(base.with_profile(&bad).unwrap_err().0, field, "{bad}");
        }
    }
}
