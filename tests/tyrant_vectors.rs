//! Replays the golden Tokyo Tyrant vectors (recorded from ttserver 1.1.41, copied from
//! the protocol reference into tests/data/tyrant/vectors.jsonl) against tidemark's
//! Tyrant port, comparing reply bytes and whether the connection closes.
//!
//! Every vector is replayed: the binary protocol, the memcached and HTTP text dialects
//! ttserver serves on the same port, and dialect detection. Allowed differences are
//! listed in [`allowed_difference`], each with its reason.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use tidemark::tyrant::client::{self, Limits, Reply, Request};
use tidemark::tyrant::request::decode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const VECTORS: &str = include_str!("data/tyrant/vectors.jsonl");

#[derive(Debug, Clone, Deserialize)]
struct Vector {
    name: String,
    protocol: String,
    #[serde(default)]
    setup: Vec<String>,
    request: String,
    response: String,
    #[serde(default)]
    closes: bool,
    #[serde(default)]
    response_varies: bool,
    #[serde(default)]
    client_shutdown: bool,
    #[serde(default)]
    quirk: bool,
}

/// How a vector's reply is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judge {
    /// Byte-identical reply and the same close behaviour.
    Exact,
    /// Same status and shape; elements compared as a set (see reasons below).
    Unordered,
    /// The bytes vary run to run in ttserver too (stat, size, misc error): same status
    /// byte and a well-formed reply.
    Structure,
    /// We deliberately close instead of copying a ttserver accident.
    CloseInstead,
    /// A shared database has no database file to copy: the command fails (`01`).
    FailsOnSharedDatabase,
}

/// Every place tidemark may differ from the recording, with the reason.
fn allowed_difference(v: &Vector) -> Judge {
    match v.name.as_str() {
        // tidemark iterates in key order; ttserver's hash database iterates in
        // file order (insertion order on a fresh file). PROTOCOL.md §4.10 and the
        // issue allow comparing iteration and fwmkeys results as sets.
        "iternext_first"
        | "iternext_second"
        | "iternext_third"
        | "fwmkeys_does_not_move_iterator" => Judge::Unordered,
        n if n.starts_with("fwmkeys_") || n.starts_with("misc_regex") => Judge::Unordered,
        // Leftover-bytes quirk (PROTOCOL.md §9): ttserver parses bytes buffered after
        // an unknown command as the next request. A reimplementation closes at once.
        "unknown_command_then_pipelined_get" => Judge::CloseInstead,
        // On the PostgreSQL engine `copy` has no file to snapshot (README, Tyrant port
        // differences): it fails like a copy to an unwritable path.
        n if n.starts_with("copy_") && common::engine() == common::Engine::Postgres => {
            Judge::FailsOnSharedDatabase
        }
        _ if v.response_varies => Judge::Structure,
        _ => Judge::Exact,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("vectors are hex"))
        .collect()
}

/// The binary requests in `bytes`, in order (stops at the first undecodable one).
fn requests(bytes: &[u8]) -> Vec<Request> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((req, used))) = decode(&bytes[at..], &Limits::REFERENCE) {
        out.push(req);
        at += used;
    }
    out
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Conn {
    async fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// Read until `deadline`, EOF, or `enough(buf)` holds.
    async fn read_until(&mut self, deadline: Instant, enough: impl Fn(&[u8]) -> bool) {
        let mut chunk = [0u8; 65536];
        while !self.closed && !enough(&self.buf) {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => self.closed = true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return,
            }
        }
    }

    /// Read one framed reply to `cmd` and return its bytes.
    async fn framed(&mut self, cmd: u8) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(5);
        self.read_until(deadline, |b| {
            !matches!(client::decode_reply(cmd, b), Ok(None))
        })
        .await;
        let used = match client::decode_reply(cmd, &self.buf) {
            Ok(Some((_, used))) => used,
            _ => self.buf.len(),
        };
        self.buf.drain(..used).collect()
    }
}

