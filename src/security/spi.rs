//! The Security Parameter Indication (TS 102 225 clause 5.1.1), fully decoded.

use serde::Serialize;

/// Integrity applied to a packet: none, redundancy check, cryptographic checksum or signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Integrity {
    /// b2b1 = 00.
    None,
    /// b2b1 = 01: redundancy check (CRC).
    Rc,
    /// b2b1 = 10: cryptographic checksum.
    Cc,
    /// b2b1 = 11: digital signature.
    Ds,
}

impl Integrity {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => Self::None,
            0b01 => Self::Rc,
            0b10 => Self::Cc,
            _ => Self::Ds,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::None => 0b00,
            Self::Rc => 0b01,
            Self::Cc => 0b10,
            Self::Ds => 0b11,
        }
    }
}

/// Counter handling asked of the card (first SPI octet, b5b4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CounterMode {
    /// 00: no counter.
    NoCounter,
    /// 01: counter present, not checked.
    NotChecked,
    /// 10: process only if the counter is higher than the card's.
    MustBeHigher,
    /// 11: process only if the counter is exactly one higher than the card's.
    MustBeOneHigher,
}

impl CounterMode {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => Self::NoCounter,
            0b01 => Self::NotChecked,
            0b10 => Self::MustBeHigher,
            _ => Self::MustBeOneHigher,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::NoCounter => 0b00,
            Self::NotChecked => 0b01,
            Self::MustBeHigher => 0b10,
            Self::MustBeOneHigher => 0b11,
        }
    }
}

/// When the card shall send a PoR (second SPI octet, b2b1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PorRequirement {
    /// 00: no PoR.
    None,
    /// 01: PoR always.
    Always,
    /// 10: PoR only on error.
    OnError,
    /// 11: reserved.
    Reserved,
}

impl PorRequirement {
    fn from_bits(b: u8) -> Self {
        match b & 0b11 {
            0b00 => Self::None,
            0b01 => Self::Always,
            0b10 => Self::OnError,
            _ => Self::Reserved,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::None => 0b00,
            Self::Always => 0b01,
            Self::OnError => 0b10,
            Self::Reserved => 0b11,
        }
    }
}

/// What ends a command sent with a PoR requirement: the one rule every transport and path
/// follows (TS 102 225 clause 5.1.1, SPI second octet b2b1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PorEnding {
    /// The card's PoR ends it (success or failure by its status); no PoR in time: resend the
    /// same packet, then fail.
    Por,
    /// The network's delivery report ends it with success: the card sends nothing. A packet
    /// whose delivery was confirmed is never sent again (the card would see a replay).
    Delivery,
    /// A PoR ends it with the card's error; delivery followed by the PoR wait with no PoR ends
    /// it with success. Never resent once delivered.
    DeliveryThenSilence,
}

impl PorRequirement {
    /// How a command with this requirement ends; `None` for the reserved coding, which is
    /// refused at submission.
    pub fn ending(self) -> Option<PorEnding> {
        match self {
            Self::Always => Some(PorEnding::Por),
            Self::None => Some(PorEnding::Delivery),
            Self::OnError => Some(PorEnding::DeliveryThenSilence),
            Self::Reserved => None,
        }
    }
}

/// Both SPI octets as typed fields. Reserved bits are kept so any two octets round-trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Spi {
    /// Integrity of the command packet (octet 1, b2b1).
    pub integrity: Integrity,
    /// Command packet ciphered (octet 1, b3).
    pub ciphered: bool,
    /// Counter mode (octet 1, b5b4).
    pub counter: CounterMode,
    /// PoR requirement (octet 2, b2b1).
    pub por: PorRequirement,
    /// Integrity of the PoR (octet 2, b4b3).
    pub por_integrity: Integrity,
    /// PoR ciphered (octet 2, b5).
    pub por_ciphered: bool,
    /// PoR sent as a separate SMS-SUBMIT (true) or in the RP-ACK / delivery report (false)
    /// (octet 2, b6).
    pub por_via_submit: bool,
    /// Reserved bits of octet 1 (b8..b6), as received.
    pub reserved1: u8,
    /// Reserved bits of octet 2 (b8b7), as received.
    pub reserved2: u8,
}

impl Spi {
    /// Decodes the two SPI octets.
    pub fn from_bytes(b: [u8; 2]) -> Self {
        Self {
            integrity: Integrity::from_bits(b[0]),
            ciphered: b[0] & 0x04 != 0,
            counter: CounterMode::from_bits(b[0] >> 3),
            por: PorRequirement::from_bits(b[1]),
            por_integrity: Integrity::from_bits(b[1] >> 2),
            por_ciphered: b[1] & 0x10 != 0,
            por_via_submit: b[1] & 0x20 != 0,
            reserved1: b[0] & 0xE0,
            reserved2: b[1] & 0xC0,
        }
    }

    /// Encodes the two SPI octets.
    pub fn to_bytes(&self) -> [u8; 2] {
        [
            self.integrity.bits()
                | (u8::from(self.ciphered) << 2)
                | (self.counter.bits() << 3)
                | (self.reserved1 & 0xE0),
            self.por.bits()
                | (self.por_integrity.bits() << 2)
                | (u8::from(self.por_ciphered) << 4)
                | (u8::from(self.por_via_submit) << 5)
                | (self.reserved2 & 0xC0),
        ]
    }

    /// The version of the key set whose counter a packet with this SPI and these KIc/KID
    /// octets uses (TS 102 225 clause 5.1.1): the KID's when there is integrity, else the KIc's.
    pub fn counter_version(&self, kic: u8, kid: u8) -> u8 {
        if self.integrity == Integrity::None {
            kic >> 4
        } else {
            kid >> 4
        }
    }

    /// Parses four hex digits.
    pub fn from_hex(s: &str) -> Result<Self, String> {
        let v = hex::decode(s).map_err(|e| format!("SPI {s:?} is not hex: {e}"))?;
        let b: [u8; 2] = v.try_into().map_err(|v: Vec<u8>| {
            format!("SPI must be 2 octets (4 hex digits), got {}", v.len())
        })?;
        Ok(Self::from_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spi_1621_from_notes() {
        // PROTOCOL-NOTES: 16 21 = CC + ciphering + counter must be higher; PoR always, by
        // SMS-SUBMIT, neither ciphered nor checksummed.
        let spi = Spi::from_bytes([0x16, 0x21]);
        assert_eq!(spi.integrity, Integrity::Cc);
        assert!(spi.ciphered);
        assert_eq!(spi.counter, CounterMode::MustBeHigher);
        assert_eq!(spi.por, PorRequirement::Always);
        assert_eq!(spi.por_integrity, Integrity::None);
        assert!(!spi.por_ciphered);
        assert!(spi.por_via_submit);
    }

    #[test]
    fn spi_0619_from_pysim() {
        let spi = Spi::from_bytes([0x06, 0x19]);
        assert_eq!(spi.integrity, Integrity::Cc);
        assert!(spi.ciphered);
        assert_eq!(spi.counter, CounterMode::NoCounter);
        assert_eq!(spi.por, PorRequirement::Always);
        assert_eq!(spi.por_integrity, Integrity::Cc);
        assert!(spi.por_ciphered);
        assert!(!spi.por_via_submit);
    }

    #[test]
    fn every_spi_round_trips() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(Spi::from_bytes([a, b]).to_bytes(), [a, b]);
            }
        }
    }
}
