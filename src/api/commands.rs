//! `/api/v1/ota/commands` and `/api/v1/ota/batch`.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, JsonBody};
use crate::command::build::{build_script, BuildContext};
use crate::command::{CommandEvent, CommandStatus, OtaCommandRequest, OtaResult, Target};
use crate::pipeline::secure::{card_class, card_gp, requested_applet};
use crate::pipeline::validate_request;
use crate::store::{Account, BatchRecord, CancelOutcome, CommandRecord, NewCommand};

use crate::command::transport::TRANSPORTS;

/// `202` answer to a new command.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The command's id.
    pub command_id: String,
    /// PENDING.
    pub status: CommandStatus,
}

/// The transport the card's profile names as its default, if any.
async fn profile_transport(state: &AppState, iccid: &str) -> Result<Option<String>, ApiError> {
    // The card was read for this account already: its profile by ICCID, in one statement.
    Ok(state
        .store
        .profile_of_card(iccid)
        .await
        .map_err(ApiError::store)?
        .and_then(|p| p.defaults.transport))
}

/// Checks a request completely (fields, card, key versions, the script builds) and turns it
/// into the command to store. `prefix` is prepended to field names (`commands[2].`).
pub(crate) async fn prepare(
    state: &AppState,
    account: &Account,
    req: OtaCommandRequest,
    batch_id: Option<&str>,
    prefix: &str,
) -> Result<NewCommand, ApiError> {
    let f = |name: &str| format!("{prefix}{name}");
    if req.command_type == crate::command::CommandType::Subscription {
        return Err(ApiError::invalid(
            f("type"),
            "SUBSCRIPTION commands are made by the Secure Router: use \
             /api/v1/cards/{iccid}/subscriptions",
        ));
    }
    let sec = validate_request(&req).map_err(|e| ApiError::from_field(e, prefix))?;
    // In range (validate_request checked it): the transport named, its field, and the
    // command's own priority.
    let asked = req
        .transport
        .as_ref()
        .map(|t| t.check())
        .transpose()
        .map_err(|e| ApiError::from_field(e, prefix))?
        .unwrap_or_default();
    let store = &state.store;
    let card = store
        .card(&account.id, &req.target.iccid)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::not_found(
                Some(&f("target.iccid")),
                format!("card {} not found", req.target.iccid),
            )
        })?;
    // The target's other identities must be this card's (the pipeline checks them again
    // when it sends, in case the card changed since).
    if let (Some(want), Some(have)) = (&req.target.imsi, &card.imsi) {
        if want != have {
            return Err(ApiError::invalid(
                f("target.imsi"),
                format!("{want} is not the IMSI of card {}", card.iccid),
            ));
        }
    }
    if let (Some(want), Some(have)) = (&req.target.msisdn, &card.msisdn) {
        if want.trim_start_matches('+') != have.trim_start_matches('+') {
            return Err(ApiError::invalid(
                f("target.msisdn"),
                format!("{want} is not the MSISDN of card {}", card.iccid),
            ));
        }
    }
    // No transport asked for: the card's profile default when this gateway offers it, else
    // SMS (recorded as SMS: the command says how it goes). One asked for must be offered.
    let transport_field = f(if asked.field.is_empty() {
        "transport"
    } else {
        asked.field
    });
    let transport = match asked.name {
        Some(t) => t,
        None => profile_transport(state, &card.iccid)
            .await?
            .filter(|t| state.gateway.offers(t))
            .unwrap_or_else(|| "sms".into()),
    };
    if !TRANSPORTS.contains(&transport.as_str()) {
        return Err(ApiError::invalid(
            transport_field,
            format!("unknown transport {transport:?}: one of sms, catp, https"),
        ));
    }
    if !state.gateway.offers(&transport) {
        let offered = state.gateway.offered();
        return Err(ApiError::invalid(
            transport_field,
            format!(
                "transport {transport:?} is not configured on this gateway: it offers {}",
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            ),
        )
        .with_detail("transport", transport.clone())
        .with_detail("offered", offered));
    }
    if card.msisdn.is_none() {
        return Err(ApiError::invalid(
            f("target.iccid"),
            format!("card {} has no MSISDN to reach it by", card.iccid),
        ));
    }
    let mut counter_set = None;
    let mut versions = vec![("security.kic", sec.kic >> 4)];
    if sec.kid >> 4 != sec.kic >> 4 {
        versions.push(("security.kid", sec.kid >> 4));
    }
    for (field, version) in versions {
        let set = store
            .key_set(&card.iccid, version)
            .await
            .map_err(ApiError::store)?
            .ok_or_else(|| {
                ApiError::invalid(
                    f(field),
                    format!("card {} has no key set version {version}", card.iccid),
                )
            })?;
        if version == sec.counter_version() {
            counter_set = Some(set);
        }
    }
    let key_set = counter_set.ok_or_else(|| ApiError::invalid(f("security"), "no key set"))?;
    let applet = match requested_applet(&req) {
        Some(id) => Some(
            store
                .applet(&account.id, id)
                .await
                .map_err(ApiError::store)?
                .ok_or_else(|| {
                    ApiError::not_found(
                        Some(&f("data.parameters.appletId")),
                        format!("applet {id} not found"),
                    )
                })?
                .content,
        ),
        None => None,
    };
    let gp = card_gp(store.as_ref(), &account.id, &card.iccid)
        .await
        .map_err(ApiError::store)?
        .map_err(|e| ApiError::invalid(f("target.iccid"), e))?;
    let ctx = BuildContext {
        card_class: card_class(&card.attributes),
        key_set: &key_set,
        applet: applet.as_deref(),
        max_script_len: state.gateway.transports().max_script_len(&transport),
        gp,
    };
    // Built once here to refuse what cannot be built; the pipeline builds it again when it
    // secures it (KEY_UPDATE keys are generated then, not now).
    if let Err(e) = build_script(&req, &ctx, &mut rand::thread_rng()) {
        return Err(ApiError::invalid(f(e.field()), e.problem()));
    }
    let now = state.gateway.clock().now_ms();
    let id = req
        .command_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    Ok(NewCommand {
        id,
        account_id: account.id.clone(),
        batch_id: batch_id.map(str::to_string),
        command_type: req.command_type,
        iccid: card.iccid.clone(),
        transport,
        priority: asked.priority.or(req.priority).unwrap_or_default(),
        expires_at: req.validity_period.map(|s| now + i64::from(s) * 1000),
        request: serde_json::to_value(&req)
            .map_err(|e| ApiError::bad_request(None, e.to_string()))?,
        created_at: now,
    })
}

