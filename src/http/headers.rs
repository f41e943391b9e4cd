//! Header names of the HTTP API, shared by the handlers, the problem responses and the
//! command-line client, so each is spelled once. They are `HeaderName`s rather than
//! strings: inserting a header by a `&str` name copies the name into a new allocation
//! on every response.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

/// Header carrying a write's timestamp: microseconds since the Unix epoch, decimal.
pub const X_WRITE_TIMESTAMP: HeaderName = HeaderName::from_static("x-write-timestamp");
/// Header carrying a TTL in whole seconds.
pub const X_TTL: HeaderName = HeaderName::from_static("x-ttl");
/// Header carrying a value's expiry: microseconds since the Unix epoch.
pub const X_EXPIRES_AT: HeaderName = HeaderName::from_static("x-expires-at");
/// Header naming a session's owner (opaque, visible ASCII, up to 256 bytes).
pub const X_SESSION_OWNER: HeaderName = HeaderName::from_static("x-session-owner");
/// Header asking for an absolute lifetime (whole seconds) on the write that creates a key.
pub const X_MAX_LIFETIME: HeaderName = HeaderName::from_static("x-max-lifetime");
/// Header carrying the end of a key's absolute lifetime: µs since the Unix epoch.
pub const X_LIFETIME_ENDS_AT: HeaderName = HeaderName::from_static("x-lifetime-ends-at");
/// Header of a backup response: how many records the snapshot holds.
pub const X_RECORD_COUNT: HeaderName = HeaderName::from_static("x-record-count");

/// `response` with `Cache-Control: no-store`: every answer that carries session data
/// or its metadata (values, keys, expiries, import reports) says so.
pub fn no_store(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
