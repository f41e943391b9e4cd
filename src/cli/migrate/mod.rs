//! `tidemark migrate --from tyrant://HOST:PORT`: copy every record of a running Tokyo
//! Tyrant server into tidemark, each through the guard.
//!
//! The source is read a batch at a time — a pipelined run of `iternext`, then one
//! `mget` for the batch's keys (one `get` per key when the source refuses the mget) —
//! and each batch goes to the target as one import: `POST /admin/import` of a running
//! server, or [`Service::import`] on a store opened here (`--data-dir`,
//! `--database-url`). At most one batch is in memory at a time.
//!
//! Which timestamp a record gets is `--timestamps` ([`MigrateTimestamps`]): the copy's
//! start, the value's leading digits, or the `timestamp.<key>` record of the 2009 Lua
//! extension. The guard makes a second run safe: what tidemark already holds as new or
//! newer is refused and counted, not overwritten.
//!
//! With `--follow` the copy is followed by the master's update log ([`follow`]).

use std::collections::HashMap;
use std::io::Cursor;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::Failure;
use super::client::Admin;
use super::progress::Ticker;
use crate::clock::SystemClock;
use crate::config::{MigrateArgs, MigrateTimestamps};
use crate::metrics::Metrics;
use crate::record::{DEFAULT_CONTENT_TYPE, Meta, Record, State};
use crate::service::Service;
use crate::service::jsonl::{ExportLine, ImportReport};
use crate::service::maintenance::Imported;
use crate::store::{Durability, PostgresOptions, Store, StoreError, StoreOptions};
use crate::tyrant::client::{Connection, ConnectionError};
use crate::tyrant::commands::prefix_timestamp;

mod follow;

pub use follow::FollowSummary;

/// Exit status of a migration that finished but left some records uncopied for a
/// reason other than the guard (no timestamp, over a limit, refused by the store).
pub const EXIT_NOT_ALL_COPIED: u8 = 3;
/// The prefix of the records the 2009 Lua extension keeps a key's timestamp in.
pub const EXT_TIMESTAMP_PREFIX: &[u8] = b"timestamp.";
/// Uncopied records listed in the summary; the rest are only counted.
const LISTED_ERRORS: usize = 100;
/// Uncopied records echoed to stderr.
const ECHOED_ERRORS: usize = 10;
/// Page cache for an offline open; the work is one pass of writes.
const CACHE_BYTES: usize = 64 << 20;

/// What the migration did, printed as JSON on stdout at the end.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// The source, as given to --from.
    pub from: String,
    /// The --timestamps mode.
    pub timestamps: &'static str,
    /// When the copy started (µs since the Unix epoch): every record's timestamp
    /// under `--timestamps now`.
    pub started_at: u64,
    /// Keys the source's iteration returned (`timestamp.*` records included).
    pub read: u64,
    /// Records stored in tidemark: newer than what it held, or the key was free.
    pub copied: u64,
    /// Already in tidemark with this timestamp and content; nothing changed.
    pub repeated: u64,
    /// Older than what tidemark holds for the key; refused by the guard.
    pub stale: u64,
    /// Same timestamp as tidemark's record, different content; refused by the guard.
    pub tie: u64,
    /// Not copied: no readable timestamp (prefix: the value's leading digits; ext-keys:
    /// no `timestamp.<key>` record, or one without the digits).
    pub no_timestamp: u64,
    /// ext-keys: `timestamp.*` records read as timestamps and not copied as data.
    pub timestamp_records: u64,
    /// Listed by the iteration but gone by the time their values were fetched.
    pub gone: u64,
    /// Refused by tidemark for another reason (over a size limit, too far in the
    /// future, a store error on the record).
    pub failed: u64,
    /// The first uncopied records (no timestamp or failed), with the reason.
    pub errors: Vec<KeyError>,
    /// With --follow: what following the update log did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follow: Option<FollowSummary>,
}

/// Why one record was not copied.
#[derive(Debug, Clone, Serialize)]
pub struct KeyError {
    /// The key, as UTF-8 where it is (other bytes replaced).
    pub key: String,
    pub error: String,
}

impl Summary {
    fn not_copied(&mut self, key: &[u8], error: String) {
        if self.errors.len() < LISTED_ERRORS {
            self.errors.push(KeyError {
                key: String::from_utf8_lossy(key).into_owned(),
                error,
            });
        }
    }
}

/// Keys read and records copied so far, for the progress line.
#[derive(Debug, Default)]
struct Progress {
    read: AtomicU64,
    copied: AtomicU64,
}

