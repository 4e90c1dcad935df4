//! One CAT_TP connection, sans-IO.
//!
//! Sequence-number rules (TS 102 127 follows RDP, RFC 908): the acknowledgement number is the
//! sequence number of the last PDU received in sequence; SYN, NUL and data PDUs take a sequence
//! number and are delivered reliably (kept until acknowledged, retransmitted on timeout); a PDU
//! with only ACK (or ACK and EAK) carries the next sequence number without taking it. Every PDU
//! after the SYN carries the ACK flag. A segmented SDU goes as consecutive data PDUs, all but the
//! last with the SEG flag ("more follows").

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::pdu::{
    self, reason, Flags, Pdu, SynParams, VarPart, FIXED_HEADER_LEN, MAX_EAKS, MIN_PDU_SIZE,
};

/// Connection parameters (ours; the peer's arrive in its SYN).
#[derive(Clone, Debug)]
pub struct Config {
    /// Largest PDU we accept, header included (announced in our SYN).
    pub max_pdu_size: u16,
    /// Largest SDU we accept (announced in our SYN).
    pub max_sdu_size: u16,
    /// Our receive window, in PDUs (sent in every header).
    pub window: u16,
    /// First retransmission timeout; doubles on each retry of the same PDU, up to `max_rto`.
    pub rto: Duration,
    pub max_rto: Duration,
    /// Retransmissions of one PDU before the connection is reset with reason 5.
    pub max_retries: u32,
    /// Send a NUL PDU after this long without sending anything while open (None: never).
    pub keepalive: Option<Duration>,
    /// Identification sent in our SYN (the card's ICCID on the card side; usually empty on the
    /// server side).
    pub identification: Vec<u8>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_pdu_size: 1024,
            max_sdu_size: 65535,
            window: 8,
            rto: Duration::from_secs(1),
            max_rto: Duration::from_secs(8),
            max_retries: 5,
            keepalive: Some(Duration::from_secs(30)),
            identification: Vec::new(),
        }
    }
}

/// Which end opened the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Sent the SYN (the card).
    Client,
    /// Answered with SYN-ACK (the gateway).
    Server,
}

/// Connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Client: SYN sent, waiting for the SYN-ACK.
    SynSent,
    /// Server: SYN received and SYN-ACK sent, waiting for the ACK.
    SynRcvd,
    Open,
    /// Reset or timed out; nothing more is sent except a pending RST.
    Closed,
}

/// Why a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer sent RST with this reason code.
    PeerReset(u8),
    /// We reset with this reason code ([`Connection::close`], or a protocol error of the peer).
    LocalReset(u8),
    /// A PDU was retransmitted `max_retries` times without acknowledgement (RST reason 5 sent).
    Timeout,
    /// The peer opened a new connection from the same address (a SYN with another initial
    /// sequence number): its old link is gone without an RST (a card that re-opened its BIP
    /// channel, an address reused). Server side only.
    Superseded,
}

/// What the application learns from the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Handshake complete; the peer's SYN parameters.
    Connected(SynParams),
    /// One whole SDU, reassembled, in order, exactly once.
    Sdu(Vec<u8>),
    /// The SDU that [`Connection::send`] numbered so is acknowledged by the peer: the cumulative
    /// ACK number covers its last PDU (TS 102 127; an EAK alone frees nothing). Once per SDU,
    /// in the order sent; never for an SDU still unacknowledged when the link closes.
    SduAcked(u64),
    Closed(CloseReason),
}

/// Why [`Connection::send`] refused an SDU.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SendError {
    #[error("connection not open (state {0:?})")]
    NotOpen(State),
    #[error("SDU of {len} octets larger than the peer's max SDU size {max}")]
    SduTooLarge { len: usize, max: u16 },
    #[error("empty SDU")]
    Empty,
}

/// Counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub pdus_in: u64,
    pub pdus_out: u64,
    /// Dropped for a wrong checksum.
    pub bad_checksum: u64,
    /// Dropped as not decodable for another reason.
    pub malformed: u64,
    /// Sequenced PDUs received again (delivered once, acknowledged again).
    pub duplicates: u64,
    /// Sequenced PDUs received out of sequence and buffered (reported in EAK).
    pub out_of_order: u64,
    pub retransmits: u64,
    /// PDUs dropped because they made no sense in the state (bad ACK number, out of window).
    pub ignored: u64,
}

