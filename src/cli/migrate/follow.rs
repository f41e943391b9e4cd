//! `tidemark migrate --follow`: after the copy, stay attached to the master's update
//! log (`repl`, PROTOCOL.md §7) and apply each logged write through the same guarded
//! import the copy uses, a batch at a time.
//!
//! The feed is asked for from a master-clock timestamp taken before the copy began,
//! so every write the copy may have missed is replayed; replays are idempotent under
//! the guard (a repeat is `repeated`, an older write `stale`). putcat, putshl, addint
//! and adddouble are not re-applied on tidemark's side but read back from the master
//! with `get`: the master's current value is the operation's result (or a later one
//! that a later log record stamps again), which makes a replay harmless where
//! re-applying the operation would add twice.
//!
//! The position reached (the last applied record's timestamp, or the oldest value
//! still waiting for its `timestamp.<key>` record) is kept in tidemark itself, in the
//! record [`position_key`] under [`POSITION_PREFIX`], written through the guard after
//! each batch; a later `--follow` run resumes from it instead of copying again.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::Serialize;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, sleep, timeout};

use super::{EXT_TIMESTAMP_PREFIX, KeyError, Sink, Summary};
use crate::cli::Failure;
use crate::cli::progress::Tally;
use crate::config::{MigrateArgs, MigrateTimestamps};
use crate::record::{DEFAULT_CONTENT_TYPE, Record, State};
use crate::service::jsonl::ExportLine;
use crate::tyrant::client::{Connection, ConnectionError, LogItem, LogRecord, Request};
use crate::tyrant::commands::prefix_timestamp;

/// Keys tidemark keeps its own migration state under. They are ordinary records:
/// listings and exports show them.
pub const POSITION_PREFIX: &[u8] = b"_tidemark.migrate/";
/// A batch in hand is imported once the feed is quiet this long.
const IDLE_FLUSH: Duration = Duration::from_millis(200);
/// Consecutive failed reconnects after which the follow gives up (exit 1).
const RECONNECT_ATTEMPTS: u32 = 10;
/// First wait before reconnecting; doubled per failure up to [`RECONNECT_MAX_WAIT`].
const RECONNECT_FIRST_WAIT: Duration = Duration::from_millis(100);
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(5);
/// A feed silent this long (no record, no keep-alive) is taken as lost, as the C
/// replication client does.
const FEED_SILENCE: Duration = Duration::from_secs(60);
/// Taken off our own clock when the master's is unknown: replays are harmless,
/// records missed are not.
const LOCAL_CLOCK_MARGIN_MICROS: u64 = 60_000_000;
/// ext-keys: how long (in log time) a value waits for its `timestamp.<key>` record.
const PENDING_WAIT_MICROS: u64 = 5_000_000;

/// The record holding the follow position for `source` (`HOST:PORT`).
pub fn position_key(source: &str) -> Vec<u8> {
    [POSITION_PREFIX, b"follow/", source.as_bytes()].concat()
}

/// What the follow did, the `follow` object of the summary.
#[derive(Debug, Default, Serialize)]
pub struct FollowSummary {
    /// Started from a position stored by an earlier run (the copy was skipped).
    pub resumed: bool,
    /// The timestamp the feed was first asked for (µs, the master's clock).
    pub from_timestamp: u64,
    /// Where a next run resumes: the position stored last.
    pub position: u64,
    /// The master's server id.
    pub master_sid: u32,
    /// Log records received.
    pub log_records: u64,
    /// Records stored in tidemark.
    pub applied: u64,
    /// Refused by the guard as already stored (replays).
    pub repeated: u64,
    /// Refused by the guard as older than what tidemark holds.
    pub stale: u64,
    /// Refused by the guard: same timestamp, other content.
    pub tie: u64,
    /// Not applied: no readable timestamp (prefix digits, or no `timestamp.<key>`
    /// record within 5 s of log time).
    pub no_timestamp: u64,
    /// ext-keys: `timestamp.*` writes used as timestamps, not applied as data.
    pub timestamp_records: u64,
    /// Read back from the master (putcat, putshl, addint, adddouble) but gone.
    pub gone: u64,
    /// Refused by tidemark for another reason (limits, skew, store error).
    pub failed: u64,
    /// Logged with a failure status: nothing changed on the master.
    pub failed_at_source: u64,
    /// Logged commands that change no record (sync, optimize, misc, ...).
    pub ignored: u64,
    /// Records deleted to apply a vanish.
    pub vanished: u64,
    /// Times the feed was lost and opened again.
    pub reconnects: u64,
    /// `signal` or `follow-for`.
    pub stopped_by: &'static str,
    /// The first records not applied, with the reason.
    pub errors: Vec<KeyError>,
}

