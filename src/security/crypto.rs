//! Block ciphers, MACs and CRCs behind SCP80 (TS 102 225 clause 5.1), keyed once per card.
//!
//! AES runs on RustCrypto's `aes` (AES-NI where the CPU has it) and `cmac`.
//! DES and 3DES run on OpenSSL's libcrypto: the RustCrypto `des` crate is about 2.5 times slower
//! here, and OpenSSL is already a dependency for SCP81's PSK-TLS. Single DES is computed as 3DES
//! with K1 = K2 = K3 (E(K, D(K, E(K, x))) = E(K, x)), so the DES-only OpenSSL legacy provider is
//! never needed, and OpenSSL's EVP layer does not refuse weak or degenerate DES keys, which SIM
//! cards use (all-zero keys, 3DES with K1 == K2).

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use cmac::Mac;
use openssl::cipher::{Cipher, CipherRef};
use openssl::cipher_ctx::CipherCtx;

use super::algorithm::{CipherAlgorithm, IntegrityAlgorithm};
use super::SecurityError;

const CRC16_X25: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_SDLC);
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// An AES key schedule of any of the three key lengths.
#[derive(Clone)]
enum AesKey {
    Aes128(Box<aes::Aes128>),
    Aes192(Box<aes::Aes192>),
    Aes256(Box<aes::Aes256>),
}

