"""Neural-network ONNX ops: Gemm, MatMul, Conv, ConvTranspose, pooling, BatchNormalization
(inference), Dropout (inference)."""

from __future__ import annotations

import numpy as np

from .. import ops
from ..ir.tensor import Tensor
from .ops_math import const_like
from .table import onnx_op


def _float(ctx, *xs: Tensor) -> None:
    for x in xs:
        if x is not None and x.dtype.kind != "f":
            ctx.fail(f"input of type {x.dtype} is not supported (float32/float64 only)")


@onnx_op("MatMul")
def _matmul(ctx, a, b):
    a, b = ctx.tensor(a), ctx.tensor(b)
    return ops.matmul(a, b)


@onnx_op("Gemm")
def _gemm(ctx, a, b, c=None):
    a, b = ctx.tensor(a), ctx.tensor(b)
    if a.ndim != 2 or b.ndim != 2:
        ctx.fail(f"A has rank {a.ndim} and B rank {b.ndim}: Gemm takes two matrices (use "
                 "MatMul for batched products)")
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    y = ops.matmul_t(a, b, ta=bool(ctx.attr("transA", 0)), tb=bool(ctx.attr("transB", 0)))
    if alpha != 1.0:
        y = y * const_like(y, alpha)
    if c is not None and beta != 0.0:
        c = ctx.tensor(c)
        _check_unidirectional(ctx, c, y)
        y = y + (c if beta == 1.0 else c * const_like(c, beta))
    return y


def _check_unidirectional(ctx, c: Tensor, y: Tensor) -> None:
    """Gemm's C must broadcast to Y's shape (M, N) without changing it (ONNX's
    unidirectional broadcasting): rank at most 2, each dim 1 or Y's."""
    if c.ndim > 2 or any(not (dc == 1 or dc == dy)
                         for dc, dy in zip(c.shape[::-1], y.shape[::-1])):
        ctx.fail(f"C of shape {tuple(c.shape)} does not broadcast to the product's shape "
                 f"{tuple(y.shape)} (unidirectionally)")


# -- geometry shared by convolutions and pooling ----------------------------------------------


def _static_sizes(ctx, x: Tensor) -> list[int]:
    sizes = x.shape[2:]
    if not all(isinstance(s, int) for s in sizes):
        ctx.fail(f"auto_pad/ceil_mode needs known spatial sizes, got {tuple(sizes)}")
    return list(sizes)


