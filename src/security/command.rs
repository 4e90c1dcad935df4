//! Command packets (TS 102 225 clause 5.1, SMS-PP coding per TS 31.115 clause 4.2).
//!
//! ```text
//! CPL(2) CHL(1) SPI(2) KIc(1) KID(1) TAR(3) | CNTR(5) PCNTR(1) RC/CC(n) data padding
//!                                              '------ ciphered when SPI b3 is set -----'
//! ```
//! The RC/CC covers CPL through PCNTR and the data with its padding (not the UDH, and not the
//! RC/CC field itself). CPL is always emitted, ciphered or not.
//!
//! Over CAT_TP ([`PacketFraming::CatTp`]) the packet starts with CPI `01` and a BER-coded CPL
//! instead, and those octets are part of the RC/CC input (TS 102 225 clause 5.1; see
//! `otagw_catp::framing`). The codec works on the two-octet form and swaps the framing at the
//! edges.

use serde::Serialize;

use super::algorithm::{CipherAlgorithm, IntegrityAlgorithm, KeyIdentifier};
use super::counter::Counter;
use super::crypto::IntegrityKey;
use super::keys::Scp80Keys;
use super::spi::{Integrity, Spi};
use super::{check_framing, take, SecurityError, Tar};

/// Length of CPL through PCNTR, the part of the RC/CC input before the data.
const CLEAR_PREFIX: usize = 16;
/// Offset of CNTR, where ciphering starts.
const CNTR_AT: usize = 10;
/// CHL without the RC/CC: SPI(2) KIc KID TAR(3) CNTR(5) PCNTR.
const CHL_BASE: usize = 13;

/// How an SCP80 packet is framed on its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PacketFraming {
    /// SMS-PP (TS 31.115): two-octet CPL, not preceded by anything in the RC/CC input.
    #[default]
    Sms,
    /// CAT_TP (TS 102 225 clause 5): CPI `01` and a BER CPL, both in the RC/CC input.
    CatTp,
}

/// The octets that stand for the two-octet CPL in the RC/CC input: (buffer, length used).
fn cc_length_prefix(framing: PacketFraming, packet: &[u8]) -> ([u8; 4], usize) {
    match framing {
        PacketFraming::Sms => {
            let mut b = [0u8; 4];
            let n = packet.len().min(2);
            b[..n].copy_from_slice(&packet[..n]);
            (b, n)
        }
        PacketFraming::CatTp => {
            let cpl = packet
                .get(..2)
                .map_or(0, |l| u16::from_be_bytes([l[0], l[1]]));
            otagw_catp::framing::prefix(otagw_catp::framing::CPI, cpl)
        }
    }
}

/// The header fields of a command packet that the sender chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CommandHeader {
    /// Security parameter indication.
    pub spi: Spi,
    /// Ciphering key identifier.
    #[serde(serialize_with = "ser_kid")]
    pub kic: KeyIdentifier,
    /// Integrity key identifier.
    #[serde(serialize_with = "ser_kid")]
    pub kid: KeyIdentifier,
    /// Toolkit application reference.
    #[serde(serialize_with = "ser_hex")]
    pub tar: Tar,
    /// Replay counter.
    #[serde(serialize_with = "ser_counter")]
    pub counter: Counter,
}

fn ser_kid<S: serde::Serializer>(k: &KeyIdentifier, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{:02x}", k.0))
}
pub(crate) fn ser_hex<S: serde::Serializer>(b: &Tar, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}
pub(crate) fn ser_counter<S: serde::Serializer>(c: &Counter, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(c.to_bytes()))
}

/// Checks that a configured key fits the KIc/KID coding and the SPI's integrity kind.
fn check_key_coding(
    header: &CommandHeader,
    integrity: Integrity,
    keys: &Scp80Keys,
    mac: Option<&IntegrityKey>,
    ciphered: bool,
) -> Result<(), SecurityError> {
    if ciphered {
        let key = keys.cipher().ok_or(SecurityError::MissingKey {
            field: "KIc",
            what: "ciphering",
        })?;
        CipherAlgorithm::from_kic(header.kic.0, Some(key.algorithm()))?;
    }
    match integrity {
        Integrity::None => Ok(()),
        Integrity::Ds => Err(SecurityError::Unsupported(
            "digital signatures (SPI b2b1 = 11) are not supported",
        )),
        Integrity::Rc | Integrity::Cc => {
            let key = mac.ok_or_else(|| SecurityError::MissingKey {
                field: "KID",
                what: if integrity == Integrity::Rc {
                    "a redundancy check"
                } else {
                    "a cryptographic checksum"
                },
            })?;
            IntegrityAlgorithm::from_kid(header.kid.0, integrity, Some(key.algorithm()))?;
            Ok(())
        }
    }
}

/// Padding octets so that `ciphered_len` becomes a multiple of `block`.
pub(crate) fn padding(ciphered_len: usize, block: usize) -> usize {
    (block - ciphered_len % block) % block
}

