//! Remote File Management command builders (TS 102 226 clause 6, TS 31.116).
//!
//! GSM class `A0` commands follow TS 51.011 clause 9.2; UICC class `00` commands follow
//! TS 102 221 clause 11.1.

use super::apdu::CApdu;
use super::error::ScriptError;

/// File identifier of the MF.
pub const FID_MF: u16 = 0x3F00;

/// Which command set (and class byte) to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardClass {
    /// SIM, TS 51.011: CLA `A0`.
    Gsm,
    /// UICC, TS 102 221: CLA `00` (basic logical channel).
    Uicc,
}

impl CardClass {
    /// The class byte.
    pub fn cla(self) -> u8 {
        match self {
            CardClass::Gsm => 0xA0,
            CardClass::Uicc => 0x00,
        }
    }
}

/// Record addressing of READ RECORD / UPDATE RECORD (P1/P2 per TS 51.011 9.2.5 and
/// TS 102 221 table 11.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordMode {
    /// Record number 1..=254 in P1, P2 `04`; record 0 means the current record.
    Absolute(u8),
    /// Next record: P1 `00`, P2 `02`.
    Next,
    /// Previous record: P1 `00`, P2 `03`.
    Previous,
}

impl RecordMode {
    fn p1_p2(self) -> Result<(u8, u8), ScriptError> {
        match self {
            RecordMode::Absolute(0xFF) => Err(ScriptError::OutOfRange {
                field: "record number",
                value: 0xFF,
                range: "0..=0xFE (0 = current record)",
            }),
            RecordMode::Absolute(n) => Ok((n, 0x04)),
            RecordMode::Next => Ok((0x00, 0x02)),
            RecordMode::Previous => Ok((0x00, 0x03)),
        }
    }
}

fn fid_bytes(fid: u16) -> Vec<u8> {
    fid.to_be_bytes().to_vec()
}

