//! What each Tyrant request does, as calls on the shared [`Service`].
//!
//! Each command's handler is the `on_*` method its row in the
//! [command table](super::command) names; [`Connection::execute`] counts the request,
//! answers it as masked if `--tyrant-deny` refuses it, and otherwise dispatches to
//! the handler.
//!
//! Replies follow ttserver 1.1.41 byte for byte (`docs/tyrant-protocol.md`,
//! "Commands" and "Replies"): failures are a single `01` except misc
//! (`01 00000000`); mget and fwmkeys never fail; putnr never answers. One deliberate
//! exception: an mget (or misc getlist) whose reply would exceed the reply budget
//! fails with `01 00000000` instead of being built, where ttserver would try to
//! allocate it. Guarded writes (`ext tsput`/`tsout`, and plain put/putkeep/putnr
//! under `--tyrant-guard prefix`) go through `Service::put`/`delete`, the same path
//! as HTTP.
//!
//! [`Service`]: crate::service::Service

use std::ops::Bound;

use crate::config::TyrantGuard;
use crate::record::DEFAULT_CONTENT_TYPE;
use crate::service::WriteOptions;
use crate::service::tyrant::PutMode;

use super::command::{Command, Masked, command_table};
use super::reply;
use super::request::Request;
use super::settings::Shared;
use super::stat;
use super::wire::double_from_wire;

mod text;

/// Whether the connection stays open after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    Close,
}

/// A handler that returns nothing keeps the connection open.
impl From<()> for After {
    fn from((): ()) -> Self {
        After::Continue
    }
}

/// A list reply may be this many times the connection's frame limit; a request
/// whose answer would be larger fails instead (`01 00000000`).
const REPLY_BUDGET_FRAMES: usize = 4;

/// Bytes of values fetched from the store per call while building a list reply.
const FETCH_BYTES: usize = 16 << 20;

/// A list reply would exceed the reply budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TooLarge;

/// Why a guarded write or an ext call did not happen. Each answers `01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// The value does not start with `ts_digits` digits of a timestamp.
    NoTimestamp,
    /// ext named a function tidemark does not have. Without a script ttserver has
    /// none, so it answers `01` to every name; so do we, beyond tsput and tsout.
    UnknownFunction,
    /// The service did not apply it: stale, or a store error.
    Service,
}

/// Where this connection's iterator stands (the reference has one per database; here
/// each connection has its own, iterating in key order).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Cursor {
    /// iterinit not called since the connection opened or the last vanish.
    Unset,
    /// Next call returns the first live key from here.
    At(Bound<Vec<u8>>),
    /// Iteration finished; keeps failing until iterinit.
    Done,
}

/// Per-connection state.
pub struct Connection<'a> {
    shared: &'a Shared,
    cursor: Cursor,
    fd: i64,
}

impl<'a> Connection<'a> {
    pub fn new(shared: &'a Shared, fd: i64) -> Self {
        Self {
            shared,
            cursor: Cursor::Unset,
            fd,
        }
    }

    /// Execute one request, appending its reply (if any) to `out`.
    pub async fn execute(&mut self, request: Request, out: &mut Vec<u8>) -> After {
        let command = request.command();
        self.shared.counters.count(command);
        let started = std::time::Instant::now();
        let metrics = self.shared.service.metrics();
        let after = if self.shared.denied.contains(command) {
            masked(command, &self.shared.counters, out)
        } else {
            let before = out.len();
            let after = self.run(request, out).await;
            let ok = out.get(before).is_none_or(|status| *status == 0);
            self.shared
                .request_metrics
                .outcome(metrics, command, ok)
                .inc();
            after
        };
        self.shared
            .request_metrics
            .seconds(metrics)
            .observe(started.elapsed().as_secs_f64());
        after
    }
}

/// `Connection::run`: a permitted request goes to the handler its table row names,
/// with the request's fields in row order.
macro_rules! define_dispatch {
    (
        identity $identity:tt
        layouts $layouts:tt
        handlers { $($variant:ident $({ $($field:ident),* })? => $handler:ident;)* }
    ) => {
        impl Connection<'_> {
            async fn run(&mut self, request: Request, out: &mut Vec<u8>) -> After {
                match request {
                    $(Request::$variant $({ $($field),* })? => {
                        self.$handler($($($field,)*)? out).await.into()
                    })*
                }
            }
        }
    };
}

