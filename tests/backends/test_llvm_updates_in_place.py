"""New parameter values written straight into their parameters on the llvm backend.

A step's last updates (after every kernel that can fail and every read of the old value) are
computed into the parameter's memory instead of a buffer copied at the end
(passes/memory.updates_in_place, backends/llvm/codegen.py). The rule is checked on its own,
case by case, and through compiled steps: same values as the NumPy backend, and a failed
call still changes no parameter.
"""

from contextlib import contextmanager

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import codegen
from graphc.passes.memory import updates_in_place
from tests.helpers import folded_and_separate_updates, tanh_sgd_step

F = gc.nn.functional


def _chosen(fn, can_fail=lambda n: n.op.name in codegen.CAN_FAIL) -> dict:
    """The rule's choice on a compiled function's optimized program: parameter name -> new
    value written into it."""
    program = fn.graph
    chosen = updates_in_place(program, program.meta["memory"], can_fail)
    names = {p.uid: p.name for p, _ in program.updates}
    return {names[p]: v for v, p in chosen.items()}


def _mlp(seed=0):
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", 5))
    y = gc.placeholder("y", ("N",), "int64")
    W1 = gc.parameter("W1", rng.normal(size=(5, 7)).astype(np.float32))
    b1 = gc.parameter("b1", np.zeros(7, np.float32))
    W2 = gc.parameter("W2", rng.normal(size=(7, 3)).astype(np.float32))
    loss = F.cross_entropy(gc.relu(x @ W1 + b1) @ W2, y)
    params = [W1, b1, W2]
    grads = gc.grad(loss, params)
    feed = (rng.normal(size=(6, 5)).astype(np.float32), rng.integers(0, 3, 6))
    return [x, y], loss, {p: p - 0.1 * g for p, g in zip(params, grads)}, feed


def _train_both(inputs, loss, updates, params, feed, steps=3):
    """Train from the same start on the NumPy and llvm backends: backend -> (losses, final
    parameter values, the compiled step)."""
    start = [p.value for p in params]
    out = {}
    for backend in ("numpy", "llvm"):
        for p, v in zip(params, start):
            p.value = v
        fn = gc.compile(inputs, loss, updates=updates, backend=backend)
        losses = [float(fn(*feed)) for _ in range(steps)]
        out[backend] = losses, [p.value for p in params], fn
    return out


