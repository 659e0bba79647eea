"""Program graph -> one LLVM module with one entry function for the whole step.

    i32 @graphc_step(ptr %slots, ptr %dims)

`slots` is the pointer table and `dims` the table of symbolic sizes (kernelgen/program.py).
Each node becomes one internal kernel function called in schedule order; kernels that can
detect bad data (an embedding id out of range) set a status and the error record. Only when
every kernel succeeded does the entry copy the new parameter values into the parameters — so a
failed call never half-applies an update. A new value that the step computes after the last
kernel that can fail, and after the last read of its parameter, is written straight into the
parameter instead, with no copy (`HostCodegen.updates_in_place`).
"""

from __future__ import annotations

import math

import numpy as np
import sympy
from llvmlite import ir

from graphc.ir.node import Node
from graphc.ir.shapes import prod

from ..base import leaving_values
from ..kernelgen.irutil import (
    I32,
    I64,
    PTR,
    float_intrinsic,
    i64,
    ir_type,
    load,
    loop,
    memcpy,
    product,
    store,
)
from ..kernelgen.program import (
    ERROR_CODE,
    ERROR_POSITION,
    FAILED_INF,
    FAILED_NAN,
    LEAVES,
    KernelContext,
    ProgramGenerator,
)
from ..kernelgen.registry import lowering_for

__all__ = ["CAN_FAIL", "HostCodegen", "HostKernel", "HostKernelPart"]

#: the ops whose kernels can stop a step: an id or a label out of range, and a loop (its body
#: may hold such a kernel)
CAN_FAIL = frozenset({"take", "one_hot", "scatter_add", "scan"})
#: the most scratch a parallel Repeat's part keeps on each thread's stack (a thread of
#: libgomp's has the process's default stack, 8 MiB on Linux; LeNet-5's columns are 38 KiB)
PRIVATE_SCRATCH_BYTES = 256 * 1024
#: the ops whose value may stay where another kernel put it (a loop's result, read in the
#: loop's buffer: loops.lower_scan_output): never written into a parameter
READ_IN_PLACE = frozenset({"scan_output"})


