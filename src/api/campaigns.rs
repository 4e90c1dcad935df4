//! Bulk operations: profiles (`/api/v1/profiles`), provisioning from SIM vendor files
//! (`/api/v1/profiles/{id}/provision`, all or nothing, every bad line named) and card groups
//! (`/api/v1/cardgroups`). Another account's ids answer 404.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, JsonBody};
use crate::clock::now_ms;
use crate::provision::{self, check_name, check_tar, ProvisionError};
use crate::store::{
    Account, CardGroupRecord, GroupMembers, NewProfile, ProfileDefaults, ProfileRecord,
};

/// Default RFM applet TAR.
const RFM_TAR: &str = "B00010";
/// Default RAM applet TAR.
const RAM_TAR: &str = "000000";

/// A profile to create.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateProfile {
    /// Unique per account, no spaces, not only digits.
    pub name: String,
    /// `rfm` (TAR B00010), `ram` (TAR 000000) or `custom` (an uploaded applet and its TARs).
    #[serde(default)]
    pub app_type: Option<String>,
    /// custom: the id of an applet uploaded with `POST /api/v1/applets`.
    #[serde(default)]
    pub applet_id: Option<String>,
    /// custom: TARs, 6 hex digits each.
    #[serde(default)]
    pub tars: Vec<String>,
    /// Campaign defaults.
    #[serde(default)]
    pub defaults: ProfileDefaults,
}

/// A profile.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// `rfm`, `ram` or `custom`.
    pub app_type: Option<String>,
    /// Applet of a custom profile.
    pub applet_id: Option<String>,
    /// TARs.
    pub tars: Vec<String>,
    /// Campaign defaults.
    pub defaults: ProfileDefaults,
    /// Created (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created: i64,
    /// Updated.
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated: i64,
}

impl From<ProfileRecord> for Profile {
    fn from(p: ProfileRecord) -> Self {
        Profile {
            id: p.id,
            name: p.name,
            app_type: p.app_type,
            applet_id: p.applet_id,
            tars: p.tars,
            defaults: p.defaults,
            created: p.created_at,
            updated: p.updated_at,
        }
    }
}

/// A card group.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardGroup {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Profile of its cards.
    pub profile_id: i64,
    /// Number of cards.
    pub cards: u64,
    /// Created (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created: i64,
}

impl From<CardGroupRecord> for CardGroup {
    fn from(g: CardGroupRecord) -> Self {
        CardGroup {
            id: g.id,
            name: g.name,
            profile_id: g.profile_id,
            cards: g.cards,
            created: g.created_at,
        }
    }
}

fn hex_field(field: &str, v: &Option<String>, digits: usize) -> Result<(), ApiError> {
    match v {
        Some(s) if s.len() != digits || !s.bytes().all(|b| b.is_ascii_hexdigit()) => Err(
            ApiError::invalid(field, format!("{s:?} is not {digits} hex digits")),
        ),
        _ => Ok(()),
    }
}

