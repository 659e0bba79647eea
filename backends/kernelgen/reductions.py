"""Reductions' identities and combiners, shared by every target: sum, and max/min that
propagate NaN (as numpy.max)."""

from __future__ import annotations

from llvmlite import ir

from .irutil import F64, const, entry_alloca, float_intrinsic, i64, is_float_type, loop

__all__ = ["combine", "flat_reduce", "identity", "range_reduce"]

#: A float sum over a flat run of terms adds them up in blocks of this many (vectorized, in
#: the sum's type: a few dozen terms a lane), and the blocks' sums in float64. One running
#: float32 sum a lane drifted with the length: 2^22 squares summed to 5.5e-5 of the exact
#: value over a symbolic batch (7e-6 over a known one) where NumPy's pairwise sum is at
#: 1e-8; the documented tolerance is 2e-5. A fixed rule of the count: the same bits on any
#: machine and thread count.
SUM_BLOCK = 1024


def identity(op: str, ty: ir.Type) -> ir.Constant:
    if op == "sum":
        return const(ty, 0)
    if is_float_type(ty):
        return ir.Constant(ty, float("-inf") if op == "max" else float("inf"))
    if ty.width == 1:  # bool: False < True
        return ir.Constant(ty, 0 if op == "max" else 1)
    bits = ty.width
    return ir.Constant(ty, -(1 << (bits - 1)) if op == "max" else (1 << (bits - 1)) - 1)


def greater(b: ir.IRBuilder, op: str, x, y):
    """``x > y`` (op "<": ``x < y``) of two integers of the same type: signed, but a bool
    (i1) unsigned, since as a signed 1-bit number True is -1 (max over a mask was False)."""
    if x.type.width == 1:
        return b.icmp_unsigned(op, x, y)
    return b.icmp_signed(op, x, y)


def combine(b: ir.IRBuilder, module, op: str, ty: ir.Type, acc, v, reassoc: bool = False):
    if op == "sum":
        if is_float_type(ty):
            return b.fadd(acc, v, flags=("reassoc", "nsz") if reassoc else ())
        return b.add(acc, v)
    if is_float_type(ty):  # NaN-propagating, as numpy.max
        name = "maximum" if op == "max" else "minimum"
        return b.call(float_intrinsic(module, name, ty, 2), [acc, v])
    cmp = ">" if op == "max" else "<"
    return b.select(greater(b, cmp, acc, v), acc, v)


def flat_reduce(b: ir.IRBuilder, module, op: str, ty: ir.Type, count: ir.Value, term,
                name: str = "rf") -> ir.Value:
    """`op` over ``term(f)`` (a value of `ty`) for f in [0, count): one vectorized loop, and
    for a float sum, blocks of SUM_BLOCK terms whose sums add up in float64."""
    short = isinstance(count, ir.Constant) and int(count.constant) <= SUM_BLOCK
    if short and op == "sum" and is_float_type(ty):  # (a known count of one block: as is)
        acc = entry_alloca(b, ty, f"{name}.acc")
        b.store(identity(op, ty), acc)
        with loop(b, count, name) as f:
            b.store(combine(b, module, op, ty, b.load(acc, typ=ty), term(f), reassoc=True), acc)
        return b.load(acc, typ=ty)
    out = range_reduce(b, module, op, ty, i64(0), count, term, name)
    return out if out.type == ty else b.fptrunc(out, ty)


def range_reduce(b: ir.IRBuilder, module, op: str, ty: ir.Type, start: ir.Value,
                 end: ir.Value, term, name: str = "rf", unrolled: bool = False) -> ir.Value:
    """`op` over ``term(f)`` for f in [start, end) as `flat_reduce` computes it, but a float
    sum's float64 total is returned as it is: a whole-buffer reduction adds the totals of its
    chunks (kernelgen.host_reductions) before rounding once. `unrolled`: a max or min loop
    LLVM may unroll whatever its count (a whole-buffer chunk's: NaN-propagating maxima on
    one accumulator ran 3x slower than on the several that unrolling gives)."""
    acc = entry_alloca(b, ty, f"{name}.acc")
    if op != "sum" or not is_float_type(ty):
        b.store(identity(op, ty), acc)
        with loop(b, end, name, start=start, any_count=unrolled) as f:
            b.store(combine(b, module, op, ty, b.load(acc, typ=ty), term(f), reassoc=True), acc)
        return b.load(acc, typ=ty)
    total = entry_alloca(b, F64, f"{name}.total")
    b.store(ir.Constant(F64, 0.0), total)
    block = i64(SUM_BLOCK)
    blocks = b.sdiv(b.add(b.sub(end, start), b.sub(block, i64(1))), block)
    with loop(b, blocks, f"{name}.block") as k:
        first = b.add(start, b.mul(k, block))
        last = b.add(first, block)
        last = b.select(b.icmp_signed("<", last, end), last, end)
        b.store(identity(op, ty), acc)
        with loop(b, last, name, start=first) as f:
            b.store(combine(b, module, op, ty, b.load(acc, typ=ty), term(f), reassoc=True), acc)
        part = b.load(acc, typ=ty)
        wide = part if ty == F64 else b.fpext(part, F64)
        b.store(b.fadd(b.load(total, typ=F64), wide), total)
    return b.load(total, typ=F64)
