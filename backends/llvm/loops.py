"""Loops on the host: a scan node's kernel runs the whole loop inside the native step.

The body is generated once into the step's module by a child generator (`HostCodegen.body`):
its kernels are ordinary kernel functions ``(slots, dims, slot_ids)`` and its buffers ordinary
slots of the one slot table. The scan's kernel copies init into the carries, then for each
step calls `before_step`, every body kernel (a failure returns its status: the body node is
recorded) and `after_step` — the control shared with the GPU target (kernelgen/loops.py, which
describes the loop). Here the loop also avoids its copies: ys computed in place in ys[t] and
carries pointer-swapped (`plan_in_place`), carries that accumulate a product updated in place
by BLAS (`_accumulations`), a ``scan_output`` read where the loop left it (unless it leaves
its program, then copied). With ``profile`` each body kernel has its own counter.
"""

from __future__ import annotations

from collections import Counter

from llvmlite import ir

from graphc.passes.memory import nbytes

from ..kernelgen.irutil import I32, I64, i64, loop, memcpy
from ..kernelgen.loops import (
    Pointers,
    after_step,
    before_step,
    enter,
    loop_buffers,
    plan_in_place,
    step_index,
)
from ..kernelgen.registry import lowering


@lowering("scan", target="llvm")
def lower_scan(ctx) -> None:
    """The whole loop in this kernel: the body's kernels (generated once, before this code),
    called T times between the shared control's `before_step` and `after_step`."""
    gen, b = ctx.gen, ctx.b
    lb = loop_buffers(ctx.node, gen)
    sub = gen.body(lb.body, lb.bound)
    overrides = {}
    for i, (add, product) in _accumulations(lb).items():
        lb.updated_in_place.add(i)
        overrides[product.uid] = _accumulate_into(lb.carry_slots[i])
        overrides[add.uid] = None  # (no kernel: the product added itself)
    plan_in_place(lb, sub)
    # (generates them into the module: before the loop's code)
    kernels = sub.body_kernels(prefix=ctx.name, overrides=overrides)
    enter(ctx, lb)
    fn = ctx.fn
    profile = _Profile(ctx) if gen.profile else None
    ptr = Pointers(ctx, fresh=bool(lb.swapped or lb.ys_in_place))
    with loop(b, ctx.dim(lb.length), "step") as s:
        t = step_index(ctx, lb, s)
        before_step(ctx, lb, t, ptr)
        for position, kernel, slot_ids, counter in kernels:
            start = profile.start() if profile else None
            status = b.call(kernel, [fn.args[0], fn.args[1], slot_ids], name=f"s{position}")
            if profile:
                profile.charge(start, counter)
            go = fn.append_basic_block(f"ok{position}")
            stop = fn.append_basic_block(f"stop{position}")
            b.cbranch(b.icmp_unsigned("==", status, ir.Constant(I32, 0)), go, stop)
            b.position_at_end(stop)
            b.ret(status)
            b.position_at_end(go)
            node = lb.body.nodes[position - sub.position_base]
            if gen.root.check_finite and node.dtype.kind == "f" and node.uid not in overrides:
                sub.stop_if_nan(b, fn, node, position)  # (the body's op named, not the loop)
        after_step(ctx, lb, sub, t, ptr)


