"""examples/grow_search_mnist.py end to end in its --quick mode."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.scripts  # CI: TensorFlow, newest Keras

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
    budget = float(report["config"]["budget"])
    (run,) = report["runs"]
    stopped = 0
    for name in ("grow-search", "random-search", "hyperband"):
        curve = run[name]["curve"]
        assert curve and run[name]["trials"] >= 1
        computes = [p["compute"] for p in curve]
        best = [p["best_val_accuracy"] for p in curve]
        assert computes == sorted(computes) and best == sorted(best)
        assert best[-1] == run[name]["best_val_accuracy"]
        # The budget ends a search at the first epoch that reaches it.
        assert all(c < budget for c in computes[:-1])
        stopped += computes[-1] >= budget
    assert stopped >= 1  # the quick budget is small enough to bind
    rows = {r["search"]: r for r in report["rows"]}
    assert set(rows) == {"grow-search", "random-search", "hyperband"}
    target = rows["random-search"]["target"]
    assert rows["random-search"]["compute_to_target"] <= budget
    for name, row in rows.items():
        assert row["best_val_accuracy"] <= run[name]["best_val_accuracy"]
        reached = row["compute_to_target"] is not None
        assert reached == (row["best_val_accuracy"] >= target)
    summary = {e["search"]: e for e in report["summary"]}
    assert summary["random-search"]["reached_target"] == 1
    # Equal wall time: every search judged at the quickest one's end.
    shortest = min(run[name]["seconds"] for name in rows)
    for name, row in rows.items():
        assert row["shortest_seconds"] == shortest
        assert row["best_val_accuracy_by_shortest"] <= run[name]["best_val_accuracy"]
    assert max(r["best_val_accuracy_by_shortest"] for r in rows.values()) > 0
    # The best grown model's ancestry: a fresh root, then growth steps.
    lineage = run["grow-search"]["lineage"]
    assert lineage[0]["parent"] is None
    for earlier, later in zip(lineage, lineage[1:]):
        assert later["parent"] == earlier["trial_id"] and later["operations"]
        assert later["params"] > earlier["params"]
    assert json.loads((tmp_path / "lineage.json").read_text()) == [lineage]
    table = (tmp_path / "results.md").read_text()
    assert "| grow-search |" in table

    # --report renders the same tables from the saved results, without training.
    (tmp_path / "results.md").unlink()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--report", str(tmp_path / "results.json")],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "results.md").read_text() == table
