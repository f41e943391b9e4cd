//! The statements the engine runs, and how a [`Record`] maps to a row and back.
//!
//! Every u64 the record carries (timestamp, expiry, deletion time) is stored as a
//! bigint through [`to_sql`], which flips the sign bit: the map is order-preserving,
//! so `a < b` in SQL exactly when it holds for the u64s. SQL therefore only ever
//! compares these columns (with parameters mapped the same way), never adds to them;
//! sums such as "expiry + grace" are turned into a cutoff in Rust ([`lapse_cutoff`]).

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::record::{FieldClocks, Meta, Record, State};

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
        "ts, tombstone, value, content_type, expires_at, deleted_at, \
         owner, created_at, lifetime_ends, fields, flags"
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
/// Parameters: $1 key, $2..$12 the incoming record ([`Params`]) as the rule writes it
/// onto a key with no live value, $13 server `now`, $14 the lapse cutoff
/// ([`lapse_cutoff`], NULL when nothing has lapsed), $15 `if_absent`, $16 the expiry
/// the write asked for (before a lifetime caps it). Inside `DO UPDATE`, `r.*` is the
/// stored row and `EXCLUDED.*` the incoming one.
///
/// The `WHERE` is the `Verdict::Apply` branch of `guard::decide`:
/// * `r.ts < EXCLUDED.ts` — incoming is newer (`ts` is the record's newest
///   timestamp, field clocks included); or
/// * the stored row no longer guards: its guard lapsed, i.e. a tombstone's
///   `deleted_at` or a live value's `expires_at` is at or before the cutoff (a live
///   value without expiry has NULL there and guards forever; `COALESCE(…, false)`
///   turns that NULL into "still guards").
/// * With `if_absent` (Tyrant putkeep) the stored row must also not be live at `now`
///   (a tombstone, or `expires_at <= now`); a live row refuses whatever the
///   timestamps say, as the redb engine checks `Exists` before the timestamp rule.
///
/// and one more condition keeps it to the writes whose result SQL can compute without
/// `guard::resolve`: the stored row is not live at `now`, or it carries no `owner`,
/// no `lifetime_ends` and no `fields`. A write onto a live session with metadata is
/// refused here and the caller runs the rule with the row locked.
///
/// What the `SET` writes is then exactly `guard::resolve`'s record:
/// * onto a row that is not live (or an absent key: the `INSERT`), the incoming
///   record as it is — the caller computed it as the rule does for a key without a
///   live value (`guard::session_meta(None, …)`, the expiry capped by the lifetime);
/// * onto a live row (so without owner, lifetime or field clocks) a put keeps the
///   row's `created_at` and `lifetime_ends` (NULL: only the creating write starts a
///   lifetime) and takes the requested, uncapped expiry $16; its owner is the
///   incoming one either way (`Keep` keeps the row's NULL, `Set` sets, `Clear` is
///   NULL). A delete is a tombstone without metadata either way.
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
/// caller then reads the winner with [`GET_FOR_UPDATE`] in a new statement (the
/// refused statement's snapshot may predate it) and runs `guard::resolve`.
pub const GUARDED_UPSERT: &str = "\
INSERT INTO tidemark_records AS r
    (key, ts, tombstone, value, content_type, expires_at, deleted_at,
     owner, created_at, lifetime_ends, fields, flags, was_live)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, false)
ON CONFLICT (key) DO UPDATE SET
    ts = EXCLUDED.ts,
    tombstone = EXCLUDED.tombstone,
    value = EXCLUDED.value,
    content_type = EXCLUDED.content_type,
    expires_at = CASE
        WHEN NOT EXCLUDED.tombstone
             AND NOT r.tombstone AND (r.expires_at IS NULL OR r.expires_at > $13)
        THEN $16::bigint
        ELSE EXCLUDED.expires_at END,
    deleted_at = EXCLUDED.deleted_at,
    owner = EXCLUDED.owner,
    created_at = CASE
        WHEN NOT EXCLUDED.tombstone
             AND NOT r.tombstone AND (r.expires_at IS NULL OR r.expires_at > $13)
        THEN r.created_at
        ELSE EXCLUDED.created_at END,
    lifetime_ends = CASE
        WHEN NOT EXCLUDED.tombstone
             AND NOT r.tombstone AND (r.expires_at IS NULL OR r.expires_at > $13)
        THEN r.lifetime_ends
        ELSE EXCLUDED.lifetime_ends END,
    fields = EXCLUDED.fields,
    flags = EXCLUDED.flags,
    was_live = (NOT r.tombstone AND (r.expires_at IS NULL OR r.expires_at > $13))
WHERE (NOT $15 OR r.tombstone OR COALESCE(r.expires_at <= $13, false))
  AND (r.tombstone OR COALESCE(r.expires_at <= $13, false)
       OR (r.owner IS NULL AND r.lifetime_ends IS NULL AND r.fields IS NULL))
  AND (r.ts < EXCLUDED.ts
       OR COALESCE(
            CASE WHEN r.tombstone THEN r.deleted_at ELSE r.expires_at END <= $14,
            false))
RETURNING was_live";

/// Unconditional write of a row the caller holds locked ([`PLACEHOLDER`] or
/// [`GET_FOR_UPDATE`]): $1 key, $2..$12 the record ([`Params`]).
pub const OVERWRITE: &str = "\
UPDATE tidemark_records SET
    ts = $2, tombstone = $3, value = $4, content_type = $5,
    expires_at = $6, deleted_at = $7,
    owner = $8, created_at = $9, lifetime_ends = $10, fields = $11, flags = $12,
    was_live = false
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

