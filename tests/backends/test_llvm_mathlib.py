"""The host's vectorizable math library (graphc.backends.kernelgen.mathlib), and its GPU side.

Every (function, dtype) is compiled once into a kernel ``y[i] = f(x[i])``, optimized at O3 with
the loop vectorizer, JIT-compiled for the host CPU (and for baseline x86-64) and run on NumPy
arrays.  Results are compared
in ulps with a reference that is correctly rounded but for rare double roundings: float32 is
checked against NumPy in float64, float64 against NumPy in long double (x87 extended precision)
where NumPy has it (erf, which NumPy lacks, from a long-double series and continued fraction
checked against mpmath here).  Inputs cover every binade of both signs (subnormals included),
dense grids near 0 and near each function's thresholds and switch points, arguments next to
multiples of pi/2 for the trigonometric functions (the hardest case of their reduction), and
random values.  floor, ceil and round must be exact, log2 of powers of two and exp2 of integers
too.  The GPU's forms (libdevice calls) are compiled to PTX and checked by ptxas.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite import ir

from graphc.backends.kernelgen.mathlib import MATH_FUNCTIONS, get_math_function, libdevice_math

DTYPES = (np.float32, np.float64)
MAX_ULP = 2
EXACT = ("floor", "ceil", "round")
_IR_TYPES = {np.float32: ir.FloatType(), np.float64: ir.DoubleType()}
# Long double is a wider type on x86-64 Linux; where it is not, float64 references are only
# faithful, so one more ulp is allowed for them.
_WIDE64 = np.finfo(np.longdouble).nmant >= 63
# Code for the host CPU (AVX2 + FMA here), and for baseline x86-64 (SSE2, no FMA): the latter
# shows that nothing needs an instruction the oldest x86-64 lacks (llvm.fma, llvm.floor...
# would become libm calls there) and that the results do not depend on fused multiply-adds.
_X86 = platform.machine().lower() in ("x86_64", "amd64")


# -------------------------------------------------------------------------------------------
# Harness: kernel y[i] = f(x[i]), O3 + loop vectorizer, MCJIT, called through ctypes
# -------------------------------------------------------------------------------------------


def _target_machine(target: str = "host") -> llvm.TargetMachine:
    """A fresh target machine: an MCJIT engine takes ownership of (and frees) its own."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    if target == "host":
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
    else:
        cpu, features = target, ""
    return llvm.Target.from_default_triple().create_target_machine(cpu=cpu, features=features,
                                                                   opt=3)


def _kernel_module(name: str, ty: ir.Type) -> ir.Module:
    """``void kern(T* noalias x, T* noalias y, i64 n) { for i < n: y[i] = f(x[i]) }``."""
    tm = _target_machine()
    module = ir.Module(name=f"mathlib_{name}")
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    fn = get_math_function(module, name, ty)
    ptr, i64 = ir.PointerType(), ir.IntType(64)
    kern = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr, ptr, i64]), name="kern")
    x, y, n = kern.args
    for arg in (x, y):
        arg.add_attribute("noalias")
    entry, header, body, done = (kern.append_basic_block(s)
                                 for s in ("entry", "header", "body", "done"))
    b = ir.IRBuilder(entry)
    b.branch(header)
    b.position_at_end(header)
    i = b.phi(i64, name="i")
    i.add_incoming(ir.Constant(i64, 0), entry)
    b.cbranch(b.icmp_signed("<", i, n), body, done)
    b.position_at_end(body)
    xi = b.load(b.gep(x, [i], inbounds=True, source_etype=ty), typ=ty)
    b.store(b.call(fn, [xi]), b.gep(y, [i], inbounds=True, source_etype=ty))
    i.add_incoming(b.add(i, ir.Constant(i64, 1), flags=["nsw"]), body)
    b.branch(header)
    b.position_at_end(done)
    b.ret_void()
    return module


@dataclass
class Kernel:
    """A compiled ``y = f(x)`` kernel; keeps its execution engine alive."""

    optimized_ir: str
    asm: str
    engine: llvm.ExecutionEngine
    cfunc: Callable[[int, int, int], None]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        self.cfunc(x.ctypes.data, y.ctypes.data, x.size)
        return y


