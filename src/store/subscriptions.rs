//! The Secure Router's records: each card's subscriptions as last known and its sync state,
//! the operations sent to cards, subscription templates and each card's audit trail.
//!
//! The store keeps what the router decides; every change of a card's registry, sync state,
//! operation and trail is one [`RouterChange`], written in one transaction and only if the
//! operation is still in the state the router read (two gateways never apply one result twice).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{CommandRecord, Millis, NewCommand, StoreError};

/// A card's sync state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SyncState {
    /// The stored registry is the card's.
    Synced,
    /// An operation is in flight (one per card at a time).
    Pending,
    /// The stored registry may not be the card's: operations wait for an audit.
    Dirty,
}

impl SyncState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "SYNCED",
            Self::Pending => "PENDING",
            Self::Dirty => "DIRTY",
        }
    }

    /// From the stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Synced, Self::Pending, Self::Dirty]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// A subscription as the server last knew it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredSubscription {
    /// Its id on the card (1..=255).
    pub id: u8,
    /// IMSI.
    pub imsi: String,
    /// Enabled (exactly one is).
    pub enabled: bool,
    /// Holds the fallback attribute.
    pub fallback: bool,
    /// A bootstrap subscription.
    pub bootstrap: bool,
    /// The template it was downloaded from, if the server downloaded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

impl StoredSubscription {
    /// As the factory installs it: slot 1 (the card's IMSI) enabled, the fallback and the
    /// bootstrap subscription; the other slots disabled (see `sim::subscriptions`).
    pub fn factory(id: u8, imsi: &str) -> Self {
        let first = id == 1;
        StoredSubscription {
            id,
            imsi: imsi.to_string(),
            enabled: first,
            fallback: first,
            bootstrap: first,
            template: None,
        }
    }
}

/// A card's sync record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    /// The state.
    pub state: SyncState,
    /// The operation in flight (PENDING) or the audit under way (DIRTY).
    pub operation_id: Option<String>,
    /// Why DIRTY (empty otherwise).
    pub reason: String,
    /// The last notification sequence number taken.
    pub last_seq: u16,
    /// Automatic audits tried since the card became DIRTY.
    pub audit_attempts: u32,
    /// When the next automatic audit may start (DIRTY).
    pub next_audit_at: Option<Millis>,
    /// Last change, ms.
    pub updated_at: Millis,
}

impl SyncRecord {
    /// A card the router never touched: SYNCED with what provisioning stored.
    pub fn never_touched() -> Self {
        SyncRecord {
            state: SyncState::Synced,
            operation_id: None,
            reason: String::new(),
            last_seq: 0,
            audit_attempts: 0,
            next_audit_at: None,
            updated_at: 0,
        }
    }
}

/// A card's registry as last known, with its sync record (`None` when the router never
/// touched the card: then its registry is the one provisioning implies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRegistry {
    /// Owner.
    pub account_id: String,
    /// ICCID.
    pub iccid: String,
    /// The card's IMSI as provisioned.
    pub imsi: Option<String>,
    /// The subscriptions (when `sync` is `None`: the factory registry provisioning stored,
    /// empty if the vendor file named only the IMSI).
    pub subscriptions: Vec<StoredSubscription>,
    /// The sync record.
    pub sync: Option<SyncRecord>,
}

/// A subscription template: un-personalised data a download completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionTemplate {
    /// Unique in the account (1 to 64 characters, not only spaces).
    #[schema(min_length = 1, max_length = 64, pattern = r"\S")]
    pub name: String,
    /// Service provider name (at most 16 printable ASCII characters).
    #[serde(default)]
    #[schema(pattern = r"^[\x20-\x7E]{0,16}$")]
    pub spn: String,
    /// PLMNs as MCC and MNC digits (`26201`, `310410`).
    #[serde(default)]
    #[schema(inline, value_type = Vec<PlmnText>)]
    pub plmns: Vec<String>,
}

/// A PLMN as MCC and MNC digits (5 or 6).
#[derive(utoipa::ToSchema)]
#[schema(pattern = "^[0-9]{5,6}$")]
#[allow(dead_code)]
pub struct PlmnText(String);

