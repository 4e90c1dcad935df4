//! The card's file system: one immutable template shared by every card, and a small per-card
//! copy-on-write overlay holding only the files a card has changed.
//!
//! ```text
//! MF 3F00
//! ├── EF ICCID 2FE2            transparent 10 (from the card's ICCID, read-only)
//! ├── DF TELECOM 7F10
//! │   ├── EF ADN 6F3A          linear fixed 10 x 28
//! │   └── EF SMS 6F3C          linear fixed 10 x 176
//! ├── DF GSM 7F20
//! │   ├── EF IMSI 6F07         transparent 9 (from the card's IMSI)   ─┐
//! │   ├── EF SPN 6F46          transparent 17                          │ same storage as the
//! │   ├── EF LOCI 6F7E         transparent 11                          │ ADF USIM EFs of the
//! │   ├── EF PLMNwAcT 6F60     transparent 40 (8 entries of 5)         │ same name
//! │   ├── EF HPPLMN 6F31       transparent 1                          ─┘
//! │   └── EF FPLMN 6F7B        transparent 12
//! └── ADF USIM (AID A0000000871002..., FID 7FFF)
//!     ├── EF IMSI 6F07, EF SPN 6F46, EF LOCI 6F7E, EF PLMNwAcT 6F60, EF HPPLMN 6F31
//!     ├── EF PNN 6FC5          linear fixed 8 x 24
//!     └── EF OPL 6FC6          linear fixed 8 x 8
//! ```
//! DF GSM's IMSI, SPN, LOCI, PLMNwAcT and HPPLMN share their contents with the ADF USIM's, as
//! on UICCs that offer GSM access to the USIM's files. EF PLMNwAcT (TS 31.102 4.2.5, TS 51.011
//! 10.3.35) has the minimum size of 8 entries, each `FFFFFF 0000` (no PLMN) at first; EF
//! HPPLMN (TS 31.102 4.2.6) starts at 05 (a search every 5 x 6 minutes).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::digits::{iccid_ef, imsi_ef, Digits};

/// Index of a file in the template.
pub(crate) type NodeId = u16;

/// AID of the ADF USIM: RID A000000087, application code 1002 (TS 101 220 annex E), then an
/// example country/provider/application-provider part.
pub const USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x89, 0x07, 0x09, 0x00, 0x00,
];

/// FID that names the current application's ADF (TS 102 221 clause 8.4.1).
pub const FID_ADF: u16 = 0x7FFF;
/// FID of the MF.
pub const FID_MF: u16 = 0x3F00;

/// How an EF's content is organised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileStructure {
    /// A string of octets (READ/UPDATE BINARY).
    Transparent {
        /// File size in octets.
        size: u16,
    },
    /// Records of one length (READ/UPDATE RECORD).
    LinearFixed {
        /// Record length in octets.
        record_len: u8,
        /// Number of records.
        records: u8,
    },
}

impl FileStructure {
    /// Size of the file body in octets.
    pub fn size(self) -> usize {
        match self {
            Self::Transparent { size } => usize::from(size),
            Self::LinearFixed {
                record_len,
                records,
            } => usize::from(record_len) * usize::from(records),
        }
    }
}

/// What a template node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeKind {
    Mf,
    Df,
    Adf(&'static [u8]),
    Ef(FileStructure),
}

impl NodeKind {
    pub fn is_df(self) -> bool {
        !matches!(self, NodeKind::Ef(_))
    }
}

