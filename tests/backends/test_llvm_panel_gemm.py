"""Mid-sized float products in column panels on every core (backends/llvm/panel_gemm.py), as
a CPU with full-width AVX-512 runs them: every form of matmul (A or B transposed, both, an
SGD update folded into the product) against NumPy at sizes that reach each edge of the
tiles (rows not a multiple of six, a last panel of one vector, sums longer than a packed
block, transposed blocks with a remainder), with hostile values, on one thread and two (the
same bits), and the rule that chooses them (64-byte vectors only; symbolic sizes tested at
run time, with the BLAS on the other side)."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import pytest

import graphc as gc
import graphc.ops.loops as L
from tests.helpers import (
    NEEDS_AVX512,
    folded_and_separate_updates,
    same_bits_on_every_thread_count,
    steady_allocation,
    tanh_sgd_step,
)

pytestmark = NEEDS_AVX512

# (m, k, n): m mod 6 from 0 to 5, n of one vector, of an odd number of vectors (a last
# panel of one vector), k past one packed block (KC = 256) and under one vector
SIZES = [(6, 700, 512), (7, 600, 512), (131, 300, 80), (64, 257, 144), (200, 20, 528),
         (33, 1030, 64), (128, 784, 512)]


def _vector_bytes(monkeypatch, value: str) -> None:
    """GRAPHC_VECTOR_BYTES for the compilations that follow (read once a process, else)."""
    monkeypatch.setenv("GRAPHC_VECTOR_BYTES", value)
    L.direct_vector_bytes.cache_clear()


@pytest.fixture
def wide(monkeypatch):
    monkeypatch.setenv("GRAPHC_COMPILE_MEMO", "0")
    _vector_bytes(monkeypatch, "64")
    yield
    L.direct_vector_bytes.cache_clear()  # (the environment is put back after this)


def _product(m, k, n, ta, tb, dtype, rows=None):
    a = gc.placeholder("a", (k, rows or m) if ta else (rows or m, k), dtype)
    b = gc.placeholder("b", (n, k) if tb else (k, n), dtype)
    c = gc.matmul(a.T if ta else a, b.T if tb else b)
    return a, b, c


def _operands(rng, m, k, n, ta, tb, dtype):
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return A, B


def _tolerance(dtype, k):
    return (1e-5 if dtype == "float32" else 1e-12) * np.sqrt(k)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("m,k,n", SIZES)
def test_every_form_of_the_panels_matches_numpy(m, k, n, ta, tb, dtype, wide, rng):
    if dtype == "float64" and m * k * 8 > 512 * 1024:
        pytest.skip("op(A) past the panels' 512 KiB: the BLAS's")
    a, b, c = _product(m, k, n, ta, tb, dtype)
    fn = gc.compile([a, b], [c], backend="llvm", backend_options={"cache": False})
    assert "graphc.gemm_panels" in fn.source
    A, B = _operands(rng, m, k, n, ta, tb, dtype)
    want = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    (got,) = fn(A, B)
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, rtol=0, atol=_tolerance(dtype, k) * np.abs(want).max())


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)])
def test_the_panels_give_the_same_bits_on_any_thread_count_and_keep_nan_and_inf(ta, tb, wide,
                                                                               rng):
    m, k, n = 131, 600, 528  # 17 panels (the last of one vector), a region's worth on 2
    a, b, c = _product(m, k, n, ta, tb, "float32")
    fn = gc.compile([a, b], [c], backend="llvm", backend_options={"cache": False})
    A, B = _operands(rng, m, k, n, ta, tb, "float32")
    A[rng.random(A.shape) < 0.0005] = np.nan
    A[rng.random(A.shape) < 0.0005] = np.inf
    B[rng.random(B.shape) < 0.0005] = -np.inf
    B[rng.random(B.shape) < 0.01] = 0.0  # inf * 0
    (got,) = same_bits_on_every_thread_count(lambda operands: fn(*operands), (A, B), (2, 3))
    with np.errstate(all="ignore"):
        want = (A.T if ta else A).astype(np.float64) @ (B.T if tb else B).astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isposinf(got), np.isposinf(want))
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    assert finite.mean() > 0.05
    np.testing.assert_allclose(got[finite], want[finite], rtol=0,
                               atol=_tolerance("float32", k) * np.abs(want[finite]).max())


def test_a_batch_known_at_run_time_takes_the_panels_where_the_sizes_allow(wide, rng):
    """The rule is tested at run time: 128 rows take the panels, 5 rows (under one tile),
    4 and 1 rows (too little work) the usual products, and an empty batch none; all match
    NumPy."""
    k, n = 784, 512
    a, b, c = _product(None, k, n, False, False, "float32", rows="N")
    fn = gc.compile([a, b], [c], backend="llvm", backend_options={"cache": False})
    assert "graphc.gemm_panels" in fn.source
    B = rng.standard_normal((k, n)).astype(np.float32)
    for rows in (128, 5, 4, 1, 0):
        A = rng.standard_normal((rows, k)).astype(np.float32)
        np.testing.assert_allclose(fn(A, B)[0], A.astype(np.float64) @ B, rtol=0,
                                   atol=_tolerance("float32", k) * 30)


def test_the_panels_need_64_byte_vectors_and_enough_work(monkeypatch, rng):
    monkeypatch.setenv("GRAPHC_COMPILE_MEMO", "0")
    for vector_bytes, (m, k, n), taken in (("32", (128, 784, 512), False),
                                           ("64", (128, 784, 512), True),
                                           ("64", (16, 64, 64), False),  # under MIN_MACS
                                           ("64", (128, 784, 520), False),  # n: not vectors
                                           ("64", (1024, 1024, 512), False)):  # A: 4 MiB
        _vector_bytes(monkeypatch, vector_bytes)
        a, b, c = _product(m, k, n, False, False, "float32")
        fn = gc.compile([a, b], [c], backend="llvm", backend_options={"cache": False})
        assert ("graphc.gemm_panels" in fn.source) == taken, (vector_bytes, m, k, n)
    L.direct_vector_bytes.cache_clear()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_an_sgd_update_folded_into_the_panels_rounds_as_the_separate_update(dtype, wide,
                                                                            monkeypatch):
    """W - lr * (x.T @ g): the panels add alpha times each tile's sums into W as they store
    them, as the separate update rounds them (a product, then a sum); also on hostile
    inputs; and NumPy's values within rounding."""
    from graphc.backends.llvm import kernels_linalg

    x, W, loss, updates, xs, hostile = tanh_sgd_step(
        512, 128, dtype, np.random.default_rng(5), scale=0.05, batch=64,
        hostile_values=[0.0, -0.0, np.inf, -np.inf, np.nan], fraction=0.01)
    @contextmanager
    def unfold():  # the panels' product, then the update's own kernel
        with monkeypatch.context() as patch:
            patch.setattr(kernels_linalg, "scaled_update_sized", lambda *args: False)
            yield

    def panels_fold(fn):
        assert "graphc.gemm_panels" in fn.source
        return any(f"gemm_panels.{t}.tn.update" in fn.source for t in ("float", "double"))

    values = folded_and_separate_updates(x, W, loss, updates, xs, hostile, unfold, panels_fold)
    assert values["folded"].tobytes() == values["separate"].tobytes()
    # (float32: three steps of 512-term products summed in another order than the BLAS's,
    # through tanh's derivative; differences up to 9e-6 on weights up to 0.5)
    np.testing.assert_allclose(values["folded"], values["numpy"],
                               rtol=1e-5 if dtype == "float32" else 1e-12,
                               atol=3e-5 if dtype == "float32" else 1e-12)
    assert values["folded.hostile"].tobytes() == values["separate.hostile"].tobytes()
    assert np.array_equal(np.isnan(values["folded.hostile"]), np.isnan(values["numpy.hostile"]))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_an_mlp_trains_in_the_panels_as_on_numpy(optimizer, wide):
    """A 784-256-256-10 MLP's training step, whose products take the panels in every form
    (x @ W, its weight gradients x.T @ g, g @ W.T), with plain SGD and with Adam:
    the losses and weights of five steps are NumPy's, within float32's rounding."""
    rng = np.random.default_rng(3)
    sizes = [784, 256, 256, 10]
    start = [((rng.normal(size=(a, b)) / np.sqrt(a)).astype(np.float32),
              np.zeros(b, np.float32)) for a, b in zip(sizes, sizes[1:])]
    xs = rng.normal(size=(5, 64, 784)).astype(np.float32)
    ys = rng.integers(0, 10, size=(5, 64))
    runs = {}
    for backend in ("numpy", "llvm"):
        x = gc.placeholder("x", ("N", 784), "float32")
        y = gc.placeholder("y", ("N",), "int64")
        params = [(gc.parameter(f"W{i}", w.copy()), gc.parameter(f"b{i}", b.copy()))
                  for i, (w, b) in enumerate(start)]
        h = x
        for i, (W, b) in enumerate(params):
            h = h @ W + b
            if i < len(params) - 1:
                h = gc.relu(h)
        loss = gc.nn.functional.cross_entropy(h, y)
        flat = [p for pair in params for p in pair]
        opt = (gc.optim.SGD(flat, lr=0.1) if optimizer == "sgd"
               else gc.optim.Adam(flat, lr=1e-3))
        fn = gc.compile([x, y], loss, updates=opt.updates(loss), backend=backend)
        if backend == "llvm":
            for form in ("nn", "tn", "nt"):  # x @ W, x.T @ g, g @ W.T
                assert f"graphc.gemm_panels.float.{form}" in fn.source
        losses = [float(fn(a, b)) for a, b in zip(xs, ys)]
        runs[backend] = losses, [p.value for p in flat]
    np.testing.assert_allclose(runs["llvm"][0], runs["numpy"][0], rtol=1e-5)
    for got, want in zip(runs["llvm"][1], runs["numpy"][1]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_blas_s_threads_take_the_product_where_regions_are_kept_on_one_thread():
    """Where libgomp's workers would spin (the user's OMP_WAIT_POLICY=ACTIVE, or PyTorch
    imported first) the regions stay on one thread, but the BLAS keeps the user's count:
    there a product goes to the BLAS's threads rather than to one thread's panels. With
    regions on the same count as the BLAS, the panels take it and the BLAS is never called.
    (tests/backends/test_llvm_parallel.py's spy of the BLAS's per-thread count, in a
    subprocess with 64-byte vectors.)"""
    import os
    import subprocess
    import sys

    from tests.backends.test_llvm_parallel import BLAS_SPY

    def spied(mode, **env):
        environ = {k: v for k, v in os.environ.items()
                   if k not in ("GRAPHC_NUM_THREADS", "GOMP_SPINCOUNT")}
        environ.update(GRAPHC_VECTOR_BYTES="64", **env)
        return subprocess.run([sys.executable, "-c", BLAS_SPY, mode], env=environ, text=True,
                              capture_output=True, timeout=300, check=True).stdout.split("\n")

    guarded = spied("guard", OMP_WAIT_POLICY="ACTIVE", GRAPHC_NUM_THREADS="3")
    if guarded[0] == "none":
        pytest.skip("this BLAS has no per-thread thread count")
    assert guarded[0] == "None 1 1 3 4", guarded  # regions on 1; the BLAS asked for 3
    for line in spied("set")[:4]:  # set_threads(1, 3, 4, 8): the panels', no BLAS call
        assert len(line.split()) == 2, line


def test_graphc_info_says_who_computes_the_products(monkeypatch):
    from graphc.sysinfo import _vector_line

    for value, words in (("64", "graphc's own tiles"), ("32", "in the BLAS"),
                         ("48", "must be 32 or")):
        _vector_bytes(monkeypatch, value)
        assert words in _vector_line(), value
    L.direct_vector_bytes.cache_clear()


def test_a_step_in_the_panels_allocates_nothing_per_call(wide):
    """mlp_784's training step, its five large products in panels (each thread's packed
    panel on its own stack): later calls allocate only the returned loss. Counted, not
    timed (tracemalloc, as tests/backends/test_llvm_training.py does for every model)."""
    from bench.workloads import BENCHMARKS

    build, batch = BENCHMARKS["mlp_784"]
    ins, loss, ups, feed = build()
    fn = gc.compile(ins, loss, updates=ups, backend="llvm")
    assert "graphc.gemm_panels.float.tn.update" in fn.source
    rng = np.random.default_rng(0)
    steady, new_size = steady_allocation(fn, feed(batch, rng), feed(batch // 2, rng))
    assert steady < 4096, f"{steady} bytes at peak over 5 steps"
    assert new_size > 4 * steady, f"the count is blind ({new_size} for a new size)"
