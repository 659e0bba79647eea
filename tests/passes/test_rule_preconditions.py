"""Negative tests: for every rewrite rule, patterns that look like its own but must not be
rewritten (another axis, a broadcast shape, a dtype, a constant that is almost right, an
identity that is false for inf or NaN). The rule must not fire, and the optimized program must
give the unoptimized one's values with NaN and inf in the same places, on hostile inputs.
tests/passes/test_rules.py has the positive case of each rule."""

import numpy as np
import pytest

import graphc as gc
from graphc.passes.manager import ALL_RULES, PASS_NAMES

S = (2, 3)
X = np.array([[0.0, -0.0, np.inf], [-np.inf, np.nan, 1.5]])
Y = np.array([[2.0, 0.0, -np.inf], [0.5, 3.0, np.nan]])
C = np.array([[True, False, True], [False, True, False]])


def x_():
    return gc.placeholder("x", S, "float64")


def y_():
    return gc.placeholder("y", S, "float64")


def c_():
    return gc.placeholder("c", S, "bool")


def hot(depth, dtype="float64"):
    return gc.one_hot(gc.constant(np.array([2, 0])), depth, dtype=dtype)


def spread(x, y):
    """The gradient g = y[:, :2] of a max pooling (windows of 2, stride 1) of x as (1, 2, 3)."""
    return gc.ops.pool.max_pool_grad(x.reshape(1, 2, 3), y[:, :2].reshape(1, 2, 2), (2,), (1,),
                                     (0,))


def x3(x):
    return x.reshape(1, 2, 3)


