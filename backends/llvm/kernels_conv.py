"""Convolutions as im2col/col2im around GEMM, one sample at a time.

    conv:             col = im2col(x[n]);           y[n]  = W (Cout x CK) @ col (CK x O)
    conv_transpose:   col = W^T (CK x Cout) @ g[n]; dx[n] = col2im(col)
    conv_weight_grad: col = im2col(x[n]);           dW   += g[n] (Cout x O) @ col^T

C is the input channel count, K the kernel size (product over spatial dims), O the output
positions. The column buffer is per-kernel scratch, reused for every sample. 1x1 kernels with
stride 1 and no padding use the input directly as the column matrix.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.ir.shapes import prod

from ..kernelgen.irutil import const, i64, load, loops, memset_zero, product, store
from ..kernelgen.program import KernelContext
from ..kernelgen.registry import lowering
from .kernels_linalg import gemm


def _geometry(ctx: KernelContext, image_node, kernel, out_spatial):
    a = ctx.node.attrs
    nd = len(kernel)
    return dict(
        nd=nd,
        channels=ctx.dim(image_node.shape[1]),
        in_sp=ctx.shape(image_node)[2:],
        kernel=[i64(k) for k in kernel],
        out_sp=list(out_spatial),
        stride=[i64(s) for s in a["stride"]],
        padding=[i64(p) for p in a["padding"]],
        dilation=[i64(d) for d in a["dilation"]],
    )


def _is_pointwise(kernel, attrs) -> bool:
    return all(k == 1 for k in kernel) and all(s == 1 for s in attrs["stride"]) and \
        all(p == 0 for p in attrs["padding"])


def _walk(ctx: KernelContext, g: dict, fn) -> None:
    """fn(col_index, image_index, inside) for every (channel, kernel offset, output position)."""
    b = ctx.b
    nd = g["nd"]
    K = product(b, g["kernel"])
    O = product(b, g["out_sp"])
    in_strides = []
    acc: ir.Value = i64(1)
    for d in reversed(g["in_sp"]):
        in_strides.append(acc)
        acc = b.mul(acc, d)
    in_strides.reverse()
    plane = acc
    with loops(b, [g["channels"]] + g["kernel"] + g["out_sp"], "w") as idx:
        c, ks, os = idx[0], idx[1: 1 + nd], idx[1 + nd:]
        kflat: ir.Value = i64(0)
        for kd, k in zip(g["kernel"], ks):
            kflat = b.add(b.mul(kflat, kd), k)
        oflat: ir.Value = i64(0)
        for od, o in zip(g["out_sp"], os):
            oflat = b.add(b.mul(oflat, od), o)
        col_index = b.add(b.mul(b.add(b.mul(c, K), kflat), O), oflat)
        inside = None  # None: statically always inside (no padding)
        image_index = b.mul(c, plane)
        for d in range(nd):
            p = b.add(b.mul(os[d], g["stride"][d]), b.mul(ks[d], g["dilation"][d]))
            if int(g["padding"][d].constant):
                p = b.sub(p, g["padding"][d])
                ok = b.and_(b.icmp_signed(">=", p, i64(0)),
                            b.icmp_signed("<", p, g["in_sp"][d]))
                inside = ok if inside is None else b.and_(inside, ok)
                p = b.select(ok, p, i64(0))
            image_index = b.add(image_index, b.mul(p, in_strides[d]))
        fn(col_index, image_index, inside)


def _im2col(ctx: KernelContext, g: dict, image, col, ty) -> None:
    b = ctx.b
    zero = const(ty, 0)

    def copy(col_index, image_index, inside):
        value = load(b, image, ty, image_index)
        if inside is not None:
            value = b.select(inside, value, zero)
        store(b, value, col, ty, col_index)

    _walk(ctx, g, copy)


def _col2im(ctx: KernelContext, g: dict, col, image, ty) -> None:
    b = ctx.b

    def add(col_index, image_index, inside):
        def accumulate():
            cur = load(b, image, ty, image_index)
            store(b, b.fadd(cur, load(b, col, ty, col_index)), image, ty, image_index)

        if inside is None:
            accumulate()
        else:
            with b.if_then(inside):
                accumulate()

    _walk(ctx, g, add)


def _col_bytes(node_channels, kernel, out_spatial, itemsize):
    return prod([node_channels, *kernel, *out_spatial]) * itemsize


def _sample_ptr(b, base, ty, index, size):
    return b.gep(base, [b.mul(index, size)], inbounds=True, source_etype=ty)


@lowering("conv", target="llvm")
def conv(ctx: KernelContext) -> None:
    b, node = ctx.b, ctx.node
    x, w = node.inputs
    ty = ctx.ty()
    kernel = tuple(w.shape[2:])
    g = _geometry(ctx, x, kernel, ctx.shape()[2:])
    n, cout = ctx.dim(x.shape[0]), ctx.dim(w.shape[0])
    ck = b.mul(g["channels"], product(b, g["kernel"]))
    o = product(b, g["out_sp"])
    x_size = b.mul(g["channels"], product(b, g["in_sp"]))
    y_size = b.mul(cout, o)
    pointwise = _is_pointwise(kernel, node.attrs)
    col = None if pointwise else ctx.scratch(
        _col_bytes(x.shape[1], kernel, node.shape[2:], node.dtype.itemsize), "col")
    with loops(b, [n], "n") as (i,):
        xi = _sample_ptr(b, ctx.in_ptr(0), ty, i, x_size)
        if not pointwise:
            _im2col(ctx, g, xi, col, ty)
        gemm(ctx, b, ty, False, False, cout, o, ck, ctx.in_ptr(1), xi if pointwise else col,
             _sample_ptr(b, ctx.out_ptr, ty, i, y_size))


@lowering("conv_transpose", target="llvm")
def conv_transpose(ctx: KernelContext) -> None:
    b, node = ctx.b, ctx.node
    gnode, w = node.inputs
    ty = ctx.ty()
    kernel = tuple(w.shape[2:])
    g = _geometry(ctx, node, kernel, ctx.shape(gnode)[2:])
    n, cout = ctx.dim(gnode.shape[0]), ctx.dim(w.shape[0])
    ck = b.mul(g["channels"], product(b, g["kernel"]))
    o = product(b, g["out_sp"])
    g_size = b.mul(cout, o)
    x_size = b.mul(g["channels"], product(b, g["in_sp"]))
    col = ctx.scratch(_col_bytes(node.shape[1], kernel, gnode.shape[2:], node.dtype.itemsize),
                      "col")
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())
    with loops(b, [n], "n") as (i,):
        gi = _sample_ptr(b, ctx.in_ptr(0), ty, i, g_size)
        gemm(ctx, b, ty, True, False, ck, o, cout, ctx.in_ptr(1), gi, col)
        _col2im(ctx, g, col, _sample_ptr(b, ctx.out_ptr, ty, i, x_size), ty)


@lowering("conv_weight_grad", target="llvm")
def conv_weight_grad(ctx: KernelContext) -> None:
    b, node = ctx.b, ctx.node
    x, gnode = node.inputs
    ty = ctx.ty()
    kernel = node.attrs["kernel"]
    g = _geometry(ctx, x, kernel, ctx.shape(gnode)[2:])
    n, cout = ctx.dim(x.shape[0]), ctx.dim(gnode.shape[1])
    ck = b.mul(g["channels"], product(b, g["kernel"]))
    o = product(b, g["out_sp"])
    x_size = b.mul(g["channels"], product(b, g["in_sp"]))
    g_size = b.mul(cout, o)
    pointwise = _is_pointwise(kernel, node.attrs)
    col = None if pointwise else ctx.scratch(
        _col_bytes(x.shape[1], kernel, gnode.shape[2:], node.dtype.itemsize), "col")
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())
    with loops(b, [n], "n") as (i,):
        xi = _sample_ptr(b, ctx.in_ptr(0), ty, i, x_size)
        if not pointwise:
            _im2col(ctx, g, xi, col, ty)
        gemm(ctx, b, ty, False, True, cout, ck, o, _sample_ptr(b, ctx.in_ptr(1), ty, i, g_size),
             xi if pointwise else col, ctx.out_ptr, accumulate=True)
