"""gc.scan: tracing, capture, pytrees, lengths, errors, the NumPy loop, gradients as reverse
scans (first and second order), the optimized body, save/load."""

import numpy as np
import pytest

import graphc as gc
from tests.helpers import LOOP_BACKENDS, compile_on

RNG = np.random.RandomState(0)
BACKENDS = pytest.mark.parametrize("backend", LOOP_BACKENDS)




def _rnn_step(W, U):
    def step(h, x):
        h2 = gc.tanh(x @ W + h @ U)
        return h2, h2.sum(axis=1)
    return step


def _rnn_ref(x, h, W, U, reverse=False):
    ys = [None] * len(x)
    for t in (reversed(range(len(x))) if reverse else range(len(x))):
        h = np.tanh(x[t] @ W + h @ U)
        ys[t] = h.sum(1)
    return h, np.stack(ys)


@BACKENDS
@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_matches_numpy_with_symbolic_T_and_two_lengths(reverse, backend):
    W, U = RNG.randn(3, 4), RNG.randn(4, 4) * 0.3
    with gc.Graph():
        x = gc.placeholder("x", ("T", "N", 3), "float64")
        h0 = gc.placeholder("h0", ("N", 4), "float64")
        Wp, Up = gc.parameter("W", W), gc.parameter("U", U)
        hT, ys = gc.scan(_rnn_step(Wp, Up), h0, x, reverse=reverse)
        assert str(ys.shape[0]) == "T" and hT.shape[1] == 4
        f = compile_on([x, h0], [hT, ys], backend=backend)
    for T in (1, 6):  # one compiled function, two lengths
        xv, hv = RNG.randn(T, 2, 3), RNG.randn(2, 4)
        got = f(xv, hv)
        for g, r in zip(got, _rnn_ref(xv, hv, W, U, reverse)):
            np.testing.assert_allclose(g, r, rtol=1e-12)
    if backend == "numpy":
        assert "_loops[0]" in f.source and "body of a scan" in f.source
    elif backend == "llvm":  # the loop is in the native step: one kernel per body node
        assert "step.header" in f.source
    else:  # the host repeats the launches: a loop's control kernels, then the body's
        assert "scan_pre" in f.source and "scan_post" in f.source


@BACKENDS
def test_pytrees_dict_carry_tuple_xs_and_none_ys(backend):
    with gc.Graph():
        a = gc.placeholder("a", (5, 2), "float64")
        b = gc.placeholder("b", (5,), "float64")

        def step(c, x):
            xa, xb = x
            return {"s": c["s"] + xa, "n": c["n"] + 1, "p": c["p"] * xb}, None

        init = {"s": gc.zeros((2,), "float64"), "n": gc.constant(np.int64(0)),
                "p": gc.ones((), "float64")}
        carry, ys = gc.scan(step, init, (a, b))
        assert ys is None and set(carry) == {"s", "n", "p"}
        f = compile_on([a, b], [carry["s"], carry["n"], carry["p"]], backend=backend)
    av, bv = RNG.randn(5, 2), RNG.randn(5)
    s, n, p = f(av, bv)
    np.testing.assert_allclose(s, av.sum(0))
    assert n == 5 and n.dtype == np.int64
    np.testing.assert_allclose(p, np.prod(bv))


@BACKENDS
def test_length_without_xs_captures_computed_tensors_and_list_ys(backend):
    with gc.Graph():
        x = gc.placeholder("x", ("N",), "float64")
        scale = gc.exp(x)  # a computed tensor of the outer graph, captured by the body

        def step(c, _):
            c2 = c * 0.5 + scale
            return c2, [c2, c2.sum()]

        c, (ys, sums) = gc.scan(step, gc.zeros_like(x), length=4)
        assert ys.shape[0] == 4 and sums.shape == (4,)
        f = compile_on([x], [c, ys, sums], backend=backend)
    xv = RNG.randn(3)
    c, ys, sums = f(xv)
    ref, rows = np.zeros(3), []
    for _ in range(4):
        ref = ref * 0.5 + np.exp(xv)
        rows.append(ref)
    np.testing.assert_allclose(ys, np.stack(rows))
    np.testing.assert_allclose(c, ref)
    np.testing.assert_allclose(sums, np.stack(rows).sum(1))


