"""Weight initializers (``gc.init``): seeded NumPy arrays to hand to ``gc.parameter``.

Every initializer takes a shape and an ``rng`` and returns a float32 array (``dtype="float64"``
for a float64 one: the same draws, not rounded), so the same seed gives the same network on
every machine, and a float32 network is its float64 twin rounded. ``rng`` may be a
``numpy.random.Generator``, an int seed, or None (a seed drawn from the sequence that
``gc.manual_seed`` restarts).

Fans follow graphc's weight layouts, which is what makes the scales match PyTorch's:

* 2-d ``(in, out)`` — a Linear weight used as ``x @ W``: ``fan_in = in``, ``fan_out = out``.
* n-d ``(C_out, C_in, *kernel)`` — a convolution weight: ``fan_in = C_in * prod(kernel)``,
  ``fan_out = C_out * prod(kernel)`` (for a transposed convolution's ``(C_in, C_out, *k)``
  weight this gives PyTorch's fans too, as PyTorch reads the same two axes).
* 1-d ``(n,)``: ``fan_in = fan_out = n``.

Layer defaults (as in PyTorch): Linear, Conv and ConvTranspose weights and biases are
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` — PyTorch's ``kaiming_uniform_(a=sqrt(5))``, which is
``torch_default`` here; RNN/LSTM/GRU weights and biases are ``U(-1/sqrt(hidden), 1/sqrt(hidden))``;
Embedding tables are ``N(0, 1)``; BatchNorm scales are ones and shifts zeros.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from .errors import GraphError

__all__ = ["as_rng", "float_dtype", "fans", "uniform", "normal", "glorot_uniform", "glorot_normal",
           "he_uniform", "he_normal", "zeros", "ones", "full", "torch_default"]

RngLike = np.random.Generator | int | None
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype, what: str = "dtype") -> np.dtype:
    """`dtype` as a NumPy dtype, checked to be one a layer's parameters may have: float32 (the
    default everywhere) or float64. Anything else is a GraphError naming `what`."""
    try:
        d = np.dtype(dtype) if dtype is not None else None
    except TypeError:
        d = None
    if d is None or d not in FLOAT_DTYPES:
        raise GraphError(f"{what} must be float32 or float64, got {dtype!r}")
    return d


def as_rng(rng: RngLike) -> np.random.Generator:
    """A Generator from a Generator, an int seed, a RandomState, or None (the next seed of
    ``gc.manual_seed``)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None:
        from .ops.random import next_seed

        return np.random.default_rng(next_seed())
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.RandomState):  # the legacy interface: seed a Generator from it
        return np.random.default_rng(rng.randint(0, 2**63 - 1, dtype=np.int64))
    raise GraphError(f"rng must be a numpy Generator, a RandomState, an int seed or None, "
                     f"got {rng!r}")


def _shape(shape: Sequence[int] | int) -> tuple[int, ...]:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        raise GraphError(f"an initializer needs a shape of non-negative ints, got {shape}")
    return tuple(int(d) for d in shape)


#: bytes the arrays made from here on may take, and what is being built (None: no bound)
_budget: ContextVar[list | None] = ContextVar("graphc_init_budget", default=None)


@contextmanager
def allocation_budget(nbytes: int, what: str) -> Iterator[None]:
    """Bound the arrays the initializers make inside the block to `nbytes` in all (counted
    as float64 draws): how ``gc.load`` rebuilds a model from a file's spec. A file of a
    kilobyte naming ``Linear(60000, 60000)`` would otherwise allocate and draw 27 GB before
    its state could be compared with the model's."""
    token = _budget.set([int(nbytes), what])
    try:
        yield
    finally:
        _budget.reset(token)


def _made(shape: Sequence[int] | int) -> tuple[int, ...]:
    """`shape`, checked, for an array about to be made: charged to the budget if one is set
    (`allocation_budget`), an error before anything is allocated if it would exceed it."""
    shape = _shape(shape)
    budget = _budget.get()
    if budget is not None:
        need = math.prod(shape) * 8
        if need > budget[0]:
            raise GraphError(f"{budget[1]}: a {shape} array would take {need:,} bytes, more "
                             f"than the {budget[0]:,} left for it")
        budget[0] -= need
    return shape


