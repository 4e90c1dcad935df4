//! CAT_TP PDU codec (ETSI TS 102 127 clause 5).
//!
//! Layout, all fields big-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | flags: SYN 0x80, ACK 0x40, EAK 0x20, RST 0x10, NUL 0x08, SEG 0x04; version in b2b1 (0) |
//! | 1 | 2 | RFU (sent as 0, ignored on receipt) |
//! | 3 | 1 | header length (18 for the fixed header, more with a variable part) |
//! | 4 | 2 | source port |
//! | 6 | 2 | destination port |
//! | 8 | 2 | data length |
//! | 10 | 2 | sequence number |
//! | 12 | 2 | acknowledgement number |
//! | 14 | 2 | window size |
//! | 16 | 2 | checksum |
//! | 18 | .. | variable part: SYN: max PDU size (2), max SDU size (2), identification length (1), identification; EAK: out-of-sequence numbers, 2 octets each; RST: reason code (1) |
//! | hlen | data length | data |
//!
//! The checksum is the 16-bit one's complement of the one's complement sum of the header and the
//! data taken as 16-bit big-endian words (a trailing odd octet padded with zero), computed with
//! the checksum field set to zero; there is no pseudo-header (unlike TCP and UDP). A receiver that
//! sums the whole PDU, checksum included, gets 0xFFFF (one's complement 0).

use thiserror::Error;

/// Length of the fixed header.
pub const FIXED_HEADER_LEN: usize = 18;
/// Largest header length the one-octet field can say.
pub const MAX_HEADER_LEN: usize = 255;
/// Most out-of-sequence numbers one EAK PDU can carry ((255 - 18) / 2).
pub const MAX_EAKS: usize = (MAX_HEADER_LEN - FIXED_HEADER_LEN) / 2;
/// Smallest max PDU size a SYN may announce: the header of a SYN without identification (18 +
/// 5 = 0x17). A peer announcing less could not take the SYN-ACK; its SYN is refused with RST
/// reason 1 (illegal parameters).
pub const MIN_PDU_SIZE: u16 = (FIXED_HEADER_LEN + 5) as u16;
/// Longest identification one SYN PDU can carry (255 - 18 - 5).
pub const MAX_IDENTIFICATION_LEN: usize = MAX_HEADER_LEN - FIXED_HEADER_LEN - 5;

/// RST reason codes (TS 102 127, as Wireshark's dissector names them).
pub mod reason {
    /// Normal ending.
    pub const NORMAL: u8 = 0;
    /// Connection set-up failed, illegal parameters.
    pub const ILLEGAL_PARAMETERS: u8 = 1;
    /// Temporarily unable to set up this connection.
    pub const TEMPORARILY_UNABLE: u8 = 2;
    /// Requested port not available.
    pub const PORT_NOT_AVAILABLE: u8 = 3;
    /// Unexpected PDU received.
    pub const UNEXPECTED_PDU: u8 = 4;
    /// Maximum retries exceeded.
    pub const MAX_RETRIES: u8 = 5;
    /// Version not supported.
    pub const VERSION_NOT_SUPPORTED: u8 = 6;
}

/// The flag bits of the first octet (the version bits are kept apart, in [`Pdu::version`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    pub const SYN: Flags = Flags(0x80);
    pub const ACK: Flags = Flags(0x40);
    pub const EAK: Flags = Flags(0x20);
    pub const RST: Flags = Flags(0x10);
    pub const NUL: Flags = Flags(0x08);
    pub const SEG: Flags = Flags(0x04);
    const MASK: u8 = 0xFC;

    /// No flag set.
    pub const fn empty() -> Flags {
        Flags(0)
    }
    /// From the first octet; the version bits are dropped.
    pub const fn from_bits_truncate(octet: u8) -> Flags {
        Flags(octet & Self::MASK)
    }
    pub const fn bits(self) -> u8 {
        self.0
    }
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names = [
            (Flags::SYN, "SYN"),
            (Flags::ACK, "ACK"),
            (Flags::EAK, "EAK"),
            (Flags::RST, "RST"),
            (Flags::NUL, "NUL"),
            (Flags::SEG, "SEG"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(fl, _)| self.contains(*fl))
            .map(|(_, n)| *n)
            .collect();
        write!(f, "Flags({})", set.join("|"))
    }
}

