//! Several replicas on one PostgreSQL database, each a separate `tidemark serve`
//! process (the real binary, `--drain-delay 0`, loopback port 0): what one replica
//! writes the others read and guard, racing writers spread over replicas end in the
//! newest write everywhere, SIGKILL of one replica loses no acknowledged write, and a
//! database restart under load answers only 2xx, 409 or 503 until the replicas serve
//! again by themselves.
//!
//! Every test gets a fresh database (the database-restart test a cluster of its own).
//! Without PostgreSQL a test prints SKIPPED and returns, unless
//! `TIDEMARK_REQUIRE_POSTGRES=1`, when it fails. Timestamps come from the real clock
//! (the binary refuses ones too far ahead of it). Every load is bounded in count and
//! time, every request by a client timeout, and every wait polls its condition with a
//! deadline.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::http::{Http, header};
use common::postgres;
use common::process::{Process, now_micros};
use common::tyrant::{FAIL, OK, Tyrant, ext_ok};
use reqwest::{Client, StatusCode};

/// A request still unanswered after this long counts as a hang.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a replica to report ready (generous: the machine is shared).
const READY_WAIT: Duration = Duration::from_secs(30);
/// Database connections per replica: several tests share one cluster at a time.
const POOL_SIZE: &str = "8";

/// `replicas` servers on the database at `url`, started at the same time (so they race
/// to apply the schema), each with `extra` flags.
fn start_replicas(replicas: usize, url: &str, extra: &[&str]) -> Vec<Process> {
    std::thread::scope(|scope| {
        let starting: Vec<_> = (0..replicas)
            .map(|_| {
                scope.spawn(|| {
                    let args = [
                        "--database-url",
                        url,
                        "--database-pool-size",
                        POOL_SIZE,
                        "--drain-delay",
                        "0",
                    ];
                    Process::serve(args.iter().chain(extra), &[])
                })
            })
            .collect();
        starting
            .into_iter()
            .map(|s| s.join().expect("a replica starts"))
            .collect()
    })
}

/// An HTTP client that gives up after [`CLIENT_TIMEOUT`], never through a proxy, and
/// keeps at most one idle connection per replica: a writer with a client of its own
/// writes on a socket of its own.
fn client() -> Client {
    Client::builder()
        .no_proxy()
        .timeout(CLIENT_TIMEOUT)
        .pool_max_idle_per_host(1)
        .build()
        .expect("HTTP client builds")
}

fn http(replica: &Process) -> Http {
    Http::with_client(client(), replica.url(""))
}

