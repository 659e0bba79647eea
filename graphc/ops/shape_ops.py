"""Ops that move data without arithmetic: reshape, transpose, broadcast, concat, pad, slice.

Each one's gradient is another op of this module (reshape <-> reshape, slice <-> unslice,
pad -> slice, broadcast_to -> sum), so gradients of gradients stay inside the family.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import sympy

from ..errors import GraphError, ShapeError
from ..ir.shapes import as_dim, dims_equal, format_dim, format_shape, is_one, prod
from ..ir.tensor import Tensor, apply
from ..ir.types import TensorType
from . import loops as L
from .registry import OpDef, register


def _idx(ndim: int) -> tuple:
    return L.index_symbols(" ".join(f"i{a}" for a in range(ndim))) if ndim else ()


def _gather(node, source, inputs: int = 1) -> L.LoopNest:
    """out[i...] = source(i...) over the output's shape (a data-movement kernel)."""
    idx = _idx(node.ndim)
    bufs = {f"x{k}": L.Buf(input=k) for k in range(inputs)}
    bufs["out"] = L.Buf(output=True)
    return L.LoopNest(bufs, list(zip(idx, node.shape)), [L.Store("out", idx, source(idx))])


def normalize_axis(axis: int, ndim: int) -> int:
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise GraphError(f"axis must be an int, got {axis!r}")
    if not -ndim <= axis < max(ndim, 1):
        raise ShapeError(f"axis {axis} is out of range for a tensor of rank {ndim}")
    return int(axis) % max(ndim, 1)


def normalize_axes(axis, ndim: int) -> tuple[int, ...]:
    """None -> all axes; int or sequence -> sorted, non-negative, unique axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = sorted({normalize_axis(a, ndim) for a in axes})
    if len(out) != len(axes):
        raise GraphError(f"repeated axis in {axis!r}")
    return tuple(out)


def is_int_value(value) -> bool:
    """An int (Python's or NumPy's), not a bool: what an axis or a size attribute holds."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def check_axis(axis, ndim: int) -> int:
    """A shape rule's check of a node's `axis` attribute, as `normalize_axis` makes it (an
    int in [0, ndim), 0 for a 0-d tensor): the same check for a node the DSL builds and
    one read from a file or made by a rewrite."""
    if not is_int_value(axis):
        raise GraphError(f"axis must be an int, got {axis!r}")
    if not 0 <= axis < max(ndim, 1):
        raise ShapeError(f"axis {axis} is out of range for a tensor of rank {ndim}")
    return int(axis)


def check_axes(axes, ndim: int) -> tuple[int, ...]:
    """A shape rule's check of a node's `axes` attribute, as `normalize_axes` makes it: a
    tuple of distinct ints in [0, ndim) (a repeated axis is refused however the node was
    built: NumPy refuses it at run time, a loop nest would reduce the axis once)."""
    if not isinstance(axes, tuple) or not all(is_int_value(a) for a in axes):
        raise GraphError(f"axes must be a tuple of ints, got {axes!r}")
    for a in axes:
        if not 0 <= a < ndim:
            raise ShapeError(f"axis {a} in {axes} is out of range for a tensor of rank {ndim}")
    if len(set(axes)) != len(axes):
        raise GraphError(f"repeated axis in {axes!r}")
    return axes


# -- reshape ---------------------------------------------------------------------------------


def _reshape_infer(types, attrs, checks):
    (x,) = types
    checks.equal(prod(x.shape), prod(attrs["shape"]), "reshape must keep the number of elements")
    for d in attrs["shape"]:  # a -1 over a symbolic size: (N, 4) -> (N/2, 8) needs N even
        numerator, denominator = sympy.fraction(sympy.together(sympy.sympify(d, strict=True)))
        if denominator != 1:
            checks.holds(sympy.Eq(sympy.Mod(numerator, denominator), 0),
                         f"the size {format_dim(d)} made by -1 is a whole number")
    return TensorType(x.dtype, attrs["shape"])


