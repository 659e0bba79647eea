"""The `prune_loops` pass: a loop computes only the results something reads.

Positive cases count what is left in the compiled loops (``fn.graph``'s scan nodes) and compare
every output with the same program compiled without the pass, on numpy, llvm and the cuda
emulation, with hostile inputs (0, inf, NaN, huge) where the loop allows them. Negative cases
check what must stay: a y that is read, a carry only its history is read of, a carry a kept
result needs, random draws whose values nobody reads (the state still advances by them).
"""

import numpy as np
import pytest

import graphc as gc
from graphc.passes.manager import PASS_NAMES
from tests.helpers import scan_nodes

NO_PRUNE = [p for p in PASS_NAMES if p != "prune_loops"]
RNG = np.random.RandomState(0)


def _compile(inputs, outputs, backend="numpy", optimize=True, **kwargs):
    opts = {"emulate": True} if backend == "cuda" else None
    return gc.compile(inputs, outputs, backend=backend, optimize=optimize, backend_options=opts,
                      **kwargs)


def _stat(fn):
    (stat,) = [s for s in fn.stats["passes"] if s.name == "prune_loops"]
    return stat.details


def _count(graph, op):
    return sum(n.op.name == op for n in graph.nodes)


def _same(got, want):
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-13)


def _lstm_step(x, h0, Wx, Wh, b):
    def step(carry, xt):
        h, c = carry
        z = xt @ Wx + h @ Wh + b
        i, f, g, o = (z[:, k * 4:(k + 1) * 4] for k in range(4))
        c = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
        h = gc.sigmoid(o) * gc.tanh(c)
        return (h, c), h

    (hT, _), hs = gc.scan(step, (h0, h0), x)
    return hT, hs


