//! The vault: the only module that imports redb.
//!
//! One redb file holds every record. Reads run in read transactions and never wait
//! for the writer. Writes are closures handed to a single writer thread
//! ([`writer`]) that applies whatever has queued up inside one write transaction,
//! commits once, and only then answers each caller — group commit.

mod codec;
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
    /// Open (or create) the database in `options.data_dir` and start the writer thread.
    pub fn open(options: &StoreOptions, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
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
                other => StoreError::Engine(format!("{}: {other}", path.display())),
            })?;
        prepare_schema(&db, &path)?;
        let db = Arc::new(db);
        let unflushed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (jobs, handle) =
            writer::spawn(db.clone(), options.durability, metrics, unflushed.clone())?;
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

    /// Make every commit so far durable (an fsynced commit), whatever the durability mode.
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

/// Check (or stamp) the schema version of a freshly opened file.
fn prepare_schema(db: &Database, path: &Path) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
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
        // Create every table so readers never see "table does not exist".
        txn.open_table(RECORDS)?;
        txn.open_table(EXPIRIES)?;
        txn.open_table(TOMBSTONES)?;
    }
    txn.commit()?;
    Ok(())
}

/// The write side of one transaction, lent to each write closure in turn.
/// Keeps the sweeper's index tables consistent with the records.
pub struct WriteBatch<'txn> {
    records: Table<'txn, &'static [u8], &'static [u8]>,
    expiries: Table<'txn, (u64, &'static [u8]), ()>,
    tombstones: Table<'txn, (u64, &'static [u8]), ()>,
    scratch: Vec<u8>,
}

impl<'txn> WriteBatch<'txn> {
    fn open(txn: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            expiries: txn.open_table(EXPIRIES)?,
            tombstones: txn.open_table(TOMBSTONES)?,
            scratch: Vec::new(),
        })
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
