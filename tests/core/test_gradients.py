"""Symbolic gradients: every op against finite differences (float64), the registry-wide table,
non-differentiable paths, broadcasting, second order, and the inner-product identity."""

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import graphc as gc
from graphc.ops import REGISTRY
from tests.helpers import build_case, case_arrays
from tests.op_cases import CASES

F = gc.nn.functional
GRAD_CASES = [c for c in CASES if c.grad]


def _weighted(case, arrays, seen=None):
    """A scalar cost sum(out * W) with fixed random weights (sum(softmax) alone is constant).

    W is reshaped to the output's own shape, so an output of symbolic shape (4*N,) stays
    symbolic instead of taking W's concrete shape by broadcasting. `seen` collects the shapes
    of the placeholders the cost was built on."""
    graph, phs, out = build_case(case, arrays)
    with graph:
        shape = np.shape(gc.compile(phs, out)(*arrays))
    weights = np.random.default_rng(1).uniform(0.5, 1.5, size=shape)

    def cost(xs):
        if seen is not None:
            seen.extend(x.shape for x in xs)
        out = case.build(*xs)
        return gc.sum(out * gc.constant(weights).reshape(out.shape))

    return cost


def _dims(shapes):
    return [tuple(str(d) for d in s) for s in shapes]


SYMBOLIC_CASES = [c for c in GRAD_CASES if c.shapes]


def test_some_gradient_cases_have_symbolic_shapes():
    assert {"mean_symbolic", "numel_symbolic", "reshape_symbolic", "slice_symbolic"} <= {
        c.name for c in SYMBOLIC_CASES}


@pytest.mark.parametrize("case", GRAD_CASES, ids=[c.name for c in GRAD_CASES])
def test_gradient_matches_finite_differences(case):
    arrays = case_arrays(case, np.float64, seed=3)
    seen = []
    cost = _weighted(case, arrays, seen)
    err = gc.check_grad(cost, arrays, eps=case.grad_eps, rtol=case.grad_rtol, shapes=case.shapes)
    assert err < case.grad_rtol
    # the graph was built (and differentiated) on the case's shapes, symbolic dims included
    assert _dims(seen) == _dims(case.shapes or [a.shape for a in arrays])


@pytest.mark.parametrize("case", GRAD_CASES[::3] + [c for c in SYMBOLIC_CASES
                                                      if c not in GRAD_CASES[::3]],
                         ids=lambda c: c.name)
def test_inner_product_identity(case):
    arrays = case_arrays(case, np.float64, seed=5)
    rtol = max(1e-6, case.grad_rtol if case.grad_eps != 1e-6 else 1e-6)
    seen = []

    def f(xs):
        seen.extend(x.shape for x in xs)
        return case.build(*xs)

    assert gc.check_vjp(f, arrays, eps=case.grad_eps, rtol=rtol, shapes=case.shapes) <= rtol
    assert _dims(seen) == _dims(case.shapes or [a.shape for a in arrays])


def test_check_grad_builds_placeholders_with_the_given_symbolic_shapes():
    seen = []

    def cost(xs):  # mean over the batch: the gradient divides by N, bound only at call time
        seen.append(xs[0].shape)
        return gc.mean(gc.square(xs[0] @ xs[1]))

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(5, 3)), rng.normal(size=(3,))
    assert gc.check_grad(cost, [x, w], shapes=[("N", 3), None]) < 1e-6
    (shape,) = seen
    assert isinstance(shape[0], sympy.Symbol) and shape[0].name == "N" and shape[1] == 3
    seen.clear()
    assert gc.check_vjp(lambda xs: (seen.append(xs[0].shape), xs[0] * 2.0)[1], [x],
                        shapes=[("N", "M")]) < 1e-6
    assert _dims(seen) == [("N", "M")]


