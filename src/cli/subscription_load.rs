//! `otagw subscription-load`: cards fully bootstrapped per second. A fleet of bootstrap cards
//! is provisioned into a card group, a bootstrap rule is set on it (one operational
//! subscription from a template, enabled, the fallback moved to it, the bootstrap one
//! deleted), and the gateway runs every card's plan: DOWNLOAD with enable, the card's switch
//! notification back as MO SMS (and its CONFIRM), SET FALLBACK, DELETE. Done when every plan
//! is DONE, each card's registry checked against the virtual card's own.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use otagw::devkit::{self, DevOptions};

#[derive(Debug, Args)]
pub struct SubscriptionLoadArgs {
    /// Store: `sqlite` (a file in a temporary directory) or `postgres` (a fresh schema in
    /// --database-url).
    #[arg(long, value_parser = ["sqlite", "postgres"], default_value = "sqlite")]
    store: String,
    /// PostgreSQL database for `--store postgres`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Bootstrap cards.
    #[arg(long, default_value_t = 1000)]
    cards: usize,
    /// SMPP window.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// How often the cards' subscription applications move on (attach, notifications), ms.
    #[arg(long, default_value_t = 100)]
    tick_ms: u64,
}

pub fn run(a: SubscriptionLoadArgs) -> anyhow::Result<ExitCode> {
    if a.cards == 0 || a.tick_ms == 0 {
        bail!("--cards and --tick-ms must be at least 1");
    }
    // Logs only when asked for (`RUST_LOG`): the figures are the output.
    if std::env::var_os("RUST_LOG").is_some() {
        otagw::logging::LogSettings::default()
            .install()
            .context("logging")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(load(a))
}

async fn load(a: SubscriptionLoadArgs) -> anyhow::Result<ExitCode> {
    let store_url = match a.store.as_str() {
        "postgres" => Some(devkit::postgres_scratch_url(&a.database_url).await?),
        _ => None,
    };
    let setup = Instant::now();
    let env = devkit::start(DevOptions {
        cards: a.cards,
        store_url,
        window: a.window,
        provision: true,
        por_timeout: Duration::from_secs(30),
        ..DevOptions::default()
    })
    .await?;
    let rss_setup = devkit::peak_rss_bytes().unwrap_or(0);
    let (_, group) = env.fleet_group.context("provisioned group")?;
    let _ticker = env.tick_subscriptions(
        Arc::new(otagw::sim::subscriptions::EveryNetwork),
        Duration::from_millis(a.tick_ms),
    );
    let (code, body) = env
        .post(
            "/api/v1/subscription-templates",
            &json!({"name": "operational", "spn": "otagw", "plmns": ["26201"]}),
        )
        .await?;
    if code != 201 {
        bail!("POST template: {code} {body}");
    }
    println!(
        "otagw subscription-load: {} bootstrap cards, store {}, notifications every {} ms (setup {:.1} s)",
        a.cards,
        env.server.store.backend(),
        a.tick_ms,
        setup.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let (code, body) = env
        .put(
            &format!("/api/v1/cardgroups/{group}/rules"),
            &json!({"subscriptions": [{"template": "operational", "imsiFirst": "262019000000000",
                                       "imsiCount": a.cards}],
                    "bootstrap": "delete", "trigger": "provisioning"}),
        )
        .await?;
    if code != 200 {
        bail!("PUT rules: {code} {body}");
    }
    let deadline = Instant::now() + Duration::from_secs(1800);
    let plans = loop {
        let (_, p) = env
            .get(&format!("/api/v1/cardgroups/{group}/bootstrap"))
            .await?;
        let done = p["plans"]["DONE"].as_u64().unwrap_or(0);
        let failed = p["plans"]["FAILED"].as_u64().unwrap_or(0);
        if (done + failed) as usize >= a.cards {
            break p;
        }
        if Instant::now() > deadline {
            bail!("after 1800 s: {p}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let elapsed = started.elapsed();
    let done = plans["plans"]["DONE"].as_u64().unwrap_or(0);
    // Every card as the gateway has it is the card's own: one subscription, enabled, fallback.
    let mut mismatched = 0;
    for i in 0..a.cards {
        let Some(iccid) = env.iccid(i) else { continue };
        let card: Vec<(u8, bool, bool)> = env
            .fleet
            .with_card_by_iccid(&iccid, |c| {
                c.subscriptions()
                    .map(|s| {
                        s.subscriptions()
                            .iter()
                            .map(|s| (s.id, s.enabled, s.fallback))
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .unwrap_or_default();
        if card != [(2, true, true)] {
            mismatched += 1;
        }
    }
    let (_, m) = env.get("/api/v1/ota/metrics").await?;
    let rss_peak = devkit::peak_rss_bytes().unwrap_or(0);
    println!(
        "| store | cards | bootstrapped/s | done | commands | elapsed | peak RSS (after setup) |"
    );
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.0} | {done} | {} | {:.1} s | {:.0} MiB ({:.0} MiB) |",
        env.server.store.backend(),
        a.cards,
        done as f64 / elapsed.as_secs_f64(),
        m["total"],
        elapsed.as_secs_f64(),
        rss_peak as f64 / 1048576.0,
        rss_setup as f64 / 1048576.0,
    );
    env.shutdown().await;
    if done as usize != a.cards || mismatched > 0 {
        bail!(
            "{} of {} cards not bootstrapped, {mismatched} cards not as expected: {plans}",
            a.cards as u64 - done,
            a.cards
        );
    }
    Ok(ExitCode::SUCCESS)
}
