"""Memory planning: liveness, buffer reuse, in-place ops, peak bytes."""

import copy

import numpy as np
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.passes.memory import ALIASES, LEAVES, nbytes, plan_memory
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


def _same_size(a, b) -> bool:
    return sympy.expand(sympy.sympify(a) - sympy.sympify(b)) == 0


def plan_problems(program, plan) -> list[str]:
    """Everything wrong with a buffer plan, checked from the graph alone (not from the plan's
    own liveness). The invariant:

    * every computed value has a buffer of exactly its size; leaves have none;
    * a ``reshape`` that shares its input's buffer is a view of that memory: the memory lives
      from the step that computes it to the last read of it or of any view of it (outputs and
      update values are read after the last step);
    * two memories share a buffer only if their live ranges do not overlap, except that an
      elementwise value may be computed in place into the buffer of an input it reads, if that
      input's memory is last read at that very step (it dies there);
    * `plan.in_place` and `plan.aliases` name exactly those values; `dies_after` frees
      nothing before its last read.
    """
    nodes = program.nodes
    index = {n.uid: i for i, n in enumerate(nodes)}
    end = len(nodes)
    last_read = {n.uid: index[n.uid] for n in nodes}
    for i, n in enumerate(nodes):
        for x in n.inputs:
            last_read[x.uid] = max(last_read[x.uid], i)
    for r in program.roots():
        last_read[r.uid] = end
    problems = []
    buf = plan.buffer_of
    for n in nodes:
        if n.op.name in LEAVES:
            if n.uid in buf:
                problems.append(f"leaf {n.uid} ({n.op.name}) has buffer {buf[n.uid]}")
        elif n.uid not in buf:
            problems.append(f"{n.uid} ({n.op.name}) has no buffer")
        elif not _same_size(nbytes(n), plan.buffers[buf[n.uid]]):
            problems.append(f"{n.uid} ({n.op.name}, {nbytes(n)} bytes) is in buffer "
                            f"{buf[n.uid]} of {plan.buffers[buf[n.uid]]} bytes")
    memory, views = {}, set()  # value -> the value whose memory it is; the views
    for n in nodes:
        if n.uid not in buf:
            continue
        src = n.inputs[0].uid if n.op.name in ALIASES else None
        if src is not None and buf.get(src) == buf[n.uid]:
            memory[n.uid] = memory[src]
            views.add(n.uid)
        else:
            memory[n.uid] = n.uid
    if views != plan.aliases:
        problems.append(f"plan.aliases {sorted(plan.aliases)} but the views are {sorted(views)}")
    live = {}  # memory owner -> (first step, last read)
    for uid, owner in memory.items():
        first, last = live.get(owner, (index[owner], index[owner]))
        live[owner] = (first, max(last, last_read[uid]))
    owners_of = {}
    for owner in live:
        owners_of.setdefault(buf[owner], []).append(owner)
    overwrites = set()
    for b, owners in owners_of.items():
        owners.sort(key=lambda u: live[u][0])
        for a, c in zip(owners, owners[1:]):
            (_, end_a), (start_c, _) = live[a], live[c]
            node_c = nodes[start_c]
            if start_c > end_a:
                continue
            if start_c == end_a and node_c.op.is_elementwise and any(
                    memory.get(x.uid) == a for x in node_c.inputs):
                overwrites.add(c)  # in place: c overwrites the input that dies as c is made
                continue
            problems.append(f"buffer {b}: {c} ({node_c.op.name}, live {live[c]}) reuses it "
                            f"while {a} ({nodes[index[a]].op.name}, live {live[a]}) is live")
    if overwrites != plan.in_place:
        problems.append(f"plan.in_place {sorted(plan.in_place)} but the values computed in "
                        f"place are {sorted(overwrites)}")
    for step, dead in plan.dies_after.items():
        for uid in dead:
            if last_read[uid] > step:
                problems.append(f"{uid} freed after step {step} but read at {last_read[uid]}")
    return problems


