//! The SIM vendor output file's format, as provisioning and the simulator's fleets read it:
//! the header (`VAR_OUT:` column names), the columns otagw knows, fields, keys and counters.

use crate::script::subscription::SLOTS;
use crate::security::Counter;

/// A `VAR_OUT:` header that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header lacks a column every card needs.
    #[error("line {line}: the VAR_OUT header has no {column} column")]
    MissingColumn {
        /// Line of the header.
        line: usize,
        /// The column.
        column: &'static str,
    },
    /// A problem with the header's columns.
    #[error("line {line}: {reason}")]
    Header {
        /// Line of the header.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A column of a vendor file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Iccid,
    Imsi,
    Msisdn,
    Kic(u8),
    Kid(u8),
    Kik(u8),
    /// Counter for one key version, or all (None).
    Counter(Option<u8>),
    /// A factory subscription's IMSI in that slot (`IMSI2`..`IMSI8`; slot 1 is `IMSI`).
    FactoryImsi(u8),
    Ignored,
}

pub(crate) fn column(name: &str, main_version: u8) -> Column {
    let numbered = |prefix: &str| -> Option<u8> {
        let n = name.strip_prefix(prefix)?;
        if n.is_empty() {
            return Some(main_version);
        }
        n.parse::<u8>().ok().filter(|v| (1..=15).contains(v))
    };
    match name {
        "ICCID" => Column::Iccid,
        "IMSI" => Column::Imsi,
        "MSISDN" => Column::Msisdn,
        "CNTR" | "COUNTER" => Column::Counter(None),
        _ => {
            if let Some(v) = numbered("KIC") {
                Column::Kic(v)
            } else if let Some(v) = numbered("KID") {
                Column::Kid(v)
            } else if let Some(v) = numbered("KIK") {
                Column::Kik(v)
            } else if let Some(v) = name
                .strip_prefix("IMSI")
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|v| (2..=SLOTS as u8).contains(v))
            {
                Column::FactoryImsi(v)
            } else if let Some(v) = name.strip_prefix("CNTR").and_then(|n| n.parse::<u8>().ok()) {
                if (1..=15).contains(&v) {
                    Column::Counter(Some(v))
                } else {
                    Column::Ignored
                }
            } else {
                Column::Ignored
            }
        }
    }
}

pub(crate) fn parse_key(value: &str) -> Result<Vec<u8>, String> {
    if !value.len().is_multiple_of(2) {
        return Err(format!(
            "{} hex digits, but a key is whole octets (16, 32, 48 or 64 hex digits)",
            value.len()
        ));
    }
    let key = hex::decode(value).map_err(|e| format!("not hex: {e}"))?;
    if !matches!(key.len(), 8 | 16 | 24 | 32) {
        return Err(format!(
            "{} octets, but SCP80 keys are 8, 16, 24 or 32 octets",
            key.len()
        ));
    }
    Ok(key)
}

pub(crate) fn parse_counter(value: &str) -> Result<Counter, String> {
    if value.is_empty() || value.len() > 10 {
        return Err("a counter is 1 to 10 hex digits".into());
    }
    let v = u64::from_str_radix(value, 16).map_err(|e| format!("not hex: {e}"))?;
    Counter::new(v).map_err(|e| e.to_string())
}

/// The column names of a `VAR_OUT:` header line (upper case), or `None` for another line.
pub(crate) fn header_columns(line: &str) -> Option<Vec<String>> {
    let upper = line
        .trim()
        .trim_start_matches('\u{feff}')
        .to_ascii_uppercase();
    let rest = upper.strip_prefix("VAR_OUT:")?;
    Some(if rest.contains(',') {
        rest.split(',').map(|c| c.trim().to_string()).collect()
    } else {
        rest.split(|c: char| c == '/' || c.is_whitespace())
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    })
}

/// The kinds of a header's columns; refuses repeated columns and a header without ICCID,
/// IMSI, MSISDN or any key column.
pub(crate) fn check_columns(
    header_line: usize,
    columns: &[String],
    main_version: u8,
) -> Result<Vec<Column>, HeaderError> {
    let kinds: Vec<Column> = columns.iter().map(|c| column(c, main_version)).collect();
    for (i, kind) in kinds.iter().enumerate() {
        if *kind != Column::Ignored && kinds[..i].contains(kind) {
            return Err(HeaderError::Header {
                line: header_line,
                reason: format!(
                    "column {} repeats an earlier column (KIC/KID count as version {})",
                    columns.get(i).map_or("?", String::as_str),
                    main_version
                ),
            });
        }
    }
    for (kind, name) in [
        (Column::Iccid, "ICCID"),
        (Column::Imsi, "IMSI"),
        (Column::Msisdn, "MSISDN"),
    ] {
        if !kinds.contains(&kind) {
            return Err(HeaderError::MissingColumn {
                line: header_line,
                column: name,
            });
        }
    }
    if !kinds
        .iter()
        .any(|k| matches!(k, Column::Kic(_) | Column::Kid(_) | Column::Kik(_)))
    {
        return Err(HeaderError::MissingColumn {
            line: header_line,
            column: "KIC",
        });
    }
    Ok(kinds)
}

/// The fields of a data line: comma-separated (trimmed), or else whitespace-separated.
pub(crate) fn split_fields(line: &str) -> Vec<&str> {
    if line.contains(',') {
        line.split(',').map(str::trim).collect()
    } else {
        line.split_whitespace().collect()
    }
}