/// A sequenced PDU we sent or will send, kept until acknowledged.
#[derive(Clone, Debug)]
struct Segment {
    seq: u16,
    flags: Flags, // SYN / NUL / SEG, ACK added at send time where due
    syn: Option<SynParams>,
    data: Vec<u8>,
    sent_at: Option<Instant>,
    retries: u32,
    /// Reported received by an EAK: never retransmitted, freed by the cumulative ACK.
    eaked: bool,
    /// Waiting to go out again (timeout or fast retransmit).
    resend: bool,
    /// The SDU this PDU ends (set on an SDU's last segment only).
    ends_sdu: Option<u64>,
}

/// A piece of an SDU waiting for the send window.
#[derive(Debug)]
struct Queued {
    data: Vec<u8>,
    /// SEG: more segments of the same SDU follow.
    more: bool,
    sdu: u64,
}

/// `a - b` as a signed distance in sequence space.
fn seq_diff(a: u16, b: u16) -> i16 {
    a.wrapping_sub(b) as i16
}

/// Why a plain SYN must be refused before any connection is made, as the RST reason code:
/// a max PDU size below [`MIN_PDU_SIZE`] is an illegal parameter (reason 1).
pub fn syn_refusal(syn: &SynParams) -> Option<u8> {
    (syn.max_pdu_size < MIN_PDU_SIZE).then_some(reason::ILLEGAL_PARAMETERS)
}

/// One CAT_TP connection.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    state: State,
    config: Config,
    local_port: u16,
    remote_port: u16,
    peer: Option<SynParams>,
    /// The sequence number of the peer's SYN.
    peer_iss: Option<u16>,
    peer_window: u16,
    // send side
    iss: u16,
    snd_nxt: u16,
    snd_una: u16,
    /// Sequenced PDUs sent and not yet cumulatively acknowledged, in sequence order.
    unacked: VecDeque<Segment>,
    /// Segments of SDUs waiting for the send window.
    queue: VecDeque<Queued>,
    /// The number the next SDU sent gets.
    next_sdu: u64,
    // receive side
    /// Last sequence number received in sequence.
    rcv_cur: u16,
    /// Received beyond `rcv_cur + 1`, waiting for the gap to fill.
    ooo: HashMap<u16, Pdu>,
    /// Segments of the SDU being reassembled.
    reassembly: Vec<u8>,
    ack_pending: bool,
    rst_pending: Option<u8>,
    last_tx: Option<Instant>,
    nul_pending: bool,
    stats: Stats,
}

impl Connection {
    /// Client side: start the handshake (the SYN goes out on the next [`Connection::poll_transmit`]).
    /// `iss` is the initial sequence number (the caller picks it, random in production).
    pub fn connect(config: Config, local_port: u16, remote_port: u16, iss: u16) -> Connection {
        let mut c = Self::new(
            Role::Client,
            State::SynSent,
            config,
            local_port,
            remote_port,
            iss,
        );
        let syn = c.our_syn();
        c.push_sequenced(Flags::SYN, Some(syn), Vec::new(), None);
        c
    }

    /// Server side: a SYN PDU arrived (already decoded); answer with SYN-ACK.
    /// Returns `None` (and nothing is sent) if the PDU is not a plain SYN. A SYN whose max PDU
    /// size is below [`MIN_PDU_SIZE`] is the caller's to refuse ([`syn_refusal`]).
    pub fn accept(config: Config, syn: &Pdu, iss: u16) -> Option<Connection> {
        let VarPart::Syn(params) = &syn.var else {
            return None;
        };
        if syn.flags.contains(Flags::ACK) || syn.flags.contains(Flags::RST) {
            return None;
        }
        let mut c = Self::new(
            Role::Server,
            State::SynRcvd,
            config,
            syn.dst_port,
            syn.src_port,
            iss,
        );
        c.peer = Some(params.clone());
        c.peer_iss = Some(syn.seq);
        c.peer_window = syn.window.max(1);
        c.rcv_cur = syn.seq;
        c.stats.pdus_in += 1;
        let ours = c.our_syn();
        c.push_sequenced(Flags::SYN, Some(ours), Vec::new(), None);
        Some(c)
    }