/// The SYN PDU's variable part.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SynParams {
    /// Largest PDU (header and data, in octets) the sender of the SYN can receive.
    pub max_pdu_size: u16,
    /// Largest SDU (in octets) the sender of the SYN can receive.
    pub max_sdu_size: u16,
    /// Identification of the sender, usually the card's ICCID (BCD, nibbles swapped); may be empty.
    pub identification: Vec<u8>,
}

impl SynParams {
    /// The identification read as an ICCID (swapped-nibble BCD, F padding dropped), if every
    /// nibble is a digit or F padding and there is at least one digit.
    pub fn iccid(&self) -> Option<String> {
        let ok = self
            .identification
            .iter()
            .all(|b| (b & 0x0F) <= 9 && ((b >> 4) <= 9 || (b >> 4) == 0xF));
        let s = identification_to_iccid(&self.identification);
        (ok && !s.is_empty()).then_some(s)
    }
}

/// The variable part of the header, which the flags select: SYN wins over EAK, EAK over RST.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum VarPart {
    /// No variable part (header length 18).
    #[default]
    None,
    /// SYN flag: connection parameters.
    Syn(SynParams),
    /// EAK flag (and no SYN): sequence numbers received out of sequence.
    Eak(Vec<u16>),
    /// RST flag (and no SYN or EAK): the reason code.
    Rst(u8),
}

/// One CAT_TP PDU.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Pdu {
    pub flags: Flags,
    /// Version bits (b2b1 of the first octet); 0 for every published release.
    pub version: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u16,
    pub ack: u16,
    /// Receive window, in PDUs.
    pub window: u16,
    pub var: VarPart,
    pub data: Vec<u8>,
}

/// Why bytes are not a CAT_TP PDU. Each variant names the field at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("PDU too short for the fixed header: {len} octets, need 18")]
    TooShort { len: usize },
    #[error("header length field {hlen} below the fixed header's 18")]
    HeaderLengthTooSmall { hlen: u8 },
    #[error("header length field {hlen} plus data length field {data_len} = {declared}, but the PDU has {actual} octets")]
    LengthMismatch {
        hlen: u8,
        data_len: u16,
        declared: usize,
        actual: usize,
    },
    #[error("checksum field {field:#06x} wrong (computed {computed:#06x})")]
    Checksum { field: u16, computed: u16 },
    #[error("version field {0} not supported")]
    Version(u8),
    #[error("SYN variable part: header length {hlen} too small for max PDU size, max SDU size and identification length")]
    SynTooShort { hlen: u8 },
    #[error("SYN identification length field {id_len} does not match header length {hlen}")]
    IdentificationLength { id_len: u8, hlen: u8 },
    #[error("EAK variable part length {len} is odd")]
    EakOddLength { len: usize },
    #[error("RST variable part: header length {hlen}, need 19 for the reason code")]
    RstTooShort { hlen: u8 },
    #[error("variable part of {len} octets where the flags allow none")]
    UnexpectedVariablePart { len: usize },
}

/// Why a [`Pdu`] cannot be encoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EncodeError {
    #[error("version field {0} does not fit in 2 bits")]
    Version(u8),
    #[error("identification of {len} octets, at most 232 fit the header length field")]
    IdentificationTooLong { len: usize },
    #[error("{count} EAK numbers, at most 118 fit the header length field")]
    TooManyEaks { count: usize },
    #[error("data length {len} does not fit the 16-bit data length field")]
    DataTooLong { len: usize },
    #[error("variable part {var:?} does not match flags {flags:?}")]
    VarPartMismatch { flags: Flags, var: &'static str },
}

