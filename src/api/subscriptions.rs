//! Subscription management (the Secure Router): a card's subscriptions and sync state, the
//! operations that change them, its audit trail, and subscription templates.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::cards::path_iccid;
use super::{ApiError, AppState, JsonBody};
use crate::store::subscriptions::{
    BootstrapRule, GrantRecord, OperationRecord, Right, StoredSubscription, SubscriptionTemplate,
    SyncState, TrailEntry,
};
use crate::store::Account;
use crate::subscription::{DownloadRequest, Requester, RouterError, SecureRouter};

/// A card's subscriptions as last known.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionsView {
    /// The card.
    pub iccid: String,
    /// SYNCED, PENDING (an operation in flight) or DIRTY (an audit repairs it).
    pub sync_state: SyncState,
    /// Why DIRTY.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dirty_reason: String,
    /// The operation in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// Whether the registry is the one provisioning implies (never read from the card).
    pub from_provisioning: bool,
    /// The last notification sequence number taken.
    pub last_notification: u16,
    /// The subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
}

/// `202` answer to an operation.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationAccepted {
    /// The operation's id.
    pub operation_id: String,
    /// The subscription concerned (a download's new id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<u8>,
    /// The command that carries it to the card.
    pub command_id: String,
}

/// An operation as `GET /api/v1/subscription-operations/{id}` shows it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OperationView {
    /// Id.
    pub operation_id: String,
    /// The card.
    pub iccid: String,
    /// DOWNLOAD, ENABLE, DELETE, FALLBACK or AUDIT.
    pub kind: String,
    /// SENT, AWAITING_NOTIFICATION, DONE or FAILED.
    pub state: String,
    /// The subscription concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription_id: Option<u8>,
    /// What was asked.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// The command that carries it.
    pub command_id: String,
    /// Who asked.
    pub requested_by: String,
    /// The card's answers: the command's end, the notification.
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
    /// AWAITING_NOTIFICATION: the notification is due by then.
    #[serde(
        default,
        with = "crate::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deadline: Option<i64>,
    /// Created.
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Last change.
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: i64,
}

