"""Philox4x32-10 in IR: the counter-based random numbers of random_uniform and dropout, bit
for bit as graphc.ops.random.philox4x32 (the NumPy reference)."""

from __future__ import annotations

from llvmlite import ir

from graphc.ops.random import PHILOX_M, PHILOX_W

from .irutil import I32, I64, i64

__all__ = ["philox"]


def _mulhilo(b: ir.IRBuilder, a: int, x: ir.Value) -> tuple[ir.Value, ir.Value]:
    p = b.mul(b.zext(x, I64), i64(a))
    return b.trunc(b.lshr(p, i64(32)), I32), b.trunc(p, I32)


def philox(b: ir.IRBuilder, counter: list[ir.Value], key: list[ir.Value]) -> list[ir.Value]:
    """Philox4x32-10 on i32 words (the same rounds as graphc.ops.random.philox4x32)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        hi0, lo0 = _mulhilo(b, PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(b, PHILOX_M[1], c2)
        c0, c1, c2, c3 = b.xor(b.xor(hi1, c1), k0), lo1, b.xor(b.xor(hi0, c3), k1), lo0
        k0 = b.add(k0, ir.Constant(I32, PHILOX_W[0]))
        k1 = b.add(k1, ir.Constant(I32, PHILOX_W[1]))
    return [c0, c1, c2, c3]
