"""Numerically stable rewrites (as Theano/PyTensor do automatically).

Each rule replaces a formula that overflows, underflows or cancels on extreme inputs by an
equivalent one that does not:

    log(softmax(x))               -> log_softmax(x)
    log(sum(one_hot * softmax))   -> sum(where(one_hot, log_softmax, 0))  (CE on probabilities)
    log(sigmoid(x))               -> -softplus(-x)
    log(1 - sigmoid(x))           -> -softplus(x)    (with the rule above: BCE from logits)
    log(1 + x)                    -> log1p(x)
    log1p(exp(x))                 -> softplus(x)
    exp(x) - 1                    -> expm1(x)
    log(exp(x))                   -> x

gc.grad applies these rules to the cost before differentiating (see `stabilized`), so the
gradient of ``log(softmax(x))`` is the stable ``g - softmax(x) * sum(g)``, not ``g / softmax(x)``.
"""

from __future__ import annotations

import numpy as np

from graphc import ops
from graphc.ir.graph import Graph
from graphc.ir.tensor import Tensor
from graphc.ops.shape_ops import same_shape

from .canonicalize import is_const
from .rewrite import Match, RuleSet, rebuild

STABILIZE = RuleSet("stabilize")
rule = STABILIZE.rule


def _arg(t: Tensor, i: int = 0) -> Tensor:
    return Tensor(t.node.inputs[i], t.graph)


def _is_one_hot(t: Tensor, axis: int, depth) -> bool:
    """Exactly one 1 and zeros elsewhere along `axis` (of size `depth`): a one_hot node whose
    class axis is `axis` (possibly cast), or such a constant."""
    if t.ndim == 0 or not same_shape((t.shape[axis],), (depth,)):
        return False
    if t.node.op.name == "cast":
        return _is_one_hot(_arg(t), axis, depth)
    if t.node.op.name == "one_hot":
        return axis == t.ndim - 1  # one_hot appends its class axis
    if t.node.op.name != "constant":
        return False
    arr = t.node.attrs["value"].array
    return bool(np.isin(arr, (0, 1)).all() and (arr.sum(axis=axis) == 1).all())


def _scalar_one(t: Tensor, m: Match, other: Tensor) -> bool:
    return is_const(t, 1) and same_shape(other.shape, m.type.shape)


@rule("log")
def log_softmax_rule(m: Match):
    """log(softmax(x)) -> log_softmax(x)"""
    (p,) = m.inputs
    if p.node.op.name == "softmax":
        return ops.log_softmax(_arg(p), p.node.attrs["axis"])
    return None


@rule("log")
def log_picked_softmax(m: Match):
    """log(sum(one_hot * softmax(z, a), a)) -> sum(where(one_hot, log_softmax(z, a), 0), a)

    Only when the one-hot axis is the softmax axis and the sum's only axis, with its depth
    (otherwise the sum is not picking one probability). `where`, not a product: a masked
    logit (-inf) has log_softmax -inf, and 0 * -inf would be NaN.
    """
    (s,) = m.inputs
    if s.node.op.name != "sum" or len(s.node.attrs["axes"]) != 1:
        return None
    prod = _arg(s)
    if prod.node.op.name != "mul":
        return None
    a, b = _arg(prod, 0), _arg(prod, 1)
    for hot, p in ((a, b), (b, a)):
        if p.node.op.name != "softmax" or hot.ndim != p.ndim or hot.dtype != p.dtype:
            continue
        axis = p.node.attrs["axis"]
        if s.node.attrs["axes"] != (axis,) or not same_shape(prod.shape, p.shape):
            continue
        if _is_one_hot(hot, axis, p.shape[axis]):
            chosen = ops.not_equal(hot, 0)
            picked = ops.where(chosen, ops.log_softmax(_arg(p), axis), 0.0)
            return ops.sum(picked, axis, keepdims=s.node.attrs["keepdims"])
    return None


