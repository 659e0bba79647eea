"""Basic layers: Linear, Flatten, Dropout, Embedding."""

from __future__ import annotations

from .. import init, ops
from ..arguments import fraction
from ..ir.tensor import Tensor
from ..ops.sources import parameter
from . import functional as F
from .module import Module


class Linear(Module):
    """``y = x @ weight + bias`` with ``weight`` of shape (in, out) (the transpose of PyTorch's
    storage, so the graph reads as the formula).

    Init (PyTorch's default): weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)). `dtype`: float32
    (default) or float64, as every layer's.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 rng: init.RngLike = None, *, dtype="float32") -> None:
        super().__init__()
        rng, dt = init.as_rng(rng), init.float_dtype(dtype)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = parameter("weight", init.torch_default((in_features, out_features), rng,
                                                             dtype=dt))
        self.bias = (parameter("bias", init.torch_default((out_features,), rng, in_features,
                                                          dtype=dt))
                     if bias else None)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Flatten(Module):
    """Merge every axis from `start_dim` on into one: (N, C, H, W) -> (N, C*H*W)."""

    def __init__(self, start_dim: int = 1) -> None:
        super().__init__()
        self.start_dim = int(start_dim)

    def forward(self, x: Tensor) -> Tensor:
        return ops.flatten(x, self.start_dim)


class Dropout(Module):
    """Zero each element with probability p in training mode, scaling the rest by 1/(1-p);
    the identity in eval mode.

    Its masks come from a random-state buffer ``rng`` ([seed, step], seeded from `rng` or the
    ``gc.manual_seed`` sequence) that the compiled step advances by itself, so a training run
    replays exactly from the same seed — and from a checkpoint.
    """

    def __init__(self, p: float = 0.5, rng: init.RngLike = None) -> None:
        super().__init__()
        self.p = fraction(p, "dropout probability")
        seed = int(init.as_rng(rng).integers(0, 2**62))
        self.register_buffer("rng", ops.rng_state(seed, name="rng"))

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Embedding(Module):
    """A lookup table: integer ids of any shape -> rows of ``weight`` (num, dim).

    Init (PyTorch's default): N(0, 1).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, rng: init.RngLike = None, *,
                 dtype="float32") -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight = parameter("weight", init.normal((num_embeddings, embedding_dim), rng, 1.0,
                                                      dtype=dtype))

    def forward(self, ids: Tensor) -> Tensor:
        return F.embedding(ids, self.weight)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
