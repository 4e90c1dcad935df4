//! An in-process OpenSSL PSK client plays the card through a multi-chunk session.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use otagw_https::admin::{AdminRequest, ScriptStatus};
use otagw_https::server::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_openssl::SslStream;

const KEY: [u8; 16] = [0x11; 16];

struct Keys;
impl PskDirectory for Keys {
    fn key_for(&self, identity: &[u8]) -> Option<Vec<u8>> {
        (identity == b"card-7").then(|| KEY.to_vec())
    }
}

struct Sessions {
    chunks: Mutex<VecDeque<ScriptChunk>>,
    recorded: Mutex<Vec<AdminRequest>>,
}
impl AdminSessions for Sessions {
    async fn next_chunk(&self, _identity: &[u8]) -> Option<ScriptChunk> {
        self.chunks.lock().unwrap().pop_front()
    }
    async fn record_responses(&self, _identity: &[u8], request: &AdminRequest) {
        self.recorded.lock().unwrap().push(request.clone());
    }
}

async fn connect(port: u16, identity: &'static [u8], key: [u8; 16]) -> SslStream<TcpStream> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
    b.set_cipher_list("PSK-AES128-CBC-SHA256").unwrap();
    b.set_psk_client_callback(move |_ssl, _hint, id_out, key_out| {
        id_out[..identity.len()].copy_from_slice(identity);
        id_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .verify_hostname(false)
        .into_ssl("x")
        .unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut s = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut s).connect().await.unwrap();
    s
}

async fn exchange(s: &mut SslStream<TcpStream>, request: &[u8]) -> Vec<u8> {
    s.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(&got) {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name == "Content-Length")
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .unwrap()
                        .parse::<usize>()
                        .unwrap()
                })
                .unwrap_or(0);
            if got.len() >= n + len {
                return got;
            }
        }
        let k = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(k > 0);
        got.extend_from_slice(&buf[..k]);
    }
}

fn post(target: &str, extra: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {target} HTTP/1.1\r\nHost: h\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nX-Admin-From: agent-7\r\n{extra}"
    )
    .into_bytes();
    if body.is_empty() {
        r.extend_from_slice(b"\r\n");
    } else {
        r.extend_from_slice(
            format!("Content-Type: application/vnd.globalplatform.card-content-mgt-response;version=1.0\r\nContent-Length: {}\r\n\r\n", body.len())
                .as_bytes(),
        );
        r.extend_from_slice(body);
    }
    r
}

#[tokio::test]
async fn two_chunks_targeted_application_resume_and_script_status() {
    let sessions = Arc::new(Sessions {
        chunks: Mutex::new(VecDeque::from([
            ScriptChunk {
                script: vec![0xAE, 0x80, 0x22, 0x01, 0x00, 0x00, 0x00],
                targeted_application: None,
                kind: Default::default(),
                reference: "step=1".into(),
            },
            ScriptChunk {
                script: vec![0xAE, 0x80, 0x22, 0x01, 0x01, 0x00, 0x00],
                targeted_application: Some("//aid/A000000151/53504300".into()),
                kind: Default::default(),
                reference: "step=2".into(),
            },
        ])),
        recorded: Mutex::new(Vec::new()),
    });
    let config = ServerConfig {
        next_uri_path: "/ota?card=7".into(),
        ..ServerConfig::default()
    };
    let server = Arc::new(AdminServer::new(config, Arc::new(Keys), sessions.clone()).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let srv = server.clone();
    let task = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        srv.handle(tcp, peer).await
    });

    let mut s = connect(port, b"card-7", KEY).await;
    let r1 = exchange(&mut s, &post("/ota/start", "X-Admin-Resume: true\r\n", &[])).await;
    let t1 = String::from_utf8_lossy(&r1);
    assert!(t1.starts_with("HTTP/1.1 200 OK\r\n"), "{t1}");
    assert!(t1.contains("\r\nX-Admin-Next-URI: /ota?card=7&step=1\r\n"));
    assert!(!t1.contains("X-Admin-Targeted-Application"));

    let r2 = exchange(
        &mut s,
        &post(
            "/ota?card=7&step=1",
            "X-Admin-Script-Status: ok\r\n",
            &[0xAF, 0x80, 0x23, 0x02, 0x90, 0x00, 0x00, 0x00],
        ),
    )
    .await;
    let t2 = String::from_utf8_lossy(&r2);
    assert!(
        t2.contains("\r\nX-Admin-Next-URI: /ota?card=7&step=2\r\n"),
        "{t2}"
    );
    assert!(t2.contains("\r\nX-Admin-Targeted-Application: //aid/A000000151/53504300\r\n"));
    assert!(r2.ends_with(&[0xAE, 0x80, 0x22, 0x01, 0x01, 0x00, 0x00]));

    // The targeted application is unknown to the card: status without a body is recorded too.
    let r3 = exchange(
        &mut s,
        &post(
            "/ota?card=7&step=2",
            "X-Admin-Script-Status: unknown-application\r\n",
            &[],
        ),
    )
    .await;
    assert!(r3.starts_with(b"HTTP/1.1 204 No Content\r\n"));

    let outcome = task.await.unwrap().unwrap();
    assert!(outcome.completed);
    assert_eq!(outcome.requests, 3);
    assert_eq!(outcome.cipher, "PSK-AES128-CBC-SHA256");
    let recorded = sessions.recorded.lock().unwrap().clone();
    assert_eq!(recorded.len(), 2);
    assert_eq!(
        recorded[0].body,
        [0xAF, 0x80, 0x23, 0x02, 0x90, 0x00, 0x00, 0x00]
    );
    assert_eq!(
        recorded[1].script_status,
        Some(ScriptStatus::UnknownApplication)
    );
    assert!(recorded[1].body.is_empty());
}

