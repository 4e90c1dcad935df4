//! Block ciphers, MACs and CRCs behind SCP80 (TS 102 225 clause 5.1), keyed once per card.
//!
//! AES runs on RustCrypto's `aes` (AES-NI where the CPU has it) and `cmac`. DES and 3DES run on
//! OpenSSL's libcrypto (see `des.rs` for why), which does not refuse the weak or degenerate
//! keys SIM cards use (all-zero keys, 3DES with K1 == K2).

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

use super::algorithm::{CipherAlgorithm, IntegrityAlgorithm};
use super::des::{CbcMac, DesKey};
use super::SecurityError;

const CRC16_X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

#[derive(Clone)]
enum CipherImpl {
    Des { key: DesKey, ecb: bool },
    Aes(AesEncKey),
}

/// A ciphering key (KIc) with its algorithm, expanded once and used for both directions.
#[derive(Clone)]
pub struct CipherKey {
    algorithm: CipherAlgorithm,
    imp: CipherImpl,
}

impl std::fmt::Debug for CipherKey {
    // Key material is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CipherKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl CipherKey {
    /// Checks the key length against the algorithm and expands the key.
    #[inline]
    pub fn new(algorithm: CipherAlgorithm, key: &[u8]) -> Result<Self, SecurityError> {
        let bad_len = || SecurityError::KeyLength {
            field: "KIc",
            algorithm: algorithm.name(),
            expected: algorithm.key_lengths(),
            actual: key.len(),
        };
        if !algorithm.accepts_key_len(key.len()) {
            return Err(bad_len());
        }
        let imp = match algorithm {
            CipherAlgorithm::AesCbc => CipherImpl::Aes(AesEncKey::new(key).ok_or_else(bad_len)?),
            CipherAlgorithm::DesEcb | CipherAlgorithm::TripleDesEcb => CipherImpl::Des {
                key: DesKey::new(key).ok_or_else(bad_len)?,
                ecb: true,
            },
            _ => CipherImpl::Des {
                key: DesKey::new(key).ok_or_else(bad_len)?,
                ecb: false,
            },
        };
        Ok(Self { algorithm, imp })
    }

    /// The algorithm this key is for.
    pub fn algorithm(&self) -> CipherAlgorithm {
        self.algorithm
    }

    /// Block length in octets: 8 for the DES family, 16 for AES.
    pub fn block_len(&self) -> usize {
        self.algorithm.block_len()
    }

    /// Enciphers `data` in place (CBC with a zero IV, or ECB). Its length must be a block multiple.
    pub fn encrypt(&self, data: &mut [u8]) -> Result<(), SecurityError> {
        self.check_blocks(data.len())?;
        match &self.imp {
            CipherImpl::Des { key, ecb: true } => {
                key.ecb(data, true);
                Ok(())
            }
            CipherImpl::Des { key, ecb: false } => {
                key.cbc(data, &mut [0u8; 8], true);
                Ok(())
            }
            CipherImpl::Aes(k) => {
                k.cbc_encrypt(data);
                Ok(())
            }
        }
    }

    /// Deciphers `data` in place. Its length must be a block multiple.
    pub fn decrypt(&self, data: &mut [u8]) -> Result<(), SecurityError> {
        self.check_blocks(data.len())?;
        match &self.imp {
            CipherImpl::Des { key, ecb: true } => {
                key.ecb(data, false);
                Ok(())
            }
            CipherImpl::Des { key, ecb: false } => {
                key.cbc(data, &mut [0u8; 8], false);
                Ok(())
            }
            CipherImpl::Aes(k) => {
                k.cbc_decrypt(data);
                Ok(())
            }
        }
    }

    fn check_blocks(&self, len: usize) -> Result<(), SecurityError> {
        let block = self.block_len();
        if !len.is_multiple_of(block) {
            return Err(SecurityError::NotBlockMultiple { length: len, block });
        }
        Ok(())
    }
}

// AES-CMAC's schedule is inline on purpose: it is built per card, and boxing it cost an
// allocation per key set.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum IntegrityImpl {
    DesCbcMac(DesKey),
    AesCmac(CmacKey),
    Crc16,
    Crc32,
}

