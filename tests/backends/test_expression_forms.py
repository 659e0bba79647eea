"""Every expression form a pass can emit lowers on every backend, with NumPy's results.

An elementwise node carries a sympy tree made of `graphc.ops.expr.EXPRESSION_TYPES` only
(checked when the node is built). This table has at least one expression per type — in the
evaluated forms of op templates and derivatives and in the unevaluated forms fusion composes —
and each is compiled on numpy, llvm and emulated cuda and fed zeros, infinities and NaN.
"""

import numpy as np
import pytest
import sympy

import graphc as gc
from graphc.ops import expr as E

x0, x1, x2 = E.inputs(3)  # x2 is a bool input
N = sympy.Integer


C = sympy.Symbol("c")  # a boolean placeholder in templates


def raw(expr, **subs):
    """`expr` with symbols replaced and nothing evaluated (what fusion builds)."""
    symbols = {s.name: s for s in expr.free_symbols}
    return E.compose(expr, {symbols[k]: v for k, v in subs.items()})


FLOAT_FORMS = {
    "sum_of_three": sympy.Add(x0, x1, x0, evaluate=False),
    "difference": sympy.Add(x0, sympy.Mul(-1, x1, evaluate=False), evaluate=False),
    "self_difference": sympy.Add(x0, sympy.Mul(-1, x0, evaluate=False), evaluate=False),
    "quotient": sympy.Mul(x0, sympy.Pow(x1, -1, evaluate=False), evaluate=False),
    "scaled_product": sympy.Rational(1, 3) * x0 * x1,
    "negation": sympy.Mul(-1, x0, evaluate=False),
    "float_constant": sympy.Float(2.5) * x0 + sympy.Float(-0.125),
    "square": x0**2,
    "cube": x0**3,
    "reciprocal": 1 / x0,
    "inverse_square": x0**-2,
    "sqrt": sympy.sqrt(x0),
    "rsqrt": 1 / sympy.sqrt(x0),
    "float_power": sympy.Pow(x0, sympy.Float(0.5), evaluate=False),
    "tensor_power": x0**x1,
    "rational_power": sympy.Pow(x0, sympy.Rational(3, 2), evaluate=False),
    "sqrt_squared": sympy.Pow(sympy.sqrt(x0), 2, evaluate=False),
    "functions": sympy.exp(x0) + sympy.log(x1) + sympy.tanh(x0) + sympy.Abs(x1),
    "sign": sympy.sign(x0),
    "graphc_functions": E.sigmoid(x0) + E.softplus(x1) + E.log1p(x0) + E.expm1(x1),
    "trigonometry_erf": sympy.sin(x0) + sympy.cos(x1) + sympy.tan(x0) + sympy.atan(x1)
    + sympy.erf(x0),
    "logs_and_rounding": E.log2(x0) + E.log10(x1) + E.floor_value(x0) + E.ceil_value(x1)
    + E.round_even(x0),
    "power_of_two": sympy.Integer(2) ** x0,
    # a repeated subexpression inside a reciprocal: NumPy's printer once defined its temporary
    # in text it then dropped (NameError: _r0), found by the differential fuzzer
    "reciprocal_of_repeated": sympy.Pow(sympy.Piecewise((x0 * 1.5, x0 * 1.5 < x1), (x1, True)),
                                        -1, evaluate=False),
    # a reciprocal (or rsqrt) fused into a product: computed alone, then multiplied, as the
    # two ops compute it unfused (as a division, 0 * (1/1e-40) = 0 * inf = NaN became 0)
    "reciprocal_factor": raw(x0 * sympy.Symbol("y"), y=1 / x1),
    "rsqrt_factor": raw(sympy.Float(2.0) * sympy.Symbol("y"), y=1 / sympy.sqrt(x0)),
    "tie_and_nan_of": sympy.Piecewise((E.tie(x0, x1), sympy.Eq(x0, x1)), (E.nan_of(x0, x1),
                                                                          True)),
    "floordiv_mod": E.floordiv(x0, x1) + E.mod(x0, x1),
    "nan_constant": sympy.Piecewise((sympy.nan, x0 > 1), (x0, True)),
    "piecewise_without_default": sympy.Piecewise((x0, x0 > 0), (x1, x1 > 0)),
    "relations": sympy.Piecewise((x0, (x0 < x1) & (x0 <= 0.5)), (x1, (x0 > x1) | (x0 >= 2)),
                                 (0.25, sympy.Ne(x0, x0)), (0.75, True)),
    "self_equality": raw(sympy.Piecewise((x1, sympy.Eq(x0, x1)), (sympy.Float(0.5), True)),
                         x1=x0),
    "not": raw(sympy.Piecewise((x0, sympy.Not(C)), (x1, True)), c=x0 > x1),
    "nan_tests": sympy.Piecewise((0.5, E.isnan(x0)), (1.5, E.isinf(x1)), (x0, True)),
    "bool_input": sympy.Piecewise((x0, sympy.Ne(x2, 0)), (x1, True)),
    "bool_constants": raw(sympy.Piecewise((x0, sympy.Ne(x2, 0)), (x1, True)), x2=sympy.true)
    + raw(sympy.Piecewise((x0, sympy.Ne(x2, 0)), (x1, True)), x2=sympy.false),
    "condition_over_piecewise": raw(sympy.Piecewise((x1, x2 > 0.5), (x0, True)),
                                    x2=sympy.Piecewise((x0, x0 > x1), (x1, True))),
}
INT_FORMS = {
    "arithmetic": sympy.Add(x0 * x1, sympy.Mul(-1, x0, evaluate=False), N(7), evaluate=False),
    "powers": x0**3 + x0**x1 + sympy.Pow(x0, -1, evaluate=False),
    "floordiv_mod": E.floordiv(x0, x1) + E.mod(x0, x1),
    "abs_sign": sympy.Abs(x0) + sympy.sign(x1),
    "extrema": sympy.Piecewise((x0, x0 > x1), (x1, x0 < x1), (E.tie(x0, x1), sympy.Eq(x0, x1)),
                               (E.nan_of(x0, x1), True)),
    "nan_tests": sympy.Piecewise((N(1), E.isnan(x0) | E.isinf(x1)), (x0, True)),
}


