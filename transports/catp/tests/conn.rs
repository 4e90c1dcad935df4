//! Connection and server state machines driven through simulated channels.

use std::time::{Duration, Instant};

use otagw_catp::pdu::{iccid_to_identification, reason, Flags, Pdu, VarPart};
use otagw_catp::{CloseReason, Config, Connection, Event, SendError, Server, State};

const CARD: u32 = 1;

fn card_config() -> Config {
    Config {
        max_pdu_size: 128,
        max_sdu_size: 65535,
        window: 4,
        rto: Duration::from_millis(200),
        max_rto: Duration::from_secs(2),
        max_retries: 4,
        keepalive: None,
        identification: iccid_to_identification("8944110063000000017").unwrap(),
    }
}

fn server_config() -> Config {
    Config {
        max_pdu_size: 256,
        window: 6,
        rto: Duration::from_millis(200),
        max_rto: Duration::from_secs(2),
        max_retries: 4,
        keepalive: None,
        ..Config::default()
    }
}

fn drain_conn(c: &mut Connection, now: Instant) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some(b) = c.poll_transmit(now) {
        v.push(b);
        assert!(v.len() < 10_000, "runaway transmit");
    }
    v
}

fn drain_server(s: &mut Server<u32>, now: Instant) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    while let Some((a, b)) = s.poll_transmit(now) {
        assert_eq!(a, CARD);
        v.push(b);
        assert!(v.len() < 10_000, "runaway transmit");
    }
    v
}

fn server_events(s: &mut Server<u32>) -> Vec<Event> {
    let mut v = Vec::new();
    while let Some((_, e)) = s.poll_event() {
        v.push(e);
    }
    v
}

/// The events other than [`Event::SduAcked`].
fn sdus(ev: &[Event]) -> Vec<Event> {
    ev.iter()
        .filter(|e| !matches!(e, Event::SduAcked(_)))
        .cloned()
        .collect()
}

