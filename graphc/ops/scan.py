"""Loops in the static graph: ``gc.scan`` (JAX's ``lax.scan`` contract) and its two ops.

``carry, ys = gc.scan(fn, init, xs=None, length=None, reverse=False)`` traces ``fn(carry, x)
-> (new_carry, y)`` once into a *body* graph whose placeholders are, in order, the carry
entries, the per-step slices of the xs, and the captured tensors: every tensor of an enclosing
graph that `fn` uses (parameters, constants' users, placeholders, computed tensors) becomes a
body placeholder and an extra input of the loop, so gradients reach it. The graph stays a DAG:
the loop is one node.

Two ops:

* ``scan`` (one node per loop): inputs ``[*init, *xs, *captured]``, attributes ``body`` (a
  program Graph: ``inputs`` the placeholders above, ``outputs`` the new carry entries then the
  y entries), ``n_carry``, ``n_xs``, ``length`` (T: an int or a sympy expression) and
  ``reverse``. Its own value is a token (a 0-d bool) standing for all its results.
* ``scan_output(loop, index, shape, dtype)``: result `index` of a loop. Results are numbered
  ``[final carries (n_carry), ys stacked on a new axis 0 (n_y), carry histories (n_carry)]``;
  history ``i`` holds, at ``[t]``, the carry entry that *entered* the step reading ``xs[t]``
  (so for either direction ``history[t]`` is what the step at position t saw). A backend
  computes only the results some ``scan_output`` reads; gradients read the histories.

The gradient (scan_grad.py) is another scan running the other way over the histories.

Random ops (``gc.random.*``, dropout in training mode) inside a body draw fresh numbers at
every step: each random state the body draws from becomes an extra carry entry (after the
user's carries), so step t draws from the state advanced by t steps' draws, and the enclosing
graph gives the state parameter the default update ``state + T * (draws per step)``. The
gradient recomputes the numbers from that carry's history, so its reverse loop sees the forward
steps' masks. Batch norm in training mode inside a body is refused (see `_refusal`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy

from ..errors import GraphError, ShapeError, at
from ..ir.graph import Graph, get_default_graph, topological
from ..ir.node import Node
from ..ir.shapes import as_dim, dims_equal, format_shape
from ..ir.tensor import Tensor, apply
from ..ir.types import TensorType
from .registry import OpDef, register
from .sources import constant, placeholder

__all__ = ["SCAN", "SCAN_OUTPUT", "inline", "loop_output", "scan", "scan_results"]


# -- pytrees: a tensor, or a tuple / list / dict of pytrees, or None ---------------------------


@dataclass(frozen=True)
class TreeDef:
    """The structure of a pytree: kind ("leaf", "none", "tuple", "list", "dict"), dict keys,
    children, and a namedtuple's class (JAX keeps it: ``carry.h`` in the body)."""

    kind: str
    keys: tuple = ()
    children: tuple = ()
    # (not compared: a body may return a plain tuple for a namedtuple carry, as before)
    named: type | None = field(default=None, compare=False)

    def unflatten(self, leaves: list):
        it = iter(leaves)
        return self._build(it)

    def _build(self, it):
        if self.kind == "leaf":
            return next(it)
        if self.kind == "none":
            return None
        built = [c._build(it) for c in self.children]
        if self.kind == "dict":
            return dict(zip(self.keys, built))
        if self.named is not None:
            return self.named(*built)
        return tuple(built) if self.kind == "tuple" else built


