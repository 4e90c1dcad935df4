//! Remote Application Management command builders: GlobalPlatform Card Specification 2.3
//! clause 11 commands as TS 102 226 clause 8 uses them, with the UICC toolkit install
//! parameters of TS 102 226 clause 8.2.1.3.2.

use std::fmt;

use super::apdu::{CApdu, MAX_SHORT_DATA};
use super::ber::{parse_ber_length, push_ber_length, push_tlv, Reader};
use super::command::ScriptFormat;
use super::error::ScriptError;

/// GlobalPlatform proprietary class byte.
pub const GP_CLA: u8 = 0x80;
/// INSTALL instruction.
pub const INS_INSTALL: u8 = 0xE6;
/// LOAD instruction.
pub const INS_LOAD: u8 = 0xE8;
/// DELETE instruction.
pub const INS_DELETE: u8 = 0xE4;
/// GET STATUS instruction.
pub const INS_GET_STATUS: u8 = 0xF2;

/// An application identifier (ISO/IEC 7816-5): 5 to 16 octets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Aid(Vec<u8>);

impl Aid {
    /// An AID from its octets; fails unless 5..=16 long.
    pub fn new(bytes: &[u8]) -> Result<Self, ScriptError> {
        if (5..=16).contains(&bytes.len()) {
            Ok(Aid(bytes.to_vec()))
        } else {
            Err(ScriptError::AidLength(bytes.len()))
        }
    }

    /// An AID from hex digits (spaces allowed).
    pub fn from_hex(s: &str) -> Result<Self, ScriptError> {
        let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = hex::decode(&clean).map_err(|_| ScriptError::OutOfRange {
            field: "AID hex digits",
            value: u32::try_from(clean.len()).unwrap_or(u32::MAX),
            range: "an even number of hex digits",
        })?;
        Aid::new(&bytes)
    }

    /// The AID octets.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Aid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode_upper(&self.0))
    }
}

/// Appends a one-octet length and the value.
fn push_lv(out: &mut Vec<u8>, field: &'static str, value: &[u8]) -> Result<(), ScriptError> {
    let len = u8::try_from(value.len()).map_err(|_| ScriptError::TooLong {
        field,
        len: value.len(),
        max: 255,
    })?;
    out.push(len);
    out.extend_from_slice(value);
    Ok(())
}

fn gp_command(ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> Result<CApdu, ScriptError> {
    // GP Card Spec 2.3 gives Le '00' for INSTALL, LOAD, DELETE and GET STATUS; the compact
    // format drops it (T=0 mapping).
    CApdu::new(GP_CLA, ins, p1, p2, data, Some(0x00))
}

/// Quantity as GP memory parameters code it: 2 octets, or 4 when above 0xFFFF (GP 2.3 11.5.2.3.7).
fn quantity_bytes(v: u32) -> Vec<u8> {
    match u16::try_from(v) {
        Ok(short) => short.to_be_bytes().to_vec(),
        Err(_) => v.to_be_bytes().to_vec(),
    }
}

/// System-specific load parameters (GP Card Spec 2.3 table 11-49, tag `EF`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadParameters {
    /// `C6`: non-volatile code minimum memory requirement.
    pub non_volatile_code: Option<u32>,
    /// `C7`: volatile data minimum memory requirement.
    pub volatile_data: Option<u32>,
    /// `C8`: non-volatile data minimum memory requirement.
    pub non_volatile_data: Option<u32>,
}

impl LoadParameters {
    /// `EF L [C6 ..] [C7 ..] [C8 ..]`, or nothing if no field is set.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ScriptError> {
        let mut inner = Vec::new();
        for (tag, v) in [
            (0xC6, self.non_volatile_code),
            (0xC7, self.volatile_data),
            (0xC8, self.non_volatile_data),
        ] {
            if let Some(v) = v {
                push_tlv(&mut inner, tag, &quantity_bytes(v))?;
            }
        }
        let mut out = Vec::new();
        if !inner.is_empty() {
            push_tlv(&mut out, 0xEF, &inner)?;
        }
        Ok(out)
    }
}

/// INSTALL [for load] (GP Card Spec 2.3 11.5.2.3.1): `80 E6 02 00 Lc` load file AID, security
/// domain AID (empty: the card picks), load file data block hash (may be empty), load
/// parameters (may be empty, see [`LoadParameters`]), empty load token, `Le 00`.
pub fn install_for_load(
    load_file_aid: &Aid,
    security_domain_aid: Option<&Aid>,
    hash: &[u8],
    load_parameters: &[u8],
) -> Result<CApdu, ScriptError> {
    let mut data = Vec::new();
    push_lv(&mut data, "load file AID", load_file_aid.as_bytes())?;
    push_lv(
        &mut data,
        "security domain AID",
        security_domain_aid.map(Aid::as_bytes).unwrap_or_default(),
    )?;
    push_lv(&mut data, "load file data block hash", hash)?;
    push_lv(&mut data, "load parameters", load_parameters)?;
    push_lv(&mut data, "load token", &[])?;
    check_data("INSTALL [for load] data", &data)?;
    gp_command(INS_INSTALL, 0x02, 0x00, data)
}

fn check_data(field: &'static str, data: &[u8]) -> Result<(), ScriptError> {
    if data.len() > MAX_SHORT_DATA {
        return Err(ScriptError::TooLong {
            field,
            len: data.len(),
            max: MAX_SHORT_DATA,
        });
    }
    Ok(())
}

/// The LOAD commands for `load_file` in blocks of `block_size` (1..=255) data octets
/// (GP Card Spec 2.3 11.6).
///
/// The Load File Data Block `C4 L load_file` is cut into blocks; P1 is `80` on the last block
/// and `00` before it, P2 numbers blocks from 0. At most 256 blocks.
pub fn load_blocks(load_file: &[u8], block_size: usize) -> Result<Vec<CApdu>, ScriptError> {
    if !(1..=MAX_SHORT_DATA).contains(&block_size) {
        return Err(ScriptError::OutOfRange {
            field: "LOAD block size",
            value: u32::try_from(block_size).unwrap_or(u32::MAX),
            range: "1..=255",
        });
    }
    if load_file.is_empty() {
        return Err(ScriptError::Empty("load file"));
    }
    let mut stream = vec![0xC4];
    push_ber_length(&mut stream, load_file.len())?;
    stream.extend_from_slice(load_file);
    let count = stream.len().div_ceil(block_size);
    if count > 256 {
        return Err(ScriptError::TooManyBlocks(count));
    }
    stream
        .chunks(block_size)
        .enumerate()
        .map(|(i, chunk)| {
            let p1 = if i + 1 == count { 0x80 } else { 0x00 };
            gp_command(INS_LOAD, p1, i as u8, chunk.to_vec())
        })
        .collect()
}

