//! The transport contract every otagw transport implements (SMS-PP over SMPP, CAT_TP, HTTPS).
//!
//! A transport takes an already-secured packet for one card and reports what happens to it as
//! [`DeliveryEvent`]s: accepted by the network (with the network's reference), delivered to the
//! handset, failed (transient or permanent), and response packets (PoRs) coming back. It knows
//! nothing of campaigns, stores or keys: the gateway secures, the transport carries.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// The gateway's identifier of one send attempt; echoed in every event about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(pub u64);

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where the card is reached.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// MSISDN in international format, digits only (SMS-PP push and trigger).
    pub msisdn: String,
    /// ICCID, for transports whose sessions the card identifies itself in (CAT_TP, HTTPS).
    pub iccid: Option<String>,
}

/// What to carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// An SCP80 command packet from CPL on; the transport frames it (UDH, segments, CAT_TP PDU).
    SecuredPacket {
        /// The packet bytes.
        packet: Vec<u8>,
        /// TAR and counter, for correlating the PoR (TS 31.115: by MSISDN + TAR + counter).
        tar: [u8; 3],
        /// CNTR of the packet.
        counter: [u8; 5],
    },
    /// Plain text to the handset (SMS campaigns); `flash` asks for class 0.
    Text {
        /// The text.
        text: String,
        /// Class 0 (displayed, not stored).
        flash: bool,
    },
}

/// How soon a message goes out relative to others queued on the same link: a transport that
/// queues (SMPP) sends every queued urgent message before normal ones, and normal ones before
/// bulk (campaign) traffic; equal urgency keeps arrival order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    /// Campaign traffic.
    Bulk,
    /// Single commands of the NORMAL class.
    #[default]
    Normal,
    /// Single commands of the URGENT class.
    Urgent,
}

impl Urgency {
    /// Every urgency, most urgent first.
    pub const MOST_URGENT_FIRST: [Urgency; 3] = [Urgency::Urgent, Urgency::Normal, Urgency::Bulk];
}

/// Per-message options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Validity period in minutes (`None`: the network's default).
    pub validity_minutes: Option<u32>,
    /// Ask the network for a delivery report.
    pub delivery_report: bool,
    /// Send the next segment only after the previous one's delivery report (campaign `seq`).
    pub sequential_segments: bool,
    /// Place in the link's queue.
    pub urgency: Urgency,
}

/// One message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The gateway's id for this attempt.
    pub id: MessageId,
    /// The card.
    pub destination: Destination,
    /// What to carry.
    pub payload: Payload,
    /// Options.
    pub options: SendOptions,
}

/// What a transport reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryEvent {
    /// The network took the message (for SMPP: submit_sm_resp OK), with its reference(s).
    Accepted {
        /// The message.
        id: MessageId,
        /// Network references, one per segment.
        network_refs: Vec<String>,
    },
    /// The network reports the message reached the handset. Not a PoR.
    Delivered {
        /// The message.
        id: MessageId,
    },
    /// The message failed.
    Failed {
        /// The message.
        id: MessageId,
        /// Why.
        error: TransportError,
    },
    /// A response packet (PoR) from a card, from RPL on, with where it came from.
    ResponsePacket {
        /// The card's MSISDN as the network gives it.
        from: String,
        /// The PoR bytes from RPL on.
        packet: Vec<u8>,
        /// Whether the bytes carried the SMS UDH 02 71 00 in their CC scope.
        sms_framing: bool,
        /// The network's acknowledgement of the message(s) that carried the PoR, held until
        /// the gateway has recorded what the PoR says (dropped when done with it).
        ack: InboundAck,
    },
    /// A command packet a card sent on its own (TS 102 225 clause 5.1; for example a
    /// subscription switch notification), from CPL on, with where it came from.
    CommandPacket {
        /// The card's MSISDN as the network gives it.
        from: String,
        /// The packet from CPL on.
        packet: Vec<u8>,
        /// The network's acknowledgement, held until the gateway has taken the packet.
        ack: InboundAck,
    },
}

/// An acknowledgement the transport owes the network for an inbound message (for SMPP, the
/// `deliver_sm_resp`), held back until whoever took the message is done with it: it is sent
/// when the last clone is dropped. A PoR whose acknowledgement never went (the process died
/// first) is delivered again by the network, so a PoR is acknowledged only once it is stored;
/// one that could not be stored is answered [`AckStatus::RetryLater`].
///
/// Equality ignores it: two events with the same content are the same event.
#[derive(Clone, Default)]
pub struct InboundAck(Option<Arc<AckOnDrop>>);

/// What an [`InboundAck`] tells the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    /// Taken care of.
    Done,
    /// Not recorded (the store failed): deliver it again later.
    RetryLater,
}

type SendAck = Box<dyn FnOnce(AckStatus) + Send>;

