//! Records read from redb, kept decoded for the next reads of the same keys.
//!
//! At millions of sessions the database file is many times redb's page cache, so a
//! read that misses the memtables walks the B-tree through pages read back from the
//! operating system (a `pread` and a checksum each), even for the small share of
//! sessions in use. This cache keeps what those reads found, absent keys included,
//! bounded by weight (quick_cache: S3-FIFO, which a scan or a one-off read does not
//! flush). Guarded writes read the stored record under the write lock, so a hit there
//! shortens the lock, not only the read.
//!
//! Every entry is what redb holds for its key as of the current snapshot. A checkpoint
//! changes redb, so before readers move to the snapshot taken after it, it brings the
//! entries of the keys it wrote up to date (and drops them all after a clear) and
//! moves the generation on. A reader offers what it read together with the
//! generation of the snapshot it read, and the offer is taken only if that is still
//! the current one, checked under the same lock the checkpoint updates under: a value
//! read from an older snapshot never lands after the checkpoint that replaced it.

use std::sync::{Arc, RwLock};

use prometheus::{IntCounter, IntGauge};
use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::memtable::{Slot, record_bytes};
use crate::metrics::Metrics;
use crate::record::Record;

/// Rough per-entry overhead beyond key and value bytes (cache slot, record fields).
const ENTRY_OVERHEAD: usize = 128;

/// Typical weight of one session entry, for sizing the table up front.
const TYPICAL_ENTRY: usize = 384;

#[derive(Clone)]
struct EntryWeight;

impl Weighter<Vec<u8>, Option<Arc<Record>>> for EntryWeight {
    fn weight(&self, key: &Vec<u8>, found: &Option<Arc<Record>>) -> u64 {
        (ENTRY_OVERHEAD + key.len() + found.as_deref().map_or(0, record_bytes)) as u64
    }
}

pub struct RecordCache {
    /// `None` when the cache is turned off (a size of 0). Records are shared: a hit
    /// hands out a reference count, not a copy of the value, and the guard's read
    /// under the write lock uses it as it is.
    entries: Option<Cache<Vec<u8>, Option<Arc<Record>>, EntryWeight>>,
    /// The generation of the current snapshot: offers from any other are refused.
    /// Checkpoints hold the write side while they update entries.
    generation: RwLock<u64>,
    hits: IntCounter,
    misses: IntCounter,
    bytes: IntGauge,
}

impl RecordCache {
    /// A cache holding up to about `capacity` bytes of entries (0 turns it off).
    pub fn new(capacity: usize, metrics: &Metrics) -> Self {
        let entries = (capacity > 0).then(|| {
            Cache::with_weighter(
                (capacity / TYPICAL_ENTRY).max(16),
                capacity as u64,
                EntryWeight,
            )
        });
        Self {
            entries,
            generation: RwLock::new(0),
            hits: metrics.record_cache_reads.with_label_values(&["hit"]),
            misses: metrics.record_cache_reads.with_label_values(&["miss"]),
            bytes: metrics.record_cache_bytes.clone(),
        }
    }

    /// Whether the cache keeps anything (a size above 0).
    pub fn is_on(&self) -> bool {
        self.entries.is_some()
    }

    /// The generation a snapshot opened now belongs to.
    pub fn generation(&self) -> u64 {
        *self
            .generation
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What redb holds for `key` (`Some(None)`: nothing), if the cache knows.
    pub fn get(&self, key: &[u8]) -> Option<Option<Arc<Record>>> {
        let found = self.entries.as_ref()?.get(key);
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        }
        found
    }

    /// Keep what a read of `key` found in the snapshot of `generation`, unless a
    /// checkpoint has moved on since (or is updating entries right now: the read does
    /// not wait for it).
    pub fn offer(&self, generation: u64, key: &[u8], found: &Option<Arc<Record>>) {
        let Some(entries) = &self.entries else {
            return;
        };
        let Ok(current) = self.generation.try_read() else {
            return;
        };
        if *current == generation {
            entries.insert(key.to_vec(), found.clone());
        }
    }

