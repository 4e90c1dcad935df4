//! A card's subscriptions as the gateway has them and as the virtual card has them, in one
//! shape, for comparing the two.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::BTreeSet;

use otagw::sim::Fleet;
use serde_json::Value;

/// (id, IMSI, enabled, fallback) of each subscription.
pub type Registry = BTreeSet<(u64, String, bool, bool)>;

/// The registry in a `GET /api/v1/cards/{iccid}/subscriptions` body.
pub fn server_registry(body: &Value) -> Registry {
    body["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|s| {
            (
                s["id"].as_u64().expect("id"),
                s["imsi"].as_str().expect("imsi").to_string(),
                s["enabled"].as_bool().expect("enabled"),
                s["fallback"].as_bool().expect("fallback"),
            )
        })
        .collect()
}

/// The same, read on the virtual card (empty when its application was never used).
pub fn card_registry(fleet: &Fleet, iccid: &str) -> Registry {
    fleet
        .with_card_by_iccid(iccid, |c| {
            c.subscriptions()
                .map(|app| {
                    app.subscriptions()
                        .iter()
                        .map(|s| (u64::from(s.id), s.imsi.clone(), s.enabled, s.fallback))
                        .collect()
                })
                .unwrap_or_default()
        })
        .expect("card")
}

/// A card group `name` of the devkit's provisioned profile holding `iccids`; its id.
pub async fn card_group(env: &otagw::devkit::DevEnv, name: &str, iccids: &[&str]) -> i64 {
    let (profile, _) = env.fleet_group.expect("a provisioned fleet");
    let (code, group) = env
        .post(
            "/api/v1/cardgroups",
            &serde_json::json!({"profileId": profile, "name": name, "iccids": iccids}),
        )
        .await
        .expect("POST cardgroups");
    assert_eq!(code, 201, "{group}");
    group["id"].as_i64().expect("group id")
}
