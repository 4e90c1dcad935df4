//! Command scripts: the compact and expanded remote command formats of TS 102 226 clause 5.

use super::apdu::CApdu;
use super::ber::{ber_length_size, push_ber_length, push_tlv, tlv_size, Reader, MAX_BER_LENGTH};
use super::error::ScriptError;

/// Command Scripting template, definite length (TS 102 226 clause 5.2.1, TS 101 220 table 7.18).
pub const TAG_COMMAND_SCRIPT: u8 = 0xAA;
/// Command Scripting template, indefinite length (TS 102 226 clause 5.2.1).
pub const TAG_COMMAND_SCRIPT_INDEFINITE: u8 = 0xAE;
/// C-APDU TLV (TS 102 226 clause 5.2.1.1).
pub const TAG_C_APDU: u8 = 0x22;
/// Immediate Action TLV (TS 102 226 clause 5.2.1.2).
pub const TAG_IMMEDIATE_ACTION: u8 = 0x81;
/// Error Action TLV (TS 102 226 clause 5.2.1.3).
pub const TAG_ERROR_ACTION: u8 = 0x82;
/// Script Chaining TLV (TS 102 226 clause 5.2.1.4).
pub const TAG_SCRIPT_CHAINING: u8 = 0x83;

/// The remote command formats of TS 102 226 clause 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScriptFormat {
    /// Clause 5.1: C-APDUs back to back (T=0 style, P3 always present).
    Compact,
    /// Clause 5.2: Command Scripting template `AA` with a definite length.
    ExpandedDefinite,
    /// Clause 5.2: Command Scripting template `AE 80 .. 00 00` with indefinite length.
    ExpandedIndefinite,
}

impl ScriptFormat {
    /// Heuristic guess from the first octet: `AA`/`AE` expanded, anything else compact.
    ///
    /// A compact script whose first CLA is AA or AE would be misread; callers that know which
    /// format they sent should say so instead.
    pub fn detect(bytes: &[u8]) -> ScriptFormat {
        match bytes.first() {
            Some(&TAG_COMMAND_SCRIPT) => ScriptFormat::ExpandedDefinite,
            Some(&TAG_COMMAND_SCRIPT_INDEFINITE) => ScriptFormat::ExpandedIndefinite,
            _ => ScriptFormat::Compact,
        }
    }

    /// True for both expanded variants.
    pub fn is_expanded(self) -> bool {
        !matches!(self, ScriptFormat::Compact)
    }

    /// Octets the script framing adds around `content_len` octets of items.
    pub fn template_overhead(self, content_len: usize) -> usize {
        match self {
            ScriptFormat::Compact => 0,
            ScriptFormat::ExpandedDefinite => 1 + ber_length_size(content_len),
            ScriptFormat::ExpandedIndefinite => 4,
        }
    }

    /// Octets one C-APDU takes inside a script of this format.
    pub fn command_size(self, apdu: &CApdu) -> usize {
        match self {
            ScriptFormat::Compact => apdu.compact_len(),
            _ => tlv_size(apdu.encoded_len()),
        }
    }
}

/// One entry of a command script.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScriptItem {
    /// A command (C-APDU TLV `22` in the expanded format).
    Command(CApdu),
    /// Immediate Action TLV `81`; raw value (coding in TS 102 226 clause 5.2.1.2).
    ImmediateAction(Vec<u8>),
    /// Error Action TLV `82`; raw value, may be empty (TS 102 226 clause 5.2.1.3).
    ErrorAction(Vec<u8>),
    /// Script Chaining TLV `83`; raw value (TS 102 226 clause 5.2.1.4).
    ScriptChaining(Vec<u8>),
}

