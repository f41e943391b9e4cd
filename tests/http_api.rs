//! The HTTP API of issue 2, proven black-box over real loopback sockets (plus a few
//! in-process `oneshot` calls on the router): every endpoint, every status it can
//! answer, the headers that go with them, and the problem+json shape of every error.
//!
//! Time only moves through the server's `ManualClock`; nothing here sleeps.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::T0;
use common::http::{Api, header, send};
use reqwest::header::HeaderValue;
use reqwest::{Method, Response};
use serde_json::Value;
use tower::ServiceExt;

const SECOND: u64 = 1_000_000;
const PROBLEM_JSON: &str = "application/problem+json";

impl Api {
    /// Every live key, following `next_cursor` with pages of `limit`.
    async fn list_all(&self, prefix: Option<&str>, limit: usize) -> (Vec<String>, usize) {
        let mut keys = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if let Some(prefix) = prefix {
                query.push(("prefix", prefix));
            }
            if let Some(cursor) = cursor.as_deref() {
                query.push(("cursor", cursor));
            }
            let page = json(self.list(&query).await, 200).await;
            pages += 1;
            assert!(pages <= 100, "pagination does not terminate");
            let page_keys = page["keys"].as_array().expect("keys is an array");
            assert!(page_keys.len() <= limit.parse().expect("number"));
            keys.extend(
                page_keys
                    .iter()
                    .map(|k| k.as_str().expect("keys are strings").to_owned()),
            );
            match &page["next_cursor"] {
                Value::Null => return (keys, pages),
                Value::String(next) => cursor = Some(next.clone()),
                other => panic!("next_cursor must be a string or null, got {other}"),
            }
        }
    }

    async fn metrics(&self) -> String {
        let response = send(self.request(Method::GET, "/metrics")).await;
        assert_eq!(response.status(), 200);
        assert!(header(response.headers(), "content-type").starts_with("text/plain"));
        response.text().await.expect("metrics body")
    }
}

fn etag(timestamp: u64) -> String {
    format!("\"{timestamp}\"")
}

/// Assert `status` and a JSON body, and return the body.
async fn json(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{response:?}");
    assert!(
        header(response.headers(), "content-type").starts_with("application/json"),
        "{response:?}"
    );
    let text = response.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Assert `status` and an RFC 9457 problem body of that status; return the body.
async fn problem(response: Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status, "{response:?}");
    assert_eq!(header(response.headers(), "content-type"), PROBLEM_JSON);
    let text = response.text().await.expect("body");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("problem is not JSON ({e}): {text}"));
    assert_eq!(body["status"], status, "{body}");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:tidemark:problem:")),
        "{body}"
    );
    assert!(
        body["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{body}"
    );
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// A problem whose `type` ends in `kind`.
async fn problem_of_kind(response: Response, status: u16, kind: &str) -> Value {
    let body = problem(response, status).await;
    assert_eq!(
        body["type"],
        format!("urn:tidemark:problem:{kind}"),
        "{body}"
    );
    body
}

/// Assert a 200 with `value` and the given write timestamp.
async fn expect_value(response: Response, value: &str, timestamp: u64) {
    assert_eq!(response.status(), 200, "{response:?}");
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        timestamp.to_string()
    );
    assert_eq!(response.text().await.expect("body"), value);
}

/// The value of the sample `name{labels...}` in a Prometheus text exposition.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (series_name, series_labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse().expect("sample value is a number"))
        })
}

// ---------------------------------------------------------------- PUT

#[tokio::test]
async fn put_of_new_key_is_201_with_timestamp_etag_and_location() {
    let api = Api::start().await;
    let response = api.put("session-1", T0, "hello").await;
    assert_eq!(response.status(), 201);
    let headers = response.headers();
    assert_eq!(header(headers, "x-write-timestamp"), T0.to_string());
    assert_eq!(header(headers, "etag"), etag(T0));
    assert_eq!(header(headers, "location"), "/keys/session-1");
    assert_eq!(header(headers, "cache-control"), "no-store");
    expect_value(api.get("session-1").await, "hello", T0).await;
    api.stop().await;
}

#[tokio::test]
async fn newer_put_replaces_the_value_with_204() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "old").await.status(), 201);
    let response = api.put("k", T0 + 1, "new").await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        (T0 + 1).to_string()
    );
    assert_eq!(header(response.headers(), "etag"), etag(T0 + 1));
    expect_value(api.get("k").await, "new", T0 + 1).await;
    api.stop().await;
}

#[tokio::test]
async fn stale_put_is_refused_with_409_and_changes_nothing() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "current").await.status(), 201);
    let response = api.put("k", T0 - 1, "older").await;
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        T0.to_string(),
        "409 carries the stored timestamp"
    );
    let body = problem_of_kind(response, 409, "stale-write").await;
    assert_eq!(body["current_timestamp"].as_u64(), Some(T0));
    expect_value(api.get("k").await, "current", T0).await;
    api.stop().await;
}

#[tokio::test]
async fn same_timestamp_with_different_content_is_a_tie_refused_with_409() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "first").await.status(), 201);

    let response = api.put("k", T0, "second").await;
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        T0.to_string()
    );
    let body = problem(response, 409).await;
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("timestamp-tie")),
        "{body}"
    );
    assert_eq!(body["current_timestamp"].as_u64(), Some(T0));

    // Same bytes under another content type is different content too.
    let response = api
        .put_with("k", T0, "first", |r| {
            r.header("Content-Type", "application/json")
        })
        .await;
    problem_of_kind(response, 409, "timestamp-tie").await;

    let got = api.get("k").await;
    assert_eq!(header(got.headers(), "content-type"), "text/plain");
    expect_value(got, "first", T0).await;
    api.stop().await;
}

#[tokio::test]
async fn identical_put_at_same_timestamp_is_an_idempotent_204() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "same").await.status(), 201);
    let response = api.put("k", T0, "same").await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        T0.to_string()
    );
    expect_value(api.get("k").await, "same", T0).await;
    api.stop().await;
}