/// Submit an OTA command.
#[utoipa::path(post, path = "/api/v1/ota/commands", tag = "commands",
    request_body = OtaCommandRequest,
    responses((status = 202, body = Accepted), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(req): JsonBody<OtaCommandRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let command = prepare(&state, &account, req, None, "").await?;
    state
        .store
        .insert_command(&command)
        .await
        .map_err(|e| ApiError::store(e).for_command(&command.id))?;
    state.gateway.notify();
    Ok((
        StatusCode::ACCEPTED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/ota/commands/{}", command.id),
        )],
        Json(Accepted {
            command_id: command.id,
            status: CommandStatus::Pending,
        }),
    ))
}

/// The API's view of a stored command.
pub fn result_of(record: &CommandRecord, events: Vec<CommandEvent>) -> OtaResult {
    let target = serde_json::from_value::<OtaCommandRequest>(record.request.clone())
        .map(|r| r.target)
        .unwrap_or(Target {
            iccid: record.iccid.clone(),
            imsi: None,
            msisdn: None,
        });
    OtaResult {
        command_id: record.id.clone(),
        command_type: record.command_type,
        status: record.status,
        target,
        transport: record.transport.clone(),
        priority: record.priority,
        batch_id: record.batch_id.clone(),
        timestamp: record.updated_at,
        created_at: record.created_at,
        sent_at: record.sent_at,
        delivered_at: record.delivered_at,
        completed_at: record.completed_at,
        attempts: record.attempts,
        counter: record.secured.as_ref().map(|s| s.counter),
        response: record.response.clone(),
        error: record.error.clone(),
        events,
    }
}

/// A command's result and history.
#[utoipa::path(get, path = "/api/v1/ota/commands/{commandId}", tag = "commands",
    params(("commandId" = String, Path, description = "the command's id")),
    responses((status = 200, body = OtaResult), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(command_id): Path<String>,
) -> Result<Json<OtaResult>, ApiError> {
    let (record, events) = state
        .store
        .command(&account.id, &command_id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::not_found(Some("commandId"), format!("command {command_id} not found"))
                .for_command(&command_id)
        })?;
    Ok(Json(result_of(&record, events)))
}

/// Cancel a command not yet sent (409 once it is).
#[utoipa::path(delete, path = "/api/v1/ota/commands/{commandId}", tag = "commands",
    params(("commandId" = String, Path, description = "the command's id")),
    responses((status = 200, body = Accepted), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(command_id): Path<String>,
) -> Result<Json<Accepted>, ApiError> {
    let outcome = state
        .store
        .cancel_command(&account.id, &command_id, state.gateway.clock().now_ms())
        .await
        .map_err(|e| ApiError::store(e).for_command(&command_id))?;
    match outcome {
        CancelOutcome::Cancelled => Ok(Json(Accepted {
            command_id,
            status: CommandStatus::Cancelled,
        })),
        CancelOutcome::NotCancellable(status) => Err(ApiError::conflict(
            "INVALID_STATE",
            format!("command {command_id} is {status}: only a PENDING command can be cancelled"),
        )
        .with_detail("status", status.as_str())
        .for_command(&command_id)),
    }
}

