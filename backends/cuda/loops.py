"""Loops on the GPU: the host repeats a loop's launch sequence T times; the data stays on the
device (and the emulation runs the same kernels over the same plan).

The control is kernelgen/loops.py's, shared with the llvm target, split into three launches of
one thread each:

* ``kN_scan_enter``: init -> carries; the step counter (a device scratch slot) = 0;
* ``kN_scan_pre``: s = counter, t = reverse ? T-1-s : s (kept next to the counter for
  `post`), counter = s + 1; carry -> history[t]; the body's x slots in the *device* slot
  table = xs_j + t * slice_j (device pointer arithmetic: the body's kernels, launched next,
  read their pointers from that table);
* ``kN_scan_post``: y outputs -> ys_j[t]; new carries -> carries.

The plan (`LoopPlan`) is ``enter`` then, T times, ``pre, body launches..., post``; T comes from
the binding on the host (`codegen.schedule`) and from the dims table on the device, so one
compilation serves every T. The body's kernels are generated once by a child generator
(`GpuCodegen.body`): its buffers are slots of the same tables. A body GEMM that reads an x
slice runs the tiled kernel, not cuBLAS (cuBLAS is called from the host, which does not see
the pointers `pre` writes). A ``scan_output`` copies its result out of the loop's slots.

Copies run on one thread (like the update kernels): correct, not fast; a grid-stride copy is
a later improvement.
"""

from __future__ import annotations

import contextlib

from graphc.ir.shapes import prod

from ..kernelgen.irutil import I64, i64, load, store
from ..kernelgen.loops import after_step, before_step, enter, loop_buffers, step_index
from ..kernelgen.registry import lowering
from .codegen import LoopPlan

COUNTER, T_INDEX = 0, 1  # the loop's control slot: int64 step counter, int64 t of this step


@contextlib.contextmanager
def _one_thread(ctx):
    b = ctx.b
    first = b.icmp_unsigned("==", b.add(ctx.special("ctaid"), ctx.special("tid")), i64(0))
    with b.if_then(first):
        yield


@lowering("scan", target="cuda")
def lower_scan(gnode) -> None:
    gen = gnode.gen
    lb = loop_buffers(gnode.node, gen)
    control = gen.layout.new_slot()
    gen.layout.scratch[control] = 16

    ctx = gnode.kernel(".enter", work=1)
    with _one_thread(ctx):
        enter(ctx, lb)
        store(ctx.b, i64(0), ctx.slot_ptr(control, "control"), I64, i64(COUNTER))
    ctx.finish()

    ctx = gnode.kernel(".pre", work=1)
    pre = gen.launch_plan.pop()
    with _one_thread(ctx):
        b = ctx.b
        counter = ctx.slot_ptr(control, "control")
        s = load(b, counter, I64, i64(COUNTER))
        t = step_index(ctx, lb, s)
        store(b, t, counter, I64, i64(T_INDEX))
        store(b, b.add(s, i64(1)), counter, I64, i64(COUNTER))
        before_step(ctx, lb, t)
    ctx.finish()

    first_body_launch = len(gen.launches)
    sub = gen.body(lb.body, lb.bound)
    sub.build_body()
    patched = set(lb.x_slots)
    for launch in gen.launches[first_body_launch:]:
        slots = launch.gemm.get("slots")
        if slots is not None and patched & set(slots):
            launch.gemm["slots"] = None  # (cuBLAS would read the host's table)

    ctx = gnode.kernel(".post", work=1)
    post = gen.launch_plan.pop()
    with _one_thread(ctx):
        after_step(ctx, lb, sub, load(ctx.b, ctx.slot_ptr(control, "control"), I64,
                                      i64(T_INDEX)))
    ctx.finish()
    gen.launch_plan.append(LoopPlan(lb.length, pre, sub.launch_plan, post))


@lowering("scan_output", target="cuda")
def lower_scan_output(gnode) -> None:
    """One thread per element: out[i] = result[i]."""
    node = gnode.node
    slot = gnode.gen.loop_results[node.inputs[0].uid][node.attrs["index"]]
    ctx = gnode.kernel(work=prod(node.shape))
    ty = ctx.ty()
    src, dst = ctx.slot_ptr(slot, "result"), ctx.out_ptr
    with ctx.thread_loop(ctx.numel()) as i:
        ctx.b.store(ctx.b.load(ctx.b.gep(src, [i], source_etype=ty), typ=ty),
                    ctx.b.gep(dst, [i], source_etype=ty))
    ctx.finish()
