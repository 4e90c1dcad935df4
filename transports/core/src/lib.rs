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

/// Per-message options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendOptions {
    /// Validity period in minutes (`None`: the network's default).
    pub validity_minutes: Option<u32>,
    /// Ask the network for a delivery report.
    pub delivery_report: bool,
    /// Send the next segment only after the previous one's delivery report (campaign `seq`).
    pub sequential_segments: bool,
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
    },
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
