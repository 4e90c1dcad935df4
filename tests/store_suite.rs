//! One suite of store tests, run against SQLite (a file in a fresh temporary directory) and
//! PostgreSQL (a fresh schema per test in the database at `OTAGW_TEST_DATABASE_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test`). The PostgreSQL tests fail when the server cannot
//! be reached: they are not skipped.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use otagw::command::{CardResponse, CommandError, CommandStatus, CommandType, ErrorCode, Priority};
use otagw::security::{CipherAlgorithm, IntegrityAlgorithm};
use otagw::store::{
    provision_rows, AppletRecord, BatchRecord, CancelOutcome, CardChanges, CardKey, CardSearch,
    GroupMembers, KeyMaterial, KeySetRecord, MasterKey, NewCard, NewCommand, NewKeys, NewProfile,
    ProfileDefaults, SealingError, SecuredPacket, SqlStore, Store, StoreError, Transition, Webhook,
};
use sqlx::Row;

mod common;
use common::{master, Backend, TestDb};

fn keys(seed: u8) -> KeyMaterial {
    KeyMaterial {
        kic: (0..16)
            .map(|i| seed.wrapping_mul(31).wrapping_add(i * 7))
            .collect(),
        kid: (0..16)
            .map(|i| seed.wrapping_mul(17).wrapping_add(i * 13 + 1))
            .collect(),
        kik: Some(
            (0..16)
                .map(|i| seed.wrapping_mul(11).wrapping_add(i * 5 + 3))
                .collect(),
        ),
    }
}

fn key_set(version: u8, keys: KeyMaterial, counter: u64) -> KeySetRecord {
    KeySetRecord {
        version,
        kic_algorithm: Some(CipherAlgorithm::TripleDes2KeyCbc),
        kid_algorithm: Some(IntegrityAlgorithm::TripleDes2KeyCbcMac),
        keys,
        counter,
        rotated_at: None,
    }
}

fn card(iccid: &str) -> NewCard {
    let mut attributes = BTreeMap::new();
    attributes.insert("PIN1".to_string(), "1234".to_string());
    NewCard {
        iccid: iccid.to_string(),
        imsi: Some(format!("20801{}", &iccid[iccid.len() - 10..])),
        msisdn: Some(format!("3361{}", &iccid[iccid.len() - 7..])),
        attributes,
        key_sets: vec![key_set(1, keys(1), 0)],
        factory_subscriptions: Vec::new(),
    }
}

fn iccid(n: u64) -> String {
    format!("89330123{n:011}")
}

fn command(account: &str, id: &str, created_at: i64) -> NewCommand {
    NewCommand {
        id: id.to_string(),
        account_id: account.to_string(),
        batch_id: None,
        command_type: CommandType::Rfm,
        iccid: iccid(1),
        transport: "sms".to_string(),
        priority: Priority::Normal,
        request: serde_json::json!({"type": "RFM", "n": id}),
        expires_at: None,
        created_at,
    }
}

fn secured(
    counter: u64,
    msisdn: &str,
    tar: [u8; 3],
    pending: Option<KeyMaterial>,
) -> SecuredPacket {
    SecuredPacket {
        packet: vec![0x02, 0x70, 0x00, 0x00, 0x1e, counter as u8],
        counter,
        key_version: 1,
        msisdn: msisdn.to_string(),
        tar,
        spi: [0x16, 0x39],
        kic: 0x15,
        kid: 0x15,
        pending_keys: pending,
    }
}

fn transition(from: &[CommandStatus], to: CommandStatus, event: &str, at: i64) -> Transition {
    Transition {
        from: from.to_vec(),
        to,
        event: event.to_string(),
        detail: String::new(),
        response: None,
        error: None,
        at,
        new_keys: None,
        events: Vec::new(),
    }
}

fn ok_response() -> CardResponse {
    CardResponse {
        por_status: "00".into(),
        por_status_name: "PoR OK".into(),
        status_code: Some(0x9000),
        data: None,
        executed: Some(1),
        status_words: vec![],
    }
}

async fn account(store: &SqlStore, name: &str) -> String {
    store.create_account(name, 1_000).await.expect("account").id
}

/// Creates `n` commands `c000..` and claims + sends each, so they are SENT and held by `gw`.
async fn sent_commands(store: &SqlStore, acct: &str, n: usize, gw: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("c{i:03}");
        store
            .insert_command(&command(acct, &id, 10 + i as i64))
            .await
            .unwrap();
        ids.push(id);
    }
    let claimed = store
        .claim_commands(gw, n as u32, 100, 10_000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), n);
    for id in &ids {
        assert!(store.record_send(acct, id, gw, 200).await.unwrap());
    }
    ids
}

// ---------------------------------------------------------------------------------------------

