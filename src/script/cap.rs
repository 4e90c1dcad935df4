//! Java Card CAP files and the load files built from them (Java Card VM specification,
//! chapter 6: CAP file format, compact components).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};

use super::ber::Reader;
use super::error::ScriptError;
use super::ram::Aid;

/// Magic number opening the Header component.
pub const CAP_MAGIC: u32 = 0xDECA_FFED;

/// Largest component: tag (1), u2 size (2), and at most 65535 octets of body.
const MAX_COMPONENT: usize = 3 + 0xFFFF;

/// CAP file components and their tags (JCVM specification, table 6-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// `Header.cap`, tag 1.
    Header,
    /// `Directory.cap`, tag 2.
    Directory,
    /// `Applet.cap`, tag 3 (optional).
    Applet,
    /// `Import.cap`, tag 4.
    Import,
    /// `ConstantPool.cap`, tag 5.
    ConstantPool,
    /// `Class.cap`, tag 6.
    Class,
    /// `Method.cap`, tag 7.
    Method,
    /// `StaticField.cap`, tag 8.
    StaticField,
    /// `RefLocation.cap`, tag 9.
    RefLocation,
    /// `Export.cap`, tag 10 (optional).
    Export,
    /// `Descriptor.cap`, tag 11 (not loaded by default).
    Descriptor,
    /// `Debug.cap`, tag 12 (never loaded).
    Debug,
}

impl Component {
    /// Every component, by tag.
    pub const ALL: [Component; 12] = [
        Component::Header,
        Component::Directory,
        Component::Applet,
        Component::Import,
        Component::ConstantPool,
        Component::Class,
        Component::Method,
        Component::StaticField,
        Component::RefLocation,
        Component::Export,
        Component::Descriptor,
        Component::Debug,
    ];

    /// Load file order (JCVM specification 6.2, as GlobalPlatform loads it): Header, Directory,
    /// Import, Applet, Class, Method, StaticField, Export, ConstantPool, RefLocation.
    pub const LOAD_ORDER: [Component; 10] = [
        Component::Header,
        Component::Directory,
        Component::Import,
        Component::Applet,
        Component::Class,
        Component::Method,
        Component::StaticField,
        Component::Export,
        Component::ConstantPool,
        Component::RefLocation,
    ];

    /// The component tag.
    pub fn tag(self) -> u8 {
        match self {
            Component::Header => 1,
            Component::Directory => 2,
            Component::Applet => 3,
            Component::Import => 4,
            Component::ConstantPool => 5,
            Component::Class => 6,
            Component::Method => 7,
            Component::StaticField => 8,
            Component::RefLocation => 9,
            Component::Export => 10,
            Component::Descriptor => 11,
            Component::Debug => 12,
        }
    }

    /// The component with `tag`, if defined.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Component::ALL.into_iter().find(|c| c.tag() == tag)
    }

    /// File name stem inside the CAP zip (`Header` for `Header.cap`).
    pub fn name(self) -> &'static str {
        match self {
            Component::Header => "Header",
            Component::Directory => "Directory",
            Component::Applet => "Applet",
            Component::Import => "Import",
            Component::ConstantPool => "ConstantPool",
            Component::Class => "Class",
            Component::Method => "Method",
            Component::StaticField => "StaticField",
            Component::RefLocation => "RefLocation",
            Component::Export => "Export",
            Component::Descriptor => "Descriptor",
            Component::Debug => "Debug",
        }
    }

    /// Whether a load file must contain it.
    pub fn is_mandatory(self) -> bool {
        !matches!(
            self,
            Component::Applet | Component::Export | Component::Descriptor | Component::Debug
        )
    }

    fn from_name(stem: &str) -> Option<Self> {
        Component::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(stem))
    }
}

/// What the Header component says about the package (JCVM specification 6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    /// CAP format minor version.
    pub cap_minor: u8,
    /// CAP format major version.
    pub cap_major: u8,
    /// Flags (ACC_INT 01, ACC_EXPORT 02, ACC_APPLET 04).
    pub flags: u8,
    /// Package minor version.
    pub package_minor: u8,
    /// Package major version.
    pub package_major: u8,
    /// Package AID, which is the load file AID.
    pub package_aid: Aid,
    /// Package name (CAP format 2.2 and later), if present.
    pub package_name: Option<Vec<u8>>,
}