# rule -> [lookalike(x, y, c) -> output]; x, y float64 (2, 3), c bool (2, 3)
NEGATIVES = {
    "add_zero": [lambda x, y, c: x[0] + gc.constant(np.zeros(S)),
                 lambda x, y, c: x + 1e-300,
                 lambda x, y, c: x + 0.0,  # +0.0 turns -0.0 into +0.0
                 lambda x, y, c: 0.0 + x],
    "add_neg_to_sub": [lambda x, y, c: x + gc.abs(y), lambda x, y, c: x + 1.0 * y],
    "sub_zero": [lambda x, y, c: gc.constant(np.zeros((2, 2, 3))) - x, lambda x, y, c: x - 5e-324,
                 lambda x, y, c: 0.0 - x,  # +0.0 - (+0.0) is +0.0, not -0.0
                 lambda x, y, c: x - gc.constant(np.float64(-0.0))],
    "sub_neg_to_add": [lambda x, y, c: x - gc.abs(y)],
    "sub_self_int": [lambda x, y, c: x - x],
    "mul_one": [lambda x, y, c: x[0] * gc.constant(np.ones(S)),
                lambda x, y, c: x * 1.0000000000000002],
    "mul_minus_one": [lambda x, y, c: x[0] * gc.constant(-np.ones(S)),
                      lambda x, y, c: x * -1.0000000000000002],
    "mul_zero_int": [lambda x, y, c: x * 0.0],
    "mul_self_to_square": [lambda x, y, c: x * y, lambda x, y, c: x * gc.abs(x)],
    "neg_times_neg": [lambda x, y, c: (-x) * y, lambda x, y, c: (-x) * gc.abs(y)],
    "div_one": [lambda x, y, c: x[0] / gc.constant(np.ones(S)),
                lambda x, y, c: x / 1.0000000000000002],
    "pow_small_integer": [lambda x, y, c: x ** 0.5, lambda x, y, c: x ** 3.0,
                          lambda x, y, c: x ** y],
    "neg_neg": [lambda x, y, c: -gc.abs(-x)],
    "where_same_branches": [lambda x, y, c: gc.where(c, gc.exp(x), gc.exp(y))],
    "transpose_transpose": [lambda x, y, c: gc.transpose(gc.exp(gc.transpose(x)))],
    "reshape_reshape": [lambda x, y, c: gc.exp(x.reshape(3, 2)).reshape(6)],
    "broadcast_broadcast": [lambda x, y, c: gc.ops.broadcast_to(gc.concat(
        [gc.ops.broadcast_to(x[0], S), y], 0), (2, 4, 3))],
    "sum_of_broadcast": [lambda x, y, c: gc.sum(gc.ops.broadcast_to(x, (5, 2, 3)), axis=1),
                         lambda x, y, c: gc.sum(gc.ops.broadcast_to(x[:1], S), axis=1),
                         # an empty sum is 0; x * 0 would be NaN at inf and NaN (a fuzz)
                         lambda x, y, c: gc.sum(gc.ops.broadcast_to(x[:1], (0, 3)), axis=0)
                         + y],
    "cast_cast": [lambda x, y, c: gc.cast(gc.cast(x, "float32"), "float64"),
                  lambda x, y, c: gc.cast(gc.cast(gc.cast(x, "int64"), "float32"), "float64")],
    "matmul_fold_transpose": [lambda x, y, c: gc.matmul(gc.transpose(
        gc.ops.broadcast_to(x, (2, 2, 3)) * y, (1, 0, 2)), y[0].reshape(3, 1))],
    "elementwise_before_broadcast": [lambda x, y, c: gc.ops.broadcast_to(x[0], S) + y],
    "reshape_broadcast_scalar": [lambda x, y, c: gc.ops.broadcast_to(x[:1], (2, 2, 3)).reshape(
        4, 3)],
    "implicit_broadcast": [lambda x, y, c: x[:1] + gc.ops.broadcast_to(y[0], S)],
    "elementwise_before_reshape": [lambda x, y, c: gc.exp(x.reshape(6))],
    "fold_constants": [lambda x, y, c: gc.exp(gc.constant(np.ones(70_000)))[:6].reshape(S) + x,
                       lambda x, y, c: (lambda n: gc.ops.broadcast_to(gc.constant(
                           np.array([1.0, 2.0, 3.0])), n.shape) * n)(
                           gc.placeholder("n", ("N", 3), "float64"))],  # a symbolic shape
    "fold_known_numel": [lambda x, y, c: gc.ops.numel(gc.placeholder("n", ("N", 3), "float64"),
                                                       (0, 1)) * 0.0 + x],
    "single_value_to_scalar": [lambda x, y, c: gc.ops.broadcast_to(
        gc.constant(np.array([1.5, 2.5])).reshape(2, 1), S) + x],
    "log_softmax_rule": [lambda x, y, c: gc.log(gc.exp(x) / gc.sum(gc.exp(x), 1, keepdims=True)),
                         lambda x, y, c: gc.log(gc.softmax(x) + 1e-9)],
    "log_picked_softmax": [
        lambda x, y, c: gc.log(gc.sum(hot(3) * gc.softmax(x, 0), 0)),  # one-hot axis 1
        lambda x, y, c: gc.log(gc.sum(hot(3) * gc.softmax(x, 1), 0)),  # summed over axis 0
        lambda x, y, c: gc.log(gc.sum(gc.constant(np.array([[1.0, 1, 0], [0, 1, 0]]))
                                      * gc.softmax(x, 1), 1)),  # two ones in a row
        lambda x, y, c: gc.log(gc.sum(gc.cast(hot(3, "float32"), "float64") * gc.softmax(
            gc.ops.broadcast_to(x[:, :1], S), 0), 0)),
        lambda x, y, c: gc.log(gc.sum(hot(3) * gc.softmax(x, 1) * 2.0, 1)),
        lambda x, y, c: gc.log(gc.sum(gc.ops.broadcast_to(hot(3)[:, :1], S) * gc.softmax(x, 1),
                                      1))],
    "log_sigmoid": [lambda x, y, c: gc.log(2.0 * gc.sigmoid(x)),
                    lambda x, y, c: gc.log(gc.tanh(x))],
    "log_one_minus_sigmoid": [lambda x, y, c: gc.log(2.0 - gc.sigmoid(x)),
                              lambda x, y, c: gc.log(gc.constant(np.ones((2, 2, 3)))
                                                     - gc.sigmoid(x))],
    "log_one_plus": [lambda x, y, c: gc.log(2.0 + x),
                     lambda x, y, c: gc.log(gc.constant(np.ones((2, 2, 3))) + x)],
    "log_exp": [lambda x, y, c: gc.log(2.0 * gc.exp(x))],
    "log1p_exp": [lambda x, y, c: gc.log1p(2.0 * gc.exp(x)), lambda x, y, c: gc.log1p(gc.expm1(x))],
    "exp_minus_one": [lambda x, y, c: gc.exp(x) - 2.0, lambda x, y, c: 1.0 - gc.exp(x),
                      lambda x, y, c: gc.exp(x[0]) - gc.constant(np.ones(S))],
    "abs_of_sign_free": [lambda x, y, c: gc.abs(x - y), lambda x, y, c: gc.abs(gc.sign(x))],
    "square_of_sign": [lambda x, y, c: gc.square(gc.sign(x)), lambda x, y, c: gc.square(1.0 - x)],
    "relu_of_nonnegative": [lambda x, y, c: gc.relu(-gc.abs(x)),
                            lambda x, y, c: gc.relu(gc.sigmoid(x) - 0.5)],
    "sign_sign": [lambda x, y, c: gc.sign(gc.abs(x)), lambda x, y, c: gc.sign(-gc.sign(x))],
    "extremum_of_itself": [lambda x, y, c: gc.maximum(x, y), lambda x, y, c: gc.minimum(x, -x)],
    "div_neg_neg": [lambda x, y, c: (-x) / y, lambda x, y, c: x / (-y)],
    "div_by_power_of_two": [lambda x, y, c: x / 3.0, lambda x, y, c: x / 0.0,
                            lambda x, y, c: x / 2.0 ** -1030, lambda x, y, c: x / y],
    "adjacent_unslices": [  # overlapping, a gap, a step, two axes apart, another shape
        lambda x, y, c: gc.ops.unslice(x, (2, 5), (0, 0), (1, 1))
        + gc.ops.unslice(y, (2, 5), (0, 2), (1, 1)),
        lambda x, y, c: gc.ops.unslice(x[:, :1], (2, 5), (0, 0), (1, 1))
        + gc.ops.unslice(y[:, :1], (2, 5), (0, 2), (1, 1)),
        lambda x, y, c: gc.ops.unslice(x[:, :2], (2, 5), (0, 0), (1, 2))
        + gc.ops.unslice(y[:, :1], (2, 5), (0, 4), (1, 1)),
        lambda x, y, c: gc.ops.unslice(x[:1, :2], (2, 5), (0, 0), (1, 1))
        + gc.ops.unslice(y[:1, :2], (2, 5), (1, 2), (1, 1)),
        lambda x, y, c: gc.ops.unslice(x[:, :2], (2, 5), (0, 0), (1, 1))
        + gc.ops.unslice(y[:1, :3], (2, 5), (0, 2), (1, 1))],
    "where_same_condition": [lambda x, y, c: gc.where(c, gc.where(x > y, x, y), x),
                             lambda x, y, c: gc.where(c, x, gc.where(x < y, y, x))],
    "gate_pooled_gradient": [
        lambda x, y, c: gc.where(x3(y) <= 0, 0.0, spread(x, y)),  # gates another tensor
        lambda x, y, c: gc.where(x3(x) <= 0, 0.5, spread(x, y)),  # not a zero
        lambda x, y, c: gc.where(x3(x) <= 0, -0.0, spread(x, y)),  # -0.0: sums give +0.0
        lambda x, y, c: gc.where(x3(x) <= gc.constant(np.array([[[0.0, 1, -1], [2, 0.5, 0]]])),
                                 0.0, spread(x, y)),  # a bound per position, not a scalar
        lambda x, y, c: gc.where(x3(x) <= gc.constant(np.zeros((1, 1, 1, 1))), 0.0,
                                 spread(x, y)),  # one element, but it adds a dim
        lambda x, y, c: gc.where(x3(x) <= x3(y), 0.0, spread(x, y)),
        lambda x, y, c: gc.where(x3(c), 0.0, spread(x, y)),  # not a comparison of x
        lambda x, y, c: gc.where(x3(x) <= 0, 0.0, spread(x, y) + 1.0)],  # not the spread
}
FEEDS = {"x": X, "y": Y, "c": C, "n": np.ones((4, 3))}
CASES = [(rule, k) for rule, makers in NEGATIVES.items() for k in range(len(makers))]


