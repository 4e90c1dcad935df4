//! What SCP81 (HTTPS OTA, GP Amendment B) keeps in the store: each card's PSK-TLS keys (key
//! versions 0x40-0x4F, sealed at rest like the SCP80 keys) and the script chunks queued for a
//! card's next administration session, with the responses the card posted back.
//!
//! A command sent over HTTPS is split into chunks (one `AE 80 ... 00 00` script each). A chunk
//! is QUEUED until a session hands it to the card (SENT), and ANSWERED once the card's next POST
//! carries its R-APDUs. A session that breaks leaves its SENT chunk for the next session
//! ([`Scp81Store::requeue_sent`]); an ANSWERED chunk is never handed out again.

use async_trait::async_trait;
pub use otagw_https::admin::ScriptKind;

use super::{Millis, StoreError};

/// SCP81 key versions (GP Amendment B: PSK-TLS keys are key versions 0x40 to 0x4F).
pub const PSK_KEY_VERSIONS: std::ops::RangeInclusive<u8> = 0x40..=0x4F;

/// A card's PSK-TLS key.
#[derive(Clone, PartialEq, Eq)]
pub struct PskRecord {
    pub iccid: String,
    /// 0x40-0x4F.
    pub version: u8,
    /// The PSK identity the card presents (trigger tag 85).
    pub identity: Vec<u8>,
    /// The pre-shared key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PskRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PskRecord")
            .field("iccid", &self.iccid)
            .field("version", &self.version)
            .field("identity", &hex::encode_upper(&self.identity))
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Waiting for a session.
    Queued,
    /// Handed to the card in the session now open; no answer yet.
    Sent,
    /// The card posted its responses.
    Answered,
}

impl ChunkState {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkState::Queued => "QUEUED",
            ChunkState::Sent => "SENT",
            ChunkState::Answered => "ANSWERED",
        }
    }

    pub fn parse(s: &str) -> Option<ChunkState> {
        match s {
            "QUEUED" => Some(ChunkState::Queued),
            "SENT" => Some(ChunkState::Sent),
            "ANSWERED" => Some(ChunkState::Answered),
            _ => None,
        }
    }
}

/// One chunk to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChunk {
    /// Expanded remote command script, `AE 80 ... 00 00`.
    pub script: Vec<u8>,
    /// `X-Admin-Targeted-Application` (`//aid/<RID>/<PIX>`) when not for the security domain.
    pub targeted_application: Option<String>,
    /// GP card content management or ETSI RFM (its media types).
    pub kind: ScriptKind,
}

/// A chunk as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkRecord {
    pub account_id: String,
    pub command_id: String,
    /// Position in its command, from 0.
    pub seq: u32,
    pub iccid: String,
    pub script: Vec<u8>,
    pub targeted_application: Option<String>,
    pub kind: ScriptKind,
    pub state: ChunkState,
    /// The card's response script (`AF 80 ... 00 00`), once answered.
    pub response: Option<Vec<u8>>,
    /// The card's `X-Admin-Script-Status` for it, once answered.
    pub script_status: Option<String>,
    /// Times it was handed to a card.
    pub sends: u32,
}

/// The SCP81 part of the store.
#[async_trait]
pub trait Scp81Store: Send + Sync {
    /// Sets (or replaces) a card's PSK of `version` (0x40-0x4F). The identity is unique
    /// across cards.
    async fn put_psk(
        &self,
        iccid: &str,
        version: u8,
        identity: &[u8],
        key: &[u8],
    ) -> Result<(), StoreError>;
    /// A card's PSK of a version.
    async fn psk(&self, iccid: &str, version: u8) -> Result<Option<PskRecord>, StoreError>;
    /// The PSK with this identity.
    async fn psk_by_identity(&self, identity: &[u8]) -> Result<Option<PskRecord>, StoreError>;

    /// Queues a command's chunks for its card; `false` (and nothing written) when the command
    /// already has chunks (a resumed command keeps its first split).
    async fn queue_chunks(
        &self,
        account_id: &str,
        command_id: &str,
        iccid: &str,
        chunks: &[NewChunk],
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// The chunks of a command, in order.
    async fn command_chunks(
        &self,
        account_id: &str,
        command_id: &str,
    ) -> Result<Vec<ChunkRecord>, StoreError>;
    /// A session starts for the card: chunks left SENT by a broken session go back to QUEUED.
    async fn requeue_sent(&self, iccid: &str, now: Millis) -> Result<u64, StoreError>;
    /// The card's oldest SENT chunk: the one an interrupted session left unanswered (a card
    /// resuming posts its responses first, with `X-Admin-Resume: true`).
    async fn sent_chunk(&self, iccid: &str) -> Result<Option<ChunkRecord>, StoreError>;
    /// One chunk of the card's, by its command and position (what a POST's URI names).
    async fn card_chunk(
        &self,
        iccid: &str,
        command_id: &str,
        seq: u32,
    ) -> Result<Option<ChunkRecord>, StoreError>;
    /// Removes a command's QUEUED chunks (an earlier chunk failed: the rest must not run).
    async fn drop_queued(&self, account_id: &str, command_id: &str) -> Result<u64, StoreError>;
    /// Hands out the card's oldest QUEUED chunk (now SENT), if any.
    async fn next_chunk(&self, iccid: &str, now: Millis)
        -> Result<Option<ChunkRecord>, StoreError>;
    /// Records the card's answer to a SENT chunk; `false` if it was not SENT (answered already
    /// or dropped).
    async fn answer_chunk(
        &self,
        account_id: &str,
        command_id: &str,
        seq: u32,
        response: &[u8],
        script_status: &str,
        now: Millis,
    ) -> Result<bool, StoreError>;
    /// Removes a command's chunks (it ended without its session: they must not run later).
    async fn drop_chunks(&self, account_id: &str, command_id: &str) -> Result<u64, StoreError>;
}
