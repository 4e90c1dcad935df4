//! Faults and session behaviour, against a tiny scripted fake SMSC written here with rusmpp's
//! codec over a loopback TcpListener: connection closed mid-window, throttling, permanent
//! errors, garbage from the SMSC, window, response timeout, bind rejection, keep-alive,
//! unbind, transmitter + receiver binds, sequential segments, receipt correlation.
//!
//! Every test is bounded in time (`LIMIT` per wait) and stops by itself.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use otagw_sms::smpp::{
    BindMode, PemSource, SmppConfig, SmppError, SmppStatus, SmppTls, SmppTransport,
};
use otagw_transport::{
    DeliveryEvent, Destination, EventSink, MessageId, OutboundMessage, Payload, SendOptions,
    Transport, TransportError, Urgency,
};
use rusmpp::pdus::{
    BindReceiverResp, BindTransceiverResp, BindTransmitterResp, DeliverSm, SubmitSm, SubmitSmResp,
};
use rusmpp::tlvs::MessageDeliveryRequestTlvValue;
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, MessageState};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{timeout, Instant};
use tokio_util::codec::Framed;

const LIMIT: Duration = Duration::from_secs(10);

type Conn = Framed<TcpStream, CommandCodec>;

// ---------------------------------------------------------------------------------------------
// The fake SMSC's pieces.

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    (listener, address)
}

async fn accept(listener: &TcpListener) -> Conn {
    let (stream, _) = timeout(LIMIT, listener.accept())
        .await
        .expect("the transport connects in time")
        .unwrap();
    Framed::new(stream, CommandCodec::new())
}

/// The next command, or `None` if the transport closed the connection.
async fn recv_or_closed(conn: &mut Conn) -> Option<Command> {
    match timeout(LIMIT, conn.next()).await.expect("a PDU in time") {
        Some(Ok(command)) => Some(command),
        Some(Err(_)) | None => None,
    }
}

async fn recv(conn: &mut Conn) -> Command {
    recv_or_closed(conn).await.expect("connection open")
}

async fn reply(conn: &mut Conn, status: CommandStatus, sequence: u32, pdu: impl Into<Pdu>) {
    conn.send(Command::new(status, sequence, pdu))
        .await
        .unwrap();
}

/// Accepts a connection and answers its bind with ESME_ROK.
async fn accept_bound(listener: &TcpListener) -> Conn {
    let mut conn = accept(listener).await;
    let bind = recv(&mut conn).await;
    let system_id = COctetString::from_str("fake").unwrap();
    match bind.id() {
        CommandId::BindTransceiver => {
            let resp = BindTransceiverResp::builder().system_id(system_id).build();
            reply(
                &mut conn,
                CommandStatus::EsmeRok,
                bind.sequence_number(),
                resp,
            )
            .await
        }
        CommandId::BindTransmitter => {
            let resp = BindTransmitterResp::builder().system_id(system_id).build();
            reply(
                &mut conn,
                CommandStatus::EsmeRok,
                bind.sequence_number(),
                resp,
            )
            .await
        }
        CommandId::BindReceiver => {
            let resp = BindReceiverResp::builder().system_id(system_id).build();
            reply(
                &mut conn,
                CommandStatus::EsmeRok,
                bind.sequence_number(),
                resp,
            )
            .await
        }
        other => panic!("expected a bind, got {other:?}"),
    }
    conn
}

/// The next submit_sm (answering enquire_links on the way).
async fn recv_submit(conn: &mut Conn) -> (u32, SubmitSm) {
    loop {
        let command = recv(conn).await;
        match command.pdu() {
            Some(Pdu::SubmitSm(submit)) => return (command.sequence_number(), submit.clone()),
            Some(Pdu::EnquireLink) => {
                reply(
                    conn,
                    CommandStatus::EsmeRok,
                    command.sequence_number(),
                    Pdu::EnquireLinkResp,
                )
                .await
            }
            other => panic!("expected submit_sm, got {other:?}"),
        }
    }
}

async fn accept_submit(conn: &mut Conn, sequence: u32, message_id: &str) {
    let resp = SubmitSmResp::builder()
        .message_id(COctetString::from_str(message_id).unwrap())
        .build();
    reply(conn, CommandStatus::EsmeRok, sequence, resp).await;
}

/// A response of 16 octets (header only), as SMSCs send with an error status.
async fn raw_status(conn: &mut Conn, command_id: u32, status: u32, sequence: u32) {
    let mut pdu = Vec::new();
    for word in [16, command_id, status, sequence] {
        pdu.extend_from_slice(&u32::to_be_bytes(word));
    }
    conn.get_mut().write_all(&pdu).await.unwrap();
}

