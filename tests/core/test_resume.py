"""Resuming reproduces the uninterrupted run: per-(seed, epoch) shuffling, initial_epoch,
checkpoints that hold the epoch, the history, the early-stopping and callback state."""

import copy

import numpy as np
import pytest

import graphc as gc

nn = gc.nn
F = gc.nn.functional


def iris():
    (x, y), (xv, yv) = gc.datasets.iris()
    x, xv = gc.datasets.standardize(x, xv)
    return (x, y), (xv, yv)


DATA, VAL = iris()


def build():
    """A model with dropout (its random state is a parameter of the step), Adam (moments and
    a step counter) and batch norm (running statistics): everything a resume must restore."""
    model = nn.Sequential(nn.Linear(4, 16, rng=1), nn.BatchNorm1d(16), nn.ReLU(),
                          nn.Dropout(0.3, rng=2), nn.Linear(16, 3, rng=3))
    opt = gc.optim.Adam(model.parameters(), lr=0.02)
    step, ev = gc.train.supervised(model, F.cross_entropy, opt, ("N", 4))
    return model, step, ev


def records(history):
    return {k: v for k, v in history.items() if k != "time"}


def fit(step, ev, epochs, **kwargs):
    return gc.train.fit(step, DATA, epochs, 16, ev, VAL, seed=5, verbose=0,
                        early_stopping=gc.train.EarlyStopping(patience=10), **kwargs)


def test_six_epochs_straight_equal_three_a_checkpoint_a_rebuild_and_a_resume(tmp_path):
    model, step, ev = build()
    straight = fit(step, ev, 6)
    first, step1, ev1 = build()
    fit(step1, ev1, 3, checkpoint=tmp_path / "ckpt-{epoch}.graphc")
    meta = gc.io.read_metadata(tmp_path / "ckpt-3.graphc")
    assert meta["epoch"] == 3 and len(meta["history"]["loss"]) == 3
    assert set(meta["early_stopping"]) == {"monitor", "best", "waited", "best_epoch",
                                           "best_parameters"}
    fresh, step2, ev2 = build()  # a new process would build exactly this
    resumed = fit(step2, ev2, 6, resume=tmp_path / "ckpt-3.graphc")
    assert records(resumed) == records(straight)  # every epoch's losses and accuracies
    assert resumed.best_epoch == straight.best_epoch and resumed.epochs == 6
    for key, value in model.state().items():  # weights, statistics, dropout states
        np.testing.assert_array_equal(fresh.state()[key], value, err_msg=key)
    assert model.state()["3.rng"][1] > 0  # dropout did draw
    # the two things a naive resume gets wrong each change the numbers
    ckpt = tmp_path / "ckpt-3.graphc"
    _, step3, _ = build()
    gc.load(ckpt, into=step3)  # the parameters alone, then epochs 1..3's shuffles again
    assert gc.train.fit(step3, DATA, 3, 16, seed=5, verbose=0)["loss"] != straight["loss"][3:]
    other, step4, _ = build()
    gc.load(ckpt, into=step4)
    other[3].rng.value = np.array([other[3].rng.value[0], 0])  # dropout's masks drawn afresh
    redrawn = gc.train.fit(step4, DATA, 6, 16, seed=5, verbose=0, initial_epoch=3)
    assert redrawn["loss"] != straight["loss"][3:]
    _, step5, _ = build()
    gc.load(ckpt, into=step5)  # Keras's way: load, then initial_epoch
    same = gc.train.fit(step5, DATA, 6, 16, seed=5, verbose=0, initial_epoch=3)
    assert same["loss"] == straight["loss"][3:]


def test_initial_epoch_shuffles_as_the_uninterrupted_run():
    model, step, _ = build()
    straight = gc.train.fit(step, DATA, 5, 16, seed=2, verbose=0)
    again, step2, _ = build()
    gc.train.fit(step2, DATA, 3, 16, seed=2, verbose=0)
    rest = gc.train.fit(step2, DATA, 5, 16, seed=2, verbose=0, initial_epoch=3)
    assert rest.initial_epoch == 3 and rest.epochs == 2 and rest.last_epoch == 5
    assert rest["loss"] == straight["loss"][3:]
    for key, value in model.state().items():
        np.testing.assert_array_equal(again.state()[key], value, err_msg=key)
    assert gc.train.fit(step2, DATA, 5, 16, verbose=0, initial_epoch=5).epochs == 0
    order = gc.train.epoch_order(10, 2, 4)
    np.testing.assert_array_equal(order, gc.train.epoch_order(10, 2, 4))
    assert not np.array_equal(order, gc.train.epoch_order(10, 2, 5))


