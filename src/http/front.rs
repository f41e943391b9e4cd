//! The one layer every HTTP request passes: header limits (431), then the token (401)
//! if its route's [`Access`](super::routes::Access) asks for one, then the body limit
//! and the handler — under the request timeout (503) unless it is an admin route —
//! with a handler's panic answered 500, any other error that is not problem+json
//! rewritten into one, and every answer counted by route template and status.
//!
//! It is a hand-written tower [`Layer`] rather than axum middleware, and all of it is
//! one layer, because of what axum does with each `Router::layer`: it wraps every
//! route in one more boxed service, and calling a route clones the box chain below it
//! and boxes its future. With the checks as four layers (`from_fn`, `map_response`,
//! `DefaultBodyLimit`, `CatchPanicLayer`) an HTTP GET made 58 heap allocations, 19 of
//! them clones of boxed services (`bench/callgrind.sh`, docs/BENCHMARKS.md).

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::HttpBody;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use prometheus::{Histogram, IntCounter};
use tokio::time::Timeout;
use tower::{Layer, Service};

use super::problem::{self, Problem};
use super::routes::Rules;
use crate::config::Secret;
use crate::metrics::Metrics;

/// What the front layer checks against, shared by every route it wraps.
pub struct Front {
    pub metrics: Arc<Metrics>,
    pub token: Option<Arc<Secret>>,
    pub timeout: Duration,
    pub rules: Rules,
    /// The largest body a handler may buffer (the value limit); admin's import,
    /// which streams, lifts it on its own route.
    pub body_limit: DefaultBodyLimit,
}

/// The layer for `Router::layer`.
#[derive(Clone)]
pub struct FrontLayer(Arc<Shared>);

struct Shared {
    front: Front,
    /// `tidemark_request_duration_seconds{door="http"}`, looked up once (created on
    /// first use).
    seconds: OnceLock<Histogram>,
}

impl FrontLayer {
    pub fn new(front: Front) -> Self {
        Self(Arc::new(Shared {
            front,
            seconds: OnceLock::new(),
        }))
    }
}

impl FrontLayer {
    /// The same layer for the one route `route`, served without axum's router in
    /// front (which names the route it matched in `MatchedPath`).
    pub fn for_route(&self, route: &'static str) -> FrontRouteLayer {
        FrontRouteLayer {
            shared: self.0.clone(),
            route: Arc::new(FixedRoute::new(route)),
        }
    }
}

/// [`FrontLayer`] for one route known in advance.
#[derive(Clone)]
pub struct FrontRouteLayer {
    shared: Arc<Shared>,
    route: Arc<FixedRoute>,
}

/// A route known in advance, with its request counters for the usual answers looked
/// up once each rather than by label values on every request (as the Tyrant port
/// does: hashing the labels and the map lookup under its lock cost about 400
/// instructions of an HTTP GET's 16,000). Each series is still created on first use,
/// so `/metrics` shows the same series.
struct FixedRoute {
    template: &'static str,
    counters: [[OnceLock<IntCounter>; COUNTED_STATUSES.len()]; COUNTED_METHODS.len()],
}

/// The methods and statuses whose counters [`FixedRoute`] keeps; others are looked
/// up by label values.
const COUNTED_METHODS: [Method; 5] = [
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];
const COUNTED_STATUSES: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::CREATED,
    StatusCode::NO_CONTENT,
    StatusCode::NOT_MODIFIED,
    StatusCode::NOT_FOUND,
    StatusCode::CONFLICT,
];

impl FixedRoute {
    fn new(template: &'static str) -> Self {
        FixedRoute {
            template,
            counters: Default::default(),
        }
    }

