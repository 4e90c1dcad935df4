//! The API reference's shapes, over real HTTP against the dev environment: the transport
//! object (type, security expectations, a command's own timeout, retries and priority), RFC
//! 3339 times, and `details` on error bodies.

use std::time::Duration;

use otagw::devkit::{self, DevEnv, DevOptions};
use serde_json::{json, Value};

async fn env_for(backend: &str, options: DevOptions) -> DevEnv {
    devkit::start_on(backend, options)
        .await
        .expect("dev environment")
}

/// An RFM command reading EF ICCID; SPI 16 39 (CC, ciphered, counter higher, PoR always).
fn cmd(iccid: &str, transport: Value) -> Value {
    json!({
        "type": "RFM",
        "target": {"iccid": iccid},
        "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": "B00010"},
        "data": {"apdus": ["00A40004023F00", "00A40004022FE2", "00B000000A"]},
        "transport": transport,
    })
}

async fn post_ok(env: &DevEnv, body: &Value) -> String {
    let (code, answer) = env.post("/api/v1/ota/commands", body).await.expect("post");
    assert_eq!(code, 202, "{answer}");
    answer["commandId"].as_str().expect("commandId").to_string()
}

/// Milliseconds of an RFC 3339 time as the API writes it (UTC, three decimals, `Z`).
fn time_of(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("{v} is not a string"));
    let shape = text.len() == 24
        && text.ends_with('Z')
        && text.as_bytes().get(10) == Some(&b'T')
        && text.as_bytes().get(19) == Some(&b'.');
    assert!(shape, "{text} is not YYYY-MM-DDTHH:MM:SS.mmmZ");
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .timestamp_millis()
}

/// The object form goes over SMS to the virtual card and returns its PoR; the result's times
/// are RFC 3339 and in order.
async fn object_transport_reaches_the_card(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let before = otagw::clock::now_ms();
    let id = post_ok(
        &env,
        &cmd(
            &iccid,
            json!({
                "type": "SMS",
                "security": {"encryption": true, "signing": true, "counter": true},
                "parameters": {"timeout": 10, "retries": 1, "priority": 2},
            }),
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
    assert_eq!(r["transport"], "sms");
    assert_eq!(r["priority"], "URGENT");

    let created = time_of(&r["createdAt"]);
    let sent = time_of(&r["sentAt"]);
    let completed = time_of(&r["completedAt"]);
    let now = otagw::clock::now_ms();
    assert!(
        before <= created && created <= sent && sent <= completed && completed <= now,
        "{r}"
    );
    assert_eq!(time_of(&r["timestamp"]), completed, "{r}");
    let events = r["events"].as_array().cloned().unwrap_or_default();
    assert!(events.len() >= 3, "{r}");
    for e in &events {
        let at = time_of(&e["at"]);
        assert!(created <= at && at <= now, "{e}");
    }
    env.shutdown().await;
}

/// A command's own timeout and retries: with the SMSC losing every message, `timeout: 1`
/// ends the command TIMEOUT after 1 s per send (the gateway's is 10 s), `retries: 0` sends once
/// and `retries: 2` three times (the gateway's policy is 3 sends).
async fn a_commands_timeout_and_retries_are_its_own(backend: &str) {
    let env = env_for(
        backend,
        DevOptions {
            smsc_faults: Some(otagw_sms::smsc_sim::FaultConfig {
                drop_share: 1.0,
                ..Default::default()
            }),
            por_timeout: Duration::from_secs(10),
            attempts: 3,
            backoff: Duration::from_millis(200),
            ..DevOptions::default()
        },
    )
    .await;
    let once = post_ok(
        &env,
        &cmd(
            &env.iccid(0).expect("card"),
            json!({"type": "SMS", "parameters": {"timeout": 1, "retries": 0}}),
        ),
    )
    .await;
    let thrice = post_ok(
        &env,
        &cmd(
            &env.iccid(1).expect("card"),
            json!({"type": "SMS", "parameters": {"timeout": 1.0, "retries": 2.0}}),
        ),
    )
    .await;
    let r = env
        .wait_done(&once, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["status"], "FAILED", "{r}");
    assert_eq!(r["error"]["code"], "TIMEOUT", "{r}");
    assert_eq!(r["attempts"], 1, "retries 0: one send only: {r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1s") && m.contains("after 1 send")),
        "{r}"
    );
    // The gateway's 10 s would not have ended it yet; 1 s and bookkeeping do.
    let waited = time_of(&r["completedAt"]) - time_of(&r["sentAt"]);
    assert!((900..8_000).contains(&waited), "waited {waited} ms: {r}");

    let r = env
        .wait_done(&thrice, Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(r["error"]["code"], "TIMEOUT", "{r}");
    assert_eq!(r["attempts"], 3, "retries 2: three sends: {r}");
    let waited = time_of(&r["completedAt"]) - time_of(&r["sentAt"]);
    assert!(waited < 9_000, "three 1 s waits took {waited} ms: {r}");
    env.shutdown().await;
}

/// `parameters.priority` is the priority class's rank; given with a top-level `priority`, it
/// is the one that applies (documented on the field).
async fn priority_maps_to_the_classes(backend: &str) {
    let env = env_for(
        backend,
        DevOptions {
            paused: true,
            ..DevOptions::default()
        },
    )
    .await;
    let iccid = env.iccid(0).expect("card");
    for (rank, class) in [(0, "BULK"), (1, "NORMAL"), (2, "URGENT")] {
        let id = post_ok(
            &env,
            &cmd(
                &iccid,
                json!({"type": "SMS", "parameters": {"priority": rank}}),
            ),
        )
        .await;
        let (code, r) = env
            .get(&format!("/api/v1/ota/commands/{id}"))
            .await
            .expect("get");
        assert_eq!(code, 200, "{r}");
        assert_eq!(r["priority"], class, "rank {rank}: {r}");
    }
    let mut same = cmd(
        &iccid,
        json!({"type": "SMS", "parameters": {"priority": 2}}),
    );
    same["priority"] = json!("URGENT");
    post_ok(&env, &same).await;
    let mut both = same.clone();
    both["priority"] = json!("BULK");
    let id = post_ok(&env, &both).await;
    let (code, r) = env
        .get(&format!("/api/v1/ota/commands/{id}"))
        .await
        .expect("get");
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["priority"], "URGENT", "parameters.priority applies: {r}");
    env.shutdown().await;
}

