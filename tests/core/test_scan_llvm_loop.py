"""The llvm loop without its copies: carries pointer-swapped with the body buffer of their new
value, ys computed in place in ys[t], a loop's results read where the loop left them, and the
profile's per-body-kernel counters. Each case against the NumPy backend's loop (float64)."""

import re

import numpy as np
import pytest

import graphc as gc
from graphc.passes.manager import PASS_NAMES

RNG = np.random.RandomState(7)
# the pipeline without the passes that move a loop's accumulations and invariant products out
# of its body (sink, hoist): the loop itself must then handle c + A @ B
KEEP_IN_BODY = [p for p in PASS_NAMES if p not in ("sink", "hoist")]


def _both(inputs, outputs, **kwargs):
    return [gc.compile(inputs, outputs, backend=b, **kwargs) for b in ("numpy", "llvm")]


def _agree(fns, *args):
    ref, got = (f(*args) for f in fns)
    for r, g in zip(ref, got):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14)


def _swapped(source: str) -> set[int]:
    """The carry entries the llvm loop swaps (its IR names their old pointer)."""
    return {int(i) for i in re.findall(r'%"?carry(\d+)\.old', source)}


@pytest.mark.parametrize("reverse", [False, True])
def test_swapped_and_permuted_carries_over_calls_of_odd_and_even_length(reverse):
    """(a, b) -> (b, new_b): a staged copy of a carry that is itself swapped; the same new
    value as two carries (the second is copied before the swap). An odd length leaves the
    swapped pointers exchanged for the next call, which must not matter."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 2, 3), "float64")
        a0 = gc.placeholder("a0", (2, 3), "float64")

        def step(c, xt):
            a, b, s, _ = c
            new_b = a * 0.5 + xt
            return (b, new_b, s + gc.tanh(b), new_b), None

        zeros = gc.zeros((2, 3), "float64")
        carry, _ = gc.scan(step, (a0, zeros, zeros, zeros), x, reverse=reverse)
        fns = _both([x, a0], list(carry))
    assert _swapped(fns[1].source) == {1, 2}
    for T in (3, 4, 1, 5, 0):
        _agree(fns, RNG.randn(T, 2, 3), RNG.randn(2, 3))


@pytest.mark.parametrize("reverse", [False, True])
def test_ys_computed_in_place_next_to_copied_ones(reverse):
    """A y of its own (in place), a carry (copied), a new carry's value (in place: the carry
    copies it out of ys[t] rather than swapping), a reshape of another new carry (in place on
    the buffer it shares with that carry), an x slice (copied)."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 4), "float64")

        def step(c, xt):
            a, s = c
            new_a = gc.sin(a) + xt
            new_s = s * 0.9 + new_a
            ys = (gc.exp(new_s * 0.1), a, new_a, new_s.reshape((2, 2)), xt)
            return (new_a, new_s), ys

        carry, ys = gc.scan(step, (gc.zeros((4,), "float64"), gc.ones((4,), "float64")), x,
                            reverse=reverse)
        fns = _both([x], [*carry, *ys])
    source = fns[1].source
    assert {"ys0.in_place", "ys2.in_place", "ys3.in_place"} <= set(
        re.findall(r"ys\d\.in_place", source))
    assert "ys1.in_place" not in source and "ys4.in_place" not in source
    assert not _swapped(source)  # (both new carries are ys, claimed first)
    for T in (5, 2):
        _agree(fns, RNG.randn(T, 4))


def test_nested_loops_swap_and_write_in_place_at_both_levels():
    """An inner reverse loop inside an outer one: the inner ys go out as the outer ys (the
    inner result is a body output: copied), a reshape of them is summed (copied: the reshape
    is a view of the result's own buffer), the inner final carry is read in place."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3, 2), "float64")
        W = gc.parameter("W", RNG.randn(2, 2))

        def outer(c, rows):
            h, k = c

            def inner(s, v):
                s2 = gc.tanh(s @ W + v)
                return s2, s2 * 2.0

            s, inner_ys = gc.scan(inner, h, rows, reverse=True)
            total = inner_ys.reshape((6,)).sum() + (s * 3.0).sum()
            return (s + h * 0.5, k + total), inner_ys

        carry, ys = gc.scan(outer, (gc.zeros((2,), "float64"), gc.zeros((), "float64")), x)
        fns = _both([x], [*carry, ys])
    assert _swapped(fns[1].source)
    for T in (3, 2):
        _agree(fns, RNG.randn(T, 3, 2) * 0.5)


def test_results_read_in_place_through_reshapes_and_copied_when_they_leave():
    """Loop results read where the loop left them: by an elementwise node, through a reshape
    (a view the memory plan made of the result's buffer: read in the loop's slot too);
    copied when the result, or a reshape of it, is an output of the step."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3), "float64")
        c, ys = gc.scan(lambda c, xt: (c + xt, c * xt), gc.ones((3,), "float64"), x)
        _, hs = gc.scan(lambda c, xt: (c * 0.5 + xt, gc.exp(c)), gc.zeros((3,), "float64"),
                        x, reverse=True)
        _, zs = gc.scan(lambda c, xt: (c - xt, c + 1.0), gc.zeros((3,), "float64"), x)
        flat = hs.reshape((-1,)).reshape((-1, 3))
        fns = _both([x], [ys, (hs * 2.0).sum(axis=0), flat + 1.0, c, zs.reshape((-1,))])
    for T in (4, 1):
        _agree(fns, RNG.randn(T, 3))


