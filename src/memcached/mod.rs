//! The memcached front door: the memcached 1.6 text protocol on its own port
//! (`--memcached-addr`), over the same [`Service`] as HTTP and Tyrant.
//!
//! Data flows one way: `server` reads the socket, [`request`] decodes a line and
//! its data block (length-capped; `meta` the meta commands `mg ms md ma me mn`),
//! `commands` and `meta_commands` run it as service calls ([`Service::mc_update`],
//! [`Service::mc_update_cas`], [`Service::mc_get_many`]) and write the answer. What is
//! served, and each deliberate difference from memcached 1.6 (the meta flags `h`, `l`,
//! `E`, `I` and `mg`'s `N`/`R` are refused): README, "memcached port".

mod commands;
mod meta;
mod meta_commands;
pub mod request;
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::TyrantGuard;
use crate::service::Service;

pub use request::MAX_KEY_BYTES;
pub use server::serve;

/// Settings of the memcached port.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A request that has started arriving must be complete within this time
    /// (`--tyrant-frame-timeout`).
    pub frame_timeout: Duration,
    /// Largest value (`--max-value-bytes`).
    pub max_value_bytes: usize,
    /// Networks allowed to connect; empty = any (`--tyrant-allow`).
    pub allow: Vec<ipnet::IpNet>,
    /// Connections beyond this are closed on accept (`--tyrant-max-connections`).
    pub max_connections: usize,
    /// Whether `flush_all` may remove every record (`--memcached-allow-flush`).
    pub allow_flush: bool,
    /// Whether set/add/replace are guarded by the value's leading digits
    /// (`--memcached-guard`).
    pub guard: TyrantGuard,
    /// How many leading digits carry the timestamp (`--tyrant-ts-digits`).
    pub ts_digits: usize,
    /// The port the listener is bound to (`stats settings`' `tcpport`).
    pub port: u16,
}

impl Settings {
    /// Whether a client at `ip` may connect.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// What `stats` counts. `stats reset` zeroes all but `curr_connections`.
#[derive(Debug, Default)]
pub struct Counters {
    pub total_connections: AtomicU64,
    pub curr_connections: AtomicU64,
    pub cmd_get: AtomicU64,
    pub cmd_set: AtomicU64,
    pub cmd_touch: AtomicU64,
    /// Every `flush_all`, refused ones included, as memcached counts them.
    pub cmd_flush: AtomicU64,
    pub get_hits: AtomicU64,
    pub get_misses: AtomicU64,
}

impl Counters {
    /// `stats reset`: every counter but the connections open now back to zero.
    pub fn reset(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        for counter in [
            &self.total_connections,
            &self.cmd_get,
            &self.cmd_set,
            &self.cmd_touch,
            &self.cmd_flush,
            &self.get_hits,
            &self.get_misses,
        ] {
            counter.store(0, Relaxed);
        }
    }
}

/// State shared by every connection of the port.
#[derive(Debug)]
pub struct Shared {
    pub service: Service,
    pub settings: Settings,
    pub counters: Counters,
    pub started: Instant,
    /// When (server µs) a delayed `flush_all` is due; 0 = none pending. Like
    /// memcached's one `oldest_live`, a later `flush_all` replaces it.
    flush_at: AtomicU64,
    /// Held while a flush (immediate or due) runs, so two never run at once and a due
    /// one is not run twice.
    flushing: tokio::sync::Mutex<()>,
}

impl Shared {
    pub fn new(service: Service, settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            service,
            settings,
            counters: Counters::default(),
            started: Instant::now(),
            flush_at: AtomicU64::new(0),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    /// Schedule a flush at `at` (server µs), replacing any pending one; `None`
    /// cancels it (an immediate flush has just run).
    pub fn schedule_flush(&self, at: Option<u64>) {
        self.flush_at
            .store(at.map_or(0, |at| at.max(1)), Ordering::SeqCst);
    }

    /// Run the pending flush if the service clock has reached it: the same `vanish`
    /// as an immediate `flush_all`. Called before every request of the port and by
    /// the port's ticker ([`FLUSH_TICK`]); a failed vanish stays pending.
    pub async fn run_due_flush(&self) {
        let due = |at: u64| at != 0 && self.service.now() >= at;
        if !due(self.flush_at.load(Ordering::SeqCst)) {
            return;
        }
        let _flushing = self.flushing.lock().await;
        let at = self.flush_at.load(Ordering::SeqCst);
        if !due(at) {
            return; // another request ran it, or a later flush_all replaced it
        }
        match self.service.vanish().await {
            Ok(()) => {
                let _ = self
                    .flush_at
                    .compare_exchange(at, 0, Ordering::SeqCst, Ordering::SeqCst);
                tracing::info!("memcached delayed flush_all ran");
            }
            Err(e) => tracing::warn!(error = %e, "memcached delayed flush_all failed; will retry"),
        }
    }
}

/// How often the port checks for a due delayed `flush_all` when no request comes.
pub const FLUSH_TICK: Duration = Duration::from_millis(100);
