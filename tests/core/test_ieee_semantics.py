"""The graph you declare is the math you get: the reproductions of issue 11 (each a member
of a class the differential tests cover at random), on every backend, optimized or not."""

import threading

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional
BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True})]
IDS = ["numpy", "llvm", "cuda-emulated"]


def _everywhere(inputs, outputs, arrays):
    """Results of every backend, optimized and not: [(label, results)]."""
    out = []
    for backend, options in BACKENDS:
        for optimize in (False, True):
            fn = gc.compile(inputs, outputs, backend=backend, optimize=optimize,
                            backend_options=options)
            out.append((f"{backend} optimize={optimize}", fn(*arrays)))
    return out


def test_picked_softmax_rewrite_checks_its_axis():
    """log(sum(one_hot * softmax(z, 0), 0)): the one-hot axis is 1, so nothing is picked and
    the rewrite must not fire (it gave -5.537 instead of -3.133, and a gradient twice the
    finite difference)."""
    z = gc.placeholder("z", (4, 3), "float64")
    y = gc.placeholder("y", (4,), "int64")
    cost = gc.sum(gc.log(gc.sum(gc.one_hot(y, 3, dtype="float64") * gc.softmax(z, 0), 0)))
    zz = np.random.default_rng(0).normal(size=(4, 3))
    yy = np.array([0, 1, 2, 0])
    sm = np.exp(zz - zz.max(0)) / np.exp(zz - zz.max(0)).sum(0)
    want = np.log((np.eye(3)[yy] * sm).sum(0)).sum()
    for label, (value,) in _everywhere([z, y], [cost], [zz, yy]):
        np.testing.assert_allclose(value, want, rtol=1e-12, err_msg=label)
    (g,) = gc.grad(cost, [z])
    grad = gc.compile([z, y], g)(zz, yy)
    eps, numeric = 1e-6, np.zeros_like(zz)
    f = gc.compile([z, y], cost, optimize=False)
    for idx in np.ndindex(zz.shape):
        d = np.zeros_like(zz)
        d[idx] = eps
        numeric[idx] = (f(zz + d, yy) - f(zz - d, yy)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


def test_picked_softmax_with_a_masked_logit_is_finite():
    """A -inf logit (a mask) that is not the target: PyTorch's cross-entropy gives -0.313;
    the picked form must not multiply 0 by log_softmax = -inf."""
    z = gc.placeholder("z", (1, 3), "float64")
    y = gc.placeholder("y", (1,), "int64")
    cost = gc.sum(gc.log(gc.sum(gc.one_hot(y, 3, dtype="float64") * gc.softmax(z, 1), 1)))
    zz, yy = np.array([[2.0, -np.inf, 1.0]]), np.array([0])
    want = 2.0 - np.log(np.exp(2.0) + np.exp(1.0))
    for label, (value,) in _everywhere([z, y], [cost], [zz, yy]):
        np.testing.assert_allclose(value, want, rtol=1e-12, err_msg=label)
    g = gc.compile([z, y], gc.grad(cost, z))(zz, yy)
    assert np.isfinite(g).all()


def test_rewrites_keep_undefined_undefined():
    """(x*x - y*y)/(x - y) at x == y is 0/0, NaN — not 2x; x - x at inf is NaN; x * 0 at inf
    is NaN; sqrt(x)**2 + x at -4 is NaN, not -8; exp(log(x)) at -1 is NaN; min(exp(x), 0) at
    NaN is NaN, not 0."""
    x, y = gc.placeholder("x", (3,), "float64"), gc.placeholder("y", (3,), "float64")
    outs = [(x * x - y * y) / (x - y), x - x, x * 0.0, gc.square(gc.sqrt(x)) + x,
            gc.exp(gc.log(x)), gc.minimum(gc.exp(x), 0.0), (x * 2.0) / (x * 2.0)]
    xx, yy = np.array([1.0, np.inf, -4.0]), np.array([1.0, 0.0, np.nan])
    with np.errstate(all="ignore"):
        want = [(xx * xx - yy * yy) / (xx - yy), xx - xx, xx * 0.0, np.sqrt(xx) ** 2 + xx,
                np.exp(np.log(xx)), np.minimum(np.exp(xx), 0.0), (xx * 2) / (xx * 2)]
    for label, got in _everywhere([x, y], outs, [xx, yy]):
        for k, (g, w) in enumerate(zip(got, want)):
            np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=f"{label} #{k}")
            np.testing.assert_allclose(g, w, rtol=1e-12, err_msg=f"{label} #{k}")


