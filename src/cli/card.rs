//! `otagw card list|show|update|delete`: an account's cards, read and changed straight in the
//! configured store with the checks the REST API runs, or through that API in remote mode
//! (`GET|PATCH|DELETE /api/v1/cards`). Key values are never printed: key versions, counters
//! and last rotations only.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use otagw::api::cards::{CardPage, CardRemoved, CardView, UpdateCard};
use otagw::store::{CardSearch, StoreError};

use super::backend::{Backend, Ctx};
use super::output::{date, opt, opt_date};
use super::provision::AccountArg;
use super::remote::RemoteError;

#[derive(Debug, Subcommand)]
pub(crate) enum CardCommand {
    /// List cards by ICCID, filtered by prefixes, a page at a time.
    List {
        /// ICCID prefix (digits).
        #[arg(long)]
        iccid: Option<String>,
        /// IMSI prefix (digits).
        #[arg(long)]
        imsi: Option<String>,
        /// MSISDN prefix (digits, a leading '+' ignored).
        #[arg(long)]
        msisdn: Option<String>,
        /// Most cards (1 to 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// List the cards after this ICCID (the previous page's last one).
        #[arg(long)]
        after: Option<String>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// One card: identities, attributes, key versions and counters (never key values).
    Show {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Change a card's IMSI, MSISDN or attributes (others are kept).
    Update {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        /// New IMSI (6 to 15 digits).
        #[arg(long)]
        imsi: Option<String>,
        /// New MSISDN (1 to 15 digits, optionally after '+').
        #[arg(long)]
        msisdn: Option<String>,
        /// Set an attribute, NAME=VALUE (repeatable; `cardClass=uicc|gsm`).
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        /// Remove an attribute (repeatable).
        #[arg(long = "unset", value_name = "NAME")]
        unset: Vec<String>,
        #[command(flatten)]
        account: AccountArg,
    },
    /// Delete a card with its key sets and group memberships; refused while it has live
    /// commands or is in a running campaign. Its finished commands are kept.
    Delete {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        #[command(flatten)]
        account: AccountArg,
    },
}

/// The ICCID of a card to look up, as the REST paths take it (F padding removed).
fn card_iccid(iccid: &str) -> String {
    iccid.trim().trim_end_matches(['F', 'f']).to_string()
}

/// A digit prefix filter (as `GET /api/v1/cards` checks it), or an error naming the option.
fn prefix(option: &str, value: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v = match option {
        "--msisdn" => v.strip_prefix('+').unwrap_or(v),
        "--iccid" | "--after" => v.trim_end_matches(['F', 'f']),
        _ => v,
    };
    if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{option}: {v:?} is not a prefix of up to 20 digits");
    }
    Ok(Some(v.to_string()))
}

/// The instance table of a card (key versions and counters, never key values).
fn card_rows(c: &CardView) -> Vec<(String, String)> {
    let mut rows = vec![
        ("iccid".to_string(), c.iccid.clone()),
        ("imsi".into(), opt(c.imsi.as_deref())),
        ("msisdn".into(), opt(c.msisdn.as_deref())),
        ("created".into(), date(c.created_at)),
    ];
    for (k, v) in &c.attributes {
        rows.push((format!("attribute {k}"), v.clone()));
    }
    for k in &c.key_versions {
        rows.push((
            format!("key version {}", k.version),
            format!(
                "counter {}, last rotation {}",
                k.counter,
                opt_date(k.last_rotation)
            ),
        ));
    }
    rows
}

fn show_card(ctx: &Ctx, c: &CardView) -> anyhow::Result<()> {
    let rows = card_rows(c);
    let rows: Vec<(&str, String)> = rows.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    ctx.out.instance("Card instance", &rows, c)
}

fn not_found(iccid: &str) -> anyhow::Error {
    anyhow::anyhow!("--iccid: card {iccid} not found")
}

pub(crate) fn run(ctx: &Ctx, command: CardCommand) -> anyhow::Result<ExitCode> {
    match command {
        CardCommand::List {
            iccid,
            imsi,
            msisdn,
            limit,
            after,
            account,
        } => {
            if !(1..=otagw::api::cards::MAX_PAGE).contains(&limit) {
                bail!(
                    "--limit: {limit} is not 1 to {}",
                    otagw::api::cards::MAX_PAGE
                );
            }
            let iccid = prefix("--iccid", iccid.as_deref())?;
            let imsi = prefix("--imsi", imsi.as_deref())?;
            let msisdn = prefix("--msisdn", msisdn.as_deref())?;
            let after = prefix("--after", after.as_deref())?;
            let page = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => {
                    // One more than the page: whether there is a next one.
                    let search = CardSearch {
                        iccid,
                        imsi,
                        msisdn,
                        after,
                        limit: limit + 1,
                    };
                    let mut cards = store.search_cards(&account.id, &search).await?;
                    let more = cards.len() > limit as usize;
                    cards.truncate(limit as usize);
                    let next_after = more
                        .then(|| cards.last().map(|c| c.iccid.clone()))
                        .flatten();
                    Ok(CardPage {
                        cards: cards.into_iter().map(CardView::from).collect(),
                        next_after,
                    })
                }
                Backend::Remote(c) => Ok(c
                    .cards(
                        &[
                            ("iccid", iccid),
                            ("imsi", imsi),
                            ("msisdn", msisdn),
                            ("after", after),
                        ],
                        limit,
                    )
                    .await?),
            })?;
            let rows: Vec<Vec<String>> = page
                .cards
                .iter()
                .map(|c| {
                    let versions: Vec<String> = c
                        .key_versions
                        .iter()
                        .map(|k| format!("v{}:{}", k.version, k.counter))
                        .collect();
                    vec![
                        c.iccid.clone(),
                        opt(c.imsi.as_deref()),
                        opt(c.msisdn.as_deref()),
                        if versions.is_empty() {
                            "-".to_string()
                        } else {
                            versions.join(",")
                        },
                        date(c.created_at),
                    ]
                })
                .collect();
            let note = match &page.next_after {
                Some(last) => format!("more: --after {last}"),
                None => format!("{} card(s)", page.cards.len()),
            };
            ctx.out.list(
                "Cards",
                &[
                    "iccid",
                    "imsi",
                    "msisdn",
                    "keys (version:counter)",
                    "created",
                ],
                &rows,
                Some(note),
                &page,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Show { iccid, account } => {
            let iccid = card_iccid(&iccid);
            let card = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => store
                    .card(&account.id, &iccid)
                    .await?
                    .map(CardView::from)
                    .ok_or_else(|| not_found(&iccid)),
                Backend::Remote(c) => remote_card(c.card(&iccid).await, &iccid),
            })?;
            show_card(ctx, &card)?;
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Update {
            iccid,
            imsi,
            msisdn,
            set,
            unset,
            account,
        } => {
            let iccid = card_iccid(&iccid);
            let mut attributes = BTreeMap::new();
            for pair in &set {
                let Some((name, value)) = pair.split_once('=') else {
                    bail!("--set: {pair:?} is not NAME=VALUE");
                };
                attributes.insert(name.trim().to_string(), Some(value.to_string()));
            }
            for name in &unset {
                attributes.insert(name.trim().to_string(), None);
            }
            // The checks of PATCH /api/v1/cards/{iccid}, with the options named.
            let changes =
                otagw::provision::card_changes(imsi.as_deref(), msisdn.as_deref(), &attributes)
                    .map_err(|(field, problem)| {
                        let option = match field.as_str() {
                            "imsi" => "--imsi",
                            "msisdn" => "--msisdn",
                            "body" => {
                                return anyhow::anyhow!(
                                    "nothing to change: give --imsi, --msisdn, --set or --unset"
                                )
                            }
                            _ => "--set",
                        };
                        anyhow::anyhow!("{option} ({field}): {problem}")
                    })?;
            let card = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => {
                    match store.update_card(&account.id, &iccid, &changes).await {
                        Err(StoreError::NotFound { .. }) => Err(not_found(&iccid)),
                        other => Ok(CardView::from(other?)),
                    }
                }
                Backend::Remote(c) => {
                    let body = UpdateCard {
                        imsi: imsi.clone(),
                        msisdn: msisdn.clone(),
                        attributes: attributes.clone(),
                    };
                    remote_card(c.update_card(&iccid, &body).await, &iccid)
                }
            })?;
            show_card(ctx, &card)?;
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Delete { iccid, account } => {
            let iccid = card_iccid(&iccid);
            let done = ctx.run(&account, async |b| match b {
                Backend::Local { store, account } => {
                    match store.delete_card(&account.id, &iccid).await {
                        Err(StoreError::NotFound { .. }) => Err(not_found(&iccid)),
                        Err(StoreError::InUse { key, reason, .. }) => {
                            bail!("card {key} cannot be deleted: {reason}")
                        }
                        Ok(d) => Ok(CardRemoved {
                            iccid: iccid.clone(),
                            key_sets_deleted: d.key_sets,
                            group_memberships_removed: d.group_memberships,
                            commands_kept: d.commands_kept,
                        }),
                        Err(e) => Err(e.into()),
                    }
                }
                Backend::Remote(c) => remote_card(c.delete_card(&iccid).await, &iccid),
            })?;
            ctx.out.instance(
                "Card deleted",
                &[
                    ("iccid", done.iccid.clone()),
                    ("keySetsDeleted", done.key_sets_deleted.to_string()),
                    (
                        "groupMembershipsRemoved",
                        done.group_memberships_removed.to_string(),
                    ),
                    ("commandsKept", done.commands_kept.to_string()),
                ],
                &done,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A card call's answer; a 404 named as local mode names it (the server's body follows).
fn remote_card<T>(answer: Result<T, RemoteError>, iccid: &str) -> anyhow::Result<T> {
    match answer {
        Err(e) if e.status() == Some(404) => Err(anyhow::anyhow!("{} ({e})", not_found(iccid))),
        other => Ok(other?),
    }
}
