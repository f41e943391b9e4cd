//! The closed loop: each connection is one tokio task with its own TCP socket that
//! keeps `pipeline` requests outstanding, sends the next one as soon as a reply
//! arrives, and times every request from just before it is written to the read that
//! completed its reply.
//!
//! Every wait is bounded (connect, write and read all time out), the load phase stops
//! issuing at its deadline, and a connection that loses framing or times out is
//! dropped and reopened: its in-flight requests count as errors, never as a panic.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::hist::Histogram;
use super::proto::{Op, Outcome, RequestParts};

/// What every connection of a run shares.
pub struct Shared {
    pub op: Op,
    pub addr: SocketAddr,
    pub connections: usize,
    pub pipeline: usize,
    pub keys: u64,
    /// Load requests go to this many keys, spread evenly over `keys` (0 = to any key).
    pub hot_keys: u64,
    pub value: Vec<u8>,
    pub script_sha: String,
    /// Longest wait for a connect, a write or the next bytes of a reply.
    pub io_timeout: Duration,
    /// Next guarded-write timestamp (µs). One counter for all connections makes every
    /// timestamp of a run unique and increasing, so the guard should accept them; the
    /// rare refusal happens when two connections write one key and the later stamp
    /// overtakes the earlier on the way (that is counted as stale, as it should be).
    pub next_timestamp: AtomicU64,
    /// Measured requests issued so far, for `--max-ops`.
    pub issued: AtomicU64,
}

/// Which requests a connection sends and which of them it measures.
#[derive(Clone, Copy)]
pub enum Plan {
    /// Write every key once: connection `i` of `n` writes keys i, i+n, i+2n, …
    Prefill,
    /// Random keys until `measure_end`; requests sent before `measure_start` are
    /// warm-up and not recorded.
    Load {
        measure_start: Instant,
        measure_end: Instant,
        /// 0 = no cap.
        max_ops: u64,
        /// Width of the throughput windows the tally counts replies in.
        window: Duration,
    },
}

/// One connection's tally (merged across connections at the end).
pub struct Tally {
    pub latency_ns: Histogram,
    pub ok: u64,
    pub stale: u64,
    pub miss: u64,
    pub error: u64,
    /// When the last measured reply arrived.
    pub last_reply: Option<Instant>,
    pub first_error: Option<String>,
    /// Measured replies per window of the measured time (window `i` starts `i`
    /// widths after the measured time does); replies after its end are not in any.
    pub windows: Vec<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            windows: Vec::new(),
            latency_ns: Histogram::new(),
            ok: 0,
            stale: 0,
            miss: 0,
            error: 0,
            last_reply: None,
            first_error: None,
        }
    }

    pub fn ops(&self) -> u64 {
        self.ok + self.stale + self.miss + self.error
    }

    pub fn merge(&mut self, other: Tally) {
        self.latency_ns.merge(&other.latency_ns);
        self.ok += other.ok;
        self.stale += other.stale;
        self.miss += other.miss;
        self.error += other.error;
        self.last_reply = self.last_reply.max(other.last_reply);
        if self.windows.len() < other.windows.len() {
            self.windows.resize(other.windows.len(), 0);
        }
        for (mine, theirs) in self.windows.iter_mut().zip(&other.windows) {
            *mine += theirs;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// Count one measured reply that arrived at `now` in its window.
    fn count_in_window(&mut self, plan: Plan, now: Instant) {
        let Plan::Load {
            measure_start,
            measure_end,
            window,
            ..
        } = plan
        else {
            return;
        };
        if now >= measure_end || window.is_zero() {
            return;
        }
        let at = now.saturating_duration_since(measure_start).as_nanos() / window.as_nanos();
        let Ok(at) = usize::try_from(at) else { return };
        // Only whole windows: a last one cut short by the end would read as a stall.
        let whole = measure_end
            .saturating_duration_since(measure_start)
            .as_nanos()
            / window.as_nanos();
        if at as u128 >= whole {
            return;
        }
        if self.windows.len() <= at {
            self.windows.resize(at + 1, 0);
        }
        self.windows[at] += 1;
    }

    fn note_error(&mut self, why: String) {
        if self.first_error.is_none() {
            self.first_error = Some(why);
        }
    }
}

/// Runs `plan` on every connection and merges their tallies.
pub async fn run(shared: Arc<Shared>, plan: Plan) -> Tally {
    let tasks: Vec<_> = (0..shared.connections)
        .map(|id| tokio::spawn(connection(shared.clone(), plan, id)))
        .collect();
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(tally) => total.merge(tally),
            Err(e) => {
                // A panicking connection task is a bug in this tool; report it loudly
                // as an error instead of aborting the whole run.
                total.error += 1;
                total.note_error(format!("connection task failed: {e}"));
            }
        }
    }
    total
}

