#!/usr/bin/env bash
# Watch a drain through HAProxy, on loopback, without Docker: deploy/haproxy.cfg (its
# addresses rewritten to free loopback ports) in front of a local tidemark with the
# compose file's drain settings. A client load runs through HAProxy while tidemark gets
# SIGTERM, as `docker stop` would send it.
#
# Expected, and checked: HAProxy marks tidemark DOWN before the drain delay ends; every
# request gets a prompt HTTP answer (2xx from tidemark, or an immediate 503 from HAProxy
# once it has marked tidemark down), never a connection error, a 502, or a stall while
# HAProxy retries a closed listener; tidemark exits 0.
#
# Needs haproxy (apt-get install haproxy) and python3. DRAIN_DELAY=0 shows what goes
# wrong without a drain delay (the script then reports the failure); TIDEMARK_BIN=path
# uses that binary instead of building one; KEEP=1 keeps the logs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE="$REPO/deploy/docker-compose.yml"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
need_haproxy
DRAIN_DELAY=${DRAIN_DELAY:-$(compose_setting "$COMPOSE" TIDEMARK_DRAIN_DELAY)}
SHUTDOWN_TIMEOUT=$(compose_setting "$COMPOSE" TIDEMARK_SHUTDOWN_TIMEOUT)
tidemark_binary "$REPO"

work_dir tidemark-drain

read -r T_HTTP T_TYRANT H_HTTP H_TYRANT H_STATS < <(free_ports 5)

sed -e "s/ tidemark:8080 / 127.0.0.1:$T_HTTP /" \
    -e "s/ tidemark:1978 / 127.0.0.1:$T_TYRANT /" \
    -e "s/ check port 8080 / check port $T_HTTP /" \
    -e "s/ resolvers docker init-addr last,libc,none//" \
    -e "s/^\( *bind \):8080$/\1127.0.0.1:$H_HTTP/" \
    -e "s/^\( *bind \):1978$/\1127.0.0.1:$H_TYRANT/" \
    -e "s/^\( *bind \):8404$/\1127.0.0.1:$H_STATS/" \
    "$REPO/deploy/haproxy.cfg" >"$WORK/haproxy.cfg"
if ! grep -q "127.0.0.1:$H_HTTP" "$WORK/haproxy.cfg" || ! grep -q "127.0.0.1:$T_HTTP" "$WORK/haproxy.cfg"; then
    echo "could not rewrite deploy/haproxy.cfg to loopback ports" >&2
    exit 1
fi
haproxy -c -q -f "$WORK/haproxy.cfg"

mkdir -p "$WORK/data"
env -i PATH="$PATH" TIDEMARK_LOG_FORMAT=json TIDEMARK_DRAIN_DELAY="$DRAIN_DELAY" \
    TIDEMARK_SHUTDOWN_TIMEOUT="$SHUTDOWN_TIMEOUT" \
    "$BIN" serve --http-addr "127.0.0.1:$T_HTTP" --tyrant-addr "127.0.0.1:$T_TYRANT" \
    --data-dir "$WORK/data" >"$WORK/tidemark.log" 2>&1 &
TIDEMARK=$!
PIDS+=("$TIDEMARK")
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=("$!")
echo "tidemark on 127.0.0.1:$T_HTTP (drain delay $DRAIN_DELAY, shutdown timeout $SHUTDOWN_TIMEOUT);" \
    "HAProxy on 127.0.0.1:$H_HTTP, stats on 127.0.0.1:$H_STATS"

cat >"$WORK/load.py" <<'PY'
import csv, http.client, io, json, os, sys, threading, time

proxy, stats_port, stop_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
events, transitions = [], []
lock = threading.Lock()
begin = time.monotonic()
begin_wall = time.time()

def clock():
    return round(time.monotonic() - begin, 3)

def server_status():
    try:
        conn = http.client.HTTPConnection("127.0.0.1", stats_port, timeout=1)
        conn.request("GET", "/;csv")
        rows = csv.DictReader(io.StringIO(conn.getresponse().read().decode().lstrip("# ")))
        for row in rows:
            if row["pxname"] == "tidemark_http" and row["svname"] == "tidemark":
                return row["status"]
    except OSError:
        return "stats unreachable"
    return "unknown"

def watch_stats():
    last = None
    while not os.path.exists(stop_file):
        status = server_status()
        if status != last:
            transitions.append((clock(), status))
            last = status
        time.sleep(0.05)

