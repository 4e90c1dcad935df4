//! Response packets, the card's proof of receipt (TS 102 225 clause 5.2, TS 31.115 clause 4.3).
//!
//! ```text
//! RPL(2) RHL(1) TAR(3) | CNTR(5) PCNTR(1) STATUS(1) RC/CC(n) data padding
//!                        '--------- ciphered when the SPI asks -----------'
//! ```
//! Over SMS the RC/CC also covers the UDH `02 71 00` in front of RPL (TS 31.115 clause 4.3).

use serde::Serialize;

use super::command::{padding, ser_bytes, ser_counter, ser_hex, verify};
use super::counter::Counter;
use super::crypto::{CipherKey, IntegrityKey, MacValue};
use super::keys::Scp80Keys;
use super::spi::{Integrity, Spi};
use super::status::PorStatus;
use super::{check_framing, take, SecurityError, Tar};

/// The UDH of an SMS carrying a response packet.
pub const SMS_RESPONSE_UDH: [u8; 3] = [0x02, 0x71, 0x00];
/// RHL without the RC/CC: TAR(3) CNTR(5) PCNTR(1) STATUS(1).
const RHL_BASE: usize = 10;
/// Offset of CNTR, where ciphering starts.
const CNTR_AT: usize = 6;

/// What the PoR's RC/CC covers besides RPL onwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CcScope {
    /// SMS-PP: the UDH `02 71 00` is part of the RC/CC input (TS 31.115).
    SmsUdh,
    /// RPL onwards only (some implementations, and packets whose transport has no UDH).
    FromRpl,
    /// TAR onwards, without RPL and RHL (what the opentelecoms gsm0348 library calls NORMAL).
    FromTar,
    /// CAT_TP (TS 102 225 clause 5.2): RPI `02` and the BER-coded RPL stand for the two-octet
    /// RPL in the RC/CC input (the PoR travels in that framing; the transport hands it over
    /// with a two-octet RPL).
    CatTp,
}

impl CcScope {
    /// Every scope, the standard one (TS 31.115, SMS) first.
    pub const ALL: [CcScope; 3] = [Self::SmsUdh, Self::FromRpl, Self::FromTar];

    /// What precedes the packet's own octets in the RC/CC input: (buffer, length used).
    fn prefix(self, rpl: u16) -> ([u8; 4], usize) {
        match self {
            Self::SmsUdh => ([0x02, 0x71, 0x00, 0], 3),
            Self::FromRpl | Self::FromTar => ([0; 4], 0),
            Self::CatTp => otagw_catp::framing::prefix(otagw_catp::framing::RPI, rpl),
        }
    }

    /// Where in the packet (from RPL on) the RC/CC input starts.
    fn start(self) -> usize {
        match self {
            Self::SmsUdh | Self::FromRpl => 0,
            Self::CatTp => 2,
            Self::FromTar => 3,
        }
    }
}

/// How the PoR was protected compared with what the command's SPI asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PorProtection {
    /// Protected as the SPI asks, and the RC/CC (if any was asked) verified.
    AsRequested,
    /// The card answered a security failure in clear, without the RC/CC or ciphering the SPI
    /// asks for. Real cards do this (e.g. on a replayed counter); the status is the card's word,
    /// unauthenticated, and always an error.
    UnprotectedError,
}

/// The fields a card puts in a PoR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// TAR of the command answered.
    pub tar: Tar,
    /// Counter of the command answered.
    pub counter: Counter,
    /// Response status.
    pub status: PorStatus,
}

/// A decoded PoR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DecodedResponse {
    /// Response packet length.
    pub rpl: u16,
    /// Response header length.
    pub rhl: u8,
    /// TAR.
    #[serde(serialize_with = "ser_hex")]
    pub tar: Tar,
    /// Counter.
    #[serde(serialize_with = "ser_counter")]
    pub counter: Counter,
    /// Number of padding octets.
    pub pcntr: u8,
    /// Status as two hex digits.
    #[serde(serialize_with = "ser_status")]
    pub status: PorStatus,
    /// Status name.
    pub status_name: &'static str,
    /// RC/CC/DS as carried.
    pub rc_cc_ds: MacValue,
    /// Additional response data, padding removed.
    #[serde(serialize_with = "ser_bytes")]
    pub data: Vec<u8>,
    /// Whether the protection matched the SPI.
    pub protection: PorProtection,
    /// What the RC/CC input covered.
    pub cc_scope: CcScope,
}

fn ser_status<S: serde::Serializer>(st: &PorStatus, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{:02x}", st.to_byte()))
}