/// Checks a component's own `tag u2-size body` framing; returns the body.
fn component_body(component: Component, bytes: &[u8]) -> Result<&[u8], ScriptError> {
    let bad = |problem: String| ScriptError::BadComponent {
        component: component.name(),
        problem,
    };
    let mut r = Reader::new(bytes);
    let tag = r.u8("component tag").map_err(|e| bad(e.to_string()))?;
    let size = r.u16("component size").map_err(|e| bad(e.to_string()))?;
    if tag != component.tag() {
        return Err(bad(format!("tag {tag}, expected {}", component.tag())));
    }
    let body = r.remaining();
    if body.len() != usize::from(size) {
        return Err(bad(format!(
            "size field {size} but {} octets follow",
            body.len()
        )));
    }
    Ok(body)
}

/// Parses a complete Header component (tag, size, body).
pub fn parse_header_component(bytes: &[u8]) -> Result<HeaderInfo, ScriptError> {
    let body = component_body(Component::Header, bytes)?;
    let bad = |e: ScriptError| ScriptError::BadComponent {
        component: "Header",
        problem: e.to_string(),
    };
    let mut r = Reader::new(body);
    let magic = r.u32("magic").map_err(bad)?;
    if magic != CAP_MAGIC {
        return Err(ScriptError::BadMagic(magic));
    }
    let cap_minor = r.u8("minor_version").map_err(bad)?;
    let cap_major = r.u8("major_version").map_err(bad)?;
    let flags = r.u8("flags").map_err(bad)?;
    let package_minor = r.u8("package minor_version").map_err(bad)?;
    let package_major = r.u8("package major_version").map_err(bad)?;
    let package_aid = Aid::new(r.lv("package AID").map_err(bad)?)?;
    let package_name = if r.is_empty() {
        None
    } else {
        Some(r.lv("package name").map_err(bad)?.to_vec())
    };
    Ok(HeaderInfo {
        cap_minor,
        cap_major,
        flags,
        package_minor,
        package_major,
        package_aid,
        package_name,
    })
}

/// Parses a complete Applet component (JCVM specification 6.6): the applet AIDs in order.
pub fn parse_applet_component(bytes: &[u8]) -> Result<Vec<Aid>, ScriptError> {
    let body = component_body(Component::Applet, bytes)?;
    let bad = |e: ScriptError| ScriptError::BadComponent {
        component: "Applet",
        problem: e.to_string(),
    };
    let mut r = Reader::new(body);
    let count = r.u8("count").map_err(bad)?;
    let mut aids = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        aids.push(Aid::new(r.lv("applet AID").map_err(bad)?)?);
        r.u16("install_method_offset").map_err(bad)?;
    }
    if !r.is_empty() {
        return Err(ScriptError::TrailingOctets {
            context: "Applet.cap applets",
            count: r.remaining().len(),
        });
    }
    Ok(aids)
}

/// A CAP file's components, each kept whole (tag, size, body).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CapFile {
    components: BTreeMap<Component, Vec<u8>>,
}

impl CapFile {
    /// Reads a CAP zip: the `*.cap` entries of a `javacard/` folder (for example
    /// `com/example/javacard/Header.cap`); other entries are ignored.
    pub fn from_zip(bytes: &[u8]) -> Result<Self, ScriptError> {
        let zip_err = |e: zip::result::ZipError| ScriptError::Zip(e.to_string());
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
        let mut cap = CapFile::default();
        for i in 0..archive.len() {
            let mut entry = archive.by_index(i).map_err(zip_err)?;
            let name = entry.name().replace('\\', "/");
            let mut parts = name.rsplit('/');
            let file = parts.next().unwrap_or_default();
            let in_javacard = parts
                .next()
                .is_some_and(|dir| dir.eq_ignore_ascii_case("javacard"));
            // ASCII lowercasing keeps byte offsets, so the stem length carries over.
            let Some(stem_len) = file.to_ascii_lowercase().strip_suffix(".cap").map(str::len)
            else {
                continue;
            };
            let stem = file.get(..stem_len).unwrap_or_default();
            if !in_javacard {
                continue;
            }
            let Some(component) = Component::from_name(stem) else {
                continue;
            };
            let mut data = Vec::new();
            (&mut entry)
                .take(MAX_COMPONENT as u64 + 1)
                .read_to_end(&mut data)
                .map_err(|e| ScriptError::Zip(format!("{name}: {e}")))?;
            if data.len() > MAX_COMPONENT {
                return Err(ScriptError::BadComponent {
                    component: component.name(),
                    problem: format!("larger than {MAX_COMPONENT} octets"),
                });
            }
            cap.insert(component, data)?;
        }
        cap.check_mandatory()?;
        Ok(cap)
    }