@BACKENDS
def test_length_zero_returns_init_and_empty_ys(backend):
    with gc.Graph():
        h = gc.placeholder("h", (3,), "float64")
        c, ys = gc.scan(lambda c, _: (c + 1, c), h, length=0)
        f = compile_on([h], [c, ys], backend=backend)
    c, ys = f(np.arange(3.0))
    np.testing.assert_array_equal(c, np.arange(3.0))
    assert ys.shape == (0, 3)


@BACKENDS
def test_a_symbolic_leading_axis_may_be_the_length(backend):
    """API.md: T static or symbolic, `length` an int or a dim name. xs of ("T", 3) with
    length=4, and two xs of ("T", 3) and ("S", 3), build; the call checks T == 4 and
    S == T (a ShapeError naming the sizes) before running, also where the optimizer has
    replaced the loop (the carry alone: a sum sunk out of it, over all of xs)."""
    with gc.Graph():
        xs = gc.placeholder("xs", ("T", 3), "float64")
        zs = gc.placeholder("zs", ("S", 3), "float64")
        c, ys = gc.scan(lambda c, x: (c + x, c * 2.0), gc.zeros((3,), "float64"), xs, length=4)
        both, _ = gc.scan(lambda c, x: (c + x[0] * x[1], None), gc.zeros((3,), "float64"),
                          (xs, zs))
        f = compile_on([xs], [c, ys], backend=backend)
        g = compile_on([xs, zs], both, backend=backend)
        carry_only = compile_on([xs], c, backend=backend)
    a = RNG.randn(4, 3)
    got_c, got_ys = f(a)
    np.testing.assert_allclose(got_c, a.sum(0))
    np.testing.assert_allclose(got_ys, 2 * np.concatenate([np.zeros((1, 3)), a.cumsum(0)[:-1]]))
    np.testing.assert_allclose(g(a, a), (a * a).sum(0))
    np.testing.assert_allclose(carry_only(a), a.sum(0))
    with pytest.raises(gc.ShapeError, match="T=5"):
        f(RNG.randn(5, 3))
    with pytest.raises(gc.ShapeError, match="T=5"):
        carry_only(RNG.randn(5, 3))
    with pytest.raises(gc.ShapeError, match="S=3"):
        g(a, RNG.randn(3, 3))


@BACKENDS
def test_nested_scan(backend):
    with gc.Graph():
        x = gc.placeholder("x", (3, 4), "float64")

        def outer(c, row):
            inner, _ = gc.scan(lambda s, v: (s + v * c, None), gc.zeros((), "float64"), row)
            return c + inner, inner

        c, ys = gc.scan(outer, gc.ones((), "float64"), x)
        f = compile_on([x], [c, ys], backend=backend)
    xv = RNG.randn(3, 4)
    c, rows = 1.0, []
    for r in xv:
        inner = (r * c).sum()
        c, rows = c + inner, rows + [inner]
    got = f(xv)
    np.testing.assert_allclose(got[0], c)
    np.testing.assert_allclose(got[1], rows)


