\set n :n + 1
\set key :kbase + random(0, :keys - 1)
\set ts :ts0 + :n * :clients + :client_id
\set now :ts
\set cutoff :now - :grace
INSERT INTO tidemark_records AS r
    (key, ts, tombstone, value, content_type, expires_at, deleted_at, was_live)
VALUES (:key, :ts, :tombstone, :value, :content_type, NULL, NULL, false)
ON CONFLICT (key) DO UPDATE SET
    ts = EXCLUDED.ts,
    tombstone = EXCLUDED.tombstone,
    value = EXCLUDED.value,
    content_type = EXCLUDED.content_type,
    expires_at = EXCLUDED.expires_at,
    deleted_at = EXCLUDED.deleted_at,
    was_live = (NOT r.tombstone AND (r.expires_at IS NULL OR r.expires_at > :now))
WHERE (NOT :if_absent OR r.tombstone OR COALESCE(r.expires_at <= :now, false))
  AND (r.ts < EXCLUDED.ts
       OR COALESCE(
            CASE WHEN r.tombstone THEN r.deleted_at ELSE r.expires_at END <= :cutoff,
            false))
RETURNING was_live;
