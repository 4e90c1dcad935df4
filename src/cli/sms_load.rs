//! `otagw sms-load`: end-to-end load over SMPP. Gateway (SCP80 + `SmppTransport`) -> SMSC
//! (the in-process simulator, or a real one) -> virtual UICCs -> PoR -> matched and verified.
//! Reports commands per second with PoR for each send window.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use tokio::sync::Semaphore;

use otagw::dispatch::{secure_command, OtaDispatcher, OtaOutcome};
use otagw::script::{self, rfm, CardClass, ScriptFormat};
use otagw::security::{
    CommandHeader, Counter, KeyConfig, KeyIdentifier, PorStatus, Scp80Keys, Spi,
};
use otagw::sim::{Fleet, FleetDefaults};
use otagw_sms::smpp::{SmppConfig, SmppTransport};
use otagw_sms::smsc_sim::{SmscConfig, SmscSimulator};
use otagw_transport::{MessageId, SendOptions, Transport};

#[derive(Debug, Args)]
pub struct SmsLoadArgs {
    /// Commands to send per window size.
    #[arg(long, default_value_t = 20_000)]
    commands: usize,
    /// Send windows to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    windows: Vec<usize>,
    /// SMPP binds.
    #[arg(long, default_value_t = 1)]
    binds: usize,
    /// Virtual cards (generated) behind the simulator.
    #[arg(long, default_value_t = 10_000)]
    cards: usize,
    /// Card algorithm: 3DES two-key (KIc/KID 15) or AES-128 (12).
    #[arg(long, default_value = "aes", value_parser = ["aes", "3des"])]
    algorithm: String,
}

pub(crate) struct GatewayCard {
    pub(crate) msisdn: String,
    pub(crate) keys: Scp80Keys,
}

/// The gateway's view of the fleet: the vendor file the simulator's cards come from.
pub(crate) fn gateway_cards(
    fleet: &Fleet,
    spi: &Spi,
    kic_kid: u8,
) -> anyhow::Result<Vec<GatewayCard>> {
    let text = fleet.to_vendor_file();
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix("VAR_OUT:"))
        .context("vendor file header")?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .with_context(|| format!("vendor file lacks {name}"))
    };
    let (m, c, d) = (col("MSISDN")?, col("KIC")?, col("KID")?);
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let get = |i: usize| f.get(i).copied().context("short vendor row");
            let kic = hex::decode(get(c)?)?;
            let kid = hex::decode(get(d)?)?;
            let cfg = KeyConfig {
                kic_key: Some(&kic),
                kid_key: Some(&kid),
                ..Default::default()
            };
            Ok(GatewayCard {
                msisdn: get(m)?.to_string(),
                keys: Scp80Keys::resolve(spi, kic_kid, kic_kid, &cfg)?,
            })
        })
        .collect()
}

pub fn run(a: SmsLoadArgs) -> anyhow::Result<ExitCode> {
    if a.cards == 0 || a.commands == 0 {
        bail!("--cards and --commands must be at least 1");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(load(a))
}

async fn load(a: SmsLoadArgs) -> anyhow::Result<ExitCode> {
    // SPI 16 39: ciphered + CC + counter must be higher; PoR ciphered + CC, by SMS-SUBMIT.
    let spi = Spi::from_bytes([0x16, 0x39]);
    let kic_kid = if a.algorithm == "aes" { 0x12 } else { 0x15 };
    let fleet = Fleet::generate(a.cards, 11, FleetDefaults::default())?;
    let cards = Arc::new(gateway_cards(&fleet, &spi, kic_kid)?);
    let smsc = SmscSimulator::start(
        SmscConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
        Arc::new(fleet),
    )
    .await
    .context("simulator")?;
    let mut apdus = vec![
        rfm::select_fid(CardClass::Gsm, 0x3F00),
        rfm::select_fid(CardClass::Gsm, 0x7F20),
        rfm::select_fid(CardClass::Gsm, 0x6F46),
    ];
    let mut spn = b"\x01otagw load".to_vec();
    spn.resize(17, 0xFF);
    apdus.push(rfm::update_binary(CardClass::Gsm, 0, &spn)?);
    let data = Arc::new(script::CommandScript::from_commands(apdus).encode(ScriptFormat::Compact)?);

    println!(
        "otagw sms-load: {} one-SMS RFM commands per window, {} cards, {}, {} bind(s), PoR via MO",
        a.commands, a.cards, a.algorithm, a.binds
    );
    println!("| window | commands/s with PoR | mean round trip |");
    println!("|---|---|---|");
    let mut counters = vec![0u64; cards.len()];
    let mut next_id = 0u64;
    for &window in &a.windows {
        let mut config = SmppConfig::new(smsc.local_addr().to_string(), "load", "load");
        config.window = window.max(1);
        config.binds = a.binds.max(1);
        let transport = Arc::new(SmppTransport::start(config)?);
        if !transport.wait_bound(Duration::from_secs(5)).await {
            bail!("could not bind to the simulator");
        }
        let dyn_t: Arc<dyn Transport> = transport.clone();
        let dispatcher = Arc::new(OtaDispatcher::new(dyn_t));
        // Enough commands in flight to keep every window full.
        let in_flight = Arc::new(Semaphore::new(window.max(1) * a.binds.max(1) * 2));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        let mut total_rtt = Duration::ZERO;
        let mut n = 0u32;
        for i in 0..a.commands {
            let c = i % cards.len();
            counters[c] += 1;
            next_id += 1;
            let card = &cards[c];
            let header = CommandHeader {
                spi,
                kic: KeyIdentifier(kic_kid),
                kid: KeyIdentifier(kic_kid),
                tar: [0xB0, 0x00, 0x10],
                counter: Counter::new(counters[c])?,
            };
            let c = secure_command(
                MessageId(next_id),
                otagw_transport::Destination {
                    msisdn: card.msisdn.clone(),
                    iccid: None,
                },
                &header,
                &card.keys,
                &data,
                otagw::security::command::PacketFraming::Sms,
                SendOptions::default(),
            )?;
            let permit = in_flight.clone().acquire_owned().await?;
            let rx = dispatcher.send(c.message, c.pending).await?;
            let sent = Instant::now();
            tasks.spawn(async move {
                let outcome = tokio::time::timeout(Duration::from_secs(30), rx).await;
                drop(permit);
                (outcome, sent.elapsed())
            });
            while let Some(done) = tasks.try_join_next() {
                total_rtt += check(done?)?;
                n += 1;
            }
        }
        while let Some(done) = tasks.join_next().await {
            total_rtt += check(done?)?;
            n += 1;
        }
        let elapsed = started.elapsed();
        let rate = a.commands as f64 / elapsed.as_secs_f64();
        let mean = total_rtt / n.max(1);
        println!(
            "| {window} | {rate:.0} | {:.2} ms |",
            mean.as_secs_f64() * 1e3
        );
        transport.shutdown().await;
    }
    smsc.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

type Done = (
    Result<Result<OtaOutcome, tokio::sync::oneshot::error::RecvError>, tokio::time::error::Elapsed>,
    Duration,
);

fn check((outcome, rtt): Done) -> anyhow::Result<Duration> {
    match outcome {
        Ok(Ok(OtaOutcome::Por(d, _))) if d.status == PorStatus::Ok => Ok(rtt),
        Ok(Ok(other)) => bail!("a command ended with {other:?}"),
        Ok(Err(_)) => bail!("a command's outcome was dropped"),
        Err(_) => bail!("a command got no PoR within 30 s"),
    }
}