def walker():
    """w moves by +1 per step; the validation loss (w - 3)^2 is best after exactly 3 steps."""
    w = gc.parameter("w", np.array(0.0))
    calls = gc.parameter("calls", np.array(0, np.int64))
    with gc.Graph("walk"):
        x = gc.placeholder("x", ("N", 2), "float64")
        step = gc.compile([x], w * 1.0 + gc.sum(x * 0.0), updates={w: w + 1.0,
                                                                  calls: calls + 1})
        ev = gc.compile([x], (w - 3.0) ** 2 + gc.sum(x * 0.0))
    return step, ev, w, calls


def walk(step, ev, epochs=20, **kwargs):
    data = np.ones((5, 2))
    return gc.train.fit(step, data, epochs, 5, ev, data, verbose=0,
                        early_stopping=gc.train.EarlyStopping(patience=2), **kwargs)


def test_early_stopping_state_and_best_parameters_survive_a_resume(tmp_path):
    step, ev, w, calls = walker()
    straight = walk(step, ev, checkpoint=tmp_path / "c-{epoch}.graphc")
    assert straight.best_epoch == 3 and straight.stopped_epoch == 5 and float(w.value) == 3.0
    # after epoch 4: best 3 epochs ago... one epoch waited, best parameters kept in the file
    meta = gc.io.read_metadata(tmp_path / "c-4.graphc")["early_stopping"]
    assert meta == {"monitor": "val_loss", "best": 0.0, "waited": 1, "best_epoch": 3,
                    "best_parameters": True}
    step2, ev2, w2, calls2 = walker()
    resumed = walk(step2, ev2, resume=tmp_path / "c-4.graphc")
    assert records(resumed) == records(straight)
    assert resumed.stopped_epoch == 5 and resumed.stop_reason == straight.stop_reason
    assert float(w2.value) == 3.0 and int(calls2.value) == 3  # restored from the file's best
    # resuming the checkpoint of the epoch that stopped stops at once, as the straight run did
    step3, ev3, w3, calls3 = walker()
    stopped = walk(step3, ev3, resume=tmp_path / "c-5.graphc")
    assert records(stopped) == records(straight) and stopped.stopped_epoch == 5
    assert float(w3.value) == 3.0 and int(calls3.value) == 3
    # ... unless the patience now allows more
    step4, ev4, w4, _ = walker()
    longer = gc.train.fit(step4, np.ones((5, 2)), 6, 5, ev4, np.ones((5, 2)), verbose=0,
                          early_stopping=gc.train.EarlyStopping(patience=5),
                          resume=tmp_path / "c-5.graphc")
    assert longer.epochs == 6 and longer.stopped_epoch is None and float(w4.value) == 3.0


def test_resume_refuses_what_it_cannot_continue(tmp_path):
    step, ev, w, calls = walker()
    walk(step, ev, 2, checkpoint=tmp_path / "c-{epoch}.graphc")
    fresh, ev2, w2, _ = walker()
    with pytest.raises(gc.GraphError, match="initial_epoch must be 0 or 2"):
        walk(fresh, ev2, resume=tmp_path / "c-2.graphc", initial_epoch=1)
    with pytest.raises(gc.GraphError, match="was monitoring 'val_loss'"):
        gc.train.fit(fresh, np.ones((5, 2)), 4, 5, ev2, np.ones((5, 2)), verbose=0,
                     early_stopping=gc.train.EarlyStopping(monitor="loss"),
                     resume=tmp_path / "c-2.graphc")
    gc.save(step, tmp_path / "plain.graphc")
    with pytest.raises(gc.GraphError, match="not a checkpoint written by gc.train.fit"):
        walk(fresh, ev2, resume=tmp_path / "plain.graphc")
    assert float(w2.value) == 0.0  # nothing was written by the refused resumes
    with pytest.raises(gc.GraphError, match="initial_epoch"):
        walk(fresh, ev2, initial_epoch=-1)


