//! The HTTP accept loop: hyper with a header-read timeout (slowloris), a connection
//! cap, and graceful shutdown. axum's own `serve` exposes none of these knobs.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

use super::HttpApp;
use super::limits;
use crate::shutdown::Shutdown;

/// Connection-level limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// A client must finish sending a request's headers within this time.
    pub header_read_timeout: Duration,
    /// Connections beyond this are closed as soon as they are accepted.
    pub max_connections: usize,
    /// After shutdown starts, in-flight requests get this long before connections drop.
    pub shutdown_timeout: Duration,
}

/// Serve `app` on `listener` until `shutdown` is requested; then stop accepting and let
/// in-flight requests finish (up to `options.shutdown_timeout`).
pub async fn serve(listener: TcpListener, app: HttpApp, options: ServeOptions, shutdown: Shutdown) {
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        // No `max_headers`: hyper's default count (`limits::TRANSPORT_MAX_HEADERS`)
        // parses into a stack array, any configured one into two heap arrays per
        // request. The buffer limit is above the router's own size limit, which
        // answers with a problem+json 431 (hyper's has no body).
        .max_buf_size(limits::TRANSPORT_MAX_BUF)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let stopping = shutdown.requested();
    tokio::pin!(stopping);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stopping => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::warn!(%peer, limit = options.max_connections, "HTTP connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // One copy of the app per connection, called in place: hyper calls a service
        // through `&self`, and cloning the app per request instead copies the boxed
        // handlers of the key route (`HttpApp`). The connection's requests are called
        // one at a time from its own task, and every part of the app is always ready.
        let app = RefCell::new(app.clone());
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            app.borrow_mut().call(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still in flight after the shutdown timeout; dropping them");
    }
}
