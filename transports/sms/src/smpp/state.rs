//! What all binds share: the messages taken by `send`, the queue of segments ready to go, the
//! index from SMSC message ids to segments (for receipts), PoR reassembly, and the event sink.
//!
//! One mutex, held for short, synchronous steps only; events are handed to the sink while it is
//! held so that they reach it in the order they happened (the sink must not block).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use otagw_transport::{DeliveryEvent, EventSink, InboundAck, MessageId, TransportError, Urgency};
use rusmpp::pdus::SubmitSm;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{debug, trace, warn};

use super::inbound::{
    decimal_id_as_hex, normalise_id, parse_receipt, InboundSm, Receipt, ReceiptOutcome,
};
use super::tls::ClientTls;
use super::{SmppConfig, SmppStatus};
use crate::concat::{parse_segment, Accepted, Reassembler};
use crate::udh::{ConcatReference, PacketKind};

/// A segment: the message and its index (0-based).
pub(crate) type SegKey = (MessageId, u8);

/// Events kept while no sink is set, at most.
const BACKLOG_LIMIT: usize = 100_000;
/// Receipts that arrived before their `submit_sm_resp`, at most, and for how long.
const ORPHAN_LIMIT: usize = 10_000;
const ORPHAN_TTL: Duration = Duration::from_secs(120);

/// State shared by the transport handle and every bind.
pub(crate) struct Shared {
    pub config: SmppConfig,
    core: Mutex<Core>,
    /// Woken when segments are queued.
    pub work: Notify,
    /// One permit per message taken and not yet accepted or failed.
    pub permits: Arc<Semaphore>,
    /// Concatenation reference counter.
    pub next_reference: AtomicU32,
    /// TLS settings when [`SmppConfig::tls`] is set, loaded once at start.
    pub tls: Option<ClientTls>,
}

impl Shared {
    pub fn new(config: SmppConfig) -> Self {
        let permits = Arc::new(Semaphore::new(config.queue_capacity));
        Self {
            config,
            core: Mutex::new(Core::default()),
            work: Notify::new(),
            permits,
            next_reference: AtomicU32::new(0),
            tls: None,
        }
    }

    /// The core, even if a thread panicked while holding it (its state stays consistent:
    /// every step leaves it valid before it can panic).
    pub fn core(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegState {
    /// Sequential mode: waiting for the previous segment's receipt.
    Held,
    Queued,
    InFlight,
    Accepted,
    Delivered,
}

struct Seg {
    /// The `submit_sm` as built once by `send`; every attempt sends a clone of it. Dropped
    /// once the SMSC has accepted the segment (a message waiting for receipts keeps little).
    pdu: Option<SubmitSm>,
    state: SegState,
    network_id: Option<String>,
    attempts: u32,
}

/// A message taken by `send`.
pub(crate) struct Msg {
    segments: Vec<Seg>,
    wants_receipts: bool,
    sequential: bool,
    urgency: Urgency,
    accepted: usize,
    delivered: usize,
    /// Released when the message is accepted or fails (bounds `send`).
    permit: Option<OwnedSemaphorePermit>,
}

impl Msg {
    pub fn new(
        pdus: Vec<SubmitSm>,
        wants_receipts: bool,
        sequential: bool,
        urgency: Urgency,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let segments = pdus
            .into_iter()
            .enumerate()
            .map(|(i, pdu)| Seg {
                pdu: Some(pdu),
                state: if sequential && i > 0 {
                    SegState::Held
                } else {
                    SegState::Queued
                },
                network_id: None,
                attempts: 0,
            })
            .collect();
        Self {
            segments,
            wants_receipts,
            sequential,
            urgency,
            accepted: 0,
            delivered: 0,
            permit: Some(permit),
        }
    }
}

/// Where a segment goes back in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requeue {
    /// Session dropped with the segment outstanding: first in line, attempt counted.
    Dropped,
    /// No response in time: end of the line, attempt counted.
    TimedOut,
    /// Throttled (0x58 / 0x14): first in line, attempt not counted.
    Throttled,
}

#[derive(Default)]
pub(crate) struct Core {
    messages: HashMap<MessageId, Msg>,
    /// Segments ready to go, one line per [`Urgency`] (indexed by `lane`).
    queue: [VecDeque<SegKey>; 3],
    /// Normalised SMSC message id -> segment waiting for its receipt.
    receipts: HashMap<String, SegKey>,
    receipt_expiry: VecDeque<(Instant, String)>,
    /// Sequential mode: (deadline, segment whose receipt releases the next one).
    sequential_gates: VecDeque<(Instant, SegKey)>,
    /// Receipts for no known segment, newest kept: maybe their `submit_sm_resp` is still on
    /// its way (transmitter + receiver binds). Also receives receipts nobody asked for.
    orphans: HashMap<String, (Instant, Receipt)>,
    orphan_order: VecDeque<(Instant, String)>,
    reassembler: Reassembler<String>,
    reassembly_started: HashMap<(String, ConcatReference), Instant>,
    sink: Option<Arc<dyn EventSink>>,
    backlog: Vec<DeliveryEvent>,
    closed: bool,
}

/// The queue line of an urgency.
fn lane(urgency: Urgency) -> usize {
    match urgency {
        Urgency::Urgent => 0,
        Urgency::Normal => 1,
        Urgency::Bulk => 2,
    }
}

impl Core {
    /// The queue line of a message's segments (normal for one no longer known).
    fn line(&mut self, id: MessageId) -> &mut VecDeque<SegKey> {
        let urgency = self
            .messages
            .get(&id)
            .map_or(Urgency::Normal, |m| m.urgency);
        &mut self.queue[lane(urgency)]
    }

