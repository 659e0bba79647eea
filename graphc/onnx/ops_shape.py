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
from ..ir.tensor import Tensor
from . import dtypes
from .table import onnx_op

#: the most elements a value computed at import is folded into (a NumPy array); larger
#: constants (ConstantOfShape, Expand, Tile of known values) stay graphc ops
FOLD_LIMIT = 1 << 20


def _scalar_int(ctx, value, what: str) -> int:
    arr = np.asarray(ctx.static(value, what))
    if arr.size != 1:
        ctx.fail(f"{what} has {arr.size} elements, not 1")
    return int(arr.reshape(-1)[0])


def _blocksize(ctx, t) -> int:
    b = int(ctx.attr("blocksize"))
    if b < 1:
        ctx.fail(f"blocksize {b} must be at least 1")
    if t.ndim != 4:
        ctx.fail(f"the input has rank {t.ndim}; it must be 4-d (N, C, H, W)")
    return b


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
    return ctx.ints(axes, "axes") if rank is None else ctx.axes(axes, rank)


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
            if i >= len(in_shape):
                ctx.fail(f"target shape {[_dim(t) for t in target]}: the 0 at position {i} "
                         f"copies dim {i} of the input, which has rank {len(in_shape)}")
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
    if not -len(shape) <= axis <= len(shape):
        ctx.fail(f"axis {axis} is out of range for rank {len(shape)} "
                 f"(valid: {-len(shape)}..{len(shape)})")
    axis = axis + len(shape) if axis < 0 else axis
    dims = (math.prod(shape[:axis]) if axis else 1, math.prod(shape[axis:]))
    if isinstance(x, np.ndarray):
        return x.reshape(dims)
    return ops.reshape(ctx.tensor(x), dims)


@onnx_op("Transpose")
def _transpose(ctx, x):
    rank = len(_shape_of(x))
    perm = ctx.attr("perm", None)
    perm = list(range(rank))[::-1] if perm is None else ctx.ints(perm, "perm")
    if sorted(perm) != list(range(rank)):
        ctx.fail(f"perm {perm} is not a permutation of the {rank} axes of the input")
    if isinstance(x, np.ndarray):
        return np.transpose(x, perm)
    return ops.transpose(ctx.tensor(x), tuple(perm))


@onnx_op("Concat")
def _concat(ctx, *xs):
    ranks = {len(_shape_of(x)) for x in xs}
    if len(ranks) != 1:
        ctx.fail(f"the inputs have different ranks {sorted(ranks)}")
    axis = ctx.axis(ctx.attr("axis"), ranks.pop())
    # (a chain of Concat(x, x) doubles at every node: past FOLD_LIMIT a fold draws on the
    # model's budget, and what it cannot take is computed when the model runs)
    if ctx.is_static(*xs) and ctx.can_fold(sum(np.size(x) for x in xs)):
        arrs = [np.asarray(x) for x in xs]
        if any(a.dtype == object for a in arrs):
            arrs = [a.astype(object) for a in arrs]
        return np.concatenate(arrs, axis=axis)
    # known empty parts (an empty Split part) add nothing
    ts = [ctx.tensor(x) for x in xs if not (isinstance(x, np.ndarray) and x.size == 0)]
    if not ts:
        ctx.fail("concatenating only empty values is not supported (no size-0 dims)")
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
    axes = sorted(ctx.axes(axes, rank))
    dims = list(shape)
    for a in axes:
        dims.insert(a, 1)
    if isinstance(x, np.ndarray):
        return x.reshape(dims)
    return ops.reshape(ctx.tensor(x), tuple(dims))


