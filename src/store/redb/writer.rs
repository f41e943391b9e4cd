//! The write path: writes run on the caller's task, a syncer thread makes the log
//! durable, and a checkpointer thread moves logged changes into redb in bulk.
//!
//! A write takes the store's lock, runs its closure against a [`WriteBatch`] (which
//! reads through the memtables to redb and stages its changes), appends the staged
//! changes to the write-ahead log as one frame, applies them to the active memtable,
//! and lets go. No thread hand-off: a relaxed write is answered right there, an
//! immediate one once the syncer's next `fdatasync` covers its log sequence number
//! (LSN). One sync covers every write logged before it began, so the number of syncs
//! grows with time, not with the number of writers — group commit without a queue.
//!
//! Every [`CHECKPOINT_INTERVAL`], or when the memtable or the log grows past a bound,
//! the checkpointer freezes the active memtable (a new one takes writes at once),
//! switches the log to its other file, writes the frozen table into redb in one
//! durable commit that records the last LSN it holds, and empties the old log file.
//! A key written many times between checkpoints costs redb one update, and redb's
//! per-commit work (page allocation, checksums, the fsync) is paid once per
//! checkpoint instead of once per write.

use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redb::{Database, ReadOnlyTable, ReadableDatabase};
use tokio::sync::watch;

use super::cache::RecordCache;
use super::memtable::{Lookup, Memtable, Slot};
use super::wal::{self, Wal};
use super::{
    APPLIED_LSN_KEY, Durability, EXPIRIES, Found, META, Purged, RECORDS, StoreError, TOMBSTONES,
    Tables, codec,
};
use crate::metrics::Metrics;
use crate::record::{Record, State as RecordState};

/// Longest time between checkpoints while writes arrive (bounds recovery time).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// Memtable size that triggers a checkpoint before the interval is up.
const CHECKPOINT_MEMTABLE_BYTES: usize = 32 << 20;
/// Log size that triggers a checkpoint (bounds the log files and recovery time).
const CHECKPOINT_LOG_BYTES: u64 = 64 << 20;
/// Memtable size at which writers wait for the checkpointer (bounds memory when redb
/// cannot keep up).
const MEMTABLE_LIMIT: usize = 128 << 20;
/// Changes not yet in redb (active and frozen memtables together) from which writes
/// are slowed down, more the more there are, so that they settle at the pace of the
/// checkpoints instead of running into `MEMTABLE_LIMIT` and stopping (see
/// `throttle_micros`).
const PENDING_SOFT_LIMIT: usize = MEMTABLE_LIMIT / 2;
/// Pending changes at which the delay per write reaches its maximum: both tables full.
const PENDING_HARD_LIMIT: usize = 2 * MEMTABLE_LIMIT;
/// Delay per write at `PENDING_HARD_LIMIT`.
const THROTTLE_MAX_MICROS: u64 = 4_000;
/// Longest a write waits for the checkpointer before it fails.
const BACKPRESSURE_LIMIT: Duration = Duration::from_secs(10);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// redb as of the last checkpoint, shared by every reader until the next one.
struct Snapshot {
    records: ReadOnlyTable<&'static [u8], &'static [u8]>,
    /// The record cache's generation that goes with this state of redb.
    generation: u64,
}

impl Snapshot {
    fn open(db: &Database, generation: u64) -> Result<Self, StoreError> {
        let txn = db.begin_read()?;
        Ok(Self {
            records: txn.open_table(RECORDS)?,
            generation,
        })
    }

    /// The record for `key`: from the cache, or read here and offered to it, shared
    /// with the cache either way (the reader's own when the cache is off).
    fn get(&self, key: &[u8], cache: &RecordCache) -> Result<Option<Found>, StoreError> {
        if let Some(found) = cache.get(key) {
            return Ok(found.map(Found::Shared));
        }
        let found = self.read(key)?;
        if !cache.is_on() {
            return Ok(found.map(Found::Own));
        }
        let found = found.map(Arc::new);
        cache.offer(self.generation, key, &found);
        Ok(found.map(Found::Shared))
    }

    /// [`Snapshot::get`], as a record of the caller's own (a copy only if the cache
    /// holds it too).
    fn get_owned(&self, key: &[u8], cache: &RecordCache) -> Result<Option<Record>, StoreError> {
        Ok(self.get(key, cache)?.map(Found::into_record))
    }

    /// The record for `key` in this snapshot, read from redb.
    fn read(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let Some(guard) = self.records.get(key)? else {
            return Ok(None);
        };
        codec::decode(guard.value())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt { key: key.to_vec() })
    }
}

