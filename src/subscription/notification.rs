//! The card's notifications after a switch, and operations whose notification never came.
//!
//! A notification is a command packet the card sends to [`TAR_SUBSCRIPTIONS`] (see
//! `sim::card::VirtualCard::notification_user_data`), verified with the card's key set. The
//! expected one (the next sequence number, while an ENABLE is in flight) settles the
//! operation; a repeat is confirmed again; any other makes the card DIRTY.

use serde_json::json;

use super::{card_event, settled, snapshot, RouterError, SecureRouter};
use crate::events::names;
use crate::gateway::CardPacket;
use crate::script::subscription::{Notification, SwitchOutcome, TAR_SUBSCRIPTIONS};
use crate::security::CommandPacketView;
use crate::store::subscriptions::{
    Applied, OperationRecord, OperationUpdate, RouterChange, StoredSubscription, SyncState,
    TrailEntry,
};

/// A notification taken: what it changes (nothing for a repeat) and the confirmation due.
struct Taken {
    change: Option<RouterChange>,
    confirm: (String, String, u16),
}

/// Why a card's packet was not taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("no card has MSISDN {0}")]
    UnknownCard(String),
    #[error("TAR {0} is not the Secure Router's")]
    OtherTar(String),
    #[error("card {iccid}: {problem}")]
    Unverified { iccid: String, problem: String },
}

impl SecureRouter {
    /// Packets cards sent on their own, taken side by side and written in one transaction
    /// (one packet per card at a time: a card's later ones wait for the next round). Each
    /// acknowledgement goes when its packet is dropped, asked again later if the store failed.
    pub(super) async fn on_card_packets(&self, mut packets: Vec<CardPacket>) {
        while !packets.is_empty() {
            let mut seen = std::collections::HashSet::new();
            let (wave, later): (Vec<CardPacket>, Vec<CardPacket>) = packets
                .into_iter()
                .partition(|p| seen.insert(p.from.trim_start_matches('+').to_string()));
            packets = later;
            if let Err(e) = self.take_wave(&wave).await {
                tracing::warn!("{} card packets not recorded: {e}", wave.len());
                for p in &wave {
                    p.ack.retry_later();
                }
            }
        }
    }

    async fn take_wave(&self, wave: &[CardPacket]) -> Result<(), RouterError> {
        let mut taken = Vec::with_capacity(wave.len());
        for chunk in wave.chunks(32) {
            for (p, r) in chunk
                .iter()
                .zip(futures::future::join_all(chunk.iter().map(|p| self.take(p))).await)
            {
                match r? {
                    Ok(t) => taken.push(t),
                    Err(refused) => {
                        tracing::warn!(from = %p.from, "card packet refused: {refused}")
                    }
                }
            }
        }
        let changes: Vec<RouterChange> = taken.iter().filter_map(|t| t.change.clone()).collect();
        let mut applied = self.subs()?.apply_all(&changes).await?.into_iter();
        let mut confirms = Vec::new();
        for t in taken {
            // A repeat is confirmed again; a new one once written (else the card sends it
            // again and it is taken then).
            let written = match t.change {
                None => true,
                Some(_) => applied.next() == Some(Applied::Done),
            };
            if written {
                confirms.push(t.confirm);
            }
        }
        for chunk in confirms.chunks(32) {
            futures::future::join_all(
                chunk
                    .iter()
                    .map(|(account, iccid, seq)| self.confirm(account, iccid, *seq)),
            )
            .await;
        }
        Ok(())
    }

    async fn take(&self, p: &CardPacket) -> Result<Result<Taken, Refused>, RouterError> {
        let msisdn = p.from.trim_start_matches('+');
        let candidates = self.subs()?.cards_by_msisdn(msisdn).await?;
        if candidates.is_empty() {
            return Ok(Err(Refused::UnknownCard(msisdn.to_string())));
        }
        let view = match CommandPacketView::parse(&p.packet) {
            Ok(v) => v,
            Err(e) => {
                return Ok(Err(Refused::Unverified {
                    iccid: candidates[0].1.clone(),
                    problem: e.to_string(),
                }))
            }
        };
        if view.tar != TAR_SUBSCRIPTIONS {
            return Ok(Err(Refused::OtherTar(hex::encode_upper(view.tar))));
        }
        if view.spi.integrity == crate::security::Integrity::None {
            return Ok(Err(Refused::Unverified {
                iccid: candidates[0].1.clone(),
                problem: "a notification must carry a CC".into(),
            }));
        }
        // An MSISDN may be on cards of several accounts (one re-provisioned elsewhere): the
        // card is the one whose keys verify the packet.
        let mut refused = None;
        for (account_id, iccid) in candidates {
            match self.open_notification(&iccid, &view).await? {
                Ok(n) => return Ok(Ok(self.notification(&account_id, &iccid, n).await?)),
                Err(problem) => {
                    refused.get_or_insert(Refused::Unverified { iccid, problem });
                }
            }
        }
        Ok(Err(refused.unwrap_or_else(|| {
            Refused::UnknownCard(msisdn.to_string())
        })))
    }

