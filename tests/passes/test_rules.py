"""One test per rewrite rule: it fires on its pattern, and the result is unchanged."""

import numpy as np
import pytest

import graphc as gc
from graphc.ir.tensor import apply
from graphc.ops.reduce import NUMEL
from graphc.passes.manager import ALL_RULES

F = gc.nn.functional
X = np.array([[0.5, -1.2, 2.0], [1.5, 0.3, -0.7]])


def ph(shape=(2, 3), dtype="float64", name="x"):
    return gc.placeholder(name, shape, dtype)


def _two_tiles(x):
    """x[:, :2] and exp(x) written side by side into zeros of (2, 5), summed."""
    return (gc.ops.unslice(x[:, :2], (2, 5), (0, 0), (1, 1))
            + gc.ops.unslice(gc.exp(x), (2, 5), (0, 2), (1, 1)))


# rule name -> (builder returning (inputs, output), input arrays)
CASES = {
    "add_zero": (lambda: (lambda x: ([x], x + gc.constant(np.float64(-0.0))))(ph()), [X]),
    "add_neg_to_sub": (lambda: (lambda x, y: ([x, y], x + (-y)))(ph(), ph(name="y")), [X, X * 2]),
    "sub_zero": (lambda: (lambda x: ([x], gc.constant(np.float64(-0.0)) - x))(ph()), [X]),
    "sub_neg_to_add": (lambda: (lambda x, y: ([x, y], x - (-y)))(ph(), ph(name="y")), [X, X]),
    "sub_self_int": (lambda: (lambda k: ([k], k - k))(ph(dtype="int64")), [np.arange(6).reshape(2,
                                                                                              3)]),
    "mul_one": (lambda: (lambda x: ([x], 1.0 * x))(ph()), [X]),
    "mul_minus_one": (lambda: (lambda x: ([x], x * -1.0))(ph()), [X]),
    "mul_zero_int": (lambda: (lambda k: ([k], k * 0))(ph(dtype="int32")),
                     [np.ones((2, 3), np.int32)]),
    "mul_self_to_square": (lambda: (lambda x: ([x], x * x))(ph()), [X]),
    "neg_times_neg": (lambda: (lambda x, y: ([x, y], (-x) * (-y)))(ph(), ph(name="y")), [X, X]),
    "div_one": (lambda: (lambda x: ([x], x / 1.0 + x / -1.0 * 3))(ph()), [X]),
    "pow_small_integer": (lambda: (lambda x: ([x], x**2.0 + x**1.0 + gc.abs(x) ** 0.5))(ph()),
                          [X]),
    "neg_neg": (lambda: (lambda x: ([x], -(-x)))(ph()), [X]),
    "where_same_branches": (lambda: (lambda x: ([x], gc.where(x > 0, gc.exp(x), gc.exp(x))))(ph()),
                            [X]),
    "transpose_transpose": (lambda: (lambda x: ([x], gc.transpose(gc.transpose(x))))(ph()), [X]),
    "reshape_reshape": (lambda: (lambda x: ([x], x.reshape(3, 2).reshape(6)))(ph()), [X]),
    "broadcast_broadcast": (lambda: (lambda x: ([x], gc.ops.broadcast_to(gc.ops.broadcast_to(
        x, (2, 2, 3)), (4, 2, 2, 3))))(ph()), [X]),
    "sum_of_broadcast": (lambda: (lambda x: ([x], gc.sum(gc.ops.broadcast_to(x, (5, 2, 3)),
                                                         axis=0)))(ph()), [X]),
    "cast_cast": (lambda: (lambda x: ([x], gc.cast(gc.cast(x, "float64"), "float32")))(
        ph(dtype="float32")), [X.astype(np.float32)]),
    "matmul_fold_transpose": (lambda: (lambda a, b: ([a, b], a.T @ b))(ph((3, 2)), ph((3, 4), name=
                                                                                    "b")),
                              [X.T, np.ones((3, 4))]),
    "elementwise_before_broadcast": (lambda: (lambda s: ([s], gc.exp(gc.ops.broadcast_to(
        s, (4, 3)))))(ph((3,))), [X[0]]),
    "reshape_broadcast_scalar": (lambda: (lambda s: ([s], gc.ops.broadcast_to(s, (2, 3)).reshape(
        6)))(ph((1, 1))), [np.array([[2.5]])]),
    "implicit_broadcast": (lambda: (lambda x, b: ([x, b], x + gc.ops.broadcast_to(b, (2, 3))))(
        ph(), ph((3,), name="b")), [X, X[1]]),
    "elementwise_before_reshape": (lambda: (lambda s: ([s], gc.exp(s.reshape(1, 1))))(ph((1,))),
                                   [np.array([0.3])]),
    "fold_constants": (lambda: (lambda x: ([x], x * (gc.constant(2.0, "float64") *
                                                     gc.exp(gc.constant(1.0, "float64")))))(ph()),
                       [X]),
    "fold_known_numel": (lambda: (lambda x: ([x], x * apply(NUMEL, [x], axes=(0, 1),
                                                             dtype=np.dtype("float64"))))(ph()),
                         [X]),
    "single_value_to_scalar": (lambda: (lambda x: ([x], gc.ops.broadcast_to(
        gc.constant(np.array([1.5])), x.shape)))(ph(("N", 3))), [X]),
    "log_softmax_rule": (lambda: (lambda x: ([x], gc.log(gc.softmax(x))))(ph()), [X]),
    "log_picked_softmax": (lambda: (lambda x: ([x], gc.log(gc.sum(gc.one_hot(
        gc.constant(np.array([2, 0])), 3, "float64") * gc.softmax(x), axis=1))))(ph()), [X]),
    "log_sigmoid": (lambda: (lambda x: ([x], gc.log(gc.sigmoid(x))))(ph()), [X]),
    "log_one_minus_sigmoid": (lambda: (lambda x: ([x], gc.log(1.0 - gc.sigmoid(x))))(ph()), [X]),
    "log_one_plus": (lambda: (lambda x: ([x], gc.log(1.0 + gc.abs(x))))(ph()), [X]),
    "log_exp": (lambda: (lambda x: ([x], gc.log(gc.exp(x)) * 2))(ph()), [X]),
    "log1p_exp": (lambda: (lambda x: ([x], gc.log1p(gc.exp(x))))(ph()), [X]),
    "exp_minus_one": (lambda: (lambda x: ([x], gc.exp(x) - 1.0))(ph()), [X]),
    "abs_of_sign_free": (lambda: (lambda x: ([x], gc.abs(-x) + gc.abs(gc.square(x))))(ph()), [X]),
    "square_of_sign": (lambda: (lambda x: ([x], gc.square(gc.abs(x))))(ph()), [X]),
    "relu_of_nonnegative": (lambda: (lambda x: ([x], gc.relu(gc.abs(x))))(ph()), [X]),
    "sign_sign": (lambda: (lambda x: ([x], gc.sign(gc.sign(x))))(ph()), [X]),
    "extremum_of_itself": (lambda: (lambda x: ([x], gc.maximum(x, x) + gc.minimum(x, x)))(ph()),
                           [X]),
    "div_neg_neg": (lambda: (lambda x, y: ([x, y], (-x) / (-y)))(ph(), ph(name="y")), [X, X + 3]),
    "div_by_power_of_two": (lambda: (lambda x: ([x], x / 4.0 + x / 0.125))(ph()), [X]),
    "adjacent_unslices": (lambda: (lambda x: ([x], _two_tiles(x)))(ph()),
                          [np.array([[0.5, -0.0, np.inf], [np.nan, 0.3, -0.7]])]),
    "where_same_condition": (lambda: (lambda x, y: ([x, y], gc.where(
        x > y, gc.where(x > y, x, y * 2), gc.where(x > y, y, x * 3))))(ph(), ph(name="y")),
                             [X, X.T[::-1].T]),
    # a ReLU's mask in the gradient of a max pooling of it (1-d, windows of 2 overlapping)
    "gate_pooled_gradient": (lambda: (lambda x: ([x], gc.grad(gc.sum(gc.square(gc.ops.max_pool(
        gc.relu(x.reshape(1, 2, 3)), 2, 1))), [x])[0]))(ph()), [X]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_rule_fires_and_preserves_results(name):
    make, arrays = CASES[name]
    inputs, out = make()
    fired = set()
    for stat in gc.optimize(out)[1]:
        fired |= set(stat.fired)
    assert name in fired, f"{name} did not fire (fired: {sorted(fired)})"
    raw = gc.compile(inputs, out, optimize=False)(*arrays)
    opt = gc.compile(inputs, out)(*arrays)
    np.testing.assert_allclose(opt, raw, rtol=1e-6 if raw.dtype == np.float32 else 1e-12)


def test_adjacent_unslices_become_one_concat():
    # the gradient of four column blocks of one tensor (an LSTM's gates): one concat, no
    # zero-filled copies; in any order of the sum, and inside a larger sum
    x = ph((2, 8))
    y = ph((2, 8), name="y")
    blocks = [gc.tanh(x[:, k * 2:(k + 1) * 2]) for k in range(4)]
    g = gc.grad(sum(((b * b).sum() for b in blocks), gc.constant(0.0)) + (x * y).sum(), [x])[0]
    graph, _ = gc.optimize(g)
    names = [n.op.name for n in graph.nodes]
    assert "unslice" not in names and names.count("concat") == 1
    arrays = [X.repeat(3, 1)[:, :8], X.repeat(3, 1)[:, 1:9]]
    raw = gc.compile([x, y], g, optimize=False)(*arrays)
    np.testing.assert_allclose(gc.compile([x, y], g)(*arrays), raw, rtol=1e-12)


def test_every_rule_has_a_case():
    missing = sorted(r.name for r in ALL_RULES if r.name not in CASES)
    assert not missing, f"rules without a unit test: {missing}"


def test_identities_respect_shapes_and_nan():
    x = ph((3,))
    big = x * gc.constant(np.ones((2, 3)))  # x * 1 but broadcast to (2, 3): not just x
    g, _ = gc.optimize(big)
    assert g.outputs[0].shape == (2, 3)
    zero = x * 0.0  # inf * 0 is NaN: float x*0 must not fold
    fn = gc.compile([x], [zero, x - x])
    a, b = fn(np.array([1.0, np.inf, np.nan]))
    assert np.isnan(a[1]) and np.isnan(a[2]) and np.isnan(b[1])


def test_replacements_keep_the_user_source_line():
    x = ph()
    y = gc.log(gc.softmax(x))  # this line
    g, _ = gc.optimize(y)
    (out,) = g.outputs
    assert out.op.name == "log_softmax" and out.loc.lineno == y.node.loc.lineno


@pytest.mark.parametrize("build", [
    lambda x: 1.0 / (x + 0.0), lambda x: 1.0 / (0.0 + x), lambda x: 1.0 / (0.0 - x),
    lambda x: 1.0 / (x - gc.constant(np.float64(-0.0))),
    lambda x: 1.0 / gc.sum(gc.ops.broadcast_to(x, (4, 2)), axis=0),
    lambda x: 1.0 / (gc.ops.unslice(x[:1], (2,), (0,), (1,))
                     + gc.ops.unslice(x[1:], (2,), (1,), (1,))),  # adjacent_unslices
    lambda x: 1.0 / (gc.exp(x) - 1.0), lambda x: 1.0 / gc.log(1.0 + x),  # stabilize
    lambda x: 1.0 / gc.log(gc.exp(x))])  # (log_exp returned x itself: -0.0, not log(1))
def test_rewrites_keep_the_sign_of_a_zero(build):
    """x + 0.0 is +0.0 at x = -0.0, and 0.0 - x is +0.0 at x = +0.0: a rule that dropped
    the zero flipped the sign of the infinity a division makes of it (an audit's 20 random
    graphs); a sum of -0.0 terms starts from +0.0."""
    x = gc.placeholder("x", (2,), "float64")
    y = build(x)
    xv = np.array([0.0, -0.0])
    with np.errstate(divide="ignore"):
        want = gc.compile([x], y, optimize=False)(xv)
        for backend in ("numpy", "llvm"):
            got = gc.compile([x], y, backend=backend)(xv)
            np.testing.assert_array_equal(got, want)
            np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_a_power_of_two_whose_reciprocal_overflows_compiles_without_a_warning():
    """x / 2**-130 in float32 (1 / 2**-130 overflows float32): the rule's range test cast
    the reciprocal to float32, a RuntimeWarning in the user's log at compile time."""
    import warnings

    x = gc.placeholder("x", (3,), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fn = gc.compile([x], x / gc.constant(np.float32(2.0**-130)))
    with np.errstate(over="ignore"):
        assert np.isinf(fn(np.ones(3, np.float32))).all()
