#!/usr/bin/env bash
# Compare tidemark with Redis using one closed-loop client (tidemark-bench) for all.
#
# Starts four servers on loopback, each with its own port and temp directory:
#   redis-mem     Redis, no persistence (--save "" --appendonly no)
#   redis-aof     Redis, --appendonly yes --appendfsync always (fsync before reply)
#   tm-relaxed    tidemark --durability relaxed (ack after commit, fsync every 100 ms)
#   tm-immediate  tidemark, default durability (ack after fsync, group commit)
# then runs every case against them, interleaved (A B C … A B C …) for several rounds
# at each connection count, so slow drift of the machine hits every case alike.
# Results: docs/bench/raw.jsonl (every run), docs/bench/results.json (medians and
# ratios), docs/bench/throughput.svg (chart), docs/bench/summary.md (the tables that
# are also printed at the end).
#
# Everything is bounded: each run lasts WARMUP+DURATION seconds plus at most the
# client's I/O timeout, and the servers are killed on exit (trap).
#
# Environment (defaults in brackets):
#   DURATION [10]         measured seconds per run
#   WARMUP [2]            unmeasured seconds before each run
#   ROUNDS [3]            rounds at each connection count …
#   HEADLINE [16]         … except the headline connection count,
#   HEADLINE_ROUNDS [ROUNDS]  which gets this many
#   CONNECTIONS ["1 4 16 64"]
#   KEYS [100000]  VALUE_SIZE [200]  PIPELINE [1]  THREADS [1] (client runtime threads)
#   CASES [all]           space-separated subset of case names (see CASE_TABLE below)
#   OUT [docs/bench]      where results go
#   PORT_BASE [27400]     six consecutive loopback ports from here
#   SKIP_BUILD [0]        1 = use the binaries already in target/release
#   TM_ARGS [""]          extra flags for both tidemark servers, e.g. "--worker-threads 1"
#
# DURATION and WARMUP are whole seconds or humantime text ("500ms").
# Smoke run (about a minute, results kept out of docs/):
#   DURATION=2 WARMUP=500ms ROUNDS=1 CONNECTIONS=16 KEYS=10000 OUT=/tmp/bench-smoke bench/compare.sh
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
HEADLINE=${HEADLINE:-16}
HEADLINE_ROUNDS=${HEADLINE_ROUNDS:-$ROUNDS}
CONNECTIONS=${CONNECTIONS:-"1 4 16 64"}
KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-200}
PIPELINE=${PIPELINE:-1}
THREADS=${THREADS:-1}
OUT=${OUT:-docs/bench}
PORT_BASE=${PORT_BASE:-27400}
SKIP_BUILD=${SKIP_BUILD:-0}
TM_ARGS=${TM_ARGS:-}

