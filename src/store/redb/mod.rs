//! The embedded engine: the only module that imports redb.
//!
//! One redb file holds every record; a write-ahead log carries durability between
//! checkpoints. Writes are closures run under one lock on the caller's task
//! ([`writer`]): each stages its changes, which are appended to the log and applied to
//! an in-memory table of changes not yet in redb (the memtable), and is answered once
//! the log is synced (or at once, when the store is relaxed). A checkpointer thread
//! moves the memtable into redb in one durable commit every few seconds. Point reads
//! look in the memtables, then in a cache of records read from redb ([`cache`]), then
//! in redb as of the last checkpoint; scans checkpoint first and then read redb.

mod cache;
mod codec;
mod memtable;
mod wal;
mod writer;

pub use writer::WriteBatch;

use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use tokio::sync::mpsc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

use super::{
    Counts, Found, GuardClock, Guarded, GuardedWrite, KeyRange, Purged, Snapshot, StoreError,
};
use crate::guard;
use crate::metrics::Metrics;
use crate::record::{Record, State};

/// Key bytes → encoded [`Record`] (see `codec`).
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// (expires_at µs, key) for live records with a TTL: the sweeper's work list.
const EXPIRIES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("expiries");
/// (deleted_at µs, key) for tombstones: the sweeper's other work list.
const TOMBSTONES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("tombstones");
/// (owner, key) for live records with an owner: "every session of one user".
const OWNERS: TableDefinition<(&str, &[u8]), ()> = TableDefinition::new("owners");
/// Small named integers about the file itself.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SCHEMA_VERSION_KEY: &str = "schema_version";
/// The last write-ahead-log batch whose changes this file holds (see `wal`).
const APPLIED_LSN_KEY: &str = "applied_lsn";
/// A random id given to each database file, so its write-ahead log is recognised.
const FILE_ID_KEY: &str = "file_id";
/// File name of the write-ahead log inside the data directory.
/// The write-ahead log's two files (see [`wal`]); the first is the one written after
/// a clean start.
pub const WAL_FILE_NAMES: [&str; 2] = ["tidemark.wal", "tidemark.wal.1"];

/// The on-disk layout this build reads and writes. See migrations/.
pub const SCHEMA_VERSION: u64 = 4;
/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "tidemark.redb";

macro_rules! engine_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Engine(Box::new(e))
            }
        }
    )*};
}
engine_error!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// How writes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is fsynced before its writers are answered.
    Immediate,
    /// Commits are not fsynced; [`Store::flush`] (called on a timer) makes them durable.
    Relaxed,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub data_dir: PathBuf,
    pub durability: Durability,
    pub cache_size: usize,
    /// Bytes of decoded records kept for repeated reads of the same keys, beside
    /// redb's page cache (0 turns it off; see `cache`).
    pub record_cache_size: usize,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct RedbStore {
    inner: Arc<Inner>,
}

struct Inner {
    core: Arc<writer::Core>,
    path: PathBuf,
    threads: std::sync::Mutex<Option<writer::Threads>>,
}

