\set key :kbase + random(0, :keys - 1)
SELECT ts, tombstone, value, content_type, expires_at, deleted_at FROM tidemark_records WHERE key = :key;
