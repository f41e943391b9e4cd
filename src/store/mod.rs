//! The vault: the only module that imports redb.
//!
//! One redb file holds every record; a write-ahead log carries durability between
//! checkpoints. Writes are closures run under one lock on the caller's task
//! ([`writer`]): each stages its changes, which are appended to the log and applied to
//! an in-memory table of changes not yet in redb (the memtable), and is answered once
//! the log is synced (or at once, when the store is relaxed). A checkpointer thread
//! moves the memtable into redb in one durable commit every few seconds. Point reads
//! look in the memtables, then in redb as of the last checkpoint; scans checkpoint
//! first and then read redb.

mod codec;
mod memtable;
pub mod postgres;
mod wal;
mod writer;

pub use writer::WriteBatch;

use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};

use crate::metrics::Metrics;
use crate::record::{Record, State};

/// Key bytes → encoded [`Record`] (see `codec`).
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// (expires_at µs, key) for live records with a TTL: the sweeper's work list.
const EXPIRIES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("expiries");
/// (deleted_at µs, key) for tombstones: the sweeper's other work list.
const TOMBSTONES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("tombstones");
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
pub const SCHEMA_VERSION: u64 = 1;
/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "tidemark.redb";

/// Errors from the storage engine, kept behind one type so nothing above the store
/// depends on redb.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(#[source] BoxError),
    /// The engine cannot be reached now (a database outage); the request may be retried.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The operation has no meaning on this engine (e.g. a file snapshot of a shared
    /// database).
    #[error("{0} is not available on this storage engine")]
    Unsupported(&'static str),
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} has schema version {found}, but this tidemark reads up to version {supported}; \
         upgrade tidemark to open it"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error(
        "{path} has schema version {found}, which no tidemark release wrote; \
         this tidemark reads version {supported}"
    )]
    UnknownSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("{path} holds data but no tidemark schema version; it was not written by tidemark")]
    UnknownLayout { path: PathBuf },
    #[error("stored record for key {key:?} is corrupt")]
    Corrupt { key: Vec<u8> },
    #[error("the store is shut down")]
    Closed,
    #[error("{path} is open in another process (only one process may open a database)")]
    InUse { path: PathBuf },
    #[error("the write batch failed: {0}")]
    BatchFailed(String),
}

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

/// One guarded write as the seam carries it: a put (a live record) or a delete (a
/// tombstone), carrying the client's timestamp in `record.timestamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardedWrite {
    pub key: Vec<u8>,
    pub record: Record,
    /// Tyrant `putkeep`: refuse with [`Guarded::Exists`] when a live value is stored.
    pub if_absent: bool,
}

/// Server time and grace period a guarded write is judged at (see [`crate::guard`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardClock {
    pub now: u64,
    pub grace_micros: u64,
}

/// What a guarded write did: the verdict of [`crate::guard::decide`], as the engine
/// applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// Written; `was_live` tells whether a live value was replaced.
    Applied { was_live: bool },
    /// The identical write was already stored at this timestamp; nothing changed.
    Repeated,
    /// Older than the stored timestamp; nothing changed.
    Stale { current: u64 },
    /// Same timestamp as the stored record, different content; nothing changed.
    Tie { current: u64 },
    /// `if_absent` and a live value is stored; nothing changed.
    Exists,
    /// The stored record cannot be decoded; nothing changed.
    Corrupt,
}

/// A range of keys to read in key order: those after `start` that begin with `prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: std::ops::Bound<Vec<u8>>,
    pub prefix: Vec<u8>,
}

/// A consistent copy of the whole store as a database file: already unlinked, so the
/// open handle is all that keeps it, and a crash cannot leave it behind.
#[derive(Debug)]
pub struct Snapshot {
    pub file: std::fs::File,
    /// Records in the copy, tombstones included.
    pub records: u64,
}

/// An engine's own error, kept whole so its chain of causes survives.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl StoreError {
    /// An engine failure described in words, for failures that have no error value.
    pub fn engine(why: impl Into<String>) -> Self {
        StoreError::Engine(why.into().into())
    }
}

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
}

/// Counts used for `rnum`, `/metrics` and the Tyrant `stat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every stored record, tombstones included.
    pub records: u64,
    pub tombstones: u64,
    /// Live-looking records whose expiry has passed but which are not yet purged.
    pub expired: u64,
}