    fn new(
        role: Role,
        state: State,
        config: Config,
        local_port: u16,
        remote_port: u16,
        iss: u16,
    ) -> Connection {
        Connection {
            role,
            state,
            config,
            local_port,
            remote_port,
            peer: None,
            peer_iss: None,
            peer_window: 1,
            iss,
            snd_nxt: iss,
            snd_una: iss,
            unacked: VecDeque::new(),
            queue: VecDeque::new(),
            next_sdu: 0,
            rcv_cur: 0,
            ooo: HashMap::new(),
            reassembly: Vec::new(),
            ack_pending: false,
            rst_pending: None,
            last_tx: None,
            nul_pending: false,
            stats: Stats::default(),
        }
    }

    fn our_syn(&self) -> SynParams {
        SynParams {
            max_pdu_size: self.config.max_pdu_size,
            max_sdu_size: self.config.max_sdu_size,
            identification: self.config.identification.clone(),
        }
    }

    fn push_sequenced(
        &mut self,
        flags: Flags,
        syn: Option<SynParams>,
        data: Vec<u8>,
        ends_sdu: Option<u64>,
    ) {
        let seq = self.snd_nxt;
        self.snd_nxt = self.snd_nxt.wrapping_add(1);
        self.unacked.push_back(Segment {
            seq,
            flags,
            syn,
            data,
            sent_at: None,
            retries: 0,
            eaked: false,
            resend: true,
            ends_sdu,
        });
    }

    pub fn state(&self) -> State {
        self.state
    }
    pub fn role(&self) -> Role {
        self.role
    }
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// The sequence number of the peer's SYN once known.
    pub fn peer_iss(&self) -> Option<u16> {
        self.peer_iss
    }
    /// The peer's SYN parameters once known.
    pub fn peer_params(&self) -> Option<&SynParams> {
        self.peer.as_ref()
    }
    pub fn local_port(&self) -> u16 {
        self.local_port
    }
    pub fn remote_port(&self) -> u16 {
        self.remote_port
    }
    /// Nothing left to send or to be acknowledged.
    pub fn is_idle(&self) -> bool {
        self.unacked.is_empty() && self.queue.is_empty() && !self.ack_pending
    }

    /// Queue an SDU; it is cut into PDUs that fit the peer's max PDU size (SEG on all but the last).
    /// Returns the SDU's number (0, 1, ... on this connection), named again by
    /// [`Event::SduAcked`] once the peer has acknowledged all of it.
    pub fn send(&mut self, sdu: &[u8]) -> Result<u64, SendError> {
        if self.state != State::Open {
            return Err(SendError::NotOpen(self.state));
        }
        if sdu.is_empty() {
            return Err(SendError::Empty);
        }
        let peer = self.peer.as_ref().expect("open implies peer SYN seen");
        if sdu.len() > peer.max_sdu_size as usize {
            return Err(SendError::SduTooLarge {
                len: sdu.len(),
                max: peer.max_sdu_size,
            });
        }
        let room = (peer.max_pdu_size as usize)
            .saturating_sub(FIXED_HEADER_LEN)
            .max(1);
        let n = self.next_sdu;
        self.next_sdu += 1;
        let mut chunks = sdu.chunks(room).peekable();
        while let Some(c) = chunks.next() {
            self.queue.push_back(Queued {
                data: c.to_vec(),
                more: chunks.peek().is_some(),
                sdu: n,
            });
        }
        Ok(n)
    }

    /// Reset the connection with `reason` (0 for a normal ending). The RST goes out on the next
    /// [`Connection::poll_transmit`]; returns the Closed event.
    pub fn close(&mut self, reason: u8) -> Option<Event> {
        if self.state == State::Closed {
            return None;
        }
        self.abort(reason);
        Some(Event::Closed(CloseReason::LocalReset(reason)))
    }

    fn abort(&mut self, reason: u8) {
        self.state = State::Closed;
        self.rst_pending = Some(reason);
        self.unacked.clear();
        self.queue.clear();
        self.ooo.clear();
        self.ack_pending = false;
        self.nul_pending = false;
    }

