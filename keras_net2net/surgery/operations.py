"""Applying growth requests: plan each against the model, then build it.

`apply_requests` is the one path from requests (`keras_net2net.requests`)
to a grown model; `widen`, `deepen`, `describe_growth`
(`keras_net2net.surgery.api`), `grow_in_place` and `GrowModel` all use it.
"""

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any

from keras_net2net import families
from keras_net2net._types import Model
from keras_net2net.requests import Request
from keras_net2net.requests import Requests
from keras_net2net.requests import Widen
from keras_net2net.requests import as_requests
from keras_net2net.surgery import handlers as H
from keras_net2net.surgery.apply import apply_plan
from keras_net2net.surgery.inline import as_graph_model
from keras_net2net.surgery.inline import holds
from keras_net2net.surgery.inline import inline_layers
from keras_net2net.surgery.inline import is_opaque
from keras_net2net.surgery.inline import opaque_holder
from keras_net2net.surgery.plan import Plan
from keras_net2net.surgery.plan import plan_deepen
from keras_net2net.surgery.plan import plan_widen
from keras_net2net.transforms import WidthTransform


def _targets(request: Request) -> list[Any]:
    target = request.layer if isinstance(request, Widen) else request.after
    targets = target if isinstance(target, (list, tuple)) else [target]
    return [t.split("/", 1)[0] if isinstance(t, str) else t for t in targets]


def plan_traced(
    model: Model,
    request: Request | None,
    planner: Callable[[Model], Any] | None = None,
    targets: list[Any] | None = None,
) -> tuple[Any, Model, list[str]]:
    """`plan_request`, tracing the subclassed layers that stand in its way.

    A subclassed layer without a handler on the request's path, or holding
    its target, is replaced by the Functional graph of its call
    (`keras_net2net.surgery.inline`), and the request planned again.
    ``planner`` (a function of the model) replaces `plan_request`, and
    ``targets`` (layers or names) the request's own, where the caller has
    the layer objects.

    Returns:
        ``(plan, model, traced)``: ``model`` is the input model, or the new
        model with the subclassed layers inlined (sharing every layer); the
        plan (what ``planner`` returns) is for it. ``traced`` names each inlined layer.
    """
    traced: list[str] = []
    graph_model = as_graph_model(model)
    if graph_model is not model:
        traced.append(f"the subclassed model {type(model).__name__}")
        model = graph_model
    while True:
        try:
            if planner is None:
                assert request is not None
                return plan_request(model, request), model, traced
            return planner(model), model, traced
        except H.NoHandler as error:
            layer = error.layer
            if not is_opaque(layer) or len(traced) > 64:
                raise
        except ValueError as error:
            holders = [
                opaque_holder(model, t)
                for t in (_targets(request) if request is not None else targets or [])
                if not holds(model, t)
            ]
            holders = [h for h in holders if h is not None]
            if not holders:
                raise
            layer = holders[0]
            if layer.name in traced:
                raise error
        model = inline_layers(model, [layer])  # or its own refusal, by name
        traced.append(f"{type(layer).__name__} '{layer.name}'")


def plan_request(model: Model, request: Request) -> Plan | families.FamilyPlan:
    """Plan ``request`` against ``model``: every change, checked, nothing built.

    A KerasHub model of a registered family is planned in its config
    vocabulary where the request names a config entry or a block
    (`keras_net2net.families.plan_request`).

    Raises:
        ValueError, TypeError: the request does not apply to ``model``.
    """
    family_plan = families.plan_request(model, request)
    if family_plan is not None:
        return family_plan
    if isinstance(request, Widen):
        plan = plan_widen(
            model,
            request.layer,
            request.units,
            method=request.method,
            noise=request.noise,
            seed=request.seed,
            noise_on=request.noise_on,
            pad_std=request.pad_std,
            pad_bias=request.pad_bias,
        )
    else:
        plan = plan_deepen(
            model,
            request.after,
            method=request.method,
            kernel_size=request.kernel_size,
            seed=request.seed,
            name=request.name,
            residual=request.residual,
            init=request.init,
            blocks=request.blocks,
        )
    return plan.resolve()


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
        descriptions: one line per operation.
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


