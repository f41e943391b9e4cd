//! `/admin` handlers: backup, export and import while the server runs. They move
//! whole stores, so they stream, and [`routes`] declares them [`Access::Admin`]: the
//! bearer token applies, the request timeout does not.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper::body::Body as _;
use tokio_util::io::ReaderStream;

use super::headers::{X_RECORD_COUNT, no_store};
use super::problem::{PROBLEM_JSON, Problem};
use super::routes::{Access, Routes};
use super::state::AppState;
use crate::service::ServiceError;
use crate::service::jsonl::{
    ExportLine, ExportReader, ImportFailed, ImportReport, Importer, JSONL_MEDIA_TYPE,
};
use crate::store::StoreError;

/// An import whose body stalls this long is ended (the lines before stay applied).
const IMPORT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read from the snapshot file per body chunk.
const BACKUP_CHUNK: usize = 64 * 1024;
/// Records the export scan may run ahead of the client.
const EXPORT_QUEUE: usize = 1024;

const UNAUTHORIZED_DESCRIPTION: &str =
    "A bearer token is configured and the request did not carry it.";

/// The `/admin` routes.
pub fn routes() -> Routes {
    Routes::new()
        .route("/admin/backup", Access::Admin, get(backup))
        .route("/admin/export", Access::Admin, get(export))
        // The body is streamed line by line with each line bounded, so no overall limit.
        .route(
            "/admin/import",
            Access::Admin,
            post(import).layer(DefaultBodyLimit::disable()),
        )
        .map(|admin| admin.method_not_allowed_fallback(super::wrong_method))
}

