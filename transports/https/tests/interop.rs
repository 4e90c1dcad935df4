//! `openssl s_client` plays the card against our PSK-TLS admin server.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw_https::admin::AdminRequest;
use otagw_https::server::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f";
const IDENTITY: &str = "8944501234567890123";
// SELECT MF then READ BINARY, expanded format (AE 80 ... 00 00).
const SCRIPT: &[u8] = &[
    0xAE, 0x80, 0x22, 0x07, 0x00, 0xA4, 0x00, 0x04, 0x02, 0x3F, 0x00, 0x22, 0x05, 0x00, 0xB0, 0x00,
    0x00, 0x0A, 0x00, 0x00,
];
const RESPONSES: &[u8] = &[
    0xAF, 0x80, 0x23, 0x02, 0x90, 0x00, 0x23, 0x0C, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
    0x09, 0x0A, 0x90, 0x00, 0x00, 0x00,
];

struct Keys;
impl PskDirectory for Keys {
    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>> {
        (identity == IDENTITY.as_bytes()).then(|| hex::decode(KEY_HEX).unwrap())
    }
}

#[derive(Default)]
struct Sessions {
    queue: Mutex<HashMap<Vec<u8>, VecDeque<ScriptChunk>>>,
    recorded: Mutex<Vec<(Vec<u8>, AdminRequest)>>,
}
impl AdminSessions for Sessions {
    async fn next_chunk(&self, identity: &[u8]) -> Option<ScriptChunk> {
        self.queue.lock().unwrap().get_mut(identity)?.pop_front()
    }
    async fn record_responses(&self, identity: &[u8], request: &AdminRequest) {
        self.recorded
            .lock()
            .unwrap()
            .push((identity.to_vec(), request.clone()));
    }
}

fn sessions_with_one_chunk() -> Arc<Sessions> {
    let s = Sessions::default();
    s.queue.lock().unwrap().insert(
        IDENTITY.as_bytes().to_vec(),
        VecDeque::from([ScriptChunk {
            script: SCRIPT.to_vec(),
            targeted_application: None,
            kind: Default::default(),
            reference: "step=1".into(),
        }]),
    );
    Arc::new(s)
}

async fn server(sessions: Arc<Sessions>) -> (Arc<AdminServer<Sessions>>, TcpListener, u16) {
    let config = ServerConfig {
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(10),
        ..ServerConfig::default()
    };
    let server = Arc::new(AdminServer::new(config, Arc::new(Keys), sessions).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (server, listener, port)
}

fn s_client(port: u16, key: &str, identity: &str, version: &str, cipher: &str) -> Child {
    Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("127.0.0.1:{port}"),
            "-psk",
            key,
            "-psk_identity",
            identity,
            version,
            "-cipher",
            cipher,
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl CLI")
}

/// Reads one HTTP response (Content-Length framed or 204) from s_client's stdout.
async fn read_response(
    out: &mut tokio::process::ChildStdout,
    buf: &mut Vec<u8>,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(buf).unwrap() {
            let code = resp.code.unwrap();
            let hs: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let len = hs
                .iter()
                .find(|(k, _)| k == "Content-Length")
                .map(|(_, v)| v.parse::<usize>().unwrap())
                .unwrap_or(0);
            if buf.len() >= n + len {
                let body = buf[n..n + len].to_vec();
                buf.drain(..n + len);
                return (code, hs, body);
            }
        }
        let mut tmp = [0u8; 4096];
        let k = tokio::time::timeout(Duration::from_secs(10), out.read(&mut tmp))
            .await
            .expect("response in time")
            .unwrap();
        assert!(
            k > 0,
            "s_client closed; got {:?}",
            String::from_utf8_lossy(buf)
        );
        buf.extend_from_slice(&tmp[..k]);
    }
}

