//! On-disk encoding of a [`Record`] (schema v4; see migrations/v4.md).
//!
//! ```text
//! live (v4): 04 | timestamp u64 BE | parts u8
//!               | [expires_at u64 BE] (part 0x20)
//!               | [created_at u64 BE] (0x01) | [lifetime_ends u64 BE] (0x02)
//!               | [owner_len u16 BE | owner] (0x04) | [fields_len u32 BE | field clocks] (0x08)
//!               | [client flags u32 BE] (0x10)
//!               | [ct_len u16 BE | content type] (0x40; absent: application/octet-stream)
//!               | value
//! tombstone: 02 | timestamp u64 BE | deleted_at u64 BE
//! ```
//!
//! Every live record is written as kind 04, which leaves out what a record does not
//! have: the session a Tyrant write creates (a creation time, no expiry, the default
//! content type) costs 18 bytes besides its value, where kind 03 took 52. The kinds
//! earlier versions wrote are still read, so a file is never rewritten on upgrade; a
//! record moves to kind 04 when its key is next written:
//!
//! ```text
//! live (v1): 01 | timestamp u64 BE | expires_at u64 BE (0 = never) | ct_len u16 BE | content type | value
//! session (v2, v3): 03 | timestamp u64 BE | expires_at u64 BE | flags u8 (0x01..0x10 as above)
//!               | the same optional parts, in the same order | ct_len u16 BE | content type | value
//! ```

use crate::record::{FieldClocks, Meta, Record, State};

const LIVE_V1: u8 = 1;
const TOMBSTONE: u8 = 2;
const SESSION_V2: u8 = 3;
const LIVE: u8 = 4;
const TOMBSTONE_LEN: usize = 1 + 8 + 8;

const HAS_CREATED: u8 = 0x01;
const HAS_LIFETIME: u8 = 0x02;
const HAS_OWNER: u8 = 0x04;
const HAS_FIELDS: u8 = 0x08;
const HAS_CLIENT_FLAGS: u8 = 0x10;
/// The metadata parts, shared by kinds 03 and 04.
const META_PARTS: u8 = HAS_CREATED | HAS_LIFETIME | HAS_OWNER | HAS_FIELDS | HAS_CLIENT_FLAGS;
const HAS_EXPIRY: u8 = 0x20;
const HAS_CONTENT_TYPE: u8 = 0x40;
const KNOWN_PARTS: u8 = META_PARTS | HAS_EXPIRY | HAS_CONTENT_TYPE;

/// The content type a kind-04 record without part 0x40 has. Part of the file format:
/// it stays this string even if the service's default
/// ([`crate::record::DEFAULT_CONTENT_TYPE`]) ever changes.
const IMPLIED_CONTENT_TYPE: &str = "application/octet-stream";

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
            let implied = ct == IMPLIED_CONTENT_TYPE.as_bytes();
            // An expiry of 0 means "never" everywhere else; it is no part here.
            let expires_at = expires_at.filter(|at| *at != 0);
            let mut parts = meta_parts(&record.meta);
            if expires_at.is_some() {
                parts |= HAS_EXPIRY;
            }
            if !implied {
                parts |= HAS_CONTENT_TYPE;
            }
            out.reserve(1 + 8 + 1 + 8 + 2 + ct.len() + value.len());
            out.push(LIVE);
            out.extend_from_slice(&record.timestamp.to_be_bytes());
            out.push(parts);
            if let Some(at) = expires_at {
                out.extend_from_slice(&at.to_be_bytes());
            }
            encode_meta(&record.meta, out);
            if !implied {
                out.extend_from_slice(&(ct.len() as u16).to_be_bytes());
                out.extend_from_slice(ct);
            }
            out.extend_from_slice(value);
        }
        State::Tombstone { deleted_at } => {
            out.push(TOMBSTONE);
            out.extend_from_slice(&record.timestamp.to_be_bytes());
            out.extend_from_slice(&deleted_at.to_be_bytes());
        }
    }
}

