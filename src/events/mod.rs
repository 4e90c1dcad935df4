//! What the gateway tells integrators: typed events, written to the store's outbox in the same
//! transaction as the state change they report, and delivered from there to webhooks by
//! [`crate::delivery::outbox::OutboxWorker`] (at least once, in order per command or
//! campaign, surviving restarts, shared by several gateways on one PostgreSQL).
//!
//! A stored event is its name, its ordering key (`command:<id>` or `campaign:<id>`) and its
//! JSON `data`, exactly the body's `data` a webhook receives.

use serde_json::{json, Map, Value};

use crate::command::{CardResponse, CommandError, CommandStatus};

/// Event names (the `event` field and the `X-Otagw-Event` header).
pub mod names {
    /// The gateway accepted the command (it passed validation and was stored).
    pub const COMMAND_ACCEPTED: &str = "command.accepted";
    /// The network reported the command's message delivered to the card.
    pub const COMMAND_DELIVERED: &str = "command.delivered";
    /// The card's proof of receipt arrived.
    pub const COMMAND_POR: &str = "command.por";
    /// The command reached a terminal status.
    pub const COMMAND_COMPLETED: &str = "command.completed";
    /// A campaign started (or resumed) running.
    pub const CAMPAIGN_RUNNING: &str = "campaign.running";
    /// Progress of a campaign (batch).
    pub const CAMPAIGN_PROGRESS: &str = "campaign.progress";
    /// A campaign finished its cards.
    pub const CAMPAIGN_COMPLETED: &str = "campaign.completed";
    /// A campaign was stopped or could not go on.
    pub const CAMPAIGN_TERMINATED: &str = "campaign.terminated";

    /// A subscription was installed on a card.
    pub const SUBSCRIPTION_DOWNLOADED: &str = "subscription.downloaded";
    /// A card switched to the subscription asked for (its notification says so).
    pub const SUBSCRIPTION_ENABLED: &str = "subscription.enabled";
    /// A subscription was deleted from a card.
    pub const SUBSCRIPTION_DELETED: &str = "subscription.deleted";
    /// The fallback attribute moved.
    pub const SUBSCRIPTION_FALLBACK: &str = "subscription.fallback";
    /// A switch did not attach: the card went back (or to its fallback).
    pub const SUBSCRIPTION_ROLLED_BACK: &str = "subscription.rolled_back";
    /// A card's stored registry may be wrong: an audit will repair it.
    pub const CARD_DIRTY: &str = "card.dirty";
    /// A card's registry was read back (it is SYNCED).
    pub const CARD_AUDITED: &str = "card.audited";

    /// Every event the gateway publishes: what a webhook's `events` filter may name.
    /// ([`COMMAND_ACCEPTED`] is not published yet, so not offered.)
    pub const PUBLISHED: [&str; 14] = [
        COMMAND_DELIVERED,
        COMMAND_POR,
        COMMAND_COMPLETED,
        CAMPAIGN_RUNNING,
        CAMPAIGN_PROGRESS,
        CAMPAIGN_COMPLETED,
        CAMPAIGN_TERMINATED,
        SUBSCRIPTION_DOWNLOADED,
        SUBSCRIPTION_ENABLED,
        SUBSCRIPTION_DELETED,
        SUBSCRIPTION_FALLBACK,
        SUBSCRIPTION_ROLLED_BACK,
        CARD_DIRTY,
        CARD_AUDITED,
    ];
}

/// One thing that happened, as integrators see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The SMSC (or the CAT_TP link) confirmed delivery to the card.
    CommandDelivered { command_id: String },
    /// The card's PoR arrived.
    CommandPor {
        command_id: String,
        por_status: Option<String>,
        counter: u64,
    },
    /// The command reached a terminal status.
    CommandCompleted {
        command_id: String,
        status: CommandStatus,
        response: Option<CardResponse>,
        error: Option<CommandError>,
    },
    /// A campaign started or resumed running.
    CampaignRunning { campaign_id: i64, iteration: i64 },
    /// A campaign's per-state totals so far (`totals` is the tally's JSON object).
    CampaignProgress {
        campaign_id: i64,
        iteration: i64,
        totals: Map<String, Value>,
    },
    /// A campaign finished its cards; `cards` counts them per state.
    CampaignCompleted {
        campaign_id: i64,
        iteration: i64,
        cards: Map<String, Value>,
    },
    /// A campaign was stopped or could not go on.
    CampaignTerminated {
        campaign_id: i64,
        iteration: i64,
        reason: Option<String>,
        cards: Option<Map<String, Value>>,
    },
    /// Something happened to a card's subscriptions (`name` is one of the `subscription.*`
    /// and `card.*` names); `data` carries `iccid`, `operationId` when an operation did it,
    /// and what the event is about.
    Card {
        name: &'static str,
        iccid: String,
        data: Map<String, Value>,
    },
}

