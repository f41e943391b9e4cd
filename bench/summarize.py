#!/usr/bin/env python3
"""Summarise bench/compare.sh runs: medians per case and connection count, the
issue's goal ratios at the headline connection count, a JSON file and an SVG chart.

Input: raw.jsonl, one line per run: {"case": NAME, "round": N, "run": <tidemark-bench --json>}.
Output (in --out): results.json, throughput.svg; a text summary on stdout.

The SVG is written by hand (no matplotlib), so it regenerates anywhere python3 runs.
"""

import argparse
import json
import os
import statistics
import sys
from collections import defaultdict
from datetime import datetime, timezone
from html import escape

# The goals: (numerator case, denominator case, minimum ratio, description).
GOALS = [
    ("tm-relaxed/tyrant-guarded-put", "redis-mem/set", 1.0,
     "guarded put (Tyrant tsput, relaxed) vs Redis SET, no persistence"),
    ("tm-immediate/tyrant-guarded-put", "redis-aof/set", 1.5,
     "guarded put (Tyrant tsput, immediate) vs Redis SET, appendfsync always"),
    ("tm-relaxed/tyrant-get", "redis-mem/get", 1.0,
     "Tyrant get vs Redis GET"),
    ("tm-relaxed/http-get", "tm-relaxed/tyrant-get", 1 / 1.5,
     "HTTP GET vs Tyrant get (within 1.5x)"),
    ("tm-relaxed/http-put", "tm-relaxed/tyrant-guarded-put", 1 / 1.5,
     "HTTP guarded PUT vs Tyrant tsput, relaxed (within 1.5x)"),
    ("tm-immediate/http-put", "tm-immediate/tyrant-guarded-put", 1 / 1.5,
     "HTTP guarded PUT vs Tyrant tsput, immediate (within 1.5x)"),
    ("tm-relaxed/tyrant-guarded-put", "tm-relaxed/tyrant-put", 0.95,
     "guarded / plain put on tidemark, relaxed"),
    ("tm-immediate/tyrant-guarded-put", "tm-immediate/tyrant-put", 0.95,
     "guarded / plain put on tidemark, immediate"),
]

# Context, not goals: the guard's cost on Redis, and guard against guard.
CONTEXT = [
    ("redis-mem/guarded-set", "redis-mem/set", "Redis Lua guard / plain SET, no persistence"),
    ("redis-aof/guarded-set", "redis-aof/set", "Redis Lua guard / plain SET, appendfsync always"),
    ("tm-relaxed/tyrant-guarded-put", "redis-mem/guarded-set",
     "tidemark guarded put (relaxed) vs Redis Lua guard, no persistence"),
    ("tm-immediate/tyrant-guarded-put", "redis-aof/guarded-set",
     "tidemark guarded put (immediate) vs Redis Lua guard, appendfsync always"),
]

P99_GOAL_US = 1000.0

# Chart styling per case: (panel, colour, dashed).
STYLE = {
    "redis-mem/set": ("writes", "#d62728", False),
    "redis-mem/guarded-set": ("writes", "#ff9896", False),
    "redis-aof/set": ("writes", "#8c564b", True),
    "redis-aof/guarded-set": ("writes", "#c49c94", True),
    "tm-relaxed/tyrant-put": ("writes", "#9ecae1", False),
    "tm-relaxed/tyrant-guarded-put": ("writes", "#1f77b4", False),
    "tm-relaxed/http-put": ("writes", "#17becf", False),
    "tm-immediate/tyrant-put": ("writes", "#98df8a", True),
    "tm-immediate/tyrant-guarded-put": ("writes", "#2ca02c", True),
    "tm-immediate/http-put": ("writes", "#bcbd22", True),
    "redis-mem/get": ("reads", "#d62728", False),
    "tm-relaxed/tyrant-get": ("reads", "#1f77b4", False),
    "tm-relaxed/http-get": ("reads", "#17becf", False),
}


def load(path):
    runs = defaultdict(list)  # (case, connections) -> [run]
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            row = json.loads(line)
            run = row["run"]
            run["round"] = row["round"]
            run["cpu"] = row.get("cpu")
            runs[(row["case"], run["connections"])].append(run)
    return runs


