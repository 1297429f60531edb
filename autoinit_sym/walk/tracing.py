"""Opening layers that have no rule of their own: trace their ``call()``.

A composite layer (a subclassed ``keras.layers.Layer`` whose ``call`` runs Keras layers and
``keras.ops``: a transformer block, a patch embedding) or a built subclassed ``keras.Model`` is
called through its ``call`` method on fresh symbolic tensors of the call's concrete input
shapes and dtypes, at a batch of :data:`TRACE_BATCH` rows (``training=True`` where it takes
``training``). Every inner layer call and operation then records a Keras node; the graph from
those inputs to the outputs (a ``keras.Function``) is walked like a nested functional model:
its calls take the place of the layer's call, keyed ``outer/inner`` where names clash, followed
by a ``submodel`` record of the layer's own outputs. An operation made during the trace is named
after its class, numbered in walk order within its layer (``add``, ``add_1``), not by Keras's
process-wide counter, so the keys are the same on every trace. An inner layer without a rule is traced in
turn.

A traced node's constant arguments may hold the batch size it was traced at (a causal mask
broadcast to ``(batch, length, length)``): evaluating a traced call on another batch size
retraces the layer at that size once and uses the matching node (:class:`Site`,
``graph.node_at``), so the walk, the probes, measurement and calibration run at any batch.

During a trace, an inner layer whose own ``compute_output_spec`` rejects its arguments (e.g. a
``cache`` keyword its parent class does not know) is traced through the backend's generic
``compute_output_spec`` of its ``call`` instead. The user's model is left as it was: the nodes
that symbolic calls append to the inner layers' inbound and outbound node lists are removed
again, so its config, summary and functional graph do not change.

What cannot be traced (Python control flow on tensor values, backend-only code, a call that
returns an input unchanged, unknown sizes) stays one call, probed with one warning that says
why (``ModelGraph.untraced``).
"""
from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from typing import Any, Callable, Iterator

import keras
from keras import tree
from keras.src.backend import compute_output_spec
from keras.src.ops.function import Function
from keras.src.utils.naming import to_snake_case

from autoinit_sym.walk.graph import Call, ModelGraph, as_function, assign_keys, known, ordered_nodes, walk_function

TRACE_BATCH = 2
"""Batch size layers are traced at (concrete: broadcasts to a batch of None fail)."""


class Trace:
    """One call of a layer, traced at any batch size on demand (nodes cached per batch).

    ``node`` is the layer's call node at :data:`TRACE_BATCH` (None for a subclassed model, whose
    inputs are passed as its one argument); ``site`` is where that node lies when the call is
    itself inside a traced layer (then its node at another batch comes from there)."""

    def __init__(self, layer: Any, node: Any, shapes: list[tuple], dtypes: list[str], site: "Site | None") -> None:
        self.layer, self.node, self.shapes, self.dtypes, self.site = layer, node, shapes, dtypes, site
        self.function = self._traced(TRACE_BATCH)
        self._nodes = {TRACE_BATCH: ordered_nodes(self.function)}

    def _traced(self, batch: int) -> Function:
        """The layer's graph at ``batch``: its call on fresh symbolic inputs."""
        specs = [keras.KerasTensor((batch, *shape[1:]), dtype=dtype) for shape, dtype in zip(self.shapes, self.dtypes)]
        if self.node is None:
            args, kwargs = ((specs[0],) if len(specs) == 1 else (specs,)), {}
        else:
            node = self.node if self.site is None else self.site.node_at(batch)
            args, kwargs = node.arguments.fill_in({id(t): s for t, s in zip(node.arguments.keras_tensors, specs)})
        if getattr(self.layer, "_call_has_training_arg", False) and kwargs.get("training") is None:
            kwargs["training"] = True
        with untouched(self.layer):  # the graph is read from the nodes before they are cut back
            outputs = tree.flatten(self.layer.call(*args, **kwargs))
            if not outputs or not all(isinstance(y, keras.KerasTensor) for y in outputs):
                raise ValueError("its call returned something other than symbolic tensors")
            if {id(y) for y in outputs} & {id(s) for s in specs}:
                raise ValueError("its call returns an input unchanged")
            return Function(specs, outputs)

    def nodes_at(self, batch: int) -> list[Any]:
        """The traced nodes at ``batch``, in walk order; ValueError if the graph differs from the
        one traced at :data:`TRACE_BATCH` (control flow on the batch size)."""
        if batch not in self._nodes:
            nodes, first = ordered_nodes(self._traced(batch)), self._nodes[TRACE_BATCH]
            if [_identity(n.operation) for n in nodes] != [_identity(n.operation) for n in first]:
                raise ValueError(f"layer {self.layer.name!r} traced at batch {batch} calls other layers or "
                                 f"operations than at batch {TRACE_BATCH}")
            self._nodes[batch] = nodes
        return self._nodes[batch]


