"""The walk: every layer call in topological order, from the input records to the output records
of each call. A shared layer is scaled for the input statistics pooled over its calls: the
order (:func:`schedule`) lets them be pooled within the pass, a chain of calls of one layer is
settled by Newton's method (:meth:`_Pass.settle`), and the walk is repeated until they settle.

The walk is pure estimation (no weight is sampled): ``context.pending`` collects the weights
to write, which happens only after every layer call has been estimated and checked.
"""
from __future__ import annotations

import heapq
import logging
import math
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from autoinit_sym.estimators.base import PASS_THROUGH, EstimationContext, LayerRule
from autoinit_sym.estimators.registry import lookup
from autoinit_sym.statistics.border_profile import spatial_shape
from autoinit_sym.statistics.methods import MEASURED
from autoinit_sym.statistics.state import FIELDS, DiscreteValues, TensorState, checked
from autoinit_sym.walk.graph import SMALL_INTEGERS, Call, ModelGraph, input_values
from autoinit_sym.walk.probe import ProbeEstimator, missing_estimator_warning, probe_impossible
from autoinit_sym.walk.results import LayerEstimate

logger = logging.getLogger("autoinit_sym")

INITIALIZED, KEPT = "initialized", "kept"
"""A layer call's role in the results: its weights were drawn, or kept and measured."""
MAX_PASSES = 20
"""Re-walks at most this often to settle the combined statistics of shared layers."""
SHARED_TOLERANCE = 1e-9
"""Relative change of the combined statistics below which shared layers are settled."""
SEGMENT_ITERATIONS = 30
"""Newton steps at most to find the fixed point of a chain of shared calls (:class:`Segment`)."""
NEWTON_STEP = 1e-6
"""Relative forward-difference step of the Newton Jacobian."""
NEWTON_SINGULAR = 1e-6
"""Smallest singular value of the Jacobian of F(x) - x (in means and log variances) at which a
settled fixed point is accepted; below it the statistics run off instead (:meth:`_Pass.settle`)."""
NEWTON_HALVINGS = 40
"""Halvings at most of a Newton step that does not shrink the residual."""


@dataclass
class WalkContext(EstimationContext):
    """The estimation context plus the combined input statistics of shared layers
    (id(layer) -> (means, vars)), which weighted layers scale their weights for, and the
    layers whose weights are kept (id(layer)): they are measured through the real layer,
    with their own weights, instead of being initialized."""

    shared_input_stats: "SharedStats" = field(default_factory=lambda: SharedStats())
    kept_layers: set[int] = field(default_factory=set)
    measured: dict[str, list[TensorState]] = field(default_factory=dict)
    """Output records measured through kept layers, by call key (``walk.measured``)."""
    untraced: dict[int, str] = field(default_factory=dict)
    """id(layer) -> why a layer without a rule could not be opened (``ModelGraph.untraced``)."""


def opens(context: WalkContext) -> Callable[[Any], bool]:
    """Which layers are opened by tracing (``walk.tracing``): those without a rule (user rules
    included) whose weights are not kept."""
    return lambda layer: id(layer) not in context.kept_layers and lookup(layer, context.custom_estimators) is None


def input_states(graph: ModelGraph, means: Sequence[float], variances: Sequence[float]) -> list[TensorState]:
    """The records of the model's inputs: N(mean, var) for a floating-point input; for an integer
    or boolean one, the values it is taken to hold (``graph.input_values``) and their statistics."""
    return [TensorState(m, v) if values is None else values.state()
            for m, v, values in zip(means, variances, input_values(graph))]


def discrete_output(state: TensorState, dtype: str, inputs: Sequence[TensorState]) -> TensorState:
    """``state`` for an output of ``dtype``: a floating-point one holds no discrete values; an
    integer or boolean one keeps what its rule said, else its first discrete input's values (a
    cast, a reshape), else ones for a boolean and 0..SMALL_INTEGERS - 1 for an integer."""
    if "float" in dtype:
        return state if state.discrete is None else state.replace(discrete=None)
    if state.discrete is not None:
        return state
    values = next((s.discrete for s in inputs if s.discrete is not None), None)
    if values is None or values.dtype != dtype:
        low, high = (values.low, values.high) if values is not None else (1, 2) if "bool" in dtype else (0, SMALL_INTEGERS)
        values = DiscreteValues(dtype, low, high)
    return state.replace(discrete=values)


