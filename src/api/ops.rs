//! Health, metrics (JSON per account, Prometheus text per gateway) and the 404 fallback.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, TransportHealth};
use crate::store::Account;

/// Liveness and readiness.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` when the store answers and every transport is ready, else `degraded`.
    pub status: String,
    /// The process answers.
    pub live: bool,
    /// Store and transports ready.
    pub ready: bool,
    /// Store backend.
    pub store: String,
    /// Store error, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// Transports.
    pub transports: Vec<TransportHealth>,
    /// This gateway's id.
    pub gateway: String,
    /// Commands held in memory.
    pub in_flight: usize,
}

/// Liveness and readiness (store, SMSC binds). No token needed. 503 when not ready.
#[utoipa::path(get, path = "/api/v1/ota/health", tag = "operations",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let store_error = state.store.ping().await.err().map(|e| e.to_string());
    let transports: Vec<TransportHealth> = state.health.iter().map(|p| p()).collect();
    let ready = store_error.is_none() && transports.iter().all(|t| t.ready);
    let body = Health {
        status: if ready { "ok" } else { "degraded" }.into(),
        live: true,
        ready,
        store: state.store.backend().into(),
        store_error,
        transports,
        gateway: state.gateway.id().to_string(),
        in_flight: state.gateway.in_flight(),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// One transport's figures.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportFigures {
    /// Commands.
    pub commands: u64,
    /// Successes.
    pub successes: u64,
    /// successes / ended commands.
    pub success_rate: Option<f64>,
}

/// This account's command metrics.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    /// Commands in all.
    pub total: u64,
    /// Per status.
    pub by_status: BTreeMap<String, u64>,
    /// SUCCESS / (SUCCESS + FAILED + EXPIRED).
    pub success_rate: Option<f64>,
    /// Failed commands per error code.
    pub errors_by_type: BTreeMap<String, u64>,
    /// Mean time from first send to the delivery report, ms.
    pub mean_delivery_ms: Option<f64>,
    /// Mean time from first send to a successful PoR, ms.
    pub mean_completion_ms: Option<f64>,
    /// Per transport.
    pub transports: BTreeMap<String, TransportFigures>,
}

/// Success rate, delivery time, errors by type, per transport (this account).
#[utoipa::path(get, path = "/api/v1/ota/metrics", tag = "operations",
    responses((status = 200, body = Metrics)), security(("bearer" = [])))]
pub async fn metrics_json(
    State(state): State<AppState>,
    Extension(account): Extension<Account>,
) -> Result<Json<Metrics>, ApiError> {
    let s = state
        .store
        .command_stats(&account.id)
        .await
        .map_err(ApiError::store)?;
    let get = |k: &str| s.by_status.get(k).copied().unwrap_or(0);
    let ended = get("SUCCESS") + get("FAILED") + get("EXPIRED");
    Ok(Json(Metrics {
        total: s.by_status.values().sum(),
        success_rate: (ended > 0).then(|| get("SUCCESS") as f64 / ended as f64),
        by_status: s.by_status.clone(),
        errors_by_type: s.by_error.clone(),
        mean_delivery_ms: s.mean_delivery_ms,
        mean_completion_ms: s.mean_completion_ms,
        transports: s
            .by_transport
            .iter()
            .map(|(name, (commands, successes))| {
                (
                    name.clone(),
                    TransportFigures {
                        commands: *commands,
                        successes: *successes,
                        success_rate: (*commands > 0).then(|| *successes as f64 / *commands as f64),
                    },
                )
            })
            .collect(),
    }))
}

/// Prometheus text exposition of this gateway.
pub async fn prometheus(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.gateway.metrics().render(),
    )
}

/// Unknown route.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(None, format!("no route {}", uri.path()))
}
