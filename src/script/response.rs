//! Script responses: compact (TS 102 226 clause 5.1.2) and expanded (clause 5.2.2).

use super::apdu::RApdu;
use super::ber::{push_ber_length, push_tlv, tlv_size, Reader};
use super::command::ScriptFormat;
use super::error::ScriptError;

/// Response Scripting template, definite length (TS 102 226 clause 5.2.2).
pub const TAG_RESPONSE_SCRIPT: u8 = 0xAB;
/// Response Scripting template, indefinite length (TS 102 226 clause 5.2.2).
pub const TAG_RESPONSE_SCRIPT_INDEFINITE: u8 = 0xAF;
/// Number of executed C-APDUs TLV.
pub const TAG_EXECUTED_COUNT: u8 = 0x80;
/// R-APDU TLV: response data then SW1 SW2.
pub const TAG_R_APDU: u8 = 0x23;
/// Immediate Action Response TLV.
pub const TAG_IMMEDIATE_ACTION_RESPONSE: u8 = 0x81;
/// Script Chaining Response TLV.
pub const TAG_SCRIPT_CHAINING_RESPONSE: u8 = 0x83;
/// Bad Format TLV.
pub const TAG_BAD_FORMAT: u8 = 0x90;

/// Error type carried by the Bad Format TLV `90` (TS 102 226 clause 5.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadFormat {
    /// `01`: unknown tag found in the command script.
    UnknownTag,
    /// `02`: wrong length found.
    WrongLength,
    /// `03`: length not found.
    LengthMissing,
    /// Any other value.
    Other(u8),
}

impl BadFormat {
    /// From the TLV value octet.
    pub fn from_octet(v: u8) -> Self {
        match v {
            0x01 => BadFormat::UnknownTag,
            0x02 => BadFormat::WrongLength,
            0x03 => BadFormat::LengthMissing,
            o => BadFormat::Other(o),
        }
    }

    /// The TLV value octet.
    pub fn octet(self) -> u8 {
        match self {
            BadFormat::UnknownTag => 0x01,
            BadFormat::WrongLength => 0x02,
            BadFormat::LengthMissing => 0x03,
            BadFormat::Other(o) => o,
        }
    }
}

/// Whether a status word means the command did what it was asked: 9000, 61xx (more data),
/// 91xx (proactive command pending), 92xx (memory retries), 9Fxx (GSM: response ready).
pub fn sw_is_success(sw: u16) -> bool {
    sw == 0x9000 || matches!(sw >> 8, 0x61 | 0x91 | 0x92 | 0x9F)
}

/// A parsed script response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScriptResponse {
    /// Number of executed commands: the compact count octet, the expanded `80` TLV, or, if an
    /// expanded template has no `80` TLV, the number of R-APDU TLVs.
    pub executed: usize,
    /// R-APDUs in order. Compact responses carry only the last command's.
    pub responses: Vec<RApdu>,
    /// Bad Format TLV, if the card rejected the script's structure.
    pub bad_format: Option<BadFormat>,
    /// Values of Immediate Action Response TLVs `81`.
    pub immediate_action_responses: Vec<Vec<u8>>,
    /// Value of the Script Chaining Response TLV `83`, if any.
    pub script_chaining_response: Option<Vec<u8>>,
    /// Any other TLVs of an expanded response, as (tag, value), kept rather than refused.
    pub other: Vec<(u8, Vec<u8>)>,
}

impl ScriptResponse {
    /// The last R-APDU, if any.
    pub fn last(&self) -> Option<&RApdu> {
        self.responses.last()
    }

    /// The one rule for whether a script did what it was asked, for single commands and
    /// campaign cards alike: its last status word is `expected` when one is given, else a
    /// success ([`sw_is_success`]); a bad format report is a failure. `Err` says why.
    pub fn judge(&self, expected: Option<u16>) -> Result<(), String> {
        if let Some(bad) = &self.bad_format {
            return Err(format!("the card found the script malformed ({bad:?})"));
        }
        match (self.last().map(|r| r.sw), expected) {
            (Some(sw), Some(e)) if sw == e => Ok(()),
            (Some(sw), Some(e)) => Err(format!(
                "the card ran {} command(s); the last answered {sw:04X}, expected {e:04X}",
                self.executed
            )),
            (Some(sw), None) if sw_is_success(sw) => Ok(()),
            (Some(sw), None) => Err(format!(
                "the card ran {} command(s); the last answered {sw:04X}",
                self.executed
            )),
            (None, Some(e)) => Err(format!("no status word in the response, expected {e:04X}")),
            (None, None) => Ok(()),
        }
    }

