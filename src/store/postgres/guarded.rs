//! The guarded write as SQL: one upsert that applies when the rule says Apply, and a
//! follow-up read that lets [`guard::decide`] classify a refusal.

use deadpool_postgres::GenericClient;

use super::error::from_driver;
use super::sql::{self, DecodeError, Params, lapse_cutoff, to_sql};
use crate::guard::{self, Intent, Verdict};
use crate::store::{GuardClock, Guarded, GuardedWrite, StoreError};

/// Upsert / follow-up rounds before a guarded write gives up. A refused upsert is
/// only retried when the follow-up read shows a row that would now let it apply
/// (the refusing row was swept or replaced by an unguarded write in between), which
/// needs another writer to change the key again each round.
const MAX_GUARD_ROUNDS: usize = 16;
/// One guarded write on `client` (a pooled connection, or a batch's transaction).
///
/// The upsert ([`sql::GUARDED_UPSERT`]) applies the write when the rule says Apply.
/// When it refuses, a new statement reads the row that refused it and the verdict
/// comes from [`guard::decide`] — so Stale / Tie / Repeat are classified by the rule
/// itself, not re-implemented in SQL. If that row would now let the write apply (it
/// was swept, or rewritten by an unguarded write, between the two statements), the
/// upsert runs again.
pub async fn guarded_on<C: GenericClient>(
    client: &C,
    write: &GuardedWrite,
    clock: GuardClock,
) -> Result<Guarded, StoreError> {
    let upsert = client
        .prepare_cached(sql::GUARDED_UPSERT)
        .await
        .map_err(from_driver)?;
    let p = Params::of(&write.record);
    let now = to_sql(clock.now);
    let cutoff = lapse_cutoff(clock.now, clock.grace_micros).map(to_sql);
    let intent = Intent::of(&write.record);
    for _ in 0..MAX_GUARD_ROUNDS {
        let applied = client
            .query_opt(
                &upsert,
                &[
                    &write.key,
                    &p.ts,
                    &p.tombstone,
                    &p.value,
                    &p.content_type,
                    &p.expires_at,
                    &p.deleted_at,
                    &now,
                    &cutoff,
                    &write.if_absent,
                ],
            )
            .await
            .map_err(from_driver)?;
        if let Some(row) = applied {
            let was_live: bool = row.try_get(0).map_err(from_driver)?;
            return Ok(Guarded::Applied { was_live });
        }
        let get = client.prepare_cached(sql::GET).await.map_err(from_driver)?;
        let Some(row) = client
            .query_opt(&get, &[&write.key])
            .await
            .map_err(from_driver)?
        else {
            continue; // swept since the upsert: the key is free now
        };
        let stored = match sql::decode(&row, 0) {
            Ok(stored) => stored,
            Err(DecodeError::Shape) => return Ok(Guarded::Corrupt),
            Err(DecodeError::Column(e)) => return Err(from_driver(e)),
        };
        if write.if_absent && stored.is_live(clock.now) {
            return Ok(Guarded::Exists);
        }
        match guard::decide(
            Some(&stored),
            write.record.timestamp,
            intent,
            clock.now,
            clock.grace_micros,
        ) {
            Verdict::Apply => continue,
            Verdict::Repeat => return Ok(Guarded::Repeated),
            Verdict::Stale { current } => return Ok(Guarded::Stale { current }),
            Verdict::Tie { current } => return Ok(Guarded::Tie { current }),
        }
    }
    Err(StoreError::engine(
        "guarded write: the key kept changing under it; gave up",
    ))
}
