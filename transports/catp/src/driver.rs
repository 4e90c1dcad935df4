//! The tokio glue around the sans-IO core: [`Endpoint`] runs a [`Server`] on one UDP socket
//! (thousands of links, one timer), [`ClientLink`] runs one client [`Connection`] on its own
//! socket (the card's side, with optional [`Impairment`] of its datagrams for tests and
//! benchmarks).
//!
//! Both are one task each that owns the state machine: datagrams in, commands in, timers, and
//! whatever the state machine wants to send goes out before the task waits again.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::conn::{Config, Connection, Event, SendError, State};
use crate::pdu::SynParams;
use crate::server::{Server, ServerStats};

/// Largest datagram read (UDP's maximum payload).
const MAX_DATAGRAM: usize = 65_536;

/// What the endpoint reports about its links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// A card completed the handshake; its SYN parameters (identification: the ICCID).
    Connected { peer: SocketAddr, params: SynParams },
    /// One whole SDU from a card.
    Sdu { peer: SocketAddr, data: Vec<u8> },
    /// The card acknowledged all of the SDU numbered `sdu` by [`Endpoint::send`] (the
    /// cumulative ACK covers its last PDU): it reached the card's CAT_TP layer.
    Acked { peer: SocketAddr, sdu: u64 },
    /// A link ended.
    Closed {
        peer: SocketAddr,
        reason: crate::conn::CloseReason,
    },
}

enum Command {
    Send {
        to: SocketAddr,
        sdu: Vec<u8>,
        reply: oneshot::Sender<Result<u64, SendError>>,
    },
    Close {
        to: SocketAddr,
        reason: u8,
    },
}

/// Endpoint counters: the server's and the socket's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointStats {
    pub server: ServerStats,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
    pub send_errors: u64,
    /// Links open (or closing) now.
    pub links: usize,
}

/// The gateway's CAT_TP endpoint on one UDP socket.
pub struct Endpoint {
    local_addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Mutex<EndpointStats>>,
    task: tokio::task::JoinHandle<()>,
}

impl Endpoint {
    /// Binds `listen` and starts the task; link events arrive on the returned receiver.
    pub async fn bind(
        listen: SocketAddr,
        config: Config,
        max_links: usize,
    ) -> io::Result<(Endpoint, mpsc::UnboundedReceiver<LinkEvent>)> {
        let socket = UdpSocket::bind(listen).await?;
        let local_addr = socket.local_addr()?;
        let (commands, rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(EndpointStats::default()));
        let seed = seed_from_clock();
        let server = Server::new(config, max_links, seed);
        let task = tokio::spawn(run_endpoint(socket, server, rx, events_tx, stats.clone()));
        Ok((
            Endpoint {
                local_addr,
                commands,
                stats,
                task,
            },
            events,
        ))
    }

    /// Where the socket is bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queues an SDU on the link with `to`; returns its number (unique on this endpoint), which
    /// [`LinkEvent::Acked`] names once the card has acknowledged it.
    pub async fn send(&self, to: SocketAddr, sdu: Vec<u8>) -> Result<u64, SendError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Send { to, sdu, reply })
            .map_err(|_| SendError::NotOpen(State::Closed))?;
        rx.await.unwrap_or(Err(SendError::NotOpen(State::Closed)))
    }

    /// Resets the link with `to`.
    pub fn close(&self, to: SocketAddr, reason: u8) {
        let _ = self.commands.send(Command::Close { to, reason });
    }

    /// Counters so far.
    pub fn stats(&self) -> EndpointStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Stops the task (links are dropped without RST).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn seed_from_clock() -> u16 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (n ^ (n >> 16)) as u16
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn run_endpoint(
    socket: UdpSocket,
    mut server: Server<SocketAddr>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::UnboundedSender<LinkEvent>,
    stats: Arc<Mutex<EndpointStats>>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (mut dg_in, mut dg_out, mut send_errors) = (0u64, 0u64, 0u64);
    loop {
        let now = Instant::now();
        while let Some((to, bytes)) = server.poll_transmit(now) {
            match socket.send_to(&bytes, to).await {
                Ok(_) => dg_out += 1,
                Err(e) => {
                    send_errors += 1;
                    tracing::debug!("CAT_TP send to {to}: {e}");
                }
            }
        }
        while let Some((peer, e)) = server.poll_event() {
            let ev = match e {
                Event::Connected(params) => LinkEvent::Connected { peer, params },
                Event::Sdu(data) => LinkEvent::Sdu { peer, data },
                Event::SduAcked(sdu) => LinkEvent::Acked { peer, sdu },
                Event::Closed(reason) => LinkEvent::Closed { peer, reason },
            };
            let _ = events.send(ev);
        }
        if let Ok(mut s) = stats.lock() {
            s.server = server.stats().clone();
            s.datagrams_in = dg_in;
            s.datagrams_out = dg_out;
            s.send_errors = send_errors;
            s.links = server.len();
        }
        let deadline = server.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    dg_in += 1;
                    server.handle_datagram(Instant::now(), from, &buf[..n]);
                }
                // ICMP port unreachable from an earlier send shows up here on Linux: not fatal.
                Err(e) => tracing::debug!("CAT_TP receive: {e}"),
            },
            c = commands.recv() => match c {
                Some(Command::Send { to, sdu, reply }) => {
                    let _ = reply.send(server.send(&to, &sdu));
                }
                Some(Command::Close { to, reason }) => server.close(&to, reason),
                None => return,
            },
            _ = sleep_until(deadline) => server.handle_timeout(Instant::now()),
        }
    }
}

