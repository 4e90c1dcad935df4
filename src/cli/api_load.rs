//! `otagw api-load`: commands per second through the whole gateway, REST -> pipeline -> SMPP
//! -> SMSC simulator -> virtual UICC -> PoR -> stored result, with the store backend chosen,
//! and the memory the process used (gateway, simulator and fleet together).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;

use otagw::devkit::{self, DevOptions};

#[derive(Debug, Args)]
pub struct ApiLoadArgs {
    /// Store: `sqlite` (a file in a temporary directory) or `postgres` (a fresh schema in
    /// --database-url).
    #[arg(long, value_parser = ["sqlite", "postgres"], default_value = "sqlite")]
    store: String,
    /// PostgreSQL database for `--store postgres`.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    database_url: String,
    /// Commands to send.
    #[arg(long, default_value_t = 5000)]
    commands: usize,
    /// Virtual cards (commands go round-robin; one command per card at a time).
    #[arg(long, default_value_t = 2000)]
    cards: usize,
    /// REST requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// SMPP window.
    #[arg(long, default_value_t = 100)]
    window: usize,
    /// SQLite durability: `full` (every commit synced) or `normal` (survives process crashes,
    /// not power loss).
    #[arg(long, value_parser = ["full", "normal"], default_value = "full")]
    sqlite_synchronous: String,
}

pub fn run(a: ApiLoadArgs) -> anyhow::Result<ExitCode> {
    if a.commands == 0 || a.cards == 0 || a.concurrency == 0 {
        bail!("--commands, --cards and --concurrency must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(load(a))
}

async fn load(a: ApiLoadArgs) -> anyhow::Result<ExitCode> {
    let rss_before = devkit::peak_rss_bytes().unwrap_or(0);
    let store_url = match a.store.as_str() {
        "postgres" => Some(devkit::postgres_scratch_url(&a.database_url).await?),
        _ => None,
    };
    let setup = Instant::now();
    let env = Arc::new(
        devkit::start(DevOptions {
            cards: a.cards,
            store_url,
            window: a.window,
            por_timeout: Duration::from_secs(30),
            sqlite_synchronous_normal: a.sqlite_synchronous == "normal",
            ..DevOptions::default()
        })
        .await?,
    );
    let rss_setup = devkit::peak_rss_bytes().unwrap_or(0);
    let iccids: Arc<Vec<String>> = Arc::new((0..a.cards).filter_map(|i| env.iccid(i)).collect());
    println!(
        "otagw api-load: {} RFM commands over REST, {} cards, store {}{}, {} requests in flight (setup {:.1} s)",
        a.commands,
        a.cards,
        env.server.store.backend(),
        if a.store == "sqlite" {
            format!(" (synchronous {})", a.sqlite_synchronous)
        } else {
            String::new()
        },
        a.concurrency,
        setup.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(a.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.commands {
        let permit = permits.clone().acquire_owned().await?;
        let env = env.clone();
        let iccids = iccids.clone();
        tasks.spawn(async move {
            let body = json!({
                "type": "RFM",
                "target": {"iccid": iccids[i % iccids.len()]},
                "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": "B00010"},
                "data": {"apdus": ["00A40004023F00", "00A40004027FFF", "00A40004026F46",
                    format!("00D6000011{:02X}{}", i % 256, "00".repeat(16))]},
            });
            let r = env.post("/api/v1/ota/commands", &body).await;
            drop(permit);
            r
        });
        while let Some(r) = tasks.try_join_next() {
            let (code, body) = r??;
            if code != 202 {
                bail!("POST: {code} {body}");
            }
        }
    }
    while let Some(r) = tasks.join_next().await {
        let (code, body) = r??;
        if code != 202 {
            bail!("POST: {code} {body}");
        }
    }
    let posted = started.elapsed();
    // Done when every command's result is stored.
    let deadline = Instant::now() + Duration::from_secs(600);
    let stats = loop {
        let (_, m) = env.get("/api/v1/ota/metrics").await?;
        let ended: u64 = ["SUCCESS", "FAILED", "EXPIRED", "CANCELLED"]
            .iter()
            .map(|s| m["byStatus"][*s].as_u64().unwrap_or(0))
            .sum();
        if ended as usize >= a.commands {
            break m;
        }
        if Instant::now() > deadline {
            bail!("only {ended} of {} commands ended after 600 s", a.commands);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = started.elapsed();
    let ok = stats["byStatus"]["SUCCESS"].as_u64().unwrap_or(0);
    let rss_peak = devkit::peak_rss_bytes().unwrap_or(0);
    println!("| store | commands | stored results/s | POSTs/s | success | mean send->PoR | peak RSS (after setup) |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {} | {:.0} | {:.0} | {ok} | {:.1} ms | {:.0} MiB ({:.0} MiB) |",
        env.server.store.backend(),
        a.commands,
        a.commands as f64 / elapsed.as_secs_f64(),
        a.commands as f64 / posted.as_secs_f64(),
        stats["meanCompletionMs"].as_f64().unwrap_or(f64::NAN),
        rss_peak as f64 / 1048576.0,
        rss_setup.max(rss_before) as f64 / 1048576.0,
    );
    if let Ok(env) = Arc::try_unwrap(env) {
        env.shutdown().await;
    }
    if ok as usize != a.commands {
        bail!(
            "{} of {} commands did not succeed: {}",
            a.commands as u64 - ok,
            a.commands,
            stats
        );
    }
    Ok(ExitCode::SUCCESS)
}
