//! Sign in and sign out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};
use rand::RngCore;
use serde::Deserialize;

use super::audit;
use super::error::PageError;
use super::layout;
use super::password;
use super::session::{self, Posted, Session, COOKIE_NAME, LOGIN_COOKIE};
use super::ConsoleState;

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// The login token (also in the login cookie).
    #[serde(default)]
    pub csrf: Option<String>,
}

/// Sign-out takes only the token.
#[derive(Debug, Deserialize)]
pub struct Empty {}

fn fresh_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The form, with a new login token in a cookie and in the form.
fn login_page(
    state: &ConsoleState,
    status: StatusCode,
    message: Option<&str>,
    name: &str,
) -> Response {
    let token = fresh_token();
    let body: Markup = html! {
        div.panel.login {
            h1 { "Sign in" }
            @if let Some(m) = message {
                p.notice.bad role="alert" { (m) }
            }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf" value=(token);
                label { "User name" input type="text" name="username" value=(name) autocomplete="username" required autofocus; }
                label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                button type="submit" { "Sign in" }
            }
        }
    };
    let mut response = (status, layout::bare("Sign in", body)).into_response();
    session::add_cookie(
        response.headers_mut(),
        session::set_cookie(LOGIN_COOKIE, &token, None, state.settings.secure_cookies),
    );
    response
}

/// `GET /console/login`.
pub async fn form(State(state): State<ConsoleState>, request: Request) -> Response {
    let (mut parts, _) = request.into_parts();
    if Session::from_request_parts(&mut parts, &state)
        .await
        .is_ok()
    {
        return Redirect::to("/console/").into_response();
    }
    login_page(&state, StatusCode::OK, None, "")
}

fn client_address(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn login_token_ok(headers: &HeaderMap, given: Option<&str>) -> bool {
    match (session::cookie(headers, LOGIN_COOKIE), given) {
        (Some(c), Some(g)) => session::same_secret(&c, g),
        _ => false,
    }
}

/// `POST /console/login`: checks the login token, the rate limits, then the password.
pub async fn submit(
    State(state): State<ConsoleState>,
    request: Request,
) -> Result<Response, PageError> {
    let address = client_address(request.extensions());
    let headers = request.headers().clone();
    let axum::Form(f) = axum::Form::<LoginForm>::from_request(request, &())
        .await
        .map_err(|e| PageError::form("form", e.body_text()))?;
    if !login_token_ok(&headers, f.csrf.as_deref()) {
        return Err(PageError::Forbidden(
            "the sign-in form's token is missing or wrong: reload the sign-in page".into(),
        ));
    }
    let now = state.now();
    let attempt = match state.limiter.begin(&f.username, address, now) {
        Ok(a) => a,
        Err(locked) => {
            let secs = (locked.retry_after_ms + 999) / 1000;
            tracing::warn!(
                "console: sign-in for {:?} from {address} refused: rate limited",
                f.username
            );
            let mut r = login_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!("Too many failed sign-ins. Try again in {secs} s.")),
                &f.username,
            );
            if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
            }
            return Ok(r);
        }
    };
    let users = state.users()?;
    let user = users.user_by_name(f.username.trim()).await?;
    let stored = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| password::decoy_hash().to_string());
    let given = f.password;
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let matches = tokio::task::spawn_blocking(move || password::verify(&given, &stored))
        .await
        .unwrap_or(false);
    let Some(user) = user.clone().filter(|_| matches) else {
        attempt.failed(state.now());
        tracing::info!(
            "console: failed sign-in for {:?} from {address}",
            f.username
        );
        if let Some(u) = &user {
            audit::record(
                &state,
                u,
                "sign-in refused",
                "",
                &format!("wrong password, from {address}"),
            )
            .await;
        }
        return Ok(login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
            &f.username,
        ));
    };
    attempt.succeeded();
    // Sessions nobody presents again are swept here, at each sign-in.
    let swept = users
        .delete_stale_sessions(now, now - state.settings.idle_ms)
        .await?;
    if swept > 0 {
        tracing::debug!("console: {swept} stale sessions removed");
    }
    let opened = users
        .create_session(&user.id, now, now + state.settings.absolute_ms)
        .await?;
    audit::record(&state, &user, "sign-in", "", &format!("from {address}")).await;
    let secure = state.settings.secure_cookies;
    let mut r = Redirect::to("/console/").into_response();
    session::add_cookie(
        r.headers_mut(),
        session::set_cookie(COOKIE_NAME, &opened.id, None, secure),
    );
    session::add_cookie(
        r.headers_mut(),
        session::set_cookie(LOGIN_COOKIE, "", Some(0), secure),
    );
    Ok(r)
}

/// `POST /console/logout`.
pub async fn logout(
    State(state): State<ConsoleState>,
    posted: Posted<Empty>,
) -> Result<Response, PageError> {
    state.users()?.delete_session(&posted.session.id).await?;
    audit::record(&state, &posted.session.user, "sign-out", "", "").await;
    let mut r = Redirect::to("/console/login").into_response();
    session::add_cookie(
        r.headers_mut(),
        session::set_cookie(COOKIE_NAME, "", Some(0), state.settings.secure_cookies),
    );
    Ok(r)
}
