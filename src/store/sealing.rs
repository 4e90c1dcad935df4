//! Sealing of key values at rest: AES-256-GCM under a master key the operator keeps outside the
//! database.
//!
//! A sealed value is `nonce (12 octets) || ciphertext || tag (16 octets)`. Every value is sealed
//! with associated data naming its row and field (for example `keyset:<iccid>:<version>:kic`), so
//! a sealed value copied into another row or field does not open.

use std::fmt;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;

/// Environment variable holding the master key as 64 hex digits.
pub const MASTER_KEY_ENV: &str = "OTAGW_MASTER_KEY";
/// Environment variable naming a file that holds the master key as 64 hex digits.
pub const MASTER_KEY_FILE_ENV: &str = "OTAGW_MASTER_KEY_FILE";

/// Length of the master key, octets.
pub const MASTER_KEY_LEN: usize = 32;
/// Length of the nonce prepended to a sealed value, octets.
pub const NONCE_LEN: usize = 12;
/// Length of the authentication tag appended to a sealed value, octets.
pub const TAG_LEN: usize = 16;

/// Errors of the master key and of sealing.
#[derive(Debug, thiserror::Error)]
pub enum SealingError {
    /// A sealed value did not open: the master key is not the one that sealed it, or the value
    /// (or the row it was moved to) is not the one it was sealed for.
    #[error("cannot open {what}: wrong master key or corrupted value")]
    Open {
        /// Which value (row and field).
        what: String,
    },
    /// A sealed value is too short to hold a nonce and a tag.
    #[error("cannot open {what}: sealed value is {len} octets, shorter than nonce and tag")]
    Truncated {
        /// Which value.
        what: String,
        /// Its length.
        len: usize,
    },
    /// The master key is not hexadecimal.
    #[error("master key from {source_name}: not hexadecimal ({problem})")]
    BadHex {
        /// Where the key came from (variable or file).
        source_name: String,
        /// What is wrong.
        problem: String,
    },
    /// The master key does not have 32 octets.
    #[error("master key from {source_name}: {len} octets, expected 32 (64 hex digits)")]
    WrongLength {
        /// Where the key came from.
        source_name: String,
        /// Octets found.
        len: usize,
    },
    /// Neither variable is set.
    #[error("no master key: set {MASTER_KEY_ENV} (64 hex digits) or {MASTER_KEY_FILE_ENV} (a file holding them)")]
    Missing,
    /// A variable is set but not valid Unicode.
    #[error("{variable}: value is not valid Unicode")]
    NotUnicode {
        /// The variable.
        variable: &'static str,
    },
    /// The key file cannot be read.
    #[error("master key file {}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// Sealing itself failed (should not happen with a valid key).
    #[error("cannot seal {what}")]
    Seal {
        /// Which value.
        what: String,
    },
}

