"""The CUDA path without a GPU: PTX for every op accepted by ptxas (sm_80 and sm_90), the
kernels (generated a second time for the host, from the same lowering code) emulated equal to
the NumPy backend, whole training steps emulated, emulation without a CUDA toolkit. Tests that
need a real device are marked `gpu` and skipped without one; they run with cuBLAS and with the
tiled GEMM kernels (``cublas: False``). `./dev gpu-check` runs them on a GPU machine."""

import numpy as np
import pytest

import graphc as gc
from bench.workloads import MODELS
from graphc import sysinfo
from graphc.ops import REGISTRY
from graphc.sysinfo import cuda_devices, libdevice_path, ptxas_path
from tests.helpers import build_case, case_arrays, run_case
from tests.op_cases import CASES

EMULATE = {"emulate": True}
# PTX generation links libdevice where the kernels use transcendentals; ptxas checks the PTX.
# Without the CUDA toolkit only these parts are skipped: the emulation needs neither.
needs_libdevice = pytest.mark.skipif(libdevice_path() is None,
                                     reason="libdevice (CUDA toolkit) not found")
needs_ptxas = pytest.mark.skipif(ptxas_path() is None, reason="ptxas not installed")
needs_gpu = pytest.mark.skipif(not cuda_devices()[1], reason="no CUDA device")
GEMM_OPS = {"matmul", "conv", "conv_transpose", "conv_weight_grad"}  # ops with a Gemm step
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _arrays_and_program(case):
    arrays = case_arrays(case, np.float32)
    graph, phs, out = build_case(case, arrays)
    return graph, phs, out


@needs_ptxas
@needs_libdevice
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ptx_for_every_case_is_accepted_by_ptxas(case, arch):
    graph, phs, out = _arrays_and_program(case)
    with graph:
        fn = gc.compile(phs, out, backend="cuda", backend_options={"arch": arch})
    assert fn.stats["ptxas"] == f"accepted for {arch}"
    assert f".target {arch}" in fn.source
    assert fn.source.count(".entry") == fn.stats["kernels"]  # (0 when everything folded)


# the kernels on the host's emulated grid (always) and on a real device (`gpu` tests, with
# cuBLAS and with the tiled GEMM kernels; ptxas is not run again there: the driver's JIT
# checks the PTX); libdevice's math (device) may differ from the host math (emulation) by a
# few ulp, hence the device's float64 rtol
DEVICE_TOL = {**TOL, np.float64: dict(rtol=1e-7, atol=1e-10)}
ON_DEVICE = [pytest.mark.gpu, needs_gpu]
WHERE = [pytest.param({**EMULATE, "verify": False}, TOL, id="emulated"),
         pytest.param({"verify": False}, DEVICE_TOL, id="device", marks=ON_DEVICE),
         pytest.param({"verify": False, "cublas": False}, DEVICE_TOL, id="device-tiled",
                      marks=ON_DEVICE)]


def _uses_gemm(case) -> bool:
    graph, _, _ = build_case(case, case_arrays(case, np.float32))
    return any(n.op.name in GEMM_OPS for n in graph.nodes)


@pytest.mark.parametrize("options,tol", WHERE)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kernels_match_numpy(case, dtype, options, tol):
    if options.get("cublas") is False and not _uses_gemm(case):
        pytest.skip("no GEMM: the same kernels as the cuBLAS run")
    want, _, _ = run_case(case, "numpy", dtype)
    got, _, _ = run_case(case, "cuda", dtype, backend_options=options)
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, **tol[dtype])
    else:
        np.testing.assert_array_equal(got, want)