/// The SDU numbers of the [`Event::SduAcked`] events, in order.
fn acks(ev: &[Event]) -> Vec<u64> {
    ev.iter()
        .filter_map(|e| match e {
            Event::SduAcked(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// Exchange datagrams with no loss until both sides are quiet. Returns (card events, server events).
fn pump(card: &mut Connection, srv: &mut Server<u32>, now: Instant) -> (Vec<Event>, Vec<Event>) {
    let (mut ce, mut se) = (Vec::new(), Vec::new());
    for _ in 0..1000 {
        let a = drain_conn(card, now);
        for b in &a {
            srv.handle_datagram(now, CARD, b);
        }
        se.extend(server_events(srv));
        let b = drain_server(srv, now);
        for p in &b {
            ce.extend(card.handle_pdu(now, p));
        }
        if a.is_empty() && b.is_empty() {
            return (ce, se);
        }
    }
    panic!("no quiescence");
}

fn open_pair(t0: Instant) -> (Connection, Server<u32>) {
    let mut card = Connection::connect(card_config(), 0x4000, 80, 100);
    let mut srv = Server::new(server_config(), 100, 7000);
    let (ce, se) = pump(&mut card, &mut srv, t0);
    assert!(matches!(&ce[..], [Event::Connected(p)] if p.max_pdu_size == 256));
    match &se[..] {
        [Event::Connected(p)] => {
            assert_eq!(p.max_pdu_size, 128);
            assert_eq!(p.identification, card_config().identification);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(card.state(), State::Open);
    assert_eq!(srv.connection(&CARD).unwrap().state(), State::Open);
    (card, srv)
}

#[test]
fn handshake_pdus() {
    let t0 = Instant::now();
    let mut card = Connection::connect(card_config(), 0x4000, 80, 100);
    let syn = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(syn.flags, Flags::SYN);
    assert_eq!(syn.seq, 100);
    assert_eq!((syn.src_port, syn.dst_port), (0x4000, 80));
    let mut srv = Server::new(server_config(), 100, 7000);
    srv.handle_datagram(t0, CARD, &syn.encode().unwrap());
    let (_, sa) = srv.poll_transmit(t0).unwrap();
    let sa = Pdu::decode(&sa).unwrap();
    assert_eq!(sa.flags, Flags::SYN | Flags::ACK);
    assert_eq!(sa.ack, 100);
    assert_eq!(sa.seq, 7000);
    assert_eq!((sa.src_port, sa.dst_port), (80, 0x4000));
    assert!(matches!(sa.var, VarPart::Syn(ref p) if p.max_pdu_size == 256));
    assert_eq!(srv.connection(&CARD).unwrap().state(), State::SynRcvd);
    let ev = card.handle_pdu(t0, &sa.encode().unwrap());
    assert!(matches!(&ev[..], [Event::Connected(_)]));
    let ack = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(ack.flags, Flags::ACK);
    assert_eq!(ack.ack, 7000);
    assert_eq!(ack.seq, 101);
    assert!(card.poll_transmit(t0).is_none());
    srv.handle_datagram(t0, CARD, &ack.encode().unwrap());
    assert!(matches!(
        &server_events(&mut srv)[..],
        [Event::Connected(_)]
    ));
    assert_eq!(srv.connection(&CARD).unwrap().state(), State::Open);
}

#[test]
fn data_both_ways_and_segmentation() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    // Server to card: the card's max PDU is 128, so 110 octets of data per PDU.
    let big: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    srv.send(&CARD, &big).unwrap();
    srv.send(&CARD, b"second").unwrap();
    // Look at the first data PDU.
    let first = Pdu::decode(&srv.poll_transmit(t0).unwrap().1).unwrap();
    assert!(first.flags.contains(Flags::SEG | Flags::ACK));
    assert_eq!(first.data.len(), 128 - 18);
    card.handle_pdu(t0, &first.encode().unwrap());
    let (ce, _) = pump(&mut card, &mut srv, t0);
    assert_eq!(
        ce,
        vec![Event::Sdu(big.clone()), Event::Sdu(b"second".to_vec())]
    );
    // Card to server: 238 octets per PDU.
    card.send(&big).unwrap();
    card.send(b"x").unwrap();
    let (_, se) = pump(&mut card, &mut srv, t0);
    assert_eq!(se, vec![Event::Sdu(big), Event::Sdu(b"x".to_vec())]);
    assert!(card.is_idle());
    assert_eq!(card.stats().retransmits, 0);
    assert_eq!(card.send(&[]), Err(SendError::Empty));
}

#[test]
fn sdu_over_peer_max_refused() {
    let t0 = Instant::now();
    let mut card = Connection::connect(
        Config {
            max_sdu_size: 100,
            ..card_config()
        },
        1,
        2,
        5,
    );
    let mut srv = Server::new(server_config(), 10, 1);
    pump(&mut card, &mut srv, t0);
    assert_eq!(
        srv.send(&CARD, &[0; 101]),
        Err(SendError::SduTooLarge { len: 101, max: 100 })
    );
    srv.send(&CARD, &[0; 100]).unwrap();
}

/// Delivers datagrams except those `drop` selects (counted per direction).
fn pump_lossy(
    card: &mut Connection,
    srv: &mut Server<u32>,
    t0: Instant,
    mut drop_to_server: impl FnMut(usize, &Pdu) -> bool,
    mut drop_to_card: impl FnMut(usize, &Pdu) -> bool,
) -> (Vec<Event>, Vec<Event>, Instant) {
    let (mut ce, mut se) = (Vec::new(), Vec::new());
    let (mut n_s, mut n_c) = (0, 0);
    let mut now = t0;
    for _ in 0..10_000 {
        let a = drain_conn(card, now);
        for b in &a {
            n_s += 1;
            if !drop_to_server(n_s, &Pdu::decode(b).unwrap()) {
                srv.handle_datagram(now, CARD, b);
            }
        }
        se.extend(server_events(srv));
        let b = drain_server(srv, now);
        for p in &b {
            n_c += 1;
            if !drop_to_card(n_c, &Pdu::decode(p).unwrap()) {
                ce.extend(card.handle_pdu(now, p));
            }
        }
        if a.is_empty() && b.is_empty() {
            let next = [card.poll_timeout(), srv.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                None => return (ce, se, now),
                Some(t) => {
                    now = now.max(t);
                    ce.extend(card.handle_timeout(now));
                    srv.handle_timeout(now);
                    se.extend(server_events(srv));
                }
            }
        }
    }
    panic!("no quiescence");
}

#[test]
fn lost_syn_syn_ack_and_ack_recover() {
    let t0 = Instant::now();
    let mut card = Connection::connect(card_config(), 1, 2, 65530);
    let mut srv = Server::new(server_config(), 10, 65534);
    // Drop the first SYN, the first SYN-ACK and the first ACK.
    let (ce, se, _) = pump_lossy(
        &mut card,
        &mut srv,
        t0,
        |_, p| {
            (p.flags == Flags::SYN && card_syn_once())
                || (p.flags == Flags::ACK && p.data.is_empty() && card_ack_once())
        },
        |n, _| n == 1,
    );
    assert!(matches!(&ce[..], [Event::Connected(_)]));
    assert!(matches!(&se[..], [Event::Connected(_)]));
    assert!(card.stats().retransmits >= 1);
    assert!(srv.connection(&CARD).unwrap().stats().retransmits >= 2);
    // Data still flows (sequence numbers wrap here: 65530.. and 65534..).
    let sdu: Vec<u8> = (0..2000u32).map(|i| (i * 7) as u8).collect();
    card.send(&sdu).unwrap();
    srv.send(&CARD, &sdu).unwrap();
    let (ce, se, _) = pump_lossy(&mut card, &mut srv, t0, |n, _| n == 2, |n, _| n == 3);
    assert_eq!(sdus(&ce), vec![Event::Sdu(sdu.clone())]);
    assert_eq!(sdus(&se), vec![Event::Sdu(sdu)]);
    // Each side's SDU acknowledged once (across the sequence-number wrap).
    assert_eq!(acks(&ce), vec![0]);
    assert_eq!(acks(&se), vec![0]);
}

fn card_ack_once() -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    !DONE.swap(true, Ordering::SeqCst)
}

fn card_syn_once() -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    !DONE.swap(true, Ordering::SeqCst)
}

#[test]
fn loss_is_recovered_by_retransmission() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    let sdu: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    srv.send(&CARD, &sdu).unwrap();
    // Drop every third PDU to the card and every second ACK back.
    let (ce, _, _) = pump_lossy(
        &mut card,
        &mut srv,
        t0,
        |n, _| n % 2 == 0,
        |n, _| n % 3 == 0,
    );
    assert_eq!(ce, vec![Event::Sdu(sdu)]);
    assert!(srv.connection(&CARD).unwrap().stats().retransmits > 0);
}

#[test]
fn reordering_uses_eak_and_delivers_in_order() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    srv.send(&CARD, b"one").unwrap();
    srv.send(&CARD, b"two").unwrap();
    srv.send(&CARD, b"three").unwrap();
    let pdus = drain_server(&mut srv, t0);
    assert_eq!(pdus.len(), 3);
    // Deliver 3, 2, then 1.
    let mut ev = card.handle_pdu(t0, &pdus[2]);
    assert!(ev.is_empty());
    let eak = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(eak.flags, Flags::ACK | Flags::EAK);
    let s3 = Pdu::decode(&pdus[2]).unwrap().seq;
    assert_eq!(eak.var, VarPart::Eak(vec![s3]));
    ev.extend(card.handle_pdu(t0, &pdus[1]));
    let eak2 = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(eak2.var, VarPart::Eak(vec![s3.wrapping_sub(1), s3]));
    assert!(ev.is_empty());
    // The server learns 2 and 3 arrived and fast-retransmits 1 only.
    srv.handle_datagram(t0, CARD, &eak2.encode().unwrap());
    let re = drain_server(&mut srv, t0);
    assert_eq!(re.len(), 1);
    assert_eq!(re[0], pdus[0]);
    ev.extend(card.handle_pdu(t0, &pdus[0]));
    assert_eq!(
        ev,
        vec![
            Event::Sdu(b"one".to_vec()),
            Event::Sdu(b"two".to_vec()),
            Event::Sdu(b"three".to_vec())
        ]
    );
    let ack = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(ack.flags, Flags::ACK);
    assert_eq!(ack.ack, s3);
    srv.handle_datagram(t0, CARD, &ack.encode().unwrap());
    assert!(srv.connection(&CARD).unwrap().is_idle());
    assert_eq!(srv.poll_timeout(), None);
}

#[test]
fn duplicates_delivered_once() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    srv.send(&CARD, &[9; 300]).unwrap();
    let pdus = drain_server(&mut srv, t0);
    let mut ev = Vec::new();
    for p in pdus.iter().chain(pdus.iter()).chain(pdus.iter().rev()) {
        ev.extend(card.handle_pdu(t0, p));
    }
    assert_eq!(ev, vec![Event::Sdu(vec![9; 300])]);
    assert!(card.stats().duplicates >= pdus.len() as u64 * 2 - 1);
}

