//! Binary frame decoding and encoding for the Tokyo Tyrant port.
//!
//! This module owns the byte layout of the Tyrant binary protocol (requests
//! `C8 <command> ...`, see the protocol reference §2–§5): turning buffered
//! bytes into [`Request`]s ([`decode`]), turning them back into bytes
//! ([`encode`], for clients, benchmarks and tests), writing replies
//! ([`reply`]) and reading replies back on the client side
//! ([`decode_reply`]). It performs no I/O and knows nothing about storage.
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
//! left in its buffer after a bad header as a new request (protocol reference
//! §9, "leftover-bytes quirk"); here every bad header is an error and the
//! connection is expected to be closed without a reply.

use std::fmt;

/// First byte of every binary request.
pub const MAGIC: u8 = 0xC8;

/// Command bytes (the byte after [`MAGIC`]), as dispatched by `ttserver`.
pub mod cmd {
    pub const PUT: u8 = 0x10;
    pub const PUTKEEP: u8 = 0x11;
    pub const PUTCAT: u8 = 0x12;
    pub const PUTSHL: u8 = 0x13;
    pub const PUTNR: u8 = 0x18;
    pub const OUT: u8 = 0x20;
    pub const GET: u8 = 0x30;
    pub const MGET: u8 = 0x31;
    pub const VSIZ: u8 = 0x38;
    pub const ITERINIT: u8 = 0x50;
    pub const ITERNEXT: u8 = 0x51;
    pub const FWMKEYS: u8 = 0x58;
    pub const ADDINT: u8 = 0x60;
    pub const ADDDOUBLE: u8 = 0x61;
    pub const EXT: u8 = 0x68;
    pub const SYNC: u8 = 0x70;
    pub const OPTIMIZE: u8 = 0x71;
    pub const VANISH: u8 = 0x72;
    pub const COPY: u8 = 0x73;
    pub const RESTORE: u8 = 0x74;
    pub const SETMST: u8 = 0x78;
    pub const RNUM: u8 = 0x80;
    pub const SIZE: u8 = 0x81;
    pub const STAT: u8 = 0x88;
    pub const MISC: u8 = 0x90;
    pub const REPL: u8 = 0xA0;

    /// Every command byte `ttserver` 1.1.41 dispatches on; anything else is
    /// an unknown command.
    pub const ALL: [u8; 26] = [
        PUT, PUTKEEP, PUTCAT, PUTSHL, PUTNR, OUT, GET, MGET, VSIZ, ITERINIT, ITERNEXT, FWMKEYS,
        ADDINT, ADDDOUBLE, EXT, SYNC, OPTIMIZE, VANISH, COPY, RESTORE, SETMST, RNUM, SIZE, STAT,
        MISC, REPL,
    ];
}

/// ttserver keeps function names in a 1024-byte buffer with a trailing NUL,
/// so no configuration can admit a longer name than this.
const WIRE_MAX_NAME_BYTES: usize = 1023;

/// Caps applied while decoding (the reference caps: 256 MiB lengths,
/// 1_048_576 counts, names < 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key: put family, out, get, mget keys, vsiz, addint,
    /// adddouble, ext.
    pub max_key_bytes: usize,
    /// Longest value-like field: put-family values, ext value, misc
    /// arguments, fwmkeys prefix, optimize params, copy/restore path,
    /// setmst host.
    pub max_value_bytes: usize,
    /// Most keys in one mget, most arguments in one misc.
    pub max_count: usize,
    /// Longest ext/misc function name. Anything above 1023 acts as 1023,
    /// the protocol's own ceiling.
    pub max_name_bytes: usize,
}

impl Limits {
    /// The caps `ttserver` 1.1.41 itself enforces; useful for
    /// compatibility tests, far too generous for a production listener.
    pub const REFERENCE: Limits = Limits {
        max_key_bytes: 256 << 20,
        max_value_bytes: 256 << 20,
        max_count: 1 << 20,
        max_name_bytes: WIRE_MAX_NAME_BYTES,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 4096,
            max_value_bytes: 1 << 20,
            max_count: 65_536,
            max_name_bytes: WIRE_MAX_NAME_BYTES,
        }
    }
}

/// One decoded binary request. Field names follow the protocol reference;
/// timestamps are microseconds since the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `C8 10`
    Put { key: Vec<u8>, value: Vec<u8> },
    /// `C8 11`
    PutKeep { key: Vec<u8>, value: Vec<u8> },
    /// `C8 12`
    PutCat { key: Vec<u8>, value: Vec<u8> },
    /// `C8 13`; `width` is never negative in a decoded request.
    PutShl {
        key: Vec<u8>,
        value: Vec<u8>,
        width: i32,
    },
    /// `C8 18`; the server sends no reply at all.
    PutNr { key: Vec<u8>, value: Vec<u8> },
    /// `C8 20`
    Out { key: Vec<u8> },
    /// `C8 30`
    Get { key: Vec<u8> },
    /// `C8 31`
    Mget { keys: Vec<Vec<u8>> },
    /// `C8 38`
    Vsiz { key: Vec<u8> },
    /// `C8 50`
    IterInit,
    /// `C8 51`
    IterNext,
    /// `C8 58`; a negative `max` means unlimited.
    Fwmkeys { prefix: Vec<u8>, max: i32 },
    /// `C8 60`
    AddInt { key: Vec<u8>, num: i32 },
    /// `C8 61`; the number in wire form, see [`double_from_wire`].
    AddDouble {
        key: Vec<u8>,
        integ: i64,
        fract: i64,
    },
    /// `C8 68`
    Ext {
        name: Vec<u8>,
        opts: u32,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// `C8 70`
    Sync,
    /// `C8 71`
    Optimize { params: Vec<u8> },
    /// `C8 72`
    Vanish,
    /// `C8 73`
    Copy { path: Vec<u8> },
    /// `C8 74`
    Restore {
        path: Vec<u8>,
        timestamp: u64,
        opts: u32,
    },
    /// `C8 78`; `port` is never negative in a decoded request.
    SetMst {
        host: Vec<u8>,
        port: i32,
        timestamp: u64,
        opts: u32,
    },
    /// `C8 80`
    Rnum,
    /// `C8 81`
    Size,
    /// `C8 88`
    Stat,
    /// `C8 90`
    Misc {
        name: Vec<u8>,
        opts: u32,
        args: Vec<Vec<u8>>,
    },
    /// `C8 A0`; in a decoded request `timestamp` is in `1..=i64::MAX` and
    /// `server_id` in `1..=i32::MAX`.
    Repl { timestamp: u64, server_id: u32 },
}

