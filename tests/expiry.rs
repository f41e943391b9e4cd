//! Expiry, tombstone grace and the sweeper, driven by the server's manual clock: no
//! test here sleeps to wait for time to pass.
//!
//! Reads and writes go over HTTP to a real server; sweeps and counts are called on its
//! `Service` in-process so the test decides exactly when the sweeper runs.

mod common;

use std::time::Duration;

use common::{T0, TestServer};
use reqwest::{Client, Response, StatusCode};
use tidemark::service::Service;
use tidemark::store::{Counts, Purged};

const SECOND: u64 = 1_000_000;
const GRACE_SECS: u64 = 60;
const GRACE: u64 = GRACE_SECS * SECOND;

/// A server whose own sweeper never runs during a test, with a one-minute grace.
async fn server() -> TestServer {
    TestServer::start_with(|config| {
        config.limits.tombstone_grace = Duration::from_secs(GRACE_SECS);
        config.sweep_interval = Duration::from_secs(24 * 3600);
    })
    .await
}

fn service(server: &TestServer) -> &Service {
    &server.running.as_ref().expect("server is running").service
}

async fn put(
    client: &Client,
    server: &TestServer,
    key: &str,
    timestamp: u64,
    value: &str,
    ttl_secs: Option<u64>,
) -> Response {
    let mut request = client
        .put(server.url(&format!("/keys/{key}")))
        .header("X-Write-Timestamp", timestamp.to_string())
        .header("Content-Type", "text/plain")
        .body(value.to_string());
    if let Some(ttl) = ttl_secs {
        request = request.header("X-TTL", ttl.to_string());
    }
    request.send().await.expect("PUT answered")
}

async fn delete(client: &Client, server: &TestServer, key: &str, timestamp: u64) -> Response {
    client
        .delete(server.url(&format!("/keys/{key}")))
        .header("X-Write-Timestamp", timestamp.to_string())
        .send()
        .await
        .expect("DELETE answered")
}

async fn get(client: &Client, server: &TestServer, key: &str) -> Response {
    client
        .get(server.url(&format!("/keys/{key}")))
        .send()
        .await
        .expect("GET answered")
}

