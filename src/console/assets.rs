//! The console's static files, compiled into the binary (see `assets/README.md`).

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::PageError;

/// (name, content type, bytes).
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "console.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/console.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx.min.js"),
    ),
    (
        "htmx-ext-sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/htmx-ext-sse.min.js"),
    ),
];

/// `GET /console/assets/{name}`.
pub async fn file(Path(name): Path<String>) -> Result<Response, PageError> {
    let (_, ty, bytes) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or(PageError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, *ty),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        *bytes,
    )
        .into_response())
}
