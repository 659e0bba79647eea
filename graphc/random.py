"""Random tensors inside a graph: ``gc.random.uniform``, ``normal``, ``bernoulli`` and their
``*_like`` forms.

Each call makes a draw from its own random state, a ``[seed, step]`` int64 parameter with a
default update (``step + 1``), so every call of a compiled function draws fresh numbers while
the same seed replays the same sequence. The bits come from the counter-based Philox
generator of ``gc.ops.random_uniform``: uniform and Bernoulli draws are bit-identical on
numpy, llvm and cuda. Normal draws use the Box–Muller transform
``sqrt(-2 log(1 - u1)) * cos(2 pi u2)``, computed in float64 and then rounded to the
requested dtype, so that backends differ only by their log and cos in the last bits.

A uniform draw carries 24 random bits (multiples of 2**-24 in [0, 1)), the same for float32
and float64; normal draws therefore reach at most ``sqrt(2 * 24 * ln 2)`` = 5.77 standard
deviations from the mean. ``uniform(low, high)`` computes ``low + (high - low) * u`` in the
output dtype, which can round up to `high` (e.g. float32 [1000, 1001)); such a value is
replaced by the largest number below `high` in that dtype, so the interval stays half-open
and every backend gives the same bits.

``seed=None`` takes a seed from the global sequence that ``gc.manual_seed`` sets; ``seed=``
fixes it. ``state=`` draws from a state the caller holds (``gc.rng_state()``), e.g. a module's
buffer, so that checkpoints save and resume it.
"""

from __future__ import annotations

import math

import numpy as np

from . import ops
from .errors import GraphError
from .ir.graph import graph_for
from .ir.tensor import Tensor
from .ir.types import DEFAULT_FLOAT, as_dtype
from .ops.creation import as_shape
from .ops.random import state_for

__all__ = ["bernoulli", "bernoulli_like", "normal", "normal_like", "uniform", "uniform_like"]


def _float_dtype(dtype, what: str) -> np.dtype:
    dt = as_dtype(dtype)
    if dt.kind != "f":
        raise GraphError(f"gc.random.{what}: dtype must be float32 or float64, got {dt}")
    return dt


def _number(value, name: str, what: str) -> float:
    """A Python number argument as a float; a tensor (or anything else) is a GraphError, as
    these arguments are fixed when the graph is built."""
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                      np.floating)):
        kind = "a tensor" if isinstance(value, Tensor) else type(value).__name__
        raise GraphError(f"gc.random.{what}: {name} must be a number (fixed when the graph is "
                         f"built), got {kind}")
    return float(value)


def _unit(shape, dtype, seed, state, name: str) -> Tensor:
    """Uniform [0, 1) numbers (24 random bits) of `dtype` and their state."""
    return ops.random_uniform(state_for(seed, state, name), as_shape(shape), dtype)


def uniform(shape, low: float = 0.0, high: float = 1.0, dtype=DEFAULT_FLOAT, seed=None, *,
            state: Tensor | None = None) -> Tensor:
    """Numbers drawn uniformly from [low, high): ``low + (high - low) * u``."""
    dt = _float_dtype(dtype, "uniform")
    low, high = _number(low, "low", "uniform"), _number(high, "high", "uniform")
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise GraphError(f"gc.random.uniform: need finite low <= high, got [{low}, {high})")
    with np.errstate(over="ignore"):
        width = dt.type(high) - dt.type(low)
    if not np.isfinite(width):  # (every number came out as the top of the range; NumPy's
        raise GraphError(f"gc.random.uniform: high - low of [{low}, {high}) overflows "  # too)
                         f"{dt.name}; draw from a narrower range and scale it")
    u = _unit(shape, dt, seed, state, "uniform_rng")
    if (low, high) == (0.0, 1.0):
        return u  # u < 1 exactly
    r = u * (high - low) + low
    top, below = dt.type(high), np.nextafter(dt.type(high), dt.type(-np.inf))
    if dt.type(low) >= top:  # low == high (in this dtype): the constant low, nothing to clamp
        return r
    # a value that rounded up to `high` (or past it) becomes the largest one below it
    return ops.where(r < float(top), r, float(max(below, dt.type(low))))


