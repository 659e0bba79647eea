"""The `hoist` pass: loop-invariant code motion out of `gc.scan` bodies, and the input
projection computed for all steps at once (what cuDNN does for an RNN).

Why: a body runs T times. Work in it that does not change from step to step (a function of
the captured tensors alone: ``transpose(W)``, ``sigmoid(gate_bias)``) is done T times for
nothing; and a product of the step's x slice with a captured weight (``x_t @ W_x``, the
input projection of every RNN cell) is T small matrix products that one big product over
all steps replaces: ``reshape(reshape(xs, (T*N, D)) @ W_x, (T, N, H))``, fed to the loop as
a new xs entry whose slice the body reads. In the gradient's reverse loop (an ordinary scan
built by scan_grad) the forward recomputation ``x_t @ W_x`` qualifies the same way, and
lands on the very node the forward loop hoisted (the outer graph is hash-consed), so the
projection is computed once for both loops.

Each body node gets a class:

* INV (invariant): a constant, a captured placeholder, or a node whose inputs are all INV;
* STEP: an x slice, or a node computable for every step at once from x slices and INV
  values (elementwise ops, casts, reshape, transpose, broadcast_to, slice, sum/max/min
  and matmul: see `Split._stacked`);
* VAR: everything else: anything that reads a carry, and every *pinned* node (random draws,
  ops marked ``random``/``stateful``, ops that check ids (``checks_ids``: take, one_hot,
  scatter_add), the trigger of a default update, a nested scan whose body holds such a
  node) and what depends on it. A random draw is never hoisted: it must
  give fresh numbers at every step.

Moved out of the body: the INV nodes the remaining body reads (or outputs) whose cone holds
a captured placeholder (a cone of constants alone stays, for `fold`), each then read through
a new captured placeholder; and the STEP products (every matmul, and a bias added to one,
with what feeds them from the x slices) that the remaining body reads or outputs, each
computed outside for all steps at once and read through a new x placeholder. The elementwise
work after a product stays in the body, where it fuses with the work on the carry and needs
no (T, ...) buffer; a feeder the body also reads is recomputed there. Captured and xs inputs
the body no longer reads leave the loop. Nested loops are done inside out: an inner body's
invariants land in the outer body, where they may be invariant again and move further out.

Where it runs: right after `sink` (passes/sink.py: accumulation carries leave first), before
`loop_bodies`. The raw body shows the products plainly (fusion would hide the elementwise
parts in `elemwise` nodes), the body is then
optimized and memory-planned once, as it will run (hoisting after `loop_bodies` would have
to plan it again), and the hoisted nodes land in the outer graph before its own passes, so
they are folded, fused and CSE'd with it (the forward and reverse loops share a projection).
Bodies already optimized (``meta["optimized"]``: a graph optimized twice) are left alone.

Numerics: a hoisted node computes what the body computed, element for element; the stacked
product computes each row as the per-step product does (a NaN or inf in ``xs[t]`` reaches
the rows of step t only, as before). A BLAS may sum a longer product in another order, so
float results agree to rounding, not always bit for bit.
"""

from __future__ import annotations

from collections import Counter

from graphc.errors import GraphError
from graphc.ir.graph import Graph, topological
from graphc.ir.node import Node
from graphc.ir.shapes import prod
from graphc.ir.tensor import Tensor, apply

from .rewrite import Match, RuleSet, rebuild, remap_program, rewrite_loop_bodies

INV, STEP, VAR = "invariant", "step", "variant"

# ops computable for all steps at once by `_stacked` (besides elementwise ops)
_BATCHED = {"cast", "reshape", "transpose", "broadcast_to", "slice", "sum", "max", "min",
            "matmul"}


def pinned(node: Node, body: Graph) -> bool:
    """Whether `node` must stay inside the loop whatever its inputs: a random draw (it gives
    fresh numbers per step), any op marked random or stateful, an op that checks ids or
    labels (``checks_ids``: outside the loop a bad id would stop a loop of 0 steps, which
    never ran it), the trigger of a default update, and a nested scan whose body holds such
    a node."""
    op = node.op
    if op.kind == "random" or op.extra.get("random") or op.extra.get("stateful") \
            or op.extra.get("checks_ids"):
        return True
    if node in body.default_updates:
        return True
    if op.name == "scan":
        inner = node.attrs["body"]
        return bool(inner.default_updates) or any(pinned(n, inner) for n in inner.nodes)
    return False


