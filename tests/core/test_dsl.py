"""The Tensor handle and the DSL: operators, dtype promotion, indexing, graphs."""

import numpy as np
import pytest

import graphc as gc


def run(inputs, outputs, *arrays):
    return gc.compile(inputs, outputs)(*arrays)


def test_operators_match_numpy(rng):
    a_np, b_np = rng.normal(size=(3, 4)).astype(np.float32), rng.uniform(1, 2, (4,)).astype(
        np.float32)
    a, b = gc.placeholder("a", (3, 4)), gc.placeholder("b", (4,))
    exprs = [a + b, a - b, a * b, a / b, b**2, -a, a @ a.T, 2 * a, a + 1.0, 1.0 - a, 3 / b,
             (a < 0), (a <= 0), (a > 0), (a >= 0), abs(a)]
    got = run([a, b], exprs, a_np, b_np)
    want = [a_np + b_np, a_np - b_np, a_np * b_np, a_np / b_np, b_np**2, -a_np, a_np @ a_np.T,
            2 * a_np, a_np + 1, 1 - a_np, 3 / b_np, a_np < 0, a_np <= 0, a_np > 0, a_np >= 0,
            np.abs(a_np)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)
        assert g.dtype == w.dtype


def test_tensor_methods(rng):
    x_np = rng.normal(size=(2, 3, 4)).astype(np.float32)
    x = gc.placeholder("x", (2, 3, 4))
    outs = [x.sum(), x.sum(axis=1), x.mean(axis=(0, 2), keepdims=True), x.max(axis=-1), x.min(),
            x.reshape(6, 4), x.reshape((4, -1)), x.T, x[:, 1:3], x[0], x[..., ::2], x[None, 1]]
    got = run([x], outs, x_np)
    want = [x_np.sum(), x_np.sum(1), x_np.mean((0, 2), keepdims=True), x_np.max(-1), x_np.min(),
            x_np.reshape(6, 4), x_np.reshape(4, -1), x_np.T, x_np[:, 1:3], x_np[0],
            x_np[..., ::2], x_np[None, 1]]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5)


def test_tensor_properties():
    x = gc.placeholder("x", ("N", 3), "float64")
    assert x.dtype == np.float64 and x.name == "x" and x.graph is gc.get_default_graph()
    assert str(x.shape[0]) == "N" and x.shape[1] == 3
    W = gc.parameter("W", np.arange(6.0).reshape(2, 3))
    np.testing.assert_array_equal(W.value, np.arange(6.0).reshape(2, 3))
    snapshot = W.value
    snapshot[0, 0] = 100  # a copy: the parameter is untouched
    assert W.value[0, 0] == 0
    with pytest.raises(gc.GraphError):
        _ = x.value


@pytest.mark.parametrize(
    "make, dtype",
    [
        (lambda f32, f64, i32, i64, b: f32 + f64, "float64"),
        (lambda f32, f64, i32, i64, b: i32 + f32, "float32"),
        (lambda f32, f64, i32, i64, b: i32 + i64, "int64"),
        (lambda f32, f64, i32, i64, b: b + i32, "int32"),
        (lambda f32, f64, i32, i64, b: f32 * 2.5, "float32"),
        (lambda f32, f64, i32, i64, b: i32 + 1, "int32"),
        (lambda f32, f64, i32, i64, b: i64 * 1.5, "float32"),
        (lambda f32, f64, i32, i64, b: i32 / 2, "float32"),
        (lambda f32, f64, i32, i64, b: gc.exp(i64), "float32"),
        (lambda f32, f64, i32, i64, b: f64 < f32, "bool"),
        (lambda f32, f64, i32, i64, b: gc.sum(b), "int64"),
        (lambda f32, f64, i32, i64, b: np.float64(2.0) * f32, "float32"),
    ],
)
def test_dtype_promotion(make, dtype):
    ts = [gc.placeholder(n, (2,), d) for n, d in
          [("f32", "float32"), ("f64", "float64"), ("i32", "int32"), ("i64", "int64"),
           ("b", "bool")]]
    assert make(*ts).dtype == np.dtype(dtype)


def test_graph_context_and_default_graph():
    with gc.Graph("mine") as g:
        x = gc.placeholder("x", (2,))
        y = x * 2
    assert x.graph is g and y.graph is g
    outside = gc.placeholder("z", (2,))
    assert outside.graph is gc.get_default_graph() and outside.graph is not g
    with pytest.raises(gc.GraphError, match="different graphs"):
        _ = x + outside