/// One's complement sum of `bytes` as big-endian 16-bit words (odd tail padded with zero), folded.
fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// The checksum of a whole PDU (header and data) whose checksum field (octets 16 and 17) is
/// ignored, that is, taken as zero.
pub fn checksum(pdu: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    if pdu.len() > 18 {
        sum += u32::from(ones_complement_sum(&pdu[..16]));
        sum += u32::from(ones_complement_sum(&pdu[18..]));
    } else {
        sum += u32::from(ones_complement_sum(&pdu[..pdu.len().min(16)]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

impl Pdu {
    /// Which variable part the flags call for: "syn", "eak", "rst" or "none".
    fn expected_var(flags: Flags) -> &'static str {
        if flags.contains(Flags::SYN) {
            "syn"
        } else if flags.contains(Flags::EAK) {
            "eak"
        } else if flags.contains(Flags::RST) {
            "rst"
        } else {
            "none"
        }
    }

    /// Header length this PDU encodes to (may exceed 255, which [`Pdu::encode`] refuses).
    pub fn header_len(&self) -> usize {
        FIXED_HEADER_LEN
            + match &self.var {
                VarPart::None => 0,
                VarPart::Syn(s) => 5 + s.identification.len(),
                VarPart::Eak(e) => 2 * e.len(),
                VarPart::Rst(_) => 1,
            }
    }

    /// Encoded length.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.data.len()
    }

    /// Encode with the checksum filled in.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if self.version > 3 {
            return Err(EncodeError::Version(self.version));
        }
        let got = match &self.var {
            VarPart::None => "none",
            VarPart::Syn(_) => "syn",
            VarPart::Eak(_) => "eak",
            VarPart::Rst(_) => "rst",
        };
        if got != Self::expected_var(self.flags) {
            return Err(EncodeError::VarPartMismatch {
                flags: self.flags,
                var: got,
            });
        }
        match &self.var {
            VarPart::Syn(s) if s.identification.len() > MAX_IDENTIFICATION_LEN => {
                return Err(EncodeError::IdentificationTooLong {
                    len: s.identification.len(),
                })
            }
            VarPart::Eak(e) if e.len() > MAX_EAKS => {
                return Err(EncodeError::TooManyEaks { count: e.len() })
            }
            _ => {}
        }
        let data_len = u16::try_from(self.data.len()).map_err(|_| EncodeError::DataTooLong {
            len: self.data.len(),
        })?;
        let hlen = self.header_len();
        let mut out = Vec::with_capacity(hlen + self.data.len());
        out.push(self.flags.bits() | self.version);
        out.extend_from_slice(&[0, 0]);
        out.push(hlen as u8);
        out.extend_from_slice(&self.src_port.to_be_bytes());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        out.extend_from_slice(&data_len.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.ack.to_be_bytes());
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        match &self.var {
            VarPart::None => {}
            VarPart::Syn(s) => {
                out.extend_from_slice(&s.max_pdu_size.to_be_bytes());
                out.extend_from_slice(&s.max_sdu_size.to_be_bytes());
                out.push(s.identification.len() as u8);
                out.extend_from_slice(&s.identification);
            }
            VarPart::Eak(e) => {
                for n in e {
                    out.extend_from_slice(&n.to_be_bytes());
                }
            }
            VarPart::Rst(r) => out.push(*r),
        }
        out.extend_from_slice(&self.data);
        let ck = checksum(&out);
        out[16..18].copy_from_slice(&ck.to_be_bytes());
        Ok(out)
    }

    /// Decode and verify the checksum. Accepts only version 0.
    pub fn decode(bytes: &[u8]) -> Result<Pdu, DecodeError> {
        let pdu = Self::decode_unchecked(bytes)?;
        let field = u16::from_be_bytes([bytes[16], bytes[17]]);
        let computed = checksum(bytes);
        if field != computed {
            return Err(DecodeError::Checksum { field, computed });
        }
        if pdu.version != 0 {
            return Err(DecodeError::Version(pdu.version));
        }
        Ok(pdu)
    }

    /// Decode without checking the checksum or the version (for diagnostics).
    pub fn decode_unchecked(bytes: &[u8]) -> Result<Pdu, DecodeError> {
        if bytes.len() < FIXED_HEADER_LEN {
            return Err(DecodeError::TooShort { len: bytes.len() });
        }
        let be = |i: usize| u16::from_be_bytes([bytes[i], bytes[i + 1]]);
        let flags = Flags::from_bits_truncate(bytes[0]);
        let version = bytes[0] & 0x03;
        let hlen = bytes[3];
        if (hlen as usize) < FIXED_HEADER_LEN {
            return Err(DecodeError::HeaderLengthTooSmall { hlen });
        }
        let data_len = be(8);
        let declared = hlen as usize + data_len as usize;
        if declared != bytes.len() {
            return Err(DecodeError::LengthMismatch {
                hlen,
                data_len,
                declared,
                actual: bytes.len(),
            });
        }
        let var_bytes = &bytes[FIXED_HEADER_LEN..hlen as usize];
        let var = match Self::expected_var(flags) {
            "syn" => {
                if var_bytes.len() < 5 {
                    return Err(DecodeError::SynTooShort { hlen });
                }
                let id_len = var_bytes[4];
                if var_bytes.len() != 5 + id_len as usize {
                    return Err(DecodeError::IdentificationLength { id_len, hlen });
                }
                VarPart::Syn(SynParams {
                    max_pdu_size: u16::from_be_bytes([var_bytes[0], var_bytes[1]]),
                    max_sdu_size: u16::from_be_bytes([var_bytes[2], var_bytes[3]]),
                    identification: var_bytes[5..].to_vec(),
                })
            }
            "eak" => {
                if !var_bytes.len().is_multiple_of(2) {
                    return Err(DecodeError::EakOddLength {
                        len: var_bytes.len(),
                    });
                }
                VarPart::Eak(
                    var_bytes
                        .chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect(),
                )
            }
            "rst" => {
                if var_bytes.len() != 1 {
                    return Err(DecodeError::RstTooShort { hlen });
                }
                VarPart::Rst(var_bytes[0])
            }
            _ => {
                if !var_bytes.is_empty() {
                    return Err(DecodeError::UnexpectedVariablePart {
                        len: var_bytes.len(),
                    });
                }
                VarPart::None
            }
        };
        Ok(Pdu {
            flags,
            version,
            src_port: be(4),
            dst_port: be(6),
            seq: be(10),
            ack: be(12),
            window: be(14),
            var,
            data: bytes[hlen as usize..].to_vec(),
        })
    }
}

