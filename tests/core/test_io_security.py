"""gc.load treats a file as data: nothing in it runs, every field is checked, free text is
kept as it is and reaches generated code only through graphc.ir.text."""

import ast
import copy
import json
import string
import zipfile
from pathlib import Path

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.io import FormatError
from graphc.io.graphs import ArrayTable, decode_attr, encode_attr
from graphc.ir.text import IDENTIFIER, MAX_IDENTIFIER, identifier, is_identifier, source_text

nn = gc.nn
ALLOWED = (FormatError, gc.GraphError, gc.ShapeError, gc.BackendError)
X = np.linspace(-1, 1, 6, dtype=np.float32).reshape(2, 3)
DATA = Path(__file__).parent / "data"


def payloads(sentinel: Path) -> list[str]:
    """Strings that would run code (writing `sentinel`) if a backend printed them verbatim
    into Python source, a comment, a string literal or an LLVM name."""
    write = f"__import__('pathlib').Path({str(sentinel)!r}).write_text('ran')"
    return [
        f"({write} and x0)",  # the reported one: a symbol name that is an expression
        f"x0)\n{write}\n#",  # close a call, then a statement on its own line
        f"'\"\r{write}#;// */ \\ \x00 x0",  # quotes, carriage return, comment breaks, NUL
        f"N\u2028{write}\u2029\x85\\\n  ",  # unicode line separators, a backslash-newline
    ]