/// Every replica's log, for failure messages.
fn logs(replicas: &[&Process]) -> String {
    replicas
        .iter()
        .enumerate()
        .map(|(i, r)| format!("--- replica {i} (pid {}):\n{}", r.pid(), r.log()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Poll `condition` every 20 ms until it holds; false if `within` passes first.
async fn eventually<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of GET `url`, or why there was none.
async fn probe(client: &Client, url: &str) -> Result<u16, String> {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// Wait until every replica's /readyz answers `status`.
async fn wait_for_readyz(replicas: &[&Process], status: u16, within: Duration) {
    let client = client();
    for (i, replica) in replicas.iter().enumerate() {
        let reached = eventually(within, || async {
            probe(&client, &replica.url("/readyz")).await == Ok(status)
        })
        .await;
        assert!(
            reached,
            "replica {i}: /readyz did not answer {status} within {within:?}; log:\n{}",
            logs(replicas)
        );
    }
}

/// A fresh database's replicas, ready for traffic; `None` (after SKIPPED) without
/// PostgreSQL.
async fn ready_replicas(replicas: usize) -> Option<Vec<Process>> {
    let database = postgres::database().await?;
    let started = start_replicas(replicas, &database.url, &[]);
    wait_for_readyz(&started.iter().collect::<Vec<_>>(), 200, READY_WAIT).await;
    Some(started)
}

/// A value whose first 16 bytes are `timestamp` in decimal µs (Tyrant `ext tsput`).
fn stamped(timestamp: u64, rest: &str) -> Vec<u8> {
    format!("{timestamp:016}{rest}").into_bytes()
}

/// A 409's problem body, after checking the status and the stored timestamp it names
/// (header and body).
async fn refused(response: reqwest::Response, kind: &str, current: u64) -> serde_json::Value {
    assert_eq!(response.status(), StatusCode::CONFLICT, "{response:?}");
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        current.to_string()
    );
    let body = response.bytes().await.expect("a body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("a problem+json body");
    assert_eq!(body["type"], format!("urn:tidemark:problem:{kind}"));
    assert_eq!(body["current_timestamp"].as_u64(), Some(current));
    body
}

/// What GET answered: status, X-Write-Timestamp, body.
async fn read(http: &Http, key: &str) -> (u16, Option<String>, String) {
    let (status, headers, body) = http.read(key).await;
    let stamp = headers
        .get("x-write-timestamp")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, stamp, String::from_utf8_lossy(&body).into_owned())
}

// ---- what one replica writes, the others read and guard ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_fresh_database_all_become_ready_and_share_it() {
    let Some(replicas) = ready_replicas(3).await else {
        return;
    };
    // Each replica writes a key; every replica reads all three.
    let timestamp = now_micros();
    for (i, replica) in replicas.iter().enumerate() {
        let response = http(replica)
            .put(&format!("from-{i}"), timestamp, &format!("written by {i}"))
            .await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    for reader in &replicas {
        let reader = http(reader);
        for i in 0..replicas.len() {
            let (status, stamp, body) = read(&reader, &format!("from-{i}")).await;
            assert_eq!(status, 200);
            assert_eq!(stamp, Some(timestamp.to_string()));
            assert_eq!(body, format!("written by {i}"));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_replica_reads_back_on_another_over_http_and_tyrant() {
    let Some(replicas) = ready_replicas(2).await else {
        return;
    };
    let (a, b) = (&replicas[0], &replicas[1]);

    // HTTP PUT on A, GET on B: the value and the same X-Write-Timestamp.
    let timestamp = now_micros();
    let put = http(a).put("session-http", timestamp, "from A").await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let (status, headers, body) = http(b).read("session-http").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "x-write-timestamp"), timestamp.to_string());
    assert_eq!(header(&headers, "content-type"), "text/plain");
    assert_eq!(body, b"from A");

    // Tyrant put on B, get on A (and over HTTP on A); every byte value survives.
    let value: Vec<u8> = (0..=255u8).collect();
    let mut tyrant_b = Tyrant::connect(b.tyrant).await;
    assert_eq!(tyrant_b.put(b"session-tyrant", &value).await, OK);
    let mut tyrant_a = Tyrant::connect(a.tyrant).await;
    assert_eq!(tyrant_a.get(b"session-tyrant").await, Some(value.clone()));
    let (status, _, body) = http(a).read("session-tyrant").await;
    assert_eq!(status, 200);
    assert_eq!(body, value);

    // And the HTTP write of A reads over Tyrant on B.
    assert_eq!(
        tyrant_b.get(b"session-http").await,
        Some(b"from A".to_vec())
    );
    drop((tyrant_a, tyrant_b));

    // Both shut down cleanly on SIGTERM.
    for (i, replica) in replicas.into_iter().enumerate() {
        let status = replica.stop();
        assert!(status.success(), "replica {i} exited with {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_write_on_one_replica_after_a_newer_write_on_another_is_refused() {
    let Some(replicas) = ready_replicas(3).await else {
        return;
    };
    let (a, b, c) = (http(&replicas[0]), http(&replicas[1]), http(&replicas[2]));
    let newer = now_micros();

    // HTTP: newer on A, then older on B and a different value at the same moment on C.
    assert_eq!(
        a.put("session", newer, "newer").await.status(),
        StatusCode::CREATED
    );
    refused(
        b.put("session", newer - 1, "older").await,
        "stale-write",
        newer,
    )
    .await;
    refused(
        c.put("session", newer, "other").await,
        "timestamp-tie",
        newer,
    )
    .await;
    for replica in [&a, &b, &c] {
        assert_eq!(
            read(replica, "session").await,
            (200, Some(newer.to_string()), "newer".to_string())
        );
    }

    // Tyrant: an older tsput on B answers the failure; a newer one applies and then
    // guards the key against an older HTTP PUT on A.
    let mut tyrant_b = Tyrant::connect(replicas[1].tyrant).await;
    assert_eq!(
        tyrant_b
            .ext(b"tsput", b"session", &stamped(newer - 1, "older"))
            .await,
        FAIL
    );
    let newest = newer + 1;
    let tyrant_value = stamped(newest, "via tyrant");
    assert_eq!(
        tyrant_b.ext(b"tsput", b"session", &tyrant_value).await,
        ext_ok(&newest.to_string())
    );
    refused(
        a.put("session", newer, "newer").await,
        "stale-write",
        newest,
    )
    .await;
    let (status, stamp, body) = read(&c, "session").await;
    assert_eq!((status, stamp), (200, Some(newest.to_string())));
    assert_eq!(body.as_bytes(), tyrant_value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_on_one_replica_guards_the_key_on_the_others() {
    let Some(replicas) = ready_replicas(2).await else {
        return;
    };
    let (a, b) = (http(&replicas[0]), http(&replicas[1]));
    let written = now_micros();
    let deleted = written + 1;
    assert_eq!(
        a.put("session", written, "value").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        a.delete("session", deleted).await.status(),
        StatusCode::NO_CONTENT
    );

    // On B: an older PUT (even the deleted write replayed) is refused by the tombstone,
    // and the key is gone.
    refused(
        b.put("session", written, "value").await,
        "stale-write",
        deleted,
    )
    .await;
    assert_eq!(read(&b, "session").await.0, 404);
    let mut tyrant_b = Tyrant::connect(replicas[1].tyrant).await;
    assert_eq!(tyrant_b.get(b"session").await, None);
    assert_eq!(
        tyrant_b
            .ext(b"tsput", b"session", &stamped(written, "value"))
            .await,
        FAIL
    );
    assert_eq!(read(&a, "session").await.0, 404);

    // A write newer than the delete applies, and A reads it.
    let rewritten = deleted + 1;
    assert_eq!(
        b.put("session", rewritten, "again").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        read(&a, "session").await,
        (200, Some(rewritten.to_string()), "again".to_string())
    );
}

// ---- racing writers spread over replicas ----

const RACE_REPLICAS: usize = 3;
const RACE_KEYS: usize = 4;
/// Writers per replica, each on its own connection.
const RACE_WRITERS_PER_REPLICA: usize = 4;
const RACE_WRITES_PER_KEY: usize = 60;
const RACE_SEEDS: [u64; 2] = [0x5eed_0003, 0xfeed_beef];

/// SplitMix64: deterministic shuffles and delays, so a failing seed replays its plan.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
}

/// One write of the race as the client saw it.
#[derive(Debug, Clone)]
struct Raced {
    key: usize,
    kind: Kind,
    timestamp: u64,
    replica: usize,
    sent: Instant,
    answered: Instant,
    status: u16,
    /// X-Write-Timestamp of the answer: the write's own on success, the stored one on 409.
    stamp: Option<u64>,
}

impl Raced {
    fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn raced_value(timestamp: u64) -> String {
    format!("written-at-{timestamp}")
}

/// `RACE_WRITES_PER_KEY` distinct timestamps per key (a fifth of them deletes),
/// shuffled and dealt to writers spread evenly over the replicas, each writer on its
/// own connection with random 0-3 ms pauses.
async fn race_over_replicas(replicas: &[Process], prefix: &str, seed: u64) -> Vec<Raced> {
    let mut rng = SplitMix(seed);
    // Distinct timestamps a little in the past: within the server's skew limit.
    let base = now_micros() - 10_000_000;
    let mut plan: Vec<(usize, Kind, u64)> = (0..RACE_KEYS)
        .flat_map(|key| (0..RACE_WRITES_PER_KEY).map(move |i| (key, i)))
        .map(|(key, i)| {
            let kind = if rng.below(5) == 0 {
                Kind::Delete
            } else {
                Kind::Put
            };
            (key, kind, base + i as u64)
        })
        .collect();
    for i in (1..plan.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        plan.swap(i, j);
    }

    let writers = replicas.len() * RACE_WRITERS_PER_REPLICA;
    let mut tasks = Vec::new();
    for (writer, share) in plan.chunks(plan.len().div_ceil(writers)).enumerate() {
        let replica = writer % replicas.len();
        let base_url = replicas[replica].url(&format!("/keys/{prefix}"));
        let share = share.to_vec();
        let mut jitter = SplitMix(seed ^ (writer as u64 + 1).wrapping_mul(0x2545_f491));
        tasks.push(tokio::spawn(async move {
            let client = client();
            let mut sent = Vec::with_capacity(share.len());
            for (key, kind, timestamp) in share {
                let pause = jitter.below(4);
                if pause > 0 {
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                let url = format!("{base_url}{key}");
                let request = match kind {
                    Kind::Put => client
                        .put(url)
                        .header("content-type", "text/plain")
                        .body(raced_value(timestamp)),
                    Kind::Delete => client.delete(url),
                }
                .header("x-write-timestamp", timestamp.to_string());
                let started = Instant::now();
                let response = request.send().await.unwrap_or_else(|e| {
                    panic!("replica {replica}: write {timestamp} to key {key} failed: {e:?}")
                });
                let stamp = response
                    .headers()
                    .get("x-write-timestamp")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                sent.push(Raced {
                    key,
                    kind,
                    timestamp,
                    replica,
                    sent: started,
                    answered: Instant::now(),
                    status: response.status().as_u16(),
                    stamp,
                });
            }
            sent
        }));
    }
    let mut all = Vec::with_capacity(plan.len());
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

/// What a correct guard promises about one key's race, whichever replica each write
/// went through.
fn check_race_answers(writes: &[&Raced]) {
    for w in writes {
        assert!(
            matches!(w.status, 201 | 204 | 409),
            "write answered {}: {w:?}",
            w.status
        );
        if w.accepted() {
            assert_eq!(w.stamp, Some(w.timestamp), "success echoes the timestamp");
            continue;
        }
        // Timestamps are distinct: a refusal is always by a newer write, one that some
        // replica accepted and whose request was sent before this refusal arrived.
        let current = w.stamp.expect("409 names the stored timestamp");
        assert!(current > w.timestamp, "refused by an older write: {w:?}");
        assert!(
            writes
                .iter()
                .any(|o| o.timestamp == current && o.accepted() && o.sent < w.answered),
            "409 names timestamp {current}, which no accepted write sent before it: {w:?}"
        );
    }
    let newest = writes.iter().max_by_key(|w| w.timestamp).expect("writes");
    assert!(
        newest.accepted(),
        "the newest write was refused: {newest:?}"
    );
    // Once any replica acknowledged a write, an older one sent later to any replica
    // must be refused: the shared store never goes back past an acknowledgement.
    for acked in writes.iter().filter(|w| w.accepted()) {
        for later in writes
            .iter()
            .filter(|l| l.sent > acked.answered && l.timestamp < acked.timestamp)
        {
            assert_eq!(
                later.status, 409,
                "accepted after the newer {acked:?} was acknowledged: {later:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writers_spread_over_three_replicas_leave_every_replica_reading_the_newest_write() {
    let Some(replicas) = ready_replicas(RACE_REPLICAS).await else {
        return;
    };
    let started = Instant::now();
    for (round, seed) in RACE_SEEDS.into_iter().enumerate() {
        let prefix = format!("race-{round}-");
        let writes = race_over_replicas(&replicas, &prefix, seed).await;
        assert_eq!(writes.len(), RACE_KEYS * RACE_WRITES_PER_KEY);
        assert!(
            (0..RACE_REPLICAS).all(|r| writes.iter().any(|w| w.replica == r)),
            "every replica took writes"
        );
        for key in 0..RACE_KEYS {
            let key_writes: Vec<&Raced> = writes.iter().filter(|w| w.key == key).collect();
            check_race_answers(&key_writes);
            // Shuffled arrival means many writes lose; if none did, nothing raced.
            assert!(
                key_writes.iter().any(|w| !w.accepted()),
                "seed {seed:#x}, key {key}: no write was refused"
            );
            let newest = key_writes
                .iter()
                .max_by_key(|w| w.timestamp)
                .expect("writes");
            for (r, replica) in replicas.iter().enumerate() {
                let reader = http(replica);
                let segment = format!("{prefix}{key}");
                let (status, stamp, body) = read(&reader, &segment).await;
                match newest.kind {
                    Kind::Put => assert_eq!(
                        (status, stamp, body),
                        (
                            200,
                            Some(newest.timestamp.to_string()),
                            raced_value(newest.timestamp)
                        ),
                        "seed {seed:#x}: replica {r} reads key {key}"
                    ),
                    Kind::Delete => assert_eq!(
                        status, 404,
                        "seed {seed:#x}: replica {r} reads deleted key {key}"
                    ),
                }
                // And refuses anything older than the winner.
                let late = reader.put(&segment, newest.timestamp - 1, "late").await;
                refused(late, "stale-write", newest.timestamp).await;
            }
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the race must stay under 60 s; it took {:?}",
        started.elapsed()
    );
}

// ---- write load: the kill and database-restart tests ----

/// Longest any load runs, and the most writes one writer sends.
const LOAD_LIMIT: Duration = Duration::from_secs(60);
const MAX_WRITES_PER_WRITER: usize = 20_000;

/// One write of a load: a distinct key and value, and what came back.
#[derive(Debug, Clone)]
struct Attempt {
    replica: usize,
    key: String,
    timestamp: u64,
    value: String,
    sent: Instant,
    answered: Instant,
    answer: Answer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// A whole response arrived (status line, headers and body).
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// No whole response: refused, reset, or timed out.
    Failed(String),
}

impl Attempt {
    fn acknowledged(&self) -> bool {
        matches!(self.answer, Answer::Status { status, .. } if (200..300).contains(&status))
    }

    fn status(&self) -> Option<u16> {
        match self.answer {
            Answer::Status { status, .. } => Some(status),
            Answer::Failed(_) => None,
        }
    }
}

/// Per-replica acknowledgement counts, 503s seen, and the flag that stops every writer.
struct Load {
    acks: Vec<AtomicUsize>,
    unavailable: AtomicUsize,
    stop: AtomicBool,
}

impl Load {
    fn new(replicas: usize) -> Arc<Load> {
        Arc::new(Load {
            acks: (0..replicas).map(|_| AtomicUsize::new(0)).collect(),
            unavailable: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        })
    }

    fn acks(&self, replica: usize) -> usize {
        self.acks[replica].load(Ordering::Relaxed)
    }

    /// Wait until `replica` has acknowledged `count` writes in all; false on timeout.
    async fn wait_for_acks(&self, replica: usize, count: usize, within: Duration) -> bool {
        eventually(within, || async { self.acks(replica) >= count }).await
    }
}

/// Write distinct keys `{prefix}-{n}` through `replica` on one keep-alive connection
/// until told to stop, the first failure without a response, or the load's bounds.
/// A 503 is followed by a short pause, as a client honouring Retry-After would.
async fn writer(
    load: Arc<Load>,
    replica: usize,
    http_addr: String,
    prefix: String,
) -> Vec<Attempt> {
    let client = client();
    let deadline = Instant::now() + LOAD_LIMIT;
    let mut attempts = Vec::new();
    for n in 0..MAX_WRITES_PER_WRITER {
        if load.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            break;
        }
        let key = format!("{prefix}-{n}");
        let timestamp = now_micros();
        let value = format!("{key}@{timestamp}");
        let sent = Instant::now();
        let result = client
            .put(format!("http://{http_addr}/keys/{key}"))
            .header("x-write-timestamp", timestamp.to_string())
            .header("content-type", "text/plain")
            .body(value.clone())
            .send()
            .await;
        // The acknowledgement is the whole response, not just its status line.
        let answer = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                match response.bytes().await {
                    Ok(_) => Answer::Status {
                        status,
                        retry_after,
                    },
                    Err(e) => Answer::Failed(format!("{status}, then the body failed: {e:?}")),
                }
            }
            Err(e) => Answer::Failed(format!("{e:?}")),
        };
        let attempt = Attempt {
            replica,
            key,
            timestamp,
            value,
            sent,
            answered: Instant::now(),
            answer,
        };
        let failed = matches!(attempt.answer, Answer::Failed(_));
        if attempt.acknowledged() {
            load.acks[replica].fetch_add(1, Ordering::Relaxed);
        }
        if attempt.status() == Some(503) {
            load.unavailable.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        attempts.push(attempt);
        if failed {
            break;
        }
    }
    attempts
}

/// `per_replica` writers on each replica, prefixed `{name}-r{replica}-w{writer}`.
fn start_writers(
    load: &Arc<Load>,
    replicas: &[&Process],
    per_replica: usize,
    name: &str,
) -> Vec<tokio::task::JoinHandle<Vec<Attempt>>> {
    let mut writers = Vec::new();
    for (r, replica) in replicas.iter().enumerate() {
        for w in 0..per_replica {
            writers.push(tokio::spawn(writer(
                load.clone(),
                r,
                replica.http.to_string(),
                format!("{name}-r{r}-w{w}"),
            )));
        }
    }
    writers
}

async fn join_writers(writers: Vec<tokio::task::JoinHandle<Vec<Attempt>>>) -> Vec<Attempt> {
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.expect("writer task"));
    }
    all
}

/// Read every acknowledged write back through `reader`; what did not come back as
/// written.
async fn lost_writes(reader: &Process, attempts: &[Attempt]) -> Vec<String> {
    let reader = http(reader);
    let mut problems = Vec::new();
    for a in attempts.iter().filter(|a| a.acknowledged()) {
        let (status, stamp, body) = read(&reader, &a.key).await;
        if status != 200 {
            problems.push(format!("{}: acknowledged but answered {status}", a.key));
        } else if body != a.value || stamp != Some(a.timestamp.to_string()) {
            problems.push(format!(
                "{}: came back as {body:?} at {stamp:?}, not {:?} at {}",
                a.key, a.value, a.timestamp
            ));
        }
    }
    problems
}

fn first_lines(lines: &[String], count: usize) -> String {
    lines
        .iter()
        .take(count)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// A small random delay in `[from, from + spread)`, different every run.
fn random_delay(from: Duration, spread_ms: u64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_micros());
    from + Duration::from_millis(hasher.finish() % spread_ms.max(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_one_replica_under_write_load_loses_no_acknowledged_write_and_the_other_keeps_serving()
 {
    const WRITERS_PER_REPLICA: usize = 4;
    /// Acknowledgements the survivor must give after the kill.
    const ACKS_AFTER_KILL: usize = 200;
    let Some(mut replicas) = ready_replicas(2).await else {
        return;
    };
    let started = Instant::now();
    let load = Load::new(2);
    let writers = start_writers(
        &load,
        &replicas.iter().collect::<Vec<_>>(),
        WRITERS_PER_REPLICA,
        "kill",
    );
    for r in 0..2 {
        assert!(
            load.wait_for_acks(r, 1, READY_WAIT).await,
            "replica {r} acknowledged no write; logs:\n{}",
            logs(&replicas.iter().collect::<Vec<_>>())
        );
    }

    // Kill replica 0 mid-load: a random moment 100-600 ms after both took writes.
    let delay = random_delay(Duration::from_millis(100), 500);
    tokio::time::sleep(delay).await;
    let victim = replicas.remove(0);
    let survivor = &mut replicas[0];
    let kill_sent = Instant::now();
    victim.kill();
    let survivor_acks_at_kill = load.acks(1);
    let kept_serving = load
        .wait_for_acks(1, survivor_acks_at_kill + ACKS_AFTER_KILL, READY_WAIT)
        .await;
    load.stop.store(true, Ordering::Relaxed);
    let attempts = join_writers(writers).await;
    assert!(
        kept_serving,
        "the survivor acknowledged only {} writes after the kill; log:\n{}",
        load.acks(1) - survivor_acks_at_kill,
        survivor.log()
    );
    assert_eq!(survivor.exited(), None, "the survivor exited");

    // The killed replica's writers may fail, but only once the kill was under way; the
    // survivor's writers saw nothing but 201.
    let mut problems = Vec::new();
    for a in &attempts {
        let fine = match (&a.answer, a.replica) {
            (Answer::Status { status: 201, .. }, _) => true,
            (Answer::Failed(_), 0) => a.answered >= kill_sent,
            _ => false,
        };
        if !fine {
            problems.push(format!("{a:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{} unexpected answers (SIGKILL {delay:?} after both took writes):\n{}\n\nsurvivor log:\n{}",
        problems.len(),
        first_lines(&problems, 10),
        survivor.log()
    );

    // Every acknowledged write, through either replica, reads back through the survivor.
    let lost = lost_writes(survivor, &attempts).await;
    let acked = attempts.iter().filter(|a| a.acknowledged()).count();
    assert!(
        lost.is_empty(),
        "{} of {acked} acknowledged writes did not read back after SIGKILL {delay:?} in:\n{}",
        lost.len(),
        first_lines(&lost, 10)
    );
    wait_for_readyz(&[&*survivor], 200, READY_WAIT).await;
    eprintln!(
        "SIGKILL {delay:?} after both replicas took writes: {} acknowledged by the victim, \
         {acked} in all, all read back; {} more by the survivor after the kill; {:?}",
        attempts
            .iter()
            .filter(|a| a.replica == 0 && a.acknowledged())
            .count(),
        load.acks(1) - survivor_acks_at_kill,
        started.elapsed()
    );
}

/// One look at a replica's /healthz or /readyz during a load.
#[derive(Debug)]
struct HealthSample {
    replica: usize,
    path: &'static str,
    at: Instant,
    answer: Result<u16, String>,
}

/// Probe every replica's /healthz and /readyz every 100 ms until the load stops.
async fn watch_health(load: Arc<Load>, replicas: Vec<String>) -> Vec<HealthSample> {
    let client = client();
    let deadline = Instant::now() + LOAD_LIMIT;
    let mut samples = Vec::new();
    while !load.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        for (replica, base) in replicas.iter().enumerate() {
            for path in ["/healthz", "/readyz"] {
                samples.push(HealthSample {
                    replica,
                    path,
                    at: Instant::now(),
                    answer: probe(&client, &format!("{base}{path}")).await,
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

/// Write fresh keys through `replica` until one is acknowledged; how long that took.
/// Anything but 2xx or 503 on the way is a failure.
async fn time_until_writes_apply(replica: &Process, within: Duration) -> Result<Duration, String> {
    let client = client();
    let started = Instant::now();
    for n in 0.. {
        let response = client
            .put(replica.url(&format!("/keys/recovery-probe-{n}")))
            .header("x-write-timestamp", now_micros().to_string())
            .body("probe")
            .send()
            .await
            .map_err(|e| format!("probe write {n}: {e:?}"))?;
        match response.status().as_u16() {
            200..=299 => return Ok(started.elapsed()),
            503 => {}
            other => return Err(format!("probe write {n} answered {other}")),
        }
        if started.elapsed() >= within {
            return Err(format!("writes did not apply within {within:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!("the loop returns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_restart_under_load_answers_only_2xx_409_or_503_and_the_replicas_recover_by_themselves()
 {
    const WRITERS_PER_REPLICA: usize = 3;
    /// How long the database stays down, counted from the stop.
    const OUTAGE: Duration = Duration::from_millis(1500);
    /// "Within a few seconds" of the database coming back, on a busy machine.
    const RECOVERY_LIMIT: Duration = Duration::from_secs(10);
    /// Acknowledgements each replica must give once the database is back.
    const ACKS_AFTER_RESTART: usize = 50;
    let Some(cluster) = postgres::private_cluster() else {
        return;
    };
    let database = cluster.database().await;
    // A request waits at most about connect + statement timeout for the database:
    // well under the client's timeout, so any answer slower than that is a hang.
    let mut replicas = start_replicas(
        2,
        &database.url,
        &[
            "--database-connect-timeout",
            "2s",
            "--database-statement-timeout",
            "3s",
        ],
    );
    let all: Vec<&Process> = replicas.iter().collect();
    wait_for_readyz(&all, 200, READY_WAIT).await;

    let load = Load::new(2);
    let watcher = tokio::spawn(watch_health(
        load.clone(),
        all.iter().map(|r| r.url("")).collect(),
    ));
    let writers = start_writers(&load, &all, WRITERS_PER_REPLICA, "outage");
    for r in 0..2 {
        assert!(
            load.wait_for_acks(r, 1, READY_WAIT).await,
            "replica {r} acknowledged no write; logs:\n{}",
            logs(&all)
        );
    }

    // Stop the database at once, as a crash or failover would.
    let stopping = Instant::now();
    tokio::task::block_in_place(|| cluster.stop());
    let stopped = Instant::now();
    wait_for_readyz(&all, 503, Duration::from_secs(15)).await;
    let readyz_down_after = stopping.elapsed();
    // The load must meet the outage before the database comes back.
    let met_outage = eventually(Duration::from_secs(15), || async {
        load.unavailable.load(Ordering::Relaxed) > 0
    })
    .await;
    assert!(
        met_outage,
        "no write was answered 503 while the database was down"
    );
    tokio::time::sleep(OUTAGE.saturating_sub(stopping.elapsed())).await;

    tokio::task::block_in_place(|| cluster.start());
    let restarted = Instant::now();
    let mut recovery = Vec::new();
    for (r, replica) in all.iter().enumerate() {
        match time_until_writes_apply(replica, RECOVERY_LIMIT).await {
            Ok(_) => recovery.push(restarted.elapsed()),
            Err(why) => panic!(
                "replica {r} after the database restart: {why}; logs:\n{}",
                logs(&all)
            ),
        }
    }
    wait_for_readyz(&all, 200, RECOVERY_LIMIT).await;
    let readyz_up_after = restarted.elapsed();
    let acks_at_restart: Vec<usize> = (0..2).map(|r| load.acks(r)).collect();
    for (r, acks) in acks_at_restart.into_iter().enumerate() {
        let resumed = load
            .wait_for_acks(r, acks + ACKS_AFTER_RESTART, READY_WAIT)
            .await;
        assert!(
            resumed,
            "replica {r}'s writers got no acknowledgements after the restart; logs:\n{}",
            logs(&all)
        );
    }
    load.stop.store(true, Ordering::Relaxed);
    let attempts = join_writers(writers).await;
    let samples = watcher.await.expect("health watcher");

    // Neither replica was restarted or crashed.
    for (r, replica) in replicas.iter_mut().enumerate() {
        assert_eq!(replica.exited(), None, "replica {r} exited");
    }
    let all: Vec<&Process> = replicas.iter().collect();

    // Only 2xx, 409 or 503 (with Retry-After: 1); never a reset or a timeout.
    let mut problems = Vec::new();
    for a in &attempts {
        let fine = match &a.answer {
            Answer::Status { status, .. } if (200..300).contains(status) || *status == 409 => true,
            Answer::Status {
                status: 503,
                retry_after,
            } => retry_after.as_deref() == Some("1"),
            _ => false,
        };
        if !fine {
            problems.push(format!(
                "{a:?} ({:?} after the stop began)",
                a.sent.saturating_duration_since(stopping)
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} of {} writes answered otherwise than 2xx/409/503:\n{}\n\nlogs:\n{}",
        problems.len(),
        attempts.len(),
        first_lines(&problems, 10),
        logs(&all)
    );

    // /healthz answered 200 throughout; /readyz only 200 or 503.
    let bad_samples: Vec<String> = samples
        .iter()
        .filter(|s| {
            !matches!(
                (s.path, &s.answer),
                ("/healthz", Ok(200)) | ("/readyz", Ok(200 | 503))
            )
        })
        .map(|s| {
            format!(
                "replica {} {} at {:?} after the stop began: {:?}",
                s.replica,
                s.path,
                s.at.saturating_duration_since(stopping),
                s.answer
            )
        })
        .collect();
    assert!(
        bad_samples.is_empty(),
        "health probes answered wrongly:\n{}",
        first_lines(&bad_samples, 10)
    );
    assert!(
        samples
            .iter()
            .any(|s| s.path == "/healthz" && s.at > stopped && s.at < restarted),
        "/healthz was not probed during the outage"
    );

    // Every acknowledged write — before, during or after the outage — reads back.
    let lost = lost_writes(all[1], &attempts).await;
    let acked = attempts.iter().filter(|a| a.acknowledged()).count();
    assert!(
        lost.is_empty(),
        "{} of {acked} acknowledged writes did not read back:\n{}",
        lost.len(),
        first_lines(&lost, 10)
    );
    let count = |status: u16| {
        attempts
            .iter()
            .filter(|a| a.status() == Some(status))
            .count()
    };
    eprintln!(
        "database down {:?} (pg_ctl stop took {:?}); /readyz 503 everywhere {readyz_down_after:?} \
         after the stop began, 200 again {readyz_up_after:?} after the restart; writes applied \
         again {recovery:?} after it; {} writes: {} 201, {} 409, {} 503",
        restarted.duration_since(stopping),
        stopped.duration_since(stopping),
        attempts.len(),
        count(201),
        count(409),
        count(503),
    );
}