fn bytes(submit: &SubmitSm) -> Vec<u8> {
    submit.short_message().as_ref().to_vec()
}

async fn send_deliver(conn: &mut Conn, sequence: u32, deliver: DeliverSm) {
    reply(conn, CommandStatus::EsmeRok, sequence, deliver).await;
    let resp = recv(conn).await;
    assert_eq!(resp.id(), CommandId::DeliverSmResp);
    assert_eq!(resp.sequence_number(), sequence);
    assert_eq!(resp.status(), CommandStatus::EsmeRok);
}

fn receipt(source: &str, network_id: &str, state: MessageState, stat: &str) -> DeliverSm {
    DeliverSm::builder()
        .source_addr(COctetString::from_str(source).unwrap())
        .esm_class(EsmClass::from(0x04))
        .short_message(
            OctetString::from_str(&format!(
                "id:{network_id} sub:001 dlvrd:001 stat:{stat} err:000"
            ))
            .unwrap(),
        )
        .push_tlv(MessageDeliveryRequestTlvValue::ReceiptedMessageId(
            COctetString::from_str(network_id).unwrap(),
        ))
        .push_tlv(MessageDeliveryRequestTlvValue::MessageState(state))
        .build()
}

// ---------------------------------------------------------------------------------------------
// The transport's side.

#[derive(Default)]
struct Sink {
    events: Mutex<Vec<DeliveryEvent>>,
    notify: Notify,
}

impl EventSink for Sink {
    fn deliver(&self, event: DeliveryEvent) {
        self.events.lock().unwrap().push(event);
        self.notify.notify_waiters();
    }
}

impl Sink {
    async fn wait(
        &self,
        what: &str,
        pred: impl Fn(&[DeliveryEvent]) -> bool,
    ) -> Vec<DeliveryEvent> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let notified = self.notify.notified();
            {
                let events = self.events.lock().unwrap();
                if pred(&events) {
                    return events.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "timed out waiting for {what}; events: {:?}",
                    self.events.lock().unwrap()
                );
            }
        }
    }

    fn snapshot(&self) -> Vec<DeliveryEvent> {
        self.events.lock().unwrap().clone()
    }
}

fn accepted(events: &[DeliveryEvent], id: u64) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, DeliveryEvent::Accepted { id: i, .. } if *i == MessageId(id)))
        .count()
}

fn refs(events: &[DeliveryEvent], id: u64) -> Vec<String> {
    events
        .iter()
        .find_map(|e| match e {
            DeliveryEvent::Accepted {
                id: i,
                network_refs,
            } if *i == MessageId(id) => Some(network_refs.clone()),
            _ => None,
        })
        .expect("accepted")
}

fn config(address: &str) -> SmppConfig {
    let mut c = SmppConfig::new(address, "esme", "pw");
    c.response_timeout = Duration::from_secs(2);
    c.reconnect.initial = Duration::from_millis(20);
    c.reconnect.max = Duration::from_millis(100);
    c.throttle_pause = Duration::from_millis(200);
    c
}

fn start(config: SmppConfig) -> (SmppTransport, Arc<Sink>) {
    let transport = SmppTransport::start(config).unwrap();
    let sink = Arc::new(Sink::default());
    transport.set_event_sink(sink.clone());
    (transport, sink)
}

fn secured(id: u64, len: usize, options: SendOptions) -> OutboundMessage {
    OutboundMessage {
        id: MessageId(id),
        destination: Destination {
            msisdn: format!("4917000{id:05}"),
            iccid: None,
        },
        payload: Payload::SecuredPacket {
            packet: (0..len).map(|i| (i as u8) ^ (id as u8)).collect(),
            tar: [0xB0, 0x00, 0x10],
            counter: [0, 0, 0, 0, id as u8],
        },
        options,
    }
}

