"""Checks of the numeric arguments layers, functions, optimizers and schedules take, in one
place: the same question (a probability? a spread? a rate in range?) gets the same answer and
the same message everywhere."""

from __future__ import annotations

import math

import numpy as np

from .errors import GraphError


def fraction(value, what: str) -> float:
    """`value` as a float in [0, 1] (a probability, a dropout rate, label smoothing), or a
    GraphError naming `what` (a bool, a string, NaN or 1.5 is not one): `number`'s idea of
    a number, with the message users and tests know."""
    try:
        return number(value, what, least=0.0, most=1.0)
    except GraphError:
        raise GraphError(f"{what} must be a number in [0, 1], got {value!r}") from None


def spread(value, what: str) -> float:
    """`value` as a finite float >= 0 (a standard deviation), or a GraphError naming `what`."""
    return number(value, what, least=0)


def number(value, what: str, least: float | None = None, *, above: float | None = None,
           most: float | None = None, below: float | None = None) -> float:
    """`value` as a finite float within the bounds given (``least <= value``, ``above <
    value``, ``value <= most``, ``value < below``), or a GraphError naming `what`: how the
    optimizers and schedules check their hyperparameters where torch.optim does (a negative
    rate would turn descent into ascent, a NaN reach every parameter). Strings and bools are
    not numbers; a 0-d array is."""
    kind = str(getattr(value, "dtype", ""))  # (an array's or a tensor's elements)
    if isinstance(value, (str, bytes, bool, np.bool_, complex, np.complexfloating)) or \
            np.ndim(value) != 0 or any(k in kind for k in ("bool", "complex", "str", "<U",
                                                             "|S", "object")):
        raise GraphError(f"{what} must be a number, got {value!r}")
    try:  # (a 0-d tensor of another library, a Fraction or a Decimal is a number too)
        x = float(value)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise GraphError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x) or (least is not None and x < least) or \
            (above is not None and x <= above) or (most is not None and x > most) or \
            (below is not None and x >= below):
        bounds = [f">= {least}" if least is not None else "",
                  f"> {above}" if above is not None else "",
                  f"<= {most}" if most is not None else "",
                  f"< {below}" if below is not None else ""]
        wanted = " and ".join(b for b in bounds if b)
        raise GraphError(f"{what} must be a finite number{' ' + wanted if wanted else ''}, "
                         f"got {value!r}")
    return x


def maybe_equal(a, b) -> bool:
    """False only for two sizes known to differ: symbolic sizes are checked when the compiled
    function is called, so at build time they may equal anything."""
    known = (int, np.integer)
    return not (isinstance(a, known) and isinstance(b, known)) or a == b


def shape_of(value) -> tuple:
    """The shape of a tensor or of anything NumPy reads as an array (a mask, a target)."""
    shape = getattr(value, "shape", None)
    return tuple(np.shape(value) if shape is None else shape)
