//! `otagw profile`, `otagw provision` and `otagw group`: the first steps of the operators'
//! bulk procedure (create a profile, provision cards from a vendor file, group them), written
//! straight to the configured store.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use serde::Serialize;

use otagw::api::campaigns::{CardGroup, CreateGroup, CreateProfile, Profile};
use otagw::provision::{self, check_name, check_tar};
use otagw::store::{
    Account, AppletRecord, CardKey, GroupMembers, NewProfile, ProfileDefaults, ProfileRecord, Store,
};

use super::account::StoreArgs;
use super::backend::{Backend, Ctx};
use super::output::{date, opt};

/// Default RFM applet TAR.
const RFM_TAR: &str = "B00010";
/// Default RAM applet TAR.
const RAM_TAR: &str = "000000";
/// Cards above which a group is too large for the procedure's recommendation.
const GROUP_WARN: u64 = 400_000;

#[derive(Debug, Args)]
pub(crate) struct AccountArg {
    /// Account name (default: the only account, if there is exactly one).
    #[arg(long)]
    pub(crate) account: Option<String>,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum AppType {
    Rfm,
    Ram,
    Custom,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub(crate) enum ProfileCommand {
    /// Create a profile (optionally with the RFM, RAM or a custom applet) and its defaults.
    Create {
        /// Unique per account, no spaces, not only digits.
        #[arg(long)]
        name: String,
        /// Applet the profile includes.
        #[arg(long, value_enum)]
        app_type: Option<AppType>,
        /// custom: the applet file (.cap or .ijc).
        #[arg(long)]
        app_name: Option<PathBuf>,
        /// custom: the applet's TARs (6 hex digits each).
        #[arg(long, num_args = 1..)]
        tar_list: Vec<String>,
        /// Default SPI (4 hex digits).
        #[arg(long)]
        spi: Option<String>,
        /// Default KIc octet (2 hex digits).
        #[arg(long)]
        kic_byte: Option<String>,
        /// Default KID octet (2 hex digits).
        #[arg(long)]
        kid_byte: Option<String>,
        /// Default transport.
        #[arg(long)]
        transport: Option<String>,
        /// Default validity period, minutes.
        #[arg(long)]
        validity_period: Option<u32>,
        /// HTTP parameters for TLS_TRIGGER campaigns (a JSON object).
        #[arg(long)]
        http_params: Option<String>,
        /// CAT_TP push parameters for the profile's cards (a JSON object: bearerType,
        /// bearerParameters, bufferSize, apn, address, cattpPort, pushTar).
        #[arg(long)]
        catp_params: Option<String>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List the account's profiles.
    List {
        #[command(flatten)]
        account: AccountArg,
    },
    /// One profile.
    Show {
        /// Profile id or name.
        #[arg(long)]
        profile: String,
        #[command(flatten)]
        account: AccountArg,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ProvisionArgs {
    /// The vendor output file (`VAR_OUT:` CSV).
    #[arg(long)]
    file: PathBuf,
    /// Profile id or name.
    #[arg(long)]
    profile: String,
    /// Also create a card group holding the cards (named after the file).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    auto_group: bool,
    /// Name of the automatic group (default: the file name without extension).
    #[arg(long)]
    group_name: Option<String>,
    /// Print the time of each phase and the cards per second.
    #[arg(long)]
    benchmark: bool,
    #[command(flatten)]
    account: AccountArg,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a card group: every card of the profile, or those listed.
    Create {
        /// Profile id or name.
        #[arg(long)]
        profile: String,
        /// Unique within the profile, no spaces.
        #[arg(long)]
        name: String,
        /// File of MSISDNs, one per line.
        #[arg(long, conflicts_with = "iccid_list")]
        msisdn_list: Option<PathBuf>,
        /// File of ICCIDs, one per line.
        #[arg(long)]
        iccid_list: Option<PathBuf>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// List the account's card groups.
    List {
        #[command(flatten)]
        account: AccountArg,
    },
    /// One card group.
    Show {
        /// Card group id.
        #[arg(long)]
        id: i64,
        #[command(flatten)]
        account: AccountArg,
    },
}

pub(crate) async fn resolve_account(
    store: &dyn Store,
    name: Option<&str>,
) -> anyhow::Result<Account> {
    match name {
        Some(n) => store
            .account_by_name(n)
            .await?
            .with_context(|| format!("--account: no account named {n:?}")),
        None => {
            let mut all = store.accounts().await?;
            match all.len() {
                1 => Ok(all.remove(0)),
                0 => bail!("no account yet: create one with `otagw account create --name NAME`"),
                n => bail!("{n} accounts exist: choose one with --account NAME"),
            }
        }
    }
}

pub(crate) async fn resolve_profile(
    store: &dyn Store,
    account: &Account,
    id_or_name: &str,
) -> anyhow::Result<ProfileRecord> {
    let found = match id_or_name.parse::<i64>() {
        Ok(id) => store.profile(&account.id, id).await?,
        Err(_) => store.profile_by_name(&account.id, id_or_name).await?,
    };
    found.with_context(|| {
        format!(
            "--profile: account {} has no profile {id_or_name:?}",
            account.name
        )
    })
}

fn hex_arg(flag: &str, value: Option<String>, digits: usize) -> anyhow::Result<Option<String>> {
    match value {
        None => Ok(None),
        Some(v) if v.len() == digits && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(v.to_ascii_uppercase()))
        }
        Some(v) => bail!("{flag}: {v:?} is not {digits} hex digits"),
    }
}

/// The instance table of a profile.
pub(crate) fn profile_rows(p: &Profile) -> Vec<(&'static str, String)> {
    let d = &p.defaults;
    let compact = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    let mut rows = vec![
        ("id", p.id.to_string()),
        ("name", p.name.clone()),
        ("appType", opt(p.app_type.as_deref())),
        ("applet", opt(p.applet_id.as_deref())),
        (
            "tars",
            if p.tars.is_empty() {
                "-".into()
            } else {
                p.tars.join(" ")
            },
        ),
        ("spi", opt(d.spi.as_deref())),
        ("kicByte", opt(d.kic_byte.as_deref())),
        ("kidByte", opt(d.kid_byte.as_deref())),
        ("transport", opt(d.transport.as_deref())),
        (
            "validityPeriod",
            d.validity_period_minutes
                .map_or("-".into(), |m| format!("{m} min")),
        ),
        ("created", date(p.created)),
        ("updated", date(p.updated)),
    ];
    // Transport settings only where the profile has them.
    for (name, v) in [("http", &d.http), ("catp", &d.catp), ("gp", &d.gp)] {
        if let Some(v) = compact(v) {
            rows.push((name, v));
        }
    }
    rows
}

/// The instance table of a card group.
fn group_rows(g: &CardGroup) -> Vec<(&'static str, String)> {
    vec![
        ("id", g.id.to_string()),
        ("name", g.name.clone()),
        ("profile", g.profile_id.to_string()),
        ("cards", g.cards.to_string()),
        ("created", date(g.created)),
    ]
}

pub(crate) fn run_profile(ctx: &Ctx, command: ProfileCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProfileCommand::Create {
            name,
            app_type,
            app_name,
            tar_list,
            spi,
            kic_byte,
            kid_byte,
            transport,
            validity_period,
            http_params,
            catp_params,
            account,
        } => {
            check_name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let tars: Vec<String> = tar_list
                .iter()
                .map(|t| check_tar(t).map_err(|e| anyhow::anyhow!("--tar-list: {e}")))
                .collect::<anyhow::Result<_>>()?;
            let applet = match app_type {
                Some(AppType::Custom) => {
                    let path =
                        app_name.context("--app-type custom needs --app-name FILE.cap|FILE.ijc")?;
                    let ext = path
                        .extension()
                        .and_then(|e| e.to_str())
                        .map(str::to_ascii_lowercase);
                    if !matches!(ext.as_deref(), Some("cap" | "ijc")) {
                        bail!("--app-name: {} must end with .cap or .ijc", path.display());
                    }
                    if tars.is_empty() {
                        bail!("--app-type custom needs --tar-list T1 T2 ...");
                    }
                    let content = std::fs::read(&path)
                        .with_context(|| format!("--app-name: reading {}", path.display()))?;
                    let parsed = otagw::script::cap::CapFile::from_zip(&content)
                        .map(|_| ())
                        .or_else(|_| otagw::script::cap::LoadFile::from_ijc(&content).map(|_| ()));
                    if let Err(e) = parsed {
                        bail!(
                            "--app-name: {} is neither a CAP zip nor an IJC load file: {e}",
                            path.display()
                        );
                    }
                    let file_name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or("applet")
                        .to_string();
                    Some((file_name, content))
                }
                _ => {
                    if app_name.is_some() || !tars.is_empty() {
                        bail!("--app-name and --tar-list go with --app-type custom");
                    }
                    None
                }
            };
            // The TARs as stored; the REST body names rfm / ram by their type alone.
            let stored_tars = match app_type {
                Some(AppType::Rfm) => vec![RFM_TAR.to_string()],
                Some(AppType::Ram) => vec![RAM_TAR.to_string()],
                _ => tars.clone(),
            };
            let http = match http_params {
                Some(text) => {
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("--http-params: not JSON: {e}"))?;
                    if let Err((field, problem)) =
                        otagw::gateway::https::HttpsOptions::default().with_profile(&v)
                    {
                        bail!("--http-params: {field}: {problem}");
                    }
                    Some(v)
                }
                None => None,
            };
            let catp = match catp_params {
                Some(text) => {
                    let v: serde_json::Value = serde_json::from_str(&text)
                        .map_err(|e| anyhow::anyhow!("--catp-params: not JSON: {e}"))?;
                    if let Err((field, problem)) = otagw::gateway::catp::check_profile_catp(&v) {
                        bail!("--catp-params: {field}: {problem}");
                    }
                    Some(v)
                }
                None => None,
            };
            if let Some(t) = &transport {
                if !otagw::command::transport::TRANSPORTS.contains(&t.as_str()) {
                    bail!(
                        "--transport: {t:?} is not one of {}",
                        otagw::command::transport::TRANSPORTS.join(", ")
                    );
                }
            }
            let defaults = ProfileDefaults {
                spi: hex_arg("--spi", spi, 4)?,
                kic_byte: hex_arg("--kic-byte", kic_byte, 2)?,
                kid_byte: hex_arg("--kid-byte", kid_byte, 2)?,
                transport,
                http,
                catp,
                gp: None,
                validity_period_minutes: validity_period,
            };
            let app_type = app_type.map(|a| {
                match a {
                    AppType::Rfm => "rfm",
                    AppType::Ram => "ram",
                    AppType::Custom => "custom",
                }
                .to_string()
            });
            let profile = ctx.run(&account, async |b| match b {
                Backend::Local {
                    store: s,
                    account: a,
                } => {
                    let now = otagw::clock::now_ms();
                    let applet_id = match applet {
                        Some((file_name, content)) => {
                            let id = uuid::Uuid::new_v4().to_string();
                            s.insert_applet(&AppletRecord {
                                id: id.clone(),
                                account_id: a.id.clone(),
                                name: file_name,
                                content,
                                created_at: now,
                            })
                            .await?;
                            Some(id)
                        }
                        None => None,
                    };
                    let p = NewProfile {
                        name,
                        app_type,
                        applet_id,
                        tars: stored_tars,
                        defaults,
                    };
                    Ok(Profile::from(s.create_profile(&a.id, &p, now).await?))
                }
                Backend::Remote(c) => {
                    let applet_id = match applet {
                        Some((file_name, content)) => {
                            Some(c.upload_applet(&file_name, content).await?.applet_id)
                        }
                        None => None,
                    };
                    let body = CreateProfile {
                        name,
                        app_type,
                        applet_id,
                        tars,
                        defaults,
                    };
                    Ok(c.create_profile(&body).await?)
                }
            })?;
            ctx.out
                .instance("Profile instance", &profile_rows(&profile), &profile)?;
            Ok(ExitCode::SUCCESS)
        }
        ProfileCommand::List { account } => {
            let profiles = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => Ok(store
                    .profiles(&account.id)
                    .await?
                    .into_iter()
                    .map(Profile::from)
                    .collect::<Vec<_>>()),
                Backend::Remote(c) => Ok(c.profiles().await?),
            })?;
            let rows: Vec<Vec<String>> = profiles
                .iter()
                .map(|p| {
                    vec![
                        p.id.to_string(),
                        p.name.clone(),
                        opt(p.app_type.as_deref()),
                        p.tars.join(" "),
                        date(p.created),
                    ]
                })
                .collect();
            ctx.out.list(
                "Profiles",
                &["id", "name", "appType", "tars", "created"],
                &rows,
                None,
                &profiles,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        ProfileCommand::Show { profile, account } => {
            let p = ctx.run(&account, async |b| b.profile(&profile).await)?;
            ctx.out
                .instance("Profile instance", &profile_rows(&p), &p)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn bar(len: u64, message: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{elapsed_precise}] {wide_bar} {percent:>3}% {per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What provisioning did, as the CLI shows it in both modes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ProvisionResult {
    profile_id: i64,
    profile_name: String,
    file: String,
    imported: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    group_name: Option<String>,
}

/// Largest request body the API takes (its stated limit).
const API_BODY_LIMIT: u64 = 16 << 20;

pub(crate) fn run_provision(ctx: &Ctx, args: ProvisionArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let group_name = if args.auto_group {
        let name = match &args.group_name {
            Some(n) => n.clone(),
            None => args
                .file
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("provisioned")
                .replace(char::is_whitespace, "_"),
        };
        check_name(&name).map_err(|e| anyhow::anyhow!("group name: {e} (use --group-name)"))?;
        Some(name)
    } else {
        None
    };
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("--file: cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    if ctx.is_remote() && size > API_BODY_LIMIT {
        bail!(
            "--file: {} is {size} octets; the API takes a file of up to {API_BODY_LIMIT} \
             octets in one request: split it, or provision it on the store (without --server)",
            args.file.display()
        );
    }
    // Read here in both modes, so a bad line is named before anything is sent or written.
    let reading = bar(size, "reading");
    let text = if ctx.is_remote() {
        Some(
            std::fs::read_to_string(&args.file)
                .with_context(|| format!("--file: cannot read {}", args.file.display()))?,
        )
    } else {
        None
    };
    let parsed = match &text {
        Some(t) => provision::parse_vendor_text(t),
        None => {
            provision::parse_vendor_reader(std::io::BufReader::with_capacity(1 << 20, file), |n| {
                reading.set_position(n)
            })
        }
    };
    reading.finish_and_clear();
    let parsed = parsed.map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let parse_time = started.elapsed();
    let cards = parsed.cards.len();
    if !parsed.dropped_columns.is_empty() {
        eprintln!(
            "columns not stored (secrets): {}",
            parsed.dropped_columns.join(", ")
        );
    }
    if group_name.is_some() && cards as u64 > GROUP_WARN {
        eprintln!(
            "warning: the group will hold {cards} cards, more than the recommended {GROUP_WARN}"
        );
    }
    let file_name = args.file.display().to_string();
    let (result, phases) = ctx.run(&args.account, async |b| {
        let profile = b.profile(&args.profile).await?;
        match b {
            Backend::Local {
                store: s,
                account: a,
            } => {
                let t = Instant::now();
                provision::check_not_provisioned(s.as_ref(), &parsed)
                    .await
                    .map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?;
                let check_time = t.elapsed();
                let t = Instant::now();
                let total = otagw::store::provision_rows(&parsed.cards, group_name.is_some());
                let writing = Arc::new(bar(total, "writing"));
                let w = writing.clone();
                let group = s
                    .provision_cards(
                        &a.id,
                        profile.id,
                        &parsed.cards,
                        group_name.as_deref(),
                        otagw::clock::now_ms(),
                        &move |n| w.inc(n),
                    )
                    .await;
                writing.finish_and_clear();
                let group = group?;
                Ok((
                    ProvisionResult {
                        profile_id: profile.id,
                        profile_name: profile.name,
                        file: file_name.clone(),
                        imported: cards,
                        group_id: group.as_ref().map(|g| g.id),
                        group_name: group.map(|g| g.name),
                    },
                    Some((check_time, t.elapsed())),
                ))
            }
            Backend::Remote(c) => {
                let sending = bar(0, "sending");
                let done = c
                    .provision(profile.id, text.unwrap_or_default(), group_name.as_deref())
                    .await;
                sending.finish_and_clear();
                let done = done.map_err(|e| anyhow::anyhow!("{file_name}: {e}"))?;
                Ok((
                    ProvisionResult {
                        profile_id: profile.id,
                        profile_name: profile.name,
                        file: file_name.clone(),
                        imported: done.imported,
                        group_id: done.group_id,
                        group_name: done.group_id.and(group_name.clone()),
                    },
                    None,
                ))
            }
        }
    })?;
    let mut rows = vec![
        (
            "profile",
            format!("{} ({})", result.profile_id, result.profile_name),
        ),
        ("file", result.file.clone()),
        ("imported", format!("{} cards", result.imported)),
    ];
    if let (Some(id), Some(name)) = (result.group_id, &result.group_name) {
        rows.push(("cardGroup", format!("{id} ({name})")));
    }
    ctx.out.instance("Provisioning", &rows, &result)?;
    if args.benchmark {
        let total = started.elapsed();
        let rate = cards as f64 / total.as_secs_f64().max(1e-9);
        let line = match phases {
            Some((check_time, write_time)) => format!(
                "benchmark: {cards} cards in {:.2} s ({rate:.0} cards/s): parse {:.2} s, \
                 already-provisioned check {:.2} s, write {:.2} s",
                total.as_secs_f64(),
                parse_time.as_secs_f64(),
                check_time.as_secs_f64(),
                write_time.as_secs_f64()
            ),
            None => format!(
                "benchmark: {cards} cards in {:.2} s ({rate:.0} cards/s): parse {:.2} s, \
                 the server's check and write {:.2} s",
                total.as_secs_f64(),
                parse_time.as_secs_f64(),
                (total - parse_time).as_secs_f64()
            ),
        };
        // Stdout holds only the JSON with --json.
        if ctx.out.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn run_group(ctx: &Ctx, command: GroupCommand) -> anyhow::Result<ExitCode> {
    match command {
        GroupCommand::Create {
            profile,
            name,
            msisdn_list,
            iccid_list,
            account,
        } => {
            check_name(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let list = match (&msisdn_list, &iccid_list) {
                (Some(p), _) => Some((p, CardKey::Msisdn)),
                (_, Some(p)) => Some((p, CardKey::Iccid)),
                _ => None,
            };
            let listed = match list {
                Some((path, key)) => Some((path, key, read_list(path, key)?)),
                None => None,
            };
            if let Some((_, _, entries)) = &listed {
                if entries.len() as u64 > GROUP_WARN {
                    eprintln!(
                        "warning: the group will hold {} cards, more than the recommended {GROUP_WARN}",
                        entries.len()
                    );
                }
            }
            let group = ctx.run(&account, async |b| {
                let p = b.profile(&profile).await?;
                let members = match &listed {
                    None => None,
                    Some((path, key, entries)) => {
                        let values: Vec<String> = entries.iter().map(|(_, v)| v.clone()).collect();
                        let found = cards_matching(b, &p, *key, &values).await?;
                        let what = match key {
                            CardKey::Iccid => "ICCID",
                            CardKey::Msisdn => "MSISDN",
                        };
                        let missing: Vec<String> = entries
                            .iter()
                            .filter(|(_, v)| !found.contains_key(v))
                            .map(|(line, v)| {
                                format!("line {line}: no card of profile {} has {what} {v}", p.name)
                            })
                            .collect();
                        if !missing.is_empty() {
                            bail!(
                                "{}: {} line(s) refused, no group created:\n  {}",
                                path.display(),
                                missing.len(),
                                missing.join("\n  ")
                            );
                        }
                        Some(
                            values
                                .iter()
                                .filter_map(|v| found.get(v).cloned())
                                .collect::<Vec<_>>(),
                        )
                    }
                };
                match b {
                    Backend::Local { store, account } => {
                        let members = match members {
                            Some(iccids) => GroupMembers::Iccids(iccids),
                            None => GroupMembers::AllOfProfile,
                        };
                        Ok(CardGroup::from(
                            store
                                .create_card_group(
                                    &account.id,
                                    p.id,
                                    &name,
                                    &members,
                                    otagw::clock::now_ms(),
                                )
                                .await?,
                        ))
                    }
                    Backend::Remote(c) => Ok(c
                        .create_group(&CreateGroup {
                            profile_id: p.id,
                            name: name.clone(),
                            iccids: members,
                        })
                        .await?),
                }
            })?;
            if group.cards > GROUP_WARN && listed.is_none() {
                eprintln!(
                    "warning: the group holds {} cards, more than the recommended {GROUP_WARN}",
                    group.cards
                );
            }
            ctx.out
                .instance("Card Group instance", &group_rows(&group), &group)?;
            Ok(ExitCode::SUCCESS)
        }
        GroupCommand::List { account } => {
            let groups = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => Ok(store
                    .card_groups(&account.id)
                    .await?
                    .into_iter()
                    .map(CardGroup::from)
                    .collect::<Vec<_>>()),
                Backend::Remote(c) => Ok(c.groups().await?),
            })?;
            let rows: Vec<Vec<String>> = groups
                .iter()
                .map(|g| {
                    vec![
                        g.id.to_string(),
                        g.name.clone(),
                        g.profile_id.to_string(),
                        g.cards.to_string(),
                        date(g.created),
                    ]
                })
                .collect();
            ctx.out.list(
                "Card Groups",
                &["id", "name", "profile", "cards", "created"],
                &rows,
                None,
                &groups,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        GroupCommand::Show { id, account } => {
            let group = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => store
                    .card_group(&account.id, id)
                    .await?
                    .map(CardGroup::from)
                    .with_context(|| format!("--id: no card group {id}")),
                Backend::Remote(c) => Ok(c.group(id).await?),
            })?;
            ctx.out
                .instance("Card Group instance", &group_rows(&group), &group)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Of `values` (ICCIDs or MSISDNs), those naming a card of the account linked to the
/// profile, as (value, ICCID). Remote: the API lists cards but not their profile, so the
/// server checks the profile when the group is made; MSISDNs are looked up in the listing.
async fn cards_matching(
    b: &Backend,
    p: &Profile,
    key: CardKey,
    values: &[String],
) -> anyhow::Result<HashMap<String, String>> {
    match b {
        Backend::Local { store, account } => Ok(store
            .profile_cards_matching(&account.id, p.id, key, values)
            .await?
            .into_iter()
            .collect()),
        Backend::Remote(c) => match key {
            CardKey::Iccid => Ok(values.iter().map(|v| (v.clone(), v.clone())).collect()),
            CardKey::Msisdn => {
                let wanted: std::collections::HashSet<&String> = values.iter().collect();
                let mut found = HashMap::new();
                let mut after: Option<String> = None;
                loop {
                    let page = c
                        .cards(&[("after", after.take())], otagw::api::cards::MAX_PAGE)
                        .await?;
                    for card in page.cards {
                        if let Some(m) = card.msisdn.filter(|m| wanted.contains(m)) {
                            found.insert(m, card.iccid);
                        }
                    }
                    match page.next_after {
                        Some(next) => after = Some(next),
                        None => return Ok(found),
                    }
                }
            }
        },
    }
}

/// Reads a list file: one value per line (blank lines skipped), each valid and once; fails
/// naming every bad line.
fn read_list(path: &PathBuf, key: CardKey) -> anyhow::Result<Vec<(usize, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let v = line.trim();
        if v.is_empty() {
            continue;
        }
        let value = match key {
            CardKey::Iccid => provision::normalize_iccid(v),
            CardKey::Msisdn => provision::normalize_msisdn(v),
        };
        match value {
            Err(e) => problems.push(format!("line {n}: {e}")),
            Ok(v) => {
                if let Some(first) = seen.get(&v) {
                    problems.push(format!("line {n}: {v} already on line {first}"));
                } else {
                    seen.insert(v.clone(), n);
                    entries.push((n, v));
                }
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "{}: {} line(s) refused, no group created:\n  {}",
            path.display(),
            problems.len(),
            problems.join("\n  ")
        );
    }
    if entries.is_empty() {
        bail!("{}: no card listed", path.display());
    }
    Ok(entries)
}
