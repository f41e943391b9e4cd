//! Wire bits shared by both directions of the Tyrant binary protocol: the magic byte,
//! the decoding caps, the error a bad frame gives, the big-endian reader both decoders
//! use, and adddouble's fixed-point form.
//! Protocol notes: `docs/tyrant-protocol.md`.

use std::fmt;

/// First byte of every binary request.
pub const MAGIC: u8 = 0xC8;

/// ttserver keeps function names in a 1024-byte buffer with a trailing NUL,
/// so no configuration can admit a longer name than this.
pub(crate) const WIRE_MAX_NAME_BYTES: usize = 1023;

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

/// Why a buffer can never become a valid frame. Every variant means: close
/// the connection without replying (`docs/tyrant-protocol.md`, "Bad input").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The first byte is not `0xC8`, so this is not a binary request (it may
    /// be memcached or HTTP text, which this port does not serve).
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

/// Readers on both sides take lengths as signed 32-bit, so anything beyond
/// `i32::MAX` is sent as -1: rejected loudly rather than silently truncated.
pub(crate) fn wire_len(n: usize) -> [u8; 4] {
    i32::try_from(n).unwrap_or(-1).to_be_bytes()
}

pub(crate) fn put_len(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&wire_len(n));
}

/// Converts a double to the `(integ, fract)` fixed-point pair adddouble carries
/// (`docs/tyrant-protocol.md`, "Numbers"), exactly as `ttpackdouble` does on x86-64.
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

/// Why a parse stopped before producing a value; lets the parsers use `?`
/// for both "need more bytes" and "never valid".
pub(crate) enum Stop {
    Incomplete,
    Invalid(FrameError),
}

impl From<FrameError> for Stop {
    fn from(e: FrameError) -> Self {
        Stop::Invalid(e)
    }
}

pub(crate) fn malformed(why: &'static str) -> Stop {
    Stop::Invalid(FrameError::Malformed(why))
}

/// Runs a parser over `buf` with the decoders' contract: `Ok(None)` = read more,
/// `Ok(Some((value, consumed)))`, or `Err` = never valid.
pub(crate) fn parse<T>(
    buf: &[u8],
    parser: impl FnOnce(&mut Reader<'_>) -> Result<T, Stop>,
) -> Result<Option<(T, usize)>, FrameError> {
    let mut r = Reader::new(buf);
    match parser(&mut r) {
        Ok(value) => Ok(Some((value, r.pos))),
        Err(Stop::Incomplete) => Ok(None),
        Err(Stop::Invalid(e)) => Err(e),
    }
}

/// Error texts for one length or count field.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Field {
    pub negative: &'static str,
    pub over_cap: &'static str,
}

/// Declares length/count [`Field`]s from what they measure.
macro_rules! fields {
    ($($name:ident = $what:literal;)*) => {
        $(pub(crate) const $name: Field = Field {
            negative: concat!("negative ", $what),
            over_cap: concat!($what, " over limit"),
        };)*
    };
}

fields! {
    KEY_LEN = "key length";
    VALUE_LEN = "value length";
    PREFIX_LEN = "prefix length";
    PARAMS_LEN = "optimize params length";
    PATH_LEN = "path length";
    HOST_LEN = "host length";
    NAME_LEN = "function name length";
    ARG_LEN = "misc argument length";
    KEY_COUNT = "mget key count";
    ARG_COUNT = "misc argument count";
    REPLY_LEN = "reply length";
    REPLY_COUNT = "reply count";
}

/// A big-endian cursor over buffered bytes that never reads past what is there.
pub(crate) struct Reader<'a> {
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

    pub fn u8(&mut self) -> Result<u8, Stop> {
        let [b] = self.array()?;
        Ok(b)
    }

    pub fn u32(&mut self) -> Result<u32, Stop> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn i32(&mut self) -> Result<i32, Stop> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Stop> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, Stop> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A length or count field. ttserver reads these into a C `int`, so a
    /// set top bit means negative (rejected), never "large".
    pub fn len(&mut self, field: &Field, cap: usize) -> Result<usize, Stop> {
        let n = usize::try_from(self.i32()?).map_err(|_| malformed(field.negative))?;
        if n > cap {
            return Err(malformed(field.over_cap));
        }
        Ok(n)
    }

    /// Steps over `n` bytes that must already be buffered, copying nothing.
    pub fn skip(&mut self, n: usize) -> Result<(), Stop> {
        if self.remaining() < n {
            return Err(Stop::Incomplete);
        }
        self.pos += n;
        Ok(())
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Stop> {
        let bytes = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..n))
            .ok_or(Stop::Incomplete)?;
        self.pos += n;
        Ok(bytes)
    }

    /// Checks that `count` `{len:u32 bytes}` items are fully buffered,
    /// validating each length as it is reached, without copying anything.
    pub fn walk_items(&mut self, count: usize, field: &Field, cap: usize) -> Result<(), Stop> {
        for _ in 0..count {
            let n = self.len(field, cap)?;
            self.skip(n)?;
        }
        Ok(())
    }

    /// Copies `count` items that [`Self::walk_items`] has already vetted;
    /// the capacity is bounded by bytes actually buffered (4 per item at
    /// least), never by a bare claim.
    pub fn copy_items(
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

    /// Step one of the two-step decoding: runs `walk` over what follows (which
    /// validates fields and proves bytes are buffered, copying nothing), then steps
    /// back to where it started for step two to copy.
    pub fn look_ahead(
        &mut self,
        walk: impl FnOnce(&mut Self) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        let mark = self.pos;
        walk(self)?;
        self.pos = mark;
        Ok(())
    }

    /// Walks, then copies: `count` items, none copied before all are buffered.
    pub fn items(&mut self, count: usize, field: &Field, cap: usize) -> Result<Vec<Vec<u8>>, Stop> {
        self.look_ahead(|r| r.walk_items(count, field, cap))?;
        self.copy_items(count, field, cap)
    }
}
