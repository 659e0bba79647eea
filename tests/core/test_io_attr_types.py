"""A file's node attributes are checked as the DSL checks user code: every value has the type
its name says (graphc.io.graphs.ATTR_TYPES, checked here against the registry and every op
case), and axes are checked by the shape rules' own checks (check_axis / check_axes), so a
tampered file is a FormatError naming the node and the attribute, on save and on load."""

import io
import json
import zipfile

import numpy as np
import pytest

import graphc as gc
from graphc.io import FormatError
from graphc.io.graphs import _LEAF_ATTRS, ATTR_TYPES, _reference_attrs, check_attrs
from graphc.ir.graph import topological
from graphc.ops.registry import REGISTRY
from graphc.ops.shape_ops import CONCAT, TRANSPOSE, check_axes, check_axis

A = np.arange(6, dtype=np.float32).reshape(2, 3)


def test_every_attribute_an_op_takes_has_a_type():
    for name, op in REGISTRY.items():
        if name in _LEAF_ATTRS or op.reference is None:
            continue
        schema = _reference_attrs(name)
        if schema is not None:
            missing = sorted(schema[1] - set(ATTR_TYPES))
            assert not missing, f"{name}: no ATTR_TYPES entry for {missing}"


def test_every_op_case_the_dsl_builds_fits_the_attribute_types():
    from tests.op_cases import CASES

    checked = set()
    for case in CASES:
        arrays = case.inputs(np.random.default_rng(0))
        shapes = case.shapes or [np.shape(a) for a in arrays]
        phs = [gc.placeholder(f"p{i}", s, "float32" if np.asarray(a).dtype.kind == "f"
                              else np.asarray(a).dtype)
               for i, (s, a) in enumerate(zip(shapes, arrays))]
        out = case.build(*phs)
        outs = out if isinstance(out, (list, tuple)) else [out]
        for n in topological([o.node for o in outs]):
            check_attrs(n.op, n.attrs, [i.type for i in n.inputs])
            checked.add(n.op.name)
    assert {"sum", "matmul", "transpose", "concat", "conv", "pad", "slice"} <= checked


def _saved(tmp_path):
    x = gc.placeholder("x", (2, 3))
    y = gc.placeholder("y", (3, 2))
    outs = [x.sum(axis=0), gc.matmul(x, y), gc.transpose(x), gc.nn.functional.softmax(x),
            gc.nn.functional.gelu(x), gc.concat([x, x], axis=1), gc.max(x, axis=1)]
    path = tmp_path / "f.gcf"
    gc.save(gc.compile([x, y], outs), path)
    return path


def _tampered(path, op, edit):
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    content = json.loads(files["content.json"])
    hit = [n for n in content["graph"]["nodes"] if n["op"] == op]
    assert hit, op
    edit(hit[0]["attrs"])
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as w:
        for name, data in files.items():
            w.writestr(name, json.dumps(content) if name == "content.json" else data)
    bad = path.with_name("bad.gcf")
    bad.write_bytes(out.getvalue())
    return bad


def tup(*items):
    return {"tuple": list(items)}


@pytest.mark.parametrize("op,edit,message", [
    ("sum", lambda a: a.update(axes=tup(0, 0)), r"node \d+ \(sum\).*repeated axis"),
    ("sum", lambda a: a.update(axes=tup(2)), r"node \d+ \(sum\).*out of range"),
    ("sum", lambda a: a.update(axes=tup(-1)), r"node \d+ \(sum\).*out of range"),
    ("sum", lambda a: a.update(axes=tup(True)), r"node \d+ \(sum\): attribute axes must be"),
    ("sum", lambda a: a.update(axes=0), r"node \d+ \(sum\): attribute axes must be"),
    ("sum", lambda a: a.update(keepdims="True"), r"node \d+ \(sum\): attribute keepdims must "
                                                 r"be a bool, not 'True'"),
    ("sum", lambda a: a.update(keepdims=1), r"attribute keepdims must be a bool"),
    ("max", lambda a: a.update(axes=tup(1, 1)), r"node \d+ \(max\).*repeated axis"),
    ("matmul", lambda a: a.update(ta="yes"), r"node \d+ \(matmul\): attribute ta must be a bool"),
    ("matmul", lambda a: a.update(tb=None), r"attribute tb must be a bool"),
    ("transpose", lambda a: a.update(axes=tup(0, 0)), r"node \d+ \(transpose\)"),
    ("transpose", lambda a: a.update(axes=tup(1.0, 0)), r"attribute axes must be"),
    ("softmax", lambda a: a.update(axis=2), r"node \d+ \(softmax\).*out of range"),
    ("softmax", lambda a: a.update(axis=False), r"attribute axis must be an int"),
    ("concat", lambda a: a.update(axis=-1), r"node \d+ \(concat\).*out of range"),
    ("gelu", lambda a: a.update(approximate="nonsense"), r"attribute approximate must be"),
])
def test_a_mistyped_or_bad_attribute_in_a_file_is_a_format_error(tmp_path, op, edit, message):
    bad = _tampered(_saved(tmp_path), op, edit)
    for backend in ("numpy", "llvm"):
        with pytest.raises(FormatError, match=message):
            gc.load(bad, backend=backend)


