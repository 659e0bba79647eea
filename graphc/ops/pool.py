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
from ..ir.shapes import as_dim
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
        o = conv_out_size(shape[2 + i], kernel[i], stride[i], padding[i], 1)
        checks.holds(sympy.Ge(o, 1), f"spatial dim {i} is smaller than the pooling window")
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
    """For every window, the flat index into the padded input of its (first) maximum."""
    nd = len(kernel)
    pad_value = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
    flat, out = _flat_windows(x, kernel, stride, padding, pad_value)
    k = np.argmax(flat, axis=-1)  # (N, C, *out), index inside the window
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


MAX_POOL = register(OpDef(
    "max_pool", "nn", infer=_pool_infer, reference=max_pool_reference,
    grad=lambda ctx: [max_pool_grad(ctx.inputs[0], ctx.g, **_attrs(ctx.node))],
    doc="Max over each window (padding never wins).",
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
