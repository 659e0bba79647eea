"""Reductions (sum, max, min, argmax, logsumexp), numel, and softmax/log_softmax.

sum/max/min walk the input in memory order and accumulate into the output, so reducing the
batch axis of (N, C) reads rows contiguously (the inner loop vectorizes); when the innermost
axes are reduced, a register accumulator runs over them (float sums carry the `reassoc` flag so
LLVM may vectorize them: results differ from NumPy's pairwise sums by rounding only). The row
operations (logsumexp, softmax, argmax) view the input as (outer, reduced, inner).
"""

from __future__ import annotations

import contextlib

from llvmlite import ir

from ..kernelgen.irutil import (
    I64,
    const,
    entry_alloca,
    float_intrinsic,
    i64,
    is_float_type,
    load,
    loop,
    loops,
    product,
    store,
)
from ..kernelgen.program import KernelContext
from ..kernelgen.reductions import combine, identity
from ..kernelgen.registry import lowering


def _runs(shape_len: int, axes) -> list[tuple[list[int], bool]]:
    """Consecutive axes grouped by reduced/kept: [(axes, reduced?)]."""
    runs: list[tuple[list[int], bool]] = []
    for a in range(shape_len):
        red = a in axes
        if runs and runs[-1][1] == red:
            runs[-1][0].append(a)
        else:
            runs.append(([a], red))
    return runs


@lowering("sum", "max", "min", target="llvm")
def reduce(ctx: KernelContext) -> None:
    node, b = ctx.node, ctx.b
    (x,) = node.inputs
    op = node.op.name
    ty = ctx.ty()
    axes = set(node.attrs["axes"])
    runs = _runs(x.ndim, axes)
    shape = ctx.shape(x)
    sizes = [product(b, [shape[a] for a in axes_]) for axes_, _ in runs]
    # output strides per kept run (contiguous in kept-run order)
    kept = [k for k, (_, red) in enumerate(runs) if not red]
    out_stride = {}
    acc_s: ir.Value = i64(1)
    for k in reversed(kept):
        out_stride[k] = acc_s
        acc_s = product(b, [acc_s, sizes[k]])
    n_out = acc_s
    out, src = ctx.out_ptr, ctx.in_ptr(0)
    with loop(b, n_out, "init") as i:
        store(b, identity(op, ty), out, ty, i)
    inner_reduced = bool(runs) and runs[-1][1]
    outer_sizes = sizes[:-1] if inner_reduced else sizes
    with loops(b, outer_sizes, "r") as idx:
        # input offset of the start of this iteration, output offset of its kept coordinates
        in_off: ir.Value = i64(0)
        out_off: ir.Value = i64(0)
        for k, i in enumerate(idx):
            in_off = b.add(b.mul(in_off, sizes[k]), i)
            if not runs[k][1]:
                out_off = b.add(out_off, b.mul(i, out_stride[k]))
        if inner_reduced:
            count = sizes[-1]
            base = b.mul(in_off, count)
            start = load(b, out, ty, out_off)
            pre = b.block
            header = b.append_basic_block("acc.header")
            body = b.append_basic_block("acc.body")
            done = b.append_basic_block("acc.end")
            b.branch(header)
            b.position_at_end(header)
            j = b.phi(I64, name="j")
            acc = b.phi(ty, name="acc")
            j.add_incoming(i64(0), pre)
            acc.add_incoming(start, pre)
            b.cbranch(b.icmp_signed("<", j, count), body, done)
            b.position_at_end(body)
            v = load(b, src, ty, b.add(base, j))
            nxt = combine(b, ctx.module, op, ty, acc, v, reassoc=True)
            j.add_incoming(b.add(j, i64(1)), body)
            acc.add_incoming(nxt, body)
            b.branch(header)
            b.position_at_end(done)
            store(b, acc, out, ty, out_off)
        else:
            v = load(b, src, ty, in_off)
            cur = load(b, out, ty, out_off)
            store(b, combine(b, ctx.module, op, ty, cur, v), out, ty, out_off)





def _rows(ctx: KernelContext, axis: int):
    """(outer, length, inner) sizes of the input around `axis`."""
    (x,) = ctx.node.inputs[:1]
    shape = ctx.shape(x) or [i64(1)]  # a 0-d tensor is one row of one element
    outer = product(ctx.b, shape[:axis])
    inner = product(ctx.b, shape[axis + 1:])
    return outer, shape[axis], inner


