#!/usr/bin/env bash
# Throughput, memory and file size of tidemark as the keyspace grows.
#
# For each keyspace size: a fresh tidemark (--durability relaxed, the given
# --cache-size) on loopback, prefilled with that many keys (200-byte values) through
# the Tyrant port, then ROUNDS rounds of guarded put (ext tsput) and get over random
# keys, then the server's resident memory (VmRSS now, VmHWM peak) and the sizes of its
# database file and log files. Results: $OUT/scale.jsonl (one line per run) and
# $OUT/scale.md (medians), also printed.
#
# Environment (defaults in brackets):
#   SIZES ["100000 1000000 10000000"]   keyspace sizes
#   CACHE_SIZE [268435456]  redb page cache, bytes (tidemark's default, 256 MiB)
#   DURATION [10]  WARMUP [2]  ROUNDS [3]  CONNECTIONS [16]  VALUE_SIZE [200]
#   OUT [docs/bench]  PORT_BASE [27600]  SKIP_BUILD [0]
#   DATA_ROOT [a new directory under /var/tmp]   where the database files go (needs
#             about 400 bytes per key of free disk)
#
# Everything is bounded: the prefill writes each key once, each run lasts
# WARMUP+DURATION seconds, and the server is stopped (and its files removed) on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SIZES=${SIZES:-"100000 1000000 10000000"}
CACHE_SIZE=${CACHE_SIZE:-268435456}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-16}
VALUE_SIZE=${VALUE_SIZE:-200}
OUT=${OUT:-docs/bench}
PORT_BASE=${PORT_BASE:-27600}
SKIP_BUILD=${SKIP_BUILD:-0}

log() { printf '[scale %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [ "$SKIP_BUILD" != 1 ]; then
    log "building tidemark and tidemark-bench (release)"
    cargo build --release --locked --bins >&2
fi
WORK=$(mktemp -d /tmp/tidemark-scale.XXXXXX)
DATA_ROOT=${DATA_ROOT:-$(mktemp -d /var/tmp/tidemark-scale-data.XXXXXX)}
cp target/release/tidemark target/release/tidemark-bench "$WORK/"
SERVER="$WORK/tidemark"
BENCH="$WORK/tidemark-bench"
HTTP=$PORT_BASE
TYRANT=$((PORT_BASE + 1))
PID=""

stop_server() {
    if [ -n "$PID" ]; then
        kill "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
        PID=""
    fi
}
cleanup() {
    stop_server
    rm -rf "$WORK" "$DATA_ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
status_kib() { # pid field: a VmRSS-style field of /proc/pid/status, in KiB
    awk -v f="$2:" '$1 == f {print $2; exit}' "/proc/$1/status"
}

mkdir -p "$OUT"
RAW="$OUT/scale.jsonl"
: >"$RAW"
common=(--connections "$CONNECTIONS" --value-size "$VALUE_SIZE")

for keys in $SIZES; do
    data="$DATA_ROOT/$keys"
    rm -rf "$data"
    mkdir -p "$data"
    "$SERVER" serve --data-dir "$data" --http-addr "127.0.0.1:$HTTP" \
        --tyrant-addr "127.0.0.1:$TYRANT" --durability relaxed \
        --cache-size "$CACHE_SIZE" >"$WORK/server-$keys.log" 2>&1 &
    PID=$!
    wait_port "$TYRANT" 30
    log "$keys keys: prefilling"
    started=$(date +%s.%N)
    "$BENCH" --target tyrant --addr "127.0.0.1:$TYRANT" --op put --prefill --duration 0 \
        --keys "$keys" "${common[@]}" >&2
    prefill_s=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    for round in $(seq "$ROUNDS"); do
        for op in guarded-put get; do
            result=$("$BENCH" --target tyrant --addr "127.0.0.1:$TYRANT" --op "$op" \
                --keys "$keys" --duration "$DURATION" --warmup "$WARMUP" \
                --label "tm-relaxed/$op" --json "${common[@]}") || true
            [ -n "$result" ] || { log "  $op: no report"; continue; }
            rss=$(status_kib "$PID" VmRSS)
            hwm=$(status_kib "$PID" VmHWM)
            db=$(stat -c %s "$data/tidemark.redb")
            wal=$(cat "$data"/tidemark.wal* | wc -c)
            printf '{"keys":%d,"round":%d,"op":"%s","cache_size":%d,"prefill_s":%s,"rss_kib":%d,"hwm_kib":%d,"db_bytes":%d,"wal_bytes":%d,"run":%s}\n' \
                "$keys" "$round" "$op" "$CACHE_SIZE" "$prefill_s" "$rss" "$hwm" "$db" "$wal" "$result" >>"$RAW"
            python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("  %-12s %9d keys %10.0f ops/s  p99 %8.1f us  rss %s MiB" % (sys.argv[2], int(sys.argv[3]), r["ops_per_sec"], r["latency_us"]["p99"], int(sys.argv[4])//1024))' \
                "$result" "$op" "$keys" "$rss" >&2
        done
    done
    stop_server
    rm -rf "$data"
done

python3 - "$RAW" <<'PY' | tee "$OUT/scale.md"
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
sizes = sorted({r["keys"] for r in rows})
def med(keys, op, f):
    vals = [f(r) for r in rows if r["keys"] == keys and r["op"] == op]
    return statistics.median(vals) if vals else None
print("| keys | guarded put ops/s | put p99 µs | get ops/s | get p99 µs | RSS MiB (peak) | db file MiB | log files MiB (allocated) | prefill s |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for k in sizes:
    last = [r for r in rows if r["keys"] == k][-1]
    put = med(k, "guarded-put", lambda r: r["run"]["ops_per_sec"])
    get = med(k, "get", lambda r: r["run"]["ops_per_sec"])
    print("| %s | %s | %s | %s | %s | %d (%d) | %.0f | %.1f | %s |" % (
        f"{k:,}",
        f"{put:,.0f}" if put else "-",
        f"{med(k, 'guarded-put', lambda r: r['run']['latency_us']['p99']):,.0f}" if put else "-",
        f"{get:,.0f}" if get else "-",
        f"{med(k, 'get', lambda r: r['run']['latency_us']['p99']):,.0f}" if get else "-",
        last["rss_kib"] // 1024, last["hwm_kib"] // 1024,
        last["db_bytes"] / 2**20, last["wal_bytes"] / 2**20, last["prefill_s"]))
base = sizes[0]
for op in ("guarded-put", "get"):
    b = med(base, op, lambda r: r["run"]["ops_per_sec"])
    for k in sizes[1:]:
        v = med(k, op, lambda r: r["run"]["ops_per_sec"])
        if b and v:
            print(f"\n{op} at {k:,} keys / at {base:,} keys: {v / b:.2f}", end="")
print()
PY