def _reshape_loops(node, program):
    """Nothing when the memory plan makes it a view of its input (the usual case); else a
    flat copy."""
    (x,) = node.inputs
    plan = program.meta.get("memory")
    if plan is not None and plan.buffer_of.get(x.uid) == plan.buffer_of.get(node.uid):
        return []
    (i,) = L.index_symbols("i")
    n = prod(node.shape)
    return L.LoopNest({"x": L.Buf(input=0, shape=(n,)), "out": L.Buf(output=True, shape=(n,))},
                      [(i, n)], [L.Store("out", (i,), L.load("x", i))])


RESHAPE = register(OpDef(
    "reshape", "shape", infer=_reshape_infer,
    reference=lambda x, *, shape: np.reshape(x, shape),
    reference_views=(0,),  # a NumPy view of x
    grad=lambda ctx: [reshape(ctx.g, ctx.inputs[0].shape)],
    loops=_reshape_loops,
))


def _tensor(x) -> Tensor:
    """`x` as a tensor: an array or a number becomes a constant, as in every other op (a
    NumPy bias of a convolution raised an AttributeError from here)."""
    if isinstance(x, Tensor):
        return x
    from .elementwise import lift

    return lift(x)[0]


def reshape(x: Tensor, shape: Sequence) -> Tensor:
    """Reshape (one entry may be -1; entries may be ints or dimension names)."""
    x = _tensor(x)
    shape = tuple(shape)
    unknown = [i for i, d in enumerate(shape) if isinstance(d, (int, np.integer)) and d == -1]
    if len(unknown) > 1:
        raise ShapeError(f"reshape to {shape}: only one -1 is allowed")
    if unknown:
        known = [as_dim(d) for i, d in enumerate(shape) if i != unknown[0]]
        total, rest = prod(x.shape), prod(known)
        missing = sympy.simplify(sympy.sympify(total, strict=True) /
                                 sympy.sympify(rest, strict=True))
        if missing.is_Rational and not missing.is_Integer:
            raise ShapeError(
                f"cannot reshape {format_shape(x.shape)} to {shape}: "
                f"{total} elements do not divide into {rest}"
            )
        shape = shape[: unknown[0]] + (missing,) + shape[unknown[0] + 1:]
    shape = tuple(as_dim(d) for d in shape)
    if shape == tuple(x.shape):
        return x
    return apply(RESHAPE, [x], shape=shape)


# -- transpose -------------------------------------------------------------------------------


def _transpose_infer(types, attrs, checks):
    (x,) = types
    axes = attrs["axes"]
    if not isinstance(axes, tuple) or not all(is_int_value(a) for a in axes):
        raise GraphError(f"axes must be a tuple of ints, got {axes!r}")
    if sorted(axes) != list(range(x.ndim)):
        raise ShapeError(f"axes {axes} are not a permutation of {x.ndim} axes")
    return TensorType(x.dtype, tuple(x.shape[a] for a in axes))


def _transpose_loops(node, program):
    axes = node.attrs["axes"]

    def source(idx):
        src = [None] * len(axes)
        for out_axis, a in enumerate(axes):
            src[a] = idx[out_axis]
        return L.load("x0", *src)

    return _gather(node, source)


TRANSPOSE = register(OpDef(
    "transpose", "shape", infer=_transpose_infer,
    reference=lambda x, *, axes: np.transpose(x, axes),
    reference_views=(0,),  # a NumPy view of x
    grad=lambda ctx: [transpose(ctx.g, tuple(np.argsort(ctx.node.attrs["axes"])))],
    loops=_transpose_loops,
))


def transpose(x: Tensor, axes=None) -> Tensor:
    """Permute axes (reverse them when axes is None), as numpy.transpose."""
    x = _tensor(x)
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(
        normalize_axis(a, x.ndim) for a in axes)
    if axes == tuple(range(x.ndim)):
        return x
    return apply(TRANSPOSE, [x], axes=axes)


# -- broadcast_to and its adjoint ------------------------------------------------------------


