"""The course's math: sin ... silu, gelu, rounding, and the tensor constructors.

Each op's reference values and finite-difference gradients are in tests/op_cases.py (which
also runs every backend against NumPy). Here: PyTorch's values and gradients for the
activations PyTorch defines (float64), the IEEE edge cases of rounding on every backend, the
derivatives sympy gives, pictures, and full/zeros/ones/*_like/arange.
"""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

CPU_BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True, "verify": False})]


def _torch_pairs():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    return [(gc.gelu, tf.gelu), (lambda x: gc.gelu(x, approximate="tanh"),
                                 lambda t: tf.gelu(t, approximate="tanh")),
            (gc.silu, tf.silu), (gc.hard_sigmoid, tf.hardsigmoid), (gc.softsign, tf.softsign),
            (gc.erf, torch.erf), (gc.rsqrt, torch.rsqrt), (gc.reciprocal, torch.reciprocal),
            (gc.exp2, torch.exp2), (gc.log2, torch.log2), (gc.log10, torch.log10),
            (gc.arctan, torch.atan), (gc.tan, torch.tan)]


@pytest.mark.parametrize("i", range(13))
def test_values_and_gradients_equal_pytorchs(i):
    torch = pytest.importorskip("torch")
    ours, theirs = _torch_pairs()[i]
    rng = np.random.default_rng(i)
    xs = np.concatenate([rng.uniform(-5, 5, 40), [-3.0, 3.0, 0.0, 1e-3, -1e-3, 2.9, -2.9]])
    if i in (6, 9, 10):  # rsqrt, log2, log10: positive inputs
        xs = np.abs(xs) + 0.1
    if i == 12:  # tan: away from its poles
        xs = np.clip(xs, -1.5, 1.5)
    x = gc.placeholder("x", xs.shape, "float64")
    y = ours(x)
    value, grad = gc.compile([x], [y, gc.grad(gc.sum(y), x)])(xs)
    t = torch.tensor(xs, requires_grad=True)
    ty = theirs(t)
    ty.sum().backward()
    np.testing.assert_allclose(value, ty.detach().numpy(), rtol=1e-13, atol=1e-15)
    # PyTorch's hardsigmoid backward multiplies by 1/6 rounded to float32, in float64 too
    rtol = 1e-7 if i == 3 else 1e-12
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=rtol, atol=1e-14)


EDGES = np.array([2.5, -2.5, 0.5, -0.5, 1.5, -0.0, 0.0, 3.7, -3.7, np.inf, -np.inf, np.nan,
                  2.0**52 + 1, -(2.0**52) - 0.5, 1e-310, -1e-310])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("backend,options", CPU_BACKENDS, ids=[b for b, _ in CPU_BACKENDS])
def test_rounding_is_ieee_on_every_backend(backend, options, dtype):
    v = EDGES.astype(dtype)
    x = gc.placeholder("x", v.shape, dtype)
    f = gc.compile([x], [gc.floor(x), gc.ceil(x), gc.round(x)], backend=backend,
                   backend_options=options)
    for got, ref in zip(f(v), (np.floor(v), np.ceil(v), np.rint(v))):
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(np.signbit(got), np.signbit(ref))  # -0 stays -0


def test_rounding_has_derivative_zero_and_sympy_derives_the_rest():
    assert gc.derivative("floor") == 0 and gc.derivative("round") == 0
    assert "cos" in str(gc.derivative("sin"))
    assert "exp" in str(gc.derivative("erf"))  # 2/sqrt(pi) exp(-x**2), pi rounded
    x = gc.placeholder("x", (3,), "float64")
    g = gc.compile([x], gc.grad(gc.sum(gc.round(x) * x), x))(np.array([0.4, 1.6, -2.5]))
    np.testing.assert_array_equal(g, [0.0, 2.0, -2.0])  # round(x) * 1 + 0 * x


def test_modules_and_pictures():
    x = gc.placeholder("x", ("N", 4))
    y = gc.nn.Sequential(gc.nn.Linear(4, 4), gc.nn.GELU(approximate="tanh"), gc.nn.SiLU())(x)
    f = gc.compile([x], y, optimize=False)
    assert {"gelu", "silu"} <= {n.op.name for n in f.graph.nodes}
    dot = gc.viz.to_dot(y).source
    assert "gelu" in dot and "silu" in dot
    with pytest.raises(gc.GraphError, match="approximate"):
        gc.gelu(x, approximate="fast")


def test_full_zeros_ones_like_and_arange():
    x = gc.placeholder("x", ("N", 3), "float64")
    outs = [gc.zeros_like(x), gc.ones_like(x, dtype="int32"), gc.full_like(x, 2.5),
            gc.full(("N", 2), 7), gc.zeros((2, 2)), gc.ones(3, dtype="float64"),
            gc.full((2,), True), gc.arange(5), gc.arange(1.0, 2.0, 0.25), gc.arange(6, 0, -2),
            gc.ops.numel(x)]
    feed = np.ones((4, 3))
    for backend in ("numpy", "llvm"):
        r = gc.compile([x], outs, backend=backend)(feed)
        np.testing.assert_array_equal(r[0], np.zeros((4, 3)))
        assert r[0].dtype == np.float64
        assert r[1].dtype == np.int32 and r[1].shape == (4, 3) and r[1].sum() == 12
        np.testing.assert_array_equal(r[2], np.full((4, 3), 2.5))
        assert r[3].dtype == np.int64 and r[3].shape == (4, 2) and (r[3] == 7).all()
        assert r[4].dtype == np.float32 and r[5].dtype == np.float64
        assert r[6].dtype == bool and r[6].all()
        np.testing.assert_array_equal(r[7], np.arange(5))
        assert r[8].dtype == np.float32
        np.testing.assert_array_equal(r[8], [1.0, 1.25, 1.5, 1.75])
        np.testing.assert_array_equal(r[9], [6, 4, 2])
        assert int(r[10]) == 12
    with pytest.raises(gc.GraphError, match="step must not be 0"):
        gc.arange(0, 3, 0)
    with pytest.raises(gc.GraphError, match="numbers"):
        gc.arange("N")
