//! The durable store: accounts and tokens, cards and their key sets (sealed at rest), counters,
//! commands with their event history, batches, webhooks and uploaded applets.
//!
//! One [`Store`] trait; the SQL backend serves SQLite (embedded default) and PostgreSQL (shared
//! by several gateways). Every state change of a command is a conditional update plus an event
//! row in one transaction, so whoever changes a command first wins and each command reaches
//! exactly one terminal state, whichever gateway or restart handles it.

pub mod campaign;
pub mod outbox;
pub mod scp81;
pub mod sealing;
pub mod sql;
pub mod subscriptions;
pub mod users;
pub mod views;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::command::{
    CardResponse, CommandError, CommandEvent, CommandStatus, CommandType, ErrorCode, Priority,
};

pub use campaign::{CampaignStore, CardUpdate, ClaimKeys, ClaimedCard};
pub use outbox::{OutboxRow, OutboxStore};
pub use sealing::{MasterKey, SealingError};
pub use sql::{SqlOptions, SqlStore};

/// Milliseconds since the Unix epoch. The store never reads the clock: callers pass `now`.
pub type Millis = crate::clock::Millis;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (connection, SQL): the driver's error is the source.
    #[error("database: {context}: {source}")]
    Sql {
        /// What the store was doing (`query`, `schema`, `connect to ...`).
        context: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The SQLite writer lane failed (see `store::sql`): rusqlite's error is the source.
    #[error("database: {context}: {source}")]
    Sqlite {
        /// What the lane was doing.
        context: String,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value that does not read back (a column, its JSON), or a database problem the
    /// driver did not report.
    #[error("database: {0}")]
    Database(String),
    /// A unique key already exists (names what and which).
    #[error("{what} {key} already exists")]
    Duplicate {
        /// Which kind of thing.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// A referenced thing does not exist (for this account).
    #[error("{what} {key} not found")]
    NotFound {
        /// Which kind of thing.
        what: &'static str,
        /// Its key.
        key: String,
    },
    /// Input the store refuses (names the field).
    #[error("{field}: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// The problem.
        problem: String,
    },
    /// A sealed key could not be opened (wrong master key, corrupted row).
    #[error("key material: {0}")]
    Sealing(#[from] SealingError),
    /// The thing cannot be changed now (names why: live commands, a running campaign).
    #[error("{what} {key} is in use: {reason}")]
    InUse {
        /// Which kind of thing.
        what: &'static str,
        /// Its key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The master key given is not the one that sealed this database's key values.
    #[error("the master key does not open this database's key values ({0}): start with the master key this database was made with")]
    WrongMasterKey(String),
}

/// An account: tokens, cards, commands and webhooks belong to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Stable id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Created, ms.
    pub created_at: Millis,
}

/// A bearer token as listed: never its value nor its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Stable id (what revoking names).
    pub id: String,
    /// Label given at creation.
    pub label: String,
    /// Created, ms.
    pub created_at: Millis,
}

pub use crate::command::keys::{KeyMaterial, KeySetRecord};

/// A card to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCard {
    /// ICCID, digits (validated by the caller).
    pub iccid: String,
    /// IMSI.
    pub imsi: Option<String>,
    /// MSISDN, digits, international format.
    pub msisdn: Option<String>,
    /// Other vendor-file columns, kept as attributes.
    pub attributes: BTreeMap<String, String>,
    /// Its OTA key sets.
    pub key_sets: Vec<KeySetRecord>,
    /// Subscriptions installed at the factory besides the IMSI's (the vendor file's
    /// `IMSI2`..`IMSI8` columns). Empty: the IMSI is the card's one subscription.
    pub factory_subscriptions: Vec<FactorySubscription>,
}

/// A subscription a card leaves the factory with, in a slot other than 1 (slot 1 holds the
/// card's IMSI: enabled, the fallback, and the bootstrap subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactorySubscription {
    /// Slot, 2..=8.
    pub id: u8,
    /// Its IMSI, digits.
    pub imsi: String,
}

