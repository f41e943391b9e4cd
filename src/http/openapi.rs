//! The OpenAPI 3.1 description, generated from the handlers' annotations.
//! The checked-in copy is openapi/openapi.json; a test keeps the two equal.

use utoipa::OpenApi;

use super::{admin, health, keys, problem};
use crate::service::jsonl;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidemark",
        description = "A session store that refuses stale writes. Every write carries \
            X-Write-Timestamp (µs since the Unix epoch) and is committed only when newer \
            than the stored one. Errors are RFC 9457 problem details.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(
        keys::put_key,
        keys::get_key,
        keys::head_key,
        keys::delete_key,
        keys::touch_key,
        keys::list_keys,
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi_json,
        admin::backup,
        admin::export,
        admin::import,
    ),
    components(schemas(
        problem::Problem,
        keys::KeyPage,
        keys::Touched,
        health::Health,
        jsonl::ExportLine,
        jsonl::ImportReport,
        jsonl::LineError,
    )),
    tags(
        (name = "keys", description = "Timestamp-guarded session values"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "admin", description = "Backup, export and import of the whole store; \
            no request timeout, bearer token required when one is configured"),
    )
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline (the checked-in form).
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
