//! Command line and environment configuration. Every flag is also an env var, so a
//! container is configured by environment alone.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "tidemark",
    version,
    about = "A session store that refuses stale writes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (HTTP/JSON and Tokyo Tyrant ports over one embedded store).
    Serve(Box<ServeConfig>),
    /// Print the OpenAPI document the server serves at /openapi.json.
    Openapi,
    /// Probe a running server's /healthz (exit 0 when healthy); for container health checks.
    Healthcheck(HealthcheckArgs),
    /// Copy the whole store — timestamps and tombstones included — into a backup file,
    /// from a running server (default) or a stopped one's data directory.
    Backup(BackupArgs),
    /// Put a backup file in place as a data directory's database (server stopped).
    Restore(RestoreArgs),
    /// Write every record, tombstones included, as JSON lines.
    Export(ExportArgs),
    /// Apply JSON-lines records through the timestamp guard: newer data is never overwritten.
    Import(ImportArgs),
    /// Copy every record of a running Tokyo Tyrant server into tidemark through the
    /// timestamp guard: into a running server (default) or offline.
    Migrate(Box<MigrateArgs>),
    /// Closed-loop load generator for tidemark (HTTP and Tyrant) and Redis; also
    /// installed as `tidemark-bench`.
    Bench(Box<BenchArgs>),
}

// ---------------------------------------------------------------- bench

/// Closed-loop load generator for tidemark (HTTP and Tokyo Tyrant ports) and Redis.
///
/// Each connection is a task with its own TCP connection that keeps --pipeline
/// requests outstanding and sends the next request as soon as a reply arrives.
/// After --warmup, requests are measured for --duration; the report gives ops/s,
/// latency percentiles and counts of ok / stale (guarded write refused as older) /
/// miss (read of an absent key) / error.
#[derive(Debug, Clone, Parser)]
#[command(name = "tidemark-bench", version, verbatim_doc_comment)]
pub struct BenchArgs {
    /// Server protocol: tidemark's HTTP/JSON API, the Tokyo Tyrant binary protocol
    /// (tidemark's second port, or any ttserver), or Redis (RESP).
    #[arg(long, value_enum)]
    pub target: BenchTarget,

    /// Server address, HOST:PORT. Must resolve to loopback unless --allow-remote.
    #[arg(long)]
    pub addr: String,

    /// Permit a non-loopback --addr. Only point this at servers you own.
    #[arg(long)]
    pub allow_remote: bool,

    /// Operation. tidemark-http: put (guarded PUT with X-Write-Timestamp), get.
    /// tyrant: put (plain C8 10; alias plain-put), guarded-put (ext tsput), get.
    /// redis: set (alias put, plain-put), get, guarded-set (alias guarded-put:
    /// EVALSHA of a Lua script that keeps a timestamp per key and refuses older writes).
    #[arg(long, value_enum)]
    pub op: BenchOp,

    /// Concurrent connections, each one task with its own TCP connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub connections: u32,

    /// Requests outstanding per connection (1 = strict request→response).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub pipeline: u32,

    /// Measured time, e.g. 10s, 500ms, 1m. 0 with --prefill only fills the keyspace.
    #[arg(long, default_value = "10s", value_parser = parse_bounded_duration)]
    pub duration: Duration,

    /// Unmeasured load before the measured time (connections, caches, allocator warm up).
    #[arg(long, default_value = "2s", value_parser = parse_bounded_duration)]
    pub warmup: Duration,

    /// Size of the keyspace; keys are bk0000000000 … chosen uniformly at random.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000_000))]
    pub keys: u64,

    /// Send every request to one of this many keys, spread evenly over the keyspace
    /// (every keys/N-th key), instead of to any key: a hot set, as when 1 % of the
    /// sessions are active. 0 = every key is equally likely.
    #[arg(long, default_value_t = 0)]
    pub hot_keys: u64,

    /// Width of the throughput windows in the report (ops/s per window of the
    /// measured time, for finding stalls).
    #[arg(long, default_value = "1s", value_parser = parse_bounded_duration)]
    pub window: Duration,

