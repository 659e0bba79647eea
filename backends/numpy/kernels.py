"""Whole-batch NumPy kernels for convolution and pooling: what a careful NumPy programmer writes.

The ops' reference functions (graphc/ops/conv.py, pool.py) define the semantics plainly —
window views, ``tensordot`` over strided views, ``np.add.at`` for the max-pool gradient —
and stay the definition the independent loop references in tests/op_cases.py check. These
kernels compute the same values the way hand-written NumPy training code does:

* im2col over the whole batch into a scratch buffer of layout (C·K, N·O) (one strided copy
  per kernel offset, every sample at once), then one large GEMM: ``W (Cout, C·K) @ cols``
  (returned as its (N, Cout, O) view, as hand-written code does); the weight gradient is one
  GEMM against the same columns; the input gradient is the transposed GEMM and a col2im
  that adds each kernel offset's block in place, again over the whole batch. One large
  product rather than one per sample: the BLAS splits it over the cores, while N small
  threaded calls each pay the threads' hand-over (3x slower on a busy 2-core machine);
* pooling over strided slices, one kernel offset at a time (``np.maximum(..., out=)``), and
  for the common non-overlapping, unpadded pool a reshape into blocks; the max-pool gradient
  sends each window's gradient to its first maximum (``np.argmax``'s choice, NaN counting as
  the maximum), exactly as the reference does.

Scratch memory (the padded input and the columns) is borrowed from a `Scratch` that the
executable owns and reuses from call to call: a kernel never returns a scratch array, and
the step runs one kernel at a time, so one buffer per purpose suffices.
"""

from __future__ import annotations

import math

import numpy as np

from graphc.ops.conv import conv_out_size


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


def _padded(x: np.ndarray, padding, value, scratch: Scratch | None, purpose: str = "pad"
            ) -> np.ndarray:
    """x with `padding` cells of `value` on both sides of every spatial dim (x itself when
    there is no padding)."""
    if not any(padding):
        return x
    shape = x.shape[:2] + tuple(s + 2 * p for s, p in zip(x.shape[2:], padding))
    out = (scratch.array(purpose, shape, x.dtype) if scratch is not None
           else np.empty(shape, x.dtype))
    out.fill(value)
    out[(slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in
                                           zip(padding, x.shape[2:]))] = x
    return out


def _im2col(x, kernel, stride, padding, dilation, out, scratch, dtype) -> np.ndarray:
    """cols[(c, k), (n, o)] = x_padded[n, c, o·s + k·d], shape (C·prod(K), N·prod(O)): the
    whole batch side by side, so that a convolution is one large GEMM (BLAS splits one large
    product over the cores; N small ones each pay the threads' hand-over)."""
    n, c = x.shape[:2]
    xp = _padded(x, padding, 0, scratch).swapaxes(0, 1)  # (C, N, ...): a view
    cols = scratch.array("cols", (c,) + tuple(kernel) + (n,) + tuple(out), dtype)
    for kidx in np.ndindex(*kernel):
        cols[(slice(None),) + kidx] = xp[_offset_slices(kidx, dilation, stride, out)]
    return cols.reshape(c * math.prod(kernel), n * math.prod(out))


def _out_sizes(spatial, kernel, stride, padding, dilation):
    return tuple(conv_out_size(int(spatial[i]), kernel[i], stride[i], padding[i], dilation[i])
                 for i in range(len(kernel)))


def _channels_first(g, dtype) -> np.ndarray:
    """g (N, C, *O) as the matrix (C, N·prod(O)) (a copy)."""
    n, c = g.shape[:2]
    out = np.empty((c, n) + g.shape[2:], dtype)
    out[...] = g.swapaxes(0, 1)
    return out.reshape(c, n * math.prod(g.shape[2:]))


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
    """The adjoint of conv in its input: one GEMM ``cols = W.T @ g (Cout, N·O)``, then
    col2im — each kernel offset's block added in place into the padded result."""
    kernel = w.shape[2:]
    n, co = g.shape[:2]
    ci = w.shape[1]
    in_sp = tuple(g.shape[2:])
    dtype = np.result_type(g, w)
    w2 = w.reshape(co, ci * math.prod(kernel)).astype(dtype, copy=False)
    cols = (w2.T @ _channels_first(g, dtype)).reshape((ci,) + tuple(kernel) + (n,) + in_sp)
    full = tuple(max(o + 2 * p, (i - 1) * s + d * (k - 1) + 1)
                 for o, p, i, s, d, k in zip(out_size, padding, in_sp, stride, dilation, kernel))
    acc = np.zeros((n, ci) + full, dtype)
    target = acc.swapaxes(0, 1)  # (C, N, ...): a view
    for kidx in np.ndindex(*kernel):
        target[_offset_slices(kidx, dilation, stride, in_sp)] += cols[(slice(None),) + kidx]
    crop = (slice(None), slice(None)) + tuple(slice(p, p + o) for p, o in zip(padding, out_size))
    result = acc[crop]
    if any(padding) or full != tuple(out_size):
        result = np.ascontiguousarray(result)
    return result.astype(g.dtype, copy=False)


# -- pooling ---------------------------------------------------------------------------------