    /// A datagram from the peer. Bad checksums and malformed PDUs are dropped and counted.
    pub fn handle_pdu(&mut self, now: Instant, bytes: &[u8]) -> Vec<Event> {
        match Pdu::decode(bytes) {
            Ok(p) => self.handle_decoded(now, p),
            Err(pdu::DecodeError::Checksum { .. }) => {
                self.stats.bad_checksum += 1;
                Vec::new()
            }
            Err(_) => {
                self.stats.malformed += 1;
                Vec::new()
            }
        }
    }

    /// An already decoded (and checksum-verified) PDU from the peer.
    pub fn handle_decoded(&mut self, now: Instant, p: Pdu) -> Vec<Event> {
        let _ = now;
        self.stats.pdus_in += 1;
        let mut events = Vec::new();
        if self.state == State::Closed {
            return events;
        }
        if p.flags.contains(Flags::RST) {
            let code = match p.var {
                VarPart::Rst(r) => r,
                _ => reason::NORMAL,
            };
            self.abort(code);
            self.rst_pending = None;
            events.push(Event::Closed(CloseReason::PeerReset(code)));
            return events;
        }
        match self.state {
            State::SynSent => {
                let ok = p.flags.contains(Flags::SYN)
                    && p.flags.contains(Flags::ACK)
                    && p.ack == self.iss;
                let VarPart::Syn(params) = &p.var else {
                    self.stats.ignored += 1;
                    return events;
                };
                if !ok {
                    self.stats.ignored += 1;
                    return events;
                }
                if params.max_pdu_size < MIN_PDU_SIZE {
                    // Not even a SYN fits in the PDUs it takes: illegal parameters.
                    self.abort(reason::ILLEGAL_PARAMETERS);
                    events.push(Event::Closed(CloseReason::LocalReset(
                        reason::ILLEGAL_PARAMETERS,
                    )));
                    return events;
                }
                self.peer = Some(params.clone());
                self.peer_iss = Some(p.seq);
                self.rcv_cur = p.seq;
                self.peer_window = p.window.max(1);
                // Acknowledges our SYN only: no SDU can be outstanding yet.
                self.ack_through(p.ack, &mut events);
                self.state = State::Open;
                self.ack_pending = true;
                events.push(Event::Connected(params.clone()));
                return events;
            }
            State::SynRcvd => {
                if p.flags.contains(Flags::SYN) {
                    // The client did not get our SYN-ACK: send it again now.
                    if !p.flags.contains(Flags::ACK) {
                        for s in self.unacked.iter_mut() {
                            s.resend = true;
                        }
                    } else {
                        self.stats.ignored += 1;
                    }
                    return events;
                }
                if !p.flags.contains(Flags::ACK) || seq_diff(p.ack, self.iss) < 0 {
                    self.stats.ignored += 1;
                    return events;
                }
                self.state = State::Open;
                let peer = self.peer.clone().unwrap_or_default();
                events.push(Event::Connected(peer));
            }
            State::Open => {
                if p.flags.contains(Flags::SYN) {
                    // A repeated SYN-ACK (our ACK was lost) or SYN: acknowledge again.
                    self.stats.duplicates += 1;
                    self.ack_pending = true;
                    return events;
                }
                if !p.flags.contains(Flags::ACK) {
                    self.stats.ignored += 1;
                    return events;
                }
            }
            State::Closed => return events,
        }
        // Open from here on, ACK flag set.
        self.peer_window = p.window.max(1);
        // Cumulative acknowledgement, if it acknowledges something we sent.
        let in_range =
            seq_diff(p.ack, self.snd_una.wrapping_sub(1)) >= 0 && seq_diff(p.ack, self.snd_nxt) < 0;
        if in_range {
            self.ack_through(p.ack, &mut events);
        }
        if let VarPart::Eak(list) = &p.var {
            self.handle_eak(list);
        }
        let sequenced = !p.data.is_empty() || p.flags.contains(Flags::NUL);
        if sequenced {
            self.receive_sequenced(p, &mut events);
        }
        events
    }

