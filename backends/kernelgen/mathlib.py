"""The math functions of every native target: for the host (the llvm backend and the CUDA
emulation), vectorizable kernels emitted as LLVM IR (`host_math`); for a GPU, calls into
libdevice (`libdevice_math`, at the end). One file says how each function, sigmoid say, is
computed on each target.  The functions: exp, log, expm1, log1p, tanh, sigmoid, softplus, sin,
cos, tan, atan, erf, log2, log10, exp2, floor, ceil and round (half to even, as NumPy's rint).

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
* Products that must be exact without a fused multiply-add use Dekker's algorithm (Veltkamp's
  split into halves whose products are exact); sums whose error matters use Fast2Sum/TwoSum.
* Small constant tables are indexed with chains of ``select`` on constants (erf's pieces, the
  float32 reduction of sin/cos/tan); only the float64 reduction reads a table with a variable
  index (the bits of 2/pi), which vectorizes as a gather.  Many x86 CPUs (and baseline
  x86-64) execute gathers one lane at a time, so selects are preferred where few.
* float32 sin/cos/tan and erf are computed in float64 (float32-sized polynomials) and rounded
  once; the others run in the argument's own type, so float32 keeps twice the vector width.

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
* exp2: ``n = rint(x)``, ``r = x - n`` (exact); ``r*ln2`` as hi + lo (r split in two so that
  the high product is exact), then exp's kernel and exact scaling by ``2**n``: integers give
  exactly ``2**x``, overflow inf, subnormal results one rounding.
* log2, log10 (fdlibm's method): log's reduction, ``log(1+f)`` carried as hi + lo with the hi
  part's low bits cleared so that its product with the constant's high part is exact, the
  integer part (``k`` or ``k*log10(2)_hi``) added by Fast2Sum.  log2 of powers of two is
  exactly ``k``.
* floor, ceil, round: the shifter (``(|x| + 2**p) - 2**p`` rounds half to even), one step
  back for floor/ceil, the sign of x by copysign (``floor(-0.5) = -1``, ``ceil(-0.5) = -0``,
  ``round(-0.5) = -0``, ``round(2.5) = 2``); ``|x| >= 2**p``, inf and NaN pass through.
* atan: ``atan|x| = atan(c) + atan((|x| - c)/(1 + c|x|))`` with ``c`` in {0, 1/2, 1, 3/2,
  inf} chosen by |x| (so the reduced argument is at most 7/16), one division, ``atan(c)`` as
  hi + lo, an odd polynomial of degree 25 (float64) or 13 (float32).
* erf: ``a + a*Q(a**2)`` below 1; above, a few wide pieces (float64: [1,2), [2,3), [3,4),
  [4,6); float32: [1,2), [2,4)), each a polynomial in ``a - mid`` with its constant term as
  hi + lo; 1 from the exact argument where erf rounds to 1 (below it, capped at the largest
  value below 1); the sign by copysign.
* sin, cos, tan: a branch-free Payne-Hanek reduction of every finite |x| >= pi/4 (see
  _reduce_pio2): the 2/pi bits needed for |x|'s exponent, 24 at a time, times |x|'s mantissa
  in 24-bit chunks (exact products), summed modulo 4 in exact buckets, then the quadrant and
  ``r`` in [-pi/4, pi/4] as a double-double (float64; a double for float32 arguments).
  ``sin r = r + r**3*S(r**2)`` and ``cos r = 1 - r**2/2 + r**4*C(r**2)``, each as hi + lo
  (``r**2`` exact by Dekker, ``1 - r**2/2`` by Fast2Sum); the quadrant picks sin or cos and
  the sign.  tan = ``sin/cos`` or ``-cos/sin`` with one division whose rounding error (Dekker)
  and the low parts are put back.  inf and NaN give NaN, -0 gives -0.

Polynomial coefficients were computed for this file with mpmath (50 significant digits) as
Chebyshev interpolants (``mpmath.chebyfit``, near-minimax) of the stated function on the stated
interval, then rounded to the nearest float32/float64.  The errors quoted next to them are
mpmath's bound for the interpolant before rounding.  Split constants (hi + lo) and the 2/pi
chunks were computed with mpmath too (2/pi to 500 digits).

Accuracy (measured against correctly rounded results; the test suite asserts 2 ulp, and 0 for
floor, ceil and round): at most 1 ulp for every function and both types -- over all 2**32
float32 arguments (0.06% of them 1 ulp off for exp, up to 1.9% for softplus; for the later
functions see MEASURED below), and over 4.4e6 float64 arguments per function (log-spaced over
the whole range, dense near thresholds, random; for sin/cos/tan also next to multiples of pi/2
up to 2**60 * pi/2 and the worst case of the reduction, 6381956970095103 * 2**797, checked
against mpmath).  floor, ceil and round are exact.  Special values (NaN, +-inf, +-0,
subnormals, overflow and underflow thresholds) match NumPy exactly, and erf rounds to 1 from
exactly mpmath's threshold.

Measured for the later functions (fraction of arguments 1 ulp off; none is 2 ulp off):

=========  ==========================  ===============================
function   float32, all 2**32 args     float64, 5.2e6 to 6.1e6 args
=========  ==========================  ===============================
sin        4.8e-7                      1.2e-2
cos        4.9e-7                      1.1e-2
tan        8.6e-7                      1.9e-2
atan       1.5e-3                      2.3e-2
erf        3.5e-7                      3.7e-2
log2       2.5e-4                      2.2e-3
log10      2.5e-4                      2.2e-3
exp2       6.8e-4                      1.0e-2
floor,     0 (bit for bit, signs of    0
ceil,      zero included)
round
=========  ==========================  ===============================

(float32 against NumPy/SciPy in float64, float64 against long double; a few of the float32
"1 ulp" cases are the reference's double rounding.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from llvmlite import ir

from .irutil import F32, const, float_intrinsic

__all__ = ["MATH_FUNCTIONS", "get_math_function"]

MATH_FUNCTIONS: tuple[str, ...] = ("exp", "log", "expm1", "log1p", "tanh", "sigmoid", "softplus",
                                   "sin", "cos", "tan", "atan", "erf", "log2", "log10", "exp2",
                                   "floor", "ceil", "round")

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


@dataclass(frozen=True)
class _Exp2Constants:
    lo: float  # 2**x rounds to 0 below: exp2 clamps its argument there
    hi: float  # 2**x overflows above: exp2 clamps there
    split_bits: int  # r1 = r rounded to a multiple of 2**-split_bits
    ln2_hi: float  # ln2 to 24 - split_bits (53 - split_bits) bits: r1*LN2_HI is exact
    ln2_lo: float  # ln2 - LN2_HI, rounded
    ln2: float  # ln2, rounded


# The split of ln2 was computed with mpmath (ln2 rounded to the stated number of bits).
_EXP2_CONSTANTS = {
    "f32": _Exp2Constants(
        lo=-152.0, hi=129.0, split_bits=12,
        ln2_hi=0.693115234375,  # 0x1.62ep-1
        ln2_lo=3.194618329871446e-05,  # 0x1.0bfbe8p-15
        ln2=0.6931471824645996,  # 0x1.62e43p-1
    ),
    "f64": _Exp2Constants(
        lo=-1077.0, hi=1025.0, split_bits=26,
        ln2_hi=0.6931471824645996,  # 0x1.62e43p-1
        ln2_lo=-1.904654299957768e-09,  # -0x1.05c610ca86c39p-29
        ln2=0.6931471805599453,  # 0x1.62e42fefa39efp-1
    ),
}


@dataclass(frozen=True)
class _LogBaseConstants:
    hi_mask: int  # clears the low bits of log(1+f)'s high part
    ivln2_hi: float  # 1/ln2 to 12 (float) or 32 (double) bits
    ivln2_lo: float
    ivln10_hi: float  # 1/ln10, likewise
    ivln10_lo: float
    log10_2_hi: float  # log10(2) to 11 or 38 bits: k*LOG10_2_HI is exact for every k
    log10_2_lo: float


# Split with mpmath: each _hi is the constant rounded to the stated bits, each _lo the rest.
_LOG_BASE_CONSTANTS = {
    "f32": _LogBaseConstants(
        hi_mask=0xFFFFF000,
        ivln2_hi=1.44287109375,  # 0x1.716p+0
        ivln2_lo=-0.00017605285393074155,  # -0x1.7135a8p-13
        ivln10_hi=0.434326171875,  # 0x1.bccp-2
        ivln10_lo=-3.168997136526741e-05,  # -0x1.09d5b2p-15
        log10_2_hi=0.301025390625,  # 0x1.344p-2
        log10_2_lo=4.605039066518657e-06,  # 0x1.3509f8p-18
    ),
    "f64": _LogBaseConstants(
        hi_mask=0xFFFFFFFF00000000,
        ivln2_hi=1.4426950407214463,  # 0x1.71547652p+0
        ivln2_lo=1.6751713164886512e-10,  # 0x1.705fc2eefa2p-33
        ivln10_hi=0.4342944818781689,  # 0x1.bcb7b152p-2
        ivln10_lo=2.5082946711645275e-11,  # 0x1.b9438ca9aadd5p-36
        log10_2_hi=0.3010299956640665,  # 0x1.34413509f8p-2
        log10_2_lo=-8.532344317057107e-14,  # -0x1.80433b83b532ap-44
    ),
}


@dataclass(frozen=True)
class _AtanConstants:
    poly: tuple[float, ...]  # P(z) ~ (atan(t) - t)/t**3, z = t**2 <= (7/16)**2, lowest first
    base_hi: tuple[float, ...]  # atan(1/2), atan(1), atan(3/2), pi/2, rounded
    base_lo: tuple[float, ...]  # the rest of each, rounded


_ATAN_CONSTANTS = {
    "f32": _AtanConstants(
        # Chebyshev interpolant of degree 5 on [0, (7/16)**2], error 9.8e-10 (2**-29.9).
        poly=(
            -0.3333333432674408,  # -0x1.555556p-2
            0.1999996304512024,  # 0x1.999968p-3
            -0.14283399283885956,  # -0x1.248626p-3
            0.11058227717876434,  # 0x1.c4f1ecp-4
            -0.08532127737998962,  # -0x1.5d79d8p-4
            0.04822302982211113,  # 0x1.8b0b06p-5
        ),
        base_hi=(
            0.46364760398864746,  # 0x1.dac67p-2
            0.7853981852531433,  # 0x1.921fb6p-1
            0.9827937483787537,  # 0x1.f730bep-1
            1.5707963705062866,  # 0x1.921fb6p+0
        ),
        base_lo=(
            5.01215868808913e-09,  # 0x1.586ed4p-28
            -2.1855694143368964e-08,  # -0x1.777a5cp-26
            -2.5131424052915463e-08,  # -0x1.afc12cp-26
            -4.371138828673793e-08,  # -0x1.777a5cp-25
        ),
    ),
    "f64": _AtanConstants(
        # Chebyshev interpolant of degree 11 on [0, (7/16)**2], error 3.9e-18 (2**-57.8).
        poly=(
            -0.3333333333333333,  # -0x1.5555555555555p-2
            0.1999999999999941,  # 0x1.99999999998c5p-3
            -0.14285714285566806,  # -0x1.2492492485503p-3
            0.11111111096645038,  # 0x1.c71c71bd2b8bcp-4
            -0.09090908355602592,  # -0x1.745d154c84f7ap-4
            0.07692285554889286,  # 0x1.3b1375ce5bdc6p-4
            -0.06666241923359964,  # -0x1.110c9ce7b0572p-4
            0.05876946456755061,  # 0x1.e170800a4621p-5
            -0.05216679739313656,  # -0x1.ab59b417b2d3fp-5
            0.04492259293193656,  # 0x1.7001816fd063fp-5
            -0.033128134256069586,  # -0x1.0f62bba6a2558p-5
            0.014773184616983806,  # 0x1.e4167464d3de8p-7
        ),
        base_hi=(
            0.4636476090008061,  # 0x1.dac670561bb4fp-2
            0.7853981633974483,  # 0x1.921fb54442d18p-1
            0.982793723247329,  # 0x1.f730bd281f69bp-1
            1.5707963267948966,  # 0x1.921fb54442d18p+0
        ),
        base_lo=(
            2.2698777452961687e-17,  # 0x1.a2b7f222f65e2p-56
            3.061616997868383e-17,  # 0x1.1a62633145c07p-55
            1.3903311031230998e-17,  # 0x1.007887af0cbbdp-56
            6.123233995736766e-17,  # 0x1.1a62633145c07p-54
        ),
    ),
}


@dataclass(frozen=True)
class _ErfConstants:
    near: tuple[float, ...]  # Q(z) ~ erf(a)/a - 1, z = a**2 <= 1, lowest first
    starts: tuple[float, ...]  # piece i covers [starts[i], starts[i+1]) (the last up to limit)
    mids: tuple[float, ...]  # piece i is a polynomial in s = a - mids[i] (exact)
    rows: tuple[tuple[float, ...], ...]  # per piece: c0_hi, c0_lo, c1, ..., c_deg
    limit: float  # the smallest argument whose erf rounds to 1 in the result type (mpmath)
    below_one: float  # the largest result below 1 in the result type


# erf in float64 arithmetic for both types; the float32 polynomials are only as long as a
# float32 result needs.  Each piece is the Chebyshev interpolant (mpmath) of erf(mid + s) on
# its interval; its constant term is split as hi + lo.
_ERF_F32 = _ErfConstants(
    # Chebyshev interpolant of degree 9 on [0, 1], error 1.9e-14 (2**-45.6).
    near=(
        0.12837916709549382,  # 0x1.06eba8214d8c5p-3
        -0.37612638902808615,  # -0x1.812746b0271ecp-2
        0.11283791658548713,  # 0x1.ce2f2197bc2efp-4
        -0.026866169050599326,  # -0x1.b82ce15c3b7f8p-6
        0.0052239671935439,  # 0x1.565ba0406c001p-8
        -0.0008547933736519633,  # -0x1.c0286cad68e02p-11
        0.00012046261269779797,  # 0x1.f941bed7e7847p-14
        -1.4795031400662045e-05,  # -0x1.f0705a1dde9aap-17
        1.5306373163641084e-06,  # 0x1.9ae0986f9de4fp-20
        -1.0469110332151208e-07,  # -0x1.c1a515de8637ap-24
    ),
    starts=(1.0, 2.0),
    mids=(1.5, 3.0),
    # 2 pieces of degree 14, error at most 6.7e-12 (2**-37.1) (absolute).
    rows=(
        (  # [1, 2]: c0_hi, c0_lo, c1 ... c14
            0.9661051464753108, -3.3867031441680696e-17, 0.11893028922364644,
            -0.1783954338353638, 0.13875200409166827, -0.04459885847085048,
            -0.014866286040369773, 0.019326172517388652, -0.004743055404784524,
            -0.0023626875183906785, 0.001709842085879888, -9.281717053573879e-05,
            -0.000254575719548399, 7.717828874794129e-05, 1.8347415529945026e-05,
            -1.2710087326224292e-05,
        ),
        (  # [2, 4]: c0_hi, c0_lo, c1 ... c14
            0.9999779095030014, 5.363397058636269e-17, 0.0001392531511762839,
            -0.00041775914737288573, 0.0007890969091576567, -0.0010443982017862797,
            0.0010165878102605568, -0.0007380379083685955, 0.0003903754974041628,
            -0.0001347917189741046, 1.4399466809829907e-05, 1.5648267649327804e-05,
            -1.1469018456051582e-05, 2.997911112674364e-06, 6.159598445426782e-07,
            -4.4390521392992916e-07,
        ),
    ),
    limit=3.919205904006958,  # 0x1.f5a88ap+1
    below_one=0.9999999403953552,  # 1 - 2**-24
)
_ERF_F64 = _ErfConstants(
    # Chebyshev interpolant of degree 12 on [0, 1], error 1.3e-19 (2**-62.7).
    near=(
        0.1283791670955126,  # 0x1.06eba8214db69p-3
        -0.3761263890318375,  # -0x1.812746b0379e6p-2
        0.11283791670954879,  # 0x1.ce2f21a042b3p-4
        -0.026866170645076792,  # -0x1.b82ce31284ep-6
        0.0052239776248180145,  # 0x1.565bcd0dbaa38p-8
        -0.000854832698083379,  # -0x1.c02db3dac435fp-11
        0.0001205533111164271,  # 0x1.f9a321d5b8e1ep-14
        -1.4925595266831182e-05,  # -0x1.f4d1e3183f7aep-17
        1.6461000484121368e-06,  # 0x1.b9df224ca4b97p-20
        -1.6350312701054695e-07,  # -0x1.5f1ecb6f0764cp-23
        1.4659775274047436e-08,  # 0x1.f7b4bf3b13964p-27
        -1.1372848856791674e-09,  # -0x1.389d4f2641625p-30
        5.957176147748911e-11,  # 0x1.05ffd737fb32ep-34
    ),
    starts=(1.0, 2.0, 3.0, 4.0),
    mids=(1.5, 2.5, 3.5, 5.0),
    # 4 pieces of degree 17, error at most 4.6e-18 (2**-57.6) (absolute).
    rows=(
        (  # [1, 2]: c0_hi, c0_lo, c1 ... c17
            0.9661051464753108, -3.681346277284724e-17, 0.11893028922362937,
            -0.17839543383544215, 0.1387520040942334, -0.04459885845906473,
            -0.014866286152863747, 0.019326172007209028, -0.004743053204878897,
            -0.002362677793021706, 0.0017098196278538453, -9.291229551299306e-05,
            -0.00025444927807681647, 7.767647032419676e-05, 1.7961323135211212e-05,
            -1.4038638152371658e-05, 5.712902189436902e-07, 1.4171216409416466e-06,
            -2.8346118565278276e-07,
        ),
        (  # [2, 3]: c0_hi, c0_lo, c1 ... c17
            0.999593047982555, 4.627225712795047e-17, 0.00217828423035271,
            -0.005445710575881352, 0.008350089549685316, -0.008622375078524626,
            0.006117348213581381, -0.002798490155194711, 0.0005424100610182815,
            0.0002606701356729855, -0.0002502853799157958, 7.880177146743523e-05,
            5.136930251595918e-06, -1.4083027495560623e-05, 4.691450500317399e-06,
            1.9335667519029052e-07, -6.432920674396747e-07, 1.533697992336162e-07,
            2.2545440370103313e-08,
        ),
        (  # [3, 4]: c0_hi, c0_lo, c1 ... c17
            0.9999992569016276, 4.963052640188184e-17, 5.399426777384778e-06,
            -1.889799372083588e-05, 4.2295509756183974e-05, -6.771781083419425e-05,
            8.211628223905478e-05, -7.774424634270121e-05, 5.8192750633083246e-05,
            -3.425917641005278e-05, 1.5330767979032568e-05, -4.641006211840259e-06,
            4.447070078241626e-07, 4.4369501964546565e-07, -3.0169187662967797e-07,
            9.26340452247386e-08, -5.645051913652189e-09, -8.970758367081026e-09,
            3.857191005152605e-09,
        ),
        (  # [4, 6]: c0_hi, c0_lo, c1 ... c17
            0.9999999999984626, -2.4097897227895206e-17, 1.5670863069121574e-11,
            -7.835414488800324e-11, 2.559580469573351e-10, -6.13780855874189e-10,
            1.1507490981832716e-09, -1.7542077899777294e-09, 2.2322547005723704e-09,
            -2.414556231766593e-09, 2.24767559547721e-09, -1.8180854905115246e-09,
            1.2880917091400186e-09, -7.984136205410669e-10, 4.2742093575962434e-10,
            -1.996335314314108e-10, 8.509791716427474e-11, -3.005983570075221e-11,
            5.71007705610724e-12,
        ),
    ),
    limit=5.921587195794507,  # 0x1.7afb48dc96627p+2
    below_one=0.9999999999999999,  # 1 - 2**-53
)


# 2/pi = sum C_i * 2**(-24(i+1)): the 24-bit chunks C_0 ... C_49 (1200 bits, from mpmath at
# 500 digits), as doubles, after _TWO_OVER_PI_PAD zeros (chunks "before" the binary point).
_TWO_OVER_PI_PAD = 3
_TWO_OVER_PI_TABLE: tuple[float, ...] = (
    0.0, 0.0, 0.0,
    10680707.0, 7228996.0, 1387004.0, 2578385.0, 16069853.0, 12639074.0,
    9804092.0, 4427841.0, 16666979.0, 11263675.0, 12935607.0, 2387514.0,
    4345298.0, 14681673.0, 3074569.0, 13734428.0, 16653803.0, 1880361.0,
    10960616.0, 8533493.0, 3062596.0, 8710556.0, 7349940.0, 6258241.0,
    3772886.0, 3769171.0, 3798172.0, 8675211.0, 12450088.0, 3874808.0,
    9961438.0, 366607.0, 15675153.0, 9132554.0, 7151469.0, 3571407.0,
    2607881.0, 12013382.0, 4155038.0, 6285869.0, 7677882.0, 13102053.0,
    15825725.0, 473591.0, 9065106.0, 15363067.0, 6271263.0, 9264392.0,
    5636912.0, 4652155.0,
)
_PIO2_HI = 1.5707963267948966  # 0x1.921fb54442d18p+0: pi/2 rounded
_PIO2_LO = 6.123233995736766e-17  # 0x1.1a62633145c07p-54: pi/2 - _PIO2_HI, rounded
# _PIO2_HI in two halves of at most 26 bits (0x1.921fb58p+0 and -0x1.dde974p-27), for Dekker's
# product.
_PIO2_SPLIT = (1.5707963407039642, -1.3909067675399456e-08)
_PIO4 = 0.7853981633974483  # 0x1.921fb54442d18p-1: below it, no reduction


@dataclass(frozen=True)
class _TrigConstants:
    precision: int  # bits of the argument's significand (24 for float arguments)
    chunks: int  # 24-bit chunks it is split into for the reduction
    columns: int  # columns of the reduction's product (even)
    n0_min: int  # the first column's table position, for |x| = pi/4 ...
    n0_max: int  # ... and for the largest finite |x|
    double_double: bool  # whether r is carried as hi + lo
    sin_poly: tuple[float, ...]  # S(z) ~ (sin(r) - r)/r**3, z = r**2 <= (pi/4 * (1+2**-19))**2
    cos_poly: tuple[float, ...]  # C(z) ~ (cos(r) - 1 + z/2)/z**2


# Polynomials: Chebyshev interpolants (mpmath) on [0, (pi/4 * (1 + 2**-19))**2].
_TRIG_F64 = _TrigConstants(
    precision=53, chunks=3, columns=8, n0_min=-1, n0_max=42,
    double_double=True,
    # degree 6, error 1.2e-20 (2**-66.2)
    sin_poly=(
        -0.16666666666666666,  # -0x1.5555555555555p-3
        0.008333333333333331,  # 0x1.111111111111p-7
        -0.00019841269841265065,  # -0x1.a01a01a019938p-13
        2.7557319219339095e-06,  # 0x1.71de3a546094ap-19
        -2.5052106232422984e-08,  # -0x1.ae645412c3903p-26
        1.6058531615088151e-10,  # 0x1.61217f0a0fe59p-33
        -7.586696887927982e-13,  # -0x1.ab17d32bd937fp-41
    ),
    # degree 5, error 1.3e-18 (2**-59.4)
    cos_poly=(
        0.041666666666666664,  # 0x1.5555555555555p-5
        -0.0013888888888887398,  # -0x1.6c16c16c16967p-10
        2.4801587298765645e-05,  # 0x1.a01a019f4eaf4p-16
        -2.7557317271707495e-07,  # -0x1.27e4fa17d902ap-22
        2.087614626375541e-09,  # 0x1.1eeb68e829096p-29
        -1.1382632090665354e-11,  # -0x1.907da2a1f96c9p-37
    ),
)
_TRIG_F32 = _TrigConstants(
    precision=24, chunks=1, columns=6, n0_min=-2, n0_max=4,
    double_double=False,
    # degree 4, error 2.8e-14 (2**-45.0)
    sin_poly=(
        -0.16666666666663885,  # -0x1.555555555516bp-3
        0.008333333331079188,  # 0x1.1111110fd3d2fp-7
        -0.00019841266916952578,  # -0x1.a019fd9b32ec7p-13
        2.7555990919463087e-06,  # 0x1.71d9a9f1d5fffp-19
        -2.4805635306099175e-08,  # -0x1.aa28567af58aap-26
    ),
    # degree 3, error 2.3e-12 (2**-38.6)
    cos_poly=(
        0.041666666664321166,  # 0x1.5555555502cefp-5
        -0.0013888887672002894,  # -0x1.6c16bf54e592ap-10
        2.4800600369650024e-05,  # 0x1.a015c47b75208p-16
        -2.7300958230515685e-07,  # -0x1.25244d748d64ap-22
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

    def imul(self, a: ir.Value, b: int) -> ir.Value:
        return self.b.mul(a, self.i(b))

    def iclamp(self, a: ir.Value, lo: int, hi: int) -> ir.Value:
        """min(max(a, lo), hi) on signed integers: table indices are clamped with it, so that a
        lane whose index is garbage (NaN, inf, an argument another lane's path handles) still
        reads inside the table."""
        a = self.b.select(self.b.icmp_signed("<", a, self.i(lo)), self.i(lo), a)
        return self.b.select(self.b.icmp_signed(">", a, self.i(hi)), self.i(hi), a)

    def small_int_to_float(self, k: ir.Value) -> ir.Value:
        """The float value of an integer 0 <= k < 2**mant_bits, without sitofp (which has no
        <4 x i64> -> <4 x double> instruction on AVX2): the bits of 2**mant_bits with k in the
        mantissa are the float 2**mant_bits + k."""
        return self.sub(self.from_bits(self.ior(k, self.fmt.two_p_bits)), 2.0**self.fmt.mant_bits)

    def rint(self, y: Operand) -> tuple[ir.Value, ir.Value]:
        """(y rounded to the nearest integer (ties to even), the same integer in the integer
        type), by the shifter trick; valid for |y| < 2**(mant_bits - 1)."""
        t = self.add(y, self.fmt.shifter)
        return self.sub(t, self.fmt.shifter), self.isub(self.bits(t), self.fmt.shifter_bits)

    # Tables -----------------------------------------------------------------------------
    def table(self, name: str, values: Sequence[float]) -> ir.GlobalVariable:
        """An internal constant array of this type, defined once per module under ``name``."""
        module = self.b.module
        glob = module.globals.get(name)
        if glob is None:
            arrty = ir.ArrayType(self.ty, len(values))
            glob = ir.GlobalVariable(module, arrty, name=name)
            glob.global_constant = True
            glob.linkage = "internal"
            glob.unnamed_addr = True
            glob.initializer = ir.Constant(arrty, [float(v) for v in values])
        elif not (isinstance(glob, ir.GlobalVariable) and glob.global_constant
                  and glob.value_type == ir.ArrayType(self.ty, len(values))):
            raise ValueError(f"{name} already exists in the module and is not graphc's table")
        return glob

    def load(self, table: ir.GlobalVariable, index: ir.Value) -> ir.Value:
        """table[index] (index in the integer type, already clamped to the table): inside a
        vectorized loop this becomes a gather."""
        ptr = self.b.gep(table, [ir.Constant(ir.IntType(32), 0), index], inbounds=True)
        return self.b.load(ptr, typ=self.ty)

    # Conversions ------------------------------------------------------------------------
    def widened(self) -> _Emitter:
        """An emitter for double on the same builder: float32 functions computed in float64."""
        return _Emitter(self.b.module, self.b, _F64, ir.DoubleType())


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


def _two_sum(em: _Emitter, a: ir.Value, b: ir.Value) -> tuple[ir.Value, ir.Value]:
    """(s, e) with s = fl(a + b) and s + e = a + b exactly, whatever the magnitudes (Knuth)."""
    s = em.add(a, b)
    bb = em.sub(s, a)
    return s, em.add(em.sub(a, em.sub(s, bb)), em.sub(b, bb))


def _split(em: _Emitter, a: ir.Value) -> tuple[ir.Value, ir.Value]:
    """Veltkamp's split: a = hi + lo exactly, each with at most half the significand's bits
    (26 for double, 12 for float), so that products of two halves are exact."""
    c = em.mul(a, 2.0 ** ((em.fmt.mant_bits + 2) // 2) + 1.0)
    hi = em.sub(c, em.sub(c, a))
    return hi, em.sub(a, hi)


def _two_prod(em: _Emitter, a: ir.Value, b: ir.Value | tuple[float, float],
              b_value: float | None = None) -> tuple[ir.Value, ir.Value]:
    """(p, e) with p = fl(a*b) and p + e = a*b exactly (Dekker), without relying on a fused
    multiply-add.  b is a value, or a constant given as its two halves (b_value its sum)."""
    a_hi, a_lo = _split(em, a)
    if isinstance(b, tuple):
        b_hi, b_lo = em.f(b[0]), em.f(b[1])
        p = em.mul(a, float(b_value))
    else:
        b_hi, b_lo = _split(em, b)
        p = em.mul(a, b)
    err = em.add(em.add(em.sub(em.mul(a_hi, b_hi), p), em.mul(a_hi, b_lo)), em.mul(a_lo, b_hi))
    return p, em.add(err, em.mul(a_lo, b_lo))


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
    return _exp_reduced(em, _reduce_ln2(em, x))


def _exp_reduced(em: _Emitter, red: _Reduced) -> _Split:
    """2**n * exp(r + r_lo): the part of exp after the reduction (exp2 reduces differently)."""
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


def _emit_exp2(em: _Emitter, x: ir.Value) -> ir.Value:
    """2**x = 2**n * exp(r*ln2), n = rint(x), r = x - n (exact, |r| <= 1/2).

    r*ln2 is formed as hi + lo with the error of the product recovered: r is split as
    r1 + r2 with r1 a multiple of 2**-h (h = 26 for double, 12 for float; r1 + r2 exact), so
    r1*LN2_HI is exact (LN2_HI has 53 - 26 or 24 - 12 bits) and the remaining terms,
    r1*LN2_LO + r2*ln2, are below 2**-h and only rounded at 2**-(p+h).  Fast2Sum turns
    that into the (r, r_lo) of exp's reduction, and exp's kernel and exact power-of-two
    scaling do the rest: an integer x gives r = 0 and exactly 2**x, overflow gives inf,
    subnormal results are rounded once.  Clamping keeps n in the range of _pow2_pair;
    +-inf clamp to the ends (inf, 0) and NaN passes the clamps.
    """
    fmt = em.fmt
    c = _EXP2_CONSTANTS[fmt.suffix]
    xc = em.clamp(x, c.lo, c.hi)
    nf, n = em.rint(xc)
    r = em.sub(xc, nf, name="exp2.r")  # exact
    split = 1.5 * 2.0 ** (fmt.mant_bits - c.split_bits)  # its ulp is 2**-split_bits
    r1 = em.sub(em.add(r, split), split)
    r2 = em.sub(r, r1)
    hi = em.mul(r1, c.ln2_hi)  # exact
    lo = em.fma(r1, c.ln2_lo, em.mul(r2, c.ln2))
    rr, rr_lo = _fast_two_sum(em, hi, lo)  # |hi| >= |lo| unless r1 = 0, where hi = 0
    return _exp_reduced(em, _Reduced(n, rr, rr_lo)).hi


# -------------------------------------------------------------------------------------------
# log, log1p
# -------------------------------------------------------------------------------------------


@dataclass
class _LogParts:
    """u = 2**k * (1 + f), and log(1 + f) = f - hfsq + s*(hfsq + r) (see the module docstring)."""

    k: ir.Value  # float
    f: ir.Value
    hfsq: ir.Value
    s: ir.Value
    r: ir.Value


def _log_parts(em: _Emitter, u: ir.Value, k_offset: Operand) -> _LogParts:
    """The reduction and polynomial of log, for a positive normal finite u (anything else gives
    garbage).  k_offset is subtracted from the exponent: it undoes the scaling of subnormals."""
    fmt = em.fmt
    # u = 2**k * m with m in [sqrt(1/2), sqrt(2)): subtracting the mantissa bits of sqrt(1/2)
    # carries into the exponent field exactly when m < sqrt(1/2).
    d = em.isub(em.bits(u), fmt.sqrt_half_bits & fmt.mant_mask)
    k_biased = em.lshr(d, fmt.mant_bits)  # k + bias - 1, small and non-negative
    m = em.from_bits(em.iadd(em.iand(d, fmt.mant_mask), fmt.sqrt_half_bits))
    k_plus = em.small_int_to_float(k_biased)
    k = em.sub(em.sub(k_plus, fmt.bias - 1), k_offset, name="log.k")

    f = em.sub(m, 1.0, name="log.f")  # exact (Sterbenz)
    s = em.div(f, em.add(f, 2.0), name="log.s")
    z = em.mul(s, s)
    r = em.mul(z, _horner(em, z, fmt.log_poly))  # 2*atanh(s) = 2*s + s*r
    hfsq = em.mul(em.mul(f, f), 0.5)
    return _LogParts(k, f, hfsq, s, r)


def _log_kernel(em: _Emitter, u: ir.Value, k_offset: Operand, extra: Operand = 0.0) -> ir.Value:
    """log(u) + extra for a positive normal finite u (anything else gives garbage).

    k_offset is subtracted from the exponent: log uses it to undo the scaling of subnormals.
    extra is a correction much smaller than ulp(log u), added among the small terms.
    """
    fmt = em.fmt
    p = _log_parts(em, u, k_offset)
    # log(1+f) = f - hfsq + s*(hfsq + r); sum the small terms first and f, k*LN2_HI last.
    small = em.fma(p.s, em.add(p.hfsq, p.r), em.fma(p.k, fmt.ln2_lo, extra))
    log1pf = em.sub(p.f, em.sub(p.hfsq, small))
    return em.fma(p.k, fmt.ln2_hi, log1pf, name="log")  # k*LN2_HI is exact


def _log_scaled(em: _Emitter, x: ir.Value) -> _LogParts:
    """_log_parts of x, subnormals (and zero/negatives, which the callers override) scaled by
    2**(mant_bits+1) into the normal range first so the exponent field is meaningful."""
    fmt = em.fmt
    sub = em.cmp("<", x, fmt.min_normal)
    u = em.select(sub, em.mul(x, 2.0 ** (fmt.mant_bits + 1)), x)
    return _log_parts(em, u, em.select(sub, float(fmt.mant_bits + 1), 0.0))


def _log_specials(em: _Emitter, x: ir.Value, res: ir.Value) -> ir.Value:
    """log(inf) = inf, log(+-0) = -inf, log(x < 0) = log(NaN) = NaN (any base)."""
    res = em.select(em.cmp("==", x, float("inf")), x, res)
    res = em.select(em.cmp("==", x, 0.0), float("-inf"), res)
    # "unordered or less than": negatives and NaN.
    return em.select(em.b.fcmp_unordered("<", x, em.f(0.0)), float("nan"), res)


def _log_base(em: _Emitter, x: ir.Value, base10: bool) -> ir.Value:
    """log2(x) = k + log(1+f)/ln2, log10(x) = k*log10(2) + log(1+f)/ln(10) (fdlibm's method).

    log(1+f) is carried as hi + lo, hi = f - hfsq with its low bits cleared (12 bits left in
    float, 21 in double) so that hi times the high part of the constant (12 or 32 bits) is
    exact; the constants' low parts multiply hi + lo, and the sum with the integer part (k, or
    k*LOG10_2_HI, exact) is made exact by Fast2Sum, so one rounding at the end dominates.
    Powers of two give exactly k in log2 (f = 0).
    """
    fmt = em.fmt
    c = _LOG_BASE_CONSTANTS[fmt.suffix]
    p = _log_scaled(em, x)
    small = em.mul(p.s, em.add(p.hfsq, p.r))
    hi = em.from_bits(em.iand(em.bits(em.sub(p.f, p.hfsq)), c.hi_mask))
    lo = em.add(em.sub(em.sub(p.f, hi), p.hfsq), small)
    inv_hi, inv_lo = (c.ivln10_hi, c.ivln10_lo) if base10 else (c.ivln2_hi, c.ivln2_lo)
    val_hi = em.mul(hi, inv_hi)  # exact
    val_lo = em.fma(em.add(lo, hi), inv_lo, em.mul(lo, inv_hi))
    if base10:
        y = em.mul(p.k, c.log10_2_hi)  # exact
        val_lo = em.fma(p.k, c.log10_2_lo, val_lo)
    else:
        y = p.k
    # |y| >= 0.3 > |val_hi| unless y = 0: Fast2Sum.
    w = em.add(y, val_hi)
    val_lo = em.add(val_lo, em.add(em.sub(y, w), val_hi))
    return _log_specials(em, x, em.add(val_lo, w, name="log2" if not base10 else "log10"))


def _emit_log2(em: _Emitter, x: ir.Value) -> ir.Value:
    return _log_base(em, x, base10=False)


def _emit_log10(em: _Emitter, x: ir.Value) -> ir.Value:
    return _log_base(em, x, base10=True)


def _emit_log(em: _Emitter, x: ir.Value) -> ir.Value:
    fmt = em.fmt
    # Subnormals (and zero/negatives, overridden below) are scaled by 2**(mant_bits+1) into the
    # normal range so the exponent field is meaningful.
    sub = em.cmp("<", x, fmt.min_normal)
    u = em.select(sub, em.mul(x, 2.0 ** (fmt.mant_bits + 1)), x)
    return _log_specials(em, x, _log_kernel(em, u, em.select(sub, float(fmt.mant_bits + 1), 0.0)))


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


# -------------------------------------------------------------------------------------------
# floor, ceil, round
# -------------------------------------------------------------------------------------------


def _rounded(em: _Emitter, x: ir.Value, mode: str) -> ir.Value:
    """floor/ceil/rint by the shifter: for |x| < 2**mant_bits, (|x| + 2**mant_bits) - 2**mant_bits
    is |x| rounded to an integer, ties to even (the sum's ulp is 1).  floor and ceil step back
    by one where that went the wrong way.  Every result has the sign of x (floor(0.5) = +0,
    ceil(-0.5) = -0, rint(-0.5) = -0), so copysign gives the signed zeros; larger |x|, inf and
    NaN are already integers (or NaN) and are returned as they are."""
    a = em.abs(x)
    big = 2.0**em.fmt.mant_bits
    r = em.copysign(em.sub(em.add(a, big), big), x)
    if mode == "floor":
        r = em.select(em.cmp(">", r, x), em.sub(r, 1.0), r)
    elif mode == "ceil":
        r = em.select(em.cmp("<", r, x), em.add(r, 1.0), r)
    r = em.copysign(r, x)
    return em.select(em.b.fcmp_unordered(">=", a, em.f(big)), x, r, name=mode)


def _emit_floor(em: _Emitter, x: ir.Value) -> ir.Value:
    return _rounded(em, x, "floor")


def _emit_ceil(em: _Emitter, x: ir.Value) -> ir.Value:
    return _rounded(em, x, "ceil")


def _emit_round(em: _Emitter, x: ir.Value) -> ir.Value:
    return _rounded(em, x, "round")


# -------------------------------------------------------------------------------------------
# atan
# -------------------------------------------------------------------------------------------


def _emit_atan(em: _Emitter, x: ir.Value) -> ir.Value:
    """atan|x| = atan(c) + atan(t) with t = (|x| - c)/(1 + c|x|), chosen without branches.

    c = 0 (t = |x|) below 7/16, 1/2 up to 11/16, 1 up to 19/16, 3/2 up to 39/16, and infinity
    (t = -1/|x|, atan(c) = pi/2) above, so |t| <= 7/16 everywhere; the numerators are exact
    (Sterbenz) and a single division serves all five cases.  atan(t) = t + t*z*P(z), z = t**2,
    and atan(c) is added as hi + lo: atan(c)_hi + (t + (atan(c)_lo + t*z*P(z))).  The sign is
    restored with copysign (atan(-0) = -0); inf gives t = -0 and pi/2; NaN propagates.
    """
    c = _ATAN_CONSTANTS[em.fmt.suffix]
    a = em.abs(x)
    ge = [em.cmp(">=", a, bound) for bound in (7 / 16, 11 / 16, 19 / 16, 39 / 16)]

    def pick(values: Sequence[Operand]) -> ir.Value:
        out = em.f(values[0])
        for cond, v in zip(ge, values[1:]):
            out = em.select(cond, v, out)
        return out

    num = pick([a, em.sub(em.mul(a, 2.0), 1.0), em.sub(a, 1.0), em.sub(a, 1.5), -1.0])
    den = pick([1.0, em.add(a, 2.0), em.add(a, 1.0), em.fma(a, 1.5, 1.0), a])
    t = em.div(num, den, name="atan.t")
    z = em.mul(t, t)
    tail = em.mul(em.mul(t, z), _estrin(em, z, em.mul(z, z), c.poly))
    base_hi, base_lo = pick([0.0, *c.base_hi]), pick([0.0, *c.base_lo])
    res = em.add(base_hi, em.add(t, em.add(base_lo, tail)))
    return em.copysign(res, x, name="atan")


# -------------------------------------------------------------------------------------------
# erf
# -------------------------------------------------------------------------------------------


def _emit_erf(em: _Emitter, x: ir.Value) -> ir.Value:
    """float32 is computed in float64 (with float32-sized polynomials) and rounded once."""
    if em.fmt is _F32:
        d = em.widened()
        return em.b.fptrunc(_erf_f64(d, em.b.fpext(x, d.ty), _ERF_F32), em.ty, name="erf")
    return _erf_f64(em, x, _ERF_F64)


def _erf_f64(em: _Emitter, x: ir.Value, c: _ErfConstants) -> ir.Value:
    """erf|x| = a + a*Q(a**2) below 1, a polynomial in s = a - mid on each piece of [1, limit),
    1 from limit on; the sign by copysign (erf(-0) = -0).

    A few wide pieces (two for float32, four for float64) rather than many narrow ones: each
    coefficient is chosen among the pieces with selects, and selects of constants cost far
    less than table lookups with a variable index, which most x86 CPUs execute one lane at a
    time.  s is exact (Sterbenz); the constant term is stored as hi + lo and added last:
    c0_hi + (c0_lo + s*(c1 + s*(...))), so one rounding of a result in [0.84, 1) dominates.
    limit is exactly where the correctly rounded erf becomes 1, and results below it are
    capped at the largest value below 1, so the approximation cannot round to 1 one argument
    too early.  NaN passes through the polynomials.
    """
    a = em.abs(x)
    z = em.mul(a, a)
    near = em.fma(a, _estrin(em, z, em.mul(z, z), c.near), a)
    ge = [em.cmp(">=", a, start) for start in c.starts[1:]]

    def pick(values: Sequence[float]) -> ir.Value:
        out = em.f(values[0])
        for cond, v in zip(ge, values[1:]):
            out = em.select(cond, v, out)
        return out

    s = em.sub(a, pick(c.mids), name="erf.s")
    coeffs = [pick([row[k] for row in c.rows]) for k in range(len(c.rows[0]))]
    poly = em.mul(s, _estrin(em, s, em.mul(s, s), coeffs[2:]))
    piece = em.add(coeffs[0], em.add(coeffs[1], poly))
    piece = em.select(em.cmp(">", piece, c.below_one), c.below_one, piece)
    res = em.select(em.cmp("<", a, 1.0), near, piece)
    res = em.select(em.cmp(">=", a, c.limit), 1.0, res)
    return em.copysign(res, x)


# -------------------------------------------------------------------------------------------
# sin, cos, tan
# -------------------------------------------------------------------------------------------


@dataclass
class _Quadrant:
    """|x| = (4*j + q) * pi/2 + r + r_lo for an integer j, |r| <= pi/4 (to 2**-19)."""

    q: ir.Value  # integer in [0, 3]
    r: ir.Value
    r_lo: ir.Value


def _reduce_pio2(em: _Emitter, ax: ir.Value, c: _TrigConstants) -> _Quadrant:
    """Payne-Hanek reduction of |x| (as double) modulo pi/2, without branches, exact enough for
    every finite argument.

    |x| = M * 2**s with M a P-bit integer (P = 53 for double, 24 for a float argument), split
    into J chunks X_j of at most 24 bits.  2/pi = sum C_i * 2**(-24(i+1)) with C_i 24-bit
    integers (a constant table).  Then |x|*2/pi = sum over columns t of S_t * 2**W(t) with
    S_t = sum_j X_j * C_(t-j), each product exact (48 bits) and each S_t an exact integer below
    2**50.  Only the value modulo 4 matters: columns with W(t) >= 2 are multiples of 4 and are
    skipped by starting at the first column n0 with W(n0) = w in [-22, 1]: which chunks are
    needed depends on the exponent (a gather from the table for double arguments, selects
    among the 7 possible rows for float ones).  Each later column is split exactly into its
    high part (a multiple of 2**24, shifted into the previous column) and its low part, giving
    digits D_c below 2**26 at 24-bit spacing; two consecutive digits sum exactly in a double, so the
    value is a short sum of exact buckets: A = D_0*2**w + D_1*2**(w-24), B, C, ...  A is
    reduced to the nearest integer k (q = k mod 4) and a fraction in [-1/2, 1/2]; the buckets
    are then added as a double-double (TwoSum, then the small rest), and the fraction is
    multiplied by pi/2 as a double-double (Dekker's product).  Arguments below pi/4 are not
    reduced (q = 0, r = |x|).

    Precision: the columns left out add up to less than 2**-140 (double) and 2**-94 (float)
    and the bucket sums are exact, so r's relative error is below 2**-75 even for the double
    closest to a multiple of pi/2 (|r| ~ 2**-61), and below 2**-50 for every float argument
    (where only a double r is formed).
    """
    P, J, NC = c.precision, c.chunks, c.columns
    bits = em.bits(ax)
    eb = em.lshr(bits, 52)  # biased exponent
    m = em.lshr(em.ior(em.iand(bits, (1 << 52) - 1), 1 << 52), 53 - P)  # P-bit integer
    xs = [em.small_int_to_float(em.iand(em.lshr(m, 24 * (J - 1 - j)), (1 << 24) - 1))
          for j in range(J)]
    # s = eb - 1075 + (53 - P); n0 = floor((s + 24*(J - 2) + 22) / 24) = floor(v / 24).  In
    # floating point: (v - 11.5)/24 is at least 1/48 away from a half-integer, so rint is exact.
    v_off = -1075 + (53 - P) + 24 * (J - 2) + 22
    _, n0 = em.rint(em.mul(em.sub(em.small_int_to_float(eb), 11.5 - v_off), 1.0 / 24.0))
    n0 = em.iclamp(n0, c.n0_min, c.n0_max)  # the range of |x| >= pi/4: loads stay in bounds
    w = em.isub(em.iadd(eb, -1075 + (53 - P) + 24 * (J - 2)), em.imul(n0, 24))
    first = _TWO_OVER_PI_PAD - (J - 1)  # table position of C_(n0 - J + 1), less n0
    if c.n0_max - c.n0_min < 8:
        # Few rows (float arguments): selects of constants, cheaper than gathers.
        rows = {n: _TWO_OVER_PI_TABLE[n + first:n + first + NC + J - 1]
                for n in range(c.n0_min, c.n0_max + 1)}
        hits = {n: em.b.icmp_signed("==", n0, em.i(n)) for n in rows if n != c.n0_min}
        chunks = []
        for k in range(NC + J - 1):
            v = em.f(rows[c.n0_min][k])
            for n, hit in hits.items():
                v = em.select(hit, rows[n][k], v)
            chunks.append(v)
    else:
        table = em.table("graphc_math.two_over_pi_chunks", _TWO_OVER_PI_TABLE)
        base = em.iadd(n0, first)
        chunks = [em.load(table, em.iadd(base, k)) for k in range(NC + J - 1)]

    def column(col: int) -> ir.Value:  # S_(n0+col): chunk C_(n0+col-j) is chunks[J-1+col-j]
        acc = em.mul(xs[0], chunks[J - 1 + col])
        for j in range(1, J):
            acc = em.fma(xs[j], chunks[J - 1 + col - j], acc)  # exact either way (< 2**50)
        return acc

    cols = [column(col) for col in range(NC)]
    high = 1.5 * 2.0**76  # its ulp is 2**24: (S + high) - high rounds S to a multiple of 2**24
    highs = [em.sub(em.add(cl, high), high) for cl in cols[1:NC - 1]]
    lows = [em.sub(cl, h) for cl, h in zip(cols[1:NC - 1], highs)]
    # Digits: D_0 = S_0's low part + H_1 (S_0's high part is a multiple of 4), D_c = L_c +
    # H_(c+1) for 1 <= c < NC-2, D_(NC-2) = L_(NC-2), and the last column unsplit.
    low0 = em.sub(cols[0], em.sub(em.add(cols[0], high), high))
    digits = [em.fma(highs[0], 2.0**-24, low0)]
    digits += [em.fma(highs[k + 1], 2.0**-24, lows[k]) for k in range(NC - 3)]
    digits += [lows[NC - 3], cols[NC - 1]]

    def bucket(col: int) -> ir.Value:  # D_col * 2**(w - 24col) + D_(col+1) * 2**(w - 24col - 24)
        scale = _pow2(em, em.isub(w, 24 * col + 24))
        return em.mul(em.fma(digits[col], 2.0**24, digits[col + 1]), scale)  # exact

    a_val = bucket(0)
    kf, k = em.rint(a_val)
    frac = em.sub(a_val, kf)  # exact, in [-1/2, 1/2]
    q = em.iand(k, 3)
    rest = [bucket(col) for col in range(2, NC, 2)]
    if c.double_double:
        hi, lo = _two_sum(em, frac, rest[0])
        tail = rest[-1]
        for extra in reversed(rest[1:-1]):
            tail = em.add(extra, tail)
        hi, lo = _fast_two_sum(em, hi, em.add(lo, tail))
        p, p_err = _two_prod(em, hi, _PIO2_SPLIT, _PIO2_HI)
        r, r_lo = _fast_two_sum(em, p, em.fma(hi, _PIO2_LO, em.fma(lo, _PIO2_HI, p_err)))
    else:
        f = frac
        for extra in rest:
            f = em.add(f, extra)
        r, r_lo = em.mul(f, _PIO2_HI), em.f(0.0)
    small = em.cmp("<=", ax, _PIO4)
    return _Quadrant(em.select(small, em.i(0), q), em.select(small, ax, r),
                     em.select(small, 0.0, r_lo))


def _sin_cos_parts(em: _Emitter, red: _Quadrant, c: _TrigConstants) -> tuple[_Split, _Split]:
    """sin and cos of r + r_lo (|r| <= pi/4), each as hi + lo with |lo| <= ulp(hi)/2.

    sin = r + (r**3*S(z) + r_lo*(1 - z/2)), z = r**2, the sum by Fast2Sum.
    cos = 1 - z/2 + z**2*C(z) - r*r_lo with z = zh + zl exact (Dekker's square): w = 1 - zh/2
    and its rounding error are exact (Fast2Sum), the rest is small.
    """
    r, r_lo = red.r, red.r_lo
    z = em.mul(r, r)
    z2 = em.mul(z, z)
    sin_tail = em.mul(em.mul(z, r), _estrin(em, z, z2, c.sin_poly))
    cos_tail = em.mul(z2, _estrin(em, z, z2, c.cos_poly))
    if not c.double_double:  # float arguments: double precision is ample, no low parts
        s = em.add(r, sin_tail)
        co = em.add(em.fma(z, -0.5, 1.0), cos_tail)
        return _Split(s, em.f(0.0)), _Split(co, em.f(0.0))
    sin_tail = em.fma(r_lo, em.fma(z, -0.5, 1.0), sin_tail)
    s, s_lo = _fast_two_sum(em, r, sin_tail)
    zh, zl = _two_prod(em, r, r)
    hz = em.mul(zh, 0.5)
    wv = em.sub(1.0, hz)
    w_err = em.sub(em.sub(1.0, wv), hz)  # exact: 1 >= hz
    cos_rest = em.sub(em.add(w_err, em.fma(zl, -0.5, cos_tail)), em.mul(r, r_lo))
    co, co_lo = _fast_two_sum(em, wv, cos_rest)
    return _Split(s, s_lo), _Split(co, co_lo)


def _trig(em: _Emitter, x: ir.Value, kind: str) -> ir.Value:
    """sin, cos or tan of x; float32 is computed in float64 (reduction and polynomials sized
    for float32) and rounded once."""
    if em.fmt is _F32:
        d = em.widened()
        res = _trig_f64(d, em.b.fpext(x, d.ty), kind, _TRIG_F32)
        return em.b.fptrunc(res, em.ty, name=kind)
    return _trig_f64(em, x, kind, _TRIG_F64)


def _trig_f64(em: _Emitter, x: ir.Value, kind: str, c: _TrigConstants) -> ir.Value:
    """sin|x| = +-sin r or +-cos r by the quadrant q (and likewise cos), then the sign of x
    for the odd functions.  tan = sin/cos or -cos/sin: one division with its rounding error and
    the low parts of sin and cos put back to first order (Dekker's product gives the exact
    residual).  +-inf and NaN give NaN; +-0 are returned as they are (odd functions)."""
    ax = em.abs(x)
    red = _reduce_pio2(em, ax, c)
    sin, cos = _sin_cos_parts(em, red, c)  # the parts a function does not use are dead code
    odd = em.b.icmp_unsigned("!=", em.iand(red.q, 1), em.i(0))
    if kind == "tan":
        num_hi, num_lo = em.select(odd, cos.hi, sin.hi), em.select(odd, cos.lo, sin.lo)
        den_hi, den_lo = em.select(odd, sin.hi, cos.hi), em.select(odd, sin.lo, cos.lo)
        t = em.div(num_hi, den_hi)
        if c.double_double:
            p, p_err = _two_prod(em, t, den_hi)
            resid = em.add(em.sub(em.sub(num_hi, p), p_err),
                           em.sub(num_lo, em.mul(t, den_lo)))
            t = em.add(t, em.div(resid, den_hi))
        res = em.select(odd, em.b.fneg(t), t)
    else:
        swap = odd if kind == "sin" else em.b.not_(odd)
        res = em.select(swap, cos.hi, sin.hi)
        # sin: negative in quadrants 2, 3; cos: in quadrants 1, 2.
        qn = red.q if kind == "sin" else em.iadd(red.q, 1)
        res = em.select(em.b.icmp_unsigned("!=", em.iand(qn, 2), em.i(0)), em.b.fneg(res), res)
    if kind != "cos":
        res = em.select(em.cmp("<", x, 0.0), em.b.fneg(res), res)
        res = em.select(em.cmp("==", x, 0.0), x, res)  # the sign of zero
    # inf and NaN: "unordered or >= inf".
    return em.select(em.b.fcmp_unordered(">=", ax, em.f(float("inf"))), float("nan"), res,
                     name=kind)


def _emit_sin(em: _Emitter, x: ir.Value) -> ir.Value:
    return _trig(em, x, "sin")


def _emit_cos(em: _Emitter, x: ir.Value) -> ir.Value:
    return _trig(em, x, "cos")


def _emit_tan(em: _Emitter, x: ir.Value) -> ir.Value:
    return _trig(em, x, "tan")


_EMITTERS: dict[str, Callable[[_Emitter, ir.Value], ir.Value]] = {
    "exp": _emit_exp,
    "log": _emit_log,
    "expm1": _emit_expm1,
    "log1p": _emit_log1p,
    "tanh": _emit_tanh,
    "sigmoid": _emit_sigmoid,
    "softplus": _emit_softplus,
    "sin": _emit_sin,
    "cos": _emit_cos,
    "tan": _emit_tan,
    "atan": _emit_atan,
    "erf": _emit_erf,
    "log2": _emit_log2,
    "log10": _emit_log10,
    "exp2": _emit_exp2,
    "floor": _emit_floor,
    "ceil": _emit_ceil,
    "round": _emit_round,
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

# graphc's name -> libdevice's (__nv_<name> for double, __nv_<name>f for float).  libdevice's
# functions are the CUDA math library's (full-range argument reduction for sin/cos/tan; the
# maximum ulp errors are tabulated in the CUDA C Programming Guide's appendix on mathematical
# functions; floor/ceil/rint are exact).  round is half to even: __nv_rint, not __nv_round.
_LIBDEVICE = {
    "exp": "exp", "log": "log", "expm1": "expm1", "log1p": "log1p", "tanh": "tanh",
    "sin": "sin", "cos": "cos", "tan": "tan", "atan": "atan", "erf": "erf", "log2": "log2",
    "log10": "log10", "exp2": "exp2", "floor": "floor", "ceil": "ceil", "round": "rint",
}


def libdevice_math(b: ir.IRBuilder, name: str, x: ir.Value, ty: ir.Type) -> ir.Value:
    """Math from libdevice (__nv_expf, __nv_log, __nv_sinf, __nv_rint, ...); sigmoid and
    softplus are written with it in their numerically stable forms."""
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
