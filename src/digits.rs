//! Digit strings (ICCID, IMSI, MSISDN) kept in 16 octets each, and their EF encodings.

use std::fmt;

/// Up to [`Digits::MAX_LEN`] decimal digits packed into a `u128` behind a leading 1, so that
/// leading zeros survive. No heap: 100,000 cards carry three of these each.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Digits(u128);

impl Digits {
    /// Most digits a `Digits` holds (u128 holds 38 digits behind the sentinel; keep a margin).
    pub const MAX_LEN: usize = 37;

    /// Parses ASCII digits only (no sign, no spaces); `None` if empty, too long or not digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.is_empty() || s.len() > Self::MAX_LEN {
            return None;
        }
        let mut v: u128 = 1;
        for b in s.bytes() {
            if !b.is_ascii_digit() {
                return None;
            }
            v = v.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
        }
        Some(Self(v))
    }

    /// `value` written on exactly `width` digits (leading zeros kept); `None` if it does not fit.
    pub fn from_number(value: u64, width: u32) -> Option<Self> {
        let base = 10u128
            .checked_pow(width)
            .filter(|_| width as usize <= Self::MAX_LEN)?;
        let value = u128::from(value);
        (value < base).then_some(Self(base + value))
    }

    /// The digits as values 0..=9, most significant first.
    pub fn values(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(20);
        let mut v = self.0;
        while v > 1 {
            out.push((v % 10) as u8);
            v /= 10;
        }
        out.reverse();
        out
    }
}

impl fmt::Display for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.to_string();
        f.write_str(s.get(1..).unwrap_or_default())
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Packs digit values two per octet, low nibble first (the "swapped" BCD of SIM files), padding
/// the last nibble with F, into `out` (left as is past the digits).
fn swapped_bcd(nibbles: &[u8], out: &mut [u8]) {
    for (slot, pair) in out.iter_mut().zip(nibbles.chunks(2)) {
        let lo = pair.first().copied().unwrap_or(0xF) & 0x0F;
        let hi = pair.get(1).copied().unwrap_or(0xF) & 0x0F;
        *slot = (hi << 4) | lo;
    }
}

/// EF IMSI content (TS 31.102 clause 4.2.2, TS 51.011 clause 10.3.2): length of the IMSI in
/// octets, then the parity/identity-type nibble (`9` odd digit count, `1` even) followed by the
/// digits, swapped BCD, F-filled; unused octets FF. The IMSI must be at most 15 digits.
pub(crate) fn imsi_ef(imsi: Digits) -> [u8; 9] {
    let digits = imsi.values();
    let parity = if digits.len() % 2 == 1 { 0x9 } else { 0x1 };
    let mut nibbles = Vec::with_capacity(16);
    nibbles.push(parity);
    nibbles.extend(digits.iter().take(15));
    let mut out = [0xFF; 9];
    let len = nibbles.len().div_ceil(2);
    out[0] = len as u8;
    swapped_bcd(&nibbles, &mut out[1..]);
    out
}

/// EF ICCID content (TS 102 221 clause 13.2): the ICCID in swapped BCD, F-padded to 10 octets.
pub(crate) fn iccid_ef(iccid: Digits) -> [u8; 10] {
    let digits = iccid.values();
    let mut out = [0xFF; 10];
    swapped_bcd(digits.get(..20).unwrap_or(&digits), &mut out);
    out
}

/// The Luhn check digit for the decimal digits of `number` (ISO/IEC 7812).
pub(crate) fn luhn_digit_of(mut number: u64) -> u8 {
    let mut sum = 0u32;
    let mut double = true;
    while number > 0 {
        let d = (number % 10) as u32;
        number /= 10;
        sum += if double {
            let x = d * 2;
            if x > 9 {
                x - 9
            } else {
                x
            }
        } else {
            d
        };
        double = !double;
    }
    ((10 - sum % 10) % 10) as u8
}

/// The Luhn check digit for `digits` (ISO/IEC 7812, as ICCIDs carry it).
pub(crate) fn luhn_digit(digits: &[u8]) -> u8 {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digits {
        Digits::parse(s).unwrap()
    }

    #[test]
    fn keeps_leading_zeros() {
        assert_eq!(d("0012").to_string(), "0012");
        assert_eq!(d("0").values(), vec![0]);
        assert_ne!(d("012"), d("12"));
        assert!(Digits::parse("").is_none());
        assert!(Digits::parse("12a").is_none());
        assert!(Digits::parse("+49").is_none());
        assert!(Digits::parse(&"9".repeat(37)).is_some());
        assert!(Digits::parse(&"9".repeat(38)).is_none());
        assert_eq!(d(&"9".repeat(37)).to_string(), "9".repeat(37));
    }

    #[test]
    fn imsi_file() {
        // 15 digits: odd, parity nibble 9.
        assert_eq!(
            imsi_ef(d("001010000000001")),
            [0x08, 0x09, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x10]
        );
        // The brief's IMSI 421234567890123.
        assert_eq!(
            hex::encode(imsi_ef(d("421234567890123"))),
            "084912325476981032"
        );
        // 14 digits: even, parity nibble 1, last high nibble F.
        assert_eq!(
            hex::encode(imsi_ef(d("26201123456789"))),
            "0821261021436587f9"
        );
        assert_eq!(hex::encode(imsi_ef(d("262011234"))), "052926102143ffffff");
    }

    #[test]
    fn iccid_file() {
        assert_eq!(
            hex::encode(iccid_ef(d("8991234567788901234"))),
            "981932547687981032f4"
        );
        assert_eq!(
            hex::encode(iccid_ef(d("89490000000000000017"))),
            "98940000000000000071"
        );
    }

    #[test]
    fn luhn() {
        // 7992739871 -> 3 (the textbook example).
        assert_eq!(luhn_digit(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1]), 3);
        assert_eq!(luhn_digit(&[0]), 0);
        assert_eq!(luhn_digit_of(7992739871), 3);
        assert_eq!(
            luhn_digit_of(894900000000000123),
            luhn_digit(&d("894900000000000123").values())
        );
        assert_eq!(Digits::from_number(12, 4), Some(d("0012")));
        assert_eq!(Digits::from_number(12345, 4), None);
        assert_eq!(Digits::from_number(0, 40), None);
    }
}
