"""The `loop_bodies` pass: every scan's body is optimized by the whole pipeline, as a program
of its own (fold, stabilize, simplify, CSE, fusion, memory planning of its buffers).

Bodies nest (a scan in a scan's body): the pipeline run on a body runs this pass on it first.
A body optimized once is marked (``meta["optimized"]``) so that later rounds leave it alone;
scan nodes sharing one body keep sharing the optimized one. A body gets the passes its program
gets: switching a pass off (``exclude=["hoist"]``, ``GRAPHC_DISABLE_PASSES``) switches it off in
every body too. Loop-invariant hoisting runs before this pass (passes/hoist.py), so a body is
optimized once it holds only the work that varies from step to step.
"""

from __future__ import annotations

from collections.abc import Iterable

from graphc.ir.graph import Graph

from .rewrite import Match, RuleSet, run_to_fixpoint


def loop_bodies_program(program: Graph, passes: Iterable[str] | None = None
                        ) -> tuple[Graph, dict]:
    """Replace each scan node by one holding its optimized body (optimized by `passes`,
    pipeline names; None: the whole pipeline)."""
    from graphc.ir.tensor import apply
    from graphc.ops.scan import SCAN

    from .manager import optimize_program

    done: dict[int, Graph] = {}
    sizes = {"nodes_before": 0, "nodes_after": 0}

    rules = RuleSet("loop_bodies")

    @rules.rule("scan")
    def optimize_body(m: Match):
        """scan(body) -> scan(optimized body)"""
        body = m.attrs["body"]
        if body.meta.get("optimized"):
            return None
        if id(body) not in done:
            new, _ = optimize_program(body, passes=passes)
            new.meta["optimized"] = True
            new.meta.setdefault("paths", body.meta.get("paths"))
            done[id(body)] = new
            sizes["nodes_before"] += len(body.nodes)
            sizes["nodes_after"] += len(new.nodes)
        attrs = dict(m.attrs, body=done[id(body)])
        return apply(SCAN, m.inputs, **attrs)

    res = run_to_fixpoint(program, rules)
    return res.graph, {"fired": dict(res.fired), "bodies": len(done), **sizes}