    /// Builds a CAP file from whole components (tag, size, body), checking their framing.
    pub fn from_components(
        components: impl IntoIterator<Item = (Component, Vec<u8>)>,
    ) -> Result<Self, ScriptError> {
        let mut cap = CapFile::default();
        for (c, bytes) in components {
            cap.insert(c, bytes)?;
        }
        cap.check_mandatory()?;
        Ok(cap)
    }

    fn insert(&mut self, component: Component, bytes: Vec<u8>) -> Result<(), ScriptError> {
        component_body(component, &bytes)?;
        if self.components.insert(component, bytes).is_some() {
            return Err(ScriptError::DuplicateComponent(component.name()));
        }
        Ok(())
    }

    fn check_mandatory(&self) -> Result<(), ScriptError> {
        match Component::LOAD_ORDER
            .into_iter()
            .find(|c| c.is_mandatory() && !self.components.contains_key(c))
        {
            Some(missing) => Err(ScriptError::MissingComponent(missing.name())),
            None => Ok(()),
        }
    }

    /// One component, whole, if present.
    pub fn component(&self, c: Component) -> Option<&[u8]> {
        self.components.get(&c).map(Vec::as_slice)
    }

    /// Parsed Header component.
    pub fn header(&self) -> Result<HeaderInfo, ScriptError> {
        parse_header_component(
            self.component(Component::Header)
                .ok_or(ScriptError::MissingComponent("Header"))?,
        )
    }

    /// Applet AIDs from the Applet component (empty for a library package).
    pub fn applet_aids(&self) -> Result<Vec<Aid>, ScriptError> {
        self.component(Component::Applet)
            .map_or(Ok(Vec::new()), parse_applet_component)
    }

    /// The load file: components in [`Component::LOAD_ORDER`], without Descriptor and Debug.
    pub fn load_file(&self) -> Result<LoadFile, ScriptError> {
        self.load_file_with_descriptor(false)
    }

    /// The load file, with the Descriptor component appended last if `descriptor` is set
    /// (some cards want it; Debug is never loaded).
    pub fn load_file_with_descriptor(&self, descriptor: bool) -> Result<LoadFile, ScriptError> {
        self.check_mandatory()?;
        let extra = descriptor.then_some(Component::Descriptor);
        let bytes: Vec<u8> = Component::LOAD_ORDER
            .into_iter()
            .chain(extra)
            .filter_map(|c| self.component(c))
            .flatten()
            .copied()
            .collect();
        Ok(LoadFile {
            header: self.header()?,
            applet_aids: self.applet_aids()?,
            bytes,
        })
    }
}

/// A load file (the Load File Data Block content of GP Card Spec 11.6) with the AIDs it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFile {
    bytes: Vec<u8>,
    header: HeaderInfo,
    applet_aids: Vec<Aid>,
}

impl LoadFile {
    /// Reads a pre-built load file (IJC): components back to back, each `tag u2-size body`,
    /// Header first. Component order is kept as given.
    pub fn from_ijc(bytes: &[u8]) -> Result<Self, ScriptError> {
        let mut r = Reader::new(bytes);
        let mut seen = BTreeMap::new();
        while !r.is_empty() {
            let start = bytes.len() - r.remaining().len();
            let tag = r.u8("IJC component tag")?;
            let size = r.u16("IJC component size")?;
            r.take(usize::from(size), "IJC component body")?;
            let end = bytes.len() - r.remaining().len();
            let component =
                Component::from_tag(tag).ok_or(ScriptError::UnknownComponentTag(tag))?;
            if seen.insert(component, start..end).is_some() {
                return Err(ScriptError::DuplicateComponent(component.name()));
            }
        }
        if bytes.first() != Some(&Component::Header.tag()) {
            return Err(match seen.contains_key(&Component::Header) {
                true => ScriptError::BadComponent {
                    component: "Header",
                    problem: "not the first component of the load file".into(),
                },
                false => ScriptError::MissingComponent("Header"),
            });
        }
        if let Some(missing) = Component::LOAD_ORDER
            .into_iter()
            .find(|c| c.is_mandatory() && !seen.contains_key(c))
        {
            return Err(ScriptError::MissingComponent(missing.name()));
        }
        let slice = |c: Component| seen.get(&c).and_then(|range| bytes.get(range.clone()));
        let header = parse_header_component(slice(Component::Header).unwrap_or_default())?;
        let applet_aids =
            slice(Component::Applet).map_or(Ok(Vec::new()), parse_applet_component)?;
        Ok(LoadFile {
            bytes: bytes.to_vec(),
            header,
            applet_aids,
        })
    }