/// The master's clock (µs) from its `stat` `time` line, else ours a minute early.
pub(super) async fn master_clock(conn: &mut Connection) -> u64 {
    let local = super::now_micros().saturating_sub(LOCAL_CLOCK_MARGIN_MICROS);
    let Ok(text) = conn.stat().await else {
        return local;
    };
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|line| line.strip_prefix("time\t"))
        .and_then(parse_stat_time)
        .unwrap_or(local)
}

/// `1795629865.100705` (or whole seconds) as µs.
fn parse_stat_time(text: &str) -> Option<u64> {
    let (seconds, fraction) = text.trim().split_once('.').unwrap_or((text.trim(), ""));
    let seconds: u64 = seconds.parse().ok()?;
    let digits: String = fraction.chars().take(6).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let micros: u64 = format!("{digits:0<6}").parse().ok()?;
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

/// Every record of the target, to `each` (a full scan: an export of a running server,
/// or the store opened here).
async fn scan_target(
    sink: &Sink,
    mut each: impl FnMut(Vec<u8>, Record) + Send + Unpin,
) -> Result<(), Failure> {
    match sink {
        Sink::Server(admin) => {
            let mut lines = LineScanner {
                partial: Vec::new(),
                each: move |line: &[u8]| {
                    if let Ok(parsed) = serde_json::from_slice::<ExportLine>(line)
                        && let Ok((key, record)) = parsed.into_record(0)
                    {
                        each(key, record);
                    }
                },
            };
            admin.export(&mut lines, &Tally::default()).await
        }
        Sink::Local(service) => {
            let mut records = service.export(256);
            while let Some(item) = records.recv().await {
                let (key, record) =
                    item.map_err(|e| Failure(format!("cannot read the target: {e}")))?;
                each(key, record);
            }
            Ok(())
        }
    }
}

/// Hands each complete line written to it to `each`.
struct LineScanner<F> {
    partial: Vec<u8>,
    each: F,
}

impl<F: FnMut(&[u8]) + Unpin> AsyncWrite for LineScanner<F> {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.partial.extend_from_slice(buf);
        let mut start = 0;
        while let Some(end) = this.partial[start..].iter().position(|&b| b == b'\n') {
            (this.each)(&this.partial[start..start + end]);
            start += end + 1;
        }
        this.partial.drain(..start);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.partial.is_empty() {
            let rest = std::mem::take(&mut this.partial);
            (this.each)(&rest);
        }
        Poll::Ready(Ok(()))
    }
}

/// The position an earlier `--follow` run stored for `source`, if any.
pub(super) async fn stored_position(sink: &Sink, source: &str) -> Result<Option<u64>, Failure> {
    let wanted = position_key(source);
    let mut found = None;
    scan_target(sink, |key, record| {
        if key == wanted
            && let State::Live { value, .. } = &record.state
        {
            found = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
    })
    .await?;
    Ok(found)
}

/// Store `position` for `source` through the guard.
pub(super) async fn store_position(
    sink: &Sink,
    source: &str,
    position: u64,
) -> Result<(), Failure> {
    let record = Record::live(
        position,
        position.to_string().into_bytes(),
        "text/plain".to_string(),
        None,
    );
    let mut counts = Summary::default();
    sink.import(vec![(position_key(source), record)], &mut counts)
        .await?;
    if counts.failed > 0 {
        let why = counts.errors.first().map_or("", |e| e.error.as_str());
        return Err(Failure(format!("cannot store the follow position: {why}")));
    }
    Ok(())
}

/// A value waiting (ext-keys) for the `timestamp.<key>` record logged after it.
struct Pending {
    logged_at: u64,
    value: Vec<u8>,
}

struct Follower<'a> {
    args: &'a MigrateArgs,
    source: &'a str,
    sink: &'a Sink,
    report: FollowSummary,
    counts: Summary,
    batch: Vec<(Vec<u8>, Record)>,
    pending: HashMap<Vec<u8>, Pending>,
    /// Timestamp of the last record taken from the feed.
    last_seen: u64,
    /// The position stored last.
    stored: u64,
    reader: Option<Connection>,
}

