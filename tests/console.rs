//! The operators' console over HTTP (a cookie-keeping client, as a browser without
//! JavaScript): sign-in, the session cookie, CSRF, roles, rate limits, account scoping, and no
//! key value in any page. Each store-facing case runs on SQLite and on PostgreSQL.

mod console_support;
mod subscription_support;

use std::time::Duration;

use console_support::{add_user, create_campaign, Browser, PASSWORD};
use otagw::devkit::{self, DevEnv, DevOptions};
use otagw::store::users::Role;
use serde_json::json;

async fn env_on(backend: &str, cards: usize) -> DevEnv {
    devkit::start_on(
        backend,
        DevOptions {
            cards,
            provision: true,
            ..DevOptions::default()
        },
    )
    .await
    .expect("dev environment")
}

/// Runs a case on both stores.
macro_rules! on_both {
    ($name:ident, $case:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$case("sqlite").await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$case("postgres").await
            }
        }
    };
}

async fn login_ok_and_bad(backend: &str) {
    let env = env_on(backend, 2).await;
    add_user(&env, &env.account_id, "alice", Role::Operator).await;
    let b = Browser::new(&env);
    // Not signed in: every page leads to the login form.
    let (code, _) = b.get("/console/").await;
    assert_eq!(code, 303);
    let (code, cookies, body) = b.login("alice", "wrong password here").await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("Wrong user name or password"), "{body}");
    assert!(!cookies.iter().any(|c| c.starts_with("otagw_session=")));
    let (code, _, body) = b.login("nobody", PASSWORD).await;
    assert_eq!(
        code, 401,
        "an unknown name answers as a wrong password: {body}"
    );

    let (code, cookies, _) = b.login("alice", PASSWORD).await;
    assert_eq!(code, 303);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("otagw_session="))
        .expect("a session cookie");
    let value = session["otagw_session=".len()..]
        .split(';')
        .next()
        .unwrap_or("");
    assert_eq!(value.len(), 64, "32 random octets, hex: {session}");
    assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{session}");
    assert!(
        session.contains("; HttpOnly") && session.contains("; SameSite=Strict"),
        "{session}"
    );
    assert!(session.contains("; Path=/console"), "{session}");
    assert!(!session.contains("Secure"), "plain HTTP here: {session}");
    // The store keeps only the id's hash.
    assert!(env
        .server
        .store
        .users()
        .unwrap()
        .session(value)
        .await
        .unwrap()
        .is_some());

    let (code, page) = b.get("/console/").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("Dashboard") && page.contains("alice"),
        "{page}"
    );
    let (code, page) = b.get("/console/login").await;
    assert_eq!(code, 303, "signed in: the login page leads on: {page}");

    let csrf = b.csrf().await;
    let (code, location, _) = b.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!((code, location.as_str()), (303, "/console/login"));
    let (code, _) = b.get("/console/").await;
    assert_eq!(code, 303, "signed out");
    assert!(env
        .server
        .store
        .users()
        .unwrap()
        .session(value)
        .await
        .unwrap()
        .is_none());
    env.shutdown().await;
}
on_both!(login, login_ok_and_bad);

