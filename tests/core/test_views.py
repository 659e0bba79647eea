"""The NumPy backend's view declarations are facts, not guesses, and the copies follow them.

Which outputs and new parameter values may share memory with a parameter or an input is
decided at compile time (backends/numpy/lowering.py ``views``, followed back to the leaves
by passes/memory.py ``value_roots`` and ``leaving_copies``): the NumPy backend's generated
step copies exactly those before it writes the parameters, and Function does the same for
a backend that leaves the updates to its caller. That is sound only if every array the
generated program returns as a view of a leaf is declared: the first test runs every op
case and checks each computed value against the leaves it actually shares memory with.
"""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest

import graphc as gc
from graphc.backends.base import Executable
from graphc.backends.numpy import NumpyExecutable
from graphc.function import Function, build_program
from graphc.passes.memory import value_roots
from tests.helpers import build_case, case_arrays
from tests.op_cases import CASES

LEAVES = ("placeholder", "parameter", "constant")


def _locals_of_step(fn, arrays) -> dict:
    """Every local variable of the generated step at its return (optimize=False: no memory
    plan, so no temporaries are deleted)."""
    exe = fn._exe
    seen: dict = {}

    def profile(frame, event, arg):
        if event == "return" and frame.f_code is exe._step.__code__:
            seen.update(frame.f_locals)

    sys.setprofile(profile)
    try:
        fn(*arrays)
    finally:
        sys.setprofile(None)
    return seen


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_view_of_a_leaf_is_declared(case):
    arrays = case_arrays(case)
    graph, phs, out = build_case(case, arrays)
    with graph:
        fn = gc.compile(phs, out, optimize=False)
    local = _locals_of_step(fn, arrays)
    lines = fn._exe.source.splitlines()
    var_of = {node.uid: lines[line - 1].split("=", 1)[0].strip()
              for line, node in fn._exe._line_nodes.items()}
    roots = value_roots(fn.graph, fn._exe.views)
    index = {n.uid: k for k, n in enumerate(fn.graph.inputs)}
    leaves = []
    for n in fn.graph.nodes:
        if n.op.name == "placeholder":
            leaves.append((("input", index[n.uid]), local[var_of[n.uid]]))
        elif n.op.name == "parameter":
            leaves.append((("parameter", n.attrs["storage"].uid), n.attrs["storage"].value))
        elif n.op.name == "constant":
            leaves.append((("constant", n.uid), local[var_of[n.uid]]))
    for n in fn.graph.nodes:
        value = local.get(var_of[n.uid])
        if n.op.name in LEAVES or not isinstance(value, np.ndarray):
            continue
        for key, leaf in leaves:
            if isinstance(leaf, np.ndarray) and np.shares_memory(value, leaf):
                assert key in roots[n.uid], (
                    f"{case.name}: the value of {n.op.name} shares memory with {key}, but "
                    f"its lowering declares views {fn._exe.views(n)}")


def test_views_are_followed_through_chains():
    W = gc.parameter("W", np.arange(6, dtype=np.float32).reshape(2, 3))
    x = gc.placeholder("x", (2, 3))
    fn = gc.compile([x], [W.T.reshape(6), x * 1, (x * 2).reshape(6), W * 1])
    flat, same, fresh, times1 = fn(np.ones((2, 3), np.float32))
    roots = value_roots(fn.graph, fn._exe.views)
    by_output = [roots[n.uid] for n in fn.graph.outputs]
    assert by_output[0] == {("parameter", W.node.attrs["storage"].uid)}
    assert by_output[1] == {("input", 0)}
    assert by_output[2] == set()  # a view of a fresh array: nothing to copy
    assert fn._exe.copies[0] == [True, True, False, True]
    flat[0] = 99.0  # the caller owns its outputs
    assert W.value[0, 0] == 0.0


def test_new_values_that_view_an_input_fed_a_parameter_are_taken_first():
    """fn(a.value) feeds a parameter's memory as an input; {b: x, a: a * 3} must still read
    x's old value, so a new value that views an input is copied before any write."""
    a = gc.parameter("a", np.array([1.0, 2.0], np.float32))
    b = gc.parameter("b", np.zeros(2, np.float32))
    x = gc.placeholder("x", (2,))
    fn = gc.compile([x], x.sum(), updates={a: a * 3, b: x.reshape(2)})
    assert fn._exe.copies[1] == [False, True]
    fn(a.value)
    np.testing.assert_array_equal(a.value, [3, 6])
    np.testing.assert_array_equal(b.value, [1, 2])


def test_deep_adam_step_copies_nothing_it_made_itself():
    """Per-call work grows with the values, not values x parameters: in an Adam step every
    new value is a fresh array, so nothing is copied, and the loss output is fresh too."""
    rng = np.random.default_rng(0)
    x = gc.placeholder("x", ("N", 8))
    h, params = x, []
    for i in range(6):
        W = gc.parameter(f"W{i}", rng.normal(size=(8, 8)).astype(np.float32) * 0.3)
        params.append(W)
        h = gc.tanh(h @ W)
    loss = (h * h).mean()
    opt = gc.optim.Adam(params, lr=1e-3)
    fn = gc.compile([x], loss, updates=opt.updates(loss))
    assert not any(fn._exe.copies[1]) and fn._exe.copies[0] == [False]
    first = fn(rng.normal(size=(4, 8)).astype(np.float32))
    assert np.isfinite(first)