@settings(max_examples=60, deadline=None)
@given(recipe=R.recipes, fuse=st.booleans())
def test_no_two_live_values_share_a_buffer(recipe, fuse):
    with gc.Graph("mem"):
        xs = [gc.placeholder(f"x{i}", R.SHAPE, "float64") for i in range(2)]
        outs = R.build(recipe, xs)[-3:]
        graph, _ = gc.optimize(outs, exclude=[] if fuse else ["fuse"])
    assert plan_problems(graph, graph.meta["memory"]) == []


def _sample_program():
    """x -> exp -> @W -> tanh (in place) -> reshape (view) -> @W -> outputs, all 4x4 float64,
    with exp also read by the final sum (so it lives long)."""
    with gc.Graph("sample"):
        x = gc.placeholder("x", (4, 4), "float64")
        w = gc.constant(np.eye(4))
        e = gc.exp(x)
        m = e @ w
        t = gc.tanh(m)
        r = t.reshape(16).reshape(4, 4)
        out = (r @ w) + e
        fn = gc.compile([x], gc.sum(out), optimize=False)
    return fn.graph, plan_memory(fn.graph)


def _uid(program, op, nth=0):
    return [n.uid for n in program.nodes if n.op.name == op][nth]


def test_the_checker_accepts_the_planner_and_sees_reuse_in_place_and_views():
    program, plan = _sample_program()
    assert plan_problems(program, plan) == []
    assert plan.in_place and plan.aliases  # the sample exercises both exceptions
    assert len(set(plan.buffer_of.values())) < len(plan.buffer_of)  # and reuse


def _corrupt(change):
    program, plan = _sample_program()
    plan = copy.deepcopy(plan)
    change(program, plan)
    return plan_problems(program, plan)


def test_the_checker_rejects_sharing_between_overlapping_values():
    def share(program, plan):  # exp is read by the last add: nothing may take its buffer
        plan.buffer_of[_uid(program, "matmul")] = plan.buffer_of[_uid(program, "exp")]

    assert any("reuses it while" in p for p in _corrupt(share))


def test_the_checker_rejects_a_non_elementwise_op_writing_over_its_dying_input():
    """The second matmul reads the reshape view of tanh, which dies there; a matmul cannot
    write its output over the input it is still reading (the old check accepted this)."""
    def overwrite(program, plan):
        view = _uid(program, "reshape", 1)
        second = _uid(program, "matmul", 1)
        plan.buffer_of[second] = plan.buffer_of[view]

    problems = _corrupt(overwrite)
    assert any("reuses it while" in p for p in problems), problems


def test_the_checker_rejects_in_place_over_an_input_that_lives_on():
    def overwrite(program, plan):  # tanh(m) in place over exp, which the add still reads
        tanh = _uid(program, "tanh")
        plan.buffer_of[tanh] = plan.buffer_of[_uid(program, "exp")]
        plan.in_place.add(tanh)

    assert any("reuses it while" in p for p in _corrupt(overwrite))


def test_the_checker_rejects_false_views_and_wrong_bookkeeping():
    def fake_view(program, plan):  # tanh claims to be a view of exp (the old check believed it)
        tanh = _uid(program, "tanh")
        plan.buffer_of[tanh] = plan.buffer_of[_uid(program, "exp")]
        plan.aliases.add(tanh)

    problems = _corrupt(fake_view)
    assert any("plan.aliases" in p for p in problems), problems
    assert any("reuses it while" in p for p in problems), problems

    def early_free(program, plan):
        exp = _uid(program, "exp")
        plan.dies_after.setdefault(0, []).append(exp)

    assert any("freed after step 0" in p for p in _corrupt(early_free))

    def forget_in_place(program, plan):
        plan.in_place.clear()

    assert any("plan.in_place" in p for p in _corrupt(forget_in_place))


def test_the_checker_rejects_a_value_in_a_buffer_of_another_size():
    def shrink(program, plan):
        plan.buffers[plan.buffer_of[_uid(program, "exp")]] = 8

    assert any("bytes) is in buffer" in p for p in _corrupt(shrink))


def test_numpy_backend_frees_dead_temporaries():
    x = gc.placeholder("x", ("N", 3))
    fn = gc.compile([x], gc.sum(gc.exp(x) @ gc.constant(np.ones((3, 3), np.float32))))
    assert "del " in fn.source