def flatten(tree, path: str) -> tuple[list, list[str], TreeDef]:
    """(leaves, their paths such as ``carry['h'][0]``, structure). Dict entries in sorted key
    order (as JAX)."""
    if tree is None:
        return [], [], TreeDef("none")
    if isinstance(tree, (tuple, list)):
        leaves, paths, children = [], [], []
        for i, child in enumerate(tree):
            lv, ps, td = flatten(child, f"{path}[{i}]")
            leaves += lv
            paths += ps
            children.append(td)
        named = type(tree) if isinstance(tree, tuple) and hasattr(tree, "_fields") else None
        return leaves, paths, TreeDef("tuple" if isinstance(tree, tuple) else "list", (),
                                      tuple(children), named)
    if isinstance(tree, dict):
        leaves, paths, children = [], [], []
        keys = tuple(sorted(tree))
        for k in keys:
            lv, ps, td = flatten(tree[k], f"{path}[{k!r}]")
            leaves += lv
            paths += ps
            children.append(td)
        return leaves, paths, TreeDef("dict", keys, tuple(children))
    return [tree], [path], TreeDef("leaf")


def _as_tensor(value, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (np.ndarray, np.generic, int, float, bool)):
        return constant(value)
    raise GraphError(f"{what} must be a tensor (or an array), not {type(value).__name__}")


# -- the ops -----------------------------------------------------------------------------------


def _same_type(a: TensorType, b: TensorType) -> bool:
    return a.dtype == b.dtype and len(a.shape) == len(b.shape) and all(
        dims_equal(x, y) is True for x, y in zip(a.shape, b.shape))


def _check_body(body, n_carry, n_xs) -> None:
    if not isinstance(body, Graph):
        raise GraphError(f"the body of a scan must be a graph, not {type(body).__name__}")
    for k, v in (("n_carry", n_carry), ("n_xs", n_xs)):
        if type(v) is not int or v < 0:
            raise GraphError(f"{k} must be a nonnegative int, not {v!r}")
    if n_carry + n_xs > len(body.inputs) or len(body.outputs) < n_carry:
        raise GraphError(f"the body has {len(body.inputs)} inputs and {len(body.outputs)} "
                         f"outputs: too few for {n_carry} carry entries and {n_xs} xs")
    if any(n.op.name != "placeholder" for n in body.inputs):
        raise GraphError("the inputs of a scan body must be placeholders")
    if body.updates or body.default_updates:
        raise GraphError("a scan body has no updates")
    inputs = {n.uid for n in body.inputs}
    for n in topological(body.outputs):
        if n.op.name == "parameter":
            raise GraphError(f"a scan body reads parameter {n.name!r} directly: parameters "
                             "are captured as inputs")
        if n.op.name == "placeholder" and n.uid not in inputs:
            raise GraphError(f"the scan body reads placeholder {n.name!r}, not among its "
                             "inputs")


def _infer_scan(types, attrs, checks) -> TensorType:
    body, nc, nx = attrs["body"], attrs["n_carry"], attrs["n_xs"]
    _check_body(body, nc, nx)
    if not isinstance(attrs["reverse"], bool):
        raise GraphError("reverse must be a bool")
    length = as_dim(attrs["length"])
    if len(types) != len(body.inputs):
        raise GraphError(f"the loop takes {len(body.inputs)} inputs, got {len(types)}")
    for i, (t, ph) in enumerate(zip(types, body.inputs)):
        want = ph.type
        if nc <= i < nc + nx:  # an xs entry: T slices of the body's x
            if not t.shape:
                raise ShapeError(f"xs entry {i - nc} has shape {format_shape(t.shape)}: its "
                                 f"leading axis must be the length {length}")
            # a symbolic leading axis may be the length: checked at call time
            checks.equal(t.shape[0], length, f"xs entry {i - nc}'s leading axis must be the "
                         f"loop's length")
            t = TensorType(t.dtype, t.shape[1:])
        if not _same_type(t, want):
            raise ShapeError(f"loop input {i} ({ph.name}) is {t}, the body expects {want}")
    for i in range(nc):
        if not _same_type(body.outputs[i].type, body.inputs[i].type):
            raise ShapeError(f"the body turns carry entry {body.inputs[i].name} of type "
                             f"{body.inputs[i].type} into {body.outputs[i].type}")
    return TensorType(np.dtype(bool), ())


