//! `GET /api/v1/tokens` and `DELETE /api/v1/tokens/{id}`: the calling account's bearer tokens.
//! Tokens are made with `otagw token create` (their value is shown there, once); here they are
//! listed by id, label and creation time (never their value nor its hash) and revoked.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState};
use crate::store::{Account, TokenInfo};

/// A bearer token, without its value.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    /// Id (what `DELETE /api/v1/tokens/{id}` names).
    pub id: String,
    /// Label given at creation.
    pub name: String,
    /// Created (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> Self {
        Self {
            id: t.id,
            name: t.label,
            created_at: t.created_at,
        }
    }
}

/// This account's bearer tokens, oldest first (ids, names and creation times only).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens",
    responses((status = 200, body = Vec<TokenView>)), security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tokens = state
        .store
        .tokens(&account.id)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// Revokes a token of this account: every gateway refuses it (401) from then on. The token
/// making this request may revoke itself. Another account's token id answers 404.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "the token's id")),
    responses((status = 204, description = "revoked"),
        (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .revoke_token(&account.id, &id)
        .await
        .map_err(ApiError::store)?;
    Ok(StatusCode::NO_CONTENT)
}