/// Octets a script holding only a LOAD of `block_size` data octets takes in `format`.
fn load_script_size(block_size: usize, format: ScriptFormat) -> usize {
    // Data size is at most 255 here, so the constructor cannot fail.
    let size = match gp_command(INS_LOAD, 0x00, 0x00, vec![0; block_size]) {
        Ok(apdu) => format.command_size(&apdu),
        Err(_) => usize::MAX / 2,
    };
    size + format.template_overhead(size)
}

/// The biggest LOAD block size (data octets, up to 255) such that a script in `format` holding
/// one LOAD command fits `budget` octets.
///
/// Compact: `5 + block` (Le dropped). Expanded: the `22` TLV around `80 E8 P1 P2 Lc data 00`,
/// inside `AA L` or `AE 80 .. 00 00`.
pub fn max_load_block_size(budget: usize, format: ScriptFormat) -> Result<usize, ScriptError> {
    (1..=MAX_SHORT_DATA)
        .rev()
        .find(|&d| load_script_size(d, format) <= budget)
        .ok_or(ScriptError::BlockSize {
            block_size: 1,
            budget,
        })
}

/// LOAD commands for `load_file` with the biggest block size that fits `budget` in `format`
/// (one LOAD per script; see [`max_load_block_size`]).
pub fn load_commands(
    load_file: &[u8],
    format: ScriptFormat,
    budget: usize,
) -> Result<Vec<CApdu>, ScriptError> {
    load_blocks(load_file, max_load_block_size(budget, format)?)
}

/// Application privileges (GP Card Spec 2.3 11.1.2): one octet, or three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Privileges {
    /// The one-octet form (first privilege byte only).
    Short(u8),
    /// The three-octet form.
    Full([u8; 3]),
}

impl Privileges {
    /// No privileges.
    pub const NONE: Privileges = Privileges::Short(0x00);
    /// Byte 1 b8: Security Domain.
    pub const SECURITY_DOMAIN: u8 = 0x80;
    /// Byte 1 b7 (with b8): DAP Verification.
    pub const DAP_VERIFICATION: u8 = 0x40;
    /// Byte 1 b6 (with b8): Delegated Management.
    pub const DELEGATED_MANAGEMENT: u8 = 0x20;
    /// Byte 1 b5: Card Lock.
    pub const CARD_LOCK: u8 = 0x10;
    /// Byte 1 b4: Card Terminate.
    pub const CARD_TERMINATE: u8 = 0x08;
    /// Byte 1 b3: Card Reset (default selected).
    pub const CARD_RESET: u8 = 0x04;
    /// Byte 1 b2: CVM Management.
    pub const CVM_MANAGEMENT: u8 = 0x02;
    /// Byte 1 b1 (with b8 and b7): Mandated DAP Verification.
    pub const MANDATED_DAP_VERIFICATION: u8 = 0x01;

    /// The encoded privileges.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Privileges::Short(b) => std::slice::from_ref(b),
            Privileges::Full(b) => b,
        }
    }
}

/// One menu entry reserved for a toolkit application (TS 102 226 8.2.1.3.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MenuEntry {
    /// Position of the entry in the menu.
    pub position: u8,
    /// Menu identifier (`00`: don't care).
    pub identifier: u8,
}

/// Toolkit application parameters (TS 102 226 8.2.1.3.2.1 and 8.2.1.3.2.2.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolkitParameters {
    /// Access domain (SIM format only; `00` full access, `FF` none).
    pub access_domain: Vec<u8>,
    /// Priority level of the toolkit application instance.
    pub priority: u8,
    /// Maximum number of timers.
    pub max_timers: u8,
    /// Maximum text length of a menu entry.
    pub max_menu_text_length: u8,
    /// Menu entries (their count is the "maximum number of menu entries").
    pub menu_entries: Vec<MenuEntry>,
    /// Maximum number of BIP channels.
    pub max_channels: u8,
    /// Minimum security level (MSL) for the TARs.
    pub minimum_security_level: Vec<u8>,
    /// TAR values of the instance.
    pub tar_values: Vec<[u8; 3]>,
    /// Maximum number of services (UICC format only).
    pub max_services: u8,
}

impl ToolkitParameters {
    fn push_common(&self, out: &mut Vec<u8>) -> Result<(), ScriptError> {
        let entries = u8::try_from(self.menu_entries.len()).map_err(|_| ScriptError::TooLong {
            field: "menu entries",
            len: self.menu_entries.len(),
            max: 255,
        })?;
        out.extend_from_slice(&[
            self.priority,
            self.max_timers,
            self.max_menu_text_length,
            entries,
        ]);
        for e in &self.menu_entries {
            out.extend_from_slice(&[e.position, e.identifier]);
        }
        out.push(self.max_channels);
        push_lv(out, "minimum security level", &self.minimum_security_level)?;
        let tars: Vec<u8> = self.tar_values.iter().flatten().copied().collect();
        push_lv(out, "TAR values", &tars)
    }

    /// Value of tag `CA`, "SIM File Access and Toolkit Application Specific Parameters"
    /// (TS 102 226 8.2.1.3.2.1): LV access domain, priority, timers, menu text length, number of
    /// menu entries, (position, identifier) pairs, channels, LV MSL, LV TARs.
    pub fn to_sim_bytes(&self) -> Result<Vec<u8>, ScriptError> {
        let mut out = Vec::new();
        push_lv(&mut out, "access domain", &self.access_domain)?;
        self.push_common(&mut out)?;
        Ok(out)
    }

    /// Value of tag `80` inside `EA`, "UICC Toolkit Application specific parameters"
    /// (TS 102 226 8.2.1.3.2.2.1): as [`ToolkitParameters::to_sim_bytes`] without the access
    /// domain, plus the maximum number of services.
    pub fn to_uicc_bytes(&self) -> Result<Vec<u8>, ScriptError> {
        let mut out = Vec::new();
        self.push_common(&mut out)?;
        out.push(self.max_services);
        Ok(out)
    }

