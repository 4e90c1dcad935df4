//! The Secure Router: subscription management on multi-subscription cards (issue 15, server
//! side). It keeps each card's subscriptions as last known and a sync state (SYNCED, PENDING
//! with one operation in flight, DIRTY), sends operations to the card's subscription
//! application as commands through the one engine (`SUBSCRIPTION` commands to TAR `534D41`,
//! coded in [`crate::script::subscription`]), learns switch outcomes from the card's
//! notifications, and repairs a DIRTY card with an automatic audit. Every operation and
//! notification goes to the card's audit trail.
//!
//! One file per job: `request` (checks and the operation's command), `outcome` (an
//! operation's command ended), `notification` (the card's notifications), `run` (the loop).

mod bootstrap;
mod notification;
mod outcome;
mod request;
mod run;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::clock::{Clock, Millis};
use crate::gateway::Gateway;
use crate::store::subscriptions::{
    CardRegistry, Right, StoredSubscription, SubscriptionStore, SyncRecord, SyncState,
};
use crate::store::{Store, StoreError};

pub use request::{DownloadRequest, Requester};
pub use run::spawn;

pub use crate::store::subscriptions::nth_imsi;

/// The router's settings.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How long after an ENABLE (or DOWNLOAD with enable) the card's notification must come:
    /// longer than the card's attach timeouts (asked, previous, fallback) together.
    pub notification_wait: Duration,
    /// First automatic audit retry after a failed one; doubles each time.
    pub audit_backoff: Duration,
    /// Longest wait between automatic audits.
    pub audit_backoff_max: Duration,
    /// How often the router looks at the store.
    pub sweep: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            notification_wait: Duration::from_secs(240),
            audit_backoff: Duration::from_secs(30),
            audit_backoff_max: Duration::from_secs(3600),
            sweep: Duration::from_millis(250),
        }
    }
}

