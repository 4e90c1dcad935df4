//! Remote Application Management on the Issuer Security Domain (TAR 000000; TS 102 226 clause
//! 8, GlobalPlatform Card Specification 2.3): a registry of executable load files and applet
//! instances driven by INSTALL, LOAD, DELETE and GET STATUS.
//!
//! Status words (GP 2.3 table 11-10 general errors, tables 11-22, 11-36, 11-47, 11-61):
//!
//! | condition                                              | SW   |
//! |--------------------------------------------------------|------|
//! | INSTALL/DELETE: load file, module, instance or SD unknown | 6A88 |
//! | INSTALL: malformed data, AID already in use, bad privileges or parameters (`EA` inside `EF`; an install parameters length the card's GP version reads otherwise: BER from 2.3.1, one octet before) | 6A80 |
//! | LOAD: load file data block malformed, or its package AID is not the one announced | 6A80 |
//! | LOAD without INSTALL [for load], DELETE of the ISD or of a load file with instances (P2 00) | 6985 |
//! | LOAD block number out of sequence, bad P1/P2; GET STATUS P2 `02` on a GP 2.1.1 card | 6A86 |
//! | LOAD beyond 65,535 octets                              | 6A84 |
//! | GET STATUS: nothing matches                            | 6A88 |
//! | GET STATUS: more entries than fit (then P2 03 for the rest) | 6310 |
//! | class other than 80 (00 for GET RESPONSE), unknown INS  | 6E00 / 6D00 |
//!
//! INSTALL, LOAD and DELETE return the single octet `00` only when the C-APDU carries Le
//! (expanded scripts); in compact scripts, where Le is dropped, they answer a bare 9000.
//! GET STATUS without Le (compact) answers 61XX and leaves its data for GET RESPONSE, like a
//! T=0 case 4 command; with Le the data comes back directly.

use crate::script::ber::Reader;
use crate::script::ram::{read_install_parameters_field, GpVersion, StatusFormat};
use crate::script::{Aid, CApdu, InstallParameters, LoadFile, RApdu};

use super::exec::Applet;

/// AID of the Issuer Security Domain (GP Card Specification 2.3, `A0 00 00 01 51 00 00 00`).
pub const ISD_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x01, 0x51, 0x00, 0x00, 0x00];

/// Life cycle states (GP 2.3 11.1.1).
pub mod life_cycle {
    /// Executable load file: LOADED.
    pub const LOADED: u8 = 0x01;
    /// Application: INSTALLED.
    pub const INSTALLED: u8 = 0x03;
    /// Application: SELECTABLE.
    pub const SELECTABLE: u8 = 0x07;
    /// Issuer Security Domain: SECURED.
    pub const SECURED: u8 = 0x0F;
}

/// Privileges of the ISD: Security Domain, Card Lock, Card Terminate, Card Reset, CVM
/// Management (GP 2.3 11.1.2).
const ISD_PRIVILEGES: [u8; 3] = [0x9E, 0x00, 0x00];

/// Largest load file accepted (C4 length limit of the LOAD stream).
const MAX_LOAD: usize = 0xFFFF;

/// Largest GET STATUS response before 6310.
const MAX_STATUS_RESPONSE: usize = 0xFF;

/// An executable load file in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFileEntry {
    /// Load file (package) AID.
    pub aid: Aid,
    /// Executable modules (applet AIDs of the CAP file's Applet component).
    pub modules: Vec<Aid>,
    /// Package version (major, minor) from the Header component.
    pub version: (u8, u8),
    /// Life cycle state (LOADED).
    pub life_cycle: u8,
    /// Size of the load file data block in octets.
    pub size: usize,
}

/// An application instance in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppletInstance {
    /// Instance AID.
    pub aid: Aid,
    /// Executable load file it came from.
    pub load_file: Aid,
    /// Executable module it instantiates.
    pub module: Aid,
    /// Privileges, three octets (a one-octet INSTALL value is padded with zeros).
    pub privileges: [u8; 3],
    /// Life cycle state (INSTALLED or SELECTABLE).
    pub life_cycle: u8,
    /// Install parameters as parsed (C9, C7, C8, CA / EA toolkit parameters).
    pub parameters: InstallParameters,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingLoad {
    aid: Aid,
    next_block: u16,
    data: Vec<u8>,
}

/// The card's GlobalPlatform registry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registry {
    load_files: Vec<LoadFileEntry>,
    applets: Vec<AppletInstance>,
    pending: Option<PendingLoad>,
}

impl Registry {
    /// A registry holding nothing but the ISD.
    pub(crate) const EMPTY: Registry = Registry {
        load_files: Vec::new(),
        applets: Vec::new(),
        pending: None,
    };

    /// Executable load files, in load order.
    pub fn load_files(&self) -> &[LoadFileEntry] {
        &self.load_files
    }

