//! The `otagw scp80` CLI, run as a process, against the shared pySim vectors: output bytes,
//! JSON fields and exit status.

use std::process::Command;

use otagw::security::response::encode_response_packet;
use otagw::security::*;
use serde_json::Value;

fn otagw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_otagw"))
        .args(args)
        .output()
        .expect("run otagw");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

/// Runs the binary on the store in data directory `dir` (no configuration file, no
/// database URL from the environment): (success, stdout, stderr).
fn otagw_in(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_otagw"))
        .args(args)
        .env("OTAGW_DATA_DIR", dir)
        .env_remove("OTAGW_CONFIG")
        .env_remove("OTAGW_DATABASE_URL")
        .env_remove("OTAGW_SERVER")
        .env_remove("OTAGW_TOKEN")
        .output()
        .expect("run otagw");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON a verb printed: the whole stdout with `--json`, else its last line (the line
/// after `Json:`).
fn json_of(out: &str) -> Value {
    let line = out.trim_end().lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/vectors/scp80-pysim.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors")).expect("json")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("{k}"))
}

fn key_args(i: &Value) -> Vec<String> {
    vec![
        "--kic".into(),
        s(i, "kic_byte").into(),
        "--kid".into(),
        s(i, "kid_byte").into(),
        "--kic-key".into(),
        s(i, "kic_key").into(),
        "--kid-key".into(),
        s(i, "kid_key").into(),
    ]
}

#[test]
fn encode_command_prints_every_vector_to_the_byte() {
    for v in vectors()
        .iter()
        .filter(|v| v["direction"] == "command_encode")
    {
        let (i, e) = (&v["inputs"], &v["expected"]);
        let mut args: Vec<String> = vec![
            "scp80".into(),
            "encode-command".into(),
            "--spi".into(),
            s(i, "spi").into(),
        ];
        args.extend(key_args(i));
        args.extend([
            "--tar".into(),
            s(i, "tar").into(),
            "--counter".into(),
            s(i, "cntr").into(),
        ]);
        let mut plain = args.clone();
        plain.push(s(i, "apdu").into());
        let refs: Vec<&str> = plain.iter().map(String::as_str).collect();
        let (code, out, err) = otagw(&refs);
        assert_eq!(
            (code, out.as_str()),
            (0, s(e, "secured_packet_with_cpl")),
            "{} {err}",
            v["name"]
        );

        let mut sms = args;
        sms.extend(["--sms".into(), s(i, "apdu").into()]);
        let refs: Vec<&str> = sms.iter().map(String::as_str).collect();
        let (code, out, _) = otagw(&refs);
        assert_eq!((code, out.as_str()), (0, s(e, "sms_user_data")));

        // And the card side reads it back.
        let mut dec: Vec<String> = vec!["scp80".into(), "decode-command".into()];
        dec.extend(key_args(i).into_iter().skip(4));
        dec.push(s(e, "secured_packet_with_cpl").into());
        let refs: Vec<&str> = dec.iter().map(String::as_str).collect();
        let (code, out, err) = otagw(&refs);
        assert_eq!(code, 0, "{err}");
        let json: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(json["data"], i["apdu"]);
        assert_eq!(json["tar"], i["tar"]);
        assert_eq!(json["counter"], i["cntr"]);
    }
}

#[test]
fn decode_response_prints_the_fields_and_exits_by_verification() {
    for v in vectors()
        .iter()
        .filter(|v| v["direction"] == "response_decode")
    {
        let (i, e) = (&v["inputs"], &v["expected"]);
        let ud = s(i, "sms_user_data");
        for (sms, input) in [(true, ud), (false, &ud[6..])] {
            let mut args: Vec<String> = vec![
                "scp80".into(),
                "decode-response".into(),
                "--spi".into(),
                s(i, "spi").into(),
            ];
            args.extend(key_args(i));
            if sms {
                args.push("--sms".into());
            }
            args.push(input.into());
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let (code, out, err) = otagw(&refs);
            if e.get("error").is_some() {
                assert_eq!(code, 1, "{}", v["name"]);
                assert!(err.contains("CC mismatch"), "{err}");
                assert!(out.is_empty());
                continue;
            }
            assert_eq!(code, 0, "{} {err}", v["name"]);
            let json: Value = serde_json::from_str(&out).expect("json");
            assert_eq!(json["tar"], e["tar"]);
            assert_eq!(json["counter"], e["cntr"]);
            assert_eq!(json["pcntr"], e["pcntr"]);
            assert_eq!(json["status"], e["response_status"]);
            assert_eq!(json["status_name"], e["response_status_name"]);
            assert_eq!(json["rc_cc_ds"], e["rc_cc_ds"]);
            assert_eq!(json["data"], e["additional_response_data"]);
            assert_eq!(json["cc_scope"], "sms_udh");
        }
    }
}

#[test]
fn unprotected_error_por_prints_json_and_exits_3() {
    let (code, out, err) = otagw(&[
        "scp80",
        "decode-response",
        "--spi",
        "1619",
        "--kic",
        "15",
        "--kid",
        "15",
        "--kic-key",
        "f09c43ee1a0391665cc9f05af4e0bd10",
        "--kid-key",
        "01981f4a20999f62af99988107baf6ca",
        "--sms",
        "027100000b0ab0001000000000000006",
    ]);
    assert_eq!(code, 3, "{err}");
    let json: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["status"], "06");
    assert_eq!(json["protection"], "unprotected_error");
    assert!(err.contains("unprotected"), "{err}");
}

#[test]
fn bad_input_names_the_field() {
    let base = [
        "scp80",
        "encode-command",
        "--kic",
        "15",
        "--kid",
        "15",
        "--tar",
        "b00010",
        "--counter",
        "0000000001",
    ];
    let run = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        otagw(&a)
    };
    let (code, _, err) = run(&["--spi", "16", "--kic-key", "00", "a0a4"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "otagw: --spi: must be 2 octets (4 hex digits), got 1")
    );
    let (code, _, err) = run(&[
        "--spi",
        "1619",
        "--kic-key",
        "0011",
        "--kid-key",
        "00112233445566778899aabbccddeeff",
        "a0a4",
    ]);
    assert_eq!(
        (code, err.as_str()),
        (1, "otagw: KIc key for 3des-2key must be 16 octets, got 2")
    );
    let (code, _, err) = run(&[
        "--spi",
        "1619",
        "--kid-key",
        "00112233445566778899aabbccddeeff",
        "a0a4",
    ]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "otagw: the SPI asks for ciphering but no KIc key was given"
        )
    );
    let (code, _, err) = run(&[
        "--spi",
        "1200",
        "--kid-key",
        "00112233445566778899aabbccddeeff",
        "zz",
    ]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("otagw: DATA_HEX: \"zz\" is not hex"),
        "{err}"
    );
    let (code, _, err) = otagw(&[
        "scp80",
        "decode-response",
        "--spi",
        "0000",
        "--kic",
        "15",
        "--kid",
        "15",
        "0010",
    ]);
    assert_eq!(
        (code, err.as_str()),
        (1, "otagw: PoR: RPL says 16 octets follow but 0 do")
    );
}

