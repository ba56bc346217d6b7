#!/usr/bin/env bash
# The README's main command: synthetic data in the four official layouts -> WebDataset shards ->
# experts -> JEDI and the self-training control -> per-dataset test table. Idempotent: finished
# videos, shards and experts are kept; rerunning repeats only the training.
# Extra arguments are config overrides, e.g. `bash scripts/demo.sh seed=1 name=seed1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
SIZE=${SIZE:-demo}

$PY tools/make_synthetic.py --out data/synthetic --size "$SIZE" --seed 0 --workers 2

# Label budgets shape the benchmark (METHOD.md 1b): one broad, well-labelled dataset beside three
# narrow ones with few labels. Training clips: H.264, short side 40, 12 fps, a keyframe every 4 frames.
SHARD_ARGS=(--short-side 40 --fps 12 --gop 4 --seed 0 --workers 2 --val-fraction 0.25)
$PY tools/make_shards.py --layout kinetics --root data/synthetic/kinetics400 --out shards/kinetics400 \
    --label-fraction 0.5 --hflip-changes-label --time-reversal-changes-label "${SHARD_ARGS[@]}"
$PY tools/make_shards.py --layout ucf101 --root data/synthetic/ucf101 --out shards/ucf101 \
    --label-fraction 0.2 --time-reversal-changes-label "${SHARD_ARGS[@]}"
$PY tools/make_shards.py --layout hmdb51 --root data/synthetic/hmdb51 --out shards/hmdb51 \
    --label-fraction 0.2 --time-reversal-changes-label "${SHARD_ARGS[@]}"
$PY tools/make_shards.py --layout ssv2 --root data/synthetic/ssv2 --out shards/ssv2 \
    --label-fraction 0.2 --time-reversal-changes-label "${SHARD_ARGS[@]}"

.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
    jedi_train/run.py --config configs/synthetic_demo.yaml "$@"
