//! The Remote File Management applet (TS 102 226 clause 6, TS 31.116): SELECT, READ/UPDATE
//! BINARY, READ/UPDATE RECORD, GET RESPONSE and STATUS, in the GSM class `A0` (TS 51.011 clause
//! 9) and the UICC class `00` (TS 102 221 clause 11).
//!
//! Status words, per class (TS 51.011 clause 9.4 / TS 102 221 clause 10.2.1):
//!
//! | condition                                   | `A0`   | `00`   |
//! |---------------------------------------------|--------|--------|
//! | file not found                              | 9404   | 6A82   |
//! | no EF selected                              | 9400   | 6986   |
//! | command does not fit the file structure     | 9408   | 6981   |
//! | offset past the end, record not found       | 9402   | 6B00 / 6A83 |
//! | Le too long (XX = octets available)         | 67XX   | 6CXX   |
//! | Lc wrong (record or file too short)         | 67XX   | 6700   |
//! | update of a never-updatable file (EF ICCID) | 9804   | 6982   |
//! | bad P1/P2                                   | 6B00   | 6A86 (SELECT) / 6B00 |
//! | GET RESPONSE with nothing pending           | 6F00   | 6985   |
//! | unknown INS / class / logical channel       | 6D00 / 6E00 | 6D00 / 6E00 / 6881 |
//!
//! SELECT answers 9FXX (A0) or 61XX (00, P2 04) and leaves the file header (A0, TS 51.011 9.2.1)
//! or FCP template (00, TS 102 221 11.1.1.3) for GET RESPONSE; with Le present (expanded
//! scripts) the header comes straight back with 9000. P2 0C selects without data (9000).
//! Le 00 on READ BINARY / READ RECORD / GET RESPONSE reads whatever is there (up to 256).

use crate::script::{CApdu, RApdu};

use super::exec::Applet;
use super::fs::{FileStructure, FileSystem, NodeId, NodeKind, Template, FID_ADF, FID_MF};
use crate::digits::Digits;

/// Which command set a C-APDU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Gsm,
    Uicc,
}

/// Why a command failed; mapped to a status word per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    FileNotFound,
    NoEfSelected,
    WrongStructure,
    OffsetOutOfRange,
    RecordNotFound,
    /// Le too long; the number of octets available.
    WrongLe(usize),
    /// Lc wrong; the length expected if known.
    WrongLc(Option<usize>),
    NeverUpdatable,
    BadP1P2,
    NothingPending,
}

fn xx(n: usize) -> u16 {
    u16::try_from(n).ok().filter(|&n| n <= 0xFF).unwrap_or(0)
}

impl Fail {
    fn sw(self, class: Class) -> u16 {
        match (class, self) {
            (Class::Gsm, Fail::FileNotFound) => 0x9404,
            (Class::Gsm, Fail::NoEfSelected) => 0x9400,
            (Class::Gsm, Fail::WrongStructure) => 0x9408,
            (Class::Gsm, Fail::OffsetOutOfRange | Fail::RecordNotFound) => 0x9402,
            (Class::Gsm, Fail::WrongLe(n)) => 0x6700 | xx(n),
            (Class::Gsm, Fail::WrongLc(n)) => 0x6700 | n.map_or(0, xx),
            (Class::Gsm, Fail::NeverUpdatable) => 0x9804,
            (Class::Gsm, Fail::BadP1P2) => 0x6B00,
            (Class::Gsm, Fail::NothingPending) => 0x6F00,
            (Class::Uicc, Fail::FileNotFound) => 0x6A82,
            (Class::Uicc, Fail::NoEfSelected) => 0x6986,
            (Class::Uicc, Fail::WrongStructure) => 0x6981,
            (Class::Uicc, Fail::OffsetOutOfRange) => 0x6B00,
            (Class::Uicc, Fail::RecordNotFound) => 0x6A83,
            (Class::Uicc, Fail::WrongLe(n)) => 0x6C00 | xx(n),
            (Class::Uicc, Fail::WrongLc(_)) => 0x6700,
            (Class::Uicc, Fail::NeverUpdatable) => 0x6982,
            (Class::Uicc, Fail::BadP1P2) => 0x6A86,
            (Class::Uicc, Fail::NothingPending) => 0x6985,
        }
    }
}

