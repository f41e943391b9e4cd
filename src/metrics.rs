//! Prometheus metrics, all prefixed `tidemark_`, rendered at `GET /metrics`.

use prometheus::{
    Counter, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// Every series the server exports. Cheap to clone handles out of; shared via `Arc`.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests by front door, route/command and outcome.
    pub requests: IntCounterVec,
    /// Request latency by front door.
    pub request_seconds: HistogramVec,
    /// Writes refused by the guard: reason = stale | tie | future_timestamp.
    pub guard_refusals: IntCounterVec,
    /// Number of writes applied per commit.
    pub commit_batch_size: Histogram,
    /// Time to commit one batch (including fsync when durable).
    pub commit_seconds: Histogram,
    /// Embedded engine: time of one checkpoint of the memtable into the database file.
    pub checkpoint_seconds: Histogram,
    /// Embedded engine: time writers were slowed down because checkpoints fell behind.
    pub write_throttle_seconds: Counter,
    /// Embedded engine: reads that reached the record cache, result = hit | miss.
    pub record_cache_reads: IntCounterVec,
    /// Embedded engine: bytes held by the record cache (set when counts are taken, as
    /// for every scrape of `/metrics`).
    pub record_cache_bytes: IntGauge,
    /// Records purged by the sweeper: kind = expired | tombstone.
    pub swept: IntCounterVec,
    /// Records in the store (live, expired-not-yet-purged and tombstones).
    pub records: IntGauge,
    /// Live keys (not deleted, not expired).
    pub keys: IntGauge,
    /// Open connections by front door.
    pub connections: IntGauge,
    /// PostgreSQL engine: pooled connections, state = in_use | idle.
    pub database_connections: IntGaugeVec,
    /// PostgreSQL engine: requests waiting for a pooled connection.
    pub database_waiting: IntGauge,
    /// PostgreSQL engine: failed operations, kind = unavailable | engine.
    pub database_errors: IntCounterVec,
    /// PostgreSQL engine: time of one store operation (pool wait and statements), by op.
    pub database_seconds: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tidemark_requests_total",
                "Requests by front door, route and outcome",
            ),
            &["door", "route", "outcome"],
        )
        .expect("static metric definition");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("tidemark_request_duration_seconds", "Request latency")
                .buckets(latency_buckets()),
            &["door"],
        )
        .expect("static metric definition");
        let guard_refusals = IntCounterVec::new(
            Opts::new(
                "tidemark_guard_refusals_total",
                "Writes refused by the timestamp guard, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let commit_batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "tidemark_commit_batch_size",
                "Writes made durable by one sync of the write-ahead log",
            )
            .buckets(vec![
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
            ]),
        )
        .expect("static metric definition");
        let commit_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tidemark_commit_duration_seconds",
                "Time of one sync of the write-ahead log",
            )
            .buckets(latency_buckets()),
        )
        .expect("static metric definition");
        let checkpoint_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tidemark_checkpoint_duration_seconds",
                "Time of one checkpoint of the memtable into the database file (embedded engine)",
            )
            .buckets(vec![
                0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("static metric definition");
        let write_throttle_seconds = Counter::new(
            "tidemark_write_throttle_seconds_total",
            "Time writes were held back because checkpoints fell behind (embedded engine)",
        )
        .expect("static metric definition");
        let record_cache_reads = IntCounterVec::new(
            Opts::new(
                "tidemark_record_cache_reads_total",
                "Reads past the memtables that the record cache answered (hit) or sent to the database file (miss) (embedded engine)",
            ),
            &["result"],
        )
        .expect("static metric definition");
        let record_cache_bytes = IntGauge::new(
            "tidemark_record_cache_bytes",
            "Bytes held by the record cache (embedded engine)",
        )
        .expect("static metric definition");
        let swept = IntCounterVec::new(
            Opts::new(
                "tidemark_swept_records_total",
                "Records purged by the sweeper",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let records = IntGauge::new(
            "tidemark_records",
            "Stored records, including tombstones and expired records awaiting purge",
        )
        .expect("static metric definition");
        let keys = IntGauge::new("tidemark_keys", "Live keys (neither deleted nor expired)")
            .expect("static metric definition");
        let connections = IntGauge::new("tidemark_tyrant_connections", "Open Tyrant connections")
            .expect("static metric definition");
        let database_connections = IntGaugeVec::new(
            Opts::new(
                "tidemark_database_connections",
                "Pooled database connections, by state (PostgreSQL engine)",
            ),
            &["state"],
        )
        .expect("static metric definition");
        let database_waiting = IntGauge::new(
            "tidemark_database_waiting",
            "Requests waiting for a pooled database connection (PostgreSQL engine)",
        )
        .expect("static metric definition");
        let database_errors = IntCounterVec::new(
            Opts::new(
                "tidemark_database_errors_total",
                "Failed database operations, by kind (PostgreSQL engine)",
            ),
            &["kind"],
        )
        .expect("static metric definition");
        let database_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tidemark_database_operation_duration_seconds",
                "Time of one store operation on the database, pool wait included (PostgreSQL engine)",
            )
            .buckets(latency_buckets()),
            &["op"],
        )
        .expect("static metric definition");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(guard_refusals.clone()),
            Box::new(commit_batch_size.clone()),
            Box::new(commit_seconds.clone()),
            Box::new(checkpoint_seconds.clone()),
            Box::new(write_throttle_seconds.clone()),
            Box::new(record_cache_reads.clone()),
            Box::new(record_cache_bytes.clone()),
            Box::new(swept.clone()),
            Box::new(records.clone()),
            Box::new(keys.clone()),
            Box::new(connections.clone()),
            Box::new(database_connections.clone()),
            Box::new(database_waiting.clone()),
            Box::new(database_errors.clone()),
            Box::new(database_seconds.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            request_seconds,
            guard_refusals,
            commit_batch_size,
            commit_seconds,
            checkpoint_seconds,
            write_throttle_seconds,
            record_cache_reads,
            record_cache_bytes,
            swept,
            records,
            keys,
            connections,
            database_connections,
            database_waiting,
            database_errors,
            database_seconds,
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_buckets() -> Vec<f64> {
    vec![
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        1.0,
    ]
}
