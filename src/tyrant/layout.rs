//! The field kinds a command table row lays a request out with, and how each is
//! read and written.
//!
//! Each field puts one entry in the frame's fixed header (a byte string its length,
//! a list its count, a number itself), in row order; then come the byte strings, in
//! row order, then a list's `{len bytes}` items. Reading is the two-step decoding of
//! `request.rs`: every header entry (each checked against [`Limits`] as soon as it is
//! buffered), then a walk proving all announced data is buffered (copying nothing),
//! then the copy. Layouts per command: `docs/tyrant-protocol.md`.

use std::marker::PhantomData;

use super::wire::{
    ARG_COUNT, ARG_LEN, Field, HOST_LEN, KEY_COUNT, KEY_LEN, Limits, NAME_LEN, PARAMS_LEN,
    PATH_LEN, PREFIX_LEN, Reader, Stop, VALUE_LEN, WIRE_MAX_NAME_BYTES, malformed, put_len,
};

/// A byte string: a length in the header, the bytes after it.
#[derive(Debug, Clone, Copy)]
pub struct Bytes {
    pub(crate) field: Field,
    pub(crate) cap: fn(&Limits) -> usize,
}

/// `{len bytes}` items: a count in the header, the items at the end.
#[derive(Debug, Clone, Copy)]
pub struct List {
    pub(crate) count: Field,
    pub(crate) item: Bytes,
}

/// A big-endian number in the header, taken as it comes.
#[derive(Debug, Clone, Copy)]
pub struct Number<T>(PhantomData<T>);

/// A signed 32-bit header number that must not be negative.
#[derive(Debug, Clone, Copy)]
pub struct NonNegative {
    pub(crate) error: &'static str,
}

/// A signed header number that must be at least 1, kept unsigned: repl's
/// timestamp (`i64` on the wire, `u64` here) and server id (`i32`, `u32`).
#[derive(Debug, Clone, Copy)]
pub struct Positive<T> {
    pub(crate) error: &'static str,
    pub(crate) wire: PhantomData<T>,
}

fn key_cap(l: &Limits) -> usize {
    l.max_key_bytes
}

fn value_cap(l: &Limits) -> usize {
    l.max_value_bytes
}

fn name_cap(l: &Limits) -> usize {
    l.max_name_bytes.min(WIRE_MAX_NAME_BYTES)
}

const fn bytes(field: Field, cap: fn(&Limits) -> usize) -> Bytes {
    Bytes { field, cap }
}

pub const KEY: Bytes = bytes(KEY_LEN, key_cap);
pub const VALUE: Bytes = bytes(VALUE_LEN, value_cap);
pub const PREFIX: Bytes = bytes(PREFIX_LEN, value_cap);
pub const PARAMS: Bytes = bytes(PARAMS_LEN, value_cap);
pub const PATH: Bytes = bytes(PATH_LEN, value_cap);
pub const HOST: Bytes = bytes(HOST_LEN, value_cap);
pub const NAME: Bytes = bytes(NAME_LEN, name_cap);
pub const KEYS: List = List {
    count: KEY_COUNT,
    item: KEY,
};
pub const ARGS: List = List {
    count: ARG_COUNT,
    item: bytes(ARG_LEN, value_cap),
};
pub const U32: Number<u32> = Number(PhantomData);
pub const I32: Number<i32> = Number(PhantomData);
pub const U64: Number<u64> = Number(PhantomData);
pub const I64: Number<i64> = Number(PhantomData);
pub const WIDTH: NonNegative = NonNegative {
    error: "negative putshl width",
};
pub const PORT: NonNegative = NonNegative {
    error: "negative setmst port",
};
pub const REPL_TS: Positive<i64> = Positive {
    error: "repl timestamp below 1",
    wire: PhantomData,
};
pub const SERVER_ID: Positive<i32> = Positive {
    error: "repl server id below 1",
    wire: PhantomData,
};

