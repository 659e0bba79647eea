"""The direct convolution schedule (graphc/ops/conv.direct, loops.DirectConv,
backends/llvm/direct_conv.py): which convolutions the cost model sends there, and every
geometry it takes against the NumPy backend, forward and both gradients, including the edge
tiles (a last channel tile part empty, edge vectors overlapping the tile before them), no
padding (the input read in place), padding larger than the kernel's reach, 1-D, batch 1,
an empty batch, and the same bits on any thread count."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import threads
from graphc.ops import conv as conv_module
from graphc.ops import loops as L
from tests.helpers import assert_conv_non_finite_like_numpy, same_bits_on_every_thread_count

F = gc.nn.functional


def _nodes(x_shape, w_shape, dtype="float32", **geom):
    with gc.Graph():
        x = gc.placeholder("x", x_shape, dtype)
        w = gc.parameter("w", np.ones(w_shape, dtype))
        y = (F.conv2d if len(w_shape) == 4 else F.conv1d)(x, w, **geom)
        gx, gw = gc.grad(y.sum(), [x, w])
    return y.node, gx.node, gw.node


def test_the_cost_model_takes_stride_one_rows_that_fill_the_tiles():
    # cnn32's layers and their input gradients: no waste
    conv, grad_x, grad_w = _nodes(("N", 32, 32, 32), (32, 32, 3, 3), padding=1)
    assert conv_module.direct(conv) and conv_module.direct(grad_x)
    assert conv_module.direct_weight_grad(grad_w) and not conv_module.direct(grad_w)
    assert [type(s).__name__ for s in grad_w.op.loops(grad_w, None).host] == \
        ["LoopNest", "DirectWeightGrad"]  # pad, the tiles
    kinds = [type(s).__name__ for s in conv.op.loops(conv, None).host]
    assert kinds == ["LoopNest", "LoopNest", "DirectConv"]  # pack, pad, the tiles
    assert [type(s).__name__ for s in conv.op.loops(conv, None).gpu] == \
        ["LoopNest", "Gemm", "LoopNest"]  # a GPU keeps im2col and a GEMM
    # tiles of 6 channels where the channels fill them to 0.85, else of 4
    assert [L.direct_tile(c) for c in (32, 64, 16, 6, 12, 8, 4, 3)] == [6, 6, 6, 6, 6, 4, 4, 4]
    # LeNet-5: its first layer (one whole tile of 6) yes, the second layer's input gradient
    # (6 channels of 12 positions: 0.75 of the work, measured slower) no
    lenet1, _, _ = _nodes(("N", 1, 28, 28), (6, 1, 5, 5))
    _, lenet2_x, _ = _nodes(("N", 6, 12, 12), (16, 6, 5, 5))
    assert L.direct_work(6, 24, 4) == 1.0 and conv_module.direct(lenet1)
    assert L.direct_work(6, 12, 4) == 0.75 and not conv_module.direct(lenet2_x)
    # outside the schedule: stride along a row, a strided input gradient, rows shorter
    # than a vector, symbolic image sizes, 3-D
    strided, strided_x, _ = _nodes(("N", 4, 33, 33), (8, 4, 3, 3), stride=2)
    assert not conv_module.direct(strided) and not conv_module.direct(strided_x)
    rows_strided, _, _ = _nodes(("N", 4, 33, 32), (8, 4, 3, 3), stride=(2, 1), padding=1)
    assert conv_module.direct(rows_strided)
    narrow, _, _ = _nodes(("N", 4, 8, 6), (8, 4, 3, 3), padding=1)
    symbolic, _, _ = _nodes(("N", 4, "H", "W"), (8, 4, 3, 3), padding=1)
    with gc.Graph():
        x3 = gc.placeholder("x", ("N", 2, 8, 8, 8))
        conv3 = gc.ops.conv.conv_op(x3, gc.parameter("w", np.ones((4, 2, 3, 3, 3), np.float32)),
                                     (1, 1, 1), (1, 1, 1), (1, 1, 1)).node
    assert not any(conv_module.direct(n) for n in (narrow, symbolic, conv3))


GEOMETRIES = [  # (input shape, weight shape, dtype, keyword arguments)
    ((2, 3, 9, 10), (5, 3, 3, 3), "float64", dict(padding=1)),  # 5 channels, overlap edge
    ((2, 3, 7, 21), (6, 3, 3, 3), "float32", dict(padding=1)),  # a tile and a one-vector edge
    ((3, 2, 6, 24), (8, 2, 2, 3), "float32", dict()),  # whole tiles: the input read in place
    ((1, 2, 6, 8), (4, 2, 1, 1), "float64", dict()),  # 1x1, batch 1
    ((2, 2, 9, 17), (3, 2, 3, 2), "float64", dict(stride=(2, 1), padding=(2, 0),
                                                  dilation=(2, 3))),
    ((2, 2, 5, 9), (3, 2, 3, 3), "float64", dict(padding=3)),  # padding past the kernel
    ((0, 2, 9, 12), (3, 2, 3, 3), "float64", dict(padding=1)),  # empty batch
    ((3, 2, 30), (5, 2, 4), "float64", dict(padding=3, dilation=2)),  # 1-D
    # rows of whole vectors: the weight gradient takes the direct schedule too
    ((2, 3, 7, 16), (5, 3, 3, 3), "float64", dict(padding=1)),
    ((2, 2, 9, 24), (6, 2, 3, 5), "float32", dict(stride=(2, 1), padding=(1, 4),
                                                  dilation=(1, 2))),  # 5 taps: 3 + 2
    ((3, 2, 40), (5, 2, 3), "float32", dict(padding=1)),  # 1-D
    ((1, 3, 5, 8), (4, 3, 1, 1), "float64", dict()),  # 1x1, batch 1, no padding
    ((0, 2, 6, 8), (3, 2, 3, 3), "float64", dict(padding=1)),  # empty batch
    # tiles of 6 channels, the last one part empty (16 = 6 + 6 + 4)
    ((2, 3, 8, 16), (16, 3, 3, 3), "float32", dict(padding=1)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[
    "3x3-5ch", "f32-edge", "no-padding", "1x1-batch1", "strided-rows-dilated", "wide-padding",
    "empty-batch", "1d-dilated", "wgrad-3x3", "wgrad-5-taps-strided-rows", "wgrad-1d",
    "wgrad-1x1-batch1", "wgrad-empty-batch", "6-channel-tiles"])
def test_the_direct_schedule_matches_numpy_with_every_gradient(geometry, monkeypatch):
    x_shape, w_shape, dtype, geom = geometry
    monkeypatch.setattr(conv_module, "DIRECT_MIN_WORK", 0)  # odd sizes take the schedule too
    rng = np.random.default_rng(0)
    data = rng.normal(size=x_shape).astype(dtype)
    results, direct = {}, []
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", ("N",) + x_shape[1:], dtype)
            w = gc.parameter("w", np.random.default_rng(1).normal(size=w_shape).astype(dtype))
            y = (F.conv2d if len(x_shape) == 4 else F.conv1d)(x, w, **geom)
            weights = np.random.default_rng(2).normal(size=tuple(y.shape[1:])).astype(dtype)
            cost = (gc.tanh(y) * gc.constant(weights)).sum()
            gx, gw = gc.grad(cost, [x, w])
            direct = [conv_module.direct(t.node) for t in (y, gx)]
            direct.append(conv_module.direct_weight_grad(gw.node))
            options = {"cache": False} if backend == "llvm" else None
            fn = gc.compile([x], [y, gx, gw], backend=backend, backend_options=options)
        results[backend] = fn(data)
    assert direct[0]  # the forward takes the schedule (and the input gradient unless strided)
    assert direct[1] == all(s == 1 for s in np.atleast_1d(geom.get("stride", 1)))
    assert direct[2] == (results["numpy"][0].shape[-1] % 8 == 0)  # rows of whole vectors
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    for got, want in zip(results["llvm"], results["numpy"]):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("image, out_channels, batch", [
    ((16, 32, 40), 12, 9),  # the forward and the input gradient split their samples
    ((8, 64, 64), 32, 1),  # a batch of one splits its channel tiles
], ids=["batch-of-9", "batch-of-1"])
def test_the_tiles_give_the_same_bits_on_any_thread_count(image, out_channels, batch):
    if not threads.runtime().openmp:
        pytest.skip("no libgomp here: the loop runs on the calling thread")
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", ("N", *image), "float32")
    w = gc.parameter("w", rng.normal(size=(out_channels, image[0], 3, 3)).astype(np.float32))
    y = F.conv2d(x, w, padding=1)
    gx = gc.grad((y * y).sum(), [x])[0]
    assert conv_module.direct(y.node) and conv_module.direct(gx.node)
    # every output a sum of channels x 3 x 3 multiply-adds: worth a parallel region
    macs = batch * out_channels * image[1] * image[2] * image[0] * 9
    assert macs >= threads.PARALLEL_MIN_POINTS * threads.MACS_PER_POINT
    fn = gc.compile([x], [y, gx], backend="llvm", backend_options={"cache": False})
    data = rng.normal(size=(batch, *image)).astype(np.float32)
    serial = same_bits_on_every_thread_count(fn, data)
    want = gc.compile([x], [y, gx], backend="numpy")(data)
    for got, expected in zip(serial, want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


def test_non_finite_values_come_out_where_numpy_puts_them():
    """NaN and infinities in the image and in the gradient: each output is NaN, +inf, -inf
    or finite exactly where the NumPy backend's is (the sums run in another order, so
    finite values agree to rounding only)."""
    rng = np.random.default_rng(3)
    data = rng.normal(size=(2, 4, 6, 16))
    data[0, 1, 2, 5] = np.nan
    data[1, 0, 4, 9] = np.inf
    data[1, 2, 0, 0] = -np.inf
    seed = rng.normal(size=(2, 4, 6, 16))
    seed[0, 2, 3, 7] = np.inf

    def taken(y, gx, gw):
        assert conv_module.direct(y) and conv_module.direct(gx)
        assert conv_module.direct_weight_grad(gw)

    assert_conv_non_finite_like_numpy(data, seed, 4, taken)


def test_convolutions_of_one_kernel_width_share_their_tile_functions():
    """Two layers of different channel counts, 3x3 kernels: one tile function and one
    weight-gradient tile function in the module, called by each convolution with its own
    sizes (and the results still those of the NumPy backend)."""
    rng = np.random.default_rng(5)
    first, second = (rng.normal(size=shape).astype(np.float32)
                     for shape in [(8, 3, 3, 3), (8, 8, 3, 3)])
    results, source = {}, ""
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", ("N", 3, 16, 16), "float32")
            w1 = gc.parameter("w1", first)
            w2 = gc.parameter("w2", second)
            h = F.conv2d(x, w1, padding=1)
            y = F.conv2d(gc.tanh(h), w2, padding=1)
            grads = gc.grad((y * y).sum(), [x, w1, w2])
            assert all(conv_module.direct(t.node) for t in (h, y))
            options = {"cache": False} if backend == "llvm" else None
            fn = gc.compile([x], [y, *grads], backend=backend, backend_options=options)
        if backend == "llvm":
            source = fn.source
        results[backend] = fn(np.random.default_rng(6).normal(size=(2, 3, 16, 16))
                              .astype(np.float32))
    defined = {line.split('"')[1] for line in source.splitlines()
               if line.startswith("define") and '@"graphc.direct_' in line}
    # both layers and the second one's input gradient: tiles of 4 channels, 16-wide rows
    # (the input gradient has the second layer's sizes, so it is that layer's kernel: two
    # kernels of different input channels call the one function)
    assert defined == {"graphc.direct_tile.f32.4x3.d1.e", "graphc.direct_grad_tile.f32.4x3.d1"}
    assert source.count('call void @"graphc.direct_tile.f32.4x3.d1.e"(') >= 2
    assert source.count('call void @"graphc.direct_grad_tile.f32.4x3.d1"(') >= 2
    for got, want in zip(results["llvm"], results["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def assert_weights_non_finite_like_numpy(monkeypatch, kind, shape, w_shape, dtype, bad,
                                         tile, **geom) -> None:
    """A stride-1 transposed convolution on a register-tile schedule whose weights hold inf
    or NaN (`bad`: {index: value}): the input gradient of a conv2d/conv1d of an input of
    `shape` and weights of `w_shape` (`kind` "grad"), or a conv_transpose2d/1d of them
    ("transpose"). On the llvm backend, which calls the tile function named `tile`, each
    result is NaN, +inf, -inf or finite exactly where the NumPy backend's is (the finite
    ones to rounding), where the tiles alone (without conv._non_finite_weights) turn some
    into NaN; every element the tiles alone leave other than NaN keeps their bits, and with
    finite weights the bits are the tiles' alone."""
    monkeypatch.setenv("GRAPHC_COMPILE_MEMO", "0")  # (each compile builds its own steps)
    nd = len(shape) - 2
    rng = np.random.default_rng(len(bad) + sum(shape))
    data = rng.normal(size=shape).astype(dtype)
    weights = rng.normal(size=w_shape).astype(dtype)
    broken = weights.copy()
    for index, value in bad.items():
        broken[index] = value

    def build(backend):
        with gc.Graph():
            x = gc.placeholder("x", ("N", *shape[1:]), dtype)
            w = gc.placeholder("w", w_shape, dtype)
            if kind == "grad":
                y = (F.conv2d if nd == 2 else F.conv1d)(x, w, **geom)
                seed = np.random.default_rng(1).normal(size=(shape[0], *y.shape[1:]))
                out = gc.grad((y * gc.constant(seed.astype(dtype))).sum(), [x])[0]
                assert "non_finite" not in [s.name for s in _host_nests(y.node)]
            else:
                out = (F.conv_transpose2d if nd == 2 else F.conv_transpose1d)(x, w, **geom)
            options = {"cache": False} if backend == "llvm" else None
            return out.node, gc.compile([x, w], [out], backend=backend, backend_options=options)

    node, fn = build("llvm")
    assert node.op.name == "conv_transpose"
    if tile == "direct_tile":
        assert conv_module.direct(node) and not conv_module.channels_last(node)
    else:
        assert conv_module.channels_last(node)
    assert f'call void @"graphc.{tile}.' in fn.source
    assert _host_nests(node)[-1].name == "non_finite"
    reference = build("numpy")[1]
    with monkeypatch.context() as m:
        m.setattr(conv_module, "_non_finite_weights", lambda node: [])
        alone = build("llvm")[1]
        assert f'call void @"graphc.{tile}.' in alone.source
    with np.errstate(invalid="ignore", over="ignore"):
        got, want, tiles = (f(data, broken)[0] for f in (fn, reference, alone))
    for test in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(test(got), test(want))
    assert (np.isnan(tiles) & ~np.isnan(want)).any()  # what the repair is for
    finite = np.isfinite(want)
    assert finite.any() and not finite.all()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[finite], want[finite], **tol)
    kept = ~np.isnan(tiles)
    assert got[kept].tobytes() == tiles[kept].tobytes()
    assert fn(data, weights)[0].tobytes() == alone(data, weights)[0].tobytes()


