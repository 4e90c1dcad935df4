//! The REST API over real HTTP, end to end (API -> pipeline -> SMPP -> SMSC simulator ->
//! virtual UICC -> PoR -> stored result), against both store backends: SQLite and the local
//! PostgreSQL (`OTAGW_TEST_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/test).

use std::time::Duration;

use otagw::devkit::{self, DevEnv, DevOptions};
use serde_json::{json, Value};

async fn env_for(backend: &str, options: DevOptions) -> DevEnv {
    devkit::start_on(backend, options)
        .await
        .expect("dev environment")
}

fn cmd(kind: &str, iccid: &str, data: Value) -> Value {
    json!({
        "type": kind,
        "target": {"iccid": iccid},
        "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": "B00010"},
        "data": data,
    })
}

async fn post_ok(env: &DevEnv, body: &Value) -> String {
    let (code, answer) = env.post("/api/v1/ota/commands", body).await.expect("post");
    assert_eq!(code, 202, "{answer}");
    assert_eq!(answer["status"], "PENDING");
    answer["commandId"].as_str().expect("commandId").to_string()
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

async fn rfm_round_trip_and_history(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &cmd(
            "RFM",
            &iccid,
            json!({"apdus": ["00A40004023F00", "00A40004022FE2", "00B000000A"]}),
        ),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(r["response"]["porStatus"], "00");
    assert_eq!(r["response"]["statusCode"], 0x9000);
    // EF ICCID holds the ICCID in swapped BCD.
    let data = r["response"]["data"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let swapped: String = hex::decode(&data)
        .unwrap_or_default()
        .iter()
        .map(|b| format!("{:x}{:x}", b & 0x0F, b >> 4))
        .collect();
    assert!(swapped.starts_with(&iccid[..18]), "{data} vs {iccid}");
    assert_eq!(r["attempts"], 1);
    assert!(r["counter"].as_u64().unwrap_or(0) >= 1);
    let kinds = events(&r);
    for k in ["CREATED", "SECURED", "SENT", "SUCCESS"] {
        assert!(kinds.iter().any(|e| e == k), "{k} missing from {kinds:?}");
    }
    assert_eq!(kinds.iter().filter(|k| *k == "SUCCESS").count(), 1);
    // Metrics count it.
    let (code, m) = env.get("/api/v1/ota/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    assert_eq!(m["byStatus"]["SUCCESS"], 1, "{m}");
    env.shutdown().await;
}

async fn file_and_profile_updates_change_the_card(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(1).expect("card");
    let msisdn = env.msisdn(1).expect("card");
    let spn = "016F7461677700FFFFFFFFFFFFFFFFFFFF";
    let id = post_ok(
        &env,
        &cmd(
            "FILE_UPDATE",
            &iccid,
            json!({"parameters": {"path": "3F00/7FFF/6F46", "data": spn}}),
        ),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let content = env
        .fleet
        .with_card(&msisdn, |c| c.read_file(&[0x3F00, 0x7FFF, 0x6F46]))
        .flatten()
        .map(hex::encode_upper)
        .unwrap_or_default();
    assert_eq!(content, spn);
    let id = post_ok(
        &env,
        &cmd(
            "PROFILE_UPDATE",
            &iccid,
            json!({"parameters": {"serviceProviderName": "Operator X", "spnDisplayCondition": 1}}),
        ),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let content = env
        .fleet
        .with_card(&msisdn, |c| c.read_file(&[0x3F00, 0x7FFF, 0x6F46]))
        .flatten()
        .unwrap_or_default();
    assert_eq!(content.first(), Some(&1));
    assert_eq!(&content[1..11], b"Operator X");
    env.shutdown().await;
}

async fn error_status_word_fails_the_command(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(2).expect("card");
    let id = post_ok(
        &env,
        &cmd(
            "RFM",
            &iccid,
            json!({"apdus": ["00A40004023F00", "00A40004026FFF"]}),
        ),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["error"]["code"], "COMMAND_FAILED");
    assert_eq!(r["response"]["statusCode"], 0x6A82);
    env.shutdown().await;
}

async fn bad_input_names_the_field(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let url = format!("{}/api/v1/ota/commands", env.server.base_url());
    let raw = env
        .client
        .post(&url)
        .bearer_auth(&env.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(raw.status().as_u16(), 400);
    let body: Value = raw.json().await.unwrap_or_default();
    assert_eq!(body["error"], "BAD_REQUEST");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("invalid JSON"),
        "{body}"
    );

    let mut unknown = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
    unknown["security"]["kik"] = json!("00");
    let (code, body) = env
        .post("/api/v1/ota/commands", &unknown)
        .await
        .expect("post");
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["field"], "security.kik", "{body}");

    let mut bad_tar = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
    bad_tar["security"]["tar"] = json!("B0001G");
    let (code, body) = env
        .post("/api/v1/ota/commands", &bad_tar)
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "security.tar");

    let unknown_card = cmd(
        "RFM",
        "8901234567890123456",
        json!({"apdus": ["00A40004023F00"]}),
    );
    let (code, body) = env
        .post("/api/v1/ota/commands", &unknown_card)
        .await
        .expect("post");
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["field"], "target.iccid");

    let mut no_keys = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
    no_keys["security"]["kic"] = json!("52");
    let (code, body) = env
        .post("/api/v1/ota/commands", &no_keys)
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "security.kic");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("key set version 5"),
        "{body}"
    );

    let bad_apdu = cmd("RFM", &iccid, json!({"apdus": ["00A4000"]}));
    let (code, body) = env
        .post("/api/v1/ota/commands", &bad_apdu)
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert!(
        body["field"]
            .as_str()
            .unwrap_or("")
            .starts_with("data.apdus"),
        "{body}"
    );

    let (code, body) = env
        .post(
            "/api/v1/cards",
            &json!({"cards": [{"iccid": "12", "keySets": []}]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "cards[0].iccid");
    env.shutdown().await;
}

async fn cancel_a_pending_command(backend: &str) {
    // A gateway that sends nothing: commands stay PENDING.
    let env = env_for(
        backend,
        DevOptions {
            paused: true,
            ..DevOptions::default()
        },
    )
    .await;
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    let url = format!("{}/api/v1/ota/commands/{id}", env.server.base_url());
    let r = env
        .client
        .delete(&url)
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    let (_, r) = env
        .get(&format!("/api/v1/ota/commands/{id}"))
        .await
        .expect("get");
    assert_eq!(r["status"], "CANCELLED", "{r}");
    assert!(events(&r).iter().any(|e| e == "CANCELLED"), "{r}");
    let r = env
        .client
        .delete(&url)
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 409);
    env.shutdown().await;
}

async fn cancel_only_before_sending(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let done = post_ok(
        &env,
        &cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    env.wait_done(&done, Duration::from_secs(20))
        .await
        .expect("done");
    let url = |id: &str| format!("{}/api/v1/ota/commands/{id}", env.server.base_url());
    let r = env
        .client
        .delete(url(&done))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 409);
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(body["error"], "INVALID_STATE");
    assert_eq!(body["commandId"], done.as_str());
    let r = env
        .client
        .delete(url("nope"))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 404);
    // A sequential batch's second command waits for the first, so it can often be cancelled.
    let (code, b) = env
        .post(
            "/api/v1/ota/batch",
            &json!({"commands": [
                cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
                cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
            ], "options": {"parallel": false}}),
        )
        .await
        .expect("batch");
    assert_eq!(code, 202, "{b}");
    let second = b["commandIds"][1].as_str().unwrap_or_default().to_string();
    let r = env
        .client
        .delete(url(&second))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("delete");
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    // Either it was still pending (cancelled) or, on a fast machine, already sent (409).
    assert!(code == 200 || code == 409, "{code} {body}");
    let r = env
        .wait_done(&second, Duration::from_secs(20))
        .await
        .expect("done");
    if code == 200 {
        assert_eq!(r["status"], "CANCELLED", "{r}");
    } else {
        assert_eq!(r["status"], "SUCCESS", "{r}");
    }
    env.shutdown().await;
}

