//! Splitting an SCP80 packet into SMS user data, and putting segments back together.
//!
//! Layout, per 3GPP TS 31.115 clause 4 (Implementation for SMS-PP; formerly GSM 03.48
//! clause 6.2 / 6.3, tables 6 and 7):
//! - single SMS: UDH `02 70 00` (or `02 71 00` for a response packet), then the packet from CPL on;
//! - concatenated: the first SMS's UDH holds the concatenation IE followed by the CPI
//!   (GSM 03.48 table 7: UDHL 07, IEIa 00 with ref/total/seq, IEIb 70 with length 0), then CPL,
//!   CHL, the command header and the first part of the secured data; every later SMS's UDH holds
//!   only the concatenation IE, and its user data continues the secured data.
//!
//! The integrity check covers the whole packet, never a segment, so segmentation is pure framing.

use std::collections::HashMap;
use std::hash::Hash;

use crate::error::{Error, Result};
use crate::udh::{ConcatReference, Concatenation, PacketKind, UserDataHeader};

/// Octets of TP-UD in one SMS with 8-bit data (TS 23.040 9.2.3.24).
pub const MAX_USER_DATA_OCTETS: usize = 140;

/// Packet octets a single SMS carries after UDH `02 70 00`.
pub const SINGLE_SMS_PACKET_CAPACITY: usize = MAX_USER_DATA_OCTETS - 3;

/// Most segments a concatenated message can have: the total is one octet.
pub const MAX_SEGMENTS: usize = 255;

fn first_segment_capacity(reference: ConcatReference) -> usize {
    // UDHL + concatenation IE + CPI/RPI IE (2 octets).
    MAX_USER_DATA_OCTETS - (1 + reference.element_len() + 2)
}

fn later_segment_capacity(reference: ConcatReference) -> usize {
    MAX_USER_DATA_OCTETS - (1 + reference.element_len())
}

/// The largest packet `split_packet` can carry with this reference width.
pub fn max_packet_len(reference: ConcatReference) -> usize {
    first_segment_capacity(reference) + (MAX_SEGMENTS - 1) * later_segment_capacity(reference)
}

/// How many SMS a packet of `length` octets needs, or an error if it does not fit in 255.
pub fn segment_count(length: usize, reference: ConcatReference) -> Result<usize> {
    if length == 0 {
        return Err(Error::EmptyPacket);
    }
    if length <= SINGLE_SMS_PACKET_CAPACITY {
        return Ok(1);
    }
    let max = max_packet_len(reference);
    if length > max {
        return Err(Error::PacketTooLarge {
            length,
            max,
            reference_kind: reference.kind_name(),
        });
    }
    let first = first_segment_capacity(reference);
    let later = later_segment_capacity(reference);
    Ok(1 + (length - first).div_ceil(later))
}

/// Splits an SCP80 packet (from CPL on) into as few TP-UD payloads as possible.
///
/// `reference` is the caller's concatenation reference (the codec reads no clock or RNG); it is
/// only used when more than one SMS is needed. Every payload is at most 140 octets.
pub fn split_packet(
    kind: PacketKind,
    packet: &[u8],
    reference: ConcatReference,
) -> Result<Vec<Vec<u8>>> {
    let count = segment_count(packet.len(), reference)?;
    if count == 1 {
        let header = UserDataHeader::new(vec![kind.element()]);
        return Ok(vec![header.encode_user_data(packet)?]);
    }
    let total = u8::try_from(count).map_err(|_| Error::PacketTooLarge {
        length: packet.len(),
        max: max_packet_len(reference),
        reference_kind: reference.kind_name(),
    })?;

    let (first, mut rest) = packet.split_at(first_segment_capacity(reference));
    let mut segments = Vec::with_capacity(count);
    let first_header = UserDataHeader::new(vec![
        Concatenation {
            reference,
            total,
            sequence: 1,
        }
        .to_element(),
        kind.element(),
    ]);
    segments.push(first_header.encode_user_data(first)?);

    let later = later_segment_capacity(reference);
    for sequence in 2..=total {
        let (chunk, tail) = rest.split_at(later.min(rest.len()));
        rest = tail;
        let header = UserDataHeader::new(vec![Concatenation {
            reference,
            total,
            sequence,
        }
        .to_element()]);
        segments.push(header.encode_user_data(chunk)?);
    }
    Ok(segments)
}