impl From<OperationRecord> for OperationView {
    fn from(o: OperationRecord) -> Self {
        Self {
            operation_id: o.id,
            iccid: o.iccid,
            kind: o.kind,
            state: o.state,
            subscription_id: o.sub_id,
            params: o.params,
            command_id: o.command_id,
            requested_by: o.requested_by,
            result: o.result,
            deadline: o.deadline,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// One entry of a card's audit trail.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrailView {
    /// Its place (newest highest; `before` pages on it).
    pub seq: i64,
    /// When.
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// What happened.
    pub what: String,
    /// Who asked (`token:<account>`, `user:<name>`, `card`, `router`).
    pub who: String,
    /// The operation concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_id: Option<String>,
    /// The card's answer.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer: String,
    /// Sync state and subscriptions before.
    #[schema(value_type = Object)]
    pub before: serde_json::Value,
    /// And after.
    #[schema(value_type = Object)]
    pub after: serde_json::Value,
}

impl From<TrailEntry> for TrailView {
    fn from(t: TrailEntry) -> Self {
        Self {
            seq: t.seq,
            at: t.at,
            what: t.what,
            who: t.who,
            operation_id: t.operation_id,
            answer: t.answer,
            before: t.before,
            after: t.after,
        }
    }
}

/// Paging of the audit trail.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TrailQuery {
    /// Entries older than this `seq`.
    pub before: Option<i64>,
    /// Entries per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

fn router(state: &AppState) -> Result<&SecureRouter, ApiError> {
    state.router.as_deref().ok_or_else(|| {
        ApiError::conflict(
            "NOT_AVAILABLE",
            "subscription management is not running on this gateway",
        )
    })
}

fn who(account: &Account) -> Requester {
    Requester(format!("token:{}", account.name))
}

fn api_error(e: RouterError) -> ApiError {
    match e {
        RouterError::NotFound { what, key, field } => {
            ApiError::not_found(field, format!("{what} {key} not found"))
        }
        RouterError::Invalid { field, problem } => ApiError::invalid(field, problem),
        RouterError::Conflict(message, operation) => {
            let e = ApiError::conflict("CONFLICT", message);
            match operation {
                Some(op) => e.with_detail("operationId", op),
                None => e,
            }
        }
        RouterError::Forbidden(m) => ApiError::forbidden(m),
        RouterError::Store(e) => ApiError::store(e),
    }
}

fn sub_id(raw: &str) -> Result<u8, ApiError> {
    raw.trim()
        .parse::<u8>()
        .ok()
        .filter(|id| *id >= 1)
        .ok_or_else(|| {
            ApiError::not_found(
                Some("subscriptionId"),
                format!("subscription {raw:?} not found: ids are 1 to 255"),
            )
        })
}

fn accepted(op: OperationRecord) -> impl IntoResponse {
    (
        StatusCode::ACCEPTED,
        [(
            axum::http::header::LOCATION,
            format!("/api/v1/subscription-operations/{}", op.id),
        )],
        Json(OperationAccepted {
            operation_id: op.id,
            subscription_id: op.sub_id,
            command_id: op.command_id,
        }),
    )
}

/// A card's subscriptions as last known, with its sync state.
#[utoipa::path(get, path = "/api/v1/cards/{iccid}/subscriptions", tag = "subscriptions",
    params(("iccid" = String, Path, description = "ICCID")),
    responses((status = 200, body = SubscriptionsView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
) -> Result<Json<SubscriptionsView>, ApiError> {
    let known = router(&state)?
        .known(&account.id, &path_iccid(&iccid))
        .await
        .map_err(api_error)?;
    Ok(Json(SubscriptionsView {
        iccid: known.iccid,
        sync_state: known.sync.state,
        dirty_reason: known.sync.reason,
        operation_id: known.sync.operation_id,
        from_provisioning: known.implied,
        last_notification: known.sync.last_seq,
        subscriptions: known.subscriptions,
    }))
}

/// Downloads a subscription from a template (and enables it when asked).
#[utoipa::path(post, path = "/api/v1/cards/{iccid}/subscriptions", tag = "subscriptions",
    params(("iccid" = String, Path, description = "ICCID")),
    request_body = DownloadRequest,
    responses((status = 202, body = OperationAccepted), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
    JsonBody(req): JsonBody<DownloadRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let op = router(&state)?
        .download(&account.id, &path_iccid(&iccid), &req, &who(&account))
        .await
        .map_err(api_error)?;
    Ok(accepted(op))
}

/// Enables an installed subscription: the card switches and notifies the outcome.
#[utoipa::path(post, path = "/api/v1/cards/{iccid}/subscriptions/{subscriptionId}/enable",
    tag = "subscriptions",
    params(("iccid" = String, Path, description = "ICCID"),
        ("subscriptionId" = u8, Path, description = "Subscription id on the card")),
    responses((status = 202, body = OperationAccepted), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn enable(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path((iccid, sub)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let op = router(&state)?
        .enable(
            &account.id,
            &path_iccid(&iccid),
            sub_id(&sub)?,
            &who(&account),
        )
        .await
        .map_err(api_error)?;
    Ok(accepted(op))
}

/// Deletes a subscription: refused (409) while it is enabled or holds the fallback.
#[utoipa::path(delete, path = "/api/v1/cards/{iccid}/subscriptions/{subscriptionId}",
    tag = "subscriptions",
    params(("iccid" = String, Path, description = "ICCID"),
        ("subscriptionId" = u8, Path, description = "Subscription id on the card")),
    responses((status = 202, body = OperationAccepted), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path((iccid, sub)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let op = router(&state)?
        .delete(
            &account.id,
            &path_iccid(&iccid),
            sub_id(&sub)?,
            &who(&account),
        )
        .await
        .map_err(api_error)?;
    Ok(accepted(op))
}

/// Moves the fallback attribute to a subscription.
#[utoipa::path(put, path = "/api/v1/cards/{iccid}/subscriptions/{subscriptionId}/fallback",
    tag = "subscriptions",
    params(("iccid" = String, Path, description = "ICCID"),
        ("subscriptionId" = u8, Path, description = "Subscription id on the card")),
    responses((status = 202, body = OperationAccepted), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn fallback(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path((iccid, sub)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let op = router(&state)?
        .set_fallback(
            &account.id,
            &path_iccid(&iccid),
            sub_id(&sub)?,
            &who(&account),
        )
        .await
        .map_err(api_error)?;
    Ok(accepted(op))
}

/// Reads the card's registry; the answer replaces the stored one.
#[utoipa::path(post, path = "/api/v1/cards/{iccid}/audit", tag = "subscriptions",
    params(("iccid" = String, Path, description = "ICCID")),
    responses((status = 202, body = OperationAccepted), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let op = router(&state)?
        .audit(&account.id, &path_iccid(&iccid), &who(&account))
        .await
        .map_err(api_error)?;
    Ok(accepted(op))
}

/// A card's audit trail, newest first.
#[utoipa::path(get, path = "/api/v1/cards/{iccid}/audit-trail", tag = "subscriptions",
    params(("iccid" = String, Path, description = "ICCID"), TrailQuery),
    responses((status = 200, body = [TrailView]), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn audit_trail(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
    Query(q): Query<TrailQuery>,
) -> Result<Json<Vec<TrailView>>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is not 1 to 500"),
        ));
    }
    let entries = router(&state)?
        .trail(&account.id, &path_iccid(&iccid), q.before, limit)
        .await
        .map_err(api_error)?;
    Ok(Json(entries.into_iter().map(TrailView::from).collect()))
}

/// An operation: its state and the card's answers.
#[utoipa::path(get, path = "/api/v1/subscription-operations/{operationId}", tag = "subscriptions",
    params(("operationId" = String, Path, description = "Operation id")),
    responses((status = 200, body = OperationView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn operation(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<OperationView>, ApiError> {
    let op = router(&state)?
        .operation(&account.id, &id)
        .await
        .map_err(api_error)?;
    Ok(Json(op.into()))
}

/// Creates a subscription template.
#[utoipa::path(post, path = "/api/v1/subscription-templates", tag = "subscriptions",
    request_body = SubscriptionTemplate,
    responses((status = 201, body = SubscriptionTemplate), (status = 400, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_template(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(t): JsonBody<SubscriptionTemplate>,
) -> Result<impl IntoResponse, ApiError> {
    let template = router(&state)?
        .create_template(&account.id, t)
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(template)))
}

/// An account's subscription templates.
#[utoipa::path(get, path = "/api/v1/subscription-templates", tag = "subscriptions",
    responses((status = 200, body = [SubscriptionTemplate])),
    security(("bearer" = [])))]
pub async fn list_templates(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Vec<SubscriptionTemplate>>, ApiError> {
    let templates = router(&state)?
        .records()
        .map_err(api_error)?
        .templates(&account.id)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(templates))
}

/// A grant of rights on a card group to another account.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrantRequest {
    /// The account granted (its name).
    pub account: String,
    /// `view` (subscriptions, operations, audit trail), `manage` (download, enable, delete,
    /// fallback), `audit`; `view` is implied by the others.
    #[schema(min_items = 1)]
    pub rights: Vec<Right>,
}

/// A grant as listed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantView {
    /// The card group.
    pub group_id: i64,
    /// The account granted.
    pub account: String,
    /// Its rights.
    pub rights: Vec<Right>,
    /// Granted.
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

impl From<GrantRecord> for GrantView {
    fn from(g: GrantRecord) -> Self {
        Self {
            group_id: g.group_id,
            account: g.grantee_name,
            rights: g.rights,
            created_at: g.created_at,
        }
    }
}

/// Grants an enterprise account rights on the cards of a card group (replacing its rights
/// there, if it had some). The enterprise then sees and acts on those cards' subscriptions
/// only; everything else answers 404 to it.
#[utoipa::path(post, path = "/api/v1/cardgroups/{id}/grants", tag = "subscriptions",
    params(("id" = i64, Path, description = "Card group id")),
    request_body = GrantRequest,
    responses((status = 201, body = GrantView), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn grant(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<GrantRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let group = group_id(&id)?;
    if req.rights.is_empty() {
        return Err(ApiError::invalid(
            "rights",
            "at least one of view, manage, audit",
        ));
    }
    let mut rights = req.rights.clone();
    rights.push(Right::View);
    rights.sort();
    rights.dedup();
    let g = router(&state)?
        .records()
        .map_err(api_error)?
        .grant(
            &account.id,
            group,
            req.account.trim(),
            &rights,
            state.gateway.clock().now_ms(),
        )
        .await
        .map_err(ApiError::store)?;
    Ok((StatusCode::CREATED, Json(GrantView::from(g))))
}

/// The grants on a card group.
#[utoipa::path(get, path = "/api/v1/cardgroups/{id}/grants", tag = "subscriptions",
    params(("id" = i64, Path, description = "Card group id")),
    responses((status = 200, body = [GrantView]), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn grants(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<Vec<GrantView>>, ApiError> {
    let group = group_id(&id)?;
    let list = router(&state)?
        .records()
        .map_err(api_error)?
        .grants(&account.id, group)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(list.into_iter().map(GrantView::from).collect()))
}

/// Removes an account's grant on a card group.
#[utoipa::path(delete, path = "/api/v1/cardgroups/{id}/grants/{account}", tag = "subscriptions",
    params(("id" = i64, Path, description = "Card group id"),
        ("account" = String, Path, description = "The account granted")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke_grant(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path((id, grantee)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let group = group_id(&id)?;
    let removed = router(&state)?
        .records()
        .map_err(api_error)?
        .revoke_grant(&account.id, group, &grantee)
        .await
        .map_err(ApiError::store)?;
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            Some("account"),
            format!("no grant to {grantee:?} on card group {group}"),
        ))
    }
}

fn group_id(raw: &str) -> Result<i64, ApiError> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| ApiError::not_found(Some("id"), format!("card group {raw:?} not found")))
}

/// Sets a card group's bootstrap rule: each card of the group still on its factory
/// subscription gets the rule's operational subscriptions (IMSIs handed out in order from
/// each range), the first enabled; the bootstrap subscription is then deleted or kept as the
/// fallback.
#[utoipa::path(put, path = "/api/v1/cardgroups/{id}/rules", tag = "subscriptions",
    params(("id" = i64, Path, description = "Card group id")),
    request_body = BootstrapRule,
    responses((status = 200, body = BootstrapRule), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn set_rules(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
    JsonBody(rule): JsonBody<BootstrapRule>,
) -> Result<Json<BootstrapRule>, ApiError> {
    let group = group_id(&id)?;
    let records = router(&state)?.records().map_err(api_error)?;
    if state
        .store
        .card_group(&account.id, group)
        .await
        .map_err(ApiError::store)?
        .is_none()
    {
        return Err(ApiError::not_found(
            Some("id"),
            format!("card group {group} not found"),
        ));
    }
    if rule.subscriptions.is_empty() || rule.subscriptions.len() > 7 {
        return Err(ApiError::invalid(
            "subscriptions",
            format!(
                "{} subscriptions: 1 to 7 (a card has 8 slots, one for bootstrap)",
                rule.subscriptions.len()
            ),
        ));
    }
    for (i, s) in rule.subscriptions.iter().enumerate() {
        let f = |name: &str| format!("subscriptions[{i}].{name}");
        if records
            .template(&account.id, &s.template)
            .await
            .map_err(ApiError::store)?
            .is_none()
        {
            return Err(ApiError::invalid(
                f("template"),
                format!("no template {:?}", s.template),
            ));
        }
        if !(6..=15).contains(&s.imsi_first.len())
            || !s.imsi_first.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ApiError::invalid(
                f("imsiFirst"),
                format!("{:?} is not 6 to 15 digits", s.imsi_first),
            ));
        }
        if s.imsi_count == 0 {
            return Err(ApiError::invalid(f("imsiCount"), "at least 1"));
        }
        if crate::subscription::nth_imsi(&s.imsi_first, s.imsi_count - 1).is_none() {
            return Err(ApiError::invalid(
                f("imsiCount"),
                format!(
                    "{} IMSIs from {} need more than {} digits",
                    s.imsi_count,
                    s.imsi_first,
                    s.imsi_first.len()
                ),
            ));
        }
    }
    records
        .set_rule(&account.id, group, &rule, state.gateway.clock().now_ms())
        .await
        .map_err(ApiError::store)?;
    Ok(Json(rule))
}

/// A card group's bootstrap rule.
#[utoipa::path(get, path = "/api/v1/cardgroups/{id}/rules", tag = "subscriptions",
    params(("id" = i64, Path, description = "Card group id")),
    responses((status = 200, body = BootstrapRule), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rules(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<BootstrapRule>, ApiError> {
    let group = group_id(&id)?;
    router(&state)?
        .records()
        .map_err(api_error)?
        .rule(&account.id, group)
        .await
        .map_err(ApiError::store)?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(Some("id"), format!("card group {group} has no rule")))
}

/// How far a card group's bootstrap got: plans by state.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapProgress {
    /// RUNNING, DONE, FAILED and how many cards are in each.
    pub plans: std::collections::BTreeMap<String, u64>,
}

/// A card group's bootstrap progress.
#[utoipa::path(get, path = "/api/v1/cardgroups/{id}/bootstrap", tag = "subscriptions",
    params(("id" = i64, Path, description = "Card group id")),
    responses((status = 200, body = BootstrapProgress), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn bootstrap_progress(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<Json<BootstrapProgress>, ApiError> {
    let group = group_id(&id)?;
    let records = router(&state)?.records().map_err(api_error)?;
    if state
        .store
        .card_group(&account.id, group)
        .await
        .map_err(ApiError::store)?
        .is_none()
    {
        return Err(ApiError::not_found(
            Some("id"),
            format!("card group {group} not found"),
        ));
    }
    let counts = records
        .plan_counts(&account.id, group)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(BootstrapProgress {
        plans: counts.into_iter().collect(),
    }))
}
