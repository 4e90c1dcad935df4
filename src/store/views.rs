//! Read-only views for people (the operators' console): commands filtered and paged, counts
//! by status over a time window, key set metadata. None of them reads a key value.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{Millis, StoreError};
use crate::command::{CommandStatus, CommandType};

/// Which commands to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandFilter {
    /// Only in this status.
    pub status: Option<CommandStatus>,
    /// Only of this type.
    pub command_type: Option<CommandType>,
    /// Only for this card.
    pub iccid: Option<String>,
    /// Only those created before this one (created, id): the next page.
    pub before: Option<(Millis, String)>,
    /// At most this many.
    pub limit: u32,
}

/// A command as a list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSummary {
    /// Id.
    pub id: String,
    /// Type.
    pub command_type: CommandType,
    /// Card.
    pub iccid: String,
    /// Transport.
    pub transport: String,
    /// Status.
    pub status: CommandStatus,
    /// Created, ms.
    pub created_at: Millis,
    /// Last change, ms.
    pub updated_at: Millis,
    /// Sends so far.
    pub attempts: u32,
    /// The PoR's status code (2 hex digits) and name, when one came.
    pub por: Option<(String, String)>,
    /// The last status word, when the card ran the script.
    pub last_sw: Option<u16>,
    /// The error code, when it failed.
    pub error_code: Option<String>,
}

/// A key set's metadata: never its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySetInfo {
    /// Key version.
    pub version: u8,
    /// KIc algorithm for implicit codings (its name), if stored.
    pub kic_algorithm: Option<String>,
    /// KID algorithm, if stored.
    pub kid_algorithm: Option<String>,
    /// Whether a KIK is stored (KEY_UPDATE needs one).
    pub has_kik: bool,
    /// Last counter used.
    pub counter: u64,
    /// Last successful KEY_UPDATE, ms.
    pub rotated_at: Option<Millis>,
}

/// The views part of the store.
#[async_trait]
pub trait ViewStore: Send + Sync {
    /// An account's commands created at or after `since`, per status name.
    async fn command_counts_since(
        &self,
        account_id: &str,
        since: Millis,
    ) -> Result<BTreeMap<String, u64>, StoreError>;
    /// A page of an account's commands, newest first.
    async fn command_page(
        &self,
        account_id: &str,
        filter: &CommandFilter,
    ) -> Result<Vec<CommandSummary>, StoreError>;
    /// The key sets of a card of this account (empty for another account's card).
    async fn key_set_info(
        &self,
        account_id: &str,
        iccid: &str,
    ) -> Result<Vec<KeySetInfo>, StoreError>;
}
