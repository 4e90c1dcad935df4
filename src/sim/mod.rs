//! The virtual UICC: the card side of SCP80, a file system, RFM and RAM applets, fleets.
//!
//! Sans-IO like the rest of the protocol code: a [`VirtualCard`] is a state machine that takes
//! a command packet (from CPL on) and gives back its PoR; a [`Fleet`] holds many cards behind
//! sharded locks and plugs into the SMSC simulator as its
//! [`HandsetNetwork`](otagw_sms::smsc_sim::HandsetNetwork).
//!
//! - [`card`]: identity, key sets and counters, TAR dispatch, security checks, PoR building.
//! - [`rfm`]: SELECT / READ / UPDATE BINARY and RECORD in classes `A0` and `00`, on a file
//!   system shared by all cards as one template, with per-card copy-on-write changes ([`fs`]).
//! - [`ram`]: a GlobalPlatform registry driven by INSTALL, LOAD, DELETE and GET STATUS; the
//!   ISD also runs PUT KEY on the card's key sets (`isd.rs`).
//! - [`fleet`]: many cards keyed by MSISDN and ICCID, from a vendor output file or generated.
//! - [`catp_client`]: terminals that open the CAT_TP link a push asks for (the one part here
//!   that does I/O: tokio UDP sockets, one per link).
//!
//! Nothing here panics on input bytes: every packet a card receives is untrusted.

pub mod card;
pub mod catp_client;
mod exec;
pub mod fleet;
pub mod fs;
pub mod https_client;
mod isd;
pub mod ram;
pub mod rfm;
pub mod subscriptions;

pub use card::{
    CardOutcome, CardPolicy, KeySet, VirtualCard, TAR_RAM_ISD, TAR_RFM_GSM, TAR_RFM_USIM,
};
pub use fleet::{Fleet, FleetDefaults, FleetError};
pub use fs::{FileStructure, USIM_AID};
pub use ram::{AppletInstance, LoadFileEntry, Registry, ISD_AID};
pub use rfm::RfmView;

/// Errors building a card.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// An ICCID, IMSI or MSISDN that is not the right number of digits.
    #[error("{field} {value:?} is not valid: expected {reason}")]
    Identity {
        /// ICCID, IMSI or MSISDN.
        field: &'static str,
        /// The value given.
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// A key version outside 0..=15 (the high nibble of KIc/KID).
    #[error("key version {0} is out of 0..=15")]
    KeyVersion(u8),
    /// A key whose length no SCP80 algorithm takes.
    #[error("{field} key of {len} octets: SCP80 keys are 8, 16, 24 or 32 octets")]
    KeyLength {
        /// KIc or KID.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// A key whose length does not fit the algorithm configured for it.
    #[error("{field} key of {len} octets does not fit {algorithm} ({expected} octets)")]
    KeyAlgorithm {
        /// KIc or KID.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The algorithm.
        algorithm: &'static str,
        /// Lengths it takes.
        expected: &'static str,
    },
}
