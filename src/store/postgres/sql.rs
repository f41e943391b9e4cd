//! The statements the engine runs, and how a [`Record`] maps to a row and back.
//!
//! Every u64 the record carries (timestamp, expiry, deletion time) is stored as a
//! bigint through [`to_sql`], which flips the sign bit: the map is order-preserving,
//! so `a < b` in SQL exactly when it holds for the u64s. SQL therefore only ever
//! compares these columns (with parameters mapped the same way), never adds to them;
//! sums such as "expiry + grace" are turned into a cutoff in Rust ([`lapse_cutoff`]).

use tokio_postgres::Row;

use crate::record::{Record, State};

/// u64 → bigint, order-preserving: 0 → i64::MIN, 2^63 → 0, u64::MAX → i64::MAX.
pub fn to_sql(value: u64) -> i64 {
    (value ^ (1 << 63)) as i64
}

/// The inverse of [`to_sql`].
pub fn from_sql(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

/// The latest expiry or deletion time whose guard has lapsed at server time `now`:
/// a gone record stops guarding when `at.saturating_add(grace) <= now`
/// ([`Record::guards_until`]), which is `at <= now - grace`, or every `at` when `now`
/// is u64::MAX (the saturated sum). `None`: nothing has lapsed yet (`now < grace`).
pub fn lapse_cutoff(now: u64, grace_micros: u64) -> Option<u64> {
    if now == u64::MAX {
        Some(u64::MAX)
    } else {
        now.checked_sub(grace_micros)
    }
}

/// The record columns, in the order [`decode`] reads them.
macro_rules! record_columns {
    () => {
        "ts, tombstone, value, content_type, expires_at, deleted_at"
    };
}

pub const GET: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM tidemark_records WHERE key = $1"
);

/// Same as [`GET`], taking the row lock: the read of a read-modify-write.
pub const GET_FOR_UPDATE: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM tidemark_records WHERE key = $1 FOR UPDATE"
);

pub const GET_MANY: &str = concat!(
    "SELECT key, ",
    record_columns!(),
    " FROM tidemark_records WHERE key = ANY($1)"
);

/// THE guarded write, deciding in one statement whether the incoming record applies.
///
/// Parameters: $1 key, $2..$7 the incoming record ([`Params`]), $8 server `now`,
/// $9 the lapse cutoff ([`lapse_cutoff`], NULL when nothing has lapsed), $10 `if_absent`.
/// Inside `DO UPDATE`, `r.*` is the stored row and `EXCLUDED.*` the incoming one.
///
/// The `WHERE` is the `Verdict::Apply` branch of `guard::decide`:
/// * `r.ts < EXCLUDED.ts` — incoming is newer; or
/// * the stored row no longer guards: its guard lapsed, i.e. a tombstone's
///   `deleted_at` or a live value's `expires_at` is at or before the cutoff (a live
///   value without expiry has NULL there and guards forever; `COALESCE(…, false)`
///   turns that NULL into "still guards").
/// * With `if_absent` (Tyrant putkeep) the stored row must also not be live at `now`
///   (a tombstone, or `expires_at <= now`); a live row refuses whatever the
///   timestamps say, as the redb engine checks `Exists` before the timestamp rule.
///
/// An absent key takes the `INSERT` branch: always applies. Under READ COMMITTED,
/// `ON CONFLICT DO UPDATE` locks the conflicting row and evaluates the `WHERE`
/// against its latest committed version, so concurrent writers of one key are
/// serialised by the row lock and each is judged against its predecessor's result.
///
/// `was_live` is how the statement reports whether it replaced a live value without
/// `RETURNING old.*` (PostgreSQL 18+): the `SET` computes it from the old row's
/// columns (in a `SET`, `r.*` are the old values), `RETURNING` hands it back. A fresh
/// insert takes the `VALUES` false. No row comes back when the `WHERE` refuses; the
/// caller then reads the winner with [`GET`] in a new statement (the refused
/// statement's snapshot may predate it) and classifies it with `guard::decide`.
pub const GUARDED_UPSERT: &str = "\
INSERT INTO tidemark_records AS r
    (key, ts, tombstone, value, content_type, expires_at, deleted_at, was_live)
