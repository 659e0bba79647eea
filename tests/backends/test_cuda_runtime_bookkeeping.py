"""The CUDA device executable's bookkeeping, without a GPU: a fake of the runtime's driver
interface (backends/cuda/runtime.py) records every allocation, copy, launch and module, so
these tests check that close() and the garbage collector give back everything a compiled
function took, that a parameter's device copy shared by several functions is freed by the
last one (after its newest value is pulled to the host), that per-batch-size buffers are
bounded, and that ``cublas: False`` forces the tiled GEMM kernels. The kernels themselves do
not run (their results are checked by the emulation and by the `gpu` tests)."""

import ctypes
import gc as pygc
import weakref

import numpy as np
import pytest

import graphc as gc
from graphc.backends.cuda import device as cuda_device
from graphc.backends.cuda import runtime

F = gc.nn.functional
OPTIONS = {"verify": False}


class FakeDriver:
    """Device memory as host bytearrays keyed by fake pointers; records what happens."""

    def __init__(self, fail_alloc_at: int | None = None) -> None:
        self.memory: dict[int, bytearray] = {}
        self.modules: set[int] = set()
        self.launches: list[str] = []
        self.allocs = 0
        self.frees = 0
        self.fail_alloc_at = fail_alloc_at  # the n-th alloc (1-based) fails, as out of memory
        self._next = 0x10000

    def load_module(self, ptx: str) -> int:
        assert ".entry" in ptx or ".version" in ptx, "not PTX"
        handle = self._next
        self._next += 16
        self.modules.add(handle)
        return handle

    def unload_module(self, module) -> None:
        self.modules.remove(module)  # KeyError: unloaded twice or never loaded

    def function(self, module, name: str):
        assert module in self.modules
        return (module, name)

    def alloc(self, nbytes: int) -> int:
        self.allocs += 1
        if self.allocs == self.fail_alloc_at:
            raise gc.BackendError("CUDA cuMemAlloc failed: CUDA_ERROR_OUT_OF_MEMORY")
        ptr = self._next
        self._next += (max(nbytes, 1) + 255) // 256 * 256
        self.memory[ptr] = bytearray(max(nbytes, 1))
        return ptr

    def free(self, ptr: int) -> None:
        assert ptr in self.memory, f"free of {ptr:#x}: not allocated (or freed twice)"
        del self.memory[ptr]
        self.frees += 1

    def _buffer(self, ptr: int, nbytes: int) -> int:
        assert ptr in self.memory, f"{ptr:#x} is not a live allocation"
        assert nbytes <= len(self.memory[ptr]), "copy past the end of an allocation"
        return ctypes.addressof((ctypes.c_char * len(self.memory[ptr])).from_buffer(
            self.memory[ptr]))

    def to_device(self, dst: int, host_ptr: int, nbytes: int) -> None:
        ctypes.memmove(self._buffer(dst, nbytes), host_ptr, nbytes)

    def to_host(self, host_ptr: int, src: int, nbytes: int) -> None:
        ctypes.memmove(host_ptr, self._buffer(src, nbytes), nbytes)

    def zero(self, dst: int, nbytes: int) -> None:
        ctypes.memset(self._buffer(dst, nbytes), 0, nbytes)

    def launch(self, fn, name, grid, block, args) -> None:
        assert fn[0] in self.modules and fn[1] == name
        for ptr in args:
            assert ptr in self.memory, "a launch with a freed table"
        self.launches.append(name)

    def synchronize(self) -> None:
        pass

    # for the tests
    def write(self, ptr: int, array: np.ndarray) -> None:
        self.to_device(ptr, np.ascontiguousarray(array).ctypes.data, array.nbytes)

    def live(self) -> int:
        return len(self.memory)


class FakeCublas:
    def __init__(self) -> None:
        self.gemms = 0

    def gemm(self, *args) -> None:
        self.gemms += 1


@pytest.fixture
def fake(monkeypatch):
    drv = FakeDriver()
    blas = FakeCublas()
    monkeypatch.setattr(runtime, "driver", lambda: drv)
    monkeypatch.setattr(runtime, "cublas", lambda: blas)
    drv.blas = blas
    return drv


