"""Elementwise expressions printed as one NumPy expression, operation for operation.

The printer walks the tree and never rebuilds it (see expr.py): ``Add(a, b, c)`` is
``((a + b) + c)`` in that order, ``a * b**-1`` is ``a / b`` (one rounding, as the ``div`` op
computes), a Piecewise is nested ``_select`` (``np.where``'s values, branch-free). A
subexpression that occurs more than once is computed once (an assignment expression inside a
``lambda``, so the temporary dies with the line). Literals are plain Python numbers: NumPy
treats them as "weak" scalars, so float32 and int32 arrays keep their dtype.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
import scipy.special
import sympy
from sympy.core import relational

from . import expr as E

__all__ = ["NUMPY_NAMESPACE", "numpy_function", "numpy_outer_operation", "numpy_source",
           "select"]

_FUNCTIONS = {sympy.exp: "np.exp", sympy.log: "np.log", sympy.tanh: "np.tanh",
              sympy.Abs: "np.abs", sympy.sign: "np.sign", E.sigmoid: "_sigmoid",
              E.softplus: "_softplus", E.log1p: "np.log1p", E.expm1: "np.expm1",
              E.floordiv: "np.floor_divide", E.mod: "np.remainder", E.isnan: "np.isnan",
              E.isinf: "np.isinf", sympy.sin: "np.sin", sympy.cos: "np.cos", sympy.tan: "np.tan",
              sympy.atan: "np.arctan", sympy.erf: "_erf", E.log2: "np.log2",
              E.log10: "np.log10", E.floor_value: "np.floor", E.ceil_value: "np.ceil",
              E.round_even: "np.rint"}
_RELATIONS = {relational.StrictLessThan: "<", relational.LessThan: "<=",
              relational.StrictGreaterThan: ">", relational.GreaterThan: ">=",
              relational.Equality: "==", relational.Unequality: "!="}


def _negative_exponent(f) -> bool:
    """A factor ``b**-n`` (n rational) of a product: the product divides by ``b**n``."""
    return f.is_Pow and f.exp.is_Rational and f.exp.is_negative


class _Printer:
    def __init__(self, names: dict, integer: bool, shared: dict, dtype=None) -> None:
        self.names = names
        self.integer = integer
        # the group's value dtype: a select's constant branches are printed in it, since
        # np.where(c, 0.5, 2.0) is float64 (and np.where(c, 1, 2) int64) whatever the rest
        # is, and would carry a float32 group into float64 (an overflow erased)
        self.scalar = (f"np.{np.dtype(dtype).name}" if dtype is not None
                       and np.dtype(dtype).kind in "fiu" else None)
        self.shared = shared  # repeated subexpression -> temporary name
        self.defined: set = set()
        # inside a subexpression of numbers only (an expression fusion made with `fold` off),
        # numbers are printed as scalars of the group's dtype: as Python numbers it ran in
        # float64 and unbounded ints (sin(88 / 1e-30) in float64, 2**30 * 4 without wrapping)
        self.numbers_typed = False
        self._symbolic: dict = {}

    def has_symbols(self, e) -> bool:
        known = self._symbolic.get(e)
        if known is None:
            known = isinstance(e, sympy.Symbol) or any(self.has_symbols(a) for a in e.args)
            self._symbolic[e] = known
        return known

    def p(self, e) -> str:
        name = self.shared.get(e)
        if name is not None:
            if name in self.defined:
                return name
            self.defined.add(name)
            return f"({name} := {self._print(e)})"
        return self._print(e)

    def _print(self, e) -> str:
        if self.scalar is None or self.numbers_typed or not e.args or self.has_symbols(e):
            return self._print_node(e)
        self.numbers_typed = True
        try:
            return self._print_node(e)
        finally:
            self.numbers_typed = False

    def _print_node(self, e) -> str:  # noqa: C901 - one case per node type
        if isinstance(e, sympy.Symbol):
            return self.names.get(e, e.name)
        if e is sympy.true or e is sympy.false:
            return str(bool(e))
        if e.is_Number:
            text = self.number(e)
            return f"{self.scalar}({text})" if self.numbers_typed else text
        if e.is_Add:
            first, *rest = self.terms(e)
            return f"({first[1]}{''.join(f' {sign} {text}' for sign, text in rest)})"
        if e.is_Mul:
            if len(e.args) == 2 and e.args[0] == -1:
                return f"(-{self.p(e.args[1])})"
            num, den = self.factors(e)
            text = " * ".join(num) if num else "1"
            for d in den:
                text = f"{text} / {d}"
            return f"({text})"
        if e.is_Pow:
            return self.power(*e.args)
        if isinstance(e, (E.tie, E.alone)):
            return self.p(e.args[0])
        if isinstance(e, E.nan_of):
            return f"({' + '.join(self.p(a) for a in e.args)})"
        if isinstance(e, sympy.Piecewise):
            # printed in evaluation order: temporaries are defined where first evaluated
            parts = [(self.p(c), self.typed(v)) for v, c in e.args]
            *cases, (cond, last) = parts
            otherwise = self.typed(sympy.Integer(0) if self.integer else sympy.nan)  # no case
            out = last if e.args[-1].cond is sympy.true else \
                f"_select({cond}, {last}, {otherwise})"
            for c, v in reversed(cases):
                out = f"_select({c}, {v}, {out})"
            return out
        if type(e) in _RELATIONS:
            return f"({self.p(e.lhs)} {_RELATIONS[type(e)]} {self.p(e.rhs)})"
        if isinstance(e, (sympy.And, sympy.Or)):
            fn = "np.logical_and" if isinstance(e, sympy.And) else "np.logical_or"
            out = self.p(e.args[0])
            for a in e.args[1:]:
                out = f"{fn}({out}, {self.p(a)})"
            return out
        if isinstance(e, sympy.Not):
            return f"np.logical_not({self.p(e.args[0])})"
        fn = _FUNCTIONS.get(type(e))
        if fn is not None:
            return f"{fn}({', '.join(self.p(a) for a in e.args)})"
        raise TypeError(f"no NumPy form for {type(e).__name__} ({e})")

    def typed(self, e) -> str:
        """`e` printed; a number as a scalar of the group's dtype (see __init__)."""
        text = self.p(e)
        if self.scalar is not None and (e.is_Number or e in (sympy.oo, -sympy.oo)):
            return f"{self.scalar}({text})"
        return text

    def terms(self, e) -> list[tuple[str, str]]:
        """A sum's terms in order, as (sign, text): ``a + (-1)*b`` is ``a - b``."""
        out = []
        for t in e.args:
            if out and t.is_Mul and len(t.args) == 2 and t.args[0] == -1:
                out.append(("-", self.p(t.args[1])))
            else:
                out.append(("+", self.p(t)))
        return out

    def factors(self, e) -> tuple[list[str], list[str]]:
        """A product's numerator factors and denominators (``b**-n`` divides by ``b**n``;
        in an integer expression it is the truncated power, a factor: 7 * x**-1 was 7 / x)."""
        if self.integer:
            return [self.p(f) for f in e.args], []
        num = [self.p(f) for f in e.args if not _negative_exponent(f)]
        den = [self.power(f.base, -f.exp) for f in e.args if _negative_exponent(f)]
        return num, den

    def number(self, e) -> str:
        if e is sympy.nan:
            return "np.nan"
        if e in (sympy.oo, -sympy.oo):
            return "np.inf" if e is sympy.oo else "(-np.inf)"
        if e.is_Integer:
            text = str(int(e))
        elif self.integer:
            raise TypeError(f"a fractional constant {e} in an integer expression")
        else:
            value = float(e)
            text = repr(value) if np.isfinite(value) else ("np.nan" if np.isnan(value) else
                                                           "np.inf" if value > 0 else "-np.inf")
        return f"({text})" if text.startswith("-") else text

    def power(self, base, exp) -> str:
        """``base ** exp``. A float exponent (a `pow` op, its constant inlined) is NumPy's
        power, as the op computes it unfused; the rational exponents of templates and
        derivatives take the forms of `square`, `sqrt` and `div` (1/b)."""
        if base == 2 and not exp.is_Number and not self.integer:
            return f"np.exp2({self.p(exp)})"  # 2**x: exact at integers, as the kernels
        if (not self.integer and exp.is_Rational and exp.is_negative
                and (exp.is_Integer or exp == -sympy.Rational(1, 2))):
            # before printing the base: printing it defines its temporaries, once
            return f"(1 / {self.power(base, -exp)})"
        if self.integer:  # (numbers as the group's integers: a Python int's power and what
            b = self.typed(base)  # followed it ran in int64, without int32's wraparound)
            if exp.is_Integer and exp >= 0:
                return b if exp == 1 else f"({b} ** {int(exp)})"
            return f"_ipow({b}, {self.typed(exp)})"
        b = self.p(base)
        if not exp.is_Rational:
            return f"_power({b}, {self.p(exp)})"
        if exp == 1:
            return b
        if exp == 2:
            return f"np.square({b})"
        if exp == sympy.Rational(1, 2):
            return f"np.sqrt({b})"
        if exp.is_Integer:
            return f"({b} ** {int(exp)})"
        return f"_power({b}, {self.number(exp)})"


