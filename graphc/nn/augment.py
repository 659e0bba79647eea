"""Data augmentation as graph ops: random crops, flips, shifts and Gaussian noise inside the
compiled training step.

Augmenting in the graph means no Python in the loop: the step draws its own random numbers
(from a seeded random state that advances at every call, as dropout's), so a training run is
reproducible from its seed, resumes exactly from a checkpoint, and runs at native speed on
llvm and cuda. With ``training=False`` each function is the identity, as ``F.dropout``; the
modules follow their mode (``.train()`` / ``.eval()``), so an evaluation function built from
the same model sees the images unchanged.

Images are NCHW (``(N, C, H, W)``; ``(N, H, W)`` is taken as one channel). Each sample of a
batch gets its own crop offset, flip and noise. A crop picks its window along each axis with a
"barrel shifter" (`_window`): one stage per bit of the largest offset, each a per-sample
``where`` between two static slices. Pixel values are only moved, never multiplied: a product
with 0/1 selection matrices would turn an inf or NaN pixel, even one outside the window, into
NaN across its row and column (``0 * inf``). Slices, pads and ``where`` all have gradients, and
run the same on every backend.
"""

from __future__ import annotations

import numpy as np

from .. import init, ops
from .. import random as grandom
from ..arguments import fraction, spread
from ..errors import GraphError, ShapeError, user_facing
from ..ir.graph import name_scope
from ..ir.tensor import Tensor
from ..ops.conv import int_tuple
from ..ops.random import state_for
from ..ops.shape_ops import is_int_value
from .module import Module

__all__ = ["GaussianNoise", "RandomCrop", "RandomFlip", "RandomShift", "gaussian_noise",
           "random_crop", "random_flip", "random_shift"]


def _pair(v, what: str) -> tuple[int, int]:
    items = v if isinstance(v, (tuple, list)) else (v,)
    if not all(is_int_value(d) and d >= 0 for d in items):
        raise GraphError(f"{what} must be an int >= 0 or a pair of them, got {v!r}")
    return int_tuple(v, 2, what)  # (its message for a wrong count)


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


def _slice(x: Tensor, axis: int, start: int, length: int) -> Tensor:
    return x[(slice(None),) * axis + (slice(start, start + length),)]


def _window(x: Tensor, offset: Tensor, size: int, axis: int) -> Tensor:
    """``x[n, ..., offset[n] : offset[n] + size, ...]`` along `axis` for every sample n, where
    `offset` (N, 1, 1, 1) int64 lies in 0..extent-size.

    A barrel shifter: each stage keeps, per sample (``where``), the slice of the current
    tensor that starts at 0 or the one that starts at the stage's step, and is that step
    shorter. The steps are ``span - (2**(b-1) - 1)`` (taken when the offset reaches it), then
    ``2**(b-2), ..., 2, 1`` (the offset's remaining bits), where ``span = extent - size`` has
    b bits: they add up to `span`, so the last stage has `size` rows and no padding is needed,
    and every offset 0..span is a sum of some of them. log2(span) stages of static slices,
    whose gradients (``unslice``) and values are exact on every backend: values are moved, not
    combined, so a non-finite pixel stays where it is (see the module docstring)."""
    span = int(x.shape[axis]) - size  # the largest offset
    if span == 0:
        return x
    low_bits = span.bit_length() - 1
    steps = [span - ((1 << low_bits) - 1)] + [1 << j for j in reversed(range(low_bits))]
    length, rest = int(x.shape[axis]), offset
    for step in steps:
        length -= step
        hit = rest >= step  # after the first step, the offset's bit of this weight
        rest = ops.where(hit, rest - step, rest)
        x = ops.where(hit, _slice(x, axis, step, length), _slice(x, axis, 0, length))
    return x


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
            raise GraphError(f"random_crop with training=False (nn.RandomCrop in eval mode) is "
                             f"the identity, which needs size == the image size {(H, W)}, got "
                             f"{(sh, sw)}; crop the evaluation images to the same size another "
                             "way (e.g. a slice)")
        return x
    with name_scope("random_crop"):
        st = state_for(seed, state, "random_crop_rng")
        padded = ops.pad(imgs, [(0, 0), (0, 0), (ph, ph), (pw, pw)]) if ph or pw else imgs
        n = imgs.shape[0]
        top = ops.expand_dims(_offsets(st, n, Hp - sh + 1), 1)  # (N, 1, 1, 1)
        left = ops.expand_dims(_offsets(st, n, Wp - sw + 1), 1)
        out = _window(_window(padded, top, sh, 2), left, sw, 3)
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
        st = state_for(seed, state, "random_shift_rng")
        return random_crop(x, (H, W), (dy, dx), training=True, state=st)


