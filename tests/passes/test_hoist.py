"""The `hoist` pass: loop invariants and input projections move out of scan bodies.

Positive cases count what is left in the optimized bodies (``fn.graph``'s scan nodes) and read
the pass statistic; negative cases check what must stay (products with a carry, terms of a
carry, random draws); every case compares the hoisted program with the same program compiled
without the pass (float64, forward and gradient, symbolic T at two lengths, reversed loops,
NaN/inf/0 in xs) on numpy, llvm and the cuda emulation.
"""

import numpy as np
import pytest

import graphc as gc
from graphc.ir.tensor import apply
from graphc.ops.random import RANDOM_UNIFORM
from graphc.passes import format_stats
from graphc.passes.hoist import INV, STEP, VAR, classify, pinned
from graphc.passes.manager import PASS_NAMES
from tests.helpers import scan_nodes

# the hoisting alone: `sink` (run before it) would take the weight gradients' products out of
# the reverse loops, which these tests count
HOIST = [p for p in PASS_NAMES if p != "sink"]
NO_HOIST = [p for p in HOIST if p != "hoist"]
RNG = np.random.RandomState(0)


def _compile(inputs, outputs, backend, optimize=HOIST):
    opts = {"emulate": True} if backend == "cuda" else None
    return gc.compile(inputs, outputs, backend=backend, optimize=optimize, backend_options=opts)


def _count(graph, op):
    return sum(n.op.name == op for n in graph.nodes)


def _stat(fn):
    (stat,) = [s for s in fn.stats["passes"] if s.name == "hoist"]
    return stat


def _same(got, want):
    """Equal to rounding, with NaN and inf at the same places (assert_allclose's equal_nan)."""
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_array_equal(np.isinf(g), np.isinf(w))
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def _rnn_cost(reverse):
    def f(ps):
        x, h0, W, U, b = ps
        hT, ys = gc.scan(lambda h, xt: (gc.tanh(xt @ W + h @ U + b), h.sum(axis=1)), h0, x,
                         reverse=reverse)
        return (hT * hT).sum() + ys.sum()
    return f


RNN_SHAPES = [("T", "N", 3), ("N", 4), (3, 4), (4, 4), (4,)]


def _rnn_functions(backend, reverse):
    with gc.Graph():
        ps = [gc.placeholder(f"p{i}", s, "float64") for i, s in enumerate(RNN_SHAPES)]
        cost = _rnn_cost(reverse)(ps)
        outs = [cost, *gc.grad(cost, ps)]
        return (_compile(ps, outs, backend), _compile(ps, outs, backend, NO_HOIST))


