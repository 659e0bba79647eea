"""Canonicalization and algebraic identities, one small rule each.

NaN policy (documented in docs/passes.md): a rule may only fire when it gives the same result
for *every* input, inf and NaN included. So ``x * 1 -> x`` and ``--x -> x`` always fire, but
``x * 0 -> 0`` and ``x - x -> 0`` fire only for integer tensors (``inf * 0`` is NaN, not 0).
Identities only apply when the node's shape equals the surviving operand's (``x * ones`` that
broadcasts x to a bigger shape is not ``x``).
"""

from __future__ import annotations

import numpy as np

from graphc import ops
from graphc.errors import GraphError
from graphc.ir.shapes import ShapeChecks
from graphc.ir.tensor import Tensor
from graphc.ops.shape_ops import same_shape

from .rewrite import Match, RuleSet

CANONICALIZE = RuleSet("canonicalize")
rule = CANONICALIZE.rule


def const_array(t: Tensor) -> np.ndarray | None:
    return t.node.attrs["value"].array if t.node.op.name == "constant" else None


def is_const(t: Tensor, value: float) -> bool:
    """t is a constant whose every element equals `value`."""
    arr = const_array(t)
    return arr is not None and arr.size > 0 and bool(np.all(arr == value))


def _keeps(m: Match, t: Tensor) -> Tensor | None:
    """t itself, if it already has the node's shape and dtype (else the identity can't apply)."""
    ok = same_shape(t.shape, m.type.shape) and t.dtype == m.type.dtype
    return t if ok else None


def _zeros(m: Match) -> Tensor:
    zero = ops.constant(np.zeros((), dtype=m.type.dtype), graph=m.graph)
    return ops.broadcast_to(zero, m.type.shape)


def is_zero_of_sign(t: Tensor, negative: bool) -> bool:
    """t is a constant zero that leaves every x as it is when added (`negative`: x + (-0.0)
    is x bit for bit, while x + 0.0 turns -0.0 into +0.0) or subtracted (x - 0.0 is x,
    x - (-0.0) is not): an integer zero, or a float zero of that sign everywhere. The sign
    of a zero reaches a division's infinity (1 / (x + 0.0) at x = -0.0 is +inf)."""
    arr = const_array(t)
    if arr is None or arr.size == 0 or not bool(np.all(arr == 0)):
        return False
    return arr.dtype.kind != "f" or bool(np.all(np.signbit(arr) == negative))


@rule("add")
def add_zero(m: Match):
    """x + (-0.0) -> x and (-0.0) + x -> x (any zero for integers; see is_zero_of_sign)"""
    a, b = m.inputs
    if is_zero_of_sign(b, negative=True):
        return _keeps(m, a)
    if is_zero_of_sign(a, negative=True):
        return _keeps(m, b)
    return None


@rule("add")
def add_neg_to_sub(m: Match):
    """x + (-y) -> x - y and (-x) + y -> y - x"""
    a, b = m.inputs
    if m.input_op(1) == "neg":
        return ops.sub(a, Tensor(b.node.inputs[0], m.graph))
    if m.input_op(0) == "neg":
        return ops.sub(b, Tensor(a.node.inputs[0], m.graph))
    return None


@rule("sub")
def sub_zero(m: Match):
    """x - 0.0 -> x and (-0.0) - x -> -x (any zero for integers): (+0.0) - x is +0.0, not
    -0.0, at x = +0.0, and x - (-0.0) is +0.0 at x = -0.0 (see is_zero_of_sign)"""
    a, b = m.inputs
    if is_zero_of_sign(b, negative=False):
        return _keeps(m, a)
    if is_zero_of_sign(a, negative=True) and same_shape(b.shape, m.type.shape):
        return ops.neg(b)
    return None


@rule("sub")
def sub_neg_to_add(m: Match):
    """x - (-y) -> x + y"""
    a, b = m.inputs
    if m.input_op(1) == "neg":
        return ops.add(a, Tensor(b.node.inputs[0], m.graph))
    return None


@rule("sub")
def sub_self_int(m: Match):
    """x - x -> 0 for integer x (for floats, inf - inf is NaN: not applied)"""
    a, b = m.inputs
    if a.node is b.node and m.type.dtype.kind in "iu":
        return _zeros(m)
    return None


@rule("mul")
def mul_one(m: Match):
    """x * 1 -> x and 1 * x -> x"""
    a, b = m.inputs
    if is_const(b, 1):
        return _keeps(m, a)
    if is_const(a, 1):
        return _keeps(m, b)
    return None


@rule("mul")
def mul_minus_one(m: Match):
    """x * -1 -> -x and -1 * x -> -x"""
    a, b = m.inputs
    for x, c in ((a, b), (b, a)):
        if is_const(c, -1) and same_shape(x.shape, m.type.shape):
            return ops.neg(x)
    return None


