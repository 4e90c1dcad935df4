//! SMPP 3.4 ESME session (client side) on the rusmpp codec, implementing the Transport contract.
//!
//! [`SmppTransport`] carries SCP80 command packets (and plain / class 0 texts) to an SMSC as
//! `submit_sm`s and reports what happens through the [`otagw_transport::EventSink`]:
//!
//! - **binds**: [`SmppConfig::binds`] sessions, each a `bind_transceiver` or a
//!   `bind_transmitter` + `bind_receiver` pair ([`BindMode`]), interface_version 0x34
//!   (SMPP 3.4 section 4.1). A refused bind is a typed [`SmppError::BindRejected`] naming the
//!   status. Each session answers the SMSC's `enquire_link`, sends its own every
//!   [`SmppConfig::enquire_link_interval`] (section 4.11) and is dropped when one goes unanswered,
//!   reconnects with exponential backoff and jitter ([`ReconnectBackoff`]), and is closed with
//!   `unbind` by [`SmppTransport::shutdown`] (section 4.2).
//! - **TLS** (optional, [`SmppConfig::tls`], rustls on ring): each connection runs the TLS
//!   handshake right after the TCP connect and before the bind, trusting only the configured
//!   CA certificates, checking the configured server name (default: the host part of
//!   [`SmppConfig::address`]) and presenting a client certificate when one is given (mutual
//!   TLS). A failed handshake, or a TLS alert from the SMSC before the bind completes, is a
//!   typed [`SmppError::Tls`] naming the reason ([`TlsFailure`]: unknown CA, name mismatch,
//!   expired, alert, not TLS, ...) in the bind's [`BindStatus::last_error`], and is retried
//!   with the reconnect backoff like a failed connect. Unusable settings (unreadable PEM, no
//!   certificate, a key that does not fit) are refused by [`SmppTransport::start`] as
//!   [`SmppError::InvalidConfig`]. The session itself is the same over TCP and TLS.
//! - **send**: a secured packet is framed by [`crate::split_packet`] (UDH `02 70 00`, or the
//!   concatenation IE + `70 00` then the concatenation IE alone) and each segment becomes one
//!   `submit_sm` with esm_class 0x40 (UDHI), protocol_id 0x7F (SIM data download) and the
//!   configured data_coding (0xF6 or 0x16), registered_delivery 1 when a report is asked for and
//!   a relative validity_period (section 7.1.1). The segments are built once: a resend (after a
//!   timeout, a dropped session or a throttling answer) carries the same short_message bytes,
//!   so the card sees the same counter.
//! - **window and rate**: at most [`SmppConfig::window`] `submit_sm` without a response per
//!   bind, optionally at most [`SmppConfig::rate_limit`] per second; responses are matched by
//!   sequence number. The binds pull segments from one shared queue whenever their window has
//!   room, so the load spreads over them and a slow or throttled bind takes less.
//! - **answers**: ESME_RTHROTTLED (0x58) and ESME_RMSGQFUL (0x14) pause the bind, halve its
//!   window and rate for a while and resend unchanged; ESME_RINVBNDSTS (0x04) drops and rebinds
//!   the session and resends; any other error status fails the message with
//!   `TransportError::Rejected("ESME_RINVDSTADR (0x0B)")`.
//! - **inbound**: every `deliver_sm` is answered with a `deliver_sm_resp`; delivery receipts
//!   (esm_class 0x04) are correlated by `receipted_message_id` or the receipt text (appendix B)
//!   and become `Delivered` / `Failed`; PoRs (UDH IEI 0x71, concatenated or not, in an MO or in
//!   a receipt's `message_payload`) become `ResponsePacket`s.

mod encode;
mod frame;
mod inbound;
mod session;
mod state;
mod status;
pub(crate) mod tls;
mod transport;

use std::time::Duration;

pub use status::SmppStatus;
pub use tls::{PemSource, SmppTls, TlsFailure, TlsIdentity};
pub use transport::{BindRole, BindStatus, SmppTransport};

/// How each bind connects to the SMSC (SMPP 3.4 section 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BindMode {
    /// One `bind_transceiver` session that submits and receives.
    #[default]
    Transceiver,
    /// A `bind_transmitter` session that submits plus a `bind_receiver` session that receives.
    TransmitterReceiver,
}

/// data_coding for SCP80 command packets (TS 31.115 / TS 23.038: 8-bit data, class 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtaDataCoding {
    /// 0xF6: data coding / message class group, 8-bit data, class 2 (SIM specific).
    #[default]
    F6,
    /// 0x16: general data coding group, uncompressed, 8-bit data, class 2.
    X16,
}

impl OtaDataCoding {
    /// The data_coding octet.
    pub fn octet(self) -> u8 {
        match self {
            OtaDataCoding::F6 => 0xF6,
            OtaDataCoding::X16 => 0x16,
        }
    }
}

/// The concatenation reference width used when a message needs several SMS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConcatWidth {
    /// IEI 0x00, 8-bit reference (the usual choice for OTA).
    #[default]
    EightBit,
    /// IEI 0x08, 16-bit reference.
    SixteenBit,
}

/// The originating address put in every `submit_sm`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceAddress {
    /// source_addr (empty: the SMSC fills in its default).
    pub address: String,
    /// source_addr_ton.
    pub ton: u8,
    /// source_addr_npi.
    pub npi: u8,
}

/// Reconnect delays: exponential from `initial` to `max`, each reduced by a random share of at
/// most `jitter` (0.0 to 1.0) so that many binds do not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReconnectBackoff {
    /// First delay after a failure.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Share of the delay that is randomised (0.2: the delay is 80% to 100% of the nominal).
    pub jitter: f64,
}

impl Default for ReconnectBackoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