    /// The counter of `method` answered `status` on this route, if it is kept here.
    fn counter(
        &self,
        metrics: &Metrics,
        method: &Method,
        status: StatusCode,
    ) -> Option<&IntCounter> {
        let m = COUNTED_METHODS
            .iter()
            .position(|counted| counted == method)?;
        let s = COUNTED_STATUSES
            .iter()
            .position(|&counted| counted == status)?;
        Some(self.counters[m][s].get_or_init(|| {
            with_route_label(method, self.template, |label| {
                metrics
                    .requests
                    .with_label_values(&["http", label, status.as_str()])
            })
        }))
    }
}

impl<S> Layer<S> for FrontRouteLayer {
    type Service = FrontService<S>;

    fn layer(&self, inner: S) -> FrontService<S> {
        FrontService {
            shared: self.shared.clone(),
            inner,
            route: Some(self.route.clone()),
        }
    }
}

impl<S> Layer<S> for FrontLayer {
    type Service = FrontService<S>;

    fn layer(&self, inner: S) -> FrontService<S> {
        FrontService {
            shared: self.0.clone(),
            inner,
            route: None,
        }
    }
}

/// One route behind the front checks.
#[derive(Clone)]
pub struct FrontService<S> {
    shared: Arc<Shared>,
    inner: S,
    /// The route when it is known without axum's `MatchedPath`.
    route: Option<Arc<FixedRoute>>,
}

/// The route template a request matched, for the access rule and the metrics label.
enum RouteName {
    Fixed(Arc<FixedRoute>),
    Matched(MatchedPath),
    Unmatched,
}

impl RouteName {
    fn template(&self) -> Option<&str> {
        match self {
            RouteName::Fixed(route) => Some(route.template),
            RouteName::Matched(route) => Some(route.as_str()),
            RouteName::Unmatched => None,
        }
    }
}

impl<S> Service<Request> for FrontService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrontFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let front = &self.shared.front;
        let method = request.method().clone();
        let route = match &self.route {
            Some(route) => RouteName::Fixed(route.clone()),
            None => request
                .extensions()
                .get::<MatchedPath>()
                .cloned()
                .map_or(RouteName::Unmatched, RouteName::Matched),
        };
        let access = front.rules.access(route.template(), request.uri().path());
        let refused = super::limits::refuse_large_headers(&request).or_else(|| {
            front
                .token
                .as_deref()
                .filter(|_| access.needs_token())
                .and_then(|t| refuse_token(t, &request))
        });
        let stage = match refused {
            Some(refusal) => Stage::Answered {
                response: Some(refusal),
            },
            None => {
                // The limit travels as a request extension, whose insertion allocates;
                // a request whose body has ended already has nothing to limit.
                if !request.body().is_end_stream() {
                    front.body_limit.apply(&mut request);
                }
                // The inner service was made ready by `poll_ready` above, and the
                // handler is called here rather than in the future, so no clone of it
                // is needed. Routes only set up their future here; a panic while doing
                // so is answered like one while it runs.
                match catch_unwind(AssertUnwindSafe(|| self.inner.call(request))) {
                    Ok(handler) if access.has_timeout() => Stage::Timed {
                        handler: tokio::time::timeout(front.timeout, handler),
                    },
                    Ok(handler) => Stage::Handler { handler },
                    Err(_) => Stage::Answered {
                        response: Some(panic_response()),
                    },
                }
            }
        };
        FrontFuture {
            stage,
            shared: self.shared.clone(),
            started,
            method,
            route,
        }
    }
}

type Rewrite = Pin<Box<dyn Future<Output = Response> + Send>>;