@user_facing("random_flip")
def random_flip(x, axis: int = -1, p: float = 0.5, training: bool = True,
                seed: int | None = None, state: Tensor | None = None) -> Tensor:
    """Reverse each sample along `axis` (default the last: a horizontal flip of NCHW images)
    with probability `p`. Identity when not `training`."""
    if not isinstance(x, Tensor):
        raise GraphError(f"random_flip takes a tensor, got {type(x).__name__}")
    fraction(p, "random_flip: p")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise GraphError(f"random_flip: axis must be an int, got {axis!r}")
    ax = axis + x.ndim if axis < 0 else axis
    if not 1 <= ax < x.ndim:
        raise GraphError(f"random_flip: axis {axis} of a tensor of rank {x.ndim} (axis 0 is "
                         "the batch: each sample is flipped, not the batch)")
    if not training or p == 0.0:
        return x
    with name_scope("random_flip"):
        st = state_for(seed, state, "random_flip_rng")
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
    spread(std, "gaussian_noise: std")
    if not training or std == 0:
        return x
    with name_scope("gaussian_noise"):
        st = state_for(seed, state, "gaussian_noise_rng")
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
    the image size there: use it with `padding`, as ``RandomCrop(28, padding=2)``). Eval mode
    checks that as ``F.random_crop(..., training=False)`` does, so a wrong size is a clear
    GraphError here rather than an unrelated shape error further down the model."""

    def __init__(self, size, padding=0, rng: init.RngLike = None) -> None:
        _pair(size, "RandomCrop: size")  # bad arguments are refused here, not at first use
        _pair(padding, "RandomCrop: padding")
        super().__init__(rng)
        self.size, self.padding = size, padding

    def forward(self, x: Tensor) -> Tensor:
        return random_crop(x, self.size, self.padding, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"size={self.size}, padding={self.padding}"


class RandomShift(_Augmentation):
    """``F.random_shift`` in training mode; the identity in evaluation mode."""

    def __init__(self, max_shift, rng: init.RngLike = None) -> None:
        _pair(max_shift, "RandomShift: max_shift")
        super().__init__(rng)
        self.max_shift = max_shift

    def forward(self, x: Tensor) -> Tensor:
        return random_shift(x, self.max_shift, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"max_shift={self.max_shift}"


class RandomFlip(_Augmentation):
    """``F.random_flip`` in training mode; the identity in evaluation mode."""

    def __init__(self, axis: int = -1, p: float = 0.5, rng: init.RngLike = None) -> None:
        if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)) or \
                axis == 0:  # bad arguments are refused here, not at first use
            raise GraphError(f"RandomFlip: axis must be an int other than 0 (the batch), got "
                             f"{axis!r}")
        fraction(p, "RandomFlip: p")
        super().__init__(rng)
        self.axis, self.p = int(axis), float(p)

    def forward(self, x: Tensor) -> Tensor:
        return random_flip(x, self.axis, self.p, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, p={self.p}"


class GaussianNoise(_Augmentation):
    """``F.gaussian_noise`` in training mode; the identity in evaluation mode."""

    def __init__(self, std: float, rng: init.RngLike = None) -> None:
        spread(std, "GaussianNoise: std")
        super().__init__(rng)
        self.std = float(std)

    def forward(self, x: Tensor) -> Tensor:
        return gaussian_noise(x, self.std, self.training, state=self.rng)

    def extra_repr(self) -> str:
        return f"std={self.std}"
