"""The CUDA backend: PTX kernels through llvmlite's NVPTX target.

    gc.compile(..., backend="cuda")                                # a CUDA device
    gc.compile(..., backend="cuda", backend_options={"emulate": True})  # the same kernels, on CPU

Compilation produces the PTX (``Function.source``) and assembles it with ptxas when
ptxas is installed. With a device, the step runs there: parameters and optimizer state stay
in device memory across steps and only inputs and outputs cross the bus. Without one, calling
raises BackendError unless ``emulate`` is set, which generates the kernels a second time, from
the same lowering code, for the host, and runs them over the launch grid (thread and block
indices become loop variables; the tiled GEMM runs phase by phase, which is what its barriers
mean; math is the host's, not libdevice). The emulation needs no CUDA toolkit: without
libdevice, the PTX is not generated and ``Function.source`` says so.

Options: ``emulate`` (bool), ``arch`` (PTX target, default "sm_80"), ``verify`` (run ptxas,
default True), ``cublas`` (bool, default True: GEMMs call cuBLAS when libcublas is found at run
time; False forces the tiled GEMM kernels; the emulation never uses cuBLAS), ``cache`` (the
emulation's machine code cache, default True), ``check_finite`` (stop at the first NaN, naming
its node; see docs/semantics.md — the device copies every value back to check it: slow).
"""

from __future__ import annotations

import re
import time

from graphc.errors import BackendError
from graphc.ir.graph import Graph

from ..base import Backend, Executable, check_flags
from ..kernelgen import lowerings  # noqa: F401  (the lowerings shared with llvm)
from ..kernelgen.mathlib import libdevice_math
from ..kernelgen.registry import Coverage
from . import kernels_index, kernels_linalg, loops  # noqa: F401  (importing registers the GPU lowerings)
from .codegen import GpuCodegen
from .executables import CLOSED, DeviceExecutable, EmulatedExecutable, finite_checks
from .target import DEFAULT_ARCH, LibdeviceMissing, ptx, verify

OPTIONS = {"emulate", "arch", "verify", "cache", "cublas", "check_finite"}
FLAGS = ("emulate", "verify", "cache", "cublas", "check_finite")  # True or False


class NoDeviceExecutable(Executable):
    """What a CUDA compilation gives on a machine without a device: the PTX, no execution."""

    applies_updates = True
    closed = False

    def __init__(self, source: str, reason: str, stats: dict) -> None:
        self.source = source
        self.reason = reason
        self.stats = stats

    def run(self, inputs, binding, key):
        if self.closed:
            raise BackendError(CLOSED)
        raise BackendError(f"{self.reason} (the PTX was generated: see Function.source)")

    def close(self) -> None:
        self.closed = True


class CUDABackend(Backend):
    name = "cuda"
    lowerings = Coverage("cuda")

    def compile(self, program: Graph, options: dict) -> Executable:
        unknown = set(options) - OPTIONS
        if unknown:
            raise BackendError(f"unknown cuda backend options {sorted(unknown)}; known: "
                               f"{sorted(OPTIONS)}")
        check_flags("cuda", options, FLAGS)
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
        # (a collective is a host step of the plan, not a kernel: cuda/collectives.py)
        names = [launch.kernel for launch in gen.launches if launch.kind != "host"]
        emulate = options.get("emulate", False)
        stats = {"kernels": len(names), "ptx_arch": arch,
                 "gemm_launches": sum(launch.kind == "gemm" for launch in gen.launches),
                 "host_steps": sum(launch.kind == "host" for launch in gen.launches)}
        try:
            ptx_text = ptx(gen.module, names, arch)
        except LibdeviceMissing as exc:
            if not emulate:
                raise
            # the emulation runs the host math: only the PTX (and its check) is left out
            ptx_text = (f"// The PTX was not generated: {exc}.\n// The emulation does not "
                        "need it. The kernels' LLVM IR for nvptx64 follows.\n" + str(gen.module))
            stats["ptx"] = f"not generated ({exc})"
            stats["ptxas"] = "skipped (no PTX)"
        else:
            stats["ptx"] = "generated"
            if options.get("verify", True):
                report = verify(ptx_text, arch)
                stats["ptxas"] = "not found" if report is None else f"accepted for {arch}"
        stats["ptx_seconds"] = time.perf_counter() - started
        if emulate:
            return self._emulator(program, ptx_text, stats, options)
        checks = finite_checks(program, gen) if options.get("check_finite", False) else None
        try:
            return DeviceExecutable(program, gen.layout, gen.launches, ptx_text, stats,
                                    use_cublas=options.get("cublas", True), checks=checks,
                                    plan=gen.launch_plan)
        except BackendError as exc:
            return NoDeviceExecutable(ptx_text, str(exc), stats)

    def _emulator(self, program: Graph, ptx_text: str, stats: dict, options: dict):
        from ..kernelgen import toolchain
        from ..kernelgen.mathlib import host_math

        gen = GpuCodegen(program, host_math(), "host")
        gen.build()
        engine, hit = toolchain.jit(str(gen.module), use_cache=options.get("cache", True))
        stats["emulator_cache_hit"] = hit
        stats["gemm"] = "tiled kernels, emulated (the emulation never uses cuBLAS)"
        stats["math"] = "host (graphc's mathlib; libdevice runs only on a device)"
        checks = finite_checks(program, gen) if options.get("check_finite", False) else None
        return EmulatedExecutable(program, gen.layout, gen.launches, engine, ptx_text, stats,
                                  checks=checks, plan=gen.launch_plan)


BACKEND = CUDABackend()