/// A stored card (without key values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardRecord {
    /// Owner.
    pub account_id: String,
    /// ICCID.
    pub iccid: String,
    /// IMSI.
    pub imsi: Option<String>,
    /// MSISDN.
    pub msisdn: Option<String>,
    /// Other attributes.
    pub attributes: BTreeMap<String, String>,
    /// Key versions with their counters and last rotation (no key values).
    pub key_versions: Vec<KeyVersionStatus>,
    /// Added, ms.
    pub created_at: Millis,
}

/// A key set's public state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyVersionStatus {
    /// Key version.
    pub version: u8,
    /// Last counter used.
    pub counter: u64,
    /// Last successful KEY_UPDATE, ms.
    pub rotated_at: Option<Millis>,
}

/// A command to store, as the API validated it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCommand {
    /// Unique per account.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Batch it belongs to.
    pub batch_id: Option<String>,
    /// Type.
    pub command_type: CommandType,
    /// Card.
    pub iccid: String,
    /// Transport asked for (`sms`, ...).
    pub transport: String,
    /// Priority.
    pub priority: Priority,
    /// The whole request as posted (JSON): the pipeline builds the script from it.
    pub request: serde_json::Value,
    /// Not sent after this, ms (EXPIRED instead).
    pub expires_at: Option<Millis>,
    /// Created, ms.
    pub created_at: Millis,
}

/// The secured packet of a command, recorded before it is first handed to a transport so that
/// a resend (after a timeout, a crash or on another gateway) reuses the same bytes and counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecuredPacket {
    /// The command packet from CPL on.
    pub packet: Vec<u8>,
    /// Counter it carries.
    pub counter: u64,
    /// Key version used.
    pub key_version: u8,
    /// MSISDN it goes to.
    pub msisdn: String,
    /// TAR.
    pub tar: [u8; 3],
    /// SPI.
    pub spi: [u8; 2],
    /// KIc octet.
    pub kic: u8,
    /// KID octet.
    pub kid: u8,
    /// KEY_UPDATE: the new keys the packet carries, stored (sealed) with the command and moved
    /// into the key set only when the card's PoR confirms.
    pub pending_keys: Option<KeyMaterial>,
}

/// A stored command.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandRecord {
    /// Id.
    pub id: String,
    /// Owner account.
    pub account_id: String,
    /// Batch.
    pub batch_id: Option<String>,
    /// Type.
    pub command_type: CommandType,
    /// Card.
    pub iccid: String,
    /// Transport.
    pub transport: String,
    /// Priority.
    pub priority: Priority,
    /// The request as posted.
    pub request: serde_json::Value,
    /// Status.
    pub status: CommandStatus,
    /// Created, ms.
    pub created_at: Millis,
    /// Last change, ms.
    pub updated_at: Millis,
    /// Validity end, ms.
    pub expires_at: Option<Millis>,
    /// First handed to a transport, ms.
    pub sent_at: Option<Millis>,
    /// Delivery report, ms.
    pub delivered_at: Option<Millis>,
    /// Terminal, ms.
    pub completed_at: Option<Millis>,
    /// Sends so far.
    pub attempts: u32,
    /// The secured packet, once built.
    pub secured: Option<SecuredPacket>,
    /// The card's answer.
    pub response: Option<CardResponse>,
    /// The error.
    pub error: Option<CommandError>,
    /// Gateway working on it.
    pub owner: Option<String>,
    /// Its claim is good until, ms.
    pub lease_until: Option<Millis>,
}

