-- tidemark PostgreSQL schema, version 2: session metadata.
--
-- Applied by src/store/postgres/schema.rs inside one transaction that also records
-- the version in tidemark_schema; do not put BEGIN/COMMIT here. A version-1 database
-- is upgraded in place: every new column is nullable and NULL is what a version-1
-- row means (no owner, creation time unknown, no lifetime, no field clocks), so no
-- row is rewritten.
--
-- The four columns are crate::record::Meta. They are set on live rows only; a
-- tombstone (and the lock placeholder, which is one) has all four NULL.
--
-- * owner          text   - the session's owner (X-Session-Owner); NULL = none.
-- * created_at     bigint - server time (u64 µs through the order-preserving map, as
--                           ts/expires_at/deleted_at) of the write that created the
--                           key; NULL for rows written before version 2.
-- * lifetime_ends  bigint - server time (mapped the same way) past which no TTL or
--                           touch moves the expiry; NULL = no absolute lifetime.
-- * fields         bytea  - per-field clocks of a JSON-object document, in the
--                           engine-neutral encoding of FieldClocks::encode
--                           (src/record.rs); NULL = no field newer than the last
--                           whole-value write. Bytes that do not decode make the row
--                           corrupt.

ALTER TABLE tidemark_records
    ADD COLUMN owner         text,
    ADD COLUMN created_at    bigint,
    ADD COLUMN lifetime_ends bigint,
    ADD COLUMN fields        bytea;

-- Tombstones carry no metadata. Every existing row has the four columns NULL, so
-- the constraint holds for them (its validation scans the table once).
ALTER TABLE tidemark_records
    ADD CONSTRAINT tidemark_records_tombstone_meta CHECK (
        NOT tombstone OR (owner IS NULL AND created_at IS NULL
                          AND lifetime_ends IS NULL AND fields IS NULL)
    );

-- "Every session of one owner" (Store::owned), in key order: only rows that have an
-- owner are indexed. Expired rows stay in it until the sweeper deletes them.
CREATE INDEX tidemark_records_owners
    ON tidemark_records (owner, key) WHERE owner IS NOT NULL;