SCAN = register(OpDef(
    name="scan",
    kind="loop",
    infer=_infer_scan,
    doc="A loop: its body graph run T times over a carry and slices of xs (gc.scan). Its value "
        "is a token; scan_output nodes read its results.",
    extra={"multi_output": True},
))


def _infer_output(types, attrs, checks) -> TensorType:
    if len(types) != 1 or types[0].dtype != np.dtype(bool) or types[0].shape:
        raise GraphError("scan_output reads a scan node")
    if type(attrs["index"]) is not int or attrs["index"] < 0:
        raise GraphError(f"bad result index {attrs['index']!r}")
    return TensorType(attrs["dtype"], attrs["shape"])


def _output_reference(loop, *, index, shape, dtype):
    """Result `index` of a loop (the NumPy backend's loop returns them all as a list)."""
    return loop[index]


SCAN_OUTPUT = register(OpDef(
    name="scan_output",
    kind="loop",
    infer=_infer_output,
    reference=_output_reference,
    doc="One result of a scan: a final carry entry, a stacked y, or a carry history.",
    extra={"projection": True},
))


def scan_results(node: Node) -> list[TensorType]:
    """The types of every result of a scan node: final carries, stacked ys, histories."""
    a = node.attrs
    body, nc, length = a["body"], a["n_carry"], as_dim(a["length"])
    carries = [o.type for o in body.outputs[:nc]]
    ys = [TensorType(o.dtype, (length, *o.shape)) for o in body.outputs[nc:]]
    hist = [TensorType(t.dtype, (length, *t.shape)) for t in carries]
    return carries + ys + hist


def loop_output(loop: Tensor, index: int) -> Tensor:
    """Result `index` of the scan node `loop` (numbering: see the module docstring)."""
    t = scan_results(loop.node)[index]
    return apply(SCAN_OUTPUT, [loop], index=index, shape=tuple(t.shape), dtype=t.dtype)


# -- tracing -----------------------------------------------------------------------------------


class _Capture:
    """The capture hook of a body being traced: outer tensors (and parameters, wherever they
    live) become body placeholders, one per outer node."""

    def __init__(self, body: Graph) -> None:
        self.body = body
        self.outer: list[Tensor] = []
        self.placeholders: list[Node] = []
        self._by_uid: dict[int, Node] = {}

    def __call__(self, t: Tensor) -> Node:
        node = t.node
        if node.op.name == "constant":
            return node if t.graph is self.body else self.body.adopt(node)
        if t.graph is self.body and node.op.name != "parameter":
            return node
        if node.uid not in self._by_uid:
            with self.body:  # (placeholder() builds its node directly: no capture)
                ph = placeholder(f"captured {t.name}", node.shape, node.dtype).node
            self._by_uid[node.uid] = ph
            self.outer.append(t)
            self.placeholders.append(ph)
        return self._by_uid[node.uid]


def captured(t: Tensor) -> Tensor:
    """Inside a body being traced: the body's tensor for `t` (captured when from outside)."""
    graph = get_default_graph()
    if graph.capture is None:
        return t
    return Tensor(graph.capture(t), graph)


def inline(body: Graph, inputs: list[Tensor]) -> list[Tensor]:
    """The body's outputs computed from `inputs` (one per body input) in the current graph:
    its nodes copied, each through the op's usual construction."""
    env: dict[int, Tensor] = {n.uid: t for n, t in zip(body.inputs, inputs)}
    return _copy_nodes(body.outputs, env)


def _copy_nodes(roots: list[Node], env: dict[int, Tensor]) -> list[Tensor]:
    """`roots` rebuilt in the current graph, reading ``env[uid]`` for the nodes it maps (the
    other leaves must be constants). Random ops are copied with their attributes (stream
    included) and no default update, so a copy draws the numbers the original drew from the
    same state."""
    graph = get_default_graph()
    env = dict(env)
    for n in topological(roots):
        if n.uid in env:
            continue
        if n.op.name == "constant":
            env[n.uid] = Tensor(graph.adopt(n), graph)
            continue
        if not n.inputs:
            raise GraphError(f"internal: cannot inline the leaf {n.name} of a loop body")
        env[n.uid] = apply(n.op, [env[i.uid] for i in n.inputs], **dict(n.attrs))
    return [env[o.uid] for o in roots]


