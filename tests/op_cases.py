"""One table of test cases covering every op in the registry.

Each case builds a small graph from placeholders and gives an *independent* NumPy reference
(plain formulas; explicit loops for convolution and pooling). The same table drives:

* tests/core/test_op_reference.py   — NumPy backend vs the independent reference,
* tests/core/test_gradients.py      — every case's gradient vs finite differences (float64),
* tests/backends/*                  — every backend vs the NumPy backend.

A registry-wide test fails when an op appears in no case, so a new op cannot land untested.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import graphc as gc

F = gc.nn.functional


@dataclass
class Case:
    name: str
    build: Callable  # (*placeholders) -> Tensor
    inputs: Callable  # (rng) -> list of arrays (float64 for float inputs)
    expect: Callable | None  # (*arrays) -> array, independent of graphc
    grad: bool = True  # gradient-checked w.r.t. its float inputs
    shapes: tuple | None = None  # placeholder shapes (with symbolic dims) if not the arrays'
    rtol: float = 1e-5
    grad_eps: float = 1e-6  # finite-difference step for the gradient check
    grad_rtol: float = 1e-5
    tags: set = field(default_factory=set)


def _u(rng, *shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape)


def _pos(rng, *shape):
    return rng.uniform(0.5, 2.0, size=shape)


def _away(rng, *shape):
    """Values bounded away from the kinks at 0 (finite differences stay valid)."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.2, 1.0, size=shape)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# -- loop references for convolution and pooling ---------------------------------------------


