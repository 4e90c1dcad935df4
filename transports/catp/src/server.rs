//! The gateway's CAT_TP endpoint: many connections behind one datagram socket, keyed by the peer's
//! address (any `A: Eq + Hash + Clone`, `SocketAddr` in production).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::time::Instant;

use crate::conn::{CloseReason, Config, Connection, Event, SendError, State};
use crate::pdu::{reason, DecodeError, Flags, Pdu, VarPart};

/// Endpoint counters (per-connection ones are in each [`Connection`]'s stats).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Datagrams dropped for a wrong checksum.
    pub bad_checksum: u64,
    /// Datagrams dropped as not CAT_TP.
    pub malformed: u64,
    /// Connections accepted (SYN answered).
    pub accepted: u64,
    /// SYNs refused (connection limit).
    pub refused: u64,
    /// SYNs refused for illegal parameters (a max PDU size below the SYN header's).
    pub illegal: u64,
    /// Non-SYN PDUs from peers without a connection (answered with RST).
    pub unknown_peer: u64,
    /// Connections replaced by a new SYN from the same address.
    pub superseded: u64,
}

#[derive(Debug)]
struct Entry {
    conn: Connection,
    id: u64,
    deadline: Option<Instant>,
    /// The connection's numbers of its SDUs not yet acknowledged -> the server's numbers.
    sdus: HashMap<u64, u64>,
}

impl Entry {
    /// The server's number for an SDU the connection reports acknowledged.
    fn translate(&mut self, e: Event) -> Event {
        match e {
            Event::SduAcked(n) => Event::SduAcked(self.sdus.remove(&n).unwrap_or(n)),
            e => e,
        }
    }
}

/// CAT_TP server endpoint.
#[derive(Debug)]
pub struct Server<A> {
    config: Config,
    max_connections: usize,
    conns: HashMap<A, Entry>,
    /// Every connection's next timer, earliest first: (deadline, connection id).
    timers: BTreeSet<(Instant, u64)>,
    by_id: HashMap<u64, A>,
    next_id: u64,
    next_iss: u16,
    /// SDU numbers are the server's, unique over all its connections (a connection's own start
    /// at 0), so that an acknowledgement never names an SDU of an earlier link at the address.
    next_sdu: u64,
    events: VecDeque<(A, Event)>,
    /// Datagrams not owned by a connection (RST to unknown peers).
    loose: VecDeque<(A, Vec<u8>)>,
    /// Connections that may have something to send.
    dirty: VecDeque<A>,
    dirty_set: HashSet<A>,
    stats: ServerStats,
}

impl<A: Eq + Hash + Clone> Server<A> {
    /// `iss_seed` seeds the initial sequence numbers (pass something random in production).
    pub fn new(config: Config, max_connections: usize, iss_seed: u16) -> Self {
        Server {
            config,
            max_connections,
            conns: HashMap::new(),
            timers: BTreeSet::new(),
            by_id: HashMap::new(),
            next_id: 0,
            next_iss: iss_seed,
            next_sdu: 0,
            events: VecDeque::new(),
            loose: VecDeque::new(),
            dirty: VecDeque::new(),
            dirty_set: HashSet::new(),
            stats: ServerStats::default(),
        }
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }
    pub fn connection(&self, addr: &A) -> Option<&Connection> {
        self.conns.get(addr).map(|e| &e.conn)
    }
    /// Connections held (including closed ones with an RST still to send).
    pub fn len(&self) -> usize {
        self.conns.len()
    }
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Re-read a connection's timer after anything that may have changed it.
    fn refresh(&mut self, addr: &A) {
        if let Some(e) = self.conns.get_mut(addr) {
            let new = e.conn.poll_timeout();
            if new != e.deadline {
                if let Some(old) = e.deadline {
                    self.timers.remove(&(old, e.id));
                }
                if let Some(t) = new {
                    self.timers.insert((t, e.id));
                }
                e.deadline = new;
            }
        }
    }

    fn remove(&mut self, addr: &A) {
        if let Some(e) = self.conns.remove(addr) {
            if let Some(t) = e.deadline {
                self.timers.remove(&(t, e.id));
            }
            self.by_id.remove(&e.id);
        }
    }

    fn mark(&mut self, addr: &A) {
        if self.dirty_set.insert(addr.clone()) {
            self.dirty.push_back(addr.clone());
        }
    }

