"""``gc.train.fit``: minibatch training of a compiled step, with a progress bar, validation,
early stopping that restores the best parameters, atomic checkpoints and a history.

The contract with the compiled functions:

* ``step_fn(*batch)`` — ``batch`` is one minibatch of each array of ``data``, fed
  positionally. Its first output is the (scalar, batch-mean) loss. Further outputs are
  optional: class scores (N, C) or predicted labels (N,) give the running training ``accuracy``
  against the *last* array of ``data`` (the labels, when they are integers); a scalar output
  k (a batch-mean metric computed in the graph) is averaged over the epoch as ``out{k}``.
* ``eval_fn(*batch)`` — the same outputs, on ``val_data`` (in order, in batches of
  ``batch_size``), compiled from the model in eval mode, recorded with a ``val_`` prefix:
  ``val_loss``, ``val_accuracy`` (and the other requested metrics), ``val_out{k}``. An
  evaluation function may also return the scores alone (no loss): then there is no
  ``val_loss``, and early stopping monitors ``val_accuracy`` by default.

The last partial batch of an epoch is kept (symbolic batch dimensions accept any size); each
epoch's loss is the mean over examples, so a short last batch weighs what it holds.
"""

import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import GraphError
from ..function import Function
from .evaluation import _as_arrays, _labels_of, _Running, _split_outputs, batches, evaluate


@dataclass
class History(Mapping):
    """Per-epoch records: ``history["val_loss"]`` is a list with one value per epoch.

    A read-only mapping (``keys()``, ``items()``, ``get()``, ``len()``, iteration, ``dict(h)``)
    of quantity -> values, plus the early-stopping facts ``best_epoch`` and ``stopped_epoch``.
    """

    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int | None = None  # 1-based epoch with the best monitored value
    stopped_epoch: int | None = None  # 1-based epoch after which training stopped early
    stop_reason: str = ""

    def record(self, logs: dict[str, float]) -> None:
        """Append one epoch's values (a key seen for the first time starts a new list)."""
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    @property
    def epochs(self) -> int:
        """How many epochs were recorded."""
        return len(self.history.get("loss", []))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

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
                "stopped_epoch": self.stopped_epoch, "stop_reason": self.stop_reason}


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
        if self.patience < 0:
            raise GraphError(f"patience must be >= 0, got {self.patience}")
        if self.mode not in ("auto", "min", "max"):
            raise GraphError(f"mode must be 'auto', 'min' or 'max', got {self.mode!r}")


@dataclass
class Checkpoint:
    """Save the step function (graph and every parameter: weights, optimizer state, ...)
    with ``gc.save`` every `every` epochs, atomically. `path` may contain ``{epoch}``.
    With `best_only`, save only when the early-stopping monitor (or `monitor`) improves.
    Restore with ``gc.load(path, into=step_fn)``; ``gc.io.read_metadata(path)`` has the
    epoch and the history so far."""

    path: str | Path
    every: int = 1
    best_only: bool = False

    def target(self, epoch: int) -> Path:
        """The file of `epoch`'s checkpoint (``{epoch}`` in the path filled in)."""
        return Path(str(self.path).format(epoch=epoch))


def function_parameters(*functions: Function) -> list:
    """The parameter storages used by compiled functions (each once): what a snapshot of
    the training state must hold."""
    seen: dict[int, object] = {}
    for fn in functions:
        if fn is None:
            continue
        for node in fn.graph.nodes:
            if node.op.name == "parameter":
                storage = node.attrs["storage"]
                seen.setdefault(id(storage), storage)
    return list(seen.values())


def _improved(value: float, best: float | None, minimize: bool, min_delta: float) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(value)
    return value < best - min_delta if minimize else value > best + min_delta


def _format_logs(logs: dict[str, float]) -> str:
    return " - ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "time")


