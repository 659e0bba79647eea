"""Control flow and recurrent ops imported from ONNX: small models built with onnx.helper,
each compared with onnxruntime; what graphc cannot express is an error naming the node."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import graphc as gc  # noqa: E402
import graphc.onnx.ops_control  # noqa: E402,F401  (registers If, Loop, Scan)
import graphc.onnx.ops_recurrent  # noqa: E402,F401  (registers LSTM, GRU, RNN)

F32 = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _vi(name, shape, dtype=F32):
    return helper.make_tensor_value_info(name, dtype, shape)


def _const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(
        np.asarray(value), name))


def _run_both(model, *arrays, backend="numpy", reference=False):
    """graphc's outputs and onnxruntime's (`reference`: onnx's own ReferenceEvaluator, for
    what onnxruntime does not run, such as batch-first recurrent ops), for the same inputs."""
    imported = gc.onnx.load(model)
    with gc.Graph():
        xs = imported.placeholders()
        out = imported(*xs)
        out = out if isinstance(out, list) else [out]
        fn = gc.compile(xs, out, backend=backend)
        got = fn(*arrays)
    got = got if isinstance(got, list) else [got]
    names = [i.name for i in model.graph.input]
    if reference:
        from onnx.reference import ReferenceEvaluator

        return got, ReferenceEvaluator(model).run(None, dict(zip(names, arrays)))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return got, sess.run(None, dict(zip(names, arrays)))


def _assert_same(got, want, tol=1e-5):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


def _branch(name, op, value):
    return helper.make_graph([_const(f"{name}_c", np.float32(value)),
                              helper.make_node(op, ["x", f"{name}_c"], [f"{name}_y"])],
                             name, [], [_vi(f"{name}_y", [2, 3])])


@pytest.mark.parametrize("flag", [True, False])
def test_if_with_a_constant_condition_takes_its_branch(flag):
    nodes = [_const("cond", np.array(flag)),
             helper.make_node("If", ["cond"], ["y"], then_branch=_branch("then", "Mul", 2.0),
                              else_branch=_branch("else", "Add", 1.0))]
    model = _model(nodes, [_vi("x", [2, 3])], [_vi("y", [2, 3])])
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    got, want = _run_both(model, x)
    _assert_same(got, want)
    np.testing.assert_allclose(got[0], x * 2 if flag else x + 1, rtol=1e-6)


def test_if_on_data_is_an_error_naming_the_node():
    nodes = [helper.make_node("If", ["c"], ["y"], name="choose",
                              then_branch=_branch("then", "Mul", 2.0),
                              else_branch=_branch("else", "Add", 1.0))]
    model = gc.onnx.load(_model(nodes, [_vi("x", [2, 3]), _vi("c", [], TensorProto.BOOL)],
                                [_vi("y", [2, 3])]))
    with gc.Graph(), pytest.raises(gc.onnx.UnsupportedError,
                                   match=r"'choose' \(If, opset 17\).*condition.*data"):
        model(*model.placeholders())


def _for_loop_body(data_dependent=False):
    """y = carry * a + i * b (i the iteration number, b an outer tensor); the new carry is
    y, the scan output y * 2. The condition is passed on, or (data_dependent) recomputed as
    sum(y) < 100."""
    nodes = [
        helper.make_node("Cast", ["i"], ["i_float"], to=F32),
        helper.make_node("Mul", ["i_float", "b"], ["row"]),
        helper.make_node("Mul", ["carry", "a"], ["scaled"]),
        helper.make_node("Add", ["scaled", "row"], ["carry_out"]),
        helper.make_node("Add", ["carry_out", "carry_out"], ["scan_out"]),
    ]
    if data_dependent:
        nodes += [helper.make_node("ReduceSum", ["carry_out"], ["total"], keepdims=0),
                  _const("limit", np.float32(100)),
                  helper.make_node("Less", ["total", "limit"], ["cond_out"])]
    else:
        nodes.append(helper.make_node("Identity", ["cond_in"], ["cond_out"]))
    return helper.make_graph(nodes, "body", [
        _vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL),
        _vi("carry", [3])], [_vi("cond_out", [], TensorProto.BOOL), _vi("carry_out", [3]),
                             _vi("scan_out", [3])])


def _loop_model(data_dependent=False):
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"], end=1),
        helper.make_node("Squeeze", ["shape"], ["M"]),
        _const("axis0", np.array([0], np.int64)),
        helper.make_node("ReduceSum", ["x", "axis0"], ["b"], keepdims=0),
        _const("cond", np.array(True)),
        helper.make_node("Loop", ["M", "cond", "c0"], ["c_final", "ys"], name="steps",
                         body=_for_loop_body(data_dependent)),
    ]
    a = numpy_helper.from_array(np.array([0.5, -1.0, 0.9], np.float32), "a")
    return _model(nodes, [_vi("x", ["T", 3]), _vi("c0", [3])],
                  [_vi("c_final", [3]), _vi("ys", ["T", 3])], [a])


def test_for_loop_maps_onto_scan_with_a_symbolic_trip_count():
    model = _loop_model()
    imported = gc.onnx.load(model)
    with gc.Graph():
        x, c0 = imported.placeholders()
        c_final, ys = imported(x, c0)
        assert str(ys.shape[0]) == "T"
        assert any(n.op.name == "scan" for n in c_final.graph.nodes)
    rng = np.random.default_rng(1)
    for steps in (1, 5):
        got, want = _run_both(model, rng.normal(size=(steps, 3)).astype(np.float32),
                              rng.normal(size=3).astype(np.float32))
        _assert_same(got, want)


def test_for_loop_is_differentiable():
    """The gradient w.r.t. the captured initializer `a` flows through the loop: compared
    with central differences in float64."""
    model = _loop_model()
    imported = gc.onnx.load(model)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 3)).astype(np.float32)
    c0 = rng.normal(size=3).astype(np.float32)
    with gc.Graph():
        xp, cp = imported.placeholders()
        (a,) = imported.parameters()
        c_final, ys = imported(xp, cp)
        loss = (c_final * c_final).sum() + ys.sum()
        fn = gc.compile([xp, cp], [loss, gc.grad(loss, a)])
        _, g = fn(x, c0)
    a0 = imported.initializers["a"].astype(np.float64)

    def f(av):
        c, total = c0.astype(np.float64), 0.0
        b = x.astype(np.float64).sum(axis=0)
        for i in range(len(x)):
            c = c * av + i * b
            total += (2 * c).sum()
        return (c * c).sum() + total

    eps = 1e-6
    num = [(f(a0 + eps * e) - f(a0 - eps * e)) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(g, num, rtol=1e-4, atol=1e-4)


def test_data_dependent_loop_condition_is_an_error_naming_node_op_and_opset():
    model = gc.onnx.load(_loop_model(data_dependent=True))
    with gc.Graph(), pytest.raises(gc.onnx.UnsupportedError,
                                   match=r"'steps' \(Loop, opset 17\).*condition.*data"):
        model(*model.placeholders())


def test_scan_with_reverse_input_and_output_axis():
    """A running sum over axis 1 read in reverse (ONNX Scan, opset 16), the stacked sums
    written along axis 1."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "x_t"], ["s_out"]),
         helper.make_node("Mul", ["s_out", "x_t"], ["y_t"])],
        "body", [_vi("s", [2]), _vi("x_t", [2])], [_vi("s_out", [2]), _vi("y_t", [2])])
    nodes = [helper.make_node("Scan", ["s0", "xs"], ["s_final", "ys"], body=body,
                              num_scan_inputs=1, scan_input_axes=[1],
                              scan_input_directions=[1], scan_output_axes=[1])]
    model = _model(nodes, [_vi("s0", [2]), _vi("xs", [2, 5])],
                   [_vi("s_final", [2]), _vi("ys", [2, 5])], opset=16)
    rng = np.random.default_rng(3)
    got, want = _run_both(model, rng.normal(size=2).astype(np.float32),
                          rng.normal(size=(2, 5)).astype(np.float32))
    _assert_same(got, want)


