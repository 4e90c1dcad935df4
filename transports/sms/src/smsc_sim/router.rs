//! Routing of deliver_sm (receipts and MO messages) to the receiving binds of a system_id.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::pdu::with_sequence;
use super::stats::Counters;

/// What a session's writer task is given.
#[derive(Debug)]
pub(crate) enum Out {
    /// An encoded PDU.
    Raw(Bytes),
    /// A header-only PDU: command_id, command_status, sequence_number.
    Header(u32, u32, u32),
    /// submit_sm_resp with status 0: sequence_number, message_id.
    SubmitResp(u32, u64),
    /// A PDU to encode.
    Cmd(Box<rusmpp::Command>),
    /// Flush and close the connection.
    Close,
}

/// The outbound side of a session, shared with the router.
#[derive(Debug)]
pub(crate) struct SessionOut {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<Out>,
    sequence: AtomicU32,
    /// deliver_sm sent and not yet answered, by sequence number.
    outstanding: Mutex<HashMap<u32, Bytes>>,
    /// At most this many deliver_sm unanswered (`None`: no limit); the others wait here, in
    /// order, as an SMSC's window holds them.
    window: Option<usize>,
    waiting: Mutex<VecDeque<(u32, Bytes)>>,
    /// Bound (any mode): an unbind goes out on shutdown.
    pub bound: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SessionOut {
    pub(crate) fn new(id: u64, tx: mpsc::UnboundedSender<Out>, window: Option<usize>) -> Self {
        Self {
            id,
            tx,
            sequence: AtomicU32::new(1),
            outstanding: Mutex::new(HashMap::new()),
            window: window.map(|w| w.max(1)),
            waiting: Mutex::new(VecDeque::new()),
            bound: AtomicBool::new(false),
        }
    }

    /// The next sequence number for a PDU this side originates (1..=0x7FFFFFFF).
    pub(crate) fn next_sequence(&self) -> u32 {
        loop {
            let s = self.sequence.fetch_add(1, Ordering::Relaxed) & 0x7FFF_FFFF;
            if s != 0 {
                return s;
            }
        }
    }

    /// Sends a deliver_sm, or queues it behind a full window; `Err` gives it back if the
    /// session is gone.
    fn send_deliver(&self, sequence: u32, pdu: Bytes) -> Result<(), Bytes> {
        {
            let mut outstanding = lock(&self.outstanding);
            if let Some(window) = self.window {
                let mut waiting = lock(&self.waiting);
                if outstanding.len() >= window || !waiting.is_empty() {
                    waiting.push_back((sequence, pdu));
                    return Ok(());
                }
            }
            outstanding.insert(sequence, pdu.clone());
        }
        self.write(sequence, pdu)
    }

    /// Hands a deliver_sm already counted in `outstanding` to the writer.
    fn write(&self, sequence: u32, pdu: Bytes) -> Result<(), Bytes> {
        if self.tx.send(Out::Raw(pdu)).is_err() {
            // Whoever removes it from `outstanding` owns the redelivery.
            return match lock(&self.outstanding).remove(&sequence) {
                Some(pdu) => Err(pdu),
                None => Ok(()),
            };
        }
        Ok(())
    }

    /// The deliver_sm answered by `sequence`, if it was outstanding; the window's room goes
    /// to the next waiting one.
    pub(crate) fn settle(&self, sequence: u32) -> bool {
        let next = {
            let mut outstanding = lock(&self.outstanding);
            if outstanding.remove(&sequence).is_none() {
                return false;
            }
            let next = lock(&self.waiting).pop_front();
            if let Some((sequence, pdu)) = &next {
                outstanding.insert(*sequence, pdu.clone());
            }
            next
        };
        if let Some((sequence, pdu)) = next {
            if let Err(pdu) = self.write(sequence, pdu) {
                // The session is ending: kept for `take_outstanding`, which re-routes it.
                lock(&self.waiting).push_front((sequence, pdu));
            }
        }
        true
    }

    /// Every deliver_sm still unanswered or waiting for the window (the session ended).
    pub(crate) fn take_outstanding(&self) -> Vec<Bytes> {
        let mut map = lock(&self.outstanding);
        let mut v: Vec<(u32, Bytes)> = map.drain().collect();
        v.sort_by_key(|(s, _)| *s);
        v.extend(lock(&self.waiting).drain(..));
        v.into_iter().map(|(_, b)| b).collect()
    }
}

#[derive(Debug, Default)]
struct Route {
    sessions: Vec<Arc<SessionOut>>,
    next: usize,
    backlog: VecDeque<Bytes>,
}

/// Receiving binds per system_id, round-robin, with a bounded backlog while none is bound.
#[derive(Debug)]
pub(crate) struct Router {
    routes: Mutex<HashMap<Arc<str>, Route>>,
    backlog_limit: usize,
}

impl Router {
    pub(crate) fn new(backlog_limit: usize) -> Self {
        Self {
            routes: Mutex::new(HashMap::new()),
            backlog_limit,
        }
    }

