//! What each memcached request does, as service calls, answered as memcached 1.6
//! answers it. Every write is one atomic [`Service::mc_update`](crate::service::Service::mc_update) step, except set/add/replace
//! under `--memcached-guard prefix`, which are guarded [`Service::put`](crate::service::Service::put)s.

use std::sync::atomic::Ordering;

use crate::config::TyrantGuard;
use crate::guard::{Condition, EtagMatch};
use crate::record::DEFAULT_CONTENT_TYPE;
use crate::service::memcached::{McItem, McWrite};
use crate::service::{ServiceError, WriteOptions};
use crate::tyrant::commands::prefix_timestamp;

use super::Shared;
use super::request::{Request, StoreKind};

/// Longest relative exptime (30 days); larger values are Unix times.
const RELATIVE_EXPTIME_MAX: i64 = 30 * 24 * 3600;

/// What the connection does after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    Close,
}

pub struct Connection<'a> {
    pub(super) shared: &'a Shared,
}

/// The expiry (server µs) an exptime asks for at `now`: 0 = never; up to 30 days,
/// seconds from now; beyond, a Unix time; negative or in the past = already expired
/// (stored, but reading as absent).
pub fn expiry(exptime: i64, now: u64) -> Option<u64> {
    const MICROS: u64 = 1_000_000;
    match exptime {
        0 => None,
        e if e < 0 => Some(now),
        e if e <= RELATIVE_EXPTIME_MAX => Some(now.saturating_add(e.unsigned_abs() * MICROS)),
        e => Some(e.unsigned_abs().saturating_mul(MICROS).max(now)),
    }
}