/// A packet (or plain user data) put back together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReassembledPacket {
    /// What segment 1's UDH announced (IEI 0x70 / 0x71), if anything.
    pub kind: Option<PacketKind>,
    /// The concatenation reference, `None` for a single SMS.
    pub reference: Option<ConcatReference>,
    /// Number of SMS the packet came in.
    pub segments: u8,
    /// The user data after the UDHs, concatenated in sequence order.
    pub data: Vec<u8>,
}

/// What `Reassembler::accept` did with a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The message is complete.
    Complete(ReassembledPacket),
    /// Stored; the message still misses segments.
    Pending {
        /// The message's reference.
        reference: ConcatReference,
        /// Segments received so far.
        received: u8,
        /// Segments announced.
        total: u8,
    },
    /// The same segment with the same contents was already stored; nothing changed.
    Duplicate {
        /// The message's reference.
        reference: ConcatReference,
        /// The repeated sequence number.
        sequence: u8,
    },
}

/// A message still waiting for segments, as listed by `Reassembler::pending`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMessage<'a, K> {
    /// The caller's key (for example the originator).
    pub key: &'a K,
    /// The concatenation reference.
    pub reference: ConcatReference,
    /// Segments received.
    pub received: u8,
    /// Segments announced.
    pub total: u8,
}

#[derive(Debug, Clone)]
struct Partial {
    total: u8,
    received: u8,
    kind: Option<PacketKind>,
    segments: Vec<Option<Vec<u8>>>,
}

impl Partial {
    fn missing(&self) -> Vec<u8> {
        (1..=self.total)
            .zip(&self.segments)
            .filter(|(_, s)| s.is_none())
            .map(|(seq, _)| seq)
            .collect()
    }
}

/// Collects concatenated SMS segments, keyed by the caller (e.g. originator) and the reference.
///
/// Segments may arrive in any order. There is no clock: the caller decides when a pending
/// message has expired and calls [`Reassembler::drop_pending`]. A completed message is
/// forgotten, so a late duplicate of one of its segments starts a new pending message.
#[derive(Debug, Clone)]
pub struct Reassembler<K> {
    partials: HashMap<(K, ConcatReference), Partial>,
}

