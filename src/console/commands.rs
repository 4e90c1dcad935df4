//! Commands: a list filtered by state, type and card, newest first and paged; a command's
//! page with its event history and the card's answer decoded. The request as posted is not
//! shown: a KEY_UPDATE's carries key values.

use axum::extract::{Path, Query, State};
use maud::{html, Markup};
use serde::Deserialize;

use super::error::PageError;
use super::layout::{self, badge, num, Section};
use super::session::Session;

use super::ConsoleState;
use crate::command::{CommandStatus, CommandType};
use crate::script::status_word as sw;
use crate::store::views::{CommandFilter, CommandSummary};

/// Commands per page.
const PAGE: u32 = 50;

/// The filters (empty: any).
#[derive(Debug, Default, Deserialize)]
pub struct CommandQuery {
    /// A status name (`SUCCESS`).
    #[serde(default)]
    pub state: String,
    /// A type name (`RFM`).
    #[serde(default, rename = "type")]
    pub command_type: String,
    /// An ICCID.
    #[serde(default)]
    pub card: String,
    /// The page after this one: `<created ms>.<id>` of its last command.
    #[serde(default)]
    pub before: String,
}

impl CommandQuery {
    fn filter(&self) -> Result<CommandFilter, PageError> {
        let state = self.state.trim();
        let status = if state.is_empty() {
            None
        } else {
            Some(state.parse::<CommandStatus>().map_err(|_| {
                PageError::query(
                    "state",
                    format!(
                        "{state:?} is not a state ({})",
                        CommandStatus::ALL.map(|s| s.as_str()).join(", ")
                    ),
                )
            })?)
        };
        let ty = self.command_type.trim();
        let command_type = if ty.is_empty() {
            None
        } else {
            Some(ty.parse::<CommandType>().map_err(|_| {
                PageError::query(
                    "type",
                    format!(
                        "{ty:?} is not a type ({})",
                        CommandType::ALL.map(|t| t.as_str()).join(", ")
                    ),
                )
            })?)
        };
        let card = self.card.trim();
        if !card.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PageError::query(
                "card",
                format!("{card:?} is not an ICCID (digits)"),
            ));
        }
        let before = match self.before.trim() {
            "" => None,
            b => {
                let (at, id) = b
                    .split_once('.')
                    .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                    .ok_or_else(|| {
                        PageError::query("before", format!("{b:?} is not a page mark"))
                    })?;
                Some((at, id))
            }
        };
        Ok(CommandFilter {
            status,
            command_type,
            iccid: (!card.is_empty()).then(|| card.to_string()),
            before,
            limit: PAGE + 1,
        })
    }
}

/// A status word with its meaning as a tooltip.
fn sw_cell(value: u16) -> Markup {
    let text = format!("{value:04X}");
    match sw::meaning(value) {
        Some(m) => html! { span.mono title=(m) { (text) } " " span.sub { (m) } },
        None => html! { span.mono { (text) } },
    }
}

/// The first 8 characters of an id, with an ellipsis when there are more.
fn short_id(id: &str) -> String {
    match id.char_indices().nth(8) {
        Some((at, _)) => format!("{}…", &id[..at]),
        None => id.to_string(),
    }
}

/// The commands table (the list and the card page).
pub fn command_table(rows: &[CommandSummary]) -> Markup {
    if rows.is_empty() {
        return layout::empty("No command.");
    }
    html! {
        div.table-wrap { table {
            thead { tr {
                th { "Created" } th { "Command" } th { "Type" } th { "Card" } th { "Transport" }
                th { "State" } th.num { "Sends" } th { "PoR" } th { "Last SW" }
            } }
            tbody { @for c in rows { tr {
                td { (layout::time(c.created_at)) }
                // The id's start is enough to tell commands apart; the link and title have it all.
                td.mono { a href={ "/console/commands/" (c.id) } title=(c.id) { (short_id(&c.id)) } }
                td { (c.command_type.as_str()) }
                td.mono { a href={ "/console/cards/" (c.iccid) } { (c.iccid) } }
                td { (c.transport) }
                td { (badge(c.status.as_str())) }
                td.num { (c.attempts) }
                td {
                    @if let Some((code, name)) = &c.por { span.mono { (code) } " " span.sub { (name) } }
                    @else if let Some(e) = &c.error_code { span.sub { (e) } }
                    @else { "—" }
                }
                td { @if let Some(s) = c.last_sw { (sw_cell(s)) } @else { "—" } }
            } } }
        } }
    }
}