impl Drop for Inner {
    /// A store dropped without [`Store::close`] stops its threads; the log keeps
    /// whatever redb does not hold yet, as after a crash.
    fn drop(&mut self) {
        let threads = self.threads.get_mut().ok().and_then(Option::take);
        if let Some(threads) = threads {
            threads.stop(&self.core);
        }
    }
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl RedbStore {
    /// Open (or create) the database in `options.data_dir`, replay its write-ahead log
    /// if the last stop was unclean, and start the syncer and checkpointer threads.
    pub fn open(options: &StoreOptions, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        Self::open_with_checkpoints(options, metrics, writer::CHECKPOINT_INTERVAL)
    }

    pub(crate) fn open_with_checkpoints(
        options: &StoreOptions,
        metrics: Arc<Metrics>,
        checkpoint_interval: std::time::Duration,
    ) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&options.data_dir).map_err(|source| StoreError::Io {
            path: options.data_dir.clone(),
            source,
        })?;
        let path = options.data_dir.join(DB_FILE_NAME);
        let db = Database::builder()
            .set_cache_size(options.cache_size)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::Storage(redb::StorageError::Io(source)) => StoreError::Io {
                    path: path.clone(),
                    source,
                },
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::InUse { path: path.clone() }
                }
                other => StoreError::engine(format!("{}: {other}", path.display())),
            })?;
        let file_id = prepare_schema(&db, &path)?;
        let wal_paths = WAL_FILE_NAMES.map(|name| options.data_dir.join(name));
        let wal_io = |source| StoreError::Io {
            path: wal_paths[0].clone(),
            source,
        };
        let (mut log, batches) = wal::Wal::open(wal_paths.clone(), file_id).map_err(wal_io)?;
        let applied = recover(&db, batches)?;
        log.reset().map_err(wal_io)?;
        let (core, threads) = writer::start(
            Arc::new(db),
            log,
            applied,
            checkpoint_interval,
            options.durability,
            options.record_cache_size,
            metrics,
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                core,
                path,
                threads: std::sync::Mutex::new(Some(threads)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `op` against the store's current state and return its result once its
    /// changes are logged — and synced, unless the store is relaxed.
    ///
    /// `op` runs under the write lock, so it must be short and must not block.
    /// It must only return `Err` for engine failures: nothing it staged is applied.
    /// Refusals (stale writes and the like) are part of `T`.
    pub fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>>
    where
        F: FnOnce(&mut WriteBatch<'_>) -> Result<T, StoreError>,
    {
        // The core's future itself, not one more async layer around it: that would
        // hold a second copy of `op` (`Core::write`).
        self.inner.core.write(op, false)
    }

    /// Make every write so far durable (the write-ahead log is synced), whatever the
    /// durability mode.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.inner.core.write(|_| Ok(()), true).await
    }

    /// Whether relaxed commits are waiting for an fsync.
    pub fn has_unflushed_commits(&self) -> bool {
        self.inner.core.has_unsynced()
    }

    /// Stop taking writes, write everything into redb durably, and stop the threads.
    pub async fn close(&self) -> Result<(), StoreError> {
        let threads = self.inner.threads.lock().ok().and_then(|mut t| t.take());
        let Some(threads) = threads else {
            return Ok(());
        };
        let core = self.inner.core.clone();
        tokio::task::spawn_blocking(move || threads.close(&core))
            .await
            .map_err(|e| StoreError::engine(format!("close failed: {e}")))?
    }

    /// The record stored for `key`, including tombstones and expired values.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        self.inner.core.get(key)
    }

    /// [`RedbStore::get`], shared with the record cache when it comes from there.
    pub fn get_found(&self, key: &[u8]) -> Result<Option<Found>, StoreError> {
        self.inner.core.get_found(key)
    }

    /// Write every change logged so far into the database file, durably. Blocks; call
    /// it off the async workers.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.inner.core.checkpoint_now()
    }

    /// A read transaction holding every write acknowledged so far: logged changes are
    /// checkpointed into redb first. Blocks for the checkpoint; call it off the async
    /// workers.
    fn begin_read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.inner.core.checkpoint_now()?;
        Ok(self.inner.core.db().begin_read()?)
    }

    /// Visit records in key order starting at `from`, until `visit` breaks or the keys run out.
    pub fn scan(
        &self,
        from: Bound<&[u8]>,
        mut visit: impl FnMut(&[u8], Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        for entry in table.range::<&[u8]>((from, Bound::Unbounded))? {
            let (key, value) = entry?;
            let key = key.value();
            let record = codec::decode(value.value())
                .ok_or_else(|| StoreError::Corrupt { key: key.to_vec() })?;
            if visit(key, record).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Record counts at server time `now` (and the record cache's size gauge, which
    /// `/metrics` shows beside them).
    pub fn counts(&self, now: u64) -> Result<Counts, StoreError> {
        self.inner.core.publish_cache_bytes();
        let txn = self.begin_read()?;
        let records = txn.open_table(RECORDS)?.len()?;
        let tombstones = txn.open_table(TOMBSTONES)?.len()?;
        let expiries = txn.open_table(EXPIRIES)?;
        let upper: (u64, &[u8]) = (now.saturating_add(1), &[]);
        let mut expired = 0;
        for entry in expiries.range(..upper)? {
            entry?;
            expired += 1;
        }
        Ok(Counts {
            records,
            tombstones,
            expired,
        })
    }

    /// Whether any record's guard lapsed at or before `cutoff` (so a purge has work).
    pub fn has_purgeable(&self, cutoff: u64) -> Result<bool, StoreError> {
        // Candidates come from redb's index tables; a checkpoint first only when a
        // record not yet checkpointed may be due (rare: grace periods are long), so the
        // sweeper does not force a checkpoint every round.
        if self.inner.core.memtables_may_hold_due(cutoff) {
            self.inner.core.checkpoint_now()?;
        }
        let txn = self.inner.core.db().begin_read()?;
        let upper: (u64, &[u8]) = (cutoff.saturating_add(1), &[]);
        for table in [TOMBSTONES, EXPIRIES] {
            if txn.open_table(table)?.range(..upper)?.next().is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Size of the database file in bytes.
    pub fn file_size(&self) -> u64 {
        std::fs::metadata(&self.inner.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Write a consistent snapshot of every record (tombstones and timestamps included)
    /// into a new database file at `dest`, while writes go on.
    pub fn snapshot_to(&self, dest: &Path) -> Result<u64, StoreError> {
        let io = |source| StoreError::Io {
            path: dest.to_path_buf(),
            source,
        };
        if dest.exists() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "destination already exists",
            )));
        }
        let txn = self.begin_read()?;
        let source = txn.open_table(RECORDS)?;
        let target = Database::create(dest)?;
        prepare_schema(&target, dest)?;
        let mut copied = 0u64;
        let mut rows = source.range::<&[u8]>(..)?.peekable();
        while rows.peek().is_some() {
            let out = target.begin_write()?;
            {
                let mut batch = Tables::open(&out)?;
                for entry in rows.by_ref().take(10_000) {
                    let (key, value) = entry?;
                    let record =
                        codec::decode(value.value()).ok_or_else(|| StoreError::Corrupt {
                            key: key.value().to_vec(),
                        })?;
                    batch.put(key.value(), &record)?;
                    copied += 1;
                }
            }
            out.commit()?;
        }
        Ok(copied)
    }

    // ---- the seam's operations (see `crate::store::Store`) ----

    /// The records stored for `keys`, in the same order, as of one instant (no write
    /// lands between two of them), read off the async workers.
    pub async fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Record>>, StoreError> {
        self.blocking(move |store| store.inner.core.get_many(&keys))
            .await
    }

    /// Up to `limit` records indexed under `owner`, in key order after `after`, from
    /// one read transaction (logged changes are checkpointed first). The index follows
    /// every write, so each record returned has this owner; callers still check
    /// liveness (an expired record keeps its index row until it is purged).
    pub async fn owned(
        &self,
        owner: String,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        self.blocking(move |store| {
            let txn = store.begin_read()?;
            let owners = txn.open_table(OWNERS)?;
            let records = txn.open_table(RECORDS)?;
            let from: (&str, &[u8]) = (owner.as_str(), after.as_deref().unwrap_or_default());
            let mut found = Vec::new();
            for entry in owners.range(from..)? {
                if found.len() >= limit {
                    break;
                }
                let (row, _) = entry?;
                let (row_owner, key) = row.value();
                if row_owner != owner {
                    break;
                }
                if after.as_deref() == Some(key) {
                    continue;
                }
                let Some(value) = records.get(key)? else {
                    continue;
                };
                let record = codec::decode(value.value())
                    .ok_or_else(|| StoreError::Corrupt { key: key.to_vec() })?;
                found.push((key.to_vec(), record));
            }
            Ok(found)
        })
        .await
    }

    /// One guarded write, decided by [`guard::resolve`] under the write lock.
    ///
    /// Not an `async fn`, for the reason `Core::write` gives: the future returned
    /// holds the write once, in the write lock's closure.
    pub fn guarded_write(
        &self,
        write: GuardedWrite,
        clock: GuardClock,
    ) -> impl Future<Output = Result<Guarded, StoreError>> {
        let written = self.write(move |batch| {
            Ok(match apply_guarded(batch, &write, clock)? {
                // Handing the key back only on this path keeps the hot path free of
                // a copy of it.
                Guarded::Corrupt => Err(write.key),
                verdict => Ok(verdict),
            })
        });
        // Mapped in place: an async block awaiting `written` would hold it twice.
        written.map(|answer| answer?.map_err(|key| StoreError::Corrupt { key }))
    }

    /// Guarded writes in order as one write (one log frame, all or nothing).
    pub async fn guarded_batch(
        &self,
        writes: Vec<GuardedWrite>,
        clock: GuardClock,
    ) -> Result<Vec<Guarded>, StoreError> {
        self.write(move |batch| {
            writes
                .into_iter()
                .map(|write| apply_guarded(batch, &write, clock))
                .collect()
        })
        .await
    }

    /// Read-modify-write of one key under the write lock.
    pub async fn update<T, F>(&self, key: Vec<u8>, change: F) -> Result<T, StoreError>
    where
        F: FnOnce(Option<Record>) -> (Option<Record>, T),
    {
        self.write(move |batch| {
            let (record, answer) = change(batch.get(&key)?);
            if let Some(record) = record {
                batch.put(&key, record)?;
            }
            Ok(answer)
        })
        .await
    }

    /// Up to `limit` records of `range` in key order, read off the async workers (the
    /// scan checkpoints first, which may write).
    pub async fn scan_range(
        &self,
        range: KeyRange,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        self.blocking(move |store| {
            let mut found = Vec::new();
            if limit == 0 {
                return Ok(found);
            }
            let start = match &range.start {
                Bound::Excluded(after) if after.as_slice() >= range.prefix.as_slice() => {
                    Bound::Excluded(after.as_slice())
                }
                Bound::Included(from) if from.as_slice() >= range.prefix.as_slice() => {
                    Bound::Included(from.as_slice())
                }
                _ => Bound::Included(range.prefix.as_slice()),
            };
            store.scan(start, |key, record| {
                if !key.starts_with(&range.prefix) {
                    return ControlFlow::Break(());
                }
                found.push((key.to_vec(), record));
                if found.len() == limit {
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })?;
            Ok(found)
        })
        .await
    }

    /// Every record in key order from one read transaction, through a bounded channel.
    pub fn export(&self, capacity: usize) -> mpsc::Receiver<Result<(Vec<u8>, Record), StoreError>> {
        let (records, receiver) = mpsc::channel(capacity.max(1));
        let store = self.clone();
        tokio::task::spawn_blocking(move || {
            let scanned = store.scan(Bound::Unbounded, |key, record| {
                match records.blocking_send(Ok((key.to_vec(), record))) {
                    Ok(()) => ControlFlow::Continue(()),
                    // The reader went away (a client disconnected): stop reading.
                    Err(_) => ControlFlow::Break(()),
                }
            });
            if let Err(e) = scanned {
                let _ = records.blocking_send(Err(e));
            }
        });
        receiver
    }

    /// [`RedbStore::counts`], off the async workers.
    pub async fn counts_async(&self, now: u64) -> Result<Counts, StoreError> {
        self.blocking(move |store| store.counts(now)).await
    }

    /// Purge up to `limit` records whose guard lapsed at or before `cutoff`.
    pub async fn purge(&self, cutoff: u64, limit: usize) -> Result<Purged, StoreError> {
        // Check with a read first: an empty write would still cost a log frame.
        if !self
            .blocking(move |store| store.has_purgeable(cutoff))
            .await?
        {
            return Ok(Purged::default());
        }
        let purged = self.write(move |batch| batch.purge(cutoff, limit)).await?;
        if purged.expired + purged.tombstones >= limit {
            // Candidates come from the database file's index, which shows this batch's
            // removals only after a checkpoint; without one the next call would walk
            // past them all again.
            self.blocking(|store| store.checkpoint()).await?;
        }
        Ok(purged)
    }

    /// A consistent copy of the store as a new database file beside this one (same
    /// filesystem, so there is room to check for), opened and unlinked at once.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let temp = self.path().with_file_name(format!(
            ".snapshot-{}-{}.redb.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        self.blocking(move |store| {
            let copied = store.snapshot_to(&temp);
            let opened = copied.and_then(|records| {
                std::fs::File::open(&temp)
                    .map(|file| Snapshot { file, records })
                    .map_err(|source| StoreError::Io {
                        path: temp.clone(),
                        source,
                    })
            });
            // Unlink at once: the open handle keeps the data readable for as long as the
            // caller needs it, and a crash cannot leave the copy behind.
            if let Err(e) = std::fs::remove_file(&temp)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %e, path = %temp.display(), "cannot remove a snapshot file");
            }
            opened
        })
        .await
    }

    /// Run synchronous store work on the blocking pool, off the async workers.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&RedbStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| StoreError::engine(format!("store task failed: {e}")))?
    }
}

