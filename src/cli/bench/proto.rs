//! The wire side of every measured operation: how one request is written and how
//! one reply is recognised and classified, for each target.
//!
//! The clients are deliberately minimal and equally so for every target (no
//! reqwest/hyper, no redis crate): the cost measured is the server's, plus the
//! same small, fixed client cost everywhere. Replies are parsed in two steps, as
//! the server does: first "is a whole reply buffered?" (`Ok(None)` = read more),
//! then classification. Anything that cannot be framed is an `Err`, after which
//! the connection is dropped: a client that lost framing cannot trust any later
//! byte on that socket.

use std::io::Write as _;

use crate::tyrant::client::{self, Reply, Request, cmd};

/// How one reply is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The operation did what was asked (stored, or found).
    Ok,
    /// A guarded write refused as older than the stored timestamp.
    Stale,
    /// A read of a key that has no value.
    Miss,
    /// Anything else: an unexpected status, a server error reply.
    Error,
}

/// Why a connection must be dropped.
#[derive(Debug)]
pub struct FramingError(pub String);

/// One measured operation on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `PUT /keys/{key}` with `X-Write-Timestamp`: tidemark's guarded write.
    HttpPut,
    /// `GET /keys/{key}`.
    HttpGet,
    /// Tyrant `put` (`C8 10`): unguarded, the server stamps the write.
    TyrantPut,
    /// Tyrant `ext tsput`: guarded by the value's leading 16 timestamp digits.
    TyrantGuardedPut,
    /// Tyrant `get` (`C8 30`).
    TyrantGet,
    /// Redis `SET key value`.
    RedisSet,
    /// Redis `GET key`.
    RedisGet,
    /// Redis `EVALSHA` of [`GUARD_SCRIPT`]: the timestamp guard done in Lua.
    RedisGuardedSet,
}

/// Digits of the microsecond timestamp at the head of a `tsput` value (tidemark's
/// default `--tyrant-ts-digits`).
pub const TS_DIGITS: usize = 16;

/// The Redis equivalent of tidemark's guard, the way Redis users write it: the
/// timestamp lives in a second key beside the value and a write older than (or as old
/// as) the stored one is refused. Returns 1 when stored, 0 when refused as stale.
/// Lua numbers are doubles, exact up to 2^53 µs (year 2255).
pub const GUARD_SCRIPT: &str = "\
local cur = redis.call('GET', KEYS[2])
if cur and tonumber(cur) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
return 1";

/// Suffix of the Redis key holding a key's timestamp (`KEYS[2]` of the script).
const REDIS_TS_SUFFIX: &[u8] = b":ts";

/// Largest reply accepted: values are at most a few KiB here, so anything far larger
/// means the framing went wrong, and we stop rather than buffer without bound.
const MAX_REPLY_BYTES: usize = 16 << 20;

/// Everything a request needs that changes from one request to the next.
pub struct RequestParts<'a> {
    pub key: &'a [u8],
    /// Write timestamp in µs; ignored by reads and unguarded writes.
    pub timestamp: u64,
    /// Value bytes for writes (for `tsput` the first [`TS_DIGITS`] bytes are
    /// overwritten with the timestamp).
    pub value: &'a [u8],
    /// SHA1 of the loaded [`GUARD_SCRIPT`] (Redis guarded-set only).
    pub script_sha: &'a str,
}

impl Op {
    pub fn is_guarded(self) -> bool {
        matches!(
            self,
            Op::HttpPut | Op::TyrantGuardedPut | Op::RedisGuardedSet
        )
    }

    /// The write used to fill the keyspace before a read run on the same target.
    pub fn prefill_op(self) -> Op {
        match self {
            Op::HttpPut | Op::HttpGet => Op::HttpPut,
            Op::TyrantPut | Op::TyrantGuardedPut | Op::TyrantGet => Op::TyrantPut,
            Op::RedisSet | Op::RedisGet => Op::RedisSet,
            Op::RedisGuardedSet => Op::RedisGuardedSet,
        }
    }