def _pooled(inputs: list[Sequence[TensorState]]) -> tuple[list[float], list[float]]:
    """Means and variances pooled over the input records of several calls (one list per call):
    mean of means, mean of second moments."""
    means, variances = [], []
    for i in range(len(inputs[0])):
        mean = sum(ins[i].mean for ins in inputs) / len(inputs)
        second = sum(ins[i].second_moment for ins in inputs) / len(inputs)
        means.append(mean)
        variances.append(max(second - mean * mean, 0.0))
    return means, variances


def _settled(old: Mapping, new: Mapping) -> bool:
    if set(old.keys()) != set(new.keys()):
        return False
    for key, (means, variances) in new.items():
        for a, b in zip(means + variances, old[key][0] + old[key][1]):
            if not abs(a - b) <= SHARED_TOLERANCE * (1.0 + abs(a)):
                return False
    return True


class SharedStats(Mapping):
    """The combined input statistics of shared layers (id(layer) -> (means, vars)) as the rules
    read them; while :attr:`read` is a dict, every lookup is logged there (id(layer) -> what it
    found, None for nothing), so that a call's cached outputs can be reused exactly when what
    its rule read is unchanged."""

    def __init__(self, values: Mapping[int, tuple[list[float], list[float]]] | None = None) -> None:
        self.values: dict[int, tuple[list[float], list[float]]] = dict(values or {})
        self.read: dict[int, Any] | None = None

    def __getitem__(self, key: int) -> tuple[list[float], list[float]]:
        value = self.values.get(key)
        if self.read is not None:
            self.read.setdefault(key, value)
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[int]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Segment:
    """A stretch ``order[start:end + 1]`` of a :class:`Schedule` holding every call of the
    ``layers`` (ids) that are called in a chain (a call's input depends on an earlier call of
    the same layer): it is re-evaluated until their combined statistics settle."""

    start: int
    end: int
    layers: dict[int, list[int]]
    """id(layer) -> the indices of its calls."""


@dataclass
class Schedule:
    """The order a pass evaluates ``graph.calls`` in (``order``: indices), the calls at which a
    shared layer's combined statistics are pooled from the inputs of all its calls, known by
    then (``combine_at``: index -> id(layer) and the indices of its calls), and the
    :class:`Segment` starting at each position of ``order`` (``segments``). The plain schedule
    (graph order, nothing pooled in the pass, no segment) is Jacobi iteration: each pass reads
    the combined statistics of the previous one."""

    order: list[int]
    combine_at: dict[int, tuple[int, list[int]]] = field(default_factory=dict)
    segments: dict[int, Segment] = field(default_factory=dict)

    @classmethod
    def plain(cls, graph: ModelGraph) -> "Schedule":
        """Graph order, nothing pooled within a pass, no segment."""
        return cls(list(range(len(graph.calls))))


