//! Session documents over HTTP, proven black-box over real loopback sockets: field-level
//! PATCH (`application/merge-patch+json`) and how it meets PUT and DELETE, ETags and
//! `If-Match` / `If-None-Match`, `X-Session-Owner` with `/owners/{owner}/sessions`,
//! absolute lifetimes (`X-Max-Lifetime`, `--max-session-lifetime`), `POST /batch/get`,
//! and a PATCH-built document read over the Tokyo Tyrant port.
//!
//! Runs on the engine `TIDEMARK_TEST_ENGINE` names, like the other behaviour suites.
//! Time only moves through the server's `ManualClock` (it starts at `T0`, and the
//! default 60 s future-skew limit is never approached); nothing here sleeps.

mod common;

use std::time::Duration;

use common::T0;
use common::http::{Api, header, send};
use common::tyrant::Tyrant;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

const SECOND: u64 = 1_000_000;
const PROBLEM_JSON: &str = "application/problem+json";
const MERGE_PATCH: &str = "application/merge-patch+json";

/// A write timestamp `n` µs after `T0` (the server clock's start).
fn at(n: u64) -> u64 {
    T0 + n
}

impl Api {
    /// Move the server clock to `T0 + secs` seconds.
    fn clock_at_secs(&self, secs: u64) {
        self.server.clock.set(T0 + secs * SECOND);
    }

    /// PATCH `body` as a merge patch at `timestamp`.
    async fn patch(&self, key: &str, timestamp: u64, body: &Value) -> Response {
        self.patch_with(key, timestamp, body, |r| r).await
    }

    /// PATCH with extra headers.
    async fn patch_with(
        &self,
        key: &str,
        timestamp: u64,
        body: &Value,
        extra: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        self.patch_raw(key, timestamp, Some(MERGE_PATCH), &body.to_string(), extra)
            .await
    }

    /// PATCH `body` as given, with `content_type` (none when `None`).
    async fn patch_raw(
        &self,
        key: &str,
        timestamp: u64,
        content_type: Option<&str>,
        body: &str,
        extra: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        let mut request = self
            .request(Method::PATCH, &format!("/keys/{key}"))
            .header("X-Write-Timestamp", timestamp.to_string())
            .body(body.to_owned());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        send(extra(request)).await
    }

    /// PUT `body` as application/json at `timestamp`.
    async fn put_json(&self, key: &str, timestamp: u64, body: &Value) -> Response {
        self.put_json_with(key, timestamp, body, |r| r).await
    }

    async fn put_json_with(
        &self,
        key: &str,
        timestamp: u64,
        body: &Value,
        extra: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        self.put_with(key, timestamp, &body.to_string(), |r| {
            extra(r.header("content-type", "application/json"))
        })
        .await
    }

    async fn delete_with(
        &self,
        key: &str,
        timestamp: u64,
        extra: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> Response {
        send(extra(
            self.request(Method::DELETE, &format!("/keys/{key}"))
                .header("X-Write-Timestamp", timestamp.to_string()),
        ))
        .await
    }

    /// GET a JSON document: asserts 200 and `application/json`; the parsed body and
    /// the headers.
    async fn document(&self, key: &str) -> (Value, HeaderMap) {
        let (status, headers, body) = self.read(key).await;
        assert_eq!(status, 200, "GET {key}: {headers:?}");
        assert!(
            header(&headers, "content-type").starts_with("application/json"),
            "GET {key}: {headers:?}"
        );
        let value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "GET {key} is not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        });
        (value, headers)
    }

    /// The ETag GET answers for a live key.
    async fn etag_of(&self, key: &str) -> String {
        let response = self.get(key).await;
        assert_eq!(response.status(), 200, "{response:?}");
        header(response.headers(), "etag")
    }

    /// GET with `If-None-Match`.
    async fn get_if_none_match(&self, method: Method, key: &str, etag: &str) -> Response {
        send(
            self.request(method, &format!("/keys/{key}"))
                .header("If-None-Match", etag),
        )
        .await
    }

    /// `GET /owners/{owner}/sessions` with `query`.
    async fn owner_sessions(&self, owner: &str, query: &[(&str, &str)]) -> Response {
        send(
            self.request(Method::GET, &format!("/owners/{owner}/sessions"))
                .query(query),
        )
        .await
    }

    /// The keys of `owner`'s sessions, every page of `limit` followed; and the pages.
    async fn owner_keys(&self, owner: &str, limit: usize) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::new();
        let mut pages = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let limit = limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if let Some(cursor) = cursor.as_deref() {
                query.push(("cursor", cursor));
            }
            let page = json(self.owner_sessions(owner, &query).await, 200).await;
            assert!(pages.len() < 50, "owner pagination does not terminate");
            let sessions = page["sessions"].as_array().expect("sessions is an array");
            assert!(sessions.len() <= limit.parse().expect("number"), "{page}");
            keys.extend(
                sessions
                    .iter()
                    .map(|s| s["key"].as_str().expect("key is a string").to_owned()),
            );
            let next = page["next_cursor"].clone();
            pages.push(page);
            match next {
                Value::Null => return (keys, pages),
                Value::String(next) => cursor = Some(next),
                other => panic!("next_cursor must be a string or null, got {other}"),
            }
        }
    }

    /// `DELETE /owners/{owner}/sessions` at `timestamp`, with `?keep=`.
    async fn revoke(&self, owner: &str, timestamp: u64, keep: Option<&str>) -> Response {
        let mut request = self
            .request(Method::DELETE, &format!("/owners/{owner}/sessions"))
            .header("X-Write-Timestamp", timestamp.to_string());
        if let Some(keep) = keep {
            request = request.query(&[("keep", keep)]);
        }
        send(request).await
    }

    /// `POST /batch/get` of `keys`.
    async fn batch(&self, keys: &[String]) -> Response {
        send(
            self.request(Method::POST, "/batch/get")
                .header("content-type", "application/json")
                .body(json!({ "keys": keys }).to_string()),
        )
        .await
    }
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

/// Assert an RFC 9457 problem of `status` whose `type` ends in `kind`; return it.
async fn problem(response: Response, status: u16, kind: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "{response:?}");
    assert_eq!(header(response.headers(), "content-type"), PROBLEM_JSON);
    let text = response.text().await.expect("body");
    let body: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("problem is not JSON ({e}): {text}"));
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["type"],
        format!("urn:tidemark:problem:{kind}"),
        "{body}"
    );
    body
}

/// The names in a report's `applied` or `unchanged` array, sorted.
fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("expected an array of field names, got {list}"))
        .iter()
        .map(|n| n.as_str().expect("field names are strings").to_owned())
        .collect();
    names.sort();
    names
}

/// A `refused` array as sorted (field, current_timestamp) pairs.
fn refused(list: &Value) -> Vec<(String, u64)> {
    let mut refused: Vec<(String, u64)> = list
        .as_array()
        .unwrap_or_else(|| panic!("expected a refused array, got {list}"))
        .iter()
        .map(|r| {
            (
                r["field"].as_str().expect("field is a string").to_owned(),
                r["current_timestamp"]
                    .as_u64()
                    .expect("current_timestamp is a number"),
            )
        })
        .collect();
    refused.sort();
    refused
}

