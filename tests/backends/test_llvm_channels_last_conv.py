"""The channels-last convolution schedules (graphc/ops/conv.channels_last and
channels_last_weight_grad, loops.ChannelsLastConv and ChannelsLastWeightGrad,
backends/llvm/channels_last_conv.py): which convolutions and weight gradients the cost
model lays out channels last instead of along the graph's NCHW rows, and every geometry
they take against the NumPy backend, forward and both gradients: dilation, padding past the
kernel's reach, a last channel tile part empty, position tiles overlapping at the image's
end, strides (also past the kernel) for the weight gradient, 1-D, float64, batch 1, an
empty batch; the same bits on any thread count; NaN and infinities where the NumPy backend
puts them."""

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


def _host_steps(node) -> list[str]:
    return [type(s).__name__ for s in node.op.loops(node, None).host]


def test_the_cost_model_lays_out_channels_last_where_nchw_rows_do_not_fill_a_tile():
    # rows of one vector (8 floats: a DirectConv would hold six accumulators), with the
    # input gradient (a stride-1 transposed convolution); LeNet-5's second layer; rows of
    # 12 (a two-vector direct tile would be a third empty: im2col and a GEMM before)
    vector, vector_x, _ = _nodes(("N", 128, 8, 8), (128, 128, 3, 3), padding=1)
    lenet2, _, _ = _nodes(("N", 6, 12, 12), (16, 6, 5, 5))
    twelve, twelve_x, _ = _nodes(("N", 64, 12, 12), (64, 64, 3, 3), padding=1)
    # rows shorter than a vector (im2col and a GEMM before), even where one GEMM over the
    # batch took the forward
    short, short_x, short_w = _nodes(("N", 256, 4, 4), (256, 256, 3, 3), padding=1)
    seven, seven_x, _ = _nodes(("N", 64, 7, 7), (64, 64, 3, 3), padding=1)
    assert conv_module.direct(vector) and not conv_module.direct(twelve)
    assert conv_module.whole_batch(short) and conv_module.channels_last_weight_grad(short_w)
    for node in (vector, vector_x, lenet2, twelve, twelve_x, short, short_x, seven, seven_x):
        assert conv_module.channels_last(node)
        # pack, copy, the tiles (and a transposed one's repair: conv._non_finite_weights)
        repair = ["LoopNest"] if node.op.name == "conv_transpose" else []
        assert _host_steps(node) == ["LoopNest", "LoopNest", "ChannelsLastConv", *repair]
        assert [type(s).__name__ for s in node.op.loops(node, None).gpu] == \
            ["LoopNest", "Gemm", "LoopNest"]  # a GPU keeps im2col and a GEMM
    # strided convolutions and 1x1 kernels keep im2col and a GEMM forward and back; their
    # weight gradients are channels last, sums over the batch's positions
    strided, strided_x, strided_w = _nodes(("N", 64, 16, 16), (128, 64, 3, 3), stride=2,
                                           padding=1)
    shortcut, shortcut_x, shortcut_w = _nodes(("N", 64, 16, 16), (128, 64, 1, 1), stride=2)
    assert not any(conv_module.channels_last(n)
                   for n in (strided, strided_x, strided_w, shortcut, shortcut_x))
    for node in (strided_w, shortcut_w):
        assert conv_module.channels_last_weight_grad(node)
        assert _host_steps(node) == ["LoopNest", "ChannelsLastWeightGrad"]  # the copy
    # NCHW rows that fill the tiles (cnn32's layers, 32 and 16 positions a row) stay there,
    # as do rows of 13 to 15 (a direct tile of two vectors, faster there)
    cnn32, cnn32_x, _ = _nodes(("N", 32, 32, 32), (32, 32, 3, 3), padding=1)
    cnn32b, _, _ = _nodes(("N", 64, 16, 16), (64, 64, 3, 3), padding=1)
    fourteen, fourteen_x, _ = _nodes(("N", 64, 14, 14), (64, 64, 3, 3), padding=1)
    assert conv_module.direct(fourteen) and conv_module.direct(fourteen_x)
    assert not any(conv_module.channels_last(n)
                   for n in (cnn32, cnn32_x, cnn32b, fourteen, fourteen_x))
    cnn32_w = _nodes(("N", 32, 32, 32), (32, 32, 3, 3), padding=1)[2]
    assert conv_module.direct_weight_grad(cnn32_w)
    assert not conv_module.channels_last_weight_grad(cnn32_w)
    assert _host_steps(cnn32) == ["LoopNest", "LoopNest", "DirectConv"]
    # the channel tile (16 floats, 8 doubles) filled to less than 0.8: 6 of 16, 20 of 32
    assert L.channels_last_tile(4) == 16 and L.channels_last_tile(8) == 8
    few, _, _ = _nodes(("N", 16, 8, 8), (6, 16, 3, 3), padding=1)
    twenty, _, _ = _nodes(("N", 16, 8, 8), (20, 16, 3, 3), padding=1)
    sixteen, _, _ = _nodes(("N", 16, 8, 8), (16, 16, 3, 3), padding=1)
    assert not conv_module.channels_last(few) and not conv_module.channels_last(twenty)
    assert conv_module.channels_last(sixteen)
    # too few terms a sum (3 x 3 x 3 = 27 < 32), too few positions (5 at stride 2, 4 of
    # 2x2), a 1x1 of stride 1 (a GEMM per sample), symbolic image sizes, integers, 3-D
    first, _, _ = _nodes(("N", 3, 32, 32), (64, 3, 3, 3), stride=2, padding=1)
    tiny, _, _ = _nodes(("N", 32, 10), (32, 32, 3), stride=2, padding=1)
    corner, _, _ = _nodes(("N", 64, 2, 2), (64, 64, 3, 3), padding=1)
    pointwise, _, _ = _nodes(("N", 64, 4, 4), (64, 64, 1, 1))
    symbolic, _, _ = _nodes(("N", 64, "H", "W"), (64, 64, 3, 3), stride=2)
    with gc.Graph():
        xi = gc.placeholder("x", ("N", 32, 4, 4), "int32")
        integers = F.conv2d(xi, gc.parameter("w", np.ones((32, 32, 3, 3), np.int32))).node
        x3 = gc.placeholder("x", ("N", 32, 4, 4, 4))
        conv3 = gc.ops.conv.conv_op(x3, gc.parameter("w", np.ones((32, 32, 3, 3, 3),
                                                                  np.float32)),
                                    (1, 1, 1), (1, 1, 1), (1, 1, 1)).node
    assert tiny.shape[-1] == 5
    assert not any(conv_module.channels_last(n)
                   for n in (first, tiny, corner, pointwise, symbolic, integers, conv3))
    # weight gradients: the input channels fill their tile of 16 floats (8 doubles) and the
    # output channels their tile of 6, each to 0.8; not a 1x1 of stride 1, nor symbolic
    def weight_grad(x_shape, w_shape, dtype="float32", **geom):
        return _nodes(x_shape, w_shape, dtype, **geom)[2]

    assert conv_module.channels_last_weight_grad(weight_grad(("N", 64, 9, 9), (32, 64, 3, 3)))
    assert conv_module.channels_last_weight_grad(weight_grad(("N", 14, 9, 9), (6, 14, 3, 3)))
    assert not any(conv_module.channels_last_weight_grad(n) for n in (
        weight_grad(("N", 3, 33, 33), (64, 3, 3, 3), stride=2),  # 3 of 16 input channels
        weight_grad(("N", 8, 9, 9), (8, 8, 3, 3), "float64"),  # 8 of 8, but 8 of 12
        weight_grad(("N", 64, 4, 4), (64, 64, 1, 1)),  # a GEMM per sample
        weight_grad(("N", 64, "H", "W"), (64, 64, 3, 3), stride=2)))


