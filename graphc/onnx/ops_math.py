"""Elementwise ONNX ops: arithmetic, math functions, activations, comparisons, logic,
the variadic Max/Min/Sum/Mean, Where, Clip, Cast — and the reductions."""

from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..ir.tensor import Tensor
from . import dtypes
from .table import onnx_op


def const_like(x: Tensor, value) -> Tensor:
    """A scalar constant of x's dtype (no promotion: ONNX types are exact)."""
    return ops.constant(np.asarray(value, dtype=x.dtype), dtype=x.dtype)


def _float_only(ctx, *xs):
    for x in xs:
        if x is not None and np.dtype(x.dtype).kind != "f":
            ctx.fail(f"input of type {x.dtype} is not supported (graphc computes "
                     f"{ctx.op_type} in float32/float64 only)")


def _and(a: Tensor, b: Tensor) -> Tensor:
    return ops.where(a, b, ops.constant(np.asarray(False)))


def _or(a: Tensor, b: Tensor) -> Tensor:
    return ops.where(a, ops.constant(np.asarray(True)), b)


def _not(a: Tensor) -> Tensor:
    return ops.equal(a, ops.constant(np.asarray(False)))


# -- arithmetic --------------------------------------------------------------------------------

_FOLD = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


@onnx_op("Add", "Sub", "Mul")
def _arith(ctx, a, b):
    if ctx.is_static(a, b):
        return np.asarray(_FOLD[ctx.op_type](a, b))
    fn = {"Add": ops.add, "Sub": ops.sub, "Mul": ops.mul}[ctx.op_type]
    return fn(ctx.tensor(a), ctx.tensor(b))


@onnx_op("Div")
def _div(ctx, a, b):
    if ctx.is_static(a, b):
        a_, b_ = np.asarray(a), np.asarray(b)
        if a_.dtype.kind == "f":
            return np.asarray(a_ / b_, dtype=a_.dtype)
        return np.asarray(a_ // b_) if a_.dtype == object else np.trunc(
            a_ / b_).astype(a_.dtype)
    a, b = ctx.tensor(a), ctx.tensor(b)
    if a.dtype.kind == "f":
        return ops.div(a, b)
    # ONNX integer division truncates toward zero; graphc's // floors (as NumPy)
    q, r = ops.floor_divide(a, b), ops.remainder(a, b)
    zero = const_like(a, 0)
    negative = ops.not_equal(ops.less(a, zero), ops.less(b, zero))
    fix = _and(ops.not_equal(r, zero), negative)
    return ops.where(fix, q + const_like(q, 1), q)


@onnx_op("Pow")
def _pow(ctx, a, b):
    a, b = ctx.tensor(a), ctx.tensor(b)
    if b.dtype != a.dtype:
        if a.dtype.kind != "f" and b.dtype.kind == "f":
            ctx.fail(f"an integer base ({a.dtype}) with a float exponent ({b.dtype}) is not "
                     "supported")
        b = ops.cast(b, a.dtype)
    return ops.pow(a, b)


@onnx_op("Mod")
def _mod(ctx, a, b):
    if _plain(a) and _plain(b) and a.dtype.kind in "iu" and b.dtype.kind in "iu" and np.all(
            b != 0):
        fold = np.fmod if ctx.attr("fmod", 0) else np.mod
        return np.asarray(fold(a, b)).astype(np.result_type(a, b))
    a, b = ctx.tensor(a), ctx.tensor(b)
    if ctx.attr("fmod", 0):
        return _fmod(a, b)
    return ops.remainder(a, b)  # the sign of the divisor, as NumPy's %


def _fmod(a: Tensor, b: Tensor) -> Tensor:
    """C's fmod (the sign of the dividend), exactly, from NumPy's remainder.

    Floats: ``remainder(|a|, |b|)`` is fmod of the magnitudes (no sign correction happens
    there, so nothing is rounded: correcting ``remainder(a, b)`` by ``- b`` instead cancels
    to 0 when |a| << |b|, ``fmod(-0.001, 1e5)``, and gives NaN for an infinite b), then the
    sign of a; a zero result is a signed zero, ``a * 0`` (a is finite there). NaN and
    infinite a, and b == 0, give NaN as fmod. Integers: the remainder is exact, so it is
    corrected by b when its sign differs from a's (0 for b == 0, as graphc's %)."""
    zero = const_like(a, 0)
    if a.dtype.kind != "f":
        r = ops.remainder(a, b)
        fix = _and(ops.not_equal(r, zero),
                   ops.not_equal(ops.less(a, zero), ops.less(b, const_like(b, 0))))
        return ops.where(fix, r - b, r)
    r = ops.remainder(ops.abs(a), ops.abs(b))
    signed = ops.where(ops.less(a, zero), ops.neg(r), r)
    return ops.where(ops.equal(r, zero), a * zero, signed)