#[tokio::test]
async fn card_dropping_mid_session_is_reported() {
    let sessions = Arc::new(Sessions {
        chunks: Mutex::new(VecDeque::from([ScriptChunk {
            script: vec![0xAE, 0x80, 0x00, 0x00],
            targeted_application: None,
            kind: Default::default(),
            reference: "step=1".into(),
        }])),
        recorded: Mutex::new(Vec::new()),
    });
    let server = Arc::new(
        AdminServer::new(ServerConfig::default(), Arc::new(Keys), sessions.clone()).unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let srv = server.clone();
    let task = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        srv.handle(tcp, peer).await
    });
    let mut s = connect(port, b"card-7", KEY).await;
    exchange(&mut s, &post("/a", "", &[])).await;
    // Half of the next request, then the card goes away.
    s.write_all(b"POST /gp/admin?step=1 HTTP/1.1\r\nX-Admin-")
        .await
        .unwrap();
    drop(s);
    let r = task.await.unwrap();
    assert!(matches!(r, Err(SessionError::Truncated)), "{r:?}");
    assert!(sessions.recorded.lock().unwrap().is_empty());
}

#[tokio::test]
async fn card_closing_between_requests_without_close_notify() {
    let sessions = Arc::new(Sessions {
        chunks: Mutex::new(VecDeque::from([ScriptChunk {
            script: vec![0xAE, 0x80, 0x00, 0x00],
            targeted_application: None,
            kind: Default::default(),
            reference: "step=1".into(),
        }])),
        recorded: Mutex::new(Vec::new()),
    });
    let server = Arc::new(
        AdminServer::new(ServerConfig::default(), Arc::new(Keys), sessions.clone()).unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let srv = server.clone();
    let task = tokio::spawn(async move {
        let (tcp, peer) = listener.accept().await.unwrap();
        srv.handle(tcp, peer).await
    });
    let mut s = connect(port, b"card-7", KEY).await;
    exchange(&mut s, &post("/a", "", &[])).await;
    drop(s);
    let outcome = task.await.unwrap().unwrap();
    assert!(!outcome.completed);
    assert_eq!(outcome.requests, 1);
}

/// A server that answers the card's POSTs with canned bytes, over PSK-TLS.
async fn canned_server(answers: Vec<Vec<u8>>) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
    let acceptor = build_acceptor(
        &TlsConfig::default(),
        Arc::new(Keys),
        Arc::new(ServerStats::default()),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let ssl = openssl::ssl::Ssl::new(acceptor.context()).unwrap();
        let mut s = SslStream::new(ssl, tcp).unwrap();
        Pin::new(&mut s).accept().await.unwrap();
        let mut parser = otagw_https::admin::RequestParser::default();
        let mut targets = Vec::new();
        let mut buf = [0u8; 2048];
        for answer in answers {
            let request = loop {
                if let Some(r) = parser.next_request().unwrap() {
                    break r;
                }
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0, "the card closed before its POST");
                parser.push(&buf[..n]);
            };
            targets.push(format!("{} resume={}", request.target, request.resume));
            s.write_all(&answer).await.unwrap();
        }
        // The card ends the session: it closes instead of posting again.
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("the card closes")
            .unwrap_or(0);
        assert_eq!(n, 0, "the card posted again");
        targets
    });
    (port, task)
}

