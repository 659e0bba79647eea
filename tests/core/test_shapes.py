"""Shape checking: at construction (with the user's line) and at call time (symbolic dims)."""

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional


def test_broadcast_error_names_op_shapes_and_user_line():
    a = gc.placeholder("a", (3, 4))
    b = gc.placeholder("b", (5,))
    with pytest.raises(gc.ShapeError) as err:
        _ = a + b  # the line the error must point at
    msg = str(err.value)
    assert "add" in msg and "(3, 4)" in msg and "(5,)" in msg
    assert "test_shapes.py" in msg and "_ = a + b" in msg


def test_matmul_and_conv_errors():
    a = gc.placeholder("a", (3, 4))
    with pytest.raises(gc.ShapeError, match="inner dimensions"):
        gc.matmul(a, gc.placeholder("b", (5, 2)))
    x = gc.placeholder("x", (1, 3, 8, 8))
    with pytest.raises(gc.ShapeError, match="channels"):
        F.conv2d(x, gc.placeholder("w", (4, 2, 3, 3)))
    with pytest.raises(gc.ShapeError, match="too small"):
        F.conv2d(x, gc.placeholder("w2", (4, 3, 9, 9)))
    with pytest.raises(gc.ShapeError, match="reshape"):
        a.reshape(5, 2)
    with pytest.raises(gc.ShapeError):
        F.conv2d(gc.placeholder("flat", (3, 8)), gc.placeholder("w3", (4, 3, 3, 3)))


@pytest.mark.parametrize("make", [
    lambda x, w: F.conv1d(x, w, stride=2.0),
    lambda x, w: F.conv1d(x, w, padding=1.0),
    lambda x, w: F.conv1d(x, w, dilation=1.5),
    lambda x, w: F.conv1d(x, w, stride="2"),
    lambda x, w: F.conv1d(x, w, stride=(2, 2)),
    lambda x, w: F.max_pool1d(x, 2.0),
    lambda x, w: F.avg_pool1d(x, 2, stride=1.0),
], ids=["float-stride", "float-padding", "float-dilation", "string", "two-for-one-axis",
        "float-kernel", "float-pool-stride"])
def test_a_geometry_that_is_not_ints_is_a_graph_error(make):
    """As PyTorch, a float geometry is refused; a GraphError naming the argument (it was a
    bare TypeError from taking a float for a tuple)."""
    x = gc.placeholder("x", (2, 3, 8))
    w = gc.placeholder("w", (4, 3, 3))
    with pytest.raises(gc.GraphError, match="must be an int or 1 ints"):
        make(x, w)
    # NumPy integers and tuples of them are ints
    assert F.conv1d(x, w, stride=np.int64(2), padding=(np.int32(1),)).shape == (2, 4, 4)


def test_broadcasting_shapes():
    a = gc.placeholder("a", (2, 1, 4))
    b = gc.placeholder("b", (3, 1))
    assert (a + b).shape == (2, 3, 4)
    assert (a * 2).shape == (2, 1, 4)
    fn = gc.compile([a, b], a - b)
    a_np, b_np = np.arange(8.0).reshape(2, 1, 4), np.arange(3.0).reshape(3, 1)
    np.testing.assert_allclose(fn(a_np, b_np), a_np - b_np)


def test_symbolic_dims_are_bound_at_call_time():
    x = gc.placeholder("x", ("N", 3))
    y = gc.placeholder("y", ("N",))
    out = (x.sum(axis=1) + y).reshape(-1, 1)
    assert str(out.shape[0]) == "N"
    fn = gc.compile([x, y], out)
    for n in (1, 4, 7):
        np.testing.assert_allclose(fn(np.ones((n, 3)), np.ones(n)), np.full((n, 1), 4.0))


def test_symbol_bound_two_ways_names_both_placeholders():
    x = gc.placeholder("x", ("N", 3))
    y = gc.placeholder("y", ("N",))
    fn = gc.compile([x, y], x.sum(axis=1) + y)
    with pytest.raises(gc.ShapeError) as err:
        fn(np.ones((4, 3)), np.ones(5))
    msg = str(err.value)
    assert "'x'" in msg and "'y'" in msg and "4" in msg and "5" in msg


