//! Operations asked of the router: checked against the card's registry as last known, then
//! started in one store transaction with the command that carries them to the card.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{snapshot, Known, RouterError, SecureRouter};
use crate::command::build::plmn_bcd;
use crate::command::{
    CommandData, CommandType, HexOrNumber, OtaCommandRequest, Priority, SecuritySettings, Target,
};
use crate::script::subscription::{Download, SubscriptionCommand, SLOTS, TAR_SUBSCRIPTIONS};
use crate::store::subscriptions::{
    Applied, OperationRecord, Right, RouterChange, StoredSubscription, SubscriptionTemplate,
    SyncRecord, SyncState, TrailEntry,
};
use crate::store::NewCommand;

/// Who asked for an operation, as the audit trail names them (`token:<account>`,
/// `user:<name>`, `router`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester(pub String);

impl Requester {
    /// The router itself (automatic audits).
    pub fn router() -> Self {
        Self("router".into())
    }
}

/// A subscription to download (`POST /api/v1/cards/{iccid}/subscriptions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownloadRequest {
    /// The subscription template (its SPN and PLMNs).
    pub template: String,
    /// The subscription's IMSI, 6 to 15 digits.
    #[schema(pattern = "^[0-9]{6,15}$")]
    pub imsi: String,
    /// Ki, 32 hex digits, already enciphered under the card's KIK (the gateway never sees
    /// network keys in clear).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub ki: Option<String>,
    /// OPc, 32 hex digits, enciphered under the card's KIK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9A-Fa-f]{32}$")]
    pub opc: Option<String>,
    /// Enable it once downloaded (the card switches and notifies).
    #[serde(default)]
    pub enable: bool,
    /// Give it the fallback attribute.
    #[serde(default)]
    pub fallback: bool,
}

fn invalid(field: &str, problem: impl Into<String>) -> RouterError {
    RouterError::Invalid {
        field: field.to_string(),
        problem: problem.into(),
    }
}

fn key16(field: &str, value: Option<&str>) -> Result<Option<[u8; 16]>, RouterError> {
    let Some(v) = value else {
        return Ok(None);
    };
    let bytes = hex::decode(v.trim()).map_err(|e| invalid(field, format!("not hex: {e}")))?;
    <[u8; 16]>::try_from(bytes.as_slice())
        .map(Some)
        .map_err(|_| invalid(field, format!("{} octets, not 16", bytes.len())))
}

/// What an operation does to the card.
pub(super) enum Kind {
    Download(Download, String),
    Enable(u8),
    Delete(u8),
    Fallback(u8),
    Audit,
}

impl Kind {
    pub(super) fn name(&self) -> &'static str {
        match self {
            Kind::Download(..) => "DOWNLOAD",
            Kind::Enable(_) => "ENABLE",
            Kind::Delete(_) => "DELETE",
            Kind::Fallback(_) => "FALLBACK",
            Kind::Audit => "AUDIT",
        }
    }

    fn sub_id(&self) -> Option<u8> {
        match self {
            Kind::Download(d, _) => Some(d.id),
            Kind::Enable(id) | Kind::Delete(id) | Kind::Fallback(id) => Some(*id),
            Kind::Audit => None,
        }
    }

    fn command(&self) -> SubscriptionCommand {
        match self {
            Kind::Download(d, _) => SubscriptionCommand::Download(d.clone()),
            Kind::Enable(id) => SubscriptionCommand::Enable(*id),
            Kind::Delete(id) => SubscriptionCommand::Delete(*id),
            Kind::Fallback(id) => SubscriptionCommand::SetFallback(*id),
            Kind::Audit => SubscriptionCommand::Audit,
        }
    }

    /// What the operation record keeps of the request (never key values).
    fn params(&self) -> serde_json::Value {
        match self {
            Kind::Download(d, template) => json!({
                "subscriptionId": d.id,
                "imsi": d.imsi,
                "template": template,
                "enable": d.enable,
                "fallback": d.fallback,
                "keys": d.ki.is_some() || d.opc.is_some(),
            }),
            Kind::Enable(id) | Kind::Delete(id) | Kind::Fallback(id) => {
                json!({ "subscriptionId": id })
            }
            Kind::Audit => json!({}),
        }
    }
}