    /// Frees what the cumulative ACK number `ack` covers. An SDU is acknowledged when its last
    /// PDU is freed here: its segments are consecutive and freed in order, so all are.
    fn ack_through(&mut self, ack: u16, events: &mut Vec<Event>) {
        while let Some(front) = self.unacked.front() {
            if seq_diff(ack, front.seq) >= 0 {
                if let Some(n) = front.ends_sdu {
                    events.push(Event::SduAcked(n));
                }
                self.unacked.pop_front();
            } else {
                break;
            }
        }
        self.snd_una = self.unacked.front().map_or(self.snd_nxt, |s| s.seq);
    }

    fn handle_eak(&mut self, list: &[u16]) {
        let mut highest: Option<u16> = None;
        for &n in list {
            if let Some(s) = self.unacked.iter_mut().find(|s| s.seq == n) {
                s.eaked = true;
                s.resend = false;
                if highest.is_none_or(|h| seq_diff(n, h) > 0) {
                    highest = Some(n);
                }
            }
        }
        // Fast retransmit: everything below the highest reported PDU that has not been reported
        // is missing at the peer. Once per transmission.
        if let Some(h) = highest {
            for s in self.unacked.iter_mut() {
                if seq_diff(s.seq, h) >= 0 {
                    break;
                }
                if !s.eaked && s.sent_at.is_some() && !s.resend && s.retries == 0 {
                    s.resend = true;
                }
            }
        }
    }

    fn receive_sequenced(&mut self, p: Pdu, events: &mut Vec<Event>) {
        self.ack_pending = true;
        let d = seq_diff(p.seq, self.rcv_cur);
        if d <= 0 {
            self.stats.duplicates += 1;
            return;
        }
        if d as u16 > self.config.window.max(1) {
            self.stats.ignored += 1;
            return;
        }
        if d > 1 {
            if self.ooo.insert(p.seq, p).is_some() {
                self.stats.duplicates += 1;
            } else {
                self.stats.out_of_order += 1;
            }
            return;
        }
        let mut next = Some(p);
        while let Some(p) = next {
            self.rcv_cur = p.seq;
            if !p.data.is_empty() && !self.deliver(p, events) {
                return;
            }
            next = self.ooo.remove(&self.rcv_cur.wrapping_add(1));
        }
    }

    /// Returns false if the connection was reset (SDU over our max).
    fn deliver(&mut self, p: Pdu, events: &mut Vec<Event>) -> bool {
        self.reassembly.extend_from_slice(&p.data);
        if self.reassembly.len() > self.config.max_sdu_size as usize {
            self.abort(reason::UNEXPECTED_PDU);
            events.push(Event::Closed(CloseReason::LocalReset(
                reason::UNEXPECTED_PDU,
            )));
            return false;
        }
        if !p.flags.contains(Flags::SEG) {
            events.push(Event::Sdu(std::mem::take(&mut self.reassembly)));
        }
        true
    }

    fn rto_for(&self, retries: u32) -> Duration {
        let mut rto = self.config.rto;
        for _ in 0..retries {
            rto = (rto * 2).min(self.config.max_rto);
        }
        rto
    }