    /// The response decoded for people: `3 command(s): 9000, 9000, 9000 (data 98940000)`.
    pub fn summary(&self) -> String {
        let sws: Vec<String> = self
            .responses
            .iter()
            .map(|r| format!("{:04X}", r.sw))
            .collect();
        let mut out = format!("{} command(s): {}", self.executed, sws.join(", "));
        if let Some(last) = self.last().filter(|r| !r.data.is_empty()) {
            out.push_str(&format!(" (data {})", hex::encode_upper(&last.data)));
        }
        out
    }

    /// `(status word, data)` of every R-APDU, in order.
    pub fn status_words(&self) -> Vec<(u16, Vec<u8>)> {
        self.responses
            .iter()
            .map(|r| (r.sw, r.data.clone()))
            .collect()
    }

    /// Encodes the response as a card would, in `format` (for tests and card simulators).
    ///
    /// Compact needs exactly one R-APDU and an `executed` count up to 255; expanded writes
    /// `80` first, then the R-APDUs, immediate action responses, script chaining response,
    /// bad format and other TLVs.
    pub fn encode(&self, format: ScriptFormat) -> Result<Vec<u8>, ScriptError> {
        match format {
            ScriptFormat::Compact => {
                let executed =
                    u8::try_from(self.executed).map_err(|_| ScriptError::OutOfRange {
                        field: "number of executed commands",
                        value: u32::try_from(self.executed).unwrap_or(u32::MAX),
                        range: "0..=0xFF",
                    })?;
                let last = match self.responses.as_slice() {
                    [one] => one,
                    _ => {
                        return Err(ScriptError::Unsupported(
                            "a compact response carries exactly one R-APDU",
                        ))
                    }
                };
                let mut out = vec![executed];
                out.extend_from_slice(&last.sw.to_be_bytes());
                out.extend_from_slice(&last.data);
                Ok(out)
            }
            ScriptFormat::ExpandedDefinite | ScriptFormat::ExpandedIndefinite => {
                let mut content = Vec::new();
                let count = u32::try_from(self.executed).unwrap_or(u32::MAX);
                let count_bytes = count.to_be_bytes();
                let skip = count_bytes.iter().take(3).take_while(|b| **b == 0).count();
                push_tlv(
                    &mut content,
                    TAG_EXECUTED_COUNT,
                    count_bytes.get(skip..).unwrap_or_default(),
                )?;
                for r in &self.responses {
                    push_tlv(&mut content, TAG_R_APDU, &r.to_bytes())?;
                }
                for v in &self.immediate_action_responses {
                    push_tlv(&mut content, TAG_IMMEDIATE_ACTION_RESPONSE, v)?;
                }
                if let Some(v) = &self.script_chaining_response {
                    push_tlv(&mut content, TAG_SCRIPT_CHAINING_RESPONSE, v)?;
                }
                if let Some(b) = self.bad_format {
                    push_tlv(&mut content, TAG_BAD_FORMAT, &[b.octet()])?;
                }
                for (tag, v) in &self.other {
                    push_tlv(&mut content, *tag, v)?;
                }
                let mut out = Vec::with_capacity(tlv_size(content.len()) + 2);
                if format == ScriptFormat::ExpandedDefinite {
                    out.push(TAG_RESPONSE_SCRIPT);
                    push_ber_length(&mut out, content.len())?;
                    out.extend_from_slice(&content);
                } else {
                    out.extend_from_slice(&[TAG_RESPONSE_SCRIPT_INDEFINITE, 0x80]);
                    out.extend_from_slice(&content);
                    out.extend_from_slice(&[0x00, 0x00]);
                }
                Ok(out)
            }
        }
    }
}

/// Parses a compact response (TS 102 226 clause 5.1.2): number of commands executed (1 octet),
/// last SW1 SW2 (2), last response data (rest).
pub fn parse_compact_response(bytes: &[u8]) -> Result<ScriptResponse, ScriptError> {
    let mut r = Reader::new(bytes);
    let executed = r.u8("compact response: number of commands executed")?;
    let sw = r.u16("compact response: last SW1 SW2")?;
    Ok(ScriptResponse {
        executed: usize::from(executed),
        responses: vec![RApdu::new(r.remaining(), sw)],
        ..ScriptResponse::default()
    })
}