def schedule(graph: ModelGraph) -> Schedule:
    """The Gauss–Seidel schedule of ``graph``: among the topological orders, the one that takes
    the earliest call in graph order that can go, except that a shared layer's first call waits
    until the inputs of all its calls are known while some other call can go. A layer whose
    calls all wait so is pooled at its first call (exact in one pass); a layer whose first call
    must go before (a chain) gets a :class:`Segment` over its calls. A graph without shared
    layers keeps its order."""
    calls = graph.calls
    producer = {slot: i for i, call in enumerate(calls) if not call.submodel for slot in call.outputs}
    dependents: dict[int, list[int]] = defaultdict(list)
    waiting = []
    for i, call in enumerate(calls):
        needs = {producer[s] for s in (call.outputs if call.submodel else call.inputs) if s in producer}
        needs.discard(i)
        waiting.append(len(needs))
        for j in needs:
            dependents[j].append(i)
    index_of = {id(call): i for i, call in enumerate(calls)}
    members = {op: [index_of[id(c)] for c in group]
               for op, group in graph.calls_by_operation().items() if len(group) > 1}
    layer_of = {i: op for op, indices in members.items() for i in indices}
    ready_count: Counter = Counter(layer_of[i] for i, w in enumerate(waiting) if w == 0 and i in layer_of)
    deferred: dict[int, list[int]] = defaultdict(list)
    started: dict[int, bool] = {}  # id(layer) -> pooled in the pass (True) or chained (False)
    heap = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while len(order) < len(calls):
        if not heap:  # only first calls of chained layers can go: start the earliest
            op = min((op for op in deferred if deferred[op]), key=lambda o: min(deferred[o]))
            started[op] = False
            for i in deferred.pop(op):
                heapq.heappush(heap, i)
            continue
        i = heapq.heappop(heap)
        op = layer_of.get(i)
        if op is not None and op not in started:
            if ready_count[op] < len(members[op]):
                deferred[op].append(i)
                continue
            started[op] = True
        order.append(i)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(heap, j)
                other = layer_of.get(j)
                if other is not None:
                    ready_count[other] += 1
                    if ready_count[other] == len(members[other]) and deferred.get(other):
                        for k in deferred.pop(other):
                            heapq.heappush(heap, k)
    position = {i: p for p, i in enumerate(order)}
    plan = Schedule(order)
    spans = []
    for op, pooled in started.items():
        places = sorted(position[i] for i in members[op])
        if pooled:
            plan.combine_at[order[places[0]]] = (op, members[op])
        else:
            spans.append((places[0], places[-1], op))
    for start, end, op in sorted(spans):
        last = plan.segments[max(plan.segments)] if plan.segments else None
        if last is not None and start <= last.end:
            last.end = max(last.end, end)
            last.layers[op] = members[op]
        else:
            plan.segments[start] = Segment(start, end, {op: members[op]})
    return plan


def estimate(graph: ModelGraph, context: WalkContext,
             inputs: Sequence[TensorState]) -> "OrderedDict[str, LayerEstimate]":
    """Walk ``graph`` from the model inputs' records in its :func:`schedule`, re-walking until
    shared layers' combined statistics settle (one pass, unless a chain spans layers whose
    segments feed each other); ``context.pending`` then holds the weights to write."""
    shared = {op: calls for op, calls in graph.calls_by_operation().items() if len(calls) > 1}
    warned: set[int | str] = set()
    plan, cache = schedule(graph), {}
    context.shared_input_stats = SharedStats()
    for _ in range(MAX_PASSES):
        context.pending.clear()
        results = walk(graph, context, inputs, warned, plan, cache)
        combined = {op: _pooled([results[c.key].inputs for c in calls]) for op, calls in shared.items()}
        if _settled(context.shared_input_stats, combined):
            break
        context.shared_input_stats = SharedStats(combined)
    else:
        logger.warning("the combined input statistics of shared layers did not settle in %d "
                       "passes; using the last pass", MAX_PASSES)
    for op, calls in shared.items():
        for call in calls:
            results[call.key].init_means_in, results[call.key].init_vars_in = combined[op]
    return results


def walk(graph: ModelGraph, context: WalkContext, inputs: Sequence[TensorState], warned: set[int | str],
         plan: Schedule | None = None, cache: dict[int, "_Cached"] | None = None
         ) -> "OrderedDict[str, LayerEstimate]":
    """One pass in the order of ``plan`` (default :meth:`Schedule.plain`): each call's rule maps
    its input records to its output records (a nested model's call reads the records its inner
    calls left); the results in graph order. ``warned`` holds the ids of layers warned about a
    missing rule and the keys of calls reported as passed through, so that re-walks warn no
    more; ``cache`` (call index -> :class:`_Cached`) keeps calls' outputs across passes."""
    if not isinstance(context.shared_input_stats, SharedStats):
        context.shared_input_stats = SharedStats(context.shared_input_stats)
    walker = _Pass(graph, context, inputs, warned, {} if cache is None else cache)
    walker.run(plan or Schedule.plain(graph))
    return OrderedDict((call.key, walker.results[i]) for i, call in enumerate(graph.calls))


