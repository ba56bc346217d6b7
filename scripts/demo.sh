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
PY=.venv/bin/python
SIZE=${SIZE:-demo}

SEED=0
for arg in "$@"; do
  case "$arg" in seed=*) SEED=${arg#seed=} ;; esac
done
DATA=data/synthetic/seed$SEED
SHARDS=shards/synthetic_seed$SEED

$PY tools/make_synthetic.py --out "$DATA" --size "$SIZE" --seed "$SEED" --workers 2

# Label budgets shape the benchmark (METHOD.md 1b): one broad, well-labelled dataset (26 labelled + 9 val
# clips per class) beside three narrow ones with few labels: 10 labelled + 11 val clips per class (of 70
# train clips per class).
# Training clips: H.264, short side 40, 8 fps (a 2 s video is 16 frames: one clip of 8 frames at stride 2
# sees the whole action), a keyframe every 4 frames.
SHARD_ARGS=(--short-side 40 --fps 8 --gop 4 --seed "$SEED" --workers 2 --time-reversal-changes-label)
$PY tools/make_shards.py --layout kinetics --root "$DATA/kinetics400" --out "$SHARDS/kinetics400" \
    --label-fraction 0.5 --val-fraction 0.25 --hflip-changes-label "${SHARD_ARGS[@]}"
for dataset in ucf101 hmdb51 ssv2; do
  $PY tools/make_shards.py --layout "$dataset" --root "$DATA/$dataset" --out "$SHARDS/$dataset" \
      --label-fraction 0.3 --val-fraction 0.5 "${SHARD_ARGS[@]}"
done

OVERRIDES=(name=synthetic_demo_seed$SEED)
for dataset in kinetics400 ucf101 hmdb51 ssv2; do
  OVERRIDES+=("datasets.$dataset.shards=$SHARDS/$dataset")
done
.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    jedi_train/run.py --config configs/synthetic_demo.yaml "${OVERRIDES[@]}" "$@"