def _mlp(seed=0):
    """x -> linear -> relu -> linear -> mse: matmuls, constants, parameters (no libdevice)."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", 4))
    t = gc.placeholder("t", ("N", 2))
    W1 = gc.parameter("W1", rng.normal(size=(4, 8)).astype(np.float32))
    b1 = gc.parameter("b1", np.zeros(8, np.float32))
    W2 = gc.parameter("W2", rng.normal(size=(8, 2)).astype(np.float32))
    loss = F.mse_loss(F.linear(gc.relu(F.linear(x, W1, b1)), W2), t)
    params = [W1, b1, W2]
    return [x, t], loss, params


def _step(options=None):
    ins, loss, params = _mlp()
    grads = gc.grad(loss, params)
    updates = {p: p - 0.1 * g for p, g in zip(params, grads)}
    fn = gc.compile(ins, loss, updates=updates, backend="cuda",
                    backend_options={**OPTIONS, **(options or {})})
    return fn, ins, loss, params


def _feed(n):
    rng = np.random.default_rng(n)
    return rng.normal(size=(n, 4)).astype(np.float32), rng.normal(size=(n, 2)).astype(np.float32)


def test_close_frees_every_allocation_and_unloads_the_module(fake):
    fn, _, _, params = _step()
    assert type(fn._exe).__name__ == "DeviceExecutable"
    assert fake.modules and fake.live() == len(params)  # the parameters' device copies
    for n in (2, 3, 2, 5):
        fn(*_feed(n))
    assert fake.live() > len(params) and fake.launches
    fn.close()
    assert fake.live() == 0 and fake.allocs == fake.frees
    assert not fake.modules
    assert all(not _storage(p).devices for p in params)
    with pytest.raises(gc.BackendError, match="this function was closed"):
        fn(*_feed(2))
    with pytest.raises(gc.BackendError, match="this function was closed"):
        fn._exe.run(list(_feed(2)), None, (2,))  # the executable refuses too
    fn.close()  # a second close does nothing
    assert fake.live() == 0


def _storage(p):
    return p.node.attrs["storage"]


def test_parameter_copy_is_shared_and_freed_by_the_last_user_after_a_pull(fake):
    ins, loss, params = _mlp()
    grads = gc.grad(loss, params)
    step = gc.compile(ins, loss, updates={p: p - 0.1 * g for p, g in zip(params, grads)},
                      backend="cuda", backend_options=OPTIONS)
    evaluate = gc.compile(ins, loss, backend="cuda", backend_options=OPTIONS)
    W1 = params[0]
    storage = _storage(W1)
    (copy,) = storage.devices
    assert copy.users == 2 and fake.live() == len(params)  # one copy per parameter, shared
    step(*_feed(4))
    assert copy.newer  # the step updated the device copy: the host's is stale
    trained = np.arange(32, dtype=np.float32).reshape(4, 8)
    fake.write(copy.ptr, trained)  # what the update kernel would have written
    step.close()
    assert storage.devices == [copy] and copy.users == 1  # evaluate still uses it
    assert copy.ptr in fake.memory
    evaluate.close()
    assert storage.devices == [] and fake.live() == 0 and not fake.modules
    np.testing.assert_array_equal(storage._value, trained)  # pulled before it was freed
    np.testing.assert_array_equal(W1.value, trained)


def test_a_parameter_written_on_the_host_reaches_the_device_copy(fake):
    fn, _, _, params = _step()
    W2 = params[2]
    (copy,) = _storage(W2).devices
    W2.value = np.full((8, 2), 3.0, np.float32)
    back = np.zeros((8, 2), np.float32)
    fake.to_host(back.ctypes.data, copy.ptr, back.nbytes)
    np.testing.assert_array_equal(back, 3.0)
    fn.close()
    np.testing.assert_array_equal(W2.value, 3.0)


def test_bindings_are_bounded_and_evicted_ones_are_freed_and_rebuilt(fake):
    fn, _, _, params = _step()
    fn(*_feed(1))
    per_binding = fake.live() - len(params)
    sizes = range(1, cuda_device.MAX_BINDINGS + 5)
    for n in sizes:
        fn(*_feed(n))
    res = fn._exe._resources
    assert len(res.bindings) == cuda_device.MAX_BINDINGS
    assert fake.live() == len(params) + cuda_device.MAX_BINDINGS * per_binding
    assert list(res.bindings)[-1] == (sizes[-1],)
    fn(*_feed(1))  # evicted long ago: rebuilt from the sizes seen at its first call
    assert list(res.bindings)[-1] == (1,)
    assert fake.live() == len(params) + cuda_device.MAX_BINDINGS * per_binding
    fn.close()
    assert fake.live() == 0 and fake.allocs == fake.frees


def test_garbage_collection_frees_device_memory_without_keeping_the_function_alive(fake):
    fn, _, _, params = _step()
    fn(*_feed(3))
    storage = _storage(params[0])
    (copy,) = storage.devices
    trained = np.ones((4, 8), np.float32) * 7
    fake.write(copy.ptr, trained)
    exe = weakref.ref(fn._exe)
    del fn
    pygc.collect()
    assert exe() is None  # the finalizer held no reference to the executable
    assert fake.live() == 0 and not fake.modules and storage.devices == []
    np.testing.assert_array_equal(params[0].value, trained)  # the last value was kept


@pytest.mark.parametrize("fail_at", [1, 2, 3])  # the three parameter copies
def test_an_allocation_failure_while_compiling_leaks_nothing(monkeypatch, fail_at):
    drv = FakeDriver(fail_alloc_at=fail_at)
    monkeypatch.setattr(runtime, "driver", lambda: drv)
    monkeypatch.setattr(runtime, "cublas", lambda: None)
    fn, _, _, params = _step()
    with pytest.raises(gc.BackendError, match="OUT_OF_MEMORY"):
        fn(*_feed(2))  # (a function that cannot run says why)
    assert drv.live() == 0 and not drv.modules
    assert all(not _storage(p).devices for p in params)


def test_an_allocation_failure_in_a_new_binding_frees_that_binding(monkeypatch):
    drv = FakeDriver()
    monkeypatch.setattr(runtime, "driver", lambda: drv)
    monkeypatch.setattr(runtime, "cublas", lambda: None)
    fn, _, _, params = _step()
    fn(*_feed(2))
    held = drv.live()
    drv.fail_alloc_at = drv.allocs + 3  # the third buffer of the next binding
    with pytest.raises(gc.BackendError, match="OUT_OF_MEMORY"):
        fn(*_feed(5))
    assert drv.live() == held  # the partial binding was given back
    fn(*_feed(5))  # and it can be built once memory is there
    fn.close()
    assert drv.live() == 0


@pytest.mark.parametrize("use_cublas", [True, False])
def test_cublas_false_forces_the_tiled_gemm_kernels(fake, use_cublas):
    fn, _, _, _ = _step({"cublas": use_cublas})
    assert fn.stats["gemm_launches"] > 0
    fn(*_feed(3))
    gemm_kernels = [k for k in fake.launches if k.endswith("_gemm")]
    if use_cublas:
        assert fake.blas.gemms > 0 and fn.stats["gemm"] == "cuBLAS"
    else:
        assert fake.blas.gemms == 0 and fn.stats["gemm"] == "tiled kernels"
        assert len(gemm_kernels) == fn.stats["gemm_launches"]
    fn.close()


@pytest.mark.parametrize("options,message", [
    ({"cublass": False}, "unknown cuda backend options"),
    ({"cublas": "no"}, "'cublas' must be True or False"),
    ({"emulate": 1}, "'emulate' must be True or False"),
])
def test_backend_options_are_checked(options, message):
    x = gc.placeholder("x", (3,))
    with pytest.raises(gc.BackendError, match=message):
        gc.compile([x], x * 2.0, backend="cuda", backend_options=options)


def test_closing_the_emulated_executable_drops_buffers_and_machine_code():
    fn, ins, loss, params = _step({"emulate": True})
    reference = gc.compile(ins, loss)  # the loss on the NumPy backend, same parameters
    for n in range(1, cuda_device.MAX_BINDINGS + 4):
        fn(*_feed(n))
    exe = fn._exe
    assert len(exe._bindings) == cuda_device.MAX_BINDINGS  # bounded here too
    want = reference(*_feed(1))
    np.testing.assert_allclose(fn(*_feed(1)), want, rtol=1e-5)  # an evicted binding, rebuilt
    fn.close()
    assert exe.engine is None and not exe._bindings and not exe._drivers
    with pytest.raises(gc.BackendError, match="this function was closed"):
        fn(*_feed(1))


@pytest.mark.parametrize("hoist", [False, True])
def test_a_loop_repeats_its_launches_on_the_device(fake, hoist):
    """A scan's launch plan on the device: `enter` once, then T times `pre`, the body's
    launches and `post` (T from the binding: one compiled function for every length). Without
    hoisting, a body GEMM reading an x slice (whose pointer `pre` writes into the device table)
    launches the tiled kernel; one on whole buffers may call cuBLAS. With hoisting, the input
    projection xt @ W is one cuBLAS product over all steps before the loop."""
    from graphc.passes import PASS_NAMES

    rng = np.random.default_rng(0)
    x = gc.placeholder("x", ("T", 2, 3))
    W = gc.parameter("W", rng.normal(size=(3, 4)).astype(np.float32))
    U = gc.parameter("U", rng.normal(size=(4, 4)).astype(np.float32))
    h, _ = gc.scan(lambda h, xt: (gc.tanh(xt @ W + h @ U), None), gc.zeros((2, 4)), x)
    passes = PASS_NAMES if hoist else [p for p in PASS_NAMES if p != "hoist"]
    fn = gc.compile([x], h, backend="cuda", backend_options=OPTIONS, optimize=passes)
    for T in (3, 5):
        fake.launches.clear()
        fake.blas.gemms = 0
        fn(np.zeros((T, 2, 3), np.float32))
        names = fake.launches
        assert sum(n.endswith("_scan_enter") for n in names) == 1
        assert sum(n.endswith("_scan_pre") for n in names) == T
        assert sum(n.endswith("_scan_post") for n in names) == T
        # xt @ W: the tiled kernel per step, or one hoisted cuBLAS product
        assert sum(n.endswith("_gemm") for n in names) == (0 if hoist else T)
        assert fake.blas.gemms == (T + 1 if hoist else T)  # h @ U: cuBLAS
        pres = [i for i, n in enumerate(names) if n.endswith("_scan_pre")]
        posts = [i for i, n in enumerate(names) if n.endswith("_scan_post")]
        assert all(p + 1 < q for p, q in zip(pres, posts))  # the body runs between them
        assert all(q < p for q, p in zip(posts, pres[1:]))
    fn.close()
    assert fake.live() == 0
