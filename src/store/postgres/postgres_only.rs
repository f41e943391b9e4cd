//! What only PostgreSQL has, each behind one function (migrations/postgres/README.md
//! lists them with what CockroachDB or YugabyteDB would use instead).

use deadpool_postgres::GenericClient;

use super::error::from_driver;
use crate::store::StoreError;

/// PostgreSQL-only: take the sweeper's advisory lock for this transaction, or learn
/// that another replica holds it. (CockroachDB has no advisory locks: there, lock a
/// row of a one-row table with `SELECT … FOR UPDATE SKIP LOCKED`.)
pub async fn try_lock_sweep<C: GenericClient>(txn: &C) -> Result<bool, StoreError> {
    /// Arbitrary, fixed: "tidesweep".
    const SWEEP_LOCK_KEY: i64 = 0x7469_6465_7377_6565;
    let row = txn
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SWEEP_LOCK_KEY])
        .await
        .map_err(from_driver)?;
    row.try_get(0).map_err(from_driver)
}

/// PostgreSQL-only: on-disk size of the table, its indexes and TOAST.
pub async fn table_size<C: GenericClient>(client: &C) -> Result<u64, StoreError> {
    let row = client
        .query_one("SELECT pg_total_relation_size('tidemark_records')", &[])
        .await
        .map_err(from_driver)?;
    let bytes: i64 = row.try_get(0).map_err(from_driver)?;
    Ok(bytes.max(0) as u64)
}
