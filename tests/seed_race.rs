//! The seed failure, over real sockets: many writers, each on its own TCP connection,
//! race timestamped writes to ONE key in shuffled order with small random delays. The
//! newest timestamp must win whatever order the writes arrive in, every write must be
//! answered 2xx or 409, and no refusal may contradict what was already acknowledged.
//!
//! Shuffles and delays come from a seeded xorshift, so a failing seed reproduces.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{T0, TestServer};
use reqwest::{Client, StatusCode};

const WRITERS: usize = 8;
const WRITES_PER_WRITER: usize = 20;
const SEEDS: [u64; 3] = [0x5eed_0001, 0x0dd_ba11, 0xdead_beef_cafe];

/// xorshift64*: tiny, deterministic, good enough to shuffle and jitter.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    Delete,
}

/// One write as the client saw it.
#[derive(Debug, Clone)]
struct Sent {
    writer: usize,
    kind: Kind,
    timestamp: u64,
    sent: Instant,
    answered: Instant,
    status: StatusCode,
    /// X-Write-Timestamp of the answer: the write's own on success, the stored one on 409.
    stamp: Option<u64>,
}

impl Sent {
    fn accepted(&self) -> bool {
        self.status.is_success()
    }
}

fn value_for(timestamp: u64) -> String {
    format!("written-at-{timestamp}")
}

/// Race `WRITERS × WRITES_PER_WRITER` distinct timestamps (shuffled by `seed`) at `key`;
/// each write is a delete with probability `delete_percent`/100.
async fn race(server: &TestServer, key: &str, seed: u64, delete_percent: u64) -> Vec<Sent> {
    let mut rng = XorShift::new(seed);
    let total = WRITERS * WRITES_PER_WRITER;
    let mut plan: Vec<(u64, Kind)> = (0..total as u64)
        .map(|i| {
            let kind = if rng.below(100) < delete_percent {
                Kind::Delete
            } else {
                Kind::Put
            };
            (T0 - 1_000 + i, kind)
        })
        .collect();
    rng.shuffle(&mut plan);

    let url = Arc::new(server.url(&format!("/keys/{key}")));
    let mut tasks = Vec::new();
    for (writer, share) in plan.chunks(WRITES_PER_WRITER).enumerate() {
        let share = share.to_vec();
        let url = url.clone();
        let mut jitter = XorShift::new(seed ^ (writer as u64 + 1).wrapping_mul(0x9e37_79b9));
        tasks.push(tokio::spawn(async move {
            // One client per writer: its own connection pool, hence its own socket.
            let client = Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client");
            let mut sent = Vec::with_capacity(share.len());
            for (timestamp, kind) in share {
                let delay = jitter.below(4);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                let request = match kind {
                    Kind::Put => client
                        .put(url.as_str())
                        .header("Content-Type", "text/plain")
                        .body(value_for(timestamp)),
                    Kind::Delete => client.delete(url.as_str()),
                }
                .header("X-Write-Timestamp", timestamp.to_string());
                let started = Instant::now();
                let response = request.send().await.expect("write answered");
                let stamp = response
                    .headers()
                    .get("x-write-timestamp")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                sent.push(Sent {
                    writer,
                    kind,
                    timestamp,
                    sent: started,
                    answered: Instant::now(),
                    status: response.status(),
                    stamp,
                });
            }
            sent
        }));
    }
    let mut all = Vec::with_capacity(total);
    for task in tasks {
        all.extend(task.await.expect("writer task"));
    }
    all
}

/// Everything a correct guard guarantees about one race, checked from the outside.
fn check_answers(writes: &[Sent]) {
    for w in writes {
        assert!(
            matches!(
                w.status,
                StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::CONFLICT
            ),
            "write answered {}: {w:?}",
            w.status
        );
        if w.accepted() {
            assert_eq!(w.stamp, Some(w.timestamp), "success echoes the timestamp");
        } else {
            // Timestamps are distinct, so a refusal is always "stale", never a tie.
            let current = w.stamp.expect("409 names the stored timestamp");
            assert!(current > w.timestamp, "refused by an older write: {w:?}");
            assert!(
                writes
                    .iter()
                    .any(|o| o.timestamp == current && o.accepted() && o.sent < w.answered),
                "409 names timestamp {current}, which no accepted write sent before it: {w:?}"
            );
        }
    }
    let newest = writes
        .iter()
        .max_by_key(|w| w.timestamp)
        .expect("writes were sent");
    assert!(
        newest.accepted(),
        "the newest write was refused: {newest:?}"
    );

    // Once a write is acknowledged, any write sent afterwards with an older timestamp
    // must be refused: the store can never go back past an acknowledged timestamp.
    for acked in writes.iter().filter(|w| w.accepted()) {
        for later in writes
            .iter()
            .filter(|l| l.sent > acked.answered && l.timestamp < acked.timestamp)
        {
            assert_eq!(
                later.status,
                StatusCode::CONFLICT,
                "accepted after newer {acked:?} was acknowledged: {later:?}"
            );
        }
    }
}

