"""Random graphs for property tests: hypothesis draws a recipe, `build` turns it into tensors.

The palette mixes ordinary ops with the patterns the rewrite rules look for (x*1, --x, x*x,
transpose pairs, reshape chains, log(softmax), exp(x)-1, broadcasts...), so random graphs
exercise the rules, fusion and memory planning, not just the backend.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

import graphc as gc

SHAPE = (3, 4)


def _sum_broadcast(x):
    """Sum over rows, then broadcast back: the shape of many gradient graphs."""
    return gc.ops.broadcast_to(gc.sum(x, axis=0, keepdims=True), SHAPE) * 0.5


UNARY = {
    "tanh": gc.tanh, "sigmoid": gc.sigmoid, "relu": gc.relu, "neg": lambda x: -x,
    "square": gc.square, "abs": gc.abs, "softplus": gc.softplus,
    "exp_tanh": lambda x: gc.exp(gc.tanh(x)), "log1p_sq": lambda x: gc.log(1 + x * x),
    "mul_one": lambda x: x * 1.0, "add_zero": lambda x: x + (-0.0), "double_neg": lambda x: -(-x),
    "self_mul": lambda x: x * x, "transpose_pair": lambda x: x.T.T,
    "reshape_chain": lambda x: x.reshape(12).reshape(2, 6).reshape(SHAPE),
    "log_softmax": lambda x: gc.log(gc.softmax(x, axis=-1)), "expm1": lambda x: gc.exp(x) - 1,
    "log_sigmoid": lambda x: gc.log(gc.sigmoid(x)), "sum_keep": _sum_broadcast,
    "mean_rows": lambda x: x - gc.mean(x, axis=1, keepdims=True),
    "max_cols": lambda x: x * gc.max(x, axis=0, keepdims=True),
    "scaled": lambda x: (x * 2.0 + 1.0) / 3.0 - 0.5,
    "clip": lambda x: gc.clip(x, -0.7, 0.8), "where_pos": lambda x: gc.where(x > 0, x, 0.3 * x),
    "elu": gc.elu, "leaky": gc.leaky_relu,
    # windows of 3 over rows of 4, padded: its gradient's ReLU mask moves onto the pooled side
    "relu_pool": lambda x: gc.ops.max_pool(gc.relu(x).reshape((1,) + SHAPE), 3, 1, 1
                                           ).reshape(SHAPE),
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1.5 + gc.tanh(b)), "maximum": gc.maximum, "minimum": gc.minimum,
    "add_neg": lambda a, b: a + (-b), "row_bias": lambda a, b: a + gc.sum(b, axis=0),
    "matmul": lambda a, b: a @ b.T @ a / 4.0, "concat_slice": lambda a, b: gc.concat(
        [a, b], axis=1)[:, 2:6],
}

recipes = st.lists(
    st.one_of(
        st.tuples(st.just("u"), st.sampled_from(sorted(UNARY)), st.integers(0, 50)),
        st.tuples(st.just("b"), st.sampled_from(sorted(BINARY)), st.integers(0, 50),
                  st.integers(0, 50)),
    ),
    min_size=1, max_size=8,
)


def build(recipe, xs):
    """Apply a recipe to the placeholders; returns the tensors it made (last ones are outputs)."""
    pool = list(xs)
    for step in recipe:
        if step[0] == "u":
            _, name, i = step
            pool.append(UNARY[name](pool[i % len(pool)]))
        else:
            _, name, i, j = step
            pool.append(BINARY[name](pool[i % len(pool)], pool[j % len(pool)]))
    return pool[len(xs):]


def inputs(seed: int, n: int = 2, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.5, 1.5, SHAPE).astype(dtype) for _ in range(n)]