/// A consistent snapshot of the whole store as a database file.
///
/// The snapshot is read from one read transaction while writes go on, and keeps every
/// record's timestamp and every tombstone. It is written to a temporary file in the
/// data directory (so the disk needs room for a second copy) and streamed back; the
/// file is unlinked before streaming, so nothing is left behind. Put it in place with
/// `tidemark restore`.
#[utoipa::path(get, path = "/admin/backup", tag = "admin",
    responses(
        (status = 200, description = "The snapshot: a tidemark database file.",
            content_type = "application/octet-stream", body = String,
            headers(
                ("Content-Length" = u64, description = "Size of the file in bytes."),
                ("X-Record-Count" = u64, description = "Records in the snapshot, tombstones included."),
            )),
        (status = 401, description = UNAUTHORIZED_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 501, description = "The server stores in a shared database (PostgreSQL engine), which has no database file to copy.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The snapshot could not be written (e.g. no space in the data directory).", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn backup(State(state): State<AppState>) -> Result<Response, Problem> {
    let snapshot = state.service.snapshot().await.map_err(|e| match e {
        ServiceError::Store(StoreError::Unsupported(_)) => Problem::new(
            StatusCode::NOT_IMPLEMENTED,
            "backup-unsupported",
            "No backup file on a shared database",
            "this server stores in a shared database, which has no database file to copy; \
             back the database up with its own tools, or move records with GET /admin/export",
        ),
        e => {
            tracing::error!(error = %e, "backup snapshot failed");
            backup_failed()
        }
    })?;
    let records = snapshot.records;
    let file = tokio::fs::File::from_std(snapshot.file);
    let length = file.metadata().await.map(|m| m.len()).map_err(|e| {
        tracing::error!(error = %e, "cannot read the backup snapshot's size");
        backup_failed()
    })?;
    tracing::info!(records, bytes = length, "backup snapshot streaming");
    let body = Body::from_stream(ReaderStream::with_capacity(file, BACKUP_CHUNK));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"tidemark.redb\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(X_RECORD_COUNT, HeaderValue::from(records));
    Ok(response)
}

fn backup_failed() -> Problem {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backup-failed",
        "Backup failed",
        "the snapshot could not be written to the data directory (is there room for a \
         second copy of the database?); details are in the server log",
    )
}

/// Every record — tombstones and expired values included — as JSON lines, in key order.
///
/// The records come from one read transaction, so the export is a consistent snapshot
/// while writes go on. One line per record:
/// `{"key": <base64>, "timestamp": u64, "tombstone": bool, "value": <base64>|null,
/// "content_type": str|null, "expires_at": u64|null, "deleted_at": u64|null}`
/// (see the `ExportLine` schema). If the store fails midway the connection is cut
/// instead of ending the stream normally, so a truncated export is never mistaken
/// for a complete one.
#[utoipa::path(get, path = "/admin/export", tag = "admin",
    responses(
        (status = 200, description = "One `ExportLine` JSON object per line.",
            content_type = "application/x-ndjson", body = ExportLine),
        (status = 401, description = UNAUTHORIZED_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn export(State(state): State<AppState>) -> Response {
    let reader = ExportReader::new(state.service.export(EXPORT_QUEUE));
    let mut response =
        Body::from_stream(ReaderStream::with_capacity(reader, BACKUP_CHUNK)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSONL_MEDIA_TYPE),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Apply exported records through the timestamp guard.
///
/// The body is JSON lines, as `GET /admin/export` writes them. Each record applies only when it is newer than what the store holds for its key, so
/// importing an old export never overwrites newer sessions; applied records keep their
/// timestamp, expiry and delete time. The body is streamed: it has no overall size
/// limit, but each line is bounded (about twice the value and key limits). A line
/// that is not a valid record is counted as invalid and listed with its line number;
/// the rest of the body is still imported. Importing the same input twice is safe.
#[utoipa::path(post, path = "/admin/import", tag = "admin",
    request_body(content = ExportLine, content_type = "application/x-ndjson",
        description = "One `ExportLine` JSON object per line; blank lines are skipped."),
    responses(
        (status = 200, description = "What the import did, with the first invalid lines.", body = ImportReport, headers(("Cache-Control" = String, description = "no-store"))),
        (status = 400, description = "The body is empty (`empty-body`: nothing to import), or it could not be read to its end (earlier lines were applied).", body = Problem, content_type = PROBLEM_JSON),
        (status = 401, description = UNAUTHORIZED_DESCRIPTION, body = Problem, content_type = PROBLEM_JSON),
        (status = 408, description = "The body stalled for 60 s; earlier lines were applied.", body = Problem, content_type = PROBLEM_JSON),
        (status = 503, description = "The store failed; earlier lines may have been applied. Importing the same input again is safe.", body = Problem, content_type = PROBLEM_JSON),
    ))]
pub async fn import(State(state): State<AppState>, mut body: Body) -> Result<Response, Problem> {
    let mut importer = Importer::new(state.service.clone());
    let mut received = 0usize;
    loop {
        let next = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx));
        let frame = match tokio::time::timeout(IMPORT_IDLE_TIMEOUT, next).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                return Err(Problem::bad_request(
                    "invalid-body",
                    "Unreadable body",
                    format!(
                        "the request body could not be read after line {}: {e}; \
                         the lines before it were imported",
                        importer.lines_seen()
                    ),
                ));
            }
            Err(_) => {
                return Err(Problem::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "request-timeout",
                    "Request body stalled",
                    format!(
                        "no data arrived for {IMPORT_IDLE_TIMEOUT:?} after line {}; \
                         the lines before it were imported",
                        importer.lines_seen()
                    ),
                ));
            }
        };
        if let Ok(data) = frame.into_data() {
            received += data.len();
            importer.feed(&data).await.map_err(import_failed)?;
        }
    }
    // An empty body is a client mistake (a forgotten file, `--data` without `@`), not
    // an import of nothing: answering it with an empty report would hide that.
    if received == 0 {
        return Err(Problem::bad_request(
            "empty-body",
            "Empty body",
            "the request body is empty; send JSON lines as GET /admin/export writes them",
        ));
    }
    let report = importer.finish().await.map_err(import_failed)?;
    tracing::info!(
        lines = report.lines,
        applied = report.applied,
        repeated = report.repeated,
        stale = report.stale,
        tie = report.tie,
        invalid = report.invalid,
        "import finished"
    );
    Ok(no_store(Json(report)))
}

fn import_failed(e: ImportFailed) -> Problem {
    tracing::error!(error = %e, "import failed");
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "import-failed",
        "Import failed",
        format!(
            "the store failed near line {}; earlier lines may have been applied. \
             Importing the same input again is safe: applied records come back as repeated",
            e.line
        ),
    )
}
