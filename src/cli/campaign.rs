//! `otagw campaign`: create, start, stop, retry the failed cards, show (with live progress).
//! Written straight to the configured store (a running `otagw serve` on the same store sends),
//! or through a server's REST API in remote mode.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{ArgAction, Args, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use otagw::campaign::ops::{self, CampaignView, StartOutcome, StartRequest};
use otagw::campaign::{card_state, status, CampaignRequest, CampaignType, TransmissionMode};

use super::backend::{Backend, Ctx};
use super::output::{date, opt, opt_date};
use super::provision::AccountArg;
use super::remote::RemoteError;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Mode {
    Seq,
    Conc,
}

#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub(crate) enum CampaignCommand {
    /// Create a campaign (state CREATED).
    Create(Box<CreateArgs>),
    /// Start a CREATED campaign on a card group or one card (state RUNNING).
    Start(Box<StartArgs>),
    /// Stop a campaign (state TERMINATED); cards in flight still record their PoRs.
    Stop {
        /// Campaign id.
        #[arg(long)]
        campaign: i64,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Start a new iteration of a COMPLETED or TERMINATED campaign for the cards that did not
    /// succeed, with the same settings.
    RetryFailed {
        /// Campaign id.
        #[arg(long)]
        campaign: i64,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Totals per state and iteration; with --watch, live progress bars until it ends.
    Show {
        /// Campaign id.
        id: i64,
        /// Refresh every second until the campaign is no longer RUNNING.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        account: AccountArg,
    },
    /// The account's campaigns.
    List {
        #[command(flatten)]
        account: AccountArg,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// Profile: its id or its name.
    #[arg(long)]
    profile: String,
    /// Unique within the profile, no spaces.
    #[arg(long)]
    name: String,
    /// Campaign type.
    #[arg(long = "type", value_parser = parse_type)]
    campaign_type: Option<CampaignType>,
    /// Copy the settings of this campaign.
    #[arg(long)]
    template: Option<i64>,
    /// RAM: uploaded applet id to generate the commands from.
    #[arg(long)]
    applet: Option<String>,
    /// RAM: UICC toolkit parameters for the install (hex).
    #[arg(long)]
    tkp: Option<String>,
    /// SPI (4 hex digits).
    #[arg(long)]
    spi: Option<String>,
    /// TAR (6 hex digits).
    #[arg(long)]
    tar: Option<String>,
    /// KIc octet (2 hex digits).
    #[arg(long)]
    kic_byte: Option<String>,
    /// KID octet (2 hex digits).
    #[arg(long)]
    kid_byte: Option<String>,
    /// Concatenated message parts one after the other (seq) or together (conc).
    #[arg(long, value_enum)]
    transmission_mode: Option<Mode>,
    /// One C-APDU (hex) per line; RFM lines may hold [Name] placeholders.
    #[arg(long)]
    apdu_file: Option<PathBuf>,
    /// SMS / FLASH text.
    #[arg(long)]
    message: Option<String>,
    /// Minutes the messages stay valid.
    #[arg(long)]
    validity_period: Option<u32>,
    /// RFM: end with a REFRESH.
    #[arg(long, action = ArgAction::Set)]
    include_sim_refresh: Option<bool>,
    /// Last status word a PoR must carry (4 hex digits).
    #[arg(long)]
    expected_last_sw: Option<String>,
    /// RAM with an applet: load it.
    #[arg(long, action = ArgAction::Set)]
    load: Option<bool>,
    /// RAM with an applet: install it.
    #[arg(long, action = ArgAction::Set)]
    install: Option<bool>,
    /// RAM with an applet: delete it.
    #[arg(long, action = ArgAction::Set)]
    delete: Option<bool>,
    #[command(flatten)]
    account: AccountArg,
}

#[derive(Debug, Args)]
pub(crate) struct StartArgs {
    /// Campaign id (a CREATED campaign).
    #[arg(
        long,
        required_unless_present = "template",
        conflicts_with = "template"
    )]
    campaign: Option<i64>,
    /// Create a campaign from this one's settings (the procedure's template) and start it.
    #[arg(long)]
    template: Option<i64>,
    /// With --template: the new campaign's name (default: the template's name and the time).
    #[arg(long, requires = "template")]
    name: Option<String>,
    /// Card group id.
    #[arg(long)]
    card_group: Option<i64>,
    /// Card id (its ICCID).
    #[arg(long)]
    card: Option<String>,
    /// Card MSISDN.
    #[arg(long)]
    msisdn: Option<String>,
    /// Card ICCID (provisioned now with --msisdn/--kic-key/--kid-key, and --imsi, if unknown).
    #[arg(long)]
    iccid: Option<String>,
    /// New card: IMSI.
    #[arg(long)]
    imsi: Option<String>,
    /// New card: key version.
    #[arg(long)]
    key_index: Option<u8>,
    /// New card: KIc.
    #[arg(long)]
    kic_key: Option<String>,
    /// New card: KID.
    #[arg(long)]
    kid_key: Option<String>,
    /// CSV: ICCID or MSISDN, then one column per placeholder.
    #[arg(long)]
    data_file: Option<PathBuf>,
    #[command(flatten)]
    account: AccountArg,
}

