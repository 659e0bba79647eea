"""scatter_add on the host: every row of g added into the output row its id names (rows may
repeat). A hand-written library kernel, as on the GPU (cuda/kernels_index.py, with atomics).

Every id is checked against the table size: an id out of range stops the step with the error
every backend gives, and no update is applied (native code never writes outside a buffer).
"""

from __future__ import annotations

from ..kernelgen.irutil import (
    I64,
    convert,
    i64,
    ir_type,
    load,
    loop,
    memset_zero,
    product,
    store,
)
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
