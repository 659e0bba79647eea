"""Learning-rate schedules: the learning rate as a function of the optimizer's step counter.

A schedule is called with ``k``, the number of updates already applied (0 for the first one):
a symbolic float64 scalar inside an update graph, so the rate changes every step with no
Python in the loop — or a plain number, to print or plot it. The counter is an optimizer
parameter, so a checkpoint resumes the schedule where it stopped.

Per-step equivalents of PyTorch's schedulers (stepped once per update):
``step`` = StepLR, ``exponential`` = ExponentialLR, ``inverse_time`` = 1/t decay
(Adagrad's ``lr_decay`` formula), ``cosine`` = CosineAnnealingLR (held at ``min_lr`` after
``total_steps``), ``warmup`` = LinearLR's ramp in front of any of them (SequentialLR's shift).

The optimizer multiplies the schedule's value by its ``lr_scale`` parameter (1.0 unless a
``ReduceLROnPlateau`` callback or the user lowered it), so the schedule keeps its shape when
a plateau scales it down.
"""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..arguments import number
from ..errors import GraphError
from ..ir.tensor import Tensor

__all__ = ["Schedule", "step", "exponential", "inverse_time", "cosine", "warmup"]


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
        self.lr, self.gamma = _rate(lr, "lr"), _rate(gamma, "gamma")
        self.step_size = _count(step_size, "step_size", 1)

    def __call__(self, k):
        return self.lr * self.gamma ** _floor(k / self.step_size)

    def __repr__(self) -> str:
        return f"step(lr={self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class exponential(Schedule):  # noqa: N801
    """``lr * gamma ** k``: multiply by gamma after every update."""

    def __init__(self, lr: float, gamma: float) -> None:
        self.lr, self.gamma = _rate(lr, "lr"), _rate(gamma, "gamma")

    def __call__(self, k):
        return self.lr * self.gamma ** k

    def __repr__(self) -> str:
        return f"exponential(lr={self.lr}, gamma={self.gamma})"


class inverse_time(Schedule):  # noqa: N801
    """``lr / (1 + decay * k)``: the 1/t decay of stochastic approximation (Robbins-Monro)."""

    def __init__(self, lr: float, decay: float) -> None:
        self.lr, self.decay = _rate(lr, "lr"), _rate(decay, "decay")

    def __call__(self, k):
        return self.lr / (1.0 + self.decay * k)

    def __repr__(self) -> str:
        return f"inverse_time(lr={self.lr}, decay={self.decay})"


def _count(value, what: str, least: int) -> int:
    """An integer >= `least` (bools and non-integral floats refused), or a GraphError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer, float)) or \
            int(value) != value or value < least:
        raise GraphError(f"{what} must be an integer >= {least}, got {value!r}")
    return int(value)


def _rate(value, what: str) -> float:
    """A finite float >= 0, or a GraphError: a negative rate or factor would turn descent into
    ascent (or alternate its sign), a NaN would reach every parameter."""
    return number(value, what, least=0.0)




class cosine(Schedule):  # noqa: N801
    """Cosine annealing from `lr` down to `min_lr` over `total_steps` updates, then `min_lr`:
    ``min_lr + (lr - min_lr) * (1 + cos(pi * min(k, total_steps) / total_steps)) / 2``.

    The closed form of PyTorch's ``CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)``
    stepped once per update, with one difference: after `total_steps` updates PyTorch's
    formula climbs back up (the cosine goes on: a restart without warning), while this one
    stays at `min_lr` — training past the end of the schedule keeps its smallest rate.
    For warm restarts (SGDR), build a new optimizer or schedule for each cycle.
    """

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0) -> None:
        self.lr, self.min_lr = _rate(lr, "lr"), _rate(min_lr, "min_lr")
        self.total_steps = _count(total_steps, "total_steps", 1)

    def __call__(self, k):
        t = self.total_steps
        if isinstance(k, Tensor):
            c = ops.cos(math.pi * ops.minimum(k, float(t)) / t)
        else:
            c = math.cos(math.pi * min(k, t) / t)
        return self.min_lr + (self.lr - self.min_lr) * (1.0 + c) / 2.0

    def __repr__(self) -> str:
        return f"cosine(lr={self.lr}, total_steps={self.total_steps}, min_lr={self.min_lr})"


class warmup(Schedule):  # noqa: N801
    """A linear warm-up of `steps` updates in front of a schedule (or a constant rate).

    Update k < `steps` uses ``schedule(0) * (k + 1) / steps`` — from ``schedule(0) / steps``
    up to the full ``schedule(0)`` at the last warm-up update, never 0, so no update is
    wasted; update k >= `steps` uses ``schedule(k - steps)``: the wrapped schedule starts
    when the warm-up ends, as PyTorch's ``SequentialLR([LinearLR(start_factor=1/steps,
    total_iters=steps-1), schedule], milestones=[steps])`` shifts it. So
    ``warmup(cosine(lr, T), W)`` runs W + T updates before it reaches min_lr; to fit a
    budget of N updates in all, use ``warmup(cosine(lr, N - W), W)``. ``steps=0`` is the
    wrapped schedule itself. Works with any ``Schedule`` (step, exponential, inverse_time,
    cosine, another warmup) or a plain number.
    """

    def __init__(self, schedule_or_lr: Schedule | float, steps: int) -> None:
        if isinstance(schedule_or_lr, Schedule):
            self.schedule: Schedule | None = schedule_or_lr
            base = getattr(schedule_or_lr, "lr", None)  # a schedule's base rate, else its first
            self.lr = float(schedule_or_lr.value(0) if base is None else base)
        else:
            self.schedule, self.lr = None, _rate(schedule_or_lr, "the learning rate")
        self.steps = _count(steps, "steps", 0)

    def _after(self, k):
        return self.lr if self.schedule is None else self.schedule(k)

    def __call__(self, k):
        s = self.steps
        if s == 0:
            return self._after(k)
        peak = float(self._after(0.0))
        if isinstance(k, Tensor):
            ramp = peak * ((k + 1.0) / s)
            # the wrapped schedule never sees a negative k (k - s inside the warm-up: its
            # value is not taken, but must stay finite for backend_options={"check_finite"})
            after = self._after(ops.maximum(k - float(s), 0.0))
            return ops.where(ops.less(k, float(s)), ramp, after)
        return peak * ((k + 1.0) / s) if k < s else self._after(k - s)

    def __repr__(self) -> str:
        inner = self.lr if self.schedule is None else self.schedule
        return f"warmup({inner!r}, steps={self.steps})"
