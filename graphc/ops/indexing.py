"""Gathering rows by integer ids (embedding lookups), its adjoint scatter-add, and one_hot."""

from __future__ import annotations

import numpy as np
import sympy

from ..errors import GraphError, IndexRangeError, ShapeError
from ..ir.shapes import prod
from ..ir.tensor import Tensor, apply
from ..ir.types import DEFAULT_FLOAT, TensorType, as_dtype
from . import loops as L
from .registry import BLOCKED, OpDef, register


def _ids(ids) -> Tensor:
    from .elementwise import lift

    (ids,) = lift(ids)
    if ids.dtype.kind not in "iu":
        raise GraphError(f"ids/labels must be an integer tensor, got {ids.dtype}")
    return ids


def _take_infer(types, attrs, checks):
    table, ids = types
    if table.ndim < 1:
        raise ShapeError("take needs a table of rank >= 1")
    return TensorType(table.dtype, tuple(ids.shape) + tuple(table.shape[1:]))


def _first_outside(values: np.ndarray, bound: int):
    """The first value (in memory order) outside [0, bound), or None."""
    if not values.size:
        return None
    bad = (values < 0) | (values >= bound)
    return values.ravel()[np.argmax(bad.ravel())] if bad.any() else None


def _take_reference(table, ids):
    bad = _first_outside(ids, table.shape[0])
    if bad is not None:
        raise IndexRangeError("id", bad, table.shape[0])
    return table[ids]


def _take_loops(node, program):
    """out[r, j] = table[ids[r], j] (ids flattened, the rest of a row as one axis); an id
    outside the table stops the step."""
    table, ids = node.inputs
    n, width = prod(ids.shape) if ids.shape else 1, prod(table.shape[1:]) if table.ndim > 1 \
        else 1
    r, j = L.index_symbols("r j")
    rows, row = table.shape[0], sympy.Symbol("_id", integer=True)
    ok = sympy.And(row >= 0, row < rows)
    value = sympy.Piecewise((L.load("table", row, j), ok), (0, True))
    bufs = {"table": L.Buf(input=0, shape=(rows, width)), "ids": L.Buf(input=1, shape=(n,)),
            "out": L.Buf(output=True, shape=(n, width))}
    return L.LoopNest(bufs, [(r, n)], lets=[(row, L.load("ids", r))],
                      checks=[L.Check(row, rows)], inner=(j, width),
                      inner_stores=[L.Store("out", (r, j), value)])


TAKE = register(OpDef(
    "take", "index", infer=_take_infer, reference=_take_reference, loops=_take_loops,
    extra={"checks_ids": True},
    grad=lambda ctx: [scatter_add(ctx.g, ctx.inputs[1], ctx.inputs[0].shape[0]), BLOCKED],
    doc="table[ids]: rows of `table` picked by integer ids (embedding lookup).",
))


def _scatter_infer(types, attrs, checks):
    g, ids = types
    k = ids.ndim
    for a, b in zip(g.shape[:k], ids.shape):
        checks.equal(a, b, "g's leading axes must match ids")
    return TensorType(g.dtype, (attrs["rows"],) + tuple(g.shape[k:]))


def _scatter_reference(g, ids, *, rows):
    bad = _first_outside(ids, rows)
    if bad is not None:
        raise IndexRangeError("id", bad, rows)
    out = np.zeros((rows,) + g.shape[ids.ndim:], dtype=g.dtype)
    np.add.at(out, ids, g)
    return out


SCATTER_ADD = register(OpDef(
    "scatter_add", "index", infer=_scatter_infer, reference=_scatter_reference,
    extra={"checks_ids": True},
    grad=lambda ctx: [take(ctx.g, ctx.inputs[1]), BLOCKED],
    doc="zeros(rows, ...) with g[i] added to row ids[i]; repeated ids accumulate.",
))


def _one_hot_loops(node, program):
    """out[r, c] = (labels[r] == c), a label checked once; outside [0, n) it stops the step."""
    n_labels, depth = prod(node.shape[:-1]) if node.ndim > 1 else 1, node.attrs["n"]
    r, c = L.index_symbols("r c")
    label = sympy.Symbol("_label", integer=True)
    value = sympy.Piecewise((1, sympy.Eq(label, c)), (0, True))
    bufs = {"labels": L.Buf(input=0, shape=(n_labels,)),
            "out": L.Buf(output=True, shape=(n_labels, depth))}
    return L.LoopNest(bufs, [(r, n_labels)], lets=[(label, L.load("labels", r))],
                      checks=[L.Check(label, depth)], inner=(c, depth),
                      inner_stores=[L.Store("out", (r, c), value)])


ONE_HOT = register(OpDef(
    "one_hot", "index", loops=_one_hot_loops, extra={"checks_ids": True},
    infer=lambda types, attrs, checks: TensorType(attrs["dtype"], tuple(types[0].shape) +
                                                  (attrs["n"],)),
    reference=lambda labels, *, n, dtype: _one_hot_reference(labels, n, dtype),
    grad=lambda ctx: [BLOCKED],
    doc="1.0 at each label's position, 0.0 elsewhere; a label outside [0, n) is an error "
        "(as PyTorch's F.one_hot), so cross_entropy never silently skips a bad label.",
))


def _one_hot_reference(labels: np.ndarray, n: int, dtype) -> np.ndarray:
    bad = _first_outside(labels, n)
    if bad is not None:
        raise IndexRangeError("label", bad, n)
    return (labels[..., None] == np.arange(n)).astype(dtype)


def take(table, ids) -> Tensor:
    """Rows of `table` at integer `ids` (any shape): out.shape = ids.shape + table.shape[1:]."""
    from .elementwise import lift

    (table,) = lift(table)
    return apply(TAKE, [table, _ids(ids)])


def scatter_add(g: Tensor, ids: Tensor, rows) -> Tensor:
    return apply(SCATTER_ADD, [g, _ids(ids)], rows=rows)


def one_hot(labels, n: int, dtype=DEFAULT_FLOAT) -> Tensor:
    """One-hot encoding of integer labels into `n` classes (float32 by default)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise GraphError(f"one_hot needs a positive int number of classes, got {n!r}")
    return apply(ONE_HOT, [_ids(labels)], n=int(n), dtype=as_dtype(dtype))
