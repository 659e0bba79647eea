"""Crafted and malformed ONNX models: every one is refused with graphc's own error naming
the node (its name and op type) or the output, never a raw IndexError/KeyError/ValueError;
and distinct dim_params stay distinct dimensions."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.errors import GraphError
from graphc.onnx.errors import UnsupportedError

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

F32 = TensorProto.FLOAT


def _vi(name, shape, dtype=F32):
    return helper.make_tensor_value_info(name, dtype, shape)


def _ints(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name=name)


def _floats(name, values):
    return numpy_helper.from_array(np.array(values, np.float32), name=name)


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _one(op, inputs, attrs=None, shape=(2, 3), inits=(), outputs=("y",), opset=17, ins=None):
    """A model of one node named 'n1' over an input x of `shape`."""
    node = helper.make_node(op, list(inputs), list(outputs), name="n1", **(attrs or {}))
    ins = [_vi("x", list(shape))] if ins is None else ins
    return _model([node], ins, [_vi(o, None) for o in outputs], inits, opset)


_X4 = [_vi("x", [1, 4, 6, 6])]
_W = _floats("w", np.ones((2, 4, 3, 3)))

# (id, model, a fragment of the expected message)
CASES = [
    ("reshape-0-past-rank", _one("Reshape", ["x", "s"], shape=(2,), inits=[_ints("s", [4, 0])]),
     "the 0 at position 1"),
    ("constant-of-shape-huge", _one("ConstantOfShape", ["s"], {"value": _floats("v", [1.0])},
                                    inits=[_ints("s", [2**62, 4])]), "larger than any array"),
    ("constant-of-shape-negative", _one("ConstantOfShape", ["s"], inits=[_ints("s", [-3, 4])]),
     "negative"),
    ("constant-of-shape-empty-value", _one("ConstantOfShape", ["s"], {"value": _floats("v", [])},
                                           inits=[_ints("s", [3])]), "0 elements"),
    ("missing-required-attribute", _one("Concat", ["x", "x"]), "required attribute axis"),
    ("attribute-of-wrong-type", _one("Softmax", ["x"], {"axis": "abc"}), "type STRING"),
    ("too-few-inputs", _one("Add", ["x"]), "1 inputs"),
    ("too-many-inputs", _one("Relu", ["x", "x"]), "2 inputs"),
    ("no-outputs", _one("Relu", ["x"], outputs=()), "0 outputs"),
    ("concat-axis", _one("Concat", ["x", "x"], {"axis": 5}), "axis 5 is out of range"),
    ("concat-axis-folded", _one("Concat", ["a", "a"], {"axis": 5}, inits=[_ints("a", [1, 2])]),
     "axis 5 is out of range"),
    ("transpose-perm", _one("Transpose", ["x"], {"perm": [0, 5]}), "not a permutation"),
    ("transpose-perm-repeated", _one("Transpose", ["x"], {"perm": [1, 1]}), "not a permutation"),
    ("squeeze-axis", _one("Squeeze", ["x", "a"], shape=(1, 3), inits=[_ints("a", [7])]),
     "axis 7 is out of range"),
    ("unsqueeze-axis", _one("Unsqueeze", ["x", "a"], inits=[_ints("a", [9])]),
     "axis 9 is out of range"),
    ("unsqueeze-repeated", _one("Unsqueeze", ["x", "a"], inits=[_ints("a", [0, 0])]),
     "repeat an axis"),
    ("split-axis", _one("Split", ["x"], {"axis": 4}, outputs=("y", "z")), "axis 4"),
    ("split-sizes-vs-outputs", _one("Split", ["x", "s"], {"axis": 1}, outputs=("y", "z"),
                                    inits=[_ints("s", [1, 1, 1])]), "for 2 outputs"),
    ("slice-axis", _one("Slice", ["x", "s", "e", "a"],
                        inits=[_ints("s", [0]), _ints("e", [1]), _ints("a", [5])]),
     "axis 5 is out of range"),
    ("slice-lengths", _one("Slice", ["x", "s", "e"], inits=[_ints("s", [0, 0]), _ints("e", [1])]),
     "different lengths"),
    ("gather-axis", _one("Gather", ["x", "i"], {"axis": 3}, inits=[_ints("i", [0])]),
     "axis 3 is out of range"),
    ("gather-index", _one("Gather", ["x", "i"], inits=[_ints("i", [7])]), "index 7"),
    ("gather-index-folded", _one("Gather", ["a", "i"], inits=[_ints("a", [1, 2]),
                                                               _ints("i", [-7])]), "index -7"),
    ("pad-crops-everything", _one("Pad", ["x", "p"], inits=[_ints("p", [0, -5, 0, 0])]),
     "leave nothing"),
    ("pad-axes", _one("Pad", ["x", "p", "", "a"], opset=18,
                      inits=[_ints("p", [1, 1]), _ints("a", [4])]), "axis 4 is out of range"),
    ("flatten-axis", _one("Flatten", ["x"], {"axis": 5}), "axis 5 is out of range"),
    ("reduce-axes", _one("ReduceSum", ["x", "a"], inits=[_ints("a", [5])]), "axis 5"),
    ("argmax-axis", _one("ArgMax", ["x"], {"axis": 5}), "axis 5"),
    ("layer-norm-axis", _one("LayerNormalization", ["x", "s"], {"axis": 5},
                             inits=[_floats("s", [1, 1, 1])]), "axis 5"),
    ("conv-pads-length", _one("Conv", ["x", "w"], {"pads": [1]}, ins=_X4, inits=[_W]),
     "pads [1] have 1 entries, expected 4"),
    ("conv-negative-pads", _one("Conv", ["x", "w"], {"pads": [-1] * 4}, ins=_X4, inits=[_W]),
     "must not be negative"),
    ("conv-strides-length", _one("Conv", ["x", "w"], {"strides": [1]}, ins=_X4, inits=[_W]),
     "strides [1]"),
    ("conv-group-0", _one("Conv", ["x", "w"], {"group": 0}, ins=_X4, inits=[_W]), "group=0"),
    ("conv-kernel-shape", _one("Conv", ["x", "w"], {"kernel_shape": [5, 5]}, ins=_X4,
                               inits=[_W]), "kernel_shape [5, 5]"),
    ("pool-strides-length", _one("AveragePool", ["x"], {"kernel_shape": [2, 2], "strides": [2],
                                                        "ceil_mode": 1}, ins=_X4), "strides [2]"),
    ("conv-transpose-output-shape", _one("ConvTranspose", ["x", "w"], {"output_shape": [3]},
                                         ins=_X4, inits=[_W]), "output_shape [3]"),
    ("depth-to-space-blocksize", _one("DepthToSpace", ["x"], {"blocksize": 0}, ins=_X4),
     "blocksize 0"),
    ("range-delta-0", _one("Range", ["a", "b", "c"],
                           inits=[_ints("a", 0), _ints("b", 5), _ints("c", 0)]), "delta 0"),
    ("range-huge", _one("Range", ["a", "b", "c"],
                        inits=[_ints("a", 0), _ints("b", 2**62), _ints("c", 1)]),
     "larger than any array"),
    ("expand-incompatible", _one("Expand", ["x", "s"], inits=[_ints("s", [4, 5])]),
     "does not broadcast"),
    ("tile-huge", _one("Tile", ["a", "r"], inits=[_ints("a", [1]), _ints("r", [2**62])]),
     "larger than any array"),
    ("one-hot-depth-empty", _one("OneHot", ["i", "d", "v"], ins=[_vi("i", [3], TensorProto.INT64)],
                                 inits=[_ints("d", []), _floats("v", [0, 1])]), "depth has 0"),
    ("trilu-rank-1", _one("Trilu", ["x"], shape=(3,)), "rank 1"),
    ("einsum-unknown-output-letter", _one("Einsum", ["x"], {"equation": "ab->z"}), "'ab->z'"),
    ("group-norm-0-groups", _one("GroupNormalization", ["x", "s", "b"], {"num_groups": 0},
                                 ins=_X4, opset=21, inits=[_floats("s", [1] * 4),
                                                           _floats("b", [1] * 4)]),
     "num_groups=0"),
    ("scan-body-missing", _one("Scan", ["x"], {"num_scan_inputs": 1}), "required attribute body"),
    ("gemm-rank-3", _one("Gemm", ["x", "w"], shape=(2, 3, 4),
                         inits=[_floats("w", np.ones((4, 5)))]),
     "Gemm takes two matrices"),
    ("gemm-c-widens", _one("Gemm", ["x", "w", "c"], shape=(2, 3),
                           inits=[_floats("w", np.ones((3, 5))), _floats("c", np.ones((4, 5)))]),
     "does not broadcast to the product's shape"),
    ("gemm-c-rank-3", _one("Gemm", ["x", "w", "c"], shape=(2, 3),
                           inits=[_floats("w", np.ones((3, 5))), _floats("c", np.ones((1, 1, 5)))]),
     "does not broadcast"),
    ("instance-norm-scalar-scale", _one("InstanceNormalization", ["x", "s", "s"], ins=_X4,
                                        inits=[_floats("s", 1.0)]), "one value per channel"),
    ("instance-norm-wrong-length", _one("InstanceNormalization", ["x", "s", "s"], ins=_X4,
                                        inits=[_floats("s", [1, 1, 1])]), "must be (4,)"),
    ("instance-norm-rank-2", _one("InstanceNormalization", ["x", "s", "s"],
                                  inits=[_floats("s", [1, 1, 1])]), "rank 2"),
    ("group-norm-scale-length", _one("GroupNormalization", ["x", "s", "b"], {"num_groups": 2},
                                     ins=_X4, opset=21, inits=[_floats("s", [1] * 3),
                                                               _floats("b", [1] * 4)]),
     "scale has shape (3,)"),
    ("nll-target-shape", _one("NegativeLogLikelihoodLoss", ["x", "t"], shape=(2, 3),
                              inits=[_ints("t", [0, 1, 2])]), "target of shape (3,)"),
    ("nll-weight-length", _one("NegativeLogLikelihoodLoss", ["x", "t", "w"], shape=(2, 3),
                               inits=[_ints("t", [0, 1]), _floats("w", [1, 1])]),
     "weight has shape (2,)"),
]


@pytest.mark.parametrize("model,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_node_is_refused_naming_the_node(model, fragment):
    with gc.Graph():
        imported = gc.onnx.load(model)
        with pytest.raises(GraphError) as info:
            imported(*imported.placeholders())
    message = str(info.value)
    op_type = model.graph.node[0].op_type
    assert f"ONNX node 'n1' ({op_type}, opset" in message, message
    assert fragment in message, message


def test_undefined_graph_output_is_refused_at_load_naming_it():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])],
                   [_vi("nope", None)])
    with pytest.raises(UnsupportedError, match="output 'nope' is not produced"):
        gc.onnx.load(model)


def test_large_constant_of_shape_stays_an_op():
    """A ConstantOfShape too large to fold at import is a graphc op (not a NumPy array)."""
    model = _one("ConstantOfShape", ["s"], {"value": _floats("v", [2.0])},
                 inits=[_ints("s", [1 << 11, 1 << 10])])
    with gc.Graph():
        imported = gc.onnx.load(model)
        out = imported(*imported.placeholders())
        assert out.shape == (1 << 11, 1 << 10)
        got = gc.compile(imported.placeholders()[:0], out)()
    assert got.shape == (1 << 11, 1 << 10) and np.all(got == 2.0)


def _relu_per_input(*inputs):
    nodes = [helper.make_node("Relu", [v.name], [f"y{i}"]) for i, v in enumerate(inputs)]
    return _model(nodes, list(inputs), [_vi(f"y{i}", None) for i in range(len(inputs))])


@pytest.mark.parametrize("params", [("a-b", "a_b"), ("a b", "a_b"), ("a" * 100, "a" * 99 + "b"),
                                    ("größe", "gr_xf6_xdfe")])
def test_distinct_dim_params_stay_distinct(params):
    model = _relu_per_input(_vi("x", [params[0], 2]), _vi("z", [params[1], 2]))
    imported = gc.onnx.load(model)
    (_, sx, _), (_, sz, _) = imported.input_types()
    assert sx[0] != sz[0]
    assert gc.onnx.load(model).input_types() == imported.input_types()  # deterministic
    with gc.Graph():
        xs = imported.placeholders()
        fn = gc.compile(xs, imported(*xs))
        a, b = fn(np.ones((4, 2), np.float32), np.ones((5, 2), np.float32))
    assert a.shape == (4, 2) and b.shape == (5, 2)


def test_same_dim_param_is_one_dim_and_non_ascii_imports():
    model = _relu_per_input(_vi("x", ["größe", 2]), _vi("z", ["größe", 2]))
    imported = gc.onnx.load(model)
    (_, sx, _), (_, sz, _) = imported.input_types()
    assert sx == sz and sx[0].isidentifier() and sx[0].isascii()
    with gc.Graph():
        xs = imported.placeholders()
        fn = gc.compile(xs, imported(*xs))
        fn(np.ones((4, 2), np.float32), np.ones((4, 2), np.float32))
        with pytest.raises(gc.ShapeError):
            fn(np.ones((4, 2), np.float32), np.ones((5, 2), np.float32))


def test_unnamed_dims_never_meet_a_dim_param():
    """An unknown dim without a dim_param is a dim of its own, even where its made-up name
    would be some dim_param's (x's dim 0 and the dim_param 'x_0'), or another input's."""
    model = _relu_per_input(_vi("x", [None, 2]), _vi("z", ["x_0", 2]), _vi("x:0", [None, 2]))
    imported = gc.onnx.load(model)
    dims = [shape[0] for _, shape, _ in imported.input_types()]
    assert len(set(dims)) == 3 and dims[1] == "x_0"
    with gc.Graph():
        xs = imported.placeholders()
        fn = gc.compile(xs, imported(*xs))
        outs = fn(*(np.ones((n, 2), np.float32) for n in (3, 4, 5)))
    assert [o.shape[0] for o in outs] == [3, 4, 5]


