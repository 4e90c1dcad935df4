//! `otagw smsc-sim`: the SMSC simulator with a fleet of virtual UICCs behind it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use otagw::sim::{Fleet, FleetDefaults};
use otagw_sms::smsc_sim::{
    Credentials, FaultConfig, PemSource, SmscConfig, SmscSimulator, SmscTls, TlsIdentity,
};

#[derive(Debug, Args)]
pub struct SmscSimArgs {
    /// Address to listen on for SMPP binds.
    #[arg(long, default_value = "127.0.0.1:2775")]
    listen: SocketAddr,
    /// Cards from a SIM vendor output file (`VAR_OUT:` CSV); the gateway provisions the same file.
    #[arg(long, value_name = "FILE", conflicts_with = "cards")]
    vendor_file: Option<PathBuf>,
    /// Or generate this many cards (deterministic from --seed).
    #[arg(long, default_value_t = 1000)]
    cards: usize,
    /// Seed for generated cards and for fault injection.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the generated fleet as a vendor file, for the gateway to provision.
    #[arg(long, value_name = "FILE")]
    write_vendor_file: Option<PathBuf>,
    /// Accept only this system_id (with --password); any when absent.
    #[arg(long, requires = "password")]
    system_id: Option<String>,
    /// Password for --system-id.
    #[arg(long)]
    password: Option<String>,
    /// Share of submit_sm answered ESME_RTHROTTLED (0..1).
    #[arg(long, default_value_t = 0.0)]
    throttle_share: f64,
    /// Share of submit_sm accepted then lost: no receipt, no PoR (0..1).
    #[arg(long, default_value_t = 0.0)]
    drop_share: f64,
    /// Share of submit_sm delivered late (0..1), by 100 ms to 1 s.
    #[arg(long, default_value_t = 0.0)]
    delay_share: f64,
    /// Send no plain delivery receipts (PoRs in receipts still go out).
    #[arg(long)]
    no_receipts: bool,
    /// Serve SMPP over TLS with this certificate chain (PEM); requires --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With TLS: require client certificates issued by this CA (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Stop after this many seconds (default: run until interrupted).
    #[arg(long)]
    duration_secs: Option<u64>,
}

fn share(name: &str, v: f64) -> anyhow::Result<f64> {
    if !(0.0..=1.0).contains(&v) {
        anyhow::bail!("--{name}: {v} is not a share between 0 and 1");
    }
    Ok(v)
}

pub fn run(a: SmscSimArgs) -> anyhow::Result<ExitCode> {
    let fleet = match &a.vendor_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--vendor-file {}", path.display()))?;
            Fleet::from_vendor_file(&text, FleetDefaults::default())
                .with_context(|| format!("--vendor-file {}", path.display()))?
        }
        None => Fleet::generate(a.cards, a.seed, FleetDefaults::default())
            .context("generating the fleet")?,
    };
    if let Some(path) = &a.write_vendor_file {
        std::fs::write(path, fleet.to_vendor_file())
            .with_context(|| format!("--write-vendor-file {}", path.display()))?;
    }
    let config = SmscConfig {
        listen: a.listen,
        credentials: match (&a.system_id, &a.password) {
            (Some(id), Some(pw)) => Some(vec![Credentials::new(id.clone(), pw.clone())]),
            _ => None,
        },
        faults: FaultConfig {
            seed: a.seed,
            throttle_share: share("throttle-share", a.throttle_share)?,
            drop_share: share("drop-share", a.drop_share)?,
            delay_share: share("delay-share", a.delay_share)?,
            ..FaultConfig::default()
        },
        receipts: !a.no_receipts,
        tls: match (&a.tls_cert, &a.tls_key) {
            (Some(cert), Some(key)) => {
                let tls = SmscTls::new(TlsIdentity::new(
                    PemSource::file(cert.clone()),
                    PemSource::file(key.clone()),
                ));
                Some(match &a.tls_client_ca {
                    Some(ca) => tls.with_client_ca(PemSource::file(ca.clone())),
                    None => tls,
                })
            }
            _ => None,
        },
        ..SmscConfig::default()
    };
    let cards = fleet.len();
    let tls_on = config.tls.is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let handle = SmscSimulator::start(config, Arc::new(fleet))
            .await
            .with_context(|| format!("starting the SMSC simulator on {}", a.listen))?;
        eprintln!(
            "otagw smsc-sim: listening on {}{} with {cards} virtual cards",
            handle.local_addr(),
            if tls_on { " (TLS)" } else { "" }
        );
        match a.duration_secs {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        let stats = handle.stats();
        handle.shutdown().await;
        eprintln!("otagw smsc-sim: {stats:?}");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
