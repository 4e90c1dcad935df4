//! Cards and their keys (`/api/v1/cards`, key rotation and security status), uploaded applets
//! and webhook subscriptions. Key values go in, never out.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, JsonBody};
use crate::clock::now_ms;
use crate::command::{
    CommandData, CommandType, HexOrNumber, OtaCommandRequest, Priority, SecuritySettings, Target,
};
use crate::security::{CipherAlgorithm, IntegrityAlgorithm};
use crate::store::{
    Account, AppletRecord, CardDeleted, CardRecord, CardSearch, KeyMaterial, KeySetRecord, NewCard,
    StoreError, Webhook,
};

/// A key set as posted.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeySetInput {
    /// Key version 1..15.
    #[schema(minimum = 1, maximum = 15)]
    pub version: u8,
    /// KIc, hex: 8, 16, 24 or 32 octets.
    #[schema(
        pattern = r"^\s*([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{48}|[0-9A-Fa-f]{64})\s*$"
    )]
    pub kic: String,
    /// KID, hex: 8, 16, 24 or 32 octets.
    #[schema(
        pattern = r"^\s*([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{48}|[0-9A-Fa-f]{64})\s*$"
    )]
    pub kid: String,
    /// KIK (key-encryption key for PUT KEY), hex: 8, 16, 24 or 32 octets.
    #[serde(default)]
    #[schema(
        pattern = r"^\s*([0-9A-Fa-f]{16}|[0-9A-Fa-f]{32}|[0-9A-Fa-f]{48}|[0-9A-Fa-f]{64})\s*$"
    )]
    pub kik: Option<String>,
    /// Ciphering algorithm for implicit KIc codings (`aes-cbc`, `3des-2key`, ...); an explicit
    /// KIc coding must agree with it.
    #[serde(default)]
    #[schema(schema_with = cipher_names)]
    pub kic_algorithm: Option<String>,
    /// Integrity algorithm for implicit KID codings (`aes-cmac`, `3des-2key`, ...); an explicit
    /// KID coding of the same kind (CC) must agree with it, and an RC (CRC16/CRC32) coding is
    /// not affected by it.
    #[serde(default)]
    #[schema(schema_with = integrity_names)]
    pub kid_algorithm: Option<String>,
    /// Last counter the card has seen with this key set (default 0).
    #[serde(default)]
    pub counter: u64,
}

/// A nullable string naming one of `names` (the server reads the name in any case).
fn optional_name(names: Vec<&'static str>, description: &str) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let mut values: Vec<serde_json::Value> = names.into_iter().map(Into::into).collect();
    values.push(serde_json::Value::Null);
    ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .enum_values(Some(values))
        .description(Some(description))
        .build()
}

/// `kicAlgorithm`: one of the ciphering algorithms' names.
fn cipher_names() -> utoipa::openapi::schema::Object {
    optional_name(
        CipherAlgorithm::ALL.iter().map(|a| a.name()).collect(),
        "Ciphering algorithm for implicit KIc codings; an explicit KIc coding must agree with it.",
    )
}

/// `kidAlgorithm`: one of the integrity algorithms' names.
fn integrity_names() -> utoipa::openapi::schema::Object {
    optional_name(
        IntegrityAlgorithm::ALL.iter().map(|a| a.name()).collect(),
        "Integrity algorithm for implicit KID codings; an explicit KID coding of the same kind \
         (CC) must agree with it.",
    )
}

/// A card as posted.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CardInput {
    /// ICCID, 18 to 20 digits (trailing F padding is removed); on 19 and 20 digits the last
    /// one is the Luhn check digit.
    #[schema(pattern = r"^\s*[0-9]{18,20}[Ff]*\s*$")]
    pub iccid: String,
    /// IMSI, 6 to 15 digits.
    #[serde(default)]
    #[schema(pattern = r"^\s*[0-9]{6,15}\s*$")]
    pub imsi: Option<String>,
    /// MSISDN, international format, 3 to 15 digits (a leading '+' is allowed).
    #[serde(default)]
    #[schema(pattern = r"^\s*[+]*[0-9]{3,15}\s*$")]
    pub msisdn: Option<String>,
    /// Other attributes (`cardClass`: `uicc` or `gsm`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// OTA key sets.
    #[serde(default)]
    pub key_sets: Vec<KeySetInput>,
}

