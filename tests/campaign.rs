//! Campaigns end to end: the gateway's campaign runner, SMPP to the SMSC simulator, virtual
//! cards, PoRs back, per-card states in the store (SQLite; PostgreSQL when reachable).

use std::time::Duration;

use otagw::campaign::{self, card_state, status, CampaignRequest, CampaignType};
use otagw::devkit::{self, DevEnv, DevOptions};
use otagw::store::campaign::{CampaignTarget, NewCampaign};

async fn env(cards: usize, store_url: Option<String>) -> DevEnv {
    devkit::start(DevOptions {
        cards,
        provision: true,
        store_url,
        ..DevOptions::default()
    })
    .await
    .expect("devkit")
}

/// Runs `case` on a fresh PostgreSQL schema (the local server: the tests need it on
/// 127.0.0.1:5432, see README), then drops the schema.
async fn on_postgres<F: std::future::Future<Output = ()>>(case: impl FnOnce(Option<String>) -> F) {
    let url = devkit::postgres_scratch_url(&devkit::test_database_url())
        .await
        .expect("PostgreSQL (see README: the tests need it on 127.0.0.1:5432)");
    case(Some(url.clone())).await;
    devkit::drop_postgres_scratch(&url).await;
}

async fn create(env: &DevEnv, req: CampaignRequest) -> i64 {
    let store = env.server.store.clone();
    let (profile_id, _) = env.fleet_group.expect("provisioned");
    let profile = store
        .profile(&env.account_id, profile_id)
        .await
        .unwrap()
        .unwrap();
    let budget = env.server.gateway.transports().max_script_len("sms");
    let p = campaign::prepare(&req, None, &profile.defaults, None, budget).expect("prepare");
    store
        .create_campaign(
            &NewCampaign {
                account_id: env.account_id.clone(),
                profile_id,
                name: req.name.clone(),
                campaign_type: p.campaign_type.as_str().into(),
                settings: serde_json::to_string(&p.settings).unwrap(),
                messages_per_card: p.messages_per_card as i64,
            },
            otagw::clock::now_ms(),
        )
        .await
        .expect("create")
        .id
}