/// How a state change ends a command (or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Only if the command is in one of these statuses now.
    pub from: Vec<CommandStatus>,
    /// New status.
    pub to: CommandStatus,
    /// Event kind for the history.
    pub event: String,
    /// Event detail.
    pub detail: String,
    /// The card's answer, when it came.
    pub response: Option<CardResponse>,
    /// The error, when it failed.
    pub error: Option<CommandError>,
    /// When.
    pub at: Millis,
    /// KEY_UPDATE confirmed: the key set takes these keys in the same transaction as the
    /// status change, so the store never has the command done and the old keys, nor the new
    /// keys and the command open.
    pub new_keys: Option<NewKeys>,
    /// Events the change reports, written to the outbox in the same transaction.
    pub events: Vec<crate::events::Event>,
}

/// Keys a key set takes when a KEY_UPDATE is confirmed (its counter is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeys {
    /// The card.
    pub iccid: String,
    /// The key version replaced.
    pub version: u8,
    /// The new keys.
    pub keys: KeyMaterial,
}

/// Result of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was still pending: now CANCELLED.
    Cancelled,
    /// Too late: it is in this status.
    NotCancellable(CommandStatus),
}

/// A batch of commands.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchRecord {
    /// Id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Options as posted (JSON).
    pub options: serde_json::Value,
    /// Created, ms.
    pub created_at: Millis,
    /// Its commands' ids, in the order posted.
    pub command_ids: Vec<String>,
}

/// A webhook subscription.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Where to POST.
    pub url: String,
    /// HMAC-SHA256 secret (stored sealed).
    pub secret: Vec<u8>,
    /// The event names it receives; empty: every event.
    pub events: Vec<String>,
}

impl std::fmt::Debug for Webhook {
    // The secret is never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("account_id", &self.account_id)
            .field("url", &self.url)
            .field("secret_len", &self.secret.len())
            .field("events", &self.events)
            .finish()
    }
}

/// An uploaded applet (CAP or IJC), for APP_INSTALL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppletRecord {
    /// Id.
    pub id: String,
    /// Owner.
    pub account_id: String,
    /// Name given at upload.
    pub name: String,
    /// The file as uploaded.
    pub content: Vec<u8>,
    /// Uploaded, ms.
    pub created_at: Millis,
}

/// Counts for the metrics endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandStats {
    /// Commands per status.
    pub by_status: BTreeMap<String, u64>,
    /// Failed commands per error code.
    pub by_error: BTreeMap<String, u64>,
    /// Per transport: (commands, successes).
    pub by_transport: BTreeMap<String, (u64, u64)>,
    /// Mean time from sent to terminal for SUCCESS commands, ms.
    pub mean_completion_ms: Option<f64>,
    /// Mean time from sent to delivered, ms.
    pub mean_delivery_ms: Option<f64>,
}

/// A profile's defaults for its campaigns (hex as text, as the CLI and API take them).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileDefaults {
    /// SPI, 4 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi: Option<String>,
    /// KIc octet, 2 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kic_byte: Option<String>,
    /// KID octet, 2 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid_byte: Option<String>,
    /// Transport (`sms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// HTTP parameters for TLS_TRIGGER campaigns (a JSON object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_json::Value>,
    /// CAT_TP push parameters for the profile's cards (a JSON object; see
    /// [`crate::gateway::catp::PROFILE_CATP_FIELDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catp: Option<serde_json::Value>,
    /// The cards' GlobalPlatform implementation (a JSON object: `version`, `kcvFill`; see
    /// [`crate::command::build::GpProfile`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gp: Option<serde_json::Value>,
    /// Validity period of the campaigns' messages, minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validity_period_minutes: Option<u32>,
}

/// A profile to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewProfile {
    /// Unique per account, no spaces.
    pub name: String,
    /// `rfm`, `ram` or `custom`.
    pub app_type: Option<String>,
    /// The uploaded applet of a `custom` profile.
    pub applet_id: Option<String>,
    /// TARs, 6 hex digits each.
    pub tars: Vec<String>,
    /// Campaign defaults.
    pub defaults: ProfileDefaults,
}

