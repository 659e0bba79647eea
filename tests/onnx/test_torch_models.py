"""Models exported from PyTorch (torch.onnx.export) and imported into graphc: the outputs
equal PyTorch's (float32, 1e-5) and the gradients of a loss w.r.t. the imported parameters
equal autograd's."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import graphc as gc  # noqa: E402
import graphc.onnx.ops_control  # noqa: E402,F401  (registers If, Loop, Scan)
import graphc.onnx.ops_recurrent  # noqa: E402,F401  (registers LSTM, GRU, RNN)


def _export(model, x, path, dynamic_batch=True):
    kwargs = {"dynamic_shapes": ({0: torch.export.Dim("N")},)} if dynamic_batch else {}
    # optimize=False: PyTorch's optimizer would fold eval-mode batch norm into the conv
    torch.onnx.export(model, (x,), str(path), input_names=["x"], output_names=["y"],
                      dynamo=True, external_data=False, optimize=False, **kwargs)
    return gc.onnx.load(str(path))


def _check(model, x_np, tmp_path, backend="numpy"):
    torch.manual_seed(0)
    model.eval()
    x = torch.from_numpy(x_np)
    imported = _export(model, x, tmp_path / "m.onnx")
    with gc.Graph():
        (xp,) = imported.placeholders()
        assert not isinstance(xp.shape[0], int), "the batch dim stays symbolic"
        y = imported(xp)
        params = imported.parameters()
        trainable = [p for p in params if p.requires_grad]
        loss = (y * y).sum()
        grads = gc.grad(loss, trainable)
        fn = gc.compile([xp], [y] + grads, backend=backend)
        out = fn(x_np)
    expected = model(x)
    np.testing.assert_allclose(out[0], expected.detach().numpy(), rtol=1e-5, atol=1e-5)
    (expected * expected).sum().backward()
    by_name = dict(model.named_parameters())
    checked = 0
    for p, g in zip(trainable, out[1:]):
        ref = by_name.get(p.name)
        if ref is None:
            continue  # an initializer the exporter renamed or folded
        np.testing.assert_allclose(g, ref.grad.numpy(), rtol=1e-4, atol=1e-4,
                                   err_msg=p.name)
        checked += 1
    assert checked == len(by_name), (sorted(by_name), [p.name for p in trainable])


def test_mlp_outputs_and_gradients_equal_pytorch(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 3))
    x = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    _check(model, x, tmp_path)


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = torch.nn.BatchNorm2d(4)
        self.conv2 = torch.nn.Conv2d(4, 6, 3)
        self.fc = torch.nn.Linear(6 * 3 * 3, 5)

    def forward(self, x):
        x = torch.nn.functional.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        x = torch.nn.functional.avg_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_cnn_with_batch_norm_and_pooling_equals_pytorch(tmp_path, backend):
    torch.manual_seed(0)
    model = SmallCNN()
    with torch.no_grad():  # non-trivial running statistics
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(1).normal(size=(3, 1, 16, 16)).astype(np.float32)
    _check(model, x, tmp_path, backend)
    ops = {n.op_type for n in gc.onnx.load(str(tmp_path / "m.onnx")).proto.graph.node}
    assert {"BatchNormalization", "MaxPool", "AveragePool", "Conv"} <= ops, ops


def test_batch_norm_statistics_are_frozen_parameters(tmp_path):
    model = SmallCNN().eval()
    imported = _export(model, torch.zeros(2, 1, 16, 16), tmp_path / "m.onnx")
    with gc.Graph():
        frozen = {p.name for p in imported.parameters() if not p.requires_grad}
    assert frozen and all("running" in n or "bn" in n for n in frozen), frozen
    assert set(imported.state()) >= {"conv1.weight", "fc.bias"}


class ResidualBlock(torch.nn.Module):
    """conv-bn-relu-conv-bn plus the input, then relu (a ResNet basic block), and a head."""

    def __init__(self, channels=4):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels)
        self.conv2 = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels)
        self.fc = torch.nn.Linear(channels, 3)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)) + x)
        return self.fc(y.mean(dim=(2, 3)))


def test_residual_block_equals_pytorch(tmp_path):
    torch.manual_seed(0)
    model = ResidualBlock()
    with torch.no_grad():
        for bn in (model.bn1, model.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
    x = np.random.default_rng(2).normal(size=(2, 4, 6, 6)).astype(np.float32)
    _check(model, x, tmp_path)


class Recurrent(torch.nn.Module):
    """A batch-first nn.LSTM / nn.GRU whose whole output sequence feeds a linear head."""

    def __init__(self, cls, **kwargs):
        super().__init__()
        self.rnn = cls(4, 6, batch_first=True, **kwargs)
        self.fc = torch.nn.Linear(6 * (2 if kwargs.get("bidirectional") else 1), 2)

    def forward(self, x):
        return self.fc(self.rnn(x)[0])


@pytest.mark.parametrize("cls,kwargs", [
    (torch.nn.LSTM, {"num_layers": 2}),
    (torch.nn.GRU, {"bidirectional": True}),
], ids=["lstm", "gru"])
def test_lstm_and_gru_equal_pytorch(tmp_path, cls, kwargs):
    """torch.onnx.export writes ONNX LSTM / GRU nodes (gates reordered to iofc / zrh around
    them, GRU with linear_before_reset); graphc maps each direction onto one gc.scan."""
    torch.manual_seed(0)
    model = Recurrent(cls, **kwargs)
    x = np.random.default_rng(3).normal(size=(3, 5, 4)).astype(np.float32)
    _check(model, x, tmp_path)
    proto = gc.onnx.load(str(tmp_path / "m.onnx")).proto
    nodes = [n for n in proto.graph.node if n.op_type == cls.__name__]
    # what PyTorch writes: one node per layer, layout 0 (batch_first is a Transpose around
    # it), both directions in one node, GRU with linear_before_reset
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    assert len(nodes) == kwargs.get("num_layers", 1)
    assert all(a.get("layout", 0) == 0 for a in attrs)
    if cls is torch.nn.GRU:
        assert attrs[0]["direction"] == b"bidirectional" and attrs[0]["linear_before_reset"] == 1
    with gc.Graph():
        imported = gc.onnx.load(proto)
        y = imported(*imported.placeholders())
        assert any(n.op.name == "scan" for n in y.graph.nodes)


def test_float64_layer_norm_keeps_float64_accuracy_under_the_default_stash_type(tmp_path):
    """stash_type (default 1, float32) types the Mean and InvStdDev outputs; the statistics
    of a float64 input are computed in float64, as onnxruntime and onnx.reference compute
    (the import once cast the input down to float32: 1e-7 errors in float64 models)."""
    from onnx import TensorProto, helper

    ln = torch.nn.LayerNorm((5, 8), dtype=torch.float64).eval()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    x = torch.randn(3, 5, 8, dtype=torch.float64) * 3 + 1
    imported = _export(ln, x, tmp_path / "ln.onnx", dynamic_batch=False)
    (xp,) = imported.placeholders()
    got = gc.compile([xp], imported(xp))(x.numpy())
    np.testing.assert_allclose(got, ln(x).detach().numpy(), rtol=1e-12, atol=1e-12)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean", "inv"], axis=-1)
    graph = helper.make_graph(
        [node], "ln", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [2, 6])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [2, 6]),
         helper.make_tensor_value_info("mean", TensorProto.FLOAT, [2, 1]),
         helper.make_tensor_value_info("inv", TensorProto.FLOAT, [2, 1])],
        [helper.make_tensor("s", TensorProto.DOUBLE, [6], np.ones(6).tolist())])
    model = gc.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    (xp,) = model.placeholders()
    y, mean, inv = gc.compile([xp], model(xp))(
        np.array([[1.0, 2, 3, 4, 5, 6], [1e8, 1e8 + 1, 1e8 + 2, 1e8, 1e8, 1e8]]))
    assert y.dtype == np.float64 and mean.dtype == inv.dtype == np.float32
    row = np.array([0.0, 1, 2, 0, 0, 0])  # the second row, less its 1e8 (lost in float32)
    expected = (row - row.mean()) / np.sqrt(row.var() + 1e-5)
    np.testing.assert_allclose(y[1], expected, rtol=1e-7)


def test_legacy_exports_of_equal_parameters_are_parameters_of_their_own(tmp_path):
    """The TorchScript exporter writes equal-valued parameters once and the others as
    Identity(first): a fresh batch norm's running variance as its weight (the statistics
    were trained), the second LayerNorm as the first (fine-tuning trained them as one)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4),
                              torch.nn.LayerNorm(4), torch.nn.Linear(4, 4),
                              torch.nn.LayerNorm(4), torch.nn.Linear(4, 2)).eval()
    path = tmp_path / "legacy.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3),), str(path), input_names=["x"], dynamo=False,
                      do_constant_folding=False, dynamic_axes={"x": {0: "N"}})
    import onnx

    kinds = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Identity" in kinds  # (the aliasing this test is about)
    model = gc.onnx.load(str(path))
    params = {p.name: p for p in model.parameters()}
    assert {"1.running_var", "1.running_mean", "4.weight", "4.bias"} <= set(params)
    assert not params["1.running_var"].requires_grad and params["4.weight"].requires_grad
    trainable = sum(p.value.size for p in params.values() if p.requires_grad)
    assert trainable == sum(p.numel() for p in net.parameters())
    rng = np.random.default_rng(0)
    xv, yv = rng.normal(size=(8, 3)).astype(np.float32), rng.normal(size=(8, 2)).astype(
        np.float32)
    (x,) = model.placeholders()
    y = gc.placeholder("y", ("N", 2))
    loss = gc.nn.functional.mse_loss(model(x), y)
    trained = [p for p in params.values() if p.requires_grad]
    step = gc.compile([x, y], loss, updates=gc.optim.SGD(trained, lr=0.5).updates(loss))
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        got = step(xv, yv)
        opt.zero_grad()
        want = torch.nn.functional.mse_loss(net(torch.from_numpy(xv)), torch.from_numpy(yv))
        want.backward()
        opt.step()
        np.testing.assert_allclose(got, want.item(), rtol=1e-5)


