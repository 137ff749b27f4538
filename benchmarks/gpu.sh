#!/usr/bin/env bash
# The GPU figures in benchmarks/README.md, in one bounded run on a GPU machine.
#
#   DATA=path/to/mnist.npz OUT=results_dir bash benchmarks/gpu.sh
#
# Needs keras, keras-net2net (this checkout), PyTorch and JAX with CUDA. Each
# benchmark has its own time limit so that a slow one cannot starve the rest.
# QUICK=1 runs every step in its --quick form (to check the script on a CPU).
set -u
out=${OUT:-benchmarks/results/gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}" TF_CPP_MIN_LOG_LEVEL=2
log="$out/gpu.log"
q=${QUICK:+--quick}
step() {  # step LIMIT_S BACKEND ARGS...: one benchmark, its output in the log
  local limit=$1 backend=$2
  shift 2
  echo "== $(date -u +%T) KERAS_BACKEND=$backend $*" >>"$log"
  KERAS_BACKEND=$backend timeout "$limit" python3 "$@" >>"$log" 2>&1
  echo "== exit $? after ${SECONDS}s" >>"$log"
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  nproc
  python3 -c "import sys, keras, jax, torch; print(sys.version.split()[0], \
'keras', keras.__version__, 'jax', jax.__version__, jax.devices(), \
'torch', torch.__version__, torch.cuda.get_device_name())"
} >"$log" 2>&1
gc="--sizes 1e8 --tails 1e8"
[ -n "$q" ] && gc="--quick"
step 170 torch benchmarks/growth_cost.py $gc --out "$out/growth_cost_torch.json"
step 110 jax benchmarks/growth_cost.py $gc --repeats 1 --out "$out/growth_cost_jax.json"
step 60 jax benchmarks/step_speed.py $q --out "$out/step_speed_jax.json"
data=${DATA:+--data $DATA}
step 220 jax benchmarks/time_to_accuracy.py $q $data --out "$out/time_to_accuracy_jax.json"