# -- random states inside a body ---------------------------------------------------------------
#
# A random op gives its state parameter the default update ``state + [0, 1]`` (graphc/ops/
# random.py). Inside a body that update must happen once per *step*, so after tracing, every
# random state the body draws from stops being a captured input and becomes a carry entry:
# its initial value is the state parameter, its new value the body's chained updates (``s + [0,
# k]`` for k draws per step). Step t therefore draws with Philox counter word ``step0 + k*t``
# (and each draw keeps its own stream), fresh and distinct at every step, on every backend,
# with no new op. The enclosing graph gets the loop's default update ``state + [0, k*T]``,
# computed from the per-step increment and T (not read from the loop's final carry: a second
# draw from the same state before the loop would otherwise re-run the loop when the updates
# are chained, see graphc/function.py). The gradient's reverse loop re-inlines the body at the
# saved carry history, the state included, so it sees exactly the numbers (dropout masks) the
# forward step drew. An inner loop's default update is of the same form (``s + increment``),
# so nested loops compose. Batch norm in training mode (running statistics updated per call)
# has no per-step meaning and is refused.

_STATE_TRIGGERS = frozenset({"random_uniform", "scan"})


@dataclass
class _StateCarry:
    """A random state the body draws from, turned into a carry entry."""

    param: Tensor  # the state parameter, as the loop's init for this carry entry
    placeholder: Node  # the body placeholder that captured it (now a carry placeholder)
    new: Node  # the state after one step: placeholder + the increments
    increments: list[Node]  # body nodes free of placeholders: the per-step increment's terms

    @property
    def path(self) -> str:
        return f"random state {_param_name(self.param.node)}"


def _param_name(p: Node) -> str:
    """A parameter's qualified name (``bn.running_mean`` once a module named it)."""
    return p.attrs["storage"].name if p.op.name == "parameter" else p.name


def _refusal(trigger: Node, entries) -> GraphError:
    """The error for a default update inside a body that is not a random state's: batch norm
    in training mode (its running statistics), or anything else with a default update."""
    names = [_param_name(p) for p, _ in entries]
    prefixes = {n.rpartition(".")[0] for n in names}
    layer = prefixes.pop() if len(prefixes) == 1 else ""
    where = f" (layer {layer!r}" if layer else " ("
    where += f"{', ' if layer else ''}parameters {', '.join(repr(n) for n in names)})"
    if "batch_norm" in trigger.scope.split("/") or any(
            n.endswith(("running_mean", "running_var")) for n in names):
        return GraphError(
            f"scan: batch norm in training mode inside a scan body{where} is refused: its "
            "running statistics are a default update applied once per call, and a loop body "
            "would need one per step. "
            "Put the layer in eval mode (layer.eval(): it then reads its running statistics), "
            "use gc.nn.LayerNorm (per-sample statistics, no running state), or apply batch "
            f"norm outside the loop{at(trigger.loc)}")
    return GraphError(
        f"scan: {trigger.op.name} inside a scan body gives default updates{where}, which "
        "cannot be applied once per step; only random states advance inside a loop"
        f"{at(trigger.loc)}")


def _replace(graph: Graph, root: Node, old: Node, new: Node) -> Node:
    """`root` rebuilt in `graph` with `new` wherever it read `old`."""
    mapping = {old.uid: new}
    for node in topological([root]):
        if node.uid in mapping or not any(i.uid in mapping for i in node.inputs):
            continue
        mapping[node.uid] = graph.make_node(node.op, [mapping.get(i.uid, i) for i in node.inputs],
                                            node.attrs, loc=node.loc, scope=node.scope)
    return mapping.get(root.uid, root)


