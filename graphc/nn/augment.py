"""Data augmentation as graph ops: random crops, flips, shifts and Gaussian noise inside the
compiled training step.

Augmenting in the graph means no Python in the loop: the step draws its own random numbers
(from a seeded random state that advances at every call, as dropout's), so a training run is
reproducible from its seed, resumes exactly from a checkpoint, and runs at native speed on
llvm and cuda. With ``training=False`` each function is the identity, as ``F.dropout``; the
modules follow their mode (``.train()`` / ``.eval()``), so an evaluation function built from
the same model sees the images unchanged.

Images are NCHW (``(N, C, H, W)``; ``(N, H, W)`` is taken as one channel). Each sample of a
batch gets its own crop offset, flip and noise. A crop is written as two products with 0/1
selection matrices, ``S_y[n] @ x[n] @ S_x[n]^T`` (``S_y[n][i, h] = (h == top[n] + i)``): every
backend already runs batched matrix products at full speed, and the gradient with respect to
the images (for a model that learns its inputs) comes out of the product rule.
"""

from __future__ import annotations

import numpy as np

from .. import init, ops
from .. import random as grandom
from ..errors import GraphError, ShapeError, user_facing
from ..ir.graph import name_scope
from ..ir.tensor import Tensor
from .module import Module

__all__ = ["GaussianNoise", "RandomCrop", "RandomFlip", "RandomShift", "gaussian_noise",
           "random_crop", "random_flip", "random_shift"]


def _pair(v, what: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v)
    if len(pair) != 2 or not all(isinstance(d, (int, np.integer)) and d >= 0 for d in pair):
        raise GraphError(f"{what} must be an int >= 0 or a pair of them, got {v!r}")
    return int(pair[0]), int(pair[1])


