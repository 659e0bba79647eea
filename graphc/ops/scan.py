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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import sympy

from ..errors import GraphError, ShapeError
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
    children."""

    kind: str
    keys: tuple = ()
    children: tuple = ()

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
        return leaves, paths, TreeDef("tuple" if isinstance(tree, tuple) else "list", (),
                                      tuple(children))
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
            if not t.shape or dims_equal(t.shape[0], length) is not True:
                raise ShapeError(f"xs entry {i - nc} has shape {format_shape(t.shape)}: its "
                                 f"leading axis must be the length {length}")
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
    graph = get_default_graph()
    for n in topological(body.outputs):
        if n.uid in env:
            continue
        if n.op.name == "constant":
            env[n.uid] = Tensor(graph.adopt(n), graph)
            continue
        if not n.inputs:
            raise GraphError(f"internal: cannot inline the leaf {n.name} of a loop body")
        env[n.uid] = apply(n.op, [env[i.uid] for i in n.inputs], **dict(n.attrs))
    return [env[o.uid] for o in body.outputs]


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
    for d, p in dims:
        if dims_equal(d, T) is not True:
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
    if body.default_updates:
        raise GraphError("scan: random ops, dropout and batch norm in training mode inside a "
                         "scan body are not supported yet (their state would not advance per "
                         "step); use them outside the loop, or batch norm in eval mode")
    body.inputs = [t.node for t in c_in + x_in] + capture.placeholders
    body.outputs = outs
    body.set_nodes(topological(body.outputs + body.inputs))
    body.meta["paths"] = c_paths + x_paths + [f"captured {t.name}" for t in capture.outer]

    loop = apply(SCAN, [*c_leaves, *x_leaves, *capture.outer], body=body,
                 n_carry=len(c_leaves), n_xs=len(x_leaves), length=T, reverse=reverse)
    nc, ny = len(c_leaves), len(y_leaves)
    final = [loop_output(loop, i) for i in range(nc)]
    ys = [loop_output(loop, nc + j) for j in range(ny)]
    return c_tree.unflatten(final), y_tree.unflatten(ys)
