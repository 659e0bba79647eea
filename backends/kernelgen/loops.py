"""Loops (``scan``) on the native targets: what the host and the GPU lowerings share.

A scan node's body is a program of its own (optimized and memory-planned by the
`loop_bodies` pass). Both targets generate the body's kernels once, into the step's module,
through a child generator (its buffers are slots of the same table), and repeat them T times:

    enter:        copy init -> carry slots
    for s in [0, T):                      T: an IR constant, or read from the dims table
        t = reverse ? T-1-s : s
        before_step:  copy carry -> history[t]       (only histories some scan_output reads)
                      slots[x_j] = xs_j + t * slice_j  (the body's x placeholders are offset
                                                        pointers written into the slot table)
        the body's kernels
        after_step:   copy y outputs -> ys_j[t]       (only ys some scan_output reads)
                      copy new carries -> carry slots (through a staging slot when a new carry
                                                       is another carry entry: (a, b) -> (b, a))

The host (backends/llvm/loops.py) emits this whole loop inside one kernel function of the
step; the GPU (backends/cuda/loops.py) makes `enter`, `before_step` and `after_step` three
single-thread kernels and the host repeats the launch sequence ``before, body..., after`` T
times (the step counter lives in a device scratch slot, so nothing crosses the bus per step).

Captured placeholders are the loop's input slots themselves. Carries, ys and histories live in
per-loop scratch slots (ys and histories T x their size, T evaluated with the other sizes when
a binding is made): one compilation serves every T when T is symbolic, and with a static T the
code does not grow with it. A scan inside a body lowers the same way, recursively.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from graphc.ir.node import Node
from graphc.ir.shapes import as_dim
from graphc.passes.memory import nbytes

from .irutil import I8, i64, memcpy

__all__ = ["LoopBuffers", "after_step", "before_step", "enter", "loop_buffers", "step_index"]


@dataclass
class LoopBuffers:
    """The slots of one loop (all in the step's one slot table) and the sizes of its pieces."""

    node: Node
    length: object  # int or sympy expression
    reverse: bool
    n_carry: int
    n_xs: int
    carry_slots: list[int]
    x_slots: list[int]  # pointers written per step
    y_slots: list[int | None]  # T x y size, None when no scan_output reads it
    h_slots: list[int | None]  # T x carry size, None when no scan_output reads it
    staged: dict[int, int]  # carry index -> staging slot
    c_sizes: list
    y_sizes: list
    x_sizes: list
    bound: dict[int, int] = field(default_factory=dict)  # body placeholder uid -> slot

    @property
    def body(self):
        return self.node.attrs["body"]


def loop_buffers(node: Node, gen) -> LoopBuffers:
    """Make the loop's slots in `gen`'s layout and record its results' slots in
    ``gen.loop_results`` (read by ``scan_output``)."""
    lay = gen.layout
    a = node.attrs
    body, nc, nx = a["body"], a["n_carry"], a["n_xs"]
    ny = len(body.outputs) - nc
    length = as_dim(a["length"])
    needed = gen.loop_needs(node)

    def scratch(size) -> int:
        slot = lay.new_slot()
        lay.scratch[slot] = size
        return slot

    c_sizes = [nbytes(p) for p in body.inputs[:nc]]
    y_sizes = [nbytes(o) for o in body.outputs[nc:]]
    x_sizes = [nbytes(p) for p in body.inputs[nc:nc + nx]]
    carry_slots = [scratch(size) for size in c_sizes]
    x_slots = [lay.new_slot() for _ in range(nx)]
    bound = {p.uid: s for p, s in zip(body.inputs, carry_slots + x_slots)}
    for p, outer in zip(body.inputs[nc + nx:], node.inputs[nc + nx:]):
        bound[p.uid] = lay.slot_of[outer.uid]
    y_slots = [scratch(length * y_sizes[j]) if nc + j in needed else None for j in range(ny)]
    h_slots = [scratch(length * c_sizes[i]) if nc + ny + i in needed else None
               for i in range(nc)]
    carry_index = {p.uid: i for i, p in enumerate(body.inputs[:nc])}
    staged = {i: scratch(c_sizes[i]) for i, o in enumerate(body.outputs[:nc])
              if o.uid in carry_index and carry_index[o.uid] != i}
    gen.loop_results[node.uid] = [*carry_slots, *y_slots, *h_slots]
    return LoopBuffers(node, length, bool(a["reverse"]), nc, nx, carry_slots, x_slots, y_slots,
                       h_slots, staged, c_sizes, y_sizes, x_sizes, bound)


def step_index(ctx, lb: LoopBuffers, s: ir.Value) -> ir.Value:
    """t: the position in xs / ys of step s (T-1-s for a reverse loop)."""
    if not lb.reverse:
        return s
    b = ctx.b
    return b.sub(b.sub(ctx.dim(lb.length), i64(1)), s, name="t")


def _at(ctx, base: ir.Value, t: ir.Value, size) -> ir.Value:
    return ctx.b.gep(base, [ctx.b.mul(t, ctx.dim(size))], source_etype=I8)


def enter(ctx, lb: LoopBuffers) -> None:
    """The carry starts as init."""
    for i, slot in enumerate(lb.carry_slots):
        memcpy(ctx.b, ctx.module, ctx.slot_ptr(slot, f"carry{i}"), ctx.in_ptr(i),
               ctx.dim(lb.c_sizes[i]))


def before_step(ctx, lb: LoopBuffers, t: ir.Value) -> None:
    """Save the carries that entered step t (histories) and point the body's x placeholders
    at ``xs_j[t]`` (the pointer written into the slot table)."""
    b = ctx.b
    for i, h in enumerate(lb.h_slots):
        if h is not None:
            memcpy(b, ctx.module, _at(ctx, ctx.slot_ptr(h, f"history{i}"), t, lb.c_sizes[i]),
                   ctx.slot_ptr(lb.carry_slots[i], f"carry{i}"), ctx.dim(lb.c_sizes[i]))
    for j, slot in enumerate(lb.x_slots):
        with b.goto_entry_block():
            address = ctx.slot_address(slot)
        b.store(_at(ctx, ctx.in_ptr(lb.n_carry + j), t, lb.x_sizes[j]), address)


def after_step(ctx, lb: LoopBuffers, sub, t: ir.Value) -> None:
    """Stack the ys of step t and make the new carries the carries. `sub`: the body's
    generator (where its values are)."""
    b, body, nc = ctx.b, lb.body, lb.n_carry
    x_index = {p.uid: j for j, p in enumerate(body.inputs[nc:nc + lb.n_xs])}
    carry_index = {p.uid: i for i, p in enumerate(body.inputs[:nc])}

    def value(out) -> ir.Value:
        """Where a body output is at this step."""
        if out.uid in x_index:  # an x slice passed through
            j = x_index[out.uid]
            return _at(ctx, ctx.in_ptr(nc + j), t, lb.x_sizes[j])
        return ctx.slot_ptr(sub.layout.slot_of[out.uid], sub.value_name(out))

    for j, y in enumerate(lb.y_slots):
        if y is not None:
            memcpy(b, ctx.module, _at(ctx, ctx.slot_ptr(y, f"ys{j}"), t, lb.y_sizes[j]),
                   value(body.outputs[nc + j]), ctx.dim(lb.y_sizes[j]))
    stage = {i: ctx.slot_ptr(s, f"stage{i}") for i, s in lb.staged.items()}
    for i, dst in stage.items():
        memcpy(b, ctx.module, dst, value(body.outputs[i]), ctx.dim(lb.c_sizes[i]))
    for i, out in enumerate(body.outputs[:nc]):
        if carry_index.get(out.uid) == i:
            continue  # the identity
        src = stage[i] if i in stage else value(out)
        memcpy(b, ctx.module, ctx.slot_ptr(lb.carry_slots[i], f"carry{i}"), src,
               ctx.dim(lb.c_sizes[i]))