fn strings(list: &[&str]) -> Vec<String> {
    let mut list: Vec<String> = list.iter().map(|s| s.to_string()).collect();
    list.sort();
    list
}

/// Assert a PATCH answer body: which fields applied, were unchanged or refused (with
/// the timestamp that refused them), and the document's newest timestamp.
fn assert_report(
    body: &Value,
    applied: &[&str],
    unchanged: &[&str],
    refused_fields: &[(&str, u64)],
    timestamp: u64,
) {
    assert_eq!(names(&body["applied"]), strings(applied), "applied: {body}");
    assert_eq!(
        names(&body["unchanged"]),
        strings(unchanged),
        "unchanged: {body}"
    );
    let mut want: Vec<(String, u64)> = refused_fields
        .iter()
        .map(|(f, t)| (f.to_string(), *t))
        .collect();
    want.sort();
    assert_eq!(refused(&body["refused"]), want, "refused: {body}");
    assert_eq!(body["timestamp"], timestamp, "timestamp: {body}");
}

fn timestamp_header(headers: &HeaderMap) -> u64 {
    header(headers, "x-write-timestamp")
        .parse()
        .expect("X-Write-Timestamp is a number")
}

fn micros_header(headers: &HeaderMap, name: &str) -> u64 {
    header(headers, name)
        .parse()
        .unwrap_or_else(|_| panic!("{name} is a number: {headers:?}"))
}

// ---------------------------------------------------------------- PATCH

#[tokio::test]
async fn patch_of_an_absent_key_creates_the_document_with_201_location_and_report() {
    let api = Api::start().await;
    let response = api.patch("s1", at(10), &json!({"a": 1, "b": "x"})).await;
    assert_eq!(response.status(), 201, "{response:?}");
    let headers = response.headers().clone();
    assert_eq!(header(&headers, "location"), "/keys/s1");
    assert_eq!(timestamp_header(&headers), at(10));
    let patch_etag = header(&headers, "etag");
    let body = json(response, 201).await;
    assert_report(&body, &["a", "b"], &[], &[], at(10));

    let (doc, headers) = api.document("s1").await;
    assert_eq!(doc, json!({"a": 1, "b": "x"}));
    assert_eq!(timestamp_header(&headers), at(10));
    assert_eq!(header(&headers, "etag"), patch_etag);
    api.stop().await;
}

#[tokio::test]
async fn patch_of_different_fields_at_overlapping_times_keeps_both() {
    let api = Api::start().await;
    assert_eq!(
        api.put_json("s", at(10), &json!({"a": 0, "b": 0}))
            .await
            .status(),
        201
    );
    // The newer patch arrives first; the older one names another field and still lands.
    let newer = api.patch("s", at(30), &json!({"a": 1})).await;
    assert_report(&json(newer, 200).await, &["a"], &[], &[], at(30));
    let older = api.patch("s", at(20), &json!({"b": 2})).await;
    assert_report(&json(older, 200).await, &["b"], &[], &[], at(30));

    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1, "b": 2}));
    assert_eq!(timestamp_header(&headers), at(30));
    api.stop().await;
}

#[tokio::test]
async fn patch_field_older_than_its_stored_timestamp_is_refused_while_others_apply() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 0, "b": 0})).await;
    api.patch("s", at(30), &json!({"a": 1})).await;
    let response = api.patch("s", at(20), &json!({"a": 2, "b": 2})).await;
    let body = json(response, 200).await;
    assert_report(&body, &["b"], &[], &[("a", at(30))], at(30));

    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1, "b": 2}));
    api.stop().await;
}

#[tokio::test]
async fn patch_whose_every_field_is_refused_is_409_stale_write_listing_them() {
    let api = Api::start().await;
    api.patch("s", at(30), &json!({"a": 1, "b": 1})).await;
    let before = api.etag_of("s").await;
    let response = api.patch("s", at(20), &json!({"a": 2, "b": 2})).await;
    let body = problem(response, 409, "stale-write").await;
    assert_eq!(
        refused(&body["refused"]),
        vec![("a".to_string(), at(30)), ("b".to_string(), at(30))],
        "{body}"
    );

    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1, "b": 1}));
    assert_eq!(header(&headers, "etag"), before);
    api.stop().await;
}

#[tokio::test]
async fn patch_of_a_field_the_document_never_had_is_refused_when_older_than_the_base() {
    let api = Api::start().await;
    api.put_json("s", at(50), &json!({"a": 1})).await;
    api.patch("s", at(60), &json!({"b": 1})).await;
    // `c` has never been written: its timestamp is the base's (the PUT at 50).
    let response = api.patch("s", at(40), &json!({"c": 1})).await;
    let body = problem(response, 409, "stale-write").await;
    assert_eq!(
        refused(&body["refused"]),
        vec![("c".to_string(), at(50))],
        "{body}"
    );
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1, "b": 1}));
    api.stop().await;
}

#[tokio::test]
async fn repeated_identical_patch_is_200_unchanged_and_changes_nothing() {
    let api = Api::start().await;
    assert_eq!(api.patch("s", at(20), &json!({"a": 1})).await.status(), 201);
    let before = api.etag_of("s").await;
    let response = api.patch("s", at(20), &json!({"a": 1})).await;
    assert_eq!(header(response.headers(), "etag"), before);
    assert_report(&json(response, 200).await, &[], &["a"], &[], at(20));
    assert_eq!(api.etag_of("s").await, before);
    api.stop().await;
}

#[tokio::test]
async fn patch_repeating_one_field_and_adding_another_reports_unchanged_and_applied() {
    let api = Api::start().await;
    api.patch("s", at(20), &json!({"a": 1})).await;
    let response = api.patch("s", at(20), &json!({"a": 1, "b": 2})).await;
    assert_report(&json(response, 200).await, &["b"], &["a"], &[], at(20));
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1, "b": 2}));
    api.stop().await;
}

#[tokio::test]
async fn patch_at_the_same_timestamp_with_a_different_value_is_refused_as_a_tie() {
    let api = Api::start().await;
    api.patch("s", at(20), &json!({"a": 1})).await;
    let response = api.patch("s", at(20), &json!({"a": 2})).await;
    let body = problem(response, 409, "stale-write").await;
    assert_eq!(
        refused(&body["refused"]),
        vec![("a".to_string(), at(20))],
        "{body}"
    );
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1}));
    api.stop().await;
}

#[tokio::test]
async fn patch_member_null_removes_the_field() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1, "b": 2})).await;
    let response = api.patch("s", at(20), &json!({"b": null})).await;
    assert_report(&json(response, 200).await, &["b"], &[], &[], at(20));
    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1}));
    assert_eq!(timestamp_header(&headers), at(20));
    api.stop().await;
}

#[tokio::test]
async fn removed_field_keeps_its_timestamp_so_an_older_patch_cannot_bring_it_back() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1, "b": 2})).await;
    api.patch("s", at(30), &json!({"b": null})).await;
    let response = api.patch("s", at(20), &json!({"b": 5})).await;
    let body = problem(response, 409, "stale-write").await;
    assert_eq!(
        refused(&body["refused"]),
        vec![("b".to_string(), at(30))],
        "{body}"
    );
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1}));
    api.stop().await;
}

