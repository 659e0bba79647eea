"""gc.save / gc.load: round trips of every kind, and clear errors for bad files."""

import io
import json
import os
import re
import zipfile

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.io import FormatError

nn = gc.nn
F = gc.nn.functional


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, rng=0), nn.BatchNorm2d(3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3, rng=1),
                         nn.Linear(48, 4, rng=2))


def forward(model, x):
    with gc.Graph():
        ph = gc.placeholder("x", ("N", 1, 8, 8))
        return gc.compile([ph], model(ph))(x)


X = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float32)
Y = np.array([0, 1, 2, 3, 0, 1])


def train_step(model, opt):
    with gc.Graph("train"):
        x = gc.placeholder("x", ("N", 1, 8, 8))
        y = gc.placeholder("y", ("N",), "int64")
        loss = F.cross_entropy(model(x), y)
        return gc.compile([x, y], loss, updates=opt.updates(loss))


def normalized(graph) -> list[str]:
    """The printed program with node ids replaced by positions (ids differ between graphs)."""
    lines = str(graph).splitlines()[1:]
    ids = {m: f"%{i}" for i, m in enumerate(re.findall(r"^\s*(%\d+) =", "\n".join(lines), re.M))}
    return [re.sub(r"%\d+", lambda m: ids.get(m.group(0), m.group(0)), line) for line in lines]


def test_builtin_module_is_rebuilt(tmp_path):
    model = small_cnn().eval()
    model[1].running_mean.value = np.array([0.1, 0.2, 0.3], np.float32)
    gc.save(model, tmp_path / "m.graphc")
    loaded = gc.load(tmp_path / "m.graphc")
    assert isinstance(loaded, nn.Sequential) and repr(loaded) == repr(model)
    assert not loaded.training and not loaded[5].training
    for key, value in model.state().items():
        np.testing.assert_array_equal(loaded.state()[key], value, err_msg=key)
    np.testing.assert_array_equal(forward(loaded, X), forward(model, X))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = small_cnn()

    def forward(self, x):
        return self.body(x)


def test_user_module_loads_into_an_instance(tmp_path):
    model = Net()
    gc.save(model, tmp_path / "net.graphc")
    with pytest.raises(FormatError, match=r"into=model"):
        gc.load(tmp_path / "net.graphc")
    fresh = Net()
    fresh.body[6].weight.value = np.zeros((48, 4), np.float32)
    assert gc.load(tmp_path / "net.graphc", into=fresh) is fresh
    np.testing.assert_array_equal(fresh.body[6].weight.value, model.body[6].weight.value)
    with pytest.raises(FormatError, match="cannot load it into a SGD"):
        gc.load(tmp_path / "net.graphc", into=gc.optim.SGD(fresh.parameters(), lr=0.1))
    other = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(FormatError, match="missing keys"):
        gc.load(tmp_path / "net.graphc", into=other)


def test_optimizer_state_round_trip(tmp_path):
    model = small_cnn()
    opt = gc.optim.Adam(model.parameters(), lr=0.01)
    step = train_step(model, opt)
    for _ in range(3):
        step(X, Y)
    gc.save(opt, tmp_path / "opt.graphc")
    state = gc.load(tmp_path / "opt.graphc")
    assert state["step"] == 3 and set(state) == set(opt.state())
    opt2 = gc.optim.Adam(small_cnn().parameters(), lr=0.01)
    gc.load(tmp_path / "opt.graphc", into=opt2)
    for key, value in opt.state().items():
        np.testing.assert_array_equal(opt2.state()[key], value)


