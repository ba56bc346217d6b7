#!/usr/bin/env bash
# The compressed-domain report (docs/results.md, block `compressed-domain`; docs/compressed_wise.png):
# PKD + WISE (../shared/METHOD.md section 2) on the UCF-like and HMDB-like synthetic sets, seeds 0 1 2.
# Per (seed, dataset): compressed-domain shards from data/synthetic/seed<N>/<dataset> (rendered first if
# missing, as scripts/demo.sh does), then jedi_train.compressed.run, then the report over all of them.
# Resumable: complete shards are kept by make_shards, and a run folder holding results.json is kept
# (pass force=true to retrain). Extra arguments are config overrides for every run, e.g. exits.epochs=9.
# Environment: PY (python, default .venv/bin/python), SEEDS (default "0 1 2"), DATASETS ("ucf101 hmdb51").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-"0 1 2"}
DATASETS=${DATASETS:-"ucf101 hmdb51"}
started=$(date +%s)

# Shards for this method: short side 64 (not the demo's 40) so that 4-px motion-vector cells give a
# 16 x 22 field and 16-px macroblocks are not a third of the frame; GOP 4 in a 16-frame video puts one
# I-frame in each of K = 4 segments; every official train clip keeps its label (20 % of them val),
# as the method is supervised.
for seed in $SEEDS; do
  DATA=data/synthetic/seed$seed
  [ -d "$DATA/ucf101" ] || $PY tools/make_synthetic.py --out "$DATA" --size demo --seed "$seed" --workers 2
  for dataset in $DATASETS; do
    $PY tools/make_shards.py --layout "$dataset" --root "$DATA/$dataset" --out "shards/compressed_seed$seed/$dataset" \
        --short-side 64 --fps 8 --gop 4 --seed "$seed" --workers 2 --time-reversal-changes-label \
        --label-fraction 1.0 --val-fraction 0.2 --modalities mv,residual,iframe --segments 4 --mv-block 4
    $PY -m jedi_train.compressed.run --config configs/compressed_pkd.yaml \
        "shards=shards/compressed_seed$seed/$dataset" "dataset=$dataset" "seed=$seed" "$@"
  done
done
$PY -m jedi_train.compressed.report --runs runs/compressed --datasets "$(echo $DATASETS | tr ' ' ,)" \
    --seeds "$(echo $SEEDS | tr ' ' ,)" --wall-seconds $(( $(date +%s) - started ))
echo "compressed-domain report: $(( ($(date +%s) - started) / 60 )) min $(( ($(date +%s) - started) % 60 )) s"