/// Follow the master's feed from `from_timestamp` until a signal or `--follow-for`.
pub(super) async fn follow(
    args: &MigrateArgs,
    source: &str,
    sink: &Sink,
    from_timestamp: u64,
    resumed: bool,
) -> Result<FollowSummary, Failure> {
    let mut f = Follower {
        args,
        source,
        sink,
        report: FollowSummary {
            resumed,
            from_timestamp,
            position: from_timestamp,
            ..FollowSummary::default()
        },
        counts: Summary::default(),
        batch: Vec::new(),
        pending: HashMap::new(),
        last_seen: from_timestamp,
        stored: from_timestamp,
        reader: None,
    };
    let deadline = args.follow_for.map(|d| Instant::now() + d);
    let stop = stop_requested(deadline);
    tokio::pin!(stop);
    let mut failures = 0u32;
    let mut wait = RECONNECT_FIRST_WAIT;
    'follow: loop {
        let mut feed = match f.open_feed().await {
            Ok(feed) => {
                failures = 0;
                wait = RECONNECT_FIRST_WAIT;
                feed
            }
            Err(FeedError::Fatal(e)) => return Err(e),
            Err(FeedError::Lost(e)) => {
                failures += 1;
                if failures > RECONNECT_ATTEMPTS {
                    return Err(Failure(format!(
                        "lost the master's update log at {source} and {RECONNECT_ATTEMPTS} \
                         reconnects failed: {e}; everything up to {} is applied (run again \
                         to resume)",
                        f.stored
                    )));
                }
                eprintln!(
                    "tidemark migrate: the update log at {source} is unavailable ({e}); \
                     retrying in {wait:?}"
                );
                tokio::select! {
                    by = &mut stop => {
                        f.report.stopped_by = by;
                        break 'follow;
                    }
                    () = sleep(wait) => {}
                }
                wait = (wait * 2).min(RECONNECT_MAX_WAIT);
                continue;
            }
        };
        let mut heard = Instant::now();
        loop {
            tokio::select! {
                by = &mut stop => {
                    f.report.stopped_by = by;
                    break 'follow;
                }
                item = timeout(IDLE_FLUSH, feed.next_log_item()) => match item {
                    Err(_) if heard.elapsed() > FEED_SILENCE => {
                        f.flush().await?;
                        f.report.reconnects += 1;
                        eprintln!(
                            "tidemark migrate: the update log at {source} was silent for \
                             {FEED_SILENCE:?}; reconnecting"
                        );
                        continue 'follow;
                    }
                    Err(_) => f.flush().await?,
                    Ok(Ok(LogItem::KeepAlive)) => {
                        heard = Instant::now();
                        f.flush().await?;
                    }
                    Ok(Ok(LogItem::Update(record))) => {
                        heard = Instant::now();
                        f.take(record).await?;
                        if f.batch.len() >= args.batch as usize {
                            f.flush().await?;
                        }
                    }
                    Ok(Err(e)) => {
                        f.flush().await?;
                        f.report.reconnects += 1;
                        eprintln!("tidemark migrate: the update log at {source} broke off: {e}");
                        continue 'follow;
                    }
                },
            }
        }
    }
    f.finish().await
}