def _increments(value: Node, state: Node) -> list[Node]:
    """The terms c_i of ``value = state + c_1 + c_2 + ...`` (c_i independent of `state`): a
    random state's update is always such a sum (one ``[0, 1]`` per draw, one ``[0, k*T]`` per
    inner loop)."""
    depends: dict[int, bool] = {}
    for n in topological([value]):
        depends[n.uid] = n is state or any(depends[i.uid] for i in n.inputs)
    terms, node = [], value
    while node is not state:
        if node.op.name != "add" or len(node.inputs) != 2:
            raise GraphError(f"internal: the random state {_param_name(state)} is updated by "
                             f"{node.op.name}, not by an increment")
        a, b = node.inputs
        if depends[a.uid] == depends[b.uid]:
            raise GraphError("internal: a random state's update adds the state to itself")
        node, other = (a, b) if depends[a.uid] else (b, a)
        terms.append(other)
    return terms


def _state_carries(body: Graph, capture: _Capture, outs: list[Node]) -> list[_StateCarry]:
    """The random states the body's outputs draw from, as carry entries (see above); refuses
    every other default update (batch norm in training mode)."""
    for trigger, entries in body.default_updates.items():
        if trigger.op.name not in _STATE_TRIGGERS:
            raise _refusal(trigger, entries)
    reach = {n.uid for n in topological(outs)}
    chains: dict[int, tuple[Node, list[Node]]] = {}
    for trigger, entries in body.default_updates.items():  # in the order they were built
        if trigger.uid in reach:  # a draw no output uses does not advance the state
            for param, value in entries:
                chains.setdefault(param.uid, (param, []))[1].append(value)
    states = []
    for uid, (param, values) in chains.items():
        ph = capture._by_uid.get(uid)
        if ph is None:
            raise GraphError(f"internal: the scan body draws from {_param_name(param)}, "
                             "which it did not capture")
        new = values[0]
        for later in values[1:]:  # each later draw reads the state the earlier one left
            new = _replace(body, later, ph, new)
        outer = capture.outer[capture.placeholders.index(ph)]
        states.append(_StateCarry(outer, ph, new, _increments(new, ph)))
    return states


def _advance(loop: Tensor, state: _StateCarry, T) -> None:
    """Give the state parameter the loop's default update: ``state + T * increment``."""
    from .elementwise import add, mul
    from .reduce import size_scalar

    with loop.graph:
        terms = _copy_nodes(state.increments, {})
        step = terms[0]
        for term in terms[1:]:
            step = add(step, term)
        value = add(state.param, mul(step, size_scalar(T)))
    loop.graph.add_default_update(loop.node, state.param.node, value.node)


def _length(xs_leaves: list[Tensor], xs_paths: list[str], length):
    dims = []
    for t, p in zip(xs_leaves, xs_paths):
        if not t.shape:
            raise ShapeError(f"scan: {p} is 0-d; every xs entry needs a leading axis T")
        dims.append((t.shape[0], p))
    if length is not None:
        if isinstance(length, bool) or not isinstance(length, (int, np.integer, str,
                                                                sympy.Expr)):
            raise GraphError(f"scan: length must be an int or a dimension name, not {length!r}")
        T = as_dim(length)
    elif dims:
        T = dims[0][0]
    else:
        raise GraphError("scan: with xs=None, give the number of steps as length= (an int or "
                         "a dimension name)")
    for d, p in dims:  # (a symbolic one that may differ is checked at call time: _infer_scan)
        if dims_equal(d, T) is False:
            source = "length=" + repr(length) if length is not None else f"{dims[0][1]}"
            raise ShapeError(f"scan: {p} has {d} steps (leading axis) but {source} says {T}")
    return T