async fn accounts_and_tokens(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    assert_eq!(
        store.backend(),
        match b {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    );
    store.ping().await.unwrap();
    let acme = store.create_account("acme", 5).await.unwrap();
    assert_eq!(acme.name, "acme");
    assert_eq!(acme.created_at, 5);
    match store.create_account("acme", 6).await {
        Err(StoreError::Duplicate {
            what: "account",
            key,
        }) => assert_eq!(key, "acme"),
        other => panic!("expected duplicate account, got {other:?}"),
    }
    assert_eq!(
        store.account_by_name("acme").await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(store.account_by_name("nobody").await.unwrap(), None);

    let token = store.create_token(&acme.id, "ci", 7).await.unwrap();
    assert!(token.starts_with("otagw_"), "{token}");
    assert_eq!(token.len(), 6 + 64);
    let second = store.create_token(&acme.id, "ops", 8).await.unwrap();
    assert_ne!(token, second);
    assert_eq!(
        store.account_for_token(&token).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.account_for_token(&second).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(store.account_for_token("otagw_00").await.unwrap(), None);
    let mut wrong = token.clone();
    wrong.pop();
    wrong.push(if token.ends_with('0') { '1' } else { '0' });
    assert_eq!(store.account_for_token(&wrong).await.unwrap(), None);
    assert!(matches!(
        store.create_token("no-such-account", "x", 9).await,
        Err(StoreError::NotFound {
            what: "account",
            ..
        })
    ));

    // Listed by id, label and time, oldest first; never the value.
    let listed = store.tokens(&acme.id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.label.as_str(), t.created_at))
            .collect::<Vec<_>>(),
        vec![("ci", 7), ("ops", 8)]
    );
    assert!(!listed[0].id.is_empty() && listed[0].id != listed[1].id);
    assert!(listed.iter().all(
        |t| !format!("{t:?}").contains(&token[6..]) && !format!("{t:?}").contains(&second[6..])
    ));
    let other = store.create_account("other", 10).await.unwrap();
    assert!(store.tokens(&other.id).await.unwrap().is_empty());
    // Another account cannot revoke it: the same answer as for no such token.
    assert!(matches!(
        store.revoke_token(&other.id, &listed[0].id).await,
        Err(StoreError::NotFound { what: "token", .. })
    ));
    assert!(store.account_for_token(&token).await.unwrap().is_some());
    store.revoke_token(&acme.id, &listed[0].id).await.unwrap();
    assert_eq!(store.account_for_token(&token).await.unwrap(), None);
    assert_eq!(
        store.account_for_token(&second).await.unwrap(),
        Some(acme.clone())
    );
    assert_eq!(
        store.tokens(&acme.id).await.unwrap(),
        vec![listed[1].clone()]
    );
    assert!(matches!(
        store.revoke_token(&acme.id, &listed[0].id).await,
        Err(StoreError::NotFound { what: "token", .. })
    ));
    // A third token, for the raw checks below.
    let token = store.create_token(&acme.id, "ci2", 11).await.unwrap();

    // Only the hash is stored.
    let raw = db.raw().await;
    let hashes: Vec<String> = sqlx::query("SELECT token_hash FROM tokens")
        .fetch_all(&raw)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<String, _>("token_hash"))
        .collect();
    assert_eq!(hashes.len(), 2);
    for h in &hashes {
        assert!(!h.contains(&token[6..]) && !h.contains(&second[6..]));
    }
    use sha2::Digest;
    let expected = hex::encode(sha2::Sha256::digest(token.as_bytes()));
    assert!(hashes.contains(&expected));
    raw.close().await;
    if b == Backend::Sqlite {
        store.close().await;
        let bytes = db.sqlite_bytes();
        assert!(
            find(&bytes, token.as_bytes()).is_none(),
            "token in clear in the file"
        );
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn cards_all_or_none(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;

    let mut first = vec![card(&iccid(1)), card(&iccid(2)), card(&iccid(3))];
    first[1].key_sets.push(KeySetRecord {
        rotated_at: Some(77),
        ..key_set(2, keys(9), 41)
    });
    store.insert_cards(&a, &first, 2_000).await.unwrap();

    let got = store.card(&a, &iccid(2)).await.unwrap().expect("card 2");
    assert_eq!(got.account_id, a);
    assert_eq!(got.imsi, first[1].imsi);
    assert_eq!(got.msisdn, first[1].msisdn);
    assert_eq!(got.attributes, first[1].attributes);
    assert_eq!(got.created_at, 2_000);
    assert_eq!(got.key_versions.len(), 2);
    assert_eq!(got.key_versions[1].version, 2);
    assert_eq!(got.key_versions[1].counter, 41);
    assert_eq!(got.key_versions[1].rotated_at, Some(77));
    // Another account does not see it.
    assert_eq!(store.card(&other, &iccid(2)).await.unwrap(), None);
    assert_eq!(store.card(&a, &iccid(99)).await.unwrap(), None);

    // One ICCID already stored: nothing of the call is written.
    let dup = vec![card(&iccid(10)), card(&iccid(11)), card(&iccid(2))];
    match store.insert_cards(&a, &dup, 3_000).await {
        Err(StoreError::Duplicate { what: "card", key }) => assert_eq!(key, iccid(2)),
        other => panic!("expected duplicate card, got {other:?}"),
    }
    assert_eq!(store.card(&a, &iccid(10)).await.unwrap(), None);
    // Already stored for another account: the same (ICCIDs are global).
    match store
        .insert_cards(&other, &[card(&iccid(12)), card(&iccid(1))], 3_000)
        .await
    {
        Err(StoreError::Duplicate { what: "card", key }) => assert_eq!(key, iccid(1)),
        other => panic!("expected duplicate card, got {other:?}"),
    }
    assert_eq!(store.card(&other, &iccid(12)).await.unwrap(), None);
    // Twice in the input.
    match store
        .insert_cards(
            &a,
            &[card(&iccid(20)), card(&iccid(21)), card(&iccid(20))],
            3_000,
        )
        .await
    {
        Err(StoreError::Duplicate { what: "card", key }) => assert_eq!(key, iccid(20)),
        other => panic!("expected duplicate card, got {other:?}"),
    }
    assert_eq!(store.card(&a, &iccid(20)).await.unwrap(), None);
    // Unknown account.
    assert!(matches!(
        store.insert_cards("nobody", &[card(&iccid(30))], 1).await,
        Err(StoreError::NotFound {
            what: "account",
            ..
        })
    ));

    // Several multi-row chunks; the duplicate is in the last one: nothing written.
    let many: Vec<NewCard> = (1000..2300).map(|n| card(&iccid(n))).collect();
    let mut with_dup = many.clone();
    with_dup.push(card(&iccid(3)));
    match store.insert_cards(&a, &with_dup, 4_000).await {
        Err(StoreError::Duplicate { what: "card", key }) => assert_eq!(key, iccid(3)),
        other => panic!("expected duplicate card, got {other:?}"),
    }
    assert_eq!(store.cards(&a, 100_000).await.unwrap().len(), 3);
    store.insert_cards(&a, &many, 4_000).await.unwrap();
    let all = store.cards(&a, 100_000).await.unwrap();
    assert_eq!(all.len(), 3 + 1300);
    assert!(all.windows(2).all(|w| w[0].iccid < w[1].iccid));
    assert!(all.iter().all(|c| !c.key_versions.is_empty()));
    let limited = store.cards(&a, 2).await.unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[1].key_versions.len(), 2);
    assert!(store.cards(&other, 10).await.unwrap().is_empty());
    let ks = store
        .key_set(&iccid(2299), 1)
        .await
        .unwrap()
        .expect("key set");
    assert_eq!(ks.keys, keys(1));
}

async fn keys_sealed_at_rest(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let mut c1 = card(&iccid(1));
    let k1 = keys(201);
    c1.key_sets = vec![key_set(1, k1.clone(), 5), key_set(3, keys(202), 0)];
    let mut c2 = card(&iccid(2));
    c2.key_sets = vec![key_set(1, keys(203), 0)];
    store.insert_cards(&a, &[c1, c2], 1).await.unwrap();

    let ks = store.key_set(&iccid(1), 1).await.unwrap().expect("key set");
    assert_eq!(ks.keys, k1);
    assert_eq!(ks.version, 1);
    assert_eq!(ks.counter, 5);
    assert_eq!(ks.kic_algorithm, Some(CipherAlgorithm::TripleDes2KeyCbc));
    assert_eq!(
        ks.kid_algorithm,
        Some(IntegrityAlgorithm::TripleDes2KeyCbcMac)
    );
    assert_eq!(store.key_set(&iccid(1), 2).await.unwrap(), None);
    assert_eq!(store.key_set(&iccid(9), 1).await.unwrap(), None);
    // A key set without a KIK, and an empty KIc.
    let mut c3 = card(&iccid(3));
    let bare = KeyMaterial {
        kic: vec![],
        kid: vec![0x42; 16],
        kik: None,
    };
    c3.key_sets = vec![KeySetRecord {
        kic_algorithm: None,
        kid_algorithm: None,
        ..key_set(1, bare.clone(), 0)
    }];
    store.insert_cards(&a, &[c3], 1).await.unwrap();
    let ks3 = store.key_set(&iccid(3), 1).await.unwrap().unwrap();
    assert_eq!(ks3.keys, bare);
    assert_eq!(ks3.kic_algorithm, None);

    // Pending keys of a KEY_UPDATE and a webhook secret: sealed too.
    let pending = keys(204);
    store.insert_command(&command(&a, "ku", 1)).await.unwrap();
    store.claim_commands("gw", 1, 2, 1_000).await.unwrap();
    assert!(store
        .record_secured(
            &a,
            "ku",
            "gw",
            &secured(6, "33612345678", [1, 2, 3], Some(pending.clone())),
            3
        )
        .await
        .unwrap());
    let secret = b"webhook-secret-0123456789-abcdef".to_vec();
    store
        .add_webhook(&Webhook {
            id: "w1".into(),
            account_id: a.clone(),
            url: "https://example.invalid/hook".into(),
            secret: secret.clone(),
            events: Vec::new(),
        })
        .await
        .unwrap();
    let got = store.command_by_id(&a, "ku").await.unwrap().unwrap();
    assert_eq!(got.secured.unwrap().pending_keys, Some(pending.clone()));

    // replace_keys keeps the counter and sets rotated_at.
    let new_keys = keys(205);
    store
        .replace_keys(&iccid(1), 1, &new_keys, 9_999)
        .await
        .unwrap();
    let ks = store.key_set(&iccid(1), 1).await.unwrap().unwrap();
    assert_eq!(ks.keys, new_keys);
    assert_eq!(ks.counter, 5);
    assert_eq!(ks.rotated_at, Some(9_999));
    assert!(matches!(
        store.replace_keys(&iccid(1), 9, &new_keys, 1).await,
        Err(StoreError::NotFound { .. })
    ));

    // None of the values is in clear in the database.
    let secrets: Vec<Vec<u8>> = vec![
        k1.kic.clone(),
        k1.kid.clone(),
        k1.kik.clone().unwrap(),
        keys(202).kic,
        keys(203).kid,
        pending.kic.clone(),
        pending.kid.clone(),
        pending.kik.clone().unwrap(),
        new_keys.kic.clone(),
        new_keys.kik.clone().unwrap(),
        vec![0x42; 16],
        secret.clone(),
    ];
    let raw = db.raw().await;
    let mut stored: Vec<Vec<u8>> = Vec::new();
    for (table, column) in [
        ("key_sets", "kic"),
        ("key_sets", "kid"),
        ("key_sets", "kik"),
        ("commands", "pending_kic"),
        ("commands", "pending_kid"),
        ("commands", "pending_kik"),
        ("webhooks", "secret"),
    ] {
        for row in sqlx::query(&format!("SELECT {column} AS v FROM {table}"))
            .fetch_all(&raw)
            .await
            .unwrap()
        {
            if let Some(v) = row.get::<Option<Vec<u8>>, _>("v") {
                stored.push(v);
            }
        }
    }
    assert!(stored.len() >= 12, "{}", stored.len());
    for s in &secrets {
        for v in &stored {
            assert!(find(v, s).is_none(), "a key value is stored in clear");
            assert!(find(v, hex::encode(s).as_bytes()).is_none());
        }
    }
    // A sealed value moved to another row does not open there.
    let moved: Vec<u8> = sqlx::query("SELECT kic FROM key_sets WHERE iccid = $1 AND version = 1")
        .bind(iccid(1))
        .fetch_one(&raw)
        .await
        .unwrap()
        .get("kic");
    sqlx::query("UPDATE key_sets SET kic = $1 WHERE iccid = $2 AND version = 1")
        .bind(moved)
        .bind(iccid(2))
        .execute(&raw)
        .await
        .unwrap();
    assert!(matches!(
        store.key_set(&iccid(2), 1).await,
        Err(StoreError::Sealing(SealingError::Open { .. }))
    ));
    raw.close().await;

    if b == Backend::Sqlite {
        store.close().await;
        let bytes = db.sqlite_bytes();
        for s in &secrets {
            assert!(
                find(&bytes, s).is_none(),
                "a key value is in the SQLite file"
            );
            assert!(find(&bytes, hex::encode(s).as_bytes()).is_none());
            assert!(find(&bytes, hex::encode_upper(s).as_bytes()).is_none());
        }
    }

    // Another master key is refused when the store opens, before any key value is read.
    let err = match SqlStore::connect(&db.url, MasterKey::generate()).await {
        Err(e) => e,
        Ok(_) => panic!("a store opened with another master key"),
    };
    assert!(matches!(err, StoreError::WrongMasterKey(_)), "{err}");
    assert!(err.to_string().contains("master key"), "{err}");
    // The right one still opens everything.
    let right = db.open().await;
    assert!(right.card(&a, &iccid(1)).await.unwrap().is_some());
    assert!(right.key_set(&iccid(1), 1).await.unwrap().is_some());
}

/// The master key's check value: a database made with one key refuses another at open, with
/// or without key sets in it; a database from before check values (none stored) is checked
/// against a sealed key set, then gets its check value.
async fn master_key_checked_at_open(b: Backend) {
    let db = TestDb::new(b).await;
    // Empty database: the check value alone tells.
    drop(db.open().await);
    let other = MasterKey::from_bytes([9; 32]);
    assert!(matches!(
        SqlStore::connect(&db.url, other.clone()).await,
        Err(StoreError::WrongMasterKey(_))
    ));
    let store = db.open().await;
    let a = account(&store, "a").await;
    store.insert_cards(&a, &[card(&iccid(1))], 1).await.unwrap();
    store.close().await;
    drop(store);
    // As if made before check values: no row; the key set tells.
    let raw = db.raw().await;
    sqlx::query("DELETE FROM store_meta")
        .execute(&raw)
        .await
        .unwrap();
    let err = match SqlStore::connect(&db.url, other.clone()).await {
        Err(e) => e,
        Ok(_) => panic!("opened with another key"),
    };
    assert!(err.to_string().contains(&iccid(1)), "{err}");
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM store_meta")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(rows, 0, "a refused key writes no check value");
    // The right key opens it and records the check value.
    let store = db.open().await;
    assert_eq!(
        store.key_set(&iccid(1), 1).await.unwrap().unwrap().keys,
        keys(1)
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM store_meta")
        .fetch_one(&raw)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    raw.close().await;
}

async fn counters(b: Backend) {
    let db = TestDb::new(b).await;
    let store = Arc::new(db.open().await);
    let a = account(&store, "a").await;
    let mut c = card(&iccid(1));
    c.key_sets = vec![key_set(1, keys(1), 10), key_set(2, keys(2), 0)];
    store.insert_cards(&a, &[c], 1).await.unwrap();
    assert_eq!(store.reserve_counter(&iccid(1), 1).await.unwrap(), 11);
    assert_eq!(store.reserve_counter(&iccid(1), 1).await.unwrap(), 12);
    assert_eq!(store.reserve_counter(&iccid(1), 2).await.unwrap(), 1);
    assert!(matches!(
        store.reserve_counter(&iccid(1), 3).await,
        Err(StoreError::NotFound {
            what: "key set",
            ..
        })
    ));
    assert!(matches!(
        store.reserve_counter(&iccid(5), 1).await,
        Err(StoreError::NotFound { .. })
    ));

    // Many tasks on two stores at once: every value once.
    let second = Arc::new(db.open().await);
    let mut tasks = Vec::new();
    for t in 0..24 {
        let s = if t % 2 == 0 {
            store.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..5 {
                got.push(s.reserve_counter(&iccid(1), 1).await.expect("reserve"));
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        all.len(),
        "a counter value was handed out twice"
    );
    assert_eq!(distinct, (13..13 + 120).collect::<HashSet<u64>>());
    let ks = store.key_set(&iccid(1), 1).await.unwrap().unwrap();
    assert_eq!(ks.counter, 132);
    let card = store.card(&a, &iccid(1)).await.unwrap().unwrap();
    assert_eq!(card.key_versions[0].counter, 132);
}

async fn commands_basic(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    let mut c = command(&a, "cmd-1", 100);
    c.priority = Priority::Urgent;
    c.expires_at = Some(99_999);
    store.insert_command(&c).await.unwrap();
    match store.insert_command(&c).await {
        Err(StoreError::Duplicate {
            what: "command",
            key,
        }) => assert_eq!(key, "cmd-1"),
        other => panic!("expected duplicate command, got {other:?}"),
    }
    // Same id in another account is another command.
    store
        .insert_command(&command(&other, "cmd-1", 100))
        .await
        .unwrap();
    assert!(matches!(
        store.insert_command(&command("nobody", "x", 1)).await,
        Err(StoreError::NotFound {
            what: "account",
            ..
        })
    ));

    let (rec, events) = store.command(&a, "cmd-1").await.unwrap().expect("command");
    assert_eq!(rec.id, "cmd-1");
    assert_eq!(rec.account_id, a);
    assert_eq!(rec.status, CommandStatus::Pending);
    assert_eq!(rec.priority, Priority::Urgent);
    assert_eq!(rec.command_type, CommandType::Rfm);
    assert_eq!(rec.request, c.request);
    assert_eq!(rec.created_at, 100);
    assert_eq!(rec.updated_at, 100);
    assert_eq!(rec.expires_at, Some(99_999));
    assert_eq!(rec.attempts, 0);
    assert_eq!(rec.secured, None);
    assert_eq!(rec.owner, None);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "CREATED");
    assert_eq!(events[0].at, 100);
    assert_eq!(store.command_by_id(&a, "nope").await.unwrap(), None);
    assert!(store.command(&a, "nope").await.unwrap().is_none());

    store
        .add_event(&a, "cmd-1", "ACCEPTED", "by the SMSC", 150)
        .await
        .unwrap();
    assert!(store.add_event(&a, "nope", "X", "", 1).await.is_err());
    let (_, events) = store.command(&a, "cmd-1").await.unwrap().unwrap();
    assert_eq!(events.last().unwrap().kind, "ACCEPTED");
    assert_eq!(events.last().unwrap().detail, "by the SMSC");

    // Content the store cannot read is an error naming the column, not a panic.
    let raw = db.raw().await;
    sqlx::query("UPDATE commands SET status = 'BOGUS' WHERE account_id = $1 AND id = 'cmd-1'")
        .bind(&a)
        .execute(&raw)
        .await
        .unwrap();
    match store.command_by_id(&a, "cmd-1").await {
        Err(StoreError::Database(m)) => assert!(m.contains("status"), "{m}"),
        other => panic!("expected a database error, got {other:?}"),
    }
    sqlx::query("UPDATE commands SET status = 'PENDING', request = '{oops' WHERE id = 'cmd-1'")
        .execute(&raw)
        .await
        .unwrap();
    match store.command_by_id(&a, "cmd-1").await {
        Err(StoreError::Database(m)) => assert!(m.contains("request"), "{m}"),
        other => panic!("expected a database error, got {other:?}"),
    }
    // A failing statement keeps the driver's error as its source.
    sqlx::query("ALTER TABLE commands RENAME TO commands_gone")
        .execute(&raw)
        .await
        .unwrap();
    let err = store.command_by_id(&a, "cmd-1").await.unwrap_err();
    assert!(matches!(err, StoreError::Sql { .. }), "{err:?}");
    let source = std::error::Error::source(&err).expect("a source");
    assert!(source.downcast_ref::<sqlx::Error>().is_some(), "{source:?}");
    raw.close().await;
}

async fn secure_send_transition(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    store.insert_command(&command(&a, "c1", 100)).await.unwrap();
    let packet = secured(42, "33612345678", [0xb0, 0x00, 0x10], Some(keys(7)));

    // Not held by anyone yet.
    assert!(!store
        .record_secured(&a, "c1", "gw1", &packet, 110)
        .await
        .unwrap());
    assert!(!store.record_send(&a, "c1", "gw1", 110).await.unwrap());
    let claimed = store.claim_commands("gw1", 10, 120, 5_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].owner.as_deref(), Some("gw1"));
    assert_eq!(claimed[0].lease_until, Some(5_000));
    // Held by another.
    assert!(!store
        .record_secured(&a, "c1", "gw2", &packet, 130)
        .await
        .unwrap());
    assert!(store
        .record_secured(&a, "c1", "gw1", &packet, 130)
        .await
        .unwrap());
    let rec = store.command_by_id(&a, "c1").await.unwrap().unwrap();
    assert_eq!(rec.secured.as_ref(), Some(&packet));
    assert_eq!(rec.status, CommandStatus::Pending);

    assert!(!store.record_send(&a, "c1", "gw2", 140).await.unwrap());
    assert!(store.record_send(&a, "c1", "gw1", 140).await.unwrap());
    let rec = store.command_by_id(&a, "c1").await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Sent);
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.sent_at, Some(140));
    // A resend counts, keeps SENT and the first sent_at.
    assert!(store.record_send(&a, "c1", "gw1", 150).await.unwrap());
    let rec = store.command_by_id(&a, "c1").await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.attempts, rec.sent_at),
        (CommandStatus::Sent, 2, Some(140))
    );
    assert_eq!(rec.updated_at, 150);
    // No longer PENDING: no new packet.
    assert!(!store
        .record_secured(&a, "c1", "gw1", &packet, 160)
        .await
        .unwrap());

    // Conditional transitions.
    let t = transition(
        &[CommandStatus::Pending],
        CommandStatus::Failed,
        "FAILED",
        170,
    );
    assert!(!store.transition(&a, "c1", &t).await.unwrap());
    assert!(!store
        .transition(&a, "c1", &transition(&[], CommandStatus::Failed, "X", 1))
        .await
        .unwrap());
    let mut t = transition(
        &[CommandStatus::Sent],
        CommandStatus::Delivered,
        "DELIVERED",
        180,
    );
    t.detail = "network ref 17".into();
    assert!(store.transition(&a, "c1", &t).await.unwrap());
    let rec = store.command_by_id(&a, "c1").await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Delivered);
    assert_eq!(rec.delivered_at, Some(180));
    assert_eq!(rec.owner.as_deref(), Some("gw1"));
    assert_eq!(rec.completed_at, None);
    // A resend from DELIVERED is still allowed and keeps the status.
    assert!(store.record_send(&a, "c1", "gw1", 185).await.unwrap());
    assert_eq!(
        store.command_by_id(&a, "c1").await.unwrap().unwrap().status,
        CommandStatus::Delivered
    );
    let mut t = transition(
        &[CommandStatus::Sent, CommandStatus::Delivered],
        CommandStatus::Success,
        "SUCCESS",
        190,
    );
    t.response = Some(ok_response());
    assert!(store.transition(&a, "c1", &t).await.unwrap());
    let (rec, events) = store.command(&a, "c1").await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Success);
    assert_eq!(rec.completed_at, Some(190));
    assert_eq!(rec.response, Some(ok_response()));
    assert_eq!(rec.owner, None);
    assert_eq!(rec.lease_until, None);
    assert_eq!(rec.attempts, 3);
    // Terminal: nothing more.
    assert!(!store.record_send(&a, "c1", "gw1", 200).await.unwrap());
    assert!(!store.transition(&a, "c1", &t).await.unwrap());
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("CREATED", ""),
            ("SECURED", "counter 42 with key version 1"),
            ("SENT", "attempt 1"),
            ("SENT", "attempt 2"),
            ("DELIVERED", "network ref 17"),
            ("SENT", "attempt 3"),
            ("SUCCESS", ""),
        ]
    );
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at));

    // A failure stores the error.
    store.insert_command(&command(&a, "c2", 300)).await.unwrap();
    store.claim_commands("gw1", 10, 300, 5_000).await.unwrap();
    let mut t = transition(
        &[CommandStatus::Pending],
        CommandStatus::Failed,
        "FAILED",
        310,
    );
    t.error = Some(CommandError {
        code: ErrorCode::TransportError,
        message: "SMSC refused".into(),
    });
    assert!(store.transition(&a, "c2", &t).await.unwrap());
    let rec = store.command_by_id(&a, "c2").await.unwrap().unwrap();
    assert_eq!(rec.error, t.error);
    assert_eq!(rec.status, CommandStatus::Failed);
    assert_eq!(rec.sent_at, None);
}

