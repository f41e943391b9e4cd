//! The client side of the protocol, for the benchmark, `tidemark migrate`, the tests
//! and the fuzz targets: [`encode`] writes a [`Request`] and [`decode_reply`] reads its
//! [`Reply`]; [`Connection`] does both over a socket. The server never calls this
//! module.
//!
//! Both follow the [command table](super::command): a request's layout comes from
//! its row's fields (written by [`Request`] itself, the inverse of how the server
//! reads it), a reply's from its row's [`ReplyShape`].

use super::command::{Command, ReplyShape};
use super::request::decode;
use super::wire::{FrameError, REPLY_COUNT, REPLY_LEN, Reader, Stop, malformed, parse};

mod connection;

pub use super::command::cmd;
pub use super::request::Request;
pub use super::wire::{Limits, MAGIC, double_from_wire, double_to_wire};
pub use connection::{Connection, ConnectionError};

/// Appends the wire form of `req` to `out`: the exact inverse of
/// [`decode`](super::request::decode).
///
/// It writes what it is given, so a request `decode` would reject (a negative
/// width, a key over the limits) encodes to a frame a server rejects. A byte
/// string longer than `i32::MAX` cannot be expressed at all; its length is
/// written as `FF FF FF FF`, which every reader treats as negative.
pub fn encode(req: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(&[MAGIC, req.command_byte()]);
    req.write_fields(out);
}

/// One reply as read by a client, for the command that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A reply that is just a status: `00` for status-only commands (put,
    /// out, sync, ...), or any non-zero status, which for every command is
    /// the whole failure reply (for mget and misc the 4-byte count that
    /// follows it has been consumed too).
    Status(u8),
    /// `00 len bytes`: get, iternext, ext, stat.
    Blob(Vec<u8>),
    /// vsiz's value size; also repl's first 4 bytes (the master's server id,
    /// sent without a status byte).
    U32(u32),
    /// addint's new value.
    I32(i32),
    /// rnum and size.
    U64(u64),
    /// adddouble's result in wire form; see [`double_from_wire`].
    Double { integ: i64, fract: i64 },
    /// mget's records, in reply order.
    KvList(Vec<(Vec<u8>, Vec<u8>)>),
    /// fwmkeys keys or misc result elements.
    List(Vec<Vec<u8>>),
    /// putnr: the server sends nothing, so nothing is consumed.
    Silent,
}

/// Decodes the reply to command byte `cmd` from the start of `buf`, with the
/// same contract as [`decode`](super::request::decode): `Ok(None)` means read
/// more. Lengths and counts are read as signed like the C client does (negative
/// is [`FrameError::Malformed`]); nothing is copied out before the whole reply
/// is buffered. For repl only the initial server id is decoded, not the
/// update stream that follows it.
pub fn decode_reply(cmd: u8, buf: &[u8]) -> Result<Option<(Reply, usize)>, FrameError> {
    parse(buf, |r| {
        let command = Command::from_byte(cmd).ok_or(FrameError::UnknownCommand(cmd))?;
        reply(command.reply(), r)
    })
}