def test_check_grad_shapes_are_checked_against_the_arrays():
    x = np.ones((5, 3))
    with pytest.raises(gc.ShapeError):  # a concrete shape that does not fit the array
        gc.check_grad(lambda xs: gc.sum(xs[0]), [x], shapes=[(4, 3)])
    with pytest.raises(gc.ShapeError):  # "N" bound two ways
        gc.check_grad(lambda xs: gc.sum(xs[0]) + gc.sum(xs[1]), [x, np.ones((4, 3))],
                      shapes=[("N", 3), ("N", 3)])
    with pytest.raises(gc.GraphError, match="shape"):
        gc.check_grad(lambda xs: gc.sum(xs[0]), [x], shapes=[("N", 3), ("N", 3)])


def test_check_grad_fails_on_a_non_finite_gradient_the_differences_do_not_have():
    """A NaN error passed every test (``err > rtol`` and Python's max are blind to NaN), so
    check_grad returned 0.0 for a NaN or inf analytic gradient. Now one side non-finite and
    the other not, or NaN against inf, is an infinite error; exact agreement (the same
    infinity, NaN on both sides) is 0."""
    cases = [(lambda xs: gc.sqrt(xs[0] * xs[0]).sum(), [0.0, 1.0]),  # analytic NaN, numeric 0
             (lambda xs: gc.sqrt(xs[0]).sum(), [0.0, 1.0]),  # analytic inf, numeric NaN
             (lambda xs: (xs[0] * gc.constant(np.array([np.nan, 1.0]))).sum(), [1.0, 1.0])]
    for f, x in cases:
        with pytest.raises(AssertionError, match=r"max relative error inf > rtol"):
            gc.check_grad(f, [np.array(x)])
    with pytest.raises(AssertionError, match="relative error inf"):
        gc.check_vjp(lambda xs: gc.sqrt(xs[0]), [np.array([0.0, 1.0])])
    assert gc.check_grad(lambda xs: gc.sqrt(xs[0]).sum(), [np.array([1.0, 4.0])]) < 1e-6
    err = gc.gradcheck.relative_error(np.array([np.nan, np.inf, 1.0, np.inf, np.nan, 2.0]),
                                      np.array([np.nan, np.inf, np.nan, -np.inf, np.inf, 2.0]))
    np.testing.assert_array_equal(err, [0, 0, np.inf, np.inf, np.inf, 0])


def test_hessian_vector_products_through_max_and_min_reductions():
    """The max/min gradient's mask was cast(x == max), a path autodiff refuses, so a second
    derivative raised GraphError even from gc.hessian_vector_product. The mask is piecewise
    constant: the Hessian of sum(max) is 0 (as relu's, PyTorch's), and where the reduction
    feeds a curved function the HVP is that function's, at the maximum."""
    x_ = np.array([[1.0, -2.0, 0.3, 4.0], [-1.0, 2.0, 0.7, -0.2]])
    v_ = np.array([[0.5, 1.0, -1.0, 2.0], [3.0, -1.5, 1.0, 0.25]])
    with gc.Graph():
        x = gc.placeholder("x", (2, 4), "float64")
        v = gc.placeholder("v", (2, 4), "float64")
        flat = [gc.hessian_vector_product(f(x), x, v) for f in (
            lambda x: x.max(axis=1).sum(), lambda x: gc.min(x, axis=0).sum(),
            lambda x: x.max())]
        curved = gc.hessian_vector_product((x.max(axis=1) ** 2).sum(), x, v)
        fn = gc.compile([x, v], flat + [curved])
    *zeros, got = fn(x_, v_)
    for z in zeros:
        np.testing.assert_array_equal(z, np.zeros((2, 4)))
    want = np.zeros((2, 4))
    want[0, 3], want[1, 1] = 2 * v_[0, 3], 2 * v_[1, 1]  # d2/dm2 m**2 = 2, at the argmax
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_second_derivative_of_a_zero_power_is_zero_at_zero(backend):
    """d/dx x**0 is 0 (the where's taken branch); its untaken branch y*x**(y-1) is inf at
    x = 0, and the second derivative flowed through it as 0 * inf = NaN. The untaken
    branch's power is x**0 there now: the Hessian is 0, as PyTorch's for x ** 0.0, for a
    scalar and a tensor exponent; other exponents keep their derivatives."""
    x_ = np.array([0.0, 1.0, -2.0, 3.0])
    with gc.Graph():
        x = gc.placeholder("x", (4,), "float64")
        y = gc.placeholder("y", (4,), "float64")
        outs = []
        for power in (x ** 0.0, x ** y):
            g = gc.grad(power.sum(), x)
            outs += [g, gc.grad(g.sum(), x)]
        fn = gc.compile([x, y], outs, backend=backend)
    for out in fn(x_, np.zeros(4)):
        np.testing.assert_array_equal(out, np.zeros(4))
    y_ = np.array([2.0, 3.0, 2.0, 0.5])
    *_, g, h = fn(x_, y_)
    np.testing.assert_allclose(g, y_ * x_ ** (y_ - 1))
    np.testing.assert_allclose(h, y_ * (y_ - 1) * np.where(x_ == 0, 0.0, x_) ** (y_ - 2))