    fn emit(&mut self, event: DeliveryEvent) {
        match &self.sink {
            Some(sink) => sink.deliver(event),
            None if self.backlog.len() < BACKLOG_LIMIT => self.backlog.push(event),
            None => warn!(?event, "no event sink set and backlog full: event dropped"),
        }
    }

    pub fn set_sink(&mut self, sink: Arc<dyn EventSink>) {
        for event in self.backlog.drain(..) {
            sink.deliver(event);
        }
        self.sink = Some(sink);
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Takes a message; its first (or every) segment is queued.
    pub fn add(&mut self, id: MessageId, msg: Msg) -> Result<(), TransportError> {
        if self.closed {
            return Err(TransportError::NotConnected(
                "SMPP transport shut down".into(),
            ));
        }
        if self.messages.contains_key(&id) {
            return Err(TransportError::Rejected(format!(
                "message {id} is already in progress"
            )));
        }
        let line = &mut self.queue[lane(msg.urgency)];
        for (i, seg) in msg.segments.iter().enumerate() {
            if seg.state == SegState::Queued {
                line.push_back((id, i as u8));
            }
        }
        self.messages.insert(id, msg);
        Ok(())
    }

    pub fn has_queued(&self) -> bool {
        self.queue.iter().any(|line| !line.is_empty())
    }

    /// Number of messages in progress (tests, metrics).
    pub fn in_progress(&self) -> usize {
        self.messages.len()
    }

    /// The next segment to submit, marked in flight: the most urgent line first.
    pub fn take_next(&mut self) -> Option<(SegKey, SubmitSm)> {
        while let Some(key) = self.queue.iter_mut().find_map(VecDeque::pop_front) {
            let Some(seg) = self
                .messages
                .get_mut(&key.0)
                .and_then(|m| m.segments.get_mut(usize::from(key.1)))
            else {
                continue;
            };
            if seg.state != SegState::Queued {
                continue;
            }
            let Some(pdu) = seg.pdu.clone() else {
                continue;
            };
            seg.state = SegState::InFlight;
            seg.attempts += 1;
            return Some((key, pdu));
        }
        None
    }

    /// `submit_sm_resp` with ESME_ROK. Returns true if a segment was released (sequential).
    pub fn on_accepted(
        &mut self,
        key: SegKey,
        network_id: String,
        now: Instant,
        config: &SmppConfig,
    ) -> bool {
        let Some(msg) = self.messages.get_mut(&key.0) else {
            debug!(message = %key.0, "submit_sm_resp for a message no longer in progress");
            return false;
        };
        let total = msg.segments.len();
        let Some(seg) = msg.segments.get_mut(usize::from(key.1)) else {
            return false;
        };
        if seg.state != SegState::InFlight {
            return false;
        }
        seg.state = SegState::Accepted;
        seg.pdu = None;
        seg.network_id = Some(network_id.clone());
        msg.accepted += 1;
        let wants_receipts = msg.wants_receipts;
        let gate = msg.sequential && usize::from(key.1) + 1 < total;
        let all_accepted = msg.accepted == total;
        let mut released = false;
        if gate && !wants_receipts {
            released = self.release_next(key);
        } else if gate {
            self.sequential_gates
                .push_back((now + config.sequential_receipt_timeout, key));
        }
        let norm = normalise_id(&network_id);
        if wants_receipts {
            self.receipts.insert(norm.clone(), key);
            self.receipt_expiry
                .push_back((now + config.receipt_wait, norm.clone()));
        }
        if all_accepted {
            if let Some(msg) = self.messages.get_mut(&key.0) {
                msg.permit = None;
                let network_refs = msg
                    .segments
                    .iter()
                    .map(|s| s.network_id.clone().unwrap_or_default())
                    .collect();
                self.emit(DeliveryEvent::Accepted {
                    id: key.0,
                    network_refs,
                });
                if !wants_receipts {
                    self.remove(key.0);
                }
            }
        }
        // A receipt that overtook this submit_sm_resp (transmitter + receiver binds) is
        // applied now, after `Accepted`.
        if wants_receipts {
            if let Some((_, receipt)) = self.orphans.remove(&norm) {
                debug!(message = %key.0, id = %network_id, "receipt arrived before submit_sm_resp");
                released |= self.on_receipt(receipt);
            }
        }
        released
    }

    /// Releases the segment after `key` (sequential mode); true if one was queued.
    fn release_next(&mut self, key: SegKey) -> bool {
        let next = key.1.wrapping_add(1);
        let Some(seg) = self
            .messages
            .get_mut(&key.0)
            .and_then(|m| m.segments.get_mut(usize::from(next)))
        else {
            return false;
        };
        if seg.state != SegState::Held {
            return false;
        }
        seg.state = SegState::Queued;
        self.line(key.0).push_back((key.0, next));
        true
    }

    /// A final error status for a segment: the whole message fails.
    pub fn on_rejected(&mut self, key: SegKey, error: TransportError) {
        let in_flight = self
            .messages
            .get(&key.0)
            .and_then(|m| m.segments.get(usize::from(key.1)))
            .is_some_and(|s| s.state == SegState::InFlight);
        if in_flight {
            self.fail(key.0, error);
        }
    }

    /// Puts an in-flight segment back in the queue, unchanged; fails the message if it has had
    /// its `max_attempts`. Returns true if it was queued.
    pub fn requeue(&mut self, key: SegKey, how: Requeue, max_attempts: u32, why: &str) -> bool {
        let Some(seg) = self
            .messages
            .get_mut(&key.0)
            .and_then(|m| m.segments.get_mut(usize::from(key.1)))
        else {
            return false;
        };
        if seg.state != SegState::InFlight {
            return false;
        }
        if how == Requeue::Throttled {
            seg.attempts = seg.attempts.saturating_sub(1);
        }
        if seg.attempts >= max_attempts {
            let attempts = seg.attempts;
            let error = match how {
                Requeue::TimedOut => TransportError::Timeout(format!(
                    "{why}, segment {} after {attempts} attempts",
                    key.1 + 1
                )),
                _ => TransportError::NotConnected(format!(
                    "{why}, segment {} after {attempts} attempts",
                    key.1 + 1
                )),
            };
            self.fail(key.0, error);
            return false;
        }
        seg.state = SegState::Queued;
        match how {
            Requeue::TimedOut => self.line(key.0).push_back(key),
            Requeue::Dropped | Requeue::Throttled => self.line(key.0).push_front(key),
        }
        true
    }

    /// Emits `Failed` and forgets the message.
    fn fail(&mut self, id: MessageId, error: TransportError) {
        if self.messages.contains_key(&id) {
            self.emit(DeliveryEvent::Failed { id, error });
            self.remove(id);
        }
    }

    fn remove(&mut self, id: MessageId) {
        if let Some(msg) = self.messages.remove(&id) {
            for seg in &msg.segments {
                if let Some(network_id) = &seg.network_id {
                    let norm = normalise_id(network_id);
                    if self.receipts.get(&norm).is_some_and(|k| k.0 == id) {
                        self.receipts.remove(&norm);
                    }
                }
            }
        }
    }

    /// A `deliver_sm`: receipt, PoR, or an MO we do not care about. Returns true if a
    /// sequential segment was released. `ack` is its `deliver_sm_resp`: it travels with the
    /// PoR the message completes and goes at once otherwise, also for the earlier segments of
    /// a concatenated PoR (an SMSC that sends one segment at a time would wait for it).
    pub fn on_deliver(&mut self, sm: &InboundSm, ack: InboundAck, now: Instant) -> bool {
        if sm.is_receipt() {
            if sm.has_udh() {
                // Our simulator's convention: a PoR carried in the RP-ACK comes back inside the
                // receipt, UDH 02 71 00 + packet in message_payload.
                if let Some(payload) = &sm.message_payload {
                    self.on_user_data(&sm.source_addr, payload, ack, now);
                }
            }
            return match parse_receipt(sm) {
                Some(receipt) => self.on_receipt(receipt),
                None => {
                    debug!(from = %sm.source_addr, "delivery receipt without id or state ignored");
                    false
                }
            };
        }
        if sm.has_udh() {
            self.on_user_data(&sm.source_addr, sm.user_data(), ack, now);
        } else {
            trace!(from = %sm.source_addr, "MO without UDH ignored");
        }
        false
    }

    fn find_receipt_key(&self, message_id: &str) -> Option<(String, SegKey)> {
        let norm = normalise_id(message_id);
        if let Some(key) = self.receipts.get(&norm) {
            return Some((norm, *key));
        }
        let hex = normalise_id(&decimal_id_as_hex(message_id)?);
        self.receipts.get(&hex).map(|key| (hex, *key))
    }

    /// A delivery receipt. Returns true if a sequential segment was released.
    fn on_receipt(&mut self, receipt: Receipt) -> bool {
        if receipt.outcome == ReceiptOutcome::Pending {
            trace!(id = %receipt.message_id, "intermediate receipt ignored");
            return false;
        }
        let Some((norm, key)) = self.find_receipt_key(&receipt.message_id) else {
            // Maybe its submit_sm_resp is still on its way; the oldest such receipt goes when
            // there are too many.
            trace!(id = %receipt.message_id, "receipt for no known segment kept for a while");
            while self.orphan_order.len() >= ORPHAN_LIMIT {
                self.forget_oldest_orphan();
            }
            let deadline = Instant::now() + ORPHAN_TTL;
            let norm = normalise_id(&receipt.message_id);
            self.orphan_order.push_back((deadline, norm.clone()));
            self.orphans.insert(norm, (deadline, receipt));
            return false;
        };
        self.receipts.remove(&norm);
        let Some(msg) = self.messages.get_mut(&key.0) else {
            return false;
        };
        let total = msg.segments.len();
        match receipt.outcome {
            ReceiptOutcome::Delivered => {
                let Some(seg) = msg.segments.get_mut(usize::from(key.1)) else {
                    return false;
                };
                if seg.state != SegState::Accepted {
                    return false;
                }
                seg.state = SegState::Delivered;
                msg.delivered += 1;
                if msg.delivered == total {
                    self.emit(DeliveryEvent::Delivered { id: key.0 });
                    self.remove(key.0);
                    return false;
                }
                msg.sequential && self.release_next(key)
            }
            ReceiptOutcome::Failed { stat, err } => {
                let err = err.map(|e| format!(" err:{e}")).unwrap_or_default();
                let what = format!(
                    "delivery receipt stat:{stat}{err} for segment {}/{total} (SMSC id {})",
                    key.1 + 1,
                    receipt.message_id
                );
                // An expired message may well get through later; the others are final.
                let error = if stat == "EXPIRED" {
                    TransportError::Timeout(what)
                } else {
                    TransportError::Rejected(what)
                };
                self.fail(key.0, error);
                false
            }
            ReceiptOutcome::Pending => false,
        }
    }

    /// User data with a UDH from `from`: a PoR (IEI 0x71), possibly concatenated, becomes a
    /// `ResponsePacket`; anything else is ignored.
    fn on_user_data(&mut self, from: &str, user_data: &[u8], ack: InboundAck, now: Instant) {
        let concat = match parse_segment(user_data) {
            Ok((header, None, tail)) => {
                match header.packet_kind() {
                    Some(PacketKind::Response) => self.emit(DeliveryEvent::ResponsePacket {
                        from: from.to_string(),
                        packet: tail.to_vec(),
                        sms_framing: true,
                        ack,
                    }),
                    Some(PacketKind::Command) => self.emit(DeliveryEvent::CommandPacket {
                        from: from.to_string(),
                        packet: tail.to_vec(),
                        ack,
                    }),
                    None => trace!(%from, "MO with a UDH but no packet IEI ignored"),
                }
                return;
            }
            Ok((_, Some(concat), _)) => concat,
            Err(e) => {
                debug!(%from, error = %e, "MO user data header unreadable; ignored");
                return;
            }
        };
        match self.reassembler.accept(from.to_string(), user_data) {
            Ok(Accepted::Complete(packet)) => {
                if let Some(reference) = packet.reference {
                    self.reassembly_started
                        .remove(&(from.to_string(), reference));
                }
                match packet.kind {
                    Some(PacketKind::Response) => self.emit(DeliveryEvent::ResponsePacket {
                        from: from.to_string(),
                        packet: packet.data,
                        sms_framing: true,
                        ack,
                    }),
                    Some(PacketKind::Command) => self.emit(DeliveryEvent::CommandPacket {
                        from: from.to_string(),
                        packet: packet.data,
                        ack,
                    }),
                    None => trace!(%from, "concatenated MO without packet IEI ignored"),
                }
            }
            Ok(Accepted::Pending { reference, .. }) => {
                self.reassembly_started
                    .entry((from.to_string(), reference))
                    .or_insert(now);
            }
            Ok(Accepted::Duplicate { .. }) => {
                trace!(%from, sequence = concat.sequence, "duplicate MO segment ignored")
            }
            Err(e) => {
                warn!(%from, error = %e, "MO segment does not fit its message; partial message dropped");
                let key = from.to_string();
                self.reassembler.drop_pending(&key, concat.reference);
                self.reassembly_started.remove(&(key, concat.reference));
            }
        }
    }

    /// Expires receipts waited for too long, sequential gates, early receipts and partial MOs.
    pub fn sweep(&mut self, now: Instant, config: &SmppConfig) {
        while let Some((deadline, _)) = self.receipt_expiry.front() {
            if *deadline > now {
                break;
            }
            let Some((_, norm)) = self.receipt_expiry.pop_front() else {
                break;
            };
            if let Some(key) = self.receipts.remove(&norm) {
                let sequential_waiting = self
                    .messages
                    .get(&key.0)
                    .is_some_and(|m| m.accepted < m.segments.len());
                if !sequential_waiting {
                    debug!(message = %key.0, "no delivery receipt in time; message forgotten");
                    self.remove(key.0);
                }
            }
        }
        while let Some((deadline, key)) = self.sequential_gates.front().copied() {
            if deadline > now {
                break;
            }
            self.sequential_gates.pop_front();
            let still_held = self
                .messages
                .get(&key.0)
                .and_then(|m| m.segments.get(usize::from(key.1) + 1))
                .is_some_and(|s| s.state == SegState::Held);
            if still_held {
                self.fail(
                    key.0,
                    TransportError::Timeout(format!(
                        "no delivery receipt for segment {} within {:?} (sequential segments)",
                        key.1 + 1,
                        config.sequential_receipt_timeout
                    )),
                );
            }
        }
        while self
            .orphan_order
            .front()
            .is_some_and(|(deadline, _)| *deadline <= now)
        {
            self.forget_oldest_orphan();
        }
        let expired: Vec<(String, ConcatReference)> = self
            .reassembly_started
            .iter()
            .filter(|(_, started)| **started + config.reassembly_timeout <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for (from, reference) in expired {
            debug!(%from, reference = reference.number(), "partial MO expired");
            self.reassembler.drop_pending(&from, reference);
            self.reassembly_started.remove(&(from, reference));
        }
    }

    fn forget_oldest_orphan(&mut self) {
        if let Some((deadline, norm)) = self.orphan_order.pop_front() {
            // Only if it was not replaced by a newer receipt with the same id.
            if self.orphans.get(&norm).is_some_and(|(d, _)| *d == deadline) {
                self.orphans.remove(&norm);
            }
        }
    }

    /// Shutdown: no more sends; messages not yet accepted fail, the others are forgotten.
    pub fn close(&mut self) {
        self.closed = true;
        let ids: Vec<MessageId> = self.messages.keys().copied().collect();
        let mut pending: Vec<MessageId> = ids
            .into_iter()
            .filter(|id| {
                self.messages
                    .get(id)
                    .is_some_and(|m| m.accepted < m.segments.len())
            })
            .collect();
        pending.sort();
        for id in pending {
            self.fail(
                id,
                TransportError::NotConnected("SMPP transport shut down".into()),
            );
        }
        self.messages.clear();
        self.queue.iter_mut().for_each(VecDeque::clear);
        self.receipts.clear();
        self.receipt_expiry.clear();
        self.sequential_gates.clear();
    }
}

/// The error for a final `submit_sm_resp` / `generic_nack` status.
pub(crate) fn rejection(status: SmppStatus, generic_nack: bool) -> TransportError {
    if generic_nack {
        TransportError::Rejected(format!("generic_nack {status}"))
    } else {
        TransportError::Rejected(status.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udh::ConcatReference;
    use crate::{split_packet, PacketKind};
    use rusmpp::types::OctetString;

    #[derive(Default)]
    struct Collect(Mutex<Vec<DeliveryEvent>>);

    impl EventSink for Collect {
        fn deliver(&self, event: DeliveryEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn core() -> (Core, Arc<Collect>) {
        let mut core = Core::default();
        let sink = Arc::new(Collect::default());
        core.set_sink(sink.clone());
        (core, sink)
    }

    fn msg(segments: usize, receipts: bool, sequential: bool) -> Msg {
        msg_of(segments, receipts, sequential, Urgency::Normal)
    }

    fn msg_of(segments: usize, receipts: bool, sequential: bool, urgency: Urgency) -> Msg {
        let pdus = (0..segments)
            .map(|i| {
                SubmitSm::builder()
                    .short_message(OctetString::from_vec(vec![i as u8; 10]).unwrap())
                    .build()
            })
            .collect();
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        Msg::new(pdus, receipts, sequential, urgency, permit)
    }

    #[tokio::test]
    async fn urgent_segments_go_before_queued_bulk_and_requeues_keep_their_line() {
        let (mut core, _sink) = core();
        for id in 1..=3 {
            core.add(MessageId(id), msg_of(1, false, false, Urgency::Bulk))
                .unwrap();
        }
        let (first, _) = core.take_next().unwrap();
        assert_eq!(first.0, MessageId(1));
        core.add(MessageId(10), msg_of(2, false, false, Urgency::Normal))
            .unwrap();
        core.add(MessageId(20), msg_of(1, false, false, Urgency::Urgent))
            .unwrap();
        let mut order = Vec::new();
        while let Some((key, _)) = core.take_next() {
            order.push(key);
            if key == (MessageId(10), 0) && order.len() == 2 {
                // Dropped with its session: back at the head of its own line, not of bulk's.
                assert!(core.requeue(key, Requeue::Dropped, 5, "dropped"));
            }
        }
        assert_eq!(
            order,
            vec![
                (MessageId(20), 0),
                (MessageId(10), 0),
                (MessageId(10), 0),
                (MessageId(10), 1),
                (MessageId(2), 0),
                (MessageId(3), 0),
            ]
        );
    }

    fn config() -> SmppConfig {
        SmppConfig {
            sequential_receipt_timeout: Duration::from_secs(1),
            reassembly_timeout: Duration::from_secs(1),
            ..SmppConfig::default()
        }
    }

    #[tokio::test]
    async fn sequential_gate_times_out() {
        let (mut core, sink) = core();
        let cfg = config();
        core.add(MessageId(1), msg(2, true, true)).unwrap();
        let (key, _) = core.take_next().unwrap();
        assert!(core.take_next().is_none(), "segment 2 is held");
        let t0 = Instant::now();
        core.on_accepted(key, "a".into(), t0, &cfg);
        core.sweep(t0 + Duration::from_millis(500), &cfg);
        assert!(sink.0.lock().unwrap().is_empty());
        core.sweep(t0 + Duration::from_secs(2), &cfg);
        let events = sink.0.lock().unwrap().clone();
        assert!(
            matches!(
                &events[..],
                [DeliveryEvent::Failed {
                    id: MessageId(1),
                    error: TransportError::Timeout(_)
                }]
            ),
            "{events:?}"
        );
        assert_eq!(core.in_progress(), 0);
    }

    #[tokio::test]
    async fn attempts_are_bounded_but_throttling_is_not_counted() {
        let (mut core, sink) = core();
        core.add(MessageId(1), msg(1, false, false)).unwrap();
        for _ in 0..10 {
            let (key, _) = core.take_next().unwrap();
            assert!(core.requeue(key, Requeue::Throttled, 2, "throttled"));
        }
        let (key, _) = core.take_next().unwrap();
        assert!(core.requeue(key, Requeue::TimedOut, 2, "timeout"));
        let (key, _) = core.take_next().unwrap();
        assert!(!core.requeue(key, Requeue::TimedOut, 2, "no answer"));
        let events = sink.0.lock().unwrap().clone();
        assert!(
            matches!(&events[..], [DeliveryEvent::Failed { error: TransportError::Timeout(why), .. }] if why.contains("after 2 attempts")),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn unknown_receipts_are_bounded_and_expire() {
        let (mut core, _sink) = core();
        for n in 0..ORPHAN_LIMIT + 10 {
            core.on_receipt(Receipt {
                message_id: format!("{n:x}"),
                outcome: ReceiptOutcome::Delivered,
            });
        }
        assert!(core.orphans.len() <= ORPHAN_LIMIT);
        assert!(core
            .orphans
            .contains_key(&format!("{:x}", ORPHAN_LIMIT + 9)));
        core.sweep(
            Instant::now() + ORPHAN_TTL + Duration::from_secs(1),
            &config(),
        );
        assert!(core.orphans.is_empty() && core.orphan_order.is_empty());
    }

    #[tokio::test]
    async fn partial_mo_expires_and_the_completing_segment_waits_for_the_por_taker() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let (mut core, sink) = core();
        let parts = split_packet(
            PacketKind::Response,
            &[7; 200],
            ConcatReference::EightBit(1),
        )
        .unwrap();
        let mo = |ud: &[u8]| InboundSm {
            source_addr: "49170".into(),
            esm_class: 0x40,
            short_message: ud.to_vec(),
            ..Default::default()
        };
        // Each deliver_sm's acknowledgement sets its bit when it goes.
        let acked = Arc::new(AtomicU32::new(0));
        let ack = |bit: u32| {
            let acked = acked.clone();
            InboundAck::new(move |_| {
                acked.fetch_or(bit, Ordering::SeqCst);
            })
        };
        let t0 = Instant::now();
        core.on_deliver(&mo(&parts[1]), ack(1), t0);
        assert_eq!(core.reassembler.len(), 1);
        assert_eq!(
            acked.load(Ordering::SeqCst),
            1,
            "a segment short of the PoR goes at once"
        );
        core.sweep(t0 + Duration::from_secs(2), &config());
        assert!(core.reassembler.is_empty() && core.reassembly_started.is_empty());
        // The first segment alone now waits for a new second one.
        core.on_deliver(&mo(&parts[0]), ack(2), t0);
        core.on_deliver(&mo(&parts[1]), ack(4), t0);
        let events: Vec<DeliveryEvent> = std::mem::take(&mut *sink.0.lock().unwrap());
        assert_eq!(events.len(), 1);
        assert_eq!(
            acked.load(Ordering::SeqCst),
            1 | 2,
            "the segment completing the PoR waits for the PoR's taker"
        );
        drop(events);
        assert_eq!(acked.load(Ordering::SeqCst), 7);
        // A receipt is acknowledged at once.
        let receipt = InboundSm {
            esm_class: 0x04,
            short_message: b"id:77 sub:001 dlvrd:001 submit date:2611211200 done date:2611211200 stat:DELIVRD err:000 text:".to_vec(),
            ..Default::default()
        };
        core.on_deliver(&receipt, ack(8), t0);
        assert_eq!(acked.load(Ordering::SeqCst), 15);
    }
}