def _broadcast_infer(types, attrs, checks):
    (x,) = types
    shape = attrs["shape"]
    if len(shape) < x.ndim:
        raise ShapeError(f"cannot broadcast {format_shape(x.shape)} to {format_shape(shape)}")
    for d, t in zip(reversed(x.shape), reversed(shape)):
        if not is_one(d):
            checks.equal(d, t, f"cannot broadcast {format_shape(x.shape)} to {format_shape(shape)}")
    return TensorType(x.dtype, shape)


def _broadcast_loops(node, program):
    (x,) = node.inputs
    lead = node.ndim - x.ndim
    return _gather(node, lambda idx: L.load("x0", *[
        0 if is_one(d) and not is_one(node.shape[a + lead]) else idx[a + lead]
        for a, d in enumerate(x.shape)]))


BROADCAST_TO = register(OpDef(
    "broadcast_to", "shape", infer=_broadcast_infer,
    reference=lambda x, *, shape: np.broadcast_to(x, shape),
    reference_views=(0,),  # a NumPy view of x
    grad=lambda ctx: [sum_to_shape(ctx.g, ctx.inputs[0].shape)],
    loops=_broadcast_loops,
))


def broadcast_to(x: Tensor, shape: Sequence) -> Tensor:
    x = _tensor(x)
    shape = tuple(as_dim(d) for d in shape)
    if shape == tuple(x.shape):
        return x
    return apply(BROADCAST_TO, [x], shape=shape)


def sum_to_shape(g: Tensor, shape: Sequence) -> Tensor:
    """Undo NumPy broadcasting: sum g over the axes that were broadcast to reach g's shape.

    This is the one place autodiff handles broadcasting; every gradient rule calls it.
    """
    from .reduce import sum as reduce_sum

    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ShapeError(f"cannot sum {format_shape(g.shape)} down to {format_shape(shape)}")
    axes = list(range(lead))
    for i, d in enumerate(shape):
        if is_one(d) and not is_one(g.shape[lead + i]):
            axes.append(lead + i)
    if axes == list(range(lead)) and tuple(g.shape[lead:]) == shape:
        # only new leading axes: the sum has the shape already (a bias's gradient), no reshape
        return reduce_sum(g, axis=tuple(axes))
    out = reduce_sum(g, axis=tuple(axes), keepdims=True) if axes else g
    return reshape(out, shape)


# -- concat / stack --------------------------------------------------------------------------


def _concat_infer(types, attrs, checks):
    first = types[0]
    if first.ndim == 0:
        raise ShapeError("cannot concatenate 0-d tensors (stack them)")
    axis = check_axis(attrs["axis"], first.ndim)
    if len({t.dtype for t in types}) != 1:
        raise GraphError("concat inputs must share one dtype")
    total = 0
    for t in types:
        if t.ndim != first.ndim:
            raise ShapeError("concat inputs must have the same rank: " +
                             ", ".join(format_shape(t.shape) for t in types))
        for a in range(first.ndim):
            if a != axis:
                checks.equal(first.shape[a], t.shape[a],
                             f"concat inputs must match except on axis {axis}")
        total = total + t.shape[axis]
    shape = list(first.shape)
    shape[axis] = as_dim(total) if not isinstance(total, int) else total
    return TensorType(first.dtype, shape)


def _concat_grad(ctx):
    axis = ctx.node.attrs["axis"]
    grads, offset = [], 0
    for x in ctx.inputs:
        size = x.shape[axis]
        starts = tuple(offset if a == axis else 0 for a in range(x.ndim))
        grads.append(slice_op(ctx.g, starts, (1,) * x.ndim, tuple(x.shape)))
        offset = offset + size
    return grads


