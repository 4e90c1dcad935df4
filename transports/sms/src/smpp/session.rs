//! One bind: connect, bind, serve (submit, answer, keep alive), unbind or drop, reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use rusmpp::pdus::{BindReceiver, BindTransceiver, BindTransmitter, DeliverSmResp};
use rusmpp::types::COctetString;
use rusmpp::values::{InterfaceVersion, Npi, Ton};
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_util::codec::FramedRead;
use tracing::{debug, info, trace, warn};

use super::frame::{self, id, RawCodec, RawPdu};
use super::inbound::InboundSm;
use super::state::{rejection, Requeue, SegKey, Shared};
use super::tls::TlsFailure;
use super::transport::{BindRole, BindStatus};
use super::{SmppError, SmppStatus};
use otagw_transport::{AckStatus, InboundAck};

/// Smallest share of the configured window / rate a throttled bind goes down to.
const MIN_FACTOR: f64 = 1.0 / 64.0;
/// Largest write the writer task gathers before writing.
const WRITE_BATCH: usize = 64 * 1024;

/// A bind's status slot, shared with the transport handle.
pub(crate) type StatusSlot = Arc<Mutex<BindStatus>>;

fn update(slot: &StatusSlot, f: impl FnOnce(&mut BindStatus)) {
    let mut status = slot.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut status);
}

/// Runs one bind until shutdown: connect, bind, serve; after a failure wait (backoff) and
/// start again.
pub(crate) async fn run_bind(
    shared: Arc<Shared>,
    role: BindRole,
    slot: StatusSlot,
    mut shutdown: watch::Receiver<bool>,
    seed: u64,
) {
    let mut backoff = Backoff::new(&shared, seed);
    loop {
        if *shutdown.borrow() {
            break;
        }
        let result = tokio::select! {
            r = connect_and_bind(&shared, role) => r,
            _ = shutdown.changed() => break,
        };
        match result {
            Ok(link) => {
                info!(?role, address = %shared.config.address, "SMPP bound");
                backoff.reset();
                update(&slot, |s| {
                    s.bound = true;
                    s.binds += 1;
                    s.last_error = None;
                });
                let end = Session::new(&shared, link, role).serve(&mut shutdown).await;
                update(&slot, |s| s.bound = false);
                match end {
                    End::Shutdown => break,
                    End::Dropped(error) => {
                        warn!(?role, %error, "SMPP session dropped; reconnecting");
                        update(&slot, |s| s.last_error = Some(error));
                    }
                }
            }
            Err(error) => {
                warn!(?role, %error, "SMPP connect/bind failed");
                update(&slot, |s| s.last_error = Some(error));
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => break,
        }
    }
    update(&slot, |s| s.bound = false);
}

/// Exponential backoff with jitter; the randomness is a small xorshift (no RNG dependency).
struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    current: Duration,
    state: u64,
}

impl Backoff {
    fn new(shared: &Shared, seed: u64) -> Self {
        let r = shared.config.reconnect;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            initial: r.initial,
            max: r.max.max(r.initial),
            jitter: r.jitter.clamp(0.0, 1.0),
            current: r.initial,
            state: (nanos ^ seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1,
        }
    }

    fn reset(&mut self) {
        self.current = self.initial;
    }

    fn random_unit(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        (self.state >> 11) as f64 / (1u64 << 53) as f64
    }

    fn next_delay(&mut self) -> Duration {
        let nominal = self.current;
        self.current = (self.current * 2).min(self.max);
        nominal.mul_f64(1.0 - self.jitter * self.random_unit())
    }
}

/// The read half of a connection, plain TCP or TLS.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// A connected socket (plain or TLS): frames in, a writer task out.
struct Link {
    reader: FramedRead<ReadHalf, RawCodec>,
    out: mpsc::UnboundedSender<Bytes>,
    writer: JoinHandle<()>,
    sequence: u32,
}