impl Request {
    /// The command's name as used by `ttserver -mask`, `tcrmgr` and the
    /// `cnt_*` lines of `stat`.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Put { .. } => "put",
            Request::PutKeep { .. } => "putkeep",
            Request::PutCat { .. } => "putcat",
            Request::PutShl { .. } => "putshl",
            Request::PutNr { .. } => "putnr",
            Request::Out { .. } => "out",
            Request::Get { .. } => "get",
            Request::Mget { .. } => "mget",
            Request::Vsiz { .. } => "vsiz",
            Request::IterInit => "iterinit",
            Request::IterNext => "iternext",
            Request::Fwmkeys { .. } => "fwmkeys",
            Request::AddInt { .. } => "addint",
            Request::AddDouble { .. } => "adddouble",
            Request::Ext { .. } => "ext",
            Request::Sync => "sync",
            Request::Optimize { .. } => "optimize",
            Request::Vanish => "vanish",
            Request::Copy { .. } => "copy",
            Request::Restore { .. } => "restore",
            Request::SetMst { .. } => "setmst",
            Request::Rnum => "rnum",
            Request::Size => "size",
            Request::Stat => "stat",
            Request::Misc { .. } => "misc",
            Request::Repl { .. } => "repl",
        }
    }

    /// The byte that follows [`MAGIC`] on the wire.
    pub fn command_byte(&self) -> u8 {
        match self {
            Request::Put { .. } => cmd::PUT,
            Request::PutKeep { .. } => cmd::PUTKEEP,
            Request::PutCat { .. } => cmd::PUTCAT,
            Request::PutShl { .. } => cmd::PUTSHL,
            Request::PutNr { .. } => cmd::PUTNR,
            Request::Out { .. } => cmd::OUT,
            Request::Get { .. } => cmd::GET,
            Request::Mget { .. } => cmd::MGET,
            Request::Vsiz { .. } => cmd::VSIZ,
            Request::IterInit => cmd::ITERINIT,
            Request::IterNext => cmd::ITERNEXT,
            Request::Fwmkeys { .. } => cmd::FWMKEYS,
            Request::AddInt { .. } => cmd::ADDINT,
            Request::AddDouble { .. } => cmd::ADDDOUBLE,
            Request::Ext { .. } => cmd::EXT,
            Request::Sync => cmd::SYNC,
            Request::Optimize { .. } => cmd::OPTIMIZE,
            Request::Vanish => cmd::VANISH,
            Request::Copy { .. } => cmd::COPY,
            Request::Restore { .. } => cmd::RESTORE,
            Request::SetMst { .. } => cmd::SETMST,
            Request::Rnum => cmd::RNUM,
            Request::Size => cmd::SIZE,
            Request::Stat => cmd::STAT,
            Request::Misc { .. } => cmd::MISC,
            Request::Repl { .. } => cmd::REPL,
        }
    }
}

/// Why a buffer can never become a valid frame. Every variant means: close
/// the connection without replying (protocol reference §9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The first byte is not `0xC8`, so this is not a binary request (it may
    /// be memcached or HTTP text, which this module does not handle).
    NotBinary(u8),
    /// `C8` followed by a byte `ttserver` does not dispatch on.
    UnknownCommand(u8),
    /// A header field is out of range: negative length, over a cap,
    /// negative width or port, repl timestamp/server id below 1.
    Malformed(&'static str),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::NotBinary(b) => {
                write!(f, "not a binary Tyrant frame (first byte {b:#04x})")
            }
            FrameError::UnknownCommand(c) => write!(f, "unknown Tyrant command byte {c:#04x}"),
            FrameError::Malformed(why) => write!(f, "malformed Tyrant frame: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

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
    let mut r = Reader::new(buf);
    finish(request(&mut r, limits), &r)
}

/// Appends the wire form of `req` to `out`: the exact inverse of [`decode`].
///
/// It writes what it is given, so a request `decode` would reject (a negative
/// width, a key over the limits) encodes to a frame a server rejects. A byte
/// string longer than `i32::MAX` cannot be expressed at all; its length is
/// written as `FF FF FF FF`, which every reader treats as negative.
pub fn encode(req: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(&[MAGIC, req.command_byte()]);
    match req {
        Request::Put { key, value }
        | Request::PutKeep { key, value }
        | Request::PutCat { key, value }
        | Request::PutNr { key, value } => {
            put_len(out, key.len());
            put_len(out, value.len());
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        Request::PutShl { key, value, width } => {
            put_len(out, key.len());
            put_len(out, value.len());
            out.extend_from_slice(&width.to_be_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        Request::Out { key } | Request::Get { key } | Request::Vsiz { key } => {
            put_len(out, key.len());
            out.extend_from_slice(key);
        }
        Request::Mget { keys } => {
            put_len(out, keys.len());
            for key in keys {
                put_len(out, key.len());
                out.extend_from_slice(key);
            }
        }
        Request::IterInit
        | Request::IterNext
        | Request::Sync
        | Request::Vanish
        | Request::Rnum
        | Request::Size
        | Request::Stat => {}
        Request::Fwmkeys { prefix, max } => {
            put_len(out, prefix.len());
            out.extend_from_slice(&max.to_be_bytes());
            out.extend_from_slice(prefix);
        }
        Request::AddInt { key, num } => {
            put_len(out, key.len());
            out.extend_from_slice(&num.to_be_bytes());
            out.extend_from_slice(key);
        }
        Request::AddDouble { key, integ, fract } => {
            put_len(out, key.len());
            out.extend_from_slice(&integ.to_be_bytes());
            out.extend_from_slice(&fract.to_be_bytes());
            out.extend_from_slice(key);
        }
        Request::Ext {
            name,
            opts,
            key,
            value,
        } => {
            put_len(out, name.len());
            out.extend_from_slice(&opts.to_be_bytes());
            put_len(out, key.len());
            put_len(out, value.len());
            out.extend_from_slice(name);
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        }
        Request::Optimize { params: bytes } | Request::Copy { path: bytes } => {
            put_len(out, bytes.len());
            out.extend_from_slice(bytes);
        }
        Request::Restore {
            path,
            timestamp,
            opts,
        } => {
            put_len(out, path.len());
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&opts.to_be_bytes());
            out.extend_from_slice(path);
        }
        Request::SetMst {
            host,
            port,
            timestamp,
            opts,
        } => {
            put_len(out, host.len());
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&opts.to_be_bytes());
            out.extend_from_slice(host);
        }
        Request::Misc { name, opts, args } => {
            put_len(out, name.len());
            out.extend_from_slice(&opts.to_be_bytes());
            put_len(out, args.len());
            out.extend_from_slice(name);
            for arg in args {
                put_len(out, arg.len());
                out.extend_from_slice(arg);
            }
        }
        Request::Repl {
            timestamp,
            server_id,
        } => {
            out.extend_from_slice(&timestamp.to_be_bytes());
            out.extend_from_slice(&server_id.to_be_bytes());
        }
    }
}

/// Readers on both sides take lengths as signed 32-bit, so anything beyond
/// `i32::MAX` is sent as -1: rejected loudly rather than silently truncated.
fn wire_len(n: usize) -> [u8; 4] {
    i32::try_from(n).unwrap_or(-1).to_be_bytes()
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&wire_len(n));
}

/// Converts a double to the `(integ, fract)` fixed-point pair of
/// protocol reference §5.1, exactly as `ttpackdouble` does on x86-64.
pub fn double_to_wire(x: f64) -> (i64, i64) {
    if x.is_nan() {
        return (i64::MIN, i64::MIN);
    }
    if x.is_infinite() {
        return (if x > 0.0 { i64::MAX } else { i64::MIN }, 0);
    }
    let integ = x.trunc();
    // Exact for every finite double, and equal to C's modf() fraction.
    let fract = x - integ;
    // C casts with cvttsd2si, which yields INT64_MIN for anything out of
    // range (so 1e19 travels as -inf); Rust's `as` would saturate to
    // INT64_MAX (+inf) instead. -2^63 itself is in range.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    let integ = if (-TWO_POW_63..TWO_POW_63).contains(&integ) {
        integ as i64
    } else {
        i64::MIN
    };
    // |fract| < 1, so the product is far inside i64; `as` truncates toward
    // zero like the C cast, which is what the vectors pin down.
    (integ, (fract * 1e12) as i64)
}

