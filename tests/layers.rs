//! The order of layers (see the module map in `src/lib.rs` and `ARCHITECTURE.md`): a module may
//! use its own layer and the ones below it. The test fails on any import against the order not
//! listed in `KNOWN` (empty now), and on a listed one that is gone (so the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module of `src/` and its layer, lowest first.
const LAYERS: &[(&str, u8)] = &[
    // Protocol and shared values: no I/O.
    ("clock", 0),
    ("digits", 0),
    ("rfc3339", 0),
    ("security", 0),
    ("logging", 0),
    ("script", 1),
    ("correlation", 1),
    ("dispatch", 2),
    // The command model, and the events it reports.
    ("command", 3),
    ("events", 3),
    // The store.
    ("store", 4),
    ("delivery", 5),
    // The engine.
    ("pipeline", 6),
    ("gateway", 6),
    ("campaign", 6),
    ("provision", 6),
    // The API.
    ("api", 7),
    // The edge: configuration, server, CLI, and the far-side tools (virtual cards, devkit).
    ("config", 8),
    ("server", 8),
    ("cli", 8),
    ("devkit", 8),
    ("sim", 8),
];

/// Imports against the order still to remove: (from, to). None since session 8; an entry
/// here must say what would remove it.
const KNOWN: &[(&str, &str)] = &[];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level modules a source text names through `crate::` (plain paths and `crate::{..}`
/// groups), test modules left out.
fn named_modules(text: &str) -> BTreeSet<String> {
    // Code only: test modules and comments (doc links included) left out.
    let text: String = text
        .split("#[cfg(test)]\nmod tests")
        .next()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let text = text.as_str();
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: those at brace depth 0.
            let mut depth = 0usize;
            let mut at_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        at_start = true;
                        continue;
                    }
                    c if c.is_whitespace() => continue,
                    _ => {}
                }
                if at_start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') {
                    out.insert(ident(&group[j..]));
                }
                at_start = false;
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// (from, to) -> the files that import it.
fn edges() -> BTreeMap<(String, String), Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default();
        let from = first.trim_end_matches(".rs").to_string();
        if from == "lib" || from == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).expect("read");
        for to in named_modules(&text) {
            if to != from && layer(&to).is_some() {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .push(rel.display().to_string());
            }
        }
    }
    edges
}

#[test]
fn every_module_has_a_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(&src).expect("src").flatten() {
        let name = e
            .file_name()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if name == "lib" || name == "main" || name == "bin" {
            continue;
        }
        assert!(layer(&name).is_some(), "src/{name} has no layer in LAYERS");
    }
}

#[test]
fn imports_follow_the_layers() {
    let edges = edges();
    let mut against: BTreeSet<(String, String)> = BTreeSet::new();
    for (from, to) in edges.keys() {
        let (Some(a), Some(b)) = (layer(from), layer(to)) else {
            continue;
        };
        if b > a {
            against.insert((from.clone(), to.clone()));
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<String> = against
        .difference(&known)
        .map(|(a, b)| {
            format!(
                "{a} -> {b} (in {})",
                edges[&(a.clone(), b.clone())].join(", ")
            )
        })
        .collect();
    let gone: Vec<String> = known
        .difference(&against)
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect();
    assert!(
        new.is_empty(),
        "imports against the layer order:\n{}",
        new.join("\n")
    );
    assert!(
        gone.is_empty(),
        "no longer imported, remove from KNOWN: {}",
        gone.join(", ")
    );
}

#[test]
fn the_scanner_reads_paths_and_groups() {
    let text = "use crate::store::Store;\nuse crate::{api::x, command::{A, B}, gateway};\n\
                fn f() { crate::clock::now_ms(); }\n#[cfg(test)]\nmod tests { use crate::sim; }";
    let names: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(names, ["api", "clock", "command", "gateway", "store"]);
}