def test_the_same_graph_compiles_to_the_same_program_in_any_thread():
    """A worker thread (where the old simplify skipped itself) and a thread holding a
    SIGALRM timer (as test runners' timeouts do) compile the very same program."""
    import signal

    x, y = gc.placeholder("x", (3,), "float64"), gc.placeholder("y", (3,), "float64")
    out = (x * x - y * y) / (x - y) + gc.tanh(x) * gc.tanh(x)
    main = gc.compile([x, y], out).source
    found = []
    worker = threading.Thread(target=lambda: found.append(gc.compile([x, y], out).source))
    worker.start()
    worker.join()
    previous = signal.signal(signal.SIGALRM, lambda *a: None)
    signal.setitimer(signal.ITIMER_REAL, 30.0)
    try:
        found.append(gc.compile([x, y], out).source)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert found == [main, main]
    got = gc.compile([x, y], out)(np.array([1.0, 2, 3]), np.array([1.0, 0, 3]))
    assert np.isnan(got[0]) and np.isnan(got[2])


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_every_backend_compiles_what_fusion_emits(backend, options):
    """A condition over minimum/maximum/clip (sympy made it an ITE the emitters rejected),
    integer powers, a float32 comparison feeding a float64 where, a piecewise inside a
    comparison."""
    a, b = gc.placeholder("a", (3,)), gc.placeholder("b", (3,))
    c, d = gc.placeholder("c", (3,)), gc.placeholder("d", (3,), "float64")
    k = gc.placeholder("k", (3,), "int32")
    outs = [gc.where(gc.minimum(a, b) > c, a * 2.0 + b, a - b * 3.0),
            gc.where(gc.clip(a, b, c) < 0.5, a, c), k ** 3, k ** k,
            gc.where(a < 0.0, d, 1.0), gc.cast(gc.maximum(a, b) > gc.minimum(b, c), "float32")]
    arrays = [np.array([1.0, 2, 3], np.float32), np.array([0.0, 5, 1], np.float32),
              np.array([0.5, 0.5, 4], np.float32), np.array([7.0, 8, 9]),
              np.array([2, -3, 0], np.int32)]
    raw = gc.compile([a, b, c, d, k], outs, optimize=False)(*arrays)
    got = gc.compile([a, b, c, d, k], outs, backend=backend, backend_options=options)(*arrays)
    for g, w in zip(got, raw):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got[3], [4, 0, 1])  # (-3)**-3 truncates to 0; 0**0 is 1


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_the_nan_guard_idiom_survives(backend, options):
    """clip(where(s == s, x, 0.5), 0, 1): [0.5, 1, 0.5], not [1, 1, 0] (sympy read s == s as
    true, and a folded condition tested x instead of the where)."""
    x, s = gc.placeholder("x", (3,)), gc.placeholder("s", (3,))
    outs = [gc.clip(gc.where(s == s, x, 0.5), 0, 1), gc.clip(gc.where(gc.isnan(s), 0.5, x), 0, 1),
            gc.cast(gc.isfinite(x / s), "float32"), gc.cast(s != s, "float32")]
    xx = np.array([2.0, 2, -3], np.float32)
    ss = np.array([np.nan, 1, np.nan], np.float32)
    for optimize in (False, True):
        fn = gc.compile([x, s], outs, backend=backend, optimize=optimize,
                        backend_options=options)
        first, second, finite, unequal = fn(xx, ss)
        np.testing.assert_array_equal(first, [0.5, 1, 0.5])
        np.testing.assert_array_equal(second, [0.5, 1, 0.5])
        np.testing.assert_array_equal(finite, [0, 1, 0])
        np.testing.assert_array_equal(unequal, [1, 0, 1])


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_log_softmax_keeps_its_digits(backend, options):
    """(x - max) - log(sum), not x - (max + log(sum)): -0.693115 and 0.0 before."""
    z = gc.placeholder("z", (2, 2), "float64")
    fn = gc.compile([z], gc.log_softmax(z, 1), backend=backend, backend_options=options)
    got = fn(np.array([[1e12, 1e12], [-1e30, -1e30]]))
    np.testing.assert_allclose(got, np.full((2, 2), -np.log(2.0)), rtol=1e-15)


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_softmax_of_a_row_holding_plus_inf_is_nan_as_pytorch_s(backend, options):
    """A +inf max was shifted by 0 like an all -inf row's: softmax [0, 0, nan, 0] and
    log_softmax [-inf, -inf, nan, -inf]; PyTorch and ONNX give NaN for the whole row. An all
    -inf row and a row with -inf entries keep their values; logsumexp of a row holding
    +inf stays +inf (PyTorch's)."""
    z = gc.placeholder("z", (3, 4))
    fn = gc.compile([z], [gc.softmax(z, 1), gc.log_softmax(z, 1), gc.logsumexp(z, 1)],
                    backend=backend, backend_options=options)
    inf = np.inf
    soft, log_soft, lse = fn(np.array([[1, 2, inf, 3], [-inf, 0, -inf, 0], [-inf] * 4],
                                      np.float32))
    assert np.isnan(soft[0]).all() and np.isnan(log_soft[0]).all() and lse[0] == inf
    np.testing.assert_array_equal(soft[1], [0, 0.5, 0, 0.5])
    np.testing.assert_allclose(log_soft[1], [-inf, -np.log(2), -inf, -np.log(2)])
    assert np.isnan(soft[2]).all() and lse[2] == -inf


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_nan_propagates_as_in_numpy_and_pytorch(backend, options):
    """Values: relu(NaN), clip(1, NaN, NaN), maximum(NaN, 1), max over a NaN are NaN.
    Gradients (PyTorch's): relu passes g at NaN; maximum gives each side the full g; clip
    gives 0; a max reduction over a NaN gives NaN."""
    x = gc.placeholder("x", (3,), "float64")
    lo = gc.placeholder("lo", (3,), "float64")
    relu, clipped = gc.relu(x), gc.clip(gc.constant(np.ones(3)), lo, lo)
    biggest, top = gc.maximum(x, lo), gc.max(x)
    cost = gc.sum(relu) + gc.sum(biggest) + gc.sum(gc.clip(x, lo, 2.0)) + top
    grads = gc.grad(cost, [x, lo])
    fn = gc.compile([x, lo], [relu, clipped, biggest, top, *grads], backend=backend,
                    backend_options=options)
    xx, ll = np.array([np.nan, 0.5, -1.0]), np.array([np.nan, np.nan, 0.0])
    r, c, m, t, gx, gl = fn(xx, ll)
    np.testing.assert_array_equal(np.isnan(r), [True, False, False])
    assert np.isnan(c[:2]).all() and c[2] == 0.0 and np.isnan(m[:2]).all() and m[2] == 0.0
    assert np.isnan(t)
    # d/dx: relu passes 1 at NaN, maximum 1 at NaN, clip 0 at NaN, max over a NaN: NaN
    assert np.isnan(gx).all()
    np.testing.assert_array_equal(gl, [1.0, 1.0, 2.0])  # NaN: maximum full g, clip 0