def compile_kernel(name: str, dtype: type, target: str = "host") -> Kernel:
    tm = _target_machine(target)
    mod = llvm.parse_assembly(str(_kernel_module(name, _IR_TYPES[dtype])))
    mod.verify()
    pto = llvm.PipelineTuningOptions(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    text, asm = str(mod), tm.emit_assembly(mod)
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    return Kernel(text, asm, engine, proto(engine.get_function_address("kern")))


@pytest.fixture(scope="module")
def kernels() -> Callable[..., Kernel]:
    """Compiles each (function, dtype, target) once for the whole module."""
    cache: dict[tuple[str, type, str], Kernel] = {}

    def get(name: str, dtype: type, target: str = "host") -> Kernel:
        if (name, dtype, target) not in cache:
            cache[name, dtype, target] = compile_kernel(name, dtype, target)
        return cache[name, dtype, target]

    return get


# -------------------------------------------------------------------------------------------
# References and ulp distance
# -------------------------------------------------------------------------------------------


def _sigmoid(w: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(w))
    return np.where(w >= 0, 1 / (1 + e), e / (1 + e))


_TWO_OVER_SQRT_PI = np.longdouble("1.12837916709551257389615890312154517")


def _erf(w: np.ndarray) -> np.ndarray:
    """erf in w's precision (long double where the caller asks for it): the Taylor series below
    2 (at most 4 bits lost to cancellation), 1 - erfc above with erfc from its continued
    fraction (evaluated backwards from depth 60), 1 from 7 on (erfc(7) < 1e-22).
    test_erf_reference_agrees_with_mpmath checks it."""
    a = np.abs(w)
    out = np.ones_like(a)
    z = a[a < 2]
    z2, term = z * z, z.copy()
    total = z.copy()
    for n in range(1, 40):  # 4**40/40! < 2e-24
        term = term * -z2 / n
        total = total + term / (2 * n + 1)
    out[a < 2] = total * w.dtype.type(_TWO_OVER_SQRT_PI)
    mid = (a >= 2) & (a < 7)
    z = a[mid]
    k = np.zeros_like(z)
    for n in range(60, 0, -1):
        k = (w.dtype.type(n) / 2) / (z + k)
    out[mid] = 1 - np.exp(-z * z) * w.dtype.type(_TWO_OVER_SQRT_PI / 2) / (z + k)
    return np.where(np.isnan(w), w, np.copysign(out, w))


_REFERENCES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp,
    "log": np.log,
    "expm1": np.expm1,
    "log1p": np.log1p,
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softplus": lambda w: np.logaddexp(w.dtype.type(0), w),
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "atan": np.arctan,
    "erf": _erf,
    "log2": np.log2,
    "log10": np.log10,
    "exp2": np.exp2,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.rint,
}


