//! Subscription templates: the un-personalised data a download completes (name, SPN,
//! PLMNs). Listed for everyone; operators create them here.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use serde::Deserialize;

use super::error::PageError;
use super::layout::{self, Section};
use super::session::{Posted, Session};
use super::{audit, ConsoleState};
use crate::store::subscriptions::SubscriptionTemplate;
use crate::store::users::Role;

fn router(state: &ConsoleState) -> Result<&crate::subscription::SecureRouter, PageError> {
    state.app.router.as_deref().ok_or(PageError::Unavailable(
        "subscription management is not running",
    ))
}

/// `GET /console/templates`.
pub async fn list(
    State(state): State<ConsoleState>,
    session: Session,
) -> Result<Markup, PageError> {
    let templates = router(&state)?
        .records()?
        .templates(session.account_id())
        .await?;
    let body = html! {
        h1 { "Subscription templates" }
        section.panel {
            p.sub { "What a download completes with the card's own IMSI and keys." }
            @if templates.is_empty() {
                (layout::empty("No template yet."))
            } @else {
                div.table-wrap { table #templates {
                    thead { tr { th { "Name" } th { "SPN" } th { "PLMNs" } } }
                    tbody { @for t in &templates { tr {
                        td { (t.name) }
                        td { (if t.spn.is_empty() { "—" } else { t.spn.as_str() }) }
                        td.mono { (if t.plmns.is_empty() { "—".to_string() } else { t.plmns.join(" ") }) }
                    } } }
                } }
            }
        }
        @if session.can_operate() {
            section.panel {
                h2 { "New template" }
                form.inline method="post" action="/console/templates" #template-form {
                    (layout::csrf_field(&session))
                    label { "Name" input type="text" name="name" required maxlength="64" autocomplete="off"; }
                    label { "SPN" input type="text" name="spn" maxlength="16" autocomplete="off"; }
                    label { "PLMNs (MCC MNC, space separated)" input type="text" name="plmns" inputmode="numeric" autocomplete="off"; }
                    button type="submit" { "Create" }
                }
            }
        }
    };
    Ok(layout::page(
        "Subscription templates",
        Section::Templates,
        &session,
        body,
    ))
}

/// The template form.
#[derive(Debug, Deserialize)]
pub struct TemplateForm {
    name: String,
    #[serde(default)]
    spn: String,
    #[serde(default)]
    plmns: String,
}

/// `POST /console/templates` (operator or admin).
pub async fn create(
    State(state): State<ConsoleState>,
    posted: Posted<TemplateForm>,
) -> Result<Response, PageError> {
    let session = posted.session;
    session.require(Role::Operator)?;
    let form = posted.form;
    let template = SubscriptionTemplate {
        name: form.name,
        spn: form.spn.trim().to_string(),
        plmns: form
            .plmns
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect(),
    };
    let t = router(&state)?
        .create_template(session.account_id(), template)
        .await
        .map_err(|e| match e {
            crate::subscription::RouterError::Store(crate::store::StoreError::Duplicate {
                ..
            }) => PageError::form("name", "a template of this name exists"),
            other => other.into(),
        })?;
    audit::record(&state, &session.user, "template.create", &t.name, "").await;
    Ok(Redirect::to("/console/templates").into_response())
}