GEOMETRIES = [  # (input shape, weight shape, dtype, keyword arguments, which take it:
    # the forward, the input gradient, the weight gradient)
    ((2, 8, 8, 8), (16, 8, 3, 3), "float32", dict(padding=1), (1, 1, 0)),  # rows of 8
    ((3, 5, 9, 9), (30, 5, 3, 3), "float32", dict(padding=1), (1, 1, 1)),  # tiles 16 + 14
    ((2, 4, 10, 10), (16, 4, 3, 3), "float32", dict(padding=1, dilation=2), (1, 1, 0)),
    ((2, 4, 6, 7), (8, 4, 3, 3), "float64", dict(padding=1), (1, 1, 1)),  # rows of 7 doubles
    ((1, 6, 8, 12), (16, 6, 3, 3), "float32", dict(padding=1), (1, 1, 1)),  # batch 1
    ((2, 3, 2, 2), (10, 3, 3, 3), "float64", dict(padding=3), (1, 0, 1)),  # past the kernel
    ((0, 4, 8, 8), (16, 4, 3, 3), "float32", dict(padding=1), (1, 1, 0)),  # empty batch
    ((3, 4, 10), (16, 4, 3), "float32", dict(padding=1, dilation=2), (1, 1, 0)),  # 1-D
    ((2, 4, 5, 9), (16, 4, 3, 3), "float32", dict(padding=(0, 1)), (1, 1, 1)),  # 27 places
    # strided: im2col and a GEMM forward and back, the weight gradient channels last
    ((2, 8, 9, 9), (16, 8, 3, 3), "float32", dict(stride=2, padding=1), (0, 0, 1)),
    ((2, 4, 11, 13), (16, 4, 3, 3), "float64", dict(stride=3, padding=1, dilation=2),
     (0, 0, 1)),
    ((2, 3, 12, 12), (12, 3, 2, 2), "float64", dict(stride=4), (0, 0, 1)),  # past the kernel
    ((2, 4, 5, 5), (8, 4, 3, 3), "float64", dict(stride=(1, 2), padding=(0, 1)), (0, 0, 1)),
    ((0, 4, 9, 9), (16, 4, 3, 3), "float32", dict(stride=2), (0, 0, 1)),  # empty batch
    # 1x1 with padding: its weight gradient (the forward and back are a GEMM's columns)
    ((2, 6, 3, 2), (8, 6, 1, 1), "float64", dict(padding=1), (0, 0, 1)),
    # three input channel tiles (16 + 16 + 8 floats, 8 + 8 + 4 doubles): a pair and an odd
    # last one where the CPU holds pairs (toolchain.wide_tiles)
    ((2, 40, 9, 9), (20, 40, 3, 3), "float32", dict(stride=2, padding=1), (0, 0, 1)),
    ((2, 20, 7, 7), (12, 20, 3, 3), "float64", dict(stride=2), (0, 0, 1)),
    # three output channel tiles for the forward (16 + 16 + 2)
    ((2, 4, 8, 8), (34, 4, 3, 3), "float32", dict(padding=1), (1, 1, 0)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=[
    "rows-of-8", "partial-channel-tile", "dilated", "f64-rows-of-7", "batch1-rows-of-12",
    "wide-padding", "empty-batch", "1d-dilated", "overlapping-position-tile", "stride-2",
    "dilated-stride-3", "stride-past-kernel", "stride-1x2", "strided-empty-batch",
    "1x1-padded", "three-input-tiles", "three-input-tiles-f64", "three-output-tiles"])
def test_the_channels_last_schedules_match_numpy_with_every_gradient(geometry, monkeypatch):
    x_shape, w_shape, dtype, geom, expected = geometry
    # odd sizes take the schedules too: every fill and every length of sum
    monkeypatch.setattr(conv_module, "CHANNELS_LAST_FILL", 0)
    monkeypatch.setattr(conv_module, "CHANNELS_LAST_MIN_TERMS", 0)
    rng = np.random.default_rng(0)
    data = rng.normal(size=x_shape).astype(dtype)
    results, taken = {}, []
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", ("N",) + x_shape[1:], dtype)
            w = gc.parameter("w", np.random.default_rng(1).normal(size=w_shape).astype(dtype))
            y = (F.conv2d if len(x_shape) == 4 else F.conv1d)(x, w, **geom)
            weights = np.random.default_rng(2).normal(size=tuple(y.shape[1:])).astype(dtype)
            cost = (gc.tanh(y) * gc.constant(weights)).sum()
            gx, gw = gc.grad(cost, [x, w])
            taken = [conv_module.channels_last(y.node), conv_module.channels_last(gx.node),
                     conv_module.channels_last_weight_grad(gw.node)]
            options = {"cache": False} if backend == "llvm" else None
            fn = gc.compile([x], [y, gx, gw], backend=backend, backend_options=options)
            if backend == "llvm":
                source = fn.source
        results[backend] = fn(data)
    assert taken == [bool(e) for e in expected]
    assert ('@"graphc.channels_last_tile.' in source) == any(taken[:2])
    assert ('@"graphc.channels_last_grad_tile.' in source) == taken[2]
    for got, want in zip(results["llvm"], results["numpy"]):
        assert got.shape == want.shape
        # (float32 sums in another order: to a few units of the largest value's last place)
        scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
        tol = dict(rtol=1e-5, atol=1e-5 * scale) if dtype == "float32" else \
            dict(rtol=1e-12, atol=1e-12 * scale)
        np.testing.assert_allclose(got, want, **tol)


def test_a_stride_one_input_gradient_takes_the_schedule_with_the_flipped_kernel():
    """A 3x2 kernel over rows of one vector of doubles: the forward and its input gradient
    (a stride-1 transposed convolution of the flipped kernel) are both channels last;
    against the NumPy backend."""
    weights = np.random.default_rng(7).normal(size=(32, 24, 3, 2))
    results = {}
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", ("N", 24, 4, 5), "float64")
            w = gc.parameter("w", weights)
            y = F.conv2d(x, w, padding=(1, 0))  # a 3x2 kernel: 4x4 positions
            gx, gw = gc.grad((y * y).sum(), [x, w])
            assert conv_module.channels_last(y.node) and conv_module.channels_last(gx.node)
            options = {"cache": False} if backend == "llvm" else None
            fn = gc.compile([x], [y, gx, gw], backend=backend, backend_options=options)
        results[backend] = fn(np.random.default_rng(8).normal(size=(3, 24, 4, 5)))
    for got, want in zip(results["llvm"], results["numpy"]):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_the_tiles_give_the_same_bits_on_any_thread_count():
    if not threads.runtime().openmp:
        pytest.skip("no libgomp here: the loop runs on the calling thread")
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", ("N", 64, 8, 8), "float32")
    w = gc.parameter("w", rng.normal(size=(48, 64, 3, 3)).astype(np.float32))
    y = F.conv2d(x, w, stride=2, padding=1)
    h = F.conv2d(x, w, padding=1)  # rows of one vector
    gx, gw = gc.grad((h * h).sum() + y.sum(), [x, w])
    assert conv_module.channels_last(h.node)  # and y's weight gradient:
    assert any(conv_module.channels_last_weight_grad(n) for n in gw.node.inputs)
    batch = 9
    macs = batch * 48 * 8 * 8 * 64 * 9
    assert macs >= threads.PARALLEL_MIN_POINTS * threads.MACS_PER_POINT
    fn = gc.compile([x], [y, h, gx, gw], backend="llvm", backend_options={"cache": False})
    data = rng.normal(size=(batch, 64, 8, 8)).astype(np.float32)
    serial = same_bits_on_every_thread_count(fn, data)
    want = gc.compile([x], [y, h, gx, gw], backend="numpy")(data)
    for got, expected in zip(serial, want):  # (float32 sums of 576 terms, in another order)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


def test_non_finite_values_come_out_where_numpy_puts_them():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(2, 16, 6, 6))
    data[0, 1, 2, 5] = np.nan
    data[1, 0, 4, 3] = np.inf
    data[1, 2, 0, 0] = -np.inf
    seed = rng.normal(size=(2, 16, 6, 6))
    seed[0, 2, 1, 1] = np.inf

    def taken(y, gx, gw):
        assert conv_module.channels_last(y) and conv_module.channels_last(gx)
        assert conv_module.channels_last_weight_grad(gw)

    assert_conv_non_finite_like_numpy(data, seed, 16, taken)