def test_function_round_trip_runs_the_same_training(tmp_path):
    model = small_cnn()
    step = train_step(model, gc.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    step(X, Y)
    gc.save(step, tmp_path / "step.graphc")
    loaded = gc.load(tmp_path / "step.graphc")
    assert normalized(loaded.graph) == normalized(step.graph)
    assert loaded.input_names == ["x", "y"]
    # the loaded function owns copies of the parameters: both continue identically
    for _ in range(3):
        assert float(loaded(X, Y)) == float(step(X, Y))


def test_function_checkpoint_restores_parameters(tmp_path):
    model = small_cnn()
    step = train_step(model, gc.optim.Adam(model.parameters(), lr=0.05))
    step(X, Y)
    gc.save(step, tmp_path / "ckpt.graphc")
    first = [float(step(X, Y)) for _ in range(3)]
    gc.load(tmp_path / "ckpt.graphc", into=step)
    assert [float(step(X, Y)) for _ in range(3)] == first
    with gc.Graph():
        x = gc.placeholder("x", (2,))
        other = gc.compile([x], x * gc.parameter("w", np.ones(2, np.float32)))
    with pytest.raises(FormatError, match="do not match"):
        gc.load(tmp_path / "ckpt.graphc", into=other)


def test_graph_round_trip_keeps_symbolic_shapes_and_expressions(tmp_path):
    with gc.Graph("g") as g:
        x = gc.placeholder("x", ("N", 2, "H", "W"))
        w = gc.parameter("w", np.ones((3, 2, 3, 3), np.float32))
        y = F.conv2d(x, w, stride=2, padding=1)
        y = F.max_pool2d(y, 2)
        y = gc.ops.elemwise(gc.ops.expr.sigmoid(gc.ops.expr.sym_input(0)) * 2 - 1, [y])
        out = gc.leaky_relu(y[:, :, 1:, :], 0.2).sum(axis=(1, 2, 3))
        F.dropout(out, 0.5, training=True, seed=3)
    gc.save(g, tmp_path / "g.graphc")
    loaded = gc.load(tmp_path / "g.graphc")
    assert normalized(loaded) == normalized(g)
    assert len(loaded.default_updates) == 1
    originals, rebuilt = g.nodes, loaded.nodes
    assert len(originals) == len(rebuilt)
    for a, b in zip(originals, rebuilt):
        assert a.op is b.op and a.type == b.type and a.scope == b.scope
        assert {k: v for k, v in a.attrs.items() if k != "storage"} == \
               {k: v for k, v in b.attrs.items() if k != "storage"}
    conv_shape = next(n for n in rebuilt if n.op.name == "conv").shape
    assert isinstance(conv_shape[2], sympy.Expr) and conv_shape[2].free_symbols


def test_tensors_and_arrays(tmp_path):
    a = gc.placeholder("a", (3,))
    b = gc.exp(a) * 2
    gc.save([b], tmp_path / "t.graphc")
    g = gc.load(tmp_path / "t.graphc")
    assert [n.op.name for n in g.outputs] == ["mul"]
    fn = gc.compile([gc.Tensor(g.nodes[0], g)], gc.Tensor(g.outputs[0], g))
    np.testing.assert_allclose(fn(np.zeros(3)), [2, 2, 2])
    gc.save({"w": np.arange(3), "s": np.float64(2.5)}, tmp_path / "a.graphc",
            metadata={"epoch": 4})
    arrays = gc.load(tmp_path / "a.graphc")
    assert arrays["w"].tolist() == [0, 1, 2] and arrays["s"] == 2.5 and arrays["s"].shape == ()
    assert gc.io.read_metadata(tmp_path / "a.graphc") == {"epoch": 4}


# -- bad files ----------------------------------------------------------------------------------


def write_zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def good_members(tmp_path) -> dict:
    gc.save(small_cnn(), tmp_path / "good.graphc")
    with zipfile.ZipFile(tmp_path / "good.graphc") as z:
        return {n: z.read(n) for n in z.namelist()}


def test_corrupt_truncated_and_foreign_files(tmp_path):
    good = tmp_path / "good.graphc"
    gc.save(small_cnn(), good)
    data = good.read_bytes()
    cases = {
        "random.graphc": os.urandom(1000),
        "empty.graphc": b"",
        "half.graphc": data[: len(data) // 2],
        "text.graphc": b"hello, not a model\n",
        "flipped.graphc": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FormatError):
            gc.load(tmp_path / name)
    write_zip(tmp_path / "foreign.zip", {"readme.txt": "hi"})
    with pytest.raises(FormatError, match="not a graphc file"):
        gc.load(tmp_path / "foreign.zip")


def test_manifest_checks(tmp_path):
    members = good_members(tmp_path)
    manifest = json.loads(members["manifest.json"])
    assert manifest["version"] == gc.io.VERSION == 2  # (version 1 files still load)
    for change, message in [({"format": "keras"}, "not a graphc file"),
                            ({"version": 99}, "version 99; this graphc reads versions 1, 2"),
                            ({"kind": "pickle"}, "unknown kind")]:
        write_zip(tmp_path / "bad.graphc", {**members,
                                             "manifest.json": json.dumps({**manifest, **change})})
        with pytest.raises(FormatError, match=message):
            gc.load(tmp_path / "bad.graphc")


class Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_arrays_are_refused_and_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    members = good_members(tmp_path)
    buf = io.BytesIO()
    np.savez(buf, a0=np.array([Evil()], dtype=object))
    write_zip(tmp_path / "evil.graphc", {**members, "arrays.npz": buf.getvalue()})
    with pytest.raises(FormatError, match="corrupt"):
        gc.load(tmp_path / "evil.graphc")
    assert not (tmp_path / "pwned").exists()


def function_members(tmp_path) -> dict:
    with gc.Graph():
        x = gc.placeholder("x", ("N", 2))
        fn = gc.compile([x], gc.tanh(x * 2.0))
    gc.save(fn, tmp_path / "f.graphc")
    with zipfile.ZipFile(tmp_path / "f.graphc") as z:
        return {n: z.read(n) for n in z.namelist()}


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["graph"]["nodes"][-1].update(op="os.system"), "unknown op 'os.system'"),
    (lambda c: c["graph"]["nodes"][-1].update(inputs=[99]), "bad input index"),
    (lambda c: c["graph"]["nodes"][0]["attrs"].update(
        shape={"tuple": [{"sympy": {"t": "Function", "args": []}}, 2]}),
     "unsupported sympy node type"),
    (lambda c: c["graph"]["nodes"][0]["attrs"].update(dtype={"dtype": "complex128"}),
     "not supported"),
    (lambda c: c["graph"]["nodes"][0]["attrs"].update(dtype={"dtype": "int64"}),
     "does not rebuild"),
    (lambda c: c.pop("graph"), "corrupt|graph"),
])
def test_bad_graph_content_is_a_format_error(tmp_path, edit, message):
    members = function_members(tmp_path)
    content = json.loads(members["content.json"])
    edit(content)
    write_zip(tmp_path / "bad.graphc", {**members, "content.json": json.dumps(content)})
    with pytest.raises(FormatError, match=message):
        gc.load(tmp_path / "bad.graphc")


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.graphc"
    gc.save(small_cnn(), path)
    before = path.read_bytes()

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        gc.save(nn.Linear(3, 3), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.graphc"]  # no temp file left
    with pytest.raises(gc.GraphError, match="cannot write a int"):
        gc.save(3, path)


def test_saved_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = gc.save({"a": np.zeros(2)}, tmp_path / "a.graphc")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    path.chmod(0o640)
    gc.save({"a": np.ones(2)}, path)
    assert path.stat().st_mode & 0o777 == 0o640  # an existing file keeps its mode


def test_a_list_of_parameters_round_trips(tmp_path):
    model = small_cnn()
    gc.save(model.parameters(), tmp_path / "p.graphc")
    values = gc.load(tmp_path / "p.graphc")
    assert list(values) == [n for n, _ in model.named_parameters()]
    other = small_cnn()
    other[0].weight.value = np.zeros((3, 1, 3, 3), np.float32)
    gc.load(tmp_path / "p.graphc", into=other.parameters())
    np.testing.assert_array_equal(other[0].weight.value, model[0].weight.value)
    with pytest.raises(FormatError, match="do not match"):
        gc.load(tmp_path / "p.graphc", into=other.parameters()[:2])


def test_a_model_and_its_optimizer_come_out_of_a_training_checkpoint(tmp_path):
    model = small_cnn().named("cnn")
    opt = gc.optim.Adam(model.parameters(), lr=0.05)
    step = train_step(model, opt)
    for _ in range(2):
        step(X, Y)
    gc.save(step, tmp_path / "ckpt.graphc")
    fresh = small_cnn().named("cnn")
    fresh_opt = gc.optim.Adam(fresh.parameters(), lr=0.05)
    gc.load(tmp_path / "ckpt.graphc", into=fresh)
    gc.load(tmp_path / "ckpt.graphc", into=fresh_opt)
    for key, value in model.state().items():  # weights, running statistics, dropout state
        np.testing.assert_array_equal(fresh.state()[key], value, err_msg=key)
    assert fresh_opt.state()["step"] == 2
    np.testing.assert_array_equal(fresh_opt.state()["0.exp_avg"], opt.state()["0.exp_avg"])
    with pytest.raises(FormatError, match="no parameters named"):
        gc.load(tmp_path / "ckpt.graphc", into=small_cnn().named("other"))


def test_two_models_with_the_same_names_are_refused_not_confused(tmp_path):
    a, b = nn.Sequential(nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 4))
    with gc.Graph():
        x = gc.placeholder("x", ("N", 4))
        gc.save(gc.compile([x], b(a(x))), tmp_path / "step.graphc")
    with pytest.raises(FormatError, match="several parameters named"):
        gc.load(tmp_path / "step.graphc", into=nn.Sequential(nn.Linear(4, 4)))


