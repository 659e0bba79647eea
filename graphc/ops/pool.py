"""Max and average pooling in any number of spatial dimensions, with their adjoints.

Max pooling picks the first maximum of each window in row-major scan order (as PyTorch's CPU
kernel does); its gradient routes g to that position. The family is closed under
differentiation:

* ``max_pool(x)``            -> grad: ``max_pool_grad(x, g)``
* ``max_pool_grad(x, g)``    -> grad in g: ``max_pool_select(x, h)``; in x: zero (a.e.)
* ``max_pool_select(x, h)``  -> grad in h: ``max_pool_grad(x, g)``; in x: zero (a.e.)
* ``avg_pool(x)`` <-> ``avg_pool_grad(g)`` (adjoint pair; padding counts as zeros, as PyTorch's
  default ``count_include_pad=True``)
"""

from __future__ import annotations

import numpy as np
import sympy

from ..errors import ShapeError
from ..ir.shapes import as_dim, format_dim, prod
from ..ir.tensor import Tensor, apply
from ..ir.types import TensorType
from .conv import conv_out_size, int_tuple, windows
from .registry import ZERO, OpDef, register


def _pool_out(shape, attrs, checks):
    kernel, stride, padding = attrs["kernel"], attrs["stride"], attrs["padding"]
    nd = len(kernel)
    if len(shape) != nd + 2:
        raise ShapeError(f"{nd}-d pooling needs input (N, C, {nd} spatial dims), got rank "
                         f"{len(shape)}")
    if any(s < 1 for s in stride) or any(k < 1 for k in kernel):
        raise ShapeError("kernel size and stride must be >= 1")
    if any(p < 0 or 2 * p > k for p, k in zip(padding, kernel)):
        raise ShapeError("padding must be between 0 and half the kernel size")
    out = []
    for i in range(nd):
        size = shape[2 + i]
        # an empty image has no element for a window to take (a max pooling window of
        # padding alone has no value); PyTorch refuses it too
        checks.not_empty(size, f"spatial dim {i} is empty: pooling needs an element in every "
                               f"window",
                         f"spatial dim {i} has an element ({format_dim(size)} >= 1: pooling "
                         f"an empty image is undefined)")
        o = conv_out_size(size, kernel[i], stride[i], padding[i], 1)
        checks.holds(sympy.Ge(o, 1, evaluate=False),
                     f"spatial dim {i} is smaller than the pooling window")
        out.append(o)
    return tuple(shape[:2]) + tuple(out)


def _pool_infer(types, attrs, checks):
    return TensorType(types[0].dtype, _pool_out(types[0].shape, attrs, checks))


def _out_sizes(x_shape, kernel, stride, padding):
    return tuple(conv_out_size(x_shape[2 + i], kernel[i], stride[i], padding[i], 1)
                 for i in range(len(kernel)))


def _flat_windows(x, kernel, stride, padding, pad_value):
    out = _out_sizes(x.shape, kernel, stride, padding)
    win = windows(x, kernel, stride, padding, (1,) * len(kernel), out, pad_value)
    window = int(np.prod(kernel))  # explicit: -1 cannot be inferred for an empty batch
    return win.reshape(win.shape[: 2 + len(kernel)] + (window,)), out


def _argmax_positions(x, kernel, stride, padding):
    """For every window, the flat index into the padded input of its first maximum: the
    first NaN, else the first largest value, never a padding cell (a window whose taps are
    all -inf, or all the integer minimum, ties with its padding: its first tap wins)."""
    nd = len(kernel)
    pad_value = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    flat, out = _flat_windows(x, kernel, stride, padding, pad_value)
    inside, _ = _flat_windows(np.ones(x.shape, bool), kernel, stride, padding, False)
    top = flat.max(axis=-1, keepdims=True)  # NaN if the window has one
    hit = flat == top
    if x.dtype.kind == "f":
        hit |= np.isnan(flat)
    k = np.argmax(hit & inside, axis=-1)  # (N, C, *out), index inside the window
    kcoords = np.unravel_index(k, kernel)
    ocoords = np.indices(out, sparse=True)
    padded = tuple(s + 2 * p for s, p in zip(x.shape[2:], padding))
    coords = tuple(o * s + kc for o, s, kc in zip(ocoords, stride, kcoords))
    flat_idx = np.ravel_multi_index(coords, padded) if nd else k
    return flat_idx, padded


