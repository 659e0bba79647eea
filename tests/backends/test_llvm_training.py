"""Whole training steps on the LLVM backend: the same trajectory as the NumPy backend."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc
from bench.workloads import MODELS
from graphc.errors import BackendError
from tests.helpers import steady_allocation

F = gc.nn.functional


def _trajectory(make, backend, steps=6, batch=8, seed=0):
    with gc.Graph("m"):
        ins, loss, ups, feed = make()
        fn = gc.compile(ins, loss, updates=ups, backend=backend)
    rng = np.random.default_rng(seed)
    losses = [float(fn(*feed(batch, rng))) for _ in range(steps)]
    return losses, [p.value for p in ups]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_matches_numpy(name):
    gc.manual_seed(0)
    a_loss, a_params = _trajectory(MODELS[name], "numpy")
    gc.manual_seed(0)
    b_loss, b_params = _trajectory(MODELS[name], "llvm")
    np.testing.assert_allclose(b_loss, a_loss, rtol=2e-5)
    for x, y in zip(b_params, a_params):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_batch_norm_and_dropout_training_matches_numpy():
    def run(backend):
        rng = np.random.default_rng(0)
        with gc.Graph("bn"):
            x = gc.placeholder("x", ("N", 1, 6, 6))
            w = gc.parameter("w", rng.normal(0, 0.3, (4, 1, 3, 3)).astype(np.float32))
            g = gc.parameter("g", np.ones(4, np.float32))
            b = gc.parameter("b", np.zeros(4, np.float32))
            rm = gc.parameter("rm", np.zeros(4, np.float32))
            rv = gc.parameter("rv", np.ones(4, np.float32))
            h = F.batch_norm(F.conv2d(x, w, padding=1), g, b, rm, rv, training=True)
            h = F.dropout(gc.relu(h), 0.3, training=True, seed=5)
            loss = gc.mean(F.avg_pool2d(h, 2) ** 2)
            grads = gc.grad(loss, [w, g, b])
            step = gc.compile([x], loss, updates={p: p - 0.1 * d for p, d in
                                                  zip([w, g, b], grads)}, backend=backend)
            data = rng.normal(size=(5, 1, 6, 6)).astype(np.float32)
            out = [float(step(data)) for _ in range(4)]
        return out, [rm.value, rv.value, w.value]

    (l1, p1), (l2, p2) = run("numpy"), run("llvm")
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    for a, c in zip(p2, p1):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)


def test_one_compile_serves_every_batch_size():
    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.arange(6, dtype=np.float32).reshape(3, 2))
    fn = gc.compile([x], gc.softmax(x @ W), backend="llvm")
    ref = gc.compile([x], gc.softmax(x @ W))
    for n in (1, 7, 64, 0, 7):
        a = np.random.default_rng(n).normal(size=(n, 3)).astype(np.float32)
        np.testing.assert_allclose(fn(a), ref(a), rtol=1e-5, atol=1e-7)


def test_source_is_readable_llvm_ir_named_after_the_graph():
    x = gc.placeholder("images", ("N", 4))
    W = gc.parameter("weights", np.ones((4, 2), np.float32))
    fn = gc.compile([x], gc.relu(x @ W), backend="llvm")
    src = fn.source
    assert "define i32 @\"graphc_step\"" in src
    assert "matmul" in src and "relu" in src
    assert '%"weights"' in src and '%"images"' in src


def test_object_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path))
    x = gc.placeholder("x", (3,))
    first = gc.compile([x], gc.exp(x) * 2.0, backend="llvm")
    second = gc.compile([x], gc.exp(x) * 2.0, backend="llvm")
    assert first.stats["llvm_cache_hit"] is False and second.stats["llvm_cache_hit"] is True
    assert list(tmp_path.glob("llvm/*.o"))
    np.testing.assert_allclose(second(np.ones(3, np.float32)), 2 * np.e, rtol=1e-6)
    fresh = gc.compile([x], gc.exp(x) * 2.0, backend="llvm", backend_options={"cache": False})
    assert fresh.stats["llvm_cache_hit"] is False


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "flipped"])
def test_a_damaged_cache_file_is_a_miss_and_is_rewritten(tmp_path, damage):
    """LLVM aborts the process on a bad object file: damage must be caught before it."""
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(f"""
        import glob, os, numpy as np, graphc as gc
        x = gc.placeholder("x", ("N", 3))
        W = gc.parameter("W", np.ones((3, 2), np.float32))
        loss = gc.tanh(x @ W).sum()
        want = float(gc.compile([x], loss, backend="llvm")(np.ones((2, 3), np.float32)))
        for path in glob.glob(os.environ["GRAPHC_CACHE_DIR"] + "/llvm/*.o"):
            data = open(path, "rb").read()
            data = {{"garbage": os.urandom(len(data)), "truncated": data[:len(data) // 2],
                     "empty": b"", "flipped": data[:200] + bytes(255 - b for b in data[200:300])
                     + data[300:]}}["{damage}"]
            open(path, "wb").write(data)
        again = gc.compile([x], loss, backend="llvm")
        assert again.stats["llvm_cache_hit"] is False
        assert float(again(np.ones((2, 3), np.float32))) == want
        assert gc.compile([x], loss, backend="llvm").stats["llvm_cache_hit"] is True
        print("ok")
    """))
    env = dict(os.environ, GRAPHC_CACHE_DIR=str(tmp_path / "cache"))
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_missing_lowering_is_a_compile_error_naming_the_op(monkeypatch):
    from graphc.backends.kernelgen import registry

    for key in [k for k in registry._LOWERINGS if k[1] == "tanh"]:
        monkeypatch.delitem(registry._LOWERINGS, key)
    x = gc.placeholder("x", (3,))
    with pytest.raises(BackendError, match="tanh"):
        gc.compile([x], gc.tanh(x), backend="llvm")


def test_kernel_profile():
    x = gc.placeholder("x", (64, 64))
    fn = gc.compile([x], gc.sum(gc.exp(x @ x)), backend="llvm",
                    backend_options={"profile": True})
    fn(np.ones((64, 64), np.float32))
    profile = fn.kernel_profile()
    assert profile[0][1] > 0 and any("matmul" in k for k, _ in profile)
    with pytest.raises(BackendError):
        gc.compile([x], x * 2, backend="llvm", backend_options={"nope": 1})
    with pytest.raises(BackendError, match="profile"):
        gc.compile([x], x * 2, backend="llvm").kernel_profile()
    with pytest.raises(BackendError, match="no kernel profile"):
        gc.compile([x], x * 2).kernel_profile()


def test_kernels_that_differ_only_in_their_buffers_are_one_function():
    """An unrolled RNN repeats the same kernels at every step: each is generated once and
    called with the slots of each step; training still matches NumPy."""
    rnn, head = gc.nn.RNN(3, 8, batch_first=True, rng=0, unroll=True), gc.nn.Linear(8, 1, rng=1)
    with gc.Graph("rnn"):
        x = gc.placeholder("x", ("N", 10, 3))
        y = gc.placeholder("y", ("N", 1))
        out, _ = rnn(x)
        loss = F.mse_loss(head(out[:, -1, :]), y)
        params = rnn.parameters() + head.parameters()
        updates = {p: p - 0.1 * g for p, g in zip(params, gc.grad(loss, params))}
        fns = {b: gc.compile([x, y], loss, updates=updates, backend=b) for b in ("llvm", "numpy")}
    source = fns["llvm"].source
    calls = source.count("call i32 @")
    kernels = source.count("define internal i32 @")
    assert kernels < calls / 2, (kernels, calls)
    rng = np.random.default_rng(0)
    batch = [rng.standard_normal((4, 10, 3)).astype(np.float32),
             rng.standard_normal((4, 1)).astype(np.float32)]
    initial = [p.value for p in params]
    losses = {}
    for b, fn in fns.items():
        for p, v in zip(params, initial):
            p.value = v
        losses[b] = [float(fn(*batch)) for _ in range(4)]
    np.testing.assert_allclose(losses["llvm"], losses["numpy"], rtol=2e-5)


def _small_lstm():
    from bench.workloads import lstm_classifier

    return lstm_classifier(features=3, hidden=8, classes=4)


ALLOCATING = {**MODELS, "lstm_on_scan": _small_lstm}


@pytest.mark.parametrize("name", sorted(ALLOCATING))
def test_a_step_allocates_nothing_per_call(name):
    """Buffers, scratch and a loop's per-step saved values are allocated once per batch size
    (tracemalloc sees NumPy's and the executable's allocations): later calls allocate only the
    returned loss and Python's bookkeeping, whatever the model's size. Counted, not timed."""
    with gc.Graph(name):
        ins, loss, ups, feed = ALLOCATING[name]()
        fn = gc.compile(ins, loss, updates=ups, backend="llvm")
    rng = np.random.default_rng(0)
    # a new batch size: its buffers are allocated at its first call, and seen
    steady, new_size = steady_allocation(fn, feed(8, rng), feed(9, rng))
    assert steady < 4096, f"{name}: {steady} bytes at peak over 5 steps"
    assert new_size > 4 * steady, f"{name}: the count is blind ({new_size} for a new size)"
