//! The OTA command model integrators already know (command types, states, error codes), as the
//! REST API and the store see it. Key values are never part of a command: they come from the
//! card's stored key sets.

pub mod build;
mod field_error;
pub mod keys;
pub mod schema;
pub mod transport;

pub use field_error::FieldError;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use transport::{TransportChoice, TransportSpec};

/// What a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandType {
    /// RFM script built from typed profile parameters (service provider name, PLMN lists).
    ProfileUpdate,
    /// GlobalPlatform PUT KEY; the new keys are stored once the card's PoR confirms.
    KeyUpdate,
    /// RAM: load and install an uploaded applet.
    AppInstall,
    /// RAM: delete an applet instance or package.
    AppDelete,
    /// RFM: update a file's content.
    FileUpdate,
    /// A raw RFM script (C-APDUs given by the caller).
    Rfm,
    /// A raw RAM script (C-APDUs given by the caller).
    Ram,
    /// A subscription management operation (C-APDUs to the subscription application's TAR),
    /// made by the Secure Router, never posted directly.
    Subscription,
}

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CommandStatus {
    /// Stored, not yet handed to a transport.
    Pending,
    /// Handed to a transport (the packet is built and its counter used).
    Sent,
    /// The network reports it reached the handset; no PoR yet.
    Delivered,
    /// The card's PoR says it ran, with a success status word.
    Success,
    /// It ended without success: see the error.
    Failed,
    /// Cancelled before it was sent.
    Cancelled,
    /// Its validity period ran out before it was sent.
    Expired,
}

/// The names the API and the store write for an enumeration: `ALL`, `as_str`, `Display` and
/// `FromStr` from one table, so the three can never disagree.
macro_rules! wire_names {
    ($ty:ident, $what:literal, $doc:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            #[doc = $doc]
            pub const ALL: [$ty; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];

            /// The name as the API and the store write it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName {
                        what: $what,
                        value: s.to_string(),
                    })
            }
        }
    };
}

/// A name that is not one of the model's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownName {
    /// Which enumeration.
    pub what: &'static str,
    /// The value given.
    pub value: String,
}

wire_names!(CommandStatus, "command status", "Every status, in life order.", [
    Pending => "PENDING",
    Sent => "SENT",
    Delivered => "DELIVERED",
    Success => "SUCCESS",
    Failed => "FAILED",
    Cancelled => "CANCELLED",
    Expired => "EXPIRED",
]);

impl CommandStatus {
    /// Whether nothing more happens to a command in this status.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Success | Self::Failed | Self::Cancelled | Self::Expired
        )
    }
}

wire_names!(CommandType, "command type", "Every type.", [
    ProfileUpdate => "PROFILE_UPDATE",
    KeyUpdate => "KEY_UPDATE",
    AppInstall => "APP_INSTALL",
    AppDelete => "APP_DELETE",
    FileUpdate => "FILE_UPDATE",
    Rfm => "RFM",
    Ram => "RAM",
    Subscription => "SUBSCRIPTION",
]);

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The card ran the script and a command answered an error status word.
    CommandFailed,
    /// The card refused the packet's security (PoR status 01-0A), or the PoR did not verify.
    SecurityError,
    /// The network refused or lost the message.
    TransportError,
    /// No PoR came back within the timeout, after the retries.
    Timeout,
    /// The command cannot run in the state it or its card is in.
    InvalidState,
}

wire_names!(ErrorCode, "error code", "Every code.", [
    CommandFailed => "COMMAND_FAILED",
    SecurityError => "SECURITY_ERROR",
    TransportError => "TRANSPORT_ERROR",
    Timeout => "TIMEOUT",
    InvalidState => "INVALID_STATE",
]);

/// How urgent a command is: an urgent single command overtakes bulk work in the queue.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Priority {
    /// Campaign and batch work.
    Bulk,
    /// The default.
    #[default]
    Normal,
    /// Goes first.
    Urgent,
}

wire_names!(Priority, "priority", "Every priority, lowest first.", [
    Bulk => "BULK",
    Normal => "NORMAL",
    Urgent => "URGENT",
]);

impl Priority {
    /// Stored as a small integer, higher first (also the transport object's
    /// `parameters.priority`).
    pub fn rank(self) -> i64 {
        match self {
            Self::Bulk => 0,
            Self::Normal => 1,
            Self::Urgent => 2,
        }
    }

    /// From the stored integer.
    pub fn from_rank(rank: i64) -> Self {
        match rank {
            i64::MIN..=0 => Self::Bulk,
            1 => Self::Normal,
            _ => Self::Urgent,
        }
    }

    /// Its place in a transport's queue (campaign traffic goes as bulk).
    pub fn urgency(self) -> otagw_transport::Urgency {
        match self {
            Self::Bulk => otagw_transport::Urgency::Bulk,
            Self::Normal => otagw_transport::Urgency::Normal,
            Self::Urgent => otagw_transport::Urgency::Urgent,
        }
    }
}

/// The card a command is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// ICCID: 18 to 20 digits, F padding allowed.
    #[schema(pattern = "^[0-9]{18,20}[Ff]{0,2}$")]
    pub iccid: String,
    /// IMSI (6 to 15 digits), checked against the stored card when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9]{6,15}$")]
    pub imsi: Option<String>,
    /// MSISDN (3 to 15 digits, a leading '+' allowed), checked against the stored card when
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[+]?[0-9]{3,15}$")]
    pub msisdn: Option<String>,
}