/// Datagram faults applied on one side of a socket: each datagram (either way) is dropped with
/// probability `loss`, else sent twice with `duplicate`, else held back and sent after the next
/// one with `reorder`. Seeded, so a run repeats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder: f64,
    pub seed: u64,
}

impl Default for Impairment {
    fn default() -> Self {
        Impairment {
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            seed: 1,
        }
    }
}

impl Impairment {
    /// No faults.
    pub fn none() -> Self {
        Self::default()
    }
    fn is_none(&self) -> bool {
        self.loss <= 0.0 && self.duplicate <= 0.0 && self.reorder <= 0.0
    }
}

/// What to do with one datagram.
struct Faults {
    cfg: Impairment,
    state: u64,
    held: Option<Vec<u8>>,
}

impl Faults {
    fn new(cfg: Impairment, salt: u64) -> Self {
        Faults {
            cfg,
            state: cfg.seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            held: None,
        }
    }
    fn uniform(&mut self) -> f64 {
        // SplitMix64.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
    /// The datagrams to pass on in place of `d`.
    fn apply(&mut self, d: Vec<u8>) -> Vec<Vec<u8>> {
        if self.cfg.is_none() {
            return vec![d];
        }
        let r = self.uniform();
        let mut out = Vec::new();
        if r < self.cfg.loss {
            // dropped
        } else if r < self.cfg.loss + self.cfg.duplicate {
            out.push(d.clone());
            out.push(d);
        } else if r < self.cfg.loss + self.cfg.duplicate + self.cfg.reorder && self.held.is_none() {
            self.held = Some(d);
            return out;
        } else {
            out.push(d);
        }
        if let Some(h) = self.held.take() {
            out.push(h);
        }
        out
    }
    /// A held datagram that waited long enough.
    fn release(&mut self) -> Option<Vec<u8>> {
        self.held.take()
    }
}

/// Counters of a client link.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub conn: crate::conn::Stats,
    pub datagrams_in: u64,
    pub datagrams_out: u64,
}

/// One client link (the card's side) on its own UDP socket.
pub struct ClientLink {
    commands: mpsc::UnboundedSender<ClientCommand>,
    events: mpsc::UnboundedReceiver<Event>,
    stats: Arc<Mutex<ClientStats>>,
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

enum ClientCommand {
    Send(Vec<u8>, oneshot::Sender<Result<u64, SendError>>),
    Close(u8),
}

impl ClientLink {
    /// Opens a socket on an ephemeral loopback/any port and sends the SYN to `server`.
    /// `ports` are the CAT_TP (source, destination) ports.
    pub async fn connect(
        server: SocketAddr,
        config: Config,
        ports: (u16, u16),
        impairment: Impairment,
    ) -> io::Result<ClientLink> {
        let bind: SocketAddr = if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let socket = UdpSocket::bind(bind).await?;
        socket.connect(server).await?;
        let local_addr = socket.local_addr()?;
        let iss = seed_from_clock() ^ local_addr.port();
        let conn = Connection::connect(config, ports.0, ports.1, iss);
        let (commands, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, events) = mpsc::unbounded_channel();
        let stats = Arc::new(Mutex::new(ClientStats::default()));
        // Both directions from the one seed (not from the port: a run must repeat).
        let salt = 0x5EED;
        let task = tokio::spawn(run_client(
            socket,
            conn,
            cmd_rx,
            ev_tx,
            stats.clone(),
            Faults::new(impairment, salt),
            Faults::new(impairment, salt ^ 0xFFFF),
        ));
        Ok(ClientLink {
            commands,
            events,
            stats,
            local_addr,
            task,
        })
    }

    /// The socket's local address (what the server sees as the peer).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The next event (None once the link task ended).
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Queues an SDU; returns its number, named by [`Event::SduAcked`] once acknowledged.
    pub async fn send(&self, sdu: Vec<u8>) -> Result<u64, SendError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(ClientCommand::Send(sdu, tx))
            .map_err(|_| SendError::NotOpen(State::Closed))?;
        rx.await.unwrap_or(Err(SendError::NotOpen(State::Closed)))
    }