def reference(name: str, x: np.ndarray, wide: bool = True) -> np.ndarray:
    """f(x) computed by NumPy in a wider type (unless wide=False) and rounded to x's type."""
    if x.dtype == np.float32:
        w = x.astype(np.float64)
    else:
        w = x.astype(np.longdouble) if wide and _WIDE64 else x
    with np.errstate(all="ignore"):
        return _REFERENCES[name](w).astype(x.dtype)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable values lie between a and b (0 for +0/-0 and for NaN/NaN).

    Floats are mapped to integers that are monotonic in the float's value: the bit pattern for
    positives, minus the magnitude's bit pattern for negatives.  NaN against a number is 2**62.
    """
    ity = np.int32 if a.dtype == np.float32 else np.int64
    mag_mask = np.iinfo(ity).max

    def key(v: np.ndarray) -> np.ndarray:
        bits = v.view(ity).astype(np.int64)
        return np.where(bits < 0, -(bits & mag_mask), bits)

    ka, kb = key(a), key(b)
    cap = np.int64(1) << 61
    same_side = (ka >= 0) == (kb >= 0)
    with np.errstate(over="ignore"):
        d = np.where(same_side, np.abs(ka - kb),
                     np.minimum(np.abs(ka), cap) + np.minimum(np.abs(kb), cap))
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    d = np.where(nan_a | nan_b, np.int64(1) << 62, d)
    return np.where(nan_a & nan_b, 0, d)


# -------------------------------------------------------------------------------------------
# Inputs
# -------------------------------------------------------------------------------------------


def _log_spaced(dtype: type, count: int) -> np.ndarray:
    """count magnitudes evenly spaced in bit pattern from the smallest subnormal to the largest
    finite value (so evenly spaced in log scale over the normal range), with both signs."""
    ity = np.int32 if dtype == np.float32 else np.int64
    top = np.array(np.finfo(dtype).max, dtype).view(ity)
    mags = np.minimum(np.linspace(1, int(top), count).astype(ity), top).view(dtype)
    return np.concatenate([mags, -mags])


def _windows(name: str, dtype: type) -> list[tuple[float, float]]:
    """Intervals that get a dense grid: thresholds and method switch points of each function."""
    fi = np.finfo(dtype)
    overflow = float(np.log(np.float64(fi.max)))  # exp overflows above
    underflow = float(np.log(np.float64(fi.smallest_subnormal)))  # exp flushes below (about)
    subnormal = float(np.log(np.float64(fi.smallest_normal)))  # exp becomes subnormal below
    minus_one = -(fi.nmant + 2) * np.log(2.0)  # expm1 rounds to -1 below (about)
    one = (fi.nmant + 2) * np.log(2.0) / 2  # tanh rounds to 1 above (about)
    ln2 = float(np.log(2.0))
    emax, emin = float(fi.maxexp), float(fi.minexp)  # 2**emax overflows, 2**emin is the tiniest
    limit = 6.0 if dtype == np.float64 else 4.0  # erf rounds to 1 from about there
    trig = [(0.7, 0.9), (-1e5, 1e5), (1e6, 1e6 + 100), (2.0**(fi.nmant - 1), 2.0**fi.nmant)]
    big = 2.0**fi.nmant
    rounding = [(-2.5, 2.5), (-big - 8, -big + 8), (big / 2 - 4, big / 2 + 4), (-1e3, 1e3)]
    near = [(-1e-3, 1e-3), (-1.0, 1.0), (-8.0, 8.0)]
    return near + {
        "exp": [(overflow - 1, overflow + 1), (underflow - 1, underflow + 1),
                (subnormal - 1, subnormal + 1), (-ln2, ln2)],
        "expm1": [(overflow - 1, overflow + 1), (minus_one - 2, minus_one + 2),
                  (-ln2, ln2), (0.3, 0.4), (-0.4, -0.3)],
        "log": [(0.5, 2.0), (0.999, 1.001), (1e-3, 10.0),
                (float(fi.smallest_normal) / 4, float(fi.smallest_normal) * 4)],
        "log1p": [(-1.0, -0.99), (-0.3, 0.5), (0.5, 3.0), (1.0 - 1e-3, 1.0 + 1e-3)],
        "tanh": [(0.5, 0.6), (-0.6, -0.5), (one - 2, one + 2), (-one - 2, -one + 2)],
        "sigmoid": [(underflow - 1, subnormal + 1), (2 * one - 2, 2 * one + 2), (-20.0, 20.0)],
        "softplus": [(underflow - 1, subnormal + 1), (2 * one - 2, 2 * one + 2), (-20.0, 20.0)],
        "sin": trig, "cos": trig, "tan": trig,
        "atan": [(b - 0.01, b + 0.01) for b in (7 / 16, 11 / 16, 19 / 16, 39 / 16)]
        + [(-100.0, 100.0), (1e15, 1e17)],
        "erf": [(0.9, 1.1), (1.0, limit), (limit - 0.3, limit + 0.3), (-limit, -1.0)],
        "log2": [(0.5, 2.0), (0.999, 1.001), (1e-3, 10.0),
                 (float(fi.smallest_normal) / 4, float(fi.smallest_normal) * 4)],
        "log10": [(0.5, 2.0), (0.999, 1.001), (1e-3, 10.0), (9.99, 10.01), (999.0, 1001.0),
                  (float(fi.smallest_normal) / 4, float(fi.smallest_normal) * 4)],
        "exp2": [(emax - 1, emax + 1), (emin - fi.nmant - 2, emin - fi.nmant + 1),
                 (emin - 1, emin + 1), (-1.0, 1.0)],
        "floor": rounding, "ceil": rounding, "round": rounding,
    }[name]


# Arguments very close to a multiple of pi/2: for float64 the known worst case of the reduction
# (|x mod pi/2| = 2**-60.9), for float32 one at 2**-29.2 (both checked with mpmath).
HARDEST_REDUCTIONS = {np.float64: 6381956970095103.0 * 2.0**797, np.float32: 16367173.0 * 2.0**72}


def _near_multiples_of_pio2(dtype: type, rng: np.random.Generator, count: int) -> np.ndarray:
    """The floats nearest k*pi/2 for random k of every size, with their neighbours: there the
    reduction cancels the most bits."""
    k = np.floor(2.0 ** rng.uniform(0, 60 if dtype == np.float64 else 40, count))
    pio2 = np.longdouble("1.57079632679489661923132169163975144")
    x = (k.astype(np.longdouble) * pio2).astype(dtype)
    return np.concatenate([x, np.nextafter(x, dtype(np.inf)), np.nextafter(x, dtype(0))])


def make_inputs(name: str, dtype: type) -> np.ndarray:
    """About 4.3e5 arguments: log-spaced magnitudes, dense windows, random values, specials."""
    fi = np.finfo(dtype)
    rng = np.random.default_rng(MATH_FUNCTIONS.index(name) * 2 + (dtype == np.float64))
    parts = [_log_spaced(dtype, 100_000)]
    parts += [np.linspace(lo, hi, 20_000) for lo, hi in _windows(name, dtype)]
    parts += [rng.standard_normal(20_000) * scale for scale in (0.1, 1.0, 10.0, 300.0)]
    parts.append(np.array([0.0, -0.0, np.inf, -np.inf, np.nan, fi.max, -fi.max, fi.tiny,
                           -fi.tiny, fi.smallest_subnormal, -fi.smallest_subnormal, 1.0, -1.0]))
    if name in ("sin", "cos", "tan"):
        parts.append(_near_multiples_of_pio2(dtype, rng, 20_000))
        hardest = dtype(HARDEST_REDUCTIONS[dtype])
        parts.append(np.array([hardest, -hardest, np.nextafter(hardest, dtype(0))]))
    if name in EXACT:  # halves and their neighbours
        halves = np.arange(-4000, 4000) + 0.5
        parts += [halves, np.nextafter(halves.astype(dtype), dtype(np.inf)),
                  np.nextafter(halves.astype(dtype), dtype(-np.inf))]
    return np.concatenate([p.astype(dtype) for p in parts])



@functools.cache
def inputs_and_reference(name: str, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """make_inputs and their reference values, computed once for both targets (read-only)."""
    x = make_inputs(name, dtype)
    want = reference(name, x)
    x.flags.writeable = want.flags.writeable = False
    return x, want


# -------------------------------------------------------------------------------------------
# Tests
# -------------------------------------------------------------------------------------------

CASES = [pytest.param(name, dtype, id=f"{name}-{np.dtype(dtype).name}")
         for name in MATH_FUNCTIONS for dtype in DTYPES]


def _targets() -> list:
    return ["host", pytest.param("x86-64", marks=pytest.mark.skipif(
        not _X86, reason="baseline x86-64 code runs on x86-64 hosts only"))]


@pytest.mark.parametrize("target", _targets())
@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_accuracy_over_the_whole_domain(kernels, name, dtype, target):
    x, want = inputs_and_reference(name, dtype)
    got = kernels(name, dtype, target)(x)
    d = ulp_distance(got, want)
    k = int(np.argmax(d))
    bound = 0 if name in EXACT else MAX_ULP + (dtype == np.float64 and not _WIDE64)
    assert d[k] <= bound, f"{d[k]} ulp at x={x[k]!r}: got {got[k]!r}, want {want[k]!r}"
    if name in EXACT:  # bit for bit, signs of zero included
        np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    # Overflow, NaN and sign agree exactly (ulps also pass FLT_MAX for inf, or -0 for +0).
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.signbit(got[got == 0]), np.signbit(want[got == 0]))


@pytest.mark.parametrize("name", [n for n in MATH_FUNCTIONS if n not in ("sigmoid", "erf")])
def test_float64_agrees_with_numpy_float64(kernels, name):
    """The same bound holds against NumPy's own float64 functions, which are within 1 ulp.

    (NumPy has no sigmoid or erf: their float64 references are formulas, not within 1 ulp.
    NumPy's float64 cos and tan are 8 and 14 ulp off at the hardest reduction, which
    test_hardest_reductions_against_mpmath covers instead.)
    """
    x, _ = inputs_and_reference(name, np.float64)
    x = x[np.abs(x) != HARDEST_REDUCTIONS[np.float64]]
    d = ulp_distance(kernels(name, np.float64)(x), reference(name, x, wide=False))
    assert d.max() <= MAX_ULP


def test_erf_reference_agrees_with_mpmath():
    """The long-double erf used as the reference is within 0.01 ulp of float64 (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    if not _WIDE64:
        pytest.skip("long double is float64 here")
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.uniform(-6.5, 6.5, 300), 10.0 ** rng.uniform(-300, 0, 50)])
    ref = _erf(x.astype(np.longdouble))
    hi = ref.astype(np.float64)
    lo = (ref - hi).astype(np.float64)
    with mpmath.workprec(120):
        err = [abs(mpmath.mpf(h) + mpmath.mpf(v) - mpmath.erf(mpmath.mpf(a))) / np.spacing(h)
               for a, h, v in zip(x.tolist(), hi.tolist(), lo.tolist())]
    assert max(err) < 0.01


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_hardest_reductions_against_mpmath(kernels, dtype):
    """sin, cos, tan of arguments next to multiples of pi/2 and of the largest ones, against
    mpmath's correctly rounded values: at most 1 ulp."""
    mpmath = pytest.importorskip("mpmath")
    fi = np.finfo(dtype)
    hardest = dtype(HARDEST_REDUCTIONS[dtype])
    x = np.array([hardest, np.nextafter(hardest, dtype(0)), fi.max, 1e22, 2.0**fi.nmant,
                  np.pi / 2, 1e6 * np.pi, 3.0 * 2.0**60], dtype)
    x = np.concatenate([x, -x])
    for name in ("sin", "cos", "tan"):
        got = kernels(name, dtype)(x)
        with mpmath.workprec(3000):  # enough bits of pi for |x| up to 2**1024
            want = np.array([float(getattr(mpmath, name)(mpmath.mpf(float(v)))) for v in x])
        d = ulp_distance(got, want.astype(dtype))
        assert d.max() <= 1, (name, x[np.argmax(d)], got[np.argmax(d)])