fn reply(shape: ReplyShape, r: &mut Reader<'_>) -> Result<Reply, Stop> {
    match shape {
        ReplyShape::Silent => return Ok(Reply::Silent),
        ReplyShape::ServerId => return Ok(Reply::U32(r.u32()?)),
        _ => {}
    }
    let status = r.u8()?;
    if status != 0 {
        if shape.failure_has_count() {
            // The count after a failure status carries no information, but
            // it is part of the reply and must not be left in the stream.
            r.u32()?;
        }
        return Ok(Reply::Status(status));
    }
    let reply = match shape {
        ReplyShape::Blob => {
            let n = r.len(&REPLY_LEN, usize::MAX)?;
            Reply::Blob(r.take(n)?.to_vec())
        }
        ReplyShape::U32 => Reply::U32(r.u32()?),
        ReplyShape::I32 => Reply::I32(r.i32()?),
        ReplyShape::Double => {
            let integ = r.i64()?;
            let fract = r.i64()?;
            Reply::Double { integ, fract }
        }
        ReplyShape::U64 => Reply::U64(r.u64()?),
        ReplyShape::KvList => {
            let count = r.len(&REPLY_COUNT, usize::MAX)?;
            r.look_ahead(|r| {
                for _ in 0..count {
                    let ksiz = r.len(&REPLY_LEN, usize::MAX)?;
                    let vsiz = r.len(&REPLY_LEN, usize::MAX)?;
                    r.skip(ksiz)?;
                    r.skip(vsiz)?;
                }
                Ok(())
            })?;
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let ksiz = r.len(&REPLY_LEN, usize::MAX)?;
                let vsiz = r.len(&REPLY_LEN, usize::MAX)?;
                let key = r.take(ksiz)?.to_vec();
                records.push((key, r.take(vsiz)?.to_vec()));
            }
            Reply::KvList(records)
        }
        ReplyShape::List | ReplyShape::MiscList => {
            let count = r.len(&REPLY_COUNT, usize::MAX)?;
            Reply::List(r.items(count, &REPLY_LEN, usize::MAX)?)
        }
        ReplyShape::Status | ReplyShape::Silent | ReplyShape::ServerId => Reply::Status(0),
    };
    Ok(reply)
}

/// First byte of an update in a `repl` feed (PROTOCOL.md §7).
pub const LOG_UPDATE: u8 = 0xC9;
/// A `repl` feed's keep-alive byte, sent about once a second while the master idles.
pub const LOG_KEEP_ALIVE: u8 = 0xCA;

/// One item of a master's `repl` feed, after the 4-byte server id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogItem {
    /// `CA`: nothing new.
    KeepAlive,
    /// `C9 ts:u64 origin_sid:u32 len:u32 body`: one logged update.
    Update(LogRecord),
}

/// One update-log record: the binary request that modified the master, and its
/// status byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the master logged it, µs since the Unix epoch (the master's clock).
    pub timestamp: u64,
    /// The server the update originated from.
    pub origin_sid: u32,
    /// The logged request followed by its status byte (0 = it succeeded).
    pub body: Vec<u8>,
}

impl LogRecord {
    /// The logged request and its status byte; an error when the body is not one
    /// whole binary request followed by exactly one status byte.
    pub fn request(&self) -> Result<(Request, u8), FrameError> {
        match decode(&self.body, &super::wire::Limits::REFERENCE)? {
            Some((request, used)) if self.body.len() == used + 1 => Ok((request, self.body[used])),
            _ => Err(FrameError::Malformed(
                "a log record body is one request and one status byte",
            )),
        }
    }

    /// The wire form of a log record (for tests and test servers).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(LOG_UPDATE);
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.origin_sid.to_be_bytes());
        super::wire::put_len(out, self.body.len());
        out.extend_from_slice(&self.body);
    }
}

/// Decodes one [`LogItem`] from the start of `buf`, with the contract of
/// [`decode_reply`]: `Ok(None)` means read more; a body longer than the protocol's
/// 256 MiB value cap, or an unknown leading byte, is malformed.
pub fn decode_log_item(buf: &[u8]) -> Result<Option<(LogItem, usize)>, FrameError> {
    parse(buf, |r| match r.u8()? {
        LOG_KEEP_ALIVE => Ok(LogItem::KeepAlive),
        LOG_UPDATE => {
            let timestamp = r.u64()?;
            let origin_sid = r.u32()?;
            let n = r.len(
                &REPLY_LEN,
                super::wire::Limits::REFERENCE.max_value_bytes + 64,
            )?;
            Ok(LogItem::Update(LogRecord {
                timestamp,
                origin_sid,
                body: r.take(n)?.to_vec(),
            }))
        }
        _ => Err(malformed("a repl feed item starts with C9 or CA")),
    })
}

#[cfg(test)]
mod tests;
