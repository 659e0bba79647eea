"""The LLVM backend: the whole training step as one native function.

    gc.compile(inputs, outputs, updates=..., backend="llvm")

codegen.py turns the optimized program (after fusion and memory planning) into one module
built with llvmlite's IRBuilder; kernels_*.py hold one lowering per op; emitter.py turns
sympy expressions into IR; mathlib.py provides vectorizable exp/log/tanh...; toolchain.py
holds every llvmlite-version-specific call and the on-disk cache; executable.py calls the
compiled code through ctypes with a pointer table prepared once per input-size binding.
"""

from __future__ import annotations

import time

from graphc.errors import BackendError
from graphc.ir.graph import Graph

from ..base import Backend, check_flags
from ..kernelgen import (
    lowerings,  # noqa: F401  (the lowerings shared with cuda)
    split,
)
from ..kernelgen.mathlib import host_math
from ..kernelgen.registry import Coverage
from . import (  # noqa: F401  (importing registers the lowerings)
    collectives,
    kernels_index,
    kernels_linalg,
    loops,
)
from .codegen import HostCodegen
from .executable import LLVMExecutable


class LLVMBackend(Backend):
    name = "llvm"
    lowerings = Coverage("llvm")

    def compile(self, program: Graph, options: dict) -> LLVMExecutable:
        from ..kernelgen import toolchain
        from . import blas, threads

        unknown = set(options) - {"cache", "profile", "check_finite"}
        if unknown:
            raise BackendError(f"unknown llvm backend options {sorted(unknown)}; known: cache, "
                               "profile, check_finite")
        check_flags("llvm", options, ("cache", "profile", "check_finite"))
        leaves = {"placeholder", "parameter", "constant"}
        self.check_coverage([n for n in program.nodes if n.op.name not in leaves])
        started = time.perf_counter()
        blas.blas()  # before code generation: the integer width of BLAS arguments matters
        threads.runtime()  # the parallel loops' symbols, before linking
        gen = HostCodegen(program, host_math(), profile=options.get("profile", False),
                          check_finite=bool(options.get("check_finite", False)))
        module = gen.build()
        if gen.late_failure:  # (see HostCodegen.late_failure)
            gen = HostCodegen(program, host_math(), profile=options.get("profile", False),
                              check_finite=bool(options.get("check_finite", False)),
                              in_place=False)
            module = gen.build()
        pieces = split.global_texts(module)
        ir_text = split.module_text(module, pieces)
        parts = split.split(module, pieces, split.part_count(len(ir_text)), "graphc_step")
        engine, hit = toolchain.jit(parts, use_cache=options.get("cache", True),
                                    workers=threads.runtime().threads)
        stats = {"llvm_compile_seconds": time.perf_counter() - started,
                 "llvm_cache_hit": hit, "llvm_parts": len(parts)}
        exe = LLVMExecutable(program, gen.layout, engine, ir_text, stats, tuple(parts),
                             regions=gen.regions)
        if gen.profile:
            exe.enable_profile(gen.profile_slot, gen.kernel_names)
        return exe


BACKEND = LLVMBackend()

LOWERINGS = Coverage("llvm")  # the ops this backend lowers
