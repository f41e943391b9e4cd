//! The schema version and the numbered migrations in migrations/postgres/.
//!
//! At start every replica runs [`migrate`]: in one transaction that holds a
//! migration lock (so replicas starting together take turns), it creates the version
//! table if needed, refuses a database newer than this build, and applies the
//! missing migrations in order, recording each. A replica that loses the race finds
//! the work done and applies nothing.

use deadpool_postgres::GenericClient;

use super::error::from_driver;
use crate::store::StoreError;

/// Migrations in order; the version of each is its position + 1.
pub const MIGRATIONS: &[(u64, &str)] = &[
    (
        1,
        include_str!("../../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/postgres/0002_session_metadata.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/postgres/0003_client_flags.sql"),
    ),
];

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

const CREATE_VERSION_TABLE: &str = "\
CREATE TABLE IF NOT EXISTS tidemark_schema (
    version    bigint      NOT NULL PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Arbitrary, fixed: the advisory-lock key migrations serialise on.
const MIGRATION_LOCK_KEY: i64 = 0x7469_6465_6d69_6701; // "tidemig" + 1

/// Bring the database to [`SCHEMA_VERSION`], or refuse it when it is newer.
/// `location` names the database in the error.
pub async fn migrate<C: GenericClient>(txn: &C, location: &str) -> Result<u64, StoreError> {
    lock_for_migrations(txn).await?;
    txn.batch_execute(CREATE_VERSION_TABLE)
        .await
        .map_err(from_driver)?;
    let row = txn
        .query_one("SELECT max(version) FROM tidemark_schema", &[])
        .await
        .map_err(from_driver)?;
    let found: Option<i64> = row.try_get(0).map_err(from_driver)?;
    let found = found.map_or(0, |v| v.max(0) as u64);
    if found > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            path: location.into(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        txn.batch_execute(sql).await.map_err(from_driver)?;
        txn.execute(
            "INSERT INTO tidemark_schema (version) VALUES ($1)",
            &[&(*version as i64)],
        )
        .await
        .map_err(from_driver)?;
        tracing::info!(version, location, "applied PostgreSQL migration");
    }
    Ok(found.max(SCHEMA_VERSION))
}

/// PostgreSQL-only: a transaction-scoped advisory lock, released at commit. Other
/// PostgreSQL-wire databases need a replacement here (CockroachDB: a lock row taken
/// with `SELECT … FOR UPDATE`, since its DDL is transactional too).
async fn lock_for_migrations<C: GenericClient>(txn: &C) -> Result<(), StoreError> {
    txn.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(from_driver)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        for (i, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as u64 + 1);
        }
    }
}