    /// Value bytes per write (a tyrant guarded-put value is at least its 16 timestamp digits).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub value_size: u32,

    /// Write every key once before warm-up (with this target's plain write, or the
    /// guarded one where that is the only write), so a get run finds values.
    #[arg(long)]
    pub prefill: bool,

    /// Stop after this many measured requests (0 = no cap; --duration still applies).
    #[arg(long, default_value_t = 0)]
    pub max_ops: u64,

    /// Client runtime worker threads (1 = a single-threaded runtime). The client shares
    /// the machine with the server, so more threads can take CPU from the server.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub threads: u32,

    /// Longest wait for a connect, a write or a reply before the connection is
    /// counted as failed and reopened.
    #[arg(long, default_value = "5s", value_parser = parse_bounded_duration)]
    pub io_timeout: Duration,

    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    pub json: bool,

    /// Free-form label copied into the report (e.g. which server configuration).
    #[arg(long, default_value = "")]
    pub label: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BenchTarget {
    /// tidemark's HTTP/JSON port.
    TidemarkHttp,
    /// A Tokyo Tyrant binary port (tidemark's or ttserver's).
    Tyrant,
    /// A Redis server (RESP2).
    Redis,
}

/// `tidemark bench --op`: which request to send (not every one exists for every target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchOp {
    Put,
    PlainPut,
    GuardedPut,
    Get,
    Set,
    GuardedSet,
}

/// Longest --duration / --warmup / --io-timeout: keeps every run bounded.
const MAX_PHASE: Duration = Duration::from_secs(3600);

fn parse_bounded_duration(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d > MAX_PHASE {
        return Err(format!("at most {}s", MAX_PHASE.as_secs()));
    }
    Ok(d)
}

/// Where backup, export and import find the store: a running server (the default), or
/// with --data-dir the data directory of a stopped one.
#[derive(Debug, Clone, Args)]
pub struct StoreTarget {
    /// Base URL of the running server's HTTP API.
    #[arg(long, env = "TIDEMARK_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,

    #[command(flatten)]
    pub auth: AuthToken,

    /// Open the database in this directory instead of asking a server. The server must
    /// be stopped: only one process may open the database.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// The bearer token: `serve` requires it on /keys, /admin and /metrics; backup,
/// export and import send it to the server.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthToken {
    /// Bearer token: required by the server on /keys, /admin and /metrics (unset = no
    /// authentication); sent by backup, export and import.
    #[arg(
        long = "auth-token",
        visible_alias = "token",
        env = "TIDEMARK_AUTH_TOKEN",
        hide_env_values = true
    )]
    pub auth_token: Option<Secret>,

    /// File holding the bearer token (e.g. a Docker secret); trailing newline ignored.
    #[arg(
        long = "auth-token-file",
        visible_alias = "token-file",
        env = "TIDEMARK_AUTH_TOKEN_FILE",
        conflicts_with = "auth_token"
    )]
    pub auth_token_file: Option<PathBuf>,
}

impl AuthToken {
    /// The token given directly, or read from the file (trailing newline ignored).
    pub fn resolve(&self) -> Result<Option<Secret>, String> {
        if let Some(token) = &self.auth_token {
            return non_empty(token.0.clone()).map(Some);
        }
        let Some(path) = &self.auth_token_file else {
            return Ok(None);
        };
        non_empty(read_secret_file(path, "auth token")?.0).map(Some)
    }
}

/// A secret kept in a file (e.g. a Docker secret), without its trailing newline.
fn read_secret_file(path: &std::path::Path, what: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {what} file {}: {e}", path.display()))?;
    Ok(Secret(text.trim_end_matches(['\r', '\n']).to_string()))
}

#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// The backup file to write (written under a temporary name, then renamed).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub target: StoreTarget,
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The backup file (from `tidemark backup`).
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,

    /// Data directory to restore into; its server must be stopped.
    #[arg(long, env = "TIDEMARK_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Replace an existing database in DIR.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// The JSON-lines file to write; `-` writes to standard output.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// Replace FILE if it exists.
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub target: StoreTarget,
}