pub async fn run(args: &MigrateArgs) -> Result<ExitCode, Failure> {
    let source = source_address(&args.from)?;
    // The source first: an unreachable one leaves no empty store behind.
    let mut conn = Connection::connect(&source, args.source_timeout)
        .await
        .map_err(|e| {
            Failure(format!(
                "cannot reach the Tyrant server at {source}: {e} (is it running?)"
            ))
        })?;
    let sink = Sink::open(args).await?;
    let migrated = migrate(args, &source, &mut conn, &sink).await;
    let closed = sink.close().await;
    let summary = migrated?;
    closed?;
    report(&summary);
    let follow_missed = summary
        .follow
        .as_ref()
        .is_some_and(|f| f.no_timestamp > 0 || f.failed > 0);
    Ok(
        if summary.no_timestamp > 0 || summary.failed > 0 || follow_missed {
            ExitCode::from(EXIT_NOT_ALL_COPIED)
        } else {
            ExitCode::SUCCESS
        },
    )
}

/// The copy, then with --follow the update log: from a position stored by an
/// earlier run (no copy then), else from the master's clock just before the copy.
async fn migrate(
    args: &MigrateArgs,
    source: &str,
    conn: &mut Connection,
    sink: &Sink,
) -> Result<Summary, Failure> {
    if !args.follow {
        return copy(args, source, conn, sink, now_micros()).await;
    }
    if let Some(position) = follow::stored_position(sink, source).await? {
        let mut summary = Summary {
            from: args.from.clone(),
            timestamps: mode_name(args.timestamps),
            ..Summary::default()
        };
        summary.follow = Some(follow::follow(args, source, sink, position, true).await?);
        return Ok(summary);
    }
    // Every log record at or after `from` is replayed, so the copy may miss none of
    // them; under `now` the copy is stamped just before it, so that each one wins.
    let from = follow::master_clock(conn).await.max(2);
    let mut summary = copy(args, source, conn, sink, from - 1).await?;
    follow::store_position(sink, source, from).await?;
    summary.follow = Some(follow::follow(args, source, sink, from, false).await?);
    Ok(summary)
}