def _origins(plan, pairs, origins, state):
    """Where every variable of the new graph comes from (see `GrowthResult`).

    Returns ``(origins, state origins)``: they differ for copies of layers,
    whose weights are new (zeroed or copied) but whose optimizer state starts
    from the copied layer's.
    """
    Origins = dict[int, tuple[Any, list[WidthTransform]]]
    new_origins: Origins = {}
    new_state: Origins = {}
    for new, old in pairs:
        old_weights = list(getattr(old, "weights", [])) if old is not None else []
        transforms, values = plan.positions(old) if old is not None else ({}, {})
        copied_from = plan.copies.get(id(new)) if old is None else None
        # A rebuilt layer creates its variables in the same order as the old one.
        for position, variable in enumerate(getattr(new, "weights", [])):
            for base, out in ((origins, new_origins), (state, new_state)):
                if old is None:
                    out[id(variable)] = (None, [])
                    if copied_from is not None and out is new_state:
                        # A copy of a layer starts from that layer's state.
                        source = copied_from.weights[position]
                        out[id(variable)] = base.get(id(source), (None, []))
                elif new is old:
                    out[id(variable)] = base.get(id(variable), (None, []))
                elif position in values:
                    out[id(variable)] = (None, [])
                else:
                    source, chain = base.get(id(old_weights[position]), (None, []))
                    steps = list(transforms.get(position, []))
                    out[id(variable)] = (source, chain + steps)
    return new_origins, new_state


def apply_requests(
    model: Model,
    requests: Requests,
    *,
    reuse_layers: bool = False,
    name_failures: bool = False,
    compile: bool = True,
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
        model: a built Sequential or Functional model.
        requests: a `Widen`/`Deepen` or a list of them.
        reuse_layers: share unchanged layers with ``model`` (in-place growth)
            instead of cloning them. Defaults to False.
        name_failures: prefix an error with the request that raised it.
            Defaults to False.
        compile: compile new models like ``model`` (see `widen`); False for
            dry runs and validation. Defaults to True.

    Returns:
        A `GrowthResult`.
    """
    requests = as_requests(requests)
    origins: dict[int, tuple[Any, list[WidthTransform]]] = {
        id(v): (v, []) for v in model.weights
    }
    state = dict(origins)
    result = GrowthResult(model, [], origins, state_origins=state)
    current = model
    for request in requests:
        with _naming_failures(request, name_failures):
            plan, current, traced = plan_traced(current, request)
            if isinstance(plan, families.FamilyPlan):
                if reuse_layers:
                    raise TypeError(
                        f"{request} grows a KerasHub model in its config "
                        "vocabulary, which builds a new model; it cannot be "
                        "applied in place."
                    )
                new_model, found = families.build(current, plan, compile=compile)
                origins = _compose(found, origins)
                state = _compose(found, state)
            else:
                new_model, pairs = apply_plan(
                    current, plan, reuse_layers=reuse_layers, compile=compile
                )
                origins, state = _origins(plan, pairs, origins, state)
        if current is not model:
            result.graphs.append(current)
        description = plan.description
        if traced:
            description += f" (traced into its layers: {', '.join(traced)})"
        result.descriptions.append(description)
        result.details.extend(plan.describe())
        current = new_model
    result.model = current
    result.origins = origins
    result.state_origins = state
    return result


def _compose(found, base):
    """Origins of a family growth composed with the origins so far."""
    composed: dict[int, tuple[Any, list]] = {}
    for key, (source, steps) in found.items():
        if source is None:
            composed[key] = (None, [])
        else:
            first, chain = base.get(id(source), (None, []))
            composed[key] = (first, chain + steps)
    return composed


def check_request(model: Model, request: Request) -> None:
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
        plan_traced(model, request)


@contextlib.contextmanager
def _naming_failures(request, name_failures):
    try:
        yield
    except (ValueError, TypeError) as error:
        if not name_failures:
            raise
        raise type(error)(f"{request} failed: {error}") from error