@rule("mul")
def mul_zero_int(m: Match):
    """x * 0 -> 0 for integer x (for floats, inf * 0 is NaN: not applied)"""
    a, b = m.inputs
    if m.type.dtype.kind in "iub" and (is_const(a, 0) or is_const(b, 0)):
        return _zeros(m)
    return None


@rule("mul")
def mul_self_to_square(m: Match):
    """x * x -> square(x)"""
    a, b = m.inputs
    return ops.square(a) if a.node is b.node else None


@rule("mul")
def neg_times_neg(m: Match):
    """(-x) * (-y) -> x * y"""
    if m.input_op(0) == "neg" and m.input_op(1) == "neg":
        return ops.mul(Tensor(m.inputs[0].node.inputs[0], m.graph),
                       Tensor(m.inputs[1].node.inputs[0], m.graph))
    return None


@rule("div")
def div_one(m: Match):
    """x / 1 -> x and x / -1 -> -x"""
    a, b = m.inputs
    if is_const(b, 1):
        return _keeps(m, a)
    if is_const(b, -1) and same_shape(a.shape, m.type.shape):
        return ops.neg(a)
    return None


@rule("pow")
def pow_small_integer(m: Match):
    """x**1 -> x, x**2 -> square(x), x**-1 -> 1/x (pow rounds these exactly as the
    replacements do; x**0.5 is not sqrt(x): pow(-inf, 0.5) is inf, sqrt(-inf) NaN)"""
    a, b = m.inputs
    if not same_shape(a.shape, m.type.shape) or const_array(b) is None or b.ndim:
        return None
    p = float(const_array(b))
    if p == 1:
        return a
    if p == 2:
        return ops.square(a)
    if p == -1 and a.dtype.kind == "f":
        return ops.div(1.0, a)
    return None


@rule("neg")
def neg_neg(m: Match):
    """-(-x) -> x"""
    if m.input_op(0) == "neg":
        return Tensor(m.inputs[0].node.inputs[0], m.graph)
    return None


@rule("where")
def where_same_branches(m: Match):
    """where(c, x, x) -> x"""
    c, a, b = m.inputs
    return _keeps(m, a) if a.node is b.node else None


@rule("transpose")
def transpose_transpose(m: Match):
    """transpose(transpose(x, p), q) -> transpose(x, p∘q) (or x when that is the identity)"""
    (t,) = m.inputs
    if t.node.op.name != "transpose":
        return None
    inner = t.node.attrs["axes"]
    outer = m.attrs["axes"]
    return ops.transpose(Tensor(t.node.inputs[0], m.graph), tuple(inner[a] for a in outer))


@rule("reshape")
def reshape_reshape(m: Match):
    """reshape(reshape(x)) -> reshape(x), and a reshape to x's own shape -> x"""
    (t,) = m.inputs
    if same_shape(t.shape, m.type.shape):
        return t
    if t.node.op.name == "reshape":
        return ops.reshape(Tensor(t.node.inputs[0], m.graph), m.attrs["shape"])
    return None


@rule("broadcast_to")
def broadcast_broadcast(m: Match):
    """broadcast_to(x, own shape) -> x and broadcast_to(broadcast_to(x)) -> broadcast_to(x)"""
    (t,) = m.inputs
    if same_shape(t.shape, m.type.shape):
        return t
    if t.node.op.name == "broadcast_to":
        return ops.broadcast_to(Tensor(t.node.inputs[0], m.graph), m.attrs["shape"])
    return None


@rule("sum")
def sum_of_broadcast(m: Match):
    """sum(broadcast_to(x, S), axes) -> x * count, when only broadcast axes are summed"""
    (t,) = m.inputs
    if t.node.op.name != "broadcast_to":
        return None
    x = Tensor(t.node.inputs[0], m.graph)
    target = tuple(t.shape)
    padded = (1,) * (len(target) - x.ndim) + tuple(x.shape)
    axes = m.attrs["axes"]
    count = 1
    for a in axes:
        if padded[a] != 1 or not isinstance(target[a], int):
            return None
        count *= target[a]
    if count == 0:  # an empty sum is 0, but x * 0 is NaN for an infinite or NaN x
        return None
    kept = tuple(1 if i in axes else d for i, d in enumerate(padded))
    scaled = ops.reshape(x, kept) * count if count != 1 else ops.reshape(x, kept)
    if x.dtype.kind == "f":  # a sum starts from +0.0: of -0.0 terms it is +0.0, not -0.0
        scaled = scaled + 0.0
    out_full = tuple(1 if i in axes else d for i, d in enumerate(target))
    result = ops.broadcast_to(scaled, out_full)
    return ops.reshape(result, m.type.shape)


def _lossless(src: np.dtype, dst: np.dtype) -> bool:
    """Every value of dtype src survives a round trip through dst."""
    if src == dst or src.kind == "b":
        return True
    if src.kind == dst.kind:
        return dst.itemsize >= src.itemsize
    if src.kind in "iu" and dst.kind == "f":
        return np.finfo(dst).nmant + 1 >= 8 * src.itemsize - 1
    return False


