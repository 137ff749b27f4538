"""The Python examples of the guides (docs/guides/*.md) run as written.

Convention (CONTRIBUTING.md): the ```python blocks of one guide run in order in
one namespace, so a block may use what an earlier block of the same page
defined; pages are independent. A block that imports keras_hub or uses
keras_net2net.tuner is skipped when that extra is not installed; the blocks
after it must not depend on it.
"""

import importlib.util
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.scripts  # CI: TensorFlow, newest Keras

GUIDES = Path(__file__).resolve().parents[1] / "docs" / "guides"
PAGES = sorted(GUIDES.glob("*.md"))
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def python_blocks(page):
    return FENCE.findall(page.read_text())


def missing_extra(block):
    """The extra a block needs and this environment lacks, or None."""
    if "keras_hub" in block and not importlib.util.find_spec("keras_hub"):
        return "keras-hub"
    tuner = "keras_tuner" in block or "keras_net2net.tuner" in block
    if tuner and not importlib.util.find_spec("keras_tuner"):
        return "tuner"
    return None


def test_guides_exist():
    assert len(PAGES) >= 6
    assert sum(len(python_blocks(page)) for page in PAGES) >= 8


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_guide_examples_run(page, capsys):
    namespace = {"__name__": f"guide_{page.stem.replace('-', '_')}"}
    skipped = []
    for index, block in enumerate(python_blocks(page)):
        extra = missing_extra(block)
        if extra:
            skipped.append(f"block {index} (the {extra} extra)")
            continue
        where = f"docs/guides/{page.name}[python block {index}]"
        exec(compile(block, where, "exec"), namespace)
    out = capsys.readouterr().out
    # A bare small float printed on its own line is an output difference.
    for value in re.findall(r"^(\d\.\d+e-\d+)$", out, flags=re.M):
        assert float(value) <= 1e-5
    if skipped:
        pytest.skip("not installed: " + ", ".join(skipped))
