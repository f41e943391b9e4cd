//! The vault behind one seam: the service calls [`Store`], and [`Store`] hands each
//! operation to the engine it was opened with. Nothing above this module knows which
//! engine that is.
//!
//! The seam is made of whole operations — a guarded put or delete ([`GuardedWrite`],
//! answered with a [`Guarded`] verdict), a point read, a read-modify-write of one key,
//! a range scan from a cursor, a sweep batch, counts, an export — so that an engine can
//! implement each natively: the embedded engine ([`redb`], the only module that imports
//! redb) runs them under its write lock against its memtable and redb file; a SQL
//! engine runs them as statements. The guard rule itself stays in [`crate::guard`]:
//! an engine either calls [`crate::guard::decide`] inside its write, or expresses the
//! `Apply` branch in its statement and classifies refusals with `decide`.

pub mod postgres;
pub mod redb;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::future::Either;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::record::Record;

pub use crate::guard::{GuardClock, Guarded, GuardedWrite};

pub use self::postgres::{PgStore, PostgresOptions};
pub use self::redb::{
    DB_FILE_NAME, Durability, RedbStore, SCHEMA_VERSION, StoreOptions, WAL_FILE_NAMES,
};

/// A record as a point read found it: the reader's own, or shared with the embedded
/// engine's record cache (a reference count, no copy of the value).
#[derive(Debug)]
pub enum Found {
    Own(Record),
    Shared(Arc<Record>),
}

impl Found {
    /// The record as the caller's own: a copy only if the cache holds it too.
    pub fn into_record(self) -> Record {
        match self {
            Found::Own(record) => record,
            Found::Shared(record) => Arc::unwrap_or_clone(record),
        }
    }
}

impl std::ops::Deref for Found {
    type Target = Record;

    fn deref(&self) -> &Record {
        match self {
            Found::Own(record) => record,
            Found::Shared(record) => record,
        }
    }
}

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

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub expired: usize,
    pub tombstones: usize,
}

/// The store: one of the engines, cheap to clone.
#[derive(Clone, Debug)]
pub enum Store {
    /// One redb file and its write-ahead log in a data directory (the default).
    Redb(RedbStore),
    /// A shared PostgreSQL-wire database, for several stateless replicas.
    Postgres(PgStore),
}

impl From<PgStore> for Store {
    fn from(engine: PgStore) -> Self {
        Store::Postgres(engine)
    }
}

impl From<RedbStore> for Store {
    fn from(engine: RedbStore) -> Self {
        Store::Redb(engine)
    }
}

/// Hand one call to whichever engine the store holds.
macro_rules! engine {
    ($store:expr, $engine:ident => $call:expr) => {
        match $store {
            Store::Redb($engine) => $call,
            Store::Postgres($engine) => $call,
        }
    };
}

/// [`engine!`] for an async call: the PostgreSQL engine's future is boxed. Its futures
/// hold a driver's query state (kilobytes), and an unboxed one would make every
/// caller's future that large on the embedded engine too, where it is copied whole
/// each time a request's future moves (an HTTP GET's was 4 KiB).
macro_rules! engine_async {
    ($store:expr, $engine:ident => $call:expr) => {
        match $store {
            Store::Redb($engine) => $call.await,
            Store::Postgres($engine) => Box::pin($call).await,
        }
    };
}

impl Store {
    /// Open (or create) the embedded store in `options.data_dir`.
    pub fn open(options: &StoreOptions, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        RedbStore::open(options, metrics).map(Store::Redb)
    }

    /// Connect to a shared database (applying its migrations).
    pub async fn connect(
        options: &PostgresOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        PgStore::connect(options, metrics)
            .await
            .map(Store::Postgres)
    }

    /// The record stored for `key`, tombstones and expired values included. The
    /// embedded engine hands out the one its record cache holds, shared, instead of a
    /// copy; a record from a memtable, from PostgreSQL or with the cache off is the
    /// reader's own.
    pub async fn get_found(&self, key: &[u8]) -> Result<Option<Found>, StoreError> {
        match self {
            // A point read is one B-tree descent, almost always in redb's page cache:
            // cheaper inline than a hand-off to the blocking pool.
            Store::Redb(e) => e.get_found(key),
            // Boxed, as in `engine_async!`.
            Store::Postgres(e) => Ok(Box::pin(e.get(key)).await?.map(Found::Own)),
        }
    }

    /// The records stored for `keys`, in the same order (`None` where there is none).
    pub async fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Record>>, StoreError> {
        match self {
            Store::Redb(e) => e.get_many(keys).await,
            Store::Postgres(e) => Box::pin(e.get_many(&keys)).await,
        }
    }

    /// Up to `limit` records indexed under `owner`, in key order after `after` (every
    /// record whose owner is `owner`, tombstones never; expired ones until purged).
    pub async fn owned(
        &self,
        owner: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        match self {
            Store::Redb(e) => e.owned(owner.to_string(), after, limit).await,
            Store::Postgres(e) => Box::pin(e.owned(owner, after.as_deref(), limit)).await,
        }
    }