def classify(body: Graph, n_carry: int, n_xs: int) -> dict[int, str]:
    """uid -> INV, STEP or VAR for every node of the body (see the module docstring)."""
    kind: dict[int, str] = {}
    for i, ph in enumerate(body.inputs):
        kind[ph.uid] = VAR if i < n_carry else STEP if i < n_carry + n_xs else INV
    for n in topological(body.outputs + body.inputs):
        if n.uid in kind:
            continue
        if n.op.name == "constant":
            kind[n.uid] = INV
        elif not n.inputs or pinned(n, body):
            kind[n.uid] = VAR
        else:
            ks = {kind[i.uid] for i in n.inputs}
            if ks == {INV}:
                kind[n.uid] = INV
            elif VAR not in ks and _batchable(n):
                kind[n.uid] = STEP
            else:
                kind[n.uid] = VAR
    return kind


def _batchable(n: Node) -> bool:
    if n.op.is_elementwise:
        return n.op.name != "elemwise"  # a fused group (an optimized body): left alone
    if n.op.name in ("sum", "max", "min"):
        return set(n.attrs) == {"axes", "keepdims"}
    return n.op.name in _BATCHED


def _stacked_set(nodes: list[Node], kind: dict[int, str], users: dict[int, list[Node]]
                 ) -> tuple[set[int], set[int]]:
    """The STEP nodes worth computing for all steps at once: every matmul (one big product
    instead of T small ones), a bias added to one (``x_t @ W + b``: an add or sub of a
    stacked value and invariants, no bigger than it), and what feeds them from the x slices
    (reshapes, transposes, ...). The elementwise work after the products stays in the body,
    where it fuses with the work on the carry and needs no (T, ...) buffer of its own.
    Returns (all of them, the products and biased products)."""
    out: set[int] = set()
    for n in nodes:
        if kind[n.uid] != STEP:
            continue
        if n.op.name == "matmul":
            out.add(n.uid)
        elif n.op.name in ("add", "sub"):
            step = [i for i in n.inputs if kind[i.uid] == STEP]
            if len(step) == 1 and step[0].uid in out and tuple(step[0].shape) == tuple(
                    n.shape):
                out.add(n.uid)
    products = set(out)
    for n in reversed(nodes):  # the feeders: users come after their inputs
        if kind[n.uid] == STEP and n.uid not in out and n.inputs and any(
                u.uid in out for u in users[n.uid]):
            out.add(n.uid)
    return out, products


def _lift(t: Tensor, rank: int) -> Tensor:
    """A stacked value (T, *s) as (T, 1, ..., 1, *s) with `rank` axes after T, so that it
    broadcasts against the other operands as the per-step value did."""
    from graphc.ops.shape_ops import reshape

    s = tuple(t.shape[1:])
    if len(s) >= rank:
        return t
    return reshape(t, (t.shape[0], *([1] * (rank - len(s))), *s))


