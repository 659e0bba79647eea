"""The `sink` pass: accumulations (a weight gradient's ``dW + x_t^T @ g_t``, a bias gradient's
``db + sum(g_t, 0)``) leave scan bodies as one product / one sum over all steps after the loop.

Positive cases read what is left in the optimized loops (``fn.graph``'s scan nodes: their
carries) and the pass statistic, and compare with the same program compiled without the pass
(float64, rtol 1e-12: the summation order changes) at two symbolic lengths and zero steps, on
numpy, llvm and the cuda emulation, forward and reversed loops. Negative cases check what must
stay: a carry read elsewhere in the body, a nonlinear update, a summand reading the carry, a
carry whose history the gradient reads.
"""

import numpy as np
import pytest

import graphc as gc
from graphc.passes.manager import PASS_NAMES
from graphc.passes.sink import accumulations
from tests.helpers import scan_nodes

NO_SINK = [p for p in PASS_NAMES if p != "sink"]
RNG = np.random.RandomState(0)


def _compile(inputs, outputs, backend="numpy", optimize=True):
    opts = {"emulate": True} if backend == "cuda" else None
    return gc.compile(inputs, outputs, backend=backend, optimize=optimize, backend_options=opts)


def _stat(fn):
    (stat,) = [s for s in fn.stats["passes"] if s.name == "sink"]
    return stat.details


