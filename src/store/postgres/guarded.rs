//! The guarded write on PostgreSQL: one upsert that applies a plain write when the
//! rule says Apply, and otherwise the rule itself, run with the row locked.

use deadpool_postgres::GenericClient;
use deadpool_postgres::tokio_postgres::types::ToSql;

use super::error::from_driver;
use super::locked_update;
use super::sql::{self, Params, lapse_cutoff, to_sql};
use crate::guard::{self, Change, Condition};
use crate::record::Record;
use crate::store::{GuardClock, Guarded, GuardedWrite, StoreError};

/// The guarded upsert ([`sql::GUARDED_UPSERT`]) on `client`, for the writes it can
/// decide alone: a whole-value put or delete without `If-Match`, with any session
/// metadata (owner change, lifetime), onto an absent key, a row that is not live, or a
/// live row without owner, lifetime or field clocks. `Some(Applied)` when it applied;
/// `None` when it refused or the write is not one it decides — the caller then runs
/// [`resolve_locked`], which classifies a refusal (stale, tie, repeat) and handles
/// sessions with metadata with [`guard::resolve`] itself, so the verdicts are never
/// re-implemented in SQL.
///
/// The incoming row is the record [`guard::resolve`] writes onto a key with no live
/// value: metadata from [`guard::session_meta`]`(None, …)` (owner as asked, created
/// now, the lifetime counted from now) and the requested expiry capped by that
/// lifetime. Onto a live row the statement keeps the row's creation and (absent)
/// lifetime and takes the uncapped requested expiry instead, as the rule does.
pub async fn upsert_on<C: GenericClient>(
    client: &C,
    write: &GuardedWrite,
    clock: GuardClock,
) -> Result<Option<Guarded>, StoreError> {
    let if_absent = match write.condition {
        Condition::Always => false,
        Condition::IfAbsent => true,
        Condition::IfMatch(_) | Condition::IfNoneMatch(_) | Condition::IfMatchAndNoneMatch(..) => {
            return Ok(None);
        }
    };
    let (record, requested_expiry) = match &write.change {
        Change::Put {
            value,
            content_type,
            expires_at,
        } => {
            let meta = guard::session_meta(None, &write.session, clock.now);
            let capped = guard::cap(*expires_at, meta.lifetime_ends);
            let mut record =
                Record::live(write.timestamp, value.clone(), content_type.clone(), capped);
            record.meta = meta;
            (record, *expires_at)
        }
        Change::Delete => (Record::tombstone(write.timestamp, clock.now), None),
        Change::Patch { .. } | Change::Restore(_) => return Ok(None),
    };
    let upsert = client
        .prepare_cached(sql::GUARDED_UPSERT)
        .await
        .map_err(from_driver)?;
    let p = Params::of(&record);
    let now = to_sql(clock.now);
    let cutoff = lapse_cutoff(clock.now, clock.grace_micros).map(to_sql);
    let requested_expiry = requested_expiry.map(to_sql);
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(16);
    params.push(&write.key);
    params.extend(p.values());
    params.extend([
        &now as &(dyn ToSql + Sync),
        &cutoff,
        &if_absent,
        &requested_expiry,
    ]);
    let applied = client
        .query_opt(&upsert, &params)
        .await
        .map_err(from_driver)?;
    match applied {
        Some(row) => {
            let was_live: bool = row.try_get(0).map_err(from_driver)?;
            Ok(Some(Guarded::Applied { was_live }))
        }
        None => Ok(None),
    }
}

/// One guarded write inside `txn`, with the key's row locked: [`guard::resolve`]
/// decides and computes the record, as the embedded engine does under its lock.
/// A stored row that cannot be decoded refuses this write only ([`Guarded::Corrupt`]).
pub async fn resolve_locked<C: GenericClient + Sync>(
    txn: &C,
    write: &GuardedWrite,
    clock: GuardClock,
) -> Result<Guarded, StoreError> {
    let result = locked_update(txn, &write.key, |stored| {
        let resolved = guard::resolve(stored.as_ref(), write, clock);
        (resolved.record, resolved.answer)
    })
    .await;
    match result {
        Ok((_, answer)) => Ok(answer),
        Err(StoreError::Corrupt { .. }) => Ok(Guarded::Corrupt),
        Err(e) => Err(e),
    }
}