fn por_mac<'k>(spi: &Spi, keys: &'k Scp80Keys) -> Result<Option<&'k IntegrityKey>, SecurityError> {
    match spi.por_integrity {
        Integrity::None => Ok(None),
        Integrity::Ds => Err(SecurityError::Unsupported(
            "digital signatures (SPI b2b1 = 11) are not supported",
        )),
        kind => {
            let key = keys.por_integrity().ok_or(SecurityError::MissingKey {
                field: "KID",
                what: "an integrity value on the PoR",
            })?;
            if key.algorithm().is_rc() != (kind == Integrity::Rc) {
                return Err(SecurityError::AlgorithmConflict {
                    field: "KID",
                    value: 0,
                    coded: if kind == Integrity::Rc {
                        "an RC"
                    } else {
                        "a CC"
                    },
                    configured: key.algorithm().name(),
                });
            }
            Ok(Some(key))
        }
    }
}

/// The KIc key where the SPI asks for a ciphered PoR.
fn por_cipher<'k>(spi: &Spi, keys: &'k Scp80Keys) -> Result<Option<&'k CipherKey>, SecurityError> {
    if !spi.por_ciphered {
        return Ok(None);
    }
    keys.cipher().map(Some).ok_or(SecurityError::MissingKey {
        field: "KIc",
        what: "a ciphered PoR",
    })
}

/// Card side: builds a PoR from RPL on, protected as the command's SPI asks.
pub fn encode_response_packet(
    header: &ResponseHeader,
    spi: &Spi,
    keys: &Scp80Keys,
    data: &[u8],
    scope: CcScope,
) -> Result<Vec<u8>, SecurityError> {
    let mac = por_mac(spi, keys)?;
    let cipher = por_cipher(spi, keys)?;
    let cc_len = mac.map_or(0, IntegrityKey::len);
    let pad = cipher.map_or(0, |c| padding(7 + cc_len + data.len(), c.block_len()));
    let rhl = RHL_BASE + cc_len;
    let rpl = 1 + rhl + data.len() + pad;
    if rpl > usize::from(u16::MAX) {
        return Err(SecurityError::DataTooLong {
            length: data.len(),
            max: usize::from(u16::MAX),
        });
    }
    let (prefix, prefix_len) = scope.prefix(rpl as u16);
    let prefix = &prefix[..prefix_len];
    let mut out = Vec::with_capacity(2 + rpl);
    out.extend_from_slice(&(rpl as u16).to_be_bytes());
    out.push(rhl as u8);
    out.extend_from_slice(&header.tar);
    out.extend_from_slice(&header.counter.to_bytes());
    out.push(pad as u8);
    out.push(header.status.to_byte());
    let cc_at = out.len();
    out.resize(cc_at + cc_len, 0);
    out.extend_from_slice(data);
    out.resize(out.len() + pad, 0);
    if let Some(mac) = mac {
        // The RC/CC covers the prefix and everything but its own field.
        let value =
            mac.compute_parts(&[prefix, &out[scope.start()..cc_at], &out[cc_at + cc_len..]]);
        out[cc_at..cc_at + cc_len].copy_from_slice(value.as_slice());
    }
    if let Some(cipher) = cipher {
        cipher.encrypt(&mut out[CNTR_AT..])?;
    }
    Ok(out)
}

/// A PoR's clear part, parsed without keys.
#[derive(Debug, Clone, Copy)]
pub struct ResponsePacketView<'a> {
    /// Response packet length.
    pub rpl: u16,
    /// Response header length.
    pub rhl: u8,
    /// TAR.
    pub tar: Tar,
    packet: &'a [u8],
}

impl<'a> ResponsePacketView<'a> {
    /// A PoR in CAT_TP form (RPI `02`, BER RPL) in the two-octet RPL form [`Self::parse`]
    /// reads; open it with [`CcScope::CatTp`].
    pub fn cattp_to_two_octet_form(sdu: &[u8]) -> Result<Vec<u8>, SecurityError> {
        otagw_catp::framing::from_cattp(otagw_catp::framing::RPI, sdu).map_err(|e| {
            SecurityError::HeaderLength {
                field: "RPI/RPL",
                value: sdu.len(),
                reason: e.to_string(),
            }
        })
    }

    /// Parses a PoR that starts at RPL; checks RPL and RHL.
    pub fn parse(packet: &'a [u8]) -> Result<Self, SecurityError> {
        let (rpl, rhl) = check_framing(packet, ("RPL", "RHL"), RHL_BASE, "TAR through STATUS")?;
        let tar = take(packet, 3, "TAR")?;
        Ok(Self {
            rpl,
            rhl,
            tar,
            packet,
        })
    }

    /// Parses a PoR as SMS user data: UDH `02 71 00` then the packet from RPL on.
    pub fn parse_sms(user_data: &'a [u8]) -> Result<Self, SecurityError> {
        match user_data.get(..3) {
            Some(udh) if udh == SMS_RESPONSE_UDH => Self::parse(&user_data[3..]),
            Some(udh) => Err(SecurityError::HeaderLength {
                field: "UDH",
                value: udh.len(),
                reason: format!(
                    "expected 027100 for a response packet, found {}",
                    hex::encode(udh)
                ),
            }),
            None => Err(SecurityError::Truncated {
                field: "UDH",
                needed: 3,
                available: user_data.len(),
            }),
        }
    }

