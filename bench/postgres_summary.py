#!/usr/bin/env python3
"""Helpers for bench/postgres.sh: tidemark on PostgreSQL vs pgbench running the same
statements.

Subcommands:
  scripts SQL_RS OUTDIR   write pgbench scripts put.sql and get.sql made from the
                          statements in src/store/postgres/sql.rs, and the statements
                          themselves (tidemark-upsert.sql, tidemark-get.sql) as tidemark
                          sends them, for the check against pg_stat_activity
  pgbench-run LOG …       turn one pgbench per-transaction log into a run report of
                          the same shape as `tidemark-bench --json`
  summary --raw --out     medians per case, ratios tidemark / pgbench, results.json,
                          and the tables (markdown) on stdout

The medians, the leaving-out of runs taken under unrelated load and the paired
per-round ratio ranges come from bench/summarize.py, imported.
"""

import argparse
import json
import os
import re
import statistics
import sys
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize  # noqa: E402  (bench/summarize.py)

# The ratios the brief asks for: tidemark's request path on top of the statement.
GOALS = [
    ("tm-pg-http-put", "pgbench-put", 0.8,
     "guarded put: tidemark HTTP PUT / pgbench upsert"),
    ("tm-pg-tyrant-tsput", "pgbench-put", 0.8,
     "guarded put: tidemark Tyrant tsput / pgbench upsert"),
    ("tm-pg-http-get", "pgbench-get", 0.8,
     "get: tidemark HTTP GET / pgbench SELECT"),
    ("tm-pg-tyrant-get", "pgbench-get", 0.8,
     "get: tidemark Tyrant get / pgbench SELECT"),
]
CASE_ORDER = ["tm-pg-http-put", "tm-pg-tyrant-tsput", "pgbench-put",
              "tm-pg-http-get", "tm-pg-tyrant-get", "pgbench-get"]


# --- statements ---------------------------------------------------------------

def rust_string(source, name):
    """The value of `pub const NAME: &str = "…";` (a plain string literal whose only
    escape is a backslash-newline, which Rust drops together with the next line's
    leading whitespace) or `concat!("…", record_columns!(), "…")`."""
    columns = re.search(r'macro_rules! record_columns \{\s*\(\) => \{\s*"([^"]*)"', source)
    m = re.search(r'pub const %s: &str = (concat!\((.*?)\);|"(.*?)";)' % name, source, re.S)
    if not m:
        raise SystemExit(f"{name} not found in sql.rs")
    if m.group(2) is not None:
        parts = []
        for piece in re.findall(r'"([^"]*)"|record_columns!\(\)', m.group(2)):
            parts.append(piece if piece else columns.group(1))
        # re.findall gives "" for the macro alternative; literal pieces are never empty.
        return "".join(parts)
    text = m.group(3)
    if "\\" in re.sub(r"\\\n\s*", "", text):
        raise SystemExit(f"{name}: escapes other than backslash-newline are not handled")
    return re.sub(r"\\\n\s*", "", text)


def cmd_scripts(args):
    source = open(args.sql_rs).read()
    upsert = rust_string(source, "GUARDED_UPSERT")
    get = rust_string(source, "GET")
    # Parameter numbers → pgbench variables. pgbench cannot bind a NULL through a
    # variable (it would send the text "NULL"), so the two parameters a live value
    # without expiry leaves NULL ($6 expires_at, $7 deleted_at) are written as NULL.
    upsert_vars = {1: ":key", 2: ":ts", 3: ":tombstone", 4: ":value", 5: ":content_type",
                   6: "NULL", 7: "NULL", 8: ":now", 9: ":cutoff", 10: ":if_absent"}
    numbers = sorted({int(n) for n in re.findall(r"\$(\d+)", upsert)})
    if numbers != list(range(1, 11)):
        raise SystemExit(f"GUARDED_UPSERT has parameters {numbers}; update bench/postgres_summary.py")
    pg_upsert = re.sub(r"\$(\d+)", lambda m: upsert_vars[int(m.group(1))], upsert)
    if re.findall(r"\$(\d+)", get) != ["1"]:
        raise SystemExit("GET is expected to take exactly $1")
    pg_get = get.replace("$1", ":key")
    os.makedirs(args.outdir, exist_ok=True)
    with open(os.path.join(args.outdir, "tidemark-upsert.sql"), "w") as f:
        f.write(upsert)
    with open(os.path.join(args.outdir, "tidemark-get.sql"), "w") as f:
        f.write(get)
    # Per client: n counts its transactions (pgbench keeps variables across them), so
    # ts = ts0 + n * clients + client_id is fresh, increasing and unique across clients.
    # ts0, now and cutoff are already in the sign-flipped bigint form (sql::to_sql).
    # Keys: kbase + random index, sent as text: 12 decimal digits, the same length as
    # tidemark-bench's bk0000000000 (pgbench has no string functions to build those).
    with open(os.path.join(args.outdir, "put.sql"), "w") as f:
        f.write("\\set n :n + 1\n"
                "\\set key :kbase + random(0, :keys - 1)\n"
                "\\set ts :ts0 + :n * :clients + :client_id\n"
                "\\set now :ts\n"
                "\\set cutoff :now - :grace\n"
                + pg_upsert + ";\n")
    with open(os.path.join(args.outdir, "get.sql"), "w") as f:
        f.write("\\set key :kbase + random(0, :keys - 1)\n" + pg_get + ";\n")
    return 0


