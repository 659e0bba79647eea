"""Calling the compiled step: buffers and pointer tables per binding, one ctypes call per step.

For each binding of the symbolic dims (each batch size), the buffers of the memory plan and
the kernels' scratch space are allocated once, and a pointer table is filled in. A call then
only writes the input and parameter addresses into the table, calls the native function, and
copies out the outputs. The native code applies the parameter updates itself, after every
kernel succeeded.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass

import numpy as np

from graphc.errors import BackendError
from graphc.ir.graph import Graph

from ..base import Executable
from ..kernelgen.binding import (
    MAX_BINDINGS,
    Binding,
    address,
    failure_message,
    returned_arrays,
    same_arrays,
    updated_parameter_outputs,
)
from ..kernelgen.program import Layout
from .blas import blas
from .builtin_lane import FAILED, NOT_THIS_FORM, RAN, LaneRecord, native_lane


@dataclass(frozen=True)
class LLVMArtifact:
    """What code generation made of a program, enough to build another executable of it
    without generating the code again (graphc/compile_memo.py): the IR text, the slot layout
    the code was generated against (read-only once built), the profile counters' slot and
    names (None unless profiling) and the IR's parts as compiled."""

    ir_text: str
    layout: Layout
    profile: tuple[int, list[str]] | None
    parts: tuple[str, ...]  # the module cut for compiling on several threads (split.py)
    regions: int = 0  # its parallel regions (what the stats report of BLAS threads)


