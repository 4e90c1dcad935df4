//! The console in a real browser: Debian's chromium, headless, driven over WebDriver by a
//! chromedriver this test starts on a free loopback port (and stops). It signs in, searches a
//! card and opens it, creates a campaign and starts it from its page, which reaches 100%
//! through server-sent events without a reload, and checks that a viewer sees no operator button. It takes the screenshots in
//! `docs/` (with `OTAGW_UPDATE_SCREENSHOTS=1`; else in a temporary directory). Without chromedriver it fails, saying what to install: it never skips.

mod console_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use console_support::{add_user, create_campaign, PASSWORD};
use fantoccini::{Client, ClientBuilder, Locator};
use otagw::devkit::{self, DevOptions};
use otagw::store::users::Role;
use serde_json::json;

/// The chromedriver process, killed when dropped (also when the test panics).
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

async fn start_driver() -> Driver {
    let Some(program) = find_program("chromedriver") else {
        panic!(
            "chromedriver not found on PATH nor in /usr/bin: the console's browser test needs \
             Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; \
             .ci/run installs them)"
        );
    };
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(&program)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    for _ in 0..100 {
        if reqwest::get(&status)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} did not answer on port {port} within 10 s",
        program.display()
    );
}

async fn browser(driver: &Driver) -> Client {
    let chromium = find_program("chromium").unwrap_or_else(|| {
        panic!("chromium not found: apt-get install -y chromium chromium-driver")
    });
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            // As root (CI) chromium needs --no-sandbox; /dev/shm may be small in containers.
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--lang=en-US", "--hide-scrollbars"],
        }),
    );
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a WebDriver session with chromium")
}

/// Polls `check` until it holds (or panics after `secs`).
async fn until<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Takes a screenshot (a PNG, checked) into `docs/` when `OTAGW_UPDATE_SCREENSHOTS=1`, else
/// into the test's temporary directory, so that a test run leaves the work tree as it was.
async fn screenshot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
    let dir = if std::env::var("OTAGW_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        std::env::temp_dir().join("otagw-console-screenshots")
    };
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    std::fs::write(dir.join(name), png).expect("write the screenshot");
}