def _identity(operation: Any) -> Any:
    """A layer by object, an operation made during a trace by its class."""
    return id(operation) if isinstance(operation, keras.layers.Layer) else type(operation)


class Site:
    """Where a call lies in a :class:`Trace`: its node at any batch size."""

    def __init__(self, trace: Trace, index: int) -> None:
        self.trace, self.index = trace, index

    def node_at(self, batch: int) -> Any:
        return self.trace.nodes_at(batch)[self.index]


@contextlib.contextmanager
def untouched(layer: Any) -> Iterator[None]:
    """Call ``layer`` symbolically without leaving a trace on it: its and its sublayers' inbound
    and outbound node lists are cut back afterwards, and inside, a sublayer whose own
    ``compute_output_spec`` fails on its arguments falls back to the backend's generic one."""
    layers = list(layer._flatten_layers(include_self=True, recursive=True))
    lengths = [(len(sub._inbound_nodes), len(sub._outbound_nodes)) for sub in layers]
    patched = [sub for sub in layers[1:] if "compute_output_spec" not in vars(sub)]
    for sub in patched:
        object.__setattr__(sub, "compute_output_spec", _tolerant(sub))
    try:
        yield
    finally:
        for sub in patched:
            vars(sub).pop("compute_output_spec", None)
        for sub, (inbound, outbound) in zip(layers, lengths):
            del sub._inbound_nodes[inbound:]
            del sub._outbound_nodes[outbound:]


def _tolerant(layer: Any) -> Callable[..., Any]:
    """``layer``'s own output spec, or the backend's trace of ``layer.call`` (generic) where the
    declared spec rejects the arguments (its error is raised if the trace fails too) or leaves
    a size unknown that the inputs fix (``EinsumDense(output_shape=(None, heads, dim))``)."""
    declared = type(layer).compute_output_spec.__get__(layer)

    def spec(*args: Any, **kwargs: Any) -> Any:
        try:
            out = declared(*args, **kwargs)
        except Exception as err:
            try:
                return compute_output_spec(layer.call, *args, **kwargs)
            except Exception:
                raise err from None
        if _unknown_size(out) and not _unknown_size((args, kwargs)):
            try:
                return compute_output_spec(layer.call, *args, **kwargs)
            except Exception:  # keep the declared spec
                return out
        return out
    return spec


def _unknown_size(structure: Any) -> bool:
    """Whether a symbolic tensor in ``structure`` has a size that is not known."""
    return any(isinstance(t, keras.KerasTensor) and None in tuple(t.shape) for t in tree.flatten(structure))


def _openable(call: Call, opens: Callable[[Any], bool]) -> bool:
    """Whether ``call`` is a call of a layer (not a functional model) that ``opens`` accepts."""
    layer = call.operation
    return not call.submodel and isinstance(layer, keras.layers.Layer) and as_function(layer) is None \
        and opens(layer)


class Tracer:
    """``ModelGraph.tracer``: while shapes are inferred, a call of a layer that ``opens`` accepts
    gets its output specs from a :class:`Trace` of the layer, kept (by id of the call) for
    :func:`open_layers`, so the layer is traced once instead of also being run as a whole."""

    def __init__(self, opens: Callable[[Any], bool]) -> None:
        self.opens = opens
        self.traces: dict[int, Trace] = {}

    def __call__(self, call: Call, specs: list[Any]) -> list[Any] | None:
        shapes = [tuple(s.shape) for s in specs]
        if not (_openable(call, self.opens) and call.node is not None and all(known(s) for s in shapes)):
            return None
        try:
            trace = Trace(call.operation, call.node, shapes, [str(s.dtype) for s in specs], call.site)
        except Exception:  # open_layers tries again and says why
            return None
        self.traces[id(call)] = trace
        batch = shapes[0][0] if shapes else None
        return [keras.KerasTensor((batch, *y.shape[1:]) if y.shape and y.shape[0] == TRACE_BATCH else y.shape,
                                  dtype=y.dtype) for y in trace.function.outputs]


