"""The benchmark scripts run in their --quick mode (so they do not rot)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.scripts  # CI: TensorFlow, newest Keras

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
    hub = importlib.util.find_spec("keras_hub") is not None
    llama = ["--llama", "32"] if hub else []  # a tiny LlamaCausalLM row
    assert cost.main(["--quick", "--out", str(out), *llama]) == 0
    result = json.loads(out.read_text())
    if hub:
        (row,) = result["llama_rows"]
        assert row["event_s"] > 0 and row["params"] > 0
        # every variable changes shape: the new weights are the whole model
        assert row["new_mb"] * 2**20 == pytest.approx(row["params"] * 4 * 3, rel=0.01)
    operations = [r["operation"] for r in result["rows"]]
    assert operations == ["widen fc1 h -> 2h", "deepen after fc1"]
    for row in result["rows"] + result["tail_rows"]:
        assert row["event_s"] > 0 and row["new_mb"] > 0
        assert row["params"] > 0 and 0 < row["epoch_fraction"]
    assert result["rows"][0]["event_in_fit_s"] > 0
    assert "| operation |" in capsys.readouterr().out


def test_step_speed_quick(tmp_path, capsys):
    speed = load("step_speed")
    out, out_fixed = tmp_path / "speed.json", tmp_path / "fixed.json"
    assert speed.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    fixed = result["fixed_costs"]
    for ratio in (
        result["grown_vs_fresh"]["ratio"],
        result["growmodel_overhead"]["ratio"],
        fixed["fit"]["ratio"],
        fixed["event_vs_widen"]["ratio"],
        fixed["event_with_heap"]["ratio"],
    ):
        assert ratio["pairs"] == 3 and ratio["min"] <= ratio["median"] <= ratio["max"]
    assert fixed["event_with_heap"]["extra_objects"] == 200_000
    out = capsys.readouterr().out
    assert "| comparison |" in out and "extra Python objects alive" in out
    assert speed.main(["--quick", "--fixed-only", "--out", str(out_fixed)]) == 0
    assert set(json.loads(out_fixed.read_text())) == {"environment", "fixed_costs"}


def test_time_to_accuracy_quick(tmp_path, capsys):
    tta = load("time_to_accuracy")
    out = tmp_path / "tta.json"
    assert tta.main(["--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    mnist = result["tasks"]["mnist"]["runs"][0]["paths"]
    assert set(mnist) == {
        "wide: scratch",
        "deep: scratch",
        "wide: Net2WiderNet (two-stage)",
        "wide: random pad (two-stage)",
        "deep: Net2DeeperNet (two-stage)",
        "deep: random init (two-stage)",
        "wide: Net2WiderNet (GrowModel, one fit)",
        "deep: Net2DeeperNet (GrowModel, one fit)",
    }
    transformer = result["tasks"]["transformer"]["runs"][0]["paths"]
    assert set(transformer) == {
        "big: scratch",
        "big: grown from small (GrowModel, one fit)",
    }
    teacher = result["tasks"]["mnist"]["runs"][0]["teacher"]
    for name, path in {**mnist, **transformer}.items():
        points = path["points"]
        seconds = [p["seconds"] for p in points]
        assert seconds == sorted(seconds) and seconds[-1] <= path["seconds_total"]
        if "scratch" in name:
            assert points[0]["step"] == 0 and all(p["counts"] for p in points)
        elif "two-stage" in name:
            # The clock goes on from the teacher's: its time and steps come first.
            assert points[0]["seconds"] > teacher["seconds"] > 0
            assert points[0]["step"] == teacher["steps"]
        else:
            # One fit: the small model's points do not count; the first counted
            # one is the grown model before it trains.
            counts = [p["counts"] for p in points]
            assert not counts[0] and counts[-1] and counts == sorted(counts)
        for target, point in path["reached"].items():
            assert point["counts"] and point["val_accuracy"] >= float(target)
            earlier = [p for p in points if p["counts"] and p["step"] < point["step"]]
            assert all(p["val_accuracy"] < float(target) for p in earlier)
    assert "| path |" in capsys.readouterr().out


def test_lm_growth_quick(tmp_path, capsys):
    lm = load("lm_growth")
    out = tmp_path / "lm_growth.json"
    assert lm.main(["--quick", "--noise", "0", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["seeds"] == [0] and report["quick"] is True
    for key in ("compute_ratio_to_target", "wall_ratio_to_target"):
        assert set(report[key]) >= {"mean", "per_seed"}
    assert report["recipe"] == "stack"
    assert set(report["progressive"]["compute_ratio"]) >= {"mean", "per_seed"}
    assert set(report["warm_start"]["compute_ratio"]) >= {"mean", "per_seed"}
    run = report["runs"][0]["paths"]
    assert set(run) == {
        "scratch",
        "grown",
        "random",
        "restart",
        "stack",
        "stack_wsd",
        "late_stack",
        "scratch_wsd",
        "scratch@0.5",
    }
    assert run["scratch@0.5"]["points"][-1]["step"] == 12  # its own budget
    del run["scratch@0.5"]
    target = run["scratch"]["final"]
    for name, path in run.items():
        assert path["final"] == target, name  # every path ends at the target
        assert path["points"][-1]["step"] == report["config"]["steps"], name
    # The small model's paths see the same batches with the same optimizer
    # until the growth (step 12 of 24): the same validation loss at step 8.
    early = {
        name: [p["val_loss"] for p in run[name]["points"] if p["step"] <= 8]
        for name in ("grown", "random", "restart")
    }
    assert len(early["grown"]) == 2
    np.testing.assert_allclose(early["random"], early["grown"], rtol=1e-5)
    np.testing.assert_allclose(early["restart"], early["grown"], rtol=1e-5)
    # Every path trains on the same tokens; growing makes the early steps cheaper.
    assert run["grown"]["points"][-1]["flops"] < run["scratch"]["points"][-1]["flops"]
    # Growth is exact for the function-preserving path, not for the baseline.
    (grown,) = run["grown"]["val_loss_at_growth"].values()
    (random,) = run["random"]["val_loss_at_growth"].values()
    assert abs(grown["after"] - grown["before"]) < 1e-4 * grown["before"]
    assert random["before"] == pytest.approx(grown["before"], rel=1e-5)
    assert abs(random["after"] - random["before"]) > 1e-3
    # Stacking grows the 1-block model at the target width to its depth, with
    # the trained blocks kept (not function-preserving) at --stack-at.
    (stacked,) = run["stack"]["val_loss_at_growth"].values()
    assert abs(stacked["after"] - stacked["before"]) > 1e-4
    assert "copies kept as trained" in run["stack"]["events"][0]
    per_seed = report["per_seed"][0]
    assert per_seed["baseline"] in ("scratch", "scratch_wsd")
    assert "| path |" in capsys.readouterr().out
    assert lm.main(["--report", str(out)]) == 0
    assert "| grown |" in capsys.readouterr().out
    out.unlink()  # rebuilt from the seed file alone
    assert lm.main(["--quick", "--noise", "0", "--summarise", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["seeds"] == [0]


def test_keras_io_coverage_runs_on_some_models(tmp_path, capsys):
    coverage = load("keras_io_coverage")
    out = tmp_path / "io.json"
    models = ["conv1d_text", "wide_and_deep", "siamese"]
    assert coverage.main(["--models", *models, "--out", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["conv1d_text"]["exact"] == rows["conv1d_text"]["tried"] == 8
    assert rows["wide_and_deep"]["exact"] == rows["wide_and_deep"]["tried"] == 4
    # the shared embedding network grows (its tanh layers with residual
    # branches); its Lambda distance, traced, sums over the channels: refused,
    # naming the sum
    assert rows["siamese"]["exact"] == 5 and rows["siamese"]["exact_residual"] == 3
    assert any("Sum" in why for why in rows["siamese"]["refused"])
    assert "all: " in capsys.readouterr().out


def test_lm_upcycle_quick(tmp_path, capsys):
    pytest.importorskip("keras_hub")
    upcycle = load("lm_upcycle")
    out = tmp_path / "lm_upcycle.json"
    assert upcycle.main(["--quick", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    paths = report["runs"][0]["paths"]
    assert paths["upcycled"]["class"] == "MixtralCausalLM"
    assert paths["dense"]["class"] == "LlamaCausalLM"
    # Upcycling keeps the function: the loss right after equals the checkpoint's.
    before, after = paths["upcycled"]["points"][:2]
    assert before["step"] == after["step"] == 12
    assert abs(after["val_loss"] - before["val_loss"]) <= 1e-4
    # Equal extra compute: the dense path runs more steps than the MoE path.
    assert (
        paths["dense"]["points"][-1]["step"] > paths["upcycled"]["points"][-1]["step"]
    )
    extra = [report[p]["extra_flops"]["mean"] for p in ("dense", "upcycled")]
    assert abs(extra[0] - extra[1]) / extra[1] < 0.1
    assert "| upcycled |" in capsys.readouterr().out