impl Event {
    /// The event's name (see [`names`]).
    pub fn name(&self) -> &'static str {
        match self {
            Event::CommandDelivered { .. } => names::COMMAND_DELIVERED,
            Event::CommandPor { .. } => names::COMMAND_POR,
            Event::CommandCompleted { .. } => names::COMMAND_COMPLETED,
            Event::CampaignRunning { .. } => names::CAMPAIGN_RUNNING,
            Event::CampaignProgress { .. } => names::CAMPAIGN_PROGRESS,
            Event::CampaignCompleted { .. } => names::CAMPAIGN_COMPLETED,
            Event::CampaignTerminated { .. } => names::CAMPAIGN_TERMINATED,
            Event::Card { name, .. } => name,
        }
    }

    /// Events with the same key are delivered in the order they were written.
    pub fn key(&self) -> String {
        match self {
            Event::CommandDelivered { command_id }
            | Event::CommandPor { command_id, .. }
            | Event::CommandCompleted { command_id, .. } => format!("command:{command_id}"),
            Event::CampaignRunning { campaign_id, .. }
            | Event::CampaignProgress { campaign_id, .. }
            | Event::CampaignCompleted { campaign_id, .. }
            | Event::CampaignTerminated { campaign_id, .. } => format!("campaign:{campaign_id}"),
            Event::Card { iccid, .. } => format!("card:{iccid}"),
        }
    }

    /// The body's `data`.
    pub fn data(&self) -> Value {
        match self {
            Event::CommandDelivered { command_id } => json!({"commandId": command_id}),
            Event::CommandPor {
                command_id,
                por_status,
                counter,
            } => json!({"commandId": command_id, "porStatus": por_status, "counter": counter}),
            Event::CommandCompleted {
                command_id,
                status,
                response,
                error,
            } => json!({
                "commandId": command_id,
                "status": status,
                "response": response,
                "error": error,
            }),
            Event::CampaignRunning {
                campaign_id,
                iteration,
            } => json!({"campaignId": campaign_id, "iteration": iteration}),
            Event::CampaignProgress {
                campaign_id,
                iteration,
                totals,
            } => {
                let mut data = totals.clone();
                data.insert("campaignId".into(), (*campaign_id).into());
                data.insert("iteration".into(), (*iteration).into());
                Value::Object(data)
            }
            Event::CampaignCompleted {
                campaign_id,
                iteration,
                cards,
            } => json!({"campaignId": campaign_id, "iteration": iteration, "cards": cards}),
            Event::CampaignTerminated {
                campaign_id,
                iteration,
                reason,
                cards,
            } => {
                let mut data = json!({"campaignId": campaign_id, "iteration": iteration});
                if let Some(reason) = reason {
                    data["reason"] = reason.as_str().into();
                }
                if let Some(cards) = cards {
                    data["cards"] = Value::Object(cards.clone());
                }
                data
            }
            Event::Card { iccid, data, .. } => {
                let mut out = data.clone();
                out.insert("iccid".into(), iccid.as_str().into());
                Value::Object(out)
            }
        }
    }
}

/// An event for one account's webhooks, as handed to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Whose webhooks get it.
    pub account_id: String,
    /// What happened.
    pub event: Event,
    /// When, ms since the Unix epoch (the body's `timestamp`).
    pub at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_events_share_a_key_and_carry_the_documented_data() {
        let delivered = Event::CommandDelivered {
            command_id: "c1".into(),
        };
        let completed = Event::CommandCompleted {
            command_id: "c1".into(),
            status: CommandStatus::Success,
            response: None,
            error: None,
        };
        assert_eq!(delivered.key(), completed.key());
        assert_eq!(completed.name(), "command.completed");
        assert_eq!(
            completed.data(),
            json!({"commandId": "c1", "status": "SUCCESS", "response": null, "error": null})
        );
        let progress = Event::CampaignProgress {
            campaign_id: 7,
            iteration: 1,
            totals: json!({"por_ok": 3})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        assert_eq!(
            progress.data(),
            json!({"por_ok": 3, "campaignId": 7, "iteration": 1})
        );
        assert_ne!(progress.key(), delivered.key());
    }
}
