#!/usr/bin/env bash
# The GPU checks of this repository, for a short lease of a GPU machine:
#   gpu_check          tools/gpu_check_dali.py: the DALI GPU data path (NVDEC): batch contract, corrupt
#                      sample, resume (limit 120 s; 80 s on an H200)
#   diagnose           tools/diagnose_dali_video.py: DALI's video decoder alone vs our DALI loader vs DALI's
#                      file readers, in 1 and 4 processes, per-thread CPU, NVDEC (limit 270 s; not yet
#                      run on a GPU)
#   bench_dali_decode  tools/bench_dali_decode.py: our DALI loader over threads x batch, NVDEC (limit 120 s)
#   bench_jedi_step    tools/bench_jedi_step.py: full JEDI step vs cached-teacher modes, N = 2, 3, 4, X3D-S
#                      students (limit 100 s; 45 s on an H200)
#   profile            tools/profile_throughput.py: DALI GPU vs torch loader vs PyTorchVideo, NVDEC, data-wait
#                      % of the JEDI step with four x3d_s students, one repeat (limit 200 s)
# Each step has its own time limit, so a hang in one still leaves the others' results. Logs, JSON and PNGs
# go to $OUT (default runs/gpu_checks). Needs python3 with torch + CUDA and this project's dependencies
# importable (PYTHONPATH is extended with /tmp/site, where the device bundle unpacks them).
#
#   bash scripts/gpu_checks.sh                 # gpu_check, diagnose, bench_dali_decode: the open questions of
#                                              # the DALI path; at most 8.5 min (the steps' limits)
#   bash scripts/gpu_checks.sh all             # every step: at most 13.5 min, more than one device call allows
#   bash scripts/gpu_checks.sh profile ...     # the named steps, in that order
set -u
cd "$(dirname "$0")/.."
ALL=(gpu_check diagnose bench_dali_decode bench_jedi_step profile)
STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(gpu_check diagnose bench_dali_decode)
[ "${STEPS[0]}" = all ] && STEPS=("${ALL[@]}")
for name in "${STEPS[@]}"; do
  [[ " ${ALL[*]} " == *" $name "* ]] || { echo "unknown step $name: allowed ${ALL[*]} all" >&2; exit 2; }
done
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

run() {  # one named step
  case $1 in
  gpu_check) step gpu_check 120 14 python3 tools/gpu_check_dali.py --steps 20 ;;
  diagnose) step diagnose 270 60 python3 tools/diagnose_dali_video.py --max-seconds 8 --out "$OUT" ;;
  bench_dali_decode) step bench_dali_decode 120 12 python3 tools/bench_dali_decode.py --out "$OUT" ;;
  bench_jedi_step) step bench_jedi_step 100 14 python3 tools/bench_jedi_step.py --foreign-grad-scale 0 \
      --backbone x3d_s --clip 3x13x160x160 --batch 8 --warmup 3 --steps 10 --out "$OUT" ;;
  profile) step profile 200 45 python3 tools/profile_throughput.py --what loaders,peer,dali_gpu,jedi_step \
      --workers 16 --videos 128 --repeats 1 --timed-clips 256 --jedi-backbone x3d_s --jedi-batch-size 8 \
      --jedi-steps 5 --work-dir /tmp/throughput --json "$OUT/profile.json" --png "$OUT/profile.png" ;;
  esac
}

for name in "${STEPS[@]}"; do run "$name"; done
