"""Models exported from PyTorch (torch.onnx.export) and imported into graphc: the outputs
equal PyTorch's (float32, 1e-5) and the gradients of a loss w.r.t. the imported parameters
equal autograd's."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import graphc as gc  # noqa: E402


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
