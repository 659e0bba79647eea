"""Convolution in any number of spatial dimensions, and its two adjoints.

Three ops close the family under differentiation (each one's gradients are the other two):

* ``conv(x, w)``            y[n,co,o]  = sum_{ci,k} x[n,ci,o*s + k*d - p] * w[co,ci,k]
* ``conv_transpose(g, w)``  the adjoint in x: scatters g back through w (PyTorch's
  conv_transpose with weight layout (C_in, C_out, k...) is exactly this op)
* ``conv_weight_grad(x, g)`` the adjoint in w: correlates the input with g

The NumPy reference builds windows with ``sliding_window_view`` (im2col without copying) and
contracts them with ``tensordot``: no Python loops over elements.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import sympy
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import GraphError, ShapeError
from ..ir.shapes import as_dim, format_shape, prod
from ..ir.tensor import Tensor, apply
from ..ir.types import TensorType
from .registry import OpDef, register


def conv_out_size(size, k: int, s: int, p: int, d: int):
    """floor((size + 2p - d(k-1) - 1) / s) + 1, as an int or a sympy expression."""
    if isinstance(size, int):
        return (size + 2 * p - d * (k - 1) - 1) // s + 1
    return as_dim(sympy.floor((size + 2 * p - d * (k - 1) - 1) / sympy.Integer(s)) + 1)


def conv_transpose_base_size(size, k: int, s: int, p: int, d: int):
    """The smallest output of a transposed conv: (size-1)*s - 2p + d(k-1) + 1."""
    out = (size - 1) * s - 2 * p + d * (k - 1) + 1
    return out if isinstance(out, int) else as_dim(sympy.expand(out))


def int_tuple(v, n: int, what: str) -> tuple[int, ...]:
    """`v` (an int, or n ints, NumPy integers included) as a tuple of n Python ints; a
    GraphError for anything else (a float, which PyTorch refuses too; a string)."""
    integer = (int, np.integer)
    if isinstance(v, integer):
        t = (v,) * n
    elif hasattr(v, "__iter__") and not isinstance(v, (str, bytes)):
        t = tuple(v)
    else:  # (a float: tuple() of it would be a TypeError)
        t = ()
    if len(t) != n or not all(isinstance(i, integer) for i in t):
        raise GraphError(f"{what} must be an int or {n} ints, got {v!r}")
    return tuple(int(i) for i in t)


def _check_geometry(attrs, nd: int) -> None:
    if any(s < 1 for s in attrs["stride"]) or any(d < 1 for d in attrs["dilation"]):
        raise ShapeError("stride and dilation must be >= 1")
    if any(p < 0 for p in attrs["padding"]):
        raise ShapeError("padding must be >= 0")
    if len(attrs["stride"]) != nd:
        raise ShapeError(f"expected {nd} spatial dims in stride/padding/dilation")


# -- conv ------------------------------------------------------------------------------------


def _check_kernel(weight_shape) -> None:
    """A kernel's sizes (the weight's axes after the first two) are known and at least 1:
    an empty window has no output to give (PyTorch refuses it too)."""
    kernel = tuple(weight_shape[2:])
    if not all(isinstance(k, int) for k in kernel):
        raise ShapeError(f"kernel sizes must be known ints, got weight shape "
                         f"{format_shape(weight_shape)}")
    if any(k < 1 for k in kernel):
        raise ShapeError(f"kernel sizes must be at least 1, got weight shape "
                         f"{format_shape(weight_shape)}")


def _conv_infer(types, attrs, checks):
    x, w = types
    nd = w.ndim - 2
    if nd < 1 or x.ndim != nd + 2:
        raise ShapeError(f"conv needs input (N, C, *spatial) and weight (C_out, C_in, *kernel) "
                         f"of matching rank; got ranks {x.ndim} and {w.ndim}")
    _check_geometry(attrs, nd)
    checks.equal(x.shape[1], w.shape[1], "input channels must equal the weight's C_in")
    _check_kernel(w.shape)
    out = []
    for i in range(nd):
        k = w.shape[2 + i]
        o = conv_out_size(x.shape[2 + i], k, attrs["stride"][i], attrs["padding"][i],
                          attrs["dilation"][i])
        checks.holds(sympy.Ge(o, 1, evaluate=False),
                     f"spatial dim {i} is too small for the kernel (output {o})")
        out.append(o)
    return TensorType(x.dtype, (x.shape[0], w.shape[0], *out))


def windows(x, kernel, stride, padding, dilation, out, pad_value=0):
    """View of x as (N, C, *out, *kernel) windows: x_pad[n, c, o*s + k*d]."""
    nd = len(kernel)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=pad_value)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    need = tuple((o - 1) * s + sp for o, s, sp in zip(out, stride, span))
    xp = xp[(slice(None), slice(None)) + tuple(slice(0, n) for n in need)]
    win = sliding_window_view(xp, span, axis=tuple(range(2, 2 + nd)))
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in stride) + tuple(
        slice(None, None, d) for d in dilation)
    return win[index]


def conv_reference(x, w, *, stride, padding, dilation):
    nd = w.ndim - 2
    kernel = w.shape[2:]
    out = tuple(conv_out_size(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i])
                for i in range(nd))
    win = windows(x, kernel, stride, padding, dilation, out)  # (N, C, *out, *K)
    # contract over C and K: result (N, *out, C_out) -> (N, C_out, *out)
    axes_win = [1] + list(range(2 + nd, 2 + 2 * nd))
    y = np.tensordot(win, w, axes=(axes_win, [1] + list(range(2, 2 + nd))))
    return np.moveaxis(y, -1, 1).astype(x.dtype, copy=False)


def shaped_as(t: Tensor, like: Tensor) -> Tensor:
    """`t` in the shape of `like`, where the two name a size differently: a channel count
    that is a symbol on one side and a number on the other (the convolution checks at call
    time that they are equal). An input's gradient has the input's shape."""
    from .shape_ops import reshape

    return t if tuple(t.shape) == tuple(like.shape) else reshape(t, tuple(like.shape))


def _conv_grad(ctx):
    x, w = ctx.inputs
    a = ctx.node.attrs
    geom = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"])
    dx = conv_transpose_op(ctx.g, w, out_size=tuple(x.shape[2:]), **geom)
    dw = conv_weight_grad(x, ctx.g, kernel=tuple(w.shape[2:]), **geom)
    return [shaped_as(dx, x), shaped_as(dw, w)]


# -- the kernels: columns and a GEMM -----------------------------------------------------
#
# A convolution is an im2col (the window formula, loops.tap), a GEMM, and for the input
# gradient a col2im (its inverse, loops.covering). With C image channels, K kernel offsets,
# O output positions and N samples, the two schedules are:
#
#   GPU, the whole batch at once (one GEMM with N*O columns keeps the device busy):
#     conv:              col (C*K, N*O) = im2col(x);  t (Cout, N*O) = W @ col;  y = permute(t)
#     conv_weight_grad:  col = im2col(x);  gp (Cout, N*O) = permute(g);  dW = gp @ col^T
#     conv_transpose:    gp = permute(g);  col = W^T @ gp;  dx = col2im(col), a gather
#   host, a sample at a time (its columns stay in cache, and no permutation is needed):
#     conv:              col (C*K, O) = im2col(x[n]);  y[n] = W @ col
#     conv_weight_grad:  dW = 0;  col = im2col(x[n]);  dW += g[n] @ col^T
#     conv_transpose:    dx = 0;  col = W^T @ g[n];  dx[n] += col2im(col), a scatter
#
# A 1x1 kernel with stride 1 and no padding needs no columns on the host: x[n] is col (and
# the transpose's columns are dx[n]).


def _sym(prefix: str, count: int):
    from . import loops as L

    return L.index_symbols(" ".join(f"{prefix}{d}" for d in range(count)))


def _scratch(node, name: str, shape):
    from . import loops as L

    return L.Buf(scratch=("conv", node.uid, name), shape=tuple(shape), dtype=node.dtype)


def _geometry(node, kernel):
    a = node.attrs
    return list(zip(a["stride"], a["dilation"], a["padding"]))


#: The cost model of a convolution's host schedule: fixed, from the sizes only (the same
#: graph compiles to the same program on any machine). A sample's GEMM computes every output
#: channel at every output position from every (input channel, kernel tap): Cout·O·C·K
#: multiply-adds, for the forward, the input gradient and the weight gradient alike.
#: From WHOLE_BATCH_MIN_MACS (the size where the llvm backend let the BLAS use its threads
#: when this was measured; backends/llvm/kernels_linalg.THREADED_GEMM is 2^19 since, for an
#: LSTM's per-step products) up to WHOLE_BATCH_MACS, the forward and the
#: input gradient are lowered to one im2col/col2im and one GEMM over the whole batch, as the
#: GPU schedule does: N threaded GEMM calls a step each pay the threads' hand-over, and on a
#: busy 2-core machine that dominated (cnn32: conv 18.6G -> 2.5G cycles for 10 steps). Below
#: it a GEMM runs on one thread, and the per-sample schedule's cache-resident columns win
#: (one BLAS thread: whole-batch was 1.3-2x slower in every convolution kernel; with BLAS
#: threads from 2^19, cnn32's step took 85 ms with its first convolution, 0.88M
#: multiply-adds a sample, per sample and 90 ms with it whole-batch, one round-robin run);
#: above the
#: cap the whole batch's columns would be too large. The weight gradient stays per sample:
#: its whole-batch GEMM (a long inner dimension N·O, a small result) threads poorly
#: (measured 2x slower).
WHOLE_BATCH_MIN_MACS = 1 << 22
WHOLE_BATCH_MACS = 1 << 24


def whole_batch(node) -> bool:
    """True when the cost model lowers this convolution (conv or conv_transpose) on the
    host as whole-batch GEMMs (see WHOLE_BATCH_MACS). Sizes not known at compile time (a
    symbolic image size) keep the per-sample schedule, whose scratch does not grow with
    them."""
    if node.op.name == "conv_transpose":
        g, w = node.inputs
        c, cout, kernel, out_sp = w.shape[1], w.shape[0], w.shape[2:], g.shape[2:]
    elif node.op.name == "conv":
        x, w = node.inputs
        c, cout, kernel, out_sp = x.shape[1], w.shape[0], w.shape[2:], node.shape[2:]
    else:
        return False
    macs = prod((c, cout, *kernel, *out_sp))
    if isinstance(macs, sympy.Expr):
        if not macs.is_Integer:
            return False
        macs = int(macs)
    return WHOLE_BATCH_MIN_MACS <= macs < WHOLE_BATCH_MACS


#: The direct schedule (`loops.DirectConv`): every output position of a row computed in
#: vector registers from the padded input, with no column matrix and no GEMM call. For the
#: forward convolution with stride 1 along the last axis, and the input gradient of one with
#: stride 1 (a correlation of the padded gradient with the flipped kernel), when every size
#: but the batch is known, an output row fills a vector (DIRECT_MIN_WIDTH positions), and
#: at least DIRECT_MIN_WORK of the tiles' multiply-adds make output (`loops.direct_work`:
#: the rest fill the last channel tile and overlapping edge vectors).
#: Measured on one thread of the 2-core AVX2 VM, with tiles of 4 channels: cnn32's 3x3
#: layers (no waste) at 87-92 GFLOP/s, where NumPy's sgemm ran the same layer's im2col GEMM
#: at 61-79 (before counting the im2col) and a 1024^3 product at 92; LeNet-5's first layer
#: (6 channels: 0.75 of the work makes output) 1.8x faster than im2col and a GEMM, its input
#: gradient of the second (6 channels of 12 positions: 0.56) 2x slower. With tiles of 6
#: channels that input gradient is 0.75 of the work and still slower (1.99 against 1.33
#: Mcycles a step): the bar is 0.8.
DIRECT_MIN_WIDTH = 8
DIRECT_MIN_WORK = 0.8

#: Packing a direct convolution's weights asks the host to keep its loops rolled
#: (`LoopNest.hints`). It runs once a step over the weights, and unrolling its five small
#: loops of known count was the most work LLVM did on cnn32's step: rolled, 5.03 -> 4.11
#: billion instructions for cnn32, 3.81 -> 3.52 for LeNet-5 (bench/llvm_work.py). Rolling
#: the padding copy as well took cnn32 to 3.73, but the padding runs over every image of the
#: batch, and LeNet-5's step was 1-3% slower with it rolled (round-robin, one process).
PACK_HINTS = {"rolled": True}


def _tile_form(node) -> bool:
    """What every register-tile schedule (direct or channels last) needs: floats, 1-D or
    2-D, and every size known but the batch."""
    sizes = [d for t in (*node.inputs, node) for d in t.shape[1:]]
    return np.dtype(node.dtype).kind == "f" and len(node.attrs["stride"]) in (1, 2) and \
        all(isinstance(d, (int, sympy.Integer)) for d in sizes)


def _direct_form(node) -> bool:
    """What every direct schedule needs: a tile form (`_tile_form`) of stride 1 along rows."""
    return _tile_form(node) and node.attrs["stride"][-1] == 1


def direct(node) -> bool:
    """True when the cost model lowers this convolution on the host with the direct
    schedule (see DIRECT_MIN_WIDTH). A rule of the sizes and geometry only."""
    from . import loops as L

    name = node.op.name
    if name not in ("conv", "conv_transpose") or not _direct_form(node) or \
            (name == "conv_transpose" and any(s != 1 for s in node.attrs["stride"])):
        return False
    width, channels = int(node.shape[-1]), int(node.shape[1])
    itemsize = np.dtype(node.dtype).itemsize
    # (a row fills a vector: 8 floats of 32 bytes, 16 of 64)
    return width >= max(DIRECT_MIN_WIDTH, L.DIRECT_VECTOR_BYTES // itemsize) and \
        L.direct_work(channels, width, itemsize) >= DIRECT_MIN_WORK


def _as_2d(values, fill):
    """A 1-D convolution's geometry as a 2-D one whose first axis has size 1."""
    values = tuple(int(v) for v in values)
    return (fill, *values) if len(values) == 1 else values