# Ops that take no gradient themselves, and why.
NO_GRADIENT = {
    "placeholder": "leaf", "parameter": "leaf", "constant": "leaf",
    "less": "blocks", "less_equal": "blocks", "greater": "blocks", "greater_equal": "blocks",
    "equal": "blocks", "not_equal": "blocks", "argmax": "blocks", "one_hot": "blocks",
    "random_uniform": "int state", "numel": "shape only",
    "isnan": "blocks", "isinf": "blocks", "isfinite": "blocks",
    "scan_output": "autodiff hands its gradient to its loop, whose rule takes them all",
    "allreduce_start": "the split allreduce is built after differentiation (data parallel)",
    "allreduce_wait": "the split allreduce is built after differentiation (data parallel)",
}


def _ops_in(case):
    _, _, out = build_case(case, case_arrays(case))
    seen, stack = set(), [out.node]
    while stack:
        n = stack.pop()
        seen.add(n.op.name)
        stack.extend(n.inputs)
    return seen


_GRAD_OPS = set().union(*[_ops_in(c) for c in GRAD_CASES])


@pytest.mark.parametrize("op", sorted(REGISTRY))
def test_every_op_in_the_registry_is_gradient_checked(op):
    """Adding an op without a gradient-checked case (or a reason it has none) fails here."""
    if op in NO_GRADIENT:
        return
    assert REGISTRY[op].grad is not None, f"{op} has no gradient rule"
    assert op in _GRAD_OPS, f"no gradient-checked case in tests/op_cases.py uses {op}"


@pytest.mark.parametrize("make, culprit", [
    (lambda x: gc.sum(gc.one_hot(gc.argmax(x, 1), 3)), "argmax"),
    (lambda x: gc.sum(gc.cast(x > 0, "float64")), "greater"),
    (lambda x: gc.sum(gc.cast(gc.cast(x, "int64"), "float64")), "cast"),
    (lambda x: gc.sum(gc.cast(gc.argmax(x, 0), "float64") * x), None),  # x still has a path
])
def test_non_differentiable_paths_raise_naming_the_op(make, culprit):
    x = gc.placeholder("x", (4, 3), "float64")
    cost = make(x)
    if culprit is None:
        assert gc.grad(cost, x).shape == (4, 3)
        return
    with pytest.raises(gc.GraphError) as err:
        gc.grad(cost, x)  # the error names the op and the user's line that created it
    assert repr(culprit) in str(err.value) and "test_gradients.py" in str(err.value)


@pytest.mark.parametrize("make, culprit", [
    (lambda x: gc.argmax(x, 0), "argmax"),
    (lambda x: gc.cast(x, "int64").sum(), "cast"),
    (lambda x: (x < 1).sum(), "less"),
])
def test_a_cost_that_is_not_a_float_names_the_op_it_comes_from(make, culprit):
    """An integer or boolean cost (an argmax, a comparison, an integer cast, then perhaps
    a sum) names the op where the floats end and its line, not only the dtype."""
    x = gc.placeholder("x", (3,), "float64")
    with pytest.raises(gc.GraphError, match=rf"(?s)float tensor.*{culprit} .*test_gradients"):
        gc.grad(make(x), x)