#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// The JSON-lines file to read; `-` reads standard input.
    #[arg(long = "in", value_name = "FILE")]
    pub input: PathBuf,

    #[command(flatten)]
    pub target: StoreTarget,

    /// With --data-dir, the limits a server would apply.
    #[command(flatten)]
    pub limits: WriteLimits,
}

/// Copy every record of a running Tokyo Tyrant server (ttserver, or another tidemark's
/// Tyrant port) into tidemark, each through the timestamp guard, so running it again
/// is safe: a record is refused where tidemark already holds something as new or newer.
///
/// The source is read with iterinit/iternext and mget, --batch keys at a time, and
/// each batch is imported as one write, so memory stays bounded whatever its size.
/// The target is the running server named by --server (through POST /admin/import,
/// with --token), or offline the stopped server's --data-dir, or the shared
/// database of --database-url.
///
/// Prints a JSON summary on stdout and a human one on stderr. Exit status: 0 when
/// every record was copied or refused by the guard as already stored (repeated,
/// stale, tie); 3 when some were not copied for another reason (no timestamp, over
/// a limit, refused by the store); 1 when the copy could not run or broke off.
#[derive(Debug, Clone, Args)]
#[command(verbatim_doc_comment)]
pub struct MigrateArgs {
    /// The Tokyo Tyrant server to copy from, as tyrant://HOST:PORT.
    #[arg(long, value_name = "tyrant://HOST:PORT")]
    pub from: String,

    /// Where each record's write timestamp comes from.
    #[arg(long, value_enum, default_value_t = MigrateTimestamps::Now)]
    pub timestamps: MigrateTimestamps,

    /// With --timestamps prefix or ext-keys: how many leading digits carry the
    /// timestamp (10 = seconds, 13 = ms, 16 = µs, 19 = ns), as for `tsput`.
    #[arg(long, env = "TIDEMARK_TYRANT_TS_DIGITS", default_value_t = 16, value_parser = parse_ts_digits)]
    pub tyrant_ts_digits: usize,

    /// Keys read from the source (one pipelined iternext run, one mget) and imported
    /// (one write) at a time.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,

    /// Longest wait for the source to connect or answer one request.
    #[arg(long, default_value = "30s", value_parser = parse_timeout)]
    pub source_timeout: Duration,

    /// After the copy, stay attached to the source's update log (`repl`; the source
    /// runs with -ulog and -sid) and apply each logged write, until SIGINT/SIGTERM or
    /// --follow-for. A later --follow run resumes where the last one stopped.
    #[arg(long)]
    pub follow: bool,

    /// With --follow: the slave server id sent in the repl request (1-2147483647, not
    /// the master's own -sid).
    #[arg(long, default_value_t = 2_147_483_647, value_parser = clap::value_parser!(u32).range(1..=2_147_483_647))]
    pub sid: u32,

    /// With --follow: stop following after this long (as on SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_timeout, requires = "follow")]
    pub follow_for: Option<Duration>,

    #[command(flatten)]
    pub target: StoreTarget,

    /// Offline into a shared PostgreSQL database instead of a server or --data-dir.
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Offline (--data-dir, --database-url), the limits a server would apply.
    #[command(flatten)]
    pub limits: WriteLimits,
}

/// `tidemark migrate --timestamps`: which timestamp a copied record gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrateTimestamps {
    /// One timestamp for every record: the time the copy started (so any write made
    /// to tidemark after that moment wins over the copy).
    Now,
    /// The value's leading --tyrant-ts-digits digits, as `ext tsput` reads them; a
    /// value without them is skipped and counted as `no_timestamp`.
    Prefix,
    /// The `timestamp.<key>` record the 2009 Lua extension keeps beside each key (its
    /// leading --tyrant-ts-digits digits); `timestamp.*` records are not copied as data,
    /// and a key without a readable one is skipped and counted as `no_timestamp`.
    ExtKeys,
}