type Outcome = Result<RApdu, Fail>;

fn ok(data: Vec<u8>) -> Outcome {
    Ok(RApdu::new(data, 0x9000))
}

/// Where the RFM applet starts each command packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RfmView {
    /// TAR B00010: the SIM / GSM file system view, MF implicitly selected.
    Gsm,
    /// TAR B00011: the USIM view, ADF USIM implicitly selected (TS 31.116).
    Usim,
}

/// One command packet's run of the RFM applet over a card's file system.
pub(crate) struct Rfm<'a> {
    fs: &'a mut FileSystem,
    iccid: Digits,
    imsi: Digits,
    t: &'static Template,
    df: NodeId,
    ef: Option<NodeId>,
    record: Option<u8>,
    pending: Option<Vec<u8>>,
}

impl<'a> Rfm<'a> {
    pub fn new(fs: &'a mut FileSystem, iccid: Digits, imsi: Digits, view: RfmView) -> Self {
        let t = Template::get();
        let df = match view {
            RfmView::Gsm => t.mf,
            RfmView::Usim => t.adf_usim,
        };
        Rfm {
            fs,
            iccid,
            imsi,
            t,
            df,
            ef: None,
            record: None,
            pending: None,
        }
    }

    fn content(&self, ef: NodeId) -> Vec<u8> {
        self.fs.content(ef, self.iccid, self.imsi).into_owned()
    }

    /// Response data of a SELECT: either straight back (Le present) or left for GET RESPONSE.
    fn answer_with(&mut self, class: Class, data: Vec<u8>, le: Option<u8>) -> Outcome {
        if le.is_some() {
            return ok(data);
        }
        let sw = match class {
            Class::Gsm => 0x9F00,
            Class::Uicc => 0x6100,
        } | xx(data.len());
        self.pending = Some(data);
        Ok(RApdu::new(Vec::new(), sw))
    }

    fn select_node(&mut self, id: NodeId) {
        match self.t.node(id).map(|n| n.kind.is_df()) {
            Some(true) => {
                self.df = id;
                self.ef = None;
            }
            _ => {
                self.df = self.t.df_of(id);
                self.ef = Some(id);
            }
        }
        self.record = None;
    }

    /// SELECT by FID from the current DF (TS 102 221 8.4.1, TS 51.011 8.1): the MF, the ADF
    /// (7FFF, UICC class only), the current DF, its children, its parent, and the parent's DFs.
    fn find_fid(&self, fid: u16, class: Class) -> Option<NodeId> {
        let t = self.t;
        if fid == FID_MF {
            return Some(t.mf);
        }
        if fid == FID_ADF {
            return (class == Class::Uicc).then_some(t.adf_usim);
        }
        let here = t.node(self.df)?;
        if here.fid == fid {
            return Some(self.df);
        }
        if let Some(c) = t.child(self.df, fid) {
            return Some(c);
        }
        let parent = here.parent?;
        if t.node(parent)?.fid == fid {
            return Some(parent);
        }
        t.child(parent, fid)
            .filter(|&s| t.node(s).is_some_and(|n| n.kind.is_df()))
    }