class Recorder:
    """A callback with state: counts epochs, asks to stop at `stop_at`."""

    def __init__(self, stop_at=None):
        self.seen, self.stop_at = [], stop_at

    def on_epoch_end(self, epoch, logs, history):
        assert history.last_epoch == epoch and history["loss"][-1] == logs["loss"]
        self.seen.append(epoch)
        return epoch == self.stop_at

    def state(self):
        return {"seen": self.seen}

    def load_state(self, state):
        self.seen = list(state["seen"])


def test_callbacks_see_each_epoch_can_stop_and_are_checkpointed(tmp_path):
    step, ev, w, _ = walker()
    rec = Recorder(stop_at=2)
    history = gc.train.fit(step, np.ones((5, 2)), 10, 5, callbacks=[rec], verbose=0,
                           checkpoint=tmp_path / "c-{epoch}.graphc")
    assert rec.seen == [1, 2] and history.stopped_epoch == 2
    assert history.stop_reason == "Recorder asked to stop"
    step2, _, _, _ = walker()
    rec2 = Recorder()
    gc.train.fit(step2, np.ones((5, 2)), 4, 5, callbacks=[rec2], verbose=0,
                 resume=tmp_path / "c-2.graphc")
    assert rec2.seen == [1, 2, 3, 4]  # its state came back from the checkpoint
    with pytest.raises(gc.GraphError, match="same callbacks"):
        gc.train.fit(step2, np.ones((5, 2)), 4, 5, verbose=0, resume=tmp_path / "c-2.graphc")
    with pytest.raises(gc.GraphError, match="on_epoch_end"):
        gc.train.fit(step2, np.ones((5, 2)), 4, 5, verbose=0, callbacks=[object()])


class Strict:
    """A callback whose load_state writes part of a state before it checks it (the worst
    case: resume must still leave it as it was when it refuses)."""

    def __init__(self, tag, count=0):
        self.tag, self.count = tag, count

    def on_epoch_end(self, epoch, logs, history):
        self.count += 1
        return False

    def state(self):
        return {"tag": self.tag, "count": self.count}

    def load_state(self, state):
        self.count = state["count"]
        if state["tag"] != self.tag:
            raise gc.GraphError(f"the saved Strict has tag {state['tag']!r}; this one "
                                f"{self.tag!r}")


def _snapshot(step, callbacks):
    """Every parameter of the step (weights, batch-norm statistics, dropout state, Adam's
    moments, step counter and learning rate) and every callback's attributes, copied."""
    params = {p.name: p.value.copy() for p in step.parameters()}
    attrs = [{k: copy.deepcopy(v) for k, v in vars(cb).items() if k != "optimizer"}
             for cb in callbacks]
    return params, attrs


def _assert_same(before, after):
    assert before[0].keys() == after[0].keys()
    for name, value in before[0].items():
        assert value.dtype == after[0][name].dtype, name
        assert value.tobytes() == after[0][name].tobytes(), name  # bitwise
    assert repr(before[1]) == repr(after[1])  # (repr: NaN-safe, exact floats)


@pytest.mark.parametrize("refusing", ["plateau mode", "strict tag"])
def test_a_refused_resume_leaves_parameters_optimizer_and_callbacks_unchanged(tmp_path,
                                                                               refusing):
    _, step, ev = build()
    ck = tmp_path / "ck.graphc"
    plateau_opt = gc.optim.SGD([gc.parameter("p", np.ones(2, np.float32))], lr=0.1)
    fit(step, ev, 2, checkpoint=ck,
        callbacks=[Recorder(), gc.optim.ReduceLROnPlateau(plateau_opt, monitor="loss"),
                   Strict("a")])
    _, step2, ev2 = build()
    fit(step2, ev2, 1)  # a live run whose state differs from the checkpoint's everywhere
    recorder = Recorder()
    recorder.seen = [7]
    plateau = gc.optim.ReduceLROnPlateau(
        plateau_opt, monitor="loss", mode="max" if refusing == "plateau mode" else "min")
    plateau.best, plateau.num_bad_epochs, plateau.last_epoch = 0.25, 3, 9
    strict = Strict("b" if refusing == "strict tag" else "a", count=11)
    callbacks = [recorder, plateau, strict]
    before = _snapshot(step2, callbacks)
    lr = plateau_opt.lr_parameter.value.copy()
    with pytest.raises(gc.GraphError, match="mode 'min'" if refusing == "plateau mode"
                       else "tag 'a'"):
        fit(step2, ev2, 4, resume=ck, callbacks=callbacks)
    _assert_same(before, _snapshot(step2, callbacks))
    assert recorder.seen == [7] and strict.count == 11  # loaded, then put back
    assert plateau_opt.lr_parameter.value.tobytes() == lr.tobytes()
    # the same callbacks as the checkpoint's: the resume goes through
    ok = [Recorder(), gc.optim.ReduceLROnPlateau(plateau_opt, monitor="loss"), Strict("a")]
    fit(step2, ev2, 3, resume=ck, callbacks=ok)
    assert ok[0].seen == [1, 2, 3] and ok[2].count == 3


