"""Memory planning: liveness over the schedule, buffer reuse, in-place ops, peak bytes.

The schedule is the program's node order. A node's value is live from the step that computes
it to its last use (outputs and new parameter values live to the end: the caller receives
them, and updates are applied only after everything is computed). Walking the schedule:

* a ``reshape`` aliases its input's buffer (no copy, the lifetime is extended);
* an elementwise node whose input dies at this step, with the same size and dtype, writes
  in place into that input's buffer;
* otherwise the node takes a free buffer of exactly its size and dtype, or a new one.

Leaves (placeholders, parameters, constants) live outside the plan. Sizes may be symbolic
(sympy expressions of the batch size N...); `MemoryPlan.evaluate` gives bytes for a binding.
The plan is stored in ``graph.meta["memory"]``; native backends allocate one arena from it,
and the NumPy backend uses the liveness to free dead temporaries early.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from graphc.ir.graph import Graph
from graphc.ir.node import Node
from graphc.ir.shapes import evaluate_dim, prod

LEAVES = ("placeholder", "parameter", "constant")
ALIASES = ("reshape",)


def nbytes(node: Node):
    """Bytes of a node's value: an int, or a sympy expression of symbolic dims."""
    return prod(node.shape) * node.dtype.itemsize if node.shape else node.dtype.itemsize


@dataclass
class MemoryPlan:
    buffer_of: dict[int, int] = field(default_factory=dict)  # node uid -> buffer id
    buffers: list = field(default_factory=list)  # buffer id -> bytes (int or sympy expr)
    last_use: dict[int, int] = field(default_factory=dict)  # node uid -> schedule index
    dies_after: dict[int, list[int]] = field(default_factory=dict)  # index -> uids dead after
    in_place: set[int] = field(default_factory=set)  # uids computed into an input's buffer
    aliases: set[int] = field(default_factory=set)  # uids sharing their input's buffer
    deltas: list = field(default_factory=list)  # per step: (allocated, freed) buffer ids

    @property
    def arena_bytes(self):
        """The total of all buffers: what a static allocator reserves."""
        total = sum(self.buffers) if self.buffers else 0
        return total if isinstance(total, int) else sympy.expand(total)

    def evaluate(self, binding: dict) -> dict:
        """Concrete figures for bound symbolic dims: arena and peak live bytes."""
        sizes = [b if isinstance(b, int) else evaluate_dim(b, binding) for b in self.buffers]
        live = peak = 0
        for allocated, freed in self.deltas:
            live += sum(sizes[b] for b in allocated)
            peak = max(peak, live)
            live -= sum(sizes[b] for b in freed)
        return {"arena_bytes": sum(sizes), "peak_live_bytes": peak, "buffers": len(sizes)}


def plan_memory(program: Graph) -> MemoryPlan:
    nodes = program.nodes
    index = {n.uid: i for i, n in enumerate(nodes)}
    end = len(nodes)
    plan = MemoryPlan()
    pinned = {n.uid for n in program.roots()}
    for n in nodes:
        plan.last_use.setdefault(n.uid, index[n.uid])
        for i in n.inputs:
            plan.last_use[i.uid] = max(plan.last_use.get(i.uid, 0), index[n.uid])
    for uid in pinned:
        plan.last_use[uid] = end
    # aliases keep their source alive as long as they are
    for n in reversed(nodes):
        if n.op.name in ALIASES and n.inputs[0].op.name not in LEAVES:
            src = n.inputs[0].uid
            plan.last_use[src] = max(plan.last_use[src], plan.last_use[n.uid])

    expiring: dict[int, list[int]] = {}  # step -> values last used there
    for uid, last in plan.last_use.items():
        expiring.setdefault(last, []).append(uid)
    free: dict[object, list[int]] = {}  # canonical size -> free buffer ids
    keys: list = []  # buffer id -> canonical size
    owner_count: dict[int, int] = {}  # buffer id -> how many live values use it
    for step, n in enumerate(nodes):
        if n.op.name in LEAVES:
            plan.deltas.append(((), ()))
            continue
        size = nbytes(n)
        key = size if isinstance(size, int) else sympy.expand(size)
        buf = None
        allocated: tuple = ()
        if n.op.name in ALIASES and n.inputs[0].uid in plan.buffer_of:
            buf = plan.buffer_of[n.inputs[0].uid]
            plan.aliases.add(n.uid)
        elif n.op.is_elementwise:
            for i in n.inputs:
                b = plan.buffer_of.get(i.uid)
                if b is not None and plan.last_use[i.uid] == step and owner_count[b] == 1 and \
                        i.dtype == n.dtype and keys[b] == key:
                    buf = b
                    plan.in_place.add(n.uid)
                    break
        if buf is None:
            if free.get(key):
                buf = free[key].pop()
            else:
                buf = len(plan.buffers)
                plan.buffers.append(size)
                keys.append(key)
            allocated = (buf,)
        plan.buffer_of[n.uid] = buf
        owner_count[buf] = owner_count.get(buf, 0) + 1
        dead = [u for u in expiring.get(step, ()) if u in plan.buffer_of]
        plan.dies_after[step] = dead
        freed = []
        for uid in dead:
            b = plan.buffer_of[uid]
            owner_count[b] -= 1
            if owner_count[b] == 0:
                free.setdefault(keys[b], []).append(b)
                freed.append(b)
        plan.deltas.append((allocated, tuple(freed)))
    return plan


