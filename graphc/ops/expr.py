"""Sympy expressions as the single definition of every elementwise computation.

An elementwise op is a sympy expression over the symbols ``x0, x1, ...`` (its inputs). Its
derivative is ``sympy.diff`` of that expression; fusion composes expressions; every backend
generates code from the expression. This module holds the symbols, the two functions sympy
lacks (``sigmoid``, ``softplus``, each with its derivative), and the printer that turns an
expression into one line of NumPy.
"""

from __future__ import annotations

from functools import cache, lru_cache

import numpy as np
import sympy
from sympy.codegen.cfunctions import expm1, log1p
from sympy.printing.numpy import NumPyPrinter

__all__ = [
    "CUSTOM_FUNCTIONS",
    "sym_input",
    "inputs",
    "sigmoid",
    "softplus",
    "log1p",
    "expm1",
    "numpy_source",
    "numpy_function",
    "derivative",
    "clean_derivative",
]


@cache
def sym_input(i: int) -> sympy.Symbol:
    """The symbol standing for input `i` of an elementwise expression."""
    return sympy.Symbol(f"x{i}", real=True)


def inputs(n: int) -> tuple[sympy.Symbol, ...]:
    return tuple(sym_input(i) for i in range(n))


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


#: graphc's own sympy function classes that elementwise expressions may contain, besides
#: sympy's built-in ones (io's whitelist, the printers and emitters are built from it)
CUSTOM_FUNCTIONS: tuple[type, ...] = (sigmoid, softplus, log1p, expm1)


def clean_derivative(expr: sympy.Expr) -> sympy.Expr:
    """Drop distributional terms: d/dx sign(x) is 0 almost everywhere (as in PyTorch)."""
    expr = expr.replace(sympy.DiracDelta, lambda *args: sympy.Integer(0))
    return expr


class _pow(sympy.Function):
    """``b**e`` with a tensor exponent, while it is differentiated: PyTorch's values where the
    textbook formulas are 0/0 or 0*inf.

    sympy writes d(b**e)/db as ``b**e*e/b``, NaN at b = 0 even for e = 2. Here it is
    ``e*b**(e-1)``, and 0 where e = 0 (PyTorch's ``pow_backward_self``); d(b**e)/de is
    ``b**e*log(b)``, and 0 where b = 0 and e >= 0 (``pow_backward_exponent``).
    """

    nargs = 2

    def fdiff(self, argindex: int = 1):
        b, e = self.args
        if argindex == 1:
            return sympy.Piecewise((0, sympy.Eq(e, 0)), (e * b ** (e - 1), True))
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


# -- printing to NumPy -----------------------------------------------------------------------


class _Printer(NumPyPrinter):
    """NumPy source for an expression: readable, dtype-preserving, one line."""

    _kf = {k: v.replace("numpy.", "np.") for k, v in NumPyPrinter._kf.items()}

    def __init__(self, names: dict[sympy.Symbol, str]):
        super().__init__({"fully_qualified_modules": True, "allow_unknown_functions": False})
        self._names = names

    def _module_format(self, fqn, register=True):
        fqn = fqn.replace("numpy.", "np.")
        return fqn

    def _print_Symbol(self, expr):
        return self._names.get(expr, expr.name)

    # Literals are printed as plain Python numbers: NumPy treats them as "weak" scalars, so
    # float32 arrays stay float32.
    def _print_Rational(self, expr):
        return repr(float(expr))

    def _print_Half(self, expr):
        return "0.5"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Integer(self, expr):
        return str(int(expr))

    def _print_Pow(self, expr, rational=False):
        base, exp = expr.args
        if exp == -1:
            return f"1/{self.parenthesize(base, 50)}"
        if exp == sympy.Rational(1, 2):
            return f"np.sqrt({self._print(base)})"
        if exp == -sympy.Rational(1, 2):
            return f"1/np.sqrt({self._print(base)})"
        if exp == 2 and base.is_Symbol:
            return f"np.square({self._print(base)})"
        return super()._print_Pow(expr, rational=rational)

    def _print_Piecewise(self, expr):
        *cases, (last_value, last_cond) = expr.args
        out = self._print(last_value)
        if last_cond is not sympy.true:
            out = f"np.where({self._print(last_cond)}, {out}, np.nan)"
        for value, cond in reversed(cases):
            out = f"np.where({self._print(cond)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr):
        ops = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
        lhs = self.parenthesize(expr.lhs, 40)
        rhs = self.parenthesize(expr.rhs, 40)
        return f"({lhs} {ops[expr.rel_op]} {rhs})"

    def _print_And(self, expr):
        return " & ".join(self.parenthesize(a, 100) for a in expr.args)

    def _print_Or(self, expr):
        return " | ".join(self.parenthesize(a, 100) for a in expr.args)

    def _print_Not(self, expr):
        return f"~{self.parenthesize(expr.args[0], 100)}"

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    def _print_sigmoid(self, expr):
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        return f"_softplus({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"np.abs({self._print(expr.args[0])})"

    def _print_Max(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"np.maximum({out}, {a})"
        return out

    def _print_Min(self, expr):
        args = [self._print(a) for a in expr.args]
        out = args[0]
        for a in args[1:]:
            out = f"np.minimum({out}, {a})"
        return out


def numpy_source(expr: sympy.Expr, names: dict[sympy.Symbol, str] | None = None) -> str:
    """One NumPy expression computing `expr`; symbols printed with `names` (x_i by default)."""
    return _Printer(names or {}).doprint(expr)


def _np_sigmoid(x):
    # exp of a non-positive number only: no overflow for large |x|.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _np_softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


NUMPY_NAMESPACE = {"np": np, "_sigmoid": _np_sigmoid, "_softplus": _np_softplus}


@lru_cache(maxsize=4096)
def numpy_function(expr: sympy.Expr, arity: int):
    """A Python function of `arity` arrays evaluating `expr` with NumPy broadcasting."""
    args = [f"x{i}" for i in range(arity)]
    src = f"def _f({', '.join(args)}):\n    return {numpy_source(expr)}\n"
    namespace = dict(NUMPY_NAMESPACE)
    exec(compile(src, f"<elementwise {expr}>", "exec"), namespace)
    return namespace["_f"]
