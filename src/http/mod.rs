//! The HTTP/JSON front door: [`router`] builds the axum app; [`serve`] runs it on a
//! bound listener until a shutdown future resolves.

pub mod keys;
pub mod openapi;
pub mod ops;
pub mod problem;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::service::Service;
use problem::Problem;

/// Whether the server wants traffic; flipped off first on shutdown.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub service: Service,
    pub readiness: Readiness,
}

/// The whole HTTP API, ready to serve or to call in-process with `oneshot`.
pub fn router(state: AppState) -> Router {
    let max_value = state.service.policy().max_value_bytes;
    Router::new()
        .route("/keys", get(keys::list_keys))
        .route(
            "/keys/{key}",
            get(keys::get_key)
                .head(keys::head_key)
                .put(keys::put_key)
                .delete(keys::delete_key),
        )
        .route("/keys/{key}/touch", post(keys::touch_key))
        // `{key}` never matches an empty segment; answer those as the bad key they are
        // rather than as an unknown route.
        .route("/keys/", any(keys::empty_key))
        .route("/keys//touch", any(keys::empty_key))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi_json))
        // The UI loads the document served above, so the two cannot drift apart.
        .merge(SwaggerUi::new("/docs").config(Config::from("/openapi.json")))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // Errors produced outside our handlers (the docs UI's bare 404, layers) get the
        // same problem+json shape as ours.
        .layer(middleware::map_response(problem::ensure_problem))
        // One body limit: the value limit. Bodies over it are refused with 413 while
        // streaming, before they are buffered.
        .layer(DefaultBodyLimit::max(max_value))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Serve `router` on `listener` until `shutdown` resolves, then let in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
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

/// Count every request by route template and status.
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    let metrics = state.service.metrics();
    metrics
        .requests
        .with_label_values(&[
            "http",
            &format!("{method} {route}"),
            response.status().as_str(),
        ])
        .inc();
    metrics
        .request_seconds
        .with_label_values(&["http"])
        .observe(started.elapsed().as_secs_f64());
    response
}
