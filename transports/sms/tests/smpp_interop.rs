//! Interop with an SMSC we did not write: the `smpp34` crate's server.
//!
//! Our `submit_sm`s must decode there as intended (esm_class, protocol_id, data_coding, UDH,
//! concatenation, bytes), and its `deliver_sm`s (an MO PoR, a delivery receipt, a PoR carried
//! in a receipt) must come out as the right events.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_sms::smpp::{SmppConfig, SmppTransport};
use otagw_sms::{Accepted, Reassembler};
use otagw_transport::{
    DeliveryEvent, Destination, EventSink, InboundAck, MessageId, OutboundMessage, Payload,
    SendOptions, Transport,
};
use smpp34::server::ESME;
use smpp34::{
    bind_transceiver, bind_transceiver_resp, submit_sm, submit_sm_resp, SmppConnectionInformation,
    SmppServer, SmppServerListener, TlvTag,
};
use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(10);

type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The SMSC side: accepts esme1/secret, answers every submit_sm with "smsc-<n>", hands the
/// submit_sm to the test and keeps the bound ESME to push deliver_sm back.
struct Smsc {
    submits: mpsc::UnboundedSender<submit_sm>,
    binds: Mutex<Vec<bind_transceiver>>,
    esme: Mutex<Option<Arc<ESME>>>,
    counter: Mutex<u32>,
}

// smpp34's listener is an `async_trait`; this is what the attribute would expand to.
impl SmppServerListener for Smsc {
    fn on_bind_transceiver<'a, 'b, 'c, 'r>(
        &'a self,
        req: bind_transceiver,
        _c: &'b SmppConnectionInformation,
        _s: &'c String,
    ) -> Boxed<'r, bind_transceiver_resp>
    where
        'a: 'r,
        'b: 'r,
        'c: 'r,
        Self: 'r,
    {
        Box::pin(async move {
            self.binds.lock().unwrap().push(req.clone());
            if req.system_id == "esme1" && req.password == "secret" {
                req.accept("smpp34".to_string(), Some(0x34))
            } else {
                req.reject(smpp34::SmppError::ESME_RINVPASWD)
            }
        })
    }

    fn on_submit_sm<'a, 'b, 'c, 'r>(
        &'a self,
        req: submit_sm,
        _c: &'b SmppConnectionInformation,
        _s: &'c String,
    ) -> Boxed<'r, submit_sm_resp>
    where
        'a: 'r,
        'b: 'r,
        'c: 'r,
        Self: 'r,
    {
        Box::pin(async move {
            let n = {
                let mut counter = self.counter.lock().unwrap();
                *counter += 1;
                *counter
            };
            let _ = self.submits.send(req.clone());
            req.accept(format!("smsc-{n}"))
        })
    }

    fn on_esme_bound<'a, 'b, 'r>(&'a self, esme: ESME, _s: &'b String) -> Boxed<'r, ()>
    where
        'a: 'r,
        'b: 'r,
        Self: 'r,
    {
        Box::pin(async move {
            *self.esme.lock().unwrap() = Some(Arc::new(esme));
        })
    }
}

#[derive(Default)]
struct Sink {
    events: Mutex<Vec<DeliveryEvent>>,
    notify: Notify,
    hold_acks: std::sync::atomic::AtomicBool,
    held: Mutex<Vec<InboundAck>>,
}

impl EventSink for Sink {
    fn deliver(&self, event: DeliveryEvent) {
        // The test is done with a PoR as soon as it has it (its deliver_sm_resp goes), unless
        // it holds acknowledgements back.
        let event = match event {
            DeliveryEvent::ResponsePacket {
                from,
                packet,
                sms_framing,
                ack,
            } => {
                if self.hold_acks.load(std::sync::atomic::Ordering::SeqCst) {
                    self.held.lock().unwrap().push(ack);
                }
                DeliveryEvent::ResponsePacket {
                    from,
                    packet,
                    sms_framing,
                    ack: InboundAck::none(),
                }
            }
            other => other,
        };
        self.events.lock().unwrap().push(event);
        self.notify.notify_waiters();
    }
}