class HostKernel(KernelContext):
    """A node's kernel on the host: one internal function ``i32 (slots, dims, slot_ids)``
    returning its status (0: fine), called by the entry function."""

    target = "llvm"
    profile_index = -1  # its profile counter (HostCodegen.kernel_names), when profiling

    def kernel(self, suffix: str = "", work=None, kind: str = "grid") -> HostKernel:
        """Where a lowering builds its next kernel: on the host, this same function (the
        kernels of a node run one after the other)."""
        return self

    def gemm(self, step, slots: list[int], offsets: list) -> None:
        """A description's Gemm step: BLAS (a loop nest when tiny), in this kernel."""
        from .kernels_linalg import gemm

        ty = self.ty()
        a, b, c = (self.slot_ptr(slot, name) if offset is None else
                   self.b.gep(self.slot_ptr(slot, name), [offset], inbounds=True,
                              source_etype=ty)
                   for slot, name, offset in zip(slots, (step.a, step.b, step.c), offsets))
        gemm(self, self.b, ty, step.ta, step.tb, self.dim(step.m), self.dim(step.n),
             self.dim(step.k), a, b, c, accumulate=step.accumulate)

    def direct_conv(self, step) -> None:
        """A description's DirectConv or DirectWeightGrad step (backends/llvm/direct_conv.py)
        or ChannelsLastConv or ChannelsLastWeightGrad step
        (backends/llvm/channels_last_conv.py): register tiles."""
        from graphc.ops.loops import ChannelsLastConv, ChannelsLastWeightGrad

        if isinstance(step, (ChannelsLastConv, ChannelsLastWeightGrad)):
            from .channels_last_conv import channels_last_conv

            channels_last_conv(self, step)
            return
        from .direct_conv import direct_conv

        direct_conv(self, step)

    def make_function(self, name: str) -> ir.Function:
        # (slots, dims, slot_ids): the kernel reaches slot slot_ids[j] for its j-th buffer, so
        # kernels that differ only in their buffers (an RNN's time steps) are one function
        fn = ir.Function(self.module, ir.FunctionType(I32, [PTR, PTR, PTR]), name=name)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        # each kernel is optimized on its own: inlining them all into the entry function
        # makes one huge function that is slow to optimize and gains nothing (each runs once)
        fn.attributes.add("noinline")
        return fn

    def slot_address(self, slot: int) -> ir.Value:
        j = self.local_slots.setdefault(slot, len(self.local_slots))
        index = self.b.load(self.b.gep(self.fn.args[2], [i64(j)], source_etype=I64), typ=I64)
        return self.b.gep(self.fn.args[0], [index], source_etype=PTR)

    def fail(self, code: int = 1, value: ir.Value | None = None,
             bound: ir.Value | None = None) -> None:
        self.gen.root.failing.add(self.position)  # (checked against the updates in place)
        super().fail(code, value, bound)

    def begin(self) -> None:
        self._status = self.b.alloca(I32, name="status")
        self.b.store(ir.Constant(I32, 0), self._status)

    def signal_failure(self, code: int) -> None:
        self.b.store(ir.Constant(I32, code), self._status)

    def finish(self) -> None:
        if not self.b.block.is_terminated:
            self.b.ret(self.b.load(self._status, typ=I32))

    # -- parallel loops (backends/llvm/threads.py) -------------------------------------------
    def host_part(self, private: dict[int, int] | None = None) -> HostKernelPart:
        """A new function for the outermost loop of one of this kernel's nests, over a range
        [lo, hi) of it: what each thread of a parallel region runs. `private`: scratch slots
        (and their bytes) each call of it keeps on its own stack instead."""
        return HostKernelPart(self.gen, self.node, self.position,
                              name=self.module.get_unique_name(f"{self.name}.part"),
                              private=private)

    def parallel_repeat(self, step, body) -> bool:
        """A `Repeat` whose iterations are independent (`Repeat.independent`: a convolution's
        samples, each with its own columns) as a part over a range of them, run on every
        thread when the whole is worth a region (`run_parallel`), each call with its own
        copy of the scratch on its stack. Only where every size is known but the count, each
        product is small enough that BLAS would run it on one thread anyway (no threads
        inside threads), no nest can fail, and the scratch fits PRIVATE_SCRATCH_BYTES. An
        iteration is worth its nests' points and its products' multiply-adds over
        MACS_PER_POINT. LeNet-5's second input gradient (64 samples of a 150x64x16 product
        and a col2im): 0.70 -> 0.55 Mcycles on two threads of the Zen 4 VM (the second
        vCPU wakes slowly there: no region came near half)."""
        from graphc.ops import loops as L

        from ..kernelgen.nest import buffer_slot, point_worth
        from . import threads
        from .kernels_linalg import THREADED_GEMM

        def known(*sizes):
            return all(isinstance(d, (int, sympy.Integer)) for d in sizes)

        if not step.independent:
            return False
        private: dict[int, int] = {}
        macs = points = 0
        for s in step.steps:
            if isinstance(s, L.Gemm):
                if not known(s.m, s.n, s.k) or int(s.m) * int(s.n) * int(s.k) >= THREADED_GEMM:
                    return False
                macs += int(s.m) * int(s.n) * int(s.k)
            elif isinstance(s, L.LoopNest):
                counts = [n for _, n in s.domain]
                if s.checks or not known(*counts):
                    return False
                points += math.prod(int(n) for n in counts) * point_worth(self, s)
            else:
                return False
            for spec in s.buffers.values():
                if spec.scratch is not None:
                    if spec.shape is None or not known(*spec.shape):
                        return False
                    private[buffer_slot(self.gen, self.node, spec)] = \
                        math.prod(int(d) for d in spec.shape) * np.dtype(spec.dtype).itemsize
        worth = max(1, points + macs // threads.MACS_PER_POINT)
        extent = step.extent
        if sum(private.values()) > PRIVATE_SCRATCH_BYTES or (
                known(extent) and int(extent) * worth < threads.PARALLEL_MIN_POINTS):
            return False
        part = self.host_part(private)
        lo, hi = part.bounds
        with loop(part.b, hi, "rep", start=lo) as i:
            body(part, i)
        part.finish()
        self.run_parallel(part, [self.dim(extent)], (worth, 1))
        return True

    @property
    def parallel_min_points(self) -> int:
        from . import threads

        return threads.PARALLEL_MIN_POINTS

    @property
    def math_call_points(self) -> int:
        from . import threads

        return threads.MATH_CALL_POINTS

    def run_parallel(self, part: HostKernelPart, counts: list,
                     per_point: tuple[int, int] = (1, 1)) -> None:
        """Call the finished `part` over the whole outermost loop: on every thread when the
        nest's points, each worth ``per_point[0] / per_point[1]`` nest points, come to
        PARALLEL_MIN_POINTS or more and more than one thread may run, else on this one (a
        fixed rule of the sizes: the same program on any machine)."""
        from . import threads
        from .kernels_linalg import blas_to_one_thread_if_workers_spin

        gen, b = self.gen, self.b
        gen.root.regions += 1
        fn = gen.intern(part.fn)
        ids = gen._slot_ids(part)
        slots, dims = self.fn.args[0], self.fn.args[1]
        n = counts[0]
        team = b.load(threads.thread_count(self.module), typ=I32, name="threads")
        worth, per = per_point
        work = product(b, counts) if worth == 1 else b.mul(product(b, counts), i64(worth))
        wide = b.and_(b.icmp_signed(">=", work, i64(threads.PARALLEL_MIN_POINTS * per)),
                      b.and_(b.icmp_signed(">", team, ir.Constant(I32, 1)),
                             b.icmp_signed(">", n, i64(1))))
        with b.if_else(wide) as (parallel, serial):
            with parallel:
                with b.goto_entry_block():
                    data = b.alloca(I64, size=i64(threads.REGION_WORDS), name="region")
                for k, v in enumerate((b.ptrtoint(slots, I64), b.ptrtoint(dims, I64),
                                       b.ptrtoint(ids, I64), n, i64(0))):
                    b.store(v, b.gep(data, [i64(k)]))
                blas_to_one_thread_if_workers_spin(
                    self.module, b, self.slot_ptr(gen.root.blas_count_slot(), "blas_count"))
                threads.start_region(self.module, b, fn, data, team)
            with serial:
                b.call(fn, [slots, dims, ids, i64(0), n])


class HostKernelPart(HostKernel):
    """The outermost loop of a kernel's nest over [lo, hi) (its last two arguments), as its
    own function ``i32 (slots, dims, slot_ids, lo, hi)``: a parallel region's threads each
    run it on their chunk (backends/llvm/threads.py). It reaches its buffers through its own
    slot_ids table, like a kernel, but for its private scratch slots, which live on its
    stack. Only nests that cannot fail are split."""

    def __init__(self, *args, private: dict[int, int] | None = None, **kwargs) -> None:
        self._private = dict(private or {})
        self._stack: dict[int, ir.Value] = {}
        super().__init__(*args, **kwargs)

    def slot_ptr(self, slot: int, name: str) -> ir.Value:
        if slot not in self._private:
            return super().slot_ptr(slot, name)
        if slot not in self._stack:
            with self.b.goto_entry_block():
                room = self.b.alloca(ir.ArrayType(ir.IntType(8), self._private[slot]),
                                     name=f"private.{name}")
                room.align = 64
                # an untyped pointer, as every slot's (the IR text of an alloca is the same;
                # llvmlite would otherwise check each store against an array of bytes)
                room.type = PTR
                self._stack[slot] = room
        return self._stack[slot]

    def make_function(self, name: str) -> ir.Function:
        from .threads import PART

        fn = ir.Function(self.module, PART, name=name)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")
        fn.args[3].name, fn.args[4].name = "lo", "hi"
        return fn

    @property
    def bounds(self) -> tuple[ir.Value, ir.Value]:
        return self.fn.args[3], self.fn.args[4]


class HostCodegen(ProgramGenerator):
    """Builds the module of a program graph whose memory has been planned."""

    def __init__(self, program, math, profile: bool = False, check_finite: bool = False,
                 parent: HostCodegen | None = None, bound: dict | None = None,
                 in_place: bool = True) -> None:
        self.check_finite = check_finite
        self.in_place = in_place and parent is None and not check_finite
        self.failing: set[int] = set()  # positions of the kernels that can fail (root only)
        self.written_into: dict[int, int] = {}  # uid -> the parameter its kernel writes into
        self.product_updates: dict[int, tuple[int, float]] = {}  # see updates_in_place
        self.folded: set[int] = set()  # updates whose product computes them: no kernel
        super().__init__(program, math, parent, bound)
        self.root: HostCodegen = parent.root if parent is not None else self
        self.profile = profile if parent is None else parent.profile
        self.kernel_names: list[str] = []  # the profile's counters, by index (root only)
        self.profile_slot = -1
        self.regions = 0  # nests that may run on every thread (root only: run_parallel)
        self._blas_count_slot = -1  # see blas_count_slot

    def blas_count_slot(self) -> int:
        """The scratch slot of the BLAS thread count a region lowered in this step, plus one
        (0: nothing to put back; kernels_linalg.blas_to_one_thread_if_workers_spin), made
        by the first region (root only)."""
        if self._blas_count_slot < 0:
            self._blas_count_slot = self.layout.new_slot()
            self.layout.scratch[self._blas_count_slot] = 8
        return self._blas_count_slot

    def updates_in_place(self) -> dict[int, int]:
        """The new values computed straight into their parameters (passes/memory.py's rule):
        a step's last updates, after every kernel that can fail (CAN_FAIL) and every read of
        the old values, cost no copy. Not with check_finite, which looks at the new values
        for infinities only after every kernel. `late_failure` checks the rule's premise
        once the kernels exist."""
        if not self.in_place:
            return {}
        from graphc.passes.memory import products_into_updates, updates_in_place

        from .kernels_linalg import scaled_update_sized

        def can_fail(node):
            return node.op.name in CAN_FAIL

        values = updates_in_place(self.program, self.plan, can_fail,
                                  lambda node: node.op.name not in READ_IN_PLACE)
        # W - lr * (X.T @ G): the gemm (BLAS, or the register tiles) accumulates into W
        # (alpha -lr, beta 1), and the elementwise update has no kernel
        self.product_updates = products_into_updates(self.program, self.plan, can_fail,
                                                     values, scaled_update_sized)
        products = {m: p for m, (p, _) in self.product_updates.items()}
        self.folded = {v for v, p in values.items() if p in products.values()}
        self.written_into = {**values, **products}
        return self.written_into

    @property
    def late_failure(self) -> bool:
        """Did a kernel that can fail turn out to run after a value written into its
        parameter? (Then the module is generated again without updates in place: an op
        that learned to fail and is missing from CAN_FAIL costs compile time, never a
        half-applied update.)"""
        if not self.written_into:
            return False
        first = min(k for k, n in enumerate(self.program.nodes) if n.uid in self.written_into)
        return any(first <= p < len(self.program.nodes) for p in self.failing)

    def profile_entry(self, name: str) -> int:
        """Reserve the index of a profile counter named `name` (a loop body's kernels get
        their own, next to the loop's)."""
        names = self.root.kernel_names
        names.append(name)
        return len(names) - 1

    def body(self, program, bound: dict) -> HostCodegen:
        """The generator of a loop body of this program (backends/llvm/loops.py)."""
        return HostCodegen(program, self.math, parent=self, bound=bound)

    def body_kernels(self, prefix: str = "", overrides: dict | None = None,
                     ) -> list[tuple[int, ir.Function, ir.Value, int]]:
        """Every kernel of this (body) program, generated into the module: (position,
        function, its constant slot_ids table, its profile counter or -1), in schedule
        order. `prefix`: the loop's kernel name, which the profile shows before the body
        kernel's (``k12.scan/k40.matmul``). `overrides`: node uid -> the lowering the loop
        uses instead of the op's, or None for no kernel (a carry accumulated in place)."""
        out = []
        overrides = overrides or {}
        for k, node in enumerate(self.program.nodes):
            if node.op.name in LEAVES or overrides.get(node.uid, True) is None:
                continue
            position = self.position_base + k
            ctx = HostKernel(self, node, position)
            ctx.profile_index = self.profile_entry("") if self.profile else -1
            (overrides.get(node.uid) or lowering_for(node, "llvm"))(ctx)
            ctx.finish()
            if self.profile:
                self.root.kernel_names[ctx.profile_index] = f"{prefix}/{ctx.name}"
            out.append((position, self.intern(ctx.fn), self._slot_ids(ctx), ctx.profile_index))
        return out

    def build(self) -> ir.Module:
        entry = ir.Function(self.module, ir.FunctionType(I32, [PTR, PTR]), name="graphc_step")
        entry.args[0].name, entry.args[1].name = "slots", "dims"
        self._fail = None  # (block, code phi, position phi): see _stop_unless
        b = ir.IRBuilder(entry.append_basic_block("entry"))
        record = b.load(b.gep(entry.args[0], [i64(self.error_slot)], source_etype=PTR), typ=PTR)
        store(b, i64(0), record, I64, i64(ERROR_CODE))  # nothing failed yet in this call
        kernels = [(k, n) for k, n in enumerate(self.program.nodes)
                   if n.op.name not in LEAVES and n.uid not in self.folded]
        if self.profile:  # cycles spent in each kernel, accumulated in a scratch slot
            self.profile_slot = self.layout.new_slot()
            counters = b.load(b.gep(entry.args[0], [i64(self.profile_slot)], source_etype=PTR),
                              typ=PTR, name="profile")
            clock = self.module.declare_intrinsic("llvm.readcyclecounter", (), ir.FunctionType(
                I64, []))
        for k, node in kernels:
            lowering = lowering_for(node, "llvm")
            ctx = HostKernel(self, node, k)
            j = ctx.profile_index = self.profile_entry("")
            lowering(ctx)
            ctx.finish()
            self.kernel_names[j] = ctx.name
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
            for node in leaving_values(self.program):
                k = self.program.nodes.index(node)
                if node.op.name in LEAVES:  # not checked for NaN above: NaN comes first
                    nan = self._scan(b, entry, node, "nan")
                    self._stop_unless(b, entry, b.not_(nan), k, ir.Constant(I32, FAILED_NAN))
                bad = self._scan(b, entry, node, "nonfinite")
                self._stop_unless(b, entry, b.not_(bad), k, ir.Constant(I32, FAILED_INF))
        self._emit_updates(b, entry)
        b.ret(ir.Constant(I32, 0))
        if self._blas_count_slot >= 0:  # a region may lower the BLAS count: every return
            self._before_each_return(entry, self._restore_blas_threads)  # puts it back
        if self.profile:  # (a loop's body kernels have counters too: sized at the end)
            self.layout.scratch[self.profile_slot] = 8 * max(len(self.kernel_names), 1)
        return self.module

    def _restore_blas_threads(self, b: ir.IRBuilder, entry: ir.Function) -> None:
        from .kernels_linalg import restore_blas_threads

        word = b.load(b.gep(entry.args[0], [i64(self._blas_count_slot)], source_etype=PTR),
                      typ=PTR)
        b.call(restore_blas_threads(self.module), [word])

    @staticmethod
    def _before_each_return(entry: ir.Function, emit) -> None:
        """Call ``emit(builder, entry)`` before each `ret` of the step function."""
        for block in entry.blocks:
            if isinstance(block.terminator, ir.Ret):
                b = ir.IRBuilder(block)
                b.position_before(block.terminator)
                emit(b, entry)

    def _stop_unless(self, b: ir.IRBuilder, entry: ir.Function, ok: ir.Value, position: int,
                     code: ir.Value) -> None:
        """Go on if `ok`; else record `position` (and `code`, unless a kernel already did)
        in the error record and return `code`: no later kernel runs, no update is applied.
        Every check branches to one shared block (phis pick the code and position): a block
        of its own per kernel made the step function 40% of an LSTM step's IR."""
        if self._fail is None:
            block = entry.append_basic_block("fail")
            fb = ir.IRBuilder(block)
            codes, positions = fb.phi(I32, "code"), fb.phi(I64, "position")
            # (a kernel that failed recorded its own position: a loop's, the body node's)
            self._record_first_error(fb, entry, fb.zext(codes, I64), positions)
            fb.ret(codes)
            self._fail = (block, codes, positions)
        block, codes, positions = self._fail
        go = entry.append_basic_block(f"ok{position}")
        codes.add_incoming(code, b.block)
        positions.add_incoming(i64(position), b.block)
        b.cbranch(ok, go, block)
        b.position_at_end(go)

    def stop_if_nan(self, b: ir.IRBuilder, fn: ir.Function, node: Node, position: int) -> None:
        """check_finite inside a loop (`loops.lower_scan`, in the scan kernel `fn`): after a
        body kernel, a NaN in its value records the body node's `position` (unless an error
        is recorded already) and returns FAILED_NAN, so the message names the body's op, as
        the NumPy backend's does."""
        nan = self._scan(b, fn, node, "nan")
        bad = fn.append_basic_block(f"nan{position}")
        fine = fn.append_basic_block(f"fine{position}")
        b.cbranch(nan, bad, fine)
        b.position_at_end(bad)
        self._record_first_error(b, fn, i64(FAILED_NAN), i64(position))
        b.ret(ir.Constant(I32, FAILED_NAN))
        b.position_at_end(fine)

    def _record_first_error(self, b: ir.IRBuilder, fn: ir.Function, code: ir.Value,
                            position: ir.Value) -> None:
        """Write `code` and `position` (i64) into the call's error record, unless an error is
        recorded already (the first failure is the one a message names). `fn`: a function
        whose first argument is the slot table (the step, or a kernel)."""
        record = b.load(b.gep(fn.args[0], [i64(self.root.error_slot)], source_etype=PTR),
                        typ=PTR)
        first = b.icmp_signed("==", load(b, record, I64, i64(ERROR_CODE)), i64(0))
        store(b, b.select(first, code, load(b, record, I64, i64(ERROR_CODE))),
              record, I64, i64(ERROR_CODE))
        store(b, b.select(first, position, load(b, record, I64, i64(ERROR_POSITION))),
              record, I64, i64(ERROR_POSITION))

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
            # (in its parameter already: the slots, as the kernels were generated, say so)
            if value.uid == param.uid or lay.slot_of[value.uid] == lay.slot_of[param.uid]:
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