impl SecureRouter {
    /// Downloads a subscription from a template (and enables it when asked).
    pub async fn download(
        &self,
        account_id: &str,
        iccid: &str,
        req: &DownloadRequest,
        who: &Requester,
    ) -> Result<OperationRecord, RouterError> {
        let known = self.reach(account_id, iccid, Right::Manage).await?;
        // The card owner's templates (an enterprise with a grant uses its operator's), then
        // the caller's own.
        let mut template = self
            .subs()?
            .template(&known.account_id, &req.template)
            .await?;
        if template.is_none() && known.account_id != account_id {
            template = self.subs()?.template(account_id, &req.template).await?;
        }
        let template = template
            .ok_or_else(|| invalid("template", format!("no template {:?}", req.template)))?;
        if !(6..=15).contains(&req.imsi.len()) || !req.imsi.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "imsi",
                format!("{:?} is not 6 to 15 digits", req.imsi),
            ));
        }
        if known.subscriptions.iter().any(|s| s.imsi == req.imsi) {
            return Err(invalid(
                "imsi",
                format!(
                    "card {iccid} already holds a subscription with IMSI {}",
                    req.imsi
                ),
            ));
        }
        let kind = download_kind(
            &known,
            template,
            &req.imsi,
            (
                key16("ki", req.ki.as_deref())?,
                key16("opc", req.opc.as_deref())?,
            ),
            req.enable,
            req.fallback,
        )?;
        self.start(known, kind, who).await
    }

    /// Enables an installed subscription (the card switches, then notifies).
    pub async fn enable(
        &self,
        account_id: &str,
        iccid: &str,
        sub_id: u8,
        who: &Requester,
    ) -> Result<OperationRecord, RouterError> {
        let known = self.reach(account_id, iccid, Right::Manage).await?;
        let sub = self.named(&known, sub_id)?;
        if sub.enabled {
            return Err(RouterError::Conflict(
                format!("subscription {sub_id} of card {iccid} is enabled already"),
                None,
            ));
        }
        self.start(known, Kind::Enable(sub_id), who).await
    }

    /// Deletes a subscription that is neither enabled nor the fallback.
    pub async fn delete(
        &self,
        account_id: &str,
        iccid: &str,
        sub_id: u8,
        who: &Requester,
    ) -> Result<OperationRecord, RouterError> {
        let known = self.reach(account_id, iccid, Right::Manage).await?;
        let sub = self.named(&known, sub_id)?;
        if sub.enabled || sub.fallback {
            return Err(RouterError::Conflict(
                format!(
                    "subscription {sub_id} of card {iccid} is {}: the card refuses to delete it",
                    if sub.enabled {
                        "enabled"
                    } else {
                        "the fallback"
                    }
                ),
                None,
            ));
        }
        self.start(known, Kind::Delete(sub_id), who).await
    }

    /// Moves the fallback attribute to a subscription.
    pub async fn set_fallback(
        &self,
        account_id: &str,
        iccid: &str,
        sub_id: u8,
        who: &Requester,
    ) -> Result<OperationRecord, RouterError> {
        let known = self.reach(account_id, iccid, Right::Manage).await?;
        let sub = self.named(&known, sub_id)?;
        if sub.fallback {
            return Err(RouterError::Conflict(
                format!("subscription {sub_id} of card {iccid} holds the fallback already"),
                None,
            ));
        }
        self.start(known, Kind::Fallback(sub_id), who).await
    }

    /// Reads the card's registry; its answer replaces the stored one.
    pub async fn audit(
        &self,
        account_id: &str,
        iccid: &str,
        who: &Requester,
    ) -> Result<OperationRecord, RouterError> {
        let known = self.reach(account_id, iccid, Right::Audit).await?;
        self.start(known, Kind::Audit, who).await
    }

    fn named<'k>(
        &self,
        known: &'k Known,
        sub_id: u8,
    ) -> Result<&'k StoredSubscription, RouterError> {
        known
            .subscription(sub_id)
            .ok_or_else(|| RouterError::NotFound {
                what: "subscription",
                key: format!("{sub_id} of card {}", known.iccid),
                field: Some("subscriptionId"),
            })
    }

    /// Starts an operation: the card must have none in flight and be SYNCED (DIRTY for an
    /// audit); the operation, its command, the PENDING state and the trail entry are
    /// written together.
    pub(super) async fn start(
        &self,
        known: Known,
        kind: Kind,
        who: &Requester,
    ) -> Result<OperationRecord, RouterError> {
        let (op, change) = self.prepare_start(&known, &kind, who).await?;
        let applied = self.subs()?.apply(&change).await?;
        self.started(&known, &op, kind.name(), who, applied)
    }

    /// The change that starts an operation (written by the caller, alone or with others).
    pub(super) async fn prepare_start(
        &self,
        known: &Known,
        kind: &Kind,
        who: &Requester,
    ) -> Result<(OperationRecord, RouterChange), RouterError> {
        busy(&known.sync, &known.iccid, kind.name())?;
        let now = self.now();
        let op_id = uuid::Uuid::new_v4().to_string();
        let apdu = kind
            .command()
            .to_apdu()
            .map_err(|e| invalid("subscription", e.to_string()))?;
        let command = self
            .command_for(&known.account_id, &known.iccid, &[apdu.to_bytes()], now)
            .await?;
        let op = OperationRecord {
            id: op_id.clone(),
            account_id: known.account_id.clone(),
            iccid: known.iccid.clone(),
            kind: kind.name().to_string(),
            sub_id: kind.sub_id(),
            params: kind.params(),
            state: "SENT".into(),
            command_id: command.id.clone(),
            requested_by: who.0.clone(),
            result: json!({}),
            deadline: None,
            created_at: now,
            updated_at: now,
        };
        // An audit of a DIRTY card keeps it DIRTY until its answer comes.
        let state = if known.sync.state == SyncState::Dirty {
            SyncState::Dirty
        } else {
            SyncState::Pending
        };
        let sync = SyncRecord {
            state,
            operation_id: Some(op_id),
            updated_at: now,
            ..known.sync.clone()
        };
        let change = RouterChange {
            iccid: known.iccid.clone(),
            account_id: known.account_id.clone(),
            operation: None,
            start: Some((op.clone(), command)),
            // A registry implied by provisioning is written when first used.
            registry: known.implied.then(|| known.subscriptions.clone()),
            trail: Some(TrailEntry {
                seq: 0,
                at: now,
                what: format!("{} requested", kind.name()),
                who: who.0.clone(),
                operation_id: Some(op.id.clone()),
                answer: String::new(),
                before: known.snapshot(),
                after: snapshot(&known.subscriptions, &sync),
            }),
            sync: Some(sync),
            events: Vec::new(),
            plan: None,
            at: now,
        };
        Ok((op, change))
    }

    /// What a start's write came to: the operation, or why it did not start.
    pub(super) fn started(
        &self,
        known: &Known,
        op: &OperationRecord,
        kind: &str,
        who: &Requester,
        applied: Applied,
    ) -> Result<OperationRecord, RouterError> {
        match applied {
            Applied::Done => {
                tracing::debug!(
                    iccid = %known.iccid,
                    operation = %op.id,
                    kind,
                    who = %who.0,
                    "subscription operation sent"
                );
                self.gateway.notify();
                Ok(op.clone())
            }
            Applied::Busy(Some(sync)) => {
                busy(&sync, &known.iccid, kind)?;
                Err(RouterError::Conflict(
                    format!("card {} is busy", known.iccid),
                    None,
                ))
            }
            Applied::Busy(None) | Applied::Stale => Err(RouterError::Conflict(
                format!("card {} changed meanwhile: try again", known.iccid),
                None,
            )),
        }
    }

    /// The command that carries `apdus` to the card's subscription application: SMS, the
    /// card profile's SPI, KIc and KID when it names them, else SPI `16 21` (CC, ciphered,
    /// counter higher, PoR asked) with the card's lowest key version.
    pub(super) async fn command_for(
        &self,
        account_id: &str,
        iccid: &str,
        apdus: &[Vec<u8>],
        now: i64,
    ) -> Result<NewCommand, RouterError> {
        let card =
            self.store
                .card(account_id, iccid)
                .await?
                .ok_or_else(|| RouterError::NotFound {
                    what: "card",
                    key: iccid.to_string(),
                    field: None,
                })?;
        if card.msisdn.is_none() {
            return Err(invalid(
                "iccid",
                format!("card {iccid} has no MSISDN to reach it by"),
            ));
        }
        let version = card
            .key_versions
            .iter()
            .map(|k| k.version)
            .min()
            .ok_or_else(|| invalid("iccid", format!("card {iccid} has no key set")))?;
        let set = self.store.key_set(iccid, version).await?.ok_or_else(|| {
            invalid(
                "iccid",
                format!("card {iccid} has no key set version {version}"),
            )
        })?;
        let defaults = self
            .store
            .profile_of_card(iccid)
            .await?
            .map(|p| p.defaults)
            .unwrap_or_default();
        let kic_nibble = set
            .kic_algorithm
            .map_or(crate::security::CipherAlgorithm::AesCbc.kic_nibble(), |a| {
                a.kic_nibble()
            });
        let kid_nibble = set.kid_algorithm.map_or(
            crate::security::IntegrityAlgorithm::AesCmac.kid_nibble(),
            |a| a.kid_nibble(),
        );
        let security = SecuritySettings {
            spi: HexOrNumber::Hex(defaults.spi.unwrap_or_else(|| "1621".into())),
            kic: defaults
                .kic_byte
                .unwrap_or_else(|| format!("{:02X}", (version << 4) | kic_nibble)),
            kid: defaults
                .kid_byte
                .unwrap_or_else(|| format!("{:02X}", (version << 4) | kid_nibble)),
            tar: hex::encode_upper(TAR_SUBSCRIPTIONS),
        };
        let id = uuid::Uuid::new_v4().to_string();
        let request = OtaCommandRequest {
            command_id: Some(id.clone()),
            command_type: CommandType::Subscription,
            target: Target {
                iccid: iccid.to_string(),
                imsi: None,
                msisdn: None,
            },
            security,
            data: CommandData {
                apdus: apdus.iter().map(hex::encode_upper).collect(),
                ..CommandData::default()
            },
            transport: None,
            priority: None,
            validity_period: None,
        };
        crate::pipeline::validate_request(&request)
            .map_err(|e| invalid(&format!("profile.{}", e.field), e.problem))?;
        Ok(NewCommand {
            id,
            account_id: account_id.to_string(),
            batch_id: None,
            command_type: CommandType::Subscription,
            iccid: iccid.to_string(),
            transport: "sms".into(),
            priority: Priority::Normal,
            request: serde_json::to_value(&request)
                .map_err(|e| invalid("subscription", e.to_string()))?,
            expires_at: None,
            created_at: now,
        })
    }
}

