//! The PostgreSQL engine against a real server over real sockets (see
//! tests/common/postgres.rs for where the server comes from).

mod common;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::postgres::{self as pg, TestDatabase};
use tidemark::guard::{self, Change, Condition, OwnerChange, SessionWrite};
use tidemark::metrics::Metrics;
use tidemark::record::{FieldClock, FieldClocks, Meta, Record, State};
use tidemark::store::postgres::{PgStore, PostgresOptions};
use tidemark::store::{Counts, GuardClock, Guarded, GuardedWrite, KeyRange, Purged, StoreError};

const GRACE: u64 = 3_600_000_000;
const T0: u64 = 1_767_225_600_000_000;

fn clock(now: u64) -> GuardClock {
    GuardClock {
        now,
        grace_micros: GRACE,
    }
}

fn live(ts: u64, value: &[u8]) -> Record {
    Record::live(ts, value.to_vec(), "text/plain".into(), None)
}

/// `record` as the write that created its key at server time `at` leaves it: a live
/// value records its creation time.
fn created(mut record: Record, at: u64) -> Record {
    if let State::Live { .. } = record.state {
        record.meta.created_at = Some(at);
    }
    record
}

/// A plain text value at `ts`, created by a write at server time `at`.
fn made(ts: u64, value: &[u8], at: u64) -> Record {
    created(live(ts, value), at)
}

fn put(key: &[u8], ts: u64, value: &[u8]) -> GuardedWrite {
    write(key, live(ts, value))
}

fn write(key: &[u8], record: Record) -> GuardedWrite {
    GuardedWrite::whole(key.to_vec(), record)
}

fn delete(key: &[u8], ts: u64, now: u64) -> GuardedWrite {
    write(key, Record::tombstone(ts, now))
}

/// The server time at which a delete leaves exactly `record` (a delete's tombstone
/// records when it was applied); `otherwise` for a live record.
fn now_of(record: &Record, otherwise: u64) -> u64 {
    match record.state {
        State::Tombstone { deleted_at } => deleted_at,
        State::Live { .. } => otherwise,
    }
}

/// One guarded write on `store` at `now`, answered by the engine.
async fn decide(store: &PgStore, write: GuardedWrite, now: GuardClock) -> Guarded {
    store
        .guarded_write(write, now)
        .await
        .expect("guarded write")
}

async fn connect(options: &PostgresOptions) -> Result<PgStore, StoreError> {
    PgStore::connect(options, Arc::new(Metrics::new())).await
}

/// A store on a fresh database, or `None` (the test returns) without PostgreSQL.
async fn engine() -> Option<(PgStore, TestDatabase)> {
    let db = pg::database().await?;
    let store = connect(&pg::options(&db.url)).await.expect("connect");
    Some((store, db))
}

macro_rules! engine_or_skip {
    () => {
        match engine().await {
            Some(found) => found,
            None => return,
        }
    };
}

/// A tiny deterministic generator, for shuffles.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn every_record_shape_round_trips() {
    let (store, _db) = engine_or_skip!();
    let shapes: Vec<(&[u8], Record)> = vec![
        (b"plain", live(1, b"value")),
        (b"empty-value", live(2, b"")),
        (
            b"binary",
            Record::live(
                3,
                vec![0, 0xFF, 0x80, 10, 0],
                "application/octet-stream".into(),
                None,
            ),
        ),
        (
            b"expiring",
            Record::live(
                4,
                b"v".to_vec(),
                "application/json; charset=utf-8".into(),
                Some(T0),
            ),
        ),
        (
            b"unicode-type",
            Record::live(
                5,
                "žluťoučký".into(),
                "text/plain; x=\u{1F600}".into(),
                Some(0),
            ),
        ),
        (b"tombstone", Record::tombstone(6, T0)),
        (&[0x00, 0xFF, 0x00], Record::tombstone(u64::MAX, u64::MAX)),
        (b"", live(7, b"empty key")),
    ];
    for (key, record) in &shapes {
        let outcome = decide(
            &store,
            write(key, record.clone()),
            clock(now_of(record, T0)),
        )
        .await;
        assert_eq!(outcome, Guarded::Applied { was_live: false }, "{key:?}");
    }
    // Each live value was created by the write at T0.
    let shapes: Vec<(&[u8], Record)> = shapes
        .into_iter()
        .map(|(key, record)| (key, created(record, T0)))
        .collect();
    for (key, record) in &shapes {
        assert_eq!(
            store.get(key).await.unwrap().as_ref(),
            Some(record),
            "{key:?}"
        );
    }
    assert_eq!(store.get(b"never-written").await.unwrap(), None);
    let keys: Vec<Vec<u8>> = vec![
        b"tombstone".to_vec(),
        b"missing".to_vec(),
        b"plain".to_vec(),
        b"plain".to_vec(),
    ];
    let many = store.get_many(&keys).await.unwrap();
    assert_eq!(
        many,
        vec![
            Some(shapes[5].1.clone()),
            None,
            Some(shapes[0].1.clone()),
            Some(shapes[0].1.clone())
        ]
    );
    assert_eq!(
        store.get_many(&[]).await.unwrap(),
        Vec::<Option<Record>>::new()
    );
}

#[tokio::test]
async fn extreme_u64_timestamps_keep_their_order_and_outcome() {
    let (store, _db) = engine_or_skip!();
    let points = [
        0,
        1,
        i64::MAX as u64,
        1 << 63,
        (1 << 63) + 1,
        u64::MAX - 1,
        u64::MAX,
    ];
    let mut previous = None;
    for ts in points {
        let outcome = decide(&store, put(b"k", ts, &ts.to_be_bytes()), clock(T0)).await;
        let expected = Guarded::Applied {
            was_live: previous.is_some(),
        };
        assert_eq!(outcome, expected, "ts {ts}");
        assert_eq!(
            store.get(b"k").await.unwrap(),
            Some(made(ts, &ts.to_be_bytes(), T0))
        );
        // Every earlier point is now stale against it.
        for older in points.iter().copied().filter(|p| *p < ts) {
            let outcome = decide(&store, put(b"k", older, b"late"), clock(T0)).await;
            assert_eq!(
                outcome,
                Guarded::Stale { current: ts },
                "{older} after {ts}"
            );
        }
        previous = Some(ts);
    }
    // Expiry and deletion times at the extremes compare correctly too.
    let forever = Record::live(1, b"v".to_vec(), "t".into(), Some(u64::MAX));
    decide(&store, write(b"e", forever.clone()), clock(T0)).await;
    assert_eq!(store.get(b"e").await.unwrap(), Some(created(forever, T0)));
    assert_eq!(
        store.counts(u64::MAX - 1).await.unwrap().expired,
        0,
        "expires at u64::MAX is still live just before it"
    );
    assert_eq!(store.counts(u64::MAX).await.unwrap().expired, 1);
}

#[tokio::test]
async fn newer_applies_and_older_is_stale() {
    let (store, _db) = engine_or_skip!();
    let c = clock(T0);
    assert_eq!(
        store.guarded_write(put(b"k", 100, b"a"), c).await.unwrap(),
        Guarded::Applied { was_live: false }
    );
    assert_eq!(
        store.guarded_write(put(b"k", 101, b"b"), c).await.unwrap(),
        Guarded::Applied { was_live: true }
    );
    assert_eq!(
        store.guarded_write(put(b"k", 99, b"c"), c).await.unwrap(),
        Guarded::Stale { current: 101 }
    );
    assert_eq!(
        store.guarded_write(delete(b"k", 99, T0), c).await.unwrap(),
        Guarded::Stale { current: 101 }
    );
    assert_eq!(store.get(b"k").await.unwrap(), Some(made(101, b"b", T0)));
    assert_eq!(
        store.guarded_write(delete(b"k", 102, T0), c).await.unwrap(),
        Guarded::Applied { was_live: true }
    );
    assert_eq!(
        decide(&store, put(b"k", 101, b"old"), c).await,
        Guarded::Stale { current: 102 }
    );
    // A delete of a key never written leaves a guarding tombstone.
    assert_eq!(
        decide(&store, delete(b"fresh", 50, T0), c).await,
        Guarded::Applied { was_live: false }
    );
    assert_eq!(
        decide(&store, put(b"fresh", 49, b"x"), c).await,
        Guarded::Stale { current: 50 }
    );
}