#[test]
fn new_syn_from_the_same_address_supersedes_the_old_link() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    // The card's first SYN again (a delayed duplicate): acknowledged, the link stays.
    let mut again = Connection::connect(card_config(), 0x4000, 80, 100);
    for b in drain_conn(&mut again, t0) {
        srv.handle_datagram(t0, CARD, &b);
    }
    assert!(server_events(&mut srv).is_empty());
    assert_eq!(srv.stats().superseded, 0);
    let _ = pump(&mut card, &mut srv, t0);
    assert_eq!(srv.connection(&CARD).unwrap().state(), State::Open);

    // The card lost its channel without an RST and opens a new link from the same address.
    let mut reborn = Connection::connect(card_config(), 0x4000, 80, 31_000);
    let (ce, se) = pump(&mut reborn, &mut srv, t0);
    assert_eq!(srv.stats().superseded, 1);
    assert!(matches!(&ce[..], [Event::Connected(_)]), "{ce:?}");
    assert!(
        matches!(
            &se[..],
            [Event::Closed(CloseReason::Superseded), Event::Connected(_)]
        ),
        "{se:?}"
    );
    reborn.send(b"new link").unwrap();
    let (_, se) = pump(&mut reborn, &mut srv, t0);
    assert_eq!(se, vec![Event::Sdu(b"new link".to_vec())]);
}

#[test]
fn bad_checksum_dropped_and_counted() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    srv.send(&CARD, b"hello").unwrap();
    let mut p = drain_server(&mut srv, t0).remove(0);
    let good = p.clone();
    let last = p.len() - 1;
    p[last] ^= 0x20;
    assert!(card.handle_pdu(t0, &p).is_empty());
    assert_eq!(card.stats().bad_checksum, 1);
    assert!(card.poll_transmit(t0).is_none(), "nothing acknowledged");
    assert_eq!(
        card.handle_pdu(t0, &good),
        vec![Event::Sdu(b"hello".to_vec())]
    );
    // Server side: counted at the endpoint.
    card.send(b"x").unwrap();
    let mut q = drain_conn(&mut card, t0).remove(0);
    q[17] ^= 1;
    srv.handle_datagram(t0, CARD, &q);
    assert_eq!(srv.stats().bad_checksum, 1);
    assert!(server_events(&mut srv).is_empty());
    // Garbage never panics and is counted as malformed.
    srv.handle_datagram(t0, CARD, &[1, 2, 3]);
    assert_eq!(srv.stats().malformed, 1);
}