    fn pick(&self, system_id: &str) -> Option<Arc<SessionOut>> {
        let mut routes = lock(&self.routes);
        let route = routes.get_mut(system_id)?;
        if route.sessions.is_empty() {
            return None;
        }
        let i = route.next % route.sessions.len();
        route.next = route.next.wrapping_add(1);
        Some(route.sessions[i].clone())
    }

    fn park(&self, system_id: &str, pdu: Bytes, counters: &Counters) {
        let mut routes = lock(&self.routes);
        let route = match routes.get_mut(system_id) {
            Some(r) => r,
            None => routes.entry(Arc::from(system_id)).or_default(),
        };
        // A session may have bound since `pick`.
        if let Some(s) = route.sessions.first().cloned() {
            drop(routes);
            let seq = s.next_sequence();
            if let Err(pdu) = s.send_deliver(seq, with_sequence(&pdu, seq)) {
                self.park_only(system_id, pdu, counters);
            }
            return;
        }
        if route.backlog.len() >= self.backlog_limit {
            route.backlog.pop_front();
            Counters::inc(&counters.backlog_discarded);
        }
        if self.backlog_limit > 0 {
            route.backlog.push_back(pdu);
        }
    }

    fn park_only(&self, system_id: &str, pdu: Bytes, counters: &Counters) {
        let mut routes = lock(&self.routes);
        let route = routes.entry(Arc::from(system_id)).or_default();
        if route.backlog.len() >= self.backlog_limit {
            route.backlog.pop_front();
            Counters::inc(&counters.backlog_discarded);
        }
        if self.backlog_limit > 0 {
            route.backlog.push_back(pdu);
        }
    }

    /// Sends a deliver_sm built by `build(sequence)` to the next receiving bind of `system_id`,
    /// or keeps it until one binds.
    pub(crate) fn dispatch(
        &self,
        system_id: &str,
        counters: &Counters,
        build: impl FnOnce(u32) -> Bytes,
    ) {
        match self.pick(system_id) {
            Some(s) => {
                let seq = s.next_sequence();
                if let Err(pdu) = s.send_deliver(seq, build(seq)) {
                    self.park(system_id, pdu, counters);
                }
            }
            None => self.park(system_id, build(0), counters),
        }
    }

    /// Sends an already encoded deliver_sm again (renumbered), or keeps it.
    pub(crate) fn redeliver(&self, system_id: &str, pdu: Bytes, counters: &Counters) {
        match self.pick(system_id) {
            Some(s) => {
                let seq = s.next_sequence();
                if let Err(pdu) = s.send_deliver(seq, with_sequence(&pdu, seq)) {
                    self.park(system_id, pdu, counters);
                }
            }
            None => self.park(system_id, pdu, counters),
        }
    }

    /// Raw bytes to the next receiving bind of `system_id`, untracked.
    pub(crate) fn send_raw(&self, system_id: &str, bytes: Bytes) -> bool {
        match self.pick(system_id) {
            Some(s) => s.tx.send(Out::Raw(bytes)).is_ok(),
            None => false,
        }
    }

    /// A bind that can receive: joins the rotation and gets the backlog.
    pub(crate) fn register(
        &self,
        system_id: &Arc<str>,
        session: Arc<SessionOut>,
        counters: &Counters,
    ) {
        let backlog = {
            let mut routes = lock(&self.routes);
            let route = routes.entry(system_id.clone()).or_default();
            route.sessions.push(session.clone());
            std::mem::take(&mut route.backlog)
        };
        for pdu in backlog {
            let seq = session.next_sequence();
            if let Err(pdu) = session.send_deliver(seq, with_sequence(&pdu, seq)) {
                self.park_only(system_id, pdu, counters);
            }
        }
    }

    /// The session leaves the rotation.
    pub(crate) fn unregister(&self, system_id: &str, session_id: u64) {
        let mut routes = lock(&self.routes);
        if let Some(route) = routes.get_mut(system_id) {
            route.sessions.retain(|s| s.id != session_id);
        }
    }

    /// deliver_sm waiting for a receiving bind of `system_id`.
    pub(crate) fn backlog_len(&self, system_id: &str) -> usize {
        lock(&self.routes)
            .get(system_id)
            .map_or(0, |r| r.backlog.len())
    }
}