/// Where a connection's next key comes from.
struct Keys {
    plan: Plan,
    /// Prefill: next key index to write.
    next: u64,
    step: u64,
    /// Load: xorshift64* state. A tiny PRNG in the tool keeps it dependency-free and
    /// costs nanoseconds; the keys only need to be spread, not unpredictable.
    rng: u64,
    /// Set once the run is over for this connection (deadline or cap reached).
    done: bool,
}

impl Keys {
    fn new(plan: Plan, id: usize, connections: usize) -> Self {
        let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(id as u64 + 1) | 1;
        Self {
            plan,
            next: id as u64,
            step: connections as u64,
            rng: seed,
            done: false,
        }
    }

    /// The next key to request and whether its reply is measured; `None` when this
    /// connection must not start another request.
    fn next(&mut self, shared: &Shared, now: Instant) -> Option<(u64, bool)> {
        if self.done {
            return None;
        }
        match self.plan {
            Plan::Prefill => {
                if self.next >= shared.keys {
                    self.done = true;
                    return None;
                }
                let key = self.next;
                self.next += self.step;
                Some((key, true))
            }
            Plan::Load {
                measure_start,
                measure_end,
                max_ops,
                ..
            } => {
                if now >= measure_end {
                    self.done = true;
                    return None;
                }
                let measured = now >= measure_start;
                if measured
                    && max_ops > 0
                    && shared.issued.fetch_add(1, Ordering::Relaxed) >= max_ops
                {
                    self.done = true;
                    return None;
                }
                self.rng ^= self.rng >> 12;
                self.rng ^= self.rng << 25;
                self.rng ^= self.rng >> 27;
                let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
                Some((pick(r, shared.keys, shared.hot_keys), measured))
            }
        }
    }
}

/// Key index for the random number `r`: uniform over `keys`, or over a hot set of
/// `hot` keys spread evenly over them (every `keys / hot`-th key), so the hot keys sit
/// in as many different places of an ordered store as they would at random.
fn pick(r: u64, keys: u64, hot: u64) -> u64 {
    if hot == 0 || hot >= keys {
        return r % keys;
    }
    (r % hot) * (keys / hot)
}

/// Key `index` as sent on the wire: `bk` and ten digits, so it needs no escaping in
/// a URL path and every target stores the same bytes.
pub fn key_name(index: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(format!("bk{index:010}").as_bytes());
}

