"""The one growth path: a request is planned, then its plan is built.

Every public entry point goes through here: `widen` and `deepen`
(`keras_net2net.surgery.api`) and `describe_growth`, `grow_in_place` and
`GrowModel` (`keras_net2net.growth`), and the tuner. The path is:

1. `plan_request` asks once which kind of plan a request makes: a KerasHub
   model of a registered family plans a request in its config vocabulary
   (`keras_net2net.families.plan_request`), anything else through its graph
   (`keras_net2net.surgery.plan`). `plan_traced` traces a subclassed layer
   that stands in the way into its layers and plans again.
2. The plan (a `keras_net2net.growth_plan.GrowthPlan`) builds the grown
   model and says where every variable comes from; `apply_requests` chains
   requests and composes their `Origins`, never asking what kind a plan is.
"""

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from keras_net2net import families
from keras_net2net._types import Model
from keras_net2net.growth_plan import GrowthPlan
from keras_net2net.growth_plan import Origins
from keras_net2net.requests import Deepen
from keras_net2net.requests import Request
from keras_net2net.requests import Requests
from keras_net2net.requests import Stack
from keras_net2net.requests import Upcycle
from keras_net2net.requests import Widen
from keras_net2net.requests import as_requests
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.graph import LayerGraph
from keras_net2net.surgery.handlers import is_opaque
from keras_net2net.surgery.inline import as_graph_model
from keras_net2net.surgery.inline import holds
from keras_net2net.surgery.inline import inline_layers
from keras_net2net.surgery.inline import opaque_holder
from keras_net2net.surgery.plan import plan_stack
from keras_net2net.surgery.plan import plan_widen
from keras_net2net.surgery.restore import restore_classes
from keras_net2net.surgery.subclassed import plan_deepen_or_copy
from keras_net2net.transforms import WidthTransform

# `found` not given: ask `families.find` (given None: not a family model).
ASK: Any = object()


def plan_request(
    model: Model, request: Request, *, layer: Any = None, found: Any = ASK
) -> GrowthPlan:
    """Plan ``request`` against ``model``: every change, checked, nothing built.

    Example:

    ```python
    plan = plan_request(model, Widen("fc1", 128))
    print("\\n".join(plan.describe()))
    grown, origins = plan.build(model)
    ```

    Args:
        model: a built Sequential or Functional model, or a KerasHub model.
        request: a `Widen` or `Deepen`.
        layer: the layer object the request names, where the caller has it.
            Defaults to None (the request's name is looked up).
        found: ``keras_net2net.families.find(model)``, where the caller has
            asked already. Defaults to asking here.

    Returns:
        A `keras_net2net.growth_plan.GrowthPlan`: a family plan where the
        request is in a KerasHub model's config vocabulary, else a graph plan.

    Raises:
        ValueError, TypeError: the request does not apply to ``model``.
    """
    family_plan = _plan_in_family(model, request, layer, found)
    if family_plan is not None:
        return family_plan
    return _plan_graph(model, request, layer)


def _plan_in_family(
    model: Model, request: Request, layer: Any, found: Any
) -> GrowthPlan | None:
    """The family plan of ``request``, or None where the graph plans it."""
    if found is ASK:
        found = families.find(model)
    if found is None:
        return None
    family_plan = families.plan_request(model, request, found=found)
    if family_plan is None and layer is None:
        _check_layer_name(model, request, found)
    return family_plan


def _plan_graph(model: Model, request: Request, layer: Any) -> GrowthPlan:
    """The graph plan of ``request``, by the planner of its class."""
    planner = _PLANNERS.get(type(request))
    if planner is None:
        known = ", ".join(sorted(t.__name__ for t in _PLANNERS))
        raise TypeError(
            f"No planner is registered for {type(request).__name__} requests "
            f"(known: {known}); see `register_planner`. Received: {request!r}"
        )
    return planner(model, request, layer=layer)


