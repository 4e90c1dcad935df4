//! The outbox part of the store: events waiting for webhook delivery (see [`crate::events`]).
//!
//! Rows are written by the state changes themselves ([`super::Store::transition`],
//! [`super::Store::record_delivery`], [`super::Store::expire_commands`],
//! [`super::CampaignStore::set_campaign_status`]) or by [`OutboxStore::append_events`], and
//! only for accounts that have a webhook. A worker claims rows with a lease, delivers them,
//! and deletes them ([`OutboxStore::finish_outbox`]).

use async_trait::async_trait;

use super::{Millis, StoreError};
use crate::events::OutboxEvent;

/// One stored event, claimed for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// Position in the outbox (increasing in write order).
    pub seq: i64,
    /// The event's id (a UUID given when it was written: the same on every redelivery).
    pub id: String,
    /// Whose webhooks get it.
    pub account_id: String,
    /// Event name.
    pub event: String,
    /// The body's `data`.
    pub data: serde_json::Value,
    /// When it happened, ms.
    pub at: Millis,
}

/// The outbox part of the store.
#[async_trait]
pub trait OutboxStore: Send + Sync {
    /// Writes events that report no stored state change of their own (campaign progress, a
    /// campaign resuming). Events of accounts without webhooks are not written.
    async fn append_events(&self, events: &[OutboxEvent]) -> Result<(), StoreError>;

    /// Leases up to `limit` events to `owner` until `lease_until`: unleased (or lease
    /// expired at `now`) rows that are the oldest of their key, oldest first, skipping the
    /// accounts in `skip_accounts`. Safe for several gateways at once.
    async fn claim_outbox(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_accounts: &[String],
    ) -> Result<Vec<OutboxRow>, StoreError>;

    /// Extends the leases `owner` holds.
    async fn renew_outbox(&self, owner: &str, lease_until: Millis) -> Result<u64, StoreError>;

    /// Deletes delivered (or given-up) events `owner` still holds.
    async fn finish_outbox(&self, owner: &str, seqs: &[i64]) -> Result<u64, StoreError>;

    /// Gives events `owner` holds back, to be claimed again from `not_before` on.
    async fn release_outbox(
        &self,
        owner: &str,
        seqs: &[i64],
        not_before: Millis,
    ) -> Result<u64, StoreError>;

    /// Events waiting (leased or not).
    async fn outbox_len(&self) -> Result<u64, StoreError>;
}