/// Cards to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddCards {
    /// The cards (all added, or none).
    pub cards: Vec<CardInput>,
}

/// Answer to adding cards.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardsAdded {
    /// How many.
    pub added: usize,
}

fn digits(field: &str, s: &str, min: usize, max: usize) -> Result<String, ApiError> {
    Ok(crate::pipeline::validate::digits(
        field,
        s.trim(),
        min,
        max,
    )?)
}

fn key_hex(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    let v = hex::decode(s.trim()).map_err(|e| ApiError::invalid(field, format!("not hex: {e}")))?;
    if ![8, 16, 24, 32].contains(&v.len()) {
        return Err(ApiError::invalid(
            field,
            format!("{} octets: a key is 8, 16, 24 or 32 octets", v.len()),
        ));
    }
    Ok(v)
}

fn card_of(i: usize, c: CardInput) -> Result<NewCard, ApiError> {
    let f = |name: &str| format!("cards[{i}].{name}");
    // The one ICCID check, as `otagw provision` runs it (length, digits, F padding, Luhn).
    let iccid = crate::provision::normalize_iccid(c.iccid.trim())
        .map_err(|p| ApiError::invalid(f("iccid"), p))?;
    let imsi = c
        .imsi
        .as_deref()
        .map(|s| digits(&f("imsi"), s, 6, 15))
        .transpose()?;
    let msisdn = c
        .msisdn
        .as_deref()
        .map(|s| digits(&f("msisdn"), s, 3, 15))
        .transpose()?;
    let mut key_sets = Vec::new();
    for (k, ks) in c.key_sets.into_iter().enumerate() {
        let g = |name: &str| f(&format!("keySets[{k}].{name}"));
        if !(1..=15).contains(&ks.version) {
            return Err(ApiError::invalid(g("version"), "must be 1 to 15"));
        }
        let kic = key_hex(&g("kic"), &ks.kic)?;
        let kid = key_hex(&g("kid"), &ks.kid)?;
        let kik = ks
            .kik
            .as_deref()
            .map(|s| key_hex(&g("kik"), s))
            .transpose()?;
        let kic_algorithm = ks
            .kic_algorithm
            .as_deref()
            .map(|s| s.parse::<CipherAlgorithm>())
            .transpose()
            .map_err(|e| ApiError::invalid(g("kicAlgorithm"), e))?;
        let kid_algorithm = ks
            .kid_algorithm
            .as_deref()
            .map(|s| s.parse::<IntegrityAlgorithm>())
            .transpose()
            .map_err(|e| ApiError::invalid(g("kidAlgorithm"), e))?;
        if let Some(a) = kic_algorithm.filter(|a| !a.accepts_key_len(kic.len())) {
            return Err(ApiError::invalid(
                g("kic"),
                format!(
                    "{} octets do not fit {} ({})",
                    kic.len(),
                    a.name(),
                    a.key_lengths()
                ),
            ));
        }
        if let Some(a) = kid_algorithm.filter(|a| !a.accepts_key_len(kid.len())) {
            return Err(ApiError::invalid(
                g("kid"),
                format!(
                    "{} octets do not fit {} ({})",
                    kid.len(),
                    a.name(),
                    a.key_lengths()
                ),
            ));
        }
        if key_sets
            .iter()
            .any(|s: &KeySetRecord| s.version == ks.version)
        {
            return Err(ApiError::invalid(g("version"), "key version given twice"));
        }
        key_sets.push(KeySetRecord {
            version: ks.version,
            kic_algorithm,
            kid_algorithm,
            keys: KeyMaterial { kic, kid, kik },
            counter: ks.counter,
            rotated_at: None,
        });
    }
    Ok(NewCard {
        iccid,
        imsi,
        msisdn,
        attributes: c.attributes,
        key_sets,
        factory_subscriptions: Vec::new(),
    })
}

