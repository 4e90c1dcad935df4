//! Short C-APDUs and R-APDUs (ISO/IEC 7816-4 clause 5.1, cases 1 to 4).

use std::fmt;

use super::ber::Reader;
use super::error::ScriptError;

/// Largest command data field of a short APDU.
pub const MAX_SHORT_DATA: usize = 255;

/// A short command APDU: `CLA INS P1 P2 [Lc data] [Le]`.
///
/// The data field is at most 255 octets (checked by the constructors), so encoding never fails.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CApdu {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
    le: Option<u8>,
}

/// The four ISO/IEC 7816-4 command cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ApduCase {
    /// No data, no Le.
    Case1,
    /// Le only.
    Case2,
    /// Lc and data only.
    Case3,
    /// Lc, data and Le.
    Case4,
}

impl CApdu {
    /// A C-APDU of any case; `le` is the raw Le octet (`00` means 256).
    pub fn new(
        cla: u8,
        ins: u8,
        p1: u8,
        p2: u8,
        data: impl Into<Vec<u8>>,
        le: Option<u8>,
    ) -> Result<Self, ScriptError> {
        let data = data.into();
        if data.len() > MAX_SHORT_DATA {
            return Err(ScriptError::TooLong {
                field: "C-APDU data",
                len: data.len(),
                max: MAX_SHORT_DATA,
            });
        }
        Ok(CApdu {
            cla,
            ins,
            p1,
            p2,
            data,
            le,
        })
    }

    /// A case 1 C-APDU (header only).
    pub fn case1(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        CApdu {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    /// A case 2 C-APDU (header and Le).
    pub fn case2(cla: u8, ins: u8, p1: u8, p2: u8, le: u8) -> Self {
        CApdu {
            le: Some(le),
            ..CApdu::case1(cla, ins, p1, p2)
        }
    }

    /// Class byte.
    pub fn cla(&self) -> u8 {
        self.cla
    }

    /// Instruction byte.
    pub fn ins(&self) -> u8 {
        self.ins
    }

    /// Parameter 1.
    pub fn p1(&self) -> u8 {
        self.p1
    }

    /// Parameter 2.
    pub fn p2(&self) -> u8 {
        self.p2
    }

    /// Command data field (empty for cases 1 and 2).
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Raw Le octet if present (`00` means 256).
    pub fn le(&self) -> Option<u8> {
        self.le
    }

    /// The command case implied by data and Le.
    pub fn case(&self) -> ApduCase {
        match (self.data.is_empty(), self.le.is_some()) {
            (true, false) => ApduCase::Case1,
            (true, true) => ApduCase::Case2,
            (false, false) => ApduCase::Case3,
            (false, true) => ApduCase::Case4,
        }
    }

    /// The same command with Le set to `le`.
    pub fn with_le(mut self, le: u8) -> Self {
        self.le = Some(le);
        self
    }

    /// The same command without Le.
    pub fn without_le(mut self) -> Self {
        self.le = None;
        self
    }

    /// Encoded length of [`CApdu::to_bytes`].
    pub fn encoded_len(&self) -> usize {
        4 + if self.data.is_empty() {
            0
        } else {
            1 + self.data.len()
        } + usize::from(self.le.is_some())
    }

    /// ISO/IEC 7816-4 encoding: `CLA INS P1 P2 [Lc data] [Le]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            // The constructors keep data at most 255 octets long.
            out.push(self.data.len() as u8);
            out.extend_from_slice(&self.data);
        }
        if let Some(le) = self.le {
            out.push(le);
        }
        out
    }

    /// Encoded length of [`CApdu::to_compact_bytes`].
    pub fn compact_len(&self) -> usize {
        5 + self.data.len()
    }

