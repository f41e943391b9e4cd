//! The HTTP/JSON front door: [`router`] builds the axum app; [`server::serve`] runs
//! it on a bound listener until a shutdown future resolves.

pub mod admin;
pub mod batch;
pub mod front;
pub mod headers;
pub mod health;
pub mod keys;
pub mod limits;
pub mod openapi;
pub mod owners;
pub mod problem;
pub mod routes;
pub mod server;
pub mod state;

pub use state::{AppState, Readiness};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{MethodRouter, any, get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::config::Secret;
use front::{Front, FrontLayer};
use problem::Problem;
use routes::{Access, Routes, Rules};

/// Deployment options of the HTTP API.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Bearer token required on the routes declared [`Access::Token`] or
    /// [`Access::Admin`] (in [`router_with`] and `admin::routes`).
    pub auth_token: Option<Secret>,
    /// Origins allowed by CORS; empty = CORS off. `*` = any origin.
    pub cors_origins: Vec<String>,
    /// Longest time one request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Serve /metrics on this router (false when it has its own address).
    pub metrics_here: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            auth_token: None,
            cors_origins: Vec::new(),
            request_timeout: Duration::from_secs(30),
            metrics_here: true,
        }
    }
}

/// The whole HTTP API with default options, ready to serve or to call in-process
/// with `oneshot`.
pub fn router(state: AppState) -> Router {
    router_with(state, &HttpOptions::default())
}

/// Only `/metrics`, for a separate metrics address.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(health::metrics))
        .fallback(unknown_route)
        .layer(middleware::map_response(problem::ensure_problem))
        .with_state(state)
}

/// The whole HTTP API.
pub fn router_with(state: AppState, options: &HttpOptions) -> Router {
    let max_value = state.service.policy().max_value_bytes;
    let metrics = if options.metrics_here {
        get(health::metrics)
    } else {
        get(unknown_route)
    };
    let auth = options.auth_token.clone().map(Arc::new);
    let request_timeout = options.request_timeout;
    let token_configured = options.auth_token.is_some();
    let openapi = get(move || async move { health::openapi_json_for(token_configured) });
    let routes = main_routes(metrics, openapi)
        .map(|app| {
            app.fallback(unknown_route)
                .method_not_allowed_fallback(wrong_method)
        })
        // Backup, export and import move whole stores; their `Access::Admin` keeps them
        // outside the request timeout, and import lifts the body limit on its route.
        .merge(admin::routes());
    let (app, rules) = routes.into_parts();
    // Header limits, the token, the body limit, the request timeout, panics, the
    // problem+json shape of every error and the request metrics, in one layer: each
    // `Router::layer` costs allocations per request (front.rs).
    let app = app.layer(FrontLayer::new(Front {
        metrics: state.service.metrics().clone(),
        token: auth,
        timeout: request_timeout,
        rules,
        // One body limit: the value limit. Bodies over it are refused with 413 while
        // streaming, before they are buffered.
        body_limit: DefaultBodyLimit::max(max_value),
    }));
    // Per-request spans and failure lines at DEBUG, only when the log filter would
    // show them (`TIDEMARK_LOG=tower_http=debug`): otherwise the layer is skipped, as
    // it costs about a tenth of a GET's CPU for events nobody sees.
    let app =
        if tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG) {
            // 503s from /readyz while draining are expected, not errors worth an ERROR
            // line per health check; real 5xx causes are logged where they happen.
            app.layer(TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ))
        } else {
            app
        };
    let app = app.with_state(state);
    match cors(&options.cors_origins) {
        Some(layer) => app.layer(layer),
        None => app,
    }
}

/// The access rule of every route [`router_with`] serves: the OpenAPI document derives
/// each operation's security and 401 from it, so the two cannot drift apart.
pub fn access_rules() -> Rules {
    main_routes(get(unknown_route), get(unknown_route))
        .merge(admin::routes())
        .into_parts()
        .1
}

/// Every route outside `/admin`, with its rule. Health, readiness and the API
/// description stay open for load balancers and humans; the keys and the metrics need
/// the token.
fn main_routes(metrics: MethodRouter<AppState>, openapi: MethodRouter<AppState>) -> Routes {
    Routes::new()
        .route("/keys", Access::Token, get(keys::list_keys))
        .route(
            "/keys/{key}",
            Access::Token,
            get(keys::get_key)
                .head(keys::head_key)
                .put(keys::put_key)
                .patch(keys::patch_key)
                .delete(keys::delete_key),
        )
        .route(
            "/owners/{owner}/sessions",
            Access::Token,
            get(owners::list_sessions).delete(owners::revoke_sessions),
        )
        .route("/batch/get", Access::Token, post(batch::batch_get))
        .route("/keys/{key}/touch", Access::Token, post(keys::touch_key))
        // `{key}` never matches an empty segment; answer those as the bad key they are
        // rather than as an unknown route.
        .route("/keys/", Access::Token, any(keys::empty_key))
        .route("/keys//touch", Access::Token, any(keys::empty_key))
        .route("/healthz", Access::Open, get(health::healthz))
        .route("/readyz", Access::Open, get(health::readyz))
        .route("/metrics", Access::Token, metrics)
        .route("/openapi.json", Access::Open, openapi)
        // The UI loads the document served above, so the two cannot drift apart.
        .mount(
            "/docs",
            Access::Open,
            // No validator badge: it would send the document's URL to an outside service.
            SwaggerUi::new("/docs").config(Config::from("/openapi.json").validator_url("none")),
        )
}

/// CORS for browser frontends; off unless origins are configured.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    use axum::http::{HeaderValue, Method, header};
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::DELETE,
                Method::POST,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                headers::X_WRITE_TIMESTAMP,
                headers::X_TTL,
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::EXPIRES,
                headers::X_WRITE_TIMESTAMP,
                headers::X_EXPIRES_AT,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

async fn unknown_route(request: Request) -> Problem {
    Problem::not_found(format!("no route for {}", request.uri().path()))
}

async fn wrong_method(request: Request) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        format!(
            "{} is not supported on {}",
            request.method(),
            request.uri().path()
        ),
    )
}
