"""BackupAndRestore across growth: killed by SIGKILL after a growth event, the
same script resumes with the grown model, the backup's exact weights, optimizer
slots and iterations, and only the remaining growth events."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TOL
from growth_helpers import small_data
from growth_helpers import small_model

import keras_net2net as kn

WORKER = Path(__file__).resolve().parent / "backup_worker.py"


def run(backup_dir, out_dir, order, kill, llama=False):
    args = [sys.executable, str(WORKER), str(backup_dir), str(out_dir), order]
    if kill:
        args.append("kill")
    if llama:
        args.append("llama")
    return subprocess.run(
        args, capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )


def load(path):
    meta = json.loads(Path(str(path) + ".json").read_text())
    arrays = np.load(str(path) + ".npz")
    weights = [arrays[f"w{i}"] for i in range(meta["n_weights"])]
    slots = [arrays[f"s{i}"] for i in range(meta["n_slots"])]
    return meta, weights, slots


@pytest.mark.parametrize("order", ["backup_first", "grow_first"])
def test_killed_run_resumes_grown(order, tmp_path):
    backup_dir, out_dir = tmp_path / "backup", tmp_path / "out"
    out_dir.mkdir()
    first = run(backup_dir, out_dir, order, kill=True)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    log_path = backup_dir / "keras_net2net_growth.json"
    assert log_path.exists()
    if order == "grow_first":  # a log written before 0.2.0 says "operations"
        log = json.loads(log_path.read_text())
        for record in log["records"]:
            record["operations"] = record.pop("requests")
        log_path.write_text(json.dumps(log))
    second = run(backup_dir, out_dir, order, kill=False)
    assert second.returncode == 0, second.stderr[-3000:]

    saved, saved_weights, saved_slots = load(out_dir / "backed_up")
    resumed, weights, slots = load(out_dir / "resumed")
    assert saved["width"] == resumed["width"] == 10  # fc1, grown at epoch 1
    assert resumed["layers"] == saved["layers"]
    assert resumed["iterations"] == saved["iterations"] == 3 * 4
    assert len(weights) == len(saved_weights) and len(slots) == len(saved_slots)
    for a, b in zip(weights + slots, saved_weights + saved_slots):
        np.testing.assert_array_equal(a, b)

    final = json.loads((out_dir / "final.json").read_text())
    # the epoch-1 event is not applied again; the epoch-4 event fires once
    assert final["records"] == ["epoch 1", "epoch 4"]
    assert final["history"] == ["epoch 1", "epoch 4"]
    assert "fc1_deeper" in final["layers"] and final["width"] == 10
    assert final["learning_rate"] == pytest.approx(0.01 * 0.5 * 0.5)
    assert not backup_dir.exists()  # BackupAndRestore cleans up after success


def test_killed_llama_causal_lm_resumes_grown(tmp_path):
    pytest.importorskip("keras_hub")
    backup_dir, out_dir = tmp_path / "backup", tmp_path / "out"
    out_dir.mkdir()
    first = run(backup_dir, out_dir, "grow_first", kill=True, llama=True)
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    second = run(backup_dir, out_dir, "grow_first", kill=False, llama=True)
    assert second.returncode == 0, second.stderr[-3000:]

    saved, saved_weights, saved_slots = load(out_dir / "backed_up")
    resumed, weights, slots = load(out_dir / "resumed")
    assert saved["class"] == resumed["class"] == "LlamaCausalLM"
    assert saved["width"] == resumed["width"] == 32  # hidden_dim, grown at epoch 1
    assert resumed["layers"] == saved["layers"]
    assert resumed["iterations"] == saved["iterations"] == 3 * 4
    assert len(weights) == len(saved_weights) and len(slots) == len(saved_slots)
    for a, b in zip(weights + slots, saved_weights + saved_slots):
        np.testing.assert_array_equal(a, b)
    final = json.loads((out_dir / "final.json").read_text())
    assert final["records"] == ["epoch 1", "epoch 4"]
    assert final["class"] == "LlamaCausalLM" and final["width"] == 32
    assert "transformer_layer_2" in final["layers"]


def test_remote_backup_directories_are_refused():
    model = small_model("functional")
    x, y = small_data()
    with pytest.raises(ValueError, match=r"local backup directories only"):
        model.fit(
            x,
            y,
            epochs=1,
            verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore("gs://bucket/run"),
                kn.GrowModel({1: kn.Widen("fc1", 9)}),
            ],
        )
    assert TOL