/// An operation on a card's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationRecord {
    /// Id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Card.
    pub iccid: String,
    /// `DOWNLOAD`, `ENABLE`, `DELETE`, `FALLBACK`, `AUDIT`.
    pub kind: String,
    /// The subscription it is about.
    pub sub_id: Option<u8>,
    /// What was asked (JSON).
    pub params: serde_json::Value,
    /// `SENT`, `AWAITING_NOTIFICATION`, `DONE`, `FAILED`.
    pub state: String,
    /// The command that carries it.
    pub command_id: String,
    /// Who asked (`token:...`, `user:...`, `router`).
    pub requested_by: String,
    /// What happened (JSON: the card's answers, the outcome).
    pub result: serde_json::Value,
    /// AWAITING_NOTIFICATION: the notification is due by then.
    pub deadline: Option<Millis>,
    /// Created, ms.
    pub created_at: Millis,
    /// Last change, ms.
    pub updated_at: Millis,
}

/// One entry of a card's audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailEntry {
    /// Its place (newest highest).
    pub seq: i64,
    /// When.
    pub at: Millis,
    /// What (`DOWNLOAD requested`, `NOTIFICATION`, `AUDIT`, `DIRTY`, ...).
    pub what: String,
    /// Who asked (`token:...`, `user:...`, `card`, `router`).
    pub who: String,
    /// The operation concerned.
    pub operation_id: Option<String>,
    /// The card's answer (status words, notification), for people.
    pub answer: String,
    /// State before (JSON: registry and sync state).
    pub before: serde_json::Value,
    /// State after.
    pub after: serde_json::Value,
}

/// A change of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationUpdate {
    /// The operation.
    pub id: String,
    /// Applied only if it is in one of these states now.
    pub from: Vec<&'static str>,
    /// New state.
    pub state: &'static str,
    /// New result.
    pub result: serde_json::Value,
    /// New deadline.
    pub deadline: Option<Millis>,
    /// When.
    pub at: Millis,
}

/// Everything one router decision changes, written at once.
#[derive(Debug, Clone, Default)]
pub struct RouterChange {
    /// The card.
    pub iccid: String,
    /// Its account.
    pub account_id: String,
    /// An operation's new state (the change is dropped if it moved on meanwhile).
    pub operation: Option<OperationUpdate>,
    /// A new operation and the command that carries it (the card must be SYNCED, or DIRTY
    /// for an audit, with no operation in flight: else [`Applied::Busy`]).
    pub start: Option<(OperationRecord, NewCommand)>,
    /// The registry, replaced whole.
    pub registry: Option<Vec<StoredSubscription>>,
    /// The sync record, replaced whole.
    pub sync: Option<SyncRecord>,
    /// A trail entry (its `seq` is assigned by the store).
    pub trail: Option<TrailEntry>,
    /// Webhook events, written to the outbox with the change.
    pub events: Vec<crate::events::Event>,
    /// A bootstrap plan's new state, written with the change.
    pub plan: Option<PlanUpdate>,
    /// When the change happened (the events' time).
    pub at: Millis,
}

/// A bootstrap plan's new state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanUpdate {
    /// Operations started so far.
    pub actions: u32,
    /// RUNNING, DONE or FAILED.
    pub state: &'static str,
    /// What happened last.
    pub detail: String,
}

/// What [`SubscriptionStore::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Written.
    Done,
    /// The operation was no longer in a `from` state: nothing written.
    Stale,
    /// A new operation could not start: the card's sync record as it is.
    Busy(Option<SyncRecord>),
}

/// What an account may do with another account's cards, granted per card group.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Read the subscriptions, the operations and the audit trail.
    View,
    /// Download, enable, delete subscriptions and move the fallback (needs `view` too).
    Manage,
    /// Start audits.
    Audit,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 3] = [Right::View, Right::Manage, Right::Audit];

    /// As stored and posted.
    pub fn as_str(self) -> &'static str {
        match self {
            Right::View => "view",
            Right::Manage => "manage",
            Right::Audit => "audit",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// A grant of rights on a card group to another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// The card group.
    pub group_id: i64,
    /// The account granted.
    pub grantee_id: String,
    /// Its name.
    pub grantee_name: String,
    /// The rights.
    pub rights: Vec<Right>,
    /// Granted, ms.
    pub created_at: Millis,
}

