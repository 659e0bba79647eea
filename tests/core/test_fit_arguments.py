"""gc.train.fit checks every argument up front: a clear GraphError naming it, never a raw
TypeError from deep inside the loop (``epochs=2.5`` used to reach ``range``)."""

from __future__ import annotations

import numpy as np
import pytest

import graphc as gc


@pytest.fixture(scope="module")
def step_and_data():
    gc.reset_default_graph()
    w = gc.parameter("w", np.zeros(3))
    x = gc.placeholder("x", ("N", 3), "float64")
    y = gc.placeholder("y", ("N",), "float64")
    loss = gc.mean((gc.sum(x * w, 1) - y) ** 2)
    step = gc.compile([x, y], loss, updates=gc.optim.SGD([w], lr=0.1).updates(loss))
    return step, (np.ones((6, 3)), np.ones(6))


@pytest.mark.parametrize("kwargs, named", [
    ({"epochs": 2.5}, "epochs"),
    ({"epochs": -1}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"epochs": "3"}, "epochs"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2.0}, "batch_size"),
    ({"initial_epoch": 1.5}, "initial_epoch"),
    ({"seed": 0.5}, "seed"),
    ({"verbose": 3}, "verbose"),
    ({"verbose": 1.0}, "verbose"),
    ({"shuffle": "yes"}, "shuffle"),
    ({"metrics": "accuracy"}, "metrics"),
    ({"metrics": ["acc"]}, "metrics"),
    ({"early_stopping": 1.5}, "early_stopping"),
    ({"early_stopping": -1}, "early_stopping"),
    ({"checkpoint": 3}, "checkpoint"),
    ({"resume": 3}, "resume"),
    ({"on_nonfinite": "ignore"}, "on_nonfinite"),
    ({"callbacks": None}, "callbacks"),
    ({"eval_fn": "f", "val_data": (np.ones((2, 3)), np.ones(2))}, "eval_fn"),
])
def test_a_bad_argument_is_a_graph_error_naming_it(step_and_data, kwargs, named):
    step, data = step_and_data
    args = {"epochs": 1, "batch_size": 2, "verbose": 0, **kwargs}
    with pytest.raises(gc.GraphError, match=named):
        gc.train.fit(step, data, **args)


def test_good_arguments_still_train(step_and_data):
    step, data = step_and_data
    history = gc.train.fit(step, data, np.int64(2), np.int64(3), verbose=0, seed=np.int64(1),
                           metrics=("accuracy",), early_stopping=3, callbacks=())
    assert len(history["loss"]) == 2


@pytest.mark.parametrize("kwargs, message", [
    ({"patience": "3"}, "patience must be an int >= 0"),
    ({"patience": None}, "patience must be an int >= 0"),
    ({"patience": 1.5}, "patience must be an int >= 0"),
    ({"patience": -1}, "patience must be an int >= 0"),
    ({"min_delta": float("nan")}, "min_delta must be a finite number"),
    ({"monitor": 3}, "monitor must be the name"),
    ({"monitor": ""}, "monitor must be the name"),
    ({"restore_best": "no"}, "restore_best must be True or False"),
    ({"mode": "up"}, "mode must be"),
])
def test_early_stopping_checks_its_arguments(kwargs, message):
    """A string patience raised a raw TypeError; a fractional one, a negative min_delta
    (every epoch an improvement: the run never stopped) and a numeric monitor were taken."""
    with pytest.raises(gc.GraphError, match=message):
        gc.train.EarlyStopping(**kwargs)


def test_numpy_integers_are_patience_counts(step_and_data):
    """``early_stopping=np.int64(2)`` raised an AttributeError from inside fit."""
    step, data = step_and_data
    stopper = gc.train.EarlyStopping(patience=np.int64(2))
    assert stopper.patience == 2 and type(stopper.patience) is int
    history = gc.train.fit(step, data, 2, 3, verbose=0, early_stopping=np.int64(2))
    assert history.epochs == 2
    opt = gc.optim.SGD([gc.parameter("v", np.zeros(2))], lr=0.1)
    plateau = gc.optim.ReduceLROnPlateau(opt, monitor="loss", patience=np.int64(3),
                                         cooldown=np.int64(1))
    assert plateau.patience == 3