/// The limits and guard settings every write obeys: `serve` enforces them, and
/// `import --data-dir` applies them as a server would (same flags, same variables).
#[derive(Debug, Clone, Args)]
pub struct WriteLimits {
    /// Largest accepted value, in bytes (at most 256 MiB).
    #[arg(long, env = "TIDEMARK_MAX_VALUE_BYTES", default_value_t = 1 << 20, value_parser = parse_max_value_bytes)]
    pub max_value_bytes: usize,

    /// Largest accepted key, in bytes (at most 64 KiB).
    #[arg(long, env = "TIDEMARK_MAX_KEY_BYTES", default_value_t = 4096, value_parser = parse_max_key_bytes)]
    pub max_key_bytes: usize,

    /// How long deletes (and expired records) keep guarding their key before they are purged.
    #[arg(long, env = "TIDEMARK_TOMBSTONE_GRACE", default_value = "1h", value_parser = parse_duration)]
    pub tombstone_grace: Duration,

    /// Refuse write timestamps further than this ahead of the server clock; 0 disables.
    #[arg(long, env = "TIDEMARK_MAX_FUTURE_SKEW", default_value = "60s", value_parser = parse_duration)]
    pub max_future_skew: Duration,

    /// Absolute lifetime of every key from its creation (e.g. `12h`): no TTL or touch
    /// moves its expiry past creation plus this. Off by default; `X-Max-Lifetime` on
    /// the creating write can shorten it.
    #[arg(long, env = "TIDEMARK_MAX_SESSION_LIFETIME", value_parser = parse_lifetime)]
    pub max_session_lifetime: Option<Duration>,
}

impl WriteLimits {
    /// The service's policy for these limits.
    pub fn policy(&self) -> crate::service::Policy {
        crate::service::Policy {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            grace_micros: micros(self.tombstone_grace),
            max_future_skew_micros: micros(self.max_future_skew),
            max_lifetime_micros: self.max_session_lifetime.map(micros),
        }
    }
}

/// A lifetime of at least one second and at most the longest TTL.
fn parse_lifetime(text: &str) -> Result<Duration, String> {
    let lifetime = parse_duration(text)?;
    let max = Duration::from_secs(crate::service::MAX_TTL_SECS);
    if lifetime < Duration::from_secs(1) || lifetime > max {
        return Err(format!(
            "a session lifetime must be between 1s and {}",
            humantime::format_duration(max)
        ));
    }
    Ok(lifetime)
}

/// Largest `--max-value-bytes`: the write-ahead log frames lengths as `u32`, and a
/// Tyrant frame carries a value with its key and header in one such frame.
pub const MAX_VALUE_BYTES_LIMIT: usize = 256 << 20;
/// Largest `--max-key-bytes`.
pub const MAX_KEY_BYTES_LIMIT: usize = 64 << 10;

fn parse_max_value_bytes(text: &str) -> Result<usize, String> {
    parse_bounded(text, MAX_VALUE_BYTES_LIMIT)
}

fn parse_max_key_bytes(text: &str) -> Result<usize, String> {
    parse_bounded(text, MAX_KEY_BYTES_LIMIT)
}

fn parse_bounded(text: &str, max: usize) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("must be a whole number of bytes from 1 to {max}")),
    }
}

#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// The server's HTTP address; a wildcard host (0.0.0.0, [::]) is probed on loopback.
    #[arg(long, env = "TIDEMARK_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Path to probe.
    #[arg(long, default_value = "/healthz")]
    pub path: String,

    /// Give up after this long.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// A secret string whose Debug output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// A shared PostgreSQL-wire database instead of the embedded store, for several
