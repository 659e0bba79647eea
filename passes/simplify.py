"""Algebraic simplification of elementwise groups through sympy, under a strict budget.

Each elementwise group (see groups.py) is composed into one sympy expression and handed to
``sympy.simplify``. The result replaces the group only if it is smaller (fewer operations) and
still uses every input the original used — dropping an input (``x - x -> 0``, ``x * 0 -> 0``)
would change results for inf/NaN inputs. Sympy can be slow — `sympy.simplify` on a few dozen
operations of tanh and sigmoid can run for minutes in `trigsimp` — so the budget is enforced,
not hoped for: expressions above `MAX_OPS` operations are left alone, each `sympy.simplify`
call is interrupted after `CALL_SECONDS` (a SIGALRM timer, so only where one is available:
in the main thread, with no other timer running; elsewhere the pass does nothing), and once a
compilation has spent `BUDGET_SECONDS` in sympy the remaining groups are kept as they are.
Either way the graph stays correct, just unsimplified.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import sympy

from graphc.ir.graph import Graph
from graphc.ops import from_expr

from .groups import elementwise_groups, group_expression
from .rewrite import Match, RuleSet, rebuild, remap_program

MAX_OPS = 40
MIN_OPS = 4  # anything smaller is already as short as sympy would make it
BUDGET_SECONDS = 1.0
CALL_SECONDS = 0.25
_cache: dict[sympy.Expr, sympy.Expr | None] = {}


class _OutOfTime(Exception):
    pass


def _can_interrupt() -> bool:
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0.0)


@contextmanager
def _interrupt_after(seconds: float) -> Iterator[None]:
    """Raise `_OutOfTime` inside the block once `seconds` have passed (SIGALRM)."""

    def on_alarm(signum, frame):
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def simplified(expr: sympy.Expr, deadline: float) -> sympy.Expr | None:
    """A smaller equivalent of `expr` using the same inputs, or None."""
    if expr in _cache:
        return _cache[expr]
    remaining = deadline - time.perf_counter()
    if remaining <= 0 or not _can_interrupt():
        return None
    before = sympy.count_ops(expr)
    if before > MAX_OPS or before < MIN_OPS:
        return None
    try:
        with _interrupt_after(min(remaining, CALL_SECONDS)):
            candidate = sympy.simplify(expr.doit() if hasattr(expr, "doit") else expr)
    except _OutOfTime:  # too slow this time: not cached, a later compile may have more time
        return None
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
