"""GrowModel under tf.distribute.MirroredStrategy and keras.distribution (JAX).

Each runs in a subprocess, because the devices (2 logical CPUs) must be set
up before the backend starts. Each runs in the suite of its own backend.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TOL

WORKER = Path(__file__).with_name("distributed_worker.py")


def run_worker(mode, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(WORKER.parents[1]))
    proc = subprocess.run(
        [sys.executable, str(WORKER), mode, str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT ") :])


def check(result):
    assert result["devices"] == 2
    assert result["loss_difference"] <= TOL
    assert result["params"][1] > result["params"][0]
    assert result["new_variable_replicas"] and set(result["new_variable_replicas"]) == {
        2
    }
    assert result["slot_replicas"] == [2]
    assert np.all(np.isfinite(result["losses"]))
    assert result["iterations"] == 3 * 4 + 4
    assert result["load_difference"] <= 1e-5
    assert result["loaded_fc1_units"] == 80


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="MirroredStrategy runs in the tensorflow suite",
)
def test_mirrored_strategy_two_cpus(tmp_path):
    check(run_worker("tf-mirrored", tmp_path))


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution.DataParallel runs in the jax suite",
)
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax missing")
def test_jax_data_parallel_two_cpus(tmp_path):
    check(run_worker("jax-data-parallel", tmp_path))