/// ICCID digits to the identification octets commonly sent in the SYN: BCD with the nibbles of
/// each octet swapped, F-padded to an even count ("8944..." -> 98 44 ..). Non-digits are refused.
pub fn iccid_to_identification(iccid: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = iccid
        .bytes()
        .map(|b| match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'f' | b'F' => Some(0xF),
            _ => None,
        })
        .collect::<Option<_>>()?;
    Some(
        digits
            .chunks(2)
            .map(|c| c[0] | (c.get(1).copied().unwrap_or(0xF) << 4))
            .collect(),
    )
}

/// The inverse of [`iccid_to_identification`], dropping F padding.
pub fn identification_to_iccid(id: &[u8]) -> String {
    let mut s = String::with_capacity(id.len() * 2);
    for b in id {
        for n in [b & 0x0F, b >> 4] {
            match n {
                0..=9 => s.push((b'0' + n) as char),
                0xF => {}
                _ => s.push(char::from_digit(u32::from(n), 16).unwrap_or('?')),
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_whole_pdu_verifies_to_zero() {
        let pdu = Pdu {
            flags: Flags::ACK,
            src_port: 1,
            dst_port: 2,
            seq: 3,
            ack: 4,
            window: 5,
            data: vec![1, 2, 3],
            ..Pdu::default()
        };
        let b = pdu.encode().unwrap();
        assert_eq!(!ones_complement_sum(&b), 0);
    }

    #[test]
    fn iccid_round_trip() {
        let id = iccid_to_identification("8944110063000000017").unwrap();
        assert_eq!(id[0], 0x98);
        assert_eq!(id.len(), 10);
        assert_eq!(*id.last().unwrap() & 0xF0, 0xF0);
        assert_eq!(identification_to_iccid(&id), "8944110063000000017");
        let p = SynParams {
            identification: id,
            ..SynParams::default()
        };
        assert_eq!(p.iccid().as_deref(), Some("8944110063000000017"));
        let p = SynParams {
            identification: vec![0xAB, 0x12],
            ..SynParams::default()
        };
        assert_eq!(p.iccid(), None);
    }
}