/// stateless replicas behind one load balancer.
#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// Store everything in this PostgreSQL-wire database (`postgres://` or
    /// `postgresql://`, libpq URL form: `sslmode`, `sslrootcert`, `application_name`
    /// …) instead of the embedded store in --data-dir.
    #[arg(long, env = "TIDEMARK_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: Option<Secret>,

    /// File holding the database password (e.g. a Docker secret); trailing newline
    /// ignored. Otherwise PGPASSWORD, or the password in the URL, is used.
    #[arg(long, env = "TIDEMARK_DATABASE_PASSWORD_FILE")]
    pub database_password_file: Option<PathBuf>,

    /// Connections to the database kept by this replica.
    #[arg(long, env = "TIDEMARK_DATABASE_POOL_SIZE", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub database_pool_size: u16,

    /// Longest wait for a database connection (at start, and for each request); at
    /// least 1ms.
    #[arg(long, env = "TIDEMARK_DATABASE_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub database_connect_timeout: Duration,

    /// Longest time one statement may run before the database cancels it; at least 1ms
    /// (there is no "no limit": it bounds how long a request can wait on the database).
    #[arg(long, env = "TIDEMARK_DATABASE_STATEMENT_TIMEOUT", default_value = "5s", value_parser = parse_timeout)]
    pub database_statement_timeout: Duration,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: show only whether one is set.
        f.debug_struct("DatabaseArgs")
            .field("database_url", &self.database_url.as_ref().map(|_| "***"))
            .field("database_password_file", &self.database_password_file)
            .field("database_pool_size", &self.database_pool_size)
            .field("database_connect_timeout", &self.database_connect_timeout)
            .field(
                "database_statement_timeout",
                &self.database_statement_timeout,
            )
            .finish()
    }
}

impl DatabaseArgs {
    /// The password to use, if one is given apart from the URL: the password file
    /// first, then PGPASSWORD.
    pub fn resolve_password(&self) -> Result<Option<Secret>, String> {
        if let Some(path) = &self.database_password_file {
            return read_secret_file(path, "database password").map(Some);
        }
        Ok(std::env::var("PGPASSWORD").ok().map(Secret))
    }
}

fn parse_database_url(text: &str) -> Result<Secret, String> {
    let text = text.trim();
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        Ok(Secret(text.to_string()))
    } else {
        Err("must start with postgres:// or postgresql://".into())
    }
}

/// When a write is acknowledged relative to reaching the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Acknowledge a write only after the commit holding it is fsynced (survives kill -9).
    Immediate,
    /// Acknowledge once written to the log, fsync at least every --flush-interval: kill -9
    /// loses nothing, a power loss or kernel crash can lose the last interval's writes.
    Relaxed,
}