    /// Appends one request to `out`.
    pub fn encode(self, parts: &RequestParts<'_>, out: &mut Vec<u8>) {
        match self {
            Op::HttpPut => http_request(out, "PUT", parts.key, Some(parts)),
            Op::HttpGet => http_request(out, "GET", parts.key, None),
            Op::TyrantPut => client::encode(
                &Request::Put {
                    key: parts.key.to_vec(),
                    value: parts.value.to_vec(),
                },
                out,
            ),
            Op::TyrantGuardedPut => {
                let mut value = parts.value.to_vec();
                stamp_value(&mut value, parts.timestamp);
                client::encode(
                    &Request::Ext {
                        name: b"tsput".to_vec(),
                        // Record lock, as a Tokyo Tyrant client of the Lua guard would
                        // ask for; tidemark serialises writes itself and ignores it.
                        opts: 1,
                        key: parts.key.to_vec(),
                        value,
                    },
                    out,
                )
            }
            Op::TyrantGet => client::encode(
                &Request::Get {
                    key: parts.key.to_vec(),
                },
                out,
            ),
            Op::RedisSet => resp_command(out, &[b"SET", parts.key, parts.value]),
            Op::RedisGet => resp_command(out, &[b"GET", parts.key]),
            Op::RedisGuardedSet => {
                let mut ts_key = parts.key.to_vec();
                ts_key.extend_from_slice(REDIS_TS_SUFFIX);
                let timestamp = parts.timestamp.to_string();
                resp_command(
                    out,
                    &[
                        b"EVALSHA",
                        parts.script_sha.as_bytes(),
                        b"2",
                        parts.key,
                        &ts_key,
                        timestamp.as_bytes(),
                        parts.value,
                    ],
                )
            }
        }
    }

    /// Recognises one whole reply at the start of `buf`: `Ok(None)` = incomplete.
    pub fn decode(self, buf: &[u8]) -> Result<Option<(Outcome, usize)>, FramingError> {
        match self {
            Op::HttpPut | Op::HttpGet => {
                let Some((status, used)) = http_response(buf)? else {
                    return Ok(None);
                };
                let outcome = match (self, status) {
                    (Op::HttpPut, 201 | 204) | (Op::HttpGet, 200) => Outcome::Ok,
                    (Op::HttpPut, 409) => Outcome::Stale,
                    (Op::HttpGet, 404) => Outcome::Miss,
                    _ => Outcome::Error,
                };
                Ok(Some((outcome, used)))
            }
            Op::TyrantPut | Op::TyrantGuardedPut | Op::TyrantGet => {
                let command = match self {
                    Op::TyrantPut => cmd::PUT,
                    Op::TyrantGuardedPut => cmd::EXT,
                    _ => cmd::GET,
                };
                let Some((reply, used)) = client::decode_reply(command, buf)
                    .map_err(|e| FramingError(format!("tyrant reply: {e}")))?
                else {
                    if buf.len() > MAX_REPLY_BYTES {
                        return Err(FramingError("tyrant reply too large".into()));
                    }
                    return Ok(None);
                };
                let outcome = match (self, reply) {
                    (Op::TyrantPut, Reply::Status(0)) => Outcome::Ok,
                    (Op::TyrantGuardedPut | Op::TyrantGet, Reply::Blob(_)) => Outcome::Ok,
                    // tsput answers a bare 01 for every refusal; with strictly increasing
                    // timestamps and well-formed values, stale is the only one expected.
                    (Op::TyrantGuardedPut, Reply::Status(_)) => Outcome::Stale,
                    (Op::TyrantGet, Reply::Status(_)) => Outcome::Miss,
                    _ => Outcome::Error,
                };
                Ok(Some((outcome, used)))
            }
            Op::RedisSet | Op::RedisGet | Op::RedisGuardedSet => {
                let Some((reply, used)) = resp_reply(buf)? else {
                    return Ok(None);
                };
                let outcome = match (self, reply) {
                    (Op::RedisSet, Resp::Simple(b"OK")) => Outcome::Ok,
                    (Op::RedisGet, Resp::Bulk(Some(_))) => Outcome::Ok,
                    (Op::RedisGet, Resp::Bulk(None)) => Outcome::Miss,
                    (Op::RedisGuardedSet, Resp::Integer(1)) => Outcome::Ok,
                    (Op::RedisGuardedSet, Resp::Integer(0)) => Outcome::Stale,
                    _ => Outcome::Error,
                };
                Ok(Some((outcome, used)))
            }
        }
    }
}

/// Writes `timestamp` as the zero-padded decimal head of a `tsput` value.
fn stamp_value(value: &mut Vec<u8>, timestamp: u64) {
    let digits = format!("{timestamp:0width$}", width = TS_DIGITS);
    if value.len() < digits.len() {
        value.resize(digits.len(), b'v');
    }
    value[..digits.len()].copy_from_slice(digits.as_bytes());
}

// ---------------------------------------------------------------------------
// HTTP/1.1 keep-alive

fn http_request(out: &mut Vec<u8>, method: &str, key: &[u8], put: Option<&RequestParts<'_>>) {
    // Keys are generated by the tool from [A-Za-z0-9], so they need no escaping.
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(b" /keys/");
    out.extend_from_slice(key);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: tidemark-bench\r\n");
    if let Some(parts) = put {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "X-Write-Timestamp: {}\r\nContent-Length: {}\r\n",
            parts.timestamp,
            parts.value.len()
        );
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(parts.value);
    } else {
        out.extend_from_slice(b"\r\n");
    }
}

