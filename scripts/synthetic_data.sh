#!/usr/bin/env bash
# Synthetic videos of seed N in the four official layouts, and their WebDataset shards: the benchmark every
# README command trains on. Idempotent: finished videos and shards are kept.
#   bash scripts/synthetic_data.sh 0      # -> data/synthetic/seed0, shards/synthetic_seed0/<dataset>
# Label budgets shape the benchmark (METHOD.md 1b): one broad, well-labelled dataset (26 labelled + 9 val
# clips per class) beside three narrow ones with few labels: 10 labelled + 11 val clips per class (of 70
# train clips per class).
# Training clips: H.264, short side 40, 8 fps (a 2 s video is 16 frames: one clip of 8 frames at stride 2
# sees the whole action), a keyframe every 4 frames.
set -euo pipefail
cd "$(dirname "$0")/.."
SEED=${1:?usage: synthetic_data.sh SEED}
PY=.venv/bin/python
DATA=data/synthetic/seed$SEED
SHARDS=shards/synthetic_seed$SEED

$PY tools/make_synthetic.py --out "$DATA" --size "${SIZE:-demo}" --seed "$SEED" --workers 2
SHARD_ARGS=(--short-side 40 --fps 8 --gop 4 --seed "$SEED" --workers 2 --time-reversal-changes-label)
$PY tools/make_shards.py --layout kinetics --root "$DATA/kinetics400" --out "$SHARDS/kinetics400" \
    --label-fraction 0.5 --val-fraction 0.25 --hflip-changes-label "${SHARD_ARGS[@]}"
for dataset in ucf101 hmdb51 ssv2; do
  $PY tools/make_shards.py --layout "$dataset" --root "$DATA/$dataset" --out "$SHARDS/$dataset" \
      --label-fraction 0.3 --val-fraction 0.5 "${SHARD_ARGS[@]}"
done