/// A CAT_TP command that never reached its card goes back to PENDING on SMS, its packet
/// forgotten (to be secured anew), once, and only for the gateway holding it.
async fn reroute_for_fallback(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let mut c = command(&a, "c1", 100);
    c.transport = "catp".into();
    store.insert_command(&c).await.unwrap();
    // PENDING (not sent yet): nothing to fall back from.
    assert_eq!(
        store
            .claim_commands("gw1", 10, 110, 5_000)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(!store
        .reroute_for_fallback(&a, "c1", "gw1", "catp", "sms", "no link", 115)
        .await
        .unwrap());
    let packet = secured(42, "33612345678", [0xb0, 0x00, 0x10], None);
    assert!(store
        .record_secured(&a, "c1", "gw1", &packet, 120)
        .await
        .unwrap());
    assert!(store.record_send(&a, "c1", "gw1", 130).await.unwrap());
    // Another gateway, or another transport: no.
    assert!(!store
        .reroute_for_fallback(&a, "c1", "gw2", "catp", "sms", "no link", 140)
        .await
        .unwrap());
    assert!(!store
        .reroute_for_fallback(&a, "c1", "gw1", "https", "sms", "no link", 140)
        .await
        .unwrap());
    assert!(store
        .reroute_for_fallback(&a, "c1", "gw1", "catp", "sms", "no link", 150)
        .await
        .unwrap());
    let rec = store.command_by_id(&a, "c1").await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Pending);
    assert_eq!(rec.transport, "sms");
    assert_eq!(rec.secured, None);
    assert_eq!(rec.attempts, 1);
    assert_eq!(rec.owner.as_deref(), Some("gw1"));
    let (_, events) = store.command(&a, "c1").await.unwrap().unwrap();
    assert!(events
        .iter()
        .any(|e| e.kind == "FALLBACK" && e.detail == "no link"));
    // Once: it is on SMS now.
    assert!(!store
        .reroute_for_fallback(&a, "c1", "gw1", "catp", "sms", "no link", 160)
        .await
        .unwrap());
    // The pipeline secures it anew for SMS.
    let again = secured(43, "33612345678", [0xb0, 0x00, 0x10], None);
    assert!(store
        .record_secured(&a, "c1", "gw1", &again, 170)
        .await
        .unwrap());
    let rec = store.command_by_id(&a, "c1").await.unwrap().unwrap();
    assert_eq!(rec.secured.map(|s| s.counter), Some(43));
}

async fn cancel(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    store.insert_command(&command(&a, "p", 1)).await.unwrap();
    assert_eq!(
        store.cancel_command(&a, "p", 50).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let (rec, events) = store.command(&a, "p").await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Cancelled);
    assert_eq!(rec.completed_at, Some(50));
    assert_eq!(events.last().unwrap().kind, "CANCELLED");
    assert_eq!(
        store.cancel_command(&a, "p", 60).await.unwrap(),
        CancelOutcome::NotCancellable(CommandStatus::Cancelled)
    );
    // Cancelled commands are not claimed.
    assert!(store
        .claim_commands("gw", 10, 70, 1_000)
        .await
        .unwrap()
        .is_empty());

    sent_commands(&store, &a, 1, "gw").await;
    assert_eq!(
        store.cancel_command(&a, "c000", 300).await.unwrap(),
        CancelOutcome::NotCancellable(CommandStatus::Sent)
    );
    assert!(matches!(
        store.cancel_command(&a, "missing", 1).await,
        Err(StoreError::NotFound {
            what: "command",
            ..
        })
    ));
    assert!(matches!(
        store.cancel_command(&other, "p", 1).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// One query tells which of the commands a gateway waits on have ended (the pipeline's
/// ended-elsewhere sweep): only those, with their status, not another account's, across the
/// 500-per-statement chunks.
async fn ended_among_finds_the_commands_that_ended(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    sent_commands(&store, &a, 3, "gw").await;
    store.insert_command(&command(&a, "p", 1)).await.unwrap();
    assert!(store
        .transition(
            &a,
            "c000",
            &transition(
                &[CommandStatus::Sent],
                CommandStatus::Success,
                "SUCCESS",
                300
            )
        )
        .await
        .unwrap());
    assert_eq!(
        store.cancel_command(&a, "p", 310).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let mut keys: Vec<(String, String)> = (0..1_200)
        .map(|i| (a.clone(), format!("unknown-{i}")))
        .collect();
    keys.insert(700, (a.clone(), "p".into()));
    for id in ["c000", "c001", "c002"] {
        keys.push((a.clone(), id.into()));
    }
    keys.push((other.clone(), "c000".into()));
    let mut ended = store.ended_among(&keys).await.unwrap();
    ended.sort_by(|x, y| (&x.0, &x.1).cmp(&(&y.0, &y.1)));
    assert_eq!(
        ended,
        vec![
            (a.clone(), "c000".to_string(), CommandStatus::Success),
            (a.clone(), "p".to_string(), CommandStatus::Cancelled),
        ]
    );
    assert!(store.ended_among(&[]).await.unwrap().is_empty());
}

async fn concurrent_terminal_transitions(b: Backend) {
    let db = TestDb::new(b).await;
    let s1 = Arc::new(db.open().await);
    let s2 = Arc::new(db.open().await);
    let a = account(&s1, "a").await;
    let ids = sent_commands(&s1, &a, 12, "gw").await;
    let mut tasks = Vec::new();
    for id in &ids {
        for (n, to) in [(0, CommandStatus::Success), (1, CommandStatus::Failed)] {
            let s = if n == 0 { s1.clone() } else { s2.clone() };
            let (a, id) = (a.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let t = transition(
                    &[CommandStatus::Sent, CommandStatus::Delivered],
                    to,
                    to.as_str(),
                    500,
                );
                (
                    id.clone(),
                    s.transition(&a, &id, &t).await.expect("transition"),
                )
            }));
        }
    }
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        let (id, ok) = t.await.unwrap();
        *applied.entry(id).or_default() += usize::from(ok);
    }
    for id in &ids {
        assert_eq!(
            applied[id], 1,
            "{id}: exactly one terminal transition applies"
        );
        let (rec, events) = s1.command(&a, id).await.unwrap().unwrap();
        assert!(rec.status.is_terminal());
        let terminal = events
            .iter()
            .filter(|e| e.kind == "SUCCESS" || e.kind == "FAILED")
            .count();
        assert_eq!(terminal, 1);
        assert_eq!(events.last().unwrap().kind, rec.status.as_str());
    }
}

async fn concurrent_claims(b: Backend) {
    let db = TestDb::new(b).await;
    let s1 = Arc::new(db.open().await);
    let s2 = Arc::new(db.open().await);
    let a = account(&s1, "a").await;
    let total = 80;
    for i in 0..total {
        // One card each: a card is held by one gateway at a time (see one_gateway_per_card).
        let mut c = command(&a, &format!("q{i:03}"), i);
        c.iccid = iccid(1000 + i as u64);
        s1.insert_command(&c).await.unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..8 {
        let s = if t % 2 == 0 { s1.clone() } else { s2.clone() };
        tasks.push(tokio::spawn(async move {
            let owner = format!("gw{t}");
            let mut got = Vec::new();
            loop {
                let claimed = s
                    .claim_commands(&owner, 3, 1_000, 60_000)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    break;
                }
                for c in claimed {
                    assert_eq!(c.owner.as_deref(), Some(owner.as_str()));
                    got.push(c.id);
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "a command was claimed twice");
    assert_eq!(all.len(), total as usize);
}

async fn leases_and_order(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let mut bulk = command(&a, "bulk", 10);
    bulk.priority = Priority::Bulk;
    let mut urgent = command(&a, "urgent", 30);
    urgent.priority = Priority::Urgent;
    store.insert_command(&bulk).await.unwrap();
    store
        .insert_command(&command(&a, "normal-old", 5))
        .await
        .unwrap();
    store.insert_command(&urgent).await.unwrap();
    store
        .insert_command(&command(&a, "normal-new", 20))
        .await
        .unwrap();

    let got = store.claim_commands("gw1", 2, 100, 1_000).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["urgent", "normal-old"]);
    let got = store.claim_commands("gw1", 10, 100, 1_000).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["normal-new", "bulk"]);
    assert!(store
        .claim_commands("gw1", 10, 100, 1_000)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .claim_commands("gw1", 0, 100, 1_000)
        .await
        .unwrap()
        .is_empty());

    // Send one; the lease runs out: another gateway takes both kinds over.
    assert!(store.record_send(&a, "urgent", "gw1", 150).await.unwrap());
    assert!(store
        .claim_commands("gw2", 10, 999, 5_000)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.renew_leases("gw1", 2_000).await.unwrap(), 4);
    assert!(store
        .claim_commands("gw2", 10, 1_500, 5_000)
        .await
        .unwrap()
        .is_empty());
    let got = store.claim_commands("gw2", 10, 2_001, 5_000).await.unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].id, "urgent");
    assert_eq!(got[0].status, CommandStatus::Sent);
    assert!(got.iter().all(|c| c.owner.as_deref() == Some("gw2")));
    // The old holder may not send any more.
    assert!(!store.record_send(&a, "urgent", "gw1", 2_002).await.unwrap());
    assert!(store.record_send(&a, "urgent", "gw2", 2_002).await.unwrap());
    assert_eq!(store.renew_leases("gw1", 9_000).await.unwrap(), 0);

    // Released: the next claim gets it whatever the lease said. (By gw2: it still holds the
    // card's other commands, and a card stays with one gateway.)
    store.release("bulk", "gw2").await.unwrap();
    store.release("normal-new", "gw-other").await.unwrap(); // not its holder: no effect
    assert!(store
        .claim_commands("gw3", 10, 2_100, 5_000)
        .await
        .unwrap()
        .is_empty());
    let got = store.claim_commands("gw2", 10, 2_100, 5_000).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["bulk"]);
    store.release("urgent", "gw2").await.unwrap();
    let got = store.claim_commands("gw2", 10, 2_100, 5_000).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, CommandStatus::Sent);

    // Terminal commands are never claimed.
    let t = transition(
        &[CommandStatus::Sent],
        CommandStatus::Success,
        "SUCCESS",
        2_200,
    );
    assert!(store.transition(&a, "urgent", &t).await.unwrap());
    assert!(store
        .claim_commands("gw4", 10, 1_000_000, 2_000_000)
        .await
        .unwrap()
        .iter()
        .all(|c| c.id != "urgent"));
}

async fn awaiting_por(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let tar = [0xb0, 0x00, 0x10];
    for (i, id) in ["x1", "x2", "x3"].iter().enumerate() {
        store
            .insert_command(&command(&a, id, i as i64))
            .await
            .unwrap();
    }
    store.claim_commands("gw", 10, 10, 10_000).await.unwrap();
    for (id, msisdn, t) in [
        ("x1", "33611111111", tar),
        ("x2", "33611111111", tar),
        ("x3", "33611111111", [0xb0, 0x00, 0x11]),
    ] {
        assert!(store
            .record_secured(&a, id, "gw", &secured(1, msisdn, t, None), 20)
            .await
            .unwrap());
    }
    // x2 only secured (PENDING): not waiting for a PoR.
    assert!(store.record_send(&a, "x1", "gw", 30).await.unwrap());
    assert!(store.record_send(&a, "x3", "gw", 30).await.unwrap());
    let found = store.awaiting_por("33611111111", tar).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["x1"]);
    assert_eq!(found[0].secured.as_ref().unwrap().tar, tar);
    // Released or held by another gateway: still found.
    store.release("x1", "gw").await.unwrap();
    let t = transition(
        &[CommandStatus::Sent],
        CommandStatus::Delivered,
        "DELIVERED",
        40,
    );
    assert!(store.transition(&a, "x1", &t).await.unwrap());
    assert_eq!(
        store.awaiting_por("33611111111", tar).await.unwrap().len(),
        1
    );
    assert!(store
        .awaiting_por("33622222222", tar)
        .await
        .unwrap()
        .is_empty());
    let t = transition(
        &[CommandStatus::Delivered],
        CommandStatus::Success,
        "SUCCESS",
        50,
    );
    assert!(store.transition(&a, "x1", &t).await.unwrap());
    assert!(store
        .awaiting_por("33611111111", tar)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .awaiting_por("33611111111", [0xb0, 0x00, 0x11])
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn expiry(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    let with_expiry = |acct: &str, id: &str, exp: Option<i64>| {
        let mut c = command(acct, id, 1);
        c.expires_at = exp;
        c
    };
    store
        .insert_command(&with_expiry(&a, "secured", Some(100)))
        .await
        .unwrap();
    store.claim_commands("gw", 10, 50, 10_000).await.unwrap();
    assert!(store
        .record_secured(&a, "secured", "gw", &secured(1, "336", [1, 1, 1], None), 60)
        .await
        .unwrap());
    store
        .insert_command(&with_expiry(&a, "old", Some(100)))
        .await
        .unwrap();
    store
        .insert_command(&with_expiry(&other, "old", Some(200)))
        .await
        .unwrap();
    store
        .insert_command(&with_expiry(&a, "forever", None))
        .await
        .unwrap();
    store
        .insert_command(&with_expiry(&a, "later", Some(1_000)))
        .await
        .unwrap();

    // Past their validity, unsecured: not claimed.
    // (The same gateway: "secured" keeps card 1 with "gw".)
    let claimed = store.claim_commands("gw", 10, 500, 10_000).await.unwrap();
    let ids: HashSet<(String, String)> = claimed
        .iter()
        .map(|c| (c.account_id.clone(), c.id.clone()))
        .collect();
    assert!(!ids.contains(&(a.clone(), "old".to_string())));
    assert!(!ids.contains(&(other.clone(), "old".to_string())));
    assert!(ids.contains(&(a.clone(), "forever".to_string())));

    let mut expired = store.expire_commands(500).await.unwrap();
    expired.sort();
    let mut expected = vec![
        (a.clone(), "old".to_string()),
        (other.clone(), "old".to_string()),
    ];
    expected.sort();
    assert_eq!(expired, expected);
    let (rec, events) = store.command(&a, "old").await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Expired);
    assert_eq!(rec.completed_at, Some(500));
    assert_eq!(events.last().unwrap().kind, "EXPIRED");
    assert_eq!(
        store
            .command_by_id(&a, "secured")
            .await
            .unwrap()
            .unwrap()
            .status,
        CommandStatus::Pending
    );
    assert_eq!(
        store
            .command_by_id(&a, "later")
            .await
            .unwrap()
            .unwrap()
            .status,
        CommandStatus::Pending
    );
    assert!(store.expire_commands(500).await.unwrap().is_empty());
    assert_eq!(
        store.expire_commands(1_001).await.unwrap(),
        vec![(a.clone(), "later".to_string())]
    );
}