/// One whole HTTP/1.1 response at the start of `buf`: its status and length.
fn http_response(buf: &[u8]) -> Result<Option<(u16, usize)>, FramingError> {
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|at| at + 4) else {
        if buf.len() > 64 << 10 {
            return Err(FramingError("HTTP response head over 64 KiB".into()));
        }
        return Ok(None);
    };
    let head = &buf[..head_len - 4];
    let mut lines = head.split(|&b| b == b'\n').map(trim_cr);
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line)
        .ok_or_else(|| FramingError(format!("bad status line {:?}", lossy(status_line))))?;
    let mut content_length: Option<usize> = None;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(FramingError(format!("bad header line {:?}", lossy(line))));
        };
        let (name, value) = (&line[..colon], trim_ascii(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&n| n <= MAX_REPLY_BYTES)
                .ok_or_else(|| FramingError("bad Content-Length".into()))?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // tidemark always knows its body length; chunked would be a change worth
            // noticing, not something to half-support here.
            return Err(FramingError("Transfer-Encoding not supported".into()));
        }
    }
    let body_len = match (status, content_length) {
        (_, Some(n)) => n,
        // Statuses that never carry a body (RFC 9112 §6.3).
        (100..=199 | 204 | 304, None) => 0,
        (_, None) => return Err(FramingError("response without Content-Length".into())),
    };
    let total = head_len + body_len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((status, total)))
}

fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------
// RESP (Redis serialization protocol, version 2)

fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let _ = write!(out, "*{}\r\n", args.len());
    for arg in args {
        let _ = write!(out, "${}\r\n", arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The reply shapes the measured commands produce.
#[derive(Debug, PartialEq, Eq)]
pub enum Resp<'a> {
    Simple(&'a [u8]),
    Error(&'a [u8]),
    Integer(i64),
    Bulk(Option<&'a [u8]>),
}

/// One whole RESP reply at the start of `buf`.
pub fn resp_reply(buf: &[u8]) -> Result<Option<(Resp<'_>, usize)>, FramingError> {
    let Some(line_end) = find(buf, b"\r\n") else {
        if buf.len() > 64 << 10 {
            return Err(FramingError("RESP line over 64 KiB".into()));
        }
        return Ok(None);
    };
    // A reply line is a type byte, then text, then CRLF; a bare CRLF is no reply.
    let (kind, line) = match (buf.first(), buf.get(1..line_end)) {
        (Some(kind), Some(line)) if line_end > 0 => (*kind, line),
        _ => return Err(FramingError("RESP reply without a type byte".into())),
    };
    let after_line = line_end + 2;
    let parsed = match kind {
        b'+' => Resp::Simple(line),
        b'-' => Resp::Error(line),
        b':' => Resp::Integer(parse_i64(line)?),
        b'$' => {
            let len = parse_i64(line)?;
            if len < 0 {
                return Ok(Some((Resp::Bulk(None), after_line)));
            }
            let len = usize::try_from(len)
                .ok()
                .filter(|&n| n <= MAX_REPLY_BYTES)
                .ok_or_else(|| FramingError("RESP bulk too large".into()))?;
            let end = after_line + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(FramingError("RESP bulk not followed by CRLF".into()));
            }
            return Ok(Some((Resp::Bulk(Some(&buf[after_line..end])), end + 2)));
        }
        other => {
            return Err(FramingError(format!(
                "unexpected RESP reply type {:?}",
                other as char
            )));
        }
    };
    Ok(Some((parsed, after_line)))
}

fn parse_i64(text: &[u8]) -> Result<i64, FramingError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| FramingError(format!("bad RESP integer {:?}", lossy(text))))
}

// ---------------------------------------------------------------------------

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(80)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL_OPS: [Op; 8] = [
        Op::HttpPut,
        Op::HttpGet,
        Op::TyrantPut,
        Op::TyrantGuardedPut,
        Op::TyrantGet,
        Op::RedisSet,
        Op::RedisGet,
        Op::RedisGuardedSet,
    ];

    proptest! {
        // Whatever a server sends, decoding returns (never panics) and never claims
        // more bytes than it was given.
        #[test]
        fn arbitrary_replies_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
            prefix in proptest::sample::select(vec![
                &b""[..], b"HTTP/1.1 200 OK\r\n", b"$", b"+", b":", b"\x00", b"\x00\x00\x00\x00",
            ]),
        ) {
            let mut buf = prefix.to_vec();
            buf.extend_from_slice(&bytes);
            for op in ALL_OPS {
                if let Ok(Some((_, used))) = op.decode(&buf) {
                    prop_assert!(used > 0 && used <= buf.len());
                }
            }
        }
    }

    fn parts<'a>(key: &'a [u8], value: &'a [u8]) -> RequestParts<'a> {
        RequestParts {
            key,
            timestamp: 1_700_000_000_000_123,
            value,
            script_sha: "abc",
        }
    }

    #[test]
    fn http_put_request_shape() {
        let mut out = Vec::new();
        Op::HttpPut.encode(&parts(b"k1", b"hello"), &mut out);
        assert_eq!(
            out,
            b"PUT /keys/k1 HTTP/1.1\r\nHost: tidemark-bench\r\nX-Write-Timestamp: 1700000000000123\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn http_responses_are_framed_and_classified() {
        let created = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nx: y\r\n\r\n";
        assert_eq!(
            Op::HttpPut.decode(created).unwrap().map(|r| r.0),
            Some(Outcome::Ok)
        );
        let stale = b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}HTTP/1.1";
        assert_eq!(
            Op::HttpPut.decode(stale).unwrap(),
            Some((Outcome::Stale, stale.len() - 8))
        );
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            Op::HttpPut.decode(no_content).unwrap(),
            Some((Outcome::Ok, no_content.len()))
        );
        let found = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        for cut in 0..found.len() {
            assert!(Op::HttpGet.decode(&found[..cut]).unwrap().is_none());
        }
        assert_eq!(
            Op::HttpGet.decode(found).unwrap(),
            Some((Outcome::Ok, found.len()))
        );
        let missing = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(
            Op::HttpGet.decode(missing).unwrap().map(|r| r.0),
            Some(Outcome::Miss)
        );
        assert!(Op::HttpGet.decode(b"garbage\r\n\r\n").is_err());
        assert!(Op::HttpGet.decode(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(
            Op::HttpGet
                .decode(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .is_err()
        );
    }

    #[test]
    fn tyrant_round_trip_through_frame() {
        let mut out = Vec::new();
        Op::TyrantGuardedPut.encode(&parts(b"k", b"vv"), &mut out);
        let (req, used) = crate::tyrant::request::decode(&out, &client::Limits::default())
            .unwrap()
            .unwrap();
        assert_eq!(used, out.len());
        match req {
            Request::Ext { name, value, .. } => {
                assert_eq!(name, b"tsput");
                assert_eq!(value, b"1700000000000123");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            Op::TyrantGuardedPut
                .decode(&[0, 0, 0, 0, 2, b'4', b'2'])
                .unwrap(),
            Some((Outcome::Ok, 7))
        );
        assert_eq!(
            Op::TyrantGuardedPut.decode(&[1]).unwrap(),
            Some((Outcome::Stale, 1))
        );
        assert_eq!(
            Op::TyrantGet.decode(&[1]).unwrap(),
            Some((Outcome::Miss, 1))
        );
        assert_eq!(Op::TyrantPut.decode(&[]).unwrap(), None);
        assert_eq!(
            Op::TyrantPut.decode(&[1]).unwrap(),
            Some((Outcome::Error, 1))
        );
    }

    #[test]
    fn resp_commands_and_replies() {
        let mut out = Vec::new();
        Op::RedisGet.encode(&parts(b"k1", b""), &mut out);
        assert_eq!(out, b"*2\r\n$3\r\nGET\r\n$2\r\nk1\r\n");
        out.clear();
        Op::RedisGuardedSet.encode(&parts(b"k", b"v"), &mut out);
        assert_eq!(
            out,
            b"*7\r\n$7\r\nEVALSHA\r\n$3\r\nabc\r\n$1\r\n2\r\n$1\r\nk\r\n$4\r\nk:ts\r\n$16\r\n1700000000000123\r\n$1\r\nv\r\n"
        );
        assert_eq!(
            Op::RedisSet.decode(b"+OK\r\n").unwrap(),
            Some((Outcome::Ok, 5))
        );
        assert_eq!(
            Op::RedisGet.decode(b"$-1\r\n").unwrap(),
            Some((Outcome::Miss, 5))
        );
        assert_eq!(Op::RedisGet.decode(b"$3\r\nab").unwrap(), None);
        assert_eq!(
            Op::RedisGet.decode(b"$3\r\nabc\r\n").unwrap(),
            Some((Outcome::Ok, 9))
        );
        assert_eq!(
            Op::RedisGuardedSet.decode(b":0\r\n").unwrap(),
            Some((Outcome::Stale, 4))
        );
        assert_eq!(
            Op::RedisGuardedSet.decode(b"-NOSCRIPT x\r\n").unwrap(),
            Some((Outcome::Error, 13))
        );
        assert!(Op::RedisGet.decode(b"$3\r\nabcXY").is_err());
        assert!(Op::RedisGet.decode(b"\r\n").is_err());
        assert!(Op::RedisGet.decode(b"$-").unwrap().is_none());
        assert!(Op::RedisGet.decode(b"").unwrap().is_none());
        assert!(Op::RedisGet.decode(b"*1\r\n").is_err());
    }
}