def test_undecidable_facts_are_checked_at_call_time():
    x = gc.placeholder("x", ("N", 3))
    y = gc.placeholder("y", ("M", 3))
    out = x + y  # needs N == M, unknown until the call
    fn = gc.compile([x, y], out)
    np.testing.assert_allclose(fn(np.ones((2, 3)), np.ones((2, 3))), 2 * np.ones((2, 3)))
    with pytest.raises(gc.ShapeError) as err:
        fn(np.ones((2, 3)), np.ones((4, 3)))
    assert "add" in str(err.value) and "test_shapes.py" in str(err.value)


def test_conv_output_size_is_a_symbolic_expression():
    x = gc.placeholder("x", ("N", 1, "H", "W"))
    w = gc.parameter("w", np.ones((2, 1, 3, 3), np.float32))
    y = F.conv2d(x, w, stride=2, padding=1)
    assert "floor" in str(y.shape[2]) or "H" in str(y.shape[2])
    fn = gc.compile([x], y)
    assert fn(np.ones((1, 1, 7, 9), np.float32)).shape == (1, 2, 4, 5)
    small = F.conv2d(x, gc.parameter("w5", np.ones((1, 1, 5, 5), np.float32)))
    fn2 = gc.compile([x], small)
    with pytest.raises(gc.ShapeError, match="too small"):
        fn2(np.ones((1, 1, 3, 3), np.float32))


def test_zero_size_batch():
    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.ones((3, 2), np.float32))
    fn = gc.compile([x], [gc.relu(x @ W), (x @ W).sum(axis=1)])
    a, b = fn(np.zeros((0, 3), np.float32))
    assert a.shape == (0, 2) and b.shape == (0,)


@pytest.mark.parametrize("make,name", [
    (lambda a, img, w: a.mean(axis=2), "mean"),
    (lambda a, img, w: gc.softmax(a, 2), "softmax"),
    (lambda a, img, w: a[5], "getitem"),
    (lambda a, img, w: a.reshape(5, -1), "reshape"),
    (lambda a, img, w: gc.pad(a, ((1, 1), (1, 1), (1, 1))), "pad"),
    (lambda a, img, w: gc.stack([a, a.T]), "stack"),
    (lambda a, img, w: F.conv2d(a, w), "conv2d"),
    (lambda a, img, w: F.conv2d(img, w), "conv2d"),
    (lambda a, img, w: F.max_pool2d(img, 9), "max_pool2d"),
    (lambda a, img, w: F.mse_loss(a, a.T), "mse_loss"),
    (lambda a, img, w: F.cross_entropy(a, gc.placeholder("y", (3, 1), "int64")),
     "cross_entropy"),
])
def test_errors_name_the_function_called_and_the_users_line(make, name):
    a = gc.placeholder("a", (3, 4))
    img = gc.placeholder("img", (1, 4, 8, 8))
    w = gc.placeholder("w", (2, 3, 3, 3))
    with pytest.raises(gc.GraphError) as err:
        make(a, img, w)
    msg = str(err.value)
    assert msg.startswith(f"{name}:") or msg.startswith(f"{name} "), msg
    assert msg.count("created at") == 1, msg
    where = msg.split("created at ")[1]  # the lambda above: the first frame outside graphc
    assert "test_shapes.py" in where and "lambda a, img, w" in where, msg


@pytest.mark.parametrize("backend,options", [("numpy", None), ("llvm", None),
                                             ("cuda", {"emulate": True})],
                         ids=["numpy", "llvm", "cuda"])
