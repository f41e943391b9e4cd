#!/usr/bin/env bash
# tidemark on PostgreSQL against pgbench running tidemark's own statements directly,
# in the same run, so the ratio is tidemark's overhead on top of the database.
#
# Starts a throwaway PostgreSQL 15 cluster on loopback with the DEFAULT durability
# settings (fsync=on, synchronous_commit=on, full_page_writes=on: every acknowledged
# write is flushed to the WAL on disk; this durable configuration is what is
# compared), lets one tidemark server (`tidemark serve --database-url …`) create the
# schema, fills KEYS keys of VALUE_SIZE bytes for each side, and then runs every case
# once per round, round after round (interleaved, so drift of the machine hits all
# cases alike):
#
#   tm-pg-http-put      tidemark-bench: guarded HTTP PUT, fresh increasing timestamps
#   tm-pg-tyrant-tsput  tidemark-bench: Tyrant `ext tsput` (the guarded write)
#   pgbench-put         pgbench -M prepared: tidemark's guarded upsert, same SQL text
#   tm-pg-http-get      tidemark-bench: HTTP GET
#   tm-pg-tyrant-get    tidemark-bench: Tyrant get
#   pgbench-get         pgbench -M prepared: tidemark's point SELECT
#
# The pgbench scripts are generated from src/store/postgres/sql.rs
# (bench/postgres_summary.py scripts), and the script checks that the text tidemark
# sent (pg_stat_activity) is exactly that text. What differs, unavoidably:
#   * pgbench keys are 12 decimal digits (100000000000 + i) beside tidemark-bench's
#     bk0000000000 … keys (12 bytes too) in the same table: pgbench cannot build
#     strings. Both sets have KEYS rows and are filled alike.
#   * pgbench cannot bind a NULL parameter, so the upsert's $6/$7 (expires_at and
#     deleted_at, NULL for a live value without expiry) are written as NULL.
#   * pgbench sends parameters and takes results as text; tokio-postgres as binary.
#   * pgbench's timestamps come from a per-client counter (ts0 + n*clients +
#     client_id), sign-flipped like sql::to_sql; tidemark-bench's from one counter.
#
# Both clients are single-threaded (tidemark-bench --threads 1, pgbench -j 1), one
# request outstanding per connection. Each run records the CPU of the machine, the
# tidemark server, all PostgreSQL processes and the client, so the summary shows CPU
# per operation and the load from unrelated processes.
#
# Results in OUT: raw.jsonl (every run), results.json (medians, ratios), summary.md
# (the tables, also printed), statements/ (the pgbench scripts and tidemark's text).
#
# Everything is bounded (each run lasts WARMUP+DURATION plus about a second) and
# cleaned up on exit (trap): the servers are stopped and the cluster removed. Loopback
# only. Needs root or the postgres user's rights to run initdb as `postgres`.
#
# Environment (defaults in brackets):
#   DURATION [10]  WARMUP [2]  ROUNDS [5]  CONNECTIONS [16] (one count or several)
#   KEYS [100000]  VALUE_SIZE [200]
#   CASES [all]              space-separated subset of the case names above
#   OUT [docs/bench/postgres]
#   PORT_BASE [27700]        PostgreSQL, tidemark HTTP, tidemark Tyrant ports
#   PG_BIN [/usr/lib/postgresql/15/bin]
#   SKIP_BUILD [0]           1 = use the binaries already in target/release
#   TM_ARGS [""]             extra flags for tidemark serve
#   PIN_POSTGRES [""]        CPU list for PostgreSQL (taskset -c), e.g. 0; tidemark and
#   PIN_REST [""]            both clients then run on PIN_REST, e.g. 1. Models a database
#                            on its own machine: tidemark's CPU no longer competes with it.
#
# Full run (about 6 minutes):
#   bench/postgres.sh
# Smoke run (about 30 s, results kept out of docs/):
#   DURATION=2 WARMUP=1 ROUNDS=1 KEYS=10000 OUT=/tmp/pgbench-smoke bench/postgres.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-5}
CONNECTIONS=${CONNECTIONS:-16}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-200}
OUT=${OUT:-docs/bench/postgres}
PORT_BASE=${PORT_BASE:-27700}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SKIP_BUILD=${SKIP_BUILD:-0}
TM_ARGS=${TM_ARGS:-}
PIN_POSTGRES=${PIN_POSTGRES:-}
PIN_REST=${PIN_REST:-}
pg_pin=() rest_pin=()
if [ -n "$PIN_POSTGRES$PIN_REST" ]; then
    [ -n "$PIN_POSTGRES" ] && [ -n "$PIN_REST" ] || { echo "set both PIN_POSTGRES and PIN_REST" >&2; exit 2; }
    command -v taskset >/dev/null || { echo "taskset (util-linux) is required for PIN_*" >&2; exit 1; }
    pg_pin=(taskset -c "$PIN_POSTGRES") rest_pin=(taskset -c "$PIN_REST")