def _slices(ctx, shape, starts, ends, axes, steps):
    rank = len(shape)
    starts, ends = list(starts or []), list(ends or [])
    axes = list(range(len(starts))) if axes is None else ctx.axes(axes, rank)
    steps = [1] * len(starts) if steps is None else ctx.ints(steps, "steps")
    if not len(starts) == len(ends) == len(axes) == len(steps):
        ctx.fail(f"starts, ends, axes and steps have different lengths ({len(starts)}, "
                 f"{len(ends)}, {len(axes)}, {len(steps)})")
    if len(axes) > rank:
        ctx.fail(f"{len(axes)} axes are sliced in an input of rank {rank}")
    index = [slice(None)] * rank
    big = 2**62
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            ctx.fail("step 0 is invalid")
        s, e = _bound(ctx, s, shape[a], st), _bound(ctx, e, shape[a], st, start=s)
        # an end past every size (INT64_MAX: "to the end") is None, not a bound that leaked
        # into the shape as Min(2**62, N)
        end = None if isinstance(e, int) and abs(e) >= big and (e > 0) == (st > 0) else \
            max(min(e, big), -big)
        index[a] = slice(max(min(s, big), -big), end, st)
    return tuple(index)


def _bound(ctx, value, dim, step: int = 1, start=None) -> int:
    """A slice bound as an int. A bound folded from Shape may be symbolic (``T - 1``): it is
    usable when it is the axis' size plus a constant (then a bound counted from the end), or
    (positive steps) when an int bound selects the same elements at every size
    (`_clamped_bound`; `start` is the start bound when `value` is the end)."""
    try:
        return int(value)
    except TypeError:
        pass
    import sympy

    offset = sympy.simplify(sympy.sympify(value, strict=True) - sympy.sympify(dim, strict=True))
    if offset.is_integer and offset.is_number and offset <= 0:
        return int(offset) if offset < 0 else 2**62
    same = _clamped_bound(value, dim, start) if step > 0 else None
    if same is not None:
        return same
    ctx.fail(f"a slice bound {value} that depends on symbolic dims other than the axis' "
             f"size {dim} is not supported")


def _clamped_bound(value, dim, start=None):
    """An int bound (or 2**62, "to the end") that selects what the symbolic ONNX bound
    `value` selects on an axis of symbolic size `dim` (positive steps), for every size, or
    None. graphc's own exports write bounds such as ``Max(0, T - 2)`` (``x[:, -2:]``) and
    ``Min(2, N*T)``: ONNX clamps a bound (a negative one counted from the end) to
    ``[0, dim]``, and so does a Python slice; the candidate is read off at large sizes and
    checked at every combination of sizes around the expressions' constants and one large
    size (at most three symbols). That is a check, not a proof, but an exact one for the
    bounds graphc writes: Max/Min of a dim and a constant, which change form only at their
    constants. An end bound is
    compared above its `start` only: an end at or below the start is an empty slice either
    way (``x[:, 1:-1]`` ends at ``1 + Max(0, T - 2)``, which is 1, not 0, for T = 1)."""
    import itertools

    import sympy

    value, dim = sympy.sympify(value, strict=True), sympy.sympify(dim, strict=True)
    start = sympy.sympify(-(2**62) if start is None else start, strict=True)
    symbols = sorted(value.free_symbols | dim.free_symbols | start.free_symbols, key=str)
    if not symbols or len(symbols) > 3:
        return None
    consts = {abs(int(c)) for e in (value, dim, start) for c in e.atoms(sympy.Integer)
              if abs(int(c)) < 2**20}
    grid = sorted({k for c in consts | {0} for k in (c - 1, c, c + 1, c + 2) if k >= 1} |
                  set(range(1, 6)))
    try:
        # (dummify: the file's dim names never reach the generated function, where one named
        # Max or floor would hide the function of that name)
        f = sympy.lambdify(symbols, (value, dim, start), modules=[
            {"Max": max, "Min": min, "floor": math.floor, "ceiling": math.ceil}, "math"],
            dummify=True)
    except Exception:  # noqa: BLE001 - an expression the printer cannot write: not supported
        return None

    def clamp(v, d):
        v = int(v)
        return min(max(v + d if v < 0 else v, 0), d)

    big = [1000 + 37 * i for i in range(len(symbols))]
    v, d, _ = (int(e) for e in f(*big))
    e = clamp(v, d)
    candidate = e if e <= d // 2 else (e - d if e < d else 2**62)
    for point in itertools.product(grid + [1000], repeat=len(symbols)):
        try:
            v, d, lo = (int(x) for x in f(*point))
        except (TypeError, ValueError, ZeroDivisionError, OverflowError):
            return None
        lo = clamp(lo, d) if d >= 0 else 0
        if d < 0 or max(clamp(v, d), lo) != max(clamp(min(candidate, d), d), lo):
            return None
    return candidate


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
    axis = ctx.axis(ctx.attr("axis", 0), len(shape))
    if isinstance(indices, np.ndarray) and isinstance(shape[axis], int) and indices.size:
        known = np.asarray(indices).astype(np.int64)
        bad = known[(known < -shape[axis]) | (known >= shape[axis])]
        if bad.size:
            ctx.fail(f"index {int(bad.ravel()[0])} is out of range for axis {axis} of size "
                     f"{shape[axis]}")
    rows = math.prod(d for i, d in enumerate(shape) if i != axis) \
        if all(isinstance(d, int) for d in shape) else 0
    grows = rows * indices.size if isinstance(indices, np.ndarray) else None
    if ctx.is_static(data, indices, size=grows):
        ids = np.asarray(indices).astype(np.int64)
        return np.asarray(np.take(np.asarray(data), ids, axis=axis))  # 0-d stays an array
    table = ctx.tensor(data)
    dim = shape[axis]
    if isinstance(indices, np.ndarray):
        ids = np.asarray(indices).astype(np.int64)
        if isinstance(dim, int):
            ids = np.where(ids < 0, ids + dim, ids)
        elif (ids < 0).any():  # x[:, -1] of a dynamic axis (an RNN's last step): static
            lead = (slice(None),) * axis  # indexing counts from the end of any size
            if ids.ndim == 0:
                return table[lead + (int(ids),)]
            if ids.ndim == 1 and ids.size <= 64:
                return ops.stack([table[lead + (int(i),)] for i in ids], axis)
            ctx.fail("negative indices into a symbolic dim are supported as a scalar or up "
                     "to 64 of them")
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


