//! Helpers shared by the codec unit tests.

use super::client::{Reply, decode_reply, encode};
use super::request::{Request, decode};
use super::wire::{FrameError, Limits};

pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    assert_eq!(digits.len() % 2, 0, "odd hex length: {s}");
    digits
        .chunks(2)
        .map(|pair| {
            let text = std::str::from_utf8(pair).expect("ascii");
            u8::from_str_radix(text, 16).expect("hex digit")
        })
        .collect()
}

pub(crate) fn enc(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    encode(req, &mut out);
    out
}

pub(crate) fn dec(buf: &[u8]) -> Result<Option<(Request, usize)>, FrameError> {
    decode(buf, &Limits::default())
}

/// Decodes a golden request and checks it is one whole frame whose
/// canonical re-encoding is byte-identical.
pub(crate) fn golden(request_hex: &str) -> Request {
    let bytes = hex(request_hex);
    let (req, used) = dec(&bytes).expect("valid").expect("complete");
    assert_eq!(used, bytes.len());
    assert_eq!(enc(&req), bytes);
    req
}

pub(crate) fn golden_reply(command: u8, reply_hex: &str) -> Reply {
    let bytes = hex(reply_hex);
    let (reply, used) = decode_reply(command, &bytes)
        .expect("valid")
        .expect("complete");
    assert_eq!(used, bytes.len());
    reply
}

pub(crate) fn is_malformed(r: Result<Option<(Request, usize)>, FrameError>) -> bool {
    matches!(r, Err(FrameError::Malformed(_)))
}