fi
ALL_CASES="tm-pg-http-put tm-pg-tyrant-tsput pgbench-put tm-pg-http-get tm-pg-tyrant-get pgbench-get"
CASES=${CASES:-$ALL_CASES}

# pgbench has no warm-up of its own and counts whole seconds: both are whole seconds.
for v in DURATION WARMUP ROUNDS KEYS VALUE_SIZE PORT_BASE; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "$v must be a whole number, not '${!v}'" >&2; exit 2; }
done
[ "$DURATION" -ge 1 ] || { echo "DURATION must be at least 1" >&2; exit 2; }

log() { printf '[postgres %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- what is needed -----------------------------------------------------------
for tool in initdb pg_ctl pgbench psql; do
    [ -x "$PG_BIN/$tool" ] || { echo "$PG_BIN/$tool not found (PostgreSQL 15: postgresql-15)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
PSQL_BIN="$PG_BIN/psql"
PGBENCH="$PG_BIN/pgbench"

if [ "$SKIP_BUILD" != 1 ]; then
    log "building tidemark and tidemark-bench (release)"
    cargo build --release --locked --bins >&2
fi

# Copies of the binaries, so a rebuild in the work tree cannot swap them mid-run.
WORK=$(mktemp -d /tmp/tidemark-postgres.XXXXXX)
cp target/release/tidemark target/release/tidemark-bench "$WORK/"
SERVER="$WORK/tidemark"
BENCH="$WORK/tidemark-bench"
PGDATA="$WORK/pgdata"

# initdb and the server refuse to run as root: then they run as `postgres`.
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "running as root needs a 'postgres' user" >&2; exit 1; }
    as_pg=(runuser -u postgres --)
    chown postgres: "$WORK"
fi

PG_PORT=$PORT_BASE
TM_HTTP=$((PORT_BASE + 1))
TM_TYRANT=$((PORT_BASE + 2))
TM_PID=
PG_STARTED=0
cleanup() {
    if [ -n "$TM_PID" ]; then
        kill "$TM_PID" 2>/dev/null || true
        wait "$TM_PID" 2>/dev/null || true
    fi
    if [ "$PG_STARTED" = 1 ]; then
        "${as_pg[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

psql_() { "$PSQL_BIN" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -X -q -At -v ON_ERROR_STOP=1 "$@"; }
now_flipped() { python3 -c 'import time; print(int(time.time() * 1e6) - (1 << 63))'; }

# The cluster's WAL alone grows to max_wal_size (1 GB by default) during the writes.
free_mb=$(df -Pm "$WORK" | awk 'NR==2{print $4}')
if [ "$free_mb" -lt 2048 ]; then
    log "warning: only $free_mb MB free under $WORK; the WAL may need up to ~1.2 GB"
fi

# --- PostgreSQL ------------------------------------------------------------------
log "initdb in $PGDATA"
"${as_pg[@]}" "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; exit 1; }
# Only where to listen is set; every durability and memory setting is PostgreSQL's default.
PG_STARTED=1
"${as_pg[@]}" "${pg_pin[@]}" "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgres.log" \
    -o "-p $PG_PORT -k $WORK -c listen_addresses=127.0.0.1" -w -t 30 start >/dev/null ||
    { cat "$WORK/postgres.log" >&2; exit 1; }
PG_VERSION=$(psql_ -c "SHOW server_version")
PG_SETTINGS=$(psql_ -c "SELECT string_agg(name || '=' || current_setting(name), ' ' ORDER BY name)
    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes',
    'wal_sync_method', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'autovacuum')")
log "PostgreSQL $PG_VERSION on 127.0.0.1:$PG_PORT: $PG_SETTINGS"
PM_PID=$(head -1 "$PGDATA/postmaster.pid")

# --- tidemark (creates the schema) ----------------------------------------------
DB_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres?sslmode=disable"
# shellcheck disable=SC2086 # TM_ARGS is a list of flags
"${rest_pin[@]}" "$SERVER" serve --database-url "$DB_URL" --http-addr "127.0.0.1:$TM_HTTP" \
    --tyrant-addr "127.0.0.1:$TM_TYRANT" $TM_ARGS >"$WORK/tidemark.log" 2>&1 &
TM_PID=$!
wait_port "$TM_HTTP" 30 || { cat "$WORK/tidemark.log" >&2; exit 1; }
wait_port "$TM_TYRANT" 10
psql_ -c "SELECT 1 FROM tidemark_records LIMIT 0" >/dev/null ||
    { echo "tidemark did not create the schema" >&2; cat "$WORK/tidemark.log" >&2; exit 1; }
log "tidemark $("$SERVER" --version | awk '{print $2}') serving on PostgreSQL (pool: default size)"

# --- statements and the keyspace ----------------------------------------------------
STMTS="$OUT/statements"
mkdir -p "$OUT"
python3 bench/postgres_summary.py scripts src/store/postgres/sql.rs "$STMTS"
KBASE=100000000000
CONTENT_TYPE=application/octet-stream
[ "$KEYS" -le 899999999999 ] || { echo "KEYS too large for 12-digit pgbench keys" >&2; exit 2; }

# Both key sets in one statement, with a timestamp before any the runs will send.
log "filling $KEYS keys for tidemark-bench and $KEYS for pgbench ($VALUE_SIZE-byte values)"
psql_ <<SQL
INSERT INTO tidemark_records (key, ts, tombstone, value, content_type)
SELECT k, $(now_flipped) - 1000000, false, convert_to(repeat('v', $VALUE_SIZE), 'UTF8'), '$CONTENT_TYPE'
FROM (SELECT convert_to('bk' || lpad(i::text, 10, '0'), 'UTF8') AS k FROM generate_series(0, $KEYS - 1) i
      UNION ALL
      SELECT convert_to(($KBASE + i)::text, 'UTF8') FROM generate_series(0, $KEYS - 1) i) keys
ON CONFLICT (key) DO NOTHING;
VACUUM ANALYZE tidemark_records;
CHECKPOINT;
SQL
log "table: $(psql_ -c "SELECT count(*) || ' rows, ' || pg_size_pretty(pg_total_relation_size('tidemark_records')) FROM tidemark_records")"

VALUE=$(python3 -c "print('v' * $VALUE_SIZE)")
GRACE_US=3600000000 # tidemark's default --tombstone-grace (1h): only the cutoff's shape matters

# The text tidemark sends must be the text the pgbench scripts were made from: run a
# moment of each tidemark case, then look at what its connections ran last.
check_statement() { # file-with-expected-text what
    local expected
    expected=$(cat "$1")
    if psql_ -c "SELECT query FROM pg_stat_activity WHERE application_name = 'tidemark'" -z -0 |
        python3 -c 'import sys; want = sys.argv[1]; sys.exit(0 if want in sys.stdin.read().split("\0") else 1)' "$expected"; then
        log "  $2: tidemark ran exactly the statement in $1"
    else
        log "  $2: tidemark's statement text was not seen in pg_stat_activity; see $1"
        exit 1
    fi
}
"$BENCH" --target tidemark-http --addr "127.0.0.1:$TM_HTTP" --op put --duration 1s --warmup 0s \
    --connections 8 --keys "$KEYS" --value-size "$VALUE_SIZE" >/dev/null
check_statement "$STMTS/tidemark-upsert.sql" "guarded put"
"$BENCH" --target tidemark-http --addr "127.0.0.1:$TM_HTTP" --op get --duration 1s --warmup 0s \
    --connections 8 --keys "$KEYS" --value-size "$VALUE_SIZE" >/dev/null
check_statement "$STMTS/tidemark-get.sql" "get"

# --- CPU accounting -----------------------------------------------------------------
machine_busy_s() { # CPU seconds all CPUs spent not idle since boot (USER_HZ = 100)
    awk '/^cpu /{printf "%.2f\n", ($2+$3+$4+$7+$8+$9)/100; exit}' /proc/stat
}
proc_cpu_s() { # pid: user+system CPU seconds of that process, all threads
    awk '{sub(/^.*\) /, ""); printf "%.2f\n", ($12+$13)/100}' "/proc/$1/stat" 2>/dev/null || echo 0
}
postgres_cpu_s() { # the postmaster with its reaped children, plus the live backends
    local total child
    if ! total=$(awk '{sub(/^.*\) /, ""); printf "%.2f", ($12+$13+$14+$15)/100}' "/proc/$PM_PID/stat" 2>/dev/null); then
        echo "PostgreSQL (pid $PM_PID) is gone; the end of its log:" >&2
        tail -20 "$WORK/postgres.log" >&2
        exit 1
    fi
    for child in $(ps -o pid= --ppid "$PM_PID"); do
        total=$(awk -v a="$total" -v b="$(proc_cpu_s "$child")" 'BEGIN{printf "%.2f", a+b}')
    done
    echo "$total"
}
children_cpu_s() { # CPU of this shell's finished children, from bash's `times` (its
    # second line), which must run in this shell itself, not in a $(…) subshell
    times >"$WORK/times"
    awk 'NR==2{n=split($0,t," "); s=0; for(i=1;i<=n;i++){split(t[i],p,"m"); s+=p[1]*60+p[2]} printf "%.3f\n", s}' "$WORK/times"
}

# --- runs -----------------------------------------------------------------------------
RAW="$OUT/raw.jsonl"
: >"$RAW"

run_case() { # name conns round → one JSON report on stdout (empty when nothing came back)
    local name=$1 conns=$2 round=$3 status=0 t0 t1 c0 c1 prefix
    case $name in
        tm-pg-http-put) tm_run tidemark-http "$TM_HTTP" put "$name" "$conns" ;;
        tm-pg-tyrant-tsput) tm_run tyrant "$TM_TYRANT" guarded-put "$name" "$conns" ;;
        tm-pg-http-get) tm_run tidemark-http "$TM_HTTP" get "$name" "$conns" ;;
        tm-pg-tyrant-get) tm_run tyrant "$TM_TYRANT" get "$name" "$conns" ;;
        pgbench-put | pgbench-get)
            local op=${name#pgbench-} vars=(-D "kbase=$KBASE" -D "keys=$KEYS")
            if [ "$op" = put ]; then
                vars+=(-D n=0 -D "ts0=$(now_flipped)" -D "clients=$conns" -D "grace=$GRACE_US"
                    -D tombstone=false -D "value=$VALUE" -D "content_type=$CONTENT_TYPE" -D if_absent=false)
            fi
            prefix="$WORK/pgbench-$name-c$conns-r$round"
            children_cpu_s >"$WORK/cpu0"
            t0=$(date +%s.%N)
            "${rest_pin[@]}" "$PGBENCH" -h 127.0.0.1 -p "$PG_PORT" -U postgres -n -M prepared -c "$conns" -j 1 \
                -T $((WARMUP + DURATION + 1)) -f "$STMTS/$op.sql" "${vars[@]}" \
                -l --log-prefix="$prefix" postgres >"$prefix.out" 2>&1 || status=$?
            t1=$(date +%s.%N)
            children_cpu_s >"$WORK/cpu1"
            c0=$(cat "$WORK/cpu0") c1=$(cat "$WORK/cpu1")
            [ "$status" = 0 ] || { log "  $name: pgbench exited $status:"; tail -5 "$prefix.out" >&2; }
            compgen -G "$prefix.*[0-9]" >/dev/null || return 0
            python3 bench/postgres_summary.py pgbench-run "$prefix".*[0-9] --label "$name" --op "$op" \
                --operation "pgbench -M prepared: $STMTS/$op.sql" --connections "$conns" --keys "$KEYS" \
                --value-size "$VALUE_SIZE" --warmup "$WARMUP" --duration "$DURATION" \
                --wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')" \
                --client-cpu "$(awk -v a="$c0" -v b="$c1" 'BEGIN{print b-a}')" --exit-status "$status"
            rm -f "$prefix".*[0-9]
            ;;
        *) echo "unknown case $name" >&2; exit 2 ;;
    esac
}
tm_run() { # target port op label conns
    "${rest_pin[@]}" "$BENCH" --target "$1" --addr "127.0.0.1:$2" --op "$3" --label "$4" --connections "$5" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --keys "$KEYS" --value-size "$VALUE_SIZE" \
        --pipeline 1 --threads 1 --json ||
        log "  $4: the client reported a failed run (kept in raw.jsonl)"
}

