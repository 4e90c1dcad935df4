//! The API's connection limits (issue 17): half-sent requests are closed after the header
//! timeout, idle keep-alive connections after the idle timeout, a TLS handshake that never
//! finishes after the header timeout, and at the connection cap the oldest connection with no
//! request in flight makes room, so health keeps answering while 20,000 half-open
//! connections are held.
//!
//! The held connections come from two child processes (this test binary again, running its
//! `half_open_holder` function, which does nothing unless the parent's variables are set): each process may hold at most `ulimit -Hn` descriptors
//! (20,000 here, and no raising it without privileges), and the server needs its own. The
//! test takes about 30 s: the held connections get a 20 s header time, for slow machines.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use otagw::api::serve::{serve, ConnLimits, Connections};
use otagw::config::ApiSettings;
use otagw::devkit::{self, DevOptions};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const HEALTH: &str = "/api/v1/ota/health";

/// The tests here measure timeouts of about a second: they run one at a time, so the 20,000
/// connections of one do not slow another's clock.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const PARTIAL: &[u8] = b"GET /api/v1/ota/health HTTP/1.1\r\nHost: otagw\r\nAccept: */*\r\n";

/// Raises the soft descriptor limit to the hard one; returns the hard one.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
    }
    lim.rlim_cur
}

fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

/// Run by the parent in a child process (`OTAGW_HOLD_ADDR` set): opens `OTAGW_HOLD_COUNT`
/// connections, sends each half a request, prints `HELD`, and on `CHECK` from stdin prints
/// how many the server has closed.
#[test]
fn half_open_holder() {
    let (Ok(addr), Ok(count)) = (
        std::env::var("OTAGW_HOLD_ADDR"),
        std::env::var("OTAGW_HOLD_COUNT"),
    ) else {
        return;
    };
    let addr: SocketAddr = addr.parse().expect("address");
    let count: usize = count.parse().expect("count");
    raise_fd_limit();
    let child: u8 = std::env::var("OTAGW_HOLD_CHILD")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let held = runtime.block_on(async {
        let mut held = Vec::with_capacity(count);
        for i in 0..count {
            // Spread over 200 source addresses: one address's ephemeral ports, with the
            // TIME_WAITs of earlier runs, make connect() slow or fail.
            let source = std::net::Ipv4Addr::new(127, 10 + child, (i % 200) as u8 + 1, 1);
            let stream = async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                let stream = tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
                    .await
                    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                Ok::<_, std::io::Error>(stream)
            };
            let mut s = match stream.await {
                Ok(s) => s,
                Err(e) => {
                    println!("ERR connect {i}: {e}");
                    return None;
                }
            };
            // Written before the server may close it: only a reset can refuse it.
            let _ = s.write_all(PARTIAL);
            held.push(s);
        }
        Some(held)
    });
    let Some(mut held) = held else {
        return;
    };
    println!("HELD {} {}", held.len(), started.elapsed().as_millis());
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let mut closed = 0;
    let mut answered = 0;
    for s in &mut held {
        if s.set_nonblocking(true).is_err() {
            closed += 1;
            continue;
        }
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(_) => answered += 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => closed += 1,
        }
    }
    println!("CLOSED {closed} {answered}");
}

