"""Algebraic simplification by identities that are exact in IEEE arithmetic.

Each rule here gives the same value as the expression it replaces for *every* input — zeros,
infinities, NaN and the sign of a zero included (up to NaN payloads) — so NaN and inf
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
from graphc.ir.shapes import dims_equal
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
    -> relu(x). A signed integer's square wraps and may be negative: abs(square(x)) stays."""
    (a,) = m.inputs
    op = a.node.op.name
    if op == "neg":
        return ops.abs(_arg(a))
    if op in ("abs", "relu") or (op == "square" and not _wrapping_signed(a)):
        return a
    return None


def _wrapping_signed(t: Tensor) -> bool:
    """A signed integer: its square wraps (50000**2 is negative in int32) and abs(INT_MIN)
    is INT_MIN, so neither is known to be >= 0."""
    return t.dtype.kind == "i"


@rule("square")
def square_of_sign(m: Match):
    """square(-x) -> square(x) and square(abs(x)) -> square(x)"""
    (a,) = m.inputs
    if a.node.op.name in ("neg", "abs"):
        return ops.square(_arg(a))
    return None


@rule("relu")
def relu_of_nonnegative(m: Match):
    """relu(relu(x)) -> relu(x), relu(abs(x)) -> abs(x), relu(square(x)) -> square(x)
    (the last two for floats and unsigned ints: a signed one's abs or square may be < 0)"""
    (a,) = m.inputs
    op = a.node.op.name
    return a if op == "relu" or (op in ("abs", "square") and not _wrapping_signed(a)) else None


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
    # (Python floats: a float32 bound would cast 1/c to float32, warning of its overflow)
    if mantissa != 0.5 or not float(info.tiny) <= 1.0 / abs(c) <= float(info.max):
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


#: comparisons a pooled gradient's gate may be (with a scalar constant on one side)
_GATES = ("less", "less_equal", "greater", "greater_equal", "equal", "not_equal")


def _scalar_constant(t: Tensor, ndim: int) -> bool:
    """A constant of one element that broadcasts to `ndim` dims without adding any."""
    value = const_array(t)
    return value is not None and value.size == 1 and value.ndim <= ndim


@rule("where")
def gate_pooled_gradient(m: Match):
    """where(y <= 0, 0, max_pool_grad(y, g)) -> max_pool_grad(y, where(p <= 0, 0, g)) with
    p = max_pool(y): a ReLU's backward mask applied to the pooled gradient, a quarter of the
    size for 2x2 windows, before it is spread back over the windows.

    Exact for any comparison of y with a scalar constant (either branch the gradient): the
    spread puts g_w at the argmax i of each window w and sums the windows that share it, and
    every such window has p_w = y_i (the first NaN wins a window, so a NaN y_i is its p_w
    too; a comparison does not see the sign of a zero, so a tie of 0.0 and -0.0 gates
    alike), so each g_w is kept or zeroed alike either way, and the terms kept are summed in
    the same order. A position that is no window's argmax is 0 either way, and the zero
    branch must be +0.0 (the spread of zeroed terms sums to +0.0). p is the forward's max
    pooling, already in the graph (the rebuild's hash-consing shares it), and the new spread
    reads the same record of each window's argmax (same input, same geometry)."""
    from graphc.ops.pool import max_pool, max_pool_grad

    cond, a, b = m.inputs
    spread, zero = (b, a) if b.node.op.name == "max_pool_grad" else (a, b)
    if spread.node.op.name != "max_pool_grad" or cond.node.op.name not in _GATES:
        return None
    zeros = const_array(zero)
    if (zeros is None or zeros.size != 1 or zeros.dtype != spread.dtype
            or float(zeros.reshape(())) != 0.0 or np.signbit(zeros.reshape(()))):
        return None
    y, g = _arg(spread, 0), _arg(spread, 1)
    sides = [Tensor(n, m.graph) for n in cond.node.inputs]
    at = [k for k, side in enumerate(sides) if side.node is y.node]
    if len(at) != 1 or not _scalar_constant(sides[1 - at[0]], y.ndim):
        return None
    geometry = {k: spread.node.attrs[k] for k in ("kernel", "stride", "padding")}
    sides[at[0]] = max_pool(y, **geometry)  # g's shape, and the gate's with the constant
    gate = Tensor(m.graph.make_node(cond.node.op, [t.node for t in sides], cond.node.attrs),
                  m.graph)
    kept = ops.where(gate, zero, g) if spread is b else ops.where(gate, g, zero)
    return _same_type(m, max_pool_grad(y, kept, **geometry))