def _no_graph_upcycle(model: Model, request: Upcycle, *, layer: Any = None) -> Any:
    """An `Upcycle` of a model that is not a dense KerasHub LM: refused."""
    raise ValueError(
        "`model`: Upcycle turns a dense KerasHub causal LM into its "
        "mixture-of-experts class (LlamaCausalLM/MistralCausalLM -> "
        "MixtralCausalLM, QwenCausalLM -> QwenMoeCausalLM, Qwen3CausalLM -> "
        "Qwen3MoeCausalLM); Keras has no mixture-of-experts layer to upcycle "
        f"a {type(model).__name__} into. Received: model '{model.name}', "
        f"{request!r}"
    )


# The graph planner of each request class: ``planner(model, request, *,
# layer=None) -> Plan`` (``layer``: the layer object, where the caller has it).
_PLANNERS: dict[type, Callable[..., GrowthPlan]] = {
    Widen: plan_widen,
    Deepen: plan_deepen_or_copy,
    Stack: plan_stack,
    Upcycle: _no_graph_upcycle,
}


def register_planner(request_class: type, planner: Callable[..., GrowthPlan]) -> None:
    """Plan requests of ``request_class`` through a model's graph with ``planner``.

    A growth operator is a `keras_net2net.requests.Request` subclass and
    a planner; this is how the path finds the planner. A request that a
    KerasHub family plans in its config vocabulary is asked of the family
    first (`keras_net2net.families.plan_request`).

    Example:

    ```python
    register_planner(Widen, plan_widen)  # (built in)
    ```

    Args:
        request_class: a subclass of `keras_net2net.requests.Request`.
        planner: ``planner(model, request, *, layer=None)`` returning a
            `keras_net2net.growth_plan.GrowthPlan`; it checks everything and
            raises before anything changes.
    """
    if not (isinstance(request_class, type) and issubclass(request_class, Request)):
        raise TypeError(
            "`request_class` must be a subclass of keras_net2net.requests.Request. "
            f"Received: {request_class!r}"
        )
    if not callable(planner):
        raise TypeError(f"`planner` must be callable. Received: {planner!r}")
    _PLANNERS[request_class] = planner


def _check_layer_name(model: Model, request: Request, found: tuple) -> None:
    """A KerasHub model's unknown name: say which config entries it widens."""
    if not isinstance(request, Widen) or "/" in request.layer:
        return
    name = request.layer
    if name not in LayerGraph(model).names():
        valid = ", ".join(f"'{k}'" for k in found[0].widen_keys)
        raise ValueError(
            f"`layer`: {type(model).__name__} has no config entry or layer "
            f"'{name}' to widen. Config entries it widens: {valid}."
        )


def _targets(request: Request, layer: Any) -> list[Any]:
    """The layers (or names) a request grows: ``"block/part"`` names ``block``."""
    if layer is not None:
        return [layer]
    return [name.split("/", 1)[0] for name in request.targets()]


def plan_traced(
    model: Model, request: Request, *, layer: Any = None, found: Any = ASK
) -> tuple[GrowthPlan, Model, list[str]]:
    """`plan_request`, tracing the subclassed layers that stand in its way.

    Returns:
        ``(plan, model, traced)``, as `tracing` does.
    """

    # In a KerasHub model's config vocabulary first, before any tracing (a
    # traced model is a plain Functional model, of no family).
    family_plan = _plan_in_family(model, request, layer, found)
    if family_plan is not None:
        return family_plan, model, []
    return tracing(
        model,
        lambda current: _plan_graph(current, request, layer),
        _targets(request, layer),
    )


