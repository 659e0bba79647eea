"""gc.nn modules: forward values against NumPy, naming and scopes, modes, state."""

import numpy as np
import pytest

import graphc as gc

nn = gc.nn


def _flat(value):
    for v in value:
        yield from (_flat(v) if isinstance(v, tuple) else (v,))


def run(module, *arrays, dtypes=None):
    """Call `module` on placeholders fed with `arrays` in a fresh graph; returns its output(s)
    and the compiled function."""
    with gc.Graph("t"):
        dtypes = dtypes or [a.dtype for a in arrays]
        phs = [gc.placeholder(f"in{i}", ("N",) + a.shape[1:], d)
               for i, (a, d) in enumerate(zip(arrays, dtypes))]
        out = module(*phs)
        outs = list(_flat(out)) if isinstance(out, tuple) else out
        fn = gc.compile(phs, outs)
    return fn(*arrays), fn


def test_linear_matches_numpy_and_torch_default_init():
    lin = nn.Linear(20, 5, rng=0)
    assert lin.weight.shape == (20, 5) and lin.bias.shape == (5,)
    bound = 1 / np.sqrt(20)
    assert np.abs(lin.weight.value).max() <= bound and np.abs(lin.bias.value).max() <= bound
    assert np.abs(lin.weight.value).max() > 0.8 * bound  # uniform over the whole range
    x = np.random.default_rng(0).standard_normal((4, 20)).astype(np.float32)
    y, _ = run(lin, x)
    np.testing.assert_allclose(y, x @ lin.weight.value + lin.bias.value, rtol=1e-5, atol=1e-6)
    assert np.array_equal(nn.Linear(20, 5, rng=0).weight.value, lin.weight.value)


def test_default_seeds_follow_manual_seed():
    gc.manual_seed(7)
    a = nn.Linear(3, 3).weight.value
    gc.manual_seed(7)
    b = nn.Linear(3, 3).weight.value
    c = nn.Linear(3, 3).weight.value
    assert np.array_equal(a, b) and not np.array_equal(b, c)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3, padding=1, rng=0)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5, rng=1), nn.Linear(8, 3, rng=2))

    def forward(self, x):
        return self.head(gc.relu(self.bn(gc.nn.functional.max_pool2d(self.conv1(x), 2))))