    fn select(&mut self, class: Class, c: &CApdu) -> Outcome {
        let data = c.data();
        let target = match class {
            Class::Gsm => {
                if (c.p1(), c.p2()) != (0, 0) {
                    return Err(Fail::BadP1P2);
                }
                let [hi, lo] = data else {
                    return Err(Fail::WrongLc(Some(2)));
                };
                self.find_fid(u16::from_be_bytes([*hi, *lo]), class)
            }
            Class::Uicc => {
                if !matches!(c.p2(), 0x00 | 0x04 | 0x0C) {
                    return Err(Fail::BadP1P2);
                }
                match c.p1() {
                    0x00 => match data {
                        [] => Some(self.t.mf),
                        [hi, lo] => self.find_fid(u16::from_be_bytes([*hi, *lo]), class),
                        _ => return Err(Fail::WrongLc(None)),
                    },
                    // Parent DF of the current DF.
                    0x03 => self.t.node(self.df).and_then(|n| n.parent),
                    0x04 => self.t.usim_matches(data).then_some(self.t.adf_usim),
                    0x08 | 0x09 => {
                        if data.is_empty() || !data.len().is_multiple_of(2) {
                            return Err(Fail::WrongLc(None));
                        }
                        let fids: Vec<u16> = data
                            .chunks_exact(2)
                            .map(|p| u16::from_be_bytes([p[0], p[1]]))
                            .collect();
                        if c.p1() == 0x08 {
                            self.t.resolve_path(&fids)
                        } else {
                            fids.iter()
                                .try_fold(self.df, |at, &fid| self.t.child(at, fid))
                        }
                    }
                    _ => return Err(Fail::BadP1P2),
                }
            }
        };
        let target = target.ok_or(Fail::FileNotFound)?;
        self.select_node(target);
        if class == Class::Uicc && c.p2() == 0x0C {
            return ok(Vec::new());
        }
        let header = match class {
            Class::Gsm => self.gsm_header(target),
            Class::Uicc => self.fcp(target),
        };
        self.answer_with(class, header, c.le())
    }

    /// The current EF, with its structure.
    fn current_ef(&self) -> Result<(NodeId, FileStructure), Fail> {
        let id = self.ef.ok_or(Fail::NoEfSelected)?;
        match self.t.node(id).map(|n| n.kind) {
            Some(NodeKind::Ef(s)) => Ok((id, s)),
            _ => Err(Fail::NoEfSelected),
        }
    }

    fn transparent(&self) -> Result<(NodeId, usize), Fail> {
        match self.current_ef()? {
            (id, FileStructure::Transparent { size }) => Ok((id, usize::from(size))),
            _ => Err(Fail::WrongStructure),
        }
    }

    fn offset(class: Class, c: &CApdu) -> Result<usize, Fail> {
        // UICC class: P1 b8 set means short file identifier addressing, which no file here has.
        if class == Class::Uicc && c.p1() & 0x80 != 0 {
            return Err(Fail::FileNotFound);
        }
        Ok(usize::from(u16::from_be_bytes([c.p1(), c.p2()])))
    }

    fn read_binary(&mut self, class: Class, c: &CApdu) -> Outcome {
        let offset = Self::offset(class, c)?;
        let (id, size) = self.transparent()?;
        if offset >= size {
            return Err(Fail::OffsetOutOfRange);
        }
        let available = size - offset;
        let want = match c.le() {
            None | Some(0) => available.min(256),
            Some(n) => usize::from(n),
        };
        if want > available {
            return Err(Fail::WrongLe(available));
        }
        let content = self.content(id);
        ok(content
            .get(offset..offset + want)
            .unwrap_or_default()
            .to_vec())
    }

    fn update_binary(&mut self, class: Class, c: &CApdu) -> Outcome {
        let offset = Self::offset(class, c)?;
        let (id, size) = self.transparent()?;
        self.check_updatable(id)?;
        if offset >= size {
            return Err(Fail::OffsetOutOfRange);
        }
        let data = c.data();
        if data.is_empty() || offset + data.len() > size {
            return Err(Fail::WrongLc(Some(size - offset)));
        }
        self.fs.write(id, offset, data, self.iccid, self.imsi);
        ok(Vec::new())
    }

    fn check_updatable(&self, id: NodeId) -> Result<(), Fail> {
        match self.t.node(id) {
            Some(n) if n.updatable() => Ok(()),
            _ => Err(Fail::NeverUpdatable),
        }
    }

