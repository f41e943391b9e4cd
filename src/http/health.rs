//! Operational endpoints: liveness, readiness, metrics, and the API description.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi;
use super::problem::{PROBLEM_JSON, Problem};
use super::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive.", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: 200 while taking traffic; 503 while starting or draining for shutdown.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready for traffic.", body = Health),
        (status = 503, description = "Starting, draining, or (PostgreSQL engine) the database is unreachable; send traffic elsewhere.", body = Problem, content_type = PROBLEM_JSON,
            headers(("Retry-After" = u32, description = "Seconds to wait before probing again; sent when the database is unreachable."))),
    ))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, Problem> {
    if !state.readiness.is_ready() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-ready",
            "Not ready",
            "the server is starting or draining for shutdown",
        ));
    }
    // Checked in the background about every second, not per probe, so a flood of
    // probes cannot load the database.
    if !state.service.store_reachable() {
        return Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database-unreachable",
            "Not ready",
            "the database cannot be reached; requests would fail until it is back",
        )
        .with_retry_after(1));
    }
    Ok(Json(Health { status: "ready" }))
}

/// Prometheus metrics in the text exposition format; series are prefixed `tidemark_`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4.", content_type = "text/plain", body = String)))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let metrics = state.service.metrics().clone();
    if let Ok(counts) = state.service.counts().await {
        metrics
            .records
            .set(i64::try_from(counts.records).unwrap_or(i64::MAX));
        metrics
            .keys
            .set(i64::try_from(counts.live()).unwrap_or(i64::MAX));
    }
    let mut response = metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// This OpenAPI 3.1 document; the UI at /docs/ renders it.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document of this server: with a bearer token configured, identical to openapi/openapi.json in the repository; without one, the same without security requirements or 401 answers.", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> Response {
    openapi_json_for(true)
}

/// The handler of `/openapi.json` for a server with or without a bearer token.
pub fn openapi_json_for(token_configured: bool) -> Response {
    static WITH_TOKEN: LazyLock<String> = LazyLock::new(|| openapi::document_for(true));
    static WITHOUT_TOKEN: LazyLock<String> = LazyLock::new(|| openapi::document_for(false));
    let document = if token_configured {
        &WITH_TOKEN
    } else {
        &WITHOUT_TOKEN
    };
    let mut response = document.as_str().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
