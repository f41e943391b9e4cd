//! The HTTP/JSON front door: [`router`] builds the app ([`HttpApp`]: axum's router,
//! with the key route served directly); [`server::serve`] runs it on a bound listener
//! until a shutdown future resolves.

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

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use axum::routing::{MethodRouter, any, any_service, get, post};
use pin_project_lite::pin_project;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::config::Secret;
use front::{Front, FrontFuture, FrontLayer, FrontService};
use keys::{KeyFuture, KeyRoute};
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
pub fn router(state: AppState) -> HttpApp {
    router_with(state, &HttpOptions::default())
}

/// Only `/metrics`, for a separate metrics address.
pub fn metrics_router(state: AppState) -> HttpApp {
    HttpApp::from(
        Router::new()
            .route("/metrics", get(health::metrics))
            .fallback(unknown_route)
            .layer(middleware::map_response(problem::ensure_problem))
            .with_state(state),
    )
}

/// The whole HTTP API.
pub fn router_with(state: AppState, options: &HttpOptions) -> HttpApp {
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
    let key_route = any_service(KeyRoute::new(state.clone()));
    let routes = main_routes(metrics, openapi, key_route)
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
    let front = FrontLayer::new(Front {
        metrics: state.service.metrics().clone(),
        token: auth,
        timeout: request_timeout,
        rules,
        // One body limit: the value limit. Bodies over it are refused with 413 while
        // streaming, before they are buffered.
        body_limit: DefaultBodyLimit::max(max_value),
    });
    let app = app.layer(front.clone());
    let mut direct = true;
    // Per-request spans and failure lines at DEBUG, only when the log filter would
    // show them (`TIDEMARK_LOG=tower_http=debug`): otherwise the layer is skipped, as
    // it costs about a tenth of a GET's CPU for events nobody sees.
    let app =
        if tracing::enabled!(target: "tower_http::trace", tracing::Level::DEBUG) {
            // 503s from /readyz while draining are expected, not errors worth an ERROR
            // line per health check; real 5xx causes are logged where they happen.
            direct = false;
            app.layer(TraceLayer::new_for_http().on_failure(
                tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG),
            ))
        } else {
            app
        };
    let app = app.with_state(state.clone());
    let router = match cors(&options.cors_origins) {
        Some(layer) => {
            direct = false;
            app.layer(layer)
        }
        None => app,
    };
    // The key route behind the same layer as in the router. Tracing and CORS wrap the
    // router alone, so with either on every request takes the router.
    let key = direct.then(|| front.for_route(KEY_ROUTE).layer(KeyRoute::new(state)));
    HttpApp { key, router }
}

/// The route of one key, the one nearly every request of a session store takes.
const KEY_ROUTE: &str = "/keys/{key}";

/// Whether axum's router would route `path` to [`KEY_ROUTE`]: one non-empty segment
/// after `/keys/` (no other route has that shape; a test checks both agree).
fn is_key_path(path: &str) -> bool {
    path.strip_prefix("/keys/")
        .is_some_and(|key| !key.is_empty() && !key.contains('/'))
}

/// The HTTP API as one service: axum's router, except that requests for
/// `/keys/{key}` go straight to that route ([`KeyRoute`] behind the front layer, as
/// the router holds it).
///
/// axum's routing costs a request a tenth or more of an HTTP GET's instructions (the
/// path parameters and the matched path as boxed request extensions, and the map that
/// holds them; `bench/callgrind.sh`), and nearly every request of a session store
/// names one key. The handlers read the key from the path themselves, so they need
/// none of what the router adds. With tracing or CORS on, everything takes the
/// router, which those layers wrap.
#[derive(Clone)]
pub struct HttpApp {
    key: Option<FrontService<KeyRoute>>,
    router: Router,
}

impl HttpApp {
    /// The same API with every request taken by axum's router, for the tests that
    /// check both ways answer alike.
    #[doc(hidden)]
    pub fn without_direct_routes(self) -> Self {
        HttpApp {
            key: None,
            router: self.router,
        }
    }
}

impl From<Router> for HttpApp {
    fn from(router: Router) -> Self {
        HttpApp { key: None, router }
    }
}

impl<B> Service<axum::http::Request<B>> for HttpApp
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = AppFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready: axum's router and the key route do no backpressure.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: axum::http::Request<B>) -> AppFuture {
        match &mut self.key {
            Some(key) if is_key_path(request.uri().path()) => AppFuture::Key {
                head: request.method() == Method::HEAD,
                answer: key.call(request.map(Body::new)),
            },
            _ => AppFuture::Router {
                answer: self.router.call(request),
            },
        }
    }
}

pin_project! {
    /// The answer of [`HttpApp`].
    #[project = AppFutureProj]
    pub enum AppFuture {
        /// From the key route, to finish as axum's method router finishes its answers.
        Key { #[pin] answer: FrontFuture<KeyFuture>, head: bool },
        /// From axum's router.
        Router { #[pin] answer: RouteFuture<Infallible> },
    }
}

impl Future for AppFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AppFutureProj::Key { answer, head } => {
                let Ok(mut response) = ready!(answer.poll(cx));
                finish_key_answer(&mut response, *head);
                Poll::Ready(Ok(response))
            }
            AppFutureProj::Router { answer } => answer.poll(cx),
        }
    }
}

/// What axum's method router does to every answer it returns, done for the key route
/// when it is called without the router: `Content-Length` when the body's size is
/// known and the header is not set, and no body for HEAD.
fn finish_key_answer(response: &mut Response, head: bool) {
    if !response.headers().contains_key(header::CONTENT_LENGTH)
        && let Some(size) = response.body().size_hint().exact()
    {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    if head {
        *response.body_mut() = Body::empty();
    }
}

/// The access rule of every route [`router_with`] serves: the OpenAPI document derives
/// each operation's security and 401 from it, so the two cannot drift apart.
pub fn access_rules() -> Rules {
    main_routes(get(unknown_route), get(unknown_route), get(unknown_route))
        .merge(admin::routes())
        .into_parts()
        .1
}

/// Every route outside `/admin`, with its rule. Health, readiness and the API
/// description stay open for load balancers and humans; the keys and the metrics need
/// the token.
fn main_routes(
    metrics: MethodRouter<AppState>,
    openapi: MethodRouter<AppState>,
    key: MethodRouter<AppState>,
) -> Routes {
    Routes::new()
        .route("/keys", Access::Token, get(keys::list_keys))
        .route(KEY_ROUTE, Access::Token, key)
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
    Problem::method_not_allowed(request.method(), request.uri().path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_route_is_the_only_declared_route_of_one_segment_under_keys() {
        let rules = access_rules();
        let shaped: Vec<_> = rules
            .declared_routes()
            .map(|(route, _)| route)
            .filter(|route| is_key_path(route))
            .collect();
        assert_eq!(shaped, [KEY_ROUTE]);
        for (path, taken) in [
            ("/keys/a", true),
            ("/keys/a%2Fb", true),
            ("/keys/", false),
            ("/keys//touch", false),
            ("/keys/a/", false),
            ("/keys/a/touch", false),
            ("/keys", false),
            ("/keysa", false),
            ("//keys/a", false),
        ] {
            assert_eq!(is_key_path(path), taken, "{path}");
        }
    }
}
