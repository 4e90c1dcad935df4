//! How the CLI shows objects, as the operators' procedure does: an instance table, then
//! `Json:` and the object on one line. With `--json` only the JSON (for scripts). The JSON is
//! the REST API's own body for the object, so local and remote mode print the same.

use serde::Serialize;

/// The output choice (`--json`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    /// Only the JSON.
    pub(crate) json: bool,
}

/// A time for people: `2026-12-07 05:49:12 UTC` (milliseconds since the epoch in the store).
pub(crate) fn date(ms: i64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// An optional time for people (`-` when absent).
pub(crate) fn opt_date(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_string(), date)
}

/// An optional value (`-` when absent).
pub(crate) fn opt(v: Option<&str>) -> String {
    v.unwrap_or("-").to_string()
}

impl Out {
    /// One object: `TITLE:` (`Profile instance:`), a two-column table, then its JSON.
    pub(crate) fn instance<T: Serialize>(
        &self,
        title: &str,
        rows: &[(&str, String)],
        value: &T,
    ) -> anyhow::Result<()> {
        let json = serde_json::to_string(value)?;
        if self.json {
            println!("{json}");
            return Ok(());
        }
        let rows: Vec<Vec<String>> = rows
            .iter()
            .map(|(k, v)| vec![k.to_string(), v.clone()])
            .collect();
        println!("{title}:");
        print!("{}", render(None, &rows));
        println!();
        println!("Json:");
        println!("{json}");
        Ok(())
    }

    /// Several objects: `TITLE:`, a table with a header row and one row each, an optional
    /// note under it, then the JSON.
    pub(crate) fn list<T: Serialize>(
        &self,
        title: &str,
        header: &[&str],
        rows: &[Vec<String>],
        note: Option<String>,
        value: &T,
    ) -> anyhow::Result<()> {
        let json = serde_json::to_string(value)?;
        if self.json {
            println!("{json}");
            return Ok(());
        }
        println!("{title}:");
        if rows.is_empty() {
            println!("(none)");
        } else {
            print!("{}", render(Some(header), rows));
        }
        if let Some(note) = note {
            println!("{note}");
        }
        println!();
        println!("Json:");
        println!("{json}");
        Ok(())
    }
}

/// A table with a rule between rows (as the procedure prints), columns as wide as their
/// widest cell.
fn render(header: Option<&[&str]>, rows: &[Vec<String>]) -> String {
    let columns = header
        .map(<[&str]>::len)
        .unwrap_or_else(|| rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0usize; columns];
    let header_row: Option<Vec<String>> = header.map(|h| h.iter().map(|s| s.to_string()).collect());
    for row in header_row.iter().chain(rows) {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let line = |row: &Vec<String>| -> String {
        let mut s = String::new();
        for (i, w) in widths.iter().enumerate() {
            let cell = row.get(i).map(String::as_str).unwrap_or("");
            let pad = w - cell.chars().count();
            s.push_str(&format!("| {cell}{} ", " ".repeat(pad)));
        }
        s + "|\n"
    };
    let mut out = rule.clone();
    if let Some(h) = &header_row {
        out.push_str(&line(h));
        out.push_str(&rule.replace('-', "="));
    }
    for row in rows {
        out.push_str(&line(row));
        out.push_str(&rule);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_as_dates() {
        assert_eq!(date(1_796_622_552_123), "2026-12-07 05:49:12 UTC");
        assert_eq!(opt_date(None), "-");
    }

    #[test]
    fn tables_align_and_rule_every_row() {
        let t = render(
            None,
            &[
                vec!["id".into(), "3".into()],
                vec!["name".into(), "poc_3cards".into()],
            ],
        );
        assert_eq!(
            t,
            "+------+------------+\n\
             | id   | 3          |\n\
             +------+------------+\n\
             | name | poc_3cards |\n\
             +------+------------+\n"
        );
        let t = render(Some(&["id", "name"]), &[vec!["1".into(), "a".into()]]);
        assert!(t.starts_with("+----+------+\n| id | name |\n+====+======+\n| 1  | a    |"));
    }
}