    /// Resolves the record a READ/UPDATE RECORD addresses (TS 102 221 11.1.5, TS 51.011
    /// 9.2.5): mode 04 absolute (P1 = 0: current record; the pointer does not move), 02 next
    /// (first record if none is current), 03 previous (last record if none is current).
    fn record(&mut self, class: Class, c: &CApdu) -> Result<(NodeId, usize, usize), Fail> {
        let (id, structure) = self.current_ef()?;
        let FileStructure::LinearFixed {
            record_len,
            records,
        } = structure
        else {
            return Err(Fail::WrongStructure);
        };
        let mode = match class {
            Class::Gsm => c.p2(),
            Class::Uicc => {
                // P2 b8..b4: short file identifier, none here but the current EF (00000).
                if c.p2() & 0xF8 != 0 {
                    return Err(Fail::FileNotFound);
                }
                c.p2() & 0x07
            }
        };
        let number = match mode {
            0x04 => match c.p1() {
                0 => self.record.ok_or(Fail::RecordNotFound)?,
                n => n,
            },
            0x02 | 0x03 if c.p1() != 0 => return Err(Fail::BadP1P2),
            0x02 => match self.record {
                None => 1,
                Some(n) if n < records => n + 1,
                Some(_) => return Err(Fail::RecordNotFound),
            },
            0x03 => match self.record {
                None => records,
                Some(n) if n > 1 => n - 1,
                Some(_) => return Err(Fail::RecordNotFound),
            },
            _ => return Err(Fail::BadP1P2),
        };
        if number == 0 || number > records {
            return Err(Fail::RecordNotFound);
        }
        if mode != 0x04 {
            self.record = Some(number);
        }
        let len = usize::from(record_len);
        Ok((id, (usize::from(number) - 1) * len, len))
    }

    fn read_record(&mut self, class: Class, c: &CApdu) -> Outcome {
        let saved = self.record;
        let (id, at, len) = self.record(class, c)?;
        match c.le() {
            None | Some(0) => {}
            Some(n) if usize::from(n) == len => {}
            Some(_) => {
                self.record = saved;
                return Err(Fail::WrongLe(len));
            }
        }
        let content = self.content(id);
        ok(content.get(at..at + len).unwrap_or_default().to_vec())
    }

    fn update_record(&mut self, class: Class, c: &CApdu) -> Outcome {
        let saved = self.record;
        let (id, at, len) = self.record(class, c)?;
        if let Err(e) = self.check_updatable(id).and_then(|_| {
            if c.data().len() == len {
                Ok(())
            } else {
                Err(Fail::WrongLc(Some(len)))
            }
        }) {
            self.record = saved;
            return Err(e);
        }
        self.fs.write(id, at, c.data(), self.iccid, self.imsi);
        ok(Vec::new())
    }

    fn get_response(&mut self, pending: Option<Vec<u8>>, c: &CApdu) -> Outcome {
        let data = pending.ok_or(Fail::NothingPending)?;
        match c.le() {
            None | Some(0) => ok(data),
            Some(n) if usize::from(n) <= data.len() => {
                ok(data.get(..usize::from(n)).unwrap_or_default().to_vec())
            }
            Some(_) => {
                let len = data.len();
                self.pending = Some(data);
                Err(Fail::WrongLe(len))
            }
        }
    }

    /// STATUS: the current DF's header / FCP (TS 51.011 9.2.2, TS 102 221 11.1.2).
    fn status(&mut self, class: Class, c: &CApdu) -> Outcome {
        let mut data = match class {
            Class::Gsm => self.gsm_header(self.df),
            Class::Uicc => match c.p2() {
                0x00 => self.fcp(self.df),
                0x0C => Vec::new(),
                _ => return Err(Fail::BadP1P2),
            },
        };
        if let Some(n) = c.le().filter(|&n| n != 0) {
            data.truncate(usize::from(n));
        }
        ok(data)
    }