/// The first page of one owner's records ($1 owner), in key order, at most $2; the
/// owner index `(owner, key) WHERE owner IS NOT NULL` serves it.
pub const OWNED_FIRST: &str = concat!(
    "SELECT key, ",
    record_columns!(),
    " FROM tidemark_records WHERE owner = $1 ORDER BY key LIMIT $2"
);

/// [`OWNED_FIRST`] after the key $3 (exclusive).
pub const OWNED_AFTER: &str = concat!(
    "SELECT key, ",
    record_columns!(),
    " FROM tidemark_records WHERE owner = $1 AND key > $3 ORDER BY key LIMIT $2"
);

pub const CLEAR: &str = "DELETE FROM tidemark_records";

/// The reachability probe.
pub const PING: &str = "SELECT 1";

/// A record as statement parameters $2..$12: ts, tombstone, value, content_type,
/// expires_at, deleted_at, owner, created_at, lifetime_ends, fields, flags.
///
/// A tombstone's metadata is not stored (the schema keeps it NULL; a record's meta
/// is always empty for tombstones).
pub struct Params<'a> {
    pub ts: i64,
    pub tombstone: bool,
    pub value: Option<&'a [u8]>,
    pub content_type: Option<&'a str>,
    pub expires_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub owner: Option<&'a str>,
    pub created_at: Option<i64>,
    pub lifetime_ends: Option<i64>,
    /// [`FieldClocks::encode`] bytes.
    pub fields: Option<Vec<u8>>,
    /// [`Meta::flags`]; 0 is NULL.
    pub flags: Option<i64>,
}

impl<'a> Params<'a> {
    pub fn of(record: &'a Record) -> Self {
        match &record.state {
            State::Live {
                value,
                content_type,
                expires_at,
            } => {
                let meta = &record.meta;
                Params {
                    ts: to_sql(record.timestamp),
                    tombstone: false,
                    value: Some(value),
                    content_type: Some(content_type),
                    expires_at: expires_at.map(to_sql),
                    deleted_at: None,
                    owner: meta.owner.as_deref(),
                    created_at: meta.created_at.map(to_sql),
                    lifetime_ends: meta.lifetime_ends.map(to_sql),
                    fields: meta.fields.as_ref().map(|fields| {
                        let mut bytes = Vec::new();
                        fields.encode(&mut bytes);
                        bytes
                    }),
                    flags: (meta.flags != 0).then_some(i64::from(meta.flags)),
                }
            }
            State::Tombstone { deleted_at } => Params {
                ts: to_sql(record.timestamp),
                tombstone: true,
                value: None,
                content_type: None,
                expires_at: None,
                deleted_at: Some(to_sql(*deleted_at)),
                owner: None,
                created_at: None,
                lifetime_ends: None,
                fields: None,
                flags: None,
            },
        }
    }

    /// The eleven values, in parameter order ($2..$12 after the key).
    pub fn values(&self) -> [&(dyn ToSql + Sync); 11] {
        [
            &self.ts,
            &self.tombstone,
            &self.value,
            &self.content_type,
            &self.expires_at,
            &self.deleted_at,
            &self.owner,
            &self.created_at,
            &self.lifetime_ends,
            &self.fields,
            &self.flags,
        ]
    }
}

/// Why a row could not be read back as a [`Record`].
#[derive(Debug)]
pub enum DecodeError {
    /// The driver could not convert a column (a schema this build does not know).
    Column(tokio_postgres::Error),
    /// The columns contradict each other (e.g. a live row without a value), or the
    /// field clocks do not decode.
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
    let owner: Option<String> = row.try_get(col(6)).map_err(DecodeError::Column)?;
    let created_at: Option<i64> = row.try_get(col(7)).map_err(DecodeError::Column)?;
    let lifetime_ends: Option<i64> = row.try_get(col(8)).map_err(DecodeError::Column)?;
    let fields: Option<Vec<u8>> = row.try_get(col(9)).map_err(DecodeError::Column)?;
    let flags: Option<i64> = row.try_get(col(10)).map_err(DecodeError::Column)?;
    let timestamp = from_sql(ts);
    if tombstone {
        let deleted_at = deleted_at.ok_or(DecodeError::Shape)?;
        let no_meta = owner.is_none()
            && created_at.is_none()
            && lifetime_ends.is_none()
            && fields.is_none()
            && flags.is_none();
        if !no_meta {
            return Err(DecodeError::Shape);
        }
        return Ok(Record::tombstone(timestamp, from_sql(deleted_at)));
    }
    let (Some(value), Some(content_type)) = (value, content_type) else {
        return Err(DecodeError::Shape);
    };
    let fields = match fields {
        Some(bytes) => Some(FieldClocks::decode(&bytes).ok_or(DecodeError::Shape)?),
        None => None,
    };
    let flags = match flags {
        None => 0,
        Some(flags) => u32::try_from(flags).map_err(|_| DecodeError::Shape)?,
    };
    let mut record = Record::live(timestamp, value, content_type, expires_at.map(from_sql));
    record.meta = Meta {
        flags,
        owner,
        created_at: created_at.map(from_sql),
        lifetime_ends: lifetime_ends.map(from_sql),
        fields,
    };
    Ok(record)
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
