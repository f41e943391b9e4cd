//! Expiry, tombstone grace and the sweeper, driven by the server's manual clock: no
//! test here sleeps to wait for time to pass.
//!
//! Reads and writes go over HTTP to a real server; sweeps and counts are called on its
//! `Service` in-process so the test decides exactly when the sweeper runs.

mod common;

use std::time::Duration;

use common::http::Http;
use common::{T0, TestServer};
use reqwest::{Response, StatusCode};
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
    let http = Http::of(&server);
    assert_eq!(
        http.put_with_ttl("s", T0, "v", 10).await.status(),
        StatusCode::CREATED
    );
    let live = http.get("s").await;
    assert_eq!(live.status(), StatusCode::OK);
    assert_eq!(
        live.headers()["x-expires-at"].to_str().expect("ascii"),
        (T0 + 10 * SECOND).to_string()
    );

    server.clock.set(T0 + 10 * SECOND - 1);
    assert_eq!(http.get("s").await.status(), StatusCode::OK);
    server.clock.set(T0 + 10 * SECOND);
    assert_eq!(http.get("s").await.status(), StatusCode::NOT_FOUND);
    let listed = http.list(&[]).await.bytes().await.expect("list body");
    let listed: serde_json::Value = serde_json::from_slice(&listed).expect("list is JSON");
    assert_eq!(listed["keys"], serde_json::json!([]));
    server.stop().await;
}

#[tokio::test]
async fn expired_value_refuses_older_puts_until_grace_passes_then_accepts_them() {
    let server = server().await;
    let http = Http::of(&server);
    http.put_with_ttl("s", T0, "first", 5).await;
    let expires_at = T0 + 5 * SECOND;

    server.clock.set(expires_at);
    assert_eq!(http.get("s").await.status(), StatusCode::NOT_FOUND);
    let refused = http.put("s", T0 - 1, "older").await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(stamp(&refused), Some(T0), "409 names the stored timestamp");

    server.clock.set(expires_at + GRACE - 1);
    assert_eq!(
        http.put("s", T0 - 1, "older").await.status(),
        StatusCode::CONFLICT,
        "still guarding one microsecond before the grace ends"
    );
    assert_eq!(
        http.get("s").await.status(),
        StatusCode::NOT_FOUND,
        "a refused write must not resurrect anything"
    );

    server.clock.set(expires_at + GRACE);
    assert_eq!(
        http.put("s", T0 - 1, "older").await.status(),
        StatusCode::CREATED
    );
    let read = http.get("s").await;
    assert_eq!(stamp(&read), Some(T0 - 1));
    assert_eq!(read.text().await.expect("body"), "older");
    server.stop().await;
}

#[tokio::test]
async fn newer_put_on_an_expired_value_is_created_not_replaced() {
    let server = server().await;
    let http = Http::of(&server);
    http.put_with_ttl("s", T0, "first", 1).await;
    server.clock.set(T0 + SECOND);
    // Within the grace a newer write is still accepted; the key had no live value.
    assert_eq!(
        http.put("s", T0 + 1, "second").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(http.get("s").await.text().await.expect("body"), "second");
    server.stop().await;
}

#[tokio::test]
async fn tombstone_refuses_older_puts_until_grace_passes_then_accepts_them() {
    let server = server().await;
    let http = Http::of(&server);
    http.put("s", T0, "v").await;
    server.clock.set(T0 + 7);
    assert_eq!(
        http.delete("s", T0 + 100).await.status(),
        StatusCode::NO_CONTENT
    );
    let deleted_at = T0 + 7;

    server.clock.set(deleted_at + GRACE - 1);
    let refused = http.put("s", T0 + 99, "late").await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    assert_eq!(stamp(&refused), Some(T0 + 100));

    server.clock.set(deleted_at + GRACE);
    assert_eq!(
        http.put("s", T0 + 99, "late").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(http.get("s").await.text().await.expect("body"), "late");
    server.stop().await;
}

#[tokio::test]
async fn sweep_purges_only_what_has_lapsed_and_counts_follow() {
    let server = server().await;
    let http = Http::of(&server);
    let service = service(&server);
    http.put("forever", T0, "a").await;
    http.put_with_ttl("short", T0, "b", 5).await;
    http.put_with_ttl("long", T0, "c", 3600).await;
    http.put("gone", T0, "d").await;
    http.delete("gone", T0 + 1).await;
    http.delete("never-was", T0 + 1).await;
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
    assert_eq!(http.get("forever").await.status(), StatusCode::OK);
    assert_eq!(http.get("long").await.status(), StatusCode::OK);
    // Purged keys are absent: any timestamp is accepted again.
    assert_eq!(
        http.put("short", 1, "x").await.status(),
        StatusCode::CREATED
    );
    assert_eq!(http.put("gone", 1, "x").await.status(), StatusCode::CREATED);
    server.stop().await;
}

#[tokio::test]
async fn sweep_honours_its_limit_and_finishes_on_later_calls() {
    let server = server().await;
    let http = Http::of(&server);
    let service = service(&server);
    for i in 0..5 {
        http.delete(&format!("t{i}"), T0).await;
        http.put_with_ttl(&format!("e{i}"), T0, "v", 1).await;
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
    let http = Http::of(&server);
    let service = service(&server);
    http.put("revived", T0, "old").await;
    http.delete("revived", T0 + 1).await;
    http.put("revived", T0 + 2, "new").await;
    http.put_with_ttl("renewed", T0, "old", 1).await;
    server.clock.set(T0 + SECOND);
    http.put("renewed", T0 + 1, "new").await;

    server.clock.set(T0 + 10 * GRACE);
    assert_eq!(service.sweep(100).await.expect("sweep"), Purged::default());
    for key in ["revived", "renewed"] {
        let read = http.get(key).await;
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
    let http = Http::of(&server);
    let service = service(&server);
    http.put_with_ttl("s", T0, "v", 5).await;
    let touched = http.touch("s", "3600").await;
    assert_eq!(touched.status(), StatusCode::OK);

    server.clock.set(T0 + 5 * SECOND + GRACE);
    assert_eq!(service.sweep(100).await.expect("sweep"), Purged::default());
    assert_eq!(http.get("s").await.status(), StatusCode::OK);
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
    let http = Http::of(&server);
    // A host whose clock has not been set yet: server time is less than the grace.
    server.clock.set(0);
    assert_eq!(http.delete("s", 10).await.status(), StatusCode::NO_CONTENT);
    server.clock.set(GRACE - 1);
    assert_eq!(
        service(&server).sweep(100).await.expect("sweep"),
        Purged::default()
    );
    assert_eq!(
        http.put("s", 9, "older").await.status(),
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
