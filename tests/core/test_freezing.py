"""Freezing and fine-tuning: requires_grad_(False), freeze()/unfreeze(), Function.parameters().

A frozen parameter is still listed by parameters() and state() (PyTorch), receives no update
even when an optimizer is given it, and costs no backward work: the compiled step holds no
gradient op for it. freeze() also keeps the module in eval mode under a parent's train().
"""

from __future__ import annotations

import numpy as np

import graphc as gc

F = gc.nn.functional
nn = gc.nn


def _model():
    gc.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def _step(model, opt):
    x = gc.placeholder("x", ("N", 1, 6, 6))
    y = gc.placeholder("y", ("N",), "int64")
    loss = F.cross_entropy(model(x), y)
    return gc.compile([x, y], loss, updates=opt.updates(loss)), x, y


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 8)


def test_requires_grad_false_params_are_listed_but_never_updated_nor_differentiated():
    model = _model()
    model[0].requires_grad_(False)
    assert all(not p.requires_grad for p in model[0].parameters())
    assert len(model.parameters()) == 6 and "0.weight" in model.state()
    opt = gc.optim.Adam(model.parameters(), lr=0.1)  # given the frozen ones too
    step, *_ = _step(model, opt)
    ops_used = {n.op.name for n in step.graph.nodes}
    assert "conv_weight_grad" not in ops_used  # no backward work for the frozen conv
    assert "conv_transpose" not in ops_used  # nor through it to the input
    frozen = [p.value.copy() for p in model[0].parameters()]
    trained = model[4].weight.value.copy()
    step(*_data())
    for p, before in zip(model[0].parameters(), frozen):
        np.testing.assert_array_equal(p.value, before)
    assert not np.array_equal(model[4].weight.value, trained)
    names = [p.name for p in step.parameters()]
    assert "0.weight" not in names and "4.weight" in names
    assert not any(".0.weight." in n or n.startswith("adam.0.weight") for n in names)


def test_freeze_keeps_eval_mode_under_a_parents_train_and_unfreeze_undoes_both():
    model = _model()
    model[1].freeze()  # a frozen batch norm: running statistics used, not updated
    model.train()
    assert model[1].training is False and model[0].training is True and model[1].frozen
    opt = gc.optim.SGD(model.parameters(), lr=0.1)
    step, *_ = _step(model, opt)
    mean = model[1].running_mean.value.copy()
    step(*_data())
    np.testing.assert_array_equal(model[1].running_mean.value, mean)
    np.testing.assert_array_equal(model[1].weight.value, np.ones(4, np.float32))
    model[1].unfreeze()
    assert model[1].training is True and model[1].weight.requires_grad
    model.eval().train()
    assert model[1].training is True


def test_train_supervised_leaves_a_frozen_part_in_eval_mode():
    model = _model()
    model[0].freeze()
    model[1].freeze()
    opt = gc.optim.SGD(model.parameters(), lr=0.1)
    step, _ = gc.train.supervised(model, F.cross_entropy, opt, x_shape=("N", 1, 6, 6))
    mean = model[1].running_mean.value.copy()
    w = model[0].weight.value.copy()
    step(*_data())
    np.testing.assert_array_equal(model[1].running_mean.value, mean)
    np.testing.assert_array_equal(model[0].weight.value, w)


def test_everything_frozen_changes_nothing_and_flags_survive_to_dtype():
    """An optimizer skips frozen parameters even when every one it is given is frozen
    (API.md; PyTorch's step leaves parameters without gradients alone): the step runs,
    holds no gradient op and changes no parameter or statistic (once it was an error)."""
    model = _model()
    model.freeze()
    state = {k: v.copy() for k, v in model.state().items()}
    step, *_ = _step(model, gc.optim.Adam(model.parameters(), lr=0.1))
    ops_used = [n.op.name for n in step.graph.nodes]
    assert "conv_weight_grad" not in ops_used and ops_used.count("matmul") == 1  # the forward
    assert np.isfinite(step(*_data()))
    for key, value in model.state().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    model.unfreeze()
    model[0].requires_grad_(False)
    model.to("float64")
    assert not model[0].weight.requires_grad and model[4].weight.requires_grad


def test_function_parameters_lists_explicit_and_default_updates_in_a_stable_order():
    model = _model()
    opt = gc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    step, *_ = _step(model, opt)
    names = [p.name for p in step.parameters()]
    assert names == [p.name for p in step.parameters()]  # stable
    assert {"0.weight", "4.bias", "1.running_mean", "1.running_var"} <= set(names)
    assert all(isinstance(p, gc.Tensor) and p.op == "parameter" for p in step.parameters())
