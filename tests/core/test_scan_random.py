"""Random ops inside gc.scan bodies: each step draws fresh numbers (the state is a carry entry),
the state's default update covers all T steps, seeds replay, backends agree bit for bit, the
gradient's reverse loop sees the forward masks; batch norm is refused in training mode and
works in eval mode."""

import numpy as np
import pytest

import graphc as gc
from graphc.ops.random import random_uniform_reference
from tests.helpers import LOOP_BACKENDS, compile_on

RNG = np.random.RandomState(3)
BACKENDS = pytest.mark.parametrize("backend", LOOP_BACKENDS)




def _streams(loop_output: gc.Tensor) -> list[int]:
    """The Philox streams of the random draws in the body of the loop `loop_output` reads, in
    the order they were built."""
    body = loop_output.node.inputs[0].attrs["body"]
    return [n.attrs["stream"] for n in body.nodes if n.op.name == "random_uniform"]


def _draw(seed: int, step: int, stream: int, shape, dtype) -> np.ndarray:
    return random_uniform_reference(np.array([seed, step]), shape=shape, stream=stream,
                                    dtype=np.dtype(dtype))


@BACKENDS
def test_each_step_draws_fresh_numbers_and_the_state_advances_by_all_draws(backend):
    # four draws per step from one state (uniform, bernoulli, normal = two uniforms): step t
    # uses the counter word step0 + 4t (one stream per draw), exactly the NumPy Philox
    # reference on every backend (normal: Box-Muller, within a few ulp); symbolic T, one
    # compile, two lengths
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3), "float32")
        state = gc.rng_state(seed=11)

        def step(c, xt):
            u = gc.random.uniform((3,), state=state)  # float32
            b = gc.random.bernoulli((2,), 0.5, "float64", state=state)
            n = gc.random.normal((3,), 1.0, 2.0, state=state)
            return c + u * xt, (u, b, n)

        c, (us, bs, ns) = gc.scan(step, gc.zeros((3,), "float32"), x)
        f = compile_on([x], [c, us, bs, ns], backend=backend)
    s_u, s_b, s_n1, s_n2 = _streams(us)
    start = 0
    seen = []
    for T in (4, 3):
        xv = RNG.rand(T, 3).astype(np.float32)
        c_v, u_v, b_v, n_v = f(xv)
        for t in range(T):
            word = start + 4 * t
            np.testing.assert_array_equal(u_v[t], _draw(11, word, s_u, (3,), np.float32))
            np.testing.assert_array_equal(
                b_v[t], (_draw(11, word, s_b, (2,), np.float64) < 0.5).astype(np.float64))
            u1, u2 = (_draw(11, word, s, (3,), np.float64) for s in (s_n1, s_n2))
            normal = np.sqrt(-2.0 * np.log(1.0 - u1)) * np.cos(2.0 * np.pi * u2) * 2.0 + 1.0
            np.testing.assert_allclose(n_v[t], normal.astype(np.float32), rtol=5e-7, atol=5e-7)
        np.testing.assert_allclose(c_v, (u_v * xv).sum(0), rtol=1e-6)
        start += 4 * T
        np.testing.assert_array_equal(state.value, [11, start])  # default update: + 4T
        seen.append(u_v)
    rows = np.concatenate(seen)
    assert len({r.tobytes() for r in rows}) == len(rows)  # every step, every call: fresh


