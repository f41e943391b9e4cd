//! The two classes of contract defect that scripts/contract-fuzz does not let
//! schemathesis judge (tests/contract/schemathesis.toml says why), proven here instead,
//! with the bounds read from the OpenAPI document so the two cannot drift apart:
//!
//! * schema-violating input accepted (its `negative_data_rejection` check is off): a
//!   violation of every documented constraint is refused with a 4xx problem;
//! * schema-valid input refused (its `positive_data_acceptance` check also takes 422):
//!   input at every documented bound is accepted, and 422 comes only from a timestamp
//!   ahead of the server's clock.

mod common;

use common::http::{Http, header, send};
use common::{T0, TestServer};
use reqwest::{Method, Response};
use serde_json::Value;

fn document() -> Value {
    serde_json::from_str(&tidemark::http::openapi::document()).expect("the document is JSON")
}

/// The schema of parameter `name` of `method path`.
fn parameter_schema(doc: &Value, path: &str, method: &str, name: &str) -> Value {
    doc["paths"][path][method]["parameters"]
        .as_array()
        .and_then(|params| params.iter().find(|p| p["name"] == name))
        .map(|p| p["schema"].clone())
        .unwrap_or_else(|| panic!("{method} {path} documents {name}"))
}

fn bound(schema: &Value, which: &str) -> u64 {
    schema[which]
        .as_u64()
        .unwrap_or_else(|| panic!("{which} of {schema}"))
}

async fn refused(response: Response, what: &str) {
    let status = response.status().as_u16();
    assert!(
        (400..500).contains(&status) && status != 404,
        "{what}: expected a 4xx refusal, got {status}"
    );
    assert_eq!(
        header(response.headers(), "content-type"),
        "application/problem+json",
        "{what}"
    );
}

fn accepted(response: &Response, what: &str) {
    assert!(
        response.status().is_success(),
        "{what}: expected success, got {}",
        response.status()
    );
}

