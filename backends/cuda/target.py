"""PTX: NVPTX code generation through llvmlite, libdevice linked in, ptxas for verification.

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

TRIPLE = "nvptx64-nvidia-cuda"
DEFAULT_ARCH = "sm_80"
VERIFY_ARCHS = ("sm_80", "sm_90")


class LibdeviceMissing(BackendError):
    """The PTX needs libdevice (it calls a __nv_ function) and no CUDA toolkit provides it."""


@cache
def initialize_targets() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()





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
        if "is not defined for option 'gpu-name'" in res.stderr:  # the toolkit, not the code
            raise BackendError(f"the installed ptxas ({tool}) does not know the architecture "
                               f"{arch} (newer CUDA toolkits drop old GPUs): choose a newer "
                               "arch= (e.g. sm_80), or verify=False to skip ptxas")
        raise BackendError(f"ptxas rejected the generated PTX for {arch}:\n{res.stderr[-2000:]}")
    return res.stdout + res.stderr
