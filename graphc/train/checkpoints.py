"""Checkpoints of a ``fit`` run, and resuming from one.

A checkpoint is the training step saved with ``gc.save`` (every parameter it uses: weights,
optimizer state and step counter, batch-norm statistics, random states) plus, in the file's
metadata, the epoch, the history, the early-stopping state (monitor, best value, best epoch,
epochs waited) and the callbacks' state, and — when early stopping restores the best
parameters — those parameters as the file's extra arrays. ``fit(..., resume=path)`` puts all
of it back, so that with the same data, seed and settings the resumed run computes what the
uninterrupted run would have: the shuffling of epoch k depends on ``(seed, k)`` only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import GraphError
from ..function import Function
from ..ops.shape_ops import is_int_value
from .history import History, Progress

#: ``{epoch}`` or ``{epoch:SPEC}`` in a checkpoint path (SPEC: a format spec of an int)
_EPOCH_FIELD = re.compile(r"\{epoch(?::([^{}]*))?\}")

FORMAT_KEY = "fit_checkpoint"  # metadata marker and layout version of a fit checkpoint
LAYOUT = 1


@dataclass
class Checkpoint:
    """Save the step function (graph and every parameter: weights, optimizer state, ...)
    with ``gc.save`` every `every` epochs, atomically. `path` may contain ``{epoch}``.
    With `best_only`, save only when the monitored value improves: the early-stopping
    monitor, else the validation loss (the validation accuracy, else the training loss, when
    there is none).
    Continue a run with ``fit(..., resume=path)``; ``gc.load(path, into=step_fn)`` restores
    the parameters alone, and ``gc.io.read_metadata(path)`` has the epoch and the history."""

    path: str | Path
    every: int = 1
    best_only: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.path, (str, Path)):
            raise GraphError(f"Checkpoint: path must be a str or a Path, got "
                             f"{type(self.path).__name__}")
        if not is_int_value(self.every) or self.every < 1:
            raise GraphError(f"Checkpoint: every must be a whole number of epochs >= 1, got "
                             f"{self.every!r}")
        if not isinstance(self.best_only, (bool, np.bool_)):
            raise GraphError(f"Checkpoint: best_only must be True or False, got "
                             f"{self.best_only!r}")
        try:  # (a bad format spec is found now, not after the first epoch trained)
            self.target(1)
        except ValueError as exc:
            raise GraphError(f"Checkpoint: the path's {{epoch...}} field cannot format an "
                             f"epoch: {exc}") from None

    def target(self, epoch: int) -> Path:
        """The file of `epoch`'s checkpoint: each ``{epoch}`` or ``{epoch:SPEC}`` (``{epoch:03d}``)
        in the path replaced by the number, nothing else read as a template (``str.format``
        raised on ``run{1}`` after an epoch had trained, and looked attributes up for
        ``{epoch.__class__}``)."""
        return Path(_EPOCH_FIELD.sub(lambda m: format(int(epoch), m.group(1) or ""),
                                     str(self.path)))


def _step_keys(step_fn: Function) -> dict[int, str]:
    """The file key of each parameter storage of the step (as ``gc.save`` names them)."""
    from ..io.graphs import parameter_keys

    return {id(node.attrs["storage"]): key
            for key, node in parameter_keys(step_fn.graph.nodes).items()}


def save_checkpoint(step_fn: Function, path: Path, epoch: int, progress: Progress,
                    callbacks: Sequence) -> None:
    """Write `step_fn` and the run's state after `epoch` to `path` (atomically)."""
    from ..io import save

    extra = None
    if progress.best_state is not None:
        keys = _step_keys(step_fn)
        extra = {keys[sid]: value for sid, value in progress.best_state.items() if sid in keys}
    metadata = {"epoch": epoch, "monitor": progress.monitor, **progress.history.as_dict(),
                FORMAT_KEY: LAYOUT, "early_stopping": progress.early_stopping_doc(),
                "callbacks": [_callback_state(cb) for cb in callbacks]}
    save(step_fn, path, metadata=metadata, extra_arrays=extra)


def _callback_state(callback):
    """What a checkpoint keeps of `callback`: its ``state()`` when it can also
    ``load_state`` it back (a callback with ``state`` alone made every checkpoint refuse to
    resume), else None."""
    state, load = getattr(callback, "state", None), getattr(callback, "load_state", None)
    return state() if callable(state) and callable(load) else None


def _field(meta: dict, key: str, kind: type, path) -> object:
    value = meta.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise GraphError(f"{path} is not a checkpoint written by gc.train.fit ({key!r} is "
                         f"{value!r}); restore a plain saved step with gc.load(path, into=step)")
    return value


