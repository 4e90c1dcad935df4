//! Card groups: the list, and a group's page with its bootstrap rule, the bootstrap plans by
//! state, and the enterprise grants (admins grant and revoke them here).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::campaigns::NoFields;
use super::error::PageError;
use super::layout::{self, num, Section};
use super::session::{Posted, Session};
use super::{audit, ConsoleState};
use crate::store::subscriptions::{Right, SubscriptionStore};
use crate::store::users::Role;

/// A group id from a path: anything but a number is no group (404).
fn group_id(s: &str) -> Result<i64, PageError> {
    s.trim().parse::<i64>().map_err(|_| PageError::NotFound)
}

fn records(state: &ConsoleState) -> Result<&dyn SubscriptionStore, PageError> {
    state
        .app
        .store
        .subscriptions()
        .ok_or(PageError::Unavailable(
            "this store keeps no subscription records",
        ))
}

/// `GET /console/groups`.
pub async fn list(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Markup, PageError> {
    let groups = state.app.store.card_groups(session.account_id()).await?;
    let body = html! {
        h1 { "Card groups" }
        section.panel {
            @if groups.is_empty() {
                (layout::empty("No card group. Provisioning with --auto-group, or POST /api/v1/cardgroups, makes one."))
            } @else {
                div.table-wrap { table {
                    thead { tr { th.num { "Id" } th { "Name" } th.num { "Profile" } th.num { "Cards" } th { "Created" } } }
                    tbody { @for g in &groups { tr {
                        td.num { (g.id) }
                        td { a href={ "/console/groups/" (g.id) } { (g.name) } }
                        td.num { (g.profile_id) }
                        td.num { (num(g.cards)) }
                        td { (layout::time(g.created_at)) }
                    } } }
                } }
            }
        }
    };
    Ok(layout::page("Card groups", Section::Groups, &session, body))
}

/// `GET /console/groups/{id}`: 404 for another account's group.
pub async fn show(
    State(state): State<ConsoleState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Markup, PageError> {
    let id = group_id(&id)?;
    let account = session.account_id();
    let group = state
        .app
        .store
        .card_group(account, id)
        .await?
        .ok_or(PageError::NotFound)?;
    let records = records(&state)?;
    let rule = records.rule(account, id).await?;
    let plans = records.plan_counts(account, id).await?;
    let grants = records.grants(account, id).await?;
    let admin = session.user.role >= Role::Admin;
    let body = html! {
        h1 { "Card group " (group.name) }
        div.grid.narrow-first {
            section.panel {
                h2 { "Group" }
                dl.facts {
                    dt { "Id" } dd.num { (group.id) }
                    dt { "Profile" } dd.num { (group.profile_id) }
                    dt { "Cards" } dd.num { (num(group.cards)) }
                    dt { "Created" } dd { (layout::time(group.created_at)) }
                }
            }
            section.panel #bootstrap {
                h2 { "Bootstrap rule" }
                @match &rule {
                    None => (layout::empty("No rule: its cards stay on their factory subscriptions. PUT /api/v1/cardgroups/{id}/rules sets one.")),
                    Some(r) => {
                        p { "Starts " strong { (match r.trigger.as_str() {
                                "provisioning" => "as soon as a card is in the group",
                                _ => "when a card first reports on its bootstrap subscription",
                            }) }
                            "; the bootstrap subscription is then "
                            strong { (match r.bootstrap {
                                crate::store::subscriptions::BootstrapEnd::Delete => "deleted",
                                crate::store::subscriptions::BootstrapEnd::KeepAsFallback => "kept as the fallback",
                            }) } "." }
                        div.table-wrap { table {
                            thead { tr { th.num { "#" } th { "Template" } th { "First IMSI" } th.num { "IMSIs" } } }
                            tbody { @for (i, s) in r.subscriptions.iter().enumerate() { tr {
                                td.num { (i + 1) }
                                td { (s.template) @if i == 0 { " " span.badge.ok { "enabled" } } }
                                td.mono { (s.imsi_first) }
                                td.num { (num(s.imsi_count)) }
                            } } }
                        } }
                        @if plans.is_empty() {
                            p.sub { "No card has a plan yet." }
                        } @else {
                            p #plans { "Plans: "
                                @for (i, (state, n)) in plans.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    (layout::badge(state)) " " span.num { (num(*n)) }
                                }
                            }
                        }
                    }
                }
            }
        }
        section.panel #grants {
            h2 { "Enterprise grants" }
            p.sub { "Another account granted rights here sees this group's cards and their subscriptions, nothing else of yours." }
            @if grants.is_empty() {
                (layout::empty("No grant."))
            } @else {
                div.table-wrap { table {
                    thead { tr { th { "Account" } th { "Rights" } th { "Granted" } @if admin { th { "" } } } }
                    tbody { @for g in &grants { tr {
                        td { (g.grantee_name) }
                        td { (g.rights.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")) }
                        td { (layout::time(g.created_at)) }
                        @if admin { td {
                            form.inline method="post" action={ "/console/groups/" (id) "/grants/" (g.grantee_name) "/revoke" } {
                                (layout::csrf_field(&session))
                                button.secondary type="submit" { "Revoke" }
                            }
                        } }
                    } } }
                } }
            }
            @if admin {
                form.inline method="post" action={ "/console/groups/" (id) "/grants" } #grant-form {
                    (layout::csrf_field(&session))
                    label { "Account" input type="text" name="account" required autocomplete="off"; }
                    label { input type="checkbox" name="manage" value="on"; " manage" }
                    label { input type="checkbox" name="audit" value="on"; " audit" }
                    button type="submit" { "Grant" }
                }
                p.sub { "View comes with every grant; a new grant replaces the account's rights on this group." }
            }
        }
    };
    Ok(layout::page(
        &format!("Card group {}", group.name),
        Section::Groups,
        &session,
        body,
    ))
}

