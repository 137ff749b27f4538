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


def test_growth_cost_quick(tmp_path, capsys):
    cost = load("growth_cost")
    out = tmp_path / "cost.json"
    assert cost.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    operations = [r["operation"] for r in result["rows"]]
    assert operations == ["widen fc1 h -> 2h", "deepen after fc1"]
    for row in result["rows"] + result["tail_rows"]:
        assert row["event_s"] > 0 and row["new_mb"] > 0
        assert row["params"] > 0 and 0 < row["epoch_fraction"]
    assert result["rows"][0]["event_in_fit_s"] > 0
    assert "| operation |" in capsys.readouterr().out


def test_step_speed_quick(tmp_path, capsys):
    speed = load("step_speed")
    out = tmp_path / "speed.json"
    assert speed.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("grown_vs_fresh", "growmodel_overhead"):
        ratio = result[key]["ratio"]
        assert ratio["pairs"] == 3 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert "| comparison |" in capsys.readouterr().out
