"""The public API is typed and documented: every public name has annotations
and a docstring with an example; the package ships py.typed."""

import inspect
from pathlib import Path

import pytest

import keras_net2net as kn

MODULES = [kn, kn.transforms, kn.surgery, kn.growth, kn.families]
PUBLIC = sorted(
    {(module.__name__, name) for module in MODULES for name in module.__all__},
)


def public_callables():
    for module_name, name in PUBLIC:
        module = __import__(module_name, fromlist=["_"])
        obj = getattr(module, name)
        if inspect.isclass(obj):
            yield f"{module_name}.{name}", obj.__init__
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member):
                    continue
                yield f"{module_name}.{name}.{attr}", member
        elif inspect.isfunction(obj):
            yield f"{module_name}.{name}", obj


def missing_annotations(fn):
    fn = inspect.unwrap(getattr(fn, "__func__", fn))
    if not inspect.isfunction(fn):
        return []
    signature = inspect.signature(fn)
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "cls") and p.annotation is inspect.Parameter.empty
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


def test_public_callables_are_annotated():
    gaps = {
        name: missing
        for name, fn in public_callables()
        if (missing := missing_annotations(fn))
        and getattr(fn, "__qualname__", "").split(".")[0] != "object"
    }
    assert not gaps, gaps


@pytest.mark.parametrize("module_name,name", PUBLIC)
def test_public_names_have_docstrings_with_examples(module_name, name):
    obj = getattr(__import__(module_name, fromlist=["_"]), name)
    if not (inspect.isclass(obj) or inspect.isfunction(obj)):
        return  # constants and submodules
    doc = inspect.getdoc(obj) or ""
    assert doc, f"{module_name}.{name} has no docstring"
    assert "Example" in doc, f"{module_name}.{name} has no example"


def test_package_is_typed():
    assert (Path(kn.__file__).parent / "py.typed").exists()


def _tiny_model():
    import keras

    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="out")(
        keras.layers.Dense(4, name="fc1")(inputs)
    )
    return keras.Model(inputs, outputs)


def test_old_operations_keyword_still_works_with_a_warning():
    model = _tiny_model()
    with pytest.warns(DeprecationWarning, match=r"grow_in_place.*`requests`"):
        kn.grow_in_place(model, operations=kn.Widen("fc1", 6))
    assert model.get_layer("fc1").units == 6
    with pytest.warns(DeprecationWarning, match=r"describe_growth.*`requests`"):
        text = kn.describe_growth(model, operations=kn.Widen("fc1", 8))
    assert "6 -> 8" in text
    assert "6 -> 8" in kn.describe_growth(model, requests=kn.Widen("fc1", 8))
    with pytest.raises(TypeError, match=r"both `requests` and .*`operations`"):
        kn.grow_in_place(model, [], operations=[])
    with pytest.raises(TypeError, match=r"missing the argument `requests`"):
        kn.describe_growth(model)
    record = kn.GrowthRecord(0, 1, "step 1", ("widen 'fc1' 4 -> 6",), 10, 14)
    with pytest.warns(DeprecationWarning, match=r"GrowthRecord\.requests"):
        assert record.operations == record.requests
    assert model.get_layer("fc1").units == 6
