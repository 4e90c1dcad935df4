//! The tokio driver over real UDP on loopback: the gateway's endpoint and cards' client links,
//! with faults on the card side, garbage from the network, and many links on one socket.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use otagw_catp::driver::LinkEvent;
use otagw_catp::pdu::{iccid_to_identification, Flags, Pdu};
use otagw_catp::{ClientLink, Config, Connection, Endpoint, Event, Impairment};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::timeout;

fn fast() -> Config {
    Config {
        rto: Duration::from_millis(40),
        max_rto: Duration::from_millis(400),
        max_retries: 12,
        window: 16,
        max_pdu_size: 1024,
        ..Config::default()
    }
}

fn card(iccid: &str) -> Config {
    Config {
        identification: iccid_to_identification(iccid).expect("iccid"),
        ..fast()
    }
}

async fn endpoint(max_links: usize) -> (Endpoint, UnboundedReceiver<LinkEvent>) {
    Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0)), fast(), max_links)
        .await
        .expect("bind")
}

async fn next_link_event(rx: &mut UnboundedReceiver<LinkEvent>) -> LinkEvent {
    timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("in time")
        .expect("endpoint running")
}

async fn next_client_event(link: &mut ClientLink) -> Event {
    timeout(Duration::from_secs(20), link.next_event())
        .await
        .expect("in time")
        .expect("link running")
}

fn pattern(n: usize, salt: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ salt).collect()
}