/// PoRs whose CC another implementation computed from RPL, or from TAR (gsm0348 "NORMAL"),
/// verify without --sms and say which scope matched; with --sms only the standard one does.
#[test]
fn every_cc_scope_is_recognised_from_rpl_on() {
    let spi = Spi::from_bytes([0x12, 0x09]); // CC + counter; PoR with CC, in clear.
    let kid_key = hex::decode("00112233445566778899aabbccddeeff").expect("hex");
    let cfg = KeyConfig {
        kid_key: Some(&kid_key),
        ..Default::default()
    };
    let keys = Scp80Keys::resolve(&spi, 0x15, 0x15, &cfg).expect("keys");
    for (scope, name) in [
        (CcScope::SmsUdh, "sms_udh"),
        (CcScope::FromRpl, "from_rpl"),
        (CcScope::FromTar, "from_tar"),
    ] {
        let header = ResponseHeader {
            tar: [0xB0, 0, 0x10],
            counter: Counter::new(5).expect("counter"),
            status: PorStatus::Ok,
        };
        let por =
            encode_response_packet(&header, &spi, &keys, &[0x01, 0x90, 0x00], scope).expect("por");
        let args = [
            "scp80",
            "decode-response",
            "--spi",
            "1209",
            "--kic",
            "15",
            "--kid",
            "15",
            "--kid-key",
            "00112233445566778899aabbccddeeff",
        ];
        let mut plain = args.to_vec();
        let hex_por = hex::encode(&por);
        plain.push(&hex_por);
        let (code, out, err) = otagw(&plain);
        assert_eq!(code, 0, "{name}: {err}");
        let json: Value = serde_json::from_str(&out).expect("json");
        assert_eq!(json["cc_scope"], name);
        assert_eq!(json["data"], "019000");

        let mut sms = args.to_vec();
        let hex_ud = format!("027100{hex_por}");
        sms.extend(["--sms", &hex_ud]);
        let (code, _, _) = otagw(&sms);
        assert_eq!(code == 0, scope == CcScope::SmsUdh, "{name} with --sms");
    }
}

