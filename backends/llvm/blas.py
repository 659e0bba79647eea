"""BLAS for generated code: SciPy's OpenBLAS sgemm/dgemm, bound as symbols for the JIT.

`scipy.linalg.cython_blas` exports each routine's address in a PyCapsule; registering it with
llvmlite's symbol table lets generated IR call `graphc_sgemm` directly, with no Python between.
The routines take Fortran (column-major) arguments, all by pointer, with 32-bit integers.
"""

from __future__ import annotations

import ctypes
from functools import cache

from graphc.errors import BackendError

from .toolchain import add_symbol

SYMBOLS = {"graphc_sgemm": "sgemm", "graphc_dgemm": "dgemm"}


def _capsule_pointer(capsule) -> int:
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


@cache
def register() -> dict[str, int]:
    """Make the BLAS symbols resolvable by the JIT; returns their addresses."""
    try:
        from scipy.linalg import cython_blas
    except ImportError as exc:  # pragma: no cover - scipy is a dependency
        raise BackendError("the llvm backend needs SciPy for BLAS (pip install scipy)") from exc
    addresses = {}
    for symbol, routine in SYMBOLS.items():
        address = _capsule_pointer(cython_blas.__pyx_capi__[routine])
        add_symbol(symbol, address)
        addresses[symbol] = address
    return addresses
