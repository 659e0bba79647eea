"""The compile memo (graphc/compile_memo.py): a second gc.compile of the same declared program
reuses the optimized program and the generated code, and every difference that changes what is
compiled misses it."""

import gc as pygc
import threading
import weakref

import numpy as np
import pytest

import graphc as gc
from graphc import compile_memo
from graphc.function import build_program


@pytest.fixture(autouse=True)
def _empty_memo(monkeypatch):
    monkeypatch.delenv(compile_memo.ENV, raising=False)
    monkeypatch.delenv("GRAPHC_DISABLE_PASSES", raising=False)
    monkeypatch.delenv("GRAPHC_DUMP_PASSES", raising=False)
    compile_memo.clear()
    yield
    compile_memo.clear()


W0 = np.random.RandomState(3).randn(4, 3)
B0 = np.random.RandomState(4).randn(3)


def _step(lr=0.1, act=gc.tanh, dtype="float64"):
    """A small regression training step: (inputs, loss, updates, parameters)."""
    x = gc.placeholder("x", ("N", 4), dtype)
    y = gc.placeholder("y", ("N", 3), dtype)
    w = gc.parameter("w", W0.astype(dtype))
    b = gc.parameter("b", B0.astype(dtype))
    loss = gc.mean(gc.square(act(x @ w + b) - y))
    gw, gb = gc.grad(loss, [w, b])
    return [x, y], loss, {w: w - lr * gw, b: b - lr * gb}, (w, b)


def _key(inputs, outputs, updates=None, backend="llvm", optimize=True, options=None):
    program, _ = build_program(inputs, outputs, updates)
    return compile_memo.fingerprint(program, optimize, backend, options or {})


def _batch(seed, n=5):
    r = np.random.RandomState(seed)
    return r.randn(n, 4), r.randn(n, 3)


def test_second_compile_reuses_passes_and_ir_and_trains_the_same_shared_parameters():
    inputs, loss, updates, (w, b) = _step()
    first = gc.compile(inputs, loss, updates=updates, backend="llvm")
    second = gc.compile(inputs, loss, updates=updates, backend="llvm")
    assert first.stats["compile_memo_hit"] is False and second.stats["compile_memo_hit"] is True
    assert second.graph is first.graph and second.source == first.source
    assert second.stats["passes"] == first.stats["passes"]
    assert second._exe is not first._exe and second._exe.engine is not first._exe.engine

    def train(fn, steps=3):
        w.value, b.value = W0, B0
        return [float(fn(*_batch(k))) for k in range(steps)], w.value.copy()

    (l1, w1), (l2, w2) = train(first), train(second)
    assert l1 == l2 and np.array_equal(w1, w2)
    assert l1[0] > l1[2]  # it trains
    # the parameters are shared as without the memo: each step of one continues the other's
    w.value, b.value = W0, B0
    a = float(first(*_batch(0)))
    c = float(second(*_batch(1)))
    assert [a, c] == l1[:2]
    with gc.Graph():  # a compilation without the memo agrees bit for bit
        inputs, loss, updates, (w, b) = _step()
        plain = gc.compile(inputs, loss, updates=updates, backend="llvm",
                           backend_options={"cache": False})
        assert train(plain)[0] == l1


@pytest.mark.parametrize("change", ["attr", "op", "shape", "dtype"])
def test_a_graph_that_differs_misses(change):
    x = gc.placeholder("x", ("N", 4), "float64")
    w = gc.parameter("w", W0)
    h = x @ w
    base = _key([x], gc.sum(gc.tanh(h) * 2.0, axis=1))
    other = {
        "attr": lambda: _key([x], gc.sum(gc.tanh(h) * 3.0, axis=1)),
        "op": lambda: _key([x], gc.sum(gc.sigmoid(h) * 2.0, axis=1)),
        "shape": lambda: _key([x], gc.sum(gc.tanh(h[:, :2]) * 2.0, axis=1)),
        "dtype": lambda: _key([x], gc.sum(gc.tanh(gc.cast(h, "float32")) * 2.0, axis=1)),
    }[change]()
    assert base is not None and other is not None
    assert base != other
    assert base == _key([x], gc.sum(gc.tanh(h) * 2.0, axis=1))  # the same graph: the same key


def test_int_float_and_signed_zero_attributes_stay_apart():
    x = gc.placeholder("x", (3,), "float64")
    assert _key([x], x * 0.0) != _key([x], x * -0.0)
    assert compile_memo._canon(1, {}) != compile_memo._canon(1.0, {}) != \
        compile_memo._canon(True, {})