    /// Application instances, in install order.
    pub fn applets(&self) -> &[AppletInstance] {
        &self.applets
    }

    /// The instance with this AID.
    pub fn applet(&self, aid: &[u8]) -> Option<&AppletInstance> {
        self.applets.iter().find(|a| a.aid.as_bytes() == aid)
    }

    /// Whether a LOAD sequence is under way (INSTALL [for load] seen, last block not yet).
    pub fn load_in_progress(&self) -> bool {
        self.pending.is_some()
    }

    fn aid_in_use(&self, aid: &[u8]) -> bool {
        aid == ISD_AID
            || self.load_files.iter().any(|l| l.aid.as_bytes() == aid)
            || self.applets.iter().any(|a| a.aid.as_bytes() == aid)
    }
}

/// GP status words used here.
mod sw {
    pub const OK: u16 = 0x9000;
    pub const MORE_DATA: u16 = 0x6310;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const NOT_FOUND: u16 = 0x6A88;
    pub const CONDITIONS: u16 = 0x6985;
    pub const BAD_P1P2: u16 = 0x6A86;
    pub const NO_MEMORY: u16 = 0x6A84;
    pub const NO_DATA: u16 = 0x6985;
    pub const BAD_INS: u16 = 0x6D00;
    pub const BAD_CLA: u16 = 0x6E00;
}

fn status(sw: u16) -> RApdu {
    RApdu::new(Vec::new(), sw)
}

/// Whether the command came with Le (expanded scripts), which asks for the response data.
fn confirmation(c: &CApdu) -> RApdu {
    match c.le() {
        Some(_) => RApdu::new(vec![0x00], sw::OK),
        None => status(sw::OK),
    }
}

/// One command packet's run of the ISD's RAM applet over a card's registry.
pub(crate) struct Ram<'a> {
    reg: &'a mut Registry,
    /// The card's GlobalPlatform version: install parameters' length coding, GET STATUS formats.
    version: GpVersion,
    /// Entries GET STATUS still has to return (P2 03), for the rest of this packet.
    status_rest: Option<Vec<Vec<u8>>>,
    pending_response: Option<Vec<u8>>,
}

impl<'a> Ram<'a> {
    pub fn new(reg: &'a mut Registry, version: GpVersion) -> Self {
        Ram {
            reg,
            version,
            status_rest: None,
            pending_response: None,
        }
    }

    /// INSTALL (GP 2.3 11.5).
    fn install(&mut self, c: &CApdu) -> RApdu {
        if c.p2() != 0x00 {
            return status(sw::BAD_P1P2);
        }
        match c.p1() {
            0x02 => self.install_for_load(c),
            0x04 | 0x0C => self.install_for_install(c, c.p1() == 0x0C),
            0x08 => self.make_selectable(c),
            _ => status(sw::BAD_P1P2),
        }
    }

    /// INSTALL [for load] (GP 2.3 11.5.2.3.1): load file AID, SD AID, hash, parameters, token.
    fn install_for_load(&mut self, c: &CApdu) -> RApdu {
        let mut r = Reader::new(c.data());
        let parsed = (|| {
            let aid = r.lv("load file AID")?.to_vec();
            let sd = r.lv("security domain AID")?.to_vec();
            r.lv("load file data block hash")?;
            r.lv("load parameters")?;
            r.lv("load token")?;
            Ok::<_, crate::script::ScriptError>((aid, sd))
        })();
        let Ok((aid, sd)) = parsed else {
            return status(sw::WRONG_DATA);
        };
        let Ok(aid) = Aid::new(&aid) else {
            return status(sw::WRONG_DATA);
        };
        if !sd.is_empty() && sd != ISD_AID {
            return status(sw::NOT_FOUND);
        }
        if self.reg.aid_in_use(aid.as_bytes()) {
            return status(sw::WRONG_DATA);
        }
        self.reg.pending = Some(PendingLoad {
            aid,
            next_block: 0,
            data: Vec::new(),
        });
        confirmation(c)
    }

    /// LOAD (GP 2.3 11.6): blocks numbered from 0 in P2, P1 80 on the last.
    fn load(&mut self, c: &CApdu) -> RApdu {
        let Some(pending) = self.reg.pending.as_mut() else {
            return status(sw::CONDITIONS);
        };
        let last = match c.p1() {
            0x00 => false,
            0x80 => true,
            _ => return status(sw::BAD_P1P2),
        };
        if u16::from(c.p2()) != pending.next_block {
            return status(sw::BAD_P1P2);
        }
        if pending.data.len() + c.data().len() > MAX_LOAD + 4 {
            self.reg.pending = None;
            return status(sw::NO_MEMORY);
        }
        pending.data.extend_from_slice(c.data());
        pending.next_block += 1;
        if !last {
            return confirmation(c);
        }
        let Some(done) = self.reg.pending.take() else {
            return status(sw::CONDITIONS);
        };
        match parse_load_stream(&done.data) {
            Some(lf) if lf.package_aid() == &done.aid => {
                let header = lf.header();
                self.reg.load_files.push(LoadFileEntry {
                    aid: done.aid,
                    modules: lf.applet_aids().to_vec(),
                    version: (header.package_major, header.package_minor),
                    life_cycle: life_cycle::LOADED,
                    size: lf.bytes().len(),
                });
                confirmation(c)
            }
            _ => status(sw::WRONG_DATA),
        }
    }

