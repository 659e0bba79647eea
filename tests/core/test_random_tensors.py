"""gc.random: uniform, normal and Bernoulli tensors drawn inside compiled functions.

What a user relies on: fresh numbers at every call, the same numbers from the same seed, the
same bits on every backend (uniform, Bernoulli; normal within 4 ulp), the right distribution
(Kolmogorov–Smirnov, mean, variance) on every backend, symbolic shapes, and random states
held by modules saved like any buffer.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import graphc as gc

BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True, "verify": False})]


def _run_fresh(outputs, inputs=(), feeds=(), backend="numpy", options=None):
    """Compile and call once from the states' current values, then put the states back, so
    that every backend draws from the same states."""
    fn = gc.compile(list(inputs), outputs, backend=backend, backend_options=options)
    params = fn.parameters()
    saved = [p.value.copy() for p in params]
    try:
        return fn(*feeds)
    finally:
        for p, v in zip(params, saved):
            p.value = v


def test_uniform_range_dtype_and_fresh_numbers_each_call():
    u = gc.random.uniform((1000,), low=-2.0, high=3.0, seed=7)
    f = gc.compile([], u)
    a, b = f(), f()
    assert a.dtype == np.float32 and a.shape == (1000,)
    assert a.min() >= -2.0 and a.max() < 3.0
    assert not np.array_equal(a, b)  # the state advanced
    assert stats.kstest((a - -2.0) / 5.0, "uniform").pvalue > 1e-3


def test_same_seed_same_numbers_in_separately_built_graphs():
    draws = []
    for _ in range(2):
        with gc.Graph():
            f = gc.compile([], [gc.random.normal((50,), seed=3),
                                gc.random.bernoulli((50,), 0.3, seed=4)])
            draws.append([f(), f()])
    for first, second in zip(*draws):
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a, b)


def test_manual_seed_makes_unseeded_draws_reproducible():
    values = []
    for _ in range(2):
        gc.manual_seed(123)
        with gc.Graph():
            values.append(gc.compile([], gc.random.uniform((20,)))())
    np.testing.assert_array_equal(*values)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_and_bernoulli_are_bit_identical_and_normal_within_4_ulp(dtype):
    x = gc.placeholder("x", ("N", 3), dtype)
    outs = [gc.random.uniform_like(x, -1.0, 2.0, seed=1),
            gc.random.bernoulli_like(x, 0.25, seed=2),
            gc.random.bernoulli(("N", 3), gc.constant(np.array([0.1, 0.5, 0.9]), dtype), seed=5),
            gc.random.normal_like(x, 0.0, 2.0, seed=3)]  # (a mean would cancel digits)
    feed = np.zeros((2000, 3), dtype)
    results = {be: _run_fresh(outs, [x], [feed], be, opts) for be, opts in BACKENDS}
    ref = results["numpy"]
    for be, got in results.items():
        for i in range(3):
            np.testing.assert_array_equal(got[i], ref[i], err_msg=f"{be} output {i}")
        ulp = np.spacing(np.abs(ref[3]).astype(dtype))
        assert np.all(np.abs(got[3] - ref[3]) <= 4 * ulp), be
        assert got[3].dtype == np.dtype(dtype)


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_distributions_on_every_backend(backend, options):
    n = 20000
    outs = [gc.random.normal((n,), mean=1.0, std=3.0, seed=11),
            gc.random.uniform((n,), seed=12),
            gc.random.bernoulli((n,), 0.3, seed=13)]
    z, u, b = _run_fresh(outs, backend=backend, options=options)
    assert stats.kstest((z - 1.0) / 3.0, "norm").pvalue > 1e-3
    assert abs(z.mean() - 1.0) < 5 * 3.0 / np.sqrt(n)
    assert abs(z.var() / 9.0 - 1.0) < 0.05
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert set(np.unique(b)) <= {0.0, 1.0} and abs(b.mean() - 0.3) < 5 * np.sqrt(0.21 / n)


def test_symbolic_shapes_take_their_size_at_call_time():
    x = gc.placeholder("x", ("B", 4))
    eps = gc.random.normal(("B", 2), seed=0)
    f = gc.compile([x], x.sum(axis=1, keepdims=True) + eps)
    assert f(np.ones((3, 4), np.float32)).shape == (3, 2)
    assert f(np.ones((5, 4), np.float32)).shape == (5, 2)


def test_bernoulli_probability_tensor_broadcasts_and_bad_arguments_are_clear():
    p = gc.placeholder("p", (4,), "float64")
    b = gc.random.bernoulli((3000, 4), p, seed=9)
    draw = gc.compile([p], b)(np.array([0.0, 0.2, 0.7, 1.0]))
    np.testing.assert_allclose(draw.mean(axis=0), [0.0, 0.2, 0.7, 1.0], atol=0.04)
    assert draw[:, 0].max() == 0.0 and draw[:, 3].min() == 1.0
    with pytest.raises(gc.GraphError, match="p must lie in"):
        gc.random.bernoulli((3,), 1.5)
    with pytest.raises(gc.ShapeError, match="does not broadcast"):
        gc.random.bernoulli((3,), gc.constant(np.full((2, 3), 0.5)))
    with pytest.raises(gc.GraphError, match="low <= high"):
        gc.random.uniform((3,), 2.0, 1.0)
    with pytest.raises(gc.GraphError, match="float32 or float64"):
        gc.random.normal((3,), dtype="int64")
    with pytest.raises(gc.GraphError, match="seed or a state"):
        gc.random.uniform((3,), seed=1, state=gc.rng_state(2))


def test_a_random_state_held_by_a_module_is_a_saved_buffer(tmp_path):
    class Noisy(gc.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = gc.nn.Linear(3, 3)
            self.rng = gc.rng_state(5)  # an int tensor assigned as an attribute

        def forward(self, x):
            return self.lin(x) + gc.random.normal_like(x, state=self.rng)

    m = Noisy()
    assert [name for name, _ in m.named_buffers()] == ["rng"]
    assert "rng" in m.state() and len(m.parameters()) == 2
    x = gc.placeholder("x", ("N", 3))
    f = gc.compile([x], m(x))
    first = f(np.zeros((2, 3), np.float32))
    assert m.rng.value[1] == 2  # two uniform draws per normal
    gc.save(m, tmp_path / "noisy.graphc")
    gc.manual_seed(99)
    with gc.Graph():
        again = Noisy()  # other weights, another seed
        gc.load(tmp_path / "noisy.graphc", into=again)
        np.testing.assert_array_equal(again.rng.value, m.rng.value)
        again.rng.value = np.array([5, 0])  # replay from the start
        x2 = gc.placeholder("x", ("N", 3))
        replay = gc.compile([x2], again(x2))(np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(replay, first)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_uniform_never_reaches_high_and_stays_bit_identical(dtype):
    """low + (high - low) * u rounds up to `high` in float32 for [1000, 1001) (and in float64
    for a wide enough low): such values become the largest number below high."""
    low, high = (1000.0, 1001.0) if dtype == "float32" else (2.0**40, 2.0**40 + 2.0**-10)
    outs = [gc.random.uniform((200_000,), low, high, dtype, seed=0),
            gc.random.uniform((4,), 5.0, 5.0, dtype, seed=1)]  # low == high: the constant
    results = {be: _run_fresh(outs, backend=be, options=opts) for be, opts in BACKENDS}
    below = np.nextafter(np.dtype(dtype).type(high), -np.inf)
    u, const = results["numpy"]
    assert u.dtype == np.dtype(dtype) and u.min() >= low and u.max() == below
    np.testing.assert_array_equal(const, np.full(4, 5.0, dtype))
    for be, got in results.items():
        for a, b in zip(got, results["numpy"]):
            np.testing.assert_array_equal(a, b, err_msg=be)


def test_bad_seeds_and_arguments_are_graph_errors():
    for seed in (1.5, "a", 2**63, -(2**63) - 1, True):
        with pytest.raises(gc.GraphError, match="seed must"):
            gc.random.uniform((2,), seed=seed)
    with pytest.raises(gc.GraphError, match="seed must"):
        gc.rng_state(2.0)
    with pytest.raises(gc.GraphError, match="seed must"):
        gc.manual_seed(0.5)
    for seed in (2**63 - 1, -(2**63), np.int64(7)):  # the whole int64 range is fine
        assert gc.random.uniform((2,), seed=seed).shape == (2,)
    with pytest.raises(gc.GraphError, match="low must be a number.*got a tensor"):
        gc.random.uniform((2,), low=gc.constant(1.0))
    with pytest.raises(gc.GraphError, match="high must be a number"):
        gc.random.uniform((2,), high="2")
    with pytest.raises(gc.GraphError, match="std must be a number"):
        gc.random.normal((2,), std=gc.constant(1.0))
    with pytest.raises(gc.GraphError, match="p must be a number"):
        gc.random.bernoulli((2,), "0.5")
    assert gc.random.uniform((2,), np.float32(1), np.array(2.0)).shape == (2,)
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.GraphError, match="seed or a state"):  # dropout uses the same rule
        gc.nn.functional.dropout(x, 0.5, True, seed=1, state=gc.rng_state(2))


def test_a_uniform_range_whose_width_overflows_is_refused():
    """u * (high - low) + low with an infinite width gave one constant for every draw."""
    with pytest.raises(gc.GraphError, match="high - low of .* overflows float32"):
        gc.random.uniform((4,), low=-3e38, high=3e38, dtype="float32", seed=1)
    with pytest.raises(gc.GraphError, match="overflows float64"):
        gc.random.uniform((4,), low=-1.7e308, high=1.7e308, dtype="float64", seed=1)
    u = gc.compile([], gc.random.uniform((1000,), low=-1e38, high=1e38, seed=1))()
    assert np.unique(u).size > 900 and u.min() >= -1e38 and u.max() < 1e38