    fn read_common(r: &mut Reader<'_>, access_domain: Vec<u8>) -> Result<Self, ScriptError> {
        let priority = r.u8("priority level")?;
        let max_timers = r.u8("maximum number of timers")?;
        let max_menu_text_length = r.u8("maximum menu entry text length")?;
        let n = r.u8("maximum number of menu entries")?;
        let mut menu_entries = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let position = r.u8("menu entry position")?;
            let identifier = r.u8("menu entry identifier")?;
            menu_entries.push(MenuEntry {
                position,
                identifier,
            });
        }
        let max_channels = r.u8("maximum number of channels")?;
        let minimum_security_level = r.lv("minimum security level")?.to_vec();
        let tar_bytes = r.lv("TAR values")?;
        let chunks = tar_bytes.chunks_exact(3);
        if !chunks.remainder().is_empty() {
            return Err(ScriptError::OutOfRange {
                field: "TAR values length",
                value: u32::try_from(tar_bytes.len()).unwrap_or(u32::MAX),
                range: "a multiple of 3",
            });
        }
        Ok(ToolkitParameters {
            access_domain,
            priority,
            max_timers,
            max_menu_text_length,
            menu_entries,
            max_channels,
            minimum_security_level,
            tar_values: chunks
                .map(|c| [c.first(), c.get(1), c.get(2)].map(|b| b.copied().unwrap_or_default()))
                .collect(),
            max_services: 0,
        })
    }

    /// Parses the value of tag `CA` (see [`ToolkitParameters::to_sim_bytes`]).
    pub fn parse_sim(bytes: &[u8]) -> Result<Self, ScriptError> {
        let mut r = Reader::new(bytes);
        let access_domain = r.lv("access domain")?.to_vec();
        let p = ToolkitParameters::read_common(&mut r, access_domain)?;
        trailing(&r, "SIM toolkit parameters")?;
        Ok(p)
    }

    /// Parses the value of tag `80` in `EA` (see [`ToolkitParameters::to_uicc_bytes`]).
    pub fn parse_uicc(bytes: &[u8]) -> Result<Self, ScriptError> {
        let mut r = Reader::new(bytes);
        let mut p = ToolkitParameters::read_common(&mut r, Vec::new())?;
        p.max_services = r.u8("maximum number of services")?;
        trailing(&r, "UICC toolkit parameters")?;
        Ok(p)
    }
}

fn trailing(r: &Reader<'_>, context: &'static str) -> Result<(), ScriptError> {
    match r.remaining().len() {
        0 => Ok(()),
        count => Err(ScriptError::TrailingOctets { context, count }),
    }
}

/// A GlobalPlatform Card Specification version, as a card's profile states it (`2.1.1`,
/// `2.2.1`, `2.3.1`, ...). What differs between versions here: the install parameters' length
/// coding and the GET STATUS response formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GpVersion(pub u8, pub u8, pub u8);

impl GpVersion {
    /// GP 2.1.1: GET STATUS answers only in the P2 `00` format.
    pub const V2_1_1: GpVersion = GpVersion(2, 1, 1);
    /// GP 2.2: first with the TLV GET STATUS format (P2 `02`).
    pub const V2_2: GpVersion = GpVersion(2, 2, 0);
    /// GP 2.3.1: first to read the install parameters' length as BER.
    pub const V2_3_1: GpVersion = GpVersion(2, 3, 1);

    /// Parses `2.3.1`, `2.2` (1 to 3 dot-separated numbers, major version 2).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split('.').map(|p| p.parse::<u8>().ok());
        let major = parts.next()??;
        let minor = parts.next().unwrap_or(Some(0))?;
        let patch = parts.next().unwrap_or(Some(0))?;
        (major == 2 && parts.next().is_none()).then_some(GpVersion(major, minor, patch))
    }

    /// Whether the install parameters' length is BER-coded (`81 xx` from 128 octets on; GP
    /// Card Spec 2.3.1 table 11-49); before 2.3.1 it is a single octet.
    pub fn ber_install_parameters_length(self) -> bool {
        self >= GpVersion::V2_3_1
    }

    /// The GET STATUS response format the card answers: TLV (P2 `02`) from GP 2.2 on, the
    /// GP 2.1.1 format (P2 `00`) before.
    pub fn status_format(self) -> StatusFormat {
        if self >= GpVersion::V2_2 {
            StatusFormat::Tlv
        } else {
            StatusFormat::Legacy
        }
    }
}

impl Default for GpVersion {
    /// GP 2.3.1, the version these builders follow.
    fn default() -> Self {
        GpVersion::V2_3_1
    }
}

impl fmt::Display for GpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// One UICC file system an application is granted access to: an entry of the "UICC Access
/// Application specific parameters" (tag `81` in `EA`) or "UICC Administrative Access
/// Application specific parameters" (tag `82`), TS 102 226 8.2.1.3.2.2: LV file system AID
/// (empty: the UICC shared file system under the MF, else an ADF), LV access domain, LV access
/// domain DAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAccess {
    /// The ADF's AID; `None` for the UICC shared file system.
    pub file_system: Option<Aid>,
    /// Access domain: `00` full access, `FF` no access, `02 xx xx xx` UICC access mechanism
    /// (TS 102 226 8.2.1.3.2.3, the same coding as the SIM format's access domain).
    pub access_domain: Vec<u8>,
    /// Access domain DAP (usually empty).
    pub dap: Vec<u8>,
}

impl FileAccess {
    /// Full access (`00`) to the UICC shared file system or to one ADF.
    pub fn full(file_system: Option<Aid>) -> Self {
        FileAccess {
            file_system,
            access_domain: vec![ACCESS_FULL],
            dap: Vec::new(),
        }
    }

    /// The concatenated entries.
    pub fn encode_all(entries: &[FileAccess]) -> Result<Vec<u8>, ScriptError> {
        let mut out = Vec::new();
        for e in entries {
            if e.access_domain.is_empty() {
                return Err(ScriptError::Empty("access domain"));
            }
            push_lv(
                &mut out,
                "UICC file system AID",
                e.file_system
                    .as_ref()
                    .map(Aid::as_bytes)
                    .unwrap_or_default(),
            )?;
            push_lv(&mut out, "access domain", &e.access_domain)?;
            push_lv(&mut out, "access domain DAP", &e.dap)?;
        }
        Ok(out)
    }

    /// Parses the value of tag `81` or `82` (one or more entries).
    pub fn parse_all(bytes: &[u8]) -> Result<Vec<FileAccess>, ScriptError> {
        let mut r = Reader::new(bytes);
        let mut out = Vec::new();
        while !r.is_empty() {
            let fs = r.lv("UICC file system AID")?;
            let file_system = if fs.is_empty() {
                None
            } else {
                Some(Aid::new(fs)?)
            };
            let access_domain = r.lv("access domain")?.to_vec();
            if access_domain.is_empty() {
                return Err(ScriptError::Empty("access domain"));
            }
            let dap = r.lv("access domain DAP")?.to_vec();
            out.push(FileAccess {
                file_system,
                access_domain,
                dap,
            });
        }
        if out.is_empty() {
            return Err(ScriptError::Empty("UICC access parameters"));
        }
        Ok(out)
    }
}