/// A stored profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRecord {
    /// Id (a number, as operators type it).
    pub id: i64,
    /// Owner.
    pub account_id: String,
    /// Name.
    pub name: String,
    /// `rfm`, `ram` or `custom`.
    pub app_type: Option<String>,
    /// Applet of a `custom` profile.
    pub applet_id: Option<String>,
    /// TARs.
    pub tars: Vec<String>,
    /// Campaign defaults.
    pub defaults: ProfileDefaults,
    /// Created, ms.
    pub created_at: Millis,
    /// Last change, ms.
    pub updated_at: Millis,
}

/// A card group (a set of cards of one profile).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardGroupRecord {
    /// Id (a number).
    pub id: i64,
    /// Owner.
    pub account_id: String,
    /// Profile of its cards.
    pub profile_id: i64,
    /// Name, unique within the profile.
    pub name: String,
    /// Number of cards.
    pub cards: u64,
    /// Created, ms.
    pub created_at: Millis,
}

/// Which cards a new group holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupMembers {
    /// Every card of the profile.
    AllOfProfile,
    /// These ICCIDs (each once, each a card of the profile).
    Iccids(Vec<String>),
}

/// How cards are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKey {
    /// By ICCID.
    Iccid,
    /// By MSISDN.
    Msisdn,
}

/// A page of an account's cards, by ICCID: prefix filters (digits) and the ICCID to list after.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardSearch {
    /// ICCID prefix.
    pub iccid: Option<String>,
    /// IMSI prefix.
    pub imsi: Option<String>,
    /// MSISDN prefix.
    pub msisdn: Option<String>,
    /// List the cards whose ICCID sorts after this one.
    pub after: Option<String>,
    /// Most cards listed.
    pub limit: u32,
}

/// Changes to a card, validated by the caller (`None`: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CardChanges {
    /// New IMSI.
    pub imsi: Option<String>,
    /// New MSISDN (digits).
    pub msisdn: Option<String>,
    /// Attributes set (`Some`) or removed (`None`); others are kept.
    pub attributes: BTreeMap<String, Option<String>>,
}

/// What deleting a card removed, and the command history kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CardDeleted {
    /// Key sets (OTA and SCP81) deleted with it.
    pub key_sets: u64,
    /// Card group memberships removed.
    pub group_memberships: u64,
    /// Finished commands of the card, kept and still readable by id.
    pub commands_kept: u64,
}

/// The store.
#[async_trait]
pub trait Store: CampaignStore + OutboxStore + Send + Sync {
    /// Which backend (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;
    /// The SCP81 (HTTPS OTA) tables, where the backend has them.
    fn scp81(&self) -> Option<&dyn scp81::Scp81Store> {
        None
    }
    /// The console's users and sessions, where the backend has them.
    fn users(&self) -> Option<&dyn users::UserStore> {
        None
    }
    /// The console's read-only views, where the backend has them.
    fn views(&self) -> Option<&dyn views::ViewStore> {
        None
    }
    /// The Secure Router's records, when this store keeps them.
    fn subscriptions(&self) -> Option<&dyn subscriptions::SubscriptionStore> {
        None
    }
    /// Checks the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;

    // Accounts and tokens.
    /// Creates an account; its name is unique.
    async fn create_account(&self, name: &str, now: Millis) -> Result<Account, StoreError>;
    /// Finds an account by name.
    async fn account_by_name(&self, name: &str) -> Result<Option<Account>, StoreError>;
    /// Makes a new bearer token for an account and returns it; only its hash is stored.
    async fn create_token(
        &self,
        account_id: &str,
        label: &str,
        now: Millis,
    ) -> Result<String, StoreError>;
    /// The account a bearer token belongs to (none once the token is revoked).
    async fn account_for_token(&self, token: &str) -> Result<Option<Account>, StoreError>;
    /// An account's tokens, oldest first (ids, labels and times only).
    async fn tokens(&self, account_id: &str) -> Result<Vec<TokenInfo>, StoreError>;
    /// Revokes (deletes) a token of this account; NotFound when this account has no token
    /// with that id.
    async fn revoke_token(&self, account_id: &str, id: &str) -> Result<(), StoreError>;

