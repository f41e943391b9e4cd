//! What the store keeps per key, independent of how it is encoded on disk.

use std::collections::BTreeMap;

/// Content type recorded for values written without one (e.g. over the Tyrant port).
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// One stored key: the timestamp of the write that produced it, and either a live
/// value or a tombstone left by a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Client timestamp (microseconds since the Unix epoch) of the newest applied
    /// write: of the last whole-value write, or of a newer field-level one
    /// ([`Meta::fields`]).
    pub timestamp: u64,
    pub state: State,
    /// What a session store keeps besides the value; empty for records written without
    /// any of it (and always for tombstones).
    pub meta: Meta,
}

/// A live record's session metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// The session's owner (`X-Session-Owner`), indexed for "every session of one user".
    pub owner: Option<String>,
    /// Server time (µs) of the first write after the key was absent; `None` for
    /// records written before tidemark kept it.
    pub created_at: Option<u64>,
    /// Server time (µs) past which no TTL or touch can move the expiry: creation plus
    /// the absolute lifetime (`X-Max-Lifetime`, `--max-session-lifetime`).
    pub lifetime_ends: Option<u64>,
    /// Per-field timestamps of a JSON-object document, kept only while some field is
    /// newer than the last whole-value write.
    pub fields: Option<FieldClocks>,
    /// memcached client flags of the value (the 32-bit number PHP, pylibmc and Dalli
    /// use to mark serialised or compressed values): set by a memcached storage
    /// command, kept by append/prepend/incr/touch, 0 for a value written any other way.
    pub flags: u32,
}

/// The field-level clocks of a JSON-object document (see `crate::guard::document`).
///
/// Every top-level field has a timestamp: its entry in `clocks`, or else `base`. So a
/// document written whole by one PUT needs no clocks at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldClocks {
    /// Timestamp of the last whole-value write (PUT or DELETE); 0 when the document was
    /// created by a PATCH onto a key that had nothing.
    pub base: u64,
    /// Whether that whole-value write was a DELETE (or there was none).
    pub base_deleted: bool,
    /// Fields written or removed after `base`, each with a timestamp newer than it.
    pub clocks: BTreeMap<String, FieldClock>,
}

/// When one field was last written, and whether that write removed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldClock {
    pub timestamp: u64,
    pub removed: bool,
}