/// A DOWNLOAD of `imsi` from `template` on the card `known` describes: the lowest free id,
/// the template's SPN and PLMNs; refused when every slot is taken.
pub(super) fn download_kind(
    known: &Known,
    template: SubscriptionTemplate,
    imsi: &str,
    (ki, opc): (Option<[u8; 16]>, Option<[u8; 16]>),
    enable: bool,
    fallback: bool,
) -> Result<Kind, RouterError> {
    let iccid = &known.iccid;
    if known.subscriptions.len() >= SLOTS {
        return Err(RouterError::Conflict(
            format!(
                "card {iccid} holds {} subscriptions, as many as it has slots: delete one first",
                known.subscriptions.len()
            ),
            None,
        ));
    }
    let id = (1..=u8::MAX)
        .find(|id| known.subscription(*id).is_none())
        .ok_or_else(|| RouterError::Conflict(format!("card {iccid} has no free id"), None))?;
    let mut plmns = Vec::with_capacity(template.plmns.len() * 3);
    for (i, p) in template.plmns.iter().enumerate() {
        let coded = plmn_bcd(&format!("template.plmns[{i}]"), p)
            .map_err(|e| invalid("template", e.to_string()))?;
        plmns.extend_from_slice(&coded);
    }
    let download = Download {
        id,
        imsi: imsi.to_string(),
        spn: template.spn.as_bytes().to_vec(),
        plmns,
        ki,
        opc,
        enable,
        fallback,
        bootstrap: false,
    };
    Ok(Kind::Download(download, template.name))
}

/// Refuses when the card has an operation in flight, or is DIRTY for anything but an audit.
fn busy(sync: &SyncRecord, iccid: &str, kind: &str) -> Result<(), RouterError> {
    if let Some(op) = &sync.operation_id {
        return Err(RouterError::Conflict(
            format!("card {iccid} has operation {op} in flight"),
            Some(op.clone()),
        ));
    }
    if sync.state == SyncState::Dirty && kind != "AUDIT" {
        return Err(RouterError::Conflict(
            format!(
                "card {iccid} is DIRTY ({}): its registry is repaired by an audit first",
                sync.reason
            ),
            None,
        ));
    }
    Ok(())
}
