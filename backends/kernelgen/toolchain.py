"""Everything that depends on the llvmlite version lives here (and only here).

Initialization, the host target machine, the optimization pipeline (LLVM's new pass manager at
O2 with loop and SLP vectorization), MCJIT engines, the on-disk object cache, and registering
external symbols (BLAS) so generated code can call them.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import llvmlite
import llvmlite.binding as llvm

from graphc.errors import BackendError
from graphc.files import atomic_write


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


def host_description() -> str:
    """Triple, CPU and features: part of every cache key (code for AVX2 won't run elsewhere)."""
    initialize()
    return "|".join([llvm.get_process_triple(), llvm.get_host_cpu_name(),
                     llvm.get_host_cpu_features().flatten(), llvmlite.__version__])


def parse(ir_text: str) -> llvm.ModuleRef:
    initialize()
    try:
        mod = llvm.parse_assembly(ir_text)
        mod.verify()
    except RuntimeError as exc:
        raise BackendError(f"generated LLVM IR is invalid: {exc}") from exc
    return mod


#: O2, not O3: on the benchmark steps O3 ran no faster (the kernels are simple loops that O2
#: already vectorizes) and took 2-4x longer to compile (LeNet's step: 1.6 s -> 0.8 s cold).
OPT_LEVEL = 2


def optimize(mod: llvm.ModuleRef, tm: llvm.TargetMachine, speed: int = OPT_LEVEL) -> None:
    """Run the O2 pipeline with loop and SLP vectorization."""
    pto = llvm.PipelineTuningOptions(speed_level=speed)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pm = pb.getModulePassManager()
    try:
        pm.run(mod, pb)
    finally:  # (collected objects of llvmlite keep their LLVM side alive: close them)
        pm.close()
        pb.close()
        pto.close()


def add_symbol(name: str, address: int) -> None:
    llvm.add_symbol(name, address)


def cache_dir() -> Path:
    base = os.environ.get("GRAPHC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "graphc")
    return Path(base) / "llvm"


def cache_key(ir_text: str) -> str:
    from graphc import __version__

    h = hashlib.sha256()
    for part in (ir_text, host_description(), __version__, f"O{OPT_LEVEL}"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


class ObjectCache:
    """MCJIT object cache on disk: compiled code keyed by a hash of IR + target + versions.

    Each file is the object code behind a header of its length and SHA-256, checked before
    MCJIT sees it: a truncated or corrupted file (a full disk, a killed process, a stray
    write) is a cache miss that gets rewritten, never an LLVM abort of the interpreter.
    """

    MAGIC = b"graphc-object-v1\n"

    def __init__(self, key: str, enabled: bool = True) -> None:
        self.path = cache_dir() / f"{key}.o"
        self.enabled = enabled and os.environ.get("GRAPHC_NO_CACHE", "") in ("", "0")
        self.cached = self._read() if self.enabled else None
        self.hit = False

    def _read(self) -> bytes | None:
        try:
            blob = self.path.read_bytes()
        except OSError:
            return None
        head = len(self.MAGIC) + 8 + 32
        if len(blob) <= head or not blob.startswith(self.MAGIC):
            return None
        size = int.from_bytes(blob[len(self.MAGIC):len(self.MAGIC) + 8], "little")
        data = blob[head:]
        if size != len(data) or hashlib.sha256(data).digest() != blob[head - 32:head]:
            return None
        return data

    def load(self, module) -> bytes | None:
        if self.cached is not None:
            self.hit = True
        return self.cached

    def store(self, module, data: bytes) -> None:
        if self.enabled:
            header = self.MAGIC + len(data).to_bytes(8, "little") + hashlib.sha256(data).digest()
            try:
                atomic_write(self.path, header + data)
            except OSError:
                pass  # a read-only cache directory must not break compilation


def jit(ir_text: str, use_cache: bool = True) -> tuple[llvm.ExecutionEngine, ObjectCache,
                                                       llvm.ModuleRef]:
    """Compile IR to machine code (or load it from the object cache) in an MCJIT engine."""
    tm = host_target_machine()
    cache = ObjectCache(cache_key(ir_text), use_cache)
    mod = parse(ir_text)
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    if cache.cached is None:  # machine code will be generated: optimize first
        optimize(mod, tm)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.set_object_cache(cache.store, cache.load)
    engine.finalize_object()
    return engine, cache, mod
