"""examples/grow_transformer.py end to end in a short --quick run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.scripts  # CI: TensorFlow, newest Keras

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "grow_transformer.py"


def test_quick_run_grows_and_compares_at_equal_compute(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--quick",
            "--steps",
            "160",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    (run,) = report["runs"]
    assert run["same_architecture"]  # grown == the big architecture
    small, big = run["params"]
    assert big > 5 * small
    at = run["val_loss_at_growth"]
    assert abs(at["before"] - at["after"]) <= 1e-5  # the function is preserved
    grown, scratch = run["grown"], run["scratch"]
    assert grown[0]["params"] == small and grown[-1]["params"] == big
    # equal compute: the scratch run ends where the grown run ended
    assert abs(scratch[-1]["compute"] - grown[-1]["compute"]) <= big * 32
    assert run["scratch_steps"] < report["config"]["steps"]
    assert (tmp_path / "loss_vs_compute.png").read_bytes().startswith(b"\x89PNG")
    assert "right before the growth" in proc.stdout