/// How an account reaches a card: its owner (every right), or through grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAccess {
    /// The account holding the card (its keys, commands and webhooks).
    pub owner_id: String,
    /// Whether the caller is the owner.
    pub owner: bool,
    /// The rights the caller has (all for the owner).
    pub rights: Vec<Right>,
}

/// One operational subscription a bootstrap rule gives each card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapSubscription {
    /// Its template.
    pub template: String,
    /// The first IMSI of its range (6 to 15 digits); the n-th card bootstrapped gets the
    /// n-th IMSI.
    #[schema(pattern = "^[0-9]{6,15}$")]
    pub imsi_first: String,
    /// How many IMSIs the range holds.
    #[schema(minimum = 1)]
    pub imsi_count: u64,
}

/// What becomes of a card's bootstrap subscription once it runs on an operational one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootstrapEnd {
    /// The fallback moves to the first operational subscription, then the bootstrap one is
    /// deleted.
    Delete,
    /// It stays, holding the fallback attribute.
    KeepAsFallback,
}

/// When a card's bootstrap starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BootstrapTrigger {
    /// As soon as the card is in the group (provisioned, or when the rule is set).
    Provisioning,
    /// When the card first reports on its bootstrap subscription (a notification with no
    /// switch from a card the router never touched).
    Notification,
}

impl BootstrapTrigger {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Notification => "notification",
        }
    }
}

/// A card group's bootstrap rule (`PUT /api/v1/cardgroups/{id}/rules`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BootstrapRule {
    /// The operational subscriptions, downloaded in order; the first is enabled.
    #[schema(min_items = 1, max_items = 7)]
    pub subscriptions: Vec<BootstrapSubscription>,
    /// What becomes of the bootstrap subscription.
    pub bootstrap: BootstrapEnd,
    /// When it starts.
    pub trigger: BootstrapTrigger,
}

/// A card's bootstrap plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRecord {
    /// The card.
    pub iccid: String,
    /// Its owner.
    pub account_id: String,
    /// The group whose rule it follows.
    pub group_id: i64,
    /// The IMSIs allocated to it, one per rule subscription.
    pub imsis: Vec<String>,
    /// Operations started for it so far.
    pub actions: u32,
    /// RUNNING, DONE or FAILED.
    pub state: String,
    /// What happened last.
    pub detail: String,
    /// Created, ms.
    pub created_at: Millis,
    /// Last change, ms.
    pub updated_at: Millis,
}

/// The `index`-th IMSI of a range starting at `first` (as many digits), `None` past them.
pub fn nth_imsi(first: &str, index: u64) -> Option<String> {
    let width = first.len();
    let value = first.parse::<u64>().ok()?.checked_add(index)?;
    let text = format!("{value:0width$}");
    (text.len() == width).then_some(text)
}

/// The Secure Router's store.
#[async_trait]
pub trait SubscriptionStore: Send + Sync {
    /// A card's registry and sync record (`None`: no such card in the account).
    async fn registry(
        &self,
        account_id: &str,
        iccid: &str,
    ) -> Result<Option<CardRegistry>, StoreError>;

    /// The cards whose MSISDN is `msisdn` (digits), in any account, as (account id, ICCID),
    /// newest first (at most a few: a number moved to a card of another account).
    async fn cards_by_msisdn(&self, msisdn: &str) -> Result<Vec<(String, String)>, StoreError>;

    /// Writes a router decision in one transaction.
    async fn apply(&self, change: &RouterChange) -> Result<Applied, StoreError>;

    /// Writes several decisions in one transaction (one commit for all): each is written
    /// whole or, when [`Applied::Stale`] or [`Applied::Busy`], not at all.
    async fn apply_all(&self, changes: &[RouterChange]) -> Result<Vec<Applied>, StoreError>;

