//! The TS 102 226 clause 9 PUSH commands, sans-IO: "request for BIP channel opening" and
//! "request for CAT_TP link establishment", sent as a compact remote command script (two
//! APDUs) in the secured data of an SCP80 command packet over SMS, to a remote management
//! application (the ISD's RAM by default).
//!
//! Each is an APDU (TS 102 226 clause 9.2, table 9.1): CLA `80`, INS `EC`, P1 `01`, then
//!
//! | P2 | data |
//! |---|---|
//! | `01` request for BIP channel opening | COMPREHENSION-TLV data objects of OPEN CHANNEL (TS 102 223 clause 6.6.27; CR bit clear): `35` bearer description, `39` buffer size (2), optional `47` network access name, `3C` UICC/terminal interface transport level (`01` UDP, UICC in client mode, remote connection; port 2), `3E` data destination address (`21` IPv4 / `57` IPv6 and the address). Never "other address (local)" (clause 9.2.1) |
//! | `02` request for CAT_TP link establishment | COMPREHENSION-TLV data objects too (clause 9.2.2): `3C` UICC/terminal interface transport level (`00` and the CAT_TP destination port; mandatory), `39` buffer size (the max SDU size; optional), `36` channel data (the identification the card puts in its SYN; optional) |
//!
//! Checked against the text of clauses 9.2 and 9.2.1; the clause 9.2.2 objects as the njiwa
//! SM-SR writes them (`src/io/njiwa/sr/transports/BipCatTP.java`, `makePushCmd2`). A card
//! refuses data it cannot parse as COMPREHENSION-TLVs with status word `6A 80` (clause 9.2.1).

use std::net::IpAddr;

use thiserror::Error;

/// PUSH command header (TS 102 226 table 9.1): CLA, INS, P1.
pub const PUSH_CLA: u8 = 0x80;
pub const PUSH_INS: u8 = 0xEC;
pub const PUSH_P1: u8 = 0x01;
/// PUSH P2: request for BIP channel opening.
pub const P2_BIP_OPEN: u8 = 0x01;
/// PUSH P2: request for CAT_TP link establishment.
pub const P2_CATTP_LINK: u8 = 0x02;
/// TS 102 223 COMPREHENSION-TLV tags (CR bit clear).
const TAG_BEARER: u8 = 0x35;
const TAG_CHANNEL_DATA: u8 = 0x36;
const TAG_BUFFER_SIZE: u8 = 0x39;
const TAG_APN: u8 = 0x47;
const TAG_TRANSPORT_LEVEL: u8 = 0x3C;
const TAG_ADDRESS: u8 = 0x3E;
/// The CR ("comprehension required") bit of a one-octet tag (TS 101 220 tag coding).
const CR: u8 = 0x80;
/// Protocol type octet of the `3C` object in the CAT_TP link request: only the port counts
/// there (the channel is the one P2 `01` opened); njiwa writes `00`.
pub const LINK_TRANSPORT_TYPE: u8 = 0x00;
/// Status word of a PUSH whose data the card cannot use (TS 102 226 clause 9.2.1).
pub const SW_WRONG_DATA: u16 = 0x6A80;
/// Status word of a PUSH with a P1/P2 the card does not know.
pub const SW_WRONG_P1P2: u16 = 0x6A86;
/// Transport protocol type "UDP, UICC in client mode, remote connection" (TS 102 223 8.59).
pub const TRANSPORT_UDP_CLIENT_REMOTE: u8 = 0x01;

/// Bearer description (TS 102 223 clause 8.52): bearer type and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bearer {
    /// `02` GPRS / UTRAN packet service, `03` default bearer for the network access, `0B`
    /// E-UTRAN / mapped UTRAN packet service, ...
    pub bearer_type: u8,
    /// Bearer parameters as carried.
    pub parameters: Vec<u8>,
}

