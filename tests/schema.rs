//! The on-disk schema. Four golden files, each written by tidemark at its schema version
//! and never regenerated, hold the code to the documents in migrations/:
//!
//! * tests/data/v1/tidemark.redb (migrations/v1.md) is the upgrade path: this build
//!   opens it, upgrades it in place (1 → 2 → 3 → 4) inside the opening transaction,
//!   and reads every record back exactly; a failed open leaves it at version 1.
//! * tests/data/v2/tidemark.redb (migrations/v2.md): every record (metadata
//!   included) reads back exactly, its bytes and its `owners` index are as
//!   documented, and this build upgrades it in place to version 4, rewriting nothing.
//! * tests/data/v3/tidemark.redb (migrations/v3.md): records with memcached client
//!   flags read back exactly, their bytes are as documented, and this build upgrades
//!   it in place to version 4, rewriting nothing; a record written again is kind 04.
//! * tests/data/v4/tidemark.redb (migrations/v4.md) is the current layout: every
//!   live record is kind 04, holding only the parts it has; they read back exactly
//!   and their bytes are as documented.
//!
//! Files from a newer (or no) schema version must be refused with a clear error instead
//! of being misread. Tables are reached here with redb directly, through the layout the
//! documents describe — never through store internals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Key, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableHandle, Value,
};
use serde_json::{Map, json};
use tidemark::clock::ManualClock;
use tidemark::guard::OwnerChange;
use tidemark::metrics::Metrics;
use tidemark::record::{FieldClock, FieldClocks, Meta, Record};
use tidemark::service::{
    Entry, OwnedSession, OwnerPage, Policy, Service, ServiceError, WriteOptions,
};
use tidemark::store::{
    Counts, DB_FILE_NAME, Durability, Purged, RedbStore, SCHEMA_VERSION, StoreError, StoreOptions,
};

// The layout, as documented in migrations/v1.md and migrations/v2.md (v2 adds `owners`).
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
const EXPIRIES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("expiries");
const TOMBSTONES: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("tombstones");
const OWNERS: TableDefinition<(&str, &[u8]), ()> = TableDefinition::new("owners");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

const T0: u64 = 1_767_225_600_000_000;
const SECOND: u64 = 1_000_000;
const GRACE: u64 = 3600 * SECOND;
/// Server time at which the golden files are read: after "session:expired" expired.
const READ_AT: u64 = T0 + 30 * SECOND;
const BINARY_KEY: &[u8] = &[0x00, 0xff, 0x80, b'k'];

/// Every record in the golden v1 file, exactly as it was written.
fn golden_v1_records() -> Vec<(&'static [u8], Record)> {
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

/// `record` with `meta`.
fn with_meta(mut record: Record, meta: Meta) -> Record {
    record.meta = meta;
    record
}

fn clocks(base: u64, base_deleted: bool, fields: &[(&str, u64, bool)]) -> FieldClocks {
    FieldClocks {
        base,
        base_deleted,
        clocks: fields
            .iter()
            .map(|&(name, timestamp, removed)| {
                (name.to_string(), FieldClock { timestamp, removed })
            })
            .collect(),
    }
}

/// Every record in the golden v2 file, exactly as it was written (migrations/v2.md,
/// "Golden file").
fn golden_v2_records() -> Vec<(&'static [u8], Record)> {
    vec![
        (
            b"session:plain",
            Record::live(
                T0,
                b"hello".to_vec(),
                "application/octet-stream".into(),
                None,
            ),
        ),
        (
            b"session:alice-1",
            with_meta(
                Record::live(
                    T0 + 1,
                    b"{\"user\":42}".to_vec(),
                    "application/json".into(),
                    Some(T0 + 3601 * SECOND),
                ),
                Meta {
                    flags: 0,
                    owner: Some("alice".into()),
                    created_at: Some(T0 + SECOND),
                    lifetime_ends: Some(T0 + SECOND + 86_400 * SECOND),
                    fields: None,
                },
            ),
        ),
        (
            b"doc:prefs",
            with_meta(
                Record::live(
                    T0 + 3,
                    b"{\"theme\":\"light\",\"user\":42}".to_vec(),
                    "application/json".into(),
                    None,
                ),
                Meta {
                    flags: 0,
                    owner: Some("alice".into()),
                    created_at: Some(T0 + 2 * SECOND),
                    lifetime_ends: None,
                    fields: Some(clocks(
                        T0 + 2,
                        false,
                        &[("cart", T0 + 3, true), ("theme", T0 + 3, false)],
                    )),
                },
            ),
        ),
        (b"session:gone", Record::tombstone(T0 + 5, T0 + 10 * SECOND)),
        (
            BINARY_KEY,
            with_meta(
                Record::live(
                    T0 + 6,
                    vec![0, 1, 2, 255],
                    "application/octet-stream".into(),
                    None,
                ),
                Meta {
                    flags: 0,
                    owner: Some("bob".into()),
                    created_at: Some(T0 + 5 * SECOND),
                    ..Meta::default()
                },
            ),
        ),
        (
            b"session:expired",
            with_meta(
                Record::live(
                    T0 + 7,
                    b"old".to_vec(),
                    "text/plain".into(),
                    Some(T0 + 20 * SECOND),
                ),
                Meta {
                    flags: 0,
                    owner: Some("alice".into()),
                    created_at: Some(T0 + 6 * SECOND),
                    ..Meta::default()
                },
            ),
        ),
        (
            b"doc:new",
            with_meta(
                Record::live(
                    T0 + 8,
                    b"{\"step\":1}".to_vec(),
                    "application/json".into(),
                    None,
                ),
                Meta {
                    flags: 0,
                    created_at: Some(T0 + 7 * SECOND),
                    fields: Some(clocks(0, true, &[("step", T0 + 8, false)])),
                    ..Meta::default()
                },
            ),
        ),
    ]
}

/// The `owners` rows of the golden v2 file, in table order.
fn golden_v2_owner_rows() -> Vec<(String, Vec<u8>)> {
    [
        ("alice", &b"doc:prefs"[..]),
        ("alice", b"session:alice-1"),
        ("alice", b"session:expired"),
        ("bob", BINARY_KEY),
    ]
    .into_iter()
    .map(|(owner, key)| (owner.to_string(), key.to_vec()))
    .collect()
}

fn golden_path(version: u64) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/v{version}/tidemark.redb"))
}

