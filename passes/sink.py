"""The `sink` pass: accumulations leave `gc.scan` bodies, as one product over all steps after
the loop (what cuDNN does for an RNN's weight gradients). The dual of `hoist`.

Why: the gradient's reverse loop carries the gradient of every captured weight and adds one
small product per step, ``dW <- dW + x_t^T @ g_t`` (and ``dU <- dU + h_t^T @ g_t``, ``db <- db
+ sum(g_t, axis=0)``). T products of (K, N) by (N, H) are one product of (K, T*N) by (T*N,
H): the loop emits the per-step operand g_t as a y (x_t and h_t are already xs entries of the
reverse loop: nothing to emit), and after the loop ``dW = dW_0 + reshape(xs, (T*N, K))^T @
reshape(gs, (T*N, H))``, one BLAS call instead of T; the carry disappears (no per-step add,
no (K, H) value carried around the loop, no history).

A carry entry c qualifies when, in the body,

* its new value is ``((c + s_1) + s_2) + ...`` (each ``add`` in either order, of the carry's
  shape: no broadcasting), every value on that chain read once, by the next add, and the last
  one only as the carry's new value: no other body node, no y and no other carry reads c or
  a partial sum (so no summand can depend on c);
* each ``s_k`` is a sum (``add`` nodes) of *terms*: ``matmul(A_t, B_t)`` of 2-d per-step
  values (any flags; transposes of an operand are peeled into the flags, so ``x_t.T @ g_t``
  reads the x slice itself), ``sum(G_t, axes)`` of a per-step value (optionally reshaped, as
  autodiff writes a bias gradient ``reshape(sum(g, 0, keepdims=True), (H,))``), or an x slice
  (summed over the xs entry: nothing to emit); "per-step" means not loop-invariant
  (`hoist.classify`); a term with an invariant operand (``c + W``, ``c + W @ g_t``) or any other
  term (``c + 0.5 * g_t``, ``c * 0.9 + g_t``) leaves the carry alone;
* it is a float (the summation order changes: results agree to rounding), and the loop's
  users do not read its history (only its final value).

The per-step operands are read, after the loop, from the xs entry they are (an x slice), or
from a new y the body emits (a (T, ...) buffer: the price, paid once per operand, however many
weights read it: g_t feeds dW, dU and db). Both are indexed by t whatever the direction, so
reverse loops pair them as the loop did. With T = 0 the products have zero rows and the final
value is the initial one. Symbolic T works (the stacked shapes are T*N).

Where it runs: first, right before `hoist`, so an accumulation whose summand is computable from
the x slices alone (``c + x_t^T @ tanh(x_t @ P)``) becomes one product over all steps instead of
T batched products stored for all T and summed (what `hoist` would make of it: it stacks every
product of x slices); the reverse loops' weight gradients read the cotangent, which `hoist`
leaves alone, so for them the order does not matter. Before `loop_bodies`, the products are
still plain ``matmul`` nodes (fusion would hide the elementwise parts) and the body is optimized
once, without them; the outer products land before the outer graph's own passes (folded,
fused, CSE'd with it). Nested loops are done inside out, as `hoist` does; a loop whose body was
already optimized (``meta["optimized"]``) is left alone.

Cost and benefit: one (T, ...) buffer per emitted operand (cuDNN pays the same), in exchange
for T small products becoming one; a carry entry, its per-step add and its history go away.
On a CPU BLAS a (K, N) x (N, H) product with N = 32 already runs near peak, so the gain there
is small (see docs/scan-plan.md for measurements); it is largest where small products are
expensive to launch (a GPU) or where T is large and N small.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container
from dataclasses import dataclass

from graphc.ir.graph import Graph, topological
from graphc.ir.node import Node
from graphc.ir.shapes import dims_equal, prod
from graphc.ir.tensor import Tensor, apply

from .hoist import INV, classify
from .prune import body_keeping, moved_result, result_reads
from .rewrite import Match, RuleSet, rebuild, remap_program, rewrite_loop_bodies


@dataclass(frozen=True)
class Term:
    """One summand of an accumulation: ``matmul`` (``op(A_t) @ op(B_t)``, op a transpose
    where `flags` say so) or ``sum`` (of G_t), as the body node `node` computes it for one
    step."""

    kind: str
    node: Node
    operands: tuple[Node, ...]
    flags: tuple[bool, bool] = (False, False)


@dataclass(frozen=True)
class Accumulation:
    """Carry entry `index` is updated as ``((c + s_1) + s_2) + ...`` (each add in either
    order) and read nowhere else; each s_k a sum of terms."""

    index: int
    chain: tuple[Node, ...]  # the adds, from the one reading the carry to its new value
    summands: tuple[tuple[Term, ...], ...]  # the terms of each add's other operand

    @property
    def terms(self) -> tuple[Term, ...]:
        return tuple(t for part in self.summands for t in part)


def _same_shape(a, b) -> bool:
    return len(a) == len(b) and all(dims_equal(x, y) is True for x, y in zip(a, b))


def _term(v: Node, kind: dict[int, str], xs: set[int]) -> Term | None:
    """`v` as a sinkable term, or None."""
    if v.uid in xs:  # an x slice (a product hoisted out of the loop): its xs entry, summed
        return Term("slice", v, (v,))
    base = v.inputs[0] if v.op.name == "reshape" else v
    if base.op.name == "sum" and set(base.attrs) == {"axes", "keepdims"}:
        (g,) = base.inputs
        if kind[g.uid] != INV:
            return Term("sum", v, (g,))
        return None
    if v.op.name == "matmul":
        (a, ta), (b, tb) = _peel(v.inputs[0], v.attrs["ta"]), _peel(v.inputs[1], v.attrs["tb"])
        if a.ndim == 2 and b.ndim == 2 and kind[a.uid] != INV and kind[b.uid] != INV:
            return Term("matmul", v, (a, b), (ta, tb))
    return None


def _peel(x: Node, flag: bool) -> tuple[Node, bool]:
    """A matrix operand without its transposes (as the matmul's flag): the body then emits the
    value itself, not a transposed copy of it (``x.T @ g`` reads the x slice)."""
    while x.op.name == "transpose" and x.ndim == 2 and tuple(x.attrs["axes"]) == (1, 0):
        x, flag = x.inputs[0], not flag
    return x, flag


def _terms(s: Node, kind: dict[int, str], xs: set[int]) -> list[Term] | None:
    """The summand `s` split at its adds (of same-shaped values) into terms; None when a
    part is not a term."""
    if s.op.name == "add" and all(_same_shape(i.shape, s.shape) for i in s.inputs):
        out = []
        for i in s.inputs:
            part = _terms(i, kind, xs)
            if part is None:
                return None
            out += part
        return out
    t = _term(s, kind, xs)
    return None if t is None else [t]


def accumulations(body: Graph, n_carry: int, n_xs: int,
                  history_read: Container[int] = frozenset()) -> list[Accumulation]:
    """The carry entries of a loop body that can be sunk (see the module docstring);
    `history_read`: carry indices whose history the loop's users read (never sunk)."""
    nodes = topological(body.outputs + body.inputs)
    users: dict[int, list[Node]] = {n.uid: [] for n in nodes}
    for n in nodes:
        for i in dict.fromkeys(n.inputs):
            users[i.uid].append(n)
    outs = Counter(o.uid for o in body.outputs)
    kind: dict[int, str] | None = None
    found = []
    for i in range(n_carry):
        ph, new = body.inputs[i], body.outputs[i]
        if i in history_read or ph.dtype.kind != "f" or outs[ph.uid] or outs[new.uid] != 1:
            continue
        chain, others, node = [], [], ph
        while node is not new:  # up from the carry: each value read once, by the next add
            (nxt,) = users[node.uid] if len(users[node.uid]) == 1 else (None,)
            if nxt is None or nxt.op.name != "add" or (node is not ph and outs[node.uid]):
                break
            a, b = nxt.inputs
            if (a is node) == (b is node) or not _same_shape(nxt.shape, ph.shape):
                break  # c + c, or an add that broadcasts the carry
            other = b if a is node else a
            if not _same_shape(other.shape, ph.shape):
                break
            chain.append(nxt)
            others.append(other)
            node = nxt
        if node is not new or users[new.uid]:
            continue
        if kind is None:
            kind = classify(body, n_carry, n_xs)
        xs = {ph.uid for ph in body.inputs[n_carry:n_carry + n_xs]}
        parts = [_terms(s, kind, xs) for s in others]
        if all(parts):
            found.append(Accumulation(i, tuple(chain), tuple(tuple(p) for p in parts)))
    return found


def _stacked_product(term: Term, left: Tensor, right: Tensor) -> Tensor:
    """sum over t of op(A_t) @ op(B_t), from the stacked A (T, a0, a1) and B (T, b0, b1):
    one product whose contraction runs over the T*N rows of all steps."""
    from graphc.ops.linalg import matmul_t
    from graphc.ops.shape_ops import reshape, transpose

    ta, tb = term.flags
    T, a0, a1 = left.shape
    if ta:  # A_t is (N, K): the steps' rows one after another
        left = reshape(left, (prod((T, a0)), a1))
    else:  # A_t is (K, N): the steps' columns side by side
        left = reshape(transpose(left, (1, 0, 2)), (a0, prod((T, a1))))
    T, b0, b1 = right.shape
    if not tb:
        right = reshape(right, (prod((T, b0)), b1))
    else:
        right = reshape(transpose(right, (1, 0, 2)), (b0, prod((T, b1))))
    return matmul_t(left, right, ta=ta, tb=tb)


def _stacked_sum(term: Term, g: Tensor) -> Tensor:
    """sum over t of sum(G_t, axes) (reshaped as the term), from the stacked G (T, ...)."""
    from graphc.ops.reduce import sum as reduce_sum
    from graphc.ops.shape_ops import reshape

    base = term.node.inputs[0] if term.node.op.name == "reshape" else term.node
    axes = (0, *[ax + 1 for ax in base.attrs["axes"]])
    total = reduce_sum(g, axis=axes, keepdims=base.attrs["keepdims"])
    if not _same_shape(total.shape, term.node.shape):
        total = reshape(total, term.node.shape)
    return total


class Sink:
    """One loop's sinking: the accumulations that leave, the new body and loop."""

    def __init__(self, body: Graph, n_carry: int, n_xs: int, found: list[Accumulation]
                 ) -> None:
        self.body, self.nc, self.nx, self.found = body, n_carry, n_xs, found
        self.x_index = {body.inputs[n_carry + j].uid: j for j in range(n_xs)}
        # the per-step operands the body must emit (those that are not x slices), once each
        self.emitted: list[Node] = []
        seen: set[int] = set()
        for acc in found:
            for term in acc.terms:
                for op in term.operands:
                    if op.uid not in self.x_index and op.uid not in seen:
                        seen.add(op.uid)
                        self.emitted.append(op)

    def apply(self, node: Node, inputs: list[Tensor], graph: Graph
              ) -> tuple[Tensor, dict[int, Tensor | int]]:
        """The new scan node (in `graph`) and, for every old result index, the new result
        index or (a sunk carry's final value) the tensor computed after the loop."""
        from graphc.ops.reduce import sum as reduce_sum
        from graphc.ops.scan import SCAN, loop_output

        body, nc = self.body, self.nc
        ny = len(body.outputs) - nc
        sunk = {acc.index for acc in self.found}
        kept = [i for i in range(nc) if i not in sunk]
        new = body_keeping(body, nc, kept, [body.outputs[i] for i in kept]
                           + list(body.outputs[nc:]) + self.emitted)
        new.meta["sunk"] = True
        attrs = dict(node.attrs, body=new, n_carry=len(kept))
        with graph.building_for(node):
            loop = apply(SCAN, [inputs[i] for i in kept] + list(inputs[nc:]), **attrs)
        nk, ne = len(kept), len(self.emitted)
        where: dict[int, Tensor | int] = {}
        for k, i in enumerate(kept):
            where[i] = k
            where[nc + ny + i] = nk + ny + ne + k
        for j in range(ny):
            where[nc + j] = nk + j
        emitted_at = {op.uid: nk + ny + e for e, op in enumerate(self.emitted)}
        stacked: dict[int, Tensor] = {}

        def stack(op: Node) -> Tensor:
            if op.uid not in stacked:
                stacked[op.uid] = (inputs[nc + self.x_index[op.uid]] if op.uid in self.x_index
                                   else loop_output(loop, emitted_at[op.uid]))
            return stacked[op.uid]

        for acc in self.found:
            value, prev = inputs[acc.index], body.inputs[acc.index]
            for add, part in zip(acc.chain, acc.summands):  # the body's order of additions
                with graph.building_for(add):
                    total = None
                    for term in part:
                        if term.kind == "matmul":
                            v = _stacked_product(term, *[stack(o) for o in term.operands])
                        elif term.kind == "slice":
                            v = reduce_sum(stack(term.node), axis=0)
                        else:
                            v = _stacked_sum(term, stack(term.operands[0]))
                        total = v if total is None else total + v
                    value = value + total if add.inputs[0] is prev else total + value
                prev = add
            where[acc.index] = value
        return loop, where


def sink_program(program: Graph) -> tuple[Graph, dict]:
    """Sink the accumulations of every scan body (innermost loops first). Statistics:
    ``sunk_accumulations`` (carry entries removed), ``sunk_terms`` (by kind: ``matmul``,
    ``sum``), ``emitted`` (per-step operands the bodies now emit as ys), ``loops``."""
    from graphc.ops.scan import SCAN

    reads = result_reads(program)
    plans: dict[int, tuple[Tensor, dict[int, Tensor | int]]] = {}
    terms: Counter = Counter()
    totals = {"sunk_accumulations": 0, "emitted": 0, "loops": 0}
    rules = RuleSet("sink")

    def inner(body: Graph) -> Graph:
        """The body with its own loops' accumulations sunk into it."""
        return rewrite_loop_bodies(body, rules, roots=body.outputs + body.inputs)

    @rules.rule("scan")
    def sink_loop(m: Match):
        """scan(body with c <- c + A_t^T G_t) -> scan(body emitting G_t), c_0 + A^T G after"""
        body = m.attrs["body"]
        if body.meta.get("optimized") or body.meta.get("sunk"):
            return None
        body2 = inner(body)
        nc, nx = m.attrs["n_carry"], m.attrs["n_xs"]
        ny = len(body2.outputs) - nc
        read = {i - nc - ny for i in reads.get(m.node.uid, ()) if i >= nc + ny}
        found = accumulations(body2, nc, nx, read)
        if not found:
            if body2 is body:
                return None
            body2.meta["sunk"] = True
            return apply(SCAN, m.inputs, **dict(m.attrs, body=body2))
        plan = Sink(body2, nc, nx, found)
        loop, where = plan.apply(m.node, m.inputs, m.graph)
        plans[m.node.uid] = (loop, where)
        totals["sunk_accumulations"] += len(found)
        totals["emitted"] += len(plan.emitted)
        totals["loops"] += 1
        terms.update(t.kind for acc in found for t in acc.terms)
        return loop

    @rules.rule("scan_output")
    def sunk_result(m: Match):
        """scan_output(loop, i) -> the result's new index, or a sunk carry's final value"""
        return moved_result(plans, m, "sink")

    target, mapping, fired = rebuild(program, rules)
    out = remap_program(program, target, mapping) if fired else program
    stat_fired = {"sunk_accumulation": totals["sunk_accumulations"]} if totals[
        "sunk_accumulations"] else {}
    return out, {"fired": stat_fired, "sunk_terms": dict(sorted(terms.items())), **totals}


__all__ = ["Accumulation", "Sink", "Term", "accumulations", "sink_program"]