class Split:
    """One loop's hoisting: which nodes leave the body, their outer values, the new body."""

    def __init__(self, body: Graph, n_carry: int, n_xs: int) -> None:
        self.body, self.nc, self.nx = body, n_carry, n_xs
        self.kind = classify(body, n_carry, n_xs)
        nodes = topological(body.outputs + body.inputs)
        users: dict[int, list[Node]] = {n.uid: [] for n in nodes}
        for n in nodes:
            for i in dict.fromkeys(n.inputs):
                users[i.uid].append(n)
        captured = {ph.uid for ph in body.inputs[n_carry + n_xs:]}
        has_cap: dict[int, bool] = {}
        for n in nodes:
            has_cap[n.uid] = n.uid in captured or any(has_cap[i.uid] for i in n.inputs)
        outputs = {o.uid for o in body.outputs}
        self.step_out, products = _stacked_set(nodes, self.kind, users)
        # read through new x placeholders: the products a node left in the body reads (a
        # feeder such a node also reads is recomputed in the body, not stored for all T)
        self.step_roots = [n for n in nodes if n.uid in products and (
            n.uid in outputs or any(u.uid not in self.step_out for u in users[n.uid]))]
        stop = {n.uid for n in self.step_roots}
        stays: dict[int, Node] = {}  # the body's STEP and VAR nodes after hoisting
        stack = list(body.outputs)
        while stack:
            n = stack.pop()
            if n.uid not in stays and n.uid not in stop and self.kind[n.uid] != INV:
                stays[n.uid] = n
                stack.extend(n.inputs)
        read = outputs | {i.uid for n in stays.values() for i in n.inputs}
        self.inv_roots = [n for n in nodes if self.kind[n.uid] == INV and n.inputs
                          and has_cap[n.uid] and n.uid in read]

    @property
    def any(self) -> bool:
        return bool(self.step_roots or self.inv_roots)

    def apply(self, node: Node, inputs: list[Tensor], graph: Graph
              ) -> tuple[Tensor, Counter, int]:
        """The new scan node (in `graph`, whose tensors `inputs` are the loop's inputs),
        the hoisted body nodes by op, and the number of stacked input projections."""
        from graphc.ops.scan import SCAN
        from graphc.ops.sources import placeholder

        body, nc, nx = self.body, self.nc, self.nx
        caps = inputs[nc + nx:]
        xs = inputs[nc:nc + nx]
        cap_of = {ph.uid: caps[k] for k, ph in enumerate(body.inputs[nc + nx:])}
        x_of = {ph.uid: xs[j] for j, ph in enumerate(body.inputs[nc:nc + nx])}
        inv: dict[int, Tensor] = {}
        stacked: dict[int, Tensor] = {}
        self.projections = 0

        def outer_inv(n: Node) -> Tensor:
            if n.uid not in inv:
                if n.uid in cap_of:
                    inv[n.uid] = cap_of[n.uid]
                elif n.op.name == "constant":
                    inv[n.uid] = Tensor(graph.adopt(n), graph)
                else:
                    args = [outer_inv(i).node for i in n.inputs]
                    inv[n.uid] = Tensor(graph.make_node(n.op, args, n.attrs, loc=n.loc,
                                                        scope=n.scope), graph)
            return inv[n.uid]

        def outer_step(n: Node) -> Tensor:
            if n.uid not in stacked:
                if n.uid in x_of:
                    stacked[n.uid] = x_of[n.uid]
                else:
                    args = [outer_step(i) if self.kind[i.uid] == STEP else outer_inv(i)
                            for i in n.inputs]
                    with graph.building_for(n):
                        stacked[n.uid] = self._stacked(n, args)
            return stacked[n.uid]

        new = Graph(body.name)
        env: dict[int, Node] = {}
        new_x, new_caps, x_paths, cap_paths = [], [], [], []
        seen_x: dict[int, Node] = {}
        seen_cap: dict[int, Node] = {}
        with new:
            for n in self.step_roots:
                t = outer_step(n)
                if t.node.uid not in seen_x:
                    seen_x[t.node.uid] = placeholder(f"x hoisted {n.op.name}", n.shape,
                                                     n.dtype).node
                    new_x.append(t)
                    x_paths.append(f"hoisted {n.op.name} (stacked over the steps)")
                env[n.uid] = seen_x[t.node.uid]
            for n in self.inv_roots:
                t = outer_inv(n)
                if t.node.uid not in seen_cap:
                    seen_cap[t.node.uid] = placeholder(f"captured hoisted {n.op.name}",
                                                       n.shape, n.dtype).node
                    new_caps.append(t)
                    cap_paths.append(f"captured hoisted {n.op.name}")
                env[n.uid] = seen_cap[t.node.uid]
        reach: dict[int, Node] = {}  # the nodes that stay: reached without crossing a hoist
        stack = list(body.outputs)
        while stack:
            n = stack.pop()
            if n.uid not in reach and n.uid not in env:
                reach[n.uid] = n
                stack.extend(n.inputs)
        for uid in sorted(reach):  # creation order is a topological order
            n = reach[uid]
            env[n.uid] = new.adopt(n) if not n.inputs else new.make_node(
                n.op, [env[i.uid] for i in n.inputs], n.attrs, loc=n.loc, scope=n.scope)
        outs = [env[o.uid] for o in body.outputs]
        used = {n.uid for n in topological(outs)}
        paths = body.meta.get("paths") or [ph.name for ph in body.inputs]
        keep_x = [j for j in range(nx) if body.inputs[nc + j].uid in used]
        keep_k = [k for k in range(len(caps)) if body.inputs[nc + nx + k].uid in used]
        ins = list(body.inputs[:nc])
        ins += [body.inputs[nc + j] for j in keep_x] + list(seen_x.values())
        ins += [body.inputs[nc + nx + k] for k in keep_k] + list(seen_cap.values())
        for ph in ins:
            new.adopt(ph)
        new.inputs = ins
        new.outputs = outs
        new.set_nodes(topological(outs + ins))
        new.meta = {"paths": [*paths[:nc], *[paths[nc + j] for j in keep_x], *x_paths,
                              *[paths[nc + nx + k] for k in keep_k], *cap_paths],
                    "hoisted": True}
        loop_in = [*inputs[:nc], *[xs[j] for j in keep_x], *new_x,
                   *[caps[k] for k in keep_k], *new_caps]
        moved = Counter(n.op.name for n in body.nodes if n.inputs and n.uid not in reach
                        and (n.uid in inv or n.uid in stacked))
        attrs = dict(node.attrs, body=new, n_xs=len(keep_x) + len(new_x))
        with graph.building_for(node):
            loop = apply(SCAN, loop_in, **attrs)
        return loop, moved, self.projections

    def _stacked(self, n: Node, args: list[Tensor]) -> Tensor:
        """Node `n` computed for every step at once: `args` are its inputs, stacked ones
        (shape (T, *s)) for STEP inputs, plain ones for INV inputs."""
        from graphc.ops.linalg import matmul_t
        from graphc.ops.shape_ops import reshape, transpose

        op, a = n.op, n.attrs
        step = [self.kind[i.uid] == STEP for i in n.inputs]
        T = next(t.shape[0] for t, s in zip(args, step) if s)
        rank = n.ndim
        if op.is_elementwise or op.name == "cast":
            lifted = [_lift(t, rank) if s else t for t, s in zip(args, step)]
            return apply(op, lifted, **dict(a))
        (x, *_) = args
        if op.name == "reshape":
            return reshape(x, (T, *a["shape"]))
        if op.name == "transpose":
            return transpose(x, (0, *[ax + 1 for ax in a["axes"]]))
        if op.name == "broadcast_to":
            return apply(op, [_lift(x, rank)], shape=(T, *a["shape"]))
        if op.name == "slice":
            return apply(op, [x], starts=(0, *a["starts"]), steps=(1, *a["steps"]),
                         sizes=(T, *a["sizes"]))
        if op.name in ("sum", "max", "min"):
            return apply(op, [x], axes=tuple(ax + 1 for ax in a["axes"]),
                         keepdims=a["keepdims"])
        if op.name == "matmul":
            left, right = args
            ta, tb = a["ta"], a["tb"]
            if step == [True, False] and not ta and right.ndim == 2:
                # the input projection: one product over all rows of all steps
                self.projections += 1
                rows = prod(left.shape[:-1])
                flat = matmul_t(reshape(left, (rows, left.shape[-1])), right, tb=tb)
                return reshape(flat, (T, *n.shape))
            lifted = [_lift(t, rank) if s else t for t, s in zip(args, step)]
            return matmul_t(*lifted, ta=ta, tb=tb)
        raise GraphError(f"internal: hoist cannot stack {op.name}")  # _batchable lists these


