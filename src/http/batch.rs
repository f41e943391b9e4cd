//! `POST /batch/get`: many records in one consistent read.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::Response;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{Array, ArrayBuilder, ObjectBuilder, Type};

use super::headers::no_store;
use super::keys::{MAX_PAGE, decode_segment, encode_segment};
use super::problem::{PROBLEM_JSON, Problem};
use super::state::AppState;

/// The keys to read.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchGet {
    /// 1 to 1000 keys, each a percent-encoded path segment as in list answers
    /// (duplicates allowed: each gets its own answer).
    #[schema(schema_with = keys_schema)]
    pub keys: Vec<String>,
}

/// 1 to 1000 non-empty keys, each a percent-encoded segment (every `%` starts `%XX`).
fn keys_schema() -> Array {
    ArrayBuilder::new()
        .items(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .pattern(Some(r"^([^%]|%[0-9A-Fa-f]{2})+$")),
        )
        .min_items(Some(1))
        .max_items(Some(MAX_PAGE))
        .examples([serde_json::json!(["session%3A1", "session%3A2"])])
        .build()
}

/// How a value is written in a batch answer.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// The value is valid UTF-8 and is given as that text.
    Utf8,
    /// The value's bytes in standard base64 (with padding).
    Base64,
}

/// One key's record.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchRecord {
    /// The key as asked.
    pub key: String,
    /// Whether the key has a live value; when false every other field is null.
    pub found: bool,
    #[schema(required = true, schema_with = crate::service::jsonl::optional_micros_schema)]
    pub timestamp: Option<u64>,
    #[schema(required = true)]
    pub content_type: Option<String>,
    #[schema(required = true, schema_with = crate::service::jsonl::optional_micros_schema)]
    pub expires_at: Option<u64>,
    /// The value: UTF-8 text, or base64 (see `encoding`).
    #[schema(required = true)]
    pub value: Option<String>,
    #[schema(required = true)]
    pub encoding: Option<ValueEncoding>,
    /// The value's ETag.
    #[schema(required = true)]
    pub etag: Option<String>,
}

/// The records, in the order asked.
#[derive(Debug, Serialize, ToSchema)]
pub struct BatchAnswer {
    pub records: Vec<BatchRecord>,
}

/// Read many keys at once, from one consistent snapshot.
#[utoipa::path(
    post,
    path = "/batch/get",
    tag = "keys",
    request_body(content = BatchGet, content_type = "application/json"),
    responses(
        (status = 200, description = "One record per key asked, in order, all as of the same instant (no write lands between two of them).", body = BatchAnswer, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Not a JSON object with `keys`: 1 to 1000 percent-encoded keys, none empty or with a malformed escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 413, description = "The body is over --max-value-bytes.", body = Problem, content_type = PROBLEM_JSON),
        (status = 414, description = "A key over --max-key-bytes.", body = Problem, content_type = PROBLEM_JSON),
        (status = 415, description = "Content-Type is not application/json.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The store could not answer; see GET /keys/{key}.", body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn batch_get(
    State(state): State<AppState>,
    request: Result<Json<BatchGet>, JsonRejection>,
) -> Result<Response, Problem> {
    let Json(request) = request.map_err(|e| {
        // A body that is not the documented object is a 400 whatever axum calls it
        // (it answers 422 for valid JSON of another shape); a wrong media type stays 415
        // and an oversized body 413.
        let (status, kind) = match e.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (e.status(), "unsupported-media-type"),
            StatusCode::PAYLOAD_TOO_LARGE => (e.status(), "value-too-large"),
            _ => (StatusCode::BAD_REQUEST, "invalid-body"),
        };
        Problem::new(status, kind, "Invalid batch request", e.body_text())
    })?;
    if !(1..=MAX_PAGE).contains(&request.keys.len()) {
        return Err(Problem::bad_request(
            "invalid-body",
            "Invalid batch request",
            format!("keys must name 1 to {MAX_PAGE} keys"),
        ));
    }
    let keys = request
        .keys
        .iter()
        .map(|k| decode_segment(k))
        .collect::<Result<Vec<_>, _>>()?;
    let entries = state.service.batch_get(keys.clone()).await?;
    let records = keys
        .iter()
        .zip(entries)
        .map(|(key, entry)| match entry {
            None => BatchRecord {
                key: encode_segment(key),
                found: false,
                timestamp: None,
                content_type: None,
                expires_at: None,
                value: None,
                encoding: None,
                etag: None,
            },
            Some(entry) => {
                let (value, encoding) = match String::from_utf8(entry.value.into()) {
                    Ok(text) => (text, ValueEncoding::Utf8),
                    Err(bytes) => (
                        base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes()),
                        ValueEncoding::Base64,
                    ),
                };
                BatchRecord {
                    key: encode_segment(key),
                    found: true,
                    timestamp: Some(entry.timestamp),
                    content_type: Some(entry.content_type),
                    expires_at: entry.expires_at,
                    value: Some(value),
                    encoding: Some(encoding),
                    etag: Some(entry.etag),
                }
            }
        })
        .collect();
    Ok(no_store(Json(BatchAnswer { records })))
}
