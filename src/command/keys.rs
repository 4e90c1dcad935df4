//! A card's key sets as the command model sees them: the store keeps them (sealed), the script
//! builder reads them (KEY_UPDATE enciphers new keys under the KIK).

use crate::clock::Millis;
use crate::security::{CipherAlgorithm, IntegrityAlgorithm};

/// Key material of one key set, in clear (only in memory; sealed in the store).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial {
    /// KIc value (may be empty when the card has none).
    pub kic: Vec<u8>,
    /// KID value.
    pub kid: Vec<u8>,
    /// Key-encryption key used by PUT KEY (KIK / DEK), when known.
    pub kik: Option<Vec<u8>>,
}

impl std::fmt::Debug for KeyMaterial {
    // Key values are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kic_len", &self.kic.len())
            .field("kid_len", &self.kid.len())
            .field("kik_len", &self.kik.as_ref().map(Vec::len))
            .finish()
    }
}

/// One key set of a card (one key version, 1..=15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetRecord {
    /// Key version (high nibble of KIc/KID).
    pub version: u8,
    /// Algorithm for implicit KIc codings.
    pub kic_algorithm: Option<CipherAlgorithm>,
    /// Algorithm for implicit KID codings.
    pub kid_algorithm: Option<IntegrityAlgorithm>,
    /// The keys.
    pub keys: KeyMaterial,
    /// Last counter value used with this key set (the next command uses a higher one).
    pub counter: u64,
    /// Last successful KEY_UPDATE, ms.
    pub rotated_at: Option<Millis>,
}