    /// INSTALL [for install] (GP 2.3 11.5.2.3.2): load file AID, module AID, instance AID,
    /// privileges, install parameters, token.
    fn install_for_install(&mut self, c: &CApdu, selectable: bool) -> RApdu {
        let Some(f) = parse_install(c.data(), self.version) else {
            return status(sw::WRONG_DATA);
        };
        let Some(lf) = self
            .reg
            .load_files
            .iter()
            .find(|l| l.aid.as_bytes() == f.load_file.as_slice())
        else {
            return status(sw::NOT_FOUND);
        };
        let Some(module) = lf
            .modules
            .iter()
            .find(|m| m.as_bytes() == f.module.as_slice())
            .cloned()
        else {
            return status(sw::NOT_FOUND);
        };
        let load_file = lf.aid.clone();
        let Ok(aid) = Aid::new(&f.instance) else {
            return status(sw::WRONG_DATA);
        };
        if self.reg.aid_in_use(aid.as_bytes()) {
            return status(sw::WRONG_DATA);
        }
        let privileges = match f.privileges.as_slice() {
            [a] => [*a, 0, 0],
            [a, b, c] => [*a, *b, *c],
            _ => return status(sw::WRONG_DATA),
        };
        let Ok(parameters) = InstallParameters::parse(&f.parameters) else {
            return status(sw::WRONG_DATA);
        };
        self.reg.applets.push(AppletInstance {
            aid,
            load_file,
            module,
            privileges,
            life_cycle: if selectable {
                life_cycle::SELECTABLE
            } else {
                life_cycle::INSTALLED
            },
            parameters,
        });
        confirmation(c)
    }

    /// INSTALL [for make selectable] (GP 2.3 11.5.2.3.3): empty, empty, instance AID, ...
    fn make_selectable(&mut self, c: &CApdu) -> RApdu {
        let Some(f) = parse_install(c.data(), self.version) else {
            return status(sw::WRONG_DATA);
        };
        match self
            .reg
            .applets
            .iter_mut()
            .find(|a| a.aid.as_bytes() == f.instance.as_slice())
        {
            Some(a) => {
                a.life_cycle = life_cycle::SELECTABLE;
                confirmation(c)
            }
            None => status(sw::NOT_FOUND),
        }
    }

    /// DELETE (GP 2.3 11.2): `4F` AID; P2 80 also deletes a load file's instances.
    fn delete(&mut self, c: &CApdu) -> RApdu {
        let related = match (c.p1(), c.p2()) {
            (0x00, 0x00) => false,
            (0x00, 0x80) => true,
            _ => return status(sw::BAD_P1P2),
        };
        let mut r = Reader::new(c.data());
        let aid = match r.tlv("DELETE data") {
            Ok(t) if t.tag == 0x4F => t.value.to_vec(),
            _ => return status(sw::WRONG_DATA),
        };
        if aid == ISD_AID {
            return status(sw::CONDITIONS);
        }
        let reg = &mut *self.reg;
        if let Some(i) = reg.applets.iter().position(|a| a.aid.as_bytes() == aid) {
            reg.applets.remove(i);
            return confirmation(c);
        }
        if let Some(i) = reg.load_files.iter().position(|l| l.aid.as_bytes() == aid) {
            let has_instances = reg.applets.iter().any(|a| a.load_file.as_bytes() == aid);
            if has_instances && !related {
                return status(sw::CONDITIONS);
            }
            reg.applets.retain(|a| a.load_file.as_bytes() != aid);
            reg.load_files.remove(i);
            return confirmation(c);
        }
        if reg
            .pending
            .as_ref()
            .is_some_and(|p| p.aid.as_bytes() == aid)
        {
            reg.pending = None;
            return confirmation(c);
        }
        status(sw::NOT_FOUND)
    }

