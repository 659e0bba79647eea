"""The one sympy -> LLVM IR emitter: scalar code for an elementwise expression.

Every elementwise op and every fused group is a sympy expression of its inputs x0..xn; this
turns it into straight-line IR (Piecewise becomes `select`, so loops stay branch-free and
vectorizable). Transcendental functions come from a `math` provider: on the host, inline
polynomial kernels (mathlib.py); on NVPTX, libdevice. The CUDA backend reuses this class.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy
from llvmlite import ir
from sympy.codegen.cfunctions import expm1, log1p

from graphc.errors import BackendError
from graphc.ops.expr import sigmoid, softplus

from .irutil import F32, I1, const, float_intrinsic, is_float_type

MathProvider = Callable[[ir.IRBuilder, str, ir.Value, ir.Type], ir.Value]

_FUNCTIONS = {sympy.exp: "exp", sympy.log: "log", sympy.tanh: "tanh", sigmoid: "sigmoid",
              softplus: "softplus", expm1: "expm1", log1p: "log1p"}
_FLOAT_CMP = {"<": ("<", True), "<=": ("<=", True), ">": (">", True), ">=": (">=", True),
              "==": ("==", True), "!=": ("!=", False)}


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
        key = e
        if key in self._memo:
            return self._memo[key]
        value = self._dispatch(e)
        self._memo[key] = value
        return value

    def _dispatch(self, e) -> ir.Value:
        b = self.b
        if e.is_Symbol:
            return self._env[e]
        if e is sympy.true or e is sympy.false:
            return ir.Constant(I1, int(e is sympy.true))
        if e.is_Number:
            return const(self.ty, float(e) if self.float else int(e))
        if e.is_Add:
            acc = self._emit(e.args[0])
            for a in e.args[1:]:
                if _negated(a):
                    acc = self._sub(acc, self._emit(-a))
                else:
                    acc = self._add(acc, self._emit(a))
            return acc
        if e.is_Mul:
            return self._mul(e)
        if e.is_Pow:
            return self._pow(*e.args)
        if e.func in _FUNCTIONS:
            if not self.float:
                raise BackendError(f"{e.func} needs a float type")
            return self.math(b, _FUNCTIONS[e.func], self._emit(e.args[0]), self.ty)
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
            # sign(0) = 0 and sign(NaN) = NaN, as NumPy: pass x through in those cases
            return b.select(pos, const(self.ty, 1), b.select(neg, const(self.ty, -1), x))
        if isinstance(e, sympy.Piecewise):
            return self._piecewise(e.args)
        if isinstance(e, sympy.core.relational.Relational):
            return self._cmp(e.rel_op, self._emit(e.lhs), self._emit(e.rhs))
        if isinstance(e, sympy.And):
            acc = self._emit(e.args[0])
            for a in e.args[1:]:
                acc = b.and_(acc, self._emit(a))
            return acc
        if isinstance(e, sympy.Or):
            acc = self._emit(e.args[0])
            for a in e.args[1:]:
                acc = b.or_(acc, self._emit(a))
            return acc
        if isinstance(e, sympy.Not):
            return b.xor(self._emit(e.args[0]), ir.Constant(I1, 1))
        if isinstance(e, (sympy.Max, sympy.Min)):
            return self._minmax(e)
        raise BackendError(f"the LLVM emitter cannot lower {type(e).__name__} in {e}")

    # -- arithmetic -------------------------------------------------------------------------
    def _add(self, a, c):
        return self.b.fadd(a, c) if self.float else self.b.add(a, c)

    def _sub(self, a, c):
        return self.b.fsub(a, c) if self.float else self.b.sub(a, c)

    def _neg(self, a):
        return self.b.fneg(a) if self.float else self.b.neg(a)

    def _mul(self, e) -> ir.Value:
        coeff, factors = e.as_coeff_mul() if e.is_commutative else (sympy.Integer(1), e.args)
        if not e.args or any(not a.is_commutative for a in e.args):
            factors = e.args
            coeff = sympy.Integer(1)
        num = [f for f in factors if not (f.is_Pow and f.exp.is_number and f.exp.is_negative)]
        den = [f.base**-f.exp for f in factors if f.is_Pow and f.exp.is_number and
               f.exp.is_negative]
        acc = None
        for f in num:
            v = self._emit(f)
            acc = v if acc is None else (self.b.fmul(acc, v) if self.float else self.b.mul(acc, v))
        if coeff == -1:
            acc = self._neg(acc) if acc is not None else const(self.ty, -1)
        elif coeff != 1 or acc is None:
            c = const(self.ty, float(coeff) if self.float else int(coeff))
            acc = c if acc is None else (self.b.fmul(c, acc) if self.float else
                                         self.b.mul(c, acc))
        for f in den:
            if not self.float:
                raise BackendError("division in an integer expression")
            acc = self.b.fdiv(acc, self._emit(f))
        return acc

    def _pow(self, base, exp) -> ir.Value:
        b = self.b
        if exp.is_Integer and abs(int(exp)) <= 64:
            n = int(exp)
            if n == 0:
                return const(self.ty, 1)
            x = self._emit(base)
            result, power, k = None, x, abs(n)
            while k:  # binary exponentiation: x**13 in 5 multiplications
                if k & 1:
                    result = power if result is None else self._mulv(result, power)
                k >>= 1
                if k:
                    power = self._mulv(power, power)
            if n < 0:
                if not self.float:
                    raise BackendError("negative integer power of an integer")
                result = b.fdiv(const(self.ty, 1), result)
            return result
        if not self.float:
            raise BackendError(f"integer power with exponent {exp}")
        if exp == sympy.Rational(1, 2):
            return b.call(float_intrinsic(self.module, "sqrt", self.ty), [self._emit(base)])
        if exp == -sympy.Rational(1, 2):
            root = b.call(float_intrinsic(self.module, "sqrt", self.ty), [self._emit(base)])
            return b.fdiv(const(self.ty, 1), root)
        if base == sympy.E:
            return self.math(b, "exp", self._emit(exp), self.ty)
        # a general power: libm's pow (through the intrinsic) keeps its semantics for negative
        # bases; a math provider may supply its own (NVPTX has no libm)
        custom = getattr(self.math, "pow", None)
        if custom is not None:
            return custom(b, self._emit(base), self._emit(exp), self.ty)
        fn = float_intrinsic(self.module, "pow", self.ty, arity=2)
        return b.call(fn, [self._emit(base), self._emit(exp)])

    def _mulv(self, a, c):
        return self.b.fmul(a, c) if self.float else self.b.mul(a, c)

    def _cmp(self, op: str, a, c) -> ir.Value:
        if a.type == I1 and c.type != I1:  # a truth value compared with a number: 0/1
            a = self.b.uitofp(a, c.type) if is_float_type(c.type) else self.b.zext(a, c.type)
        if c.type == I1 and a.type != I1:
            c = self.b.uitofp(c, a.type) if is_float_type(a.type) else self.b.zext(c, a.type)
        if self.float or is_float_type(a.type):
            cmp, ordered = _FLOAT_CMP[op]
            # NumPy: comparisons with NaN are False, except != which is True
            return self.b.fcmp_ordered(cmp, a, c) if ordered else self.b.fcmp_unordered(cmp, a, c)
        return self.b.icmp_signed(op, a, c)

    def _piecewise(self, cases) -> ir.Value:
        value, cond = cases[0]
        if cond is sympy.true or len(cases) == 1:
            return self._emit(value)
        return self.b.select(self._emit(cond), self._emit(value), self._piecewise(cases[1:]))

    def _minmax(self, e) -> ir.Value:
        name = "maximum" if isinstance(e, sympy.Max) else "minimum"
        acc = self._emit(e.args[0])
        for a in e.args[1:]:
            v = self._emit(a)
            if self.float:  # NaN-propagating, as numpy.maximum
                acc = self.b.call(float_intrinsic(self.module, name, self.ty, 2), [acc, v])
            else:
                op = ">" if name == "maximum" else "<"
                acc = self.b.select(self.b.icmp_signed(op, acc, v), acc, v)
        return acc


def _negated(term) -> bool:
    coeff, _ = term.as_coeff_mul()
    return coeff.is_number and coeff < 0


def intrinsic_math(b: ir.IRBuilder, name: str, x: ir.Value, ty: ir.Type) -> ir.Value:
    """Scalar math through LLVM intrinsics and plain formulas: correct but not vectorizable
    (the intrinsics become libm calls). Used where the vectorizable kernels are unavailable."""
    module = b.module
    fn = {"exp": "exp", "log": "log"}

    def f(n, v):
        return b.call(float_intrinsic(module, n, ty), [v])

    one = const(ty, 1.0)
    if name in fn:
        return f(fn[name], x)
    if name == "expm1":
        return b.fsub(f("exp", x), one)
    if name == "log1p":
        return f("log", b.fadd(one, x))
    if name == "tanh":
        e2 = f("exp", b.fmul(const(ty, -2.0), f("fabs", x)))
        t = b.fdiv(b.fsub(one, e2), b.fadd(one, e2))
        return b.call(float_intrinsic(module, "copysign", ty, 2), [t, x])
    if name == "sigmoid":
        e = f("exp", b.fneg(f("fabs", x)))
        pos = b.fdiv(one, b.fadd(one, e))
        return b.select(b.fcmp_ordered(">=", x, const(ty, 0.0)), pos, b.fdiv(e, b.fadd(one, e)))
    if name == "softplus":
        e = f("exp", b.fneg(f("fabs", x)))
        big = b.call(float_intrinsic(module, "maxnum", ty, 2), [x, const(ty, 0.0)])
        return b.fadd(big, f("log", b.fadd(one, e)))
    raise BackendError(f"no math function {name}")


__all__ = ["ExprEmitter", "F32", "intrinsic_math"]
