//! A minimal Tokyo Tyrant client for the black-box tests: requests are built with
//! `tidemark::tyrant::client::encode` and replies parsed with `decode_reply`, over a
//! plain loopback socket. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use tidemark::tyrant::client::{self, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Longest wait for one reply before a test fails.
pub const REPLY_WAIT: Duration = Duration::from_secs(5);

/// What reading from a connection found.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The server closed the connection (EOF or reset) without sending anything more.
    Closed,
    /// The connection is still open and nothing arrived in the time allowed.
    Open,
    /// Bytes arrived.
    Sent(Vec<u8>),
}

pub struct Tyrant {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Tyrant {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = timeout(REPLY_WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Write raw bytes (a malformed or partial frame, several frames at once).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Write one request without waiting for its reply.
    pub async fn send(&mut self, request: &Request) {
        let mut bytes = Vec::new();
        client::encode(request, &mut bytes);
        self.send_raw(&bytes).await;
    }

    /// Read the reply to command byte `command`, failing the test if it does not come.
    pub async fn reply(&mut self, command: u8) -> Reply {
        let deadline = Instant::now() + REPLY_WAIT;
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            match client::decode_reply(command, &self.buf) {
                Ok(Some((reply, used))) => {
                    self.buf.drain(..used);
                    return reply;
                }
                Ok(None) => {}
                Err(e) => panic!("unparsable reply to {command:#04x}: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    panic!("connection closed while waiting for a reply to {command:#04x}")
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => panic!("no reply to {command:#04x} within {REPLY_WAIT:?}"),
            }
        }
    }

    /// Send `request` and read its reply.
    pub async fn call(&mut self, request: Request) -> Reply {
        let command = request.command_byte();
        self.send(&request).await;
        self.reply(command).await
    }

    /// Wait up to `wait` for the server to close the connection or send something.
    pub async fn outcome_within(&mut self, wait: Duration) -> Outcome {
        if !self.buf.is_empty() {
            return Outcome::Sent(std::mem::take(&mut self.buf));
        }
        let mut chunk = [0u8; 4096];
        match timeout(wait, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => Outcome::Closed,
            Ok(Ok(n)) => Outcome::Sent(chunk[..n].to_vec()),
            Err(_) => Outcome::Open,
        }
    }

    /// Wait up to `wait` for the server to close the connection, ignoring any bytes it
    /// sends first; true if it closed.
    pub async fn closes_within(&mut self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.outcome_within(left).await {
                Outcome::Closed => return true,
                Outcome::Open => return false,
                Outcome::Sent(_) if Instant::now() >= deadline => return false,
                Outcome::Sent(_) => {}
            }
        }
    }

    // ---- the commands the tests use most, with the replies they expect ----

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> Reply {
        self.call(Request::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .await
    }

    pub async fn putkeep(&mut self, key: &[u8], value: &[u8]) -> Reply {
        self.call(Request::PutKeep {
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .await
    }

    /// putnr has no reply; a following `get` on the same connection sees it.
    pub async fn putnr(&mut self, key: &[u8], value: &[u8]) {
        self.send(&Request::PutNr {
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .await;
    }

    pub async fn out(&mut self, key: &[u8]) -> Reply {
        self.call(Request::Out { key: key.to_vec() }).await
    }

    /// The live value, or None on a `01` reply.
    pub async fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        match self.call(Request::Get { key: key.to_vec() }).await {
            Reply::Blob(value) => Some(value),
            Reply::Status(1) => None,
            other => panic!("unexpected get reply {other:?}"),
        }
    }

    pub async fn ext(&mut self, name: &[u8], key: &[u8], value: &[u8]) -> Reply {
        self.call(Request::Ext {
            name: name.to_vec(),
            opts: 0,
            key: key.to_vec(),
            value: value.to_vec(),
        })
        .await
    }

    pub async fn rnum(&mut self) -> u64 {
        match self.call(Request::Rnum).await {
            Reply::U64(n) => n,
            other => panic!("unexpected rnum reply {other:?}"),
        }
    }

    pub async fn size(&mut self) -> u64 {
        match self.call(Request::Size).await {
            Reply::U64(n) => n,
            other => panic!("unexpected size reply {other:?}"),
        }
    }

    /// The stat text as (name, value) lines, in order.
    pub async fn stat(&mut self) -> Vec<(String, String)> {
        let Reply::Blob(text) = self.call(Request::Stat).await else {
            panic!("stat did not answer with text");
        };
        let text = String::from_utf8(text).expect("stat text is UTF-8");
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "stat lines end in LF"
        );
        text.lines()
            .map(|line| {
                let (name, value) = line
                    .split_once('\t')
                    .unwrap_or_else(|| panic!("stat line without a tab: {line:?}"));
                (name.to_string(), value.to_string())
            })
            .collect()
    }

    /// iterinit then iternext until `01` (at most `max` keys).
    pub async fn all_keys(&mut self, max: usize) -> Vec<Vec<u8>> {
        assert_eq!(self.call(Request::IterInit).await, Reply::Status(0));
        let mut keys = Vec::new();
        for _ in 0..=max {
            match self.call(Request::IterNext).await {
                Reply::Blob(key) => keys.push(key),
                Reply::Status(1) => return keys,
                other => panic!("unexpected iternext reply {other:?}"),
            }
        }
        panic!("iteration did not end within {max} keys");
    }
}

/// `ext` success: `00 rsiz result`.
pub fn ext_ok(result: &str) -> Reply {
    Reply::Blob(result.as_bytes().to_vec())
}

/// The reply byte of a failure.
pub const FAIL: Reply = Reply::Status(1);
/// The reply of a status-only success.
pub const OK: Reply = Reply::Status(0);
