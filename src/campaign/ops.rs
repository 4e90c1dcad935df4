//! The campaign operations the CLI and the REST API share: create, start, stop, retry the
//! failed cards, show. Each checks its input and names the field at fault; nothing is written
//! unless all of it holds.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{prepare, CampaignRequest, CampaignSettings, CampaignType, MESSAGES_WARN};
use crate::pipeline::validate::FieldError;
use crate::store::campaign::{CampaignRecord, CampaignTarget, NewCampaign};
use crate::store::{CardKey, KeySetRecord, Millis, NewCard, Store, StoreError};

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A field of the input is wrong.
    #[error("{}: {}", .0.field, .0.problem)]
    Field(FieldError),
    /// No such campaign (or another account's).
    #[error("no {0}")]
    NotFound(String),
    /// A field names something that does not exist (or is another account's): a profile, a
    /// campaign to copy, a card group.
    #[error("{}: {}", .0.field, .0.problem)]
    Missing(FieldError),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FieldError> for OpError {
    fn from(e: FieldError) -> Self {
        OpError::Field(e)
    }
}

fn field(name: &str, problem: impl Into<String>) -> OpError {
    OpError::Field(FieldError::new(name, problem))
}

fn missing(name: &str, problem: impl Into<String>) -> OpError {
    OpError::Missing(FieldError::new(name, problem))
}

/// Octets of script one SMS-PP command packet carries (concatenated SMS, 8-bit references).
pub fn sms_script_budget() -> usize {
    otagw_sms::concat::max_packet_len(otagw_sms::udh::ConcatReference::EightBit(0))
        .saturating_sub(crate::pipeline::secure::PACKET_OVERHEAD)
}

/// A campaign as shown (CLI JSON and REST; read back by the CLI's remote mode).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CampaignView {
    /// Id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub campaign_type: String,
    /// `CREATED`, `RUNNING`, `COMPLETED`, `TERMINATED`.
    pub state: String,
    /// Profile id.
    pub profile_id: i64,
    /// Current iteration (0 before the start).
    pub iteration: i64,
    /// Messages each card gets.
    pub messages_per_card: i64,
    /// Settings.
    pub settings: CampaignSettings,
    /// Created (RFC 3339, UTC, milliseconds, as every time here).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created: i64,
    /// Last change.
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated: i64,
    /// Last start or retry.
    #[serde(
        default,
        with = "crate::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started: Option<i64>,
    /// End of the last iteration.
    #[serde(
        default,
        with = "crate::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished: Option<i64>,
    /// Cards per state, per iteration (filled by `show`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iterations: Vec<IterationTotals>,
}

/// One iteration's cards per state.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IterationTotals {
    /// Iteration.
    pub iteration: i64,
    /// Cards.
    pub cards: u64,
    /// Cards per state name.
    pub states: BTreeMap<String, u64>,
}

impl CampaignView {
    /// From a record (settings parsed; an unreadable one shows as defaults).
    pub fn of(r: &CampaignRecord) -> Result<Self, OpError> {
        let settings: CampaignSettings = serde_json::from_str(&r.settings)
            .map_err(|e| StoreError::Database(format!("campaigns.settings: {e}")))?;
        Ok(Self {
            id: r.id,
            name: r.name.clone(),
            campaign_type: r.campaign_type.clone(),
            state: r.status.clone(),
            profile_id: r.profile_id,
            iteration: r.iteration,
            messages_per_card: r.messages_per_card,
            settings,
            created: r.created_at,
            updated: r.updated_at,
            started: r.started_at,
            finished: r.finished_at,
            iterations: Vec::new(),
        })
    }
}

