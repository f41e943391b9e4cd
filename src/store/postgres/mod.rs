//! The PostgreSQL-wire engine: every record is one row of `tidemark_records`, and the
//! guard is decided by the database in one upsert, so any number of tidemark
//! replicas can share one database.
//!
//! The only module that imports tokio-postgres, deadpool-postgres and rustls.
//!
//! * [`sql`]: the statements and the row ↔ [`Record`] mapping (u64s stored as
//!   order-preserving bigints).
//! * [`schema`]: the numbered migrations in `migrations/postgres/`.
//! * [`config`]: the URL, its TLS parameters and redacted printing.
//! * [`tls`]: rustls client configurations per `sslmode`.
//! * [`error`]: which driver errors mean "unavailable now".
//! * [`guarded`]: the guarded write's upsert, and the rule run with the row locked.
//! * [`range`]: key ranges (prefix, cursor) as bytea bounds.
//! * [`probe`]: the background reachability check and the pool's gauges.
//! * [`postgres_only`]: advisory locks and `pg_total_relation_size`.
//!
//! Every operation runs under a client-side deadline on top of the server's
//! `statement_timeout`, and the pool's waits are bounded, so a dead database turns
//! into [`StoreError::Unavailable`] in bounded time instead of a hang.
//!
//! PostgreSQL-only pieces (advisory locks, `pg_total_relation_size`) are each behind
//! one function in [`postgres_only`] (the migration lock in [`schema`]);
//! migrations/postgres/README.md lists them.

mod config;
mod error;
mod guarded;
mod postgres_only;
mod probe;
mod range;
mod schema;
mod sql;
mod tls;

pub use config::{PostgresOptions, SslMode};
pub use schema::SCHEMA_VERSION;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use deadpool_postgres::tokio_postgres::types::ToSql;
use deadpool_postgres::tokio_postgres::{IsolationLevel, NoTls, Row};
use deadpool_postgres::{
    GenericClient, Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use self::error::{deadline_passed, from_driver, from_pool, is_retryable_conflict};
use self::guarded::{resolve_locked, upsert_on};
use self::postgres_only::{table_size, try_lock_sweep};
use self::probe::probe_loop;
use self::range::{prefix_successor, scan_lower_bound};
use self::sql::{DecodeError, Params, to_sql};
use crate::metrics::Metrics;
use crate::record::Record;
use crate::store::{Counts, GuardClock, Guarded, GuardedWrite, KeyRange, Purged, StoreError};

/// Longest key this engine stores: a B-tree index entry holds at most about a third
/// of an 8 KiB page (2,704 bytes), and keys are not compressible in general.
pub const MAX_KEY_BYTES: usize = 2048;

/// Lock attempts for a read-modify-write on an absent key raced by inserts.
const MAX_LOCK_ROUNDS: usize = 16;
/// Attempts for a write or batch that lost a deadlock or serialization conflict.
const MAX_BATCH_ATTEMPTS: usize = 3;
/// Rows per page of an export.
const EXPORT_PAGE: i64 = 1_000;
/// Writes in a batch per extra `op_timeout` of client-side deadline.
const BATCH_WRITES_PER_DEADLINE: usize = 200;

/// Handle to a PostgreSQL-wire database; cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    location: String,
    reachable: Arc<AtomicBool>,
    probe: std::sync::Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    /// Client-side deadline on one operation: a pool wait or connect, plus a statement.
    op_timeout: Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(probe) = self.probe.get_mut().ok().and_then(Option::take) {
            probe.abort();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("location", &self.inner.location)
            .finish()
    }
}