def test_extra_arrays_are_kept_beside_the_object(tmp_path):
    model = small_cnn()
    extra = {"best.0.weight": np.arange(6.0).reshape(2, 3), "flag": np.array(True)}
    path = gc.save(model, tmp_path / "m.graphc", metadata={"epoch": 2}, extra_arrays=extra)
    got = gc.io.read_extra_arrays(path)
    assert set(got) == set(extra)
    for key, value in extra.items():
        np.testing.assert_array_equal(got[key], value)
        assert got[key].dtype == value.dtype
    assert gc.io.read_extra_arrays(gc.save(model, tmp_path / "plain.graphc")) == {}
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    content = json.loads(members["content.json"])
    content["extra_arrays"]["flag"] = "a999"  # a missing array
    bad = tmp_path / "bad.graphc"
    with zipfile.ZipFile(bad, "w") as z:
        for name, data in members.items():
            z.writestr(name, json.dumps(content) if name == "content.json" else data)
    with pytest.raises(FormatError, match="extra_arrays"):
        gc.io.read_extra_arrays(bad)
    np.testing.assert_array_equal(gc.load(bad).state()["0.weight"], model.state()["0.weight"])


def test_fused_comparisons_of_piecewise_values_round_trip(tmp_path):
    """A fused comparison is a sympy Boolean, and a Piecewise (relu, maximum) inside a
    condition must be rebuilt as it was saved, not folded into ITE (which no backend
    lowers): warmup(cosine(...))'s rate, a ReLU6, a mask of a ReLU all save and load, and
    so does a training step using the schedule."""
    from graphc.optim import schedules as S

    x = gc.placeholder("x", (5,), "float64")
    xs = np.array([-1.0, 0.25, 0.5, 2.0, np.nan])
    for out in (gc.relu(x) > 0.5, gc.minimum(gc.relu(x), 1.0),
                gc.where(gc.maximum(x, 0.0) < 1.0, x, 0.0 * x)):
        fn = gc.compile([x], out)
        gc.save(fn, tmp_path / "f.graphc")
        loaded = gc.load(tmp_path / "f.graphc")
        np.testing.assert_array_equal(loaded(xs), fn(xs))
    with gc.Graph():
        xb = gc.placeholder("xb", ("N", 3))
        w = gc.parameter("w", np.ones((3, 1), np.float32))
        loss = gc.mean(gc.square(xb @ w))
        opt = gc.optim.SGD([w], lr=S.warmup(S.cosine(0.1, 90, 0.001), 10))
        step = gc.compile([xb], loss, updates=opt.updates(loss))
    batch = np.ones((4, 3), np.float32)
    for _ in range(3):
        step(batch)
    gc.save(step, tmp_path / "step.graphc")
    again = gc.load(tmp_path / "step.graphc")
    assert again(batch) == step(batch)