/// An integrity key (KID) with its algorithm and the length of the RC/CC it produces.
#[derive(Clone)]
pub struct IntegrityKey {
    algorithm: IntegrityAlgorithm,
    len: usize,
    imp: IntegrityImpl,
}

impl std::fmt::Debug for IntegrityKey {
    // Key material is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntegrityKey")
            .field("algorithm", &self.algorithm)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl IntegrityKey {
    /// Checks the key length against the algorithm. `cc_len` applies to AES-CMAC only
    /// (8, or 4 where the card profile asks); DES CC is 8, CRC16 2 and CRC32 4 octets.
    #[inline]
    pub fn new(
        algorithm: IntegrityAlgorithm,
        key: &[u8],
        cc_len: Option<usize>,
    ) -> Result<Self, SecurityError> {
        let bad_len = || SecurityError::KeyLength {
            field: "KID",
            algorithm: algorithm.name(),
            expected: algorithm.key_lengths(),
            actual: key.len(),
        };
        if !algorithm.accepts_key_len(key.len()) {
            return Err(bad_len());
        }
        let len = match (algorithm, cc_len) {
            (IntegrityAlgorithm::AesCmac, Some(n @ (4 | 8))) => n,
            (IntegrityAlgorithm::AesCmac, None) => 8,
            (a, None) => a.default_len(),
            (a, Some(n)) if n == a.default_len() => n,
            (a, Some(n)) => {
                return Err(SecurityError::IntegrityLength {
                    algorithm: a.name(),
                    requested: n,
                })
            }
        };
        let imp = match algorithm {
            IntegrityAlgorithm::Crc16 => IntegrityImpl::Crc16,
            IntegrityAlgorithm::Crc32 => IntegrityImpl::Crc32,
            IntegrityAlgorithm::AesCmac => {
                IntegrityImpl::AesCmac(CmacKey::new(key).ok_or_else(bad_len)?)
            }
            _ => IntegrityImpl::DesCbcMac(DesKey::new(key).ok_or_else(bad_len)?),
        };
        Ok(Self {
            algorithm,
            len,
            imp,
        })
    }

    /// The algorithm this key is for.
    pub fn algorithm(&self) -> IntegrityAlgorithm {
        self.algorithm
    }

    /// Length in octets of the RC/CC this key produces.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: an integrity value has at least two octets.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Computes the RC/CC over `input` (TS 102 225 clause 5.1.2/5.1.3), `len()` octets long.
    pub fn compute(&self, input: &[u8]) -> MacValue {
        self.compute_parts(&[input])
    }

    /// Computes the RC/CC over the concatenation of `parts`, without joining them.
    pub fn compute_parts(&self, parts: &[&[u8]]) -> MacValue {
        let mut out = MacValue {
            bytes: [0; 16],
            len: self.len as u8,
        };
        match &self.imp {
            IntegrityImpl::Crc16 => {
                let mut d = CRC16_X25.digest();
                parts.iter().for_each(|p| d.update(p));
                out.bytes[..2].copy_from_slice(&d.finalize().to_be_bytes());
            }
            IntegrityImpl::Crc32 => {
                let mut d = CRC32.digest();
                parts.iter().for_each(|p| d.update(p));
                out.bytes[..4].copy_from_slice(&d.finalize().to_be_bytes());
            }
            IntegrityImpl::DesCbcMac(key) => {
                // CBC-MAC: the last block of a CBC encryption of the input zero-padded to 8.
                let mut m = CbcMac::new(key);
                parts.iter().for_each(|p| m.update(p));
                out.bytes[..8].copy_from_slice(&m.finalize());
            }
            IntegrityImpl::AesCmac(key) => out.bytes = key.mac(parts),
        }
        out
    }
}

/// An RC/CC value: up to 16 octets, kept inline.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct MacValue {
    bytes: [u8; 16],
    len: u8,
}

impl MacValue {
    /// A value of up to 16 octets; `None` if longer.
    pub fn from_slice(b: &[u8]) -> Option<Self> {
        let mut bytes = [0u8; 16];
        bytes.get_mut(..b.len())?.copy_from_slice(b);
        Some(Self {
            bytes,
            len: b.len() as u8,
        })
    }

    /// The value's octets.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl serde::Serialize for MacValue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.as_slice()))
    }
}