#[tokio::test]
async fn a_violation_of_every_documented_constraint_is_refused() {
    let doc = document();
    let server = TestServer::start().await;
    let http = Http::of(&server);

    for (path, method, segment) in [
        ("/keys/{key}", "put", "/keys/k"),
        ("/keys/{key}/touch", "post", "/keys/k/touch"),
    ] {
        let ttl = parameter_schema(&doc, path, method, "X-TTL");
        let (min, max) = (bound(&ttl, "minimum"), bound(&ttl, "maximum"));
        for bad in [
            (min - 1).to_string(),
            (max + 1).to_string(),
            "-1".into(),
            "1.5".into(),
            "null".into(),
            String::new(),
        ] {
            let request = http
                .request(
                    Method::from_bytes(method.to_uppercase().as_bytes()).expect("method"),
                    segment,
                )
                .header("X-Write-Timestamp", T0.to_string())
                .header("X-TTL", &bad);
            refused(
                send(request).await,
                &format!("{method} {path} X-TTL {bad:?}"),
            )
            .await;
        }
    }

    for (method, segment) in [(Method::PUT, "/keys/k"), (Method::DELETE, "/keys/k")] {
        let timestamp = parameter_schema(
            &doc,
            "/keys/{key}",
            &method.as_str().to_lowercase(),
            "X-Write-Timestamp",
        );
        let over = u128::from(bound(&timestamp, "maximum")) + 1;
        assert_eq!(bound(&timestamp, "minimum"), 0);
        for bad in [
            over.to_string(),
            "-1".into(),
            "1e6".into(),
            "null".into(),
            String::new(),
        ] {
            let request = http
                .request(method.clone(), segment)
                .header("X-Write-Timestamp", &bad);
            refused(
                send(request).await,
                &format!("{method} X-Write-Timestamp {bad:?}"),
            )
            .await;
        }
    }

    let limit = parameter_schema(&doc, "/keys", "get", "limit");
    let (min, max) = (bound(&limit, "minimum"), bound(&limit, "maximum"));
    for bad in [
        (min - 1).to_string(),
        (max + 1).to_string(),
        "x".into(),
        "-1".into(),
    ] {
        refused(
            http.list(&[("limit", &bad)]).await,
            &format!("limit {bad:?}"),
        )
        .await;
    }
    for name in ["prefix", "cursor"] {
        let schema = parameter_schema(&doc, "/keys", "get", name);
        let pattern = schema["pattern"].as_str().expect("pattern");
        let matches = regex::Regex::new(pattern).expect("the pattern is a regex");
        for bad in ["%zz", "a%4", "%"] {
            assert!(!matches.is_match(bad), "{name}: {bad:?} violates {pattern}");
            refused(http.list(&[(name, bad)]).await, &format!("{name} {bad:?}")).await;
        }
    }

    // The key's minLength: the empty segment.
    for (method, path) in [(Method::GET, "/keys/"), (Method::POST, "/keys//touch")] {
        refused(send(http.request(method, path)).await, path).await;
    }
    // A media range is no media type for a value.
    for range in ["*/*", "text/*"] {
        let response = http
            .put_with("k", T0, "v", |r| r.header("Content-Type", range))
            .await;
        refused(response, &format!("Content-Type {range}")).await;
    }
    // The import body is required.
    refused(
        send(http.request(Method::POST, "/admin/import")).await,
        "empty import",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn input_at_every_documented_bound_is_accepted_and_only_a_future_timestamp_is_422() {
    let doc = document();
    let server = TestServer::start().await;
    let http = Http::of(&server);

    // Every media type the document offers for a value, stored and read back.
    let content = doc["paths"]["/keys/{key}"]["put"]["requestBody"]["content"]
        .as_object()
        .expect("PUT body");
    let mut timestamp = T0;
    for media_type in content.keys() {
        timestamp += 1;
        let response = http
            .put_with("typed", timestamp, "{}", |r| {
                r.header("Content-Type", media_type)
            })
            .await;
        accepted(&response, media_type);
        assert_eq!(
            header(http.get("typed").await.headers(), "content-type"),
            *media_type
        );
    }

    let ttl = parameter_schema(&doc, "/keys/{key}", "put", "X-TTL");
    for good in [bound(&ttl, "minimum"), bound(&ttl, "maximum")] {
        timestamp += 1;
        let response = http.put_with_ttl("ttl", timestamp, "v", good).await;
        accepted(&response, &format!("X-TTL {good}"));
        accepted(
            &http.touch("ttl", &good.to_string()).await,
            &format!("touch X-TTL {good}"),
        );
    }

    let limit = parameter_schema(&doc, "/keys", "get", "limit");
    for good in [bound(&limit, "minimum"), bound(&limit, "maximum")] {
        accepted(
            &http.list(&[("limit", &good.to_string())]).await,
            &format!("limit {good}"),
        );
    }
    for name in ["prefix", "cursor"] {
        for good in ["", "typed", "%FF", "a%2Fb", "%25", "ü"] {
            accepted(
                &http.list(&[(name, good)]).await,
                &format!("{name} {good:?}"),
            );
        }
    }

    // Timestamps: the documented minimum is accepted (on a fresh key), the maximum is
    // refused only as being ahead of the server clock.
    let schema = parameter_schema(&doc, "/keys/{key}", "put", "X-Write-Timestamp");
    accepted(
        &http.put("oldest", bound(&schema, "minimum"), "v").await,
        "timestamp 0",
    );
    let newest = bound(&schema, "maximum");
    for (method, segment) in [
        (Method::PUT, "/keys/newest"),
        (Method::DELETE, "/keys/newest"),
    ] {
        let response = send(
            http.request(method.clone(), segment)
                .header("X-Write-Timestamp", newest.to_string()),
        )
        .await;
        assert_eq!(response.status(), 422, "{method} at u64::MAX");
    }
    server.stop().await;
}
