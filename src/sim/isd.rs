//! The Issuer Security Domain as the RAM TAR (000000) reaches it: the GlobalPlatform registry
//! commands of [`super::ram`], plus PUT KEY on the card's SCP80 key sets (GP Card Specification
//! 2.3 clause 11.8, TS 102 226 clause 8.2.1; the command coding is in [`crate::script::gp`]).
//!
//! PUT KEY deciphers the new keys with the KIK of the key set that secured the packet, checks
//! their check values, and replaces keys of the key version in P1 (or adds a key set for P1
//! `00`): identifier 1 the KIc, 2 the KID, 3 the KIK. A replaced key set keeps its counter and
//! its configured algorithms. Nothing changes unless every key is accepted.
//!
//! | condition | SW |
//! |---|---|
//! | done: response data = new key version, then the 3-octet KCV of each key (with or without Le) | 9000 |
//! | the run is not secured by a key set (no SCP80 packet), a KCV does not match (wrong KIK, corrupted key), or the KIK cannot decipher that key type (e.g. a 32-octet KIK and DES keys) | 6982 |
//! | the securing key set has no KIK; P1's key set does not exist; a key identifier other than 1..=3 | 6A88 |
//! | malformed data, unknown key type, key length or family the key set cannot take, new version outside 1..=15 or already in use | 6A80 |

use crate::script::gp::{
    key_check_value_with, parse_put_key, KcvFill, KeyType, PutKeyError, INS_PUT_KEY,
};
use crate::script::{CApdu, RApdu};
use crate::security::{CipherAlgorithm, IntegrityAlgorithm};

use super::card::KeySet;
use super::exec::Applet;
use super::ram::Ram;

mod sw {
    pub const OK: u16 = 0x9000;
    pub const SECURITY: u16 = 0x6982;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const NOT_FOUND: u16 = 0x6A88;
}

fn status(sw: u16) -> RApdu {
    RApdu::new(Vec::new(), sw)
}

/// One command packet's run of the ISD: RAM commands on the registry, PUT KEY on the key sets.
pub(crate) struct Isd<'a> {
    ram: Ram<'a>,
    keys: &'a mut Vec<KeySet>,
    /// Key version of the key set that secured the packet; `None` for unsecured runs.
    key_version: Option<u8>,
    /// The AES key check value fill this card uses.
    kcv_fill: KcvFill,
}

impl<'a> Isd<'a> {
    pub fn new(
        ram: Ram<'a>,
        keys: &'a mut Vec<KeySet>,
        key_version: Option<u8>,
        kcv_fill: KcvFill,
    ) -> Self {
        Isd {
            ram,
            keys,
            key_version,
            kcv_fill,
        }
    }

    fn put_key(&mut self, c: &CApdu) -> RApdu {
        let Some(version) = self.key_version else {
            return status(sw::SECURITY);
        };
        let Some(kik) = self
            .keys
            .iter()
            .find(|k| k.version() == version)
            .and_then(KeySet::kik)
            .map(<[u8]>::to_vec)
        else {
            return status(sw::NOT_FOUND);
        };
        let cmd = match parse_put_key(c, &kik, self.kcv_fill) {
            Ok(cmd) => cmd,
            Err(PutKeyError::KcvMismatch { .. } | PutKeyError::KikLength { .. }) => {
                return status(sw::SECURITY)
            }
            Err(_) => return status(sw::WRONG_DATA),
        };
        if cmd.keys.iter().any(|k| !(1..=3).contains(&k.id)) {
            return status(sw::NOT_FOUND);
        }
        if !(1..=15).contains(&cmd.new_version) {
            return status(sw::WRONG_DATA);
        }
        let position = |v: u8| self.keys.iter().position(|k| k.version() == v);
        let (slot, base) = match cmd.replaced_version {
            Some(old) => {
                let Some(i) = position(old) else {
                    return status(sw::NOT_FOUND);
                };
                if cmd.new_version != old && position(cmd.new_version).is_some() {
                    return status(sw::WRONG_DATA);
                }
                (Some(i), self.keys.get(i).cloned())
            }
            None => {
                if position(cmd.new_version).is_some() {
                    return status(sw::WRONG_DATA);
                }
                (None, KeySet::new(cmd.new_version, &[], &[]).ok())
            }
        };
        let Some(base) = base else {
            return status(sw::WRONG_DATA);
        };
        let mut updated = match base.with_version(cmd.new_version) {
            Ok(k) => k,
            Err(_) => return status(sw::WRONG_DATA),
        };
        for key in &cmd.keys {
            if !family_fits(&updated, key.id, key.key_type) {
                return status(sw::WRONG_DATA);
            }
            updated = match updated.with_key(key.id, &key.value) {
                Ok(k) => k,
                Err(_) => return status(sw::WRONG_DATA),
            };
        }
        let mut response = vec![cmd.new_version];
        for key in &cmd.keys {
            // Checked KCVs are prefixes of the computed one; answer the full 3 octets.
            match key_check_value_with(key.key_type, &key.value, self.kcv_fill) {
                Ok(kcv) => response.extend_from_slice(&kcv),
                Err(_) => return status(sw::WRONG_DATA),
            }
        }
        match slot.and_then(|i| self.keys.get_mut(i)) {
            Some(existing) => *existing = updated,
            None => {
                self.keys.push(updated);
                self.keys.sort_by_key(KeySet::version);
            }
        }
        RApdu::new(response, sw::OK)
    }
}

/// Whether a key of `key_type` fits the algorithm the key set configures for that identifier
/// (AES keys for AES algorithms, DES keys for the DES family; anything where none is set and
/// for the KIK).
fn family_fits(set: &KeySet, id: u8, key_type: KeyType) -> bool {
    let aes = key_type == KeyType::Aes;
    match id {
        1 => set
            .kic_algorithm()
            .is_none_or(|a| (a == CipherAlgorithm::AesCbc) == aes),
        2 => set.kid_algorithm().is_none_or(|a| match a {
            IntegrityAlgorithm::AesCmac => aes,
            IntegrityAlgorithm::Crc16 | IntegrityAlgorithm::Crc32 => true,
            _ => !aes,
        }),
        _ => true,
    }
}

impl Applet for Isd<'_> {
    fn execute(&mut self, apdu: &CApdu) -> RApdu {
        if apdu.ins() == INS_PUT_KEY && matches!(apdu.cla(), 0x80 | 0x84) {
            return self.put_key(apdu);
        }
        self.ram.execute(apdu)
    }
}