fn header<'a>(hs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    hs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// The whole card side: first POST, script, responses (chunked), 204.
async fn run_card_session(version: &str, cipher: &str, expect_version: &str, expect_cipher: &str) {
    let sessions = sessions_with_one_chunk();
    let (server, listener, port) = server(sessions.clone()).await;
    let mut card = s_client(port, KEY_HEX, IDENTITY, version, cipher);
    let (tcp, peer) = listener.accept().await.unwrap();
    let srv = server.clone();
    let handle = tokio::spawn(async move { srv.handle(tcp, peer).await });

    let mut stdin = card.stdin.take().unwrap();
    let mut stdout = card.stdout.take().unwrap();
    let first = "POST /gp/admin/trigger HTTP/1.1\r\nHost: ota.test\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nX-Admin-From: //se-id/iccid/8944501234567890123\r\nContent-Length: 0\r\n\r\n";
    stdin.write_all(first.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    let mut buf = Vec::new();
    let (code, hs, body) = read_response(&mut stdout, &mut buf).await;
    assert_eq!(code, 200);
    assert_eq!(body, SCRIPT);
    let names: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "X-Admin-Protocol",
            "X-Admin-Next-URI",
            "Content-Type",
            "Content-Length"
        ]
    );
    assert_eq!(
        header(&hs, "Content-Type"),
        Some("application/vnd.globalplatform.card-content-mgt;version=1.0")
    );
    let next = header(&hs, "X-Admin-Next-URI").unwrap().to_string();
    assert_eq!(next, "/gp/admin?step=1");

    let mut second = format!(
        "POST {next} HTTP/1.1\r\nHost: ota.test\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nX-Admin-From: //se-id/iccid/8944501234567890123\r\nX-Admin-Script-Status: ok\r\nContent-Type: application/vnd.globalplatform.card-content-mgt-response;version=1.0\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n",
        RESPONSES.len()
    )
    .into_bytes();
    second.extend_from_slice(RESPONSES);
    second.extend_from_slice(b"\r\n0\r\n\r\n");
    stdin.write_all(&second).await.unwrap();
    stdin.flush().await.unwrap();
    let (code, hs, body) = read_response(&mut stdout, &mut buf).await;
    assert_eq!(code, 204);
    assert!(body.is_empty());
    assert_eq!(hs.len(), 1);
    assert_eq!(
        header(&hs, "X-Admin-Protocol"),
        Some("globalplatform-remote-admin/1.0")
    );

    let outcome = tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(outcome.completed);
    assert_eq!(outcome.requests, 2);
    assert_eq!(outcome.identity, IDENTITY.as_bytes());
    assert_eq!(outcome.tls_version, expect_version);
    assert_eq!(outcome.cipher, expect_cipher);
    let recorded = sessions.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].0, IDENTITY.as_bytes());
    assert_eq!(recorded[0].1.body, RESPONSES);
    assert_eq!(recorded[0].1.target, "/gp/admin?step=1");
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), card.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "s_client exit {status:?}");
    let stats = server.stats();
    assert_eq!(ServerStats::get(&stats.handshakes), 1);
    assert_eq!(ServerStats::get(&stats.sessions_completed), 1);
}

#[tokio::test]
async fn session_tls12_psk_aes128_gcm_sha256() {
    run_card_session(
        "-tls1_2",
        "PSK-AES128-GCM-SHA256",
        "TLSv1.2",
        "PSK-AES128-GCM-SHA256",
    )
    .await;
}

#[tokio::test]
async fn session_tls12_psk_aes128_cbc_sha256() {
    run_card_session(
        "-tls1_2",
        "PSK-AES128-CBC-SHA256",
        "TLSv1.2",
        "PSK-AES128-CBC-SHA256",
    )
    .await;
}

#[tokio::test]
async fn session_tls12_psk_aes128_cbc_sha() {
    run_card_session(
        "-tls1_2",
        "PSK-AES128-CBC-SHA",
        "TLSv1.2",
        "PSK-AES128-CBC-SHA",
    )
    .await;
}

#[tokio::test]
async fn session_tls11_psk_aes128_cbc_sha() {
    run_card_session(
        "-tls1_1",
        "PSK-AES128-CBC-SHA",
        "TLSv1.1",
        "PSK-AES128-CBC-SHA",
    )
    .await;
}

#[tokio::test]
async fn session_tls10_psk_aes128_cbc_sha() {
    run_card_session("-tls1", "PSK-AES128-CBC-SHA", "TLSv1", "PSK-AES128-CBC-SHA").await;
}

async fn failing_handshake(key: &str, identity: &str) -> Arc<ServerStats> {
    let (server, listener, port) = server(sessions_with_one_chunk()).await;
    let mut card = s_client(port, key, identity, "-tls1_2", "PSK-AES128-GCM-SHA256");
    let (tcp, peer) = listener.accept().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), server.handle(tcp, peer))
        .await
        .unwrap();
    assert!(
        matches!(result, Err(SessionError::Handshake(_))),
        "{result:?}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), card.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success());
    let stats = server.stats();
    assert_eq!(ServerStats::get(&stats.handshakes), 0);
    assert_eq!(ServerStats::get(&stats.handshake_failures), 1);
    stats
}

