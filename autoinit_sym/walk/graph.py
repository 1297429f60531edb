"""A Keras model as a flat list of layer *calls* in topological order.

Every call of a layer or of a ``keras.ops`` operation becomes one :class:`Call`;
nested Functional and Sequential models are opened up (their inner calls appear in
place, with their inputs resolved to the outer tensors), and the nested model's own
output is recorded as a :class:`Call` with ``submodel=True`` after its inner calls.
Tensors are identified by integer *slots*: a shared layer or submodel called at two
sites gets distinct slots per site.

Keys (the names used in the estimates and by :func:`autoinit_sym.measure.measure`):
the layer name for a layer called once; ``name``, ``name#1``, ``name#2``, ... in
walk order for a layer called several times. When two distinct layers share a name
(possible across nested models), the name is prefixed with the enclosing submodel
names: ``outer/inner/name``.

Layers without a functional graph (subclassed layers and built subclassed models) are opened
by ``walk.tracing`` after the input sizes are known: their inner calls are recorded like a
nested model's, each with a :attr:`Call.site` that finds its node again at another batch size
(:func:`node_at`; a traced node's constant arguments may hold the batch size it was traced at).

Shapes: every call's ``input_shapes`` and ``output_shapes`` are the ones Keras recorded when
the model was built, batch axis included. A layer's own shape inference may leave a size
unknown although the model's inputs fix it (``EinsumDense`` with ``output_shape=(None, 256)``
records an unknown sequence axis), and variable-length inputs leave sizes unknown by design;
:func:`infer_shapes` recomputes them from concrete input shapes by tracing every call.
"""
from __future__ import annotations

import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import keras
from keras import tree
from keras.src.backend import compute_output_spec

from autoinit_sym.statistics.state import DiscreteValues

SMALL_INTEGERS = 2
"""An integer input that feeds no embedding and is not a mask is drawn from 0..SMALL_INTEGERS - 1."""


@dataclass
class Call:
    """One call of an operation: its input slots, output slots and their shapes."""

    operation: Any
    node: Any                      # the keras Node of this call
    inputs: list[int]
    outputs: list[int]
    input_shapes: list[tuple]
    output_shapes: list[tuple]
    path: tuple[str, ...] = ()     # names of the enclosing submodels
    submodel: bool = False         # True: a nested model's output, computed by its inner calls
    key: str = ""
    site: Any = None               # a call inside a traced layer: its place in the trace (walk.tracing)
    name: str = ""                 # the name keys are made from, when not the operation's own

    @property
    def label(self) -> str:
        """The name this call's key is made from."""
        return self.name or self.operation.name


@dataclass
class ModelGraph:
    """The calls of a model in topological order, plus its input and output slots."""

    inputs: list[int]
    input_names: list[str]
    input_shapes: list[tuple]
    input_dtypes: list[str]
    outputs: list[int]
    calls: list[Call] = field(default_factory=list)
    untraced: dict[int, str] = field(default_factory=dict)
    """id(layer) -> why a layer without a rule could not be opened (``walk.tracing``)."""
    tracer: Callable[[Call, list[Any]], list[Any] | None] | None = None
    """For :func:`infer_shapes`: a call's output specs from tracing its layer (``walk.tracing.Tracer``,
    which keeps the trace for opening the layer), or None to trace the call as a whole."""

    def calls_by_operation(self) -> dict[int, list[Call]]:
        """id(operation) -> its (non-submodel) calls, in walk order."""
        out: dict[int, list[Call]] = defaultdict(list)
        for call in self.calls:
            if not call.submodel:
                out[id(call.operation)].append(call)
        return out


def as_function(obj: Any) -> Any:
    """The functional graph of a Functional model or a built Sequential, else None."""
    if isinstance(obj, keras.Sequential):
        if getattr(obj, "_functional", None) is None:
            if not obj.built:
                raise ValueError(
                    f"Sequential model {obj.name!r} is not built: give it a keras.Input "
                    "as first layer or call model.build(input_shape) before initializing it")
            return None  # built without a functional graph (e.g. build() on a subclass)
        return obj._functional
    if hasattr(obj, "_nodes_by_depth") and hasattr(obj, "_inputs") and isinstance(obj, keras.Model):
        return obj
    return None


