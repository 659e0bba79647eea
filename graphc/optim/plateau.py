"""``ReduceLROnPlateau``: lower the learning rate when a monitored quantity stops improving.

PyTorch's ``torch.optim.lr_scheduler.ReduceLROnPlateau`` rule, as a ``gc.train.fit``
callback (or stepped by hand with ``step(value)``). The learning rate it lowers is the
optimizer's ``lr_parameter``, a float64 scalar parameter that the compiled training step reads
at every call: the callback writes the new value into the parameter's storage and the step
already compiled uses it at its next call — nothing is compiled again. Because that parameter
belongs to the step, a ``fit`` checkpoint holds the reduced rate, and ``fit(resume=...)``
restores it together with this callback's own state (best value, bad epochs, cooldown).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..errors import GraphError
from ..ops.shape_ops import is_int_value
from .optimizers import Optimizer

__all__ = ["ReduceLROnPlateau"]

MODES = ("auto", "min", "max")
THRESHOLD_MODES = ("rel", "abs")


class ReduceLROnPlateau:
    """Multiply the learning rate by `factor` once `monitor` has not improved for more than
    `patience` epochs (PyTorch's rule: with patience 10, the 11th bad epoch in a row reduces
    it), never below `min_lr`; then wait `cooldown` epochs before counting bad epochs again.

    `mode` "min" (the quantity should fall), "max" (rise) or "auto": "min" when the monitor's
    name contains "loss", else "max" (accuracies) — the rule of ``gc.train.EarlyStopping``.
    An epoch improves on the best value when, for "min", ``value < best * (1 - threshold)``
    (``threshold_mode="rel"``, the default, with threshold 1e-4) or ``value < best -
    threshold`` ("abs"); for "max" symmetrically. A NaN never improves. A reduction smaller
    than `eps` is skipped, as in PyTorch.

    With a schedule (``lr=gc.optim.schedules.cosine(...)``), the plateau factor multiplies the
    schedule's value: the optimizer's parameter is then the multiplier ``lr_scale`` (update k
    uses ``lr_scale * schedule(k)``), and `min_lr` bounds ``lr_scale * schedule.lr`` — the
    schedule's base rate — so the schedule keeps its shape, scaled down.

        opt = gc.optim.SGD(model.parameters(), lr=0.1)
        step, ev = gc.train.supervised(model, F.cross_entropy, opt, ("N", 4))
        plateau = gc.optim.ReduceLROnPlateau(opt, factor=0.5, patience=3)
        gc.train.fit(step, data, 50, 32, ev, val, callbacks=[plateau])
    """

    def __init__(self, optimizer: Optimizer, monitor: str = "val_loss", factor: float = 0.1,
                 patience: int = 10, min_lr: float = 0.0, *, mode: str = "auto",
                 threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                 eps: float = 1e-8, verbose: bool = False) -> None:
        if not isinstance(optimizer, Optimizer):
            raise GraphError(f"ReduceLROnPlateau needs a gc.optim optimizer, got "
                             f"{type(optimizer).__name__}")
        if not isinstance(monitor, str) or not monitor:
            raise GraphError(f"monitor must be the name of a logged quantity, got {monitor!r}")
        if not 0.0 <= float(factor) < 1.0:
            raise GraphError(f"factor must be in [0, 1): the learning rate is multiplied by "
                             f"it; got {factor}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if not is_int_value(value) or value < 0:
                raise GraphError(f"{name} must be an int >= 0, got {value!r}")
        patience, cooldown = int(patience), int(cooldown)
        for name, value in (("min_lr", min_lr), ("threshold", threshold), ("eps", eps)):
            if not (math.isfinite(float(value)) and float(value) >= 0):
                raise GraphError(f"{name} must be a finite number >= 0, got {value!r}")
        if mode not in MODES:
            raise GraphError(f"mode must be one of {MODES}, got {mode!r}")
        if threshold_mode not in THRESHOLD_MODES:
            raise GraphError(f"threshold_mode must be one of {THRESHOLD_MODES}, got "
                             f"{threshold_mode!r}")
        self.optimizer, self.monitor = optimizer, monitor
        self.mode = mode if mode != "auto" else ("min" if "loss" in monitor else "max")
        self.factor, self.patience, self.min_lr = float(factor), patience, float(min_lr)
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cooldown, self.eps, self.verbose = cooldown, float(eps), bool(verbose)
        self.best = self._worst
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0  # how many values `step` has seen
        self.reductions: list[int] = []  # the steps (epochs) after which the rate was reduced

    # -- the rule ----------------------------------------------------------------------------
    @property
    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    @property
    def in_cooldown(self) -> bool:
        """Whether bad epochs are not being counted (the `cooldown` after a reduction)."""
        return self.cooldown_counter > 0

    def is_better(self, value: float, best: float) -> bool:
        """Whether `value` improves on `best` by more than the threshold (PyTorch's rule)."""
        rel = self.threshold_mode == "rel"
        if self.mode == "min":
            return value < (best * (1.0 - self.threshold) if rel else best - self.threshold)
        return value > (best * (1.0 + self.threshold) if rel else best + self.threshold)

    def step(self, value: float) -> bool:
        """Take one epoch's value of the monitored quantity; reduce the learning rate if it
        has not improved for more than `patience` epochs. Returns whether it was reduced."""
        current = float(value)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best, self.num_bad_epochs = current, 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # no bad epochs are counted during the cooldown
        if self.num_bad_epochs > self.patience:
            reduced = self._reduce()
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0
            return reduced
        return False

    def _base(self) -> float:
        """What the parameter is multiplied by to give the nominal learning rate: 1 for a
        constant rate, the schedule's base rate for a schedule."""
        schedule = self.optimizer.schedule
        if schedule is None:
            return 1.0
        base = getattr(schedule, "lr", None)  # (a user's Schedule may not say: its first value)
        return float(schedule.value(0) if base is None else base)

    @property
    def lr(self) -> float:
        """The nominal learning rate: the optimizer's rate, or for a schedule its base rate
        times the optimizer's ``lr_scale``."""
        return float(self.optimizer.lr_parameter.value) * self._base()

    def _reduce(self) -> bool:
        base, old = self._base(), self.lr
        new = max(old * self.factor, self.min_lr)
        if not old - new > self.eps:
            return False
        self.optimizer.lr_parameter.value = new / base  # the compiled step reads it next call
        self.reductions.append(self.last_epoch)
        if self.verbose:
            print(f"ReduceLROnPlateau: {self.monitor} has not improved for more than "
                  f"{self.patience} epochs; learning rate {old:.4g} -> {new:.4g}", flush=True)
        return True

    # -- the fit callback protocol -----------------------------------------------------------
    def on_epoch_end(self, epoch: int, logs: Mapping[str, float], history) -> bool:
        """``fit``'s callback: step with this epoch's value of the monitor. Never stops
        training (returns False)."""
        if self.monitor not in logs:
            raise GraphError(f"ReduceLROnPlateau monitors {self.monitor!r}, but the epochs "
                             f"record {sorted(k for k in logs if k != 'time')}")
        self.step(logs[self.monitor])
        return False

    def state(self) -> dict:
        """JSON-ready state for ``fit`` checkpoints (the learning rate itself is the
        optimizer's parameter, saved with the step)."""
        best = self.best if math.isfinite(self.best) else None
        return {"monitor": self.monitor, "mode": self.mode, "best": best,
                "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter,
                "last_epoch": self.last_epoch, "reductions": list(self.reductions)}

    def load_state(self, state: Mapping) -> ReduceLROnPlateau:
        """Restore ``state()`` output; the monitor and mode must be those of this callback."""
        if not isinstance(state, Mapping):
            raise GraphError(f"ReduceLROnPlateau.load_state takes a dict, got "
                             f"{type(state).__name__}")
        for key, want in (("monitor", self.monitor), ("mode", self.mode)):
            if state.get(key) != want:
                raise GraphError(f"the saved ReduceLROnPlateau has {key} "
                                 f"{state.get(key)!r}; this one {want!r}")
        counts = {}
        for key in ("num_bad_epochs", "cooldown_counter", "last_epoch"):
            value = state.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise GraphError(f"ReduceLROnPlateau state: {key} must be an int >= 0, got "
                                 f"{value!r}")
            counts[key] = value
        best = state.get("best")
        if best is not None and (isinstance(best, bool) or not isinstance(best, (int, float))):
            raise GraphError(f"ReduceLROnPlateau state: best must be a number or None, got "
                             f"{best!r}")
        reductions = state.get("reductions", [])
        if not isinstance(reductions, list) or not all(
                isinstance(r, int) and not isinstance(r, bool) for r in reductions):
            raise GraphError(f"ReduceLROnPlateau state: reductions must be a list of ints, "
                             f"got {reductions!r}")
        self.best = self._worst if best is None else float(best)
        self.num_bad_epochs = counts["num_bad_epochs"]
        self.cooldown_counter = counts["cooldown_counter"]
        self.last_epoch = counts["last_epoch"]
        self.reductions = list(reductions)
        return self

    def __repr__(self) -> str:
        return (f"ReduceLROnPlateau(monitor={self.monitor!r}, mode={self.mode!r}, "
                f"factor={self.factor}, patience={self.patience}, min_lr={self.min_lr}, "
                f"lr={self.lr:.6g})")