/// Converts an `(integ, fract)` pair back to a double, exactly as
/// `ttunpackdouble` does: both parts `INT64_MIN` is NaN, otherwise `integ`
/// `INT64_MAX`/`INT64_MIN` is ±∞ whatever `fract` is. Parts need not be
/// normalised (5 and -0.5e12 is 4.5).
pub fn double_from_wire(integ: i64, fract: i64) -> f64 {
    if integ == i64::MIN && fract == i64::MIN {
        f64::NAN
    } else if integ == i64::MAX {
        f64::INFINITY
    } else if integ == i64::MIN {
        f64::NEG_INFINITY
    } else {
        integ as f64 + fract as f64 / 1e12
    }
}

/// Reply writers (protocol reference §3/§4). All integers are big-endian.
///
/// These only lay out bytes; choosing between success and failure (e.g.
/// ttserver answers `01` for an adddouble NaN result, `00 00000000` for a
/// masked misc) is the caller's job.
pub mod reply {
    use super::{double_to_wire, wire_len};

    /// `00` or `01`: the whole reply of status-only commands, and the
    /// failure reply of every command except misc (see [`misc_failure`]).
    pub fn status(out: &mut Vec<u8>, ok: bool) {
        out.push(if ok { 0 } else { 1 });
    }

    /// `00 len:u32 bytes`: get, iternext, ext success and stat.
    pub fn blob(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(0);
        out.extend_from_slice(&wire_len(bytes.len()));
        out.extend_from_slice(bytes);
    }

    /// `00 n:u32`: vsiz.
    pub fn u32_ok(out: &mut Vec<u8>, n: u32) {
        out.push(0);
        out.extend_from_slice(&n.to_be_bytes());
    }

    /// `00 n:i32`: addint.
    pub fn i32_ok(out: &mut Vec<u8>, n: i32) {
        out.push(0);
        out.extend_from_slice(&n.to_be_bytes());
    }

    /// `00 n:u64`: rnum and size.
    pub fn u64_ok(out: &mut Vec<u8>, n: u64) {
        out.push(0);
        out.extend_from_slice(&n.to_be_bytes());
    }

    /// `00 integ:i64 fract:i64`: adddouble, via [`double_to_wire`].
    pub fn double_ok(out: &mut Vec<u8>, x: f64) {
        let (integ, fract) = double_to_wire(x);
        out.push(0);
        out.extend_from_slice(&integ.to_be_bytes());
        out.extend_from_slice(&fract.to_be_bytes());
    }

    /// mget: `00 n:u32 {ksiz:u32 vsiz:u32 key value}×n`. Note both lengths
    /// come before both byte strings.
    pub fn kv_list<K, V>(out: &mut Vec<u8>, items: impl IntoIterator<Item = (K, V)>)
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        out.push(0);
        counted(out, items, |out, (key, value)| {
            let (key, value) = (key.as_ref(), value.as_ref());
            out.extend_from_slice(&wire_len(key.len()));
            out.extend_from_slice(&wire_len(value.len()));
            out.extend_from_slice(key);
            out.extend_from_slice(value);
        });
    }

    /// fwmkeys and misc success: `00 n:u32 {siz:u32 bytes}×n`.
    pub fn list<B: AsRef<[u8]>>(out: &mut Vec<u8>, items: impl IntoIterator<Item = B>) {
        out.push(0);
        counted(out, items, |out, item| {
            let item = item.as_ref();
            out.extend_from_slice(&wire_len(item.len()));
            out.extend_from_slice(item);
        });
    }

    /// misc failure: `01 00000000`. The C client always reads the count,
    /// so a bare `01` would leave it waiting.
    pub fn misc_failure(out: &mut Vec<u8>) {
        out.extend_from_slice(&[1, 0, 0, 0, 0]);
    }

    /// Writes a count placeholder, the items, then patches the count, so
    /// callers can stream items from an iterator of unknown length.
    fn counted<T>(
        out: &mut Vec<u8>,
        items: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut Vec<u8>, T),
    ) {
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        let mut n: usize = 0;
        for item in items {
            write(out, item);
            n += 1;
        }
        out[at..at + 4].copy_from_slice(&wire_len(n));
    }
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
/// same contract as [`decode`]: `Ok(None)` means read more. Lengths and
/// counts are read as signed like the C client does (negative is
/// [`FrameError::Malformed`]); nothing is copied out before the whole reply
/// is buffered. For repl only the initial server id is decoded, not the
/// update stream that follows it.
pub fn decode_reply(cmd: u8, buf: &[u8]) -> Result<Option<(Reply, usize)>, FrameError> {
    let mut r = Reader::new(buf);
    finish(reply_frame(cmd, &mut r), &r)
}

/// Why a parse stopped before producing a value; lets the parsers use `?`
/// for both "need more bytes" and "never valid".
enum Stop {
    Incomplete,
    Invalid(FrameError),
}

impl From<FrameError> for Stop {
    fn from(e: FrameError) -> Self {
        Stop::Invalid(e)
    }
}

fn malformed(why: &'static str) -> Stop {
    Stop::Invalid(FrameError::Malformed(why))
}

fn finish<T>(parsed: Result<T, Stop>, r: &Reader<'_>) -> Result<Option<(T, usize)>, FrameError> {
    match parsed {
        Ok(value) => Ok(Some((value, r.pos))),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(e)) => Err(e),
    }
}

/// Error texts for one length or count field.
struct Field {
    negative: &'static str,
    over_cap: &'static str,
}

macro_rules! fields {
    ($($name:ident = $what:literal;)*) => {
        $(const $name: Field = Field {
            negative: concat!("negative ", $what),
            over_cap: concat!($what, " over limit"),
        };)*
    };
}

fields! {
    KEY = "key length";
    VALUE = "value length";
    PREFIX = "prefix length";
    PARAMS = "optimize params length";
    PATH = "path length";
    HOST = "host length";
    NAME = "function name length";
    ARG = "misc argument length";
    KEY_COUNT = "mget key count";
    ARG_COUNT = "misc argument count";
    REPLY_LEN = "reply length";
    REPLY_COUNT = "reply count";
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Stop> {
        let chunk = self
            .buf
            .get(self.pos..)
            .and_then(<[u8]>::first_chunk::<N>)
            .ok_or(Stop::Incomplete)?;
        self.pos += N;
        Ok(*chunk)
    }

    fn u8(&mut self) -> Result<u8, Stop> {
        let [b] = self.array()?;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, Stop> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Stop> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, Stop> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A length or count field. ttserver reads these into a C `int`, so a
    /// set top bit means negative (rejected), never "large".
    fn len(&mut self, field: &Field, cap: usize) -> Result<usize, Stop> {
        let n = usize::try_from(self.i32()?).map_err(|_| malformed(field.negative))?;
        if n > cap {
            return Err(malformed(field.over_cap));
        }
        Ok(n)
    }

    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        if self.remaining() < n {
            return Err(Stop::Incomplete);
        }
        self.pos += n;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let bytes = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..n))
            .ok_or(Stop::Incomplete)?;
        self.pos += n;
        Ok(bytes)
    }

    /// Copies out consecutive byte strings, but only once all of them are
    /// buffered: a frame's trailing data is never partially copied.
    fn bytes<const N: usize>(&mut self, lens: [usize; N]) -> Result<[Vec<u8>; N], Stop> {
        let total = lens
            .iter()
            .try_fold(0usize, |sum, &n| sum.checked_add(n))
            .ok_or_else(|| malformed("frame length overflows"))?;
        if self.remaining() < total {
            return Err(Stop::Incomplete);
        }
        Ok(lens.map(|n| {
            let bytes = &self.buf[self.pos..self.pos + n];
            self.pos += n;
            bytes.to_vec()
        }))
    }

    /// Checks that `count` `{len:u32 bytes}` items are fully buffered,
    /// validating each length as it is reached, without copying anything.
    fn walk_items(&mut self, count: usize, field: &Field, cap: usize) -> Result<(), Stop> {
        for _ in 0..count {
            let n = self.len(field, cap)?;
            self.skip(n)?;
        }
        Ok(())
    }

    /// Copies `count` items that [`Self::walk_items`] has already vetted;
    /// the capacity is bounded by bytes actually buffered (4 per item at
    /// least), never by a bare claim.
    fn copy_items(
        &mut self,
        count: usize,
        field: &Field,
        cap: usize,
    ) -> Result<Vec<Vec<u8>>, Stop> {
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let n = self.len(field, cap)?;
            items.push(self.take(n)?.to_vec());
        }
        Ok(items)
    }

    fn items(&mut self, count: usize, field: &Field, cap: usize) -> Result<Vec<Vec<u8>>, Stop> {
        let mark = self.pos;
        self.walk_items(count, field, cap)?;
        self.pos = mark;
        self.copy_items(count, field, cap)
    }
}

