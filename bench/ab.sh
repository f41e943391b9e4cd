#!/usr/bin/env bash
# A/B of two tidemark builds with the same client (the new tidemark-bench), alternating
# old, new for three rounds of bench/compare.sh (16 connections, 5 s after 1 s warm-up).
# OLD and NEW (required) are target directories holding release builds, e.g.
#   git worktree add ../base BASE && (cd ../base && CARGO_TARGET_DIR=/tmp/old cargo build --release)
#   CARGO_TARGET_DIR=/tmp/new cargo build --release && OLD=/tmp/old NEW=/tmp/new bench/ab.sh
# Results: OUT/{old,new}-N/summary.md (OUT defaults to /tmp/ab). Overwrites
# target/release/tidemark and tidemark-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${OLD:?set OLD to the base build's target directory}
NEW=${NEW:?set NEW to the new build's target directory}
OUT=${OUT:-/tmp/ab}
mkdir -p target/release "$OUT"
CASES="redis-mem/set redis-mem/get tm-relaxed/tyrant-guarded-put tm-relaxed/tyrant-get tm-relaxed/http-put tm-relaxed/http-get tm-immediate/tyrant-guarded-put"
cp "$NEW/release/tidemark-bench" target/release/tidemark-bench
for round in 1 2 3; do
  for which in old new; do
    if [[ $which == old ]]; then dir=$OLD; else dir=$NEW; fi
    cp "$dir/release/tidemark" target/release/tidemark
    SKIP_BUILD=1 DURATION=5 WARMUP=1 ROUNDS=1 CONNECTIONS=16 KEYS=100000 CASES="$CASES" \
      OUT=$OUT/$which-$round bench/compare.sh > "$OUT/$which-$round.log" 2>&1
  done
done
echo finished
