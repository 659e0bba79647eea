"""gc.train.fit: batching, history, validation, early stopping with restore, checkpoints,
output; gc.plot."""

import struct
import sys

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional


def walker():
    """A 'training step' that moves w by +1 per call and counts the examples it saw; its
    evaluation loss (w - 3)^2 is best after exactly 3 steps."""
    w = gc.parameter("w", np.array(0.0))
    seen = gc.parameter("seen", np.array(0.0))
    calls = gc.parameter("calls", np.array(0, np.int64))
    with gc.Graph("walk"):
        x = gc.placeholder("x", ("N", 2), "float64")
        n = gc.sum(x[:, 0] * 0.0 + 1.0)
        step = gc.compile([x], [w * 1.0], updates={w: w + 1.0, seen: seen + n,
                                                   calls: calls + 1})
        ev = gc.compile([x], (w - 3.0) ** 2 + gc.sum(x * 0.0))
    return step, ev, w, seen, calls


def test_batches_keep_the_last_partial_batch_and_history_is_per_epoch(capsys):
    step, ev, w, seen, calls = walker()
    history = gc.train.fit(step, np.ones((10, 2)), epochs=2, batch_size=4, verbose=0)
    assert float(seen.value) == 20 and int(calls.value) == 6  # batches of 4, 4, 2
    assert history.epochs == 2 and set(history.keys()) == {"loss", "time"}
    # the epoch loss weighs each batch by its size: w was 0, 1, 2 with 4, 4, 2 examples
    assert history["loss"][0] == pytest.approx((0 * 4 + 1 * 4 + 2 * 2) / 10)
    assert capsys.readouterr().out == ""


def test_early_stopping_restores_the_best_parameters(capsys):
    step, ev, w, seen, calls = walker()
    data = np.ones((5, 2))
    history = gc.train.fit(step, data, epochs=20, batch_size=5, eval_fn=ev, val_data=data,
                           early_stopping=gc.train.EarlyStopping(patience=2), verbose=2)
    assert history["val_loss"][:5] == [4.0, 1.0, 0.0, 1.0, 4.0]
    assert history.best_epoch == 3 and history.stopped_epoch == 5 and history.epochs == 5
    assert float(w.value) == 3.0  # restored after epoch 3
    assert int(calls.value) == 3 and float(seen.value) == 15  # every parameter restored
    out = capsys.readouterr().out
    assert out.count("epoch ") >= 5 and "restored the parameters of epoch 3" in out


def test_early_stopping_with_an_int_patience_monitors_the_training_loss():
    step, ev, w, *_ = walker()
    history = gc.train.fit(step, np.ones((3, 2)), 10, 3, early_stopping=1, verbose=0)
    # the training loss (w before the update: 0, 1, 2, ...) never improves after epoch 1
    assert history.stopped_epoch == 2 and float(w.value) == 1.0


def test_early_stopping_mode_max_without_a_monitor_name():
    step, ev, w, *_ = walker()
    stopper = gc.train.EarlyStopping(patience=0, mode="max")  # maximize val_loss (w - 3)^2
    history = gc.train.fit(step, np.ones((3, 2)), 10, 3, ev, np.ones((3, 2)), stopper,
                           verbose=0)
    assert history["val_loss"] == [4.0, 1.0] and history.best_epoch == 1
    assert float(w.value) == 1.0