async fn sign_in(c: &Client, base: &str, name: &str) {
    c.goto(&format!("{base}/console/login"))
        .await
        .expect("login page");
    c.find(Locator::Css("input[name=username]"))
        .await
        .expect("user name field")
        .send_keys(name)
        .await
        .expect("type");
    c.find(Locator::Css("input[name=password]"))
        .await
        .expect("password field")
        .send_keys(PASSWORD)
        .await
        .expect("type");
    c.find(Locator::Css("button[type=submit]"))
        .await
        .expect("sign-in button")
        .click()
        .await
        .expect("click");
    until(10, "the dashboard after sign-in", || async {
        text_of(c, "h1").await == "Dashboard"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_chromium() {
    let driver = start_driver().await;
    let env = devkit::start(DevOptions {
        cards: 60,
        provision: true,
        ..DevOptions::default()
    })
    .await
    .expect("devkit");
    let base = env.server.base_url();
    add_user(&env, &env.account_id, "ops.alice", Role::Operator).await;
    add_user(&env, &env.account_id, "watcher", Role::Viewer).await;
    // Some history for the dashboard and the card page.
    let card = env.iccid(3).expect("card 3");
    for (i, apdus) in [
        json!(["A0A40000027F20", "A0A40000026F46", "A0B0000011"]),
        json!(["A0A40000027F20", "A0A40000026F07"]),
        json!(["A0A40000027F20", "A0A4000002FFFF"]),
    ]
    .into_iter()
    .enumerate()
    {
        let iccid = if i == 0 {
            card.clone()
        } else {
            env.iccid(i).expect("card")
        };
        for target in [iccid, card.clone()] {
            let (code, r) = env
                .post(
                    "/api/v1/ota/commands",
                    &json!({"type": "RFM", "target": {"iccid": target},
                        "security": {"spi": "1621", "kic": "12", "kid": "12", "tar": "B00010"},
                        "data": {"apdus": apdus}}),
                )
                .await
                .expect("post");
            assert_eq!(code, 202, "{r}");
            let id = r["commandId"].as_str().expect("id").to_string();
            env.wait_done(&id, Duration::from_secs(30))
                .await
                .expect("done");
        }
    }

    let c = browser(&driver).await;
    c.set_window_size(1280, 900).await.expect("window size");
    sign_in(&c, &base, "ops.alice").await;
    screenshot(&c, "console-dashboard.png").await;

    // Search by ICCID prefix: htmx replaces the results as the operator types.
    c.goto(&format!("{base}/console/cards"))
        .await
        .expect("cards");
    let rows_before = c
        .find_all(Locator::Css("#results tbody tr"))
        .await
        .expect("rows")
        .len();
    assert!(rows_before > 1, "the first page lists cards");
    c.find(Locator::Css("input[name=iccid]"))
        .await
        .expect("ICCID field")
        .send_keys(&card)
        .await
        .expect("type");
    let link = format!("#results a[href='/console/cards/{card}']");
    until(10, "the search narrowed to the card", || async {
        c.find_all(Locator::Css("#results tbody tr"))
            .await
            .is_ok_and(|r| r.len() == 1)
            && c.find(Locator::Css(&link)).await.is_ok()
    })
    .await;
    c.find(Locator::Css(&link))
        .await
        .expect("link")
        .click()
        .await
        .expect("open");
    until(10, "the card page", || async {
        text_of(&c, "h1").await.contains(&card)
    })
    .await;
    // console.js turned the UTC times into local ones.
    until(5, "localized times", || async {
        c.find(Locator::Css("time[data-local]")).await.is_ok()
    })
    .await;
    let page = c.source().await.expect("source");
    assert!(
        page.contains("Key sets") && page.contains("Last commands"),
        "{page}"
    );
    screenshot(&c, "console-card.png").await;

    // Create a campaign in the console from APDU lines; its page opens.
    c.goto(&format!("{base}/console/campaigns"))
        .await
        .expect("campaigns");
    c.find(Locator::Css("input[name=name]"))
        .await
        .expect("name field")
        .send_keys("spn-2026")
        .await
        .expect("type");
    c.find(Locator::Css("textarea[name=commands]"))
        .await
        .expect("commands field")
        .send_keys("A0A40000027F20\nA0A40000026F46\n")
        .await
        .expect("type");
    c.find(Locator::Css("#create"))
        .await
        .expect("Create")
        .click()
        .await
        .expect("create");
    until(10, "the new campaign's page", || async {
        text_of(&c, "h1").await.starts_with("Campaign spn-2026")
    })
    .await;
    let url = c.current_url().await.expect("url");
    let campaign: i64 = url
        .path()
        .rsplit('/')
        .next()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("a campaign page: {url}"));
    // Start it from its page: the form posts in place (htmx) and only server-sent events
    // bring the progress; the page is never reloaded.
    c.execute("window.otagwNoReload = 'same page';", vec![])
        .await
        .expect("mark the page");
    c.find(Locator::Css("#start"))
        .await
        .expect("an operator sees Start")
        .click()
        .await
        .expect("start");
    until(60, "the campaign page at 100%", || async {
        text_of(&c, "#live .pct").await == "100.0%"
            && text_of(&c, "#campaign-state").await == "COMPLETED"
    })
    .await;
    let mark = c
        .execute("return window.otagwNoReload || null;", vec![])
        .await
        .expect("read the mark");
    assert_eq!(mark, json!("same page"), "the page was reloaded");
    screenshot(&c, "console-campaign.png").await;

    // The same card page at a phone's width.
    c.set_window_size(390, 844).await.expect("phone width");
    c.goto(&format!("{base}/console/cards/{card}"))
        .await
        .expect("card");
    screenshot(&c, "console-phone.png").await;
    c.set_window_size(1280, 900).await.expect("window size");

    // Sign out; a viewer sees the campaign but no operator button.
    c.goto(&format!("{base}/console/"))
        .await
        .expect("dashboard");
    c.find(Locator::Css("header form[action='/console/logout'] button"))
        .await
        .expect("sign-out button")
        .click()
        .await
        .expect("sign out");
    until(10, "the login page", || async {
        text_of(&c, "h1").await == "Sign in"
    })
    .await;
    sign_in(&c, &base, "watcher").await;
    let campaign2 = create_campaign(&env, "not-started").await;
    for id in [campaign, campaign2] {
        c.goto(&format!("{base}/console/campaigns/{id}"))
            .await
            .expect("campaign");
        until(10, "the campaign page", || async {
            text_of(&c, "h1").await.starts_with("Campaign")
        })
        .await;
        let buttons = c
            .find_all(Locator::Css(
                "#start, #stop, #retry, form[action*='/start'], form[action*='/stop'], form[action*='/retry']",
            ))
            .await
            .expect("query");
        assert!(
            buttons.is_empty(),
            "a viewer sees {} operator buttons",
            buttons.len()
        );
    }
    c.close().await.expect("close the browser");
    env.shutdown().await;
    drop(driver);
}
