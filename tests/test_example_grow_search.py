"""examples/grow_search_mnist.py end to end in its --quick mode."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip(
    "keras_tuner", reason="the tuner extra: pip install 'keras-net2net[tuner]'"
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "grow_search_mnist.py"


def test_quick_run_compares_three_searches(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "results.json").read_text())
    (run,) = report["runs"]
    for name in ("grow-search", "random-search", "hyperband"):
        curve = run[name]["curve"]
        assert curve and run[name]["trials"] >= 2
        computes = [p["compute"] for p in curve]
        best = [p["best_val_accuracy"] for p in curve]
        assert computes == sorted(computes) and best == sorted(best)
        assert best[-1] == run[name]["best_val_accuracy"]
    # The best grown model's ancestry: a fresh root, then growth steps.
    lineage = run["grow-search"]["lineage"]
    assert lineage[0]["parent"] is None
    for earlier, later in zip(lineage, lineage[1:]):
        assert later["parent"] == earlier["trial_id"] and later["operations"]
        assert later["params"] > earlier["params"]
    assert json.loads((tmp_path / "lineage.json").read_text()) == [lineage]
    rows = report["rows"]
    assert {r["search"] for r in rows} == {"grow-search", "random-search", "hyperband"}
    assert "| grow-search |" in (tmp_path / "results.md").read_text()