impl Bearer {
    /// "Default bearer for requested transport layer" (type `03`, no parameters).
    pub fn default_bearer() -> Self {
        Bearer {
            bearer_type: 0x03,
            parameters: Vec::new(),
        }
    }
}

/// Request for BIP channel opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BipOpenRequest {
    pub bearer: Bearer,
    /// Buffer size the card asks the terminal for.
    pub buffer_size: u16,
    /// Network access name (APN), as TS 23.003 labels (length-prefixed), if any.
    pub network_access_name: Option<Vec<u8>>,
    /// The gateway's UDP address and port.
    pub destination: std::net::SocketAddr,
}

/// Request for CAT_TP link establishment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatTpLinkRequest {
    /// CAT_TP destination port (the gateway's CAT_TP port, in the PDU header).
    pub destination_port: u16,
    /// Largest SDU the gateway will send (the `39` object), if said.
    pub max_sdu_size: Option<u16>,
    /// Identification the card puts in its SYN (the `36` object; empty: not sent, the card
    /// uses its default). The gateway sends the card's ICCID so that the SYN names it whatever
    /// the card's default.
    pub identification: Vec<u8>,
}

/// Both push commands, as the gateway sends them in one secured packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRequest {
    pub bip: BipOpenRequest,
    pub link: CatTpLinkRequest,
}

