"""Data-movement kernels, all one strided copy: reshape, transpose, broadcast_to, slice,
unslice, pad and concat differ only in the strides and offsets of source and destination."""

from __future__ import annotations

from collections.abc import Sequence

from llvmlite import ir

from ..kernelgen.irutil import (
    contiguous_strides,
    i64,
    linear_index,
    load,
    loops,
    memcpy,
    memset_zero,
    store,
)
from ..kernelgen.program import KernelContext
from ..kernelgen.registry import lowering


def strided_copy(ctx: KernelContext, dims: Sequence[ir.Value], dst: ir.Value,
                 dst_strides: Sequence[ir.Value], src: ir.Value, src_strides: Sequence[ir.Value],
                 dst_offset: ir.Value | None = None, src_offset: ir.Value | None = None) -> None:
    """dst[dst_offset + i·dst_strides] = src[src_offset + i·src_strides] for every index i."""
    b, ty = ctx.b, ctx.ty()
    with loops(b, list(dims), "c") as idx:
        value = load(b, src, ty, linear_index(b, idx, src_strides, src_offset))
        store(b, value, dst, ty, linear_index(b, idx, dst_strides, dst_offset))


def _offset(b: ir.IRBuilder, starts: Sequence[ir.Value], strides: Sequence[ir.Value]):
    return linear_index(b, list(starts), list(strides))


@lowering("reshape", target="llvm")
def reshape(ctx: KernelContext) -> None:
    (x,) = ctx.node.inputs
    if not ctx.same_buffer(x, ctx.node):  # usually an alias of its input: nothing to do
        memcpy(ctx.b, ctx.module, ctx.out_ptr, ctx.in_ptr(0), ctx.nbytes())


@lowering("transpose", target="llvm")
def transpose(ctx: KernelContext) -> None:
    (x,) = ctx.node.inputs
    b = ctx.b
    in_strides = contiguous_strides(b, ctx.shape(x))
    axes = ctx.node.attrs["axes"]
    strided_copy(ctx, ctx.shape(), ctx.out_ptr, contiguous_strides(b, ctx.shape()),
                 ctx.in_ptr(0), [in_strides[a] for a in axes])


@lowering("broadcast_to", target="llvm")
def broadcast_to(ctx: KernelContext) -> None:
    (x,) = ctx.node.inputs
    b = ctx.b
    out_shape = ctx.node.shape
    in_strides = contiguous_strides(b, ctx.shape(x))
    lead = len(out_shape) - x.ndim
    src_strides = []
    for a, d in enumerate(out_shape):
        j = a - lead
        stretched = j < 0 or (x.shape[j] == 1 and d != 1)
        src_strides.append(i64(0) if stretched else in_strides[j])
    strided_copy(ctx, ctx.shape(), ctx.out_ptr, contiguous_strides(b, ctx.shape()),
                 ctx.in_ptr(0), src_strides)


@lowering("slice", target="llvm")
def slice_(ctx: KernelContext) -> None:
    (x,) = ctx.node.inputs
    b, a = ctx.b, ctx.node.attrs
    in_strides = contiguous_strides(b, ctx.shape(x))
    steps = ctx.dims(a["steps"])
    src_strides = [s if _is_one(st) else b.mul(s, st) for s, st in zip(in_strides, steps)]
    strided_copy(ctx, ctx.shape(), ctx.out_ptr, contiguous_strides(b, ctx.shape()),
                 ctx.in_ptr(0), src_strides, src_offset=_offset(b, ctx.dims(a["starts"]),
                                                                in_strides))


@lowering("unslice", target="llvm")
def unslice(ctx: KernelContext) -> None:
    (g,) = ctx.node.inputs
    b, a = ctx.b, ctx.node.attrs
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())
    out_strides = contiguous_strides(b, ctx.shape())
    steps = ctx.dims(a["steps"])
    dst_strides = [s if _is_one(st) else b.mul(s, st) for s, st in zip(out_strides, steps)]
    strided_copy(ctx, ctx.shape(g), ctx.out_ptr, dst_strides, ctx.in_ptr(0),
                 contiguous_strides(b, ctx.shape(g)),
                 dst_offset=_offset(b, ctx.dims(a["starts"]), out_strides))


@lowering("pad", target="llvm")
def pad(ctx: KernelContext) -> None:
    (x,) = ctx.node.inputs
    b = ctx.b
    memset_zero(b, ctx.module, ctx.out_ptr, ctx.nbytes())
    out_strides = contiguous_strides(b, ctx.shape())
    lows = [i64(lo) for lo, _ in ctx.node.attrs["widths"]]
    strided_copy(ctx, ctx.shape(x), ctx.out_ptr, out_strides, ctx.in_ptr(0),
                 contiguous_strides(b, ctx.shape(x)), dst_offset=_offset(b, lows, out_strides))


@lowering("concat", target="llvm")
def concat(ctx: KernelContext) -> None:
    b = ctx.b
    axis = ctx.node.attrs["axis"]
    out_strides = contiguous_strides(b, ctx.shape())
    offset: ir.Value = i64(0)
    for k, x in enumerate(ctx.node.inputs):
        shape = ctx.shape(x)
        strided_copy(ctx, shape, ctx.out_ptr, out_strides, ctx.in_ptr(k),
                     contiguous_strides(b, shape), dst_offset=b.mul(offset, out_strides[axis]))
        offset = b.add(offset, shape[axis])


def _is_one(v: ir.Value) -> bool:
    return isinstance(v, ir.Constant) and int(v.constant) == 1
