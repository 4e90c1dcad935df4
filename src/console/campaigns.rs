//! Campaigns: the list; a campaign's page with its per-state totals (live over server-sent
//! events, `live.rs`), its per-card list, and start / stop / retry for operators and admins.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::audit;
use super::error::PageError;
use super::layout::{self, badge, num, percent, Section};
use super::session::{Posted, Session};
use super::ConsoleState;
use crate::api::campaign_ops::transport_refusal;
use crate::campaign::ops::{self, StartRequest};
use crate::campaign::{card_state, status, CampaignRequest, CampaignType};
use crate::store::campaign::{CampaignRecord, StateCount};
use crate::store::users::Role;
use crate::store::CardGroupRecord;

/// Cards per page of a campaign's card list.
const CARDS_PAGE: u32 = 100;

/// One iteration's cards: in all, in a final state, per state (display order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Cards in the iteration.
    pub total: u64,
    /// Cards in a final state.
    pub done: u64,
    /// Cards per state, in `card_state::ALL` order, then any other state.
    pub states: Vec<(String, u64)>,
}

impl Progress {
    /// The totals of `iteration`.
    pub fn of(totals: &[StateCount], iteration: i64) -> Self {
        let mut by_state: BTreeMap<String, u64> = BTreeMap::new();
        let mut p = Progress::default();
        for t in totals.iter().filter(|t| t.iteration == iteration) {
            p.total += t.cards;
            if t.done {
                p.done += t.cards;
            }
            *by_state.entry(t.state.clone()).or_default() += t.cards;
        }
        for s in card_state::ALL {
            p.states
                .push((s.to_string(), by_state.remove(s).unwrap_or(0)));
        }
        p.states.extend(by_state);
        p
    }
}

impl Progress {
    /// Cards that ended without success (what "retry failed" sends to again), or not sent.
    pub fn unsuccessful(&self) -> u64 {
        self.states
            .iter()
            .filter(|(s, _)| s != card_state::POR_OK && s != card_state::DELIVERED)
            .map(|(_, n)| n)
            .sum()
    }
}

/// A progress bar with its percentage (a `<progress>` element: no inline style).
pub fn progress_line(p: &Progress) -> Markup {
    html! {
        div.progress-line {
            progress value=(p.done) max=(p.total.max(1)) { (percent(p.done, p.total)) }
            span.pct data-pct { (percent(p.done, p.total)) }
        }
    }
}

