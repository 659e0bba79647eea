"""The NumPy backend's whole-batch convolution and pooling kernels against the ops' reference
functions (the definition), over geometries the op table does not reach: every path of each
kernel (overlapping and non-overlapping pools, batch-first and channels-first inputs), ties,
NaN and -inf in windows, 1x1 kernels, stride larger than the kernel, odd sizes, batch 1, an
empty batch, 1-d, 2-d and 3-d, float32, float64 and integers for max pooling; and the
branch-free select the generated code uses for np.where."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import graphc as gc
from graphc.backends.numpy import kernels as KN
from graphc.ops.conv import (
    conv_out_size,
    conv_reference,
    conv_transpose_reference,
    conv_weight_grad_reference,
)
from graphc.ops.pool import (
    avg_pool_reference,
    max_pool_grad_reference,
    max_pool_reference,
    max_pool_select_reference,
)

CONV_GEOMETRIES = [  # (spatial, kernel, stride, padding, dilation)
    ((7, 6), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((7, 6), (1, 1), (1, 1), (0, 0), (1, 1)),  # pointwise
    ((9, 8), (2, 3), (3, 4), (0, 1), (1, 1)),  # stride > kernel
    ((9, 9), (3, 2), (2, 1), (2, 0), (2, 3)),  # dilated, padded
    ((10,), (3,), (2,), (1,), (2,)),  # 1-d
    ((5, 4, 6), (2, 2, 3), (1, 2, 1), (1, 0, 1), (1, 1, 1)),  # 3-d
]


def _geometry_id(g):
    return "x".join(map(str, g[0])) + f"-k{g[1]}-s{g[2]}-p{g[3]}-d{g[4]}"


def _channels_first(a: np.ndarray) -> np.ndarray:
    """The same values laid out channels first in memory, as the kernels' own results are."""
    return np.ascontiguousarray(a.swapaxes(0, 1)).swapaxes(0, 1)


