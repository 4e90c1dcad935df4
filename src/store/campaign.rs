//! Campaign records in the store: campaigns, and one row per card and iteration whose state
//! moves pending -> sending -> sent -> delivered -> a final state.
//!
//! A campaign's cards stream from the store in ICCID order a batch at a time and their updates
//! go back in batches (group commit), so neither the campaign's size nor its rate is bounded by
//! memory or by one commit per message.

use async_trait::async_trait;

use super::{KeySetRecord, Millis, StoreError};

/// A campaign as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignRecord {
    /// Id (a number, as operators type it).
    pub id: i64,
    /// Owner.
    pub account_id: String,
    /// The profile the campaign belongs to.
    pub profile_id: i64,
    /// Name, unique within the profile.
    pub name: String,
    /// `RFM`, `RAM`, `SMS`, `FLASH`, `TLS_TRIGGER_RFM`, `TLS_TRIGGER_RAM`.
    pub campaign_type: String,
    /// The settings (JSON, see `campaign::CampaignSettings`).
    pub settings: String,
    /// `CREATED`, `RUNNING`, `COMPLETED`, `TERMINATED`.
    pub status: String,
    /// Current iteration (0 before the first start).
    pub iteration: i64,
    /// Messages (packets) each card gets.
    pub messages_per_card: i64,
    /// Created, ms.
    pub created_at: Millis,
    /// Last change, ms.
    pub updated_at: Millis,
    /// Last start (or retry), ms.
    pub started_at: Option<Millis>,
    /// End of the last iteration, ms.
    pub finished_at: Option<Millis>,
}

/// A campaign to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCampaign {
    /// Owner.
    pub account_id: String,
    /// Profile.
    pub profile_id: i64,
    /// Name.
    pub name: String,
    /// Type name.
    pub campaign_type: String,
    /// Settings JSON.
    pub settings: String,
    /// Messages each card gets.
    pub messages_per_card: i64,
}

/// Which cards a start targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignTarget {
    /// A card group of the campaign's profile.
    Group(i64),
    /// One card of the profile, by ICCID.
    Card(String),
}

/// One card's row in an iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignCardRecord {
    /// Iteration.
    pub iteration: i64,
    /// The card.
    pub iccid: String,
    /// State name.
    pub state: String,
    /// Whether the state is final.
    pub done: bool,
    /// Message (packet) index the state is about.
    pub step: i64,
    /// Counter of the packet in flight (or last sent).
    pub counter: Option<u64>,
    /// PoR status named, failure reason, or response.
    pub detail: Option<String>,
    /// Last change, ms.
    pub updated_at: Millis,
}

/// A card taken from the store to send to: its counter is reserved and its row marked
/// `sending` (or, resuming after a restart, found `sending`/`sent`/`delivered`).
#[derive(Debug, Clone)]
pub struct ClaimedCard {
    /// The card.
    pub iccid: String,
    /// Its MSISDN.
    pub msisdn: Option<String>,
    /// Placeholder data given at start (JSON object), if any.
    pub data: Option<String>,
    /// Message index.
    pub step: i64,
    /// State it was in when taken (`sending` for a fresh claim).
    pub state: String,
    /// The counter the packet carries.
    pub counter: Option<u64>,
    /// The key set of the KIc version, if the card has it.
    pub kic_set: Option<KeySetRecord>,
    /// The key set of the KID version, if the card has it.
    pub kid_set: Option<KeySetRecord>,
}

/// Key versions a claim reads and which one's counter it spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimKeys {
    /// KIc's key version.
    pub kic_version: u8,
    /// KID's key version.
    pub kid_version: u8,
    /// The key set whose counter the packets use.
    pub counter_version: u8,
    /// Whether the claim reserves that counter. SMS text and TLS_TRIGGER campaigns send no
    /// SCP80 packet of their own (the HTTPS trigger reserves its counter when it is secured):
    /// their claims spend no counter and need no key set.
    pub spends_counter: bool,
}