class _CallerApplies(Executable):
    """A backend's executable that returns the new values and leaves the writes to Function
    (the Executable contract's default): the NumPy backend's step, with the updates turned
    into extra outputs."""

    def __init__(self, program) -> None:
        returning = copy.copy(program)
        returning.outputs = [*program.outputs, *(v for _, v in program.updates)]
        returning.updates = []
        self._inner = NumpyExecutable(returning)
        self._count = len(program.outputs)

    def views(self, node):
        return self._inner.views(node)

    def run(self, inputs, binding, key):
        values, _ = self._inner.run(inputs, binding, key)
        return values[:self._count], values[self._count:]


def _caller_applies(inputs, outputs, updates):
    program, single = build_program(inputs, outputs, updates)
    return Function(program, _CallerApplies(program), single, "numpy")


@pytest.mark.parametrize("applies", ["backend", "caller"])
def test_a_failed_call_applies_no_update_with_static_aliasing(applies):
    """{a: b, b: a} swaps, and a call that fails applies no update, whatever the aliasing
    plan copies: the NumPy backend's step writing the parameters itself, and Function
    writing the new values an executable returns."""
    a = gc.parameter("a", np.array([1.0, 2.0], np.float32))
    b = gc.parameter("b", np.array([3.0, 4.0], np.float32))
    x = gc.placeholder("x", ("N",))
    make = gc.compile if applies == "backend" else _caller_applies
    fn = make([x], x.sum(), {a: b, b: a})
    copies = fn._exe.copies if applies == "backend" else (fn._copy_outputs, fn._copy_news)
    assert fn._native_updates == (applies == "backend")
    assert copies == ([False], [True, True])
    assert fn(np.ones(3, np.float32)) == 3.0
    np.testing.assert_array_equal(a.value, [3, 4])
    np.testing.assert_array_equal(b.value, [1, 2])
    with pytest.raises(gc.ShapeError):
        fn(np.ones((3, 2), np.float32))
    np.testing.assert_array_equal(a.value, [3, 4])
    np.testing.assert_array_equal(b.value, [1, 2])