struct AckOnDrop {
    send: std::sync::Mutex<Option<SendAck>>,
    retry: std::sync::atomic::AtomicBool,
}

impl Drop for AckOnDrop {
    fn drop(&mut self) {
        let send = match self.send.get_mut() {
            Ok(f) => f.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let status = if *self.retry.get_mut() {
            AckStatus::RetryLater
        } else {
            AckStatus::Done
        };
        if let Some(send) = send {
            send(status);
        }
    }
}

impl InboundAck {
    /// An acknowledgement that `send` delivers, once, when the last clone is dropped.
    pub fn new(send: impl FnOnce(AckStatus) + Send + 'static) -> Self {
        Self(Some(Arc::new(AckOnDrop {
            send: std::sync::Mutex::new(Some(Box::new(send))),
            retry: std::sync::atomic::AtomicBool::new(false),
        })))
    }

    /// Nothing owed (transports whose inbound messages need no acknowledgement, tests).
    pub fn none() -> Self {
        Self::default()
    }

    /// Asks the network to deliver the message again later (what it carried could not be
    /// recorded), when the acknowledgement goes.
    pub fn retry_later(&self) {
        if let Some(a) = &self.0 {
            a.retry.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// Whether anything is owed.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }
}

impl PartialEq for InboundAck {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for InboundAck {}

impl fmt::Debug for InboundAck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "InboundAck(held)"
        } else {
            "InboundAck(none)"
        })
    }
}

/// A transport failure, transient (retry later, same packet) or permanent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The network asks to slow down (SMPP 0x58 throttled, 0x14 queue full): resend unchanged.
    #[error("throttled by the network: {0}")]
    Throttled(String),
    /// No session to the network right now.
    #[error("not connected: {0}")]
    NotConnected(String),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The network refused the message for good (with its status named).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The payload does not fit what this transport carries.
    #[error("payload does not fit: {0}")]
    PayloadTooLarge(String),
}

impl TransportError {
    /// Whether a resend of the same bytes may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled(_) | Self::NotConnected(_) | Self::Timeout(_)
        )
    }
}

/// Where a transport sends its events.
pub trait EventSink: Send + Sync {
    /// Takes one event. Must not block.
    fn deliver(&self, event: DeliveryEvent);
}

/// How a transport frames SCP80 packets, which decides how the gateway secures commands for it
/// and how the RC/CC of the PoRs it reports is computed (TS 102 225 clause 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PacketFormat {
    /// SMS-PP (TS 31.115): two-octet CPL first; a PoR's RC/CC covers the UDH `02 71 00` when
    /// [`DeliveryEvent::ResponsePacket::sms_framing`] says so, else RPL onwards.
    #[default]
    Sms,
    /// CAT_TP: CPI `01` and a BER length first, included in the RC/CC; PoRs with RPI `02` and
    /// a BER length, also included. The transport reports PoRs with a two-octet RPL (converted)
    /// and `sms_framing: false`.
    CatTp,
}

/// A boxed future, so that `Transport` stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The contract: route a message to a card, report what happens through the sink.
pub trait Transport: Send + Sync {
    /// Short name used in configuration and metrics (`sms`, `catp`, `https`).
    fn name(&self) -> &'static str;
    /// Largest command packet (from CPL on) this transport carries.
    fn max_packet_len(&self) -> usize;
    /// Hands a message over. `Ok` means the transport owns it and events will follow; an error
    /// means it was not taken (nothing was sent).
    fn send(&self, message: OutboundMessage) -> BoxFuture<'_, Result<(), TransportError>>;
    /// Sets the sink for this transport's events.
    fn set_event_sink(&self, sink: Arc<dyn EventSink>);
    /// How this transport frames command packets and PoRs.
    fn packet_format(&self) -> PacketFormat {
        PacketFormat::Sms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn recording(into: &Arc<Mutex<Vec<AckStatus>>>) -> InboundAck {
        let into = into.clone();
        InboundAck::new(move |status| into.lock().unwrap().push(status))
    }

    #[test]
    fn an_ack_goes_once_when_its_last_clone_is_dropped() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let a = recording(&sent);
        let b = a.clone();
        drop(a);
        assert!(sent.lock().unwrap().is_empty(), "a clone still holds it");
        drop(b);
        assert_eq!(*sent.lock().unwrap(), vec![AckStatus::Done]);
        assert!(InboundAck::none().is_none());
    }

    #[test]
    fn retry_later_from_any_clone_is_what_goes() {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let a = recording(&sent);
        let b = a.clone();
        b.retry_later();
        drop(b);
        assert!(sent.lock().unwrap().is_empty());
        drop(a);
        assert_eq!(*sent.lock().unwrap(), vec![AckStatus::RetryLater]);
    }
}
