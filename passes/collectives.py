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
LEAVES = ("placeholder", "parameter", "constant")
PACK = ("reshape", "concat", "cast", "numel")  # what packs a bucket (moved with its start)
UNPACK = ("slice", "reshape", "div", "elemwise")  # what unpacks it (moved with its wait)


def _feeders(nodes, starts, users_of) -> set[int]:
    """The starts and the packing nodes (reshapes, concats, casts) whose every user is a start,
    another feeder or a wait (a value shared by every bucket, the sample count, too), to a
    fixpoint. The gradients themselves stay where the backward pass computes them."""
    feed = {n.uid for n in starts}
    changed = True
    while changed:
        changed = False
        for node in reversed(nodes):  # users before their inputs
            if node.uid in feed or node.op.name not in PACK:
                continue
            used_by = users_of.get(node, ())
            # (a wait reads its start's send buffer only to keep it alive)
            if used_by and all(u.uid in feed or u.op.name in WAITS for u in used_by):
                feed.add(node.uid)
                changed = True
    return feed


def _sinkers(nodes, waits) -> set[int]:
    """The waits and the nodes that only unpack their results (slices, reshapes, the division
    by the sample count, the update that reads them): every input a sinker or a leaf."""
    sink = {n.uid for n in waits}
    for node in nodes:  # inputs before their users
        if node.uid not in sink and node.op.name in UNPACK and any(
                i.uid in sink for i in node.inputs) and all(
                i.uid in sink or i.op.name in LEAVES for i in node.inputs):
            sink.add(node.uid)
    return sink


def schedule_collectives(program: Graph) -> tuple[Graph, dict]:
    nodes = list(program.nodes)
    starts = [n for n in nodes if n.op.name in STARTS]
    waits = [n for n in nodes if n.op.name in WAITS]
    if not starts and not waits:
        return program, {"moved": 0}
    before = {n.uid: k for k, n in enumerate(nodes)}
    users_of = users(nodes)
    feed = _feeders(nodes, starts, users_of)
    order = list(nodes)
    placed: set[int] = set()
    for node in [n for n in nodes if n.uid in feed]:  # inputs first: as early as possible
        order.remove(node)
        where = {n.uid: k for k, n in enumerate(order)}
        at = max((where[i.uid] for i in node.inputs), default=-1) + 1
        while at < len(order) and order[at].uid in placed:  # (keep the feeders' own order)
            at += 1
        order.insert(at, node)
        placed.add(node.uid)
    sink = _sinkers(nodes, waits)
    for node in reversed([n for n in order if n.uid in sink]):  # users first: as late as possible
        order.remove(node)
        where = {n.uid: k for k, n in enumerate(order)}
        first = min((where[u.uid] for u in users_of.get(node, ())), default=len(order))
        order.insert(first, node)
    moved = sum(1 for k, n in enumerate(order) if before[n.uid] != k)
    program.set_nodes(order)
    positions = {n.uid: k for k, n in enumerate(order)}
    return program, {"moved": moved,
                     "starts": [positions[n.uid] for n in starts],
                     "waits": [positions[n.uid] for n in waits]}
