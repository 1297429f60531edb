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

Shapes: every call's ``input_shapes`` and ``output_shapes`` are the ones Keras recorded when
the model was built, batch axis included. A layer's own shape inference may leave a size
unknown although the model's inputs fix it (``EinsumDense`` with ``output_shape=(None, 256)``
records an unknown sequence axis), and variable-length inputs leave sizes unknown by design;
:func:`infer_shapes` recomputes them from concrete input shapes by tracing every call.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import keras
from keras import tree
from keras.src.backend import compute_output_spec


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


@dataclass
class ModelGraph:
    """The calls of a model in topological order, plus its input and output slots."""

    inputs: list[int]
    input_names: list[str]
    input_shapes: list[tuple]
    input_dtypes: list[str]
    outputs: list[int]
    calls: list[Call] = field(default_factory=list)

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
    """Flatten ``model`` (Functional or Sequential, nested models included) into calls."""
    function = as_function(model)
    if function is None:
        raise ValueError(
            f"cannot see the graph of {type(model).__name__} {getattr(model, 'name', '')!r}: "
            "AutoInit needs a Functional or Sequential model (subclassed models hide their graph)")
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


def _tensor_name(tensor: Any) -> str:
    history = getattr(tensor, "_keras_history", None)
    if history is not None and history.operation is not None:
        return history.operation.name
    return getattr(tensor, "name", "input")


def _walk(function: Any, input_slots: list[int], path: tuple[str, ...],
          calls: list[Call], counter: Iterator[int]) -> list[int]:
    local = {id(t): s for t, s in zip(function.inputs, input_slots)}
    for depth in sorted(function._nodes_by_depth, reverse=True):
        for node in function._nodes_by_depth[depth]:
            if node.operation is None or node.is_input:
                continue
            tensors = node.arguments.keras_tensors
            if any(id(t) not in local for t in tensors):
                continue  # not computable from the inputs (Keras skips these too)
            ins = [local[id(t)] for t in tensors]
            shapes_in = [tuple(t.shape) for t in tensors]
            shapes_out = [tuple(t.shape) for t in node.outputs]
            inner = as_function(node.operation)
            if inner is not None:
                outs = _walk(inner, ins, path + (node.operation.name,), calls, counter)
                calls.append(Call(node.operation, node, ins, outs, shapes_in, shapes_out,
                                  path, submodel=True))
            else:
                outs = [next(counter) for _ in node.outputs]
                calls.append(Call(node.operation, node, ins, outs, shapes_in, shapes_out, path))
            for tensor, slot in zip(node.outputs, outs):
                local[id(tensor)] = slot
    return [local[id(t)] for t in function.outputs]


def _assign_keys(calls: list[Call]) -> None:
    operations_by_name: dict[str, set[int]] = defaultdict(set)
    for call in calls:
        operations_by_name[call.operation.name].add(id(call.operation))
    seen: Counter = Counter()
    for call in calls:
        name = call.operation.name
        if len(operations_by_name[name]) > 1:
            name = "/".join(call.path + (name,))
        index = seen[(name, id(call.operation))]
        seen[(name, id(call.operation))] += 1
        call.key = name if index == 0 else f"{name}#{index}"


def known(shape: tuple | None) -> bool:
    """Whether every dimension of ``shape`` but the batch axis is known."""
    return shape is not None and all(d is not None for d in shape[1:])


def infer_shapes(graph: ModelGraph, shapes: list[tuple[int, ...]]) -> dict[str, str]:
    """Recompute every call's input and output shapes in place from ``shapes``, the concrete
    shape of each model input without the batch axis (the batch axis stays as recorded): each
    call is traced symbolically (``compute_output_spec`` of the real call, training mode, no
    state changed, no node added to the model) on tensors of the shapes its inputs got. Nothing
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
        call.input_shapes = [tuple(specs[s].shape) for s in call.inputs]
        if not call.submodel:
            try:
                outputs = tree.flatten(compute_output_spec(
                    lambda *xs: invoke(call.operation, call.node, list(xs)), *[specs[s] for s in call.inputs]))
                if len(outputs) != len(call.outputs) or not all(isinstance(o, keras.KerasTensor) for o in outputs):
                    raise ValueError(f"traced {len(outputs)} outputs, expected {len(call.outputs)} tensors")
            except Exception as err:  # the layer does not run on these sizes
                failures[call.key] = f"{type(err).__name__}: {err}"
                outputs = call.node.outputs
            specs.update(zip(call.outputs, outputs))
        call.output_shapes = [tuple(specs[s].shape) for s in call.outputs]
    return failures


def invoke(operation: Any, node: Any, inputs: list[Any], training: bool = True) -> list[Any]:
    """Call ``operation`` eagerly on ``inputs`` (one per keras tensor of ``node``'s
    arguments) with the node's constant arguments, as Keras's functional call would
    (``training`` injected where the operation takes it); the outputs as a flat list."""
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