async fn auth_and_tenancy(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let base = env.server.base_url();
    let r = env
        .client
        .get(format!("{base}/api/v1/ota/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let r = env
        .client
        .get(format!("{base}/api/v1/ota/metrics"))
        .bearer_auth("otagw_0000")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let (code, _) = env
        .get_unauthenticated("/api/v1/ota/health")
        .await
        .expect("health");
    assert_eq!(code, 200);
    let id = post_ok(
        &env,
        &cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    // Another account sees neither the command nor the card.
    let other = env
        .server
        .store
        .create_account("other", otagw::clock::now_ms())
        .await
        .expect("account");
    let token = env
        .server
        .store
        .create_token(&other.id, "t", otagw::clock::now_ms())
        .await
        .expect("token");
    for path in [
        format!("/api/v1/ota/commands/{id}"),
        format!("/api/v1/cards/{iccid}"),
    ] {
        let r = env
            .client
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 404, "{path}");
    }
    let r = env
        .client
        .delete(format!("{base}/api/v1/ota/commands/{id}"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(r.status().as_u16(), 404);
    // Nor can it send to the card.
    let r = env
        .client
        .post(format!("{base}/api/v1/ota/commands"))
        .bearer_auth(&token)
        .json(&cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 404);
    env.wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    env.shutdown().await;
}

async fn batch_sequential_with_stop_on_error(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(3).expect("card");
    let ok = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
    let bad = cmd("RFM", &iccid, json!({"apdus": ["00A40004026FFF"]}));
    let (code, b) = env
        .post(
            "/api/v1/ota/batch",
            &json!({"commands": [ok, bad, ok], "options": {"parallel": false, "stopOnError": true, "maxRetries": 1}}),
        )
        .await
        .expect("batch");
    assert_eq!(code, 202, "{b}");
    let batch = b["batchId"].as_str().unwrap_or_default().to_string();
    let ids: Vec<String> = b["commandIds"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(ids.len(), 3);
    let mut statuses = Vec::new();
    for id in &ids {
        let r = env
            .wait_done(id, Duration::from_secs(20))
            .await
            .expect("done");
        statuses.push(r["status"].as_str().unwrap_or("").to_string());
    }
    assert_eq!(statuses, ["SUCCESS", "FAILED", "CANCELLED"]);
    // Six for one card, one after another: they run in the order posted, whatever order the
    // engine claims them in (a later one claimed first must not hold the card).
    let six: Vec<Value> = (0..6).map(|_| ok.clone()).collect();
    let (code, b6) = env
        .post(
            "/api/v1/ota/batch",
            &json!({"commands": six, "options": {"parallel": false}}),
        )
        .await
        .expect("batch");
    assert_eq!(code, 202, "{b6}");
    let mut finished = Vec::new();
    for id in b6["commandIds"].as_array().cloned().unwrap_or_default() {
        let r = env
            .wait_done(id.as_str().unwrap_or_default(), Duration::from_secs(20))
            .await
            .expect("done");
        assert_eq!(r["status"], "SUCCESS", "{r}");
        finished.push((
            r["completedAt"]
                .as_str()
                .and_then(|t| otagw::rfc3339::parse_ms(t).ok())
                .unwrap_or(0),
            r["counter"].as_u64().unwrap_or(0),
        ));
    }
    let mut sorted = finished.clone();
    sorted.sort();
    assert_eq!(finished, sorted, "ran out of order: {finished:?}");
    let (code, r) = env
        .get(&format!("/api/v1/ota/batch/{batch}"))
        .await
        .expect("batch");
    assert_eq!(code, 200);
    assert_eq!(r["total"], 3);
    assert_eq!(r["finished"], true);
    assert_eq!(r["totals"]["SUCCESS"], 1, "{r}");
    // Errors name the command in the batch.
    let (code, e) = env
        .post(
            "/api/v1/ota/batch",
            &json!({"commands": [ok, cmd("RFM", &iccid, json!({"apdus": ["zz"]}))]}),
        )
        .await
        .expect("batch");
    assert_eq!(code, 422, "{e}");
    assert!(
        e["field"]
            .as_str()
            .unwrap_or("")
            .starts_with("commands[1].data.apdus"),
        "{e}"
    );
    env.shutdown().await;
}

async fn key_rotation_then_commands_use_the_new_keys(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(4).expect("card");
    let msisdn = env.msisdn(4).expect("card");
    let old = env
        .fleet
        .with_card(&msisdn, |c| c.key_set(1).map(|k| k.kic().to_vec()))
        .flatten()
        .unwrap_or_default();
    let (code, r) = env
        .post("/api/v1/ota/security/rotate-keys", &json!({"iccid": iccid}))
        .await
        .expect("rotate");
    assert_eq!(code, 202, "{r}");
    let id = r["commands"][0]["commandId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let done = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(done["status"], "SUCCESS", "{done}");
    let new = env
        .fleet
        .with_card(&msisdn, |c| c.key_set(1).map(|k| k.kic().to_vec()))
        .flatten()
        .unwrap_or_default();
    assert_ne!(old, new, "the card's KIc changed");
    let (_, status) = env
        .get("/api/v1/ota/security/status")
        .await
        .expect("status");
    let card = status["cards"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["iccid"] == iccid.as_str()).cloned())
        .unwrap_or_default();
    assert!(
        card["keyVersions"][0]["lastRotation"]
            .as_str()
            .is_some_and(|t| otagw::rfc3339::parse_ms(t).is_ok()),
        "{card}"
    );
    // The next command is secured with the new keys and the card accepts it.
    let id = post_ok(
        &env,
        &cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    env.shutdown().await;
}

async fn documents_and_metrics(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let (code, doc) = env
        .get_unauthenticated("/api/v1/openapi.json")
        .await
        .expect("doc");
    assert_eq!(code, 200);
    for path in [
        "/api/v1/ota/commands",
        "/api/v1/ota/commands/{commandId}",
        "/api/v1/ota/batch",
        "/api/v1/ota/batch/{batchId}",
        "/api/v1/ota/security/rotate-keys",
        "/api/v1/ota/security/status",
        "/api/v1/ota/metrics",
        "/api/v1/ota/health",
        "/api/v1/cards",
        "/api/v1/cards/{iccid}",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    for (path, method, statuses) in [
        ("/api/v1/tokens", "get", &["200"][..]),
        ("/api/v1/tokens/{id}", "delete", &["204", "404"][..]),
        ("/api/v1/webhooks/{id}", "delete", &["204", "404"][..]),
        ("/api/v1/webhooks", "post", &["201", "422"][..]),
    ] {
        for status in statuses {
            assert!(
                doc["paths"][path][method]["responses"][status].is_object(),
                "{method} {path} {status} missing from the OpenAPI document"
            );
        }
    }
    assert!(
        doc["components"]["schemas"]["AddWebhook"]["properties"]["events"].is_object(),
        "AddWebhook.events missing from the OpenAPI document"
    );
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    env.wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    let text = env
        .client
        .get(format!("{}/metrics", env.server.base_url()))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        text.contains("otagw_commands_finished_total{transport=\"sms\",status=\"SUCCESS\""),
        "{text}"
    );
    env.shutdown().await;
}

async fn webhooks_get_signed_events(backend: &str) {
    use std::sync::{Arc, Mutex};
    let env = env_for(backend, DevOptions::default()).await;
    let seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>> = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/{path}",
        axum::routing::post(
            move |axum::extract::Path(path): axum::extract::Path<String>,
                  mut headers: axum::http::HeaderMap,
                  body: String| {
                let s = s.clone();
                async move {
                    if let Ok(p) = axum::http::HeaderValue::from_str(&path) {
                        headers.insert("x-test-path", p);
                    }
                    s.lock().map(|mut v| v.push((headers, body))).ok();
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let secret = "a-secret-of-some-length";
    let (code, w) = env
        .post(
            "/api/v1/webhooks",
            &json!({"url": format!("http://{addr}/hook"), "secret": secret}),
        )
        .await
        .expect("webhook");
    assert_eq!(code, 201, "{w}");
    assert_eq!(w["events"], json!([]), "{w}");
    // A second webhook, for command.completed only.
    let (code, only) = env
        .post(
            "/api/v1/webhooks",
            &json!({"url": format!("http://{addr}/only"), "secret": secret,
                    "events": ["command.completed"]}),
        )
        .await
        .expect("webhook");
    assert_eq!(code, 201, "{only}");
    assert_eq!(only["events"], json!(["command.completed"]));
    // Listed with their filters, without their secrets.
    let (code, list) = env.get("/api/v1/webhooks").await.expect("list");
    assert_eq!(code, 200, "{list}");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    assert!(!list.to_string().contains(secret), "{list}");
    let listed_only = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["id"] == only["id"])
        .cloned()
        .unwrap_or_default();
    assert_eq!(listed_only["events"], json!(["command.completed"]));
    assert!(listed_only.get("secret").is_none());
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    env.wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    let mut completed = None;
    for _ in 0..200 {
        completed = seen.lock().ok().and_then(|v| {
            v.iter()
                .find(|(h, _)| {
                    h.get("x-otagw-event").and_then(|e| e.to_str().ok())
                        == Some("command.completed")
                })
                .cloned()
        });
        if completed.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (headers, body) = completed.expect("a command.completed webhook");
    let ts: i64 = headers["x-otagw-timestamp"]
        .to_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let sig = headers["x-otagw-signature"].to_str().unwrap_or("");
    assert!(otagw::api::webhook::verify(
        secret.as_bytes(),
        ts,
        body.as_bytes(),
        sig
    ));
    assert!(!otagw::api::webhook::verify(
        b"another-secret-xxxxx",
        ts,
        body.as_bytes(),
        sig
    ));
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(v["data"]["commandId"], id.as_str());
    assert_eq!(v["data"]["status"], "SUCCESS");
    // The unfiltered webhook got command.delivered too; the filtered one got
    // command.completed and nothing else.
    let got = |path: &str| -> Vec<String> {
        seen.lock()
            .map(|v| {
                v.iter()
                    .filter(|(h, _)| h.get("x-test-path").is_some_and(|p| p == path))
                    .filter_map(|(h, _)| {
                        h.get("x-otagw-event")
                            .and_then(|e| e.to_str().ok())
                            .map(String::from)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    for _ in 0..200 {
        if got("hook").iter().any(|e| e == "command.delivered")
            && got("only").iter().any(|e| e == "command.completed")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        got("hook").iter().any(|e| e == "command.delivered"),
        "{:?}",
        got("hook")
    );
    assert_eq!(got("only"), vec!["command.completed".to_string()]);
    // The Prometheus counters agree with what the receivers got.
    let received = seen.lock().map(|v| v.len()).unwrap_or(0);
    let text = env
        .client
        .get(format!("{}/metrics", env.server.base_url()))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let delivered = text
        .lines()
        .find(|l| l.starts_with("otagw_webhook_deliveries_total{result=\"delivered\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(delivered, Some(received as f64), "{text}");
    assert!(text.contains("otagw_outbox_events "), "{text}");
    env.shutdown().await;
}

/// A request with a bearer token: (status, JSON body or Null).
async fn call(
    env: &DevEnv,
    method: reqwest::Method,
    path: &str,
    base: &str,
    token: &str,
) -> (u16, Value) {
    let r = env
        .client
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Tokens are listed without their values and revoked: every gateway refuses a revoked token
/// at once, another account's token id answers 404, a token may revoke itself.
async fn tokens_listed_and_revoked(backend: &str) {
    use reqwest::Method;
    let env = env_for(
        backend,
        DevOptions {
            cards: 1,
            ..DevOptions::default()
        },
    )
    .await;
    let base = env.server.base_url();
    let store = env.server.store.clone();
    let now = otagw::clock::now_ms();
    let (code, list) = call(&env, Method::GET, "/api/v1/tokens", &base, &env.token).await;
    assert_eq!(code, 200, "{list}");
    let mine = list.as_array().cloned().unwrap_or_default();
    assert_eq!(mine.len(), 1, "{list}");
    let my_id = mine[0]["id"].as_str().expect("id").to_string();
    assert_eq!(mine[0]["name"], "devkit");
    assert!(
        mine[0]["createdAt"]
            .as_str()
            .is_some_and(|t| otagw::rfc3339::parse_ms(t).is_ok()),
        "{list}"
    );
    assert_eq!(
        mine[0].as_object().map(|o| o.len()),
        Some(3),
        "only id, name and createdAt: {list}"
    );
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(env.token.as_bytes()));
    assert!(
        !list.to_string().contains(&env.token[6..]) && !list.to_string().contains(&hash),
        "{list}"
    );

    // A second token of this account, used on both gateways before it is revoked.
    let second = store
        .create_token(&env.account_id, "second", now)
        .await
        .expect("token");
    let peer = env.start_peer("otagw-peer").await.expect("peer gateway");
    let peer_base = peer.base_url();
    for b in [&base, &peer_base] {
        let (code, list) = call(&env, Method::GET, "/api/v1/tokens", b, &second).await;
        assert_eq!(code, 200, "{list}");
        assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    }
    let (_, list) = call(&env, Method::GET, "/api/v1/tokens", &base, &env.token).await;
    let second_id = list
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["name"] == "second")
        .and_then(|t| t["id"].as_str())
        .expect("second listed")
        .to_string();

    // Another account sees only its own, and cannot revoke ours: 404 as for no such id.
    let other = store.create_account("other", now).await.expect("account");
    let other_token = store
        .create_token(&other.id, "o", now)
        .await
        .expect("token");
    let (code, list) = call(&env, Method::GET, "/api/v1/tokens", &base, &other_token).await;
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "o");
    let (code, err_other) = call(
        &env,
        Method::DELETE,
        &format!("/api/v1/tokens/{second_id}"),
        &base,
        &other_token,
    )
    .await;
    assert_eq!(code, 404, "{err_other}");
    assert_eq!(err_other["error"], "NOT_FOUND");
    let (code, err_none) = call(
        &env,
        Method::DELETE,
        "/api/v1/tokens/no-such-token",
        &base,
        &other_token,
    )
    .await;
    assert_eq!(code, 404, "{err_none}");
    assert_eq!(
        err_other["message"]
            .as_str()
            .map(|m| m.replace(&second_id, "ID")),
        err_none["message"]
            .as_str()
            .map(|m| m.replace("no-such-token", "ID"))
    );
    let (code, _) = call(&env, Method::GET, "/api/v1/tokens", &peer_base, &second).await;
    assert_eq!(code, 200, "still valid");

    // Revoked through this gateway: refused by both at once.
    let (code, body) = call(
        &env,
        Method::DELETE,
        &format!("/api/v1/tokens/{second_id}"),
        &base,
        &env.token,
    )
    .await;
    assert_eq!(code, 204, "{body}");
    for b in [&base, &peer_base] {
        let (code, body) = call(&env, Method::GET, "/api/v1/tokens", b, &second).await;
        assert_eq!(code, 401, "{b}: {body}");
        assert_eq!(body["error"], "UNAUTHORIZED");
    }
    let (code, body) = call(
        &env,
        Method::DELETE,
        &format!("/api/v1/tokens/{second_id}"),
        &base,
        &env.token,
    )
    .await;
    assert_eq!(code, 404, "revoked twice: {body}");

    // A token may revoke itself (here through the peer); then it is refused.
    let (code, _) = call(
        &env,
        Method::DELETE,
        &format!("/api/v1/tokens/{my_id}"),
        &peer_base,
        &env.token,
    )
    .await;
    assert_eq!(code, 204);
    for b in [&base, &peer_base] {
        let (code, _) = call(&env, Method::GET, "/api/v1/ota/metrics", b, &env.token).await;
        assert_eq!(code, 401, "{b}");
    }
    // The other account's token is untouched.
    let (code, _) = call(&env, Method::GET, "/api/v1/tokens", &base, &other_token).await;
    assert_eq!(code, 200);
    peer.shutdown().await;
    env.shutdown().await;
}

/// Webhooks are deleted by their account only; an unknown event name is refused naming it.
async fn webhooks_deleted_and_event_names_checked(backend: &str) {
    use reqwest::Method;
    let env = env_for(
        backend,
        DevOptions {
            cards: 1,
            ..DevOptions::default()
        },
    )
    .await;
    let base = env.server.base_url();
    let (code, err) = env
        .post(
            "/api/v1/webhooks",
            &json!({"url": "https://hooks.example.invalid/x",
                    "events": ["command.completed", "command.finished"]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 422, "{err}");
    assert_eq!(err["error"], "VALIDATION_ERROR");
    assert_eq!(err["field"], "events[1]");
    assert!(
        err["message"]
            .as_str()
            .is_some_and(|m| m.contains("command.finished")),
        "{err}"
    );
    let (code, err) = env
        .post(
            "/api/v1/webhooks",
            &json!({"url": "https://hooks.example.invalid/x", "events": "command.completed"}),
        )
        .await
        .expect("post");
    assert_eq!(code, 400, "{err}");
    assert_eq!(err["field"], "events", "{err}");
    let (code, list) = env.get("/api/v1/webhooks").await.expect("list");
    assert_eq!((code, list.clone()), (200, json!([])), "nothing was added");

    let mut ids = Vec::new();
    for events in [json!(["campaign.progress"]), json!([])] {
        let (code, w) = env
            .post(
                "/api/v1/webhooks",
                &json!({"url": "https://hooks.example.invalid/x", "events": events}),
            )
            .await
            .expect("post");
        assert_eq!(code, 201, "{w}");
        ids.push(w["id"].as_str().expect("id").to_string());
    }
    let other = env
        .server
        .store
        .create_account("other", otagw::clock::now_ms())
        .await
        .expect("account");
    let other_token = env
        .server
        .store
        .create_token(&other.id, "t", otagw::clock::now_ms())
        .await
        .expect("token");
    let (code, list) = call(&env, Method::GET, "/api/v1/webhooks", &base, &other_token).await;
    assert_eq!((code, list), (200, json!([])));
    let path = format!("/api/v1/webhooks/{}", ids[0]);
    let (code, body) = call(&env, Method::DELETE, &path, &base, &other_token).await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["error"], "NOT_FOUND");
    let (_, list) = env.get("/api/v1/webhooks").await.expect("list");
    assert_eq!(list.as_array().map(Vec::len), Some(2), "{list}");
    let (code, body) = call(&env, Method::DELETE, &path, &base, &env.token).await;
    assert_eq!(code, 204, "{body}");
    let (_, list) = env.get("/api/v1/webhooks").await.expect("list");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], ids[1].as_str());
    assert_eq!(list[0]["events"], json!([]));
    let (code, _) = call(&env, Method::DELETE, &path, &base, &env.token).await;
    assert_eq!(code, 404, "deleted twice");
    env.shutdown().await;
}

/// Two gateways on one database and one SMSC: each command is sent once, by one of them, and
/// the PoRs (which the SMSC spreads over both gateways' binds) reach their commands.
async fn two_gateways_never_send_a_command_twice(backend: &str) {
    let env = env_for(
        backend,
        DevOptions {
            cards: 20,
            ..DevOptions::default()
        },
    )
    .await;
    let peer = env.start_peer("otagw-peer").await.expect("peer gateway");
    let bases = [env.server.base_url(), peer.base_url()];
    let n = 120;
    let mut ids = Vec::new();
    for i in 0..n {
        let iccid = env.iccid(i % 20).expect("card");
        let r = env
            .client
            .post(format!("{}/api/v1/ota/commands", bases[i % 2]))
            .bearer_auth(&env.token)
            .json(&cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap_or_default();
        ids.push(v["commandId"].as_str().unwrap_or_default().to_string());
    }
    for id in &ids {
        let r = env
            .wait_done(id, Duration::from_secs(60))
            .await
            .expect("done");
        assert_eq!(r["status"], "SUCCESS", "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
        let kinds = events(&r);
        assert_eq!(
            kinds.iter().filter(|k| *k == "SENT").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| *k == "SUCCESS").count(),
            1,
            "{kinds:?}"
        );
    }
    // Each card ran each of its commands once: its counter moved once per command.
    for i in 0..20 {
        let msisdn = env.msisdn(i).expect("card");
        let counter = env
            .fleet
            .with_card(&msisdn, |c| c.key_set(1).map(|k| k.counter().value()))
            .flatten()
            .unwrap_or(0);
        assert_eq!(counter, (n / 20) as u64, "card {i}");
    }
    // On PostgreSQL (the backend for several gateways) both sent some of the commands. (On
    // one SQLite file the first gateway to claim may take everything.)
    let sends = (env.server.gateway.sends(), peer.gateway.sends());
    assert_eq!(sends.0 + sends.1, n as u64, "sends {sends:?}");
    if backend == "postgres" {
        assert!(sends.0 > 0 && sends.1 > 0, "sends {sends:?}");
    }
    peer.shutdown().await;
    env.shutdown().await;
}

/// A command whose PoR another gateway took (here: its result written straight into the
/// store, as that gateway would) stops waiting here within a sweep of the ended-elsewhere watch,
/// not after its PoR timeout, and is not sent again. (Each waiting command used to read its own
/// row every 2 s.)
async fn a_command_ended_elsewhere_stops_waiting_here(backend: &str) {
    let env = env_for(
        backend,
        DevOptions {
            por_timeout: Duration::from_secs(30),
            attempts: 1,
            // Accepted by the SMSC, then lost: no PoR ever comes here.
            smsc_faults: Some(otagw_sms::smsc_sim::FaultConfig {
                drop_share: 1.0,
                ..Default::default()
            }),
            ..DevOptions::default()
        },
    )
    .await;
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(
        &env,
        &cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, r) = env
            .get(&format!("/api/v1/ota/commands/{id}"))
            .await
            .expect("get");
        if r["status"] == "SENT" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never sent: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.server.gateway.in_flight(), 1);
    let store = env.server.gateway.store().clone();
    let ended_at = std::time::Instant::now();
    let applied = store
        .transition(
            &env.account_id,
            &id,
            &otagw::store::Transition {
                from: vec![
                    otagw::command::CommandStatus::Sent,
                    otagw::command::CommandStatus::Delivered,
                ],
                to: otagw::command::CommandStatus::Success,
                event: "SUCCESS".into(),
                detail: "PoR taken by another gateway".into(),
                response: None,
                error: None,
                at: otagw::clock::now_ms(),
                new_keys: None,
                events: Vec::new(),
            },
        )
        .await
        .expect("transition");
    assert!(applied);
    while env.server.gateway.in_flight() > 0 {
        assert!(
            ended_at.elapsed() < Duration::from_secs(10),
            "still waiting after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waited = ended_at.elapsed();
    assert!(
        waited < Duration::from_millis(1_500),
        "noticed after {waited:?} (a sweep is every {:?})",
        otagw::pipeline::ended::SWEEP_EVERY
    );
    let (_, r) = env
        .get(&format!("/api/v1/ota/commands/{id}"))
        .await
        .expect("get");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let kinds = events(&r);
    assert_eq!(
        kinds.iter().filter(|k| *k == "SENT").count(),
        1,
        "{kinds:?}"
    );
    env.shutdown().await;
}

async fn applet_upload_install_delete(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let msisdn = env.msisdn(0).expect("card");
    let url = "/api/v1/applets?name=hello";
    let (code, _) = env
        .post_bytes(url, b"not a cap".to_vec())
        .await
        .expect("upload");
    assert_eq!(code, 422);
    let (code, up) = env
        .post_bytes(url, devkit::sample_load_file(1500))
        .await
        .expect("upload");
    assert_eq!(code, 201, "{up}");
    let applet = up["appletId"].as_str().unwrap_or_default().to_string();
    let mut install = cmd(
        "APP_INSTALL",
        &iccid,
        json!({"parameters": {"appletId": applet, "instanceAid": "F001020304050102"}}),
    );
    install["security"]["tar"] = json!("000000");
    let id = post_ok(&env, &install).await;
    let r = env
        .wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let instances = env
        .fleet
        .with_card(&msisdn, |c| {
            c.registry()
                .applets()
                .iter()
                .map(|a| a.aid.to_string())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        instances.iter().any(|a| a == "F001020304050102"),
        "{instances:?}"
    );
    let mut delete = cmd(
        "APP_DELETE",
        &iccid,
        json!({"parameters": {"aid": "F00102030405", "related": true}}),
    );
    delete["security"]["tar"] = json!("000000");
    let id = post_ok(&env, &delete).await;
    let r = env
        .wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    let left = env
        .fleet
        .with_card(&msisdn, |c| {
            c.registry().applets().len() + c.registry().load_files().len()
        })
        .unwrap_or(99);
    assert_eq!(left, 0);
    // An applet of another account, or none: 404 naming the field.
    let mut missing = install.clone();
    missing["data"]["parameters"]["appletId"] = json!("nope");
    let (code, body) = env
        .post("/api/v1/ota/commands", &missing)
        .await
        .expect("post");
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["field"], "data.parameters.appletId");
    env.shutdown().await;
}

async fn health_reports_the_smsc(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let (code, h) = env
        .get_unauthenticated("/api/v1/ota/health")
        .await
        .expect("health");
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["ready"], true);
    assert_eq!(h["transports"][0]["name"], "sms");
    let DevEnv {
        server,
        smsc,
        client,
        data_dir,
        ..
    } = env;
    smsc.shutdown().await;
    let mut last = (0, Value::Null);
    for _ in 0..100 {
        let r = client
            .get(format!("{}/api/v1/ota/health", server.base_url()))
            .send()
            .await
            .expect("health");
        last = (r.status().as_u16(), r.json().await.unwrap_or_default());
        if last.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert_eq!(last.1["ready"], false);
    assert_eq!(last.1["live"], true);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(data_dir);
}

/// TS 102 225 5.1.1, the SPI's PoR coding, for single commands over SMS: no PoR (`16 00`): the
/// delivery report ends the command with SUCCESS; PoR on error only (`16 3A`): delivery and
/// then the PoR wait with no PoR is SUCCESS, an error PoR is FAILED with the card's status.
/// Each is sent exactly once (a resend would be a replayed counter), and its result says no
/// PoR came. The reserved coding 11 is refused at submission.
async fn por_modes_over_sms(backend: &str) {
    let env = env_for(
        backend,
        DevOptions {
            por_timeout: Duration::from_secs(2),
            ..DevOptions::default()
        },
    )
    .await;
    let iccid = env.iccid(0).expect("card");
    let msisdn = env.msisdn(0).expect("card");
    let with_spi = |spi: &str, tar: &str| {
        let mut c = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
        c["security"]["spi"] = json!(spi);
        c["security"]["tar"] = json!(tar);
        c
    };
    let card_counter = || {
        env.fleet
            .with_card(&msisdn, |c| c.key_set(1).map(|k| k.counter().value()))
            .flatten()
            .unwrap_or(0)
    };
    for (spi, tar, status, por_name) in [
        ("1600", "B00010", "SUCCESS", "no PoR requested"),
        ("163A", "B00010", "SUCCESS", "no error PoR"),
        ("163A", "B00099", "FAILED", "tar_unknown"),
    ] {
        let before = env.smsc.stats().submits_accepted;
        let id = post_ok(&env, &with_spi(spi, tar)).await;
        let r = env
            .wait_done(&id, Duration::from_secs(20))
            .await
            .expect("done");
        assert_eq!(r["status"], status, "SPI {spi}: {r}");
        assert_eq!(r["attempts"], 1, "SPI {spi}: sent once: {r}");
        assert_eq!(
            env.smsc.stats().submits_accepted - before,
            1,
            "SPI {spi}: one submit_sm"
        );
        assert_eq!(r["response"]["porStatusName"], por_name, "SPI {spi}: {r}");
        let kinds = events(&r);
        if status == "SUCCESS" {
            // DELIVERED comes before the end, never after it.
            let d = kinds.iter().position(|k| k == "DELIVERED");
            let s = kinds.iter().position(|k| k == "SUCCESS");
            assert!(d.is_some() && d < s, "{kinds:?}");
            // The card ran it with this counter and saw no other send of it.
            assert_eq!(Some(card_counter()), r["counter"].as_u64(), "{r}");
        } else {
            assert_eq!(r["response"]["porStatus"], "09", "{r}");
        }
    }
    let (code, answer) = env
        .post("/api/v1/ota/commands", &with_spi("1603", "B00010"))
        .await
        .expect("post");
    assert_eq!(code, 422, "{answer}");
    assert!(answer.to_string().contains("security.spi"), "{answer}");
    let mut key_update = with_spi("1600", "B00010");
    key_update["type"] = json!("KEY_UPDATE");
    let (code, answer) = env
        .post("/api/v1/ota/commands", &key_update)
        .await
        .expect("post");
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer.to_string().contains("KEY_UPDATE needs a PoR"),
        "{answer}"
    );
    env.shutdown().await;
}

/// The Prometheus figures agree with the store after a mixed run: commands finished by status,
/// delivery reports (one per DELIVERED event) and PoR latencies (one per success a PoR ended).
async fn metrics_agree_with_the_store(backend: &str) {
    let env = env_for(
        backend,
        DevOptions {
            por_timeout: Duration::from_secs(2),
            ..DevOptions::default()
        },
    )
    .await;
    let mut ids = Vec::new();
    for (i, (spi, apdu)) in [
        ("1639", "00A40004023F00"),
        ("1639", "00A40004026F99"),
        ("1600", "00A40004023F00"),
        ("163A", "00A40004023F00"),
        ("1639", "00A40004022FE2"),
    ]
    .iter()
    .enumerate()
    {
        let mut c = cmd(
            "RFM",
            &env.iccid(i % 5).expect("card"),
            json!({"apdus": [apdu]}),
        );
        c["security"]["spi"] = json!(spi);
        ids.push(post_ok(&env, &c).await);
    }
    let mut by_status = std::collections::BTreeMap::<String, u64>::new();
    let mut por_successes = 0u64;
    for id in &ids {
        let r = env
            .wait_done(id, Duration::from_secs(20))
            .await
            .expect("done");
        *by_status
            .entry(r["status"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
        if r["status"] == "SUCCESS" && r["response"]["porStatus"] != "none" {
            por_successes += 1;
        }
    }
    // Late delivery reports (after the PoR) are recorded too: let them land, then re-read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut delivered_events = 0u64;
    for id in &ids {
        let (_, r) = env
            .get(&format!("/api/v1/ota/commands/{id}"))
            .await
            .expect("command");
        delivered_events += events(&r).iter().filter(|k| *k == "DELIVERED").count() as u64;
    }
    let text = env
        .client
        .get(format!("{}/metrics", env.server.base_url()))
        .bearer_auth(&env.token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    let value = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    for (status, n) in &by_status {
        assert_eq!(
            value(&format!(
                "otagw_commands_finished_total{{transport=\"sms\",status=\"{status}\""
            )),
            *n,
            "{status}: {text}"
        );
    }
    assert_eq!(by_status.get("SUCCESS"), Some(&4), "{by_status:?}");
    assert_eq!(
        value("otagw_delivery_reports_total"),
        delivered_events,
        "{text}"
    );
    assert!(
        delivered_events >= 5,
        "every command was delivered: {delivered_events}"
    );
    assert_eq!(value("otagw_por_seconds_count"), por_successes, "{text}");
    env.shutdown().await;
}

/// A command (or a batch's command) naming a transport this gateway does not run is refused
/// at submission, naming `transport` and the transports it has, and nothing is sent: it is
/// not sent by SMS while its result says HTTPS / CAT_TP.
async fn unconfigured_transport_is_refused(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let before = env.smsc.stats().submits_accepted;
    for transport in ["https", "catp"] {
        let mut c = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
        c["transport"] = json!(transport);
        let (code, body) = env.post("/api/v1/ota/commands", &c).await.expect("post");
        assert_eq!(code, 422, "{transport}: {body}");
        assert_eq!(body["error"], "VALIDATION_ERROR", "{body}");
        assert_eq!(body["field"], "transport", "{body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("{transport:?} is not configured")),
            "{body}"
        );
        assert!(message.ends_with("it offers sms"), "{body}");
        let ok = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
        let (code, body) = env
            .post("/api/v1/ota/batch", &json!({"commands": [ok, c]}))
            .await
            .expect("post");
        assert_eq!(code, 422, "{transport}: {body}");
        assert_eq!(body["field"], "commands[1].transport", "{body}");
    }
    // SMS itself is accepted.
    let mut c = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
    c["transport"] = json!("sms");
    let id = post_ok(&env, &c).await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["transport"], "sms", "{r}");
    // Only that one was sent.
    assert_eq!(env.smsc.stats().submits_accepted - before, 1);
    env.shutdown().await;
}

/// Adding a card another account holds is refused (an ICCID belongs to one account) with the
/// very answer its own account gets for adding it again: it does not say where the card is.
async fn another_accounts_iccid_is_refused_without_saying_where(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let held = env.iccid(0).expect("card");
    let other = env
        .server
        .store
        .create_account("other", otagw::clock::now_ms())
        .await
        .expect("account");
    let token = env
        .server
        .store
        .create_token(&other.id, "t", otagw::clock::now_ms())
        .await
        .expect("token");
    let k = "00112233445566778899AABBCCDDEEFF";
    let body = json!({"cards": [
        {"iccid": "898800000000000991", "keySets": [{"version": 1, "kic": k, "kid": k}]},
        {"iccid": held, "keySets": [{"version": 1, "kic": k, "kid": k}]},
    ]});
    let post = |token: String| {
        let body = body.clone();
        let env = &env;
        async move {
            let r = env
                .client
                .post(format!("{}/api/v1/cards", env.server.base_url()))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .expect("post");
            let code = r.status().as_u16();
            let mut v: Value = r.json().await.unwrap_or_default();
            v.as_object_mut().map(|o| o.remove("timestamp"));
            (code, v)
        }
    };
    let (code, theirs) = post(token).await;
    assert_eq!(code, 409, "{theirs}");
    assert_eq!(theirs["field"], "cards[1].iccid", "{theirs}");
    let message = theirs["message"].as_str().unwrap_or_default();
    assert!(!message.contains("exists"), "{theirs}");
    assert!(!message.contains("account"), "{theirs}");
    // The holder's own answer is the same, word for word.
    let (code, own) = post(env.token.clone()).await;
    assert_eq!(code, 409, "{own}");
    assert_eq!(own, theirs);
    // All or none: the first card was not added for either.
    let (code, _) = env
        .get("/api/v1/cards/898800000000000991")
        .await
        .expect("get");
    assert_eq!(code, 404);
    // The same ICCID twice in one request names both places.
    let (code, twice) = env
        .post(
            "/api/v1/cards",
            &json!({"cards": [body["cards"][0].clone(), body["cards"][0].clone()]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 422, "{twice}");
    assert_eq!(twice["field"], "cards[1].iccid", "{twice}");
    env.shutdown().await;
}

/// A `target.imsi` / `target.msisdn` that is not the card's is refused at submission (422
/// naming the field), not accepted and failed when the pipeline gets to it.
async fn wrong_target_identity_is_refused_at_submission(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let (code, card) = env
        .get(&format!("/api/v1/cards/{iccid}"))
        .await
        .expect("card");
    assert_eq!(code, 200, "{card}");
    let imsi = card["imsi"]
        .as_str()
        .expect("the card has an IMSI")
        .to_string();
    let msisdn = card["msisdn"].as_str().expect("MSISDN").to_string();
    let wrong_imsi = if imsi.ends_with('1') {
        format!("{}2", &imsi[..imsi.len() - 1])
    } else {
        format!("{}1", &imsi[..imsi.len() - 1])
    };
    let with = |imsi: &str, msisdn: &str| {
        let mut c = cmd("RFM", &iccid, json!({"apdus": ["00A40004023F00"]}));
        c["target"]["imsi"] = json!(imsi);
        c["target"]["msisdn"] = json!(msisdn);
        c
    };
    let (code, body) = env
        .post("/api/v1/ota/commands", &with(&wrong_imsi, &msisdn))
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "target.imsi", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&wrong_imsi),
        "{body}"
    );
    let (code, body) = env
        .post("/api/v1/ota/commands", &with(&imsi, "31699999999"))
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "target.msisdn", "{body}");
    let (code, body) = env
        .post(
            "/api/v1/ota/batch",
            &json!({"commands": [with(&wrong_imsi, &msisdn)]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "commands[0].target.imsi", "{body}");
    // The right ones go through (MSISDN with or without +).
    let id = post_ok(&env, &with(&imsi, &format!("+{msisdn}"))).await;
    let r = env
        .wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    env.shutdown().await;
}

async fn send(
    env: &DevEnv,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = env
        .client
        .request(method, format!("{}{path}", env.server.base_url()))
        .bearer_auth(&env.token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("request");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

/// Cards listed by prefixes a page at a time, updated field by field (each bad field named),
/// deleted (409 naming the live command, then gone; its finished command still readable);
/// another account's card answers 404 like a missing one; ICCIDs Luhn-checked when added.
async fn cards_listed_updated_deleted(backend: &str) {
    use reqwest::Method;
    let env = env_for(
        backend,
        DevOptions {
            paused: true,
            ..Default::default()
        },
    )
    .await;
    // The ICCID check of `otagw provision`: a wrong Luhn digit is refused, naming the field.
    let (code, body) = env
        .post(
            "/api/v1/cards",
            &json!({"cards": [{"iccid": "8933012300000000013", "keySets": []}]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "cards[0].iccid");
    assert!(body["message"].as_str().unwrap().contains("Luhn"), "{body}");
    let (code, body) = env
        .post(
            "/api/v1/cards",
            &json!({"cards": [
                {"iccid": "8933012300000000012", "imsi": "208010000000012", "msisdn": "33610000012"},
                {"iccid": "8933012300000000020F", "imsi": "208010000000020",
                 "attributes": {"cardClass": "uicc"}}]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 201, "{body}");

    // Listing: prefixes, pages.
    let (code, page) = env
        .get("/api/v1/cards?iccid=89330123&limit=1")
        .await
        .unwrap();
    assert_eq!(code, 200, "{page}");
    assert_eq!(page["cards"].as_array().unwrap().len(), 1);
    assert_eq!(page["cards"][0]["iccid"], "8933012300000000012");
    assert_eq!(page["nextAfter"], "8933012300000000012");
    let (_, page) = env
        .get("/api/v1/cards?iccid=89330123&limit=1&after=8933012300000000012")
        .await
        .unwrap();
    assert_eq!(page["cards"][0]["iccid"], "8933012300000000020");
    assert!(page.get("nextAfter").is_none(), "{page}");
    let (_, page) = env.get("/api/v1/cards?imsi=20801000000002").await.unwrap();
    let listed: Vec<&str> = page["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["iccid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["8933012300000000020"]);
    let (_, page) = env.get("/api/v1/cards?msisdn=%2B3361").await.unwrap();
    assert_eq!(page["cards"].as_array().unwrap().len(), 1, "{page}");
    for (query, field) in [
        ("iccid=89x", "iccid"),
        ("imsi=2%25", "imsi"),
        ("limit=0", "limit"),
    ] {
        let (code, body) = env.get(&format!("/api/v1/cards?{query}")).await.unwrap();
        assert_eq!(code, 422, "{query}: {body}");
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    // Key versions and counters, never key values.
    let (_, all) = env.get("/api/v1/cards?limit=1000").await.unwrap();
    let fleet_card = env.iccid(0).expect("card");
    let text = all.to_string();
    assert!(text.contains(&fleet_card) && text.contains("keyVersions"));
    assert!(!text.contains("kic") && !text.contains("kid"), "{text}");

    // Update: each bad field named; unknown fields refused; a good change applied.
    let path = "/api/v1/cards/8933012300000000012";
    for (body, field) in [
        (json!({"msisdn": "33a"}), "msisdn"),
        (json!({"imsi": "123"}), "imsi"),
        (
            json!({"attributes": {"cardClass": "sim-ish"}}),
            "attributes.cardClass",
        ),
        (json!({"attributes": {"PIN1": "1234"}}), "attributes.PIN1"),
        (json!({}), "body"),
    ] {
        let (code, answer) = send(&env, Method::PATCH, path, Some(body.clone())).await;
        assert_eq!(code, 422, "{body}: {answer}");
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    let (code, answer) = send(&env, Method::PATCH, path, Some(json!({"iccid": "1"}))).await;
    assert_eq!(
        (code, answer["field"].as_str()),
        (400, Some("iccid")),
        "{answer}"
    );
    let (code, card) = send(
        &env,
        Method::PATCH,
        path,
        Some(json!({"msisdn": "+33699999999", "attributes": {"cardClass": "gsm", "note": "x"}})),
    )
    .await;
    assert_eq!(code, 200, "{card}");
    assert_eq!(card["msisdn"], "33699999999");
    assert_eq!(card["imsi"], "208010000000012");
    assert_eq!(card["attributes"], json!({"cardClass": "gsm", "note": "x"}));
    let (code, card) = send(
        &env,
        Method::PATCH,
        path,
        Some(json!({"attributes": {"note": null}})),
    )
    .await;
    assert_eq!(code, 200, "{card}");
    assert_eq!(card["attributes"], json!({"cardClass": "gsm"}));
    assert_eq!(env.get(path).await.unwrap().1, card);

    // Another account: 404 for its GET, PATCH and DELETE alike, and the card is unchanged.
    let store = &env.server.store;
    let other = store
        .create_account("other", otagw::clock::now_ms())
        .await
        .expect("account");
    let token = store
        .create_token(&other.id, "t", otagw::clock::now_ms())
        .await
        .expect("token");
    let base = env.server.base_url();
    for method in [Method::GET, Method::DELETE] {
        let (code, body) = call(&env, method.clone(), path, &base, &token).await;
        assert_eq!(code, 404, "{method} {body}");
        let (missing, missing_body) = call(
            &env,
            method.clone(),
            "/api/v1/cards/8933012300000000038",
            &base,
            &token,
        )
        .await;
        assert_eq!(missing, 404);
        assert_eq!(body["error"], missing_body["error"]);
    }
    let r = env
        .client
        .patch(format!("{base}{path}"))
        .bearer_auth(&token)
        .json(&json!({"msisdn": "1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(env.get(path).await.unwrap().1["msisdn"], "33699999999");

    // Delete: a live command refuses it (409 naming why); once cancelled, the card goes and
    // the command stays readable.
    let id = post_ok(
        &env,
        &cmd("RFM", &fleet_card, json!({"apdus": ["00A40004023F00"]})),
    )
    .await;
    let card_path = format!("/api/v1/cards/{fleet_card}");
    let (code, body) = send(&env, Method::DELETE, &card_path, None).await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "CARD_IN_USE");
    assert!(body["message"].as_str().unwrap().contains(&id), "{body}");
    assert_eq!(env.get(&card_path).await.unwrap().0, 200);
    let (code, body) = send(
        &env,
        Method::DELETE,
        &format!("/api/v1/ota/commands/{id}"),
        None,
    )
    .await;
    assert!(code < 300, "{body}");
    let (code, body) = send(&env, Method::DELETE, &card_path, None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["commandsKept"], 1);
    assert!(body["keySetsDeleted"].as_u64().unwrap() >= 1, "{body}");
    assert_eq!(env.get(&card_path).await.unwrap().0, 404);
    let (code, body) = env
        .get(&format!("/api/v1/ota/commands/{id}"))
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    let (code, _) = send(&env, Method::DELETE, &card_path, None).await;
    assert_eq!(code, 404);

    // The document has the new operations.
    let (_, doc) = env.get("/api/v1/openapi.json").await.unwrap();
    assert!(doc["paths"]["/api/v1/cards"]["get"].is_object());
    assert!(doc["paths"]["/api/v1/cards/{iccid}"]["patch"].is_object());
    assert!(doc["paths"]["/api/v1/cards/{iccid}"]["delete"].is_object());
    env.shutdown().await;
}

/// Every error is the JSON error body with its status, the framework's own rejections too (a
/// path id that does not parse, a method the route lacks), a JSON body up to the stated 16 MiB
/// is read (axum's default stopped at 2 MB), and the document lists 401 on every operation
/// that needs a token and 400 where something is parsed.
async fn errors_are_json_and_documented(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let base = env.server.base_url();
    let send = |m: reqwest::Method, path: &str| {
        env.client
            .request(m, format!("{base}{path}"))
            .bearer_auth(&env.token)
    };
    for (method, path, status) in [
        (reqwest::Method::GET, "/api/v1/campaigns/abc", 400),
        (reqwest::Method::PUT, "/api/v1/ota/commands", 405),
        (reqwest::Method::GET, "/api/v1/nothing-here", 404),
    ] {
        let r = send(method.clone(), path).send().await.expect("request");
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let ct = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(ct.starts_with("application/json"), "{method} {path}: {ct}");
        let body: Value = r.json().await.expect("JSON body");
        assert!(
            body["error"].is_string() && body["message"].is_string(),
            "{body}"
        );
    }
    // 3 MB of JSON: read and judged (422 on the field), not refused as too long.
    let mut big = cmd(
        "RFM",
        "8949000000000000000",
        json!({"apdus": ["00A40004023F00"]}),
    );
    big["padding"] = json!("x".repeat(3 << 20));
    let r = send(reqwest::Method::POST, "/api/v1/ota/commands")
        .json(&big)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("JSON body");
    assert_ne!(status, 413, "{body}");
    assert!(
        !body.to_string().contains("length limit"),
        "a 3 MB body was cut at axum's 2 MB default: {body}"
    );
    let (_, doc) = env.get("/api/v1/openapi.json").await.expect("document");
    let ops = doc["paths"]["/api/v1/campaigns/{id}"]["get"]["responses"].clone();
    assert!(ops["401"].is_object() && ops["400"].is_object(), "{ops}");
    let health = doc["paths"]["/api/v1/ota/health"]["get"]["responses"].clone();
    assert!(health["401"].is_null(), "health needs no token: {health}");
    env.shutdown().await;
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name("sqlite").await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name("postgres").await })*
        }
    };
}

both_backends!(
    cards_listed_updated_deleted,
    rfm_round_trip_and_history,
    file_and_profile_updates_change_the_card,
    error_status_word_fails_the_command,
    bad_input_names_the_field,
    cancel_a_pending_command,
    cancel_only_before_sending,
    auth_and_tenancy,
    batch_sequential_with_stop_on_error,
    key_rotation_then_commands_use_the_new_keys,
    documents_and_metrics,
    webhooks_get_signed_events,
    tokens_listed_and_revoked,
    webhooks_deleted_and_event_names_checked,
    two_gateways_never_send_a_command_twice,
    a_command_ended_elsewhere_stops_waiting_here,
    applet_upload_install_delete,
    health_reports_the_smsc,
    por_modes_over_sms,
    metrics_agree_with_the_store,
    unconfigured_transport_is_refused,
    another_accounts_iccid_is_refused_without_saying_where,
    wrong_target_identity_is_refused_at_submission,
    errors_are_json_and_documented,
);
