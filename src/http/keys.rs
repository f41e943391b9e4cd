//! `/keys` handlers: thin translations between HTTP and [`Service`] calls.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::problem::Problem;
use crate::record::DEFAULT_CONTENT_TYPE;
use crate::service::{Entry, PutCondition, WriteOutcome};

/// Header carrying a write's timestamp: microseconds since the Unix epoch, decimal.
pub const X_WRITE_TIMESTAMP: &str = "x-write-timestamp";
/// Header carrying a TTL in whole seconds.
pub const X_TTL: &str = "x-ttl";
/// Header carrying a value's expiry: microseconds since the Unix epoch.
pub const X_EXPIRES_AT: &str = "x-expires-at";

/// Characters kept verbatim when a key is shown as a path segment: RFC 3986 `pchar`
/// minus `%`, so listed keys can be pasted into `/keys/{key}` unchanged.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// The key named by the `{key}` path segment, percent-decoded to raw bytes.
#[derive(Debug, Clone)]
pub struct Key(pub Vec<u8>);

impl<S: Send + Sync> FromRequestParts<S> for Key {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let segment = parts
            .uri
            .path()
            .strip_prefix("/keys/")
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default();
        decode_segment(segment).map(Key)
    }
}

/// Percent-decode one path segment to bytes; malformed escapes are refused rather than
/// passed through, so `%zz` can never silently become a different key.
pub fn decode_segment(segment: &str) -> Result<Vec<u8>, Problem> {
    let bytes = segment.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%' {
            let hex = bytes.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return Err(Problem::bad_request(
                    "invalid-key",
                    "Invalid key",
                    "the key has a malformed percent-escape (use %XX with two hex digits)",
                ));
            }
        }
    }
    let key: Vec<u8> = percent_decode_str(segment).collect();
    if key.is_empty() {
        return Err(Problem::bad_request(
            "invalid-key",
            "Invalid key",
            "the key is empty",
        ));
    }
    Ok(key)
}

/// A key as a path segment (the form `GET /keys` lists keys in).
pub fn encode_segment(key: &[u8]) -> String {
    // Non-UTF-8 bytes are escaped byte by byte, so any key survives the round trip.
    match std::str::from_utf8(key) {
        Ok(text) => utf8_percent_encode(text, SEGMENT).to_string(),
        Err(_) => percent_encoding::percent_encode(key, SEGMENT).to_string(),
    }
}

fn write_timestamp(headers: &HeaderMap) -> Result<u64, Problem> {
    let Some(raw) = headers.get(X_WRITE_TIMESTAMP) else {
        return Err(Problem::new(
            StatusCode::PRECONDITION_REQUIRED,
            "missing-timestamp",
            "X-Write-Timestamp required",
            "every write must carry X-Write-Timestamp: microseconds since the Unix epoch, in decimal",
        ));
    };
    parse_decimal(raw.as_bytes()).ok_or_else(|| {
        Problem::bad_request(
            "invalid-timestamp",
            "Invalid X-Write-Timestamp",
            "X-Write-Timestamp must be a whole number of microseconds since the Unix epoch, \
             in decimal digits only, at most 18446744073709551615",
        )
    })
}

fn ttl(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(raw) = headers.get(X_TTL) else {
        return Ok(None);
    };
    parse_decimal(raw.as_bytes())
        .filter(|&n| (1..=crate::service::MAX_TTL_SECS).contains(&n))
        .map(Some)
        .ok_or_else(|| {
            Problem::bad_request(
                "invalid-ttl",
                "Invalid X-TTL",
                format!(
                    "X-TTL must be whole seconds in decimal digits, from 1 to {}",
                    crate::service::MAX_TTL_SECS
                ),
            )
        })
}

/// Strict unsigned decimal: digits only, no sign, no spaces, no fraction, fits in u64.
pub fn parse_decimal(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

fn body(body: Result<Bytes, BytesRejection>, max: usize) -> Result<Bytes, Problem> {
    body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            Problem::new(
                status,
                "value-too-large",
                "Value too large",
                format!("the value exceeds the limit of {max} bytes"),
            )
        } else {
            Problem::new(
                status,
                "invalid-body",
                "Unreadable body",
                rejection.body_text(),
            )
        }
    })
}