def conv2d_loops(x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    n, c, h, wd = x.shape
    co, ci, kh, kw = w.shape
    sh, sw = stride
    ph, pw = padding
    dh, dw = dilation
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    out = np.zeros((n, co, oh, ow))
    for b in range(n):
        for o in range(co):
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0
                    for cc in range(c):
                        for a in range(kh):
                            for e in range(kw):
                                r = i * sh + a * dh - ph
                                s = j * sw + e * dw - pw
                                if 0 <= r < h and 0 <= s < wd:
                                    acc += x[b, cc, r, s] * w[o, cc, a, e]
                    out[b, o, i, j] = acc
    return out


def conv1d_loops(x, w, stride=1, padding=0, dilation=1):
    return conv2d_loops(x[:, :, None, :], w[:, :, None, :], (1, stride), (0, padding),
                        (1, dilation))[:, :, 0, :]


def conv_transpose2d_loops(x, w, stride=(1, 1), padding=(0, 0), output_padding=(0, 0),
                           dilation=(1, 1)):
    n, ci, h, wd = x.shape
    _, co, kh, kw = w.shape
    oh = (h - 1) * stride[0] - 2 * padding[0] + dilation[0] * (kh - 1) + output_padding[0] + 1
    ow = (wd - 1) * stride[1] - 2 * padding[1] + dilation[1] * (kw - 1) + output_padding[1] + 1
    out = np.zeros((n, co, oh, ow))
    for b in range(n):
        for c in range(ci):
            for i in range(h):
                for j in range(wd):
                    for o in range(co):
                        for a in range(kh):
                            for e in range(kw):
                                r = i * stride[0] + a * dilation[0] - padding[0]
                                s = j * stride[1] + e * dilation[1] - padding[1]
                                if 0 <= r < oh and 0 <= s < ow:
                                    out[b, o, r, s] += x[b, c, i, j] * w[c, o, a, e]
    return out


def pool2d_loops(x, k, s, p, mode):
    n, c, h, wd = x.shape
    oh = (h + 2 * p[0] - k[0]) // s[0] + 1
    ow = (wd + 2 * p[1] - k[1]) // s[1] + 1
    out = np.zeros((n, c, oh, ow))
    for b in range(n):
        for cc in range(c):
            for i in range(oh):
                for j in range(ow):
                    vals = []
                    for a in range(k[0]):
                        for e in range(k[1]):
                            r, t = i * s[0] + a - p[0], j * s[1] + e - p[1]
                            inside = 0 <= r < h and 0 <= t < wd
                            if mode == "max":
                                vals.append(x[b, cc, r, t] if inside else -np.inf)
                            else:
                                vals.append(x[b, cc, r, t] if inside else 0.0)
                    out[b, cc, i, j] = max(vals) if mode == "max" else sum(vals) / (k[0] * k[1])
    return out


def max_pool2d_grad_loops(x, g, k, s, p):
    n, c, h, wd = x.shape
    out = np.zeros_like(x)
    for b in range(n):
        for cc in range(c):
            for i in range(g.shape[2]):
                for j in range(g.shape[3]):
                    best, where = -np.inf, None
                    for a in range(k[0]):
                        for e in range(k[1]):
                            r, t = i * s[0] + a - p[0], j * s[1] + e - p[1]
                            if 0 <= r < h and 0 <= t < wd and x[b, cc, r, t] > best:
                                best, where = x[b, cc, r, t], (r, t)
                    out[b, cc, where[0], where[1]] += g[b, cc, i, j]
    return out


def avg_pool2d_grad_loops(g, k, s, p, in_size):
    n, c = g.shape[:2]
    out = np.zeros((n, c) + tuple(in_size))
    for b in range(n):
        for cc in range(c):
            for i in range(g.shape[2]):
                for j in range(g.shape[3]):
                    for a in range(k[0]):
                        for e in range(k[1]):
                            r, t = i * s[0] + a - p[0], j * s[1] + e - p[1]
                            if 0 <= r < in_size[0] and 0 <= t < in_size[1]:
                                out[b, cc, r, t] += g[b, cc, i, j] / (k[0] * k[1])
    return out


def log_softmax(x, axis):
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


# -- the table -------------------------------------------------------------------------------

CASES: list[Case] = []


def case(name, build, inputs, expect, **kw):
    CASES.append(Case(name, build, inputs, expect, **kw))


unary = {
    "neg": (gc.ops.neg, lambda x: -x, _u),
    "exp": (gc.exp, np.exp, _u),
    "log": (gc.log, np.log, _pos),
    "sqrt": (gc.sqrt, np.sqrt, _pos),
    "abs": (gc.abs, np.abs, _away),
    "sign": (gc.sign, np.sign, _away),
    "square": (gc.square, lambda x: x * x, _u),
    "tanh": (gc.tanh, np.tanh, _u),
    "sigmoid": (gc.sigmoid, sigmoid, lambda r, *s: _u(r, *s, lo=-4, hi=4)),
    "softplus": (gc.softplus, lambda x: np.log(1 + np.exp(x)), lambda r, *s: _u(r, *s, lo=-4,
                                                                                  hi=4)),
    "log1p": (gc.log1p, lambda x: np.log(1 + x), _pos),
    "expm1": (gc.expm1, lambda x: np.exp(x) - 1, _u),
    "relu": (gc.relu, lambda x: np.where(x > 0, x, 0), _away),
    "leaky_relu": (gc.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x), _away),
    "leaky_relu_0.2": (lambda x: gc.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x),
                       _away),
    "elu": (gc.elu, lambda x: np.where(x > 0, x, np.exp(x) - 1), _away),
    "elu_0.5": (lambda x: gc.elu(x, 0.5), lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)),
                _away),
}
_erf = np.vectorize(math.erf)  # an independent reference (scipy's is what graphc uses)
unary.update({
    "sin": (gc.sin, np.sin, lambda r, *s: _u(r, *s, lo=-7, hi=7)),
    "cos": (gc.cos, np.cos, lambda r, *s: _u(r, *s, lo=-7, hi=7)),
    "tan": (gc.tan, np.tan, lambda r, *s: _u(r, *s, lo=-1.4, hi=1.4)),
    "arctan": (gc.arctan, np.arctan, lambda r, *s: _u(r, *s, lo=-4, hi=4)),
    "erf": (gc.erf, _erf, lambda r, *s: _u(r, *s, lo=-2.5, hi=2.5)),
    "log2": (gc.log2, lambda x: np.log(x) / np.log(2.0), _pos),
    "log10": (gc.log10, lambda x: np.log(x) / np.log(10.0), _pos),
    "exp2": (gc.exp2, lambda x: np.exp(x * np.log(2.0)), lambda r, *s: _u(r, *s, lo=-4, hi=4)),
    "reciprocal": (gc.reciprocal, lambda x: 1.0 / x, _away),
    "rsqrt": (gc.rsqrt, lambda x: 1.0 / np.sqrt(x), _pos),
    # rounding: values away from the integers and halves, where the derivative is 0
    "floor": (gc.floor, np.floor, lambda r, *s: np.round(_u(r, *s, lo=-4, hi=4)) + 0.3),
    "ceil": (gc.ceil, np.ceil, lambda r, *s: np.round(_u(r, *s, lo=-4, hi=4)) - 0.3),
    "round": (gc.round, np.rint, lambda r, *s: np.round(_u(r, *s, lo=-4, hi=4)) + 0.2),
    "softsign": (gc.softsign, lambda x: x / (1 + np.abs(x)), _away),
    "hard_sigmoid": (gc.hard_sigmoid, lambda x: np.minimum(np.maximum(x + 3, 0), 6) / 6,
                     lambda r, *s: _u(r, *s, lo=-5, hi=5)),
    "silu": (gc.silu, lambda x: x * sigmoid(x), lambda r, *s: _u(r, *s, lo=-4, hi=4)),
    "gelu": (gc.gelu, lambda x: x * (1 + _erf(x / math.sqrt(2))) / 2,
             lambda r, *s: _u(r, *s, lo=-4, hi=4)),
    "gelu_tanh": (lambda x: gc.gelu(x, approximate="tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi)
                                                   * (x + 0.044715 * x**3))),
                  lambda r, *s: _u(r, *s, lo=-4, hi=4)),
})
for _name, (_f, _ref, _gen) in unary.items():
    case(_name, _f, lambda rng, g=_gen: [g(rng, 3, 4)], _ref)

case("add_broadcast", lambda a, b: a + b, lambda r: [_u(r, 3, 4), _u(r, 4)], lambda a, b: a + b)
case("sub_broadcast", lambda a, b: a - b, lambda r: [_u(r, 2, 3, 1), _u(r, 3, 4)],
     lambda a, b: a - b)
case("mul_broadcast", lambda a, b: a * b, lambda r: [_u(r, 3, 1), _u(r, 1, 4)],
     lambda a, b: a * b)