command_table!(define_dispatch);

/// The handlers, in table order.
impl Connection<'_> {
    async fn on_put(&mut self, key: Vec<u8>, value: Vec<u8>, out: &mut Vec<u8>) {
        let ok = self.plain_put(key, value, PutMode::Overwrite).await;
        self.shared.counters.put_result(ok);
        reply::status(out, ok);
    }

    async fn on_putkeep(&mut self, key: Vec<u8>, value: Vec<u8>, out: &mut Vec<u8>) {
        let ok = self.plain_put(key, value, PutMode::Keep).await;
        self.shared.counters.put_result(ok);
        reply::status(out, ok);
    }

    async fn on_putcat(&mut self, key: Vec<u8>, value: Vec<u8>, out: &mut Vec<u8>) {
        let ok = self
            .shared
            .service
            .put_unguarded(key, value, PutMode::Concat)
            .await
            .unwrap_or(false);
        self.shared.counters.put_result(ok);
        reply::status(out, ok);
    }

    async fn on_putshl(&mut self, key: Vec<u8>, value: Vec<u8>, width: i32, out: &mut Vec<u8>) {
        let width = usize::try_from(width).unwrap_or(0);
        let ok = self
            .shared
            .service
            .put_unguarded(key, value, PutMode::ShiftLeft(width))
            .await
            .unwrap_or(false);
        self.shared.counters.put_result(ok);
        reply::status(out, ok);
    }

    async fn on_putnr(&mut self, key: Vec<u8>, value: Vec<u8>, _out: &mut Vec<u8>) {
        let ok = self.plain_put(key, value, PutMode::Overwrite).await;
        self.shared.counters.put_result(ok);
    }

    async fn on_out(&mut self, key: Vec<u8>, out: &mut Vec<u8>) {
        let ok = self
            .shared
            .service
            .delete_unguarded(key)
            .await
            .unwrap_or(false);
        self.shared.counters.out_result(ok);
        reply::status(out, ok);
    }

    async fn on_get(&mut self, key: Vec<u8>, out: &mut Vec<u8>) {
        match self.shared.service.get_value(key).await {
            Ok(Some(value)) => reply::blob(out, value.bytes()),
            _ => {
                self.shared.counters.get_miss();
                reply::status(out, false);
            }
        }
    }

    async fn on_mget(&mut self, keys: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        match self.get_many(keys).await {
            Ok(found) => {
                reply::kv_list(out, found.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
            }
            // Not a reference answer (ttserver would try to build it): a failure
            // status the C client reads like misc's, count included.
            Err(TooLarge) => reply::misc_failure(out),
        }
    }

    async fn on_vsiz(&mut self, key: Vec<u8>, out: &mut Vec<u8>) {
        match self.shared.service.get_value(key).await {
            Ok(Some(value)) => {
                reply::u32_ok(out, u32::try_from(value.bytes().len()).unwrap_or(u32::MAX))
            }
            _ => reply::status(out, false),
        }
    }

    async fn on_iterinit(&mut self, out: &mut Vec<u8>) {
        self.cursor = Cursor::At(Bound::Unbounded);
        reply::status(out, true);
    }

    async fn on_iternext(&mut self, out: &mut Vec<u8>) {
        match self.iter_next().await {
            Some((key, _)) => reply::blob(out, &key),
            None => reply::status(out, false),
        }
    }

    async fn on_fwmkeys(&mut self, prefix: Vec<u8>, max: i32, out: &mut Vec<u8>) {
        let max = usize::try_from(max).ok();
        let keys = self
            .shared
            .service
            .keys_with_prefix(prefix, max)
            .await
            .unwrap_or_default();
        reply::list(out, &keys);
    }

    async fn on_addint(&mut self, key: Vec<u8>, num: i32, out: &mut Vec<u8>) {
        add_int(&self.shared.service, key, num, out).await;
    }

    async fn on_adddouble(&mut self, key: Vec<u8>, integ: i64, fract: i64, out: &mut Vec<u8>) {
        let num = double_from_wire(integ, fract);
        add_double(&self.shared.service, key, num, out).await;
    }

    async fn on_ext(
        &mut self,
        name: Vec<u8>,
        _opts: u32,
        key: Vec<u8>,
        value: Vec<u8>,
        out: &mut Vec<u8>,
    ) {
        let result = self.ext_call(&name, key, value).await;
        match result {
            // The result is the timestamp now in force, in µs, as decimal text.
            Ok(timestamp) => reply::decimal(out, timestamp),
            Err(_) => reply::status(out, false),
        }
    }

    async fn on_sync(&mut self, out: &mut Vec<u8>) {
        reply::status(out, self.shared.service.sync().await.is_ok());
    }

    /// redb keeps its B-trees balanced; there is nothing to rebuild.
    async fn on_optimize(&mut self, _params: Vec<u8>, out: &mut Vec<u8>) {
        reply::status(out, true);
    }

    async fn on_vanish(&mut self, out: &mut Vec<u8>) {
        let ok = self.shared.service.vanish().await.is_ok();
        if ok {
            self.cursor = Cursor::Unset;
        }
        reply::status(out, ok);
    }

    async fn on_copy(&mut self, path: Vec<u8>, out: &mut Vec<u8>) {
        reply::status(out, self.copy(&path).await);
    }

    async fn on_restore(&mut self, path: Vec<u8>, _timestamp: u64, _opts: u32, out: &mut Vec<u8>) {
        let ok = tokio::task::spawn_blocking(move || restore(&path))
            .await
            .unwrap_or(false);
        reply::status(out, ok);
    }

    /// tidemark has no replication; the setting is accepted (as ttserver does before
    /// its background task picks it up) and ignored. See `docs/tyrant-protocol.md`.
    async fn on_setmst(
        &mut self,
        _host: Vec<u8>,
        _port: i32,
        _timestamp: u64,
        _opts: u32,
        out: &mut Vec<u8>,
    ) {
        reply::status(out, true);
    }

    async fn on_rnum(&mut self, out: &mut Vec<u8>) {
        let live = self
            .shared
            .service
            .counts()
            .await
            .map(|c| c.live())
            .unwrap_or(0);
        reply::u64_ok(out, live);
    }

    async fn on_size(&mut self, out: &mut Vec<u8>) {
        reply::u64_ok(out, self.shared.service.size_bytes().await.unwrap_or(0));
    }

    async fn on_stat(&mut self, out: &mut Vec<u8>) {
        let shared = self.shared;
        let text = stat::render(&shared.service, &shared.counters, shared.started, self.fd).await;
        reply::blob(out, text.as_bytes());
    }

    async fn on_misc(&mut self, name: Vec<u8>, _opts: u32, args: Vec<Vec<u8>>, out: &mut Vec<u8>) {
        match self.misc(&name, args).await {
            Some(items) => reply::list(out, &items),
            None => reply::misc_failure(out),
        }
    }

    /// No update log: send our server id (0) and close, as ttserver does.
    async fn on_repl(&mut self, _timestamp: u64, _server_id: u32, out: &mut Vec<u8>) -> After {
        reply::server_id(out, 0);
        After::Close
    }
}