@BACKENDS
def test_draws_shaped_like_a_captured_tensor_are_fresh_at_every_step(backend):
    """normal_like / uniform_like / bernoulli_like / gaussian_noise of a tensor the body
    captures (weight noise in a recurrent cell) were built in the captured tensor's graph,
    outside the body: one draw per call, the same numbers at every step. They are the
    body's own draws now, as those like the x slice, and advance the state per step."""
    with gc.Graph():
        xs = gc.placeholder("xs", ("T", 3), "float64")
        W = gc.parameter("W", np.ones((3,)))
        state = gc.rng_state(seed=5)

        def step(h, x):
            return h, (gc.random.normal_like(W, state=state),
                       gc.random.uniform_like(W, state=state),
                       gc.random.bernoulli_like(W, 0.5, "float64", state=state),
                       gc.nn.functional.gaussian_noise(W, 0.1, True, state=state),
                       gc.random.normal_like(x, state=state))

        _, ys = gc.scan(step, gc.zeros((3,), "float64"), xs)
        f = compile_on([xs], list(ys), backend=backend)
    outs = f(np.zeros((6, 3)))
    assert state.value[1] > 0
    body = ys[0].node.inputs[0].attrs["body"]
    assert sum(n.op.name == "random_uniform" for n in body.nodes) >= 8  # all in the body
    for out in (outs[0], outs[1], outs[3], outs[4]):
        assert len({r.tobytes() for r in out}) == 6, out
    assert len({r.tobytes() for r in outs[2]}) >= 4  # 0/1 rows of 3: repeats are possible
    again = f(np.zeros((6, 3)))
    assert not np.array_equal(again[0], outs[0])  # the next call: fresh too


def test_seeds_replay_and_calls_differ_with_functional_dropout():
    # F.dropout with a seed and gc.random.normal with a seed, created inside the body
    def build():
        with gc.Graph():
            x = gc.placeholder("x", (5, 4), "float64")

            def step(h, xt):
                d = gc.nn.functional.dropout(xt + h, 0.5, True, seed=42)
                n = gc.random.normal((4,), dtype="float64", seed=43)
                return gc.tanh(d + 0.1 * n), d
            h, ds = gc.scan(step, gc.zeros((4,), "float64"), x)
            return gc.compile([x], [h, ds])

    f, g = build(), build()
    xv = RNG.randn(5, 4)
    first = f(xv)
    for a, b in zip(first, g(xv)):  # same seeds: the same numbers
        np.testing.assert_array_equal(a, b)
    masks = first[1] != 0
    assert 0 < masks.sum() < masks.size
    assert len({m.tobytes() for m in masks}) > 1  # masks differ between steps
    second = f(xv)
    assert not np.array_equal(second[1] != 0, masks)  # and between calls


@BACKENDS
def test_nested_scans_with_symbolic_lengths_draw_distinct_numbers(backend):
    # the outer body draws once and runs an inner loop of U steps that draws once per step:
    # the outer step advances the state by 1 + U, a call by T * (1 + U)
    with gc.Graph():
        x = gc.placeholder("x", ("T", "U", 2), "float64")
        state = gc.rng_state(seed=3)

        def outer(c, row):
            a = gc.random.uniform((2,), dtype="float64", state=state)

            def inner(ci, e):
                u = gc.random.uniform((2,), dtype="float64", state=state)
                return ci + u * e, u
            ci, us = gc.scan(inner, c, row)
            return ci + a, (a, us)

        c, (a_s, u_s) = gc.scan(outer, gc.zeros((2,), "float64"), x)
        f = compile_on([x], [c, a_s, u_s], backend=backend)
    s_a = _streams(a_s)[0]
    inner_body = next(n for n in a_s.node.inputs[0].attrs["body"].nodes if n.op.name == "scan")
    s_u = [n.attrs["stream"] for n in inner_body.attrs["body"].nodes
           if n.op.name == "random_uniform"][0]
    start = 0
    for T, U in ((2, 3), (3, 1)):
        xv = RNG.randn(T, U, 2)
        c_v, a_v, u_v = f(xv)
        assert a_v.shape == (T, 2) and u_v.shape == (T, U, 2)
        for i in range(T):
            base = start + i * (1 + U)
            np.testing.assert_array_equal(a_v[i], _draw(3, base, s_a, (2,), np.float64))
            for j in range(U):
                np.testing.assert_array_equal(u_v[i, j], _draw(3, base + j, s_u, (2,),
                                                               np.float64))
        np.testing.assert_allclose(c_v, (u_v * xv).sum((0, 1)) + a_v.sum(0), rtol=1e-12)
        start += T * (1 + U)
        np.testing.assert_array_equal(state.value, [3, start])


def _dropout_rnn(W, U, drop):
    def step(h, xt):
        d = drop(h)
        h2 = gc.tanh(xt @ W + d @ U)
        return h2, (h2, d)
    return step


