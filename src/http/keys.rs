//! `/keys` handlers: thin translations between HTTP and [`Service`] calls.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use tower::Service;
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
use utoipa::openapi::{KnownFormat, SchemaFormat};
use utoipa::{IntoParams, ToSchema};

use super::headers::{
    X_EXPIRES_AT, X_LIFETIME_ENDS_AT, X_MAX_LIFETIME, X_SESSION_OWNER, X_TTL, X_WRITE_TIMESTAMP,
    no_store,
};
use super::problem::{PROBLEM_JSON, Problem, RefusedField};
use super::state::AppState;
use crate::guard::{Condition, EtagMatch, OwnerChange, PatchReport};
use crate::record::{DEFAULT_CONTENT_TYPE, whole_value_etag};
use crate::service::jsonl::Micros;
use crate::service::{Entry, MAX_OWNER_BYTES, MAX_TTL_SECS, WriteOptions, WriteOutcome};

// Descriptions shared by several operations in the OpenAPI document.
const KEY_PARAM: &str = "The key: one path segment, percent-decoded to bytes \
    (`a%2Fb` is the key `a/b`, `%00` a NUL byte, `%FF` a non-UTF-8 byte). Any text is a \
    key once percent-encoded as a path segment; a malformed escape (`%zz`) is refused.";
const CONFLICT_DESCRIPTION: &str = "Refused, nothing changed: stale (older than the stored \
    timestamp, type `urn:tidemark:problem:stale-write`) or tie (same timestamp, different \
    content, type `urn:tidemark:problem:timestamp-tie`).";
const SKEW_DESCRIPTION: &str =
    "Timestamp further ahead of the server clock than --max-future-skew.";
const STORAGE_DESCRIPTION: &str = "The store could not complete the request \
    (`storage-unavailable`: nothing changed), or the shared database is unavailable \
    (PostgreSQL engine: `database-unavailable` with `Retry-After`; a write may or may not \
    have been applied, and resending it with the same X-Write-Timestamp is safe).";

const KEY_TOO_LONG_DESCRIPTION: &str = "Key over --max-key-bytes.";
const IF_MATCH_PARAM: &str = "Compare-and-set: apply only if the stored value's ETag is \
    one of these entity tags (or `*`: any live value); otherwise 412. The timestamp rule \
    must pass as well.";
const OWNER_PARAM: &str = "Record the session's owner (visible ASCII, at most 256 bytes); \
    empty clears it; absent keeps it.";
const LIFETIME_PARAM: &str = "On the write that creates the key: no TTL or touch moves its \
    expiry past creation plus this many seconds (at most --max-session-lifetime).";
const PRECONDITION_DESCRIPTION: &str = "If-Match named no ETag of the stored value (a \
    value that is not a list of entity tags names none), or If-None-Match named it (`*`: \
    any live value) (`precondition-failed`, with `current_etag` and an \
    ETag header when there is a value); nothing changed.";
const TIMESTAMP_MISSING_DESCRIPTION: &str = "X-Write-Timestamp missing.";

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
        path_key(parts.uri.path()).map(Key)
    }
}

