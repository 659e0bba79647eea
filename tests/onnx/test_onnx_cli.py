"""`graphc info model.onnx` and `graphc viz model.onnx`: an ONNX file as graphc sees it."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from graphc.cli import main  # noqa: E402

F32 = TensorProto.FLOAT


def _save(tmp_path, name, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "net", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / name
    onnx.save(model, str(path))
    return str(path)


def _mlp(tmp_path):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("W1", (4, 8)), ("b1", (8,)), ("W2", (8, 3)), ("b2", (3,)))]
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], name="fc2")]
    return _save(tmp_path, "mlp.onnx", nodes, [helper.make_tensor_value_info("x", F32, ["N", 4])],
                 [helper.make_tensor_value_info("y", F32, ["N", 3])], inits)


def test_info_lists_inputs_outputs_and_parameter_count(tmp_path, capsys):
    path = _mlp(tmp_path)
    assert main(["info", path]) == 0
    out = capsys.readouterr().out
    assert "opset 17" in out
    assert "x" in out and "float32  (N, 4)" in out
    assert "y" in out and "float32  (N, 3)" in out
    assert f"parameters: {4 * 8 + 8 + 8 * 3 + 3:,} values in 4 float initializers" in out
    assert "Gemm x2" in out and "unsupported ops: none" in out


def test_info_lists_every_unsupported_op_not_only_the_first(tmp_path, capsys):
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="ok"),
             helper.make_node("Unique", ["a"], ["b"], name="u1"),
             helper.make_node("NonZero", ["b"], ["c"], name="nz"),
             helper.make_node("Unique", ["a"], ["d"], name="u2"),
             helper.make_node("Frobnicate", ["a"], ["e"], name="custom", domain="com.example")]
    graph = helper.make_graph(nodes, "net", [vi("x", F32, [5])],
                              [vi("c", TensorProto.INT64, [1, None]), vi("d", F32, [None]),
                               vi("e", F32, [5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    assert main(["info", str(path)]) == 1
    out = capsys.readouterr().out
    assert "unsupported ops (3 types, 4 nodes, opset 17)" in out
    assert "Unique: 'u1', 'u2'" in out
    assert "NonZero: 'nz'" in out
    assert "com.example.Frobnicate: 'custom'" in out
    assert "Relu:" not in out


def test_info_reports_an_op_whose_attributes_graphc_refuses(tmp_path, capsys):
    """Every op type is known, but one node cannot be imported (a data-dependent If): the
    import is tried and its error, naming the node, is printed."""
    vi = helper.make_tensor_value_info
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [],
                               [vi("z", F32, [2])])
    nodes = [helper.make_node("If", ["c"], ["y"], name="pick", then_branch=branch,
                              else_branch=branch)]
    path = _save(tmp_path, "if.onnx", nodes, [vi("x", F32, [2]), vi("c", TensorProto.BOOL, [])],
                 [vi("y", F32, [2])])
    assert main(["info", path]) == 1
    assert "unsupported: ONNX node 'pick' (If, opset 17)" in capsys.readouterr().out


def test_info_without_a_model_still_describes_the_machine(capsys):
    assert main(["info"]) == 0
    assert "numpy" in capsys.readouterr().out


def test_viz_draws_the_imported_graph(tmp_path, capsys):
    path = _mlp(tmp_path)
    out = tmp_path / "mlp.dot"
    assert main(["viz", path, "-o", str(out)]) == 0
    dot = out.read_text()
    assert "matmul" in dot and "relu" in dot and "W1" in dot
    assert "wrote" in capsys.readouterr().out


def test_viz_of_a_model_graphc_cannot_import_says_why(tmp_path, capsys):
    vi = helper.make_tensor_value_info
    path = _save(tmp_path, "u.onnx", [helper.make_node("Unique", ["x"], ["y"], name="u")],
                 [vi("x", F32, [3])], [vi("y", F32, [None])])
    assert main(["viz", path, "-o", str(tmp_path / "u.dot")]) == 1
    assert "'u' (Unique, opset 17)" in capsys.readouterr().err


def test_viz_of_a_file_whose_name_holds_dot_escapes(tmp_path, capsys):
    """The file's stem names the graph (``onnx:m\\``): it reaches dot escaped, so the picture
    is drawn (not a dot syntax error) and the .dot file is valid."""
    import shutil
    import subprocess

    nodes = [helper.make_node("Relu", ["x"], ["y"], name="r")]
    path = _save(tmp_path, "m\\.onnx", nodes, [helper.make_tensor_value_info("x", F32, [2])],
                 [helper.make_tensor_value_info("y", F32, [2])])
    dot_out = tmp_path / "m.dot"
    assert main(["viz", path, "-o", str(dot_out)]) == 0
    assert dot_out.read_text().startswith('digraph "onnx:m\\\\" {')
    if shutil.which("dot"):
        assert subprocess.run(["dot", "-Tsvg", str(dot_out)], capture_output=True).returncode == 0
        assert main(["viz", path, "-o", str(tmp_path / "m.svg")]) == 0


def test_info_shows_the_files_control_characters_escaped(tmp_path, capsys):
    """Names in a file reached the terminal raw: an ESC sequence could retitle, clear or
    overwrite the screen. They are escaped; printable text of any script is kept."""
    hostile = "\x1b]0;owned\x07\x1b[2J\u202eévil\r\x00\u2028"
    nodes = [helper.make_node("Relu", [hostile], ["y"], name="n\x1b[31m")]
    path = _save(tmp_path, "esc.onnx", nodes, [helper.make_tensor_value_info(hostile, F32,
                                                                          [hostile, 3])],
                 [helper.make_tensor_value_info("y", F32, [hostile, 3])])
    model = onnx.load(path)
    model.producer_name = hostile
    onnx.save(model, path)
    main(["info", path])
    captured = capsys.readouterr()
    for stream in (captured.out, captured.err):
        assert not any(c in stream for c in "\x1b\x07\r\x00\u202e\u2028")
    assert "\\x1b]0;owned\\x07" in captured.out and "évil" in captured.out
    unsupported = [helper.make_node("NoSuchOp\x1b[2J", ["x"], ["y"], name="bad\x1b[2J")]
    path = _save(tmp_path, "bad.onnx", unsupported, [helper.make_tensor_value_info("x", F32,
                                                                               [2])],
                 [helper.make_tensor_value_info("y", F32, [2])])
    assert main(["info", path]) == 1
    captured = capsys.readouterr()
    assert "\x1b" not in captured.out + captured.err and "bad\\x1b[2J" in captured.out


def test_viz_of_a_file_graphc_cannot_import_escapes_its_names(tmp_path, capsys):
    """viz's own messages (SystemExit) skipped the escaping that info and errors get."""
    nodes = [helper.make_node("Bad\x1b]0;owned\x07Op", ["x"], ["y"], name="n\x1b[2J")]
    path = _save(tmp_path, "esc.onnx", nodes, [helper.make_tensor_value_info("x", F32, [2])],
                 [helper.make_tensor_value_info("y", F32, [2])])
    assert main(["viz", path, "-o", str(tmp_path / "g.dot")]) == 1
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\x07" not in err and "\\x1b" in err