log() { printf '[compare %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- what is needed ---------------------------------------------------------
if ! command -v redis-server >/dev/null; then
    log "installing redis-server (Debian package)"
    if [ "$(id -u)" -ne 0 ]; then
        echo "redis-server is missing and we are not root: apt-get install -y redis-server" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

if [ "$SKIP_BUILD" != 1 ]; then
    log "building tidemark and tidemark-bench (release)"
    cargo build --release --locked --bins >&2
fi

# Run copies of the binaries, so a rebuild in the work tree during a long comparison
# cannot swap the server or the client halfway through.
WORK=$(mktemp -d /tmp/tidemark-compare.XXXXXX)
cp target/release/tidemark target/release/tidemark-bench "$WORK/"
SERVER="$WORK/tidemark"
BENCH="$WORK/tidemark-bench"

PIDS=()
declare -A SERVER_PID # server name -> pid, for CPU accounting per run
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

P_REDIS_MEM=$PORT_BASE
P_REDIS_AOF=$((PORT_BASE + 1))
P_TMR_HTTP=$((PORT_BASE + 2))
P_TMR_TYRANT=$((PORT_BASE + 3))
P_TMI_HTTP=$((PORT_BASE + 4))
P_TMI_TYRANT=$((PORT_BASE + 5))

# --- servers -----------------------------------------------------------------
start_redis() { # name port extra-args…
    local name=$1 port=$2
    shift 2
    mkdir -p "$WORK/$name"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$WORK/$name" \
        --daemonize no --protected-mode yes --logfile "$WORK/$name.log" "$@" &
    PIDS+=($!)
    SERVER_PID[$name]=$!
}
start_tidemark() { # name http-port tyrant-port extra-args…
    local name=$1 http=$2 tyrant=$3
    shift 3
    mkdir -p "$WORK/$name"
    # shellcheck disable=SC2086 # TM_ARGS is a list of flags
    "$SERVER" serve --data-dir "$WORK/$name" --http-addr "127.0.0.1:$http" \
        --tyrant-addr "127.0.0.1:$tyrant" $TM_ARGS "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    SERVER_PID[$name]=$!
}

start_redis redis-mem "$P_REDIS_MEM" --save "" --appendonly no
start_redis redis-aof "$P_REDIS_AOF" --save "" --appendonly yes --appendfsync always
start_tidemark tm-relaxed "$P_TMR_HTTP" "$P_TMR_TYRANT" --durability relaxed
start_tidemark tm-immediate "$P_TMI_HTTP" "$P_TMI_TYRANT"
for port in "$P_REDIS_MEM" "$P_REDIS_AOF" "$P_TMR_HTTP" "$P_TMR_TYRANT" "$P_TMI_HTTP" "$P_TMI_TYRANT"; do
    wait_port "$port"
done
log "servers up in $WORK (redis $(redis-server --version | sed -E 's/.*v=([^ ]+).*/\1/'))"

# --- CPU accounting ----------------------------------------------------------
# Client and servers share the machine with whatever else runs on it (on a shared
# development box: other people's builds and tests). Each run records the CPU the
# whole machine, the server under test, all servers, and (in its own report) the
# client used, so the summary can show CPU per operation and how much of the machine
# something unrelated took ("foreign" load) while a number was taken.
machine_busy_s() { # CPU seconds all CPUs spent not idle since boot (USER_HZ = 100)
    awk '/^cpu /{printf "%.2f\n", ($2+$3+$4+$7+$8+$9)/100; exit}' /proc/stat
}
proc_cpu_s() { # pid: user+system CPU seconds of that process, all threads
    awk '{sub(/^.*\) /, ""); printf "%.2f\n", ($12+$13)/100}' "/proc/$1/stat" 2>/dev/null || echo 0
}
servers_cpu_s() {
    local pid total=0
    for pid in "${SERVER_PID[@]}"; do
        total=$(awk -v a="$total" -v b="$(proc_cpu_s "$pid")" 'BEGIN{printf "%.2f", a+b}')
    done
    echo "$total"
}

# --- cases -------------------------------------------------------------------
# name  target  addr  op
CASE_TABLE="
redis-mem/set                  redis          127.0.0.1:$P_REDIS_MEM   set
redis-mem/guarded-set          redis          127.0.0.1:$P_REDIS_MEM   guarded-set
redis-mem/get                  redis          127.0.0.1:$P_REDIS_MEM   get
redis-aof/set                  redis          127.0.0.1:$P_REDIS_AOF   set
redis-aof/guarded-set          redis          127.0.0.1:$P_REDIS_AOF   guarded-set
tm-relaxed/tyrant-put          tyrant         127.0.0.1:$P_TMR_TYRANT  put
tm-relaxed/tyrant-guarded-put  tyrant         127.0.0.1:$P_TMR_TYRANT  guarded-put
tm-relaxed/tyrant-get          tyrant         127.0.0.1:$P_TMR_TYRANT  get
tm-relaxed/http-put            tidemark-http  127.0.0.1:$P_TMR_HTTP    put
tm-relaxed/http-get            tidemark-http  127.0.0.1:$P_TMR_HTTP    get
tm-immediate/tyrant-put        tyrant         127.0.0.1:$P_TMI_TYRANT  put
tm-immediate/tyrant-guarded-put tyrant        127.0.0.1:$P_TMI_TYRANT  guarded-put
tm-immediate/http-put          tidemark-http  127.0.0.1:$P_TMI_HTTP    put
"
if [ -n "${CASES:-}" ]; then
    wanted=" $CASES "
    CASE_TABLE=$(echo "$CASE_TABLE" | while read -r name rest; do
        if [ -n "$name" ] && [[ "$wanted" == *" $name "* ]]; then echo "$name $rest"; fi
    done)
fi

common=(--keys "$KEYS" --value-size "$VALUE_SIZE" --pipeline "$PIPELINE" --threads "$THREADS")

# Fill the keyspaces the reads use, once: gets then always find a value (later
# writes only overwrite the same keys).
log "prefilling $KEYS keys on redis-mem and tm-relaxed"
"$BENCH" --target redis --addr "127.0.0.1:$P_REDIS_MEM" --op set --prefill --duration 0 \
    --connections 16 "${common[@]}" >&2
"$BENCH" --target tyrant --addr "127.0.0.1:$P_TMR_TYRANT" --op put --prefill --duration 0 \
    --connections 16 "${common[@]}" >&2

mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"
: >"$RAW"

max_rounds=$ROUNDS
[ "$HEADLINE_ROUNDS" -gt "$max_rounds" ] && max_rounds=$HEADLINE_ROUNDS
total_runs=0
for round in $(seq "$max_rounds"); do
    for conns in $CONNECTIONS; do
        want=$ROUNDS
        [ "$conns" = "$HEADLINE" ] && want=$HEADLINE_ROUNDS
        [ "$round" -le "$want" ] || continue
        log "round $round/$want at $conns connections"
        while read -r name target addr op; do
            [ -n "$name" ] || continue
            server_pid=${SERVER_PID[${name%%/*}]}
            busy0=$(machine_busy_s) srv0=$(proc_cpu_s "$server_pid") all0=$(servers_cpu_s)
            if ! result=$("$BENCH" --target "$target" --addr "$addr" --op "$op" \
                --connections "$conns" --duration "$DURATION" --warmup "$WARMUP" \
                --label "$name" --json "${common[@]}"); then
                log "  $name: the client reported a failed run (kept in raw.jsonl)"
            fi
            busy1=$(machine_busy_s) srv1=$(proc_cpu_s "$server_pid") all1=$(servers_cpu_s)
            [ -n "$result" ] || { log "  $name: no report"; continue; }
            cpu=$(awk -v b0="$busy0" -v b1="$busy1" -v s0="$srv0" -v s1="$srv1" -v a0="$all0" -v a1="$all1" \
                'BEGIN{printf "{\"machine_busy_s\":%.2f,\"server_s\":%.2f,\"all_servers_s\":%.2f}", b1-b0, s1-s0, a1-a0}')
            printf '{"case":"%s","round":%d,"cpu":%s,"run":%s}\n' "$name" "$round" "$cpu" "$result" >>"$RAW"
            python3 -c 'import json,sys; r=json.loads(sys.argv[1]); c=json.loads(sys.argv[3]); w=max(r["load_wall_s"],1e-9); print("  %-32s %5d conns %10.0f ops/s  p99 %8.1f us  err %d stale %d miss %d  server %.2f cores, other load %.2f cores" % (sys.argv[2], r["connections"], r["ops_per_sec"], r["latency_us"]["p99"], r["error"], r["stale"], r["miss"], c["server_s"]/w, (c["machine_busy_s"]-c["all_servers_s"]-(r["client_cpu_s"] or 0))/w))' "$result" "$name" "$cpu" >&2
            total_runs=$((total_runs + 1))
        done <<<"$CASE_TABLE"
    done
done
log "$total_runs runs done"

python3 "$ROOT/bench/summarize.py" --raw "$RAW" --out "$OUT" --headline "$HEADLINE" \
    --meta "duration=$DURATION warmup=$WARMUP rounds=$ROUNDS headline_rounds=$HEADLINE_ROUNDS keys=$KEYS value_size=$VALUE_SIZE pipeline=$PIPELINE threads=$THREADS tidemark_args='$TM_ARGS'" |
    tee "$OUT/summary.md"
