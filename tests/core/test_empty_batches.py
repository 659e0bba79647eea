"""A batch may be bound to 0 at a call, though dimension symbols are positive for
simplification: a relation that holds for every positive size but not for 0 (the row x[-1]
or x[0] exists, x[1:] has N - 1 >= 0 rows, a transposed convolution's output is >= 1) is
checked at the call, before native code runs (an audit read before an empty input's data,
wrote those bytes into a parameter, and returned arena memory as a (-1, 3) array)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc

BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True})]


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_a_row_of_an_empty_batch_is_a_shape_error_and_nothing_is_written(backend, options):
    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.ones(3, np.float32))
    fn = gc.compile([x], [x[-1], gc.stack([x[0], x[-1]])], updates={W: x[-1]},
                    backend=backend, backend_options=options)
    fn(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(W.value, [3, 4, 5])
    with pytest.raises(gc.ShapeError, match="N=0"):
        fn(np.zeros((0, 3), np.float32))
    np.testing.assert_array_equal(W.value, [3, 4, 5])


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_a_slice_longer_than_an_empty_batch_is_a_shape_error(backend, options):
    x = gc.placeholder("x", ("N", 3))
    fn = gc.compile([x], x[1:] * 2, backend=backend, backend_options=options)
    assert fn(np.ones((1, 3), np.float32)).shape == (0, 3)  # N - 1 = 0 rows: fine
    with pytest.raises(gc.ShapeError, match=r"N - 1 >= 0 elements.*N=0"):
        fn(np.zeros((0, 3), np.float32))


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_a_transposed_convolution_of_an_empty_image_is_a_shape_error(backend, options):
    x = gc.placeholder("x", ("N", 2, "H", "H"))
    w = gc.parameter("w", np.ones((2, 3, 3, 3), np.float32))
    y = gc.nn.functional.conv_transpose2d(x, w, stride=2, padding=1)
    fn = gc.compile([x], y.mean(), backend=backend, backend_options=options)
    assert np.isfinite(fn(np.ones((1, 2, 2, 2), np.float32)))
    with pytest.raises(gc.ShapeError, match="output size must be >= 1.*H=0"):
        fn(np.ones((1, 2, 0, 0), np.float32))


@pytest.mark.parametrize("backend,options", BACKENDS, ids=[b for b, _ in BACKENDS])
def test_slices_of_a_whole_empty_batch_are_empty_not_shape_errors(backend, options):
    """A slice of N rows (the gradient of gc.stack takes ``s[i:i+1, 0:N]``; so a 2-layer
    LSTM's gradient of h_n) is in range for N = 0: it was refused ("starts before 0", its
    last row N - 1 being -1) though the forward ran. x[1:] of one row is empty too, and
    x[1:] of none still an error."""
    x = gc.placeholder("x", ("N", 3), "float64")
    s = gc.stack([x, 2 * x], 0)  # (2, N, 3)
    fn = gc.compile([x], gc.grad(s.sum(), x), backend=backend, backend_options=options)
    assert fn(np.zeros((0, 3))).shape == (0, 3)
    np.testing.assert_array_equal(fn(np.ones((1, 3))), np.full((1, 3), 3.0))
    lstm = gc.nn.LSTM(3, 4, num_layers=2, dtype="float64", rng=1)
    with gc.Graph():
        xs = gc.placeholder("xs", ("T", "N", 3), "float64")
        _, (h, c) = lstm(xs)
        step = gc.compile([xs], gc.grad(h.sum() + c.sum(), lstm.weight_ih_l0),
                          backend=backend, backend_options=options)
        np.testing.assert_array_equal(step(np.zeros((3, 0, 3))), np.zeros((3, 16)))
    with gc.Graph():
        y = gc.placeholder("y", ("N", 3), "float64")
        tail = gc.compile([y], y[1:], backend=backend, backend_options=options)
        assert tail(np.ones((1, 3))).shape == (0, 3)
        with pytest.raises(gc.ShapeError, match="N=0"):
            tail(np.zeros((0, 3)))


_HUGE_EMPTY = r'''
import sys
import numpy as np
import graphc as gc
F = gc.nn.functional
backend = sys.argv[1]
options = {"emulate": True} if backend == "cuda" else None
x = gc.placeholder("x", ("a", "b", "c"))
img = gc.placeholder("img", ("n", "k", "h", "w"))
w = gc.placeholder("w", (1, 3, 4))
z = gc.placeholder("z", ("p", "q", "r"))  # (2**40, 3, 0): an empty innermost axis
outs = [x * 2, (x * 2).sum(0), x.sum(2), x.max(2), gc.softmax(x, 0),
        gc.concat([x, x], 1), F.max_pool2d(img, 2), gc.grad(F.avg_pool2d(img, 2).sum(), img),
        x @ w, z.sum((0, 2)), z.mean((0, 2))]
fn = gc.compile([x, img, w, z], outs, backend=backend, backend_options=options)
got = fn(np.empty((2**40, 0, 3), np.float32), np.empty((2**34, 0, 4, 4), np.float32),
         np.ones((1, 3, 4), np.float32), np.empty((2**40, 3, 0), np.float32))
print([g.shape for g in got], got[-2].tolist())
'''


@pytest.mark.parametrize("backend", ["numpy", "llvm", "cuda"])
def test_an_empty_array_with_a_huge_axis_returns_at_once(backend):
    """A (2**40, 0, 3) array holds nothing; llvm once walked its 2**40 empty rows (a loop
    nest's outer loops ran around an inner loop of 0 iterations: a hang). In a child
    process with a timeout, so that a regression fails instead of hanging the suite."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _HUGE_EMPTY, backend], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    big, small = 2**40, 2**34
    assert done.stdout.strip() == str([(big, 0, 3), (0, 3), (big, 0), (big, 0), (big, 0, 3),
                                       (big, 0, 3), (small, 0, 2, 2), (small, 0, 4, 4),
                                       (big, 0, 4), (3,), (3,)]) + " [0.0, 0.0, 0.0]"
