"""The residual block of ResNets (He et al. 2016): ``relu(F(x) + shortcut(x))``."""

from __future__ import annotations

from .. import init, ops
from ..ir.tensor import Tensor
from .conv import Conv2d
from .module import Module
from .norm import BatchNorm2d


class ResidualBlock(Module):
    """conv3x3-bn-relu-conv3x3-bn, plus the input, then relu ("basic block").

    The skip connection lets the gradient reach early layers undiminished, which is what
    makes deep stacks trainable. When the block changes the channel count or downsamples
    (``stride > 1``), the shortcut is a 1x1 convolution + batch norm (ResNet's option B);
    otherwise it is the identity. Convolutions have no bias (batch norm supplies the shift).
    ``skip=False`` drops the shortcut altogether: the same layers as a plain stack, for
    comparisons.
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, stride: int = 1,
                 skip: bool = True, rng: init.RngLike = None, *, dtype="float32") -> None:
        super().__init__()
        self.skip = bool(skip)
        out_channels = in_channels if out_channels is None else out_channels
        rng, dt = init.as_rng(rng), init.float_dtype(dtype)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, rng=rng,
                            dtype=dt)
        self.bn1 = BatchNorm2d(out_channels, dtype=dt)
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng, dtype=dt)
        self.bn2 = BatchNorm2d(out_channels, dtype=dt)
        self.projection = None
        if skip and (stride != 1 or in_channels != out_channels):
            self.projection = Conv2d(in_channels, out_channels, 1, stride, bias=False, rng=rng,
                                     dtype=dt)
            self.projection_bn = BatchNorm2d(out_channels, dtype=dt)

    def forward(self, x: Tensor) -> Tensor:
        y = ops.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        if not self.skip:
            return ops.relu(y)
        shortcut = x if self.projection is None else self.projection_bn(self.projection(x))
        return ops.relu(y + shortcut)