def test_a_raw_error_no_check_foresaw_still_names_the_node(monkeypatch):
    """The net under every translation: an IndexError from a case no check foresaw becomes
    graphc's error naming the node and the raw error."""
    from graphc.onnx import table

    def broken(ctx, x):
        return [][0]

    monkeypatch.setitem(table.HANDLERS, "Relu", broken)
    with gc.Graph():
        imported = gc.onnx.load(_one("Relu", ["x"]))
        with pytest.raises(GraphError, match=r"(?s)'n1' \(Relu.*IndexError"):
            imported(*imported.placeholders())


def _string(name, text):
    return helper.make_tensor(name, TensorProto.STRING, [1], [text.encode()])


@pytest.mark.parametrize("where", ["initializer", "constant", "subgraph"])
def test_a_string_tensor_is_refused_and_never_evaluated(tmp_path, where):
    """A STRING tensor compared by Equal reached sympy's parser, which evaluates a string:
    the file ran code at import. graphc has no string tensors, so they are refused at the
    file's boundary, wherever a tensor value can sit, and nothing is run."""
    marker = tmp_path / "ran"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    equal = helper.make_node("Equal", ["s", "t"], ["e"])
    tail = [helper.make_node("Cast", ["e"], ["ef"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["x", "ef"], ["y"])]
    inits = [_string("s", payload), _string("t", "1")]
    if where == "initializer":
        model = _model([equal, *tail], [_vi("x", [1])], [_vi("y", [1])], inits)
    elif where == "constant":
        constants = [helper.make_node("Constant", [], [t.name], value=t) for t in inits]
        model = _model([*constants, equal, *tail], [_vi("x", [1])], [_vi("y", [1])])
    else:
        branch = helper.make_graph([equal], "then", [], [_vi("e", [1], TensorProto.BOOL)],
                                   inits)
        cond = helper.make_node("If", ["c"], ["e"], then_branch=branch, else_branch=branch)
        model = _model([helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(
            np.array(True), "c")), cond, *tail], [_vi("x", [1])], [_vi("y", [1])])
    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    with pytest.raises(UnsupportedError, match="STRING"):
        imported = gc.onnx.load(path)
        with gc.Graph():
            imported(*imported.placeholders())
    assert not marker.exists()


