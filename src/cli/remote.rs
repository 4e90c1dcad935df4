//! The CLI's remote mode: the REST API of a running `otagw serve` (`--server URL`), one function
//! per call, answers read into the API's own types. The bearer token comes from a file or the
//! environment, never from the command line (it would show in `ps` and shell histories).

use std::path::Path;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use otagw::api::campaigns::{CardGroup, CreateGroup, CreateProfile, Profile, Provisioned};
use otagw::api::cards::{AppletUploaded, CardPage, CardRemoved, CardView, UpdateCard};
use otagw::api::error::ErrorBody;
use otagw::api::subscriptions::{OperationAccepted, OperationView, SubscriptionsView, TrailView};
use otagw::api::tokens::TokenView;
use otagw::campaign::ops::{CampaignView, StartOutcome, StartRequest};
use otagw::campaign::CampaignRequest;
use otagw::store::subscriptions::SubscriptionTemplate;

/// Why a remote call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RemoteError {
    /// The server answered with its error body.
    #[error("{method} {url}: the server answered {status} {}: {}{}{}", .body.error, .body.message,
        .body.field.as_deref().map(|f| format!(" (field: {f})")).unwrap_or_default(),
        if *.status == 401 { "; check the token (--token-file or OTAGW_TOKEN)" } else { "" })]
    Api {
        /// Method.
        method: Method,
        /// URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// The API's error body (boxed: it is large next to the other variants).
        body: Box<ErrorBody>,
    },
    /// An error status without the API's error body (a proxy, another server).
    #[error("{method} {url}: the server answered {status}: {text}")]
    Status {
        /// Method.
        method: Method,
        /// URL.
        url: String,
        /// Status.
        status: StatusCode,
        /// The body, as text (cut).
        text: String,
    },
    /// No answer (connection, TLS, timeout).
    #[error("{method} {url}: {source}")]
    Transport {
        /// Method.
        method: Method,
        /// URL.
        url: String,
        /// Cause.
        #[source]
        source: reqwest::Error,
    },
    /// A success answer that is not what the API documents.
    #[error("{method} {url}: the answer is not the documented body: {problem}")]
    Decode {
        /// Method.
        method: Method,
        /// URL.
        url: String,
        /// What did not parse.
        problem: String,
    },
    /// The settings of remote mode are wrong.
    #[error("{0}")]
    Setup(String),
}

impl RemoteError {
    /// The API's error body, when the server sent one.
    pub(crate) fn body(&self) -> Option<&ErrorBody> {
        match self {
            RemoteError::Api { body, .. } => Some(body),
            _ => None,
        }
    }

    /// The HTTP status, when the server answered.
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            RemoteError::Api { status, .. } => Some(*status),
            RemoteError::Status { status, .. } => Some(status.as_u16()),
            _ => None,
        }
    }
}

/// A REST client bound to one server and one token.
pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

/// The token: from `--token-file` (first line, trimmed), else `OTAGW_TOKEN`.
pub(crate) fn read_token(file: Option<&Path>) -> Result<String, RemoteError> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| RemoteError::Setup(format!("--token-file {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string(),
        None => std::env::var("OTAGW_TOKEN")
            .unwrap_or_default()
            .trim()
            .to_string(),
    };
    if token.is_empty() {
        return Err(RemoteError::Setup(match file {
            Some(path) => format!("--token-file {}: the file holds no token", path.display()),
            None => "remote mode needs a bearer token: --token-file PATH or OTAGW_TOKEN \
                     (`otagw token create` on the server's store makes one)"
                .to_string(),
        }));
    }
    Ok(token)
}

