"""Rendering loop-nest descriptions (graphc/ops/loops.py) into kernels: two schedules of one
description, the same code for every point.

* host (`render_host`): nested counted loops over the domain, the last axis innermost (so the
  vectorizer widens it), inside the node's kernel function;
* GPU (`render_gpu`): one launch per nest, the domain flattened over a grid-stride loop, each
  thread computing whole points (a point's reductions run inside its thread). The CUDA
  emulation runs this same schedule on the host.

`PointEmitter` turns a point's expressions into IR. Every sub-expression has a type: index
arithmetic (loop indices, sizes, integer ids) is i64, values have their buffer's type,
conditions are i1, and numbers take the type of where they are used; a sub-expression of
another type than its parent's is emitted in its own and converted.
"""

from __future__ import annotations

import math

import numpy as np
import sympy
from llvmlite import ir
from sympy.core import relational

from graphc.ir.shapes import prod
from graphc.ops import expr as E
from graphc.ops import loops as L

from .elementwise import element_function
from .emitter import ExprEmitter, costly_calls
from .irutil import (
    F32,
    F64,
    I1,
    I8,
    I32,
    I64,
    const,
    convert,
    entry_alloca,
    float_intrinsic,
    i64,
    ir_type,
    is_float_type,
    load,
    loop,
    loops,
    memset_zero,
    product,
    short_row_width,
    unless_empty,
    unrolled_row,
)
from .philox import philox
from .program import FAILED_INDEX, KernelContext
from .reductions import combine, flat_reduce, greater, identity

__all__ = ["render", "render_gpu", "render_host"]


# -- buffers ---------------------------------------------------------------------------------


class _Buffer:
    """A buffer of a nest as the kernel reaches it: pointer, element type, strides."""

    def __init__(self, ctx: KernelContext, name: str, spec: L.Buf) -> None:
        node = ctx.node
        self.slot = buffer_slot(ctx.gen, node, spec)
        if spec.input is not None:
            src = node.inputs[spec.input]
            self.dtype = src.dtype
            shape = spec.shape if spec.shape is not None else src.shape
            self.ptr = ctx.in_ptr(spec.input)
        elif spec.output:
            self.dtype = node.dtype
            shape = spec.shape if spec.shape is not None else node.shape
            self.ptr = ctx.out_ptr
        else:
            self.dtype = np.dtype(spec.dtype)
            shape = spec.shape
            self.ptr = ctx.slot_ptr(self.slot, f"scratch.{name}")
        self.ty = ir_type(self.dtype)
        self.shape = tuple(shape)
        dims = [ctx.dim(d) for d in shape]
        self.dims = dims
        self.strides: list[ir.Value] = []
        acc: ir.Value = i64(1)
        # in the entry block (before its branch, whichever nest of the kernel this is):
        # ctx.dim and ctx.slot_ptr place themselves there, and must not be nested in this
        with ctx.b.goto_entry_block():
            for d in reversed(dims):
                self.strides.append(acc)
                acc = product(ctx.b, [acc, d])
        self.strides.reverse()

    def offset(self, b: ir.IRBuilder, index: list[ir.Value]) -> ir.Value:
        out: ir.Value = i64(0)
        for i, s in zip(index, self.strides):
            term = i if isinstance(s, ir.Constant) and s.constant == 1 else b.mul(i, s)
            out = term if isinstance(out, ir.Constant) and out.constant == 0 else b.add(out, term)
        return out


def buffer_slot(gen, node, spec: L.Buf) -> int:
    """The slot holding a buffer of a node's description (a scratch buffer's made on first
    use)."""
    if spec.input is not None:
        return gen.layout.slot_of[node.inputs[spec.input].uid]
    if spec.output:
        return gen.layout.slot_of[node.uid]
    shape = spec.shape or ()
    nbytes = (prod(shape) if shape else 1) * np.dtype(spec.dtype).itemsize
    return gen.shared_scratch(spec.scratch, nbytes)[0]


# -- expressions -----------------------------------------------------------------------------

_VALUE_FUNCTIONS = (sympy.exp, sympy.log, sympy.tanh, E.sigmoid, E.softplus, E.log1p,
                    E.expm1)


def _join(a, b):
    """The type of an operation on operands of types a and b (None: a number, untyped)."""
    if a is None:
        return b
    if b is None or a == b:
        return a
    order = [I1, I8, I32, I64, F32, F64]
    return max((a, b), key=order.index)


