//! Why a console request failed, as an HTML page with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::layout;
use crate::campaign::ops::OpError;
use crate::store::StoreError;

/// A console request that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// No such page, or another account's thing (404, never 403: nothing is confirmed).
    #[error("not found")]
    NotFound,
    /// Not allowed for this user or without a valid form token (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// No valid session: to the login page.
    #[error("sign in first")]
    SignIn,
    /// A field of the request is wrong (400 for a query, 422 for a form), naming it.
    #[error("{field}: {problem}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
        /// 400 or 422.
        status: StatusCode,
    },
    /// The store has no part for the console.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PageError {
    /// A bad query parameter (400).
    pub fn query(field: &str, problem: impl Into<String>) -> Self {
        PageError::Invalid {
            field: field.to_string(),
            problem: problem.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }

    /// A bad form field (422).
    pub fn form(field: &str, problem: impl Into<String>) -> Self {
        PageError::Invalid {
            field: field.to_string(),
            problem: problem.into(),
            status: StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The store's refusal of input, as a bad query field; other failures as they are.
    pub fn from_search(e: StoreError) -> Self {
        match e {
            StoreError::Invalid { field, problem } => PageError::query(&field, problem),
            other => PageError::Store(other),
        }
    }
}

impl From<OpError> for PageError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Field(f) | OpError::Missing(f) => PageError::form(&f.field, f.problem),
            OpError::NotFound(_) => PageError::NotFound,
            OpError::Store(s) => PageError::Store(s),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let (status, title, text) = match &self {
            PageError::SignIn => return Redirect::to("/console/login").into_response(),
            PageError::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                "There is no such page in this account.".to_string(),
            ),
            PageError::Forbidden(why) => (StatusCode::FORBIDDEN, "Forbidden", why.clone()),
            PageError::Invalid {
                field,
                problem,
                status,
            } => (*status, "Invalid input", format!("{field}: {problem}")),
            PageError::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                why.to_string(),
            ),
            PageError::Store(e) => {
                tracing::warn!("console: store: {e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Store error",
                    "The store failed; the gateway's log has the details.".to_string(),
                )
            }
        };
        let body = html! {
            div.panel {
                h1 { (title) }
                p.notice.bad { (text) }
                p { a href="/console/" { "Back to the dashboard" } }
            }
        };
        (status, layout::bare(title, body)).into_response()
    }
}