def _host_nests(node) -> list:
    """The node's host steps that are loop nests."""
    return [s for s in node.op.loops(node, None).host if isinstance(s, L.LoopNest)]


@pytest.mark.parametrize("kind, shape, w_shape, dtype, bad, geom", [
    ("grad", (2, 4, 6, 16), (6, 4, 3, 3), "float32", {(0, 0, 1, 1): np.inf}, {}),
    ("grad", (2, 4, 5, 8), (5, 4, 3, 3), "float64",
     {(1, 2, 0, 0): -np.inf, (2, 1, 2, 2): np.nan}, dict(padding=1)),
    # +inf and -inf in one tap of two output channels: NaN, +inf or -inf by the signs
    ("grad", (2, 4, 9, 20), (3, 4, 3, 3), "float32",
     {(0, 1, 0, 2): np.inf, (1, 1, 0, 2): -np.inf}, dict(padding=1, dilation=2)),
    ("grad", (2, 4, 24), (6, 4, 5), "float64", {(0, 1, 0): np.nan, (3, 2, 4): np.inf},
     dict(padding=1)),
    ("transpose", (2, 4, 6, 14), (4, 8, 3, 3), "float32", {(0, 0, 1, 1): np.inf}, {}),
    ("transpose", (2, 3, 20), (3, 4, 3), "float32", {(1, 0, 2): -np.inf, (2, 3, 0): np.inf},
     dict(padding=1, dilation=2, output_padding=1)),
], ids=["grad-centre-inf", "grad-corners-f64", "grad-inf-and-minus-inf-dilated",
        "grad-1d-nan", "transpose-centre-inf", "transpose-1d-output-padding"])
def test_inf_and_nan_weights_come_out_where_numpy_puts_them(kind, shape, w_shape, dtype, bad,
                                                            geom, monkeypatch):
    """The input gradient and a stride-1 transposed convolution sum the padded gradient
    with the flipped kernel: taps in the padding add 0 * w, NaN for an inf or NaN weight,
    which the transposed convolution does not have (conv._non_finite_weights sums those
    positions again)."""
    assert_weights_non_finite_like_numpy(monkeypatch, kind, shape, w_shape, dtype, bad,
                                         "direct_tile", **geom)