def _repeated(expr) -> dict:
    """Subexpressions (not symbols or numbers) that occur more than once -> temporary names."""
    counts: Counter = Counter()

    def count(e) -> None:
        counts[e] += 1
        if counts[e] == 1:
            for a in e.args:
                count(a)

    count(expr)
    shared = {}
    for e, n in counts.items():
        if n > 1 and e.args and not isinstance(e, sympy.logic.boolalg.BooleanAtom):
            shared[e] = f"_r{len(shared)}"
    return shared


def numpy_source(expr, names: dict | None = None, integer: bool = False, dtype=None) -> str:
    """One NumPy expression computing `expr`; symbols printed with `names` (x_i by default).

    `integer`: the expression computes in an integer dtype (``**`` then follows `_ipow`).
    `dtype`: the dtype it computes in (its inputs' value dtype), for its selects' constants."""
    shared = _repeated(expr)
    text = _Printer(names or {}, integer, shared, dtype).p(expr)
    return f"(lambda: {text})()" if shared else text


def numpy_outer_operation(expr, names: dict,
                          integer: bool = False) -> tuple[str, list[str]] | None:
    """The last operation `numpy_source` would evaluate, as ``(ufunc, operand sources)``:
    ``ufunc(*operands)`` computes the same bits as the whole expression, and
    ``ufunc(*operands, out=target)`` writes them into `target` without a temporary (the NumPy
    backend writes a parameter's new value ``p - lr*g`` this way). Only for a sum or
    difference, a product or quotient, or a negation at the top, with no subexpression
    shared between the operands (their temporaries would cross); else None."""
    if _repeated(expr):
        return None
    pr = _Printer(names, integer, {})
    if expr.is_Add:
        *head, (sign, last) = pr.terms(expr)
        left = head[0][1] + "".join(f" {s} {text}" for s, text in head[1:])
        return ("np.subtract" if sign == "-" else "np.add"), \
            [left if len(head) == 1 else f"({left})", last]
    if expr.is_Mul:
        if len(expr.args) == 2 and expr.args[0] == -1:
            return "np.negative", [pr.p(expr.args[1])]
        num, den = pr.factors(expr)
        if not num or (len(num) < 2 and not den):
            return None
        ufunc, last = ("np.divide", den.pop()) if den else ("np.multiply", num.pop())
        left = " * ".join(num) + "".join(f" / {d}" for d in den)
        return ufunc, [left if len(num) + len(den) == 1 else f"({left})", last]
    return None


