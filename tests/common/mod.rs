//! Shared helpers for the black-box tests: start a real server on loopback port 0 with
//! its own temporary data directory (or, with `TIDEMARK_TEST_ENGINE=postgres`, a fresh
//! PostgreSQL database) and a clock the test controls.
//!
//! The behaviour suites run once per engine: `scripts/test` runs them with
//! `TIDEMARK_TEST_ENGINE` unset (the embedded engine) and again set to `postgres`.
#![allow(dead_code)]

pub mod http;
pub mod postgres;
pub mod process;
pub mod tyrant;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidemark::app::{self, Running};
use tidemark::clock::ManualClock;
use tidemark::config::{Secret, ServeConfig};
use tidemark::metrics::Metrics;
use tidemark::store::{Durability, Store, StoreOptions};

/// The storage engine the behaviour suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Redb,
    Postgres,
}

/// `TIDEMARK_TEST_ENGINE`: unset or `redb` = the embedded engine, `postgres` = a
/// PostgreSQL database per server (a missing PostgreSQL is then a failure).
pub fn engine() -> Engine {
    match std::env::var("TIDEMARK_TEST_ENGINE").as_deref() {
        Err(_) | Ok("") | Ok("redb") => Engine::Redb,
        Ok("postgres") => Engine::Postgres,
        Ok(other) => panic!("TIDEMARK_TEST_ENGINE={other}: expected redb or postgres"),
    }
}

/// A fresh PostgreSQL database for a test running on that engine.
async fn engine_database() -> postgres::TestDatabase {
    postgres::database().await.unwrap_or_else(|| {
        panic!("TIDEMARK_TEST_ENGINE=postgres, but there is no PostgreSQL to test against")
    })
}

/// A store on the engine under test, for in-process tests; a redb store lives in `dir`.
pub async fn open_store(dir: &Path, durability: Durability, metrics: Arc<Metrics>) -> Store {
    match engine() {
        Engine::Redb => Store::open(
            &StoreOptions {
                data_dir: dir.to_path_buf(),
                durability,
                cache_size: 1 << 20,
                record_cache_size: 1 << 20,
            },
            metrics,
        )
        .expect("store opens"),
        Engine::Postgres => {
            let database = engine_database().await;
            Store::connect(&postgres::options(&database.url), metrics)
                .await
                .expect("store connects")
        }
    }
}

/// 2026-01-01T00:00:00Z in microseconds: a fixed "now" for tests.
pub const T0: u64 = 1_767_225_600_000_000;

pub struct TestServer {
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub tyrant: SocketAddr,
    /// The memcached port, when the config asked for one.
    pub memcached: Option<SocketAddr>,
    pub clock: ManualClock,
    pub config: ServeConfig,
    dir: Option<tempfile::TempDir>,
    data_dir: PathBuf,
}

/// A config for tests: loopback port 0 everywhere, data in `data_dir`.
pub fn test_config(data_dir: &Path) -> ServeConfig {
    ServeConfig {
        http_addr: "127.0.0.1:0".parse().expect("literal address"),
        tyrant_addr: "127.0.0.1:0".parse().expect("literal address"),
        data_dir: data_dir.to_path_buf(),
        drain_delay: std::time::Duration::ZERO,
        ..ServeConfig::default()
    }
}

impl TestServer {
    /// Start with default settings in a fresh temporary directory.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Start after letting `tweak` adjust the config.
    pub async fn start_with(tweak: impl FnOnce(&mut ServeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let mut config = test_config(&data_dir);
        tweak(&mut config);
        Self::start_in(config, Some(dir), ManualClock::new(T0)).await
    }

    /// Start on an existing config (e.g. to reopen a data dir after a restart). On the
    /// PostgreSQL engine a config without a database gets a fresh one, which restarts
    /// keep.
    pub async fn start_in(
        mut config: ServeConfig,
        dir: Option<tempfile::TempDir>,
        clock: ManualClock,
    ) -> Self {
        if engine() == Engine::Postgres && config.database.database_url.is_none() {
            config.database.database_url = Some(Secret(engine_database().await.url));
        }
        Self::launch(config, dir, clock).await
    }

    /// Start on `engine`, whichever engine the suite runs on; `None` (after SKIPPED)
    /// when it is PostgreSQL and there is none to test against.
    pub async fn start_on(engine: Engine) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(dir.path());
        if engine == Engine::Postgres {
            config.database.database_url = Some(Secret(postgres::database().await?.url));
        }
        Some(Self::launch(config, Some(dir), ManualClock::new(T0)).await)
    }

    async fn launch(
        config: ServeConfig,
        dir: Option<tempfile::TempDir>,
        clock: ManualClock,
    ) -> Self {
        let running = app::start(&config, Arc::new(clock.clone()))
            .await
            .expect("server starts");
        Self {
            http: running.http_addr,
            tyrant: running.tyrant_addr,
            memcached: running.memcached_addr,
            running: Some(running),
            clock,
            data_dir: config.data_dir.clone(),
            config,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Shut down cleanly and start again on the same data directory and clock.
    pub async fn restart(mut self) -> Self {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
        let mut config = self.config.clone();
        config.http_addr = "127.0.0.1:0".parse().expect("literal address");
        config.tyrant_addr = "127.0.0.1:0".parse().expect("literal address");
        if config.memcached_addr.is_some() {
            config.memcached_addr = Some("127.0.0.1:0".parse().expect("literal address"));
        }
        Self::start_in(config, self.dir.take(), self.clock.clone()).await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }
}
