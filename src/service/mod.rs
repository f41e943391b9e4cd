//! The hallway: operations both front doors and the command line share, and the only
//! caller of the [`Store`].
//!
//! Every guarded write — HTTP PUT/DELETE, Tyrant `tsput`/`tsout`, Tyrant plain writes
//! under `--tyrant-guard prefix`, and records brought in by `tidemark import` — goes
//! through [`Service::put`], [`Service::delete`] or [`Service::import`] as a
//! [`GuardedWrite`], which the store decides with the one rule in [`crate::guard`]
//! atomically with the change. [`Service::outcome`] turns its verdict into an answer.
//!
//! This file holds the guarded operations and reads; [`tyrant`] the unguarded,
//! Tyrant-semantics operations (`putcat`, `addint`, iteration, …); [`maintenance`]
//! export, import, sweep and snapshots; [`jsonl`] the record format of export/import.

pub mod jsonl;
pub mod maintenance;
pub mod tyrant;

use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

use crate::clock::Clock;
use crate::guard::{self, FutureTimestamp};
use crate::metrics::Metrics;
use crate::record::{Record, State};
use crate::store::{Counts, GuardClock, Guarded, GuardedWrite, KeyRange, Store, StoreError};

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

/// Records read per store call when a scan walks on until its caller has enough.
const SCAN_PAGE: usize = 512;

impl Service {
    pub fn new(
        store: impl Into<Store>,
        clock: Arc<dyn Clock>,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store: store.into(),
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

    /// Where the data lives, for humans (Tyrant `stat`).
    pub fn store_location(&self) -> String {
        self.store.location()
    }

    /// Whether the store can serve requests now (readiness).
    pub fn store_reachable(&self) -> bool {
        self.store.is_reachable()
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
        let record = self.store.get(&key).await?;
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
        let write = GuardedWrite {
            key,
            record: Record::live(timestamp, value, content_type, expires_at),
            if_absent: condition == PutCondition::IfAbsent,
        };
        self.guarded(write, now).await
    }

    /// Guarded delete: leaves a tombstone carrying `timestamp`, even for a key that
    /// never existed, so a late older write cannot create it.
    pub async fn delete(&self, key: Vec<u8>, timestamp: u64) -> Result<WriteOutcome, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        self.check_skew(timestamp, now)?;
        let write = GuardedWrite {
            key,
            record: Record::tombstone(timestamp, now),
            if_absent: false,
        };
        self.guarded(write, now).await
    }

    /// One guarded write through the store, its verdict answered and counted.
    async fn guarded(&self, write: GuardedWrite, now: u64) -> Result<WriteOutcome, ServiceError> {
        let verdict = self
            .store
            .guarded_write(write, self.guard_clock(now))
            .await?;
        let result = Self::outcome(verdict);
        self.count_refusal(&result);
        result
    }

    /// What a guarded write's verdict means to the client that sent it.
    fn outcome(verdict: Guarded) -> Result<WriteOutcome, ServiceError> {
        match verdict {
            Guarded::Applied { was_live: true } => Ok(WriteOutcome::Replaced),
            Guarded::Applied { was_live: false } => Ok(WriteOutcome::Created),
            Guarded::Repeated => Ok(WriteOutcome::Repeated),
            Guarded::Stale { current } => Err(ServiceError::Stale { current }),
            Guarded::Tie { current } => Err(ServiceError::Tie { current }),
            Guarded::Exists => Err(ServiceError::Exists),
            // Single writes report a corrupt record as `StoreError::Corrupt`.
            Guarded::Corrupt => Err(ServiceError::Store(StoreError::engine(
                "the stored record is corrupt",
            ))),
        }
    }

    fn guard_clock(&self, now: u64) -> GuardClock {
        GuardClock {
            now,
            grace_micros: self.policy.grace_micros,
        }
    }

    /// Rolling sessions: push the expiry out to now + `ttl_secs`, never pulling it in.
    /// Value and timestamp are untouched; deleted, expired or absent keys are NotFound.
    /// Returns the expiry in force afterwards (`None` = never expires).
    pub async fn touch(&self, key: Vec<u8>, ttl_secs: u64) -> Result<Option<u64>, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        let wanted = expiry(now, ttl_secs)?;
        self.store
            .update(key, move |stored| {
                let Some(mut record) = stored.filter(|r| r.is_live(now)) else {
                    return (None, Err(ServiceError::NotFound));
                };
                let State::Live { expires_at, .. } = &mut record.state else {
                    return (None, Err(ServiceError::NotFound));
                };
                match *expires_at {
                    Some(current) if current < wanted => {
                        *expires_at = Some(wanted);
                        (Some(record), Ok(Some(wanted)))
                    }
                    other => (None, Ok(other)),
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
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut keys = Vec::new();
        let mut scanned = 0usize;
        let mut last_seen: Option<Vec<u8>> = None;
        let mut exhausted = true;
        self.visit(KeyRange { start, prefix }, |key, record| {
            if keys.len() == limit || scanned == scan_budget {
                exhausted = false;
                return ControlFlow::Break(());
            }
            scanned += 1;
            if record.is_live(now) {
                keys.push(key.clone());
            }
            last_seen = Some(key);
            ControlFlow::Continue(())
        })
        .await?;
        Ok(Page {
            keys,
            next_after: if exhausted { None } else { last_seen },
        })
    }

    /// Feed the records of `range` to `visit` in key order, a page per store call,
    /// until `visit` breaks or the range runs out.
    async fn visit(
        &self,
        mut range: KeyRange,
        mut visit: impl FnMut(Vec<u8>, Record) -> ControlFlow<()>,
    ) -> Result<(), ServiceError> {
        loop {
            let page = self.store.scan(range.clone(), SCAN_PAGE).await?;
            let full = page.len() == SCAN_PAGE;
            let mut last = None;
            for (key, record) in page {
                last = Some(key.clone());
                if visit(key, record).is_break() {
                    return Ok(());
                }
            }
            match last {
                Some(key) if full => range.start = Bound::Excluded(key),
                _ => return Ok(()),
            }
        }
    }

    /// Live records among `keys`, in request order (duplicates kept).
    pub async fn get_many(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ServiceError> {
        let now = self.now();
        let records = self.store.get_many(keys.clone()).await?;
        Ok(keys
            .into_iter()
            .zip(records)
            .filter_map(|(key, record)| Some((key, live_entry(record?, now)?.value)))
            .collect())
    }

    /// Record counts now.
    pub async fn counts(&self) -> Result<Counts, ServiceError> {
        Ok(self.store.counts(self.now()).await?)
    }

    /// Bytes the store uses for the data (Tyrant `size`).
    pub async fn size_bytes(&self) -> Result<u64, ServiceError> {
        Ok(self.store.size_bytes().await?)
    }

    /// Make everything acknowledged so far durable.
    pub async fn sync(&self) -> Result<(), ServiceError> {
        self.store.flush().await?;
        Ok(())
    }

    /// Whether relaxed commits are waiting for an fsync.
    pub fn has_unflushed_commits(&self) -> bool {
        self.store.has_unflushed_commits()
    }

    /// Make everything durable and stop the store's background work.
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
