"""The bundled MNIST example, end to end in --quick mode."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.scripts  # CI: TensorFlow, newest Keras

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


def run_quick(out, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--verbose", "0"]
        + list(extra),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


@pytest.fixture(scope="module")
def quick_original(tmp_path_factory):
    """The original protocol over two seeds."""
    return run_quick(tmp_path_factory.mktemp("original"), "--seeds", "2")


@pytest.fixture(scope="module")
def quick_library(tmp_path_factory):
    """keras-net2net's own protocol, with the in-fit GrowModel run."""
    return run_quick(tmp_path_factory.mktemp("library"), "--protocol", "keras-net2net")


def check_rows(report, names):
    results = {r["name"]: r for r in report["results"]}
    assert list(results) == names
    for r in results.values():
        assert len(r["val_loss"]) == report["config"]["epochs"] + 1
        assert np.all(np.isfinite(r["val_loss"]))
        assert np.all(np.isfinite(r["val_accuracy"]))
    # the random baselines really start elsewhere
    teacher_final = results["teacher"]["val_loss"][-1]
    assert abs(results["deeper-random-init"]["val_loss"][0] - teacher_final) > 1e-2
    assert results["wider-random-pad"]["params"] == results["net2wider"]["params"]
    return results, teacher_final


def test_original_protocol_over_seeds(quick_original):
    out, stdout = quick_original
    report = json.loads((out / "results.json").read_text())
    config = report["config"]
    assert config["protocol"] == "original" and config["seeds"] == [1337, 1338]
    assert config["noise_on"] == "consumers" and config["pad_bias"] == 0.1
    assert [run["seed"] for run in report["runs"]] == [1337, 1338]
    for run in report["runs"]:
        check_rows({"results": run["results"], "config": config}, NAMES[:5])
        # noise-free students start exactly where the teacher ended
        for loss in run["checks"]["epoch0"].values():
            assert abs(loss - run["checks"]["teacher_final"]) <= 1e-4
        # net2deeper has no noise; net2wider's consumer noise moves it a little
        results = {r["name"]: r for r in run["results"]}
        teacher_final = results["teacher"]["val_loss"][-1]
        assert abs(results["net2deeper"]["val_loss"][0] - teacher_final) <= 1e-4
    summary = {r["name"]: r for r in report["summary"]}
    teachers = [run["results"][0]["val_loss"] for run in report["runs"]]
    np.testing.assert_allclose(summary["teacher"]["mean"], np.mean(teachers, axis=0))
    np.testing.assert_allclose(summary["teacher"]["std"], np.std(teachers, axis=0))
    claims = report["claims"]
    assert claims["net2wider <= random pad"]["of"] == 2  # 2 seeds x 1 epoch
    assert (
        claims["students at epoch 0 = teacher's final loss (noise off, 1e-4)"]["held"]
        == 4
    )
    table = (out / "results.md").read_text()
    assert "±" in table and "net2deeper < random init" in table
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 5 * (config["epochs"] + 1)
    png = (out / "val_loss.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    assert "total wall time" in stdout


def test_library_protocol_with_growmodel(quick_library):
    out, stdout = quick_library
    report = json.loads((out / "results.json").read_text())
    results, teacher_final = check_rows(report, NAMES)
    assert report["config"]["noise_on"] == "copies"
    for name in ("net2wider", "net2deeper"):
        assert abs(results[name]["val_loss"][0] - teacher_final) <= 1e-4, name
    # the in-fit run trains its own teacher phase: compare with its last epoch
    grown = results["growmodel-net2wider"]
    assert abs(grown["val_loss"][0] - grown["teacher_val_loss"][-1]) <= 1e-4
    assert grown["growth"]
    table = (out / "results.md").read_text()
    for r in results.values():
        assert r["label"] in table and r["label"] in stdout


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