/// A private copy of a golden file, so no test can modify the original.
fn golden_copy(version: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(golden_path(version), dir.path().join(DB_FILE_NAME)).expect("copy golden file");
    dir
}

fn open_store(dir: &Path) -> Result<RedbStore, StoreError> {
    RedbStore::open(
        &StoreOptions {
            data_dir: dir.to_path_buf(),
            durability: Durability::Immediate,
            cache_size: 1 << 20,
            record_cache_size: 1 << 20,
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

/// What redb, opening the file read-only (so without changing a byte of it), finds in
/// `meta.schema_version`.
fn stored_version(path: &Path) -> Option<u64> {
    let db = ReadOnlyDatabase::open(path).expect("open redb file read-only");
    let txn = db.begin_read().expect("read txn");
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return None,
        Err(e) => panic!("meta table: {e}"),
    };
    meta.get("schema_version").expect("read").map(|v| v.value())
}

/// The names of the file's tables, sorted, read without changing the file.
fn table_names(path: &Path) -> Vec<String> {
    let db = ReadOnlyDatabase::open(path).expect("open redb file read-only");
    let txn = db.begin_read().expect("read txn");
    let mut tables: Vec<String> = txn
        .list_tables()
        .expect("list tables")
        .map(|t| t.name().to_string())
        .collect();
    tables.sort();
    tables
}

/// Every row of `records`, raw, read without changing the file.
fn raw_records(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let db = ReadOnlyDatabase::open(path).expect("open redb file read-only");
    let txn = db.begin_read().expect("read txn");
    txn.open_table(RECORDS)
        .expect("records: &[u8] -> &[u8]")
        .iter()
        .expect("iterate")
        .map(|row| {
            let (key, value) = row.expect("row");
            (key.value().to_vec(), value.value().to_vec())
        })
        .collect()
}

/// Every key the store holds, in key order.
fn scanned_keys(store: &RedbStore) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    store
        .scan(std::ops::Bound::Unbounded, |key, _| {
            keys.push(key.to_vec());
            std::ops::ControlFlow::Continue(())
        })
        .expect("scan");
    keys
}

/// Reads `records` back through the store: each exactly, and no key more.
fn assert_reads_back_exactly(store: &RedbStore, records: &[(&'static [u8], Record)]) {
    for (key, expected) in records {
        assert_eq!(
            store.get(key).expect("read").as_ref(),
            Some(expected),
            "key {:?}",
            String::from_utf8_lossy(key)
        );
    }
    let mut expected: Vec<Vec<u8>> = records.iter().map(|(k, _)| k.to_vec()).collect();
    expected.sort();
    assert_eq!(scanned_keys(store), expected, "no record more, none less");
}

/// Open a copy of the golden file of `version` with this build, read every one of
/// `records` back exactly and close it. Returns the copy, and its raw records as they
/// were before the open.
async fn golden_read_back(
    version: u64,
    records: &[(&'static [u8], Record)],
) -> (tempfile::TempDir, BTreeMap<Vec<u8>, Vec<u8>>) {
    let dir = golden_copy(version);
    let raw_before = raw_records(&dir.path().join(DB_FILE_NAME));
    let store = open_store(dir.path()).expect("golden file opens");
    assert_reads_back_exactly(&store, records);
    store.close().await.expect("close");
    drop(store);
    (dir, raw_before)
}

/// A copy of the golden file of `version` and its raw records, read with redb alone,
/// after checking that the file holds the five tables and says `version`.
fn golden_layout(version: u64) -> (tempfile::TempDir, BTreeMap<Vec<u8>, Vec<u8>>) {
    let dir = golden_copy(version);
    let path = dir.path().join(DB_FILE_NAME);
    assert_eq!(
        table_names(&path),
        ["expiries", "meta", "owners", "records", "tombstones"]
    );
    assert_eq!(stored_version(&path), Some(version));
    let raw = raw_records(&path);
    (dir, raw)
}

/// The rows of `owners`, `(owner, key)` in table order.
fn owner_rows(txn: &ReadTransaction) -> Vec<(String, Vec<u8>)> {
    txn.open_table(OWNERS)
        .expect("owners: (&str, &[u8]) -> ()")
        .iter()
        .expect("iterate")
        .map(|row| {
            let (key, _unit) = row.expect("row");
            let (owner, key) = key.value();
            (owner.to_string(), key.to_vec())
        })
        .collect()
}

/// The rows of `expiries` or `tombstones`, `(at, key)` in table order.
fn index_rows(
    txn: &ReadTransaction,
    table: TableDefinition<(u64, &'static [u8]), ()>,
) -> Vec<(u64, Vec<u8>)> {
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
}

/// A tombstone as migrations/v1.md lays it out: 02 | timestamp u64 BE | deleted_at u64 BE.
fn kind_02(timestamp: u64, deleted_at: u64) -> Vec<u8> {
    let mut out = vec![0x02];
    out.extend_from_slice(&timestamp.to_be_bytes());
    out.extend_from_slice(&deleted_at.to_be_bytes());
    out
}

// ---- schema v1: the upgrade path ----

#[tokio::test]
async fn golden_v1_file_is_upgraded_in_place_to_v2_and_reads_back_every_record_exactly() {
    let dir = golden_copy(1);
    let path = dir.path().join(DB_FILE_NAME);
    assert_eq!(
        stored_version(&path),
        Some(1),
        "the copy starts at version 1"
    );
    let raw_before = raw_records(&path);

    let store = open_store(dir.path()).expect("golden v1 file opens");
    assert_reads_back_exactly(&store, &golden_v1_records());
    store.close().await.expect("close");
    drop(store);

    // Committed to the file: redb itself, read-only, sees the current version (v1 → 2
    // → 3 → 4 in one transaction) and the new table.
    assert_eq!(stored_version(&path), Some(SCHEMA_VERSION));
    assert_eq!(
        table_names(&path),
        ["expiries", "meta", "owners", "records", "tombstones"]
    );
    let db = ReadOnlyDatabase::open(&path).expect("open read-only");
    let txn = db.begin_read().expect("read txn");
    assert_eq!(
        txn.open_table(OWNERS)
            .expect("owners: (&str, &[u8]) -> ()")
            .len()
            .expect("len"),
        0,
        "no v1 record has an owner, so the index starts empty"
    );
    drop(txn);
    drop(db);
    // Nothing was rewritten: every v1 record is a valid record of the current version,
    // byte for byte.
    assert_eq!(raw_records(&path), raw_before);

    // And it opens again as an ordinary file of the current version.
    let store = open_store(dir.path()).expect("the upgraded file opens again");
    assert_reads_back_exactly(&store, &golden_v1_records());
    store.close().await.expect("close");
}

#[tokio::test]
async fn v1_file_whose_open_fails_after_the_upgrade_step_stays_exactly_at_version_1() {
    // Make the opening transaction fail after `upgrade_1_to_2` and the new stamp: the
    // v1 file's `tombstones` table is replaced by one of another type, which the open
    // trips over when it makes sure every table exists. Since the upgrade runs inside
    // that same transaction, none of it may reach the file.
    let dir = golden_copy(1);
    let path = dir.path().join(DB_FILE_NAME);
    {
        let db = Database::open(&path).expect("open redb file");
        let txn = db.begin_write().expect("write txn");
        assert!(txn.delete_table(TOMBSTONES).expect("delete tombstones"));
        txn.open_table(TableDefinition::<&str, u64>::new("tombstones"))
            .expect("a mistyped tombstones table")
            .insert("x", 1)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let raw_before = raw_records(&path);

    let error = open_store(dir.path()).expect_err("the mistyped table fails the open");
    assert!(matches!(error, StoreError::Engine(_)), "{error:?}");
    assert!(error.to_string().contains("tombstones"), "{error}");

    assert_eq!(stored_version(&path), Some(1), "the stamp was rolled back");
    assert_eq!(
        table_names(&path),
        ["expiries", "meta", "records", "tombstones"],
        "the owners table was rolled back with it"
    );
    assert_eq!(raw_records(&path), raw_before, "records untouched");
}

#[test]
fn v1_file_stamped_with_a_newer_version_is_refused_and_not_upgraded() {
    let dir = golden_copy(1);
    let path = dir.path().join(DB_FILE_NAME);
    {
        let db = Database::open(&path).expect("open redb file");
        let txn = db.begin_write().expect("write txn");
        txn.open_table(META)
            .expect("meta")
            .insert("schema_version", 99)
            .expect("insert");
        txn.commit().expect("commit");
    }
    let error = open_store(dir.path()).expect_err("a v99 file must not open");
    assert!(
        matches!(
            error,
            StoreError::SchemaTooNew {
                found: 99,
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(stored_version(&path), Some(99), "refusing must not restamp");
    assert_eq!(
        table_names(&path),
        ["expiries", "meta", "records", "tombstones"],
        "refusing must not create the owners table"
    );
}

#[tokio::test]
async fn upgraded_v1_file_indexes_owners_written_after_the_upgrade() {
    let dir = golden_copy(1);
    let clock = ManualClock::new(READ_AT);
    let service = service(open_store(dir.path()).expect("opens"), &clock);
    let owned = WriteOptions {
        owner: OwnerChange::Set("carol".into()),
        ..WriteOptions::default()
    };
    // A v1 record taken over by a newer write with an owner, and a new key.
    for key in [&b"session:plain"[..], b"session:new"] {
        service
            .put(
                key.to_vec(),
                b"v".to_vec(),
                "text/plain".into(),
                T0 + 100,
                None,
                owned.clone(),
            )
            .await
            .expect("put");
    }
    let page = service
        .owner_sessions("carol", None, 10)
        .await
        .expect("owner sessions");
    let keys: Vec<Vec<u8>> = page.sessions.iter().map(|s| s.key.clone()).collect();
    assert_eq!(
        keys,
        vec![b"session:new".to_vec(), b"session:plain".to_vec()]
    );
    // The v1 record kept its creation time unknown; the new key got one.
    let created: Vec<Option<u64>> = page.sessions.iter().map(|s| s.created_at).collect();
    assert_eq!(created, vec![Some(READ_AT), None]);
    service.close().await.expect("close");
}

#[tokio::test]
async fn golden_v1_file_serves_reads_guards_and_sweeps_as_written() {
    let dir = golden_copy(1);
    let clock = ManualClock::new(READ_AT);
    let service = service(open_store(dir.path()).expect("opens"), &clock);

    assert_eq!(
        service.get(b"session:ttl".to_vec()).await.expect("get"),
        Some(Entry {
            value: b"{\"user\":42}".to_vec().into(),
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
            value: Vec::new().into(),
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
fn golden_v1_file_matches_the_v1_layout_before_any_upgrade() {
    let dir = golden_copy(1);
    let db =
        ReadOnlyDatabase::open(dir.path().join(DB_FILE_NAME)).expect("golden file opens with redb");
    let txn = db.begin_read().expect("read txn");

    assert_eq!(
        table_names(&dir.path().join(DB_FILE_NAME)),
        ["expiries", "meta", "records", "tombstones"]
    );

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
    let tombstone = kind_02(T0 + 2, T0 + 10 * SECOND);
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

    assert_eq!(
        index_rows(&txn, EXPIRIES),
        vec![
            (T0 + 20 * SECOND, b"session:expired".to_vec()),
            (T0 + 3600 * SECOND, b"session:ttl".to_vec()),
        ]
    );
    assert_eq!(
        index_rows(&txn, TOMBSTONES),
        vec![(T0 + 10 * SECOND, b"session:gone".to_vec())]
    );
}

// ---- schema v2: the current layout ----

#[tokio::test]
async fn golden_v2_file_is_upgraded_in_place_to_the_current_version_and_reads_back_every_record_exactly()
 {
    let (dir, raw_before) = golden_read_back(2, &golden_v2_records()).await;
    let path = dir.path().join(DB_FILE_NAME);
    assert_eq!(
        stored_version(&path),
        Some(SCHEMA_VERSION),
        "opening upgrades v2 to the current version"
    );
    assert_eq!(
        raw_records(&path),
        raw_before,
        "every v2 record is a valid record of the current version: nothing is rewritten"
    );
}

/// A kind-03 record laid out as migrations/v2.md and v3.md say, built here byte by byte
/// (independently of the store's codec).
fn kind_03(record: &Record) -> Vec<u8> {
    let tidemark::record::State::Live {
        value,
        content_type,
        expires_at,
    } = &record.state
    else {
        panic!("kind 03 is a live record");
    };
    let meta = &record.meta;
    let mut out = vec![0x03];
    out.extend_from_slice(&record.timestamp.to_be_bytes());
    out.extend_from_slice(&expires_at.unwrap_or(0).to_be_bytes());
    let flags = u8::from(meta.created_at.is_some())
        | u8::from(meta.lifetime_ends.is_some()) << 1
        | u8::from(meta.owner.is_some()) << 2
        | u8::from(meta.fields.is_some()) << 3
        | u8::from(meta.flags != 0) << 4;
    out.push(flags);
    if let Some(at) = meta.created_at {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if let Some(at) = meta.lifetime_ends {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if let Some(owner) = &meta.owner {
        out.extend_from_slice(&(owner.len() as u16).to_be_bytes());
        out.extend_from_slice(owner.as_bytes());
    }
    if let Some(fields) = &meta.fields {
        let mut clocks = fields.base.to_be_bytes().to_vec();
        clocks.push(u8::from(fields.base_deleted));
        clocks.extend_from_slice(&(fields.clocks.len() as u32).to_be_bytes());
        for (name, clock) in &fields.clocks {
            clocks.extend_from_slice(&(name.len() as u32).to_be_bytes());
            clocks.extend_from_slice(name.as_bytes());
            clocks.extend_from_slice(&clock.timestamp.to_be_bytes());
            clocks.push(u8::from(clock.removed));
        }
        out.extend_from_slice(&(clocks.len() as u32).to_be_bytes());
        out.extend_from_slice(&clocks);
    }
    if meta.flags != 0 {
        out.extend_from_slice(&meta.flags.to_be_bytes());
    }
    out.extend_from_slice(&(content_type.len() as u16).to_be_bytes());
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(value);
    out
}

fn hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .filter(|piece| *piece != "|")
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect()
}

#[test]
fn golden_v2_file_matches_the_documented_layout() {
    let dir = golden_copy(2);
    let path = dir.path().join(DB_FILE_NAME);
    assert_eq!(
        table_names(&path),
        ["expiries", "meta", "owners", "records", "tombstones"]
    );
    let db = ReadOnlyDatabase::open(&path).expect("golden file opens with redb");
    let txn = db.begin_read().expect("read txn");

    let meta: BTreeMap<String, u64> = txn
        .open_table(META)
        .expect("meta: &str -> u64")
        .iter()
        .expect("iterate")
        .map(|row| {
            let (key, value) = row.expect("row");
            (key.value().to_string(), value.value())
        })
        .collect();
    assert_eq!(
        meta.keys().map(String::as_str).collect::<Vec<_>>(),
        ["applied_lsn", "file_id", "schema_version"]
    );
    assert_eq!(meta["schema_version"], 2);
    assert_eq!(
        meta["applied_lsn"], 9,
        "nine logged writes went into the file"
    );

    let raw = raw_records(&path);
    let golden = golden_v2_records();
    assert_eq!(raw.len(), golden.len());
    for (key, record) in &golden {
        let bytes = &raw[*key];
        let expected = match (&record.state, record.meta == Meta::default()) {
            (tidemark::record::State::Tombstone { deleted_at }, _) => {
                kind_02(record.timestamp, *deleted_at)
            }
            (tidemark::record::State::Live { .. }, false) => kind_03(record),
            (
                tidemark::record::State::Live {
                    value,
                    content_type,
                    expires_at,
                },
                true,
            ) => {
                let mut out = vec![0x01];
                out.extend_from_slice(&record.timestamp.to_be_bytes());
                out.extend_from_slice(&expires_at.unwrap_or(0).to_be_bytes());
                out.extend_from_slice(&(content_type.len() as u16).to_be_bytes());
                out.extend_from_slice(content_type.as_bytes());
                out.extend_from_slice(value);
                out
            }
        };
        assert_eq!(bytes, &expected, "key {:?}", String::from_utf8_lossy(key));
    }
    // The worked examples in migrations/v2.md, byte for byte.
    assert_eq!(
        raw[&b"session:plain"[..]],
        hex(
            "01 | 00 06 47 48 46 20 40 00 | 00 00 00 00 00 00 00 00 | 00 18 | \
             61 70 70 6c 69 63 61 74 69 6f 6e 2f 6f 63 74 65 74 2d 73 74 72 65 61 6d | \
             68 65 6c 6c 6f"
        )
    );
    assert_eq!(
        raw[&b"session:expired"[..]],
        hex(
            "03 | 00 06 47 48 46 20 40 07 | 00 06 47 48 47 51 6d 00 | 05 | \
             00 06 47 48 46 7b cd 80 | 00 05 61 6c 69 63 65 | \
             00 0a 74 65 78 74 2f 70 6c 61 69 6e | 6f 6c 64"
        )
    );
    assert_eq!(
        raw[&b"doc:new"[..]],
        hex(
            "03 | 00 06 47 48 46 20 40 08 | 00 00 00 00 00 00 00 00 | 09 | \
             00 06 47 48 46 8b 0f c0 | 00 00 00 1e | \
             00 00 00 00 00 00 00 00 | 01 | 00 00 00 01 | \
             00 00 00 04 73 74 65 70 | 00 06 47 48 46 20 40 08 | 00 | \
             00 10 61 70 70 6c 69 63 61 74 69 6f 6e 2f 6a 73 6f 6e | \
             7b 22 73 74 65 70 22 3a 31 7d"
        )
    );

    let owners = owner_rows(&txn);
    assert_eq!(owners, golden_v2_owner_rows());
    // The invariant: exactly one row per live record with an owner, naming that owner.
    let from_records: Vec<(String, Vec<u8>)> = {
        let mut rows: Vec<_> = golden
            .iter()
            .filter_map(|(key, record)| Some((record.meta.owner.clone()?, key.to_vec())))
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(owners, from_records);

    assert_eq!(
        index_rows(&txn, EXPIRIES),
        vec![
            (T0 + 20 * SECOND, b"session:expired".to_vec()),
            (T0 + 3601 * SECOND, b"session:alice-1".to_vec()),
        ]
    );
    assert_eq!(
        index_rows(&txn, TOMBSTONES),
        vec![(T0 + 10 * SECOND, b"session:gone".to_vec())]
    );
}

#[test]
fn redb_encodes_an_owners_row_key_as_documented() {
    type OwnerKey = (&'static str, &'static [u8]);
    // A first element shorter than 254 bytes: one length byte, the owner, then the key
    // with no length (the last element runs to the end).
    let short = <OwnerKey as Value>::as_bytes(&("alice", b"doc:prefs"));
    assert_eq!(short, hex("05 61 6c 69 63 65 64 6f 63 3a 70 72 65 66 73"));
    let binary = <OwnerKey as Value>::as_bytes(&("bob", BINARY_KEY));
    assert_eq!(binary, hex("03 62 6f 62 00 ff 80 6b"));
    assert_eq!(
        <OwnerKey as Value>::from_bytes(&binary),
        ("bob", BINARY_KEY)
    );
    // 254 bytes and longer: 0xfe and the length as u16 little-endian.
    let long = "o".repeat(256);
    let encoded = <(&str, &[u8]) as Value>::as_bytes(&(long.as_str(), &b"k"[..]));
    assert_eq!(&encoded[..3], &[0xfe, 0x00, 0x01]);
    assert_eq!(&encoded[3..259], long.as_bytes());
    assert_eq!(&encoded[259..], b"k");
    assert_eq!(encoded.len(), 3 + 256 + 1);
    let edge = "o".repeat(253);
    let encoded = <(&str, &[u8]) as Value>::as_bytes(&(edge.as_str(), &b"k"[..]));
    assert_eq!(encoded[0], 253, "253 still fits in the one length byte");
    // Ordered by owner first (bytewise), then key: an owner's rows are contiguous even
    // when one owner's name is a prefix of another's.
    let order = |a: OwnerKey, b: OwnerKey| {
        <OwnerKey as Key>::compare(
            &<OwnerKey as Value>::as_bytes(&a),
            &<OwnerKey as Value>::as_bytes(&b),
        )
    };
    assert!(order(("al", b"zzz"), ("alice", b"a")).is_lt());
    assert!(order(("alice", b"a"), ("alice", b"b")).is_lt());
    assert!(order(("alice", b"\xff"), ("bob", b"\x00")).is_lt());
}

#[tokio::test]
async fn golden_v2_file_serves_owners_fields_and_sweeps_as_written() {
    let dir = golden_copy(2);
    let clock = ManualClock::new(READ_AT);
    let service = service(open_store(dir.path()).expect("opens"), &clock);

    // Expired sessions are left out of the listing; their rows stay until purged.
    let alice = OwnerPage {
        sessions: vec![
            OwnedSession {
                key: b"doc:prefs".to_vec(),
                timestamp: T0 + 3,
                expires_at: None,
                created_at: Some(T0 + 2 * SECOND),
            },
            OwnedSession {
                key: b"session:alice-1".to_vec(),
                timestamp: T0 + 1,
                expires_at: Some(T0 + 3601 * SECOND),
                created_at: Some(T0 + SECOND),
            },
        ],
        next_after: None,
    };
    assert_eq!(
        service
            .owner_sessions("alice", None, 10)
            .await
            .expect("list"),
        alice
    );
    let bob = service.owner_sessions("bob", None, 10).await.expect("list");
    let bob_keys: Vec<&[u8]> = bob.sessions.iter().map(|s| s.key.as_slice()).collect();
    assert_eq!(
        bob_keys,
        [BINARY_KEY],
        "bob's deleted session is not listed"
    );
    for nobody in ["al", "alice2", "carol"] {
        assert!(
            service
                .owner_sessions(nobody, None, 10)
                .await
                .expect("list")
                .sessions
                .is_empty(),
            "{nobody}"
        );
    }

    assert_eq!(
        service.get(b"session:alice-1".to_vec()).await.expect("get"),
        Some(Entry {
            value: b"{\"user\":42}".to_vec().into(),
            content_type: "application/json".into(),
            timestamp: T0 + 1,
            expires_at: Some(T0 + 3601 * SECOND),
            etag: format!("\"{}\"", T0 + 1),
            owner: Some("alice".into()),
            lifetime_ends: Some(T0 + 86_401 * SECOND),
        })
    );
    // The field clocks still guard: "cart" was removed at T0+3, so an older PATCH
    // cannot bring it back; "user" dates from the base, T0+2, and a newer one applies.
    let patch = |members: serde_json::Value, timestamp| {
        let Ok(members) = serde_json::from_value::<Map<String, serde_json::Value>>(members) else {
            panic!("a JSON object");
        };
        service.patch(
            b"doc:prefs".to_vec(),
            members,
            timestamp,
            None,
            WriteOptions::default(),
        )
    };
    assert!(matches!(
        patch(json!({"cart": [9]}), T0 + 2).await,
        Err(ServiceError::PatchRefused(report)) if report.refused == [("cart".to_string(), T0 + 3)]
    ));
    let report = patch(json!({"user": 43}), T0 + 3).await.expect("patch");
    assert_eq!(report.applied, ["user"]);
    let doc = service
        .get(b"doc:prefs".to_vec())
        .await
        .expect("get")
        .expect("live");
    assert_eq!(&doc.value[..], b"{\"theme\":\"light\",\"user\":43}");
    assert_eq!(doc.owner.as_deref(), Some("alice"), "the owner sticks");

    assert_eq!(
        service.counts().await.expect("counts"),
        Counts {
            records: 7,
            tombstones: 1,
            expired: 1
        }
    );
    clock.set(T0 + 20 * SECOND + GRACE);
    assert_eq!(
        service.sweep(100).await.expect("sweep"),
        Purged {
            expired: 1,
            tombstones: 1
        }
    );
    // "session:alice-1" has expired by now too (and still guards for the grace); the
    // listing leaves it out, and nothing else of alice's is left but the document.
    let keys: Vec<Vec<u8>> = service
        .owner_sessions("alice", None, 10)
        .await
        .expect("list")
        .sessions
        .into_iter()
        .map(|s| s.key)
        .collect();
    assert_eq!(keys, vec![b"doc:prefs".to_vec()]);
    service.close().await.expect("close");
    drop(service);
    let db = ReadOnlyDatabase::open(dir.path().join(DB_FILE_NAME)).expect("open read-only");
    let txn = db.begin_read().expect("read txn");
    let rows = owner_rows(&txn);
    let mut expected = golden_v2_owner_rows();
    expected.retain(|(_, key)| key != b"session:expired");
    assert_eq!(
        rows, expected,
        "the purge took the expired session's row with it"
    );
}

// ---- refusals and new files ----

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
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("schema version 99"), "{message}");
    assert!(
        message.contains(&format!("version {SCHEMA_VERSION}")),
        "{message}"
    );
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
                supported: SCHEMA_VERSION,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains("schema version 0"), "{message}");
    assert!(
        message.contains(&format!("version {SCHEMA_VERSION}")),
        "{message}"
    );
    assert_eq!(stored_version(&path), Some(0), "refusing must not restamp");
}

#[tokio::test]
async fn new_file_is_stamped_with_the_current_schema_version() {
    assert_eq!(
        SCHEMA_VERSION, 4,
        "a new version needs migrations/v5.md, a golden v4 upgrade test and a golden v5 file"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path()).expect("opens");
    store.close().await.expect("close");
    let path = store.path().to_path_buf();
    drop(store);
    assert_eq!(stored_version(&path), Some(SCHEMA_VERSION));
    assert_eq!(
        table_names(&path),
        ["expiries", "meta", "owners", "records", "tombstones"],
        "every table of the current version exists from the start"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_record_fails_only_the_writes_to_its_own_key() {
    let dir = golden_copy(1);
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

// ---- schema v3 ----

/// Every record in the golden v3 file, exactly as it was written (migrations/v3.md,
/// "Golden file").
fn golden_v3_records() -> Vec<(&'static [u8], Record)> {
    let octets = || "application/octet-stream".to_string();
    let created = |at: u64, flags: u32| Meta {
        created_at: Some(at),
        flags,
        ..Meta::default()
    };
    vec![
        (
            b"mc:php",
            with_meta(
                Record::live(T0, b"a:1:{s:4:\"user\";i:42;}".to_vec(), octets(), None),
                created(T0, 0xDEAD_BEEF),
            ),
        ),
        (
            b"mc:ttl",
            with_meta(
                Record::live(
                    T0 + SECOND,
                    b"x\x9c\x01".to_vec(),
                    octets(),
                    Some(T0 + 61 * SECOND),
                ),
                created(T0 + SECOND, 2),
            ),
        ),
        (
            b"mc:zero",
            with_meta(
                Record::live(T0 + 2 * SECOND, b"plain".to_vec(), octets(), None),
                created(T0 + 2 * SECOND, 0),
            ),
        ),
        (
            b"session:bob",
            with_meta(
                Record::live(T0 + 3, b"1767225600000003|bob".to_vec(), octets(), None),
                Meta {
                    owner: Some("bob".into()),
                    ..created(T0 + 3 * SECOND, 1)
                },
            ),
        ),
    ]
}

#[tokio::test]
async fn golden_v3_file_is_upgraded_in_place_to_v4_and_reads_back_every_record_with_its_client_flags()
 {
    let (dir, raw_before) = golden_read_back(3, &golden_v3_records()).await;
    let path = dir.path().join(DB_FILE_NAME);
    assert_eq!(stored_version(&path), Some(4), "opening upgrades v3 to v4");
    assert_eq!(
        raw_records(&path),
        raw_before,
        "every v3 record is a valid v4 record: nothing is rewritten"
    );
}

#[test]
fn golden_v3_file_matches_the_documented_layout() {
    let (_dir, raw) = golden_layout(3);
    let golden = golden_v3_records();
    assert_eq!(raw.len(), golden.len());
    for (key, record) in &golden {
        assert_eq!(
            raw[*key],
            kind_03(record),
            "{}",
            String::from_utf8_lossy(key)
        );
    }
    // The worked example in migrations/v3.md, byte for byte.
    assert_eq!(
        raw[b"mc:ttl".as_slice()],
        hex(
            "03 | 00 06 47 48 46 2f 82 40 | 00 06 47 48 49 c3 09 40 | 11 | 00 06 47 48 46 2f 82 40 \
             | 00 00 00 02 | 00 18 61 70 70 6c 69 63 61 74 69 6f 6e 2f 6f 63 74 65 74 2d 73 74 72 65 61 6d \
             | 78 9c 01"
        )
    );
}

// ---- schema v4: the current layout ----

/// Every record in the golden v4 file, exactly as it was written (migrations/v4.md,
/// "Golden file").
fn golden_v4_records() -> Vec<(&'static [u8], Record)> {
    let octets = || "application/octet-stream".to_string();
    let created = |at: u64| Meta {
        created_at: Some(at),
        ..Meta::default()
    };
    vec![
        (
            b"tyrant:put",
            with_meta(
                Record::live(T0, b"hello".to_vec(), octets(), None),
                created(T0),
            ),
        ),
        (
            b"session:alice",
            with_meta(
                Record::live(
                    T0 + 1,
                    b"{\"user\":42}".to_vec(),
                    "application/json".into(),
                    Some(T0 + 3601 * SECOND),
                ),
                Meta {
                    owner: Some("alice".into()),
                    lifetime_ends: Some(T0 + 86_401 * SECOND),
                    ..created(T0 + SECOND)
                },
            ),
        ),
        (
            b"mc:php",
            with_meta(
                Record::live(T0 + 2, b"a:1:{s:4:\"user\";i:42;}".to_vec(), octets(), None),
                Meta {
                    flags: 0xDEAD_BEEF,
                    ..created(T0 + 2 * SECOND)
                },
            ),
        ),
        (
            b"doc:cart",
            with_meta(
                Record::live(
                    T0 + 3,
                    b"{\"items\":2}".to_vec(),
                    "application/json".into(),
                    None,
                ),
                Meta {
                    fields: Some(clocks(0, true, &[("items", T0 + 3, false)])),
                    ..created(T0 + 3 * SECOND)
                },
            ),
        ),
        (b"session:gone", Record::tombstone(T0 + 5, T0 + 4 * SECOND)),
        (
            b"import:bare",
            Record::live(T0 + 6, b"raw".to_vec(), octets(), None),
        ),
    ]
}

/// A kind-04 record laid out as migrations/v4.md says, built here byte by byte from
/// the kind-03 builder's parts (independently of the store's codec).
fn kind_04(record: &Record) -> Vec<u8> {
    let tidemark::record::State::Live {
        content_type,
        expires_at,
        ..
    } = &record.state
    else {
        panic!("kind 04 is a live record");
    };
    // kind 03 = 03 | timestamp | expires_at | flags | metadata parts | ct_len | ct | value
    let v3 = kind_03(record);
    let flags = v3[17];
    let ct_at = v3.len() - record_value(record).len() - 2 - content_type.len();
    let implied = content_type == "application/octet-stream";
    let parts =
        flags | if expires_at.is_some() { 0x20 } else { 0 } | if implied { 0 } else { 0x40 };
    let mut out = vec![0x04];
    out.extend_from_slice(&record.timestamp.to_be_bytes());
    out.push(parts);
    if let Some(at) = expires_at {
        out.extend_from_slice(&at.to_be_bytes());
    }
    out.extend_from_slice(&v3[18..ct_at]);
    if !implied {
        out.extend_from_slice(&v3[ct_at..ct_at + 2 + content_type.len()]);
    }
    out.extend_from_slice(record_value(record));
    out
}

fn record_value(record: &Record) -> &[u8] {
    match &record.state {
        tidemark::record::State::Live { value, .. } => value,
        tidemark::record::State::Tombstone { .. } => &[],
    }
}

#[tokio::test]
async fn golden_v4_file_reads_back_every_record_exactly() {
    let (dir, raw_before) = golden_read_back(4, &golden_v4_records()).await;
    let path = dir.path().join(DB_FILE_NAME);
    assert_eq!(stored_version(&path), Some(4), "opening keeps the version");
    assert_eq!(raw_records(&path), raw_before, "opening rewrites no record");
}

#[test]
fn golden_v4_file_matches_the_documented_layout() {
    let (dir, raw) = golden_layout(4);
    let golden = golden_v4_records();
    assert_eq!(raw.len(), golden.len());
    for (key, record) in &golden {
        let expected = match &record.state {
            tidemark::record::State::Tombstone { deleted_at } => {
                kind_02(record.timestamp, *deleted_at)
            }
            tidemark::record::State::Live { .. } => kind_04(record),
        };
        assert_eq!(raw[*key], expected, "{}", String::from_utf8_lossy(key));
    }
    // The worked examples in migrations/v4.md, byte for byte.
    assert_eq!(
        raw[b"tyrant:put".as_slice()],
        hex("04 | 00 06 47 48 46 20 40 00 | 01 | 00 06 47 48 46 20 40 00 | 68 65 6c 6c 6f")
    );
    assert_eq!(
        raw[b"session:alice".as_slice()],
        hex(
            "04 | 00 06 47 48 46 20 40 01 | 67 | 00 06 47 49 1c c3 26 40 \
             | 00 06 47 48 46 2f 82 40 | 00 06 47 5c 64 06 e2 40 | 00 05 61 6c 69 63 65 \
             | 00 10 61 70 70 6c 69 63 61 74 69 6f 6e 2f 6a 73 6f 6e \
             | 7b 22 75 73 65 72 22 3a 34 32 7d"
        )
    );
    assert_eq!(raw[b"import:bare".as_slice()].len(), 1 + 8 + 1 + 3);

    let db =
        ReadOnlyDatabase::open(dir.path().join(DB_FILE_NAME)).expect("golden file opens with redb");
    let txn = db.begin_read().expect("read txn");
    assert_eq!(
        owner_rows(&txn),
        [("alice".to_string(), b"session:alice".to_vec())]
    );
    assert_eq!(
        index_rows(&txn, EXPIRIES),
        [(T0 + 3601 * SECOND, b"session:alice".to_vec())]
    );
    assert_eq!(
        index_rows(&txn, TOMBSTONES),
        [(T0 + 4 * SECOND, b"session:gone".to_vec())]
    );
}

#[tokio::test]
async fn upgraded_v3_record_written_again_is_stored_as_kind_04_and_the_others_keep_their_bytes() {
    let dir = golden_copy(3);
    let path = dir.path().join(DB_FILE_NAME);
    let raw_before = raw_records(&path);
    let clock = ManualClock::new(READ_AT);
    let service = service(open_store(dir.path()).expect("opens"), &clock);
    service
        .put(
            b"mc:zero".to_vec(),
            b"again".to_vec(),
            "application/octet-stream".into(),
            READ_AT,
            None,
            WriteOptions::default(),
        )
        .await
        .expect("put");
    service.close().await.expect("close");
    drop(service);

    let raw = raw_records(&path);
    // The live value's creation time carries over; no client flags were given.
    let rewritten = with_meta(
        Record::live(
            READ_AT,
            b"again".to_vec(),
            "application/octet-stream".into(),
            None,
        ),
        Meta {
            created_at: Some(T0 + 2 * SECOND),
            ..Meta::default()
        },
    );
    assert_eq!(raw[b"mc:zero".as_slice()], kind_04(&rewritten));
    assert_eq!(
        raw[b"mc:zero".as_slice()].len(),
        1 + 8 + 1 + 8 + 5,
        "no expiry, no content type: 18 bytes besides the value, where kind 03 took 52"
    );
    for (key, bytes) in &raw_before {
        if key.as_slice() != b"mc:zero" {
            assert_eq!(&raw[key], bytes, "{}", String::from_utf8_lossy(key));
        }
    }
}
