//! The on-disk schema: a golden v1 file (tests/data/v1/tidemark.redb, written by
//! tidemark at schema v1) must keep opening and reading back exactly, it must match the
//! layout documented in migrations/v1.md, and files from a newer (or no) schema version
//! must be refused with a clear error instead of being misread.
//!
//! Tables are reached here with redb directly, through the layout migrations/v1.md
//! documents — never through store internals.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};
use tidemark::clock::ManualClock;
use tidemark::metrics::Metrics;
use tidemark::record::Record;
use tidemark::service::{Entry, Policy, Service, ServiceError, WriteOptions};
use tidemark::store::{
    Counts, DB_FILE_NAME, Durability, Purged, RedbStore, SCHEMA_VERSION, StoreError, StoreOptions,
};

// The v1 layout, as documented in migrations/v1.md.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const EXPIRIES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("expiries");
const TOMBSTONES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("tombstones");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const T0: u64 = 1_767_225_600_000_000;
const SECOND: u64 = 1_000_000;
const GRACE: u64 = 3600 * SECOND;
/// Server time at which the golden file is read: after "session:expired" expired.
const READ_AT: u64 = T0 + 30 * SECOND;
const BINARY_KEY: &[u8] = &[0x00, 0xff, 0x80, b'k'];

/// Every record in the golden file, exactly as it was written.
fn golden_records() -> Vec<(&'static [u8], Record)> {
    vec![
        (
            b"session:plain",
            Record::live(T0, b"hello".to_vec(), "text/plain".into(), None),
        ),
        (
            b"session:ttl",
            Record::live(
                T0 + 1,
                b"{\"user\":42}".to_vec(),
                "application/json".into(),
                Some(T0 + 3600 * SECOND),
            ),
        ),
        (b"session:gone", Record::tombstone(T0 + 2, T0 + 10 * SECOND)),
        (
            BINARY_KEY,
            Record::live(
                T0 + 3,
                vec![0, 1, 2, 255],
                "application/octet-stream".into(),
                None,
            ),
        ),
        (
            b"empty",
            Record::live(T0 + 4, Vec::new(), "application/octet-stream".into(), None),
        ),
        (
            b"session:expired",
            Record::live(
                T0 + 5,
                b"old".to_vec(),
                "text/plain".into(),
                Some(T0 + 20 * SECOND),
            ),
        ),
    ]
}

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1/tidemark.redb")
}

/// A private copy of the golden file, so no test can modify the original.
fn golden_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(golden_path(), dir.path().join(DB_FILE_NAME)).expect("copy golden file");
    dir
}

fn open_store(dir: &Path) -> Result<RedbStore, StoreError> {
    RedbStore::open(
        &StoreOptions {
            data_dir: dir.to_path_buf(),
            durability: Durability::Immediate,
            cache_size: 1 << 20,
        },
        Arc::new(Metrics::new()),
    )
}

fn service(store: RedbStore, clock: &ManualClock) -> Service {
    Service::new(
        store,
        Arc::new(clock.clone()),
        Policy {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            grace_micros: GRACE,
            max_future_skew_micros: 0,
            max_lifetime_micros: None,
        },
        Arc::new(Metrics::new()),
    )
}

/// A redb file at `dir/tidemark.redb` whose meta table says `version` (if any) and
/// whose records table holds `records` raw rows.
fn craft_file(dir: &Path, version: Option<u64>, records: &[(&[u8], &[u8])]) -> PathBuf {
    let path = dir.join(DB_FILE_NAME);
    let db = Database::create(&path).expect("create redb file");
    let txn = db.begin_write().expect("write txn");
    {
        if let Some(version) = version {
            let mut meta = txn.open_table(META).expect("meta table");
            meta.insert("schema_version", version).expect("insert");
        }
        let mut table = txn.open_table(RECORDS).expect("records table");
        for (key, value) in records {
            table.insert(*key, *value).expect("insert");
        }
    }
    txn.commit().expect("commit");
    path
}

fn stored_version(path: &Path) -> Option<u64> {
    let db = Database::open(path).expect("open redb file");
    let txn = db.begin_read().expect("read txn");
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return None,
        Err(e) => panic!("meta table: {e}"),
    };
    meta.get("schema_version").expect("read").map(|v| v.value())
}