/// A stored record as a write reads it: borrowed from a memtable or the write's own
/// changes (under the write lock), or as a point read finds it below them.
pub enum Stored<'a> {
    Borrowed(&'a Record),
    Found(Found),
}

impl Stored<'_> {
    /// The record as the caller's own: a copy, unless nothing else holds it.
    pub fn into_owned(self) -> Record {
        match self {
            Stored::Borrowed(record) => record.clone(),
            Stored::Found(found) => found.into_record(),
        }
    }
}

impl Deref for Stored<'_> {
    type Target = Record;

    fn deref(&self) -> &Record {
        match self {
            Stored::Borrowed(record) => record,
            Stored::Found(found) => found,
        }
    }
}

/// Everything the write lock protects.
struct State {
    /// Takes new writes.
    active: Memtable,
    /// Being written into redb by a checkpoint; read beneath `active`.
    frozen: Option<Arc<Memtable>>,
    /// Last LSN in `frozen`.
    frozen_upto: u64,
    /// The log file holding `frozen`'s changes, emptied once redb holds them.
    frozen_log: Option<Arc<std::fs::File>>,
    snapshot: Arc<Snapshot>,
    wal: Wal,
    /// LSN of the last appended frame.
    last_lsn: u64,
    /// Set once the log could not be written or synced: durability can no longer be
    /// promised, so every later write fails instead of being acknowledged.
    broken: Option<String>,
    closed: bool,
}

impl State {
    /// What the memtables say about `key` (active, then frozen); `None` = ask redb.
    fn in_memtables(&self, key: &[u8]) -> Option<Option<&Record>> {
        match self.active.lookup(key) {
            Lookup::Found(found) => Some(found),
            Lookup::Below => match self.frozen.as_deref()?.lookup(key) {
                Lookup::Found(found) => Some(found),
                Lookup::Below => None,
            },
        }
    }

    /// The record for `key`, borrowed from a memtable when it is there, else as the
    /// snapshot finds it (shared with the record cache when that is on).
    fn lookup(&self, key: &[u8], cache: &RecordCache) -> Result<Option<Stored<'_>>, StoreError> {
        match self.in_memtables(key) {
            Some(found) => Ok(found.map(Stored::Borrowed)),
            None => Ok(self.snapshot.get(key, cache)?.map(Stored::Found)),
        }
    }
}

/// How far the log is durable, for writers waiting on it.
#[derive(Debug, Clone, Default)]
struct Synced {
    lsn: u64,
    broken: Option<Arc<str>>,
}

#[derive(Default)]
struct Signal {
    wanted: bool,
    stop: bool,
}

/// A flag, a condition variable, and the thread that waits on them.
#[derive(Default)]
struct Wakeup {
    flags: Mutex<Signal>,
    cv: Condvar,
}

impl Wakeup {
    fn want(&self) {
        let mut flags = lock(&self.flags);
        if !flags.wanted {
            flags.wanted = true;
            self.cv.notify_one();
        }
    }

    fn stop(&self) {
        lock(&self.flags).stop = true;
        self.cv.notify_one();
    }

    /// Wait until wanted (true), stopped with nothing wanted (false), or `timeout`
    /// passed (true: periodic work is due; `None` or a timeout too far off to
    /// represent waits without one).
    fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut flags = lock(&self.flags);
        loop {
            if flags.wanted {
                flags.wanted = false;
                return true;
            }
            if flags.stop {
                return false;
            }
            flags = match deadline {
                None => self
                    .cv
                    .wait(flags)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return true;
                    }
                    self.cv
                        .wait_timeout(flags, left)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner().0)
                }
            };
        }
    }
}

pub struct Core {
    db: Arc<Database>,
    state: Mutex<State>,
    /// Records read from redb, for the next reads of the same keys (see `cache`).
    cache: RecordCache,
    durability: Durability,
    metrics: Arc<Metrics>,
    /// Serializes checkpoints (the background one and those scans ask for).
    checkpointing: Mutex<()>,
    /// Approximate bytes in the active memtable, readable without the lock.
    active_bytes: AtomicUsize,
    /// Approximate bytes in the frozen memtable (0 when there is none).
    frozen_bytes: AtomicUsize,
    /// Delay owed by throttled writes, in µs; paid in whole timer ticks (see `throttle`).
    throttle_debt: AtomicU64,
    synced: watch::Sender<Synced>,
    sync: Wakeup,
    checkpoint: Wakeup,
}

/// The store's two threads.
pub struct Threads {
    syncer: std::thread::JoinHandle<()>,
    checkpointer: std::thread::JoinHandle<()>,
}