/// Gateway side: secures `data` (the remote APDUs) into a command packet, from CPL on.
pub fn encode_command_packet(
    header: &CommandHeader,
    keys: &Scp80Keys,
    data: &[u8],
) -> Result<Vec<u8>, SecurityError> {
    let mut out = Vec::new();
    encode_command_packet_into(header, keys, data, &mut out)?;
    Ok(out)
}

/// Gateway side: secures `data` into a command packet framed for its transport (for
/// [`PacketFraming::CatTp`] from CPI on, else from CPL on).
pub fn encode_command_packet_framed(
    header: &CommandHeader,
    keys: &Scp80Keys,
    data: &[u8],
    framing: PacketFraming,
) -> Result<Vec<u8>, SecurityError> {
    let mut out = Vec::new();
    encode_framed_into(header, keys, data, framing, &mut out)?;
    match framing {
        PacketFraming::Sms => Ok(out),
        PacketFraming::CatTp => otagw_catp::framing::to_cattp(otagw_catp::framing::CPI, &out)
            .map_err(|e| SecurityError::HeaderLength {
                field: "CPL",
                value: out.len(),
                reason: e.to_string(),
            }),
    }
}

/// A command packet in CAT_TP form (CPI `01`, BER CPL) in the two-octet CPL form the
/// codec reads ([`CommandPacketView::parse_framed`] with [`PacketFraming::CatTp`]).
pub fn cattp_command_to_two_octet_form(sdu: &[u8]) -> Result<Vec<u8>, SecurityError> {
    otagw_catp::framing::from_cattp(otagw_catp::framing::CPI, sdu).map_err(|e| {
        SecurityError::HeaderLength {
            field: "CPI/CPL",
            value: sdu.len(),
            reason: e.to_string(),
        }
    })
}

/// As [`encode_command_packet`], appending to `out` (which is cleared first).
pub fn encode_command_packet_into(
    header: &CommandHeader,
    keys: &Scp80Keys,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SecurityError> {
    encode_framed_into(header, keys, data, PacketFraming::Sms, out)
}

/// The two-octet CPL form, with the RC/CC computed as `framing` asks.
fn encode_framed_into(
    header: &CommandHeader,
    keys: &Scp80Keys,
    data: &[u8],
    framing: PacketFraming,
    out: &mut Vec<u8>,
) -> Result<(), SecurityError> {
    let spi = &header.spi;
    let mac = keys
        .integrity()
        .filter(|_| spi.integrity != Integrity::None);
    check_key_coding(header, spi.integrity, keys, mac, spi.ciphered)?;
    let cc_len = mac.map_or(0, IntegrityKey::len);
    let cipher = keys.cipher().filter(|_| spi.ciphered);
    let pad = cipher.map_or(0, |c| padding(6 + cc_len + data.len(), c.block_len()));
    let chl = CHL_BASE + cc_len;
    let cpl = 1 + chl + data.len() + pad;
    if cpl > usize::from(u16::MAX) {
        return Err(SecurityError::DataTooLong {
            length: data.len(),
            max: usize::from(u16::MAX),
        });
    }

    // CPL through PCNTR, put together on the stack and appended at once.
    let mut clear = [0u8; CLEAR_PREFIX];
    clear[..2].copy_from_slice(&(cpl as u16).to_be_bytes());
    clear[2] = chl as u8;
    clear[3..5].copy_from_slice(&spi.to_bytes());
    clear[5] = header.kic.0;
    clear[6] = header.kid.0;
    clear[7..10].copy_from_slice(&header.tar);
    clear[CNTR_AT..CNTR_AT + 5].copy_from_slice(&header.counter.to_bytes());
    clear[15] = pad as u8;
    out.clear();
    out.reserve(2 + cpl);
    out.extend_from_slice(&clear);
    out.resize(CLEAR_PREFIX + cc_len, 0);
    out.extend_from_slice(data);
    out.resize(out.len() + pad, 0);
    if let Some(mac) = mac {
        // The RC/CC covers everything but its own field, which goes in after PCNTR.
        let body = &out[CLEAR_PREFIX + cc_len..];
        let value = match framing {
            // Over SMS the input starts with CPL as carried.
            PacketFraming::Sms => mac.compute_parts(&[&clear, body]),
            PacketFraming::CatTp => {
                let (p, n) = cc_length_prefix(framing, out);
                mac.compute_parts(&[&p[..n], &clear[2..], body])
            }
        };
        out[CLEAR_PREFIX..CLEAR_PREFIX + cc_len].copy_from_slice(value.as_slice());
    }
    if let Some(cipher) = cipher {
        cipher.encrypt(&mut out[CNTR_AT..])?;
    }
    Ok(())
}

/// A command packet's clear part, parsed without keys: enough for a card to pick its keys.
#[derive(Debug, Clone, Copy)]
pub struct CommandPacketView<'a> {
    /// Command packet length.
    pub cpl: u16,
    /// Command header length.
    pub chl: u8,
    /// Security parameter indication.
    pub spi: Spi,
    /// Ciphering key identifier.
    pub kic: KeyIdentifier,
    /// Integrity key identifier.
    pub kid: KeyIdentifier,
    /// Toolkit application reference.
    pub tar: Tar,
    packet: &'a [u8],
    framing: PacketFraming,
}

