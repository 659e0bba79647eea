"""opt.updates(cost, skip_nonfinite=True): a step with a non-finite loss or gradient changes
nothing at all — parameters, optimizer state, step counter, batch-norm statistics, dropout's
random state — on every backend; opt.skipped says so and nonfinite_steps counts it."""

import numpy as np
import pytest

import graphc as gc

nn, F = gc.nn, gc.nn.functional
BACKENDS = [("numpy", None), ("llvm", None), ("cuda", {"emulate": True})]


def _everything(step):
    """Every parameter the compiled step holds (weights, state, statistics, random states)."""
    return {n.uid: n.attrs["storage"].value.copy() for n in step.graph.nodes
            if n.op.name == "parameter"}


@pytest.mark.parametrize("backend,options", BACKENDS, ids=["numpy", "llvm", "cuda-emulated"])
def test_a_nonfinite_step_changes_nothing(backend, options):
    gc.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(8, 3))
    opt = gc.optim.Adam(model.parameters(), lr=1e-2)
    x = gc.placeholder("x", ("N", 4))
    y = gc.placeholder("y", ("N",), "int64")
    loss = F.cross_entropy(model(x), y)
    updates = opt.updates(loss, skip_nonfinite=True)
    with_flag = gc.compile([x, y], [loss, opt.skipped], updates=updates, backend=backend,
                           backend_options=options)
    rng = np.random.default_rng(0)
    xs, ys = rng.normal(size=(6, 4)).astype(np.float32), rng.integers(0, 3, 6)
    with_flag(xs, ys)
    before = _everything(with_flag)
    bad = xs.copy()
    bad[2, 1] = np.nan
    value, skipped = with_flag(bad, ys)
    assert np.isnan(value) and bool(skipped)
    after = _everything(with_flag)
    counter = opt.nonfinite_steps.node.uid
    for uid, old in before.items():
        if uid == counter:
            assert after[uid] == old + 1
        else:
            np.testing.assert_array_equal(after[uid], old)
    assert opt.state()["nonfinite_steps"] == 1
    value, skipped = with_flag(xs, ys)  # a finite batch updates again
    assert np.isfinite(value) and not bool(skipped)
    changed = [uid for uid, old in before.items() if not np.array_equal(
        _everything(with_flag)[uid], old)]
    assert len(changed) > 5  # weights, Adam's moments, the step, batch-norm stats, rng state


def test_an_infinite_gradient_is_skipped_too():
    w = gc.parameter("w", np.array([1.0, 2.0]))
    x = gc.placeholder("x", (2,), "float64")
    opt = gc.optim.SGD([w], lr=0.1)
    loss = gc.sum(gc.sqrt(gc.abs(x * w)))  # finite at x = 0, its gradient is inf there
    updates = opt.updates(loss, skip_nonfinite=True)  # (opt.skipped exists from here on)
    step = gc.compile([x], [loss, opt.skipped], updates=updates)
    value, skipped = step(np.array([0.0, 1.0]))
    assert np.isfinite(value) and bool(skipped)
    np.testing.assert_array_equal(w.value, [1.0, 2.0])
    value, skipped = step(np.array([1.0, 1.0]))
    assert not bool(skipped) and not np.array_equal(w.value, [1.0, 2.0])


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
@pytest.mark.parametrize("clip", [{"clip_value": 1.0}, {"clip_norm": 1.0},
                                  {"clip_value": 1.0, "clip_norm": 1.0}])
def test_an_infinite_gradient_is_skipped_before_clipping_hides_it(backend, clip):
    """Clipping by value turns +inf into clip_value: the finiteness check must read the
    gradient before clipping, as PyTorch's GradScaler does."""
    w = gc.parameter("w", np.zeros(2))
    x = gc.placeholder("x", (2,), "float64")
    opt = gc.optim.SGD([w], lr=0.1, **clip)
    loss = gc.sum(gc.sqrt(x * w))  # 0 at w = 0, its gradient +inf there
    step = gc.compile([x], [loss],
                      updates=opt.updates(loss, skip_nonfinite=True), backend=backend)
    step(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(w.value, [0.0, 0.0])
    assert opt.state()["nonfinite_steps"] == 1 and opt.state()["step"] == 0


def test_skipped_exists_once_the_guarded_updates_are_built():
    opt = gc.optim.SGD([gc.parameter("w", np.ones(2))], lr=0.1)
    with pytest.raises(gc.GraphError, match="skip_nonfinite=True"):
        _ = opt.skipped
