"""The host side of a native step, shared by every target: the buffers of one binding of the
symbolic sizes (an arena and the pointer table), addresses, the outputs that are parameters
the step updates, and the message of a failed call (from the error record)."""

from __future__ import annotations

import ctypes

import numpy as np

from graphc.errors import index_error_message
from graphc.ir.graph import Graph
from graphc.ir.shapes import evaluate_dim, evaluate_shape

from ..base import nonfinite_message
from .program import FAILED_INDEX, FAILED_NAN, Layout

__all__ = ["MAX_BINDINGS", "Binding", "address", "failure_message", "same_arrays",
           "size_value", "updated_parameter_outputs"]


#: per-binding buffers kept: enough for a training loop's batch sizes (full and last batch),
#: evaluation sizes and a few more
MAX_BINDINGS = 8


class Binding:
    """Everything that depends on the sizes: buffers, the pointer table, the dims table."""

    def __init__(self, program: Graph, layout: Layout, binding: dict) -> None:
        sizes = {slot: size_value(nbytes, binding) for slot, nbytes in
                 {**layout.buffer_sizes, **layout.scratch}.items()}
        # one arena: 64-byte aligned regions, one per buffer
        offsets, total = {}, 0
        for slot, size in sizes.items():
            offsets[slot] = total
            total += (max(size, 1) + 63) // 64 * 64
        try:
            self.arena = np.zeros(total + 64, dtype=np.uint8)
        except ValueError:  # (past what NumPy can index: "Maximum allowed dimension exceeded")
            raise MemoryError(f"{total} bytes of buffers") from None
        base = (-self.arena.ctypes.data) % 64
        self.table = np.zeros(layout.slot_count, dtype=np.uint64)
        start = self.arena.ctypes.data + base
        for slot, off in offsets.items():
            self.table[slot] = start + off
        for slot, array in layout.const_slots:
            self.table[slot] = array.ctypes.data
        self.dims = np.array([size_value(e, binding) for e in layout.dims] or [0], dtype=np.int64)
        self.table_ptr = self.table.ctypes.data
        self.dims_ptr = self.dims.ctypes.data
        self._error = int(self.table[layout.error_slot]) if layout.error_slot >= 0 else 0
        # outputs: views into the arena (copied out after each call), or leaves
        self.outputs = []
        for node in program.outputs:
            shape = evaluate_shape(node.shape, binding)
            if node.op.name in ("placeholder", "parameter", "constant"):
                self.outputs.append((node, shape))
                continue
            slot = layout.slot_of[node.uid]
            nbytes = int(np.prod(shape, dtype=np.int64)) * node.dtype.itemsize
            view = self.arena[base + offsets[slot]: base + offsets[slot] + nbytes]
            self.outputs.append((view.view(node.dtype).reshape(shape), shape))


    def error_record(self) -> list[int]:
        """The error record (codegen.ERROR_*) of the last call: code, position, value, bound."""
        return list((ctypes.c_int64 * 4).from_address(self._error))


def failure_message(program: Graph, record: list[int], layout: Layout | None = None) -> str:
    """The message of a failed call, from its error record: the same words as every backend
    (an index out of range with its value and bounds; check_finite's first NaN or inf).
    Positions past the program's nodes are nodes of loop bodies (`layout.nodes`)."""
    code, position, value, bound = record
    nodes = layout.nodes if layout is not None and layout.nodes else program.nodes
    node = nodes[position] if 0 <= position < len(nodes) else None
    if node is None:
        return f"the compiled step failed (code {code}); no parameter was updated"
    if code == FAILED_INDEX:
        return index_error_message(node, value, bound)
    return nonfinite_message(program, node, "NaN" if code == FAILED_NAN else "inf",
                             body_holding(program, node))


def loop_bodies(program: Graph) -> list[Graph]:
    """The gc.scan bodies of a program, nested ones included, outermost first."""
    bodies = []
    for n in program.nodes:
        if n.op.name == "scan":
            bodies += [n.attrs["body"], *loop_bodies(n.attrs["body"])]
    return bodies


def body_holding(program: Graph, node) -> Graph | None:
    """The gc.scan body (nested ones included) whose nodes include `node`, or None when
    `node` is the program's own: a loop's check_finite names its body's node (llvm's error
    record and cuda's host-side checks alike)."""
    return next((body for body in loop_bodies(program) if any(m is node for m in body.nodes)),
                None)


def address(array: np.ndarray, _from_buffer=ctypes.c_char.from_buffer,
            _addressof=ctypes.addressof) -> int:
    """The data address of an array. c_char.from_buffer is 3x faster than .ctypes.data; bound
    as defaults, it skips two global lookups, a third of its cost (it runs per input per call)."""
    try:
        return _addressof(_from_buffer(array))
    except (TypeError, ValueError):  # read-only or empty arrays
        return array.ctypes.data


def same_arrays(arrays, signature: tuple) -> bool:
    """Are `arrays` C-contiguous ndarrays (not subclasses) of exactly these (dtype, shape)s?
    Then they are what an earlier call's were to the program: the same sizes, no conversion."""
    if len(arrays) != len(signature):
        return False
    ndarray = np.ndarray
    for a, (dtype, shape) in zip(arrays, signature):
        if type(a) is not ndarray or a.dtype is not dtype or a.shape != shape \
                or not a.flags.c_contiguous:
            return False
    return True


def size_value(expr, binding) -> int:
    return expr if isinstance(expr, int) else evaluate_dim(expr, binding)


def updated_parameter_outputs(program: Graph) -> list[tuple[int, object]]:
    """(output index, storage) of the outputs that are parameters the step updates: their
    values must be copied before the native step, which updates them in place (an output is
    the value before the update)."""
    updated = {p.uid for p, _ in program.updates}
    return [(k, node.attrs["storage"]) for k, node in enumerate(program.outputs)
            if node.op.name == "parameter" and node.uid in updated]


def returned_arrays(program: Graph, values: list, before: dict, inputs) -> tuple[list, list]:
    """The arrays a call returns, allocated before the step runs: the step updates
    parameters in place, and running out of memory for these afterwards failed a call whose
    step had happened. `values`: each output's (value in the host arena, or None, and its
    shape); `before`: the outputs that are updated parameters, copied before the step.
    Returns the list and the pairs (array, source) to fill once the step has run: the source
    is the arena value, or the output's node where the value is elsewhere (on a device)."""
    outputs, pending = [], []
    for k, ((value, shape), node) in enumerate(zip(values, program.outputs)):
        op = node.op.name
        if k in before:
            outputs.append(before[k])
        elif isinstance(value, np.ndarray):
            outputs.append(np.empty_like(value))
            pending.append((outputs[-1], value))
        elif op == "placeholder":
            outputs.append(np.array(inputs[program.inputs.index(node)]))
        elif op == "parameter":  # (not updated: an updated one has a snapshot)
            outputs.append(node.attrs["storage"].value.copy())
        elif op == "constant":
            outputs.append(np.array(node.attrs["value"].array))
        else:
            outputs.append(np.empty(shape, dtype=node.dtype))
            pending.append((outputs[-1], node))
    return outputs, pending
