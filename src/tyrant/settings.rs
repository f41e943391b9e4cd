//! What every connection of one listener shares: the settings of the port and the
//! state built from them.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};

use crate::config::TyrantGuard;
use crate::metrics::Metrics;
use crate::service::Service;

use super::command::{Command, Dialect, TextCommand};
use super::stat;
use super::wire::Limits;

/// Settings of the Tyrant port.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Leading value digits carrying the timestamp for tsput/tsout and prefix guarding.
    pub ts_digits: usize,
    pub guard: TyrantGuard,
    /// Command names (`ttserver -mask` names, see [`Command::mask_name`]) answered as
    /// if masked. Names of no command are ignored.
    pub deny: HashSet<String>,
    /// A request that has started arriving must be complete within this time.
    pub frame_timeout: Duration,
    pub limits: Limits,
    /// Largest request (all fields together) a connection will buffer; bigger ones
    /// (e.g. a huge misc putlist) close the connection.
    pub max_frame_bytes: usize,
    /// Networks allowed to connect; empty = any. The protocol has no authentication.
    pub allow: Vec<ipnet::IpNet>,
    /// Connections beyond this are closed on accept.
    pub max_connections: usize,
}

impl Settings {
    /// Whether a client at `ip` may connect.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Caps derived from the store's key and value limits.
    pub fn limits_for(max_key_bytes: usize, max_value_bytes: usize) -> (Limits, usize) {
        let limits = Limits {
            max_key_bytes,
            max_value_bytes,
            max_count: 65_536,
            max_name_bytes: 1023,
        };
        let max_frame =
            (16 << 20).max(max_value_bytes.saturating_mul(2) + max_key_bytes + (64 << 10));
        (limits, max_frame)
    }
}

/// The commands `--tyrant-deny` refuses, resolved once through the command tables.
#[derive(Debug, Clone, Default)]
pub struct Denied {
    binary: [bool; Command::COUNT],
    text: [bool; TextCommand::COUNT],
}

impl Denied {
    /// The commands named in `names` (ttserver `-mask` names, case-insensitive), or
    /// by a group: `all`, `allorg` (every binary command), `allmc` (every memcached
    /// command), `allhttp` (every HTTP method). Other names are ignored.
    pub fn from_names(names: &HashSet<String>) -> Self {
        let names: HashSet<String> = names
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        let all = names.contains("all");
        let mut denied = Denied::default();
        for command in Command::ALL {
            denied.binary[command.index()] =
                all || names.contains("allorg") || names.contains(command.mask_name());
        }
        for command in TextCommand::ALL {
            let group = match command.dialect() {
                Dialect::Memcached => "allmc",
                Dialect::Http => "allhttp",
            };
            denied.text[command.index()] =
                all || names.contains(group) || names.contains(command.mask_name());
        }
        denied
    }

    pub fn contains(&self, command: Command) -> bool {
        self.binary[command.index()]
    }

    pub fn contains_text(&self, command: TextCommand) -> bool {
        self.text[command.index()]
    }
}

/// State shared by every connection of one listener.
#[derive(Debug)]
pub struct Shared {
    pub service: Service,
    pub settings: Settings,
    pub denied: Denied,
    pub counters: stat::Counters,
    pub started: Instant,
    pub(super) next_connection_id: AtomicU64,
    pub(super) request_metrics: RequestMetrics,
}

/// The port's series of the request metrics, looked up once each instead of by label
/// values on every request (hashing three labels and a map lookup under a lock cost
/// about as much as decoding a `get`). Each series is still created on first use, so
/// `/metrics` shows the same series as before.
#[derive(Debug)]
pub(super) struct RequestMetrics {
    /// `tidemark_requests_total{door="tyrant", route=<command>, outcome=ok|fail}`.
    outcomes: [[OnceLock<IntCounter>; 2]; Command::COUNT],
    /// `tidemark_request_duration_seconds{door="tyrant"}`.
    seconds: OnceLock<Histogram>,
}

impl RequestMetrics {
    fn new() -> Self {
        Self {
            outcomes: std::array::from_fn(|_| [OnceLock::new(), OnceLock::new()]),
            seconds: OnceLock::new(),
        }
    }

    /// The request counter of a binary `command` with this outcome.
    pub(super) fn outcome(&self, metrics: &Metrics, command: Command, ok: bool) -> &IntCounter {
        let label = if ok { "ok" } else { "fail" };
        self.outcomes[command.index()][usize::from(!ok)].get_or_init(|| {
            metrics
                .requests
                .with_label_values(&["tyrant", command.name(), label])
        })
    }

    /// The port's request latency histogram.
    pub(super) fn seconds(&self, metrics: &Metrics) -> &Histogram {
        self.seconds
            .get_or_init(|| metrics.request_seconds.with_label_values(&["tyrant"]))
    }
}

impl Shared {
    pub fn new(service: Service, settings: Settings) -> Arc<Self> {
        Arc::new(Self {
            service,
            denied: Denied::from_names(&settings.deny),
            settings,
            counters: stat::Counters::default(),
            started: Instant::now(),
            next_connection_id: AtomicU64::new(1),
            request_metrics: RequestMetrics::new(),
        })
    }
}
