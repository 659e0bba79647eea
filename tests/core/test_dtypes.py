"""Dtypes are a choice: layers' dtype=, Module.to(dtype), and conversions that refuse to turn a
finite value non-finite."""

import numpy as np
import pytest

import graphc as gc

nn = gc.nn
F = gc.nn.functional


def every_layer(dtype):
    """One of each gc.nn layer that holds float state, built in `dtype`."""
    return {
        "linear": nn.Linear(3, 2, rng=0, dtype=dtype),
        "conv1d": nn.Conv1d(2, 3, 3, rng=0, dtype=dtype),
        "conv2d": nn.Conv2d(2, 3, 3, rng=0, dtype=dtype),
        "convt": nn.ConvTranspose2d(2, 3, 3, rng=0, dtype=dtype),
        "bn1": nn.BatchNorm1d(3, dtype=dtype),
        "bn2": nn.BatchNorm2d(3, dtype=dtype),
        "embedding": nn.Embedding(5, 2, rng=0, dtype=dtype),
        "prelu": nn.PReLU(3, dtype=dtype),
        "maxout": nn.Maxout(3, 2, 2, rng=0, dtype=dtype),
        "rnn": nn.RNN(3, 2, rng=0, dtype=dtype),
        "lstm": nn.LSTM(3, 2, num_layers=2, rng=0, dtype=dtype),
        "gru": nn.GRU(3, 2, rng=0, dtype=dtype),
        "residual": nn.ResidualBlock(2, 3, stride=2, rng=0, dtype=dtype),
    }


def float_state(module):
    return {k: v for k, v in module.state().items() if v.dtype.kind == "f"}


@pytest.mark.parametrize("name", sorted(every_layer("float32")))
def test_every_layer_takes_a_dtype(name):
    single, double = every_layer("float32")[name], every_layer("float64")[name]
    assert float_state(single) and all(v.dtype == np.float32
                                       for v in float_state(single).values())
    assert all(v.dtype == np.float64 for v in float_state(double).values())
    for key, value in float_state(double).items():  # the same draws, not rounded twice
        np.testing.assert_array_equal(value.astype(np.float32), float_state(single)[key])
    assert set(double.state()) == set(single.state())


def test_other_dtypes_are_refused():
    for bad in ("float16", "int64", np.int32, "complex128", "nonsense"):
        with pytest.raises(gc.GraphError, match="float32 or float64"):
            nn.Linear(2, 2, dtype=bad)
    with pytest.raises(gc.GraphError, match=r"\.to\(dtype\) must be float32 or float64"):
        nn.Linear(2, 2).to("float16")


def test_a_float64_model_matches_a_float64_numpy_step():
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Linear(3, 4, rng=2, dtype="float64"), nn.Tanh(),
                          nn.Linear(4, 1, rng=3, dtype="float64"))
    W1, b1, W2, b2 = (p.value.copy() for p in model.parameters())
    opt = gc.optim.SGD(model.parameters(), lr=0.1)
    with gc.Graph():
        x = gc.placeholder("x", ("N", 3), "float64")
        t = gc.placeholder("t", ("N", 1), "float64")
        loss = F.mse_loss(model(x), t)
        step = gc.compile([x, t], loss, updates=opt.updates(loss))
    xs, ts = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    got = step(xs, ts)
    assert got.dtype == np.float64
    # the same step in float64 NumPy
    h = np.tanh(xs @ W1 + b1)
    y = h @ W2 + b2
    d = 2 * (y - ts) / y.size
    gW2, gb2 = h.T @ d, d.sum(0)
    dh = (d @ W2.T) * (1 - h ** 2)
    gW1, gb1 = xs.T @ dh, dh.sum(0)
    assert abs(float(got) - np.mean((y - ts) ** 2)) < 1e-12
    for p, ref in zip(model.parameters(), (W1 - 0.1 * gW1, b1 - 0.1 * gb1, W2 - 0.1 * gW2,
                                          b2 - 0.1 * gb2)):
        assert p.dtype == np.float64
        np.testing.assert_allclose(p.value, ref, rtol=0, atol=1e-12)  # float32 would be 1e-8


