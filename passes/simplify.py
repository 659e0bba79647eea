"""Algebraic simplification of elementwise groups through sympy, under a strict budget.

Each elementwise group (see groups.py) is composed into one sympy expression and handed to
``sympy.simplify``. The result replaces the group only if it is smaller (fewer operations) and
still uses every input the original used — dropping an input (``x - x -> 0``, ``x * 0 -> 0``)
would change results for inf/NaN inputs. Sympy can be slow: expressions above `MAX_OPS`
operations are left alone, and once a compilation has spent `BUDGET_SECONDS` in sympy the
remaining groups are kept as they are. Either way the graph stays correct, just unsimplified.
"""

from __future__ import annotations

import time

import sympy

from graphc.ir.graph import Graph
from graphc.ops import from_expr

from .groups import elementwise_groups, group_expression
from .rewrite import Match, RuleSet, rebuild, remap_program

MAX_OPS = 40
MIN_OPS = 4  # anything smaller is already as short as sympy would make it
BUDGET_SECONDS = 2.0
_cache: dict[sympy.Expr, sympy.Expr | None] = {}


def simplified(expr: sympy.Expr, deadline: float) -> sympy.Expr | None:
    """A smaller equivalent of `expr` using the same inputs, or None."""
    if expr in _cache:
        return _cache[expr]
    if time.perf_counter() > deadline:
        return None
    before = sympy.count_ops(expr)
    if before > MAX_OPS or before < MIN_OPS:
        return None
    try:
        candidate = sympy.simplify(sympy.sympify(expr.doit() if hasattr(expr, "doit") else expr))
    except Exception:  # sympy gives up on some inputs: keep the expression as it is
        candidate = None
    better = None
    if candidate is not None and candidate.free_symbols == expr.free_symbols and \
            sympy.count_ops(candidate) < before and candidate.is_real is not False:
        better = candidate
    _cache[expr] = better
    return better


def simplify_program(program: Graph) -> tuple[Graph, dict]:
    deadline = time.perf_counter() + BUDGET_SECONDS
    plans = {}
    for group in elementwise_groups(program):
        if group.size < 2:
            continue
        expr, inputs = group_expression(group, inline_constants=True)
        if isinstance(expr, sympy.logic.boolalg.Boolean):
            continue
        better = simplified(sympy.sympify(expr), deadline)
        if better is not None:
            plans[group.root.uid] = (better, inputs)

    rules = RuleSet("simplify")

    @rules.rule("*")
    def sympy_simplified(m: Match):
        plan = plans.get(m.node.uid)
        if plan is None:
            return None
        expr, inputs = plan
        from graphc.ops import expr as E
        from graphc.ops.shape_ops import broadcast_to

        env = {E.sym_input(i): m.resolve(n) for i, n in enumerate(inputs)}
        out = from_expr(expr, env, m.type.dtype, graph=m.graph)
        return broadcast_to(out, m.type.shape) if tuple(out.shape) != tuple(m.type.shape) else out

    trace: list = []
    target, mapping, fired = rebuild(program, rules, trace=trace)
    return remap_program(program, target, mapping), {"groups_simplified": fired, "trace": trace}
