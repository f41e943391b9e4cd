//! The hallway: operations both front doors share, and the only caller of the store.
//!
//! Every guarded write — HTTP PUT/DELETE, Tyrant `tsput`/`tsout`, Tyrant plain writes
//! under `--tyrant-guard prefix`, and records brought in by `tidemark import` —
//! goes through [`Service::put`], [`Service::delete`] or [`Service::import`], which
//! consult [`guard::decide`] inside the write transaction.
//! Unguarded Tyrant writes (Tyrant semantics) record the server's clock as their
//! timestamp (see [`server_stamp`]) so later guarded writes on either port compare
//! against a meaningful time.

use std::ops::{Bound, ControlFlow};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::guard::{self, FutureTimestamp, Intent, Verdict};
use crate::metrics::Metrics;
use crate::record::{DEFAULT_CONTENT_TYPE, Record, State};
use crate::store::{Counts, Purged, Store, StoreError, WriteBatch};

pub mod jsonl;

/// Limits and guard settings the service enforces for both front doors.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Deletes and expired records keep guarding this long (µs).
    pub grace_micros: u64,
    /// Refuse timestamps this far ahead of the server clock (µs); 0 disables.
    pub max_future_skew_micros: u64,
}

/// Longest accepted TTL: ten years, so `now + ttl` cannot overflow anything.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// A live value as read by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub content_type: String,
    pub timestamp: u64,
    pub expires_at: Option<u64>,
}

/// What an accepted write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The key had no live value before.
    Created,
    /// A live value (or, for deletes, a value or nothing) was replaced.
    Replaced,
    /// The identical write was already stored at this timestamp; nothing changed.
    Repeated,
}

/// When a guarded put may apply besides the timestamp rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutCondition {
    Always,
    /// Only when the key has no live value (Tyrant `putkeep`).
    IfAbsent,
}

/// How an unguarded (Tyrant-semantics) put combines with the stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    Overwrite,
    /// Fail if a live value exists.
    Keep,
    /// Append to the existing value.
    Concat,
    /// Append, then keep only the last `width` bytes (the new value is kept whole on a miss).
    ShiftLeft(usize),
}

