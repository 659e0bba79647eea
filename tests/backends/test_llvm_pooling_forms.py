"""A recording max pooling (graphc/ops/pool.py: the window-local argmax record that its
gradient and select read), average pooling in the same geometries, and loads that need no
clamp (backends/kernelgen/nest.py, `PointEmitter._inside`): against the NumPy backend on
hostile values, in every pooling geometry whose record decodes differently, and the clamp
rule, positive and negative."""

from __future__ import annotations

import re

import numpy as np
import pytest

import graphc as gc

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


# (input shape, the pooling's arguments): windows that tile the input, odd sizes, overlapping
# and padded windows (the host scatters those), 1-d and 3-d, 1x1 windows, stride over kernel
GEOMETRIES = [
    ((2, 3, 8, 8), (2,), {}),
    ((2, 3, 6, 6), (2,), {}),
    ((1, 2, 7, 5), (2,), {}),
    ((2, 2, 16, 12), (3,), dict(stride=2, padding=1)),
    ((2, 2, 8, 16), ((2, 3),), dict(stride=(2, 1))),
    ((2, 2, 9), (2,), {}),
    ((2, 2, 9), (3,), dict(stride=2, padding=1)),
    ((1, 2, 4, 4, 4), ((2, 2, 2),), {}),
    ((1, 2, 3, 5, 6), ((2, 3, 2),), dict(stride=(1, 2, 2))),
    ((1, 1, 4, 4), (1,), {}),
    ((3, 1, 6, 6), (2,), dict(stride=3)),
    ((2, 2, 7, 7), (2,), dict(stride=3, padding=1)),
]


def _pooling(kind: str, shape, args, kwargs):
    """h -> the max or average pooling of this geometry (F's 1-d/2-d form, else gc.ops')."""
    name = {3: f"{kind}_pool1d", 4: f"{kind}_pool2d"}.get(len(shape))
    fn = getattr(F, name) if name else getattr(gc.ops, f"{kind}_pool")
    return lambda h: fn(h, *args, **kwargs)


CASES = [(shape, _pooling("max", shape, a, k)) for shape, a, k in GEOMETRIES]
AVG_CASES = [(shape, _pooling("avg", shape, a, k)) for shape, a, k in GEOMETRIES]


def _against_numpy(shape, pool):
    """(llvm, numpy) results of the pooling step on hostile values: three seeds, batch n, 1
    and 0."""
    inputs, outputs = _step(shape, pool, seed=len(shape))
    ref = gc.compile(inputs, outputs, backend="numpy")
    fn = gc.compile(inputs, outputs, backend="llvm")
    for seed in range(3):
        for batch in (shape[0], 1, 0):
            x = _hostile((batch,) + shape[1:], seed)
            yield fn(x), ref(x)


@pytest.mark.parametrize("shape,pool", CASES, ids=[str(c[0]) for c in CASES])
def test_a_recording_max_pooling_and_its_gradient_match_numpy_on_hostile_values(shape, pool):
    for (got_y, got_g), (want_y, want_g) in _against_numpy(shape, pool):
        np.testing.assert_array_equal(got_y, want_y)  # the same maximum, NaN and -0 too
        # overlapping windows add their shares in another order: rounding only
        np.testing.assert_allclose(got_g, want_g, rtol=1e-6, atol=1e-6)


def test_the_record_holds_the_window_local_number_of_the_maximum_as_int32():
    """The record's element is the maximum's number inside its window, not its position in
    the plane: its gradient finds a position's window with no division by the plane's
    sizes, and the forward's vector form keeps 32-bit index lanes beside the values."""
    from graphc.ops import loops as L
    from graphc.ops.pool import _max_pool_loops

    x = gc.placeholder("x", ("N", 2, 6, 6))
    y = F.max_pool2d(x, 2)
    fn = gc.compile([x], gc.grad((y * y).sum(), [x])[0], backend="numpy")
    (node,) = [n for n in fn.graph.nodes if n.op.name == "max_pool"]
    nest = _max_pool_loops(node, fn.graph)
    assert nest.buffers["argmax"].dtype == np.int32
    record = [st for st in nest.stores if st.buffer == "argmax"][0].value
    assert isinstance(record, L.ArgMax)
    body, key, where, bounds = L.argmax_parts(record)
    (k0, _), (k1, _) = bounds
    assert key == 2 * k0 + k1


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


@pytest.mark.parametrize("count,width", [(12, 4), (8, 8), (4, 4), (6, 4), (7, 4), (10, 8),
                                         (3, 2), (2, None), (15, 8), (1, None), (16, None),
                                         (40, None)])
def test_a_short_rolled_row_gets_a_vector_width_that_fits_it(count, width):
    from llvmlite import ir

    from graphc.backends.kernelgen.irutil import I64, short_row_width

    assert short_row_width(ir.Constant(I64, count)) == width