    /// GET STATUS (GP 2.3 11.4). P2 `02` (first) / `03` (next): one `E3` per entry holding
    /// `4F` AID, `9F70` life cycle, and `C5` privileges (ISD, applications), `C4` load file AID
    /// and `CC` security domain (applications), `CE` version and `84` modules (load files, the
    /// latter with P1 10). P2 `00` / `01`: the GP 2.1.1 format (LV AID, life cycle, first
    /// privilege octet, with P1 10 the modules), which later versions keep as deprecated. A
    /// GP 2.1.1 card knows only the latter and answers 6A86 to P2 `02`, as real ones do.
    fn get_status(&mut self, c: &CApdu) -> RApdu {
        let format = match c.p2() & !0x01 {
            0x02 if self.version.status_format() == StatusFormat::Tlv => StatusFormat::Tlv,
            0x00 => StatusFormat::Legacy,
            _ => return status(sw::BAD_P1P2),
        };
        let entries = if c.p2() & 0x01 == 0 {
            let mut r = Reader::new(c.data());
            let prefix = match r.tlv("GET STATUS search criteria") {
                Ok(t) if t.tag == 0x4F => t.value.to_vec(),
                _ => return status(sw::WRONG_DATA),
            };
            let entries = self.status_entries(c.p1(), &prefix, format);
            match entries {
                Some(e) if e.is_empty() => return status(sw::NOT_FOUND),
                Some(e) => e,
                None => return status(sw::BAD_P1P2),
            }
        } else {
            match self.status_rest.take() {
                Some(rest) => rest,
                None => return status(sw::CONDITIONS),
            }
        };
        let mut data = Vec::new();
        let mut taken = 0;
        for e in &entries {
            if !data.is_empty() && data.len() + e.len() > MAX_STATUS_RESPONSE {
                break;
            }
            data.extend_from_slice(e);
            taken += 1;
        }
        let rest: Vec<Vec<u8>> = entries.into_iter().skip(taken).collect();
        let sw = if rest.is_empty() {
            sw::OK
        } else {
            self.status_rest = Some(rest);
            sw::MORE_DATA
        };
        if c.le().is_none() && sw == sw::OK {
            // T=0 case 4 in a compact script: 61XX, data by GET RESPONSE.
            let len = data.len().min(0xFF) as u16;
            self.pending_response = Some(data);
            return status(0x6100 | len);
        }
        RApdu::new(data, sw)
    }

    fn status_entries(&self, p1: u8, prefix: &[u8], format: StatusFormat) -> Option<Vec<Vec<u8>>> {
        let m = |aid: &[u8]| aid.starts_with(prefix);
        let reg = &*self.reg;
        if format == StatusFormat::Legacy {
            return self.legacy_status_entries(p1, &m);
        }
        Some(match p1 {
            0x80 => m(&ISD_AID)
                .then(|| e3(&ISD_AID, life_cycle::SECURED, Some(&ISD_PRIVILEGES), &[]))
                .into_iter()
                .collect(),
            0x40 => reg
                .applets
                .iter()
                .filter(|a| m(a.aid.as_bytes()))
                .map(|a| {
                    let mut extra = Vec::new();
                    tlv(&mut extra, &[0xC4], a.load_file.as_bytes());
                    tlv(&mut extra, &[0xCC], &ISD_AID);
                    e3(a.aid.as_bytes(), a.life_cycle, Some(&a.privileges), &extra)
                })
                .collect(),
            0x20 | 0x10 => reg
                .load_files
                .iter()
                .filter(|l| m(l.aid.as_bytes()))
                .map(|l| {
                    let mut extra = Vec::new();
                    tlv(&mut extra, &[0xCE], &[l.version.0, l.version.1]);
                    tlv(&mut extra, &[0xCC], &ISD_AID);
                    if p1 == 0x10 {
                        for module in &l.modules {
                            tlv(&mut extra, &[0x84], module.as_bytes());
                        }
                    }
                    e3(l.aid.as_bytes(), l.life_cycle, None, &extra)
                })
                .collect(),
            _ => return None,
        })
    }

    /// Entries in the GP 2.1.1 format (GP 2.1.1 9.4.3.1).
    fn legacy_status_entries(&self, p1: u8, m: &dyn Fn(&[u8]) -> bool) -> Option<Vec<Vec<u8>>> {
        let reg = &*self.reg;
        let entry = |aid: &[u8], life_cycle: u8, privileges: u8| {
            let mut e = Vec::with_capacity(aid.len() + 3);
            e.push(aid.len() as u8);
            e.extend_from_slice(aid);
            e.extend_from_slice(&[life_cycle, privileges]);
            e
        };
        Some(match p1 {
            0x80 => m(&ISD_AID)
                .then(|| entry(&ISD_AID, life_cycle::SECURED, ISD_PRIVILEGES[0]))
                .into_iter()
                .collect(),
            0x40 => reg
                .applets
                .iter()
                .filter(|a| m(a.aid.as_bytes()))
                .map(|a| entry(a.aid.as_bytes(), a.life_cycle, a.privileges[0]))
                .collect(),
            0x20 | 0x10 => reg
                .load_files
                .iter()
                .filter(|l| m(l.aid.as_bytes()))
                .map(|l| {
                    let mut e = entry(l.aid.as_bytes(), l.life_cycle, 0x00);
                    if p1 == 0x10 {
                        e.push(l.modules.len().min(0xFF) as u8);
                        for module in &l.modules {
                            e.push(module.as_bytes().len() as u8);
                            e.extend_from_slice(module.as_bytes());
                        }
                    }
                    e
                })
                .collect(),
            _ => return None,
        })
    }