def memory_program(program: Graph) -> tuple[Graph, dict]:
    """The planning pass: attach the plan to the graph (the nodes are unchanged)."""
    plan = plan_memory(program)
    program.meta["memory"] = plan
    return program, {"buffers": len(plan.buffers), "in_place": len(plan.in_place),
                     "aliases": len(plan.aliases), "arena_bytes": plan.arena_bytes}


def value_roots(program: Graph, views) -> dict[int, frozenset]:
    """For every node of the schedule, the leaves (placeholders, parameters, constants) whose
    memory its value may share, following the view-producing lowerings back to their roots.

    `views(node)` is the backend's declaration: the positions of the inputs whose memory the
    node's value may share (a view, or the input itself). A parameter is named by its storage
    (``("parameter", storage uid)``: two nodes of one storage are one memory), a placeholder
    by its position among the inputs, a constant by its node uid. Computed once at compile
    time, so that a call checks each output and new value against a precomputed answer
    instead of every parameter (O(values), not O(values x parameters)).
    """
    inputs = {n.uid: k for k, n in enumerate(program.inputs)}
    roots: dict[int, frozenset] = {}
    empty: frozenset = frozenset()
    for n in program.nodes:
        op = n.op.name
        if op == "parameter":
            roots[n.uid] = frozenset({("parameter", n.attrs["storage"].uid)})
        elif op == "placeholder":
            roots[n.uid] = frozenset({("input", inputs.get(n.uid, n.uid))})
        elif op == "constant":
            roots[n.uid] = frozenset({("constant", n.uid)})
        else:
            shared = [roots[n.inputs[i].uid] for i in views(n)]
            roots[n.uid] = frozenset().union(*shared) if shared else empty
    return roots


def leaving_copies(program: Graph, views) -> tuple[list[bool], list[bool]]:
    """Which outputs, and which new parameter values, a call must copy, from the views the
    backend declares per op (`views`, as for `value_roots`) followed back to the leaves.

    An output is copied when it may share memory with any leaf: a parameter (the caller must
    not hold a window onto a parameter that later steps overwrite), an input (the caller's
    own array) or a constant (the function's own). A new value is copied when it may share
    memory with a parameter that this call writes ({a: b, b: a} must swap: every new value
    is taken before any parameter is written) or with an input (the caller may feed a
    parameter's value, ``fn(W.value)``). Everything else is a fresh array the step made.
    """
    roots = value_roots(program, views)
    written = {("parameter", p.attrs["storage"].uid) for p, _ in program.updates}
    written |= {("input", k) for k in range(len(program.inputs))}
    outputs = [bool(roots[n.uid]) for n in program.outputs]
    news = [bool(roots[v.uid] & written) for _, v in program.updates]
    return outputs, news