# --- pgbench log → run report ---------------------------------------------------

def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return float(sorted_values[i])


def cmd_pgbench_run(args):
    """One pgbench run from its per-transaction log (-l): lines
    `client_id transaction_no time script_no time_epoch time_us`, `time` the latency in
    µs and time_epoch/time_us when the transaction completed (or `failed`/`skipped`
    in place of the latency). The measured window starts WARMUP after the first
    completion and lasts DURATION, like tidemark-bench's."""
    done = []  # (completion time s, latency µs or None for a failure)
    for path in args.log:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 6:
                    continue
                at = int(parts[4]) + int(parts[5]) / 1e6
                latency = None if parts[2] in ("failed", "skipped") else int(parts[2])
                done.append((at, latency))
    done.sort()
    report = {
        "label": args.label, "target": "pgbench", "op": args.op,
        "operation": args.operation, "connections": args.connections, "pipeline": 1,
        "threads": 1, "keys": args.keys, "value_size": args.value_size,
        "warmup_s": args.warmup, "duration_s": args.duration,
        "elapsed_s": 0.0, "ops": 0, "ops_per_sec": 0.0, "ok": 0,
        # pgbench cannot tell an upsert that applied from one the guard refused.
        "stale": 0, "stale_counted": False, "miss": 0, "error": 0,
        "latency_us": {"p50": 0.0, "p90": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0, "mean": 0.0},
        "load_wall_s": args.wall, "client_cpu_s": args.client_cpu,
        "pgbench_exit": args.exit_status,
    }
    if done:
        start = done[0][0] + args.warmup
        end = start + args.duration
        window = [(at, lat) for at, lat in done if start <= at < end]
        latencies = sorted(lat for _, lat in window if lat is not None)
        errors = sum(1 for _, lat in window if lat is None)
        if window:
            elapsed = min(window[-1][0], end) - start
            report["elapsed_s"] = elapsed
            report["ops"] = len(window)
            report["ok"] = len(latencies)
            report["error"] = errors
            report["ops_per_sec"] = len(window) / max(elapsed, 1e-9)
        if latencies:
            report["latency_us"] = {
                "p50": percentile(latencies, 0.50), "p90": percentile(latencies, 0.90),
                "p99": percentile(latencies, 0.99), "p999": percentile(latencies, 0.999),
                "max": float(latencies[-1]), "mean": statistics.fmean(latencies),
            }
    print(json.dumps(report))
    return 0


# --- summary ----------------------------------------------------------------------

def split_cpu(run):
    """tidemark and PostgreSQL CPU per operation (µs) of one run, or None."""
    cpu, wall = run.get("cpu"), run.get("load_wall_s")
    if not cpu or not wall or run["ops_per_sec"] <= 0:
        return None
    ops = run["ops_per_sec"] * wall
    return (cpu.get("tidemark_s", 0.0) / ops * 1e6, cpu.get("postgres_s", 0.0) / ops * 1e6)


