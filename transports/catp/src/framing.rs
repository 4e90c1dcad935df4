//! SCP80 secured packets framed for CAT_TP (TS 102 225 clause 5, as the opentelecoms gsm0348
//! library summarises it), sans-IO and without keys:
//!
//! ```text
//! command: CPI '01' | CPL (BER length) | CHL (1) | SPI KIc KID TAR CNTR PCNTR RC/CC/DS data
//! PoR:     RPI '02' | RPL (BER length) | RHL (1) | TAR CNTR PCNTR STATUS RC/CC/DS data
//! ```
//! CHI and RHI are null (absent). Over CAT_TP the identifier and the length are part of the
//! RC/CC/DS input (over SMS the UDH is not, for commands); the security module computes it with
//! [`prefix`]. Each packet is one CAT_TP SDU.
//!
//! The rest of otagw handles packets with a two-octet length first (the SMS-PP form, TS 31.115);
//! [`to_cattp`] and [`from_cattp`] convert the framing around the same header and body.

use thiserror::Error;

/// Command Packet Identifier over CAT_TP.
pub const CPI: u8 = 0x01;
/// Response Packet Identifier over CAT_TP.
pub const RPI: u8 = 0x02;

/// Why a packet's framing is wrong.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FramingError {
    #[error("packet truncated in {0}")]
    Truncated(&'static str),
    #[error("packet identifier {found:#04x}, expected {expected:#04x}")]
    Identifier { expected: u8, found: u8 },
    #[error("length says {declared} octets follow, {actual} do")]
    Length { declared: usize, actual: usize },
    #[error("length coding {0:#04x} not supported")]
    LengthCoding(u8),
}

/// The identifier and BER length (1 to 3 octets) of a packet of `len` octets after them:
/// (bytes, how many of them are used).
pub fn prefix(identifier: u8, len: u16) -> ([u8; 4], usize) {
    let [hi, lo] = len.to_be_bytes();
    match len {
        0..=0x7F => ([identifier, lo, 0, 0], 2),
        0x80..=0xFF => ([identifier, 0x81, lo, 0], 3),
        _ => ([identifier, 0x82, hi, lo], 4),
    }
}

/// A packet from its two-octet length on (SMS form) into CAT_TP form.
pub fn to_cattp(identifier: u8, packet: &[u8]) -> Result<Vec<u8>, FramingError> {
    let l = packet.get(..2).ok_or(FramingError::Truncated("length"))?;
    let declared = u16::from_be_bytes([l[0], l[1]]);
    let body = &packet[2..];
    if usize::from(declared) != body.len() {
        return Err(FramingError::Length {
            declared: usize::from(declared),
            actual: body.len(),
        });
    }
    let (p, n) = prefix(identifier, declared);
    let mut out = Vec::with_capacity(n + body.len());
    out.extend_from_slice(&p[..n]);
    out.extend_from_slice(body);
    Ok(out)
}

/// A packet in CAT_TP form back into the two-octet length form.
pub fn from_cattp(identifier: u8, sdu: &[u8]) -> Result<Vec<u8>, FramingError> {
    let (&id, rest) = sdu
        .split_first()
        .ok_or(FramingError::Truncated("identifier"))?;
    if id != identifier {
        return Err(FramingError::Identifier {
            expected: identifier,
            found: id,
        });
    }
    let (&l0, rest) = rest
        .split_first()
        .ok_or(FramingError::Truncated("length"))?;
    let (declared, body) = match l0 {
        0..=0x7F => (usize::from(l0), rest),
        0x81 => {
            let (&l, r) = rest
                .split_first()
                .ok_or(FramingError::Truncated("length"))?;
            (usize::from(l), r)
        }
        0x82 => {
            let l = rest.get(..2).ok_or(FramingError::Truncated("length"))?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), &rest[2..])
        }
        c => return Err(FramingError::LengthCoding(c)),
    };
    if declared != body.len() {
        return Err(FramingError::Length {
            declared,
            actual: body.len(),
        });
    }
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&(declared as u16).to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_codings() {
        assert_eq!(prefix(CPI, 0x15), ([1, 0x15, 0, 0], 2));
        assert_eq!(prefix(RPI, 0x80), ([2, 0x81, 0x80, 0], 3));
        assert_eq!(prefix(CPI, 0x1234), ([1, 0x82, 0x12, 0x34], 4));
    }

    #[test]
    fn round_trips_and_refusals() {
        for len in [0usize, 1, 127, 128, 255, 256, 40_000] {
            let mut p = (len as u16).to_be_bytes().to_vec();
            p.extend((0..len).map(|i| i as u8));
            let w = to_cattp(CPI, &p).unwrap();
            assert_eq!(w[0], CPI);
            assert_eq!(from_cattp(CPI, &w).unwrap(), p);
            assert!(matches!(
                from_cattp(RPI, &w),
                Err(FramingError::Identifier { .. })
            ));
            if len > 0 {
                assert!(from_cattp(CPI, &w[..w.len() - 1]).is_err());
            }
        }
        assert!(to_cattp(CPI, &[0, 5, 1]).is_err());
        assert_eq!(
            from_cattp(CPI, &[1, 0x83, 0, 0, 1]),
            Err(FramingError::LengthCoding(0x83))
        );
        assert!(from_cattp(CPI, &[]).is_err());
    }
}