def _concat_loops(node, program):
    """Each input copied into its block of the output: out[..., start_k + i, ...] = x_k[..., i,
    ...], one nest per run of equally shaped inputs (their copies share its points). Plain
    copies, which vectorize, rather than a gather that picks the source element by element."""
    axis = node.attrs["axis"]
    idx = _idx(node.ndim)
    bufs = {f"x{k}": L.Buf(input=k) for k in range(len(node.inputs))}
    bufs["out"] = L.Buf(output=True)
    nests, start, k = [], 0, 0
    while k < len(node.inputs):
        shape = node.inputs[k].shape
        group = [k]
        while (group[-1] + 1 < len(node.inputs)
               and tuple(node.inputs[group[-1] + 1].shape) == tuple(shape)):
            group.append(group[-1] + 1)
        stores = []
        for j in group:
            at = tuple(i + start if a == axis else i for a, i in enumerate(idx))
            stores.append(L.Store("out", at, L.load(f"x{j}", *idx)))
            start = start + shape[axis]
        nests.append(L.LoopNest(bufs, list(zip(idx, shape)), stores,
                                name=f"part{len(nests)}" if len(group) < len(node.inputs) else ""))
        k = group[-1] + 1
    return nests if len(nests) > 1 else nests[0]


CONCAT = register(OpDef(
    "concat", "shape", infer=_concat_infer,
    reference=lambda *xs, axis: np.concatenate(xs, axis=axis),
    grad=_concat_grad,
    loops=_concat_loops,
))