#[tokio::test]
async fn patch_replaces_a_nested_object_whole() {
    let api = Api::start().await;
    api.patch("s", at(10), &json!({"cart": {"x": 1, "y": 1}}))
        .await;
    api.patch("s", at(20), &json!({"cart": {"y": 2}})).await;
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"cart": {"y": 2}}));
    api.stop().await;
}

#[tokio::test]
async fn patch_after_a_delete_recreates_the_key_only_when_newer_than_the_delete() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1})).await;
    assert_eq!(api.delete("s", at(20)).await.status(), 204);
    let older = api.patch("s", at(15), &json!({"a": 2})).await;
    let body = problem(older, 409, "stale-write").await;
    assert_eq!(
        refused(&body["refused"]),
        vec![("a".to_string(), at(20))],
        "{body}"
    );
    assert_eq!(api.get("s").await.status(), 404);

    let newer = api.patch("s", at(30), &json!({"a": 3})).await;
    assert_eq!(newer.status(), 201, "{newer:?}");
    assert_eq!(header(newer.headers(), "location"), "/keys/s");
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 3}));
    api.stop().await;
}

#[tokio::test]
async fn patch_that_only_repeats_the_removal_a_delete_made_creates_nothing() {
    let api = Api::start().await;
    assert_eq!(api.delete("s", at(20)).await.status(), 204);
    // Field `a` is absent as of the delete at 20; removing it at 20 is a repeat.
    let response = api.patch("s", at(20), &json!({"a": null})).await;
    assert_eq!(response.status(), 200, "nothing was created: {response:?}");
    assert!(response.headers().get("location").is_none(), "{response:?}");
    let body = json(response, 200).await;
    assert_eq!(names(&body["unchanged"]), strings(&["a"]), "{body}");
    assert_eq!(names(&body["applied"]), Vec::<String>::new(), "{body}");
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

#[tokio::test]
async fn patch_onto_a_stored_value_that_is_not_a_json_object_is_422_not_an_object() {
    let api = Api::start().await;
    api.put("text", at(10), "hello").await;
    api.put_json("array", at(10), &json!([1, 2])).await;
    for key in ["text", "array"] {
        let response = api.patch(key, at(20), &json!({"a": 1})).await;
        problem(response, 422, "not-an-object").await;
        let (status, headers, body) = api.read(key).await;
        assert_eq!(status, 200);
        assert_eq!(timestamp_header(&headers), at(10), "{key}");
        assert_ne!(body, br#"{"a":1}"#, "{key}");
    }
    assert_eq!(api.read("text").await.2, b"hello");
    api.stop().await;
}

#[tokio::test]
async fn patch_body_that_is_not_an_object_or_names_no_field_is_422_not_an_object() {
    let api = Api::start().await;
    for body in ["[1,2]", "\"x\"", "3", "null", "{}"] {
        let response = api
            .patch_raw("s", at(10), Some(MERGE_PATCH), body, |r| r)
            .await;
        problem(response, 422, "not-an-object").await;
    }
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

#[tokio::test]
async fn patch_body_that_is_not_json_is_400_invalid_json() {
    let api = Api::start().await;
    for body in ["{\"a\":", "not json", ""] {
        let response = api
            .patch_raw("s", at(10), Some(MERGE_PATCH), body, |r| r)
            .await;
        problem(response, 400, "invalid-json").await;
    }
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

#[tokio::test]
async fn patch_with_another_content_type_is_415() {
    let api = Api::start().await;
    let body = r#"{"a":1}"#;
    for content_type in [Some("application/json"), Some("text/plain"), None] {
        let response = api.patch_raw("s", at(10), content_type, body, |r| r).await;
        assert_eq!(response.status(), 415, "{content_type:?}: {response:?}");
        assert_eq!(header(response.headers(), "content-type"), PROBLEM_JSON);
    }
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

#[tokio::test]
async fn patch_whose_merged_document_exceeds_max_value_bytes_is_413() {
    let api = Api::start_with(|c| c.limits.max_value_bytes = 64).await;
    let a = "x".repeat(30);
    let b = "y".repeat(30);
    assert_eq!(
        api.put_json("s", at(10), &json!({"a": a})).await.status(),
        201
    );
    // The patch alone fits; the document it would make (75 bytes) does not.
    let patch = json!({"b": b});
    assert!(patch.to_string().len() <= 64);
    let response = api.patch("s", at(20), &patch).await;
    problem(response, 413, "value-too-large").await;
    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": a}));
    assert_eq!(timestamp_header(&headers), at(10));
    api.stop().await;
}

#[tokio::test]
async fn patch_with_ttl_sets_the_expiry() {
    let api = Api::start().await;
    let response = api
        .patch_with("s", at(10), &json!({"a": 1}), |r| r.header("X-TTL", "10"))
        .await;
    assert_eq!(response.status(), 201);
    let (_, headers) = api.document("s").await;
    assert_eq!(micros_header(&headers, "x-expires-at"), T0 + 10 * SECOND);
    api.server.clock.set(T0 + 10 * SECOND - 1);
    assert_eq!(api.get("s").await.status(), 200);
    api.server.clock.set(T0 + 10 * SECOND);
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

// ---------------------------------------------------------------- PUT / DELETE meet PATCH

#[tokio::test]
async fn put_older_than_the_document_base_is_409_stale() {
    let api = Api::start().await;
    api.put_json("s", at(50), &json!({"a": 1})).await;
    api.patch("s", at(60), &json!({"b": 1})).await;
    let before = api.etag_of("s").await;
    let response = api.put_json("s", at(40), &json!({"c": 1})).await;
    problem(response, 409, "stale-write").await;
    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1, "b": 1}));
    assert_eq!(header(&headers, "etag"), before);
    api.stop().await;
}

#[tokio::test]
async fn put_between_the_base_and_a_newer_patch_keeps_the_patched_fields_and_answers_204_without_etag()
 {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1, "b": 1, "d": 1}))
        .await;
    api.patch("s", at(30), &json!({"b": 2})).await;
    let before = api.etag_of("s").await;

    let response = api
        .put_json("s", at(20), &json!({"a": 5, "b": 5, "c": 5}))
        .await;
    assert_eq!(response.status(), 204, "{response:?}");
    assert!(
        response.headers().get("etag").is_none(),
        "a merged PUT has no ETag of its own: {response:?}"
    );

    // `a` and `c` take the PUT's values, `d` (older than the PUT) goes, and `b` keeps
    // what the newer PATCH wrote.
    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 5, "b": 2, "c": 5}));
    assert_eq!(timestamp_header(&headers), at(30));
    assert_ne!(header(&headers, "etag"), before);
    api.stop().await;
}

#[tokio::test]
async fn put_between_the_base_and_a_newer_removal_keeps_the_field_removed() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1, "b": 1})).await;
    api.patch("s", at(30), &json!({"b": null})).await;
    let response = api.put_json("s", at(20), &json!({"a": 2, "b": 2})).await;
    assert_eq!(response.status(), 204, "{response:?}");
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 2}));
    api.stop().await;
}