def _tile(t: Tensor):
    """(piece, starts) of an unslice with unit steps, else None."""
    if t.node.op.name != "unslice" or any(st != 1 for st in t.node.attrs["steps"]):
        return None
    return _arg(t), t.node.attrs["starts"]


def _joined(a: Tensor, b: Tensor) -> Tensor | None:
    """unslice(p, at s) + unslice(q, at r), the two regions side by side along one axis (equal
    elsewhere) -> unslice(concat(p, q), at the first's start); None otherwise."""
    ta, tb = _tile(a), _tile(b)
    if ta is None or tb is None or not same_shape(a.shape, b.shape) or a.dtype != b.dtype:
        return None
    (p, s), (q, r) = ta, tb
    differ = [k for k in range(len(s)) if dims_equal(s[k], r[k]) is not True]
    if len(differ) != 1:
        return None
    axis = differ[0]
    if not all(same_shape((p.shape[k],), (q.shape[k],)) for k in range(len(s)) if k != axis):
        return None
    if dims_equal(s[axis] + p.shape[axis], r[axis]) is True:
        first, parts = s, [p, q]
    elif dims_equal(r[axis] + q.shape[axis], s[axis]) is True:
        first, parts = r, [q, p]
    else:
        return None
    pieces = []
    for part in parts:  # (a concat of concats along the same axis: one concat)
        if part.node.op.name == "concat" and part.node.attrs["axis"] == axis:
            pieces += [Tensor(i, part.graph) for i in part.node.inputs]
        else:
            pieces.append(part)
    return ops.unslice(ops.concat(pieces, axis=axis), a.shape, first, (1,) * len(first))


@rule("add")
def adjacent_unslices(m: Match):
    """unslice(p) + unslice(q) over regions side by side -> unslice(concat(p, q)), also one
    level into a sum: (x + unslice(p)) + unslice(q) -> x + unslice(concat(p, q)). The
    gradient of a tensor used through slices (an LSTM's gates of one weight) is then one
    concat, not one zero-filled full-size copy per slice and their sum. Exact: every element
    is one piece's value plus +0.0 (`_plus_zero`: the sum turned a -0.0 piece into +0.0)."""
    a, b = m.inputs
    joined = _joined(a, b)
    if joined is not None:
        return _same_type(m, _plus_zero(joined))
    for outer, inner in ((a, b), (b, a)):
        if outer.node.op.name != "add" or _tile(inner) is None:
            continue
        for k in (0, 1):
            joined = _joined(_arg(outer, k), inner)
            if joined is not None and same_shape(outer.shape, m.type.shape):
                return _same_type(m, ops.add(_arg(outer, 1 - k), joined))
    return None


def _plus_zero(t: Tensor) -> Tensor:
    """t + 0.0 for floats: what a sum of t with zeros gives (-0.0 becomes +0.0)."""
    return t + 0.0 if t.dtype.kind == "f" else t


def simplify_program(program: Graph) -> tuple[Graph, dict]:
    from .canonicalize import CANONICALIZE

    rules = RuleSet("simplify")
    rules.rules = list(SIMPLIFY) + list(CANONICALIZE)
    res = run_to_fixpoint(program, rules)
    return res.graph, {"fired": dict(res.fired), "rounds": res.rounds, "trace": res.trace}
