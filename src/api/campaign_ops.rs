//! Campaigns over REST (`/api/v1/campaigns`): create, list, show with cards per state and
//! iteration, start, stop, retry the failed cards, list a run's cards. The same operations as
//! `otagw campaign` ([`crate::campaign::ops`]); a gateway's campaign runner does the sending.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, JsonBody};
use crate::campaign::ops::{self, CampaignView, OpError, StartOutcome, StartRequest};
use crate::campaign::CampaignRequest;
use crate::clock::now_ms;
use crate::store::Account;

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Field(f) => ApiError::invalid(f.field, f.problem),
            OpError::NotFound(what) => ApiError::not_found(None, format!("{what} not found")),
            OpError::Missing(f) => ApiError::not_found(Some(&f.field), f.problem),
            OpError::Store(s) => ApiError::store(s),
        }
    }
}

/// Create a campaign (state CREATED).
#[utoipa::path(post, path = "/api/v1/campaigns", tag = "campaigns", request_body = CampaignRequest,
    responses((status = 201, body = CampaignView), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(body): JsonBody<CampaignRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let view = ops::create(state.store.as_ref(), &account.id, &body, now_ms()).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The account's campaigns.
#[utoipa::path(get, path = "/api/v1/campaigns", tag = "campaigns",
    responses((status = 200, body = [CampaignView])), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Vec<CampaignView>>, ApiError> {
    let all = state
        .store
        .campaigns(&account.id)
        .await
        .map_err(ApiError::store)?;
    let views = all
        .iter()
        .map(CampaignView::of)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(views))
}

/// A campaign with its cards per state and iteration.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "campaigns",
    params(("id" = i64, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
) -> Result<Json<CampaignView>, ApiError> {
    Ok(Json(
        ops::show(state.store.as_ref(), &account.id, id).await?,
    ))
}

/// Start a CREATED campaign on a card group or one card (state RUNNING).
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/start", tag = "campaigns",
    params(("id" = i64, Path, description = "Campaign id")), request_body = StartRequest,
    responses((status = 200, body = StartOutcome), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
    JsonBody(body): JsonBody<StartRequest>,
) -> Result<Json<StartOutcome>, ApiError> {
    if let Some(why) = transport_refusal(&state, &account.id, id)
        .await
        .map_err(ApiError::store)?
    {
        return Err(ApiError::invalid("transport", why));
    }
    Ok(Json(
        ops::start(&state.store, &account.id, id, &body, now_ms()).await?,
    ))
}

/// Why this gateway cannot start the campaign, if it cannot: TLS_TRIGGER campaigns run over
/// HTTPS, so they are refused where the gateway has no HTTPS (their commands would otherwise
/// go by SMS while saying HTTPS). The console's start asks the same.
pub async fn transport_refusal(
    state: &AppState,
    account_id: &str,
    id: i64,
) -> Result<Option<String>, crate::store::StoreError> {
    let Some(c) = state.store.campaign(account_id, id).await? else {
        return Ok(None);
    };
    let tls = c
        .campaign_type
        .parse::<crate::campaign::CampaignType>()
        .is_ok_and(|t| t.is_tls());
    Ok((tls && !state.gateway.offers("https")).then(|| {
        format!(
            "campaign {id} is {}, which runs over transport \"https\": this gateway offers {}",
            c.campaign_type,
            state.gateway.offered().join(", ")
        )
    }))
}

/// Stop a campaign (state TERMINATED).
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/stop", tag = "campaigns",
    params(("id" = i64, Path, description = "Campaign id")),
    responses((status = 200, body = CampaignView), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn stop(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
) -> Result<Json<CampaignView>, ApiError> {
    Ok(Json(
        ops::stop(state.store.as_ref(), &account.id, id, now_ms()).await?,
    ))
}

/// Start a new iteration of a COMPLETED or TERMINATED campaign for its unsuccessful cards.
#[utoipa::path(post, path = "/api/v1/campaigns/{id}/retry-failed", tag = "campaigns",
    params(("id" = i64, Path, description = "Campaign id")),
    responses((status = 200, body = StartOutcome), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn retry_failed(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
) -> Result<Json<StartOutcome>, ApiError> {
    Ok(Json(
        ops::retry_failed(state.store.as_ref(), &account.id, id, now_ms()).await?,
    ))
}

/// Which cards of a campaign to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct CardsQuery {
    /// Iteration (default: the current one).
    pub iteration: Option<i64>,
    /// Only cards in this state.
    pub state: Option<String>,
    /// Cards after this ICCID (paging).
    pub after: Option<String>,
    /// At most (default 100, at most 10000).
    pub limit: Option<u32>,
}

/// One card of a campaign run.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignCard {
    /// ICCID.
    pub iccid: String,
    /// Iteration.
    pub iteration: i64,
    /// State.
    pub state: String,
    /// Final.
    pub done: bool,
    /// Message index.
    pub step: i64,
    /// Counter of the last packet.
    pub counter: Option<u64>,
    /// PoR status named, failure reason, or response (hex).
    pub detail: Option<String>,
    /// Last change (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated: i64,
}

/// A campaign's cards, ICCID order.
#[utoipa::path(get, path = "/api/v1/campaigns/{id}/cards", tag = "campaigns",
    params(("id" = i64, Path, description = "Campaign id"), CardsQuery),
    responses((status = 200, body = [CampaignCard]), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn cards(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
    Query(q): Query<CardsQuery>,
) -> Result<Json<Vec<CampaignCard>>, ApiError> {
    let c = state
        .store
        .campaign(&account.id, id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(None, format!("campaign {id} not found")))?;
    if let Some(s) = &q.state {
        if !crate::campaign::card_state::ALL.contains(&s.as_str()) {
            return Err(ApiError::invalid(
                "state",
                format!(
                    "{s:?} is not a card state ({})",
                    crate::campaign::card_state::ALL.join(", ")
                ),
            ));
        }
    }
    let rows = state
        .store
        .campaign_cards(
            id,
            q.iteration.unwrap_or(c.iteration),
            q.state.as_deref(),
            q.after.as_deref().unwrap_or(""),
            q.limit.unwrap_or(100).clamp(1, 10_000),
        )
        .await
        .map_err(ApiError::store)?;
    Ok(Json(
        rows.into_iter()
            .map(|r| CampaignCard {
                iccid: r.iccid,
                iteration: r.iteration,
                state: r.state,
                done: r.done,
                step: r.step,
                counter: r.counter,
                detail: r.detail,
                updated: r.updated_at,
            })
            .collect(),
    ))
}