def _broadcast_shape(ctx, a, b):
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    for x, y in zip(a, b):
        if isinstance(x, int) and isinstance(y, int) and x != y and 1 not in (x, y):
            ctx.fail(f"the input's shape {a} does not broadcast to the target shape {b}")
    return tuple(y if x == 1 else x for x, y in zip(a, b))


@onnx_op("Expand")
def _expand(ctx, x, shape):
    target = [_dim(d) for d in ctx.static(shape, "the target shape").ravel()]
    if any(isinstance(d, int) and d < 0 for d in target):
        ctx.fail(f"the target shape {target} has a negative dim")
    out = _broadcast_shape(ctx, _shape_of(x), target)
    if isinstance(x, np.ndarray) and all(isinstance(d, int) for d in out) and ctx.check_size(
            out, x.dtype) <= FOLD_LIMIT:
        return np.broadcast_to(x, out).copy()
    t = ctx.tensor(x)
    if tuple(out) == tuple(t.shape):
        return t
    if all(isinstance(d, int) for d in out):
        ctx.check_size(out, t.dtype)
    return ops.broadcast_to(t, tuple(as_dim(d) for d in out))


@onnx_op("ConstantOfShape")
def _constant_of_shape(ctx, shape):
    dims = [_dim(d) for d in ctx.static(shape, "the shape").ravel()]
    value = ctx.attr("value", None)
    value = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if value.dtype not in dtypes.NUMPY_TO_ONNX:
        ctx.fail(f"a value of dtype {value.dtype} is not supported")
    if value.size != 1:
        ctx.fail(f"the value attribute has {value.size} elements, not 1")
    if any(isinstance(d, int) and d < 0 for d in dims):
        ctx.fail(f"the shape {dims} has a negative dim")
    if any(d == 0 for d in dims):
        ctx.fail("an empty tensor is not supported: graphc has no size-0 dims")
    if all(isinstance(d, int) for d in dims):
        if ctx.check_size(dims, value.dtype, "the constant") <= FOLD_LIMIT:
            return np.full(dims, value.ravel()[0], dtype=value.dtype)
        return ops.full(tuple(dims), value.ravel()[0].item(), dtype=value.dtype)
    return ops.full(tuple(as_dim(d) for d in dims), value.ravel()[0].item(), dtype=value.dtype)


