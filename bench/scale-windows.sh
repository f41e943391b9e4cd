#!/usr/bin/env bash
# Stalls, hot sets and Redis at each keyspace size, second by second.
#
# For each keyspace size: a fresh tidemark (--durability relaxed, the given
# --cache-size) and a fresh Redis (no persistence) on loopback, both prefilled with
# every key (200-byte values) by the same client, then ROUNDS rounds of these cases,
# each DURATION seconds measured after WARMUP, with the client reporting ops/s in
# every 1-second window:
#
#   tm/uniform-guarded-put   Tyrant ext tsput, keys uniform over the keyspace
#   tm/uniform-get           Tyrant get, uniform
#   tm/hot-guarded-put       tsput, every request on the hot set: HOT_PERCENT % of the
#   tm/hot-get               keys, spread evenly over the keyspace (--hot-keys)
#   redis/uniform-set        SET, uniform
#   redis/uniform-get        GET, uniform
#
# Alongside every run: the server's CPU, its /proc/PID/io (bytes read and written),
# RSS (now and peak), the database file's size (apparent and on disk, after the
# prefill and after each run) and the data directory's on disk, and the checkpoints the server logged
# during the run (entries, time writing into redb, time committing) from its debug
# log, and the cores each of its threads used (by thread name: the checkpointer's
# share against the runtime workers'). Results: $OUT/windows.jsonl (one line per run), $OUT/windows.md (the tables,
# also printed), $OUT/server-<keys>.log (the server's log, checkpoints included).
#
# Environment (defaults in brackets):
#   SIZES ["100000 10000000"]   keyspace sizes; the first is the baseline of the ratios
#   DURATION [60]  WARMUP [5]  ROUNDS [1]  CONNECTIONS [16]  VALUE_SIZE [200]
#   HOT_PERCENT [1]   share of the keys the hot cases use
#   CASES [all six]   subset of the case names above (Redis runs only for redis/ cases)
#   CACHE_SIZE [268435456]  tidemark's --cache-size, bytes (its default)
#   TM_ARGS [""]      extra flags for tidemark serve
#   OUT [/tmp/tidemark-scale-windows]  PORT_BASE [27700]  SKIP_BUILD [0]
#   DATA_ROOT [a new directory under /var/tmp, removed at the end]  (needs ~700 bytes
#             of disk per key; a given DATA_ROOT is kept, only the sizes' files go)
#
# Bounded: the prefills write each key once, each run lasts WARMUP+DURATION seconds
# (plus the client's I/O timeout at worst), and both servers are stopped and their
# files removed when a size is done or the script exits.
# Short run (about two minutes):
#   SIZES="10000 100000" DURATION=5 WARMUP=1 bench/scale-windows.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SIZES=${SIZES:-"100000 10000000"}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-5}
ROUNDS=${ROUNDS:-1}
CONNECTIONS=${CONNECTIONS:-16}
VALUE_SIZE=${VALUE_SIZE:-200}
HOT_PERCENT=${HOT_PERCENT:-1}
CASES=${CASES:-"tm/uniform-guarded-put tm/uniform-get tm/hot-guarded-put tm/hot-get redis/uniform-set redis/uniform-get"}
CACHE_SIZE=${CACHE_SIZE:-268435456}
TM_ARGS=${TM_ARGS:-}
OUT=${OUT:-/tmp/tidemark-scale-windows}
PORT_BASE=${PORT_BASE:-27700}
SKIP_BUILD=${SKIP_BUILD:-0}
BIN=${CARGO_TARGET_DIR:-target}/release

# CPU ticks per thread name of process $1, as "name ticks" lines (threads of one name
# summed).
thread_ticks() {
    local task
    for task in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(tr ' ' _ <"$task/comm")" "$(awk '{print $14 + $15}' "$task/stat")"
    done 2>/dev/null | awk '{t[$1] += $2} END {for (n in t) print n, t[n]}'
}

# Bytes the database file and the whole data directory (file + write-ahead log)
# take on disk, as "file dir": allocated blocks, not the apparent size, since redb
# grows its file ahead of need and the part not yet written holds no blocks.
disk_bytes() {
    printf '%s %s\n' "$(du -B1 -- "$1/tidemark.redb" | cut -f1)" "$(du -sB1 -- "$1" | cut -f1)"
}