pin_project! {
    /// A request's way through the front layer.
    pub struct FrontFuture<F> {
        #[pin]
        stage: Stage<F>,
        shared: Arc<Shared>,
        started: Instant,
        method: Method,
        route: RouteName,
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage<F> {
        /// The handler of an admin route: no timeout.
        Handler { #[pin] handler: F },
        /// The handler of any other route, under the request timeout.
        Timed { #[pin] handler: Timeout<F> },
        /// An error answer that is not problem+json, being rewritten into one (rare:
        /// the docs UI's bare 404, a rejection from outside our handlers).
        Rewriting { rewrite: Rewrite },
        /// Answered without the handler (431, 401, a panic); `None` once returned.
        Answered { response: Option<Response> },
    }
}

impl<F> Future for FrontFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // A panic is caught here at every stage, and the stage that panicked is
            // never polled again: it is replaced before this returns.
            let polled = catch_unwind(AssertUnwindSafe(|| match this.stage.as_mut().project() {
                StageProj::Handler { handler } => handler.poll(cx).map(|Ok(r)| (r, true)),
                StageProj::Timed { handler } => handler.poll(cx).map(|outcome| match outcome {
                    Ok(Ok(response)) => (response, true),
                    Err(_elapsed) => (timeout_response(this.shared.front.timeout), false),
                }),
                StageProj::Rewriting { rewrite } => rewrite.as_mut().poll(cx).map(|r| (r, false)),
                StageProj::Answered { response } => match response.take() {
                    Some(response) => Poll::Ready((response, false)),
                    None => panic!("FrontFuture polled after it completed"),
                },
            }));
            let (response, from_handler) = match polled {
                Ok(Poll::Pending) => return Poll::Pending,
                Ok(Poll::Ready(answer)) => answer,
                Err(_) => (panic_response(), false),
            };
            if from_handler && problem::is_foreign_error(&response) {
                this.stage.set(Stage::Rewriting {
                    rewrite: Box::pin(problem::ensure_problem(response)),
                });
                continue;
            }
            this.stage.set(Stage::Answered { response: None });
            record(
                this.shared,
                this.method,
                this.route,
                &response,
                *this.started,
            );
            return Poll::Ready(Ok(response));
        }
    }
}