/// Everything [`SmppTransport`] needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct SmppConfig {
    /// SMSC address, `host:port`.
    pub address: String,
    /// system_id (at most 15 characters).
    pub system_id: String,
    /// password (at most 8 characters).
    pub password: String,
    /// system_type (at most 12 characters, often empty).
    pub system_type: String,
    /// Transceiver, or transmitter + receiver pairs.
    pub bind_mode: BindMode,
    /// Number of binds (each a transceiver session or a transmitter + receiver pair).
    pub binds: usize,
    /// Most `submit_sm` without a response per bind.
    pub window: usize,
    /// Most `submit_sm` per second per bind (`None`: no limit beyond the window).
    pub rate_limit: Option<f64>,
    /// Interval between our `enquire_link`s.
    pub enquire_link_interval: Duration,
    /// How long to wait for any response (`bind_resp`, `submit_sm_resp`, `enquire_link_resp`).
    pub response_timeout: Duration,
    /// TCP connect timeout; with [`SmppConfig::tls`] the TLS handshake gets as long again.
    pub connect_timeout: Duration,
    /// Reconnect delays after a failed connect / bind or a dropped session.
    pub reconnect: ReconnectBackoff,
    /// How long a bind stops submitting after a throttling answer (0x58, 0x14); its window and
    /// rate are halved then and doubled back after each such period without throttling.
    pub throttle_pause: Duration,
    /// Most `submit_sm` sends of one segment that end without an answer (response timeout,
    /// session dropped) before the message fails with a transient error. Throttling answers
    /// are not counted: they are resent until the SMSC takes them.
    pub max_attempts: u32,
    /// data_coding for secured packets.
    pub ota_data_coding: OtaDataCoding,
    /// Originating address.
    pub source: SourceAddress,
    /// Validity in minutes when the message does not give one (`None`: the SMSC's default).
    pub default_validity_minutes: Option<u32>,
    /// Concatenation reference width.
    pub concat_width: ConcatWidth,
    /// How long an accepted message waits for its delivery receipts before it is forgotten.
    pub receipt_wait: Duration,
    /// With `sequential_segments`: how long to wait for one segment's receipt before the
    /// message fails with a timeout.
    pub sequential_receipt_timeout: Duration,
    /// How long a partial concatenated MO is kept waiting for its other segments.
    pub reassembly_timeout: Duration,
    /// Most messages taken by `send` and not yet accepted or failed; `send` waits beyond.
    pub queue_capacity: usize,
    /// Largest PDU accepted from the SMSC (command_length); a larger one drops the session.
    pub max_pdu_len: usize,
    /// Answer a PoR's `deliver_sm` only once the gateway is done with it (it stored the PoR),
    /// so that a PoR taken in by a process that dies is delivered again (the default). Off,
    /// every `deliver_sm` is answered at once: more PoRs per second through a small SMSC
    /// window, and a restart may lose the PoRs taken in but not stored.
    pub answer_pors_after_store: bool,
    /// SMPP over TLS: `None` (the default) is plain TCP; `Some` runs a TLS handshake on
    /// each connection before the bind ([`SmppTls`]: CA, server name, client certificate).
    /// A failed handshake is a [`SmppError::Tls`] and is retried like a failed connect.
    pub tls: Option<SmppTls>,
}

impl SmppConfig {
    /// A configuration with the defaults below and the given SMSC and credentials.
    pub fn new(
        address: impl Into<String>,
        system_id: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            address: address.into(),
            system_id: system_id.into(),
            password: password.into(),
            ..Self::default()
        }
    }
}

impl Default for SmppConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:2775".into(),
            system_id: String::new(),
            password: String::new(),
            system_type: String::new(),
            bind_mode: BindMode::Transceiver,
            binds: 1,
            window: 10,
            rate_limit: None,
            enquire_link_interval: Duration::from_secs(30),
            response_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect: ReconnectBackoff::default(),
            throttle_pause: Duration::from_secs(1),
            max_attempts: 5,
            ota_data_coding: OtaDataCoding::F6,
            source: SourceAddress::default(),
            default_validity_minutes: None,
            concat_width: ConcatWidth::EightBit,
            answer_pors_after_store: true,
            receipt_wait: Duration::from_secs(48 * 3600),
            sequential_receipt_timeout: Duration::from_secs(600),
            reassembly_timeout: Duration::from_secs(600),
            queue_capacity: 100_000,
            max_pdu_len: 65_536,
            tls: None,
        }
    }
}

/// What goes wrong with the SMPP session itself (not with one message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmppError {
    /// A configuration value is out of range.
    #[error("invalid SMPP configuration: {0}")]
    InvalidConfig(String),
    /// `start` was called outside a tokio runtime.
    #[error("SmppTransport::start needs a tokio runtime")]
    NoRuntime,
    /// The TCP connection could not be made.
    #[error("cannot connect to {address}: {reason}")]
    Connect {
        /// The SMSC address.
        address: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake with the SMSC failed (or the SMSC ended the TLS session with an
    /// alert): unknown CA, name mismatch, ... ([`TlsFailure`]).
    #[error("TLS with {address} failed: {failure}")]
    Tls {
        /// The SMSC address.
        address: String,
        /// Why.
        failure: TlsFailure,
    },
    /// The SMSC answered the bind with an error status.
    #[error("bind rejected by the SMSC: {0}")]
    BindRejected(SmppStatus),
    /// No answer in time.
    #[error("no {0} in time")]
    Timeout(&'static str),
    /// The SMSC closed the connection (or asked to unbind).
    #[error("connection closed by the SMSC: {0}")]
    Closed(String),
    /// The SMSC sent something we cannot frame.
    #[error("SMPP protocol error: {0}")]
    Protocol(String),
    /// Reading or writing the socket failed.
    #[error("I/O error: {0}")]
    Io(String),
}
