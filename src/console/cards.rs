//! Cards: search by ICCID, IMSI or MSISDN prefix, paged; a card's page with its key sets'
//! metadata (never a key value), its subscriptions and audit trail, and its last commands
//! with their PoR.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::commands::command_table;
use super::error::PageError;
use super::layout::{self, num, Section};
use super::session::Session;
use super::ConsoleState;
use crate::store::views::CommandFilter;
use crate::store::{CardSearch, StoreError};

/// Cards per page.
const PAGE: u32 = 50;

/// The search form's fields (all prefixes, digits).
#[derive(Debug, Default, Deserialize)]
pub struct CardQuery {
    /// ICCID prefix.
    #[serde(default)]
    pub iccid: String,
    /// IMSI prefix.
    #[serde(default)]
    pub imsi: String,
    /// MSISDN prefix (a leading `+` is dropped).
    #[serde(default)]
    pub msisdn: String,
    /// The page after this ICCID.
    #[serde(default)]
    pub after: String,
}

fn some(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `GET /console/cards`.
pub async fn list(
    State(state): State<ConsoleState>,
    session: Session,
    Query(q): Query<CardQuery>,
) -> Result<Response, PageError> {
    let search = CardSearch {
        iccid: some(&q.iccid),
        imsi: some(&q.imsi),
        msisdn: some(q.msisdn.trim().trim_start_matches('+')),
        after: some(&q.after),
        limit: PAGE + 1,
    };
    let (status, rows, problem) = match state
        .app
        .store
        .search_cards(session.account_id(), &search)
        .await
    {
        Ok(rows) => (StatusCode::OK, rows, None),
        Err(StoreError::Invalid { field, problem }) => (
            StatusCode::BAD_REQUEST,
            Vec::new(),
            Some(format!("{field}: {problem}")),
        ),
        Err(e) => return Err(e.into()),
    };
    let more = rows.len() > PAGE as usize;
    let rows = &rows[..rows.len().min(PAGE as usize)];
    let next = more.then(|| rows.last().map(|c| c.iccid.clone())).flatten();
    let next_href = next.map(|after| {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("iccid", q.iccid.trim())
            .append_pair("imsi", q.imsi.trim())
            .append_pair("msisdn", q.msisdn.trim())
            .append_pair("after", &after);
        format!("/console/cards?{}", s.finish())
    });
    let body = html! {
        h1 { "Cards" }
        section.panel {
            // Works as a plain GET form; with htmx the results follow the typing.
            form.inline method="get" action="/console/cards"
                hx-get="/console/cards" hx-target="#results" hx-select="#results"
                hx-swap="outerHTML" hx-push-url="true"
                hx-trigger="input changed delay:300ms from:input, submit" {
                label { "ICCID prefix" input type="search" name="iccid" value=(q.iccid) inputmode="numeric" autocomplete="off"; }
                label { "IMSI prefix" input type="search" name="imsi" value=(q.imsi) inputmode="numeric" autocomplete="off"; }
                label { "MSISDN prefix" input type="search" name="msisdn" value=(q.msisdn) inputmode="tel" autocomplete="off"; }
                button type="submit" { "Search" }
            }
        }
        section.panel #results {
            @if let Some(p) = &problem {
                p.notice.bad role="alert" { (p) }
            }
            @if rows.is_empty() && problem.is_none() {
                (layout::empty("No card matches."))
            } @else if !rows.is_empty() {
                div.table-wrap { table {
                    thead { tr { th { "ICCID" } th { "IMSI" } th { "MSISDN" } th { "Key versions" } th { "Added" } } }
                    tbody { @for c in rows { tr {
                        td.mono { a href={ "/console/cards/" (c.iccid) } { (c.iccid) } }
                        td.mono { (c.imsi.as_deref().unwrap_or("—")) }
                        td.mono { (c.msisdn.as_deref().map(|m| format!("+{m}")).unwrap_or_else(|| "—".into())) }
                        td { @if c.account_id != session.account_id() { span.badge.info { "granted" } } @else { (c.key_versions.iter().map(|k| k.version.to_string()).collect::<Vec<_>>().join(", ")) } }
                        td { (layout::time(c.created_at)) }
                    } } }
                } }
            }
            div.pager {
                span.sub { (num(rows.len() as u64)) " cards shown" @if !q.after.trim().is_empty() { ", after " span.mono { (q.after.trim()) } } }
                @if let Some(href) = &next_href { a href=(href) { "Next page →" } }
            }
        }
    };
    Ok((
        status,
        layout::page("Cards", Section::Cards, &session, body),
    )
        .into_response())
}

