"""Small helpers for building LLVM IR with llvmlite: types, constants, counted loops."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence

import numpy as np
from llvmlite import ir

I1, I8, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(32), ir.IntType(64)
F32, F64 = ir.FloatType(), ir.DoubleType()
PTR = ir.PointerType()
VOID = ir.VoidType()

_TYPES = {"bool": I8, "int32": I32, "int64": I64, "float32": F32, "float64": F64}


def ir_type(dtype) -> ir.Type:
    """The IR type that stores one element of a NumPy dtype (bool is one byte, as in NumPy)."""
    return _TYPES[np.dtype(dtype).name]


def is_float_type(ty: ir.Type) -> bool:
    return isinstance(ty, (ir.FloatType, ir.DoubleType))


def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, int(v))


def const(ty: ir.Type, v) -> ir.Constant:
    if is_float_type(ty):
        return ir.Constant(ty, float(v))
    return ir.Constant(ty, int(v))


def product(b: ir.IRBuilder, values: Sequence[ir.Value], name: str = "") -> ir.Value:
    """The product of i64 values, folding constants (an empty product is 1)."""
    folded = 1
    dynamic = []
    for v in values:
        if isinstance(v, ir.Constant):
            folded *= int(v.constant)
        else:
            dynamic.append(v)
    out: ir.Value = i64(folded)
    for v in dynamic:
        unit = isinstance(out, ir.Constant) and out.constant == 1
        out = v if unit else b.mul(out, v, name=name)
    return out


def is_const(v: ir.Value, value: int | None = None) -> bool:
    return isinstance(v, ir.Constant) and (value is None or int(v.constant) == value)


class _LoopID(ir.values.MDValue):
    """A loop's metadata node: its first operand is itself (LLVM's LangRef requires it)."""

    def descr(self, buf):
        ops = ", ".join([self.get_reference()] + [o.get_reference() for o in self.operands])
        buf += (f"distinct !{{{ops}}}", "\n")

    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def _no_unroll(module: ir.Module) -> ir.values.MDValue:
    """The module's one loop-ID node asking LLVM not to unroll (shared by every such loop,
    so that kernels that differ only in their buffers still print the same IR)."""
    found = getattr(module, "_graphc_no_unroll", None)
    if found is None:
        opt = module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")])
        found = _LoopID(module, [opt], name=str(len(module.metadata)))
        module._graphc_no_unroll = found
    return found


def _short_row(module: ir.Module, width: int) -> ir.values.MDValue:
    """The module's loop-ID node for a rolled loop vectorized `width` lanes wide (shared by
    every such loop of that width).

    The width is a hint, not a demand: no ``llvm.loop.vectorize.enable``. A forced loop that
    LLVM cannot vectorize makes it print a warning and remarks on the user's terminal (54 of
    240 pooling geometries did, the demo's CNN among them: 16 lines on a cold compile), and
    it gains nothing: where the vectorizer can, it takes the hinted width either way (the
    same vector code for 2x2 poolings of 8 to 32 positions a row), and two geometries that
    failed when forced (3x3 windows, stride 2) are vectorized as a hint."""
    cache = module.__dict__.setdefault("_graphc_short_rows", {})
    if width not in cache:
        items = [module.add_metadata([ir.MetaDataString(module, "llvm.loop.unroll.disable")]),
                 module.add_metadata([ir.MetaDataString(module, "llvm.loop.vectorize.width"),
                                      ir.Constant(ir.IntType(32), width)])]
        cache[width] = _LoopID(module, items, name=str(len(module.metadata)))
    return cache[width]


@contextlib.contextmanager
def loop(b: ir.IRBuilder, count: ir.Value, name: str = "i", start: ir.Value | None = None,
         step: ir.Value | None = None, unroll: bool = True,
         vector_width: int | None = None, any_count: bool = False) -> Iterator[ir.Value]:
    """``for (i = start; i < count; i += step) { body }`` as a canonical loop LLVM can vectorize.

    Yields the induction variable; the builder is left after the loop when the block ends.

    A loop whose count is known only at run time is marked not to be unrolled (it is still
    vectorized and interleaved). Unrolling such a loop adds a remainder loop and run-time
    checks: on the tiny MLP's step it was a third of LLVM's time, and no benchmark step ran
    faster for it (measured side by side, docs/performance.md). Loops of a known count (a pooling
    window, a kernel's taps) keep LLVM's full unrolling, which max pooling needs (9x slower
    without it). ``unroll=False`` marks a loop of known count too (a kernel that is already
    unrolled by hand into register tiles). ``any_count=True`` lets LLVM unroll a loop of a
    run-time count too.
    """
    start = start if start is not None else i64(0)
    step = step if step is not None else i64(1)
    pre = b.block
    header = b.append_basic_block(f"{name}.header")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.end")
    b.branch(header)
    b.position_at_end(header)
    idx = b.phi(I64, name=name)
    idx.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", idx, count), body, done)
    b.position_at_end(body)
    yield idx
    nxt = b.add(idx, step, name=f"{name}.next", flags=["nsw"])
    idx.add_incoming(nxt, b.block)
    latch = b.branch(header)
    if vector_width is not None:
        latch.set_metadata("llvm.loop", _short_row(b.module, vector_width))
    elif not unroll or not (isinstance(count, ir.Constant) or any_count):
        latch.set_metadata("llvm.loop", _no_unroll(b.module))
    b.position_at_end(done)


@contextlib.contextmanager
def loops(b: ir.IRBuilder, counts: Sequence[ir.Value], name: str = "i",
          unroll: bool | Sequence[bool] = True,
          widths: Sequence[int | None] | None = None) -> Iterator[list]:
    """Nested loops over `counts` (outermost first); yields the list of indices. `unroll`
    and `widths` (vector_width): see `loop`; `unroll` one for every loop or one per loop.

    Nothing runs when an inner count is zero, so the outer loops are skipped too: a
    (2**40, 0) array is empty, and its 2**40 empty rows must not be walked."""
    flags = [unroll] * len(counts) if isinstance(unroll, bool) else list(unroll)
    widths = widths or [None] * len(counts)
    with contextlib.ExitStack() as stack:
        stack.enter_context(unless_empty(b, counts[1:]))
        idx = [stack.enter_context(loop(b, c, f"{name}{k}", unroll=u, vector_width=w))
               for k, (c, u, w) in enumerate(zip(counts, flags, widths))]
        yield idx


@contextlib.contextmanager
def unless_empty(b: ir.IRBuilder, counts: Sequence[ir.Value]) -> Iterator[None]:
    """The code emitted inside runs only when none of `counts` is zero: loops around loops
    of these counts would run empty iterations (2**40 of them for a (2**40, 0) array).
    Counts known to be positive need no test."""
    may_be_zero = [c for c in counts if not (isinstance(c, ir.Constant) and int(c.constant) > 0)]
    if not may_be_zero:
        yield
        return
    nonzero = [b.icmp_signed(">", c, ir.Constant(c.type, 0)) for c in may_be_zero]
    with b.if_then(functools.reduce(b.and_, nonzero)):
        yield


def short_row_width(count: ir.Value) -> int | None:
    """The vector width for a rolled loop of `count` iterations known to be under 16: the
    largest power of two that divides it when that is 4 or more (no scalar remainder: a
    row of 12 as three vectors of 4 ran 3x faster than one of 8 and four scalar steps),
    else the largest power of two in it. Left to choose, LLVM's vectorizer takes the widest
    vectors and masks the rest for such a loop, turning its strided loads and stores into
    gathers and scatters (a 2x2 pooling of 24x24 planes, 12 positions a row: 5x slower).

    None for a row of two (see `unrolled_row`): LLVM rewrites a two-trip loop's counter
    into a flag that its vectorizer cannot read, and then reports the hint it could not
    follow on the terminal."""
    if not isinstance(count, ir.Constant) or not 2 < int(count.constant) < 16:
        return None
    n = int(count.constant)
    divides = n & -n
    return divides if divides >= 4 else 1 << (n.bit_length() - 1)


def unrolled_row(count: ir.Value) -> bool:
    """Is a row that a nest asks to keep rolled short enough to unroll instead (two
    iterations at most)? Rolled, it is not vectorized (`short_row_width`); unrolled, its two
    positions are straight-line code."""
    return isinstance(count, ir.Constant) and int(count.constant) <= 2


def linear_index(b: ir.IRBuilder, idx: Sequence[ir.Value], strides: Sequence[ir.Value],
                 base: ir.Value | None = None) -> ir.Value:
    """base + sum(idx[k] * strides[k]), skipping zero strides and folding unit strides."""
    out = base if base is not None else i64(0)
    for i, s in zip(idx, strides):
        if is_const(s, 0):
            continue
        term = i if is_const(s, 1) else b.mul(i, s, flags=["nsw"])
        out = term if is_const(out, 0) else b.add(out, term, flags=["nsw"])
    return out


def contiguous_strides(b: ir.IRBuilder, shape: Sequence[ir.Value]) -> list[ir.Value]:
    """Element strides of a C-contiguous array of this shape."""
    strides: list[ir.Value] = []
    acc: ir.Value = i64(1)
    for d in reversed(shape):
        strides.append(acc)
        acc = product(b, [acc, d])
    return list(reversed(strides))


def element_ptr(b: ir.IRBuilder, base: ir.Value, ty: ir.Type, index: ir.Value,
                name: str = "") -> ir.Value:
    return b.gep(base, [index], inbounds=True, source_etype=ty, name=name)


def load(b: ir.IRBuilder, base: ir.Value, ty: ir.Type, index: ir.Value, name: str = ""):
    return b.load(element_ptr(b, base, ty, index), typ=ty, name=name)


def store(b: ir.IRBuilder, value: ir.Value, base: ir.Value, ty: ir.Type, index: ir.Value):
    b.store(value, element_ptr(b, base, ty, index))


def convert(b: ir.IRBuilder, v: ir.Value, src: ir.Type, dst: ir.Type, src_bool: bool = False
            ) -> ir.Value:
    """Numeric conversion with NumPy's semantics (float -> int truncates; bool is 0/1)."""
    if src == dst:
        return v
    if src == I1:
        return b.uitofp(v, dst) if is_float_type(dst) else b.zext(v, dst)
    if src_bool:  # a NumPy bool byte: any nonzero value is True
        bit = b.icmp_unsigned("!=", v, ir.Constant(src, 0))
        return convert(b, bit, I1, dst)
    if is_float_type(src) and is_float_type(dst):
        return b.fpext(v, dst) if dst == F64 else b.fptrunc(v, dst)
    if is_float_type(src):
        if dst == I8:  # float -> bool
            return b.zext(b.fcmp_unordered("!=", v, ir.Constant(src, 0.0)), I8)
        # NaN, inf and values out of range give the most negative integer, as NumPy gives on
        # x86-64 (fptosi would be poison there, and PTX's cvt gives 0 for NaN)
        limit = float(1 << (dst.width - 1))
        inside = b.and_(b.fcmp_ordered(">=", v, ir.Constant(src, -limit)),
                        b.fcmp_ordered("<", v, ir.Constant(src, limit)))
        safe = b.fptosi(b.select(inside, v, ir.Constant(src, 0.0)), dst)
        return b.select(inside, safe, ir.Constant(dst, -(1 << (dst.width - 1))))
    if is_float_type(dst):
        return b.sitofp(v, dst)
    if dst == I8:  # int -> bool
        return b.zext(b.icmp_signed("!=", v, ir.Constant(src, 0)), I8)
    if dst.width > src.width:
        return b.sext(v, dst)
    return b.trunc(v, dst)


def memcpy(b: ir.IRBuilder, module: ir.Module, dst: ir.Value, src: ir.Value, nbytes: ir.Value):
    fn = module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
    b.call(fn, [dst, src, nbytes, ir.Constant(I1, 0)])


def memset_zero(b: ir.IRBuilder, module: ir.Module, dst: ir.Value, nbytes: ir.Value):
    fn = module.declare_intrinsic("llvm.memset", [PTR, I64])
    b.call(fn, [dst, ir.Constant(I8, 0), nbytes, ir.Constant(I1, 0)])


def entry_alloca(b: ir.IRBuilder, ty: ir.Type, name: str = "") -> ir.Value:
    """A stack slot in the function's entry block (where LLVM promotes it to a register)."""
    with b.goto_entry_block():
        return b.alloca(ty, name=name)


def declare(module: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    """Declare (once) an external function or intrinsic with an explicit signature."""
    existing = module.globals.get(name)
    if existing is not None:
        return existing
    return ir.Function(module, ir.FunctionType(ret, list(args)), name=name)


def vector_fma(module: ir.Module, vec: ir.VectorType) -> ir.Function:
    """llvm.fma on float vectors of type `vec`: one fused multiply-add a lane (the register
    tiles of the GEMM and the direct convolutions)."""
    suffix = "f32" if vec.element == F32 else "f64"
    return declare(module, f"llvm.fma.v{vec.count}{suffix}", vec, [vec] * 3)


def splat(b: ir.IRBuilder, scalar: ir.Value, vec: ir.VectorType) -> ir.Value:
    """A vector of type `vec` with `scalar` in every lane (one broadcast instruction)."""
    undef = ir.Constant(vec, ir.Undefined)
    zeros = ir.Constant(ir.VectorType(I32, vec.count), [0] * vec.count)
    return b.shuffle_vector(b.insert_element(undef, scalar, i64(0)), undef, zeros)


def float_intrinsic(module: ir.Module, name: str, ty: ir.Type, arity: int = 1) -> ir.Function:
    """llvm.<name>.f32/f64 taking `arity` operands of type `ty` (fabs, sqrt, maximum...)."""
    suffix = "f32" if ty == F32 else "f64"
    return declare(module, f"llvm.{name}.{suffix}", ty, [ty] * arity)