/// Add cards with their key sets (all, or none).
#[utoipa::path(post, path = "/api/v1/cards", tag = "cards", request_body = AddCards,
    responses((status = 201, body = CardsAdded), (status = 400, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_cards(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(body): JsonBody<AddCards>,
) -> Result<impl IntoResponse, ApiError> {
    let cards = body
        .cards
        .into_iter()
        .enumerate()
        .map(|(i, c)| card_of(i, c))
        .collect::<Result<Vec<_>, _>>()?;
    let mut first = std::collections::HashMap::with_capacity(cards.len());
    for (i, c) in cards.iter().enumerate() {
        if let Some(j) = first.insert(c.iccid.as_str(), i) {
            return Err(ApiError::invalid(
                format!("cards[{i}].iccid"),
                format!("{} is given twice (also cards[{j}])", c.iccid),
            ));
        }
    }
    state
        .store
        .insert_cards(&account.id, &cards, now_ms())
        .await
        .map_err(|e| {
            // Name the field of the card refused.
            let at = match &e {
                StoreError::Duplicate { what: "card", key } => first.get(key.as_str()).copied(),
                _ => None,
            };
            let mut err = ApiError::store(e);
            if let Some(i) = at {
                err.field = Some(format!("cards[{i}].iccid"));
            }
            err
        })?;
    Ok((StatusCode::CREATED, Json(CardsAdded { added: cards.len() })))
}

/// A key set's public state.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersionView {
    /// Key version.
    pub version: u8,
    /// Last counter used.
    pub counter: u64,
    /// Last successful KEY_UPDATE (RFC 3339, UTC, milliseconds).
    #[serde(
        default,
        with = "crate::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub last_rotation: Option<i64>,
}

/// A card as the API shows it (no key values).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardView {
    /// ICCID.
    pub iccid: String,
    /// IMSI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    /// MSISDN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msisdn: Option<String>,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Key versions, counters, rotations (empty on a granted card: keys stay the owner's).
    pub key_versions: Vec<KeyVersionView>,
    /// Added (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    /// Another account's card, seen through a card group grant (subscription management).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub granted: bool,
}

impl From<CardRecord> for CardView {
    fn from(c: CardRecord) -> Self {
        view(c)
    }
}

fn view(c: CardRecord) -> CardView {
    CardView {
        iccid: c.iccid,
        imsi: c.imsi,
        msisdn: c.msisdn,
        attributes: c.attributes,
        key_versions: c
            .key_versions
            .into_iter()
            .map(|k| KeyVersionView {
                version: k.version,
                counter: k.counter,
                last_rotation: k.rotated_at,
            })
            .collect(),
        created_at: c.created_at,
        granted: false,
    }
}

/// `c` as `account_id` may see it: whole for its owner, without key versions through a grant.
fn view_for(account_id: &str, c: CardRecord) -> CardView {
    let granted = c.account_id != account_id;
    let mut v = view(c);
    if granted {
        v.key_versions.clear();
        v.granted = true;
    }
    v
}

/// A card (key versions and counters, never key values).
#[utoipa::path(get, path = "/api/v1/cards/{iccid}", tag = "cards",
    params(("iccid" = String, Path, description = "ICCID")),
    responses((status = 200, body = CardView), (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_card(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
) -> Result<Json<CardView>, ApiError> {
    let iccid = path_iccid(&iccid);
    let not_found = || ApiError::not_found(Some("iccid"), format!("card {iccid} not found"));
    if let Some(card) = state
        .store
        .card(&account.id, &iccid)
        .await
        .map_err(ApiError::store)?
    {
        return Ok(Json(view(card)));
    }
    // Another account's card, through a grant that includes `view`.
    let Some(router) = state.router.as_ref() else {
        return Err(not_found());
    };
    match router.granted_card(&account.id, &iccid).await {
        Ok(card) => Ok(Json(view_for(&account.id, card))),
        Err(crate::subscription::RouterError::Store(e)) => Err(ApiError::store(e)),
        Err(_) => Err(not_found()),
    }
}

/// Start KEY_UPDATE for one card or several.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateKeys {
    /// One card.
    #[serde(default)]
    #[schema(nullable = false)]
    pub iccid: Option<String>,
    /// Several cards.
    #[serde(default)]
    #[schema(min_items = 1)]
    pub iccids: Vec<String>,
    /// Key version to replace, 1 to 15 (default 1); the command is secured with it.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 15)]
    pub key_version: Option<u8>,
    /// SPI, 4 hex digits (default 1639: ciphered, CC, counter higher, PoR with CC, ciphered).
    #[serde(default)]
    #[schema(pattern = "^[0-9A-Fa-f]{4}$")]
    pub spi: Option<String>,
    /// TAR of the security domain (default 000000, the ISD).
    #[serde(default)]
    #[schema(pattern = "^[0-9A-Fa-f]{6}$")]
    pub tar: Option<String>,
    /// Transport (default sms).
    #[serde(default)]
    #[schema(schema_with = transport_name)]
    pub transport: Option<String>,
}

/// rotate-keys `transport`: one of [`crate::command::transport::TRANSPORTS`].
fn transport_name() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(crate::command::transport::TRANSPORTS))
        .description(Some("Transport (default sms)."))
        .build()
}

