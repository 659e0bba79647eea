"""Reductions on the host that the plain schedule (a point per output element, its terms
gathered in a register) would leave on one thread, or would read across memory: a whole
buffer reduced to one number (``x.sum()``, a loss's mean), and reductions over leading
axes (``x.sum(axis=0)``, a bias's gradient; ``sum(axis=(0, 2, 3))``, a convolution's).

Both run on every thread of a parallel region when the input is large enough
(`run_parallel`'s rule), and both give the same bits on any thread count:

* **A whole buffer** is cut into chunks whose length is a function of the element count
  only (`chunk_length`), each reduced the way `flat_reduce` reduces a run (a float sum in
  blocks of SUM_BLOCK, their sums in float64) into its own word of a scratch table; one
  thread then combines the words in chunk order. A count that fits one chunk keeps
  `flat_reduce`'s own result, bit for bit.
* **Leading axes** are reduced in the input's memory order, accumulating into the output
  (the inner loop runs along contiguous memory). The threads split the output's first axis:
  each output element still receives its terms in the same order as on one thread.
"""

from __future__ import annotations

import contextlib
import math

import sympy
from llvmlite import ir

from graphc.ops import loops as L

from .irutil import (
    F64,
    I8,
    convert,
    entry_alloca,
    i64,
    is_float_type,
    load,
    loop,
    loops,
    product,
    store,
    unless_empty,
)
from .program import KernelContext
from .reductions import SUM_BLOCK, combine, flat_reduce, identity, range_reduce

#: a whole-buffer reduction's chunks hold at least this many terms (64 of flat_reduce's
#: blocks: a count up to it is one chunk, reduced exactly as flat_reduce reduces it) ...
CHUNK_TERMS = 64 * SUM_BLOCK
#: ... and there are at most this many, so their table is a fixed 2 KiB of scratch
MAX_CHUNKS = 256
#: a reduction over leading axes gives each thread runs of at least this many contiguous
#: input elements (4 KiB of float32)
STRIP_TERMS = 1024


def plain_reduction(nest: L.LoopNest):
    """(op, buffer, input index, reduced bounds, reduced symbols) when the nest is one
    reduction of a loaded buffer whose reduced axes are not all innermost (then memory order
    pays), else None."""
    if nest.lets or nest.checks or nest.inner or len(nest.stores) != 1:
        return None
    value = nest.stores[0].value
    if not isinstance(value, L.Reduce):
        return None
    op, body, where, bounds = L.reduce_parts(value)
    if not isinstance(body, L.Load) or where is not sympy.true or op not in ("sum", "max", "min"):
        return None
    index = body.args[1:]
    reduced = [k for k, _ in bounds]
    if not all(isinstance(i, sympy.Symbol) for i in index) or \
            set(index) != {k for k, _ in nest.domain} | set(reduced):
        return None
    if list(index[len(index) - len(reduced):]) == reduced:
        return None  # innermost: the gather keeps a register accumulator, in memory order too
    return op, body.args[0].name, index, dict(bounds), reduced


def memory_order(ctx: KernelContext, nest: L.LoopNest, buffers: dict, plan,
                 parallel: bool) -> None:
    """out = identity, then one pass over the input in its memory order, combining each
    element into its output position; with `parallel`, in a region whose threads take
    ranges of the output's first axis (`run_parallel` decides at run time whether the
    input is large enough for more than one)."""
    from .nest import _buffers

    op, name, index, bounds, reduced = plan
    extents = {**dict(nest.domain), **bounds}
    first = nest.domain[0][0] if nest.domain else None
    part = ctx.host_part() if parallel and first is not None else None
    if part is None:
        _memory_order_range(ctx, nest, buffers, plan, None)
        return
    # the threads take groups of the first kept axis whose rows of input are STRIP_TERMS
    # long or more: a thread reads runs of contiguous memory (a chunk of 64 of a (4096,
    # 4096) array's columns read 256 bytes a row, and two threads ran no faster than one)
    lo, hi = part.bounds
    pb = part.b
    group = _group(pb, [part.dim(extents[i]) for i in index[index.index(first) + 1:]])
    size = part.dim(extents[first])
    start = pb.mul(lo, group)
    stop = pb.mul(hi, group)
    stop = pb.select(pb.icmp_signed("<", stop, size), stop, size)
    _memory_order_range(part, nest, _buffers(part, nest), plan, (first, start, stop))
    part.finish()
    b = ctx.b
    group = _group(b, [ctx.dim(extents[i]) for i in index[index.index(first) + 1:]])
    size = ctx.dim(extents[first])
    groups = b.sdiv(b.add(size, b.sub(group, i64(1))), group)
    # the region's points: every input element (counted by groups of the split axis)
    ctx.run_parallel(part, [groups, group] + [ctx.dim(extents[i]) for i in index
                                              if i != first])


