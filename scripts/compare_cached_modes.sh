#!/usr/bin/env bash
# Accuracy and wall time of the JEDI stage in its four teacher modes, from the same experts:
#   full            every clip through every backbone, foreign_grad_scale=1 (the default)
#   full_fgs0       the same with the foreign gradient path closed (foreign_grad_scale=0)
#   cached          jedi.teacher_cache=true: unlabelled targets from the zarr cache, refreshed every epoch
#   cached_all      + jedi.teacher_cache_labelled=true (foreign_grad_scale=0): every clip passes one backbone
# Needs a finished run whose experts it copies (default runs/synthetic_demo from scripts/demo.sh).
#
#   bash scripts/compare_cached_modes.sh [source run dir] [extra key=value overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=${1:-runs/synthetic_demo}
shift || true
OUT=runs/cached_modes
[ -d "$SOURCE/experts" ] || { echo "no experts in $SOURCE: run scripts/demo.sh first" >&2; exit 1; }
source .venv/bin/activate 2>/dev/null || true
declare -A MODES=(
  [full]=""
  [full_fgs0]="jedi.foreign_grad_scale=0"
  [cached]="jedi.teacher_cache=true"
  [cached_all]="jedi.teacher_cache=true jedi.teacher_cache_labelled=true jedi.foreign_grad_scale=0"
)
for mode in full full_fgs0 cached cached_all; do
  mkdir -p "$OUT/$mode"
  rm -rf "$OUT/$mode/experts" && cp -r "$SOURCE/experts" "$OUT/$mode/experts"
  start=$SECONDS
  # --resume keeps the copied experts; stage=all then trains the JEDI variant and evaluates
  # shellcheck disable=SC2086
  python jedi_train/run.py --resume --config configs/synthetic_demo.yaml output_dir="$OUT" name="$mode" \
      methods=jedi ${MODES[$mode]} "$@" > "$OUT/$mode.log" 2>&1
  echo "$((SECONDS - start))" > "$OUT/$mode/wall_seconds"
  echo "$mode: $((SECONDS - start)) s"
done
python - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print(f"{'mode':<12}{'wall s':>8}{'expert':>9}{'student':>9}{'teacher':>9}   (mean test top-1 over datasets, single clip)")
for mode in ("full", "full_fgs0", "cached", "cached_all"):
    m = json.loads((out / mode / "metrics.json").read_text())["metrics"]
    mean = lambda model: sum(d[model]["single_clip"]["top1"] for d in m.values()) / len(m)
    wall = (out / mode / "wall_seconds").read_text().strip()
    print(f"{mode:<12}{wall:>8}{mean('expert'):>9.1f}{mean('jedi_student'):>9.1f}{mean('jedi_teacher'):>9.1f}")
EOF
