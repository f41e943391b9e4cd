//! What each meta command does, as service calls, answered as memcached 1.6 answers
//! it: one [`Service::mc_update_cas`](crate::service::Service::mc_update_cas) step per
//! write (or a guarded put under `--memcached-guard prefix`, for `ms` in set, add and
//! replace mode), one read per `mg` without `T`.
//!
//! Answers carry the requested return flags in request order, as memcached writes
//! them: `mg` hits `s t c f O k`, misses `O k`; `ms` `O k c`; `md` `O k`; `ma`
//! `c t O k`. A `k` of a base64 key answers it base64 with a `b` after it.

use std::sync::atomic::Ordering;

use crate::config::TyrantGuard;
use crate::service::ServiceError;
use crate::service::memcached::{McItem, McWrite};

use super::commands::{Answer, Connection, counter, expiry, gat, server_error, store};
use super::meta::{Meta, MetaCommand};
use super::request::StoreKind;

const MICROS: u64 = 1_000_000;

/// Remaining lifetime in whole seconds (rounded up), `-1` for none, as `t` answers it.
fn remaining(expires_at: Option<u64>, now: u64) -> i64 {
    match expires_at {
        None => -1,
        Some(at) => i64::try_from(at.saturating_sub(now).div_ceil(MICROS)).unwrap_or(i64::MAX),
    }
}

/// What a meta answer line can report about the item it concerns.
#[derive(Default)]
struct Reported<'a> {
    item: Option<&'a McItem>,
    /// The CAS unique after a write (`ms`, `ma`), when it differs from `item`'s.
    cas: Option<u64>,
    now: u64,
}