#[test]
fn rst_with_reason_both_ways() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    srv.close(&CARD, reason::NORMAL);
    assert_eq!(
        server_events(&mut srv),
        vec![Event::Closed(CloseReason::LocalReset(0))]
    );
    let rst = drain_server(&mut srv, t0);
    assert_eq!(rst.len(), 1);
    let p = Pdu::decode(&rst[0]).unwrap();
    assert!(p.flags.contains(Flags::RST));
    assert_eq!(p.var, VarPart::Rst(0));
    assert_eq!(
        card.handle_pdu(t0, &rst[0]),
        vec![Event::Closed(CloseReason::PeerReset(0))]
    );
    assert_eq!(card.state(), State::Closed);
    assert!(
        srv.is_empty(),
        "closed connection removed once its RST is out"
    );
    assert_eq!(card.send(b"x"), Err(SendError::NotOpen(State::Closed)));

    // The card resets with reason 3; a PDU from an unknown peer gets RST reason 4.
    let (mut card, mut srv) = open_pair(t0);
    assert_eq!(
        card.close(reason::PORT_NOT_AVAILABLE),
        Some(Event::Closed(CloseReason::LocalReset(3)))
    );
    let (_, se) = pump(&mut card, &mut srv, t0);
    assert_eq!(se, vec![Event::Closed(CloseReason::PeerReset(3))]);
    let stray = Pdu {
        flags: Flags::ACK,
        src_port: 9,
        dst_port: 80,
        seq: 44,
        data: b"?".to_vec(),
        ..Pdu::default()
    };
    srv.handle_datagram(t0, 77, &stray.encode().unwrap());
    let (to, b) = srv.poll_transmit(t0).unwrap();
    assert_eq!(to, 77);
    let r = Pdu::decode(&b).unwrap();
    assert_eq!(r.var, VarPart::Rst(reason::UNEXPECTED_PDU));
    assert_eq!((r.src_port, r.dst_port), (80, 9));
    assert_eq!(srv.stats().unknown_peer, 1);
}

#[test]
fn silent_peer_times_out_with_rst_reason_5() {
    let t0 = Instant::now();
    // A card whose SYN is never answered.
    let mut card = Connection::connect(card_config(), 1, 2, 0);
    let mut now = t0;
    let mut syns = 0;
    let mut events = Vec::new();
    loop {
        while let Some(b) = card.poll_transmit(now) {
            let p = Pdu::decode(&b).unwrap();
            if p.flags.contains(Flags::SYN) {
                syns += 1;
            } else {
                assert_eq!(p.var, VarPart::Rst(reason::MAX_RETRIES));
            }
        }
        let Some(t) = card.poll_timeout() else { break };
        assert!(t >= now);
        now = t;
        events.extend(card.handle_timeout(now));
    }
    assert_eq!(syns, 1 + 4);
    assert_eq!(events, vec![Event::Closed(CloseReason::Timeout)]);
    // 200 + 400 + 800 + 1600 + 2000 ms (doubling, capped at max_rto).
    assert_eq!(now - t0, Duration::from_millis(5000));

    // An open link whose card goes silent: the server's data times out.
    let (_card, mut srv) = open_pair(t0);
    srv.send(&CARD, b"anyone?").unwrap();
    let (_, se, _) = pump_lossy(
        &mut Connection::connect(card_config(), 1, 2, 0),
        &mut srv,
        t0,
        |_, _| true,
        |_, _| true,
    );
    assert!(se.contains(&Event::Closed(CloseReason::Timeout)));
    assert!(srv.is_empty());
}

#[test]
fn nul_keepalive_is_sent_and_acknowledged() {
    let t0 = Instant::now();
    let mut cfg = server_config();
    cfg.keepalive = Some(Duration::from_secs(10));
    let mut card = Connection::connect(card_config(), 1, 2, 10);
    let mut srv = Server::new(cfg, 10, 20);
    pump(&mut card, &mut srv, t0);
    server_events(&mut srv);
    let t = srv.poll_timeout().unwrap();
    assert_eq!(t, t0 + Duration::from_secs(10));
    srv.handle_timeout(t);
    let nul = drain_server(&mut srv, t);
    assert_eq!(nul.len(), 1);
    let p = Pdu::decode(&nul[0]).unwrap();
    assert_eq!(p.flags, Flags::ACK | Flags::NUL);
    assert!(card.handle_pdu(t, &nul[0]).is_empty());
    let ack = Pdu::decode(&card.poll_transmit(t).unwrap()).unwrap();
    assert_eq!(ack.ack, p.seq);
    srv.handle_datagram(t, CARD, &ack.encode().unwrap());
    assert!(srv.connection(&CARD).unwrap().is_idle());
    assert_eq!(srv.poll_timeout(), Some(t + Duration::from_secs(10)));
}

#[test]
fn server_demultiplexes_many_connections() {
    let t0 = Instant::now();
    let mut srv: Server<u32> = Server::new(server_config(), 1000, 3);
    let mut cards: Vec<Connection> = (0..500)
        .map(|i| Connection::connect(card_config(), 0x4000 + i as u16, 80, i as u16 * 13))
        .collect();
    for _round in 0..10 {
        for (i, c) in cards.iter_mut().enumerate() {
            while let Some(b) = c.poll_transmit(t0) {
                srv.handle_datagram(t0, i as u32, &b);
            }
        }
        while let Some((a, b)) = srv.poll_transmit(t0) {
            for e in cards[a as usize].handle_pdu(t0, &b) {
                if let Event::Connected(_) = e {
                    let msg = format!("card {a}").into_bytes();
                    cards[a as usize].send(&msg).unwrap();
                }
            }
        }
    }
    let mut got = 0;
    while let Some((a, e)) = srv.poll_event() {
        if let Event::Sdu(d) = e {
            assert_eq!(d, format!("card {a}").into_bytes());
            got += 1;
        }
    }
    assert_eq!(got, 500);
    assert_eq!(srv.len(), 500);
    assert_eq!(srv.stats().accepted, 500);
}