/// Why the router refused or could not do something.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// No such card, subscription, template or operation for this account.
    #[error("{what} {key} not found")]
    NotFound {
        /// What.
        what: &'static str,
        /// Which.
        key: String,
        /// The request field that named it.
        field: Option<&'static str>,
    },
    /// A field is wrong.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// The problem.
        problem: String,
    },
    /// The card's state does not allow it now (an operation in flight, DIRTY, the
    /// subscription enabled or holding the fallback).
    #[error("{0}")]
    Conflict(String, Option<String>),
    /// The caller sees the card (a grant) but lacks the right for this.
    #[error("{0}")]
    Forbidden(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The Secure Router.
pub struct SecureRouter {
    store: Arc<dyn Store>,
    gateway: Arc<Gateway>,
    clock: Arc<dyn Clock>,
    config: RouterConfig,
}

impl SecureRouter {
    /// A router over the gateway's store; `spawn` starts its loop.
    pub fn new(gateway: Arc<Gateway>, config: RouterConfig) -> Result<Arc<Self>, RouterError> {
        let store = gateway.store().clone();
        if store.subscriptions().is_none() {
            return Err(RouterError::Store(StoreError::Database(
                "this store keeps no subscription records".into(),
            )));
        }
        Ok(Arc::new(Self {
            clock: gateway.clock().clone(),
            store,
            gateway,
            config,
        }))
    }

    fn subs(&self) -> Result<&dyn SubscriptionStore, RouterError> {
        self.store.subscriptions().ok_or_else(|| {
            RouterError::Store(StoreError::Database(
                "this store keeps no subscription records".into(),
            ))
        })
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// A card's registry and sync record as last known (what provisioning implies when the
    /// router never touched the card), for its owner or an account granted `view`.
    pub async fn known(&self, account_id: &str, iccid: &str) -> Result<Known, RouterError> {
        self.reach(account_id, iccid, Right::View).await
    }

    /// The card as `account_id` may reach it with `right`: its owner, or an account whose
    /// grant on one of the card's groups includes `view` (else the card is not found) and
    /// `right` (else forbidden).
    pub(super) async fn reach(
        &self,
        account_id: &str,
        iccid: &str,
        right: Right,
    ) -> Result<Known, RouterError> {
        let owner = self.owner_for(account_id, iccid, right).await?;
        self.registry_of(&owner, iccid).await
    }

    /// Another account's card that `account_id` may view through a card group grant; not
    /// found otherwise (no registry read).
    pub async fn granted_card(
        &self,
        account_id: &str,
        iccid: &str,
    ) -> Result<crate::store::CardRecord, RouterError> {
        let owner = self.owner_for(account_id, iccid, Right::View).await?;
        self.store
            .card(&owner, iccid)
            .await?
            .ok_or_else(|| RouterError::NotFound {
                what: "card",
                key: iccid.to_string(),
                field: None,
            })
    }

    /// The card's owner, if `account_id` may reach it with `right` (see [`Self::reach`]).
    async fn owner_for(
        &self,
        account_id: &str,
        iccid: &str,
        right: Right,
    ) -> Result<String, RouterError> {
        let not_found = || RouterError::NotFound {
            what: "card",
            key: iccid.to_string(),
            field: None,
        };
        let access = self
            .subs()?
            .card_access(account_id, iccid)
            .await?
            .ok_or_else(not_found)?;
        if !access.rights.contains(&Right::View) {
            return Err(not_found());
        }
        if !access.rights.contains(&right) {
            return Err(RouterError::Forbidden(format!(
                "this account may view card {iccid} but has no {:?} right on it",
                right.as_str()
            )));
        }
        Ok(access.owner_id)
    }

    /// The registry of a card of `owner_id` (no access check: the router's own work).
    pub(super) async fn registry_of(
        &self,
        owner_id: &str,
        iccid: &str,
    ) -> Result<Known, RouterError> {
        let reg = self
            .subs()?
            .registry(owner_id, iccid)
            .await?
            .ok_or_else(|| RouterError::NotFound {
                what: "card",
                key: iccid.to_string(),
                field: None,
            })?;
        Ok(Known::of(reg))
    }

    /// An operation, for an account that may view its card.
    pub async fn operation(
        &self,
        account_id: &str,
        id: &str,
    ) -> Result<crate::store::subscriptions::OperationRecord, RouterError> {
        let not_found = || RouterError::NotFound {
            what: "operation",
            key: id.to_string(),
            field: None,
        };
        let op = self
            .subs()?
            .operation_by_id(id)
            .await?
            .ok_or_else(not_found)?;
        match self.reach(account_id, &op.iccid, Right::View).await {
            Ok(_) => Ok(op),
            Err(RouterError::Store(e)) => Err(RouterError::Store(e)),
            Err(_) => Err(not_found()),
        }
    }

    /// A card's audit trail, newest first, for an account that may view the card.
    pub async fn trail(
        &self,
        account_id: &str,
        iccid: &str,
        before_seq: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::store::subscriptions::TrailEntry>, RouterError> {
        let known = self.known(account_id, iccid).await?;
        Ok(self
            .subs()?
            .audit_trail(&known.account_id, iccid, before_seq, limit)
            .await?)
    }

    /// Checks and stores a subscription template: a name of 1 to 64 characters (trimmed,
    /// unique in the account), an SPN of at most 16 printable ASCII characters, PLMNs as 5
    /// or 6 digits.
    pub async fn create_template(
        &self,
        account_id: &str,
        t: crate::store::subscriptions::SubscriptionTemplate,
    ) -> Result<crate::store::subscriptions::SubscriptionTemplate, RouterError> {
        let invalid = |field: String, problem: String| RouterError::Invalid { field, problem };
        let name = t.name.trim();
        if name.is_empty() || name.chars().count() > 64 {
            return Err(invalid(
                "name".into(),
                "1 to 64 characters, not only spaces".into(),
            ));
        }
        if t.spn.len() > 16 || !t.spn.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
            return Err(invalid(
                "spn".into(),
                format!("{:?}: at most 16 printable ASCII characters", t.spn),
            ));
        }
        for (i, p) in t.plmns.iter().enumerate() {
            let field = format!("plmns[{i}]");
            crate::command::build::plmn_bcd(&field, p)
                .map_err(|e| invalid(field.clone(), e.problem()))?;
        }
        let template = crate::store::subscriptions::SubscriptionTemplate {
            name: name.to_string(),
            ..t
        };
        self.subs()?
            .create_template(account_id, &template, self.now())
            .await?;
        Ok(template)
    }

    /// The store's subscription records.
    pub fn records(&self) -> Result<&dyn SubscriptionStore, RouterError> {
        self.subs()
    }
}

/// A card's registry and sync record as the router sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// Owner.
    pub account_id: String,
    /// ICCID.
    pub iccid: String,
    /// The subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// The sync record.
    pub sync: SyncRecord,
    /// Whether the registry comes from provisioning only (never read from the card).
    pub implied: bool,
}

impl Known {
    fn of(reg: CardRegistry) -> Self {
        match reg.sync {
            Some(sync) => Known {
                account_id: reg.account_id,
                iccid: reg.iccid,
                subscriptions: reg.subscriptions,
                sync,
                implied: false,
            },
            // Never touched: the factory registry provisioning stored, or else the card's
            // provisioned IMSI as its one subscription (id 1), enabled, fallback and
            // bootstrap (see `sim::subscriptions`).
            None if !reg.subscriptions.is_empty() => Known {
                account_id: reg.account_id,
                iccid: reg.iccid,
                subscriptions: reg.subscriptions,
                sync: SyncRecord::never_touched(),
                implied: true,
            },
            None => Known {
                account_id: reg.account_id,
                iccid: reg.iccid,
                subscriptions: reg
                    .imsi
                    .map(|imsi| StoredSubscription::factory(1, &imsi))
                    .into_iter()
                    .collect(),
                sync: SyncRecord::never_touched(),
                implied: true,
            },
        }
    }

    /// The JSON the audit trail keeps as "before" and "after".
    fn snapshot(&self) -> serde_json::Value {
        snapshot(&self.subscriptions, &self.sync)
    }

    fn subscription(&self, id: u8) -> Option<&StoredSubscription> {
        self.subscriptions.iter().find(|s| s.id == id)
    }
}

/// A `subscription.*` or `card.*` webhook event about `iccid`.
fn card_event(
    name: &'static str,
    iccid: &str,
    operation_id: Option<&str>,
    extra: serde_json::Value,
) -> crate::events::Event {
    let mut data = match extra {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    if let Some(op) = operation_id {
        data.insert("operationId".into(), op.into());
    }
    crate::events::Event::Card {
        name,
        iccid: iccid.to_string(),
        data,
    }
}

fn snapshot(subscriptions: &[StoredSubscription], sync: &SyncRecord) -> serde_json::Value {
    json!({
        "syncState": sync.state,
        "subscriptions": subscriptions,
    })
}

/// A sync record moved to `state` at `at`, nothing in flight.
fn settled(from: &SyncRecord, state: SyncState, reason: &str, at: Millis) -> SyncRecord {
    SyncRecord {
        state,
        operation_id: None,
        reason: reason.to_string(),
        last_seq: from.last_seq,
        audit_attempts: if state == SyncState::Synced {
            0
        } else {
            from.audit_attempts
        },
        next_audit_at: if state == SyncState::Dirty {
            Some(at)
        } else {
            None
        },
        updated_at: at,
    }
}
