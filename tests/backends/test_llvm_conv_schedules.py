"""Convolutions on the llvm backend: the cost model's choice between whole-batch GEMMs (one
im2col and one GEMM over the batch, as on a GPU) and a GEMM per sample, and both schedules
against the NumPy backend on odd geometries (1x1 kernels, stride larger than the kernel,
dilation, batch 1, an empty batch), forward and every gradient."""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.ops import conv as conv_module
from graphc.ops import loops as L

F = gc.nn.functional


def _conv_node(x_shape, w_shape, **geom):
    with gc.Graph():
        x = gc.placeholder("x", x_shape)
        w = gc.parameter("w", np.ones(w_shape, np.float32))
        return F.conv2d(x, w, **geom).node


def test_the_cost_model_depends_on_the_sizes_only(monkeypatch):
    # these schedules serve the convolutions the direct and channels-last ones do not take
    # (tests/backends/test_llvm_direct_conv.py, test_llvm_channels_last_conv.py); here every
    # convolution is one of them
    monkeypatch.setattr(conv_module, "direct", lambda node: False)
    monkeypatch.setattr(conv_module, "channels_last", lambda node: False)
    monkeypatch.setattr(conv_module, "direct_weight_grad", lambda node: False)
    monkeypatch.setattr(conv_module, "channels_last_weight_grad", lambda node: False)
    mid = _conv_node(("N", 32, 32, 32), (32, 32, 3, 3), padding=1)  # cnn32's conv: 9.4M
    tiny = _conv_node(("N", 1, 28, 28), (6, 1, 5, 5))  # LeNet's first: 86k, one BLAS thread
    large = _conv_node(("N", 64, 32, 32), (64, 64, 3, 3), padding=1)  # 37.7M multiply-adds
    symbolic = _conv_node(("N", 3, "H", "W"), (8, 3, 3, 3), padding=1)
    assert conv_module.whole_batch(mid)
    assert not any(conv_module.whole_batch(n) for n in (tiny, large, symbolic))
    steps = mid.op.loops(mid, None)
    assert steps.host is steps.gpu  # im2col, one GEMM, permute: the whole batch
    for node in (tiny, large):
        (repeat,) = node.op.loops(node, None).host
        assert isinstance(repeat, L.Repeat)
    # in a gradient graph: the input gradient follows the forward, the weight gradient
    # stays per sample; the batch size plays no part
    with gc.Graph():
        x = gc.placeholder("x", ("N", 32, 32, 32))
        w = gc.parameter("w", np.ones((32, 32, 3, 3), np.float32))
        gx, gw = gc.grad(F.conv2d(x, w, padding=1).sum(), [x, w])
    assert gx.node.op.name == "conv_transpose" and conv_module.whole_batch(gx.node)
    assert gw.node.op.name == "conv_weight_grad" and not conv_module.whole_batch(gw.node)
    (repeat,) = [s for s in gw.node.op.loops(gw.node, None).host if isinstance(s, L.Repeat)]
    assert repeat.steps


GEOMETRIES = [  # (input shape, weight shape, conv2d keyword arguments)
    ((3, 2, 7, 6), (4, 2, 3, 3), dict(padding=1)),
    ((1, 3, 5, 5), (2, 3, 1, 1), dict()),  # pointwise, batch 1
    ((2, 2, 9, 8), (3, 2, 2, 3), dict(stride=(3, 4), padding=(0, 1))),  # stride > kernel
    ((2, 2, 9, 9), (3, 2, 3, 2), dict(stride=(2, 1), padding=(2, 0), dilation=(2, 3))),
    ((0, 2, 6, 6), (3, 2, 3, 3), dict(padding=1)),  # empty batch
    # unpadded: every tap inside, col2im adds whole rows with no test per element
    ((2, 3, 12, 12), (4, 3, 5, 5), dict()),
    ((2, 2, 9, 10), (3, 2, 3, 3), dict(stride=2)),  # the last column no window reaches
]


@pytest.mark.parametrize("schedule", ["whole_batch", "per_sample"])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["3x3", "1x1-batch1", "stride>kernel",
                                                      "dilated", "empty-batch", "valid-5x5",
                                                      "valid-strided"])
def test_both_schedules_match_numpy_with_every_gradient(geometry, schedule, monkeypatch):
    x_shape, w_shape, geom = geometry
    # the thresholds decide the schedule: [0, default) sends these small convolutions down
    # the whole-batch path, an empty range every one down the per-sample path
    monkeypatch.setattr(conv_module, "direct", lambda node: False)
    monkeypatch.setattr(conv_module, "channels_last", lambda node: False)
    monkeypatch.setattr(conv_module, "direct_weight_grad", lambda node: False)
    monkeypatch.setattr(conv_module, "channels_last_weight_grad", lambda node: False)
    if schedule == "whole_batch":
        monkeypatch.setattr(conv_module, "WHOLE_BATCH_MIN_MACS", 0)
    else:
        monkeypatch.setattr(conv_module, "WHOLE_BATCH_MACS", 0)
    rng = np.random.default_rng(0)
    data = rng.normal(size=x_shape)
    results = {}
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", ("N",) + x_shape[1:], "float64")
            w = gc.parameter("w", np.random.default_rng(1).normal(size=w_shape))
            y = F.conv2d(x, w, **geom)
            weights = np.random.default_rng(2).normal(size=tuple(y.shape[1:]))
            cost = (gc.tanh(y) * gc.constant(weights)).sum()
            gx, gw = gc.grad(cost, [x, w])
            options = {"cache": False} if backend == "llvm" else None
            fn = gc.compile([x], [y, cost, gx, gw], backend=backend, backend_options=options)
        results[backend] = fn(data)
    for got, want in zip(results["llvm"], results["numpy"]):
        assert np.shape(got) == np.shape(want)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_a_large_convolution_keeps_the_per_sample_schedule_and_matches():
    """Above the threshold (37.7M multiply-adds a sample) the host multiplies a sample at a
    time; float32 against the NumPy backend."""
    rng = np.random.default_rng(3)
    data = rng.normal(size=(2, 64, 32, 32)).astype(np.float32)
    results = {}
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", ("N", 64, 32, 32))
            w = gc.parameter("w", np.random.default_rng(4).normal(
                size=(64, 64, 3, 3)).astype(np.float32) * 0.05)
            y = F.conv2d(x, w, padding=1)
            cost = (y * y).mean()
            gx, gw = gc.grad(cost, [x, w])
            assert not conv_module.whole_batch(y.node)
            fn = gc.compile([x], [y, gx, gw], backend=backend)
        results[backend] = fn(data)
    for got, want in zip(results["llvm"], results["numpy"]):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-6)


@pytest.mark.parametrize("geometry,k,out_size,size,inside", [
    ((1, 1, 0), 5, 8, 12, True),  # LeNet-5's second layer: 8 windows of 5 in 12
    ((2, 1, 0), 3, 4, 10, True),  # strided, the last position unread
    ((1, 1, 1), 3, 12, 12, False),  # padded: the edge taps fall outside
    ((1, 2, 0), 3, 6, 9, False),  # dilated past the edge (a geometry no graph makes)
    ((1, 1, 0), 5, 8, sympy.Symbol("W"), False),  # a size known at run time only
])
def test_col2im_drops_its_test_per_element_only_where_every_tap_is_inside(
        geometry, k, out_size, size, inside):
    assert conv_module._taps_inside(geometry, k, out_size, size) is inside