impl FieldClocks {
    /// Bytes of [`FieldClocks::encode`] (big-endian):
    /// `base u64 | base_deleted u8 | count u32 | (name_len u32 | name | ts u64 | removed u8)*`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.base.to_be_bytes());
        out.push(u8::from(self.base_deleted));
        out.extend_from_slice(&(self.clocks.len() as u32).to_be_bytes());
        for (name, clock) in &self.clocks {
            out.extend_from_slice(&(name.len() as u32).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&clock.timestamp.to_be_bytes());
            out.push(u8::from(clock.removed));
        }
    }

    /// The inverse of [`FieldClocks::encode`]; `None` for anything it did not write.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let mut at = 0usize;
        let mut take = |n: usize| {
            let piece = bytes.get(at..at.checked_add(n)?)?;
            at += n;
            Some(piece)
        };
        let base = u64::from_be_bytes(take(8)?.try_into().ok()?);
        let base_deleted = match take(1)?[0] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let count = u32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut clocks = BTreeMap::new();
        for _ in 0..count {
            let len = u32::from_be_bytes(take(4)?.try_into().ok()?) as usize;
            let name = String::from_utf8(take(len)?.to_vec()).ok()?;
            let timestamp = u64::from_be_bytes(take(8)?.try_into().ok()?);
            let removed = match take(1)?[0] {
                0 => false,
                1 => true,
                _ => return None,
            };
            clocks.insert(name, FieldClock { timestamp, removed });
        }
        (at == bytes.len()).then_some(Self {
            base,
            base_deleted,
            clocks,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Live {
        value: Vec<u8>,
        content_type: String,
        /// Server time (µs) after which the value reads as absent.
        expires_at: Option<u64>,
    },
    /// A delete; kept so that an older write arriving late cannot resurrect the key.
    Tombstone {
        /// Server time (µs) the delete was applied; the grace period counts from here.
        deleted_at: u64,
    },
}

impl Record {
    pub fn live(
        timestamp: u64,
        value: Vec<u8>,
        content_type: String,
        expires_at: Option<u64>,
    ) -> Self {
        Self {
            timestamp,
            state: State::Live {
                value,
                content_type,
                expires_at,
            },
            meta: Meta::default(),
        }
    }

    pub fn tombstone(timestamp: u64, deleted_at: u64) -> Self {
        Self {
            timestamp,
            state: State::Tombstone { deleted_at },
            meta: Meta::default(),
        }
    }

    /// The strong validator of this record's value (`ETag`, `If-Match`): the newest
    /// timestamp, which names one whole-value write, followed — for a document with
    /// field clocks, whose content can change under the same newest timestamp — by a
    /// CRC-32 of those clocks.
    pub fn etag(&self) -> String {
        match &self.meta.fields {
            None => whole_value_etag(self.timestamp),
            Some(fields) => {
                let mut bytes = Vec::new();
                fields.encode(&mut bytes);
                format!("\"{}-{:08x}\"", self.timestamp, crc32fast::hash(&bytes))
            }
        }
    }

    /// The memcached CAS unique of this record: the newest timestamp, which unguarded
    /// writes make strictly increasing ([`server_stamp`](crate::service::tyrant::server_stamp))
    /// and the guard lets name two contents only once the first is long gone (expired or
    /// deleted past the grace period), mixed with a CRC-32 of the value and of any field
    /// clocks (whose content can change under the same newest timestamp, as for
    /// [`Record::etag`]). A change of expiry alone keeps it.
    pub fn cas_unique(&self) -> u64 {
        let mut crc = crc32fast::Hasher::new();
        if let State::Live { value, .. } = &self.state {
            crc.update(value);
        }
        if let Some(fields) = &self.meta.fields {
            let mut bytes = Vec::new();
            fields.encode(&mut bytes);
            crc.update(&bytes);
        }
        self.timestamp.rotate_left(32) ^ u64::from(crc.finalize())
    }

    /// The value, if this record reads as present at `now`.
    pub fn live_value(&self, now: u64) -> Option<&[u8]> {
        match &self.state {
            State::Live {
                value, expires_at, ..
            } if expires_at.is_none_or(|at| now < at) => Some(value),
            _ => None,
        }
    }

    pub fn is_live(&self, now: u64) -> bool {
        self.live_value(now).is_some()
    }

    /// Until when (server µs, exclusive) this record's timestamp still guards the key;
    /// `None` means forever (a live value without expiry).
    pub fn guards_until(&self, grace_micros: u64) -> Option<u64> {
        match self.state {
            State::Live { expires_at, .. } => expires_at.map(|at| at.saturating_add(grace_micros)),
            State::Tombstone { deleted_at } => Some(deleted_at.saturating_add(grace_micros)),
        }
    }
}

/// The ETag of a value written whole at `timestamp` (no field clocks): `"<timestamp>"`,
/// built without the formatting machinery, as every GET and PUT answer carries one.
pub fn whole_value_etag(timestamp: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(timestamp);
    let mut etag = String::with_capacity(digits.len() + 2);
    etag.push('"');
    etag.push_str(digits);
    etag.push('"');
    etag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_value_etag_is_the_timestamp_in_double_quotes() {
        for t in [0, 9, 10, 1_767_225_600_000_000, u64::MAX] {
            assert_eq!(whole_value_etag(t), format!("\"{t}\""));
        }
    }

    #[test]
    fn the_cas_unique_follows_content_not_expiry() {
        let a = Record::live(7, b"a".to_vec(), DEFAULT_CONTENT_TYPE.into(), None);
        let b = Record::live(7, b"b".to_vec(), DEFAULT_CONTENT_TYPE.into(), None);
        let a_later = Record::live(8, b"a".to_vec(), DEFAULT_CONTENT_TYPE.into(), None);
        let a_expiring = Record::live(7, b"a".to_vec(), DEFAULT_CONTENT_TYPE.into(), Some(99));
        assert_ne!(a.cas_unique(), b.cas_unique());
        assert_ne!(a.cas_unique(), a_later.cas_unique());
        assert_eq!(a.cas_unique(), a_expiring.cas_unique());
    }
}