async fn batches(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let ids = ["b-3", "b-1", "b-2"];
    let commands: Vec<NewCommand> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = command(&a, id, 100 + i as i64);
            c.priority = Priority::Bulk;
            c
        })
        .collect();
    let batch = BatchRecord {
        id: "batch-1".into(),
        account_id: a.clone(),
        options: serde_json::json!({"rate": 10, "name": "campaign"}),
        created_at: 100,
        command_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    store.insert_batch(&batch, &commands).await.unwrap();
    assert_eq!(
        store.batch(&a, "batch-1").await.unwrap(),
        Some(batch.clone())
    );
    assert_eq!(store.batch(&a, "nope").await.unwrap(), None);
    let other = account(&store, "b").await;
    assert_eq!(store.batch(&other, "batch-1").await.unwrap(), None);
    let got = store.batch_commands(&a, "batch-1").await.unwrap();
    let got_ids: Vec<&str> = got.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(got_ids, ids.to_vec());
    assert!(got.iter().all(|c| c.batch_id.as_deref() == Some("batch-1")));
    assert!(got.iter().all(|c| c.status == CommandStatus::Pending));
    let (_, events) = store.command(&a, "b-1").await.unwrap().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "CREATED");
    assert!(store.batch_commands(&a, "nope").await.unwrap().is_empty());

    // Duplicate batch id.
    let mut again = batch.clone();
    again.command_ids = vec!["new-1".into()];
    match store.insert_batch(&again, &[command(&a, "new-1", 1)]).await {
        Err(StoreError::Duplicate { what: "batch", key }) => assert_eq!(key, "batch-1"),
        other => panic!("expected duplicate batch, got {other:?}"),
    }
    assert_eq!(store.command_by_id(&a, "new-1").await.unwrap(), None);
    // A command id already stored: nothing written.
    let b2 = BatchRecord {
        id: "batch-2".into(),
        command_ids: vec!["new-2".into(), "b-2".into()],
        ..batch.clone()
    };
    match store
        .insert_batch(&b2, &[command(&a, "new-2", 1), command(&a, "b-2", 1)])
        .await
    {
        Err(StoreError::Duplicate {
            what: "command",
            key,
        }) => assert_eq!(key, "b-2"),
        other => panic!("expected duplicate command, got {other:?}"),
    }
    assert_eq!(store.batch(&a, "batch-2").await.unwrap(), None);
    assert_eq!(store.command_by_id(&a, "new-2").await.unwrap(), None);
    // Twice in the input.
    let b3 = BatchRecord {
        id: "batch-3".into(),
        command_ids: vec!["z".into(), "z".into()],
        ..batch.clone()
    };
    assert!(matches!(
        store
            .insert_batch(&b3, &[command(&a, "z", 1), command(&a, "z", 1)])
            .await,
        Err(StoreError::Duplicate {
            what: "command",
            ..
        })
    ));
    assert_eq!(store.batch(&a, "batch-3").await.unwrap(), None);

    // A large batch (several multi-row statements).
    let big: Vec<NewCommand> = (0..450)
        .map(|i| command(&a, &format!("big-{i:04}"), 1_000 + i))
        .collect();
    let big_batch = BatchRecord {
        id: "big".into(),
        account_id: a.clone(),
        options: serde_json::json!({}),
        created_at: 1_000,
        command_ids: big.iter().map(|c| c.id.clone()).collect(),
    };
    store.insert_batch(&big_batch, &big).await.unwrap();
    assert_eq!(store.batch_commands(&a, "big").await.unwrap().len(), 450);
}

async fn webhooks_and_applets(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    let w1 = Webhook {
        id: "w1".into(),
        account_id: a.clone(),
        url: "https://hooks.example.invalid/1".into(),
        secret: vec![1, 2, 3, 4],
        events: Vec::new(),
    };
    let w2 = Webhook {
        id: "w2".into(),
        secret: b"another secret".to_vec(),
        url: "https://hooks.example.invalid/2".into(),
        events: vec!["command.completed".into(), "campaign.progress".into()],
        ..w1.clone()
    };
    store.add_webhook(&w1).await.unwrap();
    store.add_webhook(&w2).await.unwrap();
    assert!(matches!(
        store.add_webhook(&w1).await,
        Err(StoreError::Duplicate {
            what: "webhook",
            ..
        })
    ));
    assert_eq!(
        store.webhooks(&a).await.unwrap(),
        vec![w1.clone(), w2.clone()]
    );
    assert!(store.webhooks(&other).await.unwrap().is_empty());
    // Deleting: only this account's, and only once.
    assert!(matches!(
        store.delete_webhook(&other, "w1").await,
        Err(StoreError::NotFound {
            what: "webhook",
            ..
        })
    ));
    assert_eq!(store.webhooks(&a).await.unwrap().len(), 2);
    store.delete_webhook(&a, "w1").await.unwrap();
    assert_eq!(store.webhooks(&a).await.unwrap(), vec![w2.clone()]);
    assert!(matches!(
        store.delete_webhook(&a, "w1").await,
        Err(StoreError::NotFound {
            what: "webhook",
            ..
        })
    ));

    let applet = AppletRecord {
        id: "app-1".into(),
        account_id: a.clone(),
        name: "hello.cap".into(),
        content: (0..=255u8).cycle().take(70_000).collect(),
        created_at: 42,
    };
    store.insert_applet(&applet).await.unwrap();
    assert!(matches!(
        store.insert_applet(&applet).await,
        Err(StoreError::Duplicate { what: "applet", .. })
    ));
    assert_eq!(
        store.applet(&a, "app-1").await.unwrap(),
        Some(applet.clone())
    );
    assert_eq!(store.applet(&other, "app-1").await.unwrap(), None);
    assert_eq!(store.applet(&a, "app-2").await.unwrap(), None);
}

async fn stats(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    let empty = store.command_stats(&a).await.unwrap();
    assert!(empty.by_status.is_empty());
    assert_eq!(empty.mean_completion_ms, None);
    assert_eq!(empty.mean_delivery_ms, None);

    // s1, s2: SUCCESS over sms; f1: FAILED TIMEOUT over sms; f2: FAILED SECURITY_ERROR over
    // cat_tp; p: PENDING over cat_tp. Another account's command does not count.
    for (id, transport) in [
        ("s1", "sms"),
        ("s2", "sms"),
        ("f1", "sms"),
        ("f2", "cat_tp"),
        ("p", "cat_tp"),
    ] {
        let mut c = command(&a, id, 1);
        c.transport = transport.into();
        store.insert_command(&c).await.unwrap();
    }
    store
        .insert_command(&command(&other, "s1", 1))
        .await
        .unwrap();
    let claimed = store.claim_commands("gw", 10, 50, 10_000).await.unwrap();
    assert_eq!(claimed.len(), 6);
    for id in ["s1", "s2", "f1", "f2"] {
        assert!(store.record_send(&a, id, "gw", 100).await.unwrap());
    }
    assert!(store.record_send(&other, "s1", "gw", 100).await.unwrap());
    let delivered = transition(
        &[CommandStatus::Sent],
        CommandStatus::Delivered,
        "DELIVERED",
        150,
    );
    assert!(store.transition(&a, "s1", &delivered).await.unwrap());
    let mut delivered_late = delivered.clone();
    delivered_late.at = 250;
    assert!(store.transition(&a, "f1", &delivered_late).await.unwrap());
    let live = [CommandStatus::Sent, CommandStatus::Delivered];
    assert!(store
        .transition(
            &a,
            "s1",
            &transition(&live, CommandStatus::Success, "SUCCESS", 500)
        )
        .await
        .unwrap());
    assert!(store
        .transition(
            &a,
            "s2",
            &transition(&live, CommandStatus::Success, "SUCCESS", 300)
        )
        .await
        .unwrap());
    assert!(store
        .transition(
            &other,
            "s1",
            &transition(&live, CommandStatus::Success, "SUCCESS", 100_100)
        )
        .await
        .unwrap());
    for (id, code) in [("f1", ErrorCode::Timeout), ("f2", ErrorCode::SecurityError)] {
        let mut t = transition(&live, CommandStatus::Failed, "FAILED", 900);
        t.error = Some(CommandError {
            code,
            message: "x".into(),
        });
        assert!(store.transition(&a, id, &t).await.unwrap());
    }

    let stats = store.command_stats(&a).await.unwrap();
    let by_status: BTreeMap<&str, u64> = stats
        .by_status
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        by_status,
        BTreeMap::from([("SUCCESS", 2), ("FAILED", 2), ("PENDING", 1)])
    );
    let by_error: BTreeMap<&str, u64> = stats
        .by_error
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        by_error,
        BTreeMap::from([("TIMEOUT", 1), ("SECURITY_ERROR", 1)])
    );
    let by_transport: BTreeMap<&str, (u64, u64)> = stats
        .by_transport
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(
        by_transport,
        BTreeMap::from([("sms", (3, 2)), ("cat_tp", (2, 0))])
    );
    // SUCCESS: (500 - 100) and (300 - 100): mean 300. Delivered: 50 and 150: mean 100.
    assert_eq!(stats.mean_completion_ms, Some(300.0));
    assert_eq!(stats.mean_delivery_ms, Some(100.0));
}

async fn persistence_across_reopen(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    store.insert_cards(&a, &[card(&iccid(1))], 1).await.unwrap();
    for _ in 0..3 {
        store.reserve_counter(&iccid(1), 1).await.unwrap();
    }
    sent_commands(&store, &a, 2, "gw").await;
    let token = store.create_token(&a, "t", 1).await.unwrap();
    store.close().await;
    drop(store);

    // Reopening runs the schema again (idempotent) and finds everything.
    let store = db.open().await;
    assert_eq!(store.reserve_counter(&iccid(1), 1).await.unwrap(), 4);
    assert_eq!(
        store.account_for_token(&token).await.unwrap().map(|x| x.id),
        Some(a.clone())
    );
    let (rec, events) = store.command(&a, "c001").await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Sent);
    assert_eq!(rec.owner.as_deref(), Some("gw"));
    assert_eq!(events.len(), 2);
    assert_eq!(
        store.key_set(&iccid(1), 1).await.unwrap().unwrap().keys,
        keys(1)
    );
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.reserve_counter(&iccid(1), 1).await.unwrap(), 5);
}

async fn delivery_reports(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let ids = sent_commands(&store, &a, 3, "gw").await;
    // SENT -> DELIVERED with its time.
    assert!(store.record_delivery(&a, &ids[0], 300).await.unwrap());
    let (rec, events) = store.command(&a, &ids[0]).await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Delivered);
    assert_eq!(rec.delivered_at, Some(300));
    assert_eq!(events.last().unwrap().kind, "DELIVERED");
    // A second report changes nothing.
    assert!(!store.record_delivery(&a, &ids[0], 400).await.unwrap());
    let (rec, events2) = store.command(&a, &ids[0]).await.unwrap().unwrap();
    assert_eq!(rec.delivered_at, Some(300));
    assert_eq!(events2.len(), events.len());
    // The PoR came first: the command stays SUCCESS, the report's time is kept.
    let t = transition(
        &[CommandStatus::Sent, CommandStatus::Delivered],
        CommandStatus::Success,
        "SUCCESS",
        350,
    );
    assert!(store.transition(&a, &ids[1], &t).await.unwrap());
    assert!(store.record_delivery(&a, &ids[1], 500).await.unwrap());
    assert!(!store.record_delivery(&a, &ids[1], 501).await.unwrap());
    let (rec, events) = store.command(&a, &ids[1]).await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Success);
    assert_eq!(rec.delivered_at, Some(500));
    assert_eq!(rec.completed_at, Some(350));
    assert_eq!(events.last().unwrap().kind, "DELIVERED");
    // A report received (340) before the PoR (350) but written after it: the history is in
    // the order things happened, not the order they were written.
    assert!(store.transition(&a, &ids[2], &t).await.unwrap());
    assert!(store.record_delivery(&a, &ids[2], 340).await.unwrap());
    let (rec, events) = store.command(&a, &ids[2]).await.unwrap().unwrap();
    assert_eq!((rec.delivered_at, rec.completed_at), (Some(340), Some(350)));
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k);
    assert!(at("DELIVERED") < at("SUCCESS"), "{kinds:?}");
    assert!(events.windows(2).all(|w| w[0].at <= w[1].at), "{events:?}");
    // Another account's command is not touched.
    let other = account(&store, "b").await;
    assert!(!store.record_delivery(&other, &ids[1], 600).await.unwrap());
}

async fn key_update_applies_with_its_transition(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    store.insert_cards(&a, &[card(&iccid(1))], 1).await.unwrap();
    let before = store.key_set(&iccid(1), 1).await.unwrap().unwrap();
    let ids = sent_commands(&store, &a, 2, "gw").await;
    let mut t = transition(
        &[CommandStatus::Pending],
        CommandStatus::Success,
        "SUCCESS",
        400,
    );
    t.new_keys = Some(NewKeys {
        iccid: iccid(1),
        version: 1,
        keys: keys(9),
    });
    // The transition does not apply (the command is SENT): the keys stay.
    assert!(!store.transition(&a, &ids[0], &t).await.unwrap());
    assert_eq!(
        store.key_set(&iccid(1), 1).await.unwrap().unwrap().keys,
        before.keys
    );
    t.from = vec![CommandStatus::Sent];
    assert!(store.transition(&a, &ids[0], &t).await.unwrap());
    let after = store.key_set(&iccid(1), 1).await.unwrap().unwrap();
    assert_eq!(after.keys, keys(9));
    assert_eq!(after.counter, before.counter);
    assert_eq!(after.rotated_at, Some(400));
    // No such key set: the status does not change either.
    t.new_keys = Some(NewKeys {
        iccid: iccid(1),
        version: 9,
        keys: keys(3),
    });
    assert!(matches!(
        store.transition(&a, &ids[1], &t).await,
        Err(StoreError::NotFound { .. })
    ));
    let (rec, _) = store.command(&a, &ids[1]).await.unwrap().unwrap();
    assert_eq!(rec.status, CommandStatus::Sent);
}

// ---------------------------------------------------------------------------------------------
// Profiles, provisioning and card groups (issue 5).

fn new_profile(name: &str) -> NewProfile {
    NewProfile {
        name: name.to_string(),
        app_type: Some("rfm".to_string()),
        applet_id: None,
        tars: vec!["b00010".to_string(), "B00011".to_string()],
        defaults: ProfileDefaults {
            spi: Some("1639".to_string()),
            kic_byte: Some("15".to_string()),
            kid_byte: Some("15".to_string()),
            transport: Some("sms".to_string()),
            http: Some(serde_json::json!({"url": "https://ota.example/tls", "psk": 1})),
            catp: Some(serde_json::json!({"bufferSize": 900, "apn": "fleet.example"})),
            gp: Some(serde_json::json!({"version": "2.2.1", "kcvFill": "00"})),
            validity_period_minutes: Some(90),
        },
    }
}

async fn profile_id(store: &SqlStore, acct: &str, name: &str) -> i64 {
    store
        .create_profile(acct, &new_profile(name), 1_500)
        .await
        .expect("profile")
        .id
}

