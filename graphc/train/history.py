"""What ``fit`` keeps between epochs: the ``History``, the ``EarlyStopping`` rule, and the
early-stopping bookkeeping that a checkpoint stores so that a resumed run goes on exactly as
the uninterrupted one would have."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..errors import GraphError


@dataclass
class History(Mapping):
    """Per-epoch records: ``history["val_loss"]`` is a list with one value per epoch.

    A read-only mapping (``keys()``, ``items()``, ``get()``, ``len()``, iteration, ``dict(h)``)
    of quantity -> values, plus the early-stopping facts ``best_epoch`` and ``stopped_epoch``.
    Epoch numbers are 1-based and absolute: with ``fit(..., initial_epoch=k)`` (no resume)
    the first record is epoch k + 1 (``initial_epoch`` says so).
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None  # 1-based epoch with the best monitored value
    stopped_epoch: int | None = None  # 1-based epoch after which training stopped early
    stop_reason: str = ""
    initial_epoch: int = 0  # the epoch before the first record

    def record(self, logs: dict[str, float]) -> None:
        """Append one epoch's values. Every quantity keeps one value per epoch: one an epoch
        did not log is NaN there (an epoch whose batches were all skipped logs no accuracy),
        and one logged for the first time gets NaN for the epochs before."""
        done = max((len(v) for v in self.history.values()), default=0)
        for key, value in logs.items():
            self.history.setdefault(key, [math.nan] * done).append(float(value))
        for values in self.history.values():
            if len(values) == done:
                values.append(math.nan)

    @property
    def epochs(self) -> int:
        """How many epochs were recorded."""
        return len(self.history.get("loss", []))

    @property
    def last_epoch(self) -> int:
        """The number of the last recorded epoch (``initial_epoch`` when none is)."""
        return self.initial_epoch + self.epochs

    def __getitem__(self, key: str) -> list[float]:
        """A copy of the values of `key` (the mapping is read-only: an edit of what it hands
        out changed ``epochs`` and what plots and resumes read)."""
        return list(self.history[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.history)

    def __len__(self) -> int:
        """How many quantities are recorded (see ``epochs`` for how many epochs)."""
        return len(self.history)

    def last(self, key: str) -> float:
        """The value of `key` after the last epoch."""
        return self.history[key][-1]

    def as_dict(self) -> dict:
        """Everything as plain JSON-ready data (what a checkpoint's metadata holds)."""
        return {"history": self.history, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "stop_reason": self.stop_reason,
                "initial_epoch": self.initial_epoch}


@dataclass
class EarlyStopping:
    """Stop when `monitor` has not improved by more than `min_delta` for `patience` epochs in a
    row (Keras's convention: patience 0 stops at the first epoch without progress); then
    (``restore_best``) put back every parameter of the step function — weights,
    optimizer state, batch-norm statistics — as it was after the best epoch.

    `monitor` defaults to ``val_loss`` when there is validation data (``val_accuracy`` if the
    evaluation returns no loss), else ``loss``; `mode` "auto" minimizes losses and maximizes
    anything else.
    """

    patience: int = 5
    monitor: str | None = None
    mode: str = "auto"
    min_delta: float = 0.0
    restore_best: bool = True

    def __post_init__(self) -> None:
        from ..arguments import number
        from ..ops.shape_ops import is_int_value

        if not is_int_value(self.patience) or self.patience < 0:
            raise GraphError(f"EarlyStopping: patience must be an int >= 0, got "
                             f"{self.patience!r}")
        self.patience = int(self.patience)
        if self.monitor is not None and (not isinstance(self.monitor, str) or not self.monitor):
            raise GraphError(f"EarlyStopping: monitor must be the name of a logged quantity "
                             f"(e.g. 'val_loss') or None, got {self.monitor!r}")
        if self.mode not in ("auto", "min", "max"):
            raise GraphError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got "
                             f"{self.mode!r}")
        # (Keras's: its size counts; a negative one made every epoch an improvement)
        self.min_delta = abs(number(self.min_delta, "EarlyStopping: min_delta"))
        if not isinstance(self.restore_best, (bool, np.bool_)):
            raise GraphError(f"EarlyStopping: restore_best must be True or False, got "
                             f"{self.restore_best!r}")


def improved(value: float, best: float | None, minimize: bool, min_delta: float) -> bool:
    """Whether `value` beats `best` by more than `min_delta` (NaN never does)."""
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if minimize else value > best + min_delta


@dataclass
class Progress:
    """The state of a run between epochs, all of which a checkpoint stores: the history, the
    monitored quantity, its best value, how many epochs since it improved, and (when early
    stopping restores them) the values of the step's parameters after the best epoch, by
    storage id."""

    history: History
    monitor: str | None = None
    best: float | None = None
    waited: int = 0
    best_state: dict[int, np.ndarray] | None = None

    def early_stopping_doc(self) -> dict:
        """The JSON part of a checkpoint's early-stopping state."""
        return {"monitor": self.monitor, "best": self.best, "waited": self.waited,
                "best_epoch": self.history.best_epoch,
                "best_parameters": self.best_state is not None}
