#!/usr/bin/env bash
# Instructions per request, repeatable on a noisy machine: run the tidemark server
# under callgrind, prefill, warm up, then count the server's user-space instructions
# (every thread: connection tasks, syncer, checkpointer) over exactly OPS requests
# sent by tidemark-bench (--max-ops), and print Ir per request. Wall-clock figures
# drift between days; these do not, so compare two builds with this.
#
# Environment (defaults in brackets):
#   BIN [target/release]   directory holding tidemark and tidemark-bench
#   TARGET [tyrant]  OP [guarded-put]   as tidemark bench --target / --op
#   OPS [20000]  CONNECTIONS [16]  KEYS [20000]  VALUE_SIZE [200]
#   DURABILITY [relaxed]  PORT_BASE [27900]
# Prints one line: target, op, ops, total Ir, Ir per request, and the connection
# tasks' share per request (request_path_Ir/op: steadier between runs than the total).
#
# Bounded: the prefill writes each key once, warm-up and measured load stop after a
# fixed number of requests (and after 120 s at worst), and the server is killed and
# its files removed on exit. valgrind is installed from Debian if missing.
#   OLD=/tmp/old NEW=target; for b in $OLD $NEW; do BIN=$b/release OP=get bench/callgrind.sh; done
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

BIN=${BIN:-target/release}
TARGET=${TARGET:-tyrant}
OP=${OP:-guarded-put}
OPS=${OPS:-20000}
CONNECTIONS=${CONNECTIONS:-16}
KEYS=${KEYS:-20000}
VALUE_SIZE=${VALUE_SIZE:-200}
DURABILITY=${DURABILITY:-relaxed}
PORT_BASE=${PORT_BASE:-27900}

if ! command -v valgrind >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

WORK=$(mktemp -d /tmp/tidemark-callgrind.XXXXXX)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill -9 "$SERVER_PID" 2>/dev/null
    wait 2>/dev/null || true
    [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HTTP=$PORT_BASE
TYRANT=$((PORT_BASE + 1))
mkdir -p "$WORK/data"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
    "$BIN/tidemark" serve --data-dir "$WORK/data" --http-addr "127.0.0.1:$HTTP" \
    --tyrant-addr "127.0.0.1:$TYRANT" --durability "$DURABILITY" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
wait_port "$HTTP" 60 || { cat "$WORK/server.log" >&2; exit 1; }
ADDR=$(target_addr "$TARGET" "$HTTP" "$TYRANT")
common=(--target "$TARGET" --addr "$ADDR" --keys "$KEYS" --value-size "$VALUE_SIZE"
    --connections "$CONNECTIONS")
"$BIN/tidemark-bench" "${common[@]}" --op put --prefill --duration 0 >/dev/null
# A listing checkpoints first, so the prefill's checkpoint is done before anything is
# counted (else it lands in the measured requests or not, depending on their timing).
exec 3<>"/dev/tcp/127.0.0.1/$HTTP"
printf 'GET /keys?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' >&3
cat <&3 >/dev/null
exec 3<&-
# Warm-up: the same requests, uncounted.
"$BIN/tidemark-bench" "${common[@]}" --op "$OP" --warmup 0s --duration 120 --max-ops "$((OPS / 4))" >/dev/null
callgrind_control --instr=on "$SERVER_PID" >/dev/null
"$BIN/tidemark-bench" "${common[@]}" --op "$OP" --warmup 0s --duration 120 --max-ops "$OPS" >"$WORK/bench.txt"
callgrind_control --instr=off "$SERVER_PID" >/dev/null
callgrind_control --dump "$SERVER_PID" >/dev/null
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
SERVER_PID=
total=$(cat "$WORK"/callgrind.out* | awk '/^totals:/ { s += $2 } END { printf "%.0f", s }')
# The connection tasks alone (inclusive, the request path without the checkpointer and
# syncer threads, whose share moves by a few percent between runs with the timing of
# checkpoints): Tyrant's and memcached's run_connection, hyper's dispatcher for HTTP.
path=$(callgrind_annotate --inclusive=yes "$WORK"/callgrind.out.1 2>/dev/null |
    grep -E '(::server::run_connection::\{\{closure\}\}|h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch) \[' |
    head -1 | awk '{ gsub(",", "", $1); print $1 }' || true)
echo "$TARGET $OP ops=$OPS Ir=$total Ir/op=$((total / OPS)) request_path_Ir/op=$((${path:-0} / OPS))"