impl Counts {
    pub fn live(&self) -> u64 {
        self.records
            .saturating_sub(self.tombstones)
            .saturating_sub(self.expired)
    }
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
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

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
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
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(&mut WriteBatch<'_>) -> Result<T, StoreError>,
    {
        self.inner.core.write(op, false).await
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

    /// Record counts at server time `now`.
    pub fn counts(&self, now: u64) -> Result<Counts, StoreError> {
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
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::SchemaTooNew {
                    path: path.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            // Versions below 1 never existed; a future v2 adds its upgrade step from 1 here
            // (see migrations/README.md).
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
        file_id
    };
    txn.commit()?;
    Ok(file_id)
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
    expiries: Table<'txn, (u64, &'static [u8]), ()>,
    tombstones: Table<'txn, (u64, &'static [u8]), ()>,
    scratch: Vec<u8>,
}

impl<'txn> Tables<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            expiries: txn.open_table(EXPIRIES)?,
            tombstones: txn.open_table(TOMBSTONES)?,
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
            unindex(&mut self.expiries, &mut self.tombstones, key, &old)?;
        }
        index(&mut self.expiries, &mut self.tombstones, key, record)
    }

    /// Remove `key` entirely.
    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let old = self
            .records
            .remove(key)?
            .and_then(|old| codec::decode(old.value()));
        if let Some(old) = &old {
            unindex(&mut self.expiries, &mut self.tombstones, key, old)?;
        }
        Ok(())
    }

    /// Remove every record, tombstones included.
    fn clear(&mut self) -> Result<(), StoreError> {
        self.records.retain(|_, _| false)?;
        self.expiries.retain(|_, _| false)?;
        self.tombstones.retain(|_, _| false)?;
        Ok(())
    }
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub expired: usize,
    pub tombstones: usize,
}

fn index(
    expiries: &mut Table<'_, (u64, &'static [u8]), ()>,
    tombstones: &mut Table<'_, (u64, &'static [u8]), ()>,
    key: &[u8],
    record: &Record,
) -> Result<(), StoreError> {
    match record.state {
        State::Live {
            expires_at: Some(at),
            ..
        } => {
            expiries.insert((at, key), ())?;
        }
        State::Tombstone { deleted_at } => {
            tombstones.insert((deleted_at, key), ())?;
        }
        State::Live { .. } => {}
    }
    Ok(())
}

