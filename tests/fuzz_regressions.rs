//! Replays the saved fuzz inputs on stable, without libFuzzer.
//!
//! Every file in `tests/fuzz-regressions/<target>/` goes through the very function the cargo-fuzz
//! target `<target>` runs (`fuzz/src/lib.rs`, included below), which must not panic. The folders
//! hold the crashes and interesting inputs the fuzzer found plus hand-made nasty inputs
//! (`hand-*.bin`, written by `fuzz/make_seeds.py`): empty, 300 x FF, CPL/RPL claiming 0xFFFF,
//! length fields at their maximum.

#[path = "../fuzz/src/lib.rs"]
mod fuzz_bodies;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Fewer files than this means the folder went missing or was emptied.
const MIN_INPUTS: usize = 5;
/// PoR seeds that must verify: the 10 shared response vectors that carry a valid PoR, each as SMS
/// user data and from RPL on.
const MIN_VERIFIED_POR: usize = 20;
/// Command seeds that must open: the 9 command packets of the shared SCP80 vectors.
const MIN_OPENED_COMMANDS: usize = 9;

fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fuzz-regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= MIN_INPUTS,
        "{}: only {} inputs",
        dir.display(),
        files.len()
    );
    files
}

/// Runs `body` on every input of `target`; fails naming each input that panicked.
fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panicked (messages above):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn por_key_sets_resolve() {
    assert!(fuzz_bodies::por_keys().len() >= 16);
}

#[test]
fn por_decode() {
    replay("por_decode", |data| {
        fuzz_bodies::por_decode(data);
    });
}

#[test]
fn command_decode() {
    replay("command_decode", |data| {
        fuzz_bodies::command_decode(data);
    });
}

#[test]
fn sms_parse() {
    replay("sms_parse", fuzz_bodies::sms_parse);
}

#[test]
fn script_parse() {
    replay("script_parse", fuzz_bodies::script_parse);
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("seeds")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read(p).expect("seed"))
        .collect()
}

/// The seeds in `fuzz/seeds/` (from the shared vectors) go through the same bodies without
/// panicking (a panicking seed would stop the fuzzer at once), and the PoR and command seeds
/// really get through deciphering and the RC/CC check, so the fuzzer starts from there.
#[test]
fn seeds_reach_the_deep_paths() {
    let por: Vec<usize> = seeds("por_decode")
        .iter()
        .map(|s| fuzz_bodies::por_decode(s))
        .collect();
    let verified = por.iter().filter(|n| **n > 0).count();
    eprintln!("PoR seeds verified: {verified} of {}", por.len());
    assert!(verified >= MIN_VERIFIED_POR, "{por:?}");

    let commands: Vec<usize> = seeds("command_decode")
        .iter()
        .map(|s| fuzz_bodies::command_decode(s))
        .collect();
    let opened = commands.iter().filter(|n| **n > 0).count();
    eprintln!("command seeds opened: {opened} of {}", commands.len());
    assert!(opened >= MIN_OPENED_COMMANDS, "{commands:?}");

    for seed in seeds("sms_parse") {
        fuzz_bodies::sms_parse(&seed);
    }
    for seed in seeds("script_parse") {
        fuzz_bodies::script_parse(&seed);
    }
}