def _arrays(dtype):
    if np.dtype(dtype).kind == "f":
        a = np.array([0.0, -0.0, 1.5, -2.5, np.inf, -np.inf, np.nan, 3.0, 0.25, 2.0, -1.0, 1.0])
        b = np.array([0.0, 2.0, 1.5, np.inf, 3.0, -np.inf, 1.0, np.nan, -0.5, 2.0, 0.0, -1.0])
    else:
        info = np.iinfo(dtype)
        a = np.array([0, 7, -7, 7, -7, info.min, info.min, 3, 2, -1, 1, info.max])
        b = np.array([0, 2, 2, -2, -3, -1, 1, 0, 5, 3, -2, 2])
    c = np.array([True, False] * 6)
    return [a.astype(dtype), b.astype(dtype), c]


def _run(expr, dtype, backend, options):
    inputs = [gc.placeholder("a", (12,), dtype), gc.placeholder("b", (12,), dtype),
              gc.placeholder("c", (12,), "bool")]
    out = gc.ops.elemwise(expr, inputs, dtype=dtype)
    fn = gc.compile(inputs, out, backend=backend, optimize=False, backend_options=options)
    return fn(*_arrays(dtype))


BACKENDS = [("llvm", None), ("cuda", {"emulate": True})]
CASES = [(name, expr, dt) for name, expr in FLOAT_FORMS.items() for dt in ("float64", "float32")]
CASES += [(name, expr, dt) for name, expr in INT_FORMS.items() for dt in ("int64", "int32")]


@pytest.mark.parametrize("backend,options", BACKENDS, ids=["llvm", "cuda-emulated"])
@pytest.mark.parametrize("name,expr,dtype", CASES, ids=[f"{n}-{d}" for n, _, d in CASES])
def test_form_lowers_like_numpy(name, expr, dtype, backend, options):
    with np.errstate(all="ignore"):
        want = _run(expr, dtype, "numpy", None)
        got = _run(expr, dtype, backend, options)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == "float32" else 1e-12)


def test_every_expression_type_has_a_form():
    seen = set()
    for expr in [*FLOAT_FORMS.values(), *INT_FORMS.values()]:
        seen |= {type(e) for e in sympy.preorder_traversal(expr)}
    missing = [t.__name__ for t in E.EXPRESSION_TYPES
               if not any(issubclass(s, t) for s in seen)]
    assert not missing, f"expression types without a form in this table: {missing}"