def test_errors_name_the_entry():
    with gc.Graph():
        x = gc.placeholder("x", (5, 2), "float32")
        h = gc.placeholder("h", (2,), "float32")
        with pytest.raises(gc.ShapeError, match=r"carry\['h'\].*\(2,\) float32.*\(1,\)"):
            gc.scan(lambda c, x: ({"h": c["h"][:1]}, None), {"h": h}, x)
        with pytest.raises(gc.ShapeError, match=r"carry\[1\].*float64"):
            gc.scan(lambda c, x: ((c[0], gc.cast(c[1], "float64")), None), (h, h), x)
        with pytest.raises(gc.ShapeError, match="structure"):
            gc.scan(lambda c, x: ((c, c), None), h, x)
        with pytest.raises(gc.ShapeError, match="length=3"):
            gc.scan(lambda c, x: (c, None), h, x, length=3)
        with pytest.raises(gc.ShapeError, match=r"xs\[1\] has 4 steps"):
            gc.scan(lambda c, x: (c, None), h, (x, gc.zeros((4, 2))))
        with pytest.raises(gc.GraphError, match="length="):
            gc.scan(lambda c, x: (c, None), h)
        with pytest.raises(gc.GraphError, match="pair"):
            gc.scan(lambda c, x: c, h, x)
        bn = gc.nn.BatchNorm1d(2)
        with pytest.raises(gc.GraphError, match="batch norm in training mode.*eval"):
            gc.scan(lambda c, x: (c + bn(gc.stack([x, 2.0 * x]))[0], None), h, x)


@BACKENDS
def test_body_is_optimized_by_the_pipeline(backend):
    with gc.Graph():
        x = gc.placeholder("x", (5, 4), "float64")
        c, _ = gc.scan(lambda c, x: (gc.sigmoid(c * 1.0 + x) * 2.0 + 0.0, None),
                       gc.zeros((4,), "float64"), x)
        f = compile_on([x], c, backend=backend)
    (stat,) = [s for s in f.stats["passes"] if s.name == "loop_bodies"]
    assert stat.details["bodies"] == 1
    assert stat.details["nodes_after"] < stat.details["nodes_before"]
    (loop,) = [n for n in f.graph.nodes if n.op.name == "scan"]
    assert any(n.op.name == "elemwise" for n in loop.attrs["body"].nodes)  # fused
    xv = RNG.randn(5, 4)
    ref = np.zeros(4)
    for r in xv:
        ref = 2 / (1 + np.exp(-(ref + r)))
    np.testing.assert_allclose(f(xv), ref)


# -- gradients ---------------------------------------------------------------------------------


def _rnn_cost(reverse):
    def f(ps):
        x, h0, W, U = ps
        hT, ys = gc.scan(_rnn_step(W, U), h0, x, reverse=reverse)
        weights = gc.arange(x.shape[0]).astype("float64").reshape(-1, 1)
        return (hT ** 2).sum() + (ys * weights).sum()
    return f


@pytest.mark.parametrize("reverse", [False, True])
def test_grad_tanh_rnn(reverse):
    inputs = [RNG.randn(4, 2, 3), RNG.randn(2, 4), RNG.randn(3, 4), RNG.randn(4, 4) * 0.4]
    gc.check_grad(_rnn_cost(reverse), inputs)


def _symbolic_T_cost(ps):
    x, h0, W = ps
    hT, ys = gc.scan(lambda h, xt: (gc.tanh(xt @ W + h), (h * h).sum()), h0, x)
    return hT.sum() + ys.sum()


def test_grad_with_symbolic_T():
    gc.check_grad(_symbolic_T_cost, [RNG.randn(3, 2, 4), RNG.randn(2, 4), RNG.randn(4, 4)],
                  shapes=[("T", "N", 4), ("N", 4), None])


def _lstm(ps):
    x, h0, c0, Wx, Wh, b = ps
    H = h0.shape[1]

    def step(carry, xt):
        h, c = carry
        z = xt @ Wx + h @ Wh + b
        i, f, g, o = (z[:, k * H:(k + 1) * H] for k in range(4))
        c2 = gc.sigmoid(f) * c + gc.sigmoid(i) * gc.tanh(g)
        h2 = gc.sigmoid(o) * gc.tanh(c2)
        return (h2, c2), h2

    (hT, cT), hs = gc.scan(step, (h0, c0), x)
    return (hs * hs).mean() + (cT * hT).sum()


