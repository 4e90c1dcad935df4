//! A card's subscriptions on its page: the registry as last known, the sync state (a DIRTY
//! badge with its reason), "Audit now", and the card's audit trail as a timeline.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::campaigns::NoFields;
use super::error::PageError;
use super::layout;
use super::session::{Posted, Session};
use super::{audit, ConsoleState};
use crate::store::subscriptions::SyncState;
use crate::store::users::Role;
use crate::subscription::{Requester, RouterError};

/// Timeline entries shown on the card's page.
const TRAIL: u32 = 30;

impl From<RouterError> for PageError {
    fn from(e: RouterError) -> Self {
        match e {
            RouterError::NotFound { .. } => PageError::NotFound,
            RouterError::Invalid { field, problem } => PageError::form(&field, problem),
            RouterError::Conflict(message, _) => PageError::Invalid {
                field: "card".into(),
                problem: message,
                status: StatusCode::CONFLICT,
            },
            RouterError::Forbidden(m) => PageError::Forbidden(m),
            RouterError::Store(s) => PageError::Store(s),
        }
    }
}

fn sync_badge(state: SyncState) -> Markup {
    let class = match state {
        SyncState::Synced => "ok",
        SyncState::Pending => "info",
        SyncState::Dirty => "bad",
    };
    html! { span class={ "badge " (class) } #sync-state { (state.as_str()) } }
}

/// The subscriptions panel and the audit trail of card `iccid` (empty when the gateway runs
/// no Secure Router).
pub async fn panels(
    state: &ConsoleState,
    session: &Session,
    iccid: &str,
) -> Result<Markup, PageError> {
    let Some(router) = state.app.router.as_deref() else {
        return Ok(html! {});
    };
    let account = session.account_id();
    let known = router.known(account, iccid).await?;
    let trail = router.trail(account, iccid, None, TRAIL).await?;
    Ok(html! {
        section.panel #subscriptions {
            h2 { "Subscriptions " (sync_badge(known.sync.state)) }
            @if known.sync.state == SyncState::Dirty {
                p.notice.bad { "The stored registry may not be the card's: " (known.sync.reason)
                    ". An automatic audit repairs it; operations wait until then." }
            }
            @if let Some(op) = &known.sync.operation_id {
                p.sub { "Operation in flight: " span.mono { (op) } }
            }
            @if known.implied {
                p.sub { "As provisioning implies (never read from the card)." }
            }
            @if known.subscriptions.is_empty() {
                (layout::empty("No subscription known."))
            } @else {
                div.table-wrap { table {
                    thead { tr { th.num { "Id" } th { "IMSI" } th { "State" } th { "Marks" } th { "Template" } } }
                    tbody { @for s in &known.subscriptions { tr {
                        td.num { (s.id) }
                        td.mono { (s.imsi) }
                        td { @if s.enabled { span.badge.ok { "enabled" } } @else { "disabled" } }
                        td {
                            @if s.fallback { span.badge { "fallback" } " " }
                            @if s.bootstrap { span.badge { "bootstrap" } }
                        }
                        td { (s.template.as_deref().unwrap_or("—")) }
                    } } }
                } }
            }
            @if session.can_operate() {
                form.inline method="post" action={ "/console/cards/" (iccid) "/audit" } {
                    (layout::csrf_field(session))
                    button.secondary type="submit" #audit-now
                        disabled[known.sync.operation_id.is_some()] { "Audit now" }
                }
            }
        }
        section.panel #audit-trail {
            h2 { "Audit trail" }
            @if trail.is_empty() {
                (layout::empty("Nothing happened to this card's subscriptions yet."))
            } @else {
                ol.timeline { @for t in &trail { li {
                    div { (layout::time(t.at)) " · " strong { (t.what) } " · " (t.who) }
                    @if !t.answer.is_empty() { div.sub.mono { (t.answer) } }
                    div.sub { "Sync " (t.before["syncState"].as_str().unwrap_or("?")) " → "
                        (t.after["syncState"].as_str().unwrap_or("?")) }
                } } }
            }
        }
    })
}

/// `POST /console/cards/{iccid}/audit` (operator or admin): reads the card's registry back.
pub async fn audit_now(
    State(state): State<ConsoleState>,
    Path(iccid): Path<String>,
    posted: Posted<NoFields>,
) -> Result<Response, PageError> {
    let session = posted.session;
    session.require(Role::Operator)?;
    let router = state.app.router.as_deref().ok_or(PageError::Unavailable(
        "subscription management is not running",
    ))?;
    let op = router
        .audit(
            session.account_id(),
            &iccid,
            &Requester(format!("user:{}", session.user.name)),
        )
        .await?;
    audit::record(
        &state,
        &session.user,
        "card.audit",
        &format!("card {iccid}"),
        &format!("operation {}", op.id),
    )
    .await;
    Ok(Redirect::to(&format!("/console/cards/{iccid}")).into_response())
}