def test_shape_arithmetic_never_parses_a_string():
    """Defense behind the boundary: the importer's and the IR's sympy conversions are strict,
    so a string that got that far would be an error, not code."""
    import sympy

    from graphc.onnx.ops_math import _decided_equal

    with pytest.raises(sympy.SympifyError):
        _decided_equal(np.array(["__import__('os')"], dtype=object), np.array([1]))


def _run(model, *arrays):
    with gc.Graph():
        imported = gc.onnx.load(model)
        inputs = imported.placeholders()
        out = imported(*inputs)
        return gc.compile(inputs, out)(*arrays)


@pytest.mark.parametrize("case", ["range", "one_hot"])
def test_a_small_file_cannot_make_the_import_build_a_huge_constant(case):
    """Range(0, 3e8) in a 178-byte file took 7 GB at import; OneHot of depth 3e8 4.8 GB. What
    the import builds is bounded per model (FOLD_BUDGET); a large legitimate Range still
    imports (test_a_range_of_a_million_and_a_half_imports)."""
    if case == "range":
        nodes = [helper.make_node("Range", ["s", "l", "d"], ["y"], name="n1")]
        inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
                 (("s", 0), ("l", 300_000_000), ("d", 1))]
        model = _model(nodes, [], [_vi("y", None, TensorProto.INT64)], inits)
    else:
        nodes = [helper.make_node("OneHot", ["x", "depth", "values"], ["y"], name="n1")]
        inits = [numpy_helper.from_array(np.array(300_000_000, np.int64), "depth"),
                 _floats("values", [0, 1])]
        model = _model(nodes, [_vi("x", [2], TensorProto.INT64)], [_vi("y", None)], inits)
    with pytest.raises(UnsupportedError, match="300,000,000"):
        _run(model, *([np.array([1, 2])] if case == "one_hot" else []))


