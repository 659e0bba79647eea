"""Batch normalization layers: batch statistics in training mode, running ones in eval mode."""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from ..init import float_dtype
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
        self.weight = parameter("weight", np.ones(num_features, dt)) if affine else None
        self.bias = parameter("bias", np.zeros(num_features, dt)) if affine else None
        self.register_buffer("running_mean", parameter("running_mean",
                                                       np.zeros(num_features, dt)))
        self.register_buffer("running_var", parameter("running_var",
                                                      np.ones(num_features, dt)))
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
