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
            &[
                "201", "204", "400", "401", "409", "413", "414", "422", "428", "431", "503",
            ][..],
        ),
        (
            "/keys/{key}",
            "get",
            &["200", "400", "401", "404", "414", "431", "503"][..],
        ),
        (
            "/keys/{key}",
            "head",
            &["200", "400", "401", "404", "414", "431", "503"][..],
        ),
        (
            "/keys/{key}",
            "delete",
            &[
                "204", "400", "401", "409", "414", "422", "428", "431", "503",
            ][..],
        ),
        (
            "/keys/{key}/touch",
            "post",
            &["200", "400", "401", "404", "414", "431", "503"][..],
        ),
        ("/keys", "get", &["200", "400", "401", "431", "503"][..]),
        ("/metrics", "get", &["200", "401", "431", "503"][..]),
        ("/readyz", "get", &["200", "431", "503"][..]),
        (
            "/admin/backup",
            "get",
            &["200", "401", "431", "501", "503"][..],
        ),
        (
            "/admin/import",
            "post",
            &["200", "400", "401", "431", "503"][..],
        ),
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

/// Every operation of the document, as (path, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("operations") {
            found.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    found
}

#[test]
fn operations_behind_the_token_declare_bearer_security_and_401_from_the_route_table() {
    use tidemark::http::routes::Access;
    let doc = generated();
    assert_eq!(
        doc["components"]["securitySchemes"][tidemark::http::openapi::BEARER],
        serde_json::json!({
            "type": "http",
            "scheme": "bearer",
            "description": doc["components"]["securitySchemes"][tidemark::http::openapi::BEARER]["description"],
        })
    );
    let rules = tidemark::http::access_rules();
    let mut guarded = 0;
    for (path, method, operation) in operations(&doc) {
        let access = rules
            .declared(&path)
            .unwrap_or_else(|| panic!("{path} is documented but no route declares it"));
        let statuses = operation["responses"].as_object().expect("responses");
        assert!(
            statuses.contains_key("431"),
            "{method} {path} documents 431"
        );
        if access.needs_token() {
            guarded += 1;
            assert_eq!(
                operation["security"],
                serde_json::json!([{ tidemark::http::openapi::BEARER: [] }]),
                "{method} {path}"
            );
            assert!(
                statuses.contains_key("401"),
                "{method} {path} documents 401"
            );
        } else {
            assert!(operation["security"].is_null(), "{method} {path} is open");
            assert!(!statuses.contains_key("401"), "{method} {path} is open");
        }
        if access == Access::Token {
            assert!(
                statuses.contains_key("503"),
                "{method} {path}: request timeout"
            );
        }
    }
    assert!(guarded >= 10, "only {guarded} guarded operations");
    // And the other way round: every declared route is documented, except the two
    // that exist only to answer the empty key with 400.
    let paths = doc["paths"].as_object().expect("paths");
    for (route, _) in rules.declared_routes() {
        if route == "/keys/" || route == "/keys//touch" {
            continue;
        }
        assert!(
            paths.contains_key(route),
            "{route} is served but not documented"
        );
    }
}

/// The schemas of every timestamp in `value`: parameters and response headers named
/// like one, and object properties named like one; each with where it was found.
fn timestamp_schemas<'a>(value: &'a Value, at: &str, found: &mut Vec<(String, &'a Value)>) {
    const NAMES: [&str; 6] = [
        "X-Write-Timestamp",
        "X-Expires-At",
        "timestamp",
        "expires_at",
        "deleted_at",
        "current_timestamp",
    ];
    match value {
        Value::Object(map) => {
            if map
                .get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| NAMES.contains(&n))
            {
                found.push((format!("{at} parameter"), &map["schema"]));
            }
            for (key, inner) in map {
                let here = format!("{at}/{key}");
                if key == "headers" || key == "properties" {
                    for name in NAMES {
                        if let Some(named) = inner.get(name) {
                            let schema = if key == "headers" {
                                &named["schema"]
                            } else {
                                named
                            };
                            found.push((format!("{here}/{name}"), schema));
                        }
                    }
                }
                timestamp_schemas(inner, &here, found);
            }
        }
        Value::Array(items) => {
            for (i, inner) in items.iter().enumerate() {
                timestamp_schemas(inner, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

#[test]
fn timestamps_are_any_u64_without_the_int64_format() {
    let doc = generated();
    let mut schemas = Vec::new();
    timestamp_schemas(&doc, "", &mut schemas);
    for (at, schema) in &schemas {
        assert!(schema["format"].is_null(), "{at}: {schema}");
        assert_eq!(schema["minimum"], 0, "{at}: {schema}");
        assert_eq!(schema["maximum"], u64::MAX, "{at}: {schema}");
    }
    assert!(
        schemas.len() >= 15,
        "only {} timestamp schemas found",
        schemas.len()
    );
}

#[test]
fn no_header_parameter_is_nullable() {
    let doc = generated();
    for (path, method, operation) in operations(&doc) {
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            if parameter["in"] != "header" {
                continue;
            }
            let types = &parameter["schema"]["type"];
            assert!(
                types.is_string(),
                "{method} {path} header {}: a header is present or absent, never null: {types}",
                parameter["name"]
            );
        }
    }
}

#[test]
fn put_body_offers_text_json_and_binary_and_no_media_range() {
    let doc = generated();
    let body = &doc["paths"]["/keys/{key}"]["put"]["requestBody"];
    let content = body["content"].as_object().expect("PUT documents its body");
    let media_types: Vec<&str> = content.keys().map(String::as_str).collect();
    assert_eq!(
        media_types,
        ["application/json", "application/octet-stream", "text/plain"]
    );
    assert!(content["text/plain"]["example"].is_string());
    assert_eq!(
        content["application/octet-stream"]["schema"]["format"],
        "binary"
    );
    let description = body["description"].as_str().expect("description");
    assert!(
        description.contains("application/octet-stream"),
        "{description}"
    );
    // No operation describes a media range as something a client sends.
    for (path, method, operation) in operations(&doc) {
        for media_type in operation["requestBody"]["content"]
            .as_object()
            .into_iter()
            .flat_map(|c| c.keys())
        {
            assert!(!media_type.contains('*'), "{method} {path}: {media_type}");
        }
    }
}

#[test]
fn list_query_describes_the_percent_encoded_prefix_and_cursor() {
    let doc = generated();
    let parameters = doc["paths"]["/keys"]["get"]["parameters"]
        .as_array()
        .expect("parameters");
    for name in ["prefix", "cursor"] {
        let parameter = parameters
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is documented"));
        assert_eq!(
            parameter["schema"]["pattern"], "^([^%]|%[0-9A-Fa-f]{2})*$",
            "{name}"
        );
    }
}

#[test]
fn every_answer_with_session_data_documents_cache_control_no_store() {
    let doc = generated();
    for (path, method, status) in [
        ("/keys/{key}", "get", "200"),
        ("/keys/{key}", "head", "200"),
        ("/keys/{key}", "put", "201"),
        ("/keys/{key}", "put", "204"),
        ("/keys/{key}", "delete", "204"),
        ("/keys/{key}/touch", "post", "200"),
        ("/keys", "get", "200"),
        ("/admin/import", "post", "200"),
    ] {
        let headers = &doc["paths"][path][method]["responses"][status]["headers"];
        assert!(
            headers["Cache-Control"].is_object(),
            "{method} {path} {status} documents Cache-Control"
        );
    }
}