def test_broadcast_folds_that_would_grow_stay_graph_operations():
    """Two ConstantOfShape of [2000, 1] and [1, 1000] folded into a 2,000,000-element array at
    import (a 205-byte file of [40000, 1] and [1, 20000] into 3 GB): beyond the fold limit
    the sum is computed when the model runs."""
    shapes = [numpy_helper.from_array(np.array(s, np.int64), n)
              for n, s in (("sa", [2000, 1]), ("sb", [1, 1000]))]
    one = numpy_helper.from_array(np.array([1.5], np.float32), "one")
    nodes = [helper.make_node("ConstantOfShape", ["sa"], ["a"], value=one),
             helper.make_node("ConstantOfShape", ["sb"], ["b"], value=one),
             helper.make_node("Add", ["a", "b"], ["y"], name="n1")]
    model = _model(nodes, [], [_vi("y", None)], shapes)
    with gc.Graph():
        imported = gc.onnx.load(model)
        out = imported()
        assert isinstance(out, gc.Tensor) and out.node.op.name != "constant"
        np.testing.assert_array_equal(gc.compile([], out)(), np.full((2000, 1000), 3.0))


@pytest.mark.parametrize("op,upper,k", [("Trilu", 1, 3), ("Trilu", 0, -2), ("EyeLike", None, 1)])
def test_large_diagonal_masks_are_built_when_the_model_runs(op, upper, k):
    """Trilu's mask and EyeLike's matrix were folded at import whatever the input's declared
    size (a 60000 x 60000 Trilu built 3.6 GB there); past the fold limit they come from a row
    and a column of indices, with the same values."""
    n, m = 1100, 1000
    if op == "Trilu":
        node = helper.make_node("Trilu", ["x", "k"], ["y"], name="n1", upper=upper)
        inits = [numpy_helper.from_array(np.array(k, np.int64), "k")]
    else:
        node = helper.make_node("EyeLike", ["x"], ["y"], name="n1", k=k)
        inits = []
    model = _model([node], [_vi("x", [n, m])], [_vi("y", None)], inits)
    x = np.random.default_rng(0).normal(size=(n, m)).astype(np.float32)
    want = (np.triu(x, k) if upper else np.tril(x, k)) if op == "Trilu" else \
        np.eye(n, m, k, dtype=np.float32)
    np.testing.assert_array_equal(_run(model, x), want)


