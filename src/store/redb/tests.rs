//! The embedded engine's recovery and write-closure behaviour.

use super::*;

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        data_dir: dir.to_path_buf(),
        durability: Durability::Immediate,
        cache_size: 1 << 20,
        record_cache_size: 1 << 20,
    }
}

/// A store whose checkpoints happen only when the test asks for one.
fn open_checkpointing_by_hand(dir: &Path) -> RedbStore {
    RedbStore::open_with_checkpoints(
        &options(dir),
        Arc::new(Metrics::new()),
        std::time::Duration::MAX,
    )
    .unwrap()
}

/// A crash leaves the database file as of its last checkpoint plus the log; the
/// reopened store must hold every acknowledged write.
#[tokio::test]
async fn acknowledged_writes_are_replayed_from_the_log_into_an_old_database_file() {
    let live = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let store = open_checkpointing_by_hand(live.path());
    // The database file as of the last checkpoint (here: the empty, just-created one).
    std::fs::copy(
        live.path().join(DB_FILE_NAME),
        image.path().join(DB_FILE_NAME),
    )
    .unwrap();
    for i in 0..50u64 {
        let key = format!("k{i}").into_bytes();
        store
            .write(move |b| b.put(&key, Record::live(i + 1, vec![i as u8], "t".into(), None)))
            .await
            .unwrap();
    }
    store
        .write(|b| b.put(b"k7", Record::tombstone(100, 5)).map(|_| ()))
        .await
        .unwrap();
    store.write(|b| b.remove(b"k8").map(|_| ())).await.unwrap();
    // The log as the crash leaves it.
    for name in WAL_FILE_NAMES {
        std::fs::copy(live.path().join(name), image.path().join(name)).unwrap();
    }
    store.close().await.unwrap();

    let recovered = RedbStore::open(&options(image.path()), Arc::new(Metrics::new())).unwrap();
    for i in (0..50u64).filter(|i| ![7, 8].contains(i)) {
        let record = recovered.get(format!("k{i}").as_bytes()).unwrap().unwrap();
        assert_eq!(record, Record::live(i + 1, vec![i as u8], "t".into(), None));
    }
    assert_eq!(
        recovered.get(b"k7").unwrap(),
        Some(Record::tombstone(100, 5))
    );
    assert_eq!(recovered.get(b"k8").unwrap(), None);
    assert_eq!(recovered.counts(0).unwrap().tombstones, 1);
    recovered.close().await.unwrap();
    drop(recovered);
    // Recovery checkpointed: a second open has nothing to replay and the same data.
    let again = RedbStore::open(&options(image.path()), Arc::new(Metrics::new())).unwrap();
    assert_eq!(again.counts(0).unwrap().records, 49);
    again.close().await.unwrap();
}

fn live(i: u64) -> Record {
    Record::live(i, i.to_be_bytes().to_vec(), "t".into(), None)
}

async fn put_all(store: &RedbStore, keys: std::ops::Range<u64>, version: u64) {
    for i in keys {
        let key = format!("k{i}").into_bytes();
        store
            .write(move |b| b.put(&key, live(version)))
            .await
            .unwrap();
    }
}

/// A crash in the middle of a checkpoint leaves the database file from before it,
/// the log file being checkpointed and the new one: replay must take both, in
/// order, so a key rewritten after the rotation ends at its newest record.
#[tokio::test]
async fn a_crash_during_a_checkpoint_replays_both_log_files_in_order() {
    let live_dir = tempfile::tempdir().unwrap();
    let image = tempfile::tempdir().unwrap();
    let store = open_checkpointing_by_hand(live_dir.path());
    // Two checkpoints first, so the log has gone once round both files.
    put_all(&store, 0..10, 1).await;
    store.inner.core.checkpoint_now().unwrap();
    put_all(&store, 10..20, 1).await;
    store.inner.core.checkpoint_now().unwrap();
    // Before the third checkpoint: the database file and the active log file.
    put_all(&store, 0..30, 2).await;
    let copy = |name: &str| {
        std::fs::copy(live_dir.path().join(name), image.path().join(name)).unwrap();
    };
    copy(DB_FILE_NAME);
    copy(WAL_FILE_NAMES[0]);
    // The checkpoint rotates to the other file; writes after it land there.
    store.inner.core.checkpoint_now().unwrap();
    put_all(&store, 25..35, 3).await;
    copy(WAL_FILE_NAMES[1]);
    store.close().await.unwrap();

    let recovered = RedbStore::open(&options(image.path()), Arc::new(Metrics::new())).unwrap();
    for i in 0..35u64 {
        let want = if i >= 25 { 3 } else { 2 };
        assert_eq!(
            recovered.get(format!("k{i}").as_bytes()).unwrap(),
            Some(live(want)),
            "k{i}"
        );
    }
    assert_eq!(recovered.counts(0).unwrap().records, 35);
    recovered.close().await.unwrap();
}