def test_checkpoints_are_saved_and_restore(tmp_path):
    step, ev, w, seen, calls = walker()
    data = np.ones((4, 2))
    path = tmp_path / "ckpt-{epoch}.graphc"
    gc.train.fit(step, data, 4, 4, ev, data, checkpoint=gc.train.Checkpoint(path, every=2),
                 verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-2.graphc", "ckpt-4.graphc"]
    meta = gc.io.read_metadata(tmp_path / "ckpt-2.graphc")
    assert meta["epoch"] == 2 and meta["history"]["val_loss"] == [4.0, 1.0]
    gc.load(tmp_path / "ckpt-2.graphc", into=step)
    assert float(w.value) == 2.0 and int(calls.value) == 2
    best = tmp_path / "best.graphc"
    gc.train.fit(step, data, 4, 4, ev, data, verbose=0,
                 checkpoint=gc.train.Checkpoint(best, best_only=True))
    assert gc.io.read_metadata(best)["epoch"] == 1  # w = 3 after the first of these epochs


@pytest.mark.parametrize("name", ["run{1}-{epoch}.graphc", "a}b{epoch}.graphc",
                                  "{epoch.__class__.__name__}.graphc"])
def test_a_checkpoint_path_is_a_path_with_epoch_filled_in(tmp_path, name):
    """str.format read the path as a template: braces of a name raised after an epoch had
    trained, and {epoch.__class__...} looked attributes up. Only {epoch} is filled in."""
    step, ev, *_ = walker()
    data = np.ones((4, 2))
    gc.train.fit(step, data, 2, 4, ev, data, verbose=0,
                 checkpoint=gc.train.Checkpoint(tmp_path / name, every=1))
    want = {name.replace("{epoch}", str(k)) for k in (1, 2)}
    assert {p.name for p in tmp_path.iterdir()} == want


def test_a_checkpoint_path_may_format_the_epoch(tmp_path):
    step, ev, *_ = walker()
    data = np.ones((4, 2))
    gc.train.fit(step, data, 2, 4, ev, data, verbose=0,
                 checkpoint=gc.train.Checkpoint(tmp_path / "ckpt-{epoch:03d}.graphc"))
    assert {p.name for p in tmp_path.iterdir()} == {"ckpt-001.graphc", "ckpt-002.graphc"}
    with pytest.raises(gc.GraphError, match="cannot format an epoch"):
        gc.train.Checkpoint(tmp_path / "ckpt-{epoch:.x}.graphc")


def classifier():
    gc.manual_seed(0)
    model = gc.nn.Sequential(gc.nn.Linear(4, 16), gc.nn.Tanh(), gc.nn.Linear(16, 3))
    opt = gc.optim.Adam(model.parameters(), lr=0.05)
    with gc.Graph("train"):
        x, y = gc.placeholder("x", ("N", 4)), gc.placeholder("y", ("N",), "int64")
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        step = gc.compile([x, y], [loss, logits], updates=opt.updates(loss))
        ev = gc.compile([x, y], [loss, logits])
    return model, step, ev


def test_fit_on_iris_with_metrics_is_deterministic():
    (xtr, ytr), (xte, yte) = gc.datasets.iris()
    xtr, xte = gc.datasets.standardize(xtr, xte)
    runs = []
    for _ in range(2):
        model, step, ev = classifier()
        h = gc.train.fit(step, (xtr, ytr), 15, 16, ev, (xte, yte), verbose=0, seed=3,
                         metrics=("accuracy", "f1"))
        runs.append(h.history)
    assert runs[0]["loss"] == runs[1]["loss"]  # same seed, same shuffles, same numbers
    assert set(runs[0]) == {"loss", "accuracy", "val_loss", "val_accuracy", "val_f1", "time"}
    assert runs[0]["val_accuracy"][-1] >= 0.9 and runs[0]["loss"][-1] < runs[0]["loss"][0]
    report = gc.train.evaluate(ev, (xte, yte), metrics=("accuracy", "precision", "recall"))
    assert report["accuracy"] == runs[0]["val_accuracy"][-1]


def test_predict_concatenates_batches():
    model, _, _ = classifier()
    with gc.Graph():
        x = gc.placeholder("x", ("N", 4))
        fn = gc.compile([x], model(x))
    data = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    np.testing.assert_allclose(gc.train.predict(fn, data, batch_size=3), fn(data), atol=1e-6)


def test_fit_argument_errors():
    step, ev, *_ = walker()
    with pytest.raises(gc.GraphError, match="one length"):
        gc.train.fit(step, (np.ones((3, 2)), np.ones(4)), 1, 2)
    with pytest.raises(gc.GraphError, match="takes 1 inputs"):
        gc.train.fit(step, (np.ones((3, 2)), np.ones(3)), 1, 2)
    with pytest.raises(gc.GraphError, match="both eval_fn and val_data"):
        gc.train.fit(step, np.ones((3, 2)), 1, 2, eval_fn=ev)
    before = step.parameters()[0].value.copy()
    with pytest.raises(gc.GraphError, match="eval_fn takes 1 inputs"):  # before any epoch
        gc.train.fit(step, np.ones((3, 2)), 1, 2, eval_fn=ev,
                     val_data=(np.ones((3, 2)), np.ones(3)))
    np.testing.assert_array_equal(step.parameters()[0].value, before)
    for every in (0, -1, 1.5, True):
        with pytest.raises(gc.GraphError, match="every must be a whole number"):
            gc.train.Checkpoint("ck.graphc", every=every)
    with pytest.raises(gc.GraphError, match="best_only must be"):
        gc.train.Checkpoint("ck.graphc", best_only="yes")
    with pytest.raises(gc.GraphError, match="monitor 'val_f1'"):
        gc.train.fit(step, np.ones((3, 2)), 1, 2, verbose=0,
                     early_stopping=gc.train.EarlyStopping(monitor="val_f1"))


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    history = gc.train.History()
    for e in range(3):
        history.record({"loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "accuracy": 0.5 + e / 10})
    w, h = png_size(gc.plot.curves(history, tmp_path / "c.png", title="demo"))
    assert w > h > 100


def test_curves_without_matplotlib_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(gc.plot.MissingDependencyError, match=r"graphc\[plot\]"):
        gc.plot.curves({"loss": [1.0]}, tmp_path / "c.png")


def test_image_grid_writes_a_png(tmp_path):
    images = np.random.default_rng(0).random((10, 1, 8, 8))
    # 4 columns x 3 rows of 8x8 images with 1-pixel gaps, scaled 2x
    assert png_size(gc.plot.image_grid(images, tmp_path / "g.png", ncols=4, scale=2)) == (
        (4 * 9 + 1) * 2, (3 * 9 + 1) * 2)


def test_supervised_compiles_a_training_step_and_an_evaluation():
    model = gc.nn.Sequential(gc.nn.Linear(4, 8), gc.nn.Dropout(0.5), gc.nn.Linear(8, 3))
    opt = gc.optim.SGD(model.parameters(), lr=0.1)
    step, ev = gc.train.supervised(model, F.cross_entropy, opt, ("N", 4),
                                   penalty=lambda: gc.optim.l2_penalty(model, 1e-3))
    assert not model.training  # left in eval mode
    assert {p.name for p, _ in step.graph.updates} >= {"0.weight", "2.bias", "1.rng", "sgd.step"}
    assert ev.graph.updates == []
    x = np.ones((5, 4), np.float32)
    y = np.zeros(5, np.int64)
    loss, scores = ev(x, y)
    assert scores.shape == (5, 3) and np.array_equal(ev(x, y)[1], scores)  # no dropout


def test_outputs_by_role_scores_only_and_scalar_metrics():
    """An evaluation may return scores alone (then early stopping watches val_accuracy), and
    scalar outputs after the loss are averaged per epoch as out{k}."""
    (xtr, ytr), (xte, yte) = gc.datasets.iris()
    xtr, xte = gc.datasets.standardize(xtr, xte)
    model, _, _ = classifier()
    opt = gc.optim.SGD(model.parameters(), lr=0.1)
    with gc.Graph("train"):
        x, y = gc.placeholder("x", ("N", 4)), gc.placeholder("y", ("N",), "int64")
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        hits = gc.mean(gc.cast(gc.equal(gc.argmax(logits, 1), y), "float32"))
        step = gc.compile([x, y], [loss, hits], updates=opt.updates(loss))
        scores_only = gc.compile([x, y], logits + 0.0 * gc.cast(gc.reshape(y, ("N", 1)),
                                                                 "float32"))
    history = gc.train.fit(step, (xtr, ytr), 8, 16, scores_only, (xte, yte), early_stopping=3,
                           verbose=0)
    assert set(history.keys()) == {"loss", "out1", "val_accuracy", "time"}
    assert 0.3 < history["out1"][-1] <= 1.0
    assert history.best_epoch == int(np.argmax(history["val_accuracy"])) + 1
    with gc.Graph():
        x = gc.placeholder("x", ("N", 4))
        bad = gc.compile([x], gc.sum(x, axis=0))
    with pytest.raises(gc.GraphError, match="neither a scalar loss first nor scores"):
        gc.train.evaluate(bad, xte[:5])


def test_a_one_example_last_batch_and_a_one_element_loss():
    """Scores (or predicted labels) of a one-example last batch are scores, not a loss (it
    was a TypeError from float() of a (1,) array under NumPy 2, after a trained epoch), and
    a step whose loss has shape (1,) trains."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((21, 3)), rng.integers(0, 2, 21)
    with gc.Graph():
        x, y = gc.placeholder("x", ("N", 3), "float64"), gc.placeholder("y", ("N",), "int64")
        w = gc.parameter("w_ex", rng.standard_normal((3, 2)))
        logits = x @ w
        labels = gc.compile([x, y], gc.argmax(logits, 1) + 0 * y)
        scores = gc.compile([x, y], logits + 0.0 * gc.cast(gc.reshape(y, ("N", 1)), "float64"))
        loss = gc.reshape(F.cross_entropy(logits, y), (1,))
        step = gc.compile([x, y], loss, updates={w: w - 0.1 * gc.grad(loss.sum(), w)})
    want = float((np.argmax(X @ w.value, 1) == Y).mean())
    for fn in (labels, scores):
        for batch in (10, 16, 21):
            assert gc.train.evaluate(fn, (X, Y), batch) == {"accuracy": pytest.approx(want)}
    history = gc.train.fit(step, (X, Y), 1, 10, labels, (X, Y), verbose=0)
    assert set(history.keys()) == {"loss", "val_accuracy", "time"}
    assert np.isfinite(history["loss"][0])


def test_after_early_stopping_the_model_scores_its_best_validation_loss():
    (xtr, ytr), (xte, yte) = gc.datasets.iris()
    xtr, xte = gc.datasets.standardize(xtr, xte)
    gc.manual_seed(1)
    model = gc.nn.Sequential(gc.nn.Linear(4, 32), gc.nn.BatchNorm1d(32), gc.nn.ReLU(),
                             gc.nn.Dropout(0.3), gc.nn.Linear(32, 3))
    opt = gc.optim.Adam(model.parameters(), lr=0.3)  # too large: validation loss wanders
    step, evaluate = gc.train.supervised(model, F.cross_entropy, opt, ("N", 4))
    history = gc.train.fit(step, (xtr[:40], ytr[:40]), 40, 8, evaluate, (xte, yte),
                           early_stopping=3, verbose=0)
    assert history.stopped_epoch is not None and history.best_epoch < history.epochs
    again = gc.train.evaluate(evaluate, (xte, yte), batch_size=8)
    assert again["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-6)


def test_history_is_a_read_only_mapping():
    step, ev, *_ = walker()
    history = gc.train.fit(step, (np.zeros((4, 2)),), epochs=2, batch_size=2, verbose=0)
    assert set(history) == set(history.keys()) and len(history) == len(dict(history))
    assert history.get("loss") == history["loss"] and history.get("nope") is None
    assert len(history["loss"]) == history.epochs == 2


def nonfinite_step():
    """A step whose loss is mean(log x): -inf on a batch holding a 0; w counts the steps."""
    w = gc.parameter("w", np.array(0.0))
    with gc.Graph("logs"):
        x = gc.placeholder("x", ("N", 1), "float64")
        step = gc.compile([x], gc.mean(gc.log(x[:, 0])) + w * 0.0, updates={w: w + 1.0})
    return step, w


# batches of 2 in order: mean(log [1, e]) = 0.5, then -inf (a 0), then 0
NONFINITE_DATA = np.array([[1.0], [np.e], [0.0], [1.0], [1.0], [1.0]])


def test_on_nonfinite_stop_skip_and_raise(capsys):
    step, w = nonfinite_step()
    history = gc.train.fit(step, NONFINITE_DATA, 3, 2, shuffle=False, verbose=0)
    assert history.epochs == 1 and history.stopped_epoch == 1  # the default: stop
    assert history.stop_reason == "the loss became -inf" and history["loss"] == [-np.inf]
    step, w = nonfinite_step()
    history = gc.train.fit(step, NONFINITE_DATA, 2, 2, shuffle=False, verbose=2,
                           on_nonfinite="skip")
    # the -inf batch is left out of the averages, and training goes on
    assert history["loss"] == [pytest.approx(0.25)] * 2 and history["skipped_batches"] == [1, 1]
    assert history.stopped_epoch is None and float(w.value) == 6.0
    assert "skipped_batches 1.0000" in capsys.readouterr().out
    step, w = nonfinite_step()
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch 2 of 3: the loss is -inf"):
        gc.train.fit(step, NONFINITE_DATA, 2, 2, shuffle=False, verbose=0,
                     on_nonfinite="raise")
    assert float(w.value) == 2.0  # stopped at that batch
    step, w = nonfinite_step()
    history = gc.train.fit(step, np.zeros((4, 1)), 3, 2, verbose=0, on_nonfinite="skip")
    assert history.stop_reason == "every batch of epoch 1 had a non-finite loss"
    assert np.isnan(history["loss"][0])
    with pytest.raises(gc.GraphError, match="on_nonfinite must be one of"):
        gc.train.fit(step, NONFINITE_DATA, 1, 2, on_nonfinite="ignore")


def test_each_epoch_is_shuffled_from_the_seed_and_its_number():
    """The batches epoch k sees depend on (seed, k) alone (gc.train.epoch_order), whether
    the run started at epoch 1 or at initial_epoch = k - 1."""
    with gc.Graph("order"):
        x = gc.placeholder("x", ("N", 1), "float64")
        step = gc.compile([x], gc.sum(x) * 0.0 + x[0, 0])  # the batch's first element
    data = np.arange(7, dtype=np.float64).reshape(7, 1)
    straight = gc.train.fit(step, data, 3, 3, seed=11, verbose=0)["loss"]
    for epoch in (1, 2, 3):
        order = gc.train.epoch_order(7, 11, epoch)
        # the loss is the size-weighted mean of each batch's first element
        expected = (3 * order[0] + 3 * order[3] + order[6]) / 7
        alone = gc.train.fit(step, data, epoch, 3, seed=11, verbose=0, initial_epoch=epoch - 1)
        assert straight[epoch - 1] == alone["loss"][0] == pytest.approx(expected)
    assert len(set(straight)) == 3  # three different orders
    # the k-th permutation of default_rng(seed): a run from epoch 1 shuffles as it always did
    rng = np.random.default_rng(11)
    for epoch in (1, 2, 3):
        np.testing.assert_array_equal(gc.train.epoch_order(7, 11, epoch), rng.permutation(7))


def test_curves_of_an_empty_history_is_a_clear_error(tmp_path):
    """fit(..., epochs=0) returns an empty History: nothing to draw, said as a GraphError."""
    pytest.importorskip("matplotlib")
    for empty in (gc.train.History(), {}, {"loss": [], "val_loss": []}):
        with pytest.raises(gc.GraphError, match="no loss or accuracy values"):
            gc.plot.curves(empty, tmp_path / "c.png")
    # accuracy alone (or loss alone) still draws its one panel
    w, h = png_size(gc.plot.curves({"accuracy": [0.5, 0.7], "loss": []}, tmp_path / "a.png"))
    assert h > 100