def test_external_data_negative_dims_and_empty_files_are_refused(tmp_path):
    """Handed bytes, an initializer with external data was read from the current directory
    (/etc/passwd from /); a dim of -4 loaded as 4; an empty file loaded as an empty model."""
    ext = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    ext.data_location = TensorProto.EXTERNAL
    ext.ClearField("raw_data")
    ext.external_data.add(key="location", value="etc/passwd")
    ext.external_data.add(key="length", value="16")
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    model = _model(nodes, [_vi("x", [4])], [_vi("y", [4])], [ext])
    with pytest.raises(UnsupportedError, match="external file"):
        gc.onnx.load(model.SerializeToString())
    negative = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    negative.dims[:] = [-4]
    with pytest.raises(UnsupportedError, match="negative dim"):
        gc.onnx.load(_model(nodes, [_vi("x", [4])], [_vi("y", [4])], [negative]))
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(UnsupportedError, match="is empty"):
        gc.onnx.load(tmp_path / "empty.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(UnsupportedError, match="not a readable ONNX model"):
        gc.onnx.load(tmp_path / "junk.onnx")
    short = numpy_helper.from_array(np.zeros(1, np.float32), "w")
    short.dims[:] = [2**40]
    with pytest.raises(UnsupportedError, match="does not hold its values"):
        gc.onnx.load(_model(nodes, [_vi("x", [4])], [_vi("y", [4])], [short]))


@pytest.mark.parametrize("dim", ["T", "Min", "Max", "floor"])
def test_a_dim_named_like_a_function_imports(dim):
    """The slice-bound check evaluated its bounds through sympy.lambdify with the file's dim
    names as arguments: a dim named Min hid the function Min, and the model did not import."""
    const = [helper.make_node("Constant", [], [n], value=numpy_helper.from_array(
        np.array(v, np.int64))) for n, v in (("zero", [0]), ("two", [2]))]
    nodes = const + [helper.make_node("Shape", ["x"], ["shape"]),
                     helper.make_node("Gather", ["shape", "zero"], ["t"]),
                     helper.make_node("Min", ["two", "t"], ["end"]),
                     helper.make_node("Slice", ["x", "zero", "end", "zero"], ["y"], name="n1")]
    model = _model(nodes, [_vi("x", [dim, 3])], [_vi("y", None)])
    x = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(_run(model, x), x[:2])


def test_a_range_of_a_million_and_a_half_imports():
    """torch.arange(x.shape[0]) on a 1.5M-element input: within the model's budget."""
    nodes = [helper.make_node("Range", ["s", "l", "d"], ["r"], name="n1"),
             helper.make_node("Cast", ["r"], ["rf"], to=F32),
             helper.make_node("Add", ["x", "rf"], ["y"])]
    inits = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in
             (("s", 0), ("l", 1_500_000), ("d", 1))]
    model = _model(nodes, [_vi("x", [1_500_000])], [_vi("y", None)], inits)
    x = np.ones(1_500_000, np.float32)
    np.testing.assert_array_equal(_run(model, x), x + np.arange(1_500_000, dtype=np.float32))


