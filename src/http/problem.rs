//! RFC 9457 problem details: the shape of every HTTP error tidemark sends.

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::ServiceError;
use crate::store::StoreError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error response body (RFC 9457). `type` is a stable URI naming the kind of
/// problem; `title` is its short human summary; `detail` explains this occurrence.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(format = "uri", example = "urn:tidemark:problem:stale-write")]
    pub kind: String,
    #[schema(example = "Stale write")]
    pub title: String,
    #[schema(minimum = 400, maximum = 599, example = 409)]
    pub status: u16,
    pub detail: String,
    /// For refused writes: the timestamp currently stored for the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = crate::service::jsonl::optional_micros_schema)]
    pub current_timestamp: Option<u64>,
    /// For a failed `If-Match`: the stored value's ETag (absent when there is no live
    /// value); also sent as the `ETag` header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_etag: Option<String>,
    /// For a refused PATCH: every field it named, with the timestamp that refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Vec<RefusedField>>,
    /// Seconds after which a retry may succeed, sent as `Retry-After`.
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// A field a PATCH could not write: older than the stored field, or a tie with it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RefusedField {
    pub field: String,
    /// The field's stored timestamp.
    #[schema(schema_with = crate::service::jsonl::micros_schema)]
    pub current_timestamp: u64,
}

impl RefusedField {
    /// The (field, timestamp) pairs of a patch report.
    pub fn list(refused: Vec<(String, u64)>) -> Vec<Self> {
        refused
            .into_iter()
            .map(|(field, current_timestamp)| RefusedField {
                field,
                current_timestamp,
            })
            .collect()
    }
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("urn:tidemark:problem:{kind}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail: detail.into(),
            current_timestamp: None,
            current_etag: None,
            refused: None,
            retry_after: None,
        }
    }

    /// Tell the client when to retry (`Retry-After`, seconds).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, kind, title, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// A request whose method its route does not serve.
    pub fn method_not_allowed(method: &Method, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            format!("{method} is not supported on {path}"),
        )
    }

    fn with_current(mut self, current: u64) -> Self {
        self.current_timestamp = Some(current);
        self
    }

    fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(etag) = self
            .current_etag
            .as_deref()
            .and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(header::ETAG, etag);
        }
        if let Some(current) = self.current_timestamp {
            headers.insert(
                super::headers::X_WRITE_TIMESTAMP,
                HeaderValue::from(current),
            );
        }
        response
    }
}

/// Longest body of a foreign error response kept as the problem's `detail`.
const MAX_FOREIGN_DETAIL: usize = 1024;

/// Whether `response` is an error answer that is not problem+json, which
/// [`ensure_problem`] rewrites.
pub fn is_foreign_error(response: &Response) -> bool {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    (status.is_client_error() || status.is_server_error()) && !is_problem
}

/// Rewrite an error response that is not problem+json (the docs UI's bare 404, a
/// rejection from a layer) into one, keeping its status and headers such as `Allow`.
pub async fn ensure_problem(response: Response) -> Response {
    if !is_foreign_error(&response) {
        return response;
    }
    let status = response.status();
    let (parts, body) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("Error");
    // A short text body (axum's rejections) explains this occurrence; anything else
    // is replaced by the status's reason phrase. Server errors go to the log only.
    let text = axum::body::to_bytes(body, MAX_FOREIGN_DETAIL)
        .await
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .filter(|text| !text.trim().is_empty());
    let detail = match text {
        Some(text) if status.is_server_error() => {
            tracing::error!(%status, detail = %text, "server error outside a handler");
            reason.to_string()
        }
        Some(text) => text,
        None => reason.to_string(),
    };
    let kind = reason
        .chars()
        .filter_map(|c| match c {
            ' ' | '-' => Some('-'),
            c if c.is_ascii_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect::<String>();
    let mut problem = Problem::new(status, &kind, reason, detail).into_response();
    let mut headers = parts.headers;
    for describes_old_body in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
    ] {
        headers.remove(describes_old_body);
    }
    // The problem's own headers (Content-Type, Cache-Control) win.
    headers.extend(problem.headers_mut().drain());
    *problem.headers_mut() = headers;
    problem
}

impl From<ServiceError> for Problem {
    fn from(e: ServiceError) -> Self {
        let detail = e.to_string();
        match e {
            ServiceError::Stale { current } => Problem::new(
                StatusCode::CONFLICT,
                "stale-write",
                "Stale write",
                format!("{detail}; the write was refused and nothing changed"),
            )
            .with_current(current),
            ServiceError::Tie { current } => Problem::new(
                StatusCode::CONFLICT,
                "timestamp-tie",
                "Conflicting write with the same timestamp",
                format!("{detail}; the write was refused and nothing changed"),
            )
            .with_current(current),
            ServiceError::FutureTimestamp(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "future-timestamp",
                "Timestamp too far in the future",
                format!("{detail}; check the client's clock"),
            ),
            ServiceError::EmptyKey => Problem::bad_request("invalid-key", "Invalid key", detail),
            ServiceError::KeyTooLong { .. } => Problem::new(
                StatusCode::URI_TOO_LONG,
                "key-too-long",
                "Key too long",
                detail,
            ),
            ServiceError::ValueTooLarge { .. } => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value-too-large",
                "Value too large",
                detail,
            ),
            ServiceError::TtlOutOfRange => {
                Problem::bad_request("invalid-ttl", "Invalid X-TTL", detail)
            }
            ServiceError::NotFound => Problem::not_found(detail),
            ServiceError::Exists => Problem::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition-failed",
                "Precondition failed",
                "If-None-Match: * and the key has a live value; nothing changed",
            ),
            ServiceError::PreconditionFailed { current_etag } => {
                let mut p = Problem::new(
                    StatusCode::PRECONDITION_FAILED,
                    "precondition-failed",
                    "Precondition failed",
                    format!(
                        "{detail}; If-Match refused the write before the timestamp rule was asked, and nothing changed"
                    ),
                );
                p.current_etag = current_etag;
                p
            }
            ServiceError::PatchRefused(report) => {
                let mut p = Problem::new(
                    StatusCode::CONFLICT,
                    "stale-write",
                    "Stale write",
                    format!("{detail}; nothing changed"),
                )
                .with_current(report.timestamp);
                p.refused = Some(RefusedField::list(report.refused));
                p
            }
            ServiceError::NotAnObject => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not-an-object",
                "Not a JSON object",
                detail,
            ),
            ServiceError::EmptyPatch => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not-an-object",
                "Empty merge patch",
                detail,
            ),
            ServiceError::OwnerTooLong { .. } => {
                Problem::bad_request("invalid-owner", "Invalid X-Session-Owner", detail)
            }
            ServiceError::Store(StoreError::Unavailable(e)) => {
                tracing::warn!(error = %e, "the database is unavailable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database-unavailable",
                    "Database unavailable",
                    "the database could not be reached or did not answer in time; a write may or may \
                     not have been applied, and sending it again with the same X-Write-Timestamp \
                     is safe (an identical repeat is answered as a success)",
                )
                .with_retry_after(1)
            }
            ServiceError::Store(e) => {
                // Engine details go to the log, not to clients.
                tracing::error!(error = %e, "storage failure");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage-unavailable",
                    "Storage unavailable",
                    "the store could not complete the request; nothing was changed, retry later",
                )
            }
        }
    }
}
