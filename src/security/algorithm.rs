//! KIc / KID coding (TS 102 225 clause 5.1.2 and 5.1.3) and the algorithms they name.

use std::fmt;
use std::str::FromStr;

use super::spi::Integrity;
use super::SecurityError;

/// Finds the algorithm whose CLI name is `s` (any case), or says which names exist.
fn by_name<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    kind: &str,
    s: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|a| name(*a).eq_ignore_ascii_case(s))
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|a| name(*a)).collect();
            format!(
                "unknown {kind} algorithm {s:?}: expected one of {}",
                names.join(", ")
            )
        })
}

/// A ciphering algorithm (KIc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherAlgorithm {
    /// Single DES in CBC mode (KIc b4..b1 = 0001).
    DesCbc,
    /// Triple DES with two keys in outer-CBC mode (0101).
    TripleDes2KeyCbc,
    /// Triple DES with three keys in outer-CBC mode (1001).
    TripleDes3KeyCbc,
    /// Single DES in ECB mode (1101).
    DesEcb,
    /// Triple DES in ECB mode: no KIc coding of its own; reached through an implicit KIc
    /// (b2b1 = 00) or by giving a 16/24-octet key with the DES-ECB coding.
    TripleDesEcb,
    /// AES in CBC mode, key length from the key (0010).
    AesCbc,
}

impl CipherAlgorithm {
    /// All algorithms, in CLI order.
    pub const ALL: [CipherAlgorithm; 6] = [
        Self::DesCbc,
        Self::TripleDes2KeyCbc,
        Self::TripleDes3KeyCbc,
        Self::DesEcb,
        Self::TripleDesEcb,
        Self::AesCbc,
    ];

    /// CLI name (`des-cbc`, `3des-2key`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::DesCbc => "des-cbc",
            Self::TripleDes2KeyCbc => "3des-2key",
            Self::TripleDes3KeyCbc => "3des-3key",
            Self::DesEcb => "des-ecb",
            Self::TripleDesEcb => "3des-ecb",
            Self::AesCbc => "aes-cbc",
        }
    }

    /// Block length in octets.
    pub fn block_len(self) -> usize {
        match self {
            Self::AesCbc => 16,
            _ => 8,
        }
    }

    /// Key lengths the algorithm accepts, as text for error messages.
    pub fn key_lengths(self) -> &'static str {
        match self {
            Self::DesCbc | Self::DesEcb => "8",
            Self::TripleDes2KeyCbc => "16",
            Self::TripleDes3KeyCbc => "24",
            Self::TripleDesEcb => "16 or 24",
            Self::AesCbc => "16, 24 or 32",
        }
    }

    /// Whether a key of `len` octets fits.
    pub fn accepts_key_len(self, len: usize) -> bool {
        match self {
            Self::DesCbc | Self::DesEcb => len == 8,
            Self::TripleDes2KeyCbc => len == 16,
            Self::TripleDes3KeyCbc => len == 24,
            Self::TripleDesEcb => len == 16 || len == 24,
            Self::AesCbc => matches!(len, 16 | 24 | 32),
        }
    }

    /// The low nibble of a KIc naming this algorithm (TripleDesEcb shares DES-ECB's).
    pub fn kic_nibble(self) -> u8 {
        match self {
            Self::DesCbc => 0x1,
            Self::TripleDes2KeyCbc => 0x5,
            Self::TripleDes3KeyCbc => 0x9,
            Self::DesEcb | Self::TripleDesEcb => 0xD,
            Self::AesCbc => 0x2,
        }
    }

    /// Resolves the algorithm of a KIc byte. `configured` is the caller's key configuration:
    /// it supplies the algorithm where the KIc says "known implicitly" (b2b1 = 00) or
    /// "proprietary" (11), and must agree with the KIc otherwise.
    pub fn from_kic(kic: u8, configured: Option<CipherAlgorithm>) -> Result<Self, SecurityError> {
        let nibble = kic & 0x0F;
        let coded = match nibble & 0b11 {
            0b00 | 0b11 => None,
            0b01 => Some(match (nibble >> 2) & 0b11 {
                0b00 => Self::DesCbc,
                0b01 => Self::TripleDes2KeyCbc,
                0b10 => Self::TripleDes3KeyCbc,
                _ => Self::DesEcb,
            }),
            _ => {
                if nibble >> 2 != 0 {
                    return Err(SecurityError::UnknownAlgorithm {
                        field: "KIc",
                        value: kic,
                        reason: "AES with a reserved mode (b4b3 must be 00 for AES-CBC)",
                    });
                }
                Some(Self::AesCbc)
            }
        };
        match (coded, configured) {
            (None, Some(c)) => Ok(c),
            (None, None) => Err(SecurityError::ImplicitAlgorithm {
                field: "KIc",
                value: kic,
            }),
            (Some(c), None) => Ok(c),
            (Some(c), Some(k)) if c == k => Ok(c),
            (Some(Self::DesEcb), Some(Self::TripleDesEcb)) => Ok(Self::TripleDesEcb),
            (Some(c), Some(k)) => Err(SecurityError::AlgorithmConflict {
                field: "KIc",
                value: kic,
                coded: c.name(),
                configured: k.name(),
            }),
        }
    }
}

