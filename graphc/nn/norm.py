"""Normalization layers: batch norm (batch statistics in training mode, running ones in eval
mode) and layer norm (per-sample statistics, the same in both modes)."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..init import float_dtype, ones, zeros
from ..ir.tensor import Tensor
from ..ops.sources import parameter
from . import functional as F
from .module import Module


class _BatchNorm(Module):
    """Normalize each channel (axis 1) over the batch and spatial axes, then scale and shift.

    Training mode uses the batch's statistics and gives the buffers ``running_mean`` and
    ``running_var`` default updates (``(1 - momentum) * running + momentum * batch``, with the
    unbiased batch variance, as PyTorch), which every compiled function that computes the
    output applies — no ``updates=`` entry needed; ``num_batches_tracked`` counts the training
    batches, and ``momentum=None`` averages over all of them. Eval mode uses the running
    statistics.
    ``weight`` (ones) and ``bias`` (zeros) are trainable when ``affine``. `dtype` (float32 or
    float64) is that of the weights and running statistics.
    """

    ranks: tuple[int, ...] = (2, 3)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, *, dtype="float32") -> None:
        super().__init__()
        dt = float_dtype(dtype)
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), momentum
        n = self.num_features
        self.weight = parameter("weight", ones(n, dtype=dt)) if affine else None
        self.bias = parameter("bias", zeros(n, dtype=dt)) if affine else None
        self.register_buffer("running_mean", parameter("running_mean", zeros(n, dtype=dt)))
        self.register_buffer("running_var", parameter("running_var", ones(n, dtype=dt)))
        self.register_buffer("num_batches_tracked",
                             parameter("num_batches_tracked", np.array(0, np.int64)))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self.ranks:
            want = " or ".join(str(r) for r in self.ranks)
            raise ShapeError(f"{type(self).__name__} expects input of rank {want} (N, C, ...), "
                             f"got shape {x.shape}")
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            training=self.training, momentum=self.momentum, eps=self.eps,
                            num_batches_tracked=self.num_batches_tracked)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs."""

    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs (per channel, over N, H and W)."""

    ranks = (4,)


class SyncBatchNorm(_BatchNorm):
    """Batch norm whose training statistics are those of the whole batch across all MPI
    processes (PyTorch's ``nn.SyncBatchNorm``): each process's sums are allreduced inside the
    compiled step, so N processes with a batch of B each normalize exactly as one process with
    a batch of N·B, running statistics included. Any input of rank 2 or more (N, C, ...). In
    one process it is ``BatchNorm``. Plain ``BatchNorm1d/2d`` keep per-process statistics."""

    ranks = (2, 3, 4, 5)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self.ranks:
            raise ShapeError(f"SyncBatchNorm expects input of rank 2 to 5 (N, C, ...), got "
                             f"shape {x.shape}")
        return F.batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var,
                            training=self.training, momentum=self.momentum, eps=self.eps,
                            num_batches_tracked=self.num_batches_tracked, sync=True)


class LayerNorm(Module):
    """Layer normalization (PyTorch's ``nn.LayerNorm``): each sample is normalized over its
    last ``len(normalized_shape)`` axes — in a Transformer, each position over its features —
    then scaled by ``weight`` (ones) and shifted by ``bias`` (zeros) when
    ``elementwise_affine`` (``bias=False`` leaves the shift out, as PyTorch 2.1+).

    No running statistics: training and evaluation compute the same thing, and the result
    does not depend on the other samples of the batch (unlike batch norm). `dtype` (float32
    or float64) is that of the weights.
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype="float32") -> None:
        super().__init__()
        dt = float_dtype(dtype)
        self.normalized_shape = F.normalized_shape_tuple(normalized_shape, "LayerNorm")
        self.eps, self.elementwise_affine = float(eps), bool(elementwise_affine)
        self.weight = (parameter("weight", ones(self.normalized_shape, dtype=dt))
                       if elementwise_affine else None)
        self.bias = (parameter("bias", zeros(self.normalized_shape, dtype=dt))
                     if elementwise_affine and bias else None)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