    /// When [`Connection::handle_timeout`] wants to be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut min = |x: Instant| {
            t = Some(t.map_or(x, |y: Instant| y.min(x)));
        };
        for s in &self.unacked {
            if let (Some(at), false, false) = (s.sent_at, s.eaked, s.resend) {
                min(at + self.rto_for(s.retries));
            }
        }
        if let (State::Open, Some(ka), Some(last)) =
            (self.state, self.config.keepalive, self.last_tx)
        {
            if self.unacked.is_empty() && !self.nul_pending {
                min(last + ka);
            }
        }
        t
    }

    /// Timers: retransmissions, retry exhaustion, keep-alive.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Event> {
        let mut events = Vec::new();
        if self.state == State::Closed {
            return events;
        }
        let mut exhausted = false;
        let max_retries = self.config.max_retries;
        let rtos: Vec<Duration> = self
            .unacked
            .iter()
            .map(|s| self.rto_for(s.retries))
            .collect();
        for (s, rto) in self.unacked.iter_mut().zip(rtos) {
            if let (Some(at), false, false) = (s.sent_at, s.eaked, s.resend) {
                if now >= at + rto {
                    if s.retries >= max_retries {
                        exhausted = true;
                    } else {
                        s.resend = true;
                    }
                }
            }
        }
        if exhausted {
            self.abort(reason::MAX_RETRIES);
            events.push(Event::Closed(CloseReason::Timeout));
            return events;
        }
        if let (State::Open, Some(ka), Some(last)) =
            (self.state, self.config.keepalive, self.last_tx)
        {
            if self.unacked.is_empty() && !self.nul_pending && now >= last + ka {
                self.nul_pending = true;
            }
        }
        events
    }

    fn header(&self, flags: Flags, seq: u16) -> Pdu {
        Pdu {
            flags,
            version: 0,
            src_port: self.local_port,
            dst_port: self.remote_port,
            seq,
            ack: self.rcv_cur,
            window: self.config.window,
            var: VarPart::None,
            data: Vec::new(),
        }
    }

    fn emit(&mut self, now: Instant, pdu: Pdu) -> Option<Vec<u8>> {
        self.last_tx = Some(now);
        self.stats.pdus_out += 1;
        // Our own PDUs always encode: identification and EAK lists are bounded on the way in.
        pdu.encode().ok()
    }

    /// The next datagram to send to the peer, if any.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Vec<u8>> {
        if let Some(r) = self.rst_pending.take() {
            let mut p = self.header(Flags::RST, self.snd_nxt);
            if self.peer.is_some() {
                p.flags = Flags::RST | Flags::ACK;
            }
            p.var = VarPart::Rst(r);
            return self.emit(now, p);
        }
        if self.state == State::Closed {
            return None;
        }
        // Retransmissions and first transmissions of sequenced PDUs already numbered.
        let ack_flag = self.peer.is_some();
        if let Some(i) = self.unacked.iter().position(|s| s.resend) {
            let s = &mut self.unacked[i];
            s.resend = false;
            if s.sent_at.is_some() {
                s.retries += 1;
                self.stats.retransmits += 1;
            }
            s.sent_at = Some(now);
            let s = s.clone();
            let mut flags = s.flags;
            if ack_flag {
                flags = flags | Flags::ACK;
            }
            let mut p = self.header(flags, s.seq);
            if let Some(syn) = s.syn {
                p.var = VarPart::Syn(syn);
            }
            p.data = s.data;
            if !self.has_ooo() {
                self.ack_pending = false;
            }
            return self.emit(now, p);
        }
        if self.state != State::Open {
            return None;
        }
        // New data within the peer's window.
        let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
        if in_flight < self.peer_window && !self.queue.is_empty() {
            if let Some(q) = self.queue.pop_front() {
                let flags = if q.more { Flags::SEG } else { Flags::empty() };
                let ends = (!q.more).then_some(q.sdu);
                self.push_sequenced(flags, None, q.data, ends);
            }
            return self.poll_transmit(now);
        }
        if self.nul_pending && in_flight < self.peer_window {
            self.nul_pending = false;
            self.push_sequenced(Flags::NUL, None, Vec::new(), None);
            return self.poll_transmit(now);
        }
        if self.ack_pending {
            self.ack_pending = false;
            let mut p = self.header(Flags::ACK, self.snd_nxt);
            // The EAK list is part of the header, so the whole PDU must fit the peer's max PDU
            // size: (max PDU - 18) / 2 numbers at most, and never more than the one-octet header
            // length allows. The lowest numbers go first (they are the ones resent soonest).
            let room = self.peer.as_ref().map_or(0, |peer| {
                (usize::from(peer.max_pdu_size).saturating_sub(FIXED_HEADER_LEN) / 2).min(MAX_EAKS)
            });
            if self.has_ooo() && room > 0 {
                let mut list: Vec<u16> = self.ooo.keys().copied().collect();
                let base = self.rcv_cur;
                list.sort_by_key(|n| n.wrapping_sub(base));
                list.truncate(room);
                p.flags = Flags::ACK | Flags::EAK;
                p.var = VarPart::Eak(list);
            }
            return self.emit(now, p);
        }
        None
    }

    fn has_ooo(&self) -> bool {
        !self.ooo.is_empty()
    }
}
