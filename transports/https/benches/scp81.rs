//! SCP81 admin server load figures (harness-less bench; `cargo bench -p otagw-https --bench
//! scp81 -- [rate|idle|all]`):
//!
//! - `rate`: PSK-TLS handshakes plus one admin exchange per second on loopback, against our
//!   server and against `openssl s_server` in the same run, per suite. One exchange is what a
//!   card does to fetch one script: TCP connect, PSK-TLS handshake, a request, the 200 carrying
//!   the script chunk (the same bytes from both servers: `s_server -HTTP` serves a file holding
//!   our exact response), close. Our server also runs the whole one-chunk session (POST, 200 with
//!   the chunk, POST with the responses, 204).
//! - `idle`: the resident memory our server (a child process) holds for N open idle sessions
//!   (handshake done and one script fetched, the card then silent), from the growth of the
//!   child's VmRSS.
//!
//! Environment: `SCP81_BENCH_SECS` (per measurement, default 3), `SCP81_BENCH_ROUNDS` (default
//! 3, median reported), `SCP81_BENCH_SESSIONS` (default 10000).

use std::io::{BufRead, BufReader, Write as _};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openssl::ssl::SslConnector;
use otagw_https::admin::{self, AdminRequest};
use otagw_https::client::{self, ClientConfig, ResponseParser};
use otagw_https::server::{
    AdminServer, AdminSessions, PskDirectory, ScriptChunk, ServerConfig, TlsVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IDENTITY: &[u8] = b"bench-card";
const KEY: [u8; 16] = [0x5A; 16];

/// A 3-command RFM script (SELECT MF, SELECT EF ICCID, READ BINARY), expanded.
fn script() -> Vec<u8> {
    hex::decode("AE80220700A40004023F00220700A40004022FE2220500B000000A0000").unwrap_or_default()
}

fn response_script() -> Vec<u8> {
    hex::decode("AF80230C989400000000000020F690008001030000").unwrap_or_default()
}

struct Keys;
impl PskDirectory for Keys {
    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>> {
        (identity == IDENTITY).then(|| KEY.to_vec())
    }
}

/// One chunk per session: a POST without responses gets the chunk, a POST with responses
/// gets 204 (per connection, as the gateway's sessions do per card).
#[derive(Default)]
struct ChunkThenDone {
    answered: std::sync::Mutex<std::collections::HashSet<std::thread::ThreadId>>,
}
impl AdminSessions for ChunkThenDone {
    async fn next_chunk(&self, _identity: &[u8]) -> Option<ScriptChunk> {
        let done = self
            .answered
            .lock()
            .map(|mut a| a.remove(&std::thread::current().id()))
            .unwrap_or(false);
        (!done).then(|| ScriptChunk {
            script: script(),
            targeted_application: None,
            kind: Default::default(),
            reference: "step=1".into(),
        })
    }
    async fn record_responses(&self, _identity: &[u8], _request: &AdminRequest) {
        if let Ok(mut a) = self.answered.lock() {
            a.insert(std::thread::current().id());
        }
    }
}

#[derive(Clone, Copy)]
struct Suite {
    cipher: &'static str,
    version: TlsVersion,
    s_server_flag: &'static str,
}

const SUITES: [Suite; 3] = [
    Suite {
        cipher: "PSK-AES128-GCM-SHA256",
        version: TlsVersion::Tls12,
        s_server_flag: "-tls1_2",
    },
    Suite {
        cipher: "PSK-AES128-CBC-SHA256",
        version: TlsVersion::Tls12,
        s_server_flag: "-tls1_2",
    },
    Suite {
        cipher: "PSK-AES128-CBC-SHA",
        version: TlsVersion::Tls10,
        s_server_flag: "-tls1",
    },
];

fn client_config(suite: Suite) -> ClientConfig {
    ClientConfig {
        identity: IDENTITY.to_vec(),
        key: KEY.to_vec(),
        ciphers: suite.cipher.into(),
        min_version: suite.version,
        max_version: suite.version,
        host: "bench".into(),
        agent_id: "bench-agent".into(),
        uri: "/gp/admin".into(),
        chunked: false,
        io_timeout: Duration::from_secs(10),
    }
}

fn server_config(suite: Suite) -> ServerConfig {
    let mut c = ServerConfig::default();
    c.tls.ciphers = vec![suite.cipher.into()];
    c.tls.min_version = TlsVersion::Tls10;
    c.tls.max_version = TlsVersion::Tls12;
    // The bench keeps sessions open on purpose.
    c.idle_timeout = Duration::from_secs(900);
    c
}

/// Connect, handshake, one request, read the 200, close. `keep`: return the stream open.
async fn fetch_one(
    addr: SocketAddr,
    connector: &SslConnector,
    config: &ClientConfig,
    request: &[u8],
) -> Result<tokio_openssl::SslStream<tokio::net::TcpStream>, String> {
    let mut s = client::connect(addr, connector, config.io_timeout)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(request).await.map_err(|e| e.to_string())?;
    let mut parser = ResponseParser::new(1 << 16);
    let mut buf = [0u8; 2048];
    loop {
        if let Some(r) = parser.next_response().map_err(|e| e.to_string())? {
            if r.status != 200 || r.body != script() {
                return Err(format!("unexpected answer {}", r.status));
            }
            return Ok(s);
        }
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed early".into());
        }
        parser.push(&buf[..n]);
    }
}