#[tokio::test]
async fn golden_v1_file_reads_back_every_record_exactly() {
    let dir = golden_copy();
    let store = open_store(dir.path()).expect("golden v1 file opens");
    for (key, expected) in golden_records() {
        assert_eq!(
            store.get(key).expect("read"),
            Some(expected),
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    let mut keys = Vec::new();
    store
        .scan(std::ops::Bound::Unbounded, |key, _| {
            keys.push(key.to_vec());
            std::ops::ControlFlow::Continue(())
        })
        .expect("scan");
    let mut expected: Vec<Vec<u8>> = golden_records().iter().map(|(k, _)| k.to_vec()).collect();
    expected.sort();
    assert_eq!(keys, expected, "no record more, none less");
    store.close().await.expect("close");
}

#[tokio::test]
async fn golden_v1_file_serves_reads_guards_and_sweeps_as_written() {
    let dir = golden_copy();
    let clock = ManualClock::new(READ_AT);
    let service = service(open_store(dir.path()).expect("opens"), &clock);

    assert_eq!(
        service.get(b"session:ttl".to_vec()).await.expect("get"),
        Some(Entry {
            value: b"{\"user\":42}".to_vec(),
            content_type: "application/json".into(),
            timestamp: T0 + 1,
            expires_at: Some(T0 + 3600 * SECOND),
            etag: format!("\"{}\"", T0 + 1),
            owner: None,
            lifetime_ends: None,
        })
    );
    assert_eq!(
        service.get(b"empty".to_vec()).await.expect("get"),
        Some(Entry {
            value: Vec::new(),
            content_type: "application/octet-stream".into(),
            timestamp: T0 + 4,
            expires_at: None,
            etag: format!("\"{}\"", T0 + 4),
            owner: None,
            lifetime_ends: None,
        })
    );
    for absent in [&b"session:gone"[..], b"session:expired"] {
        assert_eq!(service.get(absent.to_vec()).await.expect("get"), None);
    }
    let listed = service
        .list(Vec::new(), None, 100)
        .await
        .expect("list")
        .keys;
    assert_eq!(
        listed,
        vec![
            BINARY_KEY.to_vec(),
            b"empty".to_vec(),
            b"session:plain".to_vec(),
            b"session:ttl".to_vec(),
        ]
    );
    // The index tables came along: counts and the sweeper see what the records say.
    assert_eq!(
        service.counts().await.expect("counts"),
        Counts {
            records: 6,
            tombstones: 1,
            expired: 1
        }
    );
    // The tombstone and the expired value still guard their keys.
    let older = |key: &'static [u8]| {
        service.put(
            key.to_vec(),
            b"late".to_vec(),
            "text/plain".into(),
            T0,
            None,
            WriteOptions::default(),
        )
    };
    assert!(matches!(
        older(b"session:gone").await,
        Err(ServiceError::Stale { current }) if current == T0 + 2
    ));
    assert!(matches!(
        older(b"session:expired").await,
        Err(ServiceError::Stale { current }) if current == T0 + 5
    ));

    clock.set(T0 + 20 * SECOND + GRACE);
    assert_eq!(
        service.sweep(100).await.expect("sweep"),
        Purged {
            expired: 1,
            tombstones: 1
        }
    );
    // "session:ttl" has expired by now too, but guards until an hour later.
    assert_eq!(
        service.counts().await.expect("counts"),
        Counts {
            records: 4,
            tombstones: 0,
            expired: 1
        }
    );
    service.close().await.expect("close");
}

#[test]
fn golden_v1_file_matches_the_documented_layout() {
    let dir = golden_copy();
    let db = Database::open(dir.path().join(DB_FILE_NAME)).expect("golden file opens with redb");
    let txn = db.begin_read().expect("read txn");

    let mut tables: Vec<String> = txn
        .list_tables()
        .expect("list tables")
        .map(|t| t.name().to_string())
        .collect();
    tables.sort();
    assert_eq!(tables, ["expiries", "meta", "records", "tombstones"]);

    let meta = txn.open_table(META).expect("meta: &str -> u64");
    assert_eq!(
        meta.get("schema_version").expect("read").map(|v| v.value()),
        Some(1)
    );
    assert_eq!(
        meta.len().expect("len"),
        1,
        "schema_version is the only meta key"
    );

    let records = txn.open_table(RECORDS).expect("records: &[u8] -> &[u8]");
    let raw = |key: &[u8]| -> Vec<u8> {
        records
            .get(key)
            .expect("read")
            .expect("key present")
            .value()
            .to_vec()
    };
    // tombstone: 02 | timestamp u64 BE | deleted_at u64 BE
    let mut tombstone = vec![0x02];
    tombstone.extend_from_slice(&(T0 + 2).to_be_bytes());
    tombstone.extend_from_slice(&(T0 + 10 * SECOND).to_be_bytes());
    assert_eq!(raw(b"session:gone"), tombstone);
    // The worked example in migrations/v1.md, byte for byte.
    assert_eq!(
        tombstone,
        [
            0x02, 0x00, 0x06, 0x47, 0x48, 0x46, 0x20, 0x40, 0x02, 0x00, 0x06, 0x47, 0x48, 0x46,
            0xb8, 0xd6, 0x80
        ]
    );
    // live: 01 | timestamp u64 BE | expires_at u64 BE (0 = never) | ct_len u16 BE | ct | value
    let mut live = vec![0x01];
    live.extend_from_slice(&(T0 + 1).to_be_bytes());
    live.extend_from_slice(&(T0 + 3600 * SECOND).to_be_bytes());
    live.extend_from_slice(&16u16.to_be_bytes());
    live.extend_from_slice(b"application/json");
    live.extend_from_slice(b"{\"user\":42}");
    assert_eq!(raw(b"session:ttl"), live);
    let mut forever = vec![0x01];
    forever.extend_from_slice(&(T0 + 4).to_be_bytes());
    forever.extend_from_slice(&0u64.to_be_bytes());
    forever.extend_from_slice(&24u16.to_be_bytes());
    forever.extend_from_slice(b"application/octet-stream");
    assert_eq!(raw(b"empty"), forever);

    let index = |table: TableDefinition<(u64, &'static [u8]), ()>| -> Vec<(u64, Vec<u8>)> {
        txn.open_table(table)
            .expect("index: (u64, &[u8]) -> ()")
            .iter()
            .expect("iterate")
            .map(|row| {
                let (key, _unit) = row.expect("row");
                let (at, key) = key.value();
                (at, key.to_vec())
            })
            .collect()
    };
    assert_eq!(
        index(EXPIRIES),
        vec![
            (T0 + 20 * SECOND, b"session:expired".to_vec()),
            (T0 + 3600 * SECOND, b"session:ttl".to_vec()),
        ]
    );
    assert_eq!(
        index(TOMBSTONES),
        vec![(T0 + 10 * SECOND, b"session:gone".to_vec())]
    );
}

#[test]
fn file_with_a_newer_schema_version_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = craft_file(dir.path(), Some(99), &[(b"k", b"written by tidemark v99")]);

    let error = open_store(dir.path()).expect_err("a v99 file must not open");
    assert!(
        matches!(
            error,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("version 1"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert_eq!(stored_version(&path), Some(99), "refusing must not restamp");
}

#[test]
fn file_with_records_but_no_schema_version_is_refused_as_unknown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = craft_file(dir.path(), None, &[(b"k", b"not ours")]);
    let error = open_store(dir.path()).expect_err("must not open");
    assert!(
        matches!(error, StoreError::UnknownLayout { .. }),
        "{error:?}"
    );
    assert_eq!(stored_version(&path), None, "refusing must not stamp");
}

#[test]
fn file_with_schema_version_zero_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = craft_file(dir.path(), Some(0), &[]);
    let error = open_store(dir.path()).expect_err("must not open");
    assert!(
        matches!(
            error,
            StoreError::UnknownSchema {
                found: 0,
                supported: 1,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("schema version 0"), "{message}");
    assert!(message.contains("version 1"), "{message}");
    assert_eq!(stored_version(&path), Some(0), "refusing must not restamp");
}

#[tokio::test]
async fn new_file_is_stamped_with_the_current_schema_version() {
    assert_eq!(
        SCHEMA_VERSION, 1,
        "a new version needs migrations/v2.md and a golden v1 upgrade test"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path()).expect("opens");
    store.close().await.expect("close");
    let path = store.path().to_path_buf();
    drop(store);
    assert_eq!(stored_version(&path), Some(SCHEMA_VERSION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_fails_only_the_writes_to_its_own_key() {
    let dir = golden_copy();
    {
        let db = Database::open(dir.path().join(DB_FILE_NAME)).expect("open redb file");
        let txn = db.begin_write().expect("write txn");
        txn.open_table(RECORDS)
            .expect("records table")
            .insert(&b"bad"[..], &b"\x07 is no record kind"[..])
            .expect("insert");
        txn.commit().expect("commit");
    }
    let store = open_store(dir.path()).expect("opens");
    let service = service(store.clone(), &ManualClock::new(READ_AT));
    assert!(matches!(
        service.get(b"bad".to_vec()).await,
        Err(ServiceError::Store(StoreError::Corrupt { .. }))
    ));

    // Hold the writer so the next writes queue up and are committed as one batch.
    let held = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .write(|_| {
                    std::thread::sleep(std::time::Duration::from_millis(300));
                    Ok(())
                })
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let put = |key: &str| {
        let service = service.clone();
        let key = key.as_bytes().to_vec();
        tokio::spawn(async move {
            service
                .put(
                    key,
                    b"v".to_vec(),
                    "text/plain".into(),
                    READ_AT,
                    None,
                    WriteOptions::default(),
                )
                .await
        })
    };
    let before = put("good-before");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let bad = put("bad");
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let after = put("good-after");
    held.await.expect("task").expect("held write");

    assert!(matches!(
        bad.await.expect("task"),
        Err(ServiceError::Store(StoreError::Corrupt { .. }))
    ));
    for (name, task) in [("before", before), ("after", after)] {
        let outcome = task.await.expect("task");
        assert!(
            matches!(outcome, Ok(tidemark::service::WriteOutcome::Created)),
            "write {name} the corrupt one in the same batch: {outcome:?}"
        );
    }
    service.close().await.expect("close");
}