    /// T=0 style TPDU as carried in the compact format (TS 102 226 clause 5.1.1).
    ///
    /// The card splits a compact script by reading a 5-octet header and P3, so P3 is always
    /// present: case 1 gets P3 = 00, case 2 P3 = Le, cases 3 and 4 P3 = Lc; the Le of a case 4
    /// command is dropped (ISO/IEC 7816-3 clause 12.2, T=0 mapping), its response data being
    /// fetched with GET RESPONSE.
    pub fn to_compact_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.compact_len());
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if self.data.is_empty() {
            out.push(self.le.unwrap_or(0));
        } else {
            out.push(self.data.len() as u8);
            out.extend_from_slice(&self.data);
        }
        out
    }

    /// Parses one complete short C-APDU; the buffer length decides the case (ISO/IEC 7816-4
    /// clause 5.1): 4 octets case 1, 5 case 2, 5 + Lc case 3, 6 + Lc case 4.
    pub fn parse(bytes: &[u8]) -> Result<Self, ScriptError> {
        let (header, body) = match bytes.split_first_chunk::<4>() {
            Some(split) => split,
            None => return Err(ScriptError::ApduTooShort(bytes.len())),
        };
        let [cla, ins, p1, p2] = *header;
        let (data, le): (&[u8], Option<u8>) = match body {
            [] => (&[], None),
            [le] => (&[], Some(*le)),
            [0, ..] => return Err(ScriptError::ExtendedLength),
            [lc, rest @ ..] => {
                let lc = usize::from(*lc);
                if rest.len() == lc {
                    (rest, None)
                } else if rest.len() == lc + 1 {
                    let (data, le) = rest.split_at(lc);
                    (data, le.first().copied())
                } else {
                    return Err(ScriptError::LcMismatch {
                        lc,
                        available: rest.len(),
                    });
                }
            }
        };
        CApdu::new(cla, ins, p1, p2, data, le)
    }

    /// Reads one compact-format C-APDU (see [`CApdu::to_compact_bytes`]) from the reader.
    ///
    /// Whether P3 is Le or Lc is decided from INS/P1 with [`p3_is_le`], as the card does.
    pub(crate) fn read_compact(r: &mut Reader<'_>) -> Result<Self, ScriptError> {
        let rest = r.remaining();
        if rest.len() == 4 {
            // A final bare header: tolerate it as case 1.
            let h = r.take(4, "C-APDU header")?;
            return match *h {
                [cla, ins, p1, p2] => Ok(CApdu::case1(cla, ins, p1, p2)),
                _ => Err(ScriptError::ApduTooShort(h.len())),
            };
        }
        if rest.len() < 5 {
            return Err(ScriptError::ApduTooShort(rest.len()));
        }
        let h = r.take(5, "C-APDU header")?;
        let [cla, ins, p1, p2, p3] = match *h {
            [a, b, c, d, e] => [a, b, c, d, e],
            _ => return Err(ScriptError::ApduTooShort(h.len())),
        };
        if p3_is_le(ins, p1) {
            return Ok(CApdu::case2(cla, ins, p1, p2, p3));
        }
        if p3 == 0 {
            return Ok(CApdu::case1(cla, ins, p1, p2));
        }
        let available = r.remaining().len();
        let data = r
            .take(usize::from(p3), "C-APDU data")
            .map_err(|_| ScriptError::LcMismatch {
                lc: usize::from(p3),
                available,
            })?;
        CApdu::new(cla, ins, p1, p2, data, None)
    }
}

/// Whether P3 of a compact (T=0 style) command is Le rather than Lc, judged from the command.
///
/// Outgoing-data commands of TS 51.011 / TS 102 221 / GlobalPlatform: READ BINARY (B0),
/// READ RECORD (B2), GET RESPONSE (C0), STATUS (F2, but not GP GET STATUS whose P1 is 10, 20, 40
/// or 80), FETCH (12), GET CHALLENGE (84), GET DATA (CA), MANAGE CHANNEL open (70 with P1 00).
/// Everything else takes P3 as Lc.
pub fn p3_is_le(ins: u8, p1: u8) -> bool {
    match ins {
        0xB0 | 0xB2 | 0xC0 | 0x12 | 0x84 | 0xCA => true,
        0x70 => p1 == 0x00,
        // UICC/SIM STATUS has P1 00..02; GP GET STATUS (case 3/4) has P1 80/40/20/10.
        0xF2 => !matches!(p1, 0x80 | 0x40 | 0x20 | 0x10),
        _ => false,
    }
}

impl fmt::Display for CApdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(self.to_bytes()))
    }
}

/// A response APDU: response data and the status word SW1 SW2.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RApdu {
    /// Response data (may be empty).
    pub data: Vec<u8>,
    /// SW1 SW2 as one big-endian number, e.g. `0x9000`.
    pub sw: u16,
}

impl RApdu {
    /// A response with data and status word.
    pub fn new(data: impl Into<Vec<u8>>, sw: u16) -> Self {
        RApdu {
            data: data.into(),
            sw,
        }
    }

    /// SW1.
    pub fn sw1(&self) -> u8 {
        (self.sw >> 8) as u8
    }

    /// SW2.
    pub fn sw2(&self) -> u8 {
        self.sw as u8
    }

    /// True for normal processing (TS 102 221 clause 10.2.1.1, TS 51.011 clause 9.4.1): 9000,
    /// 91xx (proactive command pending), 920x (done after retries), 61xx / 9Fxx (response
    /// data waiting for GET RESPONSE).
    pub fn is_success(&self) -> bool {
        match self.sw1() {
            0x90 | 0x91 | 0x61 | 0x9F => true,
            0x92 => self.sw2() & 0xF0 == 0x00,
            _ => false,
        }
    }

    /// Encoding: data followed by SW1 SW2.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 2);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(&self.sw.to_be_bytes());
        out
    }

    /// Parses data followed by SW1 SW2.
    pub fn parse(bytes: &[u8]) -> Result<Self, ScriptError> {
        match bytes.split_last_chunk::<2>() {
            Some((data, sw)) => Ok(RApdu::new(data, u16::from_be_bytes(*sw))),
            None => Err(ScriptError::RApduTooShort(bytes.len())),
        }
    }
}