async fn check_final_state(server: &TestServer, key: &str, writes: &[Sent]) {
    let newest = writes
        .iter()
        .max_by_key(|w| w.timestamp)
        .expect("writes were sent");
    let client = Client::new();
    let url = server.url(&format!("/keys/{key}"));
    let read = client.get(&url).send().await.expect("GET answered");
    match newest.kind {
        Kind::Put => {
            assert_eq!(read.status(), StatusCode::OK);
            assert_eq!(
                read.headers()["x-write-timestamp"].to_str().expect("ascii"),
                newest.timestamp.to_string()
            );
            assert_eq!(
                read.text().await.expect("body"),
                value_for(newest.timestamp)
            );
        }
        Kind::Delete => assert_eq!(read.status(), StatusCode::NOT_FOUND),
    }
    // And the key still refuses anything older than the winner.
    let late = client
        .put(&url)
        .header("X-Write-Timestamp", (newest.timestamp - 1).to_string())
        .body("late")
        .send()
        .await
        .expect("PUT answered");
    assert_eq!(late.status(), StatusCode::CONFLICT);
    assert_eq!(
        late.headers()["x-write-timestamp"].to_str().expect("ascii"),
        newest.timestamp.to_string()
    );
}

fn used_every_writer(writes: &[Sent]) -> bool {
    (0..WRITERS).all(|w| writes.iter().any(|s| s.writer == w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_puts_on_separate_connections_leave_the_newest_value() {
    let server = TestServer::start().await;
    let started = Instant::now();
    for (round, seed) in SEEDS.into_iter().enumerate() {
        let key = format!("session-{round}");
        let writes = race(&server, &key, seed, 0).await;
        assert!(used_every_writer(&writes));
        check_answers(&writes);
        check_final_state(&server, &key, &writes).await;
        // Shuffled arrival means most writes lose; if none did, nothing raced.
        assert!(
            writes.iter().any(|w| !w.accepted()),
            "seed {seed:#x}: no write was refused"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_puts_and_deletes_end_in_the_newest_write_whichever_kind() {
    let server = TestServer::start().await;
    // Seeds differ from the PUT-only race; include one where a delete wins.
    let mut delete_won = false;
    for (round, seed) in SEEDS.into_iter().chain([7, 8, 9]).enumerate() {
        let key = format!("mixed-{round}");
        let writes = race(&server, &key, seed, 35).await;
        assert!(writes.iter().any(|w| w.kind == Kind::Delete));
        check_answers(&writes);
        check_final_state(&server, &key, &writes).await;
        let newest = writes.iter().max_by_key(|w| w.timestamp).expect("writes");
        delete_won |= newest.kind == Kind::Delete;
    }
    assert!(delete_won, "no seed ended on a delete; pick seeds that do");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_different_values_at_one_timestamp_exactly_one_wins() {
    let server = TestServer::start().await;
    let url = Arc::new(server.url("/keys/tied"));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let response = Client::new()
                .put(url.as_str())
                .header("X-Write-Timestamp", T0.to_string())
                .body(format!("writer-{writer}"))
                .send()
                .await
                .expect("PUT answered");
            (writer, response.status())
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (writer, status) = task.await.expect("writer task");
        match status {
            StatusCode::CREATED => winners.push(writer),
            StatusCode::CONFLICT => {}
            other => panic!("writer {writer} answered {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let stored = Client::new()
        .get(url.as_str())
        .send()
        .await
        .expect("GET answered")
        .text()
        .await
        .expect("body");
    assert_eq!(stored, format!("writer-{}", winners[0]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_identical_writes_at_one_timestamp_all_succeed_once_created() {
    let server = TestServer::start().await;
    let url = Arc::new(server.url("/keys/retried"));
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            Client::new()
                .put(url.as_str())
                .header("X-Write-Timestamp", T0.to_string())
                .header("Content-Type", "text/plain")
                .body("same")
                .send()
                .await
                .expect("PUT answered")
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("writer task"));
    }
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let repeated = statuses
        .iter()
        .filter(|s| **s == StatusCode::NO_CONTENT)
        .count();
    assert_eq!((created, repeated), (1, WRITERS - 1), "{statuses:?}");
    server.stop().await;
}