    /// The notification in `view`, verified and deciphered with card `iccid`'s keys, or why
    /// not.
    async fn open_notification(
        &self,
        iccid: &str,
        view: &CommandPacketView<'_>,
    ) -> Result<Result<Notification, String>, RouterError> {
        let kic_set = self.store.key_set(iccid, view.kic.version()).await?;
        let kid_set = if view.kid.version() == view.kic.version() {
            kic_set.clone()
        } else {
            self.store.key_set(iccid, view.kid.version()).await?
        };
        let (Some(kic_set), Some(kid_set)) = (kic_set, kid_set) else {
            return Ok(Err(format!(
                "no key set version {} / {}",
                view.kic.version(),
                view.kid.version()
            )));
        };
        let keys = match crate::pipeline::resolve::scp80_keys(
            &view.spi, view.kic.0, view.kid.0, &kic_set, &kid_set,
        ) {
            Ok(k) => k,
            Err(e) => return Ok(Err(e.to_string())),
        };
        // Verified: the CC (the caller made sure there is one) must match the card's key.
        let opened = match view.open(&keys) {
            Ok(o) => o,
            Err(e) => return Ok(Err(e.to_string())),
        };
        Ok(Notification::decode(&opened.data).map_err(|e| e.to_string()))
    }

    /// What a notification changes, and its confirmation.
    async fn notification(
        &self,
        account_id: &str,
        iccid: &str,
        n: Notification,
    ) -> Result<Taken, RouterError> {
        let known = self.registry_of(account_id, iccid).await?;
        let now = self.now();
        let last = known.sync.last_seq;
        // Sequence numbers wrap at 2^16: "not after the last" is within half the range.
        let behind = n.seq.wrapping_sub(last);
        if behind == 0 || behind >= 0x8000 {
            tracing::debug!(%iccid, seq = n.seq, last, "notification repeated: confirmed again");
            return Ok(Taken {
                change: None,
                confirm: (account_id.to_string(), iccid.to_string(), n.seq),
            });
        }
        let op = match &known.sync.operation_id {
            Some(id) => self.subs()?.operation(account_id, id).await?,
            None => None,
        };
        let switching = op.as_ref().filter(|o| {
            matches!(o.state.as_str(), "SENT" | "AWAITING_NOTIFICATION")
                && (o.kind == "ENABLE"
                    || (o.kind == "DOWNLOAD" && o.params["enable"].as_bool() == Some(true)))
        });
        let mut registry = known.subscriptions.clone();
        if let Some(o) = switching.filter(|o| o.kind == "DOWNLOAD" && o.state == "SENT") {
            // The notification overtook the download's PoR: the subscription is there.
            add_downloaded(&mut registry, o);
        }
        let known_id = registry.iter().any(|s| s.id == n.enabled);
        if known_id {
            registry
                .iter_mut()
                .for_each(|s| s.enabled = s.id == n.enabled);
        }
        let expected = switching.is_some() && behind == 1 && known_id;
        // A report with no switch on the subscription the server has as enabled agrees with
        // the registry: taken, not DIRTY. From a card the router never touched it may start
        // its bootstrap (a group rule with the `notification` trigger).
        let report = !expected
            && switching.is_none()
            && n.outcome == SwitchOutcome::None
            && behind == 1
            && known
                .subscriptions
                .iter()
                .any(|s| s.enabled && s.id == n.enabled);
        let planned = report
            && known.implied
            && self
                .subs()?
                .plan_on_report(account_id, iccid, now)
                .await?
                .is_some();
        let outcome = n.outcome.as_str();
        let (sync, op_state, what) = if report {
            let mut sync = settled(&known.sync, SyncState::Synced, "", now);
            sync.last_seq = n.seq;
            let what = if planned {
                "NOTIFICATION report: bootstrap planned"
            } else {
                "NOTIFICATION report"
            };
            (sync, "DONE", what.to_string())
        } else if expected {
            let mut sync = settled(&known.sync, SyncState::Synced, "", now);
            sync.last_seq = n.seq;
            let asked = switching.and_then(|o| o.sub_id);
            let op_state = if n.outcome == SwitchOutcome::Switched && asked == Some(n.enabled) {
                "DONE"
            } else {
                "FAILED"
            };
            (sync, op_state, format!("NOTIFICATION {outcome}"))
        } else {
            let reason = if !known_id {
                format!(
                    "notification {} names unknown subscription {}",
                    n.seq, n.enabled
                )
            } else if switching.is_none() {
                format!("notification {} unexpected (no switch asked)", n.seq)
            } else {
                format!("notification {} skips from {last}", n.seq)
            };
            let mut sync = settled(&known.sync, SyncState::Dirty, &reason, now);
            sync.last_seq = n.seq;
            (
                sync,
                "FAILED",
                format!("NOTIFICATION {outcome}: card DIRTY"),
            )
        };
        let op_id = switching.map(|o| o.id.as_str());
        let mut events = Vec::new();
        if let Some(o) = switching.filter(|o| o.kind == "DOWNLOAD" && o.state == "SENT") {
            events.push(card_event(
                names::SUBSCRIPTION_DOWNLOADED,
                iccid,
                op_id,
                json!({ "subscriptionId": o.sub_id, "imsi": o.params["imsi"] }),
            ));
        }
        if expected && op_state == "DONE" {
            events.push(card_event(
                names::SUBSCRIPTION_ENABLED,
                iccid,
                op_id,
                json!({ "subscriptionId": n.enabled, "imsi": n.imsi }),
            ));
        } else if expected {
            events.push(card_event(
                names::SUBSCRIPTION_ROLLED_BACK,
                iccid,
                op_id,
                json!({
                    "outcome": outcome,
                    "asked": switching.and_then(|o| o.sub_id),
                    "enabled": n.enabled,
                    "imsi": n.imsi,
                }),
            ));
        } else if !report && known.sync.state != SyncState::Dirty {
            events.push(card_event(
                names::CARD_DIRTY,
                iccid,
                op_id,
                json!({ "reason": sync.reason }),
            ));
        }
        let answer = format!(
            "seq {} {outcome}, enabled {} (IMSI {})",
            n.seq, n.enabled, n.imsi
        );
        let change = RouterChange {
            iccid: iccid.to_string(),
            account_id: account_id.to_string(),
            operation: switching.map(|o| OperationUpdate {
                id: o.id.clone(),
                from: vec!["SENT", "AWAITING_NOTIFICATION"],
                state: op_state,
                result: json!({
                    "notification": {
                        "seq": n.seq,
                        "outcome": outcome,
                        "enabled": n.enabled,
                        "imsi": n.imsi,
                    },
                    "previous": o.result,
                }),
                deadline: None,
                at: now,
            }),
            start: None,
            trail: Some(TrailEntry {
                seq: 0,
                at: now,
                what,
                who: "card".into(),
                operation_id: switching.map(|o| o.id.clone()),
                answer,
                before: known.snapshot(),
                after: snapshot(&registry, &sync),
            }),
            registry: Some(registry),
            sync: Some(sync.clone()),
            events,
            plan: None,
            at: now,
        };
        tracing::debug!(%iccid, seq = n.seq, outcome, sync = sync.state.as_str(), "subscription notification");
        Ok(Taken {
            change: Some(change),
            confirm: (account_id.to_string(), iccid.to_string(), n.seq),
        })
    }

