//! Provisioning: SIM vendors' output files (`VAR_OUT:` CSV, as the simulator's
//! [`Fleet::from_vendor_file`](crate::sim::Fleet::from_vendor_file) reads them, with the same
//! column names and key rules) turned into [`NewCard`]s, and the checks that refuse a whole
//! file naming every bad line: ICCID (18 to 20 digits once trailing F padding is removed; on
//! 19 and 20 digits the last one is the ITU-T E.118 Luhn check digit over the others, as
//! [`Fleet::generate`](crate::sim::Fleet::generate) writes them), IMSI (6 to 15 digits),
//! MSISDN (1 to 15 digits, optional `+`), keys (whole octets, 8/16/24/32 of them), counters,
//! cards repeated in the file and cards already provisioned. Profile names and TARs too.
//!
//! Columns other than the identities, keys and counters are kept as card attributes, except
//! secrets (PIN*, PUK*, ADM*, KI, OPC, OP, DEK*), which are not stored and never printed.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::BufRead;

pub(crate) mod vendor;

use crate::digits::{luhn_digit, Digits};
use crate::store::{
    CardChanges, FactorySubscription, KeyMaterial, KeySetRecord, NewCard, Store, StoreError,
};
use vendor::{check_columns, header_columns, parse_counter, parse_key, split_fields, Column};

/// Most problems an error lists (the rest are counted).
const MAX_LISTED: usize = 20;

/// One problem of a vendor file (line from 1; 0 for the file as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The line.
    pub line: usize,
    /// The column, when one is at fault.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, &self.field) {
            (0, _) => write!(f, "{}", self.reason),
            (n, Some(field)) => write!(f, "line {n}, field {field}: {}", self.reason),
            (n, None) => write!(f, "line {n}: {}", self.reason),
        }
    }
}

/// Why a vendor file is refused (nothing of it is imported).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Lines that are wrong (all of them, in line order).
    #[error("{}", list(.0))]
    Rejected(Vec<Problem>),
    /// The file cannot be read.
    #[error("reading the file: {0}")]
    Io(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ProvisionError {
    /// The first problem, if the file was refused for its content.
    pub fn first_problem(&self) -> Option<&Problem> {
        match self {
            ProvisionError::Rejected(p) => p.first(),
            _ => None,
        }
    }
}

fn list(problems: &[Problem]) -> String {
    let mut out = format!(
        "vendor file refused, nothing imported ({} problem{}):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems.iter().take(MAX_LISTED) {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    if problems.len() > MAX_LISTED {
        out.push_str(&format!("\n  ... and {} more", problems.len() - MAX_LISTED));
    }
    out
}

/// A parsed, checked vendor file.
#[derive(Debug, Default)]
pub struct VendorFile {
    /// The cards, in file order.
    pub cards: Vec<NewCard>,
    /// The line of each card.
    pub lines: Vec<usize>,
    /// Secret columns present in the file and not stored.
    pub dropped_columns: Vec<String>,
}

/// Whether a column holds a secret that is neither stored nor printed.
fn secret_column(name: &str) -> bool {
    ["PIN", "PUK", "ADM", "DEK"]
        .iter()
        .any(|p| name.starts_with(p))
        || matches!(name, "KI" | "OPC" | "OP" | "K")
}

/// An ICCID's digits without its F padding; 18 to 20 digits, Luhn-checked on 19 and 20.
pub fn normalize_iccid(value: &str) -> Result<String, String> {
    let digits = value.trim_end_matches(['F', 'f']);
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(18..=20).contains(&digits.len()) {
        return Err(format!(
            "{value:?} is not 18 to 20 digits (after removing trailing F padding)"
        ));
    }
    if digits.len() >= 19 {
        let values: Vec<u8> = digits.bytes().map(|b| b - b'0').collect();
        let (body, check) = values.split_at(values.len() - 1);
        let expected = luhn_digit(body);
        if check.first() != Some(&expected) {
            return Err(format!(
                "{value:?}: check digit {} is not the Luhn digit {expected} of the digits before it",
                check.first().copied().unwrap_or_default()
            ));
        }
    }
    Ok(digits.to_string())
}

/// A card update checked the same way for REST (`PATCH /api/v1/cards/{iccid}`) and the CLI
/// (`otagw card update`): IMSI as [`check_imsi`], MSISDN as [`normalize_msisdn`], attribute
/// names not empty and not secrets (PIN*, PUK*, ADM*, KI, ...), `cardClass` `uicc` or `gsm`; at
/// least one change. The error is (field, problem), the field as the API names it.
pub fn card_changes(
    imsi: Option<&str>,
    msisdn: Option<&str>,
    attributes: &BTreeMap<String, Option<String>>,
) -> Result<CardChanges, (String, String)> {
    if imsi.is_none() && msisdn.is_none() && attributes.is_empty() {
        return Err((
            "body".into(),
            "nothing to change: give imsi, msisdn or attributes".into(),
        ));
    }
    let imsi = imsi
        .map(|v| check_imsi(v.trim()))
        .transpose()
        .map_err(|p| ("imsi".to_string(), p))?;
    let msisdn = msisdn
        .map(|v| normalize_msisdn(v.trim()))
        .transpose()
        .map_err(|p| ("msisdn".to_string(), p))?;
    for (name, value) in attributes {
        let field = format!("attributes.{name}");
        if name.trim().is_empty() {
            return Err(("attributes".into(), "an attribute name is empty".into()));
        }
        if secret_column(&name.to_ascii_uppercase()) {
            return Err((
                field,
                "secrets (PIN, PUK, ADM, KI, OPC, DEK) are not stored".into(),
            ));
        }
        if let (true, Some(v)) = (name == "cardClass", value) {
            if !["uicc", "gsm"].contains(&v.to_ascii_lowercase().as_str()) {
                return Err((field, format!("{v:?} is not uicc or gsm")));
            }
        }
    }
    Ok(CardChanges {
        imsi,
        msisdn,
        attributes: attributes.clone(),
    })
}

/// An IMSI: 6 to 15 digits.
pub fn check_imsi(value: &str) -> Result<String, String> {
    if (6..=15).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not 6 to 15 digits"))
    }
}