def _images(x, what: str) -> tuple[Tensor, bool]:
    """x as (N, C, H, W) with static H and W; whether a channel axis was added."""
    if not isinstance(x, Tensor) or x.dtype.kind != "f":
        raise GraphError(f"{what} takes float images, got "
                         f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if x.ndim not in (3, 4):
        raise ShapeError(f"{what} takes images (N, C, H, W) or (N, H, W), got shape "
                         f"{tuple(x.shape)}")
    if not all(isinstance(d, (int, np.integer)) for d in x.shape[-2:]):
        raise ShapeError(f"{what} needs static image sizes H and W, got {tuple(x.shape)}")
    if x.ndim == 3:
        return ops.expand_dims(x, 1), True
    return x, False


def _per_sample(x: Tensor, ndim: int) -> tuple:
    """The shape (N, 1, ..., 1) of one draw per sample."""
    return (x.shape[0],) + (1,) * (ndim - 1)


def _offsets(state: Tensor, n, count: int) -> Tensor:
    """Per-sample integer offsets uniform in 0..count-1, shape (N, 1, 1) int64."""
    u = grandom.uniform((n, 1, 1), dtype=np.float64, state=state)
    return ops.cast(u * float(count), np.int64)  # u < 1: at most count - 1


def _selection(offset: Tensor, size: int, extent: int, dtype) -> Tensor:
    """S[n, i, h] = (h == offset[n] + i): rows `size`, columns `extent`, (N, size, extent)."""
    rows = ops.reshape(ops.arange(size), (1, size, 1))
    cols = ops.reshape(ops.arange(extent), (1, 1, extent))
    return ops.cast(ops.equal(cols, offset + rows), dtype)


def _state(seed, state, name: str) -> Tensor:
    if state is not None:
        return state
    return ops.rng_state(seed, name=name)


@user_facing("random_crop")
def random_crop(x, size, padding=0, training: bool = True, seed: int | None = None,
                state: Tensor | None = None) -> Tensor:
    """A random `size` (int or (h, w)) window of each image, after zero-padding it by
    `padding` (int or (pad_h, pad_w)) on every side (torchvision's ``RandomCrop``). Each
    sample gets its own window. Identity when not `training` (and when the window is the
    whole unpadded image)."""
    imgs, squeezed = _images(x, "random_crop")
    ph, pw = _pair(padding, "padding")
    sh, sw = _pair(size, "size")
    H, W = int(imgs.shape[2]), int(imgs.shape[3])
    Hp, Wp = H + 2 * ph, W + 2 * pw
    if not (1 <= sh <= Hp and 1 <= sw <= Wp):
        raise ShapeError(f"random_crop: a window of {(sh, sw)} does not fit images of "
                         f"{(H, W)} padded by {(ph, pw)}")
    if not training:
        if (sh, sw) != (H, W):
            raise GraphError(f"random_crop with training=False is the identity, which needs "
                             f"size == the image size {(H, W)}, got {(sh, sw)}; crop the "
                             "evaluation images to the same size another way (e.g. a slice)")
        return x
    with name_scope("random_crop"):
        st = _state(seed, state, "random_crop_rng")
        padded = ops.pad(imgs, [(0, 0), (0, 0), (ph, ph), (pw, pw)]) if ph or pw else imgs
        n = imgs.shape[0]
        rows = _selection(_offsets(st, n, Hp - sh + 1), sh, Hp, imgs.dtype)  # (N, sh, Hp)
        cols = _selection(_offsets(st, n, Wp - sw + 1), sw, Wp, imgs.dtype)  # (N, sw, Wp)
        out = ops.expand_dims(rows, 1) @ padded @ ops.transpose(ops.expand_dims(cols, 1),
                                                                (0, 1, 3, 2))
        return ops.reshape(out, (n, sh, sw)) if squeezed else out


@user_facing("random_shift")
def random_shift(x, max_shift, training: bool = True, seed: int | None = None,
                 state: Tensor | None = None) -> Tensor:
    """Move each image by a random whole number of pixels in -max_shift..max_shift along
    each axis (an int or (dy, dx)), filling with zeros: a crop of the image's own size from
    the image padded by `max_shift`. Identity when not `training`."""
    imgs, _ = _images(x, "random_shift")
    dy, dx = _pair(max_shift, "max_shift")
    if not training or (dy, dx) == (0, 0):
        return x
    H, W = int(imgs.shape[2]), int(imgs.shape[3])
    with name_scope("random_shift"):
        st = _state(seed, state, "random_shift_rng")
        return random_crop(x, (H, W), (dy, dx), training=True, state=st)


@user_facing("random_flip")
def random_flip(x, axis: int = -1, p: float = 0.5, training: bool = True,
                seed: int | None = None, state: Tensor | None = None) -> Tensor:
    """Reverse each sample along `axis` (default the last: a horizontal flip of NCHW images)
    with probability `p`. Identity when not `training`."""
    if not isinstance(x, Tensor):
        raise GraphError(f"random_flip takes a tensor, got {type(x).__name__}")
    if not 0.0 <= p <= 1.0:
        raise GraphError(f"random_flip: p must lie in [0, 1], got {p}")
    ax = axis + x.ndim if axis < 0 else axis
    if not 1 <= ax < x.ndim:
        raise GraphError(f"random_flip: axis {axis} of a tensor of rank {x.ndim} (axis 0 is "
                         "the batch: each sample is flipped, not the batch)")
    if not training or p == 0.0:
        return x
    with name_scope("random_flip"):
        st = _state(seed, state, "random_flip_rng")
        index = tuple(slice(None, None, -1) if i == ax else slice(None) for i in range(x.ndim))
        flipped = x[index]
        if p == 1.0:
            return flipped
        hit = grandom.bernoulli(_per_sample(x, x.ndim), p, dtype=bool, state=st)
        return ops.where(hit, flipped, x)


@user_facing("gaussian_noise")
def gaussian_noise(x, std: float, training: bool = True, seed: int | None = None,
                   state: Tensor | None = None) -> Tensor:
    """x plus independent N(0, std**2) noise on every element. Identity when not
    `training`."""
    if not isinstance(x, Tensor) or x.dtype.kind != "f":
        raise GraphError("gaussian_noise takes a float tensor")
    if not (np.isfinite(std) and std >= 0):
        raise GraphError(f"gaussian_noise: std must be finite and >= 0, got {std}")
    if not training or std == 0:
        return x
    with name_scope("gaussian_noise"):
        st = _state(seed, state, "gaussian_noise_rng")
        return x + grandom.normal_like(x, 0.0, float(std), state=st)


class _Augmentation(Module):
    """A module holding a seeded random state (buffer ``rng``) and applying its function in
    training mode only."""

    def __init__(self, rng: init.RngLike) -> None:
        super().__init__()
        seed = int(init.as_rng(rng).integers(0, 2**62))
        self.register_buffer("rng", ops.rng_state(seed, name="rng"))


class RandomCrop(_Augmentation):
    """``F.random_crop`` in training mode; the identity in evaluation mode (so `size` must be
    the image size there: use it with `padding`, as ``RandomCrop(28, padding=2)``)."""

    def __init__(self, size, padding=0, rng: init.RngLike = None) -> None:
        super().__init__(rng)
        self.size, self.padding = size, padding

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        return random_crop(x, self.size, self.padding, True, state=self.rng)

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}"


class RandomShift(_Augmentation):
    """``F.random_shift`` in training mode; the identity in evaluation mode."""

    def __init__(self, max_shift, rng: init.RngLike = None) -> None:
        super().__init__(rng)
        self.max_shift = max_shift

    def forward(self, x: Tensor) -> Tensor:
        return random_shift(x, self.max_shift, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}"


class RandomFlip(_Augmentation):
    """``F.random_flip`` in training mode; the identity in evaluation mode."""

    def __init__(self, axis: int = -1, p: float = 0.5, rng: init.RngLike = None) -> None:
        super().__init__(rng)
        self.axis, self.p = int(axis), float(p)

    def forward(self, x: Tensor) -> Tensor:
        return random_flip(x, self.axis, self.p, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, p={self.p}"


class GaussianNoise(_Augmentation):
    """``F.gaussian_noise`` in training mode; the identity in evaluation mode."""

    def __init__(self, std: float, rng: init.RngLike = None) -> None:
        super().__init__(rng)
        self.std = float(std)

    def forward(self, x: Tensor) -> Tensor:
        return gaussian_noise(x, self.std, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"std={self.std}"
