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
//! Tyrant-semantics operations (`putcat`, `addint`, iteration, …); [`memcached`] the
//! read-modify-write the memcached port's commands share; [`maintenance`]
//! export, import, sweep and snapshots; [`jsonl`] the record format of export/import.

pub mod jsonl;
pub mod maintenance;
pub mod memcached;
pub mod tyrant;

use std::ops::{Bound, ControlFlow};
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::Either;
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::guard::{
    self, Change, Condition, FutureTimestamp, OwnerChange, PatchReport, SessionWrite,
};
use crate::metrics::Metrics;
use crate::record::{Record, State};
use crate::store::{Counts, Found, GuardClock, Guarded, GuardedWrite, KeyRange, Store, StoreError};

/// Limits and guard settings the service enforces for both front doors.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// Deletes and expired records keep guarding this long (µs).
    pub grace_micros: u64,
    /// Refuse timestamps this far ahead of the server clock (µs); 0 disables.
    pub max_future_skew_micros: u64,
    /// Absolute lifetime of every key from its creation (µs), if any.
    pub max_lifetime_micros: Option<u64>,
}

/// Longest `X-Session-Owner`.
pub const MAX_OWNER_BYTES: usize = 256;

/// Longest accepted TTL: ten years, so `now + ttl` cannot overflow anything.
pub const MAX_TTL_SECS: u64 = 10 * 365 * 24 * 3600;

/// A live value as read by a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value's bytes: shared with the store's record cache when the record came
    /// from there (no copy), else the reader's own.
    pub value: bytes::Bytes,
    pub content_type: String,
    /// The newest timestamp of anything in the value.
    pub timestamp: u64,
    pub expires_at: Option<u64>,
    /// The strong validator (`ETag`).
    pub etag: String,
    pub owner: Option<String>,
    /// The absolute lifetime's end, when the key has one.
    pub lifetime_ends: Option<u64>,
}

/// What a write asks for besides the timestamp rule: a precondition, and the
/// session's owner and absolute lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    pub condition: Condition,
    pub owner: OwnerChange,
    /// `X-Max-Lifetime` (seconds), for a write that creates the key.
    pub max_lifetime_secs: Option<u64>,
    /// memcached client flags of the value ([`crate::record::Meta::flags`]).
    pub flags: u32,
}

impl Default for WriteOptions {
    fn default() -> Self {
        Self {
            condition: Condition::Always,
            owner: OwnerChange::Keep,
            max_lifetime_secs: None,
            flags: 0,
        }
    }
}

impl WriteOptions {
    /// Only when the key has no live value (Tyrant `putkeep`, `If-None-Match: *`).
    pub fn if_absent() -> Self {
        Self {
            condition: Condition::IfAbsent,
            ..Self::default()
        }
    }
}

/// One live session of an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSession {
    pub key: Vec<u8>,
    pub timestamp: u64,
    pub expires_at: Option<u64>,
    pub created_at: Option<u64>,
}

/// One page of an owner's sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerPage {
    pub sessions: Vec<OwnedSession>,
    /// Where the next page starts (exclusive), if there may be more.
    pub next_after: Option<Vec<u8>>,
}