log() { printf '[scale-windows %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Redis is started (and prefilled) only when a redis/ case asks for it.
WANT_REDIS=0
case " $CASES " in *" redis/"*) WANT_REDIS=1 ;; esac
if [ "$WANT_REDIS" = 1 ]; then
    command -v redis-server >/dev/null || { echo "redis-server is required (bench/compare.sh installs it)" >&2; exit 1; }
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
if [ "$SKIP_BUILD" != 1 ]; then
    log "building tidemark and tidemark-bench (release)"
    cargo build --release --locked --bins >&2
fi

HTTP=$PORT_BASE
TYRANT=$((PORT_BASE + 1))
REDIS=$((PORT_BASE + 2))
TM_PID=""
REDIS_PID=""
WORK=""
DATA_ROOT=${DATA_ROOT:-}
MADE_DATA_ROOT=""

stop() { # pid variable name
    local pid=${!1}
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    printf -v "$1" '%s' ""
}
cleanup() {
    stop TM_PID
    stop REDIS_PID
    [ -z "$WORK" ] || rm -rf "$WORK"
    [ -z "$MADE_DATA_ROOT" ] || rm -rf "$DATA_ROOT"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

WORK=$(mktemp -d /tmp/tidemark-scale-windows.XXXXXX)
if [ -z "$DATA_ROOT" ]; then
    DATA_ROOT=$(mktemp -d /var/tmp/tidemark-scale-windows-data.XXXXXX)
    MADE_DATA_ROOT=1
fi
# Copies, so a rebuild during the run cannot swap the binaries halfway.
cp "$BIN/tidemark" "$BIN/tidemark-bench" "$WORK/"
SERVER="$WORK/tidemark"
BENCH="$WORK/tidemark-bench"

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

mkdir -p "$OUT"
RAW="$OUT/windows.jsonl"
: >"$RAW"
common=(--connections "$CONNECTIONS" --value-size "$VALUE_SIZE" --window 1s)
ticks=$(getconf CLK_TCK)

for keys in $SIZES; do
    data="$DATA_ROOT/$keys"
    rm -rf "$data"
    mkdir -p "$data/tm" "$data/redis"
    hot=$(( keys * HOT_PERCENT / 100 ))
    [ "$hot" -ge 1 ] || hot=1
    server_log="$OUT/server-$keys.log"
    # shellcheck disable=SC2086
    NO_COLOR=1 TIDEMARK_LOG=${TIDEMARK_LOG:-info,tidemark::store::redb::writer=debug} \
        "$SERVER" serve --data-dir "$data/tm" --http-addr "127.0.0.1:$HTTP" \
        --tyrant-addr "127.0.0.1:$TYRANT" --durability relaxed \
        --cache-size "$CACHE_SIZE" $TM_ARGS >"$server_log" 2>&1 &
    TM_PID=$!
    if [ "$WANT_REDIS" = 1 ]; then
        redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$data/redis" >"$WORK/redis-$keys.log" 2>&1 &
        REDIS_PID=$!
        wait_port "$REDIS" 30
    fi
    wait_port "$TYRANT" 30
    log "$keys keys ($hot hot): prefilling tidemark"
    started=$(date +%s.%N)
    "$BENCH" --target tyrant --addr "127.0.0.1:$TYRANT" --op put --prefill --duration 0 \
        --keys "$keys" "${common[@]}" >&2
    tm_prefill_s=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
    prefill_db=$(stat -c %s "$data/tm/tidemark.redb")
    read -r prefill_db_disk _ < <(disk_bytes "$data/tm")
    if [ "$WANT_REDIS" = 1 ]; then
        log "$keys keys: prefilling Redis"
        "$BENCH" --target redis --addr "127.0.0.1:$REDIS" --op set --prefill --duration 0 \
            --keys "$keys" "${common[@]}" >&2
    fi
    for round in $(seq "$ROUNDS"); do
        for case in $CASES; do
            server=${case%%/*}
            name=${case#*/}
            spread=${name%%-*}
            op=${name#*-}
            case $server in
                tm) target=tyrant; addr="127.0.0.1:$TYRANT"; pid=$TM_PID ;;
                redis) target=redis; addr="127.0.0.1:$REDIS"; pid=$REDIS_PID ;;
                *) log "unknown case $case"; continue ;;
            esac
            hot_args=()
            [ "$spread" = hot ] && hot_args=(--hot-keys "$hot")
            cpu_before=$(awk '{print $14 + $15}' "/proc/$pid/stat")
            io_before=$(awk '$1=="read_bytes:"{r=$2} $1=="write_bytes:"{w=$2} END{printf "%.0f %.0f\n", r, w}' "/proc/$pid/io")
            machine_before=$(awk '$1=="cpu"{print $2+$3+$4+$7+$8}' /proc/stat)
            line_before=$(wc -l <"$server_log")
            threads_before=$(thread_ticks "$pid")
            result=$("$BENCH" --target "$target" --addr "$addr" --op "$op" --keys "$keys" \
                "${hot_args[@]}" --duration "$DURATION" --warmup "$WARMUP" \
                --label "$case" --json "${common[@]}") || true
            [ -n "$result" ] || { log "  $case: no report"; continue; }
            cpu_s=$(awk -v a="$cpu_before" -v t="$ticks" '{printf "%.2f", ($14 + $15 - a) / t}' "/proc/$pid/stat")
            machine_s=$(awk -v a="$machine_before" -v t="$ticks" '$1=="cpu"{printf "%.2f", ($2+$3+$4+$7+$8 - a) / t}' /proc/stat)
            read -r io_read io_write < <(awk -v r0="${io_before% *}" -v w0="${io_before#* }" \
                '$1=="read_bytes:"{r=$2} $1=="write_bytes:"{w=$2} END{printf "%.0f %.0f\n", r-r0, w-w0}' "/proc/$pid/io")
            # Cores used per thread name over the run: {"tidemark-checkpointer": 0.9, ...}
            threads=$(python3 -c '
import json, sys
before = dict(l.rsplit(" ", 1) for l in sys.argv[1].splitlines() if l.strip())
after = dict(l.rsplit(" ", 1) for l in sys.argv[2].splitlines() if l.strip())
wall, tick = float(sys.argv[3]), float(sys.argv[4])
print(json.dumps({n: round((float(v) - float(before.get(n, 0))) / tick / wall, 2) for n, v in after.items()}))' \
                "$threads_before" "$(thread_ticks "$pid")" \
                "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["load_wall_s"] or 1)' "$result")" "$ticks")
            rss=$(awk '$1=="VmRSS:"{print $2}' "/proc/$pid/status")
            hwm=$(awk '$1=="VmHWM:"{print $2}' "/proc/$pid/status")
            db=$(stat -c %s "$data/tm/tidemark.redb")
            read -r db_disk dir_disk < <(disk_bytes "$data/tm")
            checkpoints=$(tail -n +"$((line_before + 1))" "$server_log" | python3 -c '
import json, re, sys
out = []
for line in sys.stdin:
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if "checkpoint" not in line or "entries=" not in line:
        continue
    f = dict(re.findall(r"(\w+)=(\d+)", line))
    out.append([int(f.get(k, 0)) for k in ("entries", "write_ms", "commit_ms")])
print(json.dumps(out))')
            printf '{"keys":%d,"hot_keys":%d,"round":%d,"case":"%s","cache_size":%d,"tm_prefill_s":%s,"server_cpu_s":%s,"machine_cpu_s":%s,"server_read_bytes":%d,"server_write_bytes":%d,"rss_kib":%d,"hwm_kib":%d,"db_bytes":%d,"db_disk_bytes":%d,"dir_disk_bytes":%d,"prefill_db_bytes":%d,"prefill_db_disk_bytes":%d,"checkpoints":%s,"thread_cores":%s,"run":%s}\n' \
                "$keys" "$hot" "$round" "$case" "$CACHE_SIZE" "$tm_prefill_s" "$cpu_s" "$machine_s" \
                "$io_read" "$io_write" "$rss" "$hwm" "$db" "$db_disk" "$dir_disk" \
                "$prefill_db" "$prefill_db_disk" "$checkpoints" "$threads" "$result" >>"$RAW"
            python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print("  %-24s %9s keys %9.0f ops/s  p99 %8.0f us  windows min/median %7.0f/%7.0f (%.2f)" % (sys.argv[2], sys.argv[3], r["ops_per_sec"], r["latency_us"]["p99"], r["window_min"], r["window_median"], r["window_min_over_median"]))' \
                "$result" "$case" "$keys" >&2
        done
    done
    stop TM_PID
    stop REDIS_PID
    rm -rf "$data"
done

python3 - "$RAW" <<'PY' | tee "$OUT/windows.md"
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
sizes = sorted({r["keys"] for r in rows})
cases = list(dict.fromkeys(r["case"] for r in rows))
def pick(keys, case):
    return [r for r in rows if r["keys"] == keys and r["case"] == case]
def med(keys, case, f):
    vals = [f(r) for r in pick(keys, case)]
    return statistics.median(vals) if vals else None
print("| keys | case | ops/s | p99 µs | slowest 1-s window | median window | slowest / median | server cores (checkpointer) | server MB read / written per s | checkpoints (max commit ms) | RSS MiB (peak) | db file MiB |")
print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for k in sizes:
    for c in cases:
        runs = pick(k, c)
        if not runs:
            continue
        last = runs[-1]
        dur = last["run"]["load_wall_s"] or 1
        cps = [cp for r in runs for cp in r["checkpoints"]]
        print("| %s | %s | %s | %s | %s | %s | %.2f | %.2f (%.2f) | %.1f / %.1f | %s | %d (%d) | %.0f |" % (
            f"{k:,}", c,
            f"{med(k, c, lambda r: r['run']['ops_per_sec']):,.0f}",
            f"{med(k, c, lambda r: r['run']['latency_us']['p99']):,.0f}",
            f"{med(k, c, lambda r: r['run']['window_min']):,.0f}",
            f"{med(k, c, lambda r: r['run']['window_median']):,.0f}",
            med(k, c, lambda r: r['run']['window_min_over_median']),
            med(k, c, lambda r: r['server_cpu_s'] / (r['run']['load_wall_s'] or 1)),
            med(k, c, lambda r: sum(v for n, v in r.get('thread_cores', {}).items() if n.startswith('tidemark-checkp'))),
            med(k, c, lambda r: r['server_read_bytes'] / (r['run']['load_wall_s'] or 1) / 1e6),
            med(k, c, lambda r: r['server_write_bytes'] / (r['run']['load_wall_s'] or 1) / 1e6),
            f"{len(cps)} ({max((cp[1] + cp[2] for cp in cps), default=0):,})" if c.startswith("tm/") else "-",
            last["rss_kib"] // 1024, last["hwm_kib"] // 1024, last["db_bytes"] / 2**20 if c.startswith("tm/") else float("nan")))
base = sizes[0]
print()
print("| ratio | value |")
print("|---|---:|")
for c in cases:
    b = med(base, c, lambda r: r["run"]["ops_per_sec"])
    for k in sizes[1:]:
        v = med(k, c, lambda r: r["run"]["ops_per_sec"])
        if b and v:
            print(f"| {c} at {k:,} / at {base:,} keys | {v / b:.2f} |")
for k in sizes:
    for tm, redis in (("tm/uniform-get", "redis/uniform-get"), ("tm/uniform-guarded-put", "redis/uniform-set")):
        a, b = med(k, tm, lambda r: r["run"]["ops_per_sec"]), med(k, redis, lambda r: r["run"]["ops_per_sec"])
        if a and b:
            print(f"| {tm} / {redis} at {k:,} keys | {a / b:.2f} |")
raw = 0
for k in sizes:
    runs = [r for r in rows if r["keys"] == k and r["case"].startswith("tm/")]
    if runs:
        # 12-byte keys (bk + ten digits) and the value as the client sends it.
        raw = k * (12 + runs[-1]["run"]["value_size"])
        last = runs[-1]
        print(f"| db file / raw keys+values at {k:,} keys, apparent size | {last['db_bytes'] / raw:.2f} |")
        if "db_disk_bytes" in last:
            print(f"| db file / raw keys+values at {k:,} keys, on disk | {last['db_disk_bytes'] / raw:.2f} |")
            print(f"| data directory (file + log) / raw at {k:,} keys, on disk | {last['dir_disk_bytes'] / raw:.2f} |")
            print(f"| db file / raw at {k:,} keys when the prefill ends (the log may still hold its last changes), apparent / on disk | {last['prefill_db_bytes'] / raw:.2f} / {last['prefill_db_disk_bytes'] / raw:.2f} |")
PY
