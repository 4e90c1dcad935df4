//! The gateway's log lines (issue 17): one JSON object per line with `[log] format = "json"`,
//! the operator-facing events at info (SMPP bound, the commands' ends at debug), and never a
//! key value: SCP80 keys, SCP81 PSKs, the new keys of a KEY_UPDATE and the master key are
//! looked for in every line of a run at trace level over SMS, HTTPS and CAT_TP.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use otagw::devkit::{self, DevOptions};
use otagw::logging::{LogFormat, LogSettings};
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut b) = self.0.lock() {
            b.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

fn cmd(kind: &str, iccid: &str, transport: &str, data: serde_json::Value) -> serde_json::Value {
    json!({
        "type": kind,
        "target": {"iccid": iccid},
        "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": "B00010"},
        "data": data,
        "transport": transport,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_and_no_key_value_in_any_line() {
    let captured = Captured::default();
    let settings = LogSettings {
        format: LogFormat::Json,
        level: "trace".into(),
    };
    // RUST_LOG would override the level: this run wants everything.
    std::env::remove_var("RUST_LOG");
    let subscriber = settings.subscriber(captured.clone()).expect("subscriber");
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let env = devkit::start(DevOptions {
        cards: 3,
        https: Some(otagw::config::HttpsSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            window_secs: 10,
            ..Default::default()
        }),
        catp: Some(otagw::config::CatpConfig {
            link_timeout_secs: 5,
            ..Default::default()
        }),
        ..DevOptions::default()
    })
    .await
    .expect("dev environment");
    let mut secrets: Vec<Vec<u8>> = Vec::new();
    for i in 0..3 {
        let msisdn = env.msisdn(i).expect("card");
        env.fleet.with_card(&msisdn, |c| {
            for set in c.key_sets() {
                secrets.push(set.kic().to_vec());
                secrets.push(set.kid().to_vec());
            }
            if let Some((_, psk)) = c.psk(0x40) {
                secrets.push(psk);
            }
        });
    }
    secrets.push(env.master_key_bytes().to_vec());
    let new_kic = "00112233445566778899AABBCCDDEEF1";
    let new_kid = "F1EEDDCCBBAA99887766554433221100";
    secrets.push(hex::decode(new_kic).unwrap());
    secrets.push(hex::decode(new_kid).unwrap());
    assert!(secrets.len() >= 10, "{}", secrets.len());

    let read = json!({"apdus": ["00A40004023F00", "00A40004022FE2", "00B000000A"]});
    let mut ids = Vec::new();
    for (i, transport) in ["sms", "https", "catp"].iter().enumerate() {
        let body = cmd("RFM", &env.iccid(i).expect("card"), transport, read.clone());
        let (code, r) = env.post("/api/v1/ota/commands", &body).await.expect("post");
        assert_eq!(code, 202, "{r}");
        ids.push(r["commandId"].as_str().unwrap_or_default().to_string());
    }
    let mut key_update = cmd(
        "KEY_UPDATE",
        &env.iccid(0).expect("card"),
        "sms",
        json!({"parameters": {"keyVersion": 1, "kic": new_kic, "kid": new_kid}}),
    );
    key_update["security"]["tar"] = json!("000000");
    let (code, r) = env
        .post("/api/v1/ota/commands", &key_update)
        .await
        .expect("post");
    assert_eq!(code, 202, "{r}");
    ids.push(r["commandId"].as_str().unwrap_or_default().to_string());
    for id in &ids {
        let r = env
            .wait_done(id, Duration::from_secs(30))
            .await
            .expect("done");
        assert_eq!(r["status"], "SUCCESS", "{r}");
    }
    env.shutdown().await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).expect("UTF-8 lines");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() > 100, "only {} lines", lines.len());
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    let upper = text.to_uppercase();
    for s in &secrets {
        let h = hex::encode_upper(s);
        assert!(
            !upper.contains(&h),
            "a key value ({} octets) is in the log",
            s.len()
        );
    }
    for needle in ["SMPP bound", "command ended"] {
        assert!(text.contains(needle), "no {needle:?} line");
    }
}