log "load before the runs: $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min)"
total_runs=0
for round in $(seq "$ROUNDS"); do
    for conns in $CONNECTIONS; do
        log "round $round/$ROUNDS at $conns connections"
        for name in $CASES; do
            busy0=$(machine_busy_s) tm0=$(proc_cpu_s "$TM_PID") pg0=$(postgres_cpu_s)
            result=$(run_case "$name" "$conns" "$round")
            busy1=$(machine_busy_s) tm1=$(proc_cpu_s "$TM_PID") pg1=$(postgres_cpu_s)
            [ -n "$result" ] || { log "  $name: no report"; continue; }
            cpu=$(awk -v b0="$busy0" -v b1="$busy1" -v t0="$tm0" -v t1="$tm1" -v p0="$pg0" -v p1="$pg1" -v pg="${name%%-*}" \
                'BEGIN{tm=t1-t0; pq=p1-p0; srv=(pg=="pgbench") ? pq : tm+pq;
                 printf "{\"machine_busy_s\":%.2f,\"server_s\":%.2f,\"all_servers_s\":%.2f,\"tidemark_s\":%.2f,\"postgres_s\":%.2f}", b1-b0, srv, tm+pq, tm, pq}')
            printf '{"case":"%s","round":%d,"cpu":%s,"loadavg":"%s","run":%s}\n' \
                "$name" "$round" "$cpu" "$(cut -d' ' -f1-3 /proc/loadavg)" "$result" >>"$RAW"
            python3 -c 'import json,sys; r=json.loads(sys.argv[1]); c=json.loads(sys.argv[3]); w=max(r["load_wall_s"],1e-9); print("  %-20s %4d conns %9.0f ops/s  p50 %7.0f  p99 %7.0f us  err %d stale %d miss %d  tidemark %.2f, postgres %.2f cores, other load %.2f cores" % (sys.argv[2], r["connections"], r["ops_per_sec"], r["latency_us"]["p50"], r["latency_us"]["p99"], r["error"], r["stale"], r["miss"], c["tidemark_s"]/w, c["postgres_s"]/w, (c["machine_busy_s"]-c["all_servers_s"]-(r["client_cpu_s"] or 0))/w))' "$result" "$name" "$cpu" >&2
            total_runs=$((total_runs + 1))
        done
    done
done
log "$total_runs runs done; load now $(cut -d' ' -f1-3 /proc/loadavg)"
log "table after the runs: $(psql_ -c "SELECT pg_size_pretty(pg_total_relation_size('tidemark_records')) || ', ' || (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) || ' checkpoints'")"

python3 bench/postgres_summary.py summary --raw "$RAW" --out "$OUT" \
    --meta "PostgreSQL $PG_VERSION ($PG_SETTINGS); tidemark $(git rev-parse --short HEAD 2>/dev/null || echo '?'); duration=${DURATION}s warmup=${WARMUP}s rounds=$ROUNDS keys=$KEYS (each side) value_size=$VALUE_SIZE; $(if [ -n "$PIN_POSTGRES" ]; then echo "PostgreSQL pinned to CPU $PIN_POSTGRES, tidemark and clients to CPU $PIN_REST"; else echo "$(nproc) cores shared by clients, tidemark and PostgreSQL"; fi)" |
    tee "$OUT/summary.md"