impl PgStore {
    /// Connect (retrying for up to `connect_timeout`), apply migrations and start the
    /// reachability probe.
    pub async fn connect(
        options: &PostgresOptions,
        metrics: Arc<Metrics>,
    ) -> Result<PgStore, StoreError> {
        let url = config::parse(options)?;
        let location = config::location(&url.config);
        let manager_config = ManagerConfig {
            // A closed connection is noticed by `is_closed`; a broken one fails its
            // first statement, which the caller sees as Unavailable.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls::client_config(&url)? {
            None => Manager::from_config(url.config, NoTls, manager_config),
            Some(client_config) => Manager::from_config(
                url.config,
                tokio_postgres_rustls::MakeRustlsConnect::new(client_config),
                manager_config,
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::engine(format!("PostgreSQL pool: {e}")))?;

        let deadline = Instant::now() + options.connect_timeout;
        let mut last_error = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(remaining, prepare(&pool, &location)).await;
            match attempt {
                Ok(Ok(())) => break,
                Ok(Err(StoreError::Unavailable(e))) if Instant::now() < deadline => {
                    tracing::warn!(%location, error = %e, "PostgreSQL not reachable yet; retrying");
                    last_error = Some(e.to_string());
                    let pause = Duration::from_millis(200).min(remaining);
                    tokio::time::sleep(pause).await;
                }
                Ok(Err(e)) => {
                    pool.close();
                    return Err(e);
                }
                Err(_) => {
                    pool.close();
                    let why = last_error.map_or_else(String::new, |e| format!(" (last: {e})"));
                    return Err(StoreError::Unavailable(
                        format!(
                            "{location}: not reachable within {:?}{why}",
                            options.connect_timeout
                        )
                        .into(),
                    ));
                }
            }
        }

        let reachable = Arc::new(AtomicBool::new(true));
        let probe = tokio::spawn(probe_loop(pool.clone(), reachable.clone(), metrics.clone()));
        Ok(PgStore {
            inner: Arc::new(Inner {
                pool,
                location,
                reachable,
                probe: std::sync::Mutex::new(Some(probe)),
                metrics,
                op_timeout: options.connect_timeout + options.statement_timeout,
            }),
        })
    }

    /// `host:port/dbname`; never the password.
    pub fn location(&self) -> String {
        self.inner.location.clone()
    }

    /// Whether the last reachability check (about every second) succeeded.
    pub fn is_reachable(&self) -> bool {
        self.inner.reachable.load(Ordering::Relaxed)
    }

    /// Commits are durable when they return; there is nothing to flush.
    pub async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    pub fn has_unflushed_commits(&self) -> bool {
        false
    }

