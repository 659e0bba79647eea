"""BLAS for generated code: the very library NumPy uses, bound as symbols for the JIT.

Generated IR calls `graphc_sgemm` / `graphc_dgemm` (Fortran gemm: column-major, every argument
by pointer). We bind them to the OpenBLAS that NumPy itself loads, so graphc, NumPy and the
NumPy backend share one BLAS and one thread pool: two OpenBLAS copies in one process each
keep worker threads spinning after a call, and on a 2-core machine they starve each other
(a 128x784x512 sgemm went from 0.7 ms to 30 ms). When NumPy's library cannot be located,
SciPy's `cython_blas` pointers are used instead.
"""

from __future__ import annotations

import ctypes
import glob
import os
from dataclasses import dataclass, replace
from functools import cache

from graphc.errors import BackendError

from ..kernelgen.toolchain import add_symbol

# (symbol in the library, width of its integer arguments), most specific first
_CANDIDATES = {
    "sgemm": [("scipy_sgemm_64_", 64), ("sgemm_64_", 64), ("scipy_sgemm_", 32), ("sgemm_", 32)],
    "dgemm": [("scipy_dgemm_64_", 64), ("dgemm_64_", 64), ("scipy_dgemm_", 32), ("dgemm_", 32)],
}


@dataclass(frozen=True)
class Blas:
    source: str  # where the routines come from, for `graphc info`
    int_bits: int  # 32 or 64: the integer type of the Fortran arguments
    addresses: tuple[tuple[str, int], ...]
    local_threads: bool = False  # graphc_blas_threads(n) sets this thread's BLAS thread count
    #: a parallel region puts a step's later products on one BLAS thread (set by `blas`:
    #: graphc.blas_policy.ONE_BLAS_THREAD_AFTER_A_REGION, where the count can be lowered)
    one_thread_after_a_region: bool = False


def _numpy_blas_libraries() -> list[str]:
    import numpy

    root = os.path.dirname(numpy.__file__)
    patterns = [os.path.join(root, os.pardir, "numpy.libs", "*blas*"),
                os.path.join(root, ".dylibs", "*blas*")]
    return sorted(p for pattern in patterns for p in glob.glob(pattern))


def _from_numpy() -> Blas | None:
    for path in _numpy_blas_libraries():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        found = {}
        for routine, candidates in _CANDIDATES.items():
            for symbol, bits in candidates:
                if hasattr(lib, symbol):
                    found[routine] = (ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value,
                                      bits)
                    break
        if len(found) == 2 and len({bits for _, bits in found.values()}) == 1:
            bits = found["sgemm"][1]
            addresses = [("graphc_sgemm", found["sgemm"][0]), ("graphc_dgemm", found["dgemm"][0])]
            # OpenBLAS: small products run faster (and never stall) on the calling thread alone
            local = getattr(lib, "openblas_set_num_threads_local", None)
            if local is not None:
                addresses.append(("graphc_blas_threads",
                                  ctypes.cast(local, ctypes.c_void_p).value))
                local.argtypes, local.restype = [ctypes.c_int], ctypes.c_int
            return Blas(f"NumPy's {os.path.basename(path)}", bits, tuple(addresses),
                        local is not None)
    return None


def _capsule_pointer(capsule) -> int:
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def _from_scipy() -> Blas:
    try:
        from scipy.linalg import cython_blas
    except ImportError as exc:
        raise BackendError("the llvm backend found no BLAS: NumPy's OpenBLAS could not be "
                           "located and SciPy is not installed") from exc
    caps = cython_blas.__pyx_capi__
    return Blas("SciPy cython_blas", 32, (("graphc_sgemm", _capsule_pointer(caps["sgemm"])),
                                          ("graphc_dgemm", _capsule_pointer(caps["dgemm"]))))


_keep: list = []  # ctypes objects whose addresses the generated code holds


@cache
def blas() -> Blas:
    """Locate BLAS once and register its routines with the JIT's symbol table, and
    `graphc_blas_spins` (i32): 1 when a parallel region is to put a step's later products
    on one BLAS thread, because some workers spin on after their work
    (graphc.blas_policy.ONE_BLAS_THREAD_AFTER_A_REGION) and this BLAS has a per-thread
    count to lower."""
    from graphc.blas_policy import ONE_BLAS_THREAD_AFTER_A_REGION

    found = _from_numpy() or _from_scipy()
    found = replace(found, one_thread_after_a_region=ONE_BLAS_THREAD_AFTER_A_REGION
                    and found.local_threads)
    for symbol, address in found.addresses:
        add_symbol(symbol, address)
    spins = ctypes.c_int32(int(found.one_thread_after_a_region))
    _keep.append(spins)
    add_symbol("graphc_blas_spins", ctypes.addressof(spins))
    return found
