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


def _mul_adds(node) -> int:
    op, shape = node.op.name, tuple(int(d) for d in node.shape)
    ins = [tuple(int(d) for d in i.shape) for i in node.inputs]
    if op == "matmul":  # out (..., M, N), the contracted K from a's last or first matrix axis
        a = ins[0]
        k = a[-2] if node.attrs["ta"] else a[-1]
        return math.prod(shape) * k
    if op == "conv":  # out (N, Cout, O...) from w (Cout, Cin, K...)
        return math.prod(shape) * math.prod(ins[1][1:])
    if op == "conv_transpose":  # g (N, Cout, I...), w (Cout, Cin, K...)
        return math.prod(ins[0]) * math.prod(ins[1][1:])
    if op == "conv_weight_grad":  # out (Cout, Cin, K...) for every (n, o) of g (N, Cout, O...)
        g = ins[1]
        return math.prod(shape) * g[0] * math.prod(g[2:])
    return 0


def step_flops(fn, sizes: dict[str, int]) -> int:
    """FLOPs of one call of compiled function `fn` with its symbolic dims at `sizes`
    (e.g. ``{"N": 32}``): the products of its optimized graph."""
    from graphc.ir.shapes import sym

    binding = {sym(k): v for k, v in sizes.items()}
    total = 0
    for node in fn.graph.nodes:
        if node.op.name in ("matmul", "conv", "conv_transpose", "conv_weight_grad"):
            bound = node
            if node.type.symbols or any(i.type.symbols for i in node.inputs):
                bound = _Bound(node, binding)
            total += 2 * _mul_adds(bound)
    return total


class _Bound:
    """A node's shapes with its symbolic dims replaced by sizes."""

    def __init__(self, node, binding) -> None:
        self.op, self.attrs = node.op, node.attrs
        self.shape = tuple(_size(d, binding) for d in node.shape)
        self.inputs = [_Shaped(tuple(_size(d, binding) for d in i.shape)) for i in node.inputs]


class _Shaped:
    def __init__(self, shape) -> None:
        self.shape = shape


def _size(d, binding) -> int:
    return int(d.subs(binding)) if hasattr(d, "subs") else int(d)


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
