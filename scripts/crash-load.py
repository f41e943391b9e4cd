#!/usr/bin/env python3
"""Write load and verification for scripts/crash-test.sh (Python 3 standard library only).

  crash-load.py load   --addr HOST:PORT --prefix P --out DIR [--writers N]
                       [--kill-pid PID --kill-after SECONDS] [--max-seconds S]
  crash-load.py verify --addr HOST:PORT --out DIR [--readers N]

`load` runs N writers, each on its own keep-alive connection, each PUTting keys no other
writer uses (P-w<writer>-<n>) with values no other write uses. A key is recorded as
acknowledged only after its 2xx response has been read in full. With --kill-pid, a
timer sends SIGKILL to that process --kill-after seconds after the first request goes
out; writers stop at their first connection error. Writes cut off by the kill are
recorded as in flight: the server may or may not have committed them.

`verify` reads every acknowledged key back: each must be present with its value and its
write timestamp. In-flight writes may be present or absent, but if present they must
be intact. Both commands print one JSON line of counts.
"""

import argparse
import http.client
import json
import os
import signal
import sys
import threading
import time

ACKED = "acked.tsv"
IN_FLIGHT = "inflight.tsv"


def parse_addr(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def now_micros():
    return time.time_ns() // 1000


def load(args):
    host, port = parse_addr(args.addr)
    start = threading.Event()
    stop = threading.Event()
    lock = threading.Lock()
    acked, in_flight, statuses = [], [], {}
    killed_at = []

    def writer(index):
        conn = http.client.HTTPConnection(host, port, timeout=5)
        start.wait()
        n = 0
        while not stop.is_set():
            key = f"{args.prefix}-w{index}-{n}"
            value = f"{key}:{os.urandom(6).hex()}".encode()
            stamp = now_micros()
            try:
                conn.request(
                    "PUT",
                    f"/keys/{key}",
                    body=value,
                    headers={"X-Write-Timestamp": str(stamp), "Content-Type": "text/plain"},
                )
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                with lock:
                    in_flight.append((key, stamp, value))
                return
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if 200 <= response.status < 300:
                    acked.append((key, stamp, value))
            n += 1

    def killer():
        start.wait()
        time.sleep(args.kill_after)
        try:
            os.kill(args.kill_pid, signal.SIGKILL)
        except ProcessLookupError:
            return  # it died by itself: the caller sees no kill and says so
        killed_at.append(time.monotonic())

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(args.writers)]
    for t in threads:
        t.start()
    if args.kill_pid:
        kill_thread = threading.Thread(target=killer)
        kill_thread.start()
    began = time.monotonic()
    start.set()
    deadline = began + args.max_seconds
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    stop.set()
    for t in threads:
        t.join()
    if args.kill_pid:
        kill_thread.join()
    elapsed = (killed_at[0] if killed_at else time.monotonic()) - began

    os.makedirs(args.out, exist_ok=True)
    for name, rows in ((ACKED, acked), (IN_FLIGHT, in_flight)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8") as f:
            for key, stamp, value in rows:
                f.write(f"{key}\t{stamp}\t{value.decode()}\n")
    print(
        json.dumps(
            {
                "acknowledged": len(acked),
                "in_flight": len(in_flight),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "killed": bool(killed_at),
                "seconds": round(elapsed, 3),
                "writes_per_second": round(len(acked) / elapsed) if elapsed > 0 else 0,
            }
        )
    )


def read_rows(path):
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, stamp, value = line.rstrip("\n").split("\t", 2)
            rows.append((key, int(stamp), value.encode()))
    return rows


def verify(args):
    host, port = parse_addr(args.addr)
    acked = read_rows(os.path.join(args.out, ACKED))
    in_flight = read_rows(os.path.join(args.out, IN_FLIGHT))
    results = {"ok": 0, "lost": 0, "wrong": 0, "in_flight_present": 0, "in_flight_absent": 0,
               "in_flight_wrong": 0, "errors": 0}
    problems = []
    lock = threading.Lock()
    jobs = [(row, True) for row in acked] + [(row, False) for row in in_flight]

    def reader(part):
        conn = http.client.HTTPConnection(host, port, timeout=10)
        for (key, stamp, value), was_acked in part:
            try:
                conn.request("GET", f"/keys/{key}")
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    results["errors"] += 1
                    problems.append(f"{key}: {e}")
                conn = http.client.HTTPConnection(host, port, timeout=10)
                continue
            stored_stamp = response.getheader("X-Write-Timestamp")
            intact = response.status == 200 and body == value and stored_stamp == str(stamp)
            with lock:
                if was_acked:
                    if intact:
                        results["ok"] += 1
                    elif response.status == 404:
                        results["lost"] += 1
                        problems.append(f"{key}: acknowledged but absent")
                    else:
                        results["wrong"] += 1
                        problems.append(f"{key}: status {response.status}, timestamp {stored_stamp}")
                elif intact:
                    results["in_flight_present"] += 1
                elif response.status == 404:
                    results["in_flight_absent"] += 1
                else:
                    results["in_flight_wrong"] += 1
                    problems.append(f"{key} (in flight): status {response.status}")

    parts = [jobs[i :: args.readers] for i in range(args.readers)]
    threads = [threading.Thread(target=reader, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results["acknowledged"] = len(acked)
    results["problems"] = problems[:10]
    print(json.dumps(results))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("load")
    p.add_argument("--addr", required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--kill-pid", type=int, default=0)
    p.add_argument("--kill-after", type=float, default=0.5)
    p.add_argument("--max-seconds", type=float, default=10.0)
    p = sub.add_parser("verify")
    p.add_argument("--addr", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--readers", type=int, default=8)
    args = parser.parse_args()
    {"load": load, "verify": verify}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
