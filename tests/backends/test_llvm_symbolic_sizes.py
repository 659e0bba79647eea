"""Sizes with fractions on the native targets: a strided convolution or pooling over an
image of symbolic size has ``floor(H/2 - 3/2) + 1`` positions, a transposed one sizes with
fractional coefficients that are integers where they are sizes. The emitter computes them
by floor division (backends/kernelgen/emitter.py, `_integer_quotient`); it used to refuse
them ("cannot lower floor"), so these graphs compiled on the NumPy backend only."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
import sympy
from llvmlite import binding as llvm
from llvmlite import ir

import graphc as gc
from graphc.backends.kernelgen import toolchain
from graphc.backends.kernelgen.emitter import ExprEmitter

F = gc.nn.functional

CASES = {  # (input shape with symbols, the op, the sizes to call it with)
    "conv1d-stride-2": (("N", 3, "H"), lambda x, w1, w2: F.conv1d(x, w1, stride=2), [7, 8, 9]),
    "conv2d-stride-2x3-padded": (("N", 3, "H", "W"),
                                 lambda x, w1, w2: F.conv2d(x, w2, stride=(2, 3), padding=1),
                                 [(7, 8), (9, 11), (4, 4)]),
    "conv1d-dilated-stride-3": (("N", 3, "H"),
                                lambda x, w1, w2: F.conv1d(x, w1, stride=3, dilation=2),
                                [5, 9, 12]),
    "conv_transpose1d-stride-3": (("N", 3, "H"), lambda x, w1, w2: F.conv_transpose1d(
        x, gc.transpose(w1, (1, 0, 2)), stride=3, padding=1, output_padding=2), [2, 5]),
    "avg_pool1d-3-stride-2": (("N", 3, "H"), lambda x, w1, w2: F.avg_pool1d(x, 3, 2),
                              [3, 8, 9]),
    "max_pool2d-3-stride-2-padded": (("N", 3, "H", "W"),
                                     lambda x, w1, w2: F.max_pool2d(x, 3, 2, padding=1),
                                     [(5, 6), (8, 9)]),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_strided_windows_over_symbolic_images_compile_and_match_numpy(case):
    shape, op, sizes = CASES[case]
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(4, 3, 3)), rng.normal(size=(4, 3, 3, 2))
    fns = {}
    for backend in ("numpy", "llvm"):
        with gc.Graph():
            x = gc.placeholder("x", shape, "float64")
            y = op(x, gc.constant(w1), gc.constant(w2))
            (gx,) = gc.grad((gc.tanh(y) * y).sum(), [x])
            fns[backend] = gc.compile([x], [y, gx], backend=backend)
    for size in sizes:
        spatial = size if isinstance(size, tuple) else (size,)
        data = rng.normal(size=(2, 3, *spatial))
        want = fns["numpy"](data)
        for got, expected in zip(fns["llvm"](data), want):
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def _integer_function(expr, symbol):
    """A compiled f(H) -> expr as i64, through the emitter, and the engine keeping it."""
    toolchain.initialize()
    module = ir.Module(name="sizes")
    i64 = ir.IntType(64)
    fn = ir.Function(module, ir.FunctionType(i64, [i64]), name="size")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    value = ExprEmitter(b, module, i64, math=None).emit(expr, {symbol: fn.args[0]})
    b.ret(value)
    tm = toolchain.host_target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(module)), tm)
    engine.finalize_object()
    return ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(
        engine.get_function_address("size")), engine


@pytest.mark.parametrize("form", ["floor", "ceiling", "floor-negative", "whole-fraction"])
def test_the_emitter_divides_with_floor_semantics(form):
    """floor and ceiling of P/q, and sums with fractional coefficients that are integers,
    against sympy for negative and positive values (C's division truncates toward zero)."""
    H = sympy.Symbol("H", integer=True)
    expr, values = {
        "floor": (sympy.floor(H / 2 - sympy.Rational(3, 2)) + 1, range(-9, 21)),
        "ceiling": (sympy.ceiling(H / 3) - 2 * sympy.ceiling(-H / 4), range(-13, 17)),
        "floor-negative": (sympy.floor(-(H + 1) / 5), range(-12, 12)),
        "whole-fraction": (3 * H / 2 - sympy.Rational(1, 2), range(-9, 21, 2)),  # H odd
    }[form]
    size, engine = _integer_function(expr, H)
    for v in values:
        assert size(v) == int(expr.subs(H, v)), (expr, v)
    del engine