def cmd_summary(args):
    runs = summarize.load(args.raw)
    if not runs:
        print("no runs in", args.raw, file=sys.stderr)
        return 1
    cells = summarize.summarise(runs, args.max_foreign)
    conns = sorted({n for _, n in cells})
    cases = [c for c in CASE_ORDER if any((c, n) in cells for n in conns)]
    cases += sorted({c for c, _ in cells} - set(cases))
    for (case, n), cell in cells.items():
        used = [r for r in runs[(case, n)] if r["round"] in set(cell["rounds_used_list"])]
        split = [s for s in (split_cpu(r) for r in used) if s]
        cell["tidemark_cpu_us_per_op_median"] = summarize.median_of(s[0] for s in split)
        cell["postgres_cpu_us_per_op_median"] = summarize.median_of(s[1] for s in split)
        cell["p90_us_median"] = statistics.median(r["latency_us"]["p90"] for r in used)
    ratios = {str(n): summarize.ratio_rows(runs, cells, n, GOALS, True) for n in conns}
    results = {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": args.meta,
        "max_foreign_cores": args.max_foreign,
        "nproc": os.cpu_count(),
        "cells": list(cells.values()),
        "ratios_by_connections": ratios,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")

    print(f"\n## tidemark on PostgreSQL vs pgbench\n\n{args.meta}\n")
    print(f"Medians of the rounds; runs during which unrelated processes used more than "
          f"{args.max_foreign} cores are left out where quieter runs of the same cell exist "
          "([used/total]; * = only contended runs). Latencies in µs, client side. CPU: "
          "µs per operation of the tidemark server and of all PostgreSQL processes; "
          "other load: cores used by unrelated processes during the run, median (max).\n")
    for n in conns:
        print(f"### {n} connections\n")
        print("| case | ops/s (min–max) | p50 | p90 | p99 | p99.9 | tidemark µs CPU/op | "
              "PostgreSQL µs CPU/op | client µs CPU/op | other load | errors | stale |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in cases:
            cell = cells.get((c, n))
            if not cell:
                continue

            def f(v, fmt="{:.1f}"):
                return "" if v is None else fmt.format(v)
            rounds = ("" if cell["rounds_used"] == cell["rounds"]
                      else f" [{cell['rounds_used']}/{cell['rounds']}]")
            stale = "n/a" if c.startswith("pgbench") else f"{cell['stale']:,}"
            print(f"| {c} | {cell['ops_per_sec_median']:,.0f} ({cell['ops_per_sec_min']:,.0f}–"
                  f"{cell['ops_per_sec_max']:,.0f}){'*' if cell['contended'] else ''}{rounds} | "
                  f"{cell['p50_us_median']:,.0f} | {cell['p90_us_median']:,.0f} | "
                  f"{cell['p99_us_median']:,.0f} | {cell['p999_us_median']:,.0f} | "
                  f"{f(cell['tidemark_cpu_us_per_op_median']) if c.startswith('tm-') else '–'} | "
                  f"{f(cell['postgres_cpu_us_per_op_median'])} | "
                  f"{f(cell['client_cpu_us_per_op_median'])} | "
                  f"{f(cell['foreign_cores_median'], '{:.2f}')} "
                  f"({f(cell['foreign_cores_max'], '{:.2f}')}) | {cell['errors']:,} | {stale} |")
        print(f"\nRatios at {n} connections (ratio of the medians; per-round range of the "
              "ratio taken round by round)\n")
        print("| ratio | value | per-round range | goal | met |")
        print("|---|---:|---:|---:|:-:|")
        for g in ratios[str(n)]:
            rng = ("" if g["paired_ratio_min"] is None
                   else f"{g['paired_ratio_min']:.2f}–{g['paired_ratio_max']:.2f}")
            print(f"| {g['what']} | {g['ratio_of_medians']:.2f} | {rng} | ≥ {g['goal']:.2f} | "
                  f"{'yes' if g['met'] else 'no'} |")
        print()
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scripts")
    s.add_argument("sql_rs")
    s.add_argument("outdir")
    r = sub.add_parser("pgbench-run")
    r.add_argument("log", nargs="+")
    r.add_argument("--label", required=True)
    r.add_argument("--op", required=True)
    r.add_argument("--operation", default="")
    r.add_argument("--connections", type=int, required=True)
    r.add_argument("--keys", type=int, required=True)
    r.add_argument("--value-size", type=int, required=True)
    r.add_argument("--warmup", type=float, required=True)
    r.add_argument("--duration", type=float, required=True)
    r.add_argument("--wall", type=float, required=True)
    r.add_argument("--client-cpu", type=float, default=None)
    r.add_argument("--exit-status", type=int, default=0)
    m = sub.add_parser("summary")
    m.add_argument("--raw", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--meta", default="")
    m.add_argument("--max-foreign", type=float, default=0.25)
    args = ap.parse_args()
    return {"scripts": cmd_scripts, "pgbench-run": cmd_pgbench_run,
            "summary": cmd_summary}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
