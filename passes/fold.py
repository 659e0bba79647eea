"""Constant folding: a node whose inputs are all constants becomes a constant.

The value comes from the op's own NumPy reference semantics, so folding can never disagree
with the NumPy backend. Random ops are never folded (their state advances), nor are results
with symbolic shapes or of more than `MAX_ELEMENTS` elements (folding must not bloat a graph).
"""

from __future__ import annotations

import numpy as np

from graphc import ops
from graphc.ops.collective import COLLECTIVES

from .rewrite import Match, RuleSet

FOLD = RuleSet("fold")
MAX_ELEMENTS = 1 << 16
# random ops advance their state; collectives communicate (their value is not their input's)
NEVER_FOLD = {"random_uniform", *COLLECTIVES}


@FOLD.rule("*")
def fold_constants(m: Match):
    """op(constant, ...) -> constant, computed with the op's reference semantics"""
    if m.op in NEVER_FOLD or not m.type.is_concrete or m.node.op.reference is None:
        return None
    if any(t.node.op.name != "constant" for t in m.inputs):
        return None
    if int(np.prod(m.type.shape, dtype=np.int64)) > MAX_ELEMENTS:
        return None
    arrays = [t.node.attrs["value"].array for t in m.inputs]
    try:
        with np.errstate(all="ignore"):
            value = m.node.op.reference(*arrays, **dict(m.attrs))
    except IndexError:  # e.g. a constant label out of range: the call will report it
        return None
    value = np.asarray(value, dtype=m.type.dtype)
    return ops.constant(np.broadcast_to(value, m.type.shape).copy(), graph=m.graph)


@FOLD.rule("numel")
def fold_known_numel(m: Match):
    """numel(x) -> constant when x's shape is known"""
    (x,) = m.inputs
    sizes = [x.shape[a] for a in m.attrs["axes"]]
    if not all(isinstance(d, int) for d in sizes):
        return None
    return ops.constant(np.asarray(np.prod(sizes, dtype=np.int64), dtype=m.attrs["dtype"]),
                        graph=m.graph)


@FOLD.rule("reshape", "broadcast_to")
def single_value_to_scalar(m: Match):
    """reshape/broadcast_to(one-element constant) -> broadcast_to(0-d constant)

    Results of symbolic shape cannot be folded, but a 0-d constant can be inlined as a number
    by fusion.
    """
    (x,) = m.inputs
    value = x.node.attrs["value"].array if x.node.op.name == "constant" else None
    if value is None or value.size != 1 or x.ndim == 0 or m.type.is_concrete:
        return None
    scalar = ops.constant(value.reshape(()), graph=m.graph)
    return ops.broadcast_to(scalar, m.type.shape)