/// Create a profile.
#[utoipa::path(post, path = "/api/v1/profiles", tag = "profiles", request_body = CreateProfile,
    responses((status = 201, body = Profile), (status = 409, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_profile(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(body): JsonBody<CreateProfile>,
) -> Result<impl IntoResponse, ApiError> {
    check_name(&body.name).map_err(|e| ApiError::invalid("name", e))?;
    let mut tars = Vec::new();
    for (i, t) in body.tars.iter().enumerate() {
        tars.push(check_tar(t).map_err(|e| ApiError::invalid(format!("tars[{i}]"), e))?);
    }
    let tars = match body.app_type.as_deref() {
        None if tars.is_empty() && body.applet_id.is_none() => Vec::new(),
        Some("rfm") if tars.is_empty() && body.applet_id.is_none() => vec![RFM_TAR.into()],
        Some("ram") if tars.is_empty() && body.applet_id.is_none() => vec![RAM_TAR.into()],
        Some("custom") => {
            let Some(id) = &body.applet_id else {
                return Err(ApiError::invalid(
                    "appletId",
                    "custom needs an uploaded applet",
                ));
            };
            if tars.is_empty() {
                return Err(ApiError::invalid("tars", "custom needs at least one TAR"));
            }
            if state
                .store
                .applet(&account.id, id)
                .await
                .map_err(ApiError::store)?
                .is_none()
            {
                return Err(ApiError::not_found(
                    Some("appletId"),
                    format!("no applet {id}"),
                ));
            }
            tars
        }
        None | Some("rfm" | "ram") => {
            return Err(ApiError::invalid(
                "appType",
                "appletId and tars go with appType custom",
            ))
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "appType",
                format!("{other:?} is not rfm, ram or custom"),
            ))
        }
    };
    let d = &body.defaults;
    hex_field("defaults.spi", &d.spi, 4)?;
    hex_field("defaults.kicByte", &d.kic_byte, 2)?;
    hex_field("defaults.kidByte", &d.kid_byte, 2)?;
    if let Some(http) = &d.http {
        if let Err((field, problem)) =
            crate::gateway::https::HttpsOptions::default().with_profile(http)
        {
            return Err(ApiError::invalid(format!("defaults.{field}"), problem));
        }
    }
    if let Some(catp) = &d.catp {
        if let Err((field, problem)) = crate::gateway::catp::check_profile_catp(catp) {
            return Err(ApiError::invalid(format!("defaults.{field}"), problem));
        }
    }
    if let Some(gp) = &d.gp {
        if let Err((field, problem)) = crate::command::build::GpProfile::from_json(gp) {
            return Err(ApiError::invalid(format!("defaults.{field}"), problem));
        }
    }
    if let Some(t) = d.transport.as_deref() {
        if !crate::command::transport::TRANSPORTS.contains(&t) {
            return Err(ApiError::invalid(
                "defaults.transport",
                format!(
                    "{t:?} is not one of {}",
                    crate::command::transport::TRANSPORTS.join(", ")
                ),
            ));
        }
    }
    let profile = NewProfile {
        name: body.name,
        app_type: body.app_type,
        applet_id: body.applet_id,
        tars,
        defaults: body.defaults,
    };
    let p = state
        .store
        .create_profile(&account.id, &profile, now_ms())
        .await
        .map_err(ApiError::store)?;
    Ok((StatusCode::CREATED, Json(Profile::from(p))))
}

/// The account's profiles.
#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles",
    responses((status = 200, body = Vec<Profile>)), security(("bearer" = [])))]
pub async fn list_profiles(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Vec<Profile>>, ApiError> {
    let all = state
        .store
        .profiles(&account.id)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(all.into_iter().map(Profile::from).collect()))
}

async fn profile_of(
    state: &AppState,
    account: &Account,
    id: i64,
) -> Result<ProfileRecord, ApiError> {
    state
        .store
        .profile(&account.id, id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(Some("id"), format!("profile {id} not found")))
}

/// A profile.
#[utoipa::path(get, path = "/api/v1/profiles/{id}", tag = "profiles",
    params(("id" = i64, Path, description = "Profile id")),
    responses((status = 200, body = Profile), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_profile(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
) -> Result<Json<Profile>, ApiError> {
    Ok(Json(profile_of(&state, &account, id).await?.into()))
}

/// Provisioning options.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
pub struct ProvisionQuery {
    /// Also create a card group holding the cards.
    #[serde(default)]
    pub auto_group: bool,
    /// Its name (default `provisioned-<ms>`).
    pub group_name: Option<String>,
}

/// Provisioning result.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provisioned {
    /// Cards imported.
    pub imported: usize,
    /// The automatic group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<i64>,
}