async fn stop(transport: SmppTransport) {
    timeout(LIMIT, transport.shutdown())
        .await
        .expect("shutdown in time");
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn connection_closed_mid_window_resends_identical_bytes_and_accepts_once() {
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.window = 4;
    let (transport, sink) = start(c);
    // 3 + 1 + 1 segments; the window lets 4 out.
    transport
        .send(secured(1, 300, SendOptions::default()))
        .await
        .unwrap();
    transport
        .send(secured(2, 40, SendOptions::default()))
        .await
        .unwrap();
    transport
        .send(secured(3, 50, SendOptions::default()))
        .await
        .unwrap();

    let mut first = accept_bound(&listener).await;
    let mut unanswered = Vec::new();
    for _ in 0..4 {
        unanswered.push(bytes(&recv_submit(&mut first).await.1));
    }
    drop(first); // the SMSC goes away with 4 submit_sm outstanding

    let mut second = accept_bound(&listener).await;
    let mut resent = Vec::new();
    for n in 0..5 {
        let (sequence, submit) = recv_submit(&mut second).await;
        resent.push(bytes(&submit));
        accept_submit(&mut second, sequence, &format!("id{n}")).await;
    }
    let events = sink
        .wait("three Accepted", |e| (1..=3).all(|id| accepted(e, id) == 1))
        .await;
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, DeliveryEvent::Failed { .. })),
        "{events:?}"
    );
    // The 4 unanswered went out again first, byte for byte.
    assert_eq!(&resent[..4], &unanswered[..]);
    let mut all = resent.clone();
    all.sort();
    all.dedup();
    assert_eq!(
        all.len(),
        5,
        "every segment exactly once on the new session"
    );
    // Nothing more, and each message accepted exactly once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let events = sink.snapshot();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(refs(&events, 1).len(), 3);
    assert_eq!(transport.bind_status()[0].binds, 2);
    let stopping = tokio::spawn(async move { stop(transport).await });
    let unbind = recv(&mut second).await;
    assert_eq!(unbind.id(), CommandId::Unbind);
    reply(
        &mut second,
        CommandStatus::EsmeRok,
        unbind.sequence_number(),
        Pdu::UnbindResp,
    )
    .await;
    stopping.await.unwrap();
}

#[tokio::test]
async fn throttling_pauses_and_resends_unchanged() {
    let (listener, address) = listen().await;
    let (transport, sink) = start(config(&address));
    let mut conn = accept_bound(&listener).await;

    transport
        .send(secured(1, 30, SendOptions::default()))
        .await
        .unwrap();
    let (sequence, first) = recv_submit(&mut conn).await;
    raw_status(&mut conn, 0x8000_0004, 0x58, sequence).await;
    let throttled_at = Instant::now();
    let (sequence, again) = recv_submit(&mut conn).await;
    assert!(
        throttled_at.elapsed() >= Duration::from_millis(150),
        "the bind paused"
    );
    assert_eq!(bytes(&again), bytes(&first), "resent unchanged");
    accept_submit(&mut conn, sequence, "m1").await;

    // ESME_RMSGQFUL is treated the same way.
    transport
        .send(secured(2, 30, SendOptions::default()))
        .await
        .unwrap();
    let (sequence, first) = recv_submit(&mut conn).await;
    raw_status(&mut conn, 0x8000_0004, 0x14, sequence).await;
    let (sequence, again) = recv_submit(&mut conn).await;
    assert_eq!(bytes(&again), bytes(&first));
    accept_submit(&mut conn, sequence, "m2").await;

    let events = sink
        .wait("two Accepted", |e| {
            accepted(e, 1) == 1 && accepted(e, 2) == 1
        })
        .await;
    assert_eq!(events.len(), 2, "{events:?}");
    drop(conn);
    stop(transport).await;
}

#[tokio::test]
async fn permanent_errors_fail_the_message_naming_the_status() {
    let (listener, address) = listen().await;
    let (transport, sink) = start(config(&address));
    let mut conn = accept_bound(&listener).await;

    transport
        .send(secured(1, 30, SendOptions::default()))
        .await
        .unwrap();
    let (sequence, _) = recv_submit(&mut conn).await;
    raw_status(&mut conn, 0x8000_0004, 0x0B, sequence).await;
    let events = sink.wait("Failed", |e| !e.is_empty()).await;
    assert_eq!(
        events,
        vec![DeliveryEvent::Failed {
            id: MessageId(1),
            error: TransportError::Rejected("ESME_RINVDSTADR (0x0B)".into()),
        }]
    );

    // One bad segment of three fails the message once; the other answers change nothing.
    transport
        .send(secured(2, 300, SendOptions::default()))
        .await
        .unwrap();
    let mut sequences = Vec::new();
    for _ in 0..3 {
        sequences.push(recv_submit(&mut conn).await.0);
    }
    accept_submit(&mut conn, sequences[0], "a").await;
    let resp = Command::new(
        CommandStatus::from(0x45u32),
        sequences[1],
        SubmitSmResp::default(),
    );
    conn.send(resp).await.unwrap();
    accept_submit(&mut conn, sequences[2], "c").await;
    // A generic_nack for a submit fails it too, naming the status.
    transport
        .send(secured(3, 30, SendOptions::default()))
        .await
        .unwrap();
    let (sequence, _) = recv_submit(&mut conn).await;
    raw_status(&mut conn, 0x8000_0000, 0x03, sequence).await;

    let events = sink.wait("three Failed", |e| e.len() >= 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.snapshot().len(), 3, "{events:?}");
    assert_eq!(
        events[1],
        DeliveryEvent::Failed {
            id: MessageId(2),
            error: TransportError::Rejected("ESME_RSUBMITFAIL (0x45)".into()),
        }
    );
    assert_eq!(
        events[2],
        DeliveryEvent::Failed {
            id: MessageId(3),
            error: TransportError::Rejected("generic_nack ESME_RINVCMDID (0x03)".into()),
        }
    );
    drop(conn);
    stop(transport).await;
}