GRAD_CASES = [c for c in CASES if c.grad]


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.name for c in GRAD_CASES])
def test_emulated_gradients_match_numpy(case):
    arrays = case_arrays(case, np.float64, seed=4)
    results = {}
    for backend, options in (("numpy", None), ("cuda", {**EMULATE, "verify": False})):
        graph, phs, out = build_case(case, arrays)
        with graph:
            weights = np.random.default_rng(1).uniform(0.5, 1.5, np.shape(
                gc.compile(phs, out)(*arrays)))
            cost = gc.sum(out * gc.constant(weights))
            grads = gc.grad(cost, phs)
            frozen = {gc.Tensor(n, graph): gc.Tensor(n, graph) for n in graph.parameters}
            fn = gc.compile(phs, [cost] + grads, updates=frozen, backend=backend,
                            backend_options=options)
        results[backend] = fn(*arrays)
    for a, b in zip(results["cuda"], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


TRAIN_STEPS = 5
# Tolerances of a whole training run (float32, TRAIN_STEPS steps, batch 8) against the NumPy
# backend. Emulated: the PTX kernels' own code on the host, so only summation order differs from
# NumPy. A real device adds libdevice's math (a few ulp per call), hence the looser bounds.
TRAIN_TOL = {"emulated": {"losses": dict(rtol=2e-5), "parameters": dict(rtol=1e-4, atol=1e-6)},
             "device": {"losses": dict(rtol=1e-4), "parameters": dict(rtol=1e-4, atol=1e-5)}}


def _train(name, backend, options=None):
    """TRAIN_STEPS steps of bench model `name`: (losses, [(parameter, initial, final)])."""
    gc.manual_seed(0)
    with gc.Graph(name):
        ins, loss, ups, feed = MODELS[name]()
        params = list(ups)
        initial = [np.array(p.value, copy=True) for p in params]
        fn = gc.compile(ins, loss, updates=ups, backend=backend, backend_options=options)
    rng = np.random.default_rng(0)
    losses = [float(fn(*feed(8, rng))) for _ in range(TRAIN_STEPS)]
    return losses, [(p.name, a, np.array(p.value, copy=True)) for p, a in zip(params, initial)]


def assert_training_matches_numpy(name, options, tol, train=_train):
    """The losses of every step and every updated parameter after the last step agree with the
    NumPy backend within `tol`; and training moved every parameter by more than `tol` (else a
    backend that never applied its updates would pass)."""
    want_losses, want = train(name, "numpy")
    got_losses, got = train(name, "cuda", options)
    np.testing.assert_allclose(got_losses, want_losses, **tol["losses"],
                               err_msg=f"{name}: losses of {TRAIN_STEPS} steps")
    assert [p for p, _, _ in got] == [p for p, _, _ in want]
    for (param, start, final), (_, _, reference) in zip(got, want):
        assert final.shape == reference.shape and final.dtype == reference.dtype, param
        np.testing.assert_allclose(final, reference, **tol["parameters"],
                                   err_msg=f"{name}: {param} after {TRAIN_STEPS} steps")
        assert not np.allclose(start, reference, **tol["parameters"]), (
            f"{name}: {param} moved less than the tolerance in training: the test is blind")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_emulated_training_matches_numpy(name):
    assert_training_matches_numpy(name, EMULATE, TRAIN_TOL["emulated"])


def test_the_training_comparison_catches_a_wrong_parameter():
    """The comparison fails when a final parameter is off by 0.1% though the losses agree, and
    when the updates were never applied."""
    def nudged(name, backend, options=None):
        losses, params = _train(name, backend, options)
        if backend == "cuda":
            param, start, final = params[-1]
            params[-1] = (param, start, final * (1 + 1e-3))
        return losses, params

    with pytest.raises(AssertionError, match="after 5 steps"):
        assert_training_matches_numpy("mlp", EMULATE, TRAIN_TOL["emulated"], train=nudged)

    def frozen(name, backend, options=None):
        losses, params = _train(name, backend, options)
        return losses, [(param, start, start) for param, start, _ in params]

    with pytest.raises(AssertionError, match="the test is blind"):
        assert_training_matches_numpy("mlp", EMULATE, TRAIN_TOL["emulated"], train=frozen)


def test_every_op_has_a_gpu_lowering():
    """(The backend's own coverage: its lowerings register when it is imported, so the test
    passes run alone too.)"""
    from graphc.backends.cuda import BACKEND

    missing = sorted(set(REGISTRY) - set(BACKEND.lowerings) - {"placeholder", "parameter",
                                                               "constant"})
    assert not missing, f"ops without a GPU lowering: {missing}"


@needs_libdevice
@pytest.mark.skipif(bool(cuda_devices()[1]), reason="a CUDA device is present")
def test_without_a_device_compiling_works_and_calling_explains():
    x = gc.placeholder("x", (4,))
    fn = gc.compile([x], gc.exp(x) * 2.0, backend="cuda")
    assert ".entry" in fn.source  # the PTX is there to read
    with pytest.raises(gc.BackendError, match="CUDA"):
        fn(np.ones(4, np.float32))


def test_emulation_reports_bad_ids_without_updating():
    ids = gc.placeholder("ids", (3,), "int64")
    E = gc.parameter("E", np.ones((5, 2), np.float32))
    loss = gc.sum(gc.nn.functional.embedding(ids, E))
    step = gc.compile([ids], loss, updates={E: E - gc.grad(loss, E)}, backend="cuda",
                      backend_options=EMULATE)
    with pytest.raises(gc.BackendError, match=r"take: id 9 is outside \[0, 5\)"):
        step(np.array([0, 9, 1]))
    np.testing.assert_array_equal(E.value, np.ones((5, 2)))
    step(np.array([0, 0, 1]))
    np.testing.assert_array_equal(E.value[:, 0], [-1, 0, 1, 1, 1])


@pytest.mark.gpu
@needs_gpu
def test_real_device_keeps_parameters_resident_and_fails_atomically():
    ids = gc.placeholder("ids", (3,), "int64")
    E = gc.parameter("E", np.ones((5, 2), np.float32))
    loss = gc.sum(gc.nn.functional.embedding(ids, E))
    step = gc.compile([ids], loss, updates={E: E - gc.grad(loss, E)}, backend="cuda")
    with pytest.raises(gc.BackendError, match=r"take: id 9 is outside \[0, 5\)"):
        step(np.array([0, 9, 1]))
    np.testing.assert_array_equal(E.value, np.ones((5, 2)))
    for _ in range(2):
        step(np.array([0, 0, 1]))
    np.testing.assert_array_equal(E.value[:, 0], [-3, -1, 1, 1, 1])  # read back from the device


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("cublas", [True, False], ids=["cublas", "tiled"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_device_training_matches_numpy(name, cublas):
    """The same comparison as the emulated one: losses and final parameters (read back from the
    device), with the device's tolerances."""
    assert_training_matches_numpy(name, {"cublas": cublas}, TRAIN_TOL["device"])


def _train_lstm(name, backend, options=None):
    """TRAIN_STEPS steps of a 2-layer gc.nn.LSTM (two scans, symbolic T) with per-sequence
    `lengths`, read out from the last state; each step a new sequence length."""
    gc.manual_seed(0)
    with gc.Graph(name):
        x = gc.placeholder("x", ("T", "N", 3))
        lengths = gc.placeholder("lengths", ("N",), "int64")
        y = gc.placeholder("y", ("N",), "int64")
        lstm, head = gc.nn.LSTM(3, 8, num_layers=2), gc.nn.Linear(8, 4)
        out, (h_n, _) = lstm(x, lengths=lengths)
        loss = gc.nn.functional.cross_entropy(head(h_n[-1]), y) + 0.1 * gc.mean(out * out)
        params = [*lstm.parameters(), *head.parameters()]
        initial = [np.array(p.value, copy=True) for p in params]
        ups = {p: p - 0.5 * g for p, g in zip(params, gc.grad(loss, params))}
        fn = gc.compile([x, lengths, y], loss, updates=ups, backend=backend,
                        backend_options=options)
    rng = np.random.default_rng(0)
    losses = []
    for T in range(4, 4 + TRAIN_STEPS):
        losses.append(float(fn(rng.normal(size=(T, 8, 3)).astype(np.float32),
                               rng.integers(1, T + 1, size=8), rng.integers(0, 4, size=8))))
    return losses, [(p.name, a, np.array(p.value, copy=True)) for p, a in zip(params, initial)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("cublas", [True, False], ids=["cublas", "tiled"])
def test_real_device_lstm_training_with_lengths_matches_numpy(cublas):
    """The recurrent layer's loops (forward scans, the gradient's reverse scans) launched on
    the device: one compiled step for five sequence lengths."""
    assert_training_matches_numpy("lstm", {"cublas": cublas}, TRAIN_TOL["device"],
                                  train=_train_lstm)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("how", ["close", "garbage collection"])
def test_real_device_memory_is_given_back(how):
    """A 64 MiB parameter and buffers for three batch sizes: close() (or the garbage collector)
    gives all of it back, and the parameter keeps the last step's value. (The tiled GEMM: a
    cuBLAS workspace is cuBLAS's, kept for the process.)"""
    import gc as pygc

    from graphc.backends.cuda.runtime import driver

    def build(size):
        x = gc.placeholder("x", ("N", size))
        W = gc.parameter("W", np.zeros((size, size), np.float32))
        loss = gc.mean(gc.square(x @ W - 1.0))
        return W, gc.compile([x], loss, updates={W: W - 0.1 * gc.grad(loss, W)},
                             backend="cuda", backend_options={"verify": False, "cublas": False})

    drv = driver()
    _, warm = build(64)  # the same kernels: the driver's lazy reservations (local memory for
    warm(np.ones((8, 64), np.float32))  # the kernels) happen here, not below
    warm.close()
    free_before = drv.memory()[0]
    W, step = build(4096)
    for n in (256, 512, 1024):
        step(np.ones((n, 4096), np.float32))
    held = free_before - drv.memory()[0]
    assert held >= 64 * 2**20 + (256 + 512 + 1024) * 4096 * 4
    after_three = np.array(W.value)  # (pulled from the device)
    step(np.ones((256, 4096), np.float32))
    if how == "close":
        step.close()
    else:
        del step
        pygc.collect()
    assert drv.memory()[0] >= free_before - 16 * 2**20, "device memory was not given back"
    assert not W.node.attrs["storage"].devices
    assert not np.array_equal(W.value, after_three)  # the last update reached the host


def test_emulation_needs_no_cuda_toolkit(monkeypatch, tmp_path):
    """With CUDA_HOME naming an empty folder and no ptxas on PATH, the emulation runs (and
    agrees with NumPy, transcendentals and GEMMs included); only the PTX is left out, and
    Function.source and stats say so. Compiling for a device needs libdevice: that is an
    error naming it."""
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert sysinfo.ptxas_path() is None and sysinfo.libdevice_path() is None
    x = gc.placeholder("x", ("N", 3), "float64")
    W = gc.parameter("W", np.linspace(-1, 1, 6).reshape(3, 2))
    out = gc.tanh(x @ W) + gc.log(gc.exp(x).sum(axis=1, keepdims=True)) + x[:, :2] ** 1.5
    feed = np.random.default_rng(0).uniform(0.1, 2.0, (5, 3))
    want = gc.compile([x], out)(feed)
    fn = gc.compile([x], out, backend="cuda", backend_options=EMULATE)
    np.testing.assert_allclose(fn(feed), want, rtol=1e-9)
    assert fn.stats["ptx"].startswith("not generated") and "libdevice" in fn.stats["ptx"]
    assert fn.stats["ptxas"] == "skipped (no PTX)"
    assert fn.source.startswith("// The PTX was not generated")
    with pytest.raises(gc.BackendError, match="libdevice"):
        gc.compile([x], out, backend="cuda")
    # without transcendentals the PTX needs no libdevice: generated, just not checked
    plain = gc.compile([x], x @ W, backend="cuda", backend_options=EMULATE)
    assert ".entry" in plain.source and plain.stats["ptxas"] == "not found"
    np.testing.assert_allclose(plain(feed), feed @ W.value, rtol=1e-12)


@pytest.mark.parametrize("arch", ["sm_60", "sm_1000", "banana", 80])
def test_an_unknown_arch_is_refused_up_front(arch):
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.BackendError, match="sm_70 or newer"):
        gc.compile([x], gc.exp(x), backend="cuda", backend_options={"arch": arch})


def test_an_architecture_the_toolkit_dropped_is_named_as_such(monkeypatch):
    """ptxas 13 refuses sm_70 as an unknown -arch value: that is the toolkit, not the
    generated code, and the message says so."""
    import subprocess

    from graphc.backends.cuda import target

    def fake_ptxas(*args, **kwargs):
        return subprocess.CompletedProcess(args, 255, "", "ptxas fatal   : Value 'sm_70' is not "
                                           "defined for option 'gpu-name'\n")

    monkeypatch.setattr(target, "ptxas_path", lambda: "/opt/cuda/bin/ptxas")
    monkeypatch.setattr(target.subprocess, "run", fake_ptxas)
    with pytest.raises(gc.BackendError, match="does not know the architecture sm_70"):
        target.verify(".version 8.0\n", "sm_70")