def members(path) -> dict:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write_zip(path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def string_fields(tree, path=()):
    """(path, "value" | "key") of every string in a JSON tree: values and object keys."""
    if isinstance(tree, str):
        yield path, "value"
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from string_fields(v, (*path, i))
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield (*path, k), "key"
            yield from string_fields(v, (*path, k))


def mutated(tree, path, kind, payload):
    tree = copy.deepcopy(tree)
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if kind == "value":
        parent[last] = payload
    else:  # rename the key, keeping the order
        items = list(parent.items())
        parent.clear()
        parent.update({payload if k == last else k: v for k, v in items})
    return tree


def is_free_text(member: str, path: tuple, kind: str) -> bool:
    """Fields that are free text: a file with anything there must load and run the same."""
    if member == "manifest.json":
        return path[0] == "metadata" or (kind == "value" and path == ("graphc",))
    if kind == "key" or "sympy" in path or "spec" in path:
        return False
    last = path[-1]
    return last in ("name", "scope", "label", "backend") or (
        len(path) >= 2 and path[-2] == "loc" and last in (0, 2))


# -- the three saved objects, and how to run what comes back ----------------------------------


def _build_function():
    with gc.Graph("step"):
        x = gc.placeholder("x", ("N", 3))
        w = gc.parameter("W", np.arange(6, dtype=np.float32).reshape(3, 2) / 10)
        y = (gc.tanh(x @ w) * 2.0 + 1.0).sum(axis=1)  # a fused elementwise expression
        return gc.compile([x], y), y


def _run_function(path, backend):
    return gc.load(path, backend=backend)(X)


def _run_graph(path, backend):
    g = gc.load(path)
    ins = [gc.Tensor(n, g) for n in g.nodes if n.op.name == "placeholder"]
    return gc.compile(ins, gc.Tensor(g.outputs[0], g), backend=backend)(X)


def _run_module(path, backend):
    model = gc.load(path)
    with gc.Graph():
        x = gc.placeholder("x", ("N", 3))
        return gc.compile([x], model(x), backend=backend)(X)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{kind: (path, runner, expected output)} for a function, a graph and a module."""
    folder = tmp_path_factory.mktemp("saved")
    gc.reset_default_graph()
    fn, y = _build_function()
    gc.save(fn, folder / "function.graphc", metadata={"epoch": 3, "note": "first run"})
    gc.save([y], folder / "graph.graphc")
    model = nn.Sequential(nn.Linear(3, 4, rng=0), nn.ReLU())
    gc.save(model, folder / "module.graphc")
    runners = {"function": _run_function, "graph": _run_graph, "module": _run_module}
    return {kind: (folder / f"{kind}.graphc", run, run(folder / f"{kind}.graphc", "numpy"))
            for kind, run in runners.items()}


# -- (a) the report ----------------------------------------------------------------------------


def test_a_symbol_name_that_is_code_is_refused_and_never_runs(tmp_path):
    sentinel = tmp_path / "PWNED"
    with gc.Graph():
        x = gc.placeholder("x", ("N", 3))
        gc.save(gc.compile([x], gc.exp(x) * 2.0 + 1.0), tmp_path / "f.graphc")
    files = members(tmp_path / "f.graphc")
    text = files["content.json"].decode()
    evil = f"(__import__('pathlib').Path({str(sentinel)!r}).write_text('ran') and x0)"
    assert '"name": "x0"' in text
    files["content.json"] = text.replace('"name": "x0"', f'"name": {json.dumps(evil)}')
    write_zip(tmp_path / "evil.graphc", files)
    for backend in ("numpy", "llvm"):
        with pytest.raises(FormatError, match="symbol"):
            gc.load(tmp_path / "evil.graphc", backend=backend)
    assert not sentinel.exists()


# -- (b) every string field of a saved file, with injection payloads ---------------------------


@pytest.mark.parametrize("kind", ["function", "graph", "module"])
def test_every_string_field_mutated_never_runs_code(saved, tmp_path, kind):
    """Each string (value or key) of manifest.json and content.json is replaced by each
    payload; what loads is run on NumPy — and, with one of the payloads in turn, on LLVM
    (cold compilations are slow: every field is compiled once there)."""
    pytest.importorskip("llvmlite")
    path, run, expected = saved[kind]
    original = members(path)
    sentinel = tmp_path / "PWNED"
    bad = tmp_path / "bad.graphc"
    loaded = refused = on_llvm = 0
    for member in ("manifest.json", "content.json"):
        tree = json.loads(original[member])
        for position, (field, where) in enumerate(string_fields(tree)):
            free = is_free_text(member, field, where)
            for k, payload in enumerate(payloads(sentinel)):
                text = json.dumps(mutated(tree, field, where, payload))
                write_zip(bad, {**original, member: text})
                backends = ("numpy", "llvm") if (position + k) % 4 == 0 else ("numpy",)
                outputs = []
                try:
                    for backend in backends:
                        outputs.append(run(bad, backend))
                except ALLOWED as exc:
                    assert not free, f"free text {member}:{field} ({where}) refused: {exc}"
                    refused += 1
                finally:
                    assert not sentinel.exists(), f"{member}:{field} ({where}) ran code"
                for out in outputs:  # whatever loaded computes what was saved
                    np.testing.assert_allclose(out, expected, rtol=1e-6,
                                               err_msg=f"{member}:{field} ({where})")
                loaded += 1
                on_llvm += len(outputs) == 2
    assert loaded >= 20 and on_llvm >= 5 and refused >= 40  # both kinds of field exercised


# -- (c) whatever gc.save writes, gc.load accepts ----------------------------------------------

tricky = st.text(st.one_of(st.characters(), st.sampled_from(list("'\"\n\r#\\)(;/*\x00\u2028"))),
                 min_size=1, max_size=12)
dim_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,63}", fullmatch=True)


@settings(max_examples=30, deadline=None)
@given(graph_name=tricky, input_name=tricky, param_name=tricky, scope=tricky, dim=dim_names,
       key=tricky, value=tricky)
def test_whatever_save_writes_load_accepts(tmp_path_factory, graph_name, input_name,
                                           param_name, scope, dim, key, value):
    path = tmp_path_factory.mktemp("prop") / "f.graphc"
    with gc.Graph(graph_name) as g, g.name_scope(scope):
        x = gc.placeholder(input_name, (dim, 3))
        w = gc.parameter(param_name, np.full((3, 2), 0.5, np.float32))
        fn = gc.compile([x], gc.tanh(x @ w) * 2.0 + 1.0)
    gc.save(fn, path, metadata={key: value, "list": [value, 1.5]})
    loaded = gc.load(path)
    np.testing.assert_array_equal(loaded(X), fn(X))
    assert loaded.input_names == [input_name]
    assert gc.io.read_metadata(path) == {key: value, "list": [value, 1.5]}
    names = {n.name for n in loaded.graph.nodes if n.op.name in ("placeholder", "parameter")}
    assert names == {input_name, param_name}
    assert {n.scope for n in loaded.graph.nodes if n.op.name == "parameter"} == {scope}
    assert gc.load(path, into=fn) is fn  # a checkpoint of it restores into it


def test_a_free_text_name_saves_loads_and_runs_on_both_backends(tmp_path):
    with gc.Graph("my graph\n# (v2)"):
        x = gc.placeholder("my input (v2)", ("N", 3))
        w = gc.parameter("weights 'W'\n", np.ones((3, 2), np.float32))
        fn = gc.compile([x], gc.exp(x @ w) * 2.0 + 1.0)
    gc.save(fn, tmp_path / "f.graphc")
    for backend in ("numpy", "llvm"):
        loaded = gc.load(tmp_path / "f.graphc", backend=backend)
        assert loaded.input_names == ["my input (v2)"]
        np.testing.assert_allclose(loaded(X), fn(X), rtol=1e-6)
    assert "my_input__v2_ = inputs[0]" in gc.load(tmp_path / "f.graphc").source


# -- dimension names: one grammar, at creation and on load -------------------------------------


@pytest.mark.parametrize("name", ["N M", "x)", "größe", "1N", "", "a" * (MAX_IDENTIFIER + 1),
                                  "N\n", "__import__('os')"])
def test_the_dsl_refuses_dimension_names_outside_the_grammar(name):
    with pytest.raises(gc.ShapeError, match=r"placeholder 'images'.*dimension name"):
        gc.placeholder("images", (name, 3))
    x = gc.placeholder("x", (6,))
    with pytest.raises(gc.ShapeError, match="dimension name"):
        x.reshape((name, 3))


def test_dimension_symbols_must_be_named_dimensions():
    with pytest.raises(gc.ShapeError, match="not a dimension symbol"):
        gc.placeholder("x", (sympy.Symbol("N"), 3))  # no positive/integer assumptions
    x = gc.placeholder("x", (sympy.Symbol("N", positive=True, integer=True), 3))
    assert x.shape[0] == sympy.Symbol("N", positive=True, integer=True)
    assert is_identifier("a" * MAX_IDENTIFIER) and not is_identifier("a" * (MAX_IDENTIFIER + 1))


def function_files(tmp_path) -> dict:
    fn, _ = _build_function()
    gc.save(fn, tmp_path / "f.graphc")
    return members(tmp_path / "f.graphc")


def edit_content(tmp_path, edit) -> Path:
    files = function_files(tmp_path)
    content = json.loads(files["content.json"])
    edit(content)
    return write_zip(tmp_path / "bad.graphc", {**files, "content.json": json.dumps(content)})


def nodes(c):
    return c["graph"]["nodes"]


def placeholder_dim(c):
    return nodes(c)[0]["attrs"]["shape"]["tuple"][0]["sympy"]


def fused(c):
    return next(n for n in nodes(c) if n["op"] == "elemwise")["attrs"]["expr"]["sympy"]


def _symbol_of(tree):
    if tree.get("t") == "Symbol":
        return tree
    for a in tree.get("args", []):
        found = _symbol_of(a)
        if found:
            return found
    return None


@pytest.mark.parametrize("edit,message", [
    (lambda c: placeholder_dim(c).update(name="N M"), "bad dimension name"),
    (lambda c: placeholder_dim(c).update(name="x0"), None),  # a fine name: loads
    (lambda c: placeholder_dim(c).update(assumptions={"negative": True}), "assumptions"),
    (lambda c: placeholder_dim(c).update(assumptions={"pwn": True}), "assumptions"),
    (lambda c: _symbol_of(fused(c)).update(name="x1"), "symbol 'x1'"),
    (lambda c: _symbol_of(fused(c)).update(name="N"), "symbol 'N'"),
    (lambda c: _symbol_of(fused(c)).update(name="x00"), "symbol 'x00'"),
    (lambda c: _symbol_of(fused(c)).update(assumptions={"real": False}), "assumptions"),
])
def test_symbols_are_checked_against_what_graphc_generates(tmp_path, edit, message):
    path = edit_content(tmp_path, edit)
    if message is None:
        np.testing.assert_allclose(gc.load(path)(X), _build_function()[0](X), rtol=1e-6)
        return
    with pytest.raises(FormatError, match=message):
        gc.load(path)


# -- literals, nesting, types ------------------------------------------------------------------


def _deep(depth: int) -> dict:
    tree = {"t": "Symbol", "name": "x0", "assumptions": {"real": True}}
    for _ in range(depth):
        tree = {"t": "exp", "args": [tree]}
    return tree


_X0 = {"t": "Symbol", "name": "x0", "assumptions": {}}
_ONE = {"t": "Integer", "v": "1"}


def _fused_set(tree):
    return lambda c: next(n for n in nodes(c) if n["op"] == "elemwise")["attrs"].update(
        expr={"sympy": tree})


def _dim_set(tree):
    return lambda c: nodes(c)[0]["attrs"].update(shape={"tuple": [{"sympy": tree}, 3]})


def _tuples(depth: int):
    value = 1
    for _ in range(depth):
        value = {"tuple": [value]}
    return value


@pytest.mark.parametrize("edit,message", [
    (_fused_set(_deep(310)), "nested more than"),
    (_fused_set({"t": "Add", "args": [{"t": "Integer", "v": "1"}] * 100_001}), "nodes"),
    (_dim_set({"t": "Integer", "v": "9" * 30}), "integer"),
    (_dim_set({"t": "Integer", "v": "1e3"}), "integer"),
    (_dim_set({"t": "Rational", "p": "1", "q": "0"}), "rational"),
    (_fused_set({"t": "Pow", "args": [{"t": "Integer", "v": "10"},
                                      {"t": "Integer", "v": str(10**18)}]}), "exponent"),
    (_fused_set({"t": "Float", "v": "1.5", "p": 10**6}), "precision"),
    (_fused_set({"t": "Float", "v": "__import__('os')", "p": 53}), "float literal"),
    (_fused_set({"t": "Float", "v": 1.5, "p": 53}), "float literal"),
    (_fused_set({"t": "exp", "args": []}), "bad exp node"),
    (_fused_set({"t": "Function", "args": []}), "unsupported sympy node type"),
    (_fused_set({"t": "Piecewise", "args": [_X0]}), "bad Piecewise node"),
    (_fused_set({"t": "Piecewise", "args": []}), "bad Piecewise node"),
    (_fused_set({"t": "Piecewise", "args": [{"t": "ExprCondPair", "args": [_X0, _ONE]}]}),
     "bad ExprCondPair node"),
    (_fused_set({"t": "Piecewise", "args": [{"t": "ExprCondPair", "args": [_X0]}]}),
     "bad ExprCondPair node"),
    (_fused_set({"t": "Not", "args": [_ONE]}), "bad Not node"),
    (_fused_set({"t": "And", "args": [{"t": "atom", "v": "true"}, _ONE]}), "bad And node"),
    (_fused_set({"t": "Symbol", "name": ["x0"], "assumptions": {}}), "symbol"),
    (_fused_set({"t": "Symbol", "name": "x0"}), "fields"),
    (lambda c: nodes(c)[-1]["attrs"].update(axes=_tuples(40)), "nested more than"),
    (lambda c: nodes(c)[-1]["attrs"].update(axes={"tuple": [2**70]}), "bits"),
    (lambda c: nodes(c)[0]["attrs"].update(dtype={"dtype": "float32 "}), "not supported"),
    (lambda c: nodes(c)[0]["attrs"].update(dtype={"dtype": ["float32"]}), "not supported"),
    (lambda c: c["graph"].update(nodes={"0": 1}), "must be a list"),
    (lambda c: c["graph"]["nodes"].append("node"), "not an object"),
    (lambda c: nodes(c)[1].update(inputs=0), "must be a list"),
    (lambda c: nodes(c)[2].update(inputs=[True, 1]), "bad input index"),
    (lambda c: nodes(c)[2].update(attrs=[]), "attrs must be an object"),
    (lambda c: nodes(c)[0].update(loc=["f.py", "3", "f"]), "source location"),
    (lambda c: nodes(c)[0].update(loc="f.py:3"), "source location"),
    (lambda c: nodes(c)[0].update(scope=7), "scope must be a string"),
    (lambda c: nodes(c)[0].update(label={"x": 1}), "label must be a string"),
    (lambda c: c["graph"].update(name=None), "name must be a string"),
    (lambda c: c["graph"].update(outputs=[-1]), "bad node index"),
    (lambda c: c["graph"].update(updates=[[0]]), "updates"),
    (lambda c: c.update(parameters={"W": 0}), "not the index of a parameter"),
    (lambda c: c.update(parameters={"W": -4}), "not the index of a parameter"),
    (lambda c: c.update(parameters=["W"]), "parameter table"),
    (lambda c: c.update(single="yes"), "single"),
    (lambda c: c.update(graph=[]), "must be an object"),
])
def test_malformed_content_is_a_format_error(tmp_path, edit, message):
    with pytest.raises(FormatError, match=message):
        gc.load(edit_content(tmp_path, edit))


def test_deeply_nested_json_is_a_format_error_not_a_crash(tmp_path):
    files = function_files(tmp_path)
    deep = '{"t": "exp", "args": [' * 100_000 + "1" + "]}" * 100_000
    content = files["content.json"].decode()
    files["content.json"] = content.replace('"graph": {', f'"junk": {deep}, "graph": {{', 1)
    with pytest.raises(FormatError):
        gc.load(write_zip(tmp_path / "deep.graphc", files))


@pytest.mark.parametrize("change,message", [
    ({"version": True}, "version True"),
    ({"version": "2"}, "version '2'"),
    ({"version": 3}, "version 3"),
    ({"version": 0}, "version 0"),
    ({"kind": ["graph"]}, "unknown kind"),
    ({"metadata": ["a"]}, "metadata"),
])
def test_manifest_fields_are_checked(tmp_path, change, message):
    files = function_files(tmp_path)
    manifest = {**json.loads(files["manifest.json"]), **change}
    path = write_zip(tmp_path / "bad.graphc", {**files, "manifest.json": json.dumps(manifest)})
    with pytest.raises(FormatError, match=message):
        gc.load(path)


def test_arrays_of_unsupported_dtypes_are_refused(tmp_path):
    import io

    files = function_files(tmp_path)
    with np.load(io.BytesIO(files["arrays.npz"])) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays = {k: v.astype(np.complex64) for k, v in arrays.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    with pytest.raises(FormatError, match="not supported"):
        gc.load(write_zip(tmp_path / "bad.graphc", {**files, "arrays.npz": buffer.getvalue()}))


def linear_spec(**changes) -> dict:
    return {"class": "Linear", "args": [3, 4], "kwargs": {}, "training": True, "name": None,
            **changes}


@pytest.mark.parametrize("spec,message", [
    (linear_spec(**{"class": "Module"}), "not a gc.nn module class"),
    (linear_spec(**{"class": "Tensor"}), "not a gc.nn module class"),
    (linear_spec(**{"class": "functional"}), "not a gc.nn module class"),
    (linear_spec(**{"class": ["Linear"]}), "not a gc.nn module class"),
    (linear_spec(training="yes"), "bad module spec"),
    (linear_spec(name=3), "bad module spec"),
    (linear_spec(name="a/b"), "module name"),
    (linear_spec(args=[3, {"eval": "1"}]), "bad constructor argument"),
    (linear_spec(kwargs={"rng": [1]}), "bad constructor argument"),
    (linear_spec(kwargs={"__class__": 1}), "__class__"),
    ({"class": "Linear", "args": [3, 4]}, "fields"),
    ({**linear_spec(), "eval": "1"}, "fields"),
])
def test_only_gc_nn_classes_are_rebuilt(tmp_path, spec, message):
    gc.save(nn.Linear(3, 4), tmp_path / "m.graphc")
    files = members(tmp_path / "m.graphc")
    content = {**json.loads(files["content.json"]), "spec": spec}
    path = write_zip(tmp_path / "bad.graphc", {**files, "content.json": json.dumps(content)})
    with pytest.raises(FormatError, match=message):
        gc.load(path)


def test_deeply_nested_module_specs_are_refused(tmp_path):
    spec = {"class": "ReLU", "args": [], "kwargs": {}, "training": True, "name": None}
    for _ in range(40):
        spec = {**spec, "class": "Sequential", "args": [{"module": spec}]}
    gc.save(nn.ReLU(), tmp_path / "m.graphc")
    files = members(tmp_path / "m.graphc")
    content = {**json.loads(files["content.json"]), "spec": spec}
    path = write_zip(tmp_path / "bad.graphc", {**files, "content.json": json.dumps(content)})
    with pytest.raises(FormatError, match="nested more than"):
        gc.load(path)


def test_a_source_location_naming_a_device_is_not_read(tmp_path):
    """An error message shows the saved node's source line: never from a device or pipe."""
    def edit(c):
        nodes(c)[2]["loc"] = ["/dev/zero", 1, "f"]
        nodes(c)[2]["inputs"] = [1, 1]  # (3, 2) @ (3, 2): fails, and reports its location
    with pytest.raises(FormatError, match="/dev/zero"):
        gc.load(edit_content(tmp_path, edit))


# -- versions and nested graphs ----------------------------------------------------------------


def test_version_1_files_still_load(tmp_path):
    fixture = gc.load(DATA / "function_v1.graphc")  # written by graphc 0.1.0, format 1
    np.testing.assert_allclose(fixture(np.ones((2, 3), np.float32)), [4.506695] * 2, rtol=1e-6)
    assert gc.io.read_metadata(DATA / "function_v1.graphc")["written by"].endswith("version 1)")
    files = function_files(tmp_path)
    manifest = json.loads(files["manifest.json"])
    assert manifest["version"] == gc.io.VERSION == 2 and gc.io.READ_VERSIONS == (1, 2)
    path = write_zip(tmp_path / "v1.graphc",
                     {**files, "manifest.json": json.dumps({**manifest, "version": 1})})
    np.testing.assert_allclose(gc.load(path)(X), _build_function()[0](X), rtol=1e-6)


def _body():
    with gc.Graph("body 'step'") as body:
        carry = gc.placeholder("carry", ("N", 3))
        x = gc.placeholder("x", ("N", 3))
        w = gc.parameter("w", np.full((3,), 0.5, np.float32))
        new = gc.tanh(carry * w + x) * 2.0
        total = new.sum()
    body.inputs, body.outputs = [carry.node, x.node], [new.node, total.node]
    return body, (carry, x)


def test_a_graph_attribute_round_trips(tmp_path):
    body, _ = _body()
    table = ArrayTable()
    tree = json.loads(json.dumps(encode_attr(body, table)))  # through JSON text
    assert set(tree) == {"graph"} and tree["graph"]["name"] == "body 'step'"
    back = decode_attr(tree, ArrayTable(table.arrays))
    assert isinstance(back, gc.Graph) and back.name == body.name
    assert [str(n.type) for n in back.nodes] == [str(n.type) for n in body.nodes]
    assert [n.op.name for n in back.outputs] == [n.op.name for n in body.outputs]
    fns = [gc.compile([gc.Tensor(n, g) for n in g.inputs], gc.Tensor(g.outputs[0], g))
           for g in (body, back)]
    np.testing.assert_array_equal(fns[1](X, X), fns[0](X, X))
    # graphs inside graphs: an attribute of a node of the body holds another graph (no op
    # takes one yet: an elementwise node, whose attributes are open, carries it here)
    inner = tree
    for _ in range(3):
        inner = with_body(tree, inner)
    nested = decode_attr(json.loads(json.dumps(inner)), ArrayTable(table.arrays))

    def body_of(g):
        return next(n for n in g.nodes if n.op.name == "tanh").attrs["body"]
    assert isinstance(body_of(body_of(body_of(nested))), gc.Graph)
    assert body_of(body_of(nested)).name == "body 'step'"


def with_body(tree: dict, body: dict) -> dict:
    """`tree` with `body` as an attribute of its tanh node."""
    outer = copy.deepcopy(tree)
    next(n for n in outer["graph"]["nodes"] if n["op"] == "tanh")["attrs"]["body"] = body
    return outer


def test_graph_nesting_is_bounded():
    body, _ = _body()
    table = ArrayTable()
    tree = encode_attr(body, table)
    nested = tree
    for _ in range(gc.io.graphs.MAX_GRAPH_DEPTH - 1):
        nested = with_body(tree, nested)
    decode_attr(nested, ArrayTable(table.arrays))  # MAX_GRAPH_DEPTH graphs: fine
    with pytest.raises(gc.GraphError, match="nested more than"):
        decode_attr(with_body(tree, nested), ArrayTable(table.arrays))


# -- graphc.ir.text ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"])), st.text(max_size=5))
def test_source_text_is_printable_ascii_that_reads_back(text, extra):
    shown = source_text(text)
    assert all(" " <= c <= "~" for c in shown)
    assert ast.literal_eval(f"'{shown}'") == text == ast.literal_eval(f'"{shown}"')
    program = f"a = 1  # {shown}\nb = 2  # {source_text(text, 10)}\n"
    namespace: dict = {}
    exec(compile(program, source_text(text), "exec"), namespace)  # our own program
    assert sorted(k for k in namespace if k != "__builtins__") == ["a", "b"]
    name = identifier(text, extra=extra)
    allowed = set(string.ascii_letters + string.digits + "_") | set(extra)
    assert name and set(name) <= allowed and len(name) <= MAX_IDENTIFIER
    assert not name[0].isdigit() and name.isascii()
    assert IDENTIFIER.fullmatch(identifier(text)) and not __import__("keyword").iskeyword(
        identifier(text))


def test_identifier_examples():
    assert identifier("my input (v2)") == "my_input__v2_"
    assert identifier("größe") == "gr_xf6_xdfe"
    assert identifier("class") == "v_class" and identifier("np", reserved={"np"}) == "v_np"
    assert identifier("") == "v" and identifier("3d") == "v_3d"
    assert identifier("k1.matmul", extra=".") == "k1.matmul"
    assert source_text("a\nb'\\") == r"a\x0ab\'\\"
    assert source_text("x" * 20, 8) == "xxxxxxxx..."


@pytest.mark.parametrize("spec_args", [
    ("Linear", [60000, 60000]), ("BatchNorm1d", [10**10]), ("PReLU", [10**10]),
    ("Embedding", [10**7, 10**4]), ("LayerNorm", [10**10])])
def test_a_spec_that_would_build_a_huge_model_is_refused_before_allocating(tmp_path,
                                                                          spec_args):
    """A kilobyte file naming Linear(60000, 60000) made gc.load draw a 27 GB weight before
    comparing it with the file's state: a MemoryError, or the process killed. What a spec
    builds is bounded by the state the file holds."""
    import tracemalloc

    cls, args = spec_args
    path = gc.save(gc.nn.Linear(2, 2), tmp_path / "small.gcz")
    files = members(path)
    content = json.loads(files["content.json"])
    content["spec"] = {**content["spec"], "class": cls, "args": args}
    files["content.json"] = json.dumps(content).encode()
    write_zip(tmp_path / "big.gcz", files)
    tracemalloc.start()
    try:
        with pytest.raises(FormatError, match="would take .* bytes, more than"):
            gc.load(tmp_path / "big.gcz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 100 << 20


def test_a_large_model_still_loads_from_its_own_file(tmp_path):
    model = gc.nn.Sequential(gc.nn.Linear(300, 400), gc.nn.BatchNorm1d(400), gc.nn.PReLU(400),
                             gc.nn.Embedding(50, 8))
    again = gc.load(gc.save(model, tmp_path / "model.gcz"))
    for (k, a), (j, b) in zip(model.state().items(), again.state().items()):
        assert k == j
        np.testing.assert_array_equal(a, b)


def _rezip(src, dst, compress_type=zipfile.ZIP_DEFLATED, extra=()):
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dst, "w") as out:
        for info in z.infolist():
            out.writestr(info.filename, z.read(info), compress_type=compress_type)
        for name, data in extra:
            out.writestr(name, data)
    return dst


def test_a_zip_bomb_member_is_refused_before_it_is_read(tmp_path):
    """A 1.7 kB file with a bzip2 member of 3 GB loaded at a 3 GB peak: members must be
    stored or deflated (gc.save writes deflate, whose expansion is bounded) and no member
    may claim more than deflate can give."""
    path = gc.save(gc.nn.Linear(2, 2), tmp_path / "ok.gcz")
    bz = _rezip(path, tmp_path / "bz.gcz", zipfile.ZIP_BZIP2)
    with pytest.raises(FormatError, match="compressed with method 12"):
        gc.load(bz)
    dup = _rezip(path, tmp_path / "dup.gcz", extra=[("content.json", b"{}")])
    with pytest.raises(FormatError, match="holds 'content.json' twice"):
        gc.load(dup)
    # deflate's own bound (about 1032:1) is honest; a member claiming more is refused
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02")  # the last central-directory entry: arrays.npz
    data[entry + 24:entry + 28] = (2**31).to_bytes(4, "little")  # its uncompressed size
    bomb = tmp_path / "bomb.gcz"
    bomb.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="claims 2,147,483,648 bytes"):
        gc.load(bomb)