/// Why push data could not be read or written.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PushError {
    #[error("push data truncated in {0}")]
    Truncated(&'static str),
    #[error("not a PUSH command: APDU header {0}")]
    NotPush(String),
    #[error("push data lacks {0}")]
    Missing(&'static str),
    #[error("{field}: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("{0} too long to encode")]
    TooLong(&'static str),
    #[error("{what}: tag {tag:#04x} with the CR bit set is not understood")]
    NotUnderstood { what: &'static str, tag: u8 },
}

impl PushError {
    /// The status word a card answers the PUSH APDU with (TS 102 226 clause 9.2.1: `6A 80`
    /// for data it refuses).
    pub fn status_word(&self) -> u16 {
        match self {
            PushError::NotPush(_) => SW_WRONG_P1P2,
            _ => SW_WRONG_DATA,
        }
    }
}

/// A dotted APN (`iot.example`) as the network access name's labels (TS 23.003 clause 9.1:
/// each label preceded by its length).
pub fn apn_labels(dotted: &str) -> Result<Vec<u8>, PushError> {
    let mut out = Vec::new();
    for label in dotted.split('.') {
        if label.is_empty() || label.len() > 63 || !label.is_ascii() {
            return Err(PushError::Invalid {
                field: "network access name",
                reason: "labels are 1 to 63 ASCII characters between dots",
            });
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    Ok(out)
}

fn push_len(out: &mut Vec<u8>, len: usize, what: &'static str) -> Result<(), PushError> {
    match len {
        0..=0x7F => out.push(len as u8),
        0x80..=0xFF => out.extend_from_slice(&[0x81, len as u8]),
        0x100..=0xFFFF => out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
        _ => return Err(PushError::TooLong(what)),
    }
    Ok(())
}

fn tlv(out: &mut Vec<u8>, tag: u8, value: &[u8], what: &'static str) -> Result<(), PushError> {
    out.push(tag);
    push_len(out, value.len(), what)?;
    out.extend_from_slice(value);
    Ok(())
}

/// Reads one COMPREHENSION-TLV (TS 102 223 annex C) with a one-octet tag: (tag with the CR
/// bit cleared, whether CR was set, value, rest). Strict as a card is: the three-octet tag
/// format and the tag values `00`/`80`/`FF` are refused, a length is `00`..`7F` or `81`
/// `80`..`FF` (a PUSH APDU carries at most 255 octets), and the value must be all there.
#[allow(clippy::type_complexity)]
fn read_tlv<'a>(
    b: &'a [u8],
    what: &'static str,
) -> Result<(u8, bool, &'a [u8], &'a [u8]), PushError> {
    let invalid = |reason| PushError::Invalid {
        field: what,
        reason,
    };
    let (&tag, rest) = b.split_first().ok_or(PushError::Truncated(what))?;
    if matches!(tag, 0x00 | 0x7F | 0x80 | 0xFF) {
        return Err(invalid("tag not a one-octet COMPREHENSION-TLV tag"));
    }
    let (&l0, rest) = rest.split_first().ok_or(PushError::Truncated(what))?;
    let (len, rest) = match l0 {
        0..=0x7F => (usize::from(l0), rest),
        0x81 => match rest.split_first() {
            Some((&l, r)) if l >= 0x80 => (usize::from(l), r),
            Some(_) => return Err(invalid("length 81 followed by less than 80")),
            None => return Err(PushError::Truncated(what)),
        },
        _ => return Err(invalid("length coding")),
    };
    if rest.len() < len {
        return Err(PushError::Truncated(what));
    }
    Ok((tag & !CR, tag & CR != 0, &rest[..len], &rest[len..]))
}

/// One PUSH command as a card reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushCommand {
    /// P2 `01`.
    BipOpen(BipOpenRequest),
    /// P2 `02`.
    CatTpLink(CatTpLinkRequest),
}

/// Reads a compact script of PUSH APDUs as a card runs it: each command in turn, stopping at
/// the first one refused (its error says the status word, [`PushError::status_word`]). The
/// commands read before it are returned with it (the PoR's "number of commands executed").
pub fn read_commands(data: &[u8]) -> (Vec<PushCommand>, Option<PushError>) {
    let mut done = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match read_command(rest) {
            Ok((command, r)) => {
                done.push(command);
                rest = r;
            }
            Err(e) => return (done, Some(e)),
        }
    }
    (done, None)
}

/// The first PUSH APDU of `b` and what follows it.
fn read_command(b: &[u8]) -> Result<(PushCommand, &[u8]), PushError> {
    let header = b.get(..5).ok_or(PushError::Truncated("PUSH APDU header"))?;
    if header[..3] != [PUSH_CLA, PUSH_INS, PUSH_P1] {
        return Err(PushError::NotPush(hex::encode_upper(&header[..4])));
    }
    let len = usize::from(header[4]);
    let value = b
        .get(5..5 + len)
        .ok_or(PushError::Truncated("PUSH APDU data"))?;
    let command = match header[3] {
        P2_BIP_OPEN => PushCommand::BipOpen(decode_bip(value)?),
        P2_CATTP_LINK => PushCommand::CatTpLink(decode_link(value)?),
        _ => return Err(PushError::NotPush(hex::encode_upper(&header[..4]))),
    };
    Ok((command, &b[5 + len..]))
}

impl PushRequest {
    /// The secured data of the push packet: PUSH P2 `01`, then PUSH P2 `02` (compact format).
    pub fn encode(&self) -> Result<Vec<u8>, PushError> {
        let mut bip = Vec::new();
        let mut bearer = vec![self.bip.bearer.bearer_type];
        bearer.extend_from_slice(&self.bip.bearer.parameters);
        tlv(&mut bip, TAG_BEARER, &bearer, "bearer description")?;
        tlv(
            &mut bip,
            TAG_BUFFER_SIZE,
            &self.bip.buffer_size.to_be_bytes(),
            "buffer size",
        )?;
        if let Some(apn) = &self.bip.network_access_name {
            tlv(&mut bip, TAG_APN, apn, "network access name")?;
        }
        let port = self.bip.destination.port().to_be_bytes();
        tlv(
            &mut bip,
            TAG_TRANSPORT_LEVEL,
            &[TRANSPORT_UDP_CLIENT_REMOTE, port[0], port[1]],
            "transport level",
        )?;
        let mut addr = Vec::new();
        match self.bip.destination.ip() {
            IpAddr::V4(a) => {
                addr.push(0x21);
                addr.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                addr.push(0x57);
                addr.extend_from_slice(&a.octets());
            }
        }
        tlv(&mut bip, TAG_ADDRESS, &addr, "data destination address")?;

        let mut link = Vec::new();
        let port = self.link.destination_port.to_be_bytes();
        tlv(
            &mut link,
            TAG_TRANSPORT_LEVEL,
            &[LINK_TRANSPORT_TYPE, port[0], port[1]],
            "CAT_TP transport level",
        )?;
        if let Some(sdu) = self.link.max_sdu_size {
            tlv(
                &mut link,
                TAG_BUFFER_SIZE,
                &sdu.to_be_bytes(),
                "max SDU size",
            )?;
        }
        if !self.link.identification.is_empty() {
            if self.link.identification.len() > crate::pdu::MAX_IDENTIFICATION_LEN {
                return Err(PushError::TooLong("identification"));
            }
            tlv(
                &mut link,
                TAG_CHANNEL_DATA,
                &self.link.identification,
                "identification",
            )?;
        }

        let mut out = Vec::new();
        push_apdu(&mut out, P2_BIP_OPEN, &bip, "BIP channel opening request")?;
        push_apdu(&mut out, P2_CATTP_LINK, &link, "CAT_TP link request")?;
        Ok(out)
    }

    /// Reads push data (the card side, [`read_commands`]): PUSH APDUs back to back, the BIP
    /// channel opening request and the CAT_TP link request each exactly once.
    pub fn decode(data: &[u8]) -> Result<PushRequest, PushError> {
        let (commands, error) = read_commands(data);
        if let Some(e) = error {
            return Err(e);
        }
        let mut bip = None;
        let mut link = None;
        for c in commands {
            let repeated = match c {
                PushCommand::BipOpen(b) => bip.replace(b).is_some(),
                PushCommand::CatTpLink(l) => link.replace(l).is_some(),
            };
            if repeated {
                return Err(PushError::Invalid {
                    field: "PUSH command",
                    reason: "repeated",
                });
            }
        }
        Ok(PushRequest {
            bip: bip.ok_or(PushError::Missing("a BIP channel opening request"))?,
            link: link.ok_or(PushError::Missing("a CAT_TP link request"))?,
        })
    }

    /// Whether secured data is a PUSH script (starts with a PUSH APDU and reads completely as
    /// push data).
    pub fn is_push(data: &[u8]) -> bool {
        data.starts_with(&[PUSH_CLA, PUSH_INS, PUSH_P1]) && Self::decode(data).is_ok()
    }
}

/// One short PUSH APDU: `80 EC 01 P2 Lc data`.
fn push_apdu(out: &mut Vec<u8>, p2: u8, data: &[u8], what: &'static str) -> Result<(), PushError> {
    let lc = u8::try_from(data.len()).map_err(|_| PushError::TooLong(what))?;
    out.extend_from_slice(&[PUSH_CLA, PUSH_INS, PUSH_P1, p2, lc]);
    out.extend_from_slice(data);
    Ok(())
}

fn decode_bip(mut b: &[u8]) -> Result<BipOpenRequest, PushError> {
    let mut bearer = None;
    let mut buffer = None;
    let mut apn = None;
    let mut port = None;
    let mut ip: Option<IpAddr> = None;
    while !b.is_empty() {
        // The CR bit may be set (TS 102 223 lets either form through); the card hands the other OPEN
        // CHANNEL objects to its terminal, which judges them.
        let (tag, _, v, r) = read_tlv(b, "BIP channel opening request")?;
        b = r;
        match tag {
            TAG_BEARER => {
                let (&t, p) = v.split_first().ok_or(PushError::Truncated("bearer"))?;
                bearer = Some(Bearer {
                    bearer_type: t,
                    parameters: p.to_vec(),
                });
            }
            TAG_BUFFER_SIZE => {
                let s: [u8; 2] = v.try_into().map_err(|_| PushError::Invalid {
                    field: "buffer size",
                    reason: "not 2 octets",
                })?;
                buffer = Some(u16::from_be_bytes(s));
            }
            TAG_APN => apn = Some(v.to_vec()),
            TAG_TRANSPORT_LEVEL => {
                let [kind, hi, lo]: [u8; 3] = v.try_into().map_err(|_| PushError::Invalid {
                    field: "transport level",
                    reason: "not 3 octets",
                })?;
                if kind != TRANSPORT_UDP_CLIENT_REMOTE {
                    return Err(PushError::Invalid {
                        field: "transport level",
                        reason: "not UDP in client mode",
                    });
                }
                port = Some(u16::from_be_bytes([hi, lo]));
            }
            TAG_ADDRESS => {
                ip = Some(match v {
                    [0x21, a, b, c, d] => IpAddr::from([*a, *b, *c, *d]),
                    [0x57, rest @ ..] if rest.len() == 16 => {
                        let mut o = [0u8; 16];
                        o.copy_from_slice(rest);
                        IpAddr::from(o)
                    }
                    _ => {
                        return Err(PushError::Invalid {
                            field: "data destination address",
                            reason: "not IPv4 or IPv6",
                        })
                    }
                })
            }
            // Other OPEN CHANNEL objects (login, password, duration, ...) are not used here.
            _ => {}
        }
    }
    Ok(BipOpenRequest {
        bearer: bearer.ok_or(PushError::Missing("a bearer description"))?,
        buffer_size: buffer.ok_or(PushError::Missing("a buffer size"))?,
        network_access_name: apn,
        destination: std::net::SocketAddr::new(
            ip.ok_or(PushError::Missing("a data destination address"))?,
            port.ok_or(PushError::Missing("a transport level"))?,
        ),
    })
}

fn decode_link(mut b: &[u8]) -> Result<CatTpLinkRequest, PushError> {
    const WHAT: &str = "CAT_TP link request";
    let mut port = None;
    let mut sdu = None;
    let mut identification = None;
    while !b.is_empty() {
        let (tag, cr, v, r) = read_tlv(b, WHAT)?;
        b = r;
        let repeated = match tag {
            TAG_TRANSPORT_LEVEL => {
                let [_, hi, lo]: [u8; 3] = v.try_into().map_err(|_| PushError::Invalid {
                    field: "CAT_TP transport level",
                    reason: "not 3 octets",
                })?;
                port.replace(u16::from_be_bytes([hi, lo])).is_some()
            }
            TAG_BUFFER_SIZE => {
                let s: [u8; 2] = v.try_into().map_err(|_| PushError::Invalid {
                    field: "max SDU size",
                    reason: "not 2 octets",
                })?;
                sdu.replace(u16::from_be_bytes(s)).is_some()
            }
            TAG_CHANNEL_DATA => {
                // The card must fit it in its SYN (TS 102 127: one-octet identification length
                // inside a one-octet header length).
                if v.len() > crate::pdu::MAX_IDENTIFICATION_LEN {
                    return Err(PushError::Invalid {
                        field: "identification",
                        reason: "longer than a SYN carries",
                    });
                }
                identification.replace(v.to_vec()).is_some()
            }
            // An object not understood is skipped unless its CR bit asks for comprehension
            // (TS 102 223, unknown COMPREHENSION-TLVs).
            _ if cr => return Err(PushError::NotUnderstood { what: WHAT, tag }),
            _ => false,
        };
        if repeated {
            return Err(PushError::Invalid {
                field: WHAT,
                reason: "a data object repeated",
            });
        }
    }
    Ok(CatTpLinkRequest {
        destination_port: port.ok_or(PushError::Missing("a CAT_TP transport level (3C)"))?,
        max_sdu_size: sdu,
        identification: identification.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PushRequest {
        PushRequest {
            bip: BipOpenRequest {
                bearer: Bearer {
                    bearer_type: 0x02,
                    parameters: vec![0x00, 0x00, 0x03, 0x00, 0x00, 0x02],
                },
                buffer_size: 1400,
                network_access_name: Some(b"\x03iot".to_vec()),
                destination: "10.1.2.3:4500".parse().unwrap(),
            },
            link: CatTpLinkRequest {
                destination_port: 0x1F90,
                max_sdu_size: Some(4096),
                identification: crate::pdu::iccid_to_identification("8949000000000000001").unwrap(),
            },
        }
    }

    /// The BIP part of `sample()` as encoded (36 octets), for tests of the link part alone.
    fn bip_apdu() -> Vec<u8> {
        sample().encode().unwrap()[..36].to_vec()
    }

    #[test]
    fn bytes_as_laid_out() {
        let b = sample().encode().unwrap();
        let expected = hex::decode(concat!(
            "80ec0101",
            "1f", // PUSH: request for BIP channel opening, 31 octets
            "3507",
            "02000003000002", // bearer description: GPRS and its parameters
            "3902",
            "0578", // buffer size 1400
            "4704",
            "03696f74", // APN "iot"
            "3c03",
            "011194", // UDP client remote, port 4500
            "3e05",
            "210a010203", // IPv4 10.1.2.3
            "80ec0102",
            "15", // PUSH: request for CAT_TP link establishment, 21 octets
            "3c03",
            "001f90", // transport level: the CAT_TP port 8080
            "3902",
            "1000", // buffer size: max SDU 4096
            "360a",
            "989400000000000000f1", // channel data: the identification (ICCID 8949...001)
        ))
        .unwrap();
        assert_eq!(b, expected);
        assert_eq!(PushRequest::decode(&b).unwrap(), sample());
        assert!(PushRequest::is_push(&b));
    }

    #[test]
    fn ipv6_and_identification_round_trip() {
        let mut p = sample();
        p.bip.destination = "[2001:db8::1]:9000".parse().unwrap();
        p.bip.network_access_name = None;
        p.link.identification = vec![0x98, 0x10];
        assert_eq!(PushRequest::decode(&p.encode().unwrap()).unwrap(), p);
    }

    #[test]
    fn refuses_what_is_not_push() {
        assert!(!PushRequest::is_push(&[]));
        // A RAM compact script (GET STATUS) is not push data.
        assert!(!PushRequest::is_push(
            &hex::decode("80F24002024F00").unwrap()
        ));
        // Nor is a PUSH with a P2 this code does not send (TCP connection).
        assert!(matches!(
            PushRequest::decode(&hex::decode("80EC010300").unwrap()),
            Err(PushError::NotPush(_))
        ));
        let b = sample().encode().unwrap();
        for cut in 1..b.len() {
            if cut == 36 {
                // Exactly the first APDU: well formed, but the link request is missing.
                assert_eq!(
                    PushRequest::decode(&b[..cut]),
                    Err(PushError::Missing("a CAT_TP link request"))
                );
                continue;
            }
            assert!(PushRequest::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        // Each request at most once.
        let mut twice = b.clone();
        twice.extend_from_slice(&b[36..]);
        assert!(PushRequest::decode(&twice).is_err());
    }

    #[test]
    fn apn_as_labels() {
        assert_eq!(apn_labels("iot.example").unwrap(), b"\x03iot\x07example");
        for bad in ["", "a..b", ".a", "a.", &"x".repeat(64)] {
            assert!(apn_labels(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn oversized_data_is_refused_when_encoding() {
        let mut p = sample();
        p.link.identification = vec![0; crate::pdu::MAX_IDENTIFICATION_LEN + 1];
        assert_eq!(p.encode(), Err(PushError::TooLong("identification")));
        p.link.identification.clear();
        p.bip.bearer.parameters = vec![0; 250];
        assert_eq!(
            p.encode(),
            Err(PushError::TooLong("BIP channel opening request"))
        );
    }

    /// What otagw sent before (raw octets: port 4500, max SDU 65535), and what a card's
    /// COMPREHENSION-TLV parser makes of it: tag 11, then length octet 94 (148 to a lax
    /// parser, with 2 octets left; not a valid length coding to a strict one). Either way the
    /// card refuses the PUSH with 6A80; the BIP request before it ran.
    #[test]
    fn a_raw_octet_link_request_is_refused_with_6a80() {
        let mut raw = bip_apdu();
        raw.extend_from_slice(&hex::decode("80EC0102041194FFFF").unwrap());
        let (done, error) = read_commands(&raw);
        assert_eq!(done.len(), 1);
        assert!(matches!(done[0], PushCommand::BipOpen(_)));
        let error = error.expect("refused");
        assert_eq!(
            error,
            PushError::Invalid {
                field: "CAT_TP link request",
                reason: "length coding"
            }
        );
        assert_eq!(error.status_word(), 0x6A80);
        assert!(PushRequest::decode(&raw).is_err());
        assert!(!PushRequest::is_push(&raw));
        // The sample's raw form (port 1F90: tag 1F, length 90, not a valid length coding).
        let mut raw = bip_apdu();
        raw.extend_from_slice(&hex::decode("80EC0102041F901000").unwrap());
        assert_eq!(read_commands(&raw).1.unwrap().status_word(), 0x6A80);
    }

    fn link_only(data: &str) -> Result<CatTpLinkRequest, PushError> {
        let data = hex::decode(data).unwrap();
        let mut b = bip_apdu();
        b.extend_from_slice(&[0x80, 0xEC, 0x01, 0x02, data.len() as u8]);
        b.extend_from_slice(&data);
        PushRequest::decode(&b).map(|p| p.link)
    }

    #[test]
    fn link_objects_as_a_card_reads_them() {
        let port_only = CatTpLinkRequest {
            destination_port: 0x1194,
            max_sdu_size: None,
            identification: Vec::new(),
        };
        // Only the transport level is mandatory; its protocol type octet is not looked at.
        assert_eq!(link_only("3C03001194"), Ok(port_only.clone()));
        assert_eq!(link_only("3C03011194"), Ok(port_only.clone()));
        // The CR bit may be set on any of them (BC, B9, B6), in any order.
        assert_eq!(
            link_only("B6020102B9020400BC03001194"),
            Ok(CatTpLinkRequest {
                max_sdu_size: Some(1024),
                identification: vec![1, 2],
                ..port_only.clone()
            })
        );
        // An object not understood: skipped without CR, refused with it.
        assert_eq!(link_only("3C030011940D0100"), Ok(port_only.clone()));
        assert_eq!(
            link_only("3C030011948D0100"),
            Err(PushError::NotUnderstood {
                what: "CAT_TP link request",
                tag: 0x0D
            })
        );
        for bad in [
            "",                     // no transport level
            "39020400",             // no transport level
            "3C021194",             // transport level of 2 octets
            "3C03001194390104",     // buffer size of 1 octet
            "3C030011943C03001194", // transport level twice
            "3C8103001194",         // length 81 with a value below 80
            "3C820003001194",       // length coding 82 in a short APDU
            "7F00013C03001194",     // three-octet tag format
            "3C04001194",           // length beyond the data
        ] {
            let e = link_only(bad).expect_err(bad);
            assert_eq!(e.status_word(), 0x6A80, "{bad}: {e}");
        }
        // An identification longer than a SYN carries.
        let long_id = format!("3C030011943681E9{}", "00".repeat(233));
        assert!(link_only(&long_id).is_err());
        let longest = format!("3C030011943681E8{}", "00".repeat(232));
        assert_eq!(link_only(&longest).unwrap().identification.len(), 232);
    }
}
