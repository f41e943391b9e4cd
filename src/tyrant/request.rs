//! The server side of a request: bytes in, a [`Request`] out.
//!
//! # Decoding is two-step, with a length cap
//!
//! A frame is checked for completeness before anything is parsed out of it.
//! [`decode`] first walks the frame's fixed header and every length/count
//! field, checking each one against [`Limits`] as soon as its four bytes are
//! buffered, and answers `Ok(None)` ("read more") if any announced byte is
//! still missing. Only once every byte the frame announces is actually in the
//! buffer are the fields copied out. So a hostile length prefix (a put header
//! claiming a 2 GiB value, an mget claiming a million keys) is rejected as
//! soon as that header arrives, and never makes this module allocate what it
//! claims: what gets allocated is bounded by the bytes already received.
//!
//! The caller still owns its read buffer. Within the default limits one mget
//! or misc frame may legitimately be large (count × (4 + item length)), so a
//! connection should also cap how far it lets its buffer grow while
//! `decode` keeps answering `Ok(None)`.
//!
//! Unlike `ttserver`, a rejected frame is final: the reference parses bytes
//! left in its buffer after a bad header as a new request (the "leftover
//! bytes" difference in `docs/tyrant-protocol.md`); here every bad header is an
//! error and the connection is expected to be closed without a reply.
//!
//! Each command's fields come from its row in the [command table](super::command);
//! how each kind of field is read (and, for the client, written) is in
//! [`layout`](super::layout). It performs no I/O and knows nothing about storage.

use super::command::{Command, command_table};
use super::wire::{FrameError, Limits, MAGIC, Reader, Stop, parse};

/// Decodes one request from the start of `buf`.
///
/// * `Ok(None)`: `buf` is a prefix of a frame that may still become valid;
///   read more bytes and call again with the grown buffer.
/// * `Ok(Some((request, consumed)))`: one complete request occupying
///   `buf[..consumed]`; pipelined bytes after it are left alone.
/// * `Err(_)`: the bytes can never form a valid frame; close the connection.
///
/// Header fields are validated as soon as they are buffered, so an invalid
/// length is reported without waiting for the data it announces.
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, FrameError> {
    parse(buf, |r| {
        let magic = r.u8()?;
        if magic != MAGIC {
            return Err(FrameError::NotBinary(magic).into());
        }
        let byte = r.u8()?;
        let command = Command::from_byte(byte).ok_or(FrameError::UnknownCommand(byte))?;
        Request::read(command, r, limits)
    })
}

/// Expands the table's `layouts` view: the [`Request`] enum, and how each request
/// is read (two steps) and written, field by field in row order.
macro_rules! define_requests {
    (
        identity $identity:tt
        layouts { $(
            $(#[$doc:meta])*
            $variant:ident $({ $($field:ident: $ty:ty = $kind:ident),* })?;
        )* }
        handlers $handlers:tt
    ) => {
        /// One decoded binary request. Field names follow the protocol notes;
        /// timestamps are microseconds since the epoch.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $($(#[$doc])* $variant $({ $($field: $ty),* })?,)*
        }

        impl Request {
            /// Which command this is.
            pub fn command(&self) -> Command {
                match self {
                    $(Request::$variant $({ $($field: _),* })? => Command::$variant,)*
                }
            }

            /// Reads the fields after `C8 <command>`: every header entry (each
            /// checked as it arrives), then a walk proving the data is buffered,
            /// then the copy.
            #[allow(unused_variables)]
            fn read(command: Command, r: &mut Reader<'_>, l: &Limits) -> Result<Request, Stop> {
                use super::layout::*;
                Ok(match command {
                    $(Command::$variant => {
                        $($(let $field = $kind.header(r, l)?;)*)?
                        r.look_ahead(|r| {
                            $($($kind.walk(r, &$field, l)?;)*)?
                            Ok(())
                        })?;
                        Request::$variant $({ $($field: $kind.copy(r, $field, l)?),* })?
                    })*
                })
            }

            /// Writes the fields after `C8 <command>`: every header entry in row
            /// order, then the data (for [`client::encode`](super::client::encode)).
            #[allow(unused_variables)]
            pub(crate) fn write_fields(&self, out: &mut Vec<u8>) {
                use super::layout::*;
                match self {
                    $(Request::$variant $({ $($field),* })? => {
                        $($($kind.put_header($field, out);)*)?
                        $($($kind.put_data($field, out);)*)?
                    })*
                }
            }
        }
    };
}

command_table!(define_requests);

impl Request {
    /// The command's name as used by `ttserver -mask`, `tcrmgr` and the
    /// `cnt_*` lines of `stat`.
    pub fn name(&self) -> &'static str {
        self.command().name()
    }

    /// The byte that follows [`MAGIC`] on the wire.
    pub fn command_byte(&self) -> u8 {
        self.command().byte()
    }
}

#[cfg(test)]
mod tests;
