"""End-to-end training runs on the digits data (the issue's accuracy targets), through compiled
steps on the numpy backend, with fixed seeds."""

import numpy as np
import pytest

import graphc as gc
from graphc.demo import lenet

F, nn = gc.nn.functional, gc.nn

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits():
    return gc.datasets.digits()


def test_mlp_on_digits_reaches_95_percent(digits):
    (x_train, y_train), (x_test, y_test) = digits
    x_train, x_test = gc.datasets.standardize(x_train, x_test)
    gc.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    step, evaluate = gc.train.supervised(model, F.cross_entropy,
                                         gc.optim.Adam(model.parameters(), lr=1e-3), ("N", 64))
    history = gc.train.fit(step, (x_train, y_train), epochs=30, batch_size=32, verbose=0)
    accuracy = gc.train.evaluate(evaluate, (x_test, y_test))["accuracy"]
    assert history["loss"][-1] < 0.05 * history["loss"][0]
    assert accuracy >= 0.95, accuracy


def test_cnn_on_digits_reaches_96_percent_and_survives_save_load(digits, tmp_path):
    (x_train, y_train), (x_test, y_test) = digits
    x_train, x_test = (x_train / 16).reshape(-1, 1, 8, 8), (x_test / 16).reshape(-1, 1, 8, 8)
    gc.manual_seed(0)
    model = lenet()
    step, evaluate = gc.train.supervised(model, F.cross_entropy,
                                         gc.optim.Adam(model.parameters(), lr=2e-3),
                                         ("N", 1, 8, 8))
    gc.train.fit(step, (x_train, y_train), epochs=8, batch_size=32, verbose=0)
    accuracy = gc.train.evaluate(evaluate, (x_test, y_test))["accuracy"]
    assert accuracy >= 0.96, accuracy
    # batch-norm running statistics were trained through the default updates
    assert not np.allclose(model[1].running_mean.value, 0)
    gc.save(model, tmp_path / "lenet.graphc")
    loaded = gc.load(tmp_path / "lenet.graphc")
    _, reloaded = gc.train.supervised(loaded, F.cross_entropy,
                                      gc.optim.SGD(loaded.parameters(), lr=0.0), ("N", 1, 8, 8))
    assert gc.train.evaluate(reloaded, (x_test, y_test))["accuracy"] == accuracy