#[tokio::test]
async fn put_without_timestamp_is_428_and_stores_nothing() {
    let api = Api::start().await;
    let response = send(api.request(Method::PUT, "/keys/k").body("v")).await;
    problem_of_kind(response, 428, "missing-timestamp").await;
    problem(api.get("k").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn malformed_timestamps_are_400_for_put_and_delete() {
    let api = Api::start().await;
    let too_big = "18446744073709551616"; // u64::MAX + 1
    for bad in [
        "abc", "-1", "1.5", "", too_big, "+5", "1e6", "0x10", "12 34",
    ] {
        let put = send(
            api.request(Method::PUT, "/keys/k")
                .header("X-Write-Timestamp", bad)
                .body("v"),
        )
        .await;
        problem_of_kind(put, 400, "invalid-timestamp").await;
        let delete = send(
            api.request(Method::DELETE, "/keys/k")
                .header("X-Write-Timestamp", bad),
        )
        .await;
        problem_of_kind(delete, 400, "invalid-timestamp").await;
    }
    problem(api.get("k").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn malformed_ttl_on_put_is_400() {
    let api = Api::start().await;
    for bad in ["abc", "0", "-5", "1.5", "", "315360001"] {
        let response = api.put_with("k", T0, "v", |r| r.header("X-TTL", bad)).await;
        problem_of_kind(response, 400, "invalid-ttl").await;
    }
    problem(api.get("k").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn content_type_is_stored_and_defaults_to_octet_stream() {
    let api = Api::start().await;
    let response = api
        .put_with("typed", T0, "{}", |r| {
            r.header("Content-Type", "application/json")
        })
        .await;
    assert_eq!(response.status(), 201);
    let got = api.get("typed").await;
    assert_eq!(header(got.headers(), "content-type"), "application/json");

    let untyped = send(
        api.request(Method::PUT, "/keys/untyped")
            .header("X-Write-Timestamp", T0.to_string())
            .body(vec![0u8, 159, 146, 150]),
    )
    .await;
    assert_eq!(untyped.status(), 201);
    let got = api.get("untyped").await;
    assert_eq!(
        header(got.headers(), "content-type"),
        "application/octet-stream"
    );
    assert_eq!(
        got.bytes().await.expect("body").as_ref(),
        [0u8, 159, 146, 150]
    );
    api.stop().await;
}

#[tokio::test]
async fn put_with_unreadable_content_type_is_400_and_stores_nothing() {
    let api = Api::start().await;
    let not_ascii =
        HeaderValue::from_bytes(b"text/\xFFplain").expect("obs-text is a legal header value");
    let response = api
        .put_with("k", T0, "v", |r| r.header("Content-Type", not_ascii))
        .await;
    problem_of_kind(response, 400, "invalid-content-type").await;
    problem(api.get("k").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn put_with_a_media_range_or_malformed_content_type_is_400_and_stores_nothing() {
    let api = Api::start().await;
    for bad in [
        "*/*",
        "text/*",
        "*/plain",
        "text",
        "text/",
        "/plain",
        "text/plain; charset",
        "text plain",
    ] {
        let response = api
            .put_with("k", T0, "v", |r| r.header("Content-Type", bad))
            .await;
        problem_of_kind(response, 400, "invalid-content-type").await;
    }
    problem(api.get("k").await, 404).await;
    // A concrete media type with parameters is stored as sent.
    let typed = "text/plain; charset=utf-8";
    let response = api
        .put_with("k", T0, "v", |r| r.header("Content-Type", typed))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(header(api.get("k").await.headers(), "content-type"), typed);
    api.stop().await;
}

#[tokio::test]
async fn put_over_an_expired_value_with_a_newer_timestamp_is_201() {
    let api = Api::start().await;
    let response = api
        .put_with("k", T0, "v1", |r| r.header("X-TTL", "1"))
        .await;
    assert_eq!(response.status(), 201);
    api.server.clock.advance(SECOND);
    problem(api.get("k").await, 404).await;
    assert_eq!(api.put("k", T0 + 1, "v2").await.status(), 201);
    expect_value(api.get("k").await, "v2", T0 + 1).await;
    api.stop().await;
}

/// A PUT wrong in several ways gets one refusal, always the same: the timestamp's
/// first, then the body's size, then the Content-Type's (the body is read before
/// any of them is answered).
#[tokio::test]
async fn a_put_refused_for_several_reasons_gets_the_timestamps_then_the_bodys_then_the_types() {
    let api = Api::start_with(|c| c.limits.max_value_bytes = 16).await;
    let oversize = "y".repeat(17);
    let response = send(
        api.request(Method::PUT, "/keys/k")
            .header("content-type", "*/*")
            .body(oversize.clone()),
    )
    .await;
    problem_of_kind(response, 428, "missing-timestamp").await;
    let response = api
        .put_with("k", T0, &oversize, |r| r.header("content-type", "*/*"))
        .await;
    problem_of_kind(response, 413, "value-too-large").await;
    let response = api
        .put_with("k", T0, "fits", |r| r.header("content-type", "*/*"))
        .await;
    problem_of_kind(response, 400, "invalid-content-type").await;
    problem(api.get("k").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn value_over_max_value_bytes_is_413_and_a_value_at_the_limit_is_stored() {
    let api = Api::start_with(|c| c.limits.max_value_bytes = 16).await;
    let at_limit = "x".repeat(16);
    assert_eq!(api.put("k", T0, &at_limit).await.status(), 201);
    let response = api.put("k", T0 + 1, &"y".repeat(17)).await;
    problem_of_kind(response, 413, "value-too-large").await;
    expect_value(api.get("k").await, &at_limit, T0).await;
    api.stop().await;
}

#[tokio::test]
async fn key_over_max_key_bytes_is_414_on_every_key_endpoint() {
    let api = Api::start_with(|c| c.limits.max_key_bytes = 8).await;
    // Eight bytes after decoding is allowed, even when the encoded segment is longer.
    let at_limit = "%00%01%02%03abcd";
    assert_eq!(api.put(at_limit, T0, "v").await.status(), 201);
    expect_value(api.get(at_limit).await, "v", T0).await;

    let too_long = "abcdefghi";
    problem_of_kind(api.put(too_long, T0, "v").await, 414, "key-too-long").await;
    problem_of_kind(api.get(too_long).await, 414, "key-too-long").await;
    problem_of_kind(api.delete(too_long, T0).await, 414, "key-too-long").await;
    problem_of_kind(api.touch(too_long, "60").await, 414, "key-too-long").await;
    let head = api.head(too_long).await;
    assert_eq!(head.status(), 414);
    assert_eq!(header(head.headers(), "content-type"), PROBLEM_JSON);
    api.stop().await;
}

#[tokio::test]
async fn empty_key_is_400_on_every_key_endpoint() {
    let api = Api::start().await;
    let put = send(
        api.request(Method::PUT, "/keys/")
            .header("X-Write-Timestamp", T0.to_string())
            .body("v"),
    )
    .await;
    problem_of_kind(put, 400, "invalid-key").await;
    problem_of_kind(
        send(api.request(Method::GET, "/keys/")).await,
        400,
        "invalid-key",
    )
    .await;
    let delete = send(
        api.request(Method::DELETE, "/keys/")
            .header("X-Write-Timestamp", T0.to_string()),
    )
    .await;
    problem_of_kind(delete, 400, "invalid-key").await;
    let touch = send(
        api.request(Method::POST, "/keys//touch")
            .header("X-TTL", "60"),
    )
    .await;
    problem_of_kind(touch, 400, "invalid-key").await;
    api.stop().await;
}

#[tokio::test]
async fn put_over_a_tombstone_with_a_newer_timestamp_creates_the_key_again() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v1").await.status(), 201);
    assert_eq!(api.delete("k", T0 + 1).await.status(), 204);
    assert_eq!(api.put("k", T0 + 2, "v2").await.status(), 201);
    expect_value(api.get("k").await, "v2", T0 + 2).await;
    api.stop().await;
}

// ---------------------------------------------------------------- keys as path segments

#[tokio::test]
async fn percent_encoded_slash_names_the_single_key_a_slash_b() {
    let api = Api::start().await;
    assert_eq!(api.put("a%2Fb", T0, "slash").await.status(), 201);
    // Lower-case hex names the same key.
    expect_value(api.get("a%2fb").await, "slash", T0).await;
    // The unencoded form is two segments: no such route.
    problem_of_kind(api.get("a/b").await, 404, "not-found").await;
    // Other routes see the same key.
    assert_eq!(api.touch("a%2Fb", "60").await.status(), 200);
    let page = json(api.list(&[]).await, 200).await;
    assert_eq!(page["keys"], serde_json::json!(["a%2Fb"]));
    assert_eq!(api.delete("a%2Fb", T0 + 1).await.status(), 204);
    problem(api.get("a%2Fb").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn nul_byte_key_round_trips() {
    let api = Api::start().await;
    assert_eq!(api.put("%00", T0, "nul").await.status(), 201);
    assert_eq!(api.put("a%00b", T0, "inner nul").await.status(), 201);
    expect_value(api.get("%00").await, "nul", T0).await;
    expect_value(api.get("a%00b").await, "inner nul", T0).await;
    problem(api.get("ab").await, 404).await;
    let page = json(api.list(&[]).await, 200).await;
    assert_eq!(page["keys"], serde_json::json!(["%00", "a%00b"]));
    api.stop().await;
}

#[tokio::test]
async fn non_utf8_key_round_trips_and_differs_from_its_utf8_lookalike() {
    let api = Api::start().await;
    assert_eq!(api.put("%FF", T0, "raw byte").await.status(), 201);
    // U+00FF encoded as UTF-8 is a different, two-byte key.
    assert_eq!(api.put("%C3%BF", T0, "y umlaut").await.status(), 201);
    expect_value(api.get("%FF").await, "raw byte", T0).await;
    expect_value(api.get("%ff").await, "raw byte", T0).await;
    expect_value(api.get("%C3%BF").await, "y umlaut", T0).await;
    let page = json(api.list(&[]).await, 200).await;
    let keys = page["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{page}");
    assert!(keys.contains(&Value::from("%FF")), "{page}");
    // Each listed key works as-is as a path segment.
    for key in keys {
        let segment = key.as_str().expect("string key");
        assert_eq!(api.get(segment).await.status(), 200, "{segment}");
    }
    api.stop().await;
}

#[tokio::test]
async fn malformed_percent_escape_is_400_on_every_key_endpoint() {
    let api = Api::start().await;
    for bad in ["%zz", "a%4", "abc%", "%G0"] {
        problem_of_kind(api.put(bad, T0, "v").await, 400, "invalid-key").await;
        problem_of_kind(api.get(bad).await, 400, "invalid-key").await;
        problem_of_kind(api.delete(bad, T0).await, 400, "invalid-key").await;
        problem_of_kind(api.touch(bad, "60").await, 400, "invalid-key").await;
    }
    let page = json(api.list(&[]).await, 200).await;
    assert_eq!(page["keys"], serde_json::json!([]), "nothing was stored");
    api.stop().await;
}

// ---------------------------------------------------------------- GET and HEAD

#[tokio::test]
async fn get_sends_value_etag_and_no_store_and_no_expiry_headers_without_ttl() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v").await.status(), 201);
    let response = api.get("k").await;
    assert_eq!(response.status(), 200);
    let headers = response.headers();
    assert_eq!(header(headers, "content-type"), "text/plain");
    assert_eq!(header(headers, "x-write-timestamp"), T0.to_string());
    assert_eq!(header(headers, "etag"), etag(T0));
    assert_eq!(header(headers, "cache-control"), "no-store");
    assert!(headers.get("x-expires-at").is_none(), "{headers:?}");
    assert!(headers.get("expires").is_none(), "{headers:?}");
    api.stop().await;
}

#[tokio::test]
async fn get_of_missing_key_is_404_problem() {
    let api = Api::start().await;
    problem_of_kind(api.get("never-written").await, 404, "not-found").await;
    api.stop().await;
}

#[tokio::test]
async fn head_sends_the_headers_of_get_without_a_body() {
    let api = Api::start().await;
    let response = api
        .put_with("k", T0, "twelve bytes", |r| r.header("X-TTL", "30"))
        .await;
    assert_eq!(response.status(), 201);
    let get = api.get("k").await;
    let head = api.head("k").await;
    assert_eq!(head.status(), 200);
    for name in [
        "content-type",
        "content-length",
        "x-write-timestamp",
        "etag",
        "cache-control",
        "x-expires-at",
        "expires",
    ] {
        assert_eq!(
            header(head.headers(), name),
            header(get.headers(), name),
            "{name}"
        );
    }
    assert_eq!(header(head.headers(), "content-length"), "12");
    assert!(head.bytes().await.expect("no body").is_empty());
    api.stop().await;
}

#[tokio::test]
async fn head_of_missing_key_is_404_without_a_body() {
    let api = Api::start().await;
    let response = api.head("missing").await;
    assert_eq!(response.status(), 404);
    assert_eq!(header(response.headers(), "content-type"), PROBLEM_JSON);
    assert!(response.bytes().await.expect("no body").is_empty());
    let bad = api.head("%zz").await;
    assert_eq!(bad.status(), 400);
    api.stop().await;
}

#[tokio::test]
async fn value_with_ttl_carries_expiry_headers_and_expires_at_the_deadline() {
    let api = Api::start().await;
    let response = api
        .put_with("k", T0, "v", |r| r.header("X-TTL", "30"))
        .await;
    assert_eq!(response.status(), 201);
    let got = api.get("k").await;
    assert_eq!(
        header(got.headers(), "x-expires-at"),
        (T0 + 30 * SECOND).to_string()
    );
    // T0 is 2026-01-01T00:00:00Z.
    assert_eq!(
        header(got.headers(), "expires"),
        "Thu, 01 Jan 2026 00:00:30 GMT"
    );

    api.server.clock.advance(30 * SECOND - 1);
    expect_value(api.get("k").await, "v", T0).await;
    api.server.clock.advance(1);
    problem_of_kind(api.get("k").await, 404, "not-found").await;
    assert_eq!(api.head("k").await.status(), 404);
    api.stop().await;
}

// ---------------------------------------------------------------- DELETE

#[tokio::test]
async fn delete_is_204_and_the_key_then_reads_as_404() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v").await.status(), 201);
    let response = api.delete("k", T0 + 1).await;
    assert_eq!(response.status(), 204);
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        (T0 + 1).to_string()
    );
    problem_of_kind(api.get("k").await, 404, "not-found").await;
    // The same delete again is an idempotent success.
    assert_eq!(api.delete("k", T0 + 1).await.status(), 204);
    api.stop().await;
}

#[tokio::test]
async fn delete_of_never_written_key_is_204_and_its_tombstone_blocks_an_older_put() {
    let api = Api::start().await;
    assert_eq!(api.delete("ghost", T0).await.status(), 204);
    let response = api.put("ghost", T0 - 1, "late").await;
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        T0.to_string()
    );
    let body = problem_of_kind(response, 409, "stale-write").await;
    assert_eq!(body["current_timestamp"].as_u64(), Some(T0));
    problem(api.get("ghost").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn delete_tombstone_blocks_an_older_put_but_not_a_newer_one() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v1").await.status(), 201);
    assert_eq!(api.delete("k", T0 + 10).await.status(), 204);
    let body = problem_of_kind(api.put("k", T0 + 5, "reordered").await, 409, "stale-write").await;
    assert_eq!(body["current_timestamp"].as_u64(), Some(T0 + 10));
    // A put at the delete's own timestamp collides with it.
    problem_of_kind(api.put("k", T0 + 10, "tie").await, 409, "timestamp-tie").await;
    problem(api.get("k").await, 404).await;
    assert_eq!(api.put("k", T0 + 11, "v2").await.status(), 201);
    expect_value(api.get("k").await, "v2", T0 + 11).await;
    api.stop().await;
}

#[tokio::test]
async fn stale_delete_is_409_and_the_value_survives() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v").await.status(), 201);
    let response = api.delete("k", T0 - 1).await;
    assert_eq!(
        header(response.headers(), "x-write-timestamp"),
        T0.to_string()
    );
    let body = problem_of_kind(response, 409, "stale-write").await;
    assert_eq!(body["current_timestamp"].as_u64(), Some(T0));
    // Deleting at the value's own timestamp is a tie, not a delete.
    problem_of_kind(api.delete("k", T0).await, 409, "timestamp-tie").await;
    expect_value(api.get("k").await, "v", T0).await;
    api.stop().await;
}

#[tokio::test]
async fn delete_without_timestamp_is_428_and_deletes_nothing() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v").await.status(), 201);
    let response = send(api.request(Method::DELETE, "/keys/k")).await;
    problem_of_kind(response, 428, "missing-timestamp").await;
    expect_value(api.get("k").await, "v", T0).await;
    api.stop().await;
}

// ---------------------------------------------------------------- touch

#[tokio::test]
async fn touch_extends_expiry_to_now_plus_ttl() {
    let api = Api::start().await;
    let response = api
        .put_with("k", T0, "v", |r| r.header("X-TTL", "10"))
        .await;
    assert_eq!(response.status(), 201);
    api.server.clock.advance(5 * SECOND);
    let touched = json(api.touch("k", "60").await, 200).await;
    let expected = T0 + 5 * SECOND + 60 * SECOND;
    assert_eq!(touched["expires_at"].as_u64(), Some(expected));
    assert_eq!(
        header(api.get("k").await.headers(), "x-expires-at"),
        expected.to_string()
    );
    // Past the original deadline, the value is still there; past the new one it is gone.
    api.server.clock.advance(50 * SECOND);
    expect_value(api.get("k").await, "v", T0).await;
    api.server.clock.advance(10 * SECOND);
    problem(api.get("k").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn touch_and_list_answers_are_not_cacheable() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v").await.status(), 201);
    let touched = api.touch("k", "60").await;
    assert_eq!(touched.status(), 200);
    assert_eq!(header(touched.headers(), "cache-control"), "no-store");
    let listed = api.list(&[]).await;
    assert_eq!(listed.status(), 200);
    assert_eq!(header(listed.headers(), "cache-control"), "no-store");
    api.stop().await;
}

#[tokio::test]
async fn touch_never_shortens_expiry() {
    let api = Api::start().await;
    let response = api
        .put_with("k", T0, "v", |r| r.header("X-TTL", "100"))
        .await;
    assert_eq!(response.status(), 201);
    let touched = json(api.touch("k", "10").await, 200).await;
    assert_eq!(touched["expires_at"].as_u64(), Some(T0 + 100 * SECOND));
    api.server.clock.advance(11 * SECOND);
    expect_value(api.get("k").await, "v", T0).await;
    assert_eq!(
        header(api.get("k").await.headers(), "x-expires-at"),
        (T0 + 100 * SECOND).to_string()
    );
    api.stop().await;
}

#[tokio::test]
async fn touch_of_value_without_expiry_leaves_it_without_expiry() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v").await.status(), 201);
    let touched = json(api.touch("k", "10").await, 200).await;
    assert_eq!(touched["expires_at"], Value::Null, "{touched}");
    api.server.clock.advance(11 * SECOND);
    let got = api.get("k").await;
    assert!(got.headers().get("x-expires-at").is_none());
    expect_value(got, "v", T0).await;
    api.stop().await;
}

#[tokio::test]
async fn touch_never_changes_value_content_type_or_timestamp() {
    let api = Api::start().await;
    let response = api
        .put_with("k", T0, "v", |r| r.header("X-TTL", "10"))
        .await;
    assert_eq!(response.status(), 201);
    assert_eq!(api.touch("k", "600").await.status(), 200);
    let got = api.get("k").await;
    assert_eq!(header(got.headers(), "etag"), etag(T0));
    assert_eq!(header(got.headers(), "content-type"), "text/plain");
    expect_value(got, "v", T0).await;
    // The guard still compares against the original write.
    problem_of_kind(api.put("k", T0 - 1, "older").await, 409, "stale-write").await;
    api.stop().await;
}

#[tokio::test]
async fn touch_never_revives_deleted_expired_or_absent_keys() {
    let api = Api::start().await;
    problem_of_kind(api.touch("absent", "60").await, 404, "not-found").await;

    assert_eq!(api.put("deleted", T0, "v").await.status(), 201);
    assert_eq!(api.delete("deleted", T0 + 1).await.status(), 204);
    problem_of_kind(api.touch("deleted", "60").await, 404, "not-found").await;
    problem(api.get("deleted").await, 404).await;

    let response = api
        .put_with("expired", T0, "v", |r| r.header("X-TTL", "1"))
        .await;
    assert_eq!(response.status(), 201);
    api.server.clock.advance(SECOND);
    problem_of_kind(api.touch("expired", "60").await, 404, "not-found").await;
    problem(api.get("expired").await, 404).await;
    api.stop().await;
}

#[tokio::test]
async fn touch_without_or_with_malformed_ttl_is_400() {
    let api = Api::start().await;
    assert_eq!(api.put("k", T0, "v").await.status(), 201);
    let missing = send(api.request(Method::POST, "/keys/k/touch")).await;
    problem_of_kind(missing, 400, "invalid-ttl").await;
    for bad in ["abc", "0", "-1", "2.5", "", "315360001"] {
        problem_of_kind(api.touch("k", bad).await, 400, "invalid-ttl").await;
    }
    api.stop().await;
}

// ---------------------------------------------------------------- list

#[tokio::test]
async fn list_paginates_with_cursor_across_several_pages_in_key_order() {
    let api = Api::start().await;
    let mut expected: Vec<String> = (0..7).map(|i| format!("key-{i}")).collect();
    // Keys that need escaping must survive being used as cursors too.
    expected.extend(["a%20b", "a+b", "a%2Fb", "%FF"].map(String::from));
    for key in &expected {
        assert_eq!(api.put(key, T0, "v").await.status(), 201, "{key}");
    }
    expected
        .sort_by_key(|segment| percent_encoding::percent_decode_str(segment).collect::<Vec<u8>>());

    let (keys, pages) = api.list_all(None, 3).await;
    assert_eq!(keys, expected);
    assert!(pages >= 4, "11 keys in pages of 3 took {pages} pages");

    let (one_by_one, pages) = api.list_all(None, 1).await;
    assert_eq!(one_by_one, expected);
    assert!(pages >= 11);

    // The default page holds them all, with no cursor.
    let page = json(api.list(&[]).await, 200).await;
    assert_eq!(page["keys"].as_array().map(Vec::len), Some(11));
    assert_eq!(page["next_cursor"], Value::Null);
    api.stop().await;
}

#[tokio::test]
async fn list_filters_by_prefix() {
    let api = Api::start().await;
    for key in [
        "user:1", "user:2", "user:30", "users", "admin:1", "a%2Fb", "a%2Fc",
    ] {
        assert_eq!(api.put(key, T0, "v").await.status(), 201);
    }
    let (keys, _) = api.list_all(Some("user:"), 2).await;
    assert_eq!(keys, ["user:1", "user:2", "user:30"]);
    let (keys, _) = api.list_all(Some("a/"), 10).await;
    assert_eq!(keys, ["a%2Fb", "a%2Fc"]);
    let (keys, _) = api.list_all(Some("nobody"), 10).await;
    assert!(keys.is_empty());
    api.stop().await;
}

#[tokio::test]
async fn list_leaves_out_deleted_and_expired_keys() {
    let api = Api::start().await;
    for key in ["a", "b", "c", "d", "e"] {
        assert_eq!(api.put(key, T0, "v").await.status(), 201);
    }
    assert_eq!(api.delete("b", T0 + 1).await.status(), 204);
    assert_eq!(api.delete("never-existed", T0).await.status(), 204);
    let response = api
        .put_with("d", T0 + 1, "v", |r| r.header("X-TTL", "5"))
        .await;
    assert_eq!(response.status(), 204);
    let (keys, _) = api.list_all(None, 2).await;
    assert_eq!(keys, ["a", "c", "d", "e"]);
    api.server.clock.advance(5 * SECOND);
    let (keys, _) = api.list_all(None, 2).await;
    assert_eq!(keys, ["a", "c", "e"]);
    api.stop().await;
}

#[tokio::test]
async fn list_prefix_selects_raw_bytes_written_like_listed_keys() {
    let api = Api::start().await;
    for key in ["%FF", "%FFa", "%FE", "a%00", "a%00b", "a"] {
        assert_eq!(api.put(key, T0, "v").await.status(), 201);
    }
    let (keys, _) = api.list_all(Some("%FF"), 1).await;
    assert_eq!(keys, ["%FF", "%FFa"]);
    let (keys, _) = api.list_all(Some("a%00"), 1).await;
    assert_eq!(keys, ["a%00", "a%00b"]);
    api.stop().await;
}

#[tokio::test]
async fn list_prefix_or_cursor_with_malformed_escape_is_400_problem() {
    let api = Api::start().await;
    for (name, bad) in [("prefix", "%zz"), ("prefix", "100%"), ("cursor", "a%4")] {
        let body = problem_of_kind(api.list(&[(name, bad)]).await, 400, "invalid-query").await;
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(name)),
            "{body}"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn list_with_invalid_limit_is_400_problem() {
    let api = Api::start().await;
    for bad in ["abc", "0", "1001", "-1", "2.5", ""] {
        problem_of_kind(api.list(&[("limit", bad)]).await, 400, "invalid-query").await;
    }
    // The bounds themselves are fine.
    json(api.list(&[("limit", "1")]).await, 200).await;
    json(api.list(&[("limit", "1000")]).await, 200).await;
    api.stop().await;
}

// ---------------------------------------------------------------- clock-skew guard

#[tokio::test]
async fn timestamp_beyond_max_future_skew_is_422_and_counted() {
    let api = Api::start().await;
    let limit = T0 + 60 * SECOND;
    assert_eq!(api.put("edge", limit, "v").await.status(), 201);
    problem_of_kind(api.put("k", limit + 1, "v").await, 422, "future-timestamp").await;
    problem_of_kind(api.delete("k", limit + 1).await, 422, "future-timestamp").await;
    problem(api.get("k").await, 404).await;
    let metrics = api.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "tidemark_guard_refusals_total",
            &[("reason", "future_timestamp")]
        ),
        Some(2.0),
        "{metrics}"
    );
    // Once the server clock catches up, the same timestamp is accepted.
    api.server.clock.advance(1);
    assert_eq!(api.put("k", limit + 1, "v").await.status(), 201);
    api.stop().await;
}

#[tokio::test]
async fn zero_max_future_skew_disables_the_guard() {
    let api = Api::start_with(|c| c.limits.max_future_skew = Duration::ZERO).await;
    let far_future = T0 + 10 * 365 * 24 * 3600 * SECOND;
    assert_eq!(api.put("k", far_future, "v").await.status(), 201);
    expect_value(api.get("k").await, "v", far_future).await;
    assert_eq!(api.put("max", u64::MAX, "v").await.status(), 201);
    expect_value(api.get("max").await, "v", u64::MAX).await;
    assert_eq!(api.delete("k", far_future + 1).await.status(), 204);
    api.stop().await;
}

// ---------------------------------------------------------------- errors outside handlers

#[tokio::test]
async fn unknown_route_is_404_problem() {
    let api = Api::start().await;
    for path in ["/nope", "/keys/a/b", "/keys/a/touch/more", "/healthz/extra"] {
        let response = send(api.request(Method::GET, path)).await;
        let body = problem_of_kind(response, 404, "not-found").await;
        assert!(
            body["detail"].as_str().is_some_and(|d| d.contains(path)),
            "{body}"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn wrong_method_is_405_problem_with_allow() {
    let api = Api::start().await;
    for (method, path) in [
        (Method::POST, "/keys/k"),
        (Method::PATCH, "/keys"),
        (Method::GET, "/keys/k/touch"),
        (Method::DELETE, "/keys"),
        (Method::POST, "/healthz"),
        (Method::PUT, "/metrics"),
    ] {
        let response = send(api.request(method.clone(), path)).await;
        let allow = header(response.headers(), "allow");
        assert!(!allow.is_empty(), "{method} {path}");
        assert!(!allow.contains(method.as_str()), "{method} {path}: {allow}");
        problem_of_kind(response, 405, "method-not-allowed").await;
    }
    api.stop().await;
}

/// The key route's `Allow` list is written out by hand: every method it names must be
/// served, and every method it leaves out must be refused.
#[tokio::test]
async fn the_key_routes_allow_list_names_exactly_the_methods_it_serves() {
    let api = Api::start().await;
    let response = send(api.request(Method::POST, "/keys/k")).await;
    let allow = header(response.headers(), "allow");
    problem_of_kind(response, 405, "method-not-allowed").await;
    let named: Vec<&str> = allow.split(',').collect();
    for method in [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::POST,
        Method::OPTIONS,
        Method::TRACE,
    ] {
        let status = send(api.request(method.clone(), "/keys/k")).await.status();
        assert_eq!(
            status != 405,
            named.contains(&method.as_str()),
            "{method}: {status}, Allow: {allow}"
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn unknown_docs_asset_is_404_problem() {
    let api = Api::start().await;
    let response = send(api.request(Method::GET, "/docs/no-such-asset.js")).await;
    problem(response, 404).await;
    api.stop().await;
}

// ---------------------------------------------------------------- operations

#[tokio::test]
async fn healthz_is_200() {
    let api = Api::start().await;
    let body = json(send(api.request(Method::GET, "/healthz")).await, 200).await;
    assert_eq!(body["status"], "ok");
    api.stop().await;
}

#[tokio::test]
async fn readyz_is_200_then_503_once_not_ready() {
    let api = Api::start().await;
    let body = json(send(api.request(Method::GET, "/readyz")).await, 200).await;
    assert_eq!(body["status"], "ready");
    api.server
        .running
        .as_ref()
        .expect("server is running")
        .readiness
        .set_ready(false);
    let response = send(api.request(Method::GET, "/readyz")).await;
    problem_of_kind(response, 503, "not-ready").await;
    // Liveness is unaffected by readiness.
    assert_eq!(
        send(api.request(Method::GET, "/healthz")).await.status(),
        200
    );
    api.stop().await;
}

#[tokio::test]
async fn metrics_expose_tidemark_series_after_traffic() {
    let api = Api::start().await;
    assert_eq!(api.put("a", T0, "v").await.status(), 201);
    assert_eq!(api.put("b", T0, "v").await.status(), 201);
    assert_eq!(api.put("gone", T0, "v").await.status(), 201);
    assert_eq!(api.delete("gone", T0 + 1).await.status(), 204);
    assert_eq!(api.put("a", T0 - 1, "stale").await.status(), 409);
    assert_eq!(api.put("a", T0, "tie").await.status(), 409);
    assert_eq!(api.put("a", T0 + 61 * SECOND, "future").await.status(), 422);
    assert_eq!(api.get("a").await.status(), 200);
    assert_eq!(api.get("gone").await.status(), 404);

    let text = api.metrics().await;
    let put = "PUT /keys/{key}";
    for (route, outcome, count) in [
        (put, "201", 3.0),
        (put, "409", 2.0),
        (put, "422", 1.0),
        ("DELETE /keys/{key}", "204", 1.0),
        ("GET /keys/{key}", "200", 1.0),
        ("GET /keys/{key}", "404", 1.0),
    ] {
        assert_eq!(
            sample(
                &text,
                "tidemark_requests_total",
                &[("door", "http"), ("route", route), ("outcome", outcome)]
            ),
            Some(count),
            "{route} {outcome}\n{text}"
        );
    }
    for (reason, count) in [("stale", 1.0), ("tie", 1.0), ("future_timestamp", 1.0)] {
        assert_eq!(
            sample(
                &text,
                "tidemark_guard_refusals_total",
                &[("reason", reason)]
            ),
            Some(count),
            "{reason}\n{text}"
        );
    }
    let batches = sample(&text, "tidemark_commit_batch_size_count", &[]).expect("batch count");
    let writes = sample(&text, "tidemark_commit_batch_size_sum", &[]).expect("batch sum");
    assert!(batches >= 1.0, "{text}");
    assert!(writes >= 4.0, "4 writes were applied\n{text}");
    assert!(sample(&text, "tidemark_commit_duration_seconds_count", &[]) >= Some(1.0));
    assert_eq!(sample(&text, "tidemark_keys", &[]), Some(2.0), "{text}");
    if common::engine() == common::Engine::Postgres {
        // Statement latency and the pool, per replica.
        let timed = |op: &str| {
            sample(
                &text,
                "tidemark_database_operation_duration_seconds_count",
                &[("op", op)],
            )
        };
        assert!(timed("guarded_write") >= Some(6.0), "{text}");
        assert!(timed("get") >= Some(2.0), "{text}");
        assert!(
            text.contains("tidemark_database_connections{state=\"in_use\"}"),
            "{text}"
        );
        assert!(text.contains("tidemark_database_waiting"), "{text}");
    }
    assert!(
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .all(|l| l.starts_with("tidemark_")),
        "every series is prefixed tidemark_\n{text}"
    );
    api.stop().await;
}

#[tokio::test]
async fn docs_serve_the_swagger_ui_html() {
    let api = Api::start().await;
    let response = send(api.request(Method::GET, "/docs/")).await;
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").starts_with("text/html"));
    let html = response.text().await.expect("html");
    assert!(html.to_lowercase().contains("swagger"), "{html}");
    // The UI is pointed at the document this server serves.
    let initializer = send(api.request(Method::GET, "/docs/swagger-initializer.js")).await;
    assert_eq!(initializer.status(), 200);
    let script = initializer.text().await.expect("script");
    assert!(script.contains("\"/openapi.json\""), "{script}");
    // /docs redirects to /docs/ (followed by the client).
    let response = send(api.request(Method::GET, "/docs")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.url().path(), "/docs/");
    api.stop().await;
}

#[tokio::test]
async fn openapi_json_is_an_openapi_3_1_document_describing_every_endpoint() {
    let api = Api::start().await;
    let response = send(api.request(Method::GET, "/openapi.json")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), "content-type"),
        "application/json"
    );
    let text = response.text().await.expect("body");
    // This server has no token: the document without security (tests/operations.rs
    // checks the one a server with a token serves).
    assert_eq!(text, tidemark::http::openapi::document_for(false));
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    for (path, method) in [
        ("/keys/{key}", "put"),
        ("/keys/{key}", "get"),
        ("/keys/{key}", "head"),
        ("/keys/{key}", "delete"),
        ("/keys/{key}/touch", "post"),
        ("/keys", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    api.stop().await;
}

// ---------------------------------------------------------------- in-process (oneshot)

/// The router over a fresh store, without a socket; the temp dir lives as long as it.
async fn in_process_router(
    clock: tidemark::clock::ManualClock,
) -> (
    tidemark::http::HttpApp,
    tidemark::service::Service,
    tempfile::TempDir,
) {
    in_process_app(clock, &tidemark::http::HttpOptions::default()).await
}

async fn in_process_app(
    clock: tidemark::clock::ManualClock,
    options: &tidemark::http::HttpOptions,
) -> (
    tidemark::http::HttpApp,
    tidemark::service::Service,
    tempfile::TempDir,
) {
    use tidemark::metrics::Metrics;
    use tidemark::service::{Policy, Service};
    use tidemark::store::Durability;

    let dir = tempfile::tempdir().expect("temp dir");
    let metrics = Arc::new(Metrics::new());
    let store = common::open_store(dir.path(), Durability::Relaxed, metrics.clone()).await;
    let service = Service::new(
        store,
        Arc::new(clock),
        Policy {
            max_key_bytes: 64,
            max_value_bytes: 1024,
            grace_micros: 3600 * SECOND,
            max_future_skew_micros: 60 * SECOND,
            max_lifetime_micros: None,
        },
        metrics,
    );
    let readiness = tidemark::http::Readiness::default();
    readiness.set_ready(true);
    let router = tidemark::http::router_with(
        tidemark::http::AppState {
            service: service.clone(),
            readiness,
        },
        options,
    );
    (router, service, dir)
}

async fn oneshot(
    router: &tidemark::http::HttpApp,
    request: Request<Body>,
) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    (status, headers, body.to_vec())
}

fn put_request(uri: &str, timestamp: u64, value: &'static str) -> Request<Body> {
    Request::put(uri)
        .header("X-Write-Timestamp", timestamp.to_string())
        .header("Content-Type", "text/plain")
        .body(Body::from(value))
        .expect("request builds")
}

#[tokio::test]
async fn in_process_put_then_get_round_trips_and_stale_put_is_409() {
    let clock = tidemark::clock::ManualClock::new(T0);
    let (router, service, _dir) = in_process_router(clock).await;

    let (status, headers, _) = oneshot(&router, put_request("/keys/a%2Fb", T0, "v1")).await;
    assert_eq!(status, 201);
    assert_eq!(headers["etag"], etag(T0).as_str());

    let (status, headers, body) = oneshot(&router, put_request("/keys/a%2Fb", T0 - 1, "old")).await;
    assert_eq!(status, 409);
    assert_eq!(headers["content-type"], PROBLEM_JSON);
    assert_eq!(headers["x-write-timestamp"], T0.to_string().as_str());
    let problem: Value = serde_json::from_slice(&body).expect("problem JSON");
    assert_eq!(problem["type"], "urn:tidemark:problem:stale-write");
    assert_eq!(problem["current_timestamp"].as_u64(), Some(T0));

    let get = Request::get("/keys/a%2Fb")
        .body(Body::empty())
        .expect("request builds");
    let (status, headers, body) = oneshot(&router, get).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/plain");
    assert_eq!(body, b"v1");
    // The service saw the decoded key.
    let entry = service.get(b"a/b".to_vec()).await.expect("read");
    assert_eq!(entry.map(|e| e.value.to_vec()), Some(b"v1".to_vec()));
    service.close().await.expect("store closes");
}

#[tokio::test]
async fn in_process_expiry_follows_the_manual_clock() {
    let clock = tidemark::clock::ManualClock::new(T0);
    let (router, service, _dir) = in_process_router(clock.clone()).await;
    let put = Request::put("/keys/session")
        .header("X-Write-Timestamp", T0.to_string())
        .header("X-TTL", "2")
        .body(Body::from("v"))
        .expect("request builds");
    assert_eq!(oneshot(&router, put).await.0, 201);
    let get = || {
        Request::get("/keys/session")
            .body(Body::empty())
            .expect("builds")
    };
    clock.advance(2 * SECOND - 1);
    assert_eq!(oneshot(&router, get()).await.0, 200);
    clock.advance(1);
    let (status, headers, _) = oneshot(&router, get()).await;
    assert_eq!(status, 404);
    assert_eq!(headers["content-type"], PROBLEM_JSON);
    service.close().await.expect("store closes");
}

#[tokio::test]
async fn in_process_unknown_route_and_bad_query_are_problems() {
    let clock = tidemark::clock::ManualClock::new(T0);
    let (router, service, _dir) = in_process_router(clock).await;
    for (uri, status) in [("/no/such/route", 404), ("/keys?limit=abc", 400)] {
        let request = Request::get(uri).body(Body::empty()).expect("builds");
        let (got, headers, body) = oneshot(&router, request).await;
        assert_eq!(got, status, "{uri}");
        assert_eq!(headers["content-type"], PROBLEM_JSON, "{uri}");
        let problem: Value = serde_json::from_slice(&body).expect("problem JSON");
        assert_eq!(problem["status"], status, "{uri}");
    }
    service.close().await.expect("store closes");
}

#[tokio::test]
async fn docs_ui_sends_the_document_to_no_outside_validator() {
    let (router, _service, _dir) = in_process_router(tidemark::clock::ManualClock::new(T0)).await;
    let request = Request::get("/docs/swagger-initializer.js")
        .body(Body::empty())
        .expect("request builds");
    let (status, _, body) = oneshot(&router, request).await;
    assert_eq!(status, 200);
    let script = String::from_utf8(body).expect("the initializer is text");
    assert!(
        script.contains("\"validatorUrl\": \"none\""),
        "the Swagger UI config must turn the validator badge off:\n{script}"
    );
}

/// Requests for one key skip axum's router; every answer, and every count in the
/// metrics, must be what the router gives.
#[tokio::test]
async fn requests_for_one_key_are_answered_alike_with_and_without_the_router() {
    let options = tidemark::http::HttpOptions {
        auth_token: Some(tidemark::config::Secret("t0ken".into())),
        ..Default::default()
    };
    let clock = || tidemark::clock::ManualClock::new(T0);
    let (direct, direct_service, _dir1) = in_process_app(clock(), &options).await;
    let (routed, routed_service, _dir2) = in_process_app(clock(), &options).await;
    let routed = routed.without_direct_routes();
    let ts = |n: u64| (T0 + n).to_string();
    /// Method, URI, headers, body.
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, String)>,
        Vec<u8>,
    );
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/keys/a",
            vec![("x-write-timestamp", ts(1))],
            b"one".to_vec(),
        ),
        (
            "PUT",
            "/keys/a",
            vec![("x-write-timestamp", ts(1))],
            b"one".to_vec(),
        ),
        (
            "PUT",
            "/keys/a",
            vec![("x-write-timestamp", ts(0))],
            b"old".to_vec(),
        ),
        ("PUT", "/keys/a", vec![], b"no timestamp".to_vec()),
        (
            "PUT",
            "/keys/b",
            vec![("x-write-timestamp", ts(1))],
            vec![b'x'; 1025],
        ),
        (
            "PUT",
            "/keys/a%2Fb",
            vec![("x-write-timestamp", ts(1))],
            b"slash".to_vec(),
        ),
        ("GET", "/keys/a", vec![], vec![]),
        ("HEAD", "/keys/a", vec![], vec![]),
        (
            "GET",
            "/keys/a",
            vec![("if-none-match", format!("\"{}\"", ts(1)))],
            vec![],
        ),
        ("GET", "/keys/a%2Fb", vec![], vec![]),
        ("GET", "/keys/missing", vec![], vec![]),
        ("HEAD", "/keys/missing", vec![], vec![]),
        ("GET", "/keys/%zz", vec![], vec![]),
        ("POST", "/keys/a", vec![], vec![]),
        ("OPTIONS", "/keys/a", vec![], vec![]),
        (
            "PATCH",
            "/keys/a",
            vec![
                ("x-write-timestamp", ts(2)),
                ("content-type", "application/merge-patch+json".into()),
            ],
            br#"{"f":1}"#.to_vec(),
        ),
        (
            "DELETE",
            "/keys/a",
            vec![("x-write-timestamp", ts(3))],
            vec![],
        ),
        (
            "DELETE",
            "/keys/a",
            vec![("x-write-timestamp", ts(2))],
            vec![],
        ),
        ("GET", "/keys/a", vec![], vec![]),
        ("GET", "/keys/", vec![], vec![]),
        ("GET", "/keys/a/", vec![], vec![]),
        (
            "POST",
            "/keys/a/touch",
            vec![("x-ttl", "60".into())],
            vec![],
        ),
        ("GET", "/keys", vec![], vec![]),
    ];
    for with_token in [true, false] {
        for (method, uri, headers, body) in &cases {
            let request = || {
                let mut request = Request::builder().method(*method).uri(*uri);
                if with_token {
                    request = request.header("authorization", "Bearer t0ken");
                }
                for (name, value) in headers {
                    request = request.header(*name, value);
                }
                request.body(Body::from(body.clone())).expect("builds")
            };
            let want = oneshot(&routed, request()).await;
            let got = oneshot(&direct, request()).await;
            assert_eq!(got, want, "{method} {uri} (token: {with_token})");
        }
    }
    let http_counts = |service: &tidemark::service::Service| {
        let mut counts: Vec<_> = prometheus::core::Collector::collect(&service.metrics().requests)
            .into_iter()
            .flat_map(|mut family| family.take_metric())
            .map(|m| {
                let labels: Vec<_> = m.get_label().iter().map(|l| l.value().to_owned()).collect();
                (labels, m.get_counter().get_value() as u64)
            })
            .filter(|(labels, _)| labels.first().is_some_and(|door| door == "http"))
            .collect();
        counts.sort();
        counts
    };
    let counted = http_counts(&routed_service);
    assert!(
        counted
            .iter()
            .any(|(labels, _)| labels.iter().any(|l| l == "GET /keys/{key}"))
    );
    assert_eq!(http_counts(&direct_service), counted);
    direct_service.close().await.expect("store closes");
    routed_service.close().await.expect("store closes");
}
