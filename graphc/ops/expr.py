"""Sympy expressions as the single definition of every elementwise computation.

An elementwise op is a sympy expression over the symbols ``x0, x1, ...`` (its inputs). Its
derivative is ``sympy.diff`` of that expression; fusion composes expressions; every backend
generates code from the expression (NumPy: expr_numpy.py, LLVM and PTX: the emitter).

Sympy reasons about *real numbers*, graphc computes in *IEEE floats*: ``x - x`` is 0 for every
real x but NaN for x = inf, ``Not(x > y)`` is ``x <= y`` for reals but not when x is NaN,
``sqrt(x)**2`` is x for reals but NaN for x < 0. So sympy's algebra is used where it is the
definition of the math (an op's template, its derivative) and nowhere else:

* templates are small, written so that sympy's evaluation keeps their IEEE meaning, and
  checked on NaN, inf and zero against NumPy (tests/core/test_elementwise_ieee.py);
* `compose` substitutes one expression into another *without any evaluation*: a fused group
  computes exactly the operations of its ops, in their order;
* printers and emitters only walk a tree, they never build one, so they cannot re-evaluate it;
* every tree an elementwise node carries is checked against `EXPRESSION_TYPES`, the closed
  set of node types every backend lowers (`check_expression`).
"""

from __future__ import annotations

from functools import cache, lru_cache

import sympy
from sympy.codegen.cfunctions import expm1, log1p
from sympy.core import relational
from sympy.functions.elementary.piecewise import ExprCondPair
from sympy.logic.boolalg import BooleanFunction

from ..errors import GraphError

__all__ = ["CUSTOM_FUNCTIONS", "EXPRESSION_TYPES", "check_expression", "clean_derivative",
           "compose", "derivative", "expm1", "floordiv", "inputs", "isinf", "isnan", "log1p",
           "mod", "nan_of", "sigmoid", "softplus", "sym_input", "tie", "alone"]


@cache
def sym_input(i: int) -> sympy.Symbol:
    """The symbol standing for input `i` of an elementwise expression."""
    return sympy.Symbol(f"x{i}", real=True)


def inputs(n: int) -> tuple[sympy.Symbol, ...]:
    return tuple(sym_input(i) for i in range(n))


# -- the functions sympy lacks -----------------------------------------------------------------


