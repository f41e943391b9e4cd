//! On-disk encoding of a [`Record`] (schema v3; see migrations/v3.md).
//!
//! ```text
//! live:      01 | timestamp u64 BE | expires_at u64 BE (0 = never) | ct_len u16 BE | content type | value
//! tombstone: 02 | timestamp u64 BE | deleted_at u64 BE
//! session:   03 | timestamp u64 BE | expires_at u64 BE | flags u8
//!               | [created_at u64 BE] (flag 0x01) | [lifetime_ends u64 BE] (flag 0x02)
//!               | [owner_len u16 BE | owner] (flag 0x04) | [fields_len u32 BE | field clocks] (flag 0x08)
//!               | [client flags u32 BE] (flag 0x10, schema v3)
//!               | ct_len u16 BE | content type | value
//! ```
//!
//! A live record with no metadata is written as kind 01, exactly as schema v1 wrote
//! it, so a v1 file's records need no rewriting; one with any metadata as kind 03.

use crate::record::{FieldClocks, Meta, Record, State};

const LIVE: u8 = 1;
const TOMBSTONE: u8 = 2;
const SESSION: u8 = 3;
const HEADER: usize = 1 + 8 + 8;

const HAS_CREATED: u8 = 0x01;
const HAS_LIFETIME: u8 = 0x02;
const HAS_OWNER: u8 = 0x04;
const HAS_FIELDS: u8 = 0x08;
const HAS_CLIENT_FLAGS: u8 = 0x10;
const KNOWN_FLAGS: u8 = HAS_CREATED | HAS_LIFETIME | HAS_OWNER | HAS_FIELDS | HAS_CLIENT_FLAGS;

pub fn encode(record: &Record, out: &mut Vec<u8>) {
    out.clear();
    match &record.state {
        State::Live {
            value,
            content_type,
            expires_at,
        } => {
            // Content types come from a length-checked header; clamp rather than panic,
            // and at a character boundary, or the record would never decode again.
            let mut ct_len = content_type.len().min(u16::MAX as usize);
            while !content_type.is_char_boundary(ct_len) {
                ct_len -= 1;
            }
            let ct = &content_type.as_bytes()[..ct_len];
            out.reserve(HEADER + 2 + ct.len() + value.len());
            let meta = &record.meta;
            out.push(if *meta == Meta::default() {
                LIVE
            } else {
                SESSION
            });
            out.extend_from_slice(&record.timestamp.to_be_bytes());
            out.extend_from_slice(&expires_at.unwrap_or(0).to_be_bytes());
            if *meta != Meta::default() {
                encode_meta(meta, out);
            }
            out.extend_from_slice(&(ct.len() as u16).to_be_bytes());
            out.extend_from_slice(ct);
            out.extend_from_slice(value);
        }
        State::Tombstone { deleted_at } => {
            out.push(TOMBSTONE);
            out.extend_from_slice(&record.timestamp.to_be_bytes());
            out.extend_from_slice(&deleted_at.to_be_bytes());
        }
    }
}

/// The metadata section of a kind-03 record: flags, then each part that is present.
/// An owner is at most 256 bytes (the service checks) and is cut at a character
/// boundary below 64 KiB regardless, so the length always fits.
fn encode_meta(meta: &Meta, out: &mut Vec<u8>) {
    let mut flags = 0;
    flags |= if meta.created_at.is_some() {
        HAS_CREATED
    } else {
        0
    };
    flags |= if meta.lifetime_ends.is_some() {
        HAS_LIFETIME
    } else {
        0
    };
    flags |= if meta.owner.is_some() { HAS_OWNER } else { 0 };
    flags |= if meta.fields.is_some() { HAS_FIELDS } else { 0 };
    flags |= if meta.flags != 0 { HAS_CLIENT_FLAGS } else { 0 };
    out.push(flags);
    if let Some(at) = meta.created_at {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if let Some(at) = meta.lifetime_ends {
        out.extend_from_slice(&at.to_be_bytes());
    }
    if let Some(owner) = &meta.owner {
        let mut len = owner.len().min(u16::MAX as usize);
        while !owner.is_char_boundary(len) {
            len -= 1;
        }
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&owner.as_bytes()[..len]);
    }
    if let Some(fields) = &meta.fields {
        let mut clocks = Vec::new();
        fields.encode(&mut clocks);
        out.extend_from_slice(&(clocks.len() as u32).to_be_bytes());
        out.extend_from_slice(&clocks);
    }
    if meta.flags != 0 {
        out.extend_from_slice(&meta.flags.to_be_bytes());
    }
}

/// Reads a record's bytes front to back.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let piece = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(piece)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }
}