/// What the handlers share.
impl Connection<'_> {
    /// The ext functions (binary `ext`, HTTP `POST` with `X-TT-XNAME`): on success the
    /// timestamp now in force, in µs.
    async fn ext_call(&self, name: &[u8], key: Vec<u8>, value: Vec<u8>) -> Result<u64, Refused> {
        match name {
            b"tsput" => self.guarded_put(key, value, WriteOptions::default()).await,
            b"tsout" => match prefix_timestamp(&value, self.shared.settings.ts_digits) {
                Some(timestamp) => self
                    .shared
                    .service
                    .delete(key, timestamp, WriteOptions::default())
                    .await
                    .map(|_| timestamp)
                    .map_err(|_| Refused::Service),
                None => Err(Refused::NoTimestamp),
            },
            _ => Err(Refused::UnknownFunction),
        }
    }

    /// put/putkeep/putnr: Tyrant semantics, or guarded by the value's leading digits
    /// under `--tyrant-guard prefix`.
    async fn plain_put(&self, key: Vec<u8>, value: Vec<u8>, mode: PutMode) -> bool {
        match self.shared.settings.guard {
            TyrantGuard::Off => self
                .shared
                .service
                .put_unguarded(key, value, mode)
                .await
                .unwrap_or(false),
            TyrantGuard::Prefix => {
                let condition = if mode == PutMode::Keep {
                    WriteOptions::if_absent()
                } else {
                    WriteOptions::default()
                };
                self.guarded_put(key, value, condition).await.is_ok()
            }
        }
    }

    /// A put guarded by the timestamp in the value's first `ts_digits` bytes.
    async fn guarded_put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        condition: WriteOptions,
    ) -> Result<u64, Refused> {
        let Some(timestamp) = prefix_timestamp(&value, self.shared.settings.ts_digits) else {
            return Err(Refused::NoTimestamp);
        };
        self.shared
            .service
            .put(
                key,
                value,
                DEFAULT_CONTENT_TYPE.to_string(),
                timestamp,
                None,
                condition,
            )
            .await
            .map(|_| timestamp)
            .map_err(|_| Refused::Service)
    }

    /// The live records among `keys`, in request order with duplicates kept (mget,
    /// misc getlist), fetched a few at a time so that neither the fetch nor the reply
    /// can grow past the reply budget: a small request naming one large value many
    /// times must not make the server build a reply of gigabytes. A store error reads
    /// as "nothing found", as mget never fails.
    async fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<(Vec<u8>, Vec<u8>)>, TooLarge> {
        let service = &self.shared.service;
        let budget = self
            .shared
            .settings
            .max_frame_bytes
            .saturating_mul(REPLY_BUDGET_FRAMES);
        // Enough keys per store call to be cheap, few enough that their values (at most
        // max_value_bytes each) stay a fraction of the budget.
        let per_fetch = (FETCH_BYTES / service.policy().max_value_bytes.max(1)).clamp(1, 4096);
        let mut found = Vec::new();
        let mut reply_bytes = 0usize;
        let mut keys = keys.into_iter().peekable();
        while keys.peek().is_some() {
            // Each distinct key once per fetch; duplicates share the fetched value.
            let chunk: Vec<Vec<u8>> = keys.by_ref().take(per_fetch).collect();
            let mut distinct = chunk.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let Ok(values) = service.get_many(distinct).await else {
                return Ok(Vec::new());
            };
            let values: std::collections::HashMap<Vec<u8>, Vec<u8>> = values.into_iter().collect();
            for key in chunk {
                let Some(value) = values.get(&key) else {
                    continue;
                };
                reply_bytes = reply_bytes.saturating_add(8 + key.len() + value.len());
                if reply_bytes > budget {
                    return Err(TooLarge);
                }
                found.push((key, value.clone()));
            }
        }
        Ok(found)
    }

    async fn iter_next(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let Cursor::At(from) = &self.cursor else {
            return None;
        };
        match self.shared.service.next_live(from.clone()).await {
            Ok(Some((key, value))) => {
                self.cursor = Cursor::At(Bound::Excluded(key.clone()));
                Some((key, value))
            }
            Ok(None) => {
                self.cursor = Cursor::Done;
                None
            }
            Err(_) => None,
        }
    }

    /// `copy`: a consistent snapshot to a path on the server host. A leading `@`
    /// (ttserver's "run this shell command") is refused: no remote command execution.
    /// So is the live database file itself, which the copy would overwrite under the
    /// open store and corrupt.
    async fn copy(&self, path: &[u8]) -> bool {
        let path = c_string(path);
        if path.is_empty() || path.starts_with(b"@") {
            return false;
        }
        let Ok(path) = std::str::from_utf8(path) else {
            return false;
        };
        let dest = std::path::PathBuf::from(path);
        let service = &self.shared.service;
        if service.is_data_file(dest.clone()).await {
            tracing::warn!(path = %dest.display(), "Tyrant copy onto the live database refused");
            return false;
        }
        let Ok(snapshot) = service.snapshot().await else {
            return false;
        };
        // The snapshot is complete before the destination is touched; it is copied over
        // the destination, which may be a device such as /dev/null.
        tokio::task::spawn_blocking(move || {
            let mut source = snapshot.file;
            std::fs::File::create(&dest)
                .and_then(|mut target| std::io::copy(&mut source, &mut target))
                .is_ok()
        })
        .await
        .unwrap_or(false)
    }

    /// The misc functions of a hash database. `None` = failure (`01 00000000`).
    async fn misc(&mut self, name: &[u8], args: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
        let service = &self.shared.service;
        let mut args = args.into_iter();
        match name {
            b"put" | b"putkeep" | b"putcat" => {
                let (key, value) = (args.next()?, args.next()?);
                let ok = match name {
                    b"put" => self.plain_put(key, value, PutMode::Overwrite).await,
                    b"putkeep" => self.plain_put(key, value, PutMode::Keep).await,
                    _ => service
                        .put_unguarded(key, value, PutMode::Concat)
                        .await
                        .unwrap_or(false),
                };
                self.shared.counters.put_result(ok);
                ok.then(Vec::new)
            }
            b"out" => {
                let ok = service.delete_unguarded(args.next()?).await.ok()?;
                self.shared.counters.out_result(ok);
                ok.then(Vec::new)
            }
            b"get" => {
                let entry = service.get(args.next()?).await.ok()??;
                Some(vec![entry.value.into()])
            }
            b"putlist" => {
                let mut ok = true;
                while let (Some(key), Some(value)) = (args.next(), args.next()) {
                    ok &= self.plain_put(key, value, PutMode::Overwrite).await;
                }
                ok.then(Vec::new)
            }
            b"outlist" => {
                for key in args {
                    service.delete_unguarded(key).await.ok()?;
                }
                Some(Vec::new())
            }
            b"getlist" => {
                let found = self.get_many(args.collect()).await.ok()?;
                Some(found.into_iter().flat_map(|(k, v)| [k, v]).collect())
            }
            b"getpart" => {
                let entry = service.get(args.next()?).await.ok()??;
                let offset = args.next().and_then(|a| c_long(&a)).unwrap_or(0).max(0);
                let offset = usize::try_from(offset).ok()?;
                if offset >= entry.value.len() {
                    return None;
                }
                let rest = &entry.value[offset..];
                let len = match args.next().and_then(|a| c_long(&a)) {
                    Some(n) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX).min(rest.len()),
                    _ => rest.len(),
                };
                Some(vec![rest[..len].to_vec()])
            }
            b"iterinit" => {
                match args.next() {
                    None => self.cursor = Cursor::At(Bound::Unbounded),
                    Some(key) => {
                        service.get(key.clone()).await.ok()??;
                        self.cursor = Cursor::At(Bound::Included(key));
                    }
                }
                Some(Vec::new())
            }
            b"iternext" => {
                let (key, value) = self.iter_next().await?;
                Some(vec![key, value])
            }
            b"sync" => service.sync().await.ok().map(|()| Vec::new()),
            b"optimize" | b"defrag" | b"cacheclear" => Some(Vec::new()),
            b"vanish" => {
                service.vanish().await.ok()?;
                self.cursor = Cursor::Unset;
                Some(Vec::new())
            }
            b"regex" => {
                let pattern = args.next()?;
                let max = args
                    .next()
                    .and_then(|a| c_long(&a))
                    .filter(|&n| n >= 1)
                    .and_then(|n| usize::try_from(n).ok());
                regex_records(service, &pattern, max).await
            }
            b"error" => Some(vec![b"0: success".to_vec()]),
            _ => None,
        }
    }
}