def _same(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def test_lstm_weight_gradients_leave_the_reverse_loop():
    """gc.nn.LSTM makes one product per weight (all gates): the (W_ih, W_hh) products and the
    (b_ih, b_hh) sums leave the loop; the reverse loop keeps only the cotangents of h and c, and
    emits the gates' gradient (x_t and h_t are xs entries already)."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3, 4), "float64")
        lstm = gc.nn.LSTM(4, 5, dtype="float64", rng=0)
        y, (h, c) = lstm(x)
        cost = (y * y).sum() + (c * h).sum()
        params = list(lstm.parameters())
        outs = [cost, *gc.grad(cost, [x, *params])]
        sunk, plain = _compile([x], outs), _compile([x], outs, optimize=NO_SINK)
    assert _stat(sunk) == {"sunk_terms": {"matmul": 2, "sum": 2}, "sunk_accumulations": 4,
                           "emitted": 1, "loops": 1}
    fwd, rev = scan_nodes(sunk.graph)
    assert not fwd.attrs["reverse"] and rev.attrs["reverse"]
    assert rev.attrs["n_carry"] == 2  # the cotangents of h and c, no weight gradient
    assert scan_nodes(plain.graph)[1].attrs["n_carry"] == 6
    assert [tuple(p.shape) for p in rev.attrs["body"].inputs[:2]] == [(3, 5), (3, 5)]
    # the products land after the loop: one (K, T*N) @ (T*N, 4H) per weight
    flat = [n for n in sunk.graph.nodes if n.op.name == "matmul" and n.attrs["ta"]]
    assert len(flat) == 2 and all(str(n.inputs[0].shape[0]) == "3*T" for n in flat)
    for T in (5, 1, 0):
        xs = RNG.randn(T, 3, 4)
        _same(sunk(xs), plain(xs))


def _rnn(backend, reverse):
    with gc.Graph():
        x = gc.placeholder("x", ("T", 2, 3), "float64")
        h0 = gc.placeholder("h0", (2, 4), "float64")
        W = gc.placeholder("W", (3, 4), "float64")
        U = gc.placeholder("U", (4, 4), "float64")
        b = gc.placeholder("b", (4,), "float64")
        hT, ys = gc.scan(lambda h, xt: (gc.tanh(xt @ W + h @ U + b), h), h0, x,
                         reverse=reverse)
        cost = (hT * hT).sum() + (ys * ys).sum()
        ins = [x, h0, W, U, b]
        outs = [cost, *gc.grad(cost, ins)]
        return _compile(ins, outs, backend), _compile(ins, outs, backend, NO_SINK)


@pytest.mark.parametrize("backend,reverse", [("numpy", True), ("llvm", False),
                                             ("cuda", True)])
def test_rnn_gradient_on_every_backend(backend, reverse):
    sunk, plain = _rnn(backend, reverse)
    assert _stat(sunk)["sunk_accumulations"] == 3  # dW, dU, db
    assert _stat(sunk)["sunk_terms"] == {"matmul": 2, "sum": 1}
    rev = scan_nodes(sunk.graph)[1]
    assert rev.attrs["reverse"] is not reverse and rev.attrs["n_carry"] == 1  # dh only
    assert not any(n.op.name == "matmul" and n.attrs["ta"] for n in rev.attrs["body"].nodes)
    for T in (4, 1, 0):  # one compiled function, symbolic T
        args = [RNG.randn(T, 2, 3), RNG.randn(2, 4), RNG.randn(3, 4) * 0.5,
                RNG.randn(4, 4) * 0.4, RNG.randn(4) * 0.1]
        got, want = sunk(*args), plain(*args)
        _same(got, want)
        if T == 0:  # nothing accumulated: the gradients of W, U, b are zero
            assert not got[3].any() and not got[4].any() and not got[5].any()


def test_every_flag_combination_of_a_sunk_product():
    """c + op(A_t) @ op(B_t) with transposes on either side (peeled into the product's flags),
    a contraction over the feature axis (A_t @ B_t^T), a two-term chain, a sum over two axes
    with keepdims, an x slice; A_t and B_t read the carry h, so `hoist` leaves them in the
    body and they are emitted; a scaled product is not a term, h's update is not a sum."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3, 2), "float64")
        P = gc.placeholder("P", (2, 2), "float64")
        shapes = [(3, 2), (2, 2), (2, 2), (2, 2), (2, 2), (1, 1), (3, 2), (3, 3)]
        init = [gc.zeros(s, "float64") + 0.5 for s in shapes]

        def step(c, xt):
            h = gc.tanh(xt @ P + c[0])
            a, g = h, gc.sin(h) * xt
            return [h,
                    c[1] + gc.transpose(a) @ g + gc.transpose(g) @ a,
                    c[2] + a.T @ gc.transpose(g.T),
                    c[3] + gc.matmul(gc.transpose(a), g) * 1.0,
                    c[4] + gc.transpose(g) @ gc.transpose(gc.transpose(a)),
                    c[5] + g.sum(axis=(0, 1), keepdims=True),
                    c[6] + xt,
                    c[7] + a @ g.T], None

        c, _ = gc.scan(step, init, x, reverse=True)
        outs = list(c)  # (a gradient would read the carries' histories: see below)
        sunk, plain = _compile([x, P], outs), _compile([x, P], outs, optimize=NO_SINK)
    assert _stat(sunk) == {"sunk_terms": {"matmul": 5, "slice": 1, "sum": 1},
                           "sunk_accumulations": 6, "emitted": 2, "loops": 1}
    assert scan_nodes(sunk.graph)[0].attrs["n_carry"] == 2  # h and the scaled product
    for T in (3, 1, 0):
        args = [RNG.randn(T, 3, 2), RNG.randn(2, 2)]
        _same(sunk(*args), plain(*args))


def test_nested_loops_keep_their_values():
    """An inner loop inside an outer body, differentiated: the inner reverse loop (inside the
    outer reverse body) loses its weight-gradient carry; the results do not change."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 2, 2, 3), "float64")
        W = gc.placeholder("W", (3, 3), "float64")

        def outer(c, rows):
            s, _ = gc.scan(lambda s, xt: (gc.tanh(xt @ W + s), None), c, rows)
            return s, s.sum()

        c, ys = gc.scan(outer, gc.zeros((2, 3), "float64"), x)
        outs = [c, ys, *gc.grad((c * c).sum() + ys.sum(), [x, W])]
        sunk, plain = _compile([x, W], outs), _compile([x, W], outs, optimize=NO_SINK)
    # forward outer, its inner loop, reverse outer (dc, dW: dW adds the inner loop's result,
    # not a term), its inner forward recomputation, its inner reverse loop (ds; dW sunk)
    carries = [(n.attrs["n_carry"], n.attrs["reverse"]) for n in scan_nodes(sunk.graph)]
    assert carries == [(1, False), (1, False), (2, True), (1, False), (1, True)]
    assert [n.attrs["n_carry"] for n in scan_nodes(plain.graph)] == [1, 1, 2, 1, 2]
    assert _stat(sunk)["sunk_accumulations"] == 1
    for T in (3, 1, 0):
        args = [RNG.randn(T, 2, 2, 3), RNG.randn(3, 3) * 0.5]
        _same(sunk(*args), plain(*args))


def _kept(step, carries=1, grad=False):
    """Compile a loop with `step` (and with `grad`, its gradient), with and without the pass;
    the results agree."""
    with gc.Graph():
        x = gc.placeholder("x", (4, 3, 2), "float64")
        G = gc.placeholder("G", (2, 2), "float64")
        init = tuple(gc.zeros((2, 2), "float64") + 0.5 for _ in range(carries))
        c, ys = gc.scan(lambda c, xt: step(c, xt, G), init, x)
        cost = sum((t * t).sum() for t in c) + (0 if ys is None else ys.sum())
        outs = [cost, *gc.grad(cost, [x, G])] if grad else [cost, *c]
        fn, plain = gc.compile([x, G], outs), gc.compile([x, G], outs, optimize=NO_SINK)
    args = [RNG.randn(4, 3, 2), RNG.randn(2, 2) * 0.5]
    _same(fn(*args), plain(*args))
    return fn


def test_a_carry_read_elsewhere_stays():
    def step(c, xt, G):
        (acc,) = c
        g = gc.tanh(xt @ G)
        return (acc + gc.transpose(xt) @ g,), acc.sum()  # the y reads the carry

    fn = _kept(step)
    assert scan_nodes(fn.graph)[0].attrs["n_carry"] == 1  # the loop kept it
    assert _stat(fn)["sunk_accumulations"] == 0


def test_nonlinear_and_self_reading_updates_stay():
    def step(c, xt, G):
        a, b, d = c
        g = gc.tanh(xt @ G)
        return (a * 0.9 + gc.transpose(xt) @ g,  # a decayed accumulation: nonlinear
                gc.maximum(b, gc.transpose(xt) @ g),  # not a sum at all
                d + gc.transpose(xt) @ (xt @ d)), None  # the summand reads the carry

    fn = _kept(step, carries=3)
    assert scan_nodes(fn.graph)[0].attrs["n_carry"] == 3
    assert _stat(fn)["sunk_accumulations"] == 0
    fn = _kept(step, carries=3, grad=True)  # the reverse loop's gradient of G is sunk
    assert scan_nodes(fn.graph)[0].attrs["n_carry"] == 3
    assert scan_nodes(fn.graph)[1].attrs["n_carry"] == 3 and _stat(fn)["sunk_accumulations"] == 1


def test_a_carry_whose_history_the_gradient_reads_stays_and_accumulations_helper():
    """A forward accumulation is sinkable in its body, but the gradient's reverse loop reads
    the carry's history, so the pass leaves it; `accumulations` says why at each level."""
    def step(c, xt, G):
        (acc,) = c
        return (acc + gc.transpose(xt) @ gc.tanh(xt @ G),), None

    assert _stat(_kept(step))["sunk_accumulations"] == 1  # alone, it is sunk
    fn = _kept(step, grad=True)
    assert scan_nodes(fn.graph)[0].attrs["n_carry"] == 1
    with gc.Graph():
        x = gc.placeholder("x", (4, 3, 2), "float64")
        G = gc.placeholder("G", (2, 2), "float64")
        c, _ = gc.scan(lambda c, xt: (c + gc.transpose(xt) @ gc.tanh(xt @ G), None),
                       gc.zeros((2, 2), "float64"), x)
    loop = c.node.inputs[0]
    body, nc, nx = loop.attrs["body"], loop.attrs["n_carry"], loop.attrs["n_xs"]
    (acc,) = accumulations(body, nc, nx)
    assert acc.index == 0 and [t.kind for t in acc.terms] == ["matmul"]
    assert accumulations(body, nc, nx, history_read={0}) == []
