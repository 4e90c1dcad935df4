//! GSM 7-bit default alphabet (TS 23.038 6.2.1) and septet packing (6.1.2.1), as far as
//! alphanumeric addresses need them.

use crate::error::{Error, Result};

const ESCAPE: u8 = 0x1B;

/// The default alphabet; index = septet value. 0x1B is the escape to the extension table.
const DEFAULT_ALPHABET: [char; 128] = [
    '@', '£', '$', '¥', 'è', 'é', 'ù', 'ì', 'ò', 'Ç', '\n', 'Ø', 'ø', '\r', 'Å', 'å', //
    'Δ', '_', 'Φ', 'Γ', 'Λ', 'Ω', 'Π', 'Ψ', 'Σ', 'Θ', 'Ξ', '\u{1b}', 'Æ', 'æ', 'ß', 'É', //
    ' ', '!', '"', '#', '¤', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', '/', //
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', ':', ';', '<', '=', '>', '?', //
    '¡', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H', 'I', 'J', 'K', 'L', 'M', 'N', 'O', //
    'P', 'Q', 'R', 'S', 'T', 'U', 'V', 'W', 'X', 'Y', 'Z', 'Ä', 'Ö', 'Ñ', 'Ü', '§', //
    '¿', 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', //
    'p', 'q', 'r', 's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'ä', 'ö', 'ñ', 'ü', 'à', //
];

/// The extension table (TS 23.038 6.2.1.1): septet after ESC, and its character.
const EXTENSION: [(u8, char); 10] = [
    (0x0A, '\u{0c}'),
    (0x14, '^'),
    (0x28, '{'),
    (0x29, '}'),
    (0x2F, '\\'),
    (0x3C, '['),
    (0x3D, '~'),
    (0x3E, ']'),
    (0x40, '|'),
    (0x65, '€'),
];

/// Unpacks `count` septets from packed octets (LSB first); missing bits read as 0.
pub(crate) fn unpack_septets(packed: &[u8], count: usize) -> Vec<u8> {
    (0..count)
        .map(|i| {
            let bit = i * 7;
            let byte = bit / 8;
            let shift = bit % 8;
            let lo = u16::from(packed.get(byte).copied().unwrap_or(0));
            let hi = u16::from(packed.get(byte + 1).copied().unwrap_or(0));
            (((hi << 8) | lo) >> shift) as u8 & 0x7F
        })
        .collect()
}

/// Packs septets into octets, LSB first; spare bits are 0.
pub(crate) fn pack_septets(septets: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; (septets.len() * 7).div_ceil(8)];
    for (i, &s) in septets.iter().enumerate() {
        let bit = i * 7;
        let byte = bit / 8;
        let shift = bit % 8;
        let v = u16::from(s & 0x7F) << shift;
        if let Some(b) = out.get_mut(byte) {
            *b |= v as u8;
        }
        if let Some(b) = out.get_mut(byte + 1) {
            *b |= (v >> 8) as u8;
        }
    }
    out
}

/// Septets to text; an unknown escape sequence reads as a space (TS 23.038 6.2.1.1).
pub fn decode_text(septets: &[u8]) -> String {
    let mut out = String::with_capacity(septets.len());
    let mut iter = septets.iter();
    while let Some(&s) = iter.next() {
        if s == ESCAPE {
            match iter.next() {
                Some(&e) => out.push(
                    EXTENSION
                        .iter()
                        .find(|(code, _)| *code == e)
                        .map(|(_, c)| *c)
                        .unwrap_or(' '),
                ),
                None => out.push(' '),
            }
        } else {
            out.push(DEFAULT_ALPHABET[usize::from(s & 0x7F)]);
        }
    }
    out
}

/// Text to septets, using the extension table where needed.
pub fn encode_text(text: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len());
    for character in text.chars() {
        if character != '\u{1b}' {
            if let Some(pos) = DEFAULT_ALPHABET.iter().position(|&c| c == character) {
                out.push(pos as u8);
                continue;
            }
            if let Some((code, _)) = EXTENSION.iter().find(|(_, c)| *c == character) {
                out.push(ESCAPE);
                out.push(*code);
                continue;
            }
        }
        return Err(Error::NotGsm7Character { character });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_unpack_roundtrip() {
        let septets: Vec<u8> = (0..23).map(|i| (i * 5 + 3) as u8 & 0x7F).collect();
        let packed = pack_septets(&septets);
        assert_eq!(packed.len(), (23 * 7usize).div_ceil(8));
        assert_eq!(unpack_septets(&packed, 23), septets);
    }

    #[test]
    fn known_packing() {
        // "hellohello" packs to E8 32 9B FD 46 97 D9 EC 37 (classic PDU example).
        let septets = encode_text("hellohello").unwrap();
        assert_eq!(
            pack_septets(&septets),
            [0xE8, 0x32, 0x9B, 0xFD, 0x46, 0x97, 0xD9, 0xEC, 0x37]
        );
    }

    #[test]
    fn extension_roundtrip() {
        let septets = encode_text("a€[b").unwrap();
        assert_eq!(septets, [0x61, 0x1B, 0x65, 0x1B, 0x3C, 0x62]);
        assert_eq!(decode_text(&septets), "a€[b");
        assert!(matches!(
            encode_text("ж"),
            Err(Error::NotGsm7Character { character: 'ж' })
        ));
    }
}