#[tokio::test]
async fn put_newer_than_every_field_replaces_the_document_and_answers_its_etag() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1})).await;
    api.patch("s", at(30), &json!({"b": 2})).await;
    let response = api.put_json("s", at(40), &json!({"c": 3})).await;
    assert_eq!(response.status(), 204, "{response:?}");
    let put_etag = header(response.headers(), "etag");
    let (status, headers, body) = api.read("s").await;
    assert_eq!(status, 200);
    assert_eq!(body, br#"{"c":3}"#);
    assert_eq!(timestamp_header(&headers), at(40));
    assert_eq!(header(&headers, "etag"), put_etag);
    api.stop().await;
}

#[tokio::test]
async fn delete_that_leaves_newer_fields_alive_answers_204_and_the_key_keeps_only_them() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1, "b": 1})).await;
    api.patch("s", at(30), &json!({"b": 2})).await;
    let response = api.delete("s", at(20)).await;
    assert_eq!(response.status(), 204, "{response:?}");

    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"b": 2}));
    assert_eq!(timestamp_header(&headers), at(30));
    // The delete is the new base: a patch older than it is refused.
    let older = api.patch("s", at(15), &json!({"a": 9})).await;
    let body = problem(older, 409, "stale-write").await;
    assert_eq!(
        refused(&body["refused"]),
        vec![("a".to_string(), at(20))],
        "{body}"
    );
    api.stop().await;
}

#[tokio::test]
async fn delete_older_than_a_removal_leaves_an_empty_document_that_still_guards_it() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1, "b": 1})).await;
    // Only a removal is newer than the delete: no field outlives it, but the removal
    // does — so the same writes in any order end alike (a live empty document).
    api.patch("s", at(30), &json!({"b": null})).await;
    assert_eq!(api.delete("s", at(20)).await.status(), 204);
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({}));
    // The removal at 30 still guards `b` against older patches.
    let older = api.patch("s", at(25), &json!({"b": 2})).await;
    assert_eq!(older.status(), 409, "{older:?}");
    api.stop().await;
}

#[tokio::test]
async fn delete_older_than_the_document_base_is_409_stale() {
    let api = Api::start().await;
    api.put_json("s", at(50), &json!({"a": 1})).await;
    api.patch("s", at(60), &json!({"b": 1})).await;
    let response = api.delete("s", at(40)).await;
    problem(response, 409, "stale-write").await;
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1, "b": 1}));
    api.stop().await;
}

#[tokio::test]
async fn non_object_values_keep_the_whole_value_rule() {
    let api = Api::start().await;
    assert_eq!(api.put("s", at(20), "text").await.status(), 201);
    problem(api.put("s", at(10), "older").await, 409, "stale-write").await;
    problem(api.put("s", at(20), "other").await, 409, "timestamp-tie").await;
    assert_eq!(api.put("s", at(20), "text").await.status(), 204);
    let response = api.put_json("s", at(30), &json!([1, 2])).await;
    assert_eq!(response.status(), 204);
    let put_etag = header(response.headers(), "etag");
    let (status, headers, body) = api.read("s").await;
    assert_eq!(status, 200);
    assert_eq!(body, b"[1,2]");
    assert_eq!(header(&headers, "etag"), put_etag);
    problem(api.delete("s", at(25)).await, 409, "stale-write").await;
    assert_eq!(api.delete("s", at(40)).await.status(), 204);
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

// ---------------------------------------------------------------- preconditions and ETags

#[tokio::test]
async fn if_match_with_the_current_etag_lets_put_patch_and_delete_apply() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1})).await;

    let etag = api.etag_of("s").await;
    let put = api
        .put_json_with("s", at(20), &json!({"a": 2}), |r| {
            r.header("If-Match", &etag)
        })
        .await;
    assert_eq!(put.status(), 204, "{put:?}");

    let etag = api.etag_of("s").await;
    let patch = api
        .patch_with("s", at(30), &json!({"b": 3}), |r| {
            r.header("If-Match", &etag)
        })
        .await;
    assert_report(&json(patch, 200).await, &["b"], &[], &[], at(30));
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 2, "b": 3}));

    let etag = api.etag_of("s").await;
    let delete = api
        .delete_with("s", at(40), |r| r.header("If-Match", &etag))
        .await;
    assert_eq!(delete.status(), 204, "{delete:?}");
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

#[tokio::test]
async fn if_match_mismatch_is_412_with_the_current_etag_whatever_the_timestamp() {
    let api = Api::start().await;
    api.put_json("s", at(20), &json!({"a": 1})).await;
    let current = api.etag_of("s").await;
    let wrong = "\"999\"";

    // Newer and older timestamps alike: the precondition is judged first.
    for timestamp in [at(30), at(10)] {
        let responses = [
            api.put_json_with("s", timestamp, &json!({"a": 2}), |r| {
                r.header("If-Match", wrong)
            })
            .await,
            api.patch_with("s", timestamp, &json!({"a": 2}), |r| {
                r.header("If-Match", wrong)
            })
            .await,
            api.delete_with("s", timestamp, |r| r.header("If-Match", wrong))
                .await,
        ];
        for response in responses {
            assert_eq!(header(response.headers(), "etag"), current, "{response:?}");
            let body = problem(response, 412, "precondition-failed").await;
            assert_eq!(body["current_etag"], current.as_str(), "{body}");
        }
    }
    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1}));
    assert_eq!(header(&headers, "etag"), current);
    api.stop().await;
}

#[tokio::test]
async fn matching_if_match_with_a_stale_timestamp_is_409() {
    let api = Api::start().await;
    api.put_json("s", at(20), &json!({"a": 1})).await;
    let etag = api.etag_of("s").await;
    let put = api
        .put_json_with("s", at(10), &json!({"a": 2}), |r| {
            r.header("If-Match", &etag)
        })
        .await;
    problem(put, 409, "stale-write").await;
    let patch = api
        .patch_with("s", at(10), &json!({"a": 2}), |r| {
            r.header("If-Match", &etag)
        })
        .await;
    problem(patch, 409, "stale-write").await;
    let delete = api
        .delete_with("s", at(10), |r| r.header("If-Match", &etag))
        .await;
    problem(delete, 409, "stale-write").await;
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1}));
    api.stop().await;
}

#[tokio::test]
async fn if_match_star_matches_any_live_value_but_not_an_absent_key() {
    let api = Api::start().await;
    let absent = api
        .put_json_with("s", at(10), &json!({"a": 1}), |r| r.header("If-Match", "*"))
        .await;
    let body = problem(absent, 412, "precondition-failed").await;
    assert!(
        body.get("current_etag").is_none_or(Value::is_null),
        "{body}"
    );
    assert_eq!(api.get("s").await.status(), 404);

    api.put_json("s", at(10), &json!({"a": 1})).await;
    let live = api
        .put_json_with("s", at(20), &json!({"a": 2}), |r| r.header("If-Match", "*"))
        .await;
    assert_eq!(live.status(), 204, "{live:?}");
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 2}));
    api.stop().await;
}

#[tokio::test]
async fn if_none_match_star_on_put_creates_only() {
    let api = Api::start().await;
    let create_only = |r: RequestBuilder| r.header("If-None-Match", "*");
    let created = api
        .put_json_with("s", at(10), &json!({"a": 1}), create_only)
        .await;
    assert_eq!(created.status(), 201, "{created:?}");
    let again = api
        .put_json_with("s", at(20), &json!({"a": 2}), create_only)
        .await;
    problem(again, 412, "precondition-failed").await;
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 1}));

    // Once the key is deleted, it may be created again.
    api.delete("s", at(30)).await;
    let recreated = api
        .put_json_with("s", at(40), &json!({"a": 3}), create_only)
        .await;
    assert_eq!(recreated.status(), 201, "{recreated:?}");
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 3}));
    api.stop().await;
}