/// Apply one guarded write inside a write closure: the stored record (as this write
/// sees it) against [`guard::resolve`]. A corrupt stored record refuses this write
/// only, so one bad key cannot fail the other writes of a batch.
fn apply_guarded(
    batch: &mut WriteBatch<'_>,
    write: &GuardedWrite,
    clock: GuardClock,
) -> Result<Guarded, StoreError> {
    let resolved = match batch.peek(&write.key) {
        Ok(stored) => guard::resolve(stored.as_deref(), write, clock),
        Err(StoreError::Corrupt { .. }) => return Ok(Guarded::Corrupt),
        Err(engine) => return Err(engine),
    };
    if let Some(record) = resolved.record {
        batch.put(&write.key, record)?;
    }
    Ok(resolved.answer)
}

/// Re-apply the logged batches that the file's last durable commit does not hold,
/// commit them durably, and return the last LSN the file now holds.
fn recover(db: &Database, batches: Vec<wal::Batch>) -> Result<u64, StoreError> {
    let applied = {
        let txn = db.begin_read()?;
        let meta = txn.open_table(META)?;
        meta.get(APPLIED_LSN_KEY)?.map_or(0, |v| v.value())
    };
    // LSNs have no gaps: replay the run that follows `applied` and stop at the first
    // missing number. After a power loss, frames synced by no acknowledged write may
    // reach the disk out of order; what follows a hole was never acknowledged, and
    // replaying it would make the recovered state other than a prefix of history.
    let mut pending = Vec::new();
    let mut next = applied + 1;
    let mut beyond = 0usize;
    for (lsn, entries) in batches {
        if lsn == next {
            pending.push((lsn, entries));
            next += 1;
        } else if lsn > next {
            beyond += 1;
        }
    }
    if beyond > 0 {
        tracing::warn!(
            after_lsn = next - 1,
            frames = beyond,
            "the write-ahead log has a gap; frames after it were never acknowledged and are not replayed"
        );
    }
    let Some(last) = pending.last().map(|(lsn, _)| *lsn) else {
        return Ok(applied);
    };
    let txn = db.begin_write()?;
    {
        let mut batch = Tables::open(&txn)?;
        for (_, entries) in &pending {
            for entry in entries {
                match entry {
                    wal::Entry::Put { key, record } => {
                        let record = codec::decode(record)
                            .ok_or_else(|| StoreError::Corrupt { key: key.clone() })?;
                        batch.put(key, &record)?;
                    }
                    wal::Entry::Remove { key } => {
                        batch.remove(key)?;
                    }
                    wal::Entry::Clear => batch.clear()?,
                }
            }
        }
        txn.open_table(META)?.insert(APPLIED_LSN_KEY, last)?;
    }
    txn.commit()?;
    tracing::info!(
        batches = pending.len(),
        last_lsn = last,
        "replayed the write-ahead log after an unclean stop"
    );
    Ok(last)
}