async fn connection(shared: Arc<Shared>, plan: Plan, id: usize) -> Tally {
    let mut tally = Tally::new();
    let mut keys = Keys::new(plan, id, shared.connections);
    let mut consecutive_failures = 0u32;
    while !keys.done {
        if let Plan::Load { measure_end, .. } = plan
            && Instant::now() >= measure_end
        {
            break;
        }
        let mut conn = Conn::new();
        let result = match timeout(shared.io_timeout, TcpStream::connect(shared.addr)).await {
            Ok(Ok(stream)) => {
                // Small requests must leave at once, as every real client of these
                // protocols sets it.
                let _ = stream.set_nodelay(true);
                conn.drive(&shared, &mut keys, &mut tally, stream).await
            }
            Ok(Err(e)) => Err(format!("connect {}: {e}", shared.addr)),
            Err(_) => Err(format!("connect {}: timed out", shared.addr)),
        };
        match result {
            Ok(()) => break,
            Err(why) => {
                // Requests that never got their reply are failures of this run.
                tally.error += conn.inflight.iter().filter(|(_, m)| *m).count() as u64;
                if conn.inflight.is_empty() {
                    // A failed connect is one error, so a dead server cannot look fast.
                    tally.error += 1;
                }
                tally.note_error(why);
                consecutive_failures += 1;
                if matches!(plan, Plan::Prefill) && consecutive_failures >= 5 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tally
}

/// One socket's worth of state; rebuilt on reconnect.
struct Conn {
    /// Send time of each outstanding request, oldest first, and whether it is measured.
    inflight: VecDeque<(Instant, bool)>,
    out: Vec<u8>,
    input: Vec<u8>,
    key: Vec<u8>,
}

impl Conn {
    fn new() -> Self {
        Self {
            inflight: VecDeque::new(),
            out: Vec::with_capacity(16 << 10),
            input: Vec::with_capacity(64 << 10),
            key: Vec::with_capacity(16),
        }
    }

    /// Tops the pipeline up to its depth with new requests in `out`.
    fn issue(&mut self, shared: &Shared, keys: &mut Keys) {
        while self.inflight.len() < shared.pipeline {
            let now = Instant::now();
            let Some((index, measured)) = keys.next(shared, now) else {
                break;
            };
            key_name(index, &mut self.key);
            let timestamp = if shared.op.is_guarded() {
                shared.next_timestamp.fetch_add(1, Ordering::Relaxed)
            } else {
                0
            };
            let parts = RequestParts {
                key: &self.key,
                timestamp,
                value: &shared.value,
                script_sha: &shared.script_sha,
            };
            shared.op.encode(&parts, &mut self.out);
            self.inflight.push_back((now, measured));
        }
    }

    async fn drive(
        &mut self,
        shared: &Shared,
        keys: &mut Keys,
        tally: &mut Tally,
        mut stream: TcpStream,
    ) -> Result<(), String> {
        let io = shared.io_timeout;
        self.issue(shared, keys);
        loop {
            if !self.out.is_empty() {
                match timeout(io, stream.write_all(&self.out)).await {
                    Ok(Ok(())) => self.out.clear(),
                    Ok(Err(e)) => return Err(format!("write: {e}")),
                    Err(_) => return Err("write timed out".into()),
                }
            }
            if self.inflight.is_empty() {
                return Ok(());
            }
            self.input.reserve(16 << 10);
            let read = match timeout(io, stream.read_buf(&mut self.input)).await {
                Ok(Ok(0)) => return Err("server closed the connection".into()),
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(format!("read: {e}")),
                Err(_) => return Err(format!("no reply within {io:?}")),
            };
            debug_assert!(read > 0);
            let now = Instant::now();
            let mut used = 0;
            while let Some((outcome, len)) = shared
                .op
                .decode(&self.input[used..])
                .map_err(|e| e.0.clone())?
            {
                used += len;
                let Some((sent, measured)) = self.inflight.pop_front() else {
                    return Err("reply to a request that was never sent".into());
                };
                if measured {
                    tally
                        .latency_ns
                        .record(u64::try_from((now - sent).as_nanos()).unwrap_or(u64::MAX));
                    match outcome {
                        Outcome::Ok => tally.ok += 1,
                        Outcome::Stale => tally.stale += 1,
                        Outcome::Miss => tally.miss += 1,
                        Outcome::Error => tally.error += 1,
                    }
                    tally.last_reply = Some(now);
                    tally.count_in_window(keys.plan, now);
                }
            }
            self.input.drain(..used);
            self.issue(shared, keys);
        }
    }
}

/// Loads the guard script once (`SCRIPT LOAD`) and returns its SHA1 for EVALSHA.
pub async fn redis_load_script(
    addr: SocketAddr,
    script: &str,
    io: Duration,
) -> Result<String, String> {
    let mut stream = timeout(io, TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let mut request = Vec::new();
    let args: [&[u8]; 3] = [b"SCRIPT", b"LOAD", script.as_bytes()];
    request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    timeout(io, stream.write_all(&request))
        .await
        .map_err(|_| "write timed out".to_string())?
        .map_err(|e| format!("write: {e}"))?;
    let mut input = Vec::new();
    loop {
        let n = timeout(io, stream.read_buf(&mut input))
            .await
            .map_err(|_| "SCRIPT LOAD: no reply".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("SCRIPT LOAD: connection closed".into());
        }
        match super::proto::resp_reply(&input).map_err(|e| e.0)? {
            None => continue,
            Some((super::proto::Resp::Bulk(Some(sha)), _)) => {
                return Ok(String::from_utf8_lossy(sha).into_owned());
            }
            Some((other, _)) => return Err(format!("SCRIPT LOAD answered {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hot_set_is_spread_over_the_keyspace() {
        let picked: std::collections::BTreeSet<u64> =
            (0..10_000u64).map(|r| pick(r, 1_000, 10)).collect();
        assert_eq!(
            picked.into_iter().collect::<Vec<_>>(),
            (0..10).map(|i| i * 100).collect::<Vec<_>>()
        );
        assert_eq!(pick(12_345, 1_000, 0), 345);
        assert_eq!(pick(12_345, 1_000, 5_000), 345);
    }

    #[test]
    fn replies_count_in_whole_windows_only() {
        let start = Instant::now();
        let plan = Plan::Load {
            measure_start: start,
            measure_end: start + Duration::from_millis(2_500),
            max_ops: 0,
            window: Duration::from_secs(1),
        };
        let mut tally = Tally::new();
        for ms in [0, 999, 1_000, 2_100, 2_600] {
            tally.count_in_window(plan, start + Duration::from_millis(ms));
        }
        assert_eq!(tally.windows, vec![2, 1]);
    }
}