impl fmt::Display for RApdu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:04X}", hex::encode_upper(&self.data), self.sw)
    }
}

/// Parses one complete short C-APDU (fuzzing entry point, same as [`CApdu::parse`]).
pub fn parse_c_apdu(bytes: &[u8]) -> Result<CApdu, ScriptError> {
    CApdu::parse(bytes)
}

/// Parses one R-APDU (fuzzing entry point, same as [`RApdu::parse`]).
pub fn parse_r_apdu(bytes: &[u8]) -> Result<RApdu, ScriptError> {
    RApdu::parse(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    #[test]
    fn cases_encode() {
        assert_eq!(CApdu::case1(0x00, 0x44, 0, 0).to_bytes(), h("00440000"));
        assert_eq!(
            CApdu::case2(0xA0, 0xB0, 0, 0, 0x0A).to_bytes(),
            h("A0B000000A")
        );
        let c3 = CApdu::new(0xA0, 0xA4, 0, 0, h("3F00"), None).unwrap();
        assert_eq!(c3.to_bytes(), h("A0A40000023F00"));
        assert_eq!(c3.case(), ApduCase::Case3);
        let c4 = c3.clone().with_le(0);
        assert_eq!(c4.to_bytes(), h("A0A40000023F0000"));
        assert_eq!(c4.case(), ApduCase::Case4);
        assert_eq!(c4.encoded_len(), 8);
        assert_eq!(c4.to_compact_bytes(), h("A0A40000023F00"));
        assert_eq!(
            CApdu::case1(0xA0, 0x44, 0, 0).to_compact_bytes(),
            h("A044000000")
        );
        assert_eq!(c4.to_string(), "A0A40000023F0000");
    }

    #[test]
    fn parse_cases() {
        assert_eq!(
            CApdu::parse(&h("00440000")).unwrap().case(),
            ApduCase::Case1
        );
        assert_eq!(CApdu::parse(&h("00B0000010")).unwrap().le(), Some(0x10));
        let c3 = CApdu::parse(&h("00A40004023F00")).unwrap();
        assert_eq!((c3.data(), c3.le()), (&h("3F00")[..], None));
        let c4 = CApdu::parse(&h("00A40004023F0000")).unwrap();
        assert_eq!(c4.le(), Some(0));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(
            CApdu::parse(&h("00D600000C 00112233445566778899"))
                .unwrap_err()
                .to_string(),
            "C-APDU Lc 12 but 10 data octets follow"
        );
        assert_eq!(
            CApdu::parse(&h("00A4")).unwrap_err(),
            ScriptError::ApduTooShort(2)
        );
        assert_eq!(
            CApdu::parse(&h("00A4000000000102")).unwrap_err(),
            ScriptError::ExtendedLength
        );
        assert!(CApdu::new(0, 0xD6, 0, 0, vec![0; 256], None).is_err());
    }

    #[test]
    fn rapdu() {
        let r = RApdu::parse(&h("0102 9000")).unwrap();
        assert_eq!((r.data.as_slice(), r.sw), (&[1u8, 2][..], 0x9000));
        assert!(r.is_success());
        assert_eq!((r.sw1(), r.sw2()), (0x90, 0x00));
        assert_eq!(r.to_bytes(), h("01029000"));
        assert_eq!(RApdu::parse(&h("6A82")).unwrap().data, Vec::<u8>::new());
        assert!(!RApdu::new(vec![], 0x6A82).is_success());
        assert!(!RApdu::new(vec![], 0x9240).is_success());
        assert!(RApdu::new(vec![], 0x9F16).is_success());
        assert_eq!(RApdu::parse(&h("90")), Err(ScriptError::RApduTooShort(1)));
    }

    pub(crate) fn arb_capdu() -> impl Strategy<Value = CApdu> {
        (
            any::<[u8; 4]>(),
            proptest::collection::vec(any::<u8>(), 0..=255),
            proptest::option::of(any::<u8>()),
        )
            .prop_map(|([cla, ins, p1, p2], data, le)| {
                CApdu::new(cla, ins, p1, p2, data, le).unwrap()
            })
    }

    proptest! {
        #[test]
        fn capdu_roundtrip(apdu in arb_capdu()) {
            let bytes = apdu.to_bytes();
            prop_assert_eq!(bytes.len(), apdu.encoded_len());
            prop_assert_eq!(CApdu::parse(&bytes).unwrap(), apdu);
        }

        #[test]
        fn rapdu_roundtrip(data in proptest::collection::vec(any::<u8>(), 0..300), sw in any::<u16>()) {
            let r = RApdu::new(data, sw);
            prop_assert_eq!(RApdu::parse(&r.to_bytes()).unwrap(), r);
        }

        #[test]
        fn apdu_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_c_apdu(&bytes);
            let _ = parse_r_apdu(&bytes);
            let mut r = Reader::new(&bytes);
            while !r.is_empty() && CApdu::read_compact(&mut r).is_ok() {}
        }
    }
}
