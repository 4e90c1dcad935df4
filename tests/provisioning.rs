//! Profiles, vendor-file provisioning and card groups: through the REST API (devkit, SQLite)
//! and through the `otagw` binary end to end.

use std::path::Path;
use std::process::Command;

use otagw::devkit::{self, DevEnv, DevOptions};
use serde_json::{json, Value};

const SAMPLE: &str = "\
VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID
8991234567788901234F,421234567890123,961234567890,12122343423234234234234234234,56756785675678568678678678678
8991234567788901235F,421234567890124,961234567891,23434564756786846345235345645745,23454576679803454767897890890678
";

fn luhn(body: &str) -> u8 {
    let sum: u32 = body
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// The ICCID (19 digits, Luhn) of card `i`.
fn iccid(i: u64) -> String {
    let body = format!("898800{i:012}");
    format!("{body}{}", luhn(&body))
}

/// A vendor file of cards `from..to`.
fn vendor(from: u64, to: u64) -> String {
    let k = "00112233445566778899AABBCCDDEEFF";
    let mut out = String::from("VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIK,CNTR,PIN1,ACC\n");
    for i in from..to {
        out.push_str(&format!(
            "{}F,26288{i:010},4988{i:08},{k},{k},{k},0000000005,1234,0001\n",
            iccid(i)
        ));
    }
    out
}

async fn env() -> DevEnv {
    devkit::start(DevOptions::default())
        .await
        .expect("dev environment")
}

async fn post_text(env: &DevEnv, path: &str, body: &str) -> (u16, Value) {
    let r = env
        .client
        .post(format!("{}{path}", env.server.base_url()))
        .bearer_auth(&env.token)
        .header("content-type", "text/plain")
        .body(body.to_string())
        .send()
        .await
        .expect("post");
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn rest_profiles_provisioning_and_groups() {
    let env = env().await;
    let (code, p) = env
        .post(
            "/api/v1/profiles",
            &json!({"name": "poc_3cards", "appType": "rfm", "defaults": {"spi": "1621"}}),
        )
        .await
        .expect("post");
    assert_eq!(code, 201, "{p}");
    assert_eq!(p["tars"], json!(["B00010"]));
    let id = p["id"].as_i64().expect("id");
    let (code, e) = env
        .post("/api/v1/profiles", &json!({"name": "poc_3cards"}))
        .await
        .expect("post");
    assert_eq!(code, 409, "{e}");
    let (code, e) = env
        .post("/api/v1/profiles", &json!({"name": "a b"}))
        .await
        .expect("post");
    assert_eq!(code, 422, "{e}");
    assert_eq!(e["field"], "name");

    // The brief's sample: refused naming line 2 and KIC.
    let path = format!("/api/v1/profiles/{id}/provision");
    let (code, e) = post_text(&env, &path, SAMPLE).await;
    assert_eq!(code, 422, "{e}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("line 2, field KIC: 29 hex digits"), "{msg}");

    // A good file.
    let (code, r) = post_text(
        &env,
        &format!("{path}?autoGroup=true&groupName=first"),
        &vendor(0, 10),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    assert_eq!(r["imported"], 10);
    let group = r["groupId"].as_i64().expect("groupId");
    let (code, card) = env
        .get(&format!("/api/v1/cards/{}", iccid(3)))
        .await
        .expect("get");
    assert_eq!(code, 200, "{card}");
    assert_eq!(card["msisdn"], "498800000003");
    assert!(!card.to_string().contains("1234"), "PIN printed: {card}");
    let (code, g) = env
        .get(&format!("/api/v1/cardgroups/{group}"))
        .await
        .expect("get");
    assert_eq!(code, 200);
    assert_eq!(g["cards"], 10);

    // Already provisioned (line 3 of this file is card 9) and duplicate in file: nothing of
    // the file is imported.
    let (code, e) = post_text(&env, &path, &vendor(8, 12)).await;
    assert_eq!(code, 422, "{e}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("line 2, field ICCID: card"), "{msg}");
    assert!(msg.contains("already provisioned"), "{msg}");
    let (code, _) = env
        .get(&format!("/api/v1/cards/{}", iccid(11)))
        .await
        .expect("get");
    assert_eq!(code, 404);
    let dup = format!(
        "{}{}",
        vendor(20, 22),
        vendor(20, 21).lines().nth(1).unwrap_or_default()
    );
    let (code, e) = post_text(&env, &path, &dup).await;
    assert_eq!(code, 422, "{e}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(msg.contains("line 4, field ICCID"), "{msg}");
    assert!(msg.contains("already on line 2"), "{msg}");
    let (code, _) = env
        .get(&format!("/api/v1/cards/{}", iccid(20)))
        .await
        .expect("get");
    assert_eq!(code, 404);
    // A Luhn failure is named.
    let bad = vendor(30, 31).replace(
        &iccid(30),
        &format!("{}{}", &iccid(30)[..18], (luhn(&iccid(30)[..18]) + 1) % 10),
    );
    let (code, e) = post_text(&env, &path, &bad).await;
    assert_eq!(code, 422, "{e}");
    let msg = e["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("line 2, field ICCID") && msg.contains("Luhn"),
        "{msg}"
    );

    // Groups: all of the profile, a listed subset, a card outside the profile refused.
    let (code, g) = env
        .post(
            "/api/v1/cardgroups",
            &json!({"profileId": id, "name": "all"}),
        )
        .await
        .expect("post");
    assert_eq!(code, 201, "{g}");
    assert_eq!(g["cards"], 10);
    let (code, g) = env
        .post(
            "/api/v1/cardgroups",
            &json!({"profileId": id, "name": "two", "iccids": [iccid(1), iccid(2)]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 201, "{g}");
    assert_eq!(g["cards"], 2);
    let (code, e) = env
        .post(
            "/api/v1/cardgroups",
            &json!({"profileId": id, "name": "bad", "iccids": [iccid(1), iccid(50)]}),
        )
        .await
        .expect("post");
    assert_eq!(code, 422, "{e}");
    let (code, list) = env.get("/api/v1/cardgroups").await.expect("get");
    assert_eq!(code, 200);
    assert_eq!(list.as_array().map(Vec::len), Some(3));

    // Another account sees none of it.
    let store = &env.server.store;
    let other = store
        .create_account("other", otagw::clock::now_ms())
        .await
        .expect("account");
    let token = store
        .create_token(&other.id, "t", otagw::clock::now_ms())
        .await
        .expect("token");
    for p in [
        format!("/api/v1/profiles/{id}"),
        format!("/api/v1/cardgroups/{group}"),
    ] {
        let r = env
            .client
            .get(format!("{}{p}", env.server.base_url()))
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 404, "{p}");
    }
}

fn otagw(data_dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_otagw"))
        .args(args)
        .env("OTAGW_DATA_DIR", data_dir)
        .env_remove("OTAGW_CONFIG")
        .output()
        .expect("run otagw");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON a verb printed: its last line (all of it with `--json`).
fn json_of(out: &str) -> serde_json::Value {
    let line = out.trim_end().lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn cli_end_to_end() {
    let dir = std::env::temp_dir().join(format!("otagw-prov-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ok, _, err) = otagw(&dir, &["account", "create", "--name", "acme"]);
    assert!(ok, "{err}");
    let (ok, out, err) = otagw(
        &dir,
        &["profile", "create", "--name", "poc", "--app-type", "rfm"],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("Profile instance:\n"), "{out}");
    let profile = json_of(&out);
    assert!(profile["id"] == 1 && profile["name"] == "poc", "{out}");
    let (ok, _, err) = otagw(&dir, &["profile", "create", "--name", "a b"]);
    assert!(!ok);
    assert!(err.contains("must not contain spaces"), "{err}");

    let sample = dir.join("sample.out");
    std::fs::write(&sample, SAMPLE).expect("write");
    let s = sample.to_string_lossy().into_owned();
    let (ok, _, err) = otagw(&dir, &["provision", "--file", &s, "--profile", "1"]);
    assert!(!ok);
    assert!(err.contains("line 2, field KIC: 29 hex digits"), "{err}");

    let good = dir.join("batch1.out");
    std::fs::write(&good, vendor(0, 5)).expect("write");
    let g = good.to_string_lossy().into_owned();
    let (ok, out, err) = otagw(
        &dir,
        &[
            "provision",
            "--file",
            &g,
            "--profile",
            "poc",
            "--auto-group",
            "true",
        ],
    );
    assert!(ok, "{err}");
    let done = json_of(&out);
    assert!(
        done["imported"] == 5 && done["groupName"] == "batch1",
        "{out}"
    );
    // The file's path (a random directory name) is printed; the PIN must not be.
    let (out, err) = (out.replace(&g, "FILE"), err.replace(&g, "FILE"));
    assert!(
        !err.contains("1234") && !out.contains("1234"),
        "PIN printed: {out}\n{err}"
    );
    let (ok, _, err) = otagw(&dir, &["provision", "--file", &g, "--profile", "poc"]);
    assert!(!ok);
    assert!(err.contains("already provisioned"), "{err}");

    let list = dir.join("list.txt");
    std::fs::write(
        &list,
        format!("{}\n{}\n{}\n", iccid(1), iccid(99), iccid(1)),
    )
    .expect("write");
    let l = list.to_string_lossy().into_owned();
    let (ok, _, err) = otagw(
        &dir,
        &[
            "group",
            "create",
            "--profile",
            "1",
            "--name",
            "sub",
            "--iccid-list",
            &l,
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("line 3:") && err.contains("already on line 1"),
        "{err}"
    );
    std::fs::write(&list, format!("{}\n{}\n", iccid(1), iccid(99))).expect("write");
    let (ok, _, err) = otagw(
        &dir,
        &[
            "group",
            "create",
            "--profile",
            "1",
            "--name",
            "sub",
            "--iccid-list",
            &l,
        ],
    );
    assert!(!ok);
    assert!(err.contains("line 2: no card of profile poc"), "{err}");
    std::fs::write(&list, format!("{}\n{}F\n", iccid(1), iccid(2))).expect("write");
    let (ok, out, err) = otagw(
        &dir,
        &[
            "group",
            "create",
            "--profile",
            "1",
            "--name",
            "sub",
            "--iccid-list",
            &l,
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(json_of(&out)["cards"], 2, "{out}");
    let (ok, out, _) = otagw(&dir, &["group", "list", "--json"]);
    assert!(ok);
    assert_eq!(json_of(&out).as_array().map(Vec::len), Some(2), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A profile's `defaults.gp` is checked when the profile is created (422 naming the field),
/// and a command for one of its cards is built for its GlobalPlatform version: a GP 2.1.1
/// card's RAM script asking GET STATUS P2 02 (which such a card answers with 6A86) is refused
/// naming the APDU.
#[tokio::test]
async fn profile_gp_settings() {
    let env = env().await;
    for (gp, field) in [
        (json!({"version": "3.0"}), "defaults.gp.version"),
        (json!({"kcvFill": "FF"}), "defaults.gp.kcvFill"),
        (json!({"getStatusP2": "00"}), "defaults.gp.getStatusP2"),
        (json!("2.1.1"), "defaults.gp"),
    ] {
        let (code, e) = env
            .post(
                "/api/v1/profiles",
                &json!({"name": "gp_bad", "defaults": {"gp": gp}}),
            )
            .await
            .expect("post");
        assert_eq!((code, e["field"].as_str()), (422, Some(field)), "{e}");
    }
    let (code, p) = env
        .post(
            "/api/v1/profiles",
            &json!({"name": "gp211", "defaults": {"gp": {"version": "2.1.1", "kcvFill": "00"}}}),
        )
        .await
        .expect("post");
    assert_eq!(code, 201, "{p}");
    assert_eq!(p["defaults"]["gp"]["version"], "2.1.1");
    let id = p["id"].as_i64().expect("id");
    let (code, r) = post_text(
        &env,
        &format!("/api/v1/profiles/{id}/provision"),
        &vendor(100, 101),
    )
    .await;
    assert_eq!(code, 201, "{r}");
    let command = |apdu: &str| {
        json!({
            "type": "RAM",
            "target": {"iccid": iccid(100)},
            "security": {"spi": "1621", "kic": "15", "kid": "15", "tar": "000000"},
            "data": {"apdus": [apdu]},
        })
    };
    let (code, e) = env
        .post("/api/v1/ota/commands", &command("80F28002024F0000"))
        .await
        .expect("post");
    assert_eq!(
        (code, e["field"].as_str()),
        (422, Some("data.apdus[0]")),
        "{e}"
    );
    let message = e["message"].as_str().unwrap_or_default();
    assert!(message.contains("use P2 00"), "{message}");
    let (code, a) = env
        .post("/api/v1/ota/commands", &command("80F28000024F0000"))
        .await
        .expect("post");
    assert!((200..300).contains(&code), "{code} {a}");
}

/// Cards provisioned from a vendor file have key sets without algorithms: rotate-keys takes
/// the KIc/KID codings from their profile (`kicByte`/`kidByte`) and the rotation runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_keys_on_provisioned_cards_uses_the_profile_codings() {
    let env = otagw::devkit::start(otagw::devkit::DevOptions {
        cards: 2,
        provision: true,
        ..Default::default()
    })
    .await
    .expect("devkit");
    let iccid = env.iccid(1).expect("card");
    let set = env
        .server
        .store
        .key_set(&iccid, 1)
        .await
        .expect("store")
        .expect("key set");
    assert!(
        set.kic_algorithm.is_none() || set.kid_algorithm.is_none(),
        "the vendor file's key set has algorithms: this test needs one without"
    );
    let (code, r) = env
        .post(
            "/api/v1/ota/security/rotate-keys",
            &serde_json::json!({"iccid": iccid}),
        )
        .await
        .expect("rotate");
    assert_eq!(code, 202, "{r}");
    let id = r["commands"][0]["commandId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let done = env
        .wait_done(&id, std::time::Duration::from_secs(20))
        .await
        .expect("done");
    assert_eq!(done["status"], "SUCCESS", "{done}");
    env.shutdown().await;
}
