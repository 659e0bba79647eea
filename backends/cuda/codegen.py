"""Program graph -> GPU kernels and a launch plan, for a real device (PTX) or the emulator.

Every node becomes one or more kernels ``void @kN.op(ptr %slots, ptr %dims)`` that read their
buffers from the same pointer table and dims table as the host (kernelgen's Layout, memory
plan and KernelContext). Kernels find their thread through four accessor functions,
``@graphc.gpu.{tid,ctaid,ntid,nctaid}.{x,y,z}``. The module is generated twice from the same
code: for PTX the accessors wrap the NVVM special registers and kernels use the ``ptx_kernel``
calling convention; for emulation the accessors read globals that a generated driver sets
while it loops over the launch grid. Kernel bodies are identical in both.

Most kernels are the GPU schedule of an op's description (kernelgen/nest.py): "one thread
per output point" over a grid-stride loop, which needs no synchronization. GEMM is a
shared-memory tiled kernel written as phases (see kernels_linalg.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import sympy
from llvmlite import ir

from graphc.ir.graph import Graph
from graphc.ir.node import Node
from graphc.ir.shapes import prod
from graphc.ir.text import identifier

from ..kernelgen.irutil import I32, I64, PTR, VOID, i64, loop
from ..kernelgen.program import LEAVES, KernelContext, ProgramGenerator
from ..kernelgen.registry import lowering_for

BLOCK = 256  # threads per block of the grid-stride kernels
AXES = "xyz"


@dataclass
class Launch:
    """One kernel launch of the step, in schedule order."""

    kernel: str
    node: Node
    # "grid": grid-stride over `work` items; "gemm": tiled (kernels_linalg); "host": no kernel,
    # the executable runs the node on the host between launches (collectives.py)
    kind: str = "grid"
    work: object = 1  # items (int or sympy expression) for grid launches
    gemm: dict = field(default_factory=dict)  # m, n, k, batch (exprs) + variant for gemm


class GpuKernel(KernelContext):
    """A kernel function: (slots, dims) -> void, one thread's share of a node's work."""

    target = "cuda"

    def __init__(self, gen: GpuCodegen, node: Node, position: int, suffix: str = "",
                 work=None, kind: str = "grid") -> None:
        # PTX identifiers allow no dots: kernels are named k12_matmul_gemm
        name = identifier(f"k{position}_{node.op.name}{suffix}", max_length=128)
        super().__init__(gen, node, position, name=name)
        gen.launches.append(Launch(self.name, node, kind, work if work is not None else 1))
        gen.launch_plan.append(len(gen.launches) - 1)
        self.launch = gen.launches[-1]

    def make_function(self, name: str) -> ir.Function:
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, PTR]), name=name)
        if self.gen.target == "ptx":
            fn.calling_convention = "ptx_kernel"
        else:
            fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        return fn

    def slot_address(self, slot: int) -> ir.Value:
        return self.b.gep(self.fn.args[0], [i64(slot)], source_etype=PTR)

    def signal_failure(self, code: int) -> None:
        """The step's status word: the host reads it after the launches (and the update
        kernels test it before they copy)."""
        self.b.store(ir.Constant(I32, code), self.slot_ptr(self.gen.status_slot, "status"))

    def finish(self) -> None:
        if not self.b.block.is_terminated:
            self.b.ret_void()

    # -- thread geometry --------------------------------------------------------------------
    def special(self, register: str, axis: str = "x") -> ir.Value:
        """tid / ctaid / ntid / nctaid of this thread, as i64."""
        fn = self.gen.accessor(register, axis)
        return self.b.zext(self.b.call(fn, []), I64)

    @contextlib.contextmanager
    def thread_loop(self, total) -> Iterator[ir.Value]:
        """Grid-stride loop: this thread's items among ``range(total)``."""
        b = self.b
        total = total if isinstance(total, ir.Value) else self.dim(total)
        gid = b.add(b.mul(self.special("ctaid"), self.special("ntid")), self.special("tid"))
        stride = b.mul(self.special("nctaid"), self.special("ntid"))
        with loop(b, total, "t", start=gid, step=stride) as i:
            yield i