/// Count the answer by route template and status, and time it.
fn record(
    shared: &Shared,
    method: &Method,
    route: &RouteName,
    response: &Response,
    started: Instant,
) {
    let metrics = &shared.front.metrics;
    let status = response.status();
    let kept = match route {
        RouteName::Fixed(route) => route.counter(metrics, method, status),
        _ => None,
    };
    match kept {
        Some(counter) => counter.inc(),
        None => with_route_label(method, route.template().unwrap_or("unmatched"), |label| {
            metrics
                .requests
                .with_label_values(&["http", label, status.as_str()])
                .inc();
        }),
    }
    shared
        .seconds
        .get_or_init(|| metrics.request_seconds.with_label_values(&["http"]))
        .observe(started.elapsed().as_secs_f64());
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
    if request.method() == Method::OPTIONS {
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

/// The 503 answer for a request that took longer than `limit` (body upload included).
fn timeout_response(limit: Duration) -> Response {
    Problem::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "request-timeout",
        "Request timed out",
        format!("the request did not complete within {limit:?}"),
    )
    .into_response()
}

fn panic_response() -> Response {
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
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use axum::Router;
    use axum::body::{Body, to_bytes};
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::http::routes::{Access, Routes};

    const TIMEOUT: Duration = Duration::from_secs(5);

    async fn panics() -> &'static str {
        panic!("a bug in a handler")
    }

    async fn slow() -> &'static str {
        tokio::time::sleep(TIMEOUT * 2).await;
        "done"
    }

    async fn bare_teapot() -> Response {
        (
            StatusCode::IM_A_TEAPOT,
            [("x-kept", "yes")],
            "short and stout",
        )
            .into_response()
    }

    /// A router like the real one, with handlers that misbehave; `reached` records
    /// whether the token route's handler ran.
    fn app(metrics: &Arc<Metrics>, reached: &Arc<AtomicBool>) -> Router {
        let reached = reached.clone();
        let token_route = get(move || async move {
            reached.store(true, Ordering::SeqCst);
            "secret"
        });
        let (router, rules) = Routes::<()>::new()
            .route("/panics", Access::Open, get(panics))
            .route("/slow", Access::Open, get(slow))
            .route("/admin/slow", Access::Admin, get(slow))
            .route("/teapot", Access::Open, get(bare_teapot))
            .route("/token", Access::Token, token_route)
            .into_parts();
        router.layer(FrontLayer::new(Front {
            metrics: metrics.clone(),
            token: Some(Arc::new(Secret("s3cret".into()))),
            timeout: TIMEOUT,
            rules,
            body_limit: DefaultBodyLimit::max(16),
        }))
    }

    async fn call(app: &Router, path: &str) -> (StatusCode, axum::http::HeaderMap, String) {
        let request = Request::get(path)
            .header("authorization", "Bearer s3cret")
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let body = to_bytes(body, usize::MAX).await.unwrap();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into(),
        )
    }

    fn counted(metrics: &Metrics, label: &str, status: &str) -> u64 {
        metrics
            .requests
            .with_label_values(&["http", label, status])
            .get()
    }

    #[tokio::test]
    async fn a_panicking_handler_is_answered_500_problem_and_counted() {
        let metrics = Arc::new(Metrics::new());
        let app = app(&metrics, &Arc::default());
        for _ in 0..2 {
            let (status, headers, body) = call(&app, "/panics").await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(
                headers[axum::http::header::CONTENT_TYPE],
                problem::PROBLEM_JSON
            );
            assert!(body.contains("problem:internal"), "{body}");
            assert!(!body.contains("a bug in a handler"), "{body}");
        }
        assert_eq!(counted(&metrics, "GET /panics", "500"), 2);
    }

    #[tokio::test]
    async fn a_foreign_error_is_rewritten_to_problem_json_keeping_status_and_headers() {
        let metrics = Arc::new(Metrics::new());
        let (status, headers, body) = call(&app(&metrics, &Arc::default()), "/teapot").await;
        assert_eq!(status, StatusCode::IM_A_TEAPOT);
        assert_eq!(
            headers[axum::http::header::CONTENT_TYPE],
            problem::PROBLEM_JSON
        );
        assert_eq!(headers["x-kept"], "yes");
        assert!(body.contains("short and stout"), "{body}");
        assert_eq!(counted(&metrics, "GET /teapot", "418"), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_requests_get_503_within_the_timeout_except_on_admin_routes() {
        let metrics = Arc::new(Metrics::new());
        let app = app(&metrics, &Arc::default());
        let started = tokio::time::Instant::now();
        let (status, _, body) = call(&app, "/slow").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("request-timeout"), "{body}");
        assert_eq!(started.elapsed(), TIMEOUT);

        let started = tokio::time::Instant::now();
        let (status, _, body) = call(&app, "/admin/slow").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "done"));
        assert_eq!(started.elapsed(), TIMEOUT * 2);
        assert_eq!(counted(&metrics, "GET /slow", "503"), 1);
        assert_eq!(counted(&metrics, "GET /admin/slow", "200"), 1);
    }

    #[tokio::test]
    async fn a_request_without_the_token_is_refused_before_its_handler_runs() {
        let metrics = Arc::new(Metrics::new());
        let reached = Arc::new(AtomicBool::new(false));
        let request = Request::get("/token").body(Body::empty()).unwrap();
        let response = app(&metrics, &reached).oneshot(request).await.unwrap();
        let (status, headers) = (response.status(), response.headers());
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[axum::http::header::WWW_AUTHENTICATE], "Bearer");
        assert!(!reached.load(Ordering::SeqCst));
        assert_eq!(counted(&metrics, "GET /token", "401"), 1);
    }

    #[test]
    fn the_route_label_is_method_space_route_at_any_length() {
        let long = format!("/{}", "r".repeat(300));
        for route in ["/keys/{key}", "unmatched", "", long.as_str()] {
            let label = with_route_label(&Method::PUT, route, str::to_string);
            assert_eq!(label, format!("PUT {route}"));
        }
    }
}