#[tokio::test]
async fn if_none_match_with_the_current_etag_on_get_and_head_is_304_with_etag_and_no_body() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1})).await;
    api.patch("s", at(20), &json!({"b": 2})).await;
    let etag = api.etag_of("s").await;

    for method in [Method::GET, Method::HEAD] {
        let hit = api.get_if_none_match(method.clone(), "s", &etag).await;
        assert_eq!(hit.status(), 304, "{method}: {hit:?}");
        assert_eq!(header(hit.headers(), "etag"), etag);
        assert!(hit.bytes().await.expect("body").is_empty());

        let miss = api.get_if_none_match(method.clone(), "s", "\"1\"").await;
        assert_eq!(miss.status(), 200, "{method}: {miss:?}");
        assert_eq!(header(miss.headers(), "etag"), etag);
    }
    let miss = api.get_if_none_match(Method::GET, "s", "\"1\"").await;
    let doc: Value = serde_json::from_slice(&miss.bytes().await.expect("body")).expect("JSON");
    assert_eq!(doc, json!({"a": 1, "b": 2}));
    api.stop().await;
}

#[tokio::test]
async fn etag_changes_when_a_patch_older_than_the_newest_field_changes_the_content() {
    let api = Api::start().await;
    api.patch("s", at(5), &json!({"a": 1})).await;
    api.patch("s", at(10), &json!({"b": 1})).await;
    let before = api.etag_of("s").await;
    let response = api.patch("s", at(7), &json!({"a": 2})).await;
    assert_report(&json(response, 200).await, &["a"], &[], &[], at(10));

    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 2, "b": 1}));
    assert_eq!(timestamp_header(&headers), at(10));
    let after = header(&headers, "etag");
    assert_ne!(after, before, "the content changed, so must the ETag");
    // A client holding the old ETag is told the document changed.
    let stale = api.get_if_none_match(Method::GET, "s", &before).await;
    assert_eq!(stale.status(), 200, "{stale:?}");
    api.stop().await;
}

#[tokio::test]
async fn etag_is_different_after_every_change_of_content() {
    let api = Api::start().await;
    let mut etags = Vec::new();
    api.put_json("s", at(10), &json!({"a": 1, "b": 1})).await;
    etags.push(api.etag_of("s").await);
    api.patch("s", at(40), &json!({"a": 2})).await;
    etags.push(api.etag_of("s").await);
    api.patch("s", at(30), &json!({"b": 2})).await;
    etags.push(api.etag_of("s").await);
    api.patch("s", at(20), &json!({"c": 3})).await;
    etags.push(api.etag_of("s").await);
    api.patch("s", at(35), &json!({"c": null})).await;
    etags.push(api.etag_of("s").await);
    api.put_json("s", at(25), &json!({"d": 4})).await;
    etags.push(api.etag_of("s").await);
    api.delete("s", at(38)).await;
    etags.push(api.etag_of("s").await);
    let (doc, _) = api.document("s").await;
    assert_eq!(doc, json!({"a": 2}));
    let mut distinct = etags.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), etags.len(), "an ETag repeated: {etags:?}");
    api.stop().await;
}

// ---------------------------------------------------------------- owners

#[tokio::test]
async fn session_owner_is_recorded_and_returned_on_get_and_head() {
    let api = Api::start().await;
    let response = api
        .put_json_with("s", at(10), &json!({"a": 1}), |r| {
            r.header("X-Session-Owner", "user-42")
        })
        .await;
    assert_eq!(response.status(), 201);
    let patched = api
        .patch_with("p", at(10), &json!({"a": 1}), |r| {
            r.header("X-Session-Owner", "user-43")
        })
        .await;
    assert_eq!(patched.status(), 201);
    for (key, owner) in [("s", "user-42"), ("p", "user-43")] {
        let (_, headers) = api.document(key).await;
        assert_eq!(header(&headers, "x-session-owner"), owner);
        let head = api.head(key).await;
        assert_eq!(head.status(), 200);
        assert_eq!(header(head.headers(), "x-session-owner"), owner);
    }
    api.stop().await;
}

#[tokio::test]
async fn session_owner_sticks_across_writes_without_the_header() {
    let api = Api::start().await;
    api.put_json_with("s", at(10), &json!({"a": 1}), |r| {
        r.header("X-Session-Owner", "alice")
    })
    .await;
    assert_eq!(
        api.put_json("s", at(20), &json!({"a": 2})).await.status(),
        204
    );
    assert_eq!(api.patch("s", at(30), &json!({"b": 3})).await.status(), 200);
    assert_eq!(api.touch("s", "60").await.status(), 200);
    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 2, "b": 3}));
    assert_eq!(header(&headers, "x-session-owner"), "alice");
    let (keys, _) = api.owner_keys("alice", 10).await;
    assert_eq!(keys, vec!["s"]);
    api.stop().await;
}

#[tokio::test]
async fn different_session_owner_replaces_the_owner() {
    let api = Api::start().await;
    api.put_json_with("s", at(10), &json!({"a": 1}), |r| {
        r.header("X-Session-Owner", "alice")
    })
    .await;
    let response = api
        .patch_with("s", at(20), &json!({"a": 2}), |r| {
            r.header("X-Session-Owner", "bob")
        })
        .await;
    assert_eq!(response.status(), 200);
    let (_, headers) = api.document("s").await;
    assert_eq!(header(&headers, "x-session-owner"), "bob");
    assert_eq!(api.owner_keys("alice", 10).await.0, Vec::<String>::new());
    assert_eq!(api.owner_keys("bob", 10).await.0, vec!["s"]);
    api.stop().await;
}

#[tokio::test]
async fn empty_session_owner_header_clears_the_owner() {
    let api = Api::start().await;
    api.put_json_with("s", at(10), &json!({"a": 1}), |r| {
        r.header("X-Session-Owner", "alice")
    })
    .await;
    let response = api
        .put_json_with("s", at(20), &json!({"a": 2}), |r| {
            r.header("X-Session-Owner", "")
        })
        .await;
    assert_eq!(response.status(), 204);
    let (doc, headers) = api.document("s").await;
    assert_eq!(doc, json!({"a": 2}));
    assert!(
        headers.get("x-session-owner").is_none(),
        "owner not cleared: {headers:?}"
    );
    assert_eq!(api.owner_keys("alice", 10).await.0, Vec::<String>::new());
    api.stop().await;
}

#[tokio::test]
async fn session_owner_over_256_bytes_is_400_invalid_owner() {
    let api = Api::start().await;
    let too_long = "o".repeat(257);
    let put = api
        .put_json_with("s", at(10), &json!({"a": 1}), |r| {
            r.header("X-Session-Owner", too_long.as_str())
        })
        .await;
    problem(put, 400, "invalid-owner").await;
    let patch = api
        .patch_with("s", at(10), &json!({"a": 1}), |r| {
            r.header("X-Session-Owner", too_long.as_str())
        })
        .await;
    problem(patch, 400, "invalid-owner").await;
    assert_eq!(api.get("s").await.status(), 404);

    let longest = "o".repeat(256);
    let ok = api
        .put_json_with("s", at(10), &json!({"a": 1}), |r| {
            r.header("X-Session-Owner", longest.as_str())
        })
        .await;
    assert_eq!(ok.status(), 201, "{ok:?}");
    let (_, headers) = api.document("s").await;
    assert_eq!(header(&headers, "x-session-owner"), longest);
    api.stop().await;
}