impl AsRef<[u8]> for MacValue {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::fmt::Debug for MacValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MacValue({})", hex::encode(self.as_slice()))
    }
}

/// AES-CMAC (RFC 4493, NIST SP 800-38B), keyed once: the key schedule and subkeys K1/K2 are
/// computed when the card's key is loaded. Written here rather than on the `cmac` crate because
/// that crate's keyed state (752 octets for AES-128) has to be cloned for every MAC, which
/// showed as the largest single cost after AES itself in `benches/scp80.rs`; the tests check it
/// against RFC 4493's vectors and against the `cmac` crate.
#[derive(Clone)]
struct CmacKey {
    cipher: AesEncKey,
    k1: [u8; 16],
    k2: [u8; 16],
}

fn xor_into(x: &mut [u8; 16], block: &[u8]) {
    for (a, b) in x.iter_mut().zip(block) {
        *a ^= b;
    }
}

/// Doubling in GF(2^128) (SP 800-38B 6.1).
fn dbl(b: [u8; 16]) -> [u8; 16] {
    let v = u128::from_be_bytes(b);
    let r = (v << 1) ^ if v >> 127 == 1 { 0x87 } else { 0 };
    r.to_be_bytes()
}

/// An AES key schedule, encrypting (CBC, CMAC) and, derived on demand, deciphering (PoRs).
#[derive(Clone)]
enum AesEncKey {
    /// AES-128 where the CPU has AES-NI: 176 octets inline, no allocation (`aesni.rs`).
    #[cfg(target_arch = "x86_64")]
    Ni128(super::aesni::Aes128Ni),
    // The `aes` crate otherwise: its schedules hold both the AES-NI and the software layout
    // (~700 octets), boxed at the leaf because moving them by value showed as memmove in the
    // profile.
    Aes128(Box<aes::Aes128Enc>),
    Aes192(Box<aes::Aes192Enc>),
    Aes256(Box<aes::Aes256Enc>),
}

impl AesEncKey {
    #[inline]
    fn new(key: &[u8]) -> Option<Self> {
        #[cfg(target_arch = "x86_64")]
        if let Ok(k) = <&[u8; 16]>::try_from(key) {
            if let Some(k) = super::aesni::Aes128Ni::new(k) {
                return Some(Self::Ni128(k));
            }
        }
        Self::portable(key)
    }

    /// On the `aes` crate only (what CPUs without AES-NI get; the tests compare the two).
    fn portable(key: &[u8]) -> Option<Self> {
        // Expanded straight into the box: going through Result/Option and Box::new copied the
        // ~700-octet schedule three times (seen as memmove in the profile).
        fn boxed<C: KeyInit>(key: &[u8]) -> Option<Box<C>> {
            if key.len() != C::key_size() {
                return None;
            }
            let b = Box::<C>::new_uninit();
            Some(Box::write(
                b,
                C::new(aes::cipher::Key::<C>::from_slice(key)),
            ))
        }
        Some(match key.len() {
            16 => Self::Aes128(boxed(key)?),
            24 => Self::Aes192(boxed(key)?),
            32 => Self::Aes256(boxed(key)?),
            _ => return None,
        })
    }

    fn encrypt(&self, block: &mut [u8; 16]) {
        let b = aes::Block::from_mut_slice(block);
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Ni128(k) => k.encrypt_block(block),
            Self::Aes128(k) => k.encrypt_block(b),
            Self::Aes192(k) => k.encrypt_block(b),
            Self::Aes256(k) => k.encrypt_block(b),
        }
    }

    /// CBC encryption with a zero IV; `data.len()` a multiple of 16.
    fn cbc_encrypt(&self, data: &mut [u8]) {
        #[cfg(target_arch = "x86_64")]
        if let Self::Ni128(k) = self {
            k.cbc_encrypt(data);
            return;
        }
        let mut chain = [0u8; 16];
        for block in data.chunks_exact_mut(16) {
            xor_into(&mut chain, block);
            self.encrypt(&mut chain);
            block.copy_from_slice(&chain);
        }
    }

    /// CBC decryption with a zero IV. The decryption schedule is derived here, from the
    /// encryption one: only PoRs are deciphered, and they are a block or two.
    fn cbc_decrypt(&self, data: &mut [u8]) {
        fn run<D: BlockDecrypt<BlockSize = aes::cipher::consts::U16>>(dec: &D, data: &mut [u8]) {
            let mut prev = [0u8; 16];
            for block in data.chunks_exact_mut(16) {
                let mut cur = [0u8; 16];
                cur.copy_from_slice(block);
                let mut plain = aes::Block::from(cur);
                dec.decrypt_block(&mut plain);
                for ((out, p), c) in block.iter_mut().zip(plain.iter()).zip(prev.iter()) {
                    *out = p ^ c;
                }
                prev = cur;
            }
        }
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Ni128(k) => k.cbc_decrypt(data),
            Self::Aes128(k) => run(&aes::Aes128Dec::from(k.as_ref()), data),
            Self::Aes192(k) => run(&aes::Aes192Dec::from(k.as_ref()), data),
            Self::Aes256(k) => run(&aes::Aes256Dec::from(k.as_ref()), data),
        }
    }
}

