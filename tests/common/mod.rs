//! Shared helpers for the black-box tests: start a real server on loopback port 0 with
//! its own temporary data directory and a clock the test controls.
#![allow(dead_code)]

pub mod http;
pub mod postgres;
pub mod tyrant;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tidemark::app::{self, Running};
use tidemark::clock::ManualClock;
use tidemark::config::ServeConfig;

/// 2026-01-01T00:00:00Z in microseconds: a fixed "now" for tests.
pub const T0: u64 = 1_767_225_600_000_000;

pub struct TestServer {
    pub running: Option<Running>,
    pub http: SocketAddr,
    pub tyrant: SocketAddr,
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

    /// Start on an existing config (e.g. to reopen a data dir after a restart).
    pub async fn start_in(
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
        Self::start_in(config, self.dir.take(), self.clock.clone()).await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await.expect("clean shutdown");
        }
    }
}
