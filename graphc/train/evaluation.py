"""Minibatches, the outputs of compiled functions sorted by role, evaluation and prediction."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .. import metrics as M
from ..errors import GraphError
from ..function import Function

_METRICS: dict[str, Callable] = {
    "accuracy": M.accuracy,
    "precision": lambda y, p: M.precision_recall_f1(y, p)[0],
    "recall": lambda y, p: M.precision_recall_f1(y, p)[1],
    "f1": lambda y, p: M.precision_recall_f1(y, p)[2],
}


def batches(arrays: Sequence[np.ndarray], batch_size: int, shuffle: bool = False,
            rng: np.random.Generator | None = None, drop_last: bool = False,
            order: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, ...]]:
    """Minibatches (tuples of slices along axis 0), in a random order when `shuffle` (drawn
    from `rng`), or in the given `order` (a permutation of the examples, or of a process's
    shard of them under MPI)."""
    n = len(arrays[0]) if order is None else len(order)
    if order is None and shuffle:
        order = (rng or np.random.default_rng()).permutation(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        if order is None:
            yield tuple(a[start:start + batch_size] for a in arrays)
        else:
            idx = order[start:start + batch_size]
            yield tuple(a[idx] for a in arrays)


def _as_arrays(data, what: str) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(a) for a in (data if isinstance(data, (tuple, list)) else (data,)))
    if not arrays or any(a.ndim == 0 for a in arrays):
        raise GraphError(f"{what} must be an array or a tuple of arrays sliced along axis 0")
    if len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
        raise GraphError(f"{what}: the arrays must be non-empty and of one length along axis 0, "
                         f"got lengths {[len(a) for a in arrays]}")
    return arrays


@dataclass
class _Outputs:
    """One call's outputs, sorted by role."""

    loss: float | None
    scores: np.ndarray | None
    scalars: dict[str, float]


def _loss_first(fn) -> bool | None:
    """Is `fn`'s first output a loss by its declared shape (every dim a static 1, or 0-d),
    rather than one row per example (a first dim the batch decides)? None when `fn` is no
    compiled Function (then a size-1 first output is a loss unless it has one row per
    example)."""
    program = getattr(fn, "graph", None)
    outputs = getattr(program, "outputs", None)
    if not outputs:
        return None
    return all(isinstance(d, int) and d == 1 for d in outputs[0].type.shape)


def _split_outputs(out, n: int, fn_name: str, loss_required: bool,
                   loss_first: bool | None = None) -> _Outputs:
    """The outputs of one call on a batch of `n` examples by role: the loss (the first
    output, of one element), scores (one row per example), named scalars. `loss_first`:
    `_loss_first` of the function, which settles a first output of one element on a batch
    of one (a (1,) loss, or one example's scores)."""
    outs = [np.asarray(o) for o in (out if isinstance(out, list) else [out])]
    loss, scores, scalars = None, None, {}
    for k, value in enumerate(outs):
        if k == 0 and value.size == 1 and (
                value.ndim == 0 or loss_required or loss_first
                or (loss_first is None and len(value) != n)):
            loss = float(value.reshape(()))  # (NumPy 2 refuses float() of a (1,) array)
        elif value.ndim == 0:
            scalars[f"out{k}"] = float(value)
        elif scores is None and len(value) == n and value.ndim <= 2:
            scores = value
    if loss is None and loss_required:
        raise GraphError(f"the first output of {fn_name} must be the scalar loss, got shape "
                         f"{outs[0].shape}")
    if loss is None and scores is None:
        raise GraphError(f"{fn_name} returned neither a scalar loss first nor scores with one "
                         f"row per example")
    return _Outputs(loss, scores, scalars)


class _Running:
    """Example-weighted running loss and scalar outputs, and correct-prediction counts."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count, self.correct, self.scored = 0, 0, 0

    def add(self, outputs: _Outputs, n: int, labels) -> None:
        self.count += n
        values = dict(outputs.scalars)
        if outputs.loss is not None:
            values["loss"] = outputs.loss
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + value * n
        if outputs.scores is not None and labels is not None:
            self.correct += int((M.predicted_labels(outputs.scores) == labels).sum())
            self.scored += n

    def logs(self) -> dict[str, float]:
        out = {k: v / max(self.count, 1) for k, v in sorted(self.sums.items(),
                                                             key=lambda kv: kv[0] != "loss")}
        if self.scored:
            out["accuracy"] = self.correct / self.scored
        return out


def _labels_of(arrays) -> np.ndarray | None:
    last = arrays[-1]
    return last if last.dtype.kind in "iu" and last.ndim == 1 else None


def evaluate(eval_fn: Function, data, batch_size: int = 256,
             metrics: Sequence[str] = ("accuracy",)) -> dict[str, float]:
    """Run `eval_fn` over `data` in order (outputs as for ``fit``'s eval_fn): the mean loss
    and scalar outputs and, when it returns scores and the last array holds integer labels,
    the requested metrics (accuracy, precision, recall, f1; macro-averaged)."""
    arrays = _as_arrays(data, "evaluation data")
    running, scores = _Running(), []
    loss_first = _loss_first(eval_fn)
    for batch in batches(arrays, batch_size):
        outputs = _split_outputs(eval_fn(*batch), len(batch[0]), "eval_fn", False, loss_first)
        running.add(outputs, len(batch[0]), None)
        if outputs.scores is not None:
            scores.append(outputs.scores)
    out = running.logs()
    labels = _labels_of(arrays)
    if scores and labels is not None:
        pred = np.concatenate(scores)
        for name in metrics:
            if name not in _METRICS:
                raise GraphError(f"unknown metric {name!r}; choose from {sorted(_METRICS)}")
            out[name] = _METRICS[name](labels, pred)
    return out


def predict(fn: Function, x, batch_size: int = 256) -> np.ndarray:
    """`fn` applied to `x` (an array or tuple of arrays) in batches, outputs concatenated."""
    arrays = _as_arrays(x, "prediction inputs")
    outs = [fn(*batch) for batch in batches(arrays, batch_size)]
    first = [o[0] if isinstance(o, list) else o for o in outs]
    return np.concatenate(first)
