"""Elementwise fusion: every elementwise group of two or more ops becomes one `elemwise` node.

The fused node carries a single sympy expression of the group's external inputs (scalar
constants inlined as numbers), composed without sympy's automatic rewriting so results are
unchanged. The NumPy backend evaluates it as one NumPy expression; the LLVM and CUDA backends
emit one loop / one kernel per fused node. What each fused node was made of is kept in
``graph.meta["fusion"]`` so gc.viz can draw fused groups as clusters.
"""

from __future__ import annotations

from graphc.ir.graph import Graph
from graphc.ops import elemwise

from .groups import elementwise_groups, group_expression
from .rewrite import Match, RuleSet, rebuild, remap_program


def _describe(group, inputs) -> dict:
    """The group's ops and edges, for drawing (local ids; externals by input position)."""
    local = {n.uid: i for i, n in enumerate(group.members)}
    ext = {n.uid: i for i, n in enumerate(inputs)}
    ops = []
    for n in group.members:
        refs = []
        for x in n.inputs:
            if x.uid in local:
                refs.append(("op", local[x.uid]))
            elif x.uid in ext:
                refs.append(("in", ext[x.uid]))
            else:
                refs.append(("const", repr(x.attrs["value"])))
        ops.append({"op": n.op.name, "inputs": refs, "shape": n.shape, "loc": n.loc})
    return {"ops": ops, "n_inputs": len(inputs)}


def fuse_program(program: Graph) -> tuple[Graph, dict]:
    plans = {}
    for group in elementwise_groups(program):
        if group.size >= 2:
            expr, inputs = group_expression(group, inline_constants=True)
            plans[group.root.uid] = (expr, inputs, _describe(group, inputs))

    rules = RuleSet("fuse")
    fused_meta: dict[int, dict] = {}

    @rules.rule("*")
    def fuse_group(m: Match):
        plan = plans.get(m.node.uid)
        if plan is None:
            return None
        expr, inputs, description = plan
        out = elemwise(expr, [m.resolve(n) for n in inputs], dtype=m.type.dtype, label="fused")
        fused_meta[out.node.uid] = description
        return out

    target, mapping, fired = rebuild(program, rules)
    result = remap_program(program, target, mapping)
    live = {n.uid for n in result.nodes}
    result.meta["fusion"] = {uid: d for uid, d in fused_meta.items() if uid in live}
    sizes = sorted((len(d["ops"]) for d in result.meta["fusion"].values()), reverse=True)
    return result, {"fused_groups": len(sizes), "ops_fused": sum(sizes), "group_sizes": sizes}
