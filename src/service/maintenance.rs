//! Maintenance outside the request path, shared by the `/admin` routes, the Tyrant
//! `copy` command and the offline commands: export, import (through the guard),
//! the sweeper's purge, and consistent snapshots.

use tokio::sync::mpsc;

use super::{Service, ServiceError};
use crate::guard::{self, Change, Condition, SessionWrite};
use crate::record::{Record, State};
use crate::store::{Guarded, GuardedWrite, Purged, Snapshot};

/// What importing one record did (see [`Service::import`]).
#[derive(Debug)]
pub enum Imported {
    /// Newer than what guarded the key, or the key was free: stored exactly as given.
    Applied,
    /// The identical write was already stored at this timestamp; nothing changed.
    Repeated,
    /// Older than the stored timestamp; nothing changed.
    Stale { current: u64 },
    /// Same timestamp as the stored record, different content; nothing changed.
    Tie { current: u64 },
    /// Refused before the guard was asked: over a size limit, too far in the future,
    /// or the stored record is corrupt.
    Refused(ServiceError),
}

impl Service {
    /// Every stored record — tombstones and expired values included — in key order,
    /// from one consistent snapshot while writes go on. Records arrive through a
    /// channel holding at most `capacity`; a store failure arrives as the last item.
    /// Dropping the receiver stops the scan.
    ///
    /// Must be called from within the Tokio runtime.
    pub fn export(
        &self,
        capacity: usize,
    ) -> mpsc::Receiver<Result<(Vec<u8>, Record), ServiceError>> {
        let mut from_store = self.store.export(capacity);
        let (records, receiver) = mpsc::channel(capacity.max(1));
        tokio::spawn(async move {
            while let Some(item) = from_store.recv().await {
                if records
                    .send(item.map_err(ServiceError::from))
                    .await
                    .is_err()
                {
                    // The reader went away; dropping `from_store` stops the scan.
                    return;
                }
            }
        });
        receiver
    }

    /// Bring in records from an export (or another store), each through the guard
    /// exactly like [`Service::put`] and [`Service::delete`]: a record applies only when
    /// it is newer than what guards its key, so importing an old export never
    /// overwrites newer data. Applied records are stored as given — timestamp, expiry
    /// and delete time included. Returns one outcome per record, in order.
    ///
    /// Records are applied in order as one write (all or nothing), so a later record
    /// for the same key is judged against an earlier one from the call.
    pub async fn import(
        &self,
        records: Vec<(Vec<u8>, Record)>,
    ) -> Result<Vec<Imported>, ServiceError> {
        let now = self.now();
        let mut outcomes: Vec<Option<Imported>> = Vec::with_capacity(records.len());
        let mut writes = Vec::new();
        for (key, record) in records {
            match self.check_import(&key, &record, now) {
                Ok(()) => {
                    outcomes.push(None);
                    writes.push(GuardedWrite {
                        key,
                        timestamp: record.timestamp,
                        change: Change::Restore(record),
                        condition: Condition::Always,
                        session: SessionWrite::default(),
                    });
                }
                Err(refused) => outcomes.push(Some(Imported::Refused(refused))),
            }
        }
        let mut verdicts = self
            .store
            .guarded_batch(writes, self.guard_clock(now))
            .await?
            .into_iter();
        Ok(outcomes
            .into_iter()
            .map(|checked| {
                checked.unwrap_or_else(|| match verdicts.next() {
                    Some(Guarded::Applied { .. }) => Imported::Applied,
                    Some(Guarded::Repeated) => Imported::Repeated,
                    Some(Guarded::Stale { current }) => Imported::Stale { current },
                    Some(Guarded::Tie { current }) => Imported::Tie { current },
                    Some(Guarded::Corrupt) => Imported::Refused(ServiceError::Store(
                        crate::store::StoreError::engine("the stored record is corrupt"),
                    )),
                    // Imports ask for no precondition and patch nothing; anything else
                    // (or a missing verdict) is the engine's bug, reported on the
                    // record rather than as a panic.
                    Some(other) => {
                        Imported::Refused(ServiceError::Store(crate::store::StoreError::engine(
                            format!("the store answered an import with {other:?}"),
                        )))
                    }
                    None => Imported::Refused(ServiceError::Store(
                        crate::store::StoreError::engine("the store gave no verdict"),
                    )),
                })
            })
            .collect())
    }

    /// The limits every write obeys, for a record arriving by import.
    fn check_import(&self, key: &[u8], record: &Record, now: u64) -> Result<(), ServiceError> {
        self.check_key(key)?;
        if let State::Live { value, .. } = &record.state {
            self.check_value(value.len())?;
        }
        // No refusal metric here: these are not client writes.
        guard::check_skew(record.timestamp, now, self.policy.max_future_skew_micros)
            .map_err(ServiceError::FutureTimestamp)
    }

    /// Purge records whose guard lapsed; at most `limit` per call.
    pub async fn sweep(&self, limit: usize) -> Result<Purged, ServiceError> {
        // A guard lapses at deleted_at/expires_at + grace, so only records from at or
        // before now - grace may go. Before that instant nothing can have lapsed; a
        // saturating 0 here would purge records from time 0 that still guard.
        let Some(cutoff) = self.now().checked_sub(self.policy.grace_micros) else {
            return Ok(Purged::default());
        };
        let purged = self.store.purge(cutoff, limit).await?;
        self.metrics
            .swept
            .with_label_values(&["expired"])
            .inc_by(purged.expired as u64);
        self.metrics
            .swept
            .with_label_values(&["tombstone"])
            .inc_by(purged.tombstones as u64);
        Ok(purged)
    }

    /// A consistent copy of the whole store as a database file, open and already
    /// unlinked (see [`Snapshot`]): the backup download and Tyrant `copy` read it.
    pub async fn snapshot(&self) -> Result<Snapshot, ServiceError> {
        Ok(self.store.snapshot().await?)
    }

    /// Whether `path` names the file the store keeps its data in (which a copy must
    /// never overwrite under the open store).
    pub async fn is_data_file(&self, path: std::path::PathBuf) -> bool {
        let Some(live) = self.store.data_file().map(std::path::Path::to_path_buf) else {
            return false;
        };
        tokio::task::spawn_blocking(move || same_file(&path, &live))
            .await
            // Unsure is refused: overwriting the live file would corrupt it.
            .unwrap_or(true)
    }
}

/// Whether `a` names the same existing file as `b` (through any symlink, `..` or hard
/// link). A destination that does not exist yet is never the live file.
#[cfg(unix)]
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Whether `a` names the same existing file as `b` (through any symlink or `..`).
#[cfg(not(unix))]
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    matches!(
        (std::fs::canonicalize(a), std::fs::canonicalize(b)),
        (Ok(a), Ok(b)) if a == b
    )
}
