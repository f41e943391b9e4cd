//! The OpenAPI 3.1 description, generated from the handlers' annotations.
//! The checked-in copy is openapi/openapi.json; a test keeps the two equal.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{Schema, SchemaType, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::limits::{MAX_HEADER_BYTES, TRANSPORT_MAX_HEADERS};
use super::problem::PROBLEM_JSON;
use super::routes::Access;
use super::{admin, batch, health, keys, owners, problem};
use crate::service::jsonl;

/// Every method's operation of a path, each with whether it is HEAD: the one list
/// both the route-table modifier and the token-less document walk.
fn operations(item: &mut utoipa::openapi::PathItem) -> [(&mut Option<Operation>, bool); 6] {
    [
        (&mut item.get, false),
        (&mut item.put, false),
        (&mut item.patch, false),
        (&mut item.post, false),
        (&mut item.delete, false),
        (&mut item.head, true),
    ]
}

/// Name of the bearer-token scheme in `components.securitySchemes`.
pub const BEARER: &str = "bearerAuth";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "tidemark",
        description = "A session store that refuses stale writes. Every write carries \
            X-Write-Timestamp (µs since the Unix epoch) and is committed only when newer \
            than the stored one. Errors are RFC 9457 problem details.",
        license(name = "MIT OR Apache-2.0"),
    ),
    modifiers(&FromRouteTable),
    paths(
        keys::put_key,
        keys::patch_key,
        keys::get_key,
        keys::head_key,
        keys::delete_key,
        keys::touch_key,
        keys::list_keys,
        batch::batch_get,
        owners::list_sessions,
        owners::revoke_sessions,
        health::healthz,
        health::readyz,
        health::metrics,
        health::openapi_json,
        admin::backup,
        admin::export,
        admin::import,
    ),
    components(schemas(
        problem::Problem,
        keys::KeyPage,
        keys::Touched,
        keys::PatchAnswer,
        problem::RefusedField,
        batch::BatchGet,
        batch::BatchAnswer,
        batch::BatchRecord,
        batch::ValueEncoding,
        owners::OwnerSessions,
        owners::OwnedSession,
        owners::RevokeAnswer,
        owners::KeptSession,
        health::Health,
        jsonl::ExportLine,
        jsonl::ExportFields,
        jsonl::ExportClock,
        jsonl::ImportReport,
        jsonl::LineError,
    )),
    tags(
        (name = "keys", description = "Timestamp-guarded session values"),
        (name = "owners", description = "Every session of one user (X-Session-Owner), and logging them all out"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "admin", description = "Backup, export and import of the whole store; \
            no request timeout, bearer token required when one is configured"),
    )
)]
pub struct ApiDoc;

/// What every operation can answer because of the layers around the handlers, taken
/// from the route table ([`super::access_rules`]) rather than written per handler:
/// the bearer token and its 401 where the route's [`Access`] asks for one, the request
/// timeout's 503 where it applies, and the header limits' 431 everywhere. Headers are
/// present or absent, never null, so optional header parameters lose `null`.
struct FromRouteTable;

impl Modify for FromRouteTable {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let rules = super::access_rules();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(BEARER, SecurityScheme::Http(bearer()));
        for (path, item) in doc.paths.paths.iter_mut() {
            // A documented path the router does not declare fails closed, as the router does.
            let access = rules.declared(path).unwrap_or(Access::Token);
            for (operation, is_head) in operations(item) {
                if let Some(operation) = operation.as_mut() {
                    complete(operation, access, is_head);
                }
            }
        }
    }
}

fn bearer() -> Http {
    let mut scheme = Http::new(HttpAuthScheme::Bearer);
    scheme.description = Some(
        "The server's token (--auth-token / TIDEMARK_AUTH_TOKEN, or the file named by \
         --auth-token-file), when one is configured; without one these routes are open too. \
         /metrics on a separate --metrics-addr needs no token."
            .to_string(),
    );
    scheme
}

fn complete(operation: &mut Operation, access: Access, is_head: bool) {
    for parameter in operation.parameters.iter_mut().flatten() {
        if let RefOr::T(parameter) = parameter
            && parameter.parameter_in == ParameterIn::Header
            && let Some(RefOr::T(Schema::Object(schema))) = parameter.schema.as_mut()
            && let SchemaType::Array(types) = &mut schema.schema_type
        {
            types.retain(|t| *t != Type::Null);
            if let [single] = types.as_slice() {
                schema.schema_type = SchemaType::Type(single.clone());
            }
        }
    }
    let responses = &mut operation.responses.responses;
    let mut add = |status: &str, description: String| {
        let entry = responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error_response(String::new(), is_head)));
        if let RefOr::T(response) = entry {
            response.description = if response.description.is_empty() {
                description
            } else {
                format!("{} {description}", response.description)
            };
        }
    };
    add(
        "431",
        format!(
            "More than {} KiB of headers (a problem), or more than \
             {TRANSPORT_MAX_HEADERS} header fields (the HTTP layer's answer, without a body; \
             the connection is closed).",
            MAX_HEADER_BYTES / 1024
        ),
    );
    if access.needs_token() {
        operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        add(
            "401",
            "A bearer token is configured and the request did not carry it \
             (`WWW-Authenticate: Bearer`)."
                .to_string(),
        );
    }
    if access.has_timeout() && access.needs_token() {
        add(
            "503",
            "Or the request (body included) took longer than --request-timeout \
             (`request-timeout`)."
                .to_string(),
        );
    }
}

/// A problem+json error response (no body for HEAD).
fn error_response(description: String, is_head: bool) -> Response {
    let mut response = Response::new(description);
    if !is_head {
        response.content.insert(
            PROBLEM_JSON.to_string(),
            RefOr::T(Content::new(Some(Ref::from_schema_name("Problem")))),
        );
    }
    response
}

/// The document as pretty JSON with a trailing newline (the checked-in form): a
/// server with a bearer token configured.
pub fn document() -> String {
    pretty(&ApiDoc::openapi())
}

/// The document a server serves at /openapi.json: [`document`] when it has a bearer
/// token; without one, the same with no security requirement, no bearer scheme and no
/// 401, as no route asks for a token then. Each describes exactly the server serving it.
pub fn document_for(token_configured: bool) -> String {
    if token_configured {
        return document();
    }
    let mut doc = ApiDoc::openapi();
    if let Some(components) = doc.components.as_mut() {
        components.security_schemes.remove(BEARER);
    }
    for item in doc.paths.paths.values_mut() {
        for operation in operations(item).into_iter().filter_map(|(o, _)| o.as_mut()) {
            operation.security = None;
            operation.responses.responses.remove("401");
        }
    }
    pretty(&doc)
}

fn pretty(doc: &utoipa::openapi::OpenApi) -> String {
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