/// What revoking an owner's sessions did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Revoked {
    pub revoked: usize,
    /// Sessions that stay: written after the revocation's timestamp, or `keep`.
    pub kept: Vec<(Vec<u8>, u64)>,
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
    /// Applied, but fields a newer PATCH wrote were kept: the stored document is the
    /// write merged with them.
    Merged,
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
    #[error("the precondition failed: the stored value's ETag is {}", .current_etag.as_deref().unwrap_or("absent (no live value)"))]
    PreconditionFailed { current_etag: Option<String> },
    #[error("every field of the patch was refused: the stored fields are newer, or tie")]
    PatchRefused(PatchReport),
    #[error("the stored value is not a JSON object, so it has no fields to patch")]
    NotAnObject,
    #[error("a merge patch must be a JSON object naming at least one field")]
    EmptyPatch,
    #[error("X-Session-Owner is {len} bytes; the limit is {MAX_OWNER_BYTES}")]
    OwnerTooLong { len: usize },
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
/// Index pages one owner listing reads at most (expired sessions not yet purged are
/// read past); the client continues from `next_cursor`.
const OWNER_PAGES_PER_REQUEST: usize = 8;
/// Sessions revoked per batch.
const REVOKE_PAGE: usize = 500;

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
        let found = self.store.get_found(&key).await?;
        Ok(found.and_then(|found| live_found_entry(found, now)))
    }

    /// The live value of `key` alone, for answers that carry nothing else (Tyrant
    /// `get` and `vsiz`): the same read as [`Service::get`] without building the
    /// validator and metadata an [`Entry`] holds.
    pub async fn get_value(&self, key: Vec<u8>) -> Result<Option<LiveValue>, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        let found = self.store.get_found(&key).await?;
        Ok(found.filter(|r| r.is_live(now)).map(LiveValue))
    }

    /// Guarded put: applies only when `timestamp` is newer than what guards the key
    /// (for a JSON-object document with newer fields, field by field: see
    /// [`crate::guard::document`]), and only when `options.condition` holds.
    ///
    /// The checks run when it is called; the future only waits for the store.
    pub fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        content_type: String,
        timestamp: u64,
        ttl_secs: Option<u64>,
        options: WriteOptions,
    ) -> impl Future<Output = Result<WriteOutcome, ServiceError>> {
        let now = self.now();
        let write = (|| {
            self.check_key(&key)?;
            self.check_value(value.len())?;
            self.check_skew(timestamp, now)?;
            let expires_at = ttl_secs.map(|ttl| expiry(now, ttl)).transpose()?;
            let change = Change::Put {
                value,
                content_type,
                expires_at,
            };
            self.write(key, timestamp, change, options)
        })();
        self.guarded(write, now)
    }

    /// Guarded delete: leaves a tombstone carrying `timestamp`, even for a key that
    /// never existed, so a late older write cannot create it. Fields a newer PATCH
    /// wrote survive it, and the key stays readable with just those.
    pub fn delete(
        &self,
        key: Vec<u8>,
        timestamp: u64,
        options: WriteOptions,
    ) -> impl Future<Output = Result<WriteOutcome, ServiceError>> {
        let now = self.now();
        let write = (|| {
            self.check_key(&key)?;
            self.check_skew(timestamp, now)?;
            self.write(key, timestamp, Change::Delete, options)
        })();
        self.guarded(write, now)
    }

    /// Field-level write to a JSON-object document: each member sets its field, `null`
    /// removes it, each judged against that field's own timestamp.
    pub async fn patch(
        &self,
        key: Vec<u8>,
        members: Map<String, Value>,
        timestamp: u64,
        ttl_secs: Option<u64>,
        options: WriteOptions,
    ) -> Result<PatchReport, ServiceError> {
        self.check_key(&key)?;
        if members.is_empty() {
            return Err(ServiceError::EmptyPatch);
        }
        let now = self.now();
        self.check_skew(timestamp, now)?;
        let expires_at = ttl_secs.map(|ttl| expiry(now, ttl)).transpose()?;
        let max_bytes = self.policy.max_value_bytes;
        let change = Change::Patch {
            members,
            expires_at,
            max_bytes,
        };
        let write = self.write(key, timestamp, change, options)?;
        let verdict = self
            .store
            .guarded_write(write, self.guard_clock(now))
            .await?;
        match verdict {
            Guarded::Patched(report) => Ok(report),
            Guarded::PatchRefused(report) => {
                self.count("stale");
                Err(ServiceError::PatchRefused(report))
            }
            Guarded::NotAnObject => Err(ServiceError::NotAnObject),
            Guarded::TooLarge { len } => Err(ServiceError::ValueTooLarge {
                len,
                max: max_bytes,
            }),
            other => Self::outcome(other).map(|_| PatchReport::default()),
        }
    }

    /// A guarded write of `change` with `options`' precondition and session metadata.
    fn write(
        &self,
        key: Vec<u8>,
        timestamp: u64,
        change: Change,
        options: WriteOptions,
    ) -> Result<GuardedWrite, ServiceError> {
        if let OwnerChange::Set(owner) = &options.owner
            && owner.len() > MAX_OWNER_BYTES
        {
            return Err(ServiceError::OwnerTooLong { len: owner.len() });
        }
        let requested = options
            .max_lifetime_secs
            .map(|secs| secs.saturating_mul(1_000_000));
        let lifetime_micros = match (requested, self.policy.max_lifetime_micros) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(GuardedWrite {
            key,
            timestamp,
            change,
            condition: options.condition,
            session: SessionWrite {
                owner: options.owner,
                lifetime_micros,
                flags: options.flags,
            },
        })
    }

    /// One guarded write through the store, its verdict answered and counted.
    ///
    /// Not an `async fn`, nor are the puts and deletes that call it: each would hold
    /// the write twice more (the store's `Core::write` says why). The future returned
    /// is the store's, mapped.
    fn guarded(
        &self,
        write: Result<GuardedWrite, ServiceError>,
        now: u64,
    ) -> impl Future<Output = Result<WriteOutcome, ServiceError>> {
        match write {
            Ok(write) => Either::Left(self.store.guarded_write(write, self.guard_clock(now)).map(
                |verdict| {
                    let result = verdict.map_err(ServiceError::from).and_then(Self::outcome);
                    self.count_refusal(&result);
                    result
                },
            )),
            Err(refused) => Either::Right(std::future::ready(Err(refused))),
        }
    }

    /// What a guarded write's verdict means to the client that sent it.
    fn outcome(verdict: Guarded) -> Result<WriteOutcome, ServiceError> {
        match verdict {
            Guarded::Applied { was_live: true } => Ok(WriteOutcome::Replaced),
            Guarded::Applied { was_live: false } => Ok(WriteOutcome::Created),
            Guarded::Repeated => Ok(WriteOutcome::Repeated),
            Guarded::Merged { .. } => Ok(WriteOutcome::Merged),
            Guarded::Stale { current } => Err(ServiceError::Stale { current }),
            Guarded::Tie { current } => Err(ServiceError::Tie { current }),
            Guarded::Exists => Err(ServiceError::Exists),
            Guarded::PreconditionFailed { current_etag } => {
                Err(ServiceError::PreconditionFailed { current_etag })
            }
            Guarded::Patched(_) | Guarded::PatchRefused(_) => Ok(WriteOutcome::Replaced),
            Guarded::NotAnObject => Err(ServiceError::NotAnObject),
            Guarded::TooLarge { len } => Err(ServiceError::ValueTooLarge { len, max: 0 }),
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
                let cap = record.meta.lifetime_ends;
                let State::Live { expires_at, .. } = &mut record.state else {
                    return (None, Err(ServiceError::NotFound));
                };
                // Never past the absolute lifetime's end.
                let wanted = cap.map_or(wanted, |end| wanted.min(end));
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
            .filter_map(|(key, record)| Some((key, live_entry(record?, now)?.value.into())))
            .collect())
    }

    /// The live values of `keys`, in request order, from one consistent read.
    pub async fn batch_get(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<Entry>>, ServiceError> {
        for key in &keys {
            self.check_key(key)?;
        }
        let now = self.now();
        let records = self.store.get_many(keys).await?;
        Ok(records
            .into_iter()
            .map(|record| record.and_then(|r| live_entry(r, now)))
            .collect())
    }

    /// One page of `owner`'s live sessions, in key order after `after`.
    pub async fn owner_sessions(
        &self,
        owner: &str,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<OwnerPage, ServiceError> {
        self.check_owner(owner)?;
        let now = self.now();
        let mut sessions = Vec::new();
        let mut after = after;
        // Expired sessions keep their index rows until the sweeper purges them: read
        // on past them, a bounded number of pages per request.
        for _ in 0..OWNER_PAGES_PER_REQUEST {
            let want = limit - sessions.len();
            let page = self.store.owned(owner, after.clone(), want).await?;
            let full = page.len() == want;
            for (key, record) in page {
                after = Some(key.clone());
                if record.is_live(now) && record.meta.owner.as_deref() == Some(owner) {
                    sessions.push(OwnedSession {
                        key,
                        timestamp: record.timestamp,
                        expires_at: match record.state {
                            State::Live { expires_at, .. } => expires_at,
                            State::Tombstone { .. } => None,
                        },
                        created_at: record.meta.created_at,
                    });
                }
            }
            if !full {
                return Ok(OwnerPage {
                    sessions,
                    next_after: None,
                });
            }
            if sessions.len() == limit {
                break;
            }
        }
        Ok(OwnerPage {
            sessions,
            next_after: after,
        })
    }

    /// Log `owner` out everywhere (but `keep`): a guarded delete at `timestamp` of each
    /// of their live sessions. A session written after `timestamp` survives (whole, or
    /// with the fields written after it) and is listed in [`Revoked::kept`].
    pub async fn revoke_owner(
        &self,
        owner: &str,
        timestamp: u64,
        keep: Option<Vec<u8>>,
    ) -> Result<Revoked, ServiceError> {
        self.check_owner(owner)?;
        let now = self.now();
        self.check_skew(timestamp, now)?;
        let mut revoked = Revoked::default();
        let mut after = None;
        loop {
            let page = self.owner_sessions(owner, after, REVOKE_PAGE).await?;
            let mut writes = Vec::new();
            let mut listed = Vec::new();
            for session in page.sessions {
                if keep.as_deref() == Some(session.key.as_slice()) {
                    revoked.kept.push((session.key, session.timestamp));
                    continue;
                }
                writes.push(self.write(
                    session.key.clone(),
                    timestamp,
                    Change::Delete,
                    WriteOptions::default(),
                )?);
                listed.push(session);
            }
            let verdicts = self
                .store
                .guarded_batch(writes, self.guard_clock(now))
                .await?;
            for (session, verdict) in listed.into_iter().zip(verdicts) {
                match verdict {
                    Guarded::Applied { .. } => revoked.revoked += 1,
                    // Fields written after the revocation keep the session alive
                    // (`Merged`, and every other answer: it is still there).
                    Guarded::Stale { current } | Guarded::Tie { current } => {
                        revoked.kept.push((session.key, current));
                    }
                    _ => revoked.kept.push((session.key, session.timestamp)),
                }
            }
            match page.next_after {
                Some(next) => after = Some(next),
                None => return Ok(revoked),
            }
        }
    }

    fn check_owner(&self, owner: &str) -> Result<(), ServiceError> {
        if owner.len() > MAX_OWNER_BYTES {
            return Err(ServiceError::OwnerTooLong { len: owner.len() });
        }
        Ok(())
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
        match result {
            Err(ServiceError::Stale { .. }) => self.count("stale"),
            Err(ServiceError::Tie { .. }) => self.count("tie"),
            _ => {}
        }
    }

    fn count(&self, reason: &str) {
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

/// The value of a live record as [`Service::get_value`] found it, shared with the
/// store's record cache where it came from there: the caller copies the bytes once,
/// into its reply.
#[derive(Debug)]
pub struct LiveValue(Found);

impl LiveValue {
    pub fn bytes(&self) -> &[u8] {
        match &self.0.state {
            State::Live { value, .. } => value,
            // Never built from a tombstone (`Service::get_value` and
            // `live_found_entry` check).
            State::Tombstone { .. } => &[],
        }
    }
}

impl AsRef<[u8]> for LiveValue {
    fn as_ref(&self) -> &[u8] {
        self.bytes()
    }
}

/// The entry of a live record; for one shared with the record cache, the value's
/// bytes stay where they are and only the metadata is copied.
fn live_found_entry(found: Found, now: u64) -> Option<Entry> {
    if !found.is_live(now) {
        return None;
    }
    let etag = found.etag();
    let (timestamp, lifetime_ends) = (found.timestamp, found.meta.lifetime_ends);
    let (value, content_type, expires_at, owner) = match found {
        Found::Own(Record {
            state:
                State::Live {
                    value,
                    content_type,
                    expires_at,
                },
            meta,
            ..
        }) => (value.into(), content_type, expires_at, meta.owner),
        Found::Shared(record) => {
            let State::Live {
                content_type,
                expires_at,
                ..
            } = &record.state
            else {
                return None;
            };
            let (content_type, expires_at, owner) =
                (content_type.clone(), *expires_at, record.meta.owner.clone());
            let value = bytes::Bytes::from_owner(LiveValue(Found::Shared(record)));
            (value, content_type, expires_at, owner)
        }
        Found::Own(_) => return None,
    };
    Some(Entry {
        value,
        content_type,
        timestamp,
        expires_at,
        etag,
        owner,
        lifetime_ends,
    })
}

fn live_entry(record: Record, now: u64) -> Option<Entry> {
    live_found_entry(Found::Own(record), now)
}

#[cfg(test)]
mod found_entry_tests {
    use super::*;

    #[test]
    fn a_shared_record_reads_as_the_entry_of_its_own_copy() {
        let mut record = Record::live(7, b"value".to_vec(), "text/plain".into(), Some(100));
        record.meta.owner = Some("user:7".into());
        record.meta.lifetime_ends = Some(200);
        let shared = Arc::new(record.clone());
        let entry = live_found_entry(Found::Shared(shared.clone()), 50);
        assert_eq!(entry, live_entry(record.clone(), 50));
        assert_eq!(
            entry.map(|e| e.value),
            Some(bytes::Bytes::from_static(b"value"))
        );
        assert_eq!(
            live_found_entry(Found::Own(record), 50),
            live_entry(shared.as_ref().clone(), 50)
        );
        // Expired, and a tombstone: no entry, shared or not.
        assert_eq!(live_found_entry(Found::Shared(shared), 100), None);
        let tombstone = Arc::new(Record::tombstone(8, 8));
        assert_eq!(live_found_entry(Found::Shared(tombstone), 50), None);
    }
}

#[cfg(test)]
mod future_size_tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::{Durability, StoreOptions};

    /// A write's future is copied whole wherever it moves (into an HTTP handler's
    /// box, for one), so each layer on its way to the write lock must hold the write
    /// once: as `async fn`s, they held it 2,624 bytes' worth. The size is the type's,
    /// the same whichever engine runs.
    #[tokio::test]
    async fn a_guarded_writes_future_holds_the_write_once() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(
            &StoreOptions {
                data_dir: dir.path().to_path_buf(),
                durability: Durability::Relaxed,
                cache_size: 1 << 20,
                record_cache_size: 1 << 20,
            },
            metrics.clone(),
        )
        .unwrap();
        let policy = Policy {
            max_key_bytes: 64,
            max_value_bytes: 1024,
            grace_micros: 1,
            max_future_skew_micros: 0,
            max_lifetime_micros: None,
        };
        let service = Service::new(store, Arc::new(ManualClock::new(1)), policy, metrics);
        let write = std::mem::size_of::<GuardedWrite>();
        let put = service.put(
            b"k".to_vec(),
            b"v".to_vec(),
            String::new(),
            1,
            None,
            WriteOptions::default(),
        );
        let put_size = std::mem::size_of_val(&put);
        drop(put);
        let delete = service.delete(b"k".to_vec(), 2, WriteOptions::default());
        let delete_size = std::mem::size_of_val(&delete);
        drop(delete);
        // One copy of the write, the log's wait and the answer: about 700 bytes.
        for (what, size) in [("put", put_size), ("delete", delete_size)] {
            assert!(
                size < 3 * write,
                "a {what}'s future is {size} bytes for a {write}-byte write"
            );
        }
        service.close().await.unwrap();
    }
}