/// Parses an expanded response (TS 102 226 clause 5.2.2): Response Scripting template `AB`
/// (definite) or `AF 80 .. 00 00` (indefinite) holding the `80`, `23`, `81`, `83` and `90` TLVs.
pub fn parse_expanded_response(bytes: &[u8]) -> Result<ScriptResponse, ScriptError> {
    const CTX: &str = "Response Scripting template";
    let mut r = Reader::new(bytes);
    let mut resp = ScriptResponse::default();
    let mut executed: Option<usize> = None;
    match r.peek() {
        Some(TAG_RESPONSE_SCRIPT) => {
            let tlv = r.tlv(CTX)?;
            if !r.is_empty() {
                return Err(ScriptError::TrailingOctets {
                    context: CTX,
                    count: r.remaining().len(),
                });
            }
            let mut inner = Reader::new(tlv.value);
            while !inner.is_empty() {
                read_response_item(&mut inner, &mut resp, &mut executed)?;
            }
        }
        Some(TAG_RESPONSE_SCRIPT_INDEFINITE) => {
            let head = r.take(2, CTX)?;
            if head.get(1) != Some(&0x80) {
                return Err(ScriptError::Unsupported(
                    "Response Scripting template AF needs indefinite length 80",
                ));
            }
            loop {
                match r.remaining() {
                    [0x00, 0x00, rest @ ..] => {
                        if !rest.is_empty() {
                            return Err(ScriptError::TrailingOctets {
                                context: CTX,
                                count: rest.len(),
                            });
                        }
                        break;
                    }
                    [] => return Err(ScriptError::MissingEndOfContents(CTX)),
                    _ => read_response_item(&mut r, &mut resp, &mut executed)?,
                }
            }
        }
        Some(found) => {
            return Err(ScriptError::UnexpectedTag {
                context: CTX,
                expected: "AB or AF",
                found,
            })
        }
        None => return Err(ScriptError::Empty("expanded response")),
    }
    resp.executed = executed.unwrap_or(resp.responses.len());
    Ok(resp)
}

fn read_response_item(
    r: &mut Reader<'_>,
    resp: &mut ScriptResponse,
    executed: &mut Option<usize>,
) -> Result<(), ScriptError> {
    let tlv = r.tlv("Response Scripting template item")?;
    match tlv.tag {
        TAG_EXECUTED_COUNT => {
            if tlv.value.is_empty() || tlv.value.len() > 4 {
                return Err(ScriptError::OutOfRange {
                    field: "number of executed C-APDUs TLV length",
                    value: u32::try_from(tlv.value.len()).unwrap_or(u32::MAX),
                    range: "1..=4",
                });
            }
            let n = tlv
                .value
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            *executed = Some(n);
        }
        TAG_R_APDU => resp.responses.push(RApdu::parse(tlv.value)?),
        TAG_IMMEDIATE_ACTION_RESPONSE => resp.immediate_action_responses.push(tlv.value.to_vec()),
        TAG_SCRIPT_CHAINING_RESPONSE => resp.script_chaining_response = Some(tlv.value.to_vec()),
        TAG_BAD_FORMAT => {
            let v = match tlv.value {
                [v] => *v,
                _ => {
                    return Err(ScriptError::OutOfRange {
                        field: "Bad Format TLV length",
                        value: u32::try_from(tlv.value.len()).unwrap_or(u32::MAX),
                        range: "1..=1",
                    })
                }
            };
            resp.bad_format = Some(BadFormat::from_octet(v));
        }
        // Tag 00 is BER's end-of-contents, never a data object: kept as "other", it would
        // re-encode as `00 00` and end an indefinite template early (found by fuzzing).
        0x00 => {
            return Err(ScriptError::Unsupported(
                "tag 00 inside a Response Scripting template (reserved for end-of-contents)",
            ))
        }
        tag => resp.other.push((tag, tlv.value.to_vec())),
    }
    Ok(())
}

/// Parses a response to a script sent in `format`: compact, or expanded (`AB` or `AF`, whichever
/// the card chose).
pub fn parse_script_response(
    bytes: &[u8],
    format: ScriptFormat,
) -> Result<ScriptResponse, ScriptError> {
    match format {
        ScriptFormat::Compact => parse_compact_response(bytes),
        _ => parse_expanded_response(bytes),
    }
}

/// Convenience: `(status word, data)` of each R-APDU in a response to a script sent in `format`.
pub fn parse_status_words(
    bytes: &[u8],
    format: ScriptFormat,
) -> Result<Vec<(u16, Vec<u8>)>, ScriptError> {
    Ok(parse_script_response(bytes, format)?.status_words())
}

#[cfg(test)]
mod tests {
    use super::super::apdu::tests::h;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compact_pysim_vectors() {
        // From pySim, answered by a real card: SELECT + GET RESPONSE.
        let r = parse_compact_response(&h("0290000000ffff7f2002000000000009b106350400838a838a"))
            .unwrap();
        assert_eq!(r.executed, 2);
        assert_eq!(r.last().unwrap().sw, 0x9000);
        assert_eq!(
            r.last().unwrap().data,
            h("0000ffff7f2002000000000009b106350400838a838a")
        );
        let r = parse_compact_response(&h("01612f")).unwrap();
        assert_eq!(r.executed, 1);
        assert_eq!(r.status_words(), vec![(0x612F, vec![])]);
        assert_eq!(r.encode(ScriptFormat::Compact).unwrap(), h("01612f"));
        assert!(matches!(
            parse_compact_response(&h("0190")),
            Err(ScriptError::Truncated { .. })
        ));
    }

