"""Reductions (sum, max, min, argmax, logsumexp) and the softmax family along an axis.

``mean`` is ``sum / numel``: ``numel`` turns a (possibly symbolic) element count into a
scalar tensor, so a mean over a batch of N rows divides by N whatever N turns out to be.
"""

from __future__ import annotations

import numpy as np
import sympy

from ..ir.shapes import prod
from ..ir.tensor import Tensor, apply
from ..ir.types import DEFAULT_FLOAT, TensorType, as_dtype
from .registry import BLOCKED, ZERO, OpDef, register
from .shape_ops import (
    broadcast_to,
    check_axes,
    check_axis,
    normalize_axes,
    normalize_axis,
    reshape,
)


def reduced_shape(shape, axes, keepdims: bool) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _reduce_infer(types, attrs, checks, dtype=None):
    (x,) = types
    axes = check_axes(attrs["axes"], x.ndim)  # also for a node read from a file or rewritten
    return TensorType(dtype or x.dtype, reduced_shape(x.shape, axes, attrs["keepdims"]))


def _keep(g: Tensor, x: Tensor, attrs) -> Tensor:
    """g reshaped so it broadcasts against x (reduced axes kept as size 1). Where only
    leading axes were reduced (a mean over everything, a sum over the batch), g broadcasts
    against x as it is: no reshape."""
    axes = tuple(attrs["axes"])
    if axes == tuple(range(len(axes))) and not attrs.get("keepdims", False):
        return g
    return reshape(g, reduced_shape(x.shape, axes, True))


# -- the kernels of the reduction family, as loop nests -------------------------------------


def _reduction_points(x, axes, keepdims):
    """(index of every input axis, domain of the output, output index, reduced bounds)."""
    from . import loops as L

    idx = L.index_symbols(" ".join(f"i{a}" for a in range(x.ndim))) if x.ndim else ()
    kept = [(idx[a], d) for a, d in enumerate(x.shape) if a not in axes]
    reduced = [(idx[a], d) for a, d in enumerate(x.shape) if a in axes]
    out_index = tuple(0 if a in axes else idx[a] for a in range(x.ndim)) if keepdims else \
        tuple(k for k, _ in kept)
    return idx, kept, out_index, reduced


def _shift(m, posinf: bool = False):
    """The max a stable exp subtracts: 0 where it is not finite (an all -inf row). With
    `posinf` (softmax, log_softmax) a +inf max is kept: x - inf makes the whole row NaN, as
    PyTorch and ONNX give, where a shift of 0 gave 0 (-inf) beside one NaN. logsumexp keeps
    its 0: the log of a sum holding inf is inf, PyTorch's."""
    from . import expr as E

    if posinf:
        return sympy.Piecewise((0, sympy.Or(E.isnan(m), sympy.And(E.isinf(m), m < 0))),
                               (m, True))
    return sympy.Piecewise((m, sympy.Not(sympy.Or(E.isnan(m), E.isinf(m)))), (0, True))


def _reduce_loops(node, program):
    """out[kept] = op over the reduced axes of x[...]. The host renders it in the input's
    memory order (accumulating into the output: reducing the batch axis reads rows
    contiguously), the GPU as a gather (a thread per output)."""
    from . import loops as L

    (x,) = node.inputs
    a = node.attrs
    idx, kept, out_index, reduced = _reduction_points(x, a["axes"], a["keepdims"])
    value = L.reduce_(node.op.name, L.load("x", *idx), reduced)
    return L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)}, kept,
                      [L.Store("out", out_index, value)], hints={"host": "memory_order"})


def _logsumexp_loops(node, program):
    from . import loops as L

    (x,) = node.inputs
    a = node.attrs
    idx, kept, out_index, reduced = _reduction_points(x, a["axes"], a["keepdims"])
    m = sympy.Symbol("_max")
    total = L.reduce_("sum", sympy.exp(L.load("x", *idx) - m), reduced)
    return L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)}, kept,
                      [L.Store("out", out_index, sympy.log(total) + m)],
                      lets=[(m, _shift(L.reduce_("max", L.load("x", *idx), reduced)))])