/// The master key that seals key values in the store (AES-256-GCM).
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl fmt::Debug for MasterKey {
    // The key is never printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A key from its 32 octets.
    pub fn from_bytes(bytes: [u8; MASTER_KEY_LEN]) -> Self {
        MasterKey {
            cipher: Aes256Gcm::new(&bytes.into()),
        }
    }

    /// A new random key (from the operating system's generator).
    pub fn generate() -> Self {
        let mut bytes = [0u8; MASTER_KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// A key from 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(hex_digits: &str) -> Result<Self, SealingError> {
        Self::parse(hex_digits, "hex string")
    }

    /// A key from a file holding 64 hex digits (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, SealingError> {
        let text = std::fs::read_to_string(path).map_err(|e| SealingError::File {
            path: path.to_path_buf(),
            problem: e.to_string(),
        })?;
        Self::parse(&text, &format!("file {}", path.display()))
    }

    /// The key from `OTAGW_MASTER_KEY` (hex), or else from the file `OTAGW_MASTER_KEY_FILE` names.
    pub fn from_env() -> Result<Self, SealingError> {
        Self::from_env_values(
            std::env::var_os(MASTER_KEY_ENV),
            std::env::var_os(MASTER_KEY_FILE_ENV),
        )
    }

    /// [`from_env`](Self::from_env) on given values of the two variables.
    fn from_env_values(
        hex_value: Option<std::ffi::OsString>,
        file_value: Option<std::ffi::OsString>,
    ) -> Result<Self, SealingError> {
        if let Some(value) = hex_value {
            let value = value.into_string().map_err(|_| SealingError::NotUnicode {
                variable: MASTER_KEY_ENV,
            })?;
            return Self::parse(&value, MASTER_KEY_ENV);
        }
        match file_value {
            Some(path) => Self::from_file(Path::new(&path)),
            None => Err(SealingError::Missing),
        }
    }

    fn parse(text: &str, source_name: &str) -> Result<Self, SealingError> {
        let digits = text.trim();
        let bytes = hex::decode(digits).map_err(|e| SealingError::BadHex {
            source_name: source_name.to_string(),
            problem: e.to_string(),
        })?;
        let bytes: [u8; MASTER_KEY_LEN] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SealingError::WrongLength {
                    source_name: source_name.to_string(),
                    len: bytes.len(),
                })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Seals `plaintext` bound to `aad` (row and field): a random 12-octet nonce, then the
    /// ciphertext and its tag.
    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        // AES-GCM encryption with a 32-octet key and a 12-octet nonce fails only for
        // plaintexts over 64 GiB; `try_seal` reports that case instead.
        self.try_seal(plaintext, aad)
            .expect("AES-256-GCM sealing fails only for plaintexts over 64 GiB")
    }

    /// Like [`seal`](Self::seal), reporting the (theoretical) failure.
    pub fn try_seal(&self, plaintext: &[u8], aad: &str) -> Result<Vec<u8>, SealingError> {
        let mut nonce = [0u8; NONCE_LEN];
        // A CSPRNG seeded from the operating system (one system call per nonce would slow
        // bulk provisioning down).
        rand::thread_rng().fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealingError::Seal {
                what: aad.to_string(),
            })?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }

    /// Opens a value sealed with [`seal`](Self::seal) under the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Vec<u8>, SealingError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(SealingError::Truncated {
                what: aad.to_string(),
                len: sealed.len(),
            });
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| SealingError::Open {
                what: aad.to_string(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn seal_open_round_trip() {
        let key = MasterKey::from_hex(HEX).unwrap();
        let sealed = key.seal(b"secret", "keyset:1:1:kic");
        assert_eq!(sealed.len(), NONCE_LEN + 6 + TAG_LEN);
        assert_eq!(key.open(&sealed, "keyset:1:1:kic").unwrap(), b"secret");
        // Fresh nonce every time.
        assert_ne!(sealed, key.seal(b"secret", "keyset:1:1:kic"));
        // Empty values seal too.
        let empty = key.seal(b"", "x");
        assert_eq!(key.open(&empty, "x").unwrap(), b"");
    }

    #[test]
    fn other_row_or_key_fails() {
        let key = MasterKey::from_hex(HEX).unwrap();
        let sealed = key.seal(b"secret", "keyset:1:1:kic");
        assert!(matches!(
            key.open(&sealed, "keyset:2:1:kic"),
            Err(SealingError::Open { .. })
        ));
        let other = MasterKey::generate();
        let err = other.open(&sealed, "keyset:1:1:kic").unwrap_err();
        assert!(err.to_string().contains("wrong master key"), "{err}");
        let mut corrupted = sealed.clone();
        corrupted[NONCE_LEN] ^= 1;
        assert!(key.open(&corrupted, "keyset:1:1:kic").is_err());
        assert!(matches!(
            key.open(&sealed[..10], "keyset:1:1:kic"),
            Err(SealingError::Truncated { len: 10, .. })
        ));
    }

    #[test]
    fn parsing_errors() {
        assert!(MasterKey::from_hex(&format!("  {HEX}\n")).is_ok());
        let err = MasterKey::from_hex("zz").unwrap_err();
        assert!(matches!(err, SealingError::BadHex { .. }), "{err}");
        let err = MasterKey::from_hex("0011").unwrap_err();
        assert!(
            matches!(err, SealingError::WrongLength { len: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("expected 32"));
        let missing = Path::new("/nonexistent/otagw/master.key");
        let err = MasterKey::from_file(missing).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/otagw/master.key"),
            "{err}"
        );
    }

    #[test]
    fn from_file_trims() {
        let dir = std::env::temp_dir().join(format!("otagw-mk-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        std::fs::write(&path, format!("{HEX}\n")).unwrap();
        let key = MasterKey::from_file(&path).unwrap();
        let sealed = MasterKey::from_hex(HEX).unwrap().seal(b"k", "a");
        assert_eq!(key.open(&sealed, "a").unwrap(), b"k");
        std::fs::write(&path, "abc").unwrap();
        let err = MasterKey::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("master.key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn from_env_variable_then_file() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert!(matches!(
            MasterKey::from_env_values(None, None),
            Err(SealingError::Missing)
        ));
        let err = MasterKey::from_env_values(os("xyz"), None).unwrap_err();
        assert!(err.to_string().contains(MASTER_KEY_ENV), "{err}");
        assert!(MasterKey::from_env_values(os(HEX), os("/ignored")).is_ok());
        let err = MasterKey::from_env_values(None, os("/nonexistent/otagw/env.key")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/otagw/env.key"),
            "{err}"
        );
        let missing = SealingError::Missing.to_string();
        assert!(missing.contains(MASTER_KEY_ENV) && missing.contains(MASTER_KEY_FILE_ENV));
    }

    #[test]
    fn debug_hides_key() {
        let key = MasterKey::from_hex(HEX).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("0001"), "{shown}");
    }
}
