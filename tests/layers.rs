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
    ("subscription", 6),
    // The API, and the web console beside it.
    ("api", 7),
    ("console", 7),
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

/// Groups of modules that use each other (directly or round a loop), within a layer: listed
/// here until untangled; the test fails on a new one and on a listed one that is gone.
const KNOWN_CYCLES: &[&[&str]] = &[];

/// Strongly connected groups of two or more modules (Tarjan).
fn cycles(edges: &BTreeMap<(String, String), Vec<String>>) -> Vec<Vec<String>> {
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        graph.entry(a).or_default().push(b);
        graph.entry(b).or_default();
    }
    struct State<'a> {
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, g: &BTreeMap<&'a str, Vec<&'a str>>, s: &mut State<'a>) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on.insert(v);
        for &w in &g[v] {
            if !s.index.contains_key(w) {
                visit(w, g, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut group = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                group.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                s.out.push(group);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(v, &graph, &mut s);
        }
    }
    s.out.sort();
    s.out
}

#[test]
fn no_new_cycles_between_modules() {
    let found = cycles(&edges());
    let known: Vec<Vec<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|m| m.to_string()).collect())
        .collect();
    let show = |edges: &BTreeMap<(String, String), Vec<String>>, group: &[String]| -> String {
        edges
            .iter()
            .filter(|((a, b), _)| group.contains(a) && group.contains(b))
            .map(|((a, b), files)| format!("  {a} -> {b} ({})", files.join(", ")))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let e = edges();
    for group in &found {
        assert!(
            known.contains(group),
            "modules using each other: {group:?}\n{}",
            show(&e, group)
        );
    }
    for group in &known {
        assert!(
            found.contains(group),
            "no longer a cycle, remove from KNOWN_CYCLES: {group:?}"
        );
    }
}

#[test]
fn the_cycle_finder_finds_loops() {
    let mut e: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (a, b) in [
        ("a", "b"),
        ("b", "c"),
        ("c", "a"),
        ("c", "d"),
        ("d", "e"),
        ("e", "d"),
    ] {
        e.insert((a.into(), b.into()), vec![]);
    }
    assert_eq!(
        cycles(&e),
        vec![
            vec!["a".to_string(), "b".into(), "c".into()],
            vec!["d".to_string(), "e".into()]
        ]
    );
    assert!(cycles(&edges()).is_empty(), "{:?}", cycles(&edges()));
}
