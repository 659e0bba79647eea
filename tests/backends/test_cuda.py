"""The CUDA path without a GPU: PTX for every op accepted by ptxas (sm_80 and sm_90), the
same kernels emulated on the host equal to the NumPy backend, whole training steps emulated.
Tests that need a real device are marked `gpu` and skipped without one."""

import numpy as np
import pytest

import graphc as gc
from bench.workloads import MODELS
from graphc.ops import REGISTRY
from graphc.sysinfo import cuda_devices, ptxas_path
from tests.helpers import build_case, case_arrays, run_case
from tests.op_cases import CASES

EMULATE = {"emulate": True}
needs_ptxas = pytest.mark.skipif(ptxas_path() is None, reason="ptxas not installed")
needs_gpu = pytest.mark.skipif(not cuda_devices()[1], reason="no CUDA device")
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}


def _arrays_and_program(case):
    arrays = case_arrays(case, np.float32)
    graph, phs, out = build_case(case, arrays)
    return graph, phs, out


@needs_ptxas
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ptx_for_every_case_is_accepted_by_ptxas(case, arch):
    graph, phs, out = _arrays_and_program(case)
    with graph:
        fn = gc.compile(phs, out, backend="cuda", backend_options={"arch": arch})
    assert fn.stats["ptxas"] == f"accepted for {arch}"
    assert f".target {arch}" in fn.source
    assert fn.source.count(".entry") == fn.stats["kernels"]  # (0 when everything folded)


# the same kernels on the host's emulated grid (always) and on a real device (`gpu` tests);
# libdevice's math may differ from the host's by a few ulp, hence the device's float64 rtol
WHERE = [pytest.param({**EMULATE, "verify": False}, TOL, id="emulated"),
         pytest.param(None, {**TOL, np.float64: dict(rtol=1e-7, atol=1e-10)}, id="device",
                      marks=[pytest.mark.gpu, needs_gpu])]


@pytest.mark.parametrize("options,tol", WHERE)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_kernels_match_numpy(case, dtype, options, tol):
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


@pytest.mark.parametrize("name", sorted(MODELS))
def test_emulated_training_matches_numpy(name):
    trajectories = []
    for backend, options in (("numpy", None), ("cuda", EMULATE)):
        gc.manual_seed(0)
        with gc.Graph(name):
            ins, loss, ups, feed = MODELS[name]()
            fn = gc.compile(ins, loss, updates=ups, backend=backend, backend_options=options)
        rng = np.random.default_rng(0)
        trajectories.append(([float(fn(*feed(8, rng))) for _ in range(5)],
                             [p.value for p in ups]))
    (a_loss, a_params), (b_loss, b_params) = trajectories
    np.testing.assert_allclose(b_loss, a_loss, rtol=2e-5)
    for x, y in zip(b_params, a_params):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)


def test_every_op_has_a_gpu_lowering():
    from graphc.backends.cuda import GPU_LOWERINGS

    missing = sorted(set(REGISTRY) - set(GPU_LOWERINGS) - {"placeholder", "parameter",
                                                          "constant"})
    assert not missing, f"ops without a GPU lowering: {missing}"


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
    with pytest.raises(gc.BackendError, match="out of range"):
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
    with pytest.raises(gc.BackendError, match="out of range"):
        step(np.array([0, 9, 1]))
    np.testing.assert_array_equal(E.value, np.ones((5, 2)))
    for _ in range(2):
        step(np.array([0, 0, 1]))
    np.testing.assert_array_equal(E.value[:, 0], [-3, -1, 1, 1, 1])  # read back from the device


@pytest.mark.gpu
@needs_gpu
def test_real_device_training_step_matches_numpy():
    trajectories = []
    for backend in ("numpy", "cuda"):
        gc.manual_seed(0)
        with gc.Graph("mlp"):
            ins, loss, ups, feed = MODELS["mlp"]()
            fn = gc.compile(ins, loss, updates=ups, backend=backend)
        rng = np.random.default_rng(0)
        trajectories.append([float(fn(*feed(8, rng))) for _ in range(5)])
    np.testing.assert_allclose(trajectories[1], trajectories[0], rtol=1e-4)


@pytest.mark.parametrize("arch", ["sm_60", "sm_1000", "banana", 80])
def test_an_unknown_arch_is_refused_up_front(arch):
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.BackendError, match="sm_70 or newer"):
        gc.compile([x], gc.exp(x), backend="cuda", backend_options={"arch": arch})