class sigmoid(sympy.Function):
    """The logistic function 1/(1+exp(-x)); its derivative is sigmoid(x)*(1 - sigmoid(x))."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_zero:
            return sympy.Rational(1, 2)
        return None

    def fdiff(self, argindex: int = 1):
        s = sigmoid(self.args[0])
        return s * (1 - s)

    def _eval_rewrite_as_exp(self, arg, **kwargs):
        return 1 / (1 + sympy.exp(-arg))

    def _eval_is_real(self):
        return self.args[0].is_real


class softplus(sympy.Function):
    """log(1 + exp(x)), computed stably; its derivative is sigmoid(x)."""

    nargs = 1

    def fdiff(self, argindex: int = 1):
        return sigmoid(self.args[0])

    def _eval_rewrite_as_log(self, arg, **kwargs):
        return sympy.log(1 + sympy.exp(arg))

    def _eval_is_real(self):
        return self.args[0].is_real


class tie(sympy.Function):
    """The value of a tie ``a == b`` of maximum/minimum: ``a`` itself, while each side gets
    half the gradient (PyTorch's convention). Written as ``(a + b)/2`` the value would
    overflow for a = b = 3e38 in float32, and round to 0 for the smallest subnormal."""

    nargs = 2

    def fdiff(self, argindex: int = 1):
        return sympy.Rational(1, 2)


class alone(sympy.Function):
    """``alone(v)``: v computed by itself, then used: a reciprocal, an rsqrt or another
    negative power that fusion puts inside a product. ``a * x**-1`` is the division a / x
    for every emitter (the `div` op's template), which rounds once where the reciprocal
    and the product round twice, and is finite where 1/x overflows (a subnormal x: 0 times
    the reciprocal's inf is NaN, 0 / x is 0). The fused group computes what the two ops
    compute unfused."""

    nargs = 1

    def fdiff(self, argindex: int = 1):
        return sympy.Integer(1)


class nan_of(sympy.Function):
    """The value of a NaN branch (``clip`` with a NaN operand): ``a + b + ...``, NaN because
    one of them is, with gradient 0 (PyTorch's ``clamp`` gives 0 where a comparison is NaN).
    """

    def fdiff(self, argindex: int = 1):
        return sympy.Integer(0)


class floordiv(sympy.Function):
    """NumPy's ``a // b`` (floor division; integer division by zero gives 0). Sympy never
    rewrites it; its derivative is 0 almost everywhere."""

    nargs = 2

    def fdiff(self, argindex: int = 1):
        return sympy.Integer(0)


class mod(sympy.Function):
    """NumPy's ``a % b`` (the sign of b; integer modulo by zero gives 0). Not sympy's Mod,
    which rewrites ``Mod(x, x)`` to 0. d/da = 1, d/db = -(a // b), as PyTorch's remainder."""

    nargs = 2

    def fdiff(self, argindex: int = 1):
        if argindex == 1:
            return sympy.Integer(1)
        return -floordiv(*self.args)


class log2(sympy.Function):
    """The base-2 logarithm as one function (not ``log(x)/log(2)``): the kernels compute it
    from the exponent and mantissa, so powers of two give exact integers, as ``np.log2``."""

    nargs = 1

    def fdiff(self, argindex: int = 1):
        return 1 / (self.args[0] * sympy.log(2))

    def _eval_rewrite_as_log(self, arg, **kwargs):
        return sympy.log(arg) / sympy.log(2)


class log10(sympy.Function):
    """The base-10 logarithm as one function (``np.log10``), for the same reason as log2."""

    nargs = 1

    def fdiff(self, argindex: int = 1):
        return 1 / (self.args[0] * sympy.log(10))

    def _eval_rewrite_as_log(self, arg, **kwargs):
        return sympy.log(arg) / sympy.log(10)


class _Rounding(sympy.Function):
    """Rounding to an integer value in the input's float type. sympy's floor and ceiling
    reason about exact reals (and have no derivative); these are the IEEE operations, with
    derivative 0 (PyTorch's), and NaN, infinities and -0 pass through."""

    nargs = 1

    def fdiff(self, argindex: int = 1):
        return sympy.Integer(0)


class floor_value(_Rounding):
    """``np.floor``: the largest integer value <= x."""


class ceil_value(_Rounding):
    """``np.ceil``: the smallest integer value >= x."""


class round_even(_Rounding):
    """``np.rint`` / ``np.round``: the nearest integer value, halves to even."""


class isnan(BooleanFunction):
    """True where x is NaN (sympy, reasoning about reals, would call it always false)."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sympy.true if arg is sympy.nan else sympy.false
        return None


class isinf(BooleanFunction):
    """True where x is +inf or -inf."""

    nargs = 1

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sympy.true if arg in (sympy.oo, -sympy.oo) else sympy.false
        return None


#: graphc's own sympy function classes that elementwise expressions may contain, besides
#: sympy's built-in ones (io's whitelist, the printers and emitters are built from it)
CUSTOM_FUNCTIONS: tuple[type, ...] = (sigmoid, softplus, log1p, expm1, tie, nan_of, alone,
                                      floordiv, mod, isnan, isinf, log2, log10, floor_value,
                                      ceil_value, round_even)

#: Every node type an elementwise expression may contain: what fusion and the templates
#: produce, and what every backend lowers (tests/backends/test_expression_forms.py checks
#: each on every backend). Anything else in an `elemwise` node is a GraphError.
EXPRESSION_TYPES: tuple[type, ...] = (
    sympy.Symbol, sympy.Integer, sympy.Rational, sympy.Float, type(sympy.nan),
    sympy.Add, sympy.Mul, sympy.Pow,
    sympy.exp, sympy.log, sympy.tanh, sympy.Abs, sympy.sign,
    sympy.sin, sympy.cos, sympy.tan, sympy.atan, sympy.erf,
    sympy.Piecewise, ExprCondPair,
    relational.Equality, relational.Unequality, relational.StrictLessThan, relational.LessThan,
    relational.StrictGreaterThan, relational.GreaterThan,
    sympy.And, sympy.Or, sympy.Not, type(sympy.true), type(sympy.false),
    *CUSTOM_FUNCTIONS,
)

MAX_EXPRESSION_NODES = 20_000  # a bound on what a file (or a runaway fusion) may hand us


def check_expression(expr, arity: int) -> None:
    """Raise GraphError unless `expr` is made of `EXPRESSION_TYPES` only and its symbols are
    the inputs x0..x{arity-1} (exactly `sym_input`'s symbols: the names are generated, never
    free text)."""
    allowed = {sym_input(i) for i in range(max(arity, 0))}
    count = 0
    stack = [expr]
    while stack:
        e = stack.pop()
        count += 1
        if count > MAX_EXPRESSION_NODES:
            raise GraphError(f"an elementwise expression of more than {MAX_EXPRESSION_NODES} "
                             f"nodes")
        if not isinstance(e, EXPRESSION_TYPES):
            raise GraphError(f"an elementwise expression may not contain {type(e).__name__} "
                             f"({_short(e)})")
        if isinstance(e, sympy.Symbol):
            if e not in allowed:
                raise GraphError(f"an elementwise expression over {arity} inputs uses the "
                                 f"symbol {e.name!r}; its symbols are x0..x{arity - 1}")
            continue
        stack.extend(e.args)


def _short(e) -> str:
    text = sympy.srepr(e)
    return text if len(text) < 60 else text[:57] + "..."


# -- composition without evaluation ------------------------------------------------------------


def unevaluated(cls: type, args: tuple):
    """A node of type `cls` with these args, built without any of sympy's rewriting: how
    fusion composes expressions, and how a file's expressions are rebuilt (graphc.io), so
    that what is loaded is exactly what was saved."""
    if issubclass(cls, ExprCondPair):
        # (its __new__ folds a Piecewise inside a condition into ITE, which no backend lowers)
        return sympy.Tuple.__new__(ExprCondPair, *args)
    if issubclass(cls, sympy.Piecewise):
        return sympy.Basic.__new__(sympy.Piecewise, *args)
    if issubclass(cls, (sympy.And, sympy.Or)):  # (their __new__ finds "tautologies" of reals)
        obj = sympy.Basic.__new__(cls, *args)
        obj._argset = frozenset(args)
        return obj
    if issubclass(cls, sympy.Not):  # (Not(x > y) would become x <= y: wrong for NaN)
        return sympy.Basic.__new__(sympy.Not, *args)
    return cls(*args, evaluate=False)


def _raw(e, args: tuple):
    """A node of e's type with these args, built without any of sympy's rewriting."""
    return unevaluated(type(e), args)


def _divisor(v) -> bool:
    """Would `v`, a factor of a product, read as a division (``b**-n``, n rational, over
    something that is not a number)?"""
    return v.is_Pow and v.exp.is_Rational and v.exp.is_negative and not v.base.is_number


def compose(expr, subs: dict):
    """`expr` with each symbol in `subs` replaced, and nothing else changed; a replacement
    that is a negative power, put into a product, is marked `alone` (a reciprocal times a,
    computed as the division a / x, rounds once and gives a finite quotient where 1/x
    overflows).

    ``xreplace`` would re-evaluate (``y - y`` -> 0, ``sqrt(y)**2`` -> y, a Piecewise inside a
    condition folded), which changes results for inf, NaN and negative inputs. A relation
    ``c != 0`` of a boolean c (where's condition) becomes c itself: a Boolean never equals
    the number 0 for sympy, but it means truthiness here.
    """
    memo: dict = {}

    def walk(e):
        if e in subs:
            return subs[e]
        if not e.args:
            return e
        if e in memo:
            return memo[e]
        args = tuple(walk(a) for a in e.args)
        if e.is_Mul:  # a negative power put into a product is a factor, not a divisor
            args = tuple(alone(v) if a in subs and _divisor(v) else v
                         for a, v in zip(e.args, args))
        if args == e.args:
            out = e
        elif isinstance(e, (relational.Unequality, relational.Equality)) and \
                args[1] == 0 and isinstance(args[0], sympy.logic.boolalg.Boolean):
            out = args[0] if isinstance(e, relational.Unequality) else \
                sympy.Basic.__new__(sympy.Not, args[0])
        else:
            out = _raw(e, args)
        memo[e] = out
        return out

    return walk(expr)


# -- derivatives -------------------------------------------------------------------------------


def _symbolic_constant(e) -> bool:
    """A finite number sympy keeps symbolic (pi, sqrt(pi), log(2)): not something a kernel
    can hold."""
    return (e.is_number and not e.is_Rational and not e.is_Float and e.is_finite is True
            and not isinstance(e, sympy.logic.boolalg.BooleanAtom))


def clean_derivative(expr: sympy.Expr) -> sympy.Expr:
    """Drop distributional terms: d/dx sign(x) is 0 almost everywhere (as in PyTorch); and
    round the constants sympy keeps symbolic (erf' = 2 exp(-x**2) / sqrt(pi), exp2' = 2**x
    log(2)) to floats, once, at 20 digits."""
    expr = expr.replace(sympy.DiracDelta, lambda *args: sympy.Integer(0))
    return expr.replace(_symbolic_constant, lambda e: sympy.Float(e.evalf(20), 20))


class _pow(sympy.Function):
    """``b**e`` with a tensor exponent, while it is differentiated: PyTorch's values where the
    textbook formulas are 0/0 or 0*inf.

    sympy writes d(b**e)/db as ``b**e*e/b``, NaN at b = 0 even for e = 2. Here it is
    ``e*b**(e-1)``, and 0 where e = 0 (PyTorch's ``pow_backward_self``); d(b**e)/de is
    ``b**e*log(b)``, and 0 where b = 0 and e >= 0 (``pow_backward_exponent``).

    The power in the e != 0 branch is ``b**(e - sign(e)**2)``: ``b**(e-1)`` for every e but
    0 (sign(e)**2 is exactly 1; NaN for a NaN e), and ``b**0`` at e = 0, where the branch is
    not taken. The branch's own derivative (a second derivative) still flows through the
    select, as 0 * d/db b**(e-1), and b**(-1) at b = 0 made that 0 * inf = NaN (``x**0``'s
    second derivative at 0). The exponent is 0 at every further order, so the untaken branch
    stays finite. (Written with sign, not a Piecewise, which the gradient's piecewise_fold
    would merge into the outer condition and undo.)
    """

    nargs = 2

    def fdiff(self, argindex: int = 1):
        b, e = self.args
        if argindex == 1:
            return sympy.Piecewise((0, sympy.Eq(e, 0)), (e * b ** (e - sympy.sign(e) ** 2), True))
        full = b**e * sympy.log(b)
        return sympy.Piecewise((full, sympy.Ne(b, 0)), (0, e >= 0), (full, True))


def _is_tensor_pow(node) -> bool:
    return node.is_Pow and not node.exp.is_Number


@lru_cache(maxsize=4096)
def derivative(expr: sympy.Expr, i: int) -> sympy.Expr:
    """d expr / d x_i, cached (the same op's derivative is asked for again and again).

    Powers with a non-constant exponent are differentiated by `_pow`'s rule (finite at a zero
    base, as in PyTorch); powers with a constant exponent need nothing (``x**2 -> 2*x``).
    """
    guarded = expr.replace(_is_tensor_pow, lambda p: _pow(*p.args))
    d = sympy.diff(guarded, sym_input(i))
    d = d.replace(lambda n: isinstance(n, _pow), lambda n: n.args[0] ** n.args[1])
    return clean_derivative(d)
