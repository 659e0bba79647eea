"""The math functions of every native target: for the host (the llvm backend and the CUDA
emulation), vectorizable transcendental kernels emitted as LLVM IR (`host_math`); for a GPU,
calls into libdevice (`libdevice_math`, at the end). One file says how each function, sigmoid
say, is computed on each target.

Why this exists: an element-wise loop that calls libm's ``expf`` (or the ``llvm.exp.*`` /
``llvm.log.*`` intrinsics, which lower to those same libm calls) is not widened by LLVM's loop
vectorizer: it is executed one element at a time.  Every function here is instead defined as
an ``internal alwaysinline`` function whose body is one basic block of plain arithmetic,
integer bit manipulation, ``select`` and a few intrinsics that are single instructions (or
short instruction sequences) on x86: ``llvm.fmuladd``, ``llvm.fabs`` and ``llvm.copysign``.
Once the inliner has run, the loop body is straight-line code and the vectorizer turns it into
``<8 x float>`` / ``<4 x double>`` code on AVX2.

Deliberate choices:

* ``llvm.fmuladd`` rather than ``llvm.fma``: it becomes one ``vfmadd`` where the target has
  FMA and a multiply plus an add where it does not, whereas ``llvm.fma`` would become a libm
  call on a CPU without FMA.  No algorithm below needs the product to be fused for its accuracy
  (the products that must be exact are exact by construction), so code is correct either way.
* Rounding to the nearest integer uses the "shifter" trick ``(y + S) - S`` with
  ``S = 1.5*2**23`` (float) or ``1.5*2**52`` (double) instead of ``llvm.rint``/``llvm.floor``,
  which need SSE4.1 (without it they become calls).  The sum also holds the integer in its low
  mantissa bits, so no float-to-int conversion is needed (``fptosi`` to ``<4 x i64>`` has no
  AVX2 instruction), and the int-to-float conversion in log uses the same idea backwards.
* Results that exp/expm1 round are carried as hi + lo pairs into tanh, sigmoid and softplus,
  and the rounding errors of their few critical sums are recovered with Fast2Sum, so that in
  every function one final rounding dominates the error.
* No fast-math flags: IEEE semantics (signed zeros, NaN, infinities, subnormals) are kept,
  and special inputs are handled with ``select`` on the input, never with branches.

Methods (x is the argument, ``r`` the reduced argument):

* exp: ``x = n*ln2 + r``, ``|r| <= ln2/2``, with ln2 split in a short ``LN2_HI`` (so that
  ``n*LN2_HI`` and ``x - n*LN2_HI`` are exact) and ``LN2_LO``; the rounding error of ``r`` is
  kept as ``r_lo``.  ``exp(r) = 1 + r + tail`` with ``tail = r**2 * P(r) + r_lo``, the sum
  ``1 + r`` made exact by Fast2Sum, and the result scaled by ``2**n`` in two exact
  power-of-two multiplications so that results near overflow and in the subnormal range are
  right.  Clamping the argument first gives the overflow to +inf and the underflow to 0.
* expm1: same reduction; ``expm1(x) = 2 * ((s - 1/2) + s*r + s*tail)`` with ``s = 2**(n-1)``:
  ``s*r`` is exact, the rounding error of ``s - 1/2`` is recovered, and the sum of the two is
  made exact by Fast2Sum, so there is no cancellation and one rounding at the end.
* log: subnormals are scaled by ``2**24`` (``2**53``) first; then ``x = 2**k * m`` with
  ``m in [sqrt(1/2), sqrt(2))`` taken from the bits, ``f = m - 1`` (exact),
  ``s = f/(2+f)`` and ``log(1+f) = f - f**2/2 + s*(f**2/2 + s**2*Q(s**2))`` (an identity of
  ``log(1+f) = 2*atanh(s)``), summed smallest terms first, plus ``k*ln2`` in two parts.
* log1p: ``u = 1 + x`` rounded, with its rounding error ``c`` recovered exactly by Fast2Sum;
  ``log1p(x) = log(u) + c/u`` using the log kernel above.
* tanh: ``t = expm1(2|x|)`` (as hi + lo); ``t/(t+2)`` for ``|x| < 0.55`` and
  ``1 - 2/(t+2)`` above, with one division, the rounding errors of t and t + 2 put back to
  first order, and the sign restored with copysign.
* sigmoid: ``e = exp(-|x|)`` (as hi + lo); ``1/(1+e)`` for ``x >= 0`` and ``e/(1+e)``
  otherwise, one division, rounding errors of e and 1 + e put back to first order.
* softplus: ``max(x, 0) + log1p(exp(-|x|))``, exp's rounding error passed on to log1p.

Polynomial coefficients were computed for this file with mpmath (50 significant digits) as
Chebyshev interpolants (``mpmath.chebyfit``, near-minimax) of the stated function on the stated
interval, then rounded to the nearest float32/float64.  The errors quoted next to them are
mpmath's bound for the interpolant before rounding.

Accuracy (measured against correctly rounded results; the test suite asserts 2 ulp): at most
1 ulp for every function and both types -- over all 2**32 float32 arguments (0.06% of them
1 ulp off for exp, up to 1.9% for softplus), and over 4.4e6 float64 arguments per function
(log-spaced over the whole range, dense near thresholds, random).  Special values (NaN, +-inf,
+-0, subnormals, overflow and underflow thresholds) match NumPy exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llvmlite import ir

from .irutil import F32, const, float_intrinsic

__all__ = ["MATH_FUNCTIONS", "get_math_function"]

MATH_FUNCTIONS: tuple[str, ...] = ("exp", "log", "expm1", "log1p", "tanh", "sigmoid", "softplus")

Operand = ir.Value | float


# -------------------------------------------------------------------------------------------
# Per-type constants
# -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Format:
    """Everything that differs between float32 and float64."""

    suffix: str
    int_bits: int  # width of the integer type the float is reinterpreted as
    mant_bits: int  # stored mantissa bits (p - 1)
    bias: int  # exponent bias
    ln2_hi: float  # ln2 rounded to few bits: n*LN2_HI is exact for every n used
    ln2_lo: float  # ln2 - LN2_HI, rounded
    log2e: float  # 1/ln2, rounded (only used to choose n, so its rounding does not matter)
    exp_lo: float  # exp(x) rounds to 0 for x <= exp_lo: exp clamps its argument there
    exp_hi: float  # exp(x) overflows for x >= exp_hi: exp and expm1 clamp there
    expm1_lo: float  # expm1(x) rounds to -1 for x <= expm1_lo: expm1 clamps there
    expm1_tiny: float  # expm1(x) rounds to x for |x| < expm1_tiny
    tanh_one: float  # tanh(x) rounds to 1 for x >= tanh_one: tanh clamps |x| there
    sqrt_half_bits: int  # bit pattern of sqrt(1/2) rounded: splits [sqrt(1/2), sqrt(2))
    exp_poly: tuple[float, ...]  # P(r) ~ (exp(r) - 1 - r) / r**2, lowest degree first
    log_poly: tuple[float, ...]  # Q(z) ~ (2*atanh(s) - 2*s) / s**3, z = s**2, lowest first

    @property
    def mant_mask(self) -> int:
        return (1 << self.mant_bits) - 1

    @property
    def shifter(self) -> float:
        """1.5 * 2**mant_bits: adding it to a (not too large) y rounds y to an integer, which
        then sits in the low mantissa bits of the sum."""
        return 1.5 * 2.0**self.mant_bits

    @property
    def shifter_bits(self) -> int:
        return ((self.bias + self.mant_bits) << self.mant_bits) | (1 << (self.mant_bits - 1))

    @property
    def two_p_bits(self) -> int:
        """Bit pattern of 2**mant_bits: OR-ing a small integer k >= 0 into it gives the float
        2**mant_bits + k."""
        return (self.bias + self.mant_bits) << self.mant_bits

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias)


_F32 = _Format(
    suffix="f32",
    int_bits=32,
    mant_bits=23,
    bias=127,
    ln2_hi=0.693145751953125,  # 0x1.62e4p-1: 15 significant bits, and |n| <= 152 has 8
    ln2_lo=1.428606765330187e-06,  # 0x1.7f7d1cp-20 = ln2 - LN2_HI rounded to float32
    log2e=1.4426950216293335,  # 0x1.715476p+0
    exp_lo=-104.0,  # exp(-103.972077...) is half the smallest subnormal, 2**-150
    exp_hi=89.0,  # exp(88.722839...) is FLT_MAX + half an ulp
    expm1_lo=-30.0,  # exp(-30) = 9.4e-14 < 2**-25: expm1 rounds to -1
    expm1_tiny=2.0**-26,  # |x|/2 < 2**-27: below half an ulp of x
    tanh_one=10.0,  # 1 - tanh(10) = 4.1e-9 < 2**-25
    sqrt_half_bits=0x3F3504F3,
    # Chebyshev interpolant of degree 5 on [-0.35, 0.35], error 1.5e-9 (2**-29.3).
    exp_poly=(
        0.5,  # 0x1p-1
        0.1666666716337204,  # 0x1.555556p-3
        0.04166645556688309,  # 0x1.5554e4p-5
        0.00833331048488617,  # 0x1.1110ep-7
        0.0013934532180428505,  # 0x1.6d491p-10
        0.00019891970441676676,  # 0x1.a12a34p-13
    ),
    # Chebyshev interpolant of degree 2 on [0, 0.0295] (|s| <= 3 - 2*sqrt(2) = 0.1716),
    # error 1.9e-7 (2**-22.3); its weight in the result is at most z/2 = 2**-6.1.
    log_poly=(
        0.6666668653488159,  # 0x1.55555cp-1
        0.3998873233795166,  # 0x1.997c1p-2
        0.29582157731056213,  # 0x1.2eebdap-2
    ),
)

_F64 = _Format(
    suffix="f64",
    int_bits=64,
    mant_bits=52,
    bias=1023,
    ln2_hi=0.6931471805601177,  # 0x1.62e42fefa4p-1: 39 significant bits, |n| <= 1076 has 11
    ln2_lo=-1.7239444525614835e-13,  # -0x1.8432a1b0e2634p-43 = ln2 - LN2_HI rounded
    log2e=1.4426950408889634,  # 0x1.71547652b82fep+0
    exp_lo=-746.0,  # exp(-745.133219...) is half the smallest subnormal, 2**-1075
    exp_hi=710.0,  # exp(709.782712...) is DBL_MAX + half an ulp
    expm1_lo=-40.0,  # exp(-40) = 4.2e-18 < 2**-54: expm1 rounds to -1
    expm1_tiny=2.0**-55,
    tanh_one=20.0,  # 1 - tanh(20) = 8.5e-18 < 2**-54
    sqrt_half_bits=0x3FE6A09E667F3BCD,
    # Chebyshev interpolant of degree 10 on [-0.35, 0.35], error 1.6e-18 (2**-59.2).
    exp_poly=(
        0.5,  # 0x1p-1
        0.1666666666666667,  # 0x1.5555555555557p-3
        0.04166666666666667,  # 0x1.5555555555556p-5
        0.008333333333325551,  # 0x1.111111110ff8bp-7
        0.0013888888888883332,  # 0x1.6c16c16c16214p-10
        0.00019841269876840357,  # 0x1.a01a01ac9de9ep-13
        2.480158732699005e-05,  # 0x1.a01a01a74077ap-16
        2.755725286336732e-06,  # 0x1.71ddfff6573d6p-19
        2.755727183153613e-07,  # 0x1.27e4da1e12fb1p-22
        2.5106262550879078e-08,  # 0x1.af5282aacdb2ep-26
        2.0915433598076003e-09,  # 0x1.1f75a3caadff5p-29
    ),
    # Chebyshev interpolant of degree 6 on [0, 0.0295], error 3.1e-16 (2**-51.5); its weight
    # in the result is at most z/2 = 2**-6.1.
    log_poly=(
        0.666666666666667,  # 0x1.5555555555558p-1
        0.3999999999989819,  # 0x1.99999999951f5p-2
        0.28571428626570206,  # 0x1.2492492e0b70cp-2
        0.2222221103781659,  # 0x1.c71c62c42db89p-3
        0.18182896183483085,  # 0x1.7462be245eae3p-3
        0.15331487235865734,  # 0x1.39fd25d62ab23p-3
        0.14619343453512615,  # 0x1.2b6776a1bf0b9p-3
    ),
)


def _format_of(ty: ir.Type) -> _Format:
    # FloatType and DoubleType are siblings in llvmlite, not subclasses of each other.
    if isinstance(ty, ir.FloatType):
        return _F32
    if isinstance(ty, ir.DoubleType):
        return _F64
    raise ValueError(f"graphc math functions take float or double, not {ty}")


# -------------------------------------------------------------------------------------------
# IR emission helpers
# -------------------------------------------------------------------------------------------


class _Emitter:
    """An IRBuilder specialised to one float type, with float literals accepted as operands.

    Keeps the function bodies below close to the formulas they implement.
    """

    def __init__(self, module: ir.Module, builder: ir.IRBuilder, fmt: _Format, ty: ir.Type):
        self.b = builder
        self.fmt = fmt
        self.ty = ty
        self.ity = ir.IntType(fmt.int_bits)
        self._fmuladd = module.declare_intrinsic("llvm.fmuladd", [ty],
                                                 ir.FunctionType(ty, [ty, ty, ty]))
        self._fabs = module.declare_intrinsic("llvm.fabs", [ty], ir.FunctionType(ty, [ty]))
        self._copysign = module.declare_intrinsic("llvm.copysign", [ty],
                                                  ir.FunctionType(ty, [ty, ty]))

    # Operands ---------------------------------------------------------------------------
    def f(self, v: Operand) -> ir.Value:
        return v if isinstance(v, ir.Value) else ir.Constant(self.ty, float(v))

    def i(self, v: ir.Value | int) -> ir.Value:
        return v if isinstance(v, ir.Value) else ir.Constant(self.ity, int(v))

    # Float arithmetic -------------------------------------------------------------------
    def add(self, a: Operand, b: Operand, name: str = "") -> ir.Value:
        return self.b.fadd(self.f(a), self.f(b), name=name)

    def sub(self, a: Operand, b: Operand, name: str = "") -> ir.Value:
        return self.b.fsub(self.f(a), self.f(b), name=name)

    def mul(self, a: Operand, b: Operand, name: str = "") -> ir.Value:
        return self.b.fmul(self.f(a), self.f(b), name=name)

    def div(self, a: Operand, b: Operand, name: str = "") -> ir.Value:
        return self.b.fdiv(self.f(a), self.f(b), name=name)

    def fma(self, a: Operand, b: Operand, c: Operand, name: str = "") -> ir.Value:
        """a*b + c, fused where the target can (callers never rely on the fusion)."""
        return self.b.call(self._fmuladd, [self.f(a), self.f(b), self.f(c)], name=name)

    def abs(self, a: ir.Value, name: str = "") -> ir.Value:
        return self.b.call(self._fabs, [a], name=name)

    def copysign(self, mag: Operand, sign: ir.Value, name: str = "") -> ir.Value:
        return self.b.call(self._copysign, [self.f(mag), sign], name=name)

    # Comparisons (ordered: false when either side is NaN) and selects ---------------------
    def cmp(self, op: str, a: Operand, b: Operand) -> ir.Value:
        return self.b.fcmp_ordered(op, self.f(a), self.f(b))

    def is_nan(self, a: ir.Value) -> ir.Value:
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, cond: ir.Value, a: Operand, b: Operand, name: str = "") -> ir.Value:
        return self.b.select(cond, self.f(a), self.f(b), name=name)

    def clamp(self, x: ir.Value, lo: float | None, hi: float | None) -> ir.Value:
        """min(max(x, lo), hi) that lets NaN through (both comparisons are false for NaN)."""
        if lo is not None:
            x = self.select(self.cmp("<", x, lo), lo, x)
        if hi is not None:
            x = self.select(self.cmp(">", x, hi), hi, x)
        return x

    # Bit manipulation -------------------------------------------------------------------
    def bits(self, a: ir.Value) -> ir.Value:
        return self.b.bitcast(a, self.ity)

    def from_bits(self, a: ir.Value) -> ir.Value:
        return self.b.bitcast(a, self.ty)

    def iadd(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return self.b.add(a, self.i(b))

    def isub(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return self.b.sub(a, self.i(b))

    def iand(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return self.b.and_(a, self.i(b))

    def ior(self, a: ir.Value, b: ir.Value | int) -> ir.Value:
        return self.b.or_(a, self.i(b))

    def shl(self, a: ir.Value, b: int) -> ir.Value:
        return self.b.shl(a, self.i(b))

    def lshr(self, a: ir.Value, b: int) -> ir.Value:
        return self.b.lshr(a, self.i(b))

    def ashr(self, a: ir.Value, b: int) -> ir.Value:
        return self.b.ashr(a, self.i(b))


def _horner(em: _Emitter, x: ir.Value, coeffs: Sequence[float]) -> ir.Value:
    """c0 + c1*x + c2*x**2 + ... by Horner's rule with multiply-adds (coefficients low first)."""
    acc = em.f(coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = em.fma(acc, x, c)
    return acc


def _estrin(em: _Emitter, x: ir.Value, x2: ir.Value, coeffs: Sequence[float]) -> ir.Value:
    """The same polynomial by Estrin's scheme: (c0 + c1*x) + x**2*((c2 + c3*x) + x**2*...).

    Why: the element-wise loops are vectorized but not interleaved (the bodies are large), so
    one iteration's dependency chain bounds the throughput; pairing terms halves the depth of
    the polynomial (one more multiply per level for x**4, x**8...).  With |x| < 0.36 the later
    terms are small, so the rounding error is the same as Horner's.
    """
    terms = [em.fma(coeffs[i + 1], x, coeffs[i]) if i + 1 < len(coeffs) else em.f(coeffs[i])
             for i in range(0, len(coeffs), 2)]
    power = x2
    while len(terms) > 1:
        terms = [em.fma(terms[i + 1], power, terms[i]) if i + 1 < len(terms) else terms[i]
                 for i in range(0, len(terms), 2)]
        if len(terms) > 1:
            power = em.mul(power, power)
    return terms[0]


def _pow2(em: _Emitter, n: ir.Value) -> ir.Value:
    """2**n from its bits; valid only for n in the normal exponent range [1-bias, bias]."""
    return em.from_bits(em.shl(em.iadd(n, em.fmt.bias), em.fmt.mant_bits))


def _pow2_pair(em: _Emitter, n: ir.Value) -> tuple[ir.Value, ir.Value]:
    """Two normal powers of two whose product is 2**n, for |n| up to about twice the exponent
    range: multiplying by them in turn scales by 2**n where a single 2**n could not even be
    represented (results near overflow, subnormal results)."""
    n1 = em.ashr(n, 1)
    return _pow2(em, n1), _pow2(em, em.isub(n, n1))


def _scale(em: _Emitter, y: ir.Value, pair: tuple[ir.Value, ir.Value]) -> ir.Value:
    """y * 2**n.  With y in [1/2, 2] the first product is exact and normal; the second rounds
    once, so an overflowing result becomes inf and a subnormal one is correctly rounded."""
    return em.mul(em.mul(y, pair[0]), pair[1])


def _fast_two_sum(em: _Emitter, a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(s, e) with s = fl(a + b) and s + e = a + b exactly, if a's exponent is >= b's (Dekker).

    Used wherever a sum's rounding error would otherwise cost most of the error budget.
    """
    s = em.add(a, b)
    return s, em.sub(b, em.sub(s, a))


@dataclass
class _Reduced:
    """x = n*ln2 + r + r_lo, with n an integer, |r| <= ln2/2 (about) and |r_lo| <= ulp(r)/2."""

    n: ir.Value  # integer type
    r: ir.Value
    r_lo: ir.Value


def _reduce_ln2(em: _Emitter, x: ir.Value) -> _Reduced:
    """Cody-Waite reduction of x modulo ln2 (x must already be clamped to the useful range).

    n*LN2_HI is exact (LN2_HI has few significant bits) and so is x - n*LN2_HI (the two are
    within a factor of two of each other); the only rounding is in subtracting n*LN2_LO, and
    its error is recovered in r_lo (Fast2Sum: exact whenever it matters, i.e. when r is not
    tiny).
    """
    fmt = em.fmt
    t = em.fma(x, fmt.log2e, fmt.shifter, name="n.shifted")
    nf = em.sub(t, fmt.shifter, name="n.float")  # exact: round(x / ln2)
    n = em.isub(em.bits(t), fmt.shifter_bits)  # the same integer, from the low mantissa bits
    r_hi = em.fma(nf, -fmt.ln2_hi, x)
    c = em.mul(nf, fmt.ln2_lo)
    r = em.sub(r_hi, c, name="r")
    r_lo = em.sub(em.sub(r_hi, r), c, name="r.lo")
    return _Reduced(n, r, r_lo)


def _expm1_tail(em: _Emitter, red: _Reduced) -> ir.Value:
    """expm1(r + r_lo) - r = r**2 * P(r) + r_lo (to first order in the tiny r_lo)."""
    r = red.r
    r2 = em.mul(r, r)
    return em.fma(r2, _estrin(em, r, r2, em.fmt.exp_poly), red.r_lo, name="exp.tail")


# -------------------------------------------------------------------------------------------
# exp, expm1
# -------------------------------------------------------------------------------------------


@dataclass
class _Split:
    """A result as an unevaluated sum hi + lo, |lo| <= ulp(hi)/2: lo lets the functions built
    on exp and expm1 cancel the error of rounding them."""

    hi: ir.Value
    lo: ir.Value


def _exp_split(em: _Emitter, x: ir.Value, clamp_lo: bool = True,
               clamp_hi: bool = True) -> _Split:
    """exp(x) = 2**n * (1 + r + tail), the sum 1 + r made exact by Fast2Sum.

    Callers that know the sign of x drop the clamp that cannot trigger.  Clamping gives every
    special case: -inf -> 0, +inf -> inf, NaN passes both clamps and stays NaN.
    """
    fmt = em.fmt
    x = em.clamp(x, fmt.exp_lo if clamp_lo else None, fmt.exp_hi if clamp_hi else None)
    red = _reduce_ln2(em, x)
    one_r, err = _fast_two_sum(em, em.f(1.0), red.r)
    y, y_lo = _fast_two_sum(em, one_r, em.add(err, _expm1_tail(em, red)))  # y in [0.70, 1.42]
    pair = _pow2_pair(em, red.n)
    # y_lo * 2**n is below half an ulp of a subnormal result, so rounds to 0 there: correct.
    return _Split(_scale(em, y, pair), _scale(em, y_lo, pair))


def _emit_exp(em: _Emitter, x: ir.Value) -> ir.Value:
    return _exp_split(em, x).hi  # the unused low part is dead code, removed by LLVM


def _expm1_split(em: _Emitter, x: ir.Value, clamp_lo: bool = True,
                 clamp_hi: bool = True) -> _Split:
    """expm1(x) = 2**n * (1 + r + tail) - 1 = 2 * ((s - 1/2) + s*r + s*tail), s = 2**(n-1).

    s*r is exact (s is a power of two), the rounding error of s - 1/2 is recovered, and
    (s - 1/2) + s*r is made exact with Fast2Sum (|s - 1/2| >= |s*r| for every n, or
    s - 1/2 = 0), so there is no cancellation for x near +-ln2/2 and one rounding at the end.
    Halving (s = 2**(n-1)) keeps s finite for the largest n, next to the overflow threshold;
    the final doubling is exact, or overflows to inf as it should.
    """
    fmt = em.fmt
    xc = em.clamp(x, fmt.expm1_lo if clamp_lo else None, fmt.exp_hi if clamp_hi else None)
    red = _reduce_ln2(em, xc)
    s = _pow2(em, em.isub(red.n, 1))
    a = em.sub(s, 0.5)
    # The rounding error of s - 1/2: exact for s <= 1/2 (Fast2Sum); for s >= 1 it is 0 where
    # s - 1/2 is exact, and below half the result's ulp where it is not.
    a_err = em.sub(s, em.add(a, 0.5))
    hi, err = _fast_two_sum(em, a, em.mul(s, red.r))
    half, half_lo = _fast_two_sum(em, hi, em.fma(s, _expm1_tail(em, red), em.add(err, a_err)))
    # Tiny |x| (zeros, subnormals): expm1(x) rounds to x, and the halving above would lose
    # the last bit of a subnormal or the sign of -0.
    tiny = em.cmp("<", em.abs(x), fmt.expm1_tiny)
    return _Split(em.select(tiny, x, em.mul(half, 2.0)),
                  em.select(tiny, 0.0, em.mul(half_lo, 2.0)))


def _emit_expm1(em: _Emitter, x: ir.Value) -> ir.Value:
    # Clamping gives -inf -> -1 and +inf -> inf; NaN passes the clamps and stays NaN.
    return _expm1_split(em, x).hi


# -------------------------------------------------------------------------------------------
# log, log1p
# -------------------------------------------------------------------------------------------


def _log_kernel(em: _Emitter, u: ir.Value, k_offset: Operand, extra: Operand = 0.0) -> ir.Value:
    """log(u) + extra for a positive normal finite u (anything else gives garbage).

    k_offset is subtracted from the exponent: log uses it to undo the scaling of subnormals.
    extra is a correction much smaller than ulp(log u), added among the small terms.
    """
    fmt = em.fmt
    # u = 2**k * m with m in [sqrt(1/2), sqrt(2)): subtracting the mantissa bits of sqrt(1/2)
    # carries into the exponent field exactly when m < sqrt(1/2).
    d = em.isub(em.bits(u), fmt.sqrt_half_bits & fmt.mant_mask)
    k_biased = em.lshr(d, fmt.mant_bits)  # k + bias - 1, small and non-negative
    m = em.from_bits(em.iadd(em.iand(d, fmt.mant_mask), fmt.sqrt_half_bits))
    # int -> float without sitofp (no <4 x i64> -> <4 x double> instruction on AVX2):
    # the bits of 2**mant_bits with k_biased in the mantissa are 2**mant_bits + k_biased.
    k_plus = em.from_bits(em.ior(k_biased, fmt.two_p_bits))
    k = em.sub(em.sub(k_plus, 2.0**fmt.mant_bits + fmt.bias - 1), k_offset, name="log.k")

    f = em.sub(m, 1.0, name="log.f")  # exact (Sterbenz)
    s = em.div(f, em.add(f, 2.0), name="log.s")
    z = em.mul(s, s)
    r = em.mul(z, _horner(em, z, fmt.log_poly))  # 2*atanh(s) = 2*s + s*r
    hfsq = em.mul(em.mul(f, f), 0.5)
    # log(1+f) = f - hfsq + s*(hfsq + r); sum the small terms first and f, k*LN2_HI last.
    small = em.fma(s, em.add(hfsq, r), em.fma(k, fmt.ln2_lo, extra))
    log1pf = em.sub(f, em.sub(hfsq, small))
    return em.fma(k, fmt.ln2_hi, log1pf, name="log")  # k*LN2_HI is exact


def _emit_log(em: _Emitter, x: ir.Value) -> ir.Value:
    fmt = em.fmt
    # Subnormals (and zero/negatives, overridden below) are scaled by 2**(mant_bits+1) into the
    # normal range so the exponent field is meaningful.
    sub = em.cmp("<", x, fmt.min_normal)
    u = em.select(sub, em.mul(x, 2.0 ** (fmt.mant_bits + 1)), x)
    res = _log_kernel(em, u, em.select(sub, float(fmt.mant_bits + 1), 0.0))
    res = em.select(em.cmp("==", x, float("inf")), x, res)  # log(inf) = inf
    res = em.select(em.cmp("==", x, 0.0), float("-inf"), res)  # log(+-0) = -inf
    # log(x < 0) = NaN and log(NaN) = NaN: "unordered or less than".
    return em.select(em.b.fcmp_unordered("<", x, em.f(0.0)), float("nan"), res)


def _log1p_kernel(em: _Emitter, x: ir.Value, x_lo: Operand = 0.0) -> ir.Value:
    """log1p(x + x_lo) for x >= -1 and finite, |x_lo| <= ulp(x) (x = -1 gives NaN: the caller
    sorts it out).

    u = fl(1 + x) loses the low bits of x; c is that rounding error, exactly (Fast2Sum with the
    larger operand first), so 1 + x = u + c and log1p(x) = log(u) + c/u to within ulp(c/u).
    For |x| < ulp(1)/2, u = 1 and the result is c = x exactly (subnormals included).
    """
    u = em.add(x, 1.0, name="log1p.u")
    c_small = em.sub(x, em.sub(u, 1.0))  # |x| <= 1
    c_large = em.sub(1.0, em.sub(u, x))  # |x| > 1
    c = em.add(em.select(em.cmp(">", x, 1.0), c_large, c_small), x_lo)
    return _log_kernel(em, u, 0.0, em.div(c, u))


def _emit_log1p(em: _Emitter, x: ir.Value) -> ir.Value:
    res = _log1p_kernel(em, x)
    res = em.select(em.cmp("==", x, float("inf")), x, res)  # log1p(inf) = inf
    res = em.select(em.cmp("==", x, -1.0), float("-inf"), res)  # log1p(-1) = -inf
    res = em.select(em.b.fcmp_unordered("<", x, em.f(-1.0)), float("nan"), res)  # x<-1, NaN
    return em.select(em.cmp("==", x, 0.0), x, res)  # keeps the sign of zero


# -------------------------------------------------------------------------------------------
# tanh, sigmoid, softplus
# -------------------------------------------------------------------------------------------


def _emit_tanh(em: _Emitter, x: ir.Value) -> ir.Value:
    """tanh|x| = T/(T+2) = 1 - 2/(T+2) with T = expm1(2|x|) = t + t_lo.

    The first form below 0.55 (result < 1/2, no cancellation; tiny x gives x exactly), the
    second above (the subtracted term is at most half the result); one division serves both.
    The division's operands are t and fl(t + 2), so the rounding errors of t and of t + 2 are
    put back to first order: N/(d + d_err) ~ w + (N_lo - w*d_err)/d with w = N/d, and
    1/d = (1 - w)/2 (small form) or -w/2 (large form), no second division needed.
    |x| is clamped where tanh rounds to 1, so t stays finite; NaN passes the clamp.
    """
    a = em.clamp(em.abs(x), None, em.fmt.tanh_one)
    t = _expm1_split(em, em.mul(a, 2.0), clamp_lo=False, clamp_hi=False)
    small = em.cmp("<", a, 0.55)  # t < 2.004: t's exponent is at most 2's (Fast2Sum below)
    d = em.add(t.hi, 2.0)
    d_err = em.add(em.sub(em.select(small, t.hi, 2.0), em.sub(d, em.select(small, 2.0, t.hi))),
                   t.lo)
    w = em.div(em.select(small, t.hi, -2.0), d)
    inv_d = em.mul(em.select(small, em.sub(1.0, w), em.b.fneg(w)), 0.5)
    num_lo = em.select(small, t.lo, 0.0)
    wc = em.fma(em.fma(em.b.fneg(w), d_err, num_lo), inv_d, w)
    return em.copysign(em.select(small, wc, em.add(wc, 1.0)), x, name="tanh")


def _emit_sigmoid(em: _Emitter, x: ir.Value) -> ir.Value:
    """1/(1+E) for x >= 0 and E/(1+E) for x < 0, with E = exp(-|x|) = e + e_lo <= 1.

    As in tanh, the rounding errors of e and of d = fl(1 + e) are put back to first order:
    N/(d + d_err) ~ w + (N_lo - w*d_err)/d with w = N/d and 1/d = w (x >= 0) or 1 - w (x < 0).
    """
    e = _exp_split(em, em.b.fneg(em.abs(x)), clamp_hi=False)
    pos = em.cmp(">=", x, 0.0)  # NaN: e is NaN and so is everything below
    one_e, d_err = _fast_two_sum(em, em.f(1.0), e.hi)
    w = em.div(em.select(pos, 1.0, e.hi), one_e)
    inv_d = em.select(pos, w, em.sub(1.0, w))
    num_lo = em.select(pos, 0.0, e.lo)
    correction = em.fma(em.b.fneg(w), em.add(d_err, e.lo), num_lo)
    return em.fma(correction, inv_d, w, name="sigmoid")


def _emit_softplus(em: _Emitter, x: ir.Value) -> ir.Value:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): exp's argument is <= 0, no overflow.

    exp's rounding error (e.lo) goes into log1p's correction term.
    """
    e = _exp_split(em, em.b.fneg(em.abs(x)), clamp_hi=False)  # in [0, 1]
    res = em.add(em.select(em.cmp(">", x, 0.0), x, 0.0), _log1p_kernel(em, e.hi, e.lo))
    return em.select(em.is_nan(x), x, res, name="softplus")


_EMITTERS: dict[str, Callable[[_Emitter, ir.Value], ir.Value]] = {
    "exp": _emit_exp,
    "log": _emit_log,
    "expm1": _emit_expm1,
    "log1p": _emit_log1p,
    "tanh": _emit_tanh,
    "sigmoid": _emit_sigmoid,
    "softplus": _emit_softplus,
}
assert tuple(_EMITTERS) == MATH_FUNCTIONS


# -------------------------------------------------------------------------------------------
# Public entry point
# -------------------------------------------------------------------------------------------


def get_math_function(module: ir.Module, name: str, ty: ir.Type) -> ir.Function:
    """Define (once per module) and return ``graphc_math.<name>.<f32|f64>``: ``ty -> ty``.

    The function is ``internal`` and ``alwaysinline`` (so it disappears after inlining and its
    body joins the caller's loop, which can then be vectorized), ``nounwind`` and ``readnone``
    (printed by LLVM as ``memory(none)``), and its body is a single basic block.  Later calls
    with the same module, name and type return the same function; a declaration of it already
    in the module is given its body.

    Raises ValueError for a name not in MATH_FUNCTIONS, a type other than float/double, or a
    different global already using the name.
    """
    if name not in _EMITTERS:
        raise ValueError(f"unknown math function {name!r}; expected one of {MATH_FUNCTIONS}")
    fmt = _format_of(ty)
    fname = f"graphc_math.{name}.{fmt.suffix}"
    fnty = ir.FunctionType(ty, [ty])
    fn = module.globals.get(fname)
    if fn is None:
        fn = ir.Function(module, fnty, name=fname)
    elif not (isinstance(fn, ir.Function) and fn.function_type == fnty):
        raise ValueError(f"{fname} already exists in the module and is not {fnty}")
    elif not fn.is_declaration:
        return fn
    # A new function, or one the caller only declared: give it its body.
    fn.linkage = "internal"
    for attr in ("alwaysinline", "nounwind", "readnone"):
        fn.attributes.add(attr)
    x = fn.args[0]
    x.name = "x"
    builder = ir.IRBuilder(fn.append_basic_block("entry"))
    em = _Emitter(module, builder, fmt, ty)
    builder.ret(_EMITTERS[name](em, x))
    return fn


def host_math():
    """The math provider of host code (the llvm backend, the CUDA emulation): graphc's own
    vectorizable kernels, ``graphc_math.<name>.<f32|f64>``, defined once per module."""

    def provider(b, name, x, ty):
        return b.call(get_math_function(b.module, name, ty), [x])

    return provider


# -------------------------------------------------------------------------------------------
# The device's math: libdevice
# -------------------------------------------------------------------------------------------

_LIBDEVICE = {"exp": "exp", "log": "log", "expm1": "expm1", "log1p": "log1p", "tanh": "tanh"}


def libdevice_math(b: ir.IRBuilder, name: str, x: ir.Value, ty: ir.Type) -> ir.Value:
    """Transcendentals from libdevice (__nv_expf, __nv_log, ...); sigmoid and softplus are
    written with them in their numerically stable forms."""
    module = b.module

    def nv(fn: str, v):
        symbol = f"__nv_{fn}{'f' if ty == F32 else ''}"
        func = module.globals.get(symbol) or ir.Function(module, ir.FunctionType(ty, [ty]),
                                                         name=symbol)
        return b.call(func, [v])

    if name in _LIBDEVICE:
        return nv(_LIBDEVICE[name], x)
    fabs = b.call(float_intrinsic(module, "fabs", ty), [x])
    e = nv("exp", b.fneg(fabs))
    one = const(ty, 1.0)
    if name == "sigmoid":
        positive = b.fdiv(one, b.fadd(one, e))
        return b.select(b.fcmp_ordered(">=", x, const(ty, 0.0)), positive,
                        b.fdiv(e, b.fadd(one, e)))
    if name == "softplus":
        relu = b.call(float_intrinsic(module, "maxnum", ty, 2), [x, const(ty, 0.0)])
        return b.fadd(relu, nv("log1p", e))
    raise ValueError(f"no GPU math function {name}")


def _libdevice_pow(b: ir.IRBuilder, x: ir.Value, y: ir.Value, ty: ir.Type) -> ir.Value:
    """NVPTX has no libm: a general power is libdevice's __nv_pow(f)."""
    symbol = "__nv_powf" if ty == F32 else "__nv_pow"
    func = b.module.globals.get(symbol) or ir.Function(b.module, ir.FunctionType(ty, [ty, ty]),
                                                       name=symbol)
    return b.call(func, [x, y])


def _libdevice_fmod(b: ir.IRBuilder, x: ir.Value, y: ir.Value, ty: ir.Type) -> ir.Value:
    """C's fmod (what LLVM's frem means), from libdevice: NVPTX lowers frem approximately."""
    symbol = "__nv_fmodf" if ty == F32 else "__nv_fmod"
    func = b.module.globals.get(symbol) or ir.Function(b.module, ir.FunctionType(ty, [ty, ty]),
                                                       name=symbol)
    return b.call(func, [x, y])


libdevice_math.pow = _libdevice_pow
libdevice_math.fmod = _libdevice_fmod