/// A stored value incr/decr can count: decimal digits only, within 64 bits.
pub(super) fn counter(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A storage command's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

impl<'a> Connection<'a> {
    pub fn new(shared: &'a Shared) -> Self {
        Self { shared }
    }

    /// Execute one request, appending its reply (if any) to `out`. Also returns how
    /// many bytes of a refused data block follow and must be thrown away.
    pub async fn execute(&mut self, request: Request, out: &mut Vec<u8>) -> (After, usize) {
        let service = &self.shared.service;
        let counters = &self.shared.counters;
        let mut reply = |noreply: bool, text: &str| {
            if !noreply {
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
        };
        match request {
            Request::Quit => return (After::Close, 0),
            Request::Refused {
                reply: text,
                noreply,
                discard,
            } => {
                reply(noreply, text);
                return (After::Continue, discard);
            }
            Request::Get {
                keys,
                with_cas,
                touch,
            } => {
                let counted = keys.len() as u64;
                if touch.is_some() {
                    counters.cmd_touch.fetch_add(counted, Ordering::Relaxed);
                }
                counters.cmd_get.fetch_add(counted, Ordering::Relaxed);
                let found = match touch {
                    None => service.mc_get_many(keys).await,
                    Some(exptime) => gat(self.shared, keys, exptime).await,
                };
                match found {
                    Ok(found) => {
                        counters
                            .get_hits
                            .fetch_add(found.len() as u64, Ordering::Relaxed);
                        counters
                            .get_misses
                            .fetch_add(counted - found.len() as u64, Ordering::Relaxed);
                        for (key, item) in found {
                            out.extend_from_slice(b"VALUE ");
                            out.extend_from_slice(&key);
                            out.extend_from_slice(
                                format!(" {} {}", item.flags, item.value.len()).as_bytes(),
                            );
                            if with_cas {
                                out.extend_from_slice(format!(" {}", item.cas).as_bytes());
                            }
                            out.extend_from_slice(b"\r\n");
                            out.extend_from_slice(&item.value);
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(b"END\r\n");
                    }
                    Err(e) => reply(false, &server_error(&e)),
                }
            }
            Request::Store {
                kind,
                key,
                flags,
                exptime,
                cas,
                value,
                noreply,
            } => {
                counters.cmd_set.fetch_add(1, Ordering::Relaxed);
                let guarded = self.shared.settings.guard == TyrantGuard::Prefix
                    && matches!(kind, StoreKind::Set | StoreKind::Add | StoreKind::Replace);
                let result = if guarded {
                    self.guarded_store(kind, key, value, flags, exptime).await
                } else {
                    service
                        .mc_update(key, move |live, now| {
                            store(kind, live, value, flags, exptime, cas, now)
                        })
                        .await
                };
                let text = match result {
                    Ok(Answer::Stored) => "STORED".to_string(),
                    Ok(Answer::NotStored) => "NOT_STORED".to_string(),
                    Ok(Answer::Exists) => "EXISTS".to_string(),
                    Ok(Answer::NotFound) => "NOT_FOUND".to_string(),
                    Err(ServiceError::ValueTooLarge { .. }) => {
                        "SERVER_ERROR out of memory storing object".to_string()
                    }
                    Err(e) => server_error(&e),
                };
                reply(noreply, &text);
            }
            Request::Delete { key, noreply } => {
                let result = service
                    .mc_update(key, |live, _| match live {
                        Some(_) => (Some(McWrite::Delete), true),
                        None => (None, false),
                    })
                    .await;
                let text = match result {
                    Ok(true) => "DELETED".to_string(),
                    Ok(false) => "NOT_FOUND".to_string(),
                    Err(e) => server_error(&e),
                };
                reply(noreply, &text);
            }
            Request::Arith {
                incr,
                key,
                delta,
                noreply,
            } => {
                let result = service
                    .mc_update(key, move |live, _| {
                        let Some(item) = live else {
                            return (None, Err("NOT_FOUND"));
                        };
                        let Some(number) = counter(&item.value) else {
                            return (
                                None,
                                Err("CLIENT_ERROR cannot increment or decrement non-numeric value"),
                            );
                        };
                        // incr wraps at 2^64; decr stops at 0.
                        let number = if incr {
                            number.wrapping_add(delta)
                        } else {
                            number.saturating_sub(delta)
                        };
                        let write = McWrite::Put {
                            value: number.to_string().into_bytes(),
                            expires_at: item.expires_at,
                            keep_content_type: true,
                            flags: item.flags,
                        };
                        (Some(write), Ok(number))
                    })
                    .await;
                let text = match result {
                    Ok(Ok(number)) => number.to_string(),
                    Ok(Err(text)) => text.to_string(),
                    Err(e) => server_error(&e),
                };
                reply(noreply, &text);
            }
            Request::Touch {
                key,
                exptime,
                noreply,
            } => {
                counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
                let result = service
                    .mc_update(key, move |live, now| match live {
                        Some(_) => (Some(McWrite::Expiry(expiry(exptime, now))), true),
                        None => (None, false),
                    })
                    .await;
                let text = match result {
                    Ok(true) => "TOUCHED".to_string(),
                    Ok(false) => "NOT_FOUND".to_string(),
                    Err(e) => server_error(&e),
                };
                reply(noreply, &text);
            }
            Request::Stats { arg } => stats_of(self.shared, arg.as_deref(), out),
            Request::Version => reply(
                false,
                &format!("VERSION 1.6.0-tidemark-{}", env!("CARGO_PKG_VERSION")),
            ),
            Request::Verbosity { noreply } => reply(noreply, "OK"),
            Request::Meta(meta) => self.meta(meta, out).await,
            Request::FlushAll { delay, noreply } => {
                counters.cmd_flush.fetch_add(1, Ordering::Relaxed);
                let now = service.now();
                // As memcached: refused before the delay is even read.
                match delay.map(|d| expiry(d, now).filter(|at| *at > now)) {
                    _ if !self.shared.settings.allow_flush => {
                        reply(noreply, "CLIENT_ERROR flush_all not allowed");
                    }
                    None => reply(noreply, "CLIENT_ERROR invalid exptime argument"),
                    Some(Some(at)) => {
                        self.shared.schedule_flush(Some(at));
                        reply(noreply, "OK");
                    }
                    Some(None) => {
                        let _flushing = self.shared.flushing.lock().await;
                        match service.vanish().await {
                            Ok(()) => {
                                self.shared.schedule_flush(None);
                                reply(noreply, "OK");
                            }
                            Err(e) => reply(noreply, &server_error(&e)),
                        }
                    }
                }
            }
        }
        (After::Continue, 0)
    }
}

impl Connection<'_> {
    /// set/add/replace under `--memcached-guard prefix`: a guarded put (the timestamp
    /// rule, on every port the same) at the timestamp in the value's leading digits.
    /// A value without them, a stale or tied timestamp, a failed add/replace condition
    /// or an exptime already past is `NOT_STORED`.
    pub(super) async fn guarded_store(
        &self,
        kind: StoreKind,
        key: Vec<u8>,
        value: Vec<u8>,
        flags: u32,
        exptime: i64,
    ) -> Result<Answer, ServiceError> {
        let service = &self.shared.service;
        let Some(timestamp) = prefix_timestamp(&value, self.shared.settings.ts_digits) else {
            return Ok(Answer::NotStored);
        };
        let now = service.now();
        let ttl_secs = match expiry(exptime, now) {
            None => None,
            Some(at) if at <= now => return Ok(Answer::NotStored),
            Some(at) => Some((at - now).div_ceil(1_000_000)),
        };
        let options = match kind {
            StoreKind::Add => WriteOptions::if_absent(),
            StoreKind::Replace => WriteOptions {
                condition: Condition::IfMatch(EtagMatch::Any),
                ..WriteOptions::default()
            },
            _ => WriteOptions::default(),
        };
        let options = WriteOptions { flags, ..options };
        let content_type = DEFAULT_CONTENT_TYPE.to_string();
        match service
            .put(key, value, content_type, timestamp, ttl_secs, options)
            .await
        {
            Ok(_) => Ok(Answer::Stored),
            Err(
                ServiceError::Stale { .. }
                | ServiceError::Tie { .. }
                | ServiceError::FutureTimestamp(_)
                | ServiceError::Exists
                | ServiceError::NotFound
                | ServiceError::PreconditionFailed { .. }
                | ServiceError::TtlOutOfRange,
            ) => Ok(Answer::NotStored),
            Err(e) => Err(e),
        }
    }
}

/// gat/gats: each key's expiry set, then its value read, in one step per key.
pub(super) async fn gat(
    shared: &Shared,
    keys: Vec<Vec<u8>>,
    exptime: i64,
) -> Result<Vec<(Vec<u8>, McItem)>, ServiceError> {
    let mut found = Vec::new();
    for key in keys {
        let item = shared
            .service
            .mc_update(key.clone(), move |live, now| match live {
                Some(mut item) => {
                    item.expires_at = expiry(exptime, now);
                    let write = McWrite::Expiry(item.expires_at);
                    (Some(write), Some(item))
                }
                None => (None, None),
            })
            .await?;
        if let Some(item) = item {
            found.push((key, item));
        }
    }
    Ok(found)
}

/// The write a storage command makes of the live value it finds.
pub(super) fn store(
    kind: StoreKind,
    live: Option<McItem>,
    value: Vec<u8>,
    flags: u32,
    exptime: i64,
    cas: Option<u64>,
    now: u64,
) -> (Option<McWrite>, Answer) {
    let put = |value| McWrite::Put {
        value,
        expires_at: expiry(exptime, now),
        keep_content_type: false,
        flags,
    };
    match (kind, live) {
        (StoreKind::Set, _) | (StoreKind::Add, None) | (StoreKind::Replace, Some(_)) => {
            (Some(put(value)), Answer::Stored)
        }
        (StoreKind::Cas, None) => (None, Answer::NotFound),
        (StoreKind::Cas, Some(item)) if Some(item.cas) != cas => (None, Answer::Exists),
        (StoreKind::Cas, Some(_)) => (Some(put(value)), Answer::Stored),
        (StoreKind::Append | StoreKind::Prepend, Some(item)) => {
            let combined = if kind == StoreKind::Append {
                [item.value, value].concat()
            } else {
                [value, item.value].concat()
            };
            // append and prepend keep the item's expiry and flags (and ignore their own).
            let write = McWrite::Put {
                value: combined,
                expires_at: item.expires_at,
                keep_content_type: true,
                flags: item.flags,
            };
            (Some(write), Answer::Stored)
        }
        (StoreKind::Add, Some(_))
        | (StoreKind::Replace | StoreKind::Append | StoreKind::Prepend, None) => {
            (None, Answer::NotStored)
        }
    }
}

pub(super) fn server_error(error: &ServiceError) -> String {
    match error {
        ServiceError::KeyTooLong { .. } => super::request::BAD_FORMAT.to_string(),
        ServiceError::ValueTooLarge { .. } => "SERVER_ERROR object too large for cache".into(),
        other => {
            tracing::warn!(error = %other, "memcached request failed");
            "SERVER_ERROR temporary failure".into()
        }
    }
}

/// `stats [arg]`, answered as memcached 1.6 answers it where tidemark has the
/// numbers: the general statistics; `settings`; `reset`; `items` and `slabs` (no slab
/// classes, so nothing before `END`, as memcached answers with none in use); `sizes`
/// (not tracked: `sizes_status disabled`, as memcached without `-o track_sizes`).
/// Anything else, `conns` included (connections are not listed), is `ERROR`.
fn stats_of(shared: &Shared, arg: Option<&[u8]>, out: &mut Vec<u8>) {
    let text = match arg {
        None => stats(shared),
        Some(b"settings") => settings(shared),
        Some(b"reset") => {
            shared.counters.reset();
            out.extend_from_slice(b"RESET\r\n");
            return;
        }
        Some(b"items" | b"slabs") => String::new(),
        Some(b"sizes") => "STAT sizes_status disabled\r\n".to_string(),
        Some(_) => {
            out.extend_from_slice(b"ERROR\r\n");
            return;
        }
    };
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(b"END\r\n");
}

/// `stats settings`: the settings tidemark has, in memcached's names.
fn settings(shared: &Shared) -> String {
    let s = &shared.settings;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let lines = [
        ("maxconns", s.max_connections.to_string()),
        ("tcpport", s.port.to_string()),
        ("udpport", "0".to_string()),
        ("item_size_max", s.max_value_bytes.to_string()),
        ("evictions", "off".to_string()),
        ("cas_enabled", "yes".to_string()),
        ("flush_enabled", yes_no(s.allow_flush).to_string()),
        ("binding_protocol", "ascii".to_string()),
        ("idle_timeout", "0".to_string()),
        ("verbosity", "0".to_string()),
    ];
    lines
        .iter()
        .map(|(name, value)| format!("STAT {name} {value}\r\n"))
        .collect()
}

fn stats(shared: &Shared) -> String {
    let c = &shared.counters;
    let get = |n: &std::sync::atomic::AtomicU64| n.load(Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let lines = [
        ("pid", u64::from(std::process::id())),
        ("uptime", shared.started.elapsed().as_secs()),
        ("time", now),
        ("curr_connections", get(&c.curr_connections)),
        ("total_connections", get(&c.total_connections)),
        ("cmd_get", get(&c.cmd_get)),
        ("cmd_set", get(&c.cmd_set)),
        ("cmd_touch", get(&c.cmd_touch)),
        ("cmd_flush", get(&c.cmd_flush)),
        ("get_hits", get(&c.get_hits)),
        ("get_misses", get(&c.get_misses)),
    ];
    let mut text = format!(
        "STAT version 1.6.0-tidemark-{}\r\n",
        env!("CARGO_PKG_VERSION")
    );
    for (name, value) in lines {
        text.push_str(&format!("STAT {name} {value}\r\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600_000_000;

    #[test]
    fn exptime_is_relative_up_to_30_days_then_a_unix_time() {
        assert_eq!(expiry(0, NOW), None);
        assert_eq!(expiry(-1, NOW), Some(NOW));
        assert_eq!(expiry(10, NOW), Some(NOW + 10_000_000));
        assert_eq!(
            expiry(RELATIVE_EXPTIME_MAX, NOW),
            Some(NOW + 2_592_000_000_000)
        );
        assert_eq!(expiry(RELATIVE_EXPTIME_MAX + 1, NOW), Some(NOW));
        assert_eq!(expiry(1_767_225_700, NOW), Some(1_767_225_700_000_000));
    }

    #[test]
    fn only_decimal_digits_count() {
        assert_eq!(counter(b"42"), Some(42));
        assert_eq!(counter(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(counter(b"18446744073709551616"), None);
        assert_eq!(counter(b" 4"), None);
        assert_eq!(counter(b""), None);
    }
}