@contextlib.contextmanager
def _row_loops(ctx: KernelContext, axis: int):
    """Loops over every row along `axis`; yields (base offset, stride, length) of the row."""
    b = ctx.b
    outer, length, inner = _rows(ctx, axis)
    with loops(b, [outer, inner], "row") as (o, i):
        yield b.add(b.mul(b.mul(o, length), inner), i), inner, length


def _row_max(ctx, b, src, ty, base, stride, length):
    m = _fold_row(ctx, b, src, ty, base, stride, length, identity("max", ty), "max")
    # an all -inf row (or an empty one): subtract 0 instead, as NumPy's reference does
    finite = b.fcmp_ordered("<", ctx.b.call(float_intrinsic(ctx.module, "fabs", ty), [m]),
                            ir.Constant(ty, float("inf")))
    return b.select(finite, m, const(ty, 0))


def _fold_row(ctx, b, src, ty, base, stride, length, init, op, transform=None):
    pre = b.block
    header = b.append_basic_block("fold.header")
    body = b.append_basic_block("fold.body")
    done = b.append_basic_block("fold.end")
    b.branch(header)
    b.position_at_end(header)
    j = b.phi(I64, name="l")
    acc = b.phi(ty, name="acc")
    j.add_incoming(i64(0), pre)
    acc.add_incoming(init, pre)
    b.cbranch(b.icmp_signed("<", j, length), body, done)
    b.position_at_end(body)
    v = load(b, src, ty, b.add(base, b.mul(j, stride)))
    if transform is not None:
        v = transform(v)
    nxt = combine(b, ctx.module, op, ty, acc, v, reassoc=True)
    j.add_incoming(b.add(j, i64(1)), b.block)
    acc.add_incoming(nxt, b.block)
    b.branch(header)
    b.position_at_end(done)
    return acc


@lowering("softmax", "log_softmax", target="llvm")
def softmax(ctx: KernelContext) -> None:
    b, ty = ctx.b, ctx.ty()
    axis = ctx.node.attrs["axis"]
    src, out = ctx.in_ptr(0), ctx.out_ptr
    log = ctx.node.op.name == "log_softmax"
    with _row_loops(ctx, axis) as (base, stride, length):
        m = _row_max(ctx, b, src, ty, base, stride, length)
        total = _fold_row(ctx, b, src, ty, base, stride, length, const(ty, 0), "sum",
                          lambda v: ctx.math(b, "exp", b.fsub(v, m), ty))
        if log:  # (x - max) - log(sum): x - (max + log(sum)) loses x's digits at 1e12
            log_total = ctx.math(b, "log", total, ty)
            with loop(b, length, "w") as j:
                k = b.add(base, b.mul(j, stride))
                shifted = b.fsub(load(b, src, ty, k), m)
                store(b, b.fsub(shifted, log_total), out, ty, k)
        else:
            inv = b.fdiv(const(ty, 1), total)
            with loop(b, length, "w") as j:
                k = b.add(base, b.mul(j, stride))
                e = ctx.math(b, "exp", b.fsub(load(b, src, ty, k), m), ty)
                store(b, b.fmul(e, inv), out, ty, k)


@lowering("logsumexp", target="llvm")
def logsumexp(ctx: KernelContext) -> None:
    b, ty = ctx.b, ctx.ty()
    (x,) = ctx.node.inputs
    axes = sorted(ctx.node.attrs["axes"])
    src, out = ctx.in_ptr(0), ctx.out_ptr
    shape = ctx.shape(x)
    if not axes or axes == list(range(axes[0], axes[-1] + 1)):  # one block of reduced axes
        first, last = (axes[0], axes[-1]) if axes else (len(shape), len(shape) - 1)
        outer = product(b, shape[:first])  # (no axes: every element is a row of one)
        length = product(b, shape[first: last + 1])
        inner = product(b, shape[last + 1:])
        with loops(b, [outer, inner], "row") as (o, i):
            base = b.add(b.mul(b.mul(o, length), inner), i)
            m = _row_max(ctx, b, src, ty, base, inner, length)
            total = _fold_row(ctx, b, src, ty, base, inner, length, const(ty, 0), "sum",
                              lambda v: ctx.math(b, "exp", b.fsub(v, m), ty))
            store(b, b.fadd(m, ctx.math(b, "log", total, ty)), out, ty, b.add(b.mul(o, inner), i))
        return
    _logsumexp_general(ctx, axes, shape, src, out, ty)


