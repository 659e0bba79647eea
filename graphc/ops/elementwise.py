"""Elementwise ops, each defined by one sympy expression of its inputs.

Nothing here has a hand-written derivative or NumPy kernel. For every elementwise op:

* the shape rule is NumPy broadcasting,
* the reference semantics are the expression printed as NumPy (`expr.numpy_function`),
* the gradient w.r.t. input i is ``sympy.diff(expr, x_i)`` (occurrences of the op's own
  expression replaced by its output, so sigmoid' becomes ``y*(1 - y)``), turned back into
  graph nodes by `from_expr`.

``elemwise`` is the generic member of the family: its expression is an attribute. Fusion
produces it, and it is what any sympy expression becomes when no named op matches.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy

from ..errors import GraphError, ScalarRangeError
from ..ir.node import Attrs
from ..ir.tensor import Tensor, apply, graph_of
from ..ir.types import DEFAULT_FLOAT, TensorType, promote, scalar_dtype
from . import expr as E
from .expr_numpy import numpy_function
from .loops import elementwise_loops
from .registry import ZERO, OpDef, register
from .sources import constant

x0, x1, x2 = E.inputs(3)


# -- the generic rules every elementwise op shares -------------------------------------------


def _infer(types: list[TensorType], attrs: Attrs, checks, *, op: OpDef) -> TensorType:
    shape = checks.broadcast(*[t.shape for t in types])
    spec = op.extra
    if spec.get("out") == "bool":
        dtype = np.dtype(bool)
    elif "dtype" in attrs:  # a generic elemwise node: its value inputs have its dtype
        E.check_expression(attrs["expr"], len(types))
        dtype = attrs["dtype"]
        values = {t.dtype for t in types if t.dtype != np.dtype(bool)}
        if values - {dtype} and dtype != np.dtype(bool):
            raise GraphError(f"an elemwise node of dtype {dtype} got inputs of dtype "
                             f"{', '.join(sorted(str(d) for d in values))}")
    else:
        value_types = [t for i, t in enumerate(types) if i not in spec.get("bool_inputs", ())]
        dtypes = {t.dtype for t in value_types}
        if len(dtypes) > 1:
            raise GraphError(
                "inputs of an elementwise node must share one dtype (the DSL inserts casts); "
                f"got {', '.join(sorted(str(d) for d in dtypes))}"
            )
        dtype = value_types[0].dtype
        if spec.get("no_bool") and dtype == np.dtype(bool):
            # (NumPy refuses -a and sign(a) of booleans, and its // and % of two would be
            # int8, a dtype graphc lacks: the native kernels' 1-bit arithmetic gave others)
            raise GraphError(f"{op.name} of booleans is not defined (as in NumPy): cast them "
                             "to an integer dtype first")
    return TensorType(dtype, shape)


def value_dtype(dtypes) -> np.dtype:
    """The dtype an elementwise expression computes in: that of its non-bool inputs (one
    dtype: the DSL casts, fusion keeps groups of one dtype), else bool."""
    values = {np.dtype(d) for d in dtypes if np.dtype(d) != np.dtype(bool)}
    return max(values, key=lambda d: (d.kind == "f", d.itemsize)) if values else np.dtype(bool)


def _reference(op: OpDef):
    def run(*arrays, **attrs):
        arrays = [np.asarray(a) for a in arrays]
        integer = value_dtype(a.dtype for a in arrays).kind in "iu"
        fn = numpy_function(op.expr(Attrs(attrs)), len(arrays), integer)
        with np.errstate(all="ignore"):
            out = fn(*arrays)
        if op.extra.get("out") == "bool":
            dtype = np.dtype(bool)
        elif "dtype" in attrs:
            dtype = attrs["dtype"]
        else:
            bool_inputs = op.extra.get("bool_inputs", ())
            dtype = next(a.dtype for i, a in enumerate(arrays) if i not in bool_inputs)
        shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
        out = np.asarray(out, dtype=dtype)
        return out if out.shape == shape else np.broadcast_to(out, shape).copy()

    return run


def output_symbol() -> sympy.Symbol:
    """Stands for an op's own output inside its derivative (y in sigmoid' = y(1-y))."""
    return sympy.Symbol("y", real=True)


def _elementwise_grad(ctx) -> list:
    """d cost / d x_i = sum_to_shape(g * d expr / d x_i), built as graph nodes."""
    from .shape_ops import sum_to_shape

    node = ctx.node
    expr = node.op.expr(node.attrs)
    if isinstance(expr, sympy.logic.boolalg.Boolean):
        # comparisons: their output is bool and never carries a gradient
        return [ZERO] * len(ctx.inputs)
    g_sym, y_sym = sympy.Symbol("g", real=True), output_symbol()
    bool_inputs = node.op.extra.get("bool_inputs", ())
    results = []
    for i, x in enumerate(ctx.inputs):
        if i in bool_inputs or x.dtype.kind != "f":
            results.append(ZERO)
            continue
        of_output = node.op.extra.get("derivative_of_output")
        with_output = node.op.extra.get("derivatives_with_output", {}).get(i)
        d = of_output(y_sym) if of_output is not None else \
            with_output(y_sym) if with_output is not None else E.derivative(expr, i)
        if d == 0:
            results.append(ZERO)
            continue
        d = d.xreplace({expr: y_sym, 1 / expr: 1 / y_sym}) if not expr.is_Symbol else d
        total = sympy.piecewise_fold(g_sym * d)
        env = {g_sym: ctx.g, y_sym: ctx.out}
        env.update({E.sym_input(j): t for j, t in enumerate(ctx.inputs)})
        grad = from_expr(total, env, ctx.g.dtype)
        results.append(sum_to_shape(grad, x.shape))
    return results


def _define(name: str, arity: int, template, *, out: str = "same", float_only: bool = False,
            bool_inputs: tuple = (), doc: str = "", derivative_of_output=None,
            no_bool: bool = False, derivatives_with_output: dict | None = None) -> OpDef:
    """`derivative_of_output(y)`: for a one-input op, its derivative written with its output
    y alone, where that is the same function of the input as the derivative of `template`
    (NaN, infinities and signed zeros included): the gradient then reads the op's output,
    not its input, and the input has no other reader left (relu's input fuses into the op
    that makes it: a conv's bias and its ReLU are one pass). `derivatives_with_output`:
    input index -> its derivative written with the output y and the inputs, where that form
    rounds better than the template's own derivative (a / b: -y / b, not -a / b**2)."""
    templ = template if callable(template) else (lambda attrs, _t=template: _t)
    op = OpDef(name, "elementwise", infer=None, expr=lru_cache(maxsize=256)(templ), doc=doc,
               loops=elementwise_loops, extra={"arity": arity, "out": out, "float_only": float_only,
                      "bool_inputs": bool_inputs, "no_bool": no_bool,
                      "derivative_of_output": derivative_of_output,
                      "derivatives_with_output": derivatives_with_output or {}})
    op.infer = lambda types, attrs, checks, _op=op: _infer(types, attrs, checks, op=_op)
    op.reference = _reference(op)
    op.grad = _elementwise_grad
    return register(op)


def _relu(attrs):
    # NaN passes through (np.maximum(x, 0), torch.relu); relu'(0) = 0, relu'(NaN) = 1
    return sympy.Piecewise((0, x0 <= 0), (x0, True))


def _nan_propagating_choice(larger: bool):
    """maximum/minimum: NaN if either is NaN (x0 + x1: each side gets the full gradient, as in
    PyTorch); a tie is the tied value, each side getting half the gradient."""
    first, second = (x0 > x1, x0 < x1) if larger else (x0 < x1, x0 > x1)
    return sympy.Piecewise((x0, first), (x1, second), (E.tie(x0, x1), sympy.Eq(x0, x1)),
                           (x0 + x1, True))


NEG = _define("neg", 1, -x0, doc="-x", no_bool=True)
ADD = _define("add", 2, x0 + x1, doc="a + b")
SUB = _define("sub", 2, x0 - x1, doc="a - b", no_bool=True)
MUL = _define("mul", 2, x0 * x1, doc="a * b")
# d(a/b)/db as PyTorch computes it, -(a / b) / b: -a / b**2 overflowed (or underflowed) in
# b**2 where the gradient is finite (a = b = 1e-25 in float32: -inf for -1e25)
DIV = _define("div", 2, x0 / x1, float_only=True, doc="a / b (true division)",
              derivatives_with_output={1: lambda y: -y / x1})
POW = _define("pow", 2, x0**x1, doc="a ** b")
EXP = _define("exp", 1, sympy.exp(x0), float_only=True)
LOG = _define("log", 1, sympy.log(x0), float_only=True)
SQRT = _define("sqrt", 1, sympy.sqrt(x0), float_only=True)
ABS = _define("abs", 1, sympy.Abs(x0))
SIGN = _define("sign", 1, sympy.sign(x0), no_bool=True)
SQUARE = _define("square", 1, x0**2)
TANH = _define("tanh", 1, sympy.tanh(x0), float_only=True)
SIGMOID = _define("sigmoid", 1, E.sigmoid(x0), float_only=True)
SOFTPLUS = _define("softplus", 1, E.softplus(x0), float_only=True, doc="log(1 + exp(x)), stable")
LOG1P = _define("log1p", 1, E.log1p(x0), float_only=True)
EXPM1 = _define("expm1", 1, E.expm1(x0), float_only=True)
# relu'(x) = 0 where x <= 0, else 1 (NaN included), and relu(x) <= 0 exactly where x <= 0
# (relu(NaN) is NaN, relu(-0.0) is 0): the derivative is the same function of the output
RELU = _define("relu", 1, _relu, doc="max(x, 0); relu'(0) = 0",
               derivative_of_output=lambda y: sympy.Piecewise((0, y <= 0), (1, True)))
def _scaled(alpha: float, e: sympy.Expr) -> sympy.Expr:
    """``alpha * e``, kept a product when alpha is 0: ``0 * e`` is NaN for a NaN or infinite
    e and -0.0 for a negative one (IEEE, PyTorch), where sympy would fold it to the number 0
    and so erase a NaN."""
    c = sympy.Float(alpha)
    return E.unevaluated(sympy.Mul, (c, e)) if alpha == 0 else c * e


LEAKY_RELU = _define(
    "leaky_relu", 1,
    lambda attrs: sympy.Piecewise((x0, x0 > 0), (_scaled(attrs["alpha"], x0), True)),
    float_only=True,  # (its slope is a fraction: an int input gives float32, as elu's)
)
ELU = _define(
    "elu", 1,
    lambda attrs: sympy.Piecewise((x0, x0 > 0), (_scaled(attrs["alpha"], E.expm1(x0)), True)),
    float_only=True,
)
# Ties split the gradient evenly between the two inputs, as PyTorch does.
MAXIMUM = _define("maximum", 2, _nan_propagating_choice(larger=True))
MINIMUM = _define("minimum", 2, _nan_propagating_choice(larger=False))
WHERE = _define("where", 3, sympy.Piecewise((x1, sympy.Ne(x0, 0)), (x2, True)), bool_inputs=(0,),
                doc="where(cond, a, b); the gradient w.r.t. cond is zero")
# torch.clamp semantics: NaN if any operand is NaN (gradient 0 there); the gradient passes
# where lo <= x <= hi; lo > hi gives hi.
CLIP = _define("clip", 3, sympy.Piecewise(
    (E.nan_of(x0, x1, x2), sympy.Or(E.isnan(x0), E.isnan(x1), E.isnan(x2))),
    (x2, x1 > x2), (x1, x0 < x1), (x2, x0 > x2), (x0, True)))
LESS = _define("less", 2, x0 < x1, out="bool")
LESS_EQUAL = _define("less_equal", 2, x0 <= x1, out="bool")
GREATER = _define("greater", 2, x0 > x1, out="bool")
GREATER_EQUAL = _define("greater_equal", 2, x0 >= x1, out="bool")
EQUAL = _define("equal", 2, sympy.Eq(x0, x1), out="bool")
NOT_EQUAL = _define("not_equal", 2, sympy.Ne(x0, x1), out="bool")
ISNAN = _define("isnan", 1, E.isnan(x0), out="bool")
ISINF = _define("isinf", 1, E.isinf(x0), out="bool")
ISFINITE = _define("isfinite", 1, sympy.Not(sympy.Or(E.isnan(x0), E.isinf(x0))), out="bool")
# NumPy's floor division and modulo, for integers (by zero: 0, never a trap) and floats
FLOOR_DIVIDE = _define("floor_divide", 2, E.floordiv(x0, x1), doc="a // b, as NumPy",
                       no_bool=True)
REMAINDER = _define("remainder", 2, E.mod(x0, x1), doc="a % b (sign of b), as NumPy",
                    no_bool=True)
# The math of the course: each one sympy expression; its derivative is sympy's.
SIN = _define("sin", 1, sympy.sin(x0), float_only=True)
COS = _define("cos", 1, sympy.cos(x0), float_only=True)
TAN = _define("tan", 1, sympy.tan(x0), float_only=True)
ARCTAN = _define("arctan", 1, sympy.atan(x0), float_only=True)
ERF = _define("erf", 1, sympy.erf(x0), float_only=True)
LOG2 = _define("log2", 1, E.log2(x0), float_only=True)
LOG10 = _define("log10", 1, E.log10(x0), float_only=True)
EXP2 = _define("exp2", 1, sympy.Integer(2) ** x0, float_only=True, doc="2 ** x")
RECIPROCAL = _define("reciprocal", 1, 1 / x0, float_only=True, doc="1 / x")
RSQRT = _define("rsqrt", 1, x0 ** sympy.Rational(-1, 2), float_only=True, doc="1 / sqrt(x)")
FLOOR = _define("floor", 1, E.floor_value(x0), float_only=True, doc="np.floor; derivative 0")
CEIL = _define("ceil", 1, E.ceil_value(x0), float_only=True, doc="np.ceil; derivative 0")
ROUND = _define("round", 1, E.round_even(x0), float_only=True,
                doc="np.round: halves to even; derivative 0")
SOFTSIGN = _define("softsign", 1, x0 / (1 + sympy.Abs(x0)), float_only=True,
                   doc="x / (1 + |x|)")
# PyTorch's hardsigmoid, relu6(x + 3) / 6: NaN falls through both comparisons to (x + 3)/6
HARD_SIGMOID = _define("hard_sigmoid", 1, sympy.Piecewise(
    (0, x0 <= -3), (1, x0 >= 3), ((x0 + 3) / 6, True)), float_only=True,
    doc="relu6(x + 3) / 6 (PyTorch's hardsigmoid)")
SILU = _define("silu", 1, x0 * E.sigmoid(x0), float_only=True, doc="x * sigmoid(x)")


def _gelu(attrs):
    # PyTorch's formulas, its constants rounded once (sympy's sqrt(2) would stay symbolic)
    half = sympy.Float(0.5)
    if attrs.get("approximate", "none") == "tanh":
        inner = sympy.Float(math.sqrt(2 / math.pi)) * (x0 + sympy.Float(0.044715) * x0**3)
        return half * x0 * (1 + sympy.tanh(inner))
    return half * x0 * (1 + sympy.erf(x0 * sympy.Float(math.sqrt(0.5))))


GELU = _define("gelu", 1, _gelu, float_only=True,
               doc="x * Phi(x) (exact, with erf) or PyTorch's tanh approximation")
ELEMWISE = _define("elemwise", -1, lambda attrs: attrs["expr"],
                   doc="Any elementwise sympy expression of its inputs (fusion builds these).")


# -- lifting Python values and promoting dtypes ----------------------------------------------


def _is_weak(v) -> bool:
    return isinstance(v, (bool, int, float, np.generic)) or (
        isinstance(v, np.ndarray) and v.ndim == 0
    )


def lift(*values, float_only: bool = False) -> list[Tensor]:
    """Turn scalars/arrays into constants and cast tensors to one common dtype."""
    from .cast import cast

    graph = graph_of(*values)
    strong = []
    for v in values:
        if isinstance(v, Tensor):
            strong.append(v.dtype)
        elif not _is_weak(v):
            from .sources import constant_array

            strong.append(constant_array(v).dtype)
    if strong:
        common = promote(*strong)
    else:
        common = np.dtype(bool)
    for v in values:
        if _is_weak(v):
            item = v.item() if isinstance(v, (np.ndarray, np.generic)) else v
            common = promote(common, scalar_dtype(item, common))
    if float_only and common.kind != "f":
        common = DEFAULT_FLOAT
    out = []
    for v in values:
        if isinstance(v, Tensor):
            out.append(v if v.dtype == common else cast(v, common))
        else:  # (a NumPy scalar is weak too: checked as the Python number it holds)
            value = v.item() if _is_weak(v) and isinstance(v, (np.ndarray, np.generic)) else v
            out.append(constant(_literal(value, common), graph=graph))
    return out


_FLOAT_MAX = int(np.finfo(np.float64).max)


def _literal(value, dtype: np.dtype) -> np.ndarray:
    """`value` as an array of `dtype`. A Python int must fit it, as in NumPy 2: ``i + 2**40``
    on int32 raised nothing and added 0 (the constant wrapped); now it is refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if not info.min <= value <= info.max:
                raise ScalarRangeError(f"the Python integer {value} is out of bounds for "
                                       f"{dtype} (cast the tensor to a wider dtype first, as in "
                                       f"NumPy)")
        elif dtype.kind == "f" and not -_FLOAT_MAX <= value <= _FLOAT_MAX:
            raise ScalarRangeError(f"the Python integer {value} is too large for any float")
    return np.asarray(value).astype(dtype)


def _bool_condition(c) -> Tensor:
    if isinstance(c, Tensor):
        return c if c.dtype == bool else not_equal(c, 0)
    return constant(np.asarray(c, dtype=bool))


def _call(op: OpDef, *args, **attrs) -> Tensor:
    tensors = lift(*args, float_only=op.extra["float_only"])
    return apply(op, tensors, **attrs)


# -- the DSL functions -----------------------------------------------------------------------


def neg(x) -> Tensor:
    return _call(NEG, x)


def add(a, b) -> Tensor:
    return _call(ADD, a, b)


def sub(a, b) -> Tensor:
    return _call(SUB, a, b)


def mul(a, b) -> Tensor:
    return _call(MUL, a, b)


def div(a, b) -> Tensor:
    return _call(DIV, a, b)


def pow(a, b) -> Tensor:
    return _call(POW, a, b)


def exp(x) -> Tensor:
    return _call(EXP, x)


def log(x) -> Tensor:
    return _call(LOG, x)


def sqrt(x) -> Tensor:
    return _call(SQRT, x)


def abs(x) -> Tensor:
    return _call(ABS, x)


def sign(x) -> Tensor:
    return _call(SIGN, x)


def square(x) -> Tensor:
    return _call(SQUARE, x)


def tanh(x) -> Tensor:
    return _call(TANH, x)


def sigmoid(x) -> Tensor:
    return _call(SIGMOID, x)


def softplus(x) -> Tensor:
    return _call(SOFTPLUS, x)


def log1p(x) -> Tensor:
    return _call(LOG1P, x)


def expm1(x) -> Tensor:
    return _call(EXPM1, x)


def relu(x) -> Tensor:
    return _call(RELU, x)


def leaky_relu(x, alpha: float = 0.01) -> Tensor:
    return _call(LEAKY_RELU, x, alpha=float(alpha))


def elu(x, alpha: float = 1.0) -> Tensor:
    return _call(ELU, x, alpha=float(alpha))


def maximum(a, b) -> Tensor:
    return _call(MAXIMUM, a, b)


def minimum(a, b) -> Tensor:
    return _call(MINIMUM, a, b)


def where(cond, a, b) -> Tensor:
    """Choose a where cond is true, else b (broadcasting). cond gets no gradient."""
    c = _bool_condition(cond) if isinstance(cond, Tensor) else cond
    a, b = lift(a, b)
    c = c if isinstance(c, Tensor) else constant(np.asarray(c, dtype=bool), graph=a.graph)
    return apply(WHERE, [c, a, b])


def clip(x, lo, hi) -> Tensor:
    """Clamp x into [lo, hi] (lo/hi may be scalars or tensors). As in NumPy, None leaves that
    side open: the bound is then the farthest value of x's dtype (-inf/inf for floats), so
    the result keeps clip's dtype, NaN and gradient rules; with both None, x itself."""
    if lo is not None and hi is not None:
        return _call(CLIP, x, lo, hi)
    (t,) = lift(x)
    if lo is None and hi is None:
        return t
    if t.dtype.kind == "f":
        low, high = -math.inf, math.inf
    elif t.dtype.kind in "iu":
        info = np.iinfo(t.dtype)
        low, high = int(info.min), int(info.max)
    else:  # bool
        low, high = False, True
    return _call(CLIP, t, low if lo is None else lo, high if hi is None else hi)


def _out_of_range(tensor, value) -> int:
    """+1 or -1 when `value` is an integer (Python or NumPy, not bool) beyond what the
    integer `tensor` can hold, above or below; 0 otherwise."""
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
        value = value.item()
    if not isinstance(tensor, Tensor) or tensor.dtype.kind not in "iub" or \
            not isinstance(value, int) or isinstance(value, bool):
        return 0
    info = np.iinfo(np.int64 if tensor.dtype == bool else tensor.dtype)  # (bool meets int64)
    return 1 if value > info.max else -1 if value < info.min else 0


def _compare(op: OpDef, a, b) -> Tensor:
    """A comparison, where an integer beyond the tensor's dtype is compared as the number it
    is (NumPy 2's answer: ``int32 < 2**40`` is all true): the tensor widens to int64 when
    that holds the number, and beyond int64 the answer is the same for every element."""
    for tensor, value, flipped in ((a, b, False), (b, a, True)):
        side = _out_of_range(tensor, value)
        if not side:
            continue
        scalar = int(value)  # (a Python or NumPy integer, as _out_of_range found it)
        if np.iinfo(np.int64).min <= scalar <= np.iinfo(np.int64).max:
            from .cast import cast

            wide = cast(tensor, np.int64)
            return _call(op, scalar, wide) if flipped else _call(op, wide, scalar)
        # every element is below the number (side +1) or above it (side -1)
        below = side > 0
        if flipped:  # number OP tensor
            below = not below
        verdict = {"less": below, "less_equal": below, "greater": not below,
                   "greater_equal": not below, "equal": False, "not_equal": True}[op.name]
        return _call(EQUAL if verdict else NOT_EQUAL, tensor, tensor)
    return _call(op, a, b)


def less(a, b) -> Tensor:
    return _compare(LESS, a, b)


def less_equal(a, b) -> Tensor:
    return _compare(LESS_EQUAL, a, b)


def greater(a, b) -> Tensor:
    return _compare(GREATER, a, b)


def greater_equal(a, b) -> Tensor:
    return _compare(GREATER_EQUAL, a, b)


def equal(a, b) -> Tensor:
    return _compare(EQUAL, a, b)


def not_equal(a, b) -> Tensor:
    return _compare(NOT_EQUAL, a, b)


def isnan(x) -> Tensor:
    """True where x is NaN (``x != x`` says the same: comparisons keep IEEE meaning)."""
    return _call(ISNAN, x)


def isinf(x) -> Tensor:
    return _call(ISINF, x)


def isfinite(x) -> Tensor:
    return _call(ISFINITE, x)


def floor_divide(a, b) -> Tensor:
    """``a // b`` with NumPy's semantics: floor division; an integer divided by 0 gives 0."""
    return _call(FLOOR_DIVIDE, a, b)


def remainder(a, b) -> Tensor:
    """``a % b`` with NumPy's semantics: the result has the sign of b; modulo 0 gives 0 for
    integers (NaN for floats)."""
    return _call(REMAINDER, a, b)


def sin(x) -> Tensor:
    return _call(SIN, x)


def cos(x) -> Tensor:
    return _call(COS, x)


def tan(x) -> Tensor:
    return _call(TAN, x)


def arctan(x) -> Tensor:
    return _call(ARCTAN, x)


def erf(x) -> Tensor:
    """The error function 2/sqrt(pi) * integral of exp(-t**2) from 0 to x."""
    return _call(ERF, x)


def log2(x) -> Tensor:
    return _call(LOG2, x)


def log10(x) -> Tensor:
    return _call(LOG10, x)


def exp2(x) -> Tensor:
    """2 ** x (exact at integers)."""
    return _call(EXP2, x)


def reciprocal(x) -> Tensor:
    return _call(RECIPROCAL, x)


def rsqrt(x) -> Tensor:
    """1 / sqrt(x)."""
    return _call(RSQRT, x)


def floor(x) -> Tensor:
    """The largest integer value <= x, in x's float type (an int input becomes float32, as
    every float-only op); derivative 0."""
    return _call(FLOOR, x)


def ceil(x) -> Tensor:
    """The smallest integer value >= x; derivative 0."""
    return _call(CEIL, x)


def round(x) -> Tensor:  # noqa: A001 - gc.round, as np.round
    """The nearest integer value, halves to even (as NumPy; 2.5 -> 2); derivative 0."""
    return _call(ROUND, x)


def softsign(x) -> Tensor:
    """x / (1 + |x|)."""
    return _call(SOFTSIGN, x)


def hard_sigmoid(x) -> Tensor:
    """relu6(x + 3) / 6, PyTorch's ``hardsigmoid``."""
    return _call(HARD_SIGMOID, x)


def silu(x) -> Tensor:
    """x * sigmoid(x) (also called swish)."""
    return _call(SILU, x)


def gelu(x, approximate: str = "none") -> Tensor:
    """x * Phi(x), Phi the standard normal CDF: ``approximate="none"`` computes it with erf
    (exact), ``"tanh"`` with PyTorch's tanh formula."""
    if approximate not in ("none", "tanh"):
        raise GraphError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _call(GELU, x, approximate=approximate)


def elemwise(expression: sympy.Expr, inputs: list[Tensor], dtype=None,
             label: str | None = None) -> Tensor:
    """A node computing an arbitrary sympy expression of x0..x{n-1} elementwise."""
    dtype = np.dtype(dtype) if dtype is not None else promote(
        *[t.dtype for t in inputs if t.dtype != bool] or [DEFAULT_FLOAT])
    out = apply(ELEMWISE, inputs, expr=expression, dtype=dtype)
    if label and out.node.label is None:
        out.node.label = label
    return out


# -- sympy expression -> graph nodes ---------------------------------------------------------

_FUNCS = {
    sympy.exp: exp, sympy.log: log, sympy.tanh: tanh, E.sigmoid: sigmoid, E.softplus: softplus,
    E.log1p: log1p, E.expm1: expm1, sympy.Abs: abs, sympy.sign: sign, E.isnan: isnan,
    E.isinf: isinf, sympy.sin: sin, sympy.cos: cos, sympy.tan: tan, sympy.atan: arctan,
    sympy.erf: erf, E.log2: log2, E.log10: log10, E.floor_value: floor, E.ceil_value: ceil,
    E.round_even: round,
}
_BINARY = {E.floordiv: floor_divide, E.mod: remainder}
_RELATIONS = {"<": less, "<=": less_equal, ">": greater, ">=": greater_equal, "==": equal,
              "!=": not_equal}


def from_expr(expression, env: dict, dtype, graph=None) -> Tensor:
    """Build graph nodes computing a sympy expression; `env` maps its symbols to tensors.

    Sums, products, powers, known functions, comparisons and Piecewise become the named ops a
    reader expects (mul, sub, where, greater, ...); anything else becomes one `elemwise` node.
    """
    dtype = np.dtype(dtype)
    graph = graph if graph is not None else graph_of(*env.values())
    memo: dict = {}

    def const(value) -> Tensor:
        return constant(np.asarray(float(value), dtype=dtype), graph=graph)

    def build(e) -> Tensor:
        if e in memo:
            return memo[e]
        memo[e] = out = _build(e)
        return out

    def _build(e) -> Tensor:
        if e.is_Symbol:
            return env[e]
        if e.is_Number:
            return const(e)
        if e.is_Add:
            terms = list(e.args)
            positive = [t for t in terms if not _is_negative(t)]
            negative = [-t for t in terms if _is_negative(t)]
            acc = build(positive[0]) if positive else neg(build(negative.pop(0)))
            for t in positive[1:]:
                acc = add(acc, build(t))
            for t in negative:
                acc = sub(acc, build(t))
            return acc
        if e.is_Mul:
            coeff, factors = e.as_coeff_mul()
            num = [f for f in factors if not (f.is_Pow and f.exp.is_negative)]
            den = [f.base**-f.exp for f in factors if f.is_Pow and f.exp.is_negative]
            negate = coeff < 0
            coeff = -coeff if negate else coeff
            acc = build(num[0]) if num else None
            for f in num[1:]:
                acc = mul(acc, build(f))
            if coeff != 1 or acc is None:
                if acc is None:
                    acc = const(coeff)
                elif (1 / coeff).is_Integer and den == []:
                    acc = div(acc, const(1 / coeff))
                else:
                    acc = mul(acc, const(coeff))
            for f in den:
                acc = div(acc, build(f))
            return neg(acc) if negate else acc
        if e.is_Pow:
            base, p = e.args
            if p == 2:
                return square(build(base))
            if p == sympy.Rational(1, 2):
                return sqrt(build(base))
            if p == -1:
                return div(const(1), build(base))
            if p == -sympy.Rational(1, 2):
                return div(const(1), sqrt(build(base)))
            if base == sympy.E:
                return exp(build(p))
            return pow(build(base), build(p))
        if e.func in _FUNCS:
            return _FUNCS[e.func](build(e.args[0]))
        if e.func in _BINARY:
            return _BINARY[e.func](build(e.args[0]), build(e.args[1]))
        if isinstance(e, sympy.Piecewise):
            return _piecewise(e.args)
        if isinstance(e, sympy.core.relational.Relational):
            if e.rel_op == "!=" and e.rhs == 0 and e.lhs.is_Symbol and env[e.lhs].dtype == bool:
                return env[e.lhs]
            return _RELATIONS[e.rel_op](build(e.lhs), build(e.rhs))
        if isinstance(e, (sympy.Max, sympy.Min)):
            fn = maximum if isinstance(e, sympy.Max) else minimum
            acc = build(e.args[0])
            for a in e.args[1:]:
                acc = fn(acc, build(a))
            return acc
        return _generic(e)

    def _piecewise(cases) -> Tensor:
        (value, cond), rest = cases[0], cases[1:]
        if cond is sympy.true or not rest:
            return build(value)
        return where(build(cond), build(value), _piecewise(rest))

    def _generic(e) -> Tensor:
        symbols = sorted(e.free_symbols, key=lambda s: s.name)
        mapping = {s: E.sym_input(i) for i, s in enumerate(symbols)}
        return elemwise(e.xreplace(mapping), [env[s] for s in symbols], dtype=dtype)

    return build(sympy.sympify(expression, strict=True))


def _is_negative(term) -> bool:
    coeff, _ = term.as_coeff_mul()
    return coeff.is_number and coeff < 0
