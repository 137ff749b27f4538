#!/usr/bin/env bash
# The GPU figures in benchmarks/README.md, in one bounded run on a GPU machine.
#
#   DATA=path/to/mnist.npz OUT=results_dir bash benchmarks/gpu.sh
#   LM_DATA=path/to/kjv.txt.gz LM_ONLY=1 bash benchmarks/gpu.sh   # the LM run only
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
# The language-model benchmark at a larger size (width 512, 8 blocks, grown from
# 256 and 4), all four paths, one seed: only with LM_DATA (a text file).
if [ -n "${LM_DATA:-}" ]; then
  lm="--target 512,8,2048,8 --small 256,4,1024,4 --steps 3000"
  [ -n "$q" ] && lm="--quick"
  step "${LM_LIMIT:-420}" jax benchmarks/lm_growth.py $lm --data "$LM_DATA" \
    --out "$out/lm_growth_jax.json"
fi
[ -n "${LM_ONLY:-}" ] && exit 0
step 170 torch benchmarks/growth_cost.py $gc --out "$out/growth_cost_torch.json"
step 110 jax benchmarks/growth_cost.py $gc --repeats 1 --out "$out/growth_cost_jax.json"
step 60 jax benchmarks/step_speed.py $q --out "$out/step_speed_jax.json"
data=${DATA:+--data $DATA}
step 220 jax benchmarks/time_to_accuracy.py $q $data --out "$out/time_to_accuracy_jax.json"
