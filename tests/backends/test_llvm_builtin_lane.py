"""The builtin lane (backends/llvm/builtin_lane.py): a training loop's repeated call checked,
bound and run in native code. It must serve exactly the arrays the Python lane served and
answer "not this form" to every other, without running the step or writing an address."""

import numpy as np
import pytest

import graphc as gc
from graphc.backends.llvm import builtin_lane
from graphc.backends.llvm.builtin_lane import (
    FAILED,
    NOT_THIS_FORM,
    RAN,
    LaneRecord,
    array_fields_as_expected,
    native_lane,
)


def _step(seed=0):
    """An SGD step of x (N, 5) and integer ids (N,) that gather rows of E; `unused` is an
    input the step never reads."""
    rng = np.random.default_rng(seed)
    x = gc.placeholder("x", ("N", 5))
    ids = gc.placeholder("ids", ("N",), dtype="int64")
    unused = gc.placeholder("unused", (2,))
    W = gc.parameter("W", rng.standard_normal((5, 3)).astype(np.float32))
    E = gc.parameter("E", rng.standard_normal((4, 3)).astype(np.float32))
    loss = gc.mean(gc.square(gc.tanh(x @ W) + gc.take(E, ids)))
    fn = gc.compile([x, ids, unused], loss, updates={
        W: W - 0.5 * gc.grad(loss, W), E: E - 0.5 * gc.grad(loss, E)}, backend="llvm")
    return fn, W, E


def _arrays(n=4):
    return [np.ones((n, 5), np.float32), np.arange(n, dtype=np.int64) % 4,
            np.zeros(2, np.float32)]


def _native(fn, arrays):
    fn(*arrays)
    fn(*arrays)  # the second call of these sizes makes the lane gc.Function keeps
    assert fn._lane is not None and _is_builtin(fn._lane.step), "no builtin lane was made"
    return native_lane(fn._lane.step.__self__.record)


def _is_builtin(step) -> bool:
    return type(step).__name__ == "builtin_function_or_method"


def test_numpy_arrays_are_laid_out_as_the_lane_reads_them():
    assert array_fields_as_expected()


def test_the_lane_runs_the_step_and_gives_what_the_full_path_gives():
    fn, W, E = _step()
    ref, W_ref, E_ref = _step()
    ref._again = False  # every call the full way
    arrays = _arrays()
    for _ in range(5):
        np.testing.assert_array_equal(fn(*arrays), ref(*arrays))
    np.testing.assert_array_equal(W.value, W_ref.value)
    np.testing.assert_array_equal(E.value, E_ref.value)
    native = _native(fn, arrays)
    assert native(*arrays) == RAN


def _other_forms(arrays):
    x, ids, unused = arrays
    wide = np.ones((4, 10), np.float32)
    yield "float64", [x.astype(np.float64), ids, unused]
    yield "int32 ids", [x, ids.astype(np.int32), unused]
    yield "another batch", [np.ones((3, 5), np.float32), ids[:3].copy(), unused]
    yield "another rank", [x.reshape(4, 5, 1), ids, unused]
    yield "not contiguous", [wide[:, ::2], ids, unused]
    yield "Fortran order", [np.asfortranarray(np.ones((4, 5), np.float32)), ids, unused]
    yield "a subclass", [x.view(np.matrix), ids, unused]
    yield "a list", [x.tolist(), ids, unused]
    yield "an unused input's shape", [x, ids, np.zeros(3, np.float32)]
    yield "byte-swapped", [x.astype(x.dtype.newbyteorder()), ids, unused]
    yield "too few", [x, ids]
    yield "too many", [x, ids, unused, unused]


def test_the_lane_refuses_every_other_form_without_running_the_step():
    fn, W, E = _step()
    arrays = _arrays()
    native = _native(fn, arrays)
    table = fn._exe._recent[1].table
    for what, others in _other_forms(arrays):
        before_table, before_w, before_e = table.copy(), W.value, E.value
        assert native(*others) == NOT_THIS_FORM, what
        np.testing.assert_array_equal(W.value, before_w, err_msg=what)
        np.testing.assert_array_equal(E.value, before_e, err_msg=what)
        # an address may have been written before the mismatch was seen, but only into an
        # input's slot, which every call writes again
        inputs = {slot for slot, _ in fn._exe._inputs}
        changed = set(np.flatnonzero(table != before_table).tolist())
        assert changed <= inputs, what