def _group(b: ir.IRBuilder, after: list) -> ir.Value:
    """How many consecutive indices of the split axis a thread takes at least: enough for
    STRIP_TERMS contiguous input elements (the axes after it span `after`)."""
    span = product(b, after) if after else i64(1)
    span = b.select(b.icmp_signed(">", span, i64(0)), span, i64(1))
    group = b.sdiv(b.add(span, i64(STRIP_TERMS - 1)), span)
    return group


def _memory_order_range(ctx: KernelContext, nest: L.LoopNest, buffers: dict, plan,
                        split) -> None:
    """The memory-order pass over the whole input, or, with `split` = (axis, lo, hi), over
    the part of it whose `axis` index lies in [lo, hi)."""
    from .nest import PointEmitter

    op, name, index, bounds, reduced = plan
    b, store_ = ctx.b, nest.stores[0]
    out, src = buffers[store_.buffer], buffers[name]
    extents = {**dict(nest.domain), **bounds}

    @contextlib.contextmanager
    def nested(axes, prefix):
        """Loops over `axes` in order (the split axis over its range); yields the indices."""
        counts = [ctx.dim(extents[a]) for a in axes]
        if split is None or split[0] not in axes:
            with loops(b, counts, prefix) as idx:
                yield dict(zip(axes, idx))
            return
        axis, lo, hi = split
        with contextlib.ExitStack() as stack:
            # nothing runs when an inner loop is empty (the split axis's range too): the
            # outer loops would walk 2**40 empty rows of a (2**40, 0, 3) array
            inner = [b.sub(hi, lo) if a == axis else c for a, c in zip(axes, counts)][1:]
            if inner:
                stack.enter_context(unless_empty(b, inner))
            env = {}
            for k, (a, c) in enumerate(zip(axes, counts)):
                start, end = (lo, hi) if a == axis else (None, c)
                env[a] = stack.enter_context(loop(b, end, f"{prefix}{k}", start=start))
            yield env

    domain = [k for k, _ in nest.domain]
    with nested(domain, "z") as env:
        point = PointEmitter(ctx, buffers, env)
        store(b, identity(op, out.ty), out.ptr, out.ty,
              out.offset(b, [point.index(i) for i in store_.index]))
    # the innermost run of reduced axes (contiguous memory) adds up in a register first
    tail = 0
    while tail < len(index) and index[len(index) - 1 - tail] in set(reduced):
        tail += 1
    outer, inner = list(index[:len(index) - tail]), list(index[len(index) - tail:])
    # no pass over an empty input: the outer loops would walk the 2**40 rows of a
    # (2**40, 3, 0) array around an empty inner sum (its output is the identity, above)
    sizes = [ctx.dim(extents[i]) for i in index]
    if split is not None:
        axis, lo, hi = split
        sizes = [b.sub(hi, lo) if i == axis else c for i, c in zip(index, sizes)]
    with unless_empty(b, sizes), nested(outer, "m") as env:
        point = PointEmitter(ctx, buffers, env)
        at = out.offset(b, [point.index(i) for i in store_.index])
        idx = [env[i] for i in outer]
        if inner:  # one flat loop over the contiguous tail
            base = src.offset(b, idx + [i64(0)] * len(inner))
            value = flat_reduce(b, ctx.module, op, out.ty,
                                product(b, [ctx.dim(extents[i]) for i in inner]),
                                lambda f: load(b, src.ptr, src.ty, b.add(base, f)), "f")
        else:
            value = load(b, src.ptr, src.ty, src.offset(b, idx))
        store(b, combine(b, ctx.module, op, out.ty, load(b, out.ptr, out.ty, at), value),
              out.ptr, out.ty, at)


def whole_reduction(nest: L.LoopNest, buffers: dict):
    """(op, the input buffer's name, reduced extents) when the nest reduces a whole buffer,
    every axis in its memory order, to one number (its terms one flat run), else None."""
    if nest.domain or nest.lets or nest.checks or nest.inner or nest.zero or \
            len(nest.stores) != 1:
        return None
    st = nest.stores[0]
    if st.where is not sympy.true or st.accumulate or not isinstance(st.value, L.Reduce):
        return None
    op, body, where, bounds = L.reduce_parts(st.value)
    if op not in ("sum", "max", "min") or where is not sympy.true or \
            not isinstance(body, L.Load):
        return None
    src = buffers[body.args[0].name]
    if src.ty == I8 or list(body.args[1:]) != [k for k, _ in bounds] or \
            list(src.shape) != [n for _, n in bounds]:
        return None
    return op, body.args[0].name, [n for _, n in bounds]


