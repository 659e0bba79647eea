"""Activations as modules, including the learnable PReLU and Maxout."""

from __future__ import annotations

from .. import init, ops
from ..errors import GraphError, ShapeError
from ..init import full
from ..ir.tensor import Tensor
from ..ops.sources import parameter
from . import functional as F
from .module import Module


class _Elementwise(Module):
    """A parameter-free activation: ``fn(x)``."""

    fn = staticmethod(ops.relu)

    def forward(self, x: Tensor) -> Tensor:
        return type(self).fn(x)


class ReLU(_Elementwise):
    """max(x, 0)."""

    fn = staticmethod(ops.relu)


class Tanh(_Elementwise):
    """The hyperbolic tangent, in (-1, 1)."""

    fn = staticmethod(ops.tanh)


class Sigmoid(_Elementwise):
    """The logistic function 1 / (1 + exp(-x)), in (0, 1)."""

    fn = staticmethod(ops.sigmoid)


class SiLU(_Elementwise):
    """x * sigmoid(x) (also called swish)."""

    fn = staticmethod(ops.silu)


class GELU(Module):
    """x * Phi(x), Phi the standard normal CDF; ``approximate="tanh"`` for PyTorch's tanh
    formula (``nn.GELU(approximate=...)``)."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise GraphError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return ops.gelu(x, approximate=self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class LeakyReLU(Module):
    """x for x > 0, negative_slope * x otherwise (PyTorch default slope 0.01)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Tensor) -> Tensor:
        return ops.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(Module):
    """x for x > 0, alpha * (exp(x) - 1) otherwise."""

    def __init__(self, alpha: float = 1.0) -> None:
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x: Tensor) -> Tensor:
        return ops.elu(x, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


class Softmax(Module):
    """Softmax along `dim` (class probabilities from logits)."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = int(dim)

    def forward(self, x: Tensor) -> Tensor:
        return ops.softmax(x, self.dim)


class PReLU(Module):
    """Leaky ReLU whose slope is learned: x for x > 0, a * x otherwise.

    One slope shared by every channel (``num_parameters=1``, PyTorch's default) or one per
    channel (axis 1 of the input). Init: 0.25, as PyTorch.
    """

    def __init__(self, num_parameters: int = 1, init: float = 0.25, *,
                 dtype="float32") -> None:
        super().__init__()
        self.num_parameters = int(num_parameters)
        self.weight = parameter("weight", full(self.num_parameters, init, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        a = self.weight
        if self.num_parameters > 1:
            if x.ndim < 2:
                raise ShapeError(f"PReLU with {self.num_parameters} slopes needs (N, C, ...) "
                                 f"input, got shape {x.shape}")
            a = ops.reshape(a, (1, self.num_parameters) + (1,) * (x.ndim - 2))
        return ops.where(x > 0, x, a * x)

    def extra_repr(self) -> str:
        return f"num_parameters={self.num_parameters}"


class Maxout(Module):
    """Maxout units (Goodfellow et al. 2013): `pieces` linear maps per output, keep the max.

    ``y[:, j] = max_k (x @ W + b)[:, j, k]`` with ``weight`` of shape (in, out * pieces). A
    learned, piecewise-linear convex activation; init as Linear.
    """

    def __init__(self, in_features: int, out_features: int, pieces: int,
                 rng: init.RngLike = None, *, dtype="float32") -> None:
        super().__init__()
        if pieces < 1:
            raise GraphError(f"Maxout needs at least one piece, got {pieces}")
        rng, dt = init.as_rng(rng), init.float_dtype(dtype)
        self.in_features, self.out_features, self.pieces = in_features, out_features, pieces
        width = out_features * pieces
        self.weight = parameter("weight", init.torch_default((in_features, width), rng, dtype=dt))
        self.bias = parameter("bias", init.torch_default((width,), rng, in_features, dt))

    def forward(self, x: Tensor) -> Tensor:
        z = F.linear(x, self.weight, self.bias)
        z = ops.reshape(z, tuple(z.shape[:-1]) + (self.out_features, self.pieces))
        return ops.max(z, axis=-1)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, pieces={self.pieces}"