/// Whether plain Tyrant writes (put, putkeep, putnr) are timestamp-guarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TyrantGuard {
    /// Plain writes behave as in Tokyo Tyrant; only `ext tsput`/`tsout` are guarded.
    Off,
    /// Plain writes read their timestamp from the value's leading digits.
    Prefix,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    /// Address of the HTTP/JSON API.
    #[arg(long, env = "TIDEMARK_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of the Tokyo Tyrant binary protocol port.
    #[arg(long, env = "TIDEMARK_TYRANT_ADDR", default_value = "127.0.0.1:1978")]
    pub tyrant_addr: SocketAddr,

    /// Directory holding the database file (created if missing). Not used when
    /// --database-url is set.
    #[arg(long, env = "TIDEMARK_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// When writes are acknowledged: after fsync (immediate) or once written to the log
    /// (relaxed).
    #[arg(long, env = "TIDEMARK_DURABILITY", value_enum, default_value_t = Durability::Immediate)]
    pub durability: Durability,

    /// With --durability relaxed: the longest time an acknowledged write waits for fsync.
    #[arg(long, env = "TIDEMARK_FLUSH_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub flush_interval: Duration,

    #[command(flatten)]
    pub limits: WriteLimits,

    /// Page cache of the storage engine, in bytes (caps most of the memory used for data).
    #[arg(long, env = "TIDEMARK_CACHE_SIZE", default_value_t = 256 << 20)]
    pub cache_size: usize,

    /// Decoded records kept for repeated reads of the same keys, in bytes, beside the
    /// page cache (embedded engine; 0 turns it off). Sized for the sessions in use.
    #[arg(long, env = "TIDEMARK_RECORD_CACHE_SIZE", default_value_t = 64 << 20)]
    pub record_cache_size: usize,

    /// Threads serving both ports (the async runtime's workers); default: one per CPU.
    /// One is best when the clients share this machine's few cores.
    #[arg(long, env = "TIDEMARK_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// How often the sweeper looks for expired records and purgeable tombstones.
    #[arg(long, env = "TIDEMARK_SWEEP_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub sweep_interval: Duration,

    /// Longest time in-flight requests get to finish after a shutdown signal.
    #[arg(long, env = "TIDEMARK_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Number of leading value digits that carry the timestamp in Tyrant `tsput`
    /// (10 = seconds, 13 = milliseconds, 16 = microseconds, 19 = nanoseconds).
    #[arg(long, env = "TIDEMARK_TYRANT_TS_DIGITS", default_value_t = 16, value_parser = parse_ts_digits)]
    pub tyrant_ts_digits: usize,

    /// Guard plain Tyrant put/putkeep/putnr by the value's leading timestamp digits.
    #[arg(long, env = "TIDEMARK_TYRANT_GUARD", value_enum, default_value_t = TyrantGuard::Off)]
    pub tyrant_guard: TyrantGuard,

    /// Comma-separated Tyrant command names to refuse (answered like a masked command).
    #[arg(
        long,
        env = "TIDEMARK_TYRANT_DENY",
        value_delimiter = ',',
        default_value = ""
    )]
    pub tyrant_deny: Vec<String>,

    /// A Tyrant request that has started must complete within this time.
    #[arg(long, env = "TIDEMARK_TYRANT_FRAME_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub tyrant_frame_timeout: Duration,

    /// After SIGTERM, how long /readyz reports 503 before the listeners stop accepting,
    /// so a load balancer has time to notice and stop routing here.
    #[arg(long, env = "TIDEMARK_DRAIN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,

    #[command(flatten)]
    pub auth: AuthToken,

    /// Serve /metrics on this separate address instead of the API address.
    #[arg(long, env = "TIDEMARK_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Comma-separated origins allowed by CORS (unset = CORS off); `*` allows any.
    #[arg(long, env = "TIDEMARK_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Longest time one HTTP request may take before it is answered 503.
    #[arg(long, env = "TIDEMARK_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// Longest time a client may take to send a request's headers (slowloris guard).
    #[arg(long, env = "TIDEMARK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Most simultaneous HTTP connections; more are closed on accept.
    #[arg(long, env = "TIDEMARK_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,

    /// Most simultaneous Tyrant connections; more are closed on accept.
    #[arg(long, env = "TIDEMARK_TYRANT_MAX_CONNECTIONS", default_value_t = 4096)]
    pub tyrant_max_connections: usize,

    /// Comma-separated CIDRs allowed to connect to the Tyrant port (unset = any);
    /// the protocol has no authentication.
    #[arg(long, env = "TIDEMARK_TYRANT_ALLOW", value_delimiter = ',')]
    pub tyrant_allow: Vec<ipnet::IpNet>,

    /// Address of the memcached text protocol port (unset = no such port). It shares
    /// --tyrant-allow, --tyrant-max-connections, --tyrant-frame-timeout and
    /// --tyrant-ts-digits.
    #[arg(long, env = "TIDEMARK_MEMCACHED_ADDR")]
    pub memcached_addr: Option<SocketAddr>,

    /// Guard memcached set/add/replace by the value's leading --tyrant-ts-digits digits.
    #[arg(long, env = "TIDEMARK_MEMCACHED_GUARD", value_enum, default_value_t = TyrantGuard::Off)]
    pub memcached_guard: TyrantGuard,

    /// Let memcached `flush_all` remove every record (refused otherwise).
    #[arg(long, env = "TIDEMARK_MEMCACHED_ALLOW_FLUSH")]
    pub memcached_allow_flush: bool,

    /// Log format.
    #[arg(long, env = "TIDEMARK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Default for ServeConfig {
    fn default() -> Self {
        // The same defaults as the command line, so tests and embedders start from them.
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            serve: ServeConfig,
        }
        match Defaults::try_parse_from(["tidemark"]) {
            Ok(d) => d.serve,
            Err(e) => panic!("built-in defaults must parse: {e}"),
        }
    }
}