fn stamp(response: &Response) -> Option<u64> {
    response
        .headers()
        .get("x-write-timestamp")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn counts(server: &TestServer) -> Counts {
    service(server).counts().await.expect("counts")
}

#[tokio::test]
async fn value_reads_404_from_the_exact_microsecond_it_expires() {
    let server = server().await;
    let client = Client::new();
    assert_eq!(
        put(&client, &server, "s", T0, "v", Some(10)).await.status(),
        StatusCode::CREATED
    );
    let live = get(&client, &server, "s").await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(
        live.headers()["x-expires-at"].to_str().expect("ascii"),
        (T0 + 10 * SECOND).to_string()
    );

    server.clock.set(T0 + 10 * SECOND - 1);
    assert_eq!(get(&client, &server, "s").await.status(), StatusCode::OK);
    server.clock.set(T0 + 10 * SECOND);
    assert_eq!(
        get(&client, &server, "s").await.status(),
        StatusCode::NOT_FOUND
    );
    let listed = client
        .get(server.url("/keys"))
        .send()
        .await
        .expect("list answered")
        .bytes()
        .await
        .expect("list body");
    let listed: serde_json::Value = serde_json::from_slice(&listed).expect("list is JSON");
    assert_eq!(listed["keys"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn expired_value_refuses_older_puts_until_grace_passes_then_accepts_them() {
    let server = server().await;
    let client = Client::new();
    put(&client, &server, "s", T0, "first", Some(5)).await;
    let expires_at = T0 + 5 * SECOND;

    server.clock.set(expires_at);
    assert_eq!(
        get(&client, &server, "s").await.status(),
        StatusCode::NOT_FOUND
    );
    let refused = put(&client, &server, "s", T0 - 1, "older", None).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(stamp(&refused), Some(T0), "409 names the stored timestamp");

    server.clock.set(expires_at + GRACE - 1);
    assert_eq!(
        put(&client, &server, "s", T0 - 1, "older", None)
            .await
            .status(),
        StatusCode::CONFLICT,
        "still guarding one microsecond before the grace ends"
    );
    assert_eq!(
        get(&client, &server, "s").await.status(),
        StatusCode::NOT_FOUND,
        "a refused write must not resurrect anything"
    );

    server.clock.set(expires_at + GRACE);
    assert_eq!(
        put(&client, &server, "s", T0 - 1, "older", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let read = get(&client, &server, "s").await;
    assert_eq!(stamp(&read), Some(T0 - 1));
    assert_eq!(read.text().await.expect("body"), "older");
    server.stop().await;
}

#[tokio::test]
async fn newer_put_on_an_expired_value_is_created_not_replaced() {
    let server = server().await;
    let client = Client::new();
    put(&client, &server, "s", T0, "first", Some(1)).await;
    server.clock.set(T0 + SECOND);
    // Within the grace a newer write is still accepted; the key had no live value.
    assert_eq!(
        put(&client, &server, "s", T0 + 1, "second", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        get(&client, &server, "s").await.text().await.expect("body"),
        "second"
    );
    server.stop().await;
}

#[tokio::test]
async fn tombstone_refuses_older_puts_until_grace_passes_then_accepts_them() {
    let server = server().await;
    let client = Client::new();
    put(&client, &server, "s", T0, "v", None).await;
    server.clock.set(T0 + 7);
    assert_eq!(
        delete(&client, &server, "s", T0 + 100).await.status(),
        StatusCode::NO_CONTENT
    );
    let deleted_at = T0 + 7;

    server.clock.set(deleted_at + GRACE - 1);
    let refused = put(&client, &server, "s", T0 + 99, "late", None).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(stamp(&refused), Some(T0 + 100));

    server.clock.set(deleted_at + GRACE);
    assert_eq!(
        put(&client, &server, "s", T0 + 99, "late", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        get(&client, &server, "s").await.text().await.expect("body"),
        "late"
    );
    server.stop().await;
}

#[tokio::test]
async fn sweep_purges_only_what_has_lapsed_and_counts_follow() {
    let server = server().await;
    let client = Client::new();
    let service = service(&server);
    put(&client, &server, "forever", T0, "a", None).await;
    put(&client, &server, "short", T0, "b", Some(5)).await;
    put(&client, &server, "long", T0, "c", Some(3600)).await;
    put(&client, &server, "gone", T0, "d", None).await;
    delete(&client, &server, "gone", T0 + 1).await;
    delete(&client, &server, "never-was", T0 + 1).await;
    assert_eq!(
        counts(&server).await,
        Counts {
            records: 5,
            tombstones: 2,
            expired: 0
        }
    );
    assert_eq!(counts(&server).await.live(), 3);

    // "short" has expired but still guards: nothing may be purged yet.
    server.clock.set(T0 + 5 * SECOND);
    assert_eq!(
        counts(&server).await,
        Counts {
            records: 5,
            tombstones: 2,
            expired: 1
        }
    );
    assert_eq!(service.sweep(100).await.expect("sweep"), Purged::default());

    // The tombstones lapse at T0 + GRACE, "short" one 5 s later.
    server.clock.set(T0 + GRACE);
    assert_eq!(
        service.sweep(100).await.expect("sweep"),
        Purged {
            expired: 0,
            tombstones: 2
        }
    );
    assert_eq!(
        counts(&server).await,
        Counts {
            records: 3,
            tombstones: 0,
            expired: 1
        }
    );
    server.clock.set(T0 + 5 * SECOND + GRACE - 1);
    assert_eq!(service.sweep(100).await.expect("sweep"), Purged::default());
    server.clock.set(T0 + 5 * SECOND + GRACE);
    assert_eq!(
        service.sweep(100).await.expect("sweep"),
        Purged {
            expired: 1,
            tombstones: 0
        }
    );
    assert_eq!(
        counts(&server).await,
        Counts {
            records: 2,
            tombstones: 0,
            expired: 0
        }
    );
    assert_eq!(
        get(&client, &server, "forever").await.status(),
        StatusCode::OK
    );
    assert_eq!(get(&client, &server, "long").await.status(), StatusCode::OK);
    // Purged keys are absent: any timestamp is accepted again.
    assert_eq!(
        put(&client, &server, "short", 1, "x", None).await.status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put(&client, &server, "gone", 1, "x", None).await.status(),
        StatusCode::CREATED
    );
    server.stop().await;
}

#[tokio::test]
async fn sweep_honours_its_limit_and_finishes_on_later_calls() {
    let server = server().await;
    let client = Client::new();
    let service = service(&server);
    for i in 0..5 {
        delete(&client, &server, &format!("t{i}"), T0).await;
        put(&client, &server, &format!("e{i}"), T0, "v", Some(1)).await;
    }
    server.clock.set(T0 + SECOND + GRACE);
    let mut total = Purged::default();
    let mut calls = 0;
    loop {
        let purged = service.sweep(3).await.expect("sweep");
        assert!(purged.expired + purged.tombstones <= 3, "{purged:?}");
        if purged == Purged::default() {
            break;
        }
        total.expired += purged.expired;
        total.tombstones += purged.tombstones;
        calls += 1;
    }
    assert_eq!(
        total,
        Purged {
            expired: 5,
            tombstones: 5
        }
    );
    assert_eq!(calls, 4, "10 records at 3 per call");
    assert_eq!(counts(&server).await, Counts::default());
    server.stop().await;
}

#[tokio::test]
async fn sweep_keeps_keys_rewritten_after_their_delete_or_expiry() {
    let server = server().await;
    let client = Client::new();
    let service = service(&server);
    put(&client, &server, "revived", T0, "old", None).await;
    delete(&client, &server, "revived", T0 + 1).await;
    put(&client, &server, "revived", T0 + 2, "new", None).await;
    put(&client, &server, "renewed", T0, "old", Some(1)).await;
    server.clock.set(T0 + SECOND);
    put(&client, &server, "renewed", T0 + 1, "new", None).await;

    server.clock.set(T0 + 10 * GRACE);
    assert_eq!(service.sweep(100).await.expect("sweep"), Purged::default());
    for key in ["revived", "renewed"] {
        let read = get(&client, &server, key).await;
        assert_eq!(read.status(), StatusCode::OK, "{key}");
        assert_eq!(read.text().await.expect("body"), "new", "{key}");
    }
    assert_eq!(
        counts(&server).await,
        Counts {
            records: 2,
            tombstones: 0,
            expired: 0
        }
    );
    server.stop().await;
}

#[tokio::test]
async fn touched_value_is_neither_expired_nor_purged_at_its_old_expiry() {
    let server = server().await;
    let client = Client::new();
    let service = service(&server);
    put(&client, &server, "s", T0, "v", Some(5)).await;
    let touched = client
        .post(server.url("/keys/s/touch"))
        .header("X-TTL", "3600")
        .send()
        .await
        .expect("touch answered");
    assert_eq!(touched.status(), StatusCode::OK);

    server.clock.set(T0 + 5 * SECOND + GRACE);
    assert_eq!(service.sweep(100).await.expect("sweep"), Purged::default());
    assert_eq!(get(&client, &server, "s").await.status(), StatusCode::OK);
    assert_eq!(counts(&server).await.expired, 0);

    server.clock.set(T0 + 3600 * SECOND + GRACE);
    assert_eq!(
        service.sweep(100).await.expect("sweep"),
        Purged {
            expired: 1,
            tombstones: 0
        }
    );
    assert_eq!(counts(&server).await, Counts::default());
    server.stop().await;
}

#[tokio::test]
async fn sweep_keeps_a_tombstone_in_grace_even_when_the_clock_is_near_the_epoch() {
    let server = server().await;
    let client = Client::new();
    // A host whose clock has not been set yet: server time is less than the grace.
    server.clock.set(0);
    assert_eq!(
        delete(&client, &server, "s", 10).await.status(),
        StatusCode::NO_CONTENT
    );
    server.clock.set(GRACE - 1);
    assert_eq!(
        service(&server).sweep(100).await.expect("sweep"),
        Purged::default()
    );
    assert_eq!(
        put(&client, &server, "s", 9, "older", None).await.status(),
        StatusCode::CONFLICT
    );
    server.clock.set(GRACE);
    assert_eq!(
        service(&server).sweep(100).await.expect("sweep"),
        Purged {
            expired: 0,
            tombstones: 1
        }
    );
    server.stop().await;
}