def test_qualified_names_scopes_and_state():
    net = Net()
    assert [n for n, _ in net.named_parameters()] == [
        "conv1.weight", "conv1.bias", "bn.weight", "bn.bias", "head.2.weight", "head.2.bias"]
    assert [n for n, _ in net.named_buffers()] == [
        "bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "head.1.rng"]
    assert net.conv1.weight.name == "conv1.weight"  # parameters display their place
    assert net.num_parameters() == 2 * 9 + 2 + 2 + 2 + 8 * 3 + 3
    _, fn = run(net, np.zeros((2, 1, 4, 4), np.float32))
    scopes = {n.scope for n in fn.graph.nodes}
    assert {"net/conv1/conv2d", "net/bn/batch_norm", "net/head/linear_2/linear"} <= scopes
    net.name = "model"
    assert net.conv1.weight.name == "model.conv1.weight"
    assert "conv1.weight" in net.state()  # state keys stay relative, as PyTorch's


def test_load_state_checks_everything_before_writing():
    a, b = Net(), Net()
    b.load_state(a.state())
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert np.array_equal(p.value, q.value), name
    before = b.conv1.weight.value
    bad = a.state()
    bad["head.2.weight"] = np.zeros((3, 3), np.float32)
    bad["conv1.weight"] = np.ones_like(bad["conv1.weight"])
    with pytest.raises(gc.ShapeError, match="head.2.weight"):
        b.load_state(bad)
    assert np.array_equal(b.conv1.weight.value, before)
    with pytest.raises(gc.GraphError, match="missing keys"):
        b.load_state({"conv1.weight": before})


def test_train_eval_modes_are_recursive_and_read_at_call_time():
    net = Net().eval()
    assert not net.head[1].training and not net.bn.training
    x = np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(np.float32)
    (y1, fn) = run(net, x)
    assert fn.graph.updates == []  # eval: no running statistics, no random state
    np.testing.assert_array_equal(y1, run(net, x)[0])
    net.train()
    _, fn_train = run(net, x)
    assert {p.name for p, _ in fn_train.graph.updates} == {
        "bn.running_mean", "bn.running_var", "bn.num_batches_tracked", "head.1.rng"}


def test_batchnorm_train_vs_eval_and_running_statistics():
    bn = nn.BatchNorm1d(3, momentum=0.2)
    bn.weight.value = np.array([1.0, 2.0, 0.5], np.float32)
    bn.bias.value = np.array([0.0, 1.0, -1.0], np.float32)
    x = np.random.default_rng(0).normal(3.0, 2.0, (10, 3)).astype(np.float32)
    y, _ = run(bn, x)
    norm = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
    np.testing.assert_allclose(y, norm * bn.weight.value + bn.bias.value, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(bn.running_mean.value, 0.2 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var.value, 0.8 + 0.2 * x.var(0, ddof=1), rtol=1e-5)
    bn.eval()
    rm, rv = bn.running_mean.value, bn.running_var.value
    y_eval, fn = run(bn, x)
    np.testing.assert_allclose(y_eval, (x - rm) / np.sqrt(rv + 1e-5) * bn.weight.value
                               + bn.bias.value, rtol=1e-4, atol=1e-4)
    assert np.array_equal(bn.running_mean.value, rm)  # eval leaves the statistics alone
    with pytest.raises(gc.ShapeError, match="BatchNorm2d expects input of rank 4"):
        run(nn.BatchNorm2d(3), x)


def test_dropout_train_vs_eval():
    drop = nn.Dropout(0.25, rng=3)
    x = np.ones((200, 50), np.float32)
    with gc.Graph():
        ph = gc.placeholder("x", ("N", 50))
        f_train = gc.compile([ph], drop(ph))
        drop.eval()
        f_eval = gc.compile([ph], drop(ph))
    a, b = f_train(x), f_train(x)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}
    assert abs((a == 0).mean() - 0.25) < 0.02
    assert not np.array_equal(a, b)  # the state advanced between calls
    assert int(drop.rng.value[1]) == 2
    np.testing.assert_array_equal(f_eval(x), x)


def conv2d_numpy(x, w, b, stride=1, padding=0):
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    n, _, h, wd = x.shape
    co, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, co, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw]
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + b.reshape(1, -1, 1, 1)


def test_conv_layers_match_numpy():
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0)
    fan_in = 3 * 9
    assert np.abs(conv.weight.value).max() <= 1 / np.sqrt(fan_in)
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 7)).astype(np.float32)
    y, _ = run(conv, x)
    np.testing.assert_allclose(y, conv2d_numpy(x, conv.weight.value, conv.bias.value, 2, 1),
                               rtol=1e-4, atol=1e-5)
    c1 = nn.Conv1d(2, 3, 3, rng=0)
    x1 = np.random.default_rng(1).standard_normal((2, 2, 6)).astype(np.float32)
    y1, _ = run(c1, x1)
    ref = conv2d_numpy(x1[:, :, None, :], c1.weight.value[:, :, None, :], c1.bias.value)
    np.testing.assert_allclose(y1, ref[:, :, 0, :], rtol=1e-4, atol=1e-5)


def test_conv_transpose_is_the_adjoint_of_conv():
    up = nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1, bias=False, rng=0)
    assert up.weight.shape == (4, 2, 3, 3)
    x = np.random.default_rng(0).standard_normal((1, 4, 3, 3)).astype(np.float64)
    y, _ = run(up, x.astype(np.float32))
    assert y.shape == (1, 2, 6, 6)
    # <conv_transpose(x), z> == <x, conv(z)> with the same weight
    z = np.random.default_rng(1).standard_normal((1, 2, 6, 6))
    w = up.weight.value.astype(np.float64)
    down = conv2d_numpy(z, w, np.zeros(4), stride=2, padding=1)
    assert np.sum(y * z) == pytest.approx(np.sum(x * down[:, :, :3, :3]), rel=1e-4)


def test_pooling_layers():
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    y, _ = run(nn.MaxPool2d(2), x)
    np.testing.assert_array_equal(y, x.reshape(1, 2, 2, 2, 2, 2).max(axis=(3, 5)))
    y, _ = run(nn.AvgPool2d(2), x)
    np.testing.assert_allclose(y, x.reshape(1, 2, 2, 2, 2, 2).mean(axis=(3, 5)))
    y, _ = run(nn.MaxPool1d(2), x[:, :, 0, :])
    np.testing.assert_array_equal(y, x[:, :, 0, :].reshape(1, 2, 2, 2).max(-1))