def _accumulations(lb) -> dict[int, tuple]:
    """The carries a step updates as ``c + A @ B`` (the gradient a reverse loop accumulates
    for a captured weight), each by (the add, the product): carry index -> nodes. The
    product then adds itself into the carry's slot (BLAS with beta = 1), which saves the
    add's pass over the carry and the carry's copy or swap. Only when nothing else sees the
    entering carry, the product or the sum: the entering carry is read by the add alone (its
    history, if kept, was saved before the step), the product by the add alone, the sum by
    no body node and only as this carry."""
    body, nc = lb.body, lb.n_carry
    users: dict[int, list] = {}
    for n in body.nodes:
        for x in n.inputs:
            users.setdefault(x.uid, []).append(n.uid)
    outputs = Counter(o.uid for o in body.outputs)
    found = {}
    for i, (carry, out) in enumerate(zip(body.inputs[:nc], body.outputs[:nc])):
        if out.op.name != "add" or outputs[out.uid] != 1 or outputs[carry.uid] or \
                users.get(out.uid) or users.get(carry.uid) != [out.uid]:
            continue
        others = [x for x in out.inputs if x.uid != carry.uid]
        if len(out.inputs) != 2 or len(others) != 1:
            continue
        product = others[0]
        if product.op.name != "matmul" or outputs[product.uid] or \
                users.get(product.uid) != [out.uid] or product.dtype.kind != "f" or \
                product.dtype != carry.dtype or out.dtype != carry.dtype or \
                any(len(x.shape) != 2 for x in (product, *product.inputs)) or \
                not tuple(product.shape) == tuple(carry.shape) == tuple(out.shape):
            continue
        found[i] = (out, product)
    return found


def _accumulate_into(slot: int):
    """The lowering of a 2-D matmul that adds its product into `slot` (a carry)."""
    def lower(ctx) -> None:
        from .kernels_linalg import gemm

        node = ctx.node
        ta, tb = node.attrs["ta"], node.attrs["tb"]
        m, n = ctx.shape()
        k = ctx.shape(node.inputs[0])[0 if ta else 1]
        gemm(ctx, ctx.b, ctx.ty(), ta, tb, m, n, k, ctx.in_ptr(0), ctx.in_ptr(1),
             ctx.slot_ptr(slot, "carry"), accumulate=True)
    return lower


class _Profile:
    """Cycles of each body kernel in its own counter (``k12.scan/k40.matmul``), taken off the
    loop's: the loop's counter keeps its control alone (copies, pointers), so the counters
    add up to the step (a nested loop's likewise)."""

    def __init__(self, ctx) -> None:
        self.ctx = ctx
        self.counters = ctx.slot_ptr(ctx.gen.root.profile_slot, "profile")
        self.clock = ctx.module.declare_intrinsic("llvm.readcyclecounter", (),
                                                  ir.FunctionType(I64, []))

    def start(self) -> ir.Value:
        return self.ctx.b.call(self.clock, [])

    def charge(self, start: ir.Value, counter: int) -> None:
        b = self.ctx.b
        spent = b.sub(b.call(self.clock, []), start)
        for index, sign in ((counter, b.add), (self.ctx.profile_index, b.sub)):
            at = b.gep(self.counters, [i64(index)], source_etype=I64)
            b.store(sign(b.load(at, typ=I64), spent), at)


@lowering("scan_output", target="llvm")
def lower_scan_output(ctx) -> None:
    """The loop's result where the loop left it: its readers read the loop's slot (no kernel
    code), unless the value must be in its own buffer — then a copy."""
    node, gen = ctx.node, ctx.gen
    slot = gen.loop_results[node.inputs[0].uid][ctx.attrs["index"]]
    views = _views_read_in_place(node, gen)
    if views is not None:
        for view in views:  # (the readers' kernels are generated later)
            gen.layout.slot_of[view.uid] = slot
        return
    src = ctx.slot_ptr(slot, "result")
    memcpy(ctx.b, ctx.module, ctx.out_ptr, src, ctx.dim(nbytes(node)))


def _views_read_in_place(node, gen) -> list | None:
    """The scan_output and the reshapes the memory plan made views of it (their own, then
    each other's, buffer), when all of them may be read in the loop's slot itself; None when
    one of them leaves its program: a step's output (whose array view is fixed when a
    binding is made) or a body's output (which its loop moves or swaps). Nothing else
    writes a loop's result slots: the loop writes them when it runs, before every reader; a
    loop inside a body runs again only at the next step of the enclosing loop, after this
    step's readers."""
    program, aliases = gen.program, gen.plan.aliases
    leaving = {o.uid for o in program.outputs}
    views, frontier = [node], {node.uid}
    while frontier:
        found = [n for n in program.nodes
                 if n.uid in aliases and n.inputs[0].uid in frontier]
        views += found
        frontier = {n.uid for n in found}
    return None if any(v.uid in leaving for v in views) else views