def test_a_resume_into_a_step_it_does_not_fit_loads_no_callback_state(tmp_path):
    step, ev, _, _ = walker()
    walk(step, ev, 2, checkpoint=tmp_path / "c-{epoch}.graphc", callbacks=[Strict("a")])
    w = gc.parameter("w", np.zeros(3))  # another shape: the file's w does not fit
    with gc.Graph("walk"):
        x = gc.placeholder("x", ("N", 2), "float64")
        other = gc.compile([x], gc.sum(w) + gc.sum(x * 0.0), updates={w: w + 1.0})
    strict = Strict("a", count=5)
    before = _snapshot(other, [strict])
    with pytest.raises(gc.GraphError, match="parameters do not match|shape"):
        gc.train.fit(other, np.ones((5, 2)), 4, 5, verbose=0, callbacks=[strict],
                     resume=tmp_path / "c-2.graphc")
    _assert_same(before, _snapshot(other, [strict]))


def test_a_checkpoint_from_before_the_per_parameter_counts_resumes(tmp_path, monkeypatch):
    """Adam's per-parameter step counts ("adam.<param>.step") are newer than some
    checkpoints: a step saved without them resumes, each count taken from the optimizer's
    "adam.step" (what the saving version used for every parameter)."""
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((32, 3)).astype(np.float32), rng.integers(0, 2, 32)

    def build():
        with gc.Graph():
            gc.manual_seed(0)
            model = gc.nn.Sequential(gc.nn.Linear(3, 4), gc.nn.Tanh(), gc.nn.Linear(4, 2))
            x, y = gc.placeholder("x", ("N", 3)), gc.placeholder("y", ("N",), "int64")
            loss = gc.nn.functional.cross_entropy(model(x), y)
            opt = gc.optim.Adam(model.parameters(), lr=0.01)
            return gc.compile([x, y], loss, updates=opt.updates(loss)), opt

    with monkeypatch.context() as m:  # the optimizer as it was: one count for all
        m.setattr(gc.optim.Adam, "_step_slot", lambda self, i: None)
        old, old_opt = build()
        assert not any(k.endswith(".step") and k != "step" for k in old_opt.state())
        gc.train.fit(old, (X, Y), 2, 8, verbose=0, checkpoint=tmp_path / "old.graphc")
    step, opt = build()
    history = gc.train.fit(step, (X, Y), 3, 8, verbose=0, resume=tmp_path / "old.graphc")
    assert len(history["loss"]) == 3 and np.isfinite(history["loss"]).all()
    state = opt.state()
    assert int(state["step"]) == 12
    assert all(int(state[f"{i}.step"]) == 12 for i in range(4))  # 8 restored + 4 more


