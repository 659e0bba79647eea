"""Cosine and warm-up schedules, the learning rate as an optimizer parameter, and
ReduceLROnPlateau: PyTorch's formulas and rules, a compiled step that follows a changed
learning rate without compiling again, and resuming a run with a reduced rate."""

import numpy as np
import pytest
import torch

import graphc as gc
from graphc.backends import get_backend

S = gc.optim.schedules
L = torch.optim.lr_scheduler


def torch_lrs(make, n, lr):
    """The learning rates of n updates under a torch scheduler stepped once per update."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def torch_warmup(inner, steps):
    """PyTorch's warm-up of `steps` updates, (k + 1) / steps, then `inner` shifted."""
    return lambda o: L.SequentialLR(o, [L.LinearLR(o, start_factor=1 / steps, end_factor=1.0,
                                                   total_iters=steps - 1), inner(o)],
                                    milestones=[steps])


LR, T, W = 0.3, 10, 4
PAIRS = [  # (ours, torch's)
    (S.cosine(LR, T, min_lr=0.01), lambda o: L.CosineAnnealingLR(o, T_max=T, eta_min=0.01)),
    (S.step(LR, 3, 0.5), lambda o: L.StepLR(o, 3, 0.5)),
    (S.exponential(LR, 0.8), lambda o: L.ExponentialLR(o, 0.8)),
    (S.inverse_time(LR, 0.5), lambda o: L.LambdaLR(o, lambda k: 1 / (1 + 0.5 * k))),
]


def test_cosine_is_pytorchs_closed_form_then_holds_min_lr():
    ours = np.array([S.cosine(LR, T, min_lr=0.01).value(k) for k in range(T + 6)])
    ref = torch_lrs(PAIRS[0][1], T + 6, LR)
    np.testing.assert_allclose(ours[:T + 1], ref[:T + 1], rtol=1e-13)
    assert ours[0] == pytest.approx(LR, rel=1e-15) and ours[T] == 0.01
    # past total_steps PyTorch's cosine climbs back up; this one stays at min_lr
    assert np.all(ours[T:] == 0.01) and np.all(ref[T + 1:] > 0.01)
    assert S.cosine(1.0, 4).value(2) == pytest.approx(0.5)


@pytest.mark.parametrize("pair", PAIRS, ids=["cosine", "step", "exponential", "inverse_time"])
def test_warmup_is_linear_lr_then_the_schedule_shifted_as_sequential_lr(pair):
    ours, theirs = pair
    n = W + T + 1  # (past that, PyTorch's cosine climbs back up)
    values = np.array([S.warmup(ours, W).value(k) for k in range(n)])
    np.testing.assert_allclose(values, torch_lrs(torch_warmup(theirs, W), n, LR), rtol=1e-13)
    np.testing.assert_allclose(values[:W], LR * np.arange(1, W + 1) / W, rtol=1e-15)
    assert [S.warmup(ours, W).value(W + k) for k in range(5)] == [ours.value(k) for k in range(5)]


