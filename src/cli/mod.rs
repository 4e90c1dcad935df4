//! Command-line interface (clap). Runtime glue only: protocol work is in the library.

mod account;
mod api_load;
mod backend;
mod campaign;
mod campaign_load;
mod card;
mod demo;
mod output;
mod provision;
mod remote;
mod scp80;
mod serve;
mod sms_load;
mod smsc_sim;
mod subscription;
mod subscription_load;
mod user;
mod walk;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// otagw: an over-the-air gateway for SIM cards (SCP80 over SMS-PP, CAT_TP, SCP81 over HTTPS).
#[derive(Debug, Parser)]
#[command(name = "otagw", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    global: backend::Global,
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
    /// The gateway, the SMSC simulator and virtual cards in one process: commands of several
    /// types through the REST API, and what the cards answered. Embedded defaults, no setup.
    Demo(demo::DemoArgs),
    /// Run the gateway: REST API, engine, store, SMPP binds.
    Serve(serve::ServeArgs),
    /// Accounts (API tenants).
    Account {
        #[command(subcommand)]
        command: account::AccountCommand,
    },
    /// API bearer tokens.
    Token {
        #[command(subcommand)]
        command: account::TokenCommand,
    },
    /// The web console's users (sign in at /console/).
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Load: commands through REST -> pipeline -> SMPP -> simulator -> PoR -> stored result.
    ApiLoad(api_load::ApiLoadArgs),
    /// Walk one RFM command through the codecs step by step, then over SMPP (no store, no API).
    Walk(walk::DemoArgs),
    /// SMSC simulator: an SMPP server routing to a fleet of virtual UICCs.
    SmscSim(smsc_sim::SmscSimArgs),
    /// End-to-end load: gateway -> SMSC simulator -> virtual cards -> PoR, per send window.
    SmsLoad(sms_load::SmsLoadArgs),
    /// Card profiles (applet, TARs, campaign defaults).
    Profile {
        #[command(subcommand)]
        command: provision::ProfileCommand,
    },
    /// Provision cards from a SIM vendor output file (`VAR_OUT:` CSV), all or nothing.
    Provision(provision::ProvisionArgs),
    /// Cards: list, show, update, delete (the checks of the REST API; never key values).
    Card {
        #[command(subcommand)]
        command: card::CardCommand,
    },
    /// Card groups (cards of one profile).
    Group {
        #[command(subcommand)]
        command: provision::GroupCommand,
    },
    /// Campaign benchmark: simulator, provisioning, group, campaign through `serve`, each a
    /// separate process; messages per second and the gateway's peak memory.
    CampaignLoad(campaign_load::CampaignLoadArgs),
    /// Bulk campaigns over card groups: create, start, stop, retry-failed, show.
    Campaign {
        #[command(subcommand)]
        command: campaign::CampaignCommand,
    },
    /// Bootstrap benchmark: cards of a group taken from their bootstrap subscription to an
    /// operational one (download + switch + fallback + delete); cards per second.
    SubscriptionLoad(subscription_load::SubscriptionLoadArgs),
    /// Subscriptions on multi-subscription cards (the Secure Router), through a running
    /// gateway (--server): list, download, enable, delete, fallback, audit, trail.
    Subscription {
        #[command(subcommand)]
        command: subscription::SubscriptionCommand,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = backend::Ctx::new(cli.global)?;
    // Verbs the REST API has no call for: they need the store (or no gateway at all).
    let local_only = |verb: &str, why: &str| ctx.local_only(verb, why);
    match cli.command {
        Command::Scp80 { command } => {
            local_only("scp80", "it computes offline and asks no server")?;
            scp80::run(command)
        }
        Command::Demo(args) => {
            local_only("demo", "it runs its own gateway, simulator and cards")?;
            demo::run(args)
        }
        Command::Serve(args) => {
            local_only("serve", "it is the server")?;
            serve::run(args)
        }
        Command::Account { command } => account::run_account(&ctx, command),
        Command::Token { command } => account::run_token(&ctx, command),
        Command::User { command } => user::run(&ctx, command),
        Command::Walk(args) => {
            local_only("walk", "it runs the codecs and SMPP in this process")?;
            walk::run(args)
        }
        Command::ApiLoad(args) => {
            local_only("api-load", "a load tool runs its own gateway and simulator")?;
            api_load::run(args)
        }
        Command::SmscSim(args) => {
            local_only("smsc-sim", "a simulator listens on this machine")?;
            smsc_sim::run(args)
        }
        Command::SmsLoad(args) => {
            local_only("sms-load", "a load tool runs its own gateway and simulator")?;
            sms_load::run(args)
        }
        Command::Profile { command } => provision::run_profile(&ctx, command),
        Command::Provision(args) => provision::run_provision(&ctx, args),
        Command::Card { command } => card::run(&ctx, command),
        Command::Group { command } => provision::run_group(&ctx, command),
        Command::Campaign { command } => campaign::run(&ctx, command),
        Command::Subscription { command } => subscription::run(&ctx, command),
        Command::SubscriptionLoad(args) => {
            local_only(
                "subscription-load",
                "a load tool runs its own gateway and simulator",
            )?;
            subscription_load::run(args)
        }
        Command::CampaignLoad(args) => {
            local_only(
                "campaign-load",
                "a load tool runs its own processes and store",
            )?;
            campaign_load::run(args)
        }
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