impl fmt::Display for CipherAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CipherAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(&Self::ALL, Self::name, "ciphering", s)
    }
}

/// An integrity algorithm (KID): a cryptographic checksum (CC) or a redundancy check (RC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegrityAlgorithm {
    /// DES CBC-MAC (KID b4..b1 = 0001 with CC).
    DesCbcMac,
    /// Triple DES two-key CBC-MAC (0101 with CC).
    TripleDes2KeyCbcMac,
    /// Triple DES three-key CBC-MAC (1001 with CC).
    TripleDes3KeyCbcMac,
    /// AES-CMAC, truncated to 8 (or 4) octets (0010 with CC).
    AesCmac,
    /// CRC16 per ISO/IEC 13239 (X.25), an RC (0001 with RC).
    Crc16,
    /// CRC32 per ISO/IEC 13239, an RC (0101 with RC).
    Crc32,
}

impl IntegrityAlgorithm {
    /// All algorithms, in CLI order.
    pub const ALL: [IntegrityAlgorithm; 6] = [
        Self::DesCbcMac,
        Self::TripleDes2KeyCbcMac,
        Self::TripleDes3KeyCbcMac,
        Self::AesCmac,
        Self::Crc16,
        Self::Crc32,
    ];

    /// CLI name (`des-cbc`, `3des-2key`, `aes-cmac`, `crc16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::DesCbcMac => "des-cbc",
            Self::TripleDes2KeyCbcMac => "3des-2key",
            Self::TripleDes3KeyCbcMac => "3des-3key",
            Self::AesCmac => "aes-cmac",
            Self::Crc16 => "crc16",
            Self::Crc32 => "crc32",
        }
    }

    /// Whether this is a redundancy check (RC) rather than a cryptographic checksum (CC).
    pub fn is_rc(self) -> bool {
        matches!(self, Self::Crc16 | Self::Crc32)
    }

    /// Default length of the value it produces.
    pub fn default_len(self) -> usize {
        match self {
            Self::Crc16 => 2,
            Self::Crc32 => 4,
            _ => 8,
        }
    }

    /// Key lengths the algorithm accepts, as text for error messages.
    pub fn key_lengths(self) -> &'static str {
        match self {
            Self::DesCbcMac => "8",
            Self::TripleDes2KeyCbcMac => "16",
            Self::TripleDes3KeyCbcMac => "24",
            Self::AesCmac => "16, 24 or 32",
            Self::Crc16 | Self::Crc32 => "any (the key is not used)",
        }
    }

    /// Whether a key of `len` octets fits.
    pub fn accepts_key_len(self, len: usize) -> bool {
        match self {
            Self::DesCbcMac => len == 8,
            Self::TripleDes2KeyCbcMac => len == 16,
            Self::TripleDes3KeyCbcMac => len == 24,
            Self::AesCmac => matches!(len, 16 | 24 | 32),
            Self::Crc16 | Self::Crc32 => true,
        }
    }

    /// The low nibble of a KID naming this algorithm.
    pub fn kid_nibble(self) -> u8 {
        match self {
            Self::DesCbcMac | Self::Crc16 => 0x1,
            Self::TripleDes2KeyCbcMac | Self::Crc32 => 0x5,
            Self::TripleDes3KeyCbcMac => 0x9,
            Self::AesCmac => 0x2,
        }
    }

    /// Resolves the algorithm of a KID byte. The KID's meaning depends on whether the SPI asks
    /// for an RC or a CC (TS 102 225 clause 5.1.3); `configured` works as in
    /// [`CipherAlgorithm::from_kic`].
    pub fn from_kid(
        kid: u8,
        integrity: Integrity,
        configured: Option<IntegrityAlgorithm>,
    ) -> Result<Self, SecurityError> {
        let nibble = kid & 0x0F;
        let mode = (nibble >> 2) & 0b11;
        let coded = match (integrity, nibble & 0b11) {
            (Integrity::None, _) => return Err(SecurityError::Unsupported("KID for no integrity")),
            (Integrity::Ds, _) => {
                return Err(SecurityError::Unsupported(
                    "digital signatures (SPI b2b1 = 11) are not supported",
                ))
            }
            (_, 0b00 | 0b11) => None,
            (Integrity::Cc, 0b01) => Some(match mode {
                0b00 => Self::DesCbcMac,
                0b01 => Self::TripleDes2KeyCbcMac,
                0b10 => Self::TripleDes3KeyCbcMac,
                _ => {
                    return Err(SecurityError::UnknownAlgorithm {
                        field: "KID",
                        value: kid,
                        reason: "DES mode b4b3 = 11 is reserved for CC",
                    })
                }
            }),
            (Integrity::Cc, _) => {
                if mode != 0 {
                    return Err(SecurityError::UnknownAlgorithm {
                        field: "KID",
                        value: kid,
                        reason: "AES with a reserved mode (b4b3 must be 00 for AES-CMAC)",
                    });
                }
                Some(Self::AesCmac)
            }
            (Integrity::Rc, 0b01) => Some(match mode {
                0b00 => Self::Crc16,
                0b01 => Self::Crc32,
                _ => {
                    return Err(SecurityError::UnknownAlgorithm {
                        field: "KID",
                        value: kid,
                        reason: "CRC mode b4b3 must be 00 (CRC16) or 01 (CRC32)",
                    })
                }
            }),
            (Integrity::Rc, _) => {
                return Err(SecurityError::UnknownAlgorithm {
                    field: "KID",
                    value: kid,
                    reason: "b2b1 = 10 is reserved for RC",
                })
            }
        };
        let fits = |a: IntegrityAlgorithm| a.is_rc() == (integrity == Integrity::Rc);
        match (coded, configured) {
            (None, Some(c)) if fits(c) => Ok(c),
            (None, Some(c)) => Err(SecurityError::AlgorithmConflict {
                field: "KID",
                value: kid,
                coded: if integrity == Integrity::Rc {
                    "an RC"
                } else {
                    "a CC"
                },
                configured: c.name(),
            }),
            (None, None) => Err(SecurityError::ImplicitAlgorithm {
                field: "KID",
                value: kid,
            }),
            (Some(c), None) => Ok(c),
            (Some(c), Some(k)) if c == k => Ok(c),
            // A configured CC algorithm says nothing of an RC (and the other way round): the
            // explicit coding stands (SPI 11 35 with KID 15, CRC32, on a 3DES key set).
            (Some(c), Some(k)) if !fits(k) => Ok(c),
            (Some(c), Some(k)) => Err(SecurityError::AlgorithmConflict {
                field: "KID",
                value: kid,
                coded: c.name(),
                configured: k.name(),
            }),
        }
    }
}