def test_warmup_of_a_constant_and_of_nothing():
    assert [S.warmup(0.2, 4).value(k) for k in range(6)] == pytest.approx(
        [0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    cos = S.cosine(0.2, 5)
    assert [S.warmup(cos, 0).value(k) for k in range(7)] == [cos.value(k) for k in range(7)]
    assert S.warmup(cos, 3).lr == 0.2 and "warmup(cosine(lr=0.2" in repr(S.warmup(cos, 3))


class Halving(S.Schedule):
    """A user's schedule with no ``lr`` attribute: warm-up ramps to its first value."""

    def __call__(self, k):
        return 0.8 * 0.5 ** k


def test_warmup_of_a_users_schedule():
    schedule = S.warmup(Halving(), 2)
    assert schedule.lr == 0.8
    assert [schedule.value(k) for k in range(5)] == pytest.approx([0.4, 0.8, 0.8, 0.4, 0.2])
    k = gc.placeholder("k", ("N",), "float64")
    got = gc.compile([k], schedule(k))(np.arange(5.0))
    np.testing.assert_allclose(got, [0.4, 0.8, 0.8, 0.4, 0.2], rtol=1e-15)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_schedules_in_a_compiled_graph_equal_their_python_values(backend):
    """The symbolic path (k a float64 tensor, as inside an update graph) computes what the
    plain-number path does, compositions included."""
    schedules = [p[0] for p in PAIRS] + [S.warmup(p[0], W) for p in PAIRS] + [
        S.warmup(0.1, 3), S.warmup(S.warmup(S.cosine(1.0, 7, 0.1), 2), 3)]
    k = gc.placeholder("k", ("N",), "float64")
    fn = gc.compile([k], [s(k) for s in schedules], backend=backend)
    ks = np.arange(24.0)
    for schedule, got in zip(schedules, fn(ks)):
        want = [schedule.value(int(i)) for i in ks]
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=0, err_msg=repr(schedule))


def test_sgd_with_warmup_and_cosine_matches_pytorch_update_by_update():
    rng = np.random.default_rng(0)
    x, y, w0 = rng.standard_normal((8, 3)), rng.standard_normal(8), rng.standard_normal(3)
    w = gc.parameter("w", w0.copy())
    xs, ys = gc.placeholder("x", ("N", 3), "float64"), gc.placeholder("y", ("N",), "float64")
    loss = gc.mean(gc.square(xs @ w - ys))
    opt = gc.optim.SGD([w], lr=S.warmup(S.cosine(0.1, 6, min_lr=0.001), 3), momentum=0.9)
    step = gc.compile([xs, ys], loss, updates=opt.updates(loss))
    tw = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.SGD([tw], lr=0.1, momentum=0.9)
    sched = torch_warmup(lambda o: L.CosineAnnealingLR(o, T_max=6, eta_min=0.001), 3)(topt)
    for k in range(3 + 6 + 1):  # the warm-up and the whole cosine
        assert opt.current_lr() == pytest.approx(topt.param_groups[0]["lr"], rel=1e-13)
        step(x, y)
        topt.zero_grad()
        torch.mean((torch.tensor(x) @ tw - torch.tensor(y)) ** 2).backward()
        topt.step()
        sched.step()
        np.testing.assert_allclose(w.value, tw.detach().numpy(), rtol=1e-11, err_msg=f"step {k}")


def counting_compiles(monkeypatch, backend):
    """A list that grows by one every time `backend` compiles a program."""
    impl, calls = get_backend(backend), []
    original = impl.compile

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(impl, "compile", counted)
    return calls


def linear_step(opt_factory, backend, options=None):
    """cost = sum(w * x): the gradient is x, so plain SGD moves w by exactly -lr * x."""
    w = gc.parameter("w", np.zeros(3))
    x = gc.placeholder("x", (3,), "float64")
    cost = gc.sum(w * x)
    opt = opt_factory([w])
    step = gc.compile([x], cost, updates=opt.updates(cost), backend=backend,
                      backend_options=options)
    return step, opt, w


@pytest.mark.parametrize("backend,options", [("numpy", None), ("llvm", None),
                                             ("cuda", {"emulate": True})],
                         ids=["numpy", "llvm", "cuda-emulated"])
def test_a_compiled_step_follows_a_new_learning_rate_without_compiling_again(
        backend, options, monkeypatch):
    """The write reaches the copy the step reads — a device's copy too (cuda)."""
    compiles = counting_compiles(monkeypatch, backend)
    step, opt, w = linear_step(lambda ps: gc.optim.SGD(ps, lr=0.5), backend, options)
    assert len(compiles) == 1 and opt.lr == 0.5 and opt.state()["lr"] == 0.5
    x = np.array([1.0, 2.0, -4.0])
    executable = step._exe
    step(x)
    np.testing.assert_array_equal(w.value, -0.5 * x)
    plateau = gc.optim.ReduceLROnPlateau(opt, monitor="loss", factor=0.25, patience=0)
    assert plateau.step(1.0) is False and plateau.step(1.0) is True  # one bad epoch > 0
    assert opt.lr == 0.125 and float(opt.lr_parameter.value) == 0.125
    step(x)
    np.testing.assert_array_equal(w.value, -(0.5 + 0.125) * x)
    opt.lr = 0.0  # by hand, the same way
    step(x)
    np.testing.assert_array_equal(w.value, -(0.5 + 0.125) * x)
    assert len(compiles) == 1 and step._exe is executable  # the same machine code ran


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_the_plateau_factor_multiplies_a_schedule(backend, monkeypatch):
    compiles = counting_compiles(monkeypatch, backend)
    schedule = S.warmup(S.cosine(0.8, 4, min_lr=0.2), 2)
    step, opt, w = linear_step(lambda ps: gc.optim.SGD(ps, lr=schedule), backend)
    assert "lr" not in opt.state() and opt.state()["lr_scale"] == 1.0
    plateau = gc.optim.ReduceLROnPlateau(opt, monitor="loss", factor=0.5, patience=0,
                                         min_lr=0.3)
    plateau.step(1.0)  # the first value is the best so far
    x, moved = np.array([1.0, -1.0, 2.0]), 0.0
    for k in range(8):
        if k in (3, 5):  # no progress, patience 0: 0.8 -> 0.4 -> 0.3 (min_lr bounds 0.8 scale)
            assert plateau.step(1.0) is True
        scale = 1.0 if k < 3 else 0.5 if k < 5 else 0.3 / 0.8
        assert float(opt.lr_parameter.value) == scale
        assert opt.current_lr() == pytest.approx(scale * schedule.value(k), rel=1e-15)
        moved += opt.current_lr()
        step(x)
        np.testing.assert_allclose(w.value, -moved * x, rtol=1e-14)
    assert plateau.lr == pytest.approx(0.3) and plateau.reductions == [2, 3]
    assert plateau.step(1.0) is False  # at min_lr already: nothing left to reduce
    assert len(compiles) == 1
    with pytest.raises(gc.GraphError, match="follows the schedule"):
        opt.lr = 0.1


@pytest.mark.parametrize("kwargs,values", [
    (dict(mode="min", patience=2), [5, 4, 4, 4, 4, 3.9999, 4, 4, 4, 4, 4, 4, 1, 1, 1, 1]),
    (dict(mode="max", patience=1, cooldown=2), [1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]),
    (dict(mode="min", patience=0, threshold=0.1, threshold_mode="abs", min_lr=0.002),
     [1, 0.95, 0.8, 0.75, 0.7, 0.69, 0.5, 0.45, 0.4, 0.35, 0.3, 0.3, 0.3]),
    (dict(mode="max", patience=1, threshold=0.5, factor=0.5),
     [1, 1.4, 1.6, float("nan"), 2.5, 2.6, 2.7, 2.8, 10, 10, 10, 10]),
])
def test_plateau_rule_is_pytorchs(kwargs, values):
    w = gc.parameter("w", np.zeros(2))
    opt = gc.optim.Adam([w], lr=0.1)
    ours = gc.optim.ReduceLROnPlateau(opt, monitor="metric", **kwargs)
    topt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    theirs = L.ReduceLROnPlateau(topt, **kwargs)
    for epoch, value in enumerate(values):
        ours.step(value)
        theirs.step(value)
        assert opt.lr == topt.param_groups[0]["lr"], f"epoch {epoch}"
        assert (ours.num_bad_epochs, ours.cooldown_counter) == (
            theirs.num_bad_epochs, theirs.cooldown_counter), f"epoch {epoch}"
    assert ours.reductions  # every case reduces at least once


def plateau_walker():
    """SGD on cost = w (the gradient is 1, so w moves by -lr per step); the validation loss
    is stuck at 1, so it plateaus from the second epoch on."""
    w = gc.parameter("w", np.array(0.0))
    opt = gc.optim.SGD([w], lr=0.1)
    with gc.Graph("walk"):
        x = gc.placeholder("x", ("N", 2), "float64")
        cost = w * 1.0 + gc.sum(x * 0.0)
        step = gc.compile([x], cost, updates=opt.updates(cost))
        ev = gc.compile([x], 1.0 + w * 0.0 + gc.sum(x * 0.0))
    plateau = gc.optim.ReduceLROnPlateau(opt, factor=0.5, patience=1, min_lr=0.02)
    return step, ev, opt, plateau


def walk(step, ev, plateau, epochs=10, **kwargs):
    data = np.ones((5, 2))  # one batch an epoch: one update
    return gc.train.fit(step, data, epochs, 5, ev, data, verbose=0, callbacks=[plateau],
                        **kwargs)


def test_fit_with_plateau_reduces_the_rate_and_a_resume_restores_it(tmp_path):
    step, ev, opt, plateau = plateau_walker()
    assert plateau.monitor == "val_loss" and plateau.mode == "min"
    straight = walk(step, ev, plateau, checkpoint=tmp_path / "c-{epoch}.graphc")
    # lr per epoch: 0.1 x3, reduced after epoch 3 (two bad epochs > patience 1), 0.05 x2,
    # 0.025 x2, then min_lr 0.02
    rates = [0.1] * 3 + [0.05] * 2 + [0.025] * 2 + [0.02] * 3
    np.testing.assert_allclose(straight["loss"], -np.cumsum([0.0] + rates[:-1]), atol=1e-15)
    assert plateau.reductions == [3, 5, 7] and opt.lr == 0.02
    assert gc.io.read_metadata(tmp_path / "c-4.graphc")["callbacks"][0]["num_bad_epochs"] == 1
    saved = gc.optim.SGD([gc.parameter("w", np.array(0.0))], lr=0.1)
    gc.load(tmp_path / "c-4.graphc", into=saved)  # the optimizer's state from the step file
    assert saved.lr == 0.05 and saved.state()["step"] == 4

    step2, ev2, opt2, plateau2 = plateau_walker()  # a new process would build exactly this
    resumed = walk(step2, ev2, plateau2, resume=tmp_path / "c-4.graphc")
    assert {k: v for k, v in resumed.items() if k != "time"} == {
        k: v for k, v in straight.items() if k != "time"}
    assert opt2.lr == 0.02 and plateau2.state() == plateau.state()


def test_learning_rate_parameter_state_and_old_states():
    w = gc.parameter("w", np.zeros(2, np.float32))
    opt = gc.optim.Adam([w], lr=0.01)
    assert opt.lr_parameter.dtype == np.float64 and opt.lr_parameter.name == "adam.lr"
    state = opt.state()
    assert state["lr"] == 0.01 and state["lr"].dtype == np.float64
    opt.lr = 0.5
    opt.load_state(state)
    assert opt.lr == 0.01
    opt.lr = 0.5
    opt.load_state({k: v for k, v in state.items() if k != "lr"})  # saved before "lr" existed
    assert opt.lr == 0.5
    for bad in (-1.0, float("nan"), S.cosine(0.1, 3)):
        with pytest.raises(gc.GraphError, match="learning rate"):
            opt.lr = bad
    assert gc.optim.SGD([w], lr=S.exponential(0.1, 0.5)).current_lr() == 0.1


def test_bad_arguments_are_clear():
    w = gc.parameter("w", np.zeros(2))
    opt = gc.optim.SGD([w], lr=0.1)
    with pytest.raises(gc.GraphError, match="total_steps"):
        S.cosine(0.1, 0)
    with pytest.raises(gc.GraphError, match="min_lr"):
        S.cosine(0.1, 10, min_lr=-1.0)
    with pytest.raises(gc.GraphError, match="steps"):
        S.warmup(0.1, 2.5)
    with pytest.raises(gc.GraphError, match="factor"):
        gc.optim.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(gc.GraphError, match="mode"):
        gc.optim.ReduceLROnPlateau(opt, mode="up")
    with pytest.raises(gc.GraphError, match="optimizer"):
        gc.optim.ReduceLROnPlateau(object())
    assert gc.optim.ReduceLROnPlateau(opt, monitor="val_accuracy").mode == "max"
    plateau = gc.optim.ReduceLROnPlateau(opt, monitor="val_acc")
    with pytest.raises(gc.GraphError, match="monitors 'val_acc'.*'loss'"):
        plateau.on_epoch_end(1, {"loss": 1.0, "time": 0.1}, None)
    with pytest.raises(gc.GraphError, match="monitor"):
        plateau.load_state(gc.optim.ReduceLROnPlateau(opt).state())


@pytest.mark.parametrize("make,message", [
    (lambda: S.step(-0.1, 2), "lr"), (lambda: S.step(float("nan"), 2), "lr"),
    (lambda: S.step(0.1, 2.5), "step_size"), (lambda: S.step(0.1, True), "step_size"),
    (lambda: S.step(0.1, 2, gamma=-1), "gamma"), (lambda: S.exponential(-0.1, 0.9), "lr"),
    (lambda: S.exponential(0.1, -2), "gamma"), (lambda: S.inverse_time(-0.1, 0.5), "lr"),
    (lambda: S.inverse_time(0.1, float("nan")), "decay"),
    (lambda: S.warmup(S.step(-0.1, 2), 2), "lr")])
def test_schedules_refuse_rates_that_would_climb_or_alternate(make, message):
    """A negative rate or factor would turn the compiled step into gradient ascent (or flip
    its sign every update), a NaN would reach every parameter: refused, as cosine does."""
    with pytest.raises(gc.GraphError, match=message):
        make()