def test_activations():
    x = np.array([[-2.0, -0.5, 0.0, 1.5]], np.float32)
    for module, ref in [(nn.ReLU(), np.maximum(x, 0)), (nn.Tanh(), np.tanh(x)),
                        (nn.Sigmoid(), 1 / (1 + np.exp(-x))),
                        (nn.LeakyReLU(0.1), np.where(x > 0, x, 0.1 * x)),
                        (nn.ELU(), np.where(x > 0, x, np.expm1(x))),
                        (nn.PReLU(), np.where(x > 0, x, 0.25 * x)),
                        (nn.Softmax(), np.exp(x) / np.exp(x).sum())]:
        np.testing.assert_allclose(run(module, x)[0], ref, rtol=1e-5, err_msg=type(module).__name__)


def test_prelu_slope_is_learned_per_channel():
    act = nn.PReLU(2)
    assert act.parameters() == [act.weight]
    x = np.array([[[-1.0, 2.0]], [[-3.0, -1.0]]], np.float32).transpose(1, 0, 2)  # (1, 2, 2)
    with gc.Graph():
        ph = gc.placeholder("x", ("N", 2, 2))
        y = act(ph)
        (g,) = gc.grad(gc.sum(y), [act.weight])
        out, grad = gc.compile([ph], [y, g])(x)
    np.testing.assert_allclose(out, np.where(x > 0, x, 0.25 * x))
    np.testing.assert_allclose(grad, [-1.0, -4.0])  # sum of the negative inputs per channel


def test_maxout():
    m = nn.Maxout(3, 2, pieces=4, rng=0)
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    z = x @ m.weight.value + m.bias.value
    np.testing.assert_allclose(run(m, x)[0], z.reshape(5, 2, 4).max(-1), rtol=1e-5)


