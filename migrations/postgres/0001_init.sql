-- tidemark PostgreSQL schema, version 1.
--
-- Applied by src/store/postgres/schema.rs inside one transaction that also records
-- the version in tidemark_schema; do not put BEGIN/COMMIT here.
--
-- Every u64 (ts, expires_at, deleted_at) is stored as bigint through the
-- order-preserving map (u ^ 1<<63) as i64, so SQL comparisons order exactly as the
-- u64 values do (0 -> i64::MIN, 2^63 -> 0, u64::MAX -> i64::MAX). Read them in SQL
-- only through comparisons, never arithmetic.

CREATE TABLE tidemark_records (
    key          bytea   NOT NULL PRIMARY KEY,
    -- Client timestamp of the last applied write.
    ts           bigint  NOT NULL,
    tombstone    boolean NOT NULL,
    -- Live values only.
    value        bytea,
    content_type text,
    -- Server time after which a live value reads as absent; NULL = never.
    expires_at   bigint,
    -- Tombstones only: server time the delete was applied.
    deleted_at   bigint,
    -- Bookkeeping for the guarded upsert, meaningful only in that statement's
    -- RETURNING: whether the row it replaced was live (PostgreSQL < 18 has no
    -- RETURNING old.*).
    was_live     boolean NOT NULL DEFAULT false,
    CONSTRAINT tidemark_records_shape CHECK (
        (tombstone AND deleted_at IS NOT NULL AND value IS NULL
             AND content_type IS NULL AND expires_at IS NULL)
        OR (NOT tombstone AND deleted_at IS NULL AND value IS NOT NULL
             AND content_type IS NOT NULL)
    )
);

-- The sweeper's work lists, oldest first.
CREATE INDEX tidemark_records_tombstones
    ON tidemark_records (deleted_at) WHERE tombstone;
CREATE INDEX tidemark_records_expiries
    ON tidemark_records (expires_at) WHERE NOT tombstone AND expires_at IS NOT NULL;