fn stamp_headers(headers: &mut HeaderMap, timestamp: u64) {
    headers.insert(X_WRITE_TIMESTAMP, HeaderValue::from(timestamp));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{timestamp}\"")) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// Store a value if its timestamp is newer than the stored one.
#[utoipa::path(
    put,
    path = "/keys/{key}",
    tag = "keys",
    params(
        ("key" = String, Path, description = "The key, one path segment, percent-decoded to bytes (`a%2Fb` is `a/b`)."),
        ("X-Write-Timestamp" = u64, Header, description = "The write's timestamp: microseconds since the Unix epoch."),
        ("X-TTL" = Option<u64>, Header, description = "Expire the value this many seconds from now."),
        ("Content-Type" = Option<String>, Header, description = "Stored and returned with the value; default application/octet-stream."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value: any bytes."),
    responses(
        (status = 201, description = "Created: the key had no live value.", headers(("X-Write-Timestamp" = u64), ("ETag" = String))),
        (status = 204, description = "Replaced, or the identical write repeated (idempotent).", headers(("X-Write-Timestamp" = u64), ("ETag" = String))),
        (status = 400, description = "Malformed X-Write-Timestamp, X-TTL or key.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale (older than stored) or tie (same timestamp, different content); nothing changed.", body = Problem, content_type = "application/problem+json", headers(("X-Write-Timestamp" = u64, description = "The stored timestamp"))),
        (status = 413, description = "Value over --max-value-bytes.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over --max-key-bytes.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Timestamp further ahead of the server clock than --max-future-skew.", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "X-Write-Timestamp missing.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put_key(
    State(state): State<AppState>,
    Key(key): Key,
    headers: HeaderMap,
    value: Result<Bytes, BytesRejection>,
) -> Result<Response, Problem> {
    let timestamp = write_timestamp(&headers)?;
    let ttl = ttl(&headers)?;
    let value = body(value, state.service.policy().max_value_bytes)?;
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => DEFAULT_CONTENT_TYPE.to_string(),
        Some(raw) => raw
            .to_str()
            .ok()
            .filter(|ct| !ct.is_empty() && ct.len() <= 1024)
            .ok_or_else(|| {
                Problem::bad_request(
                    "invalid-content-type",
                    "Invalid Content-Type",
                    "Content-Type must be visible ASCII, at most 1024 bytes",
                )
            })?
            .to_string(),
    };
    let location = format!("/keys/{}", encode_segment(&key));
    let outcome = state
        .service
        .put(
            key,
            value.to_vec(),
            content_type,
            timestamp,
            ttl,
            PutCondition::Always,
        )
        .await?;
    let mut response = match outcome {
        WriteOutcome::Created => {
            let mut r = StatusCode::CREATED.into_response();
            if let Ok(loc) = HeaderValue::from_str(&location) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r
        }
        WriteOutcome::Replaced | WriteOutcome::Repeated => StatusCode::NO_CONTENT.into_response(),
    };
    stamp_headers(response.headers_mut(), timestamp);
    Ok(response)
}

/// Read a live value.
#[utoipa::path(
    get,
    path = "/keys/{key}",
    tag = "keys",
    params(("key" = String, Path, description = "The key, percent-decoded to bytes.")),
    responses(
        (status = 200, description = "The value, with the Content-Type it was stored with. HEAD returns the same headers.", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("X-Write-Timestamp" = u64), ("ETag" = String), ("Cache-Control" = String), ("X-Expires-At" = u64, description = "Expiry, µs since the epoch, if any"), ("Expires" = String))),
        (status = 400, description = "Malformed key.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent, expired or deleted.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over --max-key-bytes.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn get_key(State(state): State<AppState>, Key(key): Key) -> Result<Response, Problem> {
    let Some(entry) = state.service.get(key).await? else {
        return Err(Problem::not_found("no live value for this key"));
    };
    Ok(entry_response(entry))
}

fn entry_response(entry: Entry) -> Response {
    let content_type = HeaderValue::from_str(&entry.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    let mut response = (StatusCode::OK, entry.value).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    stamp_headers(headers, entry.timestamp);
    if let Some(at) = entry.expires_at {
        headers.insert(X_EXPIRES_AT, HeaderValue::from(at));
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_micros(at);
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(when)) {
            headers.insert(header::EXPIRES, v);
        }
    }
    response
}

/// Delete a key by leaving a tombstone with the delete's timestamp.
#[utoipa::path(
    delete,
    path = "/keys/{key}",
    tag = "keys",
    params(
        ("key" = String, Path, description = "The key, percent-decoded to bytes."),
        ("X-Write-Timestamp" = u64, Header, description = "The delete's timestamp: microseconds since the Unix epoch."),
    ),
    responses(
        (status = 204, description = "Deleted (also for a key that never existed: the tombstone is written anyway), or the same delete repeated.", headers(("X-Write-Timestamp" = u64))),
        (status = 400, description = "Malformed X-Write-Timestamp or key.", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Stale or tie; nothing changed.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over --max-key-bytes.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Timestamp too far in the future.", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "X-Write-Timestamp missing.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete_key(
    State(state): State<AppState>,
    Key(key): Key,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let timestamp = write_timestamp(&headers)?;
    state.service.delete(key, timestamp).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    stamp_headers(response.headers_mut(), timestamp);
    Ok(response)
}

/// The expiry after a touch.
#[derive(Debug, Serialize, ToSchema)]
pub struct Touched {
    /// Expiry in µs since the Unix epoch; null when the value never expires.
    pub expires_at: Option<u64>,
}

/// Extend a live value's expiry to now + X-TTL (never shortens it).
#[utoipa::path(
    post,
    path = "/keys/{key}/touch",
    tag = "keys",
    params(
        ("key" = String, Path, description = "The key, percent-decoded to bytes."),
        ("X-TTL" = u64, Header, description = "Seconds from now."),
    ),
    responses(
        (status = 200, description = "The expiry now in force (unchanged if it was already later, or if the value never expires).", body = Touched),
        (status = 400, description = "X-TTL missing or malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Absent, expired or deleted: touch never revives.", body = Problem, content_type = "application/problem+json"),
        (status = 414, description = "Key over --max-key-bytes.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn touch_key(
    State(state): State<AppState>,
    Key(key): Key,
    headers: HeaderMap,
) -> Result<Json<Touched>, Problem> {
    let Some(ttl) = ttl(&headers)? else {
        return Err(Problem::bad_request(
            "invalid-ttl",
            "X-TTL required",
            "touch needs X-TTL: the new lifetime in seconds",
        ));
    };
    let expires_at = state.service.touch(key, ttl).await?;
    Ok(Json(Touched { expires_at }))
}

/// Query of `GET /keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys starting with this (percent-decoded to bytes).
    pub prefix: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page.
    pub cursor: Option<String>,
}

/// A page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    /// Live keys in byte order, each as a percent-encoded path segment
    /// (usable as-is in `/keys/{key}`).
    pub keys: Vec<String>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// List live keys (expired and deleted ones left out), paginated.
#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    params(ListQuery),
    responses(
        (status = 200, description = "One page of keys.", body = KeyPage),
        (status = 400, description = "Bad limit, prefix or cursor.", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<KeyPage>, Problem> {
    let Query(query) =
        query.map_err(|e| Problem::bad_request("invalid-query", "Invalid query", e.body_text()))?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-query",
            "Invalid limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    // Query values arrive already form-decoded as text; keys are raw bytes, so the
    // prefix and cursor use the same percent-encoding as listed keys.
    let prefix = match query.prefix.as_deref() {
        None | Some("") => Vec::new(),
        Some(p) => decode_query_bytes(p)?,
    };
    let after = query
        .cursor
        .as_deref()
        .map(decode_query_bytes)
        .transpose()?;
    let page = state.service.list(prefix, after, limit).await?;
    Ok(Json(KeyPage {
        keys: page.keys.iter().map(|k| encode_segment(k)).collect(),
        next_cursor: page.next_after.map(|k| encode_segment(&k)),
    }))
}

fn decode_query_bytes(text: &str) -> Result<Vec<u8>, Problem> {
    // `Query` has already undone one level of form encoding; what remains is either
    // plain text or a percent-encoded segment as listed by this endpoint.
    Ok(percent_decode_str(text).collect())
}