def build_graph(model: Any) -> ModelGraph:
    """Flatten ``model`` (Functional or Sequential, nested models included) into calls. A built
    subclassed model becomes one call of itself on inputs of the shapes it was built with, for
    ``walk.tracing.open_layers`` to open."""
    function = as_function(model)
    if function is None:
        return _subclassed_graph(model)
    counter = iter(range(1 << 62))
    input_slots = [next(counter) for _ in function.inputs]
    calls: list[Call] = []
    outputs = _walk(function, input_slots, (), calls, counter)
    graph = ModelGraph(
        inputs=input_slots,
        input_names=[_tensor_name(t) for t in function.inputs],
        input_shapes=[tuple(t.shape) for t in function.inputs],
        input_dtypes=[str(t.dtype) for t in function.inputs],
        outputs=outputs, calls=calls)
    _assign_keys(calls)
    return graph


def _subclassed_graph(model: Any) -> ModelGraph:
    """The one-call graph of a built subclassed model (see :func:`build_graph`): one input per
    shape it was built with (a single shape, or a list of shapes passed as one list)."""
    shapes = list((getattr(model, "_build_shapes_dict", None) or {}).values())
    if not (isinstance(model, keras.Model) and model.built and len(shapes) == 1):
        raise ValueError(
            f"cannot see the graph of {type(model).__name__} {getattr(model, 'name', '')!r}: AutoInit needs "
            "a Functional or Sequential model, or a subclassed model built by calling it once on one input "
            "(a tensor or a list of tensors)")
    shape = shapes[0]
    several = isinstance(shape, (list, tuple)) and bool(shape) and all(isinstance(s, (list, tuple)) for s in shape)
    input_shapes = [tuple(s) for s in shape] if several else [tuple(shape)]
    slots = list(range(len(input_shapes)))
    dtype = str(getattr(model, "compute_dtype", None) or "float32")
    names = [f"input_{i}" for i in slots] if several else ["input"]
    call = Call(model, None, slots, [len(slots)], input_shapes, [()], key=model.name)
    return ModelGraph(inputs=slots, input_names=names, input_shapes=input_shapes,
                      input_dtypes=[dtype] * len(slots), outputs=[len(slots)], calls=[call])


def _tensor_name(tensor: Any) -> str:
    history = getattr(tensor, "_keras_history", None)
    if history is not None and history.operation is not None:
        return history.operation.name
    return getattr(tensor, "name", "input")


def ordered_nodes(function: Any) -> list[Any]:
    """The operation nodes of a functional graph in the walk's order (deepest first)."""
    return [node for depth in sorted(function._nodes_by_depth, reverse=True)
            for node in function._nodes_by_depth[depth] if node.operation is not None and not node.is_input]


def _walk(function: Any, input_slots: list[int], path: tuple[str, ...], calls: list[Call],
          counter: Iterator[int], site: Callable[[int], Any] | None = None) -> list[int]:
    """Append the calls of ``function`` (inputs at ``input_slots``) to ``calls``; ``site(i)``
    gives the :attr:`Call.site` of its i-th node (:func:`ordered_nodes`) when it is a trace."""
    local = {id(t): s for t, s in zip(function.inputs, input_slots)}
    for index, node in enumerate(ordered_nodes(function)):
        tensors = node.arguments.keras_tensors
        if any(id(t) not in local for t in tensors):
            continue  # not computable from the inputs (Keras skips these too)
        ins = [local[id(t)] for t in tensors]
        shapes_in = [tuple(t.shape) for t in tensors]
        shapes_out = [tuple(t.shape) for t in node.outputs]
        where = None if site is None else site(index)
        if where is not None:
            _SITES[node] = where
        inner = as_function(node.operation)
        if inner is not None:
            outs = _walk(inner, ins, path + (node.operation.name,), calls, counter)
            calls.append(Call(node.operation, node, ins, outs, shapes_in, shapes_out,
                              path, submodel=True, site=where))
        else:
            outs = [next(counter) for _ in node.outputs]
            calls.append(Call(node.operation, node, ins, outs, shapes_in, shapes_out, path, site=where))
        for tensor, slot in zip(node.outputs, outs):
            local[id(tensor)] = slot
    return [local[id(t)] for t in function.outputs]


