#!/usr/bin/env bash
# A rolling restart through deploy/haproxy-replicas.cfg, on loopback, without Docker:
# the config (addresses rewritten to free loopback ports) in front of two local
# tidemark processes with the replicas compose file's drain settings. A write load runs
# through HAProxy while replica 1 gets SIGTERM (as `docker stop` would send it), is
# started again, comes back into rotation, and then the same happens to replica 2.
# Finally both are stopped, and HAProxy's own answer is checked.
#
# Expected, and checked: during the rolling restart every request is answered 2xx by a
# replica, with no 503, no connection error and no stall; with no replica ready,
# HAProxy answers 503 at once with problem+json and Retry-After.
#
# This checks the routing, not the storage: without DATABASE_URL each replica keeps
# its own embedded store in a temporary directory, which is enough because the load
# writes distinct keys and never reads them back. DATABASE_URL=postgres://... (and
# PGPASSWORD) runs both replicas on that database instead.
#
# Needs haproxy (apt-get install haproxy), python3 and curl. TIDEMARK_BIN=path uses that
# binary instead of building one; KEEP=1 keeps the logs.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE="$REPO/deploy/docker-compose.replicas.yml"
# shellcheck source=scripts/lib.sh
source "$REPO/scripts/lib.sh"
need_haproxy
DRAIN_DELAY=$(compose_setting "$COMPOSE" TIDEMARK_DRAIN_DELAY)
SHUTDOWN_TIMEOUT=$(compose_setting "$COMPOSE" TIDEMARK_SHUTDOWN_TIMEOUT)
tidemark_binary "$REPO"

work_dir tidemark-replicas

read -r HTTP1 TYRANT1 HTTP2 TYRANT2 H_HTTP H_TYRANT H_STATS < <(free_ports 7)

sed -e "/server tidemark-1 /s/ check port 8080 / check port $HTTP1 /" \
    -e "/server tidemark-2 /s/ check port 8080 / check port $HTTP2 /" \
    -e "s/ tidemark-1:8080 / 127.0.0.1:$HTTP1 /" \
    -e "s/ tidemark-1:1978 / 127.0.0.1:$TYRANT1 /" \
    -e "s/ tidemark-2:8080 / 127.0.0.1:$HTTP2 /" \
    -e "s/ tidemark-2:1978 / 127.0.0.1:$TYRANT2 /" \
    -e "s/ resolvers docker init-addr last,libc,none//" \
    -e "s/^\( *bind \):8080$/\1127.0.0.1:$H_HTTP/" \
    -e "s/^\( *bind \):1978$/\1127.0.0.1:$H_TYRANT/" \
    -e "s/^\( *bind \):8404$/\1127.0.0.1:$H_STATS/" \
    "$REPO/deploy/haproxy-replicas.cfg" >"$WORK/haproxy.cfg"
if grep -qE 'tidemark-[12]:|check port 8080 ' "$WORK/haproxy.cfg"; then
    echo "could not rewrite deploy/haproxy-replicas.cfg to loopback ports" >&2
    exit 1
fi
haproxy -c -q -f "$WORK/haproxy.cfg"

declare -A REPLICA_PID
start_replica() { # start_replica N HTTP_PORT TYRANT_PORT
    local n=$1 store=()
    if [[ -n ${DATABASE_URL:-} ]]; then
        store=(--database-url "$DATABASE_URL")
    else
        mkdir -p "$WORK/data$n"
        store=(--data-dir "$WORK/data$n")
    fi
    env -i PATH="$PATH" ${PGPASSWORD:+PGPASSWORD="$PGPASSWORD"} TIDEMARK_LOG_FORMAT=json \
        TIDEMARK_DRAIN_DELAY="$DRAIN_DELAY" TIDEMARK_SHUTDOWN_TIMEOUT="$SHUTDOWN_TIMEOUT" \
        "$BIN" serve --http-addr "127.0.0.1:$2" --tyrant-addr "127.0.0.1:$3" "${store[@]}" \
        >>"$WORK/tidemark-$n.log" 2>&1 &
    REPLICA_PID[$n]=$!
    PIDS+=("$!")
}

# status NAME: the HAProxy status of server NAME in the HTTP backend (UP, DOWN, ...).
status() {
    curl -s "http://127.0.0.1:$H_STATS/;csv" |
        awk -F, -v s="$1" '$1 == "tidemark_http" && $2 == s { print $18 }'
}
wait_status() { # wait_status NAME STATUS: up to 15 s
    for _ in $(seq 1 150); do
        [[ $(status "$1") == "$2" ]] && return 0
        sleep 0.1
    done
    echo "$1 never became $2 in HAProxy (now: $(status "$1"))" >&2
    return 1
}
elapsed() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$1"; }