/// Access domain `00`: full access to the file system (TS 102 226 8.2.1.3.2.3).
pub const ACCESS_FULL: u8 = 0x00;
/// Access domain `FF`: no access to the file system.
pub const ACCESS_NONE: u8 = 0xFF;

/// Install parameters of INSTALL [for install] (GP Card Spec 2.3 table 11-49, TS 102 226
/// 8.2.1.3.2): `C9` application specific parameters, then, if any is set, `EF` system specific
/// parameters holding `C7`, `C8` and `CA`, then, if any is set, `EA` UICC system specific
/// parameters holding `80`, `81` and `82`. `EA` is a sibling of `C9` and `EF`, never inside
/// `EF` (TS 102 226 8.2.1.3.2.2; kaoh/globalplatform and the SIMalliance profile agree).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstallParameters {
    /// `C9` value handed to the applet's install method (may be empty; the TLV is always sent).
    pub application_specific: Vec<u8>,
    /// `C7`: volatile memory quota.
    pub volatile_memory_quota: Option<u32>,
    /// `C8`: non-volatile memory quota.
    pub non_volatile_memory_quota: Option<u32>,
    /// `CA`: SIM file access and toolkit parameters (TS 102 226 8.2.1.3.2.1).
    pub sim_toolkit: Option<ToolkitParameters>,
    /// `EA { 80 }`: UICC toolkit application parameters (TS 102 226 8.2.1.3.2.2.1).
    pub uicc_toolkit: Option<ToolkitParameters>,
    /// `EA { 81 }`: UICC file access; empty: the tag is left out, which grants no access.
    pub uicc_access: Vec<FileAccess>,
    /// `EA { 82 }`: UICC administrative access (as RFM has); empty: left out.
    pub uicc_admin_access: Vec<FileAccess>,
}

impl InstallParameters {
    /// The encoded install parameters field.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ScriptError> {
        let mut out = Vec::new();
        push_tlv(&mut out, 0xC9, &self.application_specific)?;
        let mut sys = Vec::new();
        if let Some(q) = self.volatile_memory_quota {
            push_tlv(&mut sys, 0xC7, &quantity_bytes(q))?;
        }
        if let Some(q) = self.non_volatile_memory_quota {
            push_tlv(&mut sys, 0xC8, &quantity_bytes(q))?;
        }
        if let Some(t) = &self.sim_toolkit {
            push_tlv(&mut sys, 0xCA, &t.to_sim_bytes()?)?;
        }
        if !sys.is_empty() {
            push_tlv(&mut out, 0xEF, &sys)?;
        }
        let mut uicc = Vec::new();
        if let Some(t) = &self.uicc_toolkit {
            push_tlv(&mut uicc, 0x80, &t.to_uicc_bytes()?)?;
        }
        if !self.uicc_access.is_empty() {
            push_tlv(&mut uicc, 0x81, &FileAccess::encode_all(&self.uicc_access)?)?;
        }
        if !self.uicc_admin_access.is_empty() {
            push_tlv(
                &mut uicc,
                0x82,
                &FileAccess::encode_all(&self.uicc_admin_access)?,
            )?;
        }
        if !uicc.is_empty() {
            push_tlv(&mut out, 0xEA, &uicc)?;
        }
        Ok(out)
    }

    /// Parses an install parameters field as a card does: `C9`, `EF` and `EA` at the top level
    /// (other tags refused); unknown tags inside `EF` and `EA` skipped; an `EA` inside `EF`
    /// refused, since no card reads it there.
    pub fn parse(bytes: &[u8]) -> Result<Self, ScriptError> {
        let mut p = InstallParameters::default();
        let mut r = Reader::new(bytes);
        while !r.is_empty() {
            let t = r.tlv("install parameters")?;
            match t.tag {
                0xC9 => p.application_specific = t.value.to_vec(),
                0xEF => {
                    let mut s = Reader::new(t.value);
                    while !s.is_empty() {
                        let t = s.tlv("system specific parameters")?;
                        match t.tag {
                            0xC7 => p.volatile_memory_quota = Some(quantity(t.value)?),
                            0xC8 => p.non_volatile_memory_quota = Some(quantity(t.value)?),
                            0xCA => p.sim_toolkit = Some(ToolkitParameters::parse_sim(t.value)?),
                            found @ 0xEA => {
                                return Err(ScriptError::UnexpectedTag {
                                    context: "system specific parameters (EF)",
                                    expected: "C7, C8 or CA (EA belongs beside EF)",
                                    found,
                                })
                            }
                            _ => {}
                        }
                    }
                }
                0xEA => {
                    let mut u = Reader::new(t.value);
                    while !u.is_empty() {
                        let t = u.tlv("UICC system specific parameters")?;
                        match t.tag {
                            0x80 => p.uicc_toolkit = Some(ToolkitParameters::parse_uicc(t.value)?),
                            0x81 => p.uicc_access = FileAccess::parse_all(t.value)?,
                            0x82 => p.uicc_admin_access = FileAccess::parse_all(t.value)?,
                            _ => {}
                        }
                    }
                }
                found => {
                    return Err(ScriptError::UnexpectedTag {
                        context: "install parameters",
                        expected: "C9, EF or EA",
                        found,
                    })
                }
            }
        }
        Ok(p)
    }
}

/// A memory quota value: 2 or 4 octets.
fn quantity(v: &[u8]) -> Result<u32, ScriptError> {
    match v.len() {
        2 | 4 => Ok(v.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))),
        n => Err(ScriptError::OutOfRange {
            field: "memory quota length",
            value: u32::try_from(n).unwrap_or(u32::MAX),
            range: "2 or 4 octets",
        }),
    }
}

/// INSTALL [for install] (GP Card Spec 2.3 11.5.2.3.2), `80 E6 0C 00` with `make_selectable`
/// (install and make selectable) or `80 E6 04 00`: load file AID, module AID, instance AID,
/// privileges, install parameters, empty install token, `Le 00`.
///
/// The install parameters' length follows `version`: BER from GP 2.3.1 on (`81 xx` from 128
/// octets; such a card reads a bare `93` as a long-form length and answers 6A80), one octet
/// before (an older card reads `81` as the length).
pub fn install_for_install(
    version: GpVersion,
    load_file_aid: &Aid,
    module_aid: &Aid,
    instance_aid: &Aid,
    privileges: Privileges,
    parameters: &InstallParameters,
    make_selectable: bool,
) -> Result<CApdu, ScriptError> {
    let mut data = Vec::new();
    push_lv(&mut data, "load file AID", load_file_aid.as_bytes())?;
    push_lv(&mut data, "module AID", module_aid.as_bytes())?;
    push_lv(&mut data, "instance AID", instance_aid.as_bytes())?;
    push_lv(&mut data, "privileges", privileges.as_bytes())?;
    let params = parameters.to_bytes()?;
    if version.ber_install_parameters_length() {
        push_ber_length(&mut data, params.len())?;
        data.extend_from_slice(&params);
    } else {
        push_lv(&mut data, "install parameters", &params)?;
    }
    push_lv(&mut data, "install token", &[])?;
    check_data("INSTALL [for install] data", &data)?;
    let p1 = if make_selectable { 0x0C } else { 0x04 };
    gp_command(INS_INSTALL, p1, 0x00, data)
}