def walk_function(function: Any, input_slots: list[int], path: tuple[str, ...], counter: Iterator[int],
                  site: Callable[[int], Any]) -> tuple[list[Call], list[int]]:
    """The calls of a traced layer's graph ``function`` (see :func:`_walk`) and its output slots."""
    calls: list[Call] = []
    return calls, _walk(function, input_slots, path, calls, counter, site)


def assign_keys(graph: ModelGraph) -> None:
    """Give every call of ``graph`` its key (module docstring)."""
    _assign_keys(graph.calls)


def _assign_keys(calls: list[Call]) -> None:
    operations_by_name: dict[str, set[int]] = defaultdict(set)
    for call in calls:
        operations_by_name[call.label].add(id(call.operation))
    seen: Counter = Counter()
    for call in calls:
        name = call.label
        if len(operations_by_name[name]) > 1:
            name = "/".join(call.path + (name,))
        index = seen[(name, id(call.operation))]
        seen[(name, id(call.operation))] += 1
        call.key = name if index == 0 else f"{name}#{index}"


def input_values(graph: ModelGraph) -> list[DiscreteValues | None]:
    """What each integer or boolean model input holds (None for a floating-point one): a boolean
    input or one named like a mask, ones; one that a layer with a vocabulary (``input_dim``:
    Embedding and its subclasses) reads, ids uniform below the smallest such vocabulary; any other
    integer input, 0..SMALL_INTEGERS - 1."""
    out: list[DiscreteValues | None] = []
    for slot, name, dtype in zip(graph.inputs, graph.input_names, graph.input_dtypes):
        if "float" in dtype:
            out.append(None)
        elif "bool" in dtype or "mask" in name.lower():
            out.append(DiscreteValues(dtype, 1, 2))
        else:
            sizes = [int(call.operation.input_dim) for call in graph.calls
                     if slot in call.inputs and isinstance(getattr(call.operation, "input_dim", None), int)]
            out.append(DiscreteValues(dtype, 0, min(sizes) if sizes else SMALL_INTEGERS))
    return out


def known(shape: tuple | None) -> bool:
    """Whether every dimension of ``shape`` but the batch axis is known."""
    return shape is not None and all(d is not None for d in shape[1:])


def infer_shapes(graph: ModelGraph, shapes: list[tuple[int, ...]]) -> dict[str, str]:
    """Recompute every call's input and output shapes in place from ``shapes``, the concrete
    shape of each model input without the batch axis (the batch axis stays as recorded): each
    call is traced symbolically (``compute_output_spec`` of the real call, training mode, no
    state changed, no node added to the model; or ``graph.tracer``'s trace of its layer) on
    tensors of the shapes its inputs got. Nothing
    is traced when every recorded shape is already known. A call that cannot be traced keeps
    its recorded output shapes; the result maps its key to why."""
    graph.input_shapes = [(recorded[0], *shape) for recorded, shape in zip(graph.input_shapes, shapes)]
    if all(known(s) for s in graph.input_shapes) and all(
            known(s) for call in graph.calls for s in call.input_shapes + call.output_shapes):
        return {}
    specs = {slot: keras.KerasTensor(shape, dtype=dtype)
             for slot, shape, dtype in zip(graph.inputs, graph.input_shapes, graph.input_dtypes)}
    failures: dict[str, str] = {}
    for call in graph.calls:
        if call.site is not None:  # traced at concrete sizes already
            specs.update((s, keras.KerasTensor(shape, dtype=t.dtype))
                         for s, shape, t in zip(call.outputs, call.output_shapes, call.node.outputs))
            continue
        call.input_shapes = [tuple(specs[s].shape) for s in call.inputs]
        if call.node is None:  # a subclassed model, opened by tracing afterwards
            continue
        if not call.submodel:
            try:
                ins = [specs[s] for s in call.inputs]
                outputs = None if graph.tracer is None else graph.tracer(call, ins)
                if outputs is None:
                    outputs = _output_specs(call, ins)
                if len(outputs) != len(call.outputs) or not all(isinstance(o, keras.KerasTensor) for o in outputs):
                    raise ValueError(f"traced {len(outputs)} outputs, expected {len(call.outputs)} tensors")
            except Exception as err:  # the layer does not run on these sizes
                failures[call.key] = f"{type(err).__name__}: {err}"
                outputs = call.node.outputs
            specs.update(zip(call.outputs, outputs))
        call.output_shapes = [tuple(specs[s].shape) for s in call.outputs]
    return failures