/// Content of an EF before the card changes it.
#[derive(Debug, Clone, Copy)]
enum Initial {
    /// These octets, then FF to the end of the file.
    Bytes(&'static [u8]),
    /// Every record starts with these octets, then FF.
    EachRecord(&'static [u8]),
    /// From the card's IMSI.
    Imsi,
    /// From the card's ICCID.
    Iccid,
}

/// One file of the template.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub fid: u16,
    pub parent: Option<NodeId>,
    pub kind: NodeKind,
    /// Where the content lives (this node, or the node it shares content with).
    pub storage: NodeId,
    initial: Initial,
    /// TS 51.011 access condition octet 9 (READ high nibble, UPDATE low nibble).
    pub access: u8,
    pub children: Vec<NodeId>,
}

impl Node {
    /// Whether remote UPDATE is allowed (access condition UPDATE is not NEVer).
    pub fn updatable(&self) -> bool {
        self.access & 0x0F != 0x0F
    }
}

/// The shared file-system template.
#[derive(Debug)]
pub(crate) struct Template {
    pub nodes: Vec<Node>,
    pub mf: NodeId,
    pub adf_usim: NodeId,
}

/// Initial EF SPN: display condition 01, "Virtual UICC", FF-filled (TS 31.102 4.2.12).
const SPN: &[u8] = b"\x01Virtual UICC";
/// Initial EF LOCI: TMSI FFFFFFFF, LAI deleted (PLMN FFFFFF, LAC FFFE), TMSI TIME FF,
/// location update status 01 "not updated" (TS 31.102 4.2.17).
const LOCI: &[u8] = &[
    0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0x01,
];
/// Each EF SMS record starts with status 00 "free space" (TS 51.011 10.5.3).
const SMS_FREE: &[u8] = &[0x00];
/// Initial EF PLMNwAcT: 8 unused entries, PLMN FFFFFF and no access technology.
const PLMN_W_ACT: &[u8] = &[
    0xFF, 0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0xFF,
    0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0xFF, 0xFF,
    0xFF, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0x00, 0x00,
];
/// Initial EF HPPLMN: search period 5 (x 6 minutes).
const HPPLMN: &[u8] = &[0x05];

impl Template {
    fn build() -> Self {
        let mut t = Template {
            nodes: Vec::new(),
            mf: 0,
            adf_usim: 0,
        };
        let ts = |size| NodeKind::Ef(FileStructure::Transparent { size });
        let lf = |record_len, records| {
            NodeKind::Ef(FileStructure::LinearFixed {
                record_len,
                records,
            })
        };
        let mf = t.add(None, FID_MF, NodeKind::Mf, "MF", Initial::Bytes(&[]), 0x00);
        t.mf = mf;
        t.add(Some(mf), 0x2FE2, ts(10), "EF ICCID", Initial::Iccid, 0x0F);
        let telecom = t.add(
            Some(mf),
            0x7F10,
            NodeKind::Df,
            "DF TELECOM",
            Initial::Bytes(&[]),
            0,
        );
        t.add(
            Some(telecom),
            0x6F3A,
            lf(28, 10),
            "EF ADN",
            Initial::Bytes(&[]),
            0x11,
        );
        t.add(
            Some(telecom),
            0x6F3C,
            lf(176, 10),
            "EF SMS",
            Initial::EachRecord(SMS_FREE),
            0x11,
        );
        let adf = t.add(
            Some(mf),
            FID_ADF,
            NodeKind::Adf(&USIM_AID),
            "ADF USIM",
            Initial::Bytes(&[]),
            0,
        );
        t.adf_usim = adf;
        let u_imsi = t.add(Some(adf), 0x6F07, ts(9), "EF IMSI", Initial::Imsi, 0x14);
        let u_spn = t.add(
            Some(adf),
            0x6F46,
            ts(17),
            "EF SPN",
            Initial::Bytes(SPN),
            0x04,
        );
        let u_loci = t.add(
            Some(adf),
            0x6F7E,
            ts(11),
            "EF LOCI",
            Initial::Bytes(LOCI),
            0x11,
        );
        let u_plmn = t.add(
            Some(adf),
            0x6F60,
            ts(40),
            "EF PLMNwAcT",
            Initial::Bytes(PLMN_W_ACT),
            0x11,
        );
        let u_hpplmn = t.add(
            Some(adf),
            0x6F31,
            ts(1),
            "EF HPPLMN",
            Initial::Bytes(HPPLMN),
            0x14,
        );
        t.add(
            Some(adf),
            0x6FC5,
            lf(24, 8),
            "EF PNN",
            Initial::Bytes(&[]),
            0x04,
        );
        t.add(
            Some(adf),
            0x6FC6,
            lf(8, 8),
            "EF OPL",
            Initial::Bytes(&[]),
            0x04,
        );
        let gsm = t.add(
            Some(mf),
            0x7F20,
            NodeKind::Df,
            "DF GSM",
            Initial::Bytes(&[]),
            0,
        );
        let g_imsi = t.add(Some(gsm), 0x6F07, ts(9), "EF IMSI", Initial::Imsi, 0x14);
        let g_spn = t.add(
            Some(gsm),
            0x6F46,
            ts(17),
            "EF SPN",
            Initial::Bytes(SPN),
            0x04,
        );
        let g_loci = t.add(
            Some(gsm),
            0x6F7E,
            ts(11),
            "EF LOCI",
            Initial::Bytes(LOCI),
            0x11,
        );
        let g_plmn = t.add(
            Some(gsm),
            0x6F60,
            ts(40),
            "EF PLMNwAcT",
            Initial::Bytes(PLMN_W_ACT),
            0x11,
        );
        let g_hpplmn = t.add(
            Some(gsm),
            0x6F31,
            ts(1),
            "EF HPPLMN",
            Initial::Bytes(HPPLMN),
            0x14,
        );
        t.add(
            Some(gsm),
            0x6F7B,
            ts(12),
            "EF FPLMN",
            Initial::Bytes(&[]),
            0x11,
        );
        for (g, u) in [
            (g_imsi, u_imsi),
            (g_spn, u_spn),
            (g_loci, u_loci),
            (g_plmn, u_plmn),
            (g_hpplmn, u_hpplmn),
        ] {
            if let Some(n) = t.nodes.get_mut(usize::from(g)) {
                n.storage = u;
            }
        }
        t
    }