/// `GET /console/cards/{iccid}`: 404 for an unknown card or another account's, unless a
/// card group grant lets this account view it (then the page shows its identity and
/// subscriptions; key sets and commands stay the owner's).
pub async fn show(
    State(state): State<ConsoleState>,
    session: Session,
    Path(iccid): Path<String>,
) -> Result<Markup, PageError> {
    let account = session.account_id();
    let owned = state.app.store.card(account, &iccid).await?;
    let card = match owned {
        Some(card) => card,
        None => {
            let router = state.app.router.as_deref().ok_or(PageError::NotFound)?;
            router.granted_card(account, &iccid).await?
        }
    };
    if card.account_id != account {
        return granted_card(&state, &session, card).await;
    }
    let views = state.views()?;
    let key_sets = views.key_set_info(account, &card.iccid).await?;
    let commands = views
        .command_page(
            account,
            &CommandFilter {
                iccid: Some(card.iccid.clone()),
                limit: 20,
                ..CommandFilter::default()
            },
        )
        .await?;
    let subscriptions = super::subscriptions::panels(&state, &session, &card.iccid).await?;
    let body = html! {
        h1 { "Card " span.mono { (card.iccid) } }
        div.grid.narrow-first {
            section.panel {
                h2 { "Identity" }
                (identity(&card, true))
            }
            section.panel {
                h2 { "Key sets" }
                p.sub { "Versions, algorithms and counters. Key values are never shown." }
                @if key_sets.is_empty() {
                    (layout::empty("No key set."))
                } @else {
                    div.table-wrap { table {
                        thead { tr { th.num { "Version" } th { "KIc algorithm" } th { "KID algorithm" } th { "KIK" } th.num { "Counter" } th { "Last rotation" } } }
                        tbody { @for k in &key_sets { tr {
                            td.num { (k.version) }
                            td { (k.kic_algorithm.as_deref().unwrap_or("from KIc octet")) }
                            td { (k.kid_algorithm.as_deref().unwrap_or("from KID octet")) }
                            td { @if k.has_kik { "stored" } @else { "none" } }
                            td.num { (num(k.counter)) }
                            td { (layout::maybe_time(k.rotated_at)) }
                        } } }
                    } }
                }
            }
        }
        (subscriptions)
        section.panel {
            h2 { "Last commands" }
            (command_table(&commands))
            p { a href={ "/console/commands?card=" (card.iccid) } { "All commands of this card →" } }
        }
    };
    Ok(layout::page(
        &format!("Card {}", card.iccid),
        Section::Cards,
        &session,
        body,
    ))
}

/// A card's identity facts, with its attributes for its owner.
fn identity(card: &crate::store::CardRecord, attributes: bool) -> Markup {
    html! {
        dl.facts {
            dt { "ICCID" } dd.mono { (card.iccid) }
            dt { "IMSI" } dd.mono { (card.imsi.as_deref().unwrap_or("—")) }
            dt { "MSISDN" } dd.mono { (card.msisdn.as_deref().map(|m| format!("+{m}")).unwrap_or_else(|| "—".into())) }
            dt { "Added" } dd { (layout::time(card.created_at)) }
            @if attributes {
                @for (k, v) in &card.attributes {
                    dt { (k) } dd { (v) }
                }
            }
        }
    }
}

/// Another account's card seen through a card group grant.
async fn granted_card(
    state: &ConsoleState,
    session: &Session,
    card: crate::store::CardRecord,
) -> Result<Markup, PageError> {
    let subscriptions = super::subscriptions::panels(state, session, &card.iccid).await?;
    let body = html! {
        h1 { "Card " span.mono { (card.iccid) } " " span.badge.info { "granted" } }
        section.panel {
            h2 { "Identity" }
            p.sub { "A card of another account, granted to yours for subscription management." }
            (identity(&card, false))
        }
        (subscriptions)
    };
    Ok(layout::page(
        &format!("Card {}", card.iccid),
        Section::Cards,
        session,
        body,
    ))
}
