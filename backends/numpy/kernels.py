"""Whole-batch NumPy kernels for convolution and pooling: what a careful NumPy programmer writes.

The ops' reference functions (graphc/ops/conv.py, pool.py) define the semantics plainly —
window views, ``tensordot`` over strided views, ``np.add.at`` for the max-pool gradient —
and stay the definition the independent loop references in tests/op_cases.py check. These
kernels compute the same values the way hand-written NumPy training code does:

* im2col over the whole batch into a scratch buffer of layout (C·K, N·O) (one strided copy
  per kernel offset, every sample at once), then one large GEMM: ``W (Cout, C·K) @ cols``
  (returned as its (N, Cout, O) view, laid out channels first); the weight gradient is one
  GEMM against the same columns; the input gradient is the transposed GEMM and a col2im
  that adds each kernel offset's block in place, again over the whole batch. One large
  product rather than one per sample: the BLAS splits it over the cores, while N small
  threaded calls each pay the threads' hand-over (3x slower on a busy 2-core machine).
  Every convolution returns its result channels first in memory and every kernel reads that
  layout without a transposing copy, so bias, ReLU and pooling between two convolutions
  (elementwise NumPy keeps its input's layout) never transpose;
* pooling over strided slices, one kernel offset at a time (``np.maximum(..., out=)``: a few
  passes at memory speed); the max-pool gradient sends each window's gradient to its first
  maximum (``np.argmax``'s choice, NaN counting as the maximum), exactly as the reference
  does, with one comparison and one masked copy per kernel offset.

Scratch memory (the padded input and the columns) is borrowed from a `Scratch` that the
executable owns and reuses from call to call: a kernel never returns a scratch array, and
the step runs one kernel at a time, so one buffer per purpose suffices.
"""

from __future__ import annotations

import math

import numpy as np

from graphc.ops import REGISTRY
from graphc.ops.conv import conv_out_size
from graphc.ops.expr_numpy import select
from graphc.ops.reduce import stable_max