def test_where_condition_gets_zero_not_an_error():
    x = gc.placeholder("x", (3,), "float64")
    y = gc.placeholder("y", (3,), "float64")
    g = gc.grad(gc.sum(gc.where(x > 0, y, 2 * y)), x)  # x only steers the choice
    np.testing.assert_array_equal(gc.compile([x, y], g)(np.ones(3), np.ones(3)), 0)
    gx = gc.grad(gc.sum(x * (x > 0)), x)  # a mask next to a real path (relu by hand)
    np.testing.assert_array_equal(gc.compile([x], gx)(np.array([-1.0, 2.0, 3.0])), [0, 1, 1])


def test_grad_argument_errors():
    x = gc.placeholder("x", (3,), "float64")
    k = gc.placeholder("k", (3,), "int64")
    with pytest.raises(gc.GraphError, match="scalar"):
        gc.grad(x * 2, x)
    with pytest.raises(gc.GraphError, match="integer"):
        gc.grad(gc.sum(x * k), k)
    other = gc.placeholder("z", (3,), "float64")
    with pytest.raises(gc.GraphError, match="does not depend"):
        gc.grad(gc.sum(x), other)
    zero = gc.grad(gc.sum(x), other, allow_unused=True)
    np.testing.assert_array_equal(gc.compile([other], zero)(np.ones(3)), 0)


def test_fan_out_contributions_are_summed():
    x = gc.placeholder("x", (), "float64")
    y = x * x + gc.exp(x) * x - 3 * x
    g = gc.compile([x], gc.grad(y, x))(np.float64(0.7))
    np.testing.assert_allclose(g, 2 * 0.7 + np.exp(0.7) * 1.7 - 3)


def test_gradient_wrt_intermediate_and_list():
    x = gc.placeholder("x", (2, 3), "float64")
    h = gc.tanh(x)
    cost = gc.sum(h * h)
    gh, gx = gc.grad(cost, [h, x])
    a = np.random.default_rng(0).normal(size=(2, 3))
    vh, vx = gc.compile([x], [gh, gx])(a)
    np.testing.assert_allclose(vh, 2 * np.tanh(a))
    np.testing.assert_allclose(vx, 2 * np.tanh(a) * (1 - np.tanh(a) ** 2))


def test_broadcasting_gradients_sum_back_to_input_shapes():
    a = gc.placeholder("a", (2, 1, 4), "float64")
    b = gc.placeholder("b", (3, 1), "float64")
    c = gc.placeholder("c", (), "float64")
    ga, gb, gc_ = gc.grad(gc.sum((a * b + c) ** 2), [a, b, c])
    assert ga.shape == (2, 1, 4) and gb.shape == (3, 1) and gc_.shape == ()
    rng = np.random.default_rng(0)
    gc.check_grad(lambda xs: gc.sum((xs[0] * xs[1] + xs[2]) ** 2),
                  [rng.normal(size=(2, 1, 4)), rng.normal(size=(3, 1)), rng.normal()])


def test_summing_leading_axes_needs_no_reshape_either_way():
    """A bias's gradient (broadcasting over new leading axes undone) is one sum, and the
    gradient of a sum over leading axes (a mean over everything, over the batch) broadcasts
    g as it is: neither puts a reshape in the graph. Summing back a kept axis of size 1
    still reshapes. Values: finite differences, above and in the op table."""
    from graphc.ir.graph import topological

    def ops_of(*outputs):
        return {n.op.name for n in topological(t.node for t in outputs)}

    x = gc.placeholder("x", ("N", 3), "float64")
    b = gc.placeholder("b", (3,), "float64")
    gb, gx = gc.grad(gc.mean((x + b) ** 2), [b, x])
    assert gb.shape == (3,) and gx.shape == (x.shape[0], 3)
    assert "reshape" not in ops_of(gb, gx)
    col = gc.placeholder("col", (1, 3), "float64")
    (gcol,) = gc.grad(gc.sum((x * col) ** 2, axis=1).sum(), [col])
    assert gcol.shape == (1, 3) and "reshape" in ops_of(gcol)


