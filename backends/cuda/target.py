"""PTX: NVPTX code generation through llvmlite, libdevice for math, ptxas for verification.

Every llvmlite call that is specific to the NVPTX target lives here.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from functools import cache

import llvmlite.binding as llvm
from llvmlite import ir

from graphc.errors import BackendError
from graphc.sysinfo import libdevice_path, ptxas_path

from ..kernelgen.irutil import F32, const, float_intrinsic

TRIPLE = "nvptx64-nvidia-cuda"
DEFAULT_ARCH = "sm_80"
VERIFY_ARCHS = ("sm_80", "sm_90")
_LIBDEVICE = {"exp": "exp", "log": "log", "expm1": "expm1", "log1p": "log1p", "tanh": "tanh"}


class LibdeviceMissing(BackendError):
    """The PTX needs libdevice (it calls a __nv_ function) and no CUDA toolkit provides it."""


@cache
def initialize_targets() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


def libdevice_math(b: ir.IRBuilder, name: str, x: ir.Value, ty: ir.Type) -> ir.Value:
    """Transcendentals from libdevice (__nv_expf, __nv_log, ...); sigmoid and softplus are
    written with them in their numerically stable forms."""
    module = b.module

    def nv(fn: str, v):
        symbol = f"__nv_{fn}{'f' if ty == F32 else ''}"
        func = module.globals.get(symbol) or ir.Function(module, ir.FunctionType(ty, [ty]),
                                                         name=symbol)
        return b.call(func, [v])

    if name in _LIBDEVICE:
        return nv(_LIBDEVICE[name], x)
    fabs = b.call(float_intrinsic(module, "fabs", ty), [x])
    e = nv("exp", b.fneg(fabs))
    one = const(ty, 1.0)
    if name == "sigmoid":
        positive = b.fdiv(one, b.fadd(one, e))
        return b.select(b.fcmp_ordered(">=", x, const(ty, 0.0)), positive,
                        b.fdiv(e, b.fadd(one, e)))
    if name == "softplus":
        relu = b.call(float_intrinsic(module, "maxnum", ty, 2), [x, const(ty, 0.0)])
        return b.fadd(relu, nv("log1p", e))
    raise BackendError(f"no GPU math function {name}")


def _libdevice_pow(b: ir.IRBuilder, x: ir.Value, y: ir.Value, ty: ir.Type) -> ir.Value:
    """NVPTX has no libm: a general power is libdevice's __nv_pow(f)."""
    symbol = "__nv_powf" if ty == F32 else "__nv_pow"
    func = b.module.globals.get(symbol) or ir.Function(b.module, ir.FunctionType(ty, [ty, ty]),
                                                       name=symbol)
    return b.call(func, [x, y])


def _libdevice_fmod(b: ir.IRBuilder, x: ir.Value, y: ir.Value, ty: ir.Type) -> ir.Value:
    """C's fmod (what LLVM's frem means), from libdevice: NVPTX lowers frem approximately."""
    symbol = "__nv_fmodf" if ty == F32 else "__nv_fmod"
    func = b.module.globals.get(symbol) or ir.Function(b.module, ir.FunctionType(ty, [ty, ty]),
                                                       name=symbol)
    return b.call(func, [x, y])


libdevice_math.pow = _libdevice_pow
libdevice_math.fmod = _libdevice_fmod


def ptx(module: ir.Module, kernels: list[str], arch: str = DEFAULT_ARCH) -> str:
    """Compile a GPU module to PTX for `arch`, with libdevice linked in where needed."""
    initialize_targets()
    text = str(module)
    try:
        mod = llvm.parse_assembly(text)
    except RuntimeError as exc:
        raise BackendError(f"generated GPU IR is invalid: {exc}") from exc
    if "__nv_" in text:
        path = libdevice_path()
        if path is None:
            raise LibdeviceMissing("libdevice (the CUDA toolkit's nvvm/libdevice/libdevice*.bc) "
                                   "was not found; set CUDA_HOME to the toolkit")
        with open(path, "rb") as f:
            lib = llvm.parse_bitcode(f.read())
        lib.triple = TRIPLE
        mod.link_in(lib)
    keep = set(kernels)
    for fn in mod.functions:  # only kernels stay visible: the rest can be inlined or dropped
        if not fn.is_declaration and fn.name not in keep:
            fn.linkage = "internal"
    tm = llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=arch, opt=3)
    mod.triple = TRIPLE
    mod.data_layout = str(tm.target_data)
    try:
        mod.verify()
    except RuntimeError as exc:
        raise BackendError(f"GPU module does not verify: {exc}") from exc
    pto = llvm.PipelineTuningOptions(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    prune = llvm.create_new_module_pass_manager()  # drop the unused part of libdevice first
    prune.add_global_dead_code_eliminate_pass()
    prune.run(mod, pb)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_assembly(mod)


def verify(ptx_text: str, arch: str) -> str | None:
    """Assemble PTX with ptxas for `arch`; returns None when ptxas is absent, else its output.

    Raises BackendError if ptxas rejects the code.
    """
    tool = ptxas_path()
    if tool is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "step.ptx")
        with open(src, "w") as f:
            f.write(ptx_text)
        res = subprocess.run([tool, f"-arch={arch}", src, "-o", os.path.join(tmp, "step.cubin")],
                             capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise BackendError(f"ptxas rejected the generated PTX for {arch}:\n{res.stderr[-2000:]}")
    return res.stdout + res.stderr
