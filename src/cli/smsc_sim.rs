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
    /// Generated cards: subscriptions installed at the factory besides the bootstrap one
    /// (slots 2, 3, ...; written as IMSI2.. columns by --write-vendor-file).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=7))]
    factory_subscriptions: u8,
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
    /// Share of delivered command packets whose PoR is lost (the card ran the command; 0..1).
    #[arg(long, default_value_t = 0.0)]
    por_drop_share: f64,
    /// Share of subscription notifications (MO SMS) lost; the card repeats them (0..1).
    #[arg(long, default_value_t = 0.0)]
    notification_drop_share: f64,
    /// Share of subscription notifications held back by up to 2 s (0..1).
    #[arg(long, default_value_t = 0.0)]
    notification_delay_share: f64,
    /// Share of subscription IMSIs whose network refuses to attach them, decided once per
    /// IMSI from --seed: a switch to one rolls back (0..1).
    #[arg(long, default_value_t = 0.0)]
    attach_refuse_share: f64,
    /// The bind system_id that receives the cards' subscription notifications (default:
    /// --system-id, else "otagw").
    #[arg(long)]
    notify_system_id: Option<String>,
    /// Send no plain delivery receipts (PoRs in receipts still go out).
    #[arg(long)]
    no_receipts: bool,
    /// At most this many deliver_sm (receipts, PoRs) unanswered per bind, as an SMSC's window;
    /// unlimited when absent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    deliver_window: Option<u32>,
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
    /// Append one line per command packet a card receives: MSISDN, SHA-256 of the packet,
    /// PoR status (hex, `-` when discarded), commands executed and the card's counter after it.
    /// Tests read it to check that no card ran a counter twice.
    #[arg(long, value_name = "FILE")]
    journal: Option<PathBuf>,
    /// Keys of generated cards: AES-128 (CBC + CMAC, the gateway demo's choice) or the
    /// fleet's default (implicit algorithms).
    #[arg(long, value_parser = ["aes", "default"], default_value = "default")]
    algorithm: String,
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
        None => {
            let defaults = FleetDefaults {
                factory_subscriptions: a.factory_subscriptions,
                ..if a.algorithm == "aes" {
                    otagw::devkit::fleet_defaults()
                } else {
                    FleetDefaults::default()
                }
            };
            Fleet::generate(a.cards, a.seed, defaults).context("generating the fleet")?
        }
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
            por_drop_share: share("por-drop-share", a.por_drop_share)?,
            ..FaultConfig::default()
        },
        receipts: !a.no_receipts,
        deliver_window: a.deliver_window.map(|w| w as usize),
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
    let notification_faults = otagw::devkit::NotificationFaults {
        seed: a.seed,
        drop_share: share("notification-drop-share", a.notification_drop_share)?,
        delay_share: share("notification-delay-share", a.notification_delay_share)?,
        ..Default::default()
    };
    let network = otagw::sim::subscriptions::SeededNetwork {
        seed: a.seed,
        refuse_share: share("attach-refuse-share", a.attach_refuse_share)?,
        refused: Default::default(),
    };
    let notify_system_id = a
        .notify_system_id
        .clone()
        .or_else(|| a.system_id.clone())
        .unwrap_or_else(|| "otagw".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async move {
        let fleet = Arc::new(fleet);
        let ticker_fleet = fleet.clone();
        let started = match &a.journal {
            Some(path) => {
                let file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("--journal {}", path.display()))?;
                let network = Journal {
                    fleet,
                    out: std::sync::Mutex::new(file),
                };
                SmscSimulator::start(config, Arc::new(network)).await
            }
            None => SmscSimulator::start(config, fleet).await,
        };
        let handle =
            started.with_context(|| format!("starting the SMSC simulator on {}", a.listen))?;
        // The cards' subscription applications: attach, roll back, notify (MO SMS).
        let _ticker = otagw::devkit::tick_fleet_subscriptions(
            ticker_fleet,
            handle.mo_sender(),
            notify_system_id,
            Arc::new(network),
            Duration::from_millis(250),
            notification_faults,
        );
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

/// The fleet, writing down every command packet its cards receive.
struct Journal {
    fleet: Arc<Fleet>,
    out: std::sync::Mutex<std::fs::File>,
}

impl otagw_sms::smsc_sim::HandsetNetwork for Journal {
    fn command_packet(&self, msisdn: &str, packet: &[u8]) -> otagw_sms::smsc_sim::HandsetReply {
        use sha2::Digest;
        use std::io::Write;
        let processed = self.fleet.with_card(msisdn, |card| {
            let outcome = card.process(packet);
            let counter = card
                .key_sets()
                .iter()
                .map(|k| k.counter().value())
                .max()
                .unwrap_or(0);
            (outcome, counter)
        });
        let Some((outcome, counter)) = processed else {
            return otagw_sms::smsc_sim::HandsetReply::UnknownSubscriber;
        };
        let status = outcome
            .status
            .map(|s| format!("{:02x}", s.to_byte()))
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "{msisdn} {} {status} {} {counter}\n",
            hex::encode(sha2::Sha256::digest(packet)),
            outcome.executed
        );
        if let Ok(mut f) = self.out.lock() {
            let _ = f.write_all(line.as_bytes());
        }
        otagw_sms::smsc_sim::HandsetReply::Delivered { por: outcome.por }
    }

    fn knows(&self, msisdn: &str) -> bool {
        otagw_sms::smsc_sim::HandsetNetwork::knows(self.fleet.as_ref(), msisdn)
    }
}