def test_an_array_header_claiming_more_than_its_member_is_refused(tmp_path):
    """numpy preallocates what an .npy header claims before reading: a 554-byte file
    claiming (2**40,) float64 raised a raw MemoryError for 8 TiB."""
    import io as bytes_io

    path = gc.save(gc.nn.Linear(2, 2), tmp_path / "ok.gcz")
    files = members(path)
    header = bytes_io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (2**40,)})
    npz = bytes_io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        for name in zipfile.ZipFile(bytes_io.BytesIO(files["arrays.npz"])).namelist():
            z.writestr(name, b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + bytes(16))
    files["arrays.npz"] = npz.getvalue()
    write_zip(tmp_path / "huge.gcz", files)
    with pytest.raises(FormatError, match=r"claims shape \(1099511627776,\)"):
        gc.load(tmp_path / "huge.gcz")


def test_a_power_of_computed_numbers_in_a_file_is_refused():
    """((2**1024)**1024)**1024 passed the bound on numeric powers (its base was not a
    number written out) and the load then spent minutes and gigabytes on Python integers."""
    from graphc.io.expressions import from_json, to_json
    from graphc.ops import expr as E

    power = {"t": "Integer", "v": "2"}
    for _ in range(3):
        power = {"t": "Pow", "args": [power, {"t": "Integer", "v": "1024"}]}
    with pytest.raises(gc.GraphError, match="whose base or exponent is itself computed"):
        from_json({"t": "Mul", "args": [to_json(E.sym_input(0), inputs=1), power]}, inputs=1)
    exponent = {"t": "Pow", "args": [{"t": "Integer", "v": "2"}, {"t": "Integer", "v": "60"}]}
    with pytest.raises(gc.GraphError, match="whose base or exponent is itself computed"):
        from_json({"t": "Pow", "args": [{"t": "Integer", "v": "3"}, exponent]}, inputs=0)
    assert from_json({"t": "Pow", "args": [{"t": "Integer", "v": "2"},
                                           {"t": "Integer", "v": "10"}]}, inputs=0).doit() == 1024


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("name", ["_r0", "_r1", "max", "min", "_check_nan", "_check_finite",
                                  "len", "print"])