def _softmax_loops(node, program):
    """A row (every position but the axis) at a time: its max and its sum once, then every
    element: exp(x - max) / sum, or (x - max) - log(sum)."""
    from . import loops as L

    (x,) = node.inputs
    axis = node.attrs["axis"] if x.ndim else None
    idx = L.index_symbols(" ".join(f"i{k}" for k in range(x.ndim))) if x.ndim else ()
    rows = [(idx[k], d) for k, d in enumerate(x.shape) if k != axis]
    (j,) = L.index_symbols("j")
    at = tuple(j if k == axis else idx[k] for k in range(x.ndim))
    length = x.shape[axis] if x.ndim else 1
    m, total = sympy.Symbol("_max"), sympy.Symbol("_sum")
    xj = L.load("x", *at)
    # (x - max) - log(sum) in that grouping (x - (max + log(sum)) loses x's digits at 1e12):
    # unevaluated, or sympy would flatten the two subtractions into one sum
    shifted = sympy.Add(xj, -m, evaluate=False)
    value = sympy.exp(shifted) / total if node.op.name == "softmax" else \
        sympy.Add(shifted, -sympy.log(total), evaluate=False)
    return L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)}, rows,
                      lets=[(m, _shift(L.reduce_("max", xj, [(j, length)]), posinf=True)),
                            (total, L.reduce_("sum", sympy.exp(xj - m), [(j, length)]))],
                      inner=(j, length), inner_stores=[L.Store("out", at, value)])


def _argmax_loops(node, program):
    """The first maximum along the axis; the first NaN wins (numpy.argmax)."""
    from . import loops as L

    (x,) = node.inputs
    axis = node.attrs["axis"]
    idx = L.index_symbols(" ".join(f"i{k}" for k in range(x.ndim)))
    kept = [(idx[k], d) for k, d in enumerate(x.shape) if k != axis]
    (j,) = L.index_symbols("j")
    at = tuple(j if k == axis else idx[k] for k in range(x.ndim))
    value = L.argmax(L.load("x", *at), j, [(j, x.shape[axis])])
    return L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)}, kept,
                      [L.Store("out", tuple(k for k, _ in kept), value)])


# -- sum -------------------------------------------------------------------------------------


def _sum_grad(ctx):
    (x,) = ctx.inputs
    return [broadcast_to(_keep(ctx.g, x, ctx.node.attrs), x.shape)]


SUM = register(OpDef(
    "sum", "reduction", infer=_reduce_infer,
    reference=lambda x, *, axes, keepdims: np.sum(x, axis=axes, keepdims=keepdims, dtype=x.dtype),
    grad=_sum_grad, loops=_reduce_loops,
))