fn request(r: &mut Reader<'_>, l: &Limits) -> Result<Request, Stop> {
    let magic = r.u8()?;
    if magic != MAGIC {
        return Err(FrameError::NotBinary(magic).into());
    }
    let command = r.u8()?;
    let max_name = l.max_name_bytes.min(WIRE_MAX_NAME_BYTES);
    let req = match command {
        cmd::PUT | cmd::PUTKEEP | cmd::PUTCAT | cmd::PUTNR => {
            let ksiz = r.len(&KEY, l.max_key_bytes)?;
            let vsiz = r.len(&VALUE, l.max_value_bytes)?;
            let [key, value] = r.bytes([ksiz, vsiz])?;
            match command {
                cmd::PUT => Request::Put { key, value },
                cmd::PUTKEEP => Request::PutKeep { key, value },
                cmd::PUTCAT => Request::PutCat { key, value },
                _ => Request::PutNr { key, value },
            }
        }
        cmd::PUTSHL => {
            let ksiz = r.len(&KEY, l.max_key_bytes)?;
            let vsiz = r.len(&VALUE, l.max_value_bytes)?;
            let width = r.i32()?;
            if width < 0 {
                return Err(malformed("negative putshl width"));
            }
            let [key, value] = r.bytes([ksiz, vsiz])?;
            Request::PutShl { key, value, width }
        }
        cmd::OUT | cmd::GET | cmd::VSIZ => {
            let ksiz = r.len(&KEY, l.max_key_bytes)?;
            let [key] = r.bytes([ksiz])?;
            match command {
                cmd::OUT => Request::Out { key },
                cmd::GET => Request::Get { key },
                _ => Request::Vsiz { key },
            }
        }
        cmd::MGET => {
            let count = r.len(&KEY_COUNT, l.max_count)?;
            let keys = r.items(count, &KEY, l.max_key_bytes)?;
            Request::Mget { keys }
        }
        cmd::ITERINIT => Request::IterInit,
        cmd::ITERNEXT => Request::IterNext,
        cmd::FWMKEYS => {
            let psiz = r.len(&PREFIX, l.max_value_bytes)?;
            let max = r.i32()?;
            let [prefix] = r.bytes([psiz])?;
            Request::Fwmkeys { prefix, max }
        }
        cmd::ADDINT => {
            let ksiz = r.len(&KEY, l.max_key_bytes)?;
            let num = r.i32()?;
            let [key] = r.bytes([ksiz])?;
            Request::AddInt { key, num }
        }
        cmd::ADDDOUBLE => {
            let ksiz = r.len(&KEY, l.max_key_bytes)?;
            let integ = r.i64()?;
            let fract = r.i64()?;
            let [key] = r.bytes([ksiz])?;
            Request::AddDouble { key, integ, fract }
        }
        cmd::EXT => {
            let nsiz = r.len(&NAME, max_name)?;
            let opts = r.u32()?;
            let ksiz = r.len(&KEY, l.max_key_bytes)?;
            let vsiz = r.len(&VALUE, l.max_value_bytes)?;
            let [name, key, value] = r.bytes([nsiz, ksiz, vsiz])?;
            Request::Ext {
                name,
                opts,
                key,
                value,
            }
        }
        cmd::SYNC => Request::Sync,
        cmd::OPTIMIZE => {
            let psiz = r.len(&PARAMS, l.max_value_bytes)?;
            let [params] = r.bytes([psiz])?;
            Request::Optimize { params }
        }
        cmd::VANISH => Request::Vanish,
        cmd::COPY => {
            let psiz = r.len(&PATH, l.max_value_bytes)?;
            let [path] = r.bytes([psiz])?;
            Request::Copy { path }
        }
        cmd::RESTORE => {
            let psiz = r.len(&PATH, l.max_value_bytes)?;
            let timestamp = r.u64()?;
            let opts = r.u32()?;
            let [path] = r.bytes([psiz])?;
            Request::Restore {
                path,
                timestamp,
                opts,
            }
        }
        cmd::SETMST => {
            let hsiz = r.len(&HOST, l.max_value_bytes)?;
            let port = r.i32()?;
            if port < 0 {
                return Err(malformed("negative setmst port"));
            }
            let timestamp = r.u64()?;
            let opts = r.u32()?;
            let [host] = r.bytes([hsiz])?;
            Request::SetMst {
                host,
                port,
                timestamp,
                opts,
            }
        }
        cmd::RNUM => Request::Rnum,
        cmd::SIZE => Request::Size,
        cmd::STAT => Request::Stat,
        cmd::MISC => {
            let nsiz = r.len(&NAME, max_name)?;
            let opts = r.u32()?;
            let argc = r.len(&ARG_COUNT, l.max_count)?;
            let mark = r.pos;
            r.skip(nsiz)?;
            r.walk_items(argc, &ARG, l.max_value_bytes)?;
            r.pos = mark;
            let name = r.take(nsiz)?.to_vec();
            let args = r.copy_items(argc, &ARG, l.max_value_bytes)?;
            Request::Misc { name, opts, args }
        }
        cmd::REPL => {
            // Read as signed like every other header integer, so the upper
            // halves of both ranges are rejected along with zero. (ttserver.c
            // declares these two unsigned and rejects only 0; no client sends
            // the upper halves: tcrmgr clamps both to positive values.)
            let timestamp = u64::try_from(r.i64()?)
                .ok()
                .filter(|&ts| ts >= 1)
                .ok_or_else(|| malformed("repl timestamp below 1"))?;
            let server_id = u32::try_from(r.i32()?)
                .ok()
                .filter(|&sid| sid >= 1)
                .ok_or_else(|| malformed("repl server id below 1"))?;
            Request::Repl {
                timestamp,
                server_id,
            }
        }
        other => return Err(FrameError::UnknownCommand(other).into()),
    };
    Ok(req)
}