/// Reply to a command refused by `--tyrant-deny`, as ttserver answers a masked one.
fn masked(command: Command, counters: &stat::Counters, out: &mut Vec<u8>) -> After {
    match command.masked() {
        Masked::Fail => reply::status(out, false),
        Masked::Silent => {}
        Masked::EmptyList => reply::list(out, std::iter::empty::<&[u8]>()),
        Masked::Zero => reply::u64_ok(out, 0),
        Masked::Counters => reply::blob(out, counters.render().as_bytes()),
        Masked::Close => return After::Close,
    }
    After::Continue
}

async fn add_int(service: &crate::service::Service, key: Vec<u8>, num: i32, out: &mut Vec<u8>) {
    let sum = service
        .update_unguarded(key, move |current| {
            let sum = match current {
                None => num,
                Some(bytes) => i32::from_le_bytes(bytes.try_into().ok()?).wrapping_add(num),
            };
            Some((sum.to_le_bytes().to_vec(), sum))
        })
        .await;
    match sum {
        // ttserver uses INT32_MIN as its error marker: stored, but reported as failure.
        Ok(Some(sum)) if sum != i32::MIN => reply::i32_ok(out, sum),
        _ => reply::status(out, false),
    }
}

async fn add_double(service: &crate::service::Service, key: Vec<u8>, num: f64, out: &mut Vec<u8>) {
    let sum = service
        .update_unguarded(key, move |current| {
            let sum = match current {
                None => num,
                Some(bytes) => f64::from_le_bytes(bytes.try_into().ok()?) + num,
            };
            Some((sum.to_le_bytes().to_vec(), sum))
        })
        .await;
    match sum {
        // A NaN result is stored but reported as failure, as ttserver does.
        Ok(Some(sum)) if !sum.is_nan() => reply::double_ok(out, sum),
        _ => reply::status(out, false),
    }
}