    fn get_response(&mut self, pending: Option<Vec<u8>>, c: &CApdu) -> RApdu {
        let Some(data) = pending else {
            return status(sw::NO_DATA);
        };
        match c.le() {
            Some(n) if n != 0 && usize::from(n) < data.len() => {
                RApdu::new(data.get(..usize::from(n)).unwrap_or_default(), sw::OK)
            }
            _ => RApdu::new(data, sw::OK),
        }
    }
}

/// Appends a TLV with a one-octet length (values here are short).
fn tlv(out: &mut Vec<u8>, tag: &[u8], value: &[u8]) {
    out.extend_from_slice(tag);
    out.push(value.len().min(0xFF) as u8);
    out.extend_from_slice(value);
}

fn e3(aid: &[u8], life_cycle: u8, privileges: Option<&[u8; 3]>, extra: &[u8]) -> Vec<u8> {
    let mut inner = Vec::with_capacity(32 + extra.len());
    tlv(&mut inner, &[0x4F], aid);
    tlv(&mut inner, &[0x9F, 0x70], &[life_cycle]);
    if let Some(p) = privileges {
        tlv(&mut inner, &[0xC5], p);
    }
    inner.extend_from_slice(extra);
    let mut out = Vec::with_capacity(inner.len() + 3);
    out.push(0xE3);
    if inner.len() > 0x7F {
        out.push(0x81);
    }
    out.push(inner.len().min(0xFF) as u8);
    out.extend_from_slice(&inner);
    out
}

/// The LOAD stream: optional DAP blocks `E2`, then `C4` L load file, nothing after.
fn parse_load_stream(stream: &[u8]) -> Option<LoadFile> {
    let mut r = Reader::new(stream);
    loop {
        let t = r.tlv("Load File Data Block").ok()?;
        match t.tag {
            0xE2 => continue,
            0xC4 if r.is_empty() => return LoadFile::from_ijc(t.value).ok(),
            _ => return None,
        }
    }
}

struct InstallFields {
    load_file: Vec<u8>,
    module: Vec<u8>,
    instance: Vec<u8>,
    privileges: Vec<u8>,
    parameters: Vec<u8>,
}

/// The INSTALL data fields; the install parameters' length is read as `version` reads it (a
/// GP 2.3.1 card takes `81 xx`, an older one takes `81` as the length and fails).
fn parse_install(data: &[u8], version: GpVersion) -> Option<InstallFields> {
    let mut r = Reader::new(data);
    let lv = |r: &mut Reader<'_>| r.lv("INSTALL field").ok().map(<[u8]>::to_vec);
    let load_file = lv(&mut r)?;
    let module = lv(&mut r)?;
    let instance = lv(&mut r)?;
    let privileges = lv(&mut r)?;
    let parameters = read_install_parameters_field(&mut r, version)
        .ok()?
        .to_vec();
    lv(&mut r)?; // install token
    r.is_empty().then_some(InstallFields {
        load_file,
        module,
        instance,
        privileges,
        parameters,
    })
}

