"""Reverse-mode symbolic differentiation: backprop as a transformation of the flow graph.

Walk the nodes between the inputs of interest and the cost in reverse topological order. Each
node sums the gradients its users sent it (fan-out), then asks its op's gradient rule for the
gradients of its own inputs. Rules build ordinary graph nodes, so a gradient is a graph: it can
be compiled, drawn, optimized and differentiated again.

Three kinds of answers flow backwards: a tensor; ``ZERO`` (the gradient is mathematically
zero, e.g. into the condition of ``where``); and ``BLOCKED`` (the op is not differentiable in
that input, e.g. argmax, comparisons, one_hot, integer casts). A requested gradient that could
only flow through a blocked input is an error naming the op, never a silent zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from graphc.errors import GraphError, at
from graphc.ir.graph import topological
from graphc.ir.node import Node
from graphc.ir.tensor import Tensor
from graphc.ops import BLOCKED, ZERO, add, broadcast_to, constant


@dataclass
class GradContext:
    """What a gradient rule sees: the node, its inputs and output as tensors, and d cost/d out."""

    node: Node
    inputs: list[Tensor]
    out: Tensor
    g: Tensor


def _zeros(like: Tensor) -> Tensor:
    zero = constant(np.zeros((), dtype=like.dtype), graph=like.graph)
    return broadcast_to(zero, like.shape)


def _depends_on(order: list[Node], sources: set[int]) -> set[int]:
    """uids of nodes in `order` that are, or depend on, one of `sources`."""
    out = set(sources)
    for n in order:
        if any(i.uid in out for i in n.inputs):
            out.add(n.uid)
    return out


def _where_floats_end(node: Node) -> Node:
    """The op whose integer or boolean result a non-float cost comes from, nearest the cost
    (an argmax, a comparison, a cast), or the cost's own node if none reads floats."""
    todo, seen = [node], set()
    while todo:
        n = todo.pop(0)
        if n.uid in seen:
            continue
        seen.add(n.uid)
        if any(i.dtype.kind == "f" for i in n.inputs):
            return n
        todo += [i for i in n.inputs if i.dtype.kind != "f"]
    return node