def _reference_cost(xv, h0, Wv, Uv, masks):
    """The unrolled computation with the masks the compiled loop drew (scaled keep masks)."""
    h, cost = h0, 0.0
    for t in range(len(xv)):
        h = np.tanh(xv[t] @ Wv + (h * masks[t]) @ Uv)
        cost += (h * h).sum() * (t + 1)
    return cost + h.sum()


@BACKENDS
def test_dropout_gradient_uses_the_forward_masks(backend):
    # gc.grad through a loop whose body uses nn.Dropout: the reverse loop must see the masks
    # the forward steps drew; compared with central differences of the unrolled reference
    # (float64) with the masks read back from a ys output
    T, N, D, H, p = 4, 2, 3, 4, 0.4
    Wv, Uv = RNG.randn(D, H) * 0.5, RNG.randn(H, H) * 0.5
    drop = gc.nn.Dropout(p, rng=np.random.default_rng(8))
    with gc.Graph():
        x = gc.placeholder("x", ("T", N, D), "float64")
        h0 = gc.placeholder("h0", (N, H), "float64")
        W, U = gc.parameter("W", Wv), gc.parameter("U", Uv)
        hT, (hs, ds) = gc.scan(_dropout_rnn(W, U, drop), h0, x)
        weights = gc.placeholder("w", ("T", 1, 1), "float64")
        cost = (hs * hs * weights).sum() + hT.sum()
        gW, gU, gx = gc.grad(cost, [W, U, x])
        f = compile_on([x, h0, weights], [cost, gW, gU, gx, hs, ds], backend=backend)
    xv, hv, wv = RNG.randn(T, N, D), RNG.randn(N, H), np.arange(1.0, T + 1).reshape(-1, 1, 1)
    cost_v, gW_v, gU_v, gx_v, hs_v, ds_v = f(xv, hv, wv)
    prev = np.concatenate([hv[None], hs_v[:-1]])
    masks = np.where(ds_v != 0, 1.0 / (1.0 - p), 0.0)
    np.testing.assert_allclose(ds_v, prev * masks, rtol=1e-12)
    assert 0 < (ds_v == 0).sum() < ds_v.size and len({m.tobytes() for m in masks}) == T
    np.testing.assert_allclose(cost_v, _reference_cost(xv, hv, Wv, Uv, masks), rtol=1e-12)
    for got, pos in ((gW_v, 2), (gU_v, 3), (gx_v, 0)):  # position in the reference's args
        numeric = np.zeros_like(got)
        for idx in np.ndindex(got.shape):
            costs = []
            for sign in (1, -1):
                args = [xv, hv, Wv, Uv]
                args[pos] = args[pos].copy()
                args[pos][idx] += sign * 1e-6
                costs.append(_reference_cost(*args, masks))
            numeric[idx] = (costs[0] - costs[1]) / 2e-6
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8)
    # the call advanced the dropout state by T (one draw per step), the next masks differ
    np.testing.assert_array_equal(drop.rng.value[1], T)
    assert not np.array_equal(f(xv, hv, wv)[5] != 0, ds_v != 0)


def _noisy_dropout_cost(ps, reverse=False):
    x, h0, W = ps

    def step(h, xt):
        d = gc.nn.functional.dropout(h, 0.3, True, seed=17)
        noise = gc.random.normal_like(h, std=0.1, seed=19)
        return gc.tanh(xt @ W + d + noise), (d * d).sum()

    hT, ys = gc.scan(step, h0, x, reverse=reverse)
    return (hT ** 2).sum() + ys.sum()


def test_check_grad_first_and_second_order_with_random_numbers_in_the_body():
    # check_grad freezes the random states: every evaluation draws the same numbers
    inputs = [RNG.randn(3, 2, 3), RNG.randn(2, 3), RNG.randn(3, 3) * 0.5]
    gc.check_grad(_noisy_dropout_cost, inputs)
    gc.check_grad(lambda ps: _noisy_dropout_cost(ps, reverse=True),
                  [RNG.randn(2, 1, 3), RNG.randn(1, 3), inputs[2]],
                  shapes=[("T", 1, 3), None, None])

    def second(ps):
        x, h0, W = ps
        gW = gc.grad(_noisy_dropout_cost(ps), W)
        return (gW * gW).sum()
    gc.check_grad(second, [RNG.randn(2, 1, 3), RNG.randn(1, 3), inputs[2]])


