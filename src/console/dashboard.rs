//! The dashboard: commands by state over the last hour and day, running campaigns with their
//! progress, transports up or down, the store's health.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::extract::State;
use maud::{html, Markup};

use super::campaigns::{progress_line, Progress};
use super::error::PageError;
use super::layout::{self, badge, num, Section};
use super::session::Session;
use super::ConsoleState;
use crate::command::CommandStatus;

const HOUR_MS: i64 = 3_600_000;

/// `GET /console/`.
pub async fn page(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Markup, PageError> {
    let account = session.account_id().to_string();
    let now = state.now();
    let views = state.views()?;
    let hour = views.command_counts_since(&account, now - HOUR_MS).await?;
    let day = views
        .command_counts_since(&account, now - 24 * HOUR_MS)
        .await?;
    let store = &state.app.store;
    let mut running = Vec::new();
    for c in store.campaigns(&account).await? {
        if c.status == crate::campaign::status::RUNNING {
            let totals = store.campaign_totals(c.id).await?;
            running.push((Progress::of(&totals, c.iteration), c));
        }
    }
    let started = Instant::now();
    let ping = store.ping().await;
    let ping_ms = started.elapsed().as_secs_f64() * 1000.0;
    let transports: Vec<_> = state.app.health.iter().map(|p| p()).collect();
    let activity = state.users()?.actions(&account, None, 15).await?;
    let count =
        |m: &BTreeMap<String, u64>, s: CommandStatus| m.get(s.as_str()).copied().unwrap_or(0);
    let body = html! {
        h1 { "Dashboard" }
        div.grid {
            section.panel {
                h2 { "Commands by state" }
                div.table-wrap { table {
                    thead { tr { th { "State" } th.num { "Last hour" } th.num { "Last 24 h" } } }
                    tbody {
                        @for s in CommandStatus::ALL {
                            tr {
                                td { a href={ "/console/commands?state=" (s.as_str()) } { (badge(s.as_str())) } }
                                td.num { (num(count(&hour, s))) }
                                td.num { (num(count(&day, s))) }
                            }
                        }
                    }
                    tfoot { tr {
                        th { "All" }
                        th.num { (num(hour.values().sum())) }
                        th.num { (num(day.values().sum())) }
                    } }
                } }
            }
            section.panel {
                h2 { "Transports" }
                @if transports.is_empty() {
                    (layout::empty("No transport is configured on this gateway."))
                } @else {
                    div.table-wrap { table {
                        thead { tr { th { "Transport" } th { "State" } th { "Detail" } } }
                        tbody { @for t in &transports { tr {
                            td { (t.name) }
                            td { (badge(if t.ready { "UP" } else { "DOWN" })) }
                            td.wrap { (t.detail) }
                        } } }
                    } }
                }
                h2 { "Store" }
                dl.facts {
                    dt { "Backend" } dd { (store.backend()) }
                    dt { "State" } dd {
                        @match &ping {
                            Ok(()) => { (badge("UP")) " answered in " (format!("{ping_ms:.1}")) " ms" }
                            Err(e) => { (badge("DOWN")) " " (e) }
                        }
                    }
                    dt { "Gateway" } dd.mono { (state.app.gateway.id()) }
                    dt { "Commands in flight" } dd { (num(state.app.gateway.in_flight() as u64)) }
                }
            }
        }
        section.panel {
            h2 { "Running campaigns" }
            @if running.is_empty() {
                (layout::empty("No campaign is running."))
            } @else {
                div.table-wrap { table {
                    thead { tr { th { "Campaign" } th { "Type" } th.num { "Iteration" } th.num { "Cards done" } th { "Progress" } } }
                    tbody { @for (p, c) in &running { tr {
                        td { a href={ "/console/campaigns/" (c.id) } { (c.name) } }
                        td { (c.campaign_type) }
                        td.num { (c.iteration) }
                        td.num { (num(p.done)) " / " (num(p.total)) }
                        td.bar { (progress_line(p)) }
                    } } }
                } }
            }
        }
        section.panel {
            h2 { "Console activity" }
            (super::audit::trail(&activity))
        }
    };
    Ok(layout::page(
        "Dashboard",
        Section::Dashboard,
        &session,
        body,
    ))
}