/// The rotate-keys body as documented: [`RotateKeys`] with at least one of `iccid` and
/// `iccids` (a derived schema cannot say "one of these two fields is required").
pub struct RotateKeysBody;

impl utoipa::PartialSchema for RotateKeysBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AllOfBuilder, AnyOfBuilder, ObjectBuilder};
        let one_of_the_targets = AnyOfBuilder::new()
            .item(ObjectBuilder::new().required("iccid"))
            .item(ObjectBuilder::new().required("iccids"));
        AllOfBuilder::new()
            .item(<RotateKeys as utoipa::PartialSchema>::schema())
            .item(one_of_the_targets)
            .into()
    }
}

impl utoipa::ToSchema for RotateKeysBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "RotateKeys".into()
    }
}

/// One KEY_UPDATE started.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStarted {
    /// Card.
    pub iccid: String,
    /// Its KEY_UPDATE command.
    pub command_id: String,
}

/// Answer to rotate-keys.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationsStarted {
    /// Commands started.
    pub commands: Vec<RotationStarted>,
}

/// The algorithm nibbles of the KIc and KID octets the card's profile names, if it has both.
async fn profile_codings(
    state: &AppState,
    account_id: &str,
    iccid: &str,
) -> Result<Option<(u8, u8)>, ApiError> {
    let Some(id) = state
        .store
        .card_profile(account_id, iccid)
        .await
        .map_err(ApiError::store)?
    else {
        return Ok(None);
    };
    let Some(profile) = state
        .store
        .profile(account_id, id)
        .await
        .map_err(ApiError::store)?
    else {
        return Ok(None);
    };
    let nibble = |b: &Option<String>| {
        b.as_deref()
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .map(|v| v & 0x0F)
    };
    Ok(nibble(&profile.defaults.kic_byte).zip(nibble(&profile.defaults.kid_byte)))
}