@dataclass
class _Cached:
    """A call's outputs and the weights its rule scheduled (``changes``: pending key -> write),
    valid while its inputs, the shared statistics its rule read (``read``) and the number of
    weights scheduled before it (the seeds go by position) are the same."""

    inputs: list[TensorState]
    read: dict[int, Any]
    scheduled: int
    outputs: list[TensorState]
    method: str
    changes: list[tuple[int, Any]]

    def valid(self, inputs: Sequence[TensorState], context: WalkContext) -> bool:
        stats = context.shared_input_stats.values
        return (self.scheduled == len(context.pending) and _same_records(self.inputs, inputs)
                and all(stats.get(op) == value for op, value in self.read.items()))


def _same_records(a: Sequence[TensorState], b: Sequence[TensorState]) -> bool:
    """Whether two lists of records hold the same values (arrays compared element by element;
    a field that cannot be compared counts as different)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x is y:
            continue
        for name in FIELDS:
            u, v = getattr(x, name), getattr(y, name)
            if u is v:
                continue
            try:
                if isinstance(u, np.ndarray) or isinstance(v, np.ndarray):
                    if not (np.shape(u) == np.shape(v) and np.array_equal(u, v)):
                        return False
                elif not bool(u == v):
                    return False
            except (TypeError, ValueError):
                return False
    return True


class _Pass:
    """One walk pass: the record and method of every slot and each call's estimate."""

    def __init__(self, graph: ModelGraph, context: WalkContext, inputs: Sequence[TensorState],
                 warned: set[int | str], cache: dict[int, _Cached]) -> None:
        self.graph, self.context, self.warned, self.cache = graph, context, warned, cache
        self.states: dict[int, TensorState] = dict(zip(graph.inputs, inputs))
        self.method_of: dict[int, str] = {}
        self.results: dict[int, LayerEstimate] = {}
        context.untraced = graph.untraced
        context.call_positions = {id(call.node): position for position, call in enumerate(graph.calls)}

    def run(self, plan: Schedule) -> None:
        """Evaluate every call in ``plan``'s order, settling each segment on the way."""
        position = 0
        while position < len(plan.order):
            segment = plan.segments.get(position)
            if segment is None:
                self.step(plan, position)
                position += 1
            else:
                self.settle(plan, segment)
                position = segment.end + 1

    def inputs_of(self, indices: Sequence[int]) -> list[list[TensorState]]:
        """The input records of the calls at ``indices``, one list per call."""
        return [[self.states[s] for s in self.graph.calls[i].inputs] for i in indices]

    def step(self, plan: Schedule, position: int) -> None:
        """Evaluate the call at ``position``, first pooling its layer's statistics there."""
        index = plan.order[position]
        pooled = plan.combine_at.get(index)
        if pooled is not None:
            op, members = pooled
            self.context.shared_input_stats.values[op] = _pooled(self.inputs_of(members))
        self.evaluate(index)

    def settle(self, plan: Schedule, segment: Segment) -> None:
        """Re-evaluate ``segment`` until the combined statistics of its chained layers are a
        fixed point x = F(x) (F: the statistics pooled from the inputs that the segment's calls
        get when the layers are scaled for x), found by Newton's method on F(x) - x in means and
        log variances (forward-difference Jacobian, step halved until the residual shrinks);
        raise where no finite fixed point is found: none within the steps, or statistics that
        settle only in relative terms while running off to infinity or zero (F(x) - x in logs
        vanishing with its Jacobian: the smallest singular value of the last Jacobian below
        :data:`NEWTON_SINGULAR`). The records left are those of the last evaluation, at the
        fixed point."""
        stats = self.context.shared_input_stats.values
        layers = list(segment.layers)
        counts = [len(self.graph.calls[segment.layers[op][0]].inputs) for op in layers]

        def residual(point: np.ndarray) -> np.ndarray:
            stats.update(_decoded(point, layers, counts))
            for position in range(segment.start, segment.end + 1):
                self.step(plan, position)
            found = {op: _pooled(self.inputs_of(segment.layers[op])) for op in layers}
            return _encoded(found, layers) - point

        for position in range(segment.start, segment.end + 1):  # at the statistics known, if any
            self.step(plan, position)
        point = _encoded({op: _pooled(self.inputs_of(segment.layers[op])) for op in layers}, layers)
        error: Exception | None = None
        conditioning = math.inf
        for _ in range(SEGMENT_ITERATIONS):
            used = _decoded(point, layers, counts)
            value = residual(point)
            found = _decoded(point + value, layers, counts)
            if _settled(used, found):
                if conditioning > NEWTON_SINGULAR:
                    return
                break
            jacobian = np.empty((len(point), len(point)))
            for k in range(len(point)):
                shift = NEWTON_STEP * (1.0 + abs(point[k]))
                moved = point.copy()
                moved[k] += shift
                jacobian[:, k] = (residual(moved) - value) / shift
            conditioning = float(np.linalg.svd(jacobian, compute_uv=False).min())
            try:
                step = -np.linalg.solve(jacobian, value)
            except np.linalg.LinAlgError:
                step = value  # a singular Jacobian: a plain iteration step
            norm = float(np.linalg.norm(value))
            for _ in range(NEWTON_HALVINGS):
                try:
                    trial = residual(point + step)
                    if np.all(np.isfinite(trial)) and np.linalg.norm(trial) < norm:
                        point = point + step
                        break
                except (ValueError, ArithmeticError) as err:
                    error = err
                step = step / 2.0
            else:
                break
        names = sorted({self.graph.calls[members[0]].label for members in segment.layers.values()})
        raise ValueError(f"the shared layers {names} are called in a chain whose combined input statistics "
                         "have no finite fixed point that Newton's method finds (the statistics the layers "
                         "are scaled for do not reproduce themselves, or reproduce themselves only as they "
                         "run off to infinity or zero): such weights cannot be scaled for their combined "
                         "inputs") from error

    def evaluate(self, index: int) -> None:
        """The estimate of call ``index``: its rule's outputs, or the cached ones where what the
        rule reads is unchanged (the weights it scheduled are scheduled again)."""
        call, context = self.graph.calls[index], self.context
        ins = [self.states[s] for s in call.inputs]
        weights: dict[str, float] = {}
        if call.submodel:
            outs = [self.states[s] for s in call.outputs]
            method = self.method_of.get(call.outputs[0], "exact")
        elif call.key in context.measured:
            outs, method = context.measured[call.key], MEASURED
        else:
            hit = self.cache.get(index)
            if hit is None or not hit.valid(ins, context):
                hit = self.cache[index] = self._propagate(call, ins)
            outs, method = hit.outputs, hit.method
            context.pending.update(hit.changes)
            weights = {p.variable.path: p.stddev for _, p in hit.changes}
        if not call.submodel:
            self.states.update(zip(call.outputs, outs))
            self.method_of.update((s, method) for s in call.outputs)
        role = KEPT if id(call.operation) in context.kept_layers else INITIALIZED if weights else ""
        self.results[index] = LayerEstimate(call.key, call.label, method, ins, outs, weights=weights, role=role)

    def _propagate(self, call: Call, ins: list[TensorState]) -> _Cached:
        """Run the rule of ``call`` on ``ins``, logging the shared statistics it reads."""
        context = self.context
        rule = rule_for_call(call, context, self.warned)
        before = {k: id(p) for k, p in context.pending.items()}
        scheduled = len(context.pending)
        context.shared_input_stats.read = read = {}
        try:
            outs = _outputs(rule.propagate(ins), call, ins)
        except Exception as err:
            err.add_note(f"while estimating layer call {call.key!r} ({type(call.operation).__name__})")
            raise
        finally:
            context.shared_input_stats.read = None
        method = getattr(rule, "method", "exact")
        if method == PASS_THROUGH:
            _report_pass_through(call, rule, self.warned)
        changes = [(k, p) for k, p in context.pending.items() if before.get(k) != id(p)]
        return _Cached(ins, read, scheduled, outs, method, changes)