@onnx_op("Range")
def _range(ctx, start, limit, delta):
    s, lim, d = (ctx.static(v, n) for v, n in ((start, "start"), (limit, "limit"),
                                               (delta, "delta")))
    if any(np.asarray(v).size != 1 for v in (s, lim, d)):
        ctx.fail("start, limit and delta must be scalars")
    s, lim, d = (np.asarray(v).reshape(()) for v in (s, lim, d))
    dtype = np.asarray(s).dtype
    if float(d) == 0:
        ctx.fail("delta 0 gives an endless range")
    span = (float(lim) - float(s)) / float(d)
    if not math.isfinite(span):
        ctx.fail(f"the range from {s} to {lim} by {d} has no finite length")
    n = max(int(math.ceil(span)), 0)
    if n > FOLD_LIMIT:  # (graphc computes a Range at import: a 178-byte file asked for 7 GB)
        ctx.check_size([n], dtype, "the range")
        ctx.charge_fold(n, "a range")
    if n == 0:
        ctx.fail("an empty range is not supported: graphc has no size-0 dims")
    return (np.asarray(s, dtype) + np.arange(n, dtype=np.int64).astype(dtype) *
            np.asarray(d, dtype)).astype(dtype)


# -- ops that rearrange or build tensors ----------------------------------------------------


def _static_ints(ctx, value, what: str) -> list[int]:
    return [int(v) for v in np.asarray(ctx.static(value, what)).ravel()]


def _take_along(x, ids: np.ndarray, axis: int):
    """x with the positions `ids` (a known 1-d index array) taken along `axis`."""
    if axis == 0:
        return ops.take(x, ops.constant(ids.astype(np.int64)))
    perm = (axis,) + tuple(i for i in range(x.ndim) if i != axis)
    out = ops.take(ops.transpose(x, perm), ops.constant(ids.astype(np.int64)))
    back = list(range(1, x.ndim))
    back.insert(axis, 0)
    return ops.transpose(out, tuple(back))