fn case3(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> Result<CApdu, ScriptError> {
    CApdu::new(cla, ins, p1, p2, data, None)
}

/// SELECT by file identifier: `A0 A4 00 00 02 FID` (GSM) or `00 A4 00 04 02 FID` (UICC, FCP
/// requested).
///
/// No Le: in the compact format the FCP is fetched with [`get_response`]; for the expanded
/// format add it with [`CApdu::with_le`] to get the FCP in the R-APDU.
pub fn select_fid(class: CardClass, fid: u16) -> CApdu {
    let p2 = match class {
        CardClass::Gsm => 0x00,
        CardClass::Uicc => 0x04,
    };
    // Two data octets always fit a short APDU; the fallback is unreachable.
    CApdu::new(class.cla(), 0xA4, 0x00, p2, fid_bytes(fid), None)
        .unwrap_or_else(|_| CApdu::case1(class.cla(), 0xA4, 0x00, p2))
}

/// SELECT of each level of `path`, starting at the MF (added if `path` does not start with it).
pub fn select_path(class: CardClass, path: &[u16]) -> Vec<CApdu> {
    let rest = match path.split_first() {
        Some((&FID_MF, rest)) => rest,
        _ => path,
    };
    std::iter::once(FID_MF)
        .chain(rest.iter().copied())
        .map(|fid| select_fid(class, fid))
        .collect()
}

/// SELECT by path from the MF in one command: `00 A4 08 04 Lc path` (TS 102 221 clause
/// 11.1.1, P1 `08`); a leading `3F00` is dropped since the path is relative to the MF.
/// GSM class has no path selection.
pub fn select_by_path(class: CardClass, path: &[u16]) -> Result<CApdu, ScriptError> {
    if class == CardClass::Gsm {
        return Err(ScriptError::Unsupported(
            "GSM class (A0) has no SELECT by path; use select_path",
        ));
    }
    let rest = match path.split_first() {
        Some((&FID_MF, rest)) => rest,
        _ => path,
    };
    if rest.is_empty() {
        return Err(ScriptError::Empty("SELECT path below the MF"));
    }
    let data: Vec<u8> = rest.iter().flat_map(|f| f.to_be_bytes()).collect();
    case3(class.cla(), 0xA4, 0x08, 0x04, data)
}

fn offset_p1_p2(offset: u16) -> Result<(u8, u8), ScriptError> {
    // P1 b8 set would mean SFI addressing (TS 102 221 table 11.10), so offsets stop at 0x7FFF.
    if offset > 0x7FFF {
        return Err(ScriptError::OutOfRange {
            field: "binary offset",
            value: u32::from(offset),
            range: "0..=0x7FFF",
        });
    }
    let [hi, lo] = offset.to_be_bytes();
    Ok((hi, lo))
}

/// READ BINARY of `len` octets at `offset` (`len` 0 means 256): `CLA B0 offH offL Le`.
pub fn read_binary(class: CardClass, offset: u16, len: u8) -> Result<CApdu, ScriptError> {
    let (p1, p2) = offset_p1_p2(offset)?;
    Ok(CApdu::case2(class.cla(), 0xB0, p1, p2, len))
}

/// UPDATE BINARY of `data` (1..=255 octets) at `offset`: `CLA D6 offH offL Lc data`.
pub fn update_binary(class: CardClass, offset: u16, data: &[u8]) -> Result<CApdu, ScriptError> {
    let (p1, p2) = offset_p1_p2(offset)?;
    if data.is_empty() {
        return Err(ScriptError::Empty("UPDATE BINARY data"));
    }
    case3(class.cla(), 0xD6, p1, p2, data.to_vec())
}

/// READ RECORD of `len` octets (the record length): `CLA B2 P1 P2 Le`.
pub fn read_record(class: CardClass, mode: RecordMode, len: u8) -> Result<CApdu, ScriptError> {
    let (p1, p2) = mode.p1_p2()?;
    Ok(CApdu::case2(class.cla(), 0xB2, p1, p2, len))
}

/// UPDATE RECORD with `data` (1..=255 octets, the record length): `CLA DC P1 P2 Lc data`.
pub fn update_record(
    class: CardClass,
    mode: RecordMode,
    data: &[u8],
) -> Result<CApdu, ScriptError> {
    let (p1, p2) = mode.p1_p2()?;
    if data.is_empty() {
        return Err(ScriptError::Empty("UPDATE RECORD data"));
    }
    case3(class.cla(), 0xDC, p1, p2, data.to_vec())
}

/// GET RESPONSE of `len` octets: `CLA C0 00 00 Le` (fetches a SELECT's FCP in compact scripts).
pub fn get_response(class: CardClass, len: u8) -> CApdu {
    CApdu::case2(class.cla(), 0xC0, 0x00, 0x00, len)
}

#[cfg(test)]
mod tests {
    use super::super::apdu::tests::h;
    use super::super::command::{CommandScript, ScriptFormat};
    use super::*;

    fn hex(c: &CApdu) -> String {
        c.to_string()
    }

    #[test]
    fn select() {
        assert_eq!(hex(&select_fid(CardClass::Gsm, 0x7F20)), "A0A40000027F20");
        assert_eq!(hex(&select_fid(CardClass::Uicc, 0x3F00)), "00A40004023F00");
        let cmds = select_path(CardClass::Gsm, &[0x7F20, 0x6F07]);
        let hexes: Vec<String> = cmds.iter().map(hex).collect();
        assert_eq!(
            hexes,
            ["A0A40000023F00", "A0A40000027F20", "A0A40000026F07"]
        );
        assert_eq!(select_path(CardClass::Uicc, &[0x3F00, 0x2FE2]).len(), 2);
        assert_eq!(select_path(CardClass::Uicc, &[]).len(), 1);
        assert_eq!(
            hex(&select_by_path(CardClass::Uicc, &[0x3F00, 0x7FFF, 0x6F07]).unwrap()),
            "00A40804047FFF6F07"
        );
        assert!(select_by_path(CardClass::Gsm, &[0x7F20]).is_err());
        assert!(select_by_path(CardClass::Uicc, &[0x3F00]).is_err());
    }

    #[test]
    fn binary() {
        assert_eq!(
            hex(&read_binary(CardClass::Gsm, 0, 9).unwrap()),
            "A0B0000009"
        );
        assert_eq!(
            hex(&read_binary(CardClass::Uicc, 0x0102, 0).unwrap()),
            "00B0010200"
        );
        assert_eq!(
            hex(&update_binary(CardClass::Gsm, 0x10, &h("112233")).unwrap()),
            "A0D6001003112233"
        );
        assert_eq!(
            read_binary(CardClass::Uicc, 0x8000, 1)
                .unwrap_err()
                .to_string(),
            "binary offset 0x8000 out of 0..=0x7FFF"
        );
        assert!(update_binary(CardClass::Uicc, 0, &[]).is_err());
        assert!(update_binary(CardClass::Uicc, 0, &[0; 256]).is_err());
    }

    #[test]
    fn records() {
        assert_eq!(
            hex(&read_record(CardClass::Gsm, RecordMode::Absolute(1), 0x1C).unwrap()),
            "A0B201041C"
        );
        assert_eq!(
            hex(&read_record(CardClass::Uicc, RecordMode::Next, 0x10).unwrap()),
            "00B2000210"
        );
        assert_eq!(
            hex(&read_record(CardClass::Uicc, RecordMode::Previous, 0x10).unwrap()),
            "00B2000310"
        );
        assert_eq!(
            hex(&update_record(CardClass::Uicc, RecordMode::Absolute(3), &h("FFFF")).unwrap()),
            "00DC030402FFFF"
        );
        assert_eq!(
            hex(&update_record(CardClass::Gsm, RecordMode::Previous, &h("01")).unwrap()),
            "A0DC00030101"
        );
        assert!(read_record(CardClass::Gsm, RecordMode::Absolute(0xFF), 1).is_err());
        assert!(update_record(CardClass::Gsm, RecordMode::Next, &[]).is_err());
        assert_eq!(hex(&get_response(CardClass::Gsm, 0x16)), "A0C0000016");
    }

    #[test]
    fn rfm_compact_script() {
        // Update EF_SPN under DF_GSM on a SIM, as one compact script.
        let mut cmds = select_path(CardClass::Gsm, &[0x7F20, 0x6F46]);
        cmds.push(update_binary(CardClass::Gsm, 0, &h("004F54414757")).unwrap());
        let bytes = CommandScript::from_commands(cmds)
            .encode(ScriptFormat::Compact)
            .unwrap();
        assert_eq!(
            bytes,
            h("A0A40000023F00 A0A40000027F20 A0A40000026F46 A0D6000006004F54414757")
        );
    }
}