fn unindex(
    expiries: &mut Table<'_, (u64, &'static [u8]), ()>,
    tombstones: &mut Table<'_, (u64, &'static [u8]), ()>,
    key: &[u8],
    record: &Record,
) -> Result<(), StoreError> {
    match record.state {
        State::Live {
            expires_at: Some(at),
            ..
        } => {
            expiries.remove((at, key))?;
        }
        State::Tombstone { deleted_at } => {
            tombstones.remove((deleted_at, key))?;
        }
        State::Live { .. } => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> StoreOptions {
        StoreOptions {
            data_dir: dir.to_path_buf(),
            durability: Durability::Immediate,
            cache_size: 1 << 20,
        }
    }

    /// A crash leaves the database file as of its last checkpoint plus the log; the
    /// reopened store must hold every acknowledged write.
    #[tokio::test]
    async fn acknowledged_writes_are_replayed_from_the_log_into_an_old_database_file() {
        let live = tempfile::tempdir().unwrap();
        let image = tempfile::tempdir().unwrap();
        let store = Store::open_with_checkpoints(
            &options(live.path()),
            Arc::new(Metrics::new()),
            std::time::Duration::MAX,
        )
        .unwrap();
        // The database file as of the last checkpoint (here: the empty, just-created one).
        std::fs::copy(
            live.path().join(DB_FILE_NAME),
            image.path().join(DB_FILE_NAME),
        )
        .unwrap();
        for i in 0..50u64 {
            let key = format!("k{i}").into_bytes();
            store
                .write(move |b| b.put(&key, &Record::live(i + 1, vec![i as u8], "t".into(), None)))
                .await
                .unwrap();
        }
        store
            .write(|b| b.put(b"k7", &Record::tombstone(100, 5)).map(|_| ()))
            .await
            .unwrap();
        store.write(|b| b.remove(b"k8").map(|_| ())).await.unwrap();
        // The log as the crash leaves it.
        for name in WAL_FILE_NAMES {
            std::fs::copy(live.path().join(name), image.path().join(name)).unwrap();
        }
        store.close().await.unwrap();

        let recovered = Store::open(&options(image.path()), Arc::new(Metrics::new())).unwrap();
        for i in (0..50u64).filter(|i| ![7, 8].contains(i)) {
            let record = recovered.get(format!("k{i}").as_bytes()).unwrap().unwrap();
            assert_eq!(record, Record::live(i + 1, vec![i as u8], "t".into(), None));
        }
        assert_eq!(
            recovered.get(b"k7").unwrap(),
            Some(Record::tombstone(100, 5))
        );
        assert_eq!(recovered.get(b"k8").unwrap(), None);
        assert_eq!(recovered.counts(0).unwrap().tombstones, 1);
        recovered.close().await.unwrap();
        drop(recovered);
        // Recovery checkpointed: a second open has nothing to replay and the same data.
        let again = Store::open(&options(image.path()), Arc::new(Metrics::new())).unwrap();
        assert_eq!(again.counts(0).unwrap().records, 49);
        again.close().await.unwrap();
    }

    fn live(i: u64) -> Record {
        Record::live(i, i.to_be_bytes().to_vec(), "t".into(), None)
    }

    async fn put_all(store: &Store, keys: std::ops::Range<u64>, version: u64) {
        for i in keys {
            let key = format!("k{i}").into_bytes();
            store
                .write(move |b| b.put(&key, &live(version)))
                .await
                .unwrap();
        }
    }

    /// A crash in the middle of a checkpoint leaves the database file from before it,
    /// the log file being checkpointed and the new one: replay must take both, in
    /// order, so a key rewritten after the rotation ends at its newest record.
    #[tokio::test]
    async fn a_crash_during_a_checkpoint_replays_both_log_files_in_order() {
        let live_dir = tempfile::tempdir().unwrap();
        let image = tempfile::tempdir().unwrap();
        let store = Store::open_with_checkpoints(
            &options(live_dir.path()),
            Arc::new(Metrics::new()),
            std::time::Duration::MAX,
        )
        .unwrap();
        // Two checkpoints first, so the log has gone once round both files.
        put_all(&store, 0..10, 1).await;
        store.inner.core.checkpoint_now().unwrap();
        put_all(&store, 10..20, 1).await;
        store.inner.core.checkpoint_now().unwrap();
        // Before the third checkpoint: the database file and the active log file.
        put_all(&store, 0..30, 2).await;
        let copy = |name: &str| {
            std::fs::copy(live_dir.path().join(name), image.path().join(name)).unwrap();
        };
        copy(DB_FILE_NAME);
        copy(WAL_FILE_NAMES[0]);
        // The checkpoint rotates to the other file; writes after it land there.
        store.inner.core.checkpoint_now().unwrap();
        put_all(&store, 25..35, 3).await;
        copy(WAL_FILE_NAMES[1]);
        store.close().await.unwrap();

        let recovered = Store::open(&options(image.path()), Arc::new(Metrics::new())).unwrap();
        for i in 0..35u64 {
            let want = if i >= 25 { 3 } else { 2 };
            assert_eq!(
                recovered.get(format!("k{i}").as_bytes()).unwrap(),
                Some(live(want)),
                "k{i}"
            );
        }
        assert_eq!(recovered.counts(0).unwrap().records, 35);
        recovered.close().await.unwrap();
    }

    /// Frames after a hole in the LSN sequence were never acknowledged (the sync that
    /// would have covered them also covers the hole): replay stops at the hole.
    #[tokio::test]
    async fn replay_stops_at_a_gap_in_the_log_sequence() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(&options(dir.path()), Arc::new(Metrics::new()))
            .unwrap()
            .close()
            .await
            .unwrap();
        let file_id = {
            let db = Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
            prepare_schema(&db, dir.path()).unwrap()
        };
        {
            let paths = WAL_FILE_NAMES.map(|name| dir.path().join(name));
            let (mut log, _) = wal::Wal::open(paths, file_id).unwrap();
            for lsn in [1u64, 2, 4] {
                let mut record = Vec::new();
                codec::encode(&live(lsn), &mut record);
                let mut payload = Vec::new();
                wal::log_put(&mut payload, format!("k{lsn}").as_bytes(), &record);
                log.append(lsn, &payload).unwrap();
            }
        }
        let store = Store::open(&options(dir.path()), Arc::new(Metrics::new())).unwrap();
        assert_eq!(store.get(b"k1").unwrap(), Some(live(1)));
        assert_eq!(store.get(b"k2").unwrap(), Some(live(2)));
        assert_eq!(store.get(b"k4").unwrap(), None);
        // New writes continue the sequence after the replayed run.
        store.write(|b| b.put(b"k5", &live(5))).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        let again = Store::open(&options(dir.path()), Arc::new(Metrics::new())).unwrap();
        assert_eq!(again.get(b"k5").unwrap(), Some(live(5)));
        again.close().await.unwrap();
    }

    /// A refused or failed write closure leaves nothing behind: staged changes are
    /// applied only when it returns Ok.
    #[tokio::test]
    async fn a_failed_write_closure_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&options(dir.path()), Arc::new(Metrics::new())).unwrap();
        let failed = store
            .write(|b| {
                b.put(b"a", &live(1))?;
                Err::<(), _>(StoreError::engine("boom"))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(store.get(b"a").unwrap(), None);
        // A closure sees its own staged changes, then everything beneath.
        store.write(|b| b.put(b"b", &live(1))).await.unwrap();
        let seen = store
            .write(|b| {
                b.put(b"a", &live(2))?;
                let own = b.get(b"a")?;
                let removed = b.remove(b"b")?;
                Ok((own, removed, b.get(b"b")?))
            })
            .await
            .unwrap();
        assert_eq!(seen, (Some(live(2)), Some(live(1)), None));
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_log_from_another_database_file_is_not_replayed() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let store = Store::open_with_checkpoints(
            &options(a.path()),
            Arc::new(Metrics::new()),
            std::time::Duration::MAX,
        )
        .unwrap();
        store
            .write(|b| b.put(b"x", &Record::live(1, b"v".to_vec(), "t".into(), None)))
            .await
            .unwrap();
        for name in WAL_FILE_NAMES {
            std::fs::copy(a.path().join(name), b.path().join(name)).unwrap();
        }
        store.close().await.unwrap();
        let other = Store::open(&options(b.path()), Arc::new(Metrics::new())).unwrap();
        assert_eq!(other.get(b"x").unwrap(), None);
        other.close().await.unwrap();
    }
}