@rule("cast")
def cast_cast(m: Match):
    """cast(cast(x, A), B) -> cast(x, B) when A holds every value of x exactly"""
    (t,) = m.inputs
    if t.node.op.name != "cast":
        return None
    x = Tensor(t.node.inputs[0], m.graph)
    if _lossless(x.dtype, t.dtype):
        return ops.cast(x, m.type.dtype)
    return None


def _swaps_last_two(axes: tuple[int, ...]) -> bool:
    n = len(axes)
    return n >= 2 and axes == tuple(range(n - 2)) + (n - 1, n - 2)


@rule("matmul")
def matmul_fold_transpose(m: Match):
    """matmul(transpose(a), b) -> matmul(a, b, ta=True): the transpose goes into the BLAS call"""
    a, b = m.inputs
    ta, tb = m.attrs["ta"], m.attrs["tb"]
    changed = False
    if a.node.op.name == "transpose" and _swaps_last_two(a.node.attrs["axes"]):
        a, ta, changed = Tensor(a.node.inputs[0], m.graph), not ta, True
    if b.node.op.name == "transpose" and _swaps_last_two(b.node.attrs["axes"]):
        b, tb, changed = Tensor(b.node.inputs[0], m.graph), not tb, True
    return ops.matmul_t(a, b, ta=ta, tb=tb) if changed else None


@rule("*")
def elementwise_before_broadcast(m: Match):
    """f(broadcast_to(x, S), scalars...) -> broadcast_to(f(x, scalars...), S)

    Computes an elementwise op on the small tensor instead of its broadcast copy (the gradient
    of a mean is a scalar broadcast over the batch: negate the scalar, not N copies).
    """
    if not m.node.op.is_elementwise:
        return None
    if not any(t.node.op.name == "broadcast_to" for t in m.inputs):
        return None
    if any(t.node.op.name != "broadcast_to" and t.ndim != 0 for t in m.inputs):
        return None
    sources = [Tensor(t.node.inputs[0], m.graph) if t.node.op.name == "broadcast_to" else t
               for t in m.inputs]
    if all(same_shape(s.shape, m.type.shape) for s in sources):
        return None
    from graphc.ir.tensor import apply

    small = apply(m.node.op, sources, **dict(m.attrs))
    return ops.broadcast_to(small, m.type.shape)


@rule("reshape")
def reshape_broadcast_scalar(m: Match):
    """reshape(broadcast_to(s, S), T) -> broadcast_to(s, T) for a one-element s"""
    (t,) = m.inputs
    if t.node.op.name != "broadcast_to":
        return None
    src = Tensor(t.node.inputs[0], m.graph)
    if not all(d == 1 for d in src.shape):
        return None
    return ops.broadcast_to(ops.reshape(src, ()), m.type.shape)


@rule("*")
def implicit_broadcast(m: Match):
    """f(broadcast_to(x, S), y) -> f(x, y) when y alone already gives the output shape

    Elementwise ops broadcast their inputs themselves; materializing the copy is waste.
    """
    if not m.node.op.is_elementwise or len(m.inputs) < 2:
        return None
    inputs = list(m.inputs)
    changed = False
    for k, t in enumerate(inputs):
        if t.node.op.name != "broadcast_to":
            continue
        trial = inputs[:k] + [Tensor(t.node.inputs[0], m.graph)] + inputs[k + 1:]
        try:
            shape = ShapeChecks().broadcast(*[x.shape for x in trial])
        except GraphError:
            continue
        if same_shape(shape, m.type.shape):
            inputs, changed = trial, True
    if not changed:
        return None
    from graphc.ir.tensor import apply

    return apply(m.node.op, inputs, **dict(m.attrs))


@rule("*")
def elementwise_before_reshape(m: Match):
    """f(reshape(x), scalars...) -> reshape(f(x, scalars...)) for one-element x: a scalar's
    reshapes move outward, where they meet and cancel (reshape(reshape(x)) -> x). Bigger
    tensors keep their reshapes in place, which would otherwise split fusible chains."""
    if not m.node.op.is_elementwise:
        return None
    reshaped = [t for t in m.inputs if t.node.op.name == "reshape"]
    if len(reshaped) != 1 or any(t.ndim != 0 for t in m.inputs if t is not reshaped[0]):
        return None
    if not all(d == 1 for d in reshaped[0].shape):
        return None
    src = Tensor(reshaped[0].node.inputs[0], m.graph)
    if src.ndim == 0 and reshaped[0].ndim == 0:
        return None
    from graphc.ir.tensor import apply

    sources = [src if t is reshaped[0] else t for t in m.inputs]
    return ops.reshape(apply(m.node.op, sources, **dict(m.attrs)), m.type.shape)