/// Options of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchOptions {
    /// Run the commands at once (default) or one after another.
    #[serde(default = "yes")]
    pub parallel: bool,
    /// Cancel the commands not yet sent when one fails.
    #[serde(default)]
    pub stop_on_error: bool,
    /// Resends per command, 0 to 20 (default: the gateway's policy); a command's own
    /// `transport.parameters.retries` goes first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 20)]
    pub max_retries: Option<u32>,
}

fn yes() -> bool {
    true
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            parallel: true,
            stop_on_error: false,
            max_retries: None,
        }
    }
}

/// A batch as posted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchRequest {
    /// The commands, 1 to 10,000.
    #[schema(min_items = 1, max_items = 10000)]
    pub commands: Vec<OtaCommandRequest>,
    /// Options.
    #[serde(default)]
    pub options: BatchOptions,
}

/// `202` answer to a batch.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchAccepted {
    /// The batch's id.
    pub batch_id: String,
    /// Its commands, in order.
    pub command_ids: Vec<String>,
}

/// Submit a batch of commands (all stored, or none).
#[utoipa::path(post, path = "/api/v1/ota/batch", tag = "commands",
    request_body = BatchRequest,
    responses((status = 202, body = BatchAccepted), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_batch(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(batch): JsonBody<BatchRequest>,
) -> Result<impl IntoResponse, ApiError> {
    if batch.commands.is_empty() {
        return Err(ApiError::invalid(
            "commands",
            "a batch needs at least one command",
        ));
    }
    if batch.commands.len() > 10_000 {
        return Err(ApiError::invalid(
            "commands",
            format!("{} commands: at most 10000 per batch", batch.commands.len()),
        ));
    }
    if let Some(n) = batch.options.max_retries.filter(|n| *n > 20) {
        return Err(
            ApiError::invalid("options.maxRetries", format!("{n}: at most 20"))
                .with_detail("max", 20),
        );
    }
    let batch_id = uuid::Uuid::new_v4().to_string();
    let mut commands = Vec::with_capacity(batch.commands.len());
    let mut seen = std::collections::HashSet::new();
    for (i, req) in batch.commands.into_iter().enumerate() {
        let prefix = format!("commands[{i}].");
        let c = prepare(&state, &account, req, Some(&batch_id), &prefix)
            .await
            .map_err(|e| e.with_detail("index", i))?;
        if !seen.insert(c.id.clone()) {
            return Err(ApiError::invalid(
                format!("{prefix}commandId"),
                format!("{} appears twice in the batch", c.id),
            )
            .with_detail("index", i));
        }
        commands.push(c);
    }
    let record = BatchRecord {
        id: batch_id.clone(),
        account_id: account.id.clone(),
        options: serde_json::to_value(&batch.options).unwrap_or_default(),
        created_at: state.gateway.clock().now_ms(),
        command_ids: commands.iter().map(|c| c.id.clone()).collect(),
    };
    state
        .store
        .insert_batch(&record, &commands)
        .await
        .map_err(ApiError::store)?;
    state.gateway.notify();
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAccepted {
            batch_id,
            command_ids: record.command_ids,
        }),
    ))
}

/// A batch's results.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchResult {
    /// Id.
    pub batch_id: String,
    /// Options.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
    /// Created (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Commands.
    pub total: usize,
    /// Commands per status.
    pub totals: BTreeMap<String, usize>,
    /// Whether every command has ended.
    pub finished: bool,
    /// Per-command results, in order.
    pub results: Vec<OtaResult>,
}

/// A batch's per-command results and totals.
#[utoipa::path(get, path = "/api/v1/ota/batch/{batchId}", tag = "commands",
    params(("batchId" = String, Path, description = "the batch's id")),
    responses((status = 200, body = BatchResult), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_batch(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(batch_id): Path<String>,
) -> Result<Json<BatchResult>, ApiError> {
    let batch = state
        .store
        .batch(&account.id, &batch_id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| {
            ApiError::not_found(Some("batchId"), format!("batch {batch_id} not found"))
        })?;
    let records = state
        .store
        .batch_commands(&account.id, &batch_id)
        .await
        .map_err(ApiError::store)?;
    let mut totals = BTreeMap::new();
    for r in &records {
        *totals.entry(r.status.to_string()).or_insert(0) += 1;
    }
    Ok(Json(BatchResult {
        batch_id,
        options: batch.options,
        created_at: batch.created_at,
        total: records.len(),
        finished: records.iter().all(|r| r.status.is_terminal()),
        totals,
        results: records.iter().map(|r| result_of(r, Vec::new())).collect(),
    }))
}
