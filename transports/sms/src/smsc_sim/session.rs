//! One ESME connection: a reader task that handles PDUs inline, and a writer task fed by a
//! channel.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use rusmpp::decode::DecodeWithLength;
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::delivery::{MsgMeta, Submitted};
use super::pdu::{self, ids, next_frame, Addr, Framing, Header};
use super::rng::Fault;
use super::router::{Out, SessionOut};
use super::server::Shared;
use super::stats::Counters;

const READ_CHUNK: usize = 16 * 1024;
const WRITE_BATCH: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Transmitter,
    Receiver,
    Transceiver,
}

impl Mode {
    fn can_submit(self) -> bool {
        self != Mode::Receiver
    }
    fn can_receive(self) -> bool {
        self != Mode::Transmitter
    }
}

enum State {
    Open,
    Bound { mode: Mode, system_id: Arc<str> },
}

enum Flow {
    Continue,
    Close,
}

struct Session {
    shared: Arc<Shared>,
    out: Arc<SessionOut>,
    state: State,
}

/// Serves one connection (the two halves of a TCP or TLS stream) until the peer leaves,
/// unbinds, sends unframeable bytes, goes silent, or the simulator shuts down.
pub(crate) async fn run<R, W>(
    shared: Arc<Shared>,
    mut reader: R,
    writer: W,
    _done: mpsc::Sender<()>,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    Counters::inc(&shared.counters.sessions_open);
    let id = shared.next_session_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let out = Arc::new(SessionOut::new(id, tx, shared.config.deliver_window));
    let token = super::router::lock(&shared.sessions).child_token();
    let epoch = Instant::now();
    let last_rx = Arc::new(AtomicU64::new(0));
    let writer_task = tokio::spawn(write_loop(
        shared.clone(),
        writer,
        rx,
        out.clone(),
        token.clone(),
        last_rx.clone(),
        epoch,
    ));

    let mut session = Session {
        shared: shared.clone(),
        out: out.clone(),
        state: State::Open,
    };
    let max = shared.config.max_pdu_len;
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    'read: loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            _ = token.cancelled() => break,
            r = reader.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
        }
        last_rx.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        loop {
            match next_frame(&mut buf, max) {
                Framing::Incomplete => break,
                Framing::Invalid { sequence } => {
                    tracing::debug!(session = id, "unframeable command_length, closing");
                    session.nack(sequence, CommandStatus::EsmeRinvcmdlen);
                    break 'read;
                }
                Framing::Frame(header, frame) => {
                    if let Flow::Close = session.handle(header, frame) {
                        break 'read;
                    }
                }
            }
        }
    }

    // Cleanup: leave the rotation, let the writer flush, re-route what was not acknowledged.
    if let State::Bound { system_id, mode } = &session.state {
        if mode.can_receive() {
            shared.router.unregister(system_id, id);
        }
    }
    let _ = out.tx.send(Out::Close);
    let _ = writer_task.await;
    let unacked = out.take_outstanding();
    if let State::Bound { system_id, .. } = &session.state {
        if shared.config.redeliver_unacked && !shared.root.is_cancelled() {
            for pdu in unacked {
                Counters::inc(&shared.counters.deliver_redelivered);
                shared.router.redeliver(system_id, pdu, &shared.counters);
            }
        }
    }
    shared
        .counters
        .sessions_open
        .fetch_sub(1, Ordering::Relaxed);
    tracing::debug!(session = id, "session closed");
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    out: Arc<SessionOut>,
    token: CancellationToken,
    last_rx: Arc<AtomicU64>,
    epoch: Instant,
) {
    let probe = shared.config.enquire_link_interval;
    let mut tick = tokio::time::interval(probe.unwrap_or(Duration::from_secs(3600)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    let mut broken = false;
    // When our enquire_link went out (ms since `epoch`), while unanswered.
    let mut probe_sent: Option<u64> = None;
    'write: loop {
        let first = tokio::select! {
            biased;
            msg = rx.recv() => msg,
            _ = shared.root.cancelled() => break 'write,
            _ = token.cancelled() => break 'write,
            _ = tick.tick(), if probe.is_some() => {
                let interval = probe.unwrap_or_default().as_millis() as u64;
                let now = epoch.elapsed().as_millis() as u64;
                let last = last_rx.load(Ordering::Relaxed);
                // Closed only for leaving our enquire_link unanswered for an interval (never
                // for a silence the simulator did not ask about: a late tick on a loaded
                // machine is not the ESME's fault).
                match probe_sent {
                    Some(sent) if last >= sent => probe_sent = None,
                    Some(sent) if now.saturating_sub(sent) >= interval => {
                        tracing::debug!(session = out.id, "no answer to enquire_link, closing");
                        token.cancel();
                        break 'write;
                    }
                    Some(_) => continue,
                    None => {}
                }
                if now.saturating_sub(last) >= interval {
                    probe_sent = Some(now);
                    Some(Out::Header(0x0000_0015, 0, out.next_sequence()))
                } else {
                    continue;
                }
            }
        };
        let Some(first) = first else {
            // Channel closed: nothing more can come.
            break;
        };
        let mut next = Some(first);
        let mut close = false;
        // Batch whatever is queued into one write.
        while let Some(msg) = next.take() {
            match msg {
                Out::Raw(bytes) => buf.extend_from_slice(&bytes),
                Out::Header(id, status, seq) => pdu::put_header(&mut buf, 16, id, status, seq),
                Out::SubmitResp(seq, message_id) => {
                    pdu::put_submit_sm_resp(&mut buf, seq, message_id)
                }
                Out::Cmd(cmd) => pdu::encode_into(&cmd, &mut buf),
                Out::Close => {
                    close = true;
                    break;
                }
            }
            if buf.len() >= WRITE_BATCH {
                break;
            }
            next = rx.try_recv().ok();
        }
        if !buf.is_empty() {
            // flush: a TLS stream may keep records buffered after write_all (no-op for TCP).
            let written = match writer.write_all(&buf).await {
                Ok(()) => writer.flush().await,
                Err(e) => Err(e),
            };
            if written.is_err() {
                token.cancel();
                broken = true;
                break;
            }
            buf.clear();
        }
        if close {
            break;
        }
    }
    if shared.root.is_cancelled() && out.bound.load(Ordering::Relaxed) && !broken {
        // The simulator shuts down: say so before closing.
        let unbind = pdu::header_only(0x0000_0006, 0, out.next_sequence());
        if writer.write_all(&unbind).await.is_ok() {
            let _ = writer.flush().await;
        }
    }
    let _ = writer.shutdown().await;
    // Anything still queued is not written; outstanding deliver_sm are re-routed by the
    // reader's cleanup.
    rx.close();
}

impl Session {
    fn send(&self, msg: Out) {
        let _ = self.out.tx.send(msg);
    }

    fn nack(&self, sequence: u32, status: CommandStatus) {
        Counters::inc(&self.shared.counters.generic_nacks);
        self.send(Out::Header(ids::GENERIC_NACK, u32::from(status), sequence));
    }

    /// A response with no body (error statuses, SMPP 3.4).
    fn respond_status(&self, header: &Header, status: CommandStatus) {
        self.send(Out::Header(
            header.id | ids::RESPONSE_BIT,
            u32::from(status),
            header.sequence,
        ));
    }

    fn handle(&mut self, header: Header, mut frame: BytesMut) -> Flow {
        if header.id & ids::RESPONSE_BIT != 0 {
            return self.response(&header);
        }
        frame.advance(4);
        let length = frame.len();
        // The decoder is not ours: a panic in it must not take the session down.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Command::decode(&mut frame, length)
        }));
        let parts = match decoded {
            Ok(Ok((command, _))) => command.into_parts(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, id = header.id, "undecodable PDU");
                self.nack(header.sequence, CommandStatus::EsmeRinvcmdlen);
                return Flow::Continue;
            }
            Err(_) => {
                tracing::warn!(id = header.id, "PDU decoder panicked");
                self.nack(header.sequence, CommandStatus::EsmeRinvcmdlen);
                return Flow::Continue;
            }
        };
        let Some(body) = parts.pdu else {
            return match header.id {
                0x0000_0015 => self.enquire_link(&header),
                0x0000_0006 => self.unbind(&header),
                // A known request whose body is missing or has no place (enquire_link with a
                // body decodes the same way).
                _ if CommandId::from(header.id) != CommandId::Other(header.id) => {
                    self.nack(header.sequence, CommandStatus::EsmeRinvcmdlen);
                    Flow::Continue
                }
                _ => {
                    self.nack(header.sequence, CommandStatus::EsmeRinvcmdid);
                    Flow::Continue
                }
            };
        };
        match body {
            Pdu::BindTransmitter(b) => self.bind(
                &header,
                Mode::Transmitter,
                b.system_id.as_str(),
                b.password.as_str(),
            ),
            Pdu::BindReceiver(b) => self.bind(
                &header,
                Mode::Receiver,
                b.system_id.as_str(),
                b.password.as_str(),
            ),
            Pdu::BindTransceiver(b) => self.bind(
                &header,
                Mode::Transceiver,
                b.system_id.as_str(),
                b.password.as_str(),
            ),
            Pdu::SubmitSm(s) => self.submit(&header, s),
            Pdu::EnquireLink => self.enquire_link(&header),
            Pdu::Unbind => self.unbind(&header),
            Pdu::Other { .. } => {
                self.nack(header.sequence, CommandStatus::EsmeRinvcmdid);
                Flow::Continue
            }
            // Requests this SMSC does not offer (data_sm, query_sm, submit_multi, outbind, an
            // ESME's deliver_sm, ...).
            _ => {
                self.nack(header.sequence, CommandStatus::EsmeRinvcmdid);
                Flow::Continue
            }
        }
    }

    fn response(&mut self, header: &Header) -> Flow {
        let c = &self.shared.counters;
        match header.id {
            ids::DELIVER_SM_RESP if self.out.settle(header.sequence) => {
                if header.status == 0 {
                    Counters::inc(&c.deliver_acked);
                } else {
                    Counters::inc(&c.deliver_rejected);
                }
            }
            ids::GENERIC_NACK if self.out.settle(header.sequence) => {
                Counters::inc(&c.deliver_rejected);
            }
            ids::UNBIND_RESP => return Flow::Close,
            // enquire_link_resp: the read itself refreshed the idle clock.
            ids::ENQUIRE_LINK_RESP => {}
            _ => {}
        }
        Flow::Continue
    }

    fn enquire_link(&self, header: &Header) -> Flow {
        Counters::inc(&self.shared.counters.enquire_links);
        self.send(Out::Header(ids::ENQUIRE_LINK_RESP, 0, header.sequence));
        Flow::Continue
    }

    fn unbind(&self, header: &Header) -> Flow {
        self.send(Out::Header(ids::UNBIND_RESP, 0, header.sequence));
        Flow::Close
    }

    fn bind(&mut self, header: &Header, mode: Mode, system_id: &str, password: &str) -> Flow {
        let c = &self.shared.counters;
        if matches!(self.state, State::Bound { .. }) {
            Counters::inc(&c.bind_failures);
            self.respond_status(header, CommandStatus::EsmeRalybnd);
            return Flow::Continue;
        }
        let verdict = match &self.shared.config.credentials {
            _ if self.shared.root.is_cancelled() => Err(CommandStatus::EsmeRbindfail),
            None => Ok(()),
            Some(accounts) => match accounts.iter().find(|a| a.system_id == system_id) {
                None => Err(CommandStatus::EsmeRbindfail),
                Some(a) if a.password != password => Err(CommandStatus::EsmeRinvpaswd),
                Some(_) => Ok(()),
            },
        };
        if let Err(status) = verdict {
            Counters::inc(&c.bind_failures);
            tracing::debug!(system_id, ?status, "bind refused");
            self.respond_status(header, status);
            return Flow::Continue;
        }
        Counters::inc(&c.binds);
        let system_id: Arc<str> = Arc::from(system_id);
        self.send(Out::Cmd(Box::new(pdu::bind_resp(
            CommandId::from(header.id),
            header.sequence,
            &self.shared.config.system_id,
        ))));
        self.out.bound.store(true, Ordering::Relaxed);
        if mode.can_receive() {
            // After the bind_resp is queued: the backlog follows it.
            self.shared.router.register(&system_id, self.out.clone(), c);
        }
        self.state = State::Bound { mode, system_id };
        Flow::Continue
    }

    fn submit(&mut self, header: &Header, s: rusmpp::pdus::SubmitSm) -> Flow {
        let shared = self.shared.clone();
        let c = &shared.counters;
        Counters::inc(&c.submits_received);
        let system_id = match &self.state {
            State::Bound { mode, system_id } if mode.can_submit() => system_id.clone(),
            _ => {
                Counters::inc(&c.submits_rejected);
                self.respond_status(header, CommandStatus::EsmeRinvbndsts);
                return Flow::Continue;
            }
        };
        if s.destination_addr
            .as_str()
            .trim_start_matches('+')
            .is_empty()
        {
            Counters::inc(&c.submits_rejected);
            self.respond_status(header, CommandStatus::EsmeRinvdstadr);
            return Flow::Continue;
        }
        let fault = shared.faults.decide();
        if fault == Fault::Throttle {
            Counters::inc(&c.submits_throttled);
            self.respond_status(header, CommandStatus::EsmeRthrottled);
            return Flow::Continue;
        }
        let message_id = shared.next_message_id();
        self.send(Out::SubmitResp(header.sequence, message_id));
        Counters::inc(&c.submits_accepted);

        let mut data = s.short_message().clone().into_bytes();
        if data.is_empty() {
            if let Some(payload) = s.tlvs().iter().find_map(|t| match t.value() {
                Some(rusmpp::tlvs::TlvValue::MessagePayload(p)) => Some(p.value.clone()),
                _ => None,
            }) {
                data = payload.into_bytes();
            }
        }
        let esm_class = u8::from(s.esm_class);
        let sub = Submitted {
            meta: MsgMeta {
                system_id,
                message_id,
                submit_time: pdu::unix_now(),
                registered_delivery: u8::from(s.registered_delivery),
                esme: Addr {
                    ton: u8::from(s.source_addr_ton),
                    npi: u8::from(s.source_addr_npi),
                    addr: s.source_addr,
                },
                handset: Addr {
                    ton: u8::from(s.dest_addr_ton),
                    npi: u8::from(s.dest_addr_npi),
                    addr: s.destination_addr,
                },
            },
            protocol_id: s.protocol_id,
            udhi: esm_class & 0x40 != 0,
            data,
        };
        let base = shared.config.delivery_delay;
        match fault {
            Fault::Drop => Counters::inc(&c.submits_dropped),
            Fault::Delay(extra) => {
                Counters::inc(&c.submits_delayed);
                schedule(shared.clone(), sub, base + extra);
            }
            _ if !base.is_zero() => schedule(shared.clone(), sub, base),
            _ => shared.deliver(sub),
        }
        Flow::Continue
    }
}

fn schedule(shared: Arc<Shared>, sub: Submitted, delay: Duration) {
    tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = shared.root.cancelled() => {}
            _ = tokio::time::sleep(delay) => shared.deliver(sub),
        }
    });
}
