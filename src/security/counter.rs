//! The 5-octet replay counter (TS 102 225 clause 5.1.1, CNTR) and the card's check of it.

use super::spi::CounterMode;
use super::status::PorStatus;
use super::SecurityError;

/// A CNTR value: 40 bits, big-endian on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Counter(u64);

impl Counter {
    /// The highest value five octets hold; a card at this value is blocked.
    pub const MAX: u64 = 0xFF_FFFF_FFFF;

    /// A counter, refusing values above 40 bits.
    pub fn new(value: u64) -> Result<Self, SecurityError> {
        if value > Self::MAX {
            return Err(SecurityError::CounterOutOfRange(value));
        }
        Ok(Self(value))
    }

    /// The numeric value.
    pub fn value(self) -> u64 {
        self.0
    }

    /// Decodes five octets.
    pub fn from_bytes(b: [u8; 5]) -> Self {
        Self(b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
    }

    /// Encodes five octets, big-endian.
    pub fn to_bytes(self) -> [u8; 5] {
        let b = self.0.to_be_bytes();
        [b[3], b[4], b[5], b[6], b[7]]
    }

    /// The next value, or an error when the counter space is used up.
    pub fn next(self) -> Result<Self, SecurityError> {
        if self.0 >= Self::MAX {
            return Err(SecurityError::CounterExhausted(self.0));
        }
        Ok(Self(self.0 + 1))
    }
}

/// The card's replay check (TS 102 225 clause 5.1.1 and 5.2.2): `Ok(Some(c))` means process the
/// packet and store `c` as the card's counter, `Ok(None)` means process with nothing to store,
/// `Err(status)` is the PoR status to answer with.
pub fn check_counter(
    mode: CounterMode,
    received: Counter,
    stored: Counter,
) -> Result<Option<Counter>, PorStatus> {
    match mode {
        CounterMode::NoCounter => Ok(None),
        CounterMode::NotChecked => Ok(None),
        CounterMode::MustBeHigher | CounterMode::MustBeOneHigher
            if stored.value() >= Counter::MAX =>
        {
            Err(PorStatus::CounterBlocked)
        }
        CounterMode::MustBeHigher if received > stored => Ok(Some(received)),
        CounterMode::MustBeHigher => Err(PorStatus::CounterLow),
        CounterMode::MustBeOneHigher if received.value() == stored.value() + 1 => {
            Ok(Some(received))
        }
        CounterMode::MustBeOneHigher if received <= stored => Err(PorStatus::CounterLow),
        CounterMode::MustBeOneHigher => Err(PorStatus::CounterHigh),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(v: u64) -> Counter {
        Counter::new(v).unwrap_or_default()
    }

    #[test]
    fn wire_form() {
        assert_eq!(c(100).to_bytes(), [0, 0, 0, 0, 0x64]);
        assert_eq!(Counter::from_bytes([1, 2, 3, 4, 5]).value(), 0x01_0203_0405);
        assert!(Counter::new(Counter::MAX + 1).is_err());
        assert!(c(Counter::MAX).next().is_err());
        assert_eq!(c(7).next().map(Counter::value), Ok(8));
    }

    #[test]
    fn all_four_modes() {
        use CounterMode::*;
        assert_eq!(check_counter(NoCounter, c(0), c(9)), Ok(None));
        assert_eq!(check_counter(NotChecked, c(1), c(9)), Ok(None));
        assert_eq!(check_counter(MustBeHigher, c(10), c(9)), Ok(Some(c(10))));
        assert_eq!(check_counter(MustBeHigher, c(500), c(9)), Ok(Some(c(500))));
        assert_eq!(
            check_counter(MustBeHigher, c(9), c(9)),
            Err(PorStatus::CounterLow)
        );
        assert_eq!(check_counter(MustBeOneHigher, c(10), c(9)), Ok(Some(c(10))));
        assert_eq!(
            check_counter(MustBeOneHigher, c(9), c(9)),
            Err(PorStatus::CounterLow)
        );
        assert_eq!(
            check_counter(MustBeOneHigher, c(11), c(9)),
            Err(PorStatus::CounterHigh)
        );
        assert_eq!(
            check_counter(MustBeHigher, c(Counter::MAX), c(Counter::MAX)),
            Err(PorStatus::CounterBlocked)
        );
    }
}
