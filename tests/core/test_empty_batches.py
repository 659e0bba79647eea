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