#[tokio::test]
async fn owner_sessions_lists_only_the_live_sessions_of_that_owner() {
    let api = Api::start().await;
    let owned = |owner: &'static str| move |r: RequestBuilder| r.header("X-Session-Owner", owner);
    // s1: live, expires in 100 s, created at T0 + 1 s (server time).
    api.clock_at_secs(1);
    let r = api
        .put_with("s1", at(11), "v", |r| {
            owned("alice")(r.header("X-TTL", "100"))
        })
        .await;
    assert_eq!(r.status(), 201);
    api.clock_at_secs(2);
    // s2: deleted; s3: expires before the listing; s4: now bob's; s5: owner cleared;
    // s6: never alice's; p7: alice's, built by PATCH, never expires.
    api.put_with("s2", at(12), "v", owned("alice")).await;
    assert_eq!(api.delete("s2", at(22)).await.status(), 204);
    api.put_with("s3", at(13), "v", |r| {
        owned("alice")(r.header("X-TTL", "5"))
    })
    .await;
    api.put_with("s4", at(14), "v", owned("alice")).await;
    api.put_with("s4", at(24), "v", owned("bob")).await;
    api.put_with("s5", at(15), "v", owned("alice")).await;
    api.put_with("s5", at(25), "v", |r| r.header("X-Session-Owner", ""))
        .await;
    api.put_with("s6", at(16), "v", owned("bob")).await;
    api.clock_at_secs(3);
    let r = api
        .patch_with("p7", at(17), &json!({"a": 1}), owned("alice"))
        .await;
    assert_eq!(r.status(), 201);
    api.patch("p7", at(27), &json!({"b": 1})).await;

    api.clock_at_secs(7);
    let page = json(api.owner_sessions("alice", &[]).await, 200).await;
    assert_eq!(
        page,
        json!({
            "sessions": [
                {"key": "p7", "timestamp": at(27), "expires_at": null, "created_at": T0 + 3 * SECOND},
                {"key": "s1", "timestamp": at(11), "expires_at": T0 + 101 * SECOND, "created_at": T0 + SECOND},
            ],
            "next_cursor": null,
        })
    );
    let bob = api.owner_keys("bob", 10).await.0;
    assert_eq!(bob, vec!["s4", "s6"]);
    assert_eq!(api.owner_keys("nobody", 10).await.0, Vec::<String>::new());
    api.stop().await;
}