/// Bad transport objects are refused with 422 naming the field, in the error body with
/// `details` and an RFC 3339 `timestamp`; a batch's error names the failing command's index.
async fn bad_shapes_are_refused_naming_the_field(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let cases = [
        (json!({"type": "UDP"}), "transport.type"),
        (json!({"type": "sms"}), "transport.type"),
        // No [https] on this gateway: BIP (SCP81) is not offered.
        (json!({"type": "BIP"}), "transport.type"),
        (
            json!({"type": "SMS", "parameters": {"timeout": 0}}),
            "transport.parameters.timeout",
        ),
        (
            json!({"type": "SMS", "parameters": {"timeout": 86400}}),
            "transport.parameters.timeout",
        ),
        (
            json!({"type": "SMS", "parameters": {"retries": 21}}),
            "transport.parameters.retries",
        ),
        (
            json!({"type": "SMS", "parameters": {"retries": 1.5}}),
            "transport.parameters.retries",
        ),
        (
            json!({"type": "SMS", "parameters": {"priority": 7}}),
            "transport.parameters.priority",
        ),
        // SPI 16 39 ciphers, signs (CC) and has the card check the counter.
        (
            json!({"type": "SMS", "security": {"encryption": false}}),
            "transport.security.encryption",
        ),
        (
            json!({"type": "SMS", "security": {"signing": false}}),
            "transport.security.signing",
        ),
        (
            json!({"type": "SMS", "security": {"counter": false}}),
            "transport.security.counter",
        ),
    ];
    for (transport, field) in cases {
        let (code, body) = env
            .post("/api/v1/ota/commands", &cmd(&iccid, transport.clone()))
            .await
            .expect("post");
        assert_eq!(code, 422, "{transport}: {body}");
        assert_eq!(body["error"], "VALIDATION_ERROR", "{body}");
        assert_eq!(body["field"], field, "{transport}: {body}");
        assert_eq!(body["details"]["field"], field, "{body}");
        time_of(&body["timestamp"]);
    }
    // What the flag was checked against is in the details.
    let (_, body) = env
        .post(
            "/api/v1/ota/commands",
            &cmd(
                &iccid,
                json!({"type": "SMS", "security": {"encryption": false}}),
            ),
        )
        .await
        .expect("post");
    assert_eq!(body["details"]["spi"], "1639", "{body}");
    assert_eq!(body["details"]["requested"], false, "{body}");
    assert_eq!(body["details"]["spiHas"], true, "{body}");

    // A value of the wrong JSON type does not parse: 400, naming the field as every body does.
    let (code, body) = env
        .post(
            "/api/v1/ota/commands",
            &cmd(
                &iccid,
                json!({"type": "SMS", "parameters": {"timeout": "soon"}}),
            ),
        )
        .await
        .expect("post");
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["field"], "transport.parameters.timeout", "{body}");

    // Other validation errors carry details too.
    let mut bad_tar = cmd(&iccid, json!("sms"));
    bad_tar["security"]["tar"] = json!("B0001");
    let (code, body) = env
        .post("/api/v1/ota/commands", &bad_tar)
        .await
        .expect("post");
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"]["field"], "security.tar", "{body}");

    // A batch names the failing command, by field and by index.
    let good = cmd(&iccid, json!({"type": "SMS"}));
    let bad = cmd(
        &iccid,
        json!({"type": "SMS", "parameters": {"retries": 99}}),
    );
    let (code, body) = env
        .post(
            "/api/v1/ota/batch",
            &json!({"commands": [good, bad], "options": {"parallel": false}}),
        )
        .await
        .expect("batch");
    assert_eq!(code, 422, "{body}");
    assert_eq!(
        body["field"], "commands[1].transport.parameters.retries",
        "{body}"
    );
    assert_eq!(body["details"]["index"], 1, "{body}");
    env.shutdown().await;
}