def test_a_validation_monitor_without_validation_data_is_refused_before_training():
    """It was refused after the first epoch had trained and moved the parameters."""
    w = gc.parameter("w", np.zeros(3))
    x = gc.placeholder("x", ("N", 3), "float64")
    y = gc.placeholder("y", ("N",), "float64")
    loss = gc.mean((gc.sum(x * w, 1) - y) ** 2)
    opt = gc.optim.SGD([w], lr=0.1)
    step = gc.compile([x, y], loss, updates=opt.updates(loss))
    data = (np.ones((6, 3)), np.ones(6))
    with pytest.raises(gc.GraphError, match="EarlyStopping: monitor 'val_loss' is logged by "
                                            "validation only"):
        gc.train.fit(step, data, 2, 3, verbose=0,
                     early_stopping=gc.train.EarlyStopping(monitor="val_loss"))
    with pytest.raises(gc.GraphError, match="ReduceLROnPlateau: monitor 'val_accuracy'"):
        gc.train.fit(step, data, 2, 3, verbose=0,
                     callbacks=[gc.optim.ReduceLROnPlateau(opt, monitor="val_accuracy")])
    np.testing.assert_array_equal(w.value, np.zeros(3))
    plateau = gc.optim.ReduceLROnPlateau(opt, monitor="loss")  # what training logs is fine
    assert gc.train.fit(step, data, 1, 3, verbose=0, callbacks=[plateau]).epochs == 1


def test_the_history_hands_out_copies():
    """Its lists were the live ones: an append changed ``epochs`` and what resumes read."""
    history = gc.train.History({"loss": [1.0, 0.5]})
    values = history["loss"]
    values.append(9.0)
    assert history["loss"] == [1.0, 0.5] and history.epochs == 2
    assert dict(history) == {"loss": [1.0, 0.5]} and history.last("loss") == 0.5


def test_split_of_a_regression_target_keeps_its_test_set():
    """Each value of a continuous target was a class of one: the test set came out empty."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((100, 3)), rng.standard_normal(100)
    (a, b), (c, d) = gc.datasets.split(x, y)
    assert (len(a), len(c)) == (80, 20)
    assert sorted(np.concatenate([b, d]).tolist()) == sorted(y.tolist())
    labels = np.repeat([0, 1], [90, 10])  # class labels are still stratified
    (_, yt), (_, yv) = gc.datasets.split(np.zeros((100, 1)), labels)
    assert (yv == 1).sum() == 2 and (yt == 1).sum() == 8


def test_a_negative_min_delta_counts_by_its_size():
    """Keras takes min_delta's absolute value (a negative one made every epoch an
    improvement, and the run never stopped)."""
    assert gc.train.EarlyStopping(min_delta=-0.5).min_delta == 0.5


def test_an_epoch_that_logs_less_is_padded_and_its_checkpoint_resumes(tmp_path):
    """An epoch whose batches were all skipped logs no accuracy: the lists had different
    lengths, and resume refused the checkpoint fit had written."""
    history = gc.train.History()
    history.record({"loss": 1.0, "accuracy": 0.5})
    history.record({"loss": float("nan")})
    history.record({"loss": 0.5, "accuracy": 0.75, "val_loss": 0.7})
    assert history["accuracy"][:1] == [0.5] and np.isnan(history["accuracy"][1])
    assert np.isnan(history["val_loss"][:2]).all() and history["val_loss"][2] == 0.7
    assert {len(v) for v in dict(history).values()} == {3} and history.epochs == 3


def test_split_stratifies_strings_and_whole_float_labels():
    labels = np.repeat(np.array(["a", "b"]), [90, 10])
    for y in (labels, (labels == "b").astype(np.float32)):
        (_, yt), (_, yv) = gc.datasets.split(np.zeros((100, 1)), y, seed=3)
        assert (yv == y[-1]).sum() == 2 and (yt == y[-1]).sum() == 8


def test_a_probability_is_a_number_as_a_learning_rate_is():
    """fraction() had its own idea of a number: a 0-d torch tensor or a Fraction was a valid
    learning rate and not a valid dropout probability."""
    from fractions import Fraction

    import torch

    for p in (Fraction(1, 2), torch.tensor(0.5), np.array(0.5), np.float32(0.5)):
        assert gc.nn.Dropout(p).p == 0.5
    for bad in ("0.5", True, 1.5, float("nan"), np.array([0.5])):
        with pytest.raises(gc.GraphError, match="dropout probability must be a number in"):
            gc.nn.Dropout(bad)