impl ScriptItem {
    fn name(&self) -> &'static str {
        match self {
            ScriptItem::Command(_) => "a C-APDU",
            ScriptItem::ImmediateAction(_) => "an Immediate Action TLV",
            ScriptItem::ErrorAction(_) => "an Error Action TLV",
            ScriptItem::ScriptChaining(_) => "a Script Chaining TLV",
        }
    }

    fn expanded_size(&self) -> usize {
        match self {
            ScriptItem::Command(c) => tlv_size(c.encoded_len()),
            ScriptItem::ImmediateAction(v)
            | ScriptItem::ErrorAction(v)
            | ScriptItem::ScriptChaining(v) => tlv_size(v.len()),
        }
    }

    fn push_expanded(&self, out: &mut Vec<u8>) -> Result<(), ScriptError> {
        match self {
            ScriptItem::Command(c) => push_tlv(out, TAG_C_APDU, &c.to_bytes()),
            ScriptItem::ImmediateAction(v) => push_tlv(out, TAG_IMMEDIATE_ACTION, v),
            ScriptItem::ErrorAction(v) => push_tlv(out, TAG_ERROR_ACTION, v),
            ScriptItem::ScriptChaining(v) => push_tlv(out, TAG_SCRIPT_CHAINING, v),
        }
    }
}

/// A remote command script: an ordered list of C-APDUs and, in the expanded format, action TLVs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CommandScript {
    /// Items in execution order.
    pub items: Vec<ScriptItem>,
}

impl CommandScript {
    /// An empty script.
    pub fn new() -> Self {
        CommandScript::default()
    }

    /// A script of plain commands.
    pub fn from_commands(commands: impl IntoIterator<Item = CApdu>) -> Self {
        CommandScript {
            items: commands.into_iter().map(ScriptItem::Command).collect(),
        }
    }

    /// Appends a command.
    pub fn push(&mut self, apdu: CApdu) -> &mut Self {
        self.items.push(ScriptItem::Command(apdu));
        self
    }

    /// Appends any item.
    pub fn push_item(&mut self, item: ScriptItem) -> &mut Self {
        self.items.push(item);
        self
    }

    /// The commands, in order, without the action TLVs.
    pub fn commands(&self) -> impl Iterator<Item = &CApdu> {
        self.items.iter().filter_map(|i| match i {
            ScriptItem::Command(c) => Some(c),
            _ => None,
        })
    }

    /// Number of commands.
    pub fn command_count(&self) -> usize {
        self.commands().count()
    }

    /// Octets [`CommandScript::encode`] would produce.
    pub fn encoded_len(&self, format: ScriptFormat) -> Result<usize, ScriptError> {
        match format {
            ScriptFormat::Compact => self
                .items
                .iter()
                .map(|i| match i {
                    ScriptItem::Command(c) => Ok(c.compact_len()),
                    other => Err(ScriptError::NotInCompactFormat(other.name())),
                })
                .sum(),
            _ => {
                let content: usize = self.items.iter().map(ScriptItem::expanded_size).sum();
                Ok(content + format.template_overhead(content))
            }
        }
    }

    /// Encodes the script in `format`.
    ///
    /// Compact (clause 5.1.1): each command as a T=0 style TPDU (see
    /// [`CApdu::to_compact_bytes`]); action TLVs are refused. Expanded (clause 5.2.1): `AA L`
    /// or `AE 80`, then one TLV per item in order, then `00 00` for the indefinite form.
    pub fn encode(&self, format: ScriptFormat) -> Result<Vec<u8>, ScriptError> {
        let mut out = Vec::with_capacity(self.encoded_len(format)?);
        match format {
            ScriptFormat::Compact => {
                for item in &self.items {
                    match item {
                        ScriptItem::Command(c) => out.extend_from_slice(&c.to_compact_bytes()),
                        other => return Err(ScriptError::NotInCompactFormat(other.name())),
                    }
                }
            }
            ScriptFormat::ExpandedDefinite => {
                let content: usize = self.items.iter().map(ScriptItem::expanded_size).sum();
                out.push(TAG_COMMAND_SCRIPT);
                push_ber_length(&mut out, content)?;
                for item in &self.items {
                    item.push_expanded(&mut out)?;
                }
            }
            ScriptFormat::ExpandedIndefinite => {
                out.extend_from_slice(&[TAG_COMMAND_SCRIPT_INDEFINITE, 0x80]);
                for item in &self.items {
                    item.push_expanded(&mut out)?;
                }
                out.extend_from_slice(&[0x00, 0x00]);
            }
        }
        Ok(out)
    }

