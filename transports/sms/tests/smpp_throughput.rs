//! Submit throughput against a fake SMSC that answers at once (loopback). Ignored by default:
//! `cargo test --release -p otagw-sms --test smpp_throughput -- --ignored --nocapture`.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use otagw_sms::smpp::{SmppConfig, SmppTransport};
use otagw_transport::{
    DeliveryEvent, Destination, EventSink, MessageId, OutboundMessage, Payload, SendOptions,
    Transport,
};
use rusmpp::pdus::{BindTransceiverResp, SubmitSmResp};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::COctetString;
use rusmpp::{Command, CommandStatus, Pdu};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::codec::Framed;

struct Count(AtomicUsize, Notify, usize);

impl EventSink for Count {
    fn deliver(&self, event: DeliveryEvent) {
        if matches!(event, DeliveryEvent::Accepted { .. })
            && self.0.fetch_add(1, Ordering::Relaxed) + 1 == self.2
        {
            self.1.notify_one();
        }
    }
}

async fn fake_smsc(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut conn = Framed::new(stream, CommandCodec::new());
            let mut n = 0u64;
            while let Some(Ok(command)) = conn.next().await {
                let seq = command.sequence_number();
                let reply = match command.pdu() {
                    Some(Pdu::BindTransceiver(_)) => Command::new(
                        CommandStatus::EsmeRok,
                        seq,
                        BindTransceiverResp::builder()
                            .system_id(COctetString::from_str("fake").unwrap())
                            .build(),
                    ),
                    Some(Pdu::SubmitSm(_)) => {
                        n += 1;
                        Command::new(
                            CommandStatus::EsmeRok,
                            seq,
                            SubmitSmResp::builder()
                                .message_id(COctetString::from_str(&format!("{n:x}")).unwrap())
                                .build(),
                        )
                    }
                    Some(Pdu::EnquireLink) => {
                        Command::new(CommandStatus::EsmeRok, seq, Pdu::EnquireLinkResp)
                    }
                    Some(Pdu::Unbind) => {
                        let _ = conn
                            .send(Command::new(CommandStatus::EsmeRok, seq, Pdu::UnbindResp))
                            .await;
                        return;
                    }
                    _ => continue,
                };
                if conn.feed(reply).await.is_err() {
                    return;
                }
                if conn.read_buffer().is_empty()
                    && SinkExt::<Command>::flush(&mut conn).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

async fn run(window: usize, binds: usize, messages: usize) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(fake_smsc(listener));
    let mut config = SmppConfig::new(address, "esme", "pw");
    config.window = window;
    config.binds = binds;
    let transport = SmppTransport::start(config).unwrap();
    let sink = Arc::new(Count(AtomicUsize::new(0), Notify::new(), messages));
    transport.set_event_sink(sink.clone());
    assert!(transport.wait_bound(Duration::from_secs(5)).await);
    let done = sink.1.notified();
    let start = Instant::now();
    for id in 0..messages {
        let message = OutboundMessage {
            id: MessageId(id as u64),
            destination: Destination {
                msisdn: format!("49170{id:07}"),
                iccid: None,
            },
            payload: Payload::SecuredPacket {
                packet: vec![0x5A; 60],
                tar: [0xB0, 0, 0x10],
                counter: [0, 0, 0, 0, 1],
            },
            options: SendOptions::default(),
        };
        transport.send(message).await.unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), done)
        .await
        .unwrap();
    let elapsed = start.elapsed();
    println!(
        "window {window:>3}, binds {binds}: {messages} submit_sm in {elapsed:?} = {:.0}/s",
        messages as f64 / elapsed.as_secs_f64()
    );
    transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn submit_throughput() {
    for (window, binds) in [(1, 1), (10, 1), (100, 1), (100, 2)] {
        let messages = if window == 1 { 5_000 } else { 50_000 };
        run(window, binds, messages).await;
    }
}
