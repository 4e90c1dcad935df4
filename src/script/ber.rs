//! BER-TLV helpers (ISO/IEC 8825-1) as used by TS 102 226 clause 5.2 and GlobalPlatform.
//!
//! Lengths: one octet up to 127, `81 xx` up to 255, `82 xx xx` up to 65535. Tags are single
//! octets everywhere in this module's formats.

use super::error::ScriptError;

/// Largest length this module encodes (`82 FF FF`).
pub const MAX_BER_LENGTH: usize = 0xFFFF;

/// Encoded BER length: one octet up to 127, `81 xx` up to 255, `82 xx xx` up to 65535.
pub fn encode_ber_length(len: usize) -> Result<Vec<u8>, ScriptError> {
    let mut out = Vec::with_capacity(3);
    push_ber_length(&mut out, len)?;
    Ok(out)
}

/// Number of octets [`encode_ber_length`] produces for `len` (1, 2 or 3; 3 also past the limit).
pub fn ber_length_size(len: usize) -> usize {
    match len {
        0..=0x7F => 1,
        0x80..=0xFF => 2,
        _ => 3,
    }
}

/// Appends the BER length of `len` to `out`.
pub(crate) fn push_ber_length(out: &mut Vec<u8>, len: usize) -> Result<(), ScriptError> {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=MAX_BER_LENGTH => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => {
            return Err(ScriptError::TooLong {
                field: "BER-TLV value",
                len,
                max: MAX_BER_LENGTH,
            })
        }
    }
    Ok(())
}

/// Appends a single-octet-tag TLV with a definite BER length.
pub(crate) fn push_tlv(out: &mut Vec<u8>, tag: u8, value: &[u8]) -> Result<(), ScriptError> {
    out.push(tag);
    push_ber_length(out, value.len())?;
    out.extend_from_slice(value);
    Ok(())
}

/// Encoded size of a single-octet-tag TLV holding `value_len` octets.
pub(crate) fn tlv_size(value_len: usize) -> usize {
    1 + ber_length_size(value_len) + value_len
}

/// Decoded BER length at the start of `input`: `(length, octets consumed)`.
///
/// Indefinite length (`80`) is refused here; templates that allow it check for it first.
pub fn parse_ber_length(input: &[u8]) -> Result<(usize, usize), ScriptError> {
    let first = *input.first().ok_or(ScriptError::Truncated {
        field: "BER length",
        needed: 1,
        available: 0,
    })?;
    match first {
        0x00..=0x7F => Ok((usize::from(first), 1)),
        0x80 => Err(ScriptError::IndefiniteLength("this TLV")),
        0x81 | 0x82 => {
            let n = usize::from(first & 0x7F);
            let octets = input.get(1..1 + n).ok_or(ScriptError::Truncated {
                field: "BER length",
                needed: 1 + n,
                available: input.len(),
            })?;
            let len = octets
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            Ok((len, 1 + n))
        }
        other => Err(ScriptError::BerLengthUnsupported(other)),
    }
}

/// One TLV read from a buffer with single-octet tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
}

/// Cursor over a byte slice that never indexes out of bounds.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn remaining(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.remaining().is_empty()
    }

    pub fn peek(&self) -> Option<u8> {
        self.remaining().first().copied()
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, ScriptError> {
        Ok(self.take(1, field)?.first().copied().unwrap_or_default())
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, ScriptError> {
        let b = self.take(2, field)?;
        Ok(b.iter().fold(0u16, |acc, x| (acc << 8) | u16::from(*x)))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, ScriptError> {
        let b = self.take(4, field)?;
        Ok(b.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)))
    }

    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ScriptError> {
        let rest = self.remaining();
        let out = rest.get(..n).ok_or(ScriptError::Truncated {
            field,
            needed: n,
            available: rest.len(),
        })?;
        self.pos += n;
        Ok(out)
    }

    /// Length-prefixed (one octet) value.
    pub fn lv(&mut self, field: &'static str) -> Result<&'a [u8], ScriptError> {
        let n = self.u8(field)?;
        self.take(usize::from(n), field)
    }

    /// A single-octet-tag TLV with a definite BER length.
    pub fn tlv(&mut self, context: &'static str) -> Result<Tlv<'a>, ScriptError> {
        let tag = self.u8(context)?;
        if tag & 0x1F == 0x1F {
            return Err(ScriptError::MultiOctetTag { context, tag });
        }
        let (len, used) = match parse_ber_length(self.remaining()) {
            Err(ScriptError::IndefiniteLength(_)) => {
                return Err(ScriptError::IndefiniteLength(context))
            }
            other => other?,
        };
        self.pos += used;
        let value = self.take(len, context)?;
        Ok(Tlv { tag, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn length_forms() {
        assert_eq!(encode_ber_length(0).unwrap(), [0x00]);
        assert_eq!(encode_ber_length(127).unwrap(), [0x7F]);
        assert_eq!(encode_ber_length(128).unwrap(), [0x81, 0x80]);
        assert_eq!(encode_ber_length(255).unwrap(), [0x81, 0xFF]);
        assert_eq!(encode_ber_length(256).unwrap(), [0x82, 0x01, 0x00]);
        assert_eq!(encode_ber_length(65535).unwrap(), [0x82, 0xFF, 0xFF]);
        assert!(encode_ber_length(65536).is_err());
    }

    #[test]
    fn length_errors() {
        assert_eq!(
            parse_ber_length(&[0x83, 1, 0, 0]).unwrap_err().to_string(),
            "BER length 0x83 not supported"
        );
        assert!(matches!(
            parse_ber_length(&[0x80]),
            Err(ScriptError::IndefiniteLength(_))
        ));
        assert!(matches!(
            parse_ber_length(&[0x82, 0x01]),
            Err(ScriptError::Truncated { .. })
        ));
        assert!(parse_ber_length(&[]).is_err());
    }

    #[test]
    fn reader_tlv() {
        let mut r = Reader::new(&[0x22, 0x02, 0xAB, 0xCD, 0x81, 0x81, 0x01]);
        let t = r.tlv("test").unwrap();
        assert_eq!((t.tag, t.value), (0x22, &[0xAB, 0xCD][..]));
        // 81 81 01 -> length 1 but no value
        assert!(r.tlv("test").is_err());
        assert!(Reader::new(&[0x1F, 0x01, 0x00]).tlv("t").is_err());
    }

    proptest! {
        #[test]
        fn ber_length_roundtrip(len in 0usize..=65535) {
            let enc = encode_ber_length(len).unwrap();
            prop_assert_eq!(enc.len(), ber_length_size(len));
            prop_assert_eq!(parse_ber_length(&enc).unwrap(), (len, enc.len()));
        }

        #[test]
        fn ber_length_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..6)) {
            let _ = parse_ber_length(&bytes);
            let mut r = Reader::new(&bytes);
            while r.tlv("fuzz").is_ok() {}
        }
    }
}