def test_parameters_created_outside_work_in_any_graph_block():
    """Ops on parameters alone (a bias reshape, a running-statistics decay, a dropout state's
    step) join the active graph block, so a model built once can be called in any graph."""
    F = gc.nn.functional
    w = gc.parameter("w", np.ones((2, 1, 3, 3), np.float32))
    b = gc.parameter("b", np.array([1.0, -1.0], np.float32))
    mean = gc.parameter("mean", np.zeros(2, np.float32))
    var = gc.parameter("var", np.ones(2, np.float32))
    state = gc.rng_state(3)
    with gc.Graph("elsewhere") as g:
        x = gc.placeholder("x", ("N", 1, 4, 4))
        y = F.batch_norm(F.conv2d(x, w, b), None, None, mean, var, training=True)
        out = F.dropout(y, 0.5, training=True, state=state)
        assert out.graph is g
        fn = gc.compile([x], out)
    assert {p.name for p, _ in fn.graph.updates} == {"mean", "var", "rng"}
    fn(np.ones((2, 1, 4, 4), np.float32))
    assert state.value[1] == 1 and not np.allclose(mean.value, 0)


def test_placeholder_names_may_repeat_in_a_graph():
    a = gc.placeholder("x", (2,))
    b = gc.placeholder("x", (2,))  # re-running a notebook cell
    assert a != b
    fn = gc.compile([b], b * 3)
    np.testing.assert_allclose(fn(np.ones(2)), 3 * np.ones(2))
    with pytest.raises(gc.GraphError, match="unique"):
        gc.compile([a, b], a + b)


def test_hash_consing_shares_identical_nodes():
    x = gc.placeholder("x", (3,))
    assert (x * 2).node is (x * 2).node
    assert gc.exp(x).node is gc.exp(x).node
    assert (x * 2).node is not (x * 3).node


def test_symbolic_tensor_has_no_truth_value():
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.GraphError, match="truth value"):
        bool(x > 0)
    with pytest.raises(gc.GraphError):
        list(x)


def test_dynamic_indexing_is_rejected_clearly():
    x = gc.placeholder("x", (3, 4))
    with pytest.raises(gc.GraphError, match="static indexing"):
        _ = x[np.array([0, 1])]
    with pytest.raises(gc.ShapeError, match="out of range"):
        _ = x[5]


def test_parameters_keep_and_share_values():
    W = gc.parameter("W", np.ones((2, 2), np.float32))
    x = gc.placeholder("x", (2, 2))
    f1 = gc.compile([x], x @ W)
    f2 = gc.compile([x], x + W)
    W.value = np.full((2, 2), 2.0)
    np.testing.assert_allclose(f1(np.eye(2)), 2 * np.ones((2, 2)))
    np.testing.assert_allclose(f2(np.zeros((2, 2))), 2 * np.ones((2, 2)))
    with pytest.raises(gc.ShapeError):
        W.value = np.ones(3)


def test_float64_numpy_values_become_float32_only_when_python_floats():
    assert gc.constant(1.5).dtype == np.float32
    assert gc.constant(np.float64(1.5)).dtype == np.float64
    assert gc.constant(np.ones(2)).dtype == np.float64
    assert gc.constant(3).dtype == np.int64


def test_shape_ops_and_the_layers_using_them_take_numpy_arrays():
    """reshape, transpose and pad raised an AttributeError on an array (so did a convolution
    with a NumPy bias and an eval-mode batch norm with NumPy statistics); every other op
    makes an array a constant."""
    F = gc.nn.functional
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    x = gc.placeholder("x", ("N", 2, 5, 5))
    w = gc.constant(np.ones((4, 2, 3, 3), np.float32))
    stats = [np.full(2, v, np.float32) for v in (2.0, 0.5, 1.0, 4.0)]
    from graphc.ops.shape_ops import broadcast_to, expand_dims, flatten

    outs = [gc.reshape(a, (3, 2)), gc.transpose(a), gc.pad(a, 1), expand_dims(a, 0),
            flatten(a[None], 1), broadcast_to(a, (2, 2, 3)),
            F.conv2d(x, w, np.arange(4, dtype=np.float32)),
            F.batch_norm(x, *stats, training=False)]
    feed = np.random.default_rng(0).normal(size=(2, 2, 5, 5)).astype(np.float32)
    got = gc.compile([x], outs)(feed)
    want = [a.reshape(3, 2), a.T, np.pad(a, 1), a[None], a.reshape(1, 6),
            np.broadcast_to(a, (2, 2, 3))]
    for g, v in zip(got, want):
        np.testing.assert_array_equal(g, v)
    assert got[6].shape == (2, 4, 3, 3) and got[6][0, 3, 0, 0] != got[6][0, 0, 0, 0]
    np.testing.assert_allclose(got[7], 2.0 * (feed - 1.0) / np.sqrt(4.0 + 1e-5) + 0.5,
                               rtol=1e-5)
