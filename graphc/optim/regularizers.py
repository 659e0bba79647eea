"""Weight penalties to add to a cost: L2 (ridge / weight decay) and L1 (lasso).

Only weights are penalized — parameters of rank >= 2 (Linear and convolution weights) — not
biases, batch-norm scales or other vectors: shrinking a bias does not reduce a model's
capacity, it only shifts its outputs.
"""

from __future__ import annotations

from collections.abc import Iterable

from .. import ops
from ..ir.tensor import Tensor


def weights(params) -> list[Tensor]:
    """The parameters of rank >= 2 among `params` (a list of tensors or a Module)."""
    if hasattr(params, "parameters"):
        params = params.parameters()
    return [p for p in params if p.ndim >= 2]


def _penalty(params: Iterable[Tensor], coeff: float, term) -> Tensor | float:
    total = None
    for w in weights(params):
        s = ops.sum(term(w))
        total = s if total is None else total + s
    return 0.0 if total is None else coeff * total


def l2_penalty(params, coeff: float = 1.0) -> Tensor | float:
    """``coeff * sum(w**2)`` over the weights. Its gradient is ``2*coeff*w``, so
    ``coeff = weight_decay / 2`` matches SGD's ``weight_decay`` on the weights."""
    return _penalty(params, coeff, ops.square)


def l1_penalty(params, coeff: float = 1.0) -> Tensor | float:
    """``coeff * sum(|w|)`` over the weights: pushes weights to exactly zero (sparsity)."""
    return _penalty(params, coeff, ops.abs)
