"""Counter-based random numbers (Philox4x32-10), identical on every backend.

A random op draws from a *state* parameter ``[seed, step]`` (int64). Element i of a draw uses
the Philox counter ``(i_lo, i_hi, step, stream)`` and the key ``seed``: no sequential
generator state, so the NumPy backend, native CPU code and GPU threads produce the same bits
for the same seed. Each draw gives the state the default update ``step + 1``, so every call of
a compiled training step sees fresh numbers while a given seed replays exactly.
"""

from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..ir.shapes import as_dim
from ..ir.tensor import Tensor, apply
from ..ir.types import DEFAULT_FLOAT, TensorType, as_dtype
from .registry import ZERO, OpDef, register
from .shape_ops import is_int_value

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)


def philox4x32(counter, key, rounds: int = 10):
    """Philox4x32 on uint64 arrays holding 32-bit words: counter (4 arrays), key (2 arrays)."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & _MASK for c in counter)
    k0, k1 = (np.asarray(k, dtype=np.uint64) & _MASK for k in key)
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    w0, w1 = np.uint64(PHILOX_W[0]), np.uint64(PHILOX_W[1])
    s32 = np.uint64(32)
    for _ in range(rounds):
        p0, p1 = m0 * c0, m1 * c2
        c0, c1, c2, c3 = (((p1 >> s32) ^ c1 ^ k0) & _MASK, p1 & _MASK,
                          ((p0 >> s32) ^ c3 ^ k1) & _MASK, p0 & _MASK)
        k0, k1 = (k0 + w0) & _MASK, (k1 + w1) & _MASK
    return c0, c1, c2, c3


def uniform_from_bits(bits: np.ndarray) -> np.ndarray:
    """The top 24 bits as a float in [0, 1): exact in float32 and float64 alike."""
    return (bits >> np.uint64(8)).astype(np.float64) * (1.0 / (1 << 24))


def random_uniform_reference(state, *, shape, stream, dtype):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.uint64)
    seed, step = (int(v) & 0xFFFFFFFFFFFFFFFF for v in state)
    words = philox4x32(
        (i & _MASK, i >> np.uint64(32), np.uint64(step & 0xFFFFFFFF), np.uint64(stream)),
        (np.uint64(seed & 0xFFFFFFFF), np.uint64(seed >> 32)),
    )
    return uniform_from_bits(words[0]).astype(dtype).reshape(shape)


def _random_uniform_loops(node, program):
    """Element i of the draw: Philox at counter (i, step, stream) with the state's seed."""
    from ..ir.shapes import prod
    from . import loops as L

    (i,) = L.index_symbols("i")
    n = prod(node.shape) if node.shape else 1
    value = L.PhiloxUniform(i, L.load("state", 0), L.load("state", 1), node.attrs["stream"])
    return L.LoopNest({"state": L.Buf(input=0), "out": L.Buf(output=True, shape=(n,))},
                      [(i, n)], [L.Store("out", (i,), value)])


RANDOM_UNIFORM = register(OpDef(
    "random_uniform", "random", loops=_random_uniform_loops,
    infer=lambda types, attrs, checks: TensorType(attrs["dtype"], attrs["shape"]),
    reference=random_uniform_reference,
    grad=lambda ctx: [ZERO],
    doc="Uniform [0, 1) numbers from a [seed, step] state parameter (Philox4x32-10).",
))

_global = {"seed": 0, "count": 0}


def check_seed(seed, what: str = "seed") -> int:
    """`seed` as a Python int, or a GraphError naming it: a state holds its seed as int64, so
    a seed must be an integer in that range. A float is refused rather than truncated (1.5
    would silently replay seed 1), and so is a larger int (it would not fit, or wrap)."""
    if not is_int_value(seed):
        raise GraphError(f"{what} must be an int (or None), got {type(seed).__name__} "
                         f"{seed!r}")
    if not -(2**63) <= int(seed) < 2**63:
        raise GraphError(f"{what} must lie in [-2**63, 2**63 - 1] (an int64), got {seed}")
    return int(seed)


def manual_seed(seed: int) -> None:
    """Seed the sequence from which new random states (dropout, init) take their seeds."""
    if not is_int_value(seed):  # any int: it only enters splitmix64, modulo 2**64
        raise GraphError(f"manual_seed: seed must be an int, got {type(seed).__name__} "
                         f"{seed!r}")
    _global["seed"] = int(seed)
    _global["count"] = 0


def next_seed() -> int:
    """A fresh 63-bit seed derived from the global seed (splitmix64)."""
    _global["count"] += 1
    z = (_global["seed"] * 0x9E3779B97F4A7C15 + _global["count"] * 0xBF58476D1CE4E5B9)
    z &= 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) & 0x7FFFFFFFFFFFFFFF


def state_for(seed, state, name: str) -> Tensor:
    """The random state a draw reads: `state` (from ``gc.rng_state``), or a new one seeded by
    `seed` (an int64; None: the next of the ``gc.manual_seed`` sequence). Both given is an
    error, so a seed is never silently ignored (gc.random, dropout and augmentation share
    these rules)."""
    if state is not None:
        if not (isinstance(state, Tensor) and state.op == "parameter" and
                state.dtype == np.int64 and tuple(state.shape) == (2,)):
            raise GraphError("state must be a random state from gc.rng_state() (an int64 "
                             "[seed, step] parameter)")
        if seed is not None:
            raise GraphError("give a seed or a state, not both")
        return state
    return rng_state(seed, name=name)


def rng_state(seed: int | None = None, name: str = "rng") -> Tensor:
    """A new random-state parameter [seed, step=0]."""
    from .sources import parameter

    seed = next_seed() if seed is None else check_seed(seed)
    return parameter(name, np.array([seed, 0], dtype=np.int64))


def random_uniform(state: Tensor, shape, dtype=DEFAULT_FLOAT) -> Tensor:
    """Uniform [0, 1) numbers of `shape` drawn from `state`; advances the state by default.

    Every draw from the same state inside one graph gets its own stream, so two dropout
    layers sharing a state still get independent masks.
    """
    from .elementwise import add

    storage = state.node.attrs["storage"]
    stream = storage.next_stream
    storage.next_stream += 1
    out = apply(RANDOM_UNIFORM, [state], shape=tuple(as_dim(d) for d in shape), stream=stream,
                dtype=as_dtype(dtype))
    step = np.array([0, 1], dtype=np.int64)
    # registered where the draw lives: that graph's compiled functions look for it there
    out.graph.add_default_update(out.node, state.node, add(state, step).node)
    return out