class LLVMExecutable(Executable):
    applies_updates = True

    def __init__(self, program: Graph, layout: Layout, engine, ir_text: str, stats: dict,
                 parts: tuple[str, ...], regions: int = 0) -> None:
        self.program = program
        self.layout = layout
        self._snapshots = updated_parameter_outputs(program)
        self.engine = engine  # keeps the machine code alive
        self.source = ir_text
        self.parts = parts
        self._regions = regions
        # new values the code computes straight into their parameters, and the products
        # that compute them (W - lr * X.T @ G in one gemm): codegen.py
        targets = {layout.slot_of[p.uid] for p, _ in program.updates}
        values = {v.uid for _, v in program.updates}
        self.stats = {**stats, "llvm_updates_in_place": sum(
            layout.slot_of[v.uid] == layout.slot_of[p.uid] for p, v in program.updates
            if v.uid != p.uid), "llvm_products_into_updates": sum(
            n.op.name == "matmul" and n.uid not in values and layout.slot_of[n.uid] in targets
            for n in program.nodes)}
        self._address = engine.get_function_address("graphc_step")
        if not self._address:  # (a call through address 0 would take the interpreter down)
            raise BackendError("the linked machine code has no graphc_step function")
        self._fn = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p)(
            self._address)
        # a region puts the thread's later products on one BLAS thread where workers spin,
        # and the step puts the count back as it returns
        # (kernels_linalg.blas_to_one_thread_if_workers_spin)
        restores = bool(regions and blas().one_thread_after_a_region)
        self.stats["llvm_blas_one_thread_after_a_region"] = restores
        self._bindings: dict[tuple, Binding] = {}
        input_index = {n.uid: i for i, n in enumerate(program.inputs)}
        self._inputs = [(slot, input_index[n.uid]) for n, slot in
                        zip(program.inputs, layout.input_slots) if slot >= 0]
        self._params = layout.param_slots
        # the order of the sizes in a call's key (gc.Function's: input symbols by name)
        self._symbols = sorted({d for n in program.inputs for d in n.type.symbols},
                               key=lambda s: s.name)
        self._updated = [p.attrs["storage"] for p, _ in program.updates]
        self._storages = [storage for _slot, storage in self._params]
        leaves = ("placeholder", "parameter", "constant")
        self._arena_outputs = all(n.op.name not in leaves for n in program.outputs)
        # `again_lane` serves this program: no output is an updated parameter's old value
        self._again = self._arena_outputs and not self._snapshots
        self._recent: tuple[tuple, Binding] | None = None  # the last call's sizes and buffers
        self._profile: tuple[int, list[str]] | None = None

    def artifact(self) -> LLVMArtifact:
        """The generated code this executable was built from (shared with the executables
        `from_artifact` builds; none of it changes after code generation)."""
        return LLVMArtifact(self.source, self.layout, self._profile, self.parts, self._regions)

    @classmethod
    def from_artifact(cls, program: Graph, artifact: LLVMArtifact, options: dict
                      ) -> LLVMExecutable:
        """A new executable of `program` from the code generated for it earlier: its own
        machine-code engine (from the on-disk cache when it holds this IR), buffers and
        pointer tables. `options`: the llvm backend's options it was generated with."""
        from ..kernelgen import toolchain
        from . import blas, threads

        started = time.perf_counter()
        blas.blas()  # the BLAS symbols the code calls, registered before it is linked
        engine, hit = toolchain.jit(list(artifact.parts), use_cache=options.get("cache", True),
                                    workers=threads.runtime().threads)
        stats = {"llvm_compile_seconds": time.perf_counter() - started,
                 "llvm_cache_hit": hit, "llvm_parts": len(artifact.parts)}
        exe = cls(program, artifact.layout, engine, artifact.ir_text, stats, artifact.parts,
                  artifact.regions)
        if artifact.profile is not None:
            exe.enable_profile(*artifact.profile)
        return exe

    def enable_profile(self, slot: int, kernel_names: list[str]) -> None:
        self._profile = (slot, kernel_names)

    def kernel_profile(self) -> list[tuple[str, int]]:
        """(kernel, time-stamp counter cycles) accumulated over all calls so far, most
        expensive first (compile with ``backend_options={"profile": True}``)."""
        if self._profile is None:
            raise BackendError("compile with backend_options={'profile': True} to profile")
        slot, names = self._profile
        totals = np.zeros(len(names), dtype=np.int64)
        for state in self._bindings.values():
            view = np.ctypeslib.as_array(ctypes.cast(int(state.table[slot]),
                                                     ctypes.POINTER(ctypes.c_int64)),
                                         shape=(len(names),))
            totals += view
        return sorted(zip(names, totals.tolist()), key=lambda kv: -kv[1])

    def close(self) -> None:
        """Free the machine code (the MCJIT engine) and every binding's buffers."""
        self._bindings.clear()
        self._recent = None
        self._fn = None
        if self.engine is not None:
            self.engine.close()
            self.engine = None

    def _binding(self, binding, key) -> Binding:
        """The buffers for these sizes: made on first use, the MAX_BINDINGS most recently used
        kept (a loop over many batch sizes does not keep an arena per size)."""
        recent = self._recent
        if recent is not None and recent[0] == key:  # a training loop: the same sizes again
            return recent[1]
        state = self._bindings.pop(key, None)
        if state is None:
            if binding is None:  # seen before, evicted since: the key is the sizes
                binding = dict(zip(self._symbols, key))
            state = Binding(self.program, self.layout, binding)
            for slot, storage in self._params:  # host arrays never move (written in place)
                state.table[slot] = storage.host_buffer().ctypes.data
        self._bindings[key] = state  # (most recent last)
        while len(self._bindings) > MAX_BINDINGS:
            self._bindings.pop(next(iter(self._bindings)))
        self._recent = (key, state)
        return state

    def again_lane(self, key, inputs):
        """`run` for the sizes of the last call, where every output is a value in the arena
        (none is an updated parameter), as one function with everything it reads bound. It
        serves arrays of the dtypes and shapes of `inputs` (C-contiguous ndarrays) and
        returns None (nothing done) for others, or while a parameter has a device copy.
        A trivial step's call took 3.9 µs by `run`, 2.4-2.6 by a lane of Python around a
        ctypes call (the ninth session) and 1.2 by a builtin lane (builtin_lane.py)."""
        recent = self._recent
        if not self._again or recent is None or recent[0] != key or self._fn is None:
            return None
        state = recent[1]
        outputs = state.outputs
        index = dict((i, slot) for slot, i in self._inputs)
        record = LaneRecord(self._address, state.table_ptr, state.dims_ptr,
                            [(index.get(i, -1), a.dtype, a.shape) for i, a in enumerate(inputs)],
                            owners=(self, state))
        # the builtin, or where NumPy's arrays are not laid out as it reads them, the same
        # answers from Python around the ctypes call (2.5 µs slower)
        native = native_lane(record) or self._python_step(state, inputs)
        # each parameter's list of device copies (mutated in place, never replaced): any()
        # of them is one C loop, where a Python loop over the storages took 0.16 µs of 11
        device_lists = tuple(storage.devices for storage in self._storages)
        values = [value for value, _shape in outputs]
        only = values[0] if len(values) == 1 else None  # a loss: one copy, no comprehension
        # outputs past 1 MiB: the caller's arrays are made before the step, which updates
        # parameters in place (out of memory afterwards, the call failed and the step had
        # happened); smaller ones are copied after it, as before (np.empty_like and a copy
        # doubled a tiny step's lane, 0.9 -> 1.7 us)
        big = sum(value.nbytes for value in values) > (1 << 20)

        def lane(arrays):
            if self._fn is None or any(device_lists):  # closed, or a newer copy elsewhere
                return None
            if big:
                copies = [np.empty_like(value) for value in values]
            answer = native(*arrays)
            if answer:
                if answer == FAILED:
                    raise BackendError(failure_message(self.program, state.error_record(),
                                                       self.layout))
                return None
            if not big:
                return [only.copy()] if only is not None else [value.copy() for value in values]
            for copy, value in zip(copies, values):
                copy[...] = value
            return copies

        lane.step = native  # (for tests: the builtin, or the Python step)
        return lane

    def _python_step(self, state: Binding, inputs):
        """What the builtin lane answers, in Python: NOT_THIS_FORM for arrays not of the
        dtypes and shapes of `inputs`, else RAN after the ctypes call (which raises the
        step's failure itself)."""
        call = self._caller(state)
        signature = tuple((a.dtype, a.shape) for a in inputs)

        def step(*arrays):
            if not same_arrays(arrays, signature):
                return NOT_THIS_FORM
            call(arrays)
            return RAN

        return step

    def _caller(self, state: Binding):
        """The native step on these buffers, as a function of the inputs (everything it
        reads bound once): it writes the input addresses and calls the step; a failure the
        step reports (an id out of range) is raised, and then no parameter was written."""
        table, table_ptr, dims_ptr = state.table, state.table_ptr, state.dims_ptr
        inputs_at, native = self._inputs, self._fn

        def call(inputs) -> None:
            for slot, i in inputs_at:
                table[slot] = address(inputs[i])
            if native(table_ptr, dims_ptr):
                raise BackendError(failure_message(self.program, state.error_record(),
                                                   self.layout))

        return call

    def run(self, inputs, binding, key):
        if self._fn is None:
            raise BackendError("this function was closed (Function.close()): compile it again")
        state = self._binding(binding, key)
        for storage in self._storages:  # a device may hold a newer copy: bring it home first
            if storage.devices:
                storage.host_buffer()
        # every array the caller gets is allocated before the step, which updates parameters
        # in place: out of memory afterwards, the call failed and the step had happened
        before = {k: storage.value.copy() for k, storage in self._snapshots} \
            if self._snapshots else {}
        outputs, arena = returned_arrays(self.program, state.outputs, before, inputs)
        self._caller(state)(inputs)
        for storage in self._updated:  # written in place: device copies must follow
            if storage.devices:
                storage.changed_in_place()
        for copy, value in arena:
            np.copyto(copy, value)
        return outputs, []


