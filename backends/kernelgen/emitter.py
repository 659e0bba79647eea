"""The one sympy -> LLVM IR emitter: scalar code for an elementwise expression.

Every elementwise op and every fused group is a sympy expression of its inputs x0..xn; this
turns it into straight-line IR (Piecewise becomes `select`, so loops stay branch-free and
vectorizable). It walks the tree exactly as NumPy's printer does (graphc/ops/expr_numpy.py):
operation for operation, in the tree's order, never rebuilding a sympy expression (which
would let sympy re-evaluate it). Transcendental functions come from a `math` provider: on the
host, inline polynomial kernels (mathlib.py); on NVPTX, libdevice. The CUDA backend reuses
this class.

Integer arithmetic follows NumPy and never traps: ``a // 0`` and ``a % 0`` are 0 and
``INT_MIN // -1`` is INT_MIN (LLVM's sdiv/srem are undefined there and trap on x86).
"""

from __future__ import annotations

from collections.abc import Callable

import sympy
from llvmlite import ir
from sympy.core import relational

from graphc.errors import BackendError
from graphc.ops import expr as E

from .irutil import F32, I1, const, float_intrinsic, is_float_type

MathProvider = Callable[[ir.IRBuilder, str, ir.Value, ir.Type], ir.Value]

_FUNCTIONS = {sympy.exp: "exp", sympy.log: "log", sympy.tanh: "tanh", E.sigmoid: "sigmoid",
              E.softplus: "softplus", E.expm1: "expm1", E.log1p: "log1p", sympy.sin: "sin",
              sympy.cos: "cos", sympy.tan: "tan", sympy.atan: "atan", sympy.erf: "erf",
              E.log2: "log2", E.log10: "log10", E.floor_value: "floor", E.ceil_value: "ceil",
              E.round_even: "round"}
_RELATIONS = {relational.StrictLessThan: "<", relational.LessThan: "<=",
              relational.StrictGreaterThan: ">", relational.GreaterThan: ">=",
              relational.Equality: "==", relational.Unequality: "!="}


#: the functions whose element is a polynomial and a reconstruction (mathlib.py), not an
#: instruction or two: a point that calls one is worth several that do not
_COSTLY = frozenset(f for f, name in _FUNCTIONS.items() if name not in ("floor", "ceil", "round"))


def costly_calls(expr) -> int:
    """How many distinct costly math functions (exp, tanh, a general power, ...) `expr`
    computes, each counted once, as the emitter computes a repeated subexpression once."""
    expr = sympy.sympify(expr)
    # (a power of an integer or of one half is a multiplication, a sqrt or a division)
    powers = [p for p in expr.atoms(sympy.Pow)
              if not (p.exp.is_Integer or p.exp in (sympy.Rational(1, 2), -sympy.Rational(1, 2)))]
    return len(expr.atoms(*_COSTLY)) + len(powers)


def _fractional(e) -> bool:
    """Has a sum (or product) a fractional coefficient in one of its own terms?"""
    terms = e.args if e.is_Add else (e,)
    return any(coeff.is_Rational and not coeff.is_Integer
               for coeff in (t.as_coeff_Mul()[0] for t in terms))


def _negative_exponent(f) -> bool:
    """A factor ``b**-n`` (n rational) of a product: the product divides by ``b**n``."""
    return f.is_Pow and f.exp.is_Rational and f.exp.is_negative


