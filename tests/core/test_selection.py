"""gc.train.cross_validate and gc.train.search on a real, tiny problem: iris (120 training
flowers, 4 features, 3 classes) with a logistic regression or a one-hidden-layer MLP, a few
epochs on the numpy backend. The folds and held-out splits are checked against scikit-learn's
splitters recomputed here, the trials against the grid and the sampler, the scores against
the training histories."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest
from scipy import stats
from sklearn.model_selection import KFold, StratifiedKFold

import graphc as gc

F, nn = gc.nn.functional, gc.nn
FIT = dict(epochs=3, batch_size=16)


@pytest.fixture(scope="module")
def iris():
    (x, y), _ = gc.datasets.iris()
    return gc.datasets.standardize(x)[0], y


def build(params: dict):
    """A fresh logistic regression (hidden=0) or MLP, trained by SGD, at every call."""
    hidden = params.get("hidden", 0)
    model = (nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 3)) if hidden
             else nn.Linear(4, 3))
    opt = gc.optim.SGD(model.parameters(), lr=params.get("lr", 0.1))
    return gc.train.supervised(model, F.cross_entropy, opt, ("N", 4))


def assert_sorted(values: np.ndarray, descending: bool) -> None:
    steps = np.diff(values)
    assert np.all(steps <= 0) if descending else np.all(steps >= 0), values


def test_cross_validate_folds_are_disjoint_stratified_and_scored(iris):
    x, y = iris
    res = gc.train.cross_validate(build, (x, y), k=5, seed=3, **FIT)
    assert res.n_rows == 5 and sorted(res["fold"]) == [0, 1, 2, 3, 4]
    assert list(res) == ["fold", "val_loss", "val_accuracy", "trained_epochs", "time"]
    assert res.best_params == {} and res.monitor == "val_accuracy" and res.mode == "max"
    assert_sorted(res["val_accuracy"], descending=True)
    # the folds: validation parts partition the data, each disjoint from its training part,
    # and they are StratifiedKFold's with the same seed
    want = StratifiedKFold(5, shuffle=True, random_state=3).split(x, y)
    for (train, val), (want_train, want_val) in zip(res.splits, want, strict=True):
        np.testing.assert_array_equal(val, np.sort(want_val))
        np.testing.assert_array_equal(train, np.sort(want_train))
        assert not set(train) & set(val) and len(train) + len(val) == len(y)
        assert np.abs(np.bincount(y[val], minlength=3) - np.bincount(y) / 5).max() <= 1
    assert sorted(np.concatenate([v for _, v in res.splits])) == list(range(len(y)))
    # each row's score is that of its fold's model after the last epoch
    for i in range(res.n_rows):
        (history,) = res.histories[i]
        assert history.epochs == res["trained_epochs"][i] == 3
        assert res["val_accuracy"][i] == pytest.approx(history["val_accuracy"][-1])
        assert res["val_loss"][i] == pytest.approx(history["val_loss"][-1])
    # the cross-validated estimate: learning happened on every fold (chance is 1/3)
    mean = res.mean()
    assert mean["val_accuracy"] == pytest.approx(np.mean(res["val_accuracy"]))
    assert mean["val_accuracy"] > 0.6 and "fold" not in mean
    assert res.std()["val_loss"] == pytest.approx(np.std(res["val_loss"]))
    assert res.summary().startswith(f"val_accuracy {mean['val_accuracy']:.4f} ± ")
    assert "over 5 folds" in res.summary()


def test_cross_validate_is_reproducible_and_leaves_the_global_seed(iris):
    gc.manual_seed(11)
    first = gc.train.cross_validate(build, iris, k=3, **FIT)
    after = nn.Linear(4, 3).weight.value
    gc.manual_seed(11)
    want = nn.Linear(4, 3).weight.value
    np.testing.assert_array_equal(after, want)  # as if cross_validate had not run
    second = gc.train.cross_validate(build, iris, k=3, **FIT)
    for name in ("fold", "val_loss", "val_accuracy"):
        np.testing.assert_array_equal(first[name], second[name])


def test_cross_validate_without_class_labels_uses_plain_kfold(iris):
    x, y = iris
    targets = y.astype(np.float32)  # not class labels: no stratification, and no accuracy

    def regression(params):
        model = nn.Linear(4, 1)
        opt = gc.optim.SGD(model.parameters(), lr=0.05)
        return gc.train.supervised(model, lambda p, t: F.mse_loss(p[:, 0], t),
                                   opt, ("N", 4), y_dtype="float32")

    res = gc.train.cross_validate(regression, (x, targets), k=4, seed=1,
                                  monitor="val_loss", **FIT)
    assert "val_accuracy" not in res and res.mode == "min"
    assert_sorted(res["val_loss"], descending=False)
    for (_, val), (_, want) in zip(res.splits, KFold(4, shuffle=True, random_state=1).split(x)):
        np.testing.assert_array_equal(val, np.sort(want))
    # integer labels with stratify=False: plain KFold as well
    plain = gc.train.cross_validate(build, iris, k=4, stratify=False, seed=1, **FIT)
    for (_, val), (_, want) in zip(plain.splits, res.splits):
        np.testing.assert_array_equal(val, want)


def test_scores_are_those_of_the_restored_best_parameters(iris):
    # patience 0 on the validation accuracy: training stops at its first plateau, and the
    # parameters of the epoch before it (a higher validation loss) are restored
    res = gc.train.cross_validate(build, iris, k=3, epochs=8, batch_size=16,
                                  early_stopping=gc.train.EarlyStopping(0, "val_accuracy"))
    restored = 0
    for i in range(res.n_rows):
        (history,) = res.histories[i]
        assert res["trained_epochs"][i] == history.epochs <= 8
        best = history.best_epoch - 1
        assert res["val_loss"][i] == pytest.approx(history["val_loss"][best], rel=1e-6)
        assert res["val_accuracy"][i] == history["val_accuracy"][best]
        restored += history["val_loss"][best] != history["val_loss"][-1]
    assert restored > 0


def test_grid_search_covers_the_space_sorted_with_best_params(iris):
    x, y = iris
    space = {"hidden": [0, 8], "lr": [0.01, 0.3]}
    res = gc.train.search(build, space, iris, test_size=0.25, seed=2, **FIT)
    assert res.n_rows == 4 and sorted(res["trial"]) == [0, 1, 2, 3]
    assert list(res)[:3] == ["trial", "hidden", "lr"]
    assert res["hidden"].dtype == np.int64 and res["lr"].dtype == np.float64
    assert set(zip(res["hidden"].tolist(), res["lr"].tolist())) == set(
        itertools.product(space["hidden"], space["lr"]))
    assert_sorted(res["val_accuracy"], descending=True)
    assert res.best_params == {"hidden": int(res["hidden"][0]), "lr": float(res["lr"][0])}
    assert type(res.best_params["hidden"]) is int and res.params[0] == res.best_params
    assert res.best["val_accuracy"] == res["val_accuracy"].max() > 0.8
    assert res.best_params["lr"] == 0.3  # 3 epochs at lr 0.01 do not get there
    # one held-out split, stratified, the same for every trial
    ((train, val),) = res.splits
    assert len(val) == 30 and not set(train) & set(val) and len(train) + len(val) == 120
    np.testing.assert_array_equal(np.bincount(y[val]), np.bincount(y) // 4)


def test_sorting_follows_the_monitor_and_an_explicit_mode(iris):
    space = {"lr": [0.003, 0.03, 0.3]}
    by_loss = gc.train.search(build, space, iris, monitor="val_loss", **FIT)
    assert by_loss.mode == "min"
    assert_sorted(by_loss["val_loss"], descending=False)
    assert by_loss.best_params == {"lr": 0.3}
    worst_first = gc.train.search(build, space, iris, monitor="val_loss", mode="max", **FIT)
    assert_sorted(worst_first["val_loss"], descending=True)
    np.testing.assert_array_equal(worst_first["lr"], by_loss["lr"][::-1])


def test_random_search_is_reproducible_from_its_seed(iris):
    space = {"hidden": [0, 4, 8], "lr": stats.loguniform(1e-3, 1.0)}
    kw = dict(strategy="random", n_trials=3, **FIT)
    a = gc.train.search(build, space, iris, seed=7, **kw)
    b = gc.train.search(build, space, iris, seed=7, **kw)
    c = gc.train.search(build, space, iris, seed=8, **kw)
    assert a.n_rows == 3
    assert all(1e-3 <= lr <= 1.0 for lr in a["lr"]) and set(a["hidden"]) <= {0, 4, 8}
    for name in ("trial", "hidden", "lr", "val_loss", "val_accuracy"):
        np.testing.assert_array_equal(a[name], b[name])
    assert a.best_params == b.best_params
    assert sorted(a["lr"]) != sorted(c["lr"])


def test_kfold_search_averages_over_the_same_folds(iris):
    res = gc.train.search(build, {"lr": [0.01, 0.3]}, iris, k=3, seed=4, **FIT)
    assert res.n_rows == 2 and len(res.splits) == 3
    assert {"val_accuracy_std", "val_loss_std"} <= set(res)
    for i in range(res.n_rows):
        last = [h["val_accuracy"][-1] for h in res.histories[i]]
        assert len(last) == 3
        assert res["val_accuracy"][i] == pytest.approx(np.mean(last))
        assert res["val_accuracy_std"][i] == pytest.approx(np.std(last))
    cv = gc.train.cross_validate(build, iris, k=3, seed=4, **FIT)
    for got, want in zip(res.splits, cv.splits):  # the folds cross_validate would use
        np.testing.assert_array_equal(got[1], want[1])


def test_fit_arguments_can_be_hyperparameters(iris):
    res = gc.train.search(build, {"epochs": [1, 2], "batch_size": [8]}, iris, seed=0)
    by_trial = dict(zip(res["epochs"].tolist(), res["trained_epochs"].tolist()))
    assert by_trial == {1: 1, 2: 2}


def test_str_is_an_aligned_table(iris):
    res = gc.train.search(build, {"hidden": [0, 8], "lr": [0.3]}, iris, **FIT)
    lines = str(res).splitlines()
    assert len(lines) == res.n_rows + 2
    assert lines[0].split() == list(res)
    assert set(lines[1].replace(" ", "")) == {"-"}
    # every column's dashes span its cells: right-aligned numbers end where the dashes end
    ends = [m.end() for m in re.finditer(r"-+", lines[1])]
    for line in lines[2:]:
        for end in ends:
            assert line[end - 1] != " ", (line, end)
    best = lines[2].split()
    assert best[1] == str(res.best_params["hidden"]) and best[2] == "0.3"
    assert f"{res['val_accuracy'][0]:.4f}" in lines[2]
    assert repr(res).startswith("Results(2 rows sorted by val_accuracy (max first)")


def test_clear_errors(iris):
    with pytest.raises(gc.GraphError, match="unknown monitor 'val_acc'.*val_accuracy"):
        gc.train.search(build, {"lr": [0.1]}, iris, monitor="val_acc", **FIT)
    with pytest.raises(gc.GraphError, match="unknown monitor 'accuracy'"):
        gc.train.cross_validate(build, iris, k=2, monitor="accuracy", **FIT)
    for k in (1, 121, 2.5, True):
        with pytest.raises(gc.GraphError, match="k must be an int from 2"):
            gc.train.cross_validate(build, iris, k=k, **FIT)
    with pytest.raises(gc.GraphError, match="k must be"):
        gc.train.search(build, {"lr": [0.1]}, iris, k=0, **FIT)
    for space in ({}, [], [{}]):
        with pytest.raises(gc.GraphError, match="search space is empty"):
            gc.train.search(build, space, iris, **FIT)
    with pytest.raises(gc.GraphError, match="'lr' has no values"):
        gc.train.search(build, {"lr": []}, iris, **FIT)
    with pytest.raises(gc.GraphError, match="'lr' needs a list"):
        gc.train.search(build, {"lr": 0.1}, iris, **FIT)
    with pytest.raises(gc.GraphError, match="'lr' is a distribution"):
        gc.train.search(build, {"lr": stats.uniform(0, 1)}, iris, **FIT)
    with pytest.raises(gc.GraphError, match="needs n_trials"):
        gc.train.search(build, {"lr": [0.1]}, iris, strategy="random", **FIT)
    with pytest.raises(gc.GraphError, match="n_trials is for strategy='random'"):
        gc.train.search(build, {"lr": [0.1]}, iris, n_trials=2, **FIT)
    with pytest.raises(gc.GraphError, match="strategy must be"):
        gc.train.search(build, {"lr": [0.1]}, iris, strategy="bayes", **FIT)
    with pytest.raises(gc.GraphError, match="mode must be"):
        gc.train.search(build, {"lr": [0.1]}, iris, mode="up", **FIT)
    with pytest.raises(gc.GraphError, match="clash"):
        gc.train.search(build, {"time": [1]}, iris, **FIT)
    with pytest.raises(gc.GraphError, match=r"pass \['epochs'\]"):
        gc.train.cross_validate(build, iris, batch_size=16)
    with pytest.raises(gc.GraphError, match="sets \\['val_data'\\] itself"):
        gc.train.cross_validate(build, iris, val_data=iris, **FIT)
    with pytest.raises(gc.GraphError, match="cannot hold out"):
        gc.train.search(build, {"lr": [0.1]}, iris, test_size=1.5, **FIT)
    for seed in (-1, 2**32, 1.5, "0", True):  # (scikit-learn's own errors, or advice about
        with pytest.raises(gc.GraphError, match="seed must be an int in 0..2"):  # folds)
            gc.train.cross_validate(build, iris, k=2, seed=seed, **FIT)
        with pytest.raises(gc.GraphError, match="seed must be an int in 0..2"):
            gc.train.search(build, {"lr": [0.1]}, iris, strategy="random", n_trials=1,
                            seed=seed, **FIT)


def test_build_must_return_fresh_compiled_functions(iris):
    kept = build({})

    with pytest.raises(gc.GraphError, match="must create a new model"):
        gc.train.cross_validate(lambda params: kept, iris, k=2, **FIT)
    with pytest.raises(gc.GraphError, match=r"must return \(step_fn, eval_fn\)"):
        gc.train.search(lambda params: build(params)[0], {"lr": [0.1]}, iris, **FIT)


def test_a_union_of_spaces_puts_every_hyperparameter_before_the_scores(iris):
    """The first trial of [{"hidden": ...}, {"lr": ...}] has no lr: the column still comes
    right after the other hyper-parameters, not after `time`."""
    x, y = iris
    res = gc.train.search(build, [{"hidden": [4]}, {"lr": [0.2]}], (x, y), epochs=1,
                          batch_size=32)
    assert list(res) == ["trial", "hidden", "lr", "val_loss", "val_accuracy",
                         "trained_epochs", "time"]
    assert sorted(map(str, res.params)) == ["{'hidden': 4}", "{'lr': 0.2}"]


def test_space_values_must_be_ordered_lists(iris):
    """A set (no order: the trials would depend on hashing), a generator (used up by a first
    look) or a 2-d array are GraphErrors naming the hyper-parameter; a tuple, a range and a
    1-d array are lists of values."""
    x, y = iris
    for bad, what in (({0.1, 0.2}, "set"), ((v for v in [0.1]), "generator"),
                      (np.ones((2, 2)), "2-d array"), (iter([0.1]), "iterator")):
        with pytest.raises(gc.GraphError, match=f"hyper-parameter 'lr' needs a list.*{what}"):
            gc.train.search(build, {"lr": bad}, (x, y), **FIT)
    res = gc.train.search(build, {"lr": np.array([0.1]), "hidden": range(2, 3)}, (x, y),
                          epochs=1, batch_size=32)
    assert res.best_params == {"lr": 0.1, "hidden": 2}


def test_a_kfold_search_may_monitor_a_spread(iris):
    """The `<score>_std` columns of a k-fold search are monitors too (once refused as
    unknown), best small."""
    res = gc.train.search(build, {"lr": [0.01, 0.3]}, iris, k=2, seed=4,
                          monitor="val_accuracy_std", **FIT)
    assert res.mode == "min"
    assert_sorted(res["val_accuracy_std"], descending=False)
    with pytest.raises(gc.GraphError, match="unknown monitor 'val_loss_std'"):
        gc.train.search(build, {"lr": [0.1]}, iris, monitor="val_loss_std", **FIT)  # held out