#[tokio::test]
async fn garbage_from_the_smsc_never_panics_and_the_session_recovers() {
    let (listener, address) = listen().await;
    let (transport, sink) = start(config(&address));
    let mut conn = accept_bound(&listener).await;

    // A well-framed PDU with an unknown command_id: generic_nack ESME_RINVCMDID.
    let mut unknown = Vec::new();
    for word in [20u32, 0x0000_0999, 0, 77, 0xDEAD_BEEF] {
        unknown.extend_from_slice(&word.to_be_bytes());
    }
    conn.get_mut().write_all(&unknown).await.unwrap();
    let nack = recv(&mut conn).await;
    assert_eq!(
        (nack.id(), nack.sequence_number(), nack.status()),
        (CommandId::GenericNack, 77, CommandStatus::EsmeRinvcmdid)
    );

    // A deliver_sm whose body cannot be read: still answered, with ESME_RX_P_APPN.
    let mut bad_deliver = Vec::new();
    for word in [19u32, 0x0000_0005, 0, 78] {
        bad_deliver.extend_from_slice(&word.to_be_bytes());
    }
    bad_deliver.extend_from_slice(&[0x41, 0x42, 0x43]);
    conn.get_mut().write_all(&bad_deliver).await.unwrap();
    let resp = recv(&mut conn).await;
    assert_eq!(
        (resp.id(), resp.sequence_number(), resp.status()),
        (CommandId::DeliverSmResp, 78, CommandStatus::EsmeRxPAppn)
    );

    // The session is still fine.
    transport
        .send(secured(1, 30, SendOptions::default()))
        .await
        .unwrap();
    let (sequence, _) = recv_submit(&mut conn).await;
    accept_submit(&mut conn, sequence, "m1").await;
    sink.wait("Accepted 1", |e| accepted(e, 1) == 1).await;

    // Bytes that cannot be framed (command_length 5): the session is dropped...
    conn.get_mut()
        .write_all(&[0, 0, 0, 5, 0xDE, 0xAD, 0xBE, 0xEF, 0, 0, 0, 0, 0, 0, 0, 0])
        .await
        .unwrap();
    assert!(
        recv_or_closed(&mut conn).await.is_none(),
        "the transport closes the connection"
    );
    // ... and it reconnects; later messages go through.
    let mut conn = accept_bound(&listener).await;
    transport
        .send(secured(2, 30, SendOptions::default()))
        .await
        .unwrap();
    let (sequence, _) = recv_submit(&mut conn).await;
    accept_submit(&mut conn, sequence, "m2").await;
    sink.wait("Accepted 2", |e| accepted(e, 2) == 1).await;
    assert_eq!(transport.bind_status()[0].binds, 2);

    // An oversized command_length is no better.
    conn.get_mut()
        .write_all(&[0xFF, 0xFF, 0xFF, 0xFF])
        .await
        .unwrap();
    assert!(recv_or_closed(&mut conn).await.is_none());
    let mut conn = accept_bound(&listener).await;
    transport
        .send(secured(3, 30, SendOptions::default()))
        .await
        .unwrap();
    let (sequence, _) = recv_submit(&mut conn).await;
    accept_submit(&mut conn, sequence, "m3").await;
    let events = sink.wait("Accepted 3", |e| accepted(e, 3) == 1).await;
    assert_eq!(events.len(), 3, "{events:?}");
    drop(conn);
    stop(transport).await;
}