def _lstm_gradient(wrt: list[int], backend="numpy"):
    """An LSTM cost and its gradient with respect to inputs `wrt` (of x, h0, Wx, Wh, b),
    compiled with and without the pass."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 2, 3), "float64")
        h0 = gc.placeholder("h0", (2, 4), "float64")
        Wx, Wh = gc.placeholder("Wx", (3, 16), "float64"), gc.placeholder("Wh", (4, 16), "float64")
        b = gc.placeholder("b", (16,), "float64")
        ins = [x, h0, Wx, Wh, b]
        hT, hs = _lstm_step(*ins)
        cost = (hT * hT).sum() + (hs * hs).sum()
        outs = [cost, *gc.grad(cost, [ins[i] for i in wrt])]
        return (_compile(ins, outs, backend),
                _compile(ins, outs, backend, optimize=NO_PRUNE))


@pytest.mark.parametrize("backend", ["numpy", "llvm", "cuda"])
def test_a_training_step_does_not_compute_the_input_gradients(backend):
    # the reverse loop of gc.grad(cost, weights) would compute dx_t = dz_t Wx^T per step
    pruned, plain = _lstm_gradient([2, 3, 4], backend)
    assert _stat(pruned) == {"pruned_ys": 1, "pruned_carries": 0, "loops": 1}
    widths = {n.attrs["reverse"]: [m.shape for m in n.attrs["body"].nodes
                                   if m.op.name == "matmul"] for n in scan_nodes(pruned.graph)}
    assert (2, 3) not in widths[True]  # no (N, D) product: dx_t is not computed
    plain_widths = [m.shape for n in scan_nodes(plain.graph) if n.attrs["reverse"]
                    for m in n.attrs["body"].nodes if m.op.name == "matmul"]
    assert (2, 3) in plain_widths  # (the same program without the pass computes it)
    for T in (5, 1, 0):  # one compiled function, symbolic T
        args = [RNG.randn(T, 2, 3), RNG.randn(2, 4), RNG.randn(3, 16) * 0.5,
                RNG.randn(4, 16) * 0.5, RNG.randn(16) * 0.1]
        _same(pruned(*args), plain(*args))
    hostile = [np.array([[[0.0, np.inf, -1e300]] * 2, [[np.nan, 1e-300, -np.inf]] * 2]),
               np.zeros((2, 4)), RNG.randn(3, 16), RNG.randn(4, 16), np.zeros(16)]
    for g, w in zip(pruned(*hostile), plain(*hostile)):
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))
        np.testing.assert_allclose(g[~np.isnan(g)], w[~np.isnan(w)], rtol=1e-12)


def test_the_input_gradient_is_kept_when_asked_for():
    pruned, plain = _lstm_gradient([0, 1, 2])
    # dx_t stays; the accumulators of the gradients not asked for (Wh, b) go
    assert _stat(pruned) == {"pruned_ys": 0, "pruned_carries": 2, "loops": 1}
    args = [RNG.randn(4, 2, 3), RNG.randn(2, 4), RNG.randn(3, 16), RNG.randn(4, 16),
            RNG.randn(16)]
    _same(pruned(*args), plain(*args))


def test_dead_carries_go_to_a_fixpoint_and_needed_ones_stay():
    # carries: a (read), b and d (each feeds only the other, and the unread y1), e (unread),
    # f (read only through the kept y0)
    def step(c, xt):
        a, b, d, e, f = c
        return (a + xt, b * 0.5 + d, d + b, e * 2.0, f + 1.0), (xt * f, b)

    with gc.Graph():
        x = gc.placeholder("x", ("T", 3), "float64")
        init = tuple(gc.placeholder(n, (3,), "float64") for n in "abdef")
        (a, b, d, e, f), (y0, y1) = gc.scan(step, init, x)
        outs = [a, y0]
        ins = [x, *init]
        pruned, plain = _compile(ins, outs), _compile(ins, outs, optimize=NO_PRUNE)
        alone = _compile(ins, outs, optimize=["prune_loops"])
    assert _stat(pruned) == {"pruned_ys": 1, "pruned_carries": 3, "loops": 1}
    (loop,) = scan_nodes(alone.graph)
    assert loop.attrs["n_carry"] == 2  # a, and f (the kept y reads it)
    for T in (4, 0):
        args = [RNG.randn(T, 3)] + [RNG.randn(3) for _ in range(5)]
        _same(pruned(*args), plain(*args))


def test_a_carry_read_only_through_its_history_stays():
    # the gradient of a nonlinear recurrence reads the carry's history, not its final value
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3), "float64")
        h0 = gc.placeholder("h0", (3,), "float64")
        hT, ys = gc.scan(lambda h, xt: (gc.tanh(h * xt), None), h0, x)
        (gx,) = gc.grad(hT.sum(), [x])
        pruned = _compile([x, h0], gx)
        plain = _compile([x, h0], gx, optimize=NO_PRUNE)
    args = [RNG.randn(5, 3), RNG.randn(3)]
    _same([pruned(*args)], [plain(*args)])
    forward = [n for n in scan_nodes(pruned.graph) if not n.attrs["reverse"]]
    assert forward and all(n.attrs["n_carry"] >= 1 for n in forward)


def test_nested_loops_are_pruned_inside_out():
    def inner(c, xt):
        return c + xt, (c * xt, gc.sin(c))  # the second y is never read

    def outer(c, row):
        s, (prods, _) = gc.scan(inner, gc.zeros((), "float64"), row)
        return c + s, (prods.sum(), c * 2.0)  # the second y is never read

    with gc.Graph():
        x = gc.placeholder("x", ("T", "K"), "float64")
        total, (sums, _) = gc.scan(outer, gc.zeros((), "float64"), x)
        outs = [total, sums]
        pruned, plain = _compile([x], outs), _compile([x], outs, optimize=NO_PRUNE)
    assert _stat(pruned)["pruned_ys"] == 2 and _stat(pruned)["loops"] == 2
    assert not any(_count(n.attrs["body"], "sin") for n in scan_nodes(pruned.graph))
    for shape in ((3, 4), (2, 0), (0, 2)):
        args = [RNG.randn(*shape)]
        _same(pruned(*args), plain(*args))


def test_unread_random_draws_still_advance_the_state():
    # a draw whose values nobody reads is removed, the state advances as before: the draws
    # that are read are the same numbers with and without the pass, call after call
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3), "float32")
        state = gc.rng_state(seed=5)

        def step(c, xt):
            unread = gc.random.uniform((3,), state=state)
            read = gc.random.uniform((3,), state=state)
            return c + read * xt, unread

        c, _ = gc.scan(step, gc.zeros((3,), "float32"), x)
        pruned = _compile([x], c)
        state.value = np.array([5, 0])
        plain = _compile([x], c, optimize=NO_PRUNE)
    assert _stat(pruned)["pruned_ys"] == 1
    xv = RNG.rand(4, 3).astype(np.float32)
    state.value = np.array([5, 0])
    got = [pruned(xv) for _ in range(2)]
    advanced = np.array(state.value)
    state.value = np.array([5, 0])
    want = [plain(xv) for _ in range(2)]
    np.testing.assert_array_equal(advanced, state.value)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", ["numpy", "llvm", "cuda"])
def test_a_loop_left_with_no_carry_runs_everywhere(backend):
    # only the ys are read and they do not depend on the carry: the loop keeps no carry
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3), "float64")
        _, ys = gc.scan(lambda c, xt: (c + xt, gc.sin(xt) * 2.0), gc.zeros((3,), "float64"), x)
        fn = _compile([x], ys, backend, optimize=["prune_loops", "loop_bodies", "dce"])
    assert [n.attrs["n_carry"] for n in scan_nodes(fn.graph)] == [0]
    for T in (4, 0):
        xv = RNG.randn(T, 3)
        np.testing.assert_allclose(fn(xv), np.sin(xv) * 2.0, rtol=1e-12)
