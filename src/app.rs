//! Wiring: open the store, start both listeners and the background tasks, and shut
//! everything down in order on one signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::{self, ServeConfig};
use crate::http::{self, AppState, Readiness};
use crate::memcached;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::shutdown::{self, Shutdown, Trigger};
use crate::store::{self, Store, StoreError};
use crate::tyrant;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server: its bound addresses and the handle that stops it.
pub struct Running {
    pub http_addr: SocketAddr,
    pub tyrant_addr: SocketAddr,
    /// The memcached port's address, when configured.
    pub memcached_addr: Option<SocketAddr>,
    /// The separate metrics address, when configured.
    pub metrics_addr: Option<SocketAddr>,
    pub service: Service,
    pub readiness: Readiness,
    stop: Trigger,
    tasks: Vec<JoinHandle<()>>,
    servers: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
    drain_delay: Duration,
}

/// Open the store and start serving. Addresses with port 0 get a free port; read the
/// bound ones from the result.
pub async fn start(config: &ServeConfig, clock: Arc<dyn Clock>) -> Result<Running, AppError> {
    let metrics = Arc::new(Metrics::new());
    let store = open_store(config, metrics.clone()).await?;
    let mut policy = config.limits.policy();
    if let Some(engine_max) = store.max_key_bytes()
        && policy.max_key_bytes > engine_max
    {
        tracing::warn!(
            max_key_bytes = policy.max_key_bytes,
            engine_max,
            "--max-key-bytes is above what this storage engine can index; longer keys are refused"
        );
        policy.max_key_bytes = engine_max;
    }
    let service = Service::new(store, clock, policy, metrics);
    let (stop, stopped) = shutdown::channel();
    let readiness = Readiness::default();

    let http_listener = bind(config.http_addr).await?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|source| AppError::Bind {
            addr: config.http_addr,
            source,
        })?;
    let auth_token = config.auth.resolve().map_err(AppError::Config)?;
    let state = AppState {
        service: service.clone(),
        readiness: readiness.clone(),
    };
    let app = http::router_with(
        state.clone(),
        &http::HttpOptions {
            auth_token,
            cors_origins: config.cors_origins.clone(),
            request_timeout: config.request_timeout,
            metrics_here: config.metrics_addr.is_none(),
        },
    );
    let serve_options = http::server::ServeOptions {
        header_read_timeout: config.header_read_timeout,
        max_connections: config.max_connections,
        shutdown_timeout: config.shutdown_timeout,
    };
    let mut servers = Vec::new();
    servers.push(tokio::spawn(http::server::serve(
        http_listener,
        app,
        serve_options,
        stopped.clone(),
    )));
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics_addr {
        let listener = bind(addr).await?;
        let bound = listener
            .local_addr()
            .map_err(|source| AppError::Bind { addr, source })?;
        servers.push(tokio::spawn(http::server::serve(
            listener,
            http::metrics_router(state),
            serve_options,
            stopped.clone(),
        )));
        tracing::info!(metrics_addr = %bound, "metrics listening");
        metrics_addr = Some(bound);
    }
    tracing::info!(%http_addr, "HTTP API listening");

    let tyrant_listener = bind(config.tyrant_addr).await?;
    let tyrant_addr = tyrant_listener
        .local_addr()
        .map_err(|source| AppError::Bind {
            addr: config.tyrant_addr,
            source,
        })?;
    let (limits, max_frame_bytes) =
        tyrant::Settings::limits_for(policy.max_key_bytes, policy.max_value_bytes);
    let tyrant_shared = tyrant::Shared::new(
        service.clone(),
        tyrant::Settings {
            ts_digits: config.tyrant_ts_digits,
            guard: config.tyrant_guard,
            deny: config
                .tyrant_deny
                .iter()
                .map(|name| name.trim().to_ascii_lowercase())
                .filter(|name| !name.is_empty())
                .collect(),
            frame_timeout: config.tyrant_frame_timeout,
            limits,
            max_frame_bytes,
            allow: config.tyrant_allow.clone(),
            max_connections: config.tyrant_max_connections,
        },
    );
    servers.push(tokio::spawn(tyrant::serve(
        tyrant_listener,
        tyrant_shared,
        stopped.clone(),
    )));
    tracing::info!(%tyrant_addr, "Tokyo Tyrant port listening");

    let mut memcached_addr = None;
    if let Some(addr) = config.memcached_addr {
        let listener = bind(addr).await?;
        let bound = listener
            .local_addr()
            .map_err(|source| AppError::Bind { addr, source })?;
        let shared = memcached::Shared::new(
            service.clone(),
            memcached::Settings {
                frame_timeout: config.tyrant_frame_timeout,
                max_value_bytes: policy.max_value_bytes,
                allow: config.tyrant_allow.clone(),
                max_connections: config.tyrant_max_connections,
                allow_flush: config.memcached_allow_flush,
                guard: config.memcached_guard,
                ts_digits: config.tyrant_ts_digits,
                port: bound.port(),
            },
        );
        servers.push(tokio::spawn(memcached::serve(
            listener,
            shared,
            stopped.clone(),
        )));
        tracing::info!(memcached_addr = %bound, "memcached port listening");
        memcached_addr = Some(bound);
    }

    let mut tasks = vec![tokio::spawn(sweep_loop(
        service.clone(),
        config.sweep_interval,
        stopped.clone(),
    ))];
    if store_is_relaxed(config) {
        tasks.push(tokio::spawn(flush_loop(
            service.clone(),
            config.flush_interval,
            stopped.clone(),
        )));
    }
    readiness.set_ready(true);
    Ok(Running {
        http_addr,
        tyrant_addr,
        memcached_addr,
        metrics_addr,
        service,
        readiness,
        stop,
        tasks,
        servers,
        shutdown_timeout: config.shutdown_timeout,
        drain_delay: config.drain_delay,
    })
}