/// Frames after a hole in the LSN sequence were never acknowledged (the sync that
/// would have covered them also covers the hole): replay stops at the hole.
#[tokio::test]
async fn replay_stops_at_a_gap_in_the_log_sequence() {
    let dir = tempfile::tempdir().unwrap();
    RedbStore::open(&options(dir.path()), Arc::new(Metrics::new()))
        .unwrap()
        .close()
        .await
        .unwrap();
    let file_id = {
        let db = Database::create(dir.path().join(DB_FILE_NAME)).unwrap();
        prepare_schema(&db, dir.path()).unwrap()
    };
    {
        let paths = WAL_FILE_NAMES.map(|name| dir.path().join(name));
        let (mut log, _) = wal::Wal::open(paths, file_id).unwrap();
        for lsn in [1u64, 2, 4] {
            let mut record = Vec::new();
            codec::encode(&live(lsn), &mut record);
            let mut payload = Vec::new();
            wal::log_put(&mut payload, format!("k{lsn}").as_bytes(), &record);
            log.append(lsn, &payload).unwrap();
        }
    }
    let store = RedbStore::open(&options(dir.path()), Arc::new(Metrics::new())).unwrap();
    assert_eq!(store.get(b"k1").unwrap(), Some(live(1)));
    assert_eq!(store.get(b"k2").unwrap(), Some(live(2)));
    assert_eq!(store.get(b"k4").unwrap(), None);
    // New writes continue the sequence after the replayed run.
    store.write(|b| b.put(b"k5", live(5))).await.unwrap();
    store.close().await.unwrap();
    drop(store);
    let again = RedbStore::open(&options(dir.path()), Arc::new(Metrics::new())).unwrap();
    assert_eq!(again.get(b"k5").unwrap(), Some(live(5)));
    again.close().await.unwrap();
}

/// A refused or failed write closure leaves nothing behind: staged changes are
/// applied only when it returns Ok.
#[tokio::test]
async fn a_failed_write_closure_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = RedbStore::open(&options(dir.path()), Arc::new(Metrics::new())).unwrap();
    let failed = store
        .write(|b| {
            b.put(b"a", live(1))?;
            Err::<(), _>(StoreError::engine("boom"))
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(store.get(b"a").unwrap(), None);
    // A closure sees its own staged changes, then everything beneath.
    store.write(|b| b.put(b"b", live(1))).await.unwrap();
    let seen = store
        .write(|b| {
            b.put(b"a", live(2))?;
            let own = b.get(b"a")?;
            let removed = b.remove(b"b")?;
            Ok((own, removed, b.get(b"b")?))
        })
        .await
        .unwrap();
    assert_eq!(seen, (Some(live(2)), Some(live(1)), None));
    store.close().await.unwrap();
}

#[tokio::test]
async fn a_log_from_another_database_file_is_not_replayed() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let store = open_checkpointing_by_hand(a.path());
    store
        .write(|b| b.put(b"x", Record::live(1, b"v".to_vec(), "t".into(), None)))
        .await
        .unwrap();
    for name in WAL_FILE_NAMES {
        std::fs::copy(a.path().join(name), b.path().join(name)).unwrap();
    }
    store.close().await.unwrap();
    let other = RedbStore::open(&options(b.path()), Arc::new(Metrics::new())).unwrap();
    assert_eq!(other.get(b"x").unwrap(), None);
    other.close().await.unwrap();
}

/// The record cache keeps what reads found in redb; every checkpoint that rewrites,
/// removes or clears a cached key must leave reads answering with redb's new state.
#[tokio::test]
async fn reads_after_checkpoints_see_what_they_wrote_over_cached_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_checkpointing_by_hand(dir.path());
    let checkpoint = |store: &RedbStore| store.inner.core.checkpoint_now().unwrap();
    // Cached as absent, then written: the checkpoint turns the entry into the record.
    assert_eq!(store.get(b"k1").unwrap(), None);
    put_all(&store, 0..4, 1).await;
    checkpoint(&store);
    assert_eq!(store.get(b"k1").unwrap(), Some(live(1)));
    // Cached as a record (read from redb above and here), then rewritten and removed.
    assert_eq!(store.get(b"k2").unwrap(), Some(live(1)));
    put_all(&store, 1..2, 2).await;
    store.write(|b| b.remove(b"k2").map(drop)).await.unwrap();
    checkpoint(&store);
    assert_eq!(store.get(b"k1").unwrap(), Some(live(2)));
    assert_eq!(store.get(b"k2").unwrap(), None);
    assert_eq!(
        store
            .get_many(vec![b"k1".to_vec(), b"k3".to_vec()])
            .await
            .unwrap(),
        vec![Some(live(2)), Some(live(1))]
    );
    // A clear empties redb: nothing cached may answer for it.
    store.write(|b| b.clear()).await.unwrap();
    put_all(&store, 3..4, 3).await;
    checkpoint(&store);
    assert_eq!(store.get(b"k1").unwrap(), None);
    assert_eq!(store.get(b"k3").unwrap(), Some(live(3)));
    // The guard's read under the write lock goes through the cache too.
    let seen = store.write(|b| b.get(b"k3")).await.unwrap();
    assert_eq!(seen, Some(live(3)));
    store.close().await.unwrap();
}