    /// After a checkpoint wrote `changes` into redb (everything cleared first, if
    /// `cleared`): update the cached entries of those keys, move to the next
    /// generation and return it, for the snapshot opened after that checkpoint.
    pub fn advance<'a>(
        &self,
        cleared: bool,
        changes: impl IntoIterator<Item = (&'a [u8], &'a Slot)>,
    ) -> u64 {
        let mut generation = self
            .generation
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *generation += 1;
        if let Some(entries) = &self.entries {
            if cleared {
                entries.clear();
            }
            for (key, slot) in changes {
                // Only keys already cached: most keys a checkpoint writes nobody reads
                // before their next write. No offer can land meanwhile (they need the
                // read side), so the check and the replacement cannot be split.
                if entries.contains_key(key) {
                    let found = match slot {
                        Slot::Put(record) => Some(Arc::new(record.clone())),
                        Slot::Removed => None,
                    };
                    // Fails only if the entry was evicted in between: nothing to update.
                    let _ = entries.replace(key.to_vec(), found, true);
                }
            }
        }
        *generation
    }

    /// Set the `tidemark_record_cache_bytes` gauge to what the cache holds now.
    pub fn publish_bytes(&self) {
        let held = self.entries.as_ref().map_or(0, |entries| entries.weight());
        self.bytes.set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(timestamp: u64, value: &[u8]) -> Record {
        Record::live(timestamp, value.to_vec(), String::new(), None)
    }

    fn shared(timestamp: u64, value: &[u8]) -> Option<Arc<Record>> {
        Some(Arc::new(record(timestamp, value)))
    }

    #[test]
    fn a_checkpoint_updates_cached_keys_it_wrote_and_leaves_the_rest() {
        let cache = RecordCache::new(1 << 20, &Metrics::new());
        let first = cache.generation();
        cache.offer(first, b"a", &shared(1, b"old"));
        cache.offer(first, b"b", &shared(1, b"kept"));
        cache.offer(first, b"c", &None);
        let written = [
            (b"a".to_vec(), Slot::Put(record(2, b"new"))),
            (b"c".to_vec(), Slot::Put(record(3, b"born"))),
            (b"d".to_vec(), Slot::Put(record(4, b"uncached"))),
        ];
        let next = cache.advance(false, written.iter().map(|(k, s)| (k.as_slice(), s)));
        assert_ne!(next, first);
        assert_eq!(cache.get(b"a"), Some(shared(2, b"new")));
        assert_eq!(cache.get(b"b"), Some(shared(1, b"kept")));
        assert_eq!(cache.get(b"c"), Some(shared(3, b"born")));
        assert_eq!(
            cache.get(b"d"),
            None,
            "a checkpoint does not fill the cache"
        );
        let removed = [(b"a".to_vec(), Slot::Removed)];
        cache.advance(false, removed.iter().map(|(k, s)| (k.as_slice(), s)));
        assert_eq!(cache.get(b"a"), Some(None));
    }

    #[test]
    fn a_read_from_a_snapshot_older_than_the_last_checkpoint_is_not_kept() {
        let cache = RecordCache::new(1 << 20, &Metrics::new());
        let before = cache.generation();
        let written = [(b"k".to_vec(), Slot::Put(record(2, b"new")))];
        let after = cache.advance(false, written.iter().map(|(k, s)| (k.as_slice(), s)));
        // A reader that took the old snapshot before the checkpoint offers late.
        cache.offer(before, b"k", &shared(1, b"old"));
        assert_eq!(cache.get(b"k"), None);
        cache.offer(after, b"k", &shared(2, b"new"));
        assert_eq!(cache.get(b"k"), Some(shared(2, b"new")));
    }

    #[test]
    fn a_checkpoint_after_a_clear_drops_every_entry() {
        let cache = RecordCache::new(1 << 20, &Metrics::new());
        let generation = cache.generation();
        cache.offer(generation, b"a", &shared(1, b"v"));
        cache.advance(true, std::iter::empty());
        assert_eq!(cache.get(b"a"), None);
    }

    #[test]
    fn a_cache_of_size_zero_keeps_nothing() {
        let cache = RecordCache::new(0, &Metrics::new());
        let generation = cache.generation();
        cache.offer(generation, b"a", &shared(1, b"v"));
        assert_eq!(cache.get(b"a"), None);
    }

    #[test]
    fn entries_beyond_the_capacity_are_evicted() {
        let cache = RecordCache::new(64 << 10, &Metrics::new());
        let generation = cache.generation();
        for i in 0..10_000u32 {
            cache.offer(generation, &i.to_be_bytes(), &shared(1, &[0; 200]));
        }
        let entries = cache.entries.as_ref().map_or(0, |e| e.weight());
        assert!(entries <= 64 << 10, "{entries} bytes held");
        assert!(cache.get(&9_999u32.to_be_bytes()).is_some());
    }
}
