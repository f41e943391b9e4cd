//! Tyrant-semantics operations: unguarded writes (`put`, `putkeep`, `putcat`,
//! `putshl`, `out`, `addint`, `adddouble`, `vanish`) and the reads that walk the key
//! space (iteration, `fwmkeys`, regex matches).
//!
//! Unguarded writes record the server's clock as their timestamp ([`server_stamp`]),
//! so later guarded writes on either port compare against a meaningful time. Each is
//! one atomic read-modify-write of its key ([`Store::update`](crate::store::Store::update)).

use std::ops::{Bound, ControlFlow};

use super::{Service, ServiceError, live_entry};
use crate::guard::{self, OwnerChange, SessionWrite};
use crate::record::{DEFAULT_CONTENT_TYPE, Meta, Record};
use crate::store::KeyRange;

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

/// The timestamp an unguarded (Tyrant-semantics) write records: the server clock, but
/// always past what was stored, so the unguarded write is the newest thing the key has
/// seen and a later guarded write is compared against real time.
pub fn server_stamp(stored: Option<&Record>, now: u64) -> u64 {
    stored.map_or(now, |r| now.max(r.timestamp.saturating_add(1)))
}

/// The session metadata an unguarded write leaves: the owner, creation time and
/// absolute lifetime of a live value carry over (a Tyrant client sends none); a write
/// that creates the key starts them, with `--max-session-lifetime` if set.
pub(super) fn carried_meta(stored: Option<&Record>, now: u64, lifetime: Option<u64>) -> Meta {
    let live = stored.filter(|r| r.is_live(now));
    let session = SessionWrite {
        owner: OwnerChange::Keep,
        lifetime_micros: lifetime,
        flags: 0,
    };
    guard::session_meta(live, &session, now)
}

/// A whole value with `meta`; it never expires, except at the lifetime's end.
fn with_meta(timestamp: u64, value: Vec<u8>, content_type: String, meta: Meta) -> Record {
    let expires_at = guard::cap(None, meta.lifetime_ends);
    let mut record = Record::live(timestamp, value, content_type, expires_at);
    record.meta = meta;
    record
}

impl Service {
    /// An unguarded put with Tokyo Tyrant semantics. Returns false when `Keep` finds a
    /// live value, or when a `Concat`/`ShiftLeft` result would exceed the value limit.
    /// The record's timestamp is [`server_stamp`].
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
        let lifetime = self.policy.max_lifetime_micros;
        let stored = self
            .store
            .update(key, move |stored| {
                let timestamp = server_stamp(stored.as_ref(), now);
                let meta = carried_meta(stored.as_ref(), now, lifetime);
                let live = stored.and_then(|r| live_entry(r, now));
                let (value, content_type) = match (mode, live) {
                    (PutMode::Keep, Some(_)) => return (None, false),
                    (PutMode::Overwrite | PutMode::Keep, _) | (_, None) => {
                        (value, DEFAULT_CONTENT_TYPE.to_string())
                    }
                    (PutMode::Concat, Some(old)) => {
                        let mut v = Vec::from(old.value);
                        v.extend_from_slice(&value);
                        (v, old.content_type)
                    }
                    (PutMode::ShiftLeft(width), Some(old)) => {
                        let mut v = Vec::from(old.value);
                        v.extend_from_slice(&value);
                        let cut = v.len().saturating_sub(width);
                        v.drain(..cut);
                        (v, old.content_type)
                    }
                };
                if value.len() > max_value {
                    return (None, false);
                }
                (Some(with_meta(timestamp, value, content_type, meta)), true)
            })
            .await?;
        Ok(stored)
    }

    /// An unguarded delete (Tyrant `out`): false when there was no live value. Still
    /// leaves a tombstone stamped with the server clock, so older guarded writes stay out.
    pub async fn delete_unguarded(&self, key: Vec<u8>) -> Result<bool, ServiceError> {
        self.check_key(&key)?;
        let now = self.now();
        let deleted = self
            .store
            .update(key, move |stored| {
                if !stored.as_ref().is_some_and(|r| r.is_live(now)) {
                    return (None, false);
                }
                let timestamp = server_stamp(stored.as_ref(), now);
                (Some(Record::tombstone(timestamp, now)), true)
            })
            .await?;
        Ok(deleted)
    }

    /// Read-modify-write of a live value in one atomic step (Tyrant addint,
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
        let lifetime = self.policy.max_lifetime_micros;
        let answer = self
            .store
            .update(key, move |stored| {
                let timestamp = server_stamp(stored.as_ref(), now);
                let meta = carried_meta(stored.as_ref(), now, lifetime);
                let live = stored.and_then(|r| live_entry(r, now));
                let Some((value, answer)) = update(live.as_ref().map(|e| &e.value[..])) else {
                    return (None, None);
                };
                let content_type = live
                    .map(|e| e.content_type)
                    .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_string());
                (
                    Some(with_meta(timestamp, value, content_type, meta)),
                    Some(answer),
                )
            })
            .await?;
        Ok(answer)
    }

    /// Remove every record, tombstones included (Tyrant `vanish`).
    pub async fn vanish(&self) -> Result<(), ServiceError> {
        self.store.clear().await?;
        Ok(())
    }

    /// Live keys starting with `prefix`, in key order, at most `max` (None = unlimited).
    pub async fn keys_with_prefix(
        &self,
        prefix: Vec<u8>,
        max: Option<usize>,
    ) -> Result<Vec<Vec<u8>>, ServiceError> {
        let now = self.now();
        let max = max.unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        if max == 0 {
            return Ok(keys);
        }
        let range = KeyRange {
            start: Bound::Unbounded,
            prefix,
        };
        self.visit(range, |key, record| {
            if record.is_live(now) {
                keys.push(key);
                if keys.len() >= max {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
        .await?;
        Ok(keys)
    }

    /// The first live record at or after `from` in key order, for per-connection
    /// iteration (`Bound::Unbounded` = from the start).
    pub async fn next_live(
        &self,
        from: Bound<Vec<u8>>,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>, ServiceError> {
        let now = self.now();
        let mut found = None;
        let range = KeyRange {
            start: from,
            prefix: Vec::new(),
        };
        self.visit(range, |key, record| {
            if let Some(value) = record.live_value(now) {
                found = Some((key, value.to_vec()));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })
        .await?;
        Ok(found)
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
        let mut found = Vec::new();
        let range = KeyRange {
            start: Bound::Unbounded,
            prefix: Vec::new(),
        };
        self.visit(range, |key, record| {
            if found.len() >= max {
                return ControlFlow::Break(());
            }
            if let Some(value) = record.live_value(now).filter(|_| matches(&key)) {
                found.push((key, value.to_vec()));
            }
            ControlFlow::Continue(())
        })
        .await?;
        Ok(found)
    }
}
