#!/usr/bin/env bash
# The methods table (docs/results.md): for each seed, the demo benchmark's data and shards, the experts, every
# method of configs/methods_table.yaml from those experts, the test stage; then the JEDI-vs-control ablation
# over label fractions (5 %, 10 %, 20 % of each narrow dataset's training videos labelled; its own shards and
# narrow experts, the broad dataset's shards and expert shared); then tools/methods_table.py.
#   bash scripts/methods_table.sh              # seeds 0 1 2
#   SEEDS="0" bash scripts/methods_table.sh    # one seed
#   RUNS=/tmp/smoke OUT=/tmp/smoke/results.md SEEDS=0 FRACTIONS=5 bash scripts/methods_table.sh \
#       experts.epochs=1 schedule.epochs=1 schedule.steps_per_epoch=2    # a smoke run of the whole chain
# Resumes where it stopped: finished data, shards, experts and (method, seed) pairs are kept; only what is
# missing is trained, and the test stage reruns only for a run that gained a method.
# Extra arguments are config overrides passed to every training run (e.g. schedule.epochs=2 for a smoke run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
SEEDS=${SEEDS:-"0 1 2"}
FRACTIONS=${FRACTIONS:-"5 10 20"}
RUNS=${RUNS:-runs}
OUT=${OUT:-docs/results.md}
NARROW=(ucf101 hmdb51 ssv2)
LAUNCH=(.venv/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no
        jedi_train/run.py --config configs/methods_table.yaml output_dir="$RUNS")

train_and_test() {  # run_name shard_root stage_overrides...
  local name=$1 root=$2; shift 2
  local shards=()
  for dataset in kinetics400 "${NARROW[@]}"; do shards+=("datasets.$dataset.shards=$root/$dataset"); done
  "${LAUNCH[@]}" --resume name="$name" stage=experts "${shards[@]}" "$@"
  "${LAUNCH[@]}" --resume name="$name" stage=methods "${shards[@]}" "$@"
  if [ ! -f "$RUNS/$name/metrics.json" ] || [ -n "$(find "$RUNS/$name" -name best.pt -newer "$RUNS/$name/metrics.json")" ]; then
    "${LAUNCH[@]}" name="$name" stage=eval "${shards[@]}" "$@"
  fi
}

for seed in $SEEDS; do
  start=$SECONDS
  bash scripts/synthetic_data.sh "$seed"
  train_and_test "methods_seed$seed" "shards/synthetic_seed$seed" seed="$seed" "${@:1}"
  for pct in $FRACTIONS; do
    root=shards/synthetic_seed${seed}_labels$pct
    for dataset in "${NARROW[@]}"; do
      # pct % of the class's training videos labelled, plus the main benchmark's 11 val videos per class; the
      # seeded per-class order is the same for every fraction, so val and test are the main benchmark's and
      # the labelled sets are nested
      read -r label_fraction val_fraction < <($PY - "shards/synthetic_seed$seed/$dataset/manifest.json" "$pct" <<'PYEOF'
import json, sys
splits = json.load(open(sys.argv[1]))["splits"]
train = sum(splits[s]["per_class"][0] for s in ("labelled", "val", "unlabelled"))
labelled, val = int(train * int(sys.argv[2]) / 100 + 0.5), splits["val"]["per_class"][0]
print((labelled + val) / train, val / (labelled + val))
PYEOF
)
      $PY tools/make_shards.py --layout "$dataset" --root "data/synthetic/seed$seed/$dataset" --out "$root/$dataset" \
          --label-fraction "$label_fraction" --val-fraction "$val_fraction" --short-side 40 --fps 8 --gop 4 \
          --seed "$seed" --workers 2 --time-reversal-changes-label
    done
    ln -sfn "$(pwd)/shards/synthetic_seed$seed/kinetics400" "$root/kinetics400"
    run=methods_seed${seed}_labels$pct
    mkdir -p "$RUNS/$run/experts"
    cp -n "$RUNS/methods_seed$seed/experts/kinetics400.pt" "$RUNS/$run/experts/"  # same shards, same expert
    train_and_test "$run" "$root" seed="$seed" methods=jedi,self_training "${@:1}"
  done
  echo "methods_table.sh: seed $seed took $((SECONDS - start)) s"
done
$PY tools/methods_table.py --seeds $SEEDS --fractions $FRACTIONS --runs-dir "$RUNS" --out "$OUT"