def test_backend_options_pass_selection_and_backend_miss(monkeypatch):
    inputs, loss, updates, _ = _step()
    base = _key(inputs, loss, updates)
    assert base == _key(inputs, loss, updates)
    keys = [base,
            _key(inputs, loss, updates, options={"check_finite": True}),
            _key(inputs, loss, updates, options={"cache": False}),
            _key(inputs, loss, updates, backend="numpy"),
            _key(inputs, loss, updates, optimize=False),
            _key(inputs, loss, updates, optimize=["cse", "dce"])]
    monkeypatch.setenv("GRAPHC_DISABLE_PASSES", "fuse")
    keys.append(_key(inputs, loss, updates))
    assert len(set(keys)) == len(keys)
    # compiled: the pass selection really is part of it
    monkeypatch.delenv("GRAPHC_DISABLE_PASSES")
    fused = gc.compile(inputs, loss, updates=updates, backend="numpy")
    monkeypatch.setenv("GRAPHC_DISABLE_PASSES", "fuse")
    unfused = gc.compile(inputs, loss, updates=updates, backend="numpy")
    assert not unfused.stats["compile_memo_hit"]
    assert "fuse" not in [s.name for s in unfused.stats["passes"]]
    assert "fuse" in [s.name for s in fused.stats["passes"]]


def test_a_list_of_one_output_shares_the_entry_but_returns_a_list():
    x = gc.placeholder("x", (3,), "float64")
    single = gc.compile([x], x * 2.0, backend="numpy")
    listed = gc.compile([x], [x * 2.0], backend="numpy")
    assert listed.stats["compile_memo_hit"]
    assert isinstance(listed(np.ones(3)), list) and isinstance(single(np.ones(3)), np.ndarray)


def test_different_parameters_with_equal_values_miss():
    inputs, loss, updates, _ = _step()
    other_inputs, other_loss, other_updates, _ = _step()  # new parameters (and placeholders)
    assert _key(inputs, loss, updates) != _key(other_inputs, other_loss, other_updates)
    x = gc.placeholder("x2", (4,), "float64")
    p, q = gc.parameter("p", np.ones(4)), gc.parameter("q", np.ones(4))
    assert _key([x], gc.sum(x * p)) != _key([x], gc.sum(x * q))
    fp = gc.compile([x], gc.sum(x * p), backend="llvm")
    fq = gc.compile([x], gc.sum(x * q), backend="llvm")
    assert not fq.stats["compile_memo_hit"]
    q.value = np.full(4, 2.0)
    assert float(fp(np.ones(4))) == 4.0 and float(fq(np.ones(4))) == 8.0


def _nested(x, c, scale):
    """A scan whose body runs a scan: sum over t of sum over s of tanh(scale * x[t, s] + c)."""

    def outer(acc, xt):
        def inner(a, xs):
            return a + gc.tanh(xs * scale + c), None

        total, _ = gc.scan(inner, gc.zeros((2,), "float64"), xt)
        return acc + total, total

    return gc.scan(outer, gc.zeros((2,), "float64"), x)


def test_nested_scans_hit_on_the_same_graph_and_miss_on_a_different_inner_body():
    x = gc.placeholder("x", ("T", 3, 2), "float64")
    c = gc.parameter("c", np.linspace(-1, 1, 2))
    final, ys = _nested(x, c, 2.0)
    again, ys_again = _nested(x, c, 2.0)  # traced again: new bodies, the same structure
    other, ys_other = _nested(x, c, 3.0)  # only the inner body's constant differs
    key = _key([x], [final, ys])
    assert key is not None
    assert key == _key([x], [final, ys])
    assert key != _key([x], [other, ys_other])
    assert _key([x], [again, ys_again]) != _key([x], [other, ys_other])
    loss = gc.sum(final)
    updates = {c: c - 0.1 * gc.grad(loss, c)}
    fns = [gc.compile([x], [final, ys], updates=updates, backend="llvm") for _ in range(2)]
    assert fns[1].stats["compile_memo_hit"]
    assert not gc.compile([x], [other, ys_other], backend="llvm").stats["compile_memo_hit"]
    data = np.random.RandomState(0).randn(4, 3, 2)
    c.value = np.linspace(-1, 1, 2)
    first = fns[0](data)
    c.value = np.linspace(-1, 1, 2)
    second = fns[1](data)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    expected = np.tanh(data * 2.0 + np.linspace(-1, 1, 2)).sum(axis=(0, 1))
    np.testing.assert_allclose(first[0], expected, rtol=1e-12)
    assert not np.allclose(c.value, np.linspace(-1, 1, 2))  # the update was applied