def test_two_optimizers_of_one_name_each_give_their_own_count(tmp_path, monkeypatch):
    """Two Adams (both "adam", on two unnamed models) in one step saved before the
    per-parameter counts: each parameter's count comes from its own optimizer's, not from
    whichever optimizer's name matches first."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 3)).astype(np.float32)

    def build():
        with gc.Graph():
            gc.manual_seed(0)
            a, b = gc.nn.Linear(3, 2), gc.nn.Linear(3, 2)
            x = gc.placeholder("x", ("N", 3))
            loss = gc.sum(gc.square(a(x))) + gc.sum(gc.square(b(x)))
            opt_a = gc.optim.Adam(a.parameters(), lr=0.01)
            opt_b = gc.optim.Adam(b.parameters(), lr=0.01)
            step = gc.compile([x], loss, updates={**opt_a.updates(loss),
                                                  **opt_b.updates(loss)})
            return step, opt_a, opt_b

    with monkeypatch.context() as m:
        m.setattr(gc.optim.Adam, "_step_slot", lambda self, i: None)
        old, old_a, old_b = build()
        for _ in range(3):
            old(X)
        old_b.load_state({**old_b.state(), "step": np.array(7, np.int64)})
        gc.save(old, tmp_path / "two.graphc")
    step, opt_a, opt_b = build()
    gc.load(tmp_path / "two.graphc", into=step)
    assert [int(opt_a.state()[f"{i}.step"]) for i in range(2)] == [3, 3]
    assert [int(opt_b.state()[f"{i}.step"]) for i in range(2)] == [7, 7]


@pytest.mark.parametrize("edit,message", [
    ({"monitor": "nonexistent"}, "monitor 'nonexistent' is not one of the values"),
    ({"epoch": -2, "initial_epoch": -5}, "epochs are not 0 <= initial_epoch"),
    ({"early_stopping": {"best_epoch": 999}}, "best epoch 999 is not one of its epochs"),
    ({"early_stopping": {"best_epoch": "abc"}}, "best epoch 'abc'"),
    ({"early_stopping": {"waited": -100}}, "wait -100 is not a count"),
    ({"early_stopping": {"waited": "5"}}, "wait '5' is not a count"),
    ({"early_stopping": {"best": "nan"}}, "best value 'nan' is not a number"),
    ({"history": {"loss": "123"}}, "history 'loss' is not a list of numbers"),
    ({"history": {"val_loss": [1.0]}}, "quantities for different numbers of epochs"),
    ({"fit_checkpoint": 2}, "layout 2; this graphc reads layout 1")])
def test_a_checkpoint_s_progress_is_checked_before_anything_is_written(tmp_path, edit,
                                                                      message):
    """A monitor no epoch logged failed only after the next epoch had trained; negative
    epochs trained extra ones; a best epoch, best value or wait of any type was taken."""
    import json
    import zipfile

    step, ev, w, calls = walker()
    walk(step, ev, 2, checkpoint=tmp_path / "c.graphc")
    with zipfile.ZipFile(tmp_path / "c.graphc") as z:
        files = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(files["manifest.json"])
    meta = manifest["metadata"]
    for key, value in edit.items():
        if isinstance(value, dict) and isinstance(meta.get(key), dict):
            meta[key].update(value)
        else:
            meta[key] = value
    files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(tmp_path / "bad.graphc", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    fresh, ev2, w2, calls2 = walker()
    with pytest.raises(gc.GraphError, match=message):
        walk(fresh, ev2, 6, resume=tmp_path / "bad.graphc")
    assert float(w2.value) == 0.0 and int(calls2.value) == 0


def test_a_checkpoint_past_the_epochs_asked_for_is_refused_before_anything_is_written(
        tmp_path):
    """It trained nothing and returned the checkpoint's history as if the run had done it."""
    step, ev, w, calls = walker()
    walk(step, ev, 3, checkpoint=tmp_path / "c.graphc")
    fresh, ev2, w2, calls2 = walker()
    with pytest.raises(gc.GraphError, match="after epoch 3, past the 2 epochs asked for"):
        walk(fresh, ev2, 2, resume=tmp_path / "c.graphc")
    assert float(w2.value) == 0.0 and int(calls2.value) == 0
    history = walk(fresh, ev2, 3, resume=tmp_path / "c.graphc")  # done already: nothing to do
    assert history.epochs == 3 and int(calls2.value) == 3


class StateOnly:
    """A callback that has a state() for its own use, and no load_state."""

    def __init__(self):
        self.seen = []

    def on_epoch_end(self, epoch, logs, history):
        self.seen.append(epoch)

    def state(self):
        return {"seen": self.seen}


def test_a_callback_without_load_state_is_not_checkpointed_and_the_run_resumes(tmp_path):
    """Its state() was saved, and then every resume refused the checkpoint ("holds the
    state of 1 callback(s) ... (1 given)")."""
    step, ev, w, calls = walker()
    walk(step, ev, 2, checkpoint=tmp_path / "c.graphc", callbacks=[StateOnly()])
    assert gc.io.read_metadata(tmp_path / "c.graphc")["callbacks"] == [None]
    fresh, ev2, w2, calls2 = walker()
    again = StateOnly()
    walk(fresh, ev2, 4, resume=tmp_path / "c.graphc", callbacks=[again])
    assert again.seen == [3, 4]
