"""Tensor types: a dtype plus a shape whose entries are ints or sympy expressions.

Dtype promotion (the rule every binary/ternary op applies before building its node, so that
the inputs of an arithmetic node always share one dtype):

* Supported dtypes, by kind and width: ``bool`` < ``int32`` < ``int64`` < ``float32`` < ``float64``.
* Two tensors promote to the larger of the two in that order (``int32 + float32 -> float32``,
  ``float32 + float64 -> float64``, ``bool + int32 -> int32``).
* Python scalars are *weak*: they take the tensor's dtype when their kind fits
  (``float32_tensor * 2.5 -> float32``, ``int32_tensor + 1 -> int32``); a Python float with an
  integer or bool tensor gives ``float32`` (as PyTorch does; NumPy would give float64).
* True division and float-only functions (exp, log, sigmoid, ...) turn integer/bool inputs
  into ``float32`` first.
* Comparisons return ``bool``; ``argmax`` returns ``int64``; ``one_hot`` returns ``float32``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

from .shapes import Dim, format_shape, normalize_shape

SUPPORTED_DTYPES = tuple(
    np.dtype(d) for d in ("bool", "int32", "int64", "float32", "float64")
)
_RANK = {d: i for i, d in enumerate(SUPPORTED_DTYPES)}
DEFAULT_FLOAT = np.dtype("float32")


def as_dtype(dtype) -> np.dtype:
    """Normalize a dtype spec ('float32', np.float32, np.dtype) and check graphc supports it."""
    from ..errors import GraphError

    try:
        d = np.dtype(dtype)
    except TypeError as exc:
        raise GraphError(f"not a dtype: {dtype!r}") from exc
    if d not in _RANK:
        names = ", ".join(str(s) for s in SUPPORTED_DTYPES)
        raise GraphError(f"dtype {d} is not supported (supported: {names})")
    return d


def is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f"


def promote(*dtypes: np.dtype) -> np.dtype:
    """The common dtype of several tensor dtypes (see the module docstring)."""
    return max((np.dtype(d) for d in dtypes), key=lambda d: _RANK[d])


def scalar_dtype(value, other: np.dtype) -> np.dtype:
    """The dtype a weak Python scalar takes next to a tensor of dtype `other`."""
    if isinstance(value, (bool, np.bool_)):
        return other
    if isinstance(value, (int, np.integer)):
        return other if other.kind != "b" else np.dtype("int64")
    if isinstance(value, (float, np.floating)):
        return other if other.kind == "f" else DEFAULT_FLOAT
    raise TypeError(f"cannot use {type(value).__name__} as a tensor scalar")


def can_feed(src: np.dtype, dst: np.dtype) -> bool:
    """Whether an input array of dtype `src` may be converted into a placeholder of `dst`.

    Allowed: the same kind (any width: float64 -> float32 included), or a widening of kind
    (bool -> int -> float). Refused: float -> int/bool, int -> bool, anything complex/object,
    and between signed and unsigned integers unless the cast is safe for every value of the
    type (uint8 -> int16 yes, uint64 -> int64 no). Values are not looked at here: the call
    checks that narrowed integers fit and narrowed floats stay finite (function._convert).
    """
    order = "biuf"
    if src.kind not in order or dst.kind not in order:
        return False
    if {src.kind, dst.kind} == {"i", "u"}:
        return bool(np.can_cast(src, dst, "safe"))
    kind_rank = {"b": 0, "i": 1, "u": 1, "f": 2}
    return kind_rank[src.kind] <= kind_rank[dst.kind]


@dataclass(frozen=True)
class TensorType:
    """dtype + shape. Shape entries are Python ints or sympy expressions of named dims."""

    dtype: np.dtype
    shape: tuple[Dim, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", normalize_shape(self.shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_concrete(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    @property
    def symbols(self) -> set[sympy.Symbol]:
        out: set[sympy.Symbol] = set()
        for d in self.shape:
            if not isinstance(d, int):
                out |= d.free_symbols
        return out

    def __str__(self) -> str:
        return f"{format_shape(self.shape)} {self.dtype}"