class ExprEmitter:
    """Emit a sympy expression as IR of one compute type (float32/float64 or an int type)."""

    def __init__(self, builder: ir.IRBuilder, module: ir.Module, ty: ir.Type,
                 math: MathProvider) -> None:
        self.b = builder
        self.module = module
        self.ty = ty
        self.math = math
        self.float = is_float_type(ty)
        self._memo: dict = {}

    def emit(self, expr, env: dict) -> ir.Value:
        """The value of `expr`; `env` maps each free symbol to an IR value of the compute type."""
        self._env = env
        self._memo = {}
        return self._emit(expr)

    # -- dispatch ---------------------------------------------------------------------------
    def _emit(self, e) -> ir.Value:
        if e in self._memo:
            return self._memo[e]
        value = self._dispatch(e)
        self._memo[e] = value
        return value

    def _dispatch(self, e) -> ir.Value:  # noqa: C901 - one case per node type
        b = self.b
        if isinstance(e, sympy.Symbol):
            return self._env[e]
        if e is sympy.true or e is sympy.false:
            return ir.Constant(I1, int(e is sympy.true))
        if e.is_Number:
            return self._number(e)
        if not self.float:
            exact = self._integer_quotient(e)
            if exact is not None:
                return exact
        if e.is_Add:
            acc = self._emit(e.args[0])
            for t in e.args[1:]:
                if t.is_Mul and len(t.args) == 2 and t.args[0] == -1:
                    acc = self._sub(acc, self._emit(t.args[1]))
                else:
                    acc = self._add(acc, self._emit(t))
            return acc
        if e.is_Mul:
            return self._mul(e)
        if e.is_Pow:
            return self._pow(*e.args)
        if isinstance(e, (E.tie, E.alone)):
            return self._emit(e.args[0])
        if isinstance(e, E.nan_of):
            acc = self._emit(e.args[0])
            for a in e.args[1:]:
                acc = self._add(acc, self._emit(a))
            return acc
        if type(e) in _FUNCTIONS:
            if not self.float:
                raise BackendError(f"{type(e).__name__} needs a float type")
            return self.math(b, _FUNCTIONS[type(e)], self._emit(e.args[0]), self.ty)
        if isinstance(e, sympy.Abs):
            x = self._emit(e.args[0])
            if self.float:
                return b.call(float_intrinsic(self.module, "fabs", self.ty), [x])
            return b.select(b.icmp_signed("<", x, const(self.ty, 0)), b.neg(x), x)
        if isinstance(e, sympy.sign):
            x = self._emit(e.args[0])
            zero = const(self.ty, 0)
            pos = self._cmp(">", x, zero)
            neg = self._cmp("<", x, zero)
            # sign(±0) = +0 and sign(NaN) = NaN, as NumPy: x + 0 in those cases (-0 + 0 is +0)
            rest = b.fadd(x, zero) if self.float else x
            return b.select(pos, const(self.ty, 1), b.select(neg, const(self.ty, -1), rest))
        if isinstance(e, E.floordiv):
            return self._divmod(self._emit(e.args[0]), self._emit(e.args[1]))[0]
        if isinstance(e, E.mod):
            return self._divmod(self._emit(e.args[0]), self._emit(e.args[1]))[1]
        if isinstance(e, E.isnan):
            x = self._emit(e.args[0])
            if not is_float_type(x.type):
                return ir.Constant(I1, 0)
            return b.fcmp_unordered("uno", x, x)
        if isinstance(e, E.isinf):
            x = self._emit(e.args[0])
            if not is_float_type(x.type):
                return ir.Constant(I1, 0)
            magnitude = b.call(float_intrinsic(self.module, "fabs", x.type), [x])
            return b.fcmp_ordered("==", magnitude, ir.Constant(x.type, float("inf")))
        if isinstance(e, sympy.Piecewise):
            return self._piecewise(e.args)
        if type(e) in _RELATIONS:
            return self._cmp(_RELATIONS[type(e)], self._emit(e.lhs), self._emit(e.rhs))
        if isinstance(e, (sympy.And, sympy.Or)):
            acc = self._truth(self._emit(e.args[0]))
            for a in e.args[1:]:
                v = self._truth(self._emit(a))
                acc = b.and_(acc, v) if isinstance(e, sympy.And) else b.or_(acc, v)
            return acc
        if isinstance(e, sympy.Not):
            return b.xor(self._truth(self._emit(e.args[0])), ir.Constant(I1, 1))
        raise BackendError(f"the LLVM emitter cannot lower {type(e).__name__} in {e}")

    def _integer_quotient(self, e) -> ir.Value | None:
        """An integer expression with fractions, as sympy writes a symbolic size (a strided
        convolution's ``floor(H/2 - 3/2) + 1``, a transposed one's ``3*H - 1/3 ...``):
        ``floor(P/q)`` and ``ceiling(P/q)`` by floor division of the integer polynomial P by
        q > 0, and a sum with fractional coefficients, which is an integer where it is a size,
        as P // q. None for everything else."""
        if isinstance(e, (sympy.floor, sympy.ceiling)):
            num, den = sympy.fraction(sympy.together(e.args[0]))
            if not (den.is_Integer and den > 0):
                return None
            if isinstance(e, sympy.ceiling):  # ceiling(P/q) = -floor(-P/q)
                return self.b.neg(self._divmod(self._emit(-num), const(self.ty, int(den)))[0])
            return self._divmod(self._emit(num), const(self.ty, int(den)))[0]
        if (e.is_Add or e.is_Mul) and _fractional(e):
            num, den = sympy.fraction(sympy.together(e))
            if den.is_Integer and den > 1:
                return self._divmod(self._emit(sympy.expand(num)), const(self.ty, int(den)))[0]
        return None

    # -- leaves and arithmetic ----------------------------------------------------------------
    def _number(self, e) -> ir.Value:
        if self.float:
            return const(self.ty, float(e))
        if not e.is_Integer:
            raise BackendError(f"a fractional constant {e} in an integer expression")
        return const(self.ty, int(e))

    def _truth(self, v: ir.Value) -> ir.Value:
        if v.type == I1:
            return v
        if is_float_type(v.type):
            return self.b.fcmp_unordered("!=", v, ir.Constant(v.type, 0.0))
        return self.b.icmp_signed("!=", v, ir.Constant(v.type, 0))

    def _add(self, a, c):
        return self.b.fadd(a, c) if self.float else self.b.add(a, c)

    def _sub(self, a, c):
        return self.b.fsub(a, c) if self.float else self.b.sub(a, c)

    def _mulv(self, a, c):
        return self.b.fmul(a, c) if self.float else self.b.mul(a, c)

    def _mul(self, e) -> ir.Value:
        """Factors multiplied in order; ``b**-n`` factors divide (``a/b`` is one rounding, as
        the `div` op computes it, not ``a * (1/b)``)."""
        if len(e.args) == 2 and e.args[0] == -1:
            x = self._emit(e.args[1])
            return self.b.fneg(x) if self.float else self.b.neg(x)
        acc = None
        for f in e.args:  # (an integer b**-n is the truncated power, a factor like any other)
            if not self.float or not _negative_exponent(f):
                v = self._emit(f)
                acc = v if acc is None else self._mulv(acc, v)
        for f in e.args:
            if self.float and _negative_exponent(f):
                den = self._pow(f.base, -f.exp)
                acc = self.b.fdiv(const(self.ty, 1) if acc is None else acc, den)
        return acc

    def _pow(self, base, exp) -> ir.Value:
        """``base ** exp`` as NumPy's printer computes it (expr_numpy.py): a float exponent
        (a `pow` op) is the power function; rational exponents take the forms of `square`,
        `sqrt` and `div` (1/b)."""
        b = self.b
        if not self.float:
            if exp.is_Integer and 0 <= int(exp) <= 64:
                return self._small_power(self._emit(base), int(exp))
            return self._ipow(self._emit(base), self._emit(exp))
        if exp.is_Rational:
            if exp.is_Integer and 0 <= int(exp) <= 64:
                return self._small_power(self._emit(base), int(exp))
            if exp == sympy.Rational(1, 2):
                return b.call(float_intrinsic(self.module, "sqrt", self.ty), [self._emit(base)])
            if exp.is_negative and (exp.is_Integer or exp == -sympy.Rational(1, 2)):
                return b.fdiv(const(self.ty, 1), self._pow(base, -exp))
        if base == sympy.E:
            return self.math(b, "exp", self._emit(exp), self.ty)
        if base == 2:  # 2**x: exact at integers (np.exp2, as expr_numpy prints it)
            return self.math(b, "exp2", self._emit(exp), self.ty)
        x, y = self._emit(base), self._emit(exp)
        # a general power: libm's pow (through the intrinsic) keeps its semantics for negative
        # bases; a math provider may supply its own (NVPTX has no libm)
        custom = getattr(self.math, "pow", None)
        if custom is not None:
            return custom(b, x, y, self.ty)
        return b.call(float_intrinsic(self.module, "pow", self.ty, arity=2), [x, y])

    def _small_power(self, x: ir.Value, n: int) -> ir.Value:
        """x**n by binary exponentiation: x**13 in 5 multiplications."""
        if n == 0:
            return const(self.ty, 1)
        result, power, k = None, x, n
        while k:
            if k & 1:
                result = power if result is None else self._mulv(result, power)
            k >>= 1
            if k:
                power = self._mulv(power, power)
        return result

    def _ipow(self, x: ir.Value, n: ir.Value) -> ir.Value:
        """Integer x**n, branch-free: square-and-multiply over every bit of n (wrapping as
        NumPy); a negative n gives the truncated 1/x**-n: 1, -1 or 0 (NumPy raises there)."""
        b, ty = self.b, self.ty
        one, zero = const(ty, 1), const(ty, 0)
        result, power = one, x
        for bit in range(ty.width - 1):
            set_ = b.icmp_signed("!=", b.and_(n, const(ty, 1 << bit)), zero)
            result = b.select(set_, b.mul(result, power), result)
            power = b.mul(power, power)
        odd = b.icmp_signed("!=", b.and_(n, one), zero)
        minus_one = b.select(odd, const(ty, -1), one)
        small = b.select(b.icmp_signed("==", x, one), one,
                         b.select(b.icmp_signed("==", x, const(ty, -1)), minus_one, zero))
        return b.select(b.icmp_signed("<", n, zero), small, result)

    def _divmod(self, a: ir.Value, d: ir.Value) -> tuple[ir.Value, ir.Value]:
        """NumPy's floor division and remainder (the remainder has the sign of d)."""
        return self._float_divmod(a, d) if self.float else self._int_divmod(a, d)

    def _int_divmod(self, a: ir.Value, d: ir.Value) -> tuple[ir.Value, ir.Value]:
        b, ty = self.b, self.ty
        if isinstance(d, ir.Constant) and int(d.constant) > 0:  # (index arithmetic, mostly)
            n = int(d.constant)
            if n & (n - 1) == 0:  # a power of two: shifts are floor division already
                shift = n.bit_length() - 1
                return b.ashr(a, const(ty, shift)), b.and_(a, const(ty, n - 1))
            q, r = b.sdiv(a, d), b.srem(a, d)
            negative = b.icmp_signed("<", r, const(ty, 0))
            return (b.select(negative, b.sub(q, const(ty, 1)), q),
                    b.select(negative, b.add(r, d), r))
        zero, one = const(ty, 0), const(ty, 1)
        minimum = const(ty, -(1 << (ty.width - 1)))
        by_zero = b.icmp_signed("==", d, zero)
        overflow = b.and_(b.icmp_signed("==", a, minimum), b.icmp_signed("==", d, const(ty, -1)))
        safe = b.select(b.or_(by_zero, overflow), one, d)  # a/1 = INT_MIN, rem 0: NumPy's
        q, r = b.sdiv(a, safe), b.srem(a, safe)
        # C truncates toward zero; floor when the remainder's sign differs from the divisor's
        adjust = b.and_(b.icmp_signed("!=", r, zero),
                        b.icmp_signed("!=", b.icmp_signed("<", r, zero),
                                      b.icmp_signed("<", safe, zero)))
        q = b.select(adjust, b.sub(q, one), q)
        r = b.select(adjust, b.add(r, safe), r)
        return b.select(by_zero, zero, q), b.select(by_zero, zero, r)

    def _float_divmod(self, a: ir.Value, d: ir.Value) -> tuple[ir.Value, ir.Value]:
        """NumPy's npy_divmod: fmod, then the quotient snapped to an integer."""
        b, ty = self.b, self.ty
        zero, one, half = const(ty, 0.0), const(ty, 1.0), const(ty, 0.5)
        fmod = getattr(self.math, "fmod", None)
        m = fmod(b, a, d, ty) if fmod is not None else b.frem(a, d)
        quotient = b.fdiv(a, d)
        div = b.fdiv(b.fsub(a, m), d)
        nonzero_m = b.fcmp_unordered("!=", m, zero)
        differ = b.icmp_unsigned("!=", b.fcmp_ordered("<", d, zero), b.fcmp_ordered("<", m, zero))
        fix = b.and_(nonzero_m, differ)
        copysign = float_intrinsic(self.module, "copysign", ty, 2)
        m = b.select(fix, b.fadd(m, d), b.select(nonzero_m, m, b.call(copysign, [zero, d])))
        div = b.select(fix, b.fsub(div, one), div)
        floor = b.call(float_intrinsic(self.module, "floor", ty), [div])
        snapped = b.select(b.fcmp_ordered(">", b.fsub(div, floor), half), b.fadd(floor, one),
                           floor)
        q = b.select(b.fcmp_unordered("!=", div, zero), snapped,
                     b.call(copysign, [zero, quotient]))
        by_zero = b.fcmp_ordered("==", d, zero)
        return b.select(by_zero, quotient, q), m

    def _cmp(self, op: str, a, c) -> ir.Value:
        if a.type == I1 and c.type != I1:  # a truth value compared with a number: 0/1
            a = self.b.uitofp(a, c.type) if is_float_type(c.type) else self.b.zext(a, c.type)
        if c.type == I1 and a.type != I1:
            c = self.b.uitofp(c, a.type) if is_float_type(a.type) else self.b.zext(c, a.type)
        if is_float_type(a.type):
            # IEEE: every comparison with NaN is false, except != which is true
            if op == "!=":
                return self.b.fcmp_unordered("!=", a, c)
            return self.b.fcmp_ordered(op, a, c)
        return self.b.icmp_signed(op, a, c)

    def _piecewise(self, cases) -> ir.Value:
        value, cond = cases[0]
        if cond is sympy.true:
            return self._emit(value)
        # no case holds: NaN, as NumPy's printer says (0 for integers, which have no NaN)
        rest = self._piecewise(cases[1:]) if len(cases) > 1 else const(
            self.ty, float("nan") if self.float else 0)
        chosen = self._emit(value)
        if chosen.type != rest.type:  # a truth value beside a number: the truth as 0/1
            chosen, rest = self._as_number(chosen), self._as_number(rest)
        return self.b.select(self._truth(self._emit(cond)), chosen, rest)

    def _as_number(self, v: ir.Value) -> ir.Value:
        if v.type != I1:
            return v
        return self.b.uitofp(v, self.ty) if self.float else self.b.zext(v, self.ty)


__all__ = ["ExprEmitter", "F32"]