    /// A datagram arrived from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: A, bytes: &[u8]) {
        let pdu = match Pdu::decode(bytes) {
            Ok(p) => p,
            Err(DecodeError::Checksum { .. }) => {
                self.stats.bad_checksum += 1;
                if let Some(e) = self.conns.get_mut(&from) {
                    // Keep the per-connection count too.
                    let _ = e.conn.handle_pdu(now, bytes);
                }
                return;
            }
            Err(_) => {
                self.stats.malformed += 1;
                return;
            }
        };
        let is_plain_syn = pdu.flags.contains(Flags::SYN)
            && !pdu.flags.contains(Flags::ACK)
            && matches!(pdu.var, VarPart::Syn(_));
        let mut existing = self.conns.get(&from).map(|e| e.conn.state());
        if is_plain_syn && existing.is_some_and(|st| st != State::Closed) {
            let same = self
                .conns
                .get(&from)
                .is_some_and(|e| e.conn.peer_iss() == Some(pdu.seq));
            if !same {
                // A new connection from an address whose old link died without an RST (the
                // card re-opened its channel, or the address was reused): the old one ends
                // and the SYN is taken as new. A repeated SYN (same sequence number) is not.
                self.stats.superseded += 1;
                self.events
                    .push_back((from.clone(), Event::Closed(CloseReason::Superseded)));
                self.remove(&from);
                existing = None;
            }
        }
        match existing {
            Some(st) if st != State::Closed || !is_plain_syn => {
                if let Some(entry) = self.conns.get_mut(&from) {
                    for e in entry.conn.handle_decoded(now, pdu) {
                        let e = entry.translate(e);
                        self.events.push_back((from.clone(), e));
                    }
                }
                self.refresh(&from);
                self.mark(&from);
            }
            _ if is_plain_syn => {
                if let VarPart::Syn(params) = &pdu.var {
                    if let Some(code) = crate::conn::syn_refusal(params) {
                        self.stats.illegal += 1;
                        self.rst_to(from, &pdu, code);
                        return;
                    }
                }
                if self.conns.len() >= self.max_connections {
                    self.stats.refused += 1;
                    self.rst_to(from, &pdu, reason::TEMPORARILY_UNABLE);
                    return;
                }
                let iss = self.next_iss;
                self.next_iss = self.next_iss.wrapping_add(0x9E37);
                if let Some(conn) = Connection::accept(self.config.clone(), &pdu, iss) {
                    self.stats.accepted += 1;
                    self.remove(&from);
                    let id = self.next_id;
                    self.next_id += 1;
                    self.by_id.insert(id, from.clone());
                    self.conns.insert(
                        from.clone(),
                        Entry {
                            conn,
                            id,
                            deadline: None,
                            sdus: HashMap::new(),
                        },
                    );
                    self.refresh(&from);
                    self.mark(&from);
                }
            }
            _ => {
                if !pdu.flags.contains(Flags::RST) {
                    self.stats.unknown_peer += 1;
                    self.rst_to(from, &pdu, reason::UNEXPECTED_PDU);
                }
            }
        }
    }

    fn rst_to(&mut self, to: A, got: &Pdu, code: u8) {
        let rst = Pdu {
            flags: Flags::RST,
            src_port: got.dst_port,
            dst_port: got.src_port,
            seq: 0,
            ack: got.seq,
            window: 0,
            var: VarPart::Rst(code),
            ..Pdu::default()
        };
        if let Ok(b) = rst.encode() {
            self.loose.push_back((to, b));
        }
    }

    /// Queue an SDU on the connection with `addr`. Returns its number, unique on this server,
    /// which [`Event::SduAcked`] names once the peer has acknowledged all of it.
    pub fn send(&mut self, addr: &A, sdu: &[u8]) -> Result<u64, SendError> {
        let e = self
            .conns
            .get_mut(addr)
            .ok_or(SendError::NotOpen(State::Closed))?;
        let n = e.conn.send(sdu)?;
        let ours = self.next_sdu;
        self.next_sdu += 1;
        e.sdus.insert(n, ours);
        self.mark(addr);
        Ok(ours)
    }

    /// Reset the connection with `addr` (for example an identification not in the store).
    pub fn close(&mut self, addr: &A, code: u8) {
        if let Some(entry) = self.conns.get_mut(addr) {
            if let Some(e) = entry.conn.close(code) {
                self.events.push_back((addr.clone(), e));
            }
            self.refresh(addr);
            self.mark(addr);
        }
    }

    /// Next application event.
    pub fn poll_event(&mut self) -> Option<(A, Event)> {
        self.events.pop_front()
    }

    /// Next datagram to send, with its destination.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(A, Vec<u8>)> {
        if let Some(t) = self.loose.pop_front() {
            return Some(t);
        }
        while let Some(addr) = self.dirty.front().cloned() {
            if let Some(e) = self.conns.get_mut(&addr) {
                if let Some(b) = e.conn.poll_transmit(now) {
                    self.refresh(&addr);
                    return Some((addr, b));
                }
                if e.conn.state() == State::Closed {
                    self.remove(&addr);
                }
            }
            self.dirty.pop_front();
            self.dirty_set.remove(&addr);
        }
        None
    }

    /// Earliest timer over all connections.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// Fire the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<A> = self
            .timers
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter_map(|(_, id)| self.by_id.get(id).cloned())
            .collect();
        for a in due {
            if let Some(entry) = self.conns.get_mut(&a) {
                for e in entry.conn.handle_timeout(now) {
                    let e = entry.translate(e);
                    self.events.push_back((a.clone(), e));
                }
            }
            self.refresh(&a);
            self.mark(&a);
        }
    }
}