@rule("log")
def log_sigmoid(m: Match):
    """log(sigmoid(x)) -> 0 - softplus(-x) (+0.0 where softplus is 0, at x = +inf: log(1);
    a negation made it -0.0)"""
    (s,) = m.inputs
    if s.node.op.name == "sigmoid":
        return 0.0 - ops.softplus(ops.neg(_arg(s)))
    return None


@rule("log")
def log_one_minus_sigmoid(m: Match):
    """log(1 - sigmoid(x)) -> 0 - softplus(x) (+0.0 at x = -inf, as log(1 - 0))"""
    (d,) = m.inputs
    if d.node.op.name == "sub":
        one, s = _arg(d, 0), _arg(d, 1)
        if s.node.op.name == "sigmoid" and _scalar_one(one, m, s):
            return 0.0 - ops.softplus(_arg(s))
    return None


@rule("log")
def log_one_plus(m: Match):
    """log(1 + x) -> log1p(x)"""
    (a,) = m.inputs
    if a.node.op.name == "add":
        x, y = _arg(a, 0), _arg(a, 1)
        for one, other in ((x, y), (y, x)):
            if _scalar_one(one, m, other):  # (+0.0: log(1 + -0.0) is +0.0, log1p(-0.0) -0.0)
                return ops.log1p(other) + 0.0
    return None


@rule("log")
def log_exp(m: Match):
    """log(exp(x)) -> x + 0.0 (log(exp(-0.0)) is log(1) = +0.0, and x alone kept -0.0)"""
    (e,) = m.inputs
    return _arg(e) + 0.0 if e.node.op.name == "exp" else None


@rule("log1p")
def log1p_exp(m: Match):
    """log1p(exp(x)) -> softplus(x)"""
    (e,) = m.inputs
    return ops.softplus(_arg(e)) if e.node.op.name == "exp" else None


@rule("sub")
def exp_minus_one(m: Match):
    """exp(x) - 1 -> expm1(x)"""
    e, one = m.inputs
    if e.node.op.name == "exp" and _scalar_one(one, m, e):  # (exp(-0.0) - 1 is +0.0)
        return ops.expm1(_arg(e)) + 0.0
    return None


def stabilized(cost: Tensor, keep: list[Tensor], max_rounds: int = 10) -> Tensor:
    """The cost canonicalized and rewritten by the stabilize rules, in its own graph.

    Used by gc.grad before differentiating. If a rewrite would remove one of the `keep`
    tensors (an intermediate the caller differentiates with respect to), or one of its uses
    (``log(e)`` of ``e = exp(z)`` became ``z``: the gradient with respect to e lost 1/e),
    the original cost is returned.
    """
    from .canonicalize import CANONICALIZE

    graph: Graph = cost.graph
    node, stabilized_any = cost.node, False
    canonical = None  # the cost in canonical form: whose uses a rewrite must keep
    for _ in range(max_rounds):
        # canonical form first: the rules match `1 - sigmoid(x)`, not `-sigmoid(x) + 1`
        _, mapping, _ = rebuild(graph, CANONICALIZE, target=graph, roots=[node])
        node = mapping[node.uid]
        if canonical is None:  # (h * h -> square(h) merges two uses: not a loss)
            canonical = node
        _, mapping, fired = rebuild(graph, STABILIZE, target=graph, roots=[node])
        node = mapping[node.uid]
        if not fired:
            break
        stabilized_any = True
    if not stabilized_any:
        return cost
    from graphc.ir.graph import topological

    before, after = topological([canonical]), topological([node])
    reachable = {n.uid for n in after}
    if any(t.node.uid not in reachable for t in keep):
        return cost
    inner = {t.node.uid for t in keep
             if t.node.op.name not in ("parameter", "placeholder", "constant")}
    if inner and any(_uses_of(before, uid) != _uses_of(after, uid) for uid in inner):
        return cost
    return Tensor(node, graph)


def _uses_of(nodes, uid: int) -> int:
    """How many inputs of `nodes` are the node `uid`."""
    return sum(1 for n in nodes for i in n.inputs if i.uid == uid)
