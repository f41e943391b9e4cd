//! `tidemark-bench`: a closed-loop load generator for tidemark's two front doors and,
//! for comparison, Redis — the same minimal client for every target, so the numbers
//! differ by the server, not by the client library.
//!
//! It only talks to loopback addresses unless told otherwise (`--allow-remote`), and
//! every run is bounded in time (`--duration`, `--warmup`, I/O timeouts) and
//! optionally in count (`--max-ops`). See docs/BENCHMARKS.md for how the published
//! numbers were made with it (`bench/compare.sh`).

mod hist;
mod load;
mod proto;

pub use crate::config::{BenchArgs, BenchOp, BenchTarget};

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::ValueEnum;
use serde::Serialize;

use load::{Plan, Shared, Tally};
use proto::Op;

fn resolve_op(target: BenchTarget, op: BenchOp) -> Result<Op, String> {
    use BenchOp as N;
    Ok(match (target, op) {
        (BenchTarget::TidemarkHttp, N::Put | N::GuardedPut) => Op::HttpPut,
        (BenchTarget::TidemarkHttp, N::Get) => Op::HttpGet,
        (BenchTarget::Tyrant, N::Put | N::PlainPut) => Op::TyrantPut,
        (BenchTarget::Tyrant, N::GuardedPut) => Op::TyrantGuardedPut,
        (BenchTarget::Tyrant, N::Get) => Op::TyrantGet,
        (BenchTarget::Redis, N::Set | N::Put | N::PlainPut) => Op::RedisSet,
        (BenchTarget::Redis, N::Get) => Op::RedisGet,
        (BenchTarget::Redis, N::GuardedSet | N::GuardedPut) => Op::RedisGuardedSet,
        (target, op) => {
            return Err(format!(
                "--op {} is not available for --target {}",
                op.to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
                target
                    .to_possible_value()
                    .map(|v| v.get_name().to_string())
                    .unwrap_or_default(),
            ));
        }
    })
}

async fn resolve_addr(addr: &str, allow_remote: bool) -> Result<SocketAddr, String> {
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| format!("cannot resolve --addr {addr}: {e}"))?
        .collect();
    let Some(first) = candidates.first().copied() else {
        return Err(format!("--addr {addr} resolves to nothing"));
    };
    // Every resolved address must be loopback: a name that resolves to both must not
    // let traffic leave the machine by accident.
    if !allow_remote && !candidates.iter().all(|a| a.ip().is_loopback()) {
        return Err(format!(
            "--addr {addr} is not a loopback address ({candidates:?}); \
             pass --allow-remote to load a server on another host"
        ));
    }
    Ok(first)
}

/// CPU time (user + system, all threads) this process has used, from /proc/self/stat.
/// Linux only (None elsewhere); clock ticks are taken as 1/100 s, Linux's USER_HZ on
/// every mainstream architecture. Lets bench/compare.sh tell the client's share of the
/// machine from the server's and from unrelated load.
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may contain spaces; fields after its ')' are plain.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file, 12th and 13th after ')'.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

#[derive(Serialize)]
struct PrefillReport {
    keys: u64,
    ok: u64,
    failed: u64,
    elapsed_s: f64,
}

#[derive(Serialize)]
struct Report {
    label: String,
    target: BenchTarget,
    op: String,
    /// What exactly went over the wire, e.g. "guarded-put (ext tsput)".
    operation: &'static str,
    addr: String,
    connections: u32,
    pipeline: u32,
    threads: u32,
    keys: u64,
    value_size: u32,
    warmup_s: f64,
    duration_s: f64,
    /// From the start of the measured window to the last measured reply.
    elapsed_s: f64,
    ops: u64,
    ops_per_sec: f64,
    ok: u64,
    stale: u64,
    miss: u64,
    error: u64,
    /// Microseconds, from the log-bucket histogram (±1.6 %).
    latency_us: Latency,
    /// Load requests went to this many keys spread over the keyspace (0: to any key).
    hot_keys: u64,
    /// Width of the throughput windows, seconds.
    window_s: f64,
    /// Measured replies per second in each whole window of the measured time, in order.
    windows_ops_per_sec: Vec<f64>,
    /// The slowest and the median window (ops/s), and slowest / median.
    window_min: f64,
    window_median: f64,
    window_min_over_median: f64,
    prefill: Option<PrefillReport>,
    /// Wall time of the load phase (warm-up + measured + drain), without the prefill.
    load_wall_s: f64,
    /// CPU this client used during the load phase (Linux; null elsewhere).
    client_cpu_s: Option<f64>,
    first_error: Option<String>,
}

fn op_label(op: Op) -> &'static str {
    match op {
        Op::HttpPut => "put (guarded PUT)",
        Op::HttpGet => "get",
        Op::TyrantPut => "put (plain)",
        Op::TyrantGuardedPut => "guarded-put (ext tsput)",
        Op::TyrantGet => "get",
        Op::RedisSet => "set",
        Op::RedisGet => "get",
        Op::RedisGuardedSet => "guarded-set (EVALSHA)",
    }
}