impl<K> Default for Reassembler<K> {
    fn default() -> Self {
        Self {
            partials: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Reassembler<K> {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one segment's TP-UD (starting with its UDH) received under `key`.
    ///
    /// User data without a concatenation IE is complete by itself.
    pub fn accept(&mut self, key: K, user_data: &[u8]) -> Result<Accepted> {
        let (header, tail) = UserDataHeader::parse(user_data)?;
        let Some(concat) = header.concatenation()? else {
            return Ok(Accepted::Complete(ReassembledPacket {
                kind: header.packet_kind(),
                reference: None,
                segments: 1,
                data: tail.to_vec(),
            }));
        };
        let reference = concat.reference;
        let map_key = (key, reference);
        let partial = self
            .partials
            .entry(map_key.clone())
            .or_insert_with(|| Partial {
                total: concat.total,
                received: 0,
                kind: None,
                segments: vec![None; usize::from(concat.total)],
            });
        if partial.total != concat.total {
            return Err(Error::InconsistentTotal {
                reference: reference.number(),
                expected: partial.total,
                found: concat.total,
            });
        }
        // Concatenation::from_element guarantees 1 <= sequence <= total.
        let index = usize::from(concat.sequence - 1);
        let Some(slot) = partial.segments.get_mut(index) else {
            return Err(Error::SequenceOutOfRange {
                sequence: concat.sequence,
                total: concat.total,
            });
        };
        if let Some(existing) = slot {
            return if existing.as_slice() == tail {
                Ok(Accepted::Duplicate {
                    reference,
                    sequence: concat.sequence,
                })
            } else {
                Err(Error::ConflictingDuplicate {
                    reference: reference.number(),
                    sequence: concat.sequence,
                })
            };
        }
        *slot = Some(tail.to_vec());
        partial.received += 1;
        if concat.sequence == 1 {
            // TS 31.115: only the first segment carries the CPI / RPI.
            partial.kind = header.packet_kind();
        }
        if partial.received < partial.total {
            return Ok(Accepted::Pending {
                reference,
                received: partial.received,
                total: partial.total,
            });
        }
        let Some(done) = self.partials.remove(&map_key) else {
            return Err(Error::SequenceOutOfRange {
                sequence: concat.sequence,
                total: concat.total,
            });
        };
        let data = done.segments.into_iter().flatten().flatten().collect();
        Ok(Accepted::Complete(ReassembledPacket {
            kind: done.kind,
            reference: Some(reference),
            segments: done.total,
            data,
        }))
    }

    /// The sequence numbers still missing for a pending message, `None` if none is pending.
    pub fn missing(&self, key: &K, reference: ConcatReference) -> Option<Vec<u8>> {
        self.partials
            .get(&(key.clone(), reference))
            .map(Partial::missing)
    }

    /// Forgets a pending message (the caller decided it expired); true if there was one.
    pub fn drop_pending(&mut self, key: &K, reference: ConcatReference) -> bool {
        self.partials.remove(&(key.clone(), reference)).is_some()
    }

    /// Every message still waiting for segments.
    pub fn pending(&self) -> impl Iterator<Item = PendingMessage<'_, K>> {
        self.partials
            .iter()
            .map(|((key, reference), partial)| PendingMessage {
                key,
                reference: *reference,
                received: partial.received,
                total: partial.total,
            })
    }

    /// Number of pending messages.
    pub fn len(&self) -> usize {
        self.partials.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty()
    }
}

/// Parses one segment's TP-UD into its header, concatenation IE (if any) and payload.
pub fn parse_segment(user_data: &[u8]) -> Result<(UserDataHeader, Option<Concatenation>, &[u8])> {
    let (header, tail) = UserDataHeader::parse(user_data)?;
    let concat = header.concatenation()?;
    Ok((header, concat, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_sms_layout() {
        let segments = split_packet(
            PacketKind::Command,
            &[0xAB; 137],
            ConcatReference::EightBit(1),
        )
        .unwrap();
        assert_eq!(segments.len(), 1);
        assert_eq!(&segments[0][..3], &[0x02, 0x70, 0x00]);
        assert_eq!(segments[0].len(), 140);
        let por =
            split_packet(PacketKind::Response, &[1, 2], ConcatReference::EightBit(1)).unwrap();
        assert_eq!(por, vec![vec![0x02, 0x71, 0x00, 1, 2]]);
    }

    #[test]
    fn concatenated_layout_8bit() {
        let packet: Vec<u8> = (0..=137u8).collect();
        let segments = split_packet(
            PacketKind::Command,
            &packet,
            ConcatReference::EightBit(0x42),
        )
        .unwrap();
        assert_eq!(segments.len(), 2);
        // GSM 03.48 table 7: concatenation IE first, then the CPI.
        assert_eq!(
            &segments[0][..8],
            &[0x07, 0x00, 0x03, 0x42, 0x02, 0x01, 0x70, 0x00]
        );
        assert_eq!(segments[0].len(), 140);
        assert_eq!(&segments[1][..6], &[0x05, 0x00, 0x03, 0x42, 0x02, 0x02]);
        assert_eq!(&segments[1][6..], &packet[132..]);
    }

    #[test]
    fn concatenated_layout_16bit() {
        let packet = vec![0x55; 300];
        let segments = split_packet(
            PacketKind::Response,
            &packet,
            ConcatReference::SixteenBit(0xBEEF),
        )
        .unwrap();
        assert_eq!(segments.len(), 3);
        assert_eq!(
            &segments[0][..9],
            &[0x08, 0x08, 0x04, 0xBE, 0xEF, 0x03, 0x01, 0x71, 0x00]
        );
        assert_eq!(
            &segments[2][..7],
            &[0x06, 0x08, 0x04, 0xBE, 0xEF, 0x03, 0x03]
        );
        assert_eq!(segments[0].len() - 9 + segments[1].len() - 7, 131 + 133);
    }

    #[test]
    fn segment_count_boundaries() {
        let r8 = ConcatReference::EightBit(0);
        let r16 = ConcatReference::SixteenBit(0);
        assert_eq!(segment_count(137, r8), Ok(1));
        assert_eq!(segment_count(138, r8), Ok(2));
        assert_eq!(segment_count(132 + 134, r8), Ok(2));
        assert_eq!(segment_count(132 + 134 + 1, r8), Ok(3));
        assert_eq!(segment_count(131 + 133, r16), Ok(2));
        assert_eq!(segment_count(131 + 133 + 1, r16), Ok(3));
        assert_eq!(max_packet_len(r8), 132 + 254 * 134);
        assert_eq!(max_packet_len(r16), 131 + 254 * 133);
    }
}
