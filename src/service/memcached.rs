//! What the memcached port's commands share: reads that carry each value's CAS unique
//! and expiry, and one atomic read-modify-write ([`Service::mc_update`]) that every
//! storage command, `incr`/`decr`, `touch` and `delete` is built on.
//!
//! These writes are unguarded, like the Tyrant port's plain writes: they record
//! [`server_stamp`] as their timestamp, so a later guarded write on any port compares
//! against real time, and every write gives the key a new CAS unique
//! ([`Record::cas_unique`]).

use super::tyrant::{carried_meta, server_stamp};
use super::{Service, ServiceError};
use crate::guard;
use crate::record::{DEFAULT_CONTENT_TYPE, Record, State};

/// A live value as the memcached port reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McItem {
    pub value: Vec<u8>,
    /// Changes on every write of the key ([`Record::cas_unique`]).
    pub cas: u64,
    /// Server time (µs) after which the value reads as absent.
    pub expires_at: Option<u64>,
    /// The client flags stored with the value ([`crate::record::Meta::flags`]).
    pub flags: u32,
}

/// What a [`Service::mc_update`] step leaves in place of the live value it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McWrite {
    /// A whole new value expiring at `expires_at` (capped by the key's absolute
    /// lifetime). `keep_content_type` keeps the old value's content type (append,
    /// prepend, incr); otherwise it is `application/octet-stream`. `flags` are the
    /// client flags stored with it.
    Put {
        value: Vec<u8>,
        expires_at: Option<u64>,
        keep_content_type: bool,
        flags: u32,
    },
    /// Only a new expiry (touch, gat): value, timestamp and CAS unique stay.
    Expiry(Option<u64>),
    /// A tombstone, so older guarded writes stay out.
    Delete,
}

fn item_of(record: &Record, now: u64) -> Option<McItem> {
    match &record.state {
        State::Live {
            value, expires_at, ..
        } if record.is_live(now) => Some(McItem {
            value: value.clone(),
            cas: record.cas_unique(),
            expires_at: *expires_at,
            flags: record.meta.flags,
        }),
        _ => None,
    }
}

impl Service {
    /// The live values among `keys`, in request order, from one read; misses left out.
    pub async fn mc_get_many(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<(Vec<u8>, McItem)>, ServiceError> {
        for key in &keys {
            self.check_key(key)?;
        }
        let now = self.now();
        let records = self.store.get_many(keys.clone()).await?;
        Ok(keys
            .into_iter()
            .zip(records)
            .filter_map(|(key, record)| Some((key, item_of(&record?, now)?)))
            .collect())
    }

    /// One atomic read-modify-write of `key`: `decide` gets the live value (`None` if
    /// absent, deleted or expired) and the server time, and returns what to write
    /// (`None` leaves the record untouched) and the answer.
    pub async fn mc_update<T, F>(&self, key: Vec<u8>, decide: F) -> Result<T, ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(Option<McItem>, u64) -> (Option<McWrite>, T) + Send + 'static,
    {
        Ok(self.mc_update_cas(key, decide).await?.0)
    }

    /// [`Service::mc_update`], also answering the CAS unique the key has after the
    /// step when it wrote a value (`None` when it wrote nothing or a tombstone): the
    /// meta commands' `c` flag reports it.
    pub async fn mc_update_cas<T, F>(
        &self,
        key: Vec<u8>,
        decide: F,
    ) -> Result<(T, Option<u64>), ServiceError>
    where
        T: Send + 'static,
        F: FnOnce(Option<McItem>, u64) -> (Option<McWrite>, T) + Send + 'static,
    {
        self.check_key(&key)?;
        let now = self.now();
        let lifetime = self.policy.max_lifetime_micros;
        let max_value = self.policy.max_value_bytes;
        self.store
            .update(key, move |stored| {
                let live = stored.as_ref().and_then(|r| item_of(r, now));
                let (write, answer) = decide(live, now);
                let Some(write) = write else {
                    return (None, Ok((answer, None)));
                };
                let timestamp = server_stamp(stored.as_ref(), now);
                let record = match write {
                    McWrite::Put {
                        value,
                        expires_at,
                        keep_content_type,
                        flags,
                    } => {
                        if value.len() > max_value {
                            return (
                                None,
                                Err(ServiceError::ValueTooLarge {
                                    len: value.len(),
                                    max: max_value,
                                }),
                            );
                        }
                        let mut meta = carried_meta(stored.as_ref(), now, lifetime);
                        meta.flags = flags;
                        let content_type = match stored.as_ref().map(|r| &r.state) {
                            Some(State::Live { content_type, .. })
                                if keep_content_type
                                    && stored.as_ref().is_some_and(|r| r.is_live(now)) =>
                            {
                                content_type.clone()
                            }
                            _ => DEFAULT_CONTENT_TYPE.to_string(),
                        };
                        let expires_at = guard::cap(expires_at, meta.lifetime_ends);
                        let mut record = Record::live(timestamp, value, content_type, expires_at);
                        record.meta = meta;
                        record
                    }
                    McWrite::Expiry(wanted) => {
                        let Some(mut record) = stored.filter(|r| r.is_live(now)) else {
                            return (None, Ok((answer, None)));
                        };
                        let cap = record.meta.lifetime_ends;
                        if let State::Live { expires_at, .. } = &mut record.state {
                            *expires_at = guard::cap(wanted, cap);
                        }
                        record
                    }
                    McWrite::Delete => Record::tombstone(timestamp, now),
                };
                let cas = matches!(record.state, State::Live { .. }).then(|| record.cas_unique());
                (Some(record), Ok((answer, cas)))
            })
            .await?
    }
}