    /// Gateway side: deciphers and verifies the PoR against the command's SPI and keys.
    /// An unprotected error PoR decodes as such (never as success); an unprotected "OK" is
    /// refused.
    pub fn open(
        &self,
        spi: &Spi,
        keys: &Scp80Keys,
        scope: CcScope,
    ) -> Result<DecodedResponse, SecurityError> {
        let mac = por_mac(spi, keys)?;
        let carried_cc = usize::from(self.rhl) - RHL_BASE;
        let expected_cc = mac.map_or(0, IntegrityKey::len);
        let cipher = por_cipher(spi, keys)?;
        let region_len = self.packet.len() - CNTR_AT;

        if carried_cc == 0 && expected_cc > 0 {
            // The card left out the RC/CC the SPI asks for; only a clear error report is
            // acceptable then.
            return self.open_unprotected(scope, "RC/CC");
        }
        if let Some(c) = cipher {
            if carried_cc == expected_cc && !region_len.is_multiple_of(c.block_len()) {
                return self
                    .open_unprotected(scope, "ciphering")
                    .map_err(|e| match e {
                        SecurityError::MissingIntegrity { .. } => SecurityError::NotBlockMultiple {
                            length: region_len,
                            block: c.block_len(),
                        },
                        e => e,
                    });
            }
        }
        if carried_cc != expected_cc {
            return Err(SecurityError::HeaderLength {
                field: "RHL",
                value: usize::from(self.rhl),
                reason: format!(
                    "leaves {carried_cc} octets for the RC/CC/DS but the SPI and KID give {expected_cc}"
                ),
            });
        }

        // PoRs are short: decipher on the stack, on the heap only past 64 octets (a compact
        // PoR with a CC and up to 40 octets of data fits; zeroing more showed as memset).
        let mut stack = [0u8; 64];
        let mut heap = Vec::new();
        let secured: &mut [u8] = if region_len <= stack.len() {
            let s = &mut stack[..region_len];
            s.copy_from_slice(&self.packet[CNTR_AT..]);
            s
        } else {
            heap.extend_from_slice(&self.packet[CNTR_AT..]);
            &mut heap
        };
        if let Some(c) = cipher {
            c.decrypt(secured)?;
        }
        let secured = &*secured;
        let decoded = self.fields(secured, carried_cc, scope, PorProtection::AsRequested)?;
        if let Some(mac) = mac {
            let (prefix, prefix_len) = scope.prefix(self.rpl);
            let parts: [&[u8]; 4] = [
                &prefix[..prefix_len],
                &self.packet[scope.start()..CNTR_AT],
                &secured[..7],
                &secured[7 + carried_cc..],
            ];
            verify(mac, &parts, decoded.rc_cc_ds.as_slice())?;
        }
        Ok(decoded)
    }

    /// Reads a PoR sent in clear although the SPI asked for `missing`; accepted only as an error.
    fn open_unprotected(
        &self,
        scope: CcScope,
        missing: &'static str,
    ) -> Result<DecodedResponse, SecurityError> {
        let carried_cc = usize::from(self.rhl) - RHL_BASE;
        let decoded = self.fields(
            &self.packet[CNTR_AT..],
            carried_cc,
            scope,
            PorProtection::UnprotectedError,
        )?;
        if decoded.status == PorStatus::Ok || matches!(decoded.status, PorStatus::Reserved(_)) {
            return Err(SecurityError::MissingIntegrity {
                expected: missing,
                status: decoded.status.to_string(),
            });
        }
        Ok(decoded)
    }

    /// Splits the (deciphered) region from CNTR on into fields.
    fn fields(
        &self,
        secured: &[u8],
        cc_len: usize,
        scope: CcScope,
        protection: PorProtection,
    ) -> Result<DecodedResponse, SecurityError> {
        let counter = Counter::from_bytes(take(secured, 0, "CNTR")?);
        let [pcntr] = take(secured, 5, "PCNTR")?;
        let [status] = take(secured, 6, "STATUS")?;
        let value = secured
            .get(7..7 + cc_len)
            .ok_or_else(|| SecurityError::Truncated {
                field: "RC/CC/DS",
                needed: cc_len,
                available: secured.len().saturating_sub(7),
            })
            .and_then(|v| {
                MacValue::from_slice(v).ok_or_else(|| SecurityError::HeaderLength {
                    field: "RHL",
                    value: usize::from(self.rhl),
                    reason: format!("leaves {cc_len} octets for the RC/CC/DS, more than 16"),
                })
            })?;
        let body = &secured[7 + cc_len..];
        let data_len =
            body.len()
                .checked_sub(usize::from(pcntr))
                .ok_or(SecurityError::InvalidPadding {
                    pcntr,
                    available: body.len(),
                })?;
        let status = PorStatus::from_byte(status);
        Ok(DecodedResponse {
            rpl: self.rpl,
            rhl: self.rhl,
            tar: self.tar,
            counter,
            pcntr,
            status,
            status_name: status.name(),
            rc_cc_ds: value,
            data: body[..data_len].to_vec(),
            protection,
            cc_scope: scope,
        })
    }
}