#: below these, exp(-x) overflows: sigmoid(x) = exp(x) / (1 + exp(x)) rounds to exp(x)
_SIGMOID_EXP_LIMIT = {"f": -88.72, "d": -709.78}


class OverflowCounter:
    """A NumPy floating-point error handler that counts overflows, for a context entered
    with ``np.errstate(over="call", call=counter)`` (the numpy backend's steps run in one):
    a function can then tell whether one of its passes overflowed by reading a number."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, kind: str, flag: int) -> None:
        self.count += 1


def numpy_sigmoid(x, overflows: OverflowCounter | None = None):
    """``1/(1 + exp(-x))`` on float32 and float64 arrays: four passes, as scipy's expit and
    PyTorch compute it and as a careful NumPy programmer writes it, within 3.5 ulp where the
    result is a normal number. Where exp(-x) overflows (x < -88.7 in float32, < -709.8 in
    float64) that gives 0, but the true value is a subnormal (under 3e-39 or 2e-308), which
    the native backends' stable form gives, and log(sigmoid(x)) became -inf instead of about
    x (found by a fuzz): those lanes get exp(x). Whether there are any is read from
    `overflows` (the numpy backend's step counts NumPy's overflows), else found by one more
    pass, a minimum (1.8 µs on the autoencoder's 32x64, against 5.5 for the four passes).
    The stable select of ``1/(1+e)`` and ``e/(1+e)``, e = exp(-|x|), took seven passes: 9
    µs more of the autoencoder's 86.6 µs step. float16 (whose exp overflows already at x <
    -11.1, where sigmoid is still 1.5e-5) and scalars keep the stable select."""
    if type(x) is np.ndarray and x.dtype.char in "fd" and x.ndim:
        out = np.negative(x)
        before = overflows.count if overflows is not None else 0
        np.exp(out, out=out)
        np.add(out, 1, out=out)
        np.divide(1, out, out=out)
        limit = _SIGMOID_EXP_LIMIT[x.dtype.char]
        if (overflows.count != before if overflows is not None else
                x.size and np.fmin.reduce(x, axis=None) < limit):  # (fmin: NaN ignored)
            below = x < limit
            out[below] = np.exp(x[below])
        return out
    e = np.exp(-np.abs(x))
    d = 1 + e
    return select(x >= 0, 1 / d, e / d)


def _np_softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _np_power(base, exponent):
    """IEEE pow, as libm and the native backends compute it. NumPy's power takes a shortcut
    for a scalar exponent 0.5 (sqrt), which gives NaN for -inf and -0 for -0; pow gives inf
    and 0."""
    out = np.power(base, exponent)
    if np.ndim(exponent) == 0 and exponent == 0.5:
        out = np.where(base == 0, np.zeros((), out.dtype), out)
        out = np.where(np.isneginf(base), np.array(np.inf, out.dtype), out)
    return out


def _np_ipow(base, exponent):
    """Integer ``base ** exponent`` wrapping as NumPy's, and for a negative exponent the
    truncated 1/base**-exponent (1, -1 or 0; NumPy raises there) — native code cannot raise."""
    base, exponent = np.asarray(base), np.asarray(exponent)
    dtype = np.result_type(base, exponent)
    negative = exponent < 0
    with np.errstate(all="ignore"):
        out = np.power(base, np.where(negative, 0, exponent)).astype(dtype)
    if np.any(negative):
        odd = (exponent % 2) != 0
        small = np.where(base == 1, 1, np.where(base == -1, np.where(odd, -1, 1), 0))
        out = np.where(negative, small, out).astype(dtype)
    return out


#: Below this many elements np.where's own speed is fine and its call is cheaper.
_SELECT_MIN_SIZE = 1 << 14
_SAME_WIDTH_INT = {1: np.int8, 2: np.int16, 4: np.int32, 8: np.int64}


def select(cond, a, b, out: np.ndarray | None = None):
    """``np.where(cond, a, b)``, the same values bit for bit, computed with masks: np.where
    branches on every element, and on a condition like ``x <= 0`` over random data (a ReLU
    and its gradient) that branch is mispredicted half the time — 9x slower than the four
    memory-speed passes here. The result keeps the condition's memory layout; with `out`
    (of the result's shape and dtype) it is written there."""
    if not isinstance(cond, np.ndarray) or cond.dtype != np.bool_ or cond.size < _SELECT_MIN_SIZE:
        return _into(np.where(cond, a, b), out)
    dtype = np.result_type(a, b)
    bits = _SAME_WIDTH_INT.get(dtype.itemsize)
    if bits is None or dtype.kind not in "fiu":
        return _into(np.where(cond, a, b), out)
    a, b = np.asarray(a, dtype).view(bits), np.asarray(b, dtype).view(bits)
    shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
    mask = np.empty_like(cond, bits) if cond.shape == shape else np.empty(shape, bits)
    np.copyto(mask, cond)
    np.negative(mask, out=mask)  # all ones where cond holds, zeros elsewhere
    keep_a = np.bitwise_and(a, mask) if a.ndim or a.item() else None
    np.invert(mask, out=mask)
    if keep_a is None:  # the common where(c, 0, x): nothing to merge
        return np.bitwise_and(b, mask, out=mask if out is None else out.view(bits)).view(dtype)
    np.bitwise_and(b, mask, out=mask)
    return np.bitwise_or(keep_a, mask, out=keep_a if out is None else out.view(bits)).view(dtype)


def _into(value, out):
    if out is None:
        return value
    out[...] = value
    return out


def _np_erf(x):
    """scipy's erf, in the input's float type (scipy computes float32 in float32)."""
    return scipy.special.erf(x)


NUMPY_NAMESPACE = {"np": np, "_erf": _np_erf, "_sigmoid": numpy_sigmoid, "_softplus": _np_softplus,
                   "_power": _np_power, "_ipow": _np_ipow, "_select": select}


@lru_cache(maxsize=4096)
def numpy_function(expr, arity: int, integer: bool = False, dtype=None):
    """A Python function of `arity` arrays evaluating `expr` with NumPy broadcasting
    (`dtype`: as `numpy_source`'s)."""
    E.check_expression(expr, arity)
    args = [f"x{i}" for i in range(arity)]
    text = numpy_source(expr, integer=integer, dtype=dtype)
    src = f"def _f({', '.join(args)}):\n    return {text}\n"
    namespace = dict(NUMPY_NAMESPACE)
    exec(compile(src, "<graphc elementwise expression>", "exec"), namespace)
    return namespace["_f"]
