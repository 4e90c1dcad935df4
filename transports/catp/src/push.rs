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
//! | `02` request for CAT_TP link establishment | CAT_TP destination port (2), max SDU size (2), then the optional identification data (clause 9.2.2) |
//!
//! Checked against the text of clauses 9.2 and 9.2.1. The layout of the clause 9.2.2 data after
//! the port and SDU size (how identification data is coded) is our reading; we send none.

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
const TAG_BUFFER_SIZE: u8 = 0x39;
const TAG_APN: u8 = 0x47;
const TAG_TRANSPORT_LEVEL: u8 = 0x3C;
const TAG_ADDRESS: u8 = 0x3E;
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
    /// Largest SDU the gateway will send.
    pub max_sdu_size: u16,
    /// Identification data the card may be asked to present (usually empty: the card sends
    /// its ICCID in the SYN).
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

/// Reads one BER-TLV with a one-octet tag: (tag, value, rest).
fn read_tlv<'a>(b: &'a [u8], what: &'static str) -> Result<(u8, &'a [u8], &'a [u8]), PushError> {
    let (&tag, rest) = b.split_first().ok_or(PushError::Truncated(what))?;
    let (&l0, rest) = rest.split_first().ok_or(PushError::Truncated(what))?;
    let (len, rest) = match l0 {
        0..=0x7F => (usize::from(l0), rest),
        0x81 => {
            let (&l, r) = rest.split_first().ok_or(PushError::Truncated(what))?;
            (usize::from(l), r)
        }
        0x82 => {
            let l = rest.get(..2).ok_or(PushError::Truncated(what))?;
            (usize::from(u16::from_be_bytes([l[0], l[1]])), &rest[2..])
        }
        _ => {
            return Err(PushError::Invalid {
                field: what,
                reason: "length coding",
            })
        }
    };
    if rest.len() < len {
        return Err(PushError::Truncated(what));
    }
    Ok((tag, &rest[..len], &rest[len..]))
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
        link.extend_from_slice(&self.link.destination_port.to_be_bytes());
        link.extend_from_slice(&self.link.max_sdu_size.to_be_bytes());
        link.extend_from_slice(&self.link.identification);

        let mut out = Vec::new();
        push_apdu(&mut out, P2_BIP_OPEN, &bip, "BIP channel opening request")?;
        push_apdu(&mut out, P2_CATTP_LINK, &link, "CAT_TP link request")?;
        Ok(out)
    }

    /// Reads push data (the card side): PUSH APDUs back to back, the BIP channel opening
    /// request and the CAT_TP link request each exactly once.
    pub fn decode(data: &[u8]) -> Result<PushRequest, PushError> {
        let mut bip = None;
        let mut link = None;
        let mut rest = data;
        while !rest.is_empty() {
            let header = rest
                .get(..5)
                .ok_or(PushError::Truncated("PUSH APDU header"))?;
            if header[..3] != [PUSH_CLA, PUSH_INS, PUSH_P1] {
                return Err(PushError::NotPush(hex::encode_upper(&header[..4])));
            }
            let len = usize::from(header[4]);
            let value = rest
                .get(5..5 + len)
                .ok_or(PushError::Truncated("PUSH APDU data"))?;
            rest = &rest[5 + len..];
            match header[3] {
                P2_BIP_OPEN if bip.is_none() => bip = Some(decode_bip(value)?),
                P2_CATTP_LINK if link.is_none() => link = Some(decode_link(value)?),
                P2_BIP_OPEN | P2_CATTP_LINK => {
                    return Err(PushError::Invalid {
                        field: "PUSH command",
                        reason: "repeated",
                    })
                }
                _ => return Err(PushError::NotPush(hex::encode_upper(&header[..4]))),
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
        let (tag, v, r) = read_tlv(b, "BIP channel opening request")?;
        b = r;
        // The CR bit (b8) may be set by other encoders.
        match tag & 0x7F {
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

fn decode_link(v: &[u8]) -> Result<CatTpLinkRequest, PushError> {
    let head = v
        .get(..4)
        .ok_or(PushError::Truncated("CAT_TP link request"))?;
    Ok(CatTpLinkRequest {
        destination_port: u16::from_be_bytes([head[0], head[1]]),
        max_sdu_size: u16::from_be_bytes([head[2], head[3]]),
        identification: v[4..].to_vec(),
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
                max_sdu_size: 4096,
                identification: Vec::new(),
            },
        }
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
            "04",
            "1f90",
            "1000", // PUSH: request for CAT_TP link establishment, port 8080, max SDU 4096
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
        p.link.identification = vec![0; 252];
        assert_eq!(p.encode(), Err(PushError::TooLong("CAT_TP link request")));
    }
}