def _accumulated(source: str) -> int:
    """How many body matmul kernels add their product into a carry's slot."""
    kernels = re.findall(r'define internal i32 @"k\d+\.matmul"\(.*?\n}', source, re.S)
    return sum('%"carry" = load ptr' in k for k in kernels)


@pytest.mark.parametrize("reverse", [False, True])
def test_carries_accumulating_a_product_are_updated_in_place(reverse):
    """c + A @ B (either order) adds the product into the carry itself; not when the
    entering carry is read elsewhere (a y), nor for a batched product. (Compiled without the
    passes that would move these accumulations out of the body.)"""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 3, 4), "float64")
        W = gc.parameter("W", RNG.randn(4, 4) * 0.5)
        V = gc.parameter("V", RNG.randn(4, 4) * 0.5)

        def step(c, xt):
            h, g1, g2, seen, batched = c
            h = gc.tanh(h @ W + xt)
            g1 = g1 + h.T @ xt  # (4, 4)
            g2 = h @ V + g2  # (3, 4)
            new_seen = seen + h @ W.T
            batched = batched + gc.stack([h, h]) @ gc.stack([h.T, h.T]) * 0.1
            return (h, g1, g2, new_seen, batched), seen

        init = (gc.zeros((3, 4), "float64"), gc.zeros((4, 4), "float64"),
                gc.ones((3, 4), "float64"), gc.zeros((3, 4), "float64"),
                gc.zeros((2, 3, 3), "float64"))
        carry, seen = gc.scan(step, init, x, reverse=reverse)
        fns = _both([x], [*carry, seen], optimize=KEEP_IN_BODY)
    assert _accumulated(fns[1].source) == 2
    for T in (3, 0):
        _agree(fns, RNG.randn(T, 3, 4))


def test_gradient_through_swapped_carries_matches_numpy():
    """Backpropagation through time on llvm with every copy gone: the forward loop's
    histories feed the reverse loop in place, whose carries are swapped and whose captured
    gradients (kept in the body: no sink/hoist passes) are accumulated in place; a training
    step applied twice (the parameters change between calls)."""
    with gc.Graph():
        x = gc.placeholder("x", ("T", 2, 3), "float64")
        W = gc.parameter("W", RNG.randn(3, 8) * 0.5)
        U = gc.parameter("U", RNG.randn(4, 8) * 0.5)

        def step(c, xt):
            h, m = c
            z = xt @ W + h @ U
            i, g = z[:, :4], z[:, 4:]
            m2 = m * gc.sigmoid(i) + gc.tanh(g)
            return (gc.tanh(m2), m2), m2.sum(axis=1)

        zeros = gc.zeros((2, 4), "float64")
        (h, _), ys = gc.scan(step, (zeros, zeros), x)
        loss = (h * h).sum() + ys.sum() * 0.1
        gW, gU, gx = gc.grad(loss, [W, U, x])
        inputs, outputs = [x], [loss, gW, gU, gx]
        ref = gc.compile(inputs, outputs, backend="numpy")
        start = W.value.copy(), U.value.copy()
        fn = gc.compile(inputs, outputs, updates={W: W - 0.1 * gW, U: U - 0.1 * gU},
                        backend="llvm", optimize=KEEP_IN_BODY)
    assert _swapped(fn.source) and _accumulated(fn.source) == 2  # (the gradients to W, U)
    xv = RNG.randn(5, 2, 3)
    for _ in range(2):
        before = W.value.copy(), U.value.copy()
        want = ref(xv)  # (before the llvm step updates the parameters)
        got = fn(xv)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-11)
        np.testing.assert_allclose(W.value, before[0] - 0.1 * want[1], rtol=1e-12)
    assert not np.allclose(W.value, start[0])


def test_profile_counts_each_body_kernel_and_the_loop_control_apart():
    with gc.Graph():
        x = gc.placeholder("x", ("T", 4), "float64")
        W = gc.parameter("W", RNG.randn(4, 4))
        c, _ = gc.scan(lambda c, xt: (gc.tanh(c @ W + xt), None), gc.zeros((4,), "float64"),
                       x)
        fn = gc.compile([x], c, backend="llvm", backend_options={"profile": True})
    for _ in range(3):
        fn(RNG.randn(16, 4))
    profile = dict(fn.kernel_profile())
    loops = [name for name in profile if name.endswith(".scan")]
    assert len(loops) == 1
    body = {name: cycles for name, cycles in profile.items()
            if name.startswith(loops[0] + "/")}
    assert any(".matmul" in name for name in body) and len(body) >= 2
    assert all(cycles >= 0 for cycles in profile.values())  # the loop's own: control only
    assert sum(body.values()) > 0