#[tokio::test]
async fn equal_timestamp_is_a_repeat_only_for_the_identical_write() {
    let (store, _db) = engine_or_skip!();
    let c = clock(T0);
    store.guarded_write(put(b"k", 100, b"a"), c).await.unwrap();
    assert_eq!(
        store.guarded_write(put(b"k", 100, b"a"), c).await.unwrap(),
        Guarded::Repeated
    );
    assert_eq!(
        store.guarded_write(put(b"k", 100, b"b"), c).await.unwrap(),
        Guarded::Tie { current: 100 }
    );
    let other_type = write(
        b"k",
        Record::live(100, b"a".to_vec(), "application/json".into(), None),
    );
    assert_eq!(
        store.guarded_write(other_type, c).await.unwrap(),
        Guarded::Tie { current: 100 }
    );
    assert_eq!(
        store.guarded_write(delete(b"k", 100, T0), c).await.unwrap(),
        Guarded::Tie { current: 100 }
    );
    store.guarded_write(delete(b"t", 100, T0), c).await.unwrap();
    assert_eq!(
        decide(&store, delete(b"t", 100, T0 + 1), c).await,
        Guarded::Repeated
    );
    assert_eq!(
        store.guarded_write(put(b"t", 100, b"a"), c).await.unwrap(),
        Guarded::Tie { current: 100 }
    );
    assert_eq!(store.get(b"k").await.unwrap(), Some(made(100, b"a", T0)));
    assert_eq!(
        store.get(b"t").await.unwrap(),
        Some(Record::tombstone(100, T0))
    );
}

#[tokio::test]
async fn a_tombstone_guards_until_its_grace_has_passed() {
    let (store, _db) = engine_or_skip!();
    decide(&store, delete(b"k", 100, 1_000), clock(1_000)).await;
    assert_eq!(
        decide(&store, put(b"k", 50, b"a"), clock(1_000 + GRACE - 1)).await,
        Guarded::Stale { current: 100 }
    );
    assert_eq!(
        decide(&store, put(b"k", 50, b"a"), clock(1_000 + GRACE)).await,
        Guarded::Applied { was_live: false }
    );
    assert_eq!(
        store.get(b"k").await.unwrap(),
        Some(made(50, b"a", 1_000 + GRACE))
    );
}

#[tokio::test]
async fn an_expired_record_guards_until_its_grace_has_passed() {
    let (store, _db) = engine_or_skip!();
    let expiring = Record::live(100, b"a".to_vec(), "text/plain".into(), Some(1_000));
    decide(&store, write(b"k", expiring), clock(500)).await;
    assert_eq!(
        decide(&store, put(b"k", 50, b"b"), clock(1_000 + GRACE - 1)).await,
        Guarded::Stale { current: 100 }
    );
    // Newer still applies while expired, and the expired value was not live.
    assert_eq!(
        decide(&store, put(b"other", 1, b"x"), clock(0)).await,
        Guarded::Applied { was_live: false }
    );
    assert_eq!(
        decide(&store, put(b"k", 50, b"b"), clock(1_000 + GRACE)).await,
        Guarded::Applied { was_live: false }
    );
    // Before its expiry the value was live: replacing it says so.
    let expiring = Record::live(10, b"a".to_vec(), "text/plain".into(), Some(2_000));
    decide(&store, write(b"j", expiring), clock(500)).await;
    assert_eq!(
        decide(&store, put(b"j", 11, b"b"), clock(1_999)).await,
        Guarded::Applied { was_live: true }
    );
}

#[tokio::test]
async fn if_absent_refuses_a_live_value_before_the_timestamp_rule() {
    let (store, _db) = engine_or_skip!();
    let keep = |key: &[u8], ts, value: &[u8]| GuardedWrite {
        condition: tidemark::guard::Condition::IfAbsent,
        ..put(key, ts, value)
    };
    assert_eq!(
        decide(&store, keep(b"k", 10, b"a"), clock(T0)).await,
        Guarded::Applied { was_live: false }
    );
    // Live: Exists, whether newer, equal or older.
    for ts in [11, 10, 9] {
        assert_eq!(
            decide(&store, keep(b"k", ts, b"b"), clock(T0)).await,
            Guarded::Exists,
            "ts {ts}"
        );
    }
    assert_eq!(store.get(b"k").await.unwrap(), Some(made(10, b"a", T0)));
    // A tombstone is not live: the timestamp rule decides.
    decide(&store, delete(b"k", 20, T0), clock(T0)).await;
    assert_eq!(
        decide(&store, keep(b"k", 19, b"b"), clock(T0)).await,
        Guarded::Stale { current: 20 }
    );
    assert_eq!(
        decide(&store, keep(b"k", 21, b"b"), clock(T0)).await,
        Guarded::Applied { was_live: false }
    );
    // Expired is not live either.
    let expiring = Record::live(30, b"a".to_vec(), "t".into(), Some(T0 + 10));
    decide(&store, write(b"e", expiring), clock(T0)).await;
    assert_eq!(
        decide(&store, keep(b"e", 31, b"b"), clock(T0 + 9)).await,
        Guarded::Exists
    );
    assert_eq!(
        decide(&store, keep(b"e", 29, b"b"), clock(T0 + 10)).await,
        Guarded::Stale { current: 30 }
    );
    assert_eq!(
        decide(&store, keep(b"e", 31, b"b"), clock(T0 + 10)).await,
        Guarded::Applied { was_live: false }
    );
}