/// Send `request` after `setup` on a fresh connection; return (reply bytes, closed).
async fn play(addr: SocketAddr, v: &Vector) -> (Vec<u8>, bool) {
    let mut conn = Conn::open(addr).await;
    for item in &v.setup {
        let bytes = hex(item);
        conn.stream.write_all(&bytes).await.expect("send setup");
        if is_text(&bytes) {
            let deadline = Instant::now() + Duration::from_secs(5);
            conn.read_until(deadline, text_reply_complete).await;
            conn.buf.clear();
        }
        for req in requests(&bytes) {
            if !matches!(req, Request::PutNr { .. }) {
                conn.framed(req.command_byte()).await;
            }
        }
        assert!(!conn.closed, "{}: server closed during setup", v.name);
    }
    let request = hex(&v.request);
    conn.stream.write_all(&request).await.expect("send request");
    if v.client_shutdown {
        conn.stream.shutdown().await.expect("half-close");
    }
    let mut got = Vec::new();
    if is_text(&request) {
        // A text reply has no length prefix: read what the recording holds (or, where
        // its bytes vary, up to the reply's end); the quiet window below catches extras.
        let expected = hex(&v.response);
        let deadline = Instant::now() + Duration::from_secs(5);
        conn.read_until(deadline, |b| {
            if v.response_varies {
                text_reply_complete(b)
            } else {
                !expected.is_empty() && b.len() >= expected.len()
            }
        })
        .await;
    }
    for req in requests(&request) {
        if !matches!(req, Request::PutNr { .. }) {
            got.extend(conn.framed(req.command_byte()).await);
        }
    }
    // Then watch for extra bytes or a close: long when a close is expected, short
    // otherwise (a server that should stay open simply stays quiet).
    let quiet = if v.closes {
        Duration::from_secs(3)
    } else {
        Duration::from_millis(60)
    };
    conn.read_until(Instant::now() + quiet, |_| false).await;
    got.append(&mut conn.buf);
    (got, conn.closed)
}

/// Whether `bytes` start a text request (memcached or HTTP) rather than a binary one.
fn is_text(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| *b != 0xC8)
}

/// Whether `buf` holds a whole text reply: an HTTP response with its head and
/// `Content-Length` body, or memcached lines ending in `END`, a number or a status word.
fn text_reply_complete(buf: &[u8]) -> bool {
    if buf.starts_with(b"HTTP/") {
        let Some(head) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head_text = String::from_utf8_lossy(&buf[..head]).to_ascii_lowercase();
        let length = head_text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        return buf.len() >= head + 4 + length;
    }
    if buf.starts_with(b"STAT ") || buf.starts_with(b"VALUE ") {
        return buf.ends_with(b"END\r\n");
    }
    buf.ends_with(b"\r\n")
}

/// A text reply's shape: memcached `STAT <name>` per line, an HTTP status line and
/// header names; the values, which vary run to run, left out.
fn text_shape(reply: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(reply)
        .split("\r\n")
        .map(|line| match line.split_once(": ") {
            Some((name, _)) => name.to_string(),
            None if line.starts_with("STAT ") => {
                line.split(' ').take(2).collect::<Vec<_>>().join(" ")
            }
            None => line.to_string(),
        })
        .collect()
}

/// All byte strings written during setup: keys, values, misc arguments.
fn setup_strings(v: &Vector) -> HashSet<Vec<u8>> {
    let mut out = HashSet::new();
    for item in &v.setup {
        for req in requests(&hex(item)) {
            match req {
                Request::Put { key, value } | Request::PutNr { key, value } => {
                    out.insert(key);
                    out.insert(value);
                }
                Request::Misc { args, .. } => out.extend(args),
                _ => {}
            }
        }
    }
    out
}

