"""Elementwise groups: the maximal sets of elementwise ops that can become one expression.

A producer joins its consumers' group when it is elementwise, all its users belong to that
one group (``y * y + y``: y is computed once per element inside the group), it is not itself
an output of the program, it has its users' shape (so nothing is recomputed per
broadcast element), and it computes in the group's dtype (a float32 comparison feeding a
float64 ``where`` stays outside: one expression, one compute type). Reductions, matmuls and
every other op are group boundaries. Fusion composes each group into one sympy expression
(without evaluating it) and turns it into one node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy

from graphc.ir.graph import Graph, users
from graphc.ir.node import Node
from graphc.ops import expr as E
from graphc.ops.elementwise import value_dtype
from graphc.ops.expr import compose
from graphc.ops.shape_ops import same_shape


def fusible(node: Node) -> bool:
    return node.op.is_elementwise


def computes_in(node: Node) -> np.dtype:
    """The dtype a node's expression computes in (a comparison: its inputs' dtype)."""
    if node.dtype != np.dtype(bool):
        return node.dtype
    return value_dtype(i.dtype for i in node.inputs)


@dataclass
class Group:
    root: Node
    members: list[Node] = field(default_factory=list)  # topological order, root last
    externals: list[Node] = field(default_factory=list)  # inputs from outside, in order

    @property
    def size(self) -> int:
        return len(self.members)


#: The most ops on a path from a group's root to its inputs: a fused expression is a tree that
#: printers, emitters and files walk recursively, so a chain of hundreds of elementwise ops is
#: cut into groups of at most this depth (a budget counted in ops, the same on every machine).
MAX_FUSION_DEPTH = 32
#: The most copies of one op's expression in its group's expression tree. A template may
#: use an operand several times (clip, maximum and where keep NaN and ties with 2-4 uses), so
#: the tree of a chain of such ops grows as a power of the chain's length: five clips made a
#: tree of >20000 nodes (the compile failed) and twelve a tree sympy's own walks never
#: finished. A producer whose copies would pass this starts a group of its own.
MAX_COPIES = 8


def _uses(consumer: Node, producer: Node) -> int:
    """How many times `consumer`'s template reads `producer` (over every input it feeds)."""
    template = consumer.op.expr(consumer.attrs)
    return sum(_occurrences(template, E.sym_input(i))
               for i, x in enumerate(consumer.inputs) if x.uid == producer.uid)


def _occurrences(expr, symbol) -> int:
    if expr == symbol:
        return 1
    return sum(_occurrences(a, symbol) for a in expr.args)


def elementwise_groups(program: Graph) -> list[Group]:
    use = users(program.nodes)
    pinned = {n.uid for n in program.roots()}
    owner: dict[int, Group] = {}
    depth: dict[int, int] = {}  # ops between a member and its group's root
    copies: dict[int, int] = {}  # copies of a member's expression in its group's tree
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
                    same_shape(node.shape, u.shape) for u in consumers) and \
                    computes_in(node) == computes_in(owner[c.uid].root):
                level = 1 + max(depth[u.uid] for u in consumers)
                count = sum(copies[u.uid] * _uses(u, node) for u in consumers)
                if level < MAX_FUSION_DEPTH and count <= MAX_COPIES:
                    owner[node.uid] = owner[c.uid]
                    owner[node.uid].members.append(node)
                    depth[node.uid] = level
                    copies[node.uid] = count
                    joined = True
        if not joined:
            group = Group(node, [node])
            owner[node.uid] = group
            depth[node.uid] = 0
            copies[node.uid] = 1
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
    if not np.isfinite(value) or (value == 0 and np.signbit(value)):
        return None  # sympy has no -0.0 (Float(-0.0) is 0): x / -0.0 would become x / 0.0
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
