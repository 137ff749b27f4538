"""Every example and benchmark script answers --help and points to its guide."""

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    [*ROOT.glob("examples/*.py"), *ROOT.glob("benchmarks/*.py")],
    key=lambda path: path.name,
)


@pytest.mark.parametrize("script", SCRIPTS, ids=[path.stem for path in SCRIPTS])
def test_help_points_to_a_guide(script, capsys):
    source = script.read_text()
    if "import keras_tuner" in source:
        pytest.importorskip("keras_tuner", reason="the tuner extra")
    spec = importlib.util.spec_from_file_location(f"help_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    guides = re.findall(r"(docs/guides/[\w-]+\.md)", " ".join(out.split()))
    assert guides, out
    for guide in guides:
        assert (ROOT / guide).is_file(), guide