/// `GET /console/commands`.
pub async fn list(
    State(state): State<ConsoleState>,
    session: Session,
    Query(q): Query<CommandQuery>,
) -> Result<Markup, PageError> {
    let filter = q.filter()?;
    let mut rows = state
        .views()?
        .command_page(session.account_id(), &filter)
        .await?;
    let more = rows.len() > PAGE as usize;
    rows.truncate(PAGE as usize);
    let next = if more {
        rows.last().map(|c| {
            let mut s = form_urlencoded::Serializer::new(String::new());
            s.append_pair("state", q.state.trim())
                .append_pair("type", q.command_type.trim())
                .append_pair("card", q.card.trim())
                .append_pair("before", &format!("{}.{}", c.created_at, c.id));
            format!("/console/commands?{}", s.finish())
        })
    } else {
        None
    };
    let body = html! {
        h1 { "Commands" }
        section.panel {
            form.inline method="get" action="/console/commands" {
                label { "State" select name="state" {
                    option value="" { "any" }
                    @for s in CommandStatus::ALL {
                        option value=(s.as_str()) selected[filter.status == Some(s)] { (s.as_str()) }
                    }
                } }
                label { "Type" select name="type" {
                    option value="" { "any" }
                    @for t in CommandType::ALL {
                        option value=(t.as_str()) selected[filter.command_type == Some(t)] { (t.as_str()) }
                    }
                } }
                label { "Card (ICCID)" input type="search" name="card" value=(q.card.trim()) inputmode="numeric"; }
                button type="submit" { "Filter" }
            }
        }
        section.panel {
            (command_table(&rows))
            div.pager {
                span.sub { (num(rows.len() as u64)) " commands shown, newest first" }
                @if let Some(href) = &next { a href=(href) { "Older →" } }
            }
        }
    };
    Ok(layout::page("Commands", Section::Commands, &session, body))
}

/// `GET /console/commands/{id}`: 404 for an unknown command or another account's.
pub async fn show(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let (c, events) = state
        .app
        .store
        .command(session.account_id(), &id)
        .await?
        .ok_or(PageError::NotFound)?;
    let body = html! {
        h1 { "Command " span.mono { (c.id) } (badge(c.status.as_str())) }
        div.grid {
            section.panel {
                h2 { "Command" }
                dl.facts {
                    dt { "Type" } dd { (c.command_type.as_str()) }
                    dt { "Card" } dd.mono { a href={ "/console/cards/" (c.iccid) } { (c.iccid) } }
                    dt { "Transport" } dd { (c.transport) }
                    dt { "Priority" } dd { (c.priority.as_str()) }
                    @if let Some(b) = &c.batch_id { dt { "Batch" } dd.mono { (b) } }
                    dt { "Sends" } dd { (c.attempts) }
                    @if let Some(s) = &c.secured {
                        dt { "Counter" } dd.mono { (s.counter) }
                        dt { "Key version" } dd { (s.key_version) }
                        dt { "TAR / SPI" } dd.mono { (hex::encode_upper(s.tar)) " / " (hex::encode_upper(s.spi)) }
                        dt { "KIc / KID" } dd.mono { (format!("{:02X} / {:02X}", s.kic, s.kid)) }
                    }
                    dt { "Created" } dd { (layout::time(c.created_at)) }
                    dt { "Sent" } dd { (layout::maybe_time(c.sent_at)) }
                    dt { "Delivered" } dd { (layout::maybe_time(c.delivered_at)) }
                    dt { "Completed" } dd { (layout::maybe_time(c.completed_at)) }
                }
            }
            section.panel {
                h2 { "The card's answer" }
                @if let Some(r) = &c.response {
                    dl.facts {
                        dt { "PoR status" } dd { span.mono { (r.por_status) } " " (r.por_status_name) }
                        @if let Some(n) = r.executed { dt { "Commands run" } dd { (n) } }
                        @if let Some(s) = r.status_code { dt { "Last status word" } dd { (sw_cell(s)) } }
                        @if let Some(d) = r.data.as_deref().filter(|d| !d.is_empty()) { dt { "Last data" } dd.mono.wrap { (d) } }
                    }
                    @if !r.status_words.is_empty() {
                        h2 { "Status words" }
                        div.table-wrap { table {
                            thead { tr { th.num { "#" } th { "SW" } th { "Data" } } }
                            tbody { @for (i, w) in r.status_words.iter().enumerate() { tr {
                                td.num { (i + 1) }
                                td { @match u16::from_str_radix(&w.sw, 16) { Ok(v) => (sw_cell(v)), Err(_) => span.mono { (w.sw) } } }
                                td.mono.wrap { (if w.data.is_empty() { "—" } else { w.data.as_str() }) }
                            } } }
                        } }
                    }
                } @else if c.error.is_none() {
                    (layout::empty("No answer yet."))
                }
                @if let Some(e) = &c.error {
                    p.notice.bad { strong { (e.code.as_str()) } " " (e.message) }
                }
            }
        }
        section.panel {
            h2 { "History" }
            ol.timeline { @for e in &events { li {
                span.when { (layout::time(e.at)) }
                strong { (e.kind) }
                @if !e.detail.is_empty() { " " span.sub { (e.detail) } }
            } } }
        }
    };
    Ok(layout::page(
        &format!("Command {}", c.id),
        Section::Commands,
        &session,
        body,
    ))
}
