//! What happens to an accepted submit_sm: OTA detection, reassembly, the handset network, and
//! the deliver_sm (receipts, MO PoRs) that come back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusmpp::types::COctetString;

use super::pdu::{self, Addr, Receipt, ReceiptState, PID_SIM_DATA_DOWNLOAD};
use super::router::lock;
use super::server::Shared;
use super::stats::Counters;
use super::{HandsetReply, PorReply};
use crate::concat::{split_packet, Accepted, Reassembler, MAX_USER_DATA_OCTETS};
use crate::udh::{ConcatReference, PacketKind, UserDataHeader};

/// Who sent a message to whom, and what the ESME asked for.
#[derive(Debug, Clone)]
pub(crate) struct MsgMeta {
    pub system_id: Arc<str>,
    pub message_id: u64,
    pub submit_time: u64,
    pub registered_delivery: u8,
    /// submit_sm source (the ESME side): the destination of receipts and MO messages.
    pub esme: Addr,
    /// submit_sm destination (the handset), as submitted.
    pub handset: Addr,
}

impl MsgMeta {
    /// The destination MSISDN, digits only.
    pub(crate) fn msisdn(&self) -> &str {
        self.handset.addr.as_str().trim_start_matches('+')
    }
}

/// An accepted submit_sm on its way to the handset.
#[derive(Debug)]
pub(crate) struct Submitted {
    pub meta: MsgMeta,
    pub protocol_id: u8,
    pub udhi: bool,
    /// short_message, or message_payload when short_message is empty.
    pub data: Bytes,
}

type ConcatKey = (Arc<str>, Box<str>);

#[derive(Debug)]
struct PendingConcat {
    first_seen: Instant,
    segments: Vec<MsgMeta>,
}

/// Concatenated OTA messages waiting for segments, keyed by (system_id, MSISDN).
#[derive(Debug, Default)]
pub(crate) struct Concat {
    reassembler: Reassembler<ConcatKey>,
    pending: HashMap<(ConcatKey, ConcatReference), PendingConcat>,
}

impl Concat {
    /// Messages waiting for segments.
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

impl Shared {
    fn wants_receipt(&self, registered_delivery: u8, state: ReceiptState) -> bool {
        self.config.receipts
            && match registered_delivery & 0x03 {
                1 => true,
                2 => state.is_failure(),
                _ => false,
            }
    }

    fn send_receipt(&self, m: &MsgMeta, state: ReceiptState, por: Option<&[u8]>, done: u64) {
        if state.is_failure() {
            Counters::inc(&self.counters.undeliverable);
        }
        if por.is_none() && !self.wants_receipt(m.registered_delivery, state) {
            return;
        }
        Counters::inc(&self.counters.dlrs_sent);
        if por.is_some() {
            Counters::inc(&self.counters.por_receipts_sent);
        }
        let r = Receipt {
            message_id: m.message_id,
            submit_time: m.submit_time,
            done_time: done,
            state,
            handset: &m.handset,
            esme: &m.esme,
            por,
            text_with_payload: self.config.receipt_text_with_payload,
        };
        self.router
            .dispatch(&m.system_id, &self.counters, |seq| pdu::receipt(seq, &r));
    }

    fn plain(&self, m: &MsgMeta, done: u64) {
        let state = if self.network.knows(m.msisdn()) {
            ReceiptState::Delivered
        } else {
            ReceiptState::UnknownSubscriber
        };
        self.send_receipt(m, state, None, done);
    }

    /// Delivers an accepted message to the handset network and sends back what follows.
    pub(crate) fn deliver(&self, sub: Submitted) {
        let done = pdu::unix_now();
        if sub.protocol_id != PID_SIM_DATA_DOWNLOAD || !sub.udhi {
            return self.plain(&sub.meta, done);
        }
        match crate::concat::parse_segment(&sub.data) {
            Err(_) => {
                Counters::inc(&self.counters.reassembly_errors);
                self.send_receipt(&sub.meta, ReceiptState::Rejected, None, done);
            }
            Ok((_, Some(_), _)) => self.segment(sub, done),
            Ok((header, None, tail)) => {
                if header.packet_kind() == Some(PacketKind::Command) {
                    Counters::inc(&self.counters.command_packets);
                    let reply = self.network.command_packet(sub.meta.msisdn(), tail);
                    self.complete(std::slice::from_ref(&sub.meta), reply, done);
                } else {
                    self.plain(&sub.meta, done);
                }
            }
        }
    }