@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "as-built"])
@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_a_zero_slope_keeps_nan_and_the_sign_of_zero(backend, options, optimize):
    """leaky_relu(x, 0) and elu(x, 0) are ``0 * x`` and ``0 * expm1(x)`` below 0 (PyTorch):
    NaN stays NaN, -inf gives NaN (leaky) or -0.0 (elu), a negative gives -0.0. sympy would
    fold the product to the number 0, and check_finite could not see the NaN it erased."""
    xs = np.array([np.nan, -np.inf, -1.0, -0.0, 2.0], np.float32)
    x = gc.placeholder("x", (5,))
    leaky, elu = gc.leaky_relu(x, alpha=0.0), gc.elu(x, alpha=0.0)
    fused = gc.sum(gc.leaky_relu(x * 2.0, alpha=0.0) + 1.0)  # (inside a fused group)
    grad = gc.grad(gc.sum(leaky) + gc.sum(elu), x)
    fn = gc.compile([x], [leaky, elu, fused, grad], backend=backend, backend_options=options,
                    optimize=optimize)
    got_leaky, got_elu, got_fused, got_grad = fn(xs)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(got_leaky, np.where(xs > 0, xs, 0.0 * xs))
        np.testing.assert_array_equal(np.signbit(got_leaky[2:]), [True, True, False])
        np.testing.assert_array_equal(got_elu, np.where(xs > 0, xs, 0.0 * np.expm1(xs)))
        np.testing.assert_array_equal(np.signbit(got_elu[1:]), [True, True, True, False])
    assert np.isnan(got_fused)
    np.testing.assert_array_equal(got_grad[1:], [0.0, 0.0, 0.0, 2.0])
    with pytest.raises(gc.BackendError, match="NaN"):
        gc.compile([x], gc.sum(leaky), backend=backend, backend_options={
            **(options or {}), "check_finite": True})(np.array([np.nan, 1, 1, 1, 1], np.float32))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_clip_with_an_open_side_is_numpy_s(backend):
    """gc.clip(x, None, hi) and (x, lo, None), as np.clip: one side open, the dtype kept
    (an int32 stays int32), NaN kept; both None give x. The gradient is clip's (1 inside
    and on the bound, 0 outside, 0 at a NaN)."""
    x = gc.placeholder("x", (5,))
    i = gc.placeholder("i", (4,), "int32")
    xs = np.array([-2, -0.5, np.nan, 0.5, 3], np.float32)
    iv = np.array([-5, 0, 3, 9], np.int32)
    fn = gc.compile([x, i], [gc.clip(x, None, 0.7), gc.clip(x, -1, None), gc.clip(x, None, None),
                             gc.clip(i, None, 2), gc.clip(i, 0, None),
                             gc.grad(gc.sum(gc.clip(x, None, 0.5) * 3.0), x)], backend=backend)
    got = fn(xs, iv)
    want = [np.clip(xs, None, 0.7), np.clip(xs, -1, None), xs, np.clip(iv, None, 2),
            np.clip(iv, 0, None), np.array([3, 3, 0, 3, 0], np.float32)]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