async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
    within: Duration,
) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("no {prefix} line from the holder in {within:?}"))
            .expect("holder's stdout")
            .unwrap_or_else(|| panic!("holder ended before {prefix}"));
        assert!(!line.contains("ERR "), "holder: {line}");
        // libtest may print "test half_open_holder ... " in front.
        if let Some((_, rest)) = line.split_once(prefix) {
            return rest
                .split_whitespace()
                .map(|n| n.parse().expect("number"))
                .collect();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_20000_half_open_connections_are_held() {
    let _one = ONE_AT_A_TIME.lock().await;
    let hard = raise_fd_limit();
    // Each child holds up to 10,000; the server must stay under its own limit.
    let per_child = 10_000.min(hard.saturating_sub(64)) as usize;
    let held = 2 * per_child;
    let cap = 18_000.min(hard.saturating_sub(2_000)).max(100) as usize;
    // Opening 20,000 takes 4-10 s here (debug build, 2 shared cores): room to spare.
    let header = Duration::from_secs(20);
    let env = devkit::start(DevOptions {
        cards: 1,
        api_limits: Some(ApiSettings {
            header_read_timeout_secs: header.as_secs(),
            idle_timeout_secs: 60,
            max_connections: cap,
            ..ApiSettings::default()
        }),
        ..DevOptions::default()
    })
    .await
    .expect("dev environment");
    let url = format!("{}{HEALTH}", env.server.base_url());
    let exe = std::env::current_exe().expect("test binary");
    let rss_before = rss_mib();

    let started = Instant::now();
    let mut children = Vec::new();
    for c in 0..2 {
        let mut child = tokio::process::Command::new(&exe)
            .args([
                "--exact",
                "half_open_holder",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("OTAGW_HOLD_ADDR", env.server.api_addr.to_string())
            .env("OTAGW_HOLD_COUNT", per_child.to_string())
            .env("OTAGW_HOLD_CHILD", c.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("holder process");
        let stdout = child.stdout.take().expect("stdout");
        let lines = tokio::io::BufReader::new(stdout).lines();
        children.push((child, lines));
    }
    for (_, lines) in &mut children {
        let n = next_line(lines, "HELD ", Duration::from_secs(120)).await;
        assert_eq!(n.first().copied(), Some(per_child as u64));
    }
    let opened_in = started.elapsed();
    let stats = env.server.api_connections();
    let open_before = stats.open();

    // Health, each time on a new connection, while they are held.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let t = Instant::now();
        let r = client.get(&url).send().await.expect("health answers");
        assert_eq!(r.status(), 200);
        worst = worst.max(t.elapsed());
    }
    let open_after = stats.open();
    let checked_in = started.elapsed();
    let rss_held = rss_mib();
    eprintln!(
        "{held} half-open held (opened in {opened_in:?}), cap {cap}: server had {open_before} \
         then {open_after} open, {} evicted; 20 health requests, slowest {worst:?}; RSS \
         {rss_before} -> {rss_held} MiB",
        stats.evicted()
    );
    assert!(
        checked_in < header,
        "the health checks ran while the connections were held ({checked_in:?})"
    );
    assert!(
        open_before >= cap * 9 / 10 && open_after >= cap * 9 / 10,
        "the server held about its cap ({cap}) open: {open_before}, {open_after}"
    );
    assert!(
        stats.evicted() + stats.timed_out() >= (held - cap) as u64,
        "connections over the cap made room: {} evicted, {} timed out",
        stats.evicted(),
        stats.timed_out()
    );
    assert!(worst < Duration::from_secs(1), "health took {worst:?}");

    // After the header timeout every held connection has been closed by the server.
    tokio::time::sleep(header + Duration::from_secs(2)).await;
    for (child, lines) in &mut children {
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"CHECK\n").await.expect("tell the holder");
        stdin.flush().await.expect("flush");
        let n = next_line(lines, "CLOSED ", Duration::from_secs(60)).await;
        assert_eq!(
            n,
            vec![per_child as u64, 0],
            "closed and answered of {per_child}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stats.open(), 0);
    assert!(
        stats.timed_out() >= (cap * 9 / 10) as u64,
        "{}",
        stats.timed_out()
    );
    for (mut child, _) in children {
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .expect("holder exits")
            .expect("holder status");
        assert!(status.success());
    }
    eprintln!("RSS after they closed: {} MiB", rss_mib());
    let r = client.get(&url).send().await.expect("health");
    assert_eq!(r.status(), 200);
    env.shutdown().await;
}

/// Reads one response (headers and a Content-Length body) from a blocking stream.
fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed before the response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
    }
}

/// Blocks until the server closes `s`; returns how long that took.
fn time_to_close(s: &mut TcpStream, limit: Duration) -> Duration {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).expect("read timeout");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!(
            "expected the server to close, got {other:?} after {:?}",
            t.elapsed()
        ),
    }
    t.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = devkit::start(DevOptions {
        cards: 1,
        api_limits: Some(ApiSettings {
            header_read_timeout_secs: 4,
            idle_timeout_secs: 1,
            max_connections: 100,
            ..ApiSettings::default()
        }),
        ..DevOptions::default()
    })
    .await
    .expect("dev environment");
    let addr = env.server.api_addr;
    let (idle, half) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(format!("GET {HEALTH} HTTP/1.1\r\nHost: otagw\r\n\r\n").as_bytes())
            .expect("request");
        let r = read_response(&mut s);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // A second request on the same connection works (it is kept alive)...
        s.write_all(format!("GET {HEALTH} HTTP/1.1\r\nHost: otagw\r\n\r\n").as_bytes())
            .expect("request");
        let r = read_response(&mut s);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        // ...then, silent, it is closed after the idle time, not the header time.
        let idle = time_to_close(&mut s, Duration::from_secs(10));

        // Half a second request after a keep-alive pause: the header time runs from its
        // first byte.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(format!("GET {HEALTH} HTTP/1.1\r\nHost: otagw\r\n\r\n").as_bytes())
            .expect("request");
        let r = read_response(&mut s);
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        std::thread::sleep(Duration::from_millis(500));
        s.write_all(PARTIAL).expect("half a request");
        let half = time_to_close(&mut s, Duration::from_secs(10));
        (idle, half)
    })
    .await
    .expect("client");
    eprintln!("idle keep-alive closed after {idle:?}; half a request after {half:?}");
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_millis(2500),
        "idle timeout 1 s, header timeout 4 s: closed after {idle:?}"
    );
    assert!(
        half >= Duration::from_millis(3900) && half < Duration::from_millis(5500),
        "header timeout 4 s from the first byte: closed after {half:?}"
    );
    env.shutdown().await;
}

