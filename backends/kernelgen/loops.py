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
step; the GPU (backends/cuda/loops.py) makes the same phases kernels whose threads share the
copies (`copy=`; the pieces of `before_step` and `after_step` are separate functions so that
a kernel boundary can fall between them) and the host repeats the launch sequence
``before, body..., after`` T times (the step counter lives in a device scratch slot, so
nothing crosses the bus per step).

Captured placeholders are the loop's input slots themselves. Carries, ys and histories live in
per-loop scratch slots (ys and histories T x their size, T evaluated with the other sizes when
a binding is made): one compilation serves every T when T is symbolic, and with a static T the
code does not grow with it. A scan inside a body lowers the same way, recursively.

The host target also avoids the copies (`plan_in_place`): a y output whose body buffer holds
nothing else at the step's end is computed *in* ``ys_j[t]`` (``before_step`` points that body
slot there, as it does the x slots), and a new carry computed into a body buffer takes the
carry's place by a pointer swap of the two slots (``after_step``) — the body buffer (exactly
the carry's size: the memory plan sizes buffers exactly) becomes next step's carry and the old
carry's memory next step's body buffer. Pointers of swapped slots change every step, so the
control reloads them where it uses them (`Pointers`). The GPU target keeps the copies (cuBLAS
reads its operands' pointers from the host's table, which the device-side control does not
update).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llvmlite import ir

from graphc.ir.node import Node
from graphc.ir.shapes import as_dim
from graphc.passes.memory import nbytes

from .irutil import I8, PTR, i64, memcpy
from .program import LEAVES

__all__ = ["LoopBuffers", "Pointers", "after_step", "before_step", "enter", "host_copy",
           "loop_buffers", "plan_in_place", "point_at_step", "save_histories", "stack_ys",
           "step_index", "take_new_carries"]


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
    # (plan_in_place, host only) y index -> the body slot pointed at ys[t] each step
    ys_in_place: dict[int, int] = field(default_factory=dict)
    # (plan_in_place, host only) carry index -> the body slot its pointer is swapped with
    swapped: dict[int, int] = field(default_factory=dict)
    # (host only) carries the body updates in their own slot (C += A @ B): no copy, no swap
    updated_in_place: set[int] = field(default_factory=set)

    @property
    def body(self):
        return self.node.attrs["body"]


class Pointers:
    """How the control reaches a slot's pointer. By default once per kernel, in its entry
    block (`KernelContext.slot_ptr`); with ``fresh`` (the host's loop with in-place ys or
    swapped carries, whose slots change every step) loaded where it is used: the body kernels
    called in between may have changed the table, so LLVM keeps the load in the loop."""

    def __init__(self, ctx, fresh: bool = False) -> None:
        self.ctx, self.fresh = ctx, fresh
        self._addresses: dict[int, ir.Value] = {}

    def address(self, slot: int) -> ir.Value:
        """Where the slot's pointer is stored (computed once, in the entry block)."""
        if slot not in self._addresses:
            with self.ctx.b.goto_entry_block():
                self._addresses[slot] = self.ctx.slot_address(slot)
        return self._addresses[slot]

    def __call__(self, slot: int, name: str) -> ir.Value:
        if not self.fresh:
            return self.ctx.slot_ptr(slot, name)
        return self.ctx.b.load(self.address(slot), typ=PTR, name=name)


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


def plan_in_place(lb: LoopBuffers, sub) -> None:
    """Decide which ys are computed in place in ``ys_j[t]`` and which carries are pointer-
    swapped with the body buffer of their new value (host target; `sub`: the body's
    generator, whose slots are the body's buffers).

    A body buffer is claimed at most once: two outputs on one buffer (the same node twice, or
    a reshape of another output) leave the second to a copy, which reads the buffer before
    any swap. Leaves (the identity carry, an x slice, a captured tensor, a constant) are
    copied as before.
    """
    body, nc = lb.body, lb.n_carry
    claimed: set[int] = set()

    def body_slot(out) -> int | None:
        if out.op.name in LEAVES:
            return None
        slot = sub.layout.slot_of[out.uid]
        return None if slot in claimed else slot

    for j, y in enumerate(lb.y_slots):
        slot = body_slot(body.outputs[nc + j]) if y is not None else None
        if slot is not None:
            claimed.add(slot)
            lb.ys_in_place[j] = slot
    for i, out in enumerate(body.outputs[:nc]):
        slot = body_slot(out) if i not in lb.updated_in_place else None
        if slot is not None:
            claimed.add(slot)
            lb.swapped[i] = slot


def step_index(ctx, lb: LoopBuffers, s: ir.Value) -> ir.Value:
    """t: the position in xs / ys of step s (T-1-s for a reverse loop)."""
    if not lb.reverse:
        return s
    b = ctx.b
    return b.sub(b.sub(ctx.dim(lb.length), i64(1)), s, name="t")


def _at(ctx, base: ir.Value, t: ir.Value, size, name: str = "") -> ir.Value:
    return ctx.b.gep(base, [ctx.b.mul(t, ctx.dim(size))], source_etype=I8, name=name)


def host_copy(ctx, dst: ir.Value, src: ir.Value, nbytes: ir.Value) -> None:
    """A copy by the one thread that runs the control (the host target's)."""
    memcpy(ctx.b, ctx.module, dst, src, nbytes)