/// An MSISDN: 1 to 15 digits, optionally after '+' (stored without it).
pub fn normalize_msisdn(value: &str) -> Result<String, String> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    if (1..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(digits.to_string())
    } else {
        Err(format!(
            "{value:?} is not 1 to 15 digits, optionally after '+'"
        ))
    }
}

/// A profile or group name: 1 to 64 characters, no spaces, not only digits (so that an
/// argument taking an id or a name is never ambiguous).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters"));
    }
    if name.chars().any(char::is_whitespace) {
        return Err(format!("{name:?} must not contain spaces"));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{name:?} must not contain control characters"));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{name:?} must not be only digits (ids are numbers)"
        ));
    }
    Ok(())
}

/// A TAR: 6 hex digits (upper-cased).
pub fn check_tar(tar: &str) -> Result<String, String> {
    if tar.len() == 6 && tar.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(tar.to_ascii_uppercase())
    } else {
        Err(format!("{tar:?} is not a TAR (6 hex digits)"))
    }
}

/// One row's KIc, KID, KIK and counter of one key version.
type RowKeys = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<u64>,
);

/// Reads a vendor file line by line; [`Self::finish`] gives the cards or every problem.
#[derive(Debug, Default)]
pub struct VendorParser {
    header: Option<(Vec<String>, Vec<Column>)>,
    problems: Vec<Problem>,
    by_iccid: HashMap<Digits, u32>,
    by_msisdn: HashMap<Digits, u32>,
    file: VendorFile,
    last_line: usize,
}

impl VendorParser {
    /// A parser before the header.
    pub fn new() -> Self {
        Self::default()
    }

    fn problem(&mut self, line: usize, field: Option<&str>, reason: impl Into<String>) {
        self.problems.push(Problem {
            line,
            field: field.map(str::to_string),
            reason: reason.into(),
        });
    }