fn cards_range(range: std::ops::Range<u64>) -> Vec<NewCard> {
    range.map(|n| card(&iccid(n))).collect()
}

/// Provisions without a group, counting nothing.
async fn provision(store: &SqlStore, acct: &str, profile: i64, cards: &[NewCard]) {
    store
        .provision_cards(acct, profile, cards, None, 2_000, &|_| {})
        .await
        .expect("provision");
}

async fn count(pool: &sqlx::AnyPool, table: &str) -> i64 {
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(pool)
        .await
        .expect("count")
        .get::<i64, _>("n")
}

/// Rows of the provisioning tables: cards, key sets, profile links, groups, group members.
async fn provisioning_rows(pool: &sqlx::AnyPool) -> [i64; 5] {
    [
        count(pool, "cards").await,
        count(pool, "key_sets").await,
        count(pool, "profile_cards").await,
        count(pool, "card_groups").await,
        count(pool, "card_group_members").await,
    ]
}

async fn profiles_and_accounts(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    assert!(store.accounts().await.unwrap().is_empty());
    let zeta = store.create_account("zeta", 3).await.unwrap();
    let alpha = store.create_account("alpha", 4).await.unwrap();
    let mid = store.create_account("mid", 5).await.unwrap();
    assert_eq!(
        store.accounts().await.unwrap(),
        vec![alpha.clone(), mid.clone(), zeta.clone()]
    );

    let p = store
        .create_profile(&alpha.id, &new_profile("rfm-main"), 1_000)
        .await
        .unwrap();
    assert!(p.id > 0);
    assert_eq!(p.account_id, alpha.id);
    assert_eq!(p.name, "rfm-main");
    assert_eq!(p.app_type.as_deref(), Some("rfm"));
    assert_eq!(p.applet_id, None);
    assert_eq!(p.tars, new_profile("x").tars);
    assert_eq!(p.defaults, new_profile("x").defaults);
    assert_eq!((p.created_at, p.updated_at), (1_000, 1_000));
    // Name unique per account.
    match store
        .create_profile(&alpha.id, &new_profile("rfm-main"), 1_001)
        .await
    {
        Err(StoreError::Duplicate {
            what: "profile",
            key,
        }) => assert_eq!(key, "rfm-main"),
        other => panic!("expected duplicate profile, got {other:?}"),
    }
    // A minimal profile (no defaults, custom applet).
    let bare = NewProfile {
        name: "custom".to_string(),
        app_type: Some("custom".to_string()),
        applet_id: Some("applet-1".to_string()),
        tars: vec![],
        defaults: ProfileDefaults::default(),
    };
    let q = store.create_profile(&alpha.id, &bare, 1_002).await.unwrap();
    assert!(q.id > p.id);
    assert_eq!(q.applet_id.as_deref(), Some("applet-1"));
    assert!(q.tars.is_empty());
    assert_eq!(q.defaults, ProfileDefaults::default());
    // The same name in another account is another profile.
    let z = store
        .create_profile(&zeta.id, &new_profile("rfm-main"), 1_003)
        .await
        .unwrap();
    assert_ne!(z.id, p.id);
    assert_eq!(z.account_id, zeta.id);
    // Unknown account.
    assert!(matches!(
        store
            .create_profile("no-such-account", &new_profile("x"), 1)
            .await,
        Err(StoreError::NotFound {
            what: "account",
            ..
        })
    ));

    assert_eq!(
        store.profile(&alpha.id, p.id).await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(
        store.profile(&alpha.id, q.id).await.unwrap(),
        Some(q.clone())
    );
    assert_eq!(store.profile(&zeta.id, p.id).await.unwrap(), None);
    assert_eq!(store.profile(&alpha.id, z.id).await.unwrap(), None);
    assert_eq!(store.profile(&alpha.id, 999_999).await.unwrap(), None);
    assert_eq!(
        store.profile_by_name(&alpha.id, "rfm-main").await.unwrap(),
        Some(p.clone())
    );
    assert_eq!(
        store.profile_by_name(&zeta.id, "rfm-main").await.unwrap(),
        Some(z.clone())
    );
    assert_eq!(
        store.profile_by_name(&zeta.id, "custom").await.unwrap(),
        None
    );
    assert_eq!(
        store.profile_by_name(&mid.id, "rfm-main").await.unwrap(),
        None
    );
    assert_eq!(store.profiles(&alpha.id).await.unwrap(), vec![p, q]);
    assert_eq!(store.profiles(&zeta.id).await.unwrap(), vec![z]);
    assert!(store.profiles(&mid.id).await.unwrap().is_empty());
    // Survives a reopen.
    store.close().await;
    let store = db.open().await;
    assert_eq!(store.profiles(&alpha.id).await.unwrap().len(), 2);
    assert_eq!(store.accounts().await.unwrap().len(), 3);
}

async fn existing_iccids_in_batches(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    assert!(store.existing_iccids(&[]).await.unwrap().is_empty());
    // Even cards of a, every tenth odd one of b, across 1,300 numbers.
    let mine: Vec<NewCard> = (0..1300).step_by(2).map(|n| card(&iccid(n))).collect();
    let theirs: Vec<NewCard> = (1..1300).step_by(20).map(|n| card(&iccid(n))).collect();
    store.insert_cards(&a, &mine, 1).await.unwrap();
    store.insert_cards(&other, &theirs, 1).await.unwrap();
    let asked: Vec<String> = (0..1300).map(iccid).collect();
    let found = store.existing_iccids(&asked).await.unwrap();
    let found: HashSet<String> = found.into_iter().collect();
    let expected: HashSet<String> = mine
        .iter()
        .chain(&theirs)
        .map(|c| c.iccid.clone())
        .collect();
    assert_eq!(found.len(), 650 + 65);
    assert_eq!(found, expected);
    // None present.
    let absent: Vec<String> = (5000..5700).map(iccid).collect();
    assert!(store.existing_iccids(&absent).await.unwrap().is_empty());
    // One present, at the end of the third batch.
    let mut one = absent.clone();
    one.insert(1200.min(one.len()), iccid(1298));
    assert_eq!(
        store.existing_iccids(&one).await.unwrap(),
        vec![iccid(1298)]
    );
}

async fn provisioning_all_or_none(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let raw = db.raw().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    let p = profile_id(&store, &a, "p").await;
    let foreign = profile_id(&store, &other, "p").await;

    // Without a group: cards, key sets and profile links; progress adds up to the total.
    let mut first = cards_range(1..4);
    first[1].key_sets.push(key_set(2, keys(5), 9));
    let done = std::sync::Mutex::new(Vec::new());
    let group = store
        .provision_cards(&a, p, &first, None, 2_000, &|n| {
            done.lock().unwrap().push(n)
        })
        .await
        .unwrap();
    assert_eq!(group, None);
    let calls = done.lock().unwrap().clone();
    assert!(calls.iter().all(|&n| n > 0), "{calls:?}");
    assert_eq!(calls.iter().sum::<u64>(), provision_rows(&first, false));
    assert_eq!(provision_rows(&first, false), 3 * 2 + 4);
    assert_eq!(provisioning_rows(&raw).await, [3, 4, 3, 0, 0]);
    let got = store.card(&a, &iccid(2)).await.unwrap().expect("card");
    assert_eq!(got.created_at, 2_000);
    assert_eq!(got.key_versions.len(), 2);
    assert_eq!(
        store.key_set(&iccid(2), 2).await.unwrap().unwrap().keys,
        keys(5)
    );
    for n in 1..4 {
        assert_eq!(store.card_profile(&a, &iccid(n)).await.unwrap(), Some(p));
    }

    // With a group, across several statements of every kind.
    let many = cards_range(100..1300);
    let done = std::sync::Mutex::new(Vec::new());
    let group = store
        .provision_cards(&a, p, &many, Some("batch-1"), 3_000, &|n| {
            done.lock().unwrap().push(n)
        })
        .await
        .unwrap()
        .expect("group");
    let calls = done.lock().unwrap().clone();
    assert!(calls.len() >= 6, "{calls:?}");
    assert_eq!(calls.iter().sum::<u64>(), provision_rows(&many, true));
    assert_eq!(provision_rows(&many, true), 1200 * 4);
    assert_eq!(group.account_id, a);
    assert_eq!(group.profile_id, p);
    assert_eq!(group.name, "batch-1");
    assert_eq!(group.cards, 1200);
    assert_eq!(group.created_at, 3_000);
    assert_eq!(
        store.card_group(&a, group.id).await.unwrap(),
        Some(group.clone())
    );
    assert_eq!(store.card_groups(&a).await.unwrap(), vec![group.clone()]);
    assert_eq!(
        store
            .card_group_iccids(&a, group.id, None, 5_000)
            .await
            .unwrap(),
        (100..1300).map(iccid).collect::<Vec<_>>()
    );
    assert_eq!(store.card_profile(&a, &iccid(1299)).await.unwrap(), Some(p));
    let before = provisioning_rows(&raw).await;
    assert_eq!(before, [1203, 1204, 1203, 1, 1200]);

    // Refused calls write nothing: no card, key set, profile link, group or member.
    let refused = |what: &'static str, key: String| {
        move |r: Result<Option<otagw::store::CardGroupRecord>, StoreError>| match r {
            Err(StoreError::Duplicate { what: w, key: k }) if w == what && k == key => {}
            other => panic!("expected duplicate {what} {key}, got {other:?}"),
        }
    };
    // A card already provisioned, in the last chunk.
    let mut again = cards_range(2000..2700);
    again.push(card(&iccid(2)));
    refused("card", iccid(2))(
        store
            .provision_cards(&a, p, &again, Some("batch-2"), 4_000, &|_| {})
            .await,
    );
    refused("card", iccid(1299))(
        store
            .provision_cards(
                &a,
                p,
                &[card(&iccid(2000)), card(&iccid(1299))],
                None,
                4_000,
                &|_| {},
            )
            .await,
    );
    // Twice in the input.
    refused("card", iccid(2001))(
        store
            .provision_cards(
                &a,
                p,
                &[card(&iccid(2001)), card(&iccid(2002)), card(&iccid(2001))],
                Some("batch-3"),
                4_000,
                &|_| {},
            )
            .await,
    );
    // Already a card of another account.
    store
        .insert_cards(&other, &[card(&iccid(9000))], 1)
        .await
        .unwrap();
    let before = provisioning_rows(&raw).await;
    refused("card", iccid(9000))(
        store
            .provision_cards(
                &a,
                p,
                &[card(&iccid(2003)), card(&iccid(9000))],
                Some("batch-4"),
                4_000,
                &|_| {},
            )
            .await,
    );
    // The group name is taken in this profile: the new cards are not written either.
    refused("card group", "batch-1".to_string())(
        store
            .provision_cards(
                &a,
                p,
                &cards_range(2004..2010),
                Some("batch-1"),
                4_000,
                &|_| {},
            )
            .await,
    );
    // Another account's profile, or none.
    for bad in [foreign, foreign + 1000] {
        assert!(matches!(
            store
                .provision_cards(&a, bad, &cards_range(2010..2012), Some("x"), 4_000, &|_| {})
                .await,
            Err(StoreError::NotFound {
                what: "profile",
                ..
            })
        ));
    }
    assert_eq!(provisioning_rows(&raw).await, before);
    for n in [2000, 2001, 2003, 2004, 2010, 2699] {
        assert_eq!(store.card(&a, &iccid(n)).await.unwrap(), None);
        assert_eq!(store.card_profile(&a, &iccid(n)).await.unwrap(), None);
    }
    assert_eq!(store.card_groups(&a).await.unwrap(), vec![group.clone()]);
    assert!(store.card_groups(&other).await.unwrap().is_empty());

    // The refused names and cards can be used afterwards.
    let g2 = store
        .provision_cards(&a, p, &again[..700], Some("batch-2"), 5_000, &|_| {})
        .await
        .unwrap()
        .expect("group");
    assert_eq!(g2.cards, 700);
    // The same group name in another profile is another group.
    let q = profile_id(&store, &a, "q").await;
    let g3 = store
        .provision_cards(
            &a,
            q,
            &cards_range(3000..3002),
            Some("batch-1"),
            5_000,
            &|_| {},
        )
        .await
        .unwrap()
        .expect("group");
    assert_eq!((g3.profile_id, g3.cards), (q, 2));
    assert_eq!(store.card_profile(&a, &iccid(3001)).await.unwrap(), Some(q));
    // card_profile: never for another account's card, an unlinked card or no card.
    store
        .insert_cards(&a, &[card(&iccid(4000))], 1)
        .await
        .unwrap();
    assert_eq!(store.card_profile(&a, &iccid(4000)).await.unwrap(), None);
    assert_eq!(store.card_profile(&other, &iccid(1)).await.unwrap(), None);
    assert_eq!(
        store.card_profile(&other, &iccid(9000)).await.unwrap(),
        None
    );
    assert_eq!(store.card_profile(&a, &iccid(9999)).await.unwrap(), None);
    // profile_of_card: by ICCID alone (unique across accounts), with the profile's defaults.
    let of = store
        .profile_of_card(&iccid(3001))
        .await
        .unwrap()
        .expect("profile");
    assert_eq!(of.id, q);
    assert_eq!(of.account_id, a);
    assert_eq!(
        Some(of.defaults.clone()),
        store.profile(&a, q).await.unwrap().map(|p| p.defaults)
    );
    assert!(store.profile_of_card(&iccid(4000)).await.unwrap().is_none());
    assert!(store.profile_of_card(&iccid(9999)).await.unwrap().is_none());
    raw.close().await;
}

async fn profile_cards_matching(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    let p = profile_id(&store, &a, "p").await;
    let q = profile_id(&store, &a, "q").await;
    let r = profile_id(&store, &other, "p").await;
    provision(&store, &a, p, &cards_range(0..700)).await;
    provision(&store, &a, q, &cards_range(700..710)).await;
    provision(&store, &other, r, &cards_range(710..720)).await;
    store
        .insert_cards(&a, &cards_range(720..730), 1)
        .await
        .unwrap();

    // By ICCID: only p's cards, over more than one lookup batch.
    let asked: Vec<String> = (0..800).step_by(3).chain(900..1200).map(iccid).collect();
    let mut got = store
        .profile_cards_matching(&a, p, CardKey::Iccid, &asked)
        .await
        .unwrap();
    got.sort();
    let expected: Vec<(String, String)> =
        (0..700).step_by(3).map(|n| (iccid(n), iccid(n))).collect();
    assert_eq!(got, expected);
    // By MSISDN: the MSISDN with its card's ICCID.
    let msisdn = |n: u64| card(&iccid(n)).msisdn.unwrap();
    let asked: Vec<String> = [5, 699, 700, 715, 725]
        .into_iter()
        .map(msisdn)
        .chain(["3369999999".to_string()])
        .collect();
    let mut got = store
        .profile_cards_matching(&a, p, CardKey::Msisdn, &asked)
        .await
        .unwrap();
    got.sort();
    assert_eq!(got, vec![(msisdn(5), iccid(5)), (msisdn(699), iccid(699))]);
    assert_eq!(
        store
            .profile_cards_matching(&a, q, CardKey::Msisdn, &asked)
            .await
            .unwrap(),
        vec![(msisdn(700), iccid(700))]
    );
    // Another account's profile, or another account asking: nothing.
    let theirs: Vec<String> = (700..730).map(iccid).collect();
    assert!(store
        .profile_cards_matching(&a, r, CardKey::Iccid, &theirs)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .profile_cards_matching(&other, p, CardKey::Iccid, &[iccid(1)])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .profile_cards_matching(&other, r, CardKey::Iccid, &theirs)
            .await
            .unwrap()
            .len(),
        10
    );
    assert!(store
        .profile_cards_matching(&a, p, CardKey::Iccid, &[])
        .await
        .unwrap()
        .is_empty());
}