def test_a_gather_that_would_grow_stays_a_graph_operation():
    """A Gather of 200 rows of a known [1, 2^20] array folded 200 x 2^20 at import (a
    407-byte file, 2.5 GB); it runs in the graph now, with the same values."""
    one = numpy_helper.from_array(np.array([2.0], np.float32), "one")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["data"], value=one),
             helper.make_node("Gather", ["data", "ids"], ["g"], name="n1", axis=0),
             helper.make_node("ReduceSum", ["g"], ["y"], keepdims=0)]
    inits = [numpy_helper.from_array(np.array([1, 2**20], np.int64), "shape"),
             numpy_helper.from_array(np.zeros(200, np.int64), "ids")]
    model = _model(nodes, [], [_vi("y", None)], inits)
    with gc.Graph():
        imported = gc.onnx.load(model)
        out = imported()
        assert out.node.op.name != "constant"
        assert float(gc.compile([], out)()) == 2.0 * 200 * 2**20


def test_a_bfloat16_initializer_imports_through_its_cast():
    """The check that keeps strings out refused bfloat16 (NumPy's extension dtype) too."""
    from onnx import helper as h

    w = h.make_tensor("w", TensorProto.BFLOAT16, [2], [1.5, -2.0])
    nodes = [helper.make_node("Cast", ["w"], ["wf"], to=F32),
             helper.make_node("Add", ["x", "wf"], ["y"])]
    model = _model(nodes, [_vi("x", [2])], [_vi("y", None)], [w])
    np.testing.assert_array_equal(_run(model, np.zeros(2, np.float32)), [1.5, -2.0])