impl CmacKey {
    #[inline]
    fn new(key: &[u8]) -> Option<Self> {
        Self::with_cipher(AesEncKey::new(key)?)
    }

    #[inline]
    fn with_cipher(cipher: AesEncKey) -> Option<Self> {
        let mut l = [0u8; 16];
        cipher.encrypt(&mut l);
        let k1 = dbl(l);
        let k2 = dbl(k1);
        Some(Self { cipher, k1, k2 })
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 16] {
        #[cfg(target_arch = "x86_64")]
        if let AesEncKey::Ni128(k) = &self.cipher {
            return k.cmac(&self.k1, &self.k2, parts);
        }
        let mut x = [0u8; 16];
        let (last, complete) = cmac_blocks(parts, |block| {
            xor_into(&mut x, block);
            self.cipher.encrypt(&mut x);
        });
        let k = if complete { &self.k1 } else { &self.k2 };
        for ((a, b), k) in x.iter_mut().zip(last.iter()).zip(k.iter()) {
            *a ^= b ^ k;
        }
        self.cipher.encrypt(&mut x);
        x
    }
}

/// The block walk of CMAC (RFC 4493 2.4) over the concatenation of `parts`, without joining
/// them: `absorb` gets every block but the last, in order; the last block comes back, padded
/// (0x80 then zeros) where it is short, with whether it was complete. An empty input is one
/// short block.
#[inline(always)]
pub(super) fn cmac_blocks(parts: &[&[u8]], mut absorb: impl FnMut(&[u8; 16])) -> ([u8; 16], bool) {
    let mut buf = [0u8; 16];
    let mut n = 0;
    for part in parts {
        let mut part = *part;
        while !part.is_empty() {
            // A full buffered block is processed only once more input follows: the last block
            // is special.
            if n == 16 {
                absorb(&buf);
                n = 0;
            }
            // Whole blocks straight from the input while more than one block remains.
            while n == 0 && part.len() > 16 {
                let (block, rest) = part.split_at(16);
                if let Ok(block) = block.try_into() {
                    absorb(block);
                }
                part = rest;
            }
            let take = (16 - n).min(part.len());
            copy_short(&mut buf[n..n + take], &part[..take]);
            n += take;
            part = &part[take..];
        }
    }
    if n == 16 {
        (buf, true)
    } else {
        buf[n] = 0x80;
        buf[n + 1..].fill(0);
        (buf, false)
    }
}

