//! The checked-in OpenAPI document (openapi/openapi.json) is exactly what the handlers'
//! annotations generate, and has the shape clients rely on.

use serde_json::Value;

const CHECKED_IN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json");
const REGENERATE: &str = "cargo run -- openapi > openapi/openapi.json";

fn generated() -> Value {
    serde_json::from_str(&tidemark::http::openapi::document()).expect("the document is JSON")
}

#[test]
fn checked_in_openapi_document_matches_the_generated_one() {
    let checked_in = std::fs::read_to_string(CHECKED_IN).unwrap_or_else(|e| {
        panic!("cannot read {CHECKED_IN} ({e}); create it by running:\n\n    {REGENERATE}\n")
    });
    let generated = tidemark::http::openapi::document();
    if checked_in == generated {
        return;
    }
    let first_difference = checked_in
        .lines()
        .zip(generated.lines())
        .position(|(old, new)| old != new)
        .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
    let line = |text: &str| {
        text.lines()
            .nth(first_difference)
            .unwrap_or("<end of file>")
            .to_owned()
    };
    panic!(
        "openapi/openapi.json is out of date with the code (first difference at line {}):\n\
         \x20 checked in: {}\n\
         \x20 generated:  {}\n\n\
         Regenerate it from the repository root with:\n\n    {REGENERATE}\n",
        first_difference + 1,
        line(&checked_in),
        line(&generated),
    );
}

#[test]
fn document_is_openapi_3_1_with_an_rfc_9457_problem_schema() {
    let doc = generated();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "{}",
        doc["openapi"]
    );
    let problem = &doc["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail"] {
        assert!(problem["properties"][field].is_object(), "Problem.{field}");
        assert!(
            problem["required"]
                .as_array()
                .is_some_and(|r| r.contains(&Value::from(field))),
            "Problem.{field} is required"
        );
    }
    assert_eq!(
        problem["properties"]["current_timestamp"]["type"],
        serde_json::json!(["integer", "null"])
    );
}

#[test]
fn every_error_response_with_a_body_is_problem_json() {
    let doc = generated();
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            let responses = operation["responses"].as_object().expect("responses");
            for (status, response) in responses {
                let is_error = status.starts_with('4') || status.starts_with('5');
                if !is_error || method == "head" {
                    continue;
                }
                let content = response["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path} {status} declares no body"));
                let media_types: Vec<&String> = content.keys().collect();
                assert_eq!(
                    media_types,
                    ["application/problem+json"],
                    "{method} {path} {status}"
                );
                assert_eq!(
                    content["application/problem+json"]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{method} {path} {status}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} error responses found");
}

#[test]
fn key_operations_document_the_statuses_of_the_spec() {
    let doc = generated();
    let statuses = |path: &str, method: &str| -> Vec<String> {
        let responses = doc["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} is documented"));
        responses.keys().cloned().collect()
    };
    for (path, method, expected) in [
        (
            "/keys/{key}",
            "put",
            &["201", "204", "400", "409", "413", "414", "422", "428"][..],
        ),
        ("/keys/{key}", "get", &["200", "400", "404", "414"][..]),
        ("/keys/{key}", "head", &["200", "400", "404", "414"][..]),
        (
            "/keys/{key}",
            "delete",
            &["204", "400", "409", "414", "422", "428"][..],
        ),
        (
            "/keys/{key}/touch",
            "post",
            &["200", "400", "404", "414"][..],
        ),
        ("/keys", "get", &["200", "400"][..]),
        ("/readyz", "get", &["200", "503"][..]),
    ] {
        let documented = statuses(path, method);
        for status in expected {
            assert!(
                documented.iter().any(|s| s == status),
                "{method} {path} does not document {status}: {documented:?}"
            );
        }
    }
    // Documented bounds follow the code's.
    for (path, method) in [("/keys/{key}", "put"), ("/keys/{key}/touch", "post")] {
        let ttl = doc["paths"][path][method]["parameters"]
            .as_array()
            .and_then(|params| params.iter().find(|p| p["name"] == "X-TTL"))
            .unwrap_or_else(|| panic!("{method} {path} documents X-TTL"));
        assert_eq!(ttl["schema"]["minimum"], 1, "{method} {path}");
        assert_eq!(
            ttl["schema"]["maximum"],
            tidemark::service::MAX_TTL_SECS,
            "{method} {path}"
        );
    }
    // The headers a conflict and a read carry.
    let put_conflict = &doc["paths"]["/keys/{key}"]["put"]["responses"]["409"];
    assert!(put_conflict["headers"]["X-Write-Timestamp"].is_object());
    let delete_conflict = &doc["paths"]["/keys/{key}"]["delete"]["responses"]["409"];
    assert!(delete_conflict["headers"]["X-Write-Timestamp"].is_object());
    let read = &doc["paths"]["/keys/{key}"]["get"]["responses"]["200"]["headers"];
    for name in [
        "X-Write-Timestamp",
        "ETag",
        "Cache-Control",
        "X-Expires-At",
        "Expires",
    ] {
        assert!(read[name].is_object(), "GET 200 documents {name}");
    }
}
