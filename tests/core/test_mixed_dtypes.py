"""Inputs of other dtypes than a layer's parameters (an audit of mixed dtypes): what each
gives, the same on every backend. Ints and bools computed as floats where a layer's
arithmetic needs them; arithmetic NumPy refuses on booleans is a GraphError."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional
BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True})]


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_dropout_of_ints_and_masks_keeps_about_half_the_same_way_everywhere(dtype):
    """The mask was drawn in the input's dtype: a draw in [0, 1) is 0 as an int (all
    dropped) and an undefined bool (all kept on numpy, none on llvm)."""
    xs = np.ones((64, 32), dtype)
    outs = []
    for backend, options in BACKENDS:
        with gc.Graph():
            x = gc.placeholder("x", xs.shape, dtype)
            y = F.dropout(x, 0.5, training=True, seed=3)
            outs.append(gc.compile([x], y, backend=backend, backend_options=options)(xs))
    assert outs[0].dtype == np.float32 and 0.4 < (outs[0] != 0).mean() < 0.6
    assert set(np.unique(outs[0])) == {0.0, 2.0}
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


@pytest.mark.parametrize("dtype", ["int32", "bool", "float64"])
def test_dropout_gives_the_same_dtype_in_training_and_evaluation(dtype):
    """Evaluation (and p=0) returned an int input unchanged: a model's training step gave
    float32 and its evaluation function int32."""
    x = gc.placeholder("x", (3,), dtype)
    want = np.float64 if dtype == "float64" else np.float32
    for training, p in ((True, 0.5), (False, 0.5), (True, 0.0), (True, 1.0)):
        assert F.dropout(x, p, training=training, seed=0).dtype == want
    model = gc.nn.Dropout(0.5)
    assert model(x).dtype == want
    model.eval()
    assert model(x).dtype == want
    got = gc.compile([x], model(x))(np.array([1, 0, 1], dtype))
    assert got.dtype == want
    np.testing.assert_array_equal(got, [1, 0, 1])


@pytest.mark.parametrize("batch", [4, "N"])
def test_batch_norm_of_a_mask_counts_in_floats(batch):
    """A bool input made the element count a bool (True) and the cumulative counter 1:
    running statistics as if each batch held one element."""
    rng = np.random.default_rng(0)
    xs = [rng.random((4, 3)) < 0.5 for _ in range(5)]
    stats = []
    for backend, options in BACKENDS[:2]:
        bn = gc.nn.BatchNorm1d(3, momentum=None)
        with gc.Graph():
            x = gc.placeholder("x", (batch, 3), "bool")
            fn = gc.compile([x], gc.sum(bn(x)), backend=backend, backend_options=options)
        for batch_values in xs:
            fn(batch_values)
        stats.append((bn.running_mean.value, bn.running_var.value))
    floats = np.stack(xs).astype(np.float64)
    want_mean = floats.mean(axis=1).mean(axis=0)  # the cumulative average of batch means
    want_var = floats.var(axis=1, ddof=1).mean(axis=0)
    for mean, var in stats:
        np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
        np.testing.assert_allclose(var, want_var, rtol=1e-6)


@pytest.mark.parametrize("layer", ["RNN", "LSTM", "GRU"])
def test_a_recurrent_layer_fed_float64_computes_in_float64(layer):
    """Its zero initial state had the weights' float32, which the float64 carry refused."""
    module = getattr(gc.nn, layer)(3, 4, batch_first=True, rng=0)
    with gc.Graph():
        x = gc.placeholder("x", ("N", 5, 3), "float64")
        out = module(x)
        out = out[0] if isinstance(out, tuple) else out
        assert out.dtype == np.float64
        value = gc.compile([x], out, backend="llvm")(np.ones((2, 5, 3)))
    assert value.dtype == np.float64 and np.isfinite(value).all()


@pytest.mark.parametrize("build", [lambda a, b: a - b, lambda a, b: -a, lambda a, b: a // b,
                                   lambda a, b: a % b, lambda a, b: gc.sign(a)],
                         ids=["sub", "neg", "floordiv", "mod", "sign"])
def test_arithmetic_numpy_refuses_on_booleans_is_a_graph_error(build):
    a, b = gc.placeholder("a", (4,), "bool"), gc.placeholder("b", (4,), "bool")
    with pytest.raises(gc.GraphError, match="of booleans is not defined"):
        build(a, b)
    i = gc.placeholder("i", (4,), "int32")
    build(i, i)  # (on integers they are defined)


def test_leaky_relu_of_ints_is_float32_as_elu():
    x = gc.placeholder("x", (2,), "int32")
    y = gc.leaky_relu(x, 0.01)
    assert y.dtype == np.float32
    for backend, options in BACKENDS:
        got = gc.compile([x], y, backend=backend, backend_options=options)(
            np.array([-3, 4], np.int32))
        np.testing.assert_allclose(got, [-0.03, 4.0], rtol=1e-6)


def test_max_pooling_a_mask_pads_with_false():
    xs = np.array([[[[True, False, False], [False, False, True], [False, False, False]]]])
    x = gc.placeholder("x", xs.shape, "bool")
    y = F.max_pool2d(x, 2, stride=1, padding=1)
    outs = [gc.compile([x], y, backend=b, backend_options=o)(xs) for b, o in BACKENDS]
    want = np.array([[[[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]]]], bool)
    for out in outs:
        np.testing.assert_array_equal(out, want)


def test_a_float64_mask_is_read_in_the_scores_dtype():
    """-1e39 is finite in float64 and -inf in float32: kept as a bias in float64 and then
    cast, a row of it became NaN; read in float32 it masks the row (output 0)."""
    rng = np.random.default_rng(0)
    mask = np.array([[-1e39, -1e39, -1e39], [0.0, 0.0, 0.0]])
    q, k, v = (gc.placeholder(n, s) for n, s in (("q", (1, 2, 4)), ("k", (1, 3, 4)),
                                                  ("v", (1, 3, 2))))
    y = F.scaled_dot_product_attention(q, k, v, mask=mask)
    feeds = [rng.normal(size=s).astype(np.float32) for s in ((1, 2, 4), (1, 3, 4), (1, 3, 2))]
    for backend, options in BACKENDS[:2]:
        out = gc.compile([q, k, v], y, backend=backend, backend_options=options)(*feeds)
        np.testing.assert_array_equal(out[0, 0], [0.0, 0.0])
        assert np.isfinite(out).all()
