"""cast: change a tensor's dtype (NumPy astype semantics: float -> int truncates toward 0)."""

from __future__ import annotations

import numpy as np

from ..ir.tensor import Tensor, apply
from ..ir.types import TensorType, as_dtype
from .loops import elementwise_loops
from .registry import BLOCKED, OpDef, register


def _grad(ctx) -> list:
    (x,) = ctx.inputs
    if x.dtype.kind == "f" and ctx.out.dtype.kind == "f":
        return [cast(ctx.g, x.dtype)]
    # float -> int/bool -> float: the result is piecewise constant in x; an int/bool input
    # cannot carry a gradient at all. Either way the path is not differentiable.
    return [BLOCKED]


CAST = register(OpDef(
    "cast", "cast",
    infer=lambda types, attrs, checks: TensorType(attrs["dtype"], types[0].shape),
    reference=lambda x, *, dtype: np.asarray(x).astype(dtype),
    grad=_grad,
    doc="Convert to another dtype. Differentiable only from float to float.",
    loops=elementwise_loops,
))


def cast(x, dtype) -> Tensor:
    """x converted to `dtype` (a no-op when it already has it)."""
    from .elementwise import lift

    dtype = as_dtype(dtype)
    (x,) = lift(x) if not isinstance(x, Tensor) else (x,)
    if x.dtype == dtype:
        return x
    return apply(CAST, [x], dtype=dtype)
