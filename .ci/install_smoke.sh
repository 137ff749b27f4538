#!/usr/bin/env bash
# Every documented install, from a built wheel, in fresh virtual environments
# outside the checkout:
#
#     .ci/install_smoke.sh DIST_DIR       (DIST_DIR holds keras_net2net-*.whl)
#
# Called by .ci/run after the wheel is built; it runs alone too. Each install is
# followed by a smoke run of seconds (.ci/install_smoke.py) that imports the
# package from site-packages, never from the checkout.
#
# Where extras nest, one venv is reused and the extras are added step by step,
# as a user would add them, and each step is tested right after its install:
#   [tensorflow]                  -> the README quickstart, a GrowModel fit
#   [tensorflow,tuner]            -> a GrowthTuner search, a stock RandomSearch
#   [tensorflow,tuner,examples]   -> examples/grow_search_mnist.py --quick
#   [keras-hub]                   -> a KerasHub growth (KerasHub brings
#                                    TensorFlow itself, through tensorflow-text)
# [jax] and [torch] get a venv each (the quickstart on their backend). pip's
# cache is kept, so repeated CI runs download nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIST="$(cd "${1:?usage: .ci/install_smoke.sh DIST_DIR}" && pwd)"
WHEEL="$(ls "$DIST"/keras_net2net-*.whl)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/venvs" "$WORK/run"
cp "$ROOT/.ci/install_smoke.py" "$WORK/run/"
# Never the checkout: the package must come from site-packages. The smoke
# script's folder holds nothing else (a venv named jax/ beside it would be
# imported as the jax package).
cd "$WORK/run"
export TF_CPP_MIN_LOG_LEVEL=2  # TensorFlow's start-up banners

SECONDS=0
step() { echo "=== clean install [$SECONDS s]: $*"; }
new_venv() {
    python3 -m venv "$WORK/venvs/$1"
    "$WORK/venvs/$1/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
}
pip_in() { local venv=$1; shift; "$WORK/venvs/$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"; }
smoke() { local venv=$1 backend=$2; shift 2; KERAS_BACKEND=$backend "$WORK/venvs/$venv/bin/python" install_smoke.py "$@"; }

step "[tensorflow]: quickstart, GrowModel fit"
new_venv tf
pip_in tf "$WHEEL[tensorflow]"
smoke tf tensorflow quickstart "$ROOT/README.md"
smoke tf tensorflow fit

step "[tensorflow,tuner]: GrowthTuner and RandomSearch"
pip_in tf "$WHEEL[tensorflow,tuner]"
smoke tf tensorflow tuner

step "[tensorflow,tuner,examples]: examples/grow_search_mnist.py --quick"
pip_in tf "$WHEEL[tensorflow,tuner,examples]"
KERAS_BACKEND=tensorflow "$WORK/venvs/tf/bin/python" "$ROOT/examples/grow_search_mnist.py" \
    --quick --out "$WORK/grow_search" > "$WORK/grow_search.log" 2>&1 \
    || { tail -50 "$WORK/grow_search.log"; exit 1; }
tail -8 "$WORK/grow_search.log"
test -s "$WORK/grow_search/results.json"

step "[keras-hub]: a KerasHub growth"
pip_in tf "$WHEEL[keras-hub]"
smoke tf tensorflow keras-hub

step "[jax]: quickstart"
new_venv jax
pip_in jax "$WHEEL[jax]"
smoke jax jax quickstart "$ROOT/README.md"

step "[torch]: quickstart (the CPU build, pinned first as the README says)"
new_venv torch
pip_in torch "torch==2.13.0"
pip_in torch "$WHEEL[torch]"
smoke torch torch quickstart "$ROOT/README.md"

step "all documented installs passed"
