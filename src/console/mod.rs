//! The operators' web console under `/console/`, served with the REST API by `otagw serve`.
//!
//! Server-side rendered HTML (maud) that reads without JavaScript; htmx and its server-sent
//! events extension (vendored in `assets/`) make the live parts live. People sign in with a
//! user name and password (`otagw user create`); a session is a random id in an HttpOnly,
//! SameSite=Strict cookie (Secure when the API is served over TLS) with idle and absolute
//! expiry; every form carries the session's CSRF token; every role check is made here, on
//! the server. Everything shown is the signed-in user's account's.

pub mod assets;
pub mod audit;
pub mod campaigns;
pub mod cards;
pub mod commands;
pub mod dashboard;
pub mod error;
pub mod groups;
pub mod layout;
pub mod limiter;
pub mod live;
pub mod login;
pub mod password;
pub mod session;
pub mod subscriptions;
pub mod templates;

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::Redirect;
use axum::routing::{get, post};
use axum::Router;

use crate::api::AppState;
use crate::clock::Millis;
use crate::store::users::UserStore;
use crate::store::views::ViewStore;
use error::PageError;
use limiter::LoginLimiter;

/// How long sessions last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// A session unused this long ends, ms.
    pub idle_ms: Millis,
    /// A session ends this long after sign-in whatever its use, ms.
    pub absolute_ms: Millis,
    /// Cookies carry `Secure` (the API is served over TLS).
    pub secure_cookies: bool,
}

impl ConsoleSettings {
    /// 30 minutes idle, 12 hours in all.
    pub fn new(secure_cookies: bool) -> Self {
        Self {
            idle_ms: 30 * 60_000,
            absolute_ms: 12 * 3_600_000,
            secure_cookies,
        }
    }
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    /// The API's state: store, engine, transport health.
    pub app: AppState,
    /// Session lifetimes and cookie flags.
    pub settings: ConsoleSettings,
    limiter: Arc<LoginLimiter>,
}

impl ConsoleState {
    /// The console over the API's state.
    pub fn new(app: AppState, settings: ConsoleSettings) -> Self {
        Self {
            app,
            settings,
            limiter: Arc::new(LoginLimiter::new(limiter::Policy::default())),
        }
    }

    /// The engine's clock (a manual one in tests).
    pub fn now(&self) -> Millis {
        self.app.gateway.clock().now_ms()
    }

    fn users(&self) -> Result<&dyn UserStore, PageError> {
        self.app
            .store
            .users()
            .ok_or(PageError::Unavailable("this store keeps no console users"))
    }

    fn views(&self) -> Result<&dyn ViewStore, PageError> {
        self.app
            .store
            .views()
            .ok_or(PageError::Unavailable("this store has no console views"))
    }
}

/// Headers on every console answer: no framing, no sniffing, scripts and styles from here
/// only (no inline script or style anywhere), pages not cached.
async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let is_asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The console's routes, to merge with the API's.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(dashboard::page))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/assets/{name}", get(assets::file))
        .route("/console/cards", get(cards::list))
        .route("/console/cards/{iccid}", get(cards::show))
        .route(
            "/console/cards/{iccid}/audit",
            post(subscriptions::audit_now),
        )
        .route("/console/groups", get(groups::list))
        .route("/console/groups/{id}", get(groups::show))
        .route("/console/groups/{id}/grants", post(groups::grant))
        .route(
            "/console/groups/{id}/grants/{account}/revoke",
            post(groups::revoke),
        )
        .route(
            "/console/templates",
            get(templates::list).post(templates::create),
        )
        .route("/console/commands", get(commands::list))
        .route("/console/commands/{id}", get(commands::show))
        .route(
            "/console/campaigns",
            get(campaigns::list).post(campaigns::create),
        )
        .route("/console/campaigns/{id}", get(campaigns::show))
        .route("/console/campaigns/{id}/live", get(live::campaign))
        .route("/console/campaigns/{id}/start", post(campaigns::start))
        .route("/console/campaigns/{id}/stop", post(campaigns::stop))
        .route("/console/campaigns/{id}/retry", post(campaigns::retry))
        .route(
            "/console/{*rest}",
            get(|| async { PageError::NotFound }).post(|| async { PageError::NotFound }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}
