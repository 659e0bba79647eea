"""GPU kernels: one thread per output element, over a grid-stride loop.

Every kernel computes an output element from its flat index by reading whatever inputs it
needs (a gather), so no two threads write the same location and no synchronization is needed.
The element computations are the LLVM backend's (element_function, the emitter, Philox);
only the loop structure differs. Backward pooling and col2im are gathers too; scatter_add
is the one kernel that uses atomics.
"""

from __future__ import annotations

from llvmlite import ir

from graphc.ir.node import Node
from graphc.ir.shapes import prod
from graphc.ops import REGISTRY

from ..kernelgen.elementwise import element_function
from ..kernelgen.irutil import (
    I1,
    I64,
    const,
    contiguous_strides,
    convert,
    entry_alloca,
    float_intrinsic,
    i64,
    ir_type,
    is_float_type,
    load,
    loops,
    store,
)
from ..kernelgen.registry import lowering
from .codegen import GpuKernel, GpuNode


def numel(node: Node):
    return prod(node.shape) if node.shape else 1


def unravel(b: ir.IRBuilder, flat: ir.Value, dims: list[ir.Value]) -> list[ir.Value]:
    """Coordinates of a flat (row-major) index."""
    coords = []
    rem = flat
    for d in reversed(dims[1:]):
        coords.append(b.urem(rem, d))
        rem = b.udiv(rem, d)
    coords.append(rem)
    return list(reversed(coords))


def dot(b: ir.IRBuilder, coords, strides) -> ir.Value:
    out: ir.Value = i64(0)
    for c, s in zip(coords, strides):
        out = b.add(out, b.mul(c, s))
    return out


# -- elementwise ------------------------------------------------------------------------------


@lowering(*[name for name, op in REGISTRY.items() if op.is_elementwise], "cast", target="cuda")
def elementwise(site: GpuNode) -> None:
    gen, node, k = site.gen, site.node, site.position
    ctx = GpuKernel(gen, node, k, work=numel(node))
    b = ctx.b
    inputs = list(node.inputs)
    body = element_function(ctx, node)
    out_shape = ctx.shape()
    lead = [len(node.shape) - x.ndim for x in inputs]
    in_strides = [contiguous_strides(b, ctx.shape(x)) for x in inputs]
    with ctx.thread_loop(numel(node)) as i:
        coords = unravel(b, i, out_shape)
        values = []
        for j, x in enumerate(inputs):
            if x.op.name == "constant" and x.attrs["value"].array.ndim == 0:
                v = x.attrs["value"].array.item()
                ty = ir_type(x.dtype)
                values.append(ir.Constant(ty, float(v) if is_float_type(ty) else int(v)))
                continue
            offset: ir.Value = i64(0)
            for a, d in enumerate(x.shape):
                if d == 1 and node.shape[a + lead[j]] != 1:
                    continue  # broadcast along this axis
                offset = b.add(offset, b.mul(coords[a + lead[j]], in_strides[j][a]))
            values.append(load(b, ctx.ptr(x), ir_type(x.dtype), offset))
        store(b, body(b, values), ctx.out_ptr, ctx.ty(), i)
    ctx.finish()


# -- reductions -------------------------------------------------------------------------------


def _reduce_geometry(ctx: GpuKernel, x: Node, axes):
    shape = ctx.shape(x)
    strides = contiguous_strides(ctx.b, shape)
    kept = [a for a in range(x.ndim) if a not in axes]
    reduced = [a for a in range(x.ndim) if a in axes]
    return shape, strides, kept, reduced


def _over_reduced(ctx, shape, strides, reduced, base, fn) -> None:
    """fn(offset) for every element of the reduced axes, starting from `base`."""
    b = ctx.b
    with loops(b, [shape[a] for a in reduced], "r") as idx:
        fn(b.add(base, dot(b, idx, [strides[a] for a in reduced])))











def _finite_or_zero(ctx, m, ty):
    b = ctx.b
    finite = b.fcmp_ordered("<", b.call(float_intrinsic(ctx.module, "fabs", ty), [m]),
                            ir.Constant(ty, float("inf")))
    return b.select(finite, m, const(ty, 0))


def _row_geometry(ctx: GpuKernel, x: Node, axis: int):
    b = ctx.b
    shape = ctx.shape(x) or [i64(1)]  # a 0-d tensor is one row of one element
    outer = ctx.numel_of(shape[:axis])
    inner = ctx.numel_of(shape[axis + 1:])
    return outer, shape[axis], inner, b








# -- indexing, one_hot, random -----------------------------------------------------------------





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









# -- pooling ----------------------------------------------------------------------------------


def _pool_attrs(node: Node):
    a = node.attrs
    return a["kernel"], a["stride"], a["padding"]


def _window(ctx, x: Node, plane_base, out_coords, kernel, stride, padding, fn) -> None:
    """fn(flat position in the input plane, inside?) for each tap of one output window."""
    b = ctx.b
    in_sp = ctx.shape(x)[2:]
    with loops(b, [i64(k) for k in kernel], "k") as ks:
        flat: ir.Value = i64(0)
        inside = ir.Constant(I1, 1)
        for d, (o, kk) in enumerate(zip(out_coords, ks)):
            p = b.sub(b.add(b.mul(o, i64(stride[d])), kk), i64(padding[d]))
            ok = b.and_(b.icmp_signed(">=", p, i64(0)), b.icmp_signed("<", p, in_sp[d]))
            inside = b.and_(inside, ok)
            flat = b.add(b.mul(flat, in_sp[d]), b.select(ok, p, i64(0)))
        fn(flat, inside)


def _window_argmax(ctx, x, ty, plane_base, out_coords, geometry):
    """The flat in-plane position of a window's first maximum (the first NaN wins)."""
    b = ctx.b
    best = entry_alloca(b, ty, "best")
    where = entry_alloca(b, I64, "where")
    b.store(const(ty, 0), best)
    b.store(i64(-1), where)

    def visit(flat, inside):
        v = load(b, ctx.ptr(x), ty, b.add(plane_base, flat))
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

    _window(ctx, x, plane_base, out_coords, *geometry, visit)
    return b.load(best, typ=ty), b.load(where, typ=I64)


def _argmax_key(node: Node):
    kernel, stride, padding = _pool_attrs(node)
    return ("maxpool", node.inputs[0].uid, kernel, stride, padding)





def _covering(b, p, k, s, pad, n_out):
    """[lo, hi) of the output positions whose window (size k, stride s, padding pad) covers p."""
    top = b.add(p, i64(pad))
    hi = b.add(b.sdiv(top, i64(s)), i64(1))
    low_num = b.sub(top, i64(k - 1))
    lo = b.select(b.icmp_signed("<=", low_num, i64(0)), i64(0),
                  b.sdiv(b.add(low_num, i64(s - 1)), i64(s)))
    hi = b.select(b.icmp_signed(">", hi, n_out), n_out, hi)
    return lo, hi


