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


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution.ModelParallel runs in the jax suite",
)
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax missing")
def test_jax_model_parallel_keeps_the_layout_of_grown_layers(tmp_path):
    """8 host devices, a (2 batch x 4 model) mesh; fc1 and conv1 sharded."""
    result = run_worker("jax-model-parallel", tmp_path)
    assert result["devices"] == 8
    assert result["loss_difference"] <= TOL
    assert result["params"][1] > result["params"][0]
    assert result["shapes"]["fc1/kernel"][1] == 80
    assert result["shapes"]["conv1/kernel"][3] == 96
    # New variables follow the user's LayoutMap patterns by name.
    assert result["specs"]["fc1/kernel"].endswith("(None, 'model')")
    assert "'model'" in result["specs"]["fc1/bias"]
    assert "'model'" in result["specs"]["conv1/kernel"]
    assert "'model'" not in result["specs"]["conv2_deeper/kernel"]
    # So do their optimizer slots.
    slots = result["slot_specs"]
    assert slots and all("'model'" in spec for spec in slots.values())
    assert np.all(np.isfinite(result["losses"]))
    assert result["load_difference"] <= 1e-5


@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="keras.distribution.ModelParallel runs in the jax suite",
)
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax missing")
@pytest.mark.skipif(
    importlib.util.find_spec("keras_hub") is None, reason="keras-hub missing"
)
def test_a_grown_llama_keeps_the_sharding_of_its_layout_map(tmp_path):
    """LlamaBackbone.get_layout_map on 8 host devices; grown inside fit."""
    result = run_worker("jax-llama-model-parallel", tmp_path)
    assert result["devices"] == 8
    assert result["class"] == "LlamaCausalLM"
    assert result["config"] == {
        "hidden_dim": 32,
        "intermediate_dim": 64,
        "num_layers": 3,
    }
    assert result["relative_difference"] <= TOL
    assert result["params"][1] > result["params"][0]
    # Every grown variable, the inserted block's too, and every optimizer slot
    # that the layout map names are sharded as the map says.
    assert "transformer_layer_2/self_attention/query/kernel" in result["sharded"]
    assert "token_embedding/embeddings" in result["sharded"]
    assert result["sharded_slots"] >= 2 * len(result["sharded"])  # AdamW: m and v
    assert result["mismatches"] == []
    assert np.all(np.isfinite(result["losses"]))


def free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="MultiWorkerMirroredStrategy runs in the tensorflow suite",
)
def test_multi_worker_mirrored_strategy_two_workers(tmp_path):
    """2 worker processes on 127.0.0.1 grow at the same step and stay in sync.

    Keras 3's ``fit`` fails under MultiWorkerMirroredStrategy even without
    keras-net2net (keras-team/keras#20585), so the workers train with a custom
    loop and grow with `grow_in_place`.
    """
    workers = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    env = dict(os.environ, PYTHONPATH=str(WORKER.parents[1]))
    env.pop("TF_CONFIG", None)
    procs = []
    for index in range(2):
        config = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), "tf-multiworker", str(tmp_path)]
                + [str(index), config],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        )
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=420)
            assert proc.returncode == 0, out[-3000:] + err[-3000:]
            line = [x for x in out.splitlines() if x.startswith("RESULT ")][-1]
            results.append(json.loads(line[len("RESULT ") :]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for result in results:
        assert result["workers"] == 2
        assert result["output_difference"] <= TOL * result["output_scale"]
        assert result["params"][1] > result["params"][0]
        assert result["mirrored"] == ["MirroredVariable"]
        assert result["iterations"] == 6
    assert results[0]["shapes"] == results[1]["shapes"]
    first, second = (np.load(tmp_path / f"worker{i}.npz") for i in range(2))
    assert len(first.files) == len(second.files)
    for key in first.files:
        np.testing.assert_allclose(first[key], second[key], rtol=0, atol=1e-6)