/// Provision cards from a SIM vendor output file (`VAR_OUT:` CSV) sent as the body: all or
/// nothing; a refused file answers 422 naming every bad line (`field` is the first one's
/// `line N[, field F]`).
#[utoipa::path(post, path = "/api/v1/profiles/{id}/provision", tag = "profiles",
    params(("id" = i64, Path, description = "Profile id"), ProvisionQuery),
    request_body(content = String, content_type = "text/plain"),
    responses((status = 201, body = Provisioned), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn provision(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
    Query(q): Query<ProvisionQuery>,
    body: String,
) -> Result<impl IntoResponse, ApiError> {
    let profile = profile_of(&state, &account, id).await?;
    let group = if q.auto_group {
        let name = q
            .group_name
            .unwrap_or_else(|| format!("provisioned-{}", now_ms()));
        check_name(&name).map_err(|e| ApiError::invalid("groupName", e))?;
        Some(name)
    } else {
        None
    };
    let refused = |e: ProvisionError| match e {
        ProvisionError::Store(s) => ApiError::store(s),
        other => {
            let field = other.first_problem().map(|p| match &p.field {
                Some(f) => format!("line {}, field {f}", p.line),
                None => format!("line {}", p.line),
            });
            ApiError::invalid(field.unwrap_or_else(|| "body".into()), other.to_string())
        }
    };
    let text = body;
    let file = tokio::task::spawn_blocking(move || provision::parse_vendor_text(&text))
        .await
        .map_err(|e| ApiError::invalid("body", format!("parsing: {e}")))?
        .map_err(refused)?;
    provision::check_not_provisioned(state.store.as_ref(), &file)
        .await
        .map_err(refused)?;
    let g = state
        .store
        .provision_cards(
            &account.id,
            profile.id,
            &file.cards,
            group.as_deref(),
            now_ms(),
            &|_| {},
        )
        .await
        .map_err(ApiError::store)?;
    Ok((
        StatusCode::CREATED,
        Json(Provisioned {
            imported: file.cards.len(),
            group_id: g.map(|g| g.id),
        }),
    ))
}

/// A card group to create: every card of the profile, or the listed ICCIDs.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGroup {
    /// Profile id.
    pub profile_id: i64,
    /// Unique within the profile, no spaces.
    pub name: String,
    /// The cards (each once, each a card of the profile); all of the profile's when absent.
    #[serde(default)]
    pub iccids: Option<Vec<String>>,
}

/// Create a card group.
#[utoipa::path(post, path = "/api/v1/cardgroups", tag = "cardgroups", request_body = CreateGroup,
    responses((status = 201, body = CardGroup), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_group(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(body): JsonBody<CreateGroup>,
) -> Result<impl IntoResponse, ApiError> {
    check_name(&body.name).map_err(|e| ApiError::invalid("name", e))?;
    let profile = profile_of(&state, &account, body.profile_id).await?;
    let members = match body.iccids {
        None => GroupMembers::AllOfProfile,
        Some(list) => {
            let mut iccids = Vec::with_capacity(list.len());
            for (i, v) in list.iter().enumerate() {
                iccids.push(
                    provision::normalize_iccid(v)
                        .map_err(|e| ApiError::invalid(format!("iccids[{i}]"), e))?,
                );
            }
            GroupMembers::Iccids(iccids)
        }
    };
    let g = state
        .store
        .create_card_group(&account.id, profile.id, &body.name, &members, now_ms())
        .await
        .map_err(ApiError::store)?;
    Ok((StatusCode::CREATED, Json(CardGroup::from(g))))
}

/// The account's card groups.
#[utoipa::path(get, path = "/api/v1/cardgroups", tag = "cardgroups",
    responses((status = 200, body = Vec<CardGroup>)), security(("bearer" = [])))]
pub async fn list_groups(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Vec<CardGroup>>, ApiError> {
    let all = state
        .store
        .card_groups(&account.id)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(all.into_iter().map(CardGroup::from).collect()))
}

/// A card group.
#[utoipa::path(get, path = "/api/v1/cardgroups/{id}", tag = "cardgroups",
    params(("id" = i64, Path, description = "Card group id")),
    responses((status = 200, body = CardGroup), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_group(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<i64>,
) -> Result<Json<CardGroup>, ApiError> {
    let g = state
        .store
        .card_group(&account.id, id)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::not_found(Some("id"), format!("card group {id} not found")))?;
    Ok(Json(g.into()))
}
