//! HTTPS OTA (SCP81) end to end over loopback: a command with `"transport": "https"` is queued,
//! its trigger goes as an SCP80 SMS over SMPP through the SMSC simulator to the virtual card's
//! ISD, the card opens PSK-TLS to the gateway's admin server, runs the script chunks and posts
//! the R-APDUs, which complete the command in the store. Then the faults: wrong PSK, unknown
//! identity, a card dropping mid-script, malformed HTTP, slow clients, a second session.

use std::pin::Pin;
use std::time::Duration;

use otagw::config::HttpsSettings;
use otagw::devkit::{self, DevEnv, DevOptions};
use otagw::sim::https_client::CardTls;
use otagw_https::client::{self, ClientConfig};
use otagw_https::server::TlsVersion;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn https_settings() -> HttpsSettings {
    HttpsSettings {
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        window_secs: 2,
        handshake_timeout_secs: 2,
        idle_timeout_secs: 2,
        ..HttpsSettings::default()
    }
}

async fn env_with(backend: &str, https: HttpsSettings, attempts: u32) -> DevEnv {
    devkit::start_on(
        backend,
        DevOptions {
            cards: 3,
            attempts,
            https: Some(https),
            ..DevOptions::default()
        },
    )
    .await
    .expect("dev environment")
}

fn https_cmd(kind: &str, iccid: &str, tar: &str, data: Value) -> Value {
    json!({
        "type": kind,
        "target": {"iccid": iccid},
        "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": tar},
        "data": data,
        "transport": "https",
    })
}

async fn post_ok(env: &DevEnv, body: &Value) -> String {
    let (code, answer) = env.post("/api/v1/ota/commands", body).await.expect("post");
    assert_eq!(code, 202, "{answer}");
    answer["commandId"].as_str().expect("commandId").to_string()
}

async fn account_id(env: &DevEnv) -> String {
    env.server
        .store
        .account_by_name(&format!("demo-{}", DevOptions::default().gateway_id))
        .await
        .expect("store")
        .expect("the devkit account")
        .id
}