/// The whole one-chunk session against our server: POST, 200 + chunk, POST responses, 204.
async fn full_session(
    addr: SocketAddr,
    connector: &SslConnector,
    config: &ClientConfig,
) -> Result<(), String> {
    let mut s = fetch_one(
        addr,
        connector,
        config,
        &client::write_post(&client::Post {
            target: &config.uri,
            host: &config.host,
            agent_id: &config.agent_id,
            body: &[],
            kind: admin::ScriptKind::CardContent,
            script_status: None,
            resume: false,
            chunked: false,
        }),
    )
    .await?;
    let post = client::write_post(&client::Post {
        target: "/gp/admin?step=1",
        host: &config.host,
        agent_id: &config.agent_id,
        body: &response_script(),
        kind: admin::ScriptKind::CardContent,
        script_status: Some(&admin::ScriptStatus::Ok),
        resume: false,
        chunked: false,
    });
    s.write_all(&post).await.map_err(|e| e.to_string())?;
    let mut parser = ResponseParser::new(1 << 16);
    let mut buf = [0u8; 1024];
    loop {
        if let Some(r) = parser.next_response().map_err(|e| e.to_string())? {
            return if r.status == 204 {
                Ok(())
            } else {
                Err(format!("expected 204, got {}", r.status))
            };
        }
        let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed before 204".into());
        }
        parser.push(&buf[..n]);
    }
}

/// Runs `op` back to back for `secs` on `clients` concurrent clients: operations per second.
async fn rate<F, Fut>(secs: f64, clients: usize, op: F) -> f64
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                if let Err(e) = op().await {
                    eprintln!("operation failed: {e}");
                    return n;
                }
                n += 1;
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(44330)
}

struct SServer(std::process::Child, std::path::PathBuf);
impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = std::fs::remove_dir_all(&self.1);
    }
}

/// `openssl s_server` with the same PSK, serving our exact 200 response as a file (`-HTTP`).
async fn start_s_server(suite: Suite) -> Result<(SServer, SocketAddr), String> {
    let dir = std::env::temp_dir().join(format!("scp81-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let body = admin::write_script_response(
        "/gp/admin?step=1",
        None,
        admin::ScriptKind::CardContent,
        &script(),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("chunk"), body).map_err(|e| e.to_string())?;
    let port = free_port();
    let child = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "s_server",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-nocert",
            "-psk",
            &hex::encode(KEY),
            "-psk_identity",
            std::str::from_utf8(IDENTITY).unwrap_or("bench-card"),
            "-cipher",
            suite.cipher,
            suite.s_server_flag,
            "-HTTP",
            "-http_server_binmode",
            "-quiet",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("openssl s_server: {e}"))?;
    let guard = SServer(child, dir);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok((guard, addr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("s_server did not start".into())
}

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn rate_bench() {
    let secs = env_num("SCP81_BENCH_SECS", 3.0);
    let rounds = env_num("SCP81_BENCH_ROUNDS", 3.0) as usize;
    println!("## handshake + one admin exchange per second (loopback, {secs} s x {rounds} rounds, median)");
    println!("| suite | clients | ours: fetch | s_server: fetch | ratio | ours: whole one-chunk session |");
    println!("|---|---|---|---|---|---|");
    for (suite_index, suite) in SUITES.iter().copied().enumerate() {
        let config = Arc::new(client_config(suite));
        let connector = Arc::new(match client::connector(&config) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", suite.cipher);
                continue;
            }
        });
        let Some((child, ours)) = spawn_server_child(suite_index) else {
            return;
        };
        let (s_server, theirs) = match start_s_server(suite).await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{e}");
                return;
            }
        };
        let post = Arc::new(client::write_post(&client::Post {
            target: &config.uri,
            host: &config.host,
            agent_id: &config.agent_id,
            body: &[],
            kind: admin::ScriptKind::CardContent,
            script_status: None,
            resume: false,
            chunked: false,
        }));
        let get = Arc::new(b"GET /chunk HTTP/1.0\r\n\r\n".to_vec());
        for clients in [1usize, 4] {
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let (cn, cf, rq) = (connector.clone(), config.clone(), post.clone());
                a.push(
                    rate(secs, clients, move || {
                        let (cn, cf, rq) = (cn.clone(), cf.clone(), rq.clone());
                        async move { fetch_one(ours, &cn, &cf, &rq).await.map(|_| ()) }
                    })
                    .await,
                );
                let (cn, cf, rq) = (connector.clone(), config.clone(), get.clone());
                b.push(
                    rate(secs, clients, move || {
                        let (cn, cf, rq) = (cn.clone(), cf.clone(), rq.clone());
                        async move { fetch_one(theirs, &cn, &cf, &rq).await.map(|_| ()) }
                    })
                    .await,
                );
                let (cn, cf) = (connector.clone(), config.clone());
                c.push(
                    rate(secs, clients, move || {
                        let (cn, cf) = (cn.clone(), cf.clone());
                        async move { full_session(ours, &cn, &cf).await }
                    })
                    .await,
                );
            }
            let (a, b, c) = (median(a), median(b), median(c));
            println!(
                "| {} {:?} | {clients} | {a:.0}/s | {b:.0}/s | {:.2} | {c:.0}/s |",
                suite.cipher,
                suite.version,
                if b > 0.0 { a / b } else { 0.0 }
            );
        }
        drop(s_server);
        drop(child);
    }
}