/// `tidemark bench` (and its alias binary `tidemark-bench`): run one measurement.
pub fn run(args: &BenchArgs) -> ExitCode {
    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads as usize)
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidemark bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(measure(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tidemark bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(args: &BenchArgs) -> Result<ExitCode, String> {
    let op = resolve_op(args.target, args.op)?;
    let addr = resolve_addr(&args.addr, args.allow_remote).await?;
    if args.duration.is_zero() && !args.prefill {
        return Err("--duration 0 only makes sense with --prefill".into());
    }
    let script_sha = if matches!(op, Op::RedisGuardedSet) {
        load::redis_load_script(addr, proto::GUARD_SCRIPT, args.io_timeout).await?
    } else {
        String::new()
    };
    let make_shared = |op: Op| Shared {
        op,
        addr,
        connections: args.connections as usize,
        pipeline: args.pipeline as usize,
        keys: args.keys,
        hot_keys: args.hot_keys,
        value: vec![b'v'; args.value_size as usize],
        script_sha: script_sha.clone(),
        io_timeout: args.io_timeout,
        next_timestamp: AtomicU64::new(now_micros()),
        issued: AtomicU64::new(0),
    };

    let prefill = if args.prefill {
        let prefill_op = op.prefill_op();
        if !args.json {
            eprintln!(
                "prefill: writing {} keys with {} over {} connections…",
                args.keys,
                op_label(prefill_op),
                args.connections
            );
        }
        let started = Instant::now();
        let tally = load::run(Arc::new(make_shared(prefill_op)), Plan::Prefill).await;
        Some(PrefillReport {
            keys: args.keys,
            ok: tally.ok,
            failed: args.keys.saturating_sub(tally.ok),
            elapsed_s: started.elapsed().as_secs_f64(),
        })
    } else {
        None
    };

    // The load's timestamps start after the prefill's, so the guard accepts them.
    let shared = Arc::new(make_shared(op));
    let load_started = Instant::now();
    let cpu_before = process_cpu_seconds();
    let tally = if args.duration.is_zero() {
        None
    } else {
        let measure_start = Instant::now() + args.warmup;
        let plan = Plan::Load {
            measure_start,
            measure_end: measure_start + args.duration,
            max_ops: args.max_ops,
            window: args.window,
        };
        let tally = load::run(shared, plan).await;
        let elapsed = tally
            .last_reply
            .map(|at| at.saturating_duration_since(measure_start))
            .filter(|d| !d.is_zero())
            .unwrap_or(args.duration);
        Some((tally, elapsed))
    };
    let load_wall = load_started.elapsed();
    let client_cpu = process_cpu_seconds()
        .zip(cpu_before)
        .map(|(after, before)| after - before);

    let mut report = build_report(args, op, prefill, tally.as_ref());
    report.load_wall_s = load_wall.as_secs_f64();
    report.client_cpu_s = client_cpu;
    if args.json {
        match serde_json::to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => return Err(format!("cannot serialise the report: {e}")),
        }
    } else {
        print_human(&report);
    }
    let prefill_failed = report.prefill.as_ref().is_some_and(|p| p.failed > 0);
    let nothing_measured = tally.is_some() && report.ops == 0;
    Ok(if prefill_failed || nothing_measured {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn build_report(
    args: &BenchArgs,
    op: Op,
    prefill: Option<PrefillReport>,
    tally: Option<&(Tally, Duration)>,
) -> Report {
    let us = |ns: u64| ns as f64 / 1000.0;
    let window_s = args.window.as_secs_f64();
    let windows: Vec<f64> = match tally {
        Some((t, _)) if window_s > 0.0 => {
            // Windows nobody replied in are stalls too: count them as zeros.
            let whole = (args.duration.as_secs_f64() / window_s).floor() as usize;
            let mut counts = t.windows.clone();
            counts.resize(whole.max(counts.len()), 0);
            counts.iter().map(|&n| n as f64 / window_s).collect()
        }
        _ => Vec::new(),
    };
    let (window_min, window_median) = window_stats(&windows);
    let (ops, elapsed, latency, counts, first_error) = match tally {
        Some((t, elapsed)) => (
            t.ops(),
            elapsed.as_secs_f64(),
            Latency {
                p50: us(t.latency_ns.quantile(0.50)),
                p90: us(t.latency_ns.quantile(0.90)),
                p99: us(t.latency_ns.quantile(0.99)),
                p999: us(t.latency_ns.quantile(0.999)),
                max: us(t.latency_ns.max()),
                mean: t.latency_ns.mean() / 1000.0,
            },
            (t.ok, t.stale, t.miss, t.error),
            t.first_error.clone(),
        ),
        None => (
            0,
            0.0,
            Latency {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            },
            (0, 0, 0, 0),
            None,
        ),
    };
    Report {
        label: args.label.clone(),
        target: args.target,
        op: args
            .op
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default(),
        operation: op_label(op),
        addr: args.addr.clone(),
        connections: args.connections,
        pipeline: args.pipeline,
        threads: args.threads,
        keys: args.keys,
        value_size: args.value_size,
        warmup_s: args.warmup.as_secs_f64(),
        duration_s: args.duration.as_secs_f64(),
        elapsed_s: elapsed,
        ops,
        ops_per_sec: if elapsed > 0.0 {
            ops as f64 / elapsed
        } else {
            0.0
        },
        ok: counts.0,
        stale: counts.1,
        miss: counts.2,
        error: counts.3,
        latency_us: latency,
        hot_keys: args.hot_keys,
        window_s,
        windows_ops_per_sec: windows,
        window_min,
        window_median,
        window_min_over_median: if window_median > 0.0 {
            window_min / window_median
        } else {
            0.0
        },
        prefill,
        load_wall_s: 0.0,
        client_cpu_s: None,
        first_error,
    }
}

/// The slowest and the median of `windows` (0 for none; the upper median of an even
/// count).
fn window_stats(windows: &[f64]) -> (f64, f64) {
    let mut sorted = windows.to_vec();
    sorted.sort_by(f64::total_cmp);
    match (sorted.first(), sorted.get(sorted.len() / 2)) {
        (Some(&min), Some(&median)) => (min, median),
        _ => (0.0, 0.0),
    }
}

fn print_human(r: &Report) {
    let target = r
        .target
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default();
    println!(
        "target {target}  op {}  addr {}  connections {}  pipeline {}  threads {}",
        r.operation, r.addr, r.connections, r.pipeline, r.threads
    );
    if let Some(p) = &r.prefill {
        println!(
            "prefill   {} keys in {:.2}s ({} failed)",
            p.keys, p.elapsed_s, p.failed
        );
    }
    if r.duration_s == 0.0 {
        return;
    }
    println!(
        "measured  {} ops in {:.2}s after {:.1}s warm-up: {:.0} ops/s",
        r.ops, r.elapsed_s, r.warmup_s, r.ops_per_sec
    );
    println!(
        "outcomes  ok {}  stale {}  miss {}  error {}",
        r.ok, r.stale, r.miss, r.error
    );
    let l = &r.latency_us;
    println!(
        "latency   p50 {:.1}µs  p90 {:.1}µs  p99 {:.1}µs  p99.9 {:.1}µs  max {:.1}µs  mean {:.1}µs",
        l.p50, l.p90, l.p99, l.p999, l.max, l.mean
    );
    if !r.windows_ops_per_sec.is_empty() {
        println!(
            "windows   {} of {:.1}s: slowest {:.0} ops/s, median {:.0} ops/s ({:.2})",
            r.windows_ops_per_sec.len(),
            r.window_s,
            r.window_min,
            r.window_median,
            r.window_min_over_median
        );
    }
    if let Some(cpu) = r.client_cpu_s {
        println!(
            "client    {:.2}s CPU over {:.2}s of load ({:.0}% of one core)",
            cpu,
            r.load_wall_s,
            100.0 * cpu / r.load_wall_s.max(1e-9)
        );
    }
    if let Some(e) = &r.first_error {
        println!("first error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_per_target() {
        assert_eq!(
            resolve_op(BenchTarget::TidemarkHttp, BenchOp::Put),
            Ok(Op::HttpPut)
        );
        assert_eq!(
            resolve_op(BenchTarget::Tyrant, BenchOp::GuardedPut),
            Ok(Op::TyrantGuardedPut)
        );
        assert_eq!(
            resolve_op(BenchTarget::Redis, BenchOp::GuardedSet),
            Ok(Op::RedisGuardedSet)
        );
        assert!(resolve_op(BenchTarget::TidemarkHttp, BenchOp::PlainPut).is_err());
        assert!(resolve_op(BenchTarget::Tyrant, BenchOp::Set).is_err());
    }

    #[test]
    fn window_stats_take_the_slowest_and_the_median() {
        assert_eq!(window_stats(&[]), (0.0, 0.0));
        assert_eq!(window_stats(&[5.0, 1.0, 3.0]), (1.0, 3.0));
        assert_eq!(window_stats(&[4.0, 2.0]), (2.0, 4.0));
    }

    #[tokio::test]
    async fn only_loopback_without_allow_remote() {
        assert!(resolve_addr("127.0.0.1:1", false).await.is_ok());
        assert!(resolve_addr("[::1]:1", false).await.is_ok());
        assert!(resolve_addr("192.0.2.1:1", false).await.is_err());
        assert!(resolve_addr("192.0.2.1:1", true).await.is_ok());
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        BenchArgs::command().debug_assert();
    }
}