/// Decode a stored record; `None` means the bytes are not a v1, v2 or v3 record
/// (corruption).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let mut r = Reader { bytes, at: 0 };
    let kind = r.take(1)?[0];
    let timestamp = r.u64()?;
    let when = r.u64()?;
    let meta = match kind {
        LIVE => Meta::default(),
        SESSION => decode_meta(&mut r)?,
        TOMBSTONE if bytes.len() == HEADER => return Some(Record::tombstone(timestamp, when)),
        _ => return None,
    };
    let ct_len = r.u16()? as usize;
    let ct = String::from_utf8(r.take(ct_len)?.to_vec()).ok()?;
    let mut record = Record::live(
        timestamp,
        r.rest().to_vec(),
        ct,
        (when != 0).then_some(when),
    );
    record.meta = meta;
    Some(record)
}

fn decode_meta(r: &mut Reader<'_>) -> Option<Meta> {
    let flags = r.take(1)?[0];
    if flags & !KNOWN_FLAGS != 0 {
        return None;
    }
    let mut meta = Meta::default();
    if flags & HAS_CREATED != 0 {
        meta.created_at = Some(r.u64()?);
    }
    if flags & HAS_LIFETIME != 0 {
        meta.lifetime_ends = Some(r.u64()?);
    }
    if flags & HAS_OWNER != 0 {
        let len = r.u16()? as usize;
        meta.owner = Some(String::from_utf8(r.take(len)?.to_vec()).ok()?);
    }
    if flags & HAS_FIELDS != 0 {
        let len = r.u32()? as usize;
        meta.fields = Some(FieldClocks::decode(r.take(len)?)?);
    }
    if flags & HAS_CLIENT_FLAGS != 0 {
        // Never 0: a record without client flags leaves the bit clear.
        meta.flags = r.u32().filter(|f| *f != 0)?;
    }
    Some(meta)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> impl Strategy<Value = Meta> {
        (
            proptest::option::of("[a-z0-9@.]{0,20}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<u64>()),
            proptest::option::of((
                any::<u64>(),
                any::<bool>(),
                proptest::collection::btree_map("[a-z]{0,6}", (any::<u64>(), any::<bool>()), 0..4),
            )),
            prop_oneof![Just(0u32), any::<u32>()],
        )
            .prop_map(|(owner, created_at, lifetime_ends, fields, flags)| Meta {
                flags,
                owner,
                created_at,
                lifetime_ends,
                fields: fields.map(|(base, base_deleted, clocks)| FieldClocks {
                    base,
                    base_deleted,
                    clocks: clocks
                        .into_iter()
                        .map(|(name, (timestamp, removed))| {
                            (name, crate::record::FieldClock { timestamp, removed })
                        })
                        .collect(),
                }),
            })
    }

    proptest! {
        #[test]
        fn session_records_round_trip(ts: u64, exp in proptest::option::of(1u64..), ct in "[a-z/+.-]{0,40}", value: Vec<u8>, meta in meta()) {
            let mut r = Record::live(ts, value, ct, exp);
            r.meta = meta;
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            prop_assert_eq!(buf[0] == LIVE, r.meta == Meta::default());
            prop_assert_eq!(decode(&buf), Some(r));
        }

        #[test]
        fn live_records_round_trip(ts: u64, exp in proptest::option::of(1u64..), ct in "[a-z/+.-]{0,40}", value: Vec<u8>) {
            let r = Record::live(ts, value, ct, exp);
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            prop_assert_eq!(decode(&buf), Some(r));
        }

        #[test]
        fn tombstones_round_trip(ts: u64, at: u64) {
            let r = Record::tombstone(ts, at);
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            prop_assert_eq!(decode(&buf), Some(r));
        }

        #[test]
        fn overlong_content_types_are_clamped_to_valid_utf8(filler in 0usize..4, ch in "[é€𝄞a]") {
            // Put a multi-byte character across the u16 length limit.
            let ct = format!("{}{}", "a".repeat(u16::MAX as usize - 3 + filler), ch.repeat(4));
            let r = Record::live(1, b"v".to_vec(), ct.clone(), None);
            let mut buf = Vec::new();
            encode(&r, &mut buf);
            let decoded = decode(&buf).expect("an encoded record always decodes");
            let State::Live { content_type, .. } = decoded.state else {
                panic!("decoded as a tombstone");
            };
            prop_assert!(content_type.len() <= u16::MAX as usize);
            prop_assert!(ct.starts_with(&content_type));
        }

        #[test]
        fn garbage_never_panics(bytes: Vec<u8>) {
            let _ = decode(&bytes);
        }
    }
}