def test_embedding():
    emb = nn.Embedding(10, 3, rng=0)
    ids = np.array([[1, 2], [9, 1]], np.int64)
    out, _ = run(emb, ids)
    np.testing.assert_array_equal(out, emb.weight.value[ids])


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_rnn_lstm_gru_match_numpy_recurrences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4, 2)).astype(np.float32)  # (N, T, F): batch_first
    H = 5

    def params(m, k=0):
        return tuple(getattr(m, f"{n}_l{k}").value
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))

    rnn = nn.RNN(2, H, batch_first=True, rng=0, unroll=True)
    (outs, last), fn = run(rnn, x)
    Wi, Wh, bi, bh = params(rnn)
    h = np.zeros((3, H))
    for t in range(4):
        h = np.tanh(x[:, t] @ Wi + bi + h @ Wh + bh)
        np.testing.assert_allclose(outs[:, t], h, rtol=1e-4, atol=1e-5)
    assert last.shape == (1, 3, H)  # h_n: (num_layers, N, hidden)
    np.testing.assert_allclose(last[0], h, rtol=1e-4, atol=1e-5)
    assert {"rnn/t0", "rnn/t3"} <= {n.scope for n in fn.graph.nodes}

    lstm = nn.LSTM(2, H, batch_first=True, rng=1)
    (outs, h_last, c_last), _ = run(lstm, x)
    Wi, Wh, bi, bh = params(lstm)
    h, c = np.zeros((3, H)), np.zeros((3, H))
    for t in range(4):
        i, f, g, o = np.split(x[:, t] @ Wi + bi + h @ Wh + bh, 4, axis=1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
    np.testing.assert_allclose(outs[:, -1], h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(h_last[0], h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c_last[0], c, rtol=1e-4, atol=1e-5)

    gru = nn.GRU(2, H, batch_first=True, rng=2)
    (outs, last), _ = run(gru, x)
    Wi, Wh, bi, bh = params(gru)
    h = np.zeros((3, H))
    for t in range(4):
        xr, xz, xn = np.split(x[:, t] @ Wi + bi, 3, axis=1)
        hr, hz, hn = np.split(h @ Wh + bh, 3, axis=1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        h = (1 - z) * np.tanh(xn + r * hn) + z * h
    np.testing.assert_allclose(last[0], h, rtol=1e-4, atol=1e-5)


def test_rnn_pytorch_layout_layers_and_initial_state():
    """Default (T, N, F) layout, two stacked layers, an initial state, PyTorch's keys."""
    rng = np.random.default_rng(3)
    T, N, F_, H = 4, 3, 2, 5
    x = rng.standard_normal((T, N, F_)).astype(np.float32)
    h0 = rng.standard_normal((2, N, H)).astype(np.float32)
    rnn = nn.RNN(F_, H, num_layers=2, rng=0)
    assert set(rnn.state()) == {f"{w}_l{k}" for w in ("weight_ih", "weight_hh", "bias_ih",
                                                      "bias_hh") for k in (0, 1)}
    assert rnn.weight_ih_l1.shape == (H, H)
    with gc.Graph():
        xs = gc.placeholder("x", (T, "N", F_))
        hs = gc.placeholder("h0", (2, "N", H))
        out, h_n = rnn(xs, hs)
        assert out.shape[0] == T and h_n.shape[0] == 2
        got_out, got_h = gc.compile([xs, hs], [out, h_n])(x, h0)
    seq = x
    for k in range(2):
        Wi, Wh, bi, bh = (getattr(rnn, f"{n}_l{k}").value
                          for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        h, outs = h0[k], []
        for t in range(T):
            h = np.tanh(seq[t] @ Wi + bi + h @ Wh + bh)
            outs.append(h)
        np.testing.assert_allclose(got_h[k], h, rtol=1e-4, atol=1e-5)
        seq = np.stack(outs)
    np.testing.assert_allclose(got_out, seq, rtol=1e-4, atol=1e-5)
    with gc.Graph():
        with pytest.raises(gc.ShapeError, match="num_layers=2"):
            rnn(gc.placeholder("x", (T, "N", F_)), gc.placeholder("h0", ("N", H)))
        with pytest.raises(gc.GraphError, match="pair"):
            nn.LSTM(F_, H)(gc.placeholder("x", (T, "N", F_)), gc.placeholder("h", (1, "N", H)))


def test_an_unrolled_rnn_needs_a_static_sequence_length():
    with gc.Graph():
        x = gc.placeholder("x", ("T", "N", 2))
        with pytest.raises(gc.GraphError, match="static sequence length"):
            nn.RNN(2, 3, unroll=True)(x)


def test_residual_block_keeps_or_projects_the_shortcut():
    same = nn.ResidualBlock(4, rng=0)
    assert same.projection is None
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6)).astype(np.float32)
    y, _ = run(same, x)
    assert y.shape == x.shape and (y >= 0).all()
    down = nn.ResidualBlock(4, 8, stride=2, rng=0)
    y, _ = run(down, x)
    assert y.shape == (2, 8, 3, 3)
    assert "projection.weight" in dict(down.named_parameters())
    plain = nn.ResidualBlock(4, 8, stride=2, skip=False, rng=0)
    assert plain.projection is None
    np.testing.assert_allclose(run(plain, x)[0], np.maximum(  # the same layers, no shortcut
        run(nn.Sequential(down.conv1, down.bn1, nn.ReLU(), down.conv2, down.bn2), x)[0], 0),
        rtol=1e-5, atol=1e-6)


def test_module_errors_are_clear():
    class Forgot(nn.Module):
        def __init__(self):
            self.w = 1

    with pytest.raises(gc.GraphError, match=r"super\(\)\.__init__"):
        Forgot()
    with pytest.raises(gc.GraphError, match="Sequential takes modules"):
        nn.Sequential(nn.ReLU(), 3)
    with pytest.raises(NotImplementedError):
        nn.Module()(gc.placeholder("x", (2,)))


def test_init_functions():
    rng = np.random.default_rng(0)
    w = gc.init.glorot_uniform((300, 200), rng)
    assert w.dtype == np.float32 and np.abs(w).max() <= np.sqrt(6 / 500)
    assert gc.init.glorot_normal((300, 200), rng).std() == pytest.approx(np.sqrt(2 / 500), rel=0.05)
    assert np.abs(gc.init.he_uniform((300, 200), rng)).max() <= np.sqrt(6 / 300)
    assert gc.init.he_normal((64, 32, 3, 3), rng).std() == pytest.approx(
        np.sqrt(2 / (32 * 9)), rel=0.05)
    assert gc.init.fans((8, 4, 3, 3)) == (36, 72) and gc.init.fans((5, 7)) == (5, 7)
    assert not gc.init.zeros((2, 2)).any() and gc.init.ones(3).sum() == 3
    assert np.array_equal(gc.init.glorot_uniform((3, 3), 5), gc.init.glorot_uniform((3, 3), 5))
    with pytest.raises(gc.GraphError, match="rng"):
        gc.init.he_normal((3, 3), "seed")


def test_state_keys_are_in_depth_first_order_like_pytorch():
    class Inner(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(2, 2, rng=0)
            self.b = nn.Linear(2, 2, rng=1)

    class Outer(nn.Module):
        def __init__(self):
            super().__init__()
            self.first = Inner()
            self.second = nn.Linear(2, 1, rng=2)

    assert list(Outer().state()) == ["first.a.weight", "first.a.bias", "first.b.weight",
                                     "first.b.bias", "second.weight", "second.bias"]


def test_a_batch_norm_layer_called_twice_updates_its_statistics_twice():
    """As two calls of a PyTorch module: the second update starts from the first's result."""
    bn = nn.BatchNorm1d(2)
    with gc.Graph():
        x = gc.placeholder("x", ("N", 2))
        gc.compile([x], [bn(x), bn(x * 2)])(np.array([[0, 0], [2, 4]], np.float32))
    m1, v1 = 0.1 * np.array([1, 2]), 0.9 + 0.1 * np.array([2, 8])
    np.testing.assert_allclose(bn.running_mean.value, 0.9 * m1 + 0.1 * np.array([2, 4]))
    np.testing.assert_allclose(bn.running_var.value, 0.9 * v1 + 0.1 * np.array([8, 32]),
                               rtol=1e-6)
    assert bn.num_batches_tracked.value == 2


def test_batch_norm_momentum_none_is_a_cumulative_average():
    bn = nn.BatchNorm1d(2, momentum=None)
    batches = [np.random.default_rng(k).standard_normal((4, 2)).astype(np.float32)
               for k in range(3)]
    with gc.Graph():
        x = gc.placeholder("x", ("N", 2))
        fn = gc.compile([x], bn(x))
    for b in batches:
        fn(b)
    assert bn.num_batches_tracked.value == 3
    np.testing.assert_allclose(bn.running_mean.value, np.mean([b.mean(0) for b in batches], 0),
                               rtol=1e-5)
    with pytest.raises(gc.GraphError, match="num_batches_tracked"):
        gc.nn.functional.batch_norm(x, None, None, bn.running_mean, bn.running_var, True,
                                    momentum=None)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_a_batch_of_one_value_per_channel_leaves_the_running_statistics(backend, momentum):
    """fit's last partial batch of one example: its variance (n - 1 = 0) is undefined, and
    blending a 0 in pulled running_var down by the momentum every epoch. PyTorch refuses
    such a batch; here it leaves the statistics and the count alone, and a fixed shape of one
    value per channel is a ShapeError."""
    bn = nn.BatchNorm1d(3, momentum=momentum)
    with gc.Graph():
        x = gc.placeholder("x", ("N", 3))
        fn = gc.compile([x], bn(x), backend=backend)
    rng = np.random.default_rng(0)
    fn(rng.standard_normal((8, 3)).astype(np.float32))
    state = [bn.running_mean.value.copy(), bn.running_var.value.copy(),
             int(bn.num_batches_tracked.value)]
    fn(rng.standard_normal((1, 3)).astype(np.float32))
    np.testing.assert_array_equal(bn.running_mean.value, state[0])
    np.testing.assert_array_equal(bn.running_var.value, state[1])
    assert int(bn.num_batches_tracked.value) == state[2] == 1
    fn(rng.standard_normal((2, 3)).astype(np.float32))  # two values: counted
    assert int(bn.num_batches_tracked.value) == 2
    assert not np.array_equal(bn.running_var.value, state[1])
    with gc.Graph():
        one = gc.placeholder("one", (1, 3))
        with pytest.raises(gc.ShapeError, match="more than one value per channel"):
            bn(one)
    # SyncBatchNorm: one example per process is fine (the processes' sum counts); alone,
    # the batch of one leaves the statistics as they are
    sync = nn.SyncBatchNorm(3)
    with gc.Graph():
        one = gc.placeholder("one", (1, 3))
        step = gc.compile([one], sync(one), backend=backend)
    before = sync.running_var.value.copy()
    step(np.ones((1, 3), np.float32))
    np.testing.assert_array_equal(sync.running_var.value, before)


def test_layer_sizes_and_seeds_of_numpy_types():
    conv = nn.Conv2d(np.int64(1), np.int64(2), np.int64(3), stride=np.int32(1))
    assert conv.weight.shape == (2, 1, 3, 3) and conv.kernel_size == (3, 3)
    a = gc.init.glorot_uniform((3, 4), np.random.RandomState(0))
    b = gc.init.glorot_uniform((3, 4), np.random.RandomState(0))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("geom", [
    dict(stride=1, padding=1, output_padding=1, dilation=2),
    dict(stride=(1, 2), padding=(2, 1), output_padding=(1, 1), dilation=(3, 1)),
    dict(stride=2, padding=1, output_padding=1),
], ids=["stride1-dilated", "mixed", "stride2"])
def test_conv_transpose_gradients_with_output_padding(geom):
    """An output larger than the minimum reaches past the input when the extra is at least
    the stride (possible with dilation): the gradients drop (dg) and zero-pad (dw) those
    positions. Checked against central differences, with a symbolic batch."""
    from graphc.gradcheck import check_grad

    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal((3, 2, 3, 3))
    weights = rng.standard_normal((2, 2, 32, 32))

    def f(ts):
        y = gc.nn.functional.conv_transpose2d(ts[0], ts[1], **geom)
        h, v = y.shape[2], y.shape[3]
        return (gc.tanh(y) * gc.constant(weights[:, :, :h, :v])).sum()

    check_grad(f, [x, w], shapes=[("N", 3, 4, 5), None])


@pytest.mark.parametrize("geom, x_shape, w_shape", [
    (dict(output_padding=1, dilation=2), (2, 1, 5), (1, 2, 1)),
    (dict(output_padding=2, dilation=3), (2, 5, 4), (5, 3, 1)),
    (dict(output_padding=(1, 0), dilation=(2, 1)), (2, 3, 4, 5), (3, 2, 1, 1)),
], ids=["1d", "1d-wide", "2d"])
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_1x1_transposed_convolution_keeps_its_output_padding(geom, x_shape, w_shape, backend):
    """A 1x1 kernel of stride 1 with output_padding (allowed with a dilation): the output
    is the channels' product at the input's positions and zeros past them. Both backends
    took it for a product alone: the NumPy backend returned the input's size, the llvm
    backend wrote the product with the wrong row stride."""
    rng = np.random.default_rng(0)
    xv, wv = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    conv_t = (gc.nn.functional.conv_transpose1d if len(x_shape) == 3 else
              gc.nn.functional.conv_transpose2d)
    x = gc.placeholder("x", ("N", *x_shape[1:]), "float64")
    w = gc.placeholder("w", w_shape, "float64")
    y = conv_t(x, w, **geom)
    got = gc.compile([x, w], y, backend=backend)(xv, wv)
    want = np.zeros(tuple(int(d) if i else x_shape[0] for i, d in enumerate(y.shape)))
    product = np.einsum("nc...,co...->no...", xv, wv)  # (1x1: the kernel's one tap)
    want[(slice(None), slice(None), *[slice(0, s) for s in x_shape[2:]])] = product
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_state_is_in_pytorch_order_and_a_slice_of_a_sequential_is_one(tmp_path):
    """state() went all parameters first, then all buffers: zipped with a torch state_dict
    it paired the wrong tensors. seq[:2] gave a list, which cannot be called."""
    torch = pytest.importorskip("torch")
    seq = nn.Sequential(nn.Linear(4, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 2))
    ref = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.BatchNorm1d(5),
                              torch.nn.ReLU(), torch.nn.Linear(5, 2))
    assert list(seq.state()) == list(ref.state_dict())
    head = seq[:2]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[1] is seq[1]
    assert list(head.state()) == ["0.weight", "0.bias", "1.weight", "1.bias",
                                  "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert seq[0].weight.name == "0.weight"  # the slice renamed nothing
    x = gc.placeholder("x", (3, 4))
    assert gc.compile([x], head.eval()(x))(np.ones((3, 4), np.float32)).shape == (3, 5)
    tail = seq[2:]  # keys "0", "1" as a Sequential built from them: it saves and loads
    assert list(tail.state()) == ["1.weight", "1.bias"]  # (ReLU, Linear)
    path = tmp_path / "tail.graphc"
    gc.save(tail, path)
    back = gc.load(path)
    assert isinstance(back, nn.Sequential) and len(back) == 2
    np.testing.assert_array_equal(back.state()["1.weight"], seq[3].weight.value)


@pytest.mark.parametrize("init", [gc.init.he_uniform, gc.init.he_normal,
                                  gc.init.glorot_uniform, gc.init.glorot_normal])
@pytest.mark.parametrize("shape", [(0, 3), (0,), (3, 0, 2, 2)])
def test_initializers_of_empty_shapes_give_empty_arrays(init, shape):
    """A fan of 0 raised ZeroDivisionError (PyTorch returns an empty tensor)."""
    assert init(shape, rng=0).shape == shape


@pytest.mark.parametrize("smoothing", [-0.1, 1.5, True, "0.1"])
def test_label_smoothing_outside_0_1_is_refused(smoothing):
    logits, labels = gc.placeholder("z", (2, 3)), gc.placeholder("y", (2,), "int64")
    with pytest.raises(gc.GraphError, match="label_smoothing must be a number in"):
        gc.nn.functional.cross_entropy(logits, labels, smoothing)


def test_conv_layers_print_every_argument_away_from_its_default():
    assert repr(nn.Conv2d(3, 4, 3, dilation=2, bias=False)) == (
        "Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(0, 0), dilation=(2, 2), "
        "bias=False)")
    assert "output_padding=(1, 1)" in repr(nn.ConvTranspose2d(3, 4, 3, stride=2,
                                                              output_padding=1))


def test_mismatched_layer_arguments_are_named_in_the_error():
    """Each once failed inside an inner reshape or broadcast, whose message named neither the
    layer's argument nor the sizes that disagree."""
    with pytest.raises(gc.ShapeError, match="the input has 4 channels .* its weight has shape"):
        nn.BatchNorm2d(3)(gc.placeholder("x", ("N", 4, 5, 5)))
    with pytest.raises(gc.ShapeError, match="7 labels for 8 rows of logits"):
        gc.nn.functional.cross_entropy(gc.placeholder("z", (8, 3)),
                                       gc.placeholder("y", (7,), "int64"))
    rnn = nn.RNN(4, 6, num_layers=2)
    xs = gc.placeholder("xs", (5, 3, 4))
    with pytest.raises(gc.ShapeError, match=r"initial state has shape \(num_layers=2, N=3"):
        rnn(xs, gc.placeholder("h0", (2, 2, 6)))
    rnn(xs, gc.placeholder("h0", (2, 3, 6)))  # the right one
    with pytest.warns(UserWarning, match="mse_loss: the target's shape \\(3,\\) differs"):
        gc.nn.functional.mse_loss(gc.placeholder("p", (3, 1)), gc.placeholder("t", (3,)))


def test_no_broadcast_warning_for_sizes_that_may_match_and_0d_probabilities():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ("N", 1) against (4, 1): N may be 4
        gc.nn.functional.mse_loss(gc.placeholder("p", ("N", 1)), gc.placeholder("t", (4, 1)))
    assert nn.Dropout(np.array(0.5)).p == 0.5  # a 0-d array is a number


def test_a_name_with_a_dot_is_refused_as_its_state_key_could_collide():
    """A child "a" holding "b" beside an attribute named "a.b" gave two tensors the state key
    "a.b.weight": state() listed 2 of 4 parameters and a save/load lost the other two."""
    class Inner(gc.nn.Module):
        def __init__(self):
            super().__init__()
            self.b = gc.nn.Linear(2, 2)

    outer = gc.nn.Module()
    outer.a = Inner()
    for value in (gc.nn.Linear(2, 2), gc.parameter("w", np.zeros(2, np.float32))):
        with pytest.raises(gc.GraphError, match="cannot contain '.', got 'a.b'"):
            setattr(outer, "a.b", value)
    with pytest.raises(gc.GraphError, match="cannot contain '.'"):
        outer.register_buffer("a.count", gc.parameter("c", np.zeros((), np.int64)))
    setattr(outer, "a.note", "text")  # (a plain attribute is no state)
    assert len(outer.state()) == len(outer.parameters()) == 2