fn judge(v: &Vector, got: &[u8], closed: bool) -> Result<(), String> {
    let expected = hex(&v.response);
    let request = hex(&v.request);
    let cmd = requests(&request).first().map(|r| r.command_byte());
    match allowed_difference(v) {
        Judge::Exact => {
            if got != expected.as_slice() || closed != v.closes {
                return Err(format!(
                    "expected {} (closes {}), got {} (closes {closed})",
                    v.response,
                    v.closes,
                    to_hex(got)
                ));
            }
        }
        Judge::CloseInstead => {
            if !closed {
                return Err("expected tidemark to close the connection".into());
            }
        }
        Judge::FailsOnSharedDatabase => {
            if got != [0x01] || closed != v.closes {
                return Err(format!(
                    "expected the failure status 01, got {}",
                    to_hex(got)
                ));
            }
        }
        Judge::Structure if is_text(&request) => {
            if text_shape(got) != text_shape(&expected) || closed != v.closes {
                return Err(format!(
                    "expected the shape {:?}, got {:?} (closes {closed})",
                    text_shape(&expected),
                    text_shape(got)
                ));
            }
        }
        Judge::Structure => {
            let cmd = cmd.ok_or("not a binary request")?;
            let ok = got.first() == expected.first()
                && matches!(client::decode_reply(cmd, got), Ok(Some((_, used))) if used == got.len());
            if !ok || closed != v.closes {
                return Err(format!("malformed or different status: {}", to_hex(got)));
            }
        }
        Judge::Unordered => {
            let cmd = cmd.ok_or("not a binary request")?;
            let parse = |b: &[u8]| match client::decode_reply(cmd, b) {
                Ok(Some((reply, used))) if used == b.len() => Ok(reply),
                other => Err(format!("unparsable reply {}: {other:?}", to_hex(b))),
            };
            let (want, have) = (parse(&expected)?, parse(got)?);
            let universe = setup_strings(v);
            let same = match (&want, &have) {
                (Reply::Blob(_), Reply::Blob(key)) => universe.contains(key),
                (Reply::List(w), Reply::List(h)) => {
                    let mut ws = w.clone();
                    let mut hs = h.clone();
                    ws.sort();
                    hs.sort();
                    ws == hs || (w.len() == h.len() && h.iter().all(|item| universe.contains(item)))
                }
                (w, h) => w == h,
            };
            if !same || closed != v.closes {
                return Err(format!("expected {want:?} as a set, got {have:?}"));
            }
        }
    }
    Ok(())
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_replays_byte_identically_or_with_a_listed_difference() {
    let vectors: Vec<Vector> = VECTORS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("vector parses"))
        .collect();
    assert_eq!(vectors.len(), 193, "the vector file lost or gained vectors");
    for (protocol, count) in [
        ("binary", 144),
        ("memcached", 26),
        ("http", 20),
        ("detect", 3),
    ] {
        let found = vectors.iter().filter(|v| v.protocol == protocol).count();
        assert_eq!(found, count, "{protocol} vectors");
    }
    assert!(
        vectors.iter().filter(|v| v.quirk).count() >= 2,
        "quirk vectors are part of the replay"
    );

    // Vectors share nothing but the store (each starts with vanish), so run them on
    // four servers at once, sequentially within each.
    const SERVERS: usize = 4;
    let mut servers = Vec::new();
    for _ in 0..SERVERS {
        servers.push(common::TestServer::start().await);
    }
    let mut lanes = Vec::new();
    for (lane, server) in servers.iter().enumerate() {
        let addr = server.tyrant;
        let mine: Vec<Vector> = vectors
            .iter()
            .enumerate()
            .filter(|(i, _)| i % SERVERS == lane)
            .map(|(_, v)| v.clone())
            .collect();
        lanes.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for v in &mine {
                let (got, closed) = play(addr, v).await;
                if let Err(why) = judge(v, &got, closed) {
                    failures.push(format!("{}: {why}", v.name));
                }
            }
            (mine.len(), failures)
        }));
    }
    let mut replayed = 0;
    let mut failures = Vec::new();
    for lane in lanes {
        let (n, f) = lane.await.expect("lane");
        replayed += n;
        failures.extend(f);
    }
    for server in servers {
        server.stop().await;
    }
    assert_eq!(replayed, vectors.len());
    assert!(
        failures.is_empty(),
        "{} of {replayed} vectors failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