/// Creates a campaign.
pub async fn create(
    store: &dyn Store,
    account_id: &str,
    req: &CampaignRequest,
    now: Millis,
) -> Result<CampaignView, OpError> {
    let profile = store
        .profile(account_id, req.profile)
        .await?
        .ok_or_else(|| missing("profile", format!("no profile {}", req.profile)))?;
    let template = match req.template {
        Some(t) => {
            let r = store
                .campaign(account_id, t)
                .await?
                .ok_or_else(|| missing("template", format!("no campaign {t} to copy")))?;
            let ty: CampaignType = r.campaign_type.parse().map_err(|e| field("template", e))?;
            let s: CampaignSettings = serde_json::from_str(&r.settings)
                .map_err(|e| field("template", format!("its settings do not parse: {e}")))?;
            Some((ty, s))
        }
        None => None,
    };
    let applet_id = req
        .applet
        .clone()
        .or_else(|| template.as_ref().and_then(|(_, s)| s.applet.clone()));
    let applet = match &applet_id {
        Some(a) => Some(
            store
                .applet(account_id, a)
                .await?
                .ok_or_else(|| field("applet", format!("no uploaded applet {a}")))?
                .content,
        ),
        None => None,
    };
    let prepared = prepare(
        req,
        template.as_ref().map(|(t, s)| (t, s)),
        &profile.defaults,
        applet.as_deref(),
        sms_script_budget(),
    )?;
    if prepared.campaign_type.is_tls() && profile.defaults.http.is_none() {
        return Err(field(
            "type",
            format!(
                "{} needs a profile with HTTP parameters; profile {} has none",
                prepared.campaign_type, profile.id
            ),
        ));
    }
    let record = store
        .create_campaign(
            &NewCampaign {
                account_id: account_id.to_string(),
                profile_id: profile.id,
                name: req.name.clone(),
                campaign_type: prepared.campaign_type.as_str().into(),
                settings: serde_json::to_string(&prepared.settings)
                    .map_err(|e| StoreError::Database(e.to_string()))?,
                messages_per_card: i64::try_from(prepared.messages_per_card).unwrap_or(i64::MAX),
            },
            now,
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate { key, .. } => field(
                "name",
                format!("profile {} already has a campaign named {key}", profile.id),
            ),
            other => other.into(),
        })?;
    CampaignView::of(&record)
}

/// Which cards a start targets, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartRequest {
    /// A card group of the campaign's profile.
    #[serde(default)]
    pub card_group: Option<i64>,
    /// One card by id (its ICCID).
    #[serde(default)]
    pub card: Option<String>,
    /// One card by MSISDN.
    #[serde(default)]
    pub msisdn: Option<String>,
    /// One card by ICCID (with the key fields: provisioned now if unknown).
    #[serde(default)]
    pub iccid: Option<String>,
    /// A new card's IMSI.
    #[serde(default)]
    pub imsi: Option<String>,
    /// A new card's key version (default 1).
    #[serde(default)]
    pub key_index: Option<u8>,
    /// A new card's KIc (hex).
    #[serde(default)]
    pub kic_key: Option<String>,
    /// A new card's KID (hex).
    #[serde(default)]
    pub kid_key: Option<String>,
    /// Placeholder values: CSV text, a header row `ICCID` or `MSISDN` then the placeholder
    /// names, one row per card.
    #[serde(default)]
    pub data: Option<String>,
}

/// What a start did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartOutcome {
    /// The campaign.
    pub campaign_id: i64,
    /// Cards targeted.
    pub cards: u64,
    /// Messages the iteration sends (cards x messages per card).
    pub messages: u64,
    /// Above the procedure's recommendation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

fn messages_warning(messages: u64) -> Option<String> {
    (messages > MESSAGES_WARN).then(|| {
        format!("the campaign sends {messages} messages, more than the recommended {MESSAGES_WARN}")
    })
}

/// Starts a `CREATED` campaign on a group or one card.
pub async fn start(
    store: &Arc<dyn Store>,
    account_id: &str,
    id: i64,
    req: &StartRequest,
    now: Millis,
) -> Result<StartOutcome, OpError> {
    let campaign = store
        .campaign(account_id, id)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("campaign {id}")))?;
    let settings: CampaignSettings = serde_json::from_str(&campaign.settings)
        .map_err(|e| StoreError::Database(format!("campaigns.settings: {e}")))?;
    let given = [
        req.card_group.is_some(),
        req.card.is_some(),
        req.msisdn.is_some() && req.iccid.is_none(),
        req.iccid.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(field(
            "cardGroup",
            "give exactly one target: a card group, a card, an MSISDN or an ICCID",
        ));
    }
    let target = if let Some(g) = req.card_group {
        CampaignTarget::Group(g)
    } else if let Some(c) = &req.card {
        CampaignTarget::Card(crate::provision::normalize_iccid(c).map_err(|p| field("card", p))?)
    } else if let Some(iccid) = &req.iccid {
        let iccid = crate::provision::normalize_iccid(iccid).map_err(|p| field("iccid", p))?;
        let linked = store
            .profile_cards_matching(
                account_id,
                campaign.profile_id,
                CardKey::Iccid,
                std::slice::from_ref(&iccid),
            )
            .await?;
        if linked.is_empty() {
            provision_one(
                store.as_ref(),
                account_id,
                campaign.profile_id,
                &iccid,
                req,
                now,
            )
            .await?;
        }
        CampaignTarget::Card(iccid)
    } else {
        let msisdn = req.msisdn.clone().unwrap_or_default();
        let m = crate::provision::normalize_msisdn(&msisdn).map_err(|p| field("msisdn", p))?;
        let found = store
            .profile_cards_matching(account_id, campaign.profile_id, CardKey::Msisdn, &[m])
            .await?;
        let (_, iccid) = found.into_iter().next().ok_or_else(|| {
            field(
                "msisdn",
                format!(
                    "{msisdn} is no card of profile {} (give --iccid and the keys to provision it)",
                    campaign.profile_id
                ),
            )
        })?;
        CampaignTarget::Card(iccid)
    };
    let data = match &req.data {
        Some(text) => {
            parse_data(
                store.as_ref(),
                account_id,
                campaign.profile_id,
                &settings,
                text,
            )
            .await?
        }
        None if !settings.placeholders.is_empty() => {
            return Err(field(
                "data",
                format!(
                    "the commands have placeholders ({}): give a data file",
                    settings.placeholders.join(", ")
                ),
            ))
        }
        None => Vec::new(),
    };
    let cards = store
        .start_campaign(account_id, id, &target, &data, now)
        .await
        .map_err(|e| match e {
            StoreError::Invalid { field: f, problem } => field(&f, problem),
            StoreError::NotFound { what, key } => missing("cardGroup", format!("no {what} {key}")),
            other => other.into(),
        })?;
    let messages = cards.saturating_mul(u64::try_from(campaign.messages_per_card).unwrap_or(1));
    Ok(StartOutcome {
        campaign_id: id,
        cards,
        messages,
        warning: messages_warning(messages),
    })
}