def grad(cost: Tensor, wrt, *, allow_unused: bool = False, stabilize: bool = True):
    """Symbolic gradient of a scalar `cost` w.r.t. a tensor or a list of tensors.

    Returns tensors of the same graph (a list when `wrt` is a list). Raises GraphError if a
    requested gradient only flows through non-differentiable ops, or if the cost does not
    depend on a requested tensor at all (pass ``allow_unused=True`` to get zeros instead).
    With `stabilize` (the default), the cost is first rewritten by the stabilize rules
    (log(softmax) -> log_softmax, ...), so the gradient graph is numerically stable too.
    """
    single = isinstance(wrt, Tensor)
    targets: Sequence[Tensor] = [wrt] if single else list(wrt)
    if not isinstance(cost, Tensor):
        raise GraphError("gc.grad needs a symbolic scalar cost")
    if cost.ndim != 0:
        raise GraphError(f"gc.grad needs a scalar cost, got shape {cost.shape} "
                         f"(reduce it first, e.g. with .sum() or .mean()){at(cost.node.loc)}")
    if cost.dtype.kind != "f":
        edge = _where_floats_end(cost.node)
        raise GraphError(f"the cost must be a float tensor, got {cost.dtype}: "
                         f"{edge.op.name} {edge.name} turns floats into {edge.dtype}, which "
                         f"has no gradient{at(edge.loc)}")
    for t in targets:
        if not isinstance(t, Tensor):
            raise GraphError(f"gc.grad: wrt must hold tensors, got {type(t).__name__}")
        if t.graph is not cost.graph and t.node.inputs:
            raise GraphError(f"{t.name} belongs to another graph than the cost")
        if t.dtype.kind != "f":
            raise GraphError(f"{t.name} is {t.dtype}: integer and boolean tensors have no "
                             f"gradient")

    if stabilize:
        from .stabilize import stabilized

        cost = stabilized(cost, keep=list(targets))
    graph = cost.graph
    order = topological([cost.node])
    wanted = {t.node.uid for t in targets}
    depends = _depends_on(order, wanted)
    pending: dict[int, list[Tensor]] = {}
    zero_reached: set[int] = set()
    blocked: list[tuple[Node, Node]] = []
    result: dict[int, Tensor] = {}
    by_index: dict[int, dict[int, Tensor]] = {}  # loop node -> {result index: gradient}

    pending[cost.node.uid] = [constant(np.ones((), dtype=cost.dtype), graph=graph)]
    for node in reversed(order):
        if node.uid not in depends:
            continue
        contributions = pending.pop(node.uid, None)
        if node.op.extra.get("multi_output"):  # a loop: its results' gradients, by index
            contributions = [by_index[node.uid]] if node.uid in by_index else None
        if not contributions:
            if node.uid in zero_reached:  # a zero gradient stays zero all the way back
                zero_reached.update(i.uid for i in node.inputs if i.uid in depends)
            continue
        if node.op.extra.get("multi_output"):
            g = by_index.pop(node.uid)
        else:
            with graph.scope_as("grad/" + node.scope if node.scope else "grad"):
                g = contributions[0]
                for c in contributions[1:]:
                    g = add(g, c)
        if node.uid in wanted:
            result[node.uid] = g
        if not any(i.uid in depends for i in node.inputs):
            continue
        if node.op.extra.get("projection"):  # one result of a loop: hand g to the loop
            by_index.setdefault(node.inputs[0].uid, {})[node.attrs["index"]] = g
            continue
        rule = node.op.grad
        if rule is None:
            raise GraphError(f"op {node.op.name} has no gradient rule, so {node.name} cannot be "
                             f"differentiated{at(node.loc)}")
        ctx = GradContext(node, [Tensor(i, graph) for i in node.inputs], Tensor(node, graph), g)
        with graph.scope_as("grad/" + node.scope if node.scope else "grad"):
            grads = rule(ctx)
        for inp, r in zip(node.inputs, grads):
            if inp.uid not in depends:
                continue
            if r is ZERO:
                zero_reached.add(inp.uid)
            elif r is BLOCKED:
                blocked.append((node, inp))
            else:
                _check_grad_shape(node, inp, r)
                pending.setdefault(inp.uid, []).append(r)

    outputs = []
    for t in targets:
        uid = t.node.uid
        if uid in result:
            outputs.append(result[uid])
        elif uid in zero_reached or (allow_unused and not _blocked_for(t, blocked, order)):
            outputs.append(_zeros(t))
        else:
            culprit = _blocked_for(t, blocked, order)
            if culprit is not None:
                raise GraphError(_blocked_message(t, cost, *culprit))
            raise GraphError(f"the cost {cost.name} does not depend on {t.name}; pass "
                             f"allow_unused=True to get a zero gradient{at(t.node.loc)}")
    return outputs[0] if single else outputs


def _check_grad_shape(node: Node, inp: Node, r: Tensor) -> None:
    from graphc.ops.shape_ops import same_shape

    if not same_shape(r.shape, inp.shape):
        raise GraphError(f"internal: gradient rule of {node.op.name} returned shape {r.shape} "
                         f"for an input of shape {inp.shape}")


def _blocked_for(t: Tensor, blocked, order) -> tuple[Node, Node] | None:
    for node, inp in blocked:
        if inp.uid in _depends_on(order, {t.node.uid}):
            return node, inp
    return None


def _blocked_message(t: Tensor, cost: Tensor, node: Node, inp: Node) -> str:
    src = inp
    if inp.dtype.kind == "f":
        reason = f"{node.op.name} is not differentiable with respect to that input"
    else:
        reason = f"{inp.op.name} produces {inp.dtype} values, which carry no gradient"
    return (
        f"cannot differentiate {cost.name} with respect to {t.name}: the only path goes through "
        f"the non-differentiable op {src.op.name!r}{at(src.loc)}\n"
        f"  into {node.op.name!r}{at(node.loc)}\n"
        f"  ({reason}; argmax, comparisons, one_hot and integer casts stop gradients)"
    )