/// `dst.copy_from_slice(src)` for at most 16 octets, in fixed-size moves: the parts of a CC
/// input are a few octets each, and a `memcpy` call per part showed in the profile.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    debug_assert!(n <= 16 && dst.len() == n);
    if n >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[n - 8..].copy_from_slice(&src[n - 8..]);
    } else if n >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[n - 4..].copy_from_slice(&src[n - 4..]);
    } else if n >= 2 {
        dst[..2].copy_from_slice(&src[..2]);
        dst[n - 2..].copy_from_slice(&src[n - 2..]);
    } else if n == 1 {
        dst[0] = src[0];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmac(key: &str, msg: &str) -> String {
        let key = hex::decode(key).unwrap_or_default();
        let k = CmacKey::new(&key).map(|k| k.mac(&[&hex::decode(msg).unwrap_or_default()]));
        k.map(hex::encode).unwrap_or_default()
    }

    #[test]
    fn rfc4493_vectors() {
        let key = "2b7e151628aed2a6abf7158809cf4f3c";
        assert_eq!(cmac(key, ""), "bb1d6929e95937287fa37d129b756746");
        assert_eq!(
            cmac(key, "6bc1bee22e409f96e93d7e117393172a"),
            "070a16b46b4d4144f79bdd9dd04a287c"
        );
        assert_eq!(
            cmac(
                key,
                "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411"
            ),
            "dfa66747de9ae63030ca32611497c827"
        );
        assert_eq!(
            cmac(key, "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"),
            "51f0bebf7e3b9d92fc49741779363cfe"
        );
    }

    #[test]
    fn aes_ni_and_the_aes_crate_give_the_same_cbc_and_cmac() {
        for key_len in [16usize, 24, 32] {
            let key: Vec<u8> = (0..key_len as u8)
                .map(|i| i.wrapping_mul(91) ^ 0x5a)
                .collect();
            let (Some(chosen), Some(portable)) = (
                CmacKey::new(&key),
                AesEncKey::portable(&key).and_then(CmacKey::with_cipher),
            ) else {
                panic!("key of {key_len}")
            };
            #[cfg(target_arch = "x86_64")]
            {
                if key_len == 16 && std::is_x86_feature_detected!("aes") {
                    assert!(matches!(chosen.cipher, AesEncKey::Ni128(_)));
                }
                assert!(!matches!(portable.cipher, AesEncKey::Ni128(_)));
            }
            assert_eq!((chosen.k1, chosen.k2), (portable.k1, portable.k2));
            for len in 0..130usize {
                let msg: Vec<u8> = (0..len).map(|i| (i * 7 + key_len) as u8).collect();
                for split in [0, len / 2, len.saturating_sub(1), len] {
                    let parts: [&[u8]; 2] = [&msg[..split], &msg[split..]];
                    assert_eq!(chosen.mac(&parts), portable.mac(&parts), "{key_len} {len}");
                }
                if len % 16 == 0 {
                    let (mut a, mut b) = (msg.clone(), msg.clone());
                    chosen.cipher.cbc_encrypt(&mut a);
                    portable.cipher.cbc_encrypt(&mut b);
                    assert_eq!(a, b, "cbc {key_len} {len}");
                    chosen.cipher.cbc_decrypt(&mut a);
                    portable.cipher.cbc_decrypt(&mut b);
                    assert_eq!((&a, &b), (&msg, &msg), "cbc decrypt {key_len} {len}");
                }
            }
        }
    }

    #[test]
    fn agrees_with_the_cmac_crate_for_every_key_size_and_split() {
        use cmac::Mac;
        for key_len in [16usize, 24, 32] {
            let key: Vec<u8> = (0..key_len as u8).map(|i| i.wrapping_mul(37)).collect();
            let ours = CmacKey::new(&key).map(|k| (k.clone(), k));
            let Some((ours, _)) = ours else {
                panic!("key of {key_len}")
            };
            for len in 0..100usize {
                let msg: Vec<u8> = (0..len as u8).collect();
                let theirs = match key_len {
                    16 => {
                        let mut m = <cmac::Cmac<aes::Aes128> as Mac>::new_from_slice(&key)
                            .unwrap_or_else(|_| panic!());
                        m.update(&msg);
                        m.finalize().into_bytes().to_vec()
                    }
                    24 => {
                        let mut m = <cmac::Cmac<aes::Aes192> as Mac>::new_from_slice(&key)
                            .unwrap_or_else(|_| panic!());
                        m.update(&msg);
                        m.finalize().into_bytes().to_vec()
                    }
                    _ => {
                        let mut m = <cmac::Cmac<aes::Aes256> as Mac>::new_from_slice(&key)
                            .unwrap_or_else(|_| panic!());
                        m.update(&msg);
                        m.finalize().into_bytes().to_vec()
                    }
                };
                let split = len / 3;
                let parts: [&[u8]; 3] = [&msg[..split], &[], &msg[split..]];
                assert_eq!(
                    ours.mac(&parts).to_vec(),
                    theirs,
                    "key {key_len}, len {len}"
                );
            }
        }
    }
}