async fn card_groups_create_and_page(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let raw = db.raw().await;
    let a = account(&store, "a").await;
    let other = account(&store, "b").await;
    let p = profile_id(&store, &a, "p").await;
    let q = profile_id(&store, &a, "q").await;
    let empty = profile_id(&store, &a, "empty").await;
    let r = profile_id(&store, &other, "r").await;
    // Provisioned in an order that is not the ICCID order.
    let mut pcards = cards_range(0..1100);
    pcards.reverse();
    provision(&store, &a, p, &pcards).await;
    provision(&store, &a, q, &cards_range(2000..2002)).await;
    provision(&store, &other, r, &cards_range(3000..3002)).await;
    store
        .insert_cards(&a, &[card(&iccid(4000))], 1)
        .await
        .unwrap();

    // Every card of the profile.
    let all = store
        .create_card_group(&a, p, "all", &GroupMembers::AllOfProfile, 6_000)
        .await
        .unwrap();
    assert_eq!((all.account_id.as_str(), all.profile_id), (a.as_str(), p));
    assert_eq!(
        (all.name.as_str(), all.cards, all.created_at),
        ("all", 1100, 6_000)
    );
    // A list, in any order.
    let listed = vec![iccid(7), iccid(3), iccid(1099), iccid(500)];
    let some = store
        .create_card_group(&a, p, "some", &GroupMembers::Iccids(listed), 6_001)
        .await
        .unwrap();
    assert_eq!(some.cards, 4);
    assert_eq!(
        store
            .card_group_iccids(&a, some.id, None, 10)
            .await
            .unwrap(),
        vec![iccid(3), iccid(7), iccid(500), iccid(1099)]
    );
    // A list longer than one lookup batch.
    let big: Vec<String> = (0..1100).rev().step_by(2).map(iccid).collect();
    let half = store
        .create_card_group(&a, p, "half", &GroupMembers::Iccids(big), 6_002)
        .await
        .unwrap();
    assert_eq!(half.cards, 550);
    // A profile without cards.
    let none = store
        .create_card_group(&a, empty, "none", &GroupMembers::AllOfProfile, 6_003)
        .await
        .unwrap();
    assert_eq!(none.cards, 0);
    assert!(store
        .card_group_iccids(&a, none.id, None, 10)
        .await
        .unwrap()
        .is_empty());

    // Refused: nothing written, and the error names the card.
    let before = provisioning_rows(&raw).await;
    let groups_before = store.card_groups(&a).await.unwrap();
    let invalid_naming =
        |r: Result<otagw::store::CardGroupRecord, StoreError>, name: &str, why: &str| match r {
            Err(e @ StoreError::Invalid { .. }) => {
                assert!(
                    e.to_string().contains(name),
                    "{why}: {e} does not name {name}"
                )
            }
            other => panic!("{why}: expected invalid naming {name}, got {other:?}"),
        };
    let cases = [
        (iccid(2001), "a card of another profile"),
        (iccid(4000), "a card of no profile"),
        (iccid(3001), "another account's card"),
        (iccid(7777), "no card"),
    ];
    for (bad, why) in cases {
        let mut list: Vec<String> = (0..600).map(iccid).collect();
        list.push(bad.clone());
        list.push(iccid(601));
        invalid_naming(
            store
                .create_card_group(&a, p, "bad", &GroupMembers::Iccids(list), 7_000)
                .await,
            &bad,
            why,
        );
    }
    invalid_naming(
        store
            .create_card_group(
                &a,
                p,
                "bad",
                &GroupMembers::Iccids(vec![iccid(1), iccid(2), iccid(1)]),
                7_000,
            )
            .await,
        &iccid(1),
        "listed twice",
    );
    match store
        .create_card_group(&a, p, "all", &GroupMembers::Iccids(vec![iccid(1)]), 7_000)
        .await
    {
        Err(StoreError::Duplicate {
            what: "card group",
            key,
        }) => assert_eq!(key, "all"),
        other => panic!("expected duplicate group, got {other:?}"),
    }
    for bad in [r, r + 1000] {
        assert!(matches!(
            store
                .create_card_group(&a, bad, "x", &GroupMembers::AllOfProfile, 7_000)
                .await,
            Err(StoreError::NotFound {
                what: "profile",
                ..
            })
        ));
    }
    assert_eq!(provisioning_rows(&raw).await, before);
    assert_eq!(store.card_groups(&a).await.unwrap(), groups_before);
    // The refused name is free; the same name in another profile is another group.
    let bad_ok = store
        .create_card_group(&a, p, "bad", &GroupMembers::Iccids(vec![iccid(9)]), 7_001)
        .await
        .unwrap();
    let q_all = store
        .create_card_group(&a, q, "all", &GroupMembers::AllOfProfile, 7_002)
        .await
        .unwrap();
    assert_eq!((q_all.profile_id, q_all.cards), (q, 2));

    // Lookups: by id, the account's list by id, never another account's.
    let mine = store.card_groups(&a).await.unwrap();
    assert_eq!(
        mine.iter().map(|g| g.id).collect::<Vec<_>>(),
        vec![all.id, some.id, half.id, none.id, bad_ok.id, q_all.id]
    );
    assert!(mine.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(mine[0], all);
    assert_eq!(
        store.card_group(&a, half.id).await.unwrap(),
        Some(half.clone())
    );
    assert_eq!(store.card_group(&a, 999_999).await.unwrap(), None);
    assert_eq!(store.card_group(&other, all.id).await.unwrap(), None);
    assert!(store.card_groups(&other).await.unwrap().is_empty());
    assert!(store
        .card_group_iccids(&other, all.id, None, 100)
        .await
        .unwrap()
        .is_empty());
    let theirs = store
        .create_card_group(&other, r, "t", &GroupMembers::AllOfProfile, 7_003)
        .await
        .unwrap();
    assert_eq!(
        store.card_groups(&other).await.unwrap(),
        vec![theirs.clone()]
    );
    assert_eq!(store.card_group(&a, theirs.id).await.unwrap(), None);
    assert!(store
        .card_group_iccids(&a, theirs.id, None, 100)
        .await
        .unwrap()
        .is_empty());

    // Paging: pages in ICCID order, every member exactly once, the same again.
    for (group, size) in [(&all, 1100usize), (&half, 550)] {
        for limit in [1u32, 7, 500, 1100, 5000] {
            if limit == 1 && size > 600 {
                continue;
            }
            let mut pages = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .card_group_iccids(&a, group.id, after.as_deref(), limit)
                    .await
                    .unwrap();
                assert!(page.len() <= limit as usize);
                if page.is_empty() {
                    break;
                }
                after = page.last().cloned();
                pages.extend(page);
            }
            assert_eq!(pages.len(), size, "limit {limit}");
            assert!(pages.windows(2).all(|w| w[0] < w[1]), "limit {limit}");
            let once = store
                .card_group_iccids(&a, group.id, None, size as u32)
                .await
                .unwrap();
            assert_eq!(pages, once);
        }
    }
    let every: Vec<String> = (0..1100).map(iccid).collect();
    assert_eq!(
        store
            .card_group_iccids(&a, all.id, None, 2_000)
            .await
            .unwrap(),
        every
    );
    assert_eq!(
        store
            .card_group_iccids(&a, all.id, Some(&iccid(1097)), 10)
            .await
            .unwrap(),
        vec![iccid(1098), iccid(1099)]
    );
    // `after` need not be a member.
    assert_eq!(
        store
            .card_group_iccids(&a, half.id, Some(&iccid(1096)), 2)
            .await
            .unwrap(),
        vec![iccid(1097), iccid(1099)]
    );
    assert!(store
        .card_group_iccids(&a, all.id, Some(&iccid(1099)), 10)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .card_group_iccids(&a, all.id, None, 0)
        .await
        .unwrap()
        .is_empty());
    raw.close().await;
}

async fn one_gateway_per_card(b: Backend) {
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    store.insert_command(&command(&a, "x1", 1)).await.unwrap();
    let got = store.claim_commands("gw-a", 10, 100, 1_000).await.unwrap();
    assert_eq!(got.len(), 1);
    // A second command for the same card, and one for another card.
    store.insert_command(&command(&a, "x2", 2)).await.unwrap();
    let mut other = command(&a, "y1", 3);
    other.iccid = iccid(2);
    store.insert_command(&other).await.unwrap();
    let ids = |v: Vec<otagw::store::CommandRecord>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    // Another gateway gets only the other card's command: gw-a holds card 1.
    assert_eq!(
        ids(store.claim_commands("gw-b", 10, 200, 1_000).await.unwrap()),
        ["y1"]
    );
    // gw-a takes its card's next command.
    assert_eq!(
        ids(store.claim_commands("gw-a", 10, 200, 1_000).await.unwrap()),
        ["x2"]
    );
    // Once the leases run out, the card is free for gw-b (which takes back its own too).
    let mut late = ids(store
        .claim_commands("gw-b", 10, 2_000, 3_000)
        .await
        .unwrap());
    late.sort();
    assert_eq!(late, ["x1", "x2", "y1"]);
}

/// SCP81 PSK keys: versions 0x40-0x4F only, sealed at rest (not in the table's bytes, bound to
/// their row), identities unique across cards, looked up by identity.
async fn scp81_psk_keys_sealed_and_unique(b: Backend) {
    use otagw::store::scp81::Scp81Store;
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    store
        .insert_cards(&a, &[card(&iccid(1)), card(&iccid(2))], 1)
        .await
        .unwrap();
    let key: Vec<u8> = (0u8..16).map(|i| 0xA0 ^ i.wrapping_mul(29)).collect();
    store
        .put_psk(&iccid(1), 0x40, b"id-card-1", &key)
        .await
        .unwrap();
    let got = store.psk(&iccid(1), 0x40).await.unwrap().expect("psk");
    assert_eq!(
        (got.identity.as_slice(), got.key.as_slice()),
        (&b"id-card-1"[..], &key[..])
    );
    assert_eq!(store.psk(&iccid(1), 0x41).await.unwrap(), None);
    let by_id = store
        .psk_by_identity(b"id-card-1")
        .await
        .unwrap()
        .expect("by identity");
    assert_eq!(
        (by_id.iccid.as_str(), by_id.version),
        (iccid(1).as_str(), 0x40)
    );
    assert!(!format!("{by_id:?}").contains(&hex::encode_upper(&key)));
    // Not an SCP81 key version.
    assert!(matches!(
        store.put_psk(&iccid(1), 0x01, b"x", &key).await,
        Err(StoreError::Invalid { .. })
    ));
    // Another card may not take the identity.
    assert!(matches!(
        store.put_psk(&iccid(2), 0x40, b"id-card-1", &key).await,
        Err(StoreError::Duplicate { .. })
    ));
    // Replacing the key of a version.
    store
        .put_psk(&iccid(1), 0x40, b"id-card-1b", &[0x33; 16])
        .await
        .unwrap();
    let got = store.psk(&iccid(1), 0x40).await.unwrap().expect("psk");
    assert_eq!(
        (got.identity, got.key),
        (b"id-card-1b".to_vec(), vec![0x33; 16])
    );
    assert_eq!(store.psk_by_identity(b"id-card-1").await.unwrap(), None);
    // At rest: sealed bytes, not the key; bound to their row.
    let raw = db.raw().await;
    let row = sqlx::query("SELECT psk FROM scp81_keys WHERE iccid = $1")
        .bind(iccid(1))
        .fetch_one(&raw)
        .await
        .unwrap();
    let sealed: Vec<u8> = row.get("psk");
    assert!(find(&sealed, &[0x33; 16]).is_none());
    assert!(sealed.len() > 16);
    sqlx::query("UPDATE scp81_keys SET iccid = $1 WHERE iccid = $2")
        .bind(iccid(2))
        .bind(iccid(1))
        .execute(&raw)
        .await
        .unwrap();
    assert!(matches!(
        store.psk(&iccid(2), 0x40).await,
        Err(StoreError::Sealing(_))
    ));
    raw.close().await;
    // Another master key is refused at open.
    drop(store);
    assert!(matches!(
        SqlStore::connect(&db.url, MasterKey::from_bytes([7; 32])).await,
        Err(StoreError::WrongMasterKey(_))
    ));
}

