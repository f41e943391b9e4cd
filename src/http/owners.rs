//! `/owners/{owner}/sessions`: every session of one user, and logging them out.

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::headers::no_store;
use super::keys::{self, decode_cursor, encode_segment, page_limit, query_or_400};
use super::problem::{PROBLEM_JSON, Problem};
use super::state::AppState;
use crate::service::jsonl::Micros;

const OWNER_PARAM: &str = "The owner id as sent in X-Session-Owner, percent-encoded as one \
    path segment (at most 256 bytes once decoded).";

/// Query of `GET /owners/{owner}/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OwnerQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `next_cursor` from the previous page, unchanged.
    #[param(pattern = r"^([^%]|%[0-9A-Fa-f]{2})*$", example = "session%3A42")]
    pub cursor: Option<String>,
}

/// One live session of the owner.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnedSession {
    /// The key, as a percent-encoded path segment (usable as-is in `/keys/{key}`).
    pub key: String,
    /// The session's newest write timestamp.
    #[schema(schema_with = crate::service::jsonl::micros_schema)]
    pub timestamp: u64,
    /// Expiry in µs since the Unix epoch; null when it never expires.
    #[schema(required = true, schema_with = crate::service::jsonl::optional_micros_schema)]
    pub expires_at: Option<u64>,
    /// Server time the session was created; null for records written before tidemark kept it.
    #[schema(required = true, schema_with = crate::service::jsonl::optional_micros_schema)]
    pub created_at: Option<u64>,
}

/// A page of an owner's sessions.
#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerSessions {
    /// Live sessions in key byte order.
    pub sessions: Vec<OwnedSession>,
    /// Pass as `cursor` to get the next page; null on the last page.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

fn owner(path: Result<Path<String>, PathRejection>) -> Result<String, Problem> {
    let Path(owner) = path.map_err(|e| {
        Problem::bad_request(
            "invalid-owner",
            "Invalid owner",
            format!(
                "the owner must be UTF-8 text, percent-encoded as one path segment: {}",
                e.body_text()
            ),
        )
    })?;
    if owner.is_empty() {
        return Err(Problem::bad_request(
            "invalid-owner",
            "Invalid owner",
            "the owner is empty",
        ));
    }
    Ok(owner)
}

/// List an owner's live sessions, paginated.
#[utoipa::path(
    get,
    path = "/owners/{owner}/sessions",
    tag = "owners",
    params(("owner" = String, Path, min_length = 1, description = OWNER_PARAM), OwnerQuery),
    responses(
        (status = 200, description = "One page of the owner's live sessions (expired and deleted ones left out).", body = OwnerSessions, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "An owner over 256 bytes or not UTF-8; a limit that is not a whole number from 1 to 1000, or a cursor with a malformed percent-escape.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The store could not answer; see GET /keys/{key}.", body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn list_sessions(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<OwnerQuery>, QueryRejection>,
) -> Result<Response, Problem> {
    let owner = owner(path)?;
    let Query(query) = query_or_400(query)?;
    let limit = page_limit(query.limit)?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let page = state.service.owner_sessions(&owner, after, limit).await?;
    Ok(no_store(Json(OwnerSessions {
        sessions: page
            .sessions
            .into_iter()
            .map(|s| OwnedSession {
                key: encode_segment(&s.key),
                timestamp: s.timestamp,
                expires_at: s.expires_at,
                created_at: s.created_at,
            })
            .collect(),
        next_cursor: page.next_after.map(|k| encode_segment(&k)),
    })))
}

/// Query of `DELETE /owners/{owner}/sessions`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RevokeQuery {
    /// A key to leave alone ("log out everywhere else"), percent-encoded as in list answers.
    #[param(pattern = r"^([^%]|%[0-9A-Fa-f]{2})*$", example = "session%3A42")]
    pub keep: Option<String>,
}

/// A session the revocation left in place.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeptSession {
    pub key: String,
    /// Its newest timestamp: after the revocation's, or the kept key's own.
    #[schema(schema_with = crate::service::jsonl::micros_schema)]
    pub timestamp: u64,
}

/// What revoking did.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeAnswer {
    /// Sessions deleted.
    pub revoked: usize,
    /// Sessions left: written after X-Write-Timestamp, or named by `keep`.
    pub kept: Vec<KeptSession>,
}

/// Log an owner out everywhere: a guarded delete of each of their live sessions.
#[utoipa::path(
    delete,
    path = "/owners/{owner}/sessions",
    tag = "owners",
    params(
        ("owner" = String, Path, min_length = 1, description = OWNER_PARAM),
        ("X-Write-Timestamp" = inline(Micros), Header, description = "The revocation's timestamp: each session is deleted as by DELETE /keys/{key} at this timestamp, so a session (or a field) written after it survives."),
        RevokeQuery,
    ),
    responses(
        (status = 200, description = "Done: how many sessions were deleted, and which stayed with their timestamps.", body = RevokeAnswer, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "Malformed X-Write-Timestamp, owner or keep.", body = Problem, content_type = PROBLEM_JSON),
        (status = 422, description = "Timestamp further ahead of the server clock than --max-future-skew.", body = Problem, content_type = PROBLEM_JSON),
        (status = 428, description = "X-Write-Timestamp missing.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The store could not complete the request; sessions revoked before the failure stay revoked, and sending the request again with the same X-Write-Timestamp is safe.", body = Problem, content_type = PROBLEM_JSON, headers(("Retry-After" = u32, description = "Seconds to wait before retrying; sent with `database-unavailable`."))),
    )
)]
pub async fn revoke_sessions(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<RevokeQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    let owner = owner(path)?;
    let timestamp = keys::write_timestamp(&headers)?;
    let Query(query) = query_or_400(query)?;
    let keep = query.keep.as_deref().map(decode_cursor).transpose()?;
    let revoked = state.service.revoke_owner(&owner, timestamp, keep).await?;
    Ok(no_store(Json(RevokeAnswer {
        revoked: revoked.revoked,
        kept: revoked
            .kept
            .into_iter()
            .map(|(key, timestamp)| KeptSession {
                key: encode_segment(&key),
                timestamp,
            })
            .collect(),
    })))
}
