"""Program graph -> one LLVM module with one entry function for the whole step.

    i32 @graphc_step(ptr %slots, ptr %dims)

`slots` is the pointer table: one pointer per input, parameter, constant, memory-plan buffer
and backend scratch buffer. `dims` holds the value of every symbolic size expression for the
current binding (the batch size N, conv output sizes...), computed by Python once per binding;
static sizes are IR constants. Each node becomes one internal kernel function called in schedule
order; kernels that can detect bad data (an embedding id out of range) set a status. Only when
every kernel succeeded does the entry copy the new parameter values into the parameters — so a
failed call never half-applies an update.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy
from llvmlite import ir

from graphc.errors import BackendError
from graphc.ir.graph import Graph
from graphc.ir.node import Node
from graphc.ir.shapes import prod
from graphc.ir.text import identifier

from .irutil import I32, I64, PTR, float_intrinsic, i64, ir_type, load, loop, memcpy, product, store

LEAVES = ("placeholder", "parameter", "constant")
# The error record, four int64 in a scratch slot: what failed first in a call
ERROR_CODE, ERROR_POSITION, ERROR_VALUE, ERROR_BOUND = range(4)
FAILED_INDEX, FAILED_NAN, FAILED_INF = 1, 2, 3  # codes
Lowering = Callable[["KernelContext"], None]
LOWERINGS: dict[str, Lowering] = {}


def lowers(*ops: str):
    """Register a kernel builder for these op names."""
    def deco(fn: Lowering) -> Lowering:
        for op in ops:
            LOWERINGS[op] = fn
        return fn
    return deco


@dataclass
class Layout:
    """Where everything lives, shared by the code generator and the Python executable."""

    slot_of: dict[int, int] = field(default_factory=dict)  # node uid -> slot
    slot_count: int = 0
    input_slots: list[int] = field(default_factory=list)
    param_slots: list[tuple[int, object]] = field(default_factory=list)  # (slot, ParamStorage)
    const_slots: list[tuple[int, object]] = field(default_factory=list)  # (slot, ndarray)
    buffer_slots: dict[int, int] = field(default_factory=dict)  # plan buffer id -> slot
    buffer_sizes: dict[int, object] = field(default_factory=dict)  # slot -> bytes (int/expr)
    scratch: dict[int, object] = field(default_factory=dict)  # slot -> bytes (int/expr)
    dims: list = field(default_factory=list)  # sympy expressions, in dims-table order
    dim_index: dict = field(default_factory=dict)
    status_slot: int = -1  # GPU: the word kernels set when they detect bad data
    error_slot: int = -1  # the error record (ERROR_*): what failed first in a call

    def new_slot(self) -> int:
        self.slot_count += 1
        return self.slot_count - 1

    def dim_slot(self, expr) -> int:
        expr = sympy.sympify(expr)
        if expr not in self.dim_index:
            self.dim_index[expr] = len(self.dims)
            self.dims.append(expr)
        return self.dim_index[expr]


class KernelContext:
    """What a lowering sees while it builds the kernel function of one node."""

    def __init__(self, gen: ProgramCodegen, node: Node, position: int,
                 name: str | None = None) -> None:
        self.gen = gen
        self.node = node
        self.attrs = node.attrs
        self.module = gen.module
        self.layout = gen.layout
        base = _ident(name or f"k{position}.{node.op.name}")
        self.name = base
        self.fn = self._make_function(base)
        for arg, label in zip(self.fn.args, ("slots", "dims", "slot_ids")):
            arg.name = label
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self._init_status()
        self._ptrs: dict[int, ir.Value] = {}
        self._dims: dict = {}
        self.local_slots: dict[int, int] = {}  # slot -> position in this kernel's slot_ids

    def _make_function(self, name: str) -> ir.Function:
        # (slots, dims, slot_ids): the kernel reaches slot slot_ids[j] for its j-th buffer, so
        # kernels that differ only in their buffers (an RNN's time steps) are one function
        fn = ir.Function(self.module, ir.FunctionType(I32, [PTR, PTR, PTR]), name=name)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        # each kernel is optimized on its own: inlining them all into the entry function
        # makes one huge function that is slow to optimize and gains nothing (each runs once)
        fn.attributes.add("noinline")
        return fn

    def _slot_address(self, slot: int) -> ir.Value:
        """Where the pointer of `slot` is stored (call in the entry block)."""
        j = self.local_slots.setdefault(slot, len(self.local_slots))
        index = self.b.load(self.b.gep(self.fn.args[2], [i64(j)], source_etype=I64), typ=I64)
        return self.b.gep(self.fn.args[0], [index], source_etype=PTR)

    def _init_status(self) -> None:
        self._status = self.b.alloca(I32, name="status")
        self.b.store(ir.Constant(I32, 0), self._status)

    # -- data -------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[Node]:
        return list(self.node.inputs)

    def ty(self, node: Node | None = None) -> ir.Type:
        return ir_type((node or self.node).dtype)

    def ptr(self, node: Node) -> ir.Value:
        """The data pointer of a node's value (loaded from the slot table once per kernel)."""
        slot = self.layout.slot_of[node.uid]
        if slot not in self._ptrs:
            with self.b.goto_entry_block():
                addr = self._slot_address(slot)
                self._ptrs[slot] = self.b.load(addr, typ=PTR, name=self.gen.value_name(node))
        return self._ptrs[slot]

    def in_ptr(self, i: int) -> ir.Value:
        return self.ptr(self.node.inputs[i])

    @property
    def out_ptr(self) -> ir.Value:
        return self.ptr(self.node)

    def same_buffer(self, a: Node, b: Node) -> bool:
        return self.layout.slot_of.get(a.uid) == self.layout.slot_of.get(b.uid)

    def dim(self, expr) -> ir.Value:
        """An int or sympy size expression as an i64 value (symbolic ones from the dims table)."""
        if isinstance(expr, (int, sympy.Integer)):
            return i64(int(expr))
        k = self.layout.dim_slot(expr)
        if k not in self._dims:
            with self.b.goto_entry_block():
                addr = self.b.gep(self.fn.args[1], [i64(k)], source_etype=I64)
                self._dims[k] = self.b.load(addr, typ=I64, name=_ident(f"dim.{expr}"))
        return self._dims[k]

    def shape(self, node: Node | None = None) -> list[ir.Value]:
        return [self.dim(d) for d in (node or self.node).shape]

    def dims(self, values) -> list[ir.Value]:
        return [self.dim(v) for v in values]

    def numel(self, node: Node | None = None) -> ir.Value:
        return product(self.b, self.shape(node))

    def numel_of(self, dims) -> ir.Value:
        return product(self.b, list(dims))

    def nbytes(self, node: Node | None = None) -> ir.Value:
        node = node or self.node
        return self.b.mul(self.numel(node), i64(node.dtype.itemsize))

    def scratch(self, nbytes, key: str = "") -> ir.Value:
        """A private buffer of `nbytes` (int or sympy expression) for this kernel."""
        slot = self.layout.new_slot()
        self.layout.scratch[slot] = nbytes
        with self.b.goto_entry_block():
            return self.b.load(self._slot_address(slot), typ=PTR, name=_ident(f"scratch.{key}"))

    def shared_scratch(self, key, nbytes) -> tuple[int, bool]:
        """A scratch slot shared between kernels under `key` (e.g. pooling argmax indices).
        Returns (slot, created_now)."""
        if key in self.gen.shared:
            return self.gen.shared[key], False
        slot = self.layout.new_slot()
        self.layout.scratch[slot] = nbytes
        self.gen.shared[key] = slot
        return slot, True

    def slot_ptr(self, slot: int, name: str) -> ir.Value:
        with self.b.goto_entry_block():
            return self.b.load(self._slot_address(slot), typ=PTR, name=_ident(name))

    def fail(self, code: int = 1, value: ir.Value | None = None,
             bound: ir.Value | None = None) -> None:
        """Record a failure (code 1: an id or label out of range, with the `value` found and
        its `bound`); the step stops and applies no update. The first failure of a call is
        kept in the error record (`ERROR_*`), which the executable turns into the message
        every backend gives."""
        b = self.b
        record = self.slot_ptr(self.gen.error_slot, "error")
        with b.if_then(b.icmp_signed("==", load(b, record, I64, i64(ERROR_CODE)), i64(0))):
            store(b, i64(code), record, I64, i64(ERROR_CODE))
            if value is not None:
                store(b, value, record, I64, i64(ERROR_VALUE))
            if bound is not None:
                store(b, bound, record, I64, i64(ERROR_BOUND))
        b.store(ir.Constant(I32, code), self._status)

    def math(self, b: ir.IRBuilder, name: str, x: ir.Value, ty: ir.Type) -> ir.Value:
        return self.gen.math(b, name, x, ty)

    def finish(self) -> None:
        if not self.b.block.is_terminated:
            self.b.ret(self.b.load(self._status, typ=I32))


