"""Running GPU kernels: on a CUDA device, or emulated on the host over the same launch grid.

Both executables walk the same launch plan. Launch geometry: grid-stride kernels get 256
threads per block and enough blocks to cover the work (at most 1024); tiled GEMMs get 16x16
threads per block and one block per 16x16 tile of C, times the batch.
"""

from __future__ import annotations

import ctypes

import numpy as np

from graphc.errors import BackendError
from graphc.ir.graph import Graph
from graphc.ir.shapes import evaluate_shape

from ..base import Executable
from ..llvm.executable import STATUS, _address, _Binding, _value, updated_parameter_outputs
from .codegen import BLOCK, Launch
from .gemm import TILE

MAX_BLOCKS = 1024


def geometry(launch: Launch, binding: dict) -> tuple[tuple, tuple]:
    """(grid, block) of a launch for a binding of the symbolic dims."""
    if launch.kind == "gemm":
        m, n = _value(launch.gemm["m"], binding), _value(launch.gemm["n"], binding)
        batch = _value(launch.gemm["batch"], binding)
        return ((n + TILE - 1) // TILE or 1, (m + TILE - 1) // TILE or 1, batch or 1), (TILE,
                                                                                        TILE, 1)
    work = _value(launch.work, binding)
    blocks = max(1, min(MAX_BLOCKS, (work + BLOCK - 1) // BLOCK))
    return (blocks, 1, 1), (BLOCK, 1, 1)


class EmulatedExecutable(Executable):
    """The kernels compiled for the host; a generated driver loops over each launch's grid."""

    applies_updates = True

    def __init__(self, program: Graph, layout, launches: list[Launch], engine, source: str,
                 stats: dict) -> None:
        self.program, self.layout, self.launches = program, layout, launches
        self._snapshots = updated_parameter_outputs(program)
        self.engine = engine
        self.source = source
        self.stats = stats
        sig = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
        # one generated driver per launch loops over its grid (see GpuCodegen.emulation_driver)
        self._drivers = [sig(engine.get_function_address(f"graphc.emulate.{launch.kernel}"))
                         for launch in launches]
        self._bindings: dict = {}
        input_index = {n.uid: i for i, n in enumerate(program.inputs)}
        self._inputs = [(slot, input_index[n.uid]) for n, slot in
                        zip(program.inputs, layout.input_slots) if slot >= 0]

    def run(self, inputs, binding, key):
        state = self._bindings.get(key)
        if state is None:
            state = self._bindings[key] = _Binding(self.program, self.layout, binding)
            state.geometry = [geometry(launch, binding) for launch in self.launches]
        table = state.table
        for slot, i in self._inputs:
            table[slot] = _address(inputs[i])
        for slot, storage in self.layout.param_slots:
            table[slot] = storage.host_buffer().ctypes.data
        before = {k: storage.value.copy() for k, storage in self._snapshots}
        status_address = int(table[self.layout.status_slot])
        ctypes.memset(status_address, 0, 4)
        for (grid, block), driver in zip(state.geometry, self._drivers):
            driver(state.table_ptr, state.dims_ptr, grid[0], grid[1], grid[2], block[0])
        status = ctypes.c_int32.from_address(status_address).value
        if status:
            raise BackendError(f"the compiled step failed: {STATUS.get(status, status)}; "
                               "no parameter was updated")
        for p, _ in self.program.updates:  # written in place: device copies must follow
            storage = p.attrs["storage"]
            if storage.devices:
                storage.changed_in_place()
        outputs = []
        for k, ((value, _shape), node) in enumerate(zip(state.outputs, self.program.outputs)):
            if k in before:
                outputs.append(before[k])
            elif isinstance(value, np.ndarray):
                outputs.append(value.copy())
            elif node.op.name == "parameter":
                outputs.append(node.attrs["storage"].value.copy())
            elif node.op.name == "constant":
                outputs.append(np.array(node.attrs["value"].array))
            else:
                outputs.append(np.array(inputs[self.program.inputs.index(node)]))
        return outputs, []


class _DeviceParameter:
    """Keeps a parameter resident on the device; the host copy is refreshed on demand (one of
    the parameter's `devices`, see ParamStorage)."""

    def __init__(self, drv, storage) -> None:
        self.drv = drv
        host = storage.host_buffer()
        self.ptr = drv.alloc(host.nbytes)
        self.nbytes = host.nbytes
        self.newer = False
        drv.to_device(self.ptr, host.ctypes.data, host.nbytes)

    def pull(self, storage) -> None:
        self.newer = False
        self.drv.to_host(storage._value.ctypes.data, self.ptr, self.nbytes)

    def host_changed(self, storage) -> None:
        self.newer = False
        self.drv.to_device(self.ptr, storage._value.ctypes.data, self.nbytes)


def device_copy(drv, storage) -> _DeviceParameter:
    """The parameter's copy on this driver's device, made on first use."""
    for device in storage.devices:
        if isinstance(device, _DeviceParameter) and device.drv is drv:
            return device
    device = _DeviceParameter(drv, storage)
    storage.devices.append(device)
    return device


class DeviceExecutable(Executable):
    """Runs the PTX on a CUDA device: parameters stay resident, inputs and outputs cross."""

    applies_updates = True

    def __init__(self, program: Graph, layout, launches: list[Launch], ptx: str, stats: dict
                 ) -> None:
        from .runtime import cublas, driver

        self.program, self.layout, self.launches = program, layout, launches
        self._snapshots = updated_parameter_outputs(program)
        self.source = ptx
        self.stats = stats
        self.drv = driver()
        module = self.drv.load_module(ptx)
        self._functions = [self.drv.function(module, launch.kernel) for launch in launches]
        self._cublas = cublas()
        self._params = [(slot, storage, device_copy(self.drv, storage))
                         for slot, storage in layout.param_slots]
        updated = {p.attrs["storage"].uid for p, _ in program.updates}
        self._updated = [device for _, storage, device in self._params if storage.uid in updated]
        self._bindings: dict = {}

    def _state(self, binding, key):
        state = self._bindings.get(key)
        if state is not None:
            return state
        lay = self.layout
        sizes = {slot: _value(n, binding) for slot, n in {**lay.buffer_sizes,
                                                          **lay.scratch}.items()}
        table = np.zeros(lay.slot_count, dtype=np.uint64)
        for slot, size in sizes.items():
            table[slot] = self.drv.alloc(size)
        for slot, array in lay.const_slots:
            table[slot] = self.drv.alloc(array.nbytes)
            self.drv.to_device(int(table[slot]), array.ctypes.data, array.nbytes)
        inputs = []
        for node, slot in zip(self.program.inputs, lay.input_slots):
            if slot >= 0:
                nbytes = int(np.prod(evaluate_shape(node.shape, binding))) * node.dtype.itemsize
                table[slot] = self.drv.alloc(nbytes)
                inputs.append((slot, nbytes))
        dims = np.array([_value(e, binding) for e in lay.dims] or [0], dtype=np.int64)
        state = dict(table=table, inputs=inputs, dims=dims, binding=dict(binding),
                     geometry=[geometry(launch, binding) for launch in self.launches],
                     table_dev=self.drv.alloc(table.nbytes), dims_dev=self.drv.alloc(dims.nbytes))
        self.drv.to_device(state["dims_dev"], dims.ctypes.data, dims.nbytes)
        self._bindings[key] = state
        return state

    def run(self, inputs, binding, key):
        state = self._state(binding, key)
        table = state["table"]
        for slot, _storage, device in self._params:
            table[slot] = device.ptr
        self.drv.to_device(state["table_dev"], table.ctypes.data, table.nbytes)
        input_index = {n.uid: i for i, n in enumerate(self.program.inputs)}
        for (slot, nbytes), node in zip(state["inputs"], [n for n, s in zip(
                self.program.inputs, self.layout.input_slots) if s >= 0]):
            self.drv.to_device(int(table[slot]), inputs[input_index[node.uid]].ctypes.data, nbytes)
        before = {k: storage.value.copy() for k, storage in self._snapshots}
        status_ptr = int(table[self.layout.status_slot])
        self.drv.zero(status_ptr, 4)
        for fn, launch, (grid, block) in zip(self._functions, self.launches, state["geometry"]):
            g = launch.gemm
            if self._cublas is not None and g.get("slots") is not None:
                a, b_, c = (int(table[s]) for s in g["slots"])
                m, n, k = (_value(g[x], binding if binding else state["binding"])
                           for x in ("m", "n", "k"))
                self._cublas.gemm(g["itemsize"], g["ta"], g["tb"], m, n, k, a, b_, c,
                                  1.0 if g["accumulate"] else 0.0)
                continue
            self.drv.launch(fn, launch.kernel, grid, block, [state["table_dev"],
                                                             state["dims_dev"]])
        self.drv.synchronize()
        status = np.zeros(1, dtype=np.int32)
        self.drv.to_host(status.ctypes.data, status_ptr, 4)
        if status[0]:
            raise BackendError(f"the compiled step failed: {STATUS.get(int(status[0]))}; no "
                               "parameter was updated")
        for device in self._updated:  # the host copy is stale until pulled
            device.newer = True
        outputs = []
        for k, node in enumerate(self.program.outputs):
            shape = evaluate_shape(node.shape, binding)
            out = np.empty(shape, dtype=node.dtype)
            if k in before:
                out = before[k]
            elif node.op.name == "parameter":
                out[...] = node.attrs["storage"].value
            elif node.op.name in ("placeholder", "constant"):
                out[...] = inputs[input_index[node.uid]] if node.op.name == "placeholder" else \
                    node.attrs["value"].array
            else:
                self.drv.to_host(out.ctypes.data, int(table[self.layout.slot_of[node.uid]]),
                                 out.nbytes)
            outputs.append(out)
        return outputs, []

