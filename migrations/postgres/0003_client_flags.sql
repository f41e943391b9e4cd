-- tidemark PostgreSQL schema, version 3: memcached client flags.
--
-- Applied by src/store/postgres/schema.rs inside one transaction that also records
-- the version in tidemark_schema; do not put BEGIN/COMMIT here. A version-2 database
-- is upgraded in place: the new column is nullable and NULL is what every older row
-- means (flags 0), so no row is rewritten.
--
-- * flags  bigint - crate::record::Meta::flags, the 32-bit client flags a memcached
--                   storage command stored with the value (0 to 4294967295); NULL
--                   = 0, and 0 is always written as NULL. Set on live rows only.

ALTER TABLE tidemark_records ADD COLUMN flags bigint;

-- A tombstone has no flags; a live row's flags fit in 32 bits. Every existing row has
-- NULL, so both hold for them.
ALTER TABLE tidemark_records
    ADD CONSTRAINT tidemark_records_flags CHECK (
        flags IS NULL OR (NOT tombstone AND flags BETWEEN 1 AND 4294967295)
    );