#[tokio::test]
async fn window_is_never_exceeded_and_binds_share_the_load() {
    const MESSAGES: u64 = 40;
    const WINDOW: usize = 3;
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.window = WINDOW;
    c.binds = 2;
    let (transport, sink) = start(c);

    // Each connection answers its oldest outstanding submit_sm every 3 ms.
    let served = Arc::new(Mutex::new(Vec::new()));
    let mut handlers = Vec::new();
    for bind in 0..2 {
        let mut conn = accept_bound(&listener).await;
        let served = served.clone();
        handlers.push(tokio::spawn(async move {
            let mut pending = std::collections::VecDeque::new();
            let (mut max, mut count) = (0usize, 0usize);
            loop {
                tokio::select! {
                    command = conn.next() => match command {
                        Some(Ok(command)) => match command.pdu() {
                            Some(Pdu::SubmitSm(_)) => {
                                pending.push_back(command.sequence_number());
                                max = max.max(pending.len());
                                count += 1;
                            }
                            Some(Pdu::Unbind) => {
                                reply(&mut conn, CommandStatus::EsmeRok, command.sequence_number(), Pdu::UnbindResp).await;
                                break;
                            }
                            _ => {}
                        },
                        _ => break,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(3)), if !pending.is_empty() => {
                        let sequence = pending.pop_front().unwrap();
                        accept_submit(&mut conn, sequence, &format!("b{bind}-{count}-{sequence}")).await;
                    }
                }
            }
            served.lock().unwrap().push((max, count));
        }));
    }
    for id in 1..=MESSAGES {
        transport
            .send(secured(id, 20, SendOptions::default()))
            .await
            .unwrap();
    }
    sink.wait("all Accepted", |e| {
        e.iter()
            .filter(|e| matches!(e, DeliveryEvent::Accepted { .. }))
            .count()
            == MESSAGES as usize
    })
    .await;
    stop(transport).await;
    for handler in handlers {
        timeout(LIMIT, handler).await.unwrap().unwrap();
    }
    let served = served.lock().unwrap().clone();
    assert_eq!(
        served.iter().map(|(_, n)| n).sum::<usize>(),
        MESSAGES as usize
    );
    for (max, count) in &served {
        assert!(
            *max <= WINDOW,
            "{max} outstanding on one bind, window {WINDOW}"
        );
        assert!(*count > 0, "both binds carry traffic: {served:?}");
    }
    assert!(
        served.iter().any(|(max, _)| *max == WINDOW),
        "the window is used: {served:?}"
    );
}

#[tokio::test]
async fn response_timeout_resends_the_same_segment_and_ignores_the_late_answer() {
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.response_timeout = Duration::from_millis(300);
    let (transport, sink) = start(c);
    let mut conn = accept_bound(&listener).await;

    transport
        .send(secured(1, 30, SendOptions::default()))
        .await
        .unwrap();
    let (late_sequence, first) = recv_submit(&mut conn).await;
    let sent = Instant::now();
    let (sequence, again) = recv_submit(&mut conn).await;
    assert!(sent.elapsed() >= Duration::from_millis(250));
    assert_ne!(sequence, late_sequence);
    assert_eq!(bytes(&again), bytes(&first));
    accept_submit(&mut conn, late_sequence, "late").await;
    accept_submit(&mut conn, sequence, "m1").await;
    let events = sink.wait("Accepted", |e| accepted(e, 1) == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.snapshot().len(), 1, "{events:?}");
    assert_eq!(refs(&events, 1), vec!["m1".to_string()]);

    // With max_attempts reached, the message fails with a transient timeout.
    drop(conn);
    drop(transport);
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.response_timeout = Duration::from_millis(100);
    c.max_attempts = 2;
    let (transport, sink) = start(c);
    let mut conn = accept_bound(&listener).await;
    transport
        .send(secured(9, 30, SendOptions::default()))
        .await
        .unwrap();
    recv_submit(&mut conn).await;
    recv_submit(&mut conn).await;
    let events = sink.wait("Failed", |e| !e.is_empty()).await;
    match &events[0] {
        DeliveryEvent::Failed { id, error } => {
            assert_eq!(*id, MessageId(9));
            assert!(matches!(error, TransportError::Timeout(_)), "{error}");
            assert!(error.is_transient());
        }
        other => panic!("{other:?}"),
    }
    drop(conn);
    stop(transport).await;
}