    /// Takes line `n` (from 1) of the file.
    pub fn line(&mut self, n: usize, line: &str) {
        self.last_line = n;
        let line = line.trim();
        let Some((names, kinds)) = &self.header else {
            if let Some(names) = header_columns(line) {
                match check_columns(n, &names, 1) {
                    Ok(kinds) => {
                        self.file.dropped_columns =
                            names.iter().filter(|c| secret_column(c)).cloned().collect();
                        self.header = Some((names, kinds));
                    }
                    Err(e) => {
                        self.problem(0, None, e.to_string());
                        self.header = Some((Vec::new(), Vec::new()));
                    }
                }
            }
            return;
        };
        if line.is_empty() || kinds.is_empty() {
            return;
        }
        let fields = split_fields(line);
        if fields.len() != kinds.len() {
            let reason = format!(
                "{} fields, but the VAR_OUT header names {}",
                fields.len(),
                kinds.len()
            );
            self.problem(n, None, reason);
            return;
        }
        let mut found = Vec::new();
        let mut iccid = None;
        let mut imsi = None;
        let mut msisdn = None;
        let mut attributes = BTreeMap::new();
        let mut keys: [RowKeys; 16] = Default::default();
        let mut all_counter = None;
        let mut factory = Vec::new();
        for ((kind, name), value) in kinds.iter().zip(names).zip(&fields) {
            let mut bad = |reason: String| found.push((name.clone(), reason));
            let slot = |v: u8| usize::from(v).min(15);
            match *kind {
                Column::Iccid => match normalize_iccid(value) {
                    Ok(v) => iccid = Some(v),
                    Err(e) => bad(e),
                },
                Column::Imsi => match check_imsi(value) {
                    Ok(v) => imsi = Some(v),
                    Err(e) => bad(e),
                },
                Column::Msisdn => match normalize_msisdn(value) {
                    Ok(v) => msisdn = Some(v),
                    Err(e) => bad(e),
                },
                Column::Kic(_) | Column::Kid(_) | Column::Kik(_) if value.is_empty() => {}
                Column::Kic(v) => match parse_key(value) {
                    Ok(k) => keys[slot(v)].0 = Some(k),
                    Err(e) => bad(e),
                },
                Column::Kid(v) => match parse_key(value) {
                    Ok(k) => keys[slot(v)].1 = Some(k),
                    Err(e) => bad(e),
                },
                Column::Kik(v) => match parse_key(value) {
                    Ok(k) => keys[slot(v)].2 = Some(k),
                    Err(e) => bad(e),
                },
                Column::Counter(_) if value.is_empty() => {}
                Column::Counter(v) => match parse_counter(value) {
                    Ok(c) => match v {
                        None => all_counter = Some(c.value()),
                        Some(v) => keys[slot(v)].3 = Some(c.value()),
                    },
                    Err(e) => bad(e),
                },
                Column::FactoryImsi(_) if value.is_empty() => {}
                Column::FactoryImsi(id) => match check_imsi(value) {
                    Ok(v) => factory.push((name, FactorySubscription { id, imsi: v })),
                    Err(e) => bad(e),
                },
                Column::Ignored => {
                    if !value.is_empty() && !secret_column(name) {
                        attributes.insert(name.clone(), (*value).to_string());
                    }
                }
            }
        }
        // One IMSI per subscription on a card.
        for (i, (name, f)) in factory.iter().enumerate() {
            if imsi.as_ref() == Some(&f.imsi) || factory[..i].iter().any(|(_, g)| g.imsi == f.imsi)
            {
                found.push((
                    (*name).clone(),
                    format!("{} is already another of the card's subscriptions", f.imsi),
                ));
            }
        }
        factory.sort_by_key(|(_, f)| f.id);
        if !found.is_empty() {
            for (field, reason) in found {
                self.problem(n, Some(&field), reason);
            }
            return;
        }
        let (Some(iccid), Some(imsi), Some(msisdn)) = (iccid, imsi, msisdn) else {
            return;
        };
        let index = self.file.cards.len() as u32;
        let mut duplicate = false;
        for (field, value, map) in [
            ("ICCID", &iccid, &mut self.by_iccid),
            ("MSISDN", &msisdn, &mut self.by_msisdn),
        ] {
            let Some(key) = Digits::parse(value) else {
                continue;
            };
            if let Some(&first) = map.get(&key) {
                let first_line = self.file.lines.get(first as usize).copied().unwrap_or(0);
                self.problems.push(Problem {
                    line: n,
                    field: Some(field.to_string()),
                    reason: format!("{value} already on line {first_line} (a card once per file)"),
                });
                duplicate = true;
            } else {
                map.insert(key, index);
            }
        }
        if duplicate {
            return;
        }
        let key_sets = keys
            .into_iter()
            .enumerate()
            .filter(|(_, k)| k.0.is_some() || k.1.is_some() || k.2.is_some())
            .map(|(version, (kic, kid, kik, counter))| KeySetRecord {
                version: version as u8,
                kic_algorithm: None,
                kid_algorithm: None,
                keys: KeyMaterial {
                    kic: kic.unwrap_or_default(),
                    kid: kid.unwrap_or_default(),
                    kik,
                },
                counter: counter.or(all_counter).unwrap_or(0),
                rotated_at: None,
            })
            .collect();
        self.file.cards.push(NewCard {
            iccid,
            imsi: Some(imsi),
            msisdn: Some(msisdn),
            attributes,
            key_sets,
            factory_subscriptions: factory.into_iter().map(|(_, f)| f).collect(),
        });
        self.file.lines.push(n);
    }