start_replica 1 "$HTTP1" "$TYRANT1"
start_replica 2 "$HTTP2" "$TYRANT2"
haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
PIDS+=("$!")
echo "replicas on 127.0.0.1:$HTTP1 and 127.0.0.1:$HTTP2 (drain delay $DRAIN_DELAY," \
    "shutdown timeout $SHUTDOWN_TIMEOUT); HAProxy on 127.0.0.1:$H_HTTP, stats on 127.0.0.1:$H_STATS"
wait_status tidemark-1 UP
wait_status tidemark-2 UP

cat >"$WORK/load.py" <<'PY'
import http.client, json, os, sys, threading, time
from collections import Counter

proxy, stop_file = int(sys.argv[1]), sys.argv[2]
outcomes, slowest, lock = Counter(), [0.0], threading.Lock()

def writer(index):
    conn, n = None, 0
    while not os.path.exists(stop_file):
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", proxy, timeout=10)
        started = time.monotonic()
        try:
            conn.request("PUT", f"/keys/rolling-{index}-{n}", body=b"v",
                         headers={"X-Write-Timestamp": str(time.time_ns() // 1000)})
            response = conn.getresponse()
            response.read()
            outcome = str(response.status)
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            outcome = f"connection error: {type(e).__name__}"
            conn = None
        n += 1
        with lock:
            outcomes[outcome] += 1
            slowest[0] = max(slowest[0], time.monotonic() - started)
        time.sleep(0.01)

threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"outcomes": outcomes, "slowest": slowest[0]}))
PY
python3 "$WORK/load.py" "$H_HTTP" "$WORK/stop" >"$WORK/load.json" &
LOAD=$!
sleep 2

ok=true
for n in 1 2; do
    port_var="HTTP$n" tyrant_var="TYRANT$n"
    sigterm_at=$(date +%s.%N)
    kill -TERM "${REPLICA_PID[$n]}"
    wait_status "tidemark-$n" DOWN || ok=false
    echo "  tidemark-$n: SIGTERM; HAProxy marks it DOWN after $(elapsed "$sigterm_at") s"
    code=0
    wait "${REPLICA_PID[$n]}" || code=$?
    echo "  tidemark-$n: exited with status $code after $(elapsed "$sigterm_at") s"
    [[ $code == 0 ]] || ok=false
    start_replica "$n" "${!port_var}" "${!tyrant_var}"
    wait_status "tidemark-$n" UP || ok=false
    echo "  tidemark-$n: started again; UP in HAProxy after $(elapsed "$sigterm_at") s"
done
sleep 1
touch "$WORK/stop"
wait "$LOAD"

# Both replicas away: HAProxy answers by itself, at once.
kill -TERM "${REPLICA_PID[1]}" "${REPLICA_PID[2]}"
wait_status tidemark-1 DOWN && wait_status tidemark-2 DOWN || ok=false
curl -s -D "$WORK/503.headers" -o "$WORK/503.body" -w '%{http_code} %{time_total}\n' \
    -X PUT -H "X-Write-Timestamp: $(date +%s%6N)" --data v \
    "http://127.0.0.1:$H_HTTP/keys/none" >"$WORK/503.status"

python3 - "$WORK" <<'PY' || ok=false
import json, sys
work = sys.argv[1]
load = json.load(open(f"{work}/load.json"))
outcomes, slowest = load["outcomes"], load["slowest"]
print(f"  requests during the rolling restart: {outcomes}")
print(f"  slowest answer: {slowest * 1000:.0f} ms")
ok = True
bad = {o: n for o, n in outcomes.items() if not o.startswith("2")}
if bad:
    print(f"FAIL: {sum(bad.values())} requests were not answered 2xx by a replica: {bad}")
    ok = False
if slowest > 1.0:
    print(f"FAIL: a request took {slowest:.1f} s")
    ok = False
status, seconds = open(f"{work}/503.status").read().split()
headers = open(f"{work}/503.headers").read().lower()
body = open(f"{work}/503.body").read()
print(f"  with no replica ready: HTTP {status} in {float(seconds) * 1000:.0f} ms: {body}")
try:
    problem = json.loads(body)
except ValueError:
    problem = {}
if status != "503" or problem.get("status") != 503 \
        or "content-type: application/problem+json" not in headers \
        or "retry-after: 1" not in headers:
    print("FAIL: want HAProxy's 503 as problem+json with Retry-After")
    ok = False
sys.exit(0 if ok else 1)
PY
if $ok; then echo "rolling restart: PASS"; else echo "rolling restart: FAIL"; exit 1; fi
