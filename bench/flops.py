"""Floating-point work of a compiled step, and the BLAS peak to compare it with.

Only the products count (matmul, and every convolution kind as the GEMM it is): they are
nearly all of a training step's arithmetic, and the part a BLAS peak bounds. Two FLOPs per
multiply-add. The peak is NumPy's own sgemm on large square matrices, measured in the same
run as the steps it is compared with.
"""

from __future__ import annotations

import math
import time

import numpy as np

PRODUCTS = ("matmul", "conv", "conv_transpose", "conv_weight_grad")


def _mul_adds(op: str, attrs: dict, shape: tuple, ins: list[tuple]) -> int:
    """Multiply-adds of one product node, from its output shape and its inputs' shapes."""
    if op == "matmul":  # out (..., M, N), the contracted K from a's last or first matrix axis
        a = ins[0]
        return math.prod(shape) * (a[-2] if attrs["ta"] else a[-1])
    if op == "conv":  # out (N, Cout, O...) from w (Cout, Cin, K...)
        return math.prod(shape) * math.prod(ins[1][1:])
    if op == "conv_transpose":  # g (N, Cout, I...), w (Cout, Cin, K...)
        return math.prod(ins[0]) * math.prod(ins[1][1:])
    g = ins[1]  # conv_weight_grad: out (Cout, Cin, K...) for every (n, o) of g (N, Cout, O...)
    return math.prod(shape) * g[0] * math.prod(g[2:])


def step_flops(fn, sizes: dict[str, int]) -> int:
    """FLOPs of one call of compiled function `fn` with its symbolic dims at `sizes`
    (e.g. ``{"N": 32}``): the products of its optimized graph."""
    from graphc.ir.shapes import sym

    binding = {sym(k): v for k, v in sizes.items()}

    def bound(shape) -> tuple:
        return tuple(int(d.subs(binding)) if hasattr(d, "subs") else int(d) for d in shape)

    return sum(2 * _mul_adds(n.op.name, n.attrs, bound(n.shape), [bound(i.shape)
                                                                  for i in n.inputs])
               for n in fn.graph.nodes if n.op.name in PRODUCTS)


def sgemm_peak(seconds: float = 1.0, n: int = 1024) -> float:
    """GFLOP/s of NumPy's float32 GEMM on n×n matrices: the best of repeated windows."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        best = max(best, 3 * 2 * n**3 / (time.perf_counter() - start) / 1e9)
    return best
