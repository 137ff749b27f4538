"""The benchmark scripts run in their --quick mode (so they do not rot)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "benchmarks" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_applications_coverage_quick(tmp_path, capsys):
    coverage = load("applications_coverage")
    out = tmp_path / "coverage.json"
    assert coverage.main(["--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows and rows[0]["tried"] == 12
    assert rows[0]["exact"] + sum(rows[0]["refused"].values()) == 12
    assert not rows[0]["errors"] and not rows[0]["not_exact"]
    assert "| model |" in capsys.readouterr().out