/// Which metadata parts `meta` has.
fn meta_parts(meta: &Meta) -> u8 {
    let mut parts = 0;
    if meta.created_at.is_some() {
        parts |= HAS_CREATED;
    }
    if meta.lifetime_ends.is_some() {
        parts |= HAS_LIFETIME;
    }
    if meta.owner.is_some() {
        parts |= HAS_OWNER;
    }
    if meta.fields.is_some() {
        parts |= HAS_FIELDS;
    }
    if meta.flags != 0 {
        parts |= HAS_CLIENT_FLAGS;
    }
    parts
}

/// The metadata parts that are present, in order. An owner is at most 256 bytes (the
/// service checks) and is cut at a character boundary below 64 KiB regardless, so
/// the length always fits.
fn encode_meta(meta: &Meta, out: &mut Vec<u8>) {
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

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
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

    /// A u16 length, then that many bytes of UTF-8.
    fn short_string(&mut self) -> Option<String> {
        let len = self.u16()? as usize;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }
}

/// Decode a stored record; `None` means the bytes are not a record of any schema
/// version this build reads (v1 to v4): corruption.
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let mut r = Reader { bytes, at: 0 };
    let kind = r.u8()?;
    let timestamp = r.u64()?;
    let (expires_at, meta, content_type) = match kind {
        LIVE => {
            let parts = r.u8()?;
            if parts & !KNOWN_PARTS != 0 {
                return None;
            }
            let expires_at = if parts & HAS_EXPIRY != 0 {
                // Never 0: a record that does not expire leaves the bit clear.
                Some(r.u64().filter(|at| *at != 0)?)
            } else {
                None
            };
            let meta = decode_meta(parts & META_PARTS, &mut r)?;
            let content_type = if parts & HAS_CONTENT_TYPE != 0 {
                r.short_string()?
            } else {
                IMPLIED_CONTENT_TYPE.to_string()
            };
            (expires_at, meta, content_type)
        }
        TOMBSTONE if bytes.len() == TOMBSTONE_LEN => {
            return Some(Record::tombstone(timestamp, r.u64()?));
        }
        LIVE_V1 | SESSION_V2 => {
            let when = r.u64()?;
            let meta = if kind == SESSION_V2 {
                let parts = r.u8()?;
                if parts & !META_PARTS != 0 {
                    return None;
                }
                decode_meta(parts, &mut r)?
            } else {
                Meta::default()
            };
            ((when != 0).then_some(when), meta, r.short_string()?)
        }
        _ => return None,
    };
    let mut record = Record::live(timestamp, r.rest().to_vec(), content_type, expires_at);
    record.meta = meta;
    Some(record)
}

