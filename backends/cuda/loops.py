"""Loops on the GPU: the host repeats a loop's launch sequence T times; the data stays on the
device (and the emulation runs the same kernels over the same plan).

The control is kernelgen/loops.py's, shared with the llvm target. Its copies are shared by
every thread of the grid (a grid-stride loop over the bytes: one thread copying the carries
of an LSTM cost more than the step's GEMMs); the control's own stores are made by thread 0
of the grid, where no other thread of the same launch reads them:

* ``kN_scan_enter``: init -> carries (all threads); the step counter (a device scratch
  slot) = 0 (thread 0);
* ``kN_scan_pre``: s = counter, t = reverse ? T-1-s : s; carry -> history[t] (all
  threads); t kept next to the counter for the launches after the body, and the body's x
  slots in the *device* slot table = xs_j + t * slice_j (thread 0: device pointer
  arithmetic; the body's kernels, launched next, read their pointers from that table);
* ``kN_scan_stack``, only when a y or a new carry *is* a carry entry (``(a, b) -> (b, a)``,
  or ``y = the old carry``): y outputs -> ys_j[t] and those new carries -> staging slots (all
  threads), so that every read of a carry ends before `post` overwrites it;
* ``kN_scan_post``: y outputs -> ys_j[t] (unless `stack` did it) and new carries ->
  carries (all threads); counter = s + 1 (thread 0: only `pre`, another launch, reads it).

The plan (`LoopPlan`) is ``enter`` then, T times, ``pre, body launches..., [stack,] post``; T
comes from the binding on the host (`codegen.schedule`) and from the dims table on the device,
so one compilation serves every T. The body's kernels are generated once by a child generator
(`GpuCodegen.body`): its buffers are slots of the same tables. A body GEMM that reads an x
slice runs the tiled kernel, not cuBLAS (cuBLAS is called from the host, which does not see
the pointers `pre` writes). A ``scan_output`` copies its result out of the loop's slots.
"""

from __future__ import annotations

import contextlib

from graphc.ir.shapes import prod

from ..kernelgen.irutil import I8, I64, i64, load, store
from ..kernelgen.loops import (
    enter,
    loop_buffers,
    point_at_step,
    save_histories,
    stack_ys,
    step_index,
    take_new_carries,
)
from ..kernelgen.registry import lowering
from .codegen import LoopPlan

COUNTER, T_INDEX = 0, 1  # the loop's control slot: int64 step counter, int64 t of this step


@contextlib.contextmanager
def _one_thread(ctx):
    b = ctx.b
    first = b.icmp_unsigned("==", b.add(ctx.special("ctaid"), ctx.special("tid")), i64(0))
    with b.if_then(first):
        yield


def grid_copy(ctx, dst, src, nbytes) -> None:
    """dst[:nbytes] = src[:nbytes], a grid-stride share of the bytes per thread."""
    b = ctx.b
    with ctx.thread_loop(nbytes) as i:
        b.store(b.load(b.gep(src, [i], source_etype=I8), typ=I8),
                b.gep(dst, [i], source_etype=I8))


def _work(sizes) -> object:
    """The grid of a copying launch: the bytes of its copies (the grid is capped anyway)."""
    return sum(sizes) if sizes else 1


def _reads_a_carry(lb) -> bool:
    """Whether stacking the ys or taking the new carries reads a carry slot that taking the
    new carries overwrites: then those copies end in a launch of their own first."""
    body, nc = lb.body, lb.n_carry
    carries = {p.uid for p in body.inputs[:nc]}
    ys_read = any(y is not None and body.outputs[nc + j].uid in carries
                  for j, y in enumerate(lb.y_slots))
    return bool(lb.staged) or ys_read


@lowering("scan", target="cuda")
def lower_scan(gnode) -> None:
    gen = gnode.gen
    lb = loop_buffers(gnode.node, gen)
    control = gen.layout.new_slot()
    gen.layout.scratch[control] = 16

    ctx = gnode.kernel(".enter", work=_work(lb.c_sizes))
    enter(ctx, lb, grid_copy)
    with _one_thread(ctx):
        store(ctx.b, i64(0), ctx.slot_ptr(control, "control"), I64, i64(COUNTER))
    ctx.finish()

    ctx = gnode.kernel(".pre", work=_work([c for c, h in zip(lb.c_sizes, lb.h_slots)
                                           if h is not None]))
    pre = gen.launch_plan.pop()
    b = ctx.b
    counter = ctx.slot_ptr(control, "control")
    t = step_index(ctx, lb, load(b, counter, I64, i64(COUNTER)))
    save_histories(ctx, lb, t, copy=grid_copy)
    with _one_thread(ctx):
        store(b, t, counter, I64, i64(T_INDEX))
        point_at_step(ctx, lb, t)
    ctx.finish()

    first_body_launch = len(gen.launches)
    sub = gen.body(lb.body, lb.bound)
    sub.build_body()
    patched = set(lb.x_slots)
    for launch in gen.launches[first_body_launch:]:
        slots = launch.gemm.get("slots")
        if slots is not None and patched & set(slots):
            launch.gemm["slots"] = None  # (cuBLAS would read the host's table)

    ys = [size for size, y in zip(lb.y_sizes, lb.y_slots) if y is not None]
    body_plan = sub.launch_plan
    two_phases = _reads_a_carry(lb)
    if two_phases:
        ctx = gnode.kernel(".stack", work=_work(ys + [lb.c_sizes[i] for i in lb.staged]))
        body_plan = [*body_plan, gen.launch_plan.pop()]
        t = load(ctx.b, ctx.slot_ptr(control, "control"), I64, i64(T_INDEX))
        stack_ys(ctx, lb, sub, t, copy=grid_copy)
        ctx.finish()
    ctx = gnode.kernel(".post", work=_work(([] if two_phases else ys) + list(lb.c_sizes)))
    post = gen.launch_plan.pop()
    b = ctx.b
    counter = ctx.slot_ptr(control, "control")
    t = load(b, counter, I64, i64(T_INDEX))
    if not two_phases:
        stack_ys(ctx, lb, sub, t, copy=grid_copy)
    take_new_carries(ctx, lb, sub, t, copy=grid_copy)
    with _one_thread(ctx):
        store(b, b.add(load(b, counter, I64, i64(COUNTER)), i64(1)), counter, I64, i64(COUNTER))
    ctx.finish()
    gen.launch_plan.append(LoopPlan(lb.length, pre, body_plan, post))


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