/// Reads the install parameters field of INSTALL [for install] data as a card of `version`
/// does (see [`install_for_install`]): BER length from GP 2.3.1 on, one octet before.
pub(crate) fn read_install_parameters_field<'a>(
    r: &mut Reader<'a>,
    version: GpVersion,
) -> Result<&'a [u8], ScriptError> {
    if version.ber_install_parameters_length() {
        let (len, used) = parse_ber_length(r.remaining())?;
        r.take(used, "install parameters length")?;
        r.take(len, "install parameters")
    } else {
        r.lv("install parameters")
    }
}

/// DELETE [card content] (GP Card Spec 2.3 11.2): `80 E4 00 P2 Lc 4F L AID Le 00`, P2 `80`
/// also deleting related objects (a load file's applications).
pub fn delete(aid: &Aid, related_objects: bool) -> Result<CApdu, ScriptError> {
    let mut data = Vec::new();
    push_tlv(&mut data, 0x4F, aid.as_bytes())?;
    let p2 = if related_objects { 0x80 } else { 0x00 };
    gp_command(INS_DELETE, 0x00, p2, data)
}

/// GET STATUS subsets (GP Card Spec 2.3 table 11-33, P1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusSubset {
    /// `80`: Issuer Security Domain only.
    IssuerSecurityDomain,
    /// `40`: applications, including security domains.
    Applications,
    /// `20`: executable load files.
    LoadFiles,
    /// `10`: executable load files and their modules.
    LoadFilesAndModules,
}

impl StatusSubset {
    /// The P1 value.
    pub fn p1(self) -> u8 {
        match self {
            StatusSubset::IssuerSecurityDomain => 0x80,
            StatusSubset::Applications => 0x40,
            StatusSubset::LoadFiles => 0x20,
            StatusSubset::LoadFilesAndModules => 0x10,
        }
    }
}

/// GET STATUS response formats (GP Card Spec 2.3 table 11-34, P2 b2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusFormat {
    /// P2 `02`: `E3` TLVs per entry (GP 2.2 on).
    Tlv,
    /// P2 `00`: the GP 2.1.1 format (LV AID, life cycle, privileges); the only one GP 2.1.1
    /// cards know, which answer 6A86 to P2 `02`.
    Legacy,
}

impl StatusFormat {
    /// P2 for the first (or all) occurrences; `| 01` asks for the next ones.
    pub fn p2(self) -> u8 {
        match self {
            StatusFormat::Tlv => 0x02,
            StatusFormat::Legacy => 0x00,
        }
    }
}

/// GET STATUS in TLV format (GP Card Spec 2.3 11.4): `80 F2 P1 P2 Lc 4F L [AID] Le 00`.
///
/// P2 is `02` (first or all occurrences) or `03` with `next` (after SW 6310). Without
/// `aid_filter` the search qualifier is `4F 00` (match all). See [`get_status_in`] for GP 2.1.1
/// cards.
pub fn get_status(subset: StatusSubset, aid_filter: Option<&Aid>, next: bool) -> CApdu {
    get_status_in(StatusFormat::Tlv, subset, aid_filter, next)
}

/// GET STATUS asking for `format`: P2 `02`/`03` (TLV) or `00`/`01` (GP 2.1.1 format).
pub fn get_status_in(
    format: StatusFormat,
    subset: StatusSubset,
    aid_filter: Option<&Aid>,
    next: bool,
) -> CApdu {
    let aid = aid_filter.map(Aid::as_bytes).unwrap_or_default();
    let mut data = Vec::with_capacity(2 + aid.len());
    data.push(0x4F);
    // An AID is at most 16 octets.
    data.push(aid.len() as u8);
    data.extend_from_slice(aid);
    let p2 = format.p2() | u8::from(next);
    CApdu::new(GP_CLA, INS_GET_STATUS, subset.p1(), p2, data, Some(0x00))
        .unwrap_or_else(|_| CApdu::case2(GP_CLA, INS_GET_STATUS, subset.p1(), p2, 0x00))
}

/// One entry of a GET STATUS response in the GP 2.1.1 format (P2 `00`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyStatusEntry {
    /// The AID.
    pub aid: Aid,
    /// Life cycle state.
    pub life_cycle: u8,
    /// First privilege octet.
    pub privileges: u8,
    /// Executable modules (P1 `10` only).
    pub modules: Vec<Aid>,
}