def test_an_sgd_step_writes_every_new_value_into_its_parameter_and_matches_numpy():
    inputs, loss, updates, feed = _mlp()
    trained = _train_both(inputs, loss, updates, list(updates), feed, steps=4)
    assert trained["llvm"][2].stats["llvm_updates_in_place"] == len(updates)
    np.testing.assert_allclose(trained["llvm"][0], trained["numpy"][0], rtol=1e-6)
    for a, b in zip(trained["llvm"][1], trained["numpy"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_nothing_is_written_in_place_when_any_kernel_may_fail_after_it():
    inputs, loss, updates, _ = _mlp()
    fn = gc.compile(inputs, loss, updates=updates)
    assert set(_chosen(fn)) == {"W1", "b1", "W2"}
    assert _chosen(fn, can_fail=lambda n: True) == {}


def test_a_swap_and_a_new_value_that_is_also_an_output_are_copied():
    x = gc.placeholder("x", (3,))
    a = gc.parameter("a", np.arange(3, dtype=np.float32))
    b = gc.parameter("b", np.ones(3, np.float32))
    swap = gc.compile([x], gc.sum(x * a), updates={a: b, b: a}, backend="llvm")
    assert _chosen(swap) == {} and swap.stats["llvm_updates_in_place"] == 0
    swap(np.ones(3, np.float32))
    np.testing.assert_array_equal(a.value, [1, 1, 1])
    np.testing.assert_array_equal(b.value, [0, 1, 2])

    new_a = a * 0.5 + x
    out = gc.compile([x], [gc.sum(x), new_a], updates={a: new_a}, backend="llvm")
    assert _chosen(out) == {}
    total, returned = out(np.full(3, 2.0, np.float32))
    np.testing.assert_array_equal(returned, [2.5, 2.5, 2.5])
    np.testing.assert_array_equal(a.value, [2.5, 2.5, 2.5])


def test_only_an_elementwise_value_may_read_the_parameter_it_overwrites():
    rng = np.random.default_rng(1)
    x = gc.placeholder("x", (4, 4))
    W = gc.parameter("W", rng.normal(size=(4, 4)).astype(np.float32))
    R = gc.constant(rng.normal(size=(4, 4)).astype(np.float32))
    start = W.value
    # W @ R reads rows of W while it writes others: never into W itself
    product = gc.compile([x], gc.sum(x), updates={W: W @ R}, backend="llvm")
    assert _chosen(product) == {}
    product(np.ones((4, 4), np.float32))
    np.testing.assert_allclose(W.value, start @ R.node.attrs["value"].array, rtol=1e-5)
    # W - 0.1 (x @ x) reads W at the point it writes: into W
    W.value = start
    elementwise = gc.compile([x], gc.sum(x), updates={W: W - 0.1 * (x @ x)}, backend="llvm")
    assert set(_chosen(elementwise)) == {"W"}
    assert elementwise.stats["llvm_updates_in_place"] == 1
    xs = rng.normal(size=(4, 4)).astype(np.float32)
    elementwise(xs)
    np.testing.assert_allclose(W.value, start - 0.1 * (xs @ xs), rtol=1e-5, atol=1e-6)


def test_a_parameter_read_after_its_new_value_is_computed_is_copied():
    x = gc.placeholder("x", (3,))
    W = gc.parameter("W", np.arange(3, dtype=np.float32))
    new = W * 2.0
    late_read = gc.sum(new * gc.exp(W)) + gc.sum(x)  # exp(W) may run after `new`
    fn = gc.compile([x], late_read, updates={W: new}, backend="llvm")
    program = fn.graph
    order = {n.uid: k for k, n in enumerate(program.nodes)}
    (param, value), = program.updates
    readers = [order[n.uid] for n in program.nodes if param in n.inputs]
    assert max(readers) > order[value.uid]  # (the fused exp(W) * new runs after new)
    assert _chosen(fn) == {} and fn.stats["llvm_updates_in_place"] == 0
    loss = fn(np.zeros(3, np.float32))
    w = np.arange(3, dtype=np.float32)
    np.testing.assert_allclose(loss, np.sum(2 * w * np.exp(w)), rtol=1e-6)
    np.testing.assert_array_equal(W.value, 2 * w)


def _lookup_of_new_value():
    """A step whose output looks rows up in the new value: the lookup (which fails on a bad
    id) runs after the value is computed."""
    ids = gc.placeholder("ids", (2,), "int64")
    E = gc.parameter("E", np.ones((4, 2), np.float32))
    new = E * 3.0
    return [ids], gc.sum(F.embedding(ids, new)), {E: new}, E


@pytest.mark.parametrize("rule_knows_take_fails", [True, False])
def test_a_lookup_after_the_new_value_keeps_the_update_atomic(monkeypatch,
                                                              rule_knows_take_fails):
    """With `take` missing from CAN_FAIL the rule would choose the value; generation then
    sees the failing kernel after it and generates the module again without it."""
    if not rule_knows_take_fails:
        monkeypatch.setattr(codegen, "CAN_FAIL", frozenset({"scan"}))
    inputs, loss, updates, E = _lookup_of_new_value()
    fn = gc.compile(inputs, loss, updates=updates, backend="llvm", backend_options={
        "cache": False})
    assert fn.stats["llvm_updates_in_place"] == 0
    with pytest.raises(gc.BackendError, match=r"take: id 7 is outside \[0, 4\)"):
        fn(np.array([0, 7]))
    np.testing.assert_array_equal(E.value, np.ones((4, 2)))
    assert float(fn(np.array([0, 3]))) == 12.0
    np.testing.assert_array_equal(E.value, np.full((4, 2), 3.0))


def test_an_embedding_step_fails_before_any_write_and_trains_like_numpy():
    rng = np.random.default_rng(2)
    ids = gc.placeholder("ids", ("N",), "int64")
    E = gc.parameter("E", rng.normal(size=(6, 3)).astype(np.float32))
    W = gc.parameter("W", rng.normal(size=(3, 2)).astype(np.float32))
    loss = gc.mean(gc.tanh(F.embedding(ids, E) @ W))
    gE, gW = gc.grad(loss, [E, W])
    updates = {E: E - 0.5 * gE, W: W - 0.5 * gW}
    start = E.value, W.value
    step = gc.compile([ids], loss, updates=updates, backend="llvm")
    assert step.stats["llvm_updates_in_place"] == 2
    with pytest.raises(gc.BackendError, match="outside"):
        step(np.array([1, 6, 2]))
    np.testing.assert_array_equal(E.value, start[0])
    np.testing.assert_array_equal(W.value, start[1])
    good = np.array([1, 5, 2, 1])
    native = [float(step(good)) for _ in range(3)], E.value, W.value
    E.value, W.value = start
    reference = gc.compile([ids], loss, updates=updates, backend="numpy")
    expected = [float(reference(good)) for _ in range(3)], E.value, W.value
    np.testing.assert_allclose(native[0], expected[0], rtol=1e-6)
    np.testing.assert_allclose(native[1], expected[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(native[2], expected[2], rtol=1e-5, atol=1e-7)


def test_check_finite_keeps_copying_the_new_values():
    """check_finite looks for infinities in the new values after every kernel: they must
    not be in the parameters yet."""
    x = gc.placeholder("x", (3,))
    W = gc.parameter("W", np.ones(3, np.float32))
    fn = gc.compile([x], gc.sum(x * W), updates={W: W * x}, backend="llvm",
                    backend_options={"check_finite": True})
    assert fn.stats["llvm_updates_in_place"] == 0
    with pytest.raises(gc.BackendError):
        fn(np.array([1.0, np.inf, 1.0], np.float32))
    np.testing.assert_array_equal(W.value, np.ones(3))


def _random_step(seed: int):
    """Three 4x4 parameters whose new values mix old and new values elementwise, in
    products, transposed, reduced, swapped; a loss that looks rows up (which fails on a bad
    id) in an old value, early, or in a new one, after it."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", (4, 4))
    ids = gc.placeholder("ids", (3,), "int64")
    params = [gc.parameter(f"p{k}", rng.normal(size=(4, 4)).astype(np.float32))
              for k in range(3)]
    pool = [x, *params]

    def term():
        a, b = (pool[int(k)] for k in rng.integers(0, len(pool), 2))
        return [lambda: a * b, lambda: a @ b, lambda: gc.tanh(a) - b,
                lambda: gc.transpose(a) + 0.5 * b, lambda: gc.sum(a, axis=0) * b,
                lambda: b - 0.1 * (a @ x)][int(rng.integers(0, 6))]()

    early = gc.sum(F.embedding(ids, params[0]))  # (a lookup scheduled before the updates)
    news = {}
    for p in params:
        kind = int(rng.integers(0, 4))
        if kind == 0:
            news[p] = p - 0.1 * term()
        elif kind == 1:
            news[p] = term()
        elif kind == 2:
            news[p] = params[int(rng.integers(0, 3))]
        if p in news and rng.random() < 0.4:
            pool.append(news[p])  # later terms read the new value
    loss = gc.sum(term())
    if news and rng.random() < 0.3:
        looked_up = list(news.values())[int(rng.integers(0, len(news)))]
        loss = loss + gc.sum(F.embedding(ids, looked_up))
    else:
        loss = early + loss
    return [x, ids], loss, news, params, rng.normal(size=(4, 4)).astype(np.float32)


@pytest.mark.parametrize("seed", range(32))
def test_random_updates_match_numpy_and_a_failed_call_writes_nothing(seed):
    inputs, loss, news, params, xs = _random_step(seed)
    if not news:
        pytest.skip("no update drawn")
    start = [p.value for p in params]
    results = {}
    for backend in ("numpy", "llvm"):
        for p, v in zip(params, start):
            p.value = v
        step = gc.compile(inputs, loss, updates=news, backend=backend,
                          backend_options={"cache": False} if backend == "llvm" else None)
        losses = [float(step(xs, np.array([0, 3, 1]))) for _ in range(2)]
        before = [p.value for p in params]
        with pytest.raises(gc.BackendError, match="outside"):
            step(xs, np.array([1, 4, 0]))
        for p, v in zip(params, before):
            np.testing.assert_array_equal(p.value, v)
        results[backend] = losses, before
    np.testing.assert_allclose(results["llvm"][0], results["numpy"][0], rtol=2e-5, atol=1e-5)
    for a, b in zip(results["llvm"][1], results["numpy"][1]):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-5)


# -- W - lr * (X.T @ G) as one gemm into W (passes/memory.products_into_updates) --------------


def _dense_step(hidden=96, momentum=False, late_read=False, seed=3, lr=0.05):
    """x (N, 128) -> linear(hidden) -> tanh -> sum; SGD (or momentum) on W."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", 128))
    W = gc.parameter("W", (rng.normal(size=(128, hidden)) * 0.1).astype(np.float32))
    loss = gc.sum(gc.tanh(x @ W))
    (g,) = gc.grad(loss, [W])
    if late_read:  # a read of W built after its gradient: scheduled between the two
        loss = loss + 0.0 * gc.sum(W)
    updates = {W: W - lr * g}
    params = [W]
    if momentum:
        v = gc.parameter("v", np.zeros((128, hidden), np.float32))
        new_v = 0.9 * v + g
        updates = {v: new_v, W: W - 0.05 * new_v}
        params.append(v)
    return [x], loss, updates, params, rng.normal(size=(8, 128)).astype(np.float32)



def test_an_sgd_weight_update_is_one_gemm_into_the_weight():
    inputs, loss, updates, params, xs = _dense_step()
    runs = _train_both(inputs, loss, updates, params, [xs])
    fn = runs["llvm"][2]
    assert fn.stats["llvm_products_into_updates"] == 1
    assert fn.stats["llvm_updates_in_place"] == 1
    # no kernel of its own for W - 0.05 g: the gemm's alpha is -0.05, its beta 1
    profiled = gc.compile(inputs, loss, updates=updates, backend="llvm",
                          backend_options={"profile": True})
    (param, value), = profiled.graph.updates
    position = profiled.graph.nodes.index(value)
    kernels = [name for name, _ in profiled._exe.kernel_profile()]
    assert f"k{position}.elemwise" not in kernels and len(kernels) > 3
    np.testing.assert_allclose(runs["llvm"][0], runs["numpy"][0], rtol=1e-5)
    np.testing.assert_allclose(runs["llvm"][1][0], runs["numpy"][1][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["momentum", "late_read", "overlapping_tiles",
                                  "rate_over_one"])
def test_products_that_must_stay_whole_are_not_folded_into_the_update(case):
    """The gradient read twice (momentum), the weight read after its gradient, a product in
    register tiles that overlap (24 columns: a 16-column tile and one ending at the edge,
    whose shared columns would be updated twice), and a rate over 1 (a blocked gemm would
    scale each partial sum by it): each keeps its own result and update."""
    options = {"momentum": dict(momentum=True), "late_read": dict(late_read=True),
               "overlapping_tiles": dict(hidden=24), "rate_over_one": dict(lr=1.5)}[case]
    inputs, loss, updates, params, xs = _dense_step(**options)
    # (at a rate of 1.5 the steps after the first amplify rounding: one step)
    runs = _train_both(inputs, loss, updates, params, [xs],
                       steps=1 if case == "rate_over_one" else 3)
    fn = runs["llvm"][2]
    assert fn.stats["llvm_products_into_updates"] == 0
    if case == "late_read":
        program = fn.graph
        order = {n.uid: k for k, n in enumerate(program.nodes)}
        (W, value), = program.updates
        product = value.inputs[0] if value.inputs[0].op.name == "matmul" else value.inputs[1]
        assert any(order[product.uid] < order[n.uid] < order[value.uid] and W in n.inputs
                   for n in program.nodes)
    # the first loss sums 128 tanh values of up to 1 in size to about -0.1: its rounding
    # is absolute (128 float32 roundings of terms near 1: up to 8e-6), and the order of the
    # sum follows the host's vector width (a relative 1e-5 failed on an AVX-512 host)
    np.testing.assert_allclose(runs["llvm"][0], runs["numpy"][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(runs["llvm"][1], runs["numpy"][1]):  # (momentum's v grows to about 4)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("rows,hidden", [(128, 16), (32, 32), (64, 48), (8, 128)])
def test_an_sgd_update_in_the_register_tiles_rounds_as_the_separate_update(rows, hidden,
                                                                           dtype, monkeypatch):
    """A product small enough for the register tiles whose tiles do not overlap (rows even,
    columns a whole number of tiles) adds alpha times each tile's sums into W as it stores
    them: the same bits as the unfolded step (a product, then a sum, as the separate update
    rounds them), also on hostile inputs; and NumPy's values within rounding."""
    from graphc.backends.llvm import kernels_linalg

    monkeypatch.setenv("GRAPHC_COMPILE_MEMO", "0")  # (each compile generates its code)

    x, W, loss, updates, xs, hostile = tanh_sgd_step(  # a last step with hostile inputs
        rows, hidden, dtype, np.random.default_rng(rows + hidden), scale=0.1, batch=12,
        hostile_values=[0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38], fraction=0.05)
    @contextmanager
    def unfold():  # the same program with the update's own kernel
        with monkeypatch.context() as patch:
            patch.setattr(kernels_linalg, "tiles_update_sized", lambda *args: False)
            yield

    def tiles_fold(fn):
        return ("gemm_tiles" in fn.source) and ("gemm_tiles.float.update" in fn.source or
                                                "gemm_tiles.double.update" in fn.source)

    values = folded_and_separate_updates(x, W, loss, updates, xs, hostile, unfold, tiles_fold)
    assert values["folded"].tobytes() == values["separate"].tobytes()
    np.testing.assert_allclose(values["folded"], values["numpy"],
                               rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
    assert values["folded.hostile"].tobytes() == values["separate.hostile"].tobytes()
    assert np.array_equal(np.isnan(values["folded.hostile"]), np.isnan(values["numpy.hostile"]))


@pytest.mark.parametrize("scaled", [lambda g: 0.1 * (0.3 * g), lambda g: 1e-10 * (1e9 * g)],
                         ids=["two_rates", "overflowing_factor"])
def test_a_rate_of_several_factors_is_not_folded_into_the_tiles(scaled):
    """The separate update rounds 0.3 * g (or overflows 1e9 * g) before the next factor; the
    tiles would multiply by the constants' product at once: only a single factor (times -1)
    is folded into them, so the update keeps its bits (and its inf)."""
    rng = np.random.default_rng(1)
    W = gc.parameter("W", np.ones((16, 16), np.float32))
    a, b = gc.placeholder("a", (16, 32)), gc.placeholder("b", (32, 16))
    updates = {W: W - scaled(a @ b)}
    feeds = [[rng.normal(size=(16, 32)), rng.normal(size=(32, 16))],
             [np.full((16, 32), 1e15), np.full((32, 16), 1e14)]]
    results = {}
    for backend in ("numpy", "llvm"):
        W.value = np.ones((16, 16), np.float32)
        fn = gc.compile([a, b], gc.sum(a), updates=updates, backend=backend)
        for feed in feeds:
            with np.errstate(all="ignore"):
                fn(*[f.astype(np.float32) for f in feed])
            results.setdefault(backend, []).append(W.value)
        if backend == "llvm":
            assert fn.stats["llvm_products_into_updates"] == 0
    for got, want in zip(results["llvm"], results["numpy"]):  # (BLAS's sums differ in order)
        # inf where NumPy's is (overflow); |W| ~ 1 after cancelling: an absolute bound too
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_product_that_reads_its_own_weight_is_not_folded():
    rng = np.random.default_rng(4)
    x = gc.placeholder("x", (128, 128))
    W = gc.parameter("W", rng.normal(size=(128, 128)).astype(np.float32))
    start = W.value
    fn = gc.compile([x], gc.sum(x), updates={W: W - 0.01 * (W.T @ x)}, backend="llvm")
    assert fn.stats["llvm_products_into_updates"] == 0
    assert fn.stats["llvm_updates_in_place"] == 1  # the elementwise update still is
    xs = rng.normal(size=(128, 128)).astype(np.float32)
    fn(xs)
    np.testing.assert_allclose(W.value, start - 0.01 * (start.T @ xs), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_a_folded_update_matches_numpy_on_hostile_values(seed):
    """0, ±inf, NaN and huge values in the batch: the gemm's W + alpha (A @ B) gives what the
    NumPy backend's gradient and update give, NaN for NaN."""
    rng = np.random.default_rng(seed)
    inputs, loss, updates, params, xs = _dense_step(seed=seed)
    hostile = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3e38, -3e38], np.float32)
    mask = rng.random(xs.shape) < 0.05
    xs = np.where(mask, rng.choice(hostile, xs.shape), xs).astype(np.float32)
    with np.errstate(all="ignore"):
        runs = _train_both(inputs, loss, updates, params, [xs], steps=1)
    assert runs["llvm"][2].stats["llvm_products_into_updates"] == 1
    np.testing.assert_allclose(runs["llvm"][1][0], runs["numpy"][1][0], rtol=1e-5, atol=1e-6,
                               equal_nan=True)


@pytest.mark.parametrize("rule_knows_loop_results", [True, False])
def test_a_loops_result_as_a_new_value_is_applied(monkeypatch, rule_knows_loop_results):
    """A loop's final carry or stacked ys are read where the loop left them
    (loops.lower_scan_output): never written into the parameter by the rule, and applied by
    the copy at the end even if the rule did not know (the copy is skipped only where the
    slots, as generated, are the parameter's)."""
    if not rule_knows_loop_results:
        monkeypatch.setattr(codegen, "READ_IN_PLACE", frozenset())
    results = {}
    for backend in ("numpy", "llvm"):
        xs = gc.placeholder("xs", (3, 2))
        h = gc.parameter("h", np.zeros(2, np.float32))
        Y = gc.parameter("Y", np.zeros((3, 2), np.float32))
        h_last, ys = gc.scan(lambda c, x: (c + x, c), h, xs)
        fn = gc.compile([xs], gc.sum(ys), updates={h: h_last, Y: ys}, backend=backend,
                        backend_options={"cache": False} if backend == "llvm" else None)
        losses = [float(fn(np.ones((3, 2), np.float32))) for _ in range(2)]
        results[backend] = losses, h.value, Y.value
    np.testing.assert_array_equal(results["llvm"][0], results["numpy"][0])
    np.testing.assert_array_equal(results["llvm"][1], [6, 6])
    np.testing.assert_array_equal(results["llvm"][1], results["numpy"][1])
    np.testing.assert_array_equal(results["llvm"][2], results["numpy"][2])


def test_a_product_that_is_itself_the_new_value_is_not_counted_as_folded():
    rng = np.random.default_rng(5)
    x = gc.placeholder("x", (128, 128))
    P = gc.parameter("P", rng.normal(size=(128, 128)).astype(np.float32))
    start = P.value
    fn = gc.compile([x], gc.sum(x), updates={P: x @ gc.tanh(P)}, backend="llvm")
    assert fn.stats["llvm_updates_in_place"] == 1  # the gemm writes P: it reads tanh(P)
    assert fn.stats["llvm_products_into_updates"] == 0
    xs = rng.normal(size=(128, 128)).astype(np.float32)
    fn(xs)
    np.testing.assert_allclose(P.value, xs @ np.tanh(start), rtol=1e-4, atol=1e-4)


def test_a_rate_that_rounds_to_zero_is_not_folded():
    """BLAS skips a product scaled by 0, and with it the NaN of 0 * inf."""
    inputs, loss, updates, params, xs = _dense_step(lr=1e-46)
    xs[0, 0] = np.inf
    with np.errstate(all="ignore"):
        runs = _train_both(inputs, loss, updates, params, [xs], steps=1)
    assert runs["llvm"][2].stats["llvm_products_into_updates"] == 0
    assert np.isnan(runs["numpy"][1][0]).any()  # (0 * inf in the update)
    np.testing.assert_array_equal(np.isnan(runs["llvm"][1][0]), np.isnan(runs["numpy"][1][0]))