def _padded(node, geo, pad):
    """The steps that put the node's image (its first input, (batch, channels, *spatial))
    with `pad` zeros before each axis into a scratch buffer of the size `geo` reads
    (geo.x_size), and the buffer and geometry the direct schedule reads: the image itself,
    at its own size, when it needs no padding."""
    from . import loops as L

    size = _as_2d(node.inputs[0].shape[2:], 1)
    src = L.Buf(input=0, shape=(geo.batch, geo.channels, *size))
    need = geo.x_size
    if not any(pad) and all(n <= s for n, s in zip(need, size)):
        return [], src, dataclasses.replace(geo, x_size=size)
    # the positions that read the image (the rest is zeros): [lo, hi) along each axis
    lo = [min(max(0, p), n) for p, n in zip(pad, need)]
    hi = [max(min(n, s + p), a) for p, n, s, a in zip(pad, need, size, lo)]
    n, c, i, j = L.index_symbols("n c i j")
    at = (n, c, i + lo[0], j + lo[1])
    value = L.load("src", n, c, i + lo[0] - pad[0], j + lo[1] - pad[1])
    out = _scratch(node, "padded", (geo.batch, geo.channels, *need))
    border = any(a > 0 for a in lo) or any(b < m for b, m in zip(hi, need))
    nest = L.LoopNest({"src": src, "pad": out},
                      [(n, geo.batch), (c, geo.channels), (i, hi[0] - lo[0]),
                       (j, hi[1] - lo[1])],
                      [L.Store("pad", at, value)], name="pad", zero=("pad",) if border else ())
    return [nest], out, geo