def normal(shape, mean: float = 0.0, std: float = 1.0, dtype=DEFAULT_FLOAT, seed=None, *,
           state: Tensor | None = None) -> Tensor:
    """Numbers drawn from the normal distribution N(mean, std**2) (Box–Muller)."""
    dt = _float_dtype(dtype, "normal")
    mean, std = _number(mean, "mean", "normal"), _number(std, "std", "normal")
    if not (math.isfinite(mean) and math.isfinite(std) and std >= 0):
        raise GraphError(f"gc.random.normal: need a finite mean and std >= 0, got "
                         f"mean={mean}, std={std}")
    st = state_for(seed, state, "normal_rng")
    dims = as_shape(shape)
    u1 = ops.random_uniform(st, dims, np.float64)
    u2 = ops.random_uniform(st, dims, np.float64)
    radius = ops.sqrt(-2.0 * ops.log(1.0 - u1))  # 1 - u1 in (0, 1]: finite
    z = radius * ops.cos((2.0 * math.pi) * u2)
    if (mean, std) != (0.0, 1.0):
        z = z * float(std) + float(mean)
    return z if dt == np.float64 else ops.cast(z, dt)


def bernoulli(shape, p=0.5, dtype=DEFAULT_FLOAT, seed=None, *,
              state: Tensor | None = None) -> Tensor:
    """1 with probability `p`, else 0. `p` is a number in [0, 1] or a tensor that broadcasts
    to `shape`; compared with a float64 uniform draw (``u < p``)."""
    dt = as_dtype(dtype)
    if isinstance(p, Tensor):
        if p.dtype.kind != "f":
            raise GraphError(f"gc.random.bernoulli: p must be a float tensor, got {p.dtype}")
        prob = ops.cast(p, np.float64) if p.dtype != np.float64 else p
    else:
        p = _number(p, "p", "bernoulli")
        if not 0.0 <= p <= 1.0:
            raise GraphError(f"gc.random.bernoulli: p must lie in [0, 1], got {p}")
        prob = float(p)
    u = _unit(shape, np.float64, seed, state, "bernoulli_rng")
    hit = u < prob
    if tuple(hit.shape) != tuple(u.shape):
        from .errors import ShapeError

        raise ShapeError(f"gc.random.bernoulli: p of shape {tuple(p.shape)} does not "
                         f"broadcast to {tuple(u.shape)}")
    return hit if dt == np.dtype(bool) else ops.cast(hit, dt)


def _like(x, what: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise GraphError(f"gc.random.{what} takes a tensor, got {type(x).__name__}")
    return x


def uniform_like(x: Tensor, low: float = 0.0, high: float = 1.0, dtype=None, seed=None, *,
                 state: Tensor | None = None) -> Tensor:
    """`uniform` with x's shape (symbolic dimensions included) and float dtype."""
    x = _like(x, "uniform_like")
    with graph_for(x):
        return uniform(x.shape, low, high, dtype or _default_dtype(x), seed, state=state)


def normal_like(x: Tensor, mean: float = 0.0, std: float = 1.0, dtype=None, seed=None, *,
                state: Tensor | None = None) -> Tensor:
    """`normal` with x's shape and float dtype (the VAE's ``eps = normal_like(mu)``)."""
    x = _like(x, "normal_like")
    with graph_for(x):
        return normal(x.shape, mean, std, dtype or _default_dtype(x), seed, state=state)


def bernoulli_like(x: Tensor, p=0.5, dtype=None, seed=None, *,
                   state: Tensor | None = None) -> Tensor:
    """`bernoulli` with x's shape and dtype."""
    x = _like(x, "bernoulli_like")
    with graph_for(x):
        return bernoulli(x.shape, p, dtype or x.dtype, seed, state=state)


def _default_dtype(x: Tensor) -> np.dtype:
    return x.dtype if x.dtype.kind == "f" else DEFAULT_FLOAT
