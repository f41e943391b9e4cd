//! The group-commit writer: one thread, one write transaction per batch.
//!
//! Callers queue closures; the thread takes everything that has queued up (up to
//! [`MAX_BATCH`]), runs each closure against the same transaction, commits it to redb
//! without fsync, appends the batch's changes to the write-ahead log, syncs the log
//! (when the store is immediate or a closure asked for it) and only then answers every
//! caller. While a batch is being synced, new writes queue and form the next batch, so
//! the number of fsyncs grows with time, not with the number of writers.
//!
//! A checkpoint — an fsynced redb commit, after which the log is emptied — runs every
//! [`CHECKPOINT_INTERVAL`] or when the log passes [`CHECKPOINT_BYTES`], and at shutdown.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    let handle = std::thread::Builder::new()
        .name("tidemark-writer".into())
        .spawn(move || {
            Writer {
                db,
                wal,
                next_lsn,
                unsynced: false,
                last_checkpoint: Instant::now(),
                checkpoint_interval,
                broken: None,
                durability,
                metrics,
                unflushed,
            }
            .run(rx)
        })
        .map_err(|e| StoreError::Engine(format!("cannot start writer thread: {e}")))?;
    Ok((tx, handle))
}

struct Writer {
    db: Arc<Database>,
    wal: Wal,
    /// LSN the next logged batch gets.
    next_lsn: u64,
    /// The log holds appended batches not yet synced.
    unsynced: bool,
    last_checkpoint: Instant,
    checkpoint_interval: Duration,
    /// Set once the log could not be written or synced: durability can no longer be
    /// promised, so every later write fails instead of being acknowledged.
    broken: Option<String>,
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
        let outcome = match &self.broken {
            Some(why) => Err(StoreError::Engine(why.clone())),
            None => self.apply(jobs, &mut completions),
        };
        // If the transaction could not even begin, no job ran. Drop them (answering
        // `Closed`) rather than keep them for the next batch: kept, they would grow the
        // batch past MAX_BATCH on every failure while their callers hang.
        jobs.clear();
        let outcome = outcome.and_then(|()| self.make_durable(durable));
        match &outcome {
            Ok(()) => {
                self.metrics.commit_batch_size.observe(count as f64);
                self.metrics
                    .commit_seconds
                    .observe(started.elapsed().as_secs_f64());
            }
            Err(e) => {
                tracing::error!(error = %e, batch = count, "write batch failed; nothing in it was acknowledged");
            }
        }
        let failure = match &outcome {
            Ok(()) => None,
            Err(StoreError::BatchFailed(why)) => Some(why.clone()),
            Err(e) => Some(e.to_string()),
        };
        for done in completions {
            done(match &failure {
                None => Ok(()),
                Some(why) => Err(StoreError::BatchFailed(why.clone())),
            });
        }
        if failure.is_none()
            && (self.wal.len() >= CHECKPOINT_BYTES
                || self.last_checkpoint.elapsed() >= self.checkpoint_interval)
            && let Err(e) = self.checkpoint()
        {
            tracing::error!(error = %e, "checkpoint failed; the log keeps the changes");
        }
    }

    /// Sync the log if this batch must be durable; otherwise note that it is pending.
    fn make_durable(&mut self, durable: bool) -> Result<(), StoreError> {
        if !durable {
            self.unflushed.store(self.unsynced, Ordering::Release);
            return Ok(());
        }
        if self.unsynced {
            if let Err(e) = self.wal.sync() {
                return Err(self.break_log("sync", e));
            }
            self.unsynced = false;
        }
        self.unflushed.store(false, Ordering::Release);
        Ok(())
    }

    fn break_log(&mut self, what: &str, e: std::io::Error) -> StoreError {
        let why = format!(
            "cannot {what} the write-ahead log {}: {e}; refusing further writes",
            self.wal.path().display()
        );
        self.broken = Some(why.clone());
        StoreError::Engine(why)
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
        if let Err(e) = self.wal.reset() {
            return Err(self.break_log("truncate", e));
        }
        self.unsynced = false;
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
        self.unsynced = true;
        Ok(())
    }
}