/// Deterministic PRNG for the lossy channel.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// A client and a server over a channel with seeded loss, reordering (random extra delay) and
/// duplication; 32 KiB of SDUs each way arrive exactly once, in order.
fn lossy_link(seed: u64, loss: u64, dup: u64, reorder: u64) {
    let t0 = Instant::now();
    let mut rng = Rng(seed);
    let mut cfg = card_config();
    cfg.max_retries = 30;
    let mut scfg = server_config();
    scfg.max_retries = 30;
    let mut card = Connection::connect(cfg, 0x4000, 80, (seed as u16).wrapping_mul(31));
    let mut srv: Server<u32> = Server::new(scfg, 10, seed as u16);
    // SDUs of varying sizes adding up to 32 KiB each way.
    let mut sdus = Vec::new();
    let mut total = 0;
    while total < 32 * 1024 {
        let n = (1 + rng.next() % 3000) as usize;
        let n = n.min(32 * 1024 - total);
        sdus.push((0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>());
        total += n;
    }
    // In flight: (deliver at, to server?, bytes)
    let mut wire: Vec<(Instant, bool, Vec<u8>)> = Vec::new();
    let (mut card_got, mut srv_got) = (Vec::new(), Vec::new());
    let mut sent_card = false;
    let mut sent_srv = false;
    let mut now = t0;
    let mut steps = 0;
    loop {
        steps += 1;
        assert!(steps < 200_000, "did not finish");
        let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
        while let Some(b) = card.poll_transmit(now) {
            out.push((true, b));
        }
        while let Some((_, b)) = srv.poll_transmit(now) {
            out.push((false, b));
        }
        for (to_srv, b) in out {
            if rng.chance(loss) {
                continue;
            }
            let copies = if rng.chance(dup) { 2 } else { 1 };
            for _ in 0..copies {
                let mut delay = Duration::from_millis(20);
                if rng.chance(reorder) {
                    delay += Duration::from_millis(rng.next() % 150);
                }
                wire.push((now + delay, to_srv, b.clone()));
            }
        }
        let mut card_events = Vec::new();
        while let Some((_, e)) = srv.poll_event() {
            match e {
                Event::Connected(_) if !sent_srv => {
                    sent_srv = true;
                    for s in &sdus {
                        srv.send(&CARD, s).unwrap();
                    }
                }
                Event::Sdu(d) => srv_got.push(d),
                Event::Closed(r) => panic!("server closed: {r:?}"),
                _ => {}
            }
        }
        let done = card_got.len() == sdus.len()
            && srv_got.len() == sdus.len()
            && card.is_idle()
            && srv.connection(&CARD).is_some_and(|c| c.is_idle());
        if done {
            break;
        }
        // Advance to the next delivery or timer.
        let next_wire = wire.iter().map(|w| w.0).min();
        let next = [next_wire, card.poll_timeout(), srv.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .expect("something pending");
        now = now.max(next);
        let (due, rest): (Vec<_>, Vec<_>) = wire.into_iter().partition(|w| w.0 <= now);
        wire = rest;
        for (_, to_srv, b) in due {
            if to_srv {
                srv.handle_datagram(now, CARD, &b);
            } else {
                card_events.extend(card.handle_pdu(now, &b));
            }
        }
        card_events.extend(card.handle_timeout(now));
        srv.handle_timeout(now);
        for e in card_events {
            match e {
                Event::Connected(_) if !sent_card => {
                    sent_card = true;
                    for s in &sdus {
                        card.send(s).unwrap();
                    }
                }
                Event::Sdu(d) => card_got.push(d),
                Event::Closed(r) => panic!("card closed: {r:?}"),
                _ => {}
            }
        }
    }
    assert_eq!(
        card_got, sdus,
        "card received the server's SDUs once, in order"
    );
    assert_eq!(
        srv_got, sdus,
        "server received the card's SDUs once, in order"
    );
    if loss > 0 {
        assert!(card.stats().retransmits > 0);
    }
    if dup > 0 {
        assert!(card.stats().duplicates > 0);
    }
}

#[test]
fn lossy_link_32k_exactly_once_in_order() {
    for seed in [1u64, 0xDEADBEEF, 42, 7777] {
        lossy_link(seed, 10, 5, 20);
    }
}

#[test]
fn clean_link_32k() {
    lossy_link(99, 0, 0, 0);
}

#[test]
fn very_lossy_link_32k() {
    lossy_link(12345, 25, 10, 30);
}

mod robustness {
    use super::*;
    use proptest::prelude::*;

    fn arb_input() -> impl Strategy<Value = (bool, Vec<u8>, u8, u16, u16, u16, Vec<u16>, u64)> {
        (
            any::<bool>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u16>(), 0..5),
            0u64..3000,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Random datagrams (raw bytes, or well-formed PDUs with random flags, numbers, EAK lists
        /// and data) thrown at an open server and an open card, with timers firing in between:
        /// nothing panics and every poll terminates.
        #[test]
        fn random_datagrams_never_panic(inputs in proptest::collection::vec(arb_input(), 1..40)) {
            let t0 = Instant::now();
            let (mut card, mut srv) = open_pair(t0);
            srv.send(&CARD, &[1; 500]).unwrap();
            card.send(&[2; 500]).unwrap();
            let mut now = t0;
            for (raw, data, flags, seq, ack, window, eaks, dt) in inputs {
                now += Duration::from_millis(dt);
                let bytes = if raw {
                    data
                } else {
                    let flags = Flags::from_bits_truncate(flags);
                    let var = if flags.contains(Flags::SYN) {
                        VarPart::Syn(otagw_catp::SynParams {
                            max_pdu_size: window,
                            max_sdu_size: seq,
                            identification: data.iter().take(20).copied().collect(),
                        })
                    } else if flags.contains(Flags::EAK) {
                        VarPart::Eak(eaks)
                    } else if flags.contains(Flags::RST) {
                        VarPart::Rst(flags.bits())
                    } else {
                        VarPart::None
                    };
                    Pdu { flags, seq, ack, window, var, data, ..Pdu::default() }
                        .encode()
                        .unwrap()
                };
                srv.handle_datagram(now, CARD, &bytes);
                srv.handle_datagram(now, 2, &bytes);
                let _ = card.handle_pdu(now, &bytes);
                srv.handle_timeout(now);
                let _ = card.handle_timeout(now);
                let mut n = 0;
                while srv.poll_transmit(now).is_some() {
                    n += 1;
                    prop_assert!(n < 1000);
                }
                let mut n = 0;
                while card.poll_transmit(now).is_some() {
                    n += 1;
                    prop_assert!(n < 1000);
                }
                while srv.poll_event().is_some() {}
                if let Some(t) = srv.poll_timeout() {
                    prop_assert!(t + Duration::from_secs(60) > now);
                }
            }
        }
    }
}

#[test]
fn thousands_of_links_time_out_through_the_timer_index() {
    let t0 = Instant::now();
    let mut srv: Server<u32> = Server::new(server_config(), 5000, 11);
    let mut cards: Vec<Connection> = (0..2000)
        .map(|i| Connection::connect(card_config(), 1, 80, i as u16))
        .collect();
    for _ in 0..3 {
        for (i, c) in cards.iter_mut().enumerate() {
            while let Some(b) = c.poll_transmit(t0) {
                srv.handle_datagram(t0, i as u32, &b);
            }
        }
        while let Some((a, b)) = srv.poll_transmit(t0) {
            cards[a as usize].handle_pdu(t0, &b);
        }
    }
    let mut connected = 0;
    while let Some((_, e)) = srv.poll_event() {
        assert!(matches!(e, Event::Connected(_)));
        connected += 1;
    }
    assert_eq!(connected, 2000);
    assert_eq!(srv.poll_timeout(), None, "all idle, no keep-alive");
    // Every card goes silent after the server sends it something.
    for a in 0..2000u32 {
        srv.send(&a, b"ping").unwrap();
    }
    let mut now = t0;
    let mut closed = 0;
    let mut sent = 0;
    let mut rounds = 0;
    loop {
        while srv.poll_transmit(now).is_some() {
            sent += 1;
        }
        while let Some((_, e)) = srv.poll_event() {
            assert_eq!(e, Event::Closed(CloseReason::Timeout));
            closed += 1;
        }
        let Some(t) = srv.poll_timeout() else { break };
        now = t;
        srv.handle_timeout(now);
        rounds += 1;
        assert!(rounds < 100, "timers batched per deadline");
    }
    assert_eq!(closed, 2000);
    // 1 + 4 retransmissions of the data PDU, then one RST each.
    assert_eq!(sent, 2000 * 6);
    assert!(srv.is_empty());
}

#[test]
fn syn_over_the_connection_limit_gets_rst_reason_2() {
    let t0 = Instant::now();
    let mut srv: Server<u32> = Server::new(server_config(), 1, 0);
    let mut a = Connection::connect(card_config(), 1, 80, 0);
    let mut b = Connection::connect(card_config(), 2, 80, 0);
    srv.handle_datagram(t0, 1, &a.poll_transmit(t0).unwrap());
    srv.handle_datagram(t0, 2, &b.poll_transmit(t0).unwrap());
    assert_eq!(srv.stats().refused, 1);
    let mut to_b = None;
    while let Some((to, bytes)) = srv.poll_transmit(t0) {
        if to == 2 {
            to_b = Some(bytes);
        }
    }
    let rst = Pdu::decode(to_b.as_ref().unwrap()).unwrap();
    assert_eq!(rst.var, VarPart::Rst(reason::TEMPORARILY_UNABLE));
    assert_eq!(
        b.handle_pdu(t0, to_b.as_ref().unwrap()),
        vec![Event::Closed(CloseReason::PeerReset(2))]
    );
    assert_eq!(srv.len(), 1);
}

/// An EAK lists its numbers in the header, so the whole PDU must fit the peer's max PDU size:
/// a server announcing 24 octets gets at most (24 - 18) / 2 = 3 numbers, the lowest first.
#[test]
fn eak_list_fits_the_peers_max_pdu() {
    let t0 = Instant::now();
    let mut card = Connection::connect(
        Config {
            window: 16,
            ..card_config()
        },
        0x4000,
        80,
        100,
    );
    let mut srv = Server::new(
        Config {
            max_pdu_size: 24,
            ..server_config()
        },
        100,
        7000,
    );
    let (ce, _) = pump(&mut card, &mut srv, t0);
    assert!(matches!(&ce[..], [Event::Connected(p)] if p.max_pdu_size == 24));
    for i in 0..8u8 {
        srv.send(&CARD, &[i]).unwrap();
    }
    let pdus = drain_server(&mut srv, t0);
    assert_eq!(pdus.len(), 8, "within the card's window");
    // The first is lost: seven arrive out of sequence.
    for p in &pdus[1..] {
        assert!(card.handle_pdu(t0, p).is_empty());
    }
    let first = Pdu::decode(&pdus[1]).unwrap().seq;
    let eak = card.poll_transmit(t0).unwrap();
    assert!(eak.len() <= 24, "{} octets", eak.len());
    let eak = Pdu::decode(&eak).unwrap();
    assert_eq!(eak.flags, Flags::ACK | Flags::EAK);
    assert_eq!(
        eak.var,
        VarPart::Eak(vec![first, first.wrapping_add(1), first.wrapping_add(2)])
    );
}

/// A SYN announcing a max PDU size below the SYN header's own size (0x17) is refused with RST
/// reason 1 (illegal parameters) and no connection is made; 0x17 is taken. The same on the
/// card's side for a SYN-ACK.
#[test]
fn syn_with_a_max_pdu_below_the_header_gets_rst_reason_1() {
    let t0 = Instant::now();
    let mut srv: Server<u32> = Server::new(server_config(), 10, 0);
    let small = |max_pdu_size: u16| Config {
        max_pdu_size,
        ..card_config()
    };
    let mut a = Connection::connect(small(0x16), 0x4000, 80, 0);
    srv.handle_datagram(t0, CARD, &a.poll_transmit(t0).unwrap());
    let out = drain_server(&mut srv, t0);
    assert_eq!(out.len(), 1);
    let rst = Pdu::decode(&out[0]).unwrap();
    assert!(rst.flags.contains(Flags::RST));
    assert_eq!(rst.var, VarPart::Rst(reason::ILLEGAL_PARAMETERS));
    assert_eq!(
        a.handle_pdu(t0, &out[0]),
        vec![Event::Closed(CloseReason::PeerReset(1))]
    );
    assert!(srv.is_empty());
    assert_eq!(srv.stats().illegal, 1);
    assert!(server_events(&mut srv).is_empty());

    let mut b = Connection::connect(small(0x17), 0x4000, 80, 0);
    let (ce, se) = pump(&mut b, &mut srv, t0);
    assert!(matches!(&ce[..], [Event::Connected(_)]), "{ce:?}");
    assert!(matches!(&se[..], [Event::Connected(p)] if p.max_pdu_size == 0x17));

    // The card's side: a SYN-ACK announcing 0x16.
    let mut card = Connection::connect(card_config(), 0x4000, 80, 500);
    let syn = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    let mut tiny = Server::new(
        Config {
            max_pdu_size: 0x16,
            ..server_config()
        },
        10,
        0,
    );
    tiny.handle_datagram(t0, CARD, &syn.encode().unwrap());
    let syn_ack = drain_server(&mut tiny, t0);
    assert_eq!(
        card.handle_pdu(t0, &syn_ack[0]),
        vec![Event::Closed(CloseReason::LocalReset(1))]
    );
    let rst = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(rst.var, VarPart::Rst(reason::ILLEGAL_PARAMETERS));
    assert_eq!(card.state(), State::Closed);
}

#[test]
fn single_pdu_sdus_are_acked_once_by_the_ack_covering_them() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    assert_eq!(srv.send(&CARD, b"one"), Ok(0));
    assert_eq!(srv.send(&CARD, b"two"), Ok(1));
    let pdus = drain_server(&mut srv, t0);
    assert_eq!(pdus.len(), 2);
    // Nothing is acknowledged by sending.
    assert!(acks(&server_events(&mut srv)).is_empty());
    // The card has the first: its ACK covers SDU 0 only.
    assert_eq!(
        card.handle_pdu(t0, &pdus[0]),
        vec![Event::Sdu(b"one".to_vec())]
    );
    let ack1 = card.poll_transmit(t0).unwrap();
    srv.handle_datagram(t0, CARD, &ack1);
    assert_eq!(server_events(&mut srv), vec![Event::SduAcked(0)]);
    // The same ACK again (duplicated on the way) acknowledges nothing new.
    srv.handle_datagram(t0, CARD, &ack1);
    assert!(server_events(&mut srv).is_empty());
    card.handle_pdu(t0, &pdus[1]);
    let ack2 = card.poll_transmit(t0).unwrap();
    srv.handle_datagram(t0, CARD, &ack2);
    assert_eq!(server_events(&mut srv), vec![Event::SduAcked(1)]);
    srv.handle_datagram(t0, CARD, &ack2);
    srv.handle_datagram(t0, CARD, &ack1);
    assert!(server_events(&mut srv).is_empty());
    // The card's own SDUs are numbered per connection, acknowledged likewise.
    assert_eq!(card.send(b"up"), Ok(0));
    let (ce, se) = pump(&mut card, &mut srv, t0);
    assert_eq!(ce, vec![Event::SduAcked(0)]);
    assert_eq!(se, vec![Event::Sdu(b"up".to_vec())]);
}

#[test]
fn a_segmented_sdu_is_acked_when_its_last_pdu_is_not_by_eak() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    // 110 data octets per PDU towards the card: A is three PDUs, B one (the window is 4).
    let a: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    assert_eq!(srv.send(&CARD, &a), Ok(0));
    assert_eq!(srv.send(&CARD, b"B"), Ok(1));
    let pdus = drain_server(&mut srv, t0);
    assert_eq!(pdus.len(), 4);
    let seq = |i: usize| Pdu::decode(&pdus[i]).unwrap().seq;
    // The first two segments of A in order: the ACK covers them, not A's last PDU.
    card.handle_pdu(t0, &pdus[0]);
    card.handle_pdu(t0, &pdus[1]);
    let ack = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(ack.ack, seq(1));
    srv.handle_datagram(t0, CARD, &ack.encode().unwrap());
    assert!(server_events(&mut srv).is_empty(), "A is not all there");
    // A's last segment lost, B's arrives: the EAK names B's PDU, which frees nothing.
    card.handle_pdu(t0, &pdus[3]);
    let eak = Pdu::decode(&card.poll_transmit(t0).unwrap()).unwrap();
    assert_eq!(eak.var, VarPart::Eak(vec![seq(3)]));
    assert_eq!(eak.ack, seq(1));
    srv.handle_datagram(t0, CARD, &eak.encode().unwrap());
    assert!(
        server_events(&mut srv).is_empty(),
        "an EAK acknowledges no SDU"
    );
    // The fast retransmission of A's last segment fills the gap: one ACK covers A and B.
    let re = drain_server(&mut srv, t0);
    assert_eq!(re, vec![pdus[2].clone()]);
    assert_eq!(
        card.handle_pdu(t0, &re[0]),
        vec![Event::Sdu(a), Event::Sdu(b"B".to_vec())]
    );
    let ack = card.poll_transmit(t0).unwrap();
    assert_eq!(Pdu::decode(&ack).unwrap().ack, seq(3));
    srv.handle_datagram(t0, CARD, &ack);
    assert_eq!(
        server_events(&mut srv),
        vec![Event::SduAcked(0), Event::SduAcked(1)]
    );
    srv.handle_datagram(t0, CARD, &ack);
    assert!(server_events(&mut srv).is_empty(), "once per SDU");
    assert!(srv.connection(&CARD).unwrap().is_idle());
}

#[test]
fn sdus_acked_exactly_once_over_a_lossy_link() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    let mut sent = Vec::new();
    for i in 0..6u32 {
        let sdu: Vec<u8> = (0..(50 + i * 90)).map(|j| (i + j) as u8).collect();
        sent.push(srv.send(&CARD, &sdu).unwrap());
    }
    // Drop every third PDU to the card and every second PDU back (ACKs and EAKs among them).
    let (ce, se, _) = pump_lossy(
        &mut card,
        &mut srv,
        t0,
        |n, _| n % 2 == 0,
        |n, _| n % 3 == 0,
    );
    assert_eq!(sdus(&ce).len(), 6);
    assert_eq!(acks(&se), sent, "each SDU once, in order");
    assert!(srv.connection(&CARD).unwrap().stats().retransmits > 0);
}