def test_an_input_named_like_a_name_the_generated_step_uses(backend, name):
    """The NumPy backend's source names repeated subexpressions _r0, _r1, ... and reads max,
    min and its check functions: an input (from a file, say) of such a name was replaced by
    the temporary (wrong values) or hid the function (a TypeError)."""
    def build(input_name):
        x = gc.placeholder(input_name, ("T",), "float64")
        y = gc.placeholder("y", ("T",), "float64")
        z = gc.exp(y * y) + gc.exp(y * y) * x
        return gc.compile([x, y], [z, gc.tanh(x * y) + gc.tanh(x * y), x[1:] * 2.0],
                          backend=backend, backend_options={"check_finite": True})

    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.5, -0.25, 0.1])
    for got, want in zip(build(name)(a, b), build("plain")(a, b)):
        np.testing.assert_array_equal(got, want)


def test_a_dimension_no_placeholder_declares_is_refused(tmp_path):
    """A slice start naming a dimension no input binds loaded, and the NumPy backend then
    read the name among Python's globals (__debug__ as True)."""
    x = gc.placeholder("x", ("T", 3), "float64")
    path = gc.save([x[1:2] * 1.0], tmp_path / "g.gcz")
    files = members(path)
    content = json.loads(files["content.json"])
    starts = next(n for n in content["graph"]["nodes"] if n["op"] == "slice")["attrs"]["starts"]
    declared = json.dumps(content["graph"]["nodes"][0]["attrs"]["shape"]["tuple"][0])
    starts["tuple"][0] = json.loads(declared.replace('"T"', '"__debug__"'))
    files["content.json"] = json.dumps(content).encode()
    write_zip(tmp_path / "bad.gcz", files)
    with pytest.raises(FormatError, match="uses the dimension '__debug__', which no placeholder"):
        gc.load(tmp_path / "bad.gcz")


def test_a_spec_of_too_many_modules_is_refused(tmp_path, monkeypatch):
    """A 300 kB file listing a Sequential of a million ReLUs took 37 s and 1.6 GB to load."""
    from graphc.io import modules

    monkeypatch.setattr(modules, "MAX_SPEC_MODULES", 50)
    path = gc.save(gc.nn.Sequential(*[gc.nn.ReLU() for _ in range(60)]), tmp_path / "m.gcz")
    with pytest.raises(FormatError, match="more than 50 modules"):
        gc.load(path)
    gc.load(gc.save(gc.nn.Sequential(*[gc.nn.ReLU() for _ in range(40)]), tmp_path / "ok.gcz"))
