"""Loops on the host: a scan node's kernel runs the whole loop inside the native step.

The body (a program of its own, optimized and memory-planned by the `loop_bodies` pass) is
generated once into the step's module by a child generator (`HostCodegen.body`): its kernels
are ordinary kernel functions ``(slots, dims, slot_ids)`` and its buffers ordinary slots of
the one slot table, sized at binding time like every other buffer (no allocation per step).
The scan's kernel then is

    copy init -> carry slots
    for s in [0, T):                      T: an IR constant, or read from the dims table
        t = reverse ? T-1-s : s
        copy carry -> history[t]          (only histories some scan_output reads)
        slots[x_j] = xs_j + t * slice_j   (the body's x placeholders are offset pointers)
        call every body kernel; a failure returns its status (the body node is recorded)
        copy y outputs -> ys_j[t]         (only ys some scan_output reads)
        copy new carries -> carry slots   (through a staging copy when a new carry is
                                           another carry entry: (a, b) -> (b, a))

Captured placeholders are the loop's input slots themselves. Carries, ys and histories live in
per-loop scratch slots (ys and histories T x their size, T evaluated with the other sizes when
a binding is made): one compilation serves every T when T is symbolic, and with a static T the
code does not grow with it. A ``scan_output`` copies its result out of those slots. A scan
inside a body lowers the same way (its slots are in the same table).
"""

from __future__ import annotations

from llvmlite import ir

from graphc.ir.shapes import as_dim
from graphc.passes.memory import nbytes

from ..kernelgen.irutil import I8, I32, i64, loop, memcpy
from ..kernelgen.registry import lowering


@lowering("scan", target="llvm")
def lower_scan(ctx) -> None:
    node, gen, lay, b = ctx.node, ctx.gen, ctx.layout, ctx.b
    a = node.attrs
    body, nc, nx = a["body"], a["n_carry"], a["n_xs"]
    ny = len(body.outputs) - nc
    length = as_dim(a["length"])
    needed = gen.loop_needs(node)

    def scratch(size) -> int:
        slot = lay.new_slot()
        lay.scratch[slot] = size
        return slot

    # slots: carries (scratch), x slices (pointers written per step), captured (the inputs')
    carry_slots = [scratch(nbytes(p)) for p in body.inputs[:nc]]
    x_slots = [lay.new_slot() for _ in range(nx)]
    bound = {p.uid: s for p, s in zip(body.inputs, carry_slots + x_slots)}
    for p, outer in zip(body.inputs[nc + nx:], node.inputs[nc + nx:]):
        bound[p.uid] = lay.slot_of[outer.uid]
    y_sizes = [nbytes(o) for o in body.outputs[nc:]]
    c_sizes = [nbytes(p) for p in body.inputs[:nc]]
    y_slots = [scratch(length * y_sizes[j]) if nc + j in needed else None
               for j in range(ny)]
    h_slots = [scratch(length * c_sizes[i]) if nc + ny + i in needed else None
               for i in range(nc)]
    gen.loop_results[node.uid] = [*carry_slots, *y_slots, *h_slots]

    sub = gen.body(body, bound)
    kernels = sub.body_kernels()  # (generates them into the module: before the loop's code)
    carry_ptrs = [ctx.slot_ptr(s, f"carry{i}") for i, s in enumerate(carry_slots)]
    x_bases = [ctx.in_ptr(nc + j) for j in range(nx)]
    with b.goto_entry_block():
        x_addrs = [ctx.slot_address(s) for s in x_slots]
    x_sizes = [ctx.dim(nbytes(p)) for p in body.inputs[nc:nc + nx]]
    y_ptrs = [ctx.slot_ptr(s, f"ys{j}") if s is not None else None
              for j, s in enumerate(y_slots)]
    h_ptrs = [ctx.slot_ptr(s, f"history{i}") if s is not None else None
              for i, s in enumerate(h_slots)]
    c_bytes = [ctx.dim(size) for size in c_sizes]
    y_bytes = [ctx.dim(size) for size in y_sizes]
    x_index = {p.uid: j for j, p in enumerate(body.inputs[nc:nc + nx])}
    carry_index = {p.uid: i for i, p in enumerate(body.inputs[:nc])}
    # new carries that are other carry entries go through a staging copy
    staged = {i: scratch(c_sizes[i]) for i, o in enumerate(body.outputs[:nc])
              if o.uid in carry_index and carry_index[o.uid] != i}
    stage_ptrs = {i: ctx.slot_ptr(s, f"stage{i}") for i, s in staged.items()}

    for i in range(nc):  # the carry starts as init
        memcpy(b, ctx.module, carry_ptrs[i], ctx.in_ptr(i), c_bytes[i])
    T = ctx.dim(length)
    fn = ctx.fn
    with loop(b, T, "step") as s:
        t = b.sub(b.sub(T, i64(1)), s, name="t") if a["reverse"] else s

        def at(base, size):
            return b.gep(base, [b.mul(t, size)], source_etype=I8)

        def body_value(out) -> ir.Value:
            """Where a body output is at this step."""
            if out.uid in x_index:  # an x slice passed through
                j = x_index[out.uid]
                return at(x_bases[j], x_sizes[j])
            return ctx.slot_ptr(sub.layout.slot_of[out.uid], sub.value_name(out))

        for i, h in enumerate(h_ptrs):
            if h is not None:
                memcpy(b, ctx.module, at(h, c_bytes[i]), carry_ptrs[i], c_bytes[i])
        for j in range(nx):
            b.store(at(x_bases[j], x_sizes[j]), x_addrs[j])
        for position, kernel, slot_ids in kernels:
            status = b.call(kernel, [fn.args[0], fn.args[1], slot_ids], name=f"s{position}")
            go = fn.append_basic_block(f"ok{position}")
            stop = fn.append_basic_block(f"stop{position}")
            b.cbranch(b.icmp_unsigned("==", status, ir.Constant(I32, 0)), go, stop)
            b.position_at_end(stop)
            b.ret(status)
            b.position_at_end(go)
        for j, y in enumerate(y_ptrs):
            if y is not None:
                memcpy(b, ctx.module, at(y, y_bytes[j]), body_value(body.outputs[nc + j]),
                       y_bytes[j])
        for i, dst in stage_ptrs.items():
            memcpy(b, ctx.module, dst, body_value(body.outputs[i]), c_bytes[i])
        for i, out in enumerate(body.outputs[:nc]):
            if carry_index.get(out.uid) == i:
                continue  # the identity
            src = stage_ptrs[i] if i in stage_ptrs else body_value(out)
            memcpy(b, ctx.module, carry_ptrs[i], src, c_bytes[i])


@lowering("scan_output", target="llvm")
def lower_scan_output(ctx) -> None:
    loop_node = ctx.node.inputs[0]
    slot = ctx.gen.loop_results[loop_node.uid][ctx.attrs["index"]]
    src = ctx.slot_ptr(slot, "result")
    memcpy(ctx.b, ctx.module, ctx.out_ptr, src, ctx.dim(nbytes(ctx.node)))
