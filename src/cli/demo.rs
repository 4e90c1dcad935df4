//! `otagw demo`: the whole gateway on embedded defaults, in one process. It starts the SMSC
//! simulator with a fleet of virtual UICCs, the gateway (SQLite store in a temporary
//! directory, engine, REST API on loopback) bound to it over SMPP, adds the cards through the
//! API, sends commands of different types through the API, and prints what each card answered
//! and how long it took. No setup; nothing outside loopback.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use otagw::devkit::{self, DevOptions};
use otagw::script::rfm::CardClass;

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Virtual cards behind the simulator.
    #[arg(long, default_value_t = 5)]
    cards: usize,
    /// New service provider name (PROFILE_UPDATE).
    #[arg(long, default_value = "otagw demo")]
    spn: String,
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if args.cards < 3 {
        bail!("--cards: at least 3 (the demo uses three cards)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(demo(args))
}

fn command(kind: &str, iccid: &str, tar: &str, data: serde_json::Value) -> serde_json::Value {
    json!({
        "type": kind,
        "target": {"iccid": iccid},
        // 16 39: ciphered + CC + counter must be higher; PoR always, ciphered + CC, by SMS-SUBMIT.
        "security": {"spi": "1639", "kic": "12", "kid": "12", "tar": tar},
        "data": data,
    })
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    println!(
        "otagw demo: starting the SMSC simulator with {} virtual cards, and the gateway",
        args.cards
    );
    let env = devkit::start(DevOptions {
        cards: args.cards,
        // HTTPS OTA too: the SCP81 admin server on loopback, PSKs on the cards.
        https: Some(otagw::config::HttpsSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            window_secs: 10,
            ..Default::default()
        }),
        // CAT_TP too: the UDP endpoint on loopback, terminals in front of the cards that open
        // the link a push asks for.
        catp: Some(otagw::config::CatpConfig {
            link_timeout_secs: 5,
            ..Default::default()
        }),
        ..DevOptions::default()
    })
    .await?;
    println!(
        "  gateway API {} (store {}, SMPP to {}); {} cards added over REST in {:.0} ms",
        env.server.base_url(),
        env.server.store.backend(),
        env.smsc.local_addr(),
        args.cards,
        started.elapsed().as_secs_f64() * 1e3
    );
    let iccid = |i: usize| env.iccid(i).context("card");
    let (c0, c1, c2) = (iccid(0)?, iccid(1)?, iccid(2)?);
    let class = CardClass::Uicc.cla();
    let commands = vec![
        (
            "read EF ICCID (RFM)",
            command(
                "RFM",
                &c0,
                "B00010",
                json!({"apdus": [
                    format!("{class:02X}A40004023F00"),
                    format!("{class:02X}A40004022FE2"),
                    format!("{class:02X}B000000A"),
                ]}),
            ),
        ),
        (
            "service provider name (PROFILE_UPDATE)",
            command(
                "PROFILE_UPDATE",
                &c0,
                "B00010",
                json!({"command": "UPDATE_SPN", "parameters": {"serviceProviderName": args.spn, "spnDisplayCondition": 1}}),
            ),
        ),
        (
            "write EF SPN (FILE_UPDATE)",
            command(
                "FILE_UPDATE",
                &c1,
                "B00010",
                json!({"parameters": {"path": "3F00/7FFF/6F46", "data": "016F7461677700FFFFFFFFFFFFFFFFFF"}}),
            ),
        ),
        (
            "read EF ICCID over HTTPS (RFM, SCP81 trigger + PSK-TLS session)",
            {
                let mut c = command(
                    "RFM",
                    &c1,
                    "B00010",
                    json!({"apdus": [
                        format!("{class:02X}A40004023F00"),
                        format!("{class:02X}A40004022FE2"),
                        format!("{class:02X}B000000A"),
                    ]}),
                );
                c["transport"] = json!("https");
                c
            },
        ),
        ("read EF ICCID over CAT_TP (RFM, push SMS + BIP link)", {
            let mut c = command(
                "RFM",
                &c2,
                "B00010",
                json!({"apdus": [
                    format!("{class:02X}A40004023F00"),
                    format!("{class:02X}A40004022FE2"),
                    format!("{class:02X}B000000A"),
                ]}),
            );
            c["transport"] = json!("catp");
            c
        }),
        (
            "read a missing file (RFM, error SW)",
            command(
                "RFM",
                &c2,
                "B00010",
                json!({"apdus": [format!("{class:02X}A40004023F00"), format!("{class:02X}A40004026FFF")]}),
            ),
        ),
    ];
    let mut ids = Vec::new();
    for (label, body) in &commands {
        let (code, answer) = env.post("/api/v1/ota/commands", body).await?;
        if code != 202 {
            bail!("POST {label}: {code} {answer}");
        }
        let id = answer["commandId"]
            .as_str()
            .context("commandId")?
            .to_string();
        ids.push((label.to_string(), id, Instant::now()));
    }
    let (code, rotation) = env
        .post(
            "/api/v1/ota/security/rotate-keys",
            &json!({"iccid": c2, "keyVersion": 1}),
        )
        .await?;
    if code != 202 {
        bail!("POST rotate-keys: {code} {rotation}");
    }
    if let Some(id) = rotation["commands"][0]["commandId"].as_str() {
        ids.push((
            "new keys for key set 1 (KEY_UPDATE)".into(),
            id.to_string(),
            Instant::now(),
        ));
    }
    println!();
    println!("| command | card | status | PoR | last SW | data | ms |");
    println!("|---|---|---|---|---|---|---|");
    let mut failures = 0;
    for (label, id, posted) in &ids {
        let r = env.wait_done(id, Duration::from_secs(30)).await?;
        let ms = posted.elapsed().as_secs_f64() * 1e3;
        let status = r["status"].as_str().unwrap_or("?");
        let por = r["response"]["porStatusName"].as_str().unwrap_or("-");
        let sw = r["response"]["statusCode"]
            .as_u64()
            .map(|s| format!("{s:04X}"))
            .unwrap_or_else(|| "-".into());
        let data = r["response"]["data"]
            .as_str()
            .filter(|d| !d.is_empty())
            .unwrap_or("-");
        let card = r["target"]["iccid"].as_str().unwrap_or("?");
        println!("| {label} | {card} | {status} | {por} | {sw} | {data} | {ms:.0} |");
        if let Some(e) = r["error"]["message"].as_str() {
            println!(
                "|   error: {} {e} | | | | | | |",
                r["error"]["code"].as_str().unwrap_or("")
            );
        }
        if status != "SUCCESS" && !label.contains("error SW") {
            failures += 1;
        }
    }
    let (_, card) = env.get(&format!("/api/v1/cards/{c2}")).await?;
    println!();
    println!(
        "card {c2} key versions after KEY_UPDATE: {}",
        card["keyVersions"]
    );
    failures += subscriptions(&env, &c0).await?;
    let (_, metrics) = env.get("/api/v1/ota/metrics").await?;
    println!("metrics: {metrics}");
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    env.shutdown().await;
    if failures > 0 {
        bail!("{failures} command(s) did not succeed");
    }
    Ok(ExitCode::SUCCESS)
}