def test_a_legacy_expand_to_the_dynamic_batch_imports(tmp_path):
    """``cls.expand(x.shape[0], -1, -1)`` (a class token) is written as Where(shape == -1,
    ...) over the batch dim: N == -1 was left undecided, and Expand refused the shape."""

    class ClassToken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cls = torch.nn.Parameter(torch.randn(1, 1, 4))

        def forward(self, x):
            return torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1)

    torch.manual_seed(0)
    net = ClassToken().eval()
    path = tmp_path / "token.onnx"
    torch.onnx.export(net, (torch.zeros(3, 5, 4),), str(path), input_names=["x"],
                      dynamo=False, dynamic_axes={"x": {0: "N"}})
    model = gc.onnx.load(str(path))
    (x,) = model.placeholders()
    xv = np.random.default_rng(0).normal(size=(2, 5, 4)).astype(np.float32)
    got = gc.compile([x], model(x))(xv)
    np.testing.assert_allclose(got, net(torch.from_numpy(xv)).detach().numpy(), rtol=1e-6)


@pytest.mark.parametrize("dynamo", [False, True])
def test_the_last_step_of_a_dynamic_sequence_imports_with_its_plain_shape(tmp_path, dynamo):
    """``out[:, -1]`` of an RNN over a dynamic length: Gather(-1) into a symbolic dim was
    refused, and the dynamo exporter's Slice to INT64_MAX left Min(2**62, N) in the shape."""

    class Last(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = torch.nn.GRU(3, 4, batch_first=True)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.fc(out[:, -1])

    torch.manual_seed(0)
    net = Last().eval()
    path = tmp_path / "last.onnx"
    x0 = torch.zeros(2, 5, 3)
    if dynamo:
        dim_n, dim_t = torch.export.Dim("N"), torch.export.Dim("T")
        torch.onnx.export(net, (x0,), str(path), input_names=["x"], dynamo=True,
                          external_data=False, dynamic_shapes=({0: dim_n, 1: dim_t},))
    else:
        torch.onnx.export(net, (x0,), str(path), input_names=["x"], dynamo=False,
                          dynamic_axes={"x": {0: "N", 1: "T"}})
    model = gc.onnx.load(str(path))
    (x,) = model.placeholders()
    y = model(x)
    assert len(y.shape) == 2 and y.shape[1] == 2 and y.shape[0].is_Symbol
    # (torch's exporter sometimes specializes T to the example's 5, depending on what the
    # process exported before: the length is then the one the file says)
    steps = x.shape[1] if isinstance(x.shape[1], int) else 7
    xv = np.random.default_rng(0).normal(size=(3, steps, 3)).astype(np.float32)
    np.testing.assert_allclose(gc.compile([x], y)(xv), net(torch.from_numpy(xv)).detach(),
                               rtol=1e-5, atol=1e-6)


def test_the_onnx_backend_names_a_missing_input(tmp_path):
    import graphc.onnx.backend as ob

    net = torch.nn.Linear(4, 2)
    path = tmp_path / "lin.onnx"
    torch.onnx.export(net, (torch.zeros(2, 4),), str(path), input_names=["x"], dynamo=False)
    import onnx

    rep = ob.prepare(onnx.load(str(path)))
    with pytest.raises(gc.onnx.UnsupportedError, match="missing model inputs: x"):
        rep.run({"y": np.ones((2, 4), np.float32)})
    with pytest.raises(gc.onnx.UnsupportedError, match="has 1 inputs"):
        rep.run([np.ones((2, 4), np.float32)] * 2)