impl Sink {
    /// Waits until `pred` holds for the events so far; returns them.
    async fn wait(
        &self,
        what: &str,
        pred: impl Fn(&[DeliveryEvent]) -> bool,
    ) -> Vec<DeliveryEvent> {
        let deadline = tokio::time::Instant::now() + LIMIT;
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
}

struct Harness {
    transport: SmppTransport,
    sink: Arc<Sink>,
    smsc: Arc<Smsc>,
    server: SmppServer,
    submits: mpsc::UnboundedReceiver<submit_sm>,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut SmppConfig)) -> Self {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let (tx, submits) = mpsc::unbounded_channel();
        let smsc = Arc::new(Smsc {
            submits: tx,
            binds: Mutex::new(Vec::new()),
            esme: Mutex::new(None),
            counter: Mutex::new(0),
        });
        let mut server = SmppServer::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port, smsc.clone());
        server.start().await;
        assert!(server.is_alive(), "smpp34 server did not start");

        let mut config = SmppConfig::new(format!("127.0.0.1:{port}"), "esme1", "secret");
        config.response_timeout = Duration::from_secs(2);
        config.reconnect.initial = Duration::from_millis(20);
        config.reconnect.max = Duration::from_millis(200);
        tweak(&mut config);
        let transport = SmppTransport::start(config).unwrap();
        let sink = Arc::new(Sink::default());
        transport.set_event_sink(sink.clone());
        assert!(
            transport.wait_bound(LIMIT).await,
            "{:?}",
            transport.bind_status()
        );
        timeout(LIMIT, async {
            while smsc.esme.lock().unwrap().is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("on_esme_bound");
        Harness {
            transport,
            sink,
            smsc,
            server,
            submits,
        }
    }

    fn esme(&self) -> Arc<ESME> {
        self.smsc.esme.lock().unwrap().clone().expect("bound ESME")
    }

    async fn next_submit(&mut self) -> submit_sm {
        timeout(LIMIT, self.submits.recv())
            .await
            .expect("submit_sm in time")
            .expect("server alive")
    }

    async fn stop(mut self) {
        timeout(LIMIT, self.transport.shutdown())
            .await
            .expect("shutdown");
        self.server.stop().await;
    }
}

fn secured(id: u64, msisdn: &str, packet: Vec<u8>, options: SendOptions) -> OutboundMessage {
    OutboundMessage {
        id: MessageId(id),
        destination: Destination {
            msisdn: msisdn.into(),
            iccid: None,
        },
        payload: Payload::SecuredPacket {
            packet,
            tar: [0xB0, 0x00, 0x10],
            counter: [0, 0, 0, 0, 1],
        },
        options,
    }
}