def _encoded(stats: Mapping[int, tuple[list[float], list[float]]], layers: list[int]) -> np.ndarray:
    """The combined statistics of ``layers`` as one vector: each layer's means, then the logs of
    its variances (floored at 1e-300)."""
    return np.array([x for op in layers for x in stats[op][0] + [math.log(max(v, 1e-300)) for v in stats[op][1]]])


def _decoded(point: np.ndarray, layers: list[int], counts: list[int]) -> dict[int, tuple[list[float], list[float]]]:
    """The inverse of :func:`_encoded` (``counts``: each layer's number of inputs)."""
    out, at = {}, 0
    for op, count in zip(layers, counts):
        out[op] = ([float(x) for x in point[at:at + count]],
                   [math.exp(float(x)) for x in point[at + count:at + 2 * count]])
        at += 2 * count
    return out


def _outputs(result: TensorState | Sequence[TensorState], call: Call,
             inputs: Sequence[TensorState]) -> list[TensorState]:
    """A rule's result as one checked record per output of ``call``, integer and boolean outputs
    with the values they hold (:func:`discrete_output`)."""
    states = [result] if isinstance(result, TensorState) else list(result)
    count = max(len(call.outputs), 1)
    if len(states) == 1 and count > 1:
        states = states * count
    if len(states) != count or not all(isinstance(s, TensorState) for s in states):
        raise ValueError(f"the rule of layer call {call.key!r} returned {result!r}; expected {count} "
                         "TensorState record(s)")
    shapes = call.output_shapes or [None] * count
    dtypes = [str(t.dtype) for t in call.node.outputs] if call.node is not None else []
    if len(dtypes) == count:
        states = [discrete_output(s, dtype, inputs) for s, dtype in zip(states, dtypes)]
    return [checked(s, spatial_shape(shape), f"layer {call.key!r}") for s, shape in zip(states, shapes)]


