"""Deep-learning ops (``gc.nn.functional``, imported as ``F``), PyTorch conventions throughout.

Most of these are compositions of the primitive ops in ``graphc.ops``: a linear layer is a
matmul and an add, batch norm is means and elementwise arithmetic, a loss is a log_softmax
and a mean. Their gradients therefore come from the primitives', and the graph shows what they
really compute (grouped under a name scope).
"""

from __future__ import annotations

import warnings

import numpy as np

from .. import ops
from ..arguments import fraction, maybe_equal, shape_of
from ..errors import GraphError, ShapeError, user_facing
from ..ir.graph import name_scope
from ..ir.shapes import format_shape, prod
from ..ir.tensor import Tensor
from ..ops.random import state_for

__all__ = [
    "linear", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d", "max_pool1d",
    "max_pool2d", "avg_pool1d", "avg_pool2d", "batch_norm", "layer_norm", "dropout", "embedding",
    "cross_entropy", "binary_cross_entropy_with_logits", "mse_loss", "l1_loss", "hinge_loss",
    "relu", "tanh", "sigmoid", "leaky_relu", "elu", "softplus", "softmax", "log_softmax",
    "scaled_dot_product_attention", "sinusoidal_positional_encoding",
    "gelu", "silu", "random_crop", "random_flip", "random_shift", "gaussian_noise",
]

relu, tanh, sigmoid, softplus = ops.relu, ops.tanh, ops.sigmoid, ops.softplus
leaky_relu, elu, softmax, log_softmax = ops.leaky_relu, ops.elu, ops.softmax, ops.log_softmax
gelu, silu = ops.gelu, ops.silu


def _channel_bias(b: Tensor, ndim: int) -> Tensor:
    return ops.reshape(b, (1, b.shape[0]) + (1,) * (ndim - 2))


def _check_rank(x: Tensor, rank: int, what: str, layout: str) -> None:
    if x.ndim != rank:
        raise ShapeError(f"{what} expects input {layout} (rank {rank}), got shape {x.shape}")


@user_facing("linear")
def linear(x, W, b=None) -> Tensor:
    """x @ W + b with W of shape (in, out)."""
    with name_scope("linear"):
        y = ops.matmul(x, W)
        return y if b is None else y + b


def _conv(x, w, b, stride, padding, dilation, nd: int) -> Tensor:
    with name_scope(f"conv{nd}d"):
        _check_rank(x, nd + 2, f"conv{nd}d", "(N, C, L)" if nd == 1 else "(N, C, H, W)")
        _check_rank(w, nd + 2, f"conv{nd}d weight", "(C_out, C_in, *kernel)")
        y = ops.conv_op(x, w, stride, padding, dilation)
        return y if b is None else y + _channel_bias(b, y.ndim)


@user_facing("conv1d")
def conv1d(x, w, b=None, stride=1, padding=0, dilation=1) -> Tensor:
    """1-d convolution: x (N, C_in, L), w (C_out, C_in, k)."""
    return _conv(x, w, b, stride, padding, dilation, 1)


@user_facing("conv2d")
def conv2d(x, w, b=None, stride=1, padding=0, dilation=1) -> Tensor:
    """2-d convolution: x (N, C_in, H, W), w (C_out, C_in, kh, kw)."""
    return _conv(x, w, b, stride, padding, dilation, 2)


def _conv_transpose(x, w, b, stride, padding, output_padding, dilation, nd: int) -> Tensor:
    from ..ops.conv import conv_transpose_base_size, int_tuple

    with name_scope(f"conv_transpose{nd}d"):
        _check_rank(x, nd + 2, f"conv_transpose{nd}d", "(N, C_in, *spatial)")
        _check_rank(w, nd + 2, f"conv_transpose{nd}d weight", "(C_in, C_out, *kernel)")
        s, p = int_tuple(stride, nd, "stride"), int_tuple(padding, nd, "padding")
        d, op = int_tuple(dilation, nd, "dilation"), int_tuple(output_padding, nd, "output_padding")
        out_size = tuple(
            conv_transpose_base_size(x.shape[2 + i], w.shape[2 + i], s[i], p[i], d[i]) + op[i]
            for i in range(nd))
        y = ops.conv_transpose_op(x, w, s, p, d, out_size)
        return y if b is None else y + _channel_bias(b, y.ndim)


@user_facing("conv_transpose1d")
def conv_transpose1d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1) -> Tensor:
    return _conv_transpose(x, w, b, stride, padding, output_padding, dilation, 1)


@user_facing("conv_transpose2d")
def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1) -> Tensor:
    """Transposed 2-d convolution: x (N, C_in, H, W), w (C_in, C_out, kh, kw) as in PyTorch."""
    return _conv_transpose(x, w, b, stride, padding, output_padding, dilation, 2)


