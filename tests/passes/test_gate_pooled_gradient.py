"""The simplify rule `gate_pooled_gradient` (passes/simplify.py): a gate on a max pooling's
input, applied to the pooling's gradient, moves onto the pooled gradient before the spread.

It must give the same bits as the graph it replaces, NaN and signed zeros included, on every
geometry (overlapping windows, padding, stride larger than the kernel, 1-d and 2-d), for every
comparison and either branch of the `where`, on hostile values: zeros of both signs, ties,
infinities, NaN, huge numbers. The lookalikes it must leave alone are in
test_rule_preconditions.py; its positive case and its firing in a CNN's gradient are here and
in test_rules.py."""

import numpy as np
import pytest

import graphc as gc
from graphc.ops.pool import max_pool_grad

F = gc.nn.functional
HOSTILE = [0.0, -0.0, 1.0, -1.0, 0.5, np.inf, -np.inf, np.nan, 2.0]  # and the dtype's largest
COMPARISONS = {"<=": gc.less_equal, "<": gc.less, ">": gc.greater, ">=": gc.greater_equal,
               "==": gc.equal, "!=": gc.not_equal}
# (input spatial shape, kernel, stride, padding)
GEOMETRIES = [((6, 6), (2, 2), (2, 2), (0, 0)), ((5, 7), (3, 3), (1, 1), (1, 1)),
              ((7, 6), (3, 2), (2, 1), (1, 0)), ((7, 7), (2, 2), (3, 3), (0, 0)),
              ((9,), (3,), (2,), (1,)), ((8,), (1,), (1,), (0,))]


def _fired(out) -> set:
    return {name for stat in gc.optimize(out)[1] for name in stat.fired}


def _hostile(rng, shape, dtype):
    """Values from HOSTILE and the dtype's largest of either sign, with runs of ties (a
    window's maximum twice)."""
    huge = float(np.finfo(dtype).max)
    values = rng.choice(np.array(HOSTILE + [huge, -huge]), size=shape)
    ties = rng.random(shape) < 0.2
    values[ties] = 1.0
    return values.astype(dtype)


def _gated(geometry, op, constant, zero_first, dtype):
    size, kernel, stride, padding = geometry
    y = gc.placeholder("y", (2, 3) + size, dtype)
    pooled = gc.ops.max_pool(y, kernel, stride, padding)
    g = gc.placeholder("g", pooled.shape, dtype)
    spread = max_pool_grad(y, g, kernel, stride, padding)
    gate = COMPARISONS[op](y, gc.constant(np.asarray(constant, dtype)))
    zero = gc.constant(np.zeros((), dtype))
    out = gc.where(gate, zero, spread) if zero_first else gc.where(gate, spread, zero)
    return [y, g], out


def _same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])


@pytest.fixture
def without_the_rule(monkeypatch):
    """A context in which the simplify stage runs without this rule (every other rule and
    pass as usual): the graph the rule would have rewritten, on the same backend."""
    import contextlib

    from graphc.passes.simplify import SIMPLIFY

    others = [r for r in SIMPLIFY.rules if r.name != "gate_pooled_gradient"]

    @contextlib.contextmanager
    def context():
        with monkeypatch.context() as patch:
            patch.setattr(SIMPLIFY, "rules", others)
            yield

    return context


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x".join(map(str, g[0])))
@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_the_gate_moves_onto_the_pooled_gradient_with_the_same_bits(geometry, backend,
                                                                      without_the_rule):
    """The same bits as the graph without the rule, on the same backend (where windows
    overlap, a position's terms are summed in the backend's order, which the rule keeps;
    two backends may differ there on huge values), and, on the numpy backend, as the
    unoptimized graph."""
    rng = np.random.default_rng(len(geometry[0]) * 10 + geometry[1][0])
    for k, (op, constant) in enumerate([("<=", 0.0), ("<", 0.5), (">", 0.0), (">=", -1.0),
                                        ("==", 1.0), ("!=", 0.0)]):
        dtype = np.float32 if k % 2 else np.float64
        inputs, out = _gated(geometry, op, constant, zero_first=k % 3 != 2, dtype=dtype)
        assert "gate_pooled_gradient" in _fired(out), (op, constant)
        graph, _ = gc.optimize(out)
        (spread,) = [n for n in graph.nodes if n.op.name == "max_pool_grad"]
        assert spread.inputs[1].op.name in ("where", "elemwise")  # the gate, pooled side
        with without_the_rule():
            assert "gate_pooled_gradient" not in _fired(out)
            unchanged = gc.compile(inputs, out, backend=backend,
                                   backend_options={"cache": False} if backend == "llvm"
                                   else None)
        optimized = gc.compile(inputs, out, backend=backend)
        raw = gc.compile(inputs, out, optimize=False, backend="numpy")
        for _ in range(3):
            y = _hostile(rng, inputs[0].shape, dtype)
            g = _hostile(rng, inputs[1].shape, dtype)
            with np.errstate(all="ignore"):
                got = optimized(y, g)
                _same_bits(got, unchanged(y, g))
                if backend == "numpy":
                    _same_bits(got, raw(y, g))


def test_a_cnn_gradient_masks_its_relu_on_the_pooled_side():
    """conv -> relu -> max pool, differentiated: the ReLU's mask reads the pooled value (a
    quarter of the elements), and every gradient keeps its bits on hostile inputs."""
    rng = np.random.default_rng(3)
    x = gc.placeholder("x", ("N", 2, 8, 8), "float64")
    w = gc.parameter("w", rng.normal(size=(3, 2, 3, 3)))
    h = F.max_pool2d(gc.relu(F.conv2d(x, w, padding=1)), 2)
    loss = (h * h).sum()
    grads = gc.grad(loss, [x, w])
    assert "gate_pooled_gradient" in _fired(grads[0])
    data = _hostile(rng, (2, 2, 8, 8), np.float64)
    data[0] = rng.normal(size=(2, 8, 8))  # one sample of ordinary values
    with np.errstate(all="ignore"):
        want = gc.compile([x], grads, optimize=False)(data)
        got = gc.compile([x], grads)(data)
    for a, b in zip(got, want):
        _same_bits(a, b)
