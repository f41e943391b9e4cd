//! The group-commit writer: one thread, one write transaction per batch, and a syncer
//! thread beside it.
//!
//! Callers queue closures; the writer takes everything that has queued up (up to
//! [`MAX_BATCH`]), runs each closure against the same transaction, commits it to redb
//! without fsync and appends the batch's changes to the write-ahead log. When the batch
//! must be durable (the store is immediate, or a closure asked for it) its answers go
//! to the syncer, which `fdatasync`s the log and then answers everything that was
//! logged before the sync began. The writer does not wait: it applies the next batch
//! while the disk syncs the last one, so one sync covers every batch logged meanwhile
//! and the number of fsyncs grows with time, not with the number of writers.
//!
//! A checkpoint — an fsynced redb commit, after which the log is emptied — runs every
//! [`CHECKPOINT_INTERVAL`] or when the log passes [`CHECKPOINT_BYTES`], and at shutdown.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::wal::Wal;
use super::{APPLIED_LSN_KEY, Durability, META, StoreError, WriteBatch};
use crate::metrics::Metrics;

/// Most closures applied in one transaction; bounds the latency a batch adds.
pub const MAX_BATCH: usize = 1024;
/// Queue depth before callers wait (backpressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 16 * 1024;
/// Longest time between checkpoints while writes arrive (bounds recovery time).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(2);
/// Log size that triggers a checkpoint (bounds the log file and recovery time).
pub const CHECKPOINT_BYTES: u64 = 64 << 20;

type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
type Run = Box<dyn FnOnce(&mut WriteBatch<'_>) -> (bool, Completion) + Send>;

pub struct Job {
    run: Run,
    /// This job needs an fsynced commit even when the store is relaxed.
    durable: bool,
}

impl Job {
    pub fn new<T, F>(op: F, reply: oneshot::Sender<Result<T, StoreError>>, durable: bool) -> Self
    where
        T: Send + 'static,
        F: FnOnce(&mut WriteBatch<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let run: Run = Box::new(move |batch| match op(batch) {
            Ok(value) => (
                true,
                Box::new(move |commit: Result<(), StoreError>| {
                    let _ = reply.send(commit.map(|()| value));
                }),
            ),
            Err(e) => (
                false,
                Box::new(move |_| {
                    let _ = reply.send(Err(e));
                }),
            ),
        });
        Self { run, durable }
    }
}

pub enum Message {
    Job(Job),
    /// Flush, answer, and stop taking jobs.
    Shutdown(oneshot::Sender<Result<(), StoreError>>),
}

pub fn spawn(
    db: Arc<Database>,
    wal: Wal,
    next_lsn: u64,
    checkpoint_interval: Duration,
    durability: Durability,
    metrics: Arc<Metrics>,
    unflushed: Arc<AtomicBool>,
) -> Result<(mpsc::Sender<Message>, std::thread::JoinHandle<()>), StoreError> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let log = Arc::new(LogState::default());
    let sync_file = wal.sync_handle().map_err(|source| StoreError::Io {
        path: wal.path().to_path_buf(),
        source,
    })?;
    let syncer = Syncer::spawn(
        sync_file,
        wal.path().display().to_string(),
        log.clone(),
        metrics.clone(),
        unflushed.clone(),
    )?;
    let handle = std::thread::Builder::new()
        .name("tidemark-writer".into())
        .spawn(move || {
            Writer {
                db,
                wal,
                next_lsn,
                log,
                syncer: Some(syncer),
                last_checkpoint: Instant::now(),
                checkpoint_interval,
                durability,
                metrics,
                unflushed,
            }
            .run(rx)
        })
        .map_err(|e| StoreError::Engine(format!("cannot start writer thread: {e}")))?;
    Ok((tx, handle))
}

/// What the writer and the syncer both know about the log.
#[derive(Debug, Default)]
struct LogState {
    /// Appends so far (a counter, not a size).
    appended: AtomicU64,
    /// Appends covered by a completed sync (or a checkpoint).
    synced: AtomicU64,
    /// Set once the log could not be written or synced: durability can no longer be
    /// promised, so every later write fails instead of being acknowledged.
    broken: Mutex<Option<String>>,
}