def tracing(
    model: Model, attempt: Callable[[Model], Any], targets: list[Any]
) -> tuple[Any, Model, list[str]]:
    """``attempt(model)``, tracing the subclassed layers that stand in its way.

    A subclassed model, or a subclassed layer without a handler on the way
    (`keras_net2net.surgery.handlers.NoHandler`) or holding one of
    ``targets`` (layers or names), is replaced by the Functional graph of its
    call (`keras_net2net.surgery.inline`), and ``attempt`` made again on the
    traced model.

    Returns:
        ``(what attempt returned, model, traced)``: ``model`` is the input
        model, or the new model with the subclassed layers inlined (sharing
        every layer). ``traced`` names each inlined layer.
    """
    traced: list[str] = []
    inlined: set[str] = set()
    graph_model = as_graph_model(model)
    if graph_model is not model:
        traced.append(f"the subclassed model {type(model).__name__}")
        model = graph_model
    while True:
        try:
            return attempt(model), model, traced
        except H.NoHandler as error:
            opaque = error.layer
            if not is_opaque(opaque) or len(traced) > 64:
                _name_traced(error, traced)
                raise
        except ValueError as error:
            holders = [opaque_holder(model, t) for t in targets if not holds(model, t)]
            holders = [h for h in holders if h is not None]
            if not holders or holders[0].name in inlined:
                _name_traced(error, traced)
                raise
            opaque = holders[0]
        model = inline_layers(model, [opaque])  # or its own refusal, by name
        traced.append(f"{type(opaque).__name__} '{opaque.name}'")
        inlined.add(opaque.name)


def _name_traced(error: Exception, traced: list[str]) -> None:
    """End ``error``'s message with the layers traced on the way (if any): an
    operation it names may be one of theirs, which the user never named. The
    error is re-raised as it is (its cause, e.g. the user's code that did not
    trace, kept)."""
    if traced and error.args and isinstance(error.args[0], str):
        where = ", ".join(traced)
        error.args = (f"{error.args[0]} (Traced on the way: {where}.)", *error.args[1:])


@dataclasses.dataclass
class GrowthResult:
    """What `apply_requests` built.

    Example:

    ```python
    result = keras_net2net.grow_in_place(model, Widen("fc1", 128))
    source, transforms = result.origins[id(model.get_layer("fc1").kernel)]
    ```

    Attributes:
        model: the grown model.
        descriptions: one line per request.
        origins: ``id(new variable)`` -> ``(old variable or None, transforms)``
            where ``transforms`` is the list of
            `keras_net2net.transforms.WidthTransform` that turned the old
            variable into the new one (empty: copied or shared; old variable
            None: a new variable).
        state_origins: as ``origins``, for the optimizer state: a copy of a
            layer (a copied residual block) starts from that layer's state.
        details: every plan's dry-run description lines.
        graphs: the intermediate models built on the way (in-place growth
            releases their graph nodes).
    """

    model: Model
    descriptions: list[str]
    origins: dict[int, tuple[Any, list[WidthTransform]]]
    state_origins: dict[int, tuple[Any, list[WidthTransform]]] = dataclasses.field(
        default_factory=dict
    )
    details: list[str] = dataclasses.field(default_factory=list)
    graphs: list[Model] = dataclasses.field(default_factory=list)


def apply_requests(
    model: Model,
    requests: Requests,
    *,
    reuse_layers: bool = False,
    name_failures: bool = False,
    compile: bool = True,
    found: Any = ASK,
) -> GrowthResult:
    """Apply several `Widen`/`Deepen` requests in order, as one growth.

    Every request is planned (and so validated) on the model as the previous
    requests left it. An empty list returns ``model`` itself, untouched.

    Example:

    ```python
    result = apply_requests(model, [Widen("fc1", 128), Deepen(after="fc1")])
    grown, lines = result.model, result.descriptions
    ```

    Args:
        model: a built Sequential or Functional model, or a KerasHub model.
        requests: a `Widen`/`Deepen` or a list of them.
        reuse_layers: share unchanged layers with ``model`` (in-place growth)
            instead of cloning them. Defaults to False.
        name_failures: prefix an error with the request that raised it.
            Defaults to False.
        compile: compile new models like ``model`` (see `widen`); False for
            dry runs and validation. Defaults to True.
        found: ``keras_net2net.families.find(model)``, where the caller has
            asked already. Defaults to asking here.

    Returns:
        A `GrowthResult`.
    """
    steps = [(request, None) for request in as_requests(requests)]
    return grow(model, steps, reuse_layers, name_failures, compile, found)


