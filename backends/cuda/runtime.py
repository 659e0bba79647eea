"""The CUDA driver API through ctypes (no compiled extension, no extra Python package).

Only what a compiled step needs: a context on device 0, loading and unloading PTX, device
memory, copies, kernel launches, and optionally cuBLAS for GEMMs. Every driver error becomes a
BackendError naming the operation (and the kernel, for launches).

The interface the executables use (what a fake driver in the tests implements):
``load_module(ptx) / unload_module(module) / function(module, name)``,
``alloc(nbytes) -> ptr / free(ptr)``, ``to_device(dst, host_ptr, nbytes) /
to_host(host_ptr, src, nbytes) / zero(dst, nbytes)``, ``launch(fn, name, grid, block, args)``
and ``synchronize()``; ``cublas()`` gives an object with ``gemm(...)`` or None.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

from graphc.errors import BackendError

CUdeviceptr = ctypes.c_uint64


class Driver:
    """A thin, checked wrapper over libcuda."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("cuda") or "libcuda.so.1"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError as exc:
            raise BackendError("no CUDA device: the CUDA driver (libcuda) is not installed; "
                               "use backend_options={'emulate': True} to run the kernels on "
                               "the CPU") from exc
        self.check(self.lib.cuInit(0), "cuInit")
        count = ctypes.c_int(0)
        self.check(self.lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
        if count.value == 0:
            raise BackendError("no CUDA device found")
        self.device = ctypes.c_int(0)
        self.check(self.lib.cuDeviceGet(ctypes.byref(self.device), 0), "cuDeviceGet")
        self.context = ctypes.c_void_p()
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), self.device),
                   "cuDevicePrimaryCtxRetain")
        self.check(self.lib.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")

    def check(self, result: int, what: str, kernel: str | None = None) -> None:
        if result == 0:
            return
        text = ctypes.c_char_p()
        self.lib.cuGetErrorName(result, ctypes.byref(text))
        name = text.value.decode() if text.value else f"error {result}"
        where = f" in kernel {kernel}" if kernel else ""
        raise BackendError(f"CUDA {what} failed{where}: {name}")

    def compute_capability(self) -> tuple[int, int]:
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(major), 75, self.device), "attr")
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, self.device), "attr")
        return major.value, minor.value

    def load_module(self, ptx: str) -> ctypes.c_void_p:
        module = ctypes.c_void_p()
        self.check(self.lib.cuModuleLoadData(ctypes.byref(module), ptx.encode() + b"\0"),
                   "cuModuleLoadData")
        return module

    def function(self, module, name: str) -> ctypes.c_void_p:
        fn = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(fn), module, name.encode()),
                   "cuModuleGetFunction", name)
        return fn

    def unload_module(self, module) -> None:
        self.check(self.lib.cuModuleUnload(module), "cuModuleUnload")

    def alloc(self, nbytes: int) -> int:
        ptr = CUdeviceptr()
        self.check(self.lib.cuMemAlloc_v2(ctypes.byref(ptr), ctypes.c_size_t(max(nbytes, 1))),
                   "cuMemAlloc")
        return ptr.value

    def free(self, ptr: int) -> None:
        self.check(self.lib.cuMemFree_v2(CUdeviceptr(ptr)), "cuMemFree")

    def memory(self) -> tuple[int, int]:
        """(free, total) bytes of device memory."""
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self.check(self.lib.cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)),
                   "cuMemGetInfo")
        return free.value, total.value

    def describe(self) -> dict:
        """Device name, compute capability, memory and driver version (for reports)."""
        name = ctypes.create_string_buffer(256)
        self.check(self.lib.cuDeviceGetName(name, 256, self.device), "cuDeviceGetName")
        version = ctypes.c_int()
        self.check(self.lib.cuDriverGetVersion(ctypes.byref(version)), "cuDriverGetVersion")
        major, minor = self.compute_capability()
        return {"device": name.value.decode(errors="replace"),
                "compute capability": f"sm_{major}{minor}",
                "memory": f"{self.memory()[1] / 2**30:.1f} GiB",
                "driver API version": f"{version.value // 1000}.{version.value % 1000 // 10}"}

    def to_device(self, dst: int, host_ptr: int, nbytes: int) -> None:
        if nbytes:
            self.check(self.lib.cuMemcpyHtoD_v2(CUdeviceptr(dst), ctypes.c_void_p(host_ptr),
                                                ctypes.c_size_t(nbytes)), "cuMemcpyHtoD")

    def to_host(self, host_ptr: int, src: int, nbytes: int) -> None:
        if nbytes:
            self.check(self.lib.cuMemcpyDtoH_v2(ctypes.c_void_p(host_ptr), CUdeviceptr(src),
                                                ctypes.c_size_t(nbytes)), "cuMemcpyDtoH")

    def zero(self, dst: int, nbytes: int) -> None:
        if nbytes:
            self.check(self.lib.cuMemsetD8_v2(CUdeviceptr(dst), ctypes.c_ubyte(0),
                                              ctypes.c_size_t(nbytes)), "cuMemsetD8")

    def launch(self, fn, name: str, grid: tuple, block: tuple, args: list[int]) -> None:
        holders = [ctypes.c_uint64(a) for a in args]
        params = (ctypes.c_void_p * len(holders))(*[ctypes.addressof(h) for h in holders])
        self.check(self.lib.cuLaunchKernel(fn, *[ctypes.c_uint(v) for v in grid],
                                           *[ctypes.c_uint(v) for v in block], ctypes.c_uint(0),
                                           None, params, None), "cuLaunchKernel", name)

    def synchronize(self) -> None:
        self.check(self.lib.cuCtxSynchronize(), "cuCtxSynchronize")


@cache
def driver() -> Driver:
    return Driver()


class Cublas:
    """cuBLAS sgemm/dgemm when libcublas is present (column-major, like Fortran BLAS)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("cublas") or "libcublas.so"
        self.lib = ctypes.CDLL(name)
        self.handle = ctypes.c_void_p()
        if self.lib.cublasCreate_v2(ctypes.byref(self.handle)) != 0:
            raise BackendError("cublasCreate failed")

    def gemm(self, dtype_size: int, ta: bool, tb: bool, m: int, n: int, k: int, a: int, b: int,
             c: int, beta: float) -> None:
        """Row-major C[m, n] = op(A) @ op(B) + beta C, as column-major C^T = op(B)^T op(A)^T."""
        scalar = ctypes.c_float if dtype_size == 4 else ctypes.c_double
        fn = self.lib.cublasSgemm_v2 if dtype_size == 4 else self.lib.cublasDgemm_v2
        alpha, beta_ = scalar(1.0), scalar(beta)
        lda, ldb = (m if ta else k), (k if tb else n)
        result = fn(self.handle, int(tb), int(ta), n, m, k, ctypes.byref(alpha),
                    CUdeviceptr(b), max(ldb, 1), CUdeviceptr(a), max(lda, 1),
                    ctypes.byref(beta_), CUdeviceptr(c), max(n, 1))
        if result != 0:
            raise BackendError(f"cuBLAS gemm failed with status {result}")

    def version(self) -> str:
        v = ctypes.c_int()
        if self.lib.cublasGetVersion_v2(self.handle, ctypes.byref(v)) != 0:
            return "unknown"
        return f"{v.value // 10000}.{v.value % 10000 // 100}.{v.value % 100}"


@cache
def cublas() -> Cublas | None:
    try:
        return Cublas()
    except (OSError, BackendError):
        return None
