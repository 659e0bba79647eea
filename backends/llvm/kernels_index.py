"""Gathers and scatters by integer ids, one_hot, and the Philox random numbers.

take/scatter_add check every id against the table size: an id out of range zero-fills its
row and sets the kernel status, so the step reports the error and applies no update (native
code never reads or writes outside a buffer). The random kernel evaluates Philox4x32-10 per
element from (element index, step, stream) and the seed, bit for bit as the NumPy reference.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.ops.random import PHILOX_M, PHILOX_W

from .codegen import KernelContext, lowers
from .irutil import (
    F64,
    I32,
    I64,
    const,
    convert,
    i64,
    ir_type,
    load,
    loop,
    memset_zero,
    product,
    store,
)


def _row_copy(ctx: KernelContext, ids_node, width, per_row) -> None:
    """For each id: per_row(row index r, checked id) inside a bounds check on the id."""
    b = ctx.b
    rows = ctx.numel(ids_node)
    ids_ty = ir_type(ids_node.dtype)
    with loop(b, rows, "r") as r:
        raw = convert(b, load(b, ctx.ptr(ids_node), ids_ty, r), ids_ty, I64)
        ok = b.and_(b.icmp_signed(">=", raw, i64(0)), b.icmp_signed("<", raw, width))
        with b.if_else(ok) as (then, otherwise):
            with then:
                per_row(r, raw)
            with otherwise:
                ctx.fail(1, raw, width)


@lowers("take")
def take(ctx: KernelContext) -> None:
    b = ctx.b
    table, ids = ctx.node.inputs
    ty = ctx.ty()
    shape = ctx.shape(table)
    d = product(b, shape[1:])
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())

    def copy(r, row):
        with loop(b, d, "d") as j:
            store(b, load(b, ctx.in_ptr(0), ty, b.add(b.mul(row, d), j)), ctx.out_ptr, ty,
                  b.add(b.mul(r, d), j))

    _row_copy(ctx, ids, shape[0], copy)


@lowers("scatter_add")
def scatter_add(ctx: KernelContext) -> None:
    b = ctx.b
    g, ids = ctx.node.inputs
    ty = ctx.ty()
    shape = ctx.shape()
    d = product(b, shape[1:])
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())

    def add(r, row):
        with loop(b, d, "d") as j:
            k = b.add(b.mul(row, d), j)
            cur = load(b, ctx.out_ptr, ty, k)
            store(b, b.fadd(cur, load(b, ctx.in_ptr(0), ty, b.add(b.mul(r, d), j))),
                  ctx.out_ptr, ty, k)

    _row_copy(ctx, ids, shape[0], add)


@lowers("one_hot")
def one_hot(ctx: KernelContext) -> None:
    b = ctx.b
    (labels,) = ctx.node.inputs
    ty = ctx.ty()
    n = i64(ctx.node.attrs["n"])
    lty = ir_type(labels.dtype)
    with loop(b, ctx.numel(labels), "r") as r:
        label = convert(b, load(b, ctx.in_ptr(0), lty, r), lty, I64)
        ok = b.and_(b.icmp_signed(">=", label, i64(0)), b.icmp_signed("<", label, n))
        with b.if_then(b.not_(ok)):
            ctx.fail(1, label, n)
        with loop(b, n, "c") as c:
            hit = b.icmp_signed("==", label, c)
            store(b, b.select(hit, const(ty, 1), const(ty, 0)), ctx.out_ptr, ty,
                  b.add(b.mul(r, n), c))


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


@lowers("random_uniform")
def random_uniform(ctx: KernelContext) -> None:
    b = ctx.b
    (state,) = ctx.node.inputs
    ty = ctx.ty()
    seed = load(b, ctx.in_ptr(0), I64, i64(0))
    step = load(b, ctx.in_ptr(0), I64, i64(1))
    key = [b.trunc(seed, I32), b.trunc(b.lshr(seed, i64(32)), I32)]
    step32 = b.trunc(step, I32)
    stream = ir.Constant(I32, ctx.node.attrs["stream"] & 0xFFFFFFFF)
    with loop(b, ctx.numel(), "e") as i:
        words = philox(b, [b.trunc(i, I32), b.trunc(b.lshr(i, i64(32)), I32), step32, stream],
                       key)
        top = b.lshr(words[0], ir.Constant(I32, 8))
        u = b.fmul(b.uitofp(top, F64), ir.Constant(F64, 1.0 / (1 << 24)))
        store(b, convert(b, u, F64, ty), ctx.out_ptr, ty, i)