    /// TS 51.011 clause 9.2.1 response to SELECT: 22 octets for the MF/DFs, 15 for EFs.
    fn gsm_header(&self, id: NodeId) -> Vec<u8> {
        let Some(node) = self.t.node(id) else {
            return Vec::new();
        };
        let [f1, f2] = node.fid.to_be_bytes();
        match node.kind {
            NodeKind::Ef(s) => {
                let [s1, s2] = u16::try_from(s.size()).unwrap_or(u16::MAX).to_be_bytes();
                let (structure, record_len) = match s {
                    FileStructure::Transparent { .. } => (0x00, 0x00),
                    FileStructure::LinearFixed { record_len, .. } => (0x01, record_len),
                };
                vec![
                    0x00,
                    0x00,
                    s1,
                    s2,
                    f1,
                    f2,
                    0x04, // EF
                    0x00,
                    node.access,
                    0xFF, // INCREASE never
                    0x44, // REHABILITATE / INVALIDATE: ADM
                    0x01, // not invalidated
                    0x02, // two octets follow
                    structure,
                    record_len,
                ]
            }
            kind => {
                let (dfs, efs) = node.children.iter().fold((0u8, 0u8), |(d, e), &c| {
                    match self.t.node(c).map(|n| n.kind.is_df()) {
                        Some(true) => (d.saturating_add(1), e),
                        _ => (d, e.saturating_add(1)),
                    }
                });
                vec![
                    0x00,
                    0x00,
                    0x00,
                    0x00, // free memory
                    f1,
                    f2,
                    if kind == NodeKind::Mf { 0x01 } else { 0x02 },
                    0x00,
                    0x00,
                    0x00,
                    0x00,
                    0x00,
                    0x09, // nine octets follow
                    0x03, // file characteristics
                    dfs,
                    efs,
                    0x04, // CHVs, UNBLOCK CHVs and administrative codes
                    0x00,
                    0x83, // CHV1 initialised, 3 attempts left
                    0x8A, // UNBLOCK CHV1: 10 attempts
                    0x83,
                    0x8A,
                ]
            }
        }
    }

    /// TS 102 221 clause 11.1.1.3 FCP template `62`.
    fn fcp(&self, id: NodeId) -> Vec<u8> {
        let Some(node) = self.t.node(id) else {
            return Vec::new();
        };
        let [f1, f2] = node.fid.to_be_bytes();
        let mut inner = Vec::with_capacity(48);
        match node.kind {
            NodeKind::Ef(s) => {
                match s {
                    FileStructure::Transparent { .. } => {
                        inner.extend_from_slice(&[0x82, 0x02, 0x41, 0x21])
                    }
                    FileStructure::LinearFixed {
                        record_len,
                        records,
                    } => inner
                        .extend_from_slice(&[0x82, 0x05, 0x42, 0x21, 0x00, record_len, records]),
                }
                inner.extend_from_slice(&[0x83, 0x02, f1, f2]);
                // Life cycle: operational, activated; security attributes: EF ARR record.
                inner.extend_from_slice(&[0x8A, 0x01, 0x05, 0x8B, 0x03, 0x6F, 0x06, 0x01]);
                let [s1, s2] = u16::try_from(s.size()).unwrap_or(u16::MAX).to_be_bytes();
                inner.extend_from_slice(&[0x80, 0x02, s1, s2]);
            }
            kind => {
                inner.extend_from_slice(&[0x82, 0x02, 0x78, 0x21]);
                if let NodeKind::Adf(aid) = kind {
                    inner.push(0x84);
                    inner.push(aid.len() as u8);
                    inner.extend_from_slice(aid);
                } else {
                    inner.extend_from_slice(&[0x83, 0x02, f1, f2]);
                }
                inner.extend_from_slice(&[0x8A, 0x01, 0x05, 0x8B, 0x03, 0x2F, 0x06, 0x01]);
                // PIN status template: PIN1 (01) and ADM1 (0A) enabled, UPIN (81) disabled.
                inner.extend_from_slice(&[
                    0xC6, 0x0C, 0x90, 0x01, 0x60, 0x83, 0x01, 0x01, 0x83, 0x01, 0x81, 0x83, 0x01,
                    0x0A,
                ]);
            }
        }
        let mut out = Vec::with_capacity(inner.len() + 2);
        out.push(0x62);
        out.push(inner.len() as u8);
        out.extend_from_slice(&inner);
        out
    }
}

