//! `otagw card list|show|update|delete`: an account's cards, read and changed straight in the
//! configured store with the checks the REST API runs (`GET|PATCH|DELETE /api/v1/cards`). Key
//! values are never printed: key versions, counters and last rotations only.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use otagw::store::{CardRecord, CardSearch, StoreError};

use super::provision::{resolve_account, AccountArg};

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

fn print_card(c: &CardRecord) {
    println!("iccid       {}", c.iccid);
    println!("imsi        {}", c.imsi.as_deref().unwrap_or("-"));
    println!("msisdn      {}", c.msisdn.as_deref().unwrap_or("-"));
    println!("created     {}", c.created_at);
    for (k, v) in &c.attributes {
        println!("attribute   {k}={v}");
    }
    for k in &c.key_versions {
        println!(
            "key version {}  counter {}  last rotation {}",
            k.version,
            k.counter,
            k.rotated_at.map_or("-".to_string(), |t| t.to_string())
        );
    }
}

fn not_found(iccid: &str) -> anyhow::Error {
    anyhow::anyhow!("--iccid: card {iccid} not found")
}

pub(crate) fn run(command: CardCommand) -> anyhow::Result<ExitCode> {
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
            let search = CardSearch {
                iccid: prefix("--iccid", iccid.as_deref())?,
                imsi: prefix("--imsi", imsi.as_deref())?,
                msisdn: prefix("--msisdn", msisdn.as_deref())?,
                after: prefix("--after", after.as_deref())?,
                limit: limit + 1,
            };
            let mut cards = super::account::with_store(&account.store, async |s| {
                let a = resolve_account(&*s, account.account.as_deref()).await?;
                Ok(s.search_cards(&a.id, &search).await?)
            })?;
            let more = cards.len() > limit as usize;
            cards.truncate(limit as usize);
            for c in &cards {
                let versions: Vec<String> = c
                    .key_versions
                    .iter()
                    .map(|k| format!("v{}:{}", k.version, k.counter))
                    .collect();
                println!(
                    "{}  imsi {}  msisdn {}  keys {}",
                    c.iccid,
                    c.imsi.as_deref().unwrap_or("-"),
                    c.msisdn.as_deref().unwrap_or("-"),
                    if versions.is_empty() {
                        "-".to_string()
                    } else {
                        versions.join(",")
                    }
                );
            }
            match (more, cards.last()) {
                (true, Some(last)) => println!("more: --after {}", last.iccid),
                _ => println!("{} card(s)", cards.len()),
            }
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Show { iccid, account } => {
            let iccid = card_iccid(&iccid);
            let card = super::account::with_store(&account.store, async |s| {
                let a = resolve_account(&*s, account.account.as_deref()).await?;
                s.card(&a.id, &iccid)
                    .await?
                    .ok_or_else(|| not_found(&iccid))
            })?;
            print_card(&card);
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
            let card = super::account::with_store(&account.store, async |s| {
                let a = resolve_account(&*s, account.account.as_deref()).await?;
                match s.update_card(&a.id, &iccid, &changes).await {
                    Err(StoreError::NotFound { .. }) => Err(not_found(&iccid)),
                    other => Ok(other?),
                }
            })?;
            println!("card {iccid} updated");
            print_card(&card);
            Ok(ExitCode::SUCCESS)
        }
        CardCommand::Delete { iccid, account } => {
            let iccid = card_iccid(&iccid);
            let done = super::account::with_store(&account.store, async |s| {
                let a = resolve_account(&*s, account.account.as_deref()).await?;
                match s.delete_card(&a.id, &iccid).await {
                    Err(StoreError::NotFound { .. }) => Err(not_found(&iccid)),
                    Err(StoreError::InUse { key, reason, .. }) => {
                        bail!("card {key} cannot be deleted: {reason}")
                    }
                    other => Ok(other?),
                }
            })?;
            println!(
                "card {iccid} deleted ({} key set(s), {} group membership(s)); {} finished \
                 command(s) kept",
                done.key_sets, done.group_memberships, done.commands_kept
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
