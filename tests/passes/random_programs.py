"""Random programs for differential tests: each seed builds one small graph from a wide
palette — elementwise math, broadcasting, comparisons, where/clip/maximum/minimum, NaN guards,
reductions on random axes, the softmax family, one_hot, reshapes, transposes, matmuls, casts,
floor division — and the patterns the rewrite rules look for (log(softmax), log(1 + x),
exp(x) - 1, x * 1, -(-x), ...). `describe` gives the recipe as text for failure reports.

Inputs come in two kinds: "moderate" (uniform in ±1.5) and "hostile": exact zeros of both
signs, ±inf, NaN, values whose squares or exponentials overflow, mixed with moderate ones.
Huge values are kept small enough that a sum of a dozen of them does not overflow, so where
NaN and inf appear does not depend on the order a backend sums in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import graphc as gc

SHAPE = (3, 4)
UNARY = {
    "exp": gc.exp, "log": gc.log, "sqrt": gc.sqrt, "abs": gc.abs, "sign": gc.sign,
    "square": gc.square, "tanh": gc.tanh, "sigmoid": gc.sigmoid, "relu": gc.relu,
    "leaky_relu": gc.leaky_relu, "elu": gc.elu, "softplus": gc.softplus, "neg": lambda x: -x,
    "log1p": gc.log1p, "expm1": gc.expm1,
    # the course's math (its kernels on hostile values: huge sin arguments, erf's tails)
    "sin": gc.sin, "cos": gc.cos, "tan": gc.tan, "arctan": gc.arctan, "erf": gc.erf,
    "log2": gc.log2, "log10": gc.log10, "exp2": gc.exp2, "rsqrt": gc.rsqrt,
    "reciprocal": gc.reciprocal, "floor": gc.floor, "ceil": gc.ceil, "round": gc.round,
    "softsign": gc.softsign, "hard_sigmoid": gc.hard_sigmoid, "silu": gc.silu, "gelu": gc.gelu,
    "gelu_tanh": lambda x: gc.gelu(x, approximate="tanh"),
    # patterns of the rewrite rules
    "log_one_plus": lambda x: gc.log(1.0 + x), "exp_minus_one": lambda x: gc.exp(x) - 1.0,
    "log_exp": lambda x: gc.log(gc.exp(x)), "log_sigmoid": lambda x: gc.log(gc.sigmoid(x)),
    "log_one_minus_sigmoid": lambda x: gc.log(1.0 - gc.sigmoid(x)),
    "times_one": lambda x: x * 1.0, "plus_zero": lambda x: x + 0.0, "double_neg": lambda x: -(-x),
    "self_product": lambda x: x * x, "self_difference": lambda x: x - x,
    "times_zero": lambda x: x * 0.0, "self_ratio": lambda x: x / x,
    "sqrt_squared": lambda x: gc.square(gc.sqrt(x)), "exp_of_log": lambda x: gc.exp(gc.log(x)),
    "nan_guard": lambda x: gc.where(x == x, x, 0.5), "isnan_guard": lambda x: gc.where(
        gc.isnan(x), 0.25, x), "finite_guard": lambda x: gc.where(gc.isfinite(x), x, -1.0),
    "abs_neg": lambda x: gc.abs(-x), "square_abs": lambda x: gc.square(gc.abs(x)),
    "halve": lambda x: x / 2.0, "pow_half": lambda x: x ** 0.5, "pow_three": lambda x: x ** 3.0,
    "clip_const": lambda x: gc.clip(x, -0.7, 0.8), "clip_inverted": lambda x: gc.clip(x, 0.5,
                                                                                        -0.5),
    "where_pos": lambda x: gc.where(x > 0, x, 0.3 * x), "float32_roundtrip": lambda x: gc.cast(
        gc.cast(x, "float32"), x.dtype),
    "int_cast": lambda x: gc.cast(gc.cast(gc.clip(x, -1e6, 1e6), "int64"), x.dtype),
    "floor_div": lambda x: x // 0.75, "mod": lambda x: x % 0.75,
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "maximum": gc.maximum, "minimum": gc.minimum,
    "pow": lambda a, b: gc.abs(a) ** b, "floor_divide": lambda a, b: a // b,
    "remainder": lambda a, b: a % b, "clip_between": lambda a, b: gc.clip(a, gc.minimum(a, b),
                                                                          b),
    "where_less": lambda a, b: gc.where(a < b, a * 2.0 + b, a - b * 3.0),
    "where_minimum": lambda a, b: gc.where(gc.minimum(a, b) > 0.1, a, b),
    "compare_cast": lambda a, b: gc.cast(a >= b, a.dtype) + gc.cast(gc.equal(a, b), a.dtype),
    "add_neg": lambda a, b: a + (-b), "neg_times_neg": lambda a, b: (-a) * (-b),
}


# Floor division and modulo jump at multiples of the divisor: a computed dividend that equals
# its divisor up to rounding (log(exp(x)) % x) is ill-conditioned, and backends may round it
# to either side. Their binary forms take the inputs themselves.
DISCONTINUOUS = {"floor_divide", "remainder"}


def _axis(rng, x):
    return int(rng.integers(0, x.ndim)) if x.ndim else None


REDUCE = {
    "sum": lambda rng, x: gc.sum(x, _axis(rng, x), keepdims=bool(rng.integers(2))),
    "mean": lambda rng, x: gc.mean(x, _axis(rng, x), keepdims=bool(rng.integers(2))),
    "max": lambda rng, x: gc.max(x, _axis(rng, x), keepdims=bool(rng.integers(2))),
    "min": lambda rng, x: gc.min(x, _axis(rng, x), keepdims=bool(rng.integers(2))),
    "sum_all": lambda rng, x: gc.sum(x),
    "logsumexp": lambda rng, x: gc.logsumexp(x, _axis(rng, x), keepdims=True),
    "softmax": lambda rng, x: gc.softmax(x, _axis(rng, x) or 0),
    "log_softmax": lambda rng, x: gc.log_softmax(x, _axis(rng, x) or 0),
    "log_of_softmax": lambda rng, x: gc.log(gc.softmax(x, _axis(rng, x) or 0)),
    "picked_log_softmax": lambda rng, x: _picked(rng, x),
    "one_hot_argmax": lambda rng, x: _one_hot_argmax(rng, x),
}


def _picked(rng, x):
    """log(sum(one_hot * softmax)) along a random axis — the picked-softmax rule's pattern, on
    the right axis or not."""
    if x.ndim != 2:
        return gc.log(gc.sum(gc.softmax(x, 0) * x, 0)) if x.ndim else x
    axis = int(rng.integers(0, 2))
    labels = gc.constant(rng.integers(0, x.shape[1], x.shape[0]))
    hot = gc.one_hot(labels, x.shape[1], dtype=x.dtype)
    return gc.log(gc.sum(hot * gc.softmax(x, axis), axis))


def _one_hot_argmax(rng, x):
    if x.ndim != 2:
        return x
    hot = gc.one_hot(gc.argmax(x, 1), x.shape[1], dtype=x.dtype)
    return gc.sum(hot * x, 1, keepdims=True)


SHAPING = {
    "transpose": lambda rng, x: x.T if x.ndim == 2 else x,
    "reshape": lambda rng, x: x.reshape(-1).reshape(x.shape) * 1.5 if x.ndim else x,
    "flatten": lambda rng, x: x.reshape(-1),
    "matmul": lambda rng, x: x @ x.T if x.ndim == 2 else x * x,
    "concat_slice": lambda rng, x: gc.concat([x, -x], axis=0)[1:1 + x.shape[0]] if x.ndim else x,
    "broadcast_row": lambda rng, x: x + gc.sum(x, 0) if x.ndim == 2 else x,
}


def _class_axis_one_hot(rng, x, axis: int):
    """A one-hot tensor shaped like x with its classes along `axis` (one_hot puts them last;
    a transpose moves them)."""
    depth = x.shape[axis]
    rest = [d for a, d in enumerate(x.shape) if a != axis]
    labels = gc.constant(rng.integers(0, depth, rest))
    hot = gc.one_hot(labels, depth, dtype=x.dtype)
    order = list(range(x.ndim - 1))
    order.insert(axis, x.ndim - 1)
    return gc.transpose(hot, tuple(order)) if axis != x.ndim - 1 else hot


def _picked_on_axes(rng, x):
    """log(sum(one_hot * softmax)) with the one-hot axis, the softmax axis and the summed axis
    drawn independently: the rewrite applies only when all three agree."""
    if x.ndim == 0:
        return x
    hot_axis, soft_axis, sum_axis = (int(rng.integers(x.ndim)) for _ in range(3))
    hot = _class_axis_one_hot(rng, x, hot_axis)
    return gc.log(gc.sum(hot * gc.softmax(x, soft_axis), sum_axis, keepdims=True))


STABILITY = {
    "log_of_softmax": lambda rng, x: gc.log(gc.softmax(x, _axis(rng, x) or 0)),
    "log_softmax": lambda rng, x: gc.log_softmax(x, _axis(rng, x) or 0),
    "picked": _picked_on_axes,
    "picked_same_axes": lambda rng, x: _picked_same_axes(rng, x),
    "exp": lambda rng, x: gc.exp(x * 0.5),
    "log_of_exp_sum": lambda rng, x: gc.log(gc.sum(gc.exp(x), _axis(rng, x), keepdims=True)),
    "sum_back": lambda rng, x: x - gc.sum(x, _axis(rng, x), keepdims=True) * 0.25,
    "where": lambda rng, x: gc.where(x > 0.2, x, gc.exp(x) - 1.0),
    "one_hot_times": lambda rng, x: x * _class_axis_one_hot(rng, x, _axis(rng, x) or 0)
    if x.ndim else x,
    "log_one_plus_exp": lambda rng, x: gc.log(1.0 + gc.exp(x)),
}


def _picked_same_axes(rng, x):
    if x.ndim == 0:
        return x
    axis = int(rng.integers(x.ndim))
    hot = _class_axis_one_hot(rng, x, axis)
    return gc.log(gc.sum(hot * gc.softmax(x, axis), axis, keepdims=True))


@dataclass
class Program:
    seed: int
    dtype: str
    inputs: list
    outputs: list
    steps: list[str] = field(default_factory=list)

    def describe(self) -> str:
        return f"seed {self.seed} ({self.dtype}): " + "; ".join(self.steps)


def build(seed: int, dtype: str | None = None, n_steps: int | None = None,
          palettes=("unary", "binary", "reduce", "shaping"), shape=SHAPE) -> Program:
    """The random program of `seed` (inside the caller's graph)."""
    rng = np.random.default_rng(seed)
    dtype = dtype or ("float64" if rng.integers(3) else "float32")
    xs = [gc.placeholder(f"x{i}", shape, dtype) for i in range(2)]
    pool = list(xs) + [gc.placeholder("row", (shape[-1],), dtype)]
    program = Program(seed, dtype, pool[:], [])
    tables = {"unary": UNARY, "binary": BINARY, "reduce": REDUCE, "shaping": SHAPING,
              "stability": STABILITY}
    for _ in range(n_steps or int(rng.integers(3, 9))):
        kind = palettes[int(rng.integers(len(palettes)))]
        table = tables[kind]
        name = sorted(table)[int(rng.integers(len(table)))]
        x = pool[int(rng.integers(len(pool)))]
        if kind == "unary":
            out = table[name](x)
            program.steps.append(f"{name}({x.name})")
        elif kind == "binary":
            if name in DISCONTINUOUS:  # computed operands could sit on a jump (a % a')
                x = xs[int(rng.integers(len(xs)))]
            partners = [t for t in (xs if name in DISCONTINUOUS else pool)
                        if _broadcasts(t.shape, x.shape)]
            y = partners[int(rng.integers(len(partners)))]
            out = table[name](x, y)
            program.steps.append(f"{name}({x.name}, {y.name})")
        else:
            out = table[name](rng, x)
            program.steps.append(f"{name}({x.name})")
        if out.dtype != np.dtype(dtype):
            out = gc.cast(out, dtype)
        pool.append(out)
    program.outputs = pool[-2:] if len(pool) > len(xs) + 2 else pool[-1:]
    return program


def _broadcasts(a, b) -> bool:
    try:
        np.broadcast_shapes(a, b)
        return True
    except ValueError:
        return False


def inputs(seed: int, program: Program, hostile: bool) -> list[np.ndarray]:
    rng = np.random.default_rng(10_000 + seed)
    dtype = np.dtype(program.dtype)
    huge = 1e300 if dtype == np.float64 else 1e36
    out = []
    for ph in program.inputs:
        shape = tuple(ph.shape)
        values = rng.uniform(-1.5, 1.5, shape)
        if hostile:
            specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, huge, -huge, 1e-30, 700.0,
                                 -700.0])
            mask = rng.random(shape) < 0.45
            values = np.where(mask, rng.choice(specials, shape), values)
        out.append(values.astype(dtype))
    return out
