//! SMSC simulator: an SMPP 3.4 server that routes MT messages to simulated handsets.
//!
//! The far side (handsets with their cards) is behind [`HandsetNetwork`], so this crate needs no
//! knowledge of cards: `otagw smsc-sim` plugs in the virtual UICC fleet (`otagw::sim`).

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

pub use config::{Credentials, FaultConfig, SmscConfig};
pub use pdu::{receipt_date, receipt_text, ReceiptState};
pub use rng::XorShift64;
pub use server::{SmscHandle, SmscSimulator};
pub use stats::SmscStats;