/// The key a `/keys/{key}…` path names: its second segment, percent-decoded.
fn path_key(path: &str) -> Result<Vec<u8>, Problem> {
    let segment = path
        .strip_prefix("/keys/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default();
    decode_segment(segment)
}

/// Percent-decode one path segment to bytes; malformed escapes are refused rather than
/// passed through, so `%zz` can never silently become a different key.
pub fn decode_segment(segment: &str) -> Result<Vec<u8>, Problem> {
    // Most keys have no escape: one scan for `%`, then a copy, instead of decoding
    // byte by byte.
    let key = if !segment.contains('%') {
        segment.as_bytes().to_vec()
    } else if escapes_are_well_formed(segment) {
        let mut key = Vec::with_capacity(segment.len());
        key.extend(percent_decode_str(segment));
        key
    } else {
        return Err(Problem::bad_request(
            "invalid-key",
            "Invalid key",
            "the key has a malformed percent-escape (use %XX with two hex digits)",
        ));
    };
    if key.is_empty() {
        return Err(Problem::bad_request(
            "invalid-key",
            "Invalid key",
            "the key is empty",
        ));
    }
    Ok(key)
}

/// Whether every `%` in `text` starts a `%XX` escape with two hex digits.
fn escapes_are_well_formed(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// A key as a path segment (the form `GET /keys` lists keys in).
pub fn encode_segment(key: &[u8]) -> String {
    // Non-UTF-8 bytes are escaped byte by byte, so any key survives the round trip.
    match std::str::from_utf8(key) {
        Ok(text) => utf8_percent_encode(text, SEGMENT).to_string(),
        Err(_) => percent_encoding::percent_encode(key, SEGMENT).to_string(),
    }
}

pub fn write_timestamp(headers: &HeaderMap) -> Result<u64, Problem> {
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

/// Entity tags of an `If-Match` / `If-None-Match` header: `*`, or a comma-separated
/// list of `"…"` / `W/"…"` tags (RFC 9110 §13.1). A value that is not such a list
/// names no tag: it matches nothing, so an `If-Match` with it fails (412) and an
/// `If-None-Match` with it passes.
fn entity_tags(raw: &HeaderValue) -> EtagMatch {
    let Ok(text) = raw.to_str().map(str::trim) else {
        return EtagMatch::Tags(Vec::new());
    };
    if text == "*" {
        return EtagMatch::Any;
    }
    // `#( [ "W/" ] DQUOTE *etagc DQUOTE )`: a comma may sit inside a tag, so read tag
    // after tag rather than split at commas.
    let mut tags = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return EtagMatch::Tags(tags);
        }
        let weak = rest.starts_with("W/");
        let opaque = if weak { &rest[2..] } else { rest };
        let Some(end) = opaque.strip_prefix('"').and_then(|inner| inner.find('"')) else {
            return EtagMatch::Tags(Vec::new());
        };
        let tag_len = usize::from(weak) * 2 + end + 2;
        tags.push(rest[..tag_len].to_string());
        rest = &rest[tag_len..];
        if !(rest.is_empty() || rest.starts_with([' ', '\t', ','])) {
            return EtagMatch::Tags(Vec::new());
        }
    }
}

/// The precondition and session headers of a write. `If-None-Match` is taken on PUT
/// (`*`: create only); `If-Match` on every write.
fn write_options(headers: &HeaderMap, creates: bool) -> Result<WriteOptions, Problem> {
    let if_match = headers.get(header::IF_MATCH).map(entity_tags);
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .filter(|_| creates)
        .map(entity_tags);
    let condition = match (if_match, if_none_match) {
        (Some(tags), Some(none)) => Condition::IfMatchAndNoneMatch(tags, none),
        (Some(tags), None) => Condition::IfMatch(tags),
        (None, Some(EtagMatch::Any)) => Condition::IfAbsent,
        (None, Some(tags)) => Condition::IfNoneMatch(tags),
        (None, None) => Condition::Always,
    };
    let owner = match headers.get(X_SESSION_OWNER) {
        None => OwnerChange::Keep,
        Some(raw) => {
            let text = raw.to_str().map_err(|_| {
                Problem::bad_request(
                    "invalid-owner",
                    "Invalid X-Session-Owner",
                    "X-Session-Owner must be visible ASCII",
                )
            })?;
            if text.len() > MAX_OWNER_BYTES {
                return Err(Problem::bad_request(
                    "invalid-owner",
                    "Invalid X-Session-Owner",
                    format!(
                        "X-Session-Owner is {} bytes; the limit is {MAX_OWNER_BYTES}",
                        text.len()
                    ),
                ));
            }
            if text.is_empty() {
                OwnerChange::Clear
            } else {
                OwnerChange::Set(text.to_string())
            }
        }
    };
    let max_lifetime_secs = headers
        .get(X_MAX_LIFETIME)
        .map(|raw| {
            parse_decimal(raw.as_bytes())
                .filter(|n| (1..=MAX_TTL_SECS).contains(n))
                .ok_or_else(|| {
                    Problem::bad_request(
                        "invalid-lifetime",
                        "Invalid X-Max-Lifetime",
                        format!("X-Max-Lifetime must be whole seconds in decimal digits, from 1 to {MAX_TTL_SECS}"),
                    )
                })
        })
        .transpose()?;
    Ok(WriteOptions {
        condition,
        owner,
        max_lifetime_secs,
        flags: 0,
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

/// Longest `Content-Type` stored with a value.
const MAX_CONTENT_TYPE_BYTES: usize = 1024;

/// The media type to store with a value: the request's `Content-Type` as sent, when it
/// names one concrete media type; `application/octet-stream` when there is none. A
/// media range (`*/*`, `text/*`) describes no value, and returning it on GET would
/// tell clients nothing, so it is refused like a malformed one.
fn value_content_type(headers: &HeaderMap) -> Result<String, Problem> {
    let Some(raw) = headers.get(header::CONTENT_TYPE) else {
        return Ok(DEFAULT_CONTENT_TYPE.to_string());
    };
    let invalid =
        |detail: &str| Problem::bad_request("invalid-content-type", "Invalid Content-Type", detail);
    let text = raw
        .to_str()
        .ok()
        .filter(|ct| !ct.is_empty() && ct.len() <= MAX_CONTENT_TYPE_BYTES)
        .ok_or_else(|| invalid("Content-Type must be visible ASCII, at most 1024 bytes"))?;
    let media_type: mime::Mime = text
        .parse()
        .ok()
        // `mime` takes `text/` as a type with an empty subtype; RFC 9110 does not.
        .filter(|m: &mime::Mime| !m.subtype().as_str().is_empty())
        .ok_or_else(|| {
            invalid(
                "Content-Type must be a media type: type/subtype, optionally followed by \
                 ;name=value parameters",
            )
        })?;
    if media_type.type_() == mime::STAR || media_type.subtype() == mime::STAR {
        return Err(invalid(
            "Content-Type must name the value's media type, not a media range such as \
             */* or text/*",
        ));
    }
    Ok(text.to_string())
}

/// The request-body schemas of PUT in the OpenAPI document (a value is any bytes):
/// text, any JSON document, and raw bytes (an upload in the docs UI).
macro_rules! value_schema {
    ($name:ident, $schema:expr) => {
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $schema.into()
            }
        }

        impl ToSchema for $name {}
    };
}

value_schema!(
    TextValue,
    ObjectBuilder::new().schema_type(Type::String).build()
);
value_schema!(
    JsonValue,
    ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .build()
);
value_schema!(
    BinaryValue,
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
        .build()
);

/// Mark `response` as the answer of a write that created the key at `location`.
fn created(response: &mut Response, location: &str) {
    *response.status_mut() = StatusCode::CREATED;
    if let Ok(loc) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, loc);
    }
}

