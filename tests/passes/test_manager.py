"""The pass manager: pipeline, statistics, switches, dumps, firing trace, cycle guard."""

import numpy as np
import pytest

import graphc as gc
from graphc import ops
from graphc.passes import PASS_NAMES, format_stats
from graphc.passes.canonicalize import CANONICALIZE
from graphc.passes.rewrite import Match, RuleSet, run_to_fixpoint

F = gc.nn.functional


def _mlp():
    x = gc.placeholder("x", ("N", 4))
    W = gc.parameter("W", np.ones((4, 3), np.float32))
    b = gc.parameter("b", np.zeros(3, np.float32))
    loss = gc.mean(gc.square(gc.tanh(F.linear(x, W, b)) * 1.0))
    gW, gb = gc.grad(loss, [W, b])
    return x, W, b, loss, gW, gb


def test_default_pipeline_order_and_stats():
    x, W, b, loss, gW, gb = _mlp()
    graph, stats = gc.optimize([loss, gW, gb])
    assert [s.name for s in stats] == PASS_NAMES == [
        "prune_loops", "sink", "hoist", "loop_bodies", "canonicalize", "fold", "stabilize",
        "simplify", "cse", "dce", "fuse", "collectives", "plan_memory"]
    assert stats[0].nodes_before > stats[-1].nodes_after
    assert all(s.seconds >= 0 for s in stats)
    assert "mul_one" in stats[PASS_NAMES.index("canonicalize")].fired
    table = format_stats(stats)
    assert "canonicalize" in table and "mul_one" in table
    assert "memory" in graph.meta and "fusion" in graph.meta


def test_compile_runs_the_pipeline_by_default():
    x, W, b, loss, gW, gb = _mlp()
    fn = gc.compile([x], loss)
    assert [s.name for s in fn.stats["passes"]] == PASS_NAMES
    raw = gc.compile([x], loss, optimize=False)
    assert raw.stats["passes"] is None
    assert len(fn.graph.nodes) < len(raw.graph.nodes)


def test_switching_passes_off_by_name(monkeypatch):
    x, W, b, loss, gW, gb = _mlp()
    graph, stats = gc.optimize([loss, gW], exclude=["fuse"])
    assert "fuse" not in [s.name for s in stats]
    assert not any(n.op.name == "elemwise" for n in graph.nodes)
    graph, stats = gc.optimize([loss], passes=["cse", "dce"])
    assert [s.name for s in stats] == ["cse", "dce"]
    monkeypatch.setenv("GRAPHC_DISABLE_PASSES", "simplify,fuse")
    assert [s.name for s in gc.compile([x], loss).stats["passes"]] == [
        "prune_loops", "sink", "hoist", "loop_bodies", "canonicalize", "fold", "stabilize", "cse",
        "dce", "collectives", "plan_memory"]
    with pytest.raises(gc.GraphError, match="unknown pass"):
        gc.optimize([loss], exclude=["nope"])


def test_dump_after_every_pass(tmp_path, monkeypatch):
    x, W, b, loss, gW, gb = _mlp()
    gc.optimize([loss], dump=str(tmp_path / "a"))
    (folder,) = (tmp_path / "a").iterdir()  # one folder per compilation
    names = sorted(p.name for p in folder.iterdir())
    last, canonicalize = len(PASS_NAMES), PASS_NAMES.index("canonicalize") + 1
    assert names[0] == "00_input.txt" and names[-1] == f"{last:02d}_plan_memory.txt"
    assert "tanh" in (folder / f"{canonicalize:02d}_canonicalize.txt").read_text()
    monkeypatch.setenv("GRAPHC_DUMP_PASSES", str(tmp_path / "b"))
    monkeypatch.setenv("GRAPHC_DUMP_PICTURES", "1")
    gc.compile([x], loss)
    gc.compile([x], [loss, gW])  # a second function does not overwrite the first's dump
    first, second = sorted((tmp_path / "b").iterdir())
    assert first.name < second.name
    for folder in (first, second):
        files = {p.suffix for p in folder.iterdir()}
        assert files == {".txt", ".svg" if gc.viz.dot_available() else ".dot"}


def test_firing_trace_names_rule_and_user_line():
    x = gc.placeholder("x", (3,))
    y = -(-x) * 1.0  # fires neg_neg and mul_one
    res = run_to_fixpoint(gc.optimize(y, passes=[])[0], CANONICALIZE)
    text = [str(f) for f in res.trace]
    assert any("neg_neg" in t and "test_manager.py" in t for t in text)
    assert any("mul_one" in t for t in text)
    assert res.fired["neg_neg"] == 1