/// What importing one record did (see [`Service::import`]).
#[derive(Debug)]
pub enum Imported {
    /// Newer than what guarded the key, or the key was free: stored exactly as given.
    Applied,
    /// The identical write was already stored at this timestamp; nothing changed.
    Repeated,
    /// Older than the stored timestamp; nothing changed.
    Stale { current: u64 },
    /// Same timestamp as the stored record, different content; nothing changed.
    Tie { current: u64 },
    /// Refused before the guard was asked: over a size limit, too far in the future,
    /// or the stored record is corrupt.
    Refused(ServiceError),
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("the stored value has a newer timestamp ({current})")]
    Stale { current: u64 },
    #[error("the stored value has the same timestamp ({current}) but different content")]
    Tie { current: u64 },
    #[error(
        "timestamp {} is more than {} µs ahead of the server clock ({})",
        .0.timestamp, .0.max_future_skew_micros, .0.server_now
    )]
    FutureTimestamp(FutureTimestamp),
    #[error("the key is empty")]
    EmptyKey,
    #[error("the key is {len} bytes; the limit is {max}")]
    KeyTooLong { len: usize, max: usize },
    #[error("the value is {len} bytes; the limit is {max}")]
    ValueTooLarge { len: usize, max: usize },
    #[error("TTL must be between 1 and {MAX_TTL_SECS} seconds")]
    TtlOutOfRange,
    #[error("no live value for this key")]
    NotFound,
    #[error("the key already has a live value")]
    Exists,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One page of `list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub keys: Vec<Vec<u8>>,
    /// Where the next page starts (exclusive), if there may be more.
    pub next_after: Option<Vec<u8>>,
}

#[derive(Clone, Debug)]
pub struct Service {
    store: Store,
    clock: Arc<dyn Clock>,
    policy: Policy,
    metrics: Arc<Metrics>,
}

impl Service {
    pub fn new(store: Store, clock: Arc<dyn Clock>, policy: Policy, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            clock,
            policy,
            metrics,
        }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn now(&self) -> u64 {
        self.clock.now_micros()
    }

    pub fn store_path(&self) -> PathBuf {
        self.store.path().to_path_buf()
    }

    /// Reject keys the store will not hold. Empty keys are legal for Tyrant; HTTP cannot
    /// name them.
    pub fn check_key(&self, key: &[u8]) -> Result<(), ServiceError> {
        if key.len() > self.policy.max_key_bytes {
            return Err(ServiceError::KeyTooLong {
                len: key.len(),
                max: self.policy.max_key_bytes,
            });
        }
        Ok(())
    }

    pub fn check_value(&self, len: usize) -> Result<(), ServiceError> {
        if len > self.policy.max_value_bytes {
            return Err(ServiceError::ValueTooLarge {
                len,
                max: self.policy.max_value_bytes,
            });
        }
        Ok(())
    }

    /// The live value of `key`, if any.
    pub async fn get(&self, key: Vec<u8>) -> Result<Option<Entry>, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        // A point read is one B-tree descent, almost always in redb's page cache: cheaper
        // inline than the hand-off to the blocking pool (docs/BENCHMARKS.md has the
        // numbers). Scans, which can run long, still go to the blocking pool.
        let record = self.store.get(&key)?;
        Ok(record.and_then(|r| live_entry(r, now)))
    }

    /// Guarded put: applies only when `timestamp` is newer than what guards the key.
    pub async fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        content_type: String,
        timestamp: u64,
        ttl_secs: Option<u64>,
        condition: PutCondition,
    ) -> Result<WriteOutcome, ServiceError> {
        self.check_key(&key)?;
        self.check_value(value.len())?;
        let now = self.now();
        self.check_skew(timestamp, now)?;
        let expires_at = ttl_secs.map(|ttl| expiry(now, ttl)).transpose()?;
        let grace = self.policy.grace_micros;
        let result = self
            .store
            .write(move |batch| {
                let stored = match stored_for_write(batch, &key)? {
                    Ok(stored) => stored,
                    Err(corrupt) => return Ok(Err(corrupt)),
                };
                let was_live = stored.as_ref().is_some_and(|r| r.is_live(now));
                if condition == PutCondition::IfAbsent && was_live {
                    return Ok(Err(ServiceError::Exists));
                }
                let intent = Intent::Put {
                    value: &value,
                    content_type: &content_type,
                };
                Ok(
                    match guard::decide(stored.as_ref(), timestamp, intent, now, grace) {
                        Verdict::Apply => {
                            batch.put(
                                &key,
                                &Record::live(timestamp, value, content_type, expires_at),
                            )?;
                            Ok(if was_live {
                                WriteOutcome::Replaced
                            } else {
                                WriteOutcome::Created
                            })
                        }
                        Verdict::Repeat => Ok(WriteOutcome::Repeated),
                        Verdict::Stale { current } => Err(ServiceError::Stale { current }),
                        Verdict::Tie { current } => Err(ServiceError::Tie { current }),
                    },
                )
            })
            .await?;
        self.count_refusal(&result);
        result
    }

    /// Guarded delete: leaves a tombstone carrying `timestamp`, even for a key that
    /// never existed, so a late older write cannot create it.
    pub async fn delete(&self, key: Vec<u8>, timestamp: u64) -> Result<WriteOutcome, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        self.check_skew(timestamp, now)?;
        let grace = self.policy.grace_micros;
        let result = self
            .store
            .write(move |batch| {
                let stored = match stored_for_write(batch, &key)? {
                    Ok(stored) => stored,
                    Err(corrupt) => return Ok(Err(corrupt)),
                };
                Ok(
                    match guard::decide(stored.as_ref(), timestamp, Intent::Delete, now, grace) {
                        Verdict::Apply => {
                            batch.put(&key, &Record::tombstone(timestamp, now))?;
                            Ok(if stored.is_some_and(|r| r.is_live(now)) {
                                WriteOutcome::Replaced
                            } else {
                                WriteOutcome::Created
                            })
                        }
                        Verdict::Repeat => Ok(WriteOutcome::Repeated),
                        Verdict::Stale { current } => Err(ServiceError::Stale { current }),
                        Verdict::Tie { current } => Err(ServiceError::Tie { current }),
                    },
                )
            })
            .await?;
        self.count_refusal(&result);
        result
    }

    /// Rolling sessions: push the expiry out to now + `ttl_secs`, never pulling it in.
    /// Value and timestamp are untouched; deleted, expired or absent keys are NotFound.
    /// Returns the expiry in force afterwards (`None` = never expires).
    pub async fn touch(&self, key: Vec<u8>, ttl_secs: u64) -> Result<Option<u64>, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        let wanted = expiry(now, ttl_secs)?;
        self.store
            .write(move |batch| {
                let stored = match stored_for_write(batch, &key)? {
                    Ok(stored) => stored,
                    Err(corrupt) => return Ok(Err(corrupt)),
                };
                let Some(mut record) = stored.filter(|r| r.is_live(now)) else {
                    return Ok(Err(ServiceError::NotFound));
                };
                let State::Live { expires_at, .. } = &mut record.state else {
                    return Ok(Err(ServiceError::NotFound));
                };
                match *expires_at {
                    Some(current) if current < wanted => {
                        *expires_at = Some(wanted);
                        batch.put(&key, &record)?;
                        Ok(Ok(Some(wanted)))
                    }
                    other => Ok(Ok(other)),
                }
            })
            .await?
    }

    /// Live keys starting with `prefix`, in key order, after `after` (exclusive).
    ///
    /// Scans at most a bounded number of records per call so a prefix full of
    /// tombstones cannot make one request unbounded; `next_after` then lets the
    /// client continue.
    pub async fn list(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Page, ServiceError> {
        let now = self.now();
        let scan_budget = limit.saturating_mul(10).max(1000);
        self.blocking(move |store| {
            let start = match &after {
                Some(a) if a.as_slice() >= prefix.as_slice() => Bound::Excluded(a.as_slice()),
                _ => Bound::Included(prefix.as_slice()),
            };
            let mut keys = Vec::new();
            let mut scanned = 0usize;
            let mut last_seen: Option<Vec<u8>> = None;
            let mut exhausted = true;
            store.scan(start, |key, record| {
                if !key.starts_with(&prefix) {
                    return ControlFlow::Break(());
                }
                if keys.len() == limit || scanned == scan_budget {
                    exhausted = false;
                    return ControlFlow::Break(());
                }
                scanned += 1;
                last_seen = Some(key.to_vec());
                if record.is_live(now) {
                    keys.push(key.to_vec());
                }
                ControlFlow::Continue(())
            })?;
            Ok(Page {
                keys,
                next_after: if exhausted { None } else { last_seen },
            })
        })
        .await
    }

    // ---- Tyrant-semantics operations (unguarded) ----

    /// An unguarded put with Tokyo Tyrant semantics. Returns false when `Keep` finds a
    /// live value. The record's timestamp is [`server_stamp`].
    pub async fn put_unguarded(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        mode: PutMode,
    ) -> Result<bool, ServiceError> {
        self.check_key(&key)?;
        self.check_value(value.len())?;
        let now = self.now();
        let max_value = self.policy.max_value_bytes;
        self.store
            .write(move |batch| {
                let stored = match stored_for_write(batch, &key)? {
                    Ok(stored) => stored,
                    Err(corrupt) => return Ok(Err(corrupt)),
                };
                let timestamp = server_stamp(stored.as_ref(), now);
                let live = stored.and_then(|r| live_entry(r, now));
                let (value, content_type) = match (mode, live) {
                    (PutMode::Keep, Some(_)) => return Ok(Ok(false)),
                    (PutMode::Overwrite | PutMode::Keep, _) | (_, None) => {
                        (value, DEFAULT_CONTENT_TYPE.to_string())
                    }
                    (PutMode::Concat, Some(old)) => {
                        let mut v = old.value;
                        v.extend_from_slice(&value);
                        (v, old.content_type)
                    }
                    (PutMode::ShiftLeft(width), Some(old)) => {
                        let mut v = old.value;
                        v.extend_from_slice(&value);
                        let cut = v.len().saturating_sub(width);
                        v.drain(..cut);
                        (v, old.content_type)
                    }
                };
                if value.len() > max_value {
                    return Ok(Ok(false));
                }
                batch.put(&key, &Record::live(timestamp, value, content_type, None))?;
                Ok(Ok(true))
            })
            .await?
    }

    /// An unguarded delete (Tyrant `out`): false when there was no live value. Still
    /// leaves a tombstone stamped with the server clock, so older guarded writes stay out.
    pub async fn delete_unguarded(&self, key: Vec<u8>) -> Result<bool, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        self.store
            .write(move |batch| {
                let stored = match stored_for_write(batch, &key)? {
                    Ok(stored) => stored,
                    Err(corrupt) => return Ok(Err(corrupt)),
                };
                if !stored.as_ref().is_some_and(|r| r.is_live(now)) {
                    return Ok(Ok(false));
                }
                let timestamp = server_stamp(stored.as_ref(), now);
                batch.put(&key, &Record::tombstone(timestamp, now))?;
                Ok(Ok(true))
            })
            .await?
    }

    /// Read-modify-write of a live value under one transaction (Tyrant addint,
    /// adddouble). `update` gets the current live value (None if absent) and returns the
    /// value to store plus the answer, or `None` to leave the record untouched.
    pub async fn update_unguarded<T, F>(
        &self,
        key: Vec<u8>,
        update: F,
    ) -> Result<Option<T>, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(Option<&[u8]>) -> Option<(Vec<u8>, T)> + Send + 'static,
    {
        self.check_key(&key)?;
        let now = self.now();
        self.store
            .write(move |batch| {
                let stored = match stored_for_write(batch, &key)? {
                    Ok(stored) => stored,
                    Err(corrupt) => return Ok(Err(corrupt)),
                };
                let timestamp = server_stamp(stored.as_ref(), now);
                let live = stored.and_then(|r| live_entry(r, now));
                let Some((value, answer)) = update(live.as_ref().map(|e| e.value.as_slice()))
                else {
                    return Ok(Ok(None));
                };
                let content_type = live
                    .map(|e| e.content_type)
                    .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
                batch.put(&key, &Record::live(timestamp, value, content_type, None))?;
                Ok(Ok(Some(answer)))
            })
            .await?
    }

    /// Remove every record, tombstones included (Tyrant `vanish`).
    pub async fn vanish(&self) -> Result<(), ServiceError> {
        self.store.write(|batch| batch.clear()).await?;
        Ok(())
    }

    /// Make everything acknowledged so far durable.
    pub async fn sync(&self) -> Result<(), ServiceError> {
        self.store.flush().await?;
        Ok(())
    }

    /// Live records among `keys`, in request order (duplicates kept).
    pub async fn get_many(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ServiceError> {
        let now = self.now();
        self.blocking(move |store| {
            let mut found = Vec::new();
            for key in keys {
                if let Some(entry) = store.get(&key)?.and_then(|r| live_entry(r, now)) {
                    found.push((key, entry.value));
                }
            }
            Ok(found)
        })
        .await
    }

    /// Live keys starting with `prefix`, in key order, at most `max` (None = unlimited).
    pub async fn keys_with_prefix(
        &self,
        prefix: Vec<u8>,
        max: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        let now = self.now();
        let max = max.unwrap_or(usize::MAX);
        self.blocking(move |store| {
            let mut keys = Vec::new();
            if max == 0 {
                return Ok(keys);
            }
            store.scan(Bound::Included(&prefix), |key, record| {
                if !key.starts_with(&prefix) {
                    return ControlFlow::Break(());
                }
                if record.is_live(now) {
                    keys.push(key.to_vec());
                    if keys.len() >= max {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
            Ok(keys)
        })
        .await
    }

    /// The first live record at or after `from` in key order, for per-connection
    /// iteration (`Bound::Unbounded` = from the start).
    pub async fn next_live(
        &self,
        from: Bound<Vec<u8>>,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, ServiceError> {
        let now = self.now();
        self.blocking(move |store| {
            let mut found = None;
            store.scan(from.as_ref().map(Vec::as_slice), |key, record| {
                if let Some(value) = record.live_value(now) {
                    found = Some((key.to_vec(), value.to_vec()));
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })?;
            Ok(found)
        })
        .await
    }

    /// Live records whose key satisfies `matches`, in key order, at most `max`.
    pub async fn live_records_matching<F>(
        &self,
        matches: F,
        max: Option<usize>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ServiceError>
    where
        F: Fn(&[u8]) -> bool + Send + 'static,
    {
        let now = self.now();
        let max = max.unwrap_or(usize::MAX);
        self.blocking(move |store| {
            let mut found = Vec::new();
            store.scan(Bound::Unbounded, |key, record| {
                if found.len() >= max {
                    return ControlFlow::Break(());
                }
                if let Some(value) = record.live_value(now).filter(|_| matches(key)) {
                    found.push((key.to_vec(), value.to_vec()));
                }
                ControlFlow::Continue(())
            })?;
            Ok(found)
        })
        .await
    }

    /// Record counts now.
    pub async fn counts(&self) -> Result<Counts, ServiceError> {
        let now = self.now();
        self.blocking(move |store| store.counts(now)).await
    }

    /// Database file size in bytes.
    pub fn file_size(&self) -> u64 {
        self.store.file_size()
    }

    /// Write a consistent snapshot of the store to a new database file at `dest`.
    pub async fn snapshot_to(&self, dest: PathBuf) -> Result<u64, ServiceError> {
        self.blocking(move |store| store.snapshot_to(&dest)).await
    }

    /// Every stored record — tombstones and expired values included — in key order, all
    /// from one read transaction, so the sequence is a consistent snapshot while writes
    /// go on. Records arrive through a channel holding at most `capacity`; a store
    /// failure arrives as the last item. Dropping the receiver stops the scan.
    ///
    /// Must be called from within the Tokio runtime (the scan runs on its blocking pool).
    pub fn export(
        &self,
        capacity: usize,
    ) -> mpsc::Receiver<Result<(Vec<u8>, Record), ServiceError>> {
        let (records, receiver) = mpsc::channel(capacity.max(1));
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let scanned = store.scan(Bound::Unbounded, |key, record| {
                match records.blocking_send(Ok((key.to_vec(), record))) {
                    Ok(()) => ControlFlow::Continue(()),
                    // The reader went away (a client disconnected): stop reading.
                    Err(_) => ControlFlow::Break(()),
                }
            });
            if let Err(e) = scanned {
                let _ = records.blocking_send(Err(e.into()));
            }
        });
        receiver
    }

    /// Bring in records from an export (or another store), each through the guard
    /// exactly like [`Service::put`] and [`Service::delete`]: a record applies only when
    /// it is newer than what guards its key, so importing an old export never
    /// overwrites newer data. Applied records are stored as given — timestamp, expiry
    /// and delete time included. Returns one outcome per record, in order.
    ///
    /// Records are applied in order as one write (one log frame, all or nothing), so a
    /// later record for the same key is judged against an earlier one from the call.
    pub async fn import(
        &self,
        records: Vec<(Vec<u8>, Record)>,
    ) -> Result<Vec<Imported>, ServiceError> {
        let now = self.now();
        let grace = self.policy.grace_micros;
        let checked: Vec<Result<(Vec<u8>, Record), ServiceError>> = records
            .into_iter()
            .map(|(key, record)| {
                self.check_import(&key, &record, now)
                    .map(|()| (key, record))
            })
            .collect();
        let outcomes = self
            .store
            .write(move |batch| {
                let mut outcomes = Vec::with_capacity(checked.len());
                for item in checked {
                    let (key, record) = match item {
                        Ok(pair) => pair,
                        Err(refused) => {
                            outcomes.push(Imported::Refused(refused));
                            continue;
                        }
                    };
                    let stored = match stored_for_write(batch, &key)? {
                        Ok(stored) => stored,
                        Err(corrupt) => {
                            outcomes.push(Imported::Refused(corrupt));
                            continue;
                        }
                    };
                    let intent = match &record.state {
                        State::Live {
                            value,
                            content_type,
                            ..
                        } => Intent::Put {
                            value,
                            content_type,
                        },
                        State::Tombstone { .. } => Intent::Delete,
                    };
                    let outcome = match guard::decide(
                        stored.as_ref(),
                        record.timestamp,
                        intent,
                        now,
                        grace,
                    ) {
                        Verdict::Apply => {
                            batch.put(&key, &record)?;
                            Imported::Applied
                        }
                        Verdict::Repeat => Imported::Repeated,
                        Verdict::Stale { current } => Imported::Stale { current },
                        Verdict::Tie { current } => Imported::Tie { current },
                    };
                    outcomes.push(outcome);
                }
                Ok(outcomes)
            })
            .await?;
        Ok(outcomes)
    }

    /// The limits every write obeys, for a record arriving by import.
    fn check_import(&self, key: &[u8], record: &Record, now: u64) -> Result<(), ServiceError> {
        self.check_key(key)?;
        if let State::Live { value, .. } = &record.state {
            self.check_value(value.len())?;
        }
        // No refusal metric here: these are not client writes.
        guard::check_skew(record.timestamp, now, self.policy.max_future_skew_micros)
            .map_err(ServiceError::FutureTimestamp)
    }

    /// Purge records whose guard has lapsed; at most `limit` per call.
    pub async fn sweep(&self, limit: usize) -> Result<Purged, ServiceError> {
        // A guard lapses at deleted_at/expires_at + grace, so only records from at or
        // before now - grace may go. Before that instant nothing can have lapsed; a
        // saturating 0 here would purge records from time 0 that still guard.
        let Some(cutoff) = self.now().checked_sub(self.policy.grace_micros) else {
            return Ok(Purged::default());
        };
        // Check with a read first: an empty write commit would still cost an fsync.
        if !self
            .blocking(move |store| store.has_purgeable(cutoff))
            .await?
        {
            return Ok(Purged::default());
        }
        let purged = self
            .store
            .write(move |batch| batch.purge(cutoff, limit))
            .await?;
        if purged.expired + purged.tombstones >= limit {
            // Candidates come from the database file's index, which shows this batch's
            // removals only after a checkpoint; without one the next call would walk
            // past them all again.
            self.blocking(|store| store.checkpoint()).await?;
        }
        self.metrics
            .swept
            .with_label_values(&["expired"])
            .inc_by(purged.expired as u64);
        self.metrics
            .swept
            .with_label_values(&["tombstone"])
            .inc_by(purged.tombstones as u64);
        Ok(purged)
    }

    /// Whether relaxed commits are waiting for an fsync.
    pub fn has_unflushed_commits(&self) -> bool {
        self.store.has_unflushed_commits()
    }

    /// Checkpoint everything and stop the store's threads.
    pub async fn close(&self) -> Result<(), ServiceError> {
        self.store.close().await?;
        Ok(())
    }

    fn check_skew(&self, timestamp: u64, now: u64) -> Result<(), ServiceError> {
        guard::check_skew(timestamp, now, self.policy.max_future_skew_micros).map_err(|e| {
            self.metrics
                .guard_refusals
                .with_label_values(&["future_timestamp"])
                .inc();
            ServiceError::FutureTimestamp(e)
        })
    }

    fn count_refusal(&self, result: &Result<WriteOutcome, ServiceError>) {
        let reason = match result {
            Err(ServiceError::Stale { .. }) => "stale",
            Err(ServiceError::Tie { .. }) => "tie",
            _ => return,
        };
        self.metrics
            .guard_refusals
            .with_label_values(&[reason])
            .inc();
    }

    /// Run a synchronous store read on the blocking pool, off the async workers.
    async fn blocking<T, F>(&self, read: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || read(&store))
            .await
            .map_err(|e| StoreError::engine(format!("read task failed: {e}")))?
            .map_err(Into::into)
    }
}

/// The timestamp an unguarded (Tyrant-semantics) write records: the server clock, but
/// always past what was stored, so the unguarded write is the newest thing the key has
/// seen and a later guarded write is compared against real time.
pub fn server_stamp(stored: Option<&Record>, now: u64) -> u64 {
    stored.map_or(now, |r| now.max(r.timestamp.saturating_add(1)))
}

/// The record a write closure starts from. A corrupt record is answered as that
/// caller's own error (a refusal), not as the closure's `Err`, which means an engine
/// failure; for an import that would fail every other record of the call.
fn stored_for_write(
    batch: &WriteBatch<'_>,
    key: &[u8],
) -> Result<Result<Option<Record>, ServiceError>, StoreError> {
    match batch.get(key) {
        Ok(stored) => Ok(Ok(stored)),
        Err(corrupt @ StoreError::Corrupt { .. }) => Ok(Err(corrupt.into())),
        Err(engine) => Err(engine),
    }
}

fn expiry(now: u64, ttl_secs: u64) -> Result<u64, ServiceError> {
    if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
        return Err(ServiceError::TtlOutOfRange);
    }
    Ok(now.saturating_add(ttl_secs * 1_000_000))
}

fn live_entry(record: Record, now: u64) -> Option<Entry> {
    if !record.is_live(now) {
        return None;
    }
    match record.state {
        State::Live {
            value,
            content_type,
            expires_at,
        } => Some(Entry {
            value,
            content_type,
            timestamp: record.timestamp,
            expires_at,
        }),
        State::Tombstone { .. } => None,
    }
}
