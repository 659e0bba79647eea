"""Max and average pooling, and their adjoints.

Max pooling keeps the first maximum of each window (row-major scan; the first NaN wins, as
numpy.argmax). When the program also contains the backward of a max pooling (max_pool_grad or
max_pool_select on the same input), the forward kernel records each window's argmax in a scratch
buffer and the backward kernels read it instead of searching the window again.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from ..kernelgen.irutil import (
    I1,
    I64,
    const,
    entry_alloca,
    i64,
    is_float_type,
    load,
    loops,
    memset_zero,
    store,
)
from ..kernelgen.program import KernelContext
from ..kernelgen.registry import lowering


def _windows(ctx: KernelContext, x_node, out_spatial):
    """Loop over (n*c, output position); yields (plane index, out flat index, window walker)."""
    b = ctx.b
    a = ctx.node.attrs
    kernel, stride, padding = a["kernel"], a["stride"], a["padding"]
    shape = ctx.shape(x_node)
    planes = b.mul(shape[0], shape[1])
    in_sp = shape[2:]
    return planes, in_sp, [i64(k) for k in kernel], [i64(s) for s in stride], \
        [i64(p) for p in padding], list(out_spatial)


def _plane_size(b, dims):
    acc: ir.Value = i64(1)
    for d in dims:
        acc = b.mul(acc, d)
    return acc


def _iterate(ctx, x_node, out_spatial, body):
    """body(plane, oflat, in_plane_base_index, walk) where walk(fn) visits the window:
    fn(flat index in the input plane, inside?)."""
    b = ctx.b
    planes, in_sp, kernel, stride, padding, out_sp = _windows(ctx, x_node, out_spatial)
    in_plane = _plane_size(b, in_sp)
    out_plane = _plane_size(b, out_sp)
    with loops(b, [planes] + out_sp, "p") as idx:
        plane, os = idx[0], idx[1:]
        oflat: ir.Value = i64(0)
        for d, o in zip(out_sp, os):
            oflat = b.add(b.mul(oflat, d), o)

        def walk(fn):
            with loops(b, kernel, "k") as ks:
                flat: ir.Value = i64(0)
                inside = ir.Constant(I1, 1)  # stays the constant true without padding
                for d, (o, k) in enumerate(zip(os, ks)):
                    p = b.add(b.mul(o, stride[d]), k)
                    if int(padding[d].constant):
                        p = b.sub(p, padding[d])
                        ok = b.and_(b.icmp_signed(">=", p, i64(0)),
                                    b.icmp_signed("<", p, in_sp[d]))
                        inside = b.and_(inside, ok)
                        p = b.select(ok, p, i64(0))
                    flat = b.add(b.mul(flat, in_sp[d]), p)
                fn(flat, inside)

        body(plane, b.add(b.mul(plane, out_plane), oflat), b.mul(plane, in_plane), walk)


def _argmax_key(node):
    a = node.attrs
    return ("maxpool", node.inputs[0].uid, a["kernel"], a["stride"], a["padding"])


def _argmax_window(ctx, x_ptr, ty, base, walk):
    """(max value, flat index in the plane) of one window."""
    b = ctx.b
    best = entry_alloca(b, ty, "best")
    where = entry_alloca(b, I64, "where")
    b.store(const(ty, 0), best)
    b.store(i64(-1), where)

    def visit(flat, inside):
        v = load(b, x_ptr, ty, b.add(base, flat))
        cur = b.load(best, typ=ty)
        first = b.icmp_signed("<", b.load(where, typ=I64), i64(0))
        if is_float_type(ty):
            bigger = b.or_(b.fcmp_ordered(">", v, cur), b.and_(
                b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", cur, cur)))
        else:
            bigger = b.icmp_signed(">", v, cur)
        take = b.and_(inside, b.or_(first, bigger))
        b.store(b.select(take, v, cur), best)
        b.store(b.select(take, flat, b.load(where, typ=I64)), where)

    walk(visit)
    return b.load(best, typ=ty), b.load(where, typ=I64)


def _needs_argmax(ctx: KernelContext) -> bool:
    key = _argmax_key(ctx.node)
    return any(n.op.name in ("max_pool_grad", "max_pool_select") and _argmax_key(n) == key
               for n in ctx.gen.program.nodes)


@lowering("max_pool", target="llvm")
def max_pool(ctx: KernelContext) -> None:
    b = ctx.b
    (x,) = ctx.node.inputs
    ty = ctx.ty()
    record = None
    if _needs_argmax(ctx):
        from graphc.ir.shapes import prod

        slot, _ = ctx.shared_scratch(_argmax_key(ctx.node), prod(ctx.node.shape) * 8)
        record = ctx.slot_ptr(slot, "argmax")

    def body(plane, oflat, base, walk):
        value, where = _argmax_window(ctx, ctx.in_ptr(0), ty, base, walk)
        store(b, value, ctx.out_ptr, ty, oflat)
        if record is not None:
            store(b, where, record, I64, oflat)

    _iterate(ctx, x, ctx.shape()[2:], body)


def _recorded_or_search(ctx, x, ty, g_node_shape):
    """A function giving each window's argmax: from the forward's record, or searched now."""
    key = _argmax_key(ctx.node)
    if key in ctx.gen.shared:
        record = ctx.slot_ptr(ctx.gen.shared[key], "argmax")
        return lambda base, oflat, walk: load(ctx.b, record, I64, oflat)
    return lambda base, oflat, walk: _argmax_window(ctx, ctx.in_ptr(0), ty, base, walk)[1]


@lowering("max_pool_grad", target="llvm")
def max_pool_grad(ctx: KernelContext) -> None:
    b = ctx.b
    x, g = ctx.node.inputs
    ty = ctx.ty()
    find = _recorded_or_search(ctx, x, ctx.ty(x), g.shape)
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())

    def body(plane, oflat, base, walk):
        k = b.add(base, find(base, oflat, walk))
        cur = load(b, ctx.out_ptr, ty, k)
        store(b, b.fadd(cur, load(b, ctx.in_ptr(1), ty, oflat)), ctx.out_ptr, ty, k)

    _iterate(ctx, x, ctx.shape(g)[2:], body)


@lowering("max_pool_select", target="llvm")
def max_pool_select(ctx: KernelContext) -> None:
    b = ctx.b
    x, h = ctx.node.inputs
    ty = ctx.ty()
    find = _recorded_or_search(ctx, x, ctx.ty(x), ctx.node.shape)

    def body(plane, oflat, base, walk):
        k = b.add(base, find(base, oflat, walk))
        store(b, load(b, ctx.in_ptr(1), ty, k), ctx.out_ptr, ty, oflat)

    _iterate(ctx, x, ctx.shape()[2:], body)


@lowering("avg_pool", target="llvm")
def avg_pool(ctx: KernelContext) -> None:
    b = ctx.b
    (x,) = ctx.node.inputs
    ty = ctx.ty()
    scale = const(ty, 1.0 / float(np.prod(ctx.node.attrs["kernel"])))
    total = entry_alloca(b, ty, "total")

    def body(plane, oflat, base, walk):
        b.store(const(ty, 0), total)

        def add(flat, inside):
            v = load(b, ctx.in_ptr(0), ty, b.add(base, flat))
            cur = b.load(total, typ=ty)
            b.store(b.select(inside, b.fadd(cur, v), cur), total)

        walk(add)
        store(b, b.fmul(b.load(total, typ=ty), scale), ctx.out_ptr, ty, oflat)

    _iterate(ctx, x, ctx.shape()[2:], body)


@lowering("avg_pool_grad", target="llvm")
def avg_pool_grad(ctx: KernelContext) -> None:
    b = ctx.b
    (g,) = ctx.node.inputs
    ty = ctx.ty()
    scale = const(ty, 1.0 / float(np.prod(ctx.node.attrs["kernel"])))
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())

    def body(plane, oflat, base, walk):
        share = b.fmul(load(b, ctx.in_ptr(0), ty, oflat), scale)

        def spread(flat, inside):
            with b.if_then(inside):
                k = b.add(base, flat)
                store(b, b.fadd(load(b, ctx.out_ptr, ty, k), share), ctx.out_ptr, ty, k)

        walk(spread)

    _iterate(ctx, ctx.node, ctx.shape(g)[2:], body)
