"""Nothing a user passes crashes the interpreter; bad data never half-applies an update.

The hostile calls run in a subprocess: a segfault there fails the test instead of killing
pytest.
"""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import graphc as gc

F = gc.nn.functional

SCRIPT = textwrap.dedent("""
    import numpy as np, graphc as gc
    F = gc.nn.functional
    x = gc.placeholder("x", ("N", 4))
    ids = gc.placeholder("ids", ("N",), "int64")
    W = gc.parameter("W", np.ones((4, 3), np.float32))
    E = gc.parameter("E", np.ones((5, 4), np.float32))
    loss = gc.mean(gc.tanh((x + F.embedding(ids, E)) @ W))
    gW, gE = gc.grad(loss, [W, E])
    step = gc.compile([x, ids], loss, updates={W: W - 0.1 * gW, E: E - 0.1 * gE},
                      backend="llvm")
    ok = np.ones((3, 4), np.float32), np.array([0, 1, 4])
    step(*ok)
    before = W.value, E.value
    attempts = {
        "non_contiguous": (np.ones((3, 8), np.float32)[:, ::2], ok[1]),
        "fortran_order": (np.asfortranarray(np.ones((3, 4), np.float64)), ok[1]),
        "int32_ids": (ok[0], np.array([0, 1, 2], np.int32)),
        "nan": (np.full((3, 4), np.nan, np.float32), ok[1]),
        "inf": (np.full((3, 4), np.inf, np.float32), ok[1]),
        "empty_batch": (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),
        "wrong_dtype": (np.ones((3, 4), np.complex64), ok[1]),
        "float_ids": (ok[0], np.array([0.5, 1.0, 2.0])),
        "wrong_rank": (np.ones(12, np.float32), ok[1]),
        "wrong_width": (np.ones((3, 5), np.float32), ok[1]),
        "batch_mismatch": (np.ones((3, 4), np.float32), np.array([0, 1])),
        "id_too_big": (ok[0], np.array([0, 1, 5])),
        "id_negative": (ok[0], np.array([0, -1, 2])),
        "object_array": (np.array([[1, "a", None, 2]] * 3, dtype=object), ok[1]),
        "python_list": ([[1.0, 2, 3, 4]] * 3, [0, 1, 2]),
        "huge": (np.ones((2_000_000, 4), np.float32), np.zeros(2_000_000, np.int64)),
    }
    for name, args in attempts.items():
        W.value, E.value = before  # every attempt starts from the same finite parameters
        w0, e0 = W.value, E.value
        try:
            out = step(*args)
            result = "ok " + ("nan" if np.isnan(out) else "finite" if np.isfinite(out) else "inf")
        except gc.GraphError as exc:
            result = "GraphError " + type(exc).__name__
            assert np.array_equal(W.value, w0, equal_nan=True), name
            assert np.array_equal(E.value, e0, equal_nan=True), name
        except gc.BackendError as exc:
            result = "BackendError"
            assert np.array_equal(W.value, w0, equal_nan=True), name
            assert np.array_equal(E.value, e0, equal_nan=True), name
        print(name, result, flush=True)
    print("survived")
""")


@pytest.fixture(scope="module")
def report():
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, f"the interpreter died ({res.returncode}):\n{res.stderr[-3000:]}"
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)
    assert "survived" in res.stdout
    return lines


@pytest.mark.parametrize("name, expected", [
    ("non_contiguous", "ok finite"), ("fortran_order", "ok finite"), ("int32_ids", "ok finite"),
    ("nan", "ok nan"), ("inf", "ok"), ("empty_batch", "ok nan"),
    ("wrong_dtype", "GraphError ShapeError"), ("float_ids", "GraphError ShapeError"),
    ("wrong_rank", "GraphError ShapeError"), ("wrong_width", "GraphError ShapeError"),
    ("batch_mismatch", "GraphError ShapeError"), ("id_too_big", "BackendError"),
    ("id_negative", "BackendError"), ("object_array", "GraphError ShapeError"),
    ("python_list", "ok finite"), ("huge", "ok finite"),
])
def test_hostile_inputs(report, name, expected):
    assert report[name].startswith(expected), report[name]


def test_bad_ids_apply_no_update():
    ids = gc.placeholder("ids", (3,), "int64")
    E = gc.parameter("E", np.ones((5, 2), np.float32))
    loss = gc.sum(F.embedding(ids, E))
    step = gc.compile([ids], loss, updates={E: E - gc.grad(loss, E)}, backend="llvm")
    with pytest.raises(gc.BackendError, match=r"take: id 9 is outside \[0, 5\)"):
        step(np.array([0, 9, 1]))
    np.testing.assert_array_equal(E.value, np.ones((5, 2)))
    step(np.array([0, 0, 1]))
    np.testing.assert_array_equal(E.value[:, 0], [-1, 0, 1, 1, 1])