impl fmt::Display for IntegrityAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for IntegrityAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        by_name(&Self::ALL, Self::name, "integrity", s)
    }
}

/// A KIc or KID octet: key version in the high nibble, algorithm coding in the low nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyIdentifier(pub u8);

impl KeyIdentifier {
    /// Builds the octet from a key version (0..=15) and an algorithm nibble.
    pub fn new(version: u8, algorithm_nibble: u8) -> Self {
        Self((version << 4) | (algorithm_nibble & 0x0F))
    }

    /// Key version / index (b8..b5).
    pub fn version(self) -> u8 {
        self.0 >> 4
    }

    /// Algorithm coding (b4..b1).
    pub fn algorithm_nibble(self) -> u8 {
        self.0 & 0x0F
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kic_codings() {
        assert_eq!(
            CipherAlgorithm::from_kic(0x15, None).ok(),
            Some(CipherAlgorithm::TripleDes2KeyCbc)
        );
        assert_eq!(
            CipherAlgorithm::from_kic(0x11, None).ok(),
            Some(CipherAlgorithm::DesCbc)
        );
        assert_eq!(
            CipherAlgorithm::from_kic(0x19, None).ok(),
            Some(CipherAlgorithm::TripleDes3KeyCbc)
        );
        assert_eq!(
            CipherAlgorithm::from_kic(0x1D, None).ok(),
            Some(CipherAlgorithm::DesEcb)
        );
        assert_eq!(
            CipherAlgorithm::from_kic(0x22, None).ok(),
            Some(CipherAlgorithm::AesCbc)
        );
        assert!(matches!(
            CipherAlgorithm::from_kic(0x10, None),
            Err(SecurityError::ImplicitAlgorithm { .. })
        ));
        assert_eq!(
            CipherAlgorithm::from_kic(0x10, Some(CipherAlgorithm::AesCbc)).ok(),
            Some(CipherAlgorithm::AesCbc)
        );
        assert!(matches!(
            CipherAlgorithm::from_kic(0x06, None),
            Err(SecurityError::UnknownAlgorithm { .. })
        ));
        assert!(matches!(
            CipherAlgorithm::from_kic(0x15, Some(CipherAlgorithm::AesCbc)),
            Err(SecurityError::AlgorithmConflict { .. })
        ));
    }

    #[test]
    fn kid_depends_on_rc_or_cc() {
        assert_eq!(
            IntegrityAlgorithm::from_kid(0x01, Integrity::Rc, None).ok(),
            Some(IntegrityAlgorithm::Crc16)
        );
        assert_eq!(
            IntegrityAlgorithm::from_kid(0x05, Integrity::Rc, None).ok(),
            Some(IntegrityAlgorithm::Crc32)
        );
        assert_eq!(
            IntegrityAlgorithm::from_kid(0x05, Integrity::Cc, None).ok(),
            Some(IntegrityAlgorithm::TripleDes2KeyCbcMac)
        );
        assert_eq!(
            IntegrityAlgorithm::from_kid(0x02, Integrity::Cc, None).ok(),
            Some(IntegrityAlgorithm::AesCmac)
        );
        assert!(IntegrityAlgorithm::from_kid(0x0D, Integrity::Cc, None).is_err());
        assert!(IntegrityAlgorithm::from_kid(0x02, Integrity::Rc, None).is_err());
        // A key set configured for a CC (3DES) does not override an explicit RC coding (SPI
        // 11 35, KID 15: CRC32); a CC of another algorithm still conflicts.
        assert_eq!(
            IntegrityAlgorithm::from_kid(
                0x15,
                Integrity::Rc,
                Some(IntegrityAlgorithm::TripleDes2KeyCbcMac)
            )
            .ok(),
            Some(IntegrityAlgorithm::Crc32)
        );
        assert!(matches!(
            IntegrityAlgorithm::from_kid(
                0x12,
                Integrity::Cc,
                Some(IntegrityAlgorithm::TripleDes2KeyCbcMac)
            ),
            Err(SecurityError::AlgorithmConflict { .. })
        ));
        assert!(IntegrityAlgorithm::from_kid(0x02, Integrity::Ds, None).is_err());
    }

    #[test]
    fn names_parse_back() {
        for a in CipherAlgorithm::ALL {
            assert_eq!(a.name().parse::<CipherAlgorithm>().ok(), Some(a));
        }
        for a in IntegrityAlgorithm::ALL {
            assert_eq!(a.name().parse::<IntegrityAlgorithm>().ok(), Some(a));
        }
        assert!("rot13".parse::<CipherAlgorithm>().is_err());
    }
}
