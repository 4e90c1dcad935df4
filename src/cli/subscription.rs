//! `otagw subscription ...`: subscription management on multi-subscription cards through a
//! running gateway's REST API (remote mode: the gateway's engine sends the operations and
//! takes the cards' notifications). The same calls as `/api/v1/cards/{iccid}/subscriptions`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use otagw::api::subscriptions::{OperationAccepted, OperationView};
use otagw::store::subscriptions::SubscriptionTemplate;

use super::backend::Ctx;
use super::output::date;
use super::remote::Client;

#[derive(Debug, Subcommand)]
pub(crate) enum SubscriptionCommand {
    /// A card's subscriptions as last known, with its sync state.
    List {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
    },
    /// Download a subscription from a template (and enable it with --enable).
    Download {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        /// The subscription template.
        #[arg(long)]
        template: String,
        /// The subscription's IMSI.
        #[arg(long)]
        imsi: String,
        /// Enable it once downloaded.
        #[arg(long)]
        enable: bool,
        /// Give it the fallback attribute.
        #[arg(long)]
        fallback: bool,
        /// Wait until the operation is DONE or FAILED.
        #[arg(long)]
        wait: bool,
    },
    /// Enable an installed subscription (the card switches and notifies).
    Enable {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        /// The subscription's id on the card.
        #[arg(long)]
        id: u8,
        /// Wait until the operation is DONE or FAILED.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a subscription (refused while enabled or the fallback).
    Delete {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        /// The subscription's id on the card.
        #[arg(long)]
        id: u8,
        /// Wait until the operation is DONE or FAILED.
        #[arg(long)]
        wait: bool,
    },
    /// Move the fallback attribute to a subscription.
    Fallback {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        /// The subscription's id on the card.
        #[arg(long)]
        id: u8,
        /// Wait until the operation is DONE or FAILED.
        #[arg(long)]
        wait: bool,
    },
    /// Read the card's registry back (it replaces the stored one).
    Audit {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        /// Wait until the operation is DONE or FAILED.
        #[arg(long)]
        wait: bool,
    },
    /// A card's audit trail, newest first.
    Trail {
        /// The card's ICCID.
        #[arg(long)]
        iccid: String,
        /// Entries (1 to 500).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Entries older than this sequence number (the previous page's last).
        #[arg(long)]
        before: Option<i64>,
    },
    /// An operation: its state and the card's answers.
    Operation {
        /// The operation's id.
        #[arg(long)]
        id: String,
    },
    /// Create a subscription template.
    TemplateCreate {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Service provider name.
        #[arg(long, default_value = "")]
        spn: String,
        /// A PLMN, MCC and MNC digits (repeatable).
        #[arg(long = "plmn")]
        plmns: Vec<String>,
    },
    /// The account's subscription templates.
    TemplateList,
}

fn show_operation(ctx: &Ctx, op: &OperationView) -> anyhow::Result<()> {
    let rows = vec![
        ("operation", op.operation_id.clone()),
        ("card", op.iccid.clone()),
        ("kind", op.kind.clone()),
        ("state", op.state.clone()),
        (
            "subscription",
            op.subscription_id
                .map_or_else(|| "-".to_string(), |s| s.to_string()),
        ),
        ("command", op.command_id.clone()),
        ("requested by", op.requested_by.clone()),
        ("created", date(op.created_at)),
        ("updated", date(op.updated_at)),
    ];
    ctx.out.instance("Subscription operation", &rows, op)
}

/// Prints an accepted operation, or waits for its end and prints that.
async fn accepted(
    ctx: &Ctx,
    c: &Client,
    a: OperationAccepted,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    if !wait {
        let rows = vec![
            ("operation", a.operation_id.clone()),
            (
                "subscription",
                a.subscription_id
                    .map_or_else(|| "-".to_string(), |s| s.to_string()),
            ),
            ("command", a.command_id.clone()),
        ];
        ctx.out.instance("Operation accepted", &rows, &a)?;
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    loop {
        let op = c.subscription_operation_view(&a.operation_id).await?;
        if op.state == "DONE" || op.state == "FAILED" {
            show_operation(ctx, &op)?;
            return Ok(if op.state == "DONE" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "operation {} still {} after 10 minutes",
                op.operation_id,
                op.state
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) fn run(ctx: &Ctx, command: SubscriptionCommand) -> anyhow::Result<ExitCode> {
    ctx.remote_only("subscription", async |c| match command {
        SubscriptionCommand::List { iccid } => {
            let v = c.subscriptions(&iccid).await?;
            let rows: Vec<Vec<String>> = v
                .subscriptions
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.imsi.clone(),
                        if s.enabled { "enabled" } else { "disabled" }.to_string(),
                        if s.fallback { "yes" } else { "" }.to_string(),
                        if s.bootstrap { "yes" } else { "" }.to_string(),
                        s.template.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let mut note = format!("sync state {}", v.sync_state.as_str());
            if !v.dirty_reason.is_empty() {
                note.push_str(&format!(": {}", v.dirty_reason));
            }
            if let Some(op) = &v.operation_id {
                note.push_str(&format!(", operation {op} in flight"));
            }
            ctx.out.list(
                &format!("Subscriptions of {}", v.iccid),
                &["id", "imsi", "state", "fallback", "bootstrap", "template"],
                &rows,
                Some(note),
                &v,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionCommand::Download {
            iccid,
            template,
            imsi,
            enable,
            fallback,
            wait,
        } => {
            let body = json!({"template": template, "imsi": imsi, "enable": enable,
                              "fallback": fallback});
            let a = c
                .subscription_operation(Method::POST, &iccid, "/subscriptions", Some(&body))
                .await?;
            accepted(ctx, c, a, wait).await
        }
        SubscriptionCommand::Enable { iccid, id, wait } => {
            let a = c
                .subscription_operation(
                    Method::POST,
                    &iccid,
                    &format!("/subscriptions/{id}/enable"),
                    None,
                )
                .await?;
            accepted(ctx, c, a, wait).await
        }
        SubscriptionCommand::Delete { iccid, id, wait } => {
            let a = c
                .subscription_operation(
                    Method::DELETE,
                    &iccid,
                    &format!("/subscriptions/{id}"),
                    None,
                )
                .await?;
            accepted(ctx, c, a, wait).await
        }
        SubscriptionCommand::Fallback { iccid, id, wait } => {
            let a = c
                .subscription_operation(
                    Method::PUT,
                    &iccid,
                    &format!("/subscriptions/{id}/fallback"),
                    None,
                )
                .await?;
            accepted(ctx, c, a, wait).await
        }
        SubscriptionCommand::Audit { iccid, wait } => {
            let a = c
                .subscription_operation(Method::POST, &iccid, "/audit", None)
                .await?;
            accepted(ctx, c, a, wait).await
        }
        SubscriptionCommand::Trail {
            iccid,
            limit,
            before,
        } => {
            if !(1..=500).contains(&limit) {
                bail!("--limit: {limit} is not 1 to 500");
            }
            let trail = c.audit_trail(&iccid, before, limit).await?;
            let rows: Vec<Vec<String>> = trail
                .iter()
                .map(|t| {
                    vec![
                        t.seq.to_string(),
                        date(t.at),
                        t.what.clone(),
                        t.who.clone(),
                        t.answer.clone(),
                    ]
                })
                .collect();
            let note = trail
                .last()
                .filter(|_| trail.len() == limit as usize)
                .map(|t| format!("more: --before {}", t.seq));
            ctx.out.list(
                &format!("Audit trail of {iccid}"),
                &["seq", "at", "what", "who", "answer"],
                &rows,
                note,
                &trail,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionCommand::Operation { id } => {
            let op = c.subscription_operation_view(&id).await?;
            show_operation(ctx, &op)?;
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionCommand::TemplateCreate { name, spn, plmns } => {
            let t = c
                .create_subscription_template(&SubscriptionTemplate { name, spn, plmns })
                .await?;
            let rows = vec![
                ("name", t.name.clone()),
                ("spn", t.spn.clone()),
                ("plmns", t.plmns.join(",")),
            ];
            ctx.out.instance("Subscription template", &rows, &t)?;
            Ok(ExitCode::SUCCESS)
        }
        SubscriptionCommand::TemplateList => {
            let ts = c.subscription_templates().await?;
            let rows: Vec<Vec<String>> = ts
                .iter()
                .map(|t| vec![t.name.clone(), t.spn.clone(), t.plmns.join(",")])
                .collect();
            ctx.out.list(
                "Subscription templates",
                &["name", "spn", "plmns"],
                &rows,
                None,
                &ts,
            )?;
            Ok(ExitCode::SUCCESS)
        }
    })
}