def _packed_weights(node, w, channels, out_channels, kernel, flip: bool):
    """The weights in the direct schedule's order: (tiles, channels, *kernel, tile) from `w`
    viewed (out_channels, channels, *kernel), or for a transposed convolution from `w` viewed
    (channels, out_channels, *kernel) with the kernel flipped."""
    from . import loops as L

    tile, tiles = L.direct_tile(out_channels), L.direct_channel_tiles(out_channels)
    q, c, kh, kw, t = L.index_symbols("q c kh kw t")
    co = q * tile + t
    if flip:
        value = L.load("w", c, co, kernel[0] - 1 - kh, kernel[1] - 1 - kw)
    else:
        value = L.load("w", co, c, kh, kw)
    value = sympy.Piecewise((value, co < out_channels), (0, True))
    out = _scratch(node, "packed", (tiles, channels, *kernel, tile))
    return L.LoopNest({"w": w, "packed": out},
                      [(q, tiles), (c, channels), (kh, kernel[0]), (kw, kernel[1]), (t, tile)],
                      [L.Store("packed", (q, c, kh, kw, t), value)], name="pack",
                      hints=dict(PACK_HINTS)), out


def _direct_geometry(node, x_shape, out_shape, stride_h: int):
    """The DirectGeometry of a convolution reading an image of `x_shape` into `out_shape`
    (both (batch, channels, *spatial)), before padding: the padded size is what the output
    rows reach."""
    from . import loops as L

    a = node.attrs
    kernel = _as_2d(a["kernel"] if "kernel" in a else node.inputs[1].shape[2:], 1)
    dilation = _as_2d(a["dilation"], 1)
    out_sp = _as_2d(out_shape[2:], 1)
    need = ((out_sp[0] - 1) * stride_h + dilation[0] * (kernel[0] - 1) + 1,
            out_sp[1] + dilation[1] * (kernel[1] - 1))
    return L.DirectGeometry(x_shape[0], int(x_shape[1]), int(out_shape[1]), need, out_sp,
                            kernel, stride_h, dilation)


def _direct_steps(node):
    """The direct schedule of a conv or a stride-1 conv_transpose: pack the weights, pad
    the input (or the gradient), one DirectConv (then, for a conv_transpose, the repair of
    what inf or NaN weights break: `_non_finite_weights`)."""
    from . import loops as L

    a = node.attrs
    src, w = node.inputs
    transposed = node.op.name == "conv_transpose"
    geo = _direct_geometry(node, src.shape, node.shape,
                           1 if transposed else _as_2d(a["stride"], 1)[0])
    pad = _as_2d(a["padding"], 0)
    if transposed:  # dx = the gradient, padded by d(k-1) - p, correlated with the flipped w
        pad = tuple(d * (k - 1) - p for k, d, p in zip(geo.kernel, geo.dilation, pad))
    w_view = L.Buf(input=1, shape=((geo.channels, geo.out_channels) if transposed else
                                   (geo.out_channels, geo.channels)) + geo.kernel)
    pack, packed = _packed_weights(node, w_view, geo.channels, geo.out_channels, geo.kernel,
                                   transposed)
    steps, x, geo = _padded(node, geo, pad)
    out = L.Buf(output=True, shape=(geo.batch, geo.out_channels, *geo.out_size))
    return [pack, *steps, L.DirectConv({"x": x, "w": packed, "out": out}, "x", "w", "out", geo),
            *_non_finite_weights(node)]


def direct_weight_grad(node) -> bool:
    """True when the cost model lowers this conv_weight_grad on the host with the direct
    schedule (`loops.DirectWeightGrad`): stride 1 along the last axis, every size but the
    batch known, and rows of whole vectors (a multiple of DIRECT_ROW_MULTIPLE positions)."""
    from . import loops as L

    if node.op.name != "conv_weight_grad" or not _direct_form(node):
        return False
    return int(node.inputs[1].shape[-1]) % L.DIRECT_ROW_MULTIPLE == 0


def _direct_weight_grad_steps(node):
    """Pad the input as the forward convolution does, then one DirectWeightGrad."""
    from . import loops as L

    x, g = node.inputs
    geo = _direct_geometry(node, x.shape, g.shape, _as_2d(node.attrs["stride"], 1)[0])
    steps, xp, geo = _padded(node, geo, _as_2d(node.attrs["padding"], 0))
    lanes = L.DIRECT_VECTOR_BYTES // np.dtype(node.dtype).itemsize
    partial = _scratch(node, "partial", (geo.channels, geo.out_channels, *geo.kernel, lanes))
    buffers = {"x": xp, "g": L.Buf(input=1, shape=(geo.batch, geo.out_channels, *geo.out_size)),
               "out": L.Buf(output=True, shape=(geo.out_channels, geo.channels, *geo.kernel)),
               "partial": partial}
    return [*steps, L.DirectWeightGrad(buffers, "x", "g", "out", "partial", geo)]