#[tokio::test]
async fn bind_rejection_is_typed_and_retried() {
    let (listener, address) = listen().await;
    let (transport, _sink) = start(config(&address));
    for _ in 0..2 {
        let mut conn = accept(&listener).await;
        let bind = recv(&mut conn).await;
        assert_eq!(bind.id(), CommandId::BindTransceiver);
        if let Some(Pdu::BindTransceiver(b)) = bind.pdu() {
            assert_eq!(b.system_id.as_str(), "esme");
            assert_eq!(b.password.as_str(), "pw");
            assert_eq!(u8::from(b.interface_version), 0x34);
        }
        raw_status(&mut conn, 0x8000_0009, 0x0E, bind.sequence_number()).await;
        assert!(recv_or_closed(&mut conn).await.is_none());
    }
    let status = transport.bind_status();
    assert!(!status[0].bound);
    let error = status[0].last_error.clone().expect("an error");
    assert_eq!(error, SmppError::BindRejected(SmppStatus(0x0E)));
    assert_eq!(
        error.to_string(),
        "bind rejected by the SMSC: ESME_RINVPASWD (0x0E)"
    );
    stop(transport).await;
}

#[tokio::test]
async fn keepalive_unanswered_enquire_link_and_unbind_on_shutdown() {
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.enquire_link_interval = Duration::from_millis(100);
    c.response_timeout = Duration::from_millis(300);
    let (transport, sink) = start(c);
    let mut conn = accept_bound(&listener).await;

    // The SMSC's enquire_link is answered.
    reply(&mut conn, CommandStatus::EsmeRok, 4242, Pdu::EnquireLink).await;
    let mut answered = false;
    let mut ours = None;
    while !answered || ours.is_none() {
        let command = recv(&mut conn).await;
        match command.id() {
            CommandId::EnquireLinkResp => {
                assert_eq!(command.sequence_number(), 4242);
                answered = true;
            }
            CommandId::EnquireLink => ours = Some(command.sequence_number()),
            other => panic!("{other:?}"),
        }
    }
    // Ours is not answered: the session is dropped and a new one is bound.
    let dropped_after = Instant::now();
    while recv_or_closed(&mut conn).await.is_some() {}
    assert!(dropped_after.elapsed() <= Duration::from_secs(2));
    let mut conn = accept_bound(&listener).await;
    assert!(transport.wait_bound(LIMIT).await);
    assert_eq!(
        transport.bind_status()[0].binds,
        2,
        "{:?}",
        transport.bind_status()
    );

    // A message nobody answers fails when the transport shuts down; the session unbinds.
    transport
        .send(secured(1, 30, SendOptions::default()))
        .await
        .unwrap();
    recv_submit(&mut conn).await;
    let transport = Arc::new(transport);
    let stopping = {
        let transport = transport.clone();
        tokio::spawn(async move { transport.shutdown().await })
    };
    let unbind = loop {
        let command = recv(&mut conn).await;
        match command.id() {
            CommandId::Unbind => break command,
            CommandId::EnquireLink => {
                reply(
                    &mut conn,
                    CommandStatus::EsmeRok,
                    command.sequence_number(),
                    Pdu::EnquireLinkResp,
                )
                .await
            }
            other => panic!("{other:?}"),
        }
    };
    reply(
        &mut conn,
        CommandStatus::EsmeRok,
        unbind.sequence_number(),
        Pdu::UnbindResp,
    )
    .await;
    timeout(LIMIT, stopping).await.unwrap().unwrap();
    assert!(recv_or_closed(&mut conn).await.is_none());
    let events = sink.snapshot();
    assert!(
        matches!(
            &events[..],
            [DeliveryEvent::Failed {
                id: MessageId(1),
                error: TransportError::NotConnected(_)
            }]
        ),
        "{events:?}"
    );
    let refused = transport.send(secured(2, 30, SendOptions::default())).await;
    assert!(matches!(refused, Err(TransportError::NotConnected(_))));
}

