"""The package's imports point one way: down the floors, with no cycle.

Read from the source with `ast` (every import counts: module level, inside
functions and under ``TYPE_CHECKING``), so that a new import that points up
the layers, or closes a cycle, fails here rather than in a reader's head.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "keras_net2net"

# Floors, bottom first: a module may import its own floor and those below.
# Within a floor, modules may import each other as long as there is no cycle.
FLOORS = [
    # plain data and argument checks
    ["_version", "_types", "_validation", "requests", "growth_plan"],
    # pure weight math (numpy)
    ["transforms"],
    # the same math on backend tensors, and initializers built on it
    ["_arrays", "initializers"],
    # every private Keras attribute
    ["_keras_internals"],
    # KerasHub families grown in their config vocabulary
    ["families"],
    # graph analysis, handlers, planning, building
    ["surgery"],
    # growth inside fit
    ["growth"],
    # search by growth
    ["tuner"],
    # the public re-exports
    [""],
]
MAX_LINES = 500


def modules():
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = modules()


def _resolve(name):
    """The module (or package) of ``MODULES`` that ``name`` refers to."""
    while name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def imports(module):
    """The package's modules that ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
                source = f"keras_net2net.{source}".rstrip(".")
            else:
                source = node.module or ""
            # ``from package import module`` imports the module; ``from
            # module import name`` the module.
            prefix = source.removeprefix("keras_net2net").lstrip(".")
            names = [
                f"{source}.{alias.name}"
                if f"{prefix}.{alias.name}".lstrip(".") in MODULES
                else source
                for alias in node.names
            ]
        for name in names:
            if name == "keras_net2net" or name.startswith("keras_net2net."):
                found.add(_resolve(name.removeprefix("keras_net2net").lstrip(".")))
    found.discard(module)
    return found


def floor(module):
    top = module.partition(".")[0]
    for index, names in enumerate(FLOORS):
        if top in names:
            return index
    raise AssertionError(f"module keras_net2net.{module} is on no floor")


GRAPH = {module: imports(module) for module in MODULES}


def test_every_module_is_on_a_floor():
    for module in MODULES:
        floor(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_points_up(module):
    upward = sorted(
        f"keras_net2net.{name}" for name in GRAPH[module] if floor(name) > floor(module)
    )
    assert not upward, f"keras_net2net.{module} imports a higher floor: {upward}"


def _cycle(graph):
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module):
        state[module] = 1
        path.append(module)
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                return path[path.index(name) :] + [name]
            if name not in state:
                found = visit(name)
                if found:
                    return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            found = visit(module)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_can_fail():
    """The import graph that this package had before the requests moved down."""
    planted = {name: set(deps) for name, deps in GRAPH.items()}
    planted["_types"] |= {"growth.schedule"}
    planted["growth.schedule"] |= {"_types"}
    assert _cycle(planted) == ["_types", "growth.schedule", "_types"]


def test_requests_import_only_the_bottom_floor():
    assert GRAPH["requests"] <= {"_types", "_validation"}


def test_modules_stay_readable():
    lines = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    over = {m: n for m, n in lines.items() if n > MAX_LINES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"


def test_no_test_module_is_over_the_size_cap():
    tests = Path(__file__).resolve().parent
    lines = {p.name: len(p.read_text().splitlines()) for p in tests.glob("*.py")}
    over = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not over, f"test modules over {MAX_LINES} lines: {over}"
