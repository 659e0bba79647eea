"""Shape ONNX ops: Constant, Shape, Size, Reshape, Flatten, Transpose, Concat, Squeeze,
Unsqueeze, Slice, Gather, Expand, ConstantOfShape, Range.

Values known at import (constants, integer initializers, shapes — object arrays when a dim
is symbolic) are folded with NumPy here, so the shape arithmetic an exporter writes around a
Reshape disappears and the Reshape gets static or symbolic dims.
"""

from __future__ import annotations

import math

import numpy as np
import sympy

from .. import ops
from ..ir.shapes import as_dim
from . import dtypes
from .table import onnx_op


def _dims_array(dims) -> np.ndarray:
    """A shape as an int64 array, or an object array when some dims are symbolic."""
    if all(isinstance(d, (int, np.integer)) for d in dims):
        return np.asarray([int(d) for d in dims], dtype=np.int64)
    out = np.empty(len(dims), dtype=object)
    out[:] = [int(d) if isinstance(d, (int, np.integer)) else d for d in dims]
    return out


def _dim(d):
    if isinstance(d, sympy.Expr):
        return int(d) if d.is_Integer else d
    return int(d)


def _shape_of(value):
    return tuple(value.shape)


def _axes(ctx, axes_input, rank: int | None, attr_until: int):
    """Axes from the attribute (opset < attr_until) or the input."""
    if ctx.opset < attr_until:
        axes = ctx.attr("axes", None)
    else:
        axes = None if axes_input is None else ctx.static(axes_input, "axes").ravel().tolist()
    if axes is None:
        return None
    return [int(a) % rank if rank else int(a) for a in axes]


@onnx_op("Constant")
def _constant(ctx):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in ctx.attrs:
            v = ctx.attrs[key]
            if key == "value":
                arr = np.asarray(v)
            elif key.startswith("value_float"):
                arr = np.asarray(v, dtype=np.float32)
            else:
                arr = np.asarray(v, dtype=np.int64)
            if arr.dtype not in dtypes.NUMPY_TO_ONNX:
                ctx.fail(f"a constant of dtype {arr.dtype} is not supported")
            return arr
    ctx.fail(f"attribute {', '.join(ctx.attrs) or '(none)'} is not supported (sparse and "
             "string constants are not)")


@onnx_op("Shape")
def _shape(ctx, x):
    dims = list(_shape_of(x))
    start, end = int(ctx.attr("start", 0)), ctx.attr("end", None)
    dims = dims[start:] if end is None else dims[start:int(end)]
    return _dims_array(dims)


@onnx_op("Size")
def _size(ctx, x):
    n = math.prod(_shape_of(x))
    return np.asarray(n, dtype=np.int64) if isinstance(n, int) else np.asarray(n, dtype=object)


@onnx_op("Reshape")
def _reshape(ctx, x, shape=None):
    target = list(ctx.attr("shape")) if ctx.opset < 5 else list(
        ctx.static(shape, "the target shape").ravel())
    in_shape = _shape_of(x)
    allowzero = int(ctx.attr("allowzero", 0))
    dims = []
    for i, d in enumerate(target):
        d = _dim(d)
        if isinstance(d, int) and d == 0 and not allowzero:
            d = in_shape[i]
        elif isinstance(d, int) and d == 0:
            ctx.fail("a 0 dim (allowzero=1) is not supported: graphc has no empty tensors")
        elif isinstance(d, int) and d < -1:
            ctx.fail(f"invalid target dim {d}")
        dims.append(d)
    if isinstance(x, np.ndarray):
        return x.reshape([d if isinstance(d, int) else int(d) for d in dims])
    return ops.reshape(ctx.tensor(x), tuple(dims))


@onnx_op("Flatten")
def _flatten(ctx, x):
    shape = _shape_of(x)
    axis = int(ctx.attr("axis", 1))
    axis = axis + len(shape) if axis < 0 else axis
    dims = (math.prod(shape[:axis]) if axis else 1, math.prod(shape[axis:]))
    if isinstance(x, np.ndarray):
        return x.reshape(dims)
    return ops.reshape(ctx.tensor(x), dims)


@onnx_op("Transpose")
def _transpose(ctx, x):
    rank = len(_shape_of(x))
    perm = ctx.attr("perm", None)
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    if isinstance(x, np.ndarray):
        return np.transpose(x, perm)
    return ops.transpose(ctx.tensor(x), tuple(perm))


@onnx_op("Concat")
def _concat(ctx, *xs):
    axis = int(ctx.attr("axis"))
    if ctx.is_static(*xs):
        arrs = [np.asarray(x) for x in xs]
        if any(a.dtype == object for a in arrs):
            arrs = [a.astype(object) for a in arrs]
        return np.concatenate(arrs, axis=axis)
    ts = [ctx.tensor(x) for x in xs]
    return ts[0] if len(ts) == 1 else ops.concat(ts, axis % ts[0].ndim)


@onnx_op("Squeeze")
def _squeeze(ctx, x, axes=None):
    shape = _shape_of(x)
    axes = _axes(ctx, axes, len(shape), 13)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    for a in axes:
        if shape[a] != 1:
            ctx.fail(f"axis {a} has size {shape[a]}, not 1")
    dims = tuple(d for i, d in enumerate(shape) if i not in axes)
    if isinstance(x, np.ndarray):
        return x.reshape(dims)
    return ops.reshape(ctx.tensor(x), dims)