pub fn start(
    db: Arc<Database>,
    wal: Wal,
    last_lsn: u64,
    checkpoint_interval: Duration,
    durability: Durability,
    record_cache_size: usize,
    metrics: Arc<Metrics>,
) -> Result<(Arc<Core>, Threads), StoreError> {
    let cache = RecordCache::new(record_cache_size, &metrics);
    let snapshot = Arc::new(Snapshot::open(&db, cache.generation())?);
    let core = Arc::new(Core {
        db,
        state: Mutex::new(State {
            active: Memtable::default(),
            frozen: None,
            frozen_upto: 0,
            frozen_log: None,
            snapshot,
            wal,
            last_lsn,
            broken: None,
            closed: false,
        }),
        cache,
        durability,
        metrics,
        checkpointing: Mutex::new(()),
        active_bytes: AtomicUsize::new(0),
        frozen_bytes: AtomicUsize::new(0),
        throttle_debt: AtomicU64::new(0),
        synced: watch::Sender::new(Synced {
            lsn: last_lsn,
            broken: None,
        }),
        sync: Wakeup::default(),
        checkpoint: Wakeup::default(),
    });
    let spawn = |name: &str, body: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(body)
            .map_err(|e| StoreError::engine(format!("cannot start the {name} thread: {e}")))
    };
    let syncer = {
        let core = core.clone();
        spawn("tidemark-syncer", Box::new(move || core.run_syncer()))?
    };
    let checkpointer = {
        let core = core.clone();
        spawn(
            "tidemark-checkpointer",
            Box::new(move || core.run_checkpointer(checkpoint_interval)),
        )
    };
    let checkpointer = match checkpointer {
        Ok(handle) => handle,
        Err(e) => {
            core.sync.stop();
            let _ = syncer.join();
            return Err(e);
        }
    };
    Ok((
        core,
        Threads {
            syncer,
            checkpointer,
        },
    ))
}

impl Threads {
    /// Stop both threads without a final checkpoint (the log keeps what redb lacks).
    pub fn stop(self, core: &Core) {
        core.checkpoint.stop();
        let _ = self.checkpointer.join();
        core.sync.stop();
        let _ = self.syncer.join();
    }

    /// Stop taking writes, checkpoint everything, and stop both threads.
    pub fn close(self, core: &Core) -> Result<(), StoreError> {
        lock(&core.state).closed = true;
        core.checkpoint.stop();
        let _ = self.checkpointer.join();
        let outcome = core.checkpoint_now();
        core.sync.stop();
        let _ = self.syncer.join();
        let mut state = lock(&core.state);
        match &outcome {
            // Every write logged is in redb, durably: release anyone still waiting.
            Ok(()) => core.publish_synced(state.last_lsn),
            // No thread will sync any more: fail whoever still waits.
            Err(e) => {
                let why = format!("the store closed after a failed final checkpoint: {e}");
                core.break_log(&mut state, why);
            }
        }
        outcome
    }
}