async fn regex_records(
    service: &crate::service::Service,
    pattern: &[u8],
    max: Option<usize>,
) -> Option<Vec<Vec<u8>>> {
    let pattern = std::str::from_utf8(c_string(pattern)).ok()?;
    let (pattern, insensitive) = match pattern.strip_prefix('*') {
        Some(rest) => (rest, true),
        None => (pattern, false),
    };
    let regex = regex::bytes::RegexBuilder::new(pattern)
        .case_insensitive(insensitive)
        .size_limit(1 << 20)
        .build()
        .ok()?;
    // Keys are matched as C strings (up to the first NUL), like ttserver.
    let found = service
        .live_records_matching(move |key| regex.is_match(c_string(key)), max)
        .await
        .ok()?;
    Some(found.into_iter().flat_map(|(k, v)| [k, v]).collect())
}

/// `restore` replays update logs, which tidemark does not keep: a directory holding
/// none is "nothing to do" (success, as ttserver); anything else fails.
fn restore(path: &[u8]) -> bool {
    let Ok(path) = std::str::from_utf8(c_string(path)) else {
        return false;
    };
    let Ok(entries) = std::fs::read_dir(path) else {
        return false;
    };
    !entries
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".ulog"))
}

/// The timestamp carried by a value's first `digits` bytes, in microseconds.
/// 10 digits = seconds, 13 = milliseconds, 16 = microseconds, 19 = nanoseconds.
pub fn prefix_timestamp(value: &[u8], digits: usize) -> Option<u64> {
    // Digit by digit, not checked and then parsed again by `str::parse` (75
    // instructions more per `tsput`, bench/callgrind.sh); overflow is refused as before.
    let n = value.get(..digits)?.iter().try_fold(0u64, |n, &d| {
        d.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
            .flatten()
    })?;
    match digits {
        10 => n.checked_mul(1_000_000),
        13 => n.checked_mul(1_000),
        16 => Some(n),
        19 => Some(n / 1_000),
        _ => None,
    }
}