/// A path segment from user input, percent-encoded (an id holding `/` or `?` must not
/// reach another route).
fn segment(s: &str) -> String {
    // `.` and `..` would be read as path steps even encoded; no card or token has such an id.
    if s.bytes().all(|b| b == b'.') {
        return "-".into();
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    /// A client for `server` (`http://` or `https://`), trusting `ca_file` (PEM) besides the
    /// public roots.
    pub(crate) fn new(
        server: &str,
        token: String,
        ca_file: Option<&Path>,
    ) -> Result<Self, RemoteError> {
        let base = server.trim().trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::Setup(format!(
                "--server: {server:?} is not an http:// or https:// URL"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Provisioning a large vendor file is one request.
            .timeout(Duration::from_secs(600));
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| RemoteError::Setup(format!("--ca-file {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                RemoteError::Setup(format!("--ca-file {}: not PEM: {e}", path.display()))
            })?;
            if certs.is_empty() {
                return Err(RemoteError::Setup(format!(
                    "--ca-file {}: no certificate in it",
                    path.display()
                )));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| RemoteError::Setup(format!("HTTP client: {e}")))?;
        Ok(Self { base, token, http })
    }

    fn request(&self, method: Method, path: &str) -> (RequestBuilder, Method, String) {
        let url = format!("{}{path}", self.base);
        (
            self.http
                .request(method.clone(), &url)
                .bearer_auth(&self.token),
            method,
            url,
        )
    }

    /// Sends; the body of a success, or the error the server gave.
    async fn send(
        &self,
        (rb, method, url): (RequestBuilder, Method, String),
    ) -> Result<Vec<u8>, RemoteError> {
        let response = rb.send().await.map_err(|source| RemoteError::Transport {
            method: method.clone(),
            url: url.clone(),
            source,
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| RemoteError::Transport {
                method: method.clone(),
                url: url.clone(),
                source,
            })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(RemoteError::Api {
                method,
                url,
                status: status.as_u16(),
                body: Box::new(body),
            }),
            Err(_) => Err(RemoteError::Status {
                method,
                url,
                status,
                text: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            }),
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        req: (RequestBuilder, Method, String),
    ) -> Result<T, RemoteError> {
        let (method, url) = (req.1.clone(), req.2.clone());
        let bytes = self.send(req).await?;
        serde_json::from_slice(&bytes).map_err(|e| RemoteError::Decode {
            method,
            url,
            problem: e.to_string(),
        })
    }

    fn json<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> (RequestBuilder, Method, String) {
        let (rb, m, u) = self.request(method, path);
        (rb.json(body), m, u)
    }

    /// `POST /api/v1/applets?name=NAME`.
    pub(crate) async fn upload_applet(
        &self,
        name: &str,
        content: Vec<u8>,
    ) -> Result<AppletUploaded, RemoteError> {
        let (rb, m, u) = self.request(Method::POST, "/api/v1/applets");
        let rb = rb
            .query(&[("name", name)])
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(content);
        self.call((rb, m, u)).await
    }

    /// `POST /api/v1/profiles`.
    pub(crate) async fn create_profile(&self, p: &CreateProfile) -> Result<Profile, RemoteError> {
        self.call(self.json(Method::POST, "/api/v1/profiles", p))
            .await
    }

    /// `GET /api/v1/profiles`.
    pub(crate) async fn profiles(&self) -> Result<Vec<Profile>, RemoteError> {
        self.call(self.request(Method::GET, "/api/v1/profiles"))
            .await
    }

    /// `GET /api/v1/profiles/{id}`.
    pub(crate) async fn profile(&self, id: i64) -> Result<Profile, RemoteError> {
        self.call(self.request(Method::GET, &format!("/api/v1/profiles/{id}")))
            .await
    }

    /// `POST /api/v1/profiles/{id}/provision` with the vendor file as the body.
    pub(crate) async fn provision(
        &self,
        profile: i64,
        text: String,
        group_name: Option<&str>,
    ) -> Result<Provisioned, RemoteError> {
        let (rb, m, u) = self.request(
            Method::POST,
            &format!("/api/v1/profiles/{profile}/provision"),
        );
        let mut rb = rb
            .header(reqwest::header::CONTENT_TYPE, "text/plain")
            .body(text);
        if let Some(name) = group_name {
            rb = rb.query(&[("autoGroup", "true"), ("groupName", name)]);
        }
        self.call((rb, m, u)).await
    }

    /// `POST /api/v1/cardgroups`.
    pub(crate) async fn create_group(&self, g: &CreateGroup) -> Result<CardGroup, RemoteError> {
        self.call(self.json(Method::POST, "/api/v1/cardgroups", g))
            .await
    }

    /// `GET /api/v1/cardgroups`.
    pub(crate) async fn groups(&self) -> Result<Vec<CardGroup>, RemoteError> {
        self.call(self.request(Method::GET, "/api/v1/cardgroups"))
            .await
    }

    /// `GET /api/v1/cardgroups/{id}`.
    pub(crate) async fn group(&self, id: i64) -> Result<CardGroup, RemoteError> {
        self.call(self.request(Method::GET, &format!("/api/v1/cardgroups/{id}")))
            .await
    }

    /// `POST /api/v1/campaigns`.
    pub(crate) async fn create_campaign(
        &self,
        c: &CampaignRequest,
    ) -> Result<CampaignView, RemoteError> {
        self.call(self.json(Method::POST, "/api/v1/campaigns", c))
            .await
    }

    /// `GET /api/v1/campaigns`.
    pub(crate) async fn campaigns(&self) -> Result<Vec<CampaignView>, RemoteError> {
        self.call(self.request(Method::GET, "/api/v1/campaigns"))
            .await
    }

    /// `GET /api/v1/campaigns/{id}`.
    pub(crate) async fn campaign(&self, id: i64) -> Result<CampaignView, RemoteError> {
        self.call(self.request(Method::GET, &format!("/api/v1/campaigns/{id}")))
            .await
    }

    /// `POST /api/v1/campaigns/{id}/start`.
    pub(crate) async fn start_campaign(
        &self,
        id: i64,
        req: &StartRequest,
    ) -> Result<StartOutcome, RemoteError> {
        self.call(self.json(Method::POST, &format!("/api/v1/campaigns/{id}/start"), req))
            .await
    }

    /// `POST /api/v1/campaigns/{id}/stop`.
    pub(crate) async fn stop_campaign(&self, id: i64) -> Result<CampaignView, RemoteError> {
        self.call(self.request(Method::POST, &format!("/api/v1/campaigns/{id}/stop")))
            .await
    }

    /// `POST /api/v1/campaigns/{id}/retry-failed`.
    pub(crate) async fn retry_failed(&self, id: i64) -> Result<StartOutcome, RemoteError> {
        self.call(self.request(
            Method::POST,
            &format!("/api/v1/campaigns/{id}/retry-failed"),
        ))
        .await
    }

    /// `GET /api/v1/cards?iccid=&imsi=&msisdn=&limit=&after=`.
    pub(crate) async fn cards(
        &self,
        filters: &[(&str, Option<String>)],
        limit: u32,
    ) -> Result<CardPage, RemoteError> {
        let (rb, m, u) = self.request(Method::GET, "/api/v1/cards");
        let mut query: Vec<(&str, String)> = filters
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
            .collect();
        query.push(("limit", limit.to_string()));
        self.call((rb.query(&query), m, u)).await
    }

    /// `GET /api/v1/cards/{iccid}`.
    pub(crate) async fn card(&self, iccid: &str) -> Result<CardView, RemoteError> {
        self.call(self.request(Method::GET, &format!("/api/v1/cards/{}", segment(iccid))))
            .await
    }

    /// `PATCH /api/v1/cards/{iccid}`.
    pub(crate) async fn update_card(
        &self,
        iccid: &str,
        changes: &UpdateCard,
    ) -> Result<CardView, RemoteError> {
        self.call(self.json(
            Method::PATCH,
            &format!("/api/v1/cards/{}", segment(iccid)),
            changes,
        ))
        .await
    }

    /// `DELETE /api/v1/cards/{iccid}`.
    pub(crate) async fn delete_card(&self, iccid: &str) -> Result<CardRemoved, RemoteError> {
        self.call(self.request(Method::DELETE, &format!("/api/v1/cards/{}", segment(iccid))))
            .await
    }

    /// `GET /api/v1/cards/{iccid}/subscriptions`.
    pub(crate) async fn subscriptions(
        &self,
        iccid: &str,
    ) -> Result<SubscriptionsView, RemoteError> {
        self.call(self.request(
            Method::GET,
            &format!("/api/v1/cards/{}/subscriptions", segment(iccid)),
        ))
        .await
    }

    /// A subscription operation: `POST` (download, enable, audit), `PUT` (fallback) or
    /// `DELETE` on `path` (under `/api/v1/cards/{iccid}`), with `body` when given.
    pub(crate) async fn subscription_operation(
        &self,
        method: Method,
        iccid: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<OperationAccepted, RemoteError> {
        let path = format!("/api/v1/cards/{}{path}", segment(iccid));
        match body {
            Some(b) => self.call(self.json(method, &path, b)).await,
            None => self.call(self.request(method, &path)).await,
        }
    }

    /// `GET /api/v1/subscription-operations/{id}`.
    pub(crate) async fn subscription_operation_view(
        &self,
        id: &str,
    ) -> Result<OperationView, RemoteError> {
        self.call(self.request(
            Method::GET,
            &format!("/api/v1/subscription-operations/{}", segment(id)),
        ))
        .await
    }

    /// `GET /api/v1/cards/{iccid}/audit-trail`.
    pub(crate) async fn audit_trail(
        &self,
        iccid: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TrailView>, RemoteError> {
        let (rb, m, u) = self.request(
            Method::GET,
            &format!("/api/v1/cards/{}/audit-trail", segment(iccid)),
        );
        let mut query = vec![("limit", limit.to_string())];
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        self.call((rb.query(&query), m, u)).await
    }

    /// `POST /api/v1/subscription-templates`.
    pub(crate) async fn create_subscription_template(
        &self,
        t: &SubscriptionTemplate,
    ) -> Result<SubscriptionTemplate, RemoteError> {
        self.call(self.json(Method::POST, "/api/v1/subscription-templates", t))
            .await
    }

    /// `GET /api/v1/subscription-templates`.
    pub(crate) async fn subscription_templates(
        &self,
    ) -> Result<Vec<SubscriptionTemplate>, RemoteError> {
        self.call(self.request(Method::GET, "/api/v1/subscription-templates"))
            .await
    }

    /// `GET /api/v1/tokens`.
    pub(crate) async fn tokens(&self) -> Result<Vec<TokenView>, RemoteError> {
        self.call(self.request(Method::GET, "/api/v1/tokens")).await
    }

    /// `DELETE /api/v1/tokens/{id}`.
    pub(crate) async fn revoke_token(&self, id: &str) -> Result<(), RemoteError> {
        self.send(self.request(Method::DELETE, &format!("/api/v1/tokens/{}", segment(id))))
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(segment("8944-1_a.b~"), "8944-1_a.b~");
        assert_eq!(segment("../x?y"), "..%2Fx%3Fy");
        assert_eq!(segment(".."), "-");
    }

    #[test]
    fn a_server_url_must_be_http() {
        let e = Client::new("ftp://x", "t".into(), None)
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--server")));
        assert!(Client::new("https://ota.example.net/", "t".into(), None).is_ok());
    }
}
