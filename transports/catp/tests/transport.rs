//! The CAT_TP transport alone, over loopback UDP, with a push that opens a client link in
//! process (no SMS, no keys): one push for concurrent messages to a card, PoRs reported with the
//! card's MSISDN in the two-octet RPL form, links from unknown cards reset, a card that never
//! connects failing the message with a timeout after the configured pushes, refusals.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_catp::pdu::iccid_to_identification;
use otagw_catp::push::PushRequest;
use otagw_catp::{
    CatpSettings, CatpTransport, ClientLink, CloseReason, Config, Event, Impairment, LinkPusher,
};
use otagw_transport::{
    BoxFuture, DeliveryEvent, Destination, EventSink, MessageId, OutboundMessage, Payload,
    SendOptions, Transport, TransportError,
};
use tokio::sync::mpsc;

const ICCID: &str = "8949000000000000017";
const MSISDN: &str = "491700000017";

fn fast() -> Config {
    Config {
        rto: Duration::from_millis(40),
        max_rto: Duration::from_millis(320),
        max_retries: 10,
        keepalive: None,
        ..Config::default()
    }
}

/// On a push, a card with `iccid` connects (unless silent) and answers every SDU with a PoR
/// that echoes its length.
struct InProcessCard {
    iccid: &'static str,
    silent: bool,
    /// Refuses the push with this (as the gateway reads the card's error PoR) and never
    /// connects.
    refuse: Option<&'static str>,
    pushes: AtomicUsize,
    links: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl LinkPusher for InProcessCard {
    fn push<'a>(
        &'a self,
        _message: &'a OutboundMessage,
        request: &'a PushRequest,
    ) -> BoxFuture<'a, Result<otagw_catp::PushRefusal, TransportError>> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        if let Some(why) = self.refuse {
            // The PoR comes back over SMS a little later.
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = tx.send(why.to_string());
            });
            return Box::pin(async { Ok(rx) });
        }
        let silent = self.silent;
        let request = request.clone();
        let iccid = self.iccid;
        let task = tokio::spawn(async move {
            if silent {
                return;
            }
            let cfg = Config {
                identification: iccid_to_identification(iccid).unwrap_or_default(),
                ..fast()
            };
            let Ok(mut link) = ClientLink::connect(
                request.bip.destination,
                cfg,
                (0x4000, request.link.destination_port),
                Impairment::none(),
            )
            .await
            else {
                return;
            };
            while let Some(e) = link.next_event().await {
                match e {
                    Event::Sdu(sdu) => {
                        // RPI 02, RPL 3, then three octets: the SDU's first octet and length.
                        let n = sdu.len() as u16;
                        let por = vec![0x02, 0x03, sdu[0], (n >> 8) as u8, n as u8];
                        let _ = link.send(por).await;
                    }
                    Event::Closed(_) => break,
                    Event::Connected(_) | Event::SduAcked(_) => {}
                }
            }
        });
        if let Ok(mut l) = self.links.lock() {
            l.push(task);
        }
        Box::pin(async { Ok(otagw_catp::no_refusal()) })
    }
}

struct Sink(mpsc::UnboundedSender<DeliveryEvent>);
impl EventSink for Sink {
    fn deliver(&self, event: DeliveryEvent) {
        let _ = self.0.send(event);
    }
}

async fn transport(
    card: Arc<InProcessCard>,
    link_timeout: Duration,
) -> (CatpTransport, mpsc::UnboundedReceiver<DeliveryEvent>) {
    let t = CatpTransport::start(
        CatpSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            link: fast(),
            link_timeout,
            push_attempts: 2,
            ..CatpSettings::default()
        },
        card,
    )
    .await
    .expect("start");
    let (tx, rx) = mpsc::unbounded_channel();
    t.set_event_sink(Arc::new(Sink(tx)));
    (t, rx)
}

fn message(id: u64, packet: Vec<u8>, iccid: Option<&str>) -> OutboundMessage {
    OutboundMessage {
        id: MessageId(id),
        destination: Destination {
            msisdn: MSISDN.into(),
            iccid: iccid.map(String::from),
        },
        payload: Payload::SecuredPacket {
            packet,
            tar: [0xB0, 0, 0x10],
            counter: [0, 0, 0, 0, 1],
        },
        options: SendOptions::default(),
    }
}

/// A CAT_TP-framed "command packet" of `len` octets after CPI and length.
fn packet(len: usize) -> Vec<u8> {
    let (p, n) = otagw_catp::framing::prefix(otagw_catp::framing::CPI, len as u16);
    let mut v = p[..n].to_vec();
    v.extend(std::iter::repeat_n(0xAB, len));
    v
}

async fn next(rx: &mut mpsc::UnboundedReceiver<DeliveryEvent>) -> DeliveryEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("in time")
        .expect("sink open")
}