fn non_empty(token: String) -> Result<Secret, String> {
    if token.trim().is_empty() {
        Err("the auth token is empty".into())
    } else {
        Ok(Secret(token))
    }
}

/// Parse "100ms", "60s", "1h" (humantime), or a bare number of seconds ("0" disables).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.trim().parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text.trim()).map_err(|e| e.to_string())
}

/// A database timeout: a duration of at least 1 ms. Zero is refused rather than read as
/// "unlimited": these two bound every request's wait, so a 503 comes instead of a hang.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if d < Duration::from_millis(1) {
        return Err("must be at least 1ms".into());
    }
    Ok(d)
}

fn parse_ts_digits(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n @ (10 | 13 | 16 | 19)) => Ok(n),
        _ => Err("must be 10 (seconds), 13 (ms), 16 (µs) or 19 (ns)".into()),
    }
}

/// Duration in whole microseconds, saturating.
pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(["tidemark"].iter().chain(args).copied())
    }

    fn serve_limits(args: &[&str]) -> Result<WriteLimits, clap::Error> {
        let argv: Vec<&str> = ["serve"].iter().chain(args).copied().collect();
        parse(&argv).map(|cli| match cli.command {
            Command::Serve(config) => config.limits,
            other => panic!("parsed as {other:?}"),
        })
    }

    #[test]
    fn a_value_limit_beyond_what_the_log_can_frame_is_refused_at_start() {
        let max = MAX_VALUE_BYTES_LIMIT.to_string();
        let over = (MAX_VALUE_BYTES_LIMIT + 1).to_string();
        assert_eq!(
            serve_limits(&["--max-value-bytes", &max])
                .expect("the limit itself")
                .max_value_bytes,
            MAX_VALUE_BYTES_LIMIT
        );
        assert!(serve_limits(&["--max-value-bytes", &over]).is_err());
        assert!(serve_limits(&["--max-value-bytes", "0"]).is_err());
        assert!(serve_limits(&["--max-key-bytes", "65537"]).is_err());
    }

    #[test]
    fn serve_and_import_read_the_same_limit_flags() {
        let flags = [
            "--max-value-bytes",
            "2048",
            "--max-key-bytes",
            "100",
            "--tombstone-grace",
            "5m",
            "--max-future-skew",
            "0",
        ];
        let served = serve_limits(&flags).expect("serve parses");
        let argv: Vec<&str> = ["import", "--in", "x.jsonl"]
            .iter()
            .chain(flags.iter())
            .copied()
            .collect();
        let imported = match parse(&argv).expect("import parses").command {
            Command::Import(args) => args.limits,
            other => panic!("parsed as {other:?}"),
        };
        assert_eq!(served.policy().max_value_bytes, 2048);
        assert_eq!(
            format!("{:?}", served.policy()),
            format!("{:?}", imported.policy())
        );
    }

    #[test]
    fn the_database_password_comes_from_its_file_and_the_url_never_prints() {
        let dir = std::env::temp_dir().join(format!("tidemark-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("db-password");
        std::fs::write(&file, "s3cret\n").expect("write password file");
        let argv = [
            "serve",
            "--database-url",
            "postgres://app:inline-pass@db:5432/tidemark?sslmode=verify-full",
            "--database-password-file",
            file.to_str().expect("UTF-8 path"),
        ];
        let config = match parse(&argv).expect("parses").command {
            Command::Serve(config) => config,
            other => panic!("parsed as {other:?}"),
        };
        let password = config.database.resolve_password().expect("readable");
        assert_eq!(password.map(|p| p.0), Some("s3cret".to_string()));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("inline-pass") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(parse(&["serve", "--database-url", "mysql://db/x"]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn database_timeouts_of_zero_are_refused_at_start_instead_of_meaning_unlimited() {
        for flag in ["--database-connect-timeout", "--database-statement-timeout"] {
            assert!(parse(&["serve", flag, "0"]).is_err(), "{flag} 0");
            assert!(parse(&["serve", flag, "500us"]).is_err(), "{flag} 500us");
            assert!(parse(&["serve", flag, "250ms"]).is_ok(), "{flag} 250ms");
        }
    }
}