struct Plain {
    addr: SocketAddr,
    connections: Arc<Connections>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn start(limits: ConnLimits, tls: Option<Arc<rustls::ServerConfig>>) -> Plain {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Router::new().route("/health", get(|| async { "ok" }));
    let connections = Connections::new();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        tls,
        router,
        limits,
        connections.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Plain {
        addr,
        connections,
        stop: Some(stop),
        task,
    }
}

impl Plain {
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops")
            .expect("server task");
        r.expect("serve returns Ok");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_never_finishes_is_closed_after_the_header_timeout() {
    let _one = ONE_AT_A_TIME.lock().await;
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let config = otagw::api::tls::server_config(
        &certs.join("dev-server.pem"),
        &certs.join("dev-server.key"),
    )
    .expect("dev pair");
    let server = start(
        ConnLimits {
            header_read_timeout: Duration::from_secs(1),
            ..ConnLimits::default()
        },
        Some(config),
    );
    let addr = server.addr;
    let (silent, partial) = tokio::task::spawn_blocking(move || {
        let mut silent = TcpStream::connect(addr).expect("connect");
        let mut partial = TcpStream::connect(addr).expect("connect");
        // The first bytes of a TLS record header (a ClientHello), then nothing.
        partial.write_all(&[0x16, 0x03, 0x01]).expect("write");
        (
            time_to_close(&mut silent, Duration::from_secs(10)),
            time_to_close(&mut partial, Duration::from_secs(10)),
        )
    })
    .await
    .expect("client");
    assert!(
        silent >= Duration::from_millis(900) && silent < Duration::from_millis(2500),
        "{silent:?}"
    );
    assert!(partial < Duration::from_millis(2500), "{partial:?}");
    // The count is taken just after the socket is dropped.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.connections.timed_out() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.connections.timed_out(), 2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_oldest_waiting_connection_makes_room() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = start(
        ConnLimits {
            max_connections: 3,
            ..ConnLimits::default()
        },
        None,
    );
    let addr = server.addr;
    let connections = server.connections.clone();
    let (oldest_closed, others_open, health) = tokio::task::spawn_blocking(move || {
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(PARTIAL).expect("half a request");
            held.push(s);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while connections.open() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        // A fourth client gets its answer; the oldest held connection is closed for it.
        let mut s = TcpStream::connect(addr).expect("connect");
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let health = read_response(&mut s);
        let oldest_closed = time_to_close(&mut held[0], Duration::from_secs(5));
        let mut others_open = 0;
        for s in &mut held[1..] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            let mut buf = [0u8; 16];
            if matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                others_open += 1;
            }
        }
        (oldest_closed, others_open, health)
    })
    .await
    .expect("client");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(oldest_closed < Duration::from_secs(1), "{oldest_closed:?}");
    assert_eq!(others_open, 2, "only the oldest was closed");
    assert_eq!(server.connections.evicted(), 1);
    server.shutdown().await;
}