/// A verified, deciphered command packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodedCommand {
    /// The header fields.
    #[serde(flatten)]
    pub header: CommandHeader,
    /// Command header length.
    pub chl: u8,
    /// Number of padding octets that followed the data.
    pub pcntr: u8,
    /// The RC/CC/DS as carried.
    #[serde(serialize_with = "ser_bytes")]
    pub rc_cc_ds: Vec<u8>,
    /// The secured data, padding removed.
    #[serde(serialize_with = "ser_bytes")]
    pub data: Vec<u8>,
}

pub(crate) fn ser_bytes<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(b))
}

impl<'a> CommandPacketView<'a> {
    /// Parses the clear header of a command packet that starts at CPL; checks CPL and CHL.
    pub fn parse(packet: &'a [u8]) -> Result<Self, SecurityError> {
        Self::parse_framed(packet, PacketFraming::Sms)
    }

    /// Like [`CommandPacketView::parse`] for a packet that travelled framed as `framing` (and
    /// was brought into the two-octet CPL form, [`cattp_command_to_two_octet_form`]): the
    /// RC/CC is then checked over that framing.
    pub fn parse_framed(packet: &'a [u8], framing: PacketFraming) -> Result<Self, SecurityError> {
        let (cpl, chl) = check_framing(packet, ("CPL", "CHL"), CHL_BASE, "SPI through PCNTR")?;
        let [spi0, spi1] = take(packet, 3, "SPI")?;
        let [kic] = take(packet, 5, "KIc")?;
        let [kid] = take(packet, 6, "KID")?;
        let tar = take(packet, 7, "TAR")?;
        Ok(Self {
            cpl,
            chl,
            spi: Spi::from_bytes([spi0, spi1]),
            kic: KeyIdentifier(kic),
            kid: KeyIdentifier(kid),
            tar,
            packet,
            framing,
        })
    }

    /// How the packet travelled.
    pub fn framing(&self) -> PacketFraming {
        self.framing
    }

    /// Card side: deciphers and verifies the packet with the card's keys.
    pub fn open(&self, keys: &Scp80Keys) -> Result<DecodedCommand, SecurityError> {
        let spi = self.spi;
        let mac = keys
            .integrity()
            .filter(|_| spi.integrity != Integrity::None);
        let header_stub = CommandHeader {
            spi,
            kic: self.kic,
            kid: self.kid,
            tar: self.tar,
            counter: Counter::default(),
        };
        check_key_coding(&header_stub, spi.integrity, keys, mac, spi.ciphered)?;
        let cc_len = usize::from(self.chl) - CHL_BASE;
        let expected_cc = mac.map_or(0, IntegrityKey::len);
        if cc_len != expected_cc {
            return Err(SecurityError::HeaderLength {
                field: "CHL",
                value: usize::from(self.chl),
                reason: format!(
                    "leaves {cc_len} octets for the RC/CC/DS but the SPI and KID give {expected_cc}"
                ),
            });
        }

        let mut secured = self.packet[CNTR_AT..].to_vec();
        if let Some(cipher) = keys.cipher().filter(|_| spi.ciphered) {
            cipher.decrypt(&mut secured)?;
        }
        // secured = CNTR(5) PCNTR(1) RC/CC(n) data+padding
        let counter = Counter::from_bytes(take(&secured, 0, "CNTR")?);
        let [pcntr] = take(&secured, 5, "PCNTR")?;
        let value = secured
            .get(6..6 + cc_len)
            .ok_or_else(|| SecurityError::Truncated {
                field: "RC/CC/DS",
                needed: cc_len,
                available: secured.len().saturating_sub(6),
            })?
            .to_vec();
        let body = &secured[6 + cc_len..];

        if let Some(mac) = mac {
            let (p, n) = cc_length_prefix(self.framing, self.packet);
            verify(
                mac,
                &[&p[..n], &self.packet[2..CNTR_AT], &secured[..6], body],
                &value,
            )?;
        }
        let data_len =
            body.len()
                .checked_sub(usize::from(pcntr))
                .ok_or(SecurityError::InvalidPadding {
                    pcntr,
                    available: body.len(),
                })?;
        Ok(DecodedCommand {
            header: CommandHeader {
                counter,
                ..header_stub
            },
            chl: self.chl,
            pcntr,
            rc_cc_ds: value,
            data: body[..data_len].to_vec(),
        })
    }
}

/// Compares a carried RC/CC with the one computed over the concatenated `parts`.
pub(crate) fn verify(
    mac: &IntegrityKey,
    parts: &[&[u8]],
    carried: &[u8],
) -> Result<(), SecurityError> {
    let computed = mac.compute_parts(parts);
    let computed = computed.as_slice();
    // Constant-time compare: a CC check is an authentication decision.
    let diff = computed
        .iter()
        .zip(carried.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 || computed.len() != carried.len() {
        return Err(SecurityError::IntegrityMismatch {
            kind: if mac.algorithm().is_rc() { "RC" } else { "CC" },
            received: hex::encode(carried),
            computed: hex::encode(computed),
        });
    }
    Ok(())
}