fn vm_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Our server in a child process (as s_server is), stopped when dropped.
struct ServerChild(std::process::Child);
impl Drop for ServerChild {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.0.wait();
    }
}

fn spawn_server_child(suite_index: usize) -> Option<(ServerChild, SocketAddr)> {
    let exe = std::env::current_exe().ok()?;
    let mut child = Command::new(exe)
        .args(["--server-child", &suite_index.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| eprintln!("child: {e}"))
        .ok()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let guard = ServerChild(child);
    let port = line
        .trim()
        .parse::<u16>()
        .map_err(|_| eprintln!("child said {line:?}"))
        .ok()?;
    Some((guard, SocketAddr::from(([127, 0, 0, 1], port))))
}

/// The child: our server on a free port (printed on stdout), until stdin closes.
fn server_child(suite: Suite) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    rt.block_on(async {
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            return;
        };
        let Ok(addr) = listener.local_addr() else {
            return;
        };
        let Ok(server) = AdminServer::new(
            server_config(suite),
            Arc::new(Keys),
            Arc::new(ChunkThenDone::default()),
        ) else {
            return;
        };
        tokio::spawn(Arc::new(server).serve(listener));
        println!("{}", addr.port());
        let _ = std::io::stdout().flush();
        // Until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await;
    });
}

async fn idle_bench() {
    let n = env_num("SCP81_BENCH_SESSIONS", 10_000.0) as usize;
    let Some((child, addr)) = spawn_server_child(0) else {
        return;
    };
    let pid = child.0.id();
    let config = client_config(SUITES[0]);
    let Ok(connector) = client::connector(&config) else {
        return;
    };
    let post = client::write_post(&client::Post {
        target: &config.uri,
        host: &config.host,
        agent_id: &config.agent_id,
        body: &[],
        kind: admin::ScriptKind::CardContent,
        script_status: None,
        resume: false,
        chunked: false,
    });
    // Warm up (allocator arenas, OpenSSL tables), then the baseline.
    for _ in 0..200 {
        let _ = fetch_one(addr, &connector, &config, &post).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = vm_rss_kib(pid).unwrap_or(0);
    let started = Instant::now();
    let mut open = Vec::with_capacity(n);
    for i in 0..n {
        match fetch_one(addr, &connector, &config, &post).await {
            Ok(s) => open.push(s),
            Err(e) => {
                eprintln!("session {i}: {e}");
                break;
            }
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = vm_rss_kib(pid).unwrap_or(0);
    let per = (after.saturating_sub(before)) as f64 / open.len().max(1) as f64;
    println!("## memory of idle sessions (our server in a child process, VmRSS)");
    println!(
        "{} sessions open (handshake + one script fetched, then idle) in {:.1} s: server VmRSS {} KiB -> {} KiB, {:.1} KiB per idle session",
        open.len(),
        took.as_secs_f64(),
        before,
        after,
        per
    );
    drop(open);
    drop(child);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--server-child") {
        let suite = args
            .get(i + 1)
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| SUITES.get(n).copied())
            .unwrap_or(SUITES[0]);
        server_child(suite);
        return;
    }
    let mode = args
        .iter()
        .find(|a| matches!(a.as_str(), "rate" | "idle" | "all"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            return;
        }
    };
    rt.block_on(async {
        if mode == "rate" || mode == "all" {
            rate_bench().await;
        }
        if mode == "idle" || mode == "all" {
            idle_bench().await;
        }
    });
}