/// The grant form.
#[derive(Debug, Deserialize)]
pub struct GrantForm {
    account: String,
    #[serde(default)]
    manage: Option<String>,
    #[serde(default)]
    audit: Option<String>,
}

/// `POST /console/groups/{id}/grants` (admin).
pub async fn grant(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    posted: Posted<GrantForm>,
) -> Result<Response, PageError> {
    let id = group_id(&id)?;
    let session = posted.session;
    session.require(Role::Admin)?;
    let account = posted.form.account.trim();
    if account.is_empty() {
        return Err(PageError::form("account", "name the account to grant"));
    }
    let mut rights = vec![Right::View];
    if posted.form.manage.is_some() {
        rights.push(Right::Manage);
    }
    if posted.form.audit.is_some() {
        rights.push(Right::Audit);
    }
    let g = records(&state)?
        .grant(session.account_id(), id, account, &rights, state.now())
        .await
        .map_err(|e| match e {
            crate::store::StoreError::Invalid { field, problem } => {
                PageError::form(&field, problem)
            }
            crate::store::StoreError::NotFound { .. } => PageError::NotFound,
            other => PageError::Store(other),
        })?;
    let rights: Vec<&str> = g.rights.iter().map(|r| r.as_str()).collect();
    audit::record(
        &state,
        &session.user,
        "group.grant",
        &format!("card group {id}"),
        &format!("{} {}", g.grantee_name, rights.join(",")),
    )
    .await;
    Ok(Redirect::to(&format!("/console/groups/{id}")).into_response())
}

/// `POST /console/groups/{id}/grants/{account}/revoke` (admin).
pub async fn revoke(
    State(state): State<ConsoleState>,
    Path((id, grantee)): Path<(String, String)>,
    posted: Posted<NoFields>,
) -> Result<Response, PageError> {
    let id = group_id(&id)?;
    let session = posted.session;
    session.require(Role::Admin)?;
    if !records(&state)?
        .revoke_grant(session.account_id(), id, &grantee)
        .await?
    {
        return Err(PageError::NotFound);
    }
    audit::record(
        &state,
        &session.user,
        "group.revoke",
        &format!("card group {id}"),
        &grantee,
    )
    .await;
    Ok(Redirect::to(&format!("/console/groups/{id}")).into_response())
}