    /// Parses a script in the given format (see [`parse_command_script`]).
    pub fn parse(bytes: &[u8], format: ScriptFormat) -> Result<Self, ScriptError> {
        parse_command_script(bytes, format)
    }
}

/// Parses a command script in `format`.
///
/// Compact: C-APDUs back to back, P3 read as Le or Lc per [`super::apdu::p3_is_le`] (the format
/// carries no lengths of its own, so this is how a card splits it too). Expanded: the template,
/// then C-APDU, Immediate Action, Error Action and Script Chaining TLVs; any other tag is an
/// error.
pub fn parse_command_script(
    bytes: &[u8],
    format: ScriptFormat,
) -> Result<CommandScript, ScriptError> {
    let mut script = CommandScript::new();
    match format {
        ScriptFormat::Compact => {
            let mut r = Reader::new(bytes);
            while !r.is_empty() {
                script.push(CApdu::read_compact(&mut r)?);
            }
        }
        ScriptFormat::ExpandedDefinite => {
            let mut r = Reader::new(bytes);
            let tlv = r.tlv("Command Scripting template")?;
            if tlv.tag != TAG_COMMAND_SCRIPT {
                return Err(ScriptError::UnexpectedTag {
                    context: "Command Scripting template",
                    expected: "AA",
                    found: tlv.tag,
                });
            }
            if !r.is_empty() {
                return Err(ScriptError::TrailingOctets {
                    context: "Command Scripting template",
                    count: r.remaining().len(),
                });
            }
            let mut inner = Reader::new(tlv.value);
            while !inner.is_empty() {
                script.items.push(read_command_item(&mut inner)?);
            }
        }
        ScriptFormat::ExpandedIndefinite => {
            let mut r = Reader::new(bytes);
            let head = r.take(2, "Command Scripting template")?;
            if head != [TAG_COMMAND_SCRIPT_INDEFINITE, 0x80] {
                let found = head.first().copied().unwrap_or_default();
                return Err(ScriptError::UnexpectedTag {
                    context: "Command Scripting template",
                    expected: "AE 80",
                    found,
                });
            }
            loop {
                match r.remaining() {
                    [0x00, 0x00, rest @ ..] => {
                        if !rest.is_empty() {
                            return Err(ScriptError::TrailingOctets {
                                context: "Command Scripting template",
                                count: rest.len(),
                            });
                        }
                        break;
                    }
                    [] => {
                        return Err(ScriptError::MissingEndOfContents(
                            "Command Scripting template",
                        ))
                    }
                    _ => script.items.push(read_command_item(&mut r)?),
                }
            }
        }
    }
    Ok(script)
}

fn read_command_item(r: &mut Reader<'_>) -> Result<ScriptItem, ScriptError> {
    let tlv = r.tlv("Command Scripting template item")?;
    Ok(match tlv.tag {
        TAG_C_APDU => ScriptItem::Command(CApdu::parse(tlv.value)?),
        TAG_IMMEDIATE_ACTION => ScriptItem::ImmediateAction(tlv.value.to_vec()),
        TAG_ERROR_ACTION => ScriptItem::ErrorAction(tlv.value.to_vec()),
        TAG_SCRIPT_CHAINING => ScriptItem::ScriptChaining(tlv.value.to_vec()),
        found => {
            return Err(ScriptError::UnexpectedTag {
                context: "Command Scripting template item",
                expected: "22, 81, 82 or 83",
                found,
            })
        }
    })
}

/// One script produced by [`pack_scripts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedScript {
    /// Which of the input commands it carries.
    pub commands: std::ops::Range<usize>,
    /// The encoded script.
    pub bytes: Vec<u8>,
}

