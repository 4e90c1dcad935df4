//! `otagw walk`: RFM commands from the gateway to cards and their PoRs back, on embedded
//! defaults. First through the codecs step by step (script, SCP80, SMS-PP framing, ENVELOPE,
//! PoR) with the card side played inline; then over real SMPP sockets on loopback: the gateway's
//! SMPP session -> the SMSC simulator -> virtual UICCs with file systems -> PoR as an MO.

use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use otagw::dispatch::{secure_command, OtaDispatcher, OtaOutcome};
use otagw::script::{self, rfm, CardClass, RApdu, ScriptFormat, ScriptResponse};
use otagw::security::command::encode_command_packet;
use otagw::security::response::encode_response_packet;
use otagw::security::{
    check_counter, CcScope, CommandHeader, CommandPacketView, Counter, KeyConfig, KeyIdentifier,
    PorStatus, ResponseHeader, ResponsePacketView, Scp80Keys, Spi,
};
use otagw::sim::{Fleet, FleetDefaults};
use otagw_sms::smpp::{SmppConfig, SmppTransport};
use otagw_sms::smsc_sim::{SmscConfig, SmscSimulator};
use otagw_sms::{
    split_packet, Accepted, Address, ConcatReference, PacketKind, Reassembler, SmsDeliver,
    SmsPpDownload,
};
use otagw_transport::{MessageId, SendOptions, Transport};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum DemoAlgorithm {
    /// 3DES two-key CBC + CBC-MAC (KIc/KID 0x15).
    Tdes,
    /// AES-128 CBC + CMAC (KIc/KID 0x12).
    Aes,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Card key algorithm.
    #[arg(long, value_enum, default_value = "tdes")]
    algorithm: DemoAlgorithm,
    /// New service provider name written to EF SPN (6F46).
    #[arg(long, default_value = "otagw demo")]
    spn: String,
}

