"""The `prune_loops` pass: a loop computes only the results something reads.

A gradient's reverse scan produces the gradient of every entry of the forward loop's xs and
carries, because `gc.grad` builds the whole transposed body before anyone knows which of them a
step will use. A training step asks for the parameters' gradients only, so the per-step input
gradients (``dx_t = dz_t W_ih^T``: one matrix product per gate and step in an LSTM) are ys
that no ``scan_output`` reads. The backends already skip stacking such a y; this pass removes
the work that computes it.

Per loop (innermost first, like the other loop passes), with the result numbering of
`graphc.ops.scan` (final carries, ys, carry histories):

* a y is kept when some ``scan_output`` reads it;
* a carry is kept when its final value or its history is read, or when a kept y or a kept
  carry's new value depends on it (to a fixpoint: a carry only other dead carries read goes
  too);
* the body keeps the nodes the kept outputs need; its inputs lose the dropped carries'
  placeholders (xs and captured values stay: the loop's inputs are unchanged there).

A loop whose results are all read is left as it is; statistic ``pruned_ys`` and
``pruned_carries`` count what went, ``loops`` the loops rebuilt.
"""

from __future__ import annotations

from graphc.errors import GraphError
from graphc.ir.graph import Graph, topological
from graphc.ir.tensor import Tensor, apply

from .rewrite import Match, RuleSet, rebuild, remap_program, rewrite_loop_bodies


def result_reads(program: Graph) -> dict[int, set[int]]:
    """scan node uid -> the result indices some scan_output reads, in the program and every
    body nested in it."""
    reads: dict[int, set[int]] = {}
    graphs, done = [program], set()
    while graphs:
        g = graphs.pop()
        if id(g) in done:
            continue
        done.add(id(g))
        for n in topological(g.roots() + list(g.inputs)):
            if n.op.name == "scan_output":
                reads.setdefault(n.inputs[0].uid, set()).add(n.attrs["index"])
            elif n.op.name == "scan":
                graphs.append(n.attrs["body"])
    return reads


def live_results(body: Graph, n_carry: int, read: set[int]) -> tuple[list[int], list[int]]:
    """(kept carry indices, kept y indices) of a loop whose results `read` are read."""
    nc, ny = n_carry, len(body.outputs) - n_carry
    ys = [j for j in range(ny) if nc + j in read]
    carries = {i for i in range(nc) if i in read or nc + ny + i in read}
    while True:
        roots = [body.outputs[nc + j] for j in ys] + [body.outputs[i] for i in carries]
        needed = {n.uid for n in topological(roots)}
        grown = carries | {i for i in range(nc) if body.inputs[i].uid in needed}
        if grown == carries:
            return sorted(carries), ys
        carries = grown


def body_keeping(body: Graph, n_carry: int, carries: list[int], outputs: list) -> Graph:
    """A copy of a loop body whose inputs are the kept `carries`' placeholders and every
    non-carry input (xs, captured values), whose outputs are `outputs` (body nodes: the kept
    carries' new values first), and which holds only the nodes those need. (The loop passes
    that change a loop's carries or results, prune_loops and sink, rebuild bodies with it.)"""
    nc = n_carry
    new = Graph(body.name)
    env: dict[int, object] = {}
    ins = [body.inputs[i] for i in carries] + list(body.inputs[nc:])
    for n in topological(list(outputs) + ins):
        env[n.uid] = new.adopt(n) if not n.inputs else new.make_node(
            n.op, [env[i.uid] for i in n.inputs], n.attrs, loc=n.loc, scope=n.scope)
    new.inputs = [env[n.uid] for n in ins]
    new.outputs = [env[n.uid] for n in outputs]
    new.set_nodes(topological(new.outputs + new.inputs))
    paths = body.meta.get("paths") or [ph.name for ph in body.inputs]
    new.meta = dict(body.meta, paths=[paths[i] for i in carries] + list(paths[nc:]))
    return new


def moved_result(plans: dict, m: Match, pass_name: str):
    """The rule body of a loop pass for ``scan_output(loop, i)``: None when the pass left the
    loop alone, else result i of the rebuilt loop. `plans`: old loop uid -> (new loop, old
    index -> new index, or a tensor computed after the loop)."""
    from graphc.ops.scan import loop_output

    plan = plans.get(m.node.inputs[0].uid)
    if plan is None:
        return None
    loop, where = plan
    index = m.attrs["index"]
    if index not in where:
        raise GraphError(f"internal: {pass_name} dropped result {index} of a loop that is read")
    got = where[index]
    return got if isinstance(got, Tensor) else loop_output(loop, got)


def prune_loops_program(program: Graph) -> tuple[Graph, dict]:
    """Drop the results of every loop that nothing reads, and the work behind them."""
    from graphc.ops.scan import SCAN

    reads = result_reads(program)
    renumbered: dict[int, tuple[Tensor, dict[int, int]]] = {}
    totals = {"pruned_ys": 0, "pruned_carries": 0, "loops": 0}
    rules = RuleSet("prune_loops")

    @rules.rule("scan")
    def prune_loop(m: Match):
        """scan(body with unread results) -> scan(body computing the read ones)"""
        body = m.attrs["body"]
        if body.meta.get("optimized"):
            return None
        inner = rewrite_loop_bodies(body, rules, roots=body.outputs + body.inputs)
        nc = m.attrs["n_carry"]
        ny = len(inner.outputs) - nc
        carries, ys = live_results(inner, nc, reads.get(m.node.uid, set()))
        if len(carries) == nc and len(ys) == ny:
            return None if inner is body else apply(SCAN, m.inputs, **dict(m.attrs, body=inner))
        new_body = body_keeping(inner, nc, carries, [inner.outputs[i] for i in carries]
                                + [inner.outputs[nc + j] for j in ys])
        with m.graph.building_for(m.node):
            loop = apply(SCAN, [m.inputs[i] for i in carries] + list(m.inputs[nc:]),
                         **dict(m.attrs, body=new_body, n_carry=len(carries)))
        nk = len(carries)
        where = {i: k for k, i in enumerate(carries)}
        where.update({nc + ny + i: nk + len(ys) + k for k, i in enumerate(carries)})
        where.update({nc + j: nk + k for k, j in enumerate(ys)})
        renumbered[m.node.uid] = (loop, where)
        totals["pruned_ys"] += ny - len(ys)
        totals["pruned_carries"] += nc - nk
        totals["loops"] += 1
        return loop

    @rules.rule("scan_output")
    def renumber_result(m: Match):
        """scan_output(loop, i) -> the same result of the pruned loop"""
        return moved_result(renumbered, m, "prune_loops")

    target, mapping, fired = rebuild(program, rules)
    out = remap_program(program, target, mapping) if fired else program
    stat = {"prune_loop": totals["loops"]} if totals["loops"] else {}
    return out, {"fired": stat, **totals}


__all__ = ["body_keeping", "live_results", "moved_result", "prune_loops_program",
           "result_reads"]