impl AesKey {
    fn new(key: &[u8]) -> Option<Self> {
        Some(match key.len() {
            16 => Self::Aes128(Box::new(aes::Aes128::new_from_slice(key).ok()?)),
            24 => Self::Aes192(Box::new(aes::Aes192::new_from_slice(key).ok()?)),
            32 => Self::Aes256(Box::new(aes::Aes256::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }

    fn encrypt(&self, block: &mut [u8; 16]) {
        let b = aes::Block::from_mut_slice(block);
        match self {
            Self::Aes128(k) => k.encrypt_block(b),
            Self::Aes192(k) => k.encrypt_block(b),
            Self::Aes256(k) => k.encrypt_block(b),
        }
    }

    fn decrypt(&self, block: &mut [u8; 16]) {
        let b = aes::Block::from_mut_slice(block);
        match self {
            Self::Aes128(k) => k.decrypt_block(b),
            Self::Aes192(k) => k.decrypt_block(b),
            Self::Aes256(k) => k.decrypt_block(b),
        }
    }
}

/// A 3DES key expanded to the 24 octets OpenSSL's DES-EDE3 takes.
#[derive(Clone)]
struct DesKey {
    k: [u8; 24],
}

impl DesKey {
    /// 8 octets: single DES as K1=K2=K3. 16: two-key 3DES as K1 K2 K1. 24: three-key 3DES.
    fn new(key: &[u8]) -> Option<Self> {
        let mut k = [0u8; 24];
        match key.len() {
            8 => {
                for chunk in k.chunks_exact_mut(8) {
                    chunk.copy_from_slice(key);
                }
            }
            16 => {
                k[..16].copy_from_slice(key);
                k[16..].copy_from_slice(&key[..8]);
            }
            24 => k.copy_from_slice(key),
            _ => return None,
        }
        Some(Self { k })
    }

    /// Runs OpenSSL's DES-EDE3 in CBC (zero IV) or ECB mode over `data` in place.
    fn run(&self, cipher: &CipherRef, encrypt: bool, data: &mut [u8]) -> Result<(), SecurityError> {
        let mut ctx = CipherCtx::new()?;
        let iv = [0u8; 8];
        let iv = if cipher.iv_length() > 0 {
            Some(&iv[..])
        } else {
            None
        };
        if encrypt {
            ctx.encrypt_init(Some(cipher), Some(&self.k), iv)?;
        } else {
            ctx.decrypt_init(Some(cipher), Some(&self.k), iv)?;
        }
        ctx.set_padding(false);
        let len = data.len();
        // EVP wants one spare block of output room even with padding off.
        let mut buf = Vec::with_capacity(len + 8);
        buf.extend_from_slice(data);
        buf.resize(len + 8, 0);
        let n = ctx.cipher_update_inplace(&mut buf, len)?;
        if n != len {
            return Err(SecurityError::Crypto(format!(
                "DES produced {n} octets for {len} octets of input"
            )));
        }
        data.copy_from_slice(&buf[..len]);
        Ok(())
    }
}

#[derive(Clone)]
enum CipherImpl {
    Des { key: DesKey, ecb: bool },
    Aes(AesKey),
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
    pub fn new(algorithm: CipherAlgorithm, key: &[u8]) -> Result<Self, SecurityError> {
        if !algorithm.accepts_key_len(key.len()) {
            return Err(SecurityError::KeyLength {
                field: "KIc",
                algorithm: algorithm.name(),
                expected: algorithm.key_lengths(),
                actual: key.len(),
            });
        }
        let bad_len = || SecurityError::KeyLength {
            field: "KIc",
            algorithm: algorithm.name(),
            expected: algorithm.key_lengths(),
            actual: key.len(),
        };
        let imp = match algorithm {
            CipherAlgorithm::AesCbc => CipherImpl::Aes(AesKey::new(key).ok_or_else(bad_len)?),
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
            CipherImpl::Des { key, ecb } => key.run(des_cipher(*ecb), true, data),
            CipherImpl::Aes(k) => {
                let mut chain = [0u8; 16];
                for block in data.chunks_exact_mut(16) {
                    for (c, b) in chain.iter_mut().zip(block.iter()) {
                        *c ^= b;
                    }
                    k.encrypt(&mut chain);
                    block.copy_from_slice(&chain);
                }
                Ok(())
            }
        }
    }

    /// Deciphers `data` in place. Its length must be a block multiple.
    pub fn decrypt(&self, data: &mut [u8]) -> Result<(), SecurityError> {
        self.check_blocks(data.len())?;
        match &self.imp {
            CipherImpl::Des { key, ecb } => key.run(des_cipher(*ecb), false, data),
            CipherImpl::Aes(k) => {
                let mut prev = [0u8; 16];
                for block in data.chunks_exact_mut(16) {
                    let mut cur = [0u8; 16];
                    cur.copy_from_slice(block);
                    let mut plain = cur;
                    k.decrypt(&mut plain);
                    for ((out, p), c) in block.iter_mut().zip(plain.iter()).zip(prev.iter()) {
                        *out = p ^ c;
                    }
                    prev = cur;
                }
                Ok(())
            }
        }
    }

    fn check_blocks(&self, len: usize) -> Result<(), SecurityError> {
        let block = self.block_len();
        if len % block != 0 {
            return Err(SecurityError::NotBlockMultiple { length: len, block });
        }
        Ok(())
    }
}

fn des_cipher(ecb: bool) -> &'static CipherRef {
    if ecb {
        Cipher::des_ede3_ecb()
    } else {
        Cipher::des_ede3_cbc()
    }
}

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
    pub fn new(
        algorithm: IntegrityAlgorithm,
        key: &[u8],
        cc_len: Option<usize>,
    ) -> Result<Self, SecurityError> {
        if !algorithm.accepts_key_len(key.len()) {
            return Err(SecurityError::KeyLength {
                field: "KID",
                algorithm: algorithm.name(),
                expected: algorithm.key_lengths(),
                actual: key.len(),
            });
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
        let bad_len = || SecurityError::KeyLength {
            field: "KID",
            algorithm: algorithm.name(),
            expected: algorithm.key_lengths(),
            actual: key.len(),
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
    pub fn compute(&self, input: &[u8]) -> Result<Vec<u8>, SecurityError> {
        let mut out = match &self.imp {
            IntegrityImpl::Crc16 => CRC16_X25.checksum(input).to_be_bytes().to_vec(),
            IntegrityImpl::Crc32 => CRC32.checksum(input).to_be_bytes().to_vec(),
            IntegrityImpl::DesCbcMac(key) => {
                // CBC-MAC: the last block of a CBC encryption of the input zero-padded to 8.
                let padded = input.len().div_ceil(8).max(1) * 8;
                let mut buf = Vec::with_capacity(padded + 8);
                buf.extend_from_slice(input);
                buf.resize(padded, 0);
                key.run(Cipher::des_ede3_cbc(), true, &mut buf)?;
                buf[padded - 8..padded].to_vec()
            }
            IntegrityImpl::AesCmac(key) => key.mac(input),
        };
        out.truncate(self.len);
        Ok(out)
    }
}

/// AES-CMAC (RFC 4493) keyed once: each MAC clones the prepared state (key schedule and subkeys).
#[derive(Clone)]
enum CmacKey {
    Aes128(Box<cmac::Cmac<aes::Aes128>>),
    Aes192(Box<cmac::Cmac<aes::Aes192>>),
    Aes256(Box<cmac::Cmac<aes::Aes256>>),
}

impl CmacKey {
    fn new(key: &[u8]) -> Option<Self> {
        Some(match key.len() {
            16 => Self::Aes128(Box::new(Mac::new_from_slice(key).ok()?)),
            24 => Self::Aes192(Box::new(Mac::new_from_slice(key).ok()?)),
            32 => Self::Aes256(Box::new(Mac::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }

    fn mac(&self, input: &[u8]) -> Vec<u8> {
        fn run<M: Mac + Clone>(m: &M, input: &[u8]) -> Vec<u8> {
            let mut m = m.clone();
            m.update(input);
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Self::Aes128(m) => run(m.as_ref(), input),
            Self::Aes192(m) => run(m.as_ref(), input),
            Self::Aes256(m) => run(m.as_ref(), input),
        }
    }
}