/// Several replicas (separate pools), many connections, one key, every timestamp in
/// shuffled order: the key ends on the newest write and every answer is one the
/// rule allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_key_end_on_the_newest_write() {
    let Some(db) = pg::database().await else {
        return;
    };
    const REPLICAS: usize = 4;
    const TASKS_PER_REPLICA: usize = 4;
    const WRITES: u64 = 60; // per task
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        let mut options = pg::options(&db.url);
        options.pool_size = TASKS_PER_REPLICA;
        replicas.push(connect(&options).await.unwrap());
    }
    let tasks = (REPLICAS * TASKS_PER_REPLICA) as u64;
    let newest = tasks * WRITES;
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let store = replicas[task as usize % REPLICAS].clone();
        handles.push(tokio::spawn(async move {
            // Each task owns the timestamps ≡ task (mod tasks), plus a second copy of
            // some other task's, so ties and repeats happen too.
            let mut stamps: Vec<(u64, Vec<u8>)> = (0..WRITES)
                .map(|i| {
                    let ts = i * tasks + task + 1;
                    (ts, ts.to_be_bytes().to_vec())
                })
                .collect();
            let mut rng = XorShift(task * 7919 + 1);
            for _ in 0..WRITES / 4 {
                let ts = rng.next() % newest + 1;
                let value = if ts.is_multiple_of(2) {
                    ts.to_be_bytes().to_vec() // same as the owner's write: a repeat
                } else {
                    b"other".to_vec() // same stamp, other value: a tie
                };
                stamps.push((ts, value));
            }
            rng.shuffle(&mut stamps);
            let mut outcomes = Vec::new();
            for (ts, value) in stamps {
                let outcome = decide(&store, put(b"hot", ts, &value), clock(T0)).await;
                outcomes.push(outcome);
            }
            outcomes
        }));
    }
    let mut applied = 0;
    for handle in handles {
        for outcome in handle.await.unwrap() {
            match outcome {
                Guarded::Applied { .. } => applied += 1,
                Guarded::Stale { current } | Guarded::Tie { current } => {
                    assert!(current >= 1 && current <= newest)
                }
                Guarded::Repeated => {}
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(applied >= 1);
    let stored = replicas[0].get(b"hot").await.unwrap().unwrap();
    assert_eq!(stored.timestamp, newest);
    let wanted = [
        made(newest, &newest.to_be_bytes(), T0),
        made(newest, b"other", T0),
    ];
    assert!(wanted.contains(&stored), "{stored:?}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn a_batch_judges_later_writes_against_earlier_ones() {
    let (store, _db) = engine_or_skip!();
    decide(&store, put(b"b", 9, b"old"), clock(T0)).await;
    let outcomes = store
        .guarded_batch(
            vec![
                put(b"a", 5, b"x"),
                put(b"a", 3, b"y"),
                put(b"a", 5, b"x"),
                put(b"a", 5, b"z"),
                delete(b"a", 7, T0),
                put(b"b", 8, b"stale"),
                put(b"b", 10, b"new"),
            ],
            clock(T0),
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            Guarded::Applied { was_live: false },
            Guarded::Stale { current: 5 },
            Guarded::Repeated,
            Guarded::Tie { current: 5 },
            Guarded::Applied { was_live: true },
            Guarded::Stale { current: 9 },
            Guarded::Applied { was_live: true },
        ]
    );
    assert_eq!(
        store.get(b"a").await.unwrap(),
        Some(Record::tombstone(7, T0))
    );
    assert_eq!(store.get(b"b").await.unwrap(), Some(made(10, b"new", T0)));
    assert_eq!(
        store.guarded_batch(vec![], clock(T0)).await.unwrap(),
        vec![]
    );
}

#[tokio::test]
async fn a_batch_that_fails_part_way_changes_nothing() {
    let (store, _db) = engine_or_skip!();
    decide(&store, put(b"b", 1, b"before"), clock(T0)).await;
    // A key far larger than a B-tree index entry may be: the database refuses it.
    let mut rng = XorShift(42);
    let huge: Vec<u8> = (0..16_384).map(|_| rng.next() as u8).collect();
    let result = store
        .guarded_batch(
            vec![
                put(b"a", 1, b"x"),
                put(b"b", 2, b"after"),
                put(&huge, 1, b"y"),
            ],
            clock(T0),
        )
        .await;
    assert!(matches!(result, Err(StoreError::Engine(_))), "{result:?}");
    assert_eq!(store.get(b"a").await.unwrap(), None);
    assert_eq!(store.get(b"b").await.unwrap(), Some(made(1, b"before", T0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn update_is_atomic_under_concurrency() {
    let (store, _db) = engine_or_skip!();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        handles.push(tokio::spawn(async move {
            for _ in 0..50 {
                store
                    .update(b"counter".to_vec(), |stored| {
                        let n = stored
                            .and_then(|r| r.live_value(0).map(<[u8]>::to_vec))
                            .and_then(|v| String::from_utf8(v).ok())
                            .and_then(|s| s.parse::<u64>().ok())
                            .unwrap_or(0);
                        let next = n + 1;
                        (Some(live(next, next.to_string().as_bytes())), next)
                    })
                    .await
                    .unwrap();
            }
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(
        store.get(b"counter").await.unwrap(),
        Some(live(400, b"400"))
    );
}

#[tokio::test]
async fn update_leaves_the_key_alone_when_told_to() {
    let (store, _db) = engine_or_skip!();
    let seen = store
        .update(b"absent".to_vec(), |stored| (None, stored))
        .await
        .unwrap();
    assert_eq!(seen, None);
    assert_eq!(store.get(b"absent").await.unwrap(), None);
    assert_eq!(store.counts(T0).await.unwrap().records, 0);
    decide(&store, put(b"k", 5, b"v"), clock(T0)).await;
    let seen = store
        .update(b"k".to_vec(), |stored| (None, stored))
        .await
        .unwrap();
    assert_eq!(seen, Some(made(5, b"v", T0)));
    let replaced = store
        .update(b"k".to_vec(), |_| (Some(Record::tombstone(1, T0)), "done"))
        .await
        .unwrap();
    assert_eq!(replaced, "done");
    // Unguarded: an older timestamp is written as told.
    assert_eq!(
        store.get(b"k").await.unwrap(),
        Some(Record::tombstone(1, T0))
    );
}

#[tokio::test]
async fn scan_follows_prefixes_and_bounds_in_byte_order() {
    let (store, _db) = engine_or_skip!();
    let keys: Vec<Vec<u8>> = vec![
        vec![0x00],
        b"a".to_vec(),
        b"a\x00".to_vec(),
        b"ab".to_vec(),
        b"a\xff".to_vec(),
        b"a\xff\xff".to_vec(),
        b"b".to_vec(),
        vec![0xFF],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0x00],
    ];
    let mut shuffled = keys.clone();
    XorShift(7).shuffle(&mut shuffled);
    for (i, key) in shuffled.iter().enumerate() {
        // Tombstones and expired records are scanned too.
        let record = match i % 3 {
            0 => live(1, key),
            1 => Record::tombstone(1, T0),
            _ => Record::live(1, key.clone(), "t".into(), Some(1)),
        };
        decide(&store, write(key, record), clock(T0)).await;
    }
    let scan = |start: Bound<&[u8]>, prefix: &[u8], limit| {
        let store = store.clone();
        let range = KeyRange {
            start: start.map(<[u8]>::to_vec),
            prefix: prefix.to_vec(),
        };
        async move {
            store
                .scan(range, limit)
                .await
                .unwrap()
                .into_iter()
                .map(|(key, _)| key)
                .collect::<Vec<_>>()
        }
    };
    let pick = |idx: &[usize]| idx.iter().map(|&i| keys[i].clone()).collect::<Vec<_>>();
    assert_eq!(scan(Bound::Unbounded, b"", 100).await, keys);
    assert_eq!(
        scan(Bound::Unbounded, b"a", 100).await,
        pick(&[1, 2, 3, 4, 5])
    );
    assert_eq!(scan(Bound::Unbounded, b"a\xff", 100).await, pick(&[4, 5]));
    assert_eq!(scan(Bound::Unbounded, &[0xFF], 100).await, pick(&[7, 8, 9]));
    assert_eq!(
        scan(Bound::Unbounded, &[0xFF, 0xFF], 100).await,
        pick(&[8, 9])
    );
    assert_eq!(scan(Bound::Unbounded, b"c", 100).await, pick(&[]));
    assert_eq!(
        scan(Bound::Excluded(b"a"), b"a", 100).await,
        pick(&[2, 3, 4, 5])
    );
    assert_eq!(
        scan(Bound::Included(b"a\xff"), b"a", 100).await,
        pick(&[4, 5])
    );
    assert_eq!(scan(Bound::Excluded(b"a\xff"), b"a", 100).await, pick(&[5]));
    assert_eq!(scan(Bound::Excluded(b"ab"), b"a", 100).await, pick(&[4, 5]));
    assert_eq!(
        scan(Bound::Excluded(b"a\xff\xff"), b"a", 100).await,
        pick(&[])
    );
    assert_eq!(scan(Bound::Excluded(b"zz"), b"a", 100).await, pick(&[]));
    assert_eq!(
        scan(Bound::Excluded(b"0"), b"a", 100).await,
        pick(&[1, 2, 3, 4, 5])
    );
    assert_eq!(
        scan(Bound::Excluded(&[0xFF]), b"", 100).await,
        pick(&[8, 9])
    );
    assert_eq!(scan(Bound::Unbounded, b"", 3).await, pick(&[0, 1, 2]));
    assert_eq!(scan(Bound::Excluded(b"a\x00"), b"", 2).await, pick(&[3, 4]));
    assert_eq!(scan(Bound::Unbounded, b"", 0).await, pick(&[]));
    // Records come back whole.
    let range = KeyRange {
        start: Bound::Unbounded,
        prefix: b"b".to_vec(),
    };
    let found = store.scan(range, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(Some(&found[0].1), store.get(b"b").await.unwrap().as_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_one_snapshot_while_writes_go_on() {
    let (store, _db) = engine_or_skip!();
    const N: u64 = 2_500; // more than one export page
    let writes: Vec<GuardedWrite> = (0..N)
        .map(|i| put(format!("k{i:05}").as_bytes(), 10, &i.to_be_bytes()))
        .collect();
    store.guarded_batch(writes, clock(T0)).await.unwrap();
    let mut export = store.export(1);
    let first = export.recv().await.unwrap().unwrap();
    assert_eq!(first.0, b"k00000");
    // While the export is under way: rewrite later keys, add new ones, delete some.
    for i in (1..N).step_by(97) {
        let key = format!("k{i:05}");
        decide(&store, put(key.as_bytes(), 11, b"rewritten"), clock(T0)).await;
        decide(
            &store,
            put(format!("k{i:05}-new").as_bytes(), 1, b"n"),
            clock(T0),
        )
        .await;
    }
    store.clear().await.unwrap();
    let mut seen = vec![first];
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(item) = export.recv().await {
        seen.push(item.unwrap());
        assert!(Instant::now() < deadline, "export took too long");
    }
    assert_eq!(seen.len() as u64, N);
    for (i, (key, record)) in seen.iter().enumerate() {
        assert_eq!(key, format!("k{i:05}").as_bytes());
        assert_eq!(record, &made(10, &(i as u64).to_be_bytes(), T0));
    }
}

#[tokio::test]
async fn an_abandoned_export_gives_its_connection_back() {
    let Some(db) = pg::database().await else {
        return;
    };
    let mut options = pg::options(&db.url);
    options.pool_size = 1;
    let store = connect(&options).await.unwrap();
    let writes: Vec<GuardedWrite> = (0..50u64)
        .map(|i| put(format!("k{i:03}").as_bytes(), 1, b"v"))
        .collect();
    store.guarded_batch(writes, clock(T0)).await.unwrap();
    let mut export = store.export(1);
    export.recv().await.unwrap().unwrap();
    drop(export);
    // With one connection in the pool, this only works once the export let go of it.
    let got = tokio::time::timeout(Duration::from_secs(10), store.get(b"k001"))
        .await
        .expect("the export task kept its connection")
        .unwrap();
    assert_eq!(got, Some(made(1, b"v", T0)));
}

#[tokio::test]
async fn purge_removes_only_lapsed_records_in_batches() {
    let (store, _db) = engine_or_skip!();
    let records: Vec<(&[u8], Record)> = vec![
        (b"t10", Record::tombstone(1, 10)),
        (b"t20", Record::tombstone(1, 20)),
        (b"t30", Record::tombstone(1, 30)),
        (b"e15", Record::live(1, b"v".to_vec(), "t".into(), Some(15))),
        (b"e25", Record::live(1, b"v".to_vec(), "t".into(), Some(25))),
        (
            b"e100",
            Record::live(1, b"v".to_vec(), "t".into(), Some(100)),
        ),
        (b"forever", live(1, b"v")),
    ];
    for (key, record) in &records {
        decide(&store, write(key, record.clone()), clock(now_of(record, 0))).await;
    }
    assert_eq!(
        store.counts(20).await.unwrap(),
        Counts {
            records: 7,
            tombstones: 3,
            expired: 1
        }
    );
    assert_eq!(
        store.purge(25, 2).await.unwrap(),
        Purged {
            expired: 0,
            tombstones: 2
        }
    );
    assert_eq!(
        store.purge(25, 2).await.unwrap(),
        Purged {
            expired: 2,
            tombstones: 0
        }
    );
    assert_eq!(store.purge(25, 2).await.unwrap(), Purged::default());
    assert_eq!(store.purge(25, 0).await.unwrap(), Purged::default());
    let left: Vec<Vec<u8>> = store
        .scan(
            KeyRange {
                start: Bound::Unbounded,
                prefix: vec![],
            },
            100,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(
        left,
        vec![b"e100".to_vec(), b"forever".to_vec(), b"t30".to_vec()]
    );
    assert_eq!(
        store.purge(u64::MAX, 10).await.unwrap(),
        Purged {
            expired: 1,
            tombstones: 1
        }
    );
    assert_eq!(store.get(b"forever").await.unwrap(), Some(made(1, b"v", 0)));
}

#[tokio::test]
async fn purge_waits_for_no_one_while_another_replica_sweeps() {
    let (store, db) = engine_or_skip!();
    decide(&store, delete(b"t", 1, 10), clock(10)).await;
    // Another "replica" holds the sweep lock (the engine's advisory key) in an open
    // transaction.
    let mut other = admin(&db.url).await;
    let txn = other.transaction().await.unwrap();
    let held: bool = txn
        .query_one(
            "SELECT pg_try_advisory_xact_lock($1)",
            &[&0x7469_6465_7377_6565_i64],
        )
        .await
        .unwrap()
        .get(0);
    assert!(held);
    let started = Instant::now();
    assert_eq!(store.purge(100, 10).await.unwrap(), Purged::default());
    assert!(started.elapsed() < Duration::from_secs(2));
    txn.rollback().await.unwrap();
    assert_eq!(store.purge(100, 10).await.unwrap().tombstones, 1);
}

#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_connects_are_safe() {
    let Some(db) = pg::database().await else {
        return;
    };
    let options = pg::options(&db.url);
    let connects: Vec<_> = (0..6)
        .map(|_| {
            let options = options.clone();
            tokio::spawn(async move { connect(&options).await })
        })
        .collect();
    for connect in connects {
        connect.await.unwrap().expect("a concurrent connect");
    }
    let again = connect(&options).await.unwrap();
    again
        .guarded_write(put(b"k", 1, b"v"), clock(T0))
        .await
        .unwrap();
    let third = connect(&options).await.unwrap();
    assert_eq!(third.get(b"k").await.unwrap(), Some(made(1, b"v", T0)));
    let versions: Vec<i64> = admin(&db.url)
        .await
        .query("SELECT version FROM tidemark_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_database_with_a_newer_schema_is_refused() {
    let (store, db) = engine_or_skip!();
    admin(&db.url)
        .await
        .execute("INSERT INTO tidemark_schema (version) VALUES (99)", &[])
        .await
        .unwrap();
    let err = connect(&pg::options(&db.url)).await.unwrap_err();
    match &err {
        StoreError::SchemaTooNew {
            path,
            found,
            supported,
        } => {
            assert_eq!(*found, 99);
            assert_eq!(*supported, 3);
            assert_eq!(path.to_string_lossy(), store.location());
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains("99") && message.contains('1'), "{message}");
}

#[tokio::test]
async fn location_and_debug_never_show_the_password() {
    let Some(db) = pg::database().await else {
        return;
    };
    // Trust authentication ignores the password, so any will do.
    let url = db.url.replacen("postgres@", "postgres:hunter2-secret@", 1);
    let mut options = pg::options(&url);
    options.password = Some("other-secret".into());
    let store = connect(&options).await.unwrap();
    let shown = format!("{store:?} {} {options:?}", store.location());
    assert!(!shown.contains("secret"), "{shown}");
    assert!(store.location().ends_with(&format!("/{}", db.name)));
    assert!(store.location().starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn size_clear_flush_and_close() {
    let (store, _db) = engine_or_skip!();
    for i in 0..20u32 {
        store
            .guarded_write(put(&i.to_be_bytes(), 1, &[7; 100]), clock(T0))
            .await
            .unwrap();
    }
    assert!(store.size_bytes().await.unwrap() > 0);
    store.flush().await.unwrap();
    assert!(!store.has_unflushed_commits());
    store.clear().await.unwrap();
    assert_eq!(store.counts(T0).await.unwrap(), Counts::default());
    assert!(store.is_reachable());
    store.close().await.unwrap();
    assert!(matches!(store.get(b"k").await, Err(StoreError::Closed)));
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_in_bounded_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = pg::options(&format!(
        "postgres://postgres@127.0.0.1:{port}/none?sslmode=disable"
    ));
    options.connect_timeout = Duration::from_secs(1);
    let started = Instant::now();
    let err = connect(&options).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn sslmode_require_fails_without_server_tls_and_prefer_falls_back() {
    let Some(db) = pg::database().await else {
        return;
    };
    // The test server has no TLS.
    if std::env::var_os("TIDEMARK_TEST_DATABASE_URL").is_some() {
        println!("SKIPPED: the external server's TLS setup is unknown");
        return;
    }
    let prefer = db.url.replace("sslmode=disable", "sslmode=prefer");
    let store = connect(&pg::options(&prefer)).await.unwrap();
    decide(&store, put(b"k", 1, b"v"), clock(T0)).await;
    let require = db.url.replace("sslmode=disable", "sslmode=require");
    let started = Instant::now();
    let err = connect(&pg::options(&require)).await.unwrap_err();
    assert!(
        err.to_string().contains("TLS") || format!("{err:?}").contains("Tls"),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The server goes away mid-use: operations fail as Unavailable within bounded time
/// (no hang), the probe notices, and the engine recovers by itself when it returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_is_unavailable_then_recovers() {
    let Some(cluster) = pg::private_cluster() else {
        return;
    };
    let db = cluster.database().await;
    let mut options = pg::options(&db.url);
    options.connect_timeout = Duration::from_secs(1);
    options.statement_timeout = Duration::from_secs(2);
    let store = connect(&options).await.unwrap();
    decide(&store, put(b"k", 1, b"v"), clock(T0)).await;
    assert!(store.is_reachable());

    cluster.stop();
    let started = Instant::now();
    let read = store.get(b"k").await;
    assert!(matches!(read, Err(StoreError::Unavailable(_))), "{read:?}");
    let written = store.guarded_write(put(b"k", 2, b"w"), clock(T0)).await;
    assert!(
        matches!(written, Err(StoreError::Unavailable(_))),
        "{written:?}"
    );
    let updated = store.update(b"k".to_vec(), |r| (None, r)).await;
    assert!(
        matches!(updated, Err(StoreError::Unavailable(_))),
        "{updated:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.is_reachable() {
        assert!(Instant::now() < deadline, "is_reachable stayed true");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cluster.start();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.get(b"k").await {
            Ok(found) => {
                assert_eq!(found, Some(made(1, b"v", T0)));
                break;
            }
            Err(StoreError::Unavailable(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("did not recover: {e:?}"),
        }
    }
    assert_eq!(
        decide(&store, put(b"k", 2, b"w"), clock(T0)).await,
        Guarded::Applied { was_live: true }
    );
    while !store.is_reachable() {
        assert!(Instant::now() < deadline, "is_reachable stayed false");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    store.close().await.unwrap();
}

/// At start the engine keeps trying for `connect_timeout`: a server that comes up
/// within it is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_waits_for_a_server_that_is_starting() {
    let Some(cluster) = pg::private_cluster() else {
        return;
    };
    let db = cluster.database().await;
    cluster.stop();
    let mut options = pg::options(&db.url);
    options.connect_timeout = Duration::from_secs(20);
    let connecting = tokio::spawn(async move { connect(&options).await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.start();
    let store = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connect gave no answer")
        .unwrap()
        .expect("connect once the server is up");
    decide(&store, put(b"k", 1, b"v"), clock(T0)).await;
}

/// Each sslmode against a server that takes TLS only, with a certificate for a name
/// other than the address connected to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_check_what_they_promise() {
    let Some((cluster, tls)) = pg::private_tls_cluster() else {
        return;
    };
    let name = cluster.database_over_socket().await;
    let port = cluster.port();
    let url = |host: &str, query: &str| {
        let mut options = pg::options(&format!("postgres://postgres@{host}:{port}/{name}?{query}"));
        options.connect_timeout = Duration::from_secs(1);
        options
    };
    let ca = tls.ca.display().to_string();
    let other_ca = tls.other_ca.display().to_string();
    let by_name = tls.server_name;
    let accepted = [
        // Encrypted, nothing verified.
        url("127.0.0.1", "sslmode=require"),
        url("127.0.0.1", "sslmode=prefer"),
        // Chain checked, name not: the address is not in the certificate.
        url("127.0.0.1", &format!("sslmode=verify-ca&sslrootcert={ca}")),
        // Chain and name: connect to the address, verify the certificate's name.
        url(
            by_name,
            &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
        ),
    ];
    for options in &accepted {
        let store = connect(options)
            .await
            .unwrap_or_else(|e| panic!("{options:?}: {e:?}"));
        decide(&store, put(b"k", 1, b"v"), clock(T0)).await;
        store.close().await.unwrap();
    }
    // Each refused at once with its cause, not retried as an outage.
    let refused = [
        // The server takes no plaintext.
        (url("127.0.0.1", "sslmode=disable"), "no encryption"),
        // The name connected to is not the certificate's.
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            "NotValidForName",
        ),
        // Signed by a CA we do not trust (and not by a public one either).
        (
            url(
                "127.0.0.1",
                &format!("sslmode=verify-ca&sslrootcert={other_ca}"),
            ),
            "UnknownIssuer",
        ),
        (url("127.0.0.1", "sslmode=verify-ca"), "UnknownIssuer"),
        (
            url(
                by_name,
                &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={other_ca}"),
            ),
            "UnknownIssuer",
        ),
    ];
    for (options, cause) in &refused {
        let started = Instant::now();
        let err = connect(options).await.expect_err("connected");
        assert!(matches!(err, StoreError::Engine(_)), "{options:?}: {err:?}");
        assert!(format!("{err:?}").contains(cause), "{options:?}: {err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{options:?}");
    }
}

/// A statement stuck behind a lock ends at the statement timeout as Unavailable,
/// and the engine is fine afterwards.
#[tokio::test]
async fn a_write_blocked_by_a_lock_times_out_as_unavailable() {
    let Some(db) = pg::database().await else {
        return;
    };
    let mut options = pg::options(&db.url);
    options.statement_timeout = Duration::from_millis(500);
    let store = connect(&options).await.unwrap();
    decide(&store, put(b"k", 1, b"v"), clock(T0)).await;
    let mut other = admin(&db.url).await;
    let txn = other.transaction().await.unwrap();
    txn.execute(
        "SELECT 1 FROM tidemark_records WHERE key = 'k' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let started = Instant::now();
    let result = store.guarded_write(put(b"k", 2, b"w"), clock(T0)).await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    txn.rollback().await.unwrap();
    assert_eq!(
        decide(&store, put(b"k", 2, b"w"), clock(T0)).await,
        Guarded::Applied { was_live: true }
    );
}

/// The database goes away in the middle of an export: the records read so far
/// arrive, then the failure as the last item.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_cut_off_by_an_outage_ends_with_the_error() {
    let Some(cluster) = pg::private_cluster() else {
        return;
    };
    let db = cluster.database().await;
    let mut options = pg::options(&db.url);
    options.connect_timeout = Duration::from_secs(1);
    let store = connect(&options).await.unwrap();
    let writes: Vec<GuardedWrite> = (0..1_500u64)
        .map(|i| put(format!("k{i:05}").as_bytes(), 1, b"v"))
        .collect();
    store.guarded_batch(writes, clock(T0)).await.unwrap();
    let mut export = store.export(1);
    export.recv().await.unwrap().unwrap();
    cluster.stop();
    let mut ok = 1;
    let mut last = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(item) = tokio::time::timeout(Duration::from_secs(20), export.recv())
        .await
        .expect("the export hung")
    {
        assert!(Instant::now() < deadline);
        match item {
            Ok(_) => ok += 1,
            Err(e) => {
                last = Some(e);
                assert!(export.recv().await.is_none(), "items after the error");
                break;
            }
        }
    }
    // The first page was already read; the second could not be.
    assert_eq!(ok, 1_000);
    assert!(matches!(last, Some(StoreError::Unavailable(_))), "{last:?}");
}

// ---------------------------------------------------------------------------------
// Session metadata (schema version 2): owner, creation, lifetime, field clocks.

/// A restore of `record` as exported: stored exactly as it is (on an absent key).
fn restore(key: &[u8], record: Record) -> GuardedWrite {
    GuardedWrite {
        key: key.to_vec(),
        timestamp: record.timestamp,
        change: Change::Restore(record),
        condition: Condition::Always,
        session: SessionWrite::default(),
    }
}

fn with_meta(mut record: Record, meta: Meta) -> Record {
    record.meta = meta;
    record
}

fn owner(name: &str) -> SessionWrite {
    SessionWrite {
        flags: 0,
        owner: OwnerChange::Set(name.to_string()),
        lifetime_micros: None,
    }
}

fn json(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match value {
        serde_json::Value::Object(members) => members,
        other => panic!("not an object: {other}"),
    }
}

fn patch(key: &[u8], ts: u64, members: serde_json::Value) -> GuardedWrite {
    GuardedWrite {
        key: key.to_vec(),
        timestamp: ts,
        change: Change::Patch {
            members: json(members),
            expires_at: None,
            max_bytes: 1 << 20,
        },
        condition: Condition::Always,
        session: SessionWrite::default(),
    }
}

/// Run `write` on `store` and check that the engine answers and stores exactly what
/// `guard::resolve` computes from the record stored before it.
async fn check_against_rule(
    store: &PgStore,
    write: &GuardedWrite,
    clock: GuardClock,
    what: &str,
) -> Guarded {
    let before = store.get(&write.key).await.unwrap();
    let expected = guard::resolve(before.as_ref(), write, clock);
    let answer = store.guarded_write(write.clone(), clock).await.unwrap();
    assert_eq!(answer, expected.answer, "{what}: answer");
    let after = store.get(&write.key).await.unwrap();
    assert_eq!(after, expected.record.or(before), "{what}: stored record");
    answer
}

/// The row's `was_live` bookkeeping column: only the guarded upsert sets it (to
/// whether it replaced a live value); the locked path writes false.
async fn was_live_column(admin: &tokio_postgres::Client, key: &[u8]) -> bool {
    admin
        .query_one(
            "SELECT was_live FROM tidemark_records WHERE key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0)
}

/// A JSON document whose field `b` was written by a PATCH after the whole value.
fn document_with_clocks(now: u64) -> Record {
    let mut clocks = BTreeMap::new();
    clocks.insert(
        "b".to_string(),
        FieldClock {
            timestamp: 100,
            removed: false,
        },
    );
    with_meta(
        Record::live(
            100,
            br#"{"a":1,"b":2}"#.to_vec(),
            "application/json".into(),
            None,
        ),
        Meta {
            flags: 0,
            owner: None,
            created_at: Some(now - 10),
            lifetime_ends: None,
            fields: Some(FieldClocks {
                base: 90,
                base_deleted: false,
                clocks,
            }),
        },
    )
}

/// Whatever the stored record and the session metadata a put or delete asks for, the
/// engine — by its upsert or by the rule run with the row locked — answers and
/// stores exactly what `guard::resolve` computes; and it takes the upsert exactly
/// when the stored row is a live value without owner, lifetime or field clocks.
#[tokio::test]
async fn put_and_delete_store_what_the_rule_computes_for_every_session_write() {
    let (store, db) = engine_or_skip!();
    let admin = admin(&db.url).await;
    let now = T0;
    let c = clock(now);
    let plain = || Record::live(100, b"a".to_vec(), "text/plain".into(), Some(now + 9_000));
    let stored: Vec<(&str, Option<Record>)> = vec![
        ("none", None),
        (
            "live-plain",
            Some(with_meta(
                plain(),
                Meta {
                    flags: 0,
                    created_at: Some(now - 1_000),
                    ..Meta::default()
                },
            )),
        ),
        ("live-v1", Some(plain())),
        (
            "live-owner",
            Some(with_meta(
                plain(),
                Meta {
                    flags: 0,
                    owner: Some("alice".into()),
                    created_at: Some(now - 1_000),
                    ..Meta::default()
                },
            )),
        ),
        (
            "live-lifetime",
            Some(with_meta(
                plain(),
                Meta {
                    flags: 0,
                    created_at: Some(now - 1_000),
                    lifetime_ends: Some(now + 5_000),
                    ..Meta::default()
                },
            )),
        ),
        ("live-fields", Some(document_with_clocks(now))),
        ("tombstone", Some(Record::tombstone(100, now - 1_000))),
        (
            "tombstone-lapsed",
            Some(Record::tombstone(100, now - GRACE - 1)),
        ),
        (
            "expired",
            Some(with_meta(
                Record::live(100, b"a".to_vec(), "text/plain".into(), Some(now - 1_000)),
                Meta {
                    flags: 0,
                    owner: Some("alice".into()),
                    created_at: Some(now - 2_000),
                    lifetime_ends: Some(now - 1_000),
                    fields: None,
                },
            )),
        ),
        (
            "expired-lapsed",
            Some(Record::live(
                100,
                b"a".to_vec(),
                "text/plain".into(),
                Some(now - GRACE - 1),
            )),
        ),
    ];
    let sessions: Vec<(&str, SessionWrite)> = vec![
        ("keep", SessionWrite::default()),
        ("set", owner("bob")),
        (
            "clear",
            SessionWrite {
                flags: 0,
                owner: OwnerChange::Clear,
                lifetime_micros: None,
            },
        ),
        (
            "lifetime",
            SessionWrite {
                flags: 0,
                owner: OwnerChange::Keep,
                lifetime_micros: Some(3_000),
            },
        ),
        (
            "set+lifetime",
            SessionWrite {
                flags: 0,
                owner: OwnerChange::Set("bob".into()),
                lifetime_micros: Some(20_000),
            },
        ),
    ];
    let changes: Vec<(&str, Change)> = vec![
        (
            "put-expiring",
            Change::Put {
                value: b"b".to_vec(),
                content_type: "text/plain".into(),
                expires_at: Some(now + 10_000),
            },
        ),
        (
            "put-forever",
            Change::Put {
                value: b"a".to_vec(),
                content_type: "text/plain".into(),
                expires_at: None,
            },
        ),
        ("delete", Change::Delete),
    ];
    let mut cases = 0;
    let mut fast = 0;
    for (state, record) in &stored {
        for ts in [200, 100, 50] {
            for (change_name, change) in &changes {
                for (session_name, session) in &sessions {
                    for condition in [Condition::Always, Condition::IfAbsent] {
                        let key =
                            format!("{state}/{ts}/{change_name}/{session_name}/{condition:?}");
                        if let Some(record) = record {
                            decide(&store, restore(key.as_bytes(), record.clone()), c).await;
                            assert_eq!(
                                store.get(key.as_bytes()).await.unwrap().as_ref(),
                                Some(record),
                                "{key}: restored"
                            );
                        }
                        let write = GuardedWrite {
                            key: key.clone().into_bytes(),
                            timestamp: ts,
                            change: change.clone(),
                            condition: condition.clone(),
                            session: session.clone(),
                        };
                        let answer = check_against_rule(&store, &write, c, &key).await;
                        cases += 1;
                        // A live value without owner, lifetime or clocks is replaced by
                        // the upsert (which sets was_live); every other live value
                        // through the locked path (which does not).
                        if answer == (Guarded::Applied { was_live: true }) {
                            let by_upsert = matches!(*state, "live-plain" | "live-v1");
                            assert_eq!(
                                was_live_column(&admin, key.as_bytes()).await,
                                by_upsert,
                                "{key}: which path"
                            );
                            fast += usize::from(by_upsert);
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cases, stored.len() * 3 * changes.len() * sessions.len() * 2);
    assert!(fast > 0);
}

/// Metadata survives every write path and comes back from every read path.
#[tokio::test]
async fn session_metadata_round_trips_through_every_write_and_read_path() {
    let (store, _db) = engine_or_skip!();
    let c = clock(T0);
    let mut clocks = BTreeMap::new();
    clocks.insert(
        "ž".to_string(),
        FieldClock {
            timestamp: u64::MAX,
            removed: true,
        },
    );
    clocks.insert(
        String::new(),
        FieldClock {
            timestamp: 1,
            removed: false,
        },
    );
    let full = |name: &str| Meta {
        flags: 0,
        owner: Some(name.to_string()),
        created_at: Some(0),
        lifetime_ends: Some(u64::MAX),
        fields: Some(FieldClocks {
            base: 0,
            base_deleted: true,
            clocks: clocks.clone(),
        }),
    };
    let doc = |ts| Record::live(ts, b"{}".to_vec(), "application/json".into(), Some(T0 + 1));

    // The upsert: a put with an owner and a lifetime onto an absent key.
    let by_upsert = GuardedWrite {
        key: b"a-upsert".to_vec(),
        timestamp: 5,
        change: Change::Put {
            value: b"v".to_vec(),
            content_type: "text/plain".into(),
            expires_at: Some(T0 + 60_000_000),
        },
        condition: Condition::Always,
        session: SessionWrite {
            flags: 0,
            owner: OwnerChange::Set("alice".into()),
            lifetime_micros: Some(1_000_000),
        },
    };
    check_against_rule(&store, &by_upsert, c, "upsert").await;
    let upserted = with_meta(
        Record::live(5, b"v".to_vec(), "text/plain".into(), Some(T0 + 1_000_000)),
        Meta {
            flags: 0,
            owner: Some("alice".into()),
            created_at: Some(T0),
            lifetime_ends: Some(T0 + 1_000_000),
            fields: None,
        },
    );
    // The rule run with the row locked: a restore, and a write onto a session.
    let restored = with_meta(doc(6), full("alice"));
    decide(&store, restore(b"b-locked", restored.clone()), c).await;
    let onto_session = GuardedWrite {
        key: b"a-upsert".to_vec(),
        timestamp: 7,
        ..by_upsert.clone()
    };
    check_against_rule(&store, &onto_session, c, "onto a session").await;
    let upserted = Record {
        timestamp: 7,
        ..upserted
    };
    // A batch: a restore and a put with an owner.
    let batched = with_meta(doc(8), full("bob"));
    let batch_put = GuardedWrite {
        session: owner("bob"),
        ..put(b"d-batch-put", 9, b"w")
    };
    let outcomes = store
        .guarded_batch(
            vec![restore(b"c-batch", batched.clone()), batch_put.clone()],
            c,
        )
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![
            Guarded::Applied { was_live: false },
            Guarded::Applied { was_live: false }
        ]
    );
    let batch_put_record = guard::resolve(None, &batch_put, c).record.unwrap();
    assert_eq!(batch_put_record.meta.owner.as_deref(), Some("bob"));
    // A read-modify-write.
    let updated = with_meta(doc(10), full("alice"));
    let written = updated.clone();
    store
        .update(b"e-update".to_vec(), move |_| (Some(written), ()))
        .await
        .unwrap();

    let expected: Vec<(Vec<u8>, Record)> = vec![
        (b"a-upsert".to_vec(), upserted),
        (b"b-locked".to_vec(), restored),
        (b"c-batch".to_vec(), batched),
        (b"d-batch-put".to_vec(), batch_put_record),
        (b"e-update".to_vec(), updated),
    ];
    for (key, record) in &expected {
        assert_eq!(
            store.get(key).await.unwrap().as_ref(),
            Some(record),
            "{key:?}"
        );
    }
    let keys: Vec<Vec<u8>> = expected.iter().rev().map(|(k, _)| k.clone()).collect();
    let many: Vec<Option<Record>> = store.get_many(&keys).await.unwrap();
    let wanted: Vec<Option<Record>> = expected
        .iter()
        .rev()
        .map(|(_, r)| Some(r.clone()))
        .collect();
    assert_eq!(many, wanted);
    let everything = KeyRange {
        start: Bound::Unbounded,
        prefix: vec![],
    };
    assert_eq!(store.scan(everything, 100).await.unwrap(), expected);
    let mut export = store.export(2);
    let mut exported = Vec::new();
    while let Some(item) = export.recv().await {
        exported.push(item.unwrap());
    }
    assert_eq!(exported, expected);
    let alice: Vec<(Vec<u8>, Record)> = expected
        .iter()
        .filter(|(_, r)| r.meta.owner.as_deref() == Some("alice"))
        .cloned()
        .collect();
    assert_eq!(alice.len(), 3);
    assert_eq!(store.owned("alice", None, 10).await.unwrap(), alice);
    let generic = tidemark::store::Store::from(store.clone());
    assert_eq!(generic.owned("alice", None, 10).await.unwrap(), alice);
}

/// The owner index follows owner changes, deletes, expiry and purges.
#[tokio::test]
async fn the_owner_index_follows_owner_changes_deletes_and_expiry() {
    let (store, _db) = engine_or_skip!();
    let c = clock(T0);
    let keys_of = |found: Vec<(Vec<u8>, Record)>| -> Vec<Vec<u8>> {
        found.into_iter().map(|(k, _)| k).collect()
    };
    let owned = |who: &'static str, after: Option<&'static [u8]>, limit| {
        let store = store.clone();
        async move {
            keys_of(
                tidemark::store::Store::from(store)
                    .owned(who, after.map(<[u8]>::to_vec), limit)
                    .await
                    .unwrap(),
            )
        }
    };
    for (key, who) in [
        (&b""[..], "alice"),
        (b"k1", "alice"),
        (b"k2", "alice"),
        (b"k3", "alice"),
        (b"k4", "bob"),
    ] {
        let write = GuardedWrite {
            session: owner(who),
            ..put(key, 10, b"v")
        };
        assert_eq!(
            decide(&store, write, c).await,
            Guarded::Applied { was_live: false }
        );
    }
    decide(&store, put(b"k5", 10, b"no owner"), c).await;
    let alice = |keys: &[&[u8]]| keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        owned("alice", None, 10).await,
        alice(&[b"", b"k1", b"k2", b"k3"])
    );
    assert_eq!(owned("alice", None, 2).await, alice(&[b"", b"k1"]));
    assert_eq!(owned("alice", Some(b""), 2).await, alice(&[b"k1", b"k2"]));
    assert_eq!(owned("alice", Some(b"k2"), 10).await, alice(&[b"k3"]));
    assert_eq!(owned("alice", Some(b"k3"), 10).await, alice(&[]));
    assert_eq!(owned("alice", None, 0).await, alice(&[]));
    assert_eq!(owned("bob", None, 10).await, alice(&[b"k4"]));
    assert_eq!(owned("nobody", None, 10).await, alice(&[]));

    // A new owner moves the key; keeping the owner keeps it; clearing drops it.
    let moved = GuardedWrite {
        session: owner("bob"),
        ..put(b"k2", 11, b"v")
    };
    check_against_rule(&store, &moved, c, "new owner").await;
    check_against_rule(&store, &put(b"k2", 12, b"kept"), c, "owner kept").await;
    let cleared = GuardedWrite {
        session: SessionWrite {
            flags: 0,
            owner: OwnerChange::Clear,
            lifetime_micros: None,
        },
        ..put(b"k3", 11, b"v")
    };
    check_against_rule(&store, &cleared, c, "owner cleared").await;
    assert_eq!(owned("alice", None, 10).await, alice(&[b"", b"k1"]));
    assert_eq!(owned("bob", None, 10).await, alice(&[b"k2", b"k4"]));
    // A value without an owner gains one.
    let claimed = GuardedWrite {
        session: owner("alice"),
        ..put(b"k5", 11, b"v")
    };
    check_against_rule(&store, &claimed, c, "owner set on a plain value").await;
    assert_eq!(owned("alice", None, 10).await, alice(&[b"", b"k1", b"k5"]));

    // A delete leaves a tombstone, which has no owner.
    check_against_rule(&store, &delete(b"k1", 20, T0), c, "delete").await;
    assert_eq!(owned("alice", None, 10).await, alice(&[b"", b"k5"]));

    // An expired session stays listed until it is purged.
    let short = GuardedWrite {
        timestamp: 30,
        change: Change::Put {
            value: b"v".to_vec(),
            content_type: "text/plain".into(),
            expires_at: Some(T0 + 100),
        },
        ..GuardedWrite {
            session: owner("carol"),
            ..put(b"k6", 30, b"v")
        }
    };
    check_against_rule(&store, &short, c, "expiring").await;
    let found = store.owned("carol", None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert!(!found[0].1.is_live(T0 + 100), "expired, still listed");
    assert_eq!(store.purge(T0 + 100, 100).await.unwrap().expired, 1);
    assert_eq!(owned("carol", None, 10).await, alice(&[]));
    // And purging the tombstone leaves the others alone.
    store.purge(u64::MAX - 1, 100).await.unwrap();
    assert_eq!(owned("alice", None, 10).await, alice(&[b"", b"k5"]));
    assert_eq!(owned("bob", None, 10).await, alice(&[b"k2", b"k4"]));
}

/// The owner listing's statements (as in src/store/postgres/sql.rs) are served by
/// the partial owner index, in key order without a sort.
#[tokio::test]
async fn the_owner_listing_uses_the_owner_index() {
    let (_store, db) = engine_or_skip!();
    let admin = admin(&db.url).await;
    // A tiny table is cheapest to read whole; rule that out to see what is possible.
    admin
        .batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .await
        .unwrap();
    let limit = 10i64;
    for (sql, params) in [
        (
            "EXPLAIN SELECT key FROM tidemark_records WHERE owner = $1 ORDER BY key LIMIT $2",
            vec![
                &"alice" as &(dyn tokio_postgres::types::ToSql + Sync),
                &limit,
            ],
        ),
        (
            "EXPLAIN SELECT key FROM tidemark_records \
             WHERE owner = $1 AND key > $3 ORDER BY key LIMIT $2",
            vec![&"alice", &limit, &b"k".as_slice()],
        ),
    ] {
        let plan: Vec<String> = admin
            .query(sql, &params)
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("tidemark_records_owners"), "{plan}");
        assert!(!plan.contains("Sort"), "{plan}");
    }
}

/// PATCH runs the rule with the row locked and stores what it computes: documents
/// created by a patch, field clocks, whole-value writes merged with newer fields,
/// deletes that keep newer fields, refusals.
#[tokio::test]
async fn patches_store_what_the_rule_computes() {
    let (store, _db) = engine_or_skip!();
    let c = clock(T0);
    let steps: Vec<(&str, GuardedWrite)> = vec![
        (
            "patch creates",
            GuardedWrite {
                session: SessionWrite {
                    flags: 0,
                    owner: OwnerChange::Set("alice".into()),
                    lifetime_micros: Some(50_000_000),
                },
                ..patch(b"doc", 10, serde_json::json!({"a": 1, "b": 2}))
            },
        ),
        (
            "patch one field",
            patch(b"doc", 20, serde_json::json!({"b": 3})),
        ),
        (
            "older whole put merges",
            GuardedWrite {
                change: Change::Put {
                    value: br#"{"a":5,"b":6,"c":7}"#.to_vec(),
                    content_type: "application/json".into(),
                    expires_at: Some(T0 + 100_000_000),
                },
                ..put(b"doc", 15, b"")
            },
        ),
        (
            "patch removes",
            patch(b"doc", 30, serde_json::json!({"a": null})),
        ),
        ("stale patch", patch(b"doc", 5, serde_json::json!({"b": 0}))),
        (
            "repeated patch",
            patch(b"doc", 30, serde_json::json!({"a": null})),
        ),
        ("older delete keeps newer fields", delete(b"doc", 25, T0)),
        ("newer put", put(b"doc", 40, b"not json")),
        (
            "patch onto a non-object",
            patch(b"doc", 50, serde_json::json!({"x": 1})),
        ),
        ("delete", delete(b"doc", 60, T0)),
        (
            "patch onto a tombstone",
            patch(b"doc", 70, serde_json::json!({"y": 1})),
        ),
    ];
    let mut answers = Vec::new();
    for (what, write) in &steps {
        answers.push(check_against_rule(&store, write, c, what).await);
    }
    // The steps reach every branch they are named for.
    let kinds: Vec<&str> = answers
        .iter()
        .map(|answer| match answer {
            Guarded::Patched(report) if report.created => "created",
            Guarded::Patched(report) if report.applied.is_empty() => "repeat",
            Guarded::Patched(_) => "patched",
            Guarded::PatchRefused(_) => "refused",
            Guarded::Merged { .. } => "merged",
            Guarded::Applied { .. } => "applied",
            Guarded::NotAnObject => "not an object",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "patched",
            "merged",
            "patched",
            "refused",
            "repeat",
            "merged",
            "applied",
            "not an object",
            "applied",
            "created"
        ]
    );
    let stored = store.get(b"doc").await.unwrap().unwrap();
    assert_eq!(stored.timestamp, 70);
    assert!(stored.meta.fields.is_some(), "{stored:?}");
    // The field clocks a patch left make the document's ETag; a whole put onto it
    // without newer timestamps is merged, not applied.
    let merged = check_against_rule(
        &store,
        &GuardedWrite {
            change: Change::Put {
                value: br#"{"z":1}"#.to_vec(),
                content_type: "application/json".into(),
                expires_at: None,
            },
            ..put(b"doc", 65, b"")
        },
        c,
        "put older than a field",
    )
    .await;
    assert!(matches!(merged, Guarded::Merged { .. }), "{merged:?}");
}

/// Rows whose field clocks do not decode are corrupt, not misread.
#[tokio::test]
async fn undecodable_field_clocks_are_corrupt() {
    let (store, db) = engine_or_skip!();
    let c = clock(T0);
    decide(&store, restore(b"doc", document_with_clocks(T0)), c).await;
    assert!(
        store
            .get(b"doc")
            .await
            .unwrap()
            .unwrap()
            .meta
            .fields
            .is_some()
    );
    admin(&db.url)
        .await
        .execute(
            "UPDATE tidemark_records SET fields = '\\x01' WHERE key = 'doc'",
            &[],
        )
        .await
        .unwrap();
    let read = store.get(b"doc").await;
    assert!(
        matches!(&read, Err(StoreError::Corrupt { key }) if key == b"doc"),
        "{read:?}"
    );
    let written = store.guarded_write(put(b"doc", 200, b"v"), c).await;
    assert!(
        matches!(written, Err(StoreError::Corrupt { .. })),
        "{written:?}"
    );
    let batch = store
        .guarded_batch(vec![put(b"doc", 200, b"v"), put(b"other", 1, b"v")], c)
        .await
        .unwrap();
    assert_eq!(
        batch,
        vec![Guarded::Corrupt, Guarded::Applied { was_live: false }]
    );
}

/// A database at schema version 1 with rows written the version-1 way upgrades to
/// the current version when tidemark connects, and reads its rows back exactly.
#[tokio::test]
async fn a_version_1_database_upgrades_and_keeps_its_rows() {
    let Some(db) = pg::database().await else {
        return;
    };
    let admin = admin(&db.url).await;
    admin
        .batch_execute(
            "CREATE TABLE tidemark_schema (
                 version    bigint      NOT NULL PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO tidemark_schema (version) VALUES (1);",
        )
        .await
        .unwrap();
    admin
        .batch_execute(include_str!("../migrations/postgres/0001_init.sql"))
        .await
        .unwrap();
    fn mapped(u: u64) -> i64 {
        (u ^ (1 << 63)) as i64
    }
    let rows: Vec<(&[u8], Record)> = vec![
        (b"forever", live(1, b"v")),
        (
            b"expiring",
            Record::live(u64::MAX, vec![0, 0xFF], "application/json".into(), Some(T0)),
        ),
        (b"gone", Record::tombstone(3, T0 - 1)),
    ];
    for (key, record) in &rows {
        let (tombstone, value, content_type, expires_at, deleted_at) = match &record.state {
            State::Live {
                value,
                content_type,
                expires_at,
            } => (
                false,
                Some(value.clone()),
                Some(content_type.clone()),
                expires_at.map(mapped),
                None,
            ),
            State::Tombstone { deleted_at } => (true, None, None, None, Some(mapped(*deleted_at))),
        };
        admin
            .execute(
                "INSERT INTO tidemark_records
                     (key, ts, tombstone, value, content_type, expires_at, deleted_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    key,
                    &mapped(record.timestamp),
                    &tombstone,
                    &value,
                    &content_type,
                    &expires_at,
                    &deleted_at,
                ],
            )
            .await
            .unwrap();
    }
    let store = connect(&pg::options(&db.url)).await.expect("upgrade");
    let versions: Vec<i64> = admin
        .query("SELECT version FROM tidemark_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, vec![1, 2, 3]);
    for (key, record) in &rows {
        assert_eq!(
            store.get(key).await.unwrap().as_ref(),
            Some(record),
            "{key:?}"
        );
    }
    let mut expected: Vec<(Vec<u8>, Record)> =
        rows.iter().map(|(k, r)| (k.to_vec(), r.clone())).collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    let everything = KeyRange {
        start: Bound::Unbounded,
        prefix: vec![],
    };
    assert_eq!(store.scan(everything, 10).await.unwrap(), expected);
    // Connecting again applies nothing more.
    drop(connect(&pg::options(&db.url)).await.unwrap());
    let count: i64 = admin
        .query_one("SELECT count(*) FROM tidemark_schema", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3);
    // Version-1 rows take session writes like any other.
    let claimed = GuardedWrite {
        session: owner("alice"),
        ..put(b"forever", 2, b"w")
    };
    check_against_rule(&store, &claimed, clock(T0), "owner onto a v1 row").await;
    let found = store.owned("alice", None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].1.meta.created_at, None, "created before version 2");
}

/// memcached client flags (schema 3's `flags` column) are stored and read back, 0 as
/// NULL; a guarded put onto a flagged row takes the write's flags (0 for a value
/// written over HTTP), on the one-statement path exactly as the rule decides.
#[tokio::test]
async fn client_flags_round_trip_and_a_new_value_takes_the_writes_flags() {
    let (store, db) = engine_or_skip!();
    let mut flagged = made(1, b"v", T0);
    flagged.meta.flags = u32::MAX;
    let stored = flagged.clone();
    store
        .update(b"k".to_vec(), move |_| (Some(stored), ()))
        .await
        .unwrap();
    assert_eq!(store.get(b"k").await.unwrap(), Some(flagged));
    let flags_column = || async {
        let row = admin(&db.url)
            .await
            .query_one("SELECT flags FROM tidemark_records WHERE key = 'k'", &[])
            .await
            .unwrap();
        row.get::<_, Option<i64>>(0)
    };
    assert_eq!(flags_column().await, Some(i64::from(u32::MAX)));
    check_against_rule(
        &store,
        &put(b"k", 2, b"w"),
        clock(T0),
        "plain put onto flags",
    )
    .await;
    let after = store.get(b"k").await.unwrap().expect("live");
    assert_eq!(after.meta.flags, 0);
    assert_eq!(flags_column().await, None, "0 is stored as NULL");
}
