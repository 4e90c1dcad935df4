//! The `otagw` binary: CLI edge over the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("otagw: {e:#}");
            ExitCode::FAILURE
        }
    }
}