#[test]
fn no_ack_event_for_an_sdu_outstanding_when_the_link_ends() {
    let t0 = Instant::now();
    let (mut card, mut srv) = open_pair(t0);
    srv.send(&CARD, b"never acknowledged").unwrap();
    // The card hears nothing: the server gives up after its retries (RST reason 5).
    let (_, se, _) = pump_lossy(&mut card, &mut srv, t0, |_, _| false, |_, _| true);
    assert_eq!(se, vec![Event::Closed(CloseReason::Timeout)]);
    // A card that resets instead.
    let (mut card, mut srv) = open_pair(t0);
    srv.send(&CARD, b"x").unwrap();
    drain_server(&mut srv, t0);
    card.close(reason::NORMAL);
    let (_, se) = pump(&mut card, &mut srv, t0);
    assert_eq!(se, vec![Event::Closed(CloseReason::PeerReset(0))]);
}

#[test]
fn server_sdu_numbers_name_one_link_each() {
    let t0 = Instant::now();
    let mut srv: Server<u32> = Server::new(server_config(), 10, 1);
    let mut cards = vec![
        Connection::connect(card_config(), 1, 2, 10),
        Connection::connect(card_config(), 1, 2, 20),
    ];
    // Pumps between both cards (addresses 0 and 1) and the server until quiet.
    let pump2 = |cards: &mut Vec<Connection>, srv: &mut Server<u32>| {
        let mut ev = Vec::new();
        for _ in 0..100 {
            let mut any = false;
            for (i, c) in cards.iter_mut().enumerate() {
                while let Some(d) = c.poll_transmit(t0) {
                    any = true;
                    srv.handle_datagram(t0, i as u32, &d);
                }
            }
            while let Some((a, d)) = srv.poll_transmit(t0) {
                any = true;
                cards[a as usize].handle_pdu(t0, &d);
            }
            while let Some(e) = srv.poll_event() {
                ev.push(e);
            }
            if !any {
                return ev;
            }
        }
        panic!("no quiescence");
    };
    pump2(&mut cards, &mut srv);
    // Both links start at SDU 0 on their own; the server's numbers do not repeat.
    assert_eq!(srv.send(&0, b"a"), Ok(0));
    assert_eq!(srv.send(&1, b"b"), Ok(1));
    assert_eq!(srv.send(&0, b"c"), Ok(2));
    let ev = pump2(&mut cards, &mut srv);
    let mut got: Vec<(u32, u64)> = ev
        .into_iter()
        .filter_map(|(a, e)| match e {
            Event::SduAcked(n) => Some((a, n)),
            _ => None,
        })
        .collect();
    got.sort();
    assert_eq!(got, vec![(0, 0), (0, 2), (1, 1)]);
    // A new link from address 0 after the old one ended goes on from there.
    cards[0] = Connection::connect(card_config(), 1, 2, 30);
    pump2(&mut cards, &mut srv);
    assert_eq!(srv.send(&0, b"d"), Ok(3));
    let ev = pump2(&mut cards, &mut srv);
    assert!(ev.contains(&(0, Event::SduAcked(3))), "{ev:?}");
}
