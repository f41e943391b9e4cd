//! Request-header limits, enforced in the router so that an oversized request gets
//! the same problem+json answer as every other error.
//!
//! hyper itself is configured with looser transport limits ([`TRANSPORT_MAX_HEADERS`],
//! [`TRANSPORT_MAX_BUF`]); only requests beyond those get hyper's own bare 431.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// Most header fields a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of header names and values a request may carry.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// hyper's own ceilings, above ours so that ours are the ones clients meet.
pub const TRANSPORT_MAX_HEADERS: usize = 256;
pub const TRANSPORT_MAX_BUF: usize = 128 * 1024;

/// The 431 answer for a request whose headers exceed [`MAX_HEADERS`] or
/// [`MAX_HEADER_BYTES`]; `None` when they are within both.
pub fn refuse_large_headers(request: &Request) -> Option<Response> {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() <= MAX_HEADERS && bytes <= MAX_HEADER_BYTES {
        return None;
    }
    Some(
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
            format!(
                "at most {MAX_HEADERS} header fields and {MAX_HEADER_BYTES} bytes of headers; \
                 this request has {} fields and {bytes} bytes",
                headers.len()
            ),
        )
        .into_response(),
    )
}