/// Resolves with the reason once SIGINT or SIGTERM arrives or `deadline` passes. The
/// signal handlers are installed here, before the future is first polled, so a signal
/// sent as soon as the feed is open is not lost.
fn stop_requested(deadline: Option<Instant>) -> impl std::future::Future<Output = &'static str> {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        let deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        #[cfg(unix)]
        let signalled = async {
            match (interrupt.as_mut(), terminate.as_mut()) {
                (Some(interrupt), Some(terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        #[cfg(not(unix))]
        let signalled = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        tokio::select! {
            () = signalled => "signal",
            () = deadline => "follow-for",
        }
    }
}

enum FeedError {
    /// Worth retrying: the master is away or the feed broke.
    Lost(ConnectionError),
    /// Retrying cannot help.
    Fatal(Failure),
}

impl Follower<'_> {
    /// Where the feed resumes: the oldest value still waiting for its timestamp
    /// record, else the last record taken.
    fn resume_at(&self) -> u64 {
        self.pending
            .values()
            .map(|p| p.logged_at)
            .min()
            .unwrap_or(self.last_seen)
            .max(1)
    }

    async fn open_feed(&mut self) -> Result<Connection, FeedError> {
        let mut conn = Connection::connect(self.source, self.args.source_timeout)
            .await
            .map_err(FeedError::Lost)?;
        let master = conn
            .repl(self.resume_at(), self.args.sid)
            .await
            .map_err(|e| match e {
                // ttserver closes without a word on a bad ts/sid, or when masked.
                ConnectionError::Closed => FeedError::Fatal(Failure(format!(
                    "the Tyrant server at {} closed the repl request: --sid {} is its \
                     own id, or repl is masked",
                    self.source, self.args.sid
                ))),
                other => FeedError::Lost(other),
            })?;
        if master == 0 {
            return Err(FeedError::Fatal(Failure(format!(
                "the Tyrant server at {} has server id 0: it runs without -sid (and \
                 -ulog), so it has no update log to follow",
                self.source
            ))));
        }
        self.report.master_sid = master;
        Ok(conn)
    }

    async fn take(&mut self, logged: LogRecord) -> Result<(), Failure> {
        self.report.log_records += 1;
        let at = logged.timestamp;
        self.last_seen = self.last_seen.max(at);
        let Ok((request, status)) = logged.request() else {
            self.report.ignored += 1;
            return Ok(());
        };
        let succeeded = status == 0;
        match request {
            Request::Put { key, value } | Request::PutKeep { key, value } if succeeded => {
                self.value(at, key, value);
            }
            // The master's result, not the operation: a replay stays harmless. Read
            // back whatever the status (addint's INT32_MIN and adddouble's NaN are
            // stored although answered 01).
            Request::PutCat { key, .. }
            | Request::PutShl { key, .. }
            | Request::AddInt { key, .. }
            | Request::AddDouble { key, .. } => match self.read_back(&key).await? {
                Some(value) => self.value(at, key, value),
                None => self.report.gone += 1,
            },
            Request::Out { key } if succeeded => self.delete(at, key),
            Request::Vanish if succeeded => self.vanish(at).await?,
            Request::Put { .. }
            | Request::PutKeep { .. }
            | Request::Out { .. }
            | Request::Vanish => {
                self.report.failed_at_source += 1;
            }
            _ => self.report.ignored += 1,
        }
        self.expire_pending(at);
        Ok(())
    }

    /// The master's current value of `key`, on a connection of its own.
    async fn read_back(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Failure> {
        for _ in 0..2 {
            let conn = match self.reader.as_mut() {
                Some(conn) => conn,
                None => {
                    let conn = Connection::connect(self.source, self.args.source_timeout)
                        .await
                        .map_err(|e| Failure(format!("cannot read back from the master: {e}")))?;
                    self.reader.insert(conn)
                }
            };
            match conn.get(key.to_vec()).await {
                Ok(value) => return Ok(value),
                // Once more on a fresh connection.
                Err(_) => self.reader = None,
            }
        }
        Err(Failure(format!(
            "cannot read back {:?} from the master at {}",
            String::from_utf8_lossy(key),
            self.source
        )))
    }

    fn live(&mut self, key: Vec<u8>, value: Vec<u8>, timestamp: u64) {
        self.batch.push((
            key,
            Record::live(timestamp, value, DEFAULT_CONTENT_TYPE.to_string(), None),
        ));
    }

    fn no_timestamp(&mut self, key: &[u8], why: String) {
        self.counts.no_timestamp += 1;
        self.counts.not_copied(key, why);
    }

    fn value(&mut self, logged_at: u64, key: Vec<u8>, value: Vec<u8>) {
        let digits = self.args.tyrant_ts_digits;
        match self.args.timestamps {
            MigrateTimestamps::Now => self.live(key, value, logged_at),
            MigrateTimestamps::Prefix => match prefix_timestamp(&value, digits) {
                Some(timestamp) => self.live(key, value, timestamp),
                None => self.no_timestamp(
                    &key,
                    format!("no timestamp: the value does not start with {digits} digits"),
                ),
            },
            MigrateTimestamps::ExtKeys => {
                if let Some(data_key) = key.strip_prefix(EXT_TIMESTAMP_PREFIX) {
                    self.report.timestamp_records += 1;
                    if let Some(held) = self.pending.remove(data_key) {
                        match prefix_timestamp(&value, digits) {
                            Some(timestamp) => self.live(data_key.to_vec(), held.value, timestamp),
                            None => self.no_timestamp(
                                data_key,
                                format!(
                                    "no timestamp: its timestamp.<key> record does not start \
                                     with {digits} digits"
                                ),
                            ),
                        }
                    }
                } else if self
                    .pending
                    .insert(key.clone(), Pending { logged_at, value })
                    .is_some()
                {
                    self.no_timestamp(
                        &key,
                        "no timestamp: written again before its timestamp.<key> record".into(),
                    );
                }
            }
        }
    }

    fn delete(&mut self, logged_at: u64, key: Vec<u8>) {
        if self.args.timestamps == MigrateTimestamps::ExtKeys
            && key.starts_with(EXT_TIMESTAMP_PREFIX)
        {
            self.report.timestamp_records += 1;
            return;
        }
        self.batch
            .push((key, Record::tombstone(logged_at, logged_at)));
    }

    /// ext-keys: values whose timestamp record has not come within the wait.
    fn expire_pending(&mut self, now: u64) {
        let expired: Vec<Vec<u8>> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.logged_at) > PENDING_WAIT_MICROS)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            self.pending.remove(&key);
            self.no_timestamp(
                &key,
                "no timestamp: no timestamp.<key> record logged within 5 s".into(),
            );
        }
    }

    /// vanish: delete, as of `logged_at`, every record tidemark holds (its own
    /// position records excepted); the guard keeps what was written after.
    async fn vanish(&mut self, logged_at: u64) -> Result<(), Failure> {
        self.flush().await?;
        self.pending.clear();
        let mut keys = Vec::new();
        scan_target(self.sink, |key, record| {
            if matches!(record.state, State::Live { .. }) && !key.starts_with(POSITION_PREFIX) {
                keys.push(key);
            }
        })
        .await?;
        for chunk in keys.chunks(self.args.batch as usize) {
            let records = chunk
                .iter()
                .map(|key| (key.clone(), Record::tombstone(logged_at, logged_at)))
                .collect();
            let before = self.counts.copied;
            self.sink.import(records, &mut self.counts).await?;
            self.report.vanished += self.counts.copied - before;
        }
        Ok(())
    }

    /// Import the batch in hand, then store the position it reached.
    async fn flush(&mut self) -> Result<(), Failure> {
        if !self.batch.is_empty() {
            let records = std::mem::take(&mut self.batch);
            self.sink.import(records, &mut self.counts).await?;
        }
        let position = self.resume_at();
        if position > self.stored {
            store_position(self.sink, self.source, position).await?;
            self.stored = position;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<FollowSummary, Failure> {
        self.flush().await?;
        // Still waiting: counted, and left before the stored position, so that the
        // next run reads them again.
        let waiting: Vec<Vec<u8>> = self.pending.keys().cloned().collect();
        for key in waiting {
            self.no_timestamp(
                &key,
                "no timestamp: the follow stopped before its timestamp.<key> record".into(),
            );
        }
        let c = self.counts;
        let mut report = self.report;
        report.position = self.stored;
        report.applied = c.copied - report.vanished;
        report.repeated = c.repeated;
        report.stale = c.stale;
        report.tie = c.tie;
        report.no_timestamp = c.no_timestamp;
        report.failed = c.failed;
        report.errors = c.errors;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_time_reads_as_micros() {
        assert_eq!(
            parse_stat_time("1795629865.100705"),
            Some(1_795_629_865_100_705)
        );
        assert_eq!(parse_stat_time("1795629865"), Some(1_795_629_865_000_000));
        assert_eq!(parse_stat_time("17.5"), Some(17_500_000));
        assert_eq!(parse_stat_time("x"), None);
    }
}