    /// Stop the probe and close the pool; later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        let probe = self.inner.probe.lock().ok().and_then(|mut p| p.take());
        if let Some(probe) = probe {
            probe.abort();
        }
        self.inner.pool.close();
        Ok(())
    }

    /// The stored record, tombstones and expired values included.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.within("get", self.inner.op_timeout, async {
            let client = self.client().await?;
            let statement = client.prepare_cached(sql::GET).await.map_err(from_driver)?;
            let row = client
                .query_opt(&statement, &[&key])
                .await
                .map_err(from_driver)?;
            row.map(|row| decode_or_corrupt(&row, 0, key)).transpose()
        })
        .await
    }

    /// The records of `keys`, in the same order.
    pub async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Record>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.within("get_many", self.inner.op_timeout, async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(sql::GET_MANY)
                .await
                .map_err(from_driver)?;
            let rows = client
                .query(&statement, &[&keys])
                .await
                .map_err(from_driver)?;
            let mut found = std::collections::HashMap::with_capacity(rows.len());
            for row in rows {
                let key: Vec<u8> = row.try_get(0).map_err(from_driver)?;
                let record = decode_or_corrupt(&row, 1, &key)?;
                found.insert(key, record);
            }
            Ok(keys.iter().map(|key| found.get(key).cloned()).collect())
        })
        .await
    }

    /// Apply `write` if the guard lets it, decided atomically by the database.
    pub async fn guarded_write(
        &self,
        write: GuardedWrite,
        clock: GuardClock,
    ) -> Result<Guarded, StoreError> {
        let started = Instant::now();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let result = self
                .within("guarded_write", self.inner.op_timeout, async {
                    let mut client = self.client().await?;
                    if let Some(applied) = upsert_on(&client, &write, clock).await? {
                        return Ok(applied);
                    }
                    let txn = client.transaction().await.map_err(from_driver)?;
                    let answer = resolve_locked(&txn, &write, clock).await?;
                    txn.commit().await.map_err(from_driver)?;
                    match answer {
                        Guarded::Corrupt => Err(StoreError::Corrupt {
                            key: write.key.clone(),
                        }),
                        answer => Ok(answer),
                    }
                })
                .await;
            match result {
                // Not seen on PostgreSQL under READ COMMITTED; SERIALIZABLE databases
                // (CockroachDB) ask a statement that lost a conflict to run again.
                Err(e) if attempt < MAX_BATCH_ATTEMPTS && is_retryable_conflict(&e) => continue,
                other => break other?,
            }
        };
        if matches!(outcome, Guarded::Applied { .. }) {
            self.observe_commit(1, started);
        }
        Ok(outcome)
    }

    /// Judge and apply `writes` in order in one transaction: a later write is judged
    /// against an earlier one of the batch, and either every applied write commits or
    /// none does.
    pub async fn guarded_batch(
        &self,
        writes: Vec<GuardedWrite>,
        clock: GuardClock,
    ) -> Result<Vec<Guarded>, StoreError> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let rounds = writes.len().div_ceil(BATCH_WRITES_PER_DEADLINE) as u32;
        let deadline = self.inner.op_timeout * rounds;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .within("guarded_batch", deadline, async {
                    let mut client = self.client().await?;
                    let txn = client.transaction().await.map_err(from_driver)?;
                    let mut outcomes = Vec::with_capacity(writes.len());
                    for write in &writes {
                        let answer = match upsert_on(&txn, write, clock).await? {
                            Some(applied) => applied,
                            None => resolve_locked(&txn, write, clock).await?,
                        };
                        outcomes.push(answer);
                    }
                    txn.commit().await.map_err(from_driver)?;
                    Ok(outcomes)
                })
                .await;
            match result {
                // Two batches writing shared keys in different orders can deadlock;
                // the loser rolled back entirely and may simply run again.
                Err(e) if attempt < MAX_BATCH_ATTEMPTS && is_retryable_conflict(&e) => continue,
                Ok(outcomes) => {
                    let applied = outcomes
                        .iter()
                        .filter(|o| matches!(o, Guarded::Applied { .. }))
                        .count();
                    self.observe_commit(applied, started);
                    return Ok(outcomes);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Atomic read-modify-write of one key (Tyrant putcat, addint, unguarded put/out,
    /// touch): `f` sees the stored record with the key locked and returns the record
    /// to store (`None`: leave the key as it is) and its answer.
    pub async fn update<T, F>(&self, key: Vec<u8>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Option<Record>) -> (Option<Record>, T) + Send,
        T: Send,
    {
        let started = Instant::now();
        let (wrote, answer) = self
            .within("update", self.inner.op_timeout, async {
                let mut client = self.client().await?;
                let txn = client.transaction().await.map_err(from_driver)?;
                let (wrote, answer) = locked_update(&txn, &key, f).await?;
                txn.commit().await.map_err(from_driver)?;
                Ok((wrote, answer))
            })
            .await?;
        if wrote {
            self.observe_commit(1, started);
        }
        Ok(answer)
    }

    /// Records (tombstones and expired included) in key order, after `range.start`
    /// and starting with `range.prefix`, at most `limit`.
    pub async fn scan(
        &self,
        range: KeyRange,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let lower = scan_lower_bound(&range);
        let upper = prefix_successor(&range.prefix);
        if upper.as_ref().is_some_and(|upper| lower >= *upper) {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.within("scan", self.inner.op_timeout, async {
            let client = self.client().await?;
            let rows = match &upper {
                Some(upper) => {
                    let statement = client
                        .prepare_cached(sql::SCAN_BETWEEN)
                        .await
                        .map_err(from_driver)?;
                    client.query(&statement, &[&lower, &limit, upper]).await
                }
                None => {
                    let statement = client
                        .prepare_cached(sql::SCAN_FROM)
                        .await
                        .map_err(from_driver)?;
                    client.query(&statement, &[&lower, &limit]).await
                }
            }
            .map_err(from_driver)?;
            rows.iter().map(keyed_record).collect()
        })
        .await
    }

    /// Up to `limit` records whose owner is `owner`, in key order after `after`
    /// (exclusive), from the owner index. Expired records are included until purged
    /// (callers check liveness); tombstones never have an owner.
    pub async fn owned(
        &self,
        owner: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.within("owned", self.inner.op_timeout, async {
            let client = self.client().await?;
            let rows = match after {
                Some(after) => {
                    let statement = client
                        .prepare_cached(sql::OWNED_AFTER)
                        .await
                        .map_err(from_driver)?;
                    client.query(&statement, &[&owner, &limit, &after]).await
                }
                None => {
                    let statement = client
                        .prepare_cached(sql::OWNED_FIRST)
                        .await
                        .map_err(from_driver)?;
                    client.query(&statement, &[&owner, &limit]).await
                }
            }
            .map_err(from_driver)?;
            rows.iter().map(keyed_record).collect()
        })
        .await
    }

    /// Every record in key order from one consistent snapshot, sent into the returned
    /// channel; a failure arrives as the last item. Stops when the receiver is dropped.
    pub fn export(&self, capacity: usize) -> mpsc::Receiver<Result<(Vec<u8>, Record), StoreError>> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let store = self.clone();
        tokio::spawn(async move {
            if let Err(e) = store.export_into(&sender).await {
                // Nobody is listening any more when this fails; nothing to do then.
                let _ = sender.send(Err(e)).await;
            }
        });
        receiver
    }

    async fn export_into(
        &self,
        sender: &mpsc::Sender<Result<(Vec<u8>, Record), StoreError>>,
    ) -> Result<(), StoreError> {
        let timeout = self.inner.op_timeout;
        let mut client = self.within("export", timeout, self.client()).await?;
        // One REPEATABLE READ snapshot (taken by the first page's statement) for every
        // page, so the export is a consistent copy however long it takes.
        let txn = self
            .within("export", timeout, async {
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
                    .await
                    .map_err(from_driver)
            })
            .await?;
        let mut after: Option<Vec<u8>> = None;
        loop {
            if sender.is_closed() {
                return Ok(());
            }
            let rows = self
                .within("export", timeout, async {
                    match &after {
                        None => {
                            let first = txn
                                .prepare_cached(sql::EXPORT_FIRST_PAGE)
                                .await
                                .map_err(from_driver)?;
                            txn.query(&first, &[&EXPORT_PAGE]).await
                        }
                        Some(after) => {
                            let next = txn
                                .prepare_cached(sql::EXPORT_PAGE_AFTER)
                                .await
                                .map_err(from_driver)?;
                            txn.query(&next, &[after, &EXPORT_PAGE]).await
                        }
                    }
                    .map_err(from_driver)
                })
                .await?;
            let full_page = rows.len() as i64 == EXPORT_PAGE;
            for row in &rows {
                let (key, record) = keyed_record(row)?;
                after = Some(key.clone());
                if sender.send(Ok((key, record))).await.is_err() {
                    return Ok(());
                }
            }
            if !full_page {
                break;
            }
        }
        self.within("export", timeout, async {
            txn.commit().await.map_err(from_driver)
        })
        .await
    }

    /// Record counts at server time `now`: all rows, tombstones, and live rows whose
    /// expiry has passed.
    pub async fn counts(&self, now: u64) -> Result<Counts, StoreError> {
        self.within("counts", self.inner.op_timeout, async {
            let client = self.client().await?;
            let statement = client
                .prepare_cached(sql::COUNTS)
                .await
                .map_err(from_driver)?;
            let row = client
                .query_one(&statement, &[&to_sql(now)])
                .await
                .map_err(from_driver)?;
            let count = |i: usize| -> Result<u64, StoreError> {
                let n: i64 = row.try_get(i).map_err(from_driver)?;
                Ok(n.max(0) as u64)
            };
            Ok(Counts {
                records: count(0)?,
                tombstones: count(1)?,
                expired: count(2)?,
            })
        })
        .await
    }

    /// Bytes the table and its indexes take on disk.
    pub async fn size_bytes(&self) -> Result<u64, StoreError> {
        self.within("size", self.inner.op_timeout, async {
            let client = self.client().await?;
            table_size(&client).await
        })
        .await
    }

    /// Delete at most `limit` records whose guard lapsed at or before `cutoff`
    /// (tombstones deleted then, live records expired then), tombstones first.
    /// Returns zero without waiting when another replica is sweeping.
    pub async fn purge(&self, cutoff: u64, limit: usize) -> Result<Purged, StoreError> {
        if limit == 0 {
            return Ok(Purged::default());
        }
        self.within("purge", self.inner.op_timeout, async {
            let mut client = self.client().await?;
            let txn = client.transaction().await.map_err(from_driver)?;
            if !try_lock_sweep(&txn).await? {
                txn.rollback().await.map_err(from_driver)?;
                return Ok(Purged::default());
            }
            let cutoff = to_sql(cutoff);
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let tombstones = {
                let statement = txn
                    .prepare_cached(sql::PURGE_TOMBSTONES)
                    .await
                    .map_err(from_driver)?;
                txn.execute(&statement, &[&cutoff, &limit])
                    .await
                    .map_err(from_driver)? as i64
            };
            let remaining = limit - tombstones;
            let expired = if remaining > 0 {
                let statement = txn
                    .prepare_cached(sql::PURGE_EXPIRED)
                    .await
                    .map_err(from_driver)?;
                txn.execute(&statement, &[&cutoff, &remaining])
                    .await
                    .map_err(from_driver)? as i64
            } else {
                0
            };
            txn.commit().await.map_err(from_driver)?;
            Ok(Purged {
                expired: expired as usize,
                tombstones: tombstones as usize,
            })
        })
        .await
    }

    /// Remove every record (Tyrant `vanish`).
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.within("clear", self.inner.op_timeout, async {
            let client = self.client().await?;
            client.execute(sql::CLEAR, &[]).await.map_err(from_driver)?;
            Ok(())
        })
        .await
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.inner.pool.get().await.map_err(from_pool)
    }

    /// Run `op`, or fail with [`StoreError::Unavailable`] once `limit` has passed.
    async fn within<T>(
        &self,
        what: &'static str,
        limit: Duration,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = tokio::time::timeout(limit, op)
            .await
            .unwrap_or_else(|_| Err(deadline_passed(what)));
        let metrics = &self.inner.metrics;
        metrics
            .database_seconds
            .with_label_values(&[what])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let kind = match e {
                StoreError::Unavailable(_) => "unavailable",
                _ => "engine",
            };
            metrics.database_errors.with_label_values(&[kind]).inc();
        }
        result
    }

    fn observe_commit(&self, writes: usize, started: Instant) {
        self.inner.metrics.commit_batch_size.observe(writes as f64);
        self.inner
            .metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Apply migrations on one pooled connection.
async fn prepare(pool: &Pool, location: &str) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(from_pool)?;
    let txn = client.transaction().await.map_err(from_driver)?;
    schema::migrate(&txn, location).await?;
    txn.commit().await.map_err(from_driver)
}

/// Read-modify-write of one key inside `txn`: lock its row with `FOR UPDATE` — or,
/// when there is none, a placeholder row only `txn` sees (a concurrent insert of the
/// key waits for it on the primary key) — then hand the stored record to `f`, which
/// runs only once the lock is held, and store what it returns. Returns whether a
/// record was written, and `f`'s answer.
pub(super) async fn locked_update<C, T, F>(
    txn: &C,
    key: &[u8],
    f: F,
) -> Result<(bool, T), StoreError>
where
    C: GenericClient + Sync,
    F: FnOnce(Option<Record>) -> (Option<Record>, T),
{
    let select = txn
        .prepare_cached(sql::GET_FOR_UPDATE)
        .await
        .map_err(from_driver)?;
    let mut stored = None;
    for _ in 0..MAX_LOCK_ROUNDS {
        if let Some(row) = txn.query_opt(&select, &[&key]).await.map_err(from_driver)? {
            stored = Some(Some(decode_or_corrupt(&row, 0, key)?));
            break;
        }
        let placeholder = txn
            .prepare_cached(sql::PLACEHOLDER)
            .await
            .map_err(from_driver)?;
        if txn
            .query_opt(&placeholder, &[&key, &to_sql(0)])
            .await
            .map_err(from_driver)?
            .is_some()
        {
            stored = Some(None);
            break;
        }
        // Someone else inserted the key after our SELECT and has committed (the
        // insert waited for them): read their row, locked.
    }
    let Some(stored) = stored else {
        return Err(StoreError::engine(
            "update: could not lock the key (kept racing with inserts and deletes)",
        ));
    };
    let had_row = stored.is_some();
    let (new, answer) = f(stored);
    let wrote = new.is_some();
    match new {
        Some(record) => {
            let overwrite = txn
                .prepare_cached(sql::OVERWRITE)
                .await
                .map_err(from_driver)?;
            let p = Params::of(&record);
            let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(12);
            params.push(&key);
            params.extend(p.values());
            txn.execute(&overwrite, &params)
                .await
                .map_err(from_driver)?;
        }
        None if !had_row => {
            // Take the placeholder away again.
            let delete = txn
                .prepare_cached(sql::DELETE_KEY)
                .await
                .map_err(from_driver)?;
            txn.execute(&delete, &[&key]).await.map_err(from_driver)?;
        }
        None => {}
    }
    Ok((wrote, answer))
}

fn decode_or_corrupt(row: &Row, first: usize, key: &[u8]) -> Result<Record, StoreError> {
    sql::decode(row, first).map_err(|e| match e {
        DecodeError::Shape => StoreError::Corrupt { key: key.to_vec() },
        DecodeError::Column(e) => from_driver(e),
    })
}

/// A `key, <record columns>` row.
fn keyed_record(row: &Row) -> Result<(Vec<u8>, Record), StoreError> {
    let key: Vec<u8> = row.try_get(0).map_err(from_driver)?;
    let record = decode_or_corrupt(row, 1, &key)?;
    Ok((key, record))
}
