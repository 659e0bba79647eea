"""Gathers and scatters by integer ids, one_hot, and the Philox random numbers.

take/scatter_add check every id against the table size: an id out of range zero-fills its
row and sets the kernel status, so the step reports the error and applies no update (native
code never reads or writes outside a buffer). The random kernel evaluates Philox4x32-10 per
element from (element index, step, stream) and the seed, bit for bit as the NumPy reference.
"""

from __future__ import annotations

from llvmlite import ir

from ..kernelgen.irutil import (
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
from ..kernelgen.philox import philox
from ..kernelgen.program import KernelContext
from ..kernelgen.registry import lowering


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


@lowering("take", target="llvm")
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


@lowering("scatter_add", target="llvm")
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


@lowering("one_hot", target="llvm")
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


@lowering("random_uniform", target="llvm")
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