#: The channels-last schedule (`loops.ChannelsLastConv`): a tile of output positions by a
#: tile of output channels, from a channels-last copy of the padded input. The layout the
#: cost model picks for a convolution of stride 1 (or the input gradient of one) whose rows
#: are shorter than two vectors (16 floats, 8 doubles) where the direct schedule would
#: cover them with one vector (rows of 8: six accumulators, half the fused multiply-adds in
#: flight) or not at all (rows of 9 to 12, whose two-vector tile would be a third empty,
#: and rows shorter than a vector: im2col and a GEMM). It also needs the channels to fill a
#: channel tile (at least CHANNELS_LAST_FILL of the tiles' output channels exist), sums of
#: CHANNELS_LAST_MIN_TERMS products or more (the tile's scalar stores to the NCHW output are
#: amortized), and CHANNELS_LAST_POSITIONS output positions. Measured on the 2-core VM, a
#: step's kernels (least cycles of 25 steps, batch 32, 3x3 unless said, both cores),
#: forward / input gradient against the schedule before: 128 channels of 8x8 0.93x /
#: 0.89x; 64 of 12x12 0.53x / 0.76x; 16 to 32 of 12x12, 5x5, 0.18x / 0.26x; 128 of 10x10
#: 0.95x / 0.80x; 64 of 7x7 0.32x / 0.57x; 512 of 7x7 0.81x / 0.78x; 128 of 6x6 0.72x /
#: 0.87x; 64 of 4x4 0.59x / 0.78x; 256 of 4x4 (one GEMM over the batch before) 0.93x /
#: 1.14x. Not taken: rows of 13 to 15, where the direct tiles were faster (64 of 14x14:
#: channels last 1.08x / 1.05x, of 15x15 1.14x / 1.09x); strided convolutions (64 to 128
#: of 16x16 at stride 2: 1.11x against im2col a sample at a time); 1x1 kernels (1.7x).
CHANNELS_LAST_FILL = 0.8
CHANNELS_LAST_MIN_TERMS = 32


