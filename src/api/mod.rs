//! The northbound REST API (axum): OTA commands, batches, cards, key rotation, metrics,
//! health, webhooks, bearer tokens and uploaded applets, with an OpenAPI document at `/api/v1/openapi.json`
//! and Prometheus text at `/metrics`. Every route but health needs a bearer token; an account
//! sees only its own cards and commands (another account's id answers 404).

pub mod campaign_ops;
pub mod campaigns;
pub mod cards;
pub mod commands;
pub mod error;
pub mod openapi;
pub mod ops;
pub mod scp81;
pub mod serve;
pub mod subscriptions;
pub mod tls;
pub mod tokens;
pub use crate::delivery::webhook;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;

use crate::gateway::Gateway;
use crate::store::Store;

pub use error::{ApiError, JsonBody};

/// A transport's health, as `/api/v1/ota/health` reports it.
pub type HealthProbe = Arc<dyn Fn() -> TransportHealth + Send + Sync>;

/// A transport's state.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportHealth {
    /// Transport name.
    pub name: String,
    /// Ready to send.
    pub ready: bool,
    /// Details (binds up / configured).
    pub detail: String,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The gateway engine.
    pub gateway: Arc<Gateway>,
    /// Transport health probes.
    pub health: Vec<HealthProbe>,
    /// The Secure Router (subscription management), when the store keeps its records.
    pub router: Option<Arc<crate::subscription::SecureRouter>>,
}

impl AppState {
    /// State over a running gateway.
    pub fn new(gateway: Arc<Gateway>, health: Vec<HealthProbe>) -> Self {
        Self {
            store: gateway.store().clone(),
            gateway,
            health,
            router: None,
        }
    }

    /// With the Secure Router (its loop runs elsewhere: `subscription::spawn`).
    pub fn with_router(mut self, router: Arc<crate::subscription::SecureRouter>) -> Self {
        self.router = Some(router);
        self
    }
}

/// Bearer-token authentication: puts the caller's [`Account`](crate::store::Account) in the
/// request's extensions.
async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .ok_or_else(|| {
            ApiError::unauthorized("a bearer token is required (Authorization: Bearer ...)")
        })?;
    // Looked up on every request (one primary-key read), never cached: a token revoked
    // through any gateway or the CLI is refused by every gateway at once.
    let account = state
        .store
        .account_for_token(&token)
        .await
        .map_err(ApiError::store)?
        .ok_or_else(|| ApiError::unauthorized("unknown bearer token"))?;
    request.extensions_mut().insert(account);
    Ok(next.run(request).await)
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let authed = Router::new()
        .route("/api/v1/ota/commands", post(commands::create))
        .route(
            "/api/v1/ota/commands/{command_id}",
            get(commands::get_one).delete(commands::cancel),
        )
        .route("/api/v1/ota/batch", post(commands::create_batch))
        .route("/api/v1/ota/batch/{batch_id}", get(commands::get_batch))
        .route("/api/v1/ota/security/rotate-keys", post(cards::rotate_keys))
        .route("/api/v1/ota/security/status", get(cards::security_status))
        .route("/api/v1/ota/metrics", get(ops::metrics_json))
        .route(
            "/api/v1/cards",
            post(cards::add_cards).get(cards::list_cards),
        )
        .route(
            "/api/v1/cards/{iccid}",
            get(cards::get_card)
                .patch(cards::update_card)
                .delete(cards::delete_card),
        )
        .route("/api/v1/cards/{iccid}/scp81-keys", put(scp81::put_psk))
        .route(
            "/api/v1/cards/{iccid}/subscriptions",
            get(subscriptions::list).post(subscriptions::download),
        )
        .route(
            "/api/v1/cards/{iccid}/subscriptions/{subscription_id}",
            delete(subscriptions::delete),
        )
        .route(
            "/api/v1/cards/{iccid}/subscriptions/{subscription_id}/enable",
            post(subscriptions::enable),
        )
        .route(
            "/api/v1/cards/{iccid}/subscriptions/{subscription_id}/fallback",
            put(subscriptions::fallback),
        )
        .route("/api/v1/cards/{iccid}/audit", post(subscriptions::audit))
        .route(
            "/api/v1/cards/{iccid}/audit-trail",
            get(subscriptions::audit_trail),
        )
        .route(
            "/api/v1/subscription-operations/{operation_id}",
            get(subscriptions::operation),
        )
        .route(
            "/api/v1/cardgroups/{id}/grants",
            post(subscriptions::grant).get(subscriptions::grants),
        )
        .route(
            "/api/v1/cardgroups/{id}/rules",
            put(subscriptions::set_rules).get(subscriptions::rules),
        )
        .route(
            "/api/v1/cardgroups/{id}/bootstrap",
            get(subscriptions::bootstrap_progress),
        )
        .route(
            "/api/v1/cardgroups/{id}/grants/{account}",
            delete(subscriptions::revoke_grant),
        )
        .route(
            "/api/v1/subscription-templates",
            post(subscriptions::create_template).get(subscriptions::list_templates),
        )
        .route("/api/v1/applets", post(cards::upload_applet))
        .route(
            "/api/v1/webhooks",
            post(cards::add_webhook).get(cards::list_webhooks),
        )
        .route("/api/v1/webhooks/{id}", delete(cards::delete_webhook))
        .route("/api/v1/tokens", get(tokens::list))
        .route("/api/v1/tokens/{id}", delete(tokens::revoke))
        .route(
            "/api/v1/profiles",
            post(campaigns::create_profile).get(campaigns::list_profiles),
        )
        .route("/api/v1/profiles/{id}", get(campaigns::get_profile))
        .route(
            "/api/v1/profiles/{id}/provision",
            post(campaigns::provision),
        )
        .route(
            "/api/v1/cardgroups",
            post(campaigns::create_group).get(campaigns::list_groups),
        )
        .route("/api/v1/cardgroups/{id}", get(campaigns::get_group))
        .route(
            "/api/v1/campaigns",
            post(campaign_ops::create).get(campaign_ops::list),
        )
        .route("/api/v1/campaigns/{id}", get(campaign_ops::show))
        .route("/api/v1/campaigns/{id}/start", post(campaign_ops::start))
        .route("/api/v1/campaigns/{id}/stop", post(campaign_ops::stop))
        .route(
            "/api/v1/campaigns/{id}/retry-failed",
            post(campaign_ops::retry_failed),
        )
        .route("/api/v1/campaigns/{id}/cards", get(campaign_ops::cards))
        .route("/metrics", get(ops::prometheus))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .route("/api/v1/ota/health", get(ops::health))
        .route("/api/v1/openapi.json", get(openapi::document))
        .merge(authed)
        .fallback(ops::not_found)
        // The stated limit for every body (axum's own default would stop JSON at 2 MB).
        .layer(axum::extract::DefaultBodyLimit::max(16 << 20))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(16 << 20))
        // Outermost: every error leaves as the JSON error body, the framework's own too.
        .layer(axum::middleware::map_response(error::json_errors))
        .with_state(state)
}