def test_a_negative_zero_constant_keeps_its_sign():
    """sympy has no -0.0 (Float(-0.0) == 0 with no sign): x / -0.0 gave x / +0.0 on llvm,
    optimized or not, and on numpy once folding made a -0.0 constant (found by a fuzz).
    A -0.0 scalar is now read from its buffer rather than written into the expression."""
    x = gc.placeholder("x", (3,), "float32")
    c = gc.constant(np.float32(0.0))
    xv = np.array([1.0, -2.0, 0.0], np.float32)
    neg = np.float32(-0.0)
    cases = [(x / -0.0, xv / neg), ((-x) / (-c), (-xv) / neg),
             (1.0 / (x * -0.0), 1.0 / (xv * neg)),
             (1.0 / gc.where(x > 0, -0.0, 1.0), 1.0 / np.where(xv > 0, neg, 1.0)),
             (1.0 / (x * 0.0 + -0.0), 1.0 / (xv * 0.0 + neg)),
             (1.0 / (-0.0 - x * 0.0), 1.0 / (neg - xv * 0.0))]
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, (y, want) in enumerate(cases):
            for label, (got,) in _everywhere([x], [y], [xv]):
                np.testing.assert_array_equal(got, want.astype(np.float32),
                                              err_msg=f"case {k}, {label}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sigmoid_of_a_large_negative_is_its_subnormal_value_on_every_backend(dtype):
    """The numpy backend's four-pass sigmoid gave 0 where exp(-x) overflows, and
    log(sigmoid(x)) -inf, where llvm gives the subnormal value and about x (a fuzz)."""
    x = gc.placeholder("x", (6,), dtype)
    xv = np.array([-710.0, -745.0, -89.0, -103.0, -5.0, np.nan] if dtype == "float64" else
                  [-89.0, -103.0, -88.73, -100.0, -5.0, np.nan], dtype)
    want = np.exp(xv.astype(np.float64)) / (1 + np.exp(xv.astype(np.float64)))
    for label, (s, log_s) in _everywhere([x], [gc.sigmoid(x), gc.log(gc.sigmoid(x))], [xv]):
        np.testing.assert_allclose(s, want.astype(dtype), rtol=4e-7 if dtype == "float32"
                                   else 1e-15, atol=0, err_msg=label)
        assert np.isfinite(log_s[:5]).all() and np.isnan(log_s[5]), label


def test_sigmoid_inside_a_loop_keeps_its_subnormal_value():
    """A loop body's step runs in its program's error state: a counter of its own never saw
    the overflow, and the numpy backend's body gave 0 (found reading the change again)."""
    xs = gc.placeholder("xs", (2, 3), "float32")
    _, ys = gc.scan(lambda c, x: (c, gc.sigmoid(x)), gc.zeros((3,)), xs)
    xv = np.full((2, 3), -89.0, np.float32)
    want = np.float32(np.exp(-89.0))
    for label, (got,) in _everywhere([xs], [ys], [xv]):
        np.testing.assert_allclose(got, np.full((2, 3), want), rtol=4e-7, err_msg=label)
