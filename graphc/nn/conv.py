"""Convolution and pooling layers (NCHW / NCL layouts, PyTorch's conventions)."""

from __future__ import annotations

import math

from .. import init
from ..ir.tensor import Tensor
from ..ops.conv import int_tuple
from ..ops.sources import parameter
from . import functional as F
from .module import Module


class _ConvNd(Module):
    """Shared by Conv1d/Conv2d/ConvTranspose2d: weight, bias and their PyTorch default init
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = weight.shape[1] * prod(kernel)."""

    nd = 2
    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, bias: bool = True, rng: init.RngLike = None, *,
                 dtype="float32") -> None:
        super().__init__()
        dt = init.float_dtype(dtype)
        nd = self.nd
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = int_tuple(kernel_size, nd, "kernel_size")
        self.stride = int_tuple(stride, nd, "stride")
        self.padding = int_tuple(padding, nd, "padding")
        self.dilation = int_tuple(dilation, nd, "dilation")
        rng = init.as_rng(rng)
        lead = (in_channels, out_channels) if self.transposed else (out_channels, in_channels)
        shape = lead + self.kernel_size
        self.weight = parameter("weight", init.torch_default(shape, rng, dtype=dt))
        fan_in = shape[1] * math.prod(self.kernel_size)
        self.bias = (parameter("bias", init.torch_default((out_channels,), rng, fan_in, dt))
                     if bias else None)

    def extra_repr(self) -> str:
        """PyTorch's: the arguments, with those at their defaults left out after padding."""
        k = self.kernel_size if self.nd > 1 else self.kernel_size[0]
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={k}, "
                f"stride={self.stride}, padding={self.padding}")
        if any(p != 0 for p in getattr(self, "output_padding", ())):
            text += f", output_padding={self.output_padding}"
        if any(d != 1 for d in self.dilation):
            text += f", dilation={self.dilation}"
        return text + (", bias=False" if self.bias is None else "")


class Conv1d(_ConvNd):
    """1-d convolution: (N, C_in, L) -> (N, C_out, L'); weight (C_out, C_in, k)."""

    nd = 1

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class Conv2d(_ConvNd):
    """2-d convolution: (N, C_in, H, W) -> (N, C_out, H', W'); weight (C_out, C_in, kh, kw)."""

    nd = 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class ConvTranspose2d(_ConvNd):
    """Transposed 2-d convolution (the adjoint of Conv2d; upsampling in decoders and GAN
    generators): weight (C_in, C_out, kh, kw) as in PyTorch."""

    nd = 2
    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, bias: bool = True,
                 rng: init.RngLike = None, *, dtype="float32") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias,
                         rng, dtype=dtype)
        self.output_padding = int_tuple(output_padding, 2, "output_padding")

    def forward(self, x: Tensor) -> Tensor:
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.dilation)


class _Pool(Module):
    fn = staticmethod(F.max_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return type(self).fn(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        stride = self.kernel_size if self.stride is None else self.stride
        return f"kernel_size={self.kernel_size}, stride={stride}, padding={self.padding}"


class MaxPool1d(_Pool):
    """Max over windows of (N, C, L); stride defaults to the kernel size."""

    fn = staticmethod(F.max_pool1d)


class MaxPool2d(_Pool):
    """Max over windows of (N, C, H, W); stride defaults to the kernel size."""

    fn = staticmethod(F.max_pool2d)


class AvgPool1d(_Pool):
    """Mean over windows of (N, C, L) (padding counts as zeros, as PyTorch's default)."""

    fn = staticmethod(F.avg_pool1d)


class AvgPool2d(_Pool):
    """Mean over windows of (N, C, H, W) (padding counts as zeros, as PyTorch's default)."""

    fn = staticmethod(F.avg_pool2d)
