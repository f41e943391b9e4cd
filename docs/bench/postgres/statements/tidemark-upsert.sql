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
RETURNING was_live