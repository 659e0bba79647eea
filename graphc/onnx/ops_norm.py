"""Normalization and loss ONNX ops, composed from graphc's reductions and elementwise ops:
LayerNormalization, RMSNormalization, InstanceNormalization, GroupNormalization,
MeanVarianceNormalization, LpNormalization, NegativeLogLikelihoodLoss,
SoftmaxCrossEntropyLoss.

Composition keeps them differentiable and native on every backend without new kernels; the
function bodies ONNX gives for them (the ``_expanded`` node cases) compute the same thing
node by node.
"""

from __future__ import annotations

import numpy as np

from .. import ops
from ..ir.tensor import Tensor
from . import dtypes
from .ops_math import const_like
from .table import onnx_op


def _float(ctx, *xs) -> None:
    for x in xs:
        if x is not None and x.dtype.kind != "f":
            ctx.fail(f"input of type {x.dtype} is not supported (float32/float64 only)")


def _stash(ctx, x: Tensor) -> np.dtype:
    """The type of the statistics outputs (``stash_type``, float32 by default)."""
    stash = int(ctx.attr("stash_type", 1))
    return dtypes.to_numpy(stash, ctx.where()) if stash != 1 else np.dtype(np.float32)


def _computing(ctx, x: Tensor) -> np.dtype:
    """The type the statistics are computed in: the stash type widens a float32 input,
    never narrows a float64 one (as onnxruntime and onnx.reference compute: a float64
    model exported with the default stash_type keeps float64 accuracy)."""
    return np.promote_types(_stash(ctx, x), x.dtype)