def test_batch_norm_training_is_refused_and_eval_matches_the_unrolled_loop():
    class Net(gc.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = gc.nn.BatchNorm1d(3, dtype="float64")
            self.drop = gc.nn.Dropout(0.5)

        def forward(self, h):
            return self.drop(self.bn(h))

    net = Net()
    net.bn.running_mean.value = RNG.randn(3)
    net.bn.running_var.value = RNG.rand(3) + 0.5
    with gc.Graph():
        x = gc.placeholder("x", (4, 2, 3), "float64")
        h0 = gc.zeros((2, 3), "float64")
        step = lambda h, xt: (gc.tanh(net(h) + xt), None)  # noqa: E731
        with pytest.raises(gc.GraphError, match=r"batch norm in training mode.*'bn'.*"
                                                r"eval.*LayerNorm") as info:
            gc.scan(step, h0, x)
        assert "running_mean" in str(info.value)
        counter = gc.parameter("counter", np.zeros(3))

        def counting(h, xt):  # any other default update inside a body is refused too
            y = h + xt
            y.graph.add_default_update(y.node, counter.node, (counter + 1).node)
            return y, None
        with pytest.raises(gc.GraphError, match="'counter'.*only random states advance"):
            gc.scan(counting, h0, x)
        net.eval()  # batch norm reads its running statistics; dropout is the identity
        hT, _ = gc.scan(step, h0, x)
        h = h0
        for t in range(4):
            h, _ = step(h, x[t])
        f = gc.compile([x], [hT, h])
    looped, unrolled = f(RNG.randn(4, 2, 3))
    np.testing.assert_allclose(looped, unrolled, rtol=1e-14)
    assert not f.parameters()  # no default update: nothing advances


def test_a_state_shared_with_a_draw_outside_the_loop_saved_and_reloaded(tmp_path):
    # one Dropout module before the loop and inside the (reverse) body: the updates chain
    # (+1 outside, +T inside) without a second copy of the loop; save/load keeps the loop and
    # its default update
    drop = gc.nn.Dropout(0.5, rng=np.random.default_rng(1))

    def step(c, xt):
        d = drop(xt)
        return c + d, d

    with gc.Graph() as g:
        x = gc.placeholder("x", ("T", 6), "float64")
        x0 = drop(x[0])
        c, ds = gc.scan(step, x0, x, reverse=True)
        f = gc.compile([x], [c, ds, x0])
    assert sum(n.op.name == "scan" for n in f.graph.nodes) == 1
    assert [p.name for p in f.parameters()] == ["rng"]
    xv = RNG.rand(5, 6) + 0.5
    c_v, ds_v, x0_v = f(xv)
    np.testing.assert_array_equal(drop.rng.value[1], 1 + 5)
    masks = ds_v != 0
    assert len({m.tobytes() for m in masks}) > 1
    np.testing.assert_array_equal(ds_v[masks], 2 * xv[masks])
    np.testing.assert_allclose(c_v, x0_v + ds_v.sum(0), rtol=1e-14)
    gc.save(f, tmp_path / "f.graphc")
    f2 = gc.load(tmp_path / "f.graphc")
    state = f2.parameters()[0]
    np.testing.assert_array_equal(state.value[1], 6)
    again = f(xv)
    for a, b in zip(f2(xv), again):  # same state: the reloaded function replays the call
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(state.value[1], 12)
    gc.save(g, tmp_path / "g.graphc")
    loops = [n for n in gc.load(tmp_path / "g.graphc").nodes if n.op.name == "scan"]
    assert loops and loops[0].attrs["n_carry"] == 2  # the carry and the random state
    src = gc.viz.to_dot([c]).source
    assert "scan over T steps" in src and "random_uniform" in src
