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
            (E.sigmoid(x0) * 3 - x1 ** 2, x0 > x1), (sympy.exp(x0) / x1, True))
            + x0 * E.alone(1 / x1), [x, x + 1.0])  # (a reciprocal fusion put in a product)
        outs = [fused, gc.ops.exp2(x), gc.ops.log1p(gc.abs(x)), gc.ops.expm1(x),
                gc.ops.log2(gc.abs(x) + 1), k // 3, k % -4, x % 0.6,
                gc.ops.isfinite(gc.log(x))]
        fn = gc.compile([x, k], outs)
        proto = gc.onnx.export(outs, None, inputs=[x, k])
    assert "Sigmoid" in {n.op_type for n in proto.graph.node}
    rng = np.random.default_rng(4)
    _check_in_ort(proto, fn, (rng.normal(size=(3, 5)) * 3).astype(np.float32),
                  rng.integers(-10, 10, size=(3, 5)))


def test_arithmetic_on_booleans_exports_as_logic():
    """graphc computes bool + bool, bool * bool, maximum/minimum and max/min of masks as
    NumPy does (or, and, any, all); ONNX's Add, Mul, Max, Min and ReduceMax take numbers
    only, and the export was a model onnx's checker refused."""
    with gc.Graph():
        a = gc.placeholder("a", ("N", 3), "bool")
        b = gc.placeholder("b", ("N", 3), "bool")
        outs = [a + b, a * b, a * True, gc.maximum(a, b), gc.minimum(a, b), gc.max(a, axis=1),
                gc.min(b, axis=0), gc.max(a), gc.sum(a * b)]
        fn = gc.compile([a, b], outs)
        proto = gc.onnx.export(outs, None, inputs=[a, b])
    rng = np.random.default_rng(0)
    _check_in_ort(proto, fn, rng.random((4, 3)) < 0.5, rng.random((4, 3)) < 0.5)


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