class Scratch:
    """Growing buffers, one per purpose, that kernels borrow for values they never return."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def array(self, purpose: str, shape: tuple, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        size = math.prod(shape) * dtype.itemsize
        buf = self._buffers.get(purpose)
        if buf is None or buf.nbytes < size:
            buf = self._buffers[purpose] = np.empty(max(size, 64), np.uint8)
        return buf[:size].view(dtype).reshape(shape)


def _offset_slices(kidx, dilation, stride, out):
    """The positions (in the padded input) that kernel offset `kidx` reads for every output
    position: start k·d, step s, one per output position."""
    return (slice(None), slice(None)) + tuple(
        slice(k * d, k * d + s * (o - 1) + 1, s) for k, d, s, o in zip(kidx, dilation, stride, out))


def _im2col(x, kernel, stride, padding, dilation, out, scratch, dtype) -> np.ndarray:
    """cols[(c, k), (n, o)] = x_padded[n, c, o·s + k·d], shape (C·prod(K), N·prod(O)): the
    whole batch side by side, so that a convolution is one large GEMM (BLAS splits one large
    product over the cores; N small ones each pay the threads' hand-over). A pointwise,
    unstrided, unpadded convolution reads x itself (no copy when x is channels-first)."""
    n, c = x.shape[:2]
    if all(k == 1 for k in kernel) and all(s == 1 for s in stride) and not any(padding):
        return x.swapaxes(0, 1).astype(dtype, copy=False).reshape(c, n * math.prod(out))
    xp = _padded(x, padding, 0, scratch, channels_first=True).swapaxes(0, 1)  # (C, N, ...)
    cols = scratch.array("cols", (c,) + tuple(kernel) + (n,) + tuple(out), dtype)
    for kidx in np.ndindex(*kernel):
        cols[(slice(None),) + kidx] = xp[_offset_slices(kidx, dilation, stride, out)]
    return cols.reshape(c * math.prod(kernel), n * math.prod(out))


def _out_sizes(spatial, kernel, stride, padding, dilation):
    return tuple(conv_out_size(int(spatial[i]), kernel[i], stride[i], padding[i], dilation[i])
                 for i in range(len(kernel)))


def _channels_first(g, dtype) -> np.ndarray:
    """g (N, C, *O) as the matrix (C, N·prod(O)): a view when g is already laid out
    channels first (every output of this module's convolutions is), else a copy."""
    n, c = g.shape[:2]
    return g.swapaxes(0, 1).astype(dtype, copy=False).reshape(c, n * math.prod(g.shape[2:]))


def conv(x, w, *, stride, padding, dilation, scratch: Scratch):
    """y[n, co, o] = sum_{c,k} w[co, c, k] x_pad[n, c, o·s + k·d]: im2col, then one GEMM
    ``W (Cout, C·K) @ cols (C·K, N·O)``; the result is returned as its (N, Cout, O) view."""
    kernel = w.shape[2:]
    n, co = x.shape[0], w.shape[0]
    out = _out_sizes(x.shape[2:], kernel, stride, padding, dilation)
    dtype = np.result_type(x, w)
    cols = _im2col(x, kernel, stride, padding, dilation, out, scratch, dtype)
    y = w.reshape(co, cols.shape[0]).astype(dtype, copy=False) @ cols
    return y.reshape((co, n) + out).swapaxes(0, 1).astype(x.dtype, copy=False)


def conv_weight_grad(x, g, *, kernel, stride, padding, dilation, scratch: Scratch):
    """dw[co, c, k] = sum_{n,o} g[n, co, o] x_pad[n, c, o·s + k·d]: the forward's columns
    and one GEMM ``g (Cout, N·O) @ cols.T``."""
    co, c = g.shape[1], x.shape[1]
    out = tuple(g.shape[2:])
    dtype = np.result_type(x, g)
    cols = _im2col(x, kernel, stride, padding, dilation, out, scratch, dtype)
    dw = _channels_first(g, dtype) @ cols.T
    return dw.reshape((co, c) + tuple(kernel)).astype(x.dtype, copy=False)


def conv_transpose(g, w, *, stride, padding, dilation, out_size, scratch: Scratch):
    """The adjoint of conv in its input: one GEMM ``cols = W'.T @ g (Cout, N·O)`` with the
    kernel offset outermost, so that each offset's block (C, N, *O) is contiguous, then
    col2im — each block added in place into a channels-first padded result, returned as its
    (N, C, ...) view (the layout the next kernel reads without a copy)."""
    kernel = tuple(w.shape[2:])
    n, co = g.shape[:2]
    ci = w.shape[1]
    taps = math.prod(kernel)
    in_sp = tuple(g.shape[2:])
    dtype = np.result_type(g, w)
    # (Cout, Cin, K) -> (K, Cin, Cout): rows ordered (offset, input channel)
    w2 = w.reshape(co, ci, taps).transpose(2, 1, 0).reshape(taps * ci, co)
    w2 = w2.astype(dtype, copy=False)
    g2 = _channels_first(g, dtype)
    full = tuple(max(o + 2 * p, (i - 1) * s + d * (k - 1) + 1)
                 for o, p, i, s, d, k in zip(out_size, padding, in_sp, stride, dilation, kernel))
    crop = (slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(padding, out_size))
    if taps == 1 and all(s == 1 for s in stride) and in_sp == tuple(out_size) and \
            not any(padding):
        cols = (w2 @ g2).reshape((ci, n) + in_sp)  # pointwise: no col2im, the product is it
        return cols.swapaxes(0, 1).astype(g.dtype, copy=False)
    # the columns are a scratch buffer: a fresh one (38 MB for cnn32's second layer) cost
    # its page faults on every call, more than the product that fills it
    cols = np.matmul(w2, g2, out=scratch.array("cols", (taps * ci, g2.shape[1]), dtype))
    cols = cols.reshape((taps, ci, n) + in_sp)
    acc = np.zeros((ci, n) + full, dtype)
    for t, kidx in enumerate(np.ndindex(*kernel)):
        acc[_offset_slices(kidx, dilation, stride, in_sp)] += cols[t]
    return acc[crop].swapaxes(0, 1).astype(g.dtype, copy=False)


# -- pooling ---------------------------------------------------------------------------------


def _max_pad_value(dtype):
    """The value that never wins a max: -inf, the least integer, or False for a mask."""
    if dtype.kind == "b":
        return False
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _pool_out(x, kernel, stride, padding):
    return _out_sizes(x.shape[2:], kernel, stride, padding, (1,) * len(kernel))


def _padded(x, padding, value, scratch: Scratch, purpose: str = "pad",
            channels_first: bool | None = None) -> np.ndarray:
    """x (N, C, ...) with `padding` cells of `value` around every spatial dim, in x's axis
    order, laid out channels first in memory when `channels_first` (default: as x is) — the
    layout the columns and the GEMMs want, and the one this module's convolutions return,
    so a convolution's output comes back through bias, ReLU and pooling without a
    transposing copy. x itself when there is nothing to pad or to lay out again; else a
    scratch buffer."""
    first = _is_channels_first(x)
    channels_first = first if channels_first is None else channels_first
    if not any(padding) and channels_first == first:
        return x
    n, c = x.shape[:2]
    spatial = tuple(s + 2 * p for s, p in zip(x.shape[2:], padding))
    if channels_first:
        out = scratch.array(purpose, (c, n) + spatial, x.dtype).swapaxes(0, 1)
    else:
        out = scratch.array(purpose, (n, c) + spatial, x.dtype)
    if any(padding):
        out.fill(value)
    out[(slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in
                                           zip(padding, x.shape[2:]))] = x
    return out


def _is_channels_first(x) -> bool:
    return x.ndim >= 2 and x.strides[1] > x.strides[0]


def max_pool(x, *, kernel, stride, padding, scratch: Scratch):
    """The maximum of each window: ``np.maximum`` over one strided view per kernel offset
    (a few passes at memory speed; NaN propagates as in the reference's ``max``)."""
    out = _pool_out(x, kernel, stride, padding)
    xp = _padded(x, padding, _max_pad_value(x.dtype), scratch)
    return _fold_windows(xp, kernel, stride, out, np.maximum)


def _fold_windows(xp, kernel, stride, out, combine):
    """``combine`` (an in-place ufunc) over every offset of a pooling window: one strided
    view of `xp` per offset, accumulated into a fresh array laid out as `xp` is."""
    dilation = (1,) * len(kernel)
    result = None
    for kidx in np.ndindex(*kernel):
        part = xp[_offset_slices(kidx, dilation, stride, out)]
        if result is None:
            result = part.copy(order="K")
        else:
            combine(result, part, out=result)
    return result


def _first_max_masks(xp, kernel, stride, out, inside=None):
    """For each kernel offset in row-major order, the windows whose first maximum is there
    (the reference's choice: the first NaN, else the first largest value). `inside`: where
    `xp` holds x rather than padding (None: everywhere); padding never wins, also where a
    window's taps are all -inf and tie with it."""
    dilation = (1,) * len(kernel)
    parts = [xp[_offset_slices(kidx, dilation, stride, out)] for kidx in np.ndindex(*kernel)]
    top = _fold_windows(xp, kernel, stride, out, np.maximum)
    nan = xp.dtype.kind == "f" and bool(np.isnan(top).any())
    taken = np.zeros(top.shape, bool)
    hit = np.empty(top.shape, bool)
    for kidx, part in zip(np.ndindex(*kernel), parts):
        np.equal(part, top, out=hit)
        if nan:
            hit |= np.isnan(part)
        if inside is not None:
            hit &= inside[_offset_slices(kidx, dilation, stride, out)]
        np.greater(hit, taken, out=hit)  # hit and not yet taken
        taken |= hit
        yield kidx, hit


def _inside(x, padding, scratch: Scratch) -> np.ndarray | None:
    """True where the padded input holds x, False on its padding (None: no padding)."""
    if not any(padding):
        return None
    mask = scratch.array("inside", x.shape, bool)
    mask.fill(True)
    return _padded(mask, padding, False, scratch, "pad_inside", channels_first=False)


def _windows_overlap(kernel, stride) -> bool:
    return any(k > s for k, s in zip(kernel, stride))


def max_pool_grad(x, g, *, kernel, stride, padding, scratch: Scratch):
    """g sent to the first maximum of every window (summed where windows overlap)."""
    out = tuple(g.shape[2:])
    xp = _padded(x, padding, _max_pad_value(x.dtype), scratch)
    acc = np.zeros_like(xp, dtype=g.dtype)  # laid out as x is
    dilation = (1,) * len(kernel)
    overlap = _windows_overlap(kernel, stride)
    for kidx, hit in _first_max_masks(xp, kernel, stride, out, _inside(x, padding, scratch)):
        target = acc[_offset_slices(kidx, dilation, stride, out)]
        if overlap:
            target += select(hit, g, 0)
        else:  # each position is in one window at most: the gradient where it won, else 0
            select(hit, g, 0, out=target)
    crop = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in
                                              zip(padding, x.shape[2:]))
    return acc[crop]


def max_pool_select(x, h, *, kernel, stride, padding, scratch: Scratch):
    """h picked, in every window, where x has its first maximum."""
    out = _pool_out(x, kernel, stride, padding)
    xp = _padded(x, padding, _max_pad_value(x.dtype), scratch)
    hp = _padded(h, padding, 0, scratch, "pad_h")
    dilation = (1,) * len(kernel)
    result = np.zeros(x.shape[:2] + out, h.dtype)
    for kidx, hit in _first_max_masks(xp, kernel, stride, out, _inside(x, padding, scratch)):
        np.copyto(result, hp[_offset_slices(kidx, dilation, stride, out)], where=hit)
    return result


def avg_pool(x, *, kernel, stride, padding, scratch: Scratch):
    """The mean of each window; padding counts (count_include_pad)."""
    out = _pool_out(x, kernel, stride, padding)
    xp = _padded(x, padding, 0, scratch)
    result = _fold_windows(xp, kernel, stride, out, np.add)
    result /= math.prod(kernel)
    return result.astype(x.dtype, copy=False)


# -- softmax family ----------------------------------------------------------------------------
# The reference functions' operations in the reference's order (the same bits), without their
# Python overhead: ufunc reductions, and the guard for infinite maxima only when one occurs.
# On a cross-entropy head of 16x3 this is 9 µs rather than 18, most of a small step's gap to
# hand-written NumPy.


def log_softmax(x, *, axis):
    z = x - stable_max(x, axis, posinf=True)
    return (z - np.log(np.add.reduce(np.exp(z), axis=axis, keepdims=True))).astype(
        x.dtype, copy=False)


def softmax(x, *, axis):
    e = np.exp(x - stable_max(x, axis, posinf=True))
    return (e / np.add.reduce(e, axis=axis, keepdims=True)).astype(x.dtype, copy=False)


def logsumexp(x, *, axes, keepdims):
    m = stable_max(x, axes)
    out = np.log(np.add.reduce(np.exp(x - m), axis=axes, keepdims=True)) + m
    return (out if keepdims else np.squeeze(out, axis=axes)).astype(x.dtype, copy=False)


# -- one_hot ------------------------------------------------------------------------------------


def one_hot(labels, *, n, dtype):
    """The reference's ``labels[..., None] == arange(n)``, its range check made of two ufunc
    reductions; a label outside [0, n) goes to the reference, which names the first one."""
    if labels.size and (np.minimum.reduce(labels, axis=None) < 0 or
                        np.maximum.reduce(labels, axis=None) >= n):
        return REGISTRY["one_hot"].reference(labels, n=n, dtype=dtype)  # raises
    return (labels[..., None] == np.arange(n)).astype(dtype)


def batched_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` over leading batch axes. NumPy's matmul visits every batch entry even when
    each product is empty: (2**40, 0, 3) @ (1, 3, 4) would take half an hour to return an
    empty array. An empty result is made at once."""
    if a.shape[-2] == 0 or b.shape[-1] == 0:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return np.empty(batch + (a.shape[-2], b.shape[-1]), np.result_type(a, b))
    return a @ b
