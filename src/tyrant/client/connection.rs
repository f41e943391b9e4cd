//! One client connection to a Tyrant server (ttserver or tidemark's port), for
//! `tidemark migrate`: requests written with [`encode`], replies read with
//! [`decode_reply`], every wait bounded by one I/O timeout.
//!
//! Requests can be pipelined ([`Connection::pipeline`]): the protocol answers in
//! order on one connection, so a batch of `iternext` costs one round trip.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::{LogItem, Reply, Request, decode_log_item, decode_reply, encode};
use crate::tyrant::wire::FrameError;

const READ_CHUNK: usize = 64 * 1024;

/// Why a call to the server failed.
#[derive(Debug)]
pub enum ConnectionError {
    /// Connecting, writing or reading failed.
    Io(std::io::Error),
    /// Nothing came within the I/O timeout.
    TimedOut(Duration),
    /// The server closed the connection before the whole reply arrived.
    Closed,
    /// The reply cannot be parsed for the command sent.
    Malformed(FrameError),
    /// A reply of a shape the command never answers with.
    Unexpected(&'static str, Reply),
}

impl std::fmt::Display for ConnectionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionError::Io(e) => write!(f, "{e}"),
            ConnectionError::TimedOut(wait) => write!(f, "no answer within {wait:?}"),
            ConnectionError::Closed => f.write_str("the server closed the connection"),
            ConnectionError::Malformed(e) => write!(f, "unreadable reply: {e}"),
            ConnectionError::Unexpected(command, reply) => {
                write!(f, "unexpected reply to {command}: {reply:?}")
            }
        }
    }
}

impl std::error::Error for ConnectionError {}

/// A connection to one Tyrant server.
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    io_timeout: Duration,
}

impl Connection {
    /// Connect to `addr` (`HOST:PORT`) within `io_timeout`, which then bounds every
    /// write and every wait for reply bytes.
    pub async fn connect(addr: &str, io_timeout: Duration) -> Result<Self, ConnectionError> {
        let stream = timeout(io_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectionError::TimedOut(io_timeout))?
            .map_err(ConnectionError::Io)?;
        stream.set_nodelay(true).map_err(ConnectionError::Io)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            io_timeout,
        })
    }

    /// Send every request in one write, then read their replies in order.
    pub async fn pipeline(&mut self, requests: &[Request]) -> Result<Vec<Reply>, ConnectionError> {
        let mut bytes = Vec::new();
        for request in requests {
            encode(request, &mut bytes);
        }
        timeout(self.io_timeout, self.stream.write_all(&bytes))
            .await
            .map_err(|_| ConnectionError::TimedOut(self.io_timeout))?
            .map_err(ConnectionError::Io)?;
        let mut replies = Vec::with_capacity(requests.len());
        for request in requests {
            replies.push(self.reply(request.command_byte()).await?);
        }
        Ok(replies)
    }

    /// Send one request and read its reply.
    pub async fn call(&mut self, request: Request) -> Result<Reply, ConnectionError> {
        let mut replies = self.pipeline(std::slice::from_ref(&request)).await?;
        replies.pop().ok_or(ConnectionError::Closed)
    }

    async fn reply(&mut self, command: u8) -> Result<Reply, ConnectionError> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if let Some((reply, used)) =
                decode_reply(command, &self.buf).map_err(ConnectionError::Malformed)?
            {
                self.buf.drain(..used);
                return Ok(reply);
            }
            let n = timeout(self.io_timeout, self.stream.read(&mut chunk))
                .await
                .map_err(|_| ConnectionError::TimedOut(self.io_timeout))?
                .map_err(ConnectionError::Io)?;
            if n == 0 {
                return Err(ConnectionError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `iterinit`: start (or rewind) the iteration. `false` when the server refuses.
    pub async fn iterinit(&mut self) -> Result<bool, ConnectionError> {
        match self.call(Request::IterInit).await? {
            Reply::Status(status) => Ok(status == 0),
            other => Err(ConnectionError::Unexpected("iterinit", other)),
        }
    }

    /// Up to `max` next keys of the iteration (`iternext`, pipelined). Fewer than
    /// `max` means the iteration is at its end.
    pub async fn iternext_batch(&mut self, max: usize) -> Result<Vec<Vec<u8>>, ConnectionError> {
        let requests = vec![Request::IterNext; max];
        let mut keys = Vec::with_capacity(max);
        let mut ended = false;
        for reply in self.pipeline(&requests).await? {
            match reply {
                Reply::Blob(key) if !ended => keys.push(key),
                // Once at the end, iternext keeps answering 01 (and a key after
                // that would belong to someone else's iterinit on ttserver).
                Reply::Blob(_) => {}
                Reply::Status(_) => ended = true,
                other => return Err(ConnectionError::Unexpected("iternext", other)),
            }
        }
        Ok(keys)
    }

    /// `mget`: the records found among `keys`, in request order (missing keys left
    /// out); `None` on a failure status (tidemark answers one instead of a reply over
    /// its reply budget; fetch fewer keys, or one at a time with [`Connection::get`]).
    pub async fn mget(
        &mut self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, ConnectionError> {
        match self.call(Request::Mget { keys }).await? {
            Reply::KvList(records) => Ok(Some(records)),
            Reply::Status(_) => Ok(None),
            other => Err(ConnectionError::Unexpected("mget", other)),
        }
    }

    /// `repl` (PROTOCOL.md §7): ask for the update log from `timestamp` (µs, the
    /// master's clock, at least 1) as slave `server_id`; the master's server id.
    /// Afterwards the connection carries only the feed: read it with
    /// [`Connection::next_log_item`].
    pub async fn repl(&mut self, timestamp: u64, server_id: u32) -> Result<u32, ConnectionError> {
        match self
            .call(Request::Repl {
                timestamp,
                server_id,
            })
            .await?
        {
            Reply::U32(master) => Ok(master),
            other => Err(ConnectionError::Unexpected("repl", other)),
        }
    }

    /// The next item of a `repl` feed. Waits at most the I/O timeout (a master sends
    /// a keep-alive every second when idle). Cancel-safe: bytes already read stay
    /// buffered for the next call.
    pub async fn next_log_item(&mut self) -> Result<LogItem, ConnectionError> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            if let Some((item, used)) =
                decode_log_item(&self.buf).map_err(ConnectionError::Malformed)?
            {
                self.buf.drain(..used);
                return Ok(item);
            }
            let n = timeout(self.io_timeout, self.stream.read(&mut chunk))
                .await
                .map_err(|_| ConnectionError::TimedOut(self.io_timeout))?
                .map_err(ConnectionError::Io)?;
            if n == 0 {
                return Err(ConnectionError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// `stat`: the server's `name value` lines.
    pub async fn stat(&mut self) -> Result<Vec<u8>, ConnectionError> {
        match self.call(Request::Stat).await? {
            Reply::Blob(text) => Ok(text),
            other => Err(ConnectionError::Unexpected("stat", other)),
        }
    }

    /// `get`: the value, or `None` when the key is missing.
    pub async fn get(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, ConnectionError> {
        match self.call(Request::Get { key }).await? {
            Reply::Blob(value) => Ok(Some(value)),
            Reply::Status(_) => Ok(None),
            other => Err(ConnectionError::Unexpected("get", other)),
        }
    }
}
