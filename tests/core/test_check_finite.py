"""backend_options={"check_finite": True}: the first node that produced a NaN, named with its
op and the user's line (every op of a fused group), before any update; infinities only where
they leave the step. The same message on every backend."""

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional
BACKENDS = [("numpy", {}), ("llvm", {}), ("cuda", {"emulate": True})]
IDS = ["numpy", "llvm", "cuda-emulated"]


def _step(backend, options):
    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.ones((3, 3), np.float32))
    h = x @ W
    bad = gc.sqrt(h - 1.0)  # NaN where h < 1: the line to name
    loss = gc.mean(bad * 2.0 + h)
    fn = gc.compile([x], loss, updates={W: W - 0.1 * gc.grad(loss, W)}, backend=backend,
                    backend_options={**options, "check_finite": True})
    return fn, W


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_the_first_nan_is_named_and_nothing_is_updated(backend, options):
    fn, W = _step(backend, options)
    fn(np.full((2, 3), 1.0, np.float32))  # finite: runs
    before = W.value
    with pytest.raises(gc.BackendError) as err:
        fn(np.array([[1.0, 1, 1], [-1, 0, 0]], np.float32))
    message = str(err.value)
    assert "first NaN" in message and "no parameter was updated" in message
    assert "sqrt" in message and "bad = gc.sqrt(h - 1.0)" in message  # the op and its line
    assert "matmul" not in message  # not a later node, not an earlier one
    np.testing.assert_array_equal(W.value, before)


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_infinities_are_fine_inside_and_caught_where_they_leave(backend, options):
    x = gc.placeholder("x", (2, 3))
    mask = gc.constant(np.array([[0.0, -np.inf, 0.0], [0.0, 0.0, -np.inf]], np.float32))
    probs = gc.softmax(x + mask, 1)  # a masked softmax: -inf inside, finite outside
    opts = {**options, "check_finite": True}
    fn = gc.compile([x], probs, backend=backend, backend_options=opts)
    out = fn(np.zeros((2, 3), np.float32))
    np.testing.assert_allclose(out.sum(1), [1, 1], rtol=1e-6)
    leaking = gc.compile([x], gc.exp(x * 100.0), backend=backend, backend_options=opts)
    with pytest.raises(gc.BackendError, match=r"(?s)first inf.*exp.*\(an output\)"):
        leaking(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_every_backend_gives_the_same_message(backend, options):
    fn, _ = _step(backend, options)
    reference, _ = _step("numpy", {})
    x = np.array([[1.0, 1, 1], [-1, 0, 0]], np.float32)
    with pytest.raises(gc.BackendError) as got:
        fn(x)
    with pytest.raises(gc.BackendError) as want:
        reference(x)
    assert str(got.value) == str(want.value)


def test_without_the_option_nan_flows_through():
    x = gc.placeholder("x", (2,))
    out = gc.compile([x], gc.sqrt(x))(np.array([-1.0, 4.0], np.float32))
    assert np.isnan(out[0]) and out[1] == 2.0
    with pytest.raises(gc.BackendError, match="unknown numpy backend options"):
        gc.compile([x], gc.sqrt(x), backend_options={"check_nans": True})


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
@pytest.mark.parametrize("reduce", [gc.sum, gc.max, gc.mean])
def test_a_reduction_to_a_scalar_is_checked_too(backend, options, reduce):
    """A whole reduction is a scalar (on the NumPy backend a NumPy scalar, not an array:
    the check once skipped it, returned the NaN and wrote it into the parameter)."""
    x = gc.placeholder("x", (2,))
    s = gc.parameter("s", np.float32(1.0))
    total = reduce(1.0 / x)
    fn = gc.compile([x], total, updates={s: s + total}, backend=backend,
                    backend_options={**options, "check_finite": True})
    assert fn(np.array([1.0, 2.0], np.float32)) > 0
    before = s.value
    for bad, what in (([0.0, -0.0], "NaN" if reduce is not gc.max else "inf"), ([0.0, 1.0], "inf")):
        with pytest.raises(gc.BackendError, match=f"first {what}"):
            fn(np.array(bad, np.float32))
        np.testing.assert_array_equal(s.value, before)


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_a_loop_s_nan_is_named_at_its_line_and_its_inner_infinities_pass(backend, options):
    """A NaN made in a scan's body is named with the scan's line and the body's op, on every
    backend (the NumPy backend once
    named the outer node at the body node's position: a constant); an infinity in a body's
    carry stays inside the program (a running maximum from -inf), so it passes, as on
    llvm (the NumPy backend once checked a body's outputs as if they left the step)."""
    opts = {**options, "check_finite": True}
    xs = gc.placeholder("xs", ("T", 2), "float64")
    w = gc.placeholder("w", (2,), "float64")
    init = gc.constant(np.zeros(2))
    c, _ = gc.scan(lambda c, x: (c + gc.log(x), c), init, xs)  # the line to name
    fn = gc.compile([xs, w], (c * w).sum(), backend=backend, backend_options=opts)
    assert np.isfinite(fn(np.ones((2, 2)), np.ones(2)))
    with pytest.raises(gc.BackendError, match=r"(?s)first NaN.*gc\.scan\(lambda c, x: \(c \+ ") \
            as caught:
        fn(np.array([[1.0, 2.0], [-1.0, 3.0]]), np.ones(2))
    # the body's node, with its fused group's ops (cuda once named the loop's output)
    assert "log, created at" in str(caught.value), str(caught.value)
    assert "in the body of a gc.scan loop" in str(caught.value)
    # a NaN in a nested loop's body (the inner loop names its node; the outer passes it on)
    outer, _ = gc.scan(lambda c, x: (c + gc.scan(lambda d, y: (d + gc.log(y), None),
                                                 gc.constant(np.zeros(())), x)[0], None),
                       gc.constant(np.zeros(())), xs)
    fn = gc.compile([xs], outer, backend=backend, backend_options=opts)
    assert np.isfinite(fn(np.ones((2, 2))))
    with pytest.raises(gc.BackendError, match="first NaN") as caught:
        fn(np.array([[1.0, 2.0], [-1.0, 3.0]]))
    assert "in the body of a gc.scan loop" in str(caught.value), str(caught.value)
    assert "log" in str(caught.value).split("in the body")[0]  # the inner body's op
    lowest = gc.constant(np.full(2, -np.inf))
    top, _ = gc.scan(lambda c, x: (gc.maximum(c, x), None), lowest, xs)
    fn = gc.compile([xs], top, backend=backend, backend_options=opts)
    np.testing.assert_array_equal(fn(np.array([[-np.inf, -np.inf], [1.0, 3.0]])), [1.0, 3.0])


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
def test_a_loop_body_s_nan_gives_the_same_message_on_every_backend(backend, options):
    """The body's fused group, its ops and lines: cuda's host-side checks read the body's
    values after their launches at every step, as llvm's step checks them in native code."""
    def run(backend, options):
        xs = gc.placeholder("xs", ("T", 2), "float64")
        c, _ = gc.scan(lambda c, x: (c + gc.log(x) * 2.0, c), gc.constant(np.zeros(2)), xs)
        fn = gc.compile([xs], c.sum(), backend=backend,
                        backend_options={**options, "check_finite": True})
        with pytest.raises(gc.BackendError) as caught:
            fn(np.array([[1.0, 2.0], [-1.0, 3.0]]))
        return str(caught.value)

    assert run(backend, options) == run("numpy", {})


@pytest.mark.parametrize("backend,options", BACKENDS, ids=IDS)
@pytest.mark.parametrize("optimize", [True, False])
def test_a_fed_nan_is_caught_where_it_leaves_even_as_a_bare_input(backend, options, optimize):
    """`updates={P: x * 1.0}`: optimized, the new value is the placeholder itself, which the
    check once skipped (as every input, parameter and constant): the fed NaN went into P."""
    x = gc.placeholder("x", (3,))
    P = gc.parameter("P", np.zeros(3, np.float32))
    fn = gc.compile([x], [], updates={P: x * 1.0}, optimize=optimize, backend=backend,
                    backend_options={**options, "check_finite": True})
    fn(np.ones(3, np.float32))
    with pytest.raises(gc.BackendError, match="first NaN") as caught:
        fn(np.array([np.inf, np.nan, 1], np.float32))
    assert ("placeholder x" if optimize else "mul") in str(caught.value)
    np.testing.assert_array_equal(P.value, [1, 1, 1])
    Q = gc.parameter("Q", np.array([-np.inf, 0.0], np.float32))
    shown = gc.compile([], Q * 1.0, backend=backend,
                       backend_options={**options, "check_finite": True})
    with pytest.raises(gc.BackendError, match=r"(?s)first inf .*\(an output\)"):
        shown()