def cpu_figures(run):
    """Server and client CPU per operation (µs) and the load from unrelated processes
    (cores) during one run, or None when the run has no CPU accounting."""
    cpu, wall = run.get("cpu"), run.get("load_wall_s")
    if not cpu or not wall or run.get("client_cpu_s") is None:
        return None
    # The warm-up runs at the measured rate, so ops over the whole load phase are
    # estimated from the measured rate.
    load_ops = run["ops_per_sec"] * wall
    if load_ops <= 0:
        return None
    foreign = cpu["machine_busy_s"] - cpu["all_servers_s"] - run["client_cpu_s"]
    return {
        "server_us_per_op": cpu["server_s"] / load_ops * 1e6,
        "client_us_per_op": run["client_cpu_s"] / load_ops * 1e6,
        "server_cores": cpu["server_s"] / wall,
        "foreign_cores": max(foreign, 0.0) / wall,
    }


def median_of(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def quiet_runs(rs, max_foreign):
    """The runs taken while unrelated processes used at most `max_foreign` cores, when
    there are any; otherwise all of them (the cell is then marked contended). Runs
    without CPU accounting count as quiet: nothing is known against them."""
    quiet = []
    for r in rs:
        f = cpu_figures(r)
        if f is None or f["foreign_cores"] <= max_foreign:
            quiet.append(r)
    return (quiet, False) if quiet else (rs, True)


def summarise(runs, max_foreign):
    cells = {}
    for (case, conns), all_rs in sorted(runs.items()):
        rs, contended = quiet_runs(all_rs, max_foreign)
        ops = [r["ops_per_sec"] for r in rs]
        figures = [cpu_figures(r) for r in rs]
        figures = [f for f in figures if f]
        cells[(case, conns)] = {
            "case": case,
            "connections": conns,
            "rounds": len(all_rs),
            "rounds_used": len(rs),
            "contended": contended,
            "rounds_used_list": sorted(r["round"] for r in rs),
            "ops_per_sec_median": statistics.median(ops),
            "ops_per_sec_min": min(ops),
            "ops_per_sec_max": max(ops),
            "p50_us_median": statistics.median(r["latency_us"]["p50"] for r in rs),
            "p99_us_median": statistics.median(r["latency_us"]["p99"] for r in rs),
            "p999_us_median": statistics.median(r["latency_us"]["p999"] for r in rs),
            "errors": sum(r["error"] for r in rs),
            "stale": sum(r["stale"] for r in rs),
            "miss": sum(r["miss"] for r in rs),
            "ops_total": sum(r["ops"] for r in rs),
            "server_cpu_us_per_op_median": median_of(f["server_us_per_op"] for f in figures),
            "client_cpu_us_per_op_median": median_of(f["client_us_per_op"] for f in figures),
            "server_cores_median": median_of(f["server_cores"] for f in figures),
            "foreign_cores_median": median_of(f["foreign_cores"] for f in figures),
            "foreign_cores_max": max((f["foreign_cores"] for f in figures), default=None),
        }
    return cells


def paired_ratios(cells, runs, num, den, conns):
    """Ratio per round, numerator and denominator measured in the same round, over
    the rounds both cells' medians use."""
    use_a = set(cells[(num, conns)]["rounds_used_list"])
    use_b = set(cells[(den, conns)]["rounds_used_list"])
    a = {r["round"]: r["ops_per_sec"] for r in runs.get((num, conns), []) if r["round"] in use_a}
    b = {r["round"]: r["ops_per_sec"] for r in runs.get((den, conns), []) if r["round"] in use_b}
    return [a[k] / b[k] for k in sorted(a) if k in b and b[k] > 0]


def ratio_rows(runs, cells, conns, table, with_goal):
    rows = []
    for entry in table:
        if with_goal:
            num, den, goal, text = entry
        else:
            (num, den, text), goal = entry, None
        n, d = cells.get((num, conns)), cells.get((den, conns))
        if not n or not d or d["ops_per_sec_median"] == 0:
            continue
        ratio = n["ops_per_sec_median"] / d["ops_per_sec_median"]
        paired = paired_ratios(cells, runs, num, den, conns)
        row = {
            "what": text,
            "numerator": num,
            "denominator": den,
            "connections": conns,
            "ratio_of_medians": ratio,
            "paired_ratio_min": min(paired) if paired else None,
            "paired_ratio_max": max(paired) if paired else None,
        }
        if with_goal:
            row["goal"] = goal
            row["met"] = ratio >= goal
        rows.append(row)
    return rows


def nice_ceiling(x):
    if x <= 0:
        return 1
    magnitude = 10 ** (len(str(int(x))) - 1)
    for step in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= x:
            return step * magnitude
    return 10 * magnitude


def svg_chart(cells, connections, meta_line):
    """Two panels (writes, reads): median ops/s vs connections, one line per case."""
    panel_w, panel_h = 520, 360
    margin_l, margin_r, margin_t, margin_b = 70, 20, 66, 50
    legend_h = 16
    panels = ["writes", "reads"]
    cases_by_panel = {p: [c for c, s in STYLE.items() if s[0] == p and any((c, n) in cells for n in connections)]
                      for p in panels}
    legend_rows = max(len(v) for v in cases_by_panel.values()) if cases_by_panel else 0
    width = len(panels) * (panel_w + margin_l + margin_r)
    height = margin_t + panel_h + margin_b + legend_rows * legend_h + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15" font-weight="bold">'
        'Throughput vs connections (median ops/s, closed loop, pipeline 1)</text>',
        f'<text x="{width / 2}" y="37" text-anchor="middle" fill="#555">{escape(meta_line)}</text>',
    ]
    for pi, panel in enumerate(panels):
        x0 = pi * (panel_w + margin_l + margin_r) + margin_l
        y0 = margin_t
        cases = cases_by_panel[panel]
        top = max([cells[(c, n)]["ops_per_sec_median"] for c in cases for n in connections
                   if (c, n) in cells] or [1])
        ymax = nice_ceiling(top * 1.05)

        def px(i):
            return x0 + (i + 0.5) * panel_w / len(connections)

        def py(v):
            return y0 + panel_h - v / ymax * panel_h

        out.append(f'<text x="{x0 + panel_w / 2}" y="{y0 - 6}" text-anchor="middle" '
                   f'font-weight="bold">{panel}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{panel_h}" '
                   'fill="none" stroke="#999"/>')
        for k in range(6):
            v = ymax * k / 5
            y = py(v)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + panel_w}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v / 1000:g}k</text>')
        for i, n in enumerate(connections):
            out.append(f'<text x="{px(i):.1f}" y="{y0 + panel_h + 18}" text-anchor="middle">{n}</text>')
        out.append(f'<text x="{x0 + panel_w / 2}" y="{y0 + panel_h + 36}" text-anchor="middle">'
                   'connections</text>')
        out.append(f'<text transform="translate({x0 - 50},{y0 + panel_h / 2}) rotate(-90)" '
                   'text-anchor="middle">ops/s</text>')
        for li, case in enumerate(cases):
            _, colour, dashed = STYLE[case]
            dash = ' stroke-dasharray="6,4"' if dashed else ""
            pts = [(px(i), py(cells[(case, n)]["ops_per_sec_median"]))
                   for i, n in enumerate(connections) if (case, n) in cells]
            if len(pts) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                           f'stroke-width="2"{dash}/>')
            for x, y in pts:
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
            ly = y0 + panel_h + margin_b + li * legend_h + 6
            out.append(f'<line x1="{x0}" y1="{ly}" x2="{x0 + 28}" y2="{ly}" stroke="{colour}" '
                       f'stroke-width="2"{dash}/>')
            out.append(f'<text x="{x0 + 34}" y="{ly + 4}">{escape(case)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--headline", type=int, default=16)
    ap.add_argument("--meta", default="")
    ap.add_argument("--max-foreign", type=float, default=0.25,
                    help="leave out runs during which unrelated processes used more than "
                         "this many cores (when a cell has quieter runs)")
    args = ap.parse_args()

    runs = load(args.raw)
    if not runs:
        print("no runs in", args.raw, file=sys.stderr)
        return 1
    cells = summarise(runs, args.max_foreign)
    connections = sorted({n for _, n in cells})
    cases = [c for c in STYLE if any((c, n) in cells for n in connections)]
    cases += sorted({c for c, _ in cells} - set(cases))

    goals = ratio_rows(runs, cells, args.headline, GOALS, True)
    context = ratio_rows(runs, cells, args.headline, CONTEXT, False)
    p99 = [
        {"case": c, "p99_us_median": cells[(c, args.headline)]["p99_us_median"],
         "met": cells[(c, args.headline)]["p99_us_median"] < P99_GOAL_US}
        for c in cases if c.startswith("tm-") and (c, args.headline) in cells
    ]
    ratios_by_conns = {
        str(n): ratio_rows(runs, cells, n, GOALS, True) for n in connections
    }
    nproc = os.cpu_count()
    results = {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "settings": args.meta,
        "max_foreign_cores": args.max_foreign,
        "nproc": nproc,
        "headline_connections": args.headline,
        "cells": list(cells.values()),
        "goals_at_headline": goals,
        "p99_goal_us": P99_GOAL_US,
        "p99_at_headline": p99,
        "context_at_headline": context,
        "goal_ratios_by_connections": ratios_by_conns,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(os.path.join(args.out, "throughput.svg"), "w") as f:
        f.write(svg_chart(cells, connections, f"{nproc} cores shared by client and servers; {args.meta}"))

    # Text summary: markdown tables, ready to paste into docs/BENCHMARKS.md.
    print(f"\nMedian ops/s (p99 µs) by connections; {args.meta}")
    print(f"Runs during which unrelated processes used more than {args.max_foreign} cores are "
          "left out where quieter runs of the same cell exist; * = only contended runs.\n")
    print("| case | " + " | ".join(f"{n} conns" for n in connections) + " |")
    print("|---|" + "---:|" * len(connections))
    for c in cases:
        row = []
        for n in connections:
            cell = cells.get((c, n))
            row.append("" if not cell else
                       f"{cell['ops_per_sec_median']:,.0f} ({cell['p99_us_median']:,.0f})"
                       f"{'*' if cell['contended'] else ''}"
                       f"{'' if cell['rounds_used'] == cell['rounds'] else ' [%d/%d]' % (cell['rounds_used'], cell['rounds'])}")
        print(f"| {c} | " + " | ".join(row) + " |")
    if any(cells[(c, args.headline)]["server_cpu_us_per_op_median"] is not None
           for c in cases if (c, args.headline) in cells):
        print(f"\nCPU at {args.headline} connections (medians): server and client CPU per "
              "operation; load from unrelated processes while measuring\n")
        print("| case | ops/s | server cores | server µs CPU/op | client µs CPU/op | other load, cores (max) |")
        print("|---|---:|---:|---:|---:|---:|")
        for c in cases:
            cell = cells.get((c, args.headline))
            if not cell or cell["server_cpu_us_per_op_median"] is None:
                continue
            print(f"| {c} | {cell['ops_per_sec_median']:,.0f} | {cell['server_cores_median']:.2f} | "
                  f"{cell['server_cpu_us_per_op_median']:.1f} | {cell['client_cpu_us_per_op_median']:.1f} | "
                  f"{cell['foreign_cores_median']:.2f} ({cell['foreign_cores_max']:.2f}) |")
    print(f"\nGoals at {args.headline} connections (ratio of medians; paired per-round range)\n")
    print("| goal | ratio | per-round range | target | met |")
    print("|---|---:|---:|---:|:-:|")
    for g in goals:
        rng = ("" if g["paired_ratio_min"] is None
               else f"{g['paired_ratio_min']:.2f}–{g['paired_ratio_max']:.2f}")
        print(f"| {g['what']} | {g['ratio_of_medians']:.2f} | {rng} | ≥ {g['goal']:.2f} | "
              f"{'yes' if g['met'] else 'no'} |")
    for p in p99:
        print(f"| p99 < 1 ms: {p['case']} | {p['p99_us_median']:,.0f} µs | | < 1000 µs | "
              f"{'yes' if p['met'] else 'no'} |")
    print(f"\nContext at {args.headline} connections\n")
    print("| comparison | ratio |")
    print("|---|---:|")
    for c in context:
        print(f"| {c['what']} | {c['ratio_of_medians']:.2f} |")
    bad = [c for c in cells.values() if c["errors"]]
    if bad:
        print("\nRuns with errors: " + ", ".join(f"{c['case']}@{c['connections']} ({c['errors']})" for c in bad))
    return 0


if __name__ == "__main__":
    sys.exit(main())
