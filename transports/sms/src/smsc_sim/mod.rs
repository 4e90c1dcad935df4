//! SMSC simulator: an SMPP 3.4 server that routes MT messages to simulated handsets.
//!
//! The far side (handsets with their cards) is behind [`HandsetNetwork`], so this crate needs no
//! knowledge of cards: `otagw smsc-sim` plugs in the virtual UICC fleet (`otagw::sim`).
//!
//! [`SmscSimulator::start`] binds a listener and returns a [`SmscHandle`] (local address,
//! counters, [`SmscHandle::shutdown`]). Each connection is one reader task that handles PDUs
//! inline (the network is called there) and one writer task fed by a channel, which batches
//! whatever is queued into one write.
//!
//! With [`SmscConfig::tls`] ([`SmscTls`]: certificate chain and key, optionally the CA that
//! client certificates must chain to) the listener serves only TLS: each connection completes
//! a TLS handshake (bounded by [`SmscTls::handshake_timeout`]) and then runs the same session
//! as over plain TCP; failed or timed-out handshakes are counted in
//! [`SmscStats::tls_handshake_failures`] and the connection is dropped.
//!
//! Conventions (SMPP 3.4):
//! - binds: bind_transmitter / bind_receiver / bind_transceiver answered with the SMSC's
//!   system_id and sc_interface_version 0x34; refused with ESME_RINVPASWD (wrong password),
//!   ESME_RBINDFAIL (unknown system_id, or shutting down), ESME_RALYBND (already bound); error
//!   responses carry no body. submit_sm before a bind or on a receiver: ESME_RINVBNDSTS.
//! - submit_sm: submit_sm_resp with a message_id (consecutive, lowercase hex); the MSISDN is
//!   destination_addr without '+'. The user data is short_message, or message_payload when
//!   short_message is empty. OTA = protocol_id 0x7F with UDHI (esm_class bit 6) and a UDH with
//!   IEI 0x70 or a concatenation IE: segments are reassembled per (system_id, MSISDN) and the
//!   complete command packet goes to [`HandsetNetwork::command_packet`]. Anything else is plain
//!   and [`HandsetNetwork::knows`] decides delivered or undeliverable.
//! - receipts (registered_delivery & 3 == 1 always, == 2 on failure only; per segment for a
//!   concatenated message): deliver_sm esm_class 0x04, source = the submit's destination,
//!   destination = the submit's source, short_message
//!   `id:<id> sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD err:000 text:`
//!   (`dlvrd:000 ... stat:UNDELIV err:001` for an unknown subscriber, `err:255` for OTA framing
//!   the handset refused), TLVs receipted_message_id (0x001E) and message_state (0x0427: 2
//!   DELIVERED, 5 UNDELIVERABLE).
//! - PoR via SMS-SUBMIT ([`PorReply::via_submit`]): MO deliver_sm after the receipt, source =
//!   MSISDN (TON 1, NPI 1), destination = the submit's source, esm_class 0x40, protocol_id 0x7F,
//!   data_coding 0xF6, short_message = the PoR user data; above 140 octets, concatenated
//!   segments (8-bit reference) from [`crate::split_packet`].
//! - PoR via RP-ACK: the receipt of the segment that completed the command (sent even if no
//!   receipt was asked) has esm_class 0x44, protocol_id 0x7F, data_coding 0xF6, sm_length 0
//!   (or the receipt text, [`SmscConfig::receipt_text_with_payload`]) and TLV message_payload
//!   (0x0424) = the PoR user data, besides receipted_message_id and message_state.
//! - deliver_sm go round-robin to the binds of the same system_id that can receive, or wait in a
//!   bounded backlog until one binds; unacknowledged ones are sent again when their session
//!   ends. deliver_sm_resp with an error status is counted, not retried.
//! - unknown command ids: generic_nack ESME_RINVCMDID; an undecodable body: generic_nack
//!   ESME_RINVCMDLEN and the session goes on; a command_length below 16 or above
//!   [`SmscConfig::max_pdu_len`]: generic_nack ESME_RINVCMDLEN and the connection is closed.
//! - enquire_link is answered; a session silent for [`SmscConfig::enquire_link_interval`] gets
//!   one, and is closed after twice that. Shutdown sends unbind to bound sessions.

/// What a handset's card answered to an OTA command packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandsetReply {
    /// No subscriber with that MSISDN: the SMSC reports the message undeliverable.
    UnknownSubscriber,
    /// The SMS reached the handset; the card answered with a PoR, or with nothing (SPI: no PoR).
    Delivered {
        /// The card's response packet, if any.
        por: Option<PorReply>,
    },
}

/// A card's response packet and how the card sends it (SPI second octet, b6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PorReply {
    /// SMS user data: UDH `02 71 00` then the response packet from RPL on.
    pub user_data: Vec<u8>,
    /// `true`: the card sends it as its own SMS-SUBMIT (the SMSC delivers it to the ESME as an MO
    /// deliver_sm, concatenated if longer than 140 octets); `false`: it rides the RP-ACK and the
    /// SMSC hands it back in the delivery receipt.
    pub via_submit: bool,
}

/// The handsets behind the simulated SMSC.
pub trait HandsetNetwork: Send + Sync + 'static {
    /// A complete OTA command packet (from CPL on, after reassembly of concatenated segments)
    /// reached the card of `msisdn` (digits only, no '+').
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> HandsetReply;
    /// Whether `msisdn` is a known subscriber (plain-text and class 0 messages are only
    /// delivered, never answered).
    fn knows(&self, msisdn: &str) -> bool;
}

mod config;
mod delivery;
pub mod pdu;
mod rng;
mod router;
mod server;
mod session;
mod stats;

pub use crate::smpp::{PemSource, TlsIdentity};
pub use config::{Credentials, FaultConfig, SmscConfig, SmscTls};
pub use pdu::{receipt_date, receipt_text, ReceiptState};
pub use rng::XorShift64;
pub use server::{MoSender, SmscHandle, SmscSimulator};
pub use stats::SmscStats;