def open_layers(graph: ModelGraph, opens: Callable[[Any], bool]) -> None:
    """Replace every call of a layer that ``opens(layer)`` accepts (and that is no functional
    model) by the calls traced inside it (module docstring), recursively; keys are reassigned.
    A trace kept by ``graph.tracer`` (:class:`Tracer`) is reused. A layer that cannot be traced
    stays one call and ``graph.untraced`` says why; a subclassed model that cannot be traced is
    a ValueError (nothing else shows its graph)."""
    slots = [s for call in graph.calls for s in call.inputs + call.outputs] + graph.inputs
    counter = itertools.count(max(slots, default=-1) + 1)
    traces = graph.tracer.traces if isinstance(graph.tracer, Tracer) else {}
    graph.calls = _opened(graph.calls, graph, opens, counter, traces)
    assign_keys(graph)


def _opened(calls: list[Call], graph: ModelGraph, opens: Callable[[Any], bool],
            counter: Iterator[int], traces: dict[int, Trace]) -> list[Call]:
    out: list[Call] = []
    for call in calls:
        layer = call.operation
        if not _openable(call, opens):
            out.append(call)
            continue
        try:
            inner = _open(call, graph, counter, traces.get(id(call)))
        except Exception as err:
            if call.node is None:
                raise ValueError(f"cannot see the graph of {type(layer).__name__} {layer.name!r}: it is a "
                                 f"subclassed model and tracing its call failed ({type(err).__name__}: {err})") from err
            graph.untraced.setdefault(id(layer), f"{type(err).__name__}: {err}")
            out.append(call)
            continue
        out.extend(_opened(inner[:-1], graph, opens, counter, traces))
        out.append(inner[-1])
    return out


def _open(call: Call, graph: ModelGraph, counter: Iterator[int], trace: Trace | None) -> list[Call]:
    """The calls traced inside ``call``'s layer (by ``trace`` when given) with their slots joined
    to the outer ones, then the layer's ``submodel`` record."""
    layer = call.operation
    if not all(known(s) for s in call.input_shapes):
        raise ValueError(f"its input shapes {call.input_shapes} are not fully known")
    dtypes = graph.input_dtypes if call.node is None else [str(t.dtype) for t in call.node.arguments.keras_tensors]
    if trace is None or [s[1:] for s in trace.shapes] != [s[1:] for s in call.input_shapes]:
        trace = Trace(layer, call.node, call.input_shapes, dtypes, call.site)
    inner, outs = walk_function(trace.function, call.inputs, call.path + (layer.name,), counter,
                                lambda index: Site(trace, index))
    if call.node is None:  # a subclassed model: its outputs are known only now
        call.outputs = graph.outputs = [next(counter) for _ in outs]
        call.output_shapes = [tuple(t.shape) for t in trace.function.outputs]
    if len(outs) != len(call.outputs) or len(set(outs)) != len(outs):
        raise ValueError(f"its call returned {len(outs)} distinct tensors where the model records "
                         f"{len(call.outputs)}")
    renamed = dict(zip(outs, call.outputs))
    made: Counter = Counter()
    for inner_call in inner:
        inner_call.inputs = [renamed.get(s, s) for s in inner_call.inputs]
        inner_call.outputs = [renamed.get(s, s) for s in inner_call.outputs]
        if not isinstance(inner_call.operation, keras.layers.Layer):
            base = to_snake_case(type(inner_call.operation).__name__)
            inner_call.name = base if not made[base] else f"{base}_{made[base]}"
            made[base] += 1
    record = Call(layer, call.node, call.inputs, call.outputs, call.input_shapes, call.output_shapes, call.path,
                  submodel=True, site=call.site)
    return inner + [record]


def frozen_inner_layers(graph: ModelGraph) -> set[int]:
    """id() of the layers called inside traced layers that own weights and are frozen
    (``trainable=False``): pretrained parts of a trainable block, which keep their weights."""
    return {id(call.operation) for call in graph.calls
            if call.site is not None and not call.submodel and isinstance(call.operation, keras.layers.Layer)
            and call.operation.weights and not call.operation.trainable}
