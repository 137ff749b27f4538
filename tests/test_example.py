"""The bundled MNIST example, end to end in --quick mode."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mnist_net2net.py"
NAMES = [
    "teacher",
    "wider-random-pad",
    "net2wider",
    "deeper-random-init",
    "net2deeper",
    "growmodel-net2wider",
]


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_net2net", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--verbose", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_quick_run_writes_table_json_csv_and_plot(quick_run):
    out, stdout = quick_run
    report = json.loads((out / "results.json").read_text())
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == NAMES
    for r in results.values():
        assert len(r["val_loss"]) == report["config"]["epochs"] + 1
        assert np.all(np.isfinite(r["val_loss"]))
        assert np.all(np.isfinite(r["val_accuracy"]))
    teacher_final = results["teacher"]["val_loss"][-1]
    for name in ("net2wider", "net2deeper"):
        assert abs(results[name]["val_loss"][0] - teacher_final) <= 1e-4, name
    # the in-fit run trains its own teacher phase: compare with its last epoch
    grown = results["growmodel-net2wider"]
    assert abs(grown["val_loss"][0] - grown["teacher_val_loss"][-1]) <= 1e-4
    # the random baselines really start elsewhere
    assert abs(results["deeper-random-init"]["val_loss"][0] - teacher_final) > 1e-2
    assert results["wider-random-pad"]["params"] == results["net2wider"]["params"]
    assert results["growmodel-net2wider"]["growth"]
    table = (out / "results.md").read_text()
    for r in results.values():
        assert r["label"] in table and r["label"] in stdout
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + len(NAMES) * (report["config"]["epochs"] + 1)
    png = (out / "val_loss.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "total wall time" in stdout


def test_failed_download_explains_data_and_quick(monkeypatch, tmp_path):
    example = load_example()

    def offline():
        raise OSError("network is unreachable")

    monkeypatch.setattr(example.keras.datasets.mnist, "load_data", offline)
    with pytest.raises(SystemExit) as exit_info:
        example.main(["--out", str(tmp_path)])
    message = str(exit_info.value)
    assert "could not download MNIST" in message
    assert "--data" in message and "--quick" in message


def test_missing_data_file_is_a_clear_error(tmp_path):
    example = load_example()
    with pytest.raises(SystemExit, match="no such file"):
        example.main(["--data", str(tmp_path / "none.npz"), "--out", str(tmp_path)])


def test_data_file_layout_and_scaling(tmp_path):
    example = load_example()
    args = example.parse_args(["--quick"])
    (x_train, y_train), (x_test, y_test) = example.load_data(args)
    assert x_train.shape == (2000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert set(np.unique(y_train)) == set(range(10))
    assert example.QUICK_DATA.stat().st_size < 1_000_000
