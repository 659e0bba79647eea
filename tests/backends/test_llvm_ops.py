"""The LLVM backend against the NumPy backend on every op case, and on every gradient.

Tolerances: float64 results agree to 1e-9 relative; float32 to 2e-5 relative (exp/log/tanh
come from graphc's own vectorizable kernels, accurate to ~2 ulp, and reductions may add in a
different order than NumPy's pairwise summation).
"""

import numpy as np
import pytest

import graphc as gc
from graphc.ops import REGISTRY
from tests.helpers import build_case, case_arrays, run_case
from tests.op_cases import CASES as ALL_CASES

CASES = ALL_CASES  # loops included: the llvm backend runs them natively (backends/llvm/loops.py)


TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_op_matches_numpy(case, dtype):
    want, _, _ = run_case(case, "numpy", dtype)
    got, _, fn = run_case(case, "llvm", dtype)
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, **TOL[dtype])
    else:
        np.testing.assert_array_equal(got, want)


GRAD_CASES = [c for c in CASES if c.grad]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.name for c in GRAD_CASES])
def test_gradients_match_numpy(case):
    arrays = case_arrays(case, np.float64, seed=4)
    results = {}
    for backend in ("numpy", "llvm"):
        graph, phs, out = build_case(case, arrays)
        with graph:
            weights = np.random.default_rng(1).uniform(0.5, 1.5, np.shape(
                gc.compile(phs, out)(*arrays)))
            cost = gc.sum(out * gc.constant(weights))
            grads = gc.grad(cost, phs)
            frozen = {gc.Tensor(n, graph): gc.Tensor(n, graph) for n in graph.parameters}
            fn = gc.compile(phs, [cost] + grads, updates=frozen, backend=backend)
        results[backend] = fn(*arrays)
    for a, b in zip(results["llvm"], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_every_op_has_an_llvm_lowering():
    from graphc.backends.llvm import LOWERINGS

    missing = sorted(set(REGISTRY) - set(LOWERINGS) - {"placeholder", "parameter", "constant"})
    assert not missing, f"ops without an LLVM lowering: {missing}"


@pytest.mark.parametrize("dtype", ["int64", "int32"])
@pytest.mark.parametrize("backend,options", [("llvm", None), ("cuda", {"emulate": True})],
                         ids=["llvm", "cuda"])
def test_integer_maximum_and_minimum_keep_ties(dtype, backend, options):
    """maximum's tie value is (a + b)/2: on integers it must be a, as NumPy computes it."""
    a, b = gc.placeholder("a", (5,), dtype), gc.placeholder("b", (5,), dtype)
    outs = [gc.maximum(a, b), gc.minimum(a, b), gc.minimum(a, 2), gc.clip(a, -3, 1)]
    x, y = np.array([1, 2, 0, -3, 7]), np.array([1, 1, 0, -3, 9])
    want = gc.compile([a, b], outs)(x, y)
    got = gc.compile([a, b], outs, backend=backend, backend_options=options)(x, y)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend,options", [("llvm", None), ("cuda", {"emulate": True})],
                         ids=["llvm", "cuda"])
