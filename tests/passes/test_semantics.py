"""Optimization never changes results: hundreds of random graphs, forward and gradient,
optimized vs unoptimized, in float64 with tight tolerances."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import graphc as gc
from tests.passes import random_graphs as R


def _compile_both(inputs, outputs):
    return (gc.compile(inputs, outputs, optimize=False), gc.compile(inputs, outputs))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=R.recipes, seed=st.integers(0, 1000))
def test_forward_results_unchanged(recipe, seed):
    with gc.Graph("random"):
        xs = [gc.placeholder(f"x{i}", R.SHAPE, "float64") for i in range(2)]
        outs = R.build(recipe, xs)[-3:]
        raw, opt = _compile_both(xs, outs)
    arrays = R.inputs(seed)
    for a, b in zip(raw(*arrays), opt(*arrays)):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-12)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=R.recipes, seed=st.integers(0, 1000))
def test_gradient_results_unchanged(recipe, seed):
    with gc.Graph("random_grad"):
        xs = [gc.placeholder(f"x{i}", R.SHAPE, "float64") for i in range(2)]
        outs = R.build(recipe, xs)
        w = np.random.default_rng(seed).uniform(0.5, 1.5, R.SHAPE)
        cost = sum(gc.sum(o * w) if o.shape == R.SHAPE else gc.sum(o) for o in outs[-2:])
        grads = gc.grad(cost, xs, allow_unused=True)
        raw, opt = _compile_both(xs, [cost] + grads)
    arrays = R.inputs(seed)
    for a, b in zip(raw(*arrays), opt(*arrays)):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipe=R.recipes, seed=st.integers(0, 1000))
def test_float32_results_unchanged(recipe, seed):
    with gc.Graph("random32"):
        xs = [gc.placeholder(f"x{i}", R.SHAPE) for i in range(2)]
        outs = R.build(recipe, xs)[-2:]
        raw, opt = _compile_both(xs, outs)
    arrays = R.inputs(seed, dtype=np.float32)
    for a, b in zip(raw(*arrays), opt(*arrays)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)


def test_training_step_unchanged_over_many_steps():
    rng = np.random.default_rng(0)
    F = gc.nn.functional
    x = gc.placeholder("x", ("N", 6), "float64")
    y = gc.placeholder("y", ("N",), "int64")
    params = [gc.parameter("W1", rng.normal(0, 0.5, (6, 8))), gc.parameter("b1", np.zeros(8)),
              gc.parameter("W2", rng.normal(0, 0.5, (8, 3))), gc.parameter("b2", np.zeros(3))]
    h = gc.tanh(F.linear(x, params[0], params[1]))
    loss = F.cross_entropy(F.linear(h, params[2], params[3]), y, label_smoothing=0.1)
    grads = gc.grad(loss, params)
    updates = {p: p - 0.3 * g for p, g in zip(params, grads)}
    X, Y = rng.normal(size=(20, 6)), rng.integers(0, 3, 20)
    start = [p.value for p in params]
    losses = {}
    for optimize in (False, True):
        for p, v in zip(params, start):
            p.value = v
        step = gc.compile([x, y], loss, updates=updates, optimize=optimize)
        losses[optimize] = [float(step(X, Y)) for _ in range(25)]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-10)
    assert losses[True][-1] < losses[True][0]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_fused_integer_powers_wrap_in_the_group_dtype_and_negative_ones_truncate(backend):
    """Fused, int32 100000 ** x ran as a Python int (int64: no wraparound before the %);
    7 * x ** -1 was printed as 7 / x on numpy and refused on llvm ("division in an integer
    expression")."""
    x = gc.placeholder("x", (4,), "int32")
    ys = [(gc.constant(np.int32(100000)) ** x) % 7, 7 * x ** -1, (x + 3) * x ** -2 + 1]
    xv = np.array([2, 3, 1, -1], np.int32)
    want = [[3, 4, 5, 0], [0, 0, 7, -7], [1, 1, 5, 3]]
    for optimize in (False, True):
        got = gc.compile([x], ys, backend=backend, optimize=optimize)(xv)
        assert [g.tolist() for g in got] == want and all(g.dtype == np.int32 for g in got)


@pytest.mark.parametrize("shape", [(), (1,)])
def test_numbers_only_subexpressions_of_a_fused_group_compute_in_its_dtype(shape):
    """With `fold` off, sin(88 / 1e-30) inside a fused float32 group ran as Python floats
    (float64) and 2**30 * 4 in an int32 group as an unbounded int (no wraparound)."""
    x, i = gc.placeholder("x", shape), gc.placeholder("i", shape, "int32")
    f = x + gc.sin(gc.constant(np.float32(88.0)) / gc.constant(np.float32(1e-30)))
    n = i + (gc.constant(np.int32(2**30)) * 4) // 3
    feed = np.zeros(shape, np.float32), np.zeros(shape, np.int32)
    for backend in ("numpy", "llvm"):
        want = gc.compile([x, i], [f, n], optimize=False, backend=backend)(*feed)
        got = gc.compile([x, i], [f, n], optimize=["fuse"], backend=backend)(*feed)
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert got[1].item() == 0 and got[0].dtype == np.float32