/// Start KEY_UPDATE (new random keys, PUT KEY under the card's KIK) for a card or a list.
#[utoipa::path(post, path = "/api/v1/ota/security/rotate-keys", tag = "security",
    request_body = RotateKeysBody,
    responses((status = 202, body = RotationsStarted), (status = 404, body = super::error::ErrorBody),
        (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn rotate_keys(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(body): JsonBody<RotateKeys>,
) -> Result<impl IntoResponse, ApiError> {
    let mut iccids = body.iccids.clone();
    iccids.extend(body.iccid.clone());
    if iccids.is_empty() {
        return Err(ApiError::invalid(
            "iccids",
            "name at least one card (iccid or iccids)",
        ));
    }
    let version = body.key_version.unwrap_or(1);
    if !(1..=15).contains(&version) {
        return Err(ApiError::invalid("keyVersion", "must be 1 to 15"));
    }
    let mut commands = Vec::new();
    for (i, iccid) in iccids.iter().enumerate() {
        let field = if body.iccid.as_deref() == Some(iccid.as_str()) && i == iccids.len() - 1 {
            "iccid".to_string()
        } else {
            format!("iccids[{i}]")
        };
        let set = state
            .store
            .key_set(iccid, version)
            .await
            .map_err(ApiError::store)?;
        let card = state
            .store
            .card(&account.id, iccid)
            .await
            .map_err(ApiError::store)?;
        let (Some(_), Some(set)) = (card, set) else {
            return Err(ApiError::not_found(
                Some(&field),
                format!("card {iccid} with key version {version} not found"),
            ));
        };
        // The key set's own algorithms, else its card's profile's KIc/KID codings (cards
        // provisioned from a vendor file carry keys without algorithms; their profile says).
        let codings = match (set.kic_algorithm, set.kid_algorithm) {
            (Some(c), Some(d)) => Some((c.kic_nibble(), d.kid_nibble())),
            _ => profile_codings(&state, &account.id, iccid).await?,
        };
        let Some((c, d)) = codings else {
            return Err(ApiError::invalid(
                field,
                format!(
                    "card {iccid}: key version {version} has no algorithm recorded \
                     (kicAlgorithm / kidAlgorithm) and its profile names no kicByte / kidByte"
                ),
            ));
        };
        let req = OtaCommandRequest {
            command_id: None,
            command_type: CommandType::KeyUpdate,
            target: Target {
                iccid: iccid.clone(),
                imsi: None,
                msisdn: None,
            },
            security: SecuritySettings {
                spi: HexOrNumber::Hex(body.spi.clone().unwrap_or_else(|| "1639".into())),
                kic: format!("{:02X}", version << 4 | c),
                kid: format!("{:02X}", version << 4 | d),
                tar: body.tar.clone().unwrap_or_else(|| "000000".into()),
            },
            data: CommandData {
                command: Some("ROTATE_KEYS".into()),
                parameters: Some(serde_json::json!({ "keyVersion": version })),
                ..Default::default()
            },
            transport: body.transport.clone().map(Into::into),
            priority: Some(Priority::Normal),
            validity_period: None,
        };
        commands.push(super::commands::prepare(&state, &account, req, None, "").await?);
    }
    let mut started = Vec::new();
    for c in &commands {
        state
            .store
            .insert_command(c)
            .await
            .map_err(ApiError::store)?;
        started.push(RotationStarted {
            iccid: c.iccid.clone(),
            command_id: c.id.clone(),
        });
    }
    state.gateway.notify();
    Ok((
        StatusCode::ACCEPTED,
        Json(RotationsStarted { commands: started }),
    ))
}

/// ICCID of a path: F padding removed (a card of another account answers 404 like a missing
/// one; a malformed ICCID names no card, so it answers 404 too).
pub(crate) fn path_iccid(iccid: &str) -> String {
    iccid.trim().trim_end_matches(['F', 'f']).to_string()
}

/// Most cards a listing page holds.
pub const MAX_PAGE: u32 = 1000;

/// Query of a card listing.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListCardsQuery {
    /// ICCID prefix (digits).
    pub iccid: Option<String>,
    /// IMSI prefix (digits).
    pub imsi: Option<String>,
    /// MSISDN prefix (digits, a leading '+' ignored).
    pub msisdn: Option<String>,
    /// Most cards (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// List the cards after this ICCID (the previous page's `nextAfter`).
    pub after: Option<String>,
}

/// A page of cards, by ICCID.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardPage {
    /// The cards (key versions and counters, never key values).
    pub cards: Vec<CardView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// A digit prefix filter, or 422 naming it.
fn prefix(field: &str, value: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    let v = if field == "msisdn" {
        v.strip_prefix('+').unwrap_or(v)
    } else {
        v
    };
    let v = if field == "iccid" || field == "after" {
        v.trim_end_matches(['F', 'f'])
    } else {
        v
    };
    if v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid(
            field,
            format!("{v:?} is not a prefix of up to 20 digits"),
        ));
    }
    Ok(Some(v.to_string()))
}