def test_grad_lstm_step():
    T, N, D, H = 3, 2, 3, 2
    gc.check_grad(_lstm, [RNG.randn(T, N, D), RNG.randn(N, H), RNG.randn(N, H),
                          RNG.randn(D, 4 * H) * 0.5, RNG.randn(H, 4 * H) * 0.5,
                          RNG.randn(4 * H) * 0.1])


def _dict_carry_cost(ps):
    x, a0, w = ps

    def step(c, xt):
        a = gc.softplus(c["a"] * w + gc.exp(-xt * xt)) / (1.0 + c["b"] ** 2)
        return {"a": a, "b": c["b"] + gc.sin(a).sum()}, gc.log1p(a * a)

    carry, ys = gc.scan(step, {"a": a0, "b": gc.zeros((), "float64")}, x)
    return carry["a"].sum() * carry["b"] + ys.sum()


def test_grad_dict_carry_and_nested_expressions():
    gc.check_grad(_dict_carry_cost, [RNG.randn(4, 3), RNG.randn(3), RNG.randn(3)])


def _nested_cost(ps):
    x, v = ps
    return gc.scan(lambda c, row: (gc.tanh(c * gc.scan(
        lambda s, e: (s + e * c, None), gc.zeros((), "float64"), row)[0]), None),
        v, x)[0] * 1.0


def test_grad_to_a_parameter_and_through_a_nested_scan():
    # a scalar carry through an inner loop that captures the outer carry
    gc.check_grad(_nested_cost, [RNG.randn(3, 4) * 0.5, np.array(0.7)])

    Wv = RNG.randn(3, 3) * 0.5
    with gc.Graph():
        x = gc.placeholder("x", (4, 3), "float64")
        W = gc.parameter("W", Wv)
        c, _ = gc.scan(lambda c, xt: (gc.tanh(c @ W + xt), None), gc.zeros((3,), "float64"), x)
        gW = gc.compile([x], gc.grad((c * c).sum(), W))
    xv = RNG.randn(4, 3)

    def cost(Wm):
        c = np.zeros(3)
        for r in xv:
            c = np.tanh(c @ Wm + r)
        return (c * c).sum()

    numeric = np.zeros_like(Wv)
    for idx in np.ndindex(Wv.shape):
        d = np.zeros_like(Wv)
        d[idx] = 1e-6
        numeric[idx] = (cost(Wv + d) - cost(Wv - d)) / 2e-6
    np.testing.assert_allclose(gW(xv), numeric, rtol=1e-6, atol=1e-9)


def _second_order_cost(ps):
    x, h0, W = ps
    hT, ys = gc.scan(lambda h, xt: (gc.tanh(xt * W + h * W), h * xt), h0, x)
    cost = (hT * hT).sum() + ys.sum()
    gW, gh = gc.grad(cost, [W, h0])
    return (gW * gW).sum() + (gh * gh).sum()


def test_second_order_through_scan():
    gc.check_grad(_second_order_cost, [RNG.randn(3, 2) * 0.7, RNG.randn(2), RNG.randn(2) * 0.7])


# the same costs on the native backends (llvm, and cuda's emulation): the loops (forward and
# the gradients' reverse loops, nested ones too) run natively and agree with the NumPy
# backend, whose gradients the tests above check against finite differences
NATIVE_GRADS = {
    "tanh_rnn": (_rnn_cost(False), [(4, 2, 3), (2, 4), (3, 4), (4, 4)], None),
    "tanh_rnn_reverse": (_rnn_cost(True), [(4, 2, 3), (2, 4), (3, 4), (4, 4)], None),
    "symbolic_T": (_symbolic_T_cost, [(5, 2, 4), (2, 4), (4, 4)],
                   [("T", "N", 4), ("N", 4), None]),
    "lstm": (_lstm, [(3, 2, 3), (2, 2), (2, 2), (3, 8), (2, 8), (8,)], None),
    "dict_carry": (_dict_carry_cost, [(4, 3), (3,), (3,)], None),
    "nested": (_nested_cost, [(3, 4), ()], None),
    "second_order": (_second_order_cost, [(3, 2), (2,), (2,)], None),
}