/// Security settings: key identifiers, never key values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecuritySettings {
    /// SPI, 2 octets: a number (0x1621 = 5665) or 4 hex digits.
    #[schema(schema_with = spi_schema)]
    pub spi: HexOrNumber,
    /// KIc octet (algorithm in the low nibble, key version in the high nibble), 2 hex digits.
    #[schema(example = "12", pattern = r"^\s*[0-9A-Fa-f]{2}\s*$")]
    pub kic: String,
    /// KID octet, 2 hex digits.
    #[schema(example = "12", pattern = r"^\s*[0-9A-Fa-f]{2}\s*$")]
    pub kid: String,
    /// TAR, 6 hex digits.
    #[schema(example = "B00010", pattern = r"^\s*[0-9A-Fa-f]{6}\s*$")]
    pub tar: String,
}

/// `security.spi`: 4 hex digits or a number of 2 octets.
fn spi_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    Schema::OneOf(
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^\s*[0-9A-Fa-f]{4}\s*$")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(0xFFFF)),
            )
            .description(Some(
                "SPI, 2 octets: 4 hex digits or a number (0x1621 = 5665).",
            ))
            .examples([serde_json::json!("1621")])
            .build(),
    )
}

/// A value the API accepts as a JSON number or as a hex string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HexOrNumber {
    /// A number.
    Number(u64),
    /// Hex digits.
    Hex(String),
}

/// What a command carries: typed parameters, or APDUs for RFM / RAM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandData {
    /// A name for the operation (free text, kept for the caller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Typed parameters of FILE_UPDATE, PROFILE_UPDATE, KEY_UPDATE, APP_INSTALL, APP_DELETE
    /// (`FileUpdateParameters`, ... : which one goes with the command's `type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object)]
    pub parameters: Option<serde_json::Value>,
    /// C-APDUs in hex, for RFM and RAM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apdus: Vec<String>,
    /// Script format: `compact` (default) or `expanded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// A command as an integrator posts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OtaCommandRequest {
    /// The caller's id for the command; generated when absent. Unique per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// What the command does.
    #[serde(rename = "type")]
    pub command_type: CommandType,
    /// The card.
    pub target: Target,
    /// Key identifiers, SPI and TAR.
    pub security: SecuritySettings,
    /// The command's content.
    #[serde(default)]
    pub data: CommandData,
    /// Preferred transport: a name (`sms`; `catp`, `https` when configured) or the transport
    /// object (`{"type": "SMS" | "CAT_TP" | "BIP", "security": {...}, "parameters": {...}}`).
    /// Default: the card's profile's transport when offered, else `sms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportChoice>,
    /// Default NORMAL. The transport object's `parameters.priority`, when given, applies
    /// instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// Seconds the command may wait before it is sent, at least 1; EXPIRED after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub validity_period: Option<u32>,
}

/// One status word and the data before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusWordData {
    /// SW1SW2, 4 hex digits.
    pub sw: String,
    /// Response data, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data: String,
}

/// The card's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardResponse {
    /// PoR status code, 2 hex digits (00 = OK).
    pub por_status: String,
    /// Its name (TS 102 225 table 5.2).
    pub por_status_name: String,
    /// The last status word as a number (0x9000 = 36864), when the card ran the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The last response data, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Number of commands the card executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executed: Option<u32>,
    /// Every status word the card returned, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_words: Vec<StatusWordData>,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandError {
    /// The code.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

/// One entry of a command's history (the audit trail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandEvent {
    /// When (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-07T05:49:12.123Z")]
    pub at: i64,
    /// What: CREATED, CLAIMED, SECURED, SENT, ACCEPTED, DELIVERED, POR, RETRY, SUCCESS, FAILED, ...
    pub kind: String,
    /// Details (a counter, a network reference, a reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// A command's result, as `GET /api/v1/ota/commands/{id}` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OtaResult {
    /// The command.
    pub command_id: String,
    /// Its type.
    #[serde(rename = "type")]
    pub command_type: CommandType,
    /// Where it is.
    pub status: CommandStatus,
    /// The card.
    pub target: Target,
    /// Transport used.
    pub transport: String,
    /// Priority.
    pub priority: Priority,
    /// Batch it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_id: Option<String>,
    /// Last change (RFC 3339, UTC, milliseconds, as every time here).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-07T05:49:12.123Z")]
    pub timestamp: i64,
    /// Created.
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Handed to the transport.
    #[serde(
        default,
        with = "crate::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub sent_at: Option<i64>,
    /// When the gateway received the network's delivery report. The report can come after
    /// the PoR (the PoR already proves delivery): then this is later than `completedAt`, and
    /// the DELIVERED event follows the end in `events`; it is when the report came, not when
    /// the card got the message.
    #[serde(
        default,
        with = "crate::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<i64>,
    /// Terminal state reached.
    #[serde(
        default,
        with = "crate::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub completed_at: Option<i64>,
    /// Sends so far (a resend reuses the packet).
    pub attempts: u32,
    /// Counter the packet carries, once secured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counter: Option<u64>,
    /// The card's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<CardResponse>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CommandError>,
    /// History, in the order things happened (by time, then as recorded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<CommandEvent>,
}

#[cfg(test)]
mod wire_name_tests {
    use super::*;

    // The table the store and Display use must agree with serde's names on the API.
    fn agree<T: Serialize + FromStr + fmt::Display + PartialEq + fmt::Debug + Copy>(all: &[T]) {
        for v in all {
            let json = serde_json::to_value(v).unwrap_or_default();
            assert_eq!(json.as_str(), Some(v.to_string().as_str()));
            assert_eq!(v.to_string().parse::<T>().ok(), Some(*v));
        }
    }

    #[test]
    fn names_agree_with_serde_and_parse_back() {
        agree(&CommandStatus::ALL);
        agree(&CommandType::ALL);
        agree(&ErrorCode::ALL);
        agree(&Priority::ALL);
        assert_eq!(
            "DONE".parse::<CommandStatus>().err().map(|e| e.to_string()),
            Some("unknown command status \"DONE\"".to_string())
        );
    }
}