impl LogState {
    fn broken(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_broken(&self, why: String) -> StoreError {
        let why = format!("{why}; refusing further writes");
        *self
            .broken
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(why.clone());
        StoreError::Engine(why)
    }

    fn has_unsynced(&self) -> bool {
        self.appended.load(Ordering::Acquire) > self.synced.load(Ordering::Acquire)
    }
}

/// Answers waiting for a sync that covers append number `upto`.
struct Pending {
    completions: Vec<Completion>,
    upto: u64,
    started: Instant,
    count: usize,
}

/// The thread that syncs the log and then releases the answers waiting on it.
struct Syncer {
    queue: std::sync::mpsc::Sender<Pending>,
    thread: std::thread::JoinHandle<()>,
}

impl Syncer {
    fn spawn(
        file: std::fs::File,
        path: String,
        log: Arc<LogState>,
        metrics: Arc<Metrics>,
        unflushed: Arc<AtomicBool>,
    ) -> Result<Self, StoreError> {
        let (queue, waiting) = std::sync::mpsc::channel::<Pending>();
        let thread = std::thread::Builder::new()
            .name("tidemark-syncer".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    batch.extend(waiting.try_iter());
                    // Everything in `batch` was appended before it was queued, so a sync
                    // that starts now covers it.
                    let upto = batch.iter().map(|p| p.upto).max().unwrap_or(0);
                    let outcome = match log.broken() {
                        Some(why) => Err(why),
                        None => file.sync_data().map_err(|e| {
                            log.set_broken(format!("cannot sync the write-ahead log {path}: {e}"))
                                .to_string()
                        }),
                    };
                    if outcome.is_ok() {
                        log.synced.fetch_max(upto, Ordering::AcqRel);
                        if !log.has_unsynced() {
                            unflushed.store(false, Ordering::Release);
                        }
                    }
                    for pending in batch {
                        if outcome.is_ok() {
                            metrics.commit_batch_size.observe(pending.count as f64);
                            metrics
                                .commit_seconds
                                .observe(pending.started.elapsed().as_secs_f64());
                        }
                        for done in pending.completions {
                            done(outcome.clone().map_err(StoreError::BatchFailed));
                        }
                    }
                }
            })
            .map_err(|e| StoreError::Engine(format!("cannot start syncer thread: {e}")))?;
        Ok(Self { queue, thread })
    }

    /// Answer every queued completion, then stop.
    fn finish(self) {
        drop(self.queue);
        let _ = self.thread.join();
    }
}