const MSISDN: &str = "491700000001";
const KIC_KEY: &str = "f09c43ee1a0391665cc9f05af4e0bd10";
const KID_KEY: &str = "01981f4a20999f62af99988107baf6ca";

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // SPI 16 39: CC + ciphering + counter must be higher; PoR always, ciphered + CC, by SMS-SUBMIT.
    let spi = Spi::from_bytes([0x16, 0x39]);
    let (kic, kid) = match args.algorithm {
        DemoAlgorithm::Tdes => (0x15, 0x15),
        DemoAlgorithm::Aes => (0x12, 0x12),
    };
    let kic_key = hex::decode(KIC_KEY)?;
    let kid_key = hex::decode(KID_KEY)?;
    let cfg = KeyConfig {
        kic_key: Some(&kic_key),
        kid_key: Some(&kid_key),
        ..Default::default()
    };
    let gateway_keys = Scp80Keys::resolve(&spi, kic, kid, &cfg)?;
    let card_keys = Scp80Keys::resolve(&spi, kic, kid, &cfg)?;
    let mut card_counter = Counter::new(0x41)?;

    println!(
        "otagw demo: RFM over SMS-PP, SCP80 {:?}, SPI 1639, TAR B00010, card MSISDN +{MSISDN}\n",
        args.algorithm
    );

    // A one-SMS command, then one that needs concatenation.
    let mut spn = vec![0x01];
    spn.extend_from_slice(args.spn.as_bytes());
    spn.resize(17, 0xFF);
    let small = vec![
        rfm::select_fid(CardClass::Gsm, 0x3F00),
        rfm::select_fid(CardClass::Gsm, 0x7F20),
        rfm::select_fid(CardClass::Gsm, 0x6F46),
        rfm::update_binary(CardClass::Gsm, 0, &spn)?,
    ];
    let mut large = vec![
        rfm::select_fid(CardClass::Gsm, 0x3F00),
        rfm::select_fid(CardClass::Gsm, 0x7F20),
        rfm::select_fid(CardClass::Gsm, 0x6F7B),
    ];
    for i in 0..6u16 {
        large.push(rfm::update_binary(CardClass::Gsm, i * 48, &[0xFF; 48])?);
    }

    for (n, (title, apdus)) in [
        ("update EF SPN", small),
        ("update EF FPLMN in 6 blocks", large),
    ]
    .into_iter()
    .enumerate()
    {
        let counter = Counter::new(0x42 + n as u64)?;
        println!(
            "== command {}: {title} ({} APDUs), counter {:010x}",
            n + 1,
            apdus.len(),
            counter.value()
        );
        let script = script::CommandScript::from_commands(apdus).encode(ScriptFormat::Compact)?;
        println!(
            "gateway  script (compact, TS 102 226): {} octets",
            script.len()
        );
        let header = CommandHeader {
            spi,
            kic: KeyIdentifier(kic),
            kid: KeyIdentifier(kid),
            tar: [0xB0, 0x00, 0x10],
            counter,
        };
        let packet = encode_command_packet(&header, &gateway_keys, &script)?;
        println!(
            "gateway  secured packet: {} octets\n         {}",
            packet.len(),
            hex::encode(&packet)
        );
        let segments = split_packet(
            PacketKind::Command,
            &packet,
            ConcatReference::EightBit(n as u8),
        )?;
        println!("gateway  SMS-PP: {} SMS (class 2, PID 7F)", segments.len());

        // The handset hands each SMS to the card as an ENVELOPE (SMS-PP download), in any order.
        let mut reassembler = Reassembler::new();
        let mut received = None;
        for (i, ud) in segments.iter().enumerate().rev() {
            let deliver = SmsDeliver::sim_data_download(
                Address::international(MSISDN)?,
                [0x62, 0x11, 0x21, 0x90, 0x00, 0x00, 0x00],
                ud.clone(),
            );
            let envelope = SmsPpDownload {
                address: None,
                deliver,
            }
            .encode()?;
            println!(
                "handset  ENVELOPE {} ({} octets): {}...",
                i + 1,
                envelope.len(),
                hex::encode(&envelope[..24.min(envelope.len())])
            );
            let got = SmsPpDownload::decode(&envelope)?;
            let user_data = got.deliver.user_data.as_bytes().to_vec();
            if let Accepted::Complete(p) = reassembler.accept(MSISDN, &user_data)? {
                received = Some(p.data);
            }
        }
        let Some(received) = received else {
            bail!("card: message incomplete")
        };

        // Card side.
        let view = CommandPacketView::parse(&received).context("card: command packet")?;
        let opened = view.open(&card_keys).context("card: command packet")?;
        let status = match check_counter(spi.counter, opened.header.counter, card_counter) {
            Ok(next) => {
                if let Some(c) = next {
                    card_counter = c;
                }
                PorStatus::Ok
            }
            Err(status) => status,
        };
        let commands = script::parse_command_script(&opened.data, ScriptFormat::Compact)?;
        let executed = commands.commands().count();
        println!(
            "card     CC verified, deciphered, counter check: {}, {executed} APDUs",
            status.name()
        );
        let answer = ScriptResponse {
            executed,
            responses: vec![RApdu::new(Vec::new(), 0x9000)],
            ..Default::default()
        }
        .encode(ScriptFormat::Compact)?;
        let por = encode_response_packet(
            &ResponseHeader {
                tar: opened.header.tar,
                counter: opened.header.counter,
                status,
            },
            &spi,
            &card_keys,
            &answer,
            CcScope::SmsUdh,
        )?;
        let mut por_ud = vec![0x02, 0x71, 0x00];
        por_ud.extend_from_slice(&por);
        println!(
            "card     PoR (SMS-SUBMIT user data): {}",
            hex::encode(&por_ud)
        );

        // Gateway verifies the PoR.
        let decoded =
            ResponsePacketView::parse_sms(&por_ud)?.open(&spi, &gateway_keys, CcScope::SmsUdh)?;
        let resp = script::parse_compact_response(&decoded.data)?;
        let last = resp
            .last()
            .map(|r| format!("{:04X}", r.sw))
            .unwrap_or_default();
        println!(
            "gateway  PoR verified: status {} ({}), counter {:010x}, {} executed, last SW {last}\n",
            hex::encode([decoded.status.to_byte()]),
            decoded.status_name,
            decoded.counter.value(),
            resp.executed
        );
    }

    // A replayed packet is refused by the card's counter check.
    let replay = check_counter(spi.counter, Counter::new(0x42)?, card_counter);
    println!(
        "replay of counter 42 -> card answers {}\n",
        replay.err().map_or("accepted?!", PorStatus::name)
    );

    over_smpp(&args, spi, kic)?;
    Ok(ExitCode::SUCCESS)
}