case("div", lambda a, b: a / b, lambda r: [_u(r, 3, 4), _pos(r, 4)], lambda a, b: a / b)
case("pow", lambda a, b: a**b, lambda r: [_pos(r, 3, 4), _u(r, 3, 4)], lambda a, b: a**b)
case("pow_scalar", lambda a: a**3 + 2 * a - 1.5, lambda r: [_u(r, 5)], lambda a: a**3 + 2 * a - 1.5)
case("scalar_left", lambda a: 1.0 - 2.0 / a, lambda r: [_pos(r, 5)], lambda a: 1.0 - 2.0 / a)
case("maximum", gc.maximum, lambda r: [_u(r, 3, 4), _u(r, 4)], np.maximum)
case("minimum", gc.minimum, lambda r: [_u(r, 3, 4), _u(r, 3, 1)], np.minimum)
case("where", lambda a, b: gc.where(a > 0.1, a, b), lambda r: [_away(r, 3, 4), _u(r, 4)],
     lambda a, b: np.where(a > 0.1, a, b))
case("clip_scalars", lambda x: gc.clip(x, -0.5, 0.5), lambda r: [_u(r, 4, 5) * 1.3],
     lambda x: np.clip(x, -0.5, 0.5))
case("clip_tensors", gc.clip,
     lambda r: [_u(r, 3, 4), _u(r, 3, 4, lo=-0.9, hi=-0.3), _u(r, 4, lo=0.3, hi=0.9)],
     lambda x, lo, hi: np.minimum(np.maximum(x, lo), hi))
for _op, _ref in [(gc.less, np.less), (gc.less_equal, np.less_equal), (gc.greater, np.greater),
                  (gc.greater_equal, np.greater_equal), (gc.equal, np.equal),
                  (gc.not_equal, np.not_equal)]:
    case(_op.__name__, _op, lambda r: [np.round(_u(r, 3, 4) * 2), np.round(_u(r, 4) * 2)], _ref,
         grad=False)
# NaN, inf and the integer arithmetic of NumPy (floor division, modulo, powers; by zero: 0)
_HOSTILE = np.array([0.0, -0.0, 1.5, -2.5, np.inf, -np.inf, np.nan, 1e300, -1e-300, 7.0])
for _op, _ref in [(gc.isnan, np.isnan), (gc.isinf, np.isinf), (gc.isfinite, np.isfinite)]:
    case(_op.__name__, _op, lambda r: [_HOSTILE], _ref, grad=False)
case("floor_divide", gc.floor_divide, lambda r: [_u(r, 3, 4) * 5, _away(r, 4) * 2],
     np.floor_divide)