/// Packs `commands`, in order, into as few scripts of `format` as fit `budget` octets each.
///
/// Greedy filling is optimal here: the size of a run of consecutive commands only grows as
/// commands are added, so taking the longest run that fits each time gives the fewest scripts.
/// Fails if one command alone does not fit.
pub fn pack_scripts(
    commands: &[CApdu],
    format: ScriptFormat,
    budget: usize,
) -> Result<Vec<PackedScript>, ScriptError> {
    let fits = |content: usize| {
        content + format.template_overhead(content) <= budget
            && (format == ScriptFormat::Compact || content <= MAX_BER_LENGTH)
    };
    let mut out = Vec::new();
    let mut start = 0;
    while start < commands.len() {
        let mut end = start;
        let mut content = 0;
        for c in commands.iter().skip(start) {
            let size = format.command_size(c);
            if !fits(content + size) {
                break;
            }
            content += size;
            end += 1;
        }
        if end == start {
            let needed = commands
                .get(start)
                .map(|c| {
                    let size = format.command_size(c);
                    size + format.template_overhead(size)
                })
                .unwrap_or_default();
            return Err(ScriptError::CommandTooLarge {
                index: start,
                needed,
                budget,
            });
        }
        let slice = commands.get(start..end).unwrap_or_default();
        let bytes = CommandScript::from_commands(slice.iter().cloned()).encode(format)?;
        out.push(PackedScript {
            commands: start..end,
            bytes,
        });
        start = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::apdu::tests::{arb_capdu, h};
    use super::*;
    use proptest::prelude::*;

    fn sel(fid: &str) -> CApdu {
        CApdu::new(0x00, 0xA4, 0x00, 0x04, h(fid), None).unwrap()
    }

    #[test]
    fn expanded_indefinite_encoding() {
        let script = CommandScript::from_commands([
            sel("3F00"),
            sel("7FF0"),
            CApdu::case2(0, 0xB0, 0, 0, 0),
        ]);
        assert_eq!(
            script.encode(ScriptFormat::ExpandedIndefinite).unwrap(),
            h("AE80 2207 00A40004023F00 2207 00A40004027FF0 2205 00B0000000 0000")
        );
        assert_eq!(
            script.encode(ScriptFormat::ExpandedDefinite).unwrap(),
            h("AA19 2207 00A40004023F00 2207 00A40004027FF0 2205 00B0000000")
        );
        assert_eq!(
            script.encode(ScriptFormat::Compact).unwrap(),
            h("00A40004023F00 00A40004027FF0 00B0000000")
        );
        for f in [
            ScriptFormat::Compact,
            ScriptFormat::ExpandedDefinite,
            ScriptFormat::ExpandedIndefinite,
        ] {
            let bytes = script.encode(f).unwrap();
            assert_eq!(bytes.len(), script.encoded_len(f).unwrap());
            assert_eq!(parse_command_script(&bytes, f).unwrap(), script);
            assert_eq!(ScriptFormat::detect(&bytes), f);
        }
    }

    #[test]
    fn action_tlvs() {
        let mut s = CommandScript::new();
        s.push_item(ScriptItem::ScriptChaining(vec![0x01]))
            .push(sel("3F00"))
            .push_item(ScriptItem::ImmediateAction(vec![0x01]))
            .push_item(ScriptItem::ErrorAction(vec![]));
        let bytes = s.encode(ScriptFormat::ExpandedDefinite).unwrap();
        assert_eq!(bytes, h("AA11 830101 2207 00A40004023F00 810101 8200"));
        assert_eq!(
            parse_command_script(&bytes, ScriptFormat::ExpandedDefinite).unwrap(),
            s
        );
        assert_eq!(s.command_count(), 1);
        assert_eq!(
            s.encode(ScriptFormat::Compact).unwrap_err().to_string(),
            "compact format cannot carry a Script Chaining TLV; use an expanded format"
        );
    }

    #[test]
    fn long_definite_length() {
        // 20 UPDATE BINARY commands of 4 + 1 + 10 octets: 20 * (2 + 15) = 340 octets of content.
        let cmds: Vec<CApdu> = (0..20)
            .map(|i| CApdu::new(0xA0, 0xD6, 0, i, vec![i; 10], None).unwrap())
            .collect();
        let bytes = CommandScript::from_commands(cmds.clone())
            .encode(ScriptFormat::ExpandedDefinite)
            .unwrap();
        assert_eq!(&bytes[..4], &h("AA820154")[..]);
        assert_eq!(bytes.len(), 4 + 340);
    }

    #[test]
    fn compact_parsing_decides_p3() {
        // SELECT 7F20 then GET RESPONSE 0x16, as in the pySim example whose answer is tested in
        // the response module.
        let s =
            parse_command_script(&h("A0A40000027F20 A0C0000016"), ScriptFormat::Compact).unwrap();
        let c: Vec<_> = s.commands().collect();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].data(), &h("7F20")[..]);
        assert_eq!(c[1].le(), Some(0x16));
        assert_eq!(
            parse_command_script(&h("A0D600000C 00112233445566778899"), ScriptFormat::Compact)
                .unwrap_err()
                .to_string(),
            "C-APDU Lc 12 but 10 data octets follow"
        );
    }

    #[test]
    fn expanded_parse_errors() {
        let f = ScriptFormat::ExpandedIndefinite;
        assert!(matches!(
            parse_command_script(&h("AE80 2207 00A40004023F00"), f),
            Err(ScriptError::MissingEndOfContents(_))
        ));
        assert!(matches!(
            parse_command_script(&h("AE80 0000 00"), f),
            Err(ScriptError::TrailingOctets { count: 1, .. })
        ));
        assert!(matches!(
            parse_command_script(&h("AE80 9901000000"), f),
            Err(ScriptError::UnexpectedTag { found: 0x99, .. })
        ));
        let d = ScriptFormat::ExpandedDefinite;
        assert!(matches!(
            parse_command_script(&h("AA05 2207 00A4"), d),
            Err(ScriptError::Truncated { .. })
        ));
        assert_eq!(
            parse_command_script(&h("AA830000012200"), d)
                .unwrap_err()
                .to_string(),
            "BER length 0x83 not supported"
        );
        assert!(matches!(
            parse_command_script(&h("AB00"), d),
            Err(ScriptError::UnexpectedTag { found: 0xAB, .. })
        ));
    }

    #[test]
    fn packing() {
        let cmds: Vec<CApdu> = (0..5)
            .map(|i| CApdu::new(0x80, 0xE8, 0, i, vec![0xEE; 20], None).unwrap())
            .collect();
        // Compact: each command is 25 octets; 60 octets hold two.
        let packed = pack_scripts(&cmds, ScriptFormat::Compact, 60).unwrap();
        assert_eq!(packed.len(), 3);
        assert_eq!(packed[0].commands, 0..2);
        assert_eq!(packed[2].commands, 4..5);
        assert_eq!(packed[0].bytes.len(), 50);
        // Expanded definite: each item 27 octets; 2 items = 54 + 2 = 56.
        let packed = pack_scripts(&cmds, ScriptFormat::ExpandedDefinite, 56).unwrap();
        assert_eq!(packed.len(), 3);
        assert_eq!(packed[0].bytes.len(), 56);
        let packed = pack_scripts(&cmds, ScriptFormat::ExpandedDefinite, 55).unwrap();
        assert_eq!(packed.len(), 5);
        // Indefinite: 27 + 4 = 31 for one.
        assert_eq!(
            pack_scripts(&cmds, ScriptFormat::ExpandedIndefinite, 30).unwrap_err(),
            ScriptError::CommandTooLarge {
                index: 0,
                needed: 31,
                budget: 30
            }
        );
        assert!(pack_scripts(&[], ScriptFormat::Compact, 0)
            .unwrap()
            .is_empty());
    }

    fn arb_format() -> impl Strategy<Value = ScriptFormat> {
        prop_oneof![
            Just(ScriptFormat::Compact),
            Just(ScriptFormat::ExpandedDefinite),
            Just(ScriptFormat::ExpandedIndefinite),
        ]
    }

    fn arb_item() -> impl Strategy<Value = ScriptItem> {
        let v = || proptest::collection::vec(any::<u8>(), 0..8);
        prop_oneof![
            4 => arb_capdu().prop_map(ScriptItem::Command),
            1 => v().prop_map(ScriptItem::ImmediateAction),
            1 => v().prop_map(ScriptItem::ErrorAction),
            1 => v().prop_map(ScriptItem::ScriptChaining),
        ]
    }

    /// Commands whose compact form parses back unchanged: case 2 only for Le-type INS, case 3
    /// with data otherwise, case 1 for the rest.
    fn arb_compact_capdu() -> impl Strategy<Value = CApdu> {
        arb_capdu().prop_map(|c| {
            let (cla, ins, p1, p2) = (c.cla(), c.ins(), c.p1(), c.p2());
            if super::super::apdu::p3_is_le(ins, p1) {
                CApdu::case2(cla, ins, p1, p2, c.le().unwrap_or(0))
            } else {
                c.without_le()
            }
        })
    }

    proptest! {
        #[test]
        fn expanded_roundtrip(items in proptest::collection::vec(arb_item(), 0..12), indefinite in any::<bool>()) {
            let f = if indefinite { ScriptFormat::ExpandedIndefinite } else { ScriptFormat::ExpandedDefinite };
            let s = CommandScript { items };
            let bytes = s.encode(f).unwrap();
            prop_assert_eq!(bytes.len(), s.encoded_len(f).unwrap());
            prop_assert_eq!(parse_command_script(&bytes, f).unwrap(), s);
        }

        #[test]
        fn compact_roundtrip(cmds in proptest::collection::vec(arb_compact_capdu(), 0..12)) {
            let s = CommandScript::from_commands(cmds);
            let bytes = s.encode(ScriptFormat::Compact).unwrap();
            prop_assert_eq!(parse_command_script(&bytes, ScriptFormat::Compact).unwrap(), s);
        }

        #[test]
        fn packing_respects_budget(
            cmds in proptest::collection::vec(arb_capdu(), 0..20),
            f in arb_format(),
            budget in 0usize..700,
        ) {
            match pack_scripts(&cmds, f, budget) {
                Ok(packed) => {
                    let mut next = 0;
                    for p in &packed {
                        prop_assert!(p.bytes.len() <= budget);
                        prop_assert_eq!(p.commands.start, next);
                        next = p.commands.end;
                        if f.is_expanded() {
                            let parsed = parse_command_script(&p.bytes, f).unwrap();
                            prop_assert_eq!(parsed.command_count(), p.commands.len());
                        }
                    }
                    prop_assert_eq!(next, cmds.len());
                    // Greedy: a script could not have taken the next script's first command.
                    for w in packed.windows(2) {
                        let merged = &cmds[w[0].commands.start..=w[1].commands.start];
                        let len = CommandScript::from_commands(merged.iter().cloned()).encoded_len(f).unwrap();
                        prop_assert!(len > budget);
                    }
                }
                Err(ScriptError::CommandTooLarge { needed, .. }) => prop_assert!(needed > budget),
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }

        #[test]
        fn script_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), f in arb_format()) {
            let _ = parse_command_script(&bytes, f);
        }

        #[test]
        fn script_parsers_never_panic_on_framed_input(body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut a = vec![0xAE, 0x80];
            a.extend_from_slice(&body);
            let _ = parse_command_script(&a, ScriptFormat::ExpandedIndefinite);
            let mut b = vec![0xAA];
            b.extend_from_slice(&super::super::ber::encode_ber_length(body.len()).unwrap());
            b.extend_from_slice(&body);
            let _ = parse_command_script(&b, ScriptFormat::ExpandedDefinite);
        }
    }
}
