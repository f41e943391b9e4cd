//! The vault: the only module that imports redb.
//!
//! One redb file holds every record. Reads run in read transactions and never wait
//! for the writer. Writes are closures handed to a single writer thread
//! ([`writer`]) that applies whatever has queued up inside one write transaction,
//! commits once, and only then answers each caller — group commit.

mod codec;
mod wal;
mod writer;

use std::ops::{Bound, ControlFlow};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use tokio::sync::{mpsc, oneshot};

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
pub const WAL_FILE_NAME: &str = "tidemark.wal";

/// The on-disk layout this build reads and writes. See migrations/.
pub const SCHEMA_VERSION: u64 = 1;
/// File name of the database inside the data directory.
pub const DB_FILE_NAME: &str = "tidemark.redb";

/// Errors from the storage engine, kept behind one type so nothing above the store
/// depends on redb.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine: {0}")]
    Engine(String),
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
                StoreError::Engine(e.to_string())
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
    db: Arc<Database>,
    path: PathBuf,
    jobs: mpsc::Sender<writer::Message>,
    unflushed: Arc<std::sync::atomic::AtomicBool>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// if the last stop was unclean, and start the writer thread.
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
                other => StoreError::Engine(format!("{}: {other}", path.display())),
            })?;
        let file_id = prepare_schema(&db, &path)?;
        let wal_path = options.data_dir.join(WAL_FILE_NAME);
        let wal_io = |source| StoreError::Io {
            path: wal_path.clone(),
            source,
        };
        let (mut log, batches) = wal::Wal::open(&wal_path, file_id).map_err(wal_io)?;
        let applied = recover(&db, batches)?;
        log.reset().map_err(wal_io)?;
        let db = Arc::new(db);
        let unflushed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (jobs, handle) = writer::spawn(
            db.clone(),
            log,
            applied + 1,
            checkpoint_interval,
            options.durability,
            metrics,
            unflushed.clone(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path,
                jobs,
                unflushed,
                writer: std::sync::Mutex::new(Some(handle)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Run `op` inside the shared write transaction and return its result once the
    /// commit holding it has finished (durably, unless the store is relaxed).
    ///
    /// `op` must only return `Err` for engine failures: that aborts the whole batch.
    /// Refusals (stale writes and the like) are part of `T`.
    pub async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteBatch<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = writer::Job::new(op, reply, false);
        self.inner
            .jobs
            .send(writer::Message::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        // A dropped reply means the batch never committed (engine failure or a panic).
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Make every write so far durable (the write-ahead log is synced), whatever the
    /// durability mode.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = writer::Job::new(|_| Ok(()), reply, true);
        self.inner
            .jobs
            .send(writer::Message::Job(job))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Whether relaxed commits are waiting for an fsync.
    pub fn has_unflushed_commits(&self) -> bool {
        self.inner
            .unflushed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stop the writer after everything queued so far, flushing it to disk.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (reply, done) = oneshot::channel();
        if self
            .inner
            .jobs
            .send(writer::Message::Shutdown(reply))
            .await
            .is_ok()
        {
            done.await.map_err(|_| StoreError::Closed)??;
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        Ok(())
    }

    /// The record stored for `key`, including tombstones and expired values.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(RECORDS)?;
        let Some(guard) = table.get(key)? else {
            return Ok(None);
        };
        codec::decode(guard.value())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt { key: key.to_vec() })
    }

    /// Visit records in key order starting at `from`, until `visit` breaks or the keys run out.
    pub fn scan(
        &self,
        from: Bound<&[u8]>,
        mut visit: impl FnMut(&[u8], Record) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let txn = self.inner.db.begin_read()?;
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
        let txn = self.inner.db.begin_read()?;
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
        let txn = self.inner.db.begin_read()?;
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
        let txn = self.inner.db.begin_read()?;
        let source = txn.open_table(RECORDS)?;
        let target = Database::create(dest)?;
        prepare_schema(&target, dest)?;
        let mut copied = 0u64;
        let mut rows = source.range::<&[u8]>(..)?.peekable();
        while rows.peek().is_some() {
            let out = target.begin_write()?;
            {
                let mut batch = WriteBatch::open(&out)?;
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
    let pending: Vec<_> = batches
        .into_iter()
        .filter(|(lsn, _)| *lsn > applied)
        .collect();
    let Some(last) = pending.last().map(|(lsn, _)| *lsn) else {
        return Ok(applied);
    };
    let txn = db.begin_write()?;
    {
        let mut batch = WriteBatch::open(&txn)?;
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

/// The write side of one transaction, lent to each write closure in turn.
/// Keeps the sweeper's index tables consistent with the records.
pub struct WriteBatch<'txn> {
    records: Table<'txn, &'static [u8], &'static [u8]>,
    expiries: Table<'txn, (u64, &'static [u8]), ()>,
    tombstones: Table<'txn, (u64, &'static [u8]), ()>,
    scratch: Vec<u8>,
    /// The changes made through this batch, in write-ahead-log form.
    log: Vec<u8>,
}

impl<'txn> WriteBatch<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            expiries: txn.open_table(EXPIRIES)?,
            tombstones: txn.open_table(TOMBSTONES)?,
            scratch: Vec::new(),
            log: Vec::new(),
        })
    }

    /// The logged changes, leaving the batch's log empty.
    fn take_log(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.log)
    }

    /// The record for `key` as this transaction sees it (earlier writes in the batch included).
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let Some(guard) = self.records.get(key)? else {
            return Ok(None);
        };
        codec::decode(guard.value())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt { key: key.to_vec() })
    }

    /// Store `record` under `key`, replacing what was there.
    pub fn put(&mut self, key: &[u8], record: &Record) -> Result<(), StoreError> {
        codec::encode(record, &mut self.scratch);
        wal::log_put(&mut self.log, key, &self.scratch);
        let old = self
            .records
            .insert(key, self.scratch.as_slice())?
            .and_then(|old| codec::decode(old.value()));
        if let Some(old) = old {
            unindex(&mut self.expiries, &mut self.tombstones, key, &old)?;
        }
        index(&mut self.expiries, &mut self.tombstones, key, record)
    }

    /// Remove `key` entirely (no tombstone). Returns what was there.
    pub fn remove(&mut self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        wal::log_remove(&mut self.log, key);
        let old = self
            .records
            .remove(key)?
            .and_then(|old| codec::decode(old.value()));
        if let Some(old) = &old {
            unindex(&mut self.expiries, &mut self.tombstones, key, old)?;
        }
        Ok(old)
    }

    /// Remove every record, tombstones included.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        wal::log_clear(&mut self.log);
        self.records.retain(|_, _| false)?;
        self.expiries.retain(|_, _| false)?;
        self.tombstones.retain(|_, _| false)?;
        Ok(())
    }

    /// Purge up to `limit` records whose guard lapsed at or before `cutoff`
    /// (expired at or before it, or deleted at or before it).
    pub fn purge(&mut self, cutoff: u64, limit: usize) -> Result<Purged, StoreError> {
        let upper: (u64, &[u8]) = (cutoff.saturating_add(1), &[]);
        let mut purged = Purged::default();
        let due = collect_due(&self.tombstones, upper, limit)?;
        for (at, key) in due {
            self.tombstones.remove((at, key.as_slice()))?;
            if matches!(self.get(&key)?, Some(Record { state: State::Tombstone { deleted_at }, .. }) if deleted_at == at)
            {
                wal::log_remove(&mut self.log, &key);
                self.records.remove(key.as_slice())?;
                purged.tombstones += 1;
            }
        }
        let due = collect_due(
            &self.expiries,
            upper,
            limit.saturating_sub(purged.tombstones),
        )?;
        for (at, key) in due {
            self.expiries.remove((at, key.as_slice()))?;
            if matches!(self.get(&key)?, Some(Record { state: State::Live { expires_at: Some(e), .. }, .. }) if e == at)
            {
                wal::log_remove(&mut self.log, &key);
                self.records.remove(key.as_slice())?;
                purged.expired += 1;
            }
        }
        Ok(purged)
    }
}

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub expired: usize,
    pub tombstones: usize,
}

fn collect_due(
    table: &Table<'_, (u64, &'static [u8]), ()>,
    upper: (u64, &[u8]),
    limit: usize,
) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    let mut due = Vec::new();
    for entry in table.range(..upper)?.take(limit) {
        let (k, _) = entry?;
        let (at, key) = k.value();
        due.push((at, key.to_vec()));
    }
    Ok(due)
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
        std::fs::copy(
            live.path().join(WAL_FILE_NAME),
            image.path().join(WAL_FILE_NAME),
        )
        .unwrap();
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
        std::fs::copy(a.path().join(WAL_FILE_NAME), b.path().join(WAL_FILE_NAME)).unwrap();
        store.close().await.unwrap();
        let other = Store::open(&options(b.path()), Arc::new(Metrics::new())).unwrap();
        assert_eq!(other.get(b"x").unwrap(), None);
        other.close().await.unwrap();
    }
}