case("remainder", gc.remainder, lambda r: [_u(r, 3, 4) * 5, _away(r, 4) * 2], np.remainder)
case("floordiv_mod_float_edges", lambda a, b: gc.concat([a // b, a % b], 0),
     lambda r: [np.array([7.0, -7, 7, -7, 5, 0, np.inf, 1, -0.0, np.nan, 3]),
                np.array([2.0, 2, -2, -2, 0, 0, 2, np.inf, 3, 1, np.nan])],
     lambda a, b: np.concatenate([np.floor_divide(a, b), np.remainder(a, b)]), grad=False)


def _int_inputs(dtype):
    info = np.iinfo(dtype)
    a = np.array([7, -7, 7, -7, 5, info.min, info.min, 0, info.max, -1, 3, 2], dtype)
    b = np.array([2, 2, -2, -2, 0, -1, 1, 0, 3, 0, -5, 2], dtype)
    return [a, b]


def _int_power(a, b):
    """Independent reference: Python integers, wrapped to the dtype; a negative exponent gives
    the truncated 1/a**-b (NumPy raises there)."""
    bits = a.dtype.itemsize * 8
    out = []
    for x, n in zip(a.tolist(), b.tolist()):
        if n < 0:
            v = 1 if x == 1 else (-1 if n % 2 else 1) if x == -1 else 0
        else:
            v = pow(x, n, 1 << bits)
        v %= 1 << bits
        out.append(v - (1 << bits) if v >= 1 << (bits - 1) else v)
    return np.array(out, a.dtype)


def _py_floordiv(a, b):
    bits = a.dtype.itemsize * 8
    out = [0 if y == 0 else x // y for x, y in zip(a.tolist(), b.tolist())]
    return np.array([v - (1 << bits) if v >= 1 << (bits - 1) else v for v in out], a.dtype)


for _dt in ("int32", "int64"):
    case(f"int_arith_{_dt}", lambda a, b: gc.concat([a + b, a - b, a * b, -a, gc.abs(a),
                                                     gc.sign(b)], 0),
         lambda r, d=_dt: _int_inputs(d),
         lambda a, b: np.concatenate([a + b, a - b, a * b, -a, np.abs(a), np.sign(b)]),
         grad=False)
    case(f"int_floordiv_{_dt}", lambda a, b: a // b, lambda r, d=_dt: _int_inputs(d),
         _py_floordiv, grad=False)
    case(f"int_mod_{_dt}", lambda a, b: a % b, lambda r, d=_dt: _int_inputs(d),
         lambda a, b: np.array([0 if y == 0 else x % y for x, y in zip(a.tolist(), b.tolist())],
                               a.dtype), grad=False)
    case(f"int_pow_{_dt}", lambda a, b: a ** gc.clip(b, -3, 40), lambda r, d=_dt: _int_inputs(d),
         lambda a, b: _int_power(a, np.clip(b, -3, 40)), grad=False)
    case(f"int_pow_scalar_{_dt}", lambda a: a ** 3 - a ** 0,
         lambda r, d=_dt: _int_inputs(d)[:1],
         lambda a: _int_power(a, np.full_like(a, 3)) - 1, grad=False)
    case(f"int_compare_extrema_{_dt}", lambda a, b: gc.concat(
        [gc.maximum(a, b), gc.minimum(a, b), gc.clip(a, b, 4), gc.cast(a < b, a.dtype),
         gc.cast(gc.equal(a, b), a.dtype), gc.where(a >= b, a, b)], 0),
         lambda r, d=_dt: _int_inputs(d),
         lambda a, b: np.concatenate([np.maximum(a, b), np.minimum(a, b), np.clip(a, b, 4),
                                      (a < b).astype(a.dtype), (a == b).astype(a.dtype),
                                      np.where(a >= b, a, b)]), grad=False)
case("elemwise", lambda a, b: gc.ops.elemwise(
    gc.ops.expr.sym_input(0) ** 2 * __import__("sympy").exp(gc.ops.expr.sym_input(1)), [a, b]),
    lambda r: [_u(r, 3, 4), _u(r, 4)], lambda a, b: a**2 * np.exp(b))
case("cast_f32", lambda x: gc.cast(x, "float32") * 2.0, lambda r: [_u(r, 3)],
     lambda x: (x.astype(np.float32) * 2.0), grad=False)
case("cast_roundtrip", lambda x: gc.cast(gc.cast(x, "float32"), "float64") * x,
     lambda r: [_u(r, 3)], lambda x: x.astype(np.float32).astype(np.float64) * x, rtol=1e-4,
     tags={"explicit_dtype"}, grad_eps=1e-2, grad_rtol=1e-4)  # float32 steps need a wide eps
case("cast_int", lambda x: gc.cast(x * 3, "int64"), lambda r: [_u(r, 6)],
     lambda x: (x * 3).astype(np.int64), grad=False)


def _to_int(x, dtype):
    """float -> int as NumPy on x86-64: truncation, and the most negative integer for NaN, inf
    and values out of range."""
    info = np.iinfo(dtype)
    return np.array([int(v) if np.isfinite(v) and info.min <= v < info.max + 1 else info.min
                     for v in x.tolist()], dtype)


case("cast_int_hostile", lambda x: gc.concat([gc.cast(x, "int64"), gc.cast(gc.cast(x, "int32"),
                                                                            "int64")], 0),
     lambda r: [np.array([np.nan, np.inf, -np.inf, 1e300, -1e300, 3e9, -3e9, 2.7, -2.7, -0.0])],
     lambda x: np.concatenate([_to_int(x, np.int64), _to_int(x, np.int32).astype(np.int64)]),
     grad=False)

for _axis, _keep in [(None, False), (0, False), ((0, 2), True), (-1, False)]:
    case(f"sum_{_axis}_{_keep}", lambda x, a=_axis, k=_keep: gc.sum(x, a, k),
         lambda r: [_u(r, 2, 3, 4)], lambda x, a=_axis, k=_keep: np.sum(x, a, keepdims=k))
    case(f"mean_{_axis}_{_keep}", lambda x, a=_axis, k=_keep: gc.mean(x, a, k),
         lambda r: [_u(r, 2, 3, 4)], lambda x, a=_axis, k=_keep: np.mean(x, a, keepdims=k))
    case(f"max_{_axis}_{_keep}", lambda x, a=_axis, k=_keep: gc.max(x, a, k),
         lambda r: [_u(r, 2, 3, 4)], lambda x, a=_axis, k=_keep: np.max(x, a, keepdims=k))
    case(f"min_{_axis}_{_keep}", lambda x, a=_axis, k=_keep: gc.min(x, a, k),
         lambda r: [_u(r, 2, 3, 4)], lambda x, a=_axis, k=_keep: np.min(x, a, keepdims=k))
case("mean_symbolic", lambda x: gc.mean(x, 0), lambda r: [_u(r, 5, 3)],
     lambda x: x.mean(0), shapes=(("N", 3),))
case("numel_symbolic", lambda x: gc.ops.numel(x, (0, 1)) * gc.sum(x),
     lambda r: [_u(r, 5, 2)], lambda x: x.size * x.sum(), shapes=(("N", "M"),))
case("argmax", lambda x: gc.argmax(x, 1), lambda r: [_u(r, 4, 5)], lambda x: np.argmax(x, 1),
     grad=False)
case("argmax_flat", lambda x: gc.argmax(x), lambda r: [_u(r, 4, 5)], lambda x: np.argmax(x),
     grad=False)
# reductions of a mask (bool: False < True; a signed 1-bit True is -1, which made max over
# a mask False on the native backends) and of integers
for _name, _build, _ref in [
    ("max_bool", lambda x: gc.max(x > 0), lambda x: np.max(x > 0)),
    ("min_bool_0", lambda x: gc.min(x > 0, 0), lambda x: np.min(x > 0, 0)),
    ("max_bool_1_keep", lambda x: gc.max(x < 0, 1, keepdims=True),
     lambda x: np.max(x < 0, 1, keepdims=True)),
    ("argmax_bool_1", lambda x: gc.argmax(x > 0, 1), lambda x: np.argmax(x > 0, 1)),
    ("argmax_bool_0", lambda x: gc.argmax(x > 0, 0), lambda x: np.argmax(x > 0, 0)),
    ("max_int_1", lambda x: gc.max(gc.cast(x * 9, "int32"), 1),
     lambda x: np.max((x * 9).astype(np.int32), 1)),
    ("argmin_int_0", lambda x: gc.argmax(-gc.cast(x * 9, "int64"), 0),
     lambda x: np.argmax(-(x * 9).astype(np.int64), 0)),
]:
    case(_name, _build, lambda r: [_u(r, 4, 5)], _ref, grad=False)
# integer products (they wrap as NumPy's do), plain, transposed and batched
case("matmul_int32", lambda x, y: gc.cast(x * 9, "int32") @ gc.cast(y * 9, "int32"),
     lambda r: [_u(r, 5, 7), _u(r, 7, 3)],
     lambda x, y: (x * 9).astype(np.int32) @ (y * 9).astype(np.int32), grad=False)
case("matmul_bool", lambda x, y: (x > 0.3) @ (y < 0.3),  # (any of ands; a sum wrapped at 256)
     lambda r: [_u(r, 4, 300), _u(r, 300, 3)], lambda x, y: (x > 0.3) @ (y < 0.3), grad=False)
case("matmul_int64_batched_tb",
     lambda x, y: gc.ops.matmul_t(gc.cast(x * 9, "int64"), gc.cast(y * 9, "int64"), tb=True),
     lambda r: [_u(r, 2, 5, 7), _u(r, 2, 3, 7)],
     lambda x, y: (x * 9).astype(np.int64) @ (y * 9).astype(np.int64).transpose(0, 2, 1),
     grad=False)
case("logsumexp", lambda x: gc.logsumexp(x, 1), lambda r: [_u(r, 3, 5) * 3],
     lambda x: np.log(np.exp(x).sum(1)))
case("logsumexp_keep", lambda x: gc.logsumexp(x, (0, 2), keepdims=True),
     lambda r: [_u(r, 2, 3, 4)], lambda x: np.log(np.exp(x).sum((0, 2), keepdims=True)))
case("logsumexp_softmax_0d", lambda x: gc.logsumexp(x, keepdims=True) + gc.softmax(x, 0)
     + gc.log_softmax(x, 0), lambda r: [np.asarray(_u(r))], lambda x: x + 1.0)
case("softmax", lambda x: gc.softmax(x), lambda r: [_u(r, 3, 5) * 3],
     lambda x: np.exp(log_softmax(x, -1)))
case("softmax_axis0", lambda x: gc.softmax(x, 0), lambda r: [_u(r, 3, 5) * 3],
     lambda x: np.exp(log_softmax(x, 0)))
case("log_softmax", lambda x: gc.log_softmax(x, 1), lambda r: [_u(r, 3, 5) * 3],
     lambda x: log_softmax(x, 1))

case("reshape", lambda x: x.reshape(4, -1) * 1.5, lambda r: [_u(r, 2, 3, 4)],
     lambda x: x.reshape(4, 6) * 1.5)
case("reshape_symbolic", lambda x: x.reshape(-1), lambda r: [_u(r, 3, 4)],
     lambda x: x.reshape(-1), shapes=(("N", 4),))
case("transpose", lambda x: gc.transpose(x, (2, 0, 1)), lambda r: [_u(r, 2, 3, 4)],
     lambda x: x.transpose(2, 0, 1))
case("T", lambda x: x.T, lambda r: [_u(r, 3, 4)], lambda x: x.T)
case("broadcast_to", lambda x: gc.ops.broadcast_to(x, (2, 3, 4)), lambda r: [_u(r, 3, 1)],
     lambda x: np.broadcast_to(x, (2, 3, 4)))
case("concat", lambda a, b: gc.concat([a, b, a], axis=1), lambda r: [_u(r, 2, 3), _u(r, 2, 1)],
     lambda a, b: np.concatenate([a, b, a], axis=1))
case("concat_runs_of_equal_shapes", lambda a, b: gc.concat([a, a * 2.0, b, a, a], axis=1),
     lambda r: [_u(r, 2, 3, 2), _u(r, 2, 1, 2)],
     lambda a, b: np.concatenate([a, a * 2.0, b, a, a], axis=1))
case("stack", lambda a, b: gc.stack([a, b], axis=-1), lambda r: [_u(r, 2, 3), _u(r, 2, 3)],
     lambda a, b: np.stack([a, b], axis=-1))
case("pad", lambda x: gc.pad(x, ((1, 0), (2, 3))), lambda r: [_u(r, 2, 3)],
     lambda x: np.pad(x, ((1, 0), (2, 3))))
case("slice", lambda x: x[1:, ::2], lambda r: [_u(r, 3, 5)], lambda x: x[1:, ::2])
case("slice_negative_step", lambda x: x[::-1, 3:0:-2], lambda r: [_u(r, 3, 5)],
     lambda x: x[::-1, 3:0:-2])
case("index_int_none", lambda x: x[1, None, ..., -1], lambda r: [_u(r, 3, 4, 5)],
     lambda x: x[1, None, ..., -1])
case("slice_symbolic", lambda x: x[:, 1:3], lambda r: [_u(r, 6, 4)], lambda x: x[:, 1:3],
     shapes=(("N", 4),))
case("unslice", lambda x: gc.ops.unslice(x, (4, 7), (1, 0), (1, 3)), lambda r: [_u(r, 2, 3)],
     lambda x: _unslice(x))


def _unslice(x):
    out = np.zeros((4, 7))
    out[1:3, 0:7:3] = x
    return out


def _unslice_reversed(x):
    out = np.zeros((4, 7))
    out[::-1, 6::-2] = x
    return out


# the gradient of x[::-1, ::-2]: native kernels once wrote only the first position back
case("unslice_negative_step", lambda x: gc.ops.unslice(x, (4, 7), (3, 6), (-1, -2)),
     lambda r: [_u(r, 4, 4)], _unslice_reversed)


case("matmul", lambda a, b: a @ b, lambda r: [_u(r, 3, 4), _u(r, 4, 5)], lambda a, b: a @ b)
case("matmul_batched", lambda a, b: a @ b, lambda r: [_u(r, 2, 3, 4), _u(r, 4, 5)],
     lambda a, b: a @ b)
case("matmul_batch_broadcast", lambda a, b: a @ b, lambda r: [_u(r, 2, 1, 3, 4), _u(r, 3, 4, 2)],
     lambda a, b: a @ b)
case("matmul_vector", lambda a, b: a @ b, lambda r: [_u(r, 4), _u(r, 4, 3)], lambda a, b: a @ b)
case("matmul_ta_tb", lambda a, b: gc.ops.matmul_t(a, b, ta=True, tb=True),
     lambda r: [_u(r, 4, 3), _u(r, 5, 4)], lambda a, b: a.T @ b.T)
case("matmul_ta", lambda a, b: gc.ops.matmul_t(a, b, ta=True), lambda r: [_u(r, 2, 4, 3),
                                                                         _u(r, 2, 4, 5)],
     lambda a, b: np.swapaxes(a, -1, -2) @ b)
# products in the llvm backend's register tiles (6 rows by 16 floats / 8 doubles): the last
# tile of rows and of columns overlaps the one before it; static sizes, then a symbolic batch
# (the tiles chosen at run time); the gradients add the transposed forms
case("matmul_tiles", lambda a, b: a @ b, lambda r: [_u(r, 13, 24), _u(r, 24, 37)],
     lambda a, b: a @ b)
case("matmul_tiles_ta", lambda a, b: gc.ops.matmul_t(a, b, ta=True),
     lambda r: [_u(r, 24, 9), _u(r, 24, 20)], lambda a, b: a.T @ b)
case("matmul_tiles_symbolic", lambda a, b: a @ b, lambda r: [_u(r, 7, 33), _u(r, 33, 40)],
     lambda a, b: a @ b, shapes=(("N", 33), (33, 40)))

case("conv2d", lambda x, w: F.conv2d(x, w), lambda r: [_u(r, 2, 3, 6, 5), _u(r, 4, 3, 3, 2)],
     conv2d_loops)
case("conv2d_stride_pad_dilation", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1),
                                                            padding=(1, 2), dilation=(2, 1)),
     lambda r: [_u(r, 2, 2, 7, 6), _u(r, 3, 2, 3, 3), _u(r, 3)],
     lambda x, w, b: conv2d_loops(x, w, (2, 1), (1, 2), (2, 1)) + b[None, :, None, None])
case("conv1d", lambda x, w: F.conv1d(x, w, stride=2, padding=1, dilation=2),
     lambda r: [_u(r, 2, 3, 9), _u(r, 2, 3, 3)], lambda x, w: conv1d_loops(x, w, 2, 1, 2))
case("conv_transpose2d", lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2, padding=1,
                                                             output_padding=1),
     lambda r: [_u(r, 2, 3, 3, 4), _u(r, 3, 2, 3, 3), _u(r, 2)],
     lambda x, w, b: conv_transpose2d_loops(x, w, (2, 2), (1, 1), (1, 1)) + b[None, :, None,
                                                                                None])