class GpuNode:
    """What a GPU lowering receives for one node: `kernel()` starts each of its launches."""

    target = "cuda"

    def __init__(self, gen: GpuCodegen, node: Node, position: int) -> None:
        self.gen, self.node, self.position = gen, node, position

    def kernel(self, suffix: str = "", work=None, kind: str = "grid") -> GpuKernel:
        return GpuKernel(self.gen, self.node, self.position, suffix=suffix, work=work, kind=kind)

    def gemm(self, step, slots: list[int], offsets: list) -> None:
        """A description's Gemm step: one launch of the tiled GEMM over whole buffers (so the
        device runtime may call cuBLAS instead)."""
        from .kernels_linalg import emit_gemm

        def operands(ctx, z):
            return tuple(ctx.slot_ptr(slot, name) for slot, name in
                         zip(slots, (step.a, step.b, step.c)))

        emit_gemm(self.gen, self.node, self.position, f".{step.name}", operands,
                  *(d if isinstance(d, int) else sympy.expand(d) for d in
                    (step.m, step.n, step.k)),
                  step.ta, step.tb, accumulate=step.accumulate, host_slots=tuple(slots))


@dataclass
class LoopPlan:
    """A loop in the launch plan (backends/cuda/loops.py): `length` times, the launch `pre`,
    the body's plan, the launch `post`."""

    length: object  # int or sympy expression
    pre: int
    body: list
    post: int


def schedule(plan: list, binding: dict) -> Iterator[int]:
    """The launch indices of a plan in the order they run, loops unrolled for a binding."""
    from ..kernelgen.binding import size_value

    for entry in plan:
        if isinstance(entry, int):
            yield entry
            continue
        for _ in range(size_value(entry.length, binding)):
            yield entry.pre
            yield from schedule(entry.body, binding)
            yield entry.post