def channels_last(node) -> bool:
    """True when the cost model lowers this convolution (or stride-1 transposed
    convolution: an input gradient) on the host in the channels-last layout
    (CHANNELS_LAST_FILL). A rule of the sizes and geometry only."""
    from . import loops as L

    if node.op.name not in ("conv", "conv_transpose") or not _tile_form(node):
        return False
    kernel = tuple(int(k) for k in node.inputs[1].shape[2:])
    if any(s != 1 for s in node.attrs["stride"]) or prod(kernel) == 1:
        return False
    itemsize = np.dtype(node.dtype).itemsize
    lanes, tile = L.DIRECT_VECTOR_BYTES // itemsize, L.channels_last_tile(itemsize)
    width = int(node.shape[-1])
    if width >= L.DIRECT_TILE_VECTORS * lanes or (width > lanes and direct(node)):
        return False  # a direct tile of two vectors
    out_channels, channels = int(node.shape[1]), int(node.inputs[0].shape[1])
    filled = out_channels / (-(-out_channels // tile) * tile)
    return filled >= CHANNELS_LAST_FILL and channels * prod(kernel) >= \
        CHANNELS_LAST_MIN_TERMS and prod(node.shape[2:]) >= L.CHANNELS_LAST_POSITIONS


def _channels_last_steps(node):
    """Pack the weights by output channel tiles, copy the input (or the gradient) padded
    and channels last, one ChannelsLastConv (then, for a conv_transpose,
    `_non_finite_weights`)."""
    from . import loops as L

    a = node.attrs
    src, w = node.inputs
    transposed = node.op.name == "conv_transpose"
    kernel = _as_2d(w.shape[2:], 1)
    dilation = _as_2d(a["dilation"], 1)
    stride = (1, 1) if transposed else _as_2d(a["stride"], 1)
    pad = _as_2d(a["padding"], 0)
    if transposed:  # dx = the gradient, padded by d(k-1) - p, correlated with the flipped w
        pad = tuple(d * (k - 1) - p for k, d, p in zip(kernel, dilation, pad))
    out_sp = _as_2d(node.shape[2:], 1)
    channels, out_channels = int(src.shape[1]), int(node.shape[1])
    need = tuple((o - 1) * s + d * (k - 1) + 1
                 for o, s, d, k in zip(out_sp, stride, dilation, kernel))
    batch = src.shape[0]
    geo = L.ChannelsLastGeometry(batch, channels, out_channels, need, out_sp, kernel, stride,
                                 dilation)
    # the weights: (tiles, kh, kw, c, t) = w[q*tile + t, c, kh, kw] (flipped for dx)
    tile = L.channels_last_tile(np.dtype(node.dtype).itemsize)
    tiles = -(-out_channels // tile)
    w_view = L.Buf(input=1, shape=((channels, out_channels) if transposed else
                                   (out_channels, channels)) + kernel)
    q, c, kh, kw, t = L.index_symbols("q c kh kw t")
    co = q * tile + t
    value = L.load("w", c, co, kernel[0] - 1 - kh, kernel[1] - 1 - kw) if transposed else \
        L.load("w", co, c, kh, kw)
    packed = _scratch(node, "packed_last", (tiles, *kernel, channels, tile))
    pack = L.LoopNest({"w": w_view, "packed": packed},
                      [(q, tiles), (kh, kernel[0]), (kw, kernel[1]), (c, channels), (t, tile)],
                      [L.Store("packed", (q, kh, kw, c, t),
                               sympy.Piecewise((value, co < out_channels), (0, True)))],
                      name="pack", hints=dict(PACK_HINTS))
    copy, x = _channels_last_copy(node, pad, need, channels)
    out = L.Buf(output=True, shape=(batch, out_channels, *out_sp))
    return [pack, copy, L.ChannelsLastConv({"x": x, "w": packed, "out": out}, "x", "w", "out",
                                           geo), *_non_finite_weights(node)]


def _non_finite_weights(node):
    """What a register-tile schedule of a stride-1 transposed convolution (`_direct_steps`,
    `_channels_last_steps`) runs after its tiles: nothing for a convolution, and for a
    transposed one a nest that sets right what an inf or NaN weight breaks.

    The tiles correlate the gradient, padded by d*(k-1) - p zeros, with the flipped kernel:
    an output position near the edge also sums the taps that land in that padding, 0 * w,
    which the transposed convolution (the NumPy backend's col2im, PyTorch's) does not have.
    For a finite w those terms are +-0 and change no bit (the tiles' sums start at +0, and
    a sum that starts at +0 is never -0), but 0 * inf and 0 * NaN are NaN, where the true
    sum may be finite or +-inf. So in each (sample, channel) plane of the output, each
    position with a tap in the padding whose tiles' sum is NaN is summed again over its
    taps inside the gradient only (`covering`, as the col2im gather does). A term of inf or
    NaN makes a sum inf or NaN in any order, so that sum is NaN, +inf, -inf or finite where
    the NumPy backend's is; every other position keeps the tiles' bits (its sum is not NaN
    only if it has no term 0 * inf or 0 * NaN).

    Only a plane whose first or last position is NaN can need it: a tap in the padding of
    any position is in the padding of one of these two too (along some axis, the tap falls
    before the gradient's start at the plane's first position if it does anywhere, past
    its end at the last), and every sum over such a tap of an inf or NaN weight is NaN. So
    the normal case costs two loads and tests a plane; the loop over the plane's positions
    runs only where one of them is NaN, and its sums only at NaN positions of the border."""
    from . import expr as E
    from . import loops as L

    if node.op.name != "conv_transpose":
        return []
    g, w = node.inputs
    kernel, g_sp, out_sp = (tuple(int(v) for v in t.shape[2:]) for t in (w, g, node))
    g_channels, channels = int(g.shape[1]), int(node.shape[1])
    geometry = _geometry(node, kernel)
    # along each axis, the positions [first, last) whose every tap is inside the gradient
    # (p + pad - k*d in [0, size) for every k < K); the others have taps in the padding
    whole = [(min(max(0, d * (k - 1) - pad), out), max(0, min(out, size - pad)))
             for k, (_, d, pad), size, out in zip(kernel, geometry, g_sp, out_sp)]
    before = any(first > 0 for first, _ in whole)
    after = any(last < out for (_, last), out in zip(whole, out_sp))
    if not (before or after):
        return []
    n, c, r, t = L.index_symbols("n c r t")
    ends = [(0,) * len(out_sp)] * before + [tuple(o - 1 for o in out_sp)] * after
    suspect = sympy.Or(*[E.isnan(L.load("out", n, c, *end)) for end in ends])
    # the plane's positions as one run r, and the taps (the gradient's channel, the kernel's
    # offsets) as one run t: a rolled loop each
    ps, rest = [], r
    for size in reversed(out_sp):
        ps.insert(0, E.mod(rest, size))
        rest = E.floordiv(rest, size)
    ks, co = [], t
    for k in reversed(kernel):
        ks.insert(0, E.mod(co, k))
        co = E.floordiv(co, k)
    border = sympy.Or(*[sympy.Or(*([p < first] if first > 0 else []),
                                 *([p >= last] if last < out else []))
                        for p, (first, last), out in zip(ps, whole, out_sp)])
    redo = sympy.And(border, E.isnan(L.load("out", n, c, *ps)))
    outs, inside = [], []
    for p, k, (s, d, pad), size in zip(ps, ks, geometry, g_sp):
        o, ok = L.covering(p, k, s, d, pad, size)
        outs.append(o)
        inside.append(ok)
    value = L.reduce_("sum", L.load("g", n, co, *outs) * L.load("w", co, c, *ks),
                      [(t, sympy.Piecewise((g_channels * prod(kernel), redo), (0, True)))],
                      where=sympy.And(*inside))
    return [L.LoopNest({"g": L.Buf(input=0), "w": L.Buf(input=1), "out": L.Buf(output=True)},
                       [(n, node.shape[0]), (c, channels)],
                       inner=(r, sympy.Piecewise((prod(out_sp), suspect), (0, True))),
                       inner_stores=[L.Store("out", (n, c, *ps), value, where=redo)],
                       name="non_finite", hints={"rolled": True})]


def _channels_last_copy(node, pad, need, channels: int):
    """The nest that copies the node's first input (batch, channels, *spatial) channels last
    into a scratch buffer (batch, *need, `channels`): (n, i, j, c) = src[n, c, i - pad[0],
    j - pad[1]], zero outside the image and in the channels past the input's (a weight
    gradient's tiles read whole vectors of them); and that buffer."""
    from . import loops as L

    src = node.inputs[0]
    size = _as_2d(src.shape[2:], 1)
    batch, present = src.shape[0], int(src.shape[1])
    src_view = L.Buf(input=0, shape=(batch, present, *size))
    lo = [min(max(0, p), n) for p, n in zip(pad, need)]
    hi = [max(min(n, s + p), low) for p, n, s, low in zip(pad, need, size, lo)]
    n, i, j, c = L.index_symbols("n i j c")
    x = _scratch(node, "padded_last", (batch, *need, channels))
    border = any(low > 0 for low in lo) or any(h < m for h, m in zip(hi, need)) or \
        channels > present
    copy = L.LoopNest({"src": src_view, "x": x},
                      [(n, batch), (c, present), (i, hi[0] - lo[0]), (j, hi[1] - lo[1])],
                      [L.Store("x", (n, i + lo[0], j + lo[1], c),
                               L.load("src", n, c, i + lo[0] - pad[0], j + lo[1] - pad[1]))],
                      name="pad_last", zero=("x",) if border else ())
    return copy, x


def channels_last_weight_grad(node) -> bool:
    """True when the cost model lowers this conv_weight_grad on the host in the channels-last
    layout (`loops.ChannelsLastWeightGrad`): where the direct schedule does not take it
    (rows not a whole number of vectors, or strided) and it is not a GEMM per sample (a 1x1
    of stride 1), when the input channels fill their vectors' tile and the output channels
    their tile of CHANNELS_LAST_POSITIONS rows, each to CHANNELS_LAST_FILL. A sum runs over
    every output position of the batch, so no size of the image decides it. Measured on the
    2-core VM (least cycles of 25 steps, batch 32, both cores), against im2col and a GEMM a
    sample at a time: 64 to 128 channels of 16x16 at stride 2 0.81x, 256 channels of 4x4
    0.67x, 128 to 256 of 8x8 at stride 2 0.70x, a 1x1 of stride 2 0.89x."""
    from . import loops as L

    if node.op.name != "conv_weight_grad" or not _tile_form(node) or \
            direct_weight_grad(node) or _pointwise(node, node.attrs["kernel"]):
        return False
    channels, out_channels = int(node.shape[1]), int(node.shape[0])
    tile, rows = L.channels_last_tile(np.dtype(node.dtype).itemsize), L.CHANNELS_LAST_POSITIONS
    return channels / (-(-channels // tile) * tile) >= CHANNELS_LAST_FILL and \
        out_channels / (-(-out_channels // rows) * rows) >= CHANNELS_LAST_FILL


def _channels_last_weight_grad_steps(node):
    """Copy the input padded and channels last (its channels padded to whole vectors), one
    ChannelsLastWeightGrad reading the gradient as it is."""
    from . import loops as L

    a = node.attrs
    x, g = node.inputs
    kernel, dilation = _as_2d(a["kernel"], 1), _as_2d(a["dilation"], 1)
    stride, pad = _as_2d(a["stride"], 1), _as_2d(a["padding"], 0)
    out_sp = _as_2d(g.shape[2:], 1)
    channels, out_channels = int(x.shape[1]), int(g.shape[1])
    tile = L.channels_last_tile(np.dtype(node.dtype).itemsize)
    need = tuple((o - 1) * s + d * (k - 1) + 1
                 for o, s, d, k in zip(out_sp, stride, dilation, kernel))
    copy, xl = _channels_last_copy(node, pad, need, -(-channels // tile) * tile)
    geo = L.ChannelsLastGeometry(x.shape[0], channels, out_channels, need, out_sp, kernel,
                                 stride, dilation)
    buffers = {"x": xl, "g": L.Buf(input=1, shape=(x.shape[0], out_channels, *out_sp)),
               "out": L.Buf(output=True, shape=(out_channels, channels, *kernel))}
    return [copy, L.ChannelsLastWeightGrad(buffers, "x", "g", "out", geo)]


def _pointwise(node, kernel) -> bool:
    """A 1x1 convolution of stride 1 without padding whose output has its input's positions:
    a product of the channels at each position. (A transposed one's output may have more:
    output_padding, possible with a dilation; those positions are zeros, not the product.)"""
    a = node.attrs
    if not (all(k == 1 for k in kernel) and all(s == 1 for s in a["stride"]) and
            not any(a["padding"])):
        return False
    first, second = node.inputs[0].shape[2:], (
        node.inputs[1] if node.op.name == "conv_weight_grad" else node).shape[2:]
    return tuple(first) == tuple(second)


def _columns(node, kernel, out_sp, sample=None):
    """The column buffer: (C, K..., N, O...) for the whole batch, (C, K..., O...) for one
    sample (the image's channels are C; for conv_transpose, the output's)."""
    C = node.shape[1] if node.op.name == "conv_transpose" else node.inputs[0].shape[1]
    if sample is None:
        return _scratch(node, "col", (C, *kernel, node.inputs[0].shape[0], *out_sp))
    return _scratch(node, "col1", (C, *kernel, *out_sp))


def _im2col(node, kernel, out_sp, sample=None):
    """col[c, k..., (n,) o...] = x[n, c, o*s + k*d - p ...], zero where the tap is padding;
    every sample, or only `sample`."""
    from . import loops as L

    x = node.inputs[0]
    c, n = L.index_symbols("c n")
    ks, os = _sym("k", len(kernel)), _sym("o", len(kernel))
    taps = [L.tap(o, k, s, d, p) for o, k, (s, d, p) in zip(os, ks, _geometry(node, kernel))]
    value = L.load("x", n if sample is None else sample, c, *taps)
    # without padding a tap is always inside; with it, the taps over the edge read zero
    edge = [L.inside(t, size) for t, size, (_, _, p) in
            zip(taps, x.shape[2:], _geometry(node, kernel)) if p]
    if edge:
        value = sympy.Piecewise((value, sympy.And(*edge)), (0, True))
    at = (c, *ks, *([] if sample is not None else [n]), *os)
    extents = (x.shape[1], *kernel, *([] if sample is not None else [x.shape[0]]), *out_sp)
    return L.LoopNest({"x": L.Buf(input=0), "col": _columns(node, kernel, out_sp, sample)},
                      list(zip(at, extents)), [L.Store("col", at, value)], name="im2col")


def _permute(src, dst, batch, channels, positions, to_channels: bool):
    """(N, C, O...) <-> (C, N, O...): dst from src, the positions innermost on both sides."""
    from . import loops as L

    n, c = L.index_symbols("n c")
    os = _sym("o", len(positions))
    if to_channels:
        domain, at, value = [(c, channels), (n, batch)], (c, n, *os), L.load("src", n, c, *os)
    else:
        domain, at, value = [(n, batch), (c, channels)], (n, c, *os), L.load("src", c, n, *os)
    return L.LoopNest({"src": src, "dst": dst}, domain + list(zip(os, positions)),
                      [L.Store("dst", at, value)], name="permute")


def _zero(node):
    from . import loops as L

    idx = _sym("z", node.ndim)
    return L.LoopNest({"out": L.Buf(output=True)}, list(zip(idx, node.shape)),
                      [L.Store("out", idx, 0)], name="zero")


def _col2im_gather(node, kernel, g_sp):
    """dx[n, c, p...] = the sum over kernel offsets k of the column entry whose tap is p:
    each point writes only its own element (no atomics on a GPU)."""
    from . import loops as L

    n, c = L.index_symbols("n c")
    ps, ks = _sym("p", len(kernel)), _sym("k", len(kernel))
    outs, ok = [], []
    for p, k, (s, d, pad), size in zip(ps, ks, _geometry(node, kernel), g_sp):
        o, valid = L.covering(p, k, s, d, pad, size)
        outs.append(o)
        ok.append(valid)
    value = L.reduce_("sum", L.load("col", c, *ks, n, *outs), list(zip(ks, kernel)),
                      where=sympy.And(*ok))
    return L.LoopNest({"col": _columns(node, kernel, g_sp), "out": L.Buf(output=True)},
                      list(zip((n, c, *ps), node.shape)), [L.Store("out", (n, c, *ps), value)],
                      name="col2im")


def _col2im_scatter(node, kernel, g_sp, sample):
    """dx[sample, c, tap] += col[c, k..., o...] for every tap inside the image."""
    from . import loops as L

    c = L.index_symbols("c")[0]
    ks, os = _sym("k", len(kernel)), _sym("o", len(kernel))
    geometry = _geometry(node, kernel)
    taps = [L.tap(o, k, s, d, p) for o, k, (s, d, p) in zip(os, ks, geometry)]
    inside = sympy.And(*[L.inside(t, size) for t, size in zip(taps, node.shape[2:])])
    hints = {}
    if all(_taps_inside(*axis) for axis in zip(geometry, kernel, g_sp, node.shape[2:])):
        # no test per element, and the row loop left rolled: LLVM vectorizes the row's adds
        # (LeNet-5's second layer's input gradient, rows of 8: 2.3x faster; its step 0.78x)
        inside, hints = sympy.true, {"rolled": (os[-1],)}
    at = (c, *ks, *os)
    return L.LoopNest({"col": _columns(node, kernel, g_sp, sample), "out": L.Buf(output=True)},
                      list(zip(at, (node.shape[1], *kernel, *g_sp))),
                      [L.Store("out", (sample, c, *taps), L.load("col", *at), accumulate=True,
                               where=inside)], name="col2im", hints=hints)


def _taps_inside(geometry, k, out_size, size) -> bool:
    """Does every tap of an axis fall inside the image (no padding, and the last window
    ends in it)? Sizes known at compile time only."""
    s, d, p = geometry
    if not all(isinstance(v, (int, sympy.Integer)) for v in (k, out_size, size)):
        return False
    return p == 0 and (int(out_size) - 1) * s + (int(k) - 1) * d <= int(size) - 1


def _conv_loops(node, program):
    from . import loops as L

    x, w = node.inputs
    kernel, out_sp = tuple(w.shape[2:]), tuple(node.shape[2:])
    N, C, Cout = x.shape[0], x.shape[1], w.shape[0]
    K, O = prod(kernel), prod(out_sp)
    out = L.Buf(output=True)
    t = _scratch(node, "t", (Cout, N, *out_sp))

    def gpu():
        return [_im2col(node, kernel, out_sp),
                L.Gemm({"w": L.Buf(input=1), "col": _columns(node, kernel, out_sp), "t": t},
                       "w", "col", "t", Cout, N * O, C * K),
                _permute(t, out, N, Cout, out_sp, to_channels=False)]

    if channels_last(node):
        return L.Schedules(host=_channels_last_steps(node), gpu=gpu)
    if direct(node):
        return L.Schedules(host=_direct_steps(node), gpu=gpu)
    if whole_batch(node):
        steps = gpu()
        return L.Schedules(host=steps, gpu=steps)
    n = L.index_symbols("n")[0]
    if _pointwise(node, kernel):
        per_sample = [L.Gemm({"w": L.Buf(input=1), "x": L.Buf(input=0), "out": out},
                             "w", "x", "out", Cout, O, C, offsets={"x": n * C * O,
                                                                  "out": n * Cout * O})]
    else:
        per_sample = [_im2col(node, kernel, out_sp, n),
                      L.Gemm({"w": L.Buf(input=1), "col": _columns(node, kernel, out_sp, n),
                              "out": out}, "w", "col", "out", Cout, O, C * K,
                             offsets={"out": n * Cout * O})]
    return L.Schedules(host=[L.Repeat(n, N, per_sample, independent=True)], gpu=gpu)


def _conv_weight_grad_loops(node, program):
    from . import loops as L

    x, g = node.inputs
    kernel, out_sp = node.attrs["kernel"], tuple(g.shape[2:])
    N, C, Cout = x.shape[0], x.shape[1], g.shape[1]
    K, O = prod(kernel), prod(out_sp)
    out = L.Buf(output=True)
    gp = _scratch(node, "g", (Cout, N, *out_sp))

    def gpu():
        return [_im2col(node, kernel, out_sp),
                _permute(L.Buf(input=1), gp, N, Cout, out_sp, to_channels=True),
                L.Gemm({"g": gp, "col": _columns(node, kernel, out_sp), "out": out},
                       "g", "col", "out", Cout, C * K, N * O, tb=True)]

    if direct_weight_grad(node):
        return L.Schedules(host=_direct_weight_grad_steps(node), gpu=gpu)
    if channels_last_weight_grad(node):
        return L.Schedules(host=_channels_last_weight_grad_steps(node), gpu=gpu)
    n = L.index_symbols("n")[0]
    if _pointwise(node, kernel):
        per_sample = [L.Gemm({"g": L.Buf(input=1), "x": L.Buf(input=0), "out": out},
                             "g", "x", "out", Cout, C, O, tb=True, accumulate=True,
                             offsets={"g": n * Cout * O, "x": n * C * O})]
    else:
        per_sample = [_im2col(node, kernel, out_sp, n),
                      L.Gemm({"g": L.Buf(input=1), "col": _columns(node, kernel, out_sp, n),
                              "out": out}, "g", "col", "out", Cout, C * K, O, tb=True,
                             accumulate=True, offsets={"g": n * Cout * O})]
    return L.Schedules(host=[_zero(node), L.Repeat(n, N, per_sample)], gpu=gpu)


def _conv_transpose_loops(node, program):
    from . import loops as L

    g, w = node.inputs
    kernel, g_sp = tuple(w.shape[2:]), tuple(g.shape[2:])
    N, Cg, C = g.shape[0], g.shape[1], node.shape[1]
    K, O = prod(kernel), prod(g_sp)
    gp = _scratch(node, "g", (Cg, N, *g_sp))

    def gpu():
        return [_permute(L.Buf(input=0), gp, N, Cg, g_sp, to_channels=True),
                L.Gemm({"w": L.Buf(input=1), "g": gp, "col": _columns(node, kernel, g_sp)},
                       "w", "g", "col", C * K, N * O, Cg, ta=True),
                _col2im_gather(node, kernel, g_sp)]

    n = L.index_symbols("n")[0]
    if channels_last(node):
        return L.Schedules(host=_channels_last_steps(node), gpu=gpu)
    if direct(node):
        return L.Schedules(host=_direct_steps(node), gpu=gpu)
    if whole_batch(node):
        steps = gpu()
        return L.Schedules(host=steps, gpu=steps)
    if _pointwise(node, kernel):  # the columns are dx[n]
        return L.Schedules(host=[L.Repeat(n, N, [L.Gemm(
            {"w": L.Buf(input=1), "g": L.Buf(input=0), "out": L.Buf(output=True)},
            "w", "g", "out", C, O, Cg, ta=True, offsets={"g": n * Cg * O, "out": n * C * O})],
            independent=True)], gpu=gpu)
    per_sample = [L.Gemm({"w": L.Buf(input=1), "g": L.Buf(input=0),
                          "col": _columns(node, kernel, g_sp, n)},
                         "w", "g", "col", C * K, O, Cg, ta=True, offsets={"g": n * Cg * O}),
                  _col2im_scatter(node, kernel, g_sp, n)]
    # (each sample adds into its own image of the output, cleared before)
    return L.Schedules(host=[_zero(node), L.Repeat(n, N, per_sample, independent=True)],
                       gpu=gpu)


CONV = register(OpDef("conv", "nn", infer=_conv_infer, reference=conv_reference, grad=_conv_grad,
                      doc="N-d cross-correlation (PyTorch conv1d/conv2d) without bias.",
                      loops=_conv_loops))


def conv_op(x: Tensor, w: Tensor, stride, padding, dilation) -> Tensor:
    from .elementwise import lift

    x, w = lift(x, w, float_only=True)
    nd = w.ndim - 2
    return apply(CONV, [x, w], stride=int_tuple(stride, nd, "stride"),
                 padding=int_tuple(padding, nd, "padding"),
                 dilation=int_tuple(dilation, nd, "dilation"))


# -- conv_transpose --------------------------------------------------------------------------


def _conv_transpose_infer(types, attrs, checks):
    g, w = types
    nd = w.ndim - 2
    if nd < 1 or g.ndim != nd + 2:
        raise ShapeError(f"conv_transpose needs input (N, C_in, *spatial) and weight "
                         f"(C_in, C_out, *kernel) of matching rank; got ranks {g.ndim}, {w.ndim}")
    _check_geometry(attrs, nd)
    checks.equal(g.shape[1], w.shape[0], "input channels must equal the weight's first axis")
    _check_kernel(w.shape)
    out = attrs["out_size"]
    for i in range(nd):
        k = w.shape[2 + i]
        s, d = attrs["stride"][i], attrs["dilation"][i]
        base = conv_transpose_base_size(g.shape[2 + i], k, s, attrs["padding"][i], d)
        extra = out[i] - base
        checks.holds(sympy.Ge(extra, 0, evaluate=False),
                     f"output size {out[i]} is below the minimum {base}")
        checks.holds(sympy.Lt(extra, builtins_max(s, d), evaluate=False),
                     f"output size {out[i]} exceeds {base} by stride/dilation or more")
        checks.holds(sympy.Ge(out[i], 1, evaluate=False), "output size must be >= 1")
    return TensorType(g.dtype, (g.shape[0], w.shape[1], *out))


def builtins_max(a: int, b: int) -> int:
    return a if a >= b else b


def conv_transpose_reference(g, w, *, stride, padding, dilation, out_size):
    nd = w.ndim - 2
    kernel = w.shape[2:]
    n, ci = g.shape[0], w.shape[1]
    in_sp = g.shape[2:]
    # cols[n, ci, *K, *O] = sum_co w[co, ci, K] g[n, co, O]
    cols = np.tensordot(w, g, axes=([0], [1]))  # (ci, *K, n, *O)
    cols = np.moveaxis(cols, 1 + nd, 0)  # (n, ci, *K, *O)
    full = tuple(builtins_max(o + 2 * p, (i - 1) * s + d * (k - 1) + 1)
                 for o, p, i, s, d, k in zip(out_size, padding, in_sp, stride, dilation, kernel))
    acc = np.zeros((n, ci) + full, dtype=np.result_type(g, w))
    for kidx in np.ndindex(*kernel):
        target = tuple(slice(k * d, k * d + s * (i - 1) + 1, s)
                       for k, d, s, i in zip(kidx, dilation, stride, in_sp))
        acc[(slice(None), slice(None)) + target] += cols[(slice(None), slice(None)) + kidx]
    crop = tuple(slice(p, p + o) for p, o in zip(padding, out_size))
    return acc[(slice(None), slice(None)) + crop].astype(g.dtype, copy=False)


def _conv_transpose_grad(ctx):
    """The convolution of the output's gradient gives dg, and its correlation with g gives
    dw. With an output larger than the minimum (output_padding), that convolution has
    floor(extra / stride) more positions than g per axis: dg drops them, and dw sees g
    padded with as many zeros (terms that are zero in the adjoint)."""
    from .shape_ops import pad

    g, w = ctx.inputs
    a = ctx.node.attrs
    geom = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"])
    kernel = tuple(w.shape[2:])
    more = []
    for y, x, k, s, p, d in zip(ctx.node.shape[2:], g.shape[2:], kernel, a["stride"],
                                a["padding"], a["dilation"]):
        extra = sympy.simplify(conv_out_size(y, int(k), s, p, d) - x)
        if not extra.is_Integer or extra < 0:
            raise GraphError(f"conv_transpose's gradient: cannot tell how far its output "
                             f"({y}) reaches past its input ({x})")
        more.append(int(extra))
    dg = conv_op(ctx.g, w, **geom)
    if any(more):
        dg = dg[(slice(None), slice(None), *[slice(None, -m if m else None) for m in more])]
        g = pad(g, [(0, 0), (0, 0), *[(0, m) for m in more]])
    dw = conv_weight_grad(ctx.g, g, kernel=kernel, **geom)
    return [shaped_as(dg, ctx.inputs[0]), shaped_as(dw, w)]


CONV_TRANSPOSE = register(OpDef(
    "conv_transpose", "nn", infer=_conv_transpose_infer, reference=conv_transpose_reference,
    grad=_conv_transpose_grad,
    doc="N-d transposed convolution (the adjoint of conv in its input), without bias.",
    loops=_conv_transpose_loops,
))


def conv_transpose_op(g: Tensor, w: Tensor, stride, padding, dilation, out_size) -> Tensor:
    from .elementwise import lift

    g, w = lift(g, w, float_only=True)
    nd = w.ndim - 2
    return apply(CONV_TRANSPOSE, [g, w], stride=int_tuple(stride, nd, "stride"),
                 padding=int_tuple(padding, nd, "padding"),
                 dilation=int_tuple(dilation, nd, "dilation"),
                 out_size=tuple(as_dim(o) for o in out_size))


# -- conv_weight_grad ------------------------------------------------------------------------


def _weight_grad_infer(types, attrs, checks):
    x, g = types
    kernel = attrs["kernel"]
    nd = len(kernel)
    if x.ndim != nd + 2 or g.ndim != nd + 2:
        raise ShapeError("conv_weight_grad needs x and g of rank 2 + len(kernel)")
    _check_geometry(attrs, nd)
    checks.equal(x.shape[0], g.shape[0], "batch sizes must agree")
    for i in range(nd):
        o = conv_out_size(x.shape[2 + i], kernel[i], attrs["stride"][i], attrs["padding"][i],
                          attrs["dilation"][i])
        checks.equal(o, g.shape[2 + i], f"g's spatial dim {i} must be conv's output size")
    return TensorType(x.dtype, (g.shape[1], x.shape[1], *kernel))


def conv_weight_grad_reference(x, g, *, kernel, stride, padding, dilation):
    nd = len(kernel)
    out = g.shape[2:]
    win = windows(x, kernel, stride, padding, dilation, out)  # (N, C_in, *O, *K)
    # dw[co, ci, K] = sum_{n, O} g[n, co, O] win[n, ci, O, K]
    dw = np.tensordot(g, win, axes=([0] + list(range(2, 2 + nd)), [0] + list(range(2, 2 + nd))))
    return dw.astype(x.dtype, copy=False)  # (C_out, C_in, *K)


def _weight_grad_grad(ctx):
    x, g = ctx.inputs
    a = ctx.node.attrs
    geom = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"])
    dx = conv_transpose_op(g, ctx.g, out_size=tuple(x.shape[2:]), **geom)
    dg = conv_op(x, ctx.g, **geom)
    return [shaped_as(dx, x), shaped_as(dg, g)]


CONV_WEIGHT_GRAD = register(OpDef(
    "conv_weight_grad", "nn", infer=_weight_grad_infer, reference=conv_weight_grad_reference,
    grad=_weight_grad_grad,
    doc="The adjoint of conv in its weight: correlates x with the output gradient g.",
    loops=_conv_weight_grad_loops,
))


def conv_weight_grad(x: Tensor, g: Tensor, kernel, stride, padding, dilation) -> Tensor:
    nd = len(kernel)
    return apply(CONV_WEIGHT_GRAD, [x, g], kernel=tuple(int(k) for k in kernel),
                 stride=int_tuple(stride, nd, "stride"), padding=int_tuple(padding, nd, "padding"),
                 dilation=int_tuple(dilation, nd, "dilation"))
