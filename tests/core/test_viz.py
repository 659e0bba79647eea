"""Pictures: to_dot content, styles, clusters, and rendering."""

import re
import shutil

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional


def _model():
    x = gc.placeholder("x", ("N", 4))
    y = gc.placeholder("y", ("N",), "int64")
    W = gc.parameter("W", np.zeros((4, 3), np.float32))
    with gc.name_scope("classifier"):
        loss = F.cross_entropy(F.linear(x, W), y)
    return x, y, W, loss


def test_labels_show_op_shape_dtype_and_kinds_are_styled():
    x, y, W, loss = _model()
    src = gc.viz.to_dot(loss).source
    assert "matmul\n(N, 3) float32" in src
    assert "x\n(N, 4) float32" in src and "W\n(4, 3) float32" in src
    assert "#cfe2ff" in src and "#d4edda" in src  # placeholder and parameter colors
    assert "peripheries=2" in src  # the output
    assert "cluster_classifier" in src and "cluster_classifier/linear" in src


def test_gradient_nodes_and_updates_are_distinct():
    x, y, W, loss = _model()
    g = gc.grad(loss, W)
    step = gc.compile([x, y], loss, updates={W: W - 0.1 * g})
    src = gc.viz.to_dot(step).source
    assert "#ffe0cc" in src  # gradient nodes
    assert "cluster_grad" in src
    assert "update" in src and "dashed" in src


def test_accepts_graph_tensor_list_function():
    x, y, W, loss = _model()
    for obj in (gc.get_default_graph(), loss, [loss, x], gc.compile([x, y], loss)):
        assert gc.viz.to_dot(obj).source.startswith("digraph")
    with pytest.raises(gc.GraphError):
        gc.viz.to_dot(42)


def test_render_dot_file(tmp_path):
    *_, loss = _model()
    path = gc.viz.render(loss, tmp_path / "g.dot")
    assert path.read_text().startswith("digraph")
    with pytest.raises(gc.GraphError, match="svg"):
        gc.viz.render(loss, tmp_path / "g.jpg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' not installed")
def test_render_svg_and_png(tmp_path):
    *_, loss = _model()
    svg = gc.viz.render(loss, tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "matmul" in svg
    png = gc.viz.render(loss, tmp_path / "g.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_large_graph_stays_clustered():
    x = gc.placeholder("x", ("N", 8))
    h = x
    for i in range(30):
        with gc.name_scope(f"layer{i}"):
            h = gc.tanh(F.linear(h, gc.parameter(f"W{i}", np.zeros((8, 8), np.float32))))
    loss = h.sum()
    params = [n for n in gc.get_default_graph().parameters]
    grads = gc.grad(loss, [gc.Tensor(p, gc.get_default_graph()) for p in params])
    src = gc.viz.to_dot([loss] + grads).source
    clusters = re.findall(r'subgraph "?cluster_([^" ]+)', src)
    assert sum(c.startswith("grad/layer") for c in clusters) >= 60  # grad/layerI, .../linear
    assert sum(c.startswith("layer") for c in clusters) >= 60


_ODD_NAMES = ["img\\N", "a\\Gb", "left\\lx", "ab\\", '"];evil[label="', "<b>tag</b>"]


def _odd_graph():
    """A graph whose name, scope, placeholders and title hold dot escapes and HTML."""
    with gc.Graph("C:\\runs\\") as g:
        xs = [gc.placeholder(nm, (3,), "float32") for nm in _ODD_NAMES]
        with gc.name_scope("block\\"):
            y = gc.exp(sum(xs[1:], xs[0]))
    return g, y


def test_names_reach_dot_escaped():
    """Backslashes are doubled (no \\N, \\G, \\l expansion, no quote swallowed by a trailing
    backslash) and <...> is quoted, not taken as an HTML-like label."""
    _, y = _odd_graph()
    src = gc.viz.to_dot(y, title="<b>x</b>").source
    assert src.startswith('digraph "C:\\\\runs\\\\" {')
    assert 'label="<b>x</b>"' in src and "label=<" not in src
    assert 'subgraph "cluster_block\\\\"' in src and 'label="block\\\\"' in src
    assert "placeholder img\\\\N" in src and "placeholder ab\\\\\n" in src
    # a name with no odd character is still written as before
    x, y2, W, loss = _model()
    assert "matmul\n(N, 3) float32" in gc.viz.to_dot(loss).source


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' not installed")
def test_odd_names_are_drawn_literally(tmp_path):
    _, y = _odd_graph()
    svg = gc.viz.render(y, tmp_path / "g.svg", title="<i>title</i>").read_text()
    import html

    texts = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)]
    for nm in _ODD_NAMES:
        assert f"placeholder {nm}" in texts, (nm, texts)
    assert "<i>title</i>" in texts and "block\\" in texts
    # the .dot output is valid dot too: dot itself reads it back
    import subprocess

    dot_file = gc.viz.render(y, tmp_path / "g.dot")
    assert subprocess.run(["dot", "-Tsvg", str(dot_file)], capture_output=True).returncode == 0