def fans(shape: Sequence[int] | int) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of this shape, by graphc's layouts (module docstring)."""
    shape = _shape(shape)
    if len(shape) == 0:
        raise GraphError("fans of a scalar are undefined")
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform(shape, rng: RngLike, bound: float, dtype="float32") -> np.ndarray:
    """U(-bound, bound)."""
    return as_rng(rng).uniform(-bound, bound, _made(shape)).astype(float_dtype(dtype))


def normal(shape, rng: RngLike, std: float, mean: float = 0.0, dtype="float32") -> np.ndarray:
    """N(mean, std^2)."""
    draws = mean + std * as_rng(rng).standard_normal(_made(shape))
    return draws.astype(float_dtype(dtype))


def glorot_uniform(shape, rng: RngLike = None, gain: float = 1.0, dtype="float32") -> np.ndarray:
    """Glorot/Xavier uniform: U(±gain*sqrt(6/(fan_in+fan_out))); keeps activation and gradient
    variance balanced through tanh/sigmoid layers (torch.nn.init.xavier_uniform_)."""
    fan_in, fan_out = fans(shape)
    return uniform(shape, rng, gain * math.sqrt(_per(6.0, fan_in + fan_out)), dtype)


def glorot_normal(shape, rng: RngLike = None, gain: float = 1.0, dtype="float32") -> np.ndarray:
    """Glorot/Xavier normal: N(0, gain^2 * 2/(fan_in+fan_out)) (xavier_normal_)."""
    fan_in, fan_out = fans(shape)
    return normal(shape, rng, gain * math.sqrt(_per(2.0, fan_in + fan_out)), dtype=dtype)


def _per(numerator: float, fan: int) -> float:
    """numerator / fan, or 0 for a fan of 0: such a weight has no elements (a (0, 3) Linear
    weight), and its spread does not matter (it raised ZeroDivisionError)."""
    return numerator / fan if fan else 0.0


def _he_gain(a: float) -> float:
    return math.sqrt(2.0 / (1.0 + a * a))


def he_uniform(shape, rng: RngLike = None, a: float = 0.0, dtype="float32") -> np.ndarray:
    """He/Kaiming uniform for ReLU-like layers: U(±gain*sqrt(3/fan_in)), gain = sqrt(2/(1+a²))
    (kaiming_uniform_ in fan_in mode; `a` is the negative slope of a leaky ReLU)."""
    fan_in, _ = fans(shape)
    return uniform(shape, rng, _he_gain(a) * math.sqrt(_per(3.0, fan_in)), dtype)


def he_normal(shape, rng: RngLike = None, a: float = 0.0, dtype="float32") -> np.ndarray:
    """He/Kaiming normal: N(0, gain^2/fan_in) (kaiming_normal_ in fan_in mode)."""
    fan_in, _ = fans(shape)
    return normal(shape, rng, _he_gain(a) / math.sqrt(fan_in) if fan_in else 0.0, dtype=dtype)


def torch_default(shape, rng: RngLike = None, fan_in: int | None = None,
                  dtype="float32") -> np.ndarray:
    """PyTorch's Linear/Conv default, U(±1/sqrt(fan_in)): kaiming_uniform_(a=sqrt(5)) for a
    weight, and the same bound for its bias (pass the weight's `fan_in`)."""
    fan_in = fans(shape)[0] if fan_in is None else fan_in
    return uniform(shape, rng, 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0, dtype)


def zeros(shape, rng: RngLike = None, dtype="float32") -> np.ndarray:
    """All zeros (biases, BatchNorm shifts). `rng` is accepted for a uniform signature."""
    return np.zeros(_made(shape), float_dtype(dtype))


def ones(shape, rng: RngLike = None, dtype="float32") -> np.ndarray:
    """All ones (BatchNorm scales)."""
    return np.ones(_made(shape), float_dtype(dtype))


def full(shape, value: float, rng: RngLike = None, dtype="float32") -> np.ndarray:
    """All `value` (PReLU's initial slope)."""
    return np.full(_made(shape), value, float_dtype(dtype))