/// The same over real sockets: the gateway's SMPP session -> the SMSC simulator (in-process, on
/// loopback) -> virtual UICCs -> PoR back as an MO -> matched to its command and verified.
fn over_smpp(args: &DemoArgs, spi: Spi, kic_kid: u8) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let fleet = Fleet::generate(3, 5, FleetDefaults::default())?;
        let cards = super::sms_load::gateway_cards(&fleet, &spi, kic_kid)?;
        let smsc = SmscSimulator::start(
            SmscConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
            Arc::new(fleet),
        )
        .await?;
        let transport = Arc::new(SmppTransport::start(SmppConfig::new(
            smsc.local_addr().to_string(),
            "demo",
            "demo",
        ))?);
        if !transport.wait_bound(Duration::from_secs(5)).await {
            bail!("the gateway could not bind to the SMSC simulator");
        }
        println!(
            "== over SMPP: gateway bound to the SMSC simulator on {}, 3 virtual cards",
            smsc.local_addr()
        );
        let dyn_t: Arc<dyn Transport> = transport.clone();
        let dispatcher = OtaDispatcher::new(dyn_t);
        let mut spn = vec![0x01];
        spn.extend_from_slice(args.spn.as_bytes());
        spn.resize(17, 0xFF);
        let update = vec![
            rfm::select_fid(CardClass::Gsm, 0x3F00),
            rfm::select_fid(CardClass::Gsm, 0x7F20),
            rfm::select_fid(CardClass::Gsm, 0x6F46),
            rfm::update_binary(CardClass::Gsm, 0, &spn)?,
        ];
        let read = vec![
            rfm::select_fid(CardClass::Gsm, 0x3F00),
            rfm::select_fid(CardClass::Gsm, 0x7F20),
            rfm::select_fid(CardClass::Gsm, 0x6F46),
            rfm::read_binary(CardClass::Gsm, 0, 17)?,
        ];
        let mut id = 0;
        for card in &cards {
            for (counter, (what, apdus)) in [("UPDATE EF SPN", &update), ("READ EF SPN", &read)]
                .into_iter()
                .enumerate()
            {
                id += 1;
                let data = script::CommandScript::from_commands(apdus.clone())
                    .encode(ScriptFormat::Compact)?;
                let header = CommandHeader {
                    spi,
                    kic: KeyIdentifier(kic_kid),
                    kid: KeyIdentifier(kic_kid),
                    tar: [0xB0, 0x00, 0x10],
                    counter: Counter::new(counter as u64 + 1)?,
                };
                let options = SendOptions {
                    delivery_report: true,
                    ..SendOptions::default()
                };
                let c = secure_command(
                    MessageId(id),
                    otagw_transport::Destination {
                        msisdn: card.msisdn.clone(),
                        iccid: None,
                    },
                    &header,
                    &card.keys,
                    &data,
                    otagw::security::command::PacketFraming::Sms,
                    options,
                )?;
                let rx = dispatcher.send(c.message, c.pending).await?;
                let outcome = tokio::time::timeout(Duration::from_secs(10), rx)
                    .await
                    .context("no PoR within 10 s")??;
                let OtaOutcome::Por(por, _) = outcome else {
                    bail!("command {id} failed: {outcome:?}");
                };
                let resp = script::parse_compact_response(&por.data)?;
                let last = resp.last();
                println!(
                    "+{} {what:<13} -> PoR {} ({}), {} executed, last SW {:04X} {}",
                    card.msisdn,
                    hex::encode([por.status.to_byte()]),
                    por.status_name,
                    resp.executed,
                    last.map_or(0, |r| r.sw),
                    last.map(|r| hex::encode(&r.data)).unwrap_or_default()
                );
            }
        }
        println!(
            "SMSC: {} submits, {} command packets, {} MO PoRs, {} receipts",
            smsc.stats().submits_received,
            smsc.stats().command_packets,
            smsc.stats().mo_sent,
            smsc.stats().dlrs_sent
        );
        transport.shutdown().await;
        smsc.shutdown().await;
        Ok(())
    })
}