def _same_bits(got, want):
    """Equal values, NaN where NumPy has NaN, and the same sign of every zero."""
    np.testing.assert_array_equal(got, want)
    both = ~np.isnan(want)
    np.testing.assert_array_equal(np.signbit(got[both]), np.signbit(want[both]))


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_floordiv_and_mod_never_trap_in_onnxruntime(tmp_path, dtype):
    """INT_MIN // -1 and division by zero: onnxruntime divides natively, and Div(INT_MIN, -1)
    killed its process with SIGFPE (no Python exception). The file selects a safe divisor
    and gives graphc's documented results (INT_MIN, 0). Run in a child process, so that a
    regression fails this test instead of killing pytest."""
    import subprocess
    import sys

    lo = np.iinfo(dtype).min
    a_ = np.array([lo, lo, 7, -7, 7, -7, 0, lo], dtype)
    b_ = np.array([-1, 1, 2, 2, 0, 0, -1, lo], dtype)
    with gc.Graph():
        a, b = gc.placeholder("a", (8,), dtype), gc.placeholder("b", (8,), dtype)
        outs = [a // b, a % b, a // -1]
        want = gc.compile([a, b], outs)(a_, b_)
        gc.onnx.export(outs, tmp_path / "div.onnx", inputs=[a, b])
    np.testing.assert_array_equal(want[0], [lo, lo, 3, -4, 0, 0, 0, 1])
    np.save(tmp_path / "a.npy", a_)
    np.save(tmp_path / "b.npy", b_)
    code = ("import sys, numpy as np, onnxruntime as ort\n"
            "d = sys.argv[1]\n"
            "s = ort.InferenceSession(d + '/div.onnx', providers=['CPUExecutionProvider'])\n"
            "outs = s.run(None, {'a': np.load(d + '/a.npy'), 'b': np.load(d + '/b.npy')})\n"
            "np.savez(d + '/out.npz', *outs)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    got = np.load(tmp_path / "out.npz")
    for i, w in enumerate(want):
        np.testing.assert_array_equal(got[f"arr_{i}"], w)
    # and graphc reads its own file back (no Mod(fmod=1) it could not import)
    model = gc.onnx.load(tmp_path / "div.onnx")
    with gc.Graph():
        ph = model.placeholders()
        back = gc.compile(ph, model(*ph))(a_, b_)
    for g, w in zip(back, want):
        np.testing.assert_array_equal(g, w)


def test_integer_floordiv_and_mod_of_the_same_operands_share_one_guard():
    """``a // b`` and ``a % b`` (two nodes) select one safe divisor between them, as the
    file's reader would write it: the guard was written once per node. Other operands get
    their own."""
    with gc.Graph():
        a, b = gc.placeholder("a", (8,), "int32"), gc.placeholder("b", (8,), "int32")
        model = gc.onnx.export([a // b + a % b, b // a], None, inputs=[a, b])
    zero_tests = [list(n.input) for n in model.graph.node
                  if n.op_type == "Equal" and n.input[0] in ("a", "b")]
    divisions = [n for n in model.graph.node if n.op_type in ("Div", "Mod")]
    assert len(divisions) == 3
    assert len({n.input[1] for n in divisions[:2]}) == 1  # the same safe divisor
    assert divisions[2].input[1] != divisions[0].input[1]
    assert len(zero_tests) == 6  # (b == 0, a == INT_MIN, b == -1) for b, then for a
    a_ = np.array([-2**31, 7, -7, 7, 0, 5, -5, 3], np.int32)
    b_ = np.array([-1, 2, 2, 0, -1, -3, 3, 3], np.int32)
    ort = pytest.importorskip("onnxruntime")
    got = ort.InferenceSession(model.SerializeToString(),
                               providers=["CPUExecutionProvider"]).run(None, {"a": a_, "b": b_})
    with gc.Graph():
        a, b = gc.placeholder("a", (8,), "int32"), gc.placeholder("b", (8,), "int32")
        want = gc.compile([a, b], [a // b + a % b, b // a])(a_, b_)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_floordiv_and_mod_are_numpy_s_in_onnxruntime_and_back(dtype):
    """Float // and % are NumPy's npy_divmod (docs/semantics.md). Floor(a / b) was written
    before: 1 // 0.1 was 10 (a / b rounds up; NumPy's is 9), inf // 2 inf (NaN), -1 // inf
    -0 (-1); -4 % 2 was -0.0 (0.0). onnxruntime and the re-imported file give NumPy's
    values, zeros' signs included."""
    big = np.finfo(dtype).max
    a_ = np.array([1, np.inf, -1, 5, -4, 4, -2.5, 7, 1, -0.0, 0.0, np.nan, 3, -np.inf, 1e-8,
                   -1e-8, 0.5, -0.5, 1e30, -3, big, -big, 5, -5], dtype)
    b_ = np.array([0.1, 2, np.inf, -np.inf, 2, -2, 1e30, 0.7, 0, 3, -3, 1, np.nan, np.inf, 1,
                   -1, -np.inf, np.inf, 1e-30, 0.0, 0.5, 3, -0.0, 1.5], dtype)
    with np.errstate(all="ignore"):
        want = [np.floor_divide(a_, b_), np.remainder(a_, b_)]
    assert want[0][0] == 9 and np.isnan(want[0][1]) and want[0][2] == -1
    with gc.Graph():
        a, b = gc.placeholder("a", a_.shape, dtype), gc.placeholder("b", a_.shape, dtype)
        outs = [a // b, a % b]
        fn = gc.compile([a, b], outs)
        proto = gc.onnx.export(outs, None, inputs=[a, b])
    onnx.checker.check_model(proto, full_check=True)
    for g, w in zip(fn(a_, b_), want):
        _same_bits(g, w)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for g, w in zip(sess.run(None, {"a": a_, "b": b_}), want):
        _same_bits(g, w)
    model = gc.onnx.load(proto)
    with gc.Graph():
        ph = model.placeholders()
        back = gc.compile(ph, model(*ph))(a_, b_)
    for g, w in zip(back, want):
        _same_bits(g, w)


def test_graphc_re_imports_its_own_symbolic_shape_arithmetic():
    """Slices of a symbolic axis (bounds written with Max/Min over Shape values) and means
    over a symbolic dim (a count written Shape -> Gather -> ReduceProd -> Cast) were refused
    by gc.onnx.load: "a value with symbolic dims is used as data". The importer folds
    Max/Min/ReduceProd over symbolic dims, matches such bounds to int bounds, and computes
    a symbolic count used as data when the model runs: the round trip gives graphc's values
    at several sizes."""
    rng = np.random.default_rng(7)
    with gc.Graph():
        x = gc.placeholder("x", ("N", "T", 4))
        outs = [x[:, -2:], x[:, 1:-1], x.reshape((-1, 4))[2:], x.mean(axis=0),
                x.mean(axis=(0, 1)), gc.nn.functional.mse_loss(x, gc.zeros_like(x))]
        fn = gc.compile([x], outs)
        proto = gc.onnx.export(outs, None, inputs=[x])
    assert {"Max", "Min", "ReduceProd"} <= {n.op_type for n in proto.graph.node}
    model = gc.onnx.load(proto)
    with gc.Graph():
        ph = model.placeholders()
        back = gc.compile(ph, model(*ph))
    for shape in [(2, 5, 4), (3, 3, 4), (1, 7, 4)]:
        xs = rng.normal(size=shape).astype(np.float32)
        for g, w in zip(back(xs), fn(xs)):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_a_symbolic_slice_bound_of_another_dim_is_still_refused():
    """The bound matching is exact, not a guess: a bound that selects something else at
    some size (x[:, :N] on the axis T, a Max over another dim) stays an UnsupportedError."""
    from onnx import TensorProto, helper

    def model_with(ends_nodes):
        nodes = [helper.make_node("Shape", ["x"], ["shape"]),
                 helper.make_node("Constant", [], ["i0"], value=helper.make_tensor(
                     "i0", TensorProto.INT64, [1], [0])),
                 helper.make_node("Gather", ["shape", "i0"], ["n"]),
                 helper.make_node("Constant", [], ["two"], value=helper.make_tensor(
                     "two", TensorProto.INT64, [1], [2])),
                 helper.make_node("Constant", [], ["zero"], value=helper.make_tensor(
                     "zero", TensorProto.INT64, [1], [0])),
                 helper.make_node("Constant", [], ["ax"], value=helper.make_tensor(
                     "ax", TensorProto.INT64, [1], [1])),
                 *ends_nodes,
                 helper.make_node("Slice", ["x", "zero", "end", "ax"], ["y"])]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
            "x", TensorProto.FLOAT, ["N", "T"])], [helper.make_tensor_value_info(
                "y", TensorProto.FLOAT, None)])
        return gc.onnx.load(helper.make_model(graph, opset_imports=[
            helper.make_opsetid("", 18)]))

    for ends in ([helper.make_node("Identity", ["n"], ["end"])],
                 [helper.make_node("Max", ["n", "two"], ["end"])]):
        model = model_with(ends)
        with gc.Graph(), pytest.raises(gc.onnx.UnsupportedError, match="slice bound"):
            model(*model.placeholders())


def test_an_imported_model_s_parameters_are_shared_across_graphs():
    """As a module's (docs/semantics.md, "Parameters shared between graphs"): the model
    fine-tuned in one graph gives its trained values in a new gc.Graph, where
    parameters()/state() are the same tensors. They were made per graph, so a new graph
    silently used the file's original weights."""
    from onnx import TensorProto, helper, numpy_helper

    W = numpy_helper.from_array(np.ones((4, 3), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [W])
    model = gc.onnx.load(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    x_ = np.ones((1, 4), np.float32)
    with gc.Graph():
        (x,) = model.placeholders()
        y = model(x)
        loss = (y * y).sum()
        params = model.parameters()
        step = gc.compile([x], loss, updates=gc.optim.SGD(params, lr=0.01).updates(loss))
        for _ in range(3):
            step(x_)
        trained = gc.compile([x], y)(x_)
    assert not np.allclose(trained, 4.0)
    with gc.Graph():
        (x,) = model.placeholders()
        np.testing.assert_array_equal(gc.compile([x], model(x))(x_), trained)
        assert [p.node for p in model.parameters()] == [p.node for p in params]
        np.testing.assert_array_equal(model.state()["W"], params[0].value)
    assert not np.array_equal(model.state()["W"], np.ones((4, 3), np.float32))


def test_one_hot_of_int32_ids_and_a_scan_without_ys_export():
    """one_hot compared int32 ids with int64 classes (onnx's InferenceError from the
    checker); a scan with no ys wrote an empty scan_output_directions (onnx.helper's
    ValueError). Both export and run with graphc's values."""
    with gc.Graph():
        ids = gc.placeholder("ids", ("N",), "int32")
        xs = gc.placeholder("xs", ("T", 3))
        hot = gc.one_hot(ids, 4)
        carry, _ = gc.scan(lambda c, x: (c * 0.5 + x, None), gc.zeros((3,)), xs)
        fn = gc.compile([ids, xs], [hot, carry])
        proto = gc.onnx.export([hot, carry], None, inputs=[ids, xs])
    _check_in_ort(proto, fn, np.array([0, 3, 1], np.int32), np.ones((4, 3), np.float32))


@pytest.mark.parametrize("bad", ["opset", "opset_float", "outputs", "inputs", "function",
                                 "input_tensor"])
def test_export_argument_mistakes_are_graphc_errors(bad):
    """Mistaken arguments raised raw TypeError/AttributeError from inside the writer; each is
    an UnsupportedError (a GraphError) naming the argument."""
    x = gc.placeholder("x", (2,))
    args = {"opset": ((x * 2, None), {"inputs": [x], "opset": "18"}, "opset must be an int"),
            "opset_float": ((x * 2, None), {"inputs": [x], "opset": 18.0}, "opset must be"),
            "outputs": ((3.0, None), {"inputs": [x]}, "outputs must be a tensor"),
            "inputs": ((x * 2, None), {"inputs": [np.ones(2)]}, r"inputs\[0\] must be a "),
            "function": ((lambda t: t * 2, None), {"inputs": [x]}, "Python function"),
            "input_tensor": ((x * 2, None), {"inputs": x}, "inputs must be a list")}
    positional, keywords, message = args[bad]
    with pytest.raises(gc.onnx.UnsupportedError, match=message):
        gc.onnx.export(*positional, **keywords)
    assert isinstance(gc.onnx.UnsupportedError("x"), gc.GraphError)
    gc.onnx.export(x * 2, None, inputs=[x], opset=np.int64(17))  # a NumPy int is an int


def test_exported_log1p_and_expm1_do_not_overflow_for_large_finite_inputs():
    """Goldberg's x*log(u)/(u-1) and Kahan's (u-1)*x/log(u) formed the product first: inf in
    onnxruntime for log1p(1e38) and expm1(88) (float32), where NumPy's are finite. The small
    arguments keep their accuracy."""
    x_ = np.array([1e38, 4e36, 3.4e38, 88.0, 88.7, 80.0, 1e-7, -1e-7, 1e-3, 0.5, -0.5, 0.0],
                  np.float32)
    with gc.Graph():
        x = gc.placeholder("x", x_.shape)
        outs = [gc.ops.log1p(gc.abs(x)), gc.ops.expm1(gc.minimum(x, 88.7))]
        fn = gc.compile([x], outs)
        proto = gc.onnx.export(outs, None, inputs=[x])
    with np.errstate(over="ignore"):
        want = [np.log1p(np.abs(x_)), np.expm1(np.minimum(x_, np.float32(88.7)))]
    assert np.isfinite(want[1]).all()
    _check_in_ort(proto, fn, x_, tol=1e-6)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for g, w in zip(sess.run(None, {"x": x_}), want):
        np.testing.assert_allclose(g, w, rtol=2e-6, atol=0)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_integer_pow_with_negative_exponents_exports_graphc_s_values(dtype):
    """An integer to a negative power is the truncated 1/a**n (docs/semantics.md): 0 for
    0 ** -1, where onnxruntime's Pow gave INT_MIN; 1 and -1 ** n keep theirs."""
    a_ = np.array([0, 1, -1, 2, -1, 3, 0, -2, 5], dtype)
    b_ = np.array([-1, -3, -3, -1, -2, 2, 0, 3, 1], dtype)
    with gc.Graph():
        a, b = gc.placeholder("a", (9,), dtype), gc.placeholder("b", (9,), dtype)
        fn = gc.compile([a, b], a ** b)
        proto = gc.onnx.export(a ** b, None, inputs=[a, b])
    np.testing.assert_array_equal(fn(a_, b_), [0, 1, -1, 0, 1, 9, 1, -8, 5])
    _check_in_ort(proto, fn, a_, b_, tol=0)


def test_a_where_of_booleans_runs_in_onnxruntime(tmp_path):
    """A `where` choosing between booleans (two attention masks combined: a tensor mask and
    is_causal, or a key-padding mask and an attention mask) is exported as And/Or/Not:
    onnxruntime implements Where for numbers only, and refused to load the model."""
    rng = np.random.default_rng(0)
    with gc.Graph():
        c = gc.placeholder("c", (3, 4), "bool")
        a = gc.placeholder("a", (3, 4), "bool")
        b = gc.placeholder("b", (1, 4), "bool")
        both = [gc.where(c, a, b), gc.where(c, a, True), gc.where(c, False, b)]
        fn = gc.compile([c, a, b], both)
        proto = gc.onnx.export(both, None, inputs=[c, a, b])
        _check_in_ort(proto, fn, rng.random((3, 4)) > 0.5, rng.random((3, 4)) > 0.5,
                      rng.random((1, 4)) > 0.5)
    with gc.Graph():
        q = gc.placeholder("q", (2, 4, 8))
        m = gc.placeholder("m", (4, 4), "bool")
        y = F.scaled_dot_product_attention(q, q, q, mask=m, is_causal=True)
        fn = gc.compile([q, m], y)
        proto = gc.onnx.export(y, None, inputs=[q, m])
        _check_in_ort(proto, fn, rng.normal(size=(2, 4, 8)).astype(np.float32),
                      rng.random((4, 4)) > 0.3)


def test_frozen_parameters_stay_frozen_through_a_round_trip(tmp_path):
    """Batch norm's statistics (buffers) and a frozen layer were written as plain
    initializers, and a re-import made them trainable."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(18, 3))
    net[0].freeze()
    net.eval()
    assert not net[1].running_mean.requires_grad
    x = gc.placeholder("x", ("N", 1, 5, 5))
    gc.onnx.export(net(x), tmp_path / "m.onnx", inputs=[x])
    model = gc.onnx.load(str(tmp_path / "m.onnx"))
    frozen = {p.name for p in model.parameters() if not p.requires_grad}
    assert frozen == {"weight", "bias", "running_mean", "running_var"}  # the conv, the stats
    assert len(model.parameters()) - len(frozen) == 4  # bn's weight and bias, the linear's


def test_numbers_and_initial_states_of_a_file_are_not_trained():
    """PyTorch's exporter writes x ** 2's exponent, a hardtanh's bounds and an RNN's zero
    initial state as float initializers: trained, the exponent's gradient was NaN after one
    step. 0-d initializers and those read only as Clip bounds or initial states are frozen;
    a file's own list of frozen names that is not a list of names is refused."""
    import onnx
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.float32(2.0).reshape(()), "exponent"),
             numpy_helper.from_array(np.array(-0.5, np.float32), "low"),
             numpy_helper.from_array(np.full((1,), 0.5, np.float32), "high"),
             numpy_helper.from_array(np.ones((3, 3), np.float32), "w")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Pow", ["h", "exponent"], ["p"]),
             helper.make_node("Clip", ["p", "low", "high"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, ["N", 3])],
                              [helper.make_tensor_value_info("y", 1, ["N", 3])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = gc.onnx.load(proto)
    assert {p.name: p.requires_grad for p in model.parameters()} == {
        "exponent": False, "low": False, "high": False, "w": True}
    helper.set_model_props(proto, {"graphc.frozen": '"w"'})
    with pytest.raises(gc.onnx.UnsupportedError, match="not a JSON list of initializer names"):
        gc.onnx.load(onnx.ModelProto.FromString(proto.SerializeToString()))
