"""Backends (installed as graphc.backends): lowerings keyed by op name + an executable builder.

* ``numpy`` — the reference: generates readable NumPy source, one line per node.
* ``llvm``  — native CPU code for the whole step through llvmlite.
* ``cuda``  — PTX kernels through llvmlite's NVPTX target; a device runtime or host emulation.
"""

from __future__ import annotations

import importlib

from graphc.errors import BackendError

from .base import Backend, Executable

_BACKENDS = {
    "numpy": "graphc.backends.numpy",
    "llvm": "graphc.backends.llvm",
    "cuda": "graphc.backends.cuda",
}


def available_backends() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend object for `name`; BackendError if unknown or not usable here."""
    if name not in _BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of {available_backends()}")
    module = importlib.import_module(_BACKENDS[name])
    backend = getattr(module, "BACKEND", None)
    if backend is None:
        raise BackendError(f"the {name} backend is not available in this build")
    return backend


__all__ = ["Backend", "Executable", "available_backends", "get_backend"]