def sum(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - mirrors numpy
    """Sum over `axis` (None: all axes). Bool and int tensors sum as int64."""
    from .cast import cast
    from .elementwise import lift

    (x,) = lift(x)
    if x.dtype.kind in "biu" and x.dtype != np.int64:
        x = cast(x, np.int64)
    axes = normalize_axes(axis, x.ndim)
    if not axes and not keepdims:
        return x
    return apply(SUM, [x], axes=axes, keepdims=bool(keepdims))


# -- numel and mean --------------------------------------------------------------------------

def _numel_loops(node, program):
    """out = the product of the sizes (known when the step runs)."""
    from . import loops as L

    (x,) = node.inputs
    count = prod([x.shape[a] for a in node.attrs["axes"]]) if node.attrs["axes"] else 1
    return L.LoopNest({"out": L.Buf(output=True)}, [], [L.Store("out", (), count)])


def _numel_infer(types, attrs, checks):
    check_axes(attrs["axes"], types[0].ndim)
    return TensorType(attrs["dtype"], ())


NUMEL = register(OpDef(
    "numel", "reduction", loops=_numel_loops,
    infer=_numel_infer,
    reference=lambda x, *, axes, dtype: np.asarray(
        np.prod([np.shape(x)[a] for a in axes], dtype=np.int64), dtype=dtype),
    grad=lambda ctx: [ZERO],
    doc="The number of elements of x over `axes`, as a scalar (depends on x's shape only).",
))


def numel(x: Tensor, axis=None, dtype=None) -> Tensor:
    """How many elements x has over `axis` (a scalar tensor; symbolic sizes resolved at run)."""
    from .sources import constant

    axes = normalize_axes(axis, x.ndim)
    dtype = as_dtype(dtype or (x.dtype if x.dtype.kind == "f" else DEFAULT_FLOAT))
    count = prod(x.shape[a] for a in axes)
    if isinstance(count, int):
        return constant(np.asarray(count, dtype=dtype), graph=x.graph)
    return apply(NUMEL, [x], axes=axes, dtype=dtype)


def size_scalar(d) -> Tensor:
    """A size (an int, or a symbol such as a batch dim N) as an int64 scalar tensor: a
    constant, or the `numel` of a broadcast zero of shape (d,), which reads only its input's
    shape when the step runs. (A scan's step count; an imported model's shape arithmetic.)"""
    from .creation import full
    from .sources import constant

    if isinstance(d, (int, np.integer)) or (isinstance(d, sympy.Expr) and d.is_Integer):
        return constant(np.asarray(int(d), dtype=np.int64))
    return numel(full((d,), 0, np.int64), 0, np.int64)


def mean(x, axis=None, keepdims: bool = False) -> Tensor:
    """Arithmetic mean over `axis` (None: all axes)."""
    from .elementwise import div, lift

    (x,) = lift(x, float_only=True)
    return div(sum(x, axis, keepdims), numel(x, axis))


# -- max / min -------------------------------------------------------------------------------


def _extremum_grad(ctx):
    """Ties share the gradient evenly, as torch.amax: ``hit * (g / count)``. Where the result
    is NaN nothing equals it, count is 0 and the gradient is NaN (0 * inf), as in PyTorch.

    ``hit`` is ``where(x == max, 1, 0)``, not a cast of the comparison: where's condition
    takes a zero gradient, so the gradient is piecewise constant in x and a second derivative
    (a Hessian-vector product) is 0, as for relu, abs and max_pool; a cast of a comparison
    is a path autodiff refuses."""
    from .elementwise import div, equal, mul, where
    from .sources import constant

    (x,) = ctx.inputs
    attrs = ctx.node.attrs
    one = constant(np.ones((), x.dtype), graph=x.graph)
    zero = constant(np.zeros((), x.dtype), graph=x.graph)
    hit = where(equal(x, broadcast_to(_keep(ctx.out, x, attrs), x.shape)), one, zero)
    count = sum(hit, tuple(attrs["axes"]), keepdims=True)
    share = div(_keep(ctx.g, x, attrs), count)
    return [mul(hit, broadcast_to(share, x.shape))]


def _not_empty(shape, axes, checks, what: str) -> None:
    """Each reduced axis must have an element: a maximum, minimum or argmax of none is
    undefined (NumPy and PyTorch refuse it too), so no backend runs the reduction (the NumPy
    backend raised NumPy's ValueError, the llvm backend returned -inf, inf or index 0)."""
    from ..ir.shapes import format_dim

    for axis in axes:
        size = shape[axis]
        checks.not_empty(size, f"{what} over axis {axis} of size 0: {what} of no elements is "
                               f"undefined",
                         f"the reduced axis {axis} has an element ({format_dim(size)} >= 1; "
                         f"{what} of no elements is undefined)")


def _extremum_infer(what: str):
    def infer(types, attrs, checks):
        _not_empty(types[0].shape, attrs["axes"], checks, what)
        return _reduce_infer(types, attrs, checks)

    return infer


MAX = register(OpDef(
    "max", "reduction", infer=_extremum_infer("a maximum"),
    reference=lambda x, *, axes, keepdims: np.max(x, axis=axes, keepdims=keepdims),
    grad=_extremum_grad, loops=_reduce_loops,
))
MIN = register(OpDef(
    "min", "reduction", infer=_extremum_infer("a minimum"),
    reference=lambda x, *, axes, keepdims: np.min(x, axis=axes, keepdims=keepdims),
    grad=_extremum_grad, loops=_reduce_loops,
))


def max(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Largest element over `axis`; the gradient is shared evenly between ties."""
    from .elementwise import lift

    (x,) = lift(x)
    return apply(MAX, [x], axes=normalize_axes(axis, x.ndim), keepdims=bool(keepdims))


def min(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001
    """Smallest element over `axis`; the gradient is shared evenly between ties."""
    from .elementwise import lift

    (x,) = lift(x)
    return apply(MIN, [x], axes=normalize_axes(axis, x.ndim), keepdims=bool(keepdims))


# -- argmax ----------------------------------------------------------------------------------

def _argmax_infer(types, attrs, checks):
    check_axis(attrs["axis"], types[0].ndim)
    _not_empty(types[0].shape, (attrs["axis"],), checks, "an argmax")
    return TensorType(np.dtype(np.int64), reduced_shape(types[0].shape, (attrs["axis"],), False))


ARGMAX = register(OpDef(
    "argmax", "reduction",
    infer=_argmax_infer,
    reference=lambda x, *, axis: np.argmax(x, axis=axis).astype(np.int64),
    grad=lambda ctx: [BLOCKED],
    doc="Index of the first largest element along an axis (int64). Not differentiable.",
    loops=_argmax_loops,
))


def argmax(x, axis=None) -> Tensor:
    """Index of the largest element along `axis` (of the flattened tensor when None)."""
    from .elementwise import lift

    (x,) = lift(x)
    if axis is None:
        x, axis = reshape(x, (prod(x.shape),)), 0
    return apply(ARGMAX, [x], axis=normalize_axis(axis, x.ndim))


# -- logsumexp, softmax, log_softmax ---------------------------------------------------------


def stable_max(x, axis, posinf: bool = False):
    """`_shift` on NumPy arrays (the reference's, and the numpy backend's kernels'): the
    maximum to shift by, 0 where it is not finite or the axis is empty; with `posinf`
    (softmax, log_softmax) a +inf maximum stays, so its row is NaN as PyTorch's."""
    # (-inf over an empty axis; the ufunc's reduce, without np.max's wrapper: the numpy
    # backend's softmax calls this every step)
    m = np.maximum.reduce(x, axis=axis, keepdims=True, initial=-np.inf)
    if np.isfinite(m).all():
        return m
    if posinf:
        return np.where(np.isnan(m) | (m == -np.inf), 0, m)
    return np.where(np.isfinite(m), m, 0)


def _logsumexp_ref(x, *, axes, keepdims):
    with np.errstate(all="ignore"):
        m = stable_max(x, axes)
        out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return (out if keepdims else np.squeeze(out, axis=axes)).astype(x.dtype)


def _logsumexp_grad(ctx):
    from .elementwise import exp, mul, sub

    (x,) = ctx.inputs
    attrs = ctx.node.attrs
    lse = broadcast_to(_keep(ctx.out, x, attrs), x.shape)
    return [mul(broadcast_to(_keep(ctx.g, x, attrs), x.shape), exp(sub(x, lse)))]


LOGSUMEXP = register(OpDef(
    "logsumexp", "reduction", infer=_reduce_infer, reference=_logsumexp_ref, grad=_logsumexp_grad,
    loops=_logsumexp_loops,
    doc="log(sum(exp(x))) over axes, computed without overflow.",
))


def logsumexp(x, axis=None, keepdims: bool = False) -> Tensor:
    from .elementwise import lift

    (x,) = lift(x, float_only=True)
    return apply(LOGSUMEXP, [x], axes=normalize_axes(axis, x.ndim), keepdims=bool(keepdims))


def _softmax_ref(x, *, axis):
    with np.errstate(all="ignore"):
        e = np.exp(x - stable_max(x, axis, posinf=True))
        return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype)


def _log_softmax_ref(x, *, axis):
    with np.errstate(all="ignore"):
        z = x - stable_max(x, axis, posinf=True)
        return (z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))).astype(x.dtype)