/// How one kind of field is read, in the two steps: its header entry (validated
/// as soon as it is buffered), then a walk over its data checking it is all
/// there (copying nothing), then the copy.
pub(crate) trait Decode {
    /// What the header says: a length, a count or the number itself.
    type Header;
    type Value;
    fn header(&self, r: &mut Reader<'_>, l: &Limits) -> Result<Self::Header, Stop>;
    fn walk(&self, _r: &mut Reader<'_>, _h: &Self::Header, _l: &Limits) -> Result<(), Stop> {
        Ok(())
    }
    fn copy(&self, r: &mut Reader<'_>, h: Self::Header, l: &Limits) -> Result<Self::Value, Stop>;
}

impl Decode for Bytes {
    type Header = usize;
    type Value = Vec<u8>;
    fn header(&self, r: &mut Reader<'_>, l: &Limits) -> Result<usize, Stop> {
        r.len(&self.field, (self.cap)(l))
    }
    fn walk(&self, r: &mut Reader<'_>, n: &usize, _: &Limits) -> Result<(), Stop> {
        r.skip(*n)
    }
    fn copy(&self, r: &mut Reader<'_>, n: usize, _: &Limits) -> Result<Vec<u8>, Stop> {
        Ok(r.take(n)?.to_vec())
    }
}

impl Decode for List {
    type Header = usize;
    type Value = Vec<Vec<u8>>;
    fn header(&self, r: &mut Reader<'_>, l: &Limits) -> Result<usize, Stop> {
        r.len(&self.count, l.max_count)
    }
    fn walk(&self, r: &mut Reader<'_>, n: &usize, l: &Limits) -> Result<(), Stop> {
        r.walk_items(*n, &self.item.field, (self.item.cap)(l))
    }
    fn copy(&self, r: &mut Reader<'_>, n: usize, l: &Limits) -> Result<Vec<Vec<u8>>, Stop> {
        r.copy_items(n, &self.item.field, (self.item.cap)(l))
    }
}

macro_rules! decode_numbers {
    ($($t:ty => $read:ident;)*) => {$(
        impl Decode for Number<$t> {
            type Header = $t;
            type Value = $t;
            fn header(&self, r: &mut Reader<'_>, _: &Limits) -> Result<$t, Stop> {
                r.$read()
            }
            fn copy(&self, _: &mut Reader<'_>, n: $t, _: &Limits) -> Result<$t, Stop> {
                Ok(n)
            }
        }
    )*};
}

decode_numbers! {
    u32 => u32;
    i32 => i32;
    u64 => u64;
    i64 => i64;
}

impl Decode for NonNegative {
    type Header = i32;
    type Value = i32;
    fn header(&self, r: &mut Reader<'_>, _: &Limits) -> Result<i32, Stop> {
        let n = r.i32()?;
        if n < 0 {
            return Err(malformed(self.error));
        }
        Ok(n)
    }
    fn copy(&self, _: &mut Reader<'_>, n: i32, _: &Limits) -> Result<i32, Stop> {
        Ok(n)
    }
}

// Read as signed like every other header integer, so the upper halves of both
// ranges are rejected along with zero. (ttserver.c declares repl's timestamp and
// server id unsigned and rejects only 0; no client sends the upper halves: tcrmgr
// clamps both to positive values.)
macro_rules! decode_positives {
    ($($wire:ty => $read:ident as $t:ty;)*) => {$(
        impl Decode for Positive<$wire> {
            type Header = $t;
            type Value = $t;
            fn header(&self, r: &mut Reader<'_>, _: &Limits) -> Result<$t, Stop> {
                <$t>::try_from(r.$read()?)
                    .ok()
                    .filter(|&n| n >= 1)
                    .ok_or_else(|| malformed(self.error))
            }
            fn copy(&self, _: &mut Reader<'_>, n: $t, _: &Limits) -> Result<$t, Stop> {
                Ok(n)
            }
        }
    )*};
}

decode_positives! {
    i64 => i64 as u64;
    i32 => i32 as u32;
}

/// How one kind of field is written: its header entry, then (for byte strings
/// and lists) its data after the whole header.
pub(crate) trait Encode {
    type Value: ?Sized;
    fn put_header(&self, value: &Self::Value, out: &mut Vec<u8>);
    fn put_data(&self, _value: &Self::Value, _out: &mut Vec<u8>) {}
}

impl Encode for Bytes {
    type Value = Vec<u8>;
    fn put_header(&self, value: &Vec<u8>, out: &mut Vec<u8>) {
        put_len(out, value.len());
    }
    fn put_data(&self, value: &Vec<u8>, out: &mut Vec<u8>) {
        out.extend_from_slice(value);
    }
}

impl Encode for List {
    type Value = Vec<Vec<u8>>;
    fn put_header(&self, items: &Vec<Vec<u8>>, out: &mut Vec<u8>) {
        put_len(out, items.len());
    }
    fn put_data(&self, items: &Vec<Vec<u8>>, out: &mut Vec<u8>) {
        for item in items {
            put_len(out, item.len());
            out.extend_from_slice(item);
        }
    }
}

macro_rules! encode_numbers {
    ($($layout:ty => $t:ty;)*) => {$(
        impl Encode for $layout {
            type Value = $t;
            fn put_header(&self, n: &$t, out: &mut Vec<u8>) {
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
    )*};
}

encode_numbers! {
    Number<u32> => u32;
    Number<i32> => i32;
    Number<u64> => u64;
    Number<i64> => i64;
    NonNegative => i32;
    Positive<i64> => u64;
    Positive<i32> => u32;
}