def test_symbolic_batch_gradients():
    x = gc.placeholder("x", ("N", 3), "float64")
    w = gc.placeholder("w", (3,), "float64")
    cost = gc.mean(gc.square(x @ w))  # divides by N, whatever N is
    gw = gc.compile([x, w], gc.grad(cost, w))
    for n in (2, 5):
        a, v = np.ones((n, 3)), np.array([1.0, 2.0, 3.0])
        np.testing.assert_allclose(gw(a, v), 2 * (a @ v) @ a / n)


# -- property tests over random shapes ------------------------------------------------------

shapes = st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple)


@settings(max_examples=25, deadline=None)
@given(shape=shapes, drop=st.lists(st.booleans(), min_size=3, max_size=3),
       op=st.sampled_from(["add", "sub", "mul", "div", "maximum", "pow"]))
def test_binary_broadcast_gradients_random_shapes(shape, drop, op):
    other = tuple(1 if d else s for s, d in zip(shape, drop))
    rng = np.random.default_rng(len(shape))
    a = rng.uniform(0.5, 1.5, shape)
    b = rng.uniform(0.5, 1.5, other) + 0.01
    fn = getattr(gc.ops, op)
    gc.check_grad(lambda xs: gc.sum(fn(xs[0], xs[1]) * 1.3), [a, b], rtol=1e-5)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple),
       data=st.data(), keep=st.booleans(),
       op=st.sampled_from(["sum", "mean", "max", "min", "logsumexp"]))
def test_reduction_gradients_random_axes(shape, data, keep, op):
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), unique=True, max_size=len(shape)))
    axis = tuple(axes) if axes else None
    x = np.random.default_rng(7).permutation(np.prod(shape)).reshape(shape) / 7.0  # no ties
    fn = getattr(gc, op)
    # eps 1e-5: sum(lse**2) is ~100 here, and a 1e-6 step leaves the central difference of
    # such a cost with ~1e-8 rounding noise, 1e-5 of a 1e-3 gradient element
    gc.check_grad(lambda xs: gc.sum(fn(xs[0], axis, keepdims=keep) ** 2), [x], eps=1e-5,
                  rtol=1e-5)


# -- second order ---------------------------------------------------------------------------