async fn provision_one(
    store: &dyn Store,
    account_id: &str,
    profile_id: i64,
    iccid: &str,
    req: &StartRequest,
    now: Millis,
) -> Result<(), OpError> {
    let (Some(kic), Some(kid)) = (&req.kic_key, &req.kid_key) else {
        return Err(field(
            "iccid",
            format!(
                "{iccid} is no card of profile {profile_id}; give --imsi, --msisdn, --kic-key \
                 and --kid-key to provision it"
            ),
        ));
    };
    let key = |name: &str, v: &str| {
        let b = hex::decode(v).map_err(|e| field(name, format!("not hex: {e}")))?;
        if ![8, 16, 24, 32].contains(&b.len()) {
            return Err(field(
                name,
                format!("{} octets fit no algorithm (8, 16, 24 or 32)", b.len()),
            ));
        }
        Ok(b)
    };
    let version = req.key_index.unwrap_or(1);
    if !(1..=15).contains(&version) {
        return Err(field(
            "keyIndex",
            format!("{version} is not a key version 1..15"),
        ));
    }
    // Without an MSISDN the card could never be reached, yet would spend a counter and stay.
    let Some(msisdn) = req.msisdn.as_deref() else {
        return Err(field(
            "msisdn",
            format!(
                "{iccid} is no card of profile {profile_id}; provisioning it needs its MSISDN \
                 (--msisdn): a card without one cannot be reached"
            ),
        ));
    };
    let msisdn = Some(crate::provision::normalize_msisdn(msisdn).map_err(|p| field("msisdn", p))?);
    let imsi = req
        .imsi
        .as_deref()
        .map(crate::provision::check_imsi)
        .transpose()
        .map_err(|p| field("imsi", p))?;
    let card = NewCard {
        iccid: iccid.to_string(),
        imsi,
        msisdn,
        attributes: BTreeMap::new(),
        key_sets: vec![KeySetRecord {
            version,
            kic_algorithm: None,
            kid_algorithm: None,
            keys: crate::store::KeyMaterial {
                kic: key("kicKey", kic)?,
                kid: key("kidKey", kid)?,
                kik: None,
            },
            counter: 0,
            rotated_at: None,
        }],
        factory_subscriptions: Vec::new(),
    };
    store
        .provision_cards(account_id, profile_id, &[card], None, now, &|_| {})
        .await?;
    Ok(())
}