case("conv_transpose1d", lambda x, w: F.conv_transpose1d(x, w, stride=3, dilation=2),
     lambda r: [_u(r, 1, 2, 4), _u(r, 2, 3, 2)],
     lambda x, w: conv_transpose2d_loops(x[:, :, None], w[:, :, None], (1, 3), (0, 0), (0, 0),
                                         (1, 2))[:, :, 0])
case("conv_weight_grad", lambda x, g: gc.ops.conv_weight_grad(x, g, (3, 2), (2, 1), (1, 0),
                                                               (1, 1)),
     lambda r: [_u(r, 2, 3, 6, 5), _u(r, 2, 4, 3, 4)],
     lambda x, g: np.einsum(  # dw[o,c,a,e] = sum g[n,o,i,j] * xpad[n,c,2i+a,j+e]
         "noij,ncijae->ocae", g, _win(np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0))), 3, 4, 3, 2,
                                      2, 1)))


def _win(xp, oh, ow, kh, kw, sh, sw):
    n, c = xp.shape[:2]
    out = np.zeros((n, c, oh, ow, kh, kw))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
    return out


case("max_pool2d", lambda x: F.max_pool2d(x, 3, stride=2, padding=1),
     lambda r: [_u(r, 2, 3, 7, 6)], lambda x: pool2d_loops(x, (3, 3), (2, 2), (1, 1), "max"))