def _recurrent_model(op, gates, hidden, direction, layout, with_state, **attrs):
    rng = np.random.default_rng(4)
    num_dir = 2 if direction == "bidirectional" else 1
    D, N, T = 3, 2, 4
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32) * 0.5, name)
             for name, shape in (("W", (num_dir, gates * hidden, D)),
                                 ("R", (num_dir, gates * hidden, hidden)),
                                 ("B", (num_dir, 2 * gates * hidden)))]
    names = ["X", "W", "R", "B", ""]
    x_shape = [N, T, D] if layout else [T, N, D]
    state_shape = [N, num_dir, hidden] if layout else [num_dir, N, hidden]
    inputs = [_vi("X", x_shape)]
    n_states = 2 if op == "LSTM" else 1
    if with_state:
        for s in ("h0", "c0")[:n_states]:
            names.append(s)
            inputs.append(_vi(s, state_shape))
        if op == "LSTM":
            names.append("P")
            inits.append(numpy_helper.from_array(
                rng.normal(size=(num_dir, 3 * hidden)).astype(np.float32), "P"))
    outs = ["Y", "Y_h", "Y_c"][:1 + n_states]
    node = helper.make_node(op, names, outs, hidden_size=hidden, direction=direction,
                            layout=layout, **attrs)
    y_shape = [N, T, num_dir, hidden] if layout else [T, num_dir, N, hidden]
    model = _model([node], inputs, [_vi("Y", y_shape)] +
                   [_vi(o, state_shape) for o in outs[1:]], inits, opset=14)
    arrays = [rng.normal(size=x_shape).astype(np.float32)] + \
        [rng.normal(size=state_shape).astype(np.float32) for _ in inputs[1:]]
    return model, arrays