impl Applet for Rfm<'_> {
    fn execute(&mut self, c: &CApdu) -> RApdu {
        let class = match c.cla() {
            0xA0 => Class::Gsm,
            0x00 => Class::Uicc,
            0x01..=0x03 => return RApdu::new(Vec::new(), 0x6881),
            _ => return RApdu::new(Vec::new(), 0x6E00),
        };
        let pending = self.pending.take();
        let result = match c.ins() {
            0xA4 => self.select(class, c),
            0xB0 => self.read_binary(class, c),
            0xD6 => self.update_binary(class, c),
            0xB2 => self.read_record(class, c),
            0xDC => self.update_record(class, c),
            0xC0 => self.get_response(pending, c),
            0xF2 => self.status(class, c),
            _ => return RApdu::new(Vec::new(), 0x6D00),
        };
        result.unwrap_or_else(|fail| RApdu::new(Vec::new(), fail.sw(class)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::rfm::{self, CardClass, RecordMode};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    struct Card {
        fs: FileSystem,
        iccid: Digits,
        imsi: Digits,
    }

    impl Card {
        fn new() -> Self {
            Card {
                fs: FileSystem::default(),
                iccid: Digits::parse("8949000000000000001").unwrap(),
                imsi: Digits::parse("262011234567890").unwrap(),
            }
        }

        /// Runs commands in one session; returns "DATA SW" per command.
        fn run(&mut self, view: RfmView, cmds: &[CApdu]) -> Vec<String> {
            let mut rfm = Rfm::new(&mut self.fs, self.iccid, self.imsi, view);
            cmds.iter()
                .map(|c| {
                    let r = rfm.execute(c);
                    format!("{} {:04X}", hex::encode_upper(&r.data), r.sw)
                        .trim()
                        .to_string()
                })
                .collect()
        }
    }

    fn apdu(s: &str) -> CApdu {
        CApdu::parse(&h(s)).unwrap()
    }

    #[test]
    fn gsm_select_get_response_read_update() {
        let mut card = Card::new();
        let g = CardClass::Gsm;
        let r = card.run(
            RfmView::Gsm,
            &[
                rfm::select_fid(g, 0x7F20),
                rfm::get_response(g, 0x16),
                rfm::select_fid(g, 0x6F07),
                rfm::get_response(g, 0x0F),
                rfm::read_binary(g, 0, 9).unwrap(),
                rfm::select_fid(g, 0x6F46),
                rfm::update_binary(g, 1, b"ACME").unwrap(),
                rfm::read_binary(g, 0, 5).unwrap(),
            ],
        );
        assert_eq!(r[0], "9F16");
        let hex = |s: &str| s.replace(' ', "");
        assert_eq!(
            r[1],
            hex("00000000 7F20 02 0000000000 09 03 00 06 04 00 838A838A") + " 9000"
        );
        assert_eq!(r[2], "9F0F");
        assert_eq!(
            r[3],
            hex("0000 0009 6F07 04 00 14FF44 01 02 00 00") + " 9000"
        );
        assert_eq!(r[4], "082926102143658709 9000");
        assert_eq!(r[5], "9F0F");
        assert_eq!(r[6], "9000");
        assert_eq!(r[7], "0141434D45 9000");
    }

    #[test]
    fn gsm_errors() {
        let mut card = Card::new();
        let g = CardClass::Gsm;
        let r = card.run(
            RfmView::Gsm,
            &[
                rfm::read_binary(g, 0, 1).unwrap(),      // nothing selected
                rfm::select_fid(g, 0x6F46),              // not a child of the MF
                rfm::select_fid(g, 0x7FFF),              // no ADF for class A0
                rfm::get_response(g, 0x0F),              // nothing pending
                rfm::select_fid(g, 0x2FE2),              // EF ICCID
                rfm::update_binary(g, 0, &[1]).unwrap(), // never updatable
                rfm::read_binary(g, 10, 1).unwrap(),     // past the end
                rfm::read_binary(g, 8, 4).unwrap(),      // 2 octets left
                rfm::read_record(g, RecordMode::Absolute(1), 10).unwrap(), // transparent
                apdu("A0A4000102 7F20"),                 // bad P1P2
                apdu("A0A4000003 7F2000"),               // bad Lc
                apdu("A0A4000002 7F20 00"),              // Le present: header straight back
                apdu("A0440000 00"),                     // unknown INS
                apdu("B0A4000002 7F20"),                 // unknown class
            ],
        );
        assert_eq!(
            r[..9],
            ["9400", "9404", "9404", "6F00", "9F0F", "9804", "9402", "6702", "9408"]
        );
        assert_eq!(r[9], "6B00");
        assert_eq!(r[10], "6702");
        assert!(r[11].starts_with("000000007F2002") && r[11].ends_with(" 9000"));
        assert_eq!(r[12..], ["6D00", "6E00"]);
    }

    #[test]
    fn uicc_select_fcp() {
        let mut card = Card::new();
        let u = CardClass::Uicc;
        let r = card.run(
            RfmView::Gsm,
            &[
                rfm::select_fid(u, 0x7FFF),
                rfm::get_response(u, 0),
                rfm::select_fid(u, 0x6FC5),
                rfm::get_response(u, 0),
                apdu("00A4000C02 6F46"),
                rfm::read_binary(u, 0, 0).unwrap(),
                apdu("00A4040407 A0000000871002"),
                apdu("00A4040407 A0000000871004"),
                rfm::select_by_path(u, &[0x3F00, 0x7F20, 0x6F07]).unwrap(),
                apdu("00A4090C02 6F46"),
                apdu("00A40304"),
                apdu("00A4000402 7F20 00"),
                apdu("00A4050402 6F46"),
                apdu("01A4000402 6F46"),
            ],
        );
        assert!(r[0].starts_with("61"));
        let adf = h(r[1].split(' ').next().unwrap());
        assert_eq!(&adf[..6], &h("62 2C 82 02 78 21")[..]);
        assert_eq!(
            &adf[6..24],
            &h("84 10 A0000000871002FFFFFFFF8907090000")[..]
        );
        assert_eq!(r[2], "6119");
        assert_eq!(
            r[3],
            "6217 8205 42210018 08 8302 6FC5 8A01 05 8B03 6F0601 8002 00C0".replace(' ', "")
                + " 9000"
        );
        assert_eq!(r[4], "9000");
        assert_eq!(
            r[5],
            format!(
                "{} 9000",
                hex::encode_upper(b"\x01Virtual UICC\xFF\xFF\xFF\xFF")
            )
        );
        assert_eq!(r[6], "612E");
        assert_eq!(r[7], "6A82");
        assert_eq!(r[8], "6116");
        assert_eq!(r[9], "9000");
        assert!(r[10].starts_with("61"));
        assert!(r[11].starts_with("621E") && r[11].ends_with(" 9000"));
        assert_eq!(r[12..], ["6A86", "6881"]);
    }

    #[test]
    fn uicc_binary_errors() {
        let mut card = Card::new();
        let u = CardClass::Uicc;
        let r = card.run(
            RfmView::Usim,
            &[
                rfm::read_binary(u, 0, 1).unwrap(),
                rfm::select_fid(u, 0x6F07), // from ADF USIM
                rfm::read_binary(u, 0, 9).unwrap(),
                rfm::read_binary(u, 9, 1).unwrap(),
                rfm::read_binary(u, 5, 5).unwrap(),
                rfm::update_binary(u, 8, &[1, 2]).unwrap(),
                rfm::update_binary(u, 0, &h("0809101000000000000010")[..9]).unwrap(),
                rfm::read_record(u, RecordMode::Next, 0).unwrap(),
                apdu("00B0800001"),
                rfm::get_response(u, 10),
            ],
        );
        assert_eq!(
            r,
            [
                "6986",
                "6116",
                "082926102143658709 9000",
                "6B00",
                "6C04",
                "6700",
                "9000",
                "6981",
                "6A82",
                "6985"
            ]
        );
    }

    #[test]
    fn records_both_classes() {
        for class in [CardClass::Gsm, CardClass::Uicc] {
            let mut card = Card::new();
            let mut cmds = rfm::select_path(class, &[0x7F10, 0x6F3A]);
            cmds.extend([
                rfm::update_record(class, RecordMode::Absolute(2), &[0x22; 28]).unwrap(),
                rfm::read_record(class, RecordMode::Next, 28).unwrap(), // record 1
                rfm::read_record(class, RecordMode::Next, 28).unwrap(), // record 2
                rfm::read_record(class, RecordMode::Absolute(0), 28).unwrap(), // current: 2
                rfm::update_record(class, RecordMode::Previous, &[0x11; 28]).unwrap(), // 1
                rfm::read_record(class, RecordMode::Previous, 28).unwrap(), // none before 1
                rfm::read_record(class, RecordMode::Absolute(11), 28).unwrap(),
                rfm::read_record(class, RecordMode::Absolute(1), 27).unwrap(),
                rfm::update_record(class, RecordMode::Absolute(1), &[0; 27]).unwrap(),
                rfm::read_record(class, RecordMode::Absolute(1), 0).unwrap(),
                rfm::read_binary(class, 0, 1).unwrap(),
            ]);
            let r = card.run(RfmView::Gsm, &cmds);
            let n = cmds.len() - 11;
            let (not_found, le, lc, structure) = match class {
                CardClass::Gsm => ("9402", "671C", "671C", "9408"),
                CardClass::Uicc => ("6A83", "6C1C", "6700", "6981"),
            };
            let rec = |b: u8| format!("{} 9000", hex::encode_upper([b; 28]));
            assert_eq!(r[n], "9000");
            assert_eq!(r[n + 1], rec(0xFF));
            assert_eq!(r[n + 2], rec(0x22));
            assert_eq!(r[n + 3], rec(0x22));
            assert_eq!(r[n + 4], "9000");
            assert_eq!(r[n + 5], not_found);
            assert_eq!(r[n + 6], not_found);
            assert_eq!(r[n + 7], le);
            assert_eq!(r[n + 8], lc);
            assert_eq!(r[n + 9], rec(0x11));
            assert_eq!(r[n + 10], structure);
        }
        // Previous with no current record reads the last one; next past the last fails.
        let mut card = Card::new();
        let u = CardClass::Uicc;
        let mut cmds = rfm::select_path(u, &[0x7FFF, 0x6FC6]);
        cmds.push(rfm::read_record(u, RecordMode::Previous, 8).unwrap());
        cmds.push(rfm::read_record(u, RecordMode::Next, 8).unwrap());
        let r = card.run(RfmView::Usim, &cmds);
        assert!(r[r.len() - 2].ends_with("9000"));
        assert_eq!(r[r.len() - 1], "6A83");
    }

    #[test]
    fn updates_persist_between_sessions() {
        let mut card = Card::new();
        let u = CardClass::Uicc;
        let mut cmds = vec![apdu("00A4080C04 7FFF 6F46")];
        cmds.push(rfm::update_binary(u, 0, b"\x00NEW").unwrap());
        card.run(RfmView::Usim, &cmds);
        let r = card.run(
            RfmView::Gsm,
            &[
                rfm::select_fid(CardClass::Gsm, 0x7F20),
                rfm::select_fid(CardClass::Gsm, 0x6F46),
                rfm::read_binary(CardClass::Gsm, 0, 4).unwrap(),
            ],
        );
        assert_eq!(r[2], "004E4557 9000");
        assert_eq!(card.fs.changed_files(), 1);
    }
}