/// Check (or stamp) the schema version of a freshly opened file.
/// Returns the file's id (created on first open), which ties the write-ahead log to it.
fn prepare_schema(db: &Database, path: &Path) -> Result<u64, StoreError> {
    let txn = db.begin_write()?;
    let file_id = {
        let mut meta = txn.open_table(META)?;
        let found = meta.get(SCHEMA_VERSION_KEY)?.map(|v| v.value());
        match found {
            Some(v) if v == SCHEMA_VERSION => {}
            Some(from @ (1..=3)) => {
                if from == 1 {
                    upgrade_1_to_2(&txn)?;
                }
                // 2 → 3 rewrites nothing: version 3 adds one optional part to
                // kind-03 records (client flags, bit 0x10) that no version-2 record
                // has. 3 → 4 rewrites nothing either: version 4 writes live records
                // as kind 04, and still reads kinds 01 and 03. Each bump is what keeps
                // an older binary from misreading a record it does not know.
                meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
                tracing::info!(
                    path = %path.display(),
                    from,
                    to = SCHEMA_VERSION,
                    "upgraded the database file's schema version"
                );
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            // Versions below 1 never existed (see migrations/README.md).
            Some(v) => {
                return Err(StoreError::UnknownSchema {
                    path: path.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            None => {
                if txn.open_table(RECORDS)?.len()? > 0 {
                    return Err(StoreError::UnknownLayout {
                        path: path.to_path_buf(),
                    });
                }
                meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION)?;
            }
        }
        let existing = meta.get(FILE_ID_KEY)?.map(|v| v.value());
        let file_id = match existing {
            Some(id) => id,
            None => {
                let id = random_id();
                meta.insert(FILE_ID_KEY, id)?;
                id
            }
        };
        // Create every table so readers never see "table does not exist".
        txn.open_table(RECORDS)?;
        txn.open_table(EXPIRIES)?;
        txn.open_table(TOMBSTONES)?;
        txn.open_table(OWNERS)?;
        file_id
    };
    txn.commit()?;
    Ok(file_id)
}

/// Schema 1 → 2, inside the opening transaction (so a crash leaves the file at 1).
/// Version 2 reads every version-1 record as it is (kind 01 and 02 did not change);
/// what is new is the `owners` index, and no version-1 record has an owner, so the
/// index starts empty. Nothing is rewritten.
fn upgrade_1_to_2(txn: &WriteTransaction) -> Result<(), StoreError> {
    txn.open_table(OWNERS)?;
    Ok(())
}

/// A random u64 from the standard library's randomly keyed hasher.
fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// The tables of one redb write transaction, keeping the sweeper's index tables
/// consistent with the records. Checkpoints, recovery and snapshots write through it.
struct Tables<'txn> {
    records: Table<'txn, &'static [u8], &'static [u8]>,
    index: Index<'txn>,
    scratch: Vec<u8>,
}

/// The index tables derived from `records`, kept in step with it.
struct Index<'txn> {
    expiries: Table<'txn, (u64, &'static [u8]), ()>,
    tombstones: Table<'txn, (u64, &'static [u8]), ()>,
    owners: Table<'txn, (&'static str, &'static [u8]), ()>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            index: Index {
                expiries: txn.open_table(EXPIRIES)?,
                tombstones: txn.open_table(TOMBSTONES)?,
                owners: txn.open_table(OWNERS)?,
            },
            scratch: Vec::new(),
        })
    }

    /// Store `record` under `key`, replacing what was there.
    fn put(&mut self, key: &[u8], record: &Record) -> Result<(), StoreError> {
        codec::encode(record, &mut self.scratch);
        let old = self
            .records
            .insert(key, self.scratch.as_slice())?
            .and_then(|old| codec::decode(old.value()));
        if let Some(old) = old {
            self.index.remove(key, &old)?;
        }
        self.index.add(key, record)
    }

    /// Remove `key` entirely.
    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let old = self
            .records
            .remove(key)?
            .and_then(|old| codec::decode(old.value()));
        if let Some(old) = &old {
            self.index.remove(key, old)?;
        }
        Ok(())
    }

    /// Remove every record, tombstones included.
    fn clear(&mut self) -> Result<(), StoreError> {
        self.records.retain(|_, _| false)?;
        self.index.expiries.retain(|_, _| false)?;
        self.index.tombstones.retain(|_, _| false)?;
        self.index.owners.retain(|_, _| false)?;
        Ok(())
    }
}

