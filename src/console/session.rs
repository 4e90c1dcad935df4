//! Who is signed in: the session cookie, its expiry, the role checks and the form token.

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;

use super::error::PageError;
use super::ConsoleState;
use crate::clock::Millis;
use crate::store::users::{Role, SessionRecord, UserRecord};

/// The session cookie's name.
pub const COOKIE_NAME: &str = "otagw_session";
/// The login form's own token cookie (the form is posted before any session exists).
pub const LOGIN_COOKIE: &str = "otagw_login";
/// Sessions are looked at on every request but their last use is written at most this often.
const TOUCH_EVERY_MS: Millis = 60_000;

/// The value of a cookie in the request, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, for `/console` only, Secure over TLS;
/// `max_age_secs` 0 removes it, `None` leaves it to the browser's session.
pub fn set_cookie(name: &str, value: &str, max_age_secs: Option<i64>, secure: bool) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age_secs {
        c.push_str(&format!("; Max-Age={age}"));
    }
    // Names and values are ours (hex), so always a valid header.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Appends a `Set-Cookie`.
pub fn add_cookie(headers: &mut HeaderMap, value: HeaderValue) {
    headers.append(SET_COOKIE, value);
}

/// Whether a stored session still holds at `now`: before its absolute end and used within
/// the idle time.
pub fn is_live(s: &SessionRecord, now: Millis, idle_ms: Millis) -> bool {
    now < s.expires_at && now - s.last_seen < idle_ms
}

/// Equality that takes the same time wherever the first difference is.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct Session {
    /// The user.
    pub user: UserRecord,
    /// The token its forms carry.
    pub csrf: String,
    /// The cookie's value (to close the session).
    pub(crate) id: String,
}

impl Session {
    /// Refuses (403) a user below `role`.
    pub fn require(&self, role: Role) -> Result<(), PageError> {
        if self.user.role >= role {
            Ok(())
        } else {
            Err(PageError::Forbidden(format!(
                "this needs the {role} role; {} is {}",
                self.user.name, self.user.role
            )))
        }
    }

    /// Whether the user may act (operator or admin): what pages show buttons for.
    pub fn can_operate(&self) -> bool {
        self.user.role.can_operate()
    }

    /// The account whose data the user sees.
    pub fn account_id(&self) -> &str {
        &self.user.account_id
    }
}

impl FromRequestParts<ConsoleState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let id = cookie(&parts.headers, COOKIE_NAME).ok_or(PageError::SignIn)?;
        let users = state.users()?;
        let record = users.session(&id).await?.ok_or(PageError::SignIn)?;
        let now = state.now();
        if !is_live(&record, now, state.settings.idle_ms) {
            users.delete_session(&id).await?;
            return Err(PageError::SignIn);
        }
        if now - record.last_seen >= TOUCH_EVERY_MS {
            users.touch_session(&id, now).await?;
        }
        Ok(Session {
            user: record.user,
            csrf: record.csrf,
            id,
        })
    }
}

/// A posted form of a signed-in user whose `csrf` field is the session's token (403
/// otherwise, missing or wrong), then read as `T`.
pub struct Posted<T> {
    /// Who posted.
    pub session: Session,
    /// The form.
    pub form: T,
}

/// The most a console form holds.
const FORM_LIMIT: usize = 64 << 10;

impl<T> FromRequest<ConsoleState> for Posted<T>
where
    T: DeserializeOwned + Send,
{
    type Rejection = PageError;

    async fn from_request(req: Request, state: &ConsoleState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, FORM_LIMIT)
            .await
            .map_err(|_| PageError::form("body", format!("more than {FORM_LIMIT} octets")))?;
        let token = form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        match token {
            Some(t) if same_secret(&t, &session.csrf) => {}
            Some(_) => return Err(PageError::Forbidden("the form's token is wrong".into())),
            None => return Err(PageError::Forbidden("the form carries no token".into())),
        }
        let req = Request::from_parts(parts, Body::from(bytes));
        let axum::Form(form) = axum::Form::<T>::from_request(req, &())
            .await
            .map_err(|e| PageError::form("form", e.body_text()))?;
        Ok(Posted { session, form })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_from_any_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, HeaderValue::from_static("a=1; otagw_session=abc"));
        h.append(COOKIE, HeaderValue::from_static("otagw_login=xyz"));
        assert_eq!(cookie(&h, COOKIE_NAME).as_deref(), Some("abc"));
        assert_eq!(cookie(&h, LOGIN_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn the_cookie_is_strict_httponly_and_secure_over_tls() {
        let c = set_cookie(COOKIE_NAME, "ab", None, true);
        assert_eq!(
            c.to_str().unwrap(),
            "otagw_session=ab; Path=/console; HttpOnly; SameSite=Strict; Secure"
        );
        let c = set_cookie(COOKIE_NAME, "", Some(0), false);
        assert!(!c.to_str().unwrap().contains("Secure"));
    }

    #[test]
    fn a_session_ends_when_idle_or_at_its_absolute_end() {
        let user = UserRecord {
            id: "u".into(),
            account_id: "a".into(),
            account_name: "acme".into(),
            name: "alice".into(),
            role: Role::Viewer,
            password_hash: String::new(),
            created_at: 0,
        };
        let s = SessionRecord {
            user,
            csrf: "t".into(),
            created_at: 0,
            last_seen: 1_000,
            expires_at: 10_000,
        };
        assert!(is_live(&s, 1_500, 1_000));
        assert!(!is_live(&s, 2_000, 1_000), "idle");
        assert!(!is_live(&s, 10_000, 100_000), "absolute end");
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("a", "ab"));
    }
}