/// This account's cards by ICCID, filtered by ICCID, IMSI and MSISDN prefixes, a page at a time.
#[utoipa::path(get, path = "/api/v1/cards", tag = "cards", params(ListCardsQuery),
    responses((status = 200, body = CardPage), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_cards(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Query(q): Query<ListCardsQuery>,
) -> Result<Json<CardPage>, ApiError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("{limit} is not 1 to {MAX_PAGE}"),
        ));
    }
    let search = CardSearch {
        iccid: prefix("iccid", q.iccid.as_deref())?,
        imsi: prefix("imsi", q.imsi.as_deref())?,
        msisdn: prefix("msisdn", q.msisdn.as_deref())?,
        after: prefix("after", q.after.as_deref())?,
        limit: limit + 1,
    };
    let mut cards = state
        .store
        .search_cards(&account.id, &search)
        .await
        .map_err(ApiError::store)?;
    let more = cards.len() > limit as usize;
    cards.truncate(limit as usize);
    let next_after = more
        .then(|| cards.last().map(|c| c.iccid.clone()))
        .flatten();
    Ok(Json(CardPage {
        cards: cards
            .into_iter()
            .map(|c| view_for(&account.id, c))
            .collect(),
        next_after,
    }))
}

/// Changes to a card; absent fields are kept; at least one change.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateCard {
    /// New IMSI, 6 to 15 digits.
    #[serde(default)]
    #[schema(nullable = false)]
    pub imsi: Option<String>,
    /// New MSISDN, 1 to 15 digits, optionally after '+'.
    #[serde(default)]
    #[schema(nullable = false)]
    pub msisdn: Option<String>,
    /// Attributes to set; `null` removes one; others are kept. `cardClass`: `uicc` or `gsm`.
    #[serde(default)]
    #[schema(schema_with = attribute_changes)]
    pub attributes: BTreeMap<String, Option<String>>,
}

/// The card update body as documented: [`UpdateCard`] with at least one property.
/// (utoipa-gen 5.5.0 writes a container's `min_properties` as `maxProperties`, so it is set
/// here.)
pub struct UpdateCardBody;

impl utoipa::PartialSchema for UpdateCardBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        let mut schema = <UpdateCard as utoipa::PartialSchema>::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.min_properties = Some(1);
        }
        schema
    }
}

impl utoipa::ToSchema for UpdateCardBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "UpdateCard".into()
    }
}

/// `attributes` of a card update: at least one, names not blank (as `provision::card_changes`
/// checks them).
fn attribute_changes() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let value = ObjectBuilder::new().schema_type(utoipa::openapi::schema::SchemaType::from_iter([
        Type::String,
        Type::Null,
    ]));
    let name = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .pattern(Some(r"\S"));
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(value.into())))
        .property_names(Some(name))
        .min_properties(Some(1))
        .description(Some(
            "Attributes to set; `null` removes one; others are kept. `cardClass`: `uicc` or `gsm`.",
        ))
        .build()
}

/// Change a card's IMSI, MSISDN or attributes (the same checks as `otagw card update`).
#[utoipa::path(patch, path = "/api/v1/cards/{iccid}", tag = "cards", request_body = UpdateCardBody,
    params(("iccid" = String, Path, description = "ICCID")),
    responses((status = 200, body = CardView), (status = 400, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_card(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
    JsonBody(body): JsonBody<UpdateCard>,
) -> Result<Json<CardView>, ApiError> {
    let iccid = path_iccid(&iccid);
    let changes = crate::provision::card_changes(
        body.imsi.as_deref(),
        body.msisdn.as_deref(),
        &body.attributes,
    )
    .map_err(|(field, problem)| ApiError::invalid(field, problem))?;
    let card = state
        .store
        .update_card(&account.id, &iccid, &changes)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => {
                ApiError::not_found(Some("iccid"), format!("card {iccid} not found"))
            }
            e => ApiError::store(e),
        })?;
    Ok(Json(view(card)))
}

/// What deleting a card removed, and the history kept.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardRemoved {
    /// The card.
    pub iccid: String,
    /// Key sets deleted with it (OTA and SCP81).
    pub key_sets_deleted: u64,
    /// Card group memberships removed.
    pub group_memberships_removed: u64,
    /// Finished commands of the card, kept: `GET /api/v1/ota/commands/{id}` still shows them.
    pub commands_kept: u64,
}