/// `HOST:PORT` out of `tyrant://HOST:PORT`.
fn source_address(from: &str) -> Result<String, Failure> {
    let bad = || {
        Failure(format!(
            "--from must be tyrant://HOST:PORT, such as tyrant://127.0.0.1:1978, not {from:?}"
        ))
    };
    let rest = from.trim().strip_prefix("tyrant://").ok_or_else(bad)?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && !host.contains(['/', '@', '?', '#'])
        && (!host.contains(':') || (host.starts_with('[') && host.ends_with(']')));
    match port.parse::<u16>() {
        Ok(port) if port > 0 && host_ok => Ok(format!("{host}:{port}")),
        _ => Err(bad()),
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn mode_name(mode: MigrateTimestamps) -> &'static str {
    match mode {
        MigrateTimestamps::Now => "now",
        MigrateTimestamps::Prefix => "prefix",
        MigrateTimestamps::ExtKeys => "ext-keys",
    }
}

async fn copy(
    args: &MigrateArgs,
    source: &str,
    conn: &mut Connection,
    sink: &Sink,
    started_at: u64,
) -> Result<Summary, Failure> {
    let mut summary = Summary {
        from: args.from.clone(),
        timestamps: mode_name(args.timestamps),
        started_at,
        ..Summary::default()
    };
    let broke_off = |summary: &Summary, e: ConnectionError| {
        Failure(format!(
            "reading the Tyrant server at {source} failed after {} keys: {e}; the records \
             before were imported (running again is safe)",
            summary.read
        ))
    };
    if !conn.iterinit().await.map_err(|e| broke_off(&summary, e))? {
        return Err(Failure(format!(
            "the Tyrant server at {source} refused iterinit"
        )));
    }
    let progress = Arc::new(Progress::default());
    let shown = progress.clone();
    let ticker = Ticker::start("migrate", move || {
        format!(
            "{} keys read, {} records copied",
            shown.read.load(Ordering::Relaxed),
            shown.copied.load(Ordering::Relaxed)
        )
    });
    let batch = args.batch as usize;
    loop {
        let keys = conn
            .iternext_batch(batch)
            .await
            .map_err(|e| broke_off(&summary, e))?;
        let at_end = keys.len() < batch;
        summary.read += keys.len() as u64;
        let records = read_batch(args, conn, keys, &mut summary)
            .await
            .map_err(|e| broke_off(&summary, e))?;
        if !records.is_empty() {
            sink.import(records, &mut summary).await?;
        }
        progress.read.store(summary.read, Ordering::Relaxed);
        progress.copied.store(summary.copied, Ordering::Relaxed);
        if at_end {
            break;
        }
    }
    drop(ticker);
    Ok(summary)
}

/// The records of one batch of keys, each with its timestamp; what cannot be copied is
/// counted in `summary`.
async fn read_batch(
    args: &MigrateArgs,
    conn: &mut Connection,
    keys: Vec<Vec<u8>>,
    summary: &mut Summary,
) -> Result<Vec<(Vec<u8>, Record)>, ConnectionError> {
    let ext_keys = args.timestamps == MigrateTimestamps::ExtKeys;
    let mut data_keys = Vec::with_capacity(keys.len());
    for key in keys {
        if ext_keys && key.starts_with(EXT_TIMESTAMP_PREFIX) {
            summary.timestamp_records += 1;
        } else {
            data_keys.push(key);
        }
    }
    let mut wanted = data_keys.clone();
    if ext_keys {
        wanted.extend(data_keys.iter().map(|key| timestamp_key(key)));
    }
    let mut found = fetch(conn, wanted).await?;
    let mut records = Vec::with_capacity(data_keys.len());
    for key in data_keys {
        let Some(value) = found.remove(&key) else {
            summary.gone += 1;
            continue;
        };
        let timestamp = match args.timestamps {
            MigrateTimestamps::Now => Some(summary.started_at),
            MigrateTimestamps::Prefix => prefix_timestamp(&value, args.tyrant_ts_digits),
            MigrateTimestamps::ExtKeys => found
                .get(&timestamp_key(&key))
                .and_then(|stamp| prefix_timestamp(stamp, args.tyrant_ts_digits)),
        };
        let Some(timestamp) = timestamp else {
            summary.no_timestamp += 1;
            let why = match args.timestamps {
                MigrateTimestamps::ExtKeys => format!(
                    "no timestamp: no {}<key> record starting with {} digits",
                    String::from_utf8_lossy(EXT_TIMESTAMP_PREFIX),
                    args.tyrant_ts_digits
                ),
                _ => format!(
                    "no timestamp: the value does not start with {} digits",
                    args.tyrant_ts_digits
                ),
            };
            summary.not_copied(&key, why);
            continue;
        };
        records.push((
            key,
            Record {
                timestamp,
                state: State::Live {
                    value,
                    content_type: DEFAULT_CONTENT_TYPE.to_string(),
                    expires_at: None,
                },
                meta: Meta::default(),
            },
        ));
    }
    Ok(records)
}

fn timestamp_key(key: &[u8]) -> Vec<u8> {
    [EXT_TIMESTAMP_PREFIX, key].concat()
}

/// The values of `keys` that exist: one mget, or one get per key when the source
/// refuses the mget (tidemark does, past its reply budget).
async fn fetch(
    conn: &mut Connection,
    keys: Vec<Vec<u8>>,
) -> Result<HashMap<Vec<u8>, Vec<u8>>, ConnectionError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    if let Some(records) = conn.mget(keys.clone()).await? {
        return Ok(records.into_iter().collect());
    }
    let mut found = HashMap::with_capacity(keys.len());
    for key in keys {
        if let Some(value) = conn.get(key.clone()).await? {
            found.insert(key, value);
        }
    }
    Ok(found)
}

/// Where the records go.
enum Sink {
    /// A running server's `POST /admin/import`.
    Server(Admin),
    /// A store opened here: a stopped server's data directory, or a shared database.
    Local(Service),
}

impl Sink {
    async fn open(args: &MigrateArgs) -> Result<Self, Failure> {
        let policy = args.limits.policy();
        let metrics = Arc::new(Metrics::new());
        let store = match (&args.target.data_dir, &args.database.database_url) {
            (Some(_), Some(_)) => {
                return Err(Failure(
                    "give --data-dir or --database-url, not both".to_string(),
                ));
            }
            (None, None) => return Ok(Sink::Server(Admin::new(&args.target)?)),
            (Some(data_dir), None) => {
                let options = StoreOptions {
                    data_dir: data_dir.clone(),
                    durability: Durability::Immediate,
                    cache_size: CACHE_BYTES,
                    record_cache_size: 0,
                };
                Store::open(&options, metrics.clone()).map_err(|e| match e {
                    StoreError::InUse { .. } => Failure(format!(
                        "{} is open in another process, most likely a running tidemark \
                         server. Stop the server first, or leave out --data-dir to go \
                         through the running server (--server URL)",
                        data_dir.display()
                    )),
                    other => Failure(format!("cannot open {}: {other}", data_dir.display())),
                })?
            }
            (None, Some(url)) => {
                let database = &args.database;
                let options = PostgresOptions {
                    url: url.0.clone(),
                    password: database.resolve_password().map_err(Failure)?.map(|s| s.0),
                    pool_size: usize::from(database.database_pool_size),
                    connect_timeout: database.database_connect_timeout,
                    statement_timeout: database.database_statement_timeout,
                };
                Store::connect(&options, metrics.clone())
                    .await
                    .map_err(|e| Failure(format!("cannot open the database: {e}")))?
            }
        };
        Ok(Sink::Local(Service::new(
            store,
            Arc::new(SystemClock),
            policy,
            metrics,
        )))
    }