/// Bytes up to the first NUL, as ttserver reads path-like strings.
fn c_string(bytes: &[u8]) -> &[u8] {
    bytes.split(|b| *b == 0).next().unwrap_or_default()
}

/// A misc numeric argument parsed like C's `atoi`/`strtoll`: optional sign, leading
/// digits, anything after ignored; no digits = 0.
fn c_long(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(c_string(bytes)).ok()?.trim_start();
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return Some(0);
    }
    digits.parse::<i64>().ok().map(|n| sign * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_timestamps_convert_to_microseconds() {
        assert_eq!(
            prefix_timestamp(b"1700000000rest", 10),
            Some(1_700_000_000_000_000)
        );
        assert_eq!(
            prefix_timestamp(b"1700000000123x", 13),
            Some(1_700_000_000_123_000)
        );
        assert_eq!(
            prefix_timestamp(b"1700000000123456", 16),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(
            prefix_timestamp(b"1700000000123456789", 19),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(prefix_timestamp(b"17000000001234", 16), None);
        assert_eq!(prefix_timestamp(b"170000000012345x", 16), None);
        assert_eq!(prefix_timestamp(b"+700000000", 10), None);
        assert_eq!(prefix_timestamp(b"1700000000", 12), None);
        assert_eq!(
            prefix_timestamp(b"9999999999999999999", 19),
            Some(9_999_999_999_999_999)
        );
    }

    #[test]
    fn c_long_parses_like_atoi() {
        assert_eq!(c_long(b"12"), Some(12));
        assert_eq!(c_long(b"-3x"), Some(-3));
        assert_eq!(c_long(b"abc"), Some(0));
        assert_eq!(c_long(b" 7"), Some(7));
    }
}