    // Cards and keys.
    /// Adds cards, all or none (a duplicate ICCID fails the whole call, naming it).
    async fn insert_cards(
        &self,
        account_id: &str,
        cards: &[NewCard],
        now: Millis,
    ) -> Result<(), StoreError>;
    /// A card of this account.
    async fn card(&self, account_id: &str, iccid: &str) -> Result<Option<CardRecord>, StoreError>;
    /// A card's key set with its keys unsealed (for the pipeline only).
    async fn key_set(&self, iccid: &str, version: u8) -> Result<Option<KeySetRecord>, StoreError>;
    /// Reserves the next counter of a key set, durably, before anything is sent with it: it is
    /// never handed out again, across crashes and gateways.
    async fn reserve_counter(&self, iccid: &str, version: u8) -> Result<u64, StoreError>;
    /// Replaces a key set's keys (after the card confirmed a KEY_UPDATE); keeps its counter.
    async fn replace_keys(
        &self,
        iccid: &str,
        version: u8,
        keys: &KeyMaterial,
        now: Millis,
    ) -> Result<(), StoreError>;
    /// Cards of an account with their key versions (security status), up to `limit`.
    async fn cards(&self, account_id: &str, limit: u32) -> Result<Vec<CardRecord>, StoreError>;
    /// A page of the cards an account owns or sees through a card group grant (each record
    /// names its owner), in ICCID order, filtered by prefixes (Invalid, naming the filter,
    /// when a prefix or `after` is not digits).
    async fn search_cards(
        &self,
        account_id: &str,
        search: &CardSearch,
    ) -> Result<Vec<CardRecord>, StoreError>;
    /// Changes a card of this account (NotFound for another account's card) and returns it.
    async fn update_card(
        &self,
        account_id: &str,
        iccid: &str,
        changes: &CardChanges,
    ) -> Result<CardRecord, StoreError>;
    /// Deletes a card of this account with its key sets, group and profile memberships and its
    /// rows in finished campaigns. Refused (InUse, naming why) while the card has a live
    /// command (PENDING, SENT, DELIVERED) or is in a campaign not yet COMPLETED or CANCELLED.
    /// Its finished commands and their events are kept (readable by id; the card is gone).
    async fn delete_card(&self, account_id: &str, iccid: &str) -> Result<CardDeleted, StoreError>;