    fn add(
        &mut self,
        parent: Option<NodeId>,
        fid: u16,
        kind: NodeKind,
        _name: &'static str,
        initial: Initial,
        access: u8,
    ) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(Node {
            fid,
            parent,
            kind,
            storage: id,
            initial,
            access,
            children: Vec::new(),
        });
        if let Some(p) = parent.and_then(|p| self.nodes.get_mut(usize::from(p))) {
            p.children.push(id);
        }
        id
    }

    /// The template every card shares.
    pub fn get() -> &'static Template {
        static TEMPLATE: OnceLock<Template> = OnceLock::new();
        TEMPLATE.get_or_init(Template::build)
    }

    pub fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(usize::from(id))
    }

    /// The child of `df` with this FID.
    pub fn child(&self, df: NodeId, fid: u16) -> Option<NodeId> {
        self.node(df)?
            .children
            .iter()
            .copied()
            .find(|&c| self.node(c).is_some_and(|n| n.fid == fid))
    }

    /// The DF holding `id` (itself for a DF).
    pub fn df_of(&self, id: NodeId) -> NodeId {
        match self.node(id) {
            Some(n) if !n.kind.is_df() => n.parent.unwrap_or(self.mf),
            _ => id,
        }
    }

    /// Resolves a path of FIDs from the MF (a leading 3F00 is optional; 7FFF names the ADF).
    pub fn resolve_path(&self, path: &[u16]) -> Option<NodeId> {
        let rest = match path.split_first() {
            Some((&FID_MF, rest)) => rest,
            _ => path,
        };
        let mut at = self.mf;
        for &fid in rest {
            at = match fid {
                FID_ADF if at == self.mf => self.adf_usim,
                _ => self.child(at, fid)?,
            };
        }
        Some(at)
    }

    /// Whether `aid` (5..=16 octets) selects the ADF USIM: a right-truncated match
    /// (TS 102 221 clause 8.5.2 partial DF name).
    pub fn usim_matches(&self, aid: &[u8]) -> bool {
        aid.len() >= 5 && USIM_AID.starts_with(aid)
    }
}

/// A card's changes to the template: nothing until the first UPDATE, then only the files changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileSystem {
    changed: Option<Box<Changes>>,
}

/// Changed files by storage node; boxed so that an unchanged card pays one pointer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Changes(BTreeMap<NodeId, Box<[u8]>>);