@pytest.mark.parametrize("name", list(NATIVE_GRADS))
@pytest.mark.parametrize("optimize", [True, False], ids=["optimized", "plain"])
@pytest.mark.parametrize("native", LOOP_BACKENDS[1:])
def test_native_gradients_match_numpy(name, optimize, native):
    f, shapes, symbolic = NATIVE_GRADS[name]
    rng = np.random.RandomState(1)
    arrays = [rng.randn(*s) * 0.5 for s in shapes]
    with gc.Graph():
        xs = [gc.placeholder(f"x{i}", s if symbolic is None or symbolic[i] is None
                             else symbolic[i], "float64") for i, s in enumerate(shapes)]
        cost = f(xs)
        outs = [cost, *gc.grad(cost, xs, allow_unused=True)]
        fns = {b: compile_on(xs, outs, backend=b, optimize=optimize) for b in ("numpy", native)}
    runs = [arrays]
    if symbolic is not None:  # one compiled function, two lengths
        runs.append([a[:2] if s is not None and s[0] == "T" else a
                     for a, s in zip(arrays, symbolic)])
    for args in runs:
        for got, want in zip(fns[native](*args), fns["numpy"](*args)):
            assert got.shape == want.shape
            # (a device's libdevice math may differ from the host's by a few ulp)
            np.testing.assert_allclose(got, want, rtol=1e-7 if native == "cuda-device"
                                       else 1e-9, atol=1e-12)


# -- files -------------------------------------------------------------------------------------


def test_save_load_a_function_and_a_graph_with_a_loop(tmp_path):
    W = RNG.randn(3, 4)
    with gc.Graph() as g:
        x = gc.placeholder("x", ("T", 2, 3), "float64")
        h0 = gc.placeholder("h0", (2, 4), "float64")
        Wp = gc.parameter("W", W)
        hT, ys = gc.scan(lambda h, xt: (gc.tanh(xt @ Wp + h), h.sum()), h0, x)
        loss = (hT * hT).sum() + ys.sum()
        f = gc.compile([x, h0], [loss, gc.grad(loss, Wp)])
    xv, hv = RNG.randn(5, 2, 3), RNG.randn(2, 4)
    want = f(xv, hv)
    gc.save(f, tmp_path / "f.graphc")
    f2 = gc.load(tmp_path / "f.graphc")
    for a, b in zip(f2(xv, hv), want):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    gc.save(g, tmp_path / "g.graphc")
    g2 = gc.load(tmp_path / "g.graphc")
    loops = [n for n in g2.nodes if n.op.name == "scan"]
    assert loops and all(n.attrs["body"].inputs for n in loops)


def test_viz_draws_the_body_as_a_cluster():
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3), "float64")
        c, _ = gc.scan(lambda c, xt: (gc.tanh(c + xt), None), gc.zeros((3,), "float64"), x)
        g = gc.grad(c.sum(), x)
        src = gc.viz.to_dot([c, g]).source
    assert src.count("scan over T steps") == 2 and "reverse" in src  # forward and gradient
    assert "tanh" in src


@BACKENDS
def test_a_length_no_input_binds_is_refused_at_compile_time(backend):
    with gc.Graph():
        x = gc.placeholder("x", (4,), "float64")
        c, _ = gc.scan(lambda c, _: (c * 2 + x, None), x, length="K")
        with pytest.raises(gc.ShapeError, match="K, which no input"):
            compile_on([x], c, backend=backend)
        n = gc.placeholder("n", ("K",), "float64")
        f = compile_on([x, n], c, backend=backend)
    np.testing.assert_allclose(f(np.ones(4), np.zeros(3)), np.full(4, 15.0))


# -- the native loop's corner cases ------------------------------------------------------------