    /// Cards read so far.
    pub fn cards(&self) -> usize {
        self.file.cards.len()
    }

    /// The cards, or every problem in line order.
    pub fn finish(mut self) -> Result<VendorFile, ProvisionError> {
        if self.header.is_none() {
            self.problem(0, None, "no VAR_OUT: header line found");
        } else if self.problems.is_empty() && self.file.cards.is_empty() {
            self.problem(0, None, "no card in the file");
        }
        if self.problems.is_empty() {
            Ok(self.file)
        } else {
            self.problems.sort_by_key(|p| p.line);
            Err(ProvisionError::Rejected(self.problems))
        }
    }
}

/// Parses a whole vendor file held in memory.
pub fn parse_vendor_text(text: &str) -> Result<VendorFile, ProvisionError> {
    let mut p = VendorParser::new();
    for (i, line) in text.lines().enumerate() {
        p.line(i + 1, line);
    }
    p.finish()
}

/// Parses a vendor file from a reader, calling `progress` with the octets read so far.
pub fn parse_vendor_reader(
    mut reader: impl BufRead,
    mut progress: impl FnMut(u64),
) -> Result<VendorFile, ProvisionError> {
    let mut p = VendorParser::new();
    let mut buf = String::new();
    let mut read = 0u64;
    let mut n = 0usize;
    loop {
        buf.clear();
        let got = reader
            .read_line(&mut buf)
            .map_err(|e| ProvisionError::Io(e.to_string()))?;
        if got == 0 {
            break;
        }
        n += 1;
        read += got as u64;
        p.line(n, &buf);
        if n.is_multiple_of(8192) {
            progress(read);
        }
    }
    progress(read);
    p.finish()
}