/// The headers every answer about one key's value carries: its timestamp, its ETag when
/// the answer knows it, and `Cache-Control: no-store`.
fn stamp_headers(headers: &mut HeaderMap, timestamp: u64, etag: Option<String>) {
    let etag = etag.map(Bytes::from);
    // A whole value's ETag is its timestamp in quotes: the timestamp's header shares
    // those bytes instead of taking an allocation of its own.
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(timestamp).as_bytes();
    let shared = etag
        .as_ref()
        .filter(|tag| tag.len() == digits.len() + 2 && &tag[1..=digits.len()] == digits)
        .and_then(|tag| header_value(tag.slice(1..=digits.len())));
    headers.insert(
        X_WRITE_TIMESTAMP,
        shared.unwrap_or_else(|| HeaderValue::from(timestamp)),
    );
    if let Some(etag) = etag.and_then(header_value) {
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
        ("key" = String, Path, min_length = 1, description = KEY_PARAM),
        ("X-Write-Timestamp" = inline(Micros), Header, description = "The write's timestamp: microseconds since the Unix epoch, decimal digits only."),
        ("X-TTL" = Option<u64>, Header, minimum = 1, maximum = 315_360_000, description = "Expire the value this many whole seconds from now (1 to ten years). Without it the value never expires."),
        ("If-Match" = Option<String>, Header, example = "\"1767225600000000\"", description = IF_MATCH_PARAM),
        ("If-None-Match" = Option<String>, Header, example = "*", description = "`*`: create only, 412 when the key has a live value; entity tags: 412 when the stored value's ETag is one of them."),
        ("X-Session-Owner" = Option<String>, Header, max_length = 256, pattern = r#"^[ -~]*$"#, example = "user:7", description = OWNER_PARAM),
        ("X-Max-Lifetime" = Option<u64>, Header, minimum = 1, maximum = 315_360_000, description = LIFETIME_PARAM),
    ),
    request_body(
        description = "The value: any bytes, up to --max-value-bytes. Any concrete media type \
            may be sent (the three below are examples); the request's Content-Type is stored \
            and returned with the value. A media range (`*/*`, `text/*`) or a malformed media \
            type is refused with 400; a value sent without Content-Type is stored as \
            `application/octet-stream`.",
        content(
            (inline(TextValue) = "text/plain", example = json!("user=42; cart=1,2")),
            (inline(JsonValue) = "application/json", example = json!({"user": 42, "cart": [1, 2]})),
            (inline(BinaryValue) = "application/octet-stream"),
        ),
    ),
    responses(
        (status = 201, description = "Created: the key had no live value.", headers(("X-Write-Timestamp" = inline(Micros), description = "The timestamp of the write, µs since the Unix epoch."), ("ETag" = String, description = "`\"<timestamp>\"`: the written value's validator."), ("Location" = String, description = "The key's URL path."), ("Cache-Control" = String, description = "no-store"))),
        (status = 204, description = "Replaced, or the identical write (same timestamp, value and Content-Type) repeated: idempotent. A JSON object written over a document with fields a newer PATCH wrote keeps those fields (merged), and that answer has no ETag.", headers(("X-Write-Timestamp" = inline(Micros), description = "The timestamp of the write, µs since the Unix epoch."), ("ETag" = String, description = "`\"<timestamp>\"`: the written value's validator; absent when the write merged."), ("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed X-Write-Timestamp (empty, not digits, negative, fraction, over u64) or X-TTL; a Content-Type that is a media range (`*/*`, `text/*`), malformed, not visible ASCII or over 1024 bytes; empty key or malformed percent-escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = CONFLICT_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("X-Write-Timestamp" = inline(Micros), description = "The stored timestamp (also in `current_timestamp`)."))),
        (status = 412, description = PRECONDITION_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "Value over --max-value-bytes.", body = Problem, content_type = PROBLEM_JSON),
        (status = 414, description = KEY_TOO_LONG_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = SKEW_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 428, description = TIMESTAMP_MISSING_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = STORAGE_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn put_key(state: AppState, mut request: Request) -> Result<Response, Problem> {
    let key = path_key(request.uri().path())?;
    // The headers are moved out, not copied; reading the body needs only the body and
    // the limit in the extensions.
    let headers = std::mem::take(request.headers_mut());
    let value = Bytes::from_request(request, &state).await;
    let timestamp = write_timestamp(&headers)?;
    let ttl = ttl(&headers)?;
    let options = write_options(&headers, true)?;
    let value = body(value, state.service.policy().max_value_bytes)?;
    let content_type = value_content_type(&headers)?;
    let outcome = state
        .service
        .put(
            key.clone(),
            value.to_vec(),
            content_type,
            timestamp,
            ttl,
            options,
        )
        .await?;
    let mut response = match outcome {
        WriteOutcome::Created => {
            let mut r = StatusCode::NO_CONTENT.into_response();
            created(&mut r, &format!("/keys/{}", encode_segment(&key)));
            r
        }
        WriteOutcome::Replaced | WriteOutcome::Repeated | WriteOutcome::Merged => {
            StatusCode::NO_CONTENT.into_response()
        }
    };
    // A merged write's document is this value with newer fields: its ETag is not the
    // write's (GET tells it).
    let etag = (outcome != WriteOutcome::Merged).then(|| whole_value_etag(timestamp));
    stamp_headers(response.headers_mut(), timestamp, etag);
    Ok(response)
}

/// Read a live value.
#[utoipa::path(
    get,
    path = "/keys/{key}",
    tag = "keys",
    params(
        ("key" = String, Path, min_length = 1, description = KEY_PARAM),
        ("If-None-Match" = Option<String>, Header, example = "\"1767225600000000\"", description = "Entity tags (or `*`): 304 when the stored value's ETag is one of them."),
    ),
    responses(
        (status = 200, description = "The value, with the Content-Type it was stored with.", content_type = "*/*",
            headers(
                ("X-Write-Timestamp" = inline(Micros), description = "The timestamp of the write, µs since the Unix epoch."),
                ("ETag" = String, description = "Strong validator: `\"<newest timestamp>\"`, or `\"<newest timestamp>-<crc32 of its field clocks>\"` for a document with fields newer than its last whole-value write."),
                ("X-Session-Owner" = String, description = "The session's owner; only when it has one."),
                ("X-Lifetime-Ends-At" = inline(Micros), description = "End of the absolute lifetime, µs since the Unix epoch; only when the key has one."),
                ("Cache-Control" = String, description = "no-store"),
                ("X-Expires-At" = inline(Micros), description = "Expiry, µs since the Unix epoch; only when the value expires."),
                ("Expires" = String, description = "Expiry as an HTTP date; only when the value expires."),
            )),
        (status = 304, description = "If-None-Match named the stored value's ETag: unchanged (no body; the headers of 200 without the value's Content-Type)."),
        (status = 400, description = "Empty key or malformed percent-escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "Absent, expired or deleted.", body = Problem, content_type = PROBLEM_JSON),
        (status = 414, description = KEY_TOO_LONG_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = STORAGE_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn get_key(state: AppState, read: KeyRead) -> Result<Response, Problem> {
    let KeyRead { key, if_none_match } = read;
    let Some(entry) = state.service.get(key).await? else {
        return Err(Problem::not_found("no live value for this key"));
    };
    if let Some(tags) = if_none_match
        && tags.names(&entry.etag)
    {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        entry_headers(response.headers_mut(), entry);
        return Ok(response);
    }
    Ok(entry_response(entry))
}

/// The headers `GET` would send, without the value.
#[utoipa::path(
    head,
    path = "/keys/{key}",
    tag = "keys",
    params(
        ("key" = String, Path, min_length = 1, description = KEY_PARAM),
        ("If-None-Match" = Option<String>, Header, example = "\"1767225600000000\"", description = "Entity tags (or `*`): 304 when the stored value's ETag is one of them."),
    ),
    responses(
        (status = 200, description = "The key has a live value; the headers are those of GET, including Content-Type and Content-Length.",
            headers(
                ("X-Write-Timestamp" = inline(Micros), description = "The timestamp of the write, µs since the Unix epoch."),
                ("ETag" = String, description = "Strong validator: `\"<newest timestamp>\"`, or `\"<newest timestamp>-<crc32 of its field clocks>\"` for a document with fields newer than its last whole-value write."),
                ("X-Session-Owner" = String, description = "The session's owner; only when it has one."),
                ("X-Lifetime-Ends-At" = inline(Micros), description = "End of the absolute lifetime, µs since the Unix epoch; only when the key has one."),
                ("Cache-Control" = String, description = "no-store"),
                ("X-Expires-At" = inline(Micros), description = "Expiry, µs since the Unix epoch; only when the value expires."),
                ("Expires" = String, description = "Expiry as an HTTP date; only when the value expires."),
            )),
        (status = 304, description = "If-None-Match named the stored value's ETag: unchanged."),
        (status = 400, description = "Empty key or malformed percent-escape (no body)."),
        (status = 404, description = "Absent, expired or deleted (no body)."),
        (status = 414, description = "Key over --max-key-bytes (no body)."),
        (status = 503, description = "The store could not answer (no body); see GET.", headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn head_key(state: AppState, read: KeyRead) -> Result<Response, Problem> {
    // The body is dropped on the way out, keeping its Content-Length (`KeyRoute`).
    get_key(state, read).await
}

/// What a GET or HEAD of one key asks.
pub struct KeyRead {
    key: Vec<u8>,
    /// `If-None-Match`, the one header a read looks at.
    if_none_match: Option<EtagMatch>,
}

impl KeyRead {
    fn parse(request: &Request) -> Result<Self, Problem> {
        Ok(KeyRead {
            key: path_key(request.uri().path())?,
            if_none_match: request
                .headers()
                .get(header::IF_NONE_MATCH)
                .map(entity_tags),
        })
    }
}

/// The methods of `/keys/{key}`, as one service: the route nearly every request of a
/// session store takes, called by axum's router and, without it, by
/// [`HttpApp`](super::HttpApp).
///
/// Written out rather than built from axum handlers: a method router clones a boxed
/// service and boxes a future at each of its levels per request, and its extractors
/// add their own (`bench/callgrind.sh`). A request here costs one boxed future. A
/// method it does not serve is answered 405 with `Allow`, as axum's method router
/// answers; whoever calls it sets `Content-Length` and drops a HEAD answer's body
/// (axum's router does, and so does `HttpApp`).
#[derive(Clone)]
pub struct KeyRoute {
    state: AppState,
}

/// The `Allow` header of a 405 from [`KeyRoute`], in axum's form.
const KEY_METHODS: &str = "GET,HEAD,PUT,PATCH,DELETE";

/// What a call of [`KeyRoute`] returns.
pub type KeyFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl KeyRoute {
    pub fn new(state: AppState) -> Self {
        KeyRoute { state }
    }
}

impl Service<Request> for KeyRoute {
    type Response = Response;
    type Error = Infallible;
    type Future = KeyFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> KeyFuture {
        let state = self.state.clone();
        // Each method's future is boxed on its own, so that a GET does not build and
        // copy a box as large as a PUT's future.
        match *request.method() {
            Method::GET => parsed(KeyRead::parse(&request), |read| get_key(state, read)),
            Method::HEAD => parsed(KeyRead::parse(&request), |read| head_key(state, read)),
            // A write's body arrives after its head, so hyper's buffer is not free
            // again until the body is read: these take the whole request.
            Method::PUT => handled(put_key(state, request)),
            Method::PATCH => handled(patch_key(state, request)),
            Method::DELETE => parsed(KeyDelete::parse(&request), |delete| {
                delete_key(state, delete)
            }),
            _ => {
                let mut response =
                    Problem::method_not_allowed(request.method(), request.uri().path())
                        .into_response();
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(KEY_METHODS));
                answered(response)
            }
        }
    }
}

/// The future of a request whose head has been read into `parsed`: its handler's,
/// or the problem with the head.
///
/// The request's head is dropped before this returns to hyper: its header values are
/// slices of hyper's read buffer, which hyper reuses for the next request only if
/// nothing else holds it, and hyper reads ahead while a request is being answered
/// (it allocated a new 8 KiB buffer for nearly every GET).
fn parsed<T, F>(parsed: Result<T, Problem>, handler: impl FnOnce(T) -> F) -> KeyFuture
where
    F: Future<Output = Result<Response, Problem>> + Send + 'static,
{
    match parsed {
        Ok(parsed) => handled(handler(parsed)),
        Err(problem) => answered(problem.into_response()),
    }
}

/// The future of a request answered by `handler`.
fn handled(handler: impl Future<Output = Result<Response, Problem>> + Send + 'static) -> KeyFuture {
    // Mapped in place: an async block awaiting the handler would hold it twice.
    Box::pin(handler.map(|answer| Ok(answer.into_response())))
}

/// The future of a request answered without a handler.
fn answered(response: Response) -> KeyFuture {
    Box::pin(std::future::ready(Ok(response)))
}

/// `/keys/` and `/keys//touch`: the path names the empty key, which HTTP cannot store.
pub async fn empty_key() -> Problem {
    Problem::bad_request("invalid-key", "Invalid key", "the key is empty")
}

fn entry_response(mut entry: Entry) -> Response {
    let content_type = header_value(std::mem::take(&mut entry.content_type))
        .unwrap_or_else(|| HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
    // Not `(StatusCode::OK, bytes).into_response()`, which would insert a
    // Content-Type only to have it replaced.
    let mut response = Response::new(Body::from(std::mem::take(&mut entry.value)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    entry_headers(headers, entry);
    response
}

/// `text` as a header value without copying it (a `HeaderValue` from `&str` copies
/// into a new allocation); `None` if it is not a valid one.
fn header_value(text: impl Into<Bytes>) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(text.into()).ok()
}

/// The headers describing a live value (GET, HEAD and 304 answers).
fn entry_headers(headers: &mut HeaderMap, entry: Entry) {
    stamp_headers(headers, entry.timestamp, Some(entry.etag));
    if let Some(at) = entry.expires_at {
        headers.insert(X_EXPIRES_AT, HeaderValue::from(at));
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_micros(at);
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(when)) {
            headers.insert(header::EXPIRES, v);
        }
    }
    if let Some(owner) = entry.owner.and_then(header_value) {
        headers.insert(X_SESSION_OWNER, owner);
    }
    if let Some(at) = entry.lifetime_ends {
        headers.insert(X_LIFETIME_ENDS_AT, HeaderValue::from(at));
    }
}

/// Delete a key by leaving a tombstone with the delete's timestamp.
#[utoipa::path(
    delete,
    path = "/keys/{key}",
    tag = "keys",
    params(
        ("key" = String, Path, min_length = 1, description = KEY_PARAM),
        ("X-Write-Timestamp" = inline(Micros), Header, description = "The delete's timestamp: microseconds since the Unix epoch, decimal digits only."),
        ("If-Match" = Option<String>, Header, example = "\"1767225600000000\"", description = IF_MATCH_PARAM),
    ),
    responses(
        (status = 204, description = "Deleted (also for a key that never existed: the tombstone is written anyway, so an older write cannot create the key), or the same delete repeated. Fields a newer PATCH wrote survive it: the key then stays readable with just those.", headers(("X-Write-Timestamp" = inline(Micros), description = "The timestamp of the write, µs since the Unix epoch."), ("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed X-Write-Timestamp; empty key or malformed percent-escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = CONFLICT_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("X-Write-Timestamp" = inline(Micros), description = "The stored timestamp (also in `current_timestamp`)."))),
        (status = 412, description = PRECONDITION_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 414, description = KEY_TOO_LONG_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = SKEW_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 428, description = TIMESTAMP_MISSING_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = STORAGE_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn delete_key(state: AppState, delete: KeyDelete) -> Result<Response, Problem> {
    let KeyDelete {
        key,
        timestamp,
        options,
    } = delete;
    state.service.delete(key, timestamp, options).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    stamp_headers(response.headers_mut(), timestamp, None);
    Ok(response)
}

/// What a DELETE of one key asks.
pub struct KeyDelete {
    key: Vec<u8>,
    timestamp: u64,
    options: WriteOptions,
}

impl KeyDelete {
    fn parse(request: &Request) -> Result<Self, Problem> {
        let key = path_key(request.uri().path())?;
        let headers = request.headers();
        Ok(KeyDelete {
            key,
            timestamp: write_timestamp(headers)?,
            options: write_options(headers, false)?,
        })
    }
}

/// The media type of a PATCH body (RFC 7396).
pub const MERGE_PATCH_JSON: &str = "application/merge-patch+json";

/// What a PATCH did, field by field.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatchAnswer {
    /// Fields written (or, for `null` members, removed) by this patch.
    pub applied: Vec<String>,
    /// Fields already holding exactly this at the same timestamp (a repeat).
    pub unchanged: Vec<String>,
    /// Fields a newer write (or a tie) kept from changing.
    pub refused: Vec<RefusedField>,
    /// The document's newest timestamp afterwards.
    #[schema(schema_with = crate::service::jsonl::micros_schema)]
    pub timestamp: u64,
}

impl From<PatchReport> for PatchAnswer {
    fn from(report: PatchReport) -> Self {
        Self {
            applied: report.applied,
            unchanged: report.unchanged,
            refused: RefusedField::list(report.refused),
            timestamp: report.timestamp,
        }
    }
}

value_schema!(
    MergePatch,
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .min_properties(Some(1))
        .build()
);

/// Field-level write: each top-level member sets its field, `null` removes it.
#[utoipa::path(
    patch,
    path = "/keys/{key}",
    tag = "keys",
    params(
        ("key" = String, Path, min_length = 1, description = KEY_PARAM),
        ("X-Write-Timestamp" = inline(Micros), Header, description = "The patch's timestamp: microseconds since the Unix epoch, decimal digits only. Each field is judged against its own timestamp."),
        ("X-TTL" = Option<u64>, Header, minimum = 1, maximum = 315_360_000, description = "Set the expiry to this many whole seconds from now (never past the absolute lifetime). Without it the expiry stays as it was (a created document never expires)."),
        ("If-Match" = Option<String>, Header, example = "\"1767225600000000\"", description = IF_MATCH_PARAM),
        ("X-Session-Owner" = Option<String>, Header, max_length = 256, pattern = r#"^[ -~]*$"#, example = "user:7", description = OWNER_PARAM),
        ("X-Max-Lifetime" = Option<u64>, Header, minimum = 1, maximum = 315_360_000, description = LIFETIME_PARAM),
    ),
    request_body(
        description = "A JSON object (RFC 7396 merge patch, top level only): each member sets that field of the stored JSON-object document, `null` removes it. Nested objects are stored whole as the field's value.",
        content((inline(MergePatch) = "application/merge-patch+json", example = json!({"cart": [1, 2, 3], "flash": null}))),
    ),
    responses(
        (status = 200, description = "At least one field applied or was an identical repeat; the others are listed as refused.", body = PatchAnswer, headers(("X-Write-Timestamp" = inline(Micros), description = "The document's newest timestamp."), ("ETag" = String, description = "The document's ETag afterwards."), ("Cache-Control" = String, description = "no-store"))),
        (status = 201, description = "The document was created (the key had no live value).", body = PatchAnswer, headers(("X-Write-Timestamp" = inline(Micros), description = "The document's newest timestamp."), ("ETag" = String, description = "The document's ETag."), ("Location" = String, description = "The key's URL path."), ("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed X-Write-Timestamp, X-TTL, X-Max-Lifetime or X-Session-Owner; a body that is not JSON; empty key or malformed percent-escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 409, description = "Every field was refused (`stale-write`): `refused` lists each with the timestamp that refused it. Nothing changed.", body = Problem, content_type = PROBLEM_JSON),
        (status = 412, description = "If-Match did not match (`precondition-failed`, with the current ETag); nothing changed.", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body, or the merged document, is over --max-value-bytes.", body = Problem, content_type = PROBLEM_JSON),
        (status = 414, description = KEY_TOO_LONG_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "Content-Type is not application/merge-patch+json.", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "The stored value is not a JSON object, the body is not a JSON object or names no field (`not-an-object`), or the timestamp is too far ahead (`future-timestamp`).", body = Problem, content_type = PROBLEM_JSON),
        (status = 428, description = TIMESTAMP_MISSING_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = STORAGE_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn patch_key(state: AppState, mut request: Request) -> Result<Response, Problem> {
    let key = path_key(request.uri().path())?;
    let headers = std::mem::take(request.headers_mut());
    let body_bytes = Bytes::from_request(request, &state).await;
    let timestamp = write_timestamp(&headers)?;
    let ttl = ttl(&headers)?;
    let options = write_options(&headers, false)?;
    let is_merge_patch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|ct| ct.to_str().ok())
        .and_then(|ct| ct.parse::<mime::Mime>().ok())
        .is_some_and(|m| m.essence_str().eq_ignore_ascii_case(MERGE_PATCH_JSON));
    if !is_merge_patch {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            format!("a PATCH body must be sent as Content-Type: {MERGE_PATCH_JSON}"),
        ));
    }
    let bytes = body(body_bytes, state.service.policy().max_value_bytes)?;
    let members = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(members)) => members,
        Ok(_) => {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not-an-object",
                "Not a JSON object",
                "a merge patch must be a JSON object whose members name top-level fields",
            ));
        }
        Err(e) => {
            return Err(Problem::bad_request(
                "invalid-json",
                "Invalid JSON",
                format!("the body is not JSON: {e}"),
            ));
        }
    };
    let location = format!("/keys/{}", encode_segment(&key));
    let report = state
        .service
        .patch(key, members, timestamp, ttl, options)
        .await?;
    let was_created = report.created;
    let etag = report.etag.clone();
    let newest = report.timestamp;
    let mut response = Json(PatchAnswer::from(report)).into_response();
    if was_created {
        created(&mut response, &location);
    }
    stamp_headers(response.headers_mut(), newest, etag);
    Ok(response)
}

/// The expiry after a touch.
#[derive(Debug, Serialize, ToSchema)]
pub struct Touched {
    /// Expiry in µs since the Unix epoch; null when the value never expires.
    #[schema(required = true, schema_with = crate::service::jsonl::optional_micros_schema)]
    pub expires_at: Option<u64>,
}

/// Extend a live value's expiry to now + X-TTL (never shortens it).
#[utoipa::path(
    post,
    path = "/keys/{key}/touch",
    tag = "keys",
    params(
        ("key" = String, Path, min_length = 1, description = KEY_PARAM),
        ("X-TTL" = u64, Header, minimum = 1, maximum = 315_360_000, description = "The new lifetime: whole seconds from now (1 to ten years)."),
    ),
    responses(
        (status = 200, description = "The expiry now in force (unchanged if it was already later, or if the value never expires). Value and timestamp are never changed.", body = Touched, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "X-TTL missing or malformed; empty key or malformed percent-escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 404, description = "Absent, expired or deleted: touch never revives.", body = Problem, content_type = PROBLEM_JSON),
        (status = 414, description = KEY_TOO_LONG_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = STORAGE_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn touch_key(
    State(state): State<AppState>,
    Key(key): Key,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let Some(ttl) = ttl(&headers)? else {
        return Err(Problem::bad_request(
            "invalid-ttl",
            "X-TTL required",
            "touch needs X-TTL: the new lifetime in seconds",
        ));
    };
    let expires_at = state.service.touch(key, ttl).await?;
    Ok(no_store(Json(Touched { expires_at })))
}

/// Query of `GET /keys`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only keys starting with this: a key prefix written like listed keys, as a
    /// percent-encoded segment (`session%3A`, `a%2F`, `%FF`: every `%` starts a `%XX`
    /// escape with two hex digits; other characters stand for their UTF-8 bytes), then
    /// query-encoded as usual (`%` itself is sent as `%25`).
    #[param(pattern = r"^([^%]|%[0-9A-Fa-f]{2})*$", example = "session%3A")]
    pub prefix: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page, unchanged: a key in the same
    /// percent-encoded form as `prefix` (the page starts after it), query-encoded as usual.
    #[param(pattern = r"^([^%]|%[0-9A-Fa-f]{2})*$", example = "session%3A42")]
    pub cursor: Option<String>,
}

/// A page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyPage {
    /// Live keys in byte order, each as a percent-encoded path segment
    /// (usable as-is in `/keys/{key}`).
    pub keys: Vec<String>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
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
        (status = 200, description = "One page of keys.", body = KeyPage, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Invalid query: a limit that is not a whole number from 1 to 1000, or a prefix or cursor with a malformed percent-escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = STORAGE_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    let Query(query) = query_or_400(query)?;
    let limit = page_limit(query.limit)?;
    // Query values arrive already form-decoded as text; keys are raw bytes, so the
    // prefix and cursor use the same percent-encoding as listed keys.
    let prefix = match query.prefix.as_deref() {
        None => Vec::new(),
        Some(p) => decode_query_bytes("prefix", p)?,
    };
    let after = query
        .cursor
        .as_deref()
        .map(|c| decode_query_bytes("cursor", c))
        .transpose()?;
    let page = state.service.list(prefix, after, limit).await?;
    Ok(no_store(Json(KeyPage {
        keys: page.keys.iter().map(|k| encode_segment(k)).collect(),
        next_cursor: page.next_after.map(|k| encode_segment(&k)),
    })))
}

/// A query string, or the 400 that says what is wrong with it.
pub fn query_or_400<T>(
    query: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<Query<T>, Problem> {
    query.map_err(|e| Problem::bad_request("invalid-query", "Invalid query", e.body_text()))
}

/// A page size: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when absent.
pub fn page_limit(limit: Option<usize>) -> Result<usize, Problem> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Problem::bad_request(
            "invalid-query",
            "Invalid limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    Ok(limit)
}

/// A cursor or key in a query, percent-encoded as in list answers.
pub fn decode_cursor(text: &str) -> Result<Vec<u8>, Problem> {
    decode_query_bytes("cursor", text)
}

fn decode_query_bytes(name: &str, text: &str) -> Result<Vec<u8>, Problem> {
    // `Query` has already undone one level of form encoding; what remains is either
    // plain text or a percent-encoded segment as listed by this endpoint. As in paths,
    // a malformed escape is refused rather than read as some other key.
    if !escapes_are_well_formed(text) {
        return Err(Problem::bad_request(
            "invalid-query",
            "Invalid query",
            format!("{name} has a malformed percent-escape (use %XX with two hex digits)"),
        ));
    }
    Ok(percent_decode_str(text).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_timestamp_header_reads_the_same_whether_or_not_it_shares_the_etags_bytes() {
        let stamped = |timestamp: u64, etag: Option<&str>| {
            let mut headers = HeaderMap::new();
            stamp_headers(&mut headers, timestamp, etag.map(str::to_owned));
            let get = |name: &axum::http::HeaderName| {
                headers.get(name).map(|v| v.to_str().unwrap().to_owned())
            };
            (get(&X_WRITE_TIMESTAMP), get(&header::ETAG))
        };
        let ts = 1_767_225_600_000_001;
        let whole = whole_value_etag(ts);
        for (etag, want_etag) in [
            // Shared: the ETag of a whole value.
            (Some(whole.as_str()), Some(whole.clone())),
            // Not shared: a document's ETag, another timestamp's, none, odd ones.
            (
                Some("\"1767225600000001-1a2b3c4d\""),
                Some("\"1767225600000001-1a2b3c4d\"".into()),
            ),
            (
                Some("\"1767225600000002\""),
                Some("\"1767225600000002\"".into()),
            ),
            (Some("\"\""), Some("\"\"".into())),
            (Some(""), Some(String::new())),
            (None, None),
        ] {
            assert_eq!(
                stamped(ts, etag),
                (Some(ts.to_string()), want_etag),
                "{etag:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn any_key_survives_encoding_and_decoding_as_a_segment(key in proptest::collection::vec(any::<u8>(), 1..64)) {
            prop_assert_eq!(decode_segment(&encode_segment(&key)).ok(), Some(key));
        }

        #[test]
        fn a_segment_without_escapes_is_its_own_bytes(segment in "[a-zA-Z0-9:._~-]{1,40}") {
            prop_assert_eq!(decode_segment(&segment).ok(), Some(segment.into_bytes()));
        }
    }

    #[test]
    fn malformed_escapes_and_the_empty_key_are_refused() {
        for bad in ["%zz", "a%4", "abc%", "%G0", ""] {
            assert!(decode_segment(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode_segment("a%2Fb").ok(), Some(b"a/b".to_vec()));
    }
}
