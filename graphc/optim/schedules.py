"""Learning-rate schedules: the learning rate as a function of the optimizer's step counter.

A schedule is called with ``k``, the number of updates already applied (0 for the first one):
a symbolic float64 scalar inside an update graph, so the rate changes every step with no
Python in the loop — or a plain number, to print or plot it. The counter is an optimizer
parameter, so a checkpoint resumes the schedule where it stopped.

Per-step equivalents of PyTorch's schedulers (stepped once per update):
``step`` = StepLR, ``exponential`` = ExponentialLR, ``inverse_time`` = 1/t decay
(Adagrad's ``lr_decay`` formula).
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..errors import GraphError
from ..ir.tensor import Tensor

__all__ = ["Schedule", "step", "exponential", "inverse_time"]


def _floor(x):
    if isinstance(x, Tensor):  # k >= 0, so truncation toward zero is floor
        return ops.cast(ops.cast(x, np.int64), x.dtype)
    return math.floor(x)


class Schedule:
    """Base class: subclasses define ``__call__(k)`` with operations valid for a tensor and a
    number alike."""

    lr: float

    def __call__(self, k):
        raise NotImplementedError

    def value(self, k: int) -> float:
        """The learning rate of update number `k` (0-based), as a Python float."""
        return float(self(float(k)))


class step(Schedule):  # noqa: N801 - the public name is a verb, as gc.optim.schedules.step
    """``lr * gamma ** floor(k / step_size)``: multiply by gamma every `step_size` updates."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1) -> None:
        if step_size < 1:
            raise GraphError(f"step_size must be >= 1, got {step_size}")
        self.lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)

    def __call__(self, k):
        return self.lr * self.gamma ** _floor(k / self.step_size)

    def __repr__(self) -> str:
        return f"step(lr={self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class exponential(Schedule):  # noqa: N801
    """``lr * gamma ** k``: multiply by gamma after every update."""

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr, self.gamma = float(lr), float(gamma)

    def __call__(self, k):
        return self.lr * self.gamma ** k

    def __repr__(self) -> str:
        return f"exponential(lr={self.lr}, gamma={self.gamma})"


class inverse_time(Schedule):  # noqa: N801
    """``lr / (1 + decay * k)``: the 1/t decay of stochastic approximation (Robbins-Monro)."""

    def __init__(self, lr: float, decay: float) -> None:
        if decay < 0:
            raise GraphError(f"decay must be >= 0, got {decay}")
        self.lr, self.decay = float(lr), float(decay)

    def __call__(self, k):
        return self.lr / (1.0 + self.decay * k)

    def __repr__(self) -> str:
        return f"inverse_time(lr={self.lr}, decay={self.decay})"