/// Delete a card with its key sets and group memberships. Refused (409 `CARD_IN_USE`, saying
/// why) while it has a live command (PENDING, SENT, DELIVERED) or is in a campaign not yet
/// completed or cancelled. Its finished commands stay readable.
#[utoipa::path(delete, path = "/api/v1/cards/{iccid}", tag = "cards",
    params(("iccid" = String, Path, description = "ICCID")),
    responses((status = 200, body = CardRemoved), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_card(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(iccid): Path<String>,
) -> Result<Json<CardRemoved>, ApiError> {
    let iccid = path_iccid(&iccid);
    let CardDeleted {
        key_sets,
        group_memberships,
        commands_kept,
    } = state
        .store
        .delete_card(&account.id, &iccid)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => {
                ApiError::not_found(Some("iccid"), format!("card {iccid} not found"))
            }
            e => ApiError::store(e),
        })?;
    Ok(Json(CardRemoved {
        iccid,
        key_sets_deleted: key_sets,
        group_memberships_removed: group_memberships,
        commands_kept,
    }))
}

/// The security status page size: 1 to 100,000 (default 1000), as documented.
fn status_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit.unwrap_or(1000) {
        n @ 1..=100_000 => Ok(n),
        n => Err(ApiError::invalid(
            "limit",
            format!("{n} is not 1 to 100000"),
        )),
    }
}

/// Query of the security status.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct StatusQuery {
    /// Most cards listed (1 to 100,000, default 1000).
    #[param(minimum = 1, maximum = 100000)]
    pub limit: Option<u32>,
}

/// Key versions and counters per card.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecurityStatus {
    /// Cards listed.
    pub cards: Vec<CardView>,
}

/// Key versions, last rotation and counters per card.
#[utoipa::path(get, path = "/api/v1/ota/security/status", tag = "security",
    params(StatusQuery),
    responses((status = 200, body = SecurityStatus), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn security_status(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Query(q): Query<StatusQuery>,
) -> Result<Json<SecurityStatus>, ApiError> {
    let cards = state
        .store
        .cards(&account.id, status_limit(q.limit)?)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(SecurityStatus {
        cards: cards.into_iter().map(view).collect(),
    }))
}

/// Upload query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct UploadQuery {
    /// A name for the applet.
    pub name: Option<String>,
}

/// An uploaded applet.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppletUploaded {
    /// Id to use as `data.parameters.appletId` of APP_INSTALL.
    pub applet_id: String,
    /// Octets.
    pub size: usize,
}

/// Upload a CAP file (zip) or a load file (IJC) as the request body.
#[utoipa::path(post, path = "/api/v1/applets", tag = "applets", params(UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = AppletUploaded), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn upload_applet(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "body",
            "empty: send the CAP or IJC file as the body",
        ));
    }
    let parsed = crate::script::cap::CapFile::from_zip(&body)
        .map(|_| ())
        .or_else(|_| crate::script::cap::LoadFile::from_ijc(&body).map(|_| ()));
    if let Err(e) = parsed {
        return Err(ApiError::invalid(
            "body",
            format!("neither a CAP zip nor an IJC load file: {e}"),
        ));
    }
    let applet = AppletRecord {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.id.clone(),
        name: q.name.unwrap_or_else(|| "applet".into()),
        content: body.to_vec(),
        created_at: now_ms(),
    };
    state
        .store
        .insert_applet(&applet)
        .await
        .map_err(ApiError::store)?;
    Ok((
        StatusCode::CREATED,
        Json(AppletUploaded {
            applet_id: applet.id,
            size: applet.content.len(),
        }),
    ))
}

/// A webhook to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddWebhook {
    /// Where to POST events (http or https).
    #[schema(pattern = "^https?://[^ ]+$")]
    pub url: String,
    /// HMAC-SHA256 secret, at least 16 characters (generated when absent; returned only now).
    #[serde(default)]
    #[schema(min_length = 16)]
    pub secret: Option<String>,
    /// The events it receives (`command.completed`, `campaign.progress`, ...); absent or
    /// empty: every event.
    #[serde(default)]
    #[schema(value_type = Option<Vec<WebhookEvent>>)]
    pub events: Option<Vec<String>>,
}