def test_zero_size_batch_through_a_whole_cnn_step(backend, options):
    nn = gc.nn
    gc.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.AvgPool2d(2, padding=1), nn.Flatten(), nn.Dropout(0.3),
                          nn.Linear(16, 3))
    x = gc.placeholder("x", ("N", 1, 4, 4))
    y = gc.placeholder("y", ("N",), "int64")
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    grads = gc.grad(loss, model.parameters())
    fn = gc.compile([x, y], [logits, F.max_pool1d(x[:, 0], 2)] + grads, backend=backend,
                    backend_options=options)
    out = fn(np.zeros((0, 1, 4, 4), np.float32), np.zeros(0, np.int64))
    assert out[0].shape == (0, 3) and out[1].shape == (0, 4, 2)
    assert [g.shape for g in out[2:]] == [tuple(p.shape) for p in model.parameters()]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_reductions_over_an_empty_axis(backend):
    """A maximum, minimum or argmax over an axis bound to size 0 has no value: a ShapeError
    naming the op and the size, before any backend runs (the NumPy backend raised NumPy's
    ValueError, the llvm backend returned -inf, inf and 0). Sums, means, logsumexp and
    softmax have values: 0, NaN, -inf and an empty array, on both backends; an empty axis
    that is not reduced is an empty result."""
    empty = np.zeros((0, 4), np.float32)
    x = gc.placeholder("x", ("N", 4))
    for op in (lambda t: t.max(axis=0), lambda t: t.max(), lambda t: gc.min(t, axis=0),
               lambda t: gc.argmax(t, 0), lambda t: gc.argmax(t)):
        fn = gc.compile([x], op(x), backend=backend)
        with pytest.raises(gc.ShapeError, match=r"reduced axis 0 has an element .*N=0"):
            fn(empty)
        assert fn(np.ones((2, 4), np.float32)).shape in ((), (4,))  # (the same function)
    with np.errstate(all="ignore"):
        got = gc.compile([x], [x.sum(axis=0), x.mean(axis=0), gc.logsumexp(x, axis=0),
                               gc.softmax(x, axis=0), x.max(axis=1), gc.argmax(x, 1)],
                         backend=backend)(empty)
    np.testing.assert_array_equal(got[0], np.zeros(4, np.float32))
    assert np.isnan(got[1]).all() and np.isneginf(got[2]).all()
    assert got[3].shape == (0, 4) and got[4].shape == (0,) and got[5].shape == (0,)
    with pytest.raises(gc.ShapeError, match="a maximum over axis 1 of size 0"):
        gc.placeholder("e", (3, 0)).max(axis=1)  # a fixed empty axis: when the graph is built


@pytest.mark.parametrize("backend,options", [("numpy", None), ("llvm", None),
                                             ("cuda", {"emulate": True})],
                         ids=["numpy", "llvm", "cuda"])
def test_a_reshape_with_minus_one_over_a_symbolic_size(backend, options):
    """(N, 4) -> (-1, 8) is (N/2, 8) and (M, 3) -> (-1, 2) is (3M/2, 2): whole numbers for an
    even N or M, which the call checks (a ShapeError naming the size) before any backend
    runs. The NumPy backend once printed such a size as float arithmetic, which NumPy
    refused with a TypeError even for an even N."""
    x = gc.placeholder("x", ("N", 4))
    z = gc.placeholder("z", ("M", 3))
    fn = gc.compile([x, z], [x.reshape(-1, 8) * 2.0, (z.reshape(-1, 2) + 1.0).sum(0)],
                    backend=backend, backend_options=options)
    xs = np.arange(16, dtype=np.float32).reshape(4, 4)
    halves, sums = fn(xs, np.ones((4, 3), np.float32))
    np.testing.assert_array_equal(halves, xs.reshape(2, 8) * 2)
    np.testing.assert_array_equal(sums, [12.0, 12.0])
    with pytest.raises(gc.ShapeError, match=r"the size N/2 made by -1 is a whole number.*N=3"):
        fn(np.ones((3, 4), np.float32), np.ones((4, 3), np.float32))
    with pytest.raises(gc.ShapeError, match=r"3\*M/2 made by -1 is a whole number.*M=3"):
        fn(xs, np.ones((3, 3), np.float32))


@pytest.mark.parametrize("backend,options", [("numpy", None), ("llvm", None),
                                             ("cuda", {"emulate": True})],
                         ids=["numpy", "llvm", "cuda"])