def fit(step_fn: Function, data, epochs: int, batch_size: int, eval_fn: Function | None = None,
        val_data=None, early_stopping: EarlyStopping | int | None = None,
        checkpoint: Checkpoint | str | Path | None = None, *, shuffle: bool = True,
        seed: int = 0, verbose: int = 1, metrics: Sequence[str] = ("accuracy",)) -> History:
    """Train: `epochs` passes over `data` in shuffled minibatches through the compiled
    `step_fn`, validating with `eval_fn` on `val_data` after each epoch.

    `early_stopping` is an ``EarlyStopping`` or a patience (int); `checkpoint` a
    ``Checkpoint`` or a path (saved every epoch). `seed` fixes the shuffling. `verbose`: 0
    silent, 1 a progress bar on a terminal (one line per epoch when output is not a
    terminal, so CI logs stay short), 2 one line per epoch. Returns the ``History``.
    """
    arrays = _as_arrays(data, "data")
    if not isinstance(step_fn, Function):
        raise GraphError(f"step_fn must be a compiled gc.Function, got {type(step_fn).__name__}")
    if len(step_fn.input_names) != len(arrays):
        raise GraphError(f"step_fn takes {len(step_fn.input_names)} inputs "
                         f"{step_fn.input_names}, but data has {len(arrays)} arrays")
    if (eval_fn is None) != (val_data is None):
        raise GraphError("validation needs both eval_fn and val_data")
    if epochs < 0 or batch_size < 1:
        raise GraphError(f"need epochs >= 0 and batch_size >= 1, got {epochs}, {batch_size}")
    val_arrays = _as_arrays(val_data, "val_data") if val_data is not None else None
    stopper = EarlyStopping(early_stopping) if isinstance(early_stopping, int) else early_stopping
    if isinstance(checkpoint, (str, Path)):
        checkpoint = Checkpoint(checkpoint)
    monitor = stopper.monitor if stopper and stopper.monitor else None
    mode = stopper.mode if stopper else "auto"
    labels_index = _labels_of(arrays) is not None

    rng = np.random.default_rng(seed)
    storages = function_parameters(step_fn, eval_fn)
    history, best, best_state, waited = History(), None, None, 0
    show_bar = verbose == 1 and sys.stderr.isatty()
    n_batches = math.ceil(len(arrays[0]) / batch_size)

    for epoch in range(1, epochs + 1):
        started, running = time.perf_counter(), _Running()
        bar = _progress(n_batches, f"epoch {epoch}/{epochs}") if show_bar else None
        for batch in batches(arrays, batch_size, shuffle, rng):
            outputs = _split_outputs(step_fn(*batch), len(batch[0]), "step_fn", True)
            running.add(outputs, len(batch[0]), batch[-1] if labels_index else None)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(running.logs(), refresh=False)
        logs = running.logs()
        if val_arrays is not None:
            logs.update({f"val_{k}": v for k, v in
                         evaluate(eval_fn, val_arrays, batch_size, metrics).items()})
        logs["time"] = time.perf_counter() - started
        history.record(logs)
        if bar is not None:
            bar.set_postfix({k: v for k, v in logs.items() if k != "time"})
            bar.close()
        elif verbose:
            print(f"epoch {epoch}/{epochs} - {logs['time']:.2f}s - {_format_logs(logs)}",
                  flush=True)
        if monitor is None:  # the default: the validation loss, else what validation has
            monitor = next(k for k in ("val_loss", "val_accuracy", "loss") if k in logs)
        if monitor not in logs:
            raise GraphError(f"early stopping/checkpoints monitor {monitor!r}, but the epochs "
                             f"record {sorted(logs)}")
        minimize = mode == "min" or (mode == "auto" and "loss" in monitor)
        improved = _improved(logs[monitor], best, minimize, stopper.min_delta if stopper else 0)
        if improved:
            best, waited, history.best_epoch = logs[monitor], 0, epoch
            if stopper is not None and stopper.restore_best:
                best_state = [s.value.copy() for s in storages]
        else:
            waited += 1
        if checkpoint is not None and epoch % checkpoint.every == 0 and (
                improved or not checkpoint.best_only):
            _save_checkpoint(step_fn, checkpoint.target(epoch), epoch, history, monitor)
        if math.isnan(logs["loss"]):
            history.stopped_epoch, history.stop_reason = epoch, "the loss became NaN"
            break
        if stopper is not None and not improved and waited >= stopper.patience:
            history.stopped_epoch = epoch
            history.stop_reason = f"{monitor} did not improve for {waited} epochs"
            break
    if best_state is not None and history.best_epoch != history.epochs:
        for storage, value in zip(storages, best_state):
            storage.write(value)
    if verbose and history.stop_reason:
        print(f"stopped after epoch {history.stopped_epoch}: {history.stop_reason}")
    if verbose and best_state is not None and history.best_epoch != history.epochs:
        print(f"restored the parameters of epoch {history.best_epoch} ({monitor} {best:.4f})")
    return history


def _save_checkpoint(step_fn: Function, path: Path, epoch: int, history: History,
                     monitor: str) -> None:
    from ..io import save

    save(step_fn, path, metadata={"epoch": epoch, "monitor": monitor, **history.as_dict()})


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True,
                file=sys.stderr)
