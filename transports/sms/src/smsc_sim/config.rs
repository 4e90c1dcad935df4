//! Configuration of the SMSC simulator.

use std::net::SocketAddr;
use std::time::Duration;

use crate::smpp::{PemSource, TlsIdentity};

/// An accepted ESME account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The bind's system_id.
    pub system_id: String,
    /// The bind's password.
    pub password: String,
}

impl Credentials {
    /// An account from its system_id and password.
    pub fn new(system_id: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            system_id: system_id.into(),
            password: password.into(),
        }
    }
}

/// Fault injection. Every accepted submit_sm draws one number from a xorshift generator seeded
/// with `seed`; the shares are applied in the order throttle, drop, delay (capped so that they
/// sum to at most 1). All zero (the default) turns fault injection off at no cost.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// Seed of the deterministic generator.
    pub seed: u64,
    /// Share of submit_sm answered ESME_RTHROTTLED (0x58) instead of being accepted.
    pub throttle_share: f64,
    /// Share of submit_sm accepted (submit_sm_resp OK) then lost: no delivery, no receipt, no PoR.
    pub drop_share: f64,
    /// Share of submit_sm delivered late, by a delay drawn uniformly from `delay_min..=delay_max`
    /// (on top of [`SmscConfig::delivery_delay`]).
    pub delay_share: f64,
    /// Shortest injected delay.
    pub delay_min: Duration,
    /// Longest injected delay.
    pub delay_max: Duration,
    /// Share of delivered command packets whose PoR is lost: the card ran the command, the
    /// receipt says delivered, no PoR comes (its own generator, so the other decisions of a
    /// seed stay as they were).
    pub por_drop_share: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            throttle_share: 0.0,
            drop_share: 0.0,
            delay_share: 0.0,
            delay_min: Duration::from_millis(100),
            delay_max: Duration::from_millis(1000),
            por_drop_share: 0.0,
        }
    }
}

/// TLS on the simulator's listener ([`SmscConfig::tls`]): every connection
/// must complete a TLS handshake before its first PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmscTls {
    /// The simulator's certificate chain and key.
    pub identity: TlsIdentity,
    /// When set, ESMEs must present a certificate that chains to these CA certificates
    /// (mutual TLS); otherwise none is asked for.
    pub client_ca: Option<PemSource>,
    /// A connection whose handshake has not completed in this time is closed.
    pub handshake_timeout: Duration,
}

impl SmscTls {
    /// Serves `identity`, asks for no client certificate, 10 s handshake timeout.
    pub fn new(identity: TlsIdentity) -> Self {
        Self {
            identity,
            client_ca: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    /// Requires client certificates issued by `ca`.
    pub fn with_client_ca(mut self, ca: PemSource) -> Self {
        self.client_ca = Some(ca);
        self
    }
}

/// How the simulator listens, authenticates and behaves.
#[derive(Debug, Clone)]
pub struct SmscConfig {
    /// Address to listen on (port 0 picks a free port; see [`super::SmscHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Accepted accounts; `None` accepts any system_id and password.
    pub credentials: Option<Vec<Credentials>>,
    /// The SMSC's own system_id, returned in bind responses.
    pub system_id: String,
    /// Fault injection.
    pub faults: FaultConfig,
    /// Delivery receipts when registered_delivery asks for them. `false` never sends a plain
    /// receipt; a receipt carrying a PoR (PoR via RP-ACK) is sent anyway.
    pub receipts: bool,
    /// Time between accepting a message and its delivery to the handset (receipts and PoRs
    /// follow it). Zero delivers inline, before the next PDU of the session is read.
    pub delivery_delay: Duration,
    /// A session silent for this long gets an enquire_link; one silent for twice as long is
    /// closed. `None` never probes.
    pub enquire_link_interval: Option<Duration>,
    /// A concatenated message still missing segments this long after its first segment is
    /// abandoned (its segments get receipts as if delivered to the handset, no PoR).
    pub reassembly_timeout: Duration,
    /// First message_id (ids are consecutive, lowercase hex). `None` derives it from the wall
    /// clock so that ids stay unique across restarts.
    pub message_id_base: Option<u64>,
    /// Largest accepted command_length; a larger (or one below 16) gets generic_nack
    /// ESME_RINVCMDLEN and the session is closed (the stream cannot be re-framed).
    pub max_pdu_len: usize,
    /// deliver_sm waiting for a receiving bind of their system_id, per system_id; beyond this
    /// the oldest are discarded.
    pub backlog_limit: usize,
    /// deliver_sm not acknowledged when their session ends are sent again on another receiving
    /// bind of the same system_id (or kept in the backlog until one binds).
    pub redeliver_unacked: bool,
    /// At most this many deliver_sm unanswered per session, as an SMSC's window (`None`, the
    /// default: no limit); the others wait in order.
    pub deliver_window: Option<usize>,
    /// Also put the classic receipt text in short_message of a receipt that carries a PoR in
    /// message_payload. Off by default: SMPP 3.4 wants sm_length 0 when message_payload is used.
    pub receipt_text_with_payload: bool,
    /// TLS on the listener: `None` (the default) serves plain SMPP; `Some` serves only TLS
    /// connections (a plain client is dropped when its handshake fails).
    pub tls: Option<SmscTls>,
}

impl Default for SmscConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 2775)),
            credentials: None,
            system_id: "otagw-smsc".to_string(),
            faults: FaultConfig::default(),
            receipts: true,
            delivery_delay: Duration::ZERO,
            enquire_link_interval: Some(Duration::from_secs(30)),
            reassembly_timeout: Duration::from_secs(60),
            message_id_base: None,
            max_pdu_len: 65_536,
            backlog_limit: 100_000,
            redeliver_unacked: true,
            deliver_window: None,
            receipt_text_with_payload: false,
            tls: None,
        }
    }
}

impl SmscConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            ..Self::default()
        }
    }
}