def _logsumexp_general(ctx, axes, shape, src, out, ty) -> None:
    """Reduced axes that are not adjacent: two accumulating passes in memory order."""
    b = ctx.b
    strides, acc = [], i64(1)
    for d in reversed(shape):
        strides.append(acc)
        acc = product(b, [acc, d])
    strides.reverse()
    kept = [a for a in range(len(shape)) if a not in axes]
    out_strides, acc = {}, i64(1)
    for a in reversed(kept):
        out_strides[a] = acc
        acc = product(b, [acc, shape[a]])
    n_out = acc
    scratch = ctx.scratch(_out_bytes(ctx), "max")
    with loop(b, n_out, "init") as i:
        store(b, ir.Constant(ty, float("-inf")), scratch, ty, i)
        store(b, const(ty, 0), out, ty, i)

    def walk(fn):
        with loops(b, shape, "e") as idx:
            k = _dot(b, idx, strides)
            o = _dot(b, [idx[a] for a in kept], [out_strides[a] for a in kept])
            fn(load(b, src, ty, k), o)

    walk(lambda v, o: store(b, combine(b, ctx.module, "max", ty, load(b, scratch, ty, o), v),
                            scratch, ty, o))
    with loop(b, n_out, "fix") as i:  # an all -inf row subtracts 0 instead
        m = load(b, scratch, ty, i)
        finite = b.fcmp_ordered("<", b.call(float_intrinsic(ctx.module, "fabs", ty), [m]),
                                ir.Constant(ty, float("inf")))
        store(b, b.select(finite, m, const(ty, 0)), scratch, ty, i)
    walk(lambda v, o: store(b, b.fadd(load(b, out, ty, o), ctx.math(
        b, "exp", b.fsub(v, load(b, scratch, ty, o)), ty)), out, ty, o))
    with loop(b, n_out, "log") as i:
        store(b, b.fadd(load(b, scratch, ty, i), ctx.math(b, "log", load(b, out, ty, i), ty)),
              out, ty, i)


def _out_bytes(ctx):
    from graphc.ir.shapes import prod

    return prod(ctx.node.shape) * ctx.node.dtype.itemsize if ctx.node.shape else \
        ctx.node.dtype.itemsize


def _dot(b, idx, strides) -> ir.Value:
    out: ir.Value = i64(0)
    for i, s in zip(idx, strides):
        out = b.add(out, b.mul(i, s))
    return out


@lowering("argmax", target="llvm")
def argmax(ctx: KernelContext) -> None:
    b = ctx.b
    (x,) = ctx.node.inputs
    ty = ctx.ty(x)
    axis = ctx.node.attrs["axis"]
    src, out = ctx.in_ptr(0), ctx.out_ptr
    outer, length, inner = _rows(ctx, axis)
    with loops(b, [outer, inner], "row") as (o, i):
        base = b.add(b.mul(b.mul(o, length), inner), i)
        best_v = entry_alloca(b, ty, "best")
        best_i = entry_alloca(b, I64, "best_index")
        b.store(load(b, src, ty, base), best_v)
        b.store(i64(0), best_i)
        with loop(b, length, "l", start=i64(1)) as j:
            v = load(b, src, ty, b.add(base, b.mul(j, inner)))
            cur = b.load(best_v, typ=ty)
            if is_float_type(ty):  # first maximum; the first NaN wins, as numpy.argmax
                better = b.or_(b.fcmp_ordered(">", v, cur), b.and_(
                    b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", cur, cur)))
            else:
                better = b.icmp_signed(">", v, cur)
            b.store(b.select(better, v, cur), best_v)
            b.store(b.select(better, j, b.load(best_i, typ=I64)), best_i)
        store(b, b.load(best_i, typ=I64), out, I64, b.add(b.mul(o, inner), i))