/// Reads a data file: CSV, header `ICCID` or `MSISDN` then placeholder names.
async fn parse_data(
    store: &dyn Store,
    account_id: &str,
    profile_id: i64,
    settings: &CampaignSettings,
    text: &str,
) -> Result<Vec<(String, String)>, OpError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines
        .next()
        .ok_or_else(|| field("data", "the data file is empty"))?;
    let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let key = match columns.first().map(|c| c.to_ascii_uppercase()).as_deref() {
        Some("ICCID") => CardKey::Iccid,
        Some("MSISDN") => CardKey::Msisdn,
        _ => return Err(field("data", "line 1: the first column is ICCID or MSISDN")),
    };
    for p in &settings.placeholders {
        if !columns.iter().skip(1).any(|c| c == p) {
            return Err(field(
                "data",
                format!("line 1: no column for placeholder [{p}]"),
            ));
        }
    }
    let mut rows: Vec<(usize, String, BTreeMap<String, String>)> = Vec::new();
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != columns.len() {
            return Err(field(
                "data",
                format!(
                    "line {}: {} values for {} columns",
                    i + 1,
                    cells.len(),
                    columns.len()
                ),
            ));
        }
        let card = cells.first().copied().unwrap_or_default();
        let card = match key {
            CardKey::Iccid => crate::provision::normalize_iccid(card),
            CardKey::Msisdn => crate::provision::normalize_msisdn(card),
        }
        .map_err(|p| field("data", format!("line {}: {p}", i + 1)))?;
        let mut values = BTreeMap::new();
        for (c, v) in columns.iter().zip(cells.iter()).skip(1) {
            if !v.chars().all(|ch| ch.is_ascii_hexdigit()) {
                return Err(field(
                    "data",
                    format!("line {}: {c} value {v:?} is not hex", i + 1),
                ));
            }
            values.insert(c.clone(), v.to_string());
        }
        rows.push((i + 1, card, values));
    }
    let keys: Vec<String> = rows.iter().map(|(_, k, _)| k.clone()).collect();
    let mut found: HashMap<String, String> = HashMap::new();
    for chunk in keys.chunks(500) {
        for (v, iccid) in store
            .profile_cards_matching(account_id, profile_id, key, chunk)
            .await?
        {
            found.insert(v, iccid);
        }
    }
    let mut seen = HashMap::new();
    let mut out = Vec::with_capacity(rows.len());
    for (line, k, values) in rows {
        let iccid = found.get(&k).ok_or_else(|| {
            field(
                "data",
                format!("line {line}: {k} is no card of profile {profile_id}"),
            )
        })?;
        if let Some(first) = seen.insert(iccid.clone(), line) {
            return Err(field(
                "data",
                format!("line {line}: card {k} already has data on line {first}"),
            ));
        }
        let json =
            serde_json::to_string(&values).map_err(|e| StoreError::Database(e.to_string()))?;
        out.push((iccid.clone(), json));
    }
    Ok(out)
}

/// Stops a running (or not yet started) campaign: `TERMINATED`.
pub async fn stop(
    store: &dyn Store,
    account_id: &str,
    id: i64,
    now: Millis,
) -> Result<CampaignView, OpError> {
    let c = store
        .campaign(account_id, id)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("campaign {id}")))?;
    let terminated = crate::events::Event::CampaignTerminated {
        campaign_id: id,
        iteration: c.iteration,
        reason: Some("stopped".into()),
        cards: None,
    };
    if !store
        .set_campaign_status(
            id,
            &["RUNNING", "CREATED"],
            "TERMINATED",
            now,
            &[terminated],
        )
        .await?
    {
        return Err(field(
            "campaign",
            format!(
                "campaign {id} is {}; only a RUNNING or CREATED one stops",
                c.status
            ),
        ));
    }
    show(store, account_id, id).await
}

/// Starts a new iteration for the cards that did not succeed.
pub async fn retry_failed(
    store: &dyn Store,
    account_id: &str,
    id: i64,
    now: Millis,
) -> Result<StartOutcome, OpError> {
    let c = store
        .campaign(account_id, id)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("campaign {id}")))?;
    let (_, cards) = store
        .retry_failed(account_id, id, now)
        .await
        .map_err(|e| match e {
            StoreError::Invalid { field: f, problem } => field(&f, problem),
            other => other.into(),
        })?;
    let messages = cards.saturating_mul(u64::try_from(c.messages_per_card).unwrap_or(1));
    Ok(StartOutcome {
        campaign_id: id,
        cards,
        messages,
        warning: messages_warning(messages),
    })
}

/// A campaign with its cards per state and iteration.
pub async fn show(store: &dyn Store, account_id: &str, id: i64) -> Result<CampaignView, OpError> {
    let c = store
        .campaign(account_id, id)
        .await?
        .ok_or_else(|| OpError::NotFound(format!("campaign {id}")))?;
    let mut view = CampaignView::of(&c)?;
    let mut by_iteration: BTreeMap<i64, IterationTotals> = BTreeMap::new();
    for t in store.campaign_totals(id).await? {
        let e = by_iteration
            .entry(t.iteration)
            .or_insert_with(|| IterationTotals {
                iteration: t.iteration,
                cards: 0,
                states: BTreeMap::new(),
            });
        e.cards += t.cards;
        *e.states.entry(t.state).or_default() += t.cards;
    }
    view.iterations = by_iteration.into_values().collect();
    Ok(view)
}