#[tokio::test]
async fn transmitter_and_receiver_binds() {
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.bind_mode = BindMode::TransmitterReceiver;
    let (transport, sink) = start(c);
    let mut conns = HashMap::new();
    for _ in 0..2 {
        let mut conn = accept(&listener).await;
        let bind = recv(&mut conn).await;
        let system_id = COctetString::from_str("fake").unwrap();
        match bind.id() {
            CommandId::BindTransmitter => {
                let resp = BindTransmitterResp::builder().system_id(system_id).build();
                reply(
                    &mut conn,
                    CommandStatus::EsmeRok,
                    bind.sequence_number(),
                    resp,
                )
                .await;
            }
            CommandId::BindReceiver => {
                let resp = BindReceiverResp::builder().system_id(system_id).build();
                reply(
                    &mut conn,
                    CommandStatus::EsmeRok,
                    bind.sequence_number(),
                    resp,
                )
                .await;
            }
            other => panic!("{other:?}"),
        }
        conns.insert(bind.id(), conn);
    }
    assert!(transport.wait_bound(LIMIT).await);
    let mut tx = conns.remove(&CommandId::BindTransmitter).unwrap();
    let mut rx = conns.remove(&CommandId::BindReceiver).unwrap();

    let options = SendOptions {
        delivery_report: true,
        ..Default::default()
    };
    transport.send(secured(1, 30, options)).await.unwrap();
    let (sequence, submit) = recv_submit(&mut tx).await;
    assert_eq!(u8::from(submit.registered_delivery), 1);
    accept_submit(&mut tx, sequence, "0000FF").await;
    sink.wait("Accepted", |e| accepted(e, 1) == 1).await;
    // The receipt comes on the receiver, with the id in decimal (as some SMSCs do).
    let deliver = DeliverSm::builder()
        .source_addr(COctetString::from_str("491700000001").unwrap())
        .esm_class(EsmClass::from(0x04))
        .short_message(
            OctetString::from_str("id:255 sub:001 dlvrd:001 stat:DELIVRD err:000").unwrap(),
        )
        .build();
    send_deliver(&mut rx, 9, deliver).await;
    sink.wait("Delivered", |e| {
        e.contains(&DeliveryEvent::Delivered { id: MessageId(1) })
    })
    .await;

    // The receipt may overtake the submit_sm_resp (two connections): it is kept a while.
    let options = SendOptions {
        delivery_report: true,
        ..Default::default()
    };
    transport.send(secured(2, 30, options)).await.unwrap();
    let (sequence, _) = recv_submit(&mut tx).await;
    send_deliver(
        &mut rx,
        10,
        receipt("4917000000002", "early", MessageState::Delivered, "DELIVRD"),
    )
    .await;
    accept_submit(&mut tx, sequence, "early").await;
    let events = sink
        .wait("Delivered 2", |e| {
            e.contains(&DeliveryEvent::Delivered { id: MessageId(2) })
        })
        .await;
    assert_eq!(
        &events[2..],
        &[
            DeliveryEvent::Accepted {
                id: MessageId(2),
                network_refs: vec!["early".into()]
            },
            DeliveryEvent::Delivered { id: MessageId(2) }
        ]
    );
    drop((tx, rx));
    stop(transport).await;
}

/// Campaign traffic queued on a bind does not hold up single commands: with the window full,
/// an urgent message and then a normal one, sent after twenty bulk messages, are the next two
/// submitted; the bulk ones follow in their order.
#[tokio::test]
async fn urgent_and_normal_messages_overtake_queued_bulk_traffic() {
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.window = 1;
    let (transport, _sink) = start(c);
    let mut conn = accept_bound(&listener).await;
    let bulk = SendOptions {
        urgency: Urgency::Bulk,
        ..Default::default()
    };
    for id in 1..=20 {
        transport.send(secured(id, 30, bulk.clone())).await.unwrap();
    }
    let (sequence, first) = recv_submit(&mut conn).await;
    for (id, urgency) in [(100, Urgency::Urgent), (50, Urgency::Normal)] {
        let options = SendOptions {
            urgency,
            ..Default::default()
        };
        transport.send(secured(id, 30, options)).await.unwrap();
    }
    let mut order = vec![first.destination_addr.to_string()];
    accept_submit(&mut conn, sequence, "m0").await;
    for n in 1..=21 {
        let (sequence, submit) = recv_submit(&mut conn).await;
        order.push(submit.destination_addr.to_string());
        accept_submit(&mut conn, sequence, &format!("m{n}")).await;
    }
    let mut expected = vec!["491700000001".to_string()];
    expected.push("491700000100".into());
    expected.push("491700000050".into());
    expected.extend((2..=20).map(|id| format!("4917000{id:05}")));
    assert_eq!(order, expected);
    drop(conn);
    stop(transport).await;
}