SIZING_BATCH = 2
"""Batch size a call is traced at for its shapes when it fails on an unknown batch size (a
backend that cannot broadcast to a symbolic batch, as JAX's shape polymorphism)."""


def _output_specs(call: Call, specs: list[Any]) -> list[Any]:
    """The output specs of ``call`` on ``specs`` (``compute_output_spec`` of the real call); where
    that fails on an unknown batch size, traced at :data:`SIZING_BATCH` rows, the batch axis of
    every output of that size set back to unknown."""
    def run(*xs: Any) -> Any:
        return invoke(call.operation, call.node, list(xs))
    try:
        return tree.flatten(compute_output_spec(run, *specs))
    except Exception:
        if not specs or any(s.shape[:1] != (None,) for s in specs):
            raise
        sized = [keras.KerasTensor((SIZING_BATCH, *s.shape[1:]), dtype=s.dtype) for s in specs]
        outputs = tree.flatten(compute_output_spec(run, *sized))
        return [keras.KerasTensor((None, *y.shape[1:]), dtype=y.dtype)
                if isinstance(y, keras.KerasTensor) and y.shape[:1] == (SIZING_BATCH,) else y for y in outputs]


_SITES: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()
"""Node of a call inside a traced layer -> its :attr:`Call.site` (``walk.tracing.Site``)."""


def node_at(node: Any, batch: int | None) -> Any:
    """``node`` itself, or for a node recorded by tracing a layer at another batch size, the
    matching node of the layer traced at ``batch`` (its constant arguments may hold the batch)."""
    site = _SITES.get(node) if node is not None else None
    return node if site is None or batch is None else site.node_at(batch)


def _batch(values: list[Any]) -> int | None:
    for value in values:
        shape = getattr(value, "shape", None)
        if shape is not None and len(shape) > 0 and shape[0] is not None:
            return int(shape[0])
    return None


def invoke(operation: Any, node: Any, inputs: list[Any], training: bool = True) -> list[Any]:
    """Call ``operation`` eagerly on ``inputs`` (one per keras tensor of ``node``'s
    arguments) with the node's constant arguments, as Keras's functional call would
    (``training`` injected where the operation takes it); the outputs as a flat list. A node
    recorded by tracing a layer is first matched to the inputs' batch size (:func:`node_at`), and
    its operation taken from that node (an operation such as ``ops.reshape`` keeps its arguments,
    and so the traced batch size, on itself)."""
    matched = node_at(node, _batch(inputs))
    if matched is not node:
        node, operation = matched, matched.operation
    args, kwargs = node.arguments.fill_in({id(t): x for t, x in zip(node.arguments.keras_tensors, inputs)})
    if "training" in getattr(operation, "_call_context_args", {}):
        kwargs["training"] = training
    return tree.flatten(operation(*args, **kwargs))


def run_graph(graph: ModelGraph, inputs: list[Any], training: bool = True,
              visit: Callable[[Call, list[Any]], None] | None = None) -> dict[int, Any]:
    """Evaluate every call eagerly; ``visit(call, outputs)`` sees each call's outputs."""
    values = dict(zip(graph.inputs, inputs))
    for call in graph.calls:
        if call.submodel:
            outputs = [values[s] for s in call.outputs]
        else:
            outputs = invoke(call.operation, call.node, [values[s] for s in call.inputs], training)
            values.update(zip(call.outputs, outputs))
        if visit is not None:
            visit(call, outputs)
    return values
