"""Placing collectives in the static schedule: start each non-blocking allreduce as early as
its inputs allow, wait for it as late as its users allow.

The schedule is the program's node order (memory planning and every backend follow it). An
``allreduce_start`` and the nodes that exist only to feed it (the bucket's scaling, reshapes
and concat) are moved to right after their last input is computed: in a training step, right
after the bucket's last gradient, while the rest of the backward pass still has work to do.
Each ``allreduce_wait`` is moved to right before its first user. Between the two, MPI can move
the bucket while the step computes (with an MPI that progresses in the background; MPICH does
with ``MPICH_ASYNC_PROGRESS=1``). The pass only reorders: the result is a topological order of
the same nodes, so what the step computes is unchanged.
"""

from __future__ import annotations

from graphc.ir.graph import Graph, users

STARTS, WAITS = ("allreduce_start",), ("allreduce_wait",)


def _feeders(nodes, starts, users_of) -> set[int]:
    """The starts and the nodes whose every user is a start or another feeder (the bucket's
    packing): walking back from each start."""
    feed: set[int] = set()
    leaves = ("placeholder", "parameter", "constant")
    stack = list(starts)
    while stack:
        node = stack.pop()
        if node.uid in feed:
            continue
        feed.add(node.uid)
        for i in node.inputs:
            if i.op.name in leaves or i.uid in feed:
                continue
            if all(u.uid in feed for u in users_of.get(i, ())):
                stack.append(i)
    return feed


def schedule_collectives(program: Graph) -> tuple[Graph, dict]:
    nodes = list(program.nodes)
    starts = [n for n in nodes if n.op.name in STARTS]
    waits = [n for n in nodes if n.op.name in WAITS]
    if not starts and not waits:
        return program, {"moved": 0}
    before = {n.uid: k for k, n in enumerate(nodes)}
    users_of = users(nodes)
    # users that are feeders of a start reached through another feeder count too: repeat
    feed = _feeders(nodes, starts, users_of)
    while True:
        grown = _feeders(nodes, [n for n in nodes if n.uid in feed], users_of)
        if grown == feed:
            break
        feed = grown
    order = list(nodes)
    for node in [n for n in nodes if n.uid in feed]:  # (topological: inputs first)
        order.remove(node)
        where = {n.uid: k for k, n in enumerate(order)}
        last = max((where[i.uid] for i in node.inputs), default=-1)
        order.insert(last + 1, node)
    for node in waits:
        order.remove(node)
        where = {n.uid: k for k, n in enumerate(order)}
        first = min((where[u.uid] for u in users_of.get(node, ())), default=len(order))
        last_input = max(where[i.uid] for i in node.inputs)
        order.insert(max(first, last_input + 1), node)
    moved = sum(1 for k, n in enumerate(order) if before[n.uid] != k)
    program.set_nodes(order)
    positions = {n.uid: k for k, n in enumerate(order)}
    return program, {"moved": moved,
                     "starts": [positions[n.uid] for n in starts],
                     "waits": [positions[n.uid] for n in waits]}
