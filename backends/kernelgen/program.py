"""What the native targets share to turn a program into kernels: the slot layout, the
kernel context a lowering builds with, and the program generator (slots, names, interning).

Every buffer a step touches is reached through one pointer table, the *slots*: one pointer per
input, parameter, constant, memory-plan buffer and scratch buffer. Symbolic sizes come from a
*dims* table computed by Python once per binding. The host target (backends/llvm) calls one
kernel function per node from one entry function; the GPU target (backends/cuda) launches
kernels over a grid. Both subclass what is here; neither imports the other.

A kernel that detects bad data calls `KernelContext.fail`: the first failure of a call is kept
in the *error record* (four int64 in a scratch slot: `ERROR_CODE`, `ERROR_POSITION`,
`ERROR_VALUE`, `ERROR_BOUND`), which the executable turns into the message every backend gives
(kernelgen/binding.py, `failure_message`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy
from llvmlite import ir

from graphc.ir.graph import Graph
from graphc.ir.node import Node
from graphc.ir.text import identifier

from .irutil import I64, PTR, i64, ir_type, product, store

LEAVES = ("placeholder", "parameter", "constant")
ERROR_CODE, ERROR_POSITION, ERROR_VALUE, ERROR_BOUND = range(4)  # the error record's fields
ERROR_RECORD_BYTES = 32
FAILED_INDEX, FAILED_NAN, FAILED_INF = 1, 2, 3  # its codes


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
    # every node a kernel may report in the error record, by position: the program's nodes,
    # then the nodes of loop bodies (their kernels live in the same module, see
    # backends/llvm/loops.py)
    nodes: list = field(default_factory=list)

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
    """What a lowering sees while it builds a kernel of one node. Targets subclass it: they
    decide the kernel function's signature (`make_function`), how a slot's pointer is reached
    (`slot_address`), how a failure is signalled (`signal_failure`) and how a kernel ends
    (`finish`)."""

    target = ""  # the lowering registry's name of the target: "llvm", "cuda"

    def __init__(self, gen: ProgramGenerator, node: Node, position: int,
                 name: str | None = None) -> None:
        self.gen = gen
        self.node = node
        self.position = position  # the node's index in the program (for the error record)
        self.attrs = node.attrs
        self.module = gen.module
        self.layout = gen.layout
        base = ident(name or f"k{position}.{node.op.name}")
        self.name = base
        self.fn = self.make_function(base)
        for arg, label in zip(self.fn.args, ("slots", "dims", "slot_ids")):
            arg.name = label
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self._ptrs: dict[int, ir.Value] = {}
        self._dims: dict = {}
        self.local_slots: dict[int, int] = {}  # slot -> position in this kernel's slot_ids
        self.begin()

    # -- what a target decides ----------------------------------------------------------------
    def make_function(self, name: str) -> ir.Function:
        raise NotImplementedError

    def slot_address(self, slot: int) -> ir.Value:
        """Where the pointer of `slot` is stored (called in the entry block)."""
        raise NotImplementedError

    def begin(self) -> None:
        """Called once the entry block exists."""

    def signal_failure(self, code: int) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError

    def host_part(self):
        """A function for a range of a nest's outermost loop, which `run_parallel` runs on
        every thread; None where the target has no parallel host loops."""
        return None

    #: the fewest points of a nest `run_parallel` may run on several threads (None: no
    #: parallel host loops)
    parallel_min_points: int | None = None
    #: what a call of a costly math function (emitter.costly_calls) adds to a point's worth
    math_call_points: int = 0

    def run_parallel(self, part, counts: list, per_point: tuple[int, int] = (1, 1)) -> None:
        raise NotImplementedError

    def parallel_repeat(self, step, body) -> bool:
        """Render the `Repeat` `step` with its iterations split between threads, its body
        written by ``body(context, index)``; False (nothing rendered) where the target does
        not, and the caller loops on this thread."""
        return False

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
                addr = self.slot_address(slot)
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
                self._dims[k] = self.b.load(addr, typ=I64, name=ident(f"dim.{expr}"))
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
            return self.b.load(self.slot_address(slot), typ=PTR, name=ident(f"scratch.{key}"))

    def shared_scratch(self, key, nbytes) -> tuple[int, bool]:
        """A scratch slot shared between kernels under `key` (e.g. pooling argmax indices).
        Returns (slot, created_now)."""
        return self.gen.shared_scratch(key, nbytes)

    def slot_ptr(self, slot: int, name: str) -> ir.Value:
        with self.b.goto_entry_block():
            return self.b.load(self.slot_address(slot), typ=PTR, name=ident(name))

    def fail(self, code: int = 1, value: ir.Value | None = None,
             bound: ir.Value | None = None) -> None:
        """Record a failure (`FAILED_INDEX`: an id or label out of range, with the `value`
        found and its `bound`); the step stops and applies no update. The first failure of a
        call claims the error record (an atomic compare-and-swap on its code: on a GPU, many
        threads may fail at once)."""
        b = self.b
        record = self.slot_ptr(self.gen.error_slot, "error")
        code_slot = b.gep(record, [i64(ERROR_CODE)], source_etype=I64)
        first = b.extract_value(b.cmpxchg(code_slot, i64(0), i64(code), "monotonic",
                                          "monotonic"), 1)
        with b.if_then(first):
            for field_, v in ((ERROR_POSITION, i64(self.position)), (ERROR_VALUE, value),
                              (ERROR_BOUND, bound)):
                if v is not None:
                    store(b, v, record, I64, i64(field_))
        self.signal_failure(code)

    def math(self, b: ir.IRBuilder, name: str, x: ir.Value, ty: ir.Type) -> ir.Value:
        return self.gen.math(b, name, x, ty)


class ProgramGenerator:
    """The target-neutral half of a program's code generator: slots for every value, names,
    the error record, shared scratch, and interning of identical functions."""

    def __init__(self, program: Graph, math, parent: ProgramGenerator | None = None,
                 bound: dict[int, int] | None = None) -> None:
        """`parent`: the generator of the program holding a loop whose body `program` is; the
        body's kernels go into the parent's module and its slots into the parent's layout
        (one slot table, one error record), its placeholders taking the slots in `bound`
        (placeholder uid -> slot)."""
        from graphc.passes.memory import plan_memory

        self.program = program
        self.plan = program.meta.get("memory") or plan_memory(program)
        self.math = math
        self.parent = parent
        self.shared: dict = {}
        self.loop_results: dict[int, list[int | None]] = {}  # scan uid -> a slot per result
        self._loop_needs: dict[int, set[int]] | None = None
        self._names: dict[int, str] = {}
        if parent is None:
            self.module = ir.Module(name=ident(program.name))
            self.layout = Layout()
            # a shape of code -> [canonical text (None until needed), function]
            self._interned: dict[tuple, list[list]] = {}
        else:
            self.module, self.layout = parent.module, parent.layout
            self._interned = parent._interned
        self.position_base = len(self.layout.nodes)  # this program's nodes' first position
        self.layout.nodes.extend(program.nodes)
        self._assign_slots(bound)
        if parent is None:
            self.error_slot = self.layout.new_slot()
            self.layout.scratch[self.error_slot] = ERROR_RECORD_BYTES
            self.layout.error_slot = self.error_slot
        else:
            self.error_slot = parent.error_slot

    def shared_scratch(self, key, nbytes) -> tuple[int, bool]:
        """The scratch slot of `key` (int or sympy bytes), made on first use: shared by the
        kernels that name the same key (a max pooling's argmax record and its adjoints, the
        columns of a convolution's steps). Returns (slot, created_now)."""
        if key in self.shared:
            return self.shared[key], False
        slot = self.layout.new_slot()
        self.layout.scratch[slot] = nbytes
        self.shared[key] = slot
        return slot, True

    def loop_needs(self, node: Node) -> set[int]:
        """The results of a scan node of this program that some scan_output reads."""
        if self._loop_needs is None:
            from ..numpy.loops import check_outputs

            self._loop_needs = check_outputs(self.program)
        return self._loop_needs.get(node.uid, set())

    def updates_in_place(self) -> dict[int, int]:
        """New parameter values whose kernels write into their parameter (value uid ->
        parameter uid; passes/memory.updates_in_place): none unless a target says so."""
        return {}

    def value_name(self, node: Node) -> str:
        return self._names.get(node.uid, f"v{node.uid}")

    def _assign_slots(self, bound: dict[int, int] | None = None) -> None:
        lay, plan = self.layout, self.plan
        # (a loop body's plan numbers its buffers from 0 too: its own slots)
        buffer_slots = lay.buffer_slots if bound is None else {}
        for k, node in enumerate(self.program.nodes):
            op = node.op.name
            if op in LEAVES:
                if bound is not None and node.uid in bound:
                    lay.slot_of[node.uid] = bound[node.uid]
                    self._names[node.uid] = ident(node.name)
                    continue
                slot = lay.new_slot()
                lay.slot_of[node.uid] = slot
                if op == "parameter":
                    lay.param_slots.append((slot, node.attrs["storage"]))
                    self._names[node.uid] = ident(node.name)
                elif op == "constant":
                    lay.const_slots.append((slot, node.attrs["value"].array))
                    self._names[node.uid] = f"c{k}"
                else:
                    self._names[node.uid] = ident(node.name)
                continue
            buf = plan.buffer_of[node.uid]
            if buf not in buffer_slots:
                buffer_slots[buf] = lay.new_slot()
                lay.buffer_sizes[buffer_slots[buf]] = plan.buffers[buf]
            lay.slot_of[node.uid] = buffer_slots[buf]
            self._names[node.uid] = f"t{k}"
        if bound is not None:  # a loop body: its inputs are the loop's slots
            return
        for value, param in self.updates_in_place().items():  # computed into the parameter
            lay.slot_of[value] = lay.slot_of[param]
        input_slot = {n.uid: lay.slot_of[n.uid] for n in self.program.nodes
                      if n.op.name == "placeholder"}
        lay.input_slots = [input_slot.get(n.uid, -1) for n in self.program.inputs]

    def intern(self, fn: ir.Function) -> ir.Function:
        """A function generated earlier with the same code (up to names), or `fn` itself.

        The unrolled steps of a recurrent network, or the layers of one shape, give many
        kernels that differ only in the buffers they touch; those are one function, so LLVM
        optimizes and compiles each once (an LSTM over 12 steps: about 8x fewer kernels).
        Printing a function to compare it costs about as much as generating it, so only
        functions of the same shape (`_shape`: equal canonical texts imply equal shapes) are
        printed and compared.
        """
        candidates = self._interned.setdefault(_shape(fn), [])
        if candidates:
            text = _canonical_text(fn)
            for entry in candidates:
                if entry[0] is None:
                    entry[0] = _canonical_text(entry[1])
                if entry[0] == text:
                    del self.module.globals[fn.name]
                    return entry[1]
            candidates.append([text, fn])
        else:
            candidates.append([None, fn])
        return fn


def _shape(fn: ir.Function) -> tuple:
    """The function's type, the opcodes of its blocks and the constants and globals they
    use: the same for any two functions whose canonical texts are the same."""
    return (str(fn.function_type),
            tuple((i.opname, *[o.get_reference() for o in i.operands
                               if isinstance(o, (ir.Constant, ir.GlobalValue))])
                  for block in fn.blocks for i in block.instructions),
            tuple(len(block.instructions) for block in fn.blocks))


_LOCAL_NAME = re.compile(r'%("(?:[^"\\]|\\.)*"|[-\w.$]+)')


def _canonical_text(fn: ir.Function) -> str:
    """The function's IR with its own name and every local value name replaced by a number
    in order of appearance: equal for two functions that compute the same thing."""
    text = str(fn).replace(f'@"{fn.name}"', "@_").replace(f"@{fn.name}(", "@_(")
    names: dict[str, str] = {}
    return _LOCAL_NAME.sub(lambda m: names.setdefault(m.group(1), f"%v{len(names)}"), text)


def ident(name: str) -> str:
    """An LLVM name for free text (module, kernel and value names come from graph and node
    names, which a user or a file chose): graphc.ir.text's token, dots allowed."""
    return identifier(name, extra=".", max_length=128)