case("max_pool2d_nonsquare", lambda x: F.max_pool2d(x, (2, 3), stride=(2, 1)),
     lambda r: [_u(r, 1, 2, 6, 7)], lambda x: pool2d_loops(x, (2, 3), (2, 1), (0, 0), "max"))
# windows that do not overlap (the gradient is a gather on every backend): positions no
# window covers (a gap between windows, the odd last row) and padding
case("max_pool2d_gaps", lambda x: F.max_pool2d(x, 2, stride=3, padding=1),
     lambda r: [_u(r, 2, 2, 7, 8)], lambda x: pool2d_loops(x, (2, 2), (3, 3), (1, 1), "max"))
case("max_pool2d_odd", lambda x: F.max_pool2d(x, 2),
     lambda r: [_u(r, 2, 3, 7, 5)], lambda x: pool2d_loops(x, (2, 2), (2, 2), (0, 0), "max"))
case("max_pool1d", lambda x: F.max_pool1d(x, 2), lambda r: [_u(r, 2, 3, 8)],
     lambda x: pool2d_loops(x[:, :, None], (1, 2), (1, 2), (0, 0), "max")[:, :, 0])
case("avg_pool2d", lambda x: F.avg_pool2d(x, 3, stride=2, padding=1),
     lambda r: [_u(r, 2, 3, 7, 6)], lambda x: pool2d_loops(x, (3, 3), (2, 2), (1, 1), "avg"))