#[tokio::test]
async fn sequential_segments_wait_for_each_receipt() {
    let (listener, address) = listen().await;
    let (transport, sink) = start(config(&address));
    let mut conn = accept_bound(&listener).await;
    let options = SendOptions {
        sequential_segments: true,
        ..Default::default()
    };
    transport.send(secured(1, 300, options)).await.unwrap();
    for n in 1..=3u8 {
        let (sequence, submit) = recv_submit(&mut conn).await;
        assert_eq!(bytes(&submit)[5], n, "segment {n} in order");
        assert_eq!(
            u8::from(submit.registered_delivery),
            1,
            "receipts are asked for"
        );
        let id = format!("seg{n}");
        accept_submit(&mut conn, sequence, &id).await;
        // Nothing else goes out before this segment's receipt.
        assert!(
            timeout(Duration::from_millis(150), conn.next())
                .await
                .is_err(),
            "segment {} sent before the receipt of segment {n}",
            n + 1
        );
        send_deliver(
            &mut conn,
            100 + u32::from(n),
            receipt("4917000000001", &id, MessageState::Delivered, "DELIVRD"),
        )
        .await;
    }
    let events = sink
        .wait("Delivered", |e| {
            e.contains(&DeliveryEvent::Delivered { id: MessageId(1) })
        })
        .await;
    assert_eq!(refs(&events, 1), vec!["seg1", "seg2", "seg3"]);

    // A failed receipt fails the message and names the receipt state.
    let options = SendOptions {
        delivery_report: true,
        ..Default::default()
    };
    transport.send(secured(2, 30, options)).await.unwrap();
    let (sequence, _) = recv_submit(&mut conn).await;
    accept_submit(&mut conn, sequence, "x2").await;
    sink.wait("Accepted 2", |e| accepted(e, 2) == 1).await;
    send_deliver(
        &mut conn,
        200,
        receipt(
            "4917000000002",
            "x2",
            MessageState::Undeliverable,
            "UNDELIV",
        ),
    )
    .await;
    let events = sink
        .wait("Failed 2", |e| {
            e.iter().any(|e| matches!(e, DeliveryEvent::Failed { .. }))
        })
        .await;
    match events.last().unwrap() {
        DeliveryEvent::Failed {
            id: MessageId(2),
            error: TransportError::Rejected(why),
        } => assert!(why.contains("stat:UNDELIV"), "{why}"),
        other => panic!("{other:?}"),
    }
    drop(conn);
    stop(transport).await;
}

#[tokio::test]
async fn configuration_errors_are_typed() {
    let mut c = config("127.0.0.1:1");
    c.tls = Some(SmppTls::new(PemSource::pem("no certificate here")));
    assert!(matches!(
        SmppTransport::start(c),
        Err(SmppError::InvalidConfig(why)) if why.contains("tls.ca")
    ));
    let mut c = config("127.0.0.1:1");
    c.password = "ninechars".into();
    assert!(matches!(
        SmppTransport::start(c),
        Err(SmppError::InvalidConfig(_))
    ));
    let mut c = config("127.0.0.1:1");
    c.window = 0;
    assert!(matches!(
        SmppTransport::start(c),
        Err(SmppError::InvalidConfig(_))
    ));

    // Payload and destination problems are refused by send, before anything goes out.
    let (transport, _sink) = start(config("127.0.0.1:1"));
    let too_big = secured(1, transport.max_packet_len() + 1, SendOptions::default());
    assert!(matches!(
        transport.send(too_big).await,
        Err(TransportError::PayloadTooLarge(_))
    ));
    let mut bad = secured(2, 10, SendOptions::default());
    bad.destination.msisdn = "12ab".into();
    assert!(matches!(
        transport.send(bad).await,
        Err(TransportError::Rejected(_))
    ));
    stop(transport).await;
}

#[tokio::test]
async fn rate_limit_spaces_the_submits() {
    let (listener, address) = listen().await;
    let mut c = config(&address);
    c.rate_limit = Some(40.0);
    c.window = 100;
    let (transport, sink) = start(c);
    let mut conn = accept_bound(&listener).await;
    for id in 1..=9 {
        transport
            .send(secured(id, 20, SendOptions::default()))
            .await
            .unwrap();
    }
    let mut times = Vec::new();
    for n in 0..9 {
        let (sequence, _) = recv_submit(&mut conn).await;
        times.push(Instant::now());
        accept_submit(&mut conn, sequence, &format!("r{n}")).await;
    }
    let spread = times[8] - times[0];
    // 8 intervals of 25 ms.
    assert!(spread >= Duration::from_millis(180), "{spread:?}");
    sink.wait("nine Accepted", |e| e.len() == 9).await;
    drop(conn);
    stop(transport).await;
}