def test_two_functions_from_one_entry_keep_their_own_buffers_across_threads():
    x = gc.placeholder("x", ("N", 4), "float64")
    w = gc.parameter("w", W0)
    out = gc.tanh(x @ w) * 2.0
    fns = [gc.compile([x], out, backend="llvm") for _ in range(2)]
    assert fns[1].stats["compile_memo_hit"]
    arenas = [f._exe._binding(None, (5,)).arena for f in fns]
    assert not np.may_share_memory(arenas[0], arenas[1])
    datas = [np.random.RandomState(k).randn(5, 4) for k in range(2)]
    wants = [np.tanh(d @ W0) * 2.0 for d in datas]
    for _ in range(3):  # alternately
        for f, d, want in zip(fns, datas, wants):
            np.testing.assert_allclose(f(d), want, rtol=1e-12)
    failures = []

    def hammer(f, d, want):
        for _ in range(200):
            if not np.allclose(f(d), want, rtol=1e-12):
                failures.append(True)

    threads = [threading.Thread(target=hammer, args=args) for args in zip(fns, datas, wants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
    fns[0].close()  # closing one leaves the other (and the memo) working
    np.testing.assert_allclose(fns[1](datas[1]), wants[1], rtol=1e-12)
    with pytest.raises(gc.BackendError, match="closed"):
        fns[0](datas[0])
    again = gc.compile([x], out, backend="llvm")
    assert again.stats["compile_memo_hit"]
    np.testing.assert_allclose(again(datas[0]), wants[0], rtol=1e-12)


def test_the_memo_is_bounded_and_least_recently_used_goes_first():
    x = gc.placeholder("x", (3,), "float64")
    outs = [x * float(k) for k in range(compile_memo.CAPACITY + 2)]
    for o in outs:
        gc.compile([x], o, backend="numpy", optimize=False)
    assert compile_memo.info()["entries"] == compile_memo.CAPACITY
    assert not gc.compile([x], outs[0], backend="numpy", optimize=False).stats[
        "compile_memo_hit"]  # evicted
    assert gc.compile([x], outs[-1], backend="numpy", optimize=False).stats["compile_memo_hit"]
    assert compile_memo.info()["entries"] == compile_memo.CAPACITY


def test_clear_lets_the_program_and_its_parameters_go():
    with gc.Graph() as g:
        x = gc.placeholder("x", (3,), "float64")
        p = gc.parameter("p", np.ones(3))
        fn = gc.compile([x], x * p, backend="numpy")
    storage = weakref.ref(p.node.attrs["storage"])
    program = weakref.ref(fn.graph)
    del g, x, p, fn
    pygc.collect()
    assert program() is not None  # remembered
    compile_memo.clear()
    gc.reset_default_graph()
    pygc.collect()
    assert program() is None and storage() is None


def test_the_environment_variable_switches_it_off(monkeypatch):
    monkeypatch.setenv(compile_memo.ENV, "0")
    inputs, loss, updates, _ = _step()
    fns = [gc.compile(inputs, loss, updates=updates, backend="llvm") for _ in range(2)]
    assert not any(f.stats["compile_memo_hit"] for f in fns)
    assert compile_memo.info()["entries"] == 0
    assert fns[0].graph is not fns[1].graph
    monkeypatch.setenv(compile_memo.ENV, "1")
    gc.compile(inputs, loss, updates=updates, backend="llvm")
    assert gc.compile(inputs, loss, updates=updates, backend="llvm").stats["compile_memo_hit"]


def test_profile_option_gets_its_own_entry_and_profiles():
    inputs, loss, updates, _ = _step()
    gc.compile(inputs, loss, updates=updates, backend="llvm")
    fns = [gc.compile(inputs, loss, updates=updates, backend="llvm",
                      backend_options={"profile": True}) for _ in range(2)]
    assert [f.stats["compile_memo_hit"] for f in fns] == [False, True]
    fns[1](*_batch(0))
    profile = fns[1].kernel_profile()
    assert profile and sum(cycles for _, cycles in profile) > 0