def _report_pass_through(call: Call, rule: LayerRule, warned: set[int | str]) -> None:
    """Warn once that ``call`` could be neither estimated nor probed, naming it and why, where no
    warning has said so: a rule fell back on a probe (``walk.probe.probed``) that is impossible.
    (A missing rule's warning already gives the reason, and a probe that fails warns itself.)"""
    reason = probe_impossible(call.node, call.input_shapes)
    if not reason or isinstance(rule, ProbeEstimator) or call.key in warned:
        return
    warned.add(call.key)
    logger.warning("Layer call %r (%s) can be neither estimated nor probed (%s); passing its input "
                   "statistics through unchanged (method %s).", call.key, type(call.operation).__name__,
                   reason, PASS_THROUGH)


def rule_for_call(call: Call, context: WalkContext, warned: set[int | str]) -> LayerRule:
    """The rule for ``call``: a probe of the real layer for a kept layer, the registered rule,
    else a probe (warned about once per layer)."""
    if id(call.operation) in context.kept_layers:
        return ProbeEstimator(call.operation, context, call.input_shapes, call.output_shapes, call.node)
    rule = context.rule_for(call.operation, call.input_shapes, call.output_shapes, call.node)
    if rule is not None:
        return rule
    if id(call.operation) not in warned:
        warned.add(id(call.operation))
        reason = probe_impossible(call.node, call.input_shapes)
        untraced = context.untraced.get(id(call.operation))
        logger.warning(missing_estimator_warning(call.operation.name, not reason, reason)
                       + (f" (It could not be opened by tracing: {untraced})" if untraced else ""))
    return ProbeEstimator(call.operation, context, call.input_shapes, call.output_shapes, call.node)
