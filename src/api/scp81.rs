//! SCP81 PSK keys over REST: `PUT /api/v1/cards/{iccid}/scp81-keys` sets a card's PSK-TLS key
//! (key versions 0x40-0x4F) and its identity. Key values go in, never out.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Extension;
use serde::Deserialize;

use super::{ApiError, AppState, JsonBody};
use crate::store::scp81::PSK_KEY_VERSIONS;
use crate::store::Account;

/// A card's SCP81 PSK.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutPsk {
    /// Key version, 64 to 79 (0x40-0x4F); default 64.
    #[serde(default)]
    #[schema(minimum = 64, maximum = 79)]
    pub version: Option<u8>,
    /// PSK identity, hex, 1 to 128 octets (the card presents it in the handshake; unique
    /// across cards).
    #[schema(pattern = "^([0-9A-Fa-f]{2}){1,128}$")]
    pub identity: String,
    /// The pre-shared key, hex (16 to 64 octets).
    #[schema(pattern = "^([0-9A-Fa-f]{2}){16,64}$")]
    pub key: String,
}

/// Set a card's SCP81 (HTTPS OTA) PSK.
#[utoipa::path(put, path = "/api/v1/cards/{iccid}/scp81-keys", tag = "cards",
    params(("iccid" = String, Path, description = "ICCID")),
    request_body = PutPsk,
    responses((status = 204), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn put_psk(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
    JsonBody(body): JsonBody<PutPsk>,
) -> Result<StatusCode, ApiError> {
    let iccid = iccid.trim_end_matches(['F', 'f']).to_string();
    let version = body.version.unwrap_or(0x40);
    if !PSK_KEY_VERSIONS.contains(&version) {
        return Err(ApiError::invalid(
            "version",
            "SCP81 key versions are 64 to 79 (0x40-0x4F)",
        ));
    }
    let identity = hex::decode(&body.identity)
        .ok()
        .filter(|i| !i.is_empty() && i.len() <= 128)
        .ok_or_else(|| ApiError::invalid("identity", "1 to 128 octets, hex"))?;
    let key = hex::decode(&body.key)
        .ok()
        .filter(|k| (16..=64).contains(&k.len()))
        .ok_or_else(|| ApiError::invalid("key", "16 to 64 octets, hex"))?;
    state
        .store
        .card(&account.id, &iccid)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(Some("iccid"), format!("card {iccid} not found")))?;
    let scp81 = state
        .store
        .scp81()
        .ok_or_else(|| ApiError::invalid("iccid", "this store keeps no SCP81 keys"))?;
    scp81
        .put_psk(&iccid, version, &identity, &key)
        .await
        .map_err(ApiError::store)?;
    Ok(StatusCode::NO_CONTENT)
}