VALUES ($1, $2, $3, $4, $5, $6, $7, false)
ON CONFLICT (key) DO UPDATE SET
    ts = EXCLUDED.ts,
    tombstone = EXCLUDED.tombstone,
    value = EXCLUDED.value,
    content_type = EXCLUDED.content_type,
    expires_at = EXCLUDED.expires_at,
    deleted_at = EXCLUDED.deleted_at,
    was_live = (NOT r.tombstone AND (r.expires_at IS NULL OR r.expires_at > $8))
WHERE (NOT $10 OR r.tombstone OR COALESCE(r.expires_at <= $8, false))
  AND (r.ts < EXCLUDED.ts
       OR COALESCE(
            CASE WHEN r.tombstone THEN r.deleted_at ELSE r.expires_at END <= $9,
            false))
RETURNING was_live";

/// Unconditional write of a row the caller holds locked ([`PLACEHOLDER`] or
/// [`GET_FOR_UPDATE`]).
pub const OVERWRITE: &str = "\
UPDATE tidemark_records SET
    ts = $2, tombstone = $3, value = $4, content_type = $5,
    expires_at = $6, deleted_at = $7, was_live = false
WHERE key = $1";

/// Lock an absent key by inserting a row no other transaction can see until commit;
/// returns no row when someone else holds or inserted the key first.
pub const PLACEHOLDER: &str = "\
INSERT INTO tidemark_records (key, ts, tombstone, deleted_at)
VALUES ($1, $2, true, $2)
ON CONFLICT (key) DO NOTHING
RETURNING key";

pub const DELETE_KEY: &str = "DELETE FROM tidemark_records WHERE key = $1";

/// A bounded range scan starting at an inclusive lower key; see `scan` for bounds.
pub const SCAN_FROM: &str = concat!(
    "SELECT key, ",
    record_columns!(),
    " FROM tidemark_records WHERE key >= $1 ORDER BY key LIMIT $2"
);

/// [`SCAN_FROM`] with an exclusive upper key (the prefix's successor), so a prefix
/// with few rows stops early instead of running to the end of the table.
pub const SCAN_BETWEEN: &str = concat!(
    "SELECT key, ",
    record_columns!(),
    " FROM tidemark_records WHERE key >= $1 AND key < $3 ORDER BY key LIMIT $2"
);

/// One page of the export, after the last key of the previous page.
pub const EXPORT_PAGE_AFTER: &str = concat!(
    "SELECT key, ",
    record_columns!(),
    " FROM tidemark_records WHERE key > $1 ORDER BY key LIMIT $2"
);

pub const EXPORT_FIRST_PAGE: &str = concat!(
    "SELECT key, ",
    record_columns!(),
    " FROM tidemark_records ORDER BY key LIMIT $1"
);

/// `count(CASE …)` rather than `FILTER`, which every PostgreSQL-wire database takes.
pub const COUNTS: &str = "\
SELECT count(*),
       count(CASE WHEN tombstone THEN 1 END),
       count(CASE WHEN NOT tombstone AND expires_at <= $1 THEN 1 END)
FROM tidemark_records";

/// Up to $2 lapsed tombstones (deleted at or before $1), oldest first; rows another
/// transaction holds are skipped rather than waited for.
pub const PURGE_TOMBSTONES: &str = "\
DELETE FROM tidemark_records
WHERE key IN (
    SELECT key FROM tidemark_records
    WHERE tombstone AND deleted_at <= $1
    ORDER BY deleted_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
  AND tombstone AND deleted_at <= $1";

/// Up to $2 live records whose expiry is at or before $1, oldest first.
pub const PURGE_EXPIRED: &str = "\
DELETE FROM tidemark_records
WHERE key IN (
    SELECT key FROM tidemark_records
    WHERE NOT tombstone AND expires_at <= $1
    ORDER BY expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED)
  AND NOT tombstone AND expires_at <= $1";

pub const CLEAR: &str = "DELETE FROM tidemark_records";

/// The reachability probe.
pub const PING: &str = "SELECT 1";

/// A record as statement parameters $2..$7: ts, tombstone, value, content_type,
/// expires_at, deleted_at.
pub struct Params<'a> {
    pub ts: i64,
    pub tombstone: bool,
    pub value: Option<&'a [u8]>,
    pub content_type: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub deleted_at: Option<i64>,
}