@pytest.mark.parametrize("geometry", CONV_GEOMETRIES, ids=_geometry_id)
@pytest.mark.parametrize("batch", [3, 1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["batch-first", "channels-first"])
def test_convolutions_match_the_reference(geometry, batch, dtype, layout):
    spatial, kernel, stride, padding, dilation = geometry
    rng = np.random.default_rng(len(spatial) + batch)
    geom = dict(stride=stride, padding=padding, dilation=dilation)
    x = rng.normal(size=(batch, 3, *spatial)).astype(dtype)
    w = rng.normal(size=(4, 3, *kernel)).astype(dtype)
    if layout == "channels-first":
        x = _channels_first(x)
    scratch = KN.Scratch()
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for _ in range(2):  # the second call reuses the scratch buffers
        y = KN.conv(x, w, scratch=scratch, **geom)
        want = conv_reference(x, w, **geom)
        assert y.dtype == want.dtype and y.shape == want.shape
        np.testing.assert_allclose(y, want, **tol)
    g = rng.normal(size=y.shape).astype(dtype)
    if layout == "channels-first":
        g = _channels_first(g)
    dw = KN.conv_weight_grad(x, g, kernel=kernel, scratch=scratch, **geom)
    want = conv_weight_grad_reference(x, g, kernel=kernel, **geom)
    assert dw.dtype == want.dtype and dw.shape == want.shape
    np.testing.assert_allclose(dw, want, **tol)
    dx = KN.conv_transpose(g, w, out_size=spatial, scratch=scratch, **geom)
    want = conv_transpose_reference(g, w, out_size=spatial, **geom)
    assert dx.dtype == want.dtype and dx.shape == want.shape
    np.testing.assert_allclose(dx, want, **tol)


POOL_GEOMETRIES = [  # (spatial, kernel, stride, padding)
    ((8, 6), (2, 2), (2, 2), (0, 0)),  # tiles the input
    ((9, 7), (2, 2), (2, 2), (0, 0)),  # tiles, with a remainder row and column
    ((7, 7), (3, 3), (2, 2), (1, 1)),  # overlapping, padded
    ((6, 9), (2, 3), (3, 1), (0, 1)),  # stride > kernel on one axis
    ((6, 5), (1, 1), (2, 2), (0, 0)),
    ((8,), (2,), (2,), (0,)),
    ((7,), (3,), (1,), (1,)),
    ((4, 4, 6), (2, 2, 2), (2, 2, 2), (0, 0, 0)),
]


def _pool_input(rng, batch, spatial, dtype, special: bool):
    """Values with ties (small integers); with `special`, NaN and -inf in some windows."""
    x = rng.integers(-3, 4, size=(batch, 2, *spatial)).astype(dtype)
    if special and x.size and np.dtype(dtype).kind == "f":
        flat = x.reshape(-1)
        flat[rng.choice(flat.size, max(1, flat.size // 10), replace=False)] = np.nan
        flat[rng.choice(flat.size, max(1, flat.size // 10), replace=False)] = -np.inf
    return x


@pytest.mark.parametrize("geometry", POOL_GEOMETRIES,
                         ids=lambda g: "x".join(map(str, g[0])) + f"-k{g[1]}-s{g[2]}-p{g[3]}")
@pytest.mark.parametrize("batch", [2, 1, 0])
@pytest.mark.parametrize("dtype,special", [(np.float32, False), (np.float64, True),
                                           (np.int32, False)], ids=["f32", "f64-nan-inf", "i32"])
@pytest.mark.parametrize("layout", ["batch-first", "channels-first"])
def test_pooling_matches_the_reference(geometry, batch, dtype, special, layout):
    spatial, kernel, stride, padding = geometry
    rng = np.random.default_rng(batch + len(spatial))
    geom = dict(kernel=kernel, stride=stride, padding=padding)
    x = _pool_input(rng, batch, spatial, dtype, special)
    if layout == "channels-first":
        x = _channels_first(x)
    scratch = KN.Scratch()
    y = KN.max_pool(x, scratch=scratch, **geom)
    want = max_pool_reference(x, **geom)
    assert y.dtype == want.dtype and y.shape == want.shape
    np.testing.assert_array_equal(y, want)
    out = tuple(conv_out_size(s, k, st, p, 1) for s, k, st, p in zip(spatial, kernel, stride,
                                                                     padding))
    g = rng.normal(size=(batch, 2, *out)).astype(np.float64 if dtype == np.int32 else dtype)
    # every window's gradient goes to its first maximum (NaN counting as the largest)
    got = KN.max_pool_grad(x, g, scratch=scratch, **geom)
    want = max_pool_grad_reference(x, g, **geom)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    h = rng.normal(size=x.shape).astype(g.dtype)
    got = KN.max_pool_select(x, h, scratch=scratch, **geom)
    want = max_pool_select_reference(x, h, **geom)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    if np.dtype(dtype).kind == "f" and not special:
        got = KN.avg_pool(x, scratch=scratch, **geom)
        want = avg_pool_reference(x, **geom)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_the_generated_step_calls_the_whole_batch_kernels_and_keeps_no_view():
    """A LeNet-like step compiles to KN.* lines, and matches its float64 gradient check."""
    x = gc.placeholder("x", ("N", 1, 10, 10))
    w = gc.parameter("w", np.random.default_rng(0).normal(size=(4, 1, 3, 3)))
    y = gc.nn.functional.max_pool2d(gc.relu(gc.nn.functional.conv2d(x, w, padding=1)), 2)
    loss = (y * y).sum()
    (gw,) = gc.grad(loss, [w])
    fn = gc.compile([x], [loss, gw])
    for name in ("KN.conv(", "KN.conv_weight_grad(", "KN.max_pool(", "KN.max_pool_grad("):
        assert name in fn.source
    data = np.random.default_rng(1).normal(size=(2, 1, 10, 10))
    _, got = fn(data)
    eps, w0 = 1e-6, w.value.copy()
    probe = gc.compile([x], loss)
    numeric = np.zeros_like(w0)
    for idx in np.ndindex(*w0.shape):
        for sign in (1, -1):
            bumped = w0.copy()
            bumped[idx] += sign * eps
            w.value = bumped
            numeric[idx] += sign * probe(data) / (2 * eps)
    w.value = w0
    np.testing.assert_allclose(got, numeric, rtol=1e-5, atol=1e-6)


SELECT_VALUES = {  # hostile values: signed zeros, infinities, NaN, extremes
    "f": [0.0, -0.0, 1.5, -2.0, np.inf, -np.inf, np.nan],
    "i": [0, -1, 7, -(2**31), 2**31 - 1],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32, np.int64,
                                   np.uint8])
@pytest.mark.parametrize("form", ["arrays", "zero-then-array", "array-then-scalar",
                                  "broadcast", "channels-first", "small", "into-a-view"])
def test_select_is_np_where_bit_for_bit(dtype, form):
    """The generated code's branch-free ``_select`` gives np.where's dtype, shape and bits
    (NaN payloads and signed zeros included), on every form a Piecewise prints to."""
    from graphc.ops.expr_numpy import NUMPY_NAMESPACE

    select = NUMPY_NAMESPACE["_select"]  # graphc.ops.expr_numpy.select
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).str} {form}".encode()))
    shape = (3, 5, 40, 41) if form != "small" else (4, 5)
    pool = SELECT_VALUES["f" if np.dtype(dtype).kind == "f" else "i"]
    if np.dtype(dtype).kind == "u":
        pool = [0, 1, 255]

    def values(shape):
        return np.array(rng.choice(np.array(pool, dtype=object), size=shape).tolist(), dtype)

    a, b = values(shape), values(shape)
    cond = rng.random(shape) < 0.5
    if form == "zero-then-array":
        a = 0
    elif form == "array-then-scalar":
        b = dtype(1)
    elif form == "broadcast":
        a = values(shape[1:])
        cond = rng.random(shape[-1]) < 0.5
    elif form == "channels-first":
        a, b, cond = (np.ascontiguousarray(v.swapaxes(0, 1)).swapaxes(0, 1)
                      for v in (a, b, cond))
    want = np.where(cond, a, b)
    if form == "into-a-view":  # written into a strided view, as max_pool_grad does
        target = np.zeros(shape[:-1] + (2 * shape[-1],), want.dtype)
        got = select(cond, a, b, out=target[..., ::2])
        assert got.base is target or got.base is target.base
    else:
        got = select(cond, a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    if form == "channels-first":  # the result keeps the operands' layout
        assert got.strides == b.strides


@pytest.mark.parametrize("op", ["log_softmax", "softmax", "logsumexp"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("rows", ["finite", "hostile"])
def test_softmax_family_is_the_reference_bit_for_bit(op, dtype, rows):
    """The NumPy backend's softmax kernels against the ops' references, bit for bit, with rows
    of +inf, -inf, NaN and huge values, over every axis (and several for logsumexp)."""
    from graphc.ops import REGISTRY

    rng = np.random.default_rng(7)
    x = (rng.normal(size=(5, 4, 6)) * 3).astype(dtype)
    if rows == "hostile":
        x[0, 0, :] = np.inf
        x[1, 1, :] = -np.inf
        x[2, 2, 1] = np.nan
        x[3, :, 2] = np.finfo(dtype).max
        x[4, 3, 0] = -np.inf
    reference, ours = REGISTRY[op].reference, getattr(KN, op)
    if op == "logsumexp":
        calls = [dict(axes=a, keepdims=k) for a in [(0,), (2,), (1, 2), (0, 1, 2)]
                 for k in (False, True)]
    else:
        calls = [dict(axis=a) for a in range(3)]
    for kw in calls:
        with np.errstate(all="ignore"):
            want, got = reference(x, **kw), ours(x, **kw)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes(), kw


@pytest.mark.parametrize("labels", [[2, 0, 1, 1], [[0], [3]], [], 2, [0, 4, -1], [-3, 1]],
                         ids=["row", "column", "empty", "scalar", "too-large", "negative"])
def test_one_hot_is_the_reference_and_names_the_same_bad_label(labels):
    from graphc.errors import IndexRangeError
    from graphc.ops import REGISTRY

    labels = np.asarray(labels, np.int64)
    reference = REGISTRY["one_hot"].reference
    try:
        want = reference(labels, n=4, dtype=np.float32)
    except IndexRangeError as exc:
        with pytest.raises(IndexRangeError) as got:
            KN.one_hot(labels, n=4, dtype=np.float32)
        assert (got.value.value, got.value.bound) == (exc.value, exc.bound)
        return
    got = KN.one_hot(labels, n=4, dtype=np.float32)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _sigmoid_inputs(dtype, form):
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dtype).str} {form}".encode()))
    pool = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 88.7, -88.7, -87.3, -103.9, 745.2,
                     -745.2, -708.4, 1e-45, -5e-324, 11.0, -11.0, 1e38, -1e38])
    with np.errstate(over="ignore"):
        x = np.concatenate([rng.normal(size=4000) * 30, pool]).astype(dtype)
    x = rng.permutation(x)[:3990].reshape(3, 35, 38)
    if form == "channels-first":
        x = np.ascontiguousarray(x.swapaxes(0, 1)).swapaxes(0, 1)
    elif form == "strided":
        x = x[:, ::2, 1::3]
    elif form == "scalar":
        x = x[1, 2, 3]
    elif form == "empty":
        x = x[:, :0]
    return x


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("form", ["block", "channels-first", "strided", "scalar", "empty"])
def test_sigmoid_formula_per_dtype_bit_for_bit(dtype, form):
    """The generated code's ``_sigmoid``: ``1/(1+exp(-x))`` on float32/float64 arrays (four
    passes, and exp(x) where exp(-x) overflows), the stable select of 1/(1+e) and e/(1+e),
    e = exp(-|x|), on float16 and scalars; the same bits, dtype, shape and layout as those
    formulas on hostile values (signed zeros, infinities, NaN, overflow and subnormal
    thresholds). Each element's result depends on that element alone."""
    from graphc.ops.expr_numpy import NUMPY_NAMESPACE, select

    sigmoid = NUMPY_NAMESPACE["_sigmoid"]
    x = _sigmoid_inputs(dtype, form)
    with np.errstate(all="ignore"):
        if form != "scalar" and dtype != np.float16:
            want = 1 / (1 + np.exp(-x))
            # where exp(-x) overflows, exp(x): the subnormal that 0 stood for
            limit = -88.72 if dtype == np.float32 else -709.78
            want = np.where(x < limit, np.exp(x), want)
        else:
            e = np.exp(-np.abs(x))
            want = select(x >= 0, 1 / (1 + e), e / (1 + e))
        got = sigmoid(x)
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes() and got.strides == want.strides
    if form == "block":  # elementwise: a sub-block gives the same bits as inside the whole
        with np.errstate(all="ignore"):
            assert np.asarray(sigmoid(x[1:2, 3:9])).tobytes() == got[1:2, 3:9].tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_within_3_5_ulp_where_normal_and_below_the_smallest_normal_elsewhere(dtype):
    """Against a float128/float64 reference: within 3.5 ulp (3.05 measured) wherever the true
    value is a normal number; where exp(-x) overflows, a value in [0, smallest normal) (the
    true value is a subnormal); 1 at +inf, 0 at -inf, 0.5 at +-0, NaN at NaN."""
    from graphc.ops.expr_numpy import NUMPY_NAMESPACE

    sigmoid = NUMPY_NAMESPACE["_sigmoid"]
    info = np.finfo(dtype)
    lim = 104.0 if dtype == np.float32 else 746.0
    x = np.linspace(-lim, lim, 200_001).astype(dtype)
    wide = np.longdouble if np.finfo(np.longdouble).nmant > 52 else np.float64
    with np.errstate(all="ignore"):
        got = sigmoid(x)
        ref = 1 / (1 + np.exp(-x.astype(wide)))
    normal = ref >= info.tiny
    ulp = np.spacing(ref[normal].astype(dtype)).astype(wide)
    assert np.max(np.abs(got[normal].astype(wide) - ref[normal]) / ulp) <= 3.5
    assert np.all((got[~normal] >= 0) & (got[~normal] < info.tiny))
    special = np.array([np.inf, -np.inf, 0.0, -0.0, np.nan], dtype)
    with np.errstate(all="ignore"):
        out = sigmoid(special)
    np.testing.assert_array_equal(out, np.array([1.0, 0.0, 0.5, 0.5, np.nan], dtype))


def test_step_ignores_floating_point_errors_whatever_its_caller_set():
    """The step runs in its own quiet context (numpy's error state ignored inside): division
    by zero, log of a negative number and overflow give inf and NaN, never a warning or an
    exception, even when the caller raises on every error; the caller's state is untouched;
    a scan body inside the step is quiet too."""
    import warnings

    with gc.Graph():
        x = gc.placeholder("x", (4,))
        y = gc.log(x) / x + gc.exp(x * 100.0)
        # a loop body: each step divides by the slice (a zero in it) and overflows
        _, ys = gc.scan(lambda c, s: (c * 1e30, c / s), gc.ones_like(x[0]) * 1e30, x)
        fn = gc.compile([x], [y, ys], backend="numpy")
    xs = np.array([0.0, -1.0, 1.0, 2.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            out = fn(xs)
            assert np.geterr() == {"divide": "raise", "over": "raise", "under": "raise",
                                   "invalid": "raise"}
        out_again = fn(xs)
    with np.errstate(all="ignore"):
        want = np.log(xs) / xs + np.exp(xs * np.float32(100.0))
        carries = np.float32(1e30) * np.float32(1e30) ** np.arange(4, dtype=np.float32)
        want_ys = carries / np.float32(1e30) / xs
    for got in (out, out_again):
        np.testing.assert_array_equal(got[0], want)
        np.testing.assert_array_equal(got[1], want_ys)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_padding_never_wins_a_window_whose_taps_all_tie_with_it(dtype):
    """A padded window whose taps are all -inf (or all the integer minimum) ties with its
    padding: the first tap wins, as on the llvm backend and in PyTorch (whose max_pool1d
    gives these gradients), so the gradient is not lost in the padding."""
    low = -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min
    geom = dict(kernel=(3,), stride=(1,), padding=(1,))
    g = np.arange(1.0, 6.0).reshape(1, 1, 5).astype(np.float32 if dtype == np.float32
                                                    else np.float64)
    h = np.arange(10.0, 60.0, 10.0).reshape(1, 1, 5).astype(g.dtype)
    for row, grad, picked in [([low, low, 0, 1, 2], [1, 0, 2, 3, 9], [10, 30, 40, 50, 50]),
                              ([low] * 5, [3, 3, 4, 5, 0], [10, 10, 20, 30, 40])]:
        x = np.array(row, dtype=dtype).reshape(1, 1, 5)
        scratch = KN.Scratch()
        for got in (max_pool_grad_reference(x, g, **geom),
                    KN.max_pool_grad(x, g, scratch=scratch, **geom)):
            np.testing.assert_array_equal(got.ravel(), grad)
        for got in (max_pool_select_reference(x, h, **geom),
                    KN.max_pool_select(x, h, scratch=scratch, **geom)):
            np.testing.assert_array_equal(got.ravel(), picked)
        xs = gc.placeholder("x", x.shape, x.dtype)
        gs = gc.placeholder("g", g.shape, g.dtype)
        spread = gc.ops.pool.max_pool_grad(xs, gs, **geom)
        for backend in ("numpy", "llvm"):
            got = gc.compile([xs, gs], spread, backend=backend)(x, g)
            np.testing.assert_array_equal(got.ravel(), grad, err_msg=backend)


@pytest.mark.parametrize("dtype,x_values,want_nonfinite", [
    ("float32", [1e20, -1e20, 3.0], True), ("int32", [50000, 3, -7], False)])
def test_a_fused_group_computes_in_its_own_dtype(dtype, x_values, want_nonfinite):
    """A select between two constants (``where(x > 0, 0.5, 2.0)``) was printed as
    np.where of Python numbers, a float64 (int64) array that carried the whole fused float32
    (int32) group into the wider type: an overflow to inf was erased, an int32 product did
    not wrap, and the optimized program disagreed with the unoptimized one and with llvm."""
    x = gc.placeholder("x", (3,), dtype)
    if dtype == "float32":
        y = ((gc.where(x > 0, 0.5, 2.0) * x) * x) / x
    else:
        one, two = gc.constant(np.int32(1)), gc.constant(np.int32(2))
        y = ((gc.where(x > 0, one, two) * x) * x) // 7
    xv = np.array(x_values, dtype)
    with np.errstate(all="ignore"):
        plain = gc.compile([x], y, optimize=False)(xv)
        fused = gc.compile([x], y)(xv)
        native = gc.compile([x], y, backend="llvm")(xv)
    assert fused.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(fused, plain)
    np.testing.assert_array_equal(native, plain)
    assert (not np.isfinite(plain).all()) == want_nonfinite