    /// Apply one guarded put or delete if the guard lets it, atomically with the
    /// decision; the answer says what happened.
    ///
    /// The engine's future itself, not an `async fn` around it: that would hold the
    /// write twice more (`redb::writer::Core::write`).
    pub fn guarded_write(
        &self,
        write: GuardedWrite,
        clock: GuardClock,
    ) -> impl Future<Output = Result<Guarded, StoreError>> {
        match self {
            Store::Redb(e) => Either::Left(e.guarded_write(write, clock)),
            // Boxed, as in `engine_async!`.
            Store::Postgres(e) => Either::Right(Box::pin(e.guarded_write(write, clock))),
        }
    }

    /// Guarded writes applied in order as one unit (all or nothing on an engine
    /// failure); a later write is judged against an earlier one of the same call.
    pub async fn guarded_batch(
        &self,
        writes: Vec<GuardedWrite>,
        clock: GuardClock,
    ) -> Result<Vec<Guarded>, StoreError> {
        engine_async!(self, e => e.guarded_batch(writes, clock))
    }

    /// Atomic read-modify-write of one key: `change` sees the stored record and returns
    /// the record to store (`None` leaves the key as it is) and the caller's answer.
    /// No other write to the key comes between the read and the write.
    pub async fn update<T, F>(&self, key: Vec<u8>, change: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Option<Record>) -> (Option<Record>, T) + Send + 'static,
    {
        engine_async!(self, e => e.update(key, change))
    }

    /// Up to `limit` stored records of `range`, in key order, tombstones and expired
    /// values included; the caller continues after the last key it got.
    pub async fn scan(
        &self,
        range: KeyRange,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Record)>, StoreError> {
        match self {
            Store::Redb(e) => e.scan_range(range, limit).await,
            Store::Postgres(e) => Box::pin(e.scan(range, limit)).await,
        }
    }

    /// Every stored record in key order from one consistent snapshot, through a channel
    /// holding at most `capacity`; a failure arrives as the last item. Dropping the
    /// receiver stops the scan. Must be called within the Tokio runtime.
    pub fn export(&self, capacity: usize) -> mpsc::Receiver<Result<(Vec<u8>, Record), StoreError>> {
        engine!(self, e => e.export(capacity))
    }

    /// Record counts at server time `now`.
    pub async fn counts(&self, now: u64) -> Result<Counts, StoreError> {
        match self {
            Store::Redb(e) => e.counts_async(now).await,
            Store::Postgres(e) => Box::pin(e.counts(now)).await,
        }
    }

    /// Bytes the engine uses for the data (the database file's size).
    pub async fn size_bytes(&self) -> Result<u64, StoreError> {
        match self {
            Store::Redb(e) => Ok(e.file_size()),
            Store::Postgres(e) => Box::pin(e.size_bytes()).await,
        }
    }

    /// Remove up to `limit` records whose guard lapsed at or before server time `cutoff`.
    pub async fn purge(&self, cutoff: u64, limit: usize) -> Result<Purged, StoreError> {
        engine_async!(self, e => e.purge(cutoff, limit))
    }

    /// Remove every record, tombstones included.
    pub async fn clear(&self) -> Result<(), StoreError> {
        match self {
            Store::Redb(e) => e.write(|batch| batch.clear()).await,
            Store::Postgres(e) => Box::pin(e.clear()).await,
        }
    }

    /// Make every write acknowledged so far durable, whatever the durability mode.
    pub async fn flush(&self) -> Result<(), StoreError> {
        engine_async!(self, e => e.flush())
    }

    /// Whether writes acknowledged in relaxed mode are waiting to be made durable.
    pub fn has_unflushed_commits(&self) -> bool {
        engine!(self, e => e.has_unflushed_commits())
    }

    /// Make everything durable and stop the engine's background work.
    pub async fn close(&self) -> Result<(), StoreError> {
        engine_async!(self, e => e.close())
    }

    /// A consistent copy of the whole store as a database file (see [`Snapshot`]).
    /// A shared database has no such file: back it up with the database's own tools,
    /// or move its records with export and import.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        match self {
            Store::Redb(e) => e.snapshot().await,
            Store::Postgres(_) => Err(StoreError::Unsupported("a database-file snapshot")),
        }
    }

    /// The file the engine keeps its data in, if it is a local file.
    pub fn data_file(&self) -> Option<&Path> {
        match self {
            Store::Redb(e) => Some(e.path()),
            Store::Postgres(_) => None,
        }
    }

    /// Where the data lives, for humans (a path, or a database without credentials).
    pub fn location(&self) -> String {
        match self {
            Store::Redb(e) => e.path().display().to_string(),
            Store::Postgres(e) => e.location(),
        }
    }

    /// The longest key the engine can hold, if it has a limit of its own.
    pub fn max_key_bytes(&self) -> Option<usize> {
        match self {
            Store::Redb(_) => None,
            Store::Postgres(_) => Some(postgres::MAX_KEY_BYTES),
        }
    }

    /// Whether the engine can serve requests now (readiness).
    pub fn is_reachable(&self) -> bool {
        match self {
            Store::Redb(_) => true,
            Store::Postgres(e) => e.is_reachable(),
        }
    }
}