fn parse_type(s: &str) -> Result<CampaignType, String> {
    s.parse()
}

fn report(e: ops::OpError) -> anyhow::Error {
    match e {
        ops::OpError::Field(f) | ops::OpError::Missing(f) => {
            anyhow::anyhow!("--{}: {}", kebab(&f.field), f.problem)
        }
        other => anyhow::anyhow!(other),
    }
}

/// `kicByte` -> `kic-byte`, `commands[2]` -> `apdu-file line 3`.
fn kebab(field: &str) -> String {
    if let Some(i) = field
        .strip_prefix("commands[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse::<usize>().ok())
    {
        return format!("apdu-file line {}", i + 1);
    }
    let mut out = String::new();
    for c in field.chars() {
        if c.is_ascii_uppercase() {
            out.push('-');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The instance table of a campaign: its settings, times and cards per state.
fn campaign_rows(v: &CampaignView) -> Vec<(String, String)> {
    let st = &v.settings;
    let mut rows: Vec<(String, String)> = vec![
        ("id".into(), v.id.to_string()),
        ("name".into(), v.name.clone()),
        ("type".into(), v.campaign_type.clone()),
        ("state".into(), v.state.clone()),
        ("profile".into(), v.profile_id.to_string()),
        ("iteration".into(), v.iteration.to_string()),
        ("messagesPerCard".into(), v.messages_per_card.to_string()),
        ("spi".into(), st.spi.clone()),
        ("tar".into(), st.tar.clone()),
        ("kicByte".into(), st.kic_byte.clone()),
        ("kidByte".into(), st.kid_byte.clone()),
        (
            "transmissionMode".into(),
            match st.transmission_mode {
                TransmissionMode::Seq => "SEQUENTIAL",
                TransmissionMode::Conc => "CONCURRENT",
            }
            .into(),
        ),
    ];
    if !st.commands.is_empty() {
        rows.push(("commands".into(), st.commands.join(" ")));
    }
    if let Some(m) = &st.message {
        rows.push(("message".into(), m.clone()));
    }
    if !st.placeholders.is_empty() {
        rows.push(("placeholders".into(), st.placeholders.join(" ")));
    }
    rows.extend([
        (
            "validityPeriod".into(),
            format!("{} min", st.validity_period),
        ),
        (
            "includeSimRefresh".into(),
            st.include_sim_refresh.to_string(),
        ),
        ("expectedLastSw".into(), opt(st.expected_last_sw.as_deref())),
        ("created".into(), date(v.created)),
        ("updated".into(), date(v.updated)),
        ("started".into(), opt_date(v.started)),
        ("finished".into(), opt_date(v.finished)),
    ]);
    for it in &v.iterations {
        let parts: Vec<String> = card_state::ALL
            .iter()
            .filter_map(|s| it.states.get(*s).map(|n| format!("{s} {n}")))
            .collect();
        rows.push((
            format!("iteration {}", it.iteration),
            format!("{} cards: {}", it.cards, parts.join(", ")),
        ));
    }
    rows
}

fn show_campaign(ctx: &Ctx, v: &CampaignView) -> anyhow::Result<()> {
    let rows = campaign_rows(v);
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    ctx.out.instance("Campaign instance", &rows, v)
}

fn show_outcome(ctx: &Ctx, title: &str, o: &StartOutcome) -> anyhow::Result<()> {
    if let Some(w) = &o.warning {
        eprintln!("warning: {w}");
    }
    let mut rows = vec![
        ("campaign", o.campaign_id.to_string()),
        ("state", status::RUNNING.to_string()),
        ("cards", o.cards.to_string()),
        ("messages", o.messages.to_string()),
    ];
    if let Some(w) = &o.warning {
        rows.push(("warning", w.clone()));
    }
    ctx.out.instance(title, &rows, o)
}

/// A campaign by id, on the store or the server.
async fn campaign_of(b: &Backend, id: i64) -> anyhow::Result<CampaignView> {
    match b {
        Backend::Local { store, account } => ops::show(store.as_ref(), &account.id, id)
            .await
            .map_err(report),
        Backend::Remote(c) => Ok(c.campaign(id).await?),
    }
}

pub(crate) fn run(ctx: &Ctx, command: CampaignCommand) -> anyhow::Result<ExitCode> {
    let now = otagw::clock::now_ms;
    match command {
        CampaignCommand::Create(a) => {
            // The file's line of each command, so an error names the file and the line.
            let (commands, lines): (Vec<String>, Vec<usize>) = match &a.apdu_file {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("--apdu-file: cannot read {}", p.display()))?
                    .lines()
                    .enumerate()
                    .map(|(i, l)| (l.trim().to_string(), i + 1))
                    .filter(|(l, _)| !l.is_empty())
                    .unzip(),
                None => (Vec::new(), Vec::new()),
            };
            // `commands[i]` of a refusal, as FILE:LINE.
            let file_line = |field: &str| -> Option<String> {
                let path = a.apdu_file.as_ref()?;
                let line = field
                    .strip_prefix("commands[")
                    .and_then(|r| r.split(']').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|i| lines.get(i))?;
                Some(format!("{}:{line}", path.display()))
            };
            let local_error = |e: ops::OpError| match &e {
                ops::OpError::Field(f) => match file_line(&f.field) {
                    Some(at) => anyhow::anyhow!("{at}: {}", f.problem),
                    None => report(e),
                },
                _ => report(e),
            };
            let remote_error = |e: RemoteError| match e
                .body()
                .and_then(|b| b.field.as_deref())
                .and_then(file_line)
            {
                Some(at) => anyhow::anyhow!("{at}: {e}"),
                None => anyhow::anyhow!(e),
            };
            let mut req = CampaignRequest {
                profile: 0,
                name: a.name.clone(),
                campaign_type: a.campaign_type,
                template: a.template,
                applet: a.applet.clone(),
                tkp: a.tkp.clone(),
                spi: a.spi.clone(),
                tar: a.tar.clone(),
                kic_byte: a.kic_byte.clone(),
                kid_byte: a.kid_byte.clone(),
                transmission_mode: a.transmission_mode.map(|m| match m {
                    Mode::Seq => TransmissionMode::Seq,
                    Mode::Conc => TransmissionMode::Conc,
                }),
                commands,
                message: a.message.clone(),
                validity_period: a.validity_period,
                include_sim_refresh: a.include_sim_refresh,
                expected_last_sw: a.expected_last_sw.clone(),
                load: a.load,
                install: a.install,
                delete: a.delete,
            };
            let view = ctx.run(&a.account, async |b| {
                req.profile = b.profile(&a.profile).await?.id;
                match b {
                    Backend::Local { store, account } => {
                        ops::create(store.as_ref(), &account.id, &req, now())
                            .await
                            .map_err(local_error)
                    }
                    Backend::Remote(c) => c.create_campaign(&req).await.map_err(remote_error),
                }
            })?;
            show_campaign(ctx, &view)?;
        }
        CampaignCommand::Start(a) => {
            let data = match &a.data_file {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("--data-file: cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let req = StartRequest {
                card_group: a.card_group,
                card: a.card.clone(),
                msisdn: a.msisdn.clone(),
                iccid: a.iccid.clone(),
                imsi: a.imsi.clone(),
                key_index: a.key_index,
                kic_key: a.kic_key.clone(),
                kid_key: a.kid_key.clone(),
                data,
            };
            if let Some(n) = &a.name {
                otagw::provision::check_name(n).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            }
            let out = ctx.run(&a.account, async |b| {
                let id = match (a.campaign, a.template) {
                    (Some(id), _) => id,
                    (None, Some(t)) => from_template(b, t, a.name.clone()).await?,
                    (None, None) => bail!("--campaign ID or --template ID"),
                };
                match b {
                    Backend::Local { store, account } => {
                        ops::start(store, &account.id, id, &req, now())
                            .await
                            .map_err(report)
                    }
                    Backend::Remote(c) => Ok(c.start_campaign(id, &req).await?),
                }
            })?;
            show_outcome(ctx, "Campaign start", &out)?;
        }
        CampaignCommand::Stop { campaign, account } => {
            let view = ctx.run(&account, async |b| {
                match b {
                    Backend::Local { store, account } => {
                        ops::stop(store.as_ref(), &account.id, campaign, now())
                            .await
                            .map_err(report)?;
                    }
                    Backend::Remote(c) => {
                        c.stop_campaign(campaign).await?;
                    }
                }
                // Shown as `show` shows it: with its cards per state.
                campaign_of(b, campaign).await
            })?;
            show_campaign(ctx, &view)?;
        }
        CampaignCommand::RetryFailed { campaign, account } => {
            let out = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => {
                    ops::retry_failed(store.as_ref(), &account.id, campaign, now())
                        .await
                        .map_err(report)
                }
                Backend::Remote(c) => Ok(c.retry_failed(campaign).await?),
            })?;
            show_outcome(ctx, "Campaign retry", &out)?;
        }
        CampaignCommand::Show { id, watch, account } => {
            let view = ctx.run(&account, async |b| {
                if watch {
                    watch_campaign(b, id).await
                } else {
                    campaign_of(b, id).await
                }
            })?;
            show_campaign(ctx, &view)?;
        }
        CampaignCommand::List { account } => {
            let all = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => store
                    .campaigns(&account.id)
                    .await?
                    .iter()
                    .map(CampaignView::of)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(report),
                Backend::Remote(c) => Ok(c.campaigns().await?),
            })?;
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|c| {
                    vec![
                        c.id.to_string(),
                        c.name.clone(),
                        c.campaign_type.clone(),
                        c.state.clone(),
                        c.profile_id.to_string(),
                        c.iteration.to_string(),
                        date(c.created),
                    ]
                })
                .collect();
            ctx.out.list(
                "Campaigns",
                &[
                    "id",
                    "name",
                    "type",
                    "state",
                    "profile",
                    "iteration",
                    "created",
                ],
                &rows,
                None,
                &all,
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `start --template T`: a new campaign with T's settings and profile, named `--name` or
/// after T and the time; its id.
async fn from_template(b: &Backend, template: i64, name: Option<String>) -> anyhow::Result<i64> {
    let t = campaign_of(b, template)
        .await
        .map_err(|e| anyhow::anyhow!("--template: {e:#}"))?;
    let name = name.unwrap_or_else(|| {
        let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
        // Names are at most 64 characters.
        let base: String = t.name.chars().take(40).collect();
        format!("{base}_{stamp}")
    });
    let req = CampaignRequest {
        profile: t.profile_id,
        name,
        template: Some(template),
        ..Default::default()
    };
    let view = match b {
        Backend::Local { store, account } => {
            ops::create(store.as_ref(), &account.id, &req, otagw::clock::now_ms())
                .await
                .map_err(report)?
        }
        Backend::Remote(c) => c.create_campaign(&req).await?,
    };
    eprintln!(
        "campaign {} ({}) created from template {template}",
        view.id, view.name
    );
    Ok(view.id)
}

/// What the watch bars show for the current iteration, from the store's totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    cards: u64,
    sent: u64,
    delivered: u64,
    done: u64,
    succeeded: u64,
}

fn frame(v: &ops::CampaignView) -> Option<Frame> {
    let it = v.iterations.iter().find(|i| i.iteration == v.iteration)?;
    let get = |s: &str| it.states.get(s).copied().unwrap_or(0);
    // A delivered card is done when nothing more is awaited from it: a text, or an SPI that
    // asks no PoR or one on error only (TS 102 225 5.1.1).
    let delivered_ends = v.campaign_type == "SMS"
        || v.campaign_type == "FLASH"
        || hex::decode(&v.settings.spi)
            .ok()
            .and_then(|b| <[u8; 2]>::try_from(b.as_slice()).ok())
            .is_some_and(|b| {
                otagw::security::Spi::from_bytes(b).por.ending()
                    != Some(otagw::security::PorEnding::Por)
            });
    let delivered_done = if delivered_ends {
        get(card_state::DELIVERED)
    } else {
        0
    };
    Some(Frame {
        cards: it.cards,
        sent: it.cards - get(card_state::PENDING) - get(card_state::SENDING),
        delivered: get(card_state::DELIVERED) + get(card_state::POR_OK),
        done: get(card_state::POR_OK)
            + get(card_state::POR_ERROR)
            + get(card_state::FAILED)
            + get(card_state::EXPIRED)
            + delivered_done,
        succeeded: get(card_state::POR_OK) + delivered_done,
    })
}

/// Stops the bars where the store's totals put them (`finish` would fill them to the length).
fn end_bars(bars: &[(&str, ProgressBar)]) {
    for (_, b) in bars {
        b.abandon();
    }
}

/// Live bars until the campaign is no longer RUNNING; the campaign as it ended.
async fn watch_campaign(b: &Backend, id: i64) -> anyhow::Result<CampaignView> {
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{msg:>10} {wide_bar} {pos}/{len} {per_sec}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    let bars: Vec<(&str, ProgressBar)> = ["sent", "delivered", "done", "succeeded"]
        .into_iter()
        .map(|name| {
            let b = multi.add(ProgressBar::new(0));
            b.set_style(style.clone());
            b.set_message(name);
            (name, b)
        })
        .collect();
    loop {
        let v = campaign_of(b, id).await?;
        if let Some(c) = frame(&v) {
            for (name, b) in &bars {
                b.set_length(c.cards);
                b.set_position(match *name {
                    "sent" => c.sent,
                    "delivered" => c.delivered,
                    "done" => c.done,
                    _ => c.succeeded,
                });
            }
        }
        if v.state != status::RUNNING {
            end_bars(&bars);
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(kind: &str, spi: &str, states: &[(&str, u64)]) -> ops::CampaignView {
        let settings = serde_json::from_value(serde_json::json!({
            "spi": spi, "tar": "B00010", "kicByte": "12", "kidByte": "12",
            "transmissionMode": "conc", "commands": [], "validityPeriod": 0,
            "includeSimRefresh": false, "load": false, "install": false, "delete": false,
            "placeholders": []
        }))
        .expect("settings");
        ops::CampaignView {
            id: 1,
            name: "c".into(),
            campaign_type: kind.into(),
            state: status::COMPLETED.into(),
            profile_id: 1,
            iteration: 1,
            messages_per_card: 1,
            settings,
            created: 0,
            updated: 0,
            started: None,
            finished: None,
            iterations: vec![ops::IterationTotals {
                iteration: 1,
                cards: states.iter().map(|(_, n)| n).sum(),
                states: states.iter().map(|(s, n)| (s.to_string(), *n)).collect(),
            }],
        }
    }

    /// The bars show the store's totals: 3 PoR OK and 12 failed is 3 succeeded, not 15.
    #[test]
    fn bars_show_the_real_totals() {
        let v = view(
            "RFM",
            "1621",
            &[(card_state::POR_OK, 3), (card_state::FAILED, 12)],
        );
        let f = frame(&v).expect("frame");
        assert_eq!((f.cards, f.done, f.succeeded), (15, 15, 3));
        // PoR always: a delivered card still waits for its PoR.
        let v = view("RFM", "1621", &[(card_state::DELIVERED, 15)]);
        let f = frame(&v).expect("frame");
        assert_eq!((f.done, f.succeeded, f.delivered), (0, 0, 15));
        // No PoR asked: delivered is done and succeeded.
        let v = view("RFM", "1600", &[(card_state::DELIVERED, 15)]);
        let f = frame(&v).expect("frame");
        assert_eq!((f.done, f.succeeded), (15, 15));
    }

    /// The last frame stays as the store has it: 3 of 15 succeeded reads 3/15 at the end.
    #[test]
    fn the_last_frame_keeps_its_totals() {
        let b = ProgressBar::hidden();
        b.set_length(15);
        b.set_position(3);
        end_bars(&[("succeeded", b.clone())]);
        assert_eq!((b.position(), b.length()), (3, Some(15)));
    }
}