    /// The load file octets (what follows `C4 L` in the first LOAD block).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The package AID, used as load file AID.
    pub fn package_aid(&self) -> &Aid {
        &self.header.package_aid
    }

    /// Applet AIDs (module AIDs for INSTALL [for install]).
    pub fn applet_aids(&self) -> &[Aid] {
        &self.applet_aids
    }

    /// The parsed Header component.
    pub fn header(&self) -> &HeaderInfo {
        &self.header
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::apdu::tests::h;
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    pub(crate) const PACKAGE_AID: &str = "F00102030405";
    pub(crate) const APPLET_AID: &str = "F0010203040501";

    /// Components of a small applet package: realistic Header and Applet, filler bodies else.
    pub(crate) fn test_components() -> Vec<(&'static str, Vec<u8>)> {
        vec![
            // tag 01, size 0x10: DECAFFED, CAP 2.1, flags ACC_APPLET, package 1.0, AID.
            (
                "Header",
                h("01 0010 DECAFFED 01 02 04 00 01 06 F00102030405"),
            ),
            ("Directory", h("02 0003 AABBCC")),
            // one applet, AID length 7, install method offset 0x002A.
            ("Applet", h("03 000B 01 07 F0010203040501 002A")),
            ("Import", h("04 0001 00")),
            ("ConstantPool", h("05 0002 4444")),
            ("Class", h("06 0002 1111")),
            ("Method", h("07 0003 222222")),
            ("StaticField", h("08 0001 33")),
            ("RefLocation", h("09 0001 55")),
            ("Descriptor", h("0B 0001 66")),
            ("Debug", h("0C 0001 77")),
        ]
    }

    /// The expected load file of [`test_components`], in load order without Descriptor.
    pub(crate) fn expected_load_file() -> Vec<u8> {
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

    /// Builds an in-memory CAP zip from (name, bytes) components, in reverse order to show the
    /// zip order does not matter, plus a manifest that must be ignored.
    pub(crate) fn build_cap_zip(components: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        w.start_file("META-INF/MANIFEST.MF", opts).unwrap();
        w.write_all(b"Manifest-Version: 1.0\r\n").unwrap();
        for (name, bytes) in components.iter().rev() {
            w.start_file(format!("com/example/hello/javacard/{name}.cap"), opts)
                .unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn zip_cap_to_load_file() {
        let zip = build_cap_zip(&test_components());
        let cap = CapFile::from_zip(&zip).unwrap();
        let lf = cap.load_file().unwrap();
        assert_eq!(lf.bytes(), &expected_load_file()[..]);
        assert_eq!(lf.package_aid().to_string(), PACKAGE_AID);
        assert_eq!(lf.applet_aids().len(), 1);
        assert_eq!(lf.applet_aids()[0].to_string(), APPLET_AID);
        let hdr = lf.header();
        assert_eq!((hdr.cap_major, hdr.cap_minor, hdr.flags), (2, 1, 4));
        assert_eq!(hdr.package_name, None);
        // Descriptor on request, last.
        let with_desc = cap.load_file_with_descriptor(true).unwrap();
        let mut expected = expected_load_file();
        expected.extend_from_slice(&h("0B 0001 66"));
        assert_eq!(with_desc.bytes(), &expected[..]);
        // The IJC path gives the same result.
        assert_eq!(LoadFile::from_ijc(lf.bytes()).unwrap(), lf);
    }

    #[test]
    fn zip_cap_errors() {
        let without = |skip: &str| {
            let comps: Vec<_> = test_components()
                .into_iter()
                .filter(|(n, _)| *n != skip)
                .collect();
            CapFile::from_zip(&build_cap_zip(&comps))
        };
        assert_eq!(
            without("Header").unwrap_err().to_string(),
            "CAP file lacks Header.cap"
        );
        assert_eq!(
            without("RefLocation").unwrap_err(),
            ScriptError::MissingComponent("RefLocation")
        );
        // Applet is optional: a library package.
        let lib = without("Applet").unwrap();
        assert!(lib.load_file().unwrap().applet_aids().is_empty());

        let mut comps = test_components();
        comps[0].1 = h("01 0010 CAFEBABE 01 02 04 00 01 06 F00102030405");
        assert_eq!(
            CapFile::from_zip(&build_cap_zip(&comps))
                .unwrap()
                .load_file()
                .unwrap_err()
                .to_string(),
            "Header.cap magic 0xCAFEBABE is not 0xDECAFFED"
        );
        let mut comps = test_components();
        comps[1].1 = h("02 0004 AABBCC");
        assert!(matches!(
            CapFile::from_zip(&build_cap_zip(&comps)),
            Err(ScriptError::BadComponent {
                component: "Directory",
                ..
            })
        ));
        let mut comps = test_components();
        comps[0].1 = h("01 0015 DECAFFED 01 02 04 00 01 0B F00102030405060708090A");
        assert!(CapFile::from_zip(&build_cap_zip(&comps)).is_ok());
        comps[0].1 = h("01 001B DECAFFED 01 02 04 00 01 11 F00102030405060708090A0B0C0D0E0F10");
        let cap = CapFile::from_zip(&build_cap_zip(&comps)).unwrap();
        assert_eq!(
            cap.load_file().unwrap_err().to_string(),
            "AID length 17 out of 5..=16"
        );
        assert!(matches!(
            CapFile::from_zip(b"not a zip"),
            Err(ScriptError::Zip(_))
        ));
    }

    #[test]
    fn header_with_package_name() {
        let hdr = parse_header_component(&h(
            "01 0014 DECAFFED 02 02 04 00 01 06 F00102030405 03 616263",
        ))
        .unwrap();
        assert_eq!(hdr.package_name, Some(b"abc".to_vec()));
    }

    #[test]
    fn ijc_errors() {
        let lf = expected_load_file();
        assert!(matches!(
            LoadFile::from_ijc(&lf[..lf.len() - 1]),
            Err(ScriptError::Truncated { .. })
        ));
        // Directory first, Header later.
        let mut swapped = h("02 0003 AABBCC");
        swapped.extend_from_slice(&h("01 0010 DECAFFED 01 02 04 00 01 06 F00102030405"));
        swapped.extend_from_slice(&lf[25..]);
        assert!(matches!(
            LoadFile::from_ijc(&swapped),
            Err(ScriptError::BadComponent {
                component: "Header",
                ..
            })
        ));
        let mut unknown = lf.clone();
        unknown.extend_from_slice(&h("2A 0000"));
        assert_eq!(
            LoadFile::from_ijc(&unknown).unwrap_err(),
            ScriptError::UnknownComponentTag(0x2A)
        );
        assert_eq!(
            LoadFile::from_ijc(&[]).unwrap_err(),
            ScriptError::MissingComponent("Header")
        );
    }

    proptest! {
        #[test]
        fn cap_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = LoadFile::from_ijc(&bytes);
            let _ = CapFile::from_zip(&bytes);
            let _ = parse_header_component(&bytes);
            let _ = parse_applet_component(&bytes);
        }

        #[test]
        fn mutated_zip_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut zip = build_cap_zip(&test_components());
            let len = zip.len();
            for (pos, val) in flips {
                if let Some(b) = zip.get_mut(pos % len) {
                    *b = val;
                }
            }
            if let Ok(cap) = CapFile::from_zip(&zip) {
                let _ = cap.load_file();
            }
        }

        #[test]
        fn mutated_ijc_never_panics(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut ijc = expected_load_file();
            let len = ijc.len();
            for (pos, val) in flips {
                if let Some(b) = ijc.get_mut(pos % len) {
                    *b = val;
                }
            }
            let _ = LoadFile::from_ijc(&ijc);
        }
    }
}
