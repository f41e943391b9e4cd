//! The HTTP/JSON front door: [`router`] builds the axum app; [`server::serve`] runs
//! it on a bound listener until a shutdown future resolves.

pub mod admin;
pub mod batch;
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

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get, post};
use prometheus::Histogram;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::config::Secret;
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
                // Errors produced outside our handlers (the docs UI's bare 404, layers)
                // get the same problem+json shape as ours.
                .layer(middleware::map_response(problem::ensure_problem))
                // One body limit: the value limit. Bodies over it are refused with 413
                // while streaming, before they are buffered.
                .layer(DefaultBodyLimit::max(max_value))
        })
        // Backup, export and import move whole stores: merged here, outside the
        // value-sized body limit; their `Access::Admin` keeps them outside the request
        // timeout.
        .merge(admin::routes());
    let (app, rules) = routes.into_parts();
    let app = app
        // Header limits, the token, the request timeout and the request metrics, in one
        // layer: each layer costs allocations per request (about a third of the HTTP
        // path's CPU with them as four; docs/BENCHMARKS.md).
        .layer(middleware::from_fn_with_state(
            Arc::new(Front {
                state: state.clone(),
                token: auth,
                timeout: request_timeout,
                rules,
                seconds: OnceLock::new(),
            }),
            front,
        ))
        .layer(CatchPanicLayer::custom(panic_response));
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
    use axum::http::{HeaderName, HeaderValue, Method, header};
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
    let custom = |name: &'static str| HeaderName::from_static(name);
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
                custom(headers::X_WRITE_TIMESTAMP),
                custom(headers::X_TTL),
            ])
            .expose_headers([
                header::ETAG,
                header::LOCATION,
                header::EXPIRES,
                custom(headers::X_WRITE_TIMESTAMP),
                custom(headers::X_EXPIRES_AT),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// What the front middleware needs.
struct Front {
    state: AppState,
    token: Option<Arc<Secret>>,
    timeout: Duration,
    rules: Rules,
    /// `tidemark_request_duration_seconds{door="http"}`, looked up once (created on
    /// first use, as before).
    seconds: OnceLock<Histogram>,
}

/// Every request passes here once: header limits (431), then the token (401) if its
/// route's [`Access`] asks for one, then the handler — under the request timeout (503)
/// unless it is an admin route — and every answer is counted by route template and
/// status.
async fn front(State(front): State<Arc<Front>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let access = front.rules.access(route.as_ref(), request.uri().path());
    let refused = limits::refuse_large_headers(&request).or_else(|| {
        front
            .token
            .as_deref()
            .filter(|_| access.needs_token())
            .and_then(|t| refuse_token(t, &request))
    });
    let response = match refused {
        Some(refusal) => refusal,
        None if !access.has_timeout() => next.run(request).await,
        None => with_timeout(front.timeout, next.run(request)).await,
    };
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let metrics = front.state.service.metrics();
    with_route_label(&method, route, |label| {
        metrics
            .requests
            .with_label_values(&["http", label, response.status().as_str()])
            .inc();
    });
    front
        .seconds
        .get_or_init(|| metrics.request_seconds.with_label_values(&["http"]))
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Calls `f` with the metrics' route label, `"<method> <route template>"`, built on
/// the stack for the usual short ones instead of in a new `String` per request.
fn with_route_label<R>(method: &Method, route: &str, f: impl FnOnce(&str) -> R) -> R {
    let (method, route) = (method.as_str(), route);
    let len = method.len() + 1 + route.len();
    let mut buf = [0u8; 128];
    if let Some(out) = buf.get_mut(..len) {
        out[..method.len()].copy_from_slice(method.as_bytes());
        out[method.len()] = b' ';
        out[method.len() + 1..].copy_from_slice(route.as_bytes());
        // Two `str`s joined by an ASCII space are UTF-8.
        if let Ok(label) = std::str::from_utf8(out) {
            return f(label);
        }
    }
    f(&format!("{method} {route}"))
}

/// The 401 answer when `request`, on a route that needs the token, does not present it.
/// CORS preflights never carry credentials, so they pass.
fn refuse_token(token: &Secret, request: &Request) -> Option<Response> {
    use subtle::ConstantTimeEq;
    if request.method() == axum::http::Method::OPTIONS {
        return None;
    }
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    // Constant-time comparison, so response timing does not reveal the token.
    if bool::from(presented.ct_eq(token.0.as_bytes())) {
        return None;
    }
    let mut response = Problem::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Unauthorized",
        "this route needs `Authorization: Bearer <token>` with the server's token",
    )
    .into_response();
    response.headers_mut().insert(
        axum::http::header::WWW_AUTHENTICATE,
        axum::http::HeaderValue::from_static("Bearer"),
    );
    Some(response)
}

/// Answer 503 when a request takes longer than `limit` (body upload included).
async fn with_timeout(limit: Duration, handler: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limit, handler).await {
        Ok(response) => response,
        Err(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request-timeout",
            "Request timed out",
            format!("the request did not complete within {limit:?}"),
        )
        .into_response(),
    }
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

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    Problem::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "the server hit a bug handling this request; it has been logged",
    )
    .into_response()
}

#[cfg(test)]
mod label_tests {
    use super::*;

    #[test]
    fn the_route_label_is_method_space_route_at_any_length() {
        let long = format!("/{}", "r".repeat(300));
        for route in ["/keys/{key}", "unmatched", "", long.as_str()] {
            let label = with_route_label(&Method::PUT, route, str::to_string);
            assert_eq!(label, format!("PUT {route}"));
        }
    }
}
