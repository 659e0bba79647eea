"""scatter_add on the GPU: a thread per element of g, adding it into its row of the output
with an atomic add (rows may repeat: the one kernel that needs atomics). A hand-written
library kernel, as on the host (llvm/kernels_index.py)."""

from __future__ import annotations

from graphc.ir.node import Node
from graphc.ir.shapes import prod

from ..kernelgen.irutil import I64, const, convert, i64, ir_type, load, store
from ..kernelgen.registry import lowering
from .codegen import GpuKernel, GpuNode


def numel(node: Node):
    return prod(node.shape) if node.shape else 1


@lowering("scatter_add", target="cuda")
def scatter_add(site: GpuNode) -> None:
    gen, node, k = site.gen, site.node, site.position
    g, ids = node.inputs
    zero = GpuKernel(gen, node, k, suffix=".zero", work=numel(node))
    ty = zero.ty()
    with zero.thread_loop(numel(node)) as i:
        store(zero.b, const(ty, 0), zero.out_ptr, ty, i)
    zero.finish()
    ctx = GpuKernel(gen, node, k, suffix=".add", work=numel(g))
    b = ctx.b
    width = ctx.numel_of(ctx.shape()[1:])
    rows = ctx.shape()[0]
    id_ty = ir_type(ids.dtype)
    with ctx.thread_loop(numel(g)) as i:
        r, j = b.udiv(i, width), b.urem(i, width)
        row = convert(b, load(b, ctx.ptr(ids), id_ty, r), id_ty, I64)
        ok = b.and_(b.icmp_signed(">=", row, i64(0)), b.icmp_signed("<", row, rows))
        with b.if_else(ok) as (then, otherwise):
            with then:
                target = b.gep(ctx.out_ptr, [b.add(b.mul(row, width), j)], source_etype=ty)
                b.atomic_rmw("fadd", target, load(b, ctx.in_ptr(0), ty, i), "monotonic")
            with otherwise:
                ctx.fail(1, row, rows)
    ctx.finish()
