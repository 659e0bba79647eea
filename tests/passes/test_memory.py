"""Memory planning: liveness, buffer reuse, in-place ops, peak bytes."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.passes.memory import plan_memory
from tests.passes import random_graphs as R


def test_peak_and_arena_bytes_by_hand():
    x = gc.placeholder("x", ("N", 4))
    W = gc.parameter("W", np.ones((4, 2), np.float32))
    fn = gc.compile([x], gc.sum(gc.exp(x) @ W))
    # exp(x): 16N bytes; @W: 8N bytes (exp dies here); sum: 4 bytes
    assert fn.memory(N=10) == {"arena_bytes": 160 + 80 + 4, "peak_live_bytes": 240,
                               "buffers": 3}
    assert fn.memory(N=1000)["peak_live_bytes"] == 24000


def test_buffers_are_reused_and_ops_run_in_place():
    x = gc.placeholder("x", (100,))
    h = x
    for _ in range(6):
        h = gc.ops.reshape(gc.exp(h) @ gc.constant(np.eye(100, dtype=np.float32)), (100,))
    fn = gc.compile([x], gc.sum(h), optimize=True)
    plan = fn.graph.meta["memory"]
    sizes = plan.evaluate({})
    assert sizes["buffers"] <= 4  # not one buffer per intermediate
    assert fn.stats["arena_bytes"] == sizes["arena_bytes"]
    chain = gc.compile([x], gc.sigmoid(gc.tanh(gc.exp(x * 2.0) + 1.0)), optimize=False)
    plan = plan_memory(chain.graph)
    assert plan.in_place  # each elementwise op overwrote its dying input


def _lifetimes(program, plan):
    index = {n.uid: i for i, n in enumerate(program.nodes)}
    return {uid: (index[uid], plan.last_use[uid]) for uid in plan.buffer_of}


@settings(max_examples=60, deadline=None)
@given(recipe=R.recipes, fuse=st.booleans())
def test_no_two_live_values_share_a_buffer(recipe, fuse):
    with gc.Graph("mem"):
        xs = [gc.placeholder(f"x{i}", R.SHAPE, "float64") for i in range(2)]
        outs = R.build(recipe, xs)[-3:]
        graph, _ = gc.optimize(outs, exclude=[] if fuse else ["fuse"])
    plan = graph.meta["memory"]
    spans = _lifetimes(graph, plan)
    shares = {}
    for uid, b in plan.buffer_of.items():
        shares.setdefault(b, []).append(uid)
    for uids in shares.values():
        uids.sort(key=lambda u: spans[u][0])
        for a, c in zip(uids, uids[1:]):
            start_c = spans[c][0]
            end_a = spans[a][1]
            # the next owner starts where the previous one is last read (in place), or later;
            # a reshape alias shares its source's buffer for the source's whole life
            assert start_c >= end_a or c in plan.aliases, (a, c, spans[a], spans[c])


def test_numpy_backend_frees_dead_temporaries():
    x = gc.placeholder("x", ("N", 3))
    fn = gc.compile([x], gc.sum(gc.exp(x) @ gc.constant(np.ones((3, 3), np.float32))))
    assert "del " in fn.source