fn events(r: &Value) -> Vec<String> {
    r["events"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|x| x["kind"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn swapped_bcd(data: &str) -> String {
    hex::decode(data)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{:x}{:x}", b & 0x0F, b >> 4))
        .collect()
}

/// Uploads a sample load file with a Method component of `method_len` octets and installs it
/// over HTTPS on card `i` as instance F001020304050102; the command once done.
async fn install_over_https(env: &DevEnv, i: usize, method_len: usize) -> Value {
    let iccid = env.iccid(i).expect("card");
    let (code, up) = env
        .post_bytes(
            "/api/v1/applets?name=big",
            devkit::sample_load_file(method_len),
        )
        .await
        .expect("upload");
    assert_eq!(code, 201, "{up}");
    let applet = up["appletId"].as_str().unwrap_or_default().to_string();
    let id = post_ok(
        env,
        &https_cmd(
            "APP_INSTALL",
            &iccid,
            "000000",
            json!({"parameters": {"appletId": applet, "instanceAid": "F001020304050102"}}),
        ),
    )
    .await;
    env.wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done")
}

/// The applet instances on card `msisdn`.
fn instances(env: &DevEnv, msisdn: &str) -> Vec<String> {
    env.fleet
        .with_card(msisdn, |c| {
            c.registry()
                .applets()
                .iter()
                .map(|a| a.aid.to_string())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
}

const READ_ICCID: [&str; 3] = ["00A40004023F00", "00A40004022FE2", "00B000000A"];
/// Three commands that each work alone (the virtual card's RFM applet starts every script at
/// the MF, so a READ BINARY must not be split from its SELECT).
const SELECTS: [&str; 3] = ["00A40004023F00", "00A40004022FE2", "00A40004023F00"];

/// `PUT /api/v1/cards/{iccid}/scp81-keys`: versions 0x40-0x4F, hex, the card of the account,
/// identities unique.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp81_keys_over_rest() {
    let env = env_with("sqlite", https_settings(), 1).await;
    let iccid = env.iccid(0).expect("card");
    let other = env.iccid(1).expect("card");
    let path = format!("/api/v1/cards/{iccid}/scp81-keys");
    let body = |version: u8, identity: &str, key: &str| json!({"version": version, "identity": identity, "key": key});
    let key = "00112233445566778899AABBCCDDEEFF";
    let (code, r) = env.put(&path, &body(0x41, "6964", key)).await.expect("put");
    assert_eq!(code, 204, "{r}");
    let scp81 = env.server.store.scp81().expect("scp81 store");
    let got = scp81.psk(&iccid, 0x41).await.expect("store").expect("psk");
    assert_eq!(
        (got.identity, hex::encode_upper(got.key)),
        (b"id".to_vec(), key.to_string())
    );
    let (code, r) = env.put(&path, &body(0x01, "6964", key)).await.expect("put");
    assert_eq!((code, r["field"].as_str()), (422, Some("version")), "{r}");
    let (code, r) = env.put(&path, &body(0x41, "zz", key)).await.expect("put");
    assert_eq!((code, r["field"].as_str()), (422, Some("identity")), "{r}");
    let (code, r) = env
        .put(&path, &body(0x41, "6964", "0011"))
        .await
        .expect("put");
    assert_eq!((code, r["field"].as_str()), (422, Some("key")), "{r}");
    let (code, _) = env
        .put(
            "/api/v1/cards/8949000000000099999/scp81-keys",
            &body(0x41, "6965", key),
        )
        .await
        .expect("put");
    assert_eq!(code, 404);
    let (code, r) = env
        .put(
            &format!("/api/v1/cards/{other}/scp81-keys"),
            &body(0x41, "6964", key),
        )
        .await
        .expect("put");
    assert_eq!(code, 409, "{r}");
    env.shutdown().await;
}

/// RFM over HTTPS, once per suite and TLS version the cards may offer; the response data is
/// EF ICCID as the card read it, and the session ran on the suite and version asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_over_https_for_each_suite_and_version() {
    let env = env_with("sqlite", https_settings(), 2).await;
    let handsets = env.https.clone().expect("https handsets");
    let iccid = env.iccid(0).expect("card");
    let cases = [
        ("PSK-AES128-GCM-SHA256", TlsVersion::Tls12, "TLSv1.2"),
        ("PSK-AES128-CBC-SHA256", TlsVersion::Tls12, "TLSv1.2"),
        ("PSK-AES128-CBC-SHA", TlsVersion::Tls12, "TLSv1.2"),
        ("PSK-AES128-CBC-SHA", TlsVersion::Tls11, "TLSv1.1"),
        ("PSK-AES128-CBC-SHA", TlsVersion::Tls10, "TLSv1"),
    ];
    let recorded = || handsets.outcomes.lock().map(|o| o.len()).unwrap_or(0);
    for (i, (cipher, version, version_name)) in cases.iter().enumerate() {
        // The card records a session's outcome when its TLS session closes, which can be
        // after the gateway stored the result: each case waits for its own.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while recorded() < i && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let before = recorded();
        handsets.set_tls(CardTls {
            ciphers: cipher.to_string(),
            min_version: *version,
            max_version: *version,
            // Both framings of the card's bodies.
            chunked: i % 2 == 0,
            ..CardTls::default()
        });
        let id = post_ok(
            &env,
            &https_cmd("RFM", &iccid, "B00010", json!({"apdus": READ_ICCID})),
        )
        .await;
        let r = env
            .wait_done(&id, Duration::from_secs(20))
            .await
            .expect("done");
        assert_eq!(r["status"], "SUCCESS", "{cipher} {version_name}: {r}");
        assert_eq!(r["transport"], "https");
        assert_eq!(r["response"]["statusCode"], 0x9000);
        let sws = r["response"]["statusWords"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(sws.len(), 3, "{r}");
        let data = r["response"]["data"].as_str().unwrap_or_default();
        assert!(
            swapped_bcd(data).starts_with(&iccid[..18]),
            "{data} vs {iccid}"
        );
        let kinds = events(&r);
        for k in ["QUEUED", "TRIGGER", "SUCCESS"] {
            assert!(kinds.iter().any(|e| e == k), "{k} missing from {kinds:?}");
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while recorded() <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let outcome = handsets
            .outcomes
            .lock()
            .ok()
            .and_then(|o| o.get(before).cloned())
            .expect("a session ran")
            .expect("the session succeeded");
        assert!(outcome.completed, "{outcome:?}");
        assert_eq!(outcome.cipher, *cipher);
        assert_eq!(outcome.tls_version, *version_name);
    }
    let stats = env.server.https_stats.clone().expect("admin server stats");
    assert_eq!(
        stats
            .sessions_completed
            .load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    env.shutdown().await;
}

/// A RAM install of an applet of several kilobytes: one trigger, one session, several chunks.
async fn ram_install_in_one_session(backend: &str) {
    let env = env_with(
        backend,
        HttpsSettings {
            chunk_bytes: 1024,
            ..https_settings()
        },
        2,
    )
    .await;
    let handsets = env.https.clone().expect("https handsets");
    let msisdn = env.msisdn(1).expect("card");
    let r = install_over_https(&env, 1, 6000).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["attempts"], 1, "{r}");
    let instances = instances(&env, &msisdn);
    assert!(
        instances.iter().any(|a| a == "F001020304050102"),
        "{instances:?}"
    );
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(handsets.stats.triggers.load(Relaxed), 1);
    assert_eq!(handsets.stats.sessions.load(Relaxed), 1);
    assert_eq!(handsets.stats.completed.load(Relaxed), 1);
    // Several kilobytes: more than 5 chunks of at most 1 KiB, all in that one session.
    let chunks = handsets.stats.scripts.load(Relaxed);
    assert!(chunks >= 6, "{chunks} chunks");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ram_install_in_one_session_sqlite() {
    ram_install_in_one_session("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ram_install_in_one_session_postgres() {
    ram_install_in_one_session("postgres").await;
}

/// The card loses the bearer when the second chunk arrives: the first chunk (answered) is not
/// sent again; the second and the rest go in the next session, after the trigger is resent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_dropping_mid_script_resumes_in_the_next_session() {
    let env = env_with(
        "sqlite",
        HttpsSettings {
            chunk_bytes: 16,
            ..https_settings()
        },
        3,
    )
    .await;
    let handsets = env.https.clone().expect("https handsets");
    handsets.set_tls(CardTls {
        drop_at_script: Some(2),
        drops_left: 1,
        ..CardTls::default()
    });
    let iccid = env.iccid(2).expect("card");
    let id = post_ok(
        &env,
        &https_cmd("RFM", &iccid, "B00010", json!({"apdus": SELECTS})),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["attempts"], 2, "the trigger went twice: {r}");
    assert_eq!(
        r["response"]["statusWords"].as_array().map(Vec::len),
        Some(3),
        "{r}"
    );
    let account = account_id(&env).await;
    let scp81 = env.server.store.scp81().expect("scp81 store");
    let chunks = scp81.command_chunks(&account, &id).await.expect("chunks");
    assert_eq!(chunks.len(), 3, "one C-APDU per chunk: {chunks:?}");
    let sends: Vec<u32> = chunks.iter().map(|c| c.sends).collect();
    // Chunk 0 answered in the first session: never resent. Chunk 1 was in flight when the
    // card dropped: sent again. Chunk 2 went only in the second session.
    assert_eq!(sends, vec![1, 2, 1]);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(handsets.stats.dropped.load(Relaxed), 1);
    assert_eq!(handsets.stats.completed.load(Relaxed), 1);
    env.shutdown().await;
}

/// The card runs the second chunk, then loses the bearer before posting its responses; its
/// next session opens with `X-Admin-Resume: true` and those responses: the chunk is answered
/// without being sent again (and without running twice on the card).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn card_resumes_with_the_responses_it_kept() {
    let env = env_with(
        "sqlite",
        HttpsSettings {
            chunk_bytes: 16,
            ..https_settings()
        },
        3,
    )
    .await;
    let handsets = env.https.clone().expect("https handsets");
    handsets.set_tls(CardTls {
        drop_at_script: Some(2),
        drops_left: 1,
        drop_after_running: true,
        ..CardTls::default()
    });
    let iccid = env.iccid(2).expect("card");
    let id = post_ok(
        &env,
        &https_cmd("RFM", &iccid, "B00010", json!({"apdus": SELECTS})),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["attempts"], 2, "the trigger went twice: {r}");
    let account = account_id(&env).await;
    let scp81 = env.server.store.scp81().expect("scp81 store");
    let chunks = scp81.command_chunks(&account, &id).await.expect("chunks");
    let sends: Vec<u32> = chunks.iter().map(|c| c.sends).collect();
    // Chunk 1 ran once and was sent once: its answer came with the resume.
    assert_eq!(sends, vec![1, 1, 1]);
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(handsets.stats.scripts.load(Relaxed), 3);
    assert_eq!(handsets.stats.dropped.load(Relaxed), 1);
    env.shutdown().await;
}

/// A script for an application the card does not have: the card answers with
/// `X-Admin-Script-Status: unknown-application`, and the command fails saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_status_errors_fail_the_command() {
    let env = env_with("sqlite", https_settings(), 1).await;
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &https_cmd(
            "RFM",
            &iccid,
            "B00099",
            json!({"apdus": ["00A40004023F00"]}),
        ),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["error"]["code"], "COMMAND_FAILED", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("unknown-application"), "{message}");
    env.shutdown().await;
}

/// A command that names no transport takes its card's profile default (here `https`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_profile_default_transport_applies() {
    let env = devkit::start(DevOptions {
        cards: 2,
        provision: true,
        https: Some(https_settings()),
        ..DevOptions::default()
    })
    .await
    .expect("dev environment");
    let iccid = env.iccid(0).expect("card");
    let mut body = https_cmd("RFM", &iccid, "B00010", json!({"apdus": READ_ICCID}));
    if let Some(o) = body.as_object_mut() {
        o.remove("transport");
    }
    let id = post_ok(&env, &body).await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["transport"], "https", "{r}");
    assert_eq!(r["response"]["porStatusName"], "SCP81 session", "{r}");
    env.shutdown().await;
}

/// A card whose PSK does not match the store's: every handshake fails, the trigger is resent
/// per the retry policy, then TIMEOUT. And a stranger with an unknown identity is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_psk_times_out_and_unknown_identity_is_refused() {
    let env = env_with(
        "sqlite",
        HttpsSettings {
            window_secs: 1,
            ..https_settings()
        },
        2,
    )
    .await;
    let handsets = env.https.clone().expect("https handsets");
    let iccid = env.iccid(0).expect("card");
    let msisdn = env.msisdn(0).expect("card");
    let (identity, _) = env
        .fleet
        .with_card(&msisdn, |c| c.psk(0x40))
        .flatten()
        .expect("psk");
    env.fleet
        .with_card(&msisdn, |c| c.set_psk(0x40, &identity, &[0x55; 16]));
    let id = post_ok(
        &env,
        &https_cmd("RFM", &iccid, "B00010", json!({"apdus": READ_ICCID})),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done");
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["error"]["code"], "TIMEOUT", "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
    use std::sync::atomic::Ordering::Relaxed;
    let stats = env.server.https_stats.clone().expect("stats");
    assert_eq!(handsets.stats.triggers.load(Relaxed), 2);
    assert!(stats.handshake_failures.load(Relaxed) >= 2);
    assert_eq!(stats.handshakes.load(Relaxed), 0);
    // The chunks of a command that failed are gone: a late session cannot run them.
    let account = account_id(&env).await;
    let scp81 = env.server.store.scp81().expect("scp81 store");
    assert!(scp81
        .command_chunks(&account, &id)
        .await
        .expect("chunks")
        .is_empty());

    let addr = env.server.https_addr.expect("admin server");
    let stranger = ClientConfig {
        identity: b"nobody-knows-me".to_vec(),
        key: vec![0x11; 16],
        ..card_config()
    };
    let connector = client::connector(&stranger).expect("connector");
    let e = match client::connect(addr, &connector, Duration::from_secs(5)).await {
        Ok(_) => panic!("an unknown identity got a session"),
        Err(e) => e,
    };
    assert!(matches!(e, client::ClientError::Handshake(_)), "{e}");
    assert_eq!(stats.unknown_identity.load(Relaxed), 1);
    env.shutdown().await;
}

fn card_config() -> ClientConfig {
    ClientConfig {
        identity: Vec::new(),
        key: Vec::new(),
        ciphers: "PSK-AES128-GCM-SHA256".into(),
        min_version: TlsVersion::Tls12,
        max_version: TlsVersion::Tls12,
        host: "otagw".into(),
        agent_id: "agent".into(),
        uri: "/gp/admin".into(),
        chunked: false,
        io_timeout: Duration::from_secs(5),
    }
}

/// A card the server knows (its PSK in the session cache), for the connection-level faults.
fn known_card(env: &DevEnv, i: usize) -> ClientConfig {
    let msisdn = env.msisdn(i).expect("card");
    let iccid = env.iccid(i).expect("card");
    let (identity, key) = env
        .fleet
        .with_card(&msisdn, |c| c.psk(0x40))
        .flatten()
        .expect("psk");
    let sessions = env.server.gateway.https_sessions().expect("sessions");
    sessions.load_psk(&identity, &iccid, &key);
    ClientConfig {
        identity,
        key,
        ..card_config()
    }
}

/// Waits until the server has noted the end of every session (it does so right after the
/// connection ends, so a client may see the close first).
async fn wait_sessions_closed(env: &DevEnv) {
    for _ in 0..300 {
        if env
            .server
            .gateway
            .https_sessions()
            .is_some_and(|s| s.open_sessions() == 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn read_all(s: &mut (impl AsyncReadExt + Unpin), within: Duration) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

/// Malformed HTTP gets a 400 and the connection closes; a client that stops mid-request or
/// never finishes its handshake is dropped when the timeouts run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_http_and_slow_clients_are_dropped() {
    let env = env_with("sqlite", https_settings(), 1).await;
    let addr = env.server.https_addr.expect("admin server");
    let stats = env.server.https_stats.clone().expect("stats");
    use std::sync::atomic::Ordering::Relaxed;
    let card = known_card(&env, 0);
    let connector = client::connector(&card).expect("connector");

    let mut s = client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .expect("handshake");
    s.write_all(b"POST /gp/admin HTTP/1.1\r\nHost x\r\n\r\n")
        .await
        .expect("write");
    let (got, closed) = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 400 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed);
    assert_eq!(stats.bad_requests.load(Relaxed), 1);

    wait_sessions_closed(&env).await;
    // A GET is not Amendment B.
    let mut s = client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .expect("handshake");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let (got, closed) = read_all(&mut s, Duration::from_secs(5)).await;
    assert!(
        got.starts_with(b"HTTP/1.1 405 "),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed);

    wait_sessions_closed(&env).await;
    // Slow loris after the handshake: half a request head, then nothing.
    let mut s = client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .expect("handshake");
    s.write_all(b"POST /gp/admin HTTP/1.1\r\nHost: x\r\nX-Admin-Pro")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let (_, closed) = read_all(&mut s, Duration::from_secs(8)).await;
    assert!(closed, "the server kept a slow client");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    // Slow loris before the handshake: TCP only.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let (_, closed) = read_all(&mut tcp, Duration::from_secs(8)).await;
    assert!(closed, "the server kept a client that never said hello");
    assert!(
        stats.timeouts.load(Relaxed) >= 2,
        "{}",
        stats.timeouts.load(Relaxed)
    );
    env.shutdown().await;
}

/// One administration session per card: a second one while the first is open is closed right
/// after its handshake; the first goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_session_for_the_same_card_is_refused() {
    let env = env_with("sqlite", https_settings(), 1).await;
    let addr = env.server.https_addr.expect("admin server");
    let stats = env.server.https_stats.clone().expect("stats");
    use std::sync::atomic::Ordering::Relaxed;
    let card = known_card(&env, 1);
    let connector = client::connector(&card).expect("connector");
    let first = client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .expect("handshake");
    // Let the server register the first session.
    for _ in 0..100 {
        if env
            .server
            .gateway
            .https_sessions()
            .is_some_and(|s| s.open_sessions() == 1)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut second = client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .expect("handshake");
    let _ = second
        .write_all(&client::write_post(&client::Post {
            target: "/gp/admin",
            host: "h",
            agent_id: "a",
            body: &[],
            kind: Default::default(),
            script_status: None,
            resume: false,
            chunked: false,
        }))
        .await;
    let (got, closed) = read_all(&mut second, Duration::from_secs(5)).await;
    assert!(
        got.is_empty() && closed,
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(stats.sessions_refused.load(Relaxed), 1);
    // The first session still works: nothing queued, so 204 ends it.
    struct NoScripts;
    impl client::CardAgent for NoScripts {
        fn execute(&mut self, _: client::ScriptRequest<'_>) -> client::AgentReply {
            client::AgentReply::Drop
        }
    }
    let outcome = client::run_session(first, &card, &mut NoScripts, None)
        .await
        .expect("session");
    assert!(outcome.completed && outcome.scripts == 0, "{outcome:?}");
    // And once it ended, the card may open a new one.
    wait_sessions_closed(&env).await;
    let again = client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .expect("handshake");
    let outcome = client::run_session(again, &card, &mut NoScripts, None)
        .await
        .expect("session");
    assert!(outcome.completed, "{outcome:?}");
    let _ = Pin::new(&mut second).shutdown().await;
    env.shutdown().await;
}

/// No session comes (the card ignores its triggers): resent per the retry policy, then the
/// command goes over SMS where the configuration allows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_triggers_fall_back_to_sms() {
    let env = env_with(
        "sqlite",
        HttpsSettings {
            window_secs: 1,
            fallback_to_sms: true,
            ..https_settings()
        },
        2,
    )
    .await;
    let handsets = env.https.clone().expect("https handsets");
    handsets.set_tls(CardTls {
        ignore_triggers: 2,
        ..CardTls::default()
    });
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &https_cmd("RFM", &iccid, "B00010", json!({"apdus": READ_ICCID})),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let kinds = events(&r);
    assert_eq!(
        kinds.iter().filter(|k| *k == "TRIGGER").count(),
        2,
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "FALLBACK"), "{kinds:?}");
    // Durably on SMS now (a restart would not trigger again).
    assert_eq!(r["transport"], "sms", "{r}");
    assert_eq!(r["response"]["porStatus"], "00");
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(handsets.stats.sessions.load(Relaxed), 0);
    env.shutdown().await;
}

/// An RFM application whose AID is its issuer's, not the one made up from its TAR: the
/// card's profile names it (`defaults.http.applications`), and the script goes to it with the
/// ETSI media types (TS 102 226 Annex B). Without that, the card knows no such application.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_goes_to_the_application_aid_the_profile_names() {
    const AID: &str = "A0000000871002FFFFFFFF8907090000";
    for named in [true, false] {
        let http = if named {
            json!({"agentId": "otagw-devkit", "applications": {"B00010": AID}})
        } else {
            json!({"agentId": "otagw-devkit"})
        };
        let env = devkit::start(DevOptions {
            cards: 2,
            provision: true,
            https: Some(https_settings()),
            profile_http: Some(http),
            ..DevOptions::default()
        })
        .await
        .expect("dev environment");
        let handsets = env.https.clone().expect("https handsets");
        handsets.set_tls(CardTls {
            rfm_aids: vec![([0xB0, 0x00, 0x10], hex::decode(AID).unwrap())],
            ..CardTls::default()
        });
        let iccid = env.iccid(0).expect("card");
        let id = post_ok(
            &env,
            &https_cmd("RFM", &iccid, "B00010", json!({"apdus": READ_ICCID})),
        )
        .await;
        let r = env
            .wait_done(&id, Duration::from_secs(20))
            .await
            .expect("done");
        let account = env.account_id.clone();
        let scp81 = env.server.store.scp81().expect("scp81 store");
        let chunks = scp81.command_chunks(&account, &id).await.expect("chunks");
        if named {
            assert_eq!(r["status"], "SUCCESS", "{r}");
            assert_eq!(
                r["response"]["data"]
                    .as_str()
                    .map(|d| swapped_bcd(d).trim_end_matches('f').to_string()),
                Some(iccid.clone()),
                "{r}"
            );
            assert_eq!(
                chunks[0].targeted_application.as_deref(),
                Some("//aid/A000000087/1002FFFFFFFF8907090000")
            );
            assert_eq!(chunks[0].kind, otagw::store::scp81::ScriptKind::RemoteFile);
        } else {
            assert_eq!(r["status"], "FAILED", "{r}");
            let message = r["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("unknown-application"), "{message}");
            assert_eq!(
                chunks[0].targeted_application.as_deref(),
                Some("//aid/A000000009/0001FFFFFFFF89B00010")
            );
        }
        env.shutdown().await;
    }
}

/// A profile's application AIDs are checked when it is used: a bad one is named.
#[test]
fn bad_application_aids_are_named() {
    let base = otagw::gateway::https::HttpsOptions::default();
    for (bad, field) in [
        (
            json!({"applications": {"B000": "A000000087"}}),
            "http.applications.B000",
        ),
        (
            json!({"applications": {"B00010": "A0000000"}}),
            "http.applications.B00010",
        ),
        (
            json!({"applications": {"B00010": 5}}),
            "http.applications.B00010",
        ),
        (json!({"applications": ["B00010"]}), "http.applications"),
    ] {
        assert_eq!(base.with_profile(&bad).unwrap_err().0, field, "{bad}");
    }
}

/// The bearer breaks while the card downloads a LOAD chunk: Amendment B has it re-post its
/// last POST (the previous chunk's answers, `X-Admin-Resume: true`) in the next session. That
/// answer is a duplicate; the chunk it was downloading goes again, so no LOAD block is lost
/// and the applet installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_break_while_a_chunk_downloads_resends_that_chunk() {
    let env = env_with(
        "sqlite",
        HttpsSettings {
            chunk_bytes: 1024,
            ..https_settings()
        },
        3,
    )
    .await;
    let handsets = env.https.clone().expect("https handsets");
    handsets.set_tls(CardTls {
        drop_at_script: Some(3),
        drops_left: 1,
        ..CardTls::default()
    });
    let msisdn = env.msisdn(1).expect("card");
    let r = install_over_https(&env, 1, 4000).await;
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let id = r["commandId"].as_str().unwrap_or_default().to_string();
    let instances = instances(&env, &msisdn);
    assert!(
        instances.iter().any(|a| a == "F001020304050102"),
        "the applet is not on the card: {instances:?}"
    );
    let scp81 = env.server.store.scp81().expect("scp81 store");
    let chunks = scp81
        .command_chunks(&env.account_id, &id)
        .await
        .expect("chunks");
    let sends: Vec<u32> = chunks.iter().map(|c| c.sends).collect();
    assert!(sends.len() >= 4, "{sends:?}");
    let mut expected = vec![1; sends.len()];
    expected[2] = 2;
    assert_eq!(
        sends, expected,
        "only the chunk being downloaded goes twice"
    );
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(handsets.stats.dropped.load(Relaxed), 1);
    env.shutdown().await;
}