impl<'a> Params<'a> {
    pub fn of(record: &'a Record) -> Self {
        match &record.state {
            State::Live {
                value,
                content_type,
                expires_at,
            } => Params {
                ts: to_sql(record.timestamp),
                tombstone: false,
                value: Some(value),
                content_type: Some(content_type),
                expires_at: expires_at.map(to_sql),
                deleted_at: None,
            },
            State::Tombstone { deleted_at } => Params {
                ts: to_sql(record.timestamp),
                tombstone: true,
                value: None,
                content_type: None,
                expires_at: None,
                deleted_at: Some(to_sql(*deleted_at)),
            },
        }
    }
}

/// Why a row could not be read back as a [`Record`].
#[derive(Debug)]
pub enum DecodeError {
    /// The driver could not convert a column (a schema this build does not know).
    Column(tokio_postgres::Error),
    /// The columns contradict each other (e.g. a live row without a value).
    Shape,
}

/// Read the record columns starting at column `first`.
pub fn decode(row: &Row, first: usize) -> Result<Record, DecodeError> {
    let col = |i: usize| first + i;
    let ts: i64 = row.try_get(col(0)).map_err(DecodeError::Column)?;
    let tombstone: bool = row.try_get(col(1)).map_err(DecodeError::Column)?;
    let value: Option<Vec<u8>> = row.try_get(col(2)).map_err(DecodeError::Column)?;
    let content_type: Option<String> = row.try_get(col(3)).map_err(DecodeError::Column)?;
    let expires_at: Option<i64> = row.try_get(col(4)).map_err(DecodeError::Column)?;
    let deleted_at: Option<i64> = row.try_get(col(5)).map_err(DecodeError::Column)?;
    let timestamp = from_sql(ts);
    if tombstone {
        let deleted_at = deleted_at.ok_or(DecodeError::Shape)?;
        Ok(Record::tombstone(timestamp, from_sql(deleted_at)))
    } else {
        match (value, content_type) {
            (Some(value), Some(content_type)) => Ok(Record::live(
                timestamp,
                value,
                content_type,
                expires_at.map(from_sql),
            )),
            _ => Err(DecodeError::Shape),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_mapping_preserves_order_at_the_extremes() {
        let points = [
            0,
            1,
            i64::MAX as u64,
            1 << 63,
            (1 << 63) + 1,
            u64::MAX - 1,
            u64::MAX,
        ];
        assert_eq!(to_sql(0), i64::MIN);
        assert_eq!(to_sql(1), i64::MIN + 1);
        assert_eq!(to_sql(i64::MAX as u64), -1);
        assert_eq!(to_sql(1 << 63), 0);
        assert_eq!(to_sql(u64::MAX), i64::MAX);
        for window in points.windows(2) {
            assert!(window[0] < window[1]);
            assert!(to_sql(window[0]) < to_sql(window[1]), "{window:?}");
        }
        for p in points {
            assert_eq!(from_sql(to_sql(p)), p);
        }
    }

    #[test]
    fn lapse_cutoff_matches_guards_until() {
        let grace = 1_000;
        for now in [0, 999, 1_000, 1_001, 5_000, u64::MAX - 1, u64::MAX] {
            for at in [
                0,
                1,
                3_999,
                4_000,
                4_001,
                u64::MAX - 1_000,
                u64::MAX - 1,
                u64::MAX,
            ] {
                let record = Record::tombstone(1, at);
                let lapsed = !crate::guard::still_guards(&record, now, grace);
                let by_cutoff = lapse_cutoff(now, grace).is_some_and(|cutoff| at <= cutoff);
                assert_eq!(lapsed, by_cutoff, "now {now} at {at}");
            }
        }
    }
}
