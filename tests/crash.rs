//! Crash durability: with the default durability ("immediate"), a write acknowledged over
//! HTTP survives SIGKILL of the server at any moment.
//!
//! Each trial runs the real binary on loopback port 0 with a fresh data directory, drives
//! a write load from several keep-alive connections (every key and value distinct, a key
//! recorded only once its 2xx response has arrived), kills the process with SIGKILL a
//! random moment after the first acknowledgement, restarts it on the same directory and
//! reads every acknowledged key back. `scripts/crash-test.sh` runs the same proof with
//! more trials against a release build.
//!
//! Most writes also name one of a few session owners (`X-Session-Owner`), so the same
//! proof covers the `owners` index, which the write-ahead-log replay rebuilds: after the
//! restart, each owner's `GET /owners/{owner}/sessions` lists every acknowledged key of
//! that owner, and no key that was written for another owner or for none.

mod common;

use std::collections::BTreeSet;
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
/// Session owners the writes are spread over (one write in four has none).
const OWNERS: [&str; 3] = ["owner-a", "owner-b", "owner-c"];
/// Page size of the owner listings read after the restart (small, so they page).
const OWNER_PAGE: usize = 100;

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
    /// The `X-Session-Owner` it was sent with, if any.
    owner: Option<&'static str>,
}

/// Which owner, if any, write `n` of writer `w` names: each writer cycles through all
/// of them, so every owner gets keys from every writer.
fn owner_of(w: usize, n: usize) -> Option<&'static str> {
    match n % 4 {
        0 => None,
        k => Some(OWNERS[(w + k) % OWNERS.len()]),
    }
}

/// One writer: distinct keys on one keep-alive connection until the first failure.
/// Every write is listed in `sent` before it goes out, and in `acked` once answered.
#[allow(clippy::too_many_arguments)]
async fn writer(
    client: reqwest::Client,
    server: SocketAddr,
    w: usize,
    prefix: String,
    sent: Arc<Mutex<Vec<Write>>>,
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
            owner: owner_of(w, n),
        };
        sent.lock().expect("sent list").push(write.clone());
        let mut request = client
            .put(format!("http://{server}/keys/{}", write.key))
            .header("x-write-timestamp", write.timestamp)
            .header("content-type", "text/plain");
        if let Some(owner) = write.owner {
            request = request.header("x-session-owner", owner);
        }
        let sent = request.body(write.value.clone()).send().await;
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
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let stamp = header("x-write-timestamp");
        let owner = header("x-session-owner");
        let body = response.text().await.expect("a readable body");
        if status != 200 {
            problems.push(format!("{}: acknowledged but answered {status}", write.key));
        } else if body != write.value || stamp != Some(write.timestamp.to_string()) {
            problems.push(format!(
                "{}: came back as {body:?} at {stamp:?}, not {:?} at {}",
                write.key, write.value, write.timestamp
            ));
        } else if owner.as_deref() != write.owner {
            problems.push(format!(
                "{}: came back owned by {owner:?}, not {:?}",
                write.key, write.owner
            ));
        }
    }
    problems
}

/// Every key `GET /owners/{owner}/sessions` lists, following `next_cursor` for at most
/// `max_pages` pages.
async fn owner_listing(
    client: &reqwest::Client,
    server: &Process,
    owner: &str,
    max_pages: usize,
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..max_pages {
        let mut request = client
            .get(server.url(&format!("/owners/{owner}/sessions")))
            .query(&[("limit", OWNER_PAGE.to_string())]);
        if let Some(cursor) = &cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        let response = request.send().await.expect("the restarted server answers");
        let status = response.status();
        let body = response.bytes().await.expect("a readable body");
        assert_eq!(
            status,
            200,
            "listing {owner}: {}",
            String::from_utf8_lossy(&body)
        );
        let page: serde_json::Value = serde_json::from_slice(&body).expect("a JSON page");
        let sessions = page["sessions"].as_array().expect("a sessions array");
        assert!(sessions.len() <= OWNER_PAGE, "{owner}: an overlong page");
        for session in sessions {
            keys.push(session["key"].as_str().expect("a key").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return keys,
        }
    }
    panic!("{owner}: the listing did not end within {max_pages} pages");
}

/// Checks each owner's listing against the writes: every acknowledged key of the owner
/// is listed, and every listed key was sent for that owner — either acknowledged, or the
/// one write its writer had in flight when the server died (so at most one per writer).
async fn check_owner_index(
    client: &reqwest::Client,
    server: &Process,
    sent: &[Write],
    acked: &[Write],
) -> Vec<String> {
    let mut problems = Vec::new();
    for owner in OWNERS {
        let keys_of = |writes: &[Write]| -> BTreeSet<String> {
            writes
                .iter()
                .filter(|w| w.owner == Some(owner))
                .map(|w| w.key.clone())
                .collect()
        };
        let (sent_keys, acked_keys) = (keys_of(sent), keys_of(acked));
        let max_pages = sent_keys.len() / OWNER_PAGE + 2;
        let listed = owner_listing(client, server, owner, max_pages).await;
        let listed_set: BTreeSet<String> = listed.iter().cloned().collect();
        if listed_set.len() != listed.len() {
            problems.push(format!("{owner}: a key was listed twice"));
        }
        if listed.windows(2).any(|pair| pair[0] >= pair[1]) {
            problems.push(format!("{owner}: the listing is not in key order"));
        }
        for missing in acked_keys.difference(&listed_set).take(10) {
            problems.push(format!(
                "{owner}: {missing} acknowledged for this owner but not listed"
            ));
        }
        for stray in listed_set.difference(&sent_keys).take(10) {
            let other = sent.iter().find(|w| &w.key == stray).map(|w| w.owner);
            problems.push(format!(
                "{owner}: {stray} listed, but it was written {}",
                match other {
                    Some(Some(other)) => format!("for {other}"),
                    Some(None) => "without an owner".to_string(),
                    None => "by no one".to_string(),
                }
            ));
        }
        let unacked = listed_set.difference(&acked_keys).count();
        if unacked > WRITERS {
            problems.push(format!(
                "{owner}: {unacked} listed keys were never acknowledged; at most {WRITERS} writes were in flight"
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
    let mut total_owned = 0;
    for trial in 0..TRIALS {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = start_server(dir.path());
        let sent = Arc::new(Mutex::new(Vec::new()));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let first_ack = Arc::new(tokio::sync::Notify::new());
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                tokio::spawn(writer(
                    client.clone(),
                    server.http,
                    w,
                    format!("t{trial}-w{w}"),
                    sent.clone(),
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
        let sent = sent.lock().expect("sent list").clone();
        let restarted = start_server(dir.path());
        let mut problems = read_back(&client, &restarted, &writes).await;
        problems.extend(check_owner_index(&client, &restarted, &sent, &writes).await);
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
            "trial {trial}: SIGKILL {delay:?} after the first acknowledgement; {} acknowledged writes all read back, {} of them listed under their owners",
            writes.len(),
            writes.iter().filter(|w| w.owner.is_some()).count()
        );
        total_acked += writes.len();
        total_owned += writes.iter().filter(|w| w.owner.is_some()).count();
    }
    assert!(total_acked > 0);
    assert!(total_owned > 0, "no acknowledged write named an owner");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the crash test must stay under 30 s; it took {:?}",
        started.elapsed()
    );
}