    /// An operation.
    async fn operation(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<OperationRecord>, StoreError>;

    /// Operations in `SENT` whose command has ended, with the command (at most `limit`).
    async fn sent_and_ended(
        &self,
        limit: u32,
    ) -> Result<Vec<(OperationRecord, CommandRecord)>, StoreError>;

    /// Operations in `AWAITING_NOTIFICATION` past their deadline.
    async fn overdue(&self, now: Millis, limit: u32) -> Result<Vec<OperationRecord>, StoreError>;

    /// The operation of a card waiting for its notification, if any.
    async fn awaiting_notification(
        &self,
        iccid: &str,
    ) -> Result<Option<OperationRecord>, StoreError>;

    /// DIRTY cards with no audit under way whose next audit is due: (account, ICCID).
    async fn dirty_due(&self, now: Millis, limit: u32)
        -> Result<Vec<(String, String)>, StoreError>;

    /// A card's audit trail, newest first, before `before_seq` when given.
    async fn audit_trail(
        &self,
        account_id: &str,
        iccid: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TrailEntry>, StoreError>;

    /// Creates a template.
    async fn create_template(
        &self,
        account_id: &str,
        template: &SubscriptionTemplate,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// A template by name.
    async fn template(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<SubscriptionTemplate>, StoreError>;

    /// An account's templates, by name.
    async fn templates(&self, account_id: &str) -> Result<Vec<SubscriptionTemplate>, StoreError>;

    /// How `account_id` reaches card `iccid` (`None`: it does not, as if there were no card).
    async fn card_access(
        &self,
        account_id: &str,
        iccid: &str,
    ) -> Result<Option<CardAccess>, StoreError>;

    /// An operation by id, whatever its account (callers check access to its card).
    async fn operation_by_id(&self, id: &str) -> Result<Option<OperationRecord>, StoreError>;

    /// Grants (or replaces the rights of) `grantee_name` on the owner's card group.
    async fn grant(
        &self,
        owner_id: &str,
        group_id: i64,
        grantee_name: &str,
        rights: &[Right],
        now: Millis,
    ) -> Result<GrantRecord, StoreError>;

    /// Removes a grant; false if there was none.
    async fn revoke_grant(
        &self,
        owner_id: &str,
        group_id: i64,
        grantee_name: &str,
    ) -> Result<bool, StoreError>;

    /// The grants on the owner's card group.
    async fn grants(&self, owner_id: &str, group_id: i64) -> Result<Vec<GrantRecord>, StoreError>;

    /// Sets (replaces) the bootstrap rule of the owner's card group.
    async fn set_rule(
        &self,
        owner_id: &str,
        group_id: i64,
        rule: &BootstrapRule,
        now: Millis,
    ) -> Result<(), StoreError>;

    /// The bootstrap rule of the owner's card group.
    async fn rule(
        &self,
        owner_id: &str,
        group_id: i64,
    ) -> Result<Option<BootstrapRule>, StoreError>;

    /// Makes plans for up to `limit` cards of groups with a `provisioning` rule that have none
    /// and that the router never touched, allocating each its IMSIs (a card whose IMSIs would
    /// leave a range gets a FAILED plan). Returns the plans made.
    async fn new_plans(&self, limit: u32, now: Millis) -> Result<Vec<PlanRecord>, StoreError>;

    /// The plan of a card that reported on its bootstrap subscription, made now if a group
    /// of the card's owner with a `notification` rule holds it (`None`: no such rule, or the
    /// card has a plan already).
    async fn plan_on_report(
        &self,
        owner_id: &str,
        iccid: &str,
        now: Millis,
    ) -> Result<Option<PlanRecord>, StoreError>;

    /// RUNNING plans whose card has no operation in flight and is not DIRTY.
    async fn ready_plans(&self, limit: u32) -> Result<Vec<PlanRecord>, StoreError>;

    /// Plans of the owner's card group by state.
    async fn plan_counts(
        &self,
        owner_id: &str,
        group_id: i64,
    ) -> Result<Vec<(String, u64)>, StoreError>;
}
