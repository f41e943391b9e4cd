//! Everything written over HTTP survives a clean shutdown and reopening the same data
//! directory: values, content types, timestamps, expiries, and tombstones that still
//! refuse older writes — in immediate and in relaxed durability mode.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{T0, TestServer};
use reqwest::{Client, StatusCode};
use tidemark::config::Durability;
use tidemark::metrics::Metrics;
use tidemark::store::{self, Counts, DB_FILE_NAME, RedbStore, StoreOptions, WAL_FILE_NAMES};

const SECOND: u64 = 1_000_000;
const KEYS: u64 = 120;
const TTL_SECS: u64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Text,
    JsonWithTtl,
    Binary,
    Deleted,
}

/// The key, path segment, shape, timestamp and value written for index `i`.
struct Planned {
    segment: String,
    shape: Shape,
    timestamp: u64,
    value: Vec<u8>,
    content_type: &'static str,
}

fn planned(i: u64) -> Planned {
    let shape = match i % 4 {
        0 => Shape::Text,
        1 => Shape::JsonWithTtl,
        2 => Shape::Binary,
        _ => Shape::Deleted,
    };
    let (segment, value, content_type) = match shape {
        Shape::Text | Shape::Deleted => (
            format!("text-{i}"),
            format!("value {i}").into_bytes(),
            "text/plain; charset=utf-8",
        ),
        Shape::JsonWithTtl => (
            format!("json-{i}"),
            format!("{{\"n\":{i}}}").into_bytes(),
            "application/json",
        ),
        // A key with bytes that are not UTF-8, and a value with every kind of byte.
        Shape::Binary => (
            format!("bin%00%FF%2F{i}"),
            vec![0, 255, i as u8, b'\n', 0x80],
            "application/octet-stream",
        ),
    };
    Planned {
        segment,
        shape,
        timestamp: T0 + i,
        value,
        content_type,
    }
}

async fn write_all(server: &TestServer, client: &Client) {
    for i in 0..KEYS {
        let p = planned(i);
        let url = server.url(&format!("/keys/{}", p.segment));
        let mut put = client
            .put(&url)
            .header("X-Write-Timestamp", p.timestamp.to_string())
            .header("Content-Type", p.content_type)
            .body(p.value.clone());
        if p.shape == Shape::JsonWithTtl {
            put = put.header("X-TTL", TTL_SECS.to_string());
        }
        assert_eq!(
            put.send().await.expect("PUT answered").status(),
            StatusCode::CREATED,
            "{}",
            p.segment
        );
        if p.shape == Shape::Deleted {
            let deleted = client
                .delete(&url)
                .header("X-Write-Timestamp", (p.timestamp + 1000).to_string())
                .send()
                .await
                .expect("DELETE answered");
            assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        }
    }
}

async fn check_all(server: &TestServer, client: &Client) {
    for i in 0..KEYS {
        let p = planned(i);
        let url = server.url(&format!("/keys/{}", p.segment));
        let read = client.get(&url).send().await.expect("GET answered");
        if p.shape == Shape::Deleted {
            assert_eq!(read.status(), StatusCode::NOT_FOUND, "{}", p.segment);
            continue;
        }
        assert_eq!(read.status(), StatusCode::OK, "{}", p.segment);
        let headers = read.headers().clone();
        assert_eq!(headers["content-type"], p.content_type, "{}", p.segment);
        assert_eq!(
            headers["x-write-timestamp"],
            p.timestamp.to_string().as_str(),
            "{}",
            p.segment
        );
        match p.shape {
            Shape::JsonWithTtl => assert_eq!(
                headers["x-expires-at"],
                (T0 + TTL_SECS * SECOND).to_string().as_str(),
                "{}",
                p.segment
            ),
            _ => assert!(!headers.contains_key("x-expires-at"), "{}", p.segment),
        }
        assert_eq!(
            read.bytes().await.expect("body").as_ref(),
            p.value.as_slice(),
            "{}",
            p.segment
        );
    }
}

/// An older write to every key is refused with the stored timestamp: the guard state
/// (including tombstones) came back, not just the values.
async fn check_guards(server: &TestServer, client: &Client) {
    for i in 0..KEYS {
        let p = planned(i);
        let stored = match p.shape {
            Shape::Deleted => p.timestamp + 1000,
            _ => p.timestamp,
        };
        let refused = client
            .put(server.url(&format!("/keys/{}", p.segment)))
            .header("X-Write-Timestamp", (stored - 1).to_string())
            .body("late")
            .send()
            .await
            .expect("PUT answered");
        assert_eq!(refused.status(), StatusCode::CONFLICT, "{}", p.segment);
        assert_eq!(
            refused.headers()["x-write-timestamp"],
            stored.to_string().as_str(),
            "{}",
            p.segment
        );
    }
}

fn counts_after_writing() -> Counts {
    Counts {
        records: KEYS,
        tombstones: KEYS / 4,
        expired: 0,
    }
}

async fn counts(server: &TestServer) -> Counts {
    server
        .running
        .as_ref()
        .expect("server is running")
        .service
        .counts()
        .await
        .expect("counts")
}

#[tokio::test]
async fn values_types_timestamps_expiries_and_tombstones_survive_a_restart() {
    let server = TestServer::start().await;
    let client = Client::new();
    write_all(&server, &client).await;
    check_all(&server, &client).await;

    let server = server.restart().await;
    let client = Client::new();
    check_all(&server, &client).await;
    assert_eq!(counts(&server).await, counts_after_writing());
    check_guards(&server, &client).await;

    // Expiry is absolute server time, so it still happens on schedule after a restart.
    server.clock.set(T0 + TTL_SECS * SECOND);
    let expired = client
        .get(server.url(&format!("/keys/{}", planned(1).segment)))
        .send()
        .await
        .expect("GET answered");
    assert_eq!(expired.status(), StatusCode::NOT_FOUND);
    assert_eq!(counts(&server).await.expired, KEYS / 4);
    server.stop().await;
}