def test_cycle_guard_names_the_rules():
    looping = RuleSet("looping")

    @looping.rule("mul")
    def mul_to_add(m: Match):
        a, b = m.inputs
        if b.node.op.name == "constant" and float(b.node.attrs["value"].array) == 2:
            return ops.add(a, a)
        return None

    @looping.rule("add")
    def add_to_mul(m: Match):
        a, b = m.inputs
        return ops.mul(a, 2.0) if a.node is b.node else None

    x = gc.placeholder("x", (3,))
    program, _ = gc.optimize(x * 2.0, passes=[])
    with pytest.raises(gc.GraphError) as err:
        run_to_fixpoint(program, looping)
    assert "cycling" in str(err.value)
    assert "mul_to_add" in str(err.value) and "add_to_mul" in str(err.value)


def test_round_cap_names_the_rule_that_keeps_growing_the_graph():
    growing = RuleSet("growing")

    @growing.rule("exp")
    def wrap_forever(m: Match):
        return ops.exp(ops.add(m.inputs[0], 0.0))

    x = gc.placeholder("x", (3,))
    program, _ = gc.optimize(gc.exp(x), passes=[])
    with pytest.raises(gc.GraphError, match="wrap_forever"):
        run_to_fixpoint(program, growing, max_rounds=5)


def test_a_rule_changing_a_type_is_caught():
    broken = RuleSet("broken")

    @broken.rule("exp")
    def drops_a_dimension(m: Match):
        return ops.sum(m.inputs[0], axis=0)

    program, _ = gc.optimize(gc.exp(gc.placeholder("x", (3, 2))), passes=[])
    with pytest.raises(gc.GraphError, match="drops_a_dimension changed the type"):
        run_to_fixpoint(program, broken)


def test_optimize_accepts_function_and_graph():
    x, W, b, loss, gW, gb = _mlp()
    fn = gc.compile([x], loss, optimize=False)
    g1, _ = gc.optimize(fn)
    g2, _ = gc.optimize(fn.graph)
    assert len(g1.nodes) == len(g2.nodes) < len(fn.graph.nodes)
    with gc.Graph("user") as g:
        gc.exp(gc.placeholder("z", (2,))) * 1.0
    g3, _ = gc.optimize(g)
    assert [n.op.name for n in g3.outputs] == ["exp"]


def test_cse_merges_structurally_equal_nodes():
    x = gc.placeholder("x", (3,))
    a = gc.exp(x * 1.0)  # after x * 1 -> x, this is exp(x) ...
    b = gc.exp(x)  # ... which is this node
    graph, stats = gc.optimize([a * b], exclude=["fuse"])
    assert sum(n.op.name == "exp" for n in graph.nodes) == 1
    assert any(n.op.name == "square" for n in graph.nodes)  # exp(x) * exp(x) -> square


def test_simplify_applies_only_identities_exact_in_ieee_arithmetic():
    """x*y + x*z is not factored (that overflows elsewhere), x - x and x*0 stay (inf, NaN),
    (x*x - y*y)/(x - y) stays NaN at x == y; abs(-x) -> abs(x) fires."""
    from graphc.passes.simplify import simplify_program

    x, y, z = (gc.placeholder(n, (3,), "float64") for n in "xyz")
    for out in (x * y + x * z, x - x + y * 0.0, (x * x - y * y) / (x - y)):
        graph, _ = gc.optimize([out], passes=["canonicalize"])
        simpler, stats = simplify_program(graph)
        assert not stats["fired"], stats["fired"]
        assert len(simpler.nodes) == len(graph.nodes)
    same = gc.compile([x, y], (x * x - y * y) / (x - y))(np.array([1.0, 2, 3]),
                                                       np.array([1.0, 0, 3]))
    assert np.isnan(same[0]) and same[1] == 2 and np.isnan(same[2])
    _, stats = simplify_program(gc.optimize([gc.abs(-x)], passes=["canonicalize"])[0])
    assert stats["fired"] == {"abs_of_sign_free": 1}


def test_compilation_is_the_same_in_any_thread():
    """No pass looks at the clock, a signal or the thread: a worker thread compiles the very
    program the main thread does."""
    import threading

    x, y = gc.placeholder("x", (3,), "float64"), gc.placeholder("y", (3,), "float64")
    out = (x * x - y * y) / (x - y) + gc.tanh(x) * gc.tanh(x) + gc.exp(y) * gc.exp(y)
    sources = [gc.compile([x, y], out).source]
    worker = threading.Thread(target=lambda: sources.append(gc.compile([x, y], out).source))
    worker.start()
    worker.join()
    assert sources[0] == sources[1]


def test_compile_runs_the_passes_it_is_given():
    x, W, b, loss, gW, gb = _mlp()
    fn = gc.compile([x], loss, optimize=["dce", "cse"])
    assert [s.name for s in fn.stats["passes"]] == ["cse", "dce"]  # pipeline order
    with pytest.raises(gc.GraphError, match="optimize must be"):
        gc.compile([x], loss, optimize="yes")
    with pytest.raises(gc.GraphError, match="unknown pass"):
        gc.compile([x], loss, optimize=["nope"])