/// A chunk whose C-APDU fails ends the command: the chunks after it are not sent, and the
/// error names the chunk, the C-APDU and its status word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_chunk_stops_the_script() {
    let env = env_with(
        "sqlite",
        HttpsSettings {
            chunk_bytes: 16,
            ..https_settings()
        },
        1,
    )
    .await;
    let handsets = env.https.clone().expect("https handsets");
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &https_cmd(
            "RFM",
            &iccid,
            "B00010",
            json!({"apdus": ["00A40004023F00", "00A40004026F99", "00A40004023F00"]}),
        ),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "FAILED", "{r}");
    let message = r["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("chunk 1: C-APDU 1 of 1 (00 A4 00 04) answered 6A82"),
        "{message}"
    );
    let scp81 = env.server.store.scp81().expect("scp81 store");
    let chunks = scp81
        .command_chunks(&env.account_id, &id)
        .await
        .expect("chunks");
    assert_eq!(
        chunks.len(),
        2,
        "the third chunk was dropped unsent: {chunks:?}"
    );
    use std::sync::atomic::Ordering::Relaxed;
    assert_eq!(handsets.stats.scripts.load(Relaxed), 2);
    env.shutdown().await;
}

/// After a restart the PSK cache is empty; a card opening a session by its own retry policy
/// is looked up in the store and gets its session (here nothing is queued: 204).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_unknown_to_the_cache_is_found_in_the_store() {
    let env = env_with("sqlite", https_settings(), 1).await;
    let addr = env.server.https_addr.expect("admin server");
    let msisdn = env.msisdn(1).expect("card");
    let (identity, key) = env
        .fleet
        .with_card(&msisdn, |c| c.psk(0x40))
        .flatten()
        .expect("psk");
    // No trigger went to this card: the server's cache has never seen its identity.
    let card = ClientConfig {
        identity,
        key,
        ..card_config()
    };
    let connector = client::connector(&card).expect("connector");
    let stream = client::connect(addr, &connector, Duration::from_secs(5))
        .await
        .expect("the handshake succeeds with the stored PSK");
    struct NoScripts;
    impl client::CardAgent for NoScripts {
        fn execute(&mut self, _: client::ScriptRequest<'_>) -> client::AgentReply {
            client::AgentReply::Drop
        }
    }
    let outcome = client::run_session(stream, &card, &mut NoScripts, None)
        .await
        .expect("session");
    assert!(outcome.completed, "{outcome:?}");
    env.shutdown().await;
}

