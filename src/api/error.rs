//! API errors as JSON naming the field and the problem, and a JSON body extractor that says
//! which field of the body is wrong.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// An error answer: `{"error": CODE, "message": ..., "field": ..., "commandId": ...,
/// "timestamp": RFC 3339, "details": {...}}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code (VALIDATION_ERROR, NOT_FOUND, INVALID_STATE, UNAUTHORIZED, ...).
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault.
    pub field: Option<String>,
    /// The command concerned.
    pub command_id: Option<String>,
    /// Values that explain the error (`field` for a validation error, the failing `index` of
    /// a batch, a state, a limit).
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The error body.
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Code.
    pub error: String,
    /// Message.
    pub message: String,
    /// Field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Command concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<String>,
    /// When (RFC 3339, UTC, milliseconds).
    #[serde(with = "crate::rfc3339")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-07T05:49:12.123Z")]
    pub timestamp: i64,
    /// Values that explain the error, when there are some: `field` (as above) for a
    /// validation error, with what the field was checked against (`spi`, `requested`); the
    /// failing command's `index` in a batch; the `status` of a command that cannot be
    /// cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, additional_properties)]
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            command_id: None,
            details: serde_json::Map::new(),
        }
    }

    /// 400: the body does not parse.
    pub fn bad_request(field: Option<String>, message: impl Into<String>) -> Self {
        Self {
            field,
            ..Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
        }
    }

    /// 422: well-formed but not acceptable.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "VALIDATION_ERROR",
                message,
            )
        }
    }

    /// 404.
    pub fn not_found(field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            field: field.map(str::to_string),
            ..Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
        }
    }

    /// 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 403: the caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "FORBIDDEN", message)
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    /// 500 from the store (the message names what failed, never key material).
    pub fn store(e: StoreError) -> Self {
        match e {
            // An ICCID is held by one account only (its key sets are the card's): the answer
            // is the same whether this account or another holds it, and says neither.
            StoreError::Duplicate { what: "card", key } => Self::conflict(
                "DUPLICATE",
                format!("card {key} cannot be added: its ICCID is already registered"),
            ),
            StoreError::Duplicate { what, key } => {
                Self::conflict("DUPLICATE", format!("{what} {key} already exists"))
            }
            StoreError::NotFound { what, key } => {
                Self::not_found(None, format!("{what} {key} not found"))
            }
            StoreError::Invalid { field, problem } => Self::invalid(field, problem),
            StoreError::InUse { what, key, reason } => Self {
                field: Some("iccid".into()),
                ..Self::conflict(
                    "CARD_IN_USE",
                    format!("{what} {key} cannot be deleted: {reason}"),
                )
            },
            other => {
                tracing::error!("store: {other}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    format!("store: {other}"),
                )
            }
        }
    }

    /// With the command concerned.
    pub fn for_command(mut self, id: &str) -> Self {
        self.command_id = Some(id.to_string());
        self
    }

    /// With a value in `details`.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// 422 for a field error, its details kept; `prefix` goes before the field's name
    /// (`commands[2].`).
    pub fn from_field(e: crate::pipeline::FieldError, prefix: &str) -> Self {
        let mut out = Self::invalid(format!("{prefix}{}", e.field), e.problem);
        out.details.extend(e.details);
        out
    }
}

impl From<crate::pipeline::FieldError> for ApiError {
    fn from(e: crate::pipeline::FieldError) -> Self {
        Self::from_field(e, "")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The field at fault is a detail too (the API reference's errors carry only `details`).
        let mut details = self.details;
        if let Some(field) = &self.field {
            details
                .entry("field")
                .or_insert_with(|| field.clone().into());
        }
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            field: self.field,
            command_id: self.command_id,
            timestamp: crate::clock::now_ms(),
            details: (!details.is_empty()).then_some(details),
        };
        (self.status, Json(body)).into_response()
    }
}

/// Turns an error answer that is not JSON (axum's own rejections of a path or query that does
/// not parse, 405 with an empty body, 413 from the body limit) into the documented error body,
/// keeping its status and its text as the message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let code = match status.as_u16() {
        400 => "BAD_REQUEST",
        404 => "NOT_FOUND",
        405 => "METHOD_NOT_ALLOWED",
        413 => "PAYLOAD_TOO_LARGE",
        415 => "UNSUPPORTED_MEDIA_TYPE",
        422 => "VALIDATION_ERROR",
        429 => "TOO_MANY_REQUESTS",
        s if s >= 500 => "INTERNAL_ERROR",
        _ => "REQUEST_REFUSED",
    };
    let message = if text.is_empty() {
        reason.to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, code, message).into_response();
    // Keep what the framework said besides the body (`Allow` on a 405, for one).
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

/// A JSON body; a parse error names the path of the field at fault (`security.tar`).
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(None, format!("cannot read the body: {e}")))?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => Ok(JsonBody(v)),
            Err(e) => {
                let path = e.path().to_string();
                let field = (path != ".").then_some(path);
                let inner = e.into_inner();
                let message = if inner.is_syntax() || inner.is_eof() {
                    format!("invalid JSON: {inner}")
                } else {
                    inner.to_string()
                };
                Err(ApiError::bad_request(field, message))
            }
        }
    }
}