/// Which sweeper work list holds `record`, and at what time it falls due.
enum Due {
    Expiry(u64),
    Tombstone(u64),
}

fn due(record: &Record) -> Option<Due> {
    match record.state {
        State::Live { expires_at, .. } => expires_at.map(Due::Expiry),
        State::Tombstone { deleted_at } => Some(Due::Tombstone(deleted_at)),
    }
}

impl Index<'_> {
    /// Add `record`'s entries: the sweeper's work lists and the owner index.
    fn add(&mut self, key: &[u8], record: &Record) -> Result<(), StoreError> {
        match due(record) {
            Some(Due::Expiry(at)) => self.expiries.insert((at, key), ()).map(drop)?,
            Some(Due::Tombstone(at)) => self.tombstones.insert((at, key), ()).map(drop)?,
            None => {}
        }
        if let Some(owner) = &record.meta.owner {
            self.owners.insert((owner.as_str(), key), ())?;
        }
        Ok(())
    }

    /// Remove `record`'s entries.
    fn remove(&mut self, key: &[u8], record: &Record) -> Result<(), StoreError> {
        match due(record) {
            Some(Due::Expiry(at)) => self.expiries.remove((at, key)).map(drop)?,
            Some(Due::Tombstone(at)) => self.tombstones.remove((at, key)).map(drop)?,
            None => {}
        }
        if let Some(owner) = &record.meta.owner {
            self.owners.remove((owner.as_str(), key))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
