"""gc.onnx.export: the declared graph as an ONNX file that passes the full checker and runs in
onnxruntime with graphc's results; stateful graphs are refused."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import graphc as gc  # noqa: E402
from graphc import nn  # noqa: E402
from graphc.nn import functional as F  # noqa: E402


def _ort(path, **feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _cnn():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(4, 3))
    state = {k: (rng.normal(size=v.shape) * 0.5).astype(v.dtype) for k, v in
             model.state().items() if v.dtype.kind == "f"}
    for k in state:
        if "var" in k:
            state[k] = np.abs(state[k]) + 0.5
    model.load_state(state, strict=False)
    return model


def test_eval_cnn_round_trips_through_onnxruntime(tmp_path):
    model = _cnn().eval()
    with gc.Graph():
        x = gc.placeholder("x", ("N", 1, 8, 8))
        y = gc.softmax(model(x))
        fn = gc.compile([x], y)
        proto = gc.onnx.export(fn, tmp_path / "cnn.onnx")
    onnx.checker.check_model(proto, full_check=True)
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 8, 8]
    assert any(i.name.endswith("weight") for i in proto.graph.initializer)
    xs = np.random.default_rng(1).normal(size=(5, 1, 8, 8)).astype(np.float32)
    (got,) = _ort(tmp_path / "cnn.onnx", x=xs)
    np.testing.assert_allclose(got, fn(xs), rtol=1e-5, atol=1e-6)


def test_export_then_import_gives_the_same_function(tmp_path):
    with gc.Graph():
        x = gc.placeholder("x", ("N", 6))
        W = gc.parameter("W", np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32))
        y = gc.log_softmax(gc.tanh(x @ W) * 2.0 + gc.sigmoid(x[:, :3]), axis=-1)
        z = (y.mean(axis=1, keepdims=True) - gc.max(y, axis=1, keepdims=True))
        fn = gc.compile([x], [y, z])
    gc.onnx.export([y, z], tmp_path / "m.onnx", inputs=[x])
    model = gc.onnx.load(tmp_path / "m.onnx")
    with gc.Graph():
        xi = model.placeholders()
        yi, zi = model(*xi)
        back = gc.compile(xi, [yi, zi])
    xs = np.random.default_rng(3).normal(size=(4, 6)).astype(np.float32)
    for a, b, c in zip(back(xs), fn(xs), _ort(tmp_path / "m.onnx", x=xs)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(c, b, rtol=1e-5, atol=1e-6)


def test_training_batch_norm_and_dropout_are_refused(tmp_path):
    model = _cnn().train()
    with gc.Graph():
        x = gc.placeholder("x", ("N", 1, 8, 8))
        with pytest.raises(gc.onnx.UnsupportedError, match="batch norm.*eval-mode"):
            gc.onnx.export(model(x), tmp_path / "bn.onnx")
    with gc.Graph():
        x = gc.placeholder("x", ("N", 4))
        with pytest.raises(gc.onnx.UnsupportedError, match="dropout.*eval-mode"):
            gc.onnx.export(F.dropout(x, 0.5, training=True), tmp_path / "d.onnx")


def test_unsupported_import_names_node_op_and_opset():
    from onnx import TensorProto, helper

    node = helper.make_node("Hardmax", ["x"], ["y"], name="hm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [2, 3])])
    model = gc.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    with gc.Graph(), pytest.raises(gc.onnx.UnsupportedError,
                                   match=r"'hm' \(Hardmax, opset 13\)"):
        model(*model.placeholders())