    /// Import one batch through the guard and count what it did.
    async fn import(
        &self,
        records: Vec<(Vec<u8>, Record)>,
        summary: &mut Summary,
    ) -> Result<(), Failure> {
        let keys: Vec<Vec<u8>> = records.iter().map(|(key, _)| key.clone()).collect();
        match self {
            Sink::Server(admin) => {
                let mut body = Vec::new();
                for (key, record) in &records {
                    serde_json::to_writer(&mut body, &ExportLine::from_record(key, record))
                        .map_err(|e| Failure(format!("cannot encode a record: {e}")))?;
                    body.push(b'\n');
                }
                drop(records);
                let report: ImportReport = admin.import(Cursor::new(body)).await?;
                summary.copied += report.applied;
                summary.repeated += report.repeated;
                summary.stale += report.stale;
                summary.tie += report.tie;
                summary.failed += report.invalid;
                for error in report.errors {
                    let index = usize::try_from(error.line.saturating_sub(1)).unwrap_or(0);
                    let key = keys.get(index).map_or(&[][..], Vec::as_slice);
                    summary.not_copied(key, error.error);
                }
            }
            Sink::Local(service) => {
                let outcomes = service.import(records).await.map_err(|e| {
                    Failure(format!(
                        "the import failed after {} records were copied: {e} (running \
                         again is safe)",
                        summary.copied
                    ))
                })?;
                for (key, outcome) in keys.iter().zip(outcomes) {
                    match outcome {
                        Imported::Applied => summary.copied += 1,
                        Imported::Repeated => summary.repeated += 1,
                        Imported::Stale { .. } => summary.stale += 1,
                        Imported::Tie { .. } => summary.tie += 1,
                        Imported::Refused(e) => {
                            summary.failed += 1;
                            summary.not_copied(key, e.to_string());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn close(self) -> Result<(), Failure> {
        match self {
            Sink::Server(_) => Ok(()),
            Sink::Local(service) => service
                .close()
                .await
                .map_err(|e| Failure(format!("cannot close the store: {e}"))),
        }
    }
}

/// The summary as JSON on stdout; a human line and the first uncopied keys on stderr.
fn report(summary: &Summary) {
    if let Ok(json) = serde_json::to_string(summary) {
        println!("{json}");
    }
    eprintln!(
        "tidemark migrate: {} keys read from {}: {} copied; skipped {} repeated, {} stale, \
         {} tie (tidemark already had them); {} without a timestamp, {} failed, {} gone \
         from the source{}",
        summary.read,
        summary.from,
        summary.copied,
        summary.repeated,
        summary.stale,
        summary.tie,
        summary.no_timestamp,
        summary.failed,
        summary.gone,
        if summary.timestamp_records > 0 {
            format!(
                "; {} timestamp.* records used as timestamps",
                summary.timestamp_records
            )
        } else {
            String::new()
        }
    );
    for error in summary.errors.iter().take(ECHOED_ERRORS) {
        eprintln!("tidemark migrate: {:?}: {}", error.key, error.error);
    }
    let unlisted = (summary.no_timestamp + summary.failed).saturating_sub(ECHOED_ERRORS as u64);
    if unlisted > 0 {
        eprintln!("tidemark migrate: ...and {unlisted} more not copied");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tyrant_urls_with_a_host_and_port_are_accepted() {
        assert_eq!(
            source_address("tyrant://127.0.0.1:1978").ok().as_deref(),
            Some("127.0.0.1:1978")
        );
        assert_eq!(
            source_address("tyrant://[::1]:1978/").ok().as_deref(),
            Some("[::1]:1978")
        );
        assert_eq!(
            source_address("tyrant://db.internal:11211").ok().as_deref(),
            Some("db.internal:11211")
        );
        for bad in [
            "127.0.0.1:1978",
            "http://127.0.0.1:1978",
            "tyrant://127.0.0.1",
            "tyrant://:1978",
            "tyrant://host:0",
            "tyrant://host:99999",
            "tyrant://::1:1978",
            "tyrant://user@host:1978",
        ] {
            assert!(source_address(bad).is_err(), "{bad}");
        }
    }
}