@user_facing("max_pool1d")
def max_pool1d(x, kernel_size, stride=None, padding=0) -> Tensor:
    _check_rank(x, 3, "max_pool1d", "(N, C, L)")
    return ops.max_pool(x, kernel_size, stride, padding, nd=1)


@user_facing("max_pool2d")
def max_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    _check_rank(x, 4, "max_pool2d", "(N, C, H, W)")
    return ops.max_pool(x, kernel_size, stride, padding, nd=2)


@user_facing("avg_pool1d")
def avg_pool1d(x, kernel_size, stride=None, padding=0) -> Tensor:
    _check_rank(x, 3, "avg_pool1d", "(N, C, L)")
    return ops.avg_pool(x, kernel_size, stride, padding, nd=1)


@user_facing("avg_pool2d")
def avg_pool2d(x, kernel_size, stride=None, padding=0) -> Tensor:
    _check_rank(x, 4, "avg_pool2d", "(N, C, H, W)")
    return ops.avg_pool(x, kernel_size, stride, padding, nd=2)


@user_facing("batch_norm")
def batch_norm(x, gamma, beta, running_mean, running_var, training: bool,
               momentum: float | None = 0.1, eps: float = 1e-5,
               num_batches_tracked: Tensor | None = None, sync: bool = False) -> Tensor:
    """Normalize over every axis but the channels (axis 1).

    Training mode normalizes with the batch statistics and gives ``running_mean`` and
    ``running_var`` (parameters) default updates, as PyTorch does: the running variance uses
    the unbiased batch variance. Eval mode normalizes with the running statistics.
    ``num_batches_tracked`` (an int64 scalar parameter, optional) counts the training batches;
    ``momentum=None`` needs it and makes the running statistics a cumulative average
    (factor 1/(batches + 1)), as PyTorch does. A batch with one value per channel has no
    variance: PyTorch refuses it; here a fixed shape of one value per channel is a
    ShapeError, and a batch that has one at a call (``fit``'s last partial batch of one
    example) leaves the running statistics and the count as they are.

    `sync` (``nn.SyncBatchNorm``): in training mode the statistics are those of the whole
    batch across all MPI processes — each process's sums allreduced — so two processes with
    half the batch each normalize as one process with the whole batch would; the gradient flows
    through the allreduce (its gradient is an allreduce). In one process it is plain batch norm.
    """
    if x.ndim < 2:
        raise ShapeError(f"batch_norm expects (N, C, ...) input, got shape {x.shape}")
    for what, v in (("weight", gamma), ("bias", beta), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if isinstance(v, Tensor) and (v.ndim != 1 or not maybe_equal(v.shape[0], x.shape[1])):
            raise ShapeError(f"batch_norm: the input has {x.shape[1]} channels (shape "
                             f"{format_shape(x.shape)}), its {what} has shape "
                             f"{format_shape(v.shape)}: one value per channel")
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    if x.dtype.kind != "f":  # (as a mean of ints is: the counts and statistics are floats;
        x = ops.cast(x, np.float32)  # a bool count was True, the cumulative counter 1)
    with name_scope("batch_norm"):
        if training and sync:
            mu, var, n = _synced_moments(x, axes)
            y = (x - mu) / ops.sqrt(var + eps)
        elif training:
            mu = ops.mean(x, axes, keepdims=True)
            centered = x - mu
            var = ops.mean(ops.square(centered), axes, keepdims=True)
            y = centered / ops.sqrt(var + eps)
        else:
            y = (x - ops.reshape(running_mean, bshape)) / ops.sqrt(
                ops.reshape(running_var, bshape) + eps)
        if gamma is not None:
            y = y * ops.reshape(gamma, bshape)
        if beta is not None:
            y = y + ops.reshape(beta, bshape)
        if training:
            for p in (running_mean, running_var):
                if not isinstance(p, Tensor) or p.op != "parameter":
                    raise GraphError("batch_norm's running statistics must be parameters")
            count = prod(x.shape[a] for a in axes)  # (synced: the processes' sum is what counts)
            if not sync and isinstance(count, int) and count == 1:
                raise ShapeError(f"batch_norm in training mode needs more than one value per "
                                 f"channel, got shape {format_shape(x.shape)} (as PyTorch)")
            if not sync:
                n = ops.numel(x, axes, dtype=x.dtype)
            # one value per channel (a batch of one, fit's last partial batch) has no variance:
            # the running statistics keep theirs (a variance of 0 pulled them down by m)
            informative = ops.greater(n, 1.0)
            unbiased = var * n / ops.maximum(n - 1, 1)
            if momentum is None:
                if num_batches_tracked is None:
                    raise GraphError("batch_norm with momentum=None (a cumulative average) "
                                     "needs num_batches_tracked")
                m = 1.0 / (ops.cast(num_batches_tracked, x.dtype) + 1.0)
            else:
                m = float(momentum)
            new_mean = (1 - m) * running_mean + m * ops.reshape(mu, running_mean.shape)
            new_var = (1 - m) * running_var + m * ops.reshape(unbiased, running_var.shape)
            new_mean = ops.where(informative, new_mean, running_mean)
            new_var = ops.where(informative, new_var, running_var)
            y.graph.add_default_update(y.node, running_mean.node, new_mean.node)
            y.graph.add_default_update(y.node, running_var.node, new_var.node)
            if num_batches_tracked is not None:
                counted = ops.where(informative, num_batches_tracked + 1, num_batches_tracked)
                y.graph.add_default_update(y.node, num_batches_tracked.node, counted.node)
        return y


def _synced_moments(x: Tensor, axes: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Mean and biased variance per channel over the batch of every MPI process, and the
    total count, by the two-pass formula batch norm uses in one process: the mean from one
    allreduce of [Σx, n], then the variance from one allreduce of Σ(x - mean)²."""
    from ..ops.collective import allreduce

    bshape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    n = ops.numel(x, axes, dtype=x.dtype)
    sums = allreduce(ops.concat([ops.sum(x, axes), ops.reshape(n, (1,))], 0), "sum")
    channels = x.shape[1]
    count = ops.reshape(sums[channels:channels + 1], ())
    mu = ops.reshape(sums[:channels] / count, bshape)
    var = ops.reshape(allreduce(ops.sum(ops.square(x - mu), axes), "sum") / count, bshape)
    return mu, var, count


def normalized_shape_tuple(normalized_shape, what: str = "layer_norm") -> tuple[int, ...]:
    """`normalized_shape` (an int or a sequence of ints, as PyTorch) as a tuple of positive
    ints; anything else is a ShapeError naming `what`."""
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(normalized_shape)
    if not shape or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ShapeError(f"{what}: normalized_shape must be a positive int or a non-empty "
                         f"sequence of them, got {normalized_shape!r}")
    return tuple(int(d) for d in shape)


@user_facing("layer_norm")
def layer_norm(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    """Normalize each sample over its last ``len(normalized_shape)`` axes, then scale and
    shift: ``(x - mean) / sqrt(var + eps) * weight + bias`` (PyTorch's ``F.layer_norm``).

    Unlike batch norm, the statistics are per sample (here per position of a sequence), so
    there is no running state and training and evaluation compute the same thing. The
    variance is the biased one (divided by the number of elements), as PyTorch's. `weight`
    and `bias`, when given, have shape `normalized_shape`. Built from means, a square and a
    sqrt, so the gradient is that of the formula and matches PyTorch's to rounding.
    """
    shape = normalized_shape_tuple(normalized_shape)
    k = len(shape)
    if x.ndim < k or tuple(x.shape[x.ndim - k:]) != shape:
        raise ShapeError(f"layer_norm: the input's last {k} axes must be normalized_shape "
                         f"{shape}, got input shape {tuple(x.shape)}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise ShapeError(f"layer_norm: {name} must have shape normalized_shape {shape}, "
                             f"got {tuple(p.shape)}")
    axes = tuple(range(x.ndim - k, x.ndim))
    with name_scope("layer_norm"):
        centered = x - ops.mean(x, axes, keepdims=True)
        var = ops.mean(ops.square(centered), axes, keepdims=True)
        y = centered / ops.sqrt(var + eps)
        if weight is not None:
            y = y * weight
        if bias is not None:
            y = y + bias
        return y


@user_facing("dropout")
def dropout(x, p: float, training: bool, seed: int | None = None, state: Tensor | None = None
            ) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (training only).

    The mask comes from a counter-based generator: the same seed gives the same masks on every
    backend. Pass `state` (from ``gc.rng_state``) to share one state, or `seed` to fix it.
    """
    fraction(p, "dropout probability")
    if not training or p == 0.0:
        # (int and bool inputs give float32 in evaluation too, as in training: a model's
        # training step and its evaluation function return the same dtype)
        x = ops.lift(x)[0] if not isinstance(x, Tensor) else x
        return x if x.dtype.kind == "f" else ops.cast(x, np.float32)
    with name_scope("dropout"):
        if p == 1.0:
            return x * 0.0
        state = state_for(seed, state, "dropout_rng")
        # (drawn in a float type: a draw in [0, 1) cast to an int is 0, to a bool undefined)
        draw = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
        keep = ops.random_uniform(state, x.shape, draw) >= p
        return ops.where(keep, x * (1.0 / (1.0 - p)), 0.0)


@user_facing("embedding")
def embedding(ids, table) -> Tensor:
    """Rows of `table` (num_embeddings, dim) for integer `ids` of any shape."""
    return ops.take(table, ids)


@user_facing("cross_entropy")
def cross_entropy(logits, labels, label_smoothing: float = 0.0) -> Tensor:
    """Mean over the batch of -log softmax(logits)[label], with PyTorch's label smoothing.

    logits (N, C); labels int (N,) — or float class probabilities of shape (N, C).
    """
    if logits.ndim != 2:
        raise ShapeError(f"cross_entropy expects logits (N, C), got shape {logits.shape}")
    fraction(label_smoothing, "cross_entropy: label_smoothing")  # (PyTorch's range)
    with name_scope("cross_entropy"):
        logp = ops.log_softmax(logits, axis=1)
        n_classes = logits.shape[1]
        if isinstance(labels, Tensor) and labels.dtype.kind == "f":
            if labels.ndim != 2:
                raise ShapeError(f"cross_entropy: class probabilities must be (N, C) like the "
                                 f"logits {logits.shape}, got {labels.shape}")
            target = labels
        else:
            if getattr(labels, "ndim", 1) != 1:
                raise ShapeError(f"cross_entropy: integer labels must be (N,) for logits "
                                 f"{logits.shape}, got {labels.shape}")
            if not isinstance(n_classes, int):
                raise ShapeError(f"cross_entropy with integer labels needs a static number of "
                                 f"classes, got logits {logits.shape}")
            if isinstance(labels, Tensor) and not maybe_equal(labels.shape[0],
                                                               logits.shape[0]):
                raise ShapeError(f"cross_entropy: {labels.shape[0]} labels for "
                                 f"{logits.shape[0]} rows of logits {logits.shape}")
            target = ops.one_hot(labels, n_classes, dtype=logits.dtype)
        if label_smoothing:
            eps = float(label_smoothing)
            target = target * (1.0 - eps) + eps / n_classes
        return ops.mean(-ops.sum(target * logp, axis=1))


@user_facing("binary_cross_entropy_with_logits")
def binary_cross_entropy_with_logits(logits, targets) -> Tensor:
    """Mean of softplus(z) - z*t: the stable form of BCE(sigmoid(z), t)."""
    with name_scope("bce_with_logits"):
        return ops.mean(ops.softplus(logits) - logits * targets)


def _warn_if_broadcast(pred, target, loss: str) -> None:
    """PyTorch's warning: a target of another shape than the prediction is broadcast, and a
    (N, 1) prediction against an (N,) target averages N x N differences."""
    shapes = [shape_of(t) for t in (pred, target)]
    differ = len(shapes[0]) != len(shapes[1]) or not all(
        maybe_equal(a, b) for a, b in zip(*shapes))  # (a symbolic N may be 4)
    if differ and all(len(s) for s in shapes):
        warnings.warn(f"{loss}: the target's shape {shapes[1]} differs from the prediction's "
                      f"{shapes[0]}; they are broadcast, which is likely not what you want",
                      UserWarning, stacklevel=4)


@user_facing("mse_loss")
def mse_loss(pred, target) -> Tensor:
    """Mean of squared differences over all elements."""
    _warn_if_broadcast(pred, target, "mse_loss")
    with name_scope("mse_loss"):
        return ops.mean(ops.square(pred - target))


@user_facing("l1_loss")
def l1_loss(pred, target) -> Tensor:
    """Mean of absolute differences over all elements."""
    _warn_if_broadcast(pred, target, "l1_loss")
    with name_scope("l1_loss"):
        return ops.mean(ops.abs(pred - target))


@user_facing("hinge_loss")
def hinge_loss(scores, labels_pm1) -> Tensor:
    """Mean of max(0, 1 - y*s) for labels y in {-1, +1}."""
    with name_scope("hinge_loss"):
        return ops.mean(ops.relu(1.0 - labels_pm1 * scores))


def accuracy_counts(logits, labels) -> Tensor:
    """How many rows of logits have their argmax at the label (an int64 scalar)."""
    return ops.sum(ops.equal(ops.argmax(logits, axis=1), ops.cast(labels, np.int64)))


# attention lives in its own module (it needs the layer's masks and heads); F re-exports it
from .attention import scaled_dot_product_attention, sinusoidal_positional_encoding  # noqa: E402

# data augmentation as graph ops (graphc/nn/augment.py)
from .augment import gaussian_noise, random_crop, random_flip, random_shift  # noqa: E402