def enter(ctx, lb: LoopBuffers, copy=host_copy) -> None:
    """The carry starts as init. `copy(ctx, dst, src, nbytes)` moves bytes (the GPU passes a
    copy that every thread of the grid shares)."""
    for i, slot in enumerate(lb.carry_slots):
        copy(ctx, ctx.slot_ptr(slot, f"carry{i}"), ctx.in_ptr(i), ctx.dim(lb.c_sizes[i]))


def before_step(ctx, lb: LoopBuffers, t: ir.Value, ptr: Pointers | None = None) -> None:
    """Save the carries that entered step t (histories), point the body's x placeholders at
    ``xs_j[t]`` and the in-place ys' body slots at ``ys_j[t]`` (pointers written into the
    slot table)."""
    ptr = ptr or Pointers(ctx)
    save_histories(ctx, lb, t, ptr)
    point_at_step(ctx, lb, t, ptr)


def save_histories(ctx, lb: LoopBuffers, t: ir.Value, ptr: Pointers | None = None,
                   copy=host_copy) -> None:
    """carry -> history[t], for the histories some scan_output reads."""
    ptr = ptr or Pointers(ctx)
    for i, h in enumerate(lb.h_slots):
        if h is not None:
            copy(ctx, _at(ctx, ctx.slot_ptr(h, f"history{i}"), t, lb.c_sizes[i]),
                 ptr(lb.carry_slots[i], f"carry{i}"), ctx.dim(lb.c_sizes[i]))


def point_at_step(ctx, lb: LoopBuffers, t: ir.Value, ptr: Pointers | None = None) -> None:
    """The x slots (and the in-place ys' body slots) point at step t's slices."""
    b = ctx.b
    ptr = ptr or Pointers(ctx)
    for j, slot in enumerate(lb.x_slots):
        b.store(_at(ctx, ctx.in_ptr(lb.n_carry + j), t, lb.x_sizes[j]), ptr.address(slot))
    for j, slot in lb.ys_in_place.items():
        b.store(_at(ctx, ctx.slot_ptr(lb.y_slots[j], f"ys{j}"), t, lb.y_sizes[j],
                    f"ys{j}.in_place"), ptr.address(slot))


def after_step(ctx, lb: LoopBuffers, sub, t: ir.Value, ptr: Pointers | None = None) -> None:
    """Stack the ys of step t and make the new carries the carries. `sub`: the body's
    generator (where its values are). Every copy reads before any pointer swap."""
    ptr = ptr or Pointers(ctx)
    stack_ys(ctx, lb, sub, t, ptr)
    take_new_carries(ctx, lb, sub, t, ptr)


def _body_value(ctx, lb: LoopBuffers, sub, t: ir.Value, ptr: Pointers):
    """out -> where a body output is at step t."""
    body, nc = lb.body, lb.n_carry
    x_index = {p.uid: j for j, p in enumerate(body.inputs[nc:nc + lb.n_xs])}

    def value(out) -> ir.Value:
        if out.uid in x_index:  # an x slice passed through
            j = x_index[out.uid]
            return _at(ctx, ctx.in_ptr(nc + j), t, lb.x_sizes[j])
        return ptr(sub.layout.slot_of[out.uid], sub.value_name(out))

    return value


def stack_ys(ctx, lb: LoopBuffers, sub, t: ir.Value, ptr: Pointers | None = None,
             copy=host_copy) -> None:
    """y outputs -> ys_j[t] (those not computed in place), and the new carries that are
    another carry entry -> their staging slots. (On the GPU every copy of this phase must end
    before `take_new_carries` starts: a kernel boundary when anything is staged.)"""
    ptr = ptr or Pointers(ctx)
    body, nc = lb.body, lb.n_carry
    value = _body_value(ctx, lb, sub, t, ptr)
    for j, y in enumerate(lb.y_slots):
        if y is not None and j not in lb.ys_in_place:
            copy(ctx, _at(ctx, ctx.slot_ptr(y, f"ys{j}"), t, lb.y_sizes[j]),
                 value(body.outputs[nc + j]), ctx.dim(lb.y_sizes[j]))
    for i, s in lb.staged.items():
        copy(ctx, ctx.slot_ptr(s, f"stage{i}"), value(body.outputs[i]), ctx.dim(lb.c_sizes[i]))


def take_new_carries(ctx, lb: LoopBuffers, sub, t: ir.Value, ptr: Pointers | None = None,
                     copy=host_copy) -> None:
    """New carries -> carry slots: copied (from the staging slot when staged), or (host) the
    pointers swapped, after every copy."""
    b, body, nc = ctx.b, lb.body, lb.n_carry
    ptr = ptr or Pointers(ctx)
    value = _body_value(ctx, lb, sub, t, ptr)
    carry_index = {p.uid: i for i, p in enumerate(body.inputs[:nc])}
    for i, out in enumerate(body.outputs[:nc]):
        if carry_index.get(out.uid) == i or i in lb.swapped or i in lb.updated_in_place:
            continue  # the identity; a swap, below; updated where it is
        src = ctx.slot_ptr(lb.staged[i], f"stage{i}") if i in lb.staged else value(out)
        copy(ctx, ptr(lb.carry_slots[i], f"carry{i}"), src, ctx.dim(lb.c_sizes[i]))
    for i, slot in lb.swapped.items():
        carry, new = ptr.address(lb.carry_slots[i]), ptr.address(slot)
        old = b.load(carry, typ=PTR, name=f"carry{i}.old")
        b.store(b.load(new, typ=PTR, name=f"carry{i}.new"), carry)
        b.store(old, new)