def test_to_makes_new_parameters_and_a_step_built_before_keeps_the_old_ones():
    model = nn.Sequential(nn.BatchNorm1d(3), nn.Linear(3, 2, rng=0), nn.Dropout(0.5, rng=1))
    opt = gc.optim.SGD(model.parameters(), lr=0.5)
    with gc.Graph():
        x = gc.placeholder("x", ("N", 3))
        loss = gc.sum(model(x) ** 2)
        step = gc.compile([x], loss, updates=opt.updates(loss))
    old = dict(model.state_tensors())
    before = model.state()
    assert model.to("float64") is model  # returns the module, as PyTorch
    for key, tensor in model.state_tensors().items():
        if before[key].dtype.kind == "f":
            assert tensor is not old[key] and tensor.dtype == np.float64, key
            np.testing.assert_array_equal(tensor.value, before[key].astype(np.float64))
        else:  # counters and random states keep their integer dtype and identity
            assert tensor is old[key], key
    step(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    assert not np.array_equal(old["1.weight"].value, before["1.weight"])  # the step trains...
    assert not np.array_equal(old["0.running_var"].value, before["0.running_var"])
    for key, value in before.items():  # ... the old parameters, not the new ones
        if value.dtype.kind == "f":
            np.testing.assert_array_equal(model.state()[key], value.astype(np.float64))
    assert model[1].weight.name == "1.weight" and model[0].running_var.name == "0.running_var"


def test_to_keeps_ties_and_a_saved_model_loads_in_its_dtype(tmp_path):
    model = nn.Sequential(nn.Linear(3, 3, rng=0), nn.Tanh(), nn.Linear(3, 3, rng=1))
    model[2].weight = model[0].weight
    model.to("float64")
    assert model[2].weight is model[0].weight and model.ties() == {"2.weight": "0.weight"}
    loaded = gc.load(gc.save(model, tmp_path / "m.graphc"))
    assert all(v.dtype == np.float64 for v in loaded.state().values())
    assert loaded[2].weight is loaded[0].weight
    for key, value in model.state().items():
        np.testing.assert_array_equal(loaded.state()[key], value)
    model.to(np.float32)
    assert gc.load(gc.save(model, tmp_path / "m32.graphc"))[0].weight.dtype == np.float32


def test_to_refuses_a_value_that_does_not_fit_and_changes_nothing():
    model = nn.Sequential(nn.Linear(2, 2, dtype="float64"), nn.Linear(2, 2, dtype="float64"))
    model[1].bias.value = np.array([1.0, 1e300])
    old = dict(model.state_tensors())
    with pytest.raises(gc.ShapeError, match=r"1\.bias.*does not fit in float32"):
        model.to("float32")
    assert all(model.state_tensors()[k] is t for k, t in old.items())
    assert model[0].weight.dtype == np.float64


def test_loading_refuses_a_finite_value_made_infinite_and_writes_nothing():
    model = nn.Sequential(nn.Linear(2, 2, rng=0), nn.BatchNorm1d(2))
    state = {k: v.astype(np.float64) if v.dtype.kind == "f" else v
             for k, v in model.state().items()}
    before = model.state()
    bad = dict(state)
    bad["0.weight"] = state["0.weight"] + 1.0
    bad["1.running_var"] = np.array([1.0, 1e300])
    with pytest.raises(gc.ShapeError, match=r"1\.running_var.*1e\+300.*float32"):
        model.load_state(bad)
    for key, value in model.state().items():  # a failed load changes nothing
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    rounding = dict(state, **{"0.bias": np.array([0.1, 1e-50])})  # rounds, to 0 for 1e-50
    model.load_state(rounding)
    np.testing.assert_array_equal(model[0].bias.value, np.array([0.1, 0.0], np.float32))
    with pytest.raises(gc.ShapeError, match=r"weight.*1e\+300"):
        model[0].weight.value = np.full((2, 2), 1e300)
    infinite = dict(state, **{"0.bias": np.array([np.inf, np.nan])})  # already non-finite: kept
    model.load_state(infinite)
    assert np.isinf(model[0].bias.value[0]) and np.isnan(model[0].bias.value[1])


@pytest.mark.parametrize("build", [lambda i: i + 2**40, lambda i: i * 2**32,
                                   lambda i: i + 2**31, lambda i: i - (2**31 + 1),
                                   lambda i: 2**40 - i, lambda i: gc.where(i > 0, i, 2**40),
                                   lambda i: gc.clip(i, 0, 2**31), lambda i: gc.maximum(i, -2**63)],
                         ids=["add", "mul", "add 2^31", "sub", "rsub", "where", "clip", "maximum"])
def test_a_python_int_the_dtype_cannot_hold_is_refused_as_numpy_does(build):
    """int32 + 2**40 added 0 on both backends (the constant wrapped); NumPy 2 raises
    OverflowError (found by an audit)."""
    i = gc.placeholder("i", (2,), "int32")
    with pytest.raises(OverflowError, match="out of bounds for int32"):
        build(i)
    with pytest.raises(gc.GraphError, match="out of bounds for int32"):
        build(i)


@pytest.mark.parametrize("big", [np.int64(2**40), np.array(2**40), np.int64(-(2**31) - 1)],
                         ids=["np.int64", "0-d array", "below"])
@pytest.mark.parametrize("build", [lambda i, v: i + v, lambda i, v: gc.clip(i, -5, v),
                                   lambda i, v: gc.where(i > 0, i, v), lambda i, v: i ** v],
                         ids=["add", "clip", "where", "pow"])
def test_a_numpy_int_the_dtype_cannot_hold_is_refused_as_a_python_int_is(build, big):
    """A NumPy scalar is weak too (it takes the tensor's dtype), so it is checked as the
    number it holds: np.int64(2**40) + int32 wrapped to 0 and added nothing."""
    i = gc.placeholder("i", (3,), "int32")
    with pytest.raises(OverflowError, match="out of bounds for int32"):
        build(i, big)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_comparing_with_an_int_beyond_the_dtype_answers_as_numpy_2(backend):
    """NumPy 2 compares an integer array with any Python integer exactly (``int32 < 2**40``
    is all true); graphc refused it, and np.int64(2**32 + 1) wrapped to 1 and equalled 1."""
    i = gc.placeholder("i", (3,), "int32")
    j = gc.placeholder("j", (3,), "int64")
    values = np.array([1, 5, -3], np.int32)
    # (each with its answer, as Python's exact integers give it for 1, 5, -3)
    cases = [(lambda a: a < 2**40, [1, 1, 1]), (lambda a: a > np.int64(2**40), [0, 0, 0]),
             (lambda a: gc.equal(a, np.int64(2**32 + 1)), [0, 0, 0]),
             (lambda a: a >= -(2**40), [1, 1, 1]), (lambda a: 2**70 > a, [1, 1, 1]),
             (lambda a: a <= 2**70, [1, 1, 1]), (lambda a: gc.not_equal(a, 2**70), [1, 1, 1]),
             (lambda a: a == -(2**70), [0, 0, 0]), (lambda a: a > -(2**70), [1, 1, 1]),
             (lambda a: a < 2**31 - 1, [1, 1, 1])]
    fn = gc.compile([i, j], [c(i) for c, _ in cases] + [c(j) for c, _ in cases[4:]],
                    backend=backend)
    got = fn(values, values.astype(np.int64))
    want = [w for _, w in cases] + [w for _, w in cases[4:]]
    for g, w in zip(got, want):
        assert g.dtype == bool
        np.testing.assert_array_equal(g, np.array(w, dtype=bool))


def test_a_mask_compared_with_a_huge_integer_answers_as_numpy_2():
    b = gc.placeholder("b", (3,), "bool")
    fn = gc.compile([b], [b < 2**70, b > 2**40, gc.equal(b, -(2**70)), b >= 1])
    got = fn(np.array([True, False, True]))
    for g, w in zip(got, [[1, 1, 1], [0, 0, 0], [0, 0, 0], [1, 0, 1]]):
        np.testing.assert_array_equal(g, np.array(w, dtype=bool))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_python_ints_that_fit_keep_their_values(backend):
    i = gc.placeholder("i", (2,), "int32")
    j = gc.placeholder("j", (2,), "int64")
    f = gc.placeholder("f", (2,), "float32")
    fn = gc.compile([i, j, f], [i + (2**31 - 10) - (2**31 - 10), i - (2**31 - 10) + (2**31 - 10),
                                j + 2**40,
                                f + 2**1000, f * -(2**1000)], backend=backend)
    a = np.array([1, -5], np.int32)
    out = fn(a, a.astype(np.int64), np.ones(2, np.float32))
    np.testing.assert_array_equal(out[0], a)
    np.testing.assert_array_equal(out[1], a)
    np.testing.assert_array_equal(out[2], a.astype(np.int64) + 2**40)
    np.testing.assert_array_equal(out[3], [np.inf, np.inf])  # as NumPy: the float rounds
    np.testing.assert_array_equal(out[4], [-np.inf, -np.inf])
    with pytest.raises(OverflowError, match="too large for any float"):
        f + 2**1024