/// SCP81 chunks: queued once per command, handed out oldest first, an answered chunk never
/// again, a chunk left SENT by a broken session handed out again; dropped with their command;
/// a command whose triggers went unanswered reopens for SMS.
async fn scp81_chunks_answered_once(b: Backend) {
    use otagw::store::scp81::{ChunkState, NewChunk, Scp81Store, ScriptKind};
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    store.insert_cards(&a, &[card(&iccid(1))], 1).await.unwrap();
    let chunk = |n: u8| NewChunk {
        script: vec![0xAE, 0x80, 0x22, 0x01, n, 0x00, 0x00],
        targeted_application: (n == 2).then(|| "//aid/A000000009/0001FFFFFFFF89B00010".into()),
        kind: if n == 2 {
            ScriptKind::RemoteFile
        } else {
            ScriptKind::CardContent
        },
    };
    let chunks = [chunk(0), chunk(1), chunk(2)];
    assert!(store
        .queue_chunks(&a, "c1", &iccid(1), &chunks, 10)
        .await
        .unwrap());
    assert!(!store
        .queue_chunks(&a, "c1", &iccid(1), &chunks[..1], 11)
        .await
        .unwrap());
    assert_eq!(store.next_chunk(&iccid(2), 12).await.unwrap(), None);
    let first = store
        .next_chunk(&iccid(1), 12)
        .await
        .unwrap()
        .expect("chunk 0");
    assert_eq!(
        (first.seq, first.state, first.sends),
        (0, ChunkState::Sent, 1)
    );
    assert_eq!(first.script, chunks[0].script);
    assert!(store
        .answer_chunk(&a, "c1", 0, &[0xAF, 0x80, 0x00, 0x00], "ok", 13)
        .await
        .unwrap());
    // Answered once only.
    assert!(!store
        .answer_chunk(&a, "c1", 0, &[0xAF, 0x80, 0x00, 0x00], "ok", 13)
        .await
        .unwrap());
    let second = store
        .next_chunk(&iccid(1), 14)
        .await
        .unwrap()
        .expect("chunk 1");
    assert_eq!(second.seq, 1);
    // What a resuming card answers first: the chunk left SENT.
    let left = store
        .sent_chunk(&iccid(1))
        .await
        .unwrap()
        .expect("sent chunk");
    assert_eq!((left.command_id.as_str(), left.seq), ("c1", 1));
    // The session breaks: chunk 1 goes again, chunk 0 never.
    assert_eq!(store.requeue_sent(&iccid(1), 15).await.unwrap(), 1);
    let again = store
        .next_chunk(&iccid(1), 16)
        .await
        .unwrap()
        .expect("chunk 1 again");
    assert_eq!((again.seq, again.sends), (1, 2));
    assert!(store
        .answer_chunk(&a, "c1", 1, &[0xAF, 0x80, 0x00, 0x00], "ok", 17)
        .await
        .unwrap());
    let third = store
        .next_chunk(&iccid(1), 18)
        .await
        .unwrap()
        .expect("chunk 2");
    assert_eq!(third.seq, 2);
    assert_eq!(
        third.targeted_application.as_deref(),
        Some("//aid/A000000009/0001FFFFFFFF89B00010")
    );
    assert_eq!(
        (first.kind, third.kind),
        (ScriptKind::CardContent, ScriptKind::RemoteFile)
    );
    // A POST's URI names a chunk of the card's: found by card, command and position only.
    let named = store.card_chunk(&iccid(1), "c1", 2).await.unwrap();
    assert_eq!(named.map(|c| (c.seq, c.state)), Some((2, ChunkState::Sent)));
    assert_eq!(store.card_chunk(&iccid(2), "c1", 2).await.unwrap(), None);
    assert_eq!(store.card_chunk(&iccid(1), "c1", 3).await.unwrap(), None);
    assert!(store
        .answer_chunk(&a, "c1", 2, &[], "unknown-application", 19)
        .await
        .unwrap());
    assert_eq!(store.next_chunk(&iccid(1), 20).await.unwrap(), None);
    let all = store.command_chunks(&a, "c1").await.unwrap();
    assert_eq!(
        all.iter().map(|c| (c.state, c.sends)).collect::<Vec<_>>(),
        vec![
            (ChunkState::Answered, 1),
            (ChunkState::Answered, 2),
            (ChunkState::Answered, 1)
        ]
    );
    assert_eq!(all[2].script_status.as_deref(), Some("unknown-application"));
    assert_eq!(
        all[0].response.as_deref(),
        Some(&[0xAF, 0x80, 0x00, 0x00][..])
    );
    assert_eq!(store.drop_chunks(&a, "c1").await.unwrap(), 3);
    assert!(store.command_chunks(&a, "c1").await.unwrap().is_empty());
    // A failed chunk drops the QUEUED ones after it; answered and SENT ones stay.
    assert!(store
        .queue_chunks(&a, "c2", &iccid(1), &chunks, 21)
        .await
        .unwrap());
    store
        .next_chunk(&iccid(1), 22)
        .await
        .unwrap()
        .expect("c2 chunk 0");
    assert_eq!(store.drop_queued(&a, "c2").await.unwrap(), 2);
    let left = store.command_chunks(&a, "c2").await.unwrap();
    assert_eq!(
        left.iter().map(|c| (c.seq, c.state)).collect::<Vec<_>>(),
        vec![(0, ChunkState::Sent)]
    );
}

/// A database an earlier version created has `admin_chunks` without the `kind` column: opening
/// it adds the column, the old rows read as GP scripts, and new chunks store their kind.
async fn scp81_chunk_kind_added_to_an_old_table(b: Backend) {
    use otagw::store::scp81::{ChunkState, NewChunk, Scp81Store, ScriptKind};
    let db = TestDb::new(b).await;
    {
        let (int, blob) = match b {
            Backend::Sqlite => ("INTEGER", "BLOB"),
            Backend::Postgres => ("BIGINT", "BYTEA"),
        };
        sqlx::any::install_default_drivers();
        let url = match b {
            Backend::Sqlite => format!("{}?mode=rwc", db.url),
            Backend::Postgres => db.url.clone(),
        };
        let pool = sqlx::AnyPool::connect(&url).await.expect("raw connection");
        // The table as the previous release created it.
        sqlx::query(&format!(
            "CREATE TABLE admin_chunks (account_id TEXT NOT NULL, command_id TEXT NOT NULL, \
             seq {int} NOT NULL, iccid TEXT NOT NULL, script {blob} NOT NULL, \
             targeted_application TEXT, state TEXT NOT NULL, response {blob}, \
             script_status TEXT, sends {int} NOT NULL, queued_at {int} NOT NULL, \
             updated_at {int} NOT NULL, PRIMARY KEY (account_id, command_id, seq))"
        ))
        .execute(&pool)
        .await
        .expect("old table");
        sqlx::query(
            "INSERT INTO admin_chunks VALUES ('a0', 'old', 0, '8949', $1, NULL, 'QUEUED', \
             NULL, NULL, 0, 1, 1)",
        )
        .bind(vec![0xAEu8, 0x80, 0x00, 0x00])
        .execute(&pool)
        .await
        .expect("old row");
        pool.close().await;
    }
    let store = db.open().await;
    let old = store
        .card_chunk("8949", "old", 0)
        .await
        .unwrap()
        .expect("old row");
    assert_eq!(
        (old.kind, old.state),
        (ScriptKind::CardContent, ChunkState::Queued)
    );
    let a = account(&store, "a").await;
    store.insert_cards(&a, &[card(&iccid(1))], 1).await.unwrap();
    let new = NewChunk {
        script: vec![0xAE, 0x80, 0x00, 0x00],
        targeted_application: None,
        kind: ScriptKind::RemoteFile,
    };
    assert!(store
        .queue_chunks(&a, "c", &iccid(1), &[new], 2)
        .await
        .unwrap());
    let got = store
        .card_chunk(&iccid(1), "c", 0)
        .await
        .unwrap()
        .expect("new row");
    assert_eq!(got.kind, ScriptKind::RemoteFile);
    drop(store);
    // Opening it again finds the column there.
    let again = db.open().await;
    assert!(again.card_chunk(&iccid(1), "c", 0).await.unwrap().is_some());
}

/// Tokens and webhooks from before token ids and webhook event filters: the tokens get ids
/// (and can be revoked), the webhooks receive every event.
async fn token_ids_and_webhook_events_added_to_old_tables(b: Backend) {
    let db = TestDb::new(b).await;
    let old_token = "otagw_old-token-from-an-earlier-release";
    {
        let (int, blob) = match b {
            Backend::Sqlite => ("INTEGER", "BLOB"),
            Backend::Postgres => ("BIGINT", "BYTEA"),
        };
        sqlx::any::install_default_drivers();
        let url = match b {
            Backend::Sqlite => format!("{}?mode=rwc", db.url),
            Backend::Postgres => db.url.clone(),
        };
        let pool = sqlx::AnyPool::connect(&url).await.expect("raw connection");
        // The tables as the previous release created them.
        for statement in [
            "CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, \
             created_at {int} NOT NULL)"
                .replace("{int}", int),
            "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, account_id TEXT NOT NULL \
             REFERENCES accounts (id), label TEXT NOT NULL, created_at {int} NOT NULL)"
                .replace("{int}", int),
            "CREATE TABLE webhooks (account_id TEXT NOT NULL REFERENCES accounts (id), \
             id TEXT NOT NULL, url TEXT NOT NULL, secret {blob} NOT NULL, \
             PRIMARY KEY (account_id, id))"
                .replace("{blob}", blob),
            "INSERT INTO accounts VALUES ('a0', 'old', 1)".to_string(),
        ] {
            sqlx::query(&statement)
                .execute(&pool)
                .await
                .expect("old table");
        }
        use sha2::Digest;
        for (hash, label) in [
            (
                hex::encode(sha2::Sha256::digest(old_token.as_bytes())),
                "one",
            ),
            ("00".repeat(32), "two"),
        ] {
            sqlx::query("INSERT INTO tokens VALUES ($1, 'a0', $2, 5)")
                .bind(hash)
                .bind(label)
                .execute(&pool)
                .await
                .expect("old token");
        }
        pool.close().await;
    }
    let store = db.open().await;
    let tokens = store.tokens("a0").await.unwrap();
    assert_eq!(tokens.len(), 2);
    assert!(tokens.iter().all(|t| !t.id.is_empty()), "{tokens:?}");
    assert_ne!(tokens[0].id, tokens[1].id);
    let one = tokens.iter().find(|t| t.label == "one").expect("one");
    assert_eq!(
        store
            .account_for_token(old_token)
            .await
            .unwrap()
            .map(|a| a.id),
        Some("a0".to_string())
    );
    store.revoke_token("a0", &one.id).await.unwrap();
    assert_eq!(store.account_for_token(old_token).await.unwrap(), None);
    // A webhook added now (after the column was added) keeps its filter; ids are stable
    // across opening again.
    let hook = Webhook {
        id: "w".into(),
        account_id: "a0".into(),
        url: "https://hooks.example.invalid/w".into(),
        secret: b"0123456789abcdef".to_vec(),
        events: vec!["command.por".into()],
    };
    store.add_webhook(&hook).await.unwrap();
    drop(store);
    let again = db.open().await;
    assert_eq!(again.webhooks("a0").await.unwrap(), vec![hook]);
    let left = again.tokens("a0").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].id,
        tokens.iter().find(|t| t.label == "two").unwrap().id
    );
}