/// Refuses a file whose cards are already in the store (any account), naming their lines;
/// looks them up in batches.
pub async fn check_not_provisioned(
    store: &dyn Store,
    file: &VendorFile,
) -> Result<(), ProvisionError> {
    let mut problems = Vec::new();
    let mut line_of: HashMap<&str, usize> = HashMap::new();
    for chunk in file.cards.chunks(5000).zip(file.lines.chunks(5000)) {
        let iccids: Vec<String> = chunk.0.iter().map(|c| c.iccid.clone()).collect();
        let existing = store.existing_iccids(&iccids).await?;
        if existing.is_empty() {
            continue;
        }
        line_of.clear();
        for (card, line) in chunk.0.iter().zip(chunk.1) {
            line_of.insert(card.iccid.as_str(), *line);
        }
        for iccid in existing {
            problems.push(Problem {
                line: line_of.get(iccid.as_str()).copied().unwrap_or(0),
                field: Some("ICCID".into()),
                reason: format!("card {iccid} is already provisioned"),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        problems.sort_by_key(|p| p.line);
        Err(ProvisionError::Rejected(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID
8991234567788901234F,421234567890123,961234567890,12122343423234234234234234234,56756785675678568678678678678
8991234567788901235F,421234567890124,961234567891,23434564756786846345235345645745,23454576679803454767897890890678
";

    #[test]
    fn brief_sample_refused_naming_line_2_and_kic() {
        let e = parse_vendor_text(SAMPLE).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("line 2, field KIC: 29 hex digits, but a key is whole octets"),
            "{text}"
        );
        // Its ICCIDs fail the Luhn check too, named as well.
        assert!(text.contains("line 2, field ICCID"), "{text}");
        assert!(text.contains("line 3, field ICCID"), "{text}");
    }

    #[test]
    fn iccids() {
        assert_eq!(
            normalize_iccid("8949000000000000001F").unwrap_err(),
            "\"8949000000000000001F\": check digit 1 is not the Luhn digit 0 of the digits before it"
        );
        assert_eq!(
            normalize_iccid("8949000000000000000F").unwrap(),
            "8949000000000000000"
        );
        assert_eq!(
            normalize_iccid("894900000000000000").unwrap(),
            "894900000000000000"
        );
        assert!(normalize_iccid("89490000000000000").is_err());
        assert!(normalize_iccid("89A900000000000000").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name("123").is_err());
        assert!(check_name("poc_3cards").is_ok());
        assert_eq!(check_tar("b00010").unwrap(), "B00010");
    }

    #[test]
    fn generated_fleet_parses() {
        let text = crate::sim::Fleet::generate(50, 1, Default::default())
            .unwrap()
            .to_vendor_file();
        let f = parse_vendor_text(&text).unwrap();
        assert_eq!(f.cards.len(), 50);
        assert_eq!(f.lines[0], 2);
        assert_eq!(f.cards[0].key_sets[0].keys.kic.len(), 16);
        let dup = format!("{text}{}", text.lines().nth(1).unwrap());
        let e = parse_vendor_text(&dup).unwrap_err().to_string();
        assert!(
            e.contains("line 52, field ICCID: 8949000000000000000"),
            "{e}"
        );
        assert!(e.contains("already on line 2"), "{e}");
    }

    #[test]
    fn secrets_dropped_and_attributes_kept() {
        let k = "00112233445566778899AABBCCDDEEFF";
        let text = format!(
            "VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,PIN1,PUK1,ACC,KVN\n\
             89490000000000000007,262010000000001,+491700000001,{k},{k},1234,12345678,0001,01\n"
        );
        let f = parse_vendor_text(&text).unwrap();
        let c = &f.cards[0];
        assert_eq!(c.msisdn.as_deref(), Some("491700000001"));
        assert_eq!(c.attributes.get("ACC").map(String::as_str), Some("0001"));
        assert!(!c.attributes.contains_key("PIN1"));
        assert_eq!(f.dropped_columns, vec!["PIN1", "PUK1"]);
    }

    #[test]
    fn factory_subscriptions() {
        // As the simulator writes them: IMSI2.. columns after the keys.
        let defaults = crate::sim::FleetDefaults {
            factory_subscriptions: 2,
            ..Default::default()
        };
        let text = crate::sim::Fleet::generate(3, 1, defaults)
            .unwrap()
            .to_vendor_file();
        assert!(
            text.lines().next().unwrap().ends_with(",IMSI2,IMSI3"),
            "{text}"
        );
        let f = parse_vendor_text(&text).unwrap();
        assert_eq!(
            f.cards[2].factory_subscriptions,
            [
                FactorySubscription {
                    id: 2,
                    imsi: "262030000000002".into()
                },
                FactorySubscription {
                    id: 3,
                    imsi: "262040000000002".into()
                }
            ]
        );
        assert!(f.cards[2].attributes.is_empty());

        // Any column order, empty fields for empty slots; bad and repeated IMSIs named.
        let k = "00112233445566778899AABBCCDDEEFF";
        let text = format!(
            "VAR_OUT:ICCID,IMSI5,IMSI,MSISDN,KIC,KID,IMSI2
             89490000000000000007,,262010000000001,491700000001,{k},{k},262020000000001
             89490000000000000015,2620X,262010000000002,491700000002,{k},{k},
             89490000000000000023,262010000000003,262010000000003,491700000003,{k},{k},
"
        );
        let e = parse_vendor_text(&text).unwrap_err().to_string();
        assert!(
            e.contains("line 3, field IMSI5: \"2620X\" is not 6 to 15 digits"),
            "{e}"
        );
        assert!(
            e.contains("line 4, field IMSI5: 262010000000003 is already another of the card's subscriptions"),
            "{e}"
        );
        let fine: String = text.lines().take(2).map(|l| format!("{l}\n")).collect();
        let f = parse_vendor_text(&fine).unwrap();
        assert_eq!(f.cards[0].factory_subscriptions.len(), 1);
        assert_eq!(f.cards[0].factory_subscriptions[0].id, 2);
        // IMSI9 is past the application's 8 slots: an attribute like any other column.
        assert_eq!(
            vendor::column("IMSI9", 1),
            vendor::Column::Ignored,
            "slots 2..=8 only"
        );
    }
}