SECOND_ORDER = {
    "elementwise": (lambda x: gc.sum(gc.tanh(x) * gc.sigmoid(x) + gc.exp(-x * x)), [(3, 4)]),
    "matmul": (lambda x, a: gc.sum((x @ a) * (x @ a)), [(3, 4), (4, 2)]),
    "reductions": (lambda x: gc.logsumexp(x, 1).sum() + gc.max(x, 0).sum() * gc.mean(x),
                   [(3, 4)]),
    "softmax": (lambda x: gc.sum(gc.softmax(x) * gc.log_softmax(x, 0)), [(3, 4)]),
    "cross_entropy": (lambda z: F.cross_entropy(z, gc.constant(np.array([0, 2, 1]))), [(3, 4)]),
    "bce": (lambda z: F.binary_cross_entropy_with_logits(z, gc.constant(np.full((3, 4), 0.3))),
            [(3, 4)]),
    "mse": (lambda a, b: F.mse_loss(a, b) * F.l1_loss(a, b), [(3, 4), (3, 4)]),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_second_derivatives(name):
    f, shapes_ = SECOND_ORDER[name]
    rng = np.random.default_rng(11)
    arrays = [rng.uniform(-1, 1, s) for s in shapes_]
    weights = [rng.uniform(0.5, 1.5, s) for s in shapes_]

    def grad_cost(xs):  # a scalar function of the first derivatives
        grads = gc.grad(f(*xs), xs)
        return sum(gc.sum(g * gc.constant(w)) for g, w in zip(grads, weights))

    gc.check_grad(grad_cost, arrays, rtol=1e-5)


def test_hessian_vector_product_matches_closed_form():
    x = gc.placeholder("x", (4,), "float64")
    v = gc.placeholder("v", (4,), "float64")
    A = np.random.default_rng(0).normal(size=(4, 4))
    cost = gc.sum(x * (gc.constant(A) @ x)) + gc.sum(x**3)  # H = A + A^T + diag(6x)
    hv = gc.compile([x, v], gc.hessian_vector_product(cost, x, v))
    xv, vv = np.array([0.1, -0.3, 0.5, 0.2]), np.array([1.0, 2.0, -1.0, 0.5])
    np.testing.assert_allclose(hv(xv, vv), (A + A.T + np.diag(6 * xv)) @ vv, rtol=1e-10)


def test_gradients_are_graphs_that_can_be_drawn_and_compiled():
    x = gc.placeholder("x", (3,), "float64")
    g = gc.grad(gc.sum(gc.sigmoid(x)), x)
    assert isinstance(g, gc.Tensor) and g.graph is x.graph
    assert "#ffe0cc" in gc.viz.to_dot(g).source
    y = gc.sigmoid(np.array([0.0, 1.0, -2.0]))
    np.testing.assert_allclose(gc.compile([x], g)(np.array([0.0, 1.0, -2.0])),
                               gc.compile([], y)() * (1 - gc.compile([], y)()))
    ops_used = {n.op.name for n in gc.compile([x], g, optimize=False).graph.nodes}
    assert {"sigmoid", "sub", "mul"} <= ops_used  # y*(1 - y), built from the forward output


def test_derivative_formulas():
    assert str(gc.derivative("sigmoid")) in ("(1 - sigmoid(x))*sigmoid(x)",
                                             "sigmoid(x)*(1 - sigmoid(x))")
    assert str(gc.derivative("tanh")) == "1 - tanh(x)**2"
    assert str(gc.derivative("mul", 1)) == "x"
    assert "0.2" in str(gc.derivative("leaky_relu", alpha=0.2))
    with pytest.raises(gc.GraphError):
        gc.derivative("matmul")


def test_check_grad_reports_a_mismatch():
    # at the kink relu'(0) is 0 by convention, while the central difference gives 1/2
    with pytest.raises(AssertionError) as err:
        gc.check_grad(lambda xs: gc.sum(gc.relu(xs[0])), [np.array([0.0, 1.0])])
    report = str(err.value)
    assert "x0" in report and "(0,)" in report and "analytic" in report and "0.5" in report


@pytest.mark.parametrize("exponent,want", [(2, [0, 2, -4, 6]), (3, [0, 3, 12, 27]),
                                           (1, [1, 1, 1, 1]), (0, [0, 0, 0, 0])])
def test_power_gradient_is_finite_at_a_zero_base(exponent, want):
    """PyTorch's values: d(x**n)/dx = n*x**(n-1), 0 for n = 0 (sympy's x**n*n/x is 0/0)."""
    x = gc.placeholder("x", (4,), "float64")
    for optimize in (True, False):
        got = gc.compile([x], gc.grad((x**exponent).sum(), x), optimize=optimize)(
            np.array([0.0, 1, -2, 3]))
        np.testing.assert_allclose(got, want)


def test_power_gradients_with_a_tensor_exponent():
    x, y = gc.placeholder("x", (4,), "float64"), gc.placeholder("y", (4,), "float64")
    gx, gy = gc.grad((x**y).sum(), [x, y])
    dx, dy = gc.compile([x, y], [gx, gy])(np.array([0.0, 0, 2, 3]), np.array([0.0, 2, 0, 1.5]))
    np.testing.assert_allclose(dx, [0, 0, 0, 1.5 * 3**0.5])
    np.testing.assert_allclose(dy, [0, 0, np.log(2), 3**1.5 * np.log(3)])  # 0 at base 0, y >= 0
    gc.check_grad(lambda p: (p[0] ** p[1]).sum(), [np.array([0.5, 1.5, 2.0]),
                                                   np.array([0.3, -1.0, 2.0])])


def test_check_grad_accepts_an_input_the_function_ignores():
    assert gc.check_grad(lambda p: (p[0] ** 2).sum(), [np.ones(3), np.ones(2)]) < 1e-6


@pytest.mark.parametrize("write", [lambda s: 1 - s, lambda s: -s + 1, lambda s: 1 + (-s)])
def test_gradient_of_log_one_minus_sigmoid_is_stable_however_written(write):
    x = gc.placeholder("x", (3,), "float64")
    cost = gc.log(write(gc.sigmoid(x))).sum()
    value, g = gc.compile([x], [cost, gc.grad(cost, x)])(np.array([1000.0, -1000.0, 0.0]))
    assert np.isfinite(value)
    np.testing.assert_allclose(g, [-1, 0, -0.5], atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_relu_gradient_read_from_its_output_at_hostile_values(backend):
    """relu' is written with relu's output (derivative_of_output): 0 where x <= 0 (-0.0,
    -inf included), 1 elsewhere (NaN included, as PyTorch), exactly as the derivative of
    relu's own expression; and the backward pass no longer reads relu's input."""
    x = gc.placeholder("x", (8,), "float64")
    h = x * 1.5
    g = gc.grad((gc.relu(h) * 2.0).sum(), x)
    fn = gc.compile([x], g, backend=backend)
    got = fn(np.array([np.nan, -0.0, 0.0, np.inf, -np.inf, -1.0, 2.0, 1e-300]))
    np.testing.assert_array_equal(got, [3.0, 0, 0, 3.0, 0, 0, 3.0, 3.0])
    nodes = gc.compile([x], g, optimize=False).graph.nodes
    (relu,) = [n for n in nodes if n.op.name == "relu"]
    assert [n.op.name for n in nodes if relu.inputs[0] in n.inputs] == ["relu"]


def test_check_grad_leaves_batch_norm_statistics_and_random_states_alone():
    """A training-mode batch norm does not read its running statistics, so the checks'
    frozen state missed them: 24 evaluations advanced them 24 times. The model must come out
    untouched, by check_grad and by check_vjp (dropout's state was frozen already)."""
    bn = gc.nn.BatchNorm1d(3, dtype="float64")
    drop = gc.nn.Dropout(0.5)
    x = np.random.default_rng(0).standard_normal((4, 3))
    weights = gc.constant(np.arange(12.0).reshape(4, 3))
    before = {k: v.copy() for k, v in {**bn.state(), **drop.state()}.items()}
    gc.check_grad(lambda p: (bn(p[0]) * weights).sum(), [x])
    gc.check_vjp(lambda p: bn(p[0]) * weights, [x], rtol=1e-3)  # (state, not precision)
    gc.check_grad(lambda p: (drop(p[0]) * weights).sum(), [x])
    for k, v in {**bn.state(), **drop.state()}.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_the_gradient_of_a_division_by_b_is_finite_where_pytorchs_is(backend):
    """-a / b**2 overflowed or underflowed in b**2: a = b = 1e-25 (float32) gave -inf for
    -1e25. PyTorch's form, -(a / b) / b, is used."""
    import torch

    a, b = gc.placeholder("a", (5,)), gc.placeholder("b", (5,))
    av = np.array([1e-25, 1e25, 1e30, 0.0, 1.0], np.float32)
    bv = np.array([1e-25, 1e25, 1e20, 0.0, np.inf], np.float32)
    got = gc.compile([a, b], gc.grad(gc.sum(a / b), b), backend=backend)(av, bv)
    tb = torch.tensor(bv, requires_grad=True)
    (torch.tensor(av) / tb).sum().backward()
    np.testing.assert_allclose(got, tb.grad.numpy(), rtol=1e-6)
    assert np.signbit(got[4])
