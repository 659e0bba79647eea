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
epoch's loss is the mean over examples, so a short last batch weighs what it holds. Epoch k
(1-based) is shuffled by the k-th permutation drawn from ``np.random.default_rng(seed)``
(``epoch_order``): the order depends on the seed and the epoch only, so a run resumed from a
checkpoint (``resume=``) or started at ``initial_epoch`` sees the batches the uninterrupted
run would have seen (it replays the earlier draws once), and a run from epoch 1 shuffles as
graphc always did.

Callbacks (``callbacks=[...]``) are objects with a method ``on_epoch_end(epoch, logs,
history)``, called after each epoch is recorded (``logs``: that epoch's values, ``history``
the ``History`` including them), before early stopping and checkpoints; returning True stops
training after this epoch. A callback that also has ``state()`` (JSON-ready data) and
``load_state(state)`` is saved in checkpoints and restored by ``resume``.
"""

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import GraphError
from ..function import Function
from ..ops.shape_ops import is_int_value
from .checkpoints import Checkpoint, save_checkpoint
from .checkpoints import resume as resume_from
from .evaluation import (
    _METRICS,
    _as_arrays,
    _labels_of,
    _Running,
    _split_outputs,
    batches,
    evaluate,
)
from .history import EarlyStopping, History, Progress
from .history import improved as _improved

__all__ = ["fit", "function_parameters", "History", "EarlyStopping", "Checkpoint",
           "NONFINITE_POLICIES"]

NONFINITE_POLICIES = ("stop", "skip", "raise")


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


def _format_logs(logs: dict[str, float]) -> str:
    return " - ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "time")


class _Shuffler:
    """Epoch k's order: the k-th permutation of `n` drawn from ``default_rng(seed)``.
    Consecutive epochs draw one permutation each; a run that starts later (a resume,
    ``initial_epoch``) replays the earlier draws once."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, int(seed)
        self.rng, self.drawn = np.random.default_rng(self.seed), 0

    def order(self, epoch: int) -> np.ndarray:
        if epoch <= self.drawn:  # going back: start the sequence again
            self.rng, self.drawn = np.random.default_rng(self.seed), 0
        while self.drawn < epoch - 1:
            self.rng.permutation(self.n)
            self.drawn += 1
        self.drawn += 1
        return self.rng.permutation(self.n)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of `n` examples in `epoch` (1-based) of a ``fit`` run seeded with
    `seed`: a function of (seed, epoch) alone, so that resuming replays the same batches."""
    return _Shuffler(n, seed).order(int(epoch))


def fit(step_fn: Function, data, epochs: int, batch_size: int, eval_fn: Function | None = None,
        val_data=None, early_stopping: EarlyStopping | int | None = None,
        checkpoint: Checkpoint | str | Path | None = None, *, shuffle: bool = True,
        seed: int = 0, verbose: int = 1, metrics: Sequence[str] = ("accuracy",),
        initial_epoch: int = 0, resume: str | Path | None = None, on_nonfinite: str = "stop",
        callbacks: Sequence = ()) -> History:
    """Train: `epochs` passes over `data` in shuffled minibatches through the compiled
    `step_fn`, validating with `eval_fn` on `val_data` after each epoch.

    `early_stopping` is an ``EarlyStopping`` or a patience (int); `checkpoint` a
    ``Checkpoint`` or a path (saved every epoch). `seed` fixes the shuffling: epoch k's order
    comes from ``(seed, k)``. `verbose`: 0 silent, 1 a progress bar on a terminal (one line
    per epoch when output is not a terminal, so CI logs stay short), 2 one line per epoch.

    `epochs` is the number of the last epoch (Keras's convention): ``initial_epoch=k`` trains
    epochs k+1 .. `epochs`, shuffled as they would have been in a run from epoch 1.
    ``resume=path`` continues from a checkpoint written by ``fit``: the step's parameters
    (weights, optimizer state and step counter, batch-norm statistics, random states), the
    epoch (training goes on with the next one), the history, the early-stopping state and the
    callbacks' state — with the same data, seed and settings, the result is that of the
    uninterrupted run. A resumed run first re-checks the restored state (patience exhausted,
    a non-finite last loss) and stops at once if the uninterrupted run would have stopped. A
    callback's request to stop is not replayed: a callback decides again, with its restored
    state, at the end of the next epoch (so a run a time budget stopped can go on). A
    checkpoint past `epochs` is refused.

    Under ``mpiexec`` (``gc.distributed.size() > 1``; compile the step with
    ``opt.updates(cost, distributed=True)``), `batch_size` is per process, as PyTorch's DDP:
    each process trains on its shard of every epoch's shuffled order (``shard_indices``: the
    same seed everywhere, padded so that every process runs the same number of steps), the
    epoch's metrics are averaged across processes, only rank 0 prints and writes
    checkpoints, and rank 0's early-stopping decision is broadcast. A checkpoint must be
    readable by every process to resume (a shared file system), with any process count.
    Under ``mpiexec`` a step that updates parameters but was not compiled distributed is a
    GraphError (each process would train its own model on its shard); a step that updates
    nothing may run (its metrics are averaged). With ``on_nonfinite`` "skip" or "raise" the
    decision is taken for the batch of all processes together (one small allreduce per
    batch): non-finite if any process's part is, so every process skips or raises together
    and the histories are identical, as one process holding the whole batch would have them.

    `on_nonfinite` says what a batch whose loss is NaN or infinite does: ``"stop"`` (the
    default) ends training after the epoch whose mean loss is not finite; ``"skip"`` leaves
    the batch out of the epoch's averages and goes on (``skipped_batches`` counts them) —
    use it with ``opt.updates(cost, skip_nonfinite=True)``, so that the step itself changes
    nothing on such a batch; ``"raise"`` raises ``FloatingPointError`` naming the epoch and
    the batch (that batch's update has been applied unless the step skips it). `callbacks`:
    see the module docstring. Returns the ``History``.
    """
    if not isinstance(step_fn, Function):
        raise GraphError(f"step_fn must be a compiled gc.Function, got {type(step_fn).__name__}")
    arrays = _as_arrays(data, "data")
    if len(step_fn.input_names) != len(arrays):
        raise GraphError(f"step_fn takes {len(step_fn.input_names)} inputs "
                         f"{step_fn.input_names}, but data has {len(arrays)} arrays")
    if eval_fn is not None and not isinstance(eval_fn, Function):
        raise GraphError(f"eval_fn must be a compiled gc.Function or None, got "
                         f"{type(eval_fn).__name__}")
    if (eval_fn is None) != (val_data is None):
        raise GraphError("validation needs both eval_fn and val_data")
    val_arrays = _as_arrays(val_data, "val_data") if val_data is not None else None
    if val_arrays is not None and len(eval_fn.input_names) != len(val_arrays):
        raise GraphError(f"eval_fn takes {len(eval_fn.input_names)} inputs "
                         f"{eval_fn.input_names}, but val_data has {len(val_arrays)} arrays")
    _check_int("epochs", epochs, 0)
    _check_int("batch_size", batch_size, 1)
    _check_int("initial_epoch", initial_epoch, 0)
    _check_int("seed", seed, 0)
    if verbose not in (0, 1, 2) or isinstance(verbose, float):
        raise GraphError(f"verbose must be 0, 1 or 2, got {verbose!r}")
    if not isinstance(shuffle, (bool, np.bool_)):
        raise GraphError(f"shuffle must be True or False, got {shuffle!r}")
    if isinstance(metrics, str) or not isinstance(metrics, Sequence) or \
            not all(isinstance(m, str) for m in metrics):
        raise GraphError(f"metrics must be a list of metric names (e.g. ['accuracy']), got "
                         f"{metrics!r}")
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise GraphError(f"metrics: unknown metric(s) {unknown}; choose from {sorted(_METRICS)}")
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        _check_int("early_stopping (a patience)", early_stopping, 0,
                   "an EarlyStopping, a patience (an int >= 0) or None")
    if checkpoint is not None and not isinstance(checkpoint, (Checkpoint, str, Path)):
        raise GraphError(f"checkpoint must be a Checkpoint, a path or None, got "
                         f"{type(checkpoint).__name__}")
    if resume is not None and not isinstance(resume, (str, Path)):
        raise GraphError(f"resume must be a checkpoint's path or None, got "
                         f"{type(resume).__name__}")
    if on_nonfinite not in NONFINITE_POLICIES:
        raise GraphError(f"on_nonfinite must be one of {NONFINITE_POLICIES}, got "
                         f"{on_nonfinite!r}")
    if isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise GraphError(f"callbacks must be a list of callbacks, got {callbacks!r}")
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(getattr(cb, "on_epoch_end", None)):
            raise GraphError(f"a callback needs a method on_epoch_end(epoch, logs, history); "
                             f"{type(cb).__name__} has none")
    from ..distributed import runtime as mpi
    from ..distributed.sampler import average_logs, shard_indices

    distributed = mpi.active()
    if distributed and not step_fn.distributed and step_fn.parameters():
        raise GraphError(
            f"fit runs under mpiexec ({mpi.size()} processes) and shards the data, but step_fn "
            "does not average its gradients across the processes: each process would train its "
            "own model on its own shard. Compile the step with opt.updates(cost, "
            "distributed=True) (or gc.distributed.DataParallel(opt).updates(cost))")
    main = mpi.rank() == 0
    if not main:
        verbose = 0
    stopper = early_stopping if early_stopping is None or isinstance(
        early_stopping, EarlyStopping) else EarlyStopping(int(early_stopping))
    if isinstance(checkpoint, (str, Path)):
        checkpoint = Checkpoint(checkpoint)
    mode = stopper.mode if stopper else "auto"
    labels_index = _labels_of(arrays) is not None
    storages = function_parameters(step_fn, eval_fn)

    if val_arrays is None:  # (found after an epoch had trained and moved the parameters)
        wanted = [(type(owner).__name__, owner.monitor) for owner in (stopper, *callbacks)
                  if isinstance(getattr(owner, "monitor", None), str)
                  and owner.monitor.startswith("val_")]
        if wanted:
            raise GraphError(f"{wanted[0][0]}: monitor {wanted[0][1]!r} is logged by "
                             f"validation only: pass eval_fn and val_data, or monitor 'loss'")
    if resume is not None:
        resumed, progress = resume_from(resume, step_fn, storages, callbacks,
                                        int(initial_epoch), stopper.monitor if stopper else None,
                                        epochs=int(epochs))
        if verbose:
            print(f"resumed from {resume} after epoch {resumed}", flush=True)
    else:
        progress = Progress(History(initial_epoch=int(initial_epoch)))
    history = progress.history
    if progress.monitor is None and stopper is not None and stopper.monitor:
        progress.monitor = stopper.monitor
    show_bar = verbose == 1 and sys.stderr.isatty()
    shuffler = _Shuffler(len(arrays[0]), seed)
    n_local = len(shard_indices(len(arrays[0]), mpi.rank(), mpi.size())) if distributed \
        else len(arrays[0])
    n_batches = math.ceil(n_local / batch_size)

    reason = _stop_reason(progress, stopper, history.last_epoch) if resume is not None else ""
    if reason:  # the uninterrupted run stopped here too
        history.stopped_epoch, history.stop_reason = history.last_epoch, reason
    for epoch in range(history.last_epoch + 1, epochs + 1) if not reason else ():
        started = time.perf_counter()
        bar = _progress(n_batches, f"epoch {epoch}/{epochs}") if show_bar else None
        order = shuffler.order(epoch) if shuffle else None
        if distributed:  # this process's shard of the epoch (every process: as many steps)
            order = shard_indices(len(arrays[0]) if order is None else order, mpi.rank(),
                                  mpi.size())
        running, skipped = _Running(), 0
        for b, batch in enumerate(batches(arrays, batch_size, order=order), start=1):
            outputs = _split_outputs(step_fn(*batch), len(batch[0]), "step_fn", True)
            bad = on_nonfinite != "stop" and not math.isfinite(outputs.loss)
            if distributed and on_nonfinite != "stop":
                # the batch of all processes together: non-finite if any process's part is
                # (as one process holding it would see), so that all skip (or raise) together
                bad = bool(mpi.allreduce_array(np.array([int(bad)]), "max")[0])
            if bad:
                if on_nonfinite == "raise":
                    raise FloatingPointError(f"epoch {epoch}, batch {b} of {n_batches}: the "
                                             f"loss is {outputs.loss}")
                skipped += 1
            else:
                running.add(outputs, len(batch[0]), batch[-1] if labels_index else None)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(running.logs(), refresh=False)
        logs = running.logs()
        logs.setdefault("loss", math.nan)  # every batch skipped
        if on_nonfinite == "skip":
            logs["skipped_batches"] = skipped
        if distributed:  # every process: the same averages (skips are decided together, so
            # skipped_batches, the steps all processes skipped, is already the same everywhere)
            kept = {"skipped_batches": logs.pop("skipped_batches")} \
                if "skipped_batches" in logs else {}
            logs = {**average_logs(logs, running.count), **kept}
        if val_arrays is not None:
            val_logs = evaluate(eval_fn, val_arrays, batch_size, metrics)
            if distributed:  # the same data everywhere; batch-norm statistics may differ
                val_logs = average_logs(val_logs, 1.0)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        logs["time"] = time.perf_counter() - started
        history.record(logs)
        if bar is not None:
            bar.set_postfix({k: v for k, v in logs.items() if k != "time"})
            bar.close()
        elif verbose:
            print(f"epoch {epoch}/{epochs} - {logs['time']:.2f}s - {_format_logs(logs)}",
                  flush=True)
        asked = [type(cb).__name__ for cb in callbacks if cb.on_epoch_end(epoch, logs, history)]
        if progress.monitor is None:  # the default: the validation loss, else what there is
            progress.monitor = next(k for k in ("val_loss", "val_accuracy", "loss") if k in logs)
        monitor = progress.monitor
        if monitor not in logs:
            raise GraphError(f"early stopping/checkpoints monitor {monitor!r}, but the epochs "
                             f"record {sorted(logs)}")
        minimize = mode == "min" or (mode == "auto" and "loss" in monitor)
        better = _improved(logs[monitor], progress.best, minimize,
                           stopper.min_delta if stopper else 0)
        if better:
            progress.best, progress.waited = float(logs[monitor]), 0
            history.best_epoch = epoch
            if stopper is not None and stopper.restore_best:
                progress.best_state = {id(s): s.value.copy() for s in storages}
        else:
            progress.waited += 1
        reason = _stop_reason(progress, stopper, epoch, asked, skipped == n_batches)
        if distributed:  # rank 0 decides for everyone: no process may leave alone
            reason = mpi.broadcast_object(reason)
        if checkpoint is not None and main and epoch % checkpoint.every == 0 and (
                better or not checkpoint.best_only):
            save_checkpoint(step_fn, checkpoint.target(epoch), epoch, progress, callbacks)
        if reason:
            history.stopped_epoch, history.stop_reason = epoch, reason
            break
    restore = progress.best_state is not None and history.best_epoch not in (
        None, history.last_epoch)
    if restore:
        for storage in storages:
            if id(storage) in progress.best_state:
                storage.write(progress.best_state[id(storage)])
    if verbose and history.stop_reason:
        print(f"stopped after epoch {history.stopped_epoch}: {history.stop_reason}")
    if verbose and restore:
        print(f"restored the parameters of epoch {history.best_epoch} ({progress.monitor} "
              f"{progress.best:.4f})")
    return history


def _check_int(name: str, value, low: int | None, what: str | None = None) -> None:
    if not is_int_value(value) or (low is not None and value < low):
        want = what or ("an int" if low is None else f"an int >= {low}")
        raise GraphError(f"{name} must be {want}, got {value!r}")


def _stop_reason(progress: Progress, stopper: EarlyStopping | None, epoch: int,
                 asked: Sequence[str] = (), all_skipped: bool = False) -> str:
    """Why training stops after `epoch` ("" when it goes on)."""
    history = progress.history
    loss = history["loss"][-1] if history.epochs else 0.0
    if all_skipped:
        return f"every batch of epoch {epoch} had a non-finite loss"
    if not math.isfinite(loss):
        return f"the loss became {loss}"
    if asked:
        return f"{', '.join(asked)} asked to stop"
    if stopper is not None and progress.waited > 0 and progress.waited >= stopper.patience:
        return f"{progress.monitor} did not improve for {progress.waited} epochs"
    return ""


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True,
                file=sys.stderr)