def test_anything_else_is_refused_when_the_node_is_built():
    a = gc.placeholder("a", (3,), "float64")
    for bad in (sympy.Max(x0, 1), sympy.floor(x0), sympy.sinh(x0), sympy.Symbol("y") + x0,
                x0 + x1):
        with pytest.raises(gc.GraphError):
            gc.ops.elemwise(bad, [a], dtype="float64")


@pytest.mark.parametrize("dtype", ["int32", "int64", "float64"])
def test_a_truth_value_beside_a_number_in_one_piecewise(dtype):
    """where(c, a != b, False) fuses into Piecewise((Ne(a, b), c), (0, True)): a bool branch
    beside a numeric one (ONNX's truncating integer division is built so). The native emitter
    once handed LLVM's select an i1 and an integer."""
    a, b = gc.placeholder("a", (6,), dtype), gc.placeholder("b", (6,), dtype)
    q, r = gc.floor_divide(a, b), gc.remainder(a, b)
    fix = gc.where(r != 0, (a < 0) != (b < 0), False)
    trunc = gc.where(fix, q + 1, q)
    av = np.array([7, -7, 7, -7, 5, 0], dtype)
    bv = np.array([2, 2, -2, -2, 3, 4], dtype)
    for backend, options in [("numpy", None), ("llvm", None),
                             ("cuda", {"emulate": True, "verify": False})]:
        got = gc.compile([a, b], [trunc, fix], backend=backend, backend_options=options)(av, bv)
        np.testing.assert_array_equal(got[0], np.trunc(av / bv).astype(dtype), err_msg=backend)
        np.testing.assert_array_equal(got[1], (np.remainder(av, bv) != 0) & ((av < 0) != (bv < 0)))


OUTER_FORMS = {"sum_of_three": "np.add", "difference": "np.subtract",
               "self_difference": "np.subtract", "quotient": "np.divide",
               "scaled_product": "np.multiply", "negation": "np.negative",
               "float_constant": "np.add", "functions": "np.add",
               "graphc_functions": "np.add"}


@pytest.mark.parametrize("name,expr,dtype", CASES, ids=[f"{n}-{d}" for n, _, d in CASES])
def test_the_outer_operation_computes_the_whole_expression(name, expr, dtype):
    """numpy_outer_operation's ``ufunc(*operands)`` (the NumPy backend writes a parameter's
    new value so, ``out=`` the parameter) gives the bits of the whole printed expression, on
    zeros, infinities and NaN; forms that do not end in one ufunc (a function, a select, a
    shared subexpression, a power) give None."""
    from graphc.ops.expr_numpy import NUMPY_NAMESPACE, numpy_outer_operation, numpy_source

    integer = np.dtype(dtype).kind in "iu"
    names = {x0: "a", x1: "b", x2: "c"}
    outer = numpy_outer_operation(expr, names, integer=integer)
    if name not in OUTER_FORMS or integer:
        if outer is None:
            return
    assert outer is not None and outer[0] == OUTER_FORMS.get(name, outer[0]), outer
    a, b, c = _arrays(dtype)
    scope = {**NUMPY_NAMESPACE, "a": a, "b": b, "c": c}
    with np.errstate(all="ignore"):
        want = np.asarray(eval(numpy_source(expr, names, integer=integer), scope))
        ufunc = eval(outer[0], scope)
        operands = [eval(text, scope) for text in outer[1]]
        got = np.asarray(ufunc(*operands))
        into = np.full(np.broadcast_shapes(*(np.shape(o) for o in operands), (12,)), 7,
                       want.dtype)
        ufunc(*operands, out=into)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    assert into.tobytes() == np.broadcast_to(want, into.shape).tobytes()


def test_forms_that_end_in_no_single_ufunc_have_no_outer_operation():
    from graphc.ops.expr_numpy import numpy_outer_operation

    names = {x0: "a", x1: "b"}
    for name in ("sqrt", "square", "reciprocal", "tensor_power", "relations", "sign",
                 "reciprocal_of_repeated", "nan_constant", "power_of_two"):
        assert numpy_outer_operation(FLOAT_FORMS[name], names) is None, name
    shared = sympy.Add(x0 * x1, sympy.exp(x0 * x1), evaluate=False)  # a temporary for x0*x1
    assert numpy_outer_operation(shared, names) is None
