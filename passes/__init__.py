"""Graph transformations (installed as graphc.passes): autodiff and the optimization pipeline.

Where is a rewrite defined? One rule per function, grouped by stage: canonicalize.py
(identities), fold.py (constants), stabilize.py (numerics), simplify.py (sympy), fuse.py
(elementwise fusion), memory.py (buffer planning); rewrite.py runs rules to a fixpoint and
manager.py orders the stages.
"""

from __future__ import annotations

from .autodiff import grad
from .manager import PASS_NAMES, PassStat, format_stats, optimize_program


def optimize(graph_or_outputs, passes=None, exclude=None, dump: str | None = None,
             pictures: bool | None = None):
    """Run the optimization pipeline; returns ``(optimized graph, per-pass stats)``.

    Accepts a program graph (e.g. ``Function.graph``), a compiled Function, a tensor or a
    list of tensors (every placeholder they depend on becomes an input). `passes` picks passes
    by name (default: all, in pipeline order), `exclude` switches some off, `dump` writes the
    graph after each pass into a folder (`pictures=True` adds an SVG per pass).
    """
    from graphc.errors import GraphError
    from graphc.function import Function, build_program
    from graphc.ir.graph import Graph, topological
    from graphc.ir.tensor import Tensor

    if isinstance(graph_or_outputs, Function):
        program = graph_or_outputs.graph
    elif isinstance(graph_or_outputs, Graph):
        program = graph_or_outputs
        if not program.outputs and not program.updates:
            used = {i.uid for n in program.nodes for i in n.inputs}
            sinks = [Tensor(n, program) for n in program.nodes if n.uid not in used]
            return optimize(sinks, passes, exclude, dump, pictures)
    else:
        outs = [graph_or_outputs] if isinstance(graph_or_outputs, Tensor) else list(
            graph_or_outputs)
        if not outs:
            raise GraphError("gc.optimize: nothing to optimize (no outputs, or an empty graph)")
        for o in outs:
            if not isinstance(o, Tensor):
                raise GraphError(f"gc.optimize takes a graph, a compiled function or tensors, "
                                 f"got {type(o).__name__}")
        graph = outs[0].graph
        placeholders = [Tensor(n, graph) for n in topological([o.node for o in outs])
                        if n.op.name == "placeholder"]
        # (nothing is fed by name: a re-run notebook cell's two placeholders "x" are fine)
        program, _ = build_program(placeholders, outs, unique_names=False)
    return optimize_program(program, passes=passes, exclude=exclude, dump=dump,
                            pictures=pictures)


__all__ = ["PASS_NAMES", "PassStat", "format_stats", "grad", "optimize", "optimize_program"]