@pytest.mark.parametrize("kind, shape, w_shape, dtype, bad, geom", [
    ("grad", (2, 32, 8, 8), (16, 32, 3, 3), "float32", {(0, 0, 1, 1): np.inf}, {}),
    ("grad", (2, 16, 7, 7), (32, 16, 3, 3), "float64",
     {(1, 2, 0, 0): -np.inf, (2, 1, 2, 2): np.nan}, dict(padding=1, dilation=2)),
    # +inf and -inf in the centre tap of two input channels of the transposed convolution
    ("transpose", (2, 16, 6, 6), (16, 32, 3, 3), "float32",
     {(0, 0, 1, 1): np.inf, (3, 0, 1, 1): -np.inf}, {}),
    ("transpose", (2, 16, 6), (16, 32, 3), "float32", {(2, 5, 0): np.nan, (4, 7, 2): np.inf},
     {}),
], ids=["grad-centre-inf", "grad-corners-f64-dilated", "transpose-inf-and-minus-inf",
        "transpose-1d"])
def test_inf_and_nan_weights_come_out_where_numpy_puts_them(kind, shape, w_shape, dtype, bad,
                                                            geom, monkeypatch):
    """As the direct schedule's (tests/backends/test_llvm_direct_conv.py): the channels-last
    tiles of a stride-1 transposed convolution read the padded gradient too."""
    from tests.backends.test_llvm_direct_conv import assert_weights_non_finite_like_numpy

    assert_weights_non_finite_like_numpy(monkeypatch, kind, shape, w_shape, dtype, bad,
                                         "channels_last_tile", **geom)