def _fired(out) -> set:
    fired = set()
    for stat in gc.optimize(out)[1]:
        fired |= set(stat.fired)
    return fired


@pytest.mark.parametrize("rule,k", CASES, ids=[f"{r}-{k}" for r, k in CASES])
def test_lookalike_is_not_rewritten(rule, k):
    x, y, c = x_(), y_(), c_()
    out = NEGATIVES[rule][k](x, y, c)
    assert rule not in _fired(out), f"{rule} fired on a pattern it must not rewrite"
    from graphc.ir.graph import topological

    inputs = [gc.Tensor(n, out.graph) for n in topological([out.node])
              if n.op.name == "placeholder"]
    arrays = [FEEDS[t.name] for t in inputs]
    for passes in (True, [p for p in PASS_NAMES if p != "stabilize"]):
        with np.errstate(all="ignore"):
            want = gc.compile(inputs, out, optimize=False)(*arrays)
            got = gc.compile(inputs, out, optimize=passes)(*arrays)
        if passes is not True:
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        finite = np.isfinite(want)
        np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12)


def test_random_draws_are_never_folded():
    """A random op of a constant state has constant inputs only, and must stay a draw."""
    draw = gc.ops.random_uniform(gc.rng_state(3), S, "float64")
    assert "fold_constants" not in _fired(draw)
    fn = gc.compile([], draw)
    assert not np.array_equal(fn(), fn())  # its state advances: fresh numbers each call


def test_every_rule_has_a_negative_case():
    missing = sorted(r.name for r in ALL_RULES if r.name not in NEGATIVES)
    assert not missing, f"rules without a negative test: {missing}"


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_signed_integer_abs_and_square_are_not_known_non_negative(backend):
    """int32 x*x wraps (50000**2 < 0) and abs(INT_MIN) is INT_MIN: abs(square x) ->
    square x, relu(abs x) -> abs x and relu(square x) -> square x changed values."""
    x = gc.placeholder("x", (4,), "int32")
    outs = [gc.abs(x * x), gc.relu(gc.abs(x)), gc.relu(x * x), gc.abs(gc.relu(x))]
    xv = np.array([-2**31, 50000, 3, -7], np.int32)
    want = gc.compile([x], outs, optimize=False, backend=backend)(xv)
    got = gc.compile([x], outs, backend=backend)(xv)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(want[0], np.abs(xv * xv))
    fired = set().union(*(set(s.fired) for s in gc.optimize(outs[:3])[1]))
    assert not fired & {"abs_of_sign_free", "relu_of_nonnegative"}
    f = gc.placeholder("f", (4,))  # floats: the rules still fire
    fired = set().union(*(set(s.fired) for s in gc.optimize(gc.relu(gc.abs(f)))[1]))
    assert "relu_of_nonnegative" in fired