def grow(
    model: Model,
    steps: list[tuple[Request, Any]],
    reuse_layers: bool = False,
    name_failures: bool = False,
    compile: bool = True,
    found: Any = ASK,
) -> GrowthResult:
    """`apply_requests` of ``[(request, layer object or None)]``."""
    if found is ASK:
        found = families.find(model)
    result = GrowthResult(model, [], {})
    built: list[Origins] = []  # each growth's origins, in the model before it
    current = model
    for request, layer in steps:
        with _naming_failures(request, name_failures):
            plan, traced_model, traced = plan_traced(
                current, request, layer=layer, found=found
            )
            new_model, origins, plan, traced_model = _build_carrying(
                plan, traced_model, traced, request, layer, reuse_layers, compile
            )
            inside = traced and not reuse_layers  # nothing shared: compile
            if inside and compile and getattr(current, "compiled", False):
                # The traced model was never compiled: compile like the user's.
                new_model.compile_from_config(current.get_compile_config())
            kept: list[str] = []
            if inside:
                new_model, origins, kept = restore_classes(current, new_model, origins)
            built.append(origins)
        if traced_model is not model:
            result.graphs.append(traced_model)
        description = plan.description
        if traced:
            description += f" (traced into its layers: {', '.join(traced)}"
            description += f"; rebuilt as {', '.join(kept)})" if kept else ")"
        result.descriptions.append(description)
        result.details.extend(plan.describe())
        # A family plan keeps the class; a graph plan builds a plain model.
        found = families.find(new_model) if found is not None else None
        current = new_model
    result.model = current
    origins = Origins.unchanged(model)
    for step in built:
        origins = step.after(origins)
    result.origins, result.state_origins = origins.weights, origins.state
    return result


def _build_carrying(plan, model, traced, request, layer, reuse_layers, compile):
    """``plan.build``; an untouched subclassed layer that cannot be copied
    (no config round trip, variables of its own) is traced into its layers,
    which are, and the request planned again on the traced model.

    Returns:
        ``(new model, origins, plan, the model the plan was made on)``.
    """
    inlined: set[str] = set()
    while True:
        try:
            new_model, origins = plan.build(
                model, reuse_layers=reuse_layers, compile=compile
            )
            return new_model, origins, plan, model
        except H.NoHandler as error:
            opaque, failure = error.layer, error
            if not is_opaque(opaque) or opaque.name in inlined:
                _name_traced(error, traced)
                raise
            inlined.add(opaque.name)
        try:
            model = inline_layers(model, [opaque])
        except ValueError as refusal:  # it does not trace either: say why
            raise failure from refusal
        traced.append(f"{type(opaque).__name__} '{opaque.name}'")
        plan, model, more = plan_traced(model, request, layer=layer, found=None)
        traced.extend(more)


def check_request(model: Model, request: Request, *, found: Any = ASK) -> None:
    """Check that ``request`` applies to ``model``, without building anything.

    Planning is where every request is checked (layers found, widths valid,
    coupling groups growable); this stops there. Use `apply_requests` when
    the grown model is needed, e.g. to check a later request against it.

    Example:

    ```python
    check_request(model, Widen("fc1", 128))  # raises if it cannot apply
    ```

    Raises:
        ValueError, TypeError: the request does not apply; the message
            starts with the request.
    """
    with _naming_failures(request, True):
        plan_traced(model, request, found=found)


@contextlib.contextmanager
def _naming_failures(request, name_failures):
    try:
        yield
    except (ValueError, TypeError) as error:
        if not name_failures:
            raise
        raise type(error)(f"{request} failed: {error}") from error


__all__ = [
    "GrowthResult",
    "apply_requests",
    "check_request",
    "grow",
    "plan_request",
    "plan_traced",
    "register_planner",
    "tracing",
]