@onnx_op("Unsqueeze")
def _unsqueeze(ctx, x, axes=None):
    shape = _shape_of(x)
    axes = _axes(ctx, axes, None, 13)
    if axes is None:
        ctx.fail("axes are required")
    rank = len(shape) + len(axes)
    axes = sorted(a % rank for a in axes)
    dims = list(shape)
    for a in axes:
        dims.insert(a, 1)
    if isinstance(x, np.ndarray):
        return x.reshape(dims)
    return ops.reshape(ctx.tensor(x), tuple(dims))


def _slices(ctx, shape, starts, ends, axes, steps):
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
    steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
    index = [slice(None)] * rank
    big = 2**62
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            ctx.fail("step 0 is invalid")
        s, e = int(max(min(int(s), big), -big)), int(max(min(int(e), big), -big))
        index[a] = slice(s, e, st)
    return tuple(index)


@onnx_op("Slice")
def _slice(ctx, x, starts=None, ends=None, axes=None, steps=None):
    shape = _shape_of(x)
    if ctx.opset < 10:
        starts, ends = ctx.attr("starts"), ctx.attr("ends")
        axes = ctx.attr("axes", None)
        steps = None
    else:
        starts = ctx.static(starts, "starts").ravel().tolist()
        ends = ctx.static(ends, "ends").ravel().tolist()
        axes = None if axes is None else ctx.static(axes, "axes").ravel().tolist()
        steps = None if steps is None else ctx.static(steps, "steps").ravel().tolist()
    index = _slices(ctx, shape, starts, ends, axes, steps)
    if isinstance(x, np.ndarray):
        return x[index]
    t = ctx.tensor(x)
    out_shape = [len(range(*sl.indices(d))) if isinstance(d, int) else None
                 for sl, d in zip(index, shape)]
    if any(s == 0 for s in out_shape):
        ctx.fail("an empty slice is not supported: graphc has no empty tensors")
    return t[index]


@onnx_op("Gather")
def _gather(ctx, data, indices):
    shape = _shape_of(data)
    axis = int(ctx.attr("axis", 0)) % len(shape)
    if ctx.is_static(data, indices):
        return np.take(np.asarray(data), np.asarray(indices).astype(np.int64), axis=axis)
    table = ctx.tensor(data)
    dim = shape[axis]
    if isinstance(indices, np.ndarray):
        ids = np.asarray(indices).astype(np.int64)
        if isinstance(dim, int):
            ids = np.where(ids < 0, ids + dim, ids)
        elif (ids < 0).any():
            ctx.fail("negative indices into a symbolic dim are not supported")
        ids = ops.constant(ids, dtype=indices.dtype if indices.dtype != object else np.int64)
    else:
        ids = ctx.tensor(indices)
        if not isinstance(dim, int):
            ctx.fail("indices computed at run time into a symbolic dim are not supported")
        zero = ops.constant(np.asarray(0, dtype=ids.dtype))
        ids = ops.where(ops.less(ids, zero), ids + ops.constant(np.asarray(dim, ids.dtype)), ids)
    if axis == 0:
        return ops.take(table, ids)
    perm = (axis,) + tuple(i for i in range(len(shape)) if i != axis)
    out = ops.take(ops.transpose(table, perm), ids)
    # out axes: ids dims, then the table's other axes; move the ids dims to `axis`
    k = len(ids.shape)
    rest = list(range(k, out.ndim))
    order = rest[:axis] + list(range(k)) + rest[axis:]
    return ops.transpose(out, tuple(order))


def _broadcast_shape(a, b):
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    return tuple(y if x == 1 else x for x, y in zip(a, b))


@onnx_op("Expand")
def _expand(ctx, x, shape):
    target = [_dim(d) for d in ctx.static(shape, "the target shape").ravel()]
    out = _broadcast_shape(_shape_of(x), target)
    if isinstance(x, np.ndarray) and all(isinstance(d, int) for d in out):
        return np.broadcast_to(x, out).copy()
    t = ctx.tensor(x)
    if tuple(out) == tuple(t.shape):
        return t
    return ops.broadcast_to(t, tuple(as_dim(d) for d in out))


@onnx_op("ConstantOfShape")
def _constant_of_shape(ctx, shape):
    dims = [_dim(d) for d in ctx.static(shape, "the shape").ravel()]
    value = ctx.attr("value", None)
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if value.dtype not in dtypes.NUMPY_TO_ONNX:
        ctx.fail(f"a value of dtype {value.dtype} is not supported")
    if any(d == 0 for d in dims):
        ctx.fail("an empty tensor is not supported: graphc has no size-0 dims")
    if all(isinstance(d, int) for d in dims):
        return np.full(dims, value.ravel()[0], dtype=value.dtype)
    return ops.full(tuple(as_dim(d) for d in dims), value.ravel()[0].item(), dtype=value.dtype)


@onnx_op("Range")
def _range(ctx, start, limit, delta):
    s, lim, d = (ctx.static(v, n) for v, n in ((start, "start"), (limit, "limit"),
                                               (delta, "delta")))
    dtype = np.asarray(s).dtype
    n = max(int(math.ceil((float(lim) - float(s)) / float(d))), 0)
    if n == 0:
        ctx.fail("an empty range is not supported: graphc has no size-0 dims")
    return (np.asarray(s, dtype) + np.arange(n, dtype=np.int64).astype(dtype) *
            np.asarray(d, dtype)).astype(dtype)
