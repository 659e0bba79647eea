"""Everything that depends on the llvmlite version lives here (and only here).

Initialization, the host target machine, the optimization pipeline (LLVM's new pass manager at
O2 with loop and SLP vectorization), compiling a module's parts on several threads, MCJIT
engines linking their object code, the on-disk object cache, and registering external symbols
(BLAS) so generated code can call them.
"""

from __future__ import annotations

import hashlib
from functools import cache

import llvmlite
import llvmlite.binding as llvm

from graphc.errors import BackendError

from .object_cache import ObjectCache


@cache
def initialize() -> None:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def host_target_machine() -> llvm.TargetMachine:
    """A target machine for this CPU with all its features (AVX2, FMA...) enabled.

    A new one each time: an MCJIT engine takes ownership of (and frees) its target machine.
    """
    initialize()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    return target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                        features=llvm.get_host_cpu_features().flatten(),
                                        opt=3, reloc="default", codemodel="jitdefault")


@cache
def wide_tiles() -> bool:
    """Has this CPU 32 vector registers of 32 bytes (AVX-512VL), room for register tiles of
    24 accumulators? (16 registers, AVX2's, hold tiles of 12.) A fact of the machine, like
    its vector width: part of the cache key through `host_description`."""
    initialize()
    return "+avx512vl" in llvm.get_host_cpu_features().flatten().split(",")


def host_description() -> str:
    """Triple, CPU and features: part of every cache key (code for AVX2 won't run elsewhere)."""
    initialize()
    return "|".join([llvm.get_process_triple(), llvm.get_host_cpu_name(),
                     llvm.get_host_cpu_features().flatten(), llvmlite.__version__])


def parse(ir_text: str, context=None) -> llvm.ModuleRef:
    initialize()
    try:
        mod = llvm.parse_assembly(ir_text, context)
        mod.verify()
    except RuntimeError as exc:
        raise BackendError(f"generated LLVM IR is invalid: {exc}") from exc
    return mod


#: O2, not O3: on the benchmark steps O3 ran no faster (the kernels are simple loops that O2
#: already vectorizes) and took 2-4x longer to compile (LeNet's step: 1.6 s -> 0.8 s cold).
OPT_LEVEL = 2


def optimize(mod: llvm.ModuleRef, tm: llvm.TargetMachine, speed: int = OPT_LEVEL,
             run=None) -> None:
    """Run the O2 pipeline with loop and SLP vectorization (`run`: the C function that runs
    it, for compile_object to call it without llvmlite's lock)."""
    pto = llvm.PipelineTuningOptions(speed_level=speed)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    try:
        if run is None:
            pm.run(mod, pb)
        else:
            run(pm, mod, pb)
    finally:  # (collected objects of llvmlite keep their LLVM side alive: close them)
        pm.close()
        pb.close()
        pto.close()


def add_symbol(name: str, address: int) -> None:
    llvm.add_symbol(name, address)


def cache_key(ir_text: str) -> str:
    from graphc import __version__

    h = hashlib.sha256()
    for part in (ir_text, host_description(), __version__, f"O{OPT_LEVEL}"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _unlocked(function):
    """An llvmlite C function without llvmlite's lock, where this llvmlite has it.

    llvmlite serializes every call into LLVM with one process-wide lock. LLVM itself compiles
    modules on several threads at once when each has its own context, target machine and
    pass pipeline, which compile_object gives it; so its two long calls (the optimization
    pipeline and code generation, almost all of a compile) are made without the lock. Where
    llvmlite wraps its functions differently, the wrapper is used: parts then compile one
    after another, into the same code.
    """
    return getattr(function, "_cfn", function)


def compile_object(ir_text: str) -> bytes:
    """Object code of one module: parsed in a context of its own, optimized, emitted. Safe to
    run on several threads at once (see _unlocked)."""
    from ctypes import string_at

    from llvmlite.binding import ffi

    context = llvm.create_context()
    try:
        mod = parse(ir_text, context)
        tm = host_target_machine()
        try:
            mod.triple = tm.triple
            mod.data_layout = str(tm.target_data)
            optimize(mod, tm, run=_unlocked(ffi.lib.LLVMPY_RunNewModulePassManager))
            with ffi.OutputString() as error:
                emit = _unlocked(ffi.lib.LLVMPY_TargetMachineEmitToMemory)
                buffer = emit(tm, mod, 1, error)
                if not buffer:
                    raise BackendError(f"LLVM could not generate code: {error}")
            try:
                return string_at(ffi.lib.LLVMPY_GetBufferStart(buffer),
                                 ffi.lib.LLVMPY_GetBufferSize(buffer))
            finally:
                ffi.lib.LLVMPY_DisposeMemoryBuffer(buffer)
        finally:
            mod.close()
            tm.close()
    finally:
        context.close()


def jit(parts: str | list[str], use_cache: bool = True, workers: int = 1
        ) -> tuple[llvm.ExecutionEngine, bool]:
    """Machine code for the module `parts` (one IR text, or the parts of one module, see
    split.py), linked in an MCJIT engine; and whether every part came from the object cache.
    Parts that must be compiled compile on up to `workers` threads at once; the code is the
    same whatever their number."""
    if isinstance(parts, str):
        parts = [parts]
    caches = [ObjectCache(cache_key(text), use_cache) for text in parts]
    objects = [c.cached for c in caches]
    missing = [k for k, data in enumerate(objects) if data is None]
    if len(missing) > 1 and workers > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(workers, len(missing))) as pool:
            done = list(pool.map(compile_object, [parts[k] for k in missing]))
    else:
        done = [compile_object(parts[k]) for k in missing]
    for k, data in zip(missing, done):
        objects[k] = data
        caches[k].store(data)
    tm = host_target_machine()
    holder = parse("")
    holder.triple = tm.triple
    holder.data_layout = str(tm.target_data)
    engine = llvm.create_mcjit_compiler(holder, tm)
    for data in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(data))
    engine.finalize_object()
    return engine, not missing