impl Core {
    /// Run `op` under the write lock and return its result once its changes are
    /// logged (and synced, when the store is immediate or `durable` is set).
    ///
    /// `op` must only return `Err` for engine failures; nothing it staged is applied
    /// then. Refusals (stale writes and the like) are part of `T`.
    ///
    /// An async block, not an `async fn`: an `async fn` keeps each argument twice
    /// across an await (the argument, and the local it is bound to), and a future
    /// awaited inside an async block is moved into a second slot; `op` carries a
    /// whole write. So this is the one async layer of a guarded write: the ones
    /// above it (`RedbStore`, `Store`, `Service::put`) return it mapped in place, and
    /// the write's future is 688 bytes instead of 2,624, which matters because
    /// futures are copied whole when they move (into an HTTP handler's box, for one).
    #[expect(clippy::manual_async_fn, reason = "an async fn would hold `op` twice")]
    pub fn write<T, F>(&self, op: F, durable: bool) -> impl Future<Output = Result<T, StoreError>>
    where
        F: FnOnce(&mut WriteBatch<'_>) -> Result<T, StoreError>,
    {
        async move {
            self.make_room().await?;
            let (value, upto) = self.run(op)?;
            if durable || self.durability == Durability::Immediate {
                // Also when this write changed nothing: its answer may rest on data
                // that is logged but not yet synced.
                self.wait_synced(upto).await?;
            }
            Ok(value)
        }
    }

    /// Wait until a write may go ahead: the throttle, then the memtable's limit.
    async fn make_room(&self) -> Result<(), StoreError> {
        self.throttle().await;
        let waiting_since = Instant::now();
        while self.active_bytes.load(Ordering::Relaxed) >= MEMTABLE_LIMIT {
            // redb is behind: wait for the checkpointer rather than grow without bound,
            // but not forever (checkpoints may be failing: a full disk, say).
            if waiting_since.elapsed() >= BACKPRESSURE_LIMIT {
                return Err(StoreError::engine(format!(
                    "writes are paused: the memtable has been full for {BACKPRESSURE_LIMIT:?} \
                     and checkpoints into the database file are not keeping up"
                )));
            }
            self.checkpoint.want();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// Run `op` under the write lock and log what it staged: its answer, and the
    /// log position to wait for.
    fn run<T, F>(&self, op: F) -> Result<(T, u64), StoreError>
    where
        F: FnOnce(&mut WriteBatch<'_>) -> Result<T, StoreError>,
    {
        let mut state = lock(&self.state);
        if state.closed {
            return Err(StoreError::Closed);
        }
        if let Some(why) = &state.broken {
            return Err(StoreError::engine(why.clone()));
        }
        let mut batch = WriteBatch::new(&state, &self.db, &self.cache);
        let value = match catch_unwind(AssertUnwindSafe(|| op(&mut batch))) {
            Ok(result) => result?,
            Err(_) => return Err(StoreError::BatchFailed("a write panicked".into())),
        };
        let staged = batch.finish();
        if !staged.log.is_empty() {
            self.apply(&mut state, staged)?;
        }
        Ok((value, state.last_lsn))
    }

    /// Slow this write down when the changes waiting for redb are past the soft limit:
    /// checkpoints are behind. Measured over both tables, not the active one alone:
    /// that one empties at every checkpoint, and writes would race ahead then and stop
    /// short at the end of each checkpoint, a saw-tooth of one-second windows.
    /// Each write owes `throttle_micros` of delay; the debt is shared by all writers
    /// and paid a timer tick (1 ms) at a time by whichever write crosses it
    /// (`pay_throttle`), so that delays shorter than the timer's resolution still slow
    /// writes on average.
    async fn throttle(&self) {
        let pending =
            self.active_bytes.load(Ordering::Relaxed) + self.frozen_bytes.load(Ordering::Relaxed);
        let owed = throttle_micros(pending);
        if owed == 0 {
            return;
        }
        let Some(delay) = pay_throttle(&self.throttle_debt, owed) else {
            return;
        };
        self.metrics
            .write_throttle_seconds
            .inc_by(delay.as_secs_f64());
        self.checkpoint.want();
        tokio::time::sleep(delay).await;
    }

    fn apply(&self, state: &mut State, staged: Staged) -> Result<(), StoreError> {
        let lsn = state.last_lsn + 1;
        if let Err(e) = state.wal.append(lsn, &staged.log) {
            let why = format!(
                "cannot append to the write-ahead log {}: {e}; refusing further writes",
                state.wal.path().display()
            );
            return Err(self.break_log(state, why));
        }
        state.last_lsn = lsn;
        if staged.cleared {
            state.active.clear();
        }
        for (key, slot) in staged.changes {
            state.active.insert(key, slot);
        }
        let bytes = state.active.bytes();
        self.active_bytes.store(bytes, Ordering::Relaxed);
        if bytes >= CHECKPOINT_MEMTABLE_BYTES || state.wal.len() >= CHECKPOINT_LOG_BYTES {
            self.checkpoint.want();
        }
        Ok(())
    }

    fn break_log(&self, state: &mut State, why: String) -> StoreError {
        tracing::error!(error = %why, "the write-ahead log failed");
        state.broken = Some(why.clone());
        let shared: Arc<str> = why.clone().into();
        self.synced.send_modify(|s| s.broken = Some(shared));
        StoreError::engine(why)
    }

    async fn wait_synced(&self, upto: u64) -> Result<(), StoreError> {
        let mut synced = self.synced.subscribe();
        if synced.borrow().lsn >= upto {
            return Ok(());
        }
        self.sync.want();
        let now = synced
            .wait_for(|s| s.lsn >= upto || s.broken.is_some())
            .await
            .map_err(|_| StoreError::Closed)?;
        if now.lsn >= upto {
            return Ok(());
        }
        Err(StoreError::BatchFailed(
            now.broken
                .as_deref()
                .unwrap_or("the log failed")
                .to_string(),
        ))
    }

    fn publish_synced(&self, lsn: u64) {
        self.synced.send_if_modified(|s| {
            let newer = lsn > s.lsn;
            s.lsn = s.lsn.max(lsn);
            newer
        });
    }

    /// The record stored for `key` now, tombstones and expired values included.
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        Ok(self.get_found(key)?.map(Found::into_record))
    }

    /// [`Core::get`] without the copy of a record that comes from the record cache.
    pub fn get_found(&self, key: &[u8]) -> Result<Option<Found>, StoreError> {
        // The redb lookup runs outside the lock, on the snapshot that goes with the
        // memtables just consulted.
        let snapshot = {
            let state = lock(&self.state);
            if let Some(found) = state.in_memtables(key) {
                return Ok(found.cloned().map(Found::Own));
            }
            state.snapshot.clone()
        };
        snapshot.get(key, &self.cache)
    }

    /// A point read that has taken redb's current snapshot and reads whenever it is
    /// called: a reader that lost the processor between the two.
    #[cfg(test)]
    pub fn reader_on_current_snapshot(
        self: &Arc<Self>,
    ) -> impl Fn(&[u8]) -> Result<Option<Record>, StoreError> + use<> {
        let snapshot = lock(&self.state).snapshot.clone();
        let core = self.clone();
        move |key| snapshot.get_owned(key, &core.cache)
    }

    /// The records of `keys` as of one instant: every memtable lookup under one hold
    /// of the lock, the rest from the redb snapshot that goes with those memtables.
    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Record>>, StoreError> {
        self.get_many_meanwhile(keys, || {})
    }

    /// [`Core::get_many`], running `meanwhile` between the memtable lookups and the
    /// rest: tests put writes and a checkpoint there, a multi-key read that lost the
    /// processor in the middle.
    pub(super) fn get_many_meanwhile(
        &self,
        keys: &[Vec<u8>],
        meanwhile: impl FnOnce(),
    ) -> Result<Vec<Option<Record>>, StoreError> {
        let (hits, snapshot) = {
            let state = lock(&self.state);
            let hits: Vec<Option<Option<Record>>> = keys
                .iter()
                .map(|key| state.in_memtables(key).map(Option::<&Record>::cloned))
                .collect();
            (hits, state.snapshot.clone())
        };
        meanwhile();
        let read_below = |cache: Option<&RecordCache>| -> Result<Vec<Option<Record>>, StoreError> {
            hits.iter()
                .zip(keys)
                .filter(|(hit, _)| hit.is_none())
                .map(|(_, key)| match cache {
                    Some(cache) => snapshot.get_owned(key, cache),
                    None => snapshot.read(key),
                })
                .collect()
        };
        // A checkpoint that ends after the memtable lookups updates cached entries past
        // the snapshot they go with: one key from the cache and another from the
        // snapshot would then be no one instant. The cache holds exactly the
        // snapshot's state as long as its generation is the snapshot's, so check that
        // after reading, and read the snapshot alone if a checkpoint came between.
        let mut below = read_below(Some(&self.cache))?;
        if self.cache.generation() != snapshot.generation {
            below = read_below(None)?;
        }
        let mut below = below.into_iter();
        Ok(hits
            .into_iter()
            .map(|hit| hit.unwrap_or_else(|| below.next().flatten()))
            .collect())
    }

    /// Whether a record not yet checkpointed may have lapsed at or before `cutoff`.
    pub fn memtables_may_hold_due(&self, cutoff: u64) -> bool {
        let state = lock(&self.state);
        state.active.may_hold_due(cutoff)
            || state
                .frozen
                .as_ref()
                .is_some_and(|frozen| frozen.may_hold_due(cutoff))
    }

    /// Bring the record cache's size gauge up to date.
    pub fn publish_cache_bytes(&self) {
        self.cache.publish_bytes();
    }

    /// Whether acknowledged writes are waiting for a sync of the log.
    pub fn has_unsynced(&self) -> bool {
        let last = lock(&self.state).last_lsn;
        self.synced.borrow().lsn < last
    }

    pub fn db(&self) -> &Database {
        &self.db
    }

    fn run_syncer(&self) {
        let mut seen_rotations = 0;
        while self.sync.wait(None) {
            let (target, files, rotations) = {
                let state = lock(&self.state);
                if state.broken.is_some() {
                    continue;
                }
                let (files, rotations) = state.wal.sync_targets(seen_rotations);
                (state.last_lsn, files, rotations)
            };
            let before = self.synced.borrow().lsn;
            if target <= before {
                continue;
            }
            let started = Instant::now();
            match files.iter().try_for_each(|file| file.sync_data()) {
                Ok(()) => {
                    seen_rotations = rotations;
                    self.metrics
                        .commit_batch_size
                        .observe((target - before) as f64);
                    self.metrics
                        .commit_seconds
                        .observe(started.elapsed().as_secs_f64());
                    self.publish_synced(target);
                }
                Err(e) => {
                    let mut state = lock(&self.state);
                    let why = format!(
                        "cannot sync the write-ahead log {}: {e}; refusing further writes",
                        state.wal.path().display()
                    );
                    self.break_log(&mut state, why);
                }
            }
        }
    }

    fn run_checkpointer(&self, interval: Duration) {
        while self.checkpoint.wait(Some(interval)) {
            if let Err(e) = self.checkpoint_now() {
                tracing::error!(error = %e, "checkpoint failed; the log keeps the changes");
                // Do not spin on a persistent failure.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Write everything logged so far into redb durably, then empty the log file that
    /// held it. Scans call this first, so they see every acknowledged write.
    pub fn checkpoint_now(&self) -> Result<(), StoreError> {
        let _serial = lock(&self.checkpointing);
        // A table frozen by a checkpoint that failed goes first; the writes made since
        // are in the active table, which the second round takes.
        if self.checkpoint_round()? {
            self.checkpoint_round()?;
        }
        Ok(())
    }

    /// Freeze the active table (unless a failed checkpoint left one frozen) and write
    /// the frozen table into redb. Returns whether that table was a leftover.
    fn checkpoint_round(&self) -> Result<bool, StoreError> {
        let (frozen, upto, old_log, file_id, leftover) = {
            let mut state = lock(&self.state);
            let leftover = state.frozen.is_some();
            if !leftover {
                if state.active.is_empty() {
                    return Ok(false);
                }
                let table = std::mem::take(&mut state.active);
                let bytes = self.active_bytes.swap(0, Ordering::Relaxed);
                self.frozen_bytes.store(bytes, Ordering::Relaxed);
                state.frozen = Some(Arc::new(table));
                state.frozen_upto = state.last_lsn;
                state.frozen_log = Some(state.wal.rotate());
            }
            let Some(frozen) = state.frozen.clone() else {
                return Ok(false);
            };
            (
                frozen,
                state.frozen_upto,
                state.frozen_log.clone(),
                state.wal.file_id(),
                leftover,
            )
        };
        let started = Instant::now();
        let txn = self.db.begin_write()?;
        {
            let mut tables = Tables::open(&txn)?;
            if frozen.cleared() {
                tables.clear()?;
            }
            // In key order, so that consecutive changes land on the same or the next
            // leaf while it is still in redb's write buffer; in the hash map's order
            // every change is a walk to a random leaf (see `sorted_changes`).
            for (key, slot) in sorted_changes(&frozen) {
                match slot {
                    Slot::Put(record) => tables.put(key, record)?,
                    Slot::Removed => {
                        tables.remove(key)?;
                    }
                }
            }
            txn.open_table(META)?.insert(APPLIED_LSN_KEY, upto)?;
        }
        let written = started.elapsed();
        txn.commit()?;
        let committed = started.elapsed();
        self.metrics
            .checkpoint_seconds
            .observe(committed.as_secs_f64());
        // The cache follows redb before readers move to the new snapshot: until then
        // they find the keys just written in the frozen table, above the cache.
        let generation = self.cache.advance(frozen.cleared(), frozen.iter());
        let snapshot = Arc::new(Snapshot::open(&self.db, generation)?);
        {
            let mut state = lock(&self.state);
            state.frozen = None;
            state.frozen_log = None;
            self.frozen_bytes.store(0, Ordering::Relaxed);
            state.snapshot = snapshot;
        }
        // Everything up to `upto` is durable in redb now, synced or not.
        self.publish_synced(upto);
        tracing::debug!(
            entries = frozen.len(),
            memtable_bytes = frozen.bytes(),
            write_ms = written.as_millis() as u64,
            commit_ms = (committed - written).as_millis() as u64,
            "checkpoint"
        );
        if let Some(file) = old_log
            && let Err(e) = wal::recycle_file(&file, file_id)
        {
            // Harmless: every frame in that file is at or below the LSN redb now
            // holds, so a replay skips them; the next rounds overwrite them.
            tracing::warn!(error = %e, "cannot recycle a write-ahead log file; its old frames stay (replay skips them)");
        }
        Ok(leftover)
    }
}

/// Delay a write owes with `pending` bytes of changes not yet in redb: none up to the
/// soft limit, then growing with the square of how far past it they are, up to
/// `THROTTLE_MAX_MICROS` at the hard limit. Gentle at first, so that writes settle a
/// little past the soft limit at the checkpoints' pace.
fn throttle_micros(pending: usize) -> u64 {
    if pending <= PENDING_SOFT_LIMIT {
        return 0;
    }
    let span = (PENDING_HARD_LIMIT - PENDING_SOFT_LIMIT) as u64;
    let over = ((pending - PENDING_SOFT_LIMIT) as u64).min(span);
    // over² · max / span², in thousandths of the span so that it cannot overflow.
    let fraction = over * 1_000 / span;
    fraction * fraction * THROTTLE_MAX_MICROS / 1_000_000
}

/// Timer resolution the throttle pays its debt in.
const THROTTLE_TICK_MICROS: u64 = 1_000;

/// Add `owed` µs to the shared `debt`; when it reaches whole ticks, this write pays
/// them: the delay it must sleep. Several writers may see the same debt: only the one
/// whose subtraction lands pays it, and losing the race is harmless (the debt stays
/// for the next writer).
fn pay_throttle(debt: &AtomicU64, owed: u64) -> Option<Duration> {
    let now = debt.fetch_add(owed, Ordering::Relaxed) + owed;
    let paid = now / THROTTLE_TICK_MICROS * THROTTLE_TICK_MICROS;
    if paid == 0 {
        return None;
    }
    debt.compare_exchange(now, now - paid, Ordering::Relaxed, Ordering::Relaxed)
        .ok()
        .map(|_| Duration::from_micros(paid))
}

/// The changes of `table` in key order.
fn sorted_changes(table: &Memtable) -> Vec<(&[u8], &Slot)> {
    let mut changes: Vec<(&[u8], &Slot)> = table.iter().collect();
    changes.sort_unstable_by(|a, b| a.0.cmp(b.0));
    changes
}

/// What a write closure staged, applied only when it returns `Ok`.
struct Staged {
    changes: Vec<(Vec<u8>, Slot)>,
    cleared: bool,
    log: Vec<u8>,
}

/// Staged changes beyond this many get an index, so a large import stays linear.
const STAGED_SCAN: usize = 16;

/// The write side of one write, lent to its closure: reads see the closure's own
/// staged changes, then the memtables, then redb. Changes are staged and logged, and
/// reach the memtable only if the closure succeeds.
pub struct WriteBatch<'a> {
    state: &'a State,
    db: &'a Database,
    cache: &'a RecordCache,
    changes: Vec<(Vec<u8>, Slot)>,
    /// Position of each key's latest change, once `changes` outgrows a linear scan.
    index: std::collections::HashMap<Vec<u8>, usize>,
    cleared: bool,
    log: Vec<u8>,
    scratch: Vec<u8>,
}

impl<'a> WriteBatch<'a> {
    fn new(state: &'a State, db: &'a Database, cache: &'a RecordCache) -> Self {
        Self {
            state,
            db,
            cache,
            changes: Vec::new(),
            index: std::collections::HashMap::new(),
            cleared: false,
            log: Vec::new(),
            scratch: Vec::new(),
        }
    }

    fn finish(self) -> Staged {
        Staged {
            changes: self.changes,
            cleared: self.cleared,
            log: self.log,
        }
    }

    fn staged(&self, key: &[u8]) -> Option<&Slot> {
        let at = if self.changes.len() > STAGED_SCAN {
            self.index.get(key).copied()
        } else {
            self.changes.iter().rposition(|(k, _)| k == key)
        };
        at.map(|i| &self.changes[i].1)
    }

    fn stage(&mut self, key: &[u8], slot: Slot) {
        self.changes.push((key.to_vec(), slot));
        let last = self.changes.len() - 1;
        if self.changes.len() > STAGED_SCAN {
            if self.index.is_empty() {
                for (i, (k, _)) in self.changes.iter().enumerate() {
                    self.index.insert(k.clone(), i);
                }
            } else {
                self.index.insert(key.to_vec(), last);
            }
        }
    }

    /// The record for `key` as this write sees it (its own changes included).
    pub fn get(&self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        Ok(self.peek(key)?.map(Stored::into_owned))
    }

    /// As [`WriteBatch::get`], but where the record already is (a change of this
    /// write, a memtable, the record cache) instead of copied: the guard only reads it.
    pub fn peek(&self, key: &[u8]) -> Result<Option<Stored<'_>>, StoreError> {
        match self.staged(key) {
            Some(Slot::Put(record)) => Ok(Some(Stored::Borrowed(record))),
            Some(Slot::Removed) => Ok(None),
            None if self.cleared => Ok(None),
            None => self.state.lookup(key, self.cache),
        }
    }

    /// Store `record` under `key`, replacing what was there. Taken by value: it moves
    /// into the memtable, where a copy would cost the value's bytes and an allocation
    /// per field once more on every write.
    pub fn put(&mut self, key: &[u8], record: Record) -> Result<(), StoreError> {
        codec::encode(&record, &mut self.scratch);
        wal::log_put(&mut self.log, key, &self.scratch);
        self.stage(key, Slot::Put(record));
        Ok(())
    }

    /// Remove `key` entirely (no tombstone). Returns what was there.
    pub fn remove(&mut self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        let old = self.get(key)?;
        wal::log_remove(&mut self.log, key);
        self.stage(key, Slot::Removed);
        Ok(old)
    }

    /// Remove every record, tombstones included.
    pub fn clear(&mut self) -> Result<(), StoreError> {
        wal::log_clear(&mut self.log);
        self.changes.clear();
        self.index.clear();
        self.cleared = true;
        Ok(())
    }

    /// Purge up to `limit` records whose guard lapsed at or before `cutoff`
    /// (expired at or before it, or deleted at or before it). Candidates come from
    /// redb's index tables as of the last checkpoint; each is checked against the
    /// record as it stands now, so entries already purged or rewritten since are
    /// passed over.
    pub fn purge(&mut self, cutoff: u64, limit: usize) -> Result<Purged, StoreError> {
        let upper: (u64, &[u8]) = (cutoff.saturating_add(1), &[]);
        let txn = self.db.begin_read()?;
        let mut purged = Purged::default();
        for (table, tombstones) in [(TOMBSTONES, true), (EXPIRIES, false)] {
            for entry in txn.open_table(table)?.range(..upper)? {
                if purged.expired + purged.tombstones >= limit {
                    return Ok(purged);
                }
                let (due, _) = entry?;
                let (at, key) = due.value();
                let lapsed = match self.get(key)? {
                    Some(Record {
                        state: RecordState::Tombstone { deleted_at },
                        ..
                    }) => tombstones && deleted_at == at,
                    Some(Record {
                        state:
                            RecordState::Live {
                                expires_at: Some(expires_at),
                                ..
                            },
                        ..
                    }) => !tombstones && expires_at == at,
                    _ => false,
                };
                if lapsed {
                    self.remove(key)?;
                    if tombstones {
                        purged.tombstones += 1;
                    } else {
                        purged.expired += 1;
                    }
                }
            }
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_writes_its_changes_in_key_order() {
        let mut table = Memtable::default();
        for key in [b"c".as_slice(), b"a", b"bb", b"b"] {
            table.insert(key.to_vec(), Slot::Removed);
        }
        let keys: Vec<&[u8]> = sorted_changes(&table).into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [b"a".as_slice(), b"b", b"bb", b"c"]);
    }

    #[test]
    fn writes_are_slowed_past_the_soft_limit_more_the_more_changes_wait_for_redb() {
        assert_eq!(throttle_micros(0), 0);
        assert_eq!(throttle_micros(PENDING_SOFT_LIMIT), 0);
        let quarter = (PENDING_HARD_LIMIT - PENDING_SOFT_LIMIT) / 4;
        let steps: Vec<u64> = (1..=4)
            .map(|n| throttle_micros(PENDING_SOFT_LIMIT + n * quarter))
            .collect();
        assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
        assert_eq!(
            steps[1],
            THROTTLE_MAX_MICROS / 4,
            "quadratic: half way costs a quarter"
        );
        assert_eq!(steps[3], THROTTLE_MAX_MICROS);
        assert_eq!(throttle_micros(usize::MAX), THROTTLE_MAX_MICROS);
    }

    #[test]
    fn throttle_delays_shorter_than_a_timer_tick_add_up_and_are_paid_in_whole_ticks() {
        let debt = AtomicU64::new(0);
        let slept: Vec<Option<Duration>> = (0..10).map(|_| pay_throttle(&debt, 300)).collect();
        let paid: Vec<usize> = (0..10).filter(|&i| slept[i].is_some()).collect();
        // 300 µs per write: the 4th, 7th and 10th write reach a whole millisecond.
        assert_eq!(paid, [3, 6, 9]);
        assert!(
            paid.iter()
                .all(|&i| slept[i] == Some(Duration::from_millis(1)))
        );
        assert_eq!(debt.load(Ordering::Relaxed), 0);
        assert_eq!(pay_throttle(&debt, 2_500), Some(Duration::from_millis(2)));
        assert_eq!(debt.load(Ordering::Relaxed), 500);
    }
}
