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
        assert [p.name for p in model.parameters()] == ["W"]  # constants stay constants
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

    # (Unique: its output's shape depends on the data, which a static graph cannot have)
    node = helper.make_node("Unique", ["x"], ["y"], name="hm")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info(
        "y", TensorProto.FLOAT, [2, 3])])
    model = gc.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    with gc.Graph(), pytest.raises(gc.onnx.UnsupportedError,
                                   match=r"'hm' \(Unique, opset 13\)"):
        model(*model.placeholders())


def _check_in_ort(proto, fn, *arrays, tol=1e-5):
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(sess.get_inputs(), arrays)}
    want = fn(*arrays)
    want = want if isinstance(want, list) else [want]
    got = sess.run(None, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def test_elementwise_expressions_export_node_by_node():
    """A fused-style elemwise node (any sympy expression) and the elementwise ops without a
    one-node ONNX form (exp2, log1p, expm1, log2, integer // and % as NumPy, isfinite) are
    written from their expressions."""
    import sympy

    from graphc.ops import expr as E

    x0, x1 = E.inputs(2)
    with gc.Graph():
        x = gc.placeholder("x", ("N", 5))
        k = gc.placeholder("k", ("N", 5), "int64")
        fused = gc.ops.elemwise(sympy.Piecewise(
            (E.sigmoid(x0) * 3 - x1 ** 2, x0 > x1), (sympy.exp(x0) / x1, True)), [x, x + 1.0])
        outs = [fused, gc.ops.exp2(x), gc.ops.log1p(gc.abs(x)), gc.ops.expm1(x),
                gc.ops.log2(gc.abs(x) + 1), k // 3, k % -4, x % 0.6,
                gc.ops.isfinite(gc.log(x))]
        fn = gc.compile([x, k], outs)
        proto = gc.onnx.export(outs, None, inputs=[x, k])
    assert "Sigmoid" in {n.op_type for n in proto.graph.node}
    rng = np.random.default_rng(4)
    _check_in_ort(proto, fn, (rng.normal(size=(3, 5)) * 3).astype(np.float32),
                  rng.integers(-10, 10, size=(3, 5)))


def test_symbolic_reshapes_broadcasts_and_slices():
    """Shape arguments with several symbolic dims (and slice bounds such as T - 1) are
    computed in the file from the inputs' shapes: the file runs at any N and T."""
    rng = np.random.default_rng(5)
    with gc.Graph():
        x = gc.placeholder("x", ("N", "T", 4))
        W = gc.parameter("W", rng.normal(size=(4, 3)).astype(np.float32))
        n, t = x.shape[0], x.shape[1]
        y = (x.reshape((n * t, 4)) @ W).reshape((n, t, 3))
        b = gc.ops.broadcast_to(gc.constant(np.ones((1, 3), np.float32)), (n, 3))
        fn = gc.compile([x], [y, b, y[:, -1], y[:, 1:], x[:, ::2]])
        proto = gc.onnx.export(fn, None)
    assert sum(n.op_type == "Shape" for n in proto.graph.node) >= 1
    for shape in [(2, 3, 4), (5, 1, 4)]:
        _check_in_ort(proto, fn, rng.normal(size=shape).astype(np.float32))


def test_scan_lstm_exports_as_onnx_scan(tmp_path):
    """gc.nn.LSTM/GRU (one gc.scan per layer), a reverse scan and a scan without xs (an ONNX
    Loop), with the gradient of a loss w.r.t. the input — the reverse scans over the carry
    histories — all written as ONNX loops with their bodies as subgraphs."""
    lstm = nn.LSTM(4, 6, num_layers=2, batch_first=True, rng=0)
    gru = nn.GRU(4, 5, rng=1)
    with gc.Graph():
        x = gc.placeholder("x", ("N", "T", 4))
        y, (h, c) = lstm(x)
        z, _ = gru(gc.transpose(x, (1, 0, 2)))
        decay, ys = gc.scan(lambda c, _: (c * 0.5 + 1.0, c * 2.0), gc.ones((3,)), length=4,
                            reverse=True)
        total, sums = gc.scan(lambda c, xt: (c + xt.sum(axis=0),) * 2, gc.zeros((4,)),
                              gc.transpose(x, (1, 0, 2)), reverse=True)
        loss = (y * y).sum() + (z * z).sum() + sums.sum()
        outs = [y, h, c, z, ys, sums, loss, gc.grad(loss, x)]
        fn = gc.compile([x], outs)
        proto = gc.onnx.export(fn, tmp_path / "lstm.onnx")
    ops = {n.op_type for n in proto.graph.node}
    assert {"Scan", "Loop"} <= ops, ops
    rng = np.random.default_rng(6)
    for shape in [(2, 3, 4), (1, 5, 4)]:
        _check_in_ort(proto, fn, rng.normal(size=shape).astype(np.float32))
    # and back: graphc imports its own Scan/Loop nodes
    import graphc.onnx.ops_control  # noqa: F401

    model = gc.onnx.load(tmp_path / "lstm.onnx")
    with gc.Graph():
        xi = model.placeholders()
        back = gc.compile(xi, model(*xi))
    xs = rng.normal(size=(2, 3, 4)).astype(np.float32)
    for a, b in zip(back(xs), fn(xs)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gelu_s_tanh_form_exports_below_opset_20():
    """Opset 20 has Gelu; before it, the erf form was written node by node and the tanh form
    refused, so the default opset (18) could not export an API.md op. Both are written from
    primitives now."""
    x = gc.placeholder("x", ("N",))
    for approximate in ("none", "tanh"):
        y = gc.gelu(x, approximate=approximate)
        fn = gc.compile([x], y)
        for opset in (None, 13, 20):
            proto = gc.onnx.export(y, None, inputs=[x], opset=opset)
            _check_in_ort(proto, fn, np.linspace(-5, 5, 41).astype(np.float32), tol=1e-6)


@pytest.mark.parametrize("opset", [7, 11, 12, 999])
def test_an_opset_the_writers_do_not_produce_is_refused(opset):
    """The writers use opset 13's forms (Softmax over one axis, ReduceSum's axes as an
    input): an older opset wrote a file onnxruntime ran with other results (softmax over
    axis 1 of a 3-d input: 0.40 off) or one the checker refused, with no graphc error."""
    x = gc.placeholder("x", ("N", 4, 3))
    with pytest.raises(gc.onnx.UnsupportedError, match=rf"opset {opset}: graphc writes opsets 13"):
        gc.onnx.export(gc.softmax(x, axis=1), None, inputs=[x], opset=opset)
