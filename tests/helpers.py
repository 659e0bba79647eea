"""Shared test helpers: run an op case on a backend."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.sysinfo import cuda_devices


def case_arrays(case, dtype=np.float64, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.asarray(a).astype(dtype) if np.asarray(a).dtype.kind == "f" else np.asarray(a)
            for a in case.inputs(rng)]


def build_case(case, arrays):
    """(graph, placeholders, output) for a case fed with `arrays`."""
    graph = gc.Graph(case.name)
    with graph:
        shapes = case.shapes or [a.shape for a in arrays]
        phs = [gc.placeholder(f"x{i}", s, a.dtype) for i, (s, a) in enumerate(zip(shapes, arrays))]
        out = case.build(*phs)
    return graph, phs, out


def run_case(case, backend: str = "numpy", dtype=np.float64, optimize: bool = True, seed: int = 0,
             backend_options=None):
    arrays = case_arrays(case, dtype, seed)
    graph, phs, out = build_case(case, arrays)
    with graph:
        fn = gc.compile(phs, out, backend=backend, optimize=optimize,
                        backend_options=backend_options)
    return fn(*arrays), arrays, fn


def scan_nodes(graph) -> list:
    """The scan nodes of a program, outermost first, bodies included (depth first)."""
    out = []
    for n in graph.nodes:
        if n.op.name == "scan":
            out.append(n)
            out += scan_nodes(n.attrs["body"])
    return out


# the `gpu` tests: run on a real CUDA device (./dev gpu-check), skipped without one
ON_DEVICE = [pytest.mark.gpu,
             pytest.mark.skipif(not cuda_devices()[1], reason="no CUDA device")]
def _has_avx512() -> bool:
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    features = llvm.get_host_cpu_features()
    return bool(features.get("avx512f", False) and features.get("avx512vl", False))


# the tests of the llvm backend's 64-byte vectors (the convolution tiles, the column panels)
NEEDS_AVX512 = pytest.mark.skipif(not _has_avx512(), reason="64-byte vectors need AVX-512")

# the backends a loop test runs on: "cuda" is the emulation (the kernels and the launch plan
# run on the host); "cuda-device" the same compilation on a real device
LOOP_BACKENDS = ["numpy", "llvm", "cuda", pytest.param("cuda-device", marks=ON_DEVICE)]


def compile_on(*args, backend: str, **kwargs):
    """gc.compile on one of LOOP_BACKENDS."""
    if backend == "cuda":
        kwargs["backend_options"] = {"emulate": True}
    elif backend == "cuda-device":
        backend, kwargs["backend_options"] = "cuda", {"verify": False}
    return gc.compile(*args, backend=backend, **kwargs)



def assert_conv_non_finite_like_numpy(data: np.ndarray, seed: np.ndarray, out_channels: int,
                                      taken) -> None:
    """A padded 3x3 float64 convolution of `data` (NaN and infinities in it) with both
    gradients, of a cost weighted by `seed` (infinities in it too), on the llvm backend:
    each output NaN, +inf, -inf or finite exactly where the NumPy backend's is, the finite
    values to rounding (the sums run in another order). `taken(y, gx, gw)` asserts which
    schedule the llvm backend's nodes take."""
    results = {}
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", ("N", *data.shape[1:]), "float64")
            w = gc.parameter("w", np.random.default_rng(4).normal(
                size=(out_channels, data.shape[1], 3, 3)))
            y = gc.nn.functional.conv2d(x, w, padding=1)
            gx, gw = gc.grad((y * gc.constant(seed)).sum(), [x, w])
            taken(y.node, gx.node, gw.node)
            options = {"cache": False} if backend == "llvm" else None
            fn = gc.compile([x], [y, gx, gw], backend=backend, backend_options=options)
        with np.errstate(invalid="ignore", over="ignore"):
            results[backend] = fn(data)
    for got, want in zip(results["llvm"], results["numpy"]):
        assert (np.isnan(got) == np.isnan(want)).all()
        assert (np.isposinf(got) == np.isposinf(want)).all()
        assert (np.isneginf(got) == np.isneginf(want)).all()
        finite = np.isfinite(want)
        assert finite.any() and not finite.all()
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12)


def same_bits_on_every_thread_count(fn, data, counts=(2, 3, 8)) -> list:
    """The outputs of `fn(data)` on one thread, after checking that every count of the llvm
    backend's threads in `counts` gives the same bits."""
    from graphc.backends.llvm import threads

    previous = threads.set_threads(1)
    try:
        serial = [np.array(o) for o in fn(data)]
        for count in counts:
            threads.set_threads(count)
            for a, b in zip(fn(data), serial):
                assert a.tobytes() == b.tobytes()
    finally:
        threads.set_threads(previous)
    return serial


def tanh_sgd_step(rows: int, hidden: int, dtype, rng, scale: float, batch: int,
                  hostile_values: list, fraction: float):
    """x (N, rows) @ W -> tanh -> sum, with W's SGD update at rate 0.05 (the update the
    native backends fold into the weight gradient's product), a batch of `batch` rows, and a
    copy of it with `fraction` of its values replaced by one of `hostile_values`: (x, W,
    loss, updates, batch, hostile batch) for `folded_and_separate_updates`."""
    x = gc.placeholder("x", ("N", rows), dtype)
    W = gc.parameter("W", (rng.normal(size=(rows, hidden)) * scale).astype(dtype))
    loss = gc.sum(gc.tanh(x @ W))
    (g,) = gc.grad(loss, [W])
    xs = rng.normal(size=(batch, rows)).astype(dtype)
    hostile = xs.copy()
    hostile[rng.random(xs.shape) < fraction] = rng.choice(np.array(hostile_values, dtype), 1)
    return x, W, loss, {W: W - 0.05 * g}, xs, hostile


def folded_and_separate_updates(x, W, loss, updates, xs, hostile, unfold, source_taken):
    """W's values after three steps on `xs` and one more on `hostile` inputs, for the step
    compiled three ways: "folded" (the llvm backend's SGD product into W), "separate" (the
    same with `unfold`, a context manager, in force: the product, then the update's own
    kernel) and "numpy"; each value also as ``name + ".hostile"``. `source_taken(fn)` says
    whether the llvm step's code has the folded kernel, checked against its stats."""
    from contextlib import nullcontext

    start = W.value
    values = {}
    for name in ("folded", "separate", "numpy"):
        W.value = start
        with unfold() if name == "separate" else nullcontext():
            fn = gc.compile([x], loss, updates=updates,
                            backend="numpy" if name == "numpy" else "llvm",
                            backend_options=None if name == "numpy" else {"cache": False})
        if name != "numpy":
            assert fn.stats["llvm_products_into_updates"] == (name == "folded")
            assert source_taken(fn) == (name == "folded")
        for _ in range(3):
            fn(xs)
        values[name] = W.value
        with np.errstate(all="ignore"):
            fn(hostile)
        values[name + ".hostile"] = W.value
    return values


def steady_allocation(fn, args, other_args, calls: int = 5) -> tuple[int, int]:
    """What a call of `fn` allocates once warm: the peak bytes tracemalloc sees (NumPy's and
    a native executable's allocations) over `calls` calls of ``fn(*args)`` after two
    warm-up calls; and, as a check that the count is not blind, the peak of one call with
    `other_args`, a new batch size whose buffers are allocated then."""
    import tracemalloc

    fn(*args)
    fn(*args)
    tracemalloc.start()
    try:
        for _ in range(calls):
            fn(*args)
        steady = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        fn(*other_args)
        return steady, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
