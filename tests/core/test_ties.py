"""Tied parameters (one tensor under several keys): state keys as PyTorch's state_dict, files
that record and rebuild the tie, load_state's rules for a tied tensor's keys."""

import json
import zipfile

import numpy as np
import pytest

import graphc as gc
from graphc.io import FormatError

nn = gc.nn
F = gc.nn.functional

X = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
Y = np.array([0, 1, 2, 3, 0])


def tied():
    seq = nn.Sequential(nn.Linear(4, 4, rng=0), nn.Tanh(), nn.Linear(4, 4, rng=1))
    seq[2].weight = seq[0].weight
    return seq


def forward(model, x=X):
    with gc.Graph():
        ph = gc.placeholder("x", ("N", 4))
        return gc.compile([ph], model(ph))(x)


def train_step(model, opt):
    with gc.Graph("train"):
        x = gc.placeholder("x", ("N", 4))
        y = gc.placeholder("y", ("N",), "int64")
        loss = F.cross_entropy(model(x), y)
        return gc.compile([x, y], loss, updates=opt.updates(loss))


def test_state_lists_a_tied_parameter_under_every_key_and_parameters_once():
    seq = tied()
    assert list(seq.state()) == ["0.weight", "0.bias", "2.weight", "2.bias"]  # PyTorch's order
    assert [k for k, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.bias"]
    assert seq.ties() == {"2.weight": "0.weight"}
    assert seq.state_tensors()["2.weight"] is seq.state_tensors()["0.weight"]
    assert seq[2].weight.name == "0.weight"  # the first key names it in graphs
    assert seq.num_parameters() == 16 + 4 + 4
    opt = gc.optim.SGD(seq.parameters(), lr=0.1, momentum=0.9)
    slots = sorted(k for k in opt.state_tensors() if k.endswith("momentum_buffer"))
    assert slots == ["0.momentum_buffer", "1.momentum_buffer", "2.momentum_buffer"]
    names = [t.name for t in opt.state_tensors().values()]
    assert len(names) == len(set(names))  # one slot per parameter, unique names


def test_a_module_used_twice_is_listed_under_both_names(tmp_path):
    shared = nn.Linear(4, 4, rng=0)
    seq = nn.Sequential(shared, nn.Tanh(), shared)
    assert list(seq.state()) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seq.ties() == {"2.weight": "0.weight", "2.bias": "0.bias"}
    assert len(seq.parameters()) == 2
    loaded = gc.load(gc.save(seq, tmp_path / "shared.graphc"))
    assert loaded[2].weight is loaded[0].weight and loaded[2].bias is loaded[0].bias
    np.testing.assert_array_equal(forward(loaded), forward(seq))


def test_a_tied_model_saves_and_loads_with_its_tie(tmp_path):
    seq = tied()
    seq[0].weight.value = np.arange(16, dtype=np.float32).reshape(4, 4) / 10
    path = gc.save(seq, tmp_path / "tied.graphc")
    loaded = gc.load(path)  # was: missing keys ['2.weight']
    assert loaded[2].weight is loaded[0].weight
    assert loaded.ties() == {"2.weight": "0.weight"} and len(loaded.parameters()) == 3
    np.testing.assert_array_equal(loaded[2].weight.value, seq[0].weight.value)
    np.testing.assert_array_equal(forward(loaded), forward(seq))
    # the file records the tie and stores the tensor once
    content = json.loads(zipfile.ZipFile(path).read("content.json"))
    assert content["ties"] == {"2.weight": "0.weight"}
    assert content["state"]["2.weight"] == content["state"]["0.weight"]
    # into a model built by code with the same tie
    other = tied()
    gc.load(path, into=other)
    assert other[2].weight is other[0].weight
    np.testing.assert_array_equal(other[0].weight.value, seq[0].weight.value)
    # an untied model gets the values under both keys
    untied = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
    gc.load(path, into=untied)
    np.testing.assert_array_equal(untied[2].weight.value, seq[0].weight.value)
    assert untied[2].weight is not untied[0].weight


def test_load_state_takes_a_tied_tensor_under_each_key_only_when_the_values_agree():
    seq, src = tied(), tied()
    src[0].weight.value = np.full((4, 4), 0.5, np.float32)
    state = src.state()
    seq.load_state(state)
    np.testing.assert_array_equal(seq[0].weight.value, state["0.weight"])
    only_first = {k: v for k, v in state.items() if k != "2.weight"}
    seq.load_state(only_first)  # one key of the tie is enough, even when strict
    before = seq.state()
    bad = dict(state, **{"2.weight": np.zeros((4, 4), np.float32),
                         "0.bias": np.ones(4, np.float32)})
    with pytest.raises(gc.GraphError, match=r"'0.weight' and '2.weight'.*different values"):
        seq.load_state(bad)
    for key, value in seq.state().items():  # a refused state changes nothing
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    with pytest.raises(gc.GraphError, match=r"missing keys \['0.weight', '2.weight'\]"):
        seq.load_state({k: v for k, v in state.items() if not k.endswith("weight")})
    nan = dict(state)
    nan["0.weight"] = nan["2.weight"] = np.full((4, 4), np.nan, np.float32)
    seq.load_state(nan)  # NaN equals NaN here: the same value under both keys
    assert np.isnan(seq[2].weight.value).all()


def test_a_tie_is_trained_once_and_comes_back_out_of_a_training_checkpoint(tmp_path):
    seq = tied().named("ae")
    opt = gc.optim.Adam(seq.parameters(), lr=0.05)
    step = train_step(seq, opt)
    start = seq[0].weight.value.copy()
    for _ in range(3):
        step(X, Y)
    assert not np.array_equal(seq[2].weight.value, start)
    assert seq[2].weight is seq[0].weight
    gc.save(step, tmp_path / "ckpt.graphc")
    fresh = tied().named("ae")
    gc.load(tmp_path / "ckpt.graphc", into=fresh)  # matched by display names
    for key, value in seq.state().items():
        np.testing.assert_array_equal(fresh.state()[key], value, err_msg=key)
    assert fresh[2].weight is fresh[0].weight
    fresh_step = train_step(fresh, gc.optim.Adam(fresh.parameters(), lr=0.05))
    gc.load(tmp_path / "ckpt.graphc", into=fresh_step)  # the whole step, optimizer included
    np.testing.assert_array_equal(fresh_step(X, Y), step(X, Y))


def test_ties_made_before_the_container_keep_the_first_name():
    a, b = nn.Linear(4, 4, rng=0), nn.Linear(4, 4, rng=1)
    b.weight = a.weight
    seq = nn.Sequential(a, nn.Tanh(), b)
    assert seq[2].weight.name == "0.weight" and seq.ties() == {"2.weight": "0.weight"}
    seq.name = "net"  # renaming relabels in one pass: still the first place
    assert seq[2].weight.name == "net.0.weight"


def test_a_file_with_a_bad_tie_is_refused(tmp_path):
    path = gc.save(tied(), tmp_path / "t.graphc")
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for ties in ({"2.weight": "nope"}, {"2.weight": "2.weight"}, ["2.weight"],
                 {"2.weight": "0.bias"}, {"2.weight": "0.weight", "0.weight": "2.bias"}):
        content = json.loads(members["content.json"])
        content["ties"] = ties
        bad = tmp_path / "bad.graphc"
        with zipfile.ZipFile(bad, "w") as z:
            for name, data in members.items():
                z.writestr(name, json.dumps(content) if name == "content.json" else data)
        with pytest.raises(FormatError):
            gc.load(bad)
