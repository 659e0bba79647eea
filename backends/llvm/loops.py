"""Loops on the host: a scan node's kernel runs the whole loop inside the native step.

The body is generated once into the step's module by a child generator (`HostCodegen.body`):
its kernels are ordinary kernel functions ``(slots, dims, slot_ids)`` and its buffers ordinary
slots of the one slot table. The scan's kernel copies init into the carries, then for each
step calls `before_step`, every body kernel (a failure returns its status: the body node is
recorded) and `after_step` — the control shared with the GPU target (kernelgen/loops.py, which
describes the loop). A ``scan_output`` copies its result out of the loop's slots.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.passes.memory import nbytes

from ..kernelgen.irutil import I32, loop, memcpy
from ..kernelgen.loops import after_step, before_step, enter, loop_buffers, step_index
from ..kernelgen.registry import lowering


@lowering("scan", target="llvm")
def lower_scan(ctx) -> None:
    gen, b = ctx.gen, ctx.b
    lb = loop_buffers(ctx.node, gen)
    sub = gen.body(lb.body, lb.bound)
    kernels = sub.body_kernels()  # (generates them into the module: before the loop's code)
    enter(ctx, lb)
    fn = ctx.fn
    with loop(b, ctx.dim(lb.length), "step") as s:
        t = step_index(ctx, lb, s)
        before_step(ctx, lb, t)
        for position, kernel, slot_ids in kernels:
            status = b.call(kernel, [fn.args[0], fn.args[1], slot_ids], name=f"s{position}")
            go = fn.append_basic_block(f"ok{position}")
            stop = fn.append_basic_block(f"stop{position}")
            b.cbranch(b.icmp_unsigned("==", status, ir.Constant(I32, 0)), go, stop)
            b.position_at_end(stop)
            b.ret(status)
            b.position_at_end(go)
        after_step(ctx, lb, sub, t)


@lowering("scan_output", target="llvm")
def lower_scan_output(ctx) -> None:
    loop_node = ctx.node.inputs[0]
    slot = ctx.gen.loop_results[loop_node.uid][ctx.attrs["index"]]
    src = ctx.slot_ptr(slot, "result")
    memcpy(ctx.b, ctx.module, ctx.out_ptr, src, ctx.dim(nbytes(ctx.node)))
