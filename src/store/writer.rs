//! The group-commit writer: one thread, one write transaction per batch.
//!
//! Callers queue closures; the thread takes everything that has queued up (up to
//! [`MAX_BATCH`]), runs each closure against the same transaction, commits once —
//! fsynced when the store is immediate or a closure asked for it — and then answers
//! every caller. While a commit is in flight, new writes queue and form the next batch,
//! so the number of fsyncs grows with time, not with the number of writers.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::{Durability, StoreError, WriteBatch};
use crate::metrics::Metrics;

/// Most closures applied in one transaction; bounds the latency a batch adds.
pub const MAX_BATCH: usize = 1024;
/// Queue depth before callers wait (backpressure instead of unbounded memory).
const QUEUE_DEPTH: usize = 16 * 1024;

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
    durability: Durability,
    metrics: Arc<Metrics>,
    unflushed: Arc<AtomicBool>,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<Message>) {
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
            let force_durable = shutdown.is_some() && self.unflushed.load(Ordering::Acquire);
            if !jobs.is_empty() || force_durable {
                self.commit_batch(&mut jobs, force_durable);
            }
            if let Some(reply) = shutdown {
                let _ = reply.send(Ok(()));
                rx.close();
                // Anything queued behind the shutdown is answered with Closed by the drop.
                return;
            }
        }
    }

    fn commit_batch(&self, jobs: &mut Vec<Job>, force_durable: bool) {
        let started = Instant::now();
        let durable = force_durable
            || self.durability == Durability::Immediate
            || jobs.iter().any(|j| j.durable);
        let count = jobs.len();
        let mut completions: Vec<Completion> = Vec::with_capacity(count);
        let outcome = self.apply(jobs, durable, &mut completions);
        // If the transaction could not even begin, no job ran. Drop them (answering
        // `Closed`) rather than keep them for the next batch: kept, they would grow the
        // batch past MAX_BATCH on every failure while their callers hang.
        jobs.clear();
        if outcome.is_ok() {
            if durable {
                self.unflushed.store(false, Ordering::Release);
            } else if count > 0 {
                self.unflushed.store(true, Ordering::Release);
            }
            self.metrics.commit_batch_size.observe(count as f64);
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
        } else if let Err(e) = &outcome {
            tracing::error!(error = %e, batch = count, "write batch failed; nothing in it was committed");
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
    }

    /// Run every job in one transaction and commit. On any failure nothing is committed;
    /// jobs not yet run are dropped, which answers their callers with `Closed`.
    fn apply(
        &self,
        jobs: &mut Vec<Job>,
        durable: bool,
        completions: &mut Vec<Completion>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        {
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
        }
        txn.commit()?;
        Ok(())
    }
}