def test_a_caller_applied_step_copies_outputs_that_view_a_parameter():
    W = gc.parameter("W", np.arange(6, dtype=np.float32).reshape(2, 3))
    x = gc.placeholder("x", (2, 3))
    fn = _caller_applies([x], [W.T.reshape(6), x * 2], {W: W + x})
    assert fn._copy_outputs == [True, False] and fn._copy_news == [False]
    flat, _ = fn(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(flat, np.arange(6, dtype=np.float32).reshape(2, 3).T.ravel())
    np.testing.assert_array_equal(W.value, np.arange(1, 7, dtype=np.float32).reshape(2, 3))


def _written_into(fn) -> list[bool]:
    """Which updates the NumPy step writes by its new value's last operation (``out=``)."""
    tail = fn.source.split("nothing below can fail")[1]
    return [f"out=_targets[{k}])" in tail for k in range(len(fn._program.updates))]


@pytest.mark.parametrize("optimizer", ["SGD", "momentum", "Adam"])
def test_parameters_take_their_new_values_last_operation_bit_for_bit(optimizer, monkeypatch):
    """Parameters (and optimizer states whose new value nothing else reads) are written by
    the new value's last ufunc with ``out=`` (no temporary, no copy); three steps give the
    same bits as every parameter written by a copy of its new value."""
    import graphc.backends.numpy as NB

    written_into = NB._written_into

    def run(into: bool):
        monkeypatch.setattr(NB, "_written_into", written_into if into else lambda *a: {})
        rng = np.random.default_rng(1)
        x = gc.placeholder("x", ("N", 128))
        W = gc.parameter("W", rng.normal(size=(128, 128)).astype(np.float32) * 0.1)
        V = gc.parameter("V", rng.normal(size=(128, 4)).astype(np.float32) * 0.1)
        h = gc.tanh(x @ W) @ V
        loss = (h * h).mean()
        opt = {"SGD": lambda: gc.optim.SGD([W, V], lr=0.1),
               "momentum": lambda: gc.optim.SGD([W, V], lr=0.1, momentum=0.9),
               "Adam": lambda: gc.optim.Adam([W, V], lr=1e-2)}[optimizer]()
        fn = gc.compile([x], loss, updates=opt.updates(loss), backend="numpy")
        losses = [fn(rng.normal(size=(16, 128)).astype(np.float32)) for _ in range(3)]
        return fn, losses, W.value.copy(), V.value.copy()

    fn, losses, W, V = run(True)
    names = [p.name for p, _ in fn._program.updates]
    written = dict(zip(names, _written_into(fn)))
    assert written["W"] and written["V"]  # (a momentum buffer read twice keeps its copy)
    plain, plain_losses, W0, V0 = run(False)
    assert not any(_written_into(plain))
    assert [float(v) for v in losses] == [float(v) for v in plain_losses]
    assert W.tobytes() == W0.tobytes() and V.tobytes() == V0.tobytes()


def test_a_new_value_is_written_into_its_parameter_only_where_its_operands_are_safe():
    """Updates apply at once: a new value whose last operation would read another
    parameter written before it in the tail ({a: a + b, b: b * 2}), read an input that may
    be a parameter's array (fn(c.value)), or that is also an output keeps its copy; the rest
    are written with out=. With check_finite nothing is (the checks come first)."""
    a = gc.parameter("a", np.array([1.0, 2.0], np.float32))
    b = gc.parameter("b", np.array([3.0, 4.0], np.float32))
    c = gc.parameter("c", np.array([5.0, 6.0], np.float32))
    d = gc.parameter("d", np.array([7.0, 8.0], np.float32))
    x = gc.placeholder("x", (2,))
    shown = d * 0.5
    updates = {a: a + b, b: b * 2.0, c: c - x, d: shown}
    fn = gc.compile([x], [x.sum(), shown], updates=updates, backend="numpy")
    assert _written_into(fn) == [False, True, False, False]
    total, half = fn(c.value)
    assert total == 11.0
    np.testing.assert_array_equal(half, [3.5, 4.0])
    np.testing.assert_array_equal(a.value, [4, 6])
    np.testing.assert_array_equal(b.value, [6, 8])
    np.testing.assert_array_equal(c.value, [0, 0])
    np.testing.assert_array_equal(d.value, [3.5, 4.0])
    # the same updates with operands the body computes: every one is written into
    # (d's last operation reads two values computed above: the line keeps both; e's reads
    # only its own parameter: the line keeps nothing)
    e = gc.parameter("e", np.array([1.0, -2.0], np.float32))
    fn = gc.compile([x], x.sum(), updates={a: a + b * 0.5, b: b * 2.0, c: c - x * 0.5,
                                           d: b * 0.5 + x * 0.25, e: -e}, backend="numpy")
    assert _written_into(fn) == [True, True, True, True, True]
    fn(c.value)
    np.testing.assert_array_equal(e.value, [-1, 2])
    np.testing.assert_array_equal(a.value, [7, 10])
    np.testing.assert_array_equal(b.value, [12, 16])
    np.testing.assert_array_equal(c.value, [0, 0])
    np.testing.assert_array_equal(d.value, [3, 4])  # 0.5 * b + 0.25 * x, x = c = 0
    checked = gc.compile([x], x.sum(), updates={b: b * 2.0}, backend="numpy",
                         backend_options={"check_finite": True})
    assert _written_into(checked) == [False]


def test_a_failed_call_writes_no_parameter_computed_into():
    """The out= writes are the step's last lines: a label out of range raises before any."""
    W = gc.parameter("W", np.ones((3, 4), np.float32))
    x, y = gc.placeholder("x", ("N", 3)), gc.placeholder("y", ("N",), "int64")
    loss = gc.nn.functional.cross_entropy(x @ W, y)
    fn = gc.compile([x, y], loss, updates=gc.optim.SGD([W], lr=0.5).updates(loss),
                    backend="numpy")
    assert _written_into(fn)[[p.name for p, _ in fn._program.updates].index("W")]
    with pytest.raises(gc.BackendError):
        fn(np.ones((2, 3), np.float32), np.array([0, 9]))
    np.testing.assert_array_equal(W.value, np.ones((3, 4), np.float32))
    fn(np.ones((2, 3), np.float32), np.array([0, 3]))
    assert not np.array_equal(W.value, np.ones((3, 4), np.float32))


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_the_outputs_of_one_call_are_independent_arrays(backend):
    """A value listed twice, its transpose, a slice and a reshape of it, and views of an
    input and a parameter: each output is an array of its own, so writing into one changes
    no other and nothing the step keeps (the NumPy backend returned one array object twice
    and views of each other)."""
    x = gc.placeholder("x", ("N", 3))
    W = gc.parameter("W", np.eye(3, dtype=np.float32))
    h = gc.tanh(x @ W)
    outs = [h, h, h.T, h[:, 1:3], h.reshape((-1,)), x.T, W[0], h * 2.0]
    fn = gc.compile([x], outs, backend=backend)
    data = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    got = fn(data)
    want = [np.array(o) for o in got]
    for k, out in enumerate(got):
        others = [o for j, o in enumerate(got) if j != k]
        assert not any(np.shares_memory(out, o) for o in others), k
        out[...] = -7.0
        for j, o in enumerate(got):
            if j > k:
                np.testing.assert_array_equal(o, want[j])
    np.testing.assert_array_equal(W.value, np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(data, np.arange(6, dtype=np.float32).reshape(2, 3) / 10)
    for again, expected in zip(fn(data), want):
        np.testing.assert_array_equal(again, expected)