def _check_progress(path, meta: dict, epoch: int, records: dict, stopping: dict) -> None:
    """The run's progress as a checkpoint states it, checked before a resume writes anything:
    a monitor no epoch logged failed only after the next epoch had trained (the parameters
    and a plateau's rate had moved), negative epochs trained extra ones, and a best epoch,
    best value or wait count of any type was taken as it was."""
    def bad(what: str):
        raise GraphError(f"{path}: the checkpoint's {what}")

    initial = meta.get("initial_epoch", 0)
    if epoch < 0 or not is_int_value(initial) or not 0 <= initial <= epoch:
        bad(f"epochs are not 0 <= initial_epoch ({initial!r}) <= epoch ({epoch})")
    for key, values in records.items():
        if not isinstance(values, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            bad(f"history {key!r} is not a list of numbers")
    lengths = {key: len(values) for key, values in records.items()}
    if len(set(lengths.values())) > 1:  # every epoch logs every quantity
        bad(f"history records its quantities for different numbers of epochs ({lengths})")
    monitor = meta.get("monitor")
    if monitor is not None and (not isinstance(monitor, str) or records and monitor not in records):
        bad(f"monitor {monitor!r} is not one of the values its epochs logged "
            f"({', '.join(sorted(records)) or 'none'})")
    best_epoch = stopping.get("best_epoch")
    if best_epoch is not None and (not is_int_value(best_epoch) or not 1 <= best_epoch <= epoch):
        bad(f"best epoch {best_epoch!r} is not one of its epochs 1..{epoch}")
    best = stopping.get("best")
    if best is not None and (not isinstance(best, (int, float)) or isinstance(best, bool)
                             or best != best):
        bad(f"best value {best!r} is not a number")
    waited = stopping.get("waited", 0)
    if not is_int_value(waited) or waited < 0:
        bad(f"early-stopping wait {waited!r} is not a count of epochs")


def resume(path, step_fn: Function, storages: list, callbacks: Sequence,
           initial_epoch: int, monitor: str | None = None, *,
           epochs: int | None = None) -> tuple[int, Progress]:
    """Restore a run from the checkpoint at `path`: the step's parameters (as ``gc.load(path,
    into=step_fn)``), and return the checkpoint's epoch and the run's ``Progress``; the
    callbacks get their saved state back. Everything is read and checked before anything is
    written: the file is read once; the metadata, the best parameters and every parameter of
    the step are checked; then the callbacks' states are loaded (a callback checks its state
    in ``load_state``: when one refuses, those already loaded get back the state they had);
    the step's parameters are written last. A failed resume changes nothing. `storages`:
    every parameter of the step and evaluation functions, for the best parameters early
    stopping may restore; `monitor`: what early stopping now monitors, if it says (it must
    be what the checkpoint's run monitored); `epochs`: the run's last epoch, which the
    checkpoint may not be past."""
    from ..io import read_function_checkpoint

    meta, extra, write_parameters = read_function_checkpoint(path, step_fn)  # (checks, no writes)
    layout = _field(meta, FORMAT_KEY, int, path)
    if layout != LAYOUT:
        raise GraphError(f"{path} is a fit checkpoint of layout {layout}; this graphc reads "
                         f"layout {LAYOUT}")
    epoch = _field(meta, "epoch", int, path)
    if epochs is not None and epoch > epochs:
        raise GraphError(f"{path} holds the state after epoch {epoch}, past the {epochs} "
                         f"epochs asked for: resuming would train nothing; pass epochs >= "
                         f"{epoch}")
    records = _field(meta, "history", dict, path)
    stopping = _field(meta, "early_stopping", dict, path)
    saved_callbacks = _field(meta, "callbacks", list, path)
    if initial_epoch not in (0, epoch):
        raise GraphError(f"{path} holds the state after epoch {epoch}; resuming goes on with "
                         f"epoch {epoch + 1}, so initial_epoch must be 0 or {epoch}, not "
                         f"{initial_epoch} (the parameters are those of epoch {epoch})")
    if len(saved_callbacks) != len(callbacks) or any(
            state is not None and not (callable(getattr(cb, "load_state", None))
                                       and callable(getattr(cb, "state", None)))
            for cb, state in zip(callbacks, saved_callbacks)):
        raise GraphError(f"{path} holds the state of {len(saved_callbacks)} callback(s); pass "
                         f"the same callbacks, in the same order ({len(callbacks)} given)")
    _check_progress(path, meta, epoch, records, stopping)
    saved_monitor = meta.get("monitor")
    if monitor and saved_monitor and monitor != saved_monitor:
        raise GraphError(f"{path} was monitoring {saved_monitor!r}; early stopping now "
                         f"monitors {monitor!r}")
    try:
        history = History({str(k): [float(v) for v in values] for k, values in records.items()},
                          best_epoch=stopping.get("best_epoch"),
                          initial_epoch=int(meta.get("initial_epoch", 0)))
        best = stopping.get("best")
        progress = Progress(history, monitor=saved_monitor,
                            best=None if best is None else float(best),
                            waited=int(stopping.get("waited", 0)))
    except (TypeError, ValueError, OverflowError) as exc:
        raise GraphError(f"{path}: a bad history or early-stopping state in the checkpoint "
                         f"({type(exc).__name__}: {exc})") from None
    if history.last_epoch != epoch:
        raise GraphError(f"{path}: the history records epochs {history.initial_epoch + 1}.."
                         f"{history.last_epoch}, but the checkpoint is of epoch {epoch}")
    best_arrays = None
    if stopping.get("best_parameters"):
        keys = _step_keys(step_fn)
        missing = sorted(set(keys.values()) - set(extra))
        if missing:
            raise GraphError(f"{path}: the best parameters of {missing} are not in the file")
        best_arrays = {sid: extra[key] for sid, key in keys.items()}
        for storage in storages:  # check them as they will be written at the end
            if id(storage) in best_arrays:
                storage.checked(best_arrays[id(storage)], keys[id(storage)])
    _load_callback_states(callbacks, saved_callbacks)  # all or none
    write_parameters()  # (checked above: cannot fail)
    if best_arrays is not None:  # parameters only the evaluation uses are not trained
        progress.best_state = {id(s): best_arrays.get(id(s), s.value.copy()) for s in storages}
    return epoch, progress


def _load_callback_states(callbacks: Sequence, states: Sequence) -> None:
    """``load_state`` each callback's saved state (None: nothing saved); when one refuses
    its state, the callbacks already loaded get back what ``state()`` said they had, and
    the error goes on: the callbacks are left as they were."""
    loaded = []
    try:
        for callback, state in zip(callbacks, states):
            if state is not None:
                before = callback.state()
                loaded.append((callback, before))
                callback.load_state(state)
    except BaseException:
        for callback, before in reversed(loaded):
            callback.load_state(before)
        raise