#[tokio::test]
async fn wrong_psk_fails_handshake() {
    let stats = failing_handshake("ffffffffffffffffffffffffffffffff", IDENTITY).await;
    assert_eq!(ServerStats::get(&stats.unknown_identity), 0);
}

#[tokio::test]
async fn unknown_identity_fails_handshake() {
    let stats = failing_handshake(KEY_HEX, "8944000000000000000").await;
    assert_eq!(ServerStats::get(&stats.unknown_identity), 1);
}

#[tokio::test]
async fn tls12_only_config_refuses_tls10() {
    let config = ServerConfig {
        tls: TlsConfig {
            min_version: TlsVersion::Tls12,
            ..TlsConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = AdminServer::new(config, Arc::new(Keys), sessions_with_one_chunk()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut card = s_client(port, KEY_HEX, IDENTITY, "-tls1", "PSK-AES128-CBC-SHA");
    let (tcp, peer) = listener.accept().await.unwrap();
    assert!(matches!(
        server.handle(tcp, peer).await,
        Err(SessionError::Handshake(_))
    ));
    let _ = card.wait().await;
}

#[tokio::test]
async fn malformed_request_gets_400_and_close() {
    let (server, listener, port) = server(sessions_with_one_chunk()).await;
    let mut card = s_client(port, KEY_HEX, IDENTITY, "-tls1_2", "PSK-AES128-GCM-SHA256");
    let (tcp, peer) = listener.accept().await.unwrap();
    let srv = server.clone();
    let handle = tokio::spawn(async move { srv.handle(tcp, peer).await });
    let mut stdin = card.stdin.take().unwrap();
    let mut stdout = card.stdout.take().unwrap();
    stdin
        .write_all(b"POST / HTTP/1.1\r\nX-Admin-From: x\r\n\r\n")
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let mut buf = Vec::new();
    let (code, hs, _) = read_response(&mut stdout, &mut buf).await;
    assert_eq!(code, 400);
    assert_eq!(header(&hs, "Connection"), Some("close"));
    let r = handle.await.unwrap();
    assert!(matches!(r, Err(SessionError::BadRequest(_))), "{r:?}");
    assert_eq!(ServerStats::get(&server.stats().bad_requests), 1);
}

#[tokio::test]
async fn silent_tcp_client_hits_handshake_timeout() {
    let config = ServerConfig {
        handshake_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let server = AdminServer::new(config, Arc::new(Keys), sessions_with_one_chunk()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tcp, peer) = listener.accept().await.unwrap();
    assert!(matches!(
        server.handle(tcp, peer).await,
        Err(SessionError::Timeout)
    ));
    assert_eq!(ServerStats::get(&server.stats().timeouts), 1);
}

#[tokio::test]
async fn slow_card_hits_idle_timeout() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let server = AdminServer::new(config, Arc::new(Keys), sessions_with_one_chunk()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut card = s_client(port, KEY_HEX, IDENTITY, "-tls1_2", "PSK-AES128-GCM-SHA256");
    let (tcp, peer) = listener.accept().await.unwrap();
    let mut stdin = card.stdin.take().unwrap();
    // Half a request head, then nothing.
    stdin
        .write_all(b"POST / HTTP/1.1\r\nX-Admin-Pro")
        .await
        .unwrap();
    stdin.flush().await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), server.handle(tcp, peer))
        .await
        .unwrap();
    assert!(matches!(r, Err(SessionError::Timeout)), "{r:?}");
    assert_eq!(ServerStats::get(&server.stats().handshakes), 1);
}

/// Runs `openssl s_client` (with extra arguments) against `port` for one POST and its answer,
/// then closes; returns what it printed (stdout and stderr).
async fn s_client_one_post(port: u16, extra: &[&str]) -> String {
    let mut args = vec![
        "s_client".to_string(),
        "-connect".into(),
        format!("127.0.0.1:{port}"),
        "-psk".into(),
        KEY_HEX.into(),
        "-psk_identity".into(),
        IDENTITY.into(),
        "-ign_eof".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut card = Command::new("openssl")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl CLI");
    let mut stdin = card.stdin.take().unwrap();
    let first = "POST /gp/admin HTTP/1.1\r\nHost: ota.test\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nX-Admin-From: a\r\n\r\n";
    stdin.write_all(first.as_bytes()).await.unwrap();
    stdin.flush().await.unwrap();
    // The server answers 204 (nothing queued) and closes; s_client then ends.
    let out = tokio::time::timeout(Duration::from_secs(10), card.wait_with_output())
        .await
        .expect("s_client ends")
        .expect("s_client output");
    drop(stdin);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Cards may abort on a NewSessionTicket and SGP.02 rules resumption out: s_client, offering
/// the SessionTicket extension, gets no ticket and no session id, so it has no session to
/// resume (it writes `-sess_out` only for a resumable one).
#[tokio::test]
async fn no_session_ticket_and_no_resumption() {
    let (server, listener, port) = server(Arc::new(Sessions::default())).await;
    let serving = tokio::spawn(server.clone().serve(listener));
    let dir = std::env::temp_dir().join(format!("otagw-sess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sess = dir.join("session.pem");
    let sess = sess.to_str().unwrap();
    for version in ["-tls1_2", "-tls1"] {
        let cipher = if version == "-tls1" {
            "PSK-AES128-CBC-SHA"
        } else {
            "PSK-AES128-GCM-SHA256"
        };
        let first = s_client_one_post(port, &[version, "-cipher", cipher, "-sess_out", sess]).await;
        assert!(first.contains("HTTP/1.1 204"), "{first}");
        assert!(first.contains("New, "), "{first}");
        assert!(
            !first.contains("TLS session ticket"),
            "a session ticket came with {version}: {first}"
        );
        // No session id either (no server cache): the session cannot be resumed, so
        // s_client has nothing to write to -sess_out.
        let id = first
            .lines()
            .find_map(|l| l.trim().strip_prefix("Session-ID:"))
            .map(str::trim);
        assert_eq!(id, Some(""), "{first}");
        assert!(
            !std::path::Path::new(sess).exists(),
            "s_client saved a resumable session: {first}"
        );
    }
    serving.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads TLS records (type, length) from a byte stream, as far as they are complete.
fn tls_records(bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() {
        let len = usize::from(u16::from_be_bytes([bytes[i + 3], bytes[i + 4]]));
        out.push((bytes[i], len));
        i += 5 + len;
    }
    out
}

/// On TLS 1.0 CBC suites OpenSSL may put an empty-fragment record before each write (the
/// BEAST countermeasure); cards expect a response in one record. A relay between s_client and
/// the server counts the server's application-data records: one per response.
#[tokio::test]
async fn tls10_cbc_responses_come_in_one_record_each() {
    let (server, listener, port) = server(Arc::new(Sessions::default())).await;
    let serving = tokio::spawn(server.clone().serve(listener));
    let relay = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let cap = captured.clone();
    let relaying = tokio::spawn(async move {
        let (mut card, _) = relay.accept().await.unwrap();
        let mut srv = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut cr, mut cw) = card.split();
        let (mut sr, mut sw) = srv.split();
        let up = tokio::io::copy(&mut cr, &mut sw);
        let down = async {
            let mut buf = [0u8; 4096];
            loop {
                let n = sr.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    let _ = cw.shutdown().await;
                    break;
                }
                cap.lock().unwrap().extend_from_slice(&buf[..n]);
                if cw.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::join!(up, down);
    });
    let out = s_client_one_post(relay_port, &["-tls1", "-cipher", "PSK-AES128-CBC-SHA"]).await;
    assert!(out.contains("HTTP/1.1 204"), "{out}");
    let _ = tokio::time::timeout(Duration::from_secs(5), relaying).await;
    serving.abort();
    let bytes = captured.lock().unwrap().clone();
    let records = tls_records(&bytes);
    assert!(
        records.iter().any(|(t, _)| *t == 0x14),
        "no ChangeCipherSpec: {records:?}"
    );
    // After the handshake, the server wrote one response (the 204 that ends the session): one
    // application-data record, not an empty one before it.
    let app: Vec<usize> = records
        .iter()
        .filter(|(t, _)| *t == 0x17)
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(app.len(), 1, "application-data records {app:?}");
}