/// The transport object's `BIP` is SCP81 (HTTPS over the card's BIP TCP channel), and its
/// `parameters` are the command's own: `timeout` is how long each trigger waits for the card's
/// session (the gateway's window here is 30 s), `retries: 0` sends one trigger (the gateway's
/// policy is 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bip_transport_object_goes_over_scp81_with_its_own_window() {
    let env = env_with(
        "sqlite",
        HttpsSettings {
            window_secs: 30,
            ..https_settings()
        },
        3,
    )
    .await;
    let bip = |iccid: &str, parameters: Value| {
        let mut body = https_cmd("RFM", iccid, "B00010", json!({"apdus": READ_ICCID}));
        body["transport"] = json!({
            "type": "BIP",
            "security": {"encryption": true, "signing": true, "counter": true},
            "parameters": parameters,
        });
        body
    };
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(&env, &bip(&iccid, json!({"timeout": 10}))).await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["transport"], "https", "{r}");
    assert_eq!(r["response"]["porStatusName"], "SCP81 session", "{r}");
    assert!(
        swapped_bcd(r["response"]["data"].as_str().unwrap_or_default()).starts_with(&iccid[..18]),
        "{r}"
    );

    // A card whose PSK the store does not have never completes a session.
    let iccid = env.iccid(1).expect("card");
    let msisdn = env.msisdn(1).expect("card");
    let (identity, _) = env
        .fleet
        .with_card(&msisdn, |c| c.psk(0x40))
        .flatten()
        .expect("psk");
    env.fleet
        .with_card(&msisdn, |c| c.set_psk(0x40, &identity, &[0x55; 16]));
    let started = std::time::Instant::now();
    let id = post_ok(&env, &bip(&iccid, json!({"timeout": 1, "retries": 0}))).await;
    let r = env
        .wait_done(&id, Duration::from_secs(25))
        .await
        .expect("done");
    assert_eq!(r["error"]["code"], "TIMEOUT", "{r}");
    assert_eq!(r["attempts"], 1, "one trigger: {r}");
    assert_eq!(
        events(&r).iter().filter(|k| *k == "TRIGGER").count(),
        1,
        "{r}"
    );
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1 trigger(s), 1s each")),
        "{r}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the gateway's 30 s window applied: {:?}",
        started.elapsed()
    );
    env.shutdown().await;
}