#[tokio::test]
async fn one_push_for_concurrent_messages_and_pors_with_the_msisdn() {
    let card = Arc::new(InProcessCard {
        iccid: ICCID,
        silent: false,
        refuse: None,
        pushes: AtomicUsize::new(0),
        links: Mutex::default(),
    });
    let (t, mut rx) = transport(card.clone(), Duration::from_secs(5)).await;
    assert_eq!(t.packet_format(), otagw_transport::PacketFormat::CatTp);
    // Two messages at once, one of 3000 octets (segmented on the link).
    t.send(message(1, packet(100), Some(ICCID)))
        .await
        .expect("taken");
    t.send(message(2, packet(3000), Some(&format!("{ICCID}F"))))
        .await
        .expect("taken");
    let mut accepted = Vec::new();
    let mut delivered = Vec::new();
    let mut pors = Vec::new();
    while accepted.len() < 2 || delivered.len() < 2 || pors.len() < 2 {
        match next(&mut rx).await {
            DeliveryEvent::Accepted { id, network_refs } => {
                assert!(network_refs[0].starts_with("catp:127.0.0.1:"));
                accepted.push(id);
            }
            // The card's CAT_TP ACK covering the whole packet, after the link took it.
            DeliveryEvent::Delivered { id } => {
                assert!(accepted.contains(&id), "{id} delivered before accepted");
                delivered.push(id);
            }
            DeliveryEvent::ResponsePacket {
                from,
                packet,
                sms_framing,
                ..
            } => {
                assert_eq!(from, MSISDN);
                assert!(!sms_framing);
                pors.push(packet);
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    delivered.sort();
    assert_eq!(delivered, vec![MessageId(1), MessageId(2)], "each once");
    // Nothing more (the card acknowledged each packet once).
    assert!(tokio::time::timeout(Duration::from_millis(300), rx.recv())
        .await
        .is_err());
    // Two-octet RPL form; the card saw each SDU whole (lengths 102 and 3004 with CPI+length).
    pors.sort();
    assert_eq!(pors[0], vec![0x00, 0x03, 0x01, 0x00, 102]);
    assert_eq!(pors[1], vec![0x00, 0x03, 0x01, 0x0B, 0xBC]);
    assert_eq!(
        card.pushes.load(Ordering::SeqCst),
        1,
        "one push served both"
    );
    let s = t.stats();
    assert_eq!(
        (s.pushes, s.links_accepted, s.packets_sent, s.pors),
        (1, 1, 2, 2)
    );
    assert!(t.has_link(ICCID));
}

#[tokio::test]
async fn silent_card_times_out_after_the_pushes() {
    let card = Arc::new(InProcessCard {
        iccid: ICCID,
        silent: true,
        refuse: None,
        pushes: AtomicUsize::new(0),
        links: Mutex::default(),
    });
    let (t, mut rx) = transport(card.clone(), Duration::from_millis(200)).await;
    t.send(message(7, packet(10), Some(ICCID)))
        .await
        .expect("taken");
    match next(&mut rx).await {
        DeliveryEvent::Failed {
            id,
            error: TransportError::Timeout(m),
        } => {
            assert_eq!(id, MessageId(7));
            assert!(m.contains(ICCID), "{m}");
        }
        e => panic!("unexpected {e:?}"),
    }
    assert_eq!(card.pushes.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_link_from_an_unknown_card_is_reset() {
    let card = Arc::new(InProcessCard {
        iccid: ICCID,
        silent: true,
        refuse: None,
        pushes: AtomicUsize::new(0),
        links: Mutex::default(),
    });
    let (t, _rx) = transport(card, Duration::from_secs(1)).await;
    let cfg = Config {
        identification: iccid_to_identification("8949000000000000999").unwrap_or_default(),
        ..fast()
    };
    let mut stranger = ClientLink::connect(t.local_addr(), cfg, (1, 2), Impairment::none())
        .await
        .expect("connect");
    let mut events = Vec::new();
    while let Ok(Some(e)) =
        tokio::time::timeout(Duration::from_secs(5), stranger.next_event()).await
    {
        let end = matches!(e, Event::Closed(_));
        events.push(e);
        if end {
            break;
        }
    }
    assert!(
        matches!(
            events.last(),
            Some(Event::Closed(CloseReason::PeerReset(
                otagw_catp::pdu::reason::ILLEGAL_PARAMETERS
            )))
        ),
        "{events:?}"
    );
    assert_eq!(t.stats().links_refused, 1);
}

#[tokio::test]
async fn refusals() {
    let card = Arc::new(InProcessCard {
        iccid: ICCID,
        silent: true,
        refuse: None,
        pushes: AtomicUsize::new(0),
        links: Mutex::default(),
    });
    let (t, _rx) = transport(card.clone(), Duration::from_secs(1)).await;
    let no_iccid = t.send(message(1, packet(10), None)).await;
    assert!(
        matches!(no_iccid, Err(TransportError::Rejected(_))),
        "{no_iccid:?}"
    );
    // SMS-framed (two-octet CPL first) is not for this transport.
    let sms = t
        .send(message(2, vec![0x00, 0x02, 0xAA, 0xBB], Some(ICCID)))
        .await;
    assert!(matches!(sms, Err(TransportError::Rejected(_))), "{sms:?}");
    let big = t.send(message(3, packet(65_100), Some(ICCID))).await;
    assert!(
        matches!(big, Err(TransportError::PayloadTooLarge(_))),
        "{big:?}"
    );
    let mut text = message(4, Vec::new(), Some(ICCID));
    text.payload = Payload::Text {
        text: "hi".into(),
        flash: false,
    };
    assert!(t.send(text).await.is_err());
    assert_eq!(card.pushes.load(Ordering::SeqCst), 0, "nothing pushed");
}

/// A card that answers the push with an error PoR: every message waiting for its link fails at
/// once with the card's status named (one push, no waiting for the link timeout).
#[tokio::test]
async fn a_refused_push_fails_the_waiting_messages_naming_the_status() {
    let card = Arc::new(InProcessCard {
        iccid: ICCID,
        silent: false,
        refuse: Some("PoR status 0A insufficient security level"),
        pushes: AtomicUsize::new(0),
        links: Mutex::default(),
    });
    let (t, mut rx) = transport(card.clone(), Duration::from_secs(30)).await;
    let started = std::time::Instant::now();
    t.send(message(1, packet(100), Some(ICCID)))
        .await
        .expect("taken");
    t.send(message(2, packet(100), Some(ICCID)))
        .await
        .expect("taken");
    let mut failed = Vec::new();
    while failed.len() < 2 {
        match next(&mut rx).await {
            DeliveryEvent::Failed { id, error } => failed.push((id, error)),
            e => panic!("unexpected {e:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not the 30 s link timeout"
    );
    failed.sort_by_key(|(id, _)| id.0);
    for (i, (id, error)) in failed.iter().enumerate() {
        assert_eq!(id.0, i as u64 + 1);
        assert_eq!(
            error,
            &TransportError::Rejected(format!(
                "card {ICCID} refused the CAT_TP push: PoR status 0A insufficient security level"
            ))
        );
        assert!(!error.is_transient());
    }
    assert_eq!(card.pushes.load(Ordering::SeqCst), 1, "one push for both");
    assert_eq!(t.stats().pushes, 1);
}

/// On a push, connects from a bare socket, takes the first data PDU without acknowledging it
/// and resets the link.
struct ResettingCard {
    links: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl LinkPusher for ResettingCard {
    fn push<'a>(
        &'a self,
        _message: &'a OutboundMessage,
        request: &'a PushRequest,
    ) -> BoxFuture<'a, Result<otagw_catp::PushRefusal, TransportError>> {
        let request = request.clone();
        let task = tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("bind");
            socket
                .connect(request.bip.destination)
                .await
                .expect("connect");
            let cfg = Config {
                identification: iccid_to_identification(ICCID).unwrap_or_default(),
                ..fast()
            };
            let port = request.link.destination_port;
            let mut conn = otagw_catp::Connection::connect(cfg, 0x4000, port, 77);
            let mut buf = vec![0u8; 65_536];
            loop {
                while let Some(d) = conn.poll_transmit(std::time::Instant::now()) {
                    let _ = socket.send(&d).await;
                }
                let Ok(n) = socket.recv(&mut buf).await else {
                    return;
                };
                let is_data =
                    otagw_catp::pdu::Pdu::decode(&buf[..n]).is_ok_and(|p| !p.data.is_empty());
                if is_data {
                    // Never acknowledged: the RST goes out instead.
                    conn.close(otagw_catp::pdu::reason::NORMAL);
                    while let Some(d) = conn.poll_transmit(std::time::Instant::now()) {
                        let _ = socket.send(&d).await;
                    }
                    return;
                }
                conn.handle_pdu(std::time::Instant::now(), &buf[..n]);
            }
        });
        if let Ok(mut l) = self.links.lock() {
            l.push(task);
        }
        Box::pin(async { Ok(otagw_catp::no_refusal()) })
    }
}

/// Taken by the link (Accepted) but never acknowledged by the card before the link ended: no
/// Delivered.
#[tokio::test]
async fn a_link_reset_before_the_ack_delivers_nothing() {
    let card = Arc::new(ResettingCard {
        links: Mutex::default(),
    });
    let t = CatpTransport::start(
        CatpSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            link: fast(),
            link_timeout: Duration::from_secs(5),
            ..CatpSettings::default()
        },
        card,
    )
    .await
    .expect("start");
    let (tx, mut rx) = mpsc::unbounded_channel();
    t.set_event_sink(Arc::new(Sink(tx)));
    t.send(message(5, packet(100), Some(ICCID)))
        .await
        .expect("taken");
    assert!(matches!(
        next(&mut rx).await,
        DeliveryEvent::Accepted {
            id: MessageId(5),
            ..
        }
    ));
    // The link is gone once the card's RST arrived.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while t.has_link(ICCID) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!t.has_link(ICCID), "the card reset its link");
    let more = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
    assert!(more.is_err(), "nothing more, no Delivered: {more:?}");
    assert_eq!(t.stats().packets_sent, 1);
}