@pytest.mark.parametrize("op,gates,direction,layout,with_state,attrs", [
    ("LSTM", 4, "bidirectional", 1, True, {}),
    ("LSTM", 4, "reverse", 0, False, {}),
    ("GRU", 3, "forward", 0, True, {"linear_before_reset": 1}),
    ("GRU", 3, "bidirectional", 1, False, {}),
    ("RNN", 1, "reverse", 0, True, {"activations": ["Relu"]}),
])
def test_recurrent_ops_equal_onnxruntime(op, gates, direction, layout, with_state, attrs):
    model, arrays = _recurrent_model(op, gates, 5, direction, layout, with_state, **attrs)
    got, want = _run_both(model, *arrays, reference=bool(layout))  # (onnxruntime: layout 0)
    _assert_same(got, want)


def test_lstm_partial_sequence_lengths_are_refused():
    model, _ = _recurrent_model("LSTM", 4, 5, "forward", 0, False)
    node = model.graph.node[0]
    node.input[4] = "lens"
    model.graph.initializer.append(numpy_helper.from_array(np.array([4, 2], np.int32), "lens"))
    imported = gc.onnx.load(model)
    with gc.Graph(), pytest.raises(gc.onnx.UnsupportedError, match="LSTM.*sequence_lens"):
        imported(*imported.placeholders())


def test_scan_opset8_loops_over_the_batch_too():
    """Scan-8 has a batch axis first and a body that sees one example: an outer gc.scan over
    the batch around the loop over the sequence (here read in reverse)."""
    body = helper.make_graph(
        [helper.make_node("Add", ["s", "x_t"], ["s_out"]),
         helper.make_node("Mul", ["s_out", "x_t"], ["y_t"])],
        "body", [_vi("s", [2]), _vi("x_t", [2])], [_vi("s_out", [2]), _vi("y_t", [2])])
    nodes = [helper.make_node("Scan", ["", "s0", "xs"], ["s_final", "ys"], body=body,
                              num_scan_inputs=1, directions=[1])]
    model = _model(nodes, [_vi("s0", [3, 2]), _vi("xs", [3, 4, 2])],
                   [_vi("s_final", [3, 2]), _vi("ys", [3, 4, 2])], opset=8)
    rng = np.random.default_rng(7)
    got, want = _run_both(model, rng.normal(size=(3, 2)).astype(np.float32),
                          rng.normal(size=(3, 4, 2)).astype(np.float32))
    _assert_same(got, want)