def test_pooling_an_empty_image_is_a_shape_error(backend, options):
    """A spatial size of 0 has no element for a window (PyTorch refuses it too): when the
    graph is built for a fixed size, at the call for a symbolic one, before any backend
    runs. A fuzz found a symbolic size bound to 0 passed (the NumPy backend raised NumPy's
    ValueError, llvm returned an empty array), and a max pooling window of padding alone
    gave -inf on the NumPy backend and 0 on llvm."""
    F = gc.nn.functional
    for pool in (F.max_pool1d, F.avg_pool1d):
        with pytest.raises(gc.ShapeError, match="spatial dim 0 is empty"):
            pool(gc.placeholder("x", (1, 1, 0)), 2, stride=1, padding=1)
        x = gc.placeholder("x", (1, 1, "L"))
        fn = gc.compile([x], pool(x, 3, stride=2, padding=1), backend=backend,
                        backend_options=options)
        assert fn(np.ones((1, 1, 5), np.float32)).shape == (1, 1, 3)
        with pytest.raises(gc.ShapeError, match=r"spatial dim 0 has an element.*L=0"):
            fn(np.zeros((1, 1, 0), np.float32))
    image = gc.placeholder("img", ("N", 1, "H", "W"))
    fn = gc.compile([image], F.max_pool2d(image, 2), backend=backend, backend_options=options)
    assert fn(np.ones((0, 1, 4, 4), np.float32)).shape == (0, 1, 2, 2)  # an empty batch: fine
    with pytest.raises(gc.ShapeError, match="spatial dim 1 has an element"):
        fn(np.ones((2, 1, 4, 0), np.float32))


def _symbolic_channel_steps():
    """(name, build(x_shape) -> (x, loss, params)) of convolutions whose channel count is
    a symbol on one side and a number on the other."""
    from graphc.nn import functional as F

    def rng():  # the same weights for both shapes
        return np.random.default_rng(0)

    def conv2d(shape):
        x = gc.placeholder("x", shape)
        w = gc.parameter("w", rng().normal(size=(4, 3, 3, 3)).astype(np.float32))
        return x, (F.conv2d(x, w, padding=1) ** 2).mean(), [w]

    def conv1d(shape):
        x = gc.placeholder("x", shape[:3])
        w = gc.parameter("w", rng().normal(size=(4, 3, 3)).astype(np.float32))
        return x, (F.conv1d(x, w, stride=2) ** 2).mean(), [w]

    def transpose(shape):
        x = gc.placeholder("x", shape)
        w = gc.parameter("w", rng().normal(size=(3, 5, 3, 3)).astype(np.float32))
        return x, (F.conv_transpose2d(x, w, stride=2) ** 2).mean(), [w]

    return [("conv2d", conv2d), ("conv1d", conv1d), ("conv_transpose2d", transpose)]


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("name,build", _symbolic_channel_steps(),
                         ids=[n for n, _ in _symbolic_channel_steps()])
def test_a_channel_count_left_symbolic_still_differentiates(name, build, backend):
    """An input (N, "C", ...) into a layer of 3 channels: its gradients have the operands'
    own shapes (the grad rule's had the other side's name for C), the training step matches
    the one with C written as 3, and another C is a ShapeError at the call."""
    data = np.random.default_rng(1).normal(size=(2, 3, 6, 6)).astype(np.float32)
    data = data[..., 0] if name == "conv1d" else data
    results = []
    for shape in [("N", "C", 6, 6), ("N", 3, 6, 6)]:
        with gc.Graph():
            x, loss, params = build(shape)
            grads = gc.grad(loss, [x, *params])
            assert [tuple(g.shape) for g in grads] == [tuple(t.shape) for t in [x, *params]]
            fn = gc.compile([x], [loss, *grads], backend=backend)
            results.append(fn(data))
            if shape[1] == "C":  # (the message says where C came from)
                with pytest.raises(gc.ShapeError, match=r"C is axis 1 of input 'x' .*fed as "
                                                        r"\(2, 6, 6"):
                    fn(np.concatenate([data, data], axis=1))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["conv1d", "conv2d", "conv_transpose2d"])
def test_an_empty_kernel_is_a_shape_error(op):
    from graphc.nn import functional as F

    nd = 1 if op == "conv1d" else 2
    x = gc.placeholder("x", (2, 3) + (8,) * nd)
    w = gc.placeholder("w", ((3, 4) if op == "conv_transpose2d" else (4, 3)) + (0, 3)[:nd])
    with pytest.raises(gc.ShapeError, match="at least 1"):
        getattr(F, op)(x, w)
