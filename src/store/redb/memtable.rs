//! Changes that are logged but not yet in redb.
//!
//! A write is applied here and appended to the write-ahead log, under one lock, and
//! is then acknowledged (after the log's sync, unless the store is relaxed); redb gets
//! it at the next checkpoint, which writes a whole table of changes in one durable
//! commit. Reads look here first, then in the table being checkpointed, then in redb.

use std::collections::HashMap;

use crate::record::{Record, State};

/// What a memtable says about one key.
#[derive(Debug, Clone)]
pub enum Slot {
    Put(Record),
    Removed,
}

/// Rough per-entry overhead beyond key and value bytes (map slot, record fields).
const ENTRY_OVERHEAD: usize = 96;

#[derive(Debug, Default)]
pub struct Memtable {
    map: HashMap<Vec<u8>, Slot>,
    /// Everything beneath this table (older tables and redb) was cleared.
    cleared: bool,
    /// Approximate memory held, for the checkpoint trigger and backpressure.
    bytes: usize,
    /// Earliest expiry or delete time of any record put here (a lower bound: records
    /// replaced since may have held it), so the sweeper knows whether this table can
    /// hold anything due without looking.
    min_due: Option<u64>,
}

/// The answer of one layer: decided here, or ask the layer beneath.
pub enum Lookup<'a> {
    Found(Option<&'a Record>),
    Below,
}

impl Memtable {
    pub fn lookup(&self, key: &[u8]) -> Lookup<'_> {
        match self.map.get(key) {
            Some(Slot::Put(record)) => Lookup::Found(Some(record)),
            Some(Slot::Removed) => Lookup::Found(None),
            None if self.cleared => Lookup::Found(None),
            None => Lookup::Below,
        }
    }

    pub fn insert(&mut self, key: Vec<u8>, slot: Slot) {
        let added = size(&key, &slot);
        let due = match &slot {
            Slot::Put(Record {
                state:
                    State::Live {
                        expires_at: Some(at),
                        ..
                    },
                ..
            }) => Some(*at),
            Slot::Put(Record {
                state: State::Tombstone { deleted_at },
                ..
            }) => Some(*deleted_at),
            _ => None,
        };
        if let Some(due) = due {
            self.min_due = Some(self.min_due.map_or(due, |min| min.min(due)));
        }
        if let Some(old) = self.map.get_mut(&key) {
            self.bytes = self.bytes.saturating_sub(size(&key, old)) + added;
            *old = slot;
        } else {
            self.bytes += added;
            self.map.insert(key, slot);
        }
    }

    /// Forget every entry and hide everything beneath.
    pub fn clear(&mut self) {
        self.map.clear();
        self.cleared = true;
        self.bytes = 0;
        self.min_due = None;
    }

    /// Whether a record put here may have expired or been deleted at or before `cutoff`.
    pub fn may_hold_due(&self, cutoff: u64) -> bool {
        self.min_due.is_some_and(|due| due <= cutoff)
    }

    pub fn cleared(&self) -> bool {
        self.cleared
    }

    /// Nothing to checkpoint.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty() && !self.cleared
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Slot)> {
        self.map.iter().map(|(k, v)| (k.as_slice(), v))
    }
}

fn size(key: &[u8], slot: &Slot) -> usize {
    let value = match slot {
        Slot::Put(record) => record_bytes(record),
        Slot::Removed => 0,
    };
    key.len() + value + ENTRY_OVERHEAD
}

/// The bytes a record holds beyond its fixed fields (value and content type).
pub fn record_bytes(record: &Record) -> usize {
    match &record.state {
        State::Live {
            value,
            content_type,
            ..
        } => value.len() + content_type.len(),
        State::Tombstone { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleared_table_hides_what_is_beneath_and_counts_bytes() {
        let mut table = Memtable::default();
        assert!(matches!(table.lookup(b"a"), Lookup::Below));
        table.insert(
            b"a".to_vec(),
            Slot::Put(Record::live(1, vec![0; 100], String::new(), None)),
        );
        let one = table.bytes();
        assert!(one >= 101);
        table.insert(
            b"a".to_vec(),
            Slot::Put(Record::live(2, vec![0; 10], String::new(), None)),
        );
        assert_eq!(table.bytes(), one - 90);
        assert!(!table.may_hold_due(u64::MAX));
        table.insert(b"b".to_vec(), Slot::Put(Record::tombstone(5, 70)));
        assert!(table.may_hold_due(70) && !table.may_hold_due(69));
        table.insert(b"b".to_vec(), Slot::Removed);
        assert!(matches!(table.lookup(b"b"), Lookup::Found(None)));
        table.clear();
        assert!(!table.is_empty());
        assert_eq!(table.len(), 0);
        assert!(matches!(table.lookup(b"a"), Lookup::Found(None)));
    }
}
