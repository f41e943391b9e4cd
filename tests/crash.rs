//! Crash durability: with the default durability ("immediate"), a write acknowledged over
//! HTTP survives SIGKILL of the server at any moment.
//!
//! Each trial runs the real binary on loopback port 0 with a fresh data directory, drives
//! a write load from several keep-alive connections (every key and value distinct, a key
//! recorded only once its 2xx response has arrived), kills the process with SIGKILL a
//! random moment after the first acknowledgement, restarts it on the same directory and
//! reads every acknowledged key back. `scripts/crash-test.sh` runs the same proof with
//! more trials against a release build.

mod common;

use std::collections::hash_map::RandomState;
use std::ffi::OsStr;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::{Process, now_micros};

const TRIALS: usize = 3;
const WRITERS: usize = 8;

/// The binary on a fresh or reopened data directory.
fn start_server(data_dir: &Path) -> Process {
    Process::serve(
        [OsStr::new("--data-dir"), data_dir.as_os_str()],
        &[("TIDEMARK_DRAIN_DELAY", "0")],
    )
}

fn random_below(bound: u64) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(now_micros());
    hasher.finish() % bound
}

#[derive(Debug, Clone)]
struct Write {
    key: String,
    timestamp: u64,
    value: String,
}

/// One writer: distinct keys on one keep-alive connection until the first failure.
async fn writer(
    client: reqwest::Client,
    server: SocketAddr,
    prefix: String,
    acked: Arc<Mutex<Vec<Write>>>,
    first_ack: Arc<tokio::sync::Notify>,
    stop: Arc<AtomicBool>,
) {
    for n in 0.. {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let key = format!("{prefix}-{n}");
        let write = Write {
            value: format!("{key}:{:016x}", random_below(u64::MAX)),
            timestamp: now_micros(),
            key,
        };
        let sent = client
            .put(format!("http://{server}/keys/{}", write.key))
            .header("x-write-timestamp", write.timestamp)
            .header("content-type", "text/plain")
            .body(write.value.clone())
            .send()
            .await;
        let Ok(response) = sent else { return };
        let status = response.status();
        // The acknowledgement is the whole response, not just its status line.
        if response.bytes().await.is_err() {
            return;
        }
        if status.is_success() {
            acked.lock().expect("ack list").push(write);
            first_ack.notify_one();
        }
    }
}

async fn read_back(client: &reqwest::Client, server: &Process, writes: &[Write]) -> Vec<String> {
    let mut problems = Vec::new();
    for write in writes {
        let response = client
            .get(server.url(&format!("/keys/{}", write.key)))
            .send()
            .await
            .expect("the restarted server answers");
        let status = response.status();
        let stamp = response
            .headers()
            .get("x-write-timestamp")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.expect("a readable body");
        if status != 200 {
            problems.push(format!("{}: acknowledged but answered {status}", write.key));
        } else if body != write.value || stamp != Some(write.timestamp.to_string()) {
            problems.push(format!(
                "{}: came back as {body:?} at {stamp:?}, not {:?} at {}",
                write.key, write.value, write.timestamp
            ));
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_sigkill() {
    let started = Instant::now();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTP client");
    let mut total_acked = 0;
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = start_server(dir.path());
        let acked = Arc::new(Mutex::new(Vec::new()));
        let first_ack = Arc::new(tokio::sync::Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    client.clone(),
                    server.http,
                    format!("t{trial}-w{w}"),
                    acked.clone(),
                    first_ack.clone(),
                    stop.clone(),
                ))
            })
            .collect();

        // Kill mid-load: a random moment 100-600 ms after the first acknowledgement.
        tokio::time::timeout(Duration::from_secs(10), first_ack.notified())
            .await
            .unwrap_or_else(|_| panic!("no write acknowledged; log:\n{}", server.log()));
        let delay = Duration::from_millis(100 + random_below(500));
        tokio::time::sleep(delay).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.expect("writer task");
        }

        let writes = acked.lock().expect("ack list").clone();
        let restarted = start_server(dir.path());
        let problems = read_back(&client, &restarted, &writes).await;
        assert!(
            problems.is_empty(),
            "trial {trial}: {} of {} acknowledged writes did not survive SIGKILL after {delay:?}:\n{}\n\nlog after restart:\n{}",
            problems.len(),
            writes.len(),
            problems
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            restarted.log(),
        );
        eprintln!(
            "trial {trial}: SIGKILL {delay:?} after the first acknowledgement; {} acknowledged writes all read back",
            writes.len()
        );
        total_acked += writes.len();
    }
    assert!(total_acked > 0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the crash test must stay under 30 s; it took {:?}",
        started.elapsed()
    );
}