/// CRC check values ("123456789") from the CRC catalogue: CRC-16/X-25 and CRC-32/ISO-HDLC, the
/// RC algorithms of TS 102 225 (ISO/IEC 13239), output big-endian as gsm0348 does.
#[test]
fn rc_check_values() {
    let crc16 = IntegrityKey::new(IntegrityAlgorithm::Crc16, &[], None).expect("crc16");
    let crc32 = IntegrityKey::new(IntegrityAlgorithm::Crc32, &[], None).expect("crc32");
    assert_eq!(hex::encode(crc16.compute(b"123456789")), "906e");
    assert_eq!(hex::encode(crc32.compute(b"123456789")), "cbf43926");
}

/// `otagw serve` started with another data directory (so a new master key) against an existing
/// database refuses to start, saying which key and which database, and leaves no new key file
/// behind; with the database's own key it starts.
#[test]
fn serve_refuses_a_master_key_that_is_not_the_databases() {
    let base = std::env::temp_dir().join(format!("otagw-mk-{}", std::process::id()));
    let (first, second) = (base.join("first"), base.join("second"));
    std::fs::create_dir_all(&second).unwrap();
    let config = otagw::config::Config {
        data_dir: first.clone(),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = otagw::server::open_store(&config)
            .await
            .expect("first start");
        drop(store);
    });
    let db = format!("sqlite://{}", first.join("otagw.db").display());
    let run = |data_dir: &std::path::Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_otagw"))
            .args(["serve", "--database-url", &db, "--listen", "127.0.0.1:0"])
            .env("OTAGW_DATA_DIR", data_dir)
            .env_remove("OTAGW_MASTER_KEY")
            .env_remove("OTAGW_MASTER_KEY_FILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("otagw serve");
        for _ in 0..80 {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let exited = child.try_wait().unwrap();
        if exited.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        (
            exited.and_then(|s| s.code()),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stderr) = run(&second);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("does not belong to the database"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&second.join("master.key").display().to_string()),
        "{stderr}"
    );
    assert!(
        stderr.contains(&first.join("otagw.db").display().to_string()),
        "{stderr}"
    );
    assert!(
        !second.join("master.key").exists(),
        "the new key file stays"
    );
    // Its own key (in the first data directory) starts it: still running after 4 s.
    let (code, stderr) = run(&first);
    assert_eq!(code, None, "{stderr}");
    let _ = std::fs::remove_dir_all(&base);
}