fn packet(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn submit_sm_decodes_as_intended_in_smpp34() {
    let mut h = Harness::start().await;
    {
        let binds = h.smsc.binds.lock().unwrap();
        assert_eq!(binds.len(), 1);
        assert_eq!(binds[0].system_id, "esme1");
        assert_eq!(binds[0].interface_version, 0x34);
    }

    // One SMS.
    let single = packet(100, 1);
    let options = SendOptions {
        validity_minutes: Some(90),
        delivery_report: true,
        sequential_segments: false,
        urgency: Default::default(),
    };
    h.transport
        .send(secured(1, "+491700000001", single.clone(), options))
        .await
        .unwrap();
    let s = h.next_submit().await;
    assert_eq!(s.esm_class, 0x40);
    assert_eq!(s.protocol_id, 0x7F);
    assert_eq!(s.data_coding, 0xF6);
    assert_eq!((s.dest_addr_ton, s.dest_addr_npi), (1, 1));
    assert_eq!(s.destination_addr, "491700000001");
    assert_eq!(s.registered_delivery, 1);
    assert_eq!(s.validity_period, "000000013000000R");
    assert_eq!(&s.short_message[..3], &[0x02, 0x70, 0x00]);
    assert_eq!(&s.short_message[3..], &single[..]);

    // Three SMS.
    let long = packet(300, 2);
    h.transport
        .send(secured(
            2,
            "491700000002",
            long.clone(),
            SendOptions::default(),
        ))
        .await
        .unwrap();
    let mut parts = Vec::new();
    for _ in 0..3 {
        parts.push(h.next_submit().await);
    }
    parts.sort_by_key(|p| p.short_message[5]);
    let reference = parts[0].short_message[3];
    assert_eq!(
        &parts[0].short_message[..8],
        &[0x07, 0x00, 0x03, reference, 0x03, 0x01, 0x70, 0x00],
        "first segment: concatenation IE then the command packet IEI"
    );
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(
            (p.esm_class, p.protocol_id, p.data_coding),
            (0x40, 0x7F, 0xF6)
        );
        assert_eq!(p.registered_delivery, 0);
        assert_eq!(p.validity_period, "");
        assert!(p.short_message.len() <= 140);
        if i > 0 {
            assert_eq!(
                &p.short_message[..6],
                &[0x05, 0x00, 0x03, reference, 0x03, i as u8 + 1],
                "later segments: only the concatenation IE"
            );
        }
    }
    let mut reassembler = Reassembler::new();
    let mut done = None;
    for p in &parts {
        if let Accepted::Complete(whole) = reassembler.accept("x", &p.short_message).unwrap() {
            done = Some(whole);
        }
    }
    let whole = done.expect("complete");
    assert_eq!(whole.data, long);
    assert_eq!(whole.kind, Some(otagw_sms::PacketKind::Command));

    let events = h
        .sink
        .wait("two Accepted", |e| {
            e.iter()
                .filter(|e| matches!(e, DeliveryEvent::Accepted { .. }))
                .count()
                == 2
        })
        .await;
    for event in events {
        match event {
            DeliveryEvent::Accepted {
                id: MessageId(1),
                network_refs,
            } => {
                assert_eq!(network_refs, vec!["smsc-1".to_string()])
            }
            DeliveryEvent::Accepted {
                id: MessageId(2),
                network_refs,
            } => {
                assert_eq!(network_refs.len(), 3);
                assert!(network_refs.iter().all(|r| r.starts_with("smsc-")));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    h.stop().await;
}

/// An unprotected PoR (RPL on) for TAR B00010 with the counter's last octet `n`.
fn por_with_counter(n: u8) -> Vec<u8> {
    vec![
        0x00, 0x0E, 0x0A, 0xB0, 0x00, 0x10, 0, 0, 0, 0, n, 0, 0x00, 0x90, 0x00, 0x01,
    ]
}

/// The card's PoR as an MO from `from`: UDH 02 71 00 + the PoR, PID 7F, DCS F6.
async fn por_mo(
    esme: &ESME,
    from: &str,
    por: &[u8],
) -> Result<smpp34::deliver_sm_resp, smpp34::SmppError> {
    let mut ud = vec![0x02, 0x71, 0x00];
    ud.extend_from_slice(por);
    esme.deliver_sm()
        .source_addr(from)
        .source_addr_ton(1)
        .source_addr_npi(1)
        .esm_class(0x40)
        .protocol_id(0x7F)
        .data_coding(0xF6)
        .short_message(ud)
        .send()
        .await
}

#[tokio::test]
async fn deliver_sm_from_smpp34_becomes_events() {
    let mut h = Harness::start().await;
    let esme = h.esme();

    // MO SMS-SUBMIT from the card: UDH 02 71 00 + PoR.
    let por = por_with_counter(1);
    let resp = por_mo(&esme, "491700000001", &por)
        .await
        .expect("deliver_sm_resp");
    assert!(resp.is_success(), "status {:#x}", resp.command_status());
    let events = h
        .sink
        .wait("ResponsePacket", |e| {
            e.iter()
                .any(|e| matches!(e, DeliveryEvent::ResponsePacket { .. }))
        })
        .await;
    assert_eq!(
        events,
        vec![DeliveryEvent::ResponsePacket {
            from: "491700000001".into(),
            packet: por.clone(),
            sms_framing: true,
            ack: InboundAck::none(),
        }]
    );

    // A concatenated PoR in two MOs, second one first.
    let big_por = packet(200, 9);
    let parts = otagw_sms::split_packet(
        otagw_sms::PacketKind::Response,
        &big_por,
        otagw_sms::ConcatReference::EightBit(0x33),
    )
    .unwrap();
    assert_eq!(parts.len(), 2);
    for part in parts.iter().rev() {
        let resp = esme
            .deliver_sm()
            .source_addr("491700000009")
            .esm_class(0x40)
            .protocol_id(0x7F)
            .data_coding(0xF6)
            .short_message(part.clone())
            .send()
            .await
            .unwrap();
        assert!(resp.is_success());
    }
    h.sink
        .wait("reassembled PoR", |e| {
            e.contains(&DeliveryEvent::ResponsePacket {
                from: "491700000009".into(),
                packet: big_por.clone(),
                sms_framing: true,
                ack: InboundAck::none(),
            })
        })
        .await;

    // A message with a receipt, then its receipt.
    h.transport
        .send(secured(
            7,
            "491700000001",
            packet(50, 3),
            SendOptions {
                delivery_report: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let submit = h.next_submit().await;
    assert_eq!(submit.registered_delivery, 1);
    let events = h
        .sink
        .wait("Accepted", |e| {
            e.iter()
                .any(|e| matches!(e, DeliveryEvent::Accepted { id, .. } if *id == MessageId(7)))
        })
        .await;
    let network_id = events
        .iter()
        .find_map(|e| match e {
            DeliveryEvent::Accepted { network_refs, .. } => Some(network_refs[0].clone()),
            _ => None,
        })
        .unwrap();
    let text = format!(
        "id:{network_id} sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:"
    );
    let resp = esme
        .deliver_sm()
        .source_addr("491700000001")
        .esm_class(0x04)
        .short_message(text.into_bytes())
        .tlv(
            TlvTag::ReceiptedMessageId,
            format!("{network_id}\0").into_bytes(),
        )
        .tlv(TlvTag::MessageStateTlv, [2])
        .send()
        .await
        .unwrap();
    assert!(resp.is_success());
    h.sink
        .wait("Delivered", |e| {
            e.contains(&DeliveryEvent::Delivered { id: MessageId(7) })
        })
        .await;

    // Our simulator's convention: PoR in the RP-ACK, carried by the receipt (esm_class 0x44,
    // user data in message_payload), here with the classic text only.
    h.transport
        .send(secured(
            8,
            "491700000002",
            packet(60, 4),
            SendOptions {
                delivery_report: true,
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let _ = h.next_submit().await;
    let events = h
        .sink
        .wait("Accepted 8", |e| {
            e.iter()
                .any(|e| matches!(e, DeliveryEvent::Accepted { id, .. } if *id == MessageId(8)))
        })
        .await;
    let network_id = events
        .iter()
        .find_map(|e| match e {
            DeliveryEvent::Accepted { id, network_refs } if *id == MessageId(8) => {
                Some(network_refs[0].clone())
            }
            _ => None,
        })
        .unwrap();
    let rp_ack_por = vec![
        0x00, 0x0D, 0x0A, 0xB0, 0x00, 0x10, 0, 0, 0, 0, 2, 0, 0x00, 0x6A, 0x82,
    ];
    let mut payload = vec![0x02, 0x71, 0x00];
    payload.extend_from_slice(&rp_ack_por);
    let resp = esme
        .deliver_sm()
        .source_addr("491700000002")
        .esm_class(0x44)
        .short_message(
            format!("id:{network_id} sub:001 dlvrd:001 stat:DELIVRD err:000").into_bytes(),
        )
        .tlv(TlvTag::MessagePayload, payload)
        .send()
        .await
        .unwrap();
    assert!(resp.is_success());
    let events = h
        .sink
        .wait("PoR in receipt", |e| {
            e.contains(&DeliveryEvent::Delivered { id: MessageId(8) })
        })
        .await;
    assert!(events.contains(&DeliveryEvent::ResponsePacket {
        from: "491700000002".into(),
        packet: rp_ack_por,
        sms_framing: true,
        ack: InboundAck::none(),
    }));
    h.stop().await;
}

/// A PoR's `deliver_sm_resp` goes only when the gateway is done with the PoR (has stored it):
/// were the process to stop before, the SMSC would deliver it again instead of losing it.
#[tokio::test]
async fn deliver_sm_resp_waits_until_the_por_is_taken_care_of() {
    let h = Harness::start().await;
    h.sink
        .hold_acks
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let esme = h.esme();
    let por = por_with_counter(2);
    let mo = tokio::spawn(async move { por_mo(&esme, "491700000003", &por).await });
    h.sink
        .wait("ResponsePacket", |e| {
            e.iter()
                .any(|e| matches!(e, DeliveryEvent::ResponsePacket { .. }))
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !mo.is_finished(),
        "deliver_sm answered while its PoR was still held"
    );
    h.sink.held.lock().unwrap().clear();
    let resp = timeout(LIMIT, mo)
        .await
        .expect("deliver_sm_resp after the PoR was let go")
        .expect("task")
        .expect("deliver_sm_resp");
    assert!(resp.is_success(), "status {:#x}", resp.command_status());

    // A PoR that could not be recorded is answered ESME_RX_T_APPN: deliver it again later.
    let esme = h.esme();
    let mo = tokio::spawn(async move { por_mo(&esme, "491700000003", &por_with_counter(3)).await });
    let held = async {
        loop {
            if let Some(ack) = h.sink.held.lock().unwrap().pop() {
                return ack;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let ack = timeout(LIMIT, held)
        .await
        .expect("the PoR's acknowledgement");
    ack.retry_later();
    drop(ack);
    let resp = timeout(LIMIT, mo)
        .await
        .expect("deliver_sm_resp")
        .expect("task")
        .expect("deliver_sm_resp");
    assert_eq!(resp.command_status(), 0x64, "ESME_RX_T_APPN");
    h.stop().await;
}

/// With `answer_pors_after_store` off (operators who trade the restart guarantee for PoR rate
/// through a small SMSC window), the PoR's deliver_sm is answered at once, held or not.
#[tokio::test]
async fn pors_answered_at_once_when_the_operator_turns_holding_off() {
    let h = Harness::start_with(|c| c.answer_pors_after_store = false).await;
    h.sink
        .hold_acks
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let resp = timeout(
        LIMIT,
        por_mo(&h.esme(), "491700000004", &por_with_counter(4)),
    )
    .await
    .expect("answered without the PoR being let go")
    .expect("deliver_sm_resp");
    assert!(resp.is_success(), "status {:#x}", resp.command_status());
    h.stop().await;
}

#[tokio::test]
async fn text_and_flash_messages_decode_in_smpp34() {
    let mut h = Harness::start().await;
    let text = |id: u64, text: String, flash: bool| OutboundMessage {
        id: MessageId(id),
        destination: Destination {
            msisdn: "491700000003".into(),
            iccid: None,
        },
        payload: Payload::Text { text, flash },
        options: SendOptions::default(),
    };

    // GSM 7-bit, one SMS: septets unpacked, data_coding 0, no UDH.
    h.transport
        .send(text(1, "Hello @ world".into(), false))
        .await
        .unwrap();
    let s = h.next_submit().await;
    assert_eq!(
        (s.esm_class, s.protocol_id, s.data_coding),
        (0x00, 0x00, 0x00)
    );
    assert_eq!(s.short_message, b"Hello \x00 world".to_vec());

    // Flash UCS2: class 0, data_coding 0x18.
    h.transport
        .send(text(2, "Привет".into(), true))
        .await
        .unwrap();
    let s = h.next_submit().await;
    assert_eq!(s.data_coding, 0x18);
    let utf16: Vec<u16> = s
        .short_message
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(String::from_utf16(&utf16).unwrap(), "Привет");

    // A long GSM text: concatenated with the 8-bit concatenation IE, 153 septets each.
    let long = "x".repeat(200);
    h.transport.send(text(3, long, false)).await.unwrap();
    let mut parts = [h.next_submit().await, h.next_submit().await];
    parts.sort_by_key(|p| p.short_message[5]);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!((p.esm_class, p.data_coding), (0x40, 0x00));
        assert_eq!(&p.short_message[..3], &[0x05, 0x00, 0x03]);
        assert_eq!(&p.short_message[4..6], &[0x02, i as u8 + 1]);
    }
    assert_eq!(parts[0].short_message.len() - 6, 153);
    assert_eq!(parts[1].short_message.len() - 6, 47);
    h.sink
        .wait("three Accepted", |e| {
            e.iter()
                .filter(|e| matches!(e, DeliveryEvent::Accepted { .. }))
                .count()
                == 3
        })
        .await;
    h.stop().await;
}