# -- unary math ---------------------------------------------------------------------------------

_UNARY_FLOAT = {
    "Exp": ops.exp, "Log": ops.log, "Sqrt": ops.sqrt, "Reciprocal": ops.reciprocal,
    "Sigmoid": ops.sigmoid, "Tanh": ops.tanh, "Softplus": ops.softplus, "Softsign": ops.softsign,
    "Erf": ops.erf, "Sin": ops.sin, "Cos": ops.cos, "Tan": ops.tan, "Atan": ops.arctan,
    "Floor": ops.floor, "Ceil": ops.ceil, "Round": ops.round,
}


@onnx_op(*_UNARY_FLOAT)
def _unary_float(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    return _UNARY_FLOAT[ctx.op_type](x)


def _asin(x: Tensor) -> Tensor:
    return ops.arctan(x / ops.sqrt((const_like(x, 1) - x) * (const_like(x, 1) + x)))


# the inverse and hyperbolic functions graphc has no op for, from exp, log, sqrt and arctan
# (ONNX's cases stay inside the domains; NaN outside them, as the definitions)
_COMPOSED = {
    "Sinh": lambda x: (ops.exp(x) - ops.exp(-x)) * const_like(x, 0.5),
    "Cosh": lambda x: (ops.exp(x) + ops.exp(-x)) * const_like(x, 0.5),
    "Asin": _asin,
    "Acos": lambda x: const_like(x, math.pi / 2) - _asin(x),
    "Asinh": lambda x: ops.sign(x) * ops.log(ops.abs(x) + ops.sqrt(x * x + const_like(x, 1))),
    "Acosh": lambda x: ops.log(x + ops.sqrt((x - const_like(x, 1)) * (x + const_like(x, 1)))),
    "Atanh": lambda x: ops.log((const_like(x, 1) + x) / (const_like(x, 1) - x)) * const_like(
        x, 0.5),
    "Mish": lambda x: x * ops.tanh(ops.softplus(x)),
}


@onnx_op(*_COMPOSED)
def _composed(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    return _COMPOSED[ctx.op_type](x)


@onnx_op("Swish")
def _swish(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    alpha = float(ctx.attr("alpha", 1.0))
    return x * ops.sigmoid(x * const_like(x, alpha) if alpha != 1.0 else x)


@onnx_op("Celu")
def _celu(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    alpha = float(ctx.attr("alpha", 1.0))
    # max(0, x) + min(0, alpha * (exp(x / alpha) - 1))
    return ops.where(ops.greater(x, const_like(x, 0)), x,
                     const_like(x, alpha) * ops.expm1(x / const_like(x, alpha)))


@onnx_op("Shrink")
def _shrink(ctx, x):
    x = ctx.tensor(x)
    lambd, bias = float(ctx.attr("lambd", 0.5)), float(ctx.attr("bias", 0.0))
    up = ops.where(ops.greater(x, const_like(x, lambd)), x - const_like(x, bias),
                   const_like(x, 0))
    return ops.where(ops.less(x, const_like(x, -lambd)), x + const_like(x, bias), up)


@onnx_op("Hardmax")
def _hardmax(ctx, x):
    """1 at the first largest element along the axis (before opset 13: of the input seen as
    2-d, as Softmax)."""
    x = ctx.tensor(x)
    _float_only(ctx, x)
    if ctx.opset >= 13:
        axis = ctx.axis(ctx.attr("axis", -1), x.ndim)
        flat = x
    else:
        cut = ctx.axis(ctx.attr("axis", 1), max(x.ndim, 1))
        flat = ops.reshape(x, (math.prod(x.shape[:cut]) if cut else 1, -1))
        axis = 1
    idx = ops.argmax(flat, axis)
    n = flat.shape[axis]
    hot = ops.one_hot(idx, n, dtype=x.dtype)  # the class axis last
    if axis != flat.ndim - 1:
        perm = list(range(flat.ndim - 1))
        perm.insert(axis, flat.ndim - 1)
        hot = ops.transpose(hot, tuple(perm))
    return hot if flat is x else ops.reshape(hot, x.shape)


@onnx_op("Neg", "Abs", "Sign", "Relu")
def _unary(ctx, x):
    if ctx.is_static(x) and ctx.op_type in ("Neg", "Abs"):
        return np.asarray(-x if ctx.op_type == "Neg" else abs(x))
    x = ctx.tensor(x)
    return {"Neg": ops.neg, "Abs": ops.abs, "Sign": ops.sign, "Relu": ops.relu}[ctx.op_type](x)


@onnx_op("Identity")
def _identity(ctx, x):
    return x


@onnx_op("LeakyRelu")
def _leaky_relu(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    return ops.leaky_relu(x, float(ctx.attr("alpha", 0.01)))


@onnx_op("Elu")
def _elu(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    return ops.elu(x, float(ctx.attr("alpha", 1.0)))


@onnx_op("Selu")
def _selu(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    alpha = float(ctx.attr("alpha", 1.67326319217681884765625))
    gamma = float(ctx.attr("gamma", 1.05070102214813232421875))
    return ops.elu(x, alpha) * const_like(x, gamma)


@onnx_op("HardSigmoid")
def _hard_sigmoid(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    return ops.clip(x * const_like(x, alpha) + const_like(x, beta), const_like(x, 0),
                    const_like(x, 1))


@onnx_op("HardSwish")
def _hard_swish(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    return x * ops.clip(x * const_like(x, 1 / 6) + const_like(x, 0.5), const_like(x, 0),
                        const_like(x, 1))


@onnx_op("ThresholdedRelu")
def _thresholded_relu(ctx, x):
    x = ctx.tensor(x)
    return ops.where(ops.greater(x, const_like(x, float(ctx.attr("alpha", 1.0)))), x,
                     const_like(x, 0))


@onnx_op("PRelu")
def _prelu(ctx, x, slope):
    x, slope = ctx.tensor(x), ctx.tensor(slope)
    return ops.where(ops.less(x, const_like(x, 0)), x * slope, x)


@onnx_op("Gelu")
def _gelu(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    approximate = ctx.attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        ctx.fail(f"approximate={approximate!r} is not supported")
    return ops.gelu(x, approximate=approximate)


@onnx_op("Softmax", "LogSoftmax")
def _softmax(ctx, x):
    x = ctx.tensor(x)
    _float_only(ctx, x)
    fn = ops.softmax if ctx.op_type == "Softmax" else ops.log_softmax
    if ctx.opset >= 13:
        return fn(x, int(ctx.attr("axis", -1)))
    # before opset 13: the input is seen as 2-d, [prod(shape[:axis]), prod(shape[axis:])]
    axis = ctx.axis(ctx.attr("axis", 1), max(x.ndim, 1))
    rows = math.prod(x.shape[:axis]) if axis else 1
    flat = ops.reshape(x, (rows, -1))
    return ops.reshape(fn(flat, 1), x.shape)


# -- comparisons, logic, selection ----------------------------------------------------------

_COMPARE = {"Equal": ops.equal, "Less": ops.less, "Greater": ops.greater,
            "LessOrEqual": ops.less_equal, "GreaterOrEqual": ops.greater_equal}


_COMPARE_NP = {"Equal": np.equal, "Less": np.less, "Greater": np.greater,
               "LessOrEqual": np.less_equal, "GreaterOrEqual": np.greater_equal}


def _plain(x) -> bool:
    """A known array of numbers (not symbolic dims): safe to fold with NumPy."""
    return isinstance(x, np.ndarray) and x.dtype != object


def _decided_equal(a, b) -> np.ndarray | None:
    """Elementwise a == b of known arrays holding symbolic dims, where the answer holds for
    every size the dims may take (``N == N`` is true, ``N + 1 == N`` false); None when some
    element depends on the sizes (``N == 1``): the comparison is then left to run time."""
    import sympy

    a, b = np.broadcast_arrays(np.asarray(a, dtype=object), np.asarray(b, dtype=object))
    out = np.empty(a.shape, dtype=bool)
    for i, (x, y) in enumerate(zip(a.ravel(), b.ravel())):
        diff = sympy.simplify(sympy.sympify(x, strict=True) - sympy.sympify(y, strict=True))
        # (a dim is an integer >= 0 at run time, an empty batch included: N + 1 is never 0,
        # N == -1 false, N == 0 left to run time)
        diff = diff.xreplace({s: sympy.Dummy(s.name, integer=True, nonnegative=True)
                              for s in diff.free_symbols})
        zero = diff.is_zero
        if zero is None:
            return None
        out.flat[i] = bool(zero)
    return out


@onnx_op(*_COMPARE)
def _compare(ctx, a, b):
    if ctx.is_static(a, b):
        if _plain(a) and _plain(b):
            return np.asarray(_COMPARE_NP[ctx.op_type](a, b))
        if ctx.op_type == "Equal":
            decided = _decided_equal(a, b)
            if decided is not None:
                return decided
    return _COMPARE[ctx.op_type](ctx.tensor(a), ctx.tensor(b))


@onnx_op("Not")
def _logical_not(ctx, x):
    if _plain(x):
        return np.logical_not(x)
    return _not(ctx.tensor(x))


@onnx_op("And", "Or", "Xor")
def _logic(ctx, a, b):
    if _plain(a) and _plain(b):
        fn = {"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}
        return np.asarray(fn[ctx.op_type](a, b))
    a, b = ctx.tensor(a), ctx.tensor(b)
    if ctx.op_type == "And":
        return _and(a, b)
    if ctx.op_type == "Or":
        return _or(a, b)
    return ops.not_equal(a, b)


@onnx_op("IsNaN")
def _isnan(ctx, x):
    return ops.isnan(ctx.tensor(x))


@onnx_op("IsInf")
def _isinf(ctx, x):
    x = ctx.tensor(x)
    pos, neg = int(ctx.attr("detect_positive", 1)), int(ctx.attr("detect_negative", 1))
    if pos and neg:
        return ops.isinf(x)
    zero = const_like(x, 0)
    if pos:
        return _and(ops.isinf(x), ops.greater(x, zero))
    if neg:
        return _and(ops.isinf(x), ops.less(x, zero))
    return _and(ops.isinf(x), ops.isnan(x))  # detects nothing: all False


@onnx_op("Where")
def _where(ctx, c, a, b):
    if ctx.is_static(c, a, b):
        return np.asarray(np.where(c, a, b))
    return ops.where(ctx.tensor(c), ctx.tensor(a), ctx.tensor(b))


@onnx_op("Clip")
def _clip(ctx, x, lo=None, hi=None):
    x = ctx.tensor(x)
    if ctx.opset < 11:
        lo = ctx.attr("min", None)
        hi = ctx.attr("max", None)
    info = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
    lo = const_like(x, info.min) if lo is None else ctx.tensor(lo) if not isinstance(
        lo, float) else const_like(x, lo)
    hi = const_like(x, info.max) if hi is None else ctx.tensor(hi) if not isinstance(
        hi, float) else const_like(x, hi)
    if x.dtype.kind != "f":
        # integers: no NaN; min then max, as the ONNX reference
        return ops.minimum(ops.maximum(x, lo), hi)
    return ops.clip(x, lo, hi)


_VARIADIC_NP = {"Max": np.maximum, "Min": np.minimum, "Sum": np.add}


@onnx_op("Max", "Min", "Sum", "Mean")
def _variadic(ctx, *xs):
    if ctx.op_type in _VARIADIC_NP and all(_plain(x) for x in xs):
        acc = np.asarray(xs[0])
        for x in xs[1:]:
            acc = _VARIADIC_NP[ctx.op_type](acc, x)
        return np.asarray(acc)
    if ctx.op_type in _VARIADIC_NP and ctx.is_static(*xs) and all(
            np.asarray(x).dtype.kind in "iuO" for x in xs):
        # shape arithmetic over symbolic dims (graphc writes the bounds of a slice of a
        # symbolic axis with Max/Min): folded with sympy, as Add and Mul are
        import sympy

        fold = np.frompyfunc({"Max": sympy.Max, "Min": sympy.Min, "Sum": sympy.Add}[
            ctx.op_type], 2, 1)
        acc = np.asarray(xs[0], dtype=object)
        for x in xs[1:]:
            acc = fold(acc, np.asarray(x, dtype=object))
        return np.asarray(acc, dtype=object)
    ts = [ctx.tensor(x) for x in xs]
    fn = {"Max": ops.maximum, "Min": ops.minimum, "Sum": ops.add, "Mean": ops.add}[ctx.op_type]
    acc = ts[0]
    for t in ts[1:]:
        acc = fn(acc, t)
    if ctx.op_type == "Mean":
        _float_only(ctx, acc)
        acc = acc / const_like(acc, len(ts))
    elif len(ts) == 1:
        # a single input still broadcasts to nothing: the result is the input
        return acc
    return acc


@onnx_op("Cast")
def _cast(ctx, x):
    to = dtypes.to_numpy(int(ctx.attr("to")), ctx.where())
    if int(ctx.attr("saturate", 1)) != 1:
        ctx.fail("saturate=0 only concerns float8 types, which graphc does not have")
    if ctx.is_static(x):
        arr = np.asarray(x)
        if arr.dtype == object and to.kind == "i":
            return arr
        if arr.dtype != object or all(isinstance(v, (int, np.integer)) for v in arr.flat):
            return arr.astype(to)
        # a symbolic count as data (graphc's mean over a symbolic dim divides by it)
        return ops.cast(ctx.tensor(arr), to)
    x = ctx.tensor(x)
    return x if x.dtype == to else ops.cast(x, to)


@onnx_op("CastLike")
def _cast_like(ctx, x, like):
    """Cast to the element type of `like` (only its type is read, so an empty `like` works)."""
    to = np.dtype(like.dtype)
    if to not in dtypes.NUMPY_TO_ONNX:
        ctx.fail(f"target type {to} is not supported by graphc")
    if int(ctx.attr("saturate", 1)) != 1:
        ctx.fail("saturate=0 only concerns float8 types, which graphc does not have")
    if ctx.is_static(x):
        return np.asarray(x).astype(to)
    x = ctx.tensor(x)
    return x if x.dtype == to else ops.cast(x, to)


# -- reductions ----------------------------------------------------------------------------------


def _prod(x: Tensor, axes: tuple, keepdims: bool) -> Tensor:
    """The product over `axes`: the reduced axes moved last and flattened, then the slices
    multiplied one by one (graphc has no product reduction; ONNX's cases reduce a few
    elements, and a log-sum would lose integers and signs)."""
    keep = [i for i in range(x.ndim) if i not in axes]
    moved = ops.transpose(x, tuple(keep + list(axes))) if list(axes) != list(
        range(len(keep), x.ndim)) else x
    n = math.prod(x.shape[a] for a in axes)
    flat = ops.reshape(moved, tuple(x.shape[i] for i in keep) + (n,))
    acc = flat[..., 0]
    for i in range(1, n):
        acc = acc * flat[..., i]
    if keepdims:
        acc = ops.reshape(acc, tuple(1 if i in axes else d for i, d in enumerate(x.shape)))
    return acc


_REDUCE = {
    "ReduceSum": ops.sum, "ReduceMean": ops.mean, "ReduceMax": ops.max, "ReduceMin": ops.min,
    "ReduceL1": lambda x, a, keepdims: ops.sum(ops.abs(x), a, keepdims=keepdims),
    "ReduceL2": lambda x, a, keepdims: ops.sqrt(ops.sum(x * x, a, keepdims=keepdims)),
    "ReduceSumSquare": lambda x, a, keepdims: ops.sum(x * x, a, keepdims=keepdims),
    "ReduceLogSum": lambda x, a, keepdims: ops.log(ops.sum(x, a, keepdims=keepdims)),
    "ReduceLogSumExp": lambda x, a, keepdims: ops.logsumexp(x, a, keepdims=keepdims),
    "ReduceProd": _prod,
}
# the opset from which `axes` is an input rather than an attribute
_AXES_INPUT_SINCE = {"ReduceSum": 13}
_FLOAT_REDUCE = {"ReduceMean", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp"}


@onnx_op(*_REDUCE)
def _reduce(ctx, x, axes=None):
    if ctx.opset >= _AXES_INPUT_SINCE.get(ctx.op_type, 18):
        axes = None if axes is None else [int(a) for a in ctx.static(axes, "axes").ravel()]
    else:
        axes = ctx.attr("axes", None)
    keepdims = bool(ctx.attr("keepdims", 1))
    if ctx.op_type == "ReduceProd" and isinstance(x, np.ndarray) and x.dtype == object:
        # the product of dims read with Shape (graphc writes a mean's element count so):
        # folded, symbolic dims included, as the other shape arithmetic
        rank = max(x.ndim, 1)
        if not axes:
            axes = [] if ctx.attr("noop_with_empty_axes", 0) else list(range(x.ndim))
        axes = ctx.axes(axes, rank) if x.ndim else []
        return np.asarray(np.prod(x, axis=tuple(axes), keepdims=keepdims) if axes else x,
                          dtype=object)
    x = ctx.tensor(x)
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.ndim))
    axes = sorted(ctx.axes(axes, max(x.ndim, 1)))
    if x.dtype == bool:
        ctx.fail("boolean inputs are not supported")
    if any(d == 0 for d in x.shape):
        ctx.fail("reducing an empty tensor is not supported (graphc has no size-0 dims)")
    if ctx.op_type in _FLOAT_REDUCE and x.dtype.kind != "f":
        ctx.fail(f"{ctx.op_type} of {x.dtype} is not supported")
    if ctx.op_type == "ReduceProd" and not all(isinstance(x.shape[a], int) for a in axes):
        ctx.fail("a product over a symbolic dim is not supported")
    y = _REDUCE[ctx.op_type](x, tuple(axes), keepdims=keepdims)
    return y if y.dtype == x.dtype else ops.cast(y, x.dtype)


@onnx_op("CumSum", "CumProd")
def _cumulative(ctx, x, axis):
    """Running sums (products) along an axis: the prefix of every position combined slice by
    slice, as graphc has no scan-free cumulative op (ONNX's cases are short axes)."""
    x = ctx.tensor(x)
    axis = np.asarray(ctx.static(axis, "axis"))
    if axis.size != 1:
        ctx.fail(f"axis has {axis.size} elements, not 1")
    axis = ctx.axis(axis.reshape(-1)[0], x.ndim)
    n = x.shape[axis]
    if not isinstance(n, int):
        ctx.fail("a cumulative op along a symbolic dim is not supported")
    if x.dtype == bool:
        ctx.fail("boolean inputs are not supported")
    exclusive, reverse = int(ctx.attr("exclusive", 0)), int(ctx.attr("reverse", 0))
    combine = ops.add if ctx.op_type == "CumSum" else ops.mul
    identity = 0 if ctx.op_type == "CumSum" else 1

    def at(i):
        index = [slice(None)] * x.ndim
        index[axis] = slice(i, i + 1)
        return x[tuple(index)]

    order = range(n - 1, -1, -1) if reverse else range(n)
    outs, acc = {}, None
    for i in order:
        if exclusive:
            outs[i] = acc if acc is not None else ops.full(at(i).shape, identity, x.dtype)
        acc = at(i) if acc is None else combine(acc, at(i))
        if not exclusive:
            outs[i] = acc
    parts = [outs[i] for i in range(n)]
    return parts[0] if n == 1 else ops.concat(parts, axis)


@onnx_op("ArgMax", "ArgMin")
def _argmax(ctx, x):
    x = ctx.tensor(x)
    axis = ctx.axis(ctx.attr("axis", 0), x.ndim)
    keepdims = bool(ctx.attr("keepdims", 1))
    if x.dtype == bool:
        ctx.fail("boolean inputs are not supported")
    y = x if ctx.op_type == "ArgMax" else ops.neg(x)
    if ctx.attr("select_last_index", 0):
        index = [slice(None)] * x.ndim
        index[axis] = slice(None, None, -1)
        idx = ops.argmax(y[tuple(index)], axis)
        idx = ops.constant(np.asarray(x.shape[axis] - 1, dtype=np.int64)) - idx
    else:
        idx = ops.argmax(y, axis)
    if keepdims:
        idx = ops.reshape(idx, tuple(1 if i == axis else d for i, d in enumerate(x.shape)))
    return idx