# geometries whose pooling loops LLVM once reported on the terminal ("loop not vectorized",
# 54 of 240 tried): rows of two, 1x1 windows with a stride, windows apart, 3x3 windows at
# stride 2, the same averaged and in 1-d
QUIET = [
    ((2, 3, 4, 4), "max", (2,), {}),
    ((2, 3, 8, 8), "max", (1,), dict(stride=2)),
    ((2, 2, 12, 12), "max", (2,), dict(stride=3)),
    ((2, 2, 16, 16), "max", (3,), dict(stride=2, padding=1)),
    ((2, 2, 6, 6), "max", (3,), dict(stride=3, padding=1)),
    ((2, 3, 5, 5), "avg", (2,), {}),
    ((2, 2, 16, 16), "avg", (1,), dict(stride=2)),
    ((2, 2, 4), "max", (2,), {}),
]


@pytest.mark.parametrize("shape,kind,args,kwargs", QUIET,
                         ids=[f"{c[1]}{c[0]}{c[2]}{c[3]}" for c in QUIET])
def test_compiling_a_pooling_prints_nothing(shape, kind, args, kwargs, capfd):
    """LLVM prints a warning and remarks on stderr (the user's terminal, not a Python
    warning) when a loop it was told to vectorize could not be: the rows' widths are hints
    (`irutil._short_row`), and a row of two is unrolled (`irutil.unrolled_row`)."""
    capfd.readouterr()
    x = gc.placeholder("x", ("N",) + shape[1:])
    y = _pooling(kind, shape, args, kwargs)(x)
    outputs = [y, gc.grad((y * y).sum(), [x])[0]]
    fn = gc.compile([x], outputs, backend="llvm", backend_options={"cache": False})
    printed = capfd.readouterr()
    assert printed.err == "" and printed.out == ""
    assert "llvm.loop.vectorize.enable" not in "\n".join(fn._exe.parts)
    a = _hostile(shape, 2)
    for got, want in zip(fn(a), gc.compile([x], outputs, backend="numpy")(a)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_a_run_time_row_length_gets_no_width():
    from llvmlite import ir

    from graphc.backends.kernelgen.irutil import I64, short_row_width

    fn = ir.Function(ir.Module("m"), ir.FunctionType(I64, [I64]), "f")
    assert short_row_width(fn.args[0]) is None


def test_a_pooling_keeps_its_short_rows_rolled_at_a_width_that_divides_them():
    """LeNet-5's first pooling (24x24 planes, rows of 12 windows): the row loop stays rolled
    at width 4, where LLVM would mask 16-wide vectors into gathers and scatters; the loops
    of the window's taps are not marked (LLVM unrolls them)."""
    x = gc.placeholder("x", ("N", 2, 24, 24))
    y = F.max_pool2d(x, 2)
    fn = gc.compile([x], gc.grad((y * y).sum(), [x])[0], backend="llvm",
                    backend_options={"cache": False})
    text = "\n".join(fn._exe.parts)
    assert re.search(r'!"llvm.loop.vectorize.width", i32 4', text)
    for op in ("max_pool", "max_pool_grad"):
        body = _kernel_text(fn, op)
        assert body.count("!llvm.loop") >= 2  # the batch (run-time count) and the row
    a = _hostile((5, 2, 24, 24), 3)
    ref = gc.compile([x], gc.grad((y * y).sum(), [x])[0], backend="numpy")
    np.testing.assert_array_equal(fn(a), ref(a))




@pytest.mark.parametrize("shape,pool", AVG_CASES, ids=[str(c[0]) for c in AVG_CASES])
def test_average_pooling_and_its_gradient_match_numpy_on_hostile_values(shape, pool):
    """The same geometries averaged: the forward's rows rolled, and where windows do not
    overlap the host's gradient spreads window by window (`_by_windows`), clearing what no
    window covers; overlapping and padded windows gather. The window's sum runs in another
    order than NumPy's: rounding only."""
    for got, want in _against_numpy(shape, pool):
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


PADDED = [(shape, _pooling("max", shape, a, k)) for shape, a, k in GEOMETRIES
          if k.get("padding")]


@pytest.mark.parametrize("shape,pool", PADDED, ids=[str(c[0]) for c in PADDED])
def test_a_padded_window_of_all_minus_infinity_sends_its_gradient_to_its_first_tap(shape,
                                                                                   pool):
    """Border windows whose taps are all -inf tie with their padding: no backend lets the
    padding win (the NumPy reference once did, and dropped those windows' gradients)."""
    x = gc.placeholder("x", ("N",) + shape[1:])
    y = pool(x)
    weights = gc.constant(np.random.default_rng(1).normal(
        size=tuple(int(d) for d in y.shape[1:])).astype(np.float32))
    outputs = [y, gc.grad((y * weights).sum(), [x])[0]]
    data = _hostile(shape, 5)
    data[..., :2] = -np.inf  # the first two columns (rows of a 1-d input): all -inf windows
    if len(shape) > 3:
        data[..., :2, :] = -np.inf
    got_y, got_g = gc.compile([x], outputs, backend="llvm")(data)
    want_y, want_g = gc.compile([x], outputs, backend="numpy")(data)
    np.testing.assert_array_equal(got_y, want_y)
    np.testing.assert_allclose(got_g, want_g, rtol=1e-6, atol=1e-6)
    # every window's weight landed on an input position: nothing was lost in the padding
    per_sample = want_g.sum(axis=tuple(range(1, want_g.ndim)))
    np.testing.assert_allclose(per_sample, weights.node.attrs["value"].array.sum(), rtol=1e-4)