    /// Operations whose notification did not come by their deadline: the card is DIRTY.
    pub(super) async fn settle_overdue(&self) -> Result<usize, RouterError> {
        let now = self.now();
        let overdue = self.subs()?.overdue(now, 200).await?;
        let n = overdue.len();
        for op in overdue {
            let known = self.registry_of(&op.account_id, &op.iccid).await?;
            let reason = format!("no notification for {} {} by its deadline", op.kind, op.id);
            let sync = settled(&known.sync, SyncState::Dirty, &reason, now);
            let change = RouterChange {
                iccid: op.iccid.clone(),
                account_id: op.account_id.clone(),
                operation: Some(OperationUpdate {
                    id: op.id.clone(),
                    from: vec!["AWAITING_NOTIFICATION"],
                    state: "FAILED",
                    result: json!({ "outcome": "unknown", "reason": reason, "previous": op.result }),
                    deadline: None,
                    at: now,
                }),
                start: None,
                trail: Some(TrailEntry {
                    seq: 0,
                    at: now,
                    what: "NOTIFICATION missing: card DIRTY".into(),
                    who: "router".into(),
                    operation_id: Some(op.id.clone()),
                    answer: String::new(),
                    before: known.snapshot(),
                    after: snapshot(&known.subscriptions, &sync),
                }),
                registry: None,
                events: if known.sync.state == SyncState::Dirty {
                    Vec::new()
                } else {
                    vec![card_event(
                        names::CARD_DIRTY,
                        &op.iccid,
                        Some(&op.id),
                        json!({ "reason": reason }),
                    )]
                },
                sync: Some(sync),
                plan: None,
                at: now,
            };
            if self.subs()?.apply(&change).await? == Applied::Done {
                tracing::warn!(iccid = %op.iccid, operation = %op.id, "{reason}: card DIRTY");
            }
        }
        Ok(n)
    }
}

/// The subscription a DOWNLOAD operation installs, added to `registry` (not enabled).
pub(super) fn add_downloaded(registry: &mut Vec<StoredSubscription>, op: &OperationRecord) {
    let Some(id) = op.sub_id else {
        return;
    };
    if registry.iter().any(|s| s.id == id) {
        return;
    }
    let p = &op.params;
    let fallback = p["fallback"].as_bool().unwrap_or(false);
    if fallback {
        registry.iter_mut().for_each(|s| s.fallback = false);
    }
    registry.push(StoredSubscription {
        id,
        imsi: p["imsi"].as_str().unwrap_or_default().to_string(),
        enabled: false,
        fallback,
        bootstrap: false,
        template: p["template"].as_str().map(str::to_string),
    });
    registry.sort_by_key(|s| s.id);
}
