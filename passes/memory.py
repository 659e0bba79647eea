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
    parameter's value, ``fn(W.value)``). An output is also copied when it may share memory
    with an earlier output (the same value twice, or a view of another output: each output
    is the caller's own array, as the native backends return it). Everything else is a fresh
    array the step made.
    """
    roots = value_roots(program, views)
    written = {("parameter", p.attrs["storage"].uid) for p, _ in program.updates}
    written |= {("input", k) for k in range(len(program.inputs))}
    made: dict[int, frozenset] = {}  # the values (node uids) whose memory a node's may be
    for n in program.nodes:
        shared = [made[n.inputs[i].uid] for i in views(n)] if n.inputs else []
        made[n.uid] = frozenset().union(*shared) if shared else frozenset({n.uid})
    outputs, earlier = [], set()
    for n in program.outputs:
        outputs.append(bool(roots[n.uid]) or not made[n.uid].isdisjoint(earlier))
        earlier |= made[n.uid]
    news = [bool(roots[v.uid] & written) for _, v in program.updates]
    return outputs, news


def updates_in_place(program: Graph, plan: MemoryPlan, can_fail,
                     computed_here=lambda node: True) -> dict[int, int]:
    """The new parameter values a native step can compute straight into their parameter's
    memory, so that no copy applies them at the end: value uid -> the parameter node's uid.

    A step applies its updates only once nothing can fail any more, and only after every
    read of the old values. Writing a value into its parameter keeps both rules when:

    * no kernel that can fail (`can_fail(node)`: an id out of range...) runs at or after
      the value's own: a failed call still leaves every parameter as it was;
    * nothing after the value reads the parameter (a node of the same storage), and the
      value's own kernel reads it only at the point it writes: an elementwise node whose
      inputs of that storage have the value's shape;
    * the value is its own kernel's result: not a leaf, not an alias of another buffer, not
      a value the backend may leave where another kernel put it (`computed_here(node)`
      false: a loop's result, read in the loop's own buffer), not aliased by a later
      reshape, not an output (those are read from the arena), the new value of this one
      parameter only; and the parameter is not itself the new value of another ({a: b,
      b: a} swaps through a snapshot).
    """
    facts = _Schedule(program, plan, can_fail)
    news = [v.uid for _, v in program.updates]
    sources = {_storage(v) for _, v in program.updates if _storage(v) is not None}
    targets = [_storage(p) for p, _ in program.updates]
    chosen: dict[int, int] = {}
    for param, value in program.updates:
        s = _storage(param)
        k = facts.position.get(value.uid)
        if (k is None or value.op.name in LEAVES or value.uid in plan.aliases
                or not computed_here(value) or value.uid in facts.aliased
                or value.uid in facts.outputs or news.count(value.uid) > 1
                or s in sources or targets.count(s) > 1 or k <= facts.last_failure
                or max(facts.reads.get(s, [-1])) > k
                or value.shape != param.shape or value.dtype != param.dtype):
            continue
        reads = [i for i in value.inputs if _storage(i) == s]
        if reads and not (value.op.is_elementwise and all(i.shape == value.shape
                                                          for i in reads)):
            continue
        chosen[value.uid] = param.uid
    return chosen


def products_into_updates(program: Graph, plan: MemoryPlan, can_fail, chosen: dict[int, int],
                          accumulates_scaled) -> dict[int, tuple[int, float]]:
    """Among the updates written in place (`chosen`, from updates_in_place), those of the
    form ``p + c * (A @ B)`` (plain SGD on a weight: ``W - lr * X.T @ G``) whose product the
    backend can accumulate straight into the parameter: matmul uid -> (parameter uid, c).

    The gemm then computes ``p + c * (A @ B)`` into p itself (alpha c, beta 1): the gradient
    is never stored, and the elementwise pass over the weight and its gradient disappears.
    The values are the update's within rounding (a BLAS gemm rounds c * sum + p once, with a
    fused multiply-add, and adds c times each partial sum where it blocks a long sum; the
    llvm backend's register tiles round exactly as the separate update). Near float
    overflow they can differ: a gradient whose sum overflows to inf while c times each
    block's share does not leaves p finite here and makes it inf in the separate update.
    The product must be a plain 2-d one, read only by this update, reading neither operand
    from the parameter, whose sizes the backend accumulates scaled whatever the sizes known
    only at run time (`accumulates_scaled(m, n, k, tb, itemsize, exact)`, the backend's rule;
    `exact`: c is one number in the expression, or one times -1, so that the separate update
    rounds c * g once too); and the rules of
    updates_in_place must hold at the product's position: nothing that can fail and no read
    of the parameter at or after it, but the update itself.
    """
    facts = _Schedule(program, plan, can_fail)
    consumers: dict[int, list[int]] = {}
    for n in program.nodes:
        for i in n.inputs:
            consumers.setdefault(i.uid, []).append(n.uid)
    found: dict[int, tuple[int, float]] = {}
    for param, value in program.updates:
        if chosen.get(value.uid) != param.uid or value.op.name != "elemwise":
            continue
        storage = _storage(param)
        terms = _scaled_sum(value.attrs["expr"], value.inputs, storage)
        if terms is None or terms[0].op.name != "matmul":
            continue
        product, scale, exact = terms
        k, k_value = facts.position[product.uid], facts.position[value.uid]
        a, b = product.inputs
        m, n = product.shape if len(product.shape) == 2 else (None, None)
        # (a rate that rounds to 0 in the dtype: BLAS skips a product scaled by 0, and with it
        # the NaN that 0 * inf gives in the separate update)
        if (m is None or len(a.shape) != 2 or len(b.shape) != 2
                or product.dtype.name not in ("float32", "float64")
                or product.dtype != param.dtype or product.dtype.type(scale) == 0
                or consumers.get(product.uid) != [value.uid]
                or product.uid in facts.outputs or product.uid in facts.aliased
                or k <= facts.last_failure
                or _storage(a) == storage or _storage(b) == storage
                or any(k <= p != k_value for p in facts.reads.get(storage, ()))
                or not accumulates_scaled(m, n,
                                          a.shape[0] if product.attrs["ta"] else a.shape[1],
                                          product.attrs["tb"], product.dtype.itemsize,
                                          exact)):
            continue
        found[product.uid] = (param.uid, scale)
    return found


def _storage(node: Node):
    """The storage a parameter node names (two nodes of one storage are one memory); None
    for any other node."""
    return node.attrs["storage"].uid if node.op.name == "parameter" else None


class _Schedule:
    """What updates_in_place and products_into_updates read off the schedule: each node's
    position, the last kernel that can fail, the positions reading each parameter storage,
    the outputs, and the values a reshape aliases."""

    def __init__(self, program: Graph, plan: MemoryPlan, can_fail) -> None:
        nodes = program.nodes
        self.position = {n.uid: k for k, n in enumerate(nodes)}
        self.last_failure = max((k for k, n in enumerate(nodes)
                                 if n.op.name not in LEAVES and can_fail(n)), default=-1)
        self.reads: dict = {}  # storage -> positions of the nodes reading one of its nodes
        for k, n in enumerate(nodes):
            for storage in (_storage(i) for i in n.inputs):
                if storage is not None:
                    self.reads.setdefault(storage, []).append(k)
        self.outputs = {n.uid for n in program.outputs}
        self.aliased = {n.inputs[0].uid for n in nodes if n.uid in plan.aliases}


def _scaled_sum(expr, inputs, storage):
    """(the product input, c) when `expr`, over inputs x0..x{n-1}, is ``x_p + c * x_m``
    with x_p a parameter of `storage` (and no other input of it) and c a real number with
    |c| <= 1 (a learning rate); else None. (A gemm that blocks its sum adds c times each
    block's partial sum into p: with |c| > 1 a block's share could overflow to inf where
    the whole sum, times c, is finite.)"""
    if not isinstance(expr, sympy.Add) or len(expr.args) != 2:
        return None

    def input_of(sym):
        if isinstance(sym, sympy.Symbol) and sym.name.startswith("x") and sym.name[1:].isdigit():
            index = int(sym.name[1:])
            return inputs[index] if index < len(inputs) else None
        return None

    own = [i for i in inputs if _storage(i) == storage]
    for first, second in (expr.args, expr.args[::-1]):
        param = input_of(first)
        if param is None or len(own) != 1 or param is not own[0]:
            continue
        factors = _factors(second)
        numbers = [f for f in factors if f.is_Number]
        symbols = [f for f in factors if not f.is_Number]
        product = input_of(symbols[0]) if len(symbols) == 1 else None
        scale = sympy.Mul(*numbers)
        if product is None or product.op.name == "parameter" or product.shape != param.shape \
                or not (scale.is_real and abs(scale) <= 1):
            continue
        # one rounding in the separate update too: at most one factor other than -1
        # (0.1 * (0.3 * g) rounds 0.3 * g first; c * g with c = 0.03 would not)
        exact = len([f for f in numbers if f != -1]) <= 1
        return product, float(scale), exact
    return None


def _factors(expr) -> list:
    """The factors of a product, nested products flattened (fused expressions are built
    unevaluated: -(0.05 x0) is Mul(-1, Mul(0.05, x0)))."""
    if isinstance(expr, sympy.Mul):
        return [f for arg in expr.args for f in _factors(arg)]
    return [expr]