async fn csrf_is_checked_on_every_form(backend: &str) {
    let env = env_on(backend, 2).await;
    add_user(&env, &env.account_id, "op", Role::Operator).await;
    let id = create_campaign(&env, "csrf").await;
    let (_, group) = env.fleet_group.unwrap();
    let group = group.to_string();
    let b = Browser::signed_in(&env, "op").await;
    let start = format!("/console/campaigns/{id}/start");
    let (code, _, body) = b.post(&start, &[("card_group", &group)]).await;
    assert_eq!(code, 403, "no token: {body}");
    assert!(body.contains("no token"), "{body}");
    let (code, _, _) = b
        .post(&start, &[("card_group", &group), ("csrf", "0000")])
        .await;
    assert_eq!(code, 403, "a wrong token");
    let (code, _, _) = b.post("/console/logout", &[]).await;
    assert_eq!(code, 403, "sign-out is a form too");
    let c = env
        .server
        .store
        .campaign(&env.account_id, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, "CREATED", "nothing started");

    // The login form has its own token, bound to a cookie.
    let fresh = Browser::new(&env);
    let (code, _, _) = fresh
        .post(
            "/console/login",
            &[("username", "op"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(code, 403, "a login without the form's token");

    // With the token, the operator starts it.
    let csrf = b.csrf().await;
    let (code, location, body) = b
        .post(&start, &[("card_group", &group), ("csrf", &csrf)])
        .await;
    assert_eq!(code, 303, "{body}");
    assert_eq!(location, format!("/console/campaigns/{id}"));
    let c = env
        .server
        .store
        .campaign(&env.account_id, id)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(c.status, "CREATED");
    env.shutdown().await;
}
on_both!(csrf, csrf_is_checked_on_every_form);

async fn a_viewer_reads_but_cannot_act(backend: &str) {
    let env = env_on(backend, 2).await;
    add_user(&env, &env.account_id, "watcher", Role::Viewer).await;
    let id = create_campaign(&env, "viewer").await;
    let (_, group) = env.fleet_group.unwrap();
    let b = Browser::signed_in(&env, "watcher").await;
    let (code, page) = b.get(&format!("/console/campaigns/{id}")).await;
    assert_eq!(code, 200, "{page}");
    for button in [
        "id=\"start\"",
        "id=\"stop\"",
        "id=\"retry\"",
        "/start\"",
        "/stop\"",
    ] {
        assert!(!page.contains(button), "a viewer sees {button}: {page}");
    }
    // A forged operator form, with the viewer's own valid token: refused on the server.
    let csrf = b.csrf().await;
    for action in ["start", "stop", "retry"] {
        let (code, _, body) = b
            .post(
                &format!("/console/campaigns/{id}/{action}"),
                &[("card_group", &group.to_string()), ("csrf", &csrf)],
            )
            .await;
        assert_eq!(code, 403, "{action}: {body}");
        assert!(body.contains("operator"), "{body}");
    }
    let c = env
        .server
        .store
        .campaign(&env.account_id, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.status, "CREATED");
    // An operator sees the buttons.
    add_user(&env, &env.account_id, "doer", Role::Operator).await;
    let op = Browser::signed_in(&env, "doer").await;
    let (_, page) = op.get(&format!("/console/campaigns/{id}")).await;
    assert!(
        page.contains("id=\"start\"") && page.contains("id=\"stop\""),
        "{page}"
    );
    env.shutdown().await;
}
on_both!(viewer, a_viewer_reads_but_cannot_act);

async fn another_accounts_things_are_not_found(backend: &str) {
    let env = env_on(backend, 3).await;
    let store = &env.server.store;
    let other = store
        .create_account("other", otagw::clock::now_ms())
        .await
        .unwrap();
    add_user(&env, &other.id, "stranger", Role::Admin).await;
    add_user(&env, &env.account_id, "owner", Role::Viewer).await;
    let iccid = env.iccid(0).unwrap();
    let body = json!({"type": "RFM", "target": {"iccid": iccid},
        "security": {"spi": "1621", "kic": "12", "kid": "12", "tar": "B00010"},
        "data": {"apdus": ["A0A40000027F20"]}});
    let (code, r) = env.post("/api/v1/ota/commands", &body).await.unwrap();
    assert_eq!(code, 202, "{r}");
    let command = r["commandId"].as_str().unwrap().to_string();
    let campaign = create_campaign(&env, "mine").await;

    let owner = Browser::signed_in(&env, "owner").await;
    let stranger = Browser::signed_in(&env, "stranger").await;
    for path in [
        format!("/console/cards/{iccid}"),
        format!("/console/commands/{command}"),
        format!("/console/campaigns/{campaign}"),
    ] {
        let (code, page) = owner.get(&path).await;
        assert_eq!(code, 200, "{path}: {page}");
        let (code, page) = stranger.get(&path).await;
        assert_eq!(code, 404, "{path} from another account: {page}");
        assert!(!page.contains(&iccid), "{page}");
    }
    let (code, _) = stranger
        .get(&format!("/console/campaigns/{campaign}/live"))
        .await;
    assert_eq!(code, 404);
    let (_, list) = stranger.get("/console/cards").await;
    assert!(!list.contains(&iccid), "{list}");
    let (_, list) = stranger.get("/console/commands").await;
    assert!(!list.contains(&command), "{list}");
    let (code, _) = owner.get("/console/no/such/page").await;
    assert_eq!(code, 404);
    env.shutdown().await;
}
on_both!(scoping, another_accounts_things_are_not_found);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_the_name() {
    let env = env_on("sqlite", 1).await;
    add_user(&env, &env.account_id, "carol", Role::Viewer).await;
    let b = Browser::new(&env);
    for i in 0..5 {
        let (code, _, body) = b.login("carol", "not the password").await;
        assert_eq!(code, 401, "attempt {}: {body}", i + 1);
    }
    // The sixth attempt is refused, even with the right password, and says for how long.
    let (code, _, body) = b.login("carol", PASSWORD).await;
    assert_eq!(code, 429, "{body}");
    // 15 s from the fifth failure (14 if a second passed since).
    assert!(
        body.contains("Try again in 15 s") || body.contains("Try again in 14 s"),
        "{body}"
    );
    let (code, _) = b.get("/console/").await;
    assert_eq!(code, 303, "not signed in");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends() {
    let clock = otagw::clock::ManualClock::at(otagw::clock::now_ms());
    let env = devkit::start(DevOptions {
        cards: 1,
        clock: Some(clock.clone()),
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    add_user(&env, &env.account_id, "dave", Role::Viewer).await;
    let b = Browser::signed_in(&env, "dave").await;
    assert_eq!(b.get("/console/cards").await.0, 200);
    clock.advance(29 * 60_000);
    assert_eq!(
        b.get("/console/cards").await.0,
        200,
        "used within 30 minutes"
    );
    clock.advance(29 * 60_000);
    assert_eq!(
        b.get("/console/cards").await.0,
        200,
        "each use restarts the idle time"
    );
    clock.advance(31 * 60_000);
    assert_eq!(b.get("/console/cards").await.0, 303, "idle for 31 minutes");
    // And a session used all the time still ends 12 hours after sign-in.
    let b = Browser::signed_in(&env, "dave").await;
    for _ in 0..25 {
        clock.advance(29 * 60_000);
        let _ = b.get("/console/").await;
    }
    assert_eq!(b.get("/console/").await.0, 303, "past 12 hours");
    env.shutdown().await;
}

async fn no_key_value_in_any_page(backend: &str) {
    let env = env_on(backend, 3).await;
    add_user(&env, &env.account_id, "auditor", Role::Admin).await;
    let mut secrets: Vec<String> = Vec::new();
    for card in devkit::cards_body(&env.fleet)["cards"].as_array().unwrap() {
        for k in card["keySets"].as_array().unwrap() {
            for f in ["kic", "kid", "kik"] {
                if let Some(v) = k[f].as_str() {
                    secrets.push(v.to_uppercase());
                }
            }
        }
    }
    secrets.push(hex::encode_upper(env.master_key_bytes()));
    let new_kic = "00112233445566778899AABBCCDDEEF1";
    let new_kid = "F1EEDDCCBBAA99887766554433221100";
    secrets.push(new_kic.into());
    secrets.push(new_kid.into());
    let iccid = env.iccid(0).unwrap();
    let rfm = json!({"type": "RFM", "target": {"iccid": iccid},
        "security": {"spi": "1621", "kic": "12", "kid": "12", "tar": "B00010"},
        "data": {"apdus": ["A0A40000027F20", "A0A40000026F46", "A0B0000011"]}});
    let key_update = json!({"type": "KEY_UPDATE", "target": {"iccid": iccid},
        "security": {"spi": "1621", "kic": "12", "kid": "12", "tar": "000000"},
        "data": {"parameters": {"keyVersion": 1, "kic": new_kic, "kid": new_kid}}});
    let mut ids = Vec::new();
    for body in [rfm, key_update] {
        let (code, r) = env.post("/api/v1/ota/commands", &body).await.unwrap();
        assert_eq!(code, 202, "{r}");
        let id = r["commandId"].as_str().unwrap().to_string();
        let done = env.wait_done(&id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(done["status"], "SUCCESS", "{done}");
        ids.push(id);
    }
    let campaign = create_campaign(&env, "keys").await;
    let b = Browser::signed_in(&env, "auditor").await;
    let mut pages = vec![
        "/console/".to_string(),
        "/console/cards".into(),
        format!("/console/cards?iccid={}", &iccid[..6]),
        "/console/commands".into(),
        "/console/campaigns".into(),
        format!("/console/campaigns/{campaign}"),
    ];
    for i in 0..3 {
        pages.push(format!("/console/cards/{}", env.iccid(i).unwrap()));
    }
    for id in &ids {
        pages.push(format!("/console/commands/{id}"));
    }
    for path in &pages {
        let (code, page) = b.get(path).await;
        assert_eq!(code, 200, "{path}: {page}");
        let upper = page.to_uppercase();
        for s in &secrets {
            assert!(!upper.contains(s.as_str()), "{path} shows a key value");
        }
    }
    // The card page shows the metadata instead: versions, algorithms, counters.
    let (_, card) = b.get(&format!("/console/cards/{iccid}")).await;
    assert!(
        card.contains("Key sets") && card.contains("KIc algorithm") && card.contains(">stored<"),
        "{card}"
    );
    let (_, command) = b.get(&format!("/console/commands/{}", ids[0])).await;
    assert!(
        command.contains("9000") || command.contains("9F"),
        "status words: {command}"
    );
    env.shutdown().await;
}
on_both!(keys, no_key_value_in_any_page);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_search_input_names_the_field() {
    let env = env_on("sqlite", 1).await;
    add_user(&env, &env.account_id, "erin", Role::Viewer).await;
    let b = Browser::signed_in(&env, "erin").await;
    let (code, page) = b.get("/console/cards?imsi=12ab").await;
    assert_eq!(code, 400);
    assert!(page.contains("imsi: "), "{page}");
    let (code, page) = b.get("/console/commands?state=DONE").await;
    assert_eq!(code, 400);
    assert!(page.contains("state: "), "{page}");
    let (code, page) = b.get("/console/commands?type=NOPE").await;
    assert_eq!(code, 400);
    assert!(page.contains("type: "), "{page}");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_totals_come_as_server_sent_events() {
    let env = env_on("sqlite", 3).await;
    add_user(&env, &env.account_id, "frank", Role::Operator).await;
    let id = create_campaign(&env, "live").await;
    let (_, group) = env.fleet_group.unwrap();
    let b = Browser::signed_in(&env, "frank").await;
    let r = b
        .client
        .get(format!("{}/console/campaigns/{id}/live", b.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );
    let csrf = b.csrf().await;
    let (code, _, body) = b
        .post(
            &format!("/console/campaigns/{id}/start"),
            &[("card_group", &group.to_string()), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(code, 303, "{body}");
    // Read events until the block says COMPLETED and 100%.
    let mut r = r;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !(seen.contains("COMPLETED") && seen.contains("100.0%")) {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .expect("the campaign completes within 30 s")
            .unwrap()
            .expect("the stream stays open");
        seen = String::from_utf8_lossy(&chunk).into_owned();
        assert!(
            seen.starts_with("event: totals") || seen.starts_with(':'),
            "{seen}"
        );
    }
    env.shutdown().await;
}

#[test]
fn user_create_on_the_command_line() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let dir = devkit::temp_dir("otagw-console-cli").unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_otagw"))
            .args(args)
            .env("OTAGW_DATA_DIR", &dir)
            .env_remove("OTAGW_CONFIG")
            .env_remove("OTAGW_DATABASE_URL")
            .env_remove("OTAGW_SERVER")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run otagw");
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(run(&["account", "create", "--name", "acme"], None).0);
    let pw_file = dir.join("pw");
    std::fs::write(&pw_file, format!("{PASSWORD}\n")).unwrap();
    let pw = pw_file.to_str().unwrap();
    let (ok, out, err) = run(
        &[
            "user",
            "create",
            "--account",
            "acme",
            "--name",
            "ops",
            "--role",
            "operator",
            "--password-file",
            pw,
            "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (
            v["name"].as_str(),
            v["role"].as_str(),
            v["account"].as_str()
        ),
        (Some("ops"), Some("operator"), Some("acme"))
    );
    assert!(!out.contains(PASSWORD) && !out.contains("argon2"), "{out}");
    // From standard input.
    let (ok, _, err) = run(
        &[
            "user",
            "create",
            "--account",
            "acme",
            "--name",
            "viewer1",
            "--role",
            "viewer",
        ],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(ok, "{err}");
    // Each bad input names its field.
    for (args, stdin, field) in [
        (
            vec!["--name", "ops", "--role", "viewer"],
            Some(PASSWORD),
            "--name",
        ),
        (
            vec!["--name", "x y", "--role", "viewer"],
            Some(PASSWORD),
            "--name",
        ),
        (
            vec!["--name", "n2", "--role", "root"],
            Some(PASSWORD),
            "--role",
        ),
        (
            vec!["--name", "n3", "--role", "viewer"],
            Some("short\n"),
            "password",
        ),
        (
            vec!["--name", "n4", "--role", "viewer", "--password", PASSWORD],
            None,
            "--password",
        ),
    ] {
        let mut all = vec!["user", "create", "--account", "acme"];
        all.extend(args);
        let (ok, _, err) = run(&all, stdin);
        assert!(!ok, "{all:?} was taken");
        assert!(err.contains(field), "{all:?}: {err}");
    }
    let (ok, _, err) = run(
        &[
            "user",
            "create",
            "--account",
            "nope",
            "--name",
            "n5",
            "--role",
            "viewer",
            "--password-file",
            pw,
        ],
        None,
    );
    assert!(!ok && err.contains("--account"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn operators_create_campaigns(backend: &str) {
    let env = env_on(backend, 2).await;
    add_user(&env, &env.account_id, "maker", Role::Operator).await;
    add_user(&env, &env.account_id, "looker", Role::Viewer).await;
    let (profile, group) = env.fleet_group.unwrap();
    let profile = profile.to_string();
    let op = Browser::signed_in(&env, "maker").await;
    let (_, page) = op.get("/console/campaigns").await;
    assert!(
        page.contains("New campaign") && page.contains("id=\"create\""),
        "{page}"
    );
    let viewer = Browser::signed_in(&env, "looker").await;
    let (_, page) = viewer.get("/console/campaigns").await;
    assert!(
        !page.contains("New campaign"),
        "a viewer gets no create form"
    );
    let form = |csrf: &str, name: &str, commands: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("profile".into(), profile.clone()),
            ("name".into(), name.to_string()),
            ("type".into(), "RFM".into()),
            ("template".into(), String::new()),
            ("commands".into(), commands.to_string()),
            ("message".into(), String::new()),
            ("expected_last_sw".into(), String::new()),
        ]
    };
    let post = |b: &Browser, fields: Vec<(String, String)>, htmx: bool| {
        let mut r = b
            .client
            .post(format!("{}/console/campaigns", b.base))
            .form(&fields);
        if htmx {
            r = r.header("HX-Request", "true");
        }
        r.send()
    };
    let vcsrf = viewer.csrf().await;
    let r = post(&viewer, form(&vcsrf, "v", "A0A40000027F20"), false)
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a viewer's forged create");
    let r = post(&op, form("", "x", "A0A40000027F20"), false)
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no token");
    let csrf = op.csrf().await;
    // A bad APDU is refused naming it.
    let r = post(
        &op,
        form(&csrf, "bad", "A0A40000027F20\nA0D6000003ZZ"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 422);
    let text = r.text().await.unwrap();
    assert!(text.contains("commands[1]"), "{text}");
    // Without JavaScript: a redirect to the new campaign's page.
    let r = post(
        &op,
        form(&csrf, "plain", "A0A40000027F20\r\n\r\nA0A4 0000 026F46\n"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 303);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let id: i64 = location.rsplit('/').next().unwrap().parse().unwrap();
    let c = env
        .server
        .store
        .campaign(&env.account_id, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.name.as_str(), c.status.as_str()), ("plain", "CREATED"));
    assert!(c.settings.contains("A0A40000026F46"), "{}", c.settings);
    // From htmx: HX-Redirect there; and a start answers 204 (the page's events show it).
    let r = post(&op, form(&csrf, "htmx", "A0A40000027F20"), true)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let to = r.headers()["hx-redirect"].to_str().unwrap().to_string();
    assert!(to.starts_with("/console/campaigns/"), "{to}");
    let r = op
        .client
        .post(format!("{}{to}/start", op.base))
        .header("HX-Request", "true")
        .form(&[("csrf", csrf.as_str()), ("card_group", &group.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // A template copies another campaign's settings.
    let mut f = form(&csrf, "copy", "");
    f[4].1 = id.to_string();
    let r = post(&op, f, false).await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap_or_default());
    // Every action is in the console's audit trail with the user's name.
    let trail = env
        .server
        .store
        .users()
        .unwrap()
        .actions(&env.account_id, None, 100)
        .await
        .unwrap();
    let seen: Vec<(String, String)> = trail
        .iter()
        .map(|e| (e.user_name.clone(), e.action.clone()))
        .collect();
    for (who, what) in [
        ("maker", "sign-in"),
        ("looker", "sign-in"),
        ("maker", "campaign.create"),
        ("maker", "campaign.start"),
    ] {
        assert!(
            seen.contains(&(who.to_string(), what.to_string())),
            "{who} {what} missing from {seen:?}"
        );
    }
    assert_eq!(
        trail
            .iter()
            .filter(|e| e.action == "campaign.create")
            .count(),
        3,
        "refused ones are not recorded: {seen:?}"
    );
    let (_, dashboard) = viewer.get("/console/").await;
    assert!(
        dashboard.contains("campaign.start") && dashboard.contains("maker"),
        "{dashboard}"
    );
    let (_, page) = viewer.get(&to).await;
    assert!(page.contains("campaign.start"), "{page}");
    env.shutdown().await;
}
on_both!(create, operators_create_campaigns);

/// A card's page shows its subscriptions, sync state and audit trail; "Audit now" runs an
/// audit for an operator (recorded with the user's name) and is refused to a viewer.
async fn card_subscriptions_and_audit_now(backend: &str) {
    let env = env_on(backend, 2).await;
    let _ticker = env.tick_subscriptions(
        std::sync::Arc::new(otagw::sim::subscriptions::EveryNetwork),
        Duration::from_millis(100),
    );
    add_user(&env, &env.account_id, "watcher2", Role::Viewer).await;
    add_user(&env, &env.account_id, "doer2", Role::Operator).await;
    let iccid = env.iccid(0).unwrap();
    let imsi = env.fleet.with_card_by_iccid(&iccid, |c| c.imsi()).unwrap();
    let viewer = Browser::signed_in(&env, "watcher2").await;
    let (code, page) = viewer.get(&format!("/console/cards/{iccid}")).await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("id=\"sync-state\" class=\"badge ok\">SYNCED"),
        "{page}"
    );
    assert!(page.contains(&imsi), "{page}");
    assert!(
        !page.contains("id=\"audit-now\""),
        "a viewer sees Audit now"
    );
    let csrf = viewer.csrf().await;
    let (code, _, body) = viewer
        .post(&format!("/console/cards/{iccid}/audit"), &[("csrf", &csrf)])
        .await;
    assert_eq!(code, 403, "{body}");

    let op = Browser::signed_in(&env, "doer2").await;
    let (_, page) = op.get(&format!("/console/cards/{iccid}")).await;
    assert!(page.contains("id=\"audit-now\""), "{page}");
    let csrf = op.csrf().await;
    let (code, _, body) = op
        .post(&format!("/console/cards/{iccid}/audit"), &[("csrf", &csrf)])
        .await;
    assert_eq!(code, 303, "{body}");
    // The audit ends; the timeline shows who asked and what the card said.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = op.get(&format!("/console/cards/{iccid}")).await;
        if page.contains("AUDIT done") {
            assert!(page.contains("user:doer2"), "{page}");
            assert!(
                page.contains("id=\"sync-state\" class=\"badge ok\">SYNCED"),
                "{page}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.shutdown().await;
}
on_both!(subscriptions_panel, card_subscriptions_and_audit_now);

/// An enterprise's user sees the cards of a group granted to its account: in the card list
/// (marked granted) and on the card's page (identity and subscriptions, no key sets, no
/// commands), and can press "Audit now" with the audit right; other cards stay 404.
async fn a_granted_card_for_an_enterprise_user(backend: &str) {
    let env = env_on(backend, 3).await;
    let _ticker = env.tick_subscriptions(
        std::sync::Arc::new(otagw::sim::subscriptions::EveryNetwork),
        Duration::from_millis(100),
    );
    let (granted, other) = (env.iccid(0).unwrap(), env.iccid(1).unwrap());
    let group = subscription_support::card_group(&env, "acme-fleet", &[&granted]).await;
    let acme = env
        .server
        .store
        .create_account("acme", otagw::clock::now_ms())
        .await
        .unwrap();
    let (code, g) = env
        .post(
            &format!("/api/v1/cardgroups/{group}/grants"),
            &json!({"account": "acme", "rights": ["audit"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{g}");
    add_user(&env, &acme.id, "acme-ops", Role::Operator).await;
    let user = Browser::signed_in(&env, "acme-ops").await;
    let (code, list) = user.get("/console/cards").await;
    assert_eq!(code, 200, "{list}");
    assert!(
        list.contains(&granted) && list.contains("granted"),
        "{list}"
    );
    assert!(!list.contains(&other), "{list}");
    let (code, page) = user.get(&format!("/console/cards/{granted}")).await;
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("id=\"sync-state\""), "{page}");
    assert!(
        !page.contains("Key sets") && !page.contains("Last commands"),
        "{page}"
    );
    let (code, _) = user.get(&format!("/console/cards/{other}")).await;
    assert_eq!(code, 404);
    let csrf = user.csrf().await;
    let (code, _, body) = user
        .post(
            &format!("/console/cards/{granted}/audit"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(code, 303, "{body}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, page) = user.get(&format!("/console/cards/{granted}")).await;
        if page.contains("AUDIT done") {
            assert!(page.contains("user:acme-ops"), "{page}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    env.shutdown().await;
}
on_both!(granted_cards, a_granted_card_for_an_enterprise_user);

/// Card groups: the list and a group's page; an admin grants an enterprise account rights
/// on the group and revokes them; an operator cannot; a bad account is named; another
/// account's group is not found.
async fn card_groups_and_grants(backend: &str) {
    let env = env_on(backend, 2).await;
    let (_, group) = env.fleet_group.unwrap();
    let store = &env.server.store;
    let acme = store
        .create_account("acme", otagw::clock::now_ms())
        .await
        .unwrap();
    add_user(&env, &env.account_id, "boss", Role::Admin).await;
    add_user(&env, &env.account_id, "doer3", Role::Operator).await;
    add_user(&env, &acme.id, "acme-admin", Role::Admin).await;
    let admin = Browser::signed_in(&env, "boss").await;
    let (code, list) = admin.get("/console/groups").await;
    assert_eq!(code, 200, "{list}");
    assert!(
        list.contains(&format!("href=\"/console/groups/{group}\"")),
        "{list}"
    );
    let page_path = format!("/console/groups/{group}");
    let (code, page) = admin.get(&page_path).await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("No rule") && page.contains("No grant."),
        "{page}"
    );
    assert!(page.contains("id=\"grant-form\""), "{page}");

    let csrf = admin.csrf().await;
    let (code, _, body) = admin
        .post(
            &format!("{page_path}/grants"),
            &[("csrf", &csrf), ("account", "acme"), ("manage", "on")],
        )
        .await;
    assert_eq!(code, 303, "{body}");
    let (_, page) = admin.get(&page_path).await;
    assert!(
        page.contains("<td>acme</td><td>view, manage</td>"),
        "{page}"
    );
    let (_, grants) = env
        .get(&format!("/api/v1/cardgroups/{group}/grants"))
        .await
        .unwrap();
    assert_eq!(grants[0]["rights"], json!(["view", "manage"]), "{grants}");

    let (code, _, body) = admin
        .post(
            &format!("{page_path}/grants"),
            &[("csrf", &csrf), ("account", "nobody")],
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("account"), "{body}");

    let operator = Browser::signed_in(&env, "doer3").await;
    let (_, page) = operator.get(&page_path).await;
    assert!(!page.contains("id=\"grant-form\""), "{page}");
    let op_csrf = operator.csrf().await;
    let (code, _, _) = operator
        .post(
            &format!("{page_path}/grants/acme/revoke"),
            &[("csrf", &op_csrf)],
        )
        .await;
    assert_eq!(code, 403, "an operator cannot revoke");

    let (code, _, body) = admin
        .post(
            &format!("{page_path}/grants/acme/revoke"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(code, 303, "{body}");
    let (_, page) = admin.get(&page_path).await;
    assert!(page.contains("No grant."), "{page}");

    // A bootstrap rule shows with its subscriptions.
    let (code, body) = env
        .post(
            "/api/v1/subscription-templates",
            &json!({"name": "op-a", "spn": "otagw", "plmns": ["26201"]}),
        )
        .await
        .unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, body) = env
        .put(
            &format!("/api/v1/cardgroups/{group}/rules"),
            &json!({"subscriptions": [{"template": "op-a", "imsiFirst": "262019500000000",
                                       "imsiCount": 10}],
                    "bootstrap": "keep_as_fallback", "trigger": "notification"}),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let (_, page) = admin.get(&page_path).await;
    assert!(
        page.contains("262019500000000") && page.contains("kept as the fallback"),
        "{page}"
    );
    assert!(page.contains("when a card first reports"), "{page}");

    // The enterprise's own admin does not see the operator's group.
    let stranger = Browser::signed_in(&env, "acme-admin").await;
    let (code, _) = stranger.get(&page_path).await;
    assert_eq!(code, 404);
    let (_, list) = stranger.get("/console/groups").await;
    assert!(!list.contains(&page_path), "{list}");
    env.shutdown().await;
}
on_both!(groups, card_groups_and_grants);

/// Templates: an operator creates one through the form (it is then usable over REST); a bad
/// PLMN and a repeated name are named; a viewer sees the list but not the form, and its
/// forged post is refused.
async fn subscription_templates(backend: &str) {
    let env = env_on(backend, 1).await;
    add_user(&env, &env.account_id, "doer4", Role::Operator).await;
    add_user(&env, &env.account_id, "watcher4", Role::Viewer).await;
    let op = Browser::signed_in(&env, "doer4").await;
    let (code, page) = op.get("/console/templates").await;
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("No template yet.") && page.contains("id=\"template-form\""),
        "{page}"
    );
    let csrf = op.csrf().await;
    let (code, _, body) = op
        .post(
            "/console/templates",
            &[
                ("csrf", &csrf),
                ("name", " op-b "),
                ("spn", "Acme"),
                ("plmns", "26201, 310410"),
            ],
        )
        .await;
    assert_eq!(code, 303, "{body}");
    let (_, list) = env.get("/api/v1/subscription-templates").await.unwrap();
    assert_eq!(
        list,
        json!([{"name": "op-b", "spn": "Acme", "plmns": ["26201", "310410"]}])
    );
    let (_, page) = op.get("/console/templates").await;
    assert!(page.contains("26201 310410"), "{page}");
    let (code, _, body) = op
        .post(
            "/console/templates",
            &[("csrf", &csrf), ("name", "op-c"), ("plmns", "2620")],
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("plmns[0]"), "{body}");
    let (code, _, body) = op
        .post("/console/templates", &[("csrf", &csrf), ("name", "op-b")])
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("exists"), "{body}");

    let viewer = Browser::signed_in(&env, "watcher4").await;
    let (code, page) = viewer.get("/console/templates").await;
    assert_eq!(code, 200);
    assert!(
        page.contains("op-b") && !page.contains("id=\"template-form\""),
        "{page}"
    );
    let v_csrf = viewer.csrf().await;
    let (code, _, _) = viewer
        .post(
            "/console/templates",
            &[("csrf", &v_csrf), ("name", "sneaky")],
        )
        .await;
    assert_eq!(code, 403);
    env.shutdown().await;
}
on_both!(templates, subscription_templates);