@pytest.mark.parametrize("k", [2**63 - 1, -(2**63), 5000, -5000])
def test_a_large_trilu_with_an_extreme_k_keeps_onnx_s_answer(k):
    """Rows plus k overflowed int64 on the large-matrix path (k = 2^63 - 1 kept 1,099,000
    elements where onnxruntime keeps none)."""
    n, m = 1100, 1000
    node = helper.make_node("Trilu", ["x", "k"], ["y"], name="n1", upper=1)
    model = _model([node], [_vi("x", [n, m])], [_vi("y", None)],
                   [numpy_helper.from_array(np.array(k, np.int64), "k")])
    x = np.ones((n, m), np.float32)
    want = np.triu(x, max(-n, min(k, m)))
    np.testing.assert_array_equal(_run(model, x), want)


def test_a_chain_of_concatenations_cannot_fold_past_the_budget():
    """Concat(x, x) doubled at every node and each one folded (a 364-byte file, 2 GB): past
    FOLD_LIMIT a concatenation draws on the model's budget, then stays a graph operation."""
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["c0"], value=one)]
    for i in range(8):  # 2^20 -> 2^28 elements if every step folded
        nodes.append(helper.make_node("Concat", [f"c{i}", f"c{i}"], [f"c{i + 1}"], axis=0))
    nodes.append(helper.make_node("ReduceSum", ["c8"], ["y"], keepdims=0))
    model = _model(nodes, [], [_vi("y", None, TensorProto.INT64)],
                   [numpy_helper.from_array(np.array([2**20], np.int64), "shape")])
    import tracemalloc

    tracemalloc.start()
    try:
        with gc.Graph():
            out = gc.onnx.load(model)()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 600 << 20 and out.node.op.name != "constant"


def test_a_dim_compared_with_zero_is_left_to_run_time():
    """Dims were taken as positive: Equal(N, 0) was folded to False at import, and an
    empty batch gave the other branch (onnxruntime: the first)."""
    from onnx import TensorProto
    from onnx import helper as H

    nodes = [H.make_node("Shape", ["x"], ["s"]),
             H.make_node("Gather", ["s", "zero_i"], ["n"], axis=0),
             H.make_node("Equal", ["n", "zero_i"], ["eq"]),
             H.make_node("Where", ["eq", "one_f", "two_f"], ["y"])]
    graph = H.make_graph(nodes, "g", [H.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                ["N", 3])],
                         [H.make_tensor_value_info("y", TensorProto.FLOAT, [])],
                         initializer=[H.make_tensor("zero_i", TensorProto.INT64, [], [0]),
                                      H.make_tensor("one_f", TensorProto.FLOAT, [], [1.0]),
                                      H.make_tensor("two_f", TensorProto.FLOAT, [], [2.0])])
    model = gc.onnx.load(H.make_model(graph, opset_imports=[H.make_opsetid("", 17)]))
    (x,) = model.placeholders()
    f = gc.compile([x], model(x))
    assert float(f(np.zeros((0, 3), np.float32))) == 1.0
    assert float(f(np.zeros((2, 3), np.float32))) == 2.0