/// The name of an event a webhook can ask for: one of [`crate::events::names::PUBLISHED`].
pub struct WebhookEvent;

impl utoipa::PartialSchema for WebhookEvent {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(crate::events::names::PUBLISHED))
            .into()
    }
}

impl utoipa::ToSchema for WebhookEvent {}

/// A webhook.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookView {
    /// Id.
    pub id: String,
    /// URL.
    pub url: String,
    /// The secret, only in the answer that created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The events it receives; empty: every event.
    #[serde(default)]
    pub events: Vec<String>,
}

/// Subscribe a URL to this account's events (receipts, PoRs, final statuses, campaign
/// progress), signed with HMAC-SHA256 in `X-Otagw-Signature`. With `events`, only those
/// events (`command.delivered`, `command.por`, `command.completed`, `campaign.running`,
/// `campaign.progress`, `campaign.completed`, `campaign.terminated`); another name is refused
/// (422, naming `events[i]`).
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", request_body = AddWebhook,
    responses((status = 201, body = WebhookView), (status = 422, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_webhook(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    JsonBody(body): JsonBody<AddWebhook>,
) -> Result<impl IntoResponse, ApiError> {
    let url = reqwest::Url::parse(&body.url)
        .map_err(|e| ApiError::invalid("url", format!("{:?} is not a URL: {e}", body.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::invalid("url", "must be http or https"));
    }
    let secret = match body.secret {
        Some(s) if s.len() < 16 => {
            return Err(ApiError::invalid("secret", "at least 16 characters"))
        }
        Some(s) => s,
        None => {
            use rand::RngCore;
            let mut b = [0u8; 24];
            rand::thread_rng().fill_bytes(&mut b);
            hex::encode(b)
        }
    };
    let mut events: Vec<String> = Vec::new();
    for (i, name) in body.events.unwrap_or_default().into_iter().enumerate() {
        if !crate::api::webhook::events::PUBLISHED.contains(&name.as_str()) {
            return Err(ApiError::invalid(
                format!("events[{i}]"),
                format!(
                    "{name:?} is not an event the gateway publishes (one of: {})",
                    crate::api::webhook::events::PUBLISHED.join(", ")
                ),
            ));
        }
        if !events.contains(&name) {
            events.push(name);
        }
    }
    let hook = Webhook {
        id: uuid::Uuid::new_v4().to_string(),
        account_id: account.id.clone(),
        url: url.to_string(),
        secret: secret.as_bytes().to_vec(),
        events,
    };
    state
        .store
        .add_webhook(&hook)
        .await
        .map_err(ApiError::store)?;
    if let Some(w) = state.gateway.webhooks() {
        w.forget(&account.id);
    }
    Ok((
        StatusCode::CREATED,
        Json(WebhookView {
            id: hook.id,
            url: hook.url,
            secret: Some(secret),
            events: hook.events,
        }),
    ))
}

/// Deletes a webhook of this account: it gets no further events (other gateways stop within
/// their few seconds of webhook caching). Another account's webhook id answers 404.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks",
    params(("id" = String, Path, description = "the webhook's id")),
    responses((status = 204, description = "deleted"),
        (status = 404, body = super::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_webhook(&account.id, &id)
        .await
        .map_err(ApiError::store)?;
    if let Some(w) = state.gateway.webhooks() {
        w.forget(&account.id);
    }
    Ok(StatusCode::NO_CONTENT)
}

/// This account's webhooks (without secrets).
#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = Vec<WebhookView>)), security(("bearer" = [])))]
pub async fn list_webhooks(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Vec<WebhookView>>, ApiError> {
    let hooks = state
        .store
        .webhooks(&account.id)
        .await
        .map_err(ApiError::store)?;
    Ok(Json(
        hooks
            .into_iter()
            .map(|h| WebhookView {
                id: h.id,
                url: h.url,
                secret: None,
                events: h.events,
            })
            .collect(),
    ))
}