struct Writer {
    db: Arc<Database>,
    wal: Wal,
    /// LSN the next logged batch gets.
    next_lsn: u64,
    log: Arc<LogState>,
    syncer: Option<Syncer>,
    last_checkpoint: Instant,
    checkpoint_interval: Duration,
    durability: Durability,
    metrics: Arc<Metrics>,
    unflushed: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = rx.blocking_recv() {
            let mut shutdown = None;
            match first {
                Message::Job(job) => jobs.push(job),
                Message::Shutdown(reply) => shutdown = Some(reply),
            }
            while shutdown.is_none() && jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Message::Job(job)) => jobs.push(job),
                    Ok(Message::Shutdown(reply)) => shutdown = Some(reply),
                    Err(_) => break,
                }
            }
            if !jobs.is_empty() {
                self.commit_batch(&mut jobs);
            }
            if let Some(reply) = shutdown {
                // Let waiting answers go out (their sync happens first), then make
                // everything durable in redb.
                if let Some(syncer) = self.syncer.take() {
                    syncer.finish();
                }
                let _ = reply.send(self.checkpoint());
                rx.close();
                // Anything queued behind the shutdown is answered with Closed by the drop.
                return;
            }
        }
    }

    fn commit_batch(&mut self, jobs: &mut Vec<Job>) {
        let started = Instant::now();
        let durable = self.durability == Durability::Immediate || jobs.iter().any(|j| j.durable);
        let count = jobs.len();
        let mut completions: Vec<Completion> = Vec::with_capacity(count);
        let outcome = match self.log.broken() {
            Some(why) => Err(StoreError::Engine(why)),
            None => self.apply(jobs, &mut completions),
        };
        // If the transaction could not even begin, no job ran. Drop them (answering
        // `Closed`) rather than keep them for the next batch: kept, they would grow the
        // batch past MAX_BATCH on every failure while their callers hang.
        jobs.clear();
        match outcome {
            Ok(()) if durable && self.log.has_unsynced() => {
                // Answers wait for a sync covering every append so far — this batch's,
                // and earlier ones whose data these answers may have read.
                let pending = Pending {
                    completions,
                    upto: self.log.appended.load(Ordering::Acquire),
                    started,
                    count,
                };
                if let Some(Err(refused)) = self.syncer.as_ref().map(|s| s.queue.send(pending)) {
                    // The syncer is gone (it cannot be, while the writer runs): fail
                    // rather than acknowledge without a sync.
                    for done in refused.0.completions {
                        done(Err(StoreError::BatchFailed(
                            "the log syncer stopped".into(),
                        )));
                    }
                }
            }
            Ok(()) => {
                if !durable && self.log.has_unsynced() {
                    self.unflushed.store(true, Ordering::Release);
                }
                self.metrics.commit_batch_size.observe(count as f64);
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                for done in completions {
                    done(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, batch = count, "write batch failed; nothing in it was acknowledged");
                let why = match e {
                    StoreError::BatchFailed(why) => why,
                    other => other.to_string(),
                };
                for done in completions {
                    done(Err(StoreError::BatchFailed(why.clone())));
                }
                return;
            }
        }
        if (self.wal.len() >= CHECKPOINT_BYTES
            || self.last_checkpoint.elapsed() >= self.checkpoint_interval)
            && let Err(e) = self.checkpoint()
        {
            tracing::error!(error = %e, "checkpoint failed; the log keeps the changes");
        }
    }

    fn break_log(&mut self, what: &str, e: std::io::Error) -> StoreError {
        self.log.set_broken(format!(
            "cannot {what} the write-ahead log {}: {e}",
            self.wal.path().display()
        ))
    }

    /// Commit redb durably and empty the log.
    fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.last_checkpoint = Instant::now();
        if self.wal.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::Immediate)?;
        txn.commit()?;
        // Everything appended so far is now durable in redb.
        let appended = self.log.appended.load(Ordering::Acquire);
        if let Err(e) = self.wal.reset() {
            return Err(self.break_log("truncate", e));
        }
        self.log.synced.fetch_max(appended, Ordering::AcqRel);
        self.unflushed.store(false, Ordering::Release);
        Ok(())
    }

    /// Run every job in one transaction, commit it (without fsync) and append its
    /// changes to the log. On any failure nothing is committed; jobs not yet run are
    /// dropped, which answers their callers with `Closed`.
    fn apply(
        &mut self,
        jobs: &mut Vec<Job>,
        completions: &mut Vec<Completion>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(redb::Durability::None)?;
        let log = {
            let mut batch = WriteBatch::open(&txn)?;
            for job in jobs.drain(..) {
                let ran = catch_unwind(AssertUnwindSafe(|| (job.run)(&mut batch)));
                match ran {
                    Ok((true, done)) => completions.push(done),
                    Ok((false, done)) => {
                        completions.push(done);
                        return Err(StoreError::BatchFailed("a write failed".into()));
                    }
                    Err(_) => {
                        return Err(StoreError::BatchFailed("a write panicked".into()));
                    }
                }
            }
            batch.take_log()
        };
        if log.is_empty() {
            // Nothing changed (refusals, reads): nothing to commit or log.
            txn.abort()?;
            return Ok(());
        }
        let lsn = self.next_lsn;
        txn.open_table(META)?.insert(APPLIED_LSN_KEY, lsn)?;
        txn.commit()?;
        if let Err(e) = self.wal.append(lsn, &log) {
            return Err(self.break_log("append to", e));
        }
        self.next_lsn += 1;
        self.log.appended.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}