case("avg_pool1d", lambda x: F.avg_pool1d(x, 3, stride=1), lambda r: [_u(r, 2, 3, 8)],
     lambda x: pool2d_loops(x[:, :, None], (1, 3), (1, 1), (0, 0), "avg")[:, :, 0])
case("max_pool_grad", lambda x, g: gc.ops.max_pool_grad(x, g, (3, 3), (2, 2), (1, 1)),
     lambda r: [_u(r, 2, 2, 7, 6), _u(r, 2, 2, 4, 3)],
     lambda x, g: max_pool2d_grad_loops(x, g, (3, 3), (2, 2), (1, 1)))
case("max_pool_select", lambda x, h: gc.ops.max_pool_select(x, h, (2, 2), (2, 2), (0, 0)),
     lambda r: [_u(r, 2, 2, 4, 6), _u(r, 2, 2, 4, 6)],
     lambda x, h: _select_loops(x, h))
case("avg_pool_grad", lambda g: gc.ops.avg_pool_grad(g, (3, 3), (2, 2), (1, 1), (7, 6)),
     lambda r: [_u(r, 2, 2, 4, 3)], lambda g: avg_pool2d_grad_loops(g, (3, 3), (2, 2), (1, 1),
                                                                     (7, 6)))


def _select_loops(x, h):
    n, c, hh, ww = x.shape
    out = np.zeros((n, c, hh // 2, ww // 2))
    for b in range(n):
        for cc in range(c):
            for i in range(hh // 2):
                for j in range(ww // 2):
                    win = x[b, cc, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                    a, e = np.unravel_index(np.argmax(win), (2, 2))
                    out[b, cc, i, j] = h[b, cc, 2 * i + a, 2 * j + e]
    return out


_IDS = np.array([[1, 0, 3], [3, 3, 2]])
case("embedding", lambda t: F.embedding(gc.constant(_IDS), t), lambda r: [_u(r, 4, 5)],
     lambda t: t[_IDS])
case("scatter_add", lambda g: gc.ops.scatter_add(g, gc.constant(_IDS), 5),
     lambda r: [_u(r, 2, 3, 4)], lambda g: _scatter(g))


def _scatter(g):
    out = np.zeros((5, 4))
    for idx, row in zip(_IDS.ravel(), g.reshape(-1, 4)):
        out[idx] += row
    return out


case("one_hot", lambda: gc.one_hot(gc.constant(np.array([2, 0, 1, 2])), 3), lambda r: [],
     lambda: np.eye(3)[[2, 0, 1, 2]], grad=False)
case("one_hot_scaled", lambda x: gc.one_hot(gc.constant(np.array([2, 0, 1])), 4,
                                               dtype="float64") * x,
     lambda r: [_u(r, 3, 4)], lambda x: np.eye(4)[[2, 0, 1]] * x, tags={"explicit_dtype"})


def _uniform(seed, n):
    """Element i: top 24 bits of word 0 of Philox4x32-10(counter=(i, 0, 0, 0), key=seed).

    philox4x32 itself is checked against Random123's known-answer vectors in test_random.py.
    """
    from graphc.ops.random import philox4x32

    i = np.arange(n, dtype=np.uint64)
    w = philox4x32((i, 0, 0, 0), (seed & 0xFFFFFFFF, seed >> 32))[0]
    return (w >> np.uint64(8)).astype(np.float64) / (1 << 24)


def _philox_masks(shape, seed, p):
    return (_uniform(seed, math.prod(shape)) >= p).reshape(shape)


case("dropout", lambda x: F.dropout(x, 0.3, training=True, seed=1234), lambda r: [_u(r, 8, 5)],
     lambda x: np.where(_philox_masks((8, 5), 1234, 0.3), x / 0.7, 0))
case("random_uniform", lambda: gc.ops.random_uniform(gc.rng_state(7), (3, 4), "float64"),
     lambda r: [], lambda: _uniform(7, 12).reshape(3, 4), grad=False)


# -- collectives (graphc.distributed): in one process each is an identity, its gradient too;
# tests/distributed/test_mpi.py checks them across two processes
_D = gc.distributed
case("allreduce_sum", lambda x: _D.allreduce(x) * x, lambda r: [_u(r, 3, 4)], lambda x: x * x)
case("allreduce_mean", lambda x: gc.exp(_D.allreduce(x, "mean")), lambda r: [_u(r, 5)],
     np.exp)
case("allreduce_max", lambda x: _D.allreduce(x, "max") * 2, lambda r: [_u(r, 2, 3)],
     lambda x: 2 * x)
case("broadcast", lambda x: gc.tanh(_D.broadcast(x, 0)), lambda r: [_u(r, 4)], np.tanh)
case("reduce_root", lambda x: _D.reduce_root(x * x, 0), lambda r: [_u(r, 3, 2)],
     lambda x: x * x)
case("allreduce_start_wait", lambda x: gc.ops.collective.allreduce_wait(
    gc.ops.collective.allreduce_start(x + 1), x + 1) * 3, lambda r: [_u(r, 6)],
     lambda x: 3 * (x + 1), grad=False)

# -- composites from gc.nn.functional --------------------------------------------------------
_LABELS = np.array([2, 0, 1, 2, 1])
case("cross_entropy", lambda z: F.cross_entropy(z, gc.constant(_LABELS)),
     lambda r: [_u(r, 5, 3) * 3], lambda z: -log_softmax(z, 1)[np.arange(5), _LABELS].mean())
case("cross_entropy_smoothing", lambda z: F.cross_entropy(z, gc.constant(_LABELS), 0.1),
     lambda r: [_u(r, 5, 3) * 3],
     lambda z: (0.9 * -log_softmax(z, 1)[np.arange(5), _LABELS] - 0.1 * log_softmax(z, 1)
                .mean(1)).mean())
case("bce_with_logits", F.binary_cross_entropy_with_logits,
     lambda r: [_u(r, 4, 3) * 4, r.uniform(0, 1, (4, 3))],
     lambda z, t: -(t * np.log(sigmoid(z)) + (1 - t) * np.log(1 - sigmoid(z))).mean())
case("mse_loss", F.mse_loss, lambda r: [_u(r, 4, 3), _u(r, 4, 3)],
     lambda a, b: ((a - b) ** 2).mean())
case("l1_loss", F.l1_loss, lambda r: [_u(r, 4, 3), _u(r, 4, 3) + 3],
     lambda a, b: np.abs(a - b).mean())
case("hinge_loss", lambda s: F.hinge_loss(s, gc.constant([1.0, -1, 1, -1, 1], dtype=s.dtype)),
     lambda r: [np.array([0.3, 0.2, 2.0, -3.0, -0.5])],
     lambda s: np.maximum(0, 1 - np.array([1.0, -1, 1, -1, 1]) * s).mean())
case("linear", F.linear, lambda r: [_u(r, 4, 3), _u(r, 3, 2), _u(r, 2)],
     lambda x, w, b: x @ w + b)


def _bn_train(x, g, b):
    mu = x.mean((0, 2, 3), keepdims=True)
    var = x.var((0, 2, 3), keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5) * g[None, :, None, None] + b[None, :, None, None]


def _bn_graph(training):
    def build(x, g, b):
        rm = gc.parameter("rm", np.zeros(3, x.dtype))
        rv = gc.parameter("rv", np.ones(3, x.dtype))
        return F.batch_norm(x, g, b, rm, rv, training=training)

    return build


case("batch_norm_train", _bn_graph(True), lambda r: [_u(r, 4, 3, 2, 2), _pos(r, 3), _u(r, 3)],
     _bn_train, rtol=1e-4)
case("batch_norm_eval", _bn_graph(False), lambda r: [_u(r, 4, 3, 2, 2), _pos(r, 3), _u(r, 3)],
     lambda x, g, b: x / np.sqrt(1 + 1e-5) * g[None, :, None, None] + b[None, :, None, None])


# -- loops (issue 15): native on llvm and cuda (docs/scan-plan.md)


def _scan_rnn(x, h, w):
    (hT, _), ys = gc.scan(lambda c, xt: ((gc.tanh(xt * w + c[0] * c[1]), c[1]), c[0].sum()),
                          (h, w), x, reverse=False)
    return hT.sum() + (ys * ys).sum()


def _scan_rnn_ref(x, h, w):
    ys = []
    for t in range(len(x)):
        ys.append(h.sum())
        h = np.tanh(x[t] * w + h * w)
    return h.sum() + (np.array(ys) ** 2).sum()


case("scan_rnn", _scan_rnn, lambda r: [_u(r, 4, 3), _u(r, 3), _u(r, 3)], _scan_rnn_ref,
     shapes=(("T", 3), (3,), (3,)))