def max_pool_reference(x, *, kernel, stride, padding):
    pad_value = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    flat, _ = _flat_windows(x, kernel, stride, padding, pad_value)
    return flat.max(axis=-1)


def max_pool_grad_reference(x, g, *, kernel, stride, padding):
    idx, padded = _argmax_positions(x, kernel, stride, padding)
    n, c = x.shape[:2]
    acc = np.zeros((n, c, int(np.prod(padded))), dtype=g.dtype)
    rows = np.arange(n * c).reshape(n, c, *([1] * len(kernel)))
    np.add.at(acc.reshape(n * c, acc.shape[-1]), (np.broadcast_to(rows, idx.shape), idx), g)
    acc = acc.reshape((n, c) + padded)
    crop = tuple(slice(p, p + s) for p, s in zip(padding, x.shape[2:]))
    return acc[(slice(None), slice(None)) + crop]


def max_pool_select_reference(x, h, *, kernel, stride, padding):
    idx, padded = _argmax_positions(x, kernel, stride, padding)
    n, c = x.shape[:2]
    hp = np.pad(h, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    hp = hp.reshape(n, c, int(np.prod(hp.shape[2:])))  # sizes explicit: n may be 0
    picked = np.take_along_axis(hp, idx.reshape(n, c, int(np.prod(idx.shape[2:]))), axis=-1)
    return picked.reshape(idx.shape)


def _attrs(node):
    a = node.attrs
    return dict(kernel=a["kernel"], stride=a["stride"], padding=a["padding"])


# -- the kernels, as loop nests --------------------------------------------------------------


def _record_key(node):
    """The argmax record a max pooling writes and its adjoints read (same input, geometry)."""
    a = node.attrs
    return ("maxpool", node.inputs[0].uid, a["kernel"], a["stride"], a["padding"])


def _has(program, ops, key) -> bool:
    return any(n.op.name in ops and _record_key(n) == key for n in program.nodes)


def _window(node, x, out_index):
    """The window of output position `out_index` of a pooling of x: (kernel offsets and their
    bounds, tap positions, inside?, the taps' flat position in x's plane)."""
    from . import loops as L

    a = node.attrs
    nd = len(a["kernel"])
    ks = L.index_symbols(" ".join(f"k{d}" for d in range(nd)))
    taps = [L.tap(o, k, s, 1, p) for o, k, s, p in zip(out_index, ks, a["stride"],
                                                          a["padding"])]
    inside = sympy.And(*[L.inside(t, d) for t, d in zip(taps, x.shape[2:])])
    flat = 0
    for t, d in zip(taps, x.shape[2:]):
        flat = flat * d + t
    return list(zip(ks, a["kernel"])), taps, inside, flat


def _unflatten(flat, sizes):
    """Coordinates of a flat position (row-major over sizes)."""
    from . import expr as E

    coords, rest = [], flat
    for d in reversed(sizes[1:]):
        coords.append(E.mod(rest, d))
        rest = E.floordiv(rest, d)
    coords.append(rest)
    return list(reversed(coords))


def _pool_domain(node, shape):
    from . import loops as L

    idx = L.index_symbols(" ".join(f"i{a}" for a in range(len(shape))))
    return idx, list(zip(idx, shape))


def _window_local(ks, kernel):
    """The window-local number of kernel offset `ks` (row-major over the kernel's sizes):
    what the argmax record holds. Small and of the values' width (int32), so the search's
    vector form keeps its index lanes beside the value lanes, and its gradient finds a
    position's window without dividing the input's sizes."""
    local = 0
    for k, size in zip(ks, kernel):
        local = local * size + k
    return local


def _argmax_of(node, program, x, n, c, out_index):
    """The window-local number (`_window_local`) of a window's first maximum: read from the
    forward's record when the program has one, else found again."""
    from . import loops as L

    key = _record_key(node)
    if node.op.name != "max_pool" and _has(program, ("max_pool",), key):
        return L.load("argmax", n, c, *out_index)
    bounds, taps, inside, _ = _window(node, x, out_index)
    local = _window_local([k for k, _ in bounds], node.attrs["kernel"])
    return L.argmax(L.load("x", n, c, *taps), local, bounds, where=inside)


def _argmax_taps(node, program, x, n, c, out_index):
    """The input coordinates of a window's first maximum."""
    from . import loops as L

    a = node.attrs
    ks = _unflatten(_argmax_of(node, program, x, n, c, out_index), list(a["kernel"]))
    return [L.tap(o, k, s, 1, p) for o, k, s, p in zip(out_index, ks, a["stride"],
                                                        a["padding"])]


def _record_buffer(node, x):
    from . import loops as L

    shape = tuple(x.shape[:2]) + tuple(_out_sizes(x.shape, node.attrs["kernel"],
                                                  node.attrs["stride"], node.attrs["padding"]))
    return L.Buf(scratch=_record_key(node), shape=shape, dtype=np.dtype(np.int32))


def _max_pool_loops(node, program):
    """out = the first maximum of each window (the first NaN wins; padding never does); when
    the program differentiates it, the window-local number of that maximum is recorded for
    the adjoints, by the same search (its comparisons are the value's: computed once)."""
    from . import loops as L

    (x,) = node.inputs
    idx, domain = _pool_domain(node, node.shape)
    n, c, out_index = idx[0], idx[1], idx[2:]
    bufs = {"x": L.Buf(input=0), "out": L.Buf(output=True)}
    bounds, taps, inside, _ = _window(node, x, out_index)
    tap = L.load("x", n, c, *taps)
    value = L.reduce_("max_first", tap, bounds, where=inside)
    if not _has(program, ("max_pool_grad", "max_pool_select"), _record_key(node)):
        return L.LoopNest(bufs, domain, [L.Store("out", idx, value)], hints=_rows_rolled(idx))
    bufs["argmax"] = _record_buffer(node, x)
    local = _window_local([k for k, _ in bounds], node.attrs["kernel"])
    return L.LoopNest(bufs, domain, [
        L.Store("argmax", idx, L.argmax(tap, local, bounds, where=inside)),
        L.Store("out", idx, value)], hints=_rows_rolled(idx))


def _rows_rolled(idx):
    """The host keeps the loop along the output's rows rolled: LLVM vectorizes it (the
    window's taps, unrolled, inside). Left to it, a row of 8 or 12 positions is unrolled
    whole and its straight-line code vectorized across positions into gathers and
    scatters (the gradient of cnn32's second pooling, rows of 8: 6x slower)."""
    return {"rolled": (idx[-1],)}


def _max_pool_select_loops(node, program):
    """out = h at each window's argmax in x."""
    from . import loops as L

    x, h = node.inputs
    idx, domain = _pool_domain(node, node.shape)
    n, c, out_index = idx[0], idx[1], idx[2:]
    bufs = {"x": L.Buf(input=0), "h": L.Buf(input=1), "out": L.Buf(output=True),
            "argmax": _record_buffer(node, x)}
    at = _argmax_taps(node, program, x, n, c, out_index)
    return L.LoopNest(bufs, domain, [L.Store("out", idx, L.load("h", n, c, *at))])


def _covering_windows(node, out_sizes, position):
    """The output windows that read input position `position`: (bounds over which the
    windows run, their output positions, the condition that one exists). Per axis,
    o = lo + t for t in [0, count); windows that do not overlap need no loop at all."""
    from . import expr as E
    from . import loops as L

    a = node.attrs
    if all(s >= k for k, s in zip(a["kernel"], a["stride"])):
        # windows that do not overlap: at most one covers p, o = (p + pad) // s, when
        # p falls in its first k positions and o is an output position
        outs = [E.floordiv(p + pad, s) for p, s, pad in zip(position, a["stride"],
                                                             a["padding"])]
        covered = sympy.And(*[sympy.And(E.mod(p + pad, s) < k, o < size) for p, s, pad, k, o,
                              size in zip(position, a["stride"], a["padding"], a["kernel"],
                                          outs, out_sizes)])
        return [], outs, covered
    ts = L.index_symbols(" ".join(f"t{d}" for d in range(len(position))))
    bounds, outs = [], []
    for t, p, k, s, pad, size in zip(ts, position, a["kernel"], a["stride"], a["padding"],
                                     out_sizes):
        # o*s - pad <= p <= o*s - pad + k - 1:  lo = ceil((p + pad - k + 1)/s), hi = (p + pad)/s
        lo = sympy.Max(0, E.floordiv(p + pad - k + s, s))
        hi = sympy.Min(size - 1, E.floordiv(p + pad, s))
        count = sympy.Max(0, hi - lo + 1)
        bounds.append((t, count))
        outs.append(lo + t)
    return bounds, outs, sympy.true


def _max_pool_grad_loops(node, program):
    """A gather: each input position sums g over the windows whose argmax it is."""
    from . import loops as L

    x, g = node.inputs
    idx, domain = _pool_domain(node, node.shape)
    n, c, position = idx[0], idx[1], idx[2:]
    a = node.attrs
    bounds, outs, covered = _covering_windows(node, g.shape[2:], position)
    # the number, in window o, of the kernel offset that reads this position
    local = _window_local([p + pad - o * s for p, o, s, pad in zip(position, outs, a["stride"],
                                                                   a["padding"])], a["kernel"])
    chosen = sympy.And(covered, sympy.Eq(_argmax_of(node, program, x, n, c, outs), local))
    if bounds:
        value = L.reduce_("sum", L.load("g", n, c, *outs), bounds, where=chosen)
    else:
        value = sympy.Piecewise((L.load("g", n, c, *outs), chosen), (0, True))
    bufs = {"x": L.Buf(input=0), "g": L.Buf(input=1), "out": L.Buf(output=True),
            "argmax": _record_buffer(node, x)}
    if not bounds:
        return L.LoopNest(bufs, domain, [L.Store("out", idx, value)],
                          host=_windows_grad_host(node, program, x, g, bufs))
    # the host's form where windows overlap: every window adds its g at its argmax (no search
    # for the windows that chose a position)
    gidx, gdomain = _pool_domain(node, g.shape)
    where = sympy.Symbol("_where", integer=True)
    plane = prod(x.shape[2:]) if x.ndim > 2 else 1
    flat_out = L.Buf(output=True, shape=(x.shape[0], x.shape[1], plane))  # (N, C, plane)
    flat = 0
    for p, d in zip(_argmax_taps(node, program, x, gidx[0], gidx[1], gidx[2:]), x.shape[2:]):
        flat = flat * d + p
    scatter = L.LoopNest({**bufs, "out": flat_out}, gdomain,
                         [L.Store("out", (gidx[0], gidx[1], where), L.load("g", *gidx),
                                  accumulate=True)],
                         lets=[(where, flat)], zero=("out",))
    return L.LoopNest(bufs, domain, [L.Store("out", idx, value)], host=scatter)


def _windows_grad_host(node, program, x, g, bufs):
    """The host's form of the max pooling's gradient where windows do not overlap: each tap
    of a window gets g where it is the recorded maximum and 0 elsewhere (`_by_windows`)."""
    a = node.attrs

    def value(n, c, outs, ks):
        from . import loops as L

        chosen = sympy.Eq(_argmax_of(node, program, x, n, c, outs),
                          _window_local(ks, a["kernel"]))
        return sympy.Piecewise((L.load("g", n, c, *outs), chosen), (0, True))

    return _by_windows(node, x.shape, g, bufs, value)


def _by_windows(node, x_shape, g, bufs, value):
    """A pooling gradient where windows do not overlap, window by window: each tap of window
    o (kernel offset k) gets ``value(n, c, o, k)``, with the kernel offsets inside the output
    axes (``o_h, k_h, o_w, k_w``): every position once, along the rows, which LLVM
    vectorizes into contiguous loads of g (and the record) and interleaved stores (the
    gather reads them at ``p // s``: gathers). Positions no window covers (gaps, a last odd
    row, padding's side) are cleared first, only where there are any."""
    from . import loops as L

    a = node.attrs
    gidx, _ = _pool_domain(node, g.shape)
    n, c, outs = gidx[0], gidx[1], gidx[2:]
    ks = L.index_symbols(" ".join(f"w{d}" for d in range(len(outs))))
    domain = [(n, x_shape[0]), (c, x_shape[1])]
    for o, k, size, kernel in zip(outs, ks, g.shape[2:], a["kernel"]):
        domain += [(o, size), (k, kernel)]
    taps = [L.tap(o, k, s, 1, p) for o, k, s, p in zip(outs, ks, a["stride"], a["padding"])]
    padded = any(a["padding"])
    where = sympy.And(*[L.inside(t, d) for t, d in zip(taps, x_shape[2:])]) if padded \
        else sympy.true
    tiled = not padded and all(s == k and o * s == d for s, k, o, d in zip(
        a["stride"], a["kernel"], g.shape[2:], x_shape[2:]))
    return L.LoopNest(bufs, domain, [L.Store("out", (n, c, *taps), value(n, c, outs, ks),
                                             where=where)],
                      zero=() if tiled else ("out",), hints=_rows_rolled(outs))


def _avg_pool_loops(node, program):
    """out = the sum of each window's taps inside x, over the whole window's size."""
    from . import loops as L

    (x,) = node.inputs
    idx, domain = _pool_domain(node, node.shape)
    n, c, out_index = idx[0], idx[1], idx[2:]
    bounds, taps, inside, _ = _window(node, x, out_index)
    total = L.reduce_("sum", L.load("x", n, c, *taps), bounds, where=inside)
    value = total * sympy.Rational(1, int(np.prod(node.attrs["kernel"])))
    return L.LoopNest({"x": L.Buf(input=0), "out": L.Buf(output=True)}, domain,
                      [L.Store("out", idx, value)], hints=_rows_rolled(idx))


def _avg_pool_grad_loops(node, program):
    """A gather: each input position sums g / window size over the windows covering it."""
    from . import loops as L

    (g,) = node.inputs
    idx, domain = _pool_domain(node, node.shape)
    n, c, position = idx[0], idx[1], idx[2:]
    bounds, outs, covered = _covering_windows(node, g.shape[2:], position)
    share = sympy.Rational(1, int(np.prod(node.attrs["kernel"])))
    total = L.reduce_("sum", L.load("g", n, c, *outs), bounds) if bounds else \
        sympy.Piecewise((L.load("g", n, c, *outs), covered), (0, True))
    bufs = {"g": L.Buf(input=0), "out": L.Buf(output=True)}
    # where windows do not overlap, the host spreads window by window (as max pooling's)
    host = None if bounds else _by_windows(
        node, node.shape, g, bufs, lambda n, c, outs, ks: L.load("g", n, c, *outs) * share)
    return L.LoopNest(bufs, domain, [L.Store("out", idx, total * share)], host=host)


MAX_POOL = register(OpDef(
    "max_pool", "nn", infer=_pool_infer, reference=max_pool_reference,
    grad=lambda ctx: [max_pool_grad(ctx.inputs[0], ctx.g, **_attrs(ctx.node))],
    doc="Max over each window (padding never wins).", loops=_max_pool_loops,
))


def _max_pool_grad_infer(types, attrs, checks):
    x, g = types
    out = _pool_out(x.shape, attrs, checks)
    for a, b in zip(out, g.shape):
        checks.equal(a, b, "g must have max_pool's output shape")
    return TensorType(g.dtype, x.shape)


MAX_POOL_GRAD = register(OpDef(
    "max_pool_grad", "nn", infer=_max_pool_grad_infer, reference=max_pool_grad_reference,
    grad=lambda ctx: [ZERO, max_pool_select(ctx.inputs[0], ctx.g, **_attrs(ctx.node))],
    doc="Routes each window's g to the position of that window's maximum in x.",
    loops=_max_pool_grad_loops,
))


def _select_infer(types, attrs, checks):
    x, h = types
    for a, b in zip(x.shape, h.shape):
        checks.equal(a, b, "h must have x's shape")
    return TensorType(h.dtype, _pool_out(x.shape, attrs, checks))


MAX_POOL_SELECT = register(OpDef(
    "max_pool_select", "nn", infer=_select_infer, reference=max_pool_select_reference,
    grad=lambda ctx: [ZERO, max_pool_grad(ctx.inputs[0], ctx.g, **_attrs(ctx.node))],
    doc="Picks from h, in every window, the element where x has its maximum.",
    loops=_max_pool_select_loops,
))


def avg_pool_reference(x, *, kernel, stride, padding):
    flat, _ = _flat_windows(x, kernel, stride, padding, 0)
    return (flat.sum(axis=-1) / np.prod(kernel)).astype(x.dtype, copy=False)


def avg_pool_grad_reference(g, *, kernel, stride, padding, in_size):
    n, c = g.shape[:2]
    out = g.shape[2:]
    padded = tuple(s + 2 * p for s, p in zip(in_size, padding))
    acc = np.zeros((n, c) + padded, dtype=g.dtype)
    share = g / np.prod(kernel)
    for kidx in np.ndindex(*kernel):
        target = tuple(slice(k, k + s * (o - 1) + 1, s) for k, s, o in zip(kidx, stride, out))
        acc[(slice(None), slice(None)) + target] += share
    crop = tuple(slice(p, p + s) for p, s in zip(padding, in_size))
    return acc[(slice(None), slice(None)) + crop].astype(g.dtype, copy=False)


AVG_POOL = register(OpDef(
    "avg_pool", "nn", infer=_pool_infer, reference=avg_pool_reference,
    grad=lambda ctx: [avg_pool_grad(ctx.g, in_size=tuple(ctx.inputs[0].shape[2:]),
                                    **_attrs(ctx.node))],
    doc="Mean over each window; zero padding counts (count_include_pad=True).",
    loops=_avg_pool_loops,
))


def _avg_pool_grad_infer(types, attrs, checks):
    (g,) = types
    shape = tuple(g.shape[:2]) + tuple(attrs["in_size"])
    out = _pool_out(shape, attrs, checks)
    for a, b in zip(out, g.shape):
        checks.equal(a, b, "g must have avg_pool's output shape")
    return TensorType(g.dtype, shape)


AVG_POOL_GRAD = register(OpDef(
    "avg_pool_grad", "nn", infer=_avg_pool_grad_infer, reference=avg_pool_grad_reference,
    grad=lambda ctx: [avg_pool(ctx.g, **_attrs(ctx.node))],
    doc="Spreads each window's g evenly over the window (the adjoint of avg_pool).",
    loops=_avg_pool_grad_loops,
))


def _geometry(nd, kernel, stride, padding):
    kernel = int_tuple(kernel, nd, "kernel_size")
    stride = kernel if stride is None else int_tuple(stride, nd, "stride")
    return dict(kernel=kernel, stride=stride, padding=int_tuple(padding, nd, "padding"))


def max_pool(x: Tensor, kernel, stride=None, padding=0, nd: int | None = None) -> Tensor:
    from .elementwise import lift

    (x,) = lift(x)
    nd = nd or (x.ndim - 2)
    return apply(MAX_POOL, [x], **_geometry(nd, kernel, stride, padding))


def max_pool_grad(x: Tensor, g: Tensor, kernel, stride, padding) -> Tensor:
    return apply(MAX_POOL_GRAD, [x, g], kernel=kernel, stride=stride, padding=padding)


def max_pool_select(x: Tensor, h: Tensor, kernel, stride, padding) -> Tensor:
    return apply(MAX_POOL_SELECT, [x, h], kernel=kernel, stride=stride, padding=padding)


def avg_pool(x: Tensor, kernel, stride=None, padding=0, nd: int | None = None) -> Tensor:
    from .elementwise import lift

    (x,) = lift(x, float_only=True)
    nd = nd or (x.ndim - 2)
    return apply(AVG_POOL, [x], **_geometry(nd, kernel, stride, padding))


def avg_pool_grad(g: Tensor, kernel, stride, padding, in_size) -> Tensor:
    return apply(AVG_POOL_GRAD, [g], kernel=kernel, stride=stride, padding=padding,
                 in_size=tuple(as_dim(s) for s in in_size))