/// The metadata parts named in `parts`, in order.
fn decode_meta(parts: u8, r: &mut Reader<'_>) -> Option<Meta> {
    let mut meta = Meta::default();
    if parts & HAS_CREATED != 0 {
        meta.created_at = Some(r.u64()?);
    }
    if parts & HAS_LIFETIME != 0 {
        meta.lifetime_ends = Some(r.u64()?);
    }
    if parts & HAS_OWNER != 0 {
        meta.owner = Some(r.short_string()?);
    }
    if parts & HAS_FIELDS != 0 {
        let len = r.u32()? as usize;
        meta.fields = Some(FieldClocks::decode(r.take(len)?)?);
    }
    if parts & HAS_CLIENT_FLAGS != 0 {
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
            prop_assert_eq!(buf[0], LIVE);
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

    fn encoded(record: &Record) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(record, &mut buf);
        buf
    }

    #[test]
    fn a_value_without_expiry_metadata_or_content_type_costs_ten_bytes_besides_itself() {
        let value = vec![b'x'; 200];
        let bytes = encoded(&Record::live(
            7,
            value.clone(),
            IMPLIED_CONTENT_TYPE.into(),
            None,
        ));
        let mut expected = vec![LIVE];
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.push(0);
        expected.extend_from_slice(&value);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn only_the_parts_a_record_has_are_written() {
        let mut record = Record::live(7, b"v".to_vec(), "text/plain".into(), Some(9));
        record.meta.created_at = Some(5);
        let bytes = encoded(&record);
        let mut expected = vec![LIVE];
        expected.extend_from_slice(&7u64.to_be_bytes());
        expected.push(HAS_EXPIRY | HAS_CREATED | HAS_CONTENT_TYPE);
        expected.extend_from_slice(&9u64.to_be_bytes());
        expected.extend_from_slice(&5u64.to_be_bytes());
        expected.extend_from_slice(&10u16.to_be_bytes());
        expected.extend_from_slice(b"text/plain");
        expected.push(b'v');
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), Some(record));
    }

    #[test]
    fn an_expiry_of_zero_is_written_as_none() {
        let bytes = encoded(&Record::live(1, b"v".to_vec(), "a/b".into(), Some(0)));
        assert_eq!(bytes[9] & HAS_EXPIRY, 0);
        assert_eq!(
            decode(&bytes),
            Some(Record::live(1, b"v".to_vec(), "a/b".into(), None))
        );
    }

    #[test]
    fn kind_04_bytes_the_encoder_never_writes_are_corrupt_or_equivalent() {
        let plain = encoded(&Record::live(1, b"v".to_vec(), "a/b".into(), None));
        // An unknown part.
        let mut unknown = plain.clone();
        unknown[9] |= 0x80;
        assert_eq!(decode(&unknown), None);
        // An expiry part holding 0.
        let mut zero = plain[..10].to_vec();
        zero[9] |= HAS_EXPIRY;
        zero.extend_from_slice(&0u64.to_be_bytes());
        zero.extend_from_slice(&plain[10..]);
        assert_eq!(decode(&zero), None);
        // A client-flags part holding 0.
        let mut flags = plain[..10].to_vec();
        flags[9] |= HAS_CLIENT_FLAGS;
        flags.extend_from_slice(&0u32.to_be_bytes());
        flags.extend_from_slice(&plain[10..]);
        assert_eq!(decode(&flags), None);
        // Cut short inside a part.
        assert_eq!(decode(&plain[..11]), None);
        // The implied content type spelled out means the same record.
        let mut spelled = vec![LIVE];
        spelled.extend_from_slice(&1u64.to_be_bytes());
        spelled.push(HAS_CONTENT_TYPE);
        spelled.extend_from_slice(&(IMPLIED_CONTENT_TYPE.len() as u16).to_be_bytes());
        spelled.extend_from_slice(IMPLIED_CONTENT_TYPE.as_bytes());
        spelled.push(b'v');
        assert_eq!(
            decode(&spelled),
            Some(Record::live(
                1,
                b"v".to_vec(),
                IMPLIED_CONTENT_TYPE.into(),
                None
            ))
        );
    }

    #[test]
    fn records_of_earlier_versions_still_decode() {
        // Kind 01 (v1): no metadata, every field present.
        let mut v1 = vec![LIVE_V1];
        v1.extend_from_slice(&3u64.to_be_bytes());
        v1.extend_from_slice(&9u64.to_be_bytes());
        v1.extend_from_slice(&3u16.to_be_bytes());
        v1.extend_from_slice(b"a/b");
        v1.extend_from_slice(b"val");
        assert_eq!(
            decode(&v1),
            Some(Record::live(3, b"val".to_vec(), "a/b".into(), Some(9)))
        );
        // Kind 03 (v3) with client flags; the parts 0x20 and 0x40 are kind 04's only.
        let mut v3 = vec![SESSION_V2];
        v3.extend_from_slice(&3u64.to_be_bytes());
        v3.extend_from_slice(&0u64.to_be_bytes());
        v3.push(HAS_CLIENT_FLAGS);
        v3.extend_from_slice(&2u32.to_be_bytes());
        v3.extend_from_slice(&0u16.to_be_bytes());
        let mut expected = Record::live(3, Vec::new(), String::new(), None);
        expected.meta.flags = 2;
        assert_eq!(decode(&v3), Some(expected));
        v3[17] |= HAS_EXPIRY;
        assert_eq!(decode(&v3), None);
    }
}