def _pads(ctx, x: Tensor, kernel, strides, dilations, ceil_mode: bool = False):
    """(begin pads, end pads) of every spatial axis, from pads or auto_pad."""
    nd = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        sizes = _static_sizes(ctx, x)
        begin, end = [], []
        for i in range(nd):
            out = -(-sizes[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - sizes[i])
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin, end
    if auto == "VALID":
        return [0] * nd, [0] * nd
    if auto != "NOTSET":
        ctx.fail(f"auto_pad={auto!r} is not supported")
    pads = [int(p) for p in ctx.attr("pads", [0] * (2 * nd))]
    return pads[:nd], pads[nd:]


def _padded(x: Tensor, begin, end, fill: float | None) -> Tensor:
    """x with its spatial axes padded; `fill` None pads with zeros, else the padding holds
    `fill` (a -inf border for max pooling)."""
    widths = [(0, 0), (0, 0)] + [(b, e) for b, e in zip(begin, end)]
    y = ops.pad(x, widths)
    if fill is None or not any(begin) and not any(end):
        return y
    inside = np.pad(np.ones(tuple(x.shape[2:]), dtype=bool), widths[2:])
    return ops.where(ops.constant(inside), y, const_like(x, fill))


def _grouped(ctx, x: Tensor, w: Tensor, group: int, conv, w_axis: int) -> Tensor:
    if group == 1:
        return conv(x, w)
    cx, cw = x.shape[1], w.shape[w_axis]
    if not isinstance(cx, int) or cx % group or cw % group:
        ctx.fail(f"group={group} does not divide the channels ({cx}, {cw})")
    outs = []
    for g in range(group):
        xs = x[:, g * cx // group:(g + 1) * cx // group]
        index = [slice(None)] * w.ndim
        index[w_axis] = slice(g * cw // group, (g + 1) * cw // group)
        outs.append(conv(xs, w[tuple(index)]))
    return ops.concat(outs, 1)


def _group(ctx) -> int:
    group = int(ctx.attr("group", 1))
    if group < 1:
        ctx.fail(f"group={group} must be at least 1")
    return group


def _bias(y: Tensor, b) -> Tensor:
    if b is None:
        return y
    return y + ops.reshape(b, (1, b.shape[0]) + (1,) * (y.ndim - 2))


def _conv_arguments(ctx, x, w, b):
    """What Conv and ConvTranspose read alike: the tensors (float only), the number of
    spatial axes, kernel shape, strides and dilations."""
    x, w = ctx.tensor(x), ctx.tensor(w)
    b = None if b is None else ctx.tensor(b)
    _float(ctx, x, w, b)
    nd = w.ndim - 2
    if nd < 1 or x.ndim != w.ndim:
        ctx.fail(f"input of rank {x.ndim} and weight of rank {w.ndim}: both must be "
                 "(N, C, *spatial) and (C_out, C_in, *kernel) of the same rank, at least 3")
    kernel, strides, dilations = _geometry(ctx, nd, w.shape[2:])
    if list(kernel) != list(w.shape[2:]):
        ctx.fail(f"kernel_shape {kernel} does not match the weight's {tuple(w.shape[2:])}")
    if b is not None and b.ndim != 1:
        ctx.fail(f"the bias has rank {b.ndim}, not 1")
    return x, w, b, nd, kernel, strides, dilations


def _geometry(ctx, nd: int, kernel_default=None):
    """kernel_shape, strides and dilations, each checked: nd entries, all at least 1; and the
    pads (when given) checked: 2 * nd entries, none negative."""
    kernel = ctx.ints(ctx.attr("kernel_shape", kernel_default), "kernel_shape", nd)
    strides = ctx.ints(ctx.attr("strides", [1] * nd), "strides", nd)
    dilations = ctx.ints(ctx.attr("dilations", [1] * nd), "dilations", nd)
    for what, values in (("kernel_shape", kernel), ("strides", strides),
                         ("dilations", dilations)):
        if any(v < 1 for v in values):
            ctx.fail(f"{what} {values} must all be at least 1")
    if "pads" in ctx.attrs:
        pads = ctx.ints(ctx.attr("pads"), "pads", 2 * nd)
        if any(p < 0 for p in pads):
            ctx.fail(f"pads {pads} must not be negative")
    return kernel, strides, dilations


@onnx_op("Conv")
def _conv(ctx, x, w, b=None):
    x, w, b, nd, kernel, strides, dilations = _conv_arguments(ctx, x, w, b)
    begin, end = _pads(ctx, x, kernel, strides, dilations)
    if begin != end:
        x, padding = _padded(x, begin, end, None), [0] * nd
    else:
        padding = begin
    group = _group(ctx)
    y = _grouped(ctx, x, w, group,
                 lambda xs, ws: ops.conv_op(xs, ws, strides, padding, dilations), 0)
    return _bias(y, b)


@onnx_op("ConvTranspose")
def _conv_transpose(ctx, x, w, b=None):
    x, w, b, nd, kernel, strides, dilations = _conv_arguments(ctx, x, w, b)
    out_pad = ctx.ints(ctx.attr("output_padding", [0] * nd), "output_padding", nd)
    sizes = list(x.shape[2:])
    full = [(sizes[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 for i in range(nd)]
    output_shape = ctx.attr("output_shape", None)
    auto = ctx.attr("auto_pad", "NOTSET")
    if output_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        _static_sizes(ctx, x)
        if output_shape is not None and len(output_shape) < nd:
            ctx.fail(f"output_shape {list(output_shape)} has fewer than {nd} entries")
        target = ([int(s) for s in output_shape][-nd:] if output_shape is not None
                  else [sizes[i] * strides[i] for i in range(nd)])
        begin, end = [], []
        for i in range(nd):
            total = full[i] + out_pad[i] - target[i]
            if total < 0:
                ctx.fail(f"output_shape {target} exceeds what the stride allows")
            small = total // 2
            upper = auto != "SAME_LOWER"
            begin.append(small if upper else total - small)
            end.append(total - begin[-1])
    elif auto in ("NOTSET", "VALID"):
        pads = [int(p) for p in ctx.attr("pads", [0] * (2 * nd))]
        begin, end = pads[:nd], pads[nd:]
        if auto == "VALID":
            begin, end = [0] * nd, [0] * nd
    else:
        ctx.fail(f"auto_pad={auto!r} is not supported")
    for i in range(nd):
        if out_pad[i] >= max(strides[i], dilations[i]):
            ctx.fail(f"output_padding {out_pad} must be below stride or dilation")
    extended = [full[i] + out_pad[i] for i in range(nd)]

    def conv_t(xs, ws):
        return ops.conv_transpose_op(xs, ws, strides, [0] * nd, dilations, extended)

    y = _grouped(ctx, x, w, _group(ctx), conv_t, 0)
    if any(begin) or any(end):
        index = (slice(None), slice(None)) + tuple(
            slice(begin[i], extended[i] - end[i]) for i in range(nd))
        y = y[index]
    return _bias(y, b)


# -- pooling ------------------------------------------------------------------------------------


def _pool_geometry(ctx, x: Tensor):
    kernel = ctx.ints(ctx.attr("kernel_shape"), "kernel_shape")
    nd = len(kernel)
    if nd < 1 or x.ndim != nd + 2:
        ctx.fail(f"kernel_shape {kernel} does not fit an input of rank {x.ndim}")
    kernel, strides, dilations = _geometry(ctx, nd)
    if any(d != 1 for d in dilations):
        ctx.fail(f"dilations {dilations} are not supported in pooling")
    begin, end = _pads(ctx, x, kernel, strides, dilations)
    extra = [0] * nd
    if ctx.attr("ceil_mode", 0):
        sizes = _static_sizes(ctx, x)
        for i in range(nd):
            span = sizes[i] + begin[i] + end[i] - kernel[i]
            out = -(-span // strides[i]) + 1
            if (out - 1) * strides[i] >= sizes[i] + begin[i]:
                out -= 1  # the last window would start in the end padding
            extra[i] = max(0, (out - 1) * strides[i] + kernel[i] - sizes[i] - begin[i] - end[i])
    return kernel, strides, begin, end, extra


def _native_padding(kernel, begin, end, extra):
    """Symmetric padding graphc's pools take directly (at most half the window), or None."""
    if begin != end or any(extra) or any(2 * p > k for p, k in zip(begin, kernel)):
        return None
    return begin


@onnx_op("MaxPool")
def _max_pool(ctx, x):
    x = ctx.tensor(x)
    if ctx.outputs > 1:
        ctx.fail("the Indices output is not supported")
    if ctx.attr("storage_order", 0):
        ctx.fail("storage_order=1 only concerns the Indices output, which is not supported")
    if x.dtype == bool:
        ctx.fail("boolean inputs are not supported")
    kernel, strides, begin, end, extra = _pool_geometry(ctx, x)
    padding = _native_padding(kernel, begin, end, extra)
    if padding is None:
        low = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        x = _padded(x, begin, [e + a for e, a in zip(end, extra)], low)
        padding = [0] * len(kernel)
    return ops.max_pool(x, kernel, strides, padding, nd=len(kernel))


@onnx_op("AveragePool")
def _avg_pool(ctx, x):
    x = ctx.tensor(x)
    _float(ctx, x)
    kernel, strides, begin, end, extra = _pool_geometry(ctx, x)
    include = bool(ctx.attr("count_include_pad", 0))
    nd = len(kernel)
    if not any(begin) and not any(end) and not any(extra):
        return ops.avg_pool(x, kernel, strides, 0, nd=nd)
    padding = _native_padding(kernel, begin, end, extra)
    if include and padding is not None:
        return ops.avg_pool(x, kernel, strides, padding, nd=nd)
    # the mean over the window's elements that count: a sum divided by a count, both pooled
    sizes = _static_sizes(ctx, x)
    widths = [(b, e + a) for b, e, a in zip(begin, end, extra)]
    counted = np.ones(sizes, dtype=x.dtype)
    if include:  # the pads count, the ceil-mode extension does not
        counted = np.pad(counted, [(b, e) for b, e in zip(begin, end)], constant_values=1)
        widths_count = [(0, a) for a in extra]
    else:
        widths_count = widths
    counted = np.pad(counted, widths_count)[None, None]
    xs = _padded(x, [w[0] for w in widths], [w[1] for w in widths], None)
    total = ops.avg_pool(xs, kernel, strides, 0, nd=nd)
    count = ops.avg_pool(ops.constant(counted), kernel, strides, 0, nd=nd)
    return total / count


@onnx_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ctx, x):
    x = ctx.tensor(x)
    _float(ctx, x)
    axes = tuple(range(2, x.ndim))
    fn = ops.mean if ctx.op_type == "GlobalAveragePool" else ops.max
    return fn(x, axes, keepdims=True)


# -- normalization and dropout ------------------------------------------------------------------


@onnx_op("BatchNormalization")
def _batch_norm(ctx, x, scale, bias, mean, var):
    from ..nn.functional import batch_norm

    if ctx.attr("training_mode", 0) or ctx.outputs > 1:
        ctx.fail("training mode (training_mode=1 or the running-statistics outputs) is not "
                 "imported: graphc imports inference graphs; train the imported model with "
                 "graphc's own batch norm instead")
    if ctx.opset < 7 and not ctx.attr("is_test", 0):
        ctx.fail("is_test=0 (training) is not supported")
    if ctx.attr("spatial", 1) != 1:
        ctx.fail("spatial=0 is not supported")
    x, scale, bias = ctx.tensor(x), ctx.tensor(scale), ctx.tensor(bias)
    mean, var = ctx.tensor(mean), ctx.tensor(var)
    _float(ctx, x, scale, bias, mean, var)
    if len({t.dtype for t in (x, scale, bias, mean, var)}) > 1:
        ctx.fail("mixed float types are not supported")
    return batch_norm(x, scale, bias, mean, var, training=False,
                      eps=float(ctx.attr("epsilon", 1e-5)))


@onnx_op("Dropout")
def _dropout(ctx, x, ratio=None, training_mode=None):
    x = ctx.tensor(x)
    if ctx.opset < 7 and not ctx.attr("is_test", 0):
        ctx.fail("is_test=0 (training) is not supported")
    if training_mode is not None:
        training = bool(np.asarray(ctx.static(training_mode, "training_mode")))
        ratio_v = 0.5 if ratio is None else float(np.asarray(ctx.static(ratio, "ratio")))
        if training and ratio_v != 0.0:
            ctx.fail("training_mode=True draws random masks; graphc imports inference "
                     "graphs (use gc.nn.functional.dropout to train)")
    if ctx.outputs > 1:
        mask = ops.full(x.shape, True, dtype=bool)
        return [x, mask]
    return x



@onnx_op("LpPool")
def _lp_pool(ctx, x):
    """(sum of |x|^p over each window)^(1/p): a sum pool (an average pool of the padded
    input times the window size; the zero padding adds nothing) of |x|^p."""
    x = ctx.tensor(x)
    _float(ctx, x)
    p = int(ctx.attr("p", 2))
    if p < 1:
        ctx.fail(f"p={p} is not supported")
    kernel, strides, begin, end, extra = _pool_geometry(ctx, x)
    powered = ops.abs(x) if p == 1 else x * x if p == 2 else ops.pow(ops.abs(x),
                                                                     const_like(x, p))
    padded = _padded(powered, begin, [e + a for e, a in zip(end, extra)], None)
    total = ops.avg_pool(padded, kernel, strides, 0, nd=len(kernel)) * const_like(
        x, float(np.prod(kernel)))
    if p == 1:
        return total
    return ops.sqrt(total) if p == 2 else ops.pow(total, const_like(x, 1.0 / p))