def test_sign_of_a_negative_zero_is_a_positive_zero(dtype, backend, options):
    """np.sign(-0.0) is +0.0 (and NaN stays NaN): the kernels passed -0.0 through."""
    x = gc.placeholder("x", (5,), dtype)
    xs = np.array([-0.0, 0.0, np.nan, -2.5, np.inf], dtype)
    got = gc.compile([x], gc.sign(x), backend=backend, backend_options=options)(xs)
    want = np.sign(xs)
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True)],
                         ids=["nn", "tn", "nt"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_matmul_over_a_symbolic_batch_takes_every_path(dtype, ta, tb):
    """One compiled product, batch sizes that take each path the sizes choose at run time:
    empty, the plain loop (tiny), register tiles (every row count mod 6, so every split into
    six- and four-row tiles, exact and with overlapping edge tiles), and BLAS (large); each
    against NumPy. In the tiles each element is one sum over k in order: a row's bits do not
    depend on the batch around it, nor on the kind of tile that computed it. A transposed B
    (n x k, 40 x 30: neither a whole number of vector blocks) is transposed into the tiles'
    layout first."""
    from graphc.backends.llvm.kernels_linalg import TILE_ROWS, TILED_GEMM

    k, n = 30, 40
    with gc.Graph():
        a = gc.placeholder("a", (k, "N") if ta else ("N", k), np.dtype(dtype).name)
        b = gc.placeholder("b", (n, k) if tb else (k, n), np.dtype(dtype).name)
        fn = gc.compile([a, b], gc.ops.matmul_t(a, b, ta=ta, tb=tb), backend="llvm")
    assert "graphc.gemm_tiles" in fn.source  # the branch to the tiles is there
    assert ("graphc.transpose" in fn.source) == tb
    rng = np.random.default_rng(7)
    b_stored = rng.uniform(-1, 1, (n, k) if tb else (k, n)).astype(dtype)
    bv = b_stored.T if tb else b_stored
    big = TILED_GEMM // (k * n) + 1
    for rows in (0, 1, *range(TILE_ROWS, 3 * TILE_ROWS + 2), 32, big):
        av = rng.uniform(-1, 1, (rows, k)).astype(dtype)
        got = fn(np.ascontiguousarray(av.T) if ta else av, b_stored)
        np.testing.assert_allclose(got, av.astype(np.float64) @ bv, **TOL[dtype])
    av = rng.uniform(-1, 1, (13, k)).astype(dtype)
    whole = fn(np.ascontiguousarray(av.T) if ta else av, b_stored)
    part = fn(np.ascontiguousarray(av[:7].T) if ta else av[:7], b_stored)
    assert part.tobytes() == whole[:7].tobytes()
    av = rng.uniform(-1, 1, (32, k)).astype(dtype)  # six-row tiles and two four-row ones
    whole = fn(np.ascontiguousarray(av.T) if ta else av, b_stored)
    for rows in (8, 10):  # four-row tiles only; one six-row tile and one four-row tile
        for some in (slice(0, rows), slice(32 - rows, 32)):
            part = fn(np.ascontiguousarray(av[some].T) if ta else av[some], b_stored)
            assert part.tobytes() == whole[some].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("sizes", [(3, 12, 24, 20), (2, 33, 17, 9), (4, 7, 65, 63)])
def test_batched_products_with_b_transposed_in_the_tiles(sizes, dtype):
    """Batched and broadcast A @ B.T whose B is transposed into the tiles' layout at each
    batch index (odd sizes: the blocks' edges one element at a time), against NumPy."""
    batch, m, n, k = sizes
    name = np.dtype(dtype).name
    with gc.Graph():
        a = gc.placeholder("a", (batch, m, k), name)
        b = gc.placeholder("b", (batch, n, k), name)
        shared = gc.placeholder("shared", (n, k), name)
        fn = gc.compile([a, b, shared], [gc.ops.matmul_t(a, b, tb=True),
                                         gc.ops.matmul_t(a, shared, tb=True)], backend="llvm")
    assert "graphc.transpose" in fn.source
    rng = np.random.default_rng(5)
    av, bv, sv = (rng.uniform(-1, 1, s).astype(dtype)
                  for s in ((batch, m, k), (batch, n, k), (n, k)))
    per_batch, broadcast = fn(av, bv, sv)
    np.testing.assert_allclose(per_batch, av.astype(np.float64) @ bv.transpose(0, 2, 1),
                               **TOL[dtype])
    np.testing.assert_allclose(broadcast, av.astype(np.float64) @ sv.T, **TOL[dtype])


@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic"])
def test_long_float32_sums_stay_accurate(symbolic):
    """A float32 sum over a long contiguous run adds blocks of terms (vectorized), and the
    blocks' sums in float64 (kernelgen.reductions.flat_reduce): a fuzz found 2^22 squares
    summed to 5.5e-5 of the exact value over a symbolic batch (7e-6 over a known one),
    beyond the documented 2e-5, with one running float32 sum a lane; NumPy's pairwise sum
    is at 1e-8. Here: a whole sum of a fused square, a mean, and a reduction over the outer
    and inner axes (the memory-order form), each within 1e-6 of the float64 sum."""
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((256, 4, 1024)).astype(np.float32)  # 2^20 elements
    with gc.Graph():
        x = gc.placeholder("x", ("N", 4, 1024) if symbolic else xs.shape)
        fn = gc.compile([x], [gc.sum(gc.square(x)), gc.mean(gc.square(x) + 1.0),
                              gc.square(x).sum(axis=(0, 2))], backend="llvm")
    total, mean, per_channel = fn(xs)
    exact = xs.astype(np.float64) ** 2
    np.testing.assert_allclose(total, exact.sum(), rtol=1e-6)
    np.testing.assert_allclose(mean, exact.mean() + 1.0, rtol=1e-6)
    np.testing.assert_allclose(per_channel, exact.sum(axis=(0, 2)), rtol=1e-6)