/// Every time the API answers is RFC 3339, and the document says so.
async fn times_are_rfc3339_everywhere(backend: &str) {
    let env = env_for(backend, DevOptions::default()).await;
    let iccid = env.iccid(0).expect("card");
    let (code, b) = env
        .post(
            "/api/v1/ota/batch",
            &json!({"commands": [cmd(&iccid, json!("sms"))]}),
        )
        .await
        .expect("batch");
    assert_eq!(code, 202, "{b}");
    let id = b["commandIds"][0].as_str().unwrap_or_default().to_string();
    env.wait_done(&id, Duration::from_secs(20))
        .await
        .expect("done");
    let batch = b["batchId"].as_str().unwrap_or_default();
    let (_, r) = env
        .get(&format!("/api/v1/ota/batch/{batch}"))
        .await
        .expect("batch");
    time_of(&r["createdAt"]);
    time_of(&r["results"][0]["completedAt"]);
    let (_, card) = env
        .get(&format!("/api/v1/cards/{iccid}"))
        .await
        .expect("card");
    time_of(&card["createdAt"]);
    let (_, tokens) = env.get("/api/v1/tokens").await.expect("tokens");
    time_of(&tokens[0]["createdAt"]);
    let (code, missing) = env
        .get("/api/v1/ota/commands/no-such-command")
        .await
        .expect("get");
    assert_eq!(code, 404, "{missing}");
    time_of(&missing["timestamp"]);

    let (_, doc) = env
        .get_unauthenticated("/api/v1/openapi.json")
        .await
        .expect("document");
    let schemas = &doc["components"]["schemas"];
    for (schema, field) in [
        ("OtaResult", "timestamp"),
        ("OtaResult", "createdAt"),
        ("CommandEvent", "at"),
        ("ErrorBody", "timestamp"),
        ("CardView", "createdAt"),
        ("TokenView", "createdAt"),
        ("CampaignView", "created"),
    ] {
        let p = &schemas[schema]["properties"][field];
        assert_eq!(p["type"], "string", "{schema}.{field}: {p}");
        assert_eq!(p["format"], "date-time", "{schema}.{field}: {p}");
    }
    let details = &schemas["ErrorBody"]["properties"]["details"];
    assert!(details.is_object() && !details.is_null(), "{details}");
    let spec = &schemas["TransportSpec"]["properties"];
    assert!(spec["parameters"].is_object(), "{spec}");
    let kinds = &schemas["TransportType"]["enum"];
    assert_eq!(kinds, &json!(["SMS", "CAT_TP", "BIP"]), "{kinds}");
    // What the server refuses, the document says (Schemathesis: "valid by the schema").
    let events = &schemas["WebhookEvent"]["enum"];
    assert_eq!(
        events,
        &json!(otagw::events::names::PUBLISHED),
        "webhook event names: {events}"
    );
    let rotate = &doc["paths"]["/api/v1/ota/security/rotate-keys"]["post"]["requestBody"]
        ["content"]["application/json"]["schema"];
    let rotate = match rotate.get("$ref").and_then(|r| r.as_str()) {
        Some(r) => &schemas[r.rsplit('/').next().expect("name")],
        None => rotate,
    };
    let any = &rotate["allOf"][1]["anyOf"];
    assert_eq!(
        any,
        &json!([{"type": "object", "required": ["iccid"]}, {"type": "object", "required": ["iccids"]}]),
        "rotate-keys names a card: {rotate}"
    );
    assert_eq!(
        rotate["allOf"][0]["properties"]["transport"]["enum"],
        json!(otagw::command::transport::TRANSPORTS),
        "{rotate}"
    );
    let update = &schemas["UpdateCard"];
    assert_eq!(update["minProperties"], 1, "{update}");
    assert!(update.get("maxProperties").is_none(), "{update}");
    assert_eq!(
        update["properties"]["attributes"]["minProperties"], 1,
        "{update}"
    );
    assert_eq!(
        update["properties"]["attributes"]["propertyNames"]["minLength"], 1,
        "{update}"
    );
    env.shutdown().await;
}