class GpuCodegen(ProgramGenerator):
    """Kernels + launch plan for a program; `target` is "ptx" or "host" (the emulator).

    `launches` lists every kernel once (the body kernels of loops too); `plan` says in which
    order they run: a launch index, or a `LoopPlan` repeating a body's plan."""

    def __init__(self, program: Graph, math, target: str, parent: GpuCodegen | None = None,
                 bound: dict | None = None) -> None:
        self.target = target
        self.launch_plan: list = []
        if parent is None:
            self.launches: list[Launch] = []
            self._accessors: dict[str, ir.Function] = {}
        else:  # a loop body: its launches join the program's list, its launch plan is its own
            self.launches, self._accessors = parent.launches, parent._accessors
        super().__init__(program, math, parent, bound)
        if parent is not None:
            self.status_slot = parent.status_slot
            return
        if target == "ptx":
            self.module.triple = "nvptx64-nvidia-cuda"
        self.status_slot = self.layout.new_slot()
        self.layout.scratch[self.status_slot] = 4
        self.layout.status_slot = self.status_slot

    def body(self, program: Graph, bound: dict) -> GpuCodegen:
        """The generator of a loop body of this program (backends/cuda/loops.py)."""
        return GpuCodegen(program, self.math, self.target, parent=self, bound=bound)

    def build_body(self) -> None:
        """Generate the kernels of this (body) program into the module, in its own plan."""
        for k, node in enumerate(self.program.nodes):
            if node.op.name not in LEAVES:
                lowering_for(node, "cuda")(GpuNode(self, node, self.position_base + k))

    def accessor(self, register: str, axis: str) -> ir.Function:
        name = f"graphc.gpu.{register}.{axis}"
        if name not in self._accessors:
            fn = ir.Function(self.module, ir.FunctionType(I32, []), name=name)
            fn.linkage = "internal"
            fn.attributes.add("alwaysinline")
            b = ir.IRBuilder(fn.append_basic_block())
            if self.target == "ptx":
                sreg = ir.Function(self.module, ir.FunctionType(I32, []),
                                   name=f"llvm.nvvm.read.ptx.sreg.{register}.{axis}")
                b.ret(b.call(sreg, []))
            else:
                b.ret(b.load(self.emulated_register(register, axis), typ=I32))
            self._accessors[name] = fn
        return self._accessors[name]

    def emulated_register(self, register: str, axis: str) -> ir.GlobalVariable:
        name = f"graphc.emu.{register}.{axis}"
        existing = self.module.globals.get(name)
        if existing is not None:
            return existing
        g = ir.GlobalVariable(self.module, I32, name=name)
        g.linkage = "internal"
        g.initializer = ir.Constant(I32, 0)
        return g

    def build(self) -> ir.Module:
        from . import collectives, kernels_index, kernels_linalg, loops  # noqa: F401

        self.build_body()
        self._emit_updates()
        if self.target == "host":
            for launch in self.launches:
                if launch.kind != "host":
                    self.emulation_driver(launch)
        return self.module

    def emulation_driver(self, launch: Launch) -> None:
        """``graphc.emulate.<kernel>(slots, dims, gx, gy, gz, threads)``: run one launch.

        Sets the emulated special registers and calls the kernel for every block and thread of
        the grid in order. A tiled GEMM kernel runs its own threads phase by phase, so it is
        called once per block.
        """
        kernel = self.module.globals[launch.kernel]
        fn = ir.Function(self.module, ir.FunctionType(VOID, [PTR, PTR, I64, I64, I64, I64]),
                         name=f"graphc.emulate.{launch.kernel}")
        slots, dims, gx, gy, gz, threads = fn.args
        b = ir.IRBuilder(fn.append_basic_block())

        def set_reg(register, axis, value):
            b.store(b.trunc(value, I32), self.emulated_register(register, axis))

        per_block = launch.kind == "gemm"
        from .kernels_linalg import TILE

        for axis, count in zip(AXES, (gx, gy, gz)):
            set_reg("nctaid", axis, count)
        block = (i64(TILE), i64(TILE), i64(1)) if per_block else (threads, i64(1), i64(1))
        for axis, count in zip(AXES, block):
            set_reg("ntid", axis, count)
        for axis in "yz":
            set_reg("tid", axis, i64(0))
        with loop(b, gz, "bz") as bz, loop(b, gy, "by") as by, loop(b, gx, "bx") as bx:
            for axis, value in zip(AXES, (bx, by, bz)):
                set_reg("ctaid", axis, value)
            if per_block:
                b.call(kernel, [slots, dims])
            else:
                with loop(b, threads, "tx") as tx:
                    set_reg("tid", "x", tx)
                    b.call(kernel, [slots, dims])
        b.ret_void()

    def _emit_updates(self) -> None:
        """One kernel per update: copy the new value into the parameter if the step succeeded.
        (Launches from `first_update_launch` on are these: nothing after them computes.)

        Every thread of the grid copies its share (a parameter of a million elements copied by
        one thread took tens of milliseconds on an H100). All or nothing still holds: these
        launches follow every computing one in the stream, so each thread reads the same final
        status word."""
        self.first_update_launch = len(self.launches)
        lay = self.layout
        targets = {p.uid for p, _ in self.program.updates}
        base = len(self.program.nodes)
        sources = {}
        for j, (param, value) in enumerate(self.program.updates):
            sources[j] = lay.slot_of[value.uid]
            if value.uid != param.uid and value.op.name == "parameter" and value.uid in targets:
                # {a: b, b: a}: snapshot b before any update kernel overwrites it
                snap = lay.new_slot()
                lay.scratch[snap] = prod(value.shape) * value.dtype.itemsize
                ctx = GpuKernel(self, value, base + j, suffix=".snapshot",
                                work=prod(value.shape))
                self._copy(ctx, value, ctx.slot_ptr(snap, "snapshot"), ctx.ptr(value))
                ctx.finish()
                sources[j] = snap
        for j, (param, value) in enumerate(self.program.updates):
            if value.uid == param.uid:
                continue
            ctx = GpuKernel(self, param, base + len(self.program.updates) + j, suffix=".update",
                            work=prod(value.shape))
            status = ctx.b.load(ctx.slot_ptr(self.status_slot, "status"), typ=I32)
            with ctx.b.if_then(ctx.b.icmp_unsigned("==", status, ir.Constant(I32, 0))):
                self._copy(ctx, value, ctx.ptr(param), ctx.slot_ptr(sources[j], "new"))
            ctx.finish()

    @staticmethod
    def _copy(ctx: GpuKernel, node: Node, dst: ir.Value, src: ir.Value) -> None:
        """dst[i] = src[i] over the elements of `node`, a grid-stride share per thread."""
        b, ty = ctx.b, ctx.ty(node)
        with ctx.thread_loop(ctx.numel(node)) as i:
            b.store(b.load(b.gep(src, [i], source_etype=ty), typ=ty),
                    b.gep(dst, [i], source_etype=ty))