/// A reader that took redb's snapshot just before a checkpoint and reads after it
/// answers from that snapshot (its read began before the write it misses), but what it
/// read must not be kept: reads after the checkpoint must see the checkpoint's record.
#[tokio::test]
async fn a_read_from_the_snapshot_a_checkpoint_replaced_is_not_cached_for_later_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_checkpointing_by_hand(dir.path());
    put_all(&store, 0..1, 1).await;
    store.checkpoint().unwrap();
    let late_reader = store.inner.core.reader_on_current_snapshot();
    put_all(&store, 0..1, 2).await;
    store.checkpoint().unwrap();
    assert_eq!(late_reader(b"k0").unwrap(), Some(live(1)));
    assert_eq!(store.get(b"k0").unwrap(), Some(live(2)));
    store.close().await.unwrap();
}

/// What `/metrics` shows of the record cache: reads it answered or missed, and the
/// bytes it holds when counts are taken (every scrape takes them).
#[tokio::test]
async fn the_record_cache_reports_its_hits_misses_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = RedbStore::open_with_checkpoints(
        &options(dir.path()),
        metrics.clone(),
        std::time::Duration::MAX,
    )
    .unwrap();
    put_all(&store, 0..1, 1).await;
    store.checkpoint().unwrap();
    let reads = |result: &str| {
        metrics
            .record_cache_reads
            .with_label_values(&[result])
            .get()
    };
    assert_eq!(store.get(b"k0").unwrap(), Some(live(1)));
    assert_eq!((reads("hit"), reads("miss")), (0, 1));
    assert_eq!(store.get(b"k0").unwrap(), Some(live(1)));
    assert_eq!((reads("hit"), reads("miss")), (1, 1));
    assert_eq!(metrics.record_cache_bytes.get(), 0);
    store.counts(0).unwrap();
    assert!(
        metrics.record_cache_bytes.get() > 8,
        "{}",
        metrics.record_cache_bytes.get()
    );
    store.close().await.unwrap();
}

/// A multi-key read answers as of one instant. One that took its snapshot before a
/// checkpoint and reads after it must not mix a cached record the checkpoint updated
/// with another key's record from its older snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_key_read_interrupted_by_a_checkpoint_answers_as_of_one_instant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_checkpointing_by_hand(dir.path());
    put_all(&store, 0..2, 1).await;
    store.checkpoint().unwrap();
    // k1 cached, k0 not.
    assert_eq!(store.get(b"k1").unwrap(), Some(live(1)));
    let keys = vec![b"k0".to_vec(), b"k1".to_vec()];
    let found = store
        .inner
        .core
        .get_many_meanwhile(&keys, || {
            // k0 is written before k1: no instant has k1 new and k0 old.
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(put_all(&store, 0..2, 2));
            });
            store.checkpoint().unwrap();
        })
        .unwrap();
    assert_eq!(found, vec![Some(live(1)), Some(live(1))]);
    assert_eq!(
        store.get_many(keys).await.unwrap(),
        vec![Some(live(2)), Some(live(2))]
    );
    store.close().await.unwrap();
}

/// A point read that only looks at the record (Tyrant `get`, the guard's read) gets
/// the one the record cache holds, not a copy; one from the memtable, or with the
/// cache off, is the reader's own.
#[tokio::test]
async fn reads_from_the_record_cache_share_the_cached_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_checkpointing_by_hand(dir.path());
    put_all(&store, 0..1, 1).await;
    assert!(matches!(
        store.get_found(b"k0").unwrap(),
        Some(Found::Own(_))
    ));
    store.checkpoint().unwrap();
    let (Some(Found::Shared(first)), Some(Found::Shared(second))) = (
        store.get_found(b"k0").unwrap(),
        store.get_found(b"k0").unwrap(),
    ) else {
        panic!("reads after the checkpoint go through the record cache");
    };
    assert!(
        Arc::ptr_eq(&first, &second),
        "the same cached record, twice"
    );
    assert_eq!(*first, live(1));
    store.close().await.unwrap();

    let off = tempfile::tempdir().unwrap();
    let store = RedbStore::open_with_checkpoints(
        &StoreOptions {
            record_cache_size: 0,
            ..options(off.path())
        },
        Arc::new(Metrics::new()),
        std::time::Duration::MAX,
    )
    .unwrap();
    put_all(&store, 0..1, 1).await;
    store.checkpoint().unwrap();
    assert!(matches!(store.get_found(b"k0").unwrap(), Some(Found::Own(r)) if r == live(1)));
    store.close().await.unwrap();
}
