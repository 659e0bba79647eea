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

import numpy as np
import sympy
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import GraphError, ShapeError
from ..ir.shapes import as_dim
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
    """`v` (an int, or n ints, NumPy integers included) as a tuple of n Python ints."""
    t = (v,) * n if isinstance(v, (int, np.integer)) else tuple(v)
    if len(t) != n or not all(isinstance(i, (int, np.integer)) for i in t):
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


def _conv_infer(types, attrs, checks):
    x, w = types
    nd = w.ndim - 2
    if nd < 1 or x.ndim != nd + 2:
        raise ShapeError(f"conv needs input (N, C, *spatial) and weight (C_out, C_in, *kernel) "
                         f"of matching rank; got ranks {x.ndim} and {w.ndim}")
    _check_geometry(attrs, nd)
    checks.equal(x.shape[1], w.shape[1], "input channels must equal the weight's C_in")
    out = []
    for i in range(nd):
        k = w.shape[2 + i]
        if not isinstance(k, int):
            raise ShapeError("kernel sizes must be known ints")
        o = conv_out_size(x.shape[2 + i], k, attrs["stride"][i], attrs["padding"][i],
                          attrs["dilation"][i])
        checks.holds(sympy.Ge(o, 1), f"spatial dim {i} is too small for the kernel (output {o})")
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


def _conv_grad(ctx):
    x, w = ctx.inputs
    a = ctx.node.attrs
    geom = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"])
    dx = conv_transpose_op(ctx.g, w, out_size=tuple(x.shape[2:]), **geom)
    dw = conv_weight_grad(x, ctx.g, kernel=tuple(w.shape[2:]), **geom)
    return [dx, dw]


CONV = register(OpDef("conv", "nn", infer=_conv_infer, reference=conv_reference, grad=_conv_grad,
                      doc="N-d cross-correlation (PyTorch conv1d/conv2d) without bias."))


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
    out = attrs["out_size"]
    for i in range(nd):
        k = w.shape[2 + i]
        s, d = attrs["stride"][i], attrs["dilation"][i]
        base = conv_transpose_base_size(g.shape[2 + i], k, s, attrs["padding"][i], d)
        extra = out[i] - base
        checks.holds(sympy.Ge(extra, 0), f"output size {out[i]} is below the minimum {base}")
        checks.holds(sympy.Lt(extra, builtins_max(s, d)),
                     f"output size {out[i]} exceeds {base} by stride/dilation or more")
        checks.holds(sympy.Ge(out[i], 1), "output size must be >= 1")
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
    g, w = ctx.inputs
    a = ctx.node.attrs
    geom = dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"])
    dg = conv_op(ctx.g, w, **geom)
    dw = conv_weight_grad(ctx.g, g, kernel=tuple(w.shape[2:]), **geom)
    return [dg, dw]


CONV_TRANSPOSE = register(OpDef(
    "conv_transpose", "nn", infer=_conv_transpose_infer, reference=conv_transpose_reference,
    grad=_conv_transpose_grad,
    doc="N-d transposed convolution (the adjoint of conv in its input), without bias.",
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
    return [dx, dg]


CONV_WEIGHT_GRAD = register(OpDef(
    "conv_weight_grad", "nn", infer=_weight_grad_infer, reference=conv_weight_grad_reference,
    grad=_weight_grad_grad,
    doc="The adjoint of conv in its weight: correlates x with the output gradient g.",
))


def conv_weight_grad(x: Tensor, g: Tensor, kernel, stride, padding, dilation) -> Tensor:
    nd = len(kernel)
    return apply(CONV_WEIGHT_GRAD, [x, g], kernel=tuple(int(k) for k in kernel),
                 stride=int_tuple(stride, nd, "stride"), padding=int_tuple(padding, nd, "padding"),
                 dilation=int_tuple(dilation, nd, "dilation"))