def _softmax_grad(ctx):
    from .elementwise import mul, sub

    axis = ctx.node.attrs["axis"] if ctx.out.ndim else ()  # a 0-d softmax is a row of one
    y, g = ctx.out, ctx.g
    dot = sum(mul(g, y), axis, keepdims=True)
    return [mul(y, sub(g, dot))]


def _log_softmax_grad(ctx):
    from .elementwise import exp, mul, sub

    axis = ctx.node.attrs["axis"] if ctx.out.ndim else ()  # a 0-d softmax is a row of one
    return [sub(ctx.g, mul(exp(ctx.out), sum(ctx.g, axis, keepdims=True)))]


def _axis_infer(types, attrs, checks):
    check_axis(attrs["axis"], types[0].ndim)
    return types[0]

SOFTMAX = register(OpDef("softmax", "reduction", infer=_axis_infer, reference=_softmax_ref,
                         grad=_softmax_grad, doc="exp(x) / sum(exp(x)) along axis, stable.",
                         loops=_softmax_loops))
LOG_SOFTMAX = register(OpDef("log_softmax", "reduction", infer=_axis_infer,
                             reference=_log_softmax_ref, grad=_log_softmax_grad,
                             doc="x - logsumexp(x) along axis, stable.", loops=_softmax_loops))


def softmax(x, axis: int = -1) -> Tensor:
    from .elementwise import lift

    (x,) = lift(x, float_only=True)
    return apply(SOFTMAX, [x], axis=normalize_axis(axis, x.ndim))


def log_softmax(x, axis: int = -1) -> Tensor:
    from .elementwise import lift

    (x,) = lift(x, float_only=True)
    return apply(LOG_SOFTMAX, [x], axis=normalize_axis(axis, x.ndim))