INF, NAN = float("inf"), float("nan")
# (function, argument, exact result): results are compared bit for bit, sign of zero included.
SPECIAL_VALUES = [
    ("exp", 0.0, 1.0), ("exp", -0.0, 1.0), ("exp", INF, INF), ("exp", -INF, 0.0),
    ("exp", "max", INF), ("exp", "-max", 0.0), ("exp", "subnormal", 1.0), ("exp", NAN, NAN),
    ("log", 1.0, 0.0), ("log", 0.0, -INF), ("log", -0.0, -INF), ("log", INF, INF),
    ("log", -INF, NAN), ("log", -1.0, NAN), ("log", "-subnormal", NAN), ("log", NAN, NAN),
    ("log", 2.0, "ln2"),
    ("expm1", 0.0, 0.0), ("expm1", -0.0, -0.0), ("expm1", INF, INF), ("expm1", -INF, -1.0),
    ("expm1", "subnormal", "subnormal"), ("expm1", "-subnormal", "-subnormal"),
    ("expm1", "max", INF), ("expm1", "-max", -1.0), ("expm1", NAN, NAN),
    ("log1p", 0.0, 0.0), ("log1p", -0.0, -0.0), ("log1p", -1.0, -INF), ("log1p", -2.0, NAN),
    ("log1p", -INF, NAN), ("log1p", INF, INF), ("log1p", "subnormal", "subnormal"),
    ("log1p", "-subnormal", "-subnormal"), ("log1p", 1.0, "ln2"), ("log1p", NAN, NAN),
    ("tanh", 0.0, 0.0), ("tanh", -0.0, -0.0), ("tanh", INF, 1.0), ("tanh", -INF, -1.0),
    ("tanh", "max", 1.0), ("tanh", "-max", -1.0), ("tanh", "subnormal", "subnormal"),
    ("tanh", "-subnormal", "-subnormal"), ("tanh", NAN, NAN),
    ("sigmoid", 0.0, 0.5), ("sigmoid", -0.0, 0.5), ("sigmoid", INF, 1.0),
    ("sigmoid", -INF, 0.0), ("sigmoid", "max", 1.0), ("sigmoid", "-max", 0.0),
    ("sigmoid", "subnormal", 0.5), ("sigmoid", NAN, NAN),
    ("softplus", 0.0, "ln2"), ("softplus", -0.0, "ln2"), ("softplus", INF, INF),
    ("softplus", -INF, 0.0), ("softplus", "max", "max"), ("softplus", "-max", 0.0),
    ("softplus", 1e4, 1e4), ("softplus", NAN, NAN),
    ("sin", 0.0, 0.0), ("sin", -0.0, -0.0), ("sin", INF, NAN), ("sin", -INF, NAN),
    ("sin", NAN, NAN), ("sin", "subnormal", "subnormal"), ("sin", "-subnormal", "-subnormal"),
    ("cos", 0.0, 1.0), ("cos", -0.0, 1.0), ("cos", INF, NAN), ("cos", -INF, NAN),
    ("cos", NAN, NAN), ("cos", "subnormal", 1.0),
    ("tan", 0.0, 0.0), ("tan", -0.0, -0.0), ("tan", INF, NAN), ("tan", -INF, NAN),
    ("tan", NAN, NAN), ("tan", "-subnormal", "-subnormal"),
    ("atan", 0.0, 0.0), ("atan", -0.0, -0.0), ("atan", INF, "pio2"), ("atan", -INF, "-pio2"),
    ("atan", "max", "pio2"), ("atan", 1.0, "pio4"), ("atan", -1.0, "-pio4"),
    ("atan", "subnormal", "subnormal"), ("atan", NAN, NAN),
    ("erf", 0.0, 0.0), ("erf", -0.0, -0.0), ("erf", INF, 1.0), ("erf", -INF, -1.0),
    ("erf", "max", 1.0), ("erf", "-max", -1.0), ("erf", 6.0, 1.0), ("erf", NAN, NAN),
    ("erf", "subnormal", "subnormal"), ("erf", "-subnormal", "-subnormal"),
    ("log2", 1.0, 0.0), ("log2", 2.0, 1.0), ("log2", 0.5, -1.0), ("log2", 0.0, -INF),
    ("log2", -0.0, -INF), ("log2", INF, INF), ("log2", -1.0, NAN), ("log2", -INF, NAN),
    ("log2", "subnormal", "log2_subnormal"), ("log2", NAN, NAN),
    ("log10", 1.0, 0.0), ("log10", 10.0, 1.0), ("log10", 1000.0, 3.0), ("log10", 0.0, -INF),
    ("log10", -0.0, -INF), ("log10", INF, INF), ("log10", -1.0, NAN), ("log10", NAN, NAN),
    ("exp2", 0.0, 1.0), ("exp2", -0.0, 1.0), ("exp2", 1.0, 2.0), ("exp2", -1.0, 0.5),
    ("exp2", INF, INF), ("exp2", -INF, 0.0), ("exp2", "max", INF), ("exp2", "-max", 0.0),
    ("exp2", "log2_subnormal", "subnormal"), ("exp2", NAN, NAN),
    ("floor", -0.5, -1.0), ("floor", 0.5, 0.0), ("floor", -0.0, -0.0), ("floor", 2.5, 2.0),
    ("floor", "-subnormal", -1.0), ("floor", INF, INF), ("floor", -INF, -INF),
    ("floor", "max", "max"), ("floor", NAN, NAN),
    ("ceil", -0.5, -0.0), ("ceil", 0.5, 1.0), ("ceil", -0.0, -0.0), ("ceil", -2.5, -2.0),
    ("ceil", "subnormal", 1.0), ("ceil", "-subnormal", -0.0), ("ceil", -INF, -INF),
    ("ceil", "-max", "-max"), ("ceil", NAN, NAN),
    ("round", -0.5, -0.0), ("round", 0.5, 0.0), ("round", 1.5, 2.0), ("round", 2.5, 2.0),
    ("round", -2.5, -2.0), ("round", "-subnormal", -0.0), ("round", INF, INF),
    ("round", "max", "max"), ("round", NAN, NAN),
]