async fn wait_status(env: &DevEnv, id: i64, want: &str) {
    for _ in 0..600 {
        let c = env
            .server
            .store
            .campaign(&env.account_id, id)
            .await
            .unwrap()
            .unwrap();
        if c.status == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("campaign {id} did not reach {want}");
}

/// Creates a campaign over REST, starts it on `group`, waits for COMPLETED: its id and the
/// first iteration's card rows.
async fn run_to_completion(
    env: &DevEnv,
    campaign: &serde_json::Value,
    group: i64,
) -> (i64, Vec<otagw::store::campaign::CampaignCardRecord>) {
    let (code, created) = env.post("/api/v1/campaigns", campaign).await.unwrap();
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (code, body) = env
        .post(
            &format!("/api/v1/campaigns/{id}/start"),
            &serde_json::json!({"cardGroup": group}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    wait_status(env, id, status::COMPLETED).await;
    let rows = env
        .server
        .store
        .campaign_cards(id, 1, None, "", 10)
        .await
        .unwrap();
    (id, rows)
}

/// Starts a created campaign on `group` (no data file), waits for COMPLETED: the first
/// iteration's card rows.
async fn run_on_group(
    env: &DevEnv,
    id: i64,
    group: i64,
) -> Vec<otagw::store::campaign::CampaignCardRecord> {
    env.server
        .store
        .start_campaign(
            &env.account_id,
            id,
            &CampaignTarget::Group(group),
            &[],
            otagw::clock::now_ms(),
        )
        .await
        .unwrap();
    wait_status(env, id, status::COMPLETED).await;
    env.server
        .store
        .campaign_cards(id, 1, None, "", 10)
        .await
        .unwrap()
}

/// The counters of key set 1 of the first `n` cards.
async fn counters(env: &DevEnv, n: usize) -> Vec<u64> {
    let mut out = Vec::new();
    for i in 0..n {
        let set = env
            .server
            .store
            .key_set(&env.iccid(i).unwrap(), 1)
            .await
            .unwrap()
            .unwrap();
        out.push(set.counter);
    }
    out
}

async fn count(env: &DevEnv, id: i64, iteration: i64, state: &str) -> u64 {
    env.server
        .store
        .campaign_totals(id)
        .await
        .unwrap()
        .iter()
        .filter(|t| t.iteration == iteration && t.state == state)
        .map(|t| t.cards)
        .sum()
}

fn spn_request(name: &str) -> CampaignRequest {
    CampaignRequest {
        profile: 1,
        name: name.into(),
        campaign_type: Some(CampaignType::Rfm),
        commands: vec![
            "A0A40000027F20".into(),
            "A0A4000002[Fid]".into(),
            "A0D6000011[Spn]".into(),
        ],
        expected_last_sw: Some("9000".into()),
        ..Default::default()
    }
}

fn spn(text: &str) -> String {
    let mut b = vec![0u8];
    b.extend_from_slice(text.as_bytes());
    b.resize(17, 0xFF);
    hex::encode_upper(b)
}

async fn rfm_with_placeholders_and_retry(store_url: Option<String>) {
    let env = env(12, store_url).await;
    let (_, group) = env.fleet_group.unwrap();
    let id = create(&env, spn_request("spn_update")).await;
    // Card 0 selects a file its GSM DF lacks: its PoR is OK but the last SW is not 9000.
    let data: Vec<(String, String)> = (0..12)
        .map(|i| {
            let fid = if i == 0 { "6FC5" } else { "6F46" };
            let value = serde_json::json!({"Fid": fid, "Spn": spn(&format!("Op{i}"))});
            (env.iccid(i).unwrap(), value.to_string())
        })
        .collect();
    let n = env
        .server
        .store
        .start_campaign(
            &env.account_id,
            id,
            &CampaignTarget::Group(group),
            &data,
            otagw::clock::now_ms(),
        )
        .await
        .unwrap();
    assert_eq!(n, 12);
    wait_status(&env, id, status::COMPLETED).await;
    assert_eq!(count(&env, id, 1, card_state::POR_OK).await, 11);
    assert_eq!(count(&env, id, 1, card_state::POR_ERROR).await, 1);
    let failed = env
        .server
        .store
        .campaign_cards(id, 1, Some(card_state::POR_ERROR), "", 10)
        .await
        .unwrap();
    assert_eq!(failed[0].iccid, env.iccid(0).unwrap());
    let detail = failed[0].detail.clone().unwrap_or_default();
    assert!(detail.contains("expected 9000"), "{detail}");
    // The cards hold what their data said.
    for i in 1..12 {
        let msisdn = env.msisdn(i).unwrap();
        let content = env
            .fleet
            .with_card(&msisdn, |c| c.read_file(&[0x3F00, 0x7F20, 0x6F46]))
            .flatten()
            .unwrap();
        assert_eq!(hex::encode_upper(content), spn(&format!("Op{i}")));
    }
    // Retry: a new iteration for the one card that did not succeed.
    let (iteration, cards) = env
        .server
        .store
        .retry_failed(&env.account_id, id, otagw::clock::now_ms())
        .await
        .unwrap();
    assert_eq!((iteration, cards), (2, 1));
    wait_status(&env, id, status::COMPLETED).await;
    assert_eq!(count(&env, id, 2, card_state::POR_ERROR).await, 1);
    assert_eq!(count(&env, id, 1, card_state::POR_OK).await, 11);
    // A COMPLETED campaign does not start again.
    let e = env
        .server
        .store
        .start_campaign(
            &env.account_id,
            id,
            &CampaignTarget::Group(group),
            &[],
            otagw::clock::now_ms(),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("only a CREATED campaign starts"),
        "{e}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_campaign_with_placeholders_and_retry_sqlite() {
    rfm_with_placeholders_and_retry(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_campaign_with_placeholders_and_retry_postgres() {
    on_postgres(rfm_with_placeholders_and_retry).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_larger_than_one_packet_goes_as_several_each_with_its_counter() {
    let env = env(2, None).await;
    let (_, group) = env.fleet_group.unwrap();
    // 200 UPDATE RECORDs of 176 octets: more than one concatenated SMS packet carries.
    let mut commands = vec!["A0A40000027F10".to_string(), "A0A40000026F3C".to_string()];
    for i in 0..200u32 {
        let record = (i % 10) + 1;
        let fill = format!("{:02X}", (i % 250) as u8);
        commands.push(format!("A0DC{record:02X}04B0{}", fill.repeat(176)));
    }
    let req = CampaignRequest {
        profile: 1,
        name: "big_script".into(),
        campaign_type: Some(CampaignType::Rfm),
        commands,
        expected_last_sw: Some("9000".into()),
        ..Default::default()
    };
    let id = create(&env, req).await;
    let c = env
        .server
        .store
        .campaign(&env.account_id, id)
        .await
        .unwrap()
        .unwrap();
    assert!(c.messages_per_card >= 2, "{c:?}");
    let before = env
        .server
        .store
        .key_set(&env.iccid(0).unwrap(), 1)
        .await
        .unwrap()
        .unwrap()
        .counter;
    let rows = run_on_group(&env, id, group).await;
    assert_eq!(count(&env, id, 1, card_state::POR_OK).await, 2, "{rows:?}");
    let after = env
        .server
        .store
        .key_set(&env.iccid(0).unwrap(), 1)
        .await
        .unwrap()
        .unwrap()
        .counter;
    assert_eq!(after - before, c.messages_per_card as u64);
    // The last command of the script reached the card: record 10 holds its fill (199 % 250).
    let content = env
        .fleet
        .with_card(&env.msisdn(0).unwrap(), |card| {
            card.read_file(&[0x3F00, 0x7F10, 0x6F3C])
        })
        .flatten()
        .unwrap();
    assert_eq!(content.len(), 1760);
    assert!(
        content[9 * 176..].iter().all(|b| *b == 199),
        "{:?}",
        &content[9 * 176..9 * 176 + 4]
    );
    env.shutdown().await;
}

/// The SPI's PoR coding in campaigns (TS 102 225 5.1.1): no PoR (`16 00`) and PoR on error
/// only (`16 3A`) end each card DELIVERED once delivered (the latter after the PoR wait in
/// silence), each packet sent once; an error PoR (unknown TAR, PoR on error) ends the card
/// POR_ERROR with the card's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_campaign_por_modes() {
    let env = devkit::start(DevOptions {
        cards: 3,
        provision: true,
        campaign_por_timeout: Some(Duration::from_secs(2)),
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let (_, group) = env.fleet_group.unwrap();
    for (spi, tar, state, detail) in [
        ("1600", "B00010", card_state::DELIVERED, "no PoR asked"),
        ("163A", "B00010", card_state::DELIVERED, "no error PoR"),
        ("163A", "B00099", card_state::POR_ERROR, "09"),
    ] {
        let before_submits = env.smsc.stats().submits_accepted;
        let before = counters(&env, 3).await;
        let id = create(
            &env,
            CampaignRequest {
                profile: 1,
                name: format!("por_{spi}_{tar}"),
                campaign_type: Some(CampaignType::Rfm),
                commands: vec!["A0A40000023F00".into()],
                spi: Some(spi.into()),
                tar: Some(tar.into()),
                ..Default::default()
            },
        )
        .await;
        let rows = run_on_group(&env, id, group).await;
        assert_eq!(
            count(&env, id, 1, state).await,
            3,
            "SPI {spi} TAR {tar}: {rows:?}"
        );
        assert!(
            rows.iter()
                .all(|r| r.detail.as_deref().unwrap_or_default().contains(detail)),
            "SPI {spi} TAR {tar}: {rows:?}"
        );
        assert_eq!(
            env.smsc.stats().submits_accepted - before_submits,
            3,
            "SPI {spi}: one packet per card"
        );
        let after = counters(&env, 3).await;
        assert!(
            after.iter().zip(&before).all(|(a, b)| a - b == 1),
            "one counter per card: {before:?} -> {after:?}"
        );
    }
    env.shutdown().await;
}

/// One rule for a script's answer, campaigns as single commands: without `expectedLastSw`, a
/// script that stopped on an error status word (9404, file not found) is POR_ERROR, not
/// POR_OK; the details are decoded (status words, data), not raw hex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_status_word_fails_the_card_without_expected_sw() {
    let env = env(2, None).await;
    let (_, group) = env.fleet_group.unwrap();
    for (commands, state, detail) in [
        (
            vec!["A0A40000023F00", "A0A40000026F99"],
            card_state::POR_ERROR,
            "the last answered 9404",
        ),
        (
            vec!["A0A40000023F00", "A0A40000022FE2", "A0B000000A"],
            card_state::POR_OK,
            "3 command(s): 9000 (data 98",
        ),
    ] {
        let id = create(
            &env,
            CampaignRequest {
                profile: 1,
                name: format!("sw_{state}"),
                campaign_type: Some(CampaignType::Rfm),
                commands: commands.into_iter().map(String::from).collect(),
                ..Default::default()
            },
        )
        .await;
        let rows = run_on_group(&env, id, group).await;
        assert_eq!(count(&env, id, 1, state).await, 2, "{rows:?}");
        assert!(
            rows.iter()
                .all(|r| r.detail.as_deref().unwrap_or_default().contains(detail)),
            "{rows:?}"
        );
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_campaign_ends_delivered_spending_no_counter_sqlite() {
    sms_campaign_ends_delivered(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_campaign_ends_delivered_spending_no_counter_postgres() {
    on_postgres(sms_campaign_ends_delivered).await;
}

async fn sms_campaign_ends_delivered(store_url: Option<String>) {
    let env = env(8, store_url).await;
    let (_, group) = env.fleet_group.unwrap();
    let before = counters(&env, 8).await;
    let id = create(
        &env,
        CampaignRequest {
            profile: 1,
            name: "hello".into(),
            campaign_type: Some(CampaignType::Sms),
            message: Some("Hello from otagw".into()),
            ..Default::default()
        },
    )
    .await;
    run_on_group(&env, id, group).await;
    assert_eq!(count(&env, id, 1, card_state::DELIVERED).await, 8);
    // A text sends no SCP80 packet: no card's counter moved.
    assert_eq!(counters(&env, 8).await, before);
    // Nothing to retry: every card succeeded.
    let e = env
        .server
        .store
        .retry_failed(&env.account_id, id, otagw::clock::now_ms())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nothing to retry"), "{e}");
    env.shutdown().await;
}

/// Records the JSON bodies POSTed to it.
async fn receiver() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use axum::routing::post;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = log.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: axum::body::Bytes| {
            let l = l.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    l.lock().unwrap().push(v);
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_campaign_lifecycle_with_webhooks() {
    let env = env(6, None).await;
    let (profile, group) = env.fleet_group.unwrap();
    let (url, hooks) = receiver().await;
    let (code, _) = env
        .post("/api/v1/webhooks", &serde_json::json!({"url": url}))
        .await
        .unwrap();
    assert_eq!(code, 201);
    // Bad input names the field.
    let (code, body) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": "x", "type": "RFM",
                "commands": ["A0A40000027F20", "A0D6000003ZZ"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "commands[1]", "{body}");
    // A profile that does not exist (or is another account's) is not found, naming the field.
    let (code, body) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": 987_654, "name": "x", "type": "RFM",
                "commands": ["A0A40000027F20"]}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (404, Some("profile")),
        "{body}"
    );
    let (code, body) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": "x", "type": "NOPE"}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (400, Some("type")),
        "{body}"
    );
    let (code, created) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": "spn", "type": "RFM",
                "commands": ["A0A40000027F20", "A0A40000026F46", format!("A0D6000011{}", spn("REST"))],
                "expectedLastSw": "9000"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["state"], "CREATED");
    let id = created["id"].as_i64().unwrap();
    // The same name again in the profile: refused, naming the field.
    let (code, body) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": "spn", "template": id}),
        )
        .await
        .unwrap();
    assert_eq!(
        (code, body["field"].as_str()),
        (422, Some("name")),
        "{body}"
    );
    let (code, body) = env
        .post(
            &format!("/api/v1/campaigns/{id}/start"),
            &serde_json::json!({"cardGroup": group}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["cards"], 6);
    wait_status(&env, id, status::COMPLETED).await;
    let (code, shown) = env.get(&format!("/api/v1/campaigns/{id}")).await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(shown["iterations"][0]["states"]["por_ok"], 6, "{shown}");
    let (code, cards) = env
        .get(&format!(
            "/api/v1/campaigns/{id}/cards?state=por_ok&limit=4"
        ))
        .await
        .unwrap();
    assert_eq!(code, 200);
    assert_eq!(cards.as_array().map(|a| a.len()), Some(4), "{cards}");
    let (code, body) = env
        .post(
            &format!("/api/v1/campaigns/{id}/stop"),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "a COMPLETED campaign does not stop: {body}");
    let (code, _) = env.get("/api/v1/campaigns/999").await.unwrap();
    assert_eq!(code, 404);
    // A copy from the template, stopped before it starts.
    let (code, copy) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": "spn2", "template": id}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{copy}");
    assert_eq!(
        copy["settings"]["commands"],
        created["settings"]["commands"]
    );
    let copy_id = copy["id"].as_i64().unwrap();
    let (code, stopped) = env
        .post(
            &format!("/api/v1/campaigns/{copy_id}/stop"),
            &serde_json::json!({}),
        )
        .await
        .unwrap();
    assert_eq!((code, stopped["state"].as_str()), (200, Some("TERMINATED")));
    // Progress went to the webhook: running, then completed with the totals.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let events: Vec<serde_json::Value> = hooks.lock().unwrap().clone();
        let completed = events.iter().find(|e| e["event"] == "campaign.completed");
        if let Some(c) = completed {
            assert_eq!(c["data"]["campaignId"], id);
            assert_eq!(c["data"]["cards"]["por_ok"], 6, "{c}");
            assert!(events.iter().any(|e| e["event"] == "campaign.running"));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{events:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, doc) = env.get("/api/v1/openapi.json").await.unwrap();
    for path in [
        "/api/v1/campaigns",
        "/api/v1/campaigns/{id}/start",
        "/api/v1/campaigns/{id}/retry-failed",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trigger_rfm_campaign_runs_over_https() {
    let env = devkit::start(DevOptions {
        cards: 3,
        provision: true,
        https: Some(otagw::config::HttpsSettings {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            window_secs: 5,
            ..otagw::config::HttpsSettings::default()
        }),
        ..DevOptions::default()
    })
    .await
    .expect("devkit with HTTPS");
    let (profile, group) = env.fleet_group.unwrap();
    let before = counters(&env, 3).await;
    let (id, rows) = run_to_completion(
        &env,
        &serde_json::json!({"profile": profile, "name": "spn_https", "type": "TLS_TRIGGER_RFM",
                "spi": "1639",
                "commands": ["00A40004023F00", "00A40004027FFF", "00A40004026F46",
                    format!("00D6000011{}", spn("HTTPS"))],
                "expectedLastSw": "9000"}),
        group,
    )
    .await;
    assert_eq!(count(&env, id, 1, card_state::POR_OK).await, 3, "{rows:?}");
    // One counter per card, the trigger's: the campaign's claim spends none.
    let after = counters(&env, 3).await;
    let spent: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert_eq!(spent, vec![1, 1, 1]);
    for i in 0..3 {
        let content = env
            .fleet
            .with_card(&env.msisdn(i).unwrap(), |c| {
                c.read_file(&[0x3F00, 0x7FFF, 0x6F46])
            })
            .flatten()
            .unwrap();
        assert_eq!(hex::encode_upper(content), spn("HTTPS"));
    }
    env.shutdown().await;
}

/// Starting a campaign on a new card with no MSISDN is refused (naming `msisdn`): the card it
/// would provision could never be reached, would spend a counter and could not be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_on_a_new_card_without_msisdn_is_refused() {
    let env = devkit::start(DevOptions {
        cards: 1,
        provision: true,
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let (profile, _) = env.fleet_group.unwrap();
    let (code, created) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": "no_msisdn", "type": "RFM",
                "commands": ["00A40004023F00"], "expectedLastSw": "9000"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let iccid = "898800000000000992";
    let k = "00112233445566778899AABBCCDDEEFF";
    let (code, body) = env
        .post(
            &format!("/api/v1/campaigns/{id}/start"),
            &serde_json::json!({"iccid": iccid, "kicKey": k, "kidKey": k}),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "msisdn", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot be reached"),
        "{body}"
    );
    let (code, _) = env.get(&format!("/api/v1/cards/{iccid}")).await.unwrap();
    assert_eq!(code, 404, "no card created");
    let (_, c) = env.get(&format!("/api/v1/campaigns/{id}")).await.unwrap();
    assert!(c["state"].is_string() && c["state"] != "RUNNING", "{c}");
    env.shutdown().await;
}

/// Without `[https]`, a TLS_TRIGGER campaign is refused at start (naming `transport`), not
/// sent by SMS while saying HTTPS; no card is provisioned for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trigger_campaign_refused_without_https() {
    let env = devkit::start(DevOptions {
        cards: 2,
        provision: true,
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    // A profile made for HTTPS (as on a gateway that has it).
    let (code, made) = env
        .post(
            "/api/v1/profiles",
            &serde_json::json!({"name": "tls", "appType": "rfm",
                "defaults": {"http": {"agentId": "otagw-devkit"}}}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{made}");
    let profile = made["id"].as_i64().unwrap();
    let (code, created) = env
        .post(
            "/api/v1/campaigns",
            &serde_json::json!({"profile": profile, "name": "no_https", "type": "TLS_TRIGGER_RFM",
                "spi": "1639", "commands": ["00A40004023F00"], "expectedLastSw": "9000"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    // A new card of this profile, provisioned by the start: neither started nor created.
    let iccid = "898800000000000990";
    let (code, body) = env
        .post(
            &format!("/api/v1/campaigns/{id}/start"),
            &serde_json::json!({"iccid": iccid, "msisdn": "31600000990",
                "kicKey": "00112233445566778899AABBCCDDEEFF",
                "kidKey": "00112233445566778899AABBCCDDEEFF"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["field"], "transport", "{body}");
    let (code, _) = env.get(&format!("/api/v1/cards/{iccid}")).await.unwrap();
    assert_eq!(code, 404, "no card created");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("\"https\": this gateway offers sms"),
        "{body}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rfm_campaign_over_catp_by_the_profile_default() {
    // The provisioned profile defaults to CAT_TP when the gateway runs it.
    let env = devkit::start(DevOptions {
        cards: 3,
        provision: true,
        catp: Some(otagw::config::CatpConfig {
            link_timeout_secs: 3,
            push_attempts: 2,
            ..otagw::config::CatpConfig::default()
        }),
        ..DevOptions::default()
    })
    .await
    .expect("devkit with CAT_TP");
    let (profile, group) = env.fleet_group.unwrap();
    // More than one SMS would carry: 10 UPDATE RECORDs of 176 octets in one packet.
    let mut commands = vec!["A0A40000027F10".to_string(), "A0A40000026F3C".to_string()];
    for r in 1..=10u8 {
        commands.push(format!("A0DC{r:02X}04B0{}", "5A".repeat(176)));
    }
    let (id, rows) = run_to_completion(
        &env,
        &serde_json::json!({"profile": profile, "name": "records_catp", "type": "RFM",
                "commands": commands, "expectedLastSw": "9000"}),
        group,
    )
    .await;
    assert_eq!(count(&env, id, 1, card_state::POR_OK).await, 3, "{rows:?}");
    let catp = env.server.catp.as_ref().expect("catp transport").stats();
    assert!(catp.pushes >= 3, "{catp:?}");
    for i in 0..3 {
        let content = env
            .fleet
            .with_card(&env.msisdn(i).unwrap(), |c| {
                c.read_file(&[0x3F00, 0x7F10, 0x6F3C])
            })
            .flatten()
            .unwrap();
        assert!(content.iter().all(|b| *b == 0x5A));
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catp_campaign_card_without_a_link_falls_back_to_sms() {
    // Card 0 takes its pushes but never opens a link; with the fallback on, it gets the
    // script over SMS, cut into packets SMS carries, each with a counter of its own.
    let fleet = otagw::sim::Fleet::generate(3, 7, devkit::fleet_defaults()).unwrap();
    let silent = fleet.msisdn_at(0).unwrap();
    let env = devkit::start(DevOptions {
        cards: 3,
        provision: true,
        catp: Some(otagw::config::CatpConfig {
            link_timeout_secs: 1,
            push_attempts: 2,
            fallback_to_sms: true,
            ..otagw::config::CatpConfig::default()
        }),
        terminals: otagw::sim::catp_client::TerminalSettings {
            silent: std::collections::HashSet::from([silent.clone()]),
            ..Default::default()
        },
        ..DevOptions::default()
    })
    .await
    .expect("devkit with CAT_TP");
    assert_eq!(env.msisdn(0).as_deref(), Some(silent.as_str()));
    let (profile, group) = env.fleet_group.unwrap();
    let mut commands = vec!["A0A40000027F10".to_string(), "A0A40000026F3C".to_string()];
    for r in 1..=10u8 {
        commands.push(format!("A0DC{r:02X}04B0{}", "A5".repeat(176)));
    }
    let (id, rows) = run_to_completion(
        &env,
        &serde_json::json!({"profile": profile, "name": "records_fallback", "type": "RFM",
                "commands": commands, "expectedLastSw": "9000"}),
        group,
    )
    .await;
    assert_eq!(count(&env, id, 1, card_state::POR_OK).await, 3, "{rows:?}");
    let silent_iccid = env.iccid(0).unwrap();
    for row in &rows {
        let detail = row.detail.clone().unwrap_or_default();
        if row.iccid == silent_iccid {
            assert!(detail.starts_with("over SMS (no CAT_TP link)"), "{row:?}");
            // Its steps are the SMS plan's from SMS_FALLBACK_STEP on (a restart resumes it on
            // SMS), with the SMS packet's counter, reserved after the CAT_TP one and the
            // pushes'.
            assert!(
                row.step >= otagw::campaign::runner::SMS_FALLBACK_STEP,
                "{row:?}"
            );
            assert!(row.counter.unwrap_or(0) > 3, "{row:?}");
        } else {
            assert!(!detail.contains("over SMS"), "{row:?}");
            assert_eq!(row.step, 0, "one CAT_TP packet: {row:?}");
        }
    }
    let catp = env.server.catp.as_ref().expect("catp transport").stats();
    // Two cards over their links; the silent one pushed twice, then SMS.
    assert_eq!(catp.packets_sent, 2, "{catp:?}");
    assert_eq!(catp.pushes, 4, "{catp:?}");
    for i in 0..3 {
        let content = env
            .fleet
            .with_card(&env.msisdn(i).unwrap(), |c| {
                c.read_file(&[0x3F00, 0x7F10, 0x6F3C])
            })
            .flatten()
            .unwrap();
        assert!(content.iter().all(|b| *b == 0xA5), "card {i}");
    }
    env.shutdown().await;
}

/// A CAT_TP campaign whose SPI asks no PoR (TS 102 225 5.1.1, SPI2 b2b1 = 00): each card's
/// packet ends DELIVERED on the card's CAT_TP acknowledgement of it, sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catp_campaign_without_por_ends_delivered_on_the_cards_ack() {
    let env = devkit::start(DevOptions {
        cards: 3,
        provision: true,
        por_timeout: Duration::from_secs(3),
        catp: Some(otagw::config::CatpConfig {
            link_timeout_secs: 3,
            push_attempts: 2,
            ..otagw::config::CatpConfig::default()
        }),
        ..DevOptions::default()
    })
    .await
    .expect("devkit with CAT_TP");
    let (profile, group) = env.fleet_group.unwrap();
    let mut commands = vec!["A0A40000027F10".to_string(), "A0A40000026F3C".to_string()];
    for r in 1..=10u8 {
        commands.push(format!("A0DC{r:02X}04B0{}", "3C".repeat(176)));
    }
    let (id, rows) = run_to_completion(
        &env,
        &serde_json::json!({"profile": profile, "name": "records_catp_no_por", "type": "RFM",
                "spi": "1600", "commands": commands}),
        group,
    )
    .await;
    assert_eq!(
        count(&env, id, 1, card_state::DELIVERED).await,
        3,
        "{rows:?}"
    );
    for row in &rows {
        assert_eq!(row.step, 0, "one CAT_TP packet: {row:?}");
    }
    let catp = env.server.catp.as_ref().expect("catp transport").stats();
    assert_eq!(catp.packets_sent, 3, "each card's packet once: {catp:?}");
    assert_eq!(catp.pors, 0, "{catp:?}");
    for i in 0..3 {
        let msisdn = env.msisdn(i).unwrap();
        let content = env
            .fleet
            .with_card(&msisdn, |c| c.read_file(&[0x3F00, 0x7F10, 0x6F3C]))
            .flatten()
            .unwrap();
        assert!(content.iter().all(|b| *b == 0x3C), "card {i}");
        assert_eq!(
            env.terminals
                .as_ref()
                .expect("terminals")
                .sdus_received(&msisdn),
            1,
            "card {i} got its packet once"
        );
    }
    env.shutdown().await;
}