@onnx_op("Split")
def _split(ctx, x, split=None):
    shape = _shape_of(x)
    axis = ctx.axis(ctx.attr("axis", 0), len(shape))
    n = shape[axis]
    if not isinstance(n, int):
        ctx.fail("splitting a symbolic dim is not supported")
    if ctx.opset < 13:
        sizes = ctx.attr("split", None)
    else:
        sizes = None if split is None else _static_ints(ctx, split, "split")
    if sizes is None:
        parts = int(ctx.attr("num_outputs", ctx.outputs))
        if parts < 1:
            ctx.fail("the number of outputs must be positive")
        if ctx.opset >= 18:  # the last part may be smaller
            size = -(-n // parts)
            sizes = [min(size, n - i * size) for i in range(parts)]
        elif n % parts:
            ctx.fail(f"{n} does not split into {parts} equal parts")
        else:
            sizes = [n // parts] * parts
    sizes = ctx.ints(sizes, "split sizes")
    if len(sizes) != ctx.outputs:
        ctx.fail(f"{len(sizes)} split sizes {sizes} for {ctx.outputs} outputs")
    if sum(sizes) != n:
        ctx.fail(f"split sizes {sizes} do not add up to {n}")
    if any(s < 0 for s in sizes):
        ctx.fail(f"negative split sizes {sizes}")
    outs, start = [], 0
    for s in sizes:
        index = [slice(None)] * len(shape)
        index[axis] = slice(start, start + s)
        if isinstance(x, np.ndarray):
            outs.append(x[tuple(index)])
        elif s == 0:
            # an empty part is known at import (it holds nothing): Concat drops it; used
            # as data anywhere else it is refused (graphc has no size-0 dims)
            if not all(isinstance(d, int) for d in shape):
                ctx.fail("an empty part of a symbolically shaped input is not supported")
            outs.append(np.zeros(tuple(0 if i == axis else d for i, d in enumerate(shape)),
                                 dtype=ctx.tensor(x).dtype))
        else:
            outs.append(ctx.tensor(x)[tuple(index)])
        start += s
    return outs


@onnx_op("Tile")
def _tile(ctx, x, repeats):
    reps = _static_ints(ctx, repeats, "repeats")
    if len(reps) != len(_shape_of(x)):
        ctx.fail(f"repeats {reps} do not match the rank {len(_shape_of(x))}")
    if any(r < 1 for r in reps):
        ctx.fail("a repeat of 0 is not supported: graphc has no size-0 dims")
    if isinstance(x, np.ndarray) and ctx.check_size(
            [r * d for r, d in zip(reps, x.shape)], x.dtype) <= FOLD_LIMIT:
        return np.tile(x, reps)
    t = ctx.tensor(x)
    if len(reps) != t.ndim:
        ctx.fail(f"repeats {reps} do not match the rank {t.ndim}")
    if any(r < 1 for r in reps):
        ctx.fail("a repeat of 0 is not supported: graphc has no size-0 dims")
    # x (d0, d1, ...) -> (1, d0, 1, d1, ...) -> broadcast (r0, d0, r1, d1, ...) -> merged
    inter = tuple(v for d in t.shape for v in (1, d))
    wide = tuple(v for r, d in zip(reps, t.shape) for v in (r, d))
    out = ops.broadcast_to(ops.reshape(t, inter), wide)
    return ops.reshape(out, tuple(r * d for r, d in zip(reps, t.shape)))


@onnx_op("Pad")
def _pad(ctx, x, pads=None, value=None, axes=None):
    t = ctx.tensor(x)
    mode = ctx.attr("mode", "constant")
    if ctx.opset < 11:
        widths = ctx.ints(ctx.attr("pads"), "pads")
        value = ctx.attr("value", 0.0)
    else:
        widths = _static_ints(ctx, pads, "pads")
    rank = t.ndim
    axes = list(range(rank)) if axes is None else ctx.axes(_static_ints(ctx, axes, "axes"), rank)
    if len(widths) != 2 * len(axes):
        ctx.fail(f"pads {widths} do not fit axes {axes}")
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begin[a], end[a] = widths[i], widths[i + len(axes)]
    for a, (b, e, d) in enumerate(zip(begin, end, t.shape)):
        if isinstance(d, int) and d + b + e < 1:
            ctx.fail(f"pads {widths} leave nothing of axis {a} (size {d}): graphc has no "
                     "size-0 dims")
        if not isinstance(d, int) and (b < 0 or e < 0):
            ctx.fail(f"negative pads {widths} on a symbolic dim are not supported")
    if any(p < 0 for p in begin + end):  # negative pads crop first
        index = tuple(slice(max(-b, 0), (d + e) if e < 0 else None)
                      for b, e, d in zip(begin, end, t.shape))
        t = t[index]
        begin, end = [max(b, 0) for b in begin], [max(e, 0) for e in end]
    if not any(begin) and not any(end):
        return t
    if mode == "constant":
        y = ops.pad(t, [(b, e) for b, e in zip(begin, end)])
        if value is None:
            return y
        if isinstance(value, Tensor):
            fill = value if value.dtype == t.dtype else ops.cast(value, t.dtype)
        else:
            known = np.asarray(value, dtype=t.dtype).reshape(())
            if not known.any():
                return y  # zeros: ops.pad's own fill
            fill = ops.constant(known, dtype=t.dtype)
        if not all(isinstance(d, int) for d in t.shape):
            ctx.fail("a non-zero pad value needs known sizes")
        inside = np.pad(np.ones(tuple(t.shape), dtype=bool), list(zip(begin, end)))
        return ops.where(ops.constant(inside), y, ops.reshape(fill, ()))
    if mode not in ("reflect", "edge", "wrap"):
        ctx.fail(f"mode={mode!r} is not supported")
    for a in range(rank):
        if begin[a] or end[a]:
            n = t.shape[a]
            if not isinstance(n, int):
                ctx.fail(f"{mode} padding of a symbolic dim is not supported")
            ids = np.pad(np.arange(n), (begin[a], end[a]), mode=mode)
            t = _take_along(t, ids, a)
    return t


@onnx_op("Trilu")
def _trilu(ctx, x, k=None):
    t = ctx.tensor(x)
    if t.ndim < 2:
        ctx.fail(f"the input has rank {t.ndim}; Trilu needs at least 2")
    k = 0 if k is None else _scalar_int(ctx, k, "k")
    n, m = t.shape[-2], t.shape[-1]
    if not isinstance(n, int) or not isinstance(m, int):
        ctx.fail("symbolic matrix sizes are not supported")
    if n == 0 or m == 0:
        ctx.fail("an empty matrix is not supported: graphc has no size-0 dims")
    zero = ops.constant(np.zeros((), dtype=t.dtype), dtype=t.dtype)
    return ops.where(_diagonals(ctx, n, m, k, "upper" if int(ctx.attr("upper", 1)) else
                                "lower"), t, zero)


def _diagonals(ctx, n: int, m: int, k: int, which: str):
    """The bool (n, m) mask of column - row >= k ("upper"), <= k ("lower") or == k
    ("diagonal"): a small one folded, a large one computed when the model runs from a row
    and a column of indices (a Trilu over a declared 60000 x 60000 input built a 3.6 GB mask
    at import)."""
    if n * m > FOLD_LIMIT:
        ctx.charge_fold(n + m, "the indices of a diagonal mask")
        k = max(-n, min(k, m))  # (beyond the matrix every k means the same: no overflow)
    offsets = np.arange(m, dtype=np.int64)[None, :] - np.arange(n, dtype=np.int64)[:, None] \
        if n * m <= FOLD_LIMIT else None
    if offsets is not None:
        return ops.constant({"upper": offsets >= k, "lower": offsets <= k,
                             "diagonal": offsets == k}[which])
    cols = ops.constant(np.arange(m, dtype=np.int64).reshape(1, m))
    rows = ops.constant(np.arange(n, dtype=np.int64).reshape(n, 1) + k)
    return {"upper": ops.greater_equal, "lower": ops.less_equal,
            "diagonal": ops.equal}[which](cols, rows)


@onnx_op("DepthToSpace")
def _depth_to_space(ctx, x):
    t = ctx.tensor(x)
    b = _blocksize(ctx, t)
    n, c, h, w = t.shape
    if not isinstance(c, int) or c % (b * b):
        ctx.fail(f"{c} channels are not a multiple of blocksize^2 = {b * b}")
    if ctx.attr("mode", "DCR") == "DCR":
        y = ops.reshape(t, (n, b, b, c // (b * b), h, w))
        y = ops.transpose(y, (0, 3, 4, 1, 5, 2))
    else:
        y = ops.reshape(t, (n, c // (b * b), b, b, h, w))
        y = ops.transpose(y, (0, 1, 4, 2, 5, 3))
    return ops.reshape(y, (n, c // (b * b), h * b, w * b))


@onnx_op("SpaceToDepth")
def _space_to_depth(ctx, x):
    t = ctx.tensor(x)
    b = _blocksize(ctx, t)
    n, c, h, w = t.shape
    if not isinstance(h, int) or not isinstance(w, int) or h % b or w % b:
        ctx.fail(f"spatial sizes {(h, w)} are not multiples of blocksize {b}")
    y = ops.reshape(t, (n, c, h // b, b, w // b, b))
    if ctx.attr("mode", "DCR") == "DCR":
        y = ops.transpose(y, (0, 3, 5, 1, 2, 4))
    else:
        y = ops.transpose(y, (0, 1, 3, 5, 2, 4))
    return ops.reshape(y, (n, c * b * b, h // b, w // b))


@onnx_op("EyeLike")
def _eye_like(ctx, x):
    shape = _shape_of(x)
    if len(shape) != 2 or not all(isinstance(d, int) for d in shape):
        ctx.fail(f"a 2-d input of known shape is needed, got {shape}")
    dtype = np.dtype(x.dtype)
    if "dtype" in ctx.attrs:
        dtype = dtypes.to_numpy(int(ctx.attr("dtype")), ctx.where())
    k = int(ctx.attr("k", 0))
    if shape[0] * shape[1] <= FOLD_LIMIT:
        return np.eye(shape[0], shape[1], k, dtype=dtype)
    return ops.cast(_diagonals(ctx, shape[0], shape[1], k, "diagonal"), dtype)


def _hot(ids, n: int):
    """ids == every index in [0, n), a bool tensor of shape ids.shape + (n,); an index
    outside the range matches nothing (no error, as OneHot and the losses want)."""
    return ops.equal(ops.reshape(ids, tuple(ids.shape) + (1,)),
                     ops.constant(np.arange(n, dtype=ids.dtype)))


def _move_last(t, axis: int):
    """t with its last axis moved to `axis`."""
    if axis == t.ndim - 1:
        return t
    perm = list(range(t.ndim - 1))
    perm.insert(axis, t.ndim - 1)
    return ops.transpose(t, tuple(perm))


@onnx_op("OneHot")
def _one_hot(ctx, indices, depth, values):
    depth = _scalar_int(ctx, depth, "depth")
    if depth < 1:
        ctx.fail("depth must be positive")
    if depth > FOLD_LIMIT:  # (its indices are a constant: a 160-byte file asked for 4.8 GB)
        ctx.charge_fold(depth, "OneHot's classes")
    ids = ctx.tensor(indices)
    values = ctx.tensor(values)
    if tuple(values.shape) != (2,):
        ctx.fail(f"values has shape {tuple(values.shape)}; it must be (2,): [off, on]")
    if ids.dtype.kind == "f":
        ids = ops.cast(ids, np.int64)  # ONNX casts float indices to integers
    ids = ops.where(ops.less(ids, ops.constant(np.asarray(0, ids.dtype))),
                    ids + ops.constant(np.asarray(depth, ids.dtype)), ids)
    hot = _hot(ids, depth)
    out = ops.where(hot, values[1], values[0])
    axis = ctx.axis(ctx.attr("axis", -1), out.ndim)
    return _move_last(out, axis)


@onnx_op("GatherElements")
def _gather_elements(ctx, data, indices):
    t, ids = ctx.tensor(data), ctx.tensor(indices)
    axis = ctx.axis(ctx.attr("axis", 0), t.ndim)
    if ids.ndim != t.ndim:
        ctx.fail(f"indices of rank {ids.ndim} do not fit data of rank {t.ndim}")
    n = t.shape[axis]
    if not isinstance(n, int):
        ctx.fail("gathering along a symbolic dim is not supported")
    ids = ops.where(ops.less(ids, ops.constant(np.asarray(0, ids.dtype))),
                    ids + ops.constant(np.asarray(n, ids.dtype)), ids)
    # the other axes of data cut to the indices' sizes; the gathered axis moved last
    index = tuple(slice(None) if i == axis else slice(0, d) for i, d in enumerate(ids.shape))
    t = t[index]
    perm = tuple(i for i in range(t.ndim) if i != axis) + (axis,)
    t_last = ops.transpose(t, perm)                     # (others..., n)
    ids_last = ops.transpose(ids, perm)                 # (others..., k)
    hot = _hot(ids_last, n)                             # (others..., k, n)
    rows = ops.reshape(t_last, tuple(t_last.shape[:-1]) + (1, n))
    zero = ops.constant(np.zeros((), dtype=t.dtype), dtype=t.dtype)
    picked = ops.sum(ops.where(hot, rows, zero), -1)    # exact: one term is not zero
    if picked.dtype != t.dtype:
        picked = ops.cast(picked, t.dtype)
    back = list(range(t.ndim - 1))
    back.insert(axis, t.ndim - 1)
    return ops.transpose(picked, tuple(back))


@onnx_op("CenterCropPad")
def _center_crop_pad(ctx, x, shape):
    """Crop (or zero-pad) the given axes to `shape`, centred: a crop drops the extra half
    from the start rounded down, a pad adds the extra half at the start rounded down."""
    t = ctx.tensor(x)
    target = _static_ints(ctx, shape, "shape")
    axes = ctx.axes(ctx.attr("axes", list(range(t.ndim))), t.ndim)
    if any(w < 1 for w in target):
        ctx.fail(f"shape {target} has a dim below 1 (graphc has no size-0 dims)")
    if len(axes) != len(target):
        ctx.fail(f"shape {target} does not fit axes {axes}")
    index = [slice(None)] * t.ndim
    widths = [(0, 0)] * t.ndim
    for a, want in zip(axes, target):
        have = t.shape[a]
        if not isinstance(have, int):
            ctx.fail("cropping a symbolic dim is not supported")
        if want < have:
            start = (have - want) // 2
            index[a] = slice(start, start + want)
        elif want > have:
            before = (want - have) // 2
            widths[a] = (before, want - have - before)
    t = t[tuple(index)]
    return ops.pad(t, widths) if any(w != (0, 0) for w in widths) else t


_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


@onnx_op("Einsum")
def _einsum(ctx, *xs):
    """Einsum as broadcast products and sums: each operand's repeated letters reduced to
    their diagonal, its axes laid out in one order of all letters, the operands multiplied
    and the letters not in the output summed away."""
    ts = [ctx.tensor(x) for x in xs]
    eq = ctx.attr("equation").replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ts):
        ctx.fail(f"equation {eq!r} names {len(terms)} operands, got {len(ts)}")
    if any(t.dtype.kind != "f" for t in ts):
        ctx.fail("only float operands are supported")
    # '...' becomes letters of its own (the broadcast dims)
    spare = [c for c in _LETTERS if c not in eq]
    ell = max((t.ndim - len(term.replace("...", "")) for t, term in zip(ts, terms)
               if "..." in term), default=0)
    dots = "".join(spare[:ell])
    expanded = []
    for t, term in zip(ts, terms):
        if "..." in term:
            n = t.ndim - len(term.replace("...", ""))
            term = term.replace("...", dots[ell - n:])
        if len(term) != t.ndim:
            ctx.fail(f"term {term!r} does not fit an operand of rank {t.ndim}")
        expanded.append(term)
    if not arrow:
        counts: dict[str, int] = {}
        for term in expanded:
            for c in term:
                counts[c] = counts.get(c, 0) + 1
        rhs = dots + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in dots))
    else:
        rhs = rhs.replace("...", dots)
        unknown = sorted(set(rhs) - set("".join(expanded)))
        if unknown or len(set(rhs)) != len(rhs):
            ctx.fail(f"equation {eq!r}: the output names letters no operand has ({unknown}) "
                     "or repeats one")
    order = list(dict.fromkeys(rhs + "".join(expanded)))
    sizes: dict[str, object] = {}
    laid = []
    for t, term in zip(ts, expanded):
        # the diagonal of a repeated letter: mask with the identity and sum one copy away
        while len(set(term)) < len(term):
            c = next(c for c in term if term.count(c) > 1)
            i, j = term.index(c), term.index(c, term.index(c) + 1)
            n = t.shape[i]
            eye = np.eye(n, dtype=t.dtype).reshape(tuple(n if k in (i, j) else 1
                                                         for k in range(t.ndim)))
            t = ops.sum(t * ops.constant(eye, dtype=t.dtype), j)
            term = term[:j] + term[j + 1:]
        for c, d in zip(term, t.shape):
            if d != 1 or c not in sizes:
                sizes[c] = d
        present = [c for c in order if c in term]
        t = ops.transpose(t, tuple(term.index(c) for c in present)) if present != list(
            term) else t
        laid.append(ops.reshape(t, tuple(t.shape[present.index(c)] if c in present else 1
                                         for c in order)))
    prod = laid[0]
    for t in laid[1:]:
        prod = prod * t
    gone = tuple(i for i, c in enumerate(order) if c not in rhs)
    out = ops.sum(prod, gone) if gone else prod
    kept = [c for c in order if c in rhs]
    if kept != list(rhs):
        out = ops.transpose(out, tuple(kept.index(c) for c in rhs))
    if out.ndim == 0 or tuple(out.shape) == tuple(sizes[c] for c in rhs):
        return out
    return ops.broadcast_to(out, tuple(sizes[c] for c in rhs))
