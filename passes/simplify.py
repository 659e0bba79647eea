"""Algebraic simplification of elementwise groups through sympy, under a strict budget.

Each elementwise group (see groups.py) is composed into one sympy expression and rewritten by
a fixed list of sympy's polynomial and power rewrites (`REWRITES`: factor common terms,
cancel rational functions, combine powers). The shortest result replaces the group only if it
is smaller (fewer operations) and still uses every input the original used — dropping an
input (``x - x -> 0``, ``x * 0 -> 0``) would change results for inf/NaN inputs.

Why not ``sympy.simplify``: on a few dozen operations of tanh and sigmoid it can run for
minutes in `trigsimp`, and on every training step we measured (MLP, CNN, autoencoder, RNN,
LSTM) it found nothing the rewrites here do not, while any time limit on it makes the
compiled graph depend on the speed of the machine. These rewrites are deterministic: the same
graph always compiles to the same program. The budget still stands as a safety net:
expressions above `MAX_OPS` operations are left alone, each expression's rewrites are
interrupted after `CALL_SECONDS` (a SIGALRM timer, only where one is available: in the main
thread, with no other timer running; elsewhere the pass does nothing), and a compilation stops
simplifying after `BUDGET_SECONDS`. Either way the graph stays correct, just unsimplified.
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
REWRITES = (sympy.factor_terms, sympy.cancel, sympy.powsimp,
            lambda e: sympy.factor_terms(sympy.cancel(e)))
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


def _compares_a_boolean(expr) -> bool:
    """A relation with a Boolean side (``Ne(x > 0, 0)``): graphc means truthiness, sympy
    would evaluate it as a number comparison — such an expression is not handed to sympy."""
    return any(isinstance(r, sympy.core.relational.Relational) and any(
        isinstance(a, (sympy.logic.boolalg.Boolean)) for a in r.args)
        for r in sympy.preorder_traversal(expr))


def simplified(expr: sympy.Expr, deadline: float) -> sympy.Expr | None:
    """A smaller equivalent of `expr` using the same inputs, or None."""
    if expr in _cache:
        return _cache[expr]
    remaining = deadline - time.perf_counter()
    if remaining <= 0 or not _can_interrupt():
        return None
    before = sympy.count_ops(expr)
    if before > MAX_OPS or before < MIN_OPS or _compares_a_boolean(expr):
        return None
    key, expr = expr, (expr.doit() if hasattr(expr, "doit") else expr)
    candidates = []
    try:
        with _interrupt_after(min(remaining, CALL_SECONDS)):
            for rewrite in REWRITES:
                try:
                    candidates.append(rewrite(expr))
                except (TypeError, ValueError, NotImplementedError, RecursionError,
                        sympy.PolynomialError):
                    continue  # this rewrite does not apply to this expression
    except _OutOfTime:  # pathological: not cached, a later compile may have more time
        return None
    valid = [c for c in candidates if c.free_symbols == expr.free_symbols
             and c.is_real is not False and sympy.count_ops(c) < before]
    better = min(valid, key=sympy.count_ops) if valid else None
    _cache[key] = better
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