/// Parses GET STATUS response data in the GP 2.1.1 format (GP 2.1.1 9.4.3.1): per entry LV
/// AID, life cycle, privileges, and with P1 `10` the number of modules and their LV AIDs.
pub fn parse_legacy_status(p1: u8, data: &[u8]) -> Result<Vec<LegacyStatusEntry>, ScriptError> {
    let mut r = Reader::new(data);
    let mut out = Vec::new();
    while !r.is_empty() {
        let aid = Aid::new(r.lv("GET STATUS AID")?)?;
        let life_cycle = r.u8("life cycle state")?;
        let privileges = r.u8("privileges")?;
        let mut modules = Vec::new();
        if p1 == 0x10 {
            for _ in 0..r.u8("number of modules")? {
                modules.push(Aid::new(r.lv("module AID")?)?);
            }
        }
        out.push(LegacyStatusEntry {
            aid,
            life_cycle,
            privileges,
            modules,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::apdu::tests::h;
    use super::super::cap::tests::{build_cap_zip, expected_load_file, test_components};
    use super::super::cap::CapFile;
    use super::super::command::{pack_scripts, parse_command_script, CommandScript};
    use super::*;
    use proptest::prelude::*;

    fn aid(s: &str) -> Aid {
        Aid::from_hex(s).unwrap()
    }

    #[test]
    fn aid_lengths() {
        assert_eq!(
            Aid::new(&[0; 17]).unwrap_err().to_string(),
            "AID length 17 out of 5..=16"
        );
        assert_eq!(Aid::new(&[0; 4]), Err(ScriptError::AidLength(4)));
        assert_eq!(aid("A0 00 00 01 51").to_string(), "A000000151");
        assert!(Aid::from_hex("A0000001X1").is_err());
    }

    #[test]
    fn install_for_load_bytes() {
        let lf = aid("F00102030405");
        assert_eq!(
            install_for_load(&lf, None, &[], &[]).unwrap().to_string(),
            "80E602000B06F001020304050000000000"
        );
        let params = LoadParameters {
            non_volatile_code: Some(0x1000),
            volatile_data: Some(0x40),
            non_volatile_data: Some(0x0100),
        }
        .to_bytes()
        .unwrap();
        assert_eq!(params, h("EF0C C6021000 C7020040 C8020100"));
        assert_eq!(
            install_for_load(&lf, Some(&aid("A000000151000000")), &[], &params)
                .unwrap()
                .to_string(),
            "80E602002106F0010203040508A000000151000000000EEF0CC6021000C7020040C802010000\
             00"
        );
        assert!(LoadParameters::default().to_bytes().unwrap().is_empty());
        assert!(install_for_load(&lf, None, &[0; 250], &[]).is_err());
    }

    #[test]
    fn load_block_bytes() {
        let lf = expected_load_file();
        assert_eq!(lf.len(), 0x43);
        let blocks = load_blocks(&lf, 32).unwrap();
        let hexes: Vec<String> = blocks.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            hexes,
            [
                "80E8000020C443010010DECAFFED010204000106F00102030405020003AABBCC0400010003\
                 00",
                "80E8000120000B0107F0010203040501002A0600021111070003222222080001330500024400",
                "80E88002054409000155 00".replace(' ', "").as_str(),
            ]
        );
        // One block when it all fits: C4 43 + 67 octets = 69.
        let one = load_blocks(&lf, 255).unwrap();
        assert_eq!((one.len(), one[0].p1(), one[0].p2()), (1, 0x80, 0));
        assert_eq!(one[0].data().len(), 69);
        assert!(load_blocks(&lf, 0).is_err());
        assert!(load_blocks(&[], 10).is_err());
        // 256 blocks of 1 octet is the limit: C4 81 FD + 253 octets.
        assert_eq!(load_blocks(&[0; 253], 1).unwrap().len(), 256);
        assert_eq!(
            load_blocks(&[0; 254], 1).unwrap_err(),
            ScriptError::TooManyBlocks(257)
        );
        // Long load files get a two-octet BER length after C4.
        let big = load_blocks(&[0xAB; 300], 200).unwrap();
        assert_eq!(&big[0].data()[..4], &h("C4 82 012C AB")[..4]);
    }

    #[test]
    fn block_size_for_budget() {
        assert_eq!(max_load_block_size(20, ScriptFormat::Compact).unwrap(), 15);
        assert_eq!(
            max_load_block_size(137, ScriptFormat::Compact).unwrap(),
            132
        );
        assert_eq!(
            max_load_block_size(1000, ScriptFormat::Compact).unwrap(),
            255
        );
        // AA 81 86 | 22 81 83 | 80 E8 P1 P2 7D <125> 00 = 3 + 3 + 131 = 137.
        assert_eq!(
            max_load_block_size(137, ScriptFormat::ExpandedDefinite).unwrap(),
            125
        );
        // AE 80 | 22 81 82 | 80 E8 P1 P2 7C <124> 00 | 00 00 = 2 + 3 + 130 + 2 = 137.
        assert_eq!(
            max_load_block_size(137, ScriptFormat::ExpandedIndefinite).unwrap(),
            124
        );
        // Small budget: AA 09 22 07 80E8000001xx00 = 11 octets for one data octet.
        assert_eq!(
            max_load_block_size(11, ScriptFormat::ExpandedDefinite).unwrap(),
            1
        );
        assert_eq!(
            max_load_block_size(10, ScriptFormat::ExpandedDefinite)
                .unwrap_err()
                .to_string(),
            "block size 1 cannot fit in 10-octet budget"
        );
        let lf = expected_load_file();
        for f in [
            ScriptFormat::Compact,
            ScriptFormat::ExpandedDefinite,
            ScriptFormat::ExpandedIndefinite,
        ] {
            for budget in [13, 40, 80, 137] {
                let cmds = load_commands(&lf, f, budget).unwrap();
                for c in &cmds {
                    let len = CommandScript::from_commands([c.clone()])
                        .encoded_len(f)
                        .unwrap();
                    assert!(len <= budget, "{f:?} {budget} {len}");
                }
                // Every script holds exactly one LOAD when packed with the same budget.
                assert_eq!(pack_scripts(&cmds, f, budget).unwrap().len(), cmds.len());
            }
        }
    }

    #[test]
    fn install_for_install_bytes() {
        let lf = aid("F00102030405");
        let app = aid("F0010203040501");
        let plain = install_for_install(
            GpVersion::default(),
            &lf,
            &app,
            &app,
            Privileges::NONE,
            &InstallParameters::default(),
            true,
        )
        .unwrap();
        assert_eq!(
            plain.to_string(),
            "80E60C001D06F0010203040507F001020304050107F00102030405010100\
             02C9000000"
        );
        let not_selectable = install_for_install(
            GpVersion::default(),
            &lf,
            &app,
            &app,
            Privileges::Full([0x00, 0x00, 0x00]),
            &InstallParameters::default(),
            false,
        )
        .unwrap();
        assert_eq!((not_selectable.p1(), not_selectable.data()[23]), (0x04, 3));
    }

    fn toolkit() -> ToolkitParameters {
        ToolkitParameters {
            access_domain: vec![0x00],
            priority: 0x01,
            max_timers: 0x00,
            max_menu_text_length: 0x10,
            menu_entries: vec![MenuEntry {
                position: 0x01,
                identifier: 0x00,
            }],
            max_channels: 0x00,
            minimum_security_level: vec![],
            tar_values: vec![[0xC0, 0x00, 0x01]],
            max_services: 0,
        }
    }

    #[test]
    fn toolkit_parameters() {
        let t = toolkit();
        let sim = t.to_sim_bytes().unwrap();
        assert_eq!(sim, h("0100 01 00 10 01 0100 00 00 03C00001"));
        assert_eq!(ToolkitParameters::parse_sim(&sim).unwrap(), t);
        // The UICC form matches the ETSI UICC API test suite's "800A 01 08 0A 01 01 01 00 00 00 00".
        let u = ToolkitParameters {
            priority: 0x01,
            max_timers: 0x08,
            max_menu_text_length: 0x0A,
            menu_entries: vec![MenuEntry {
                position: 1,
                identifier: 1,
            }],
            ..ToolkitParameters::default()
        };
        assert_eq!(u.to_uicc_bytes().unwrap(), h("01080A01010100000000"));
        assert_eq!(
            ToolkitParameters::parse_uicc(&h("01080A01010100000000")).unwrap(),
            u
        );
        assert!(ToolkitParameters::parse_sim(&h("0100 01 00 10 01 0100 00 00 02C000")).is_err());
        assert!(ToolkitParameters::parse_uicc(&h("01080A01010100000000 00")).is_err());
    }

    #[test]
    fn install_with_toolkit_parameters() {
        let params = InstallParameters {
            application_specific: vec![],
            volatile_memory_quota: Some(0x0100),
            non_volatile_memory_quota: Some(0x0400),
            sim_toolkit: Some(toolkit()),
            ..InstallParameters::default()
        };
        assert_eq!(
            params.to_bytes().unwrap(),
            h("C900 EF18 C7020100 C8020400 CA0E 0100 01 00 10 01 0100 00 00 03C00001")
        );
        let lf = aid("F00102030405");
        let app = aid("F0010203040501");
        let cmd = install_for_install(
            GpVersion::default(),
            &lf,
            &app,
            &app,
            Privileges::NONE,
            &params,
            true,
        )
        .unwrap();
        // 7 + 8 + 8 + 2 + (1 + 28) + 1 = 55 = 0x37
        assert_eq!(
            cmd.to_string(),
            "80E60C003706F0010203040507F001020304050107F00102030405010100\
             1CC900EF18C7020100C8020400CA0E0100010010010100000003C000010000"
        );
        assert_eq!(quantity_bytes(0x12345), h("00012345"));
    }

    /// `EA` is a top-level sibling of `C9` and `EF` (TS 102 226 8.2.1.3.2.2): the bytes of
    /// issue 19 point 10, `C9 00 EA 0F 80 0D ..` and, with quotas, `C9 00 EF 08 C7 .. C8 ..
    /// EA 0F ..`. The old builder nested it: `C9 00 EF 11 EA 0F ..`.
    #[test]
    fn uicc_toolkit_parameters_beside_ef() {
        let t = ToolkitParameters {
            max_services: 2,
            access_domain: vec![],
            ..toolkit()
        };
        let uicc = InstallParameters {
            uicc_toolkit: Some(t.clone()),
            ..InstallParameters::default()
        };
        let toolkit_80 = "800D 01 00 10 01 0100 00 00 03C00001 02";
        assert_eq!(
            uicc.to_bytes().unwrap(),
            h(&format!("C900 EA0F {toolkit_80}"))
        );
        let with_quotas = InstallParameters {
            volatile_memory_quota: Some(0x0100),
            non_volatile_memory_quota: Some(0x0400),
            ..uicc.clone()
        };
        let bytes = with_quotas.to_bytes().unwrap();
        assert_eq!(
            bytes,
            h(&format!("C900 EF08 C7020100 C8020400 EA0F {toolkit_80}"))
        );
        assert_eq!(InstallParameters::parse(&bytes).unwrap(), with_quotas);
        // The nested form is what no card reads: refused.
        let nested = h(&format!("C900 EF11 EA0F {toolkit_80}"));
        assert!(matches!(
            InstallParameters::parse(&nested),
            Err(ScriptError::UnexpectedTag { found: 0xEA, .. })
        ));
        assert!(InstallParameters::parse(&h("C900 CA00")).is_err());
    }

    /// UICC toolkit and file access parameters as kaoh/globalplatform's test builds them
    /// (globalplatform/src/installDataTest.c, `build_uicc_system_specific_params_toolkit`):
    /// `80 0D ..` then `81 18` with full access to the UICC shared file system and to the ADF
    /// `A0000000871002FFFFFFFF8900000100`.
    #[test]
    fn uicc_file_access_parameters_match_kaoh() {
        let params = InstallParameters {
            uicc_toolkit: Some(ToolkitParameters {
                priority: 0x01,
                max_timers: 0x00,
                max_menu_text_length: 0x14,
                menu_entries: vec![],
                max_channels: 0x02,
                // MSL parameter 01 (minimum SPI1) and its value.
                minimum_security_level: vec![0x01, 0x1E],
                tar_values: vec![[0xD5, 0x01, 0x03]],
                max_services: 0x00,
                access_domain: vec![],
            }),
            uicc_access: vec![
                FileAccess::full(None),
                FileAccess::full(Some(aid("A0000000871002FFFFFFFF8900000100"))),
            ],
            ..InstallParameters::default()
        };
        let kaoh =
            "800d010014000202011e03d501030081180001000010A0000000871002FFFFFFFF8900000100010000";
        let mut expected = h("C900 EA29");
        expected.extend(h(kaoh));
        assert_eq!(params.to_bytes().unwrap(), expected);
        assert_eq!(InstallParameters::parse(&expected).unwrap(), params);
        // The GlobalPlatformPro issue 389 command's `81 18` value parses the same way.
        let gppro =
            FileAccess::parse_all(&h("0001000010A0000000871002FFFFFFFF8907090000010000")).unwrap();
        assert_eq!(gppro.len(), 2);
        assert_eq!(gppro[0], FileAccess::full(None));
        assert_eq!(
            gppro[1].file_system,
            Some(aid("A0000000871002FFFFFFFF8907090000"))
        );
        assert!(FileAccess::parse_all(&h("00 00 00")).is_err());
        assert!(FileAccess::parse_all(&h("03 A00000 0100 00")).is_err());
        assert!(FileAccess::parse_all(&[]).is_err());
    }

    /// From 128 octets of install parameters on, GP 2.3.1 cards need `81 xx`; older cards the
    /// single octet.
    #[test]
    fn install_parameters_length_follows_the_gp_version() {
        let lf = aid("F00102030405");
        let app = aid("F0010203040501");
        let params = InstallParameters {
            application_specific: vec![0xAB; 0x91],
            ..InstallParameters::default()
        };
        // Load file, module, instance AIDs and privileges take 25 octets; then the field:
        // C9 81 91 + 145 octets = 148 = 0x94.
        let data = |v| {
            install_for_install(v, &lf, &app, &app, Privileges::NONE, &params, true)
                .unwrap()
                .data()
                .to_vec()
        };
        let new = data(GpVersion::V2_3_1);
        assert_eq!(&new[25..29], &h("81 94 C9 81")[..]);
        assert_eq!(new.len(), 25 + 2 + 0x94 + 1);
        let old = data(GpVersion(2, 2, 1));
        assert_eq!(&old[25..28], &h("94 C9 81")[..]);
        assert_eq!(old.len(), 25 + 1 + 0x94 + 1);
        for (v, bytes) in [(GpVersion::V2_3_1, &new), (GpVersion::V2_1_1, &old)] {
            let mut r = Reader::new(&bytes[25..]);
            let field = read_install_parameters_field(&mut r, v).unwrap();
            assert_eq!(InstallParameters::parse(field).unwrap(), params);
            assert_eq!(r.remaining(), &[0x00]);
        }
        // Short fields are the same in both codings.
        let short = |v| {
            install_for_install(
                v,
                &lf,
                &app,
                &app,
                Privileges::NONE,
                &InstallParameters::default(),
                true,
            )
            .unwrap()
        };
        assert_eq!(short(GpVersion::V2_1_1), short(GpVersion::V2_3_1));
    }

    #[test]
    fn gp_versions() {
        assert_eq!(GpVersion::parse("2.3.1"), Some(GpVersion::V2_3_1));
        assert_eq!(GpVersion::parse(" 2.2 "), Some(GpVersion(2, 2, 0)));
        assert_eq!(GpVersion::parse("2.1.1"), Some(GpVersion::V2_1_1));
        for bad in ["", "3.0", "2.x", "2.3.1.4", "2..1", "2.300"] {
            assert_eq!(GpVersion::parse(bad), None, "{bad}");
        }
        assert!(!GpVersion::parse("2.3")
            .unwrap()
            .ber_install_parameters_length());
        assert!(GpVersion::parse("2.3.2")
            .unwrap()
            .ber_install_parameters_length());
        assert_eq!(GpVersion::V2_1_1.status_format(), StatusFormat::Legacy);
        assert_eq!(GpVersion(2, 2, 1).status_format(), StatusFormat::Tlv);
        assert_eq!(GpVersion::default().to_string(), "2.3.1");
    }

    /// GP 2.1.1 GET STATUS: P2 `00`, next `01`; the response as GlobalPlatformPro's GP 2.1.1
    /// listing reads it (LV AID, life cycle, privileges).
    #[test]
    fn legacy_get_status() {
        assert_eq!(
            get_status_in(
                StatusFormat::Legacy,
                StatusSubset::Applications,
                None,
                false
            )
            .to_string(),
            "80F24000024F0000"
        );
        assert_eq!(
            get_status_in(StatusFormat::Legacy, StatusSubset::Applications, None, true).p2(),
            0x01
        );
        let entries = parse_legacy_status(
            0x40,
            &h("07 F0010203040501 07 00  08 A000000151000000 0F 9E"),
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].aid, aid("A000000151000000"));
        assert_eq!((entries[1].life_cycle, entries[1].privileges), (0x0F, 0x9E));
        let lf =
            parse_legacy_status(0x10, &h("06 F00102030405 01 00 01 07 F0010203040501")).unwrap();
        assert_eq!(lf[0].modules, vec![aid("F0010203040501")]);
        assert!(parse_legacy_status(0x40, &h("07 F0010203040501 07")).is_err());
    }

    #[test]
    fn delete_and_get_status() {
        let app = aid("F0010203040501");
        assert_eq!(
            delete(&app, false).unwrap().to_string(),
            "80E40000094F07F001020304050100"
        );
        assert_eq!(
            delete(&aid("F00102030405"), true).unwrap().to_string(),
            "80E40080084F06F0010203040500"
        );
        assert_eq!(
            get_status(StatusSubset::IssuerSecurityDomain, None, false).to_string(),
            "80F28002024F0000"
        );
        assert_eq!(
            get_status(StatusSubset::Applications, None, true).to_string(),
            "80F24003024F0000"
        );
        assert_eq!(
            get_status(StatusSubset::LoadFiles, Some(&app), false).to_string(),
            "80F22002094F07F001020304050100"
        );
        assert_eq!(
            get_status(StatusSubset::LoadFilesAndModules, None, false).p1(),
            0x10
        );
    }

    #[test]
    fn full_ram_campaign_from_zip() {
        // CAP zip -> load file -> INSTALL for load, LOADs, INSTALL for install, packed for a
        // 137-octet budget in the expanded indefinite format.
        let cap = CapFile::from_zip(&build_cap_zip(&test_components())).unwrap();
        let lf = cap.load_file().unwrap();
        let f = ScriptFormat::ExpandedIndefinite;
        let mut cmds = vec![install_for_load(lf.package_aid(), None, &[], &[]).unwrap()];
        cmds.extend(load_commands(lf.bytes(), f, 137).unwrap());
        let module = &lf.applet_aids()[0];
        cmds.push(
            install_for_install(
                GpVersion::default(),
                lf.package_aid(),
                module,
                module,
                Privileges::NONE,
                &InstallParameters::default(),
                true,
            )
            .unwrap(),
        );
        let packed = pack_scripts(&cmds, f, 137).unwrap();
        // INSTALL (2+17) + LOAD (2+75) + INSTALL (2+35) = 133, + 4 = 137: one script.
        assert_eq!(packed.len(), 1);
        assert_eq!(packed[0].bytes.len(), 137);
        assert_eq!(&packed[0].bytes[..5], &h("AE80 2211 80")[..]);
        let script = parse_command_script(&packed[0].bytes, f).unwrap();
        assert_eq!(script.commands().cloned().collect::<Vec<_>>(), cmds);
    }

    proptest! {
        #[test]
        fn load_blocks_reassemble(lf in proptest::collection::vec(any::<u8>(), 1..2000), bs in 1usize..=255) {
            match load_blocks(&lf, bs) {
                Ok(blocks) => {
                    let stream: Vec<u8> = blocks.iter().flat_map(|b| b.data().to_vec()).collect();
                    let (len, used) = super::super::ber::parse_ber_length(&stream[1..]).unwrap();
                    prop_assert_eq!(stream[0], 0xC4);
                    prop_assert_eq!(len, lf.len());
                    prop_assert_eq!(&stream[1 + used..], &lf[..]);
                    for (i, b) in blocks.iter().enumerate() {
                        prop_assert_eq!(usize::from(b.p2()), i);
                        prop_assert_eq!(b.p1() == 0x80, i + 1 == blocks.len());
                        prop_assert!(b.data().len() <= bs);
                    }
                }
                Err(ScriptError::TooManyBlocks(n)) => prop_assert!(n > 256),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }

        #[test]
        fn block_size_is_maximal(budget in 0usize..400, f in prop_oneof![
            Just(ScriptFormat::Compact), Just(ScriptFormat::ExpandedDefinite), Just(ScriptFormat::ExpandedIndefinite)]) {
            match max_load_block_size(budget, f) {
                Ok(d) => {
                    prop_assert!(load_script_size(d, f) <= budget);
                    prop_assert!(d == 255 || load_script_size(d + 1, f) > budget);
                }
                Err(_) => prop_assert!(load_script_size(1, f) > budget),
            }
        }

        #[test]
        fn toolkit_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ToolkitParameters::parse_sim(&bytes);
            let _ = ToolkitParameters::parse_uicc(&bytes);
        }
    }
}