def writer(index):
    conn, n = None, 0
    while not os.path.exists(stop_file):
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", proxy, timeout=10)
        key = f"drain-{index}-{n}"
        n += 1
        started = clock()
        try:
            conn.request("PUT", f"/keys/{key}", body=b"v",
                         headers={"X-Write-Timestamp": str(time.time_ns() // 1000)})
            response = conn.getresponse()
            response.read()
            kind = response.getheader("Content-Type", "")
            outcome = str(response.status)
            if response.status == 503:
                outcome += " problem+json (tidemark)" if "problem" in kind else " (HAProxy)"
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            outcome = f"connection error: {type(e).__name__}"
            conn = None
        with lock:
            events.append((started, outcome, round(clock() - started, 3)))
        time.sleep(0.01)

threads = [threading.Thread(target=watch_stats)] + [
    threading.Thread(target=writer, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"begin": begin_wall, "events": events, "transitions": transitions}))
PY

# Wait until HAProxy has brought tidemark up (rise 2 at inter 1s).
for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$H_HTTP/readyz" || true)
    [[ $code == 200 ]] && break
    sleep 0.1
done
[[ $code == 200 ]] || {
    echo "HAProxy never routed to tidemark" >&2
    cat "$WORK/haproxy.log" >&2
    exit 1
}

python3 "$WORK/load.py" "$H_HTTP" "$H_STATS" "$WORK/stop" >"$WORK/load.json" &
LOAD=$!
sleep 2
sigterm_at=$(date +%s.%N)
kill -TERM "$TIDEMARK"
(sleep 90 && kill -KILL "$TIDEMARK" 2>/dev/null) &
WATCHDOG=$!
status=0
wait "$TIDEMARK" || status=$?
exit_at=$(date +%s.%N)
kill "$WATCHDOG" 2>/dev/null || true
sleep 2 # let HAProxy answer a little longer with tidemark gone
touch "$WORK/stop"
wait "$LOAD"

python3 - "$WORK/load.json" "$sigterm_at" "$exit_at" "$status" "$DRAIN_DELAY" <<'PY'
import json, sys, time
from collections import Counter

data = json.load(open(sys.argv[1]))
sigterm_at, exit_at, status, drain = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
def rel(t):
    """Seconds after SIGTERM of a load event (the load's clock starts at data["begin"])."""
    return data["begin"] + t - sigterm_at

print(f"SIGTERM at +0.00 s (drain delay {drain}); tidemark exited with status {status} "
      f"at +{exit_at - sigterm_at:.2f} s")
down_at = None
for t, state in data["transitions"]:
    print(f"  HAProxy sees tidemark {state} at {rel(t):+.2f} s")
    if state.startswith("DOWN") and rel(t) >= 0 and down_at is None:
        down_at = rel(t)
before = Counter(o for t, o, _ in data["events"] if rel(t) < 0)
after = Counter(o for t, o, _ in data["events"] if rel(t) >= 0)
slowest = max((latency for t, _, latency in data["events"] if rel(t) >= -0.5), default=0)
print(f"  requests before SIGTERM: {dict(before)}")
print(f"  requests after SIGTERM:  {dict(after)}")
print(f"  slowest answer from 0.5 s before SIGTERM on: {slowest * 1000:.0f} ms")
errors = sum(n for o, n in (before + after).items() if o.startswith("connection error"))
tidemark_503 = sum(n for o, n in (before + after).items() if "tidemark" in o)
unexpected = sum(n for o, n in (before + after).items()
                 if not (o.startswith("2") or o == "503 (HAProxy)"))
ok = True
if down_at is None:
    print("FAIL: HAProxy never marked tidemark down")
    ok = False
else:
    print(f"  HAProxy marked tidemark down {down_at:.2f} s after SIGTERM")
if errors:
    print(f"FAIL: {errors} requests ended in a connection error")
    ok = False
if unexpected:
    print(f"FAIL: {unexpected} requests got neither a 2xx nor HAProxy's 503 "
          f"({tidemark_503} were tidemark's own 503)")
    ok = False
if slowest > 1.0:
    print(f"FAIL: a request took {slowest:.1f} s: HAProxy was still sending requests to a "
          "closed listener and retrying (the drain delay is shorter than its detection time)")
    ok = False
if status != 0:
    print(f"FAIL: tidemark exited with status {status}")
    ok = False
print("drain: PASS" if ok else "drain: FAIL")
sys.exit(0 if ok else 1)
PY
