"""Running GPU kernels: on a CUDA device, or emulated on the host over the same launch grid.

Both executables walk the same launch plan. Launch geometry: grid-stride kernels get 256
threads per block and enough blocks to cover the work (at most 1024); tiled GEMMs get 16x16
threads per block and one block per 16x16 tile of C, times the batch.

Both keep their per-binding buffers (one set per batch size) for the `MAX_BINDINGS` most
recently used bindings, and give everything back on ``close()``; after that, calling raises
BackendError. The device executable also frees its device memory when it is garbage
collected (see device.py).
"""

from __future__ import annotations

import ctypes
import weakref
from collections import OrderedDict

import numpy as np

from graphc.errors import BackendError
from graphc.ir.graph import Graph
from graphc.ir.shapes import evaluate_shape

from ..base import Executable, leaving_values, nonfinite_message
from ..kernelgen.binding import (
    Binding,
    address,
    body_holding,
    failure_message,
    loop_bodies,
    returned_arrays,
    size_value,
    updated_parameter_outputs,
)
from .codegen import BLOCK, Launch, schedule
from .collectives import run_host_step
from .device import MAX_BINDINGS, DeviceBinding, DeviceResources
from .kernels_linalg import TILE

MAX_BLOCKS = 1024


def geometry(launch: Launch, binding: dict) -> tuple[tuple, tuple]:
    """(grid, block) of a launch for a binding of the symbolic dims."""
    if launch.kind == "host":
        return (1, 1, 1), (1, 1, 1)
    if launch.kind == "gemm":
        m, n = size_value(launch.gemm["m"], binding), size_value(launch.gemm["n"], binding)
        # an empty C needs no block per batch entry (2**40 of them for an empty batch of rows)
        batch = size_value(launch.gemm["batch"], binding) if m and n else 1
        return ((n + TILE - 1) // TILE or 1, (m + TILE - 1) // TILE or 1, batch or 1), (TILE,
                                                                                        TILE, 1)
    work = size_value(launch.work, binding)
    blocks = max(1, min(MAX_BLOCKS, (work + BLOCK - 1) // BLOCK))
    return (blocks, 1, 1), (BLOCK, 1, 1)


class FiniteChecks:
    """What ``check_finite`` looks at, and when: after the last launch of a node, its value
    (NaN); before the update launches, the outputs and new values (inf too). A loop body's
    node is checked after its last launch at every step (the plan repeats the body's
    launches), so the message names the body's op, as on the NumPy and llvm backends."""

    def __init__(self, program: Graph, after: dict, leaving: list, first_update: int) -> None:
        self.program = program
        self.after = after  # launch index -> node whose value is complete then
        self.leaving = leaving  # nodes whose value leaves the step
        self.first_update = first_update

    def check_leaving(self, read) -> None:
        """Before the update launches: outputs and new values hold no NaN and no inf."""
        for node in self.leaving:
            self.check(node, read, ("NaN", "inf"))

    def check(self, node, read, kinds=("NaN",)) -> None:
        """`read(node)` gives the node's value as a host array; raise at the first NaN/inf."""
        value = read(node)
        for kind, test in (("NaN", np.isnan), ("inf", np.isinf)):
            if kind in kinds and test(value).any():
                raise BackendError(nonfinite_message(self.program, node, kind,
                                                     body_holding(self.program, node)))


def finite_checks(program: Graph, gen) -> FiniteChecks:
    leaves = ("placeholder", "parameter", "constant")
    after: dict = {}
    ours = {n.uid for g in (program, *loop_bodies(program)) for n in g.nodes}
    for i, launch in enumerate(gen.launches[:gen.first_update_launch]):
        node = launch.node
        if node.uid in ours and node.op.name not in leaves and node.dtype.kind == "f":
            after.pop(next((k for k, n in after.items() if n is node), None), None)
            after[i] = node  # (a node's last launch completes it)
    return FiniteChecks(program, after, leaving_values(program), gen.first_update_launch)


ERROR_RECORD = 32  # bytes: code, node position, value, bound (int64 each; llvm's codegen.ERROR_*)
CLOSED = "this function was closed (Function.close()); compile it again to run it"


class _Sizes:
    """The binding of every key seen: the caller passes a binding only the first time a key
    is used, and an evicted binding's buffers must be rebuilt from it."""

    def __init__(self) -> None:
        self.seen: dict = {}

    def resolve(self, binding, key) -> dict:
        if binding is not None:
            self.seen[key] = dict(binding)
            return binding
        return self.seen[key]


class EmulatedExecutable(Executable):
    """The kernels compiled for the host; a generated driver loops over each launch's grid."""

    applies_updates = True

    def __init__(self, program: Graph, layout, launches: list[Launch], engine, source: str,
                 stats: dict, checks: FiniteChecks | None = None, plan: list | None = None
                 ) -> None:
        self.program, self.layout, self.launches = program, layout, launches
        self.plan = plan if plan is not None else list(range(len(launches)))
        self._checks = checks
        self._snapshots = updated_parameter_outputs(program)
        self.engine = engine
        self.source = source
        self.stats = stats
        sig = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
        # one generated driver per launch loops over its grid (see GpuCodegen.emulation_driver)
        self._drivers = [None if launch.kind == "host" else
                         sig(engine.get_function_address(f"graphc.emulate.{launch.kernel}"))
                         for launch in launches]
        self._bindings: OrderedDict = OrderedDict()  # key -> Binding, least recent first
        self._sizes = _Sizes()
        self.closed = False
        input_index = {n.uid: i for i, n in enumerate(program.inputs)}
        self._inputs = [(slot, input_index[n.uid]) for n, slot in
                        zip(program.inputs, layout.input_slots) if slot >= 0]

    def close(self) -> None:
        """Drop the host buffers and free the machine code (the JIT engine)."""
        if self.closed:
            return
        self.closed = True
        self._bindings.clear()
        self._drivers = []
        engine, self.engine = self.engine, None
        if engine is not None:
            engine.close()

    def _state(self, binding: dict, key) -> Binding:
        state = self._bindings.get(key)
        if state is not None:
            self._bindings.move_to_end(key)
            return state
        state = Binding(self.program, self.layout, binding)
        state.geometry = [geometry(launch, binding) for launch in self.launches]
        while len(self._bindings) >= MAX_BINDINGS:
            self._bindings.popitem(last=False)
        self._bindings[key] = state
        return state

    def run(self, inputs, binding, key):
        if self.closed:
            raise BackendError(CLOSED)
        binding = self._sizes.resolve(binding, key)
        state = self._state(binding, key)
        table = state.table
        for slot, i in self._inputs:
            table[slot] = address(inputs[i])
        for slot, storage in self.layout.param_slots:
            table[slot] = storage.host_buffer().ctypes.data
        before = {k: storage.value.copy() for k, storage in self._snapshots}
        # the caller's arrays before the launches, which update parameters in place: out of
        # memory afterwards, the call failed and the step had happened
        outputs, arena = returned_arrays(self.program, state.outputs, before, inputs)
        status_address = int(table[self.layout.status_slot])
        record_address = int(table[self.layout.error_slot])
        ctypes.memset(status_address, 0, 4)
        ctypes.memset(record_address, 0, ERROR_RECORD)
        checks = self._checks

        def read(node):
            return self._hostsize_value(state, node, binding)

        for i in schedule(self.plan, binding):
            (grid, block), driver = state.geometry[i], self._drivers[i]
            if checks is not None and i == checks.first_update:
                checks.check_leaving(read)
            if driver is None:  # a collective, on the host arena
                node = self.launches[i].node
                read(node)[...] = run_host_step(node, [read(n) for n in node.inputs])
            else:
                driver(state.table_ptr, state.dims_ptr, grid[0], grid[1], grid[2], block[0])
            if checks is not None and i in checks.after and \
                    not ctypes.c_int32.from_address(status_address).value:
                checks.check(checks.after[i], read)
        if checks is not None and checks.first_update == len(self.launches):
            checks.check_leaving(read)
        if ctypes.c_int32.from_address(status_address).value:
            record = list((ctypes.c_int64 * 4).from_address(record_address))
            raise BackendError(failure_message(self.program, record, self.layout))
        for p, _ in self.program.updates:  # written in place: device copies must follow
            storage = p.attrs["storage"]
            if storage.devices:
                storage.changed_in_place()
        for copy, value in arena:
            np.copyto(copy, value)
        return outputs, []


    def _hostsize_value(self, state: Binding, node, binding) -> np.ndarray:
        """A node's value where the emulated kernels left it (a view of the arena)."""
        shape = evaluate_shape(node.shape, binding)
        count = int(np.prod(shape, dtype=np.int64))
        address = int(state.table[self.layout.slot_of[node.uid]])
        buffer = (ctypes.c_char * (count * node.dtype.itemsize)).from_address(address)
        return np.frombuffer(buffer, dtype=node.dtype, count=count).reshape(shape)


class DeviceExecutable(Executable):
    """Runs the PTX on a CUDA device: parameters stay resident, inputs and outputs cross.

    `use_cublas` False forces the tiled GEMM kernels even where cuBLAS is available."""

    applies_updates = True

    def __init__(self, program: Graph, layout, launches: list[Launch], ptx: str, stats: dict,
                 use_cublas: bool = True, checks: FiniteChecks | None = None,
                 plan: list | None = None) -> None:
        from .runtime import cublas, driver

        self.program, self.layout, self.launches = program, layout, launches
        self.plan = plan if plan is not None else list(range(len(launches)))
        self._checks = checks
        self._snapshots = updated_parameter_outputs(program)
        self.source = ptx
        self.stats = stats
        self.drv = driver()
        self._sizes = _Sizes()
        self.closed = False
        res = self._resources = DeviceResources(self.drv)
        # from here on, whatever was taken is given back if the executable goes away
        self._finalizer = weakref.finalize(self, res.release)
        self._finalizer.atexit = False  # at exit the driver frees everything itself
        try:
            res.module = self.drv.load_module(ptx)
            self._functions = [None if launch.kind == "host" else
                               self.drv.function(res.module, launch.kernel)
                               for launch in launches]
            self._cublas = cublas() if use_cublas else None
            self._params = [(slot, storage, res.acquire(storage))
                            for slot, storage in layout.param_slots]
        except BaseException:
            self._finalizer()
            raise
        self.stats["gemm"] = "cuBLAS" if self._cublas is not None else "tiled kernels"
        updated = {p.attrs["storage"].uid for p, _ in program.updates}
        self._updated = [device for _, storage, device in self._params if storage.uid in updated]
        input_index = {n.uid: i for i, n in enumerate(program.inputs)}
        self._input_order = [input_index[n.uid] for n, s in zip(program.inputs,
                                                                 layout.input_slots) if s >= 0]

    def close(self) -> None:
        """Free every device allocation (buffers, tables, inputs, constants of every binding),
        let go of the parameter copies (the last user pulls the newest value to the host and
        frees it) and unload the module. Calling the function afterwards raises."""
        self.closed = True
        self._finalizer()

    def _state(self, binding: dict, key) -> DeviceBinding:
        res = self._resources
        state = res.binding(key)
        if state is not None:
            return state
        lay = self.layout
        state = DeviceBinding(self.drv)
        try:
            sizes = {slot: size_value(n, binding) for slot, n in {**lay.buffer_sizes,
                                                              **lay.scratch}.items()}
            table = np.zeros(lay.slot_count, dtype=np.uint64)
            for slot, size in sizes.items():
                table[slot] = state.alloc(size)
            for slot, array in lay.const_slots:
                table[slot] = state.alloc(array.nbytes)
                self.drv.to_device(int(table[slot]), array.ctypes.data, array.nbytes)
            inputs = []
            for node, slot in zip(self.program.inputs, lay.input_slots):
                if slot >= 0:
                    nbytes = int(np.prod(evaluate_shape(node.shape, binding))) * \
                        node.dtype.itemsize
                    table[slot] = state.alloc(nbytes)
                    inputs.append((slot, nbytes))
            dims = np.array([size_value(e, binding) for e in lay.dims] or [0], dtype=np.int64)
            state.table, state.inputs, state.dims = table, inputs, dims
            state.geometry = [geometry(launch, binding) for launch in self.launches]
            state.table_dev = state.alloc(table.nbytes)
            state.dims_dev = state.alloc(dims.nbytes)
            self.drv.to_device(state.dims_dev, dims.ctypes.data, dims.nbytes)
        except BaseException:
            state.free()
            raise
        res.keep(key, state)
        return state

    def _failed(self, status_ptr: int) -> bool:
        status = np.zeros(1, dtype=np.int32)
        self.drv.synchronize()
        self.drv.to_host(status.ctypes.data, status_ptr, 4)
        return bool(status[0])

    def _copy_back(self, table, node, binding) -> np.ndarray:
        """A node's value, copied from the device (check_finite: a debugging mode)."""
        self.drv.synchronize()
        out = np.empty(evaluate_shape(node.shape, binding), dtype=node.dtype)
        self.drv.to_host(out.ctypes.data, int(table[self.layout.slot_of[node.uid]]), out.nbytes)
        return out

    def run(self, inputs, binding, key):
        if self.closed:
            raise BackendError(CLOSED)
        binding = self._sizes.resolve(binding, key)
        state = self._state(binding, key)
        table = state.table
        for slot, _storage, device in self._params:
            table[slot] = device.ptr
        self.drv.to_device(state.table_dev, table.ctypes.data, table.nbytes)
        for (slot, nbytes), i in zip(state.inputs, self._input_order):
            self.drv.to_device(int(table[slot]), inputs[i].ctypes.data, nbytes)
        before = {k: storage.value.copy() for k, storage in self._snapshots}
        # the caller's arrays before the launches (as on the host: out of memory after the
        # step, the call failed and the parameters had moved)
        outputs, from_device = returned_arrays(
            self.program, [(None, evaluate_shape(n.shape, binding)) for n in self.program.outputs],
            before, inputs)
        status_ptr = int(table[self.layout.status_slot])
        record_ptr = int(table[self.layout.error_slot])
        self.drv.zero(status_ptr, 4)
        self.drv.zero(record_ptr, ERROR_RECORD)
        checks = self._checks

        def read(node):
            return self._copy_back(table, node, binding)

        prev = None  # the launch before this one
        for i in schedule(self.plan, binding):
            fn, launch, (grid, block) = self._functions[i], self.launches[i], state.geometry[i]
            if checks is not None and prev in checks.after and not self._failed(status_ptr):
                checks.check(checks.after[prev], read)
            if checks is not None and i == checks.first_update:
                checks.check_leaving(read)
            prev = i
            if launch.kind == "host":  # a collective: staged through host memory
                node = launch.node
                value = np.ascontiguousarray(run_host_step(node, [read(n) for n in node.inputs]),
                                             dtype=node.dtype)
                self.drv.to_device(int(table[self.layout.slot_of[node.uid]]),
                                   value.ctypes.data, value.nbytes)
                continue
            g = launch.gemm
            if self._cublas is not None and g.get("slots") is not None:
                a, b_, c = (int(table[s]) for s in g["slots"])
                m, n, k = (size_value(g[x], binding) for x in ("m", "n", "k"))
                self._cublas.gemm(g["itemsize"], g["ta"], g["tb"], m, n, k, a, b_, c,
                                  1.0 if g["accumulate"] else 0.0)
                continue
            self.drv.launch(fn, launch.kernel, grid, block, [state.table_dev, state.dims_dev])
        if checks is not None and prev in checks.after and not self._failed(status_ptr):
            checks.check(checks.after[prev], read)
        if checks is not None and checks.first_update == len(self.launches):
            checks.check_leaving(read)
        self.drv.synchronize()
        status = np.zeros(1, dtype=np.int32)
        self.drv.to_host(status.ctypes.data, status_ptr, 4)
        if status[0]:
            record = np.zeros(4, dtype=np.int64)
            self.drv.to_host(record.ctypes.data, record_ptr, ERROR_RECORD)
            raise BackendError(failure_message(self.program, record.tolist(), self.layout))
        for device in self._updated:  # the host copy is stale until pulled
            device.newer = True
        for out, node in from_device:
            self.drv.to_host(out.ctypes.data, int(table[self.layout.slot_of[node.uid]]),
                             out.nbytes)
        return outputs, []
