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
@pytest.mark.parametrize("name", sorted(MODELS))
def test_real_device_training_matches_numpy(name):
    """The same comparison as the emulated one: losses and final parameters (read back from the
    device), with the device's tolerances."""
    assert_training_matches_numpy(name, None, TRAIN_TOL["device"])


@pytest.mark.parametrize("arch", ["sm_60", "sm_1000", "banana", 80])
def test_an_unknown_arch_is_refused_up_front(arch):
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.BackendError, match="sm_70 or newer"):
        gc.compile([x], gc.exp(x), backend="cuda", backend_options={"arch": arch})