/// `otagw account tokens` and `otagw account revoke-token`, on a fresh data directory.
#[test]
fn account_tokens_listed_and_revoked() {
    let dir = std::env::temp_dir().join(format!("otagw-cli-tok-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |args: &[&str]| otagw_in(&dir, args);
    let (ok, _, err) = run(&["account", "create", "--name", "acme"]);
    assert!(ok, "{err}");
    let (ok, out, _) = run(&["account", "tokens", "--account", "acme"]);
    assert!(ok);
    assert!(
        out.starts_with("Tokens:\n(none)") && json_of(&out) == serde_json::json!([]),
        "{out}"
    );
    let (ok, first, err) = run(&["token", "create", "--account", "acme", "--label", "ci"]);
    assert!(ok, "{err}");
    let (ok, second, err) = run(&[
        "token",
        "create",
        "--account",
        "acme",
        "--label",
        "ops",
        "--json",
    ]);
    assert!(ok, "{err}");
    // The value alone (for `> token-file`), or with --json the token with its id.
    let first = first.trim().to_string();
    let second = json_of(&second);
    assert!(
        second["name"] == "ops" && second["account"] == "acme",
        "{second}"
    );
    let second = second["token"].as_str().expect("token").to_string();
    assert!(first.starts_with("otagw_") && second.starts_with("otagw_"));

    let (ok, out, err) = run(&["account", "tokens", "--account", "acme"]);
    assert!(ok, "{err}");
    let listed = json_of(&out);
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["ci", "ops"], "{out}");
    assert!(
        !out.contains(&first[6..]) && !out.contains(&second[6..]),
        "token value listed: {out}"
    );
    let ci_id = listed[0]["id"].as_str().expect("id").to_string();
    assert!(out.contains(&format!("| {ci_id} | ci ")), "{out}");

    let (ok, _, err) = run(&[
        "account",
        "revoke-token",
        "--account",
        "nobody",
        "--id",
        &ci_id,
    ]);
    assert!(!ok);
    assert!(
        err.contains("--account: no account named \"nobody\""),
        "{err}"
    );
    let (ok, _, err) = run(&["account", "create", "--name", "other"]);
    assert!(ok, "{err}");
    // Another account's token is not found there.
    let (ok, _, err) = run(&[
        "account",
        "revoke-token",
        "--account",
        "other",
        "--id",
        &ci_id,
    ]);
    assert!(!ok);
    assert!(err.contains("--id: account other has no token"), "{err}");

    let (ok, out, err) = run(&[
        "account",
        "revoke-token",
        "--account",
        "acme",
        "--id",
        &ci_id,
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        json_of(&out),
        serde_json::json!({"id": ci_id, "revoked": true}),
        "{out}"
    );
    let (ok, out, _) = run(&["account", "tokens", "--account", "acme", "--json"]);
    assert!(ok);
    let listed = json_of(&out);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{out}");
    assert!(listed[0]["name"] == "ops" && !out.contains(&ci_id), "{out}");
    let (ok, _, err) = run(&[
        "account",
        "revoke-token",
        "--account",
        "acme",
        "--id",
        &ci_id,
    ]);
    assert!(!ok, "revoked twice");
    assert!(err.contains("has no token"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `otagw card list|show|update|delete` on the store, and the ICCID check `otagw provision`
/// shares with `POST /api/v1/cards`: the same wrong Luhn digit is refused, naming the ICCID.
#[test]
fn cards_listed_updated_deleted_and_iccids_checked_like_rest() {
    let dir =
        std::env::temp_dir().join(format!("otagw-cli-card-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |args: &[&str]| otagw_in(&dir, args);
    assert!(run(&["account", "create", "--name", "acme"]).0);
    assert!(run(&["profile", "create", "--name", "poc", "--app-type", "rfm"]).0);
    let k = "00112233445566778899AABBCCDDEEFF";
    let header = "VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID,KIK,CNTR,PIN1\n";
    // The ICCID REST refuses in `cards_listed_updated_deleted` (tests/api.rs): wrong Luhn digit.
    let bad = dir.join("bad.out");
    std::fs::write(
        &bad,
        format!(
            "{header}8933012300000000013,208010000000013,33610000013,{k},{k},{k},0000000001,1234\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "provision",
        "--file",
        bad.to_str().unwrap(),
        "--profile",
        "poc",
    ]);
    assert!(!ok);
    assert!(err.contains("field ICCID") && err.contains("Luhn"), "{err}");
    let good = dir.join("good.out");
    std::fs::write(
        &good,
        format!(
            "{header}8933012300000000012,208010000000012,33610000012,{k},{k},{k},0000000001,1234\n\
             8933012300000000020F,208010000000020,33610000020,{k},{k},{k},0000000001,1234\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = run(&[
        "provision",
        "--file",
        good.to_str().unwrap(),
        "--profile",
        "poc",
    ]);
    assert!(ok, "{err}");

    let (ok, out, err) = run(&["card", "list", "--iccid", "89330123", "--limit", "1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("| 8933012300000000012 |") && !out.contains("8933012300000000020"),
        "{out}"
    );
    assert!(out.contains("more: --after 8933012300000000012"), "{out}");
    let (ok, out, _) = run(&["card", "list", "--imsi", "20801000000002"]);
    assert!(ok);
    assert!(
        out.contains("8933012300000000020") && out.contains("1 card(s)"),
        "{out}"
    );
    let (ok, _, err) = run(&["card", "list", "--iccid", "89x"]);
    assert!(!ok);
    assert!(err.contains("--iccid"), "{err}");

    // The checks of PATCH, options named.
    for (args, named) in [
        (vec!["--msisdn", "33a"], "--msisdn"),
        (vec!["--imsi", "123"], "--imsi"),
        (vec!["--set", "cardClass=sim-ish"], "attributes.cardClass"),
        (vec!["--set", "PIN1=1234"], "attributes.PIN1"),
        (vec![], "nothing to change"),
    ] {
        let mut a = vec!["card", "update", "--iccid", "8933012300000000012"];
        a.extend(args.iter().copied());
        let (ok, _, err) = run(&a);
        assert!(!ok, "{args:?}");
        assert!(err.contains(named), "{args:?}: {err}");
    }
    let (ok, out, err) = run(&[
        "card",
        "update",
        "--iccid",
        "8933012300000000012",
        "--msisdn",
        "+33699999999",
        "--set",
        "cardClass=gsm",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("| msisdn "), "{out}");
    assert_eq!(json_of(&out)["msisdn"], "33699999999", "{out}");
    let (ok, out, _) = run(&["card", "show", "--iccid", "8933012300000000012F"]);
    assert!(ok);
    assert!(
        out.contains("| attribute cardClass | gsm ") && out.contains("| key version 1 "),
        "{out}"
    );
    assert_eq!(json_of(&out)["attributes"]["cardClass"], "gsm", "{out}");
    assert!(
        !out.contains("PIN1") && !out.to_lowercase().contains("00112233"),
        "{out}"
    );

    // Another account does not see it.
    assert!(run(&["account", "create", "--name", "other"]).0);
    let (ok, _, err) = run(&[
        "card",
        "delete",
        "--iccid",
        "8933012300000000012",
        "--account",
        "other",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--iccid: card 8933012300000000012 not found"),
        "{err}"
    );
    let (ok, out, err) = run(&[
        "card",
        "delete",
        "--iccid",
        "8933012300000000012",
        "--account",
        "acme",
    ]);
    assert!(ok, "{err}");
    let deleted = json_of(&out);
    assert!(
        deleted["iccid"] == "8933012300000000012" && deleted["keySetsDeleted"] == 1,
        "{out}"
    );
    let (ok, _, err) = run(&[
        "card",
        "show",
        "--iccid",
        "8933012300000000012",
        "--account",
        "acme",
    ]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `campaign create --profile` takes the profile's name as well as its id, and an APDU file
/// line that does not parse is named as FILE:LINE (blank lines counted).
#[test]
fn campaign_create_takes_a_profile_name_and_names_the_bad_apdu_line() {
    let dir =
        std::env::temp_dir().join(format!("otagw-cli-camp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let run = |args: &[&str]| otagw_in(&dir, args);
    let (ok, _, err) = run(&["account", "create", "--name", "acme"]);
    assert!(ok, "{err}");
    let (ok, _, err) = run(&[
        "profile",
        "create",
        "--account",
        "acme",
        "--name",
        "fleet",
        "--app-type",
        "rfm",
        "--spi",
        "1621",
        "--kic-byte",
        "12",
        "--kid-byte",
        "12",
    ]);
    assert!(ok, "{err}");
    let good = dir.join("good.apdu");
    std::fs::write(&good, "A0A40000023F00\n\nA0A40000027F20\n").expect("file");
    let (ok, out, err) = run(&[
        "campaign",
        "create",
        "--account",
        "acme",
        "--profile",
        "fleet",
        "--name",
        "by_name",
        "--type",
        "rfm",
        "--apdu-file",
        good.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert_eq!(json_of(&out)["name"], "by_name", "{out}");
    let bad = dir.join("bad.apdu");
    std::fs::write(&bad, "A0A40000023F00\n\nA0A4ZZ\n").expect("file");
    let (ok, _, err) = run(&[
        "campaign",
        "create",
        "--account",
        "acme",
        "--profile",
        "fleet",
        "--name",
        "bad",
        "--type",
        "rfm",
        "--apdu-file",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    // The third line of the file (the blank second one counted), the second command.
    assert!(
        err.contains(&format!("{}:3:", bad.display())) && err.contains("A0A4ZZ"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "campaign",
        "create",
        "--account",
        "acme",
        "--profile",
        "nope",
        "--name",
        "x",
        "--type",
        "rfm",
        "--apdu-file",
        good.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("--profile") && err.contains("nope"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `otagw serve` on the store in `dir` (any free port), killed when dropped.
struct Serve {
    child: std::process::Child,
    url: String,
    // Kept open: a later line from serve must not meet a closed pipe.
    _stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Serve {
    fn start(dir: &std::path::Path, envs: &[(&str, String)]) -> Serve {
        use std::io::BufRead;
        let mut c = Command::new(env!("CARGO_BIN_EXE_otagw"));
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .env("OTAGW_DATA_DIR", dir)
            .env("RUST_LOG", "warn")
            .env_remove("OTAGW_CONFIG")
            .env_remove("OTAGW_DATABASE_URL")
            .env_remove("OTAGW_SERVER")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start serve");
        // "otagw serve: API http://127.0.0.1:PORT gateway ... store ..."
        let mut line = String::new();
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("serve's first line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        Serve {
            child,
            url,
            _stdout: stdout,
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A data directory with account `acme` and a token for it written to `DIR/token` (mode
/// 0600); the token's value.
fn store_with_token(dir: &std::path::Path) -> String {
    let (ok, _, err) = otagw_in(dir, &["account", "create", "--name", "acme"]);
    assert!(ok, "{err}");
    let (ok, out, err) = otagw_in(dir, &["token", "create", "--account", "acme", "--json"]);
    assert!(ok, "{err}");
    let token = json_of(&out)["token"].as_str().expect("token").to_string();
    std::fs::write(dir.join("token"), format!("{token}\n")).expect("token file");
    token
}

/// Times replaced by `TIME` (`2026-12-07T05:49:12.123Z` and `2026-12-07 05:49:12 UTC`), so
/// two runs' outputs compare.
fn without_times(s: &str) -> String {
    let b = s.as_bytes();
    let shape = |i: usize, pattern: &[u8]| -> bool {
        pattern.iter().enumerate().all(|(j, p)| {
            b.get(i + j).is_some_and(|c| match p {
                b'9' => c.is_ascii_digit(),
                b'?' => *c == b'T' || *c == b' ',
                p => c == p,
            })
        })
    };
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if shape(i, b"9999-99-99?99:99:99") {
            i += 19;
            if shape(i, b".999Z") {
                i += 5;
            }
            out.push_str("TIME");
        } else {
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// A run of exactly 13 digits: a millisecond time printed as a number.
fn has_ms_integer(s: &str) -> bool {
    s.split(|c: char| !c.is_ascii_digit())
        .any(|run| run.len() == 13)
}

/// The procedure's steps (create profile, provision from a vendor file, create a group from
/// an MSISDN list, create a campaign from an APDU file, start it, start another from it as a
/// template, show) run in remote mode against a `serve` started here print what local mode
/// prints for the same data (times aside); each step's `--json` output is JSON alone; dates
/// in the tables read as dates.
#[test]
fn remote_mode_runs_the_procedure_and_prints_what_local_mode_prints() {
    let base = std::env::temp_dir().join(format!(
        "otagw-cli-remote-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let (local, served) = (base.join("local"), base.join("served"));
    for d in [&local, &served] {
        std::fs::create_dir_all(d).expect("dir");
        store_with_token(d);
    }
    let server = Serve::start(&served, &[]);
    let token_file = served.join("token");
    let remote = |args: &[&str]| {
        let mut a: Vec<&str> = args.to_vec();
        a.extend([
            "--server",
            server.url.as_str(),
            "--token-file",
            token_file.to_str().unwrap(),
        ]);
        // A data directory with no store: remote mode must not need one.
        otagw_in(&base.join("nothing-here"), &a)
    };
    let k = "00112233445566778899AABBCCDDEEFF";
    let vendor = base.join("Provisioning_3TestSubs.out");
    std::fs::write(
        &vendor,
        format!(
            "VAR_OUT:ICCID,IMSI,MSISDN,KIC,KID\n\
             8933012300000000012,208010000000012,961234567890,{k},{k}\n\
             8933012300000000020F,208010000000020,961234567891,{k},{k}\n\
             8933012300000000038,208010000000038,961234567892,{k},{k}\n"
        ),
    )
    .expect("vendor file");
    let msisdns = base.join("TargetMSISDN_3TestSubs.txt");
    std::fs::write(&msisdns, "961234567890\n961234567892\n").expect("list");
    let apdus = base.join("Commands.txt");
    std::fs::write(&apdus, "A0A40000027F20\nA0A40000026F46\n").expect("apdus");
    let (v, m, a) = (
        vendor.to_str().unwrap(),
        msisdns.to_str().unwrap(),
        apdus.to_str().unwrap(),
    );
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "profile",
            "create",
            "--name",
            "poc_3cards",
            "--app-type",
            "rfm",
        ],
        vec!["provision", "--file", v, "--profile", "poc_3cards"],
        vec!["profile", "show", "--profile", "1"],
        vec![
            "group",
            "create",
            "--profile",
            "1",
            "--name",
            "poc_3cards",
            "--msisdn-list",
            m,
        ],
        vec![
            "campaign",
            "create",
            "--type",
            "RFM",
            "--profile",
            "poc_3cards",
            "--name",
            "poc_3cards_campaign",
            "--spi",
            "1621",
            "--tar",
            "B00010",
            "--transmission-mode",
            "conc",
            "--apdu-file",
            a,
        ],
        vec!["campaign", "start", "--campaign", "1", "--card-group", "1"],
        vec![
            "campaign",
            "start",
            "--template",
            "1",
            "--name",
            "again",
            "--card-group",
            "1",
        ],
        vec!["group", "list"],
        vec!["card", "list"],
        vec!["card", "show", "--iccid", "8933012300000000020F"],
        vec!["account", "tokens"],
    ];
    for step in &steps {
        let (ok, here, err) = otagw_in(&local, step);
        assert!(ok, "local {step:?}: {err}");
        let (ok, there, err) = remote(step);
        assert!(ok, "remote {step:?}: {err}");
        // Table first, then the JSON, as the procedure prints them.
        assert!(
            here.lines().next().is_some_and(|l| l.ends_with(':'))
                && here.contains("\n+-")
                && here.contains("\nJson:\n"),
            "{step:?}: {here}"
        );
        assert!(!has_ms_integer(&here), "{step:?}: {here}");
        if step[0] == "account" {
            // Each store's token has its own id.
            continue;
        }
        assert_eq!(without_times(&here), without_times(&there), "{step:?}");
    }
    // Dates read as dates in the tables, RFC 3339 in the JSON.
    let (_, out, _) = remote(&["profile", "show", "--profile", "poc_3cards"]);
    let created = out
        .lines()
        .find(|l| l.starts_with("| created "))
        .unwrap_or_else(|| panic!("{out}"));
    let date = created.split('|').nth(2).unwrap_or_default().trim();
    assert!(
        chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%d %H:%M:%S UTC").is_ok(),
        "{created}"
    );
    let json = json_of(&out);
    assert!(
        chrono::DateTime::parse_from_rfc3339(json["created"].as_str().unwrap_or_default()).is_ok(),
        "{out}"
    );
    // `show` through the server and on its store, the same data at once.
    let (ok, there, err) = remote(&["campaign", "show", "1"]);
    assert!(ok, "{err}");
    let (ok, here, err) = otagw_in(&served, &["campaign", "show", "1"]);
    assert!(ok, "{err}");
    assert_eq!(without_times(&here), without_times(&there));
    assert!(
        there.contains("| iteration 1 ") && there.contains(" 2 cards: "),
        "{there}"
    );
    assert!(!has_ms_integer(&there), "{there}");
    // With --json, stdout is one JSON document, in both modes.
    for step in [
        vec!["campaign", "show", "1", "--json"],
        vec!["campaign", "list", "--json"],
        vec!["profile", "list", "--json"],
        vec!["card", "list", "--json", "--limit", "1"],
        vec!["account", "tokens", "--json"],
    ] {
        for (mode, (ok, out, err)) in [
            ("remote", remote(&step)),
            ("local", otagw_in(&served, &step)),
        ] {
            assert!(ok, "{mode} {step:?}: {err}");
            let parsed: Result<Value, _> = serde_json::from_str(&out);
            assert!(parsed.is_ok(), "{mode} {step:?}: {out}");
        }
    }
    let (_, out, _) = remote(&["campaign", "list", "--json"]);
    let listed: Value = serde_json::from_str(&out).unwrap_or_default();
    assert_eq!(listed[1]["name"], "again", "{out}");
    assert_eq!(listed[1]["state"], "RUNNING", "{out}");
    drop(server);
    let _ = std::fs::remove_dir_all(&base);
}

/// Remote mode's refusals: a bad token shows the server's error body; a token on the command
/// line is refused; a verb the API has no call for says so; the API's field error on an
/// APDU file names the file and line.
#[test]
fn remote_mode_shows_the_servers_errors_and_takes_no_token_on_the_command_line() {
    let dir =
        std::env::temp_dir().join(format!("otagw-cli-rerr-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let token = store_with_token(&dir);
    let server = Serve::start(&dir, &[]);
    let elsewhere = dir.join("client");
    let run = |args: &[&str]| otagw_in(&elsewhere, args);
    let bad = dir.join("bad-token");
    std::fs::write(&bad, "otagw_0000\n").expect("file");
    let (ok, out, err) = run(&[
        "profile",
        "list",
        "--server",
        &server.url,
        "--token-file",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("401 UNAUTHORIZED: unknown bearer token") && err.contains("--token-file"),
        "{err}"
    );
    // The token's value on the command line: refused before anything is sent, and not the
    // value of OTAGW_TOKEN either.
    for args in [
        vec![
            "profile",
            "list",
            "--server",
            &server.url,
            "--token",
            &token,
        ],
        vec![
            "--token",
            &token,
            "profile",
            "list",
            "--server",
            &server.url,
        ],
    ] {
        let (ok, out, err) = run(&args);
        assert!(!ok && out.is_empty(), "{args:?}: {out}");
        assert!(
            err.contains("--token: a token is never taken on the command line")
                && err.contains("--token-file"),
            "{err}"
        );
    }
    let (ok, _, err) = run(&["profile", "list", "--server", &server.url]);
    assert!(!ok && err.contains("OTAGW_TOKEN"), "{err}");
    // The token from the environment works.
    let out = Command::new(env!("CARGO_BIN_EXE_otagw"))
        .args(["profile", "list", "--json"])
        .env("OTAGW_SERVER", &server.url)
        .env("OTAGW_TOKEN", &token)
        .env("OTAGW_DATA_DIR", &elsewhere)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    // Verbs with no REST call.
    let token_file = dir.join("token");
    let tf = token_file.to_str().unwrap();
    for (args, verb) in [
        (
            vec!["account", "create", "--name", "x"],
            "`otagw account create` has no remote mode",
        ),
        (
            vec!["token", "create", "--account", "acme"],
            "`otagw token create` has no remote mode",
        ),
        (vec!["serve"], "`otagw serve` has no remote mode"),
        (vec!["smsc-sim"], "`otagw smsc-sim` has no remote mode"),
    ] {
        let mut a = args.clone();
        a.extend(["--server", &server.url, "--token-file", tf]);
        let (ok, _, err) = run(&a);
        assert!(!ok && err.contains(verb), "{args:?}: {err}");
    }
    // The API's error body: status, code, message, field; an APDU file's line named.
    let (ok, _, err) = run(&[
        "profile",
        "create",
        "--name",
        "fleet",
        "--app-type",
        "rfm",
        "--server",
        &server.url,
        "--token-file",
        tf,
    ]);
    assert!(ok, "{err}");
    let apdus = dir.join("bad.apdu");
    std::fs::write(&apdus, "A0A40000023F00\n\nA0A4ZZ\n").expect("file");
    let (ok, _, err) = run(&[
        "campaign",
        "create",
        "--profile",
        "fleet",
        "--name",
        "bad",
        "--type",
        "rfm",
        "--apdu-file",
        apdus.to_str().unwrap(),
        "--server",
        &server.url,
        "--token-file",
        tf,
    ]);
    assert!(!ok);
    assert!(
        err.contains(&format!("{}:3:", apdus.display()))
            && err.contains("422 VALIDATION_ERROR")
            && err.contains("A0A4ZZ")
            && err.contains("(field: commands[1])"),
        "{err}"
    );
    let (ok, _, err) = run(&[
        "group",
        "create",
        "--profile",
        "nope",
        "--name",
        "g",
        "--server",
        &server.url,
        "--token-file",
        tf,
    ]);
    assert!(
        !ok && err.contains("--profile") && err.contains("nope"),
        "{err}"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Remote mode over HTTPS: the development CA given with --ca-file is trusted; without it the
/// server's certificate is refused.
#[test]
fn remote_mode_over_https_trusts_the_ca_file() {
    let dir =
        std::env::temp_dir().join(format!("otagw-cli-rtls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    store_with_token(&dir);
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    let server = Serve::start(
        &dir,
        &[
            (
                "OTAGW_API_TLS_CERT",
                certs.join("dev-server.pem").display().to_string(),
            ),
            (
                "OTAGW_API_TLS_KEY",
                certs.join("dev-server.key").display().to_string(),
            ),
        ],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let tf = dir.join("token");
    let base = [
        "profile",
        "list",
        "--json",
        "--server",
        server.url.as_str(),
        "--token-file",
        tf.to_str().unwrap(),
    ];
    let (ok, _, err) = otagw_in(&dir.join("client"), &base);
    assert!(!ok, "an unknown CA was trusted");
    assert!(err.contains(&server.url), "{err}");
    let ca = certs.join("dev-ca.pem");
    let mut with_ca = base.to_vec();
    with_ca.extend(["--ca-file", ca.to_str().unwrap()]);
    let (ok, out, err) = otagw_in(&dir.join("client"), &with_ca);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "[]");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