#[tokio::test]
async fn owner_sessions_are_paginated_with_limit_and_cursor() {
    let api = Api::start().await;
    let mut want = Vec::new();
    for i in 0..7 {
        let key = format!("sess%2F{i}");
        let response = api
            .put_with(&key, at(10 + i), "v", |r| {
                r.header("X-Session-Owner", "alice")
            })
            .await;
        assert_eq!(response.status(), 201);
        want.push(key);
    }
    api.put_with("other", at(10), "v", |r| r.header("X-Session-Owner", "bob"))
        .await;

    let (keys, pages) = api.owner_keys("alice", 3).await;
    assert_eq!(keys, want);
    let sizes: Vec<usize> = pages
        .iter()
        .map(|p| p["sessions"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 7);
    assert!(pages.len() >= 3, "7 sessions in pages of 3: {sizes:?}");
    assert_eq!(&sizes[..2], &[3, 3], "{pages:?}");

    // A page of exactly the limit says there may be more; the last says there is not.
    let first = json(api.owner_sessions("alice", &[("limit", "3")]).await, 200).await;
    assert!(first["next_cursor"].is_string(), "{first}");
    let all = json(api.owner_sessions("alice", &[("limit", "100")]).await, 200).await;
    assert_eq!(all["sessions"].as_array().map(Vec::len), Some(7), "{all}");
    assert_eq!(all["next_cursor"], Value::Null, "{all}");
    api.stop().await;
}

#[tokio::test]
async fn revoking_an_owner_deletes_their_live_sessions_and_keeps_newer_ones() {
    let api = Api::start().await;
    let alice = |r: RequestBuilder| r.header("X-Session-Owner", "alice");
    api.put_json_with("old1", at(10), &json!({"a": 1}), alice)
        .await;
    api.put_json_with("old2", at(11), &json!({"a": 1}), alice)
        .await;
    // Written after the revocation's timestamp: whole, and one field of it.
    api.put_json_with("newer", at(30), &json!({"a": 1}), alice)
        .await;
    api.put_json_with("field", at(10), &json!({"a": 1}), alice)
        .await;
    api.patch("field", at(31), &json!({"b": 2})).await;
    api.put_json_with("bobs", at(10), &json!({"a": 1}), |r| {
        r.header("X-Session-Owner", "bob")
    })
    .await;

    let response = api.revoke("alice", at(20), None).await;
    let body = json(response, 200).await;
    assert_eq!(body["revoked"], 2, "{body}");
    let mut kept: Vec<(String, u64)> = body["kept"]
        .as_array()
        .expect("kept is an array")
        .iter()
        .map(|k| {
            (
                k["key"].as_str().expect("key").to_owned(),
                k["timestamp"].as_u64().expect("timestamp"),
            )
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        vec![("field".to_string(), at(31)), ("newer".to_string(), at(30))],
        "{body}"
    );

    assert_eq!(api.get("old1").await.status(), 404);
    assert_eq!(api.get("old2").await.status(), 404);
    assert_eq!(api.document("newer").await.0, json!({"a": 1}));
    assert_eq!(api.document("field").await.0, json!({"b": 2}));
    assert_eq!(api.document("bobs").await.0, json!({"a": 1}));
    assert_eq!(api.owner_keys("alice", 10).await.0, vec!["field", "newer"]);
    // The revocation was a guarded delete at its timestamp: older writes stay refused.
    problem(
        api.put_json("old1", at(15), &json!({"a": 2})).await,
        409,
        "stale-write",
    )
    .await;
    api.stop().await;
}

#[tokio::test]
async fn revoking_at_the_timestamp_of_a_field_removal_revokes_the_session() {
    let api = Api::start().await;
    api.put_json_with("s", at(10), &json!({"a": 1, "b": 1}), |r| {
        r.header("X-Session-Owner", "alice")
    })
    .await;
    api.patch("s", at(20), &json!({"b": null})).await;
    // Nothing in the session is newer than the revocation.
    let body = json(api.revoke("alice", at(20), None).await, 200).await;
    assert_eq!(api.get("s").await.status(), 404, "{body}");
    assert_eq!(body, json!({"revoked": 1, "kept": []}));
    api.stop().await;
}

#[tokio::test]
async fn revoking_with_keep_leaves_that_session_and_lists_it() {
    let api = Api::start().await;
    for (key, ts) in [("s1", 10), ("s2", 11), ("s3", 12)] {
        api.put_with(key, at(ts), "v", |r| r.header("X-Session-Owner", "alice"))
            .await;
    }
    let response = api.revoke("alice", at(20), Some("s2")).await;
    let body = json(response, 200).await;
    assert_eq!(
        body,
        json!({"revoked": 2, "kept": [{"key": "s2", "timestamp": at(11)}]})
    );
    assert_eq!(api.get("s1").await.status(), 404);
    assert_eq!(api.get("s2").await.status(), 200);
    assert_eq!(api.get("s3").await.status(), 404);
    assert_eq!(api.owner_keys("alice", 10).await.0, vec!["s2"]);
    api.stop().await;
}

// ---------------------------------------------------------------- absolute lifetime

#[tokio::test]
async fn max_lifetime_caps_put_ttl_and_touch_at_creation_plus_lifetime() {
    let api = Api::start().await;
    let end = T0 + 100 * SECOND;
    let created = api
        .put_with("s", at(10), "v", |r| {
            r.header("X-Max-Lifetime", "100").header("X-TTL", "1000")
        })
        .await;
    assert_eq!(created.status(), 201);
    let (_, headers, _) = api.read("s").await;
    assert_eq!(micros_header(&headers, "x-lifetime-ends-at"), end);
    assert_eq!(micros_header(&headers, "x-expires-at"), end);

    let touched = json(api.touch("s", "1000").await, 200).await;
    assert_eq!(touched["expires_at"], end, "{touched}");

    api.clock_at_secs(50);
    let rewritten = api
        .put_with("s", at(20), "v2", |r| r.header("X-TTL", "1000"))
        .await;
    assert_eq!(rewritten.status(), 204);
    let (_, headers, body) = api.read("s").await;
    assert_eq!(body, b"v2");
    assert_eq!(micros_header(&headers, "x-expires-at"), end);
    let touched = json(api.touch("s", "1000").await, 200).await;
    assert_eq!(touched["expires_at"], end, "{touched}");

    api.server.clock.set(end - 1);
    assert_eq!(api.get("s").await.status(), 200);
    api.server.clock.set(end);
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

#[tokio::test]
async fn max_lifetime_without_ttl_makes_the_key_expire_at_the_lifetimes_end() {
    let api = Api::start().await;
    let end = T0 + 100 * SECOND;
    api.put_with("s", at(10), "v", |r| r.header("X-Max-Lifetime", "100"))
        .await;
    let (_, headers, _) = api.read("s").await;
    assert_eq!(micros_header(&headers, "x-expires-at"), end);
    assert_eq!(micros_header(&headers, "x-lifetime-ends-at"), end);
    api.server.clock.set(end);
    assert_eq!(api.get("s").await.status(), 404);
    api.stop().await;
}

#[tokio::test]
async fn patch_ttl_is_capped_by_the_lifetime() {
    let api = Api::start().await;
    let end = T0 + 100 * SECOND;
    let created = api
        .patch_with("s", at(10), &json!({"a": 1}), |r| {
            r.header("X-Max-Lifetime", "100").header("X-TTL", "1000")
        })
        .await;
    assert_eq!(created.status(), 201);
    api.clock_at_secs(40);
    let patched = api
        .patch_with("s", at(20), &json!({"b": 1}), |r| r.header("X-TTL", "1000"))
        .await;
    assert_eq!(patched.status(), 200);
    let (_, headers) = api.document("s").await;
    assert_eq!(micros_header(&headers, "x-lifetime-ends-at"), end);
    assert_eq!(micros_header(&headers, "x-expires-at"), end);
    api.stop().await;
}

#[tokio::test]
async fn later_writes_max_lifetime_does_not_change_the_lifetime() {
    let api = Api::start().await;
    let end = T0 + 100 * SECOND;
    api.put_with("s", at(10), "v", |r| r.header("X-Max-Lifetime", "100"))
        .await;
    api.clock_at_secs(10);
    let longer = api
        .put_with("s", at(20), "v", |r| {
            r.header("X-Max-Lifetime", "1000").header("X-TTL", "500")
        })
        .await;
    assert_eq!(longer.status(), 204);
    let (_, headers, _) = api.read("s").await;
    assert_eq!(micros_header(&headers, "x-lifetime-ends-at"), end);
    assert_eq!(micros_header(&headers, "x-expires-at"), end);

    let shorter = api
        .put_with("s", at(30), "v", |r| r.header("X-Max-Lifetime", "1"))
        .await;
    assert_eq!(shorter.status(), 204);
    let (_, headers, _) = api.read("s").await;
    assert_eq!(micros_header(&headers, "x-lifetime-ends-at"), end);
    api.clock_at_secs(12);
    assert_eq!(api.get("s").await.status(), 200);
    api.stop().await;
}

#[tokio::test]
async fn lifetime_starts_afresh_after_delete_and_recreate() {
    let api = Api::start().await;
    for key in ["again", "without"] {
        api.put_with(key, at(10), "v", |r| r.header("X-Max-Lifetime", "100"))
            .await;
    }
    api.clock_at_secs(50);
    for key in ["again", "without"] {
        assert_eq!(api.delete(key, at(20)).await.status(), 204);
    }
    let again = api
        .put_with("again", at(30), "v", |r| r.header("X-Max-Lifetime", "100"))
        .await;
    assert_eq!(again.status(), 201);
    let (_, headers, _) = api.read("again").await;
    assert_eq!(
        micros_header(&headers, "x-lifetime-ends-at"),
        T0 + 150 * SECOND
    );

    assert_eq!(api.put("without", at(30), "v").await.status(), 201);
    let (status, headers, _) = api.read("without").await;
    assert_eq!(status, 200);
    assert!(headers.get("x-lifetime-ends-at").is_none(), "{headers:?}");
    assert!(headers.get("x-expires-at").is_none(), "{headers:?}");
    api.clock_at_secs(200);
    assert_eq!(api.get("again").await.status(), 404);
    assert_eq!(api.get("without").await.status(), 200);
    api.stop().await;
}

#[tokio::test]
async fn server_max_session_lifetime_caps_every_key_and_header_can_only_shorten_it() {
    let api =
        Api::start_with(|c| c.limits.max_session_lifetime = Some(Duration::from_secs(100))).await;
    let end = T0 + 100 * SECOND;
    api.put("plain", at(10), "v").await;
    api.put_with("longer", at(10), "v", |r| {
        r.header("X-Max-Lifetime", "1000").header("X-TTL", "1000")
    })
    .await;
    api.put_with("shorter", at(10), "v", |r| r.header("X-Max-Lifetime", "10"))
        .await;
    api.patch("doc", at(10), &json!({"a": 1})).await;

    for key in ["plain", "longer", "doc"] {
        let (status, headers, _) = api.read(key).await;
        assert_eq!(status, 200, "{key}");
        assert_eq!(micros_header(&headers, "x-lifetime-ends-at"), end, "{key}");
        assert_eq!(micros_header(&headers, "x-expires-at"), end, "{key}");
    }
    let (_, headers, _) = api.read("shorter").await;
    assert_eq!(
        micros_header(&headers, "x-lifetime-ends-at"),
        T0 + 10 * SECOND
    );
    let touched = json(api.touch("plain", "1000").await, 200).await;
    assert_eq!(touched["expires_at"], end, "{touched}");
    api.server.clock.set(end);
    assert_eq!(api.get("plain").await.status(), 404);
    assert_eq!(api.get("doc").await.status(), 404);
    api.stop().await;
}

// ---------------------------------------------------------------- batch get

#[tokio::test]
async fn batch_get_returns_records_in_request_order_with_their_metadata() {
    let api = Api::start().await;
    api.put_with_ttl("a%2Fb", at(10), "hello", 30).await;
    api.patch("doc", at(20), &json!({"x": 1})).await;
    let doc_etag = api.etag_of("doc").await;
    let text_etag = api.etag_of("a%2Fb").await;
    let (_, _, doc_bytes) = api.read("doc").await;

    let asked = ["doc", "missing", "a%2Fb", "doc"].map(String::from);
    let body = json(api.batch(&asked).await, 200).await;
    let records = body["records"].as_array().expect("records is an array");
    assert_eq!(records.len(), 4, "{body}");
    let doc = json!({
        "key": "doc", "found": true, "timestamp": at(20),
        "content_type": "application/json", "expires_at": null,
        "value": String::from_utf8(doc_bytes).expect("UTF-8"), "encoding": "utf8",
        "etag": doc_etag,
    });
    assert_eq!(records[0], doc);
    assert_eq!(records[1]["key"], "missing");
    assert_eq!(records[1]["found"], false);
    assert_eq!(
        records[2],
        json!({
            "key": "a%2Fb", "found": true, "timestamp": at(10),
            "content_type": "text/plain", "expires_at": T0 + 30 * SECOND,
            "value": "hello", "encoding": "utf8", "etag": text_etag,
        })
    );
    assert_eq!(records[3], doc);
    api.stop().await;
}

#[tokio::test]
async fn batch_get_returns_non_utf8_values_as_base64() {
    let api = Api::start().await;
    let put = send(
        api.request(Method::PUT, "/keys/bin%FF")
            .header("X-Write-Timestamp", at(10).to_string())
            .header("content-type", "application/octet-stream")
            .body(vec![0xff_u8, 0x00, 0x41]),
    )
    .await;
    assert_eq!(put.status(), 201);
    let body = json(api.batch(&["bin%FF".to_string()]).await, 200).await;
    let record = &body["records"][0];
    assert_eq!(record["key"], "bin%FF", "{body}");
    assert_eq!(record["found"], true, "{body}");
    assert_eq!(record["encoding"], "base64", "{body}");
    assert_eq!(record["value"], "/wBB", "{body}");
    assert_eq!(record["content_type"], "application/octet-stream", "{body}");
    api.stop().await;
}

#[tokio::test]
async fn batch_get_of_absent_deleted_or_expired_keys_is_found_false_with_nulls() {
    let api = Api::start().await;
    api.put("deleted", at(10), "v").await;
    api.delete("deleted", at(20)).await;
    api.put_with_ttl("expired", at(10), "v", 5).await;
    api.clock_at_secs(5);
    let asked = ["never", "deleted", "expired"].map(String::from);
    let body = json(api.batch(&asked).await, 200).await;
    let records = body["records"].as_array().expect("records is an array");
    assert_eq!(records.len(), 3, "{body}");
    for (record, key) in records.iter().zip(asked) {
        assert_eq!(
            *record,
            json!({
                "key": key, "found": false, "timestamp": null, "content_type": null,
                "expires_at": null, "value": null, "encoding": null, "etag": null,
            })
        );
    }
    api.stop().await;
}

#[tokio::test]
async fn batch_get_of_zero_or_1001_keys_is_400_and_of_1000_is_answered() {
    let api = Api::start().await;
    problem(api.batch(&[]).await, 400, "invalid-body").await;
    let too_many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    problem(api.batch(&too_many).await, 400, "invalid-body").await;
    let body = json(api.batch(&too_many[..1000]).await, 200).await;
    let records = body["records"].as_array().expect("records is an array");
    assert_eq!(records.len(), 1000);
    assert_eq!(records[999]["key"], "k999");
    api.stop().await;
}

// ---------------------------------------------------------------- Tyrant port

#[tokio::test]
async fn tyrant_get_of_a_patch_built_document_returns_the_same_bytes_as_http_get() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1, "z": "old"}))
        .await;
    api.patch("s", at(30), &json!({"b": [1, 2], "z": null}))
        .await;
    api.patch("s", at(20), &json!({"c": {"n": true}})).await;
    let (status, _, http_bytes) = api.read("s").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&http_bytes).expect("JSON");
    assert_eq!(doc, json!({"a": 1, "b": [1, 2], "c": {"n": true}}));

    let mut tyrant = Tyrant::connect(api.server.tyrant).await;
    assert_eq!(tyrant.get(b"s").await, Some(http_bytes));
    api.stop().await;
}