#[tokio::test]
async fn expired_value_keeps_guarding_across_a_restart() {
    let server = TestServer::start().await;
    let client = Client::new();
    let url = server.url("/keys/brief");
    let put = client
        .put(&url)
        .header("X-Write-Timestamp", T0.to_string())
        .header("X-TTL", "1")
        .body("v")
        .send()
        .await
        .expect("PUT answered");
    assert_eq!(put.status(), StatusCode::CREATED);
    server.clock.set(T0 + 2 * SECOND);

    let server = server.restart().await;
    let url = server.url("/keys/brief");
    let read = client.get(&url).send().await.expect("GET answered");
    assert_eq!(read.status(), StatusCode::NOT_FOUND);
    let refused = client
        .put(&url)
        .header("X-Write-Timestamp", (T0 - 1).to_string())
        .body("older")
        .send()
        .await
        .expect("PUT answered");
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    server.stop().await;
}

/// A relaxed server whose periodic flush never runs during a test: only the shutdown
/// (or an explicit sync) makes its writes durable.
async fn relaxed_without_periodic_flush() -> TestServer {
    TestServer::start_with(|config| {
        config.durability = Durability::Relaxed;
        config.flush_interval = Duration::from_secs(24 * 3600);
    })
    .await
}

#[tokio::test]
async fn relaxed_durability_data_survives_a_clean_shutdown() {
    let server = relaxed_without_periodic_flush().await;
    let client = Client::new();
    write_all(&server, &client).await;
    assert!(
        server
            .running
            .as_ref()
            .expect("server is running")
            .service
            .has_unflushed_commits(),
        "relaxed writes are waiting for the shutdown flush"
    );

    let server = server.restart().await;
    let client = Client::new();
    check_all(&server, &client).await;
    assert_eq!(counts(&server).await, counts_after_writing());
    check_guards(&server, &client).await;
    server.stop().await;
}

/// What a crash at this instant would leave: a byte copy of the database file and its
/// write-ahead log as they are now, opened (and so recovered) as a store of its own.
/// (A copy reads the page cache, so it shows what a process crash leaves, not what a
/// power loss leaves; unsynced bytes are there either way.)
async fn crash_image(server: &TestServer, into: &Path) -> RedbStore {
    std::fs::create_dir_all(into).expect("image dir");
    for file in [DB_FILE_NAME, WAL_FILE_NAMES[0], WAL_FILE_NAMES[1]] {
        std::fs::copy(server.data_dir().join(file), into.join(file))
            .expect("copy the database files");
    }
    RedbStore::open(
        &StoreOptions {
            data_dir: into.to_path_buf(),
            durability: store::Durability::Immediate,
            cache_size: 1 << 20,
            record_cache_size: 1 << 20,
        },
        Arc::new(Metrics::new()),
    )
    .expect("crash image opens")
}

async fn image_holds_every_record(image: RedbStore) -> bool {
    let held = (0..KEYS).map(planned).all(|p| match p.shape {
        Shape::Text => image
            .get(p.segment.as_bytes())
            .expect("read image")
            .is_some_and(|r| r.timestamp == p.timestamp),
        Shape::Deleted => image
            .get(p.segment.as_bytes())
            .expect("read image")
            .is_some_and(|r| r.timestamp == p.timestamp + 1000),
        // Binary keys are percent-encoded in `segment`; the HTTP checks cover them.
        Shape::JsonWithTtl | Shape::Binary => true,
    });
    image.close().await.expect("close image");
    held
}

#[tokio::test]
async fn relaxed_writes_survive_a_crash_once_synced() {
    let server = relaxed_without_periodic_flush().await;
    let client = Client::new();
    write_all(&server, &client).await;
    let images = tempfile::tempdir().expect("temp dir");
    let service = &server.running.as_ref().expect("running").service;
    service.sync().await.expect("sync");
    assert!(!service.has_unflushed_commits());
    let after = crash_image(&server, &images.path().join("after")).await;
    assert!(image_holds_every_record(after).await);
    server.stop().await;
}

#[tokio::test]
async fn relaxed_writes_become_crash_safe_within_the_flush_interval() {
    let server = TestServer::start_with(|config| {
        config.durability = Durability::Relaxed;
        config.flush_interval = Duration::from_millis(20);
    })
    .await;
    let client = Client::new();
    write_all(&server, &client).await;
    let service = &server.running.as_ref().expect("running").service;
    let deadline = Instant::now() + Duration::from_secs(5);
    while service.has_unflushed_commits() {
        assert!(Instant::now() < deadline, "no flush within 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let images = tempfile::tempdir().expect("temp dir");
    let image = crash_image(&server, images.path()).await;
    assert!(image_holds_every_record(image).await);
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_server_restarts_again_with_its_later_writes() {
    let server = TestServer::start().await;
    let client = Client::new();
    let put = |server: &TestServer, timestamp: u64, body: &'static str| {
        client
            .put(server.url("/keys/k"))
            .header("X-Write-Timestamp", timestamp.to_string())
            .body(body)
            .send()
    };
    assert_eq!(
        put(&server, T0, "one").await.expect("PUT").status(),
        StatusCode::CREATED
    );
    let server = server.restart().await;
    assert_eq!(
        put(&server, T0 + 1, "two").await.expect("PUT").status(),
        StatusCode::NO_CONTENT
    );
    let server = server.restart().await;
    let read = client
        .get(server.url("/keys/k"))
        .send()
        .await
        .expect("GET answered");
    assert_eq!(read.text().await.expect("body"), "two");
    server.stop().await;
}