def test_the_untampered_file_loads_and_runs(tmp_path):
    path = _saved(tmp_path)
    b = np.ones((3, 2), np.float32)
    for got, want in zip(gc.load(path)(A, b), gc.load(path, backend="llvm")(A, b)):
        np.testing.assert_allclose(got, want, rtol=1e-5)


def test_save_refuses_what_load_would_refuse(tmp_path):
    x = gc.placeholder("x", (2, 3))
    node = x.graph.make_node(REGISTRY["matmul"], [x.node, x.node], {"ta": "yes", "tb": False})
    fn = gc.compile([x], gc.Tensor(node, x.graph))
    with pytest.raises(gc.GraphError, match="attribute ta must be a bool"):
        gc.save(fn, tmp_path / "f.gcf")
    assert not (tmp_path / "f.gcf").exists()


def test_shape_rules_check_axes_however_the_node_is_built():
    x = gc.placeholder("x", (2, 3))
    g = x.graph
    with pytest.raises(gc.ShapeError, match="not a permutation"):
        g.make_node(TRANSPOSE, [x.node], {"axes": (0, 0)})
    with pytest.raises(gc.GraphError, match="tuple of ints"):
        g.make_node(TRANSPOSE, [x.node], {"axes": ("1", "0")})
    with pytest.raises(gc.ShapeError, match="out of range"):
        g.make_node(CONCAT, [x.node, x.node], {"axis": 2})
    with pytest.raises(gc.ShapeError, match="out of range"):
        g.make_node(CONCAT, [x.node, x.node], {"axis": -1})
    with pytest.raises(gc.ShapeError, match="0-d"):
        s = gc.placeholder("s", ())
        gc.concat([s, s])
    assert check_axes((1, 0), 2) == (1, 0) and check_axes((), 0) == ()
    assert check_axis(0, 0) == 0 and check_axis(np.int64(1), 2) == 1
    for bad, error in [((0, 0), "repeated"), ((2,), "out of range"), ((-1,), "out of range"),
                       ((True,), "tuple of ints"), ([0], "tuple of ints")]:
        with pytest.raises(gc.GraphError, match=error):
            check_axes(bad, 2)
    with pytest.raises(gc.GraphError, match="must be an int"):
        check_axis(True, 2)


@pytest.mark.parametrize("op_name,attrs,error", [
    ("sum", {"axes": (0, 0), "keepdims": False}, "repeated"),
    ("max", {"axes": (-1,), "keepdims": False}, "out of range"),
    ("logsumexp", {"axes": (2,), "keepdims": False}, "out of range"),
    ("numel", {"axes": (1, 1), "dtype": np.dtype("float32")}, "repeated"),
    ("argmax", {"axis": 5}, "out of range"),
    ("softmax", {"axis": 2}, "out of range"),
    ("log_softmax", {"axis": "1"}, "must be an int")])
def test_reductions_check_their_axes_however_the_node_is_built(op_name, attrs, error):
    """The reductions' shape rules refused only an axis past the rank: a node built by a
    rewrite or by make_node with a repeated or negative axis passed (the DSL's own checks
    were the only ones)."""
    from graphc.ops.registry import get_op

    x = gc.placeholder("x", (2, 3))
    with pytest.raises(gc.GraphError, match=error):
        x.graph.make_node(get_op(op_name), [x.node], attrs)