impl Applet for Ram<'_> {
    fn execute(&mut self, c: &CApdu) -> RApdu {
        let pending = self.pending_response.take();
        if c.ins() == 0xC0 && matches!(c.cla(), 0x00 | 0x80) {
            return self.get_response(pending, c);
        }
        if c.cla() != 0x80 {
            return status(sw::BAD_CLA);
        }
        if c.ins() != 0xF2 {
            self.status_rest = None;
        }
        match c.ins() {
            0xE6 => self.install(c),
            0xE8 => self.load(c),
            0xE4 => self.delete(c),
            0xF2 => self.get_status(c),
            _ => status(sw::BAD_INS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::ram::{
        delete, get_status, get_status_in, install_for_install, install_for_load, load_blocks,
        parse_legacy_status,
    };
    use crate::script::{FileAccess, MenuEntry, Privileges, StatusSubset, ToolkitParameters};

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// The script module's test package: Header, Directory, Import, Applet, Class, Method,
    /// StaticField, ConstantPool, RefLocation.
    fn load_file() -> Vec<u8> {
        h("01 0010 DECAFFED 01 02 04 00 01 06 F00102030405
           02 0003 AABBCC
           04 0001 00
           03 000B 01 07 F0010203040501 002A
           06 0002 1111
           07 0003 222222
           08 0001 33
           05 0002 4444
           09 0001 55")
    }

    fn aid(s: &str) -> Aid {
        Aid::from_hex(s).unwrap()
    }

    fn run(reg: &mut Registry, cmds: &[CApdu]) -> Vec<RApdu> {
        run_as(GpVersion::default(), reg, cmds)
    }

    fn run_as(version: GpVersion, reg: &mut Registry, cmds: &[CApdu]) -> Vec<RApdu> {
        let mut ram = Ram::new(reg, version);
        cmds.iter().map(|c| ram.execute(c)).collect()
    }

    fn sws(r: &[RApdu]) -> Vec<u16> {
        r.iter().map(|r| r.sw).collect()
    }

    fn load_commands() -> Vec<CApdu> {
        let mut cmds = vec![install_for_load(&aid("F00102030405"), None, &[], &[]).unwrap()];
        cmds.extend(load_blocks(&load_file(), 32).unwrap());
        cmds
    }

    fn install(instance: &str, params: &InstallParameters) -> CApdu {
        install_for_install(
            GpVersion::default(),
            &aid("F00102030405"),
            &aid("F0010203040501"),
            &aid(instance),
            Privileges::NONE,
            params,
            true,
        )
        .unwrap()
    }

    #[test]
    fn load_install_status_delete() {
        let mut reg = Registry::default();
        let params = InstallParameters {
            application_specific: vec![0xAB],
            uicc_toolkit: Some(ToolkitParameters {
                priority: 1,
                max_timers: 2,
                max_menu_text_length: 0x10,
                menu_entries: vec![MenuEntry {
                    position: 1,
                    identifier: 0,
                }],
                tar_values: vec![[0xC0, 0x00, 0x01]],
                max_services: 1,
                ..ToolkitParameters::default()
            }),
            ..InstallParameters::default()
        };
        let mut cmds = load_commands();
        cmds.push(install("F0010203040501", &params));
        let r = run(&mut reg, &cmds);
        assert!(
            r.iter().all(|r| r.sw == 0x9000 && r.data == [0x00]),
            "{r:?}"
        );
        assert_eq!(reg.load_files().len(), 1);
        assert_eq!(reg.load_files()[0].version, (1, 0));
        let app = reg.applet(&h("F0010203040501")).unwrap();
        assert_eq!(app.parameters, params);
        assert_eq!(app.life_cycle, life_cycle::SELECTABLE);

        let r = run(
            &mut reg,
            &[
                get_status(StatusSubset::Applications, None, false),
                get_status(StatusSubset::LoadFilesAndModules, None, false),
                get_status(StatusSubset::IssuerSecurityDomain, None, false),
                get_status(StatusSubset::LoadFiles, Some(&aid("A000000003")), false),
            ],
        );
        assert_eq!(
            r[0].data,
            h("E3 24 4F07F0010203040501 9F700107 C503000000 C406F00102030405 CC08A000000151000000")
        );
        assert_eq!(
            r[1].data,
            h("E3 23 4F06F00102030405 9F700101 CE020100 CC08A000000151000000 8407F0010203040501")
        );
        assert_eq!(
            r[2].data,
            h("E3 13 4F08A000000151000000 9F70010F C5039E0000")
        );
        assert_eq!(r[3].sw, 0x6A88);

        // Deleting the load file needs P2 80 while an instance exists.
        let r = run(
            &mut reg,
            &[
                delete(&aid("F00102030405"), false).unwrap(),
                delete(&aid("F00102030405"), true).unwrap(),
                delete(&aid("F00102030405"), true).unwrap(),
                delete(&aid("A000000151000000"), false).unwrap(),
            ],
        );
        assert_eq!(sws(&r), [0x6985, 0x9000, 0x6A88, 0x6985]);
        assert!(reg.applets().is_empty() && reg.load_files().is_empty());
    }

    #[test]
    fn install_errors() {
        let mut reg = Registry::default();
        // No load file yet.
        let r = run(
            &mut reg,
            &[install("F0010203040501", &InstallParameters::default())],
        );
        assert_eq!(sws(&r), [0x6A88]);
        run(&mut reg, &load_commands());
        let bad_module = install_for_install(
            GpVersion::default(),
            &aid("F00102030405"),
            &aid("F0010203040599"),
            &aid("F0010203040501"),
            Privileges::NONE,
            &InstallParameters::default(),
            true,
        )
        .unwrap();
        let r = run(
            &mut reg,
            &[
                bad_module,
                install("F0010203040501", &InstallParameters::default()),
                install("F0010203040501", &InstallParameters::default()),
                install("A000000151000000", &InstallParameters::default()),
                CApdu::new(0x80, 0xE6, 0x0C, 0x00, h("06F00102030405"), None).unwrap(),
                CApdu::new(0x80, 0xE6, 0x01, 0x00, h("00"), None).unwrap(),
                // Make selectable of an unknown instance.
                CApdu::new(
                    0x80,
                    0xE6,
                    0x08,
                    0x00,
                    h("00 00 05A000000099 01 00 00 00"),
                    None,
                )
                .unwrap(),
                // Load again under an AID in use.
                install_for_load(&aid("F00102030405"), None, &[], &[]).unwrap(),
                install_for_load(
                    &aid("F00102030406"),
                    Some(&aid("A000000151000001")),
                    &[],
                    &[],
                )
                .unwrap(),
            ],
        );
        assert_eq!(
            sws(&r),
            [0x6A88, 0x9000, 0x6A80, 0x6A80, 0x6A80, 0x6A86, 0x6A88, 0x6A80, 0x6A88]
        );
    }

    #[test]
    fn load_errors() {
        let mut reg = Registry::default();
        let blocks = load_blocks(&load_file(), 32).unwrap();
        let r = run(&mut reg, &blocks[..1]);
        assert_eq!(sws(&r), [0x6985]);
        // Out of sequence: block 1 before block 0.
        let mut cmds = vec![install_for_load(&aid("F00102030405"), None, &[], &[]).unwrap()];
        cmds.push(blocks[1].clone());
        cmds.push(blocks[0].clone());
        cmds.push(blocks[2].clone());
        let r = run(&mut reg, &cmds);
        assert_eq!(sws(&r), [0x9000, 0x6A86, 0x9000, 0x6A86]);
        assert!(reg.load_in_progress());
        // The load continues in a later packet (a new Ram session).
        let r = run(&mut reg, &blocks[1..]);
        assert_eq!(sws(&r), [0x9000, 0x9000]);
        assert_eq!(reg.load_files().len(), 1);
        assert!(!reg.load_in_progress());

        // Announced AID differs from the package AID: refused at the last block.
        let mut reg = Registry::default();
        let mut cmds = vec![install_for_load(&aid("F00102030499"), None, &[], &[]).unwrap()];
        cmds.extend(load_blocks(&load_file(), 200).unwrap());
        assert_eq!(sws(&run(&mut reg, &cmds)), [0x9000, 0x6A80]);
        // Garbage instead of a CAP.
        let mut cmds = vec![install_for_load(&aid("F00102030405"), None, &[], &[]).unwrap()];
        cmds.extend(load_blocks(&[1, 2, 3], 200).unwrap());
        assert_eq!(sws(&run(&mut reg, &cmds)), [0x9000, 0x6A80]);
        assert!(reg.load_files().is_empty());
    }

    #[test]
    fn get_status_paging_and_compact() {
        let mut reg = Registry::default();
        run(&mut reg, &load_commands());
        let mut cmds = Vec::new();
        for i in 0..12u8 {
            cmds.push(install(
                &format!("F00102030405{i:02X}"),
                &InstallParameters::default(),
            ));
        }
        assert!(sws(&run(&mut reg, &cmds)).iter().all(|&s| s == 0x9000));
        let r = run(
            &mut reg,
            &[
                get_status(StatusSubset::Applications, None, false),
                get_status(StatusSubset::Applications, None, true),
                get_status(StatusSubset::Applications, None, true),
            ],
        );
        assert_eq!(sws(&r), [0x6310, 0x9000, 0x6985]);
        assert_eq!(r[0].data.len(), 6 * 0x26);
        assert_eq!(r[1].data.len(), 6 * 0x26);

        // Without Le (compact): 61XX, then GET RESPONSE.
        let r = run(
            &mut reg,
            &[
                get_status(StatusSubset::LoadFiles, None, false).without_le(),
                CApdu::case2(0x00, 0xC0, 0, 0, 0),
                CApdu::case2(0x00, 0xC0, 0, 0, 0),
                CApdu::case1(0x84, 0xF2, 0x40, 0x02),
                CApdu::case1(0x80, 0xCA, 0x00, 0x66),
                CApdu::new(0x80, 0xF2, 0x40, 0x04, h("4F00"), None).unwrap(),
                CApdu::new(0x80, 0xF2, 0x01, 0x02, h("4F00"), None).unwrap(),
            ],
        );
        assert_eq!(r[0].sw, 0x611C);
        assert_eq!(r[1].data.len(), 0x1C);
        assert_eq!(sws(&r[2..]), [0x6985, 0x6E00, 0x6D00, 0x6A86, 0x6A86]);
    }

    /// Issue 19 point 10: `EA` beside `EF` is what the card reads (toolkit and file access
    /// recorded); the nested `EF { EA }` form that otagw used to send is refused with 6A80.
    #[test]
    fn uicc_toolkit_parameters_at_the_top_level() {
        let mut reg = Registry::default();
        run(&mut reg, &load_commands());
        let toolkit = ToolkitParameters {
            priority: 1,
            max_menu_text_length: 0x10,
            tar_values: vec![[0xC0, 0x00, 0x01]],
            ..ToolkitParameters::default()
        };
        let params = InstallParameters {
            volatile_memory_quota: Some(0x0100),
            uicc_toolkit: Some(toolkit),
            uicc_access: vec![FileAccess::full(None)],
            ..InstallParameters::default()
        };
        let bytes = params.to_bytes().unwrap();
        assert_eq!(&bytes[..8], &h("C900 EF04 C7020100 EA")[..8]);
        // The old layout: the same EA moved inside EF.
        let ea = &bytes[8..];
        let mut nested = h("C900 EF");
        nested.push((4 + ea.len()) as u8);
        nested.extend(h("C7020100"));
        nested.extend_from_slice(ea);
        let raw = |instance: &str, p: &[u8]| {
            let mut data = h("06F00102030405 07F0010203040501");
            data.push(7);
            data.extend(aid(instance).as_bytes());
            data.extend(h("0100"));
            data.push(p.len() as u8);
            data.extend_from_slice(p);
            data.push(0x00);
            CApdu::new(0x80, 0xE6, 0x0C, 0x00, data, Some(0)).unwrap()
        };
        let r = run(
            &mut reg,
            &[
                raw("F0010203040502", &nested),
                raw("F0010203040501", &bytes),
            ],
        );
        assert_eq!(sws(&r), [0x6A80, 0x9000]);
        assert!(reg.applet(&h("F0010203040502")).is_none());
        let app = reg.applet(&h("F0010203040501")).unwrap();
        assert_eq!(app.parameters, params);
        assert_eq!(app.parameters.uicc_access, [FileAccess::full(None)]);
    }

    /// Issue 19 point 11: 148 octets of install parameters. A GP 2.3.1 card takes `81 94`; a
    /// GP 2.2.1 card reads `81` as the length and refuses it, and takes the single `94`.
    #[test]
    fn install_parameters_length_per_gp_version() {
        let params = InstallParameters {
            application_specific: vec![0xAB; 0x91],
            ..InstallParameters::default()
        };
        let cmd = |v| {
            install_for_install(
                v,
                &aid("F00102030405"),
                &aid("F0010203040501"),
                &aid("F0010203040501"),
                Privileges::NONE,
                &params,
                true,
            )
            .unwrap()
        };
        let old = GpVersion(2, 2, 1);
        for (card, sent, sw) in [
            (GpVersion::V2_3_1, GpVersion::V2_3_1, 0x9000),
            (GpVersion::V2_3_1, old, 0x6A80),
            (old, GpVersion::V2_3_1, 0x6A80),
            (old, old, 0x9000),
        ] {
            let mut reg = Registry::default();
            run_as(card, &mut reg, &load_commands());
            let r = run_as(card, &mut reg, &[cmd(sent)]);
            assert_eq!(sws(&r), [sw], "card {card}, sent for {sent}");
            if sw == 0x9000 {
                let app = reg.applet(&h("F0010203040501")).unwrap();
                assert_eq!(app.parameters, params);
            }
        }
    }

    /// Issue 19 point 12: a GP 2.1.1 card answers GET STATUS P2 02 with 6A86 and P2 00 in the
    /// GP 2.1.1 format; later cards answer both.
    #[test]
    fn get_status_formats_per_gp_version() {
        let mut reg = Registry::default();
        let v211 = GpVersion::V2_1_1;
        run_as(v211, &mut reg, &load_commands());
        run_as(
            v211,
            &mut reg,
            &[install("F0010203040501", &InstallParameters::default())],
        );
        let legacy = |subset, next| get_status_in(StatusFormat::Legacy, subset, None, next);
        let r = run_as(
            v211,
            &mut reg,
            &[
                get_status(StatusSubset::Applications, None, false),
                legacy(StatusSubset::Applications, false),
                legacy(StatusSubset::LoadFilesAndModules, false),
                legacy(StatusSubset::IssuerSecurityDomain, false),
            ],
        );
        assert_eq!(sws(&r), [0x6A86, 0x9000, 0x9000, 0x9000]);
        assert_eq!(r[1].data, h("07 F0010203040501 07 00"));
        assert_eq!(r[2].data, h("06 F00102030405 01 00 01 07 F0010203040501"));
        assert_eq!(r[3].data, h("08 A000000151000000 0F 9E"));
        let modules = parse_legacy_status(0x10, &r[2].data).unwrap();
        assert_eq!(modules[0].modules, [aid("F0010203040501")]);
        // A GP 2.3.1 card answers both formats.
        let r = run(
            &mut reg,
            &[
                get_status(StatusSubset::Applications, None, false),
                legacy(StatusSubset::Applications, false),
            ],
        );
        assert_eq!(sws(&r), [0x9000, 0x9000]);
        assert_eq!(r[1].data, h("07 F0010203040501 07 00"));
    }
}
