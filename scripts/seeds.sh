#!/usr/bin/env bash
# The README's multi-seed table: `bash scripts/demo.sh seed=N` for each seed (independent replicates:
# every seed renders its own videos, draws its own splits and initialises its own weights), then the
# table with spread, per-seed differences and the paired tests.
#   bash scripts/seeds.sh            # seeds 0 1 2
#   SEEDS="0 1 2 3 4" bash scripts/seeds.sh
# Extra arguments are config overrides passed to every run.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
runs=()
for seed in $SEEDS; do
  start=$SECONDS
  bash scripts/demo.sh "seed=$seed" "$@"
  echo "seeds.sh: seed $seed took $((SECONDS - start)) s"
  runs+=("runs/synthetic_demo_seed$seed")
done
.venv/bin/python tools/summarize_runs.py "${runs[@]}" --json runs/summary.json
