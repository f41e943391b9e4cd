//! Request-header limits.
//!
//! hyper counts the header fields while it parses: a request with more than
//! [`TRANSPORT_MAX_HEADERS`] of them, or with more than [`TRANSPORT_MAX_BUF`] bytes of
//! head, gets hyper's own 431 without a body and the connection is closed. The size of
//! the headers is checked again here, lower ([`MAX_HEADER_BYTES`]), so that a request
//! with a few oversized headers gets the same problem+json answer as every other error.
//!
//! The count stays at hyper's default on purpose: hyper parses into an array of that
//! many slots kept inline on the stack, and any other setting allocates, and fills, two
//! heap arrays of the configured size for every request (with 256 slots that was
//! 9 % of an HTTP GET's instructions, `bench/callgrind.sh`).

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::problem::Problem;

/// Most header fields a request may carry: hyper's default, which it enforces itself
/// when no other count is configured (the HTTP server configures none).
pub const TRANSPORT_MAX_HEADERS: usize = 100;
/// Most bytes of a request's head hyper buffers before it answers 431.
pub const TRANSPORT_MAX_BUF: usize = 128 * 1024;
/// Most bytes of header names and values a request may carry; below
/// [`TRANSPORT_MAX_BUF`], so that this is the size limit clients meet.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The 431 answer for a request whose headers exceed [`MAX_HEADER_BYTES`]; `None`
/// when they are within it.
pub fn refuse_large_headers(request: &Request) -> Option<Response> {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes <= MAX_HEADER_BYTES {
        return None;
    }
    Some(
        Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
            format!(
                "at most {MAX_HEADER_BYTES} bytes of header names and values; \
                 this request has {bytes} in {} fields",
                headers.len()
            ),
        )
        .into_response(),
    )
}
