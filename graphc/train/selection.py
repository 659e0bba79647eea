"""Model selection: k-fold cross-validation (``cross_validate``) and hyper-parameter search
(``search``) of compiled models trained with ``fit``, reported as a sorted ``Results`` table.

Why a ``build`` function rather than a model: every fold and every trial must start from
fresh parameters (a fold that continued training the previous fold's weights would have seen
its validation examples). So the caller gives ``build(params) -> (step_fn, eval_fn)``, which
must create a *new* model, optimizer and the two compiled functions at each call (for
instance with ``gc.train.supervised``); ``params`` is the trial's hyper-parameters (empty for
``cross_validate``). A build that hands back functions updating the parameters of its
previous call is refused. Each build runs under ``gc.manual_seed(seed)``, so every fold and
trial starts from the same random initial state (trials differ in their hyper-parameters
only); the caller's global seed sequence is put back afterwards.

Splitting, parameter grids and random sampling are scikit-learn's (``StratifiedKFold``,
``KFold``, ``train_test_split``, ``ParameterGrid``, ``ParameterSampler``). The labels used to
stratify are the last array of ``data``, and only when it is a 1-d integer array (class
labels); otherwise the splits are plain (shuffled, seeded) ones.

Scores are those of ``gc.train.evaluate(eval_fn, validation part)`` once ``fit`` is done —
the trained model as ``fit`` left it, i.e. with the best parameters restored when early
stopping is on — named with a ``val_`` prefix as in ``fit``'s history: ``val_loss``,
``val_accuracy`` (when eval_fn returns class scores or labels), ``val_out{k}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..errors import GraphError
from ..function import Function
from ..ops import random as _random
from .evaluation import _as_arrays, _labels_of, evaluate
from .history import History
from .loop import fit

__all__ = ["Results", "cross_validate", "search"]

Build = Callable[[dict[str, Any]], tuple[Function, Function]]
Split = tuple[np.ndarray, np.ndarray]

# fit's arguments that model selection sets itself
_OWN = ("eval_fn", "val_data", "resume", "initial_epoch")
# fit's arguments that a hyper-parameter of the same name overrides (it also reaches build)
FIT_HYPERPARAMETERS = ("epochs", "batch_size", "early_stopping")
_MINIMIZED = ("loss", "error", "mse", "mae")  # a monitor named with these is minimized
_BOOKKEEPING = ("trained_epochs", "time")  # columns beside the scores


class Results(Mapping):
    """A table of scores: a read-only mapping column name -> NumPy array, one row per fold
    (``cross_validate``) or per trial (``search``), sorted by ``monitor``, best first
    (``mode`` "max" or "min"; rows whose score is NaN come last; ties keep their order).

    Columns: the row's index (``fold`` or ``trial``, the order it was run in), the
    hyper-parameters (``search``), the validation scores (``val_accuracy``, ``val_loss``, ...;
    for a k-fold search their mean over the folds, with ``<score>_std`` beside each),
    ``trained_epochs`` and ``time`` (seconds to build and train). ``dict(results)`` or
    ``pandas.DataFrame(results)`` give the table to other tools; ``str(results)`` is an
    aligned text table.

    Also: ``best_params`` (the top row's hyper-parameters; ``{}`` for cross-validation),
    ``params`` (every row's), ``splits`` (the ``(train_indices, validation_indices)`` of each
    fold, in fold order; one pair for a held-out search), ``histories`` (per row, a tuple of
    ``fit``'s ``History``, one per fold it trained), ``mean()``/``std()``/``summary()``.
    """

    def __init__(self, rows: Sequence[dict[str, Any]], params: Sequence[dict[str, Any]],
                 histories: Sequence[tuple[History, ...]], splits: Sequence[Split],
                 monitor: str, mode: str, index: str, param_names: Sequence[str]) -> None:
        # the index, then the hyper-parameters in the space's order, then the scores: over a
        # union of spaces a hyper-parameter may be missing from the first rows, so the
        # order of first appearance would put it after `time`
        present = {k for row in rows for k in row}
        names = list(dict.fromkeys([n for n in (index, *param_names) if n in present] +
                                   [k for row in rows for k in row]))
        _check_monitor(monitor, [n for n in names if n not in (index, *param_names)])
        self.monitor, self.mode = monitor, _resolve_mode(monitor, mode)
        key = np.array([_as_float(row.get(monitor)) for row in rows])
        order = np.argsort(-key if self.mode == "max" else key, kind="stable")  # NaN last
        self._columns = {n: _column([rows[i].get(n) for i in order]) for n in names}
        for array in self._columns.values():
            array.flags.writeable = False
        self._index, self._param_names = index, tuple(param_names)
        self.params = [dict(params[i]) for i in order]
        self.histories = [histories[i] for i in order]
        self.splits = list(splits)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._columns:
            raise KeyError(f"no column {name!r}; the columns are {list(self._columns)}")
        return self._columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        """The number of columns (a mapping's length); ``n_rows`` counts the rows."""
        return len(self._columns)

    @property
    def n_rows(self) -> int:
        """How many folds or trials the table holds."""
        return len(self.params)

    def row(self, i: int) -> dict[str, Any]:
        """Row `i` (0 is the best) as a dict column -> value."""
        return {name: _python(col[i]) for name, col in self._columns.items()}

    @property
    def best(self) -> dict[str, Any]:
        """The best row."""
        return self.row(0)

    @property
    def best_params(self) -> dict[str, Any]:
        """The hyper-parameters of the best row: what to build the final model with."""
        return dict(self.params[0])

    def _score_names(self) -> list[str]:
        skip = (self._index, *self._param_names)
        return [n for n, col in self._columns.items()
                if n not in skip and col.dtype.kind in "fiu"]

    def mean(self) -> dict[str, float]:
        """The mean over the rows of each score column (and ``trained_epochs``, ``time``):
        for cross-validation, the cross-validated estimate."""
        return {n: float(np.mean(self._columns[n])) for n in self._score_names()}

    def std(self) -> dict[str, float]:
        """The standard deviation over the rows (ddof=0, as ``np.std``) of each score column."""
        return {n: float(np.std(self._columns[n])) for n in self._score_names()}

    def summary(self) -> str:
        """One line: the monitored score's mean ± std over the rows and its best value."""
        m, s = self.mean()[self.monitor], self.std()[self.monitor]
        best = self._columns[self.monitor][0]
        what = "folds" if self._index == "fold" else "trials"
        text = f"{self.monitor} {m:.4f} ± {s:.4f} over {self.n_rows} {what} (best {best:.4f}"
        return text + (f" with {_format_params(self.best_params)})" if self.best_params else ")")

    def __str__(self) -> str:
        names = list(self._columns)
        cells = [[_cell(v, n in self._param_names) for v in self._columns[n]] for n in names]
        widths = [max(len(n), *(len(c) for c in col)) for n, col in zip(names, cells)]
        right = [self._columns[n].dtype.kind in "fiub" for n in names]

        def line(values: Sequence[str]) -> str:
            return "  ".join(v.rjust(w) if r else v.ljust(w)
                             for v, w, r in zip(values, widths, right)).rstrip()

        rows = [line(names), line(["-" * w for w in widths])]
        rows += [line([col[i] for col in cells]) for i in range(self.n_rows)]
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (f"Results({self.n_rows} rows sorted by {self.monitor} ({self.mode} first), "
                f"columns {list(self._columns)})")


def cross_validate(build: Build, data, k: int = 5, stratify: bool = True, seed: int = 0, *,
                   monitor: str = "val_accuracy", mode: str = "auto",
                   **fit_kwargs: Any) -> Results:
    """Estimate how well a model generalizes: train a fresh ``build({})`` on k-1 folds of
    `data` and score it on the remaining fold, k times.

    `data` is a tuple of arrays like ``fit``'s (x, y, ...). The folds are scikit-learn's
    ``StratifiedKFold`` when `stratify` and the last array holds integer class labels, else
    ``KFold``; both shuffled with `seed`, which also seeds ``fit``'s shuffling and each build
    (``gc.manual_seed``). `fit_kwargs` (``epochs``, ``batch_size`` — both needed —,
    ``early_stopping``, ``metrics``, ``verbose`` (default 0: quiet), ...) go to ``fit``.

    Returns ``Results`` with one row per fold (column ``fold``: the index into
    ``results.splits``), sorted by `monitor` like a search (so row 0 is the best fold, not
    fold 0); ``results.mean()`` / ``summary()`` give the cross-validated estimate.
    """
    arrays = _as_arrays(data, "data")
    _check_seed(seed)
    _check_fit_kwargs(fit_kwargs)
    _resolve_mode(monitor, mode)
    splits = _kfold(arrays, k, stratify, seed)
    rows, histories = [], []
    guard = _FreshModels()
    with _restored_seed():
        for fold, split in enumerate(splits):
            scores, history = _train_and_score(build, {}, arrays, split, fit_kwargs, seed, guard)
            rows.append({"fold": fold, **scores})
            histories.append((history,))
            if fold == 0:
                _check_monitor(monitor, scores)
    return Results(rows, [{}] * len(rows), histories, splits, monitor, mode, "fold", ())


def search(build: Build, space: Mapping[str, Any] | Sequence[Mapping[str, Any]], data,
           strategy: str = "grid", n_trials: int | None = None, k: int | None = None,
           test_size: float | int = 0.2, seed: int = 0, monitor: str = "val_accuracy", *,
           mode: str = "auto", stratify: bool = True, **fit_kwargs: Any) -> Results:
    """Find good hyper-parameters: train a fresh ``build(params)`` for each trial's `params`
    and score it on held-out data.

    `space` maps each hyper-parameter to a list of values, or (``strategy="random"``) to a
    ``scipy.stats`` distribution; a list of such dicts searches their union. ``"grid"`` tries
    every combination (``ParameterGrid``); ``"random"`` draws `n_trials` of them
    (``ParameterSampler``, seeded with `seed`: the same seed gives the same trials). A
    hyper-parameter named like one of ``fit``'s ``epochs``, ``batch_size``,
    ``early_stopping`` is also passed to ``fit`` for that trial.

    Every trial is scored on the same split: a held-out `test_size` fraction (or count) of
    `data` (``train_test_split``, stratified as in ``cross_validate``), or, when `k` is
    given, k folds (the mean over the folds, and the std beside it). `seed` seeds the split,
    the sampling, ``fit``'s shuffling and each build; `fit_kwargs` go to ``fit`` (quiet by
    default). Returns ``Results``, one row per trial, best first by `monitor` (``mode``
    "auto": minimized when its name says loss or error, else maximized).
    """
    arrays = _as_arrays(data, "data")
    _check_seed(seed)
    _resolve_mode(monitor, mode)
    trials, names = _trials(space, strategy, n_trials, seed)
    _check_fit_kwargs(fit_kwargs, trials)
    if k is None:
        splits = [_holdout(arrays, test_size, stratify, seed)]
    else:
        splits = _kfold(arrays, k, stratify, seed)
    rows, histories = [], []
    guard = _FreshModels()
    with _restored_seed():
        for trial, params in enumerate(trials):
            fold_scores, fold_histories = [], []
            for split in splits:
                scores, history = _train_and_score(build, params, arrays, split, fit_kwargs,
                                                   seed, guard)
                if trial == 0 and not fold_scores:  # (a k-fold search adds <score>_std)
                    _check_monitor(monitor, _combine([scores], k is not None))
                fold_scores.append(scores)
                fold_histories.append(history)
            row = {"trial": trial, **params, **_combine(fold_scores, k is not None)}
            rows.append(row)
            histories.append(tuple(fold_histories))
    return Results(rows, trials, histories, splits, monitor, mode, "trial", names)


# -- splits and trials ------------------------------------------------------------------------


def _check_seed(seed) -> None:
    """The seed scikit-learn's splitters and samplers take: 0..2^32-1 (its own message came
    from deep in the split, under advice about stratification)."""
    from ..ops.shape_ops import is_int_value

    if not is_int_value(seed) or not 0 <= seed < 2**32:
        raise GraphError(f"seed must be an int in 0..2**32-1 (it seeds scikit-learn's "
                         f"splitters), got {seed!r}")


def _kfold(arrays: tuple[np.ndarray, ...], k, stratify: bool, seed: int) -> list[Split]:
    """k (train, validation) index pairs: stratified by the labels (the last array, if
    integer) when asked, shuffled with `seed`."""
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(arrays[0])
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 2 <= k <= n:
        raise GraphError(f"k must be an int from 2 to the number of examples ({n}), got {k!r}")
    labels = _labels_of(arrays) if stratify else None
    splitter = (StratifiedKFold(int(k), shuffle=True, random_state=seed) if labels is not None
                else KFold(int(k), shuffle=True, random_state=seed))
    try:
        return [(np.sort(tr), np.sort(va)) for tr, va in splitter.split(np.zeros(n), labels)]
    except ValueError as e:
        raise GraphError(f"cannot split {n} examples into {k} stratified folds: {e} (pass "
                         f"stratify=False or a smaller k)") from None


def _holdout(arrays: tuple[np.ndarray, ...], test_size, stratify: bool, seed: int) -> Split:
    from sklearn.model_selection import train_test_split

    labels = _labels_of(arrays) if stratify else None
    try:
        train, val = train_test_split(np.arange(len(arrays[0])), test_size=test_size,
                                      random_state=seed, stratify=labels)
    except ValueError as e:
        raise GraphError(f"cannot hold out test_size={test_size!r} of {len(arrays[0])} "
                         f"examples: {e}") from None
    return np.sort(train), np.sort(val)


def _trials(space, strategy: str, n_trials, seed: int) -> tuple[list[dict], list[str]]:
    """The hyper-parameter settings to try, and their names in the order `space` gives them."""
    from sklearn.model_selection import ParameterGrid, ParameterSampler

    if strategy not in ("grid", "random"):
        raise GraphError(f"strategy must be 'grid' or 'random', got {strategy!r}")
    spaces = list(space) if isinstance(space, (list, tuple)) else [space]
    if not spaces or not all(isinstance(s, Mapping) and s for s in spaces):
        raise GraphError(f"the search space is empty: give a dict hyper-parameter -> list of "
                         f"values (or a list of such dicts), got {space!r}; to score one "
                         f"model, use gc.train.cross_validate")
    for s in spaces:
        for name, values in s.items():
            _check_values(name, values, strategy)
    if strategy == "grid":
        if n_trials is not None:
            raise GraphError("n_trials is for strategy='random'; a grid tries every "
                             "combination")
        trials = list(ParameterGrid(spaces))
    else:
        if isinstance(n_trials, bool) or not isinstance(n_trials, (int, np.integer)) \
                or n_trials < 1:
            raise GraphError(f"strategy='random' needs n_trials, an int >= 1, got {n_trials!r}")
        trials = list(ParameterSampler(spaces, n_iter=int(n_trials), random_state=seed))
    names = list(dict.fromkeys(name for s in spaces for name in s))
    clash = [n for n in names if not isinstance(n, str) or n in ("trial", *_BOOKKEEPING)
             or n.startswith("val_")]
    if clash:
        raise GraphError(f"hyper-parameter names {clash} would clash with the columns of the "
                         f"results (trial, val_*, trained_epochs, time); rename them")
    return [{n: _python(p[n]) for n in names if n in p} for p in trials], names


def _check_values(name: str, values, strategy: str) -> None:
    if hasattr(values, "rvs"):
        if strategy == "grid":
            raise GraphError(f"hyper-parameter {name!r} is a distribution: a grid needs a list "
                             f"of values (or use strategy='random')")
        return
    # a list, tuple, range or 1-d array, as ParameterGrid/ParameterSampler take: a set has no
    # order (the trials would depend on hashing) and a generator or iterator is used up by
    # the first look at it; both are refused here rather than by scikit-learn's TypeError
    if isinstance(values, np.ndarray) and values.ndim != 1 or not isinstance(
            values, (list, tuple, range, np.ndarray)):
        got = (f"a {values.ndim}-d array" if isinstance(values, np.ndarray)
               else f"{type(values).__name__} {values!r}")
        raise GraphError(f"hyper-parameter {name!r} needs a list of values (a list, tuple or "
                         f"1-d array) or a scipy.stats distribution, got {got}; pass "
                         f"sorted(...) or list(...) of a set or generator")
    if len(values) == 0:
        raise GraphError(f"hyper-parameter {name!r} has no values to try")


# -- one training run ------------------------------------------------------------------------


class _FreshModels:
    """Remembers the parameter storages the previous build's step updated, to refuse a
    build that returns the same model again (its folds would not be independent)."""

    def __init__(self) -> None:
        self.previous: list = []

    def check(self, built) -> tuple[Function, Function]:
        if not (isinstance(built, (tuple, list)) and len(built) == 2
                and all(isinstance(f, Function) for f in built)):
            raise GraphError(f"build(params) must return (step_fn, eval_fn), two compiled "
                             f"gc.Functions, got {type(built).__name__}")
        storages = [p.node.attrs["storage"] for p in built[0].parameters()]
        if any(s is p for s in storages for p in self.previous):
            raise GraphError("build returned a step that trains the parameters of its "
                             "previous call: build must create a new model (and optimizer) "
                             "every time it is called")
        self.previous = storages
        return built[0], built[1]


@contextmanager
def _restored_seed() -> Iterator[None]:
    """Leave the caller's ``gc.manual_seed`` sequence as it was."""
    saved = dict(_random._global)
    try:
        yield
    finally:
        _random._global.update(saved)


def _train_and_score(build: Build, params: dict, arrays: tuple[np.ndarray, ...], split: Split,
                     fit_kwargs: dict, seed: int, guard: _FreshModels
                     ) -> tuple[dict[str, float], History]:
    """Build a fresh model, train it on the split's first part, score it on the second."""
    kwargs = {"verbose": 0, **fit_kwargs,
              **{k: params[k] for k in FIT_HYPERPARAMETERS if k in params}}
    train = tuple(a[split[0]] for a in arrays)
    val = tuple(a[split[1]] for a in arrays)
    started = time.perf_counter()
    _random.manual_seed(seed)
    step_fn, eval_fn = guard.check(build(dict(params)))
    try:
        history = fit(step_fn, train, eval_fn=eval_fn, val_data=val, seed=seed, **kwargs)
        scores = evaluate(eval_fn, val, kwargs["batch_size"],
                          kwargs.get("metrics", ("accuracy",)))
    finally:
        step_fn.close()
        eval_fn.close()
    out = {f"val_{name}": value for name, value in scores.items()}
    out["trained_epochs"] = history.epochs
    out["time"] = time.perf_counter() - started
    return out, history


def _check_fit_kwargs(fit_kwargs: dict, trials: Sequence[dict] = ({},)) -> None:
    taken = sorted(set(fit_kwargs) & set(_OWN))
    if taken:
        raise GraphError(f"model selection sets {taken} itself (the validation data are the "
                         f"held-out part of data); leave them out")
    missing = [k for k in ("epochs", "batch_size")
               if k not in fit_kwargs and not all(k in t for t in trials)]
    if missing:
        raise GraphError(f"pass {missing} (they go to gc.train.fit), as keyword arguments or "
                         f"as hyper-parameters of every trial")


def _check_monitor(monitor: str, scores: Iterable[str]) -> None:
    """Whether `monitor` names a score (checked after the first training run, so that a
    typo fails at once, not after the whole search)."""
    if monitor not in scores or monitor in _BOOKKEEPING:
        names = [n for n in scores if n not in _BOOKKEEPING]
        raise GraphError(f"unknown monitor {monitor!r}: the scores are {names} (e.g. "
                         f"monitor='val_loss' when eval_fn returns no class scores)")


def _combine(fold_scores: list[dict[str, float]], with_std: bool) -> dict[str, float]:
    """One trial's scores: the mean over its folds (and the std of each score)."""
    out: dict[str, float] = {}
    for name in fold_scores[0]:
        values = [s[name] for s in fold_scores]
        out[name] = float(np.mean(values))
        if with_std and name.startswith("val_"):
            out[f"{name}_std"] = float(np.std(values))
    if out["trained_epochs"] == int(out["trained_epochs"]):  # the same in every fold
        out["trained_epochs"] = int(out["trained_epochs"])
    return out


# -- columns and cells -----------------------------------------------------------------------


def _resolve_mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise GraphError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode != "auto":
        return mode
    # a spread over the folds is best small, whatever it spreads
    return "min" if monitor.endswith("_std") or any(w in monitor for w in _MINIMIZED) else "max"


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _python(value):
    """NumPy scalars as Python ones (so best_params print and compare plainly)."""
    return value.item() if isinstance(value, np.generic) else value


def _column(values: list) -> np.ndarray:
    """One array per column: bool, int64, float64 or str when every value is one of those,
    else an object array (mixed or missing hyper-parameters)."""
    kinds = {type(_python(v)) for v in values}
    if kinds == {bool}:
        return np.array(values, dtype=bool)
    if kinds == {int}:
        return np.array(values, dtype=np.int64)
    if kinds and kinds <= {int, float}:
        return np.array(values, dtype=np.float64)
    if kinds == {str}:
        return np.array(values, dtype=str)
    out = np.empty(len(values), dtype=object)
    out[:] = [_python(v) for v in values]
    return out


def _cell(value, is_param: bool) -> str:
    value = _python(value)
    if value is None:
        return "-"
    if isinstance(value, float):
        if is_param or (value != 0 and not 1e-3 <= abs(value) < 1e5):
            return f"{value:.4g}"
        return f"{value:.4f}"
    return str(value)


def _format_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_cell(v, True)}" for k, v in params.items())