/// Cards searched by prefixes a page at a time, updated, and deleted: refused while a command
/// is live or a campaign runs, then gone with its key sets and group memberships, its finished
/// commands kept. Another account's card is not found, like a missing one.
async fn cards_searched_updated_deleted(b: Backend) {
    use otagw::store::campaign::{CampaignTarget, NewCampaign};
    use otagw::store::CampaignStore;
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "a").await;
    let other = account(&store, "other").await;
    let p = profile_id(&store, &a, "main").await;
    provision(&store, &a, p, &cards_range(1..6)).await;
    store
        .insert_cards(&other, &[card(&iccid(100))], 1)
        .await
        .unwrap();

    // Search: prefixes, pages by ICCID, this account only.
    let page = |iccid: Option<&str>, imsi: Option<&str>, after: Option<&str>, limit| CardSearch {
        iccid: iccid.map(str::to_string),
        imsi: imsi.map(str::to_string),
        msisdn: None,
        after: after.map(str::to_string),
        limit,
    };
    let all = store
        .search_cards(&a, &page(None, None, None, 100))
        .await
        .unwrap();
    let got: Vec<_> = all.iter().map(|c| c.iccid.clone()).collect();
    assert_eq!(got, (1..6).map(iccid).collect::<Vec<_>>());
    assert_eq!(all[0].key_versions.len(), 1);
    let first = store
        .search_cards(&a, &page(None, None, None, 2))
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    let next = store
        .search_cards(&a, &page(None, None, Some(&first[1].iccid), 2))
        .await
        .unwrap();
    assert_eq!(next[0].iccid, iccid(3));
    let by_imsi = store
        .search_cards(&a, &page(None, Some("208010000000004"), None, 10))
        .await
        .unwrap();
    assert_eq!(by_imsi.len(), 1);
    assert_eq!(by_imsi[0].iccid, iccid(4));
    assert!(store
        .search_cards(&a, &page(Some(&iccid(100)), None, None, 10))
        .await
        .unwrap()
        .is_empty());
    match store
        .search_cards(&a, &page(Some("89%"), None, None, 10))
        .await
    {
        Err(StoreError::Invalid { field, .. }) => assert_eq!(field, "iccid"),
        other => panic!("expected Invalid iccid, got {other:?}"),
    }

    // Update: fields changed, other attributes kept, a null removes one.
    let mut attributes = BTreeMap::new();
    attributes.insert("cardClass".to_string(), Some("gsm".to_string()));
    attributes.insert("PIN1".to_string(), None);
    let changes = CardChanges {
        imsi: None,
        msisdn: Some("4917000001".into()),
        attributes,
    };
    let updated = store.update_card(&a, &iccid(2), &changes).await.unwrap();
    assert_eq!(updated.msisdn.as_deref(), Some("4917000001"));
    assert_eq!(updated.imsi, card(&iccid(2)).imsi);
    assert_eq!(
        updated.attributes.get("cardClass").map(String::as_str),
        Some("gsm")
    );
    assert!(!updated.attributes.contains_key("PIN1"));
    assert_eq!(store.card(&a, &iccid(2)).await.unwrap(), Some(updated));
    assert!(matches!(
        store.update_card(&a, &iccid(100), &changes).await,
        Err(StoreError::NotFound { what: "card", .. })
    ));
    assert_eq!(
        store
            .card(&other, &iccid(100))
            .await
            .unwrap()
            .unwrap()
            .msisdn,
        card(&iccid(100)).msisdn
    );

    // Delete: another account's card is not found (and stays).
    assert!(matches!(
        store.delete_card(&a, &iccid(100)).await,
        Err(StoreError::NotFound { what: "card", .. })
    ));
    assert!(store.card(&other, &iccid(100)).await.unwrap().is_some());

    // A live command refuses it; once finished, the card goes and the command stays.
    store
        .insert_command(&command(&a, "live", 10))
        .await
        .unwrap();
    match store.delete_card(&a, &iccid(1)).await {
        Err(StoreError::InUse { reason, .. }) => assert!(reason.contains("live"), "{reason}"),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(store.card(&a, &iccid(1)).await.unwrap().is_some());
    assert!(matches!(
        store.cancel_command(&a, "live", 20).await.unwrap(),
        CancelOutcome::Cancelled
    ));
    let group = store
        .create_card_group(&a, p, "g", &GroupMembers::AllOfProfile, 30)
        .await
        .unwrap();
    assert_eq!(group.cards, 5);
    let done = store.delete_card(&a, &iccid(1)).await.unwrap();
    assert_eq!(
        (done.key_sets, done.group_memberships, done.commands_kept),
        (1, 1, 1)
    );
    assert!(store.card(&a, &iccid(1)).await.unwrap().is_none());
    assert!(store.key_set(&iccid(1), 1).await.unwrap().is_none());
    assert_eq!(
        store.card_group(&a, group.id).await.unwrap().unwrap().cards,
        4
    );
    let (kept, events) = store
        .command(&a, "live")
        .await
        .unwrap()
        .expect("history kept");
    assert_eq!(kept.status, CommandStatus::Cancelled);
    assert!(!events.is_empty());
    assert!(matches!(
        store.delete_card(&a, &iccid(1)).await,
        Err(StoreError::NotFound { .. })
    ));

    // A running campaign refuses it; once completed, the card goes.
    let c = store
        .create_campaign(
            &NewCampaign {
                account_id: a.clone(),
                profile_id: p,
                name: "c".into(),
                campaign_type: "RFM".into(),
                settings: "{}".into(),
                messages_per_card: 1,
            },
            40,
        )
        .await
        .unwrap();
    store
        .start_campaign(&a, c.id, &CampaignTarget::Card(iccid(3)), &[], 41)
        .await
        .unwrap();
    match store.delete_card(&a, &iccid(3)).await {
        Err(StoreError::InUse { reason, .. }) => {
            assert!(reason.contains("campaign \"c\" (RUNNING)"), "{reason}")
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(store
        .set_campaign_status(c.id, &["RUNNING"], "COMPLETED", 42, &[])
        .await
        .unwrap());
    store.delete_card(&a, &iccid(3)).await.unwrap();
    assert!(store.card(&a, &iccid(3)).await.unwrap().is_none());
}

/// The outbox: events are written with the state change that reports them (and not when the
/// change is refused, nor for an account without a webhook); a claim leases only the oldest
/// event of each command or campaign; a lease that ends lets another gateway take the event;
/// finished events are deleted.
async fn outbox_written_with_changes_and_claimed_in_order(b: Backend) {
    use otagw::events::{Event, OutboxEvent};
    use otagw::store::OutboxStore;
    let db = TestDb::new(b).await;
    let store = db.open().await;
    let a = account(&store, "with-hook").await;
    let quiet = account(&store, "no-hook").await;
    store
        .add_webhook(&Webhook {
            id: "wh".into(),
            account_id: a.clone(),
            url: "https://hooks.example.invalid/x".into(),
            secret: vec![1],
            events: Vec::new(),
        })
        .await
        .unwrap();
    let ids = sent_commands(&store, &a, 2, "gw").await;
    // No webhook: nothing written for this account.
    store
        .insert_command(&command(&quiet, "q0", 5))
        .await
        .unwrap();
    store.claim_commands("gw", 5, 100, 10_000).await.unwrap();
    assert!(store.record_send(&quiet, "q0", "gw", 200).await.unwrap());
    assert!(store.record_delivery(&quiet, "q0", 250).await.unwrap());

    assert!(store.record_delivery(&a, &ids[0], 300).await.unwrap());
    // A second report is not recorded: no second event.
    assert!(!store.record_delivery(&a, &ids[0], 301).await.unwrap());
    let completed = |id: &str| Event::CommandCompleted {
        command_id: id.to_string(),
        status: CommandStatus::Success,
        response: Some(ok_response()),
        error: None,
    };
    let mut t = transition(
        &[CommandStatus::Sent, CommandStatus::Delivered],
        CommandStatus::Success,
        "SUCCESS",
        400,
    );
    t.events = vec![
        Event::CommandPor {
            command_id: ids[0].clone(),
            por_status: Some("00".into()),
            counter: 7,
        },
        completed(&ids[0]),
    ];
    assert!(store.transition(&a, &ids[0], &t).await.unwrap());
    // Refused (already SUCCESS): its events are not written.
    assert!(!store.transition(&a, &ids[0], &t).await.unwrap());
    t.events = vec![completed(&ids[1])];
    assert!(store.transition(&a, &ids[1], &t).await.unwrap());
    store
        .append_events(&[
            OutboxEvent {
                account_id: a.clone(),
                event: Event::CampaignRunning {
                    campaign_id: 9,
                    iteration: 1,
                },
                at: 500,
            },
            OutboxEvent {
                account_id: quiet.clone(),
                event: Event::CampaignRunning {
                    campaign_id: 10,
                    iteration: 1,
                },
                at: 500,
            },
        ])
        .await
        .unwrap();
    assert_eq!(store.outbox_len().await.unwrap(), 5);

    // The first claim: the oldest event of each key only.
    let first = store
        .claim_outbox("g1", 1_000, 2_000, 100, &[])
        .await
        .unwrap();
    let names: Vec<(&str, &str)> = first
        .iter()
        .map(|r| {
            (
                r.event.as_str(),
                r.data["commandId"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("command.delivered", ids[0].as_str()),
            ("command.completed", ids[1].as_str()),
            ("campaign.running", "-"),
        ]
    );
    assert_eq!(first[0].data, serde_json::json!({"commandId": ids[0]}));
    assert_eq!(first[0].at, 300);
    assert_eq!(first[0].account_id, a);
    // Another gateway gets nothing: the heads are leased, the rest wait behind them.
    assert!(store
        .claim_outbox("g2", 1_000, 2_000, 100, &[])
        .await
        .unwrap()
        .is_empty());
    // Skipping the account leaves nothing either.
    assert!(store
        .claim_outbox("g1", 1_000, 2_000, 100, std::slice::from_ref(&a))
        .await
        .unwrap()
        .is_empty());
    // The delivered event done: the PoR is next for that command, then the completion.
    assert_eq!(store.finish_outbox("g1", &[first[0].seq]).await.unwrap(), 1);
    // Not g2's to finish.
    assert_eq!(store.finish_outbox("g2", &[first[1].seq]).await.unwrap(), 0);
    let next = store
        .claim_outbox("g1", 1_000, 2_000, 100, &[])
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].event, "command.por");
    assert_eq!(next[0].data["counter"], 7);
    // g1 dies; its lease ends at 2,000: g2 takes the same events, with the same ids.
    let taken = store
        .claim_outbox("g2", 2_001, 50_000, 100, &[])
        .await
        .unwrap();
    let mut was: Vec<(i64, String)> = first[1..]
        .iter()
        .chain(next.iter())
        .map(|r| (r.seq, r.id.clone()))
        .collect();
    was.sort();
    let now: Vec<(i64, String)> = taken.iter().map(|r| (r.seq, r.id.clone())).collect();
    assert_eq!(now, was);
    // g1's late finish deletes nothing that is g2's now.
    assert_eq!(store.finish_outbox("g1", &[next[0].seq]).await.unwrap(), 0);
    // A release delays a row until its time.
    assert_eq!(
        store
            .release_outbox("g2", &[next[0].seq], 5_000)
            .await
            .unwrap(),
        1
    );
    assert!(store
        .claim_outbox("g1", 4_000, 9_000, 100, &[])
        .await
        .unwrap()
        .is_empty());
    let again = store
        .claim_outbox("g1", 5_001, 9_000, 100, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id, next[0].id);
    // Renewal keeps a lease.
    assert_eq!(store.renew_outbox("g1", 20_000).await.unwrap(), 1);
    assert!(store
        .claim_outbox("g2", 10_000, 30_000, 100, &[])
        .await
        .unwrap()
        .is_empty());
    let seqs: Vec<i64> = taken.iter().map(|r| r.seq).collect();
    assert_eq!(store.finish_outbox("g2", &seqs).await.unwrap(), 2);
    assert_eq!(store.finish_outbox("g1", &[again[0].seq]).await.unwrap(), 1);
    let last = store
        .claim_outbox("g1", 10_000, 30_000, 100, &[])
        .await
        .unwrap();
    assert_eq!(last.len(), 1);
    assert_eq!(last[0].event, "command.completed");
    assert_eq!(last[0].data["commandId"], ids[0].as_str());
    assert_eq!(last[0].data["response"]["porStatus"], "00");
    store.finish_outbox("g1", &[last[0].seq]).await.unwrap();
    assert_eq!(store.outbox_len().await.unwrap(), 0);
}

/// Group commit: writes made at once share transactions, yet each caller gets its own answer:
/// a duplicate insert among many fails alone (the others are stored), concurrent counter
/// reservations are all distinct and contiguous, and what was answered is stored.
async fn grouped_writes_answer_each_caller(b: Backend) {
    let db = TestDb::new(b).await;
    let store = Arc::new(db.open().await);
    let a = account(&store, "g").await;
    store.insert_cards(&a, &[card(&iccid(1))], 1).await.unwrap();
    store.insert_command(&command(&a, "dup", 1)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            // Every 50th is the duplicate.
            let id = if i % 50 == 0 {
                "dup".to_string()
            } else {
                format!("g{i:03}")
            };
            let inserted = store.insert_command(&command(&a, &id, 10)).await;
            let counter = store.reserve_counter(&iccid(1), 1).await;
            (id, inserted, counter)
        }));
    }
    let mut counters = Vec::new();
    let mut duplicates = 0;
    for t in tasks {
        let (id, inserted, counter) = t.await.unwrap();
        match inserted {
            Ok(()) => assert!(store.command(&a, &id).await.unwrap().is_some(), "{id}"),
            Err(StoreError::Duplicate { key, .. }) => {
                assert_eq!(key, "dup");
                duplicates += 1;
            }
            Err(e) => panic!("{id}: {e}"),
        }
        counters.push(counter.unwrap());
    }
    assert_eq!(duplicates, 4);
    counters.sort_unstable();
    let first = counters[0];
    assert_eq!(counters, (first..first + 200).collect::<Vec<_>>());
    // The key set's counter is the last one handed out.
    assert_eq!(
        store.key_set(&iccid(1), 1).await.unwrap().unwrap().counter,
        first + 199
    );
}

/// Many commands' writes at once, so that they share group commits: each command's events
/// come back in the order its writes were answered, and the outbox holds the events of the
/// account with a webhook only, one per delivery report (the multi-row appends at the end of
/// each group).
async fn grouped_events_keep_each_commands_order(b: Backend) {
    use otagw::store::OutboxStore;
    let db = TestDb::new(b).await;
    let store = Arc::new(db.open().await);
    let hooked = account(&store, "hooked").await;
    let quiet = account(&store, "quiet").await;
    store
        .add_webhook(&Webhook {
            id: "wh".into(),
            account_id: hooked.clone(),
            url: "https://hooks.example.invalid/x".into(),
            secret: vec![1],
            events: Vec::new(),
        })
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..120 {
        let store = store.clone();
        let a = if i % 2 == 0 {
            hooked.clone()
        } else {
            quiet.clone()
        };
        tasks.push(tokio::spawn(async move {
            let id = format!("e{i:03}");
            store.insert_command(&command(&a, &id, 10)).await.unwrap();
            for step in 0..3 {
                store
                    .add_event(&a, &id, "NOTE", &format!("step {step}"), 20 + step)
                    .await
                    .unwrap();
            }
            assert!(store.claim_commands("gw", 200, 30, 10_000).await.is_ok());
            (a, id)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    store.claim_commands("gw", 200, 30, 10_000).await.unwrap();
    let mut hooked_delivered = 0;
    for (a, id) in &ids {
        assert!(store.record_send(a, id, "gw", 40).await.unwrap(), "{id}");
    }
    let mut tasks = Vec::new();
    for (a, id) in ids.clone() {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.record_delivery(&a, &id, 50).await.unwrap()
        }));
    }
    for (t, (a, _)) in tasks.into_iter().zip(&ids) {
        assert!(t.await.unwrap());
        if *a == hooked {
            hooked_delivered += 1;
        }
    }
    for (a, id) in &ids {
        let (_, events) = store.command(a, id).await.unwrap().unwrap();
        let kinds: Vec<String> = events
            .iter()
            .map(|e| {
                if e.kind == "NOTE" {
                    e.detail.clone()
                } else {
                    e.kind.clone()
                }
            })
            .collect();
        assert_eq!(
            kinds,
            ["CREATED", "step 0", "step 1", "step 2", "SENT", "DELIVERED"],
            "{id}"
        );
    }
    assert_eq!(hooked_delivered, 60);
    assert_eq!(store.outbox_len().await.unwrap(), 60);
    let rows = store
        .claim_outbox("g1", 1_000, 2_000, 500, &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 60);
    assert!(rows
        .iter()
        .all(|r| r.account_id == hooked && r.event == "command.delivered"));
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await
                }
            )*
        }
    };
}

suite!(
    accounts_and_tokens,
    cards_all_or_none,
    keys_sealed_at_rest,
    counters,
    commands_basic,
    secure_send_transition,
    reroute_for_fallback,
    cancel,
    ended_among_finds_the_commands_that_ended,
    concurrent_terminal_transitions,
    concurrent_claims,
    leases_and_order,
    awaiting_por,
    expiry,
    batches,
    webhooks_and_applets,
    stats,
    persistence_across_reopen,
    delivery_reports,
    key_update_applies_with_its_transition,
    one_gateway_per_card,
    profiles_and_accounts,
    existing_iccids_in_batches,
    provisioning_all_or_none,
    profile_cards_matching,
    card_groups_create_and_page,
    scp81_psk_keys_sealed_and_unique,
    scp81_chunks_answered_once,
    scp81_chunk_kind_added_to_an_old_table,
    token_ids_and_webhook_events_added_to_old_tables,
    master_key_checked_at_open,
    cards_searched_updated_deleted,
    outbox_written_with_changes_and_claimed_in_order,
    grouped_writes_answer_each_caller,
    grouped_events_keep_each_commands_order,
);

#[tokio::test]
async fn sqlite_in_memory() {
    let store = SqlStore::connect("sqlite::memory:", master())
        .await
        .unwrap();
    assert_eq!(store.backend(), "sqlite");
    let a = account(&store, "a").await;
    store.insert_cards(&a, &[card(&iccid(1))], 1).await.unwrap();
    assert_eq!(store.reserve_counter(&iccid(1), 1).await.unwrap(), 1);
    store.insert_command(&command(&a, "m", 1)).await.unwrap();
    assert_eq!(
        store.claim_commands("gw", 5, 2, 100).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn bad_urls_are_explained() {
    let missing = std::env::temp_dir()
        .join(format!("otagw-missing-{}", uuid::Uuid::new_v4().simple()))
        .join("otagw.db");
    let err = SqlStore::connect(&format!("sqlite://{}", missing.display()), master())
        .await
        .unwrap_err();
    let parent = missing.parent().unwrap().display().to_string();
    assert!(err.to_string().contains(&parent), "{err}");
    assert!(matches!(
        SqlStore::connect("mysql://localhost/x", master()).await,
        Err(StoreError::Invalid { .. })
    ));
}

/// Bulk provisioning: 20,000 cards with one key set each into SQLite in one call (the
/// multi-row insert path, across many statements), all readable afterwards. Its speed is a
/// benchmark matter (issue 5's provisioning benchmark), not asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_provisioning_sqlite() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = db.open().await;
    let a = account(&store, "bulk").await;
    let n = 20_000u64;
    let cards: Vec<NewCard> = (0..n).map(|i| card(&iccid(i))).collect();
    store.insert_cards(&a, &cards, 1).await.unwrap();
    for i in [0, n / 2, n - 1] {
        assert_eq!(
            store.key_set(&iccid(i), 1).await.unwrap().unwrap().keys,
            keys(1)
        );
    }
    // One duplicate among the next batch: nothing of it is written.
    let mut more: Vec<NewCard> = (n..n + 500).map(|i| card(&iccid(i))).collect();
    more.push(card(&iccid(7)));
    assert!(matches!(
        store.insert_cards(&a, &more, 2).await,
        Err(StoreError::Duplicate { .. })
    ));
    assert!(store.card(&a, &iccid(n)).await.unwrap().is_none());
}