#[tokio::test]
async fn if_none_match_with_entity_tags_on_put_refuses_only_a_matching_value() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1})).await;
    let etag = api.etag_of("s").await;
    let unless = |tag: String| move |r: RequestBuilder| r.header("If-None-Match", tag);
    let refused = api
        .put_json_with("s", at(20), &json!({"a": 2}), unless(format!("W/{etag}")))
        .await;
    let body = problem(refused, 412, "precondition-failed").await;
    assert_eq!(body["current_etag"], json!(etag));
    let applied = api
        .put_json_with("s", at(20), &json!({"a": 2}), unless("\"other\"".into()))
        .await;
    assert_eq!(applied.status(), 204);
    assert_eq!(api.document("s").await.0, json!({"a": 2}));
    api.stop().await;
}

#[tokio::test]
async fn if_match_and_if_none_match_together_are_evaluated_in_order() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1})).await;
    let etag = api.etag_of("s").await;
    // If-Match passes, then If-None-Match names the same value: refused.
    let both = |r: RequestBuilder| r.header("If-Match", &etag).header("If-None-Match", &etag);
    let refused = api.put_json_with("s", at(20), &json!({"a": 2}), both).await;
    problem(refused, 412, "precondition-failed").await;
    // If-Match passes and If-None-Match names something else: applied.
    let other = |r: RequestBuilder| {
        r.header("If-Match", &etag)
            .header("If-None-Match", "\"other\"")
    };
    assert_eq!(
        api.put_json_with("s", at(20), &json!({"a": 2}), other)
            .await
            .status(),
        204
    );
    api.stop().await;
}

#[tokio::test]
async fn a_malformed_if_match_matches_nothing_and_a_malformed_if_none_match_nothing_either() {
    let api = Api::start().await;
    api.put_json("s", at(10), &json!({"a": 1})).await;
    for malformed in ["0", "", "\"unterminated", "W/", "\"a\"x"] {
        let response = api
            .patch_with("s", at(20), &json!({"a": 2}), |r| {
                r.header("If-Match", malformed)
            })
            .await;
        problem(response, 412, "precondition-failed").await;
        let read = api.get_if_none_match(Method::GET, "s", malformed).await;
        assert_eq!(read.status(), 200, "If-None-Match: {malformed:?}");
    }
    // A tag with a comma inside is one tag.
    let etag = api.etag_of("s").await;
    let listed = format!("\"a,b\", {etag}");
    let response = api.get_if_none_match(Method::GET, "s", &listed).await;
    assert_eq!(response.status(), 304);
    assert_eq!(api.document("s").await.0, json!({"a": 1}));
    api.stop().await;
}