def scan(fn: Callable, init, xs=None, length=None, reverse: bool = False):
    """Loop `fn` over the leading axis of `xs`: ``carry, ys = gc.scan(fn, init, xs)``.

    Why: a recurrence (an RNN, a cumulative sum, an iterative solver) as one node whose body
    is traced once, instead of T copies of it; the number of steps may be symbolic (``"T"``).
    `fn(carry, x)` returns ``(new_carry, y)``; the carry must keep its structure, shapes and
    dtypes (a ShapeError names the entry otherwise); `ys` is y stacked on a new axis 0. With
    `reverse`, the steps run from the last slice to the first (ys stay indexed by t).
    """
    if not callable(fn):
        raise GraphError(f"scan: fn must be callable, not {type(fn).__name__}")
    if not isinstance(reverse, bool):
        raise GraphError(f"scan: reverse must be a bool, not {reverse!r}")
    c_leaves, c_paths, c_tree = flatten(init, "carry")
    c_leaves = [_as_tensor(v, p) for v, p in zip(c_leaves, c_paths)]
    x_leaves, x_paths, x_tree = flatten(xs, "xs")
    x_leaves = [_as_tensor(v, p) for v, p in zip(x_leaves, x_paths)]
    T = _length(x_leaves, x_paths, length)

    body = Graph("scan_body")
    capture = _Capture(body)
    with body:
        c_in = [placeholder(p, t.shape, t.dtype) for t, p in zip(c_leaves, c_paths)]
        x_in = [placeholder(p.replace("xs", "x", 1), t.shape[1:], t.dtype)
                for t, p in zip(x_leaves, x_paths)]
        body.capture = capture
        try:
            result = fn(c_tree.unflatten(c_in), x_tree.unflatten(x_in))
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise GraphError("scan: fn must return a pair (new_carry, y), got "
                                 f"{type(result).__name__}")
            new_carry, y = result
            n_leaves, n_paths, n_tree = flatten(new_carry, "carry")
            if n_tree != c_tree:
                raise ShapeError(f"scan: fn returned a carry structured as {n_paths or 'None'}"
                                 f", but the carry is {c_paths or 'None'}: it must keep its "
                                 f"structure")
            outs = []
            for v, p, t in zip(n_leaves, n_paths, c_leaves):
                v = _as_tensor(v, f"the new {p}")
                if not _same_type(v.node.type, t.node.type):
                    raise ShapeError(f"scan: fn turns {p} of shape {format_shape(t.shape)} "
                                     f"{t.dtype} into shape {format_shape(v.shape)} {v.dtype}; "
                                     f"a carry entry must keep its shape and dtype")
                outs.append(captured(v).node)
            y_leaves, y_paths, y_tree = flatten(y, "y")
            for v, p in zip(y_leaves, y_paths):
                outs.append(captured(_as_tensor(v, p)).node)
        finally:
            body.capture = None
    n_user = len(c_leaves)
    states = _state_carries(body, capture, outs)
    body.default_updates = {}
    moved = {s.placeholder.uid for s in states}
    kept = [(t, ph) for t, ph in zip(capture.outer, capture.placeholders) if ph.uid not in moved]
    body.inputs = ([t.node for t in c_in] + [s.placeholder for s in states] +
                   [t.node for t in x_in] + [ph for _, ph in kept])
    body.outputs = outs[:n_user] + [s.new for s in states] + outs[n_user:]
    body.set_nodes(topological(body.outputs + body.inputs))
    body.meta["paths"] = (c_paths + [s.path for s in states] + x_paths +
                          [f"captured {t.name}" for t, _ in kept])

    nc = n_user + len(states)
    loop = apply(SCAN, [*c_leaves, *[s.param for s in states], *x_leaves,
                        *[t for t, _ in kept]],
                 body=body, n_carry=nc, n_xs=len(x_leaves), length=T, reverse=reverse)
    for state in states:
        _advance(loop, state, T)
    final = [loop_output(loop, i) for i in range(n_user)]
    ys = [loop_output(loop, nc + j) for j in range(len(y_leaves))]
    return c_tree.unflatten(final), y_tree.unflatten(ys)