fn reply_frame(command: u8, r: &mut Reader<'_>) -> Result<Reply, Stop> {
    match command {
        c if !cmd::ALL.contains(&c) => return Err(FrameError::UnknownCommand(c).into()),
        cmd::PUTNR => return Ok(Reply::Silent),
        cmd::REPL => return Ok(Reply::U32(r.u32()?)),
        _ => {}
    }
    let status = r.u8()?;
    if status != 0 {
        if matches!(command, cmd::MGET | cmd::MISC) {
            // The count after a failure status carries no information, but
            // it is part of the reply and must not be left in the stream.
            r.u32()?;
        }
        return Ok(Reply::Status(status));
    }
    let reply = match command {
        cmd::GET | cmd::ITERNEXT | cmd::EXT | cmd::STAT => {
            let n = r.len(&REPLY_LEN, usize::MAX)?;
            let [bytes] = r.bytes([n])?;
            Reply::Blob(bytes)
        }
        cmd::VSIZ => Reply::U32(r.u32()?),
        cmd::ADDINT => Reply::I32(r.i32()?),
        cmd::ADDDOUBLE => {
            let integ = r.i64()?;
            let fract = r.i64()?;
            Reply::Double { integ, fract }
        }
        cmd::RNUM | cmd::SIZE => Reply::U64(r.u64()?),
        cmd::MGET => {
            let count = r.len(&REPLY_COUNT, usize::MAX)?;
            let mark = r.pos;
            for _ in 0..count {
                let ksiz = r.len(&REPLY_LEN, usize::MAX)?;
                let vsiz = r.len(&REPLY_LEN, usize::MAX)?;
                r.skip(ksiz)?;
                r.skip(vsiz)?;
            }
            r.pos = mark;
            let mut records = Vec::with_capacity(count);
            for _ in 0..count {
                let ksiz = r.len(&REPLY_LEN, usize::MAX)?;
                let vsiz = r.len(&REPLY_LEN, usize::MAX)?;
                let [key, value] = r.bytes([ksiz, vsiz])?;
                records.push((key, value));
            }
            Reply::KvList(records)
        }
        cmd::FWMKEYS | cmd::MISC => {
            let count = r.len(&REPLY_COUNT, usize::MAX)?;
            Reply::List(r.items(count, &REPLY_LEN, usize::MAX)?)
        }
        _ => Reply::Status(0),
    };
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
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

    fn enc(req: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        encode(req, &mut out);
        out
    }

    fn dec(buf: &[u8]) -> Result<Option<(Request, usize)>, FrameError> {
        decode(buf, &Limits::default())
    }

    /// Decodes a golden request and checks it is one whole frame whose
    /// canonical re-encoding is byte-identical.
    fn golden(request_hex: &str) -> Request {
        let bytes = hex(request_hex);
        let (req, used) = dec(&bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        assert_eq!(enc(&req), bytes);
        req
    }

    fn golden_reply(command: u8, reply_hex: &str) -> Reply {
        let bytes = hex(reply_hex);
        let (reply, used) = decode_reply(command, &bytes)
            .expect("valid")
            .expect("complete");
        assert_eq!(used, bytes.len());
        reply
    }

    fn is_malformed(r: Result<Option<(Request, usize)>, FrameError>) -> bool {
        matches!(r, Err(FrameError::Malformed(_)))
    }

    // --- golden vectors (copied from vectors.jsonl) ------------------------

    #[test]
    fn vector_put_new() {
        assert_eq!(
            golden("c81000000004000000066b65793176616c756531"),
            Request::Put {
                key: b"key1".to_vec(),
                value: b"value1".to_vec()
            }
        );
    }

    #[test]
    fn vector_put_binary_and_empty() {
        assert_eq!(
            golden("c8100000000300000001006bff76"),
            Request::Put {
                key: vec![0x00, 0x6b, 0xff],
                value: b"v".to_vec()
            }
        );
        assert_eq!(
            golden("c8100000000000000000"),
            Request::Put {
                key: vec![],
                value: vec![]
            }
        );
    }

    #[test]
    fn vector_mget_some_missing() {
        assert_eq!(
            golden("c831000000040000000161000000016200000001630000000164"),
            Request::Mget {
                keys: vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
            }
        );
        assert_eq!(
            golden_reply(
                cmd::MGET,
                "00000000020000000100000001613100000001000000016333"
            ),
            Reply::KvList(vec![
                (b"a".to_vec(), b"1".to_vec()),
                (b"c".to_vec(), b"3".to_vec())
            ])
        );
        assert_eq!(golden("c83100000000"), Request::Mget { keys: vec![] });
    }

    #[test]
    fn vector_misc_getlist() {
        assert_eq!(
            golden("c8900000000700000000000000026765746c697374000000026b31000000026b32"),
            Request::Misc {
                name: b"getlist".to_vec(),
                opts: 0,
                args: vec![b"k1".to_vec(), b"k2".to_vec()]
            }
        );
        assert_eq!(
            golden_reply(
                cmd::MISC,
                "0000000004000000026b31000000027631000000026b32000000027632"
            ),
            Reply::List(vec![
                b"k1".to_vec(),
                b"v1".to_vec(),
                b"k2".to_vec(),
                b"v2".to_vec()
            ])
        );
        assert_eq!(golden_reply(cmd::MISC, "0100000000"), Reply::Status(1));
    }

    #[test]
    fn vector_misc_putlist_noulog_and_no_args() {
        assert_eq!(
            golden(
                "c8900000000700000001000000047075746c697374000000026b31000000027631000000026b32000000027632"
            ),
            Request::Misc {
                name: b"putlist".to_vec(),
                opts: 1,
                args: vec![
                    b"k1".to_vec(),
                    b"v1".to_vec(),
                    b"k2".to_vec(),
                    b"v2".to_vec()
                ]
            }
        );
        assert_eq!(
            golden("c890000000080000000000000000697465726e657874"),
            Request::Misc {
                name: b"iternext".to_vec(),
                opts: 0,
                args: vec![]
            }
        );
    }

    #[test]
    fn vector_adddouble() {
        assert_eq!(
            golden("c861000000010000000000000003000000746a52880064"),
            Request::AddDouble {
                key: b"d".to_vec(),
                integ: 3,
                fract: 500_000_000_000
            }
        );
        assert_eq!(double_from_wire(3, 500_000_000_000), 3.5);
        // adddouble_mixed_sign_parts: 5 + (-0.5) = 4.5.
        let Request::AddDouble { integ, fract, .. } =
            golden("c861000000010000000000000005ffffff8b95ad780064")
        else {
            panic!("not adddouble");
        };
        assert_eq!(double_from_wire(integ, fract), 4.5);
        // adddouble_nan_reports_failure: both parts INT64_MIN.
        let Request::AddDouble { integ, fract, .. } =
            golden("c861000000018000000000000000800000000000000064")
        else {
            panic!("not adddouble");
        };
        assert!(double_from_wire(integ, fract).is_nan());
        assert_eq!(golden_reply(cmd::ADDDOUBLE, "01"), Reply::Status(1));
    }

    /// Server-side results from the adddouble vectors, re-encoded.
    #[test]
    fn vector_adddouble_replies() {
        let cases: [(f64, &str); 7] = [
            (3.5, "000000000000000003000000746a528800"),
            (1.25 + 2.5, "000000000000000003000000ae9f7bcc00"),
            (0.1 + 0.2, "00000000000000000000000045d964b800"),
            (-1.25, "00ffffffffffffffffffffffc5cad6bc00"),
            (-2.5 + 1e-12, "00fffffffffffffffeffffff8b95ad7802"),
            (f64::INFINITY, "007fffffffffffffff0000000000000000"),
            (1e19, "0080000000000000000000000000000000"),
        ];
        for (x, wire) in cases {
            let mut out = Vec::new();
            reply::double_ok(&mut out, x);
            assert_eq!(out, hex(wire), "{x}");
            let (integ, fract) = double_to_wire(x);
            assert_eq!(
                golden_reply(cmd::ADDDOUBLE, wire),
                Reply::Double { integ, fract }
            );
        }
    }

    #[test]
    fn vector_other_commands() {
        assert_eq!(
            golden("c85800000002ffffffff6170"),
            Request::Fwmkeys {
                prefix: b"ap".to_vec(),
                max: -1
            }
        );
        assert_eq!(
            golden("c86000000003fffffff9636e74"),
            Request::AddInt {
                key: b"cnt".to_vec(),
                num: -7
            }
        );
        assert_eq!(
            golden("c8130000000100000002000000046b5859"),
            Request::PutShl {
                key: b"k".to_vec(),
                value: b"XY".to_vec(),
                width: 4
            }
        );
        assert_eq!(
            golden("c868000000040000000100000003000000056563686f6b657976616c7565"),
            Request::Ext {
                name: b"echo".to_vec(),
                opts: 1,
                key: b"key".to_vec(),
                value: b"value".to_vec()
            }
        );
        assert_eq!(
            golden("c874000000010000000000000000000000002f"),
            Request::Restore {
                path: b"/".to_vec(),
                timestamp: 0,
                opts: 0
            }
        );
        assert_eq!(
            golden("c8780000000000000000000000000000000000000000"),
            Request::SetMst {
                host: vec![],
                port: 0,
                timestamp: 0,
                opts: 0
            }
        );
        assert_eq!(
            golden("c87100000009626e756d3d31303234"),
            Request::Optimize {
                params: b"bnum=1024".to_vec()
            }
        );
        assert_eq!(
            golden("c8a0000000000000000100000005"),
            Request::Repl {
                timestamp: 1,
                server_id: 5
            }
        );
        for (bytes, req) in [
            ("c850", Request::IterInit),
            ("c851", Request::IterNext),
            ("c870", Request::Sync),
            ("c872", Request::Vanish),
            ("c880", Request::Rnum),
            ("c881", Request::Size),
            ("c888", Request::Stat),
        ] {
            assert_eq!(golden(bytes), req);
        }
    }

    #[test]
    fn vector_pipelined_putnr_and_get() {
        let buf = hex("c81800000001000000016b76c830000000016b");
        let (first, used) = dec(&buf).unwrap().unwrap();
        assert_eq!(
            first,
            Request::PutNr {
                key: b"k".to_vec(),
                value: b"v".to_vec()
            }
        );
        let (second, rest) = dec(&buf[used..]).unwrap().unwrap();
        assert_eq!(second, Request::Get { key: b"k".to_vec() });
        assert_eq!(used + rest, buf.len());
    }

    #[test]
    fn vector_bad_input() {
        // Each of these made ttserver close the connection, or wait.
        assert!(is_malformed(dec(&hex("c810ffffffff00000001"))));
        assert!(is_malformed(decode(
            &hex("c83010000001"),
            &Limits::REFERENCE
        )));
        assert!(is_malformed(decode(
            &hex("c83100100001"),
            &Limits::REFERENCE
        )));
        assert!(is_malformed(dec(&hex("c8a0000000000000000000000005"))));
        assert_eq!(dec(&hex("c8ff")), Err(FrameError::UnknownCommand(0xff)));
        assert_eq!(
            dec(&hex("c930000000016b0a")),
            Err(FrameError::NotBinary(0xc9))
        );
        assert_eq!(dec(&hex("c8100000000a00000001616263")), Ok(None));
    }

    #[test]
    fn vector_replies() {
        assert_eq!(golden_reply(cmd::PUT, "00"), Reply::Status(0));
        assert_eq!(golden_reply(cmd::PUTKEEP, "01"), Reply::Status(1));
        assert_eq!(
            golden_reply(cmd::GET, "000000000568656c6c6f"),
            Reply::Blob(b"hello".to_vec())
        );
        assert_eq!(golden_reply(cmd::GET, "01"), Reply::Status(1));
        assert_eq!(golden_reply(cmd::VSIZ, "0000019000"), Reply::U32(0x19000));
        assert_eq!(golden_reply(cmd::ADDINT, "00fffffffe"), Reply::I32(-2));
        assert_eq!(golden_reply(cmd::RNUM, "000000000000000003"), Reply::U64(3));
        assert_eq!(golden_reply(cmd::MGET, "0000000000"), Reply::KvList(vec![]));
        assert_eq!(
            golden_reply(
                cmd::FWMKEYS,
                "0000000002000000056170706c650000000761707269636f74"
            ),
            Reply::List(vec![b"apple".to_vec(), b"apricot".to_vec()])
        );
        assert_eq!(golden_reply(cmd::REPL, "00000000"), Reply::U32(0));
        assert_eq!(decode_reply(cmd::PUTNR, &[]), Ok(Some((Reply::Silent, 0))));
        assert_eq!(decode_reply(cmd::GET, &hex("0000000005686565")), Ok(None));
        assert_eq!(decode_reply(cmd::MISC, &hex("0100")), Ok(None));
        assert!(matches!(
            decode_reply(cmd::GET, &hex("00ffffffff")),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(
            decode_reply(0x42, &[]),
            Err(FrameError::UnknownCommand(0x42))
        );
    }

    // --- hostile headers ---------------------------------------------------

    #[test]
    fn huge_length_rejected_as_soon_as_header_arrives() {
        // 2 GiB key claimed: rejected from the 10 header bytes alone.
        assert!(is_malformed(dec(&hex("c8107fffffff00000001"))));
        // And the key field is judged as soon as it is buffered.
        assert!(is_malformed(dec(&hex("c8107fffffff"))));
        // Value over the cap, with no value bytes present.
        assert!(is_malformed(dec(&hex("c810000000017fffffff"))));
        assert!(is_malformed(dec(&hex("c81000000001 00100001"))));
        // Even with ttserver's own caps, 256 MiB + 1 is too long.
        assert!(is_malformed(decode(
            &hex("c810 00000001 10000001"),
            &Limits::REFERENCE
        )));
        assert!(is_malformed(dec(&hex(
            "c868 00000000 00000000 00000000 7fffffff"
        ))));
        assert!(is_malformed(dec(&hex("c858 7fffffff"))));
        assert!(is_malformed(dec(&hex("c873 7fffffff"))));
        assert!(is_malformed(dec(&hex("c874 7fffffff"))));
        assert!(is_malformed(dec(&hex("c871 7fffffff"))));
        assert!(is_malformed(dec(&hex("c878 7fffffff"))));
    }

    #[test]
    fn negative_lengths_rejected() {
        for frame in [
            "c810 80000000",
            "c810 00000000 ffffffff",
            "c813 00000000 fffffffe",
            "c820 ffffffff",
            "c830 80000001",
            "c831 ffffffff",
            "c831 00000002 00000000 ffffffff",
            "c838 ffffffff",
            "c858 ffffffff",
            "c860 ffffffff",
            "c861 ffffffff",
            "c868 ffffffff",
            "c868 00000000 00000000 ffffffff",
            "c871 ffffffff",
            "c873 ffffffff",
            "c874 ffffffff",
            "c878 ffffffff",
            "c890 ffffffff",
            "c890 00000000 00000000 ffffffff",
            "c890 00000001 00000000 00000001 61 ffffffff",
        ] {
            assert!(is_malformed(dec(&hex(frame))), "{frame}");
        }
    }

    #[test]
    fn counts_and_names_over_cap_rejected() {
        let l = Limits::default();
        let mut frame = vec![MAGIC, cmd::MGET];
        frame.extend_from_slice(&wire_len(l.max_count + 1));
        assert!(is_malformed(dec(&frame)));
        // A count exactly at the cap is fine; it just needs the keys.
        let mut frame = vec![MAGIC, cmd::MGET];
        frame.extend_from_slice(&wire_len(l.max_count));
        assert_eq!(dec(&frame), Ok(None));

        assert!(is_malformed(dec(&hex("c890 00000000 00000000 00010001"))));
        assert!(is_malformed(dec(&hex("c890 00000400"))));
        assert!(is_malformed(dec(&hex("c868 00000400"))));
        // 1023 is the protocol's ceiling even when the configured cap is higher.
        let loose = Limits {
            max_name_bytes: usize::MAX,
            ..Limits::default()
        };
        assert!(is_malformed(decode(&hex("c890 00000400"), &loose)));
        assert_eq!(decode(&hex("c890 000003ff"), &loose), Ok(None));
    }

    #[test]
    fn mget_key_lengths_checked_as_reached() {
        // Second key's length is bad while the first key is complete and the
        // rest of the frame is missing: reject, don't wait.
        assert!(is_malformed(dec(&hex(
            "c831 00000003 00000001 61 00002000"
        ))));
        // Same for misc arguments.
        assert!(is_malformed(dec(&hex(
            "c890 00000001 00000000 00000003 61 00000001 62 00100001"
        ))));
        // A good key followed by a missing one is merely incomplete.
        assert_eq!(dec(&hex("c831 00000002 00000001 61 000000")), Ok(None));
    }

    #[test]
    fn bad_scalar_fields_rejected() {
        assert!(is_malformed(dec(&hex("c813 00000001 00000001 ffffffff"))));
        assert!(is_malformed(dec(&hex("c878 00000000 80000000"))));
        assert!(is_malformed(dec(&hex("c8a0 0000000000000000"))));
        assert!(is_malformed(dec(&hex("c8a0 8000000000000000"))));
        assert!(is_malformed(dec(&hex("c8a0 0000000000000001 00000000"))));
        assert!(is_malformed(dec(&hex("c8a0 0000000000000001 80000000"))));
        assert_eq!(
            dec(&hex("c8a0 7fffffffffffffff 7fffffff")),
            Ok(Some((
                Request::Repl {
                    timestamp: i64::MAX as u64,
                    server_id: i32::MAX as u32
                },
                14
            )))
        );
        // Width 0 and port 0 are valid.
        assert!(
            dec(&hex("c813 00000000 00000000 00000000"))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn command_bytes_and_magic() {
        assert_eq!(dec(&[]), Ok(None));
        assert_eq!(dec(&[MAGIC]), Ok(None));
        for b in 0..=u8::MAX {
            if b != MAGIC {
                assert_eq!(dec(&[b]), Err(FrameError::NotBinary(b)));
            }
            let result = dec(&[MAGIC, b]);
            if cmd::ALL.contains(&b) {
                assert!(result.is_ok(), "{b:#04x}");
            } else {
                assert_eq!(result, Err(FrameError::UnknownCommand(b)));
            }
        }
    }

    #[test]
    fn names_and_bytes_agree() {
        let names = "put putkeep putcat putshl putnr out get mget vsiz iterinit iternext fwmkeys \
                     addint adddouble ext sync optimize vanish copy restore setmst rnum size stat \
                     misc repl";
        assert_eq!(names.split_whitespace().count(), cmd::ALL.len());
        for (byte, name) in cmd::ALL.into_iter().zip(names.split_whitespace()) {
            // All-zero fields form a valid frame for every command but repl,
            // whose timestamp and server id must be at least 1.
            let mut frame = vec![MAGIC, byte];
            if byte == cmd::REPL {
                frame.extend(hex("0000000000000001 00000001"));
            } else {
                frame.extend([0; 24]);
            }
            let (req, used) = dec(&frame).unwrap().unwrap();
            assert_eq!(req.name(), name);
            assert_eq!(req.command_byte(), byte, "{name}");
            assert_eq!(enc(&req), frame[..used], "{name}");
        }
    }

    // --- numbers -----------------------------------------------------------

    #[test]
    fn double_wire_examples_from_protocol_table() {
        assert_eq!(double_to_wire(3.5), (3, 500_000_000_000));
        assert_eq!(double_to_wire(-1.25), (-1, -250_000_000_000));
        assert_eq!(double_to_wire(0.1 + 0.2), (0, 300_000_000_000));
        assert_eq!(double_to_wire(-2.5 + 1e-12), (-2, -499_999_999_998));

        assert_eq!(double_to_wire(f64::INFINITY), (i64::MAX, 0));
        assert_eq!(double_to_wire(f64::NEG_INFINITY), (i64::MIN, 0));
        assert_eq!(double_to_wire(f64::NAN), (i64::MIN, i64::MIN));
        assert_eq!(double_to_wire(1e19), (i64::MIN, 0));
        assert_eq!(double_to_wire(-1e19), (i64::MIN, 0));
        assert_eq!(double_to_wire(9_223_372_036_854_775_808.0), (i64::MIN, 0));
        assert_eq!(double_to_wire(-9_223_372_036_854_775_808.0), (i64::MIN, 0));
        assert_eq!(double_to_wire(-0.0), (0, 0));

        assert_eq!(double_from_wire(3, 500_000_000_000), 3.5);
        assert_eq!(double_from_wire(-1, -250_000_000_000), -1.25);
        assert_eq!(double_from_wire(0, 300_000_000_000), 0.3);
        assert_eq!(double_from_wire(5, -500_000_000_000), 4.5);
        assert!(double_from_wire(i64::MIN, i64::MIN).is_nan());
        assert_eq!(double_from_wire(i64::MAX, 0), f64::INFINITY);
        assert_eq!(double_from_wire(i64::MAX, 12345), f64::INFINITY);
        assert_eq!(double_from_wire(i64::MIN, 0), f64::NEG_INFINITY);
        assert_eq!(double_from_wire(i64::MIN, -7), f64::NEG_INFINITY);
    }

    // --- reply writers -----------------------------------------------------

    #[test]
    fn reply_writers_match_vectors() {
        let mut out = Vec::new();
        reply::status(&mut out, true);
        reply::status(&mut out, false);
        assert_eq!(out, hex("0001"));

        out.clear();
        reply::blob(&mut out, b"hello");
        assert_eq!(out, hex("000000000568656c6c6f"));

        out.clear();
        reply::u32_ok(&mut out, 5);
        reply::i32_ok(&mut out, -2);
        reply::u64_ok(&mut out, 3);
        assert_eq!(out, hex("0000000005 00fffffffe 000000000000000003"));

        out.clear();
        let records: [(&[u8], &[u8]); 2] = [(b"a", b"1"), (b"c", b"3")];
        reply::kv_list(&mut out, records);
        assert_eq!(
            out,
            hex("00000000020000000100000001613100000001000000016333")
        );

        out.clear();
        reply::list(&mut out, [b"k1", b"v1", b"k2", b"v2"]);
        assert_eq!(
            out,
            hex("0000000004000000026b31000000027631000000026b32000000027632")
        );

        out.clear();
        reply::list(&mut out, std::iter::empty::<&[u8]>());
        reply::misc_failure(&mut out);
        assert_eq!(out, hex("0000000000 0100000000"));
    }

    // --- properties --------------------------------------------------------

    /// Small caps so generated requests hit the boundaries often.
    const SMALL: Limits = Limits {
        max_key_bytes: 12,
        max_value_bytes: 40,
        max_count: 5,
        max_name_bytes: 9,
    };

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        vec(any::<u8>(), 0..=max)
    }

    /// Requests generated with every size up to `scale` times the caps in
    /// `l`: scale 1 gives only valid requests, larger scales mix in invalid
    /// ones (see `within`).
    fn arb_request(l: Limits, scale: usize) -> impl Strategy<Value = Request> {
        let key = move || bytes(l.max_key_bytes * scale);
        let val = move || bytes(l.max_value_bytes * scale);
        let name = move || bytes(l.max_name_bytes * scale);
        let count = l.max_count * scale;
        let repl_ts = if scale == 1 {
            1..=i64::MAX as u64
        } else {
            0..=u64::MAX
        };
        let repl_sid = if scale == 1 {
            1..=i32::MAX as u32
        } else {
            0..=u32::MAX
        };
        let non_neg = if scale == 1 {
            0..=i32::MAX
        } else {
            i32::MIN..=i32::MAX
        };
        prop_oneof![
            (key(), val()).prop_map(|(key, value)| Request::Put { key, value }),
            (key(), val()).prop_map(|(key, value)| Request::PutKeep { key, value }),
            (key(), val()).prop_map(|(key, value)| Request::PutCat { key, value }),
            (key(), val(), non_neg.clone()).prop_map(|(key, value, width)| Request::PutShl {
                key,
                value,
                width
            }),
            (key(), val()).prop_map(|(key, value)| Request::PutNr { key, value }),
            key().prop_map(|key| Request::Out { key }),
            key().prop_map(|key| Request::Get { key }),
            vec(key(), 0..=count).prop_map(|keys| Request::Mget { keys }),
            key().prop_map(|key| Request::Vsiz { key }),
            Just(Request::IterInit),
            Just(Request::IterNext),
            (val(), any::<i32>()).prop_map(|(prefix, max)| Request::Fwmkeys { prefix, max }),
            (key(), any::<i32>()).prop_map(|(key, num)| Request::AddInt { key, num }),
            (key(), any::<i64>(), any::<i64>())
                .prop_map(|(key, integ, fract)| Request::AddDouble { key, integ, fract }),
            (name(), any::<u32>(), key(), val()).prop_map(|(name, opts, key, value)| {
                Request::Ext {
                    name,
                    opts,
                    key,
                    value,
                }
            }),
            Just(Request::Sync),
            val().prop_map(|params| Request::Optimize { params }),
            Just(Request::Vanish),
            val().prop_map(|path| Request::Copy { path }),
            (val(), any::<u64>(), any::<u32>()).prop_map(|(path, timestamp, opts)| {
                Request::Restore {
                    path,
                    timestamp,
                    opts,
                }
            }),
            (val(), non_neg, any::<u64>(), any::<u32>()).prop_map(
                |(host, port, timestamp, opts)| Request::SetMst {
                    host,
                    port,
                    timestamp,
                    opts,
                }
            ),
            Just(Request::Rnum),
            Just(Request::Size),
            Just(Request::Stat),
            (name(), any::<u32>(), vec(val(), 0..=count))
                .prop_map(|(name, opts, args)| Request::Misc { name, opts, args }),
            (repl_ts, repl_sid).prop_map(|(timestamp, server_id)| Request::Repl {
                timestamp,
                server_id
            }),
        ]
    }

    /// Independent statement of which caps apply to which field.
    fn within(req: &Request, l: &Limits) -> bool {
        let key = |k: &Vec<u8>| k.len() <= l.max_key_bytes;
        let val = |v: &Vec<u8>| v.len() <= l.max_value_bytes;
        let name = |n: &Vec<u8>| n.len() <= l.max_name_bytes.min(1023);
        match req {
            Request::Put { key: k, value: v }
            | Request::PutKeep { key: k, value: v }
            | Request::PutCat { key: k, value: v }
            | Request::PutNr { key: k, value: v } => key(k) && val(v),
            Request::PutShl {
                key: k,
                value: v,
                width,
            } => key(k) && val(v) && *width >= 0,
            Request::Out { key: k }
            | Request::Get { key: k }
            | Request::Vsiz { key: k }
            | Request::AddInt { key: k, .. }
            | Request::AddDouble { key: k, .. } => key(k),
            Request::Mget { keys } => keys.len() <= l.max_count && keys.iter().all(key),
            Request::Fwmkeys { prefix: v, .. }
            | Request::Optimize { params: v }
            | Request::Copy { path: v }
            | Request::Restore { path: v, .. } => val(v),
            Request::SetMst { host, port, .. } => val(host) && *port >= 0,
            Request::Ext {
                name: n,
                key: k,
                value: v,
                ..
            } => name(n) && key(k) && val(v),
            Request::Misc { name: n, args, .. } => {
                name(n) && args.len() <= l.max_count && args.iter().all(val)
            }
            Request::Repl {
                timestamp,
                server_id,
            } => {
                (1..=i64::MAX as u64).contains(timestamp)
                    && (1..=i32::MAX as u32).contains(server_id)
            }
            Request::IterInit
            | Request::IterNext
            | Request::Sync
            | Request::Vanish
            | Request::Rnum
            | Request::Size
            | Request::Stat => true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn round_trip_and_prefixes(req in arb_request(SMALL, 1)) {
            let wire = enc(&req);
            prop_assert_eq!(decode(&wire, &SMALL), Ok(Some((req.clone(), wire.len()))));
            // Every strict prefix is merely incomplete, never an error.
            for cut in 0..wire.len() {
                prop_assert_eq!(decode(&wire[..cut], &SMALL), Ok(None), "cut at {}", cut);
            }
            // Pipelined bytes after the frame are left for the next call.
            let mut more = wire.clone();
            encode(&Request::Stat, &mut more);
            prop_assert_eq!(decode(&more, &SMALL), Ok(Some((req, wire.len()))));
        }

        #[test]
        fn round_trip_default_limits(req in arb_request(SMALL, 1)) {
            let wire = enc(&req);
            prop_assert_eq!(dec(&wire), Ok(Some((req, wire.len()))));
        }

        #[test]
        fn caps_apply_to_the_right_fields(req in arb_request(SMALL, 2)) {
            let wire = enc(&req);
            let got = decode(&wire, &SMALL);
            if within(&req, &SMALL) {
                prop_assert_eq!(got, Ok(Some((req, wire.len()))));
            } else {
                prop_assert!(matches!(got, Err(FrameError::Malformed(_))), "{:?}", got);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_reencode(
            command in proptest::sample::select(cmd::ALL.to_vec()),
            small in vec(0u8..4, 0..48),
            raw in vec(any::<u8>(), 0..48),
        ) {
            // Bytes 0..4 make plausible big-endian lengths, so mixing them in
            // reaches the bodies instead of always tripping the caps.
            for tail in [&small, &raw] {
                let mut buf = vec![MAGIC, command];
                buf.extend_from_slice(tail);
                if let Ok(Some((req, used))) = decode(&buf, &SMALL) {
                    prop_assert!(used <= buf.len());
                    // The wire form is canonical: re-encoding gives the same bytes.
                    prop_assert_eq!(enc(&req), &buf[..used]);
                }
                let _ = decode_reply(command, tail);
            }
        }

        #[test]
        fn double_round_trip_within_precision(x in -1e15f64..1e15) {
            let (integ, fract) = double_to_wire(x);
            let back = double_from_wire(integ, fract);
            prop_assert!((back - x).abs() < 2e-12 * x.abs().max(1.0), "{} -> {}", x, back);
        }

        #[test]
        fn list_replies_round_trip(items in vec(bytes(20), 0..6)) {
            let mut out = Vec::new();
            reply::list(&mut out, &items);
            prop_assert_eq!(decode_reply(cmd::MISC, &out), Ok(Some((Reply::List(items.clone()), out.len()))));
            for cut in 0..out.len() {
                prop_assert_eq!(decode_reply(cmd::FWMKEYS, &out[..cut]), Ok(None));
            }
            let pairs: Vec<_> = items.iter().map(|k| (k.clone(), k.repeat(2))).collect();
            out.clear();
            reply::kv_list(&mut out, pairs.iter().map(|(k, v)| (k, v)));
            prop_assert_eq!(decode_reply(cmd::MGET, &out), Ok(Some((Reply::KvList(pairs), out.len()))));
        }
    }
}
