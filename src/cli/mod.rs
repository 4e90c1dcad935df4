//! Command-line interface (clap). Runtime glue only: protocol work is in the library.

mod demo;
mod scp80;
mod sms_load;
mod smsc_sim;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// otagw: an over-the-air gateway for SIM cards (SCP80 over SMS-PP, CAT_TP, SCP81 over HTTPS).
#[derive(Debug, Parser)]
#[command(name = "otagw", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// SCP80 (ETSI TS 102 225) packet tools: encode commands, decode PoRs and commands.
    Scp80 {
        #[command(subcommand)]
        command: scp80::Scp80Command,
    },
    /// Walk one RFM command from the gateway to a card and back, on embedded defaults.
    Demo(demo::DemoArgs),
    /// SMSC simulator: an SMPP server routing to a fleet of virtual UICCs.
    SmscSim(smsc_sim::SmscSimArgs),
    /// End-to-end load: gateway -> SMSC simulator -> virtual cards -> PoR, per send window.
    SmsLoad(sms_load::SmsLoadArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scp80 { command } => scp80::run(command),
        Command::Demo(args) => demo::run(args),
        Command::SmscSim(args) => smsc_sim::run(args),
        Command::SmsLoad(args) => sms_load::run(args),
    }
}

/// Parses hex, tolerating spaces, colons and a leading 0x; names the argument on error.
pub(crate) fn parse_hex(what: &str, s: &str) -> anyhow::Result<Vec<u8>> {
    let cleaned: String = s
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    hex::decode(&cleaned).map_err(|e| anyhow::anyhow!("{what}: {s:?} is not hex: {e}"))
}

/// Parses hex of an exact length.
pub(crate) fn parse_hex_n<const N: usize>(what: &str, s: &str) -> anyhow::Result<[u8; N]> {
    let v = parse_hex(what, s)?;
    let len = v.len();
    v.try_into().map_err(|_| {
        anyhow::anyhow!(
            "{what}: must be {N} octets ({} hex digits), got {len}",
            2 * N
        )
    })
}
