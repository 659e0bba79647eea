"""The CUDA backend: PTX kernels through llvmlite's NVPTX target.

    gc.compile(..., backend="cuda")                                # a CUDA device
    gc.compile(..., backend="cuda", backend_options={"emulate": True})  # the same kernels, on CPU

Compilation always produces the PTX (``Function.source``) and assembles it with ptxas when
ptxas is installed. With a device, the step runs there: parameters and optimizer state stay
in device memory across steps and only inputs and outputs cross the bus. Without one, calling
raises BackendError unless ``emulate`` is set, which compiles the very same kernel IR for the
host and runs it over the launch grid (thread and block indices become loop variables; the
tiled GEMM's shared memory and barriers are emulated by running it phase by phase).

Options: ``emulate`` (bool), ``arch`` (PTX target, default "sm_80"), ``verify`` (run ptxas,
default True).
"""

from __future__ import annotations

import re
import time

from graphc.errors import BackendError
from graphc.ir.graph import Graph

from ..base import Backend, Executable
from . import gemm, kernels  # noqa: F401  (importing registers the GPU lowerings)
from .codegen import GPU_LOWERINGS, GpuCodegen
from .target import DEFAULT_ARCH, libdevice_math, ptx, verify

OPTIONS = {"emulate", "arch", "verify", "cache"}


class NoDeviceExecutable(Executable):
    """What a CUDA compilation gives on a machine without a device: the PTX, no execution."""

    applies_updates = True

    def __init__(self, source: str, reason: str, stats: dict) -> None:
        self.source = source
        self.reason = reason
        self.stats = stats

    def run(self, inputs, binding, key):
        raise BackendError(f"{self.reason} (the PTX was generated: see Function.source)")


class CUDABackend(Backend):
    name = "cuda"
    lowerings = GPU_LOWERINGS

    def compile(self, program: Graph, options: dict) -> Executable:
        unknown = set(options) - OPTIONS
        if unknown:
            raise BackendError(f"unknown cuda backend options {sorted(unknown)}; known: "
                               f"{sorted(OPTIONS)}")
        leaves = {"placeholder", "parameter", "constant"}
        self.check_coverage([n for n in program.nodes if n.op.name not in leaves])
        arch = options.get("arch", DEFAULT_ARCH)
        if not (isinstance(arch, str) and re.fullmatch(r"sm_\d{2,3}a?", arch)
                and int(arch[3:].rstrip("a")) >= 70):
            raise BackendError(f"arch must name a CUDA compute capability sm_70 or newer, "
                               f"e.g. 'sm_80' or 'sm_90'; got {arch!r}")
        started = time.perf_counter()
        gen = GpuCodegen(program, libdevice_math, "ptx")
        gen.build()
        names = [launch.kernel for launch in gen.launches]
        ptx_text = ptx(gen.module, names, arch)
        stats = {"kernels": len(names), "ptx_seconds": time.perf_counter() - started,
                 "ptx_arch": arch}
        if options.get("verify", True):
            report = verify(ptx_text, arch)
            stats["ptxas"] = "not found" if report is None else f"accepted for {arch}"
        if options.get("emulate", False):
            return self._emulator(program, ptx_text, stats, options)
        try:
            from .executables import DeviceExecutable

            return DeviceExecutable(program, gen.layout, gen.launches, ptx_text, stats)
        except BackendError as exc:
            return NoDeviceExecutable(ptx_text, str(exc), stats)

    def _emulator(self, program: Graph, ptx_text: str, stats: dict, options: dict):
        from ..llvm import host_math, toolchain
        from .executables import EmulatedExecutable

        gen = GpuCodegen(program, host_math(), "host")
        gen.build()
        engine, cache, _ = toolchain.jit(str(gen.module), use_cache=options.get("cache", True))
        stats["emulator_cache_hit"] = cache.hit
        return EmulatedExecutable(program, gen.layout, gen.launches, engine, ptx_text, stats)


BACKEND = CUDABackend()