def concat(xs: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along an existing axis."""
    from .elementwise import lift

    xs = lift(*xs)
    if not xs:
        raise GraphError("concat needs at least one tensor")
    if len(xs) == 1:
        return xs[0]
    return apply(CONCAT, xs, axis=normalize_axis(axis, xs[0].ndim))


def expand_dims(x: Tensor, axis: int) -> Tensor:
    x = _tensor(x)
    axis = normalize_axis(axis, x.ndim + 1)
    return reshape(x, tuple(x.shape[:axis]) + (1,) + tuple(x.shape[axis:]))


def stack(xs: Sequence[Tensor], axis: int = 0) -> Tensor:
    """Join tensors along a new axis."""
    from .elementwise import lift

    xs = lift(*xs)
    axis = normalize_axis(axis, xs[0].ndim + 1)
    return concat([expand_dims(x, axis) for x in xs], axis=axis)


# -- pad -------------------------------------------------------------------------------------


def _pad_infer(types, attrs, checks):
    (x,) = types
    widths = attrs["widths"]
    if len(widths) != x.ndim:
        raise ShapeError(f"pad widths {widths} do not match rank {x.ndim}")
    return TensorType(x.dtype, tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, widths)))


def _pad_loops(node, program):
    (x,) = node.inputs
    widths = node.attrs["widths"]

    def source(idx):
        at = [i - lo for i, (lo, _) in zip(idx, widths)]
        inside = sympy.And(*[L.inside(p, d) for p, d in zip(at, x.shape)])
        return sympy.Piecewise((L.load("x0", *at), inside), (0, True))

    return _gather(node, source)


PAD = register(OpDef(
    "pad", "shape", infer=_pad_infer,
    reference=lambda x, *, widths: np.pad(x, widths),
    loops=_pad_loops,
    grad=lambda ctx: [slice_op(ctx.g, tuple(lo for lo, _ in ctx.node.attrs["widths"]),
                               (1,) * ctx.g.ndim, tuple(ctx.inputs[0].shape))],
    doc="Zero padding; widths[i] = (before, after) for axis i.",
))


def pad(x: Tensor, widths) -> Tensor:
    """Zero-pad: widths is an int, a (before, after) pair, or one pair per axis (as numpy.pad)."""
    x = _tensor(x)
    if not x.ndim:
        return x
    try:
        arr = np.broadcast_to(np.asarray(widths, dtype=np.int64), (x.ndim, 2))
    except ValueError:
        raise ShapeError(f"pad widths {widths} do not fit a tensor of rank {x.ndim}: give an int, "
                         f"a (before, after) pair, or {x.ndim} pairs") from None
    if arr is None:
        return x
    if (arr < 0).any():
        raise ShapeError(f"pad widths must be non-negative, got {widths}")
    w = tuple((int(a), int(b)) for a, b in arr)
    if all(a == 0 and b == 0 for a, b in w):
        return x
    return apply(PAD, [x], widths=w)


# -- static slicing --------------------------------------------------------------------------


def _slice_infer(types, attrs, checks):
    (x,) = types
    starts, steps, sizes = attrs["starts"], attrs["steps"], attrs["sizes"]
    if not len(starts) == len(steps) == len(sizes) == x.ndim:
        raise ShapeError("slice needs a start, step and size for every axis")
    for axis, (d, s, st, n) in enumerate(zip(x.shape, starts, steps, sizes)):
        if isinstance(n, int) and n == 0:
            continue
        last = s + (n - 1) * st
        if all(isinstance(v, int) for v in (last, d)):  # the common, static case: no sympy
            if last < 0:
                raise ShapeError(f"slice on axis {axis} starts before 0")
            if last >= d:
                raise ShapeError(f"slice on axis {axis} runs past the end ({d})")
            continue
        if not isinstance(n, int):  # (x[1:] of an empty batch would have -1 elements)
            checks.holds(sympy.Ge(n, 0, evaluate=False),
                         f"slice on axis {axis} has {format_dim(n)} >= 0 elements (the axis "
                         f"is {format_dim(d)})")
        starts_in = sympy.Ge(last, 0, evaluate=False)
        ends_in = sympy.Lt(last, d, evaluate=False)
        if not isinstance(n, int):  # an empty slice (n = 0, e.g. an empty batch) is in range
            empty = sympy.Eq(n, 0, evaluate=False)
            starts_in = sympy.Or(empty, starts_in, evaluate=False)
            ends_in = sympy.Or(empty, ends_in, evaluate=False)
        checks.holds(starts_in, f"slice on axis {axis} starts before 0")
        checks.holds(ends_in, f"slice on axis {axis} runs past the end ({d})")
    return TensorType(x.dtype, sizes)


def _slices(starts, steps, sizes):
    out = []
    for s, st, n in zip(starts, steps, sizes):
        stop = s + st * n
        out.append(slice(s, None if stop < 0 else stop, st))
    return tuple(out)


def _unslice_reference(g, *, shape, starts, steps):
    out = np.zeros(shape, dtype=g.dtype)
    out[_slices(starts, steps, g.shape)] = g
    return out


def _slice_loops(node, program):
    a = node.attrs
    return _gather(node, lambda idx: L.load("x0", *[
        s + i * st for i, s, st in zip(idx, a["starts"], a["steps"])]))


def _unslice_loops(node, program):
    """out[i] = g[(i - start) / step] where that is an integer in range, else 0."""
    (g,) = node.inputs
    a = node.attrs

    def source(idx):
        at, conds = [], []
        for i, s, st, n in zip(idx, a["starts"], a["steps"], g.shape):
            # q = (i - start) / step; for a negative step, (start - i) / -step
            q, ok = L.covering(i, 0, st, 1, -s, n) if st > 0 else L.covering(-i, 0, -st, 1, s, n)
            at.append(q)
            conds.append(ok)
        return sympy.Piecewise((L.load("x0", *at), sympy.And(*conds)), (0, True))

    return _gather(node, source)


SLICE = register(OpDef(
    "slice", "shape", infer=_slice_infer,
    reference=lambda x, *, starts, steps, sizes: x[_slices(starts, steps, sizes)],
    reference_views=(0,),  # a NumPy view of x
    grad=lambda ctx: [unslice(ctx.g, tuple(ctx.inputs[0].shape), ctx.node.attrs["starts"],
                              ctx.node.attrs["steps"])],
    doc="x[start : start + step*size : step] on every axis.",
    loops=_slice_loops,
))

UNSLICE = register(OpDef(
    "unslice", "shape",
    infer=lambda types, attrs, checks: TensorType(types[0].dtype, attrs["shape"]),
    reference=_unslice_reference,
    grad=lambda ctx: [slice_op(ctx.g, ctx.node.attrs["starts"], ctx.node.attrs["steps"],
                               tuple(ctx.inputs[0].shape))],
    doc="The adjoint of slice: zeros of `shape` with g written at the sliced positions.",
    loops=_unslice_loops,
))


def slice_op(x: Tensor, starts, steps, sizes) -> Tensor:
    starts, steps, sizes = (tuple(as_dim(v) if not isinstance(v, int) else v for v in t)
                            for t in (starts, steps, sizes))
    if all(s == 0 for s in starts) and all(st == 1 for st in steps) and sizes == tuple(x.shape):
        return x
    return apply(SLICE, [x], starts=starts, steps=steps, sizes=sizes)


def unslice(g: Tensor, shape, starts, steps) -> Tensor:
    shape = tuple(as_dim(d) for d in shape)
    if all(s == 0 for s in starts) and all(st == 1 for st in steps) and shape == tuple(g.shape):
        return g
    return apply(UNSLICE, [g], shape=shape, starts=tuple(starts), steps=tuple(steps))


def _slice_bounds(sl: slice, dim):
    """(start, step, size) of a Python slice over an axis of size `dim` (int or symbolic)."""
    step = 1 if sl.step is None else sl.step
    if not isinstance(step, (int, np.integer)) or step == 0:
        raise GraphError(f"slice step must be a non-zero int, got {sl.step!r}")
    if isinstance(dim, int):
        start, stop, step = sl.indices(dim)
        size = len(range(start, stop, step))
        return start, step, size
    if step < 0:
        raise GraphError(f"negative slice steps need a known size, axis has size {dim}")

    def bound(v, default):
        if v is None:
            return default
        if not isinstance(v, (int, np.integer)):
            raise GraphError(f"slice bounds must be ints, got {v!r}")
        v = int(v)
        return sympy.Max(0, dim + v) if v < 0 else sympy.Min(v, dim)

    start, stop = bound(sl.start, 0), bound(sl.stop, dim)
    size = sympy.Max(0, sympy.ceiling((stop - start) / step))
    return as_dim(sympy.sympify(start, strict=True)), step, as_dim(size)


def getitem(x: Tensor, index) -> Tensor:
    """Static NumPy-style indexing with ints, slices, None and Ellipsis."""
    index = index if isinstance(index, tuple) else (index,)
    for i in index:
        if isinstance(i, (Tensor, np.ndarray, list)) or isinstance(i, bool):
            raise GraphError(
                "only static indexing (ints, slices, None, ...) is supported; "
                "use gc.take / gc.nn.functional.embedding to gather by a tensor of indices"
            )
    consumed = sum(1 for i in index if i is not None and i is not Ellipsis)
    if consumed > x.ndim:
        raise ShapeError(f"too many indices ({consumed}) for a tensor of rank {x.ndim}")
    if Ellipsis in index:
        k = index.index(Ellipsis)
        index = index[:k] + (slice(None),) * (x.ndim - consumed) + index[k + 1:]
    else:
        index = index + (slice(None),) * (x.ndim - consumed)
    starts, steps, sizes, out_shape = [], [], [], []
    axis = 0
    for i in index:
        if i is None:
            out_shape.append(1)
            continue
        dim = x.shape[axis]
        if isinstance(i, slice):
            start, step, size = _slice_bounds(i, dim)
            out_shape.append(size)
        elif isinstance(i, (int, np.integer)):
            i = int(i)
            if isinstance(dim, int) and not -dim <= i < dim:
                raise ShapeError(f"index {i} is out of range for axis {axis} of size {dim}")
            start, step, size = (i if i >= 0 else dim + i), 1, 1
        else:
            raise GraphError(f"unsupported index {i!r}")
        starts.append(start)
        steps.append(step)
        sizes.append(size)
        axis += 1
    out = slice_op(x, tuple(starts), tuple(steps), tuple(sizes))
    return reshape(out, tuple(out_shape))


def flatten(x: Tensor, start_axis: int = 1) -> Tensor:
    """Merge the axes from `start_axis` on into one (keeps the batch axis by default)."""
    x = _tensor(x)
    start_axis = normalize_axis(start_axis, x.ndim)
    return reshape(x, tuple(x.shape[:start_axis]) + (prod(x.shape[start_axis:]),))


def same_shape(a, b) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) is True for x, y in zip(a, b))
