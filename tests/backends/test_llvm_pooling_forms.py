"""The two forms of a recording max pooling (graphc/ops/pool.py, `_decodes_by_shifts`) and
loads that need no clamp (backends/kernelgen/nest.py, `PointEmitter._inside`): both forms
against the NumPy backend on hostile values, and the rules themselves, positive and negative."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc
from graphc.ops.pool import _decodes_by_shifts

F = gc.nn.functional


def _hostile(shape, seed: int) -> np.ndarray:
    """Values with ties (zeros, repeats), signed zeros, NaN and infinities."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=shape).astype(np.float32)  # many equal values in a window
    flat = x.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, max(4, flat.size // 10)), replace=False)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0, 0.0, 1e38, -1e38], np.float32)
    flat[picks] = specials[np.arange(picks.size) % specials.size]
    return x


def _step(shape, pool, seed):
    """(loss, gradient in x, output) of sum(pool(relu(x)) * weights), compiled per backend."""
    x = gc.placeholder("x", ("N",) + shape[1:])
    y = pool(gc.relu(x))
    weights = gc.constant(np.random.default_rng(seed + 1).normal(
        size=tuple(int(d) for d in y.shape[1:])).astype(np.float32))
    loss = (y * weights).sum()
    grad = gc.grad(loss, [x])[0]
    return [x], [y, grad]


CASES = [
    # (input shape, pooling, whether the plane's divisors are powers of two)
    ((2, 3, 8, 8), lambda h: F.max_pool2d(h, 2), True),
    ((2, 3, 6, 6), lambda h: F.max_pool2d(h, 2), False),
    ((1, 2, 7, 5), lambda h: F.max_pool2d(h, 2), False),
    ((2, 2, 16, 12), lambda h: F.max_pool2d(h, 3, stride=2, padding=1), False),
    ((2, 2, 8, 16), lambda h: F.max_pool2d(h, 3, stride=2, padding=1), True),
    ((2, 2, 8), lambda h: F.max_pool1d(h, 2), True),
    ((1, 2, 4, 4, 4), lambda h: gc.ops.max_pool(h, (2, 2, 2)), True),
    ((1, 2, 3, 4, 6), lambda h: gc.ops.max_pool(h, (2, 2, 2)), False),
    ((1, 1, 4, 4), lambda h: F.max_pool2d(h, 1), True),  # 1x1 windows
    ((3, 1, 6, 6), lambda h: F.max_pool2d(h, 2, stride=3), False),  # stride > kernel
]


@pytest.mark.parametrize("shape,pool,shifts", CASES, ids=[str(c[0]) for c in CASES])
def test_both_forms_of_a_recording_max_pooling_match_numpy_on_hostile_values(shape, pool,
                                                                          shifts):
    inputs, outputs = _step(shape, pool, seed=len(shape))
    assert _decodes_by_shifts(inputs[0]) == shifts
    ref = gc.compile(inputs, outputs, backend="numpy")
    fn = gc.compile(inputs, outputs, backend="llvm")
    for seed in range(3):
        for batch in (shape[0], 1, 0):
            x = _hostile((batch,) + shape[1:], seed)
            (want_y, want_g), (got_y, got_g) = ref(x), fn(x)
            np.testing.assert_array_equal(got_y, want_y)  # the same maximum, NaN and -0 too
            # overlapping windows add their shares in another order: rounding only
            np.testing.assert_allclose(got_g, want_g, rtol=1e-6, atol=1e-6)


def test_the_rule_reads_static_sizes_only():
    assert _decodes_by_shifts(gc.placeholder("a", ("N", 3, 16, 32)))
    assert _decodes_by_shifts(gc.placeholder("b", ("N", 3, 5, 32)))  # the rows only divide
    assert not _decodes_by_shifts(gc.placeholder("c", ("N", 3, 16, 24)))
    assert not _decodes_by_shifts(gc.placeholder("d", ("N", 3, 16, "W")))  # symbolic
    assert _decodes_by_shifts(gc.placeholder("e", ("N", 3, 6, 4, 4)))  # 3-d: by 16, then 4
    assert not _decodes_by_shifts(gc.placeholder("f", ("N", 3, 4, 6, 4)))  # by 24, then 4


def _kernel_text(fn, op: str) -> str:
    """The IR of the first kernel function of `op` that holds its loops."""
    bodies = re.findall(r'^define [^\n]*@"(k\d+\.' + op + r'(?:\.part)?)"\([^\n]*\n\{\n(.*?)^\}$',
                        "\n".join(fn._exe.parts), re.S | re.M)
    (text,) = [body for name, body in bodies if name.endswith(".part")] or \
        [body for _, body in bodies]
    return text


@pytest.mark.parametrize("padding,clamped", [(0, False), (1, True)])
def test_a_window_tap_inside_the_input_loads_without_a_clamp(padding, clamped):
    """A tap ``2*o + k`` of an unpadded pooling is in range at every point of the loops:
    no clamp (``icmp ult`` of the index against the axis). Padded, it may leave the input:
    clamped, and guarded by the window's condition."""
    x = gc.placeholder("x", ("N", 2, 8, 8))
    fn = gc.compile([x], F.max_pool2d(x, 2, padding=padding).sum(), backend="llvm",
                    backend_options={"cache": False})
    text = _kernel_text(fn, "max_pool")
    assert ("icmp ult" in text) == clamped
    a = _hostile((3, 2, 8, 8), 0)
    ref = gc.compile([x], F.max_pool2d(x, 2, padding=padding).sum(), backend="numpy")
    np.testing.assert_array_equal(fn(a), ref(a))
