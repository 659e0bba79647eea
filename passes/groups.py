"""Elementwise groups: the maximal sets of elementwise ops that can become one expression.

A producer joins its consumers' group when it is elementwise, all its users belong to that
one group (``y * y + y``: y is computed once per element inside the group), it is not itself
an output of the program, and it has its users' shape (so nothing is recomputed per
broadcast element). Reductions, matmuls and every other op are group boundaries. Simplify
composes each group into one sympy expression; fusion turns each group into one node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy

from graphc.ir.graph import Graph, users
from graphc.ir.node import Node
from graphc.ops import expr as E
from graphc.ops.shape_ops import same_shape


def fusible(node: Node) -> bool:
    return node.op.is_elementwise


@dataclass
class Group:
    root: Node
    members: list[Node] = field(default_factory=list)  # topological order, root last
    externals: list[Node] = field(default_factory=list)  # inputs from outside, in order

    @property
    def size(self) -> int:
        return len(self.members)


def elementwise_groups(program: Graph) -> list[Group]:
    use = users(program.nodes)
    pinned = {n.uid for n in program.roots()}
    owner: dict[int, Group] = {}
    groups: list[Group] = []
    for node in reversed(program.nodes):
        if not fusible(node):
            continue
        consumers = list({c.uid: c for c in use.get(node, [])}.values())
        joined = False
        if consumers and node.uid not in pinned:
            # every user in one group (y*y, or y used twice inside one expression): the
            # group computes y once per element, so y joins it
            homes = {id(owner.get(c.uid)) for c in consumers}
            c = consumers[0]
            if len(homes) == 1 and c.uid in owner and all(
                    same_shape(node.shape, u.shape) for u in consumers):
                owner[node.uid] = owner[c.uid]
                owner[node.uid].members.append(node)
                joined = True
        if not joined:
            group = Group(node, [node])
            owner[node.uid] = group
            groups.append(group)
    for g in groups:
        g.members.sort(key=lambda n: n.uid)
        inside = {n.uid for n in g.members}
        seen: set[int] = set()
        for n in g.members:
            for i in n.inputs:
                if i.uid not in inside and i.uid not in seen:
                    seen.add(i.uid)
                    g.externals.append(i)
    return groups


def compose(expr, subs: dict):
    """Substitute into an expression *without* sympy's automatic rewriting.

    ``xreplace`` would re-evaluate (``y - y`` would become 0, ``y * 0`` would become 0), which
    changes results for inf/NaN. Rebuilding with ``evaluate=False`` keeps the computation the
    graph describes.
    """
    if expr in subs:
        return subs[expr]
    if not expr.args:
        return expr
    args = [compose(a, subs) for a in expr.args]
    if isinstance(expr, sympy.Piecewise):
        return sympy.Piecewise(*[(v, c) for v, c in args], evaluate=False)
    if isinstance(expr, sympy.logic.boolalg.BooleanFunction):
        return expr.func(*args)
    if isinstance(expr, (sympy.core.relational.Ne, sympy.core.relational.Eq)) and \
            args[1].is_zero and _is_boolean(args[0]):
        # a comparison feeding where's condition (`c != 0`): use it directly. Left as a
        # relation, sympy would call it always true (a Boolean never equals the number 0)
        return args[0] if isinstance(expr, sympy.core.relational.Ne) else sympy.Not(args[0])
    if isinstance(expr, sympy.core.containers.Tuple) or type(expr).__name__ == "ExprCondPair":
        return expr.func(*args)
    try:
        return expr.func(*args, evaluate=False)
    except TypeError:
        return expr.func(*args)


def _is_boolean(expr) -> bool:
    return isinstance(expr, (sympy.core.relational.Relational,
                             sympy.logic.boolalg.BooleanFunction,
                             sympy.logic.boolalg.BooleanAtom))


def scalar_constant(node: Node):
    """A 0-d (or broadcast-of-0-d) constant's value as a sympy number, else None."""
    if node.op.name != "constant":
        return None
    arr = node.attrs["value"].array
    if arr.ndim != 0:
        return None
    value = arr.item()
    if arr.dtype.kind == "b":
        return sympy.Integer(int(value))
    if arr.dtype.kind in "iu":
        return sympy.Integer(int(value))
    if not np.isfinite(value):
        return None
    return sympy.Float(float(value), 17)


def group_expression(group: Group, inline_constants: bool = True
                     ) -> tuple[sympy.Expr, list[Node]]:
    """The group as one expression over x0..x{k-1} and the k external nodes they stand for."""
    env: dict[int, sympy.Expr] = {}
    inputs: list[Node] = []
    index: dict[int, sympy.Symbol] = {}

    def symbol_for(node: Node):
        if node.uid in env:
            return env[node.uid]
        number = scalar_constant(node) if inline_constants else None
        if number is not None:
            return number
        if node.uid not in index:
            index[node.uid] = E.sym_input(len(inputs))
            inputs.append(node)
        return index[node.uid]

    for n in group.members:
        template = n.op.expr(n.attrs)
        subs = {E.sym_input(i): symbol_for(x) for i, x in enumerate(n.inputs)}
        env[n.uid] = compose(template, subs)
    return env[group.root.uid], inputs
