"""Schemathesis hooks for tidemark's contract run (loaded through SCHEMATHESIS_HOOKS).

POST /admin/import takes JSON lines (application/x-ndjson), which schemathesis cannot
serialize by itself: each generated ExportLine object becomes one line.
"""

import json

import schemathesis


@schemathesis.serializer("application/x-ndjson")
def json_lines(ctx, value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    records = value if isinstance(value, list) else [value]
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)
