#!/usr/bin/env bash
# Every GPU check of this repository in one command, for a short lease of a GPU machine:
#   1. tools/gpu_check_dali.py       the DALI GPU data path (NVDEC): batch contract, corrupt sample, resume
#   2. tools/bench_jedi_step.py      full JEDI step vs cached-teacher modes, N = 2, 3, 4, X3D-S students
#   3. tools/bench_dali_decode.py    where the DALI loader's time goes: reader alone, threads x batch, NVDEC
#   4. tools/profile_throughput.py   DALI GPU vs torch loader vs PyTorchVideo, NVDEC utilisation, data-wait %
#                                    of the JEDI step (four x3d_s students), one repeat (DALI is slow, see
#                                    docs/benchmarks.md; --preset gpu_quick adds the keyframe sweep, ~15 min estimated)
# Each step has its own time limit, so a hang in one still leaves the others' results. Logs, JSON and PNGs
# go to $OUT (default runs/gpu_checks). Needs python3 with torch + CUDA and this project's dependencies
# importable (PYTHONPATH is extended with /tmp/site, where the device bundle unpacks them).
#
#   bash scripts/gpu_checks.sh            # at most 9 min (the steps' limits); on an H200 gpu_check took
#                                         # 80 s, bench_jedi_step 45 s, bench_dali_decode under 120 s
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu_checks}
mkdir -p "$OUT"
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
python3 -c "import torch, nvidia.dali; print('torch', torch.__version__, '| dali', nvidia.dali.__version__, '| cpus', __import__('os').cpu_count())"

step() {  # name, time limit (s), lines of the log to print, command...
  local name=$1 limit=$2 lines=$3
  shift 3
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s (limit $limit s); last $lines lines of $OUT/$name.log"
  grep -v -E "it/s\]|s/it\]|FutureWarning|warnings.warn" "$OUT/$name.log" | tail -n "$lines"
}

step gpu_check 120 14 python3 tools/gpu_check_dali.py --steps 20
step bench_jedi_step 100 14 python3 tools/bench_jedi_step.py --foreign-grad-scale 0 --backbone x3d_s \
    --clip 3x13x160x160 --batch 8 --warmup 3 --steps 10 --out "$OUT"
step bench_dali_decode 120 12 python3 tools/bench_dali_decode.py --out "$OUT"
step profile 200 45 python3 tools/profile_throughput.py --what loaders,peer,dali_gpu,jedi_step --workers 16 \
    --videos 128 --repeats 1 --timed-clips 256 --jedi-backbone x3d_s --jedi-batch-size 8 --jedi-steps 5 \
    --work-dir /tmp/throughput --json "$OUT/profile.json" --png "$OUT/profile.png"