/// Appends `code`, the return flags `letters` asks for in request order, and CRLF.
fn answer_line(out: &mut Vec<u8>, code: &str, meta: &Meta, letters: &[u8], seen: &Reported) {
    out.extend_from_slice(code.as_bytes());
    for (letter, token) in &meta.flags {
        if !letters.contains(letter) {
            continue;
        }
        match letter {
            b'O' => {
                out.push(b' ');
                out.extend_from_slice(token);
            }
            b'k' => {
                out.extend_from_slice(b" k");
                out.extend_from_slice(&meta.key_text());
                if meta.binary_key {
                    out.extend_from_slice(b" b");
                }
            }
            b'c' => {
                let cas = seen.cas.or(seen.item.map(|i| i.cas)).unwrap_or(0);
                out.extend_from_slice(format!(" c{cas}").as_bytes());
            }
            b's' => {
                let size = seen.item.map_or(0, |i| i.value.len());
                out.extend_from_slice(format!(" s{size}").as_bytes());
            }
            b't' => {
                let ttl = remaining(seen.item.and_then(|i| i.expires_at), seen.now);
                out.extend_from_slice(format!(" t{ttl}").as_bytes());
            }
            b'f' => {
                let flags = seen.item.map_or(0, |i| i.flags);
                out.extend_from_slice(format!(" f{flags}").as_bytes());
            }
            _ => {}
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A hit's answer: `VA <size>` and the data with `v`, otherwise `HD`.
fn hit_answer(out: &mut Vec<u8>, meta: &Meta, letters: &[u8], seen: &Reported, value: &[u8]) {
    if meta.options.value {
        answer_line(out, &format!("VA {}", value.len()), meta, letters, seen);
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    } else {
        answer_line(out, "HD", meta, letters, seen);
    }
}

/// What `ma` found.
enum Counted {
    Done(McItem),
    NotFound,
    Exists,
    NonNumeric,
}

impl Connection<'_> {
    /// Execute one meta request, appending its answer (unless quiet) to `out`.
    pub(super) async fn meta(&mut self, meta: Meta, out: &mut Vec<u8>) {
        let result = match meta.command {
            MetaCommand::Noop => {
                out.extend_from_slice(b"MN\r\n");
                Ok(())
            }
            MetaCommand::Get => self.meta_get(&meta, out).await,
            MetaCommand::Set => self.meta_set(meta, out).await,
            MetaCommand::Delete => self.meta_delete(&meta, out).await,
            MetaCommand::Arithmetic => self.meta_arithmetic(&meta, out).await,
            MetaCommand::Debug => self.meta_debug(&meta, out).await,
        };
        if let Err(e) = result {
            out.extend_from_slice(server_error(&e).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }

    /// `mg`: a read, or with `T` one touch-and-read step. Counted as memcached counts
    /// it: `cmd_touch` with `T`, otherwise `cmd_get` and a hit or a miss.
    async fn meta_get(&self, meta: &Meta, out: &mut Vec<u8>) -> Result<(), ServiceError> {
        let service = &self.shared.service;
        let counters = &self.shared.counters;
        let found = match meta.options.ttl {
            Some(exptime) => {
                counters.cmd_touch.fetch_add(1, Ordering::Relaxed);
                let found = gat(self.shared, vec![meta.key.clone()], exptime).await?;
                found.into_iter().next().map(|(_, item)| item)
            }
            None => {
                counters.cmd_get.fetch_add(1, Ordering::Relaxed);
                let found = service.mc_get_many(vec![meta.key.clone()]).await?;
                let item = found.into_iter().next().map(|(_, item)| item);
                let counter = if item.is_some() {
                    &counters.get_hits
                } else {
                    &counters.get_misses
                };
                counter.fetch_add(1, Ordering::Relaxed);
                item
            }
        };
        let now = service.now();
        match found {
            Some(item) => {
                let seen = Reported {
                    item: Some(&item),
                    cas: None,
                    now,
                };
                hit_answer(out, meta, b"stcfOk", &seen, &item.value);
            }
            None if meta.options.quiet => {}
            None => answer_line(out, "EN", meta, b"Ok", &Reported::default()),
        }
        Ok(())
    }

    /// `ms`: the storage command its mode names (`S` set by default, `E` add, `R`
    /// replace, `A` append, `P` prepend); with `C`, set and replace become `cas`, and
    /// append/prepend compare the CAS first. `N` in append/prepend mode stores the
    /// data as a new item on a miss.
    async fn meta_set(&self, meta: Meta, out: &mut Vec<u8>) -> Result<(), ServiceError> {
        let counters = &self.shared.counters;
        counters.cmd_set.fetch_add(1, Ordering::Relaxed);
        let options = meta.options.clone();
        let kind = match (options.mode.unwrap_or(b'S'), options.compare_cas) {
            (b'E', _) => StoreKind::Add,
            (b'A', _) => StoreKind::Append,
            (b'P', _) => StoreKind::Prepend,
            (b'R' | b'S', Some(_)) => StoreKind::Cas,
            (b'R', None) => StoreKind::Replace,
            _ => StoreKind::Set,
        };
        let exptime = options.ttl.unwrap_or(0);
        let flags = options.client_flags;
        let guarded = self.shared.settings.guard == TyrantGuard::Prefix
            && matches!(kind, StoreKind::Set | StoreKind::Add | StoreKind::Replace);
        let result = if guarded {
            let answer = self
                .guarded_store(kind, meta.key.clone(), meta.data.clone(), flags, exptime)
                .await;
            match answer {
                // The guarded put does not answer a CAS; read it back, and report it
                // only while the value read is still the one written.
                Ok(Answer::Stored) if meta.flags.iter().any(|(l, _)| *l == b'c') => {
                    let found = self
                        .shared
                        .service
                        .mc_get_many(vec![meta.key.clone()])
                        .await?;
                    let cas = found
                        .into_iter()
                        .next()
                        .filter(|(_, item)| item.value == meta.data)
                        .map(|(_, item)| item.cas);
                    Ok((Answer::Stored, cas))
                }
                other => other.map(|a| (a, None)),
            }
        } else {
            let value = meta.data.clone();
            self.shared
                .service
                .mc_update_cas(meta.key.clone(), move |live, now| {
                    let appending = matches!(kind, StoreKind::Append | StoreKind::Prepend);
                    match (&live, options.compare_cas, options.vivify) {
                        (Some(item), Some(cas), _) if appending && item.cas != cas => {
                            return (None, Answer::Exists);
                        }
                        (None, _, Some(vivify)) if appending => {
                            let write = McWrite::Put {
                                value,
                                expires_at: expiry(vivify, now),
                                keep_content_type: false,
                                flags,
                            };
                            return (Some(write), Answer::Stored);
                        }
                        _ => {}
                    }
                    store(kind, live, value, flags, exptime, options.compare_cas, now)
                })
                .await
        };
        let (answer, cas) = match result {
            Ok(done) => done,
            Err(ServiceError::ValueTooLarge { .. }) => {
                out.extend_from_slice(b"SERVER_ERROR out of memory storing object\r\n");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let code = match answer {
            Answer::Stored if options.quiet => return Ok(()),
            Answer::Stored => "HD",
            Answer::NotStored => "NS",
            Answer::Exists => "EX",
            Answer::NotFound => "NF",
        };
        let seen = Reported {
            item: None,
            cas: Some(cas.unwrap_or(0)),
            now: 0,
        };
        answer_line(out, code, &meta, b"Okc", &seen);
        Ok(())
    }

    /// `md`: delete (a tombstone), or with `x` empty the value and its client flags
    /// while keeping the item and its expiry. `C` must match first.
    async fn meta_delete(&self, meta: &Meta, out: &mut Vec<u8>) -> Result<(), ServiceError> {
        let options = meta.options.clone();
        let answer = self
            .shared
            .service
            .mc_update(meta.key.clone(), move |live, _| match live {
                None => (None, "NF"),
                Some(item) if options.compare_cas.is_some_and(|c| c != item.cas) => (None, "EX"),
                Some(item) if options.remove_value => {
                    let write = McWrite::Put {
                        value: Vec::new(),
                        expires_at: item.expires_at,
                        keep_content_type: true,
                        flags: 0,
                    };
                    (Some(write), "HD")
                }
                Some(_) => (Some(McWrite::Delete), "HD"),
            })
            .await?;
        if !(answer == "HD" && options.quiet) {
            answer_line(out, answer, meta, b"Ok", &Reported::default());
        }
        Ok(())
    }

    /// `ma`: incr (mode `I`/`+`, the default) or decr (`D`/`-`) by `D` (default 1), as
    /// incr/decr do; with `N` a miss creates the value `J` (default 0) with that
    /// exptime; `T` sets a hit's exptime; `C` must match first.
    async fn meta_arithmetic(&self, meta: &Meta, out: &mut Vec<u8>) -> Result<(), ServiceError> {
        let options = meta.options.clone();
        let incr = !matches!(options.mode, Some(b'D' | b'-'));
        let (counted, cas) = self
            .shared
            .service
            .mc_update_cas(meta.key.clone(), move |live, now| {
                let Some(item) = live else {
                    let Some(vivify) = options.vivify else {
                        return (None, Counted::NotFound);
                    };
                    let value = options.initial.to_string().into_bytes();
                    let created = McItem {
                        value: value.clone(),
                        cas: 0,
                        expires_at: expiry(vivify, now),
                        flags: 0,
                    };
                    let write = McWrite::Put {
                        value,
                        expires_at: created.expires_at,
                        keep_content_type: false,
                        flags: 0,
                    };
                    return (Some(write), Counted::Done(created));
                };
                if options.compare_cas.is_some_and(|c| c != item.cas) {
                    return (None, Counted::Exists);
                }
                let Some(number) = counter(&item.value) else {
                    return (None, Counted::NonNumeric);
                };
                // As incr/decr: incr wraps at 2^64, decr stops at 0.
                let number = if incr {
                    number.wrapping_add(options.delta)
                } else {
                    number.saturating_sub(options.delta)
                };
                let expires_at = match options.ttl {
                    Some(exptime) => expiry(exptime, now),
                    None => item.expires_at,
                };
                let value = number.to_string().into_bytes();
                let write = McWrite::Put {
                    value: value.clone(),
                    expires_at,
                    keep_content_type: true,
                    flags: item.flags,
                };
                let done = McItem {
                    value,
                    expires_at,
                    ..item
                };
                (Some(write), Counted::Done(done))
            })
            .await?;
        let now = self.shared.service.now();
        match counted {
            Counted::Done(_) if meta.options.quiet => {}
            Counted::Done(item) => {
                let seen = Reported {
                    item: Some(&item),
                    cas,
                    now,
                };
                hit_answer(out, meta, b"ctOk", &seen, &item.value);
            }
            Counted::NotFound => answer_line(out, "NF", meta, b"Ok", &Reported::default()),
            Counted::Exists => answer_line(out, "EX", meta, b"Ok", &Reported::default()),
            Counted::NonNumeric => out.extend_from_slice(
                b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n",
            ),
        }
        Ok(())
    }

    /// `me`: memcached's debug line with the values tidemark has: `exp` (seconds
    /// left, -1 for none), `cas` and `size` (the value's bytes).
    async fn meta_debug(&self, meta: &Meta, out: &mut Vec<u8>) -> Result<(), ServiceError> {
        let service = &self.shared.service;
        let found = service.mc_get_many(vec![meta.key.clone()]).await?;
        let now = service.now();
        match found.into_iter().next() {
            Some((_, item)) => {
                out.extend_from_slice(b"ME ");
                out.extend_from_slice(&meta.key_text());
                let line = format!(
                    " exp={} cas={} size={}\r\n",
                    remaining(item.expires_at, now),
                    item.cas,
                    item.value.len()
                );
                out.extend_from_slice(line.as_bytes());
            }
            None => out.extend_from_slice(b"EN\r\n"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remaining_ttl_is_whole_seconds_rounded_up() {
        assert_eq!(remaining(None, 5), -1);
        assert_eq!(remaining(Some(10 * MICROS), 0), 10);
        assert_eq!(remaining(Some(10 * MICROS), MICROS / 2), 10);
        assert_eq!(remaining(Some(10 * MICROS), 11 * MICROS), 0);
    }
}
