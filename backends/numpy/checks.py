"""The checks ``backend_options={"check_finite": True}`` puts in the NumPy backend's
generated step (and its loops' bodies), and the signal they raise."""

from __future__ import annotations

import numpy as np


class NonFinite(Exception):
    """Raised by the checks: (the node's position in its program, or the node itself once
    a loop has named the node of its body, "NaN" or "inf"[, that body's graph])."""


def check_nan(value, position: int) -> None:
    # (a reduction to a scalar gives a NumPy scalar, np.float32, not an array)
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind == "f" and \
            np.isnan(value).any():
        raise NonFinite(position, "NaN")


def check_finite_value(value, position: int) -> None:
    check_nan(value, position)
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind == "f" and \
            np.isinf(value).any():
        raise NonFinite(position, "inf")
