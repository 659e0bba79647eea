"""Gradient clipping as graph operations (applied before the optimizer's formula, as PyTorch's
``clip_grad_value_`` / ``clip_grad_norm_`` are applied before ``optimizer.step()``)."""

from __future__ import annotations

from collections.abc import Sequence

from .. import ops
from ..arguments import number
from ..ir.tensor import Tensor


def clip_by_value(grads: Sequence[Tensor], clip_value: float) -> list[Tensor]:
    """Clamp every gradient element into [-clip_value, clip_value]."""
    clip_value = number(clip_value, "clip_value", above=0.0)
    return [ops.clip(g, -clip_value, clip_value) for g in grads]


def global_norm(grads: Sequence[Tensor]) -> Tensor:
    """The L2 norm of all gradients taken together, as one vector."""
    total = None
    for g in grads:
        s = ops.sum(ops.square(g))
        total = s if total is None else total + s
    return ops.sqrt(total)


def clip_by_global_norm(grads: Sequence[Tensor], max_norm: float) -> list[Tensor]:
    """Rescale all gradients by ``min(1, max_norm / (global_norm + 1e-6))`` (PyTorch's
    clip_grad_norm_): the direction is kept, only a too-long step is shortened."""
    max_norm = number(max_norm, "clip_norm", above=0.0)
    norm = global_norm(grads)
    scale = ops.minimum(max_norm / (norm + 1e-6), 1.0)
    return [g * (scale if scale.dtype == g.dtype else ops.cast(scale, g.dtype)) for g in grads]