def test_gc_function_serves_other_forms_the_full_way():
    fn, W, E = _step()
    ref, W_ref, E_ref = _step()
    ref._again = False
    arrays = _arrays()
    fn(*arrays)
    ref(*arrays)
    for what, others in _other_forms(arrays):
        if what in ("too few", "too many", "a list", "an unused input's shape", "another rank"):
            continue  # errors or conversions: tests/core/test_function.py
        for args in (arrays, others, arrays, arrays):
            np.testing.assert_array_equal(fn(*args), ref(*args), err_msg=what)
        np.testing.assert_array_equal(W.value, W_ref.value, err_msg=what)


def test_a_failed_step_answers_failed_and_gc_function_raises():
    fn, W, E = _step()
    arrays = _arrays()
    native = _native(fn, arrays)
    bad = [arrays[0], np.array([0, 1, 2, 7], np.int64), arrays[2]]
    before_w, before_e = W.value, E.value
    assert native(*bad) == FAILED
    with pytest.raises(gc.BackendError, match="no parameter was updated"):
        fn(*bad)
    np.testing.assert_array_equal(W.value, before_w)
    np.testing.assert_array_equal(E.value, before_e)
    fn(*arrays)  # and the next good call runs
    assert not np.array_equal(W.value, before_w)


def test_without_the_builtin_the_python_lane_serves_the_same(monkeypatch):
    """Where NumPy's arrays are not laid out as the builtin reads them, the lane is Python
    around the ctypes call, with the same answers."""
    monkeypatch.setattr(builtin_lane, "_lane_function", lambda: None)
    fn, W, E = _step()
    ref, W_ref, E_ref = _step()
    ref._again = False
    arrays = _arrays()
    for _ in range(3):
        np.testing.assert_array_equal(fn(*arrays), ref(*arrays))
    assert fn._lane is not None and not _is_builtin(fn._lane.step)
    for what, others in _other_forms(arrays):
        if what == "another batch":
            np.testing.assert_array_equal(fn(*others), ref(*others), err_msg=what)
        else:
            assert fn._lane is None or fn._lane(others) is None, what
    np.testing.assert_array_equal(W.value, W_ref.value)
    fn(*arrays)
    fn(*arrays)  # the Python lane again, then a step that fails in it
    step, before = fn._lane.step, W.value
    with pytest.raises(gc.BackendError, match="no parameter was updated"):
        step(arrays[0], np.array([0, 1, 2, 7], np.int64), arrays[2])
    np.testing.assert_array_equal(W.value, before)


def test_a_lane_record_describes_each_input():
    record = LaneRecord(11, 22, 33, [(4, np.dtype(np.float32), (2, 3)),
                                     (-1, np.dtype(np.int64), ())])
    words = record.words.tolist()
    assert words[:5] == [11, 22, 33, id(np.ndarray), 2]
    first, second = words[5], words[6]
    assert words[first:first + 5] == [4, id(np.dtype(np.float32)), 2, 2, 3]
    assert words[second:second + 3] == [-1, id(np.dtype(np.int64)), 0]


def test_threads_making_their_first_lanes_at_once_compile_it_once(monkeypatch):
    """Two threads compiled graphc_lane twice (functools.cache does not lock), and the lanes
    of the copy it did not keep pointed at freed code: a segfault (found by a review)."""
    import threading
    import time

    from graphc.backends.kernelgen import toolchain

    compiled = []
    jit = toolchain.jit

    def slow_jit(*args, **kwargs):
        compiled.append(1)
        time.sleep(0.05)  # widen the window
        return jit(*args, **kwargs)

    monkeypatch.setattr(builtin_lane, "_made", [])
    monkeypatch.setattr(toolchain, "jit", slow_jit)
    got = []
    threads = [threading.Thread(target=lambda: got.append(builtin_lane._lane_function()))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(compiled) == 1 and len({id(g) for g in got}) == 1


def test_a_lane_holds_what_it_points_at_and_a_closed_one_does_nothing():
    import gc as python_gc

    fn, W, E = _step()
    arrays = _arrays()
    native = _native(fn, arrays)  # held alone: no gc.Function, no lane closure
    before = W.value
    del fn
    python_gc.collect()
    assert native(*arrays) == RAN  # the executable, its buffers and code are still there
    assert not np.array_equal(W.value, before)
    with pytest.raises(ValueError):
        native.__self__[0] = 0  # its words are read-only
    fn2, _, _ = _step()
    native2 = _native(fn2, arrays)
    lane2 = fn2._lane
    fn2.close()
    assert lane2(arrays) is None
    del native2