    /// Resets the link.
    pub fn close(&self, reason: u8) {
        let _ = self.commands.send(ClientCommand::Close(reason));
    }

    /// Counters so far.
    pub fn stats(&self) -> ClientStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for ClientLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long a reordered datagram is held at most when nothing follows it.
const HOLD: Duration = Duration::from_millis(15);

async fn run_client(
    socket: UdpSocket,
    mut conn: Connection,
    mut commands: mpsc::UnboundedReceiver<ClientCommand>,
    events: mpsc::UnboundedSender<Event>,
    stats: Arc<Mutex<ClientStats>>,
    mut out_faults: Faults,
    mut in_faults: Faults,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let (mut dg_in, mut dg_out) = (0u64, 0u64);
    let mut closing = false;
    let mut pending_events: Vec<Event> = Vec::new();
    loop {
        let now = Instant::now();
        for e in pending_events.drain(..) {
            if matches!(e, Event::Closed(_)) {
                closing = true;
            }
            let _ = events.send(e);
        }
        while let Some(d) = conn.poll_transmit(now) {
            for d in out_faults.apply(d) {
                if socket.send(&d).await.is_ok() {
                    dg_out += 1;
                }
            }
        }
        if let Ok(mut s) = stats.lock() {
            s.conn = conn.stats().clone();
            s.datagrams_in = dg_in;
            s.datagrams_out = dg_out;
        }
        if closing && conn.state() == State::Closed {
            // The RST (if any) is out; nothing more will happen on this link.
            return;
        }
        let held = out_faults.held.is_some() || in_faults.held.is_some();
        let deadline = match (conn.poll_timeout(), held) {
            (Some(t), true) => Some(t.min(now + HOLD)),
            (None, true) => Some(now + HOLD),
            (t, false) => t,
        };
        tokio::select! {
            r = socket.recv(&mut buf) => match r {
                Ok(n) => {
                    // Answer each datagram before taking the next (a reordered pair shows up
                    // as a gap first, answered with an EAK).
                    for d in in_faults.apply(buf[..n].to_vec()) {
                        dg_in += 1;
                        let now = Instant::now();
                        pending_events.extend(conn.handle_pdu(now, &d));
                        while let Some(d) = conn.poll_transmit(now) {
                            for d in out_faults.apply(d) {
                                if socket.send(&d).await.is_ok() {
                                    dg_out += 1;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::debug!("CAT_TP client receive: {e}"),
            },
            c = commands.recv() => match c {
                Some(ClientCommand::Send(sdu, reply)) => {
                    let _ = reply.send(conn.send(&sdu));
                }
                Some(ClientCommand::Close(reason)) => {
                    if let Some(e) = conn.close(reason) {
                        pending_events.push(e);
                    }
                }
                None => {
                    if let Some(e) = conn.close(crate::pdu::reason::NORMAL) {
                        pending_events.push(e);
                    }
                }
            },
            _ = sleep_until(deadline) => {
                let now = Instant::now();
                if let Some(d) = out_faults.release() {
                    if socket.send(&d).await.is_ok() {
                        dg_out += 1;
                    }
                }
                if let Some(d) = in_faults.release() {
                    dg_in += 1;
                    pending_events.extend(conn.handle_pdu(now, &d));
                }
                pending_events.extend(conn.handle_timeout(now));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_seeded_and_keep_every_datagram_without_loss() {
        let cfg = Impairment {
            loss: 0.0,
            duplicate: 0.1,
            reorder: 0.2,
            seed: 42,
        };
        let mut a = Faults::new(cfg, 1);
        let mut b = Faults::new(cfg, 1);
        let mut out_a = Vec::new();
        for i in 0..200u8 {
            let x = a.apply(vec![i]);
            assert_eq!(x, b.apply(vec![i]));
            out_a.extend(x);
        }
        out_a.extend(a.release());
        let mut seen: Vec<u8> = out_a.iter().map(|d| d[0]).collect();
        let in_order = seen.windows(2).all(|w| w[0] <= w[1]);
        assert!(!in_order, "some reordering");
        assert!(seen.len() > 200, "some duplicates");
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 200, "nothing lost");
    }

    #[test]
    fn loss_rate_roughly_as_configured() {
        let mut f = Faults::new(
            Impairment {
                loss: 0.05,
                ..Impairment::default()
            },
            9,
        );
        let kept: usize = (0..10_000).map(|i| f.apply(vec![i as u8]).len()).sum();
        assert!((9_300..=9_700).contains(&kept), "kept {kept}");
    }
}
