"""Tensors made from a shape and a value: ``full``, ``zeros``, ``ones``, their ``*_like``
forms, and ``arange``.

A filled tensor is a 0-d constant broadcast to the shape (one ``broadcast_to`` node), not an
array of that size stored in the graph: the shape may be symbolic (``("N", 10)``, bound when
the compiled function is called), and a saved graph stays small. ``arange`` is a constant
array, as its values are known when the graph is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import GraphError
from ..ir.graph import graph_for
from ..ir.shapes import as_dim
from ..ir.tensor import Tensor
from ..ir.types import DEFAULT_FLOAT, as_dtype
from .shape_ops import broadcast_to
from .sources import constant

__all__ = ["arange", "full", "full_like", "ones", "ones_like", "zeros", "zeros_like"]


def as_shape(shape) -> tuple:
    """A shape argument (an int, a dimension name or a sequence of them) as a tuple of dims."""
    if isinstance(shape, (int, np.integer, str)):
        shape = (shape,)
    if not isinstance(shape, Sequence):
        raise GraphError(f"a shape is an int, a dimension name or a sequence of them; got "
                         f"{shape!r}")
    return tuple(as_dim(d) for d in shape)


def _fill_dtype(value, dtype) -> np.dtype:
    """NumPy's and PyTorch's rule: bool -> bool, int -> int64, float -> the default float."""
    if dtype is not None:
        return as_dtype(dtype)
    if isinstance(value, (bool, np.bool_)):
        return np.dtype(bool)
    if isinstance(value, (int, np.integer)):
        return np.dtype(np.int64)
    if isinstance(value, (float, np.floating)):
        return DEFAULT_FLOAT
    raise GraphError(f"full: the fill value must be a Python or NumPy scalar, got "
                     f"{type(value).__name__}")


def full(shape, fill_value, dtype=None) -> Tensor:
    """A tensor of `shape` (ints or dimension names) holding `fill_value` everywhere; the
    dtype follows the value (int64, float32, bool) unless given."""
    dt = _fill_dtype(fill_value, dtype)
    return broadcast_to(constant(np.asarray(fill_value, dtype=dt)), as_shape(shape))


def zeros(shape, dtype=DEFAULT_FLOAT) -> Tensor:
    """A tensor of `shape` filled with 0 (float32 unless `dtype` says otherwise)."""
    return full(shape, 0, as_dtype(dtype))


def ones(shape, dtype=DEFAULT_FLOAT) -> Tensor:
    """A tensor of `shape` filled with 1 (float32 unless `dtype` says otherwise)."""
    return full(shape, 1, as_dtype(dtype))


def _like(x: Tensor, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise GraphError(f"{what} takes a tensor, got {type(x).__name__}")
    return x


def full_like(x: Tensor, fill_value, dtype=None) -> Tensor:
    """A tensor of x's shape (symbolic dimensions included) and dtype (unless given) holding
    `fill_value`; x's values are not read."""
    x = _like(x, "full_like")
    with graph_for(x):
        return full(x.shape, fill_value, x.dtype if dtype is None else dtype)


def zeros_like(x: Tensor, dtype=None) -> Tensor:
    """Zeros of x's shape and dtype (unless given)."""
    return full_like(_like(x, "zeros_like"), 0, dtype)


def ones_like(x: Tensor, dtype=None) -> Tensor:
    """Ones of x's shape and dtype (unless given)."""
    return full_like(_like(x, "ones_like"), 1, dtype)


def arange(start, stop=None, step=1, dtype=None) -> Tensor:
    """``np.arange`` as a constant: int64 for int arguments, float32 when any is a float
    (unless `dtype` is given)."""
    values = (start, step) if stop is None else (start, stop, step)
    if not all(isinstance(v, (int, float, np.integer, np.floating)) and
               not isinstance(v, bool) for v in values):
        raise GraphError("arange takes numbers (start, stop, step): its values are known when "
                         "the graph is built")
    if step == 0:
        raise GraphError("arange: step must not be 0")
    args = (0, start, step) if stop is None else (start, stop, step)
    is_float = any(isinstance(v, (float, np.floating)) for v in args)
    dt = as_dtype(dtype) if dtype is not None else (DEFAULT_FLOAT if is_float else
                                                    np.dtype(np.int64))
    # computed in float64/int64, then converted: np.arange(0.1, 1, 0.1, float32) accumulates
    # in float32 and can give one element more than the float64 count
    values = np.arange(*args, dtype=np.float64 if is_float else np.int64)
    return constant(values.astype(dt))
