//! The console's audit trail: every action taken in the console, with the user's name, in
//! the store (and in the log).

use maud::{html, Markup};

use super::layout;
use super::ConsoleState;
use crate::store::users::{AuditEntry, UserRecord};

/// Records an action of `user` (`target` like `campaign 3`, or empty). A store failure is
/// logged, not returned: the action itself has happened.
pub async fn record(
    state: &ConsoleState,
    user: &UserRecord,
    action: &str,
    target: &str,
    detail: &str,
) {
    tracing::info!(
        "console: {} ({}, account {}): {action} {target} {detail}",
        user.name,
        user.role,
        user.account_name
    );
    let entry = AuditEntry {
        account_id: user.account_id.clone(),
        at: state.now(),
        user_name: user.name.clone(),
        action: action.to_string(),
        target: target.to_string(),
        detail: detail.to_string(),
    };
    if let Ok(users) = state.users() {
        if let Err(e) = users.record_action(&entry).await {
            tracing::warn!("console: audit trail: {e}");
        }
    }
}

/// The trail as a table, newest first.
pub fn trail(entries: &[AuditEntry]) -> Markup {
    if entries.is_empty() {
        return layout::empty("Nothing done in the console yet.");
    }
    html! {
        div.table-wrap { table {
            thead { tr { th { "When" } th { "User" } th { "Action" } th { "On" } th { "Detail" } } }
            tbody { @for e in entries { tr {
                td { (layout::time(e.at)) }
                td { (e.user_name) }
                td { (e.action) }
                td { (e.target) }
                td.wrap { (e.detail) }
            } } }
        } }
    }
}