    fn segment(&self, sub: Submitted, done: u64) {
        enum Outcome {
            Pending,
            Complete(Vec<MsgMeta>, Option<PacketKind>, Vec<u8>),
            Duplicate(MsgMeta),
            Error(MsgMeta),
        }
        let key: ConcatKey = (sub.meta.system_id.clone(), sub.meta.msisdn().into());
        let outcome = {
            let mut guard = lock(&self.concat);
            let concat = &mut *guard;
            match concat.reassembler.accept(key.clone(), &sub.data) {
                Ok(Accepted::Pending { reference, .. }) => {
                    concat
                        .pending
                        .entry((key, reference))
                        .or_insert_with(|| PendingConcat {
                            first_seen: Instant::now(),
                            segments: Vec::new(),
                        })
                        .segments
                        .push(sub.meta);
                    Outcome::Pending
                }
                Ok(Accepted::Complete(packet)) => {
                    let mut segments = packet
                        .reference
                        .and_then(|r| concat.pending.remove(&(key, r)))
                        .map(|p| p.segments)
                        .unwrap_or_default();
                    segments.push(sub.meta);
                    Outcome::Complete(segments, packet.kind, packet.data)
                }
                Ok(Accepted::Duplicate { .. }) => Outcome::Duplicate(sub.meta),
                Err(_) => Outcome::Error(sub.meta),
            }
        };
        match outcome {
            Outcome::Pending => {}
            Outcome::Complete(segments, kind, data) => {
                if kind == Some(PacketKind::Command) {
                    Counters::inc(&self.counters.command_packets);
                    let reply = self.network.command_packet(segments[0].msisdn(), &data);
                    self.complete(&segments, reply, done);
                } else {
                    for m in &segments {
                        self.plain(m, done);
                    }
                }
            }
            // The handset already has this segment: it is delivered again, nothing else.
            Outcome::Duplicate(m) => self.send_receipt(&m, ReceiptState::Delivered, None, done),
            Outcome::Error(m) => {
                Counters::inc(&self.counters.reassembly_errors);
                self.send_receipt(&m, ReceiptState::Rejected, None, done);
            }
        }
    }

    /// Receipts (per segment, in arrival order) and the PoR, for a complete command.
    /// A PoR via RP-ACK rides the receipt of the segment that completed the message.
    fn complete(&self, segments: &[MsgMeta], reply: HandsetReply, done: u64) {
        let Some((last, earlier)) = segments.split_last() else {
            return;
        };
        match reply {
            HandsetReply::UnknownSubscriber => {
                for m in segments {
                    self.send_receipt(m, ReceiptState::UnknownSubscriber, None, done);
                }
            }
            HandsetReply::Delivered { mut por } => {
                if por.is_some() && self.faults.drop_por() {
                    Counters::inc(&self.counters.pors_dropped);
                    por = None;
                }
                for m in earlier {
                    self.send_receipt(m, ReceiptState::Delivered, None, done);
                }
                match por {
                    Some(PorReply {
                        user_data,
                        via_submit: false,
                    }) => self.send_receipt(last, ReceiptState::Delivered, Some(&user_data), done),
                    Some(PorReply {
                        user_data,
                        via_submit: true,
                    }) => {
                        self.send_receipt(last, ReceiptState::Delivered, None, done);
                        self.send_mo(last, &user_data);
                    }
                    None => self.send_receipt(last, ReceiptState::Delivered, None, done),
                }
            }
        }
    }

    /// The card's PoR as MO deliver_sm: one if it fits in 140 octets, else concatenated
    /// segments (8-bit reference) made by the codec.
    fn send_mo(&self, m: &MsgMeta, user_data: &[u8]) {
        let msisdn = m.msisdn();
        let addr = if msisdn.len() == m.handset.addr.as_str().len() {
            m.handset.addr.clone()
        } else {
            COctetString::from_string(msisdn.to_owned()).unwrap_or_else(|_| m.handset.addr.clone())
        };
        let handset = Addr {
            ton: 1,
            npi: 1,
            addr,
        };
        if user_data.len() <= MAX_USER_DATA_OCTETS {
            Counters::inc(&self.counters.mo_sent);
            self.router.dispatch(&m.system_id, &self.counters, |seq| {
                pdu::mo_por(seq, &handset, &m.esme, user_data)
            });
            return;
        }
        let packet = match UserDataHeader::parse(user_data) {
            Ok((_, tail)) => tail,
            Err(_) => user_data,
        };
        let reference = ConcatReference::EightBit(self.next_concat_reference());
        let Ok(segments) = split_packet(PacketKind::Response, packet, reference) else {
            tracing::warn!(len = packet.len(), "PoR too large to send as SMS, dropped");
            return;
        };
        for ud in &segments {
            Counters::inc(&self.counters.mo_sent);
            self.router.dispatch(&m.system_id, &self.counters, |seq| {
                pdu::mo_por(seq, &handset, &m.esme, ud)
            });
        }
    }

    /// Abandons concatenated messages older than the reassembly timeout: their segments
    /// reached the handset (receipts as for a plain message), the card never saw a command.
    pub(crate) fn expire_concat(&self, now: Instant, timeout: Duration) {
        let expired: Vec<PendingConcat> = {
            let mut guard = lock(&self.concat);
            let concat = &mut *guard;
            let keys: Vec<(ConcatKey, ConcatReference)> = concat
                .pending
                .iter()
                .filter(|(_, p)| now.duration_since(p.first_seen) >= timeout)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| {
                    concat.reassembler.drop_pending(&k.0, k.1);
                    concat.pending.remove(&k)
                })
                .collect()
        };
        if expired.is_empty() {
            return;
        }
        let done = pdu::unix_now();
        for p in expired {
            Counters::inc(&self.counters.reassembly_expired);
            for m in &p.segments {
                self.plain(m, done);
            }
        }
    }
}
