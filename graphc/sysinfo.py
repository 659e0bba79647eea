"""What this machine offers each backend (used by `graphc info` and by the backends)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import shutil
import subprocess
from functools import cache
from pathlib import Path

CUDA_HOMES = ("/usr/local/cuda", "/opt/cuda")


def _toolkit_environment() -> tuple[str, str, str]:
    return (os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""),
            os.environ.get("PATH", ""))


def ptxas_path() -> str | None:
    """The ptxas that verifies generated PTX, or None.

    Looked for in ``$CUDA_HOME/bin`` and ``$CUDA_PATH/bin`` when either is set, then on
    ``PATH``, then (only when neither variable is set) in /usr/local/cuda and /opt/cuda. The
    answer is cached per value of those variables, so changing them takes effect.
    """
    return _find_ptxas(*_toolkit_environment())


@cache
def _find_ptxas(cuda_home: str, cuda_path: str, path: str) -> str | None:
    named = [h for h in (cuda_home, cuda_path) if h]
    for home in named:
        candidate = Path(home) / "bin" / "ptxas"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("ptxas", path=path)
    if found:
        return found
    if named:  # a toolkit was named: the default locations are not consulted
        return None
    for home in CUDA_HOMES:
        candidate = Path(home) / "bin" / "ptxas"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def _cuda_homes(cuda_home: str, cuda_path: str, path: str) -> list[str]:
    """Where a CUDA toolkit may be: the named ones ($CUDA_HOME, $CUDA_PATH) when set, else the
    toolkit of a ptxas on PATH and the usual install locations."""
    named = [h for h in (cuda_home, cuda_path) if h]
    if named:
        return named
    homes = []
    found = shutil.which("ptxas", path=path)
    if found:
        homes.append(str(Path(found).resolve().parent.parent))
    return homes + list(CUDA_HOMES)


def ptxas_version() -> str | None:
    path = ptxas_path()
    return _ptxas_version(path) if path else None


@cache
def _ptxas_version(path: str) -> str | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = [ln for ln in out.stdout.splitlines() if "release" in ln.lower()]
    return lines[-1].strip() if lines else (out.stdout.strip().splitlines()[-1:] or [None])[0]


def libdevice_path() -> str | None:
    """libdevice (``nvvm/libdevice/libdevice*.bc``), which the PTX links for transcendentals,
    or None. Searched in the toolkits `_cuda_homes` names; cached per CUDA_HOME, CUDA_PATH and
    PATH like `ptxas_path`. The emulation never needs it (it uses the host math)."""
    return _find_libdevice(*_toolkit_environment())


@cache
def _find_libdevice(cuda_home: str, cuda_path: str, path: str) -> str | None:
    for home in _cuda_homes(cuda_home, cuda_path, path):
        for candidate in sorted(Path(home, "nvvm", "libdevice").glob("libdevice*.bc")):
            return str(candidate)
    return None


@cache
def cuda_devices() -> tuple[str, list[str]]:
    """(driver status, device names). Never raises: no driver means no devices."""
    name = ctypes.util.find_library("cuda") or "libcuda.so.1"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return "no CUDA driver (libcuda) found", []
    if lib.cuInit(0) != 0:
        return "CUDA driver found, but cuInit failed (no device?)", []
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return "CUDA driver found, no device", []
    names = []
    for i in range(count.value):
        dev = ctypes.c_int(0)
        buf = ctypes.create_string_buffer(256)
        lib.cuDeviceGet(ctypes.byref(dev), i)
        lib.cuDeviceGetName(buf, 256, dev)
        names.append(buf.value.decode(errors="replace"))
    return "CUDA driver found", names


def blas_info() -> str:
    import numpy as np

    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # pragma: no cover - depends on the NumPy build
        return "unknown"


def report() -> list[tuple[str, list[tuple[str, str]]]]:
    """Sections of (key, value) lines describing every backend's requirements here."""
    import llvmlite
    import llvmlite.binding as llvm
    import numpy as np
    import sympy

    from graphc import blas_policy
    from graphc.backends.llvm.threads import runtime as parallel_runtime

    parallel_loops = parallel_runtime()

    host_cpu = llvm.get_host_cpu_name()
    features = llvm.get_host_cpu_features().flatten()
    simd = [f for f in ("avx512f", "avx2", "fma", "avx", "sse4.2", "neon") if f"+{f}" in features]
    from graphc.backends.cuda.target import initialize_targets as initialize_all_targets
    from graphc.backends.kernelgen.toolchain import initialize as initialize_native

    status, devices = cuda_devices()
    initialize_native()
    initialize_all_targets()
    try:
        llvm.Target.from_triple(llvm.get_process_triple())
        llvm_available = "yes (native code for this CPU)"
    except RuntimeError as exc:  # pragma: no cover - an llvmlite without the host target
        llvm_available = f"no ({exc})"
    try:
        llvm.Target.from_triple("nvptx64-nvidia-cuda")
        has_nvptx = True
    except RuntimeError:  # pragma: no cover - an llvmlite built without NVPTX
        has_nvptx = False
    if not has_nvptx:
        cuda_available = "no (this llvmlite has no NVPTX target)"
    elif devices:
        cuda_available = f"yes, on {devices[0]}"
    else:
        verified = "verified by ptxas" if ptxas_path() else "not verified: no ptxas"
        cuda_available = (f"PTX generation only ({verified}); runs emulated on the host with "
                          f"backend_options={{'emulate': True}}")
    return [
        ("machine", [("platform", platform.platform()), ("python", platform.python_version()),
                     ("cpus", str(os.cpu_count()))]),
        ("numpy backend", [("numpy", np.__version__), ("BLAS", blas_info()),
                           ("BLAS workers", blas_policy.STATUS),
                           ("sympy", sympy.__version__), ("available", "yes")]),
        ("llvm backend", [("llvmlite", llvmlite.__version__),
                          ("LLVM", ".".join(map(str, llvm.llvm_version_info))),
                          ("host CPU", f"{host_cpu} ({', '.join(simd) or 'baseline'})"),
                          ("triple", llvm.get_process_triple()),
                          ("parallel loops", parallel_loops.source),
                          ("vectors", _vector_line()),
                          ("available", llvm_available)]),
        ("cuda backend", [("ptxas", f"{ptxas_path()} ({ptxas_version()})" if ptxas_path()
                           else "not found"),
                          ("libdevice", libdevice_path() or "not found"),
                          ("driver", status),
                          ("devices", ", ".join(devices) if devices else "none"),
                          ("available", cuda_available)]),
        ("distributed (MPI)", mpi_report()),
        ("pictures", [("dot", shutil.which("dot") or "not found (apt-get install graphviz)")]),
    ]


def _vector_line() -> str:
    """What the llvm backend's tiles use here (graphc/ops/loops.direct_vector_bytes): where
    its own tiles take the mid-sized products from the BLAS (backends/llvm/panel_gemm.py)."""
    from graphc.errors import BackendError
    from graphc.ops.loops import direct_vector_bytes

    try:
        width = direct_vector_bytes()
    except BackendError as exc:  # (a GRAPHC_VECTOR_BYTES this CPU cannot take)
        return str(exc)
    if width == 64:
        return ("64 bytes: convolution tiles and 2-d float products of 2^21 multiply-adds "
                "or more in graphc's own tiles on every core (GRAPHC_VECTOR_BYTES=32: the "
                "BLAS's)")
    return "32 bytes: convolution tiles; matrix products past the small ones in the BLAS"


def mpi_report() -> list[tuple[str, str]]:
    """gc.distributed's requirements: mpi4py, the MPI library it loads, mpiexec."""
    from graphc.distributed.runtime import describe

    return describe()