def _max_pad_value(dtype):
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _blocks(x, kernel, out) -> np.ndarray:
    """A non-overlapping unpadded pool's windows as (N, C, *O, prod(K)) in the kernel's
    row-major order (the order the reference's window view flattens them in): a copy."""
    n, c = x.shape[:2]
    nd = len(kernel)
    covered = x[(slice(None), slice(None)) + tuple(slice(0, o * k) for o, k in zip(out, kernel))]
    split = covered.reshape((n, c) + tuple(v for o, k in zip(out, kernel) for v in (o, k)))
    order = (0, 1) + tuple(2 + 2 * i for i in range(nd)) + tuple(3 + 2 * i for i in range(nd))
    return split.transpose(order).reshape((n, c) + tuple(out) + (math.prod(kernel),))


def _tiles(kernel, stride, padding) -> bool:
    """True for the common pool whose windows tile the input: stride = kernel, no padding."""
    return tuple(stride) == tuple(kernel) and not any(padding)


def _pool_out(x, kernel, stride, padding):
    return _out_sizes(x.shape[2:], kernel, stride, padding, (1,) * len(kernel))


def max_pool(x, *, kernel, stride, padding, scratch: Scratch):
    out = _pool_out(x, kernel, stride, padding)
    if _tiles(kernel, stride, padding) and x.size:
        return _blocks(x, kernel, out).max(axis=-1)
    xp = _padded(x, padding, _max_pad_value(x.dtype), scratch)
    return _fold_windows(xp, kernel, stride, out, np.maximum)


def _fold_windows(xp, kernel, stride, out, combine):
    """``combine`` (an in-place ufunc) over every offset of a pooling window: one strided
    view of `xp` per offset, accumulated into a fresh array."""
    dilation = (1,) * len(kernel)
    result = None
    for kidx in np.ndindex(*kernel):
        part = xp[_offset_slices(kidx, dilation, stride, out)]
        if result is None:
            result = part.copy()
        else:
            combine(result, part, out=result)
    return result


def _first_max_masks(xp, kernel, stride, out):
    """For each kernel offset in row-major order, the windows whose first maximum is there
    (np.argmax's choice: the first NaN, else the first largest value)."""
    dilation = (1,) * len(kernel)
    parts = [xp[_offset_slices(kidx, dilation, stride, out)] for kidx in np.ndindex(*kernel)]
    top = parts[0].copy()
    for part in parts[1:]:
        np.maximum(top, part, out=top)
    taken = np.zeros(top.shape, bool)
    for kidx, part in zip(np.ndindex(*kernel), parts):
        hit = part == top
        if xp.dtype.kind == "f":
            hit |= np.isnan(part)
        hit &= ~taken
        taken |= hit
        yield kidx, hit


def max_pool_grad(x, g, *, kernel, stride, padding, scratch: Scratch):
    """g sent to the first maximum of every window (summed where windows overlap)."""
    out = tuple(g.shape[2:])
    n, c = x.shape[:2]
    if _tiles(kernel, stride, padding) and x.size:
        blocks = _blocks(x, kernel, out)
        idx = blocks.argmax(axis=-1)
        spread = np.zeros(blocks.shape, g.dtype)
        np.put_along_axis(spread, idx[..., None], g[..., None], axis=-1)
        nd = len(kernel)
        split = spread.reshape((n, c) + tuple(out) + tuple(kernel))
        order = (0, 1) + tuple(v for i in range(nd) for v in (2 + i, 2 + nd + i))
        tiled = split.transpose(order).reshape(
            (n, c) + tuple(o * k for o, k in zip(out, kernel)))
        if tiled.shape == x.shape:
            return tiled
        result = np.zeros(x.shape, g.dtype)
        result[(slice(None), slice(None)) + tuple(slice(0, s) for s in tiled.shape[2:])] = tiled
        return result
    xp = _padded(x, padding, _max_pad_value(x.dtype), scratch)
    acc = np.zeros(xp.shape, g.dtype)
    dilation = (1,) * len(kernel)
    for kidx, hit in _first_max_masks(xp, kernel, stride, out):
        acc[_offset_slices(kidx, dilation, stride, out)] += np.where(hit, g, 0)
    crop = (slice(None), slice(None)) + tuple(slice(p, p + s) for p, s in
                                              zip(padding, x.shape[2:]))
    return acc[crop] if not any(padding) else np.ascontiguousarray(acc[crop])


def max_pool_select(x, h, *, kernel, stride, padding, scratch: Scratch):
    """h picked, in every window, where x has its first maximum."""
    out = _pool_out(x, kernel, stride, padding)
    if _tiles(kernel, stride, padding) and x.size:
        idx = _blocks(x, kernel, out).argmax(axis=-1)
        return np.take_along_axis(_blocks(h, kernel, out), idx[..., None], axis=-1)[..., 0]
    xp = _padded(x, padding, _max_pad_value(x.dtype), scratch)
    hp = _padded(h, padding, 0, scratch, "pad_h")
    dilation = (1,) * len(kernel)
    result = np.zeros(x.shape[:2] + out, h.dtype)
    for kidx, hit in _first_max_masks(xp, kernel, stride, out):
        np.copyto(result, hp[_offset_slices(kidx, dilation, stride, out)], where=hit)
    return result


def avg_pool(x, *, kernel, stride, padding, scratch: Scratch):
    """The mean of each window; padding counts (count_include_pad)."""
    out = _pool_out(x, kernel, stride, padding)
    xp = _padded(x, padding, 0, scratch)
    result = _fold_windows(xp, kernel, stride, out, np.add)
    result /= math.prod(kernel)
    return result.astype(x.dtype, copy=False)
