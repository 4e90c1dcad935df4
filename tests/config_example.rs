//! `otagw.example.toml` lists every setting `src/config.rs` (and `[log]`, `src/logging.rs`)
//! accepts, each in its section, and the file parses as a configuration once its commented
//! settings are uncommented.

use std::collections::BTreeMap;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Field names of `pub struct name { ... }` in Rust source.
fn fields(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub struct {name} {{"))
        .unwrap_or_else(|| panic!("struct {name} not found"));
    let body = &source[start..];
    let end = body.find("\n}").expect("end of struct");
    body[..end]
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix("pub ")?;
            let (field, _) = rest.split_once(':')?;
            field
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_')
                .then(|| field.to_string())
        })
        .collect()
}

/// The example's settings by section ("" for the top level), commented ones included.
fn example_settings(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        if let Some((key, _)) = l.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                out.entry(section.clone())
                    .or_default()
                    .push(key.to_string());
            }
        }
    }
    out
}

#[test]
fn every_setting_is_in_the_example() {
    let config = read("src/config.rs");
    let logging = read("src/logging.rs");
    let example = example_settings(&read("otagw.example.toml"));
    let sections = [
        ("api", "ApiSettings", &config),
        ("store", "StoreSettings", &config),
        ("smpp", "SmppSettings", &config),
        ("pipeline", "PipelineSettings", &config),
        ("https", "HttpsSettings", &config),
        ("campaigns", "CampaignsSettings", &config),
        ("subscriptions", "SubscriptionsSettings", &config),
        ("catp", "CatpConfig", &config),
        ("log", "LogSettings", &logging),
    ];
    let mut missing = Vec::new();
    for (section, name, source) in sections {
        let listed = example.get(section).cloned().unwrap_or_default();
        for f in fields(source, name) {
            if !listed.contains(&f) {
                missing.push(format!("[{section}] {f}"));
            }
        }
    }
    let top = example.get("").cloned().unwrap_or_default();
    for f in fields(&config, "Config") {
        let is_section = sections.iter().any(|(s, _, _)| *s == f);
        if !is_section && !top.contains(&f) {
            missing.push(f);
        }
    }
    assert!(
        missing.is_empty(),
        "settings missing from otagw.example.toml: {missing:?}"
    );
}

#[test]
fn the_example_parses_with_every_setting_uncommented() {
    let text = read("otagw.example.toml");
    // Uncomment `# key = value` lines and `# [section]` headers (not prose).
    let uncommented: String = text
        .lines()
        .map(|l| {
            let t = l.trim_start();
            match t.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once('=').is_some_and(|(k, _)| {
                            let k = k.trim();
                            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        }) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    otagw::config::Config::parse(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
}
