"""The Python examples in README.md run as written."""

import importlib.util
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2  # the quickstart and a GrowModel fit


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    if "import keras_hub" in BLOCKS[index] and not importlib.util.find_spec(
        "keras_hub"
    ):
        pytest.skip("keras-hub is not installed (the keras-hub extra)")
    if "keras_net2net.tuner" in BLOCKS[index] and not importlib.util.find_spec(
        "keras_tuner"
    ):
        pytest.skip("keras-tuner is not installed (the tuner extra)")
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
    out = capsys.readouterr().out
    for value in re.findall(r"^(\d\.\d+e-\d+)$", out, flags=re.M):
        assert float(value) <= 1e-5