    // Commands.
    /// Stores a new PENDING command (event CREATED). A duplicate id fails naming it.
    async fn insert_command(&self, command: &NewCommand) -> Result<(), StoreError>;
    /// A command of this account with its history.
    async fn command(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<(CommandRecord, Vec<CommandEvent>)>, StoreError>;
    /// Which of these commands (account id, command id) have ended, with their final status:
    /// one query for every command a gateway waits on (see `pipeline::ended`).
    async fn ended_among(
        &self,
        commands: &[(String, String)],
    ) -> Result<Vec<(String, String, CommandStatus)>, StoreError>;
    /// A command's record without its history (for the pipeline).
    async fn command_by_id(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<CommandRecord>, StoreError>;
    /// Cancels a command if it is still PENDING.
    async fn cancel_command(
        &self,
        account_id: &str,
        id: &str,
        now: Millis,
    ) -> Result<CancelOutcome, StoreError>;
    /// Claims up to `limit` commands for gateway `owner` until `lease_until`: PENDING ones
    /// nobody holds, and non-terminal ones whose holder's lease ran out. Highest priority
    /// first, then oldest. Two gateways never claim the same command at once.
    async fn claim_commands(
        &self,
        owner: &str,
        limit: u32,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<CommandRecord>, StoreError>;
    /// Extends the leases of every non-terminal command `owner` holds.
    async fn renew_leases(&self, owner: &str, lease_until: Millis) -> Result<u64, StoreError>;
    /// Lets go of a command (it goes back to whoever claims next).
    async fn release(&self, id: &str, owner: &str) -> Result<(), StoreError>;
    /// A command `owner` holds whose transport never reached the card (a CAT_TP card that
    /// opened no link after its pushes) goes back to PENDING on `to_transport`, its packet
    /// forgotten so that the pipeline secures it anew (a new counter, the new transport's
    /// framing); records a FALLBACK event with `detail`. `false` if it is no longer
    /// SENT/DELIVERED on `from_transport` for `owner`.
    #[allow(clippy::too_many_arguments)]
    async fn reroute_for_fallback(
        &self,
        account_id: &str,
        id: &str,
        owner: &str,
        from_transport: &str,
        to_transport: &str,
        detail: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Records the secured packet of a PENDING command held by `owner` (event SECURED).
    /// Returns false if the command is no longer PENDING or no longer held by `owner`.
    async fn record_secured(
        &self,
        account_id: &str,
        id: &str,
        owner: &str,
        secured: &SecuredPacket,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Counts one more send attempt and moves PENDING to SENT (first send sets sent_at;
    /// event SENT with the attempt number). False if the command is terminal or not held
    /// by `owner` any more: then nothing must be sent.
    async fn record_send(
        &self,
        account_id: &str,
        id: &str,
        owner: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Applies a state change if the command is in one of `t.from`, appending the event (and
    /// `t.events` to the outbox) in the same transaction. Returns whether it applied. Terminal statuses set completed_at
    /// and drop the owner; DELIVERED sets delivered_at.
    async fn transition(
        &self,
        account_id: &str,
        id: &str,
        t: &Transition,
    ) -> Result<bool, StoreError>;
    /// A delivery report: sets delivered_at (the first one counts), moves SENT to DELIVERED,
    /// and appends event DELIVERED, also when the PoR came first and the command has ended;
    /// the outbox gets `command.delivered` in the same transaction.
    /// Returns whether the report was recorded (false: a second report, or no such command),
    /// so a count of `true`s matches the DELIVERED events in the store.
    async fn record_delivery(
        &self,
        account_id: &str,
        id: &str,
        at: Millis,
    ) -> Result<bool, StoreError>;
    /// Appends an event without changing the status (ACCEPTED, RETRY, a rejected PoR, ...).
    async fn add_event(
        &self,
        account_id: &str,
        id: &str,
        kind: &str,
        detail: &str,
        at: Millis,
    ) -> Result<(), StoreError>;
    /// Commands sent to `msisdn` and `tar` still waiting for their PoR (SENT or DELIVERED),
    /// any owner: a PoR that reaches another gateway, or arrives after a restart, finds them.
    async fn awaiting_por(
        &self,
        msisdn: &str,
        tar: [u8; 3],
    ) -> Result<Vec<CommandRecord>, StoreError>;
    /// Expires PENDING commands whose validity ended (event EXPIRED, and `command.completed`
    /// to the outbox); returns their ids.
    async fn expire_commands(&self, now: Millis) -> Result<Vec<(String, String)>, StoreError>;
    /// Counts for metrics, for one account.
    async fn command_stats(&self, account_id: &str) -> Result<CommandStats, StoreError>;

    // Batches.
    /// Stores a batch and its commands (all PENDING), all or none.
    async fn insert_batch(
        &self,
        batch: &BatchRecord,
        commands: &[NewCommand],
    ) -> Result<(), StoreError>;
    /// A batch of this account.
    async fn batch(&self, account_id: &str, id: &str) -> Result<Option<BatchRecord>, StoreError>;
    /// Its commands' records.
    async fn batch_commands(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<Vec<CommandRecord>, StoreError>;

    // Webhooks and applets.
    /// Adds a webhook for an account.
    async fn add_webhook(&self, webhook: &Webhook) -> Result<(), StoreError>;
    /// An account's webhooks.
    async fn webhooks(&self, account_id: &str) -> Result<Vec<Webhook>, StoreError>;
    /// Deletes a webhook of this account; NotFound when this account has none with that id.
    async fn delete_webhook(&self, account_id: &str, id: &str) -> Result<(), StoreError>;
    /// Stores an uploaded applet.
    async fn insert_applet(&self, applet: &AppletRecord) -> Result<(), StoreError>;
    /// An applet of this account.
    async fn applet(&self, account_id: &str, id: &str) -> Result<Option<AppletRecord>, StoreError>;

    // Profiles, provisioning and card groups.
    /// Every account, by name.
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Creates a profile; its name is unique per account (Duplicate otherwise).
    async fn create_profile(
        &self,
        account_id: &str,
        profile: &NewProfile,
        now: Millis,
    ) -> Result<ProfileRecord, StoreError>;
    /// A profile of this account by id.
    async fn profile(&self, account_id: &str, id: i64)
        -> Result<Option<ProfileRecord>, StoreError>;
    /// A profile of this account by name.
    async fn profile_by_name(
        &self,
        account_id: &str,
        name: &str,
    ) -> Result<Option<ProfileRecord>, StoreError>;
    /// The account's profiles, by id.
    async fn profiles(&self, account_id: &str) -> Result<Vec<ProfileRecord>, StoreError>;
    /// Which of these ICCIDs are cards already (of any account: an ICCID is stored once).
    async fn existing_iccids(&self, iccids: &[String]) -> Result<Vec<String>, StoreError>;
    /// Adds cards linked to a profile of the account, and with `group` a new card group of
    /// that profile holding them, all or none (as [`Store::insert_cards`]). `progress` is
    /// called with the rows written since its last call: cards, key sets, profile links and
    /// group members ([`provision_rows`] gives the total).
    async fn provision_cards(
        &self,
        account_id: &str,
        profile_id: i64,
        cards: &[NewCard],
        group: Option<&str>,
        now: Millis,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Option<CardGroupRecord>, StoreError>;
    /// Of `values` (ICCIDs or MSISDNs), those naming a card of this account linked to the
    /// profile, as (value, ICCID) pairs.
    async fn profile_cards_matching(
        &self,
        account_id: &str,
        profile_id: i64,
        key: CardKey,
        values: &[String],
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Creates a card group of a profile; the name is unique within the profile. Listed
    /// ICCIDs must all be cards of the profile (Invalid otherwise, nothing created).
    async fn create_card_group(
        &self,
        account_id: &str,
        profile_id: i64,
        name: &str,
        members: &GroupMembers,
        now: Millis,
    ) -> Result<CardGroupRecord, StoreError>;
    /// A card group of this account.
    async fn card_group(
        &self,
        account_id: &str,
        id: i64,
    ) -> Result<Option<CardGroupRecord>, StoreError>;
    /// The account's card groups, by id.
    async fn card_groups(&self, account_id: &str) -> Result<Vec<CardGroupRecord>, StoreError>;
    /// ICCIDs of a group's cards in ICCID order, after `after`, up to `limit` (paging).
    async fn card_group_iccids(
        &self,
        account_id: &str,
        group_id: i64,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    /// The profile a card of this account is linked to.
    async fn card_profile(&self, account_id: &str, iccid: &str) -> Result<Option<i64>, StoreError>;
    /// The profile a card (ICCIDs are unique across accounts) was provisioned into, if any.
    async fn profile_of_card(&self, iccid: &str) -> Result<Option<ProfileRecord>, StoreError>;
}

/// Rows [`Store::provision_cards`] writes (its progress total).
pub fn provision_rows(cards: &[NewCard], grouped: bool) -> u64 {
    let key_sets: usize = cards.iter().map(|c| c.key_sets.len()).sum();
    let per_card = if grouped { 3 } else { 2 };
    (cards.len() * per_card + key_sets) as u64
}

/// Parses a stored error code, tolerating an unknown one as COMMAND_FAILED.
pub fn error_code_or_default(s: &str) -> ErrorCode {
    s.parse().unwrap_or(ErrorCode::CommandFailed)
}