def _value(v: float | str, dtype: type) -> float:
    fi = np.finfo(dtype)
    named = {"max": fi.max, "subnormal": fi.smallest_subnormal, "ln2": np.log(2.0),
             "pio2": np.pi / 2, "pio4": np.pi / 4,
             "log2_subnormal": float(np.log2(np.float64(fi.smallest_subnormal)))}
    if isinstance(v, str):
        return -named[v[1:]] if v.startswith("-") else named[v]
    return v


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_special_values(kernels, dtype):
    failures = []
    for name, arg, expected in SPECIAL_VALUES:
        x = np.array([_value(arg, dtype)], dtype)
        want = np.array([_value(expected, dtype)], dtype)
        got = kernels(name, dtype)(x)
        same_bits = got.view(f"u{x.itemsize}")[0] == want.view(f"u{x.itemsize}")[0]
        if not (np.isnan(got[0]) if np.isnan(want[0]) else same_bits):
            failures.append(f"{name}({x[0]!r}) = {got[0]!r}, want {want[0]!r}")
    assert not failures, failures


def _last_where(pred: Callable[[np.ndarray], np.ndarray], lo: float, hi: float,
                dtype: type) -> np.ndarray:
    """The largest x in [lo, hi] with pred(x) true, pred being true then false on [lo, hi]."""
    lo_x, hi_x = np.array([lo], dtype), np.array([hi], dtype)
    assert pred(lo_x)[0] and not pred(hi_x)[0]
    while np.nextafter(lo_x, hi_x)[0] != hi_x[0]:
        mid = ((lo_x.astype(np.float64) + hi_x.astype(np.float64)) / 2).astype(dtype)
        if mid[0] in (lo_x[0], hi_x[0]):
            mid = np.nextafter(lo_x, hi_x)
        if pred(mid)[0]:
            lo_x = mid
        else:
            hi_x = mid
    return lo_x


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("name", "pred", "lo", "hi"), [
    ("exp", np.isfinite, 80.0, 800.0),  # overflow to inf
    ("expm1", np.isfinite, 80.0, 800.0),
    ("exp", lambda y: y == 0, -800.0, -80.0),  # underflow to 0
    ("sigmoid", lambda y: y == 0, -800.0, -80.0),
    ("exp2", np.isfinite, 100.0, 1100.0),
    ("exp2", lambda y: y == 0, -1100.0, -100.0),
])
def test_thresholds_match_numpy(kernels, dtype, name, pred, lo, hi):
    """The last argument before overflow (or the last that gives 0) is NumPy's, exactly."""
    edge = _last_where(lambda x: pred(reference(name, x)), lo, hi, dtype)
    after = np.nextafter(edge, np.array([hi], dtype))
    ours = kernels(name, dtype)(np.concatenate([edge, after]))
    assert pred(ours[:1])[0] and not pred(ours[1:])[0], (edge, ours)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_exact_cases_of_log2_exp2_and_log10(kernels, dtype):
    """log2(2**k) = k for every power of two (subnormals too), 2**n exactly for every integer n
    (0 below the subnormals, inf above), log10(10**k) = k wherever 10**k is exact."""
    fi = np.finfo(dtype)
    k = np.arange(fi.minexp - fi.nmant, fi.maxexp)
    powers = np.ldexp(np.ones(k.size, dtype), k)
    np.testing.assert_array_equal(kernels("log2", dtype)(powers), k.astype(dtype))
    n = np.arange(fi.minexp - fi.nmant - 4, fi.maxexp + 4)
    with np.errstate(over="ignore"):
        want = np.ldexp(np.ones(n.size, dtype), n)
    np.testing.assert_array_equal(kernels("exp2", dtype)(n.astype(dtype)), want)
    k10 = np.arange(0, 23 if dtype == np.float64 else 11)  # 10**k has at most p bits
    np.testing.assert_array_equal(kernels("log10", dtype)((10.0**k10).astype(dtype)),
                                  k10.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_erf_rounds_to_one_exactly_where_mpmath_says(kernels, dtype):
    """The last argument whose erf rounds below 1 is mpmath's, and the result there is the
    largest value below 1.  (The long-double reference rounds twice there, so mpmath.)"""
    mpmath = pytest.importorskip("mpmath")
    half_ulp = 2.0 ** -(np.finfo(dtype).nmant + 2)  # erf >= 1 - half_ulp rounds to 1

    def below_one(x: np.ndarray) -> np.ndarray:
        with mpmath.workprec(200):
            return np.array([mpmath.erf(mpmath.mpf(float(v))) < 1 - mpmath.mpf(half_ulp)
                             for v in x])

    edge = _last_where(below_one, 3.0, 7.0, dtype)
    x = np.concatenate([edge, np.nextafter(edge, dtype(8)), -edge])
    got = kernels("erf", dtype)(x)
    one_minus = np.nextafter(dtype(1), dtype(0))
    np.testing.assert_array_equal(got, np.array([one_minus, 1.0, -one_minus], dtype))


@pytest.mark.parametrize("target", _targets())
@pytest.mark.parametrize(("name", "dtype"), CASES)
def test_loop_is_vectorized_and_calls_nothing(kernels, name, dtype, target):
    kernel = kernels(name, dtype, target)
    # No call or tail call in the machine code: an intrinsic without an instruction on this
    # target would show up here as a libm call, after the IR checks below passed.
    assert not re.search(r"^\s*(call|jmp)\w*\s+[^.\s]", kernel.asm, flags=re.M)
    text = kernel.optimized_ir
    elem = "float" if dtype == np.float32 else "double"
    widths = [int(w) for w in re.findall(rf"<(\d+) x {elem}>", text)]
    assert widths and max(widths) >= 2, "the loop was not vectorized"
    callees = set(re.findall(r"\bcall\b[^@\n]*@\"?([\w.$]+)", text))
    assert all(c.startswith("llvm.") for c in callees), callees
    declared = set(re.findall(r"^declare [^@\n]*@\"?([\w.$]+)", text, flags=re.M))
    assert all(c.startswith("llvm.") for c in declared), declared


def test_definition_is_internal_alwaysinline_branch_free_and_idempotent():
    module = ir.Module()
    for name in MATH_FUNCTIONS:
        for ty, suffix in ((ir.FloatType(), "f32"), (ir.DoubleType(), "f64")):
            fn = get_math_function(module, name, ty)
            assert fn.name == f"graphc_math.{name}.{suffix}"
            assert fn.linkage == "internal"
            assert {"alwaysinline", "nounwind", "readnone"} <= set(fn.attributes)
            assert fn.function_type == ir.FunctionType(ty, [ty])
            assert len(fn.blocks) == 1  # straight-line: no branches
            assert get_math_function(module, name, ty) is fn
    # All of them coexist in one valid module (shared intrinsic declarations and tables).
    llvm.parse_assembly(str(module)).verify()
    callees = set(re.findall(r"\bcall\b[^@\n]*@\"?([\w.$]+)", str(module)))
    assert callees == {"llvm.fmuladd.f32", "llvm.fmuladd.f64", "llvm.fabs.f32", "llvm.fabs.f64",
                       "llvm.copysign.f32", "llvm.copysign.f64"}


def test_a_declaration_in_the_module_gets_the_body():
    module = ir.Module()
    fnty = ir.FunctionType(ir.DoubleType(), [ir.DoubleType()])
    declared = ir.Function(module, fnty, name="graphc_math.tanh.f64")
    assert get_math_function(module, "tanh", ir.DoubleType()) is declared
    assert not declared.is_declaration and declared.linkage == "internal"
    llvm.parse_assembly(str(module)).verify()


def test_rejects_unknown_names_and_types():
    module = ir.Module()
    with pytest.raises(ValueError, match="unknown math function"):
        get_math_function(module, "lgamma", ir.FloatType())
    for ty in (ir.HalfType(), ir.IntType(32), ir.PointerType()):
        with pytest.raises(ValueError):
            get_math_function(module, "exp", ty)
    ir.GlobalVariable(module, ir.IntType(32), name="graphc_math.exp.f32")
    with pytest.raises(ValueError, match="already exists"):
        get_math_function(module, "exp", ir.FloatType())


def test_every_function_has_a_libdevice_form_that_ptxas_accepts():
    """The GPU's side of the same names: one kernel per (function, type) calling libdevice,
    compiled to PTX for sm_80 with libdevice linked in, and assembled by ptxas."""
    from graphc.backends.cuda import target
    from graphc.sysinfo import libdevice_path, ptxas_path

    if libdevice_path() is None or ptxas_path() is None:
        pytest.skip("needs the CUDA toolkit's libdevice and ptxas")
    module = ir.Module(name="libdevice_math")
    module.triple = target.TRIPLE
    names = []
    for name in MATH_FUNCTIONS:
        for ty, suffix in ((ir.FloatType(), "f32"), (ir.DoubleType(), "f64")):
            kern = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * 2),
                               name=f"k_{name}_{suffix}")
            kern.calling_convention = "ptx_kernel"
            b = ir.IRBuilder(kern.append_basic_block("entry"))
            x = b.load(kern.args[0], typ=ty)
            b.store(libdevice_math(b, name, x, ty), kern.args[1])
            b.ret_void()
            names.append(kern.name)
    ptx = target.ptx(module, names, "sm_80")
    assert ptx.count(".entry") == len(names)
    target.verify(ptx, "sm_80")  # raises if ptxas rejects it (an unresolved __nv_ call too)