fn card(port: u16) -> (std::net::SocketAddr, otagw_https::client::ClientConfig) {
    (
        std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        otagw_https::client::ClientConfig {
            identity: b"card-7".to_vec(),
            key: KEY.to_vec(),
            ciphers: "PSK-AES128-CBC-SHA256".into(),
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls12,
            host: "h".into(),
            agent_id: "a".into(),
            uri: "/trigger".into(),
            chunked: true,
            io_timeout: Duration::from_secs(5),
        },
    )
}

struct Runs(u32);
impl otagw_https::client::CardAgent for Runs {
    fn execute(
        &mut self,
        _: otagw_https::client::ScriptRequest<'_>,
    ) -> otagw_https::client::AgentReply {
        self.0 += 1;
        otagw_https::client::AgentReply::Respond(
            vec![0xAF, 0x80, 0x23, 0x02, 0x90, 0x00, 0x00, 0x00],
            ScriptStatus::Ok,
        )
    }
}

/// Amendment B: a `200` without `X-Admin-Next-URI` carries the session's last script; the
/// agent runs it and the session ends (it does not treat the answer as an error).
#[tokio::test]
async fn a_200_without_next_uri_is_the_last_script() {
    let script = [
        0xAE, 0x80, 0x22, 0x05, 0x00, 0xA4, 0x00, 0x04, 0x00, 0x00, 0x00,
    ];
    let mut last = format!(
        "HTTP/1.1 200 OK\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\nContent-Type: application/vnd.globalplatform.card-content-mgt;version=1.0\r\nContent-Length: {}\r\n\r\n",
        script.len()
    )
    .into_bytes();
    last.extend_from_slice(&script);
    let (port, server) = canned_server(vec![last]).await;
    let (addr, config) = card(port);
    let connector = otagw_https::client::connector(&config).unwrap();
    let stream = otagw_https::client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .unwrap();
    let mut agent = Runs(0);
    let outcome = otagw_https::client::run_session(stream, &config, &mut agent, None)
        .await
        .expect("no error");
    assert!(outcome.completed, "{outcome:?}");
    assert_eq!((agent.0, outcome.posts, outcome.scripts), (1, 1, 1));
    assert_eq!(server.await.unwrap(), vec!["/trigger resume=false"]);
}

/// The card resumes where it left off: the first POST goes to the resume point's URI, with
/// `X-Admin-Resume: true`.
#[tokio::test]
async fn a_resumed_session_posts_to_the_last_uri_navigated() {
    let done =
        b"HTTP/1.1 204 No Content\r\nX-Admin-Protocol: globalplatform-remote-admin/1.0\r\n\r\n"
            .to_vec();
    let (port, server) = canned_server(vec![done]).await;
    let (addr, config) = card(port);
    let connector = otagw_https::client::connector(&config).unwrap();
    let stream = otagw_https::client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .unwrap();
    let resume = otagw_https::client::ResumePoint {
        uri: "/gp/admin?cmd=c1&chunk=3".into(),
        body: vec![0xAF, 0x80, 0x23, 0x02, 0x90, 0x00, 0x00, 0x00],
        status: Some(ScriptStatus::Ok),
        kind: otagw_https::admin::ScriptKind::RemoteFile,
    };
    let outcome = otagw_https::client::run_session(stream, &config, &mut Runs(0), Some(resume))
        .await
        .expect("no error");
    assert!(outcome.completed);
    assert_eq!(
        server.await.unwrap(),
        vec!["/gp/admin?cmd=c1&chunk=3 resume=true"]
    );
}