/// The create form (operators and admins): from APDUs typed or pasted (an APDU file's
/// lines), a text, or another campaign as template.
fn create_form(
    session: &Session,
    profiles: &[crate::store::ProfileRecord],
    campaigns: &[CampaignRecord],
) -> Markup {
    html! {
        section.panel {
            h2 { "New campaign" }
            div #create-result role="status" {}
            form method="post" action="/console/campaigns" hx-post="/console/campaigns"
                hx-target="#create-result" hx-select=".notice" hx-swap="innerHTML" {
                (layout::csrf_field(session))
                div.form-grid {
                    label { "Profile" select name="profile" required {
                        @for p in profiles { option value=(p.id) { (p.name) " (#" (p.id) ")" } }
                    } }
                    label { "Name (no spaces)" input type="text" name="name" required; }
                    label { "Type" select name="type" {
                        @for t in CampaignType::ALL { option value=(t.as_str()) { (t.as_str()) } }
                    } }
                    label { "Template (copies its settings)" select name="template" {
                        option value="" { "none" }
                        @for c in campaigns { option value=(c.id) { (c.name) " (#" (c.id) ")" } }
                    } }
                    label { "Expected last SW (RFM, RAM)" input type="text" name="expected_last_sw" placeholder="9000" maxlength="4"; }
                }
                label { "Commands: one C-APDU in hex per line (RFM, RAM)"
                    textarea name="commands" rows="5" spellcheck="false" {} }
                label { "Text (SMS, FLASH)" input type="text" name="message"; }
                div.actions { button type="submit" #create { "Create" } }
            }
        }
    }
}

/// `GET /console/campaigns`.
pub async fn list(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Markup, PageError> {
    let all = state.app.store.campaigns(session.account_id()).await?;
    let profiles = if session.can_operate() {
        state.app.store.profiles(session.account_id()).await?
    } else {
        Vec::new()
    };
    let body = html! {
        h1 { "Campaigns" }
        @if session.can_operate() && !profiles.is_empty() {
            (create_form(&session, &profiles, &all))
        }
        section.panel {
            @if all.is_empty() {
                (layout::empty("No campaign yet. Create one with `otagw campaign create` or POST /api/v1/campaigns."))
            } @else {
                div.table-wrap { table {
                    thead { tr {
                        th.num { "Id" } th { "Name" } th { "Type" } th { "State" } th.num { "Iteration" }
                        th.num { "Messages per card" } th { "Created" } th { "Started" } th { "Finished" }
                    } }
                    tbody { @for c in all.iter().rev() { tr {
                        td.num { (c.id) }
                        td { a href={ "/console/campaigns/" (c.id) } { (c.name) } }
                        td { (c.campaign_type) }
                        td { (badge(&c.status)) }
                        td.num { (c.iteration) }
                        td.num { (c.messages_per_card) }
                        td { (layout::time(c.created_at)) }
                        td { (layout::maybe_time(c.started_at)) }
                        td { (layout::maybe_time(c.finished_at)) }
                    } } }
                } }
            }
        }
    };
    Ok(layout::page(
        "Campaigns",
        Section::Campaigns,
        &session,
        body,
    ))
}

/// The live part of a campaign's page: state, progress, totals, and the actions the user's
/// role allows. Rendered for the page and for each server-sent update.
pub fn live_block(
    c: &CampaignRecord,
    p: &Progress,
    groups: &[CardGroupRecord],
    session: &Session,
) -> Markup {
    let can = session.can_operate();
    html! {
        dl.facts {
            dt { "State" } dd #campaign-state { (badge(&c.status)) }
            dt { "Iteration" } dd { (c.iteration) }
            dt { "Cards done" } dd { (num(p.done)) " of " (num(p.total)) }
            dt { "Started" } dd { (layout::maybe_time(c.started_at)) }
            dt { "Finished" } dd { (layout::maybe_time(c.finished_at)) }
        }
        (progress_line(p))
        div.table-wrap { table {
            thead { tr { th { "Card state" } th.num { "Cards" } th.num { "Share" } } }
            tbody { @for (s, n) in &p.states { tr {
                td { (badge(s)) } td.num { (num(*n)) } td.num { (percent(*n, p.total)) }
            } } }
        } }
        @if can {
            div.actions #campaign-actions {
                @if c.status == status::CREATED {
                    form.inline method="post" action={ "/console/campaigns/" (c.id) "/start" }
                        hx-post={ "/console/campaigns/" (c.id) "/start" } hx-target="#action-result"
                        hx-select=".notice" hx-swap="innerHTML" {
                        (layout::csrf_field(session))
                        label { "Card group" select name="card_group" required {
                            @for g in groups {
                                option value=(g.id) { (g.name) " (" (num(g.cards)) " cards)" }
                            }
                        } }
                        button type="submit" #start disabled[groups.is_empty()] { "Start" }
                    }
                }
                @if c.status == status::RUNNING || c.status == status::CREATED {
                    form.inline method="post" action={ "/console/campaigns/" (c.id) "/stop" }
                        hx-post={ "/console/campaigns/" (c.id) "/stop" } hx-target="#action-result"
                        hx-select=".notice" hx-swap="innerHTML" {
                        (layout::csrf_field(session))
                        button.danger type="submit" #stop { "Stop" }
                    }
                }
                @if (c.status == status::COMPLETED || c.status == status::TERMINATED) && p.unsuccessful() > 0 {
                    form.inline method="post" action={ "/console/campaigns/" (c.id) "/retry" }
                        hx-post={ "/console/campaigns/" (c.id) "/retry" } hx-target="#action-result"
                        hx-select=".notice" hx-swap="innerHTML" {
                        (layout::csrf_field(session))
                        button.secondary type="submit" #retry { "Retry failed cards" }
                    }
                }
            }
        }
    }
}

/// The card groups a campaign can start on (its profile's).
pub async fn groups_for(
    state: &ConsoleState,
    account_id: &str,
    c: &CampaignRecord,
) -> Result<Vec<CardGroupRecord>, PageError> {
    if c.status != status::CREATED {
        return Ok(Vec::new());
    }
    Ok(state
        .app
        .store
        .card_groups(account_id)
        .await?
        .into_iter()
        .filter(|g| g.profile_id == c.profile_id)
        .collect())
}

/// The per-card list's paging and filter.
#[derive(Debug, Default, Deserialize)]
pub struct CardsQuery {
    /// Only cards in this state.
    #[serde(default)]
    pub state: String,
    /// Cards after this ICCID.
    #[serde(default)]
    pub after: String,
}

/// `GET /console/campaigns/{id}`: 404 for another account's campaign.
pub async fn show(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
    Query(q): Query<CardsQuery>,
) -> Result<Markup, PageError> {
    let id = campaign_id(&id)?;
    let account = session.account_id();
    let store = &state.app.store;
    let c = store
        .campaign(account, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let progress = Progress::of(&store.campaign_totals(id).await?, c.iteration);
    let groups = groups_for(&state, account, &c).await?;
    // Shown as stored; a row that does not parse shows without its settings.
    let settings: Option<crate::campaign::CampaignSettings> =
        serde_json::from_str(&c.settings).ok();
    let profile_name = store
        .profile(account, c.profile_id)
        .await?
        .map(|p| p.name)
        .unwrap_or_default();
    let activity = state
        .users()?
        .actions(account, Some(&format!("campaign {id}")), 20)
        .await?;
    let filter = q.state.trim();
    if !filter.is_empty() && !card_state::ALL.contains(&filter) {
        return Err(PageError::query(
            "state",
            format!(
                "{filter:?} is not a card state ({})",
                card_state::ALL.join(", ")
            ),
        ));
    }
    let cards = store
        .campaign_cards(
            id,
            c.iteration,
            (!filter.is_empty()).then_some(filter),
            q.after.trim(),
            CARDS_PAGE + 1,
        )
        .await?;
    let more = cards.len() > CARDS_PAGE as usize;
    let cards = &cards[..cards.len().min(CARDS_PAGE as usize)];
    let next = more
        .then(|| cards.last())
        .flatten()
        .map(|r| format!("/console/campaigns/{id}?state={filter}&after={}", r.iccid));
    let body = html! {
        h1 { "Campaign " (c.name) span.sub { "#" (c.id) " · " (c.campaign_type) } }
        div.grid {
            section.panel {
                h2 { "Progress" }
                // With JavaScript, actions post in place: their refusals land here and their
                // effect comes with the next server-sent update.
                div #action-result role="status" {}
                // Without JavaScript the page shows the totals as loaded; with it, the block
                // is replaced on each server-sent `totals` event.
                div #live sse-connect={ "/console/campaigns/" (c.id) "/live" } sse-swap="totals" {
                    (live_block(&c, &progress, &groups, &session))
                }
            }
            section.panel {
                h2 { "Campaign" }
                dl.facts {
                    dt { "Profile" } dd { (profile_name) " (#" (c.profile_id) ")" }
                    dt { "Messages per card" } dd { (c.messages_per_card) }
                    dt { "Created" } dd { (layout::time(c.created_at)) }
                    @if let Some(v) = &settings {
                        dt { "SPI / TAR" } dd.mono { (v.spi) " / " (v.tar) }
                        dt { "KIc / KID octets" } dd.mono { (v.kic_byte) " / " (v.kid_byte) }
                        dt { "Segments" } dd { (format!("{:?}", v.transmission_mode).to_lowercase()) }
                        @if let Some(sw) = &v.expected_last_sw { dt { "Expected last SW" } dd.mono { (sw) } }
                        @if let Some(m) = &v.message { dt { "Text" } dd.wrap { (m) } }
                        @if let Some(a) = &v.applet { dt { "Applet" } dd.mono { (a) } }
                    }
                }
                @if let Some(v) = settings.as_ref().filter(|v| !v.commands.is_empty()) {
                    h2 { "Commands" }
                    ol.apdus { @for cmd in &v.commands { li.mono { (cmd) } } }
                }
            }
        }
        section.panel {
            h2 { "Cards" }
            form.inline method="get" action={ "/console/campaigns/" (c.id) } {
                label { "State" select name="state" {
                    option value="" { "any" }
                    @for s in card_state::ALL { option value=(s) selected[s == filter] { (s) } }
                } }
                button.secondary type="submit" { "Show" }
            }
            @if cards.is_empty() {
                (layout::empty("No card in this iteration (yet)."))
            } @else {
                div.table-wrap { table {
                    thead { tr { th { "ICCID" } th { "State" } th.num { "Step" } th.num { "Counter" } th { "Detail" } th { "Updated" } } }
                    tbody { @for r in cards { tr {
                        td.mono { a href={ "/console/cards/" (r.iccid) } { (r.iccid) } }
                        td { (badge(&r.state)) }
                        td.num { (r.step) }
                        td.num { (r.counter.map(|n| n.to_string()).unwrap_or_else(|| "—".into())) }
                        td.wrap { (r.detail.as_deref().unwrap_or("")) }
                        td { (layout::time(r.updated_at)) }
                    } } }
                } }
            }
            div.pager {
                span.sub { "Iteration " (c.iteration) ", ICCID order" }
                @if let Some(href) = &next { a href=(href) { "Next page →" } }
            }
        }
        section.panel {
            h2 { "Activity in the console" }
            (audit::trail(&activity))
        }
    };
    Ok(layout::page(
        &format!("Campaign {}", c.name),
        Section::Campaigns,
        &session,
        body,
    ))
}

/// The start form.
#[derive(Debug, Deserialize)]
pub struct StartForm {
    /// The card group to start on.
    pub card_group: Option<String>,
}

/// Stop and retry take only the token.
#[derive(Debug, Deserialize)]
pub struct NoFields {}

/// A campaign id from a path: anything but a number is no campaign (404).
pub fn campaign_id(s: &str) -> Result<i64, PageError> {
    s.parse().map_err(|_| PageError::NotFound)
}

/// Where an action leads: without JavaScript, a redirect to the campaign's page; from htmx,
/// nothing to swap (204: the page's server-sent updates show the effect), or with `navigate`
/// an `HX-Redirect` there.
fn done(headers: &HeaderMap, id: i64, navigate: bool) -> Response {
    let to = format!("/console/campaigns/{id}");
    if !headers.contains_key("hx-request") {
        return Redirect::to(&to).into_response();
    }
    if !navigate {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut r = StatusCode::OK.into_response();
    if let Ok(v) = HeaderValue::from_str(&to) {
        r.headers_mut().insert("hx-redirect", v);
    }
    r
}

/// The create form's fields (as typed).
#[derive(Debug, Default, Deserialize)]
pub struct CreateForm {
    /// Profile id.
    #[serde(default)]
    pub profile: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Type name.
    #[serde(default, rename = "type")]
    pub campaign_type: String,
    /// Template campaign id, or empty.
    #[serde(default)]
    pub template: String,
    /// C-APDUs, one per line.
    #[serde(default)]
    pub commands: String,
    /// SMS / FLASH text.
    #[serde(default)]
    pub message: String,
    /// 4 hex digits, or empty.
    #[serde(default)]
    pub expected_last_sw: String,
}

impl CreateForm {
    /// The REST body it amounts to (the same checks follow in `ops::create`).
    fn request(&self) -> Result<CampaignRequest, PageError> {
        let opt = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        let profile = self
            .profile
            .trim()
            .parse()
            .map_err(|_| PageError::form("profile", "choose a profile"))?;
        let template =
            match opt(&self.template) {
                None => None,
                Some(t) => Some(t.parse().map_err(|_| {
                    PageError::form("template", format!("{t:?} is not a campaign id"))
                })?),
            };
        let campaign_type = match opt(&self.campaign_type) {
            None => None,
            Some(t) => Some(
                t.parse::<CampaignType>()
                    .map_err(|e| PageError::form("type", e.to_string()))?,
            ),
        };
        Ok(CampaignRequest {
            profile,
            name: self.name.trim().to_string(),
            // A template's own type wins unless one is chosen on purpose with no template.
            campaign_type: if template.is_some() {
                None
            } else {
                campaign_type
            },
            template,
            commands: self
                .commands
                .lines()
                .map(|l| l.split_whitespace().collect::<String>())
                .filter(|l| !l.is_empty())
                .collect(),
            message: opt(&self.message),
            expected_last_sw: opt(&self.expected_last_sw),
            ..CampaignRequest::default()
        })
    }
}

/// `POST /console/campaigns` (operator or admin): creates a campaign, then its page.
pub async fn create(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    posted: Posted<CreateForm>,
) -> Result<Response, PageError> {
    let session = posted.session;
    session.require(Role::Operator)?;
    let request = posted.form.request()?;
    let view = ops::create(
        state.app.store.as_ref(),
        session.account_id(),
        &request,
        state.now(),
    )
    .await?;
    audit::record(
        &state,
        &session.user,
        "campaign.create",
        &format!("campaign {}", view.id),
        &format!("{} ({})", view.name, view.campaign_type),
    )
    .await;
    Ok(done(&headers, view.id, true))
}

/// `POST /console/campaigns/{id}/start` (operator or admin).
pub async fn start(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    posted: Posted<StartForm>,
) -> Result<Response, PageError> {
    let id = campaign_id(&id)?;
    let session = posted.session;
    session.require(Role::Operator)?;
    let group = posted
        .form
        .card_group
        .as_deref()
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .ok_or_else(|| PageError::form("card_group", "choose a card group"))?
        .parse::<i64>()
        .map_err(|_| PageError::form("card_group", "not a card group id"))?;
    let account = session.account_id();
    if let Some(why) = transport_refusal(&state.app, account, id).await? {
        return Err(PageError::form("transport", why));
    }
    let request = StartRequest {
        card_group: Some(group),
        ..StartRequest::default()
    };
    let outcome = ops::start(&state.app.store, account, id, &request, state.now()).await?;
    audit::record(
        &state,
        &session.user,
        "campaign.start",
        &format!("campaign {id}"),
        &format!("card group {group}, {} cards", outcome.cards),
    )
    .await;
    Ok(done(&headers, id, false))
}

/// `POST /console/campaigns/{id}/stop` (operator or admin).
pub async fn stop(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, PageError> {
    let id = campaign_id(&id)?;
    posted.session.require(Role::Operator)?;
    ops::stop(
        state.app.store.as_ref(),
        posted.session.account_id(),
        id,
        state.now(),
    )
    .await?;
    audit::record(
        &state,
        &posted.session.user,
        "campaign.stop",
        &format!("campaign {id}"),
        "",
    )
    .await;
    Ok(done(&headers, id, false))
}

/// `POST /console/campaigns/{id}/retry` (operator or admin).
pub async fn retry(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, PageError> {
    let id = campaign_id(&id)?;
    posted.session.require(Role::Operator)?;
    let outcome = ops::retry_failed(
        state.app.store.as_ref(),
        posted.session.account_id(),
        id,
        state.now(),
    )
    .await?;
    audit::record(
        &state,
        &posted.session.user,
        "campaign.retry-failed",
        &format!("campaign {id}"),
        &format!("{} cards", outcome.cards),
    )
    .await;
    Ok(done(&headers, id, false))
}