def _normalized(x: Tensor, axes: tuple, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """(x - mean) / sqrt(var + eps) over `axes`, with the mean and 1/sqrt(var + eps)."""
    mean = ops.mean(x, axes, keepdims=True)
    d = x - mean
    inv = ops.rsqrt(ops.mean(d * d, axes, keepdims=True) + const_like(x, eps))
    return d * inv, mean, inv


@onnx_op("LayerNormalization")
def _layer_norm(ctx, x, scale, bias=None):
    x, scale = ctx.tensor(x), ctx.tensor(scale)
    bias = None if bias is None else ctx.tensor(bias)
    _float(ctx, x, scale, bias)
    axis = ctx.axis(ctx.attr("axis", -1), x.ndim)
    computing, stash = _computing(ctx, x), _stash(ctx, x)
    xs = x if x.dtype == computing else ops.cast(x, computing)
    y, mean, inv = _normalized(xs, tuple(range(axis, x.ndim)), float(ctx.attr("epsilon", 1e-5)))
    if y.dtype != x.dtype:
        y = ops.cast(y, x.dtype)
    y = y * scale
    if bias is not None:
        y = y + bias
    return [y, *(v if v.dtype == stash else ops.cast(v, stash) for v in (mean, inv))]


@onnx_op("RMSNormalization")
def _rms_norm(ctx, x, scale):
    x, scale = ctx.tensor(x), ctx.tensor(scale)
    _float(ctx, x, scale)
    axis = ctx.axis(ctx.attr("axis", -1), x.ndim)
    computing = _computing(ctx, x)
    xs = x if x.dtype == computing else ops.cast(x, computing)
    ms = ops.mean(xs * xs, tuple(range(axis, x.ndim)), keepdims=True)
    y = xs * ops.rsqrt(ms + const_like(xs, float(ctx.attr("epsilon", 1e-5))))
    if y.dtype != x.dtype:
        y = ops.cast(y, x.dtype)
    return y * scale


def _per_channel(ctx, v: Tensor, x: Tensor, what: str) -> Tensor:
    """A per-channel vector (C,) shaped to multiply or add to x (N, C, *spatial)."""
    if v.ndim != 1 or v.shape[0] != x.shape[1]:
        ctx.fail(f"the {what} has shape {tuple(v.shape)}; it must be ({x.shape[1]},), one "
                 f"value per channel of the input of shape {tuple(x.shape)}")
    return ops.reshape(v, (1, v.shape[0]) + (1,) * (x.ndim - 2))


def _channels_first(ctx, x: Tensor, least: int) -> None:
    if x.ndim < least:
        ctx.fail(f"the input has rank {x.ndim}; it must be (N, C, ...) of rank {least} or more")


@onnx_op("InstanceNormalization")
def _instance_norm(ctx, x, scale, bias):
    x, scale, bias = ctx.tensor(x), ctx.tensor(scale), ctx.tensor(bias)
    _float(ctx, x, scale, bias)
    _channels_first(ctx, x, 3)
    scale, bias = _per_channel(ctx, scale, x, "scale"), _per_channel(ctx, bias, x, "bias")
    y, _, _ = _normalized(x, tuple(range(2, x.ndim)), float(ctx.attr("epsilon", 1e-5)))
    return y * scale + bias


@onnx_op("GroupNormalization")
def _group_norm(ctx, x, scale, bias):
    x, scale, bias = ctx.tensor(x), ctx.tensor(scale), ctx.tensor(bias)
    _float(ctx, x, scale, bias)
    if ctx.opset < 21:
        ctx.fail("opset < 21 (scale and bias per group) is not supported")
    _channels_first(ctx, x, 2)
    groups = int(ctx.attr("num_groups"))
    if groups < 1:
        ctx.fail(f"num_groups={groups} must be at least 1")
    n, c = x.shape[0], x.shape[1]
    if not isinstance(c, int) or c % groups:
        ctx.fail(f"num_groups={groups} does not divide the {c} channels")
    grouped = ops.reshape(x, (n, groups, -1))
    computing = _computing(ctx, x)
    gs = grouped if grouped.dtype == computing else ops.cast(grouped, computing)
    y, _, _ = _normalized(gs, (2,), float(ctx.attr("epsilon", 1e-5)))
    y = ops.reshape(y if y.dtype == x.dtype else ops.cast(y, x.dtype), x.shape)
    return y * _per_channel(ctx, scale, x, "scale") + _per_channel(ctx, bias, x, "bias")


@onnx_op("MeanVarianceNormalization")
def _mvn(ctx, x):
    x = ctx.tensor(x)
    _float(ctx, x)
    axes = tuple(ctx.axes(ctx.attr("axes", [0, 2, 3]), x.ndim))
    # ONNX's function body: (x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)
    mean = ops.mean(x, axes, keepdims=True)
    var = ops.mean(x * x, axes, keepdims=True) - mean * mean
    return (x - mean) / (ops.sqrt(var) + const_like(x, 1e-9))


@onnx_op("LpNormalization")
def _lp_norm(ctx, x):
    x = ctx.tensor(x)
    _float(ctx, x)
    axis = ctx.axis(ctx.attr("axis", -1), x.ndim)
    p = int(ctx.attr("p", 2))
    if p == 1:
        norm = ops.sum(ops.abs(x), axis, keepdims=True)
    elif p == 2:
        norm = ops.sqrt(ops.sum(x * x, axis, keepdims=True))
    else:
        ctx.fail(f"p={p} is not supported (1 or 2)")
    # a zero norm gives 0 (ONNX's reference), not NaN
    zero = ops.equal(norm, const_like(norm, 0))
    return ops.where(zero, const_like(x, 0), x / ops.where(zero, const_like(norm, 1), norm))


# -- losses -----------------------------------------------------------------------------------


def _nll(ctx, logp: Tensor, target: Tensor, weight: Tensor | None) -> Tensor:
    """ONNX's negative log-likelihood of `logp` (N, C, d...) at integer `target` (N, d...):
    the class picked by comparing with every class index (no out-of-range error: an ignored
    target may lie outside [0, C)), weighted, ignored targets counting zero."""
    if target.dtype.kind not in "iu":
        ctx.fail(f"target of type {target.dtype} is not supported (int32/int64)")
    _channels_first(ctx, logp, 2)
    if tuple(target.shape) != (logp.shape[0],) + tuple(logp.shape[2:]):
        ctx.fail(f"target of shape {tuple(target.shape)} does not match the input of shape "
                 f"{tuple(logp.shape)} (it must be (N, d1, ...) of the input's (N, C, d1, ...))")
    c = logp.shape[1]
    if not isinstance(c, int):
        ctx.fail("a symbolic number of classes is not supported")
    classes = ops.constant(np.arange(c, dtype=target.dtype))
    hot = ops.equal(ops.reshape(target, tuple(target.shape) + (1,)), classes)  # (N, d..., C)
    perm = (0, logp.ndim - 1) + tuple(range(1, logp.ndim - 1))
    hot = ops.transpose(ops.cast(hot, logp.dtype), perm)  # (N, C, d...)
    picked = ops.sum(hot * logp, 1)
    w = ops.sum(hot * _per_channel(ctx, weight, logp, "weight"), 1) if weight is not None else None
    ignore = ctx.attr("ignore_index", None)
    if ignore is not None:
        kept = ops.cast(ops.not_equal(target, ops.constant(np.asarray(ignore, target.dtype))),
                        logp.dtype)
        w = kept if w is None else w * kept
    loss = -picked if w is None else -(picked * w)
    reduction = ctx.attr("reduction", "mean")
    if reduction == "none":
        return loss
    total = ops.sum(loss)
    if reduction == "sum":
        return total
    if reduction != "mean":
        ctx.fail(f"reduction={reduction!r} is not supported")
    if w is None:
        return total / ops.constant(np.asarray(np.prod(target.shape), dtype=logp.dtype))
    return total / ops.sum(w)


@onnx_op("NegativeLogLikelihoodLoss")
def _nll_loss(ctx, x, target, weight=None):
    x, target = ctx.tensor(x), ctx.tensor(target)
    weight = None if weight is None else ctx.tensor(weight)
    _float(ctx, x, weight)
    return _nll(ctx, x, target, weight)


@onnx_op("SoftmaxCrossEntropyLoss")
def _sce_loss(ctx, x, target, weight=None):
    x, target = ctx.tensor(x), ctx.tensor(target)
    weight = None if weight is None else ctx.tensor(weight)
    _float(ctx, x, weight)
    logp = ops.log_softmax(x, 1)
    return [_nll(ctx, logp, target, weight), logp]
