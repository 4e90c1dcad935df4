//! Key material for one card's KIc/KID pair, resolved against the SPI and expanded once.

use super::algorithm::{CipherAlgorithm, IntegrityAlgorithm};
use super::crypto::{CipherKey, IntegrityKey};
use super::spi::{Integrity, Spi};
use super::SecurityError;

/// What the caller knows about a card's keys: values and, for implicit codings, algorithms.
#[derive(Clone, Default)]
pub struct KeyConfig<'a> {
    /// KIc key value.
    pub kic_key: Option<&'a [u8]>,
    /// KID key value.
    pub kid_key: Option<&'a [u8]>,
    /// Algorithm for the KIc where its coding is implicit; must agree where it is explicit.
    pub kic_algorithm: Option<CipherAlgorithm>,
    /// Algorithm for the KID where its coding is implicit; must agree where it is explicit.
    pub kid_algorithm: Option<IntegrityAlgorithm>,
    /// AES-CMAC length (8 by default, or 4).
    pub cc_len: Option<usize>,
}

/// Expanded keys for one exchange: ciphering, command integrity and PoR integrity.
#[derive(Clone, Debug, Default)]
pub struct Scp80Keys {
    cipher: Option<CipherKey>,
    integrity: Option<IntegrityKey>,
    /// Only where the PoR's integrity kind differs from the command's (RC vs CC); boxed, as
    /// that is rare, to keep the key set small (it is built and moved per card).
    por_integrity: Option<Box<IntegrityKey>>,
    por_shares_integrity: bool,
}

/// A missing key is no error when only the PoR needs it.
fn por_only<T>(r: Result<Option<T>, SecurityError>) -> Result<Option<T>, SecurityError> {
    match r {
        Err(SecurityError::MissingKey { .. }) => Ok(None),
        other => other,
    }
}

impl Scp80Keys {
    /// Resolves algorithms from the KIc/KID octets and the SPI, checks key lengths, and expands
    /// the keys the SPI needs. A key the command needs must be there; one only the PoR needs
    /// may be missing, and opening such a PoR then fails naming it.
    pub fn resolve(
        spi: &Spi,
        kic: u8,
        kid: u8,
        cfg: &KeyConfig<'_>,
    ) -> Result<Self, SecurityError> {
        let cipher = || -> Result<Option<CipherKey>, SecurityError> {
            let algorithm = CipherAlgorithm::from_kic(kic, cfg.kic_algorithm)?;
            let key = cfg.kic_key.ok_or(SecurityError::MissingKey {
                field: "KIc",
                what: "ciphering",
            })?;
            Ok(Some(CipherKey::new(algorithm, key)?))
        };
        let cipher = if spi.ciphered {
            cipher()?
        } else if spi.por_ciphered {
            por_only(cipher())?
        } else {
            None
        };
        let integrity_key = |integrity: Integrity| -> Result<Option<IntegrityKey>, SecurityError> {
            if integrity == Integrity::None {
                return Ok(None);
            }
            let algorithm = IntegrityAlgorithm::from_kid(kid, integrity, cfg.kid_algorithm)?;
            // An RC needs no key value; a CC does.
            let key = match (cfg.kid_key, algorithm.is_rc()) {
                (Some(k), _) => k,
                (None, true) => &[],
                (None, false) => {
                    return Err(SecurityError::MissingKey {
                        field: "KID",
                        what: "a cryptographic checksum",
                    })
                }
            };
            IntegrityKey::new(algorithm, key, cfg.cc_len).map(Some)
        };
        let integrity = integrity_key(spi.integrity)?;
        let por_shares_integrity = spi.por_integrity == spi.integrity;
        let por_integrity = if por_shares_integrity {
            None
        } else {
            por_only(integrity_key(spi.por_integrity))?.map(Box::new)
        };
        Ok(Self {
            cipher,
            integrity,
            por_integrity,
            por_shares_integrity,
        })
    }

    /// Keys built directly, for callers that resolved algorithms themselves.
    pub fn from_parts(
        cipher: Option<CipherKey>,
        integrity: Option<IntegrityKey>,
        por_integrity: Option<IntegrityKey>,
    ) -> Self {
        Self {
            cipher,
            integrity,
            por_integrity: por_integrity.map(Box::new),
            por_shares_integrity: false,
        }
    }

    /// KIc key, present when the command (or, if given, the PoR) is ciphered.
    pub fn cipher(&self) -> Option<&CipherKey> {
        self.cipher.as_ref()
    }

    /// KID key for the command's RC/CC.
    pub fn integrity(&self) -> Option<&IntegrityKey> {
        self.integrity.as_ref()
    }

    /// KID key for the PoR's RC/CC (the same key, read as RC or CC per the PoR's SPI bits).
    pub fn por_integrity(&self) -> Option<&IntegrityKey> {
        if self.por_shares_integrity {
            self.integrity.as_ref()
        } else {
            self.por_integrity.as_deref()
        }
    }
}