@BACKENDS
def test_carries_that_swap_pass_through_or_stay(backend):
    """New carries that are other carry entries (a swap: staged), the entering carry itself
    (the identity), an x slice or a captured tensor; ys that are an x slice or a carry."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 2), "float64")
        k = gc.placeholder("k", (2,), "float64")

        def step(c, xt):
            a, b, same, last, cap = c
            return (b, a + xt, same, xt, k * 2.0), (xt, a, cap)

        init = tuple(gc.constant(np.full(2, v)) for v in (1.0, 2.0, 3.0, 4.0, 5.0))
        carry, ys = gc.scan(step, init, x)
        f = compile_on([x, k], [*carry, *ys], backend=backend)
    for T in (3, 4):
        xv, kv = RNG.randn(T, 2), RNG.randn(2)
        a, b, same, last, cap = (np.full(2, v) for v in (1.0, 2.0, 3.0, 4.0, 5.0))
        ya, caps = [], []
        for t in range(T):
            ya.append(a)
            caps.append(cap)
            a, b, last, cap = b, a + xv[t], xv[t], kv * 2
        got = f(xv, kv)
        for g, w in zip(got, [a, b, same, last, cap, xv, np.stack(ya), np.stack(caps)]):
            np.testing.assert_allclose(g, w, rtol=1e-15)


@BACKENDS
def test_a_bad_id_inside_a_loop_names_the_body_node(backend):
    with gc.Graph():
        ids = gc.placeholder("ids", ("T", 2), "int64")
        table = gc.parameter("table", np.arange(12.0).reshape(4, 3))
        c, _ = gc.scan(lambda c, i: (c + gc.take(table, i).sum(0), None),
                       gc.zeros((3,), "float64"), ids)
        f = compile_on([ids], c, updates={table: table - c.sum() * 0.0}, backend=backend)
    np.testing.assert_allclose(f(np.array([[0, 1], [2, 3]])), [18.0, 22.0, 26.0])
    before = table.value.copy()
    with pytest.raises(gc.BackendError, match=r"9 is outside \[0, 4\)") as err:
        f(np.array([[0, 1], [9, 3]]))
    # every backend names the body's take (the numpy backend named the scan node and its
    # line, found by a fuzz of loops)
    assert str(err.value).startswith("the compiled step failed: take:")
    assert "gc.take(table, i)" in str(err.value)  # its line
    np.testing.assert_array_equal(table.value, before)


def test_a_namedtuple_carry_reaches_the_body_and_comes_back_as_one():
    """It reached fn as a plain tuple (``s.h`` raised AttributeError); JAX keeps it."""
    from collections import namedtuple

    State = namedtuple("State", "h c")
    xs = gc.placeholder("xs", (5, 3))

    def body(s, x):
        assert isinstance(s, State)
        return State(s.h + x, s.c * 2.0), s.h.sum()

    carry, ys = gc.scan(body, State(gc.zeros((3,)), gc.ones((3,))), xs)
    assert isinstance(carry, State)
    h, c, y = gc.compile([xs], [carry.h, carry.c, ys])(np.ones((5, 3), np.float32))
    np.testing.assert_array_equal(h, [5.0] * 3)
    np.testing.assert_array_equal(c, [32.0] * 3)
    np.testing.assert_array_equal(y, [0.0, 3.0, 6.0, 9.0, 12.0])


def test_a_body_may_return_a_plain_tuple_for_a_namedtuple_carry():
    from collections import namedtuple

    State = namedtuple("State", "h c")
    xs = gc.placeholder("xs", (3, 2))
    carry, _ = gc.scan(lambda s, x: ((s.h + x, s.c), x), State(gc.zeros((2,)), gc.ones((2,))),
                       xs)
    assert isinstance(carry, State)
    np.testing.assert_array_equal(gc.compile([xs], carry.h)(np.ones((3, 2), np.float32)),
                                  [3.0, 3.0])
