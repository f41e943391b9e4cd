//! On-disk encoding of a [`Record`] (schema v1; see migrations/v1.md).
//!
//! ```text
//! live:      01 | timestamp u64 BE | expires_at u64 BE (0 = never) | ct_len u16 BE | content type | value
//! tombstone: 02 | timestamp u64 BE | deleted_at u64 BE
//! ```

use crate::record::{Record, State};

const LIVE: u8 = 1;
const TOMBSTONE: u8 = 2;
const HEADER: usize = 1 + 8 + 8;

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
            out.push(LIVE);
            out.extend_from_slice(&record.timestamp.to_be_bytes());
            out.extend_from_slice(&expires_at.unwrap_or(0).to_be_bytes());
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

/// Decode a stored record; `None` means the bytes are not a v1 record (corruption).
pub fn decode(bytes: &[u8]) -> Option<Record> {
    let kind = *bytes.first()?;
    let timestamp = u64::from_be_bytes(bytes.get(1..9)?.try_into().ok()?);
    let when = u64::from_be_bytes(bytes.get(9..17)?.try_into().ok()?);
    match kind {
        LIVE => {
            let ct_len = u16::from_be_bytes(bytes.get(17..19)?.try_into().ok()?) as usize;
            let ct = bytes.get(19..19 + ct_len)?;
            let value = bytes.get(19 + ct_len..)?;
            Some(Record::live(
                timestamp,
                value.to_vec(),
                String::from_utf8(ct.to_vec()).ok()?,
                (when != 0).then_some(when),
            ))
        }
        TOMBSTONE if bytes.len() == HEADER => Some(Record::tombstone(timestamp, when)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
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