def _rnn_inputs(T, N=2, hostile=False):
    x = RNG.randn(T, N, 3)
    W = RNG.randn(3, 4) * 0.5
    if hostile:  # a NaN, an inf and a zero row in xs, a zero column in W
        x[0, 0, 1], x[-1, 1, 0], x[T // 2, 0] = np.nan, np.inf, 0.0
        W[:, 2] = 0.0
    return [x, RNG.randn(N, 4), W, RNG.randn(4, 4) * 0.4, RNG.randn(4) * 0.1]


@pytest.mark.parametrize("backend,reverse", [("numpy", False), ("numpy", True),
                                             ("llvm", True), ("cuda", False)])
def test_input_projection_leaves_forward_and_reverse_bodies(backend, reverse):
    hoisted, plain = _rnn_functions(backend, reverse)
    stat = _stat(hoisted)
    # the forward body's x_t @ W; the reverse body's recomputed x_t @ W and h_t @ U (h_t is
    # the carry history, an xs entry of the reverse loop)
    assert stat.details["input_projections"] == 3 and stat.details["hoisted"] == {"matmul": 3}
    assert "input_projection×3" in format_stats(hoisted.stats["passes"])
    fwd, rev = scan_nodes(hoisted.graph)
    assert _count(fwd.attrs["body"], "matmul") == 1  # h @ U
    assert _count(rev.attrs["body"], "matmul") == 4  # dh, dW, dU, dx: all read the cotangent
    p_fwd, p_rev = scan_nodes(plain.graph)
    assert (_count(p_fwd.attrs["body"], "matmul"), _count(p_rev.attrs["body"], "matmul")) == (2, 6)
    # the forward and the reverse loop read one projection, computed once
    assert {n.uid for n in fwd.inputs} & {n.uid for n in rev.inputs} - {
        n.uid for n in hoisted.graph.inputs}
    for args in (_rnn_inputs(5), _rnn_inputs(1, N=3), _rnn_inputs(6, hostile=True)):
        _same(hoisted(*args), plain(*args))  # one function, three lengths


def test_hostile_values_propagate_alike_through_the_projection():
    hoisted, plain = _rnn_functions("numpy", False)
    args = _rnn_inputs(4, hostile=True)
    got = hoisted(*args)
    assert np.isnan(got[0]) and np.isnan(got[1]).any()  # the NaN reaches the cost as before
    _same(got, plain(*args))


@pytest.mark.parametrize("backend", ["numpy", "llvm", "cuda"])
def test_invariants_and_products_through_transposes_and_reshapes(backend):
    """exp(V) and V.T depend on a captured tensor only; x_t.T @ K goes through a transpose
    of the x slice; K2 @ x_t (the slice on the right) becomes a batched product."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3, 2), "float64")
        h0 = gc.placeholder("h0", (2, 4), "float64")
        V = gc.placeholder("V", (4, 4), "float64")
        K = gc.placeholder("K", (3, 4), "float64")
        K2 = gc.placeholder("K2", (2, 3), "float64")

        def step(h, xt):
            a = gc.transpose(xt) @ K  # (2, 4)
            c = (K2 @ xt).sum() * h  # (2, 2) summed
            return gc.tanh(h @ gc.exp(V).T + a + c), None

        hT, _ = gc.scan(step, h0, x)
        ins = [x, h0, V, K, K2]
        # (the cuda emulation compiles slowly: the forward loop only there)
        outs = [hT] if backend == "cuda" else [hT, *gc.grad(hT.sum(), ins)]
        hoisted, plain = _compile(ins, outs, backend), _compile(ins, outs, backend, NO_HOIST)
    details = _stat(hoisted).details
    assert details["hoisted"]["exp"] >= 1 and details["hoisted"]["transpose"] >= 2
    assert details["input_projections"] >= 1 and details["hoisted"]["matmul"] >= 2
    fwd = scan_nodes(hoisted.graph)[0].attrs["body"]
    assert _count(fwd, "matmul") == 1 and not any(n.op.name == "exp" for n in fwd.nodes)
    for T in (4, 1):
        args = [RNG.randn(T, 3, 2), RNG.randn(2, 4), RNG.randn(4, 4) * 0.3, RNG.randn(3, 4),
                RNG.randn(2, 3)]
        _same(hoisted(*args), plain(*args))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_biased_projection_and_hoisted_values_as_outputs(backend):
    """x_t @ W + b leaves as one stacked value; a body output that is a projection (a y) or
    an invariant (a y, a carry) becomes a placeholder output; zero steps work."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 2, 3), "float64")
        W = gc.placeholder("W", (3, 4), "float64")
        b = gc.placeholder("b", (4,), "float64")
        h0 = gc.placeholder("h0", (2, 4), "float64")

        def step(carry, xt):
            h, k = carry
            return (gc.tanh(xt @ W + b + h), gc.exp(b)), (xt @ W, gc.exp(b) * 2.0)

        (hT, kT), (ps, es) = gc.scan(step, (h0, gc.zeros((4,), "float64")), x)
        outs = [hT, kT, ps, es]
        hoisted = _compile([x, W, b, h0], outs, backend)
        plain = _compile([x, W, b, h0], outs, backend, NO_HOIST)
    details = _stat(hoisted).details
    assert details["hoisted"] == {"add": 1, "exp": 1, "matmul": 1, "mul": 1}
    body = scan_nodes(hoisted.graph)[0].attrs["body"]
    assert not any(n.op.name in ("matmul", "exp") for n in body.nodes)
    assert sum(o.op.name == "placeholder" for o in body.outputs) == 3  # kT, ps, es
    for T in (3, 0):
        args = [RNG.randn(T, 2, 3), RNG.randn(3, 4), RNG.randn(4), RNG.randn(2, 4)]
        _same(hoisted(*args), plain(*args))


def test_what_reads_a_carry_stays():
    with gc.Graph():
        x = gc.placeholder("x", (5, 3, 3), "float64")
        W = gc.placeholder("W", (3, 3), "float64")
        h0 = gc.placeholder("h0", (3, 3), "float64")

        def step(h, xt):
            # x_t @ h: a product with the carry; (h * W) @ x_t: a term of the carry
            return gc.tanh(xt @ h + (h * W) @ xt), None

        hT, _ = gc.scan(step, h0, x)
        hoisted = gc.compile([x, W, h0], hT)
        plain = gc.compile([x, W, h0], hT, optimize=NO_HOIST)
    assert _stat(hoisted).details == {"hoisted": {}, "input_projections": 0, "loops": 0}
    assert _count(scan_nodes(hoisted.graph)[0].attrs["body"], "matmul") == 2
    args = [RNG.randn(5, 3, 3), RNG.randn(3, 3), RNG.randn(3, 3) * 0.3]
    _same([hoisted(*args)], [plain(*args)])


def test_random_draws_stay_in_the_body():
    """A draw from a captured state reads invariants only, yet must stay: every step draws
    (here the state is captured, not a carry, so each step draws the same numbers: what
    matters is that the draw is not moved)."""
    state = None
    with gc.Graph():
        x = gc.placeholder("x", (4, 3), "float64")
        W = gc.placeholder("W", (3,), "float64")
        state = gc.rng_state(seed=7)

        def step(c, xt):
            u = apply(RANDOM_UNIFORM, [state], shape=(3,), stream=0, dtype=np.dtype("float64"))
            return c + u * gc.exp(W) + xt, None

        c, _ = gc.scan(step, gc.zeros((3,), "float64"), x)
        hoisted = gc.compile([x, W], c)
        plain = gc.compile([x, W], c, optimize=NO_HOIST)
    body = scan_nodes(hoisted.graph)[0].attrs["body"]
    assert any(n.op.name == "random_uniform" for n in body.nodes)
    assert _stat(hoisted).details["hoisted"] == {"exp": 1}
    args = [RNG.randn(4, 3), RNG.randn(3)]
    _same([hoisted(*args)], [plain(*args)])


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_a_lookup_that_checks_ids_stays_in_the_body(backend):
    """An embedding of captured ids reads invariants only, but a bad id stops the step: moved
    out of a loop of 0 steps (which never runs it) it raised where the unoptimized program
    returned the initial carry (found by a fuzz of loops)."""
    F = gc.nn.functional
    with gc.Graph():
        xs = gc.placeholder("xs", ("T", 3), "float64")
        ids = gc.placeholder("ids", (2,), "int64")
        table = gc.parameter("table", np.ones((4, 3)))
        c, _ = gc.scan(lambda c, x: (c + x * F.embedding(ids, table).sum(0)
                                     + gc.one_hot(ids, 3, "float64").sum(0), None),
                       gc.zeros((3,), "float64"), xs)
        hoisted = _compile([xs, ids], c, backend)
        plain = _compile([xs, ids], c, backend, optimize=False)
    body = scan_nodes(hoisted.graph)[0].attrs["body"]
    assert {"take", "one_hot"} <= {n.op.name for n in body.nodes}
    bad = np.array([1, 99])
    for f in (hoisted, plain):
        np.testing.assert_array_equal(f(np.ones((0, 3)), bad), np.zeros(3))
        with pytest.raises(gc.BackendError, match="99"):
            f(np.ones((2, 3)), bad)
    _same([hoisted(np.ones((2, 3)), np.array([1, 2]))], [plain(np.ones((2, 3)),
                                                            np.array([1, 2]))])


def test_pinned_and_classify():
    with gc.Graph() as g:
        u = gc.random.uniform((2,), seed=1)
        v = u * 2.0
    assert pinned(u.node, g) and not pinned(v.node, g)  # the draw triggers a default update
    with gc.Graph():
        x = gc.placeholder("x", (4, 2), "float64")
        W = gc.placeholder("W", (2, 2), "float64")
        c, _ = gc.scan(lambda h, xt: (h @ W + xt @ W + gc.exp(W).sum(), None),
                       gc.zeros((3, 2), "float64"), gc.reshape(x, (4, 1, 2)) * gc.ones((3, 2)))
    loop = c.node.inputs[0]
    body = loop.attrs["body"]
    kind = classify(body, loop.attrs["n_carry"], loop.attrs["n_xs"])
    by_op = {}
    for n in body.nodes:
        by_op.setdefault(n.op.name, set()).add(kind[n.uid])
    assert by_op["exp"] == {INV} and by_op["matmul"] == {STEP, VAR}


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_nested_loops_hoist_to_the_outermost(backend):
    """The inner body's projection and invariant leave both loops: one product over all
    T1 * T2 * N rows before the outer loop."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3, 2, 2), "float64")
        W = gc.placeholder("W", (2, 2), "float64")
        V = gc.placeholder("V", (2,), "float64")

        def outer(c, rows):
            def inner(s, xt):
                return gc.tanh(xt @ W + s * gc.exp(V) + c), None
            s, _ = gc.scan(inner, gc.zeros((2, 2), "float64"), rows)
            return c + s, s.sum()

        c, ys = gc.scan(outer, gc.zeros((2, 2), "float64"), x)
        outs = [c, ys, *gc.grad((c * c).sum() + ys.sum(), [x, W, V])]
        hoisted = _compile([x, W, V], outs, backend)
        plain = _compile([x, W, V], outs, backend, NO_HOIST)
    loops = scan_nodes(hoisted.graph)
    fwd_outer, fwd_inner = loops[0], loops[1]
    assert _count(fwd_inner.attrs["body"], "matmul") == 0
    assert not any(n.op.name in ("matmul", "exp") for n in fwd_outer.attrs["body"].nodes
                   if n.op.name != "scan")
    assert _count(hoisted.graph, "matmul") >= 1
    details = _stat(hoisted).details
    assert details["input_projections"] >= 2 and details["hoisted"]["exp"] >= 2
    for T in (3, 1):
        args = [RNG.randn(T, 3, 2, 2), RNG.randn(2, 2) * 0.5, RNG.randn(2)]
        _same(hoisted(*args), plain(*args))


def test_switching_the_pass_off_reaches_nested_bodies(monkeypatch):
    def build():
        with gc.Graph():
            x = gc.placeholder("x", (3, 2, 2, 2), "float64")
            W = gc.placeholder("W", (2, 2), "float64")

            def outer(c, rows):
                s, _ = gc.scan(lambda s, xt: (gc.tanh(xt @ W + s), None), c, rows)
                return s, None

            c, _ = gc.scan(outer, gc.zeros((2, 2), "float64"), x)
            return x, W, c

    x, W, c = build()
    for fn in (gc.compile([x, W], c, optimize=NO_HOIST),):
        assert "hoist" not in [s.name for s in fn.stats["passes"]]
        assert [_count(n.attrs["body"], "matmul") for n in scan_nodes(fn.graph)] == [0, 1]
    monkeypatch.setenv("GRAPHC_DISABLE_PASSES", "hoist")
    x, W, c = build()
    fn = gc.compile([x, W], c)
    assert [_count(n.attrs["body"], "matmul") for n in scan_nodes(fn.graph)] == [0, 1]
    monkeypatch.delenv("GRAPHC_DISABLE_PASSES")
    graph, stats = gc.optimize([c])
    assert [_count(n.attrs["body"], "matmul") for n in scan_nodes(graph)] == [0, 0]
    assert [s.name for s in stats][:4] == ["prune_loops", "sink", "hoist", "loop_bodies"]