class PointEmitter:
    """Emits the expressions of one point of a nest (its loop indices bound in `env`)."""

    def __init__(self, ctx: KernelContext, buffers: dict[str, _Buffer], env: dict,
                 extents: dict | None = None) -> None:
        self.ctx = ctx
        self.b = ctx.b
        self.buffers = buffers
        self.env = env
        self.extents = extents or {}  # loop index -> its extent (sympy)
        self._types: dict = {}
        self._emitters: dict = {}
        self._values: dict = {}  # (expr, type) -> value, within this point

    # types ---------------------------------------------------------------------------------
    def type_of(self, e):
        if e in self._types:
            return self._types[e]
        t = self._type(e)
        self._types[e] = t
        return t

    def _type(self, e):
        if isinstance(e, sympy.Symbol):
            return self.env[e].type if e in self.env else I64  # loop indices, sizes, lets
        if e is sympy.true or e is sympy.false or isinstance(
                e, (relational.Relational, sympy.And, sympy.Or, sympy.Not, E.isnan, E.isinf)):
            return I1
        if e.is_Number:
            return None
        if isinstance(e, L.Load):
            ty = self.buffers[e.args[0].name].ty
            return I1 if ty == I8 else ty
        if isinstance(e, L.ArgMax):
            return I64
        if isinstance(e, L.Reduce):
            return self.type_of(L.reduce_parts(e)[1])
        if isinstance(e, L.PhiloxUniform):
            return F64
        if isinstance(e, L.Element):
            ty = ir_type(self.ctx.node.dtype)
            return I1 if ty == I8 else ty
        if isinstance(e, sympy.Piecewise):
            t = None
            for value, _ in e.args:
                t = _join(t, self.type_of(value))
            return t
        t = None
        for a in e.args:
            t = _join(t, self.type_of(a))
        if isinstance(e, _VALUE_FUNCTIONS) and (t is None or not is_float_type(t)):
            t = F64 if t == I64 else _join(t, F32)
        return t

    # emission ------------------------------------------------------------------------------
    def emit(self, e, ty: ir.Type) -> ir.Value:
        """The value of `e` as type `ty`."""
        key = (e, str(ty))
        if key not in self._values:
            own = self.type_of(e)
            if own is None or own == ty or e.is_Number:
                self._values[key] = self._emitter(ty)._emit(e)
            else:
                v = self._emitter(own)._emit(e)
                self._values[key] = convert(self.b, v, own, ty) if v.type != ty else v
        return self._values[key]

    def _emitter(self, ty: ir.Type) -> _TypedEmitter:
        if str(ty) not in self._emitters:
            self._emitters[str(ty)] = _TypedEmitter(self, ty)
        return self._emitters[str(ty)]

    def index(self, e) -> ir.Value:
        return self.emit(sympy.sympify(e), I64)

    def load(self, e) -> ir.Value:
        """An element; an index that may fall outside the buffer is clamped into it first, so
        a load never leaves its buffer (a description guards such a load's value: pad's
        zeros, a window's taps over the edge, a bad id)."""
        buf = self.buffers[e.args[0].name]
        index = []
        for k, i in enumerate(e.args[1:]):
            v = self.index(i)
            if not self._inside(i, buf.shape[k]):
                last = self.b.sub(buf.dims[k], i64(1))
                v = self.b.select(self.b.icmp_unsigned("<", v, buf.dims[k]), v, last)
            index.append(v)
        offset = buf.offset(self.b, index)
        v = load(self.b, buf.ptr, buf.ty, offset)
        _alias(self.ctx, self.buffers, buf, v)
        return self.b.icmp_unsigned("!=", v, ir.Constant(I8, 0)) if buf.ty == I8 else v

    def _inside(self, index, size) -> bool:
        """Does `index` stay in [0, size) at every point of the loops? True for a loop over
        exactly this axis, and for an index affine in the loops with integer coefficients (a
        pooling window's tap ``2*o + k``) whose least and greatest values provably are;
        False when that cannot be shown (a product of indices, floor, mod, a size without a
        sign). Such a load needs no clamp, and keeps the affine form in which LLVM's
        vectorizer sees strided loads (cnn32's pooling gradients: 1.5x faster)."""
        if self.extents.get(index) == size:
            return True
        low = high = 0
        for term, coef in sympy.expand(sympy.sympify(index)).as_coefficients_dict().items():
            if not coef.is_Integer:
                return False
            if term == 1:
                low, high = low + coef, high + coef
            elif term in self.extents:  # a loop index: from 0 to its extent - 1
                span = coef * (self.extents[term] - 1)
                low, high = (low + span, high) if coef < 0 else (low, high + span)
            else:
                return False
        return bool(sympy.sympify(low).is_nonnegative) and bool(
            sympy.sympify(size - 1 - high).is_nonnegative)

    def reduce(self, e, ty: ir.Type) -> ir.Value:
        op, body, where, bounds = L.reduce_parts(e)
        b = self.b
        if op == "max_first":
            best = self.argmax_parts(body, sympy.Integer(0), where, bounds, ty)[0]
            return best
        flat = self._contiguous_tail(body, where, bounds)
        if flat is not None:  # one flat loop over contiguous memory (vectorized)
            buf, base, count = flat

            def term(f):
                v = load(b, buf.ptr, buf.ty, b.add(base, f))
                _alias(self.ctx, self.buffers, buf, v)
                return convert(b, v, buf.ty, ty) if v.type != ty else v

            return flat_reduce(b, self.ctx.module, op, ty, count, term)
        acc = entry_alloca(b, ty, "acc")
        b.store(identity(op, ty), acc)

        def visit(inner: PointEmitter):
            v = inner.emit(body, ty)
            # sums may be reassociated (vectorized): they differ from NumPy's pairwise sums
            # by rounding only
            nxt = combine(b, self.ctx.module, op, ty, b.load(acc, typ=ty), v, reassoc=True)
            if where is not sympy.true:
                nxt = b.select(inner.emit(where, I1), nxt, b.load(acc, typ=ty))
            b.store(nxt, acc)

        self._over(bounds, visit)
        return b.load(acc, typ=ty)

    def _contiguous_tail(self, body, where, bounds):
        """(buffer, offset of the first term, count) when a reduction's terms are a buffer's
        contiguous trailing block (a load whose last indices are the bounds, in order, over
        whole axes; no condition), else None."""
        if where is not sympy.true or not isinstance(body, L.Load) or not bounds:
            return None
        buf = self.buffers[body.args[0].name]
        if buf.ty == I8:
            return None
        index = list(body.args[1:])
        tail = index[len(index) - len(bounds):]
        if len(index) < len(bounds) or tail != [k for k, _ in bounds] or any(
                buf.shape[len(index) - len(bounds) + j] != n for j, (_, n) in enumerate(bounds)):
            return None
        head = index[:len(index) - len(bounds)]
        if any(i in tail for h in head for i in sympy.sympify(h).free_symbols):
            return None
        if any(self.extents.get(h) != buf.shape[j] for j, h in enumerate(head)):
            return None  # a head index that may leave its axis: the general (clamped) path
        base = buf.offset(self.b, [self.index(h) for h in head] + [i64(0)] * len(tail))
        return buf, base, product(self.b, [self.index(n) for _, n in bounds])

    def argmax_parts(self, body, key, where, bounds, ty) -> tuple[ir.Value, ir.Value]:
        """(the first maximum of body, key there); the first NaN wins, as numpy.argmax."""
        b = self.b
        best = entry_alloca(b, ty, "best")
        where_ = entry_alloca(b, I64, "where")
        found = entry_alloca(b, I1, "found")
        b.store(const(ty, 0), best)
        b.store(i64(0), where_)
        b.store(ir.Constant(I1, 0), found)

        def visit(inner: PointEmitter):
            v = inner.emit(body, ty)
            cur = b.load(best, typ=ty)
            if is_float_type(ty):
                bigger = b.or_(b.fcmp_ordered(">", v, cur), b.and_(
                    b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", cur, cur)))
            else:
                bigger = greater(b, ">", v, cur)
            take = b.or_(b.not_(b.load(found, typ=I1)), bigger)
            if where is not sympy.true:
                take = b.and_(take, inner.emit(where, I1))
            b.store(b.select(take, v, cur), best)
            b.store(b.select(take, inner.index(key), b.load(where_, typ=I64)), where_)
            b.store(b.or_(b.load(found, typ=I1), take), found)

        self._over(bounds, visit)
        return b.load(best, typ=ty), b.load(where_, typ=I64)

    def _over(self, bounds, visit) -> None:
        """visit(point emitter of the inner point) for every point of the bounds."""
        b = self.b
        counts = [self.index(n) for _, n in bounds]
        with loops(b, counts, "r") as idx:
            inner = PointEmitter(self.ctx, self.buffers, {**self.env, **{
                k: i for (k, _), i in zip(bounds, idx)}}, {**self.extents, **dict(bounds)})
            visit(inner)

    def element(self, e) -> ir.Value:
        """The node's element computation (element_function) on the values of `e`."""
        b, node = self.b, self.ctx.node
        values = []
        for arg, x in zip(e.args, node.inputs):
            ty = ir_type(x.dtype)
            if arg.is_Number:  # a 0-d constant: an immediate
                values.append(ir.Constant(ty, float(arg) if is_float_type(ty) else int(arg)))
            elif ty == I8:  # bool: the element function takes the stored byte
                values.append(b.zext(self.emit(arg, I1), I8))
            else:
                values.append(self.emit(arg, ty))
        out = element_function(self.ctx, node)(b, values)
        return b.icmp_unsigned("!=", out, ir.Constant(I8, 0)) if out.type == I8 else out

    def philox_uniform(self, e) -> ir.Value:
        counter, seed, step, stream = (self.index(a) for a in e.args)
        b = self.b
        key = [b.trunc(seed, I32), b.trunc(b.lshr(seed, i64(32)), I32)]
        words = philox(b, [b.trunc(counter, I32), b.trunc(b.lshr(counter, i64(32)), I32),
                           b.trunc(step, I32), b.trunc(stream, I32)], key)
        top = b.lshr(words[0], ir.Constant(I32, 8))
        return b.fmul(b.uitofp(top, F64), ir.Constant(F64, 1.0 / (1 << 24)))


class _TypedEmitter(ExprEmitter):
    """The sympy emitter for one type, with the nest's leaves (loads, reductions, indices)
    and sub-expressions of other types handed back to the point emitter."""

    def __init__(self, point: PointEmitter, ty: ir.Type) -> None:
        super().__init__(point.b, point.ctx.module, ty, point.ctx.gen.math)
        self.point = point
        self._env = point.env
        self._type_key = str(ty)

    def _emit(self, e) -> ir.Value:
        """Memoized in the point emitter's table, per type, for every sub-expression: a
        reduction that an expression reads three times (log_softmax's max: the shift and its
        finiteness test) is one loop, not three for LLVM to merge. A point's code is straight
        line (selects, no branches), so every value it emitted dominates the later ones."""
        values = self.point._values
        key = (e, self._type_key)
        value = values.get(key)
        if value is None:
            value = values[key] = self._dispatch(e)
        return value

    def _dispatch(self, e) -> ir.Value:
        p = self.point
        own = p.type_of(e)
        if own is not None and own != self.ty and not e.is_Number and own != I1:
            return p.emit(e, self.ty)
        if isinstance(e, sympy.Symbol):
            v = p.env[e] if e in p.env else self.point.ctx.dim(e)
            return convert(self.b, v, v.type, self.ty) if v.type != self.ty else v
        if isinstance(e, L.Load):
            return p.load(e)
        if isinstance(e, L.Reduce):
            return p.reduce(e, self.ty)
        if isinstance(e, L.ArgMax):
            body, key, where, bounds = L.argmax_parts(e)
            return p.argmax_parts(body, key, where, bounds, p.type_of(body))[1]
        if isinstance(e, L.PhiloxUniform):
            return p.philox_uniform(e)
        if isinstance(e, L.Element):
            return p.element(e)
        if isinstance(e, (E.isnan, E.isinf)):  # a float's test, in a condition of any type:
            arg = p.type_of(e.args[0])  # its argument in its own type, not converted to this
            if arg is not None and arg != self.ty and is_float_type(arg):
                return p._emitter(arg)._emit(e)
        if isinstance(e, relational.Relational):
            t = _join(p.type_of(e.lhs), p.type_of(e.rhs)) or I64
            return self._cmp(_RELATIONS[type(e)], p.emit(e.lhs, t), p.emit(e.rhs, t))
        if isinstance(e, (sympy.Max, sympy.Min)):  # index arithmetic (window bounds)
            acc = self._emit(e.args[0])
            for a in e.args[1:]:
                v = self._emit(a)
                if self.float:
                    name = "maximum" if isinstance(e, sympy.Max) else "minimum"
                    acc = self.b.call(float_intrinsic(self.module, name, self.ty, 2), [acc, v])
                else:
                    op = ">" if isinstance(e, sympy.Max) else "<"
                    acc = self.b.select(self.b.icmp_signed(op, acc, v), acc, v)
            return acc
        return super()._dispatch(e)


_RELATIONS = {relational.StrictLessThan: "<", relational.LessThan: "<=",
              relational.StrictGreaterThan: ">", relational.GreaterThan: ">=",
              relational.Equality: "==", relational.Unequality: "!="}


# -- a point and the two schedules ----------------------------------------------------------


def _buffers(ctx: KernelContext, nest: L.LoopNest) -> dict[str, _Buffer]:
    return {name: _Buffer(ctx, name, spec) for name, spec in nest.buffers.items()}


def _point(ctx: KernelContext, nest: L.LoopNest, buffers: dict, env: dict) -> None:
    """Everything one point of the domain computes."""
    b = ctx.b
    extents = dict(nest.domain)
    point = PointEmitter(ctx, buffers, env, extents)
    for sym, value in nest.lets:
        t = point.type_of(value) or I64
        env[sym] = point.emit(value, t)
    for check in nest.checks:
        v, bound = point.index(check.value), point.index(check.bound)
        ok = b.and_(b.icmp_signed(">=", v, i64(0)), b.icmp_signed("<", v, bound))
        with b.if_then(b.not_(ok)):
            ctx.fail(FAILED_INDEX, v, bound)
    _stores(point, nest.stores)
    if nest.inner is not None:
        sym, extent = nest.inner
        with loop(b, point.index(extent), "in") as j:
            inner = PointEmitter(ctx, buffers, {**env, sym: j}, {**extents, sym: extent})
            _stores(inner, nest.inner_stores)


def _stores(point: PointEmitter, stores: list) -> None:
    b = point.b
    for s in stores:
        buf = point.buffers[s.buffer]
        value = point.emit(sympy.sympify(s.value), I1 if buf.ty == I8 else buf.ty)
        if buf.ty == I8:
            value = b.zext(value, I8)
        # everything computed before a conditional store's branch: values a point emits are
        # reused by later expressions, which a branch's block would not dominate
        offset = buf.offset(b, [point.index(i) for i in s.index])
        if s.where is not sympy.true:
            with b.if_then(point.emit(s.where, I1)):
                _store(point, s, buf, offset, value)
        else:
            _store(point, s, buf, offset, value)


def _store(point: PointEmitter, s: L.Store, buf: _Buffer, offset: ir.Value, value: ir.Value
           ) -> None:
    b = point.b
    if s.accumulate:
        old = load(b, buf.ptr, buf.ty, offset)
        _alias(point.ctx, point.buffers, buf, old)
        value = b.fadd(old, value) if is_float_type(buf.ty) else b.add(old, value)
    ptr = b.gep(buf.ptr, [offset], inbounds=True, source_etype=buf.ty)
    _alias(point.ctx, point.buffers, buf, b.store(value, ptr))


def _alias(ctx, buffers: dict, buf: _Buffer, instr) -> None:
    """Tell LLVM that the nest's buffers in distinct slots never overlap (the memory plan gives
    distinct slots distinct memory; buffers that share a slot, an output computed in place of
    its input, share a scope): scoped-noalias metadata on every access, so the vectorizer
    needs no runtime overlap checks. The scopes are numbered per kernel, in order of first
    use, so kernels that differ only in their buffers stay one function (interning)."""
    if ctx.target != "llvm":
        return
    slots = sorted({other.slot for other in buffers.values()})
    if len(slots) < 2:
        return
    module = ctx.module
    numbers = ctx.__dict__.setdefault("_alias_numbers", {})
    for slot in slots:
        numbers.setdefault(slot, len(numbers))

    def scope(slot):
        domain = module.add_metadata([ir.MetaDataString(module, "graphc.buffers")])
        return module.add_metadata([ir.MetaDataString(module, f"graphc.buffer{numbers[slot]}"),
                                    domain])

    instr.set_metadata("alias.scope", module.add_metadata([scope(buf.slot)]))
    instr.set_metadata("noalias", module.add_metadata([scope(o) for o in slots
                                                        if o != buf.slot]))


def collapse(nest: L.LoopNest, node) -> L.LoopNest:
    """The same nest over fewer, longer loops: adjacent axes that every access reads the same
    way (all present, or all broadcast) become one, and axes of static size 1 go. So
    ``(N, 32) * (N, 32)`` is one loop and ``(N, 32) + (32,)`` two; short inner loops (a
    layer of 10 units) stop limiting the vectorizer. Applies to nests whose every access
    indexes a buffer by the domain's indices in order (or 0, broadcast), at full extent;
    any other nest is returned unchanged."""
    if nest.lets or nest.checks or nest.inner is not None or nest.host is not None:
        return nest
    syms = [k for k, _ in nest.domain]
    extents = dict(nest.domain)
    accesses = {}  # buffer -> its index tuple
    for st in nest.stores:
        if st.accumulate or st.where is not sympy.true:
            return nest
        accesses.setdefault(st.buffer, tuple(st.index))
        if accesses[st.buffer] != tuple(st.index):
            return nest
        for ld in sympy.sympify(st.value).atoms(L.Load):
            name, index = ld.args[0].name, tuple(ld.args[1:])
            if accesses.setdefault(name, index) != index:
                return nest
    # per buffer, which domain axis each index position reads (None: broadcast, index 0)
    reads = {}
    for name, index in accesses.items():
        spec = nest.buffers[name]
        if spec.shape is not None or spec.scratch is not None:
            return nest
        shape = node.inputs[spec.input].shape if spec.input is not None else node.shape
        positions = []
        for i, d in zip(index, shape):
            if i in extents and extents[i] == d:
                positions.append(syms.index(i))
            elif i == 0:
                positions.append(None)
            else:
                return nest
        used = [p for p in positions if p is not None]
        if used != sorted(set(used)):
            return nest
        reads[name] = positions
    # an axis's pattern: for each buffer, the position that reads it (or None)
    patterns = []
    for a in range(len(syms)):
        patterns.append(tuple(positions.index(a) if a in positions else None
                              for positions in reads.values()))
    groups: list[list[int]] = []
    for a, (_, n) in enumerate(nest.domain):
        if isinstance(n, (int, sympy.Integer)) and int(n) == 1:
            continue
        present = tuple(p is not None for p in patterns[a])
        if groups:
            last = groups[-1][-1]
            same = tuple(p is not None for p in patterns[last]) == present and all(
                p is None or q == p - 1 for p, q in zip(patterns[a], patterns[last]))
            if same:
                groups[-1].append(a)
                continue
        groups.append([a])
    if len(groups) == len(syms):
        return nest
    new_syms = L.index_symbols(" ".join(f"g{g}" for g in range(len(groups))))
    domain = [(k, prod([extents[syms[a]] for a in axes])) for k, axes in zip(new_syms, groups)]
    buffers = dict(nest.buffers)
    new_index = {}
    for name in reads:
        shape, index = [], []
        for k, axes in zip(new_syms, groups):
            if patterns[axes[0]][list(reads).index(name)] is not None:
                shape.append(prod([extents[syms[a]] for a in axes]))
                index.append(k)
        spec = nest.buffers[name]
        buffers[name] = L.Buf(input=spec.input, output=spec.output, scratch=spec.scratch,
                              shape=tuple(shape), dtype=spec.dtype)
        new_index[name] = tuple(index)

    def relabel(e):
        return sympy.sympify(e).xreplace({ld: L.load(ld.args[0].name, *new_index[ld.args[0].name])
                                          for ld in sympy.sympify(e).atoms(L.Load)})

    stores = [L.Store(st.buffer, new_index[st.buffer], relabel(st.value)) for st in nest.stores]
    return L.LoopNest(buffers, domain, stores, name=nest.name)


def render_host(ctx: KernelContext, nest: L.LoopNest, outer: dict | None = None) -> None:
    """The host schedule: counted loops over the domain, the last axis innermost (or, where
    the nest allows it, a reduction in the input's memory order). `outer`: the indices of the
    Repeat loops around the nest."""
    outer = outer or {}
    if nest.host is not None:
        nest = nest.host
    if nest.hints.get("host") == "collapse":
        nest = collapse(nest, ctx.node)
    buffers = _buffers(ctx, nest)
    for name in nest.zero:
        buf = buffers[name]
        size = product(ctx.b, [ctx.dim(d) for d in buf.shape])
        memset_zero(ctx.b, ctx.module, buf.ptr, ctx.b.mul(size, i64(buf.dtype.itemsize)))
    if not outer and _reduction_schedule(ctx, nest, buffers):
        return
    counts = [ctx.dim(n) for _, n in nest.domain]
    rolled = nest.hints.get("rolled", False)  # every loop, or the axes named
    rows = () if rolled is True else tuple(rolled or ())
    unroll = [not (rolled is True or sym in rows) or (sym in rows and unrolled_row(c))
              for (sym, _), c in zip(nest.domain, counts)]
    # a named axis short enough for LLVM to mask its vectors gets a width that fits it
    widths = [short_row_width(c) if sym in rows else None
              for (sym, _), c in zip(nest.domain, counts)]
    # (a nest inside a Repeat's loop, or on a target without parallel loops, stays here)
    worth = point_worth(ctx, nest) if not outer and ctx.parallel_min_points is not None else 1
    part = ctx.host_part() if not outer and not _below_parallel_size(ctx, counts, worth) and \
        splits_by_outer_index(ctx, nest) else None
    if part is not None:  # the outermost loop in its own function, run on every thread
        lo, hi = part.bounds
        part_buffers = _buffers(part, nest)
        inner = [part.dim(n) for _, n in nest.domain[1:]]
        with unless_empty(part.b, inner), loop(part.b, hi, "d0", start=lo) as first:
            with loops(part.b, inner, "d", unroll=unroll[1:], widths=widths[1:]) as rest:
                _point(part, nest, part_buffers,
                       {sym: i for (sym, _), i in zip(nest.domain, [first, *rest])})
        part.finish()
        ctx.run_parallel(part, counts, (worth, 1))
        return
    with loops(ctx.b, counts, "d", unroll=unroll, widths=widths) as idx:
        _point(ctx, nest, buffers, {**outer, **{sym: i for (sym, _), i in zip(nest.domain,
                                                                              idx)}})


def _reduction_schedule(ctx: KernelContext, nest: L.LoopNest, buffers: dict) -> bool:
    """Render a reduction that the plain schedule would leave on one thread or read across
    memory (kernelgen.host_reductions): a whole buffer to one number, in chunks on every
    thread; leading axes in memory order, the threads splitting the output. False where
    the nest is not one of them (nothing rendered)."""
    from . import host_reductions as R

    parallel = ctx.parallel_min_points is not None
    whole = R.whole_reduction(nest, buffers) if parallel else None
    if whole is not None and not R.fits_one_chunk(whole):
        counts = [ctx.dim(n) for n in whole[2]]
        R.whole(ctx, nest, buffers, whole, not _below_parallel_size(ctx, counts))
        return True
    plan = R.plain_reduction(nest) if nest.hints.get("host") == "memory_order" else None
    if plan is None:
        return False
    counts = [ctx.dim(n) for n in {**dict(nest.domain), **plan[3]}.values()]
    split = parallel and not _below_parallel_size(ctx, counts) and _apart(ctx, nest)
    R.memory_order(ctx, nest, buffers, plan, split)
    return True


def _below_parallel_size(ctx: KernelContext, counts: list, worth: int = 1) -> bool:
    """A nest whose sizes are all known and whose points, each worth `worth`, stay below the
    target's threshold for a parallel region (`ctx.parallel_min_points`) would always run
    on one thread: it gets no function of its own for threads (one function fewer to
    optimize and compile)."""
    least = ctx.parallel_min_points
    return least is not None and all(isinstance(c, ir.Constant) for c in counts) and \
        math.prod(int(c.constant) for c in counts) * worth < least


def point_worth(ctx: KernelContext, nest: L.LoopNest) -> int:
    """What one point of `nest` is worth against the parallel threshold, whose unit is a
    plain point (a load or two, a little arithmetic, a store): each costly math function it
    computes (exp, tanh, ...: `emitter.costly_calls`, the node's element included) adds
    `ctx.math_call_points`, and a reduction inside it multiplies by its length where the
    length is known. A rule of the nest and the static sizes only."""
    exprs = [sympy.sympify(e) for e in [v for _, v in nest.lets] +
             [e for s in (*nest.stores, *nest.inner_stores) for e in (s.value, s.where)]]
    calls = sum(costly_calls(e) for e in exprs)
    expr = getattr(ctx.node.op, "expr", None)
    if expr is not None and any(e.has(L.Element) for e in exprs):
        calls += costly_calls(expr(ctx.node.attrs))
    length = 1
    for e in exprs:
        for r in e.atoms(L.Reduce, L.ArgMax):
            bounds = (L.reduce_parts(r) if isinstance(r, L.Reduce) else L.argmax_parts(r))[3]
            # (an extent may depend on the point, a pooling window cut by the edge: not counted)
            if all(isinstance(n, (int, sympy.Integer)) for _, n in bounds):
                length = max(length, math.prod(int(n) for _, n in bounds))
    return (1 + ctx.math_call_points * calls) * length


def splits_by_outer_index(ctx: KernelContext, nest: L.LoopNest) -> bool:
    """May the nest's outermost loop run in chunks on several threads, with the same
    result? Yes when no point can fail (a check stops the step, and the first failure must
    be the same one on any thread count), every store's index holds the outermost index
    itself (points of different chunks write different elements), and no buffer the nest
    writes is one it reads (so no point reads what another chunk writes), counting an
    input and the output planned into the same memory as one buffer."""
    if not nest.domain or nest.checks:
        return False
    first = nest.domain[0][0]
    stores = [*nest.stores, *nest.inner_stores]
    if not stores or any(first not in tuple(s.index) for s in stores):
        return False
    return _apart(ctx, nest)


def _apart(ctx: KernelContext, nest: L.LoopNest) -> bool:
    """No buffer the nest writes is one it reads (an input and the output planned into the
    same memory count as one)."""
    stores = [*nest.stores, *nest.inner_stores]
    written = {_memory_of(ctx, nest, s.buffer) for s in stores}
    exprs = [v for _, v in nest.lets] + [e for s in stores for e in (s.value, s.where,
                                                                      *s.index)]
    read = {_memory_of(ctx, nest, ld.args[0].name) for e in exprs
            for ld in sympy.sympify(e).atoms(L.Load)}
    return not written & read


def _memory_of(ctx: KernelContext, nest: L.LoopNest, name: str):
    """What memory a nest buffer names: its node value's slot, or its scratch key."""
    spec = nest.buffers[name]
    if spec.scratch is not None:
        return ("scratch", spec.scratch)
    value = ctx.node if spec.output else ctx.node.inputs[spec.input]
    return ctx.layout.slot_of.get(value.uid, ("value", value.uid))


def render_gpu(site, nest: L.LoopNest) -> None:
    """The GPU schedule: one launch, a thread per point of the flattened domain."""
    total = prod([n for _, n in nest.domain]) if nest.domain else 1
    ctx = site.kernel(suffix=f".{nest.name}" if nest.name else "", work=total)
    buffers = _buffers(ctx, nest)
    counts = [ctx.dim(n) for _, n in nest.domain]
    with ctx.thread_loop(total) as flat:
        coords, rest = [], flat
        for c in reversed(counts[1:]):
            coords.append(ctx.b.urem(rest, c))
            rest = ctx.b.udiv(rest, c)
        coords.append(rest)
        coords.reverse()
        _point(ctx, nest, buffers, {sym: i for (sym, _), i in zip(nest.domain, coords)})
    ctx.finish()


def render(ctx, steps, outer: dict | None = None) -> None:
    """Render a node's steps with its target's schedule: the host's in one kernel function,
    in order; a GPU's as one launch each. `Schedules` gives each target its own steps; a
    `Repeat` (host only) loops over its steps; a `DirectConv`, `DirectWeightGrad`,
    `ChannelsLastConv` or `ChannelsLastWeightGrad` (host only) goes to
    ``ctx.direct_conv(step)``; a `Gemm` goes to the target's library call,
    ``ctx.gemm(step, slots, offsets)`` with the slots of its a, b and c buffers and the
    element offsets of the matrices in them (i64 values, None for 0)."""
    if isinstance(steps, L.Schedules):
        steps = steps.gpu if ctx.target == "cuda" else steps.host
    steps = steps if isinstance(steps, (list, tuple)) else [steps]
    outer = outer or {}
    for step in steps:
        if isinstance(step, L.Gemm):
            names = (step.a, step.b, step.c)
            offsets = [step.offsets.get(name) for name in names]
            if any(o is not None for o in offsets):
                if ctx.target == "cuda":
                    raise NotImplementedError("a GPU Gemm step multiplies whole buffers")
                point = PointEmitter(ctx, {}, dict(outer))
                offsets = [None if o is None else point.index(o) for o in offsets]
            ctx.gemm(step, [buffer_slot(ctx.gen, ctx.node, step.buffers[name])
                            for name in names], offsets)
        elif isinstance(step, (L.DirectConv, L.DirectWeightGrad, L.ChannelsLastConv,
                               L.ChannelsLastWeightGrad)):
            if ctx.target == "cuda":
                raise NotImplementedError("direct convolutions are a host schedule (a GPU "
                                          "runs im2col and a GEMM)")
            ctx.direct_conv(step)
        elif isinstance(step, L.Repeat):
            if ctx.target == "cuda":
                raise NotImplementedError("Repeat is a host schedule (a GPU runs whole batches)")
            if outer or not ctx.parallel_repeat(
                    step, lambda part, i, step=step: render(part, step.steps, {step.index: i})):
                with loop(ctx.b, ctx.dim(step.extent), "rep") as i:
                    render(ctx, step.steps, {**outer, step.index: i})
        elif ctx.target == "cuda":
            render_gpu(ctx, step)
        else:
            render_host(ctx, step, outer)