/// Polls a subscription operation until it is DONE or FAILED.
async fn operation_done(env: &devkit::DevEnv, id: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, op) = env
            .get(&format!("/api/v1/subscription-operations/{id}"))
            .await?;
        if code != 200 {
            bail!("GET operation {id}: {code} {op}");
        }
        if matches!(op["state"].as_str(), Some("DONE" | "FAILED")) {
            return Ok(op);
        }
        if Instant::now() > deadline {
            bail!("operation {id} still {} after 30 s", op["state"]);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Subscription management on card `iccid`: a download with a switch (the card's
/// notification comes back as an MO SMS) and an audit. Returns the failures.
async fn subscriptions(env: &devkit::DevEnv, iccid: &str) -> anyhow::Result<usize> {
    println!();
    println!("subscription management (Secure Router), card {iccid}:");
    let _ticker = env.tick_subscriptions(
        std::sync::Arc::new(otagw::sim::subscriptions::EveryNetwork),
        Duration::from_millis(100),
    );
    let (code, body) = env
        .post(
            "/api/v1/subscription-templates",
            &json!({"name": "demo-operator", "spn": "otagw", "plmns": ["26201"]}),
        )
        .await?;
    if code != 201 {
        bail!("POST template: {code} {body}");
    }
    let mut failures = 0;
    let steps = [
        (
            "download 262019999000001 and switch to it",
            format!("/api/v1/cards/{iccid}/subscriptions"),
            json!({"template": "demo-operator", "imsi": "262019999000001", "enable": true}),
        ),
        (
            "audit (read the card's registry back)",
            format!("/api/v1/cards/{iccid}/audit"),
            json!({}),
        ),
    ];
    println!("| operation | state | card's answer | ms |");
    println!("|---|---|---|---|");
    for (label, path, body) in steps {
        let posted = Instant::now();
        let (code, accepted) = env.post(&path, &body).await?;
        if code != 202 {
            bail!("POST {path}: {code} {accepted}");
        }
        let id = accepted["operationId"].as_str().context("operationId")?;
        let op = operation_done(env, id).await?;
        let answer = match op["result"]["notification"].as_object() {
            Some(n) => format!(
                "notification {} {}, enabled {}",
                n["seq"],
                n["outcome"].as_str().unwrap_or("?"),
                n["enabled"]
            ),
            None => op["result"]["answer"].as_str().unwrap_or("-").to_string(),
        };
        let state = op["state"].as_str().unwrap_or("?");
        println!(
            "| {label} | {state} | {answer} | {:.0} |",
            posted.elapsed().as_secs_f64() * 1e3
        );
        if state != "DONE" {
            failures += 1;
        }
    }
    let (_, registry) = env
        .get(&format!("/api/v1/cards/{iccid}/subscriptions"))
        .await?;
    println!(
        "registry: sync {}, {}",
        registry["syncState"].as_str().unwrap_or("?"),
        registry["subscriptions"]
            .as_array()
            .map(|subs| subs
                .iter()
                .map(|s| format!(
                    "{} {} {}{}",
                    s["id"],
                    s["imsi"].as_str().unwrap_or("?"),
                    if s["enabled"] == true {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    if s["fallback"] == true {
                        " fallback"
                    } else {
                        ""
                    }
                ))
                .collect::<Vec<_>>()
                .join("; "))
            .unwrap_or_default()
    );
    Ok(failures)
}
