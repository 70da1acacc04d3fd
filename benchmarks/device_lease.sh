#!/bin/bash
# One GPU lease, run on the lent machine from the repository root (see benchmarks/device_session.py):
#   DSM_GIT_COMMIT=<commit sent> DEADLINE=<s> JOBS="cpu:dsm-epochs=150:seed0 full:dsm:seed0" \
#   BENCH="cpu full" bash benchmarks/device_lease.sh
# Unpacks .devdata/fer2013 (once per machine), installs the carried .whl wheels, trains the jobs in parallel
# until DEADLINE seconds, returns their run folders in $OUT, then times the profiles' networks (BENCH).
# JOBS="" unpacks and installs only: the first of two calls when the runs' checkpoints must travel too.
set -o pipefail
: "${OUT:?OUT must name the folder that comes back}" "${DSM_GIT_COMMIT:?name the commit sent}" "${JOBS?}"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD:/tmp/site DSM_GIT_COMMIT
LOG=$OUT/driver.log
S="python3 benchmarks/device_session.py"
DATA=/tmp/fer2013
date -u | tee -a "$LOG"
if [ -d .whl ] && [ ! -d /tmp/site/fvcore ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
fi
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv 2>&1 | tee -a "$LOG"
if [ ! -f $DATA/images.npy ]; then
  $S unpack --src .devdata/fer2013 --out $DATA 2>&1 | tee -a "$LOG" || exit 1
fi
if [ -n "$JOBS" ]; then
  args=() runs=()
  for job in $JOBS; do
    IFS=: read -r profile variant repeat <<< "$job"
    args+=(--job "$job") runs+=("runs/fer2013/$profile/$variant/$repeat")
  done
  $S train --data $DATA --deadline "${DEADLINE:-360}" ${COMPILE_MODE:+--compile-mode $COMPILE_MODE} "${args[@]}" 2>&1 \
    | tee -a "$LOG"
  for run in "${runs[@]}"; do echo "== $run"; grep -v Warning "$run/device.log" | tail -n 3; done 2>&1 | tee -a "$LOG"
  $S collect --out "$OUT" "${runs[@]}" 2>&1 | tee -a "$LOG"
fi
for profile in $BENCH; do
  timeout 70 $S bench --profile "$profile" --data $DATA --out "$OUT/bench_gpu_fer2013_$profile.json" 2>&1 | tail -n 3 \
    | tee -a "$LOG"
done
date -u | tee -a "$LOG"