def fits_one_chunk(plan) -> bool:
    """A whole reduction whose count is known and fits one chunk: `flat_reduce` as it is
    (the chunked schedule would give the same bits, with a second function to compile)."""
    extents = plan[2]
    return all(isinstance(n, (int, sympy.Integer)) for n in extents) and \
        math.prod(int(n) for n in extents) <= CHUNK_TERMS


def chunk_length(b: ir.IRBuilder, count: ir.Value) -> ir.Value:
    """The terms of a chunk: CHUNK_TERMS, or more (whole blocks) where MAX_CHUNKS chunks of
    it would not cover `count`. A function of the count alone."""
    blocks = b.sdiv(b.add(count, i64(SUM_BLOCK - 1)), i64(SUM_BLOCK))
    per = b.sdiv(b.add(blocks, i64(MAX_CHUNKS - 1)), i64(MAX_CHUNKS))
    least = i64(CHUNK_TERMS // SUM_BLOCK)
    per = b.select(b.icmp_signed(">", per, least), per, least)
    return b.mul(per, i64(SUM_BLOCK))


def whole(ctx: KernelContext, nest: L.LoopNest, buffers: dict, plan, parallel: bool) -> None:
    """A whole buffer reduced in chunks, on every thread when `parallel` (else on this one:
    a known count below the parallel bar, the same chunks), the chunks' results then
    combined in order on this thread."""
    from .nest import PointEmitter, _buffers

    op, name, extents = plan
    b, store_ = ctx.b, nest.stores[0]
    out, src = buffers[store_.buffer], buffers[name]
    ty = src.ty
    wide = op == "sum" and is_float_type(ty)  # a chunk's float sum is kept in float64
    word = F64 if wide else ty
    table = ctx.gen.layout.new_slot()
    ctx.gen.layout.scratch[table] = MAX_CHUNKS * 8
    count = product(b, [ctx.dim(n) for n in extents])
    length = chunk_length(b, count)
    chunks = b.sdiv(b.add(count, b.sub(length, i64(1))), length)
    if parallel:
        part = ctx.host_part()
        lo, hi = part.bounds
        _chunks(part, _buffers(part, nest)[name], extents, op, word, table, lo, hi)
        part.finish()
        ctx.run_parallel(part, [chunks, length])
    else:
        _chunks(ctx, src, extents, op, word, table, i64(0), chunks)

    total = entry_alloca(b, word, "chunks.total")
    b.store(ir.Constant(F64, 0.0) if wide else identity(op, ty), total)
    words = ctx.slot_ptr(table, "chunks")
    with loop(b, chunks, "combine") as c:
        b.store(combine(b, ctx.module, op, word, b.load(total, typ=word),
                        load(b, words, word, c)), total)
    value = b.load(total, typ=word)
    if wide and ty != F64:
        value = b.fptrunc(value, ty)
    if value.type != out.ty:
        value = convert(b, value, ty, out.ty)
    point = PointEmitter(ctx, buffers, {})
    store(b, value, out.ptr, out.ty, out.offset(b, [point.index(i) for i in store_.index]))


def _chunks(ctx: KernelContext, src, extents, op: str, word: ir.Type, table: int,
            lo: ir.Value, hi: ir.Value) -> None:
    """Chunks lo to hi of a whole reduction, each into its word of the table."""
    b = ctx.b
    count = product(b, [ctx.dim(n) for n in extents])
    length = chunk_length(b, count)
    words = ctx.slot_ptr(table, "chunks")
    with loop(b, hi, "chunk", start=lo) as c:
        start = b.mul(c, length)
        end = b.add(start, length)
        end = b.select(b.icmp_signed("<", end, count), end, count)
        value = range_reduce(b, ctx.module, op, src.ty, start, end,
                             lambda f: load(b, src.ptr, src.ty, f), "rc", unrolled=True)
        store(b, value, words, word, c)


__all__ = ["CHUNK_TERMS", "MAX_CHUNKS", "chunk_length", "fits_one_chunk", "memory_order",
           "plain_reduction", "whole", "whole_reduction"]