impl Link {
    /// Frames `read` and starts the writer task on `write`: the session above does not know
    /// which stream it runs on.
    fn new<R, W>(read: R, write: W, max_pdu_len: usize) -> Self
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (out, rx) = mpsc::unbounded_channel();
        Self {
            reader: FramedRead::new(Box::new(read) as ReadHalf, RawCodec::new(max_pdu_len)),
            out,
            writer: tokio::spawn(write_loop(write, rx)),
            sequence: 0,
        }
    }

    /// sequence_number 1 to 0x7FFFFFFF, then again from 1 (SMPP 3.4 section 3.2).
    fn next_sequence(&mut self) -> u32 {
        self.sequence = if self.sequence >= 0x7FFF_FFFF {
            1
        } else {
            self.sequence + 1
        };
        self.sequence
    }

    fn send(&self, bytes: Bytes) {
        // A closed channel means the writer died; the session notices it through the handle.
        let _ = self.out.send(bytes);
    }

    fn send_command(&self, command: &Command) {
        self.send(frame::encode(command));
    }

    async fn close(self, graceful: bool) {
        let Link { out, writer, .. } = self;
        drop(out);
        if graceful {
            let abort = writer.abort_handle();
            if timeout(Duration::from_secs(1), writer).await.is_err() {
                abort.abort();
            }
        } else {
            writer.abort();
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut socket: W, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut buffer = BytesMut::new();
    while let Some(first) = rx.recv().await {
        buffer.extend_from_slice(&first);
        while buffer.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(more) => buffer.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        // flush: a TLS stream may keep records buffered after write_all (no-op for TCP).
        let written = match socket.write_all(&buffer).await {
            Ok(()) => socket.flush().await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            debug!(error = %e, "SMPP write failed");
            return;
        }
        buffer.clear();
    }
    let _ = socket.shutdown().await;
}

fn c_string<const MIN: usize, const MAX: usize>(
    value: &str,
    what: &str,
) -> Result<COctetString<MIN, MAX>, SmppError> {
    COctetString::from_string(value.to_string())
        .map_err(|e| SmppError::InvalidConfig(format!("{what} {value:?}: {e}")))
}

fn bind_command(shared: &Shared, role: BindRole, sequence: u32) -> Result<Command, SmppError> {
    let c = &shared.config;
    let system_id = c_string(&c.system_id, "system_id")?;
    let password = c_string(&c.password, "password")?;
    let system_type = c_string(&c.system_type, "system_type")?;
    let version = InterfaceVersion::Smpp3_4;
    let (ton, npi, range) = (Ton::Unknown, Npi::Unknown, COctetString::empty());
    let pdu: Pdu = match role {
        BindRole::Transceiver => {
            BindTransceiver::new(system_id, password, system_type, version, ton, npi, range).into()
        }
        BindRole::Transmitter => {
            BindTransmitter::new(system_id, password, system_type, version, ton, npi, range).into()
        }
        BindRole::Receiver => {
            BindReceiver::new(system_id, password, system_type, version, ton, npi, range).into()
        }
    };
    Ok(Command::new(CommandStatus::EsmeRok, sequence, pdu))
}

fn expected_bind_resp(role: BindRole) -> u32 {
    match role {
        BindRole::Transceiver => id::BIND_TRANSCEIVER_RESP,
        BindRole::Transmitter => id::BIND_TRANSMITTER_RESP,
        BindRole::Receiver => id::BIND_RECEIVER_RESP,
    }
}

/// A read failure: a TLS failure when rustls reports one (for example the SMSC's alert after a
/// TLS 1.3 handshake that refused our client certificate), otherwise I/O or framing.
fn read_error(shared: &Shared, e: frame::FrameError) -> SmppError {
    match e {
        frame::FrameError::Io(e) => {
            let failure = shared
                .tls
                .as_ref()
                .and_then(|tls| TlsFailure::from_rustls_io(&e, &tls.name));
            match failure {
                Some(failure) => SmppError::Tls {
                    address: shared.config.address.clone(),
                    failure,
                },
                None => SmppError::Io(e.to_string()),
            }
        }
        frame::FrameError::BadLength { length, .. }
            if shared.tls.is_none() && looks_like_tls_record(length) =>
        {
            SmppError::Protocol(format!(
                "{e} (that is a TLS record: the SMSC expects TLS, see SmppConfig::tls)"
            ))
        }
        other => SmppError::Protocol(other.to_string()),
    }
}

/// Whether the 4 octets read as command_length start a TLS record (handshake or alert,
/// version 3.x): what a plain ESME gets from a TLS port.
fn looks_like_tls_record(length: u32) -> bool {
    let [content_type, major, minor, _] = length.to_be_bytes();
    matches!(content_type, 0x15 | 0x16) && major == 0x03 && minor <= 0x04
}

/// A TLS peer that closed the TCP connection without close_notify: as good as closed.
fn is_unclean_close(e: &frame::FrameError) -> bool {
    matches!(e, frame::FrameError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// TCP connect, then the TLS handshake when configured.
async fn connect(shared: &Shared) -> Result<Link, SmppError> {
    let config = &shared.config;
    let stream = match timeout(config.connect_timeout, TcpStream::connect(&config.address)).await {
        Err(_) => return Err(SmppError::Timeout("TCP connect")),
        Ok(Err(e)) => {
            return Err(SmppError::Connect {
                address: config.address.clone(),
                reason: e.to_string(),
            })
        }
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let Some(tls) = &shared.tls else {
        let (read, write) = stream.into_split();
        return Ok(Link::new(read, write, config.max_pdu_len));
    };
    let handshake = tls.connector.connect(tls.server_name.clone(), stream);
    match timeout(config.connect_timeout, handshake).await {
        Err(_) => Err(SmppError::Timeout("TLS handshake")),
        Ok(Err(e)) => Err(SmppError::Tls {
            address: config.address.clone(),
            failure: TlsFailure::from_handshake_io(&e, &tls.name),
        }),
        Ok(Ok(stream)) => {
            debug!(server_name = %tls.name, "TLS handshake done");
            let (read, write) = tokio::io::split(stream);
            Ok(Link::new(read, write, config.max_pdu_len))
        }
    }
}

async fn connect_and_bind(shared: &Shared, role: BindRole) -> Result<Link, SmppError> {
    let config = &shared.config;
    let mut link = connect(shared).await?;
    let sequence = link.next_sequence();
    let bind = match bind_command(shared, role, sequence) {
        Ok(bind) => bind,
        Err(e) => {
            link.close(false).await;
            return Err(e);
        }
    };
    link.send_command(&bind);
    let deadline = Instant::now() + config.response_timeout;
    let expected = expected_bind_resp(role);
    let outcome = loop {
        let raw = match timeout_at(deadline, link.reader.next()).await {
            Err(_) => break Err(SmppError::Timeout("bind response")),
            Ok(None) => break Err(SmppError::Closed("connection closed during bind".into())),
            Ok(Some(Err(e))) if is_unclean_close(&e) => {
                break Err(SmppError::Closed("connection closed during bind".into()))
            }
            Ok(Some(Err(e))) => break Err(read_error(shared, e)),
            Ok(Some(Ok(raw))) => raw,
        };
        if raw.sequence == sequence
            && (raw.command_id == expected || raw.command_id == id::GENERIC_NACK)
        {
            let status = SmppStatus(raw.status);
            if status.is_ok() && raw.command_id == expected {
                break Ok(());
            }
            break Err(SmppError::BindRejected(status));
        }
        match raw.command_id {
            id::ENQUIRE_LINK => link.send_command(&Command::new(
                CommandStatus::EsmeRok,
                raw.sequence,
                Pdu::EnquireLinkResp,
            )),
            id::UNBIND => {
                link.send_command(&Command::new(
                    CommandStatus::EsmeRok,
                    raw.sequence,
                    Pdu::UnbindResp,
                ));
                break Err(SmppError::Closed("unbind during bind".into()));
            }
            other => debug!(
                command_id = format_args!("{other:#010x}"),
                "PDU before bind_resp ignored"
            ),
        }
    };
    match outcome {
        Ok(()) => Ok(link),
        Err(e) => {
            link.close(false).await;
            Err(e)
        }
    }
}

/// How a session ended.
enum End {
    Shutdown,
    Dropped(SmppError),
}

struct Session<'a> {
    shared: &'a Shared,
    link: Link,
    role: BindRole,
    /// submit_sm sequence -> (segment, sent at).
    outstanding: HashMap<u32, (SegKey, Instant)>,
    enquire: Option<(u32, Instant)>,
    last_enquire: Instant,
    unbind: Option<(u32, Instant)>,
    draining: Option<Instant>,
    paused_until: Option<Instant>,
    /// Share of the configured window and rate in use (halved by throttling).
    factor: f64,
    last_adjust: Instant,
    next_send_at: Instant,
    next_timeout_scan: Instant,
    /// Sequence numbers of `deliver_sm`s whose PoR has been taken care of: their
    /// `deliver_sm_resp` goes now (see [`InboundAck`]).
    acks_tx: mpsc::UnboundedSender<(u32, AckStatus)>,
    acks_rx: mpsc::UnboundedReceiver<(u32, AckStatus)>,
}

/// Counts sessions for tracing.
static SESSIONS: AtomicU64 = AtomicU64::new(0);

impl<'a> Session<'a> {
    fn new(shared: &'a Shared, link: Link, role: BindRole) -> Self {
        let now = Instant::now();
        let n = SESSIONS.fetch_add(1, Ordering::Relaxed);
        trace!(session = n, ?role, "session starts");
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        Self {
            shared,
            link,
            role,
            outstanding: HashMap::new(),
            enquire: None,
            last_enquire: now,
            unbind: None,
            draining: None,
            paused_until: None,
            factor: 1.0,
            last_adjust: now,
            next_send_at: now,
            next_timeout_scan: now + scan_interval(&shared.config.response_timeout),
            acks_tx,
            acks_rx,
        }
    }

    fn window(&self) -> usize {
        ((self.shared.config.window as f64 * self.factor) as usize).max(1)
    }

    fn send_interval(&self) -> Option<Duration> {
        self.shared
            .config
            .rate_limit
            .map(|rate| Duration::from_secs_f64(1.0 / (rate * self.factor)))
    }

    async fn serve(mut self, shutdown: &mut watch::Receiver<bool>) -> End {
        let end = self.run(shutdown).await;
        // Whatever is still outstanding goes back to the queue, unchanged, first in line.
        let mut left: Vec<(u32, SegKey)> =
            self.outstanding.drain().map(|(s, (k, _))| (s, k)).collect();
        left.sort_by_key(|(s, _)| std::cmp::Reverse(*s));
        if !left.is_empty() {
            let mut core = self.shared.core();
            let why = match &end {
                End::Shutdown => "transport shutting down".to_string(),
                End::Dropped(e) => format!("session dropped ({e})"),
            };
            for (_, key) in left {
                core.requeue(key, Requeue::Dropped, self.shared.config.max_attempts, &why);
            }
            drop(core);
            self.shared.work.notify_waiters();
        }
        self.link.close(matches!(end, End::Shutdown)).await;
        end
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> End {
        let shared = self.shared;
        let config = &shared.config;
        let tick = scan_interval(&config.response_timeout).min(config.enquire_link_interval);
        loop {
            let notified = self.shared.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = Instant::now();
            let mut wake = now + tick;
            if self.role.transmits() && self.draining.is_none() {
                self.fill(now, &mut wake);
            }
            if let Some((_, sent)) = self.enquire {
                wake = wake.min(sent + config.response_timeout);
            }
            // New work only matters when it could go out now: room in the window, no
            // throttling pause, no rate-limit wait (those have their own wake-up).
            let room = self.role.transmits()
                && self.draining.is_none()
                && self.outstanding.len() < self.window()
                && self.paused_until.is_none()
                && (config.rate_limit.is_none() || self.next_send_at <= now);
            tokio::select! {
                biased;
                _ = shutdown.changed(), if self.draining.is_none() => {
                    self.draining = Some(Instant::now() + config.response_timeout);
                }
                Some((sequence, status)) = self.acks_rx.recv() => {
                    self.answer_deliver(sequence, status);
                    self.flush_acks();
                }
                frame = self.link.reader.next() => match frame {
                    None if self.unbind.is_some() => return End::Shutdown,
                    None => return End::Dropped(SmppError::Closed("connection closed".into())),
                    Some(Err(e)) if is_unclean_close(&e) && self.unbind.is_some() => {
                        return End::Shutdown
                    }
                    Some(Err(e)) if is_unclean_close(&e) => {
                        return End::Dropped(SmppError::Closed("connection closed".into()))
                    }
                    Some(Err(e)) => return End::Dropped(read_error(self.shared, e)),
                    Some(Ok(raw)) => {
                        if let Some(end) = self.on_pdu(raw) {
                            return end;
                        }
                    }
                },
                _ = &mut self.link.writer => {
                    return End::Dropped(SmppError::Io("write to the SMSC failed".into()));
                }
                _ = &mut notified, if room => {}
                _ = sleep_until(wake) => {}
            }
            if let Some(end) = self.timers(Instant::now()) {
                return end;
            }
        }
    }

    /// Submits queued segments while the window, the rate and any throttling pause allow.
    fn fill(&mut self, now: Instant, wake: &mut Instant) {
        if let Some(until) = self.paused_until {
            if now < until {
                *wake = (*wake).min(until);
                return;
            }
            self.paused_until = None;
        }
        let interval = self.send_interval();
        let window = self.window();
        let mut core = None;
        while self.outstanding.len() < window {
            if interval.is_some() && now < self.next_send_at {
                let has_work = core.get_or_insert_with(|| self.shared.core()).has_queued();
                if has_work {
                    *wake = (*wake).min(self.next_send_at);
                }
                break;
            }
            let Some((key, pdu)) = core.get_or_insert_with(|| self.shared.core()).take_next()
            else {
                break;
            };
            let sequence = self.link.next_sequence();
            self.link
                .send_command(&Command::new(CommandStatus::EsmeRok, sequence, pdu));
            self.outstanding.insert(sequence, (key, now));
            if let Some(interval) = interval {
                self.next_send_at = self.next_send_at.max(now) + interval;
            }
        }
    }

    fn timers(&mut self, now: Instant) -> Option<End> {
        let shared = self.shared;
        let config = &shared.config;
        if now >= self.next_timeout_scan {
            self.next_timeout_scan = now + scan_interval(&config.response_timeout);
            let expired: Vec<u32> = self
                .outstanding
                .iter()
                .filter(|(_, (_, sent))| *sent + config.response_timeout <= now)
                .map(|(s, _)| *s)
                .collect();
            if !expired.is_empty() {
                let mut core = self.shared.core();
                for sequence in expired {
                    if let Some((key, _)) = self.outstanding.remove(&sequence) {
                        warn!(message = %key.0, segment = key.1 + 1, sequence, "no submit_sm_resp in time; segment will be resent");
                        core.requeue(
                            key,
                            Requeue::TimedOut,
                            config.max_attempts,
                            "no submit_sm_resp in time",
                        );
                    }
                }
                drop(core);
                self.shared.work.notify_waiters();
            }
        }
        if let Some((_, sent)) = self.enquire {
            if sent + config.response_timeout <= now {
                return Some(End::Dropped(SmppError::Timeout("enquire_link_resp")));
            }
        } else if self.last_enquire + config.enquire_link_interval <= now {
            let sequence = self.link.next_sequence();
            self.link.send_command(&Command::new(
                CommandStatus::EsmeRok,
                sequence,
                Pdu::EnquireLink,
            ));
            self.enquire = Some((sequence, now));
            self.last_enquire = now;
        }
        if self.factor < 1.0 && self.last_adjust + config.throttle_pause <= now {
            self.factor = (self.factor * 2.0).min(1.0);
            self.last_adjust = now;
            debug!(role = ?self.role, factor = self.factor, "throttling eased");
        }
        if let Some(deadline) = self.draining {
            match self.unbind {
                None if self.outstanding.is_empty() || now >= deadline => {
                    let sequence = self.link.next_sequence();
                    self.link.send_command(&Command::new(
                        CommandStatus::EsmeRok,
                        sequence,
                        Pdu::Unbind,
                    ));
                    self.unbind = Some((sequence, now));
                }
                Some((_, sent)) if sent + config.response_timeout <= now => {
                    debug!("no unbind_resp in time; closing");
                    return Some(End::Shutdown);
                }
                _ => {}
            }
        }
        None
    }

    fn throttled(&mut self, now: Instant) {
        self.paused_until = Some(now + self.shared.config.throttle_pause);
        self.factor = (self.factor / 2.0).max(MIN_FACTOR);
        self.last_adjust = now;
        debug!(role = ?self.role, factor = self.factor, "throttled by the SMSC; slowing down");
    }

    fn on_pdu(&mut self, raw: RawPdu) -> Option<End> {
        match raw.command_id {
            id::SUBMIT_SM_RESP | id::GENERIC_NACK => return self.on_submit_response(raw),
            id::ENQUIRE_LINK_RESP => {
                if self.enquire.is_some_and(|(s, _)| s == raw.sequence) {
                    self.enquire = None;
                }
            }
            id::UNBIND_RESP => {
                if self.unbind.is_some_and(|(s, _)| s == raw.sequence) {
                    return Some(End::Shutdown);
                }
            }
            id::ENQUIRE_LINK => self.link.send_command(&Command::new(
                CommandStatus::EsmeRok,
                raw.sequence,
                Pdu::EnquireLinkResp,
            )),
            id::UNBIND => {
                self.link.send_command(&Command::new(
                    CommandStatus::EsmeRok,
                    raw.sequence,
                    Pdu::UnbindResp,
                ));
                return Some(if self.draining.is_some() {
                    End::Shutdown
                } else {
                    End::Dropped(SmppError::Closed("the SMSC unbound".into()))
                });
            }
            id::DELIVER_SM => self.on_deliver_sm(raw),
            other if raw.is_response() => {
                debug!(
                    command_id = format_args!("{other:#010x}"),
                    sequence = raw.sequence,
                    "unexpected response ignored"
                );
            }
            // alert_notification (0x102) takes no response; outbind on a bound session is moot.
            0x0000_0102 | 0x0000_000B => {
                trace!(
                    command_id = format_args!("{:#010x}", raw.command_id),
                    "ignored"
                );
            }
            other => {
                warn!(
                    command_id = format_args!("{other:#010x}"),
                    "unsupported command from the SMSC; generic_nack"
                );
                self.link.send(frame::generic_nack(
                    raw.sequence,
                    SmppStatus::INVALID_COMMAND_ID.0,
                ));
            }
        }
        None
    }

    fn on_submit_response(&mut self, raw: RawPdu) -> Option<End> {
        let nack = raw.command_id == id::GENERIC_NACK;
        let Some((key, _)) = self.outstanding.remove(&raw.sequence) else {
            if self.enquire.is_some_and(|(s, _)| s == raw.sequence) {
                self.enquire = None; // generic_nack to our enquire_link: the link is alive
            } else {
                debug!(
                    sequence = raw.sequence,
                    "response for an unknown sequence number ignored"
                );
            }
            return None;
        };
        let status = SmppStatus(raw.status);
        let shared = self.shared;
        let config = &shared.config;
        let now = Instant::now();
        if status.is_ok() && !nack {
            let network_id = submit_sm_message_id(&raw);
            let released = self.shared.core().on_accepted(key, network_id, now, config);
            if released {
                self.shared.work.notify_waiters();
            }
        } else if status.is_throttling() {
            self.shared
                .core()
                .requeue(key, Requeue::Throttled, config.max_attempts, "throttled");
            self.throttled(now);
            self.shared.work.notify_waiters();
        } else if status == SmppStatus::INVALID_BIND_STATUS {
            // The SMSC does not consider us bound: the message is not at fault.
            self.shared.core().requeue(
                key,
                Requeue::Dropped,
                config.max_attempts,
                "ESME_RINVBNDSTS",
            );
            self.shared.work.notify_waiters();
            return Some(End::Dropped(SmppError::Protocol(format!(
                "submit_sm answered {status}"
            ))));
        } else {
            debug!(message = %key.0, segment = key.1 + 1, %status, "submit_sm rejected");
            self.shared.core().on_rejected(key, rejection(status, nack));
        }
        None
    }

    fn on_deliver_sm(&mut self, raw: RawPdu) {
        let decoded = match raw.decode() {
            Ok(command) => match command.pdu() {
                Some(Pdu::DeliverSm(pdu)) => Some(InboundSm::from_rusmpp(pdu)),
                _ => None,
            },
            Err(error) => {
                debug!(%error, "rusmpp refused a deliver_sm; trying the lenient reader");
                None
            }
        };
        let Some(sm) = decoded.or_else(|| InboundSm::lenient(raw.body())) else {
            warn!(
                sequence = raw.sequence,
                "unreadable deliver_sm; answered ESME_RX_P_APPN"
            );
            self.link.send_command(&Command::new(
                CommandStatus::from(SmppStatus::RECEIVER_PERMANENT_ERROR.0),
                raw.sequence,
                DeliverSmResp::default(),
            ));
            return;
        };
        // Answered when the gateway is done with what it carried: a PoR once it is stored.
        // If this session is gone by then, the SMSC delivers the message again.
        let ack = if self.shared.config.answer_pors_after_store {
            let acks = self.acks_tx.clone();
            let sequence = raw.sequence;
            InboundAck::new(move |status| {
                let _ = acks.send((sequence, status));
            })
        } else {
            self.answer_deliver(raw.sequence, AckStatus::Done);
            InboundAck::none()
        };
        let released = self.shared.core().on_deliver(&sm, ack, Instant::now());
        // What needed no holding (receipts, MOs we ignore) is answered before anything else
        // goes out.
        self.flush_acks();
        if released {
            self.shared.work.notify_waiters();
        }
    }
}

impl Session<'_> {
    fn answer_deliver(&mut self, sequence: u32, status: AckStatus) {
        let status = match status {
            AckStatus::Done => SmppStatus::OK,
            AckStatus::RetryLater => SmppStatus::RECEIVER_TEMPORARY_ERROR,
        };
        self.link.send_command(&Command::new(
            CommandStatus::from(status.0),
            sequence,
            DeliverSmResp::default(),
        ));
    }

    /// Answers every `deliver_sm` whose acknowledgement has come in.
    fn flush_acks(&mut self) {
        while let Ok((sequence, status)) = self.acks_rx.try_recv() {
            self.answer_deliver(sequence, status);
        }
    }
}

/// The message_id of a `submit_sm_resp`: decoded by rusmpp, or read leniently (octets up to
/// the first NUL) when rusmpp refuses it; empty when there is none.
fn submit_sm_message_id(raw: &RawPdu) -> String {
    if let Ok(command) = raw.decode() {
        if let Some(Pdu::SubmitSmResp(resp)) = command.pdu() {
            return resp.message_id().as_str().to_string();
        }
    }
    let body = raw.body();
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

fn scan_interval(response_timeout: &Duration) -> Duration {
    (*response_timeout / 4).clamp(Duration::from_millis(5), Duration::from_millis(250))
}