async fn carries_32k_both_ways(
    impairment: Impairment,
) -> (Duration, otagw_catp::driver::ClientStats) {
    let (ep, mut events) = endpoint(10).await;
    let mut link = ClientLink::connect(
        ep.local_addr(),
        card("8949000000000000017"),
        (0x4000, 4500),
        impairment,
    )
    .await
    .expect("connect");
    let LinkEvent::Connected { peer, params } = next_link_event(&mut events).await else {
        panic!("first event is the handshake");
    };
    assert_eq!(params.iccid().as_deref(), Some("8949000000000000017"));
    assert_eq!(peer, link.local_addr());
    assert!(matches!(
        next_client_event(&mut link).await,
        Event::Connected(_)
    ));

    let started = Instant::now();
    let down = pattern(32 * 1024, 0x5A);
    let down_n = ep.send(peer, down.clone()).await.expect("send");
    match next_client_event(&mut link).await {
        Event::Sdu(d) => assert!(d == down, "32 KiB to the card, intact"),
        e => panic!("unexpected {e:?}"),
    }
    let up = pattern(32 * 1024, 0xA5);
    let up_n = link.send(up.clone()).await.expect("send");
    // The card's ACK of the 32 KiB comes before (or with) its first PDU of the upload.
    let mut acked = Vec::new();
    loop {
        match next_link_event(&mut events).await {
            LinkEvent::Acked { peer: p, sdu } => {
                assert_eq!(p, peer);
                acked.push(sdu);
            }
            LinkEvent::Sdu { peer: p, data } => {
                assert_eq!(p, peer);
                assert!(data == up, "32 KiB from the card, intact");
                break;
            }
            e => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(acked, vec![down_n], "the card's acknowledgement, once");
    assert_eq!(next_client_event(&mut link).await, Event::SduAcked(up_n));
    let took = started.elapsed();
    // Nothing else arrives: each SDU (and its acknowledgement) once.
    assert!(timeout(Duration::from_millis(300), link.next_event())
        .await
        .is_err());
    assert!(events.try_recv().is_err());
    (took, link.stats())
}

#[tokio::test]
async fn clean_link_carries_32k_each_way() {
    let (_, stats) = carries_32k_both_ways(Impairment::none()).await;
    assert_eq!(stats.conn.bad_checksum, 0);
}

#[tokio::test]
async fn lossy_reordering_duplicating_link_carries_32k_each_way_once() {
    let (_, stats) = carries_32k_both_ways(Impairment {
        loss: 0.05,
        duplicate: 0.05,
        reorder: 0.05,
        seed: 3,
    })
    .await;
    assert!(stats.conn.retransmits > 0, "{stats:?}");
    assert!(
        stats.conn.duplicates + stats.conn.out_of_order > 0,
        "{stats:?}"
    );
}

/// Garbage at the endpoint (from strangers and on an open link) is dropped and counted; the
/// endpoint keeps serving, and the open link still works.
#[tokio::test]
async fn garbage_never_stops_the_endpoint() {
    let (ep, mut events) = endpoint(10).await;
    let server = ep.local_addr();
    // A card driven by hand on a raw socket, so that garbage comes from an open link's address.
    let raw = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    raw.connect(server).await.expect("connect");
    let mut conn = Connection::connect(card("8949000000000000025"), 1, 2, 100);
    let mut buf = vec![0u8; 65536];
    let now = Instant::now();
    while let Some(d) = conn.poll_transmit(now) {
        raw.send(&d).await.expect("send");
    }
    let n = timeout(Duration::from_secs(5), raw.recv(&mut buf))
        .await
        .expect("SYN-ACK in time")
        .expect("recv");
    let _ = conn.handle_pdu(Instant::now(), &buf[..n]);
    while let Some(d) = conn.poll_transmit(Instant::now()) {
        raw.send(&d).await.expect("send");
    }
    assert!(matches!(
        next_link_event(&mut events).await,
        LinkEvent::Connected { .. }
    ));

    let stranger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut state = 0x1234_5678_u64;
    let mut rnd = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let valid = Pdu {
        flags: Flags::ACK,
        src_port: 1,
        dst_port: 2,
        seq: 101,
        ack: 0,
        window: 4,
        data: vec![7; 40],
        ..Pdu::default()
    }
    .encode()
    .expect("encode");
    let mut sent = 0u32;
    for i in 0..600usize {
        let d: Vec<u8> = match i % 6 {
            0 => Vec::new(),
            1 => (0..(rnd() % 64) as usize).map(|_| rnd() as u8).collect(),
            2 => valid[..(rnd() as usize) % valid.len()].to_vec(),
            3 => {
                let mut d = valid.clone();
                let at = (rnd() as usize) % d.len();
                d[at] ^= 1 << (rnd() % 8);
                d
            }
            4 => {
                // A header that claims more data than follows, or a huge header length.
                let mut d = valid.clone();
                d[3] = 0xFF;
                d
            }
            _ => (0..1200).map(|_| rnd() as u8).collect(),
        };
        let from_link = i % 2 == 0;
        if from_link {
            raw.send(&d).await.expect("send");
        } else {
            stranger.send_to(&d, server).await.expect("send");
        }
        sent += 1;
    }
    // The open link still carries data both ways.
    conn.send(b"still here").expect("queue");
    let mut got_sdu = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    ep.send(raw.local_addr().expect("addr"), b"and you".to_vec())
        .await
        .expect("send");
    let mut card_got = false;
    while !(got_sdu && card_got) && Instant::now() < deadline {
        while let Some(d) = conn.poll_transmit(Instant::now()) {
            raw.send(&d).await.expect("send");
        }
        if let Ok(Ok(n)) = timeout(Duration::from_millis(50), raw.recv(&mut buf)).await {
            for e in conn.handle_pdu(Instant::now(), &buf[..n]) {
                if e == Event::Sdu(b"and you".to_vec()) {
                    card_got = true;
                }
            }
        }
        let _ = conn.handle_timeout(Instant::now());
        while let Ok(e) = events.try_recv() {
            if let LinkEvent::Sdu { data, .. } = e {
                assert_eq!(data, b"still here");
                got_sdu = true;
            }
        }
    }
    assert!(
        got_sdu && card_got,
        "the link survived {sent} garbage datagrams"
    );
    let s = ep.stats();
    assert!(s.server.malformed > 0, "{s:?}");
    assert!(s.server.bad_checksum > 0, "{s:?}");
    assert!(s.datagrams_in >= u64::from(sent), "{s:?}");
    // And a new card still gets in.
    let mut link = ClientLink::connect(
        server,
        card("8949000000000000033"),
        (9, 9),
        Impairment::none(),
    )
    .await
    .expect("connect");
    assert!(matches!(
        next_client_event(&mut link).await,
        Event::Connected(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_links_on_one_socket() {
    const N: usize = 1000;
    let (ep, mut events) = endpoint(N + 10).await;
    let server = ep.local_addr();
    let mut links = Vec::with_capacity(N);
    for i in 0..N {
        let iccid = format!("89490000000000{:05}", i);
        links.push(
            ClientLink::connect(server, card(&iccid), (0x4000, 4500), Impairment::none())
                .await
                .expect("connect"),
        );
    }
    let mut connected = HashSet::new();
    while connected.len() < N {
        if let LinkEvent::Connected { params, .. } = next_link_event(&mut events).await {
            assert!(connected.insert(params.iccid().expect("iccid")));
        }
    }
    for (i, l) in links.iter().enumerate() {
        l.send(format!("card {i}").into_bytes())
            .await
            .expect("send");
    }
    let mut sdus = HashSet::new();
    while sdus.len() < N {
        if let LinkEvent::Sdu { data, .. } = next_link_event(&mut events).await {
            assert!(sdus.insert(data), "each SDU once");
        }
    }
    assert_eq!(ep.stats().links, N);
}