/// A state change of one card's row, applied only if it moves the row forward
/// (`progress` greater than the stored one), so late or reordered news never undo a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardUpdate {
    /// Campaign.
    pub campaign_id: i64,
    /// Iteration.
    pub iteration: i64,
    /// Card.
    pub iccid: String,
    /// New state name.
    pub state: String,
    /// `step * 16 + rank of the state`.
    pub progress: i64,
    /// Message index.
    pub step: i64,
    /// Final.
    pub done: bool,
    /// The packet's counter (set when a new step is sent).
    pub counter: Option<u64>,
    /// Detail to store (kept as it was when `None`).
    pub detail: Option<String>,
}

/// Cards per state of one iteration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    /// Iteration.
    pub iteration: i64,
    /// State name.
    pub state: String,
    /// Final.
    pub done: bool,
    /// Cards.
    pub cards: u64,
}

/// The campaign part of the store.
#[async_trait]
pub trait CampaignStore: Send + Sync {
    /// Creates a campaign (status `CREATED`, iteration 0). A name already used in the profile
    /// is `Duplicate`.
    async fn create_campaign(
        &self,
        campaign: &NewCampaign,
        now: Millis,
    ) -> Result<CampaignRecord, StoreError>;
    /// A campaign of this account.
    async fn campaign(
        &self,
        account_id: &str,
        id: i64,
    ) -> Result<Option<CampaignRecord>, StoreError>;
    /// The account's campaigns, by id.
    async fn campaigns(&self, account_id: &str) -> Result<Vec<CampaignRecord>, StoreError>;
    /// Starts a `CREATED` campaign: writes iteration 1's rows (one per targeted card, with its
    /// placeholder data from `data` by ICCID) and moves it to `RUNNING`, in one transaction.
    /// Returns the cards targeted. `Invalid` when the campaign is not `CREATED` or the target
    /// is not of the campaign's profile.
    async fn start_campaign(
        &self,
        account_id: &str,
        id: i64,
        target: &CampaignTarget,
        data: &[(String, String)],
        now: Millis,
    ) -> Result<u64, StoreError>;
    /// Starts the next iteration of a `COMPLETED` or `TERMINATED` campaign for the cards that
    /// did not succeed in the current one. Returns (iteration, cards).
    async fn retry_failed(
        &self,
        account_id: &str,
        id: i64,
        now: Millis,
    ) -> Result<(i64, u64), StoreError>;
    /// Moves a campaign from one of `from` to `to` (and releases its lease), writing `events`
    /// (for the campaign's account) to the outbox in the same transaction; false when it was
    /// in none of them (and nothing is written).
    async fn set_campaign_status(
        &self,
        id: i64,
        from: &[&str],
        to: &str,
        now: Millis,
        events: &[crate::events::Event],
    ) -> Result<bool, StoreError>;
    /// Takes the lease of the `RUNNING` campaigns no other gateway holds (or this one held).
    async fn lease_campaigns(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<CampaignRecord>, StoreError>;
    /// Reserves the next counter of up to `limit` pending cards (ICCID order, after `after`)
    /// and marks their rows `sending` with it, in one transaction.
    async fn claim_campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        after: &str,
        limit: u32,
        keys: ClaimKeys,
        now: Millis,
    ) -> Result<Vec<ClaimedCard>, StoreError>;
    /// Rows left in flight (`sending`, `sent`, `delivered`, not final) by an earlier run, with
    /// their counters and keys, in ICCID order after `after`.
    async fn in_flight_campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        after: &str,
        limit: u32,
        keys: ClaimKeys,
    ) -> Result<Vec<ClaimedCard>, StoreError>;
    /// Applies updates that move rows forward, in one transaction.
    async fn update_campaign_cards(
        &self,
        updates: &[CardUpdate],
        now: Millis,
    ) -> Result<u64, StoreError>;
    /// Marks the iteration's pending rows `expired` (validity over). Returns how many.
    async fn expire_campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        now: Millis,
    ) -> Result<u64, StoreError>;
    /// Cards per state and iteration.
    async fn campaign_totals(&self, campaign_id: i64) -> Result<Vec<StateCount>, StoreError>;
    /// Rows of an iteration (all, or in one state), ICCID order after `after`.
    async fn campaign_cards(
        &self,
        campaign_id: i64,
        iteration: i64,
        state: Option<&str>,
        after: &str,
        limit: u32,
    ) -> Result<Vec<CampaignCardRecord>, StoreError>;
}
