#!/usr/bin/env bash
# Crash durability proof: with the default durability ("immediate"), no acknowledged
# write is lost when the server is killed with SIGKILL in the middle of a write load.
#
# Each trial: start `tidemark serve` on loopback port 0 with a fresh data directory,
# drive a write load from several keep-alive connections (scripts/crash-load.py; every
# key distinct, every value distinct, a key recorded only once its 2xx response has been
# read), SIGKILL the server 0.2-1.5 s (KILL_MIN_MS-KILL_MAX_MS) into the load, restart it on the same directory,
# and read every acknowledged key back with its value and write timestamp.
#
# Then the same with --durability relaxed, reported and never failed: relaxed mode only
# promises durability at the next flush (--flush-interval, default 100ms).
#
# What this proves and what it does not: SIGKILL ends the process but leaves the
# kernel's page cache, so a loss here means tidemark acknowledged a write it had not yet
# handed to the kernel (or recovery threw it away). It cannot show that the fsync itself
# happened before the acknowledgement; only power loss or an OS crash tests that.
#
# Environment: TRIALS (default 20), RELAXED_TRIALS (default 5), WRITERS (default 8),
# KILL_MIN_MS/KILL_MAX_MS (default 200/1500: when in the load the SIGKILL comes; a
# window past 2 s also kills during and after checkpoints),
# KEEP=1 to keep the work directory, TIDEMARK_BIN=path to test that binary instead of
# building one. Loopback only; every step is bounded in time.
# Prints one line per trial and ends with `acknowledged=N lost=0 trials=T`; exits
# non-zero if any acknowledged write was lost or came back different.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TRIALS=${TRIALS:-20}
RELAXED_TRIALS=${RELAXED_TRIALS:-5}
WRITERS=${WRITERS:-8}
KILL_MIN_MS=${KILL_MIN_MS:-200}
KILL_MAX_MS=${KILL_MAX_MS:-1500}
LOAD="$REPO/scripts/crash-load.py"

# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
tidemark_binary "$REPO"
[[ -x $BIN ]] || {
    echo "no binary at $BIN" >&2
    exit 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/tidemark-crash.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Start the server on loopback port 0; set SERVER_PID and HTTP_ADDR (from the JSON log).
start_server() {
    local data_dir=$1 durability=$2 log=$3
    # A clean environment, so nothing from the caller's (auth token, durability, ...)
    # changes what is being tested. No drain delay: the test is not behind a balancer.
    env -i PATH="$PATH" TIDEMARK_LOG_FORMAT=json TIDEMARK_DRAIN_DELAY=0 \
        "$BIN" serve --http-addr 127.0.0.1:0 --tyrant-addr 127.0.0.1:0 \
        --data-dir "$data_dir" --durability "$durability" >"$log" 2>&1 &
    SERVER_PID=$!
    HTTP_ADDR=""
    for _ in $(seq 1 200); do
        HTTP_ADDR=$(python3 -c '
import json, sys
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        fields = json.loads(line).get("fields", {})
    except ValueError:
        continue
    if fields.get("message") == "HTTP API listening":
        print(fields["http_addr"])
        break
' "$log")
        [[ -n $HTTP_ADDR ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "server did not start (log: $log)" >&2
    cat "$log" >&2
    return 1
}

stop_server() {
    kill -TERM "$SERVER_PID"
    local status=0 watchdog
    (sleep 30 && kill -KILL "$SERVER_PID" 2>/dev/null) &
    watchdog=$!
    wait "$SERVER_PID" || status=$?
    kill "$watchdog" 2>/dev/null || true
    SERVER_PID=""
    return "$status"
}

json_field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

# One trial; prints its line and sets TRIAL_ACKED, TRIAL_LOST, TRIAL_BAD.
run_trial() {
    local mode=$1 n=$2 total=$3
    local dir="$WORK/$mode-$n"
    mkdir -p "$dir/data"
    local delay_ms=$((KILL_MIN_MS + RANDOM % (KILL_MAX_MS - KILL_MIN_MS + 1)))
    local delay
    delay=$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))

    start_server "$dir/data" "$mode" "$dir/server1.log"
    local load
    load=$(timeout 60 python3 "$LOAD" load --addr "$HTTP_ADDR" --prefix "t$n" --out "$dir" \
        --writers "$WRITERS" --kill-pid "$SERVER_PID" --kill-after "$delay")
    local status=0
    wait "$SERVER_PID" 2>/dev/null || status=$?
    SERVER_PID=""
    TRIAL_BAD=0
    if [[ $status != 137 || $(json_field "$load" killed) != True ]]; then
        echo "trial $n: the server was not killed by SIGKILL as planned (exit status $status)"
        TRIAL_BAD=1
    fi

    start_server "$dir/data" "$mode" "$dir/server2.log"
    local verify
    verify=$(timeout 120 python3 "$LOAD" verify --addr "$HTTP_ADDR" --out "$dir")
    stop_server || {
        echo "trial $n: the restarted server did not shut down cleanly"
        TRIAL_BAD=1
    }

    TRIAL_ACKED=$(json_field "$verify" acknowledged)
    TRIAL_LOST=$(json_field "$verify" lost)
    local wrong errors present absent in_flight_wrong rate
    wrong=$(json_field "$verify" wrong)
    errors=$(json_field "$verify" errors)
    present=$(json_field "$verify" in_flight_present)
    absent=$(json_field "$verify" in_flight_absent)
    in_flight_wrong=$(json_field "$verify" in_flight_wrong)
    rate=$(json_field "$load" writes_per_second)
    printf '%s trial %2d/%d: SIGKILL after %ss: acknowledged=%d lost=%d wrong=%d (%d writes/s); in flight at the kill: %d committed, %d not\n' \
        "$mode" "$n" "$total" "$delay" "$TRIAL_ACKED" "$TRIAL_LOST" "$wrong" "$rate" "$present" "$absent"
    if ((wrong + errors + in_flight_wrong > 0)); then
        echo "  problems: $(json_field "$verify" problems)"
        TRIAL_BAD=1
    fi
    if ((TRIAL_ACKED == 0)); then
        echo "  (no write was acknowledged before the kill: this trial proves nothing)"
    fi
}

acknowledged=0 lost=0 bad=0 empty=0
for n in $(seq 1 "$TRIALS"); do
    run_trial immediate "$n" "$TRIALS"
    acknowledged=$((acknowledged + TRIAL_ACKED))
    lost=$((lost + TRIAL_LOST))
    bad=$((bad + TRIAL_BAD))
    ((TRIAL_ACKED > 0)) || empty=$((empty + 1))
done

relaxed_acked=0 relaxed_lost=0
for n in $(seq 1 "$RELAXED_TRIALS"); do
    run_trial relaxed "$n" "$RELAXED_TRIALS"
    relaxed_acked=$((relaxed_acked + TRIAL_ACKED))
    relaxed_lost=$((relaxed_lost + TRIAL_LOST))
done
if ((RELAXED_TRIALS > 0)); then
    echo "note: relaxed durability: acknowledged=$relaxed_acked lost=$relaxed_lost trials=$RELAXED_TRIALS" \
        "(informational, never a failure: relaxed may lose up to one --flush-interval of" \
        "acknowledged writes, but only when the OS loses its page cache too; kill -9 does not)"
fi

echo "acknowledged=$acknowledged lost=$lost trials=$TRIALS"
if ((lost > 0 || bad > 0 || acknowledged == 0 || empty == TRIALS)); then
    echo "FAILED: lost=$lost, trials with other problems=$bad" >&2
    exit 1
fi