/// The engine reads the time from the clock it is given, not from the system: with a manual
/// clock standing still, a command's creation, send and completion carry the clock's time; a
/// PENDING command expires when the clock passes its validity, not when wall time does.
async fn the_engine_reads_its_clock(backend: &str) {
    const T0: i64 = 1_900_000_000_000; // 2030-03-17T17:46:40Z, far from the machine's time.
    let clock = otagw::clock::ManualClock::at(T0);
    let env = env_for(
        backend,
        DevOptions {
            clock: Some(clock.clone()),
            ..DevOptions::default()
        },
    )
    .await;
    let iccid = env.iccid(0).expect("card");
    let id = post_ok(&env, &cmd(&iccid, json!("sms"))).await;
    let r = env
        .wait_done(&id, Duration::from_secs(30))
        .await
        .expect("done");
    assert_eq!(r["status"], "SUCCESS", "{r}");
    for field in ["createdAt", "sentAt", "completedAt"] {
        assert_eq!(time_of(&r[field]), T0, "{field}: {r}");
    }
    env.shutdown().await;

    let clock = otagw::clock::ManualClock::at(T0);
    let env = env_for(
        backend,
        DevOptions {
            clock: Some(clock.clone()),
            paused: true,
            ..DevOptions::default()
        },
    )
    .await;
    let mut body = cmd(&iccid, json!("sms"));
    body["validityPeriod"] = json!(60);
    let id = post_ok(&env, &body).await;
    // Wall time passes, the clock does not: still PENDING after more than one housekeeping
    // round (at most a second apart).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (_, r) = env
        .get(&format!("/api/v1/ota/commands/{id}"))
        .await
        .expect("get");
    assert_eq!(r["status"], "PENDING", "{r}");
    clock.advance(61_000);
    let r = env
        .wait_done(&id, Duration::from_secs(10))
        .await
        .expect("expired");
    assert_eq!(r["status"], "EXPIRED", "{r}");
    assert_eq!(time_of(&r["completedAt"]), T0 + 61_000, "{r}");
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
    object_transport_reaches_the_card,
    a_commands_timeout_and_retries_are_its_own,
    priority_maps_to_the_classes,
    bad_shapes_are_refused_naming_the_field,
    times_are_rfc3339_everywhere,
    the_engine_reads_its_clock,
);