def test_a_dot_failure_is_a_backend_error(tmp_path, monkeypatch):
    """`dot` refusing the source is one BackendError line (the CLI prints it), not graphviz's
    CalledProcessError traceback."""
    import graphviz

    from graphc.cli import main

    def refuse(self, *args, **kwargs):
        raise graphviz.CalledProcessError(1, ["dot"], stderr=b"Error: syntax error in line 1\n")

    monkeypatch.setattr(graphviz.Digraph, "pipe", refuse)
    monkeypatch.setattr(gc.viz, "dot_available", lambda: True)
    *_, loss = _model()
    with pytest.raises(gc.BackendError, match="'dot' failed to draw g.svg: Error: syntax"):
        gc.viz.render(loss, tmp_path / "g.svg")
    script = tmp_path / "m.py"
    script.write_text("import graphc as gc\nz = gc.exp(gc.placeholder('q', (2,)))\n")
    assert main(["viz", f"{script}:z", "-o", str(tmp_path / "z.svg")]) == 1


def test_large_graphs_get_bounded_layout_passes():
    """dot took minutes on an unrolled RNN of 80 steps (its weights feed every step); above
    LARGE_GRAPH nodes its ranking and crossing passes are bounded. Decided by size alone."""
    def rnn(steps):
        with gc.Graph():
            xs = gc.placeholder("xs", (steps, 2, 4))
            W = gc.parameter("W", np.ones((4, 8), np.float32))
            h = gc.zeros((2, 8))
            for t in range(steps):
                h = gc.tanh(xs[t] @ W + h)
            return gc.viz.to_dot(h.sum()).source

    assert "nslimit" not in rnn(5)
    big = rnn(80)
    assert "nslimit=1" in big and "mclimit=0.1" in big


def test_a_control_character_in_a_name_gives_a_dot_file_dot_can_read(tmp_path):
    """Control characters reached the dot source raw (an audit saw dot fail on a NUL in a
    name, leaving a .dot file it could not read back); they are shown as \\xNN now."""
    import subprocess

    with gc.Graph():
        x = gc.placeholder("a\x00b\x01", (2,))
        gc.viz.render(x * 2, tmp_path / "g.dot")
        gc.viz.render(x * 2, tmp_path / "g.svg")
    text = (tmp_path / "g.dot").read_text()
    assert "\x00" not in text and "\x01" not in text and "placeholder a\\\\x00b" in text
    done = subprocess.run(["dot", "-Tsvg", str(tmp_path / "g.dot")], capture_output=True)
    assert done.returncode == 0, done.stderr


def test_a_very_long_name_is_cut_so_dot_still_draws(tmp_path):
    """dot refuses quoted strings over 16384 bytes: a 20,000-character name (from a file,
    say) made the .dot unreadable and the .svg an error."""
    import shutil
    import subprocess

    x = gc.placeholder("é" * 20000, (2,))
    y = gc.tanh(x * 2.0)
    source = gc.viz.to_dot(y).source
    assert max(len(line) for line in source.splitlines()) < 8000
    if shutil.which("dot"):
        path = tmp_path / "g.dot"
        path.write_text(source)
        assert subprocess.run(["dot", "-Tsvg", str(path)], capture_output=True).returncode == 0


def test_two_long_scopes_that_differ_past_the_cut_stay_two_clusters():
    x = gc.placeholder("x", (2,))
    with gc.name_scope("a" * 1500 + "1"):
        y = gc.tanh(x)
    with gc.name_scope("a" * 1500 + "2"):
        z = gc.exp(y)
    assert gc.viz.to_dot(z).source.count("subgraph cluster_") == 2
