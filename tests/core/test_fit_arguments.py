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