impl Running {
    /// Drain: report not-ready for the drain delay (so a load balancer stops routing
    /// here), stop accepting, let in-flight requests finish (up to the shutdown
    /// timeout), flush the store, and return.
    pub async fn shutdown(self) -> Result<(), AppError> {
        self.readiness.set_ready(false);
        if !self.drain_delay.is_zero() {
            tracing::info!(delay = ?self.drain_delay, "readiness is 503; waiting for the load balancer");
            tokio::time::sleep(self.drain_delay).await;
        }
        self.stop.stop();
        let servers = futures_join(self.servers);
        if tokio::time::timeout(self.shutdown_timeout, servers)
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within the shutdown timeout");
        }
        for task in self.tasks {
            let _ = task.await;
        }
        self.service.close().await.map_err(|e| match e {
            crate::service::ServiceError::Store(e) => AppError::Store(e),
            other => AppError::Store(StoreError::engine(other.to_string())),
        })?;
        tracing::info!("store flushed; shut down cleanly");
        Ok(())
    }
}

/// The embedded store in --data-dir, or the shared database of --database-url.
async fn open_store(config: &ServeConfig, metrics: Arc<Metrics>) -> Result<Store, AppError> {
    let database = &config.database;
    let Some(url) = &database.database_url else {
        let options = store::StoreOptions {
            data_dir: config.data_dir.clone(),
            durability: match config.durability {
                config::Durability::Immediate => store::Durability::Immediate,
                config::Durability::Relaxed => store::Durability::Relaxed,
            },
            cache_size: config.cache_size,
            record_cache_size: config.record_cache_size,
        };
        return Ok(Store::open(&options, metrics)?);
    };
    let options = store::PostgresOptions {
        url: url.0.clone(),
        password: database
            .resolve_password()
            .map_err(AppError::Config)?
            .map(|secret| secret.0),
        pool_size: usize::from(database.database_pool_size),
        connect_timeout: database.database_connect_timeout,
        statement_timeout: database.database_statement_timeout,
    };
    let store = Store::connect(&options, metrics).await?;
    tracing::info!(database = %store.location(), "storing in a shared database");
    Ok(store)
}

/// Whether acknowledged writes wait for a periodic flush (relaxed embedded store; a
/// database commit is durable when it returns).
fn store_is_relaxed(config: &ServeConfig) -> bool {
    config.database.database_url.is_none() && config.durability == config::Durability::Relaxed
}

async fn futures_join(handles: Vec<JoinHandle<()>>) {
    for handle in handles {
        let _ = handle.await;
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, AppError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AppError::Bind { addr, source })
}

/// Purge expired records and lapsed tombstones in small batches, so the write lock is
/// never held for long.
async fn sweep_loop(service: Service, every: Duration, stopped: Shutdown) {
    const BATCH: usize = 512;
    // The first sweep comes one interval after start, not at once: a server started
    // with a long interval (as the tests that sweep by hand do) then has no sweep of
    // its own racing theirs — on PostgreSQL the loser of the sweeper lock purges nothing.
    let every = every.max(Duration::from_millis(10));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.requested() => return,
        }
        loop {
            match service.sweep(BATCH).await {
                Ok(p) if p.expired + p.tombstones == BATCH => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "sweep failed; will retry");
                    break;
                }
            }
        }
    }
}

/// In relaxed mode, make commits durable at least every `every`.
async fn flush_loop(service: Service, every: Duration, stopped: Shutdown) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.requested() => return,
        }
        if service.has_unflushed_commits()
            && let Err(e) = service.sync().await
        {
            tracing::warn!(error = %e, "periodic flush failed; will retry");
        }
    }
}