class ProgramCodegen:
    """Builds the module for a program graph whose memory has been planned."""

    def __init__(self, program: Graph, math, profile: bool = False,
                 check_finite: bool = False) -> None:
        from graphc.passes.memory import plan_memory

        self.program = program
        self.profile = profile
        self.check_finite = check_finite
        self.kernel_names: list[str] = []
        self.plan = program.meta.get("memory") or plan_memory(program)
        self.math = math
        self.module = ir.Module(name=_ident(program.name))
        self.layout = Layout()
        self.shared: dict = {}
        self._interned: dict[str, ir.Function] = {}
        self._names: dict[int, str] = {}
        self._assign_slots()
        self.error_slot = self.layout.new_slot()
        self.layout.scratch[self.error_slot] = 32
        self.layout.error_slot = self.error_slot

    def value_name(self, node: Node) -> str:
        return self._names.get(node.uid, f"v{node.uid}")

    def _assign_slots(self) -> None:
        lay, plan = self.layout, self.plan
        for k, node in enumerate(self.program.nodes):
            op = node.op.name
            if op in LEAVES:
                slot = lay.new_slot()
                lay.slot_of[node.uid] = slot
                if op == "parameter":
                    lay.param_slots.append((slot, node.attrs["storage"]))
                    self._names[node.uid] = _ident(node.name)
                elif op == "constant":
                    lay.const_slots.append((slot, node.attrs["value"].array))
                    self._names[node.uid] = f"c{k}"
                else:
                    self._names[node.uid] = _ident(node.name)
                continue
            buf = plan.buffer_of[node.uid]
            if buf not in lay.buffer_slots:
                lay.buffer_slots[buf] = lay.new_slot()
                lay.buffer_sizes[lay.buffer_slots[buf]] = plan.buffers[buf]
            lay.slot_of[node.uid] = lay.buffer_slots[buf]
            self._names[node.uid] = f"t{k}"
        input_slot = {n.uid: lay.slot_of[n.uid] for n in self.program.nodes
                      if n.op.name == "placeholder"}
        lay.input_slots = [input_slot.get(n.uid, -1) for n in self.program.inputs]

    def build(self) -> ir.Module:
        entry = ir.Function(self.module, ir.FunctionType(I32, [PTR, PTR]), name="graphc_step")
        entry.args[0].name, entry.args[1].name = "slots", "dims"
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        record = b.load(b.gep(entry.args[0], [i64(self.error_slot)], source_etype=PTR), typ=PTR)
        store(b, i64(0), record, I64, i64(ERROR_CODE))  # nothing failed yet in this call
        kernels = [(k, n) for k, n in enumerate(self.program.nodes) if n.op.name not in LEAVES]
        if self.profile:  # cycles spent in each kernel, accumulated in a scratch slot
            self.profile_slot = self.layout.new_slot()
            self.layout.scratch[self.profile_slot] = 8 * max(len(kernels), 1)
            counters = b.load(b.gep(entry.args[0], [i64(self.profile_slot)], source_etype=PTR),
                              typ=PTR, name="profile")
            clock = self.module.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(
                I64, []))
        for j, (k, node) in enumerate(kernels):
            lowering = LOWERINGS.get(node.op.name)
            if lowering is None:
                raise BackendError(f"the llvm backend has no lowering for op {node.op.name}"
                                   + (f" (used at {node.loc})" if node.loc else ""))
            ctx = KernelContext(self, node, k)
            lowering(ctx)
            ctx.finish()
            self.kernel_names.append(ctx.name)
            kernel = self.intern(ctx.fn)
            slot_ids = self._slot_ids(ctx)
            if self.profile:
                start = b.call(clock, [])
            result = b.call(kernel, [*entry.args, slot_ids], name=f"s{k}")
            if self.profile:
                slot = b.gep(counters, [i64(j)], source_etype=I64)
                spent = b.sub(b.call(clock, []), start)
                b.store(b.add(b.load(slot, typ=I64), spent), slot)
            self._stop_unless(b, entry, b.icmp_unsigned("==", result, ir.Constant(I32, 0)), k,
                              result)
            if self.check_finite and node.dtype.kind == "f":  # the first NaN stops the step
                nan = self._scan(b, entry, node, "nan")
                self._stop_unless(b, entry, b.not_(nan), k, ir.Constant(I32, FAILED_NAN))
        if self.check_finite:  # infinities: only in what leaves the step
            for node in [*self.program.outputs, *(v for _, v in self.program.updates)]:
                if node.op.name not in LEAVES and node.dtype.kind == "f":
                    k = self.program.nodes.index(node)
                    bad = self._scan(b, entry, node, "nonfinite")
                    self._stop_unless(b, entry, b.not_(bad), k, ir.Constant(I32, FAILED_INF))
        self._emit_updates(b, entry)
        b.ret(ir.Constant(I32, 0))
        return self.module

    def _stop_unless(self, b: ir.IRBuilder, entry: ir.Function, ok: ir.Value, position: int,
                     code: ir.Value) -> None:
        """Go on if `ok`; else record `position` (and `code`, unless a kernel already did)
        in the error record and return `code`: no later kernel runs, no update is applied."""
        go, stop = entry.append_basic_block(f"ok{position}"), entry.append_basic_block(
            f"stop{position}")
        b.cbranch(ok, go, stop)
        b.position_at_end(stop)
        record = b.load(b.gep(entry.args[0], [i64(self.error_slot)], source_etype=PTR), typ=PTR)
        code64 = b.zext(code, I64)
        first = b.icmp_signed("==", load(b, record, I64, i64(ERROR_CODE)), i64(0))
        store(b, b.select(first, code64, load(b, record, I64, i64(ERROR_CODE))), record, I64,
              i64(ERROR_CODE))
        store(b, i64(position), record, I64, i64(ERROR_POSITION))
        b.ret(code)
        b.position_at_end(go)

    def _scan(self, b: ir.IRBuilder, entry: ir.Function, node: Node, what: str) -> ir.Value:
        """i1: does the node's value hold a NaN ("nan") or any non-finite ("nonfinite")?"""
        ty = ir_type(node.dtype)
        fn = self._scanner(what, ty)
        count = prod(node.shape) if node.shape else 1
        if isinstance(count, int):
            n = i64(count)
        else:
            n = b.load(b.gep(entry.args[1], [i64(self.layout.dim_slot(count))],
                             source_etype=I64), typ=I64)
        data = b.load(b.gep(entry.args[0], [i64(self.layout.slot_of[node.uid])],
                            source_etype=PTR), typ=PTR)
        return b.trunc(b.call(fn, [data, n]), ir.IntType(1))

    def _scanner(self, what: str, ty: ir.Type) -> ir.Function:
        """``i8 graphc.any_<what>.<ty>(ptr, n)``, defined once per module."""
        name = f"graphc.any_{what}.{ty}"
        fn = self.module.globals.get(name)
        if fn is not None:
            return fn
        fn = ir.Function(self.module, ir.FunctionType(ir.IntType(8), [PTR, I64]), name=name)
        fn.linkage = "internal"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        found = b.alloca(ir.IntType(8))
        b.store(ir.Constant(ir.IntType(8), 0), found)
        with loop(b, fn.args[1], "i") as i:
            x = load(b, fn.args[0], ty, i)
            if what == "nan":
                bad = b.fcmp_unordered("uno", x, x)
            else:  # |x| == inf or NaN: not (|x| < inf)
                mag = b.call(float_intrinsic(self.module, "fabs", ty), [x])
                bad = b.not_(b.fcmp_ordered("<", mag, ir.Constant(ty, float("inf"))))
            b.store(b.or_(b.load(found, typ=ir.IntType(8)), b.zext(bad, ir.IntType(8))), found)
        b.ret(b.load(found, typ=ir.IntType(8)))
        return fn

    def intern(self, fn: ir.Function) -> ir.Function:
        """A function generated earlier with the same code (up to names), or `fn` itself.

        The unrolled steps of a recurrent network, or the layers of one shape, give many
        kernels that differ only in the buffers they touch; those are one function, so LLVM
        optimizes and compiles each once (an LSTM over 12 steps: about 8x fewer kernels).
        """
        key = _canonical_text(fn)
        found = self._interned.get(key)
        if found is None:
            self._interned[key] = fn
            return fn
        del self.module.globals[fn.name]
        return found

    def _slot_ids(self, ctx: KernelContext) -> ir.Value:
        """The constant table of the slots a kernel call reaches (its third argument)."""
        ids = sorted(ctx.local_slots, key=ctx.local_slots.get) or [0]
        table = ir.GlobalVariable(self.module, ir.ArrayType(I64, len(ids)),
                                  name=f"{ctx.name}.slot_ids")
        table.linkage = "internal"
        table.global_constant = True
        table.initializer = ir.Constant(ir.ArrayType(I64, len(ids)), ids)
        return table

    def _emit_updates(self, b: ir.IRBuilder, entry: ir.Function) -> None:
        """Copy every new value into its parameter — all reads happened before any write."""
        lay = self.layout

        def load_slot(slot: int, name: str) -> ir.Value:
            return b.load(b.gep(entry.args[0], [i64(slot)], source_etype=PTR), typ=PTR,
                          name=name)

        def nbytes(node: Node) -> ir.Value:
            size = prod(node.shape) * node.dtype.itemsize if node.shape else node.dtype.itemsize
            if isinstance(size, int):
                return i64(size)
            k = lay.dim_slot(size)
            return b.load(b.gep(entry.args[1], [i64(k)], source_etype=I64), typ=I64)

        targets = {p.uid for p, _ in self.program.updates}
        pending = []
        for param, value in self.program.updates:
            if value.uid == param.uid:
                continue
            src_slot = lay.slot_of[value.uid]
            if value.op.name == "parameter" and value.uid in targets:
                # {a: b, b: a}: snapshot b before a is overwritten
                snap = lay.new_slot()
                lay.scratch[snap] = prod(value.shape) * value.dtype.itemsize
                memcpy(b, self.module, load_slot(snap, "snapshot"), load_slot(src_slot, "src"),
                       nbytes(value))
                src_slot = snap
            pending.append((param, value, src_slot))
        for param, value, src_slot in pending:
            dst = load_slot(lay.slot_of[param.uid], self.value_name(param))
            memcpy(b, self.module, dst, load_slot(src_slot, "new"), nbytes(value))


_LOCAL_NAME = re.compile(r'%("(?:[^"\\]|\\.)*"|[-\w.$]+)')


def _canonical_text(fn: ir.Function) -> str:
    """The function's IR with its own name and every local value name replaced by a number
    in order of appearance: equal for two functions that compute the same thing."""
    text = str(fn).replace(f'@"{fn.name}"', "@_").replace(f"@{fn.name}(", "@_(")
    names: dict[str, str] = {}
    return _LOCAL_NAME.sub(lambda m: names.setdefault(m.group(1), f"%v{len(names)}"), text)


def _ident(name: str) -> str:
    """An LLVM name for free text (module, kernel and value names come from graph and node
    names, which a user or a file chose): graphc.ir.text's token, dots allowed."""
    return identifier(name, extra=".", max_length=128)
