#!/usr/bin/env bash
# The README's main command: synthetic data in the four official layouts -> WebDataset shards ->
# experts -> premise check -> JEDI, the self-training control, supervised continuation and JEDI without
# the foreign gradient path -> per-dataset test table. Idempotent: finished videos, shards and experts are
# kept; rerunning repeats only the training.
# Extra arguments are config overrides, e.g. `bash scripts/demo.sh seed=1`. The seed changes everything:
# the rendered videos, the label splits and the weights (data/synthetic/seed<N>, shards/synthetic_seed<N>,
# runs/synthetic_demo_seed<N> unless name= is given).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
SEED=0
for arg in "$@"; do
  case "$arg" in seed=*) SEED=${arg#seed=} ;; esac
done
SHARDS=shards/synthetic_seed$SEED
bash scripts/synthetic_data.sh "$SEED"  # videos in the official layouts -> shards (kept when already made)

OVERRIDES=(name=synthetic_demo_seed$SEED)
for dataset in kinetics400 ucf101 hmdb51 ssv2; do
  OVERRIDES+=("datasets.$dataset.shards=$SHARDS/$dataset")
done
.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    jedi_train/run.py --config configs/synthetic_demo.yaml "${OVERRIDES[@]}" "$@"
