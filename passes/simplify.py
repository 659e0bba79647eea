"""Algebraic simplification by identities that are exact in IEEE arithmetic.

Each rule here gives the same value as the expression it replaces for *every* input — zeros,
infinities and NaN included (up to the sign of a zero result and NaN payloads) — so NaN and inf
appear in exactly the same places before and after (docs/passes.md, "What a rewrite may
change"). That rules out most of school algebra: ``x - x -> 0`` (inf - inf is NaN),
``(x*x - y*y)/(x - y) -> x + y`` (0/0 at x == y), ``sqrt(x)**2 -> x`` (NaN for x < 0),
``a*b + a*c -> a*(b + c)`` (overflows elsewhere), reassociation (rounds and overflows
elsewhere). This pass once ran sympy's rewrites (``cancel``, ``factor_terms``) on fused
groups; they reason about real numbers and changed results at such points, so they are gone.

The rules are plain graph patterns (rewrite.py runs them to a fixpoint with the
canonicalization rules): deterministic, and linear in the size of the graph.
"""

from __future__ import annotations

import numpy as np

from graphc import ops
from graphc.ir.graph import Graph
from graphc.ir.tensor import Tensor
from graphc.ops.shape_ops import same_shape

from .canonicalize import const_array
from .rewrite import Match, RuleSet, run_to_fixpoint

SIMPLIFY = RuleSet("simplify")
rule = SIMPLIFY.rule


def _arg(t: Tensor, i: int = 0) -> Tensor:
    return Tensor(t.node.inputs[i], t.graph)


def _same_type(m: Match, t: Tensor) -> Tensor | None:
    ok = same_shape(t.shape, m.type.shape) and t.dtype == m.type.dtype
    return t if ok else None


@rule("abs")
def abs_of_sign_free(m: Match):
    """abs(abs(x)) -> abs(x), abs(-x) -> abs(x), abs(square(x)) -> square(x), abs(relu(x))
    -> relu(x)"""
    (a,) = m.inputs
    op = a.node.op.name
    if op == "neg":
        return ops.abs(_arg(a))
    if op in ("abs", "square", "relu"):
        return a
    return None


@rule("square")
def square_of_sign(m: Match):
    """square(-x) -> square(x) and square(abs(x)) -> square(x)"""
    (a,) = m.inputs
    if a.node.op.name in ("neg", "abs"):
        return ops.square(_arg(a))
    return None


@rule("relu")
def relu_of_nonnegative(m: Match):
    """relu(relu(x)) -> relu(x), relu(abs(x)) -> abs(x), relu(square(x)) -> square(x)"""
    (a,) = m.inputs
    return a if a.node.op.name in ("relu", "abs", "square") else None


@rule("sign")
def sign_sign(m: Match):
    """sign(sign(x)) -> sign(x)"""
    (a,) = m.inputs
    return a if a.node.op.name == "sign" else None


@rule("maximum", "minimum")
def extremum_of_itself(m: Match):
    """maximum(x, x) -> x and minimum(x, x) -> x"""
    a, b = m.inputs
    return _same_type(m, a) if a.node is b.node else None


@rule("div")
def div_neg_neg(m: Match):
    """(-a) / (-b) -> a / b"""
    a, b = m.inputs
    if a.node.op.name == "neg" and b.node.op.name == "neg":
        return ops.div(_arg(a), _arg(b))
    return None


@rule("div")
def div_by_power_of_two(m: Match):
    """x / 2**k -> x * 2**-k: both round the same real number, so they are equal bit for bit
    (while 2**-k is a normal number); a multiplication is cheaper than a division"""
    a, b = m.inputs
    value = const_array(b)
    if value is None or value.ndim != 0 or m.type.dtype.kind != "f":
        return None
    c = float(value)
    if c == 0 or not np.isfinite(c):
        return None
    mantissa, exponent = np.frexp(abs(c))
    info = np.finfo(m.type.dtype)
    if mantissa != 0.5 or not info.tiny <= 1.0 / abs(c) <= info.max:
        return None
    return ops.mul(a, ops.constant(np.asarray(1.0 / c, dtype=m.type.dtype), graph=m.graph))


@rule("where")
def where_same_condition(m: Match):
    """where(c, where(c, a, b), d) -> where(c, a, d) and where(c, a, where(c, b, d))
    -> where(c, a, d)"""
    c, a, d = m.inputs
    if a.node.op.name == "where" and a.node.inputs[0] is c.node:
        out = ops.where(c, _arg(a, 1), d)
        return _same_type(m, out)
    if d.node.op.name == "where" and d.node.inputs[0] is c.node:
        out = ops.where(c, a, _arg(d, 2))
        return _same_type(m, out)
    return None


def simplify_program(program: Graph) -> tuple[Graph, dict]:
    from .canonicalize import CANONICALIZE

    rules = RuleSet("simplify")
    rules.rules = list(SIMPLIFY) + list(CANONICALIZE)
    res = run_to_fixpoint(program, rules)
    return res.graph, {"fired": dict(res.fired), "rounds": res.rounds, "trace": res.trace}