def hoist_body(body: Graph, n_carry: int, n_xs: int) -> Split | None:
    """The split of a loop body into what stays and what moves out (None: nothing moves)."""
    split = Split(body, n_carry, n_xs)
    return split if split.any else None


def hoist_program(program: Graph) -> tuple[Graph, dict]:
    """Hoist loop-invariant work (and stacked input projections) out of every scan body,
    innermost loops first. Statistics: ``hoisted`` (body nodes moved out, by op; a node
    moved out of two nested loops counts twice), ``input_projections`` (x-slice products
    done as one product over all steps), ``loops`` (loops changed)."""
    from graphc.ops.scan import SCAN

    moved: Counter = Counter()
    totals = {"input_projections": 0, "loops": 0}
    rules = RuleSet("hoist")

    def inner(body: Graph) -> Graph:
        """The body with its own loops' invariants hoisted into it."""
        return rewrite_loop_bodies(body, rules)

    @rules.rule("scan")
    def hoist_loop(m: Match):
        """scan(body) -> scan(body without its invariants), the invariants computed before"""
        body = m.attrs["body"]
        if body.meta.get("optimized") or body.meta.get("hoisted"):
            return None
        body2 = inner(body)
        split = hoist_body(body2, m.attrs["n_carry"], m.attrs["n_xs"])
        if split is None:
            if body2 is body:
                return None
            body2.meta["hoisted"] = True
            return apply(SCAN, m.inputs, **dict(m.attrs, body=body2))
        loop, by_op, projections = split.apply(m.node, m.inputs, m.graph)
        moved.update(by_op)
        totals["input_projections"] += projections
        totals["loops"] += 1
        return loop

    target, mapping, fired = rebuild(program, rules)
    out = remap_program(program, target, mapping) if fired else program
    hoisted = dict(sorted(moved.items()))
    stat_fired = {f"hoist_{op}": c for op, c in hoisted.items()}
    if totals["input_projections"]:
        stat_fired["input_projection"] = totals["input_projections"]
    return out, {"fired": stat_fired, "hoisted": hoisted, **totals}


__all__ = ["INV", "STEP", "VAR", "Split", "classify", "hoist_body", "hoist_program", "pinned"]