impl FileSystem {
    /// The content of EF `id` (whole file, records back to back).
    pub fn content(&self, id: NodeId, iccid: Digits, imsi: Digits) -> Cow<'_, [u8]> {
        let t = Template::get();
        let Some(node) = t.node(id) else {
            return Cow::Borrowed(&[]);
        };
        if let Some(c) = self.changed.as_ref().and_then(|m| m.0.get(&node.storage)) {
            return Cow::Borrowed(c);
        }
        let NodeKind::Ef(structure) = node.kind else {
            return Cow::Borrowed(&[]);
        };
        let size = structure.size();
        let storage = t.node(node.storage).unwrap_or(node);
        let mut out = vec![0xFF; size];
        match storage.initial {
            Initial::Bytes(b) => copy_into(&mut out, b),
            Initial::EachRecord(b) => {
                if let FileStructure::LinearFixed { record_len, .. } = structure {
                    for rec in out.chunks_mut(usize::from(record_len).max(1)) {
                        copy_into(rec, b);
                    }
                }
            }
            Initial::Imsi => copy_into(&mut out, &imsi_ef(imsi)),
            Initial::Iccid => copy_into(&mut out, &iccid_ef(iccid)),
        }
        Cow::Owned(out)
    }

    /// Writes `data` at `offset` of EF `id`; the caller has checked the bounds.
    pub fn write(&mut self, id: NodeId, offset: usize, data: &[u8], iccid: Digits, imsi: Digits) {
        let storage = Template::get().node(id).map_or(id, |n| n.storage);
        let current = self.content(id, iccid, imsi).into_owned();
        let map = self.changed.get_or_insert_with(Default::default);
        let entry = map
            .0
            .entry(storage)
            .or_insert_with(|| current.into_boxed_slice());
        if let Some(dst) = entry.get_mut(offset..offset.saturating_add(data.len())) {
            dst.copy_from_slice(data);
        }
    }

    /// Number of files this card has changed.
    pub fn changed_files(&self) -> usize {
        self.changed.as_ref().map_or(0, |m| m.0.len())
    }

    /// Octets held for changed files (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.changed.as_ref().map_or(0, |m| {
            m.0.values().map(|v| v.len() + 48).sum::<usize>() + std::mem::size_of_val(&**m)
        })
    }
}

fn copy_into(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (Digits, Digits) {
        (
            Digits::parse("8949000000000000001").unwrap(),
            Digits::parse("262011234567890").unwrap(),
        )
    }

    #[test]
    fn template_shape() {
        let t = Template::get();
        let spn = t.resolve_path(&[0x3F00, 0x7F20, 0x6F46]).unwrap();
        let uspn = t.resolve_path(&[0x7FFF, 0x6F46]).unwrap();
        assert_ne!(spn, uspn);
        assert_eq!(t.node(spn).unwrap().storage, uspn);
        assert!(t.resolve_path(&[0x7F20, 0x6FC5]).is_none());
        assert!(t.resolve_path(&[0x7FFF, 0x6FC5]).is_some());
        assert_eq!(t.resolve_path(&[]), Some(t.mf));
        assert_eq!(t.df_of(spn), t.resolve_path(&[0x7F20]).unwrap());
        assert!(t.usim_matches(&[0xA0, 0, 0, 0, 0x87, 0x10, 0x02]));
        assert!(!t.usim_matches(&[0xA0, 0, 0, 0, 0x87, 0x10, 0x04]));
        assert!(!t.usim_matches(&[0xA0, 0, 0, 0]));
    }

    #[test]
    fn copy_on_write_and_linked_storage() {
        let (iccid, imsi) = ids();
        let t = Template::get();
        let gspn = t.resolve_path(&[0x7F20, 0x6F46]).unwrap();
        let uspn = t.resolve_path(&[0x7FFF, 0x6F46]).unwrap();
        let mut fs = FileSystem::default();
        assert_eq!(fs.changed_files(), 0);
        assert_eq!(&fs.content(gspn, iccid, imsi)[..13], SPN);
        fs.write(gspn, 1, b"ACME", iccid, imsi);
        assert_eq!(fs.changed_files(), 1);
        assert_eq!(&fs.content(uspn, iccid, imsi)[..5], b"\x01ACME");
        assert_eq!(fs.content(uspn, iccid, imsi).len(), 17);
        // Another card is untouched.
        assert_eq!(
            &FileSystem::default().content(uspn, iccid, imsi)[..5],
            b"\x01Virt"
        );
    }

    #[test]
    fn generated_contents() {
        let (iccid, imsi) = ids();
        let t = Template::get();
        let fs = FileSystem::default();
        let imsi_id = t.resolve_path(&[0x7F20, 0x6F07]).unwrap();
        assert_eq!(
            hex::encode(fs.content(imsi_id, iccid, imsi)),
            "082926102143658709"
        );
        let iccid_id = t.resolve_path(&[0x2FE2]).unwrap();
        assert_eq!(
            hex::encode(fs.content(iccid_id, iccid, imsi)),
            "989400000000000000f1"
        );
        let sms = t.resolve_path(&[0x7F10, 0x6F3C]).unwrap();
        let c = fs.content(sms, iccid, imsi);
        assert_eq!(c.len(), 1760);
        assert_eq!((c[0], c[1], c[176], c[177]), (0x00, 0xFF, 0x00, 0xFF));
    }
}