    #[test]
    fn expanded_definite() {
        // 2 executed; SELECT answered 9000 with FCP bytes, READ BINARY 6282 with data.
        let bytes = h("AB12 800102 2305 62018290 00 2306 AABBCC DD 6282");
        let r = parse_expanded_response(&bytes).unwrap();
        assert_eq!(r.executed, 2);
        assert_eq!(
            r.status_words(),
            vec![(0x9000, h("620182")), (0x6282, h("AABBCCDD"))]
        );
        assert_eq!(r.encode(ScriptFormat::ExpandedDefinite).unwrap(), bytes);
        assert_eq!(
            parse_status_words(&bytes, ScriptFormat::ExpandedIndefinite)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn expanded_indefinite_and_errors() {
        let bytes = h("AF80 800101 2302 9000 0000");
        let r = parse_expanded_response(&bytes).unwrap();
        assert_eq!((r.executed, r.responses.len()), (1, 1));
        assert_eq!(r.encode(ScriptFormat::ExpandedIndefinite).unwrap(), bytes);
        // Without a count TLV the number of R-APDUs stands in.
        let r = parse_expanded_response(&h("AF80 2302 9000 2302 6A82 0000")).unwrap();
        assert_eq!(r.executed, 2);
        // Bad format: nothing executed, wrong length.
        let r = parse_expanded_response(&h("AB06 800100 900102")).unwrap();
        assert_eq!(
            (r.executed, r.bad_format),
            (0, Some(BadFormat::WrongLength))
        );
        // Immediate action response and an unknown TLV kept aside.
        let r = parse_expanded_response(&h("AB0B 800100 810101 830102 A100")).unwrap();
        assert_eq!(r.immediate_action_responses, vec![vec![1]]);
        assert_eq!(r.script_chaining_response, Some(vec![2]));
        assert_eq!(r.other, vec![(0xA1, vec![])]);
        assert!(matches!(
            parse_expanded_response(&h("AF80 2302 9000")),
            Err(ScriptError::MissingEndOfContents(_))
        ));
        assert!(matches!(
            parse_expanded_response(&h("AB03 2301 90")),
            Err(ScriptError::RApduTooShort(1))
        ));
        assert!(matches!(
            parse_expanded_response(&h("AB00 00")),
            Err(ScriptError::TrailingOctets { count: 1, .. })
        ));
        assert!(matches!(
            parse_expanded_response(&h("0290000000")),
            Err(ScriptError::UnexpectedTag { found: 0x02, .. })
        ));
        assert!(parse_expanded_response(&[]).is_err());
        assert!(parse_expanded_response(&h("AF81")).is_err());
    }

    fn arb_response() -> impl Strategy<Value = ScriptResponse> {
        let v = || proptest::collection::vec(any::<u8>(), 0..6);
        (
            0usize..100_000,
            proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..40), any::<u16>())
                    .prop_map(|(d, sw)| RApdu::new(d, sw)),
                0..6,
            ),
            proptest::option::of(any::<u8>().prop_map(BadFormat::from_octet)),
            proptest::collection::vec(v(), 0..3),
            proptest::option::of(v()),
            proptest::collection::vec(
                (
                    prop_oneof![Just(0x84u8), Just(0xA1), Just(0x01), Just(0x9E)],
                    v(),
                ),
                0..3,
            ),
        )
            .prop_map(
                |(executed, responses, bad_format, immediate, chaining, other)| ScriptResponse {
                    executed,
                    responses,
                    bad_format,
                    immediate_action_responses: immediate,
                    script_chaining_response: chaining,
                    other,
                },
            )
    }

    proptest! {
        #[test]
        fn expanded_response_roundtrip(resp in arb_response(), indefinite in any::<bool>()) {
            let f = if indefinite { ScriptFormat::ExpandedIndefinite } else { ScriptFormat::ExpandedDefinite };
            let bytes = resp.encode(f).unwrap();
            prop_assert_eq!(parse_script_response(&bytes, f).unwrap(), resp);
        }

        #[test]
        fn compact_response_roundtrip(executed in any::<u8>(), data in proptest::collection::vec(any::<u8>(), 0..200), sw in any::<u16>()) {
            let resp = ScriptResponse { executed: usize::from(executed), responses: vec![RApdu::new(data, sw)], ..Default::default() };
            let bytes = resp.encode(ScriptFormat::Compact).unwrap();
            prop_assert_eq!(parse_script_response(&bytes, ScriptFormat::Compact).unwrap(), resp);
        }

        #[test]
        fn response_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_compact_response(&bytes);
            let _ = parse_expanded_response(&bytes);
            let mut framed = vec![0xAF, 0x80];
            framed.extend_from_slice(&bytes);
            let _ = parse_expanded_response(&framed);
        }
    }
}
