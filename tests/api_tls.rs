//! The northbound API over TLS with the development pair in `certs/`: rustls clients (reqwest)
//! and the OpenSSL CLI accept it when they trust `certs/dev-ca.pem`, and refuse it otherwise;
//! configuration errors name the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use otagw::api::tls::{serve_tls, server_config, TlsError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn certs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs")
}

fn dev_pair() -> (PathBuf, PathBuf) {
    (
        certs().join("dev-server.pem"),
        certs().join("dev-server.key"),
    )
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start() -> Server {
        let (cert, key) = dev_pair();
        let config = server_config(&cert, &key).expect("dev pair loads");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let router =
            Router::new()
                .route("/health", get(|| async { "ok" }))
                .route(
                    "/peer",
                    get(
                        |axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<
                            SocketAddr,
                        >| async move { peer.ip().to_string() },
                    ),
                );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_tls(listener, config, router, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops after shutdown")
            .expect("server task");
        result.expect("serve_tls returns Ok");
    }
}

fn trusting_client() -> reqwest::Client {
    let ca = std::fs::read(certs().join("dev-ca.pem")).expect("read dev CA");
    let ca = reqwest::Certificate::from_pem(&ca).expect("dev CA parses");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

#[tokio::test]
async fn client_trusting_the_dev_ca_gets_200_by_name_and_by_ip() {
    let server = Server::start().await;
    let port = server.addr.port();

    // By name (SAN DNS:localhost), resolved to the IPv4 listener.
    let ca = std::fs::read(certs().join("dev-ca.pem")).expect("read dev CA");
    let by_name = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
        .resolve("localhost", server.addr)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let response = by_name
        .get(format!("https://localhost:{port}/health"))
        .send()
        .await
        .expect("https request by name");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "ok");

    // By address (SAN IP:127.0.0.1); the handler sees the client's address.
    let response = trusting_client()
        .get(format!("https://127.0.0.1:{port}/peer"))
        .send()
        .await
        .expect("https request by IP");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.expect("body"), "127.0.0.1");

    server.shutdown().await;
}

#[tokio::test]
async fn client_without_the_dev_ca_is_refused() {
    let server = Server::start().await;
    let port = server.addr.port();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let err = client
        .get(format!("https://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(err.is_connect(), "not a connect error: {err:?}");
    let chain = format!("{err:?}");
    assert!(
        chain.contains("UnknownIssuer") || chain.contains("certificate"),
        "not a certificate error: {chain}"
    );

    // The server shrugs off the failed handshake and keeps serving.
    let response = trusting_client()
        .get(format!("https://127.0.0.1:{port}/health"))
        .send()
        .await
        .expect("https after a refused handshake");
    assert_eq!(response.status(), 200);
    server.shutdown().await;
}

#[tokio::test]
async fn openssl_cli_verifies_the_chain_and_ip() {
    let server = Server::start().await;
    let connect = format!("127.0.0.1:{}", server.addr.port());
    let ca = certs().join("dev-ca.pem");
    let child = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-servername", "localhost"])
        .arg("-CAfile")
        .arg(&ca)
        .args(["-verify_ip", "127.0.0.1", "-verify_return_error"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the openssl CLI must be installed (Debian package openssl)");
    let output = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("openssl s_client finishes")
        .expect("openssl s_client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("Verify return code: 0 (ok)"),
        "openssl s_client did not verify the chain:\n{stdout}\n{stderr}"
    );
    assert!(
        output.status.success(),
        "openssl s_client failed:\n{stderr}"
    );

    // And without the CA it reports the chain unverifiable.
    let output = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &connect])
        .arg("-CApath")
        .arg(std::env::temp_dir().join("otagw-no-such-ca-dir"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(20), output)
        .await
        .expect("openssl s_client finishes")
        .expect("openssl s_client output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !stdout.contains("Verify return code: 0 (ok)"),
        "openssl verified the chain without the dev CA:\n{stdout}"
    );

    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_the_server_and_closes_the_port() {
    let server = Server::start().await;
    let addr = server.addr;
    server.shutdown().await;
    let err = trusting_client()
        .get(format!("https://127.0.0.1:{}/health", addr.port()))
        .send()
        .await
        .expect_err("nothing listens after shutdown");
    assert!(err.is_connect(), "{err:?}");
}

fn scratch(name: &str, content: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("api_tls");
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write scratch file");
    path
}

#[test]
fn missing_file_is_named() {
    let (cert, key) = dev_pair();
    let missing = certs().join("no-such-file.pem");

    let err = server_config(&missing, &key).expect_err("missing certificate file");
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-file.pem"), "{err}");

    let err = server_config(&cert, &missing).expect_err("missing key file");
    assert!(matches!(err, TlsError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-file.pem"), "{err}");
}

#[test]
fn file_without_a_key_is_named() {
    let (cert, _) = dev_pair();
    // The certificate given as the key.
    let err = server_config(&cert, &cert).expect_err("no key in a certificate file");
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("dev-server.pem") && text.contains("no private key"),
        "{text}"
    );

    let empty = scratch("empty.key", b"");
    let err = server_config(&cert, &empty).expect_err("empty key file");
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err:?}");
    assert!(err.to_string().contains("empty.key"), "{err}");
}

#[test]
fn file_without_a_certificate_is_named() {
    let (_, key) = dev_pair();
    let err = server_config(&key, &key).expect_err("no certificate in a key file");
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("dev-server.key") && text.contains("no certificate"),
        "{text}"
    );

    let junk = scratch("junk.pem", b"this is not PEM\n");
    let err = server_config(&junk, &key).expect_err("junk certificate file");
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.pem"), "{err}");
}

#[test]
fn key_of_another_certificate_is_refused() {
    let (_, key) = dev_pair();
    // The CA's certificate with the server's key.
    let ca = certs().join("dev-ca.pem");
    let err = server_config(&ca, &key).expect_err("mismatched pair");
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("dev-server.key") && text.contains("dev-ca.pem"),
        "{text}"
    );
}

#[test]
fn encrypted_key_is_explained() {
    let (cert, _) = dev_pair();
    let encrypted = scratch(
        "encrypted.key",
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIGbMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAgAAAAAAAAAAAICCAAw\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = server_config(&cert, &encrypted).expect_err("encrypted key");
    let text = err.to_string();
    assert!(
        text.contains("encrypted.key") && text.contains("encrypted"),
        "{text}"
    );
}

#[test]
fn dev_pair_loads_with_alpn() {
    let (cert, key) = dev_pair();
    let config = server_config(&cert, &key).expect("dev pair loads");
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}
